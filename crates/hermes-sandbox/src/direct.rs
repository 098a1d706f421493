//! Standard input and output of a file-transfer process (sftp-server, scp) carried
//! through two FIFOs in the container's `/dev`, which Hermes opens from the host
//! through `/proc/PID/root`. File data then goes from the process to Hermes through
//! one kernel pipe, as it goes from sftp-server to sshd, instead of crossing
//! containerd-shim and dockerd: those two cost more CPU per megabyte than the rest of
//! the path together and held scp downloads under half of sshd's rate.
//!
//! Only for a Hermes on the engine's host that can see the container's processes;
//! anywhere else [`Fifos::make`] fails and the caller uses the engine's stream.
//!
//! The container is hostile, so nothing here follows a path the container controls:
//! `/dev` is opened with `O_NOFOLLOW` from the container's root, each FIFO is opened
//! first as `O_PATH` without following links and must be a FIFO before it is
//! reopened for reading or writing (a device node put in its place, which the host
//! could open past the container's device rules, is refused). The names are random
//! and both are unlinked as soon as the process has opened them.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use rand::RngExt;
use tokio::io::AsyncWrite;
use tokio::net::unix::pipe;

use crate::openat::{container_root, cstring, fstat, open_at, reopen};

/// How long the process may take to open its end of the input FIFO.
const OPEN_WAIT: Duration = Duration::from_secs(10);
/// How long a failed start keeps both ends open, so that the process gets through
/// both of its opens before it reads end of file.
const RELEASE_HOLD: Duration = Duration::from_secs(5);

/// The two FIFOs made for one process, unlinked when dropped.
pub(crate) struct Fifos {
    /// The container's `/dev` (`O_PATH`).
    dev: OwnedFd,
    /// Names in `/dev`: the process's stdout, then its stdin.
    names: [String; 2],
    /// Each FIFO, `O_PATH`, checked to be a FIFO.
    stdout: OwnedFd,
    stdin: OwnedFd,
}

fn file_type(fd: &OwnedFd) -> io::Result<libc::mode_t> {
    Ok(fstat(fd)?.st_mode & libc::S_IFMT)
}

impl Fifos {
    /// Makes the FIFOs in the `/dev` of container `container_id`, whose first process
    /// is `pid` on this host.
    pub(crate) fn make(pid: i64, container_id: &str) -> io::Result<Fifos> {
        let root = container_root(pid, container_id)?;
        let dev = open_at(
            Some(&root),
            "dev",
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        )?;
        let token: u64 = rand::rng().random();
        let names = [format!(".{token:016x}o"), format!(".{token:016x}i")];
        let mut made = Vec::with_capacity(2);
        for name in &names {
            let c_name = cstring(name)?;
            // SAFETY: `dev` is an open directory and `c_name` a valid C string.
            if unsafe { libc::mkfifoat(dev.as_raw_fd(), c_name.as_ptr(), 0o600) } != 0 {
                let error = io::Error::last_os_error();
                unlink_all(&dev, &names);
                return Err(error);
            }
            let checked = checked_fifo(&dev, name);
            match checked {
                Ok(fd) => made.push(fd),
                Err(error) => {
                    unlink_all(&dev, &names);
                    return Err(error);
                }
            }
        }
        let stdin = made.pop();
        let stdout = made.pop();
        match (stdout, stdin) {
            (Some(stdout), Some(stdin)) => Ok(Fifos {
                dev,
                names,
                stdout,
                stdin,
            }),
            _ => {
                unlink_all(&dev, &names);
                Err(io::Error::other("FIFOs not made"))
            }
        }
    }

    /// The command to run instead of `argv`: a shell that opens stdout, then stdin
    /// (this order is what [`Fifos::open_stdin`] relies on), then becomes `argv`.
    pub(crate) fn wrap(&self, argv: &[String]) -> Vec<String> {
        wrap(&self.names, argv)
    }

    /// The read end of the process's stdout. Open it before the process starts, so
    /// that the process's own open does not wait.
    pub(crate) fn open_stdout(&self) -> io::Result<pipe::Receiver> {
        let file = reopen(&self.stdout, libc::O_RDONLY | libc::O_NONBLOCK)?;
        pipe::Receiver::from_file(file)
    }

    /// The write end of the process's stdin, once the process has opened its read
    /// end (and, before that, its stdout). `gone` says whether the process has ended
    /// without opening it.
    pub(crate) async fn open_stdin<F, Fut>(&self, mut gone: F) -> io::Result<pipe::Sender>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + OPEN_WAIT;
        let mut pause = Duration::from_millis(1);
        let mut last_check = tokio::time::Instant::now();
        loop {
            match reopen(&self.stdin, libc::O_WRONLY | libc::O_NONBLOCK) {
                Ok(file) => return pipe::Sender::from_file(file),
                // No reader yet.
                Err(error) if error.raw_os_error() == Some(libc::ENXIO) => {}
                Err(error) => return Err(error),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the process did not open its input",
                ));
            }
            if now.duration_since(last_check) >= Duration::from_millis(100) {
                last_check = now;
                if gone().await {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the process ended before it opened its input",
                    ));
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Lets a process that waits in its open of stdin go on (it then reads end of
    /// file and ends): for a start that failed after the process was created.
    pub(crate) fn release_waiting(&self) {
        // O_RDWR never waits, and counts as both ends: the process's opens go through.
        let held: Vec<File> = [&self.stdout, &self.stdin]
            .into_iter()
            .filter_map(|fd| reopen(fd, libc::O_RDWR | libc::O_NONBLOCK).ok())
            .collect();
        tokio::spawn(async move {
            tokio::time::sleep(RELEASE_HOLD).await;
            drop(held);
        });
    }
}

/// `name` in `dir` as `O_PATH`, if it is a FIFO (never through a link), made usable
/// by any user of the container.
fn checked_fifo(dir: &OwnedFd, name: &str) -> io::Result<OwnedFd> {
    let fd = open_at(Some(dir), name, libc::O_PATH | libc::O_NOFOLLOW)?;
    if file_type(&fd)? != libc::S_IFIFO {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not the FIFO that was made",
        ));
    }
    // Any user of the container may be the session's user.
    let path = cstring(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    // SAFETY: valid C string; chmod goes to the descriptor's own inode.
    if unsafe { libc::chmod(path.as_ptr(), 0o666) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn wrap(names: &[String; 2], argv: &[String]) -> Vec<String> {
    let mut wrapped = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        format!("exec \"$@\" >/dev/{} </dev/{}", names[0], names[1]),
        "sh".to_owned(),
    ];
    wrapped.extend(argv.iter().cloned());
    wrapped
}

fn unlink_all(dev: &OwnedFd, names: &[String]) {
    for name in names {
        if let Ok(name) = cstring(name) {
            // SAFETY: `dev` is an open directory; a name already gone is fine.
            unsafe { libc::unlinkat(dev.as_raw_fd(), name.as_ptr(), 0) };
        }
    }
}

impl Drop for Fifos {
    fn drop(&mut self) {
        unlink_all(&self.dev, &self.names);
    }
}

/// The write end of a process's stdin; shutting it down closes it, so the process
/// reads end of file.
pub(crate) struct Input(Option<pipe::Sender>);

impl Input {
    pub(crate) fn new(sender: pipe::Sender) -> Self {
        Input(Some(sender))
    }
}

impl AsyncWrite for Input {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.0.as_mut() {
            Some(sender) => Pin::new(sender).poll_write(cx, buf),
            None => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0.as_mut() {
            Some(sender) => Pin::new(sender).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0 = None;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_outside_any_container_is_refused() {
        let own = std::process::id() as i64;
        assert!(Fifos::make(own, "0123456789abcdef0123456789abcdef").is_err());
        assert!(Fifos::make(0, "0123456789abcdef").is_err());
        assert!(Fifos::make(-1, "0123456789abcdef").is_err());
    }

    #[test]
    fn only_a_fifo_itself_is_taken() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        let c_fifo = cstring(fifo.to_str().expect("utf-8")).expect("path");
        // SAFETY: valid C string.
        assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
        std::fs::write(dir.path().join("file"), b"x").expect("file");
        std::os::unix::fs::symlink(&fifo, dir.path().join("link")).expect("link");
        std::os::unix::fs::symlink("/dev/null", dir.path().join("device-link")).expect("link");
        let dir_fd = open_at(
            None::<&OwnedFd>,
            dir.path().to_str().expect("utf-8"),
            libc::O_PATH | libc::O_DIRECTORY,
        )
        .expect("dir");
        let taken = checked_fifo(&dir_fd, "fifo").expect("a FIFO");
        assert_eq!(file_type(&taken).expect("stat"), libc::S_IFIFO);
        for refused in ["file", "link", "device-link", "missing"] {
            assert!(checked_fifo(&dir_fd, refused).is_err(), "{refused}");
        }
        // A device node itself (as root can make one) is refused too.
        if unsafe { libc::geteuid() } == 0 {
            let node = cstring(dir.path().join("null").to_str().expect("utf-8")).expect("p");
            // SAFETY: valid C string; makes a character device like /dev/null.
            let made =
                unsafe { libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
            if made == 0 {
                assert!(checked_fifo(&dir_fd, "null").is_err());
            }
        }
    }

    #[test]
    fn the_wrapper_opens_stdout_before_stdin_and_keeps_the_arguments() {
        let names = [".abco".to_owned(), ".abci".to_owned()];
        let argv = ["/bin/bash", "-c", "echo \"a b\" $1"].map(str::to_owned);
        let wrapped = wrap(&names, &argv);
        assert_eq!(&wrapped[..2], ["/bin/sh", "-c"]);
        let script = &wrapped[2];
        let out = script.find(">/dev/.abco").expect("stdout redirect");
        let input = script.find("</dev/.abci").expect("stdin redirect");
        assert!(out < input);
        assert_eq!(&wrapped[4..], argv);
    }
}
