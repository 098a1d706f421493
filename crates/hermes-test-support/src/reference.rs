//! A real sshd from Debian's openssh-server package on a loopback port, to compare
//! Hermes with.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::free_port;

/// A real sshd from Debian's openssh-server package, with Debian's packaged settings,
/// on a loopback port.
pub struct ReferenceSshd {
    child: Child,
    pub port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl ReferenceSshd {
    /// Starts it without PAM; None (or a panic under CI=true) when openssh-server is
    /// missing.
    pub fn start() -> Option<ReferenceSshd> {
        Self::start_with_pam(false)
    }

    /// Starts it; with `pam`, exactly Debian's packaged settings (UsePAM yes).
    pub fn start_with_pam(pam: bool) -> Option<ReferenceSshd> {
        Self::start_with(pam, "")
    }

    /// Starts it with `extra` lines appended to the configuration.
    pub fn start_with(pam: bool, extra: &str) -> Option<ReferenceSshd> {
        let sshd = Path::new("/usr/sbin/sshd");
        if !sshd.exists() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("/usr/sbin/sshd missing: scripts/test.sh installs openssh-server");
            }
            eprintln!("SKIPPED: no /usr/sbin/sshd to compare against");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut keys = Vec::new();
        for kind in ["rsa", "ecdsa", "ed25519"] {
            let path = dir.path().join(format!("ssh_host_{kind}_key"));
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", kind, "-N", ""])
                .arg("-f")
                .arg(&path)
                .status()
                .expect("ssh-keygen");
            assert!(status.success());
            keys.push(path);
        }
        // Debian's packaged sshd_config; without PAM unless asked (PAM's only visible
        // effect is the failure delay, which the comparison tests do not look at).
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "KbdInteractiveAuthentication no\nUsePAM {}\nX11Forwarding yes\nPrintMotd no\nAcceptEnv LANG LC_*\nSubsystem sftp /usr/lib/openssh/sftp-server\nPidFile none\n{extra}",
                if pam { "yes" } else { "no" }
            ),
        )
        .expect("sshd_config");
        let _ = std::fs::create_dir_all("/run/sshd");
        // sshd refuses port 0 ("Bad port number"), so it cannot pick a port and report
        // it: a port free a moment ago may be taken before sshd binds it, and then sshd
        // exits; try another (bounded).
        let (child, port, log) = (0..5)
            .find_map(|_| {
                let port = free_port();
                let mut command = Command::new(sshd);
                command.args(["-D", "-e", "-f"]).arg(&config).args([
                    "-p",
                    &port.to_string(),
                    "-o",
                    "ListenAddress=127.0.0.1",
                ]);
                for key in &keys {
                    command.arg("-h").arg(key);
                }
                let log = dir.path().join(format!("sshd-{port}.log"));
                let mut child = command
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log).expect("sshd log"))
                    .spawn()
                    .expect("spawn sshd");
                // sshd's own word that it bound the port (a connect could reach another
                // process's listener there).
                let bound = format!("Server listening on 127.0.0.1 port {port}.");
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    if let Ok(Some(_)) = child.try_wait() {
                        return None;
                    }
                    if std::fs::read_to_string(&log).is_ok_and(|text| text.contains(&bound)) {
                        return Some((child, port, log));
                    }
                    assert!(Instant::now() < deadline, "sshd did not start");
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
            .expect("sshd could not listen on any of 5 free ports");
        Some(ReferenceSshd {
            child,
            port,
            log,
            _dir: dir,
        })
    }
}

impl ReferenceSshd {
    /// What sshd logged so far (its `-e` output: the lines auth.log gets on a server).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The listening sshd's process id (its connections are its children); for the
    /// benches' CPU and memory figures.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ReferenceSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
