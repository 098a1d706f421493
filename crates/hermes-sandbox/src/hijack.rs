//! Starting an exec with our own HTTP upgrade (`POST /exec/{id}/start`, `Upgrade: tcp`)
//! and handing back the raw, bidirectional connection.
//!
//! bollard's own `start_exec` decodes TTY output as if it were multiplexed and stalls on
//! output that begins with bytes 0x00-0x02; with the raw connection the bytes are ours.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, UPGRADE};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

use hermes_core::sandbox::SandboxError;

use crate::endpoint::Endpoint;

/// The upgraded connection: exec output to read, exec stdin to write.
pub(crate) type ExecStream = TokioIo<hyper::upgrade::Upgraded>;

/// Error bodies longer than this are cut.
const MAX_ERROR_BODY: usize = 16 * 1024;

pub(crate) async fn start_exec(
    endpoint: &Endpoint,
    api_version: &str,
    exec_id: &str,
    tty: bool,
) -> Result<ExecStream, SandboxError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        crate::error::count_error();
        SandboxError::Engine(format!("exec start ({what}) at {endpoint}: {e}"))
    };
    if exec_id.is_empty() || !exec_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SandboxError::Engine(format!(
            "unexpected exec id {exec_id:?}"
        )));
    }
    let stream = endpoint
        .open_stream()
        .await
        .map_err(|e| failed("connect", &e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed("handshake", &e))?;
    tokio::spawn(async move {
        // Ends when the upgraded stream is dropped; errors are seen by the reader.
        let _ = connection.with_upgrades().await;
    });

    let body = format!(r#"{{"Detach":false,"Tty":{tty}}}"#);
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("/v{api_version}/exec/{exec_id}/start"))
        .header(HOST, "docker")
        .header(CONTENT_TYPE, "application/json")
        // `close`: should the engine not take the connection over (an error), it
        // closes it after its answer, so a socket proxy that checked this one
        // request can pass the rest through untouched.
        .header(CONNECTION, "Upgrade, close")
        .header(UPGRADE, "tcp")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| failed("request", &e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed("send", &e))?;
    let status = response.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        let body = Limited::new(response.into_body(), MAX_ERROR_BODY)
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
            .unwrap_or_default();
        return Err(
            if status == StatusCode::NOT_FOUND || status == StatusCode::CONFLICT {
                SandboxError::ContainerGone(body)
            } else {
                SandboxError::Engine(format!("exec start: HTTP {status}: {body}"))
            },
        );
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|e| failed("upgrade", &e))?;
    Ok(TokioIo::new(upgraded))
}
