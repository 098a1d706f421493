//! The box's DNS server: answers what the box sends to its resolver address, from
//! the static map, the cache or the upstream resolvers (asked from the host), each
//! query an event. A box's flood is cut to `egress.dns.queries_per_second` and
//! summarised, so it floods neither upstream nor the event log.

mod cache;
mod limit;
mod lookup;
mod resolv_conf;
mod resolver;
mod upstream;
mod wire;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hermes_core::events::EventId;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

pub(crate) use limit::TokenBucket;
pub use lookup::{Lookup, lookup};
pub use resolver::{Resolver, ResolverSettings, Source};

use crate::BoxContext;
use resolver::Resolution;
use wire::{Parsed, Query};

/// Bytes read of one query at most; a longer datagram is cut and so unreadable.
const MAX_QUERY: usize = 4096;
/// Queries of one box waiting upstream at once; more get SERVFAIL at once.
const MAX_PENDING_PER_BOX: usize = 32;
/// How often dropped queries are summarised in one event.
const SUMMARY_INTERVAL: Duration = Duration::from_secs(1);

/// Why a box's DNS server stopped.
#[derive(Debug, thiserror::Error)]
#[error("receiving on the box's DNS socket: {0}")]
pub struct ServeError(#[from] std::io::Error);

/// Answers the box's queries on `socket` (bound in its gateway namespace) until the
/// socket fails or the task is aborted (which aborts its upstream queries too).
pub async fn serve(socket: UdpSocket, ctx: BoxContext, resolver: Arc<Resolver>) -> ServeError {
    let socket = Arc::new(socket);
    let mut bucket = TokenBucket::new(resolver.queries_per_second(), Instant::now());
    let mut limited: u64 = 0;
    let mut summary = tokio::time::interval(SUMMARY_INTERVAL);
    summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: JoinSet<()> = JoinSet::new();
    let mut buffer = vec![0u8; MAX_QUERY];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buffer) => {
                let (length, peer) = match received {
                    Ok(received) => received,
                    Err(error) => {
                        report_limited(&ctx, &mut limited);
                        return ServeError(error);
                    }
                };
                if !bucket.take(Instant::now()) {
                    limited += 1;
                    continue;
                }
                let message = &buffer[..length];
                handle(message, peer, &socket, &ctx, &resolver, &mut pending).await;
            }
            _ = summary.tick() => report_limited(&ctx, &mut limited),
            Some(_) = pending.join_next(), if !pending.is_empty() => {}
        }
    }
}

/// Answers one datagram: at once when Hermes knows the answer, else from a task
/// that asks upstream.
async fn handle(
    message: &[u8],
    peer: SocketAddr,
    socket: &Arc<UdpSocket>,
    ctx: &BoxContext,
    resolver: &Arc<Resolver>,
    pending: &mut JoinSet<()>,
) {
    let query = match wire::parse_query(message) {
        Parsed::Ignore(why) => {
            emit_unanswered(ctx, "none", &why.to_string());
            return;
        }
        Parsed::Reject { id, flags, rcode } => {
            send(socket, &wire::build_reject(id, flags, rcode), peer).await;
            emit_unanswered(ctx, rcode.name(), "unreadable or not a standard query");
            return;
        }
        Parsed::Query(query) => query,
    };
    if let Some(resolution) = resolver.answer_locally(&query) {
        send(socket, &resolution.response, peer).await;
        emit_query(ctx, &query, &resolution);
        return;
    }
    if pending.len() >= MAX_PENDING_PER_BOX {
        let resolution = Resolution {
            response: wire::build_answer(&query, wire::Rcode::ServFail, &[], 0),
            rcode: wire::Rcode::ServFail.name().to_owned(),
            answers: Vec::new(),
            source: Source::Upstream,
        };
        send(socket, &resolution.response, peer).await;
        emit_query(ctx, &query, &resolution);
        return;
    }
    let (socket, ctx, resolver) = (Arc::clone(socket), ctx.clone(), Arc::clone(resolver));
    pending.spawn(async move {
        let resolution = resolver.forward(&query).await;
        send(&socket, &resolution.response, peer).await;
        emit_query(&ctx, &query, &resolution);
    });
}

async fn send(socket: &UdpSocket, response: &[u8], peer: SocketAddr) {
    if let Err(error) = socket.send_to(response, peer).await {
        tracing::debug!(target: "hermes::egress::dns", %peer, %error, "cannot answer the box");
    }
}

/// `hermes.egress.dns` for an answered query (the name printed as dig prints it,
/// so no byte of it can forge or hide anything in a log).
fn emit_query(ctx: &BoxContext, query: &Query, resolution: &Resolution) {
    let name = query.question.name.to_text();
    let qtype = wire::type_name(query.question.qtype);
    let answers: Vec<String> = resolution.answers.iter().map(IpAddr::to_string).collect();
    let message = if answers.is_empty() {
        format!(
            "DNS {qtype} {name}: {} ({})",
            resolution.rcode,
            resolution.source.name()
        )
    } else {
        format!(
            "DNS {qtype} {name}: {} ({})",
            answers.join(" "),
            resolution.source.name()
        )
    };
    ctx.emit(EventId::EgressDns, |event| {
        event
            .field("query", name)
            .field("type", qtype)
            .field("rcode", resolution.rcode.as_str())
            .field("answers", answers)
            .field("source", resolution.source.name())
            .message(message)
    });
}

/// `hermes.egress.dns` for a datagram without a readable question.
fn emit_unanswered(ctx: &BoxContext, rcode: &str, why: &str) {
    ctx.emit(EventId::EgressDns, |event| {
        event
            .field("query", "")
            .field("type", "")
            .field("rcode", rcode)
            .field("answers", Vec::<String>::new())
            .field("source", Source::Local.name())
            .message(format!("DNS datagram without a question ({why}): {rcode}"))
    });
}

/// `hermes.egress.dns.limited` for the queries dropped since the last one.
fn report_limited(ctx: &BoxContext, limited: &mut u64) {
    if *limited == 0 {
        return;
    }
    let count = std::mem::take(limited);
    ctx.emit(EventId::EgressDnsLimited, |event| {
        event
            .field("count", count)
            .message(format!("{count} DNS queries over the rate limit dropped"))
    });
}
