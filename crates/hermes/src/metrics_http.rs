//! The operator's HTTP endpoint: `/metrics` (Prometheus text format) and `/healthz`.
//! A deliberately small HTTP/1 responder (one request per connection, bounded head,
//! bounded time, bounded connections): it is never on the attacker-facing address,
//! but it should not be the weak point if it is exposed by mistake.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hermes_core::events::EventBus;
use hermes_core::metrics::EventMetrics;
use hermes_sandbox::DockerSandbox;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// A request head longer than this is refused.
const MAX_HEAD: usize = 8 * 1024;
/// A client gets this long to send its request and read the answer.
const REQUEST_TIME: Duration = Duration::from_secs(10);
/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 16;

/// What the endpoint reports on.
pub struct MetricsSource {
    /// Counters derived from the events.
    pub events: Arc<EventMetrics>,
    /// The event bus (for its dropped count).
    pub bus: EventBus,
    /// Events the event log dropped (its backlog was full).
    pub file_dropped: Arc<AtomicU64>,
    /// The pool and the engine.
    pub sandbox: Arc<DockerSandbox>,
}

impl MetricsSource {
    /// The whole Prometheus exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let dropped = self.bus.dropped() + self.file_dropped.load(Ordering::Relaxed);
        self.events.render(&mut out, dropped);
        self.sandbox.render_metrics(&mut out);
        out
    }
}

/// Serves until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    source: Arc<MetricsSource>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let source = Arc::clone(&source);
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(REQUEST_TIME, answer(stream, &source)).await;
                        drop(permit);
                    });
                }
                Err(error) => {
                    tracing::warn!(target: "hermes::metrics", %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shut_down(&mut shutdown) => return,
        }
    }
}

/// Resolves once shutdown is requested (never if the sender is gone without asking).
async fn shut_down(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|down| *down).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Reads one request head and answers it.
async fn answer(mut stream: TcpStream, source: &MetricsSource) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut piece = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut piece).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&piece[..n]);
        if head.len() > MAX_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "",
                false,
            )
            .await;
        }
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(&mut stream, "405 Method Not Allowed", "", false).await;
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => {
            let body = source.render();
            respond(&mut stream, "200 OK", &body, head_only).await
        }
        "/healthz" | "/health" => match source.sandbox.health().await {
            Ok(()) => respond(&mut stream, "200 OK", "ok\n", head_only).await,
            Err(reason) => {
                let body = format!("unhealthy: {reason}\n");
                respond(&mut stream, "503 Service Unavailable", &body, head_only).await
            }
        },
        _ => respond(&mut stream, "404 Not Found", "not found\n", head_only).await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    if !head_only {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}
