//! What the gateway's firewall answers itself (a SYN to a port Hermes does not take,
//! a UDP datagram, a ping) is never seen by a socket: the firewall logs the first
//! packet of each such flow to netfilter's packet log (`NFLOG`), and this reads it
//! in the box's gateway namespace, so every attempt still becomes an event.

mod recent;
mod wire;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

use crate::netns;
pub use recent::RecentFlows;
pub use wire::{LoggedPacket, Transport};

/// The log group the rules log to (groups are per network namespace).
pub const GROUP: u16 = 1;

/// Room for a burst of logged packets between two reads.
const RECEIVE_BUFFER: libc::c_int = 1 << 20;

/// Bytes one read of the log takes at most (a netlink message of several packets).
const READ_SIZE: usize = 64 * 1024;

/// One gateway namespace's packet log.
///
/// It holds no read buffer between reads: every box has one, and most boxes' logs
/// are quiet for their whole life (64 KiB each was a fifth of Hermes's heap with
/// 40 sessions open).
pub struct PacketLog {
    socket: AsyncFd<OwnedFd>,
}

impl PacketLog {
    /// Binds [`GROUP`] in the namespace `name`, copying `copy_range` bytes of each
    /// packet (its headers and the start of what it carries).
    pub async fn open(name: &str, copy_range: u32) -> std::io::Result<PacketLog> {
        let socket = netns::run_in(name, move || bind(copy_range)).await?;
        // SAFETY: the descriptor is an open socket the OwnedFd owns, and the
        // AsyncFd owns the OwnedFd for as long as it is registered.
        let socket = unsafe { AsyncFd::register(socket) }?;
        Ok(PacketLog { socket })
    }

    /// The next packets logged. A receive overrun (a burst faster than we read)
    /// loses the overrun's packets only.
    pub async fn next(&mut self) -> std::io::Result<Vec<LoggedPacket>> {
        loop {
            let mut ready = self.socket.readable().await?;
            let fd = self.socket.get_ref().as_raw_fd();
            let mut buffer = vec![0u8; READ_SIZE];
            // SAFETY: recv(2) into a buffer we own, of its length.
            let read = ready.try_io(|_| {
                let n = unsafe { libc::recv(fd, buffer.as_mut_ptr().cast(), buffer.len(), 0) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match read {
                Ok(Ok(n)) => return Ok(wire::parse(&buffer[..n]).packets),
                Ok(Err(error)) if error.raw_os_error() == Some(libc::ENOBUFS) => {
                    tracing::debug!(target: "hermes::egress", "packet log overrun");
                    return Ok(Vec::new());
                }
                Ok(Err(error)) => return Err(error),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Opens the netlink socket in the current namespace and binds the log group;
/// the kernel's acknowledgements are awaited so a refusal is an error here.
fn bind(copy_range: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the descriptor is owned at once.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            wire::NETLINK_NETFILTER,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor we just opened and nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    let fd = socket.as_raw_fd();
    // SAFETY: a zeroed sockaddr_nl is valid; bind(2) with its size.
    let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    let bound = unsafe {
        libc::bind(
            fd,
            (&raw const address).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if bound != 0 {
        return Err(std::io::Error::last_os_error());
    }
    set_option(fd, libc::SO_RCVBUF, &RECEIVE_BUFFER)?;
    let wait = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    set_option(fd, libc::SO_RCVTIMEO, &wait)?;
    let messages = wire::bind_messages(GROUP, copy_range);
    // SAFETY: send(2) of a buffer we own, of its length (to the kernel: the socket
    // is not connected, and a netlink send without address goes to it).
    let sent = unsafe { libc::send(fd, messages.as_ptr().cast(), messages.len(), 0) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut acknowledged = 0;
    let mut buffer = [0u8; 8192];
    while acknowledged < 2 {
        // SAFETY: recv(2) into a buffer we own, of its length.
        let n = unsafe { libc::recv(fd, buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let received = wire::parse(&buffer[..n as usize]);
        if let Some(errno) = received.errors.first() {
            return Err(std::io::Error::from_raw_os_error(*errno));
        }
        acknowledged += wire::acknowledgements(&buffer[..n as usize]);
    }
    // SAFETY: fcntl(2) on our descriptor.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(socket)
}

fn set_option<T>(fd: libc::c_int, option: libc::c_int, value: &T) -> std::io::Result<()> {
    // SAFETY: setsockopt(2) with a value we borrow, of its size.
    let set = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if set == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
