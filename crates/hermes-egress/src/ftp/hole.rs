//! The opening a waiting FTP data port makes in its box's firewall: the box's
//! connection to exactly that address and port is redirected to Hermes, and only
//! while the transfer waits (elsewhere the firewall answers as for any port).

use std::fs::File;
use std::net::{SocketAddr, SocketAddrV4};

use crate::command::{self, CommandError};
use crate::rules;

/// Why a data port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum HoleError {
    #[error("an IPv6 data port (boxes have IPv4 only)")]
    Ipv6,
    #[error("the firewall task ended early")]
    Task,
    #[error("the gateway namespace: {0}")]
    Namespace(std::io::Error),
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// An open redirect; removed when dropped.
pub struct Hole {
    /// The gateway namespace, held open: the rule goes with it if the box goes first.
    namespace: File,
    destination: SocketAddrV4,
}

impl Hole {
    /// Opens the redirect for `destination` in the gateway namespace `namespace`.
    pub async fn open(namespace: File, destination: SocketAddr) -> Result<Hole, HoleError> {
        let SocketAddr::V4(destination) = destination else {
            return Err(HoleError::Ipv6);
        };
        let hole = Hole {
            namespace,
            destination,
        };
        let namespace = hole.namespace.try_clone().map_err(HoleError::Namespace)?;
        let args = rules::data_port_rule(true, destination);
        tokio::task::spawn_blocking(move || iptables(&namespace, &args))
            .await
            .map_err(|_| HoleError::Task)??;
        Ok(hole)
    }
}

fn iptables(namespace: &File, args: &[String]) -> Result<(), CommandError> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    command::run_at(Some(namespace), "iptables", &args, "").map(drop)
}

impl Drop for Hole {
    fn drop(&mut self) {
        let Ok(namespace) = self.namespace.try_clone() else {
            return;
        };
        let args = rules::data_port_rule(false, self.destination);
        let close = move || {
            let _ = iptables(&namespace, &args);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(close)),
            Err(_) => close(),
        }
    }
}
