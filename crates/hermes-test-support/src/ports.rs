//! Ports without races: Docker publishes on port 0 and says which port it took; for
//! the programs that refuse port 0 (sshd, `ssh -L`), a candidate port, a bounded retry,
//! and a check that the listener found is theirs.

use std::net::TcpListener;
use std::process::Command;

/// A port that was free a moment ago. Racy (anything may take it before the caller
/// binds it): only for programs that cannot listen on port 0 and report the port
/// (sshd, `ssh -L`), and always with a bounded retry when their bind fails.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The TCP ports process `pid` listens on: its socket descriptors matched against the
/// listening sockets of /proc/net/tcp{,6}. Tells its listener apart from another
/// process's on the same port.
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|target| {
                    let target = target.to_string_lossy();
                    let inode = target.strip_prefix("socket:[")?.strip_suffix(']')?;
                    Some(inode.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        // Columns: sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode.
        for row in text.lines().skip(1) {
            let columns: Vec<&str> = row.split_whitespace().collect();
            let (Some(local), Some(&"0A"), Some(inode)) =
                (columns.get(1), columns.get(3), columns.get(9))
            else {
                continue;
            };
            let port = local
                .rsplit_once(':')
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            if let Some(port) = port
                && inodes.iter().any(|i| i == inode)
            {
                ports.push(port);
            }
        }
    }
    ports
}

/// The loopback port Docker published for `container_port` of `container` (run with
/// `-p 127.0.0.1:0:<port>`: the engine picks a free port and binds it, so no other
/// test can take it between a probe and the bind).
pub fn published_port(container: &str, container_port: u16) -> u16 {
    let output = Command::new("docker")
        .args(["port", container, &format!("{container_port}/tcp")])
        .output()
        .expect("docker port");
    parse_published_port(&String::from_utf8_lossy(&output.stdout)).unwrap_or_else(|| {
        panic!(
            "no published port for {container}:{container_port}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The port of the first `127.0.0.1:<port>` line of `docker port` (or
/// `docker-compose port`) output.
pub fn parse_published_port(text: &str) -> Option<u16> {
    text.lines().find_map(|line| {
        let address: std::net::SocketAddr = line.trim().parse().ok()?;
        (address.ip().is_loopback() && address.port() != 0).then_some(address.port())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_of_this_process_is_found_and_another_port_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let ports = listening_ports(std::process::id());
        assert!(ports.contains(&port), "{port} not in {ports:?}");
        drop(listener);
        assert!(!listening_ports(std::process::id()).contains(&port));
    }

    #[test]
    fn the_loopback_line_of_docker_port_is_read() {
        assert_eq!(parse_published_port("127.0.0.1:32768\n"), Some(32768));
        assert_eq!(
            parse_published_port("0.0.0.0:1\n127.0.0.1:40000\n"),
            Some(40000)
        );
        assert_eq!(parse_published_port("0.0.0.0:32768\n"), None);
        assert_eq!(parse_published_port("127.0.0.1:0\n"), None);
        assert_eq!(parse_published_port(""), None);
    }
}
