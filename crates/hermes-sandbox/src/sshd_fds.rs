//! Finds and takes the descriptors a box's sshd holds for one channel's program
//! ([`hermes_core::box_sshd::ChannelTakeover`]): the terminal's master, or the
//! pipes to the program's stdin, stdout and stderr.
//!
//! The box is hostile: any of its processes may pose as sshd. Nothing here opens a
//! path: the connection's socket is found in the box's own TCP table, its holders
//! among the box's processes, and each descriptor is taken with `pidfd_getfd` from
//! a process pinned by a pidfd that still holds that socket (only the box's
//! processes can). What is taken must then be what was seen: a pty master
//! (character device 5:2) of the same index, or a pipe of the same inode and
//! direction. Nothing else is ever read or written, so a fake sshd can at most hand
//! Hermes one of its box's own terminals or pipes.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::openat::fstat;

/// One descriptor of a process, as `/proc/PID/fd` and `fdinfo` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// A pty master, by its index (`/dev/pts/N`).
    Terminal(u32),
    /// One end of a pipe, by inode; `writes` for its write end.
    Pipe { inode: u64, writes: bool },
}

impl Held {
    /// The key of what it is, the same for every descriptor of one terminal or pipe
    /// (kept in [`hermes_core::box_sshd::Taken`]).
    fn key(self) -> u64 {
        match self {
            Held::Terminal(index) => 1 << 63 | u64::from(index),
            Held::Pipe { inode, .. } => inode & !(1 << 63),
        }
    }
}

/// The descriptors taken for one channel.
#[derive(Debug)]
pub(crate) struct ChannelFds {
    /// The terminal or stdout.
    pub(crate) output: OwnedFd,
    /// Stderr, without a terminal.
    pub(crate) errors: Option<OwnedFd>,
    /// Stdin, without a terminal, while sshd still holds it.
    pub(crate) input: Option<OwnedFd>,
    /// The keys of what was taken (see [`Held::key`]).
    pub(crate) keys: Vec<u64>,
}

/// Why a channel's descriptors could not be taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TakeError {
    #[error("the connection is not in the box's TCP table")]
    NoConnection,
    #[error("no process of the box holds the connection")]
    NoHolder,
    #[error("sshd holds {0} candidate descriptors for the channel")]
    Ambiguous(&'static str),
    #[error("what was taken is not what sshd held")]
    Changed,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// How often, and how far apart, a look that found the channel's descriptors in
/// more than one place is made again: sshd's child holds the connection and some of
/// the pipes' ends from its fork until it has set up the program's descriptors.
const LOOKS: u32 = 100;
const LOOK_AGAIN: std::time::Duration = std::time::Duration::from_millis(5);

/// Takes the descriptors of the newest channel on the TCP connection from `client`
/// to `port` in the box whose first process is `init_pid`, skipping what `taken`
/// holds (and adding this channel's). `pids` lists the box's processes.
pub(crate) fn take_channel(
    init_pid: i32,
    pids: impl Fn() -> Vec<i32>,
    client: SocketAddr,
    port: u16,
    terminal: bool,
    taken: &HashSet<u64>,
) -> Result<ChannelFds, TakeError> {
    let socket = connection_inode(init_pid, client, port).ok_or(TakeError::NoConnection)?;
    let link = format!("socket:[{socket}]");
    let mut looks = 0;
    loop {
        looks += 1;
        let holders: Vec<(i32, Vec<(i32, Held)>)> = pids()
            .into_iter()
            .filter_map(|pid| Some((pid, held_fds(pid, &link)?)))
            .collect();
        if holders.is_empty() {
            return Err(TakeError::NoHolder);
        }
        let result = if terminal {
            take_terminal(&holders, &link, taken)
        } else {
            take_pipes(&holders, &link, taken)
        };
        // A descriptor that went between the listing and its taking (sshd's child
        // closing its copies) is looked for again too.
        let again = match &result {
            Err(TakeError::Ambiguous(_) | TakeError::Changed) => true,
            Err(TakeError::Io(error)) => error.raw_os_error() == Some(libc::EBADF),
            _ => false,
        };
        if !again || looks >= LOOKS {
            return result;
        }
        std::thread::sleep(LOOK_AGAIN);
    }
}

fn take_terminal(
    holders: &[(i32, Vec<(i32, Held)>)],
    link: &str,
    taken: &HashSet<u64>,
) -> Result<ChannelFds, TakeError> {
    let mut found: Option<(i32, i32, u32)> = None;
    for (pid, fds) in holders {
        for &(fd, held) in fds {
            let Held::Terminal(index) = held else {
                continue;
            };
            if taken.contains(&held.key()) {
                continue;
            }
            match found {
                Some((_, _, seen)) if seen != index => {
                    return Err(TakeError::Ambiguous("terminal"));
                }
                Some(_) => {}
                None => found = Some((*pid, fd, index)),
            }
        }
    }
    let (pid, fd, index) = found.ok_or(TakeError::Ambiguous("no terminal"))?;
    let output = take_fd(pid, fd, link)?;
    let stat = fstat(&output)?;
    let is_ptmx = stat.st_mode & libc::S_IFMT == libc::S_IFCHR
        && libc::major(stat.st_rdev) == 5
        && libc::minor(stat.st_rdev) == 2;
    if !is_ptmx || pty_index(&output)? != index {
        return Err(TakeError::Changed);
    }
    set_nonblocking(&output)?;
    Ok(ChannelFds {
        output,
        errors: None,
        input: None,
        keys: vec![Held::Terminal(index).key()],
    })
}

fn take_pipes(
    holders: &[(i32, Vec<(i32, Held)>)],
    link: &str,
    taken: &HashSet<u64>,
) -> Result<ChannelFds, TakeError> {
    // sshd's session process holds its side of each of the program's pipes once:
    // stdin's write end, stdout's and then stderr's read ends (made in that order, so
    // at rising numbers). A pipe both of whose ends it holds is its own.
    let mut chosen: Option<(i32, Vec<(i32, Held)>)> = None;
    for (pid, fds) in holders {
        let pipes: Vec<(i32, Held)> = fds
            .iter()
            .copied()
            .filter(|(_, held)| matches!(held, Held::Pipe { .. }))
            .filter(|(_, held)| !taken.contains(&held.key()))
            .filter(|(_, held)| fds.iter().filter(|(_, h)| h.key() == held.key()).count() == 1)
            .collect();
        if pipes.is_empty() {
            continue;
        }
        if chosen.is_some() {
            return Err(TakeError::Ambiguous("pipes in two processes"));
        }
        chosen = Some((*pid, pipes));
    }
    let (pid, mut pipes) = chosen.ok_or(TakeError::Ambiguous("no pipes"))?;
    pipes.sort_by_key(|(fd, _)| *fd);
    let readers: Vec<(i32, Held)> = pipes
        .iter()
        .copied()
        .filter(|(_, held)| matches!(held, Held::Pipe { writes: false, .. }))
        .collect();
    let writers: Vec<(i32, Held)> = pipes
        .iter()
        .copied()
        .filter(|(_, held)| matches!(held, Held::Pipe { writes: true, .. }))
        .collect();
    let ([stdout, stderr], stdin) = (readers.as_slice(), writers.as_slice()) else {
        return Err(TakeError::Ambiguous("pipes"));
    };
    if stdin.len() > 1 {
        return Err(TakeError::Ambiguous("input pipes"));
    }
    let output = take_pipe(pid, *stdout, link)?;
    let errors = take_pipe(pid, *stderr, link)?;
    let input = match stdin.first() {
        // sshd closes it once the program has ended, maybe since it was listed.
        Some(held) => match take_pipe(pid, *held, link) {
            Err(TakeError::Io(error)) if error.raw_os_error() == Some(libc::EBADF) => None,
            taken => Some(taken?),
        },
        None => None,
    };
    let keys = [Some(*stdout), Some(*stderr), stdin.first().copied()]
        .into_iter()
        .flatten()
        .map(|(_, held)| held.key())
        .collect();
    Ok(ChannelFds {
        output,
        errors: Some(errors),
        input,
        keys,
    })
}

fn take_pipe(pid: i32, (fd, held): (i32, Held), link: &str) -> Result<OwnedFd, TakeError> {
    let Held::Pipe { inode, writes } = held else {
        return Err(TakeError::Changed);
    };
    let owned = take_fd(pid, fd, link)?;
    let stat = fstat(&owned)?;
    // SAFETY: F_GETFL on a descriptor we own.
    let flags = unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_GETFL) };
    let direction = if writes {
        libc::O_WRONLY
    } else {
        libc::O_RDONLY
    };
    if stat.st_mode & libc::S_IFMT != libc::S_IFIFO
        || stat.st_ino != inode
        || flags < 0
        || flags & libc::O_ACCMODE != direction
    {
        return Err(TakeError::Changed);
    }
    set_nonblocking(&owned)?;
    Ok(owned)
}

/// A pidfd of process `pid`.
fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, and returns a new descriptor.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just returned to us and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(pidfd as i32) })
}

/// A copy of descriptor `fd` of the process `pidfd` pins.
fn pidfd_getfd(pidfd: &OwnedFd, fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd with a pidfd we own, a descriptor number and no flags.
    let taken = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if taken < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pidfd_getfd returned a new descriptor that only we hold.
    Ok(unsafe { OwnedFd::from_raw_fd(taken as i32) })
}

/// Takes descriptor `fd` of process `pid`, if that process still holds the socket
/// `link` once pinned (a pid reused meanwhile is another process).
fn take_fd(pid: i32, fd: i32, link: &str) -> Result<OwnedFd, TakeError> {
    let pidfd = pidfd_open(pid)?;
    if held_fds(pid, link).is_none() {
        return Err(TakeError::Changed);
    }
    Ok(pidfd_getfd(&pidfd, fd)?)
}

/// Whether this process may take descriptors from `pid` (it is allowed to trace
/// it): asking for a descriptor no process has gets EBADF only then.
pub(crate) fn may_take_from(pid: i32) -> bool {
    let Ok(pidfd) = pidfd_open(pid) else {
        return false;
    };
    // This number is above any descriptor limit.
    match pidfd_getfd(&pidfd, i32::MAX) {
        Ok(_) => true,
        Err(error) => error.raw_os_error() == Some(libc::EBADF),
    }
}

/// What `pid` holds, if among it is the socket `link`: its pty masters and pipes.
fn held_fds(pid: i32, link: &str) -> Option<Vec<(i32, Held)>> {
    let dir = format!("/proc/{pid}/fd");
    let mut holds_socket = false;
    let mut held = Vec::new();
    for entry in fs::read_dir(&dir).ok()?.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if target == link {
            holds_socket = true;
        } else if target == "/dev/ptmx" || target.ends_with("/pts/ptmx") {
            if let Some(index) = fdinfo_value(pid, fd, "tty-index").and_then(|v| v.parse().ok()) {
                held.push((fd, Held::Terminal(index)));
            }
        } else if let Some(inode) = target
            .strip_prefix("pipe:[")
            .and_then(|rest| rest.strip_suffix(']'))
            .and_then(|n| n.parse::<u64>().ok())
        {
            let flags =
                fdinfo_value(pid, fd, "flags").and_then(|v| i64::from_str_radix(&v, 8).ok());
            if let Some(flags) = flags {
                let writes = flags & i64::from(libc::O_ACCMODE) == i64::from(libc::O_WRONLY);
                held.push((fd, Held::Pipe { inode, writes }));
            }
        }
    }
    holds_socket.then_some(held)
}

/// A field of `/proc/PID/fdinfo/FD`, as written.
fn fdinfo_value(pid: i32, fd: i32, name: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim().to_owned())
    })
}

/// The inode of the socket of the TCP connection from `client` to local `port` in
/// `pid`'s network namespace.
fn connection_inode(pid: i32, client: SocketAddr, port: u16) -> Option<u64> {
    ["tcp", "tcp6"].iter().find_map(|table| {
        let text = fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok()?;
        find_connection(&text, client, port)
    })
}

/// The inode of the row of a `/proc/net/tcp` or `tcp6` table whose local port is
/// `port` and whose peer is `client` (IPv4 peers of an IPv6 socket are mapped).
fn find_connection(table: &str, client: SocketAddr, port: u16) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, inode) = (fields.get(1)?, fields.get(2)?, fields.get(9)?);
        let (_, local_port) = parse_endpoint(local)?;
        let (ip, remote_port) = parse_endpoint(remote)?;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let wanted = client.ip().to_canonical();
        (local_port == port && remote_port == client.port() && ip == wanted)
            .then(|| inode.parse().ok())?
    })
}

/// `HEX_ADDRESS:HEX_PORT` of a TCP table: the address as the kernel's 32-bit words
/// in this machine's byte order.
fn parse_endpoint(text: &str) -> Option<(IpAddr, u16)> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = address.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match address.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some((ip, port))
}

fn pty_index(fd: &OwnedFd) -> io::Result<u32> {
    let mut index: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGPTN, &mut index) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index)
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: F_GETFL and F_SETFL on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0
        || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0 100 0 0 10 0
   1: 0F02000A:0016 0500007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2222 1 0 20 4 30 10 -1
   2: 0F02000A:0016 0500007F:9C41 01 00000000:00000000 00:00000000 00000000     0        0 3333 1 0 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000F02000A:0016 0000000000000000FFFF00000500007F:9C42 01 00000000:00000000 00:00000000 00000000     0        0 4444 1 0 20 4 30 10 -1
";

    #[test]
    fn the_connection_is_found_by_its_peer_and_port() {
        let client: SocketAddr = "127.0.0.5:40001".parse().unwrap();
        assert_eq!(find_connection(TCP, client, 22), Some(3333));
        assert_eq!(find_connection(TCP, client, 23), None);
        let other: SocketAddr = "127.0.0.6:40001".parse().unwrap();
        assert_eq!(find_connection(TCP, other, 22), None);
        let mapped: SocketAddr = "127.0.0.5:40002".parse().unwrap();
        assert_eq!(find_connection(TCP6, mapped, 22), Some(4444));
        let written_mapped: SocketAddr = "[::ffff:127.0.0.5]:40002".parse().unwrap();
        assert_eq!(find_connection(TCP6, written_mapped, 22), Some(4444));
    }

    #[test]
    fn hostile_table_lines_are_passed_over() {
        let client: SocketAddr = "127.0.0.5:40001".parse().unwrap();
        for table in [
            "",
            "header\n",
            "header\n 0: zz:yy 00:00\n",
            "h\n0: 0F02000A 0500007F:9C41 01 a b c d e f\n",
        ] {
            assert_eq!(find_connection(table, client, 22), None, "{table:?}");
        }
    }

    #[test]
    fn a_terminal_and_a_pipe_never_share_a_key() {
        let terminal = Held::Terminal(7).key();
        let pipe = Held::Pipe {
            inode: 7,
            writes: false,
        }
        .key();
        assert_ne!(terminal, pipe);
        assert_eq!(
            pipe,
            Held::Pipe {
                inode: 7,
                writes: true
            }
            .key()
        );
    }

    #[test]
    fn a_process_s_own_pty_and_pipes_are_found_and_taken() {
        // This test process holds a pty master and a pipe; a socket pair stands for
        // the connection.
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let pid = std::process::id() as i32;
        let link = fs::read_link(format!("/proc/self/fd/{}", a.as_raw_fd())).unwrap();
        let link = link.to_string_lossy().into_owned();
        let mut master = 0;
        let mut slave = 0;
        // SAFETY: openpty writes two descriptors.
        let opened = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(opened, 0);
        // SAFETY: both were just opened for us.
        let (master, _slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let index = pty_index(&master).unwrap();
        let fds = held_fds(pid, &link).expect("holds the socket");
        assert!(fds.contains(&(master.as_raw_fd(), Held::Terminal(index))));
        assert!(may_take_from(pid));
        // Only this master is the channel's (a harness may hold ptys of its own).
        let fds: Vec<(i32, Held)> = fds
            .into_iter()
            .filter(|(fd, held)| !matches!(held, Held::Terminal(_)) || *fd == master.as_raw_fd())
            .collect();
        let holders = vec![(pid, fds)];
        let got = take_terminal(&holders, &link, &HashSet::new()).expect("taken");
        assert_eq!(pty_index(&got.output).unwrap(), index);
        assert_eq!(got.keys, [Held::Terminal(index).key()]);
        // While its channel lives, the next channel finds no terminal of its own.
        let taken: HashSet<u64> = got.keys.iter().copied().collect();
        assert!(matches!(
            take_terminal(&holders, &link, &taken),
            Err(TakeError::Ambiguous(_))
        ));
        assert!(held_fds(pid, "socket:[0]").is_none());
    }
}
