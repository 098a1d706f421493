//! Operational metrics in Prometheus's text format: counters and histograms that are
//! plain atomics (no locks on any session path), and the event sink that derives most
//! of them from the event stream, so that a metric and the event it counts can never
//! disagree.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::events::{Event, EventId, EventSink};

/// A histogram with fixed upper bounds (seconds), as Prometheus expects them.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bound, the observations at or below it (not cumulative here).
    counts: Vec<AtomicU64>,
    /// Observations above every bound.
    over: AtomicU64,
    /// Sum of observations, in microseconds.
    sum_micros: AtomicU64,
}

impl Histogram {
    /// An empty histogram with these bucket bounds (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            over: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation in seconds (negative and NaN count as 0).
    pub fn observe(&self, seconds: f64) {
        let seconds = if seconds.is_finite() && seconds > 0.0 {
            seconds
        } else {
            0.0
        };
        match self.bounds.iter().position(|bound| seconds <= *bound) {
            Some(i) => self.counts[i].fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
            + self.over.load(Ordering::Relaxed)
    }

    /// Appends the histogram's `_bucket`, `_sum` and `_count` lines.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.over.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// Appends one counter or gauge with its help and type lines; `samples` are
/// (label text such as `result="success"`, or empty; value).
pub fn render_family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: &[(&str, u64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// Session lengths, seconds: from a quick bot to a long manual session.
const SESSION_BOUNDS: &[f64] = &[1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0];

/// Why connections were refused; any other reason is counted as `other`.
const DROP_REASONS: &[&str] = &[
    "max_startups",
    "per_source_max_startups",
    "max_connections",
    "max_connections_per_source",
    "per_source_penalty",
];

/// Why the gateway refused to contact an upstream address (SSRF), as hermes-egress
/// names them in `cowrie.session.file_download.failed`.
pub const EGRESS_REFUSAL_REASONS: &[&str] = &[
    "port",
    "not_allowed",
    "unspecified",
    "loopback",
    "private",
    "carrier_nat",
    "metadata",
    "link_local",
    "reserved",
    "broadcast",
    "multicast",
    "box_network",
    "host_address",
    "host_network",
];

/// The limits that refuse a fetch before it starts.
pub const EGRESS_LIMIT_REASONS: &[&str] = &["fetches_per_session", "session_bytes", "hourly_bytes"];

/// Outcomes of a fetch through the gateway: kept whole, kept cut short, failed,
/// blocked (by the SSRF policy or a limit, never started); indexes of `fetches`.
const FETCH_OUTCOMES: &[&str] = &["stored", "truncated", "failed", "blocked"];
const STORED: usize = 0;
const TRUNCATED: usize = 1;
const FAILED: usize = 2;
const BLOCKED: usize = 3;
/// Where a box's DNS answers came from (`source` of `hermes.egress.dns`); queries
/// dropped by the rate limit are counted as `limited`.
const DNS_OUTCOMES: &[&str] = &["static", "upstream", "cache", "local", "limited"];

/// What the event stream says about the server. Shared by the event writer (which
/// updates it) and the metrics endpoint (which reads it).
/// What a box's connection got (`answer` of `hermes.egress.connection`).
const EGRESS_BLOCKED_REASONS: &[&str] = &["drop", "reject", "box_connection_limit"];

#[derive(Debug)]
pub struct EventMetrics {
    connections: AtomicU64,
    dropped: Vec<AtomicU64>,
    dropped_other: AtomicU64,
    auth_success: AtomicU64,
    auth_failure: AtomicU64,
    sessions: AtomicU64,
    sessions_active: AtomicU64,
    session_duration: Histogram,
    captured_files: AtomicU64,
    captured_bytes: AtomicU64,
    fetches: Vec<AtomicU64>,
    fetched_bytes: AtomicU64,
    fetches_blocked: Vec<AtomicU64>,
    dns_queries: Vec<AtomicU64>,
    events: AtomicU64,
    egress_blocked: Vec<AtomicU64>,
}

impl Default for EventMetrics {
    fn default() -> Self {
        EventMetrics {
            connections: AtomicU64::new(0),
            dropped: DROP_REASONS.iter().map(|_| AtomicU64::new(0)).collect(),
            dropped_other: AtomicU64::new(0),
            auth_success: AtomicU64::new(0),
            auth_failure: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            sessions_active: AtomicU64::new(0),
            session_duration: Histogram::new(SESSION_BOUNDS),
            captured_files: AtomicU64::new(0),
            captured_bytes: AtomicU64::new(0),
            fetches: FETCH_OUTCOMES.iter().map(|_| AtomicU64::new(0)).collect(),
            fetched_bytes: AtomicU64::new(0),
            fetches_blocked: blocked_reasons().map(|_| AtomicU64::new(0)).collect(),
            dns_queries: DNS_OUTCOMES.iter().map(|_| AtomicU64::new(0)).collect(),
            events: AtomicU64::new(0),
            egress_blocked: EGRESS_BLOCKED_REASONS
                .iter()
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }
}

fn blocked_reasons() -> impl Iterator<Item = &'static str> {
    EGRESS_REFUSAL_REASONS
        .iter()
        .chain(EGRESS_LIMIT_REASONS)
        .copied()
}

/// `(label text, value)` pairs of one labelled family.
fn labelled<'a>(
    label: &str,
    names: impl Iterator<Item = &'a str>,
    counters: &[AtomicU64],
) -> Vec<(String, u64)> {
    names
        .zip(counters)
        .map(|(name, counter)| {
            (
                format!("{label}=\"{name}\""),
                counter.load(Ordering::Relaxed),
            )
        })
        .collect()
}

impl EventMetrics {
    /// Appends the egress families: fetches by outcome, bytes received upstream,
    /// fetches blocked by reason.
    fn render_egress(&self, out: &mut String) {
        let fetches = labelled("outcome", FETCH_OUTCOMES.iter().copied(), &self.fetches);
        let samples: Vec<(&str, u64)> = fetches.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        render_family(
            out,
            "hermes_egress_fetches_total",
            "counter",
            "Downloads through the egress gateway by outcome.",
            &samples,
        );
        render_family(
            out,
            "hermes_egress_fetched_bytes_total",
            "counter",
            "Bytes received from upstream servers by the egress gateway.",
            &[("", self.fetched_bytes.load(Ordering::Relaxed))],
        );
        let mut blocked = labelled("reason", blocked_reasons(), &self.fetches_blocked);
        blocked.extend(labelled(
            "reason",
            EGRESS_BLOCKED_REASONS.iter().copied(),
            &self.egress_blocked,
        ));
        let samples: Vec<(&str, u64)> = blocked.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        render_family(
            out,
            "hermes_egress_blocked_total",
            "counter",
            "What a box did not get out: downloads refused (SSRF) or past a limit, and connections dropped, reset or over the per-box cap (hermes.egress.connection's answer).",
            &samples,
        );
    }

    /// Appends every family; `events_dropped` comes from the event bus.
    pub fn render(&self, out: &mut String, events_dropped: u64) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        render_family(
            out,
            "hermes_connections_total",
            "counter",
            "TCP connections accepted (cowrie.session.connect).",
            &[("", get(&self.connections))],
        );
        let labels: Vec<String> = DROP_REASONS
            .iter()
            .map(|r| format!("reason=\"{r}\""))
            .collect();
        let mut samples: Vec<(&str, u64)> = labels
            .iter()
            .zip(&self.dropped)
            .map(|(l, c)| (l.as_str(), get(c)))
            .collect();
        samples.push(("reason=\"other\"", get(&self.dropped_other)));
        render_family(
            out,
            "hermes_connections_dropped_total",
            "counter",
            "Connections refused by a limit (the counts of hermes.connection.refused).",
            &samples,
        );
        render_family(
            out,
            "hermes_auth_attempts_total",
            "counter",
            "Authentication attempts by result.",
            &[
                ("result=\"success\"", get(&self.auth_success)),
                ("result=\"failure\"", get(&self.auth_failure)),
            ],
        );
        render_family(
            out,
            "hermes_sessions_total",
            "counter",
            "Logged-in sessions that got a container.",
            &[("", get(&self.sessions))],
        );
        render_family(
            out,
            "hermes_sessions_active",
            "gauge",
            "Logged-in sessions open now.",
            &[("", get(&self.sessions_active))],
        );
        self.session_duration.render(
            out,
            "hermes_session_duration_seconds",
            "Length of logged-in sessions, from connection to close.",
        );
        render_family(
            out,
            "hermes_captured_files_total",
            "counter",
            "Files captured from sessions (downloads and uploads).",
            &[("", get(&self.captured_files))],
        );
        render_family(
            out,
            "hermes_captured_bytes_total",
            "counter",
            "Bytes of the files captured from sessions.",
            &[("", get(&self.captured_bytes))],
        );
        self.render_egress(out);
        let labels: Vec<String> = DNS_OUTCOMES
            .iter()
            .map(|o| format!("outcome=\"{o}\""))
            .collect();
        let samples: Vec<(&str, u64)> = labels
            .iter()
            .zip(&self.dns_queries)
            .map(|(l, c)| (l.as_str(), get(c)))
            .collect();
        render_family(
            out,
            "hermes_dns_queries_total",
            "counter",
            "DNS queries of the boxes by where the answer came from, or limited (dropped by egress.dns.queries_per_second).",
            &samples,
        );
        render_family(
            out,
            "hermes_events_total",
            "counter",
            "Events handed to the event sinks (the event log's own hermes.events.dropped reports aside).",
            &[("", get(&self.events))],
        );
        render_family(
            out,
            "hermes_events_dropped_total",
            "counter",
            "Events lost: the event queue was full, or the event log could not be written and its backlog was full.",
            &[("", events_dropped)],
        );
    }
}

/// The event sink that keeps [`EventMetrics`] up to date. It runs on the event
/// writer's thread, so its per-session table needs no lock.
pub struct MetricsSink {
    metrics: Arc<EventMetrics>,
    /// Sessions holding a container, to know which closes end a logged-in session.
    with_container: HashSet<String>,
}

impl MetricsSink {
    /// A sink updating `metrics`.
    pub fn new(metrics: Arc<EventMetrics>) -> Self {
        MetricsSink {
            metrics,
            with_container: HashSet::new(),
        }
    }
}

impl EventSink for MetricsSink {
    fn name(&self) -> String {
        "metrics".to_owned()
    }

    fn write(&mut self, event: &Event) -> io::Result<()> {
        let m = &self.metrics;
        let add = |counter: &AtomicU64, n: u64| {
            counter.fetch_add(n, Ordering::Relaxed);
        };
        add(&m.events, 1);
        let session = || {
            event
                .get("session")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        match event.id() {
            EventId::SessionConnect => add(&m.connections, 1),
            EventId::ConnectionRefused => {
                let reason = event.get("reason").and_then(|v| v.as_str()).unwrap_or("");
                let count = event.get("count").and_then(|v| v.as_u64()).unwrap_or(0);
                match DROP_REASONS.iter().position(|r| *r == reason) {
                    Some(i) => add(&m.dropped[i], count),
                    None => add(&m.dropped_other, count),
                }
            }
            EventId::LoginSuccess => add(&m.auth_success, 1),
            EventId::LoginFailed => add(&m.auth_failure, 1),
            EventId::ContainerAllocate | EventId::ContainerReuse
                if self.with_container.insert(session()) =>
            {
                add(&m.sessions, 1);
                add(&m.sessions_active, 1);
            }
            EventId::SessionClosed if self.with_container.remove(&session()) => {
                m.sessions_active.fetch_sub(1, Ordering::Relaxed);
                let duration = event
                    .get("duration")
                    .and_then(|v| v.as_f64())
                    .unwrap_or(0.0);
                m.session_duration.observe(duration);
            }
            EventId::EgressConnection => {
                let answer = event.get("answer").and_then(|v| v.as_str()).unwrap_or("");
                if let Some(i) = EGRESS_BLOCKED_REASONS.iter().position(|r| *r == answer) {
                    add(&m.egress_blocked[i], 1);
                }
            }
            EventId::FileDownload | EventId::FileUpload => {
                add(&m.captured_files, 1);
                let size = event.get("size").and_then(|v| v.as_u64()).unwrap_or(0);
                add(&m.captured_bytes, size);
                // A download through the gateway says how much came from upstream.
                if let Some(bytes) = event.get("upstream_bytes").and_then(|v| v.as_u64()) {
                    add(&m.fetched_bytes, bytes);
                    let truncated = event.get("truncated").and_then(|v| v.as_bool());
                    let outcome = if truncated == Some(true) {
                        TRUNCATED
                    } else {
                        STORED
                    };
                    add(&m.fetches[outcome], 1);
                }
            }
            EventId::FileDownloadFailed => {
                let bytes = event.get("upstream_bytes").and_then(|v| v.as_u64());
                add(&m.fetched_bytes, bytes.unwrap_or(0));
                let reason = event.get("reason").and_then(|v| v.as_str()).unwrap_or("");
                match blocked_reasons().position(|r| r == reason) {
                    Some(i) => {
                        add(&m.fetches_blocked[i], 1);
                        add(&m.fetches[BLOCKED], 1);
                    }
                    None => add(&m.fetches[FAILED], 1),
                }
            }
            EventId::EgressDns => {
                let source = event.get("source").and_then(|v| v.as_str()).unwrap_or("");
                if let Some(i) = DNS_OUTCOMES.iter().position(|o| *o == source) {
                    add(&m.dns_queries[i], 1);
                }
            }
            EventId::EgressDnsLimited => {
                let count = event.get("count").and_then(|v| v.as_u64()).unwrap_or(0);
                if let Some(i) = DNS_OUTCOMES.iter().position(|o| *o == "limited") {
                    add(&m.dns_queries[i], count);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ConnectionContext, EventBuilder, EventBus};

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        static BOUNDS: &[f64] = &[0.1, 1.0];
        let h = Histogram::new(BOUNDS);
        for v in [0.05, 0.5, 0.5, 7.0, f64::NAN, -1.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "help");
        assert!(out.contains("x_seconds_bucket{le=\"0.1\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"1\"} 5\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 6\n"), "{out}");
        assert!(out.contains("x_seconds_sum 8.05\n"), "{out}");
        assert!(out.contains("x_seconds_count 6\n"), "{out}");
        assert_eq!(h.count(), 6);
    }

    #[test]
    fn the_sink_counts_what_the_events_say() {
        let metrics = Arc::new(EventMetrics::default());
        let mut sink = MetricsSink::new(Arc::clone(&metrics));
        let (bus, _queue) = EventBus::new("s");
        let context = ConnectionContext {
            session: crate::ids::SessionId::random(),
            src: "198.51.100.7:40000".parse().expect("addr"),
            dst: "10.0.0.5:22".parse().expect("addr"),
        };
        let build = |b: EventBuilder| b.build(bus.sensor());
        let events = [
            build(EventBuilder::connection(EventId::SessionConnect, &context)),
            build(
                EventBuilder::connection(EventId::LoginFailed, &context)
                    .field("username", "root")
                    .field("password", "x"),
            ),
            build(
                EventBuilder::connection(EventId::LoginSuccess, &context)
                    .field("username", "root")
                    .field("password", "y"),
            ),
            build(
                EventBuilder::connection(EventId::ConnectionRefused, &context)
                    .field("reason", "weird\nreason")
                    .field("count", 1),
            ),
            build(
                EventBuilder::connection(EventId::ConnectionRefused, &context)
                    .field("reason", "per_source_penalty")
                    .field("count", 1234),
            ),
            build(
                EventBuilder::connection(EventId::ContainerAllocate, &context)
                    .field("container_id", "c"),
            ),
            build(EventBuilder::connection(EventId::FileUpload, &context).field("size", 1234)),
            build(
                EventBuilder::connection(EventId::FileDownload, &context)
                    .field("size", 100)
                    .field("upstream_bytes", 150),
            ),
            build(
                EventBuilder::connection(EventId::FileDownload, &context)
                    .field("size", 10)
                    .field("upstream_bytes", 20)
                    .field("truncated", true),
            ),
            build(
                EventBuilder::connection(EventId::FileDownloadFailed, &context)
                    .field("reason", "metadata")
                    .field("url", "http://169.254.169.254/"),
            ),
            build(
                EventBuilder::connection(EventId::FileDownloadFailed, &context)
                    .field("reason", "http_status")
                    .field("upstream_bytes", 7),
            ),
            build(
                EventBuilder::connection(EventId::EgressDns, &context)
                    .field("query", "example.test")
                    .field("type", "A")
                    .field("rcode", "NOERROR")
                    .field("answers", vec!["192.0.2.1"])
                    .field("source", "cache"),
            ),
            build(
                EventBuilder::global(EventId::EgressDnsLimited)
                    .field("container_id", "c")
                    .field("count", 41),
            ),
            build(
                EventBuilder::connection(EventId::EgressConnection, &context)
                    .field("answer", "drop"),
            ),
            build(
                EventBuilder::connection(EventId::EgressConnection, &context)
                    .field("answer", "box_connection_limit"),
            ),
            build(
                EventBuilder::connection(EventId::EgressConnection, &context)
                    .field("answer", "drop"),
            ),
            build(
                EventBuilder::connection(EventId::SessionClosed, &context)
                    .field("duration_ms", 12_500)
                    .field("duration", 12.5),
            ),
        ];
        for event in &events {
            sink.write(event).expect("write");
        }
        let mut out = String::new();
        metrics.render(&mut out, 3);
        for line in [
            "hermes_egress_blocked_total{reason=\"drop\"} 2\n",
            "hermes_egress_blocked_total{reason=\"reject\"} 0\n",
            "hermes_egress_blocked_total{reason=\"box_connection_limit\"} 1\n",
            "hermes_connections_total 1\n",
            "hermes_auth_attempts_total{result=\"success\"} 1\n",
            "hermes_auth_attempts_total{result=\"failure\"} 1\n",
            "hermes_connections_dropped_total{reason=\"other\"} 1\n",
            "hermes_connections_dropped_total{reason=\"per_source_penalty\"} 1234\n",
            "hermes_sessions_total 1\n",
            "hermes_sessions_active 0\n",
            "hermes_session_duration_seconds_bucket{le=\"15\"} 1\n",
            "hermes_session_duration_seconds_bucket{le=\"5\"} 0\n",
            "hermes_captured_files_total 3\n",
            "hermes_captured_bytes_total 1344\n",
            "hermes_egress_fetches_total{outcome=\"stored\"} 1\n",
            "hermes_egress_fetches_total{outcome=\"truncated\"} 1\n",
            "hermes_egress_fetches_total{outcome=\"failed\"} 1\n",
            "hermes_egress_fetches_total{outcome=\"blocked\"} 1\n",
            "hermes_egress_fetched_bytes_total 177\n",
            "hermes_egress_blocked_total{reason=\"metadata\"} 1\n",
            "hermes_egress_blocked_total{reason=\"hourly_bytes\"} 0\n",
            "hermes_dns_queries_total{outcome=\"cache\"} 1\n",
            "hermes_dns_queries_total{outcome=\"limited\"} 41\n",
            "hermes_dns_queries_total{outcome=\"static\"} 0\n",
            "hermes_events_total 17\n",
            "hermes_events_dropped_total 3\n",
        ] {
            assert!(out.contains(line), "{line:?} missing from\n{out}");
        }
        assert!(!out.contains("weird"));
    }
}
