//! Where the Docker engine is: a unix socket or a TCP address (for example a socket
//! proxy), and the two kinds of connection made to it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use tokio::io::{AsyncRead, AsyncWrite};

/// Seconds a single Docker API call may take before bollard gives up.
const API_TIMEOUT_SECS: u64 = 60;

/// The engine's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket.
    Unix(PathBuf),
    /// `host:port`, plain HTTP.
    Tcp(String),
}

/// Why the engine could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The address is not one Hermes supports.
    #[error("unsupported Docker address {0:?} (use unix://, tcp:// or http://)")]
    Unsupported(String),
    /// bollard refused the address or the daemon did not answer.
    #[error("Docker engine at {endpoint}: {message}")]
    Unreachable {
        /// The address tried.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
}

/// A byte stream to the engine, unix or TCP.
pub(crate) trait RawStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> RawStream for T {}

impl Endpoint {
    /// From the `docker` section: `base_url` when set, else `socket_path`.
    pub fn from_config(
        socket_path: &Path,
        base_url: Option<&str>,
    ) -> Result<Endpoint, EndpointError> {
        let Some(url) = base_url else {
            return Ok(Endpoint::Unix(socket_path.to_owned()));
        };
        if let Some(path) = url.strip_prefix("unix://") {
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        url.strip_prefix("tcp://")
            .or_else(|| url.strip_prefix("http://"))
            .map(|rest| Endpoint::Tcp(rest.trim_end_matches('/').to_owned()))
            .ok_or_else(|| EndpointError::Unsupported(url.to_owned()))
    }

    /// A bollard client with the API version negotiated with the daemon.
    pub async fn connect(&self) -> Result<Docker, EndpointError> {
        let unreachable = |e: bollard::errors::Error| EndpointError::Unreachable {
            endpoint: self.to_string(),
            message: crate::error::describe(&e),
        };
        let docker = match self {
            Endpoint::Unix(path) => Docker::connect_with_unix(
                &path.to_string_lossy(),
                API_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            ),
            Endpoint::Tcp(addr) => Docker::connect_with_http(
                &format!("http://{addr}"),
                API_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            ),
        }
        .map_err(unreachable)?;
        let docker = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
            .await
            .map_err(|_| EndpointError::Unreachable {
                endpoint: self.to_string(),
                message: "no answer within 10 s".to_owned(),
            })?
            .map_err(unreachable)?;
        Ok(docker)
    }

    /// A fresh byte stream for one hijacked exec.
    pub(crate) async fn open_stream(&self) -> std::io::Result<Box<dyn RawStream>> {
        Ok(match self {
            Endpoint::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            Endpoint::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr.as_str()).await?;
                stream.set_nodelay(true)?;
                Box::new(stream)
            }
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let sock = Path::new("/var/run/docker.sock");
        assert_eq!(
            Endpoint::from_config(sock, None).ok(),
            Some(Endpoint::Unix(sock.into()))
        );
        assert_eq!(
            Endpoint::from_config(sock, Some("unix:///tmp/d.sock")).ok(),
            Some(Endpoint::Unix("/tmp/d.sock".into()))
        );
        assert_eq!(
            Endpoint::from_config(sock, Some("tcp://proxy:2375")).ok(),
            Some(Endpoint::Tcp("proxy:2375".into()))
        );
        assert_eq!(
            Endpoint::from_config(sock, Some("http://127.0.0.1:2375/")).ok(),
            Some(Endpoint::Tcp("127.0.0.1:2375".into()))
        );
        assert!(Endpoint::from_config(sock, Some("https://x:1")).is_err());
    }
}
