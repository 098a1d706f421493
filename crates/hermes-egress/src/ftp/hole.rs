//! The opening a waiting FTP data port makes in its box's firewall: the box's
//! connection to exactly that address and port is redirected to Hermes, and only
//! while the transfer waits (elsewhere the firewall answers as for any port).

use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use crate::command::{self, CommandError};
use crate::rules;

/// Why a data port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum HoleError {
    #[error("an IPv6 data port (boxes have IPv4 only)")]
    Ipv6,
    #[error("the firewall task ended early")]
    Task,
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// An open redirect; removed when dropped.
pub struct Hole {
    namespace: PathBuf,
    destination: SocketAddrV4,
}

impl Hole {
    /// Opens the redirect for `destination` in the namespace at `namespace`.
    pub async fn open(namespace: PathBuf, destination: SocketAddr) -> Result<Hole, HoleError> {
        let SocketAddr::V4(destination) = destination else {
            return Err(HoleError::Ipv6);
        };
        let hole = Hole {
            namespace,
            destination,
        };
        let (namespace, args) = (
            hole.namespace.clone(),
            rules::data_port_rule(true, destination),
        );
        tokio::task::spawn_blocking(move || iptables(&namespace, &args))
            .await
            .map_err(|_| HoleError::Task)??;
        Ok(hole)
    }
}

fn iptables(namespace: &std::path::Path, args: &[String]) -> Result<(), CommandError> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    command::run(Some(namespace), "iptables", &args, "").map(drop)
}

impl Drop for Hole {
    fn drop(&mut self) {
        let namespace = self.namespace.clone();
        let args = rules::data_port_rule(false, self.destination);
        // A namespace gone with its box took the rule with it.
        let close = move || {
            if namespace.exists() {
                let _ = iptables(&namespace, &args);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(close)),
            Err(_) => close(),
        }
    }
}
