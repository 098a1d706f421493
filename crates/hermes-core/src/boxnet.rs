//! A box's network, seen from the container engine's side: the pool gives each
//! container it starts its network and takes it away when the container stops or is
//! removed. The egress crate implements it; without egress nothing is called.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

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
    context: ConnectionContext,
    /// Released: kept only for what the box still sends until it stops.
    released: bool,
}

impl BoxOwners {
    /// `context`'s session now uses `container_id` (a later session of a returning
    /// source takes over a shared box).
    pub fn set(&self, container_id: &str, context: &ConnectionContext) {
        let owner = Owner {
            context: context.clone(),
            released: false,
        };
        self.lock().insert(container_id.to_owned(), owner);
    }

    /// `session` is done with `container_id`; another session's claim stays.
    pub fn clear(&self, container_id: &str, session: SessionId) {
        if let Some(owner) = self.lock().get_mut(container_id)
            && owner.context.session == session
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
    pub fn owner(&self, container_id: &str) -> Option<ConnectionContext> {
        self.lock()
            .get(container_id)
            .map(|owner| owner.context.clone())
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
        owners.set("box", &first);
        owners.set("box", &second);
        owners.clear("box", first.session);
        assert!(owners.in_use("box"), "the second session still uses it");
        assert_eq!(owners.owner("box").map(|c| c.session), Some(second.session));
        owners.clear("box", second.session);
        assert!(!owners.in_use("box"));
        // What a process left running sends until the box stops is still its.
        assert_eq!(owners.owner("box").map(|c| c.session), Some(second.session));
        owners.forget("box");
        assert!(owners.owner("box").is_none());
    }
}
