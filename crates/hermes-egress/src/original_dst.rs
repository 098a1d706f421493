//! Where a redirected connection was going: netfilter keeps the destination the box
//! asked for, `getsockopt(SOL_IP, SO_ORIGINAL_DST)` on the accepted socket reads it.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

/// `SO_ORIGINAL_DST` from `linux/netfilter_ipv4.h`.
const SO_ORIGINAL_DST: libc::c_int = 80;

/// The destination the box connected to before the gateway's REDIRECT.
pub fn original_destination(socket: &impl AsRawFd) -> std::io::Result<SocketAddr> {
    // SAFETY: sockaddr_in is plain data; zeroed is a valid value.
    let mut address: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: the buffer and its length describe `address`, which outlives the call.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_IP,
            SO_ORIGINAL_DST,
            (&mut address as *mut libc::sockaddr_in).cast(),
            &mut length,
        )
    };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let ip = Ipv4Addr::from(u32::from_be(address.sin_addr.s_addr));
    Ok(SocketAddr::V4(SocketAddrV4::new(
        ip,
        u16::from_be(address.sin_port),
    )))
}
