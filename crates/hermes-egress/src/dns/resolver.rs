//! How a box's question is answered, shared by every box: the static map, then the
//! cache, then the upstream resolvers (unless `static_only`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use hermes_core::config::EgressDnsConfig;

use super::cache::{Cache, CacheKey, CachedAnswer};
use super::resolv_conf;
use super::upstream::Upstream;
use super::wire::{self, CLASS_IN, Query, Rcode, TYPE_A, TYPE_AAAA};

/// TTL of the static map's answers.
pub const STATIC_TTL: u32 = 300;
/// Seconds one upstream try waits: two tries fit in the 5 s a box's C library waits
/// for its resolver, so the box sees SERVFAIL rather than its own timeout.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Queries waiting upstream at once, all boxes together.
pub const MAX_IN_FLIGHT: usize = 256;
/// Answers cached, all boxes together.
pub const CACHE_ENTRIES: usize = 4096;

/// Where an answer came from (the event's `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `egress.dns.static_hosts`, or `static_only`'s NXDOMAIN.
    Static,
    /// An upstream resolver (or its failure: SERVFAIL).
    Upstream,
    /// An upstream answer cached earlier.
    Cache,
    /// Hermes itself, without looking the name up (unreadable or refused queries).
    Local,
}

impl Source {
    /// The name events carry.
    pub fn name(self) -> &'static str {
        match self {
            Source::Static => "static",
            Source::Upstream => "upstream",
            Source::Cache => "cache",
            Source::Local => "local",
        }
    }
}

/// An answer for the box, and what to log about it.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// The datagram to send back.
    pub response: Vec<u8>,
    /// Its response code (`NOERROR`, `NXDOMAIN`, ...).
    pub rcode: String,
    /// The addresses it carries.
    pub answers: Vec<IpAddr>,
    /// Where it came from.
    pub source: Source,
}

impl Resolution {
    fn local(query: &Query, rcode: Rcode, answers: Vec<IpAddr>, source: Source) -> Self {
        Resolution {
            response: wire::build_answer(query, rcode, &answers, STATIC_TTL),
            rcode: rcode.name().to_owned(),
            answers,
            source,
        }
    }
}

/// What the resolver is built from; [`ResolverSettings::from_config`] for a sensor.
#[derive(Debug, Clone)]
pub struct ResolverSettings {
    /// Names answered without asking anyone.
    pub static_hosts: Vec<(String, IpAddr)>,
    /// Names not in `static_hosts` do not exist.
    pub static_only: bool,
    /// Resolvers asked, in order.
    pub upstream: Vec<SocketAddr>,
    /// Per upstream try.
    pub timeout: Duration,
    /// Queries waiting upstream at once.
    pub max_in_flight: usize,
    /// Answers cached.
    pub cache_entries: usize,
    /// Queries answered per box per second.
    pub queries_per_second: u32,
}

impl ResolverSettings {
    /// The settings of `egress.dns`; with no `upstream` (and not `static_only`), the
    /// host's resolvers from `/etc/resolv.conf`, read now.
    pub fn from_config(config: &EgressDnsConfig) -> Self {
        Self::from_config_with(config, Path::new(resolv_conf::RESOLV_CONF))
    }

    /// As [`Self::from_config`], reading the host's resolvers from `resolv_conf`.
    pub fn from_config_with(config: &EgressDnsConfig, resolv_conf: &Path) -> Self {
        let upstream = if config.static_only {
            Vec::new()
        } else if config.upstream.is_empty() {
            resolv_conf::read_nameservers(resolv_conf)
        } else {
            config.upstream.clone()
        };
        ResolverSettings {
            static_hosts: config
                .static_hosts
                .iter()
                .map(|(name, address)| (name.clone(), *address))
                .collect(),
            static_only: config.static_only,
            upstream: upstream
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 53))
                .collect(),
            timeout: UPSTREAM_TIMEOUT,
            max_in_flight: MAX_IN_FLIGHT,
            cache_entries: CACHE_ENTRIES,
            queries_per_second: config.queries_per_second,
        }
    }
}

/// The sensor's resolver, shared by every box.
pub struct Resolver {
    static_hosts: HashMap<String, IpAddr>,
    static_only: bool,
    upstream: Upstream,
    cache: Cache,
    queries_per_second: u32,
}

impl Resolver {
    /// A resolver with these settings; static names are matched without case and
    /// without a trailing dot.
    pub fn new(settings: ResolverSettings) -> Self {
        let static_hosts = settings
            .static_hosts
            .into_iter()
            .filter_map(|(name, address)| match wire::Name::from_text(&name) {
                Some(parsed) => Some((parsed.key(), address)),
                None => {
                    tracing::warn!(target: "hermes::egress::dns", name = %hermes_core::escape::escape_untrusted(&name), "static DNS name is not a valid name; skipped");
                    None
                }
            })
            .collect();
        Resolver {
            static_hosts,
            static_only: settings.static_only,
            upstream: Upstream::new(settings.upstream, settings.timeout, settings.max_in_flight),
            cache: Cache::new(settings.cache_entries),
            queries_per_second: settings.queries_per_second.max(1),
        }
    }

    /// Queries answered per box per second.
    pub fn queries_per_second(&self) -> u32 {
        self.queries_per_second
    }

    /// The upstream resolvers asked.
    pub fn upstream_servers(&self) -> &[SocketAddr] {
        self.upstream.servers()
    }

    /// The answer Hermes has without asking upstream (static map, policy, cache),
    /// or None when the question goes upstream.
    pub fn answer_locally(&self, query: &Query) -> Option<Resolution> {
        let question = &query.question;
        // Other classes (CHAOS `version.bind`) and zone transfers are refused, as
        // public resolvers refuse them.
        if question.qclass != CLASS_IN || matches!(question.qtype, 251 | 252) {
            return Some(Resolution::local(
                query,
                Rcode::Refused,
                Vec::new(),
                Source::Local,
            ));
        }
        let key = question.name.key();
        if let Some(address) = self.static_hosts.get(&key) {
            let fits = matches!(
                (question.qtype, address),
                (TYPE_A, IpAddr::V4(_)) | (TYPE_AAAA, IpAddr::V6(_))
            );
            // The name exists; other types have no data (NOERROR, no answer).
            let answers = if fits { vec![*address] } else { Vec::new() };
            return Some(Resolution::local(
                query,
                Rcode::NoError,
                answers,
                Source::Static,
            ));
        }
        if self.static_only {
            return Some(Resolution::local(
                query,
                Rcode::NxDomain,
                Vec::new(),
                Source::Static,
            ));
        }
        self.cache
            .get(&cache_key(query), Instant::now())
            .map(|cached| {
                let mut response = cached.message;
                wire::readdress(&mut response, query);
                Resolution {
                    response,
                    rcode: cached.rcode,
                    answers: cached.addresses,
                    source: Source::Cache,
                }
            })
    }

    /// Asks upstream and relays the answer (its id and recursion bit the box's);
    /// SERVFAIL when no answer came.
    pub async fn forward(&self, query: &Query) -> Resolution {
        match self.upstream.ask(&query.question).await {
            Ok((mut message, answer)) => {
                let rcode = match answer.rcode {
                    Some(rcode) => rcode.name().to_owned(),
                    None => format!("RCODE{}", answer.rcode_bits),
                };
                if !answer.truncated {
                    self.cache.put(
                        cache_key(query),
                        CachedAnswer {
                            message: message.clone(),
                            ttl_offsets: answer.ttl_offsets.clone(),
                            rcode: rcode.clone(),
                            addresses: answer.addresses.clone(),
                        },
                        answer.min_ttl,
                        Instant::now(),
                    );
                }
                wire::readdress(&mut message, query);
                Resolution {
                    response: message,
                    rcode,
                    answers: answer.addresses,
                    source: Source::Upstream,
                }
            }
            Err(error) => {
                tracing::debug!(target: "hermes::egress::dns", name = %query.question.name.to_text(), %error, "upstream resolution failed");
                Resolution::local(query, Rcode::ServFail, Vec::new(), Source::Upstream)
            }
        }
    }
}

fn cache_key(query: &Query) -> CacheKey {
    (
        query.question.name.key(),
        query.question.qtype,
        query.question.qclass,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_fall_back_to_the_hosts_resolvers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 192.0.2.53\n").expect("write");
        let mut config = EgressDnsConfig::default();
        let settings = ResolverSettings::from_config_with(&config, &path);
        assert_eq!(settings.upstream, ["192.0.2.53:53".parse().expect("addr")]);
        config.upstream = vec!["198.51.100.1".parse().expect("ip")];
        let settings = ResolverSettings::from_config_with(&config, &path);
        assert_eq!(
            settings.upstream,
            ["198.51.100.1:53".parse().expect("addr")]
        );
        config.static_only = true;
        let settings = ResolverSettings::from_config_with(&config, &path);
        assert!(settings.upstream.is_empty());
        let missing = ResolverSettings::from_config_with(
            &EgressDnsConfig::default(),
            &dir.path().join("none"),
        );
        assert!(missing.upstream.is_empty());
    }
}
