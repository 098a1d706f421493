//! `direct-tcpip` with the egress gateway set: the gateway decides, the request is
//! logged with its answer, the client's bytes reach the gateway whole and are logged
//! within `forwarding.capture_bytes`, and the per-connection bound holds.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::SOON;
use crate::config::ByteSize;
use crate::events::{ConnectionContext, EventId};
use crate::forward_gateway::{
    ForwardAnswer, ForwardGateway, ForwardService, ForwardStream, ForwardTarget,
};
use crate::session::{DirectTcpip, GatewayDecision};
use crate::testing::{Rig, TestLimits, config, within};

/// Accepts port 80 (its service reads everything, then answers "pong"), refuses the
/// rest; remembers what it was asked.
#[derive(Default)]
struct FakeGateway {
    asked: Mutex<Vec<(ForwardTarget, String)>>,
    received: Arc<Mutex<Vec<u8>>>,
}

struct Pong(Arc<Mutex<Vec<u8>>>);

#[async_trait]
impl ForwardService for Pong {
    async fn serve(self: Box<Self>, mut stream: Box<dyn ForwardStream>) {
        let mut all = Vec::new();
        let _ = stream.read_to_end(&mut all).await;
        self.0.lock().expect("received").extend(all);
        let _ = stream.write_all(b"pong").await;
        let _ = stream.shutdown().await;
    }
}

#[async_trait]
impl ForwardGateway for FakeGateway {
    async fn open(&self, target: &ForwardTarget, context: &ConnectionContext) -> ForwardAnswer {
        self.asked
            .lock()
            .expect("asked")
            .push((target.clone(), context.session.to_string()));
        match target.port {
            80 => ForwardAnswer::Accepted(Box::new(Pong(Arc::clone(&self.received)))),
            _ => ForwardAnswer::Refused {
                description: "Connection refused",
            },
        }
    }
}

fn rig_with_gateway(max_open: u32) -> (Rig, Arc<FakeGateway>) {
    let mut config = config(&TestLimits::default());
    config.forwarding.capture_bytes = ByteSize::kib(1);
    config.forwarding.max_captures_per_connection = max_open;
    let rig = Rig::new(config);
    let gateway = Arc::new(FakeGateway::default());
    rig.services
        .set_forward_gateway(Arc::clone(&gateway) as Arc<dyn ForwardGateway>);
    (rig, gateway)
}

fn pending(decision: DirectTcpip) -> crate::session::PendingForward {
    match decision {
        DirectTcpip::Gateway(pending) => pending,
        _ => panic!("the gateway decides"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_gateway_decides_and_the_request_is_logged_with_its_answer() {
    let (rig, gateway) = rig_with_gateway(16);
    let session = rig.connect();
    let decision = pending(session.conn.direct_tcpip("mail.test", 25, "10.0.0.1", 4000));
    // Not logged before the gateway answered.
    assert_eq!(rig.events.count(EventId::DirectTcpipRequest), 0);
    match decision.decide().await {
        GatewayDecision::Refuse { description } => assert_eq!(description, "Connection refused"),
        GatewayDecision::Accept(_) => panic!("port 25 is refused"),
    }
    let asked = gateway.asked.lock().expect("asked").clone();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].0.host, "mail.test");
    assert_eq!(asked[0].0.port, 25);
    assert_eq!(asked[0].1, session.conn.context().session.to_string());
    let requests = rig.events.of(EventId::DirectTcpipRequest);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].get("accepted"), Some(&serde_json::json!(false)));
    assert_eq!(
        requests[0].get("dst_ip"),
        Some(&serde_json::json!("mail.test"))
    );

    // A port past 65535 cannot be connected: refused without asking.
    assert!(matches!(
        session
            .conn
            .direct_tcpip("mail.test", 70000, "10.0.0.1", 4001),
        DirectTcpip::Refuse { .. }
    ));
    assert_eq!(gateway.asked.lock().expect("asked").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_accepted_forward_gets_every_byte_and_logs_them_within_the_limit() {
    let (rig, gateway) = rig_with_gateway(1);
    let session = rig.connect();
    let decision = pending(
        session
            .conn
            .direct_tcpip("dropper.test", 80, "10.0.0.1", 4000),
    );
    let GatewayDecision::Accept(forward) = decision.decide().await else {
        panic!("port 80 is accepted");
    };
    // The connection's one place is taken: the next forward is refused at once.
    assert!(matches!(
        session
            .conn
            .direct_tcpip("dropper.test", 80, "10.0.0.1", 4001),
        DirectTcpip::Refuse { .. }
    ));
    assert_eq!(rig.events.count(EventId::ChannelRefused), 1);

    let (mut client, channel) = tokio::io::duplex(4096);
    let running = tokio::spawn(forward.run(channel));
    let mut request = b"GET /x.sh HTTP/1.1\r\nX-Pad: ".to_vec();
    request.extend([b'a'; 1100]);
    request.extend(b"\r\n\r\n");
    client.write_all(&request).await.expect("send");
    client.shutdown().await.expect("eof");
    let mut reply = Vec::new();
    within(SOON, "the reply", client.read_to_end(&mut reply))
        .await
        .expect("read");
    within(SOON, "the forward's end", running)
        .await
        .expect("ran");
    assert_eq!(reply, b"pong");
    assert_eq!(
        gateway.received.lock().expect("received").as_slice(),
        request.as_slice()
    );
    // Logged: the request as accepted, the data up to capture_bytes (1 KiB).
    let requests = rig.events.of(EventId::DirectTcpipRequest);
    assert_eq!(requests[0].get("accepted"), Some(&serde_json::json!(true)));
    let data: String = rig
        .events
        .of(EventId::DirectTcpipData)
        .iter()
        .filter_map(|e| e.get("data").and_then(|v| v.as_str()).map(str::to_owned))
        .collect();
    assert_eq!(data, crate::escape::escape_bytes(&request[..1024]));

    // Its place is free again.
    assert!(matches!(
        session
            .conn
            .direct_tcpip("dropper.test", 80, "10.0.0.1", 4002),
        DirectTcpip::Gateway(_)
    ));
}
