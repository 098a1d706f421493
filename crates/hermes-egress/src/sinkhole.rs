//! What a box's traffic that is not fetched gets. A connection to a port Hermes
//! takes (`egress.listen_ports`) has its first bytes read and logged
//! (`hermes.egress.connection`), then is held unanswered until a timeout (`drop`) or
//! reset (`reject`). Everything else the firewall answers itself, as `drop` (no
//! answer) or `reject` (a reset or an ICMP error), and its packet log is reported here.

use std::time::Duration;

use hermes_core::config::RefusedAnswer;
use hermes_core::escape::escape_bytes;
use hermes_core::events::EventId;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::BoxContext;
use crate::nflog::{LoggedPacket, Transport};
use crate::protocol;
use crate::seams::BoxConnection;

/// Longest wait for a connection's first bytes (clients that speak first send them
/// at once; a server-first protocol sends nothing).
const FIRST_BYTES_WAIT: Duration = Duration::from_secs(2);
/// Once bytes came, how long more may follow before they are logged.
const MORE_BYTES_WAIT: Duration = Duration::from_millis(250);
/// How long a dropped connection is held open without an answer.
pub const DROP_HOLD: Duration = Duration::from_secs(60);

/// What the connection gets, as the event names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Held open unanswered, then closed.
    Drop,
    /// Reset.
    Reject,
    /// Reset at once: the box has too many connections open.
    BoxConnectionLimit,
}

impl Answer {
    /// From `egress.refused`.
    pub fn configured(refused: RefusedAnswer) -> Self {
        match refused {
            RefusedAnswer::Drop => Answer::Drop,
            RefusedAnswer::Reject => Answer::Reject,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Answer::Drop => "drop",
            Answer::Reject => "reject",
            Answer::BoxConnectionLimit => "box_connection_limit",
        }
    }
}

/// Logs the connection and answers it.
pub async fn refuse(mut connection: BoxConnection, answer: Answer, first_bytes_limit: usize) {
    let first = if answer == Answer::BoxConnectionLimit {
        Vec::new()
    } else {
        read_first_bytes(&mut connection.stream, first_bytes_limit).await
    };
    let destination = connection.destination;
    let guess = protocol::guess(destination.port(), &first);
    connection.context.emit(EventId::EgressConnection, |event| {
        event
            .field("dst_ip", destination.ip().to_string())
            .field("dst_port", destination.port())
            .field("container_id", connection.context.container_id.as_str())
            .field("transport", "tcp")
            .field("app_protocol", guess)
            .field("first_bytes", escape_bytes(&first))
            .field("answer", answer.as_str())
            .message(format!(
                "Box connection to {destination} ({guess}): {}",
                answer.as_str()
            ))
    });
    match answer {
        Answer::Drop => hold(&mut connection.stream).await,
        Answer::Reject | Answer::BoxConnectionLimit => {
            // A reset, not a FIN: the box's program sees the refusal at once.
            let _ = connection.stream.set_zero_linger();
        }
    }
}

/// Reports a flow the firewall answered itself (its first packet, from the packet
/// log): a TCP connection attempt, a UDP datagram (with its first bytes), a ping.
pub fn log_answered(
    context: &BoxContext,
    packet: &LoggedPacket,
    answer: Answer,
    first_bytes_limit: usize,
) {
    let destination = packet.destination;
    let first = match packet.transport {
        Transport::Udp => &packet.payload[..packet.payload.len().min(first_bytes_limit)],
        _ => &[][..],
    };
    let guess = match packet.transport {
        Transport::Tcp | Transport::Udp => protocol::guess(destination.port(), first),
        Transport::Icmp if packet.payload.first() == Some(&8) => "ping",
        Transport::Icmp | Transport::Other(_) => packet.transport.as_str(),
    };
    let transport = packet.transport.as_str();
    context.emit(EventId::EgressConnection, |event| {
        event
            .field("dst_ip", destination.ip().to_string())
            .field("dst_port", destination.port())
            .field("container_id", context.container_id.as_str())
            .field("transport", transport)
            .field("app_protocol", guess)
            .field("first_bytes", escape_bytes(first))
            .field("answer", answer.as_str())
            .message(format!(
                "Box {transport} to {destination} ({guess}): {}",
                answer.as_str()
            ))
    });
}

/// The bytes the box sends first, up to `limit`.
pub(crate) async fn read_first_bytes<S: AsyncRead + Unpin>(
    stream: &mut S,
    limit: usize,
) -> Vec<u8> {
    let mut first = Vec::new();
    let mut buffer = vec![0u8; limit.clamp(1, 64 * 1024)];
    let mut deadline = Instant::now() + FIRST_BYTES_WAIT;
    while first.len() < limit {
        let want = (limit - first.len()).min(buffer.len());
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buffer[..want])).await;
        match read {
            Ok(Ok(n)) if n > 0 => {
                first.extend_from_slice(&buffer[..n]);
                deadline = deadline.min(Instant::now() + MORE_BYTES_WAIT);
            }
            _ => break,
        }
    }
    first
}

/// Keeps the connection open without answering (what the box sent is read and
/// thrown away) until [`DROP_HOLD`] passes or the box closes it.
pub(crate) async fn hold<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(DROP_HOLD, async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hermes_core::boxnet::BoxOwner;
    use hermes_core::events::ConnectionContext;
    use hermes_core::ids::SessionId;
    use hermes_core::testing::RecordedEvents;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::BoxContext;

    /// A connected pair on loopback: the box's end and the gateway's.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (client, accepted) = tokio::join!(TcpStream::connect(address), listener.accept());
        (client.expect("connect"), accepted.expect("accept").0)
    }

    #[tokio::test]
    async fn a_rejected_connection_is_logged_for_its_session_then_reset() {
        let (bus, recorded) = RecordedEvents::new();
        let owner = ConnectionContext {
            session: SessionId::random(),
            src: ([198, 51, 100, 7], 40000).into(),
            dst: ([127, 0, 0, 1], 22).into(),
        };
        let session = owner.session.to_string();
        let context = BoxContext {
            container_id: "c0ffee".to_owned(),
            owner: Arc::new(move || Some(BoxOwner::from(owner.clone()))),
            events: bus,
        };
        let (mut client, gateway) = pair().await;
        client
            .write_all(b"GET /bot.sh HTTP/1.1\r\n\x1b[2J\r\n\r\n")
            .await
            .expect("send");
        let connection = BoxConnection {
            stream: gateway,
            destination: ([203, 0, 113, 9], 80).into(),
            context,
        };
        refuse(connection, Answer::Reject, 12).await;
        let mut answer = [0u8; 16];
        let read = client.read(&mut answer).await;
        assert_eq!(
            read.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::ConnectionReset)
        );
        let events = recorded.of(EventId::EgressConnection);
        assert_eq!(events.len(), 1);
        let event = &events[0];
        let field = |name: &str| event.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        assert_eq!(field("session").as_deref(), Some(session.as_str()));
        assert_eq!(field("dst_ip").as_deref(), Some("203.0.113.9"));
        assert_eq!(field("app_protocol").as_deref(), Some("http"));
        assert_eq!(field("answer").as_deref(), Some("reject"));
        // Cut at the limit (12 bytes).
        assert_eq!(field("first_bytes").as_deref(), Some("GET /bot.sh "));
    }
}
