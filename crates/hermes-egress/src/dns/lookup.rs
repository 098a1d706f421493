//! A name looked up for Hermes itself (the host of an SSH client's `direct-tcpip`
//! channel), through the same resolver as the boxes' and logged as their queries are.

use std::net::IpAddr;

use super::resolver::{Resolution, Resolver};
use super::wire::{CLASS_IN, Name, Query, Question, Rcode, TYPE_A, TYPE_AAAA};
use crate::BoxContext;

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The first address (IPv4 preferred, as the C library's default order on a host
    /// with only IPv4 routes).
    Found(IpAddr),
    /// The name does not exist, has no address, or is not a valid name.
    NotFound,
    /// No answer (SERVFAIL, no upstream resolver, timeouts).
    Failed,
}

/// Looks `name` up (A, then AAAA when the name exists without an IPv4 address);
/// each query is a `hermes.egress.dns` event of `ctx`.
pub async fn lookup(resolver: &Resolver, ctx: &BoxContext, name: &str) -> Lookup {
    let Some(parsed) = Name::from_text(name).filter(|_| !name.is_empty() && name != ".") else {
        return Lookup::NotFound;
    };
    for qtype in [TYPE_A, TYPE_AAAA] {
        let query = Query {
            id: 0,
            recursion_desired: true,
            question: Question {
                name: parsed.clone(),
                qtype,
                qclass: CLASS_IN,
            },
        };
        let resolution = resolve(resolver, &query).await;
        super::emit_query(ctx, &query, &resolution);
        if let Some(address) = resolution.answers.first() {
            return Lookup::Found(*address);
        }
        let rcode = resolution.rcode.as_str();
        if rcode == Rcode::NxDomain.name() {
            return Lookup::NotFound;
        }
        if rcode != Rcode::NoError.name() {
            return Lookup::Failed;
        }
    }
    Lookup::NotFound
}

async fn resolve(resolver: &Resolver, query: &Query) -> Resolution {
    match resolver.answer_locally(query) {
        Some(resolution) => resolution,
        None => resolver.forward(query).await,
    }
}
