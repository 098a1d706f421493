//! Port forwarding: every request is logged; nothing is bound, and nothing is
//! connected except through the egress gateway.
//!
//! `direct-tcpip` (ssh -L, -D) is refused as an sshd behind an egress firewall refuses
//! it, or, in capture mode, accepted so the client's payload (spam, proxy traffic,
//! exploits aimed elsewhere) can be logged within limits. With `egress` on, the
//! egress gateway decides instead, as for a box's connection (HTTP fetched and kept,
//! the rest logged and refused or dropped); what the client sends is logged the same
//! way. `tcpip-forward` (ssh -R) is answered as sshd answers it, with a port from the
//! kernel's ephemeral range when the client asks for port 0; no socket is ever opened.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rand::RngExt;

use super::forward_egress::PendingForward;
use super::{Connection, CountedPlace};
use crate::config::DirectTcpipMode;
use crate::escape::{escape_bytes, escape_untrusted};
use crate::events::{EventBuilder, EventId};
use crate::forward_gateway::ForwardTarget;

/// Linux's default `net.ipv4.ip_local_port_range`, where sshd's port-0 binds land.
const EPHEMERAL_PORTS: std::ops::RangeInclusive<u32> = 32768..=60999;

/// Bytes of forwarded data per event: escaped (at most 4 bytes each) it stays within
/// an event field's bound.
const DATA_PIECE: usize = 512;

/// Remote forwards one connection may hold; past it requests are refused, as sshd
/// refuses one it cannot bind.
const MAX_REMOTE_FORWARDS: usize = 64;

/// The longest address a remote forward may name (a DNS name's limit): sshd cannot
/// resolve a longer one and refuses the request.
const MAX_FORWARD_ADDRESS: usize = 255;

/// The port the persona's own sshd listens on inside the server.
const SSHD_PORT: u32 = 22;

/// What sshd says when the connect fails (ECONNREFUSED).
const CONNECTION_REFUSED: &str = "Connection refused";

/// How to answer a `direct-tcpip` request.
pub enum DirectTcpip {
    /// Refuse with code 2 (connect failed) and this description, as sshd does.
    Refuse {
        /// The description sshd sends (`strerror` of the failed connect).
        description: &'static str,
    },
    /// Accept and log what comes through.
    Capture(ForwardCapture),
    /// The egress gateway decides (it may look the name up first, so the answer
    /// waits for [`PendingForward::decide`]).
    Gateway(PendingForward),
}

/// Logs what the client sends into a forward (`cowrie.direct-tcpip.data`), up to a
/// byte limit.
pub(super) struct DataLog {
    pub(super) conn: Arc<Connection>,
    pub(super) dst_host: String,
    pub(super) dst_port: u32,
    pub(super) id: u32,
    pub(super) remaining: u64,
}

impl DataLog {
    /// Logs a piece; false once the limit is reached.
    pub(super) fn log(&mut self, bytes: &[u8]) -> bool {
        let keep = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        self.remaining -= keep as u64;
        // Pieces whose escaped form fits one event field: nothing is cut.
        for piece in bytes[..keep].chunks(DATA_PIECE) {
            let data = escape_bytes(piece);
            self.conn.services.events.emit(
                EventBuilder::connection(EventId::DirectTcpipData, &self.conn.context)
                    .field("dst_ip", self.dst_host.clone())
                    .field("dst_port", self.dst_port)
                    .field("data", data.clone())
                    .field("id", self.id)
                    .message(format!(
                        "direct-tcp forward to {}:{} with data {data}",
                        escape_untrusted(&self.dst_host),
                        self.dst_port
                    )),
            );
        }
        self.remaining > 0
    }
}

/// A `direct-tcpip` channel being captured: logs the client's data, within the
/// configured size and time.
pub struct ForwardCapture {
    log: DataLog,
    lifetime: Duration,
    /// A place among `max_captures_per_connection`, freed when the channel ends.
    _place: CountedPlace,
}

impl ForwardCapture {
    /// How long the channel may stay open.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Logs a piece of the client's data. Returns false once the byte limit is
    /// reached: the channel should be closed.
    pub fn data(&mut self, bytes: &[u8]) -> bool {
        self.log.log(bytes)
    }
}

/// The connection's forwarding state.
#[derive(Default)]
pub(super) struct ForwardState {
    /// Ports of accepted remote forwards (so a second bind of one fails, and a cancel
    /// of an unknown one too).
    remote_ports: std::sync::Mutex<HashSet<(String, u32)>>,
    /// Capture channels open.
    captures: Arc<AtomicU32>,
    /// Direct-tcpip channels seen (Cowrie's `id`).
    next_id: AtomicU32,
}

impl Connection {
    /// A `direct-tcpip` channel open: handed to the egress gateway when `egress` is
    /// on, otherwise logged, then refused or captured per `forwarding.direct_tcpip`.
    /// Either way one connection holds at most `max_captures_per_connection` open.
    pub fn direct_tcpip(
        self: &Arc<Self>,
        host: &str,
        port: u32,
        orig_ip: &str,
        orig_port: u32,
    ) -> DirectTcpip {
        let config = &self.services.config.forwarding;
        let state = &self.forwards;
        let id = state.next_id.fetch_add(1, Ordering::AcqRel);
        let gateway = self.services.forward_gateway.get().cloned();
        let place = match (&gateway, config.direct_tcpip) {
            (None, DirectTcpipMode::Refuse) => None,
            _ => CountedPlace::take(&state.captures, config.max_captures_per_connection),
        };
        let refused = DirectTcpip::Refuse {
            description: CONNECTION_REFUSED,
        };
        match (gateway, place) {
            (Some(gateway), Some(place)) => match u16::try_from(port) {
                Ok(port) => DirectTcpip::Gateway(PendingForward {
                    conn: Arc::clone(self),
                    gateway,
                    target: ForwardTarget {
                        host: host.to_owned(),
                        port,
                    },
                    orig_ip: orig_ip.to_owned(),
                    orig_port,
                    id,
                    place,
                }),
                // No such port to connect to.
                Err(_) => {
                    self.log_direct_tcpip(host, port, orig_ip, orig_port, false);
                    refused
                }
            },
            (gateway, None) => {
                self.log_direct_tcpip(host, port, orig_ip, orig_port, false);
                if gateway.is_some() || config.direct_tcpip == DirectTcpipMode::Capture {
                    self.channel_refused(
                        "direct-tcpip",
                        "forwarding.max_captures_per_connection reached",
                    );
                }
                refused
            }
            (None, Some(place)) => {
                self.log_direct_tcpip(host, port, orig_ip, orig_port, true);
                DirectTcpip::Capture(ForwardCapture {
                    log: DataLog {
                        conn: Arc::clone(self),
                        dst_host: host.to_owned(),
                        dst_port: port,
                        id,
                        remaining: config.capture_bytes.bytes(),
                    },
                    lifetime: config.capture_seconds.get(),
                    _place: place,
                })
            }
        }
    }

    /// `cowrie.direct-tcpip.request`.
    pub(super) fn log_direct_tcpip(
        &self,
        host: &str,
        port: u32,
        orig_ip: &str,
        orig_port: u32,
        accepted: bool,
    ) {
        self.services.events.emit(
            EventBuilder::connection(EventId::DirectTcpipRequest, &self.context)
                .field("dst_ip", host)
                .field("dst_port", port)
                .field("orig_ip", orig_ip)
                .field("orig_port", orig_port)
                .field("accepted", accepted)
                .message(format!(
                    "direct-tcp connection request to {}:{port} from {}:{orig_port}",
                    escape_untrusted(host),
                    escape_untrusted(orig_ip)
                )),
        );
        tracing::info!(target: "hermes::forward", session_id = %self.context.session, dst = %escape_untrusted(host), port, accepted, "direct-tcpip request");
    }

    /// A `tcpip-forward` request (ssh -R): logged and answered as sshd answers it
    /// (`AllowTcpForwarding yes`, `GatewayPorts no`): a privileged port only for root,
    /// not the port sshd itself holds nor one already forwarded, port 0 gets a port
    /// from the ephemeral range. Returns the port to report, or None to refuse.
    pub fn remote_forward(&self, address: &str, port: u32) -> Option<u32> {
        let is_root = self.state().metadata.username.as_deref() == Some("root");
        let allocated = if address.len() > MAX_FORWARD_ADDRESS {
            None
        } else if port == 0 {
            Some(rand::rng().random_range(EPHEMERAL_PORTS))
        } else if port > 65535 || port == SSHD_PORT || (port < 1024 && !is_root) {
            None
        } else {
            Some(port)
        };
        let accepted = allocated.filter(|bound| {
            let mut ports = self
                .forwards
                .remote_ports
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            ports.len() < MAX_REMOTE_FORWARDS && ports.insert((address.to_owned(), *bound))
        });
        let mut event = EventBuilder::connection(EventId::RemoteForward, &self.context)
            .field("address", address)
            .field("port", port)
            .field("accepted", accepted.is_some())
            .message(format!(
                "remote forward request: {}:{port}",
                escape_untrusted(address)
            ));
        if port == 0
            && let Some(bound) = accepted
        {
            event = event.field("allocated_port", bound);
        }
        self.services.events.emit(event);
        accepted
    }

    /// A `cancel-tcpip-forward`: succeeds for a forward that was granted.
    pub fn cancel_remote_forward(&self, address: &str, port: u32) -> bool {
        self.forwards
            .remote_ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(address.to_owned(), port))
    }
}
