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
mod dial;
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
mod nflog;
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

use hermes_core::boxnet::BoxOwner;
use hermes_core::events::{EventBuilder, EventBus, EventId};

/// Whose traffic a box's connection is: the events it makes go to the session the
/// box serves now (a returning source's box may serve several, one after another).
#[derive(Clone)]
pub struct BoxContext {
    /// The box's container id.
    pub container_id: String,
    /// The session the box serves now, if any, with its commands' fetch hints.
    pub owner: Arc<dyn Fn() -> Option<BoxOwner> + Send + Sync>,
    /// Where events go.
    pub events: EventBus,
}

impl BoxContext {
    /// Emits an event about this box's traffic: the session's when one is known,
    /// otherwise a global one naming the container.
    pub fn emit(&self, id: EventId, build: impl FnOnce(EventBuilder) -> EventBuilder) {
        let owner = (self.owner)();
        self.emit_as(owner.as_ref(), id, build);
    }

    /// Emits `cowrie.session.file_download` for a body fetched from `url` (any
    /// scheme): with `url`, and `destfile` where the session's command that asked
    /// for it saves it, when one did. Returns the `destfile` (attacker text: a log
    /// line escapes it).
    pub fn emit_download(
        &self,
        url: &str,
        build: impl FnOnce(EventBuilder) -> EventBuilder,
    ) -> Option<String> {
        let owner = (self.owner)();
        let destfile = owner.as_ref().and_then(|owner| owner.hints.destfile(url));
        self.emit_as(owner.as_ref(), EventId::FileDownload, |event| {
            let event = build(event.field("url", url));
            match &destfile {
                Some(destfile) => event.field("destfile", destfile.as_str()),
                None => event,
            }
        });
        destfile
    }

    /// The session's id as the fetch budget counts it, or the container's.
    pub fn session_key(&self) -> String {
        match (self.owner)() {
            Some(owner) => owner.context.session.to_string(),
            None => format!("container {}", self.container_id),
        }
    }

    fn emit_as(
        &self,
        owner: Option<&BoxOwner>,
        id: EventId,
        build: impl FnOnce(EventBuilder) -> EventBuilder,
    ) {
        let builder = match owner {
            Some(owner) => EventBuilder::connection(id, &owner.context),
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
