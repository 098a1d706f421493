//! The socket side of a box's TFTP: the listener learns which address each request
//! was sent to (`IP_PKTINFO`; the gateway delivers UDP to any address locally
//! instead of rewriting it), and a transfer socket answers from that address
//! (`IP_FREEBIND` and `IP_TRANSPARENT`: it need not be one of the namespace's own).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket as StdUdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Asks the kernel to tell each datagram's destination address.
pub fn enable_pktinfo(socket: &impl AsRawFd) -> io::Result<()> {
    set_flag(socket.as_raw_fd(), libc::IP_PKTINFO)
}

fn set_flag(fd: libc::c_int, option: libc::c_int) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a pointer to an int that outlives the call.
    let result = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_IP,
            option,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One datagram: its length, its sender and the IPv4 address it was sent to.
pub async fn recv_with_destination(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Ipv4Addr)> {
    loop {
        socket.readable().await?;
        match socket.try_io(Interest::READABLE, || recvmsg(socket.as_raw_fd(), buf)) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

fn recvmsg(fd: libc::c_int, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Ipv4Addr)> {
    // SAFETY: plain C structs; zeroed is valid for each.
    let mut from: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_name = (&mut from as *mut libc::sockaddr_in).cast();
    message.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every pointer in `message` points at a buffer of this frame with its
    // true length; the kernel writes within them.
    let read = unsafe { libc::recvmsg(fd, &mut message, libc::MSG_DONTWAIT) };
    if read < 0 {
        return Err(io::Error::last_os_error());
    }
    if i32::from(from.sin_family) != libc::AF_INET {
        return Err(io::Error::other("a TFTP datagram not from IPv4"));
    }
    let sender = SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(from.sin_addr.s_addr)),
        u16::from_be(from.sin_port),
    ));
    let mut destination = None;
    // SAFETY: CMSG_* walk the control buffer the kernel filled, bounded by
    // msg_controllen; the pktinfo is read unaligned from within it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&message);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_IP && (*cmsg).cmsg_type == libc::IP_PKTINFO {
                let info: libc::in_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                destination = Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
            }
            cmsg = libc::CMSG_NXTHDR(&message, cmsg);
        }
    }
    let destination =
        destination.ok_or_else(|| io::Error::other("a TFTP datagram without its destination"))?;
    Ok((read as usize, sender, destination))
}

/// A UDP socket bound to `address` whether or not it is a local address (the box's
/// TFTP server's, answered from the gateway namespace), non-blocking.
pub fn bind_as(address: SocketAddrV4) -> io::Result<StdUdpSocket> {
    // SAFETY: socket(2); the descriptor is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_flag(fd, libc::IP_FREEBIND)?;
    // Sending from an address that is not the namespace's own takes IP_TRANSPARENT
    // (CAP_NET_ADMIN, which the gateway has); without it the route lookup fails.
    set_flag(fd, libc::IP_TRANSPARENT)?;
    let sockaddr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: address.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*address.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: bind(2) with a sockaddr_in of this frame and its size.
    let result = unsafe {
        libc::bind(
            fd,
            (&sockaddr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(StdUdpSocket::from(owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_listener_learns_each_datagrams_destination() {
        let listener = StdUdpSocket::bind("0.0.0.0:0").expect("bind");
        enable_pktinfo(&listener).expect("pktinfo");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let listener = UdpSocket::from_std(listener).expect("tokio");
        let sender = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let mut buf = [0u8; 64];
        for last in [5u8, 77, 200] {
            let to = SocketAddr::from(([127, 0, 0, last], port));
            sender.send_to(b"rrq", to).await.expect("send");
            let (len, from, destination) = recv_with_destination(&listener, &mut buf)
                .await
                .expect("recv");
            assert_eq!(&buf[..len], b"rrq");
            assert_eq!(from, sender.local_addr().expect("addr"));
            assert_eq!(destination, Ipv4Addr::new(127, 0, 0, last));
        }
    }

    #[tokio::test]
    async fn a_transfer_socket_answers_from_the_address_it_is_given() {
        let address = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 69), 0);
        let socket = UdpSocket::from_std(bind_as(address).expect("bind")).expect("tokio");
        let peer = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        socket
            .send_to(b"data", peer.local_addr().expect("addr"))
            .await
            .expect("send");
        let mut buf = [0u8; 16];
        let (len, from) = peer.recv_from(&mut buf).await.expect("recv");
        assert_eq!(&buf[..len], b"data");
        assert_eq!(from.ip(), std::net::IpAddr::from([127, 0, 0, 69]));
    }

    #[test]
    fn an_address_not_of_this_namespace_can_be_bound() {
        // Plain bind(2) refuses it (EADDRNOTAVAIL); the box's TFTP server is one.
        let address = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 0);
        assert!(StdUdpSocket::bind(address).is_err());
        let socket = bind_as(address).expect("bind");
        assert_eq!(
            socket.local_addr().expect("addr").ip(),
            std::net::IpAddr::from([203, 0, 113, 9])
        );
    }
}
