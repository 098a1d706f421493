//! A box's network, seen from the container engine's side: the pool gives each
//! container it starts its network and takes it away when the container stops or is
//! removed. The egress crate implements it; without egress nothing is called.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::capture::FetchHints;
use crate::events::ConnectionContext;
use crate::ids::SessionId;

/// Why a box could not be given its network.
#[derive(Debug, Clone, thiserror::Error)]
#[error("box network: {0}")]
pub struct BoxNetworkError(pub String);

/// Gives started containers their network (`egress`).
#[async_trait]
pub trait BoxNetwork: Send + Sync {
    /// A container just started (created, or a stopped one started again: its
    /// network namespace is new then). `init_pid` is its first process on this host.
    async fn attach(&self, container_id: &str, init_pid: u32) -> Result<(), BoxNetworkError>;

    /// The container stopped or was removed: its gateway goes.
    async fn detach(&self, container_id: &str);

    /// At start, before the pool stops what an earlier run left running: gateways
    /// of containers not in `running` are removed, the others kept for reuse.
    async fn reconcile(&self, running: &[String]);

    /// At shutdown, after the pool: every gateway of this sensor is removed.
    async fn shutdown(&self);
}

/// Connects to a box over its network from inside its gateway, as a host on the
/// internet would reach a server.
#[async_trait]
pub trait BoxDialer: Send + Sync {
    /// A TCP connection to `port` of the box's address, coming from `source` (the
    /// attacker's address and port, which the box then sees as its peer) or, where
    /// the box's network cannot carry that address (loopback, IPv6, the box's own
    /// network), from its gateway's address.
    async fn dial(
        &self,
        container_id: &str,
        source: std::net::SocketAddr,
        port: u16,
    ) -> std::io::Result<tokio::net::TcpStream>;
}

/// Which session each leased container serves now, so that a box's traffic is
/// attributed to it (set when the lease is ready, cleared at its release). A box's
/// traffic after its session released it (a process the attacker left running, until
/// the box stops) stays that session's: the box network forgets it when the box
/// stops.
#[derive(Debug, Default)]
pub struct BoxOwners {
    owners: Mutex<HashMap<String, Owner>>,
}

#[derive(Debug)]
struct Owner {
    owner: BoxOwner,
    /// Released: kept only for what the box still sends until it stops.
    released: bool,
}

/// The session a box's traffic is attributed to, with the fetches its commands
/// asked for (shared: the box's gateway names a download's `destfile` from them).
/// They live as long as the session or the box's entry, whichever is longer.
#[derive(Debug, Clone)]
pub struct BoxOwner {
    /// The session.
    pub context: ConnectionContext,
    /// Its commands' fetches.
    pub hints: FetchHints,
}

impl From<ConnectionContext> for BoxOwner {
    /// A session known without its commands (an SSH client's forwarding): no hints.
    fn from(context: ConnectionContext) -> Self {
        BoxOwner {
            context,
            hints: FetchHints::default(),
        }
    }
}

impl BoxOwners {
    /// `context`'s session now uses `container_id` (a later session of a returning
    /// source takes over a shared box); `hints` are its commands' fetches.
    pub fn set(&self, container_id: &str, context: &ConnectionContext, hints: &FetchHints) {
        let owner = Owner {
            owner: BoxOwner {
                context: context.clone(),
                hints: hints.clone(),
            },
            released: false,
        };
        self.lock().insert(container_id.to_owned(), owner);
    }

    /// `session` is done with `container_id`; another session's claim stays.
    pub fn clear(&self, container_id: &str, session: SessionId) {
        if let Some(owner) = self.lock().get_mut(container_id)
            && owner.owner.context.session == session
        {
            owner.released = true;
        }
    }

    /// The box stopped or was removed: nothing it sends is anyone's any more.
    pub fn forget(&self, container_id: &str) {
        self.lock().remove(container_id);
    }

    /// The session `container_id` serves now, or the last one it served until it
    /// stops.
    pub fn owner(&self, container_id: &str) -> Option<BoxOwner> {
        self.lock()
            .get(container_id)
            .map(|owner| owner.owner.clone())
    }

    /// Whether a session uses `container_id` now.
    pub fn in_use(&self, container_id: &str) -> bool {
        self.lock()
            .get(container_id)
            .is_some_and(|owner| !owner.released)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Owner>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(port: u16) -> ConnectionContext {
        ConnectionContext {
            session: SessionId::random(),
            src: ([127, 0, 0, 1], port).into(),
            dst: ([127, 0, 0, 1], 22).into(),
        }
    }

    #[test]
    fn the_owner_is_the_latest_session_and_stays_until_the_box_stops() {
        let owners = BoxOwners::default();
        let (first, second) = (context(1), context(2));
        let (first_hints, second_hints) = (FetchHints::default(), FetchHints::default());
        owners.set("box", &first, &first_hints);
        owners.set("box", &second, &second_hints);
        owners.clear("box", first.session);
        assert!(owners.in_use("box"), "the second session still uses it");
        let session = |owners: &BoxOwners| owners.owner("box").map(|o| o.context.session);
        assert_eq!(session(&owners), Some(second.session));
        owners.clear("box", second.session);
        assert!(!owners.in_use("box"));
        // What a process left running sends until the box stops is still its.
        assert_eq!(session(&owners), Some(second.session));
        owners.forget("box");
        assert!(owners.owner("box").is_none());
    }

    #[test]
    fn the_owner_brings_its_sessions_fetch_hints_and_they_go_with_the_box() {
        let owners = BoxOwners::default();
        let (first, second) = (context(1), context(2));
        let (first_hints, second_hints) = (FetchHints::default(), FetchHints::default());
        owners.set("box", &first, &first_hints);
        // Noted after the lease too: the entry shares the session's hints.
        first_hints.note("wget -O /tmp/a http://h/a");
        let owner = owners.owner("box").expect("an owner");
        assert_eq!(
            owner.hints.destfile("http://h/a").as_deref(),
            Some("/tmp/a")
        );
        drop(owner);
        // A later session's box: its own hints, not the first's.
        owners.set("box", &second, &second_hints);
        let owner = owners.owner("box").expect("an owner");
        assert_eq!(owner.hints.destfile("http://h/a"), None);
        // The entry holds the hints until the box stops, not longer.
        drop(owner);
        assert_eq!(
            second_hints.holders(),
            2,
            "the session's and the box's entry"
        );
        assert_eq!(first_hints.holders(), 1, "the session's only");
        owners.forget("box");
        assert_eq!(second_hints.holders(), 1, "gone with the box");
    }
}
