//! `direct-tcpip` channels the egress gateway answers (`egress` on): the request
//! waits for its decision, an accepted channel's bytes go to the gateway's service
//! and what the client sends is logged on the way, as a captured channel's is.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::forward::DataLog;
use super::{Connection, CountedPlace};
use crate::forward_gateway::{
    ForwardAnswer, ForwardGateway, ForwardService, ForwardStream, ForwardTarget,
};

/// A `direct-tcpip` request waiting for the egress gateway's answer.
pub struct PendingForward {
    pub(super) conn: Arc<Connection>,
    pub(super) gateway: Arc<dyn ForwardGateway>,
    pub(super) target: ForwardTarget,
    pub(super) orig_ip: String,
    pub(super) orig_port: u32,
    pub(super) id: u32,
    /// A place among `max_captures_per_connection`, kept while the channel is open.
    pub(super) place: CountedPlace,
}

/// The egress gateway's answer to a forward.
pub enum GatewayDecision {
    /// Refuse with code 2 (connect failed) and this description.
    Refuse {
        /// The description sshd would send.
        description: &'static str,
    },
    /// Open the channel and hand its bytes to [`GatewayForward::run`].
    Accept(GatewayForward),
}

impl PendingForward {
    /// Asks the gateway (bounded by the gateway's own resolver timeouts), then logs
    /// the request with its answer.
    pub async fn decide(self) -> GatewayDecision {
        let answer = self.gateway.open(&self.target, &self.conn.context).await;
        let accepted = matches!(answer, ForwardAnswer::Accepted(_));
        self.conn.log_direct_tcpip(
            &self.target.host,
            u32::from(self.target.port),
            &self.orig_ip,
            self.orig_port,
            accepted,
        );
        match answer {
            ForwardAnswer::Refused { description } => GatewayDecision::Refuse { description },
            ForwardAnswer::Accepted(service) => GatewayDecision::Accept(GatewayForward {
                service,
                log: DataLog {
                    remaining: self.conn.services.config.forwarding.capture_bytes.bytes(),
                    conn: self.conn,
                    dst_host: self.target.host,
                    dst_port: u32::from(self.target.port),
                    id: self.id,
                },
                _place: self.place,
            }),
        }
    }
}

/// A forward the egress gateway serves.
pub struct GatewayForward {
    service: Box<dyn ForwardService>,
    log: DataLog,
    /// A place among `max_captures_per_connection`, freed when the channel ends.
    _place: CountedPlace,
}

impl GatewayForward {
    /// Serves the channel's bytes to their end (the gateway bounds it); what the
    /// client sends is logged on the way, within `forwarding.capture_bytes`.
    pub async fn run(self, stream: impl ForwardStream + 'static) {
        let tapped = Tapped {
            inner: stream,
            log: Some(self.log),
        };
        self.service.serve(Box::new(tapped)).await;
    }
}

/// A stream whose reads (the client's bytes) are logged until the log's limit.
struct Tapped<S> {
    inner: S,
    log: Option<DataLog>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tapped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && let Some(log) = &mut self.log
            && !log.log(&buf.filled()[before..])
        {
            self.log = None;
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tapped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
