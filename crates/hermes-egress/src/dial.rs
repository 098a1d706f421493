//! Connections into a box from its gateway ([`BoxDialer`]): made by a thread that
//! entered the box's gateway namespace, from the attacker's own address, so that the
//! box's `ss`, its sshd's `SSH_CONNECTION` and its login records name the attacker.
//! The socket may send from any address (`IP_TRANSPARENT`, which needs
//! CAP_NET_ADMIN, as egress does), and the gateway makes every address local for
//! what comes back from the box; nothing of it leaves the namespace, which has no
//! other link.

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use async_trait::async_trait;
use hermes_core::boxnet::BoxDialer;
use hermes_core::config::EgressNetworkConfig;
use tokio::net::{TcpSocket, TcpStream};

use crate::netns;
use crate::network::EgressNetwork;

/// The address a connection into the box comes from: the attacker's where the box's
/// network can carry it, else the gateway's (as from a provider's NAT). Loopback,
/// IPv6, multicast and the box's own network cannot be an outside peer of the box.
pub fn source_for(attacker: SocketAddr, network: &EgressNetworkConfig) -> SocketAddrV4 {
    let stand_in = SocketAddrV4::new(network.gateway, attacker.port());
    let IpAddr::V4(ip) = attacker.ip().to_canonical() else {
        return stand_in;
    };
    if ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_link_local()
        || network.on_link(ip)
    {
        return stand_in;
    }
    SocketAddrV4::new(ip, attacker.port())
}

/// A TCP socket in the namespace `gateway`, bound to `source` (its port when free
/// there, else any).
async fn socket_in(gateway: &str, source: SocketAddrV4) -> io::Result<TcpSocket> {
    netns::run_in(gateway, move || {
        let socket = TcpSocket::new_v4()?;
        let on: libc::c_int = 1;
        // SAFETY: setsockopt on the socket just made, with an int of the right size.
        let set = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_TRANSPARENT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if set != 0 {
            return Err(io::Error::last_os_error());
        }
        if socket.bind(source.into()).is_err() {
            // The attacker's port is still held by an earlier connection's end.
            socket.bind(SocketAddrV4::new(*source.ip(), 0).into())?;
        }
        Ok(socket)
    })
    .await
}

#[async_trait]
impl BoxDialer for EgressNetwork {
    async fn dial(
        &self,
        container_id: &str,
        source: SocketAddr,
        port: u16,
    ) -> io::Result<TcpStream> {
        let network = self.network_config();
        let from = source_for(source, network);
        let to = SocketAddrV4::new(network.address, port);
        let socket = socket_in(&self.gateway_name(container_id), from).await?;
        let stream = socket.connect(to.into()).await?;
        // Keystrokes and their echo go at once, as between OpenSSH's client and sshd.
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn the_box_sees_the_attacker_unless_its_network_cannot_carry_the_address() {
        let network = EgressNetworkConfig::default();
        let from = |text: &str| source_for(text.parse().expect("address"), &network);
        assert_eq!(
            from("203.0.113.7:40000"),
            "203.0.113.7:40000".parse().unwrap()
        );
        assert_eq!(
            from("[::ffff:198.51.100.9]:5000"),
            "198.51.100.9:5000".parse().unwrap()
        );
        assert_eq!(from("192.168.1.20:7"), "192.168.1.20:7".parse().unwrap());
        let gateway = |port| SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 2), port);
        assert_eq!(from("127.0.0.1:4000"), gateway(4000));
        assert_eq!(from("[2001:db8::1]:4000"), gateway(4000));
        assert_eq!(from("10.0.2.99:4000"), gateway(4000));
        assert_eq!(from("169.254.169.254:1"), gateway(1));
    }
}
