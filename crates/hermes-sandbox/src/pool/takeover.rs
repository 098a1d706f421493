//! The box's sshd's channels taken over from this host
//! ([`hermes_core::box_sshd::ChannelTakeover`]): see [`crate::sshd_fds`].

use std::net::SocketAddr;

use async_trait::async_trait;
use hermes_core::box_sshd::{BoxSshdError, ChannelTakeover, Taken, TakenChannel, TakenRead};

use super::DockerSandbox;
use crate::files;
use crate::sshd_fds;
use crate::taken_io::TakenFd;

fn refused(why: impl std::fmt::Display) -> BoxSshdError {
    BoxSshdError::Channel(format!(
        "cannot take the channel from the box's sshd: {why}"
    ))
}

#[async_trait]
impl ChannelTakeover for DockerSandbox {
    async fn available(&self, container_id: &str) -> bool {
        if !self.direct_io {
            return false;
        }
        match self.init_pid(container_id).await {
            Ok(Some(pid)) if pid > 0 => sshd_fds::may_take_from(pid),
            _ => false,
        }
    }

    async fn take(
        &self,
        container_id: &str,
        client: SocketAddr,
        port: u16,
        terminal: bool,
        taken: &Taken,
    ) -> Result<TakenChannel, BoxSshdError> {
        let pid = match self.init_pid(container_id).await {
            Ok(Some(pid)) if pid > 0 => pid,
            Ok(_) => return Err(refused("the box is not running")),
            Err(error) => return Err(refused(error)),
        };
        let held = taken.keys();
        let fds = tokio::task::spawn_blocking(move || {
            let pids = || files::cgroup_pids(pid).unwrap_or_default();
            sshd_fds::take_channel(pid, pids, client, port, terminal, &held)
        })
        .await
        .map_err(refused)?
        .map_err(refused)?;
        let claim = taken.claim(fds.keys);
        let output = TakenFd::new(fds.output, terminal).map_err(refused)?;
        let errors = match fds.errors {
            Some(fd) => Some(TakenFd::new(fd, false).map_err(refused)?),
            None => None,
        };
        // Its input closes when the channel's input drops its copy (see the ssh
        // adapter's TakenBoxInput); a terminal stays open through `output`.
        let input = if terminal {
            Some(output.clone())
        } else {
            match fds.input {
                Some(fd) => Some(TakenFd::new(fd, false).map_err(refused)?),
                None => None,
            }
        };
        Ok(TakenChannel {
            output: Box::new(output),
            errors: errors.map(|fd| Box::new(fd) as Box<dyn TakenRead>),
            input: input.map(|fd| Box::new(fd) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>),
            terminal,
            claim,
        })
    }
}
