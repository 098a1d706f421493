//! The box's network (`egress` in the configuration).
//!
//! Each box gets an `eth0` of its own, a veth linked to a gateway network namespace
//! of its own in which only Hermes listens: nothing a box sends is routed anywhere.
//! Hermes answers the box's DNS, fetches downloads upstream within limits (keeping
//! every byte) and logs everything else, refused or dropped as a firewall would.
//! Upstream connections are Hermes's own, made from the host, and never go to a
//! private, loopback, link-local or metadata address (SSRF).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod command;
pub mod dns;
pub mod fetch;
mod forward;
pub mod ftp;
mod gateway;
pub mod host;
pub mod host_addresses;
mod link;
mod netns;
mod network;
mod original_dst;
pub mod parts;
mod protocol;
mod rules;
pub mod seams;
mod sinkhole;
pub mod ssrf;
pub mod tftp;
pub mod tls;

pub use forward::SshForwards;
pub use gateway::MAX_OPEN_PER_BOX;
pub use network::EgressNetwork;
pub use sinkhole::DROP_HOLD;

use std::sync::Arc;

use hermes_core::events::{ConnectionContext, EventBuilder, EventBus, EventId};

/// Whose traffic a box's connection is: the events it makes go to the session the
/// box serves now (a returning source's box may serve several, one after another).
#[derive(Clone)]
pub struct BoxContext {
    /// The box's container id.
    pub container_id: String,
    /// The session the box serves now, if any.
    pub owner: Arc<dyn Fn() -> Option<ConnectionContext> + Send + Sync>,
    /// Where events go.
    pub events: EventBus,
}

impl BoxContext {
    /// Emits an event about this box's traffic: the session's when one is known,
    /// otherwise a global one naming the container.
    pub fn emit(&self, id: EventId, build: impl FnOnce(EventBuilder) -> EventBuilder) {
        let builder = match (self.owner)() {
            Some(context) => EventBuilder::connection(id, &context),
            None => EventBuilder::global(id).field("container_id", self.container_id.as_str()),
        };
        self.events.emit(build(builder));
    }
}

impl std::fmt::Debug for BoxContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoxContext")
            .field("container_id", &self.container_id)
            .finish_non_exhaustive()
    }
}
