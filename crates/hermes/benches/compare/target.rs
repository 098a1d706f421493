//! The servers a run measures: any SSH server given on the command line, or the two
//! the harness starts itself on loopback (Hermes, and Debian's sshd as the reference).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::process::Command;

use hermes_core::config::MaxStartups;

use crate::harness::{Hermes, Options};
use crate::reference::ReferenceSshd;

/// The password of the harness's own logins (Hermes's root, the reference's user).
pub const PASSWORD: &str = "bench-Pa55";
/// The account the reference sshd logs in (root cannot log in by password there).
const REFERENCE_USER: &str = "hermesbench";

/// Where and how to reach one server under test.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
    pub user: String,
    pub password: String,
    /// The server's process here (CPU and memory are read from its tree), if local.
    pub pid: Option<u32>,
    /// The name of the server's own processes in that tree (`hermes`, `sshd`).
    pub comm: String,
    /// Another instance that serves the authentication-rate figure (the reference
    /// without PAM), and its pid.
    pub auth: Option<(SocketAddr, Option<u32>)>,
    /// Hermes's sensor name, to find its containers (local Hermes only).
    pub sensor: Option<String>,
}

impl Target {
    /// Parses `name=N,host=H,port=P,user=U,password=W[,pid=N][,comm=C]`.
    pub fn parse(text: &str) -> Result<Target, String> {
        let mut fields = std::collections::HashMap::new();
        for part in text.split(',') {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not key=value"))?;
            fields.insert(key.trim().to_owned(), value.to_owned());
        }
        let get = |key: &str| {
            fields
                .get(key)
                .cloned()
                .ok_or_else(|| format!("--target needs {key}="))
        };
        let host = get("host")?;
        let port: u16 = get("port")?
            .parse()
            .map_err(|_| "port= is not a port number".to_owned())?;
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("host {host:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("host {host:?} has no address"))?;
        let pid = match fields.get("pid") {
            Some(pid) => Some(pid.parse().map_err(|_| "pid= is not a number".to_owned())?),
            None => None,
        };
        Ok(Target {
            name: get("name")?,
            addr,
            user: get("user")?,
            password: get("password")?,
            pid,
            comm: fields.get("comm").cloned().unwrap_or_else(|| "sshd".into()),
            auth: None,
            sensor: None,
        })
    }

    /// Whether connections can come from many loopback source addresses (each one a
    /// different "attacker", so per-source limits do not pile them into one).
    pub fn on_loopback(&self) -> bool {
        self.addr.ip().is_loopback() && self.addr.is_ipv4()
    }

    /// The address the authentication-rate figure is taken from, and its pid.
    pub fn auth_endpoint(&self) -> (SocketAddr, Option<u32>) {
        self.auth.unwrap_or((self.addr, self.pid))
    }

    /// Full ids of this Hermes's running containers (empty for other servers).
    pub fn containers(&self) -> Vec<String> {
        let Some(sensor) = &self.sensor else {
            return Vec::new();
        };
        let output = Command::new("docker")
            .args(["ps", "-q", "--no-trunc", "--filter"])
            .arg(format!("label=hermes.sensor={sensor}"))
            .output();
        output
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// How many of Hermes's boxes run on this machine, of any instance.
pub fn boxes_running() -> usize {
    Command::new("docker")
        .args(["ps", "-q", "--filter", "label=hermes.role=target"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0)
}

/// The `i`-th distinct loopback source address (127.1.0.1, 127.1.0.2, ...).
pub fn loopback_source(i: usize) -> IpAddr {
    let n = i % (250 * 250);
    IpAddr::from([127, 1, (n / 250) as u8, (n % 250 + 1) as u8])
}

/// A host account for the reference sshd, removed again when dropped.
pub struct ReferenceUser {
    created: bool,
}

impl ReferenceUser {
    fn ensure() -> ReferenceUser {
        let exists = Command::new("id")
            .arg(REFERENCE_USER)
            .output()
            .is_ok_and(|o| o.status.success());
        if !exists {
            let status = Command::new("useradd")
                .args(["-m", "-s", "/bin/bash", REFERENCE_USER])
                .status()
                .expect("useradd");
            assert!(status.success(), "useradd {REFERENCE_USER} failed");
        }
        let mut chpasswd = Command::new("chpasswd")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("chpasswd");
        if let Some(stdin) = chpasswd.stdin.as_mut() {
            use std::io::Write;
            let _ = writeln!(stdin, "{REFERENCE_USER}:{PASSWORD}");
        }
        drop(chpasswd.stdin.take());
        assert!(
            chpasswd.wait().is_ok_and(|s| s.success()),
            "chpasswd failed"
        );
        ReferenceUser { created: !exists }
    }
}

impl Drop for ReferenceUser {
    fn drop(&mut self) {
        if self.created {
            // Its sessions may still be closing.
            let _ = Command::new("pkill").args(["-u", REFERENCE_USER]).status();
            std::thread::sleep(std::time::Duration::from_millis(300));
            let _ = Command::new("userdel")
                .args(["-r", REFERENCE_USER])
                .output();
        }
    }
}

/// The servers the harness started; they stop when this is dropped.
pub struct LocalServers {
    pub targets: Vec<Target>,
    _hermes: Option<Hermes>,
    _sshd: Vec<ReferenceSshd>,
    _user: Option<ReferenceUser>,
}

/// Connection admission opened the same way on both servers, so that the figures
/// measure the servers and not their flood limits (sshd's MaxStartups syntax).
const MAX_STARTUPS: &str = "2000:30:2000";

/// Starts Hermes (warm pool, failure delay 0, limits for 200+ sessions) and Debian's
/// sshd twice (Debian's settings with PAM; without PAM for the authentication rate).
/// Warm boxes the local Hermes keeps.
pub const POOL_SIZE: u32 = 8;

pub fn start_local(hermes: bool, sshd: bool, sessions: usize) -> LocalServers {
    let mut targets = Vec::new();
    let mut started_hermes = None;
    let mut started_sshd = Vec::new();
    let mut user = None;
    if hermes {
        let max_startups = MaxStartups::parse(MAX_STARTUPS).expect("sshd's MaxStartups syntax");
        let most = (sessions + 20) as u32;
        let instance = Hermes::start(
            Options {
                credentials: vec![("root", PASSWORD)],
                failure_delay_ms: 0,
                pool_size: POOL_SIZE,
                max_sessions: most,
                // As shipped: a returning source gets the box its last session left.
                reuse: true,
                ..Options::default()
            }
            .configure(move |c| {
                // Long enough for the returning source's next login, short enough that
                // one measurement's boxes do not run on into the next's figures.
                c.container_pool.reuse.linger = hermes_core::config::Seconds::new(3);
                c.server.max_startups = max_startups;
                c.server.max_connections = 5000;
                c.server.max_connections_per_source = 64;
                c.container_pool.max_containers = most;
            }),
        );
        targets.push(Target {
            name: "hermes".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], instance.port)),
            user: "root".into(),
            password: PASSWORD.into(),
            pid: Some(instance.pid()),
            comm: "hermes".into(),
            auth: None,
            sensor: Some(instance.sensor.clone()),
        });
        started_hermes = Some(instance);
    }
    if sshd {
        user = Some(ReferenceUser::ensure());
        let extra = format!("MaxStartups {MAX_STARTUPS}\n");
        let with_pam = ReferenceSshd::start_with(true, &extra).expect("openssh-server");
        let without_pam = ReferenceSshd::start_with(false, &extra).expect("openssh-server");
        targets.push(Target {
            name: "debian sshd".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], with_pam.port)),
            user: REFERENCE_USER.into(),
            password: PASSWORD.into(),
            pid: Some(with_pam.pid()),
            comm: "sshd".into(),
            auth: Some((
                SocketAddr::from(([127, 0, 0, 1], without_pam.port)),
                Some(without_pam.pid()),
            )),
            sensor: None,
        });
        started_sshd.push(with_pam);
        started_sshd.push(without_pam);
    }
    LocalServers {
        targets,
        _hermes: started_hermes,
        _sshd: started_sshd,
        _user: user,
    }
}
