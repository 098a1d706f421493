//! Where `direct-tcpip` channels (ssh -L, -D) go when `egress` is on: the egress
//! crate implements it and answers them as it answers a box's connections (HTTP
//! fetched and kept, everything else logged and refused or dropped). Without egress
//! nothing is called and forwards are answered per `forwarding.direct_tcpip`.

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::events::ConnectionContext;

/// A forwarded channel's bytes, as the SSH adapter hands them over.
pub trait ForwardStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> ForwardStream for T {}

/// What the client asked to be connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardTarget {
    /// The host as sent: a name or an address (attacker-controlled).
    pub host: String,
    /// The port.
    pub port: u16,
}

/// How a forward is answered.
pub enum ForwardAnswer {
    /// The channel open fails with "connect failed" and this description (the
    /// `strerror`/`gai_strerror` sshd would send).
    Refused {
        /// For example "Connection refused" or "Name or service not known".
        description: &'static str,
    },
    /// The channel is opened and its bytes handed to this.
    Accepted(Box<dyn ForwardService>),
}

/// Serves an accepted forward's bytes to their end, within its own bounds.
#[async_trait]
pub trait ForwardService: Send {
    /// Runs until the exchange ends; the channel is closed afterwards.
    async fn serve(self: Box<Self>, stream: Box<dyn ForwardStream>);
}

/// Decides on `direct-tcpip` channels (`egress.mode` not `off`).
#[async_trait]
pub trait ForwardGateway: Send + Sync {
    /// Resolves `target`, applies the egress policy, logs what it refuses (for
    /// `context`'s session) and says how to answer.
    async fn open(&self, target: &ForwardTarget, context: &ConnectionContext) -> ForwardAnswer;
}
