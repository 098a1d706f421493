//! Asking the real resolvers, from the host's own network namespace: a fresh socket
//! (random source port) and a random id per query, a timeout and one retry, and a
//! bound on the queries waiting upstream for all boxes together.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::wire::{self, Answer, Question};

/// Bytes read of an upstream answer at most (answers to queries without EDNS have
/// 512; a few servers send more).
const MAX_ANSWER: usize = 4096;

/// Why no answer came.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No resolver is configured (and the host's resolv.conf names none).
    #[error("no upstream resolver")]
    NoServers,
    /// Too many queries wait upstream already.
    #[error("too many upstream queries in flight")]
    Busy,
    /// Every try timed out or failed.
    #[error("no answer from {servers} after {tries} tries: {last}")]
    NoAnswer {
        servers: String,
        tries: usize,
        last: String,
    },
}

/// The upstream resolvers.
pub struct Upstream {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    in_flight: Arc<Semaphore>,
}

impl Upstream {
    /// Resolvers `servers` (tried in turn), `timeout` per try, `max_in_flight`
    /// queries waiting at once.
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration, max_in_flight: usize) -> Self {
        Upstream {
            servers,
            timeout,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
        }
    }

    /// The resolvers asked.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Asks `question`: the first server, then (after a timeout or error) the next
    /// one, or the same again when there is one. Returns the answer as sent and as
    /// read.
    pub async fn ask(&self, question: &Question) -> Result<(Vec<u8>, Answer), UpstreamError> {
        if self.servers.is_empty() {
            return Err(UpstreamError::NoServers);
        }
        let _permit = Arc::clone(&self.in_flight)
            .try_acquire_owned()
            .map_err(|_| UpstreamError::Busy)?;
        let mut last = String::new();
        const TRIES: usize = 2;
        for attempt in 0..TRIES {
            let server = self.servers[attempt % self.servers.len()];
            match tokio::time::timeout(self.timeout, ask_once(server, question)).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(error)) => last = format!("{server}: {error}"),
                Err(_) => last = format!("{server}: timed out after {:?}", self.timeout),
            }
        }
        Err(UpstreamError::NoAnswer {
            servers: self
                .servers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            tries: TRIES,
            last,
        })
    }
}

/// One try: waits for a datagram from `server` that answers this id and question;
/// anything else (a late answer to an earlier try, garbage) is skipped.
async fn ask_once(server: SocketAddr, question: &Question) -> io::Result<(Vec<u8>, Answer)> {
    let local: IpAddr = match server {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((local, 0)).await?;
    socket.connect(server).await?;
    let id: u16 = rand::rng().random();
    socket.send(&wire::build_query(id, question)).await?;
    let mut buffer = vec![0u8; MAX_ANSWER];
    let started = Instant::now();
    loop {
        let length = socket.recv(&mut buffer).await?;
        let message = &buffer[..length];
        if let Ok(answer) = wire::parse_answer(message)
            && answer.id == id
            && answer.question.name.key() == question.name.key()
            && answer.question.qtype == question.qtype
            && answer.question.qclass == question.qclass
        {
            return Ok((message.to_vec(), answer));
        }
        tracing::debug!(target: "hermes::egress::dns", %server, elapsed = ?started.elapsed(), "skipped a datagram that does not answer the query");
    }
}
