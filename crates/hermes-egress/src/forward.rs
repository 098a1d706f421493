//! The SSH client's `direct-tcpip` channels (ssh -L, ssh -D) under the boxes' policy:
//! the host is looked up with the boxes' resolver, HTTP and HTTPS (told apart by the
//! first byte, as a box's are) to a fetchable port the SSRF policy allows are fetched
//! and kept, everything else is logged (`hermes.egress.connection`) and refused or
//! dropped per `egress.refused`. HTTPS is shown a mirror of upstream's certificate,
//! which the client's own trust store refuses: only a client that does not check
//! (`curl -k`) gets through (see [`crate::fetch::serve_tls_for`]).
//!
//! `reject` refuses the channel open at once, as sshd behind a firewall that resets
//! says "connect failed: Connection refused". `drop` opens the channel, logs what
//! the client sends first and never answers until [`crate::DROP_HOLD`]: what a box
//! sees of a dropped connection too (the gateway completes every box's handshake),
//! and the first bytes are the intelligence (a TLS hello's SNI, a pool login).
//! A connection's lookups are cut to `egress.dns.queries_per_second`, as a box's.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use hermes_core::boxnet::BoxOwner;
use hermes_core::config::EgressConfig;
use hermes_core::escape::{escape_bytes, escape_untrusted};
use hermes_core::events::{ConnectionContext, EventBus, EventId};
use hermes_core::forward_gateway::{
    ForwardAnswer, ForwardGateway, ForwardService, ForwardStream, ForwardTarget,
};
use hermes_core::ids::SessionId;

use crate::BoxContext;
use crate::dns::{self, Lookup, Resolver, TokenBucket};
use crate::fetch::{Fetcher, TlsClient, serve_http, serve_tls_for};
use crate::parts::HttpFetch;
use crate::protocol;
use crate::seams::FetchHandler;
use crate::sinkhole::{self, Answer};
use crate::tls::TlsGateway;

mod first_byte;

/// sshd's words when the connect is refused (ECONNREFUSED).
const CONNECTION_REFUSED: &str = "Connection refused";
/// When the name does not exist (glibc's EAI_NONAME).
const NAME_UNKNOWN: &str = "Name or service not known";
/// When the resolver did not answer (glibc's EAI_AGAIN).
const NAME_FAILED: &str = "Temporary failure in name resolution";
/// Connections whose lookup budget is kept; past it the budgets start over (a
/// connection then gets at most one more second's worth).
const MAX_BUDGETS: usize = 4096;

/// The egress policy for forwarded channels (`egress.mode` not `off`).
pub struct SshForwards {
    resolver: Arc<Resolver>,
    fetch: Option<Fetch>,
    refused: Answer,
    first_bytes: usize,
    events: EventBus,
    /// Each connection's name lookups, cut to `egress.dns.queries_per_second` as a
    /// box's queries are (channel opens are cheap to send by the thousand).
    lookups: Mutex<HashMap<SessionId, TokenBucket>>,
}

/// `egress.mode: fetch`: which ports are fetched, the fetcher the boxes share and,
/// for HTTPS, their TLS gateway.
struct Fetch {
    http: HttpFetch,
    fetcher: Arc<Fetcher>,
    tls: Option<Arc<TlsGateway>>,
}

impl SshForwards {
    /// Every forward logged and refused or dropped (`sinkhole`).
    pub fn new(config: &EgressConfig, resolver: Arc<Resolver>, events: EventBus) -> Self {
        SshForwards {
            resolver,
            fetch: None,
            refused: Answer::configured(config.refused),
            first_bytes: config.limits.first_bytes.bytes_usize(),
            events,
            lookups: Mutex::new(HashMap::new()),
        }
    }

    /// HTTP to the fetched ports goes through `fetcher` (`fetch`); with `tls`, HTTPS
    /// too, on the ports a box's is fetched from.
    pub fn with_fetch(
        mut self,
        config: &EgressConfig,
        fetcher: Arc<Fetcher>,
        tls: Option<Arc<TlsGateway>>,
    ) -> Self {
        let http = HttpFetch::new(config, Arc::clone(&fetcher));
        let http = match &tls {
            Some(gateway) => http.with_tls(config, Arc::clone(gateway)),
            None => http,
        };
        self.fetch = Some(Fetch { http, fetcher, tls });
        self
    }

    /// Whether `session` may look a name up now.
    fn admit_lookup(&self, session: SessionId) -> bool {
        let now = Instant::now();
        let mut budgets = self.lookups.lock().unwrap_or_else(|p| p.into_inner());
        if budgets.len() >= MAX_BUDGETS && !budgets.contains_key(&session) {
            budgets.clear();
        }
        let rate = self.resolver.queries_per_second();
        budgets
            .entry(session)
            .or_insert_with(|| TokenBucket::new(rate, now))
            .take(now)
    }

    fn context(&self, connection: &ConnectionContext) -> BoxContext {
        let owner = connection.clone();
        BoxContext {
            // No box: Hermes itself is asked to connect.
            container_id: String::new(),
            owner: Arc::new(move || Some(BoxOwner::from(owner.clone()))),
            events: self.events.clone(),
        }
    }
}

#[async_trait]
impl ForwardGateway for SshForwards {
    async fn open(&self, target: &ForwardTarget, context: &ConnectionContext) -> ForwardAnswer {
        let ctx = self.context(context);
        let address = match target.host.parse::<IpAddr>() {
            Ok(address) => address,
            Err(_) if !self.admit_lookup(context.session) => {
                ctx.emit(EventId::EgressDnsLimited, |event| {
                    event
                        .field("count", 1u64)
                        .message("a forward's DNS lookup over the rate limit dropped")
                });
                return refused(NAME_FAILED);
            }
            Err(_) => match dns::lookup(&self.resolver, &ctx, &target.host).await {
                Lookup::Found(address) => address,
                Lookup::NotFound => return refused(NAME_UNKNOWN),
                Lookup::Failed => return refused(NAME_FAILED),
            },
        };
        let destination = SocketAddr::new(address, target.port);
        // The SSRF reason, when the policy refuses the address (reported either way).
        let reason = match &self.fetch {
            Some(fetch) => match fetch.fetcher.policy().check(destination) {
                Ok(()) if fetch.http.wants(destination) => {
                    return ForwardAnswer::Accepted(Box::new(Fetched {
                        destination,
                        ctx,
                        fetcher: Arc::clone(&fetch.fetcher),
                        tls: fetch.tls.clone(),
                    }));
                }
                Ok(()) => None,
                Err(refusal) => Some(refusal.as_str()),
            },
            None => None,
        };
        let refusal = Refusal {
            host: target.host.clone(),
            destination,
            reason,
            answer: self.refused,
            first_bytes: self.first_bytes,
            ctx,
        };
        match self.refused {
            Answer::Drop => ForwardAnswer::Accepted(Box::new(refusal)),
            Answer::Reject | Answer::BoxConnectionLimit => {
                refusal.log(&[]);
                refused(CONNECTION_REFUSED)
            }
        }
    }
}

fn refused(description: &'static str) -> ForwardAnswer {
    ForwardAnswer::Refused { description }
}

/// An HTTP or HTTPS forward: fetched as a box's download is.
struct Fetched {
    destination: SocketAddr,
    ctx: BoxContext,
    fetcher: Arc<Fetcher>,
    tls: Option<Arc<TlsGateway>>,
}

#[async_trait]
impl ForwardService for Fetched {
    async fn serve(self: Box<Self>, stream: Box<dyn ForwardStream>) {
        let Some((stream, opens_with_tls)) = first_byte::sniff(stream).await else {
            return;
        };
        match self.tls {
            Some(gateway) if opens_with_tls => {
                let (ctx, fetcher) = (self.ctx, self.fetcher);
                serve_tls_for(
                    TlsClient::Forward,
                    stream,
                    self.destination,
                    ctx,
                    fetcher,
                    gateway,
                )
                .await;
            }
            _ => serve_http(stream, self.destination, self.ctx, self.fetcher).await,
        }
    }
}

/// A forward nobody fetches: logged, then refused at once or dropped.
struct Refusal {
    host: String,
    destination: SocketAddr,
    reason: Option<&'static str>,
    answer: Answer,
    first_bytes: usize,
    ctx: BoxContext,
}

impl Refusal {
    /// `hermes.egress.connection`, with the host as the client named it.
    fn log(&self, first: &[u8]) {
        let destination = self.destination;
        let guess = protocol::guess(destination.port(), first);
        let answer = self.answer.as_str();
        tracing::info!(target: "hermes::egress", host = %escape_untrusted(&self.host), %destination, app_protocol = guess, answer, reason = self.reason.unwrap_or(""), "forward refused");
        self.ctx.emit(EventId::EgressConnection, |event| {
            let event = event
                .field("dst_ip", destination.ip().to_string())
                .field("dst_port", destination.port())
                .field("container_id", "")
                .field("app_protocol", guess)
                .field("first_bytes", escape_bytes(first))
                .field("answer", answer)
                .field("forward_host", self.host.as_str())
                .message(format!(
                    "SSH forward to {} ({destination}, {guess}): {answer}",
                    escape_untrusted(&self.host)
                ));
            match self.reason {
                Some(reason) => event.field("reason", reason),
                None => event,
            }
        });
    }
}

#[async_trait]
impl ForwardService for Refusal {
    /// `drop`: the first bytes are logged, then nothing is answered.
    async fn serve(self: Box<Self>, mut stream: Box<dyn ForwardStream>) {
        let first = sinkhole::read_first_bytes(&mut stream, self.first_bytes).await;
        self.log(&first);
        sinkhole::hold(&mut stream).await;
    }
}

#[cfg(test)]
mod tests;
