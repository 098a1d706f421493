//! Where the Docker engine is: a unix socket, a TCP address (for example a socket
//! proxy) or a TLS address with client certificates (an engine on another host, as
//! Docker's `--tlsverify` sets it up), and the two kinds of connection made to it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    /// `host:port`, HTTPS with a client certificate.
    Tls {
        /// `host:port`; the host is the name the engine's certificate must carry.
        addr: String,
        /// The CA, certificate and key.
        files: TlsFiles,
    },
}

/// A TLS client setup in PEM files (Docker's `ca.pem`, `cert.pem`, `key.pem`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signed the engine's certificate; only it is trusted for streams.
    pub ca: PathBuf,
    /// This client's certificate (chain).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Why the engine could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The address is not one Hermes supports.
    #[error(
        "unsupported Docker address {0:?} (use unix://, tcp://, http://, or https:// with docker.tls)"
    )]
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
    /// From the `docker` section: `base_url` when set, else `socket_path`; with
    /// `tls`, a `tcp://` or `https://` address is reached over TLS.
    pub fn from_config(
        socket_path: &Path,
        base_url: Option<&str>,
        tls: Option<&TlsFiles>,
    ) -> Result<Endpoint, EndpointError> {
        let Some(url) = base_url else {
            return Ok(Endpoint::Unix(socket_path.to_owned()));
        };
        if let Some(path) = url.strip_prefix("unix://") {
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let addr = |rest: &str| rest.trim_end_matches('/').to_owned();
        match (
            url.strip_prefix("https://"),
            url.strip_prefix("tcp://"),
            tls,
        ) {
            (Some(rest), _, Some(files)) | (_, Some(rest), Some(files)) => Ok(Endpoint::Tls {
                addr: addr(rest),
                files: files.clone(),
            }),
            (Some(_), _, None) => Err(EndpointError::Unsupported(url.to_owned())),
            (None, Some(rest), None) => Ok(Endpoint::Tcp(addr(rest))),
            (None, None, _) => url
                .strip_prefix("http://")
                .filter(|_| tls.is_none())
                .map(|rest| Endpoint::Tcp(addr(rest)))
                .ok_or_else(|| EndpointError::Unsupported(url.to_owned())),
        }
    }

    /// A bollard client with the API version negotiated with the daemon.
    pub async fn connect(&self) -> Result<Docker, EndpointError> {
        let unreachable = |e: bollard::errors::Error| EndpointError::Unreachable {
            endpoint: self.to_string(),
            message: crate::error::failure(e),
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
            Endpoint::Tls { addr, files } => {
                // Checked here, so that a bad file is named at start, not at a login.
                tls_config(files).map_err(|e| EndpointError::Unreachable {
                    endpoint: self.to_string(),
                    message: e.to_string(),
                })?;
                Docker::connect_with_ssl(
                    &format!("https://{addr}"),
                    &files.key,
                    &files.cert,
                    &files.ca,
                    API_TIMEOUT_SECS,
                    bollard::API_DEFAULT_VERSION,
                )
            }
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
            Endpoint::Tls { addr, files } => {
                // Read per stream (off the runtime's threads): a renewed client
                // certificate is used without a restart.
                let files = files.clone();
                let config = tokio::task::spawn_blocking(move || tls_config(&files))
                    .await
                    .map_err(std::io::Error::other)??;
                let connector = tokio_rustls::TlsConnector::from(config);
                let host = addr
                    .rsplit_once(':')
                    .map_or(addr.as_str(), |(host, _)| host)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let stream = tokio::net::TcpStream::connect(addr.as_str()).await?;
                stream.set_nodelay(true)?;
                Box::new(connector.connect(name, stream).await?)
            }
        })
    }
}

/// The TLS client configuration for exec streams: only the configured CA is trusted,
/// and the client presents its certificate.
fn tls_config(files: &TlsFiles) -> std::io::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |what: &Path, e: &dyn std::fmt::Display| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", what.display()),
        )
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&files.ca).map_err(|e| invalid(&files.ca, &e))? {
        roots
            .add(cert.map_err(|e| invalid(&files.ca, &e))?)
            .map_err(|e| invalid(&files.ca, &e))?;
    }
    if roots.is_empty() {
        return Err(invalid(&files.ca, &"no certificate"));
    }
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| invalid(&files.cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&files.cert, &e))?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| invalid(&files.key, &e))?;
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| invalid(&files.cert, &e))?;
    Ok(Arc::new(config))
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "tcp://{addr}"),
            Endpoint::Tls { addr, .. } => write!(f, "https://{addr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let sock = Path::new("/var/run/docker.sock");
        let files = TlsFiles {
            ca: "/c/ca.pem".into(),
            cert: "/c/cert.pem".into(),
            key: "/c/key.pem".into(),
        };
        for url in ["https://engine:2376", "tcp://engine:2376/"] {
            assert_eq!(
                Endpoint::from_config(sock, Some(url), Some(&files)).ok(),
                Some(Endpoint::Tls {
                    addr: "engine:2376".into(),
                    files: files.clone()
                })
            );
        }
        assert!(Endpoint::from_config(sock, Some("http://engine:2376"), Some(&files)).is_err());
        assert_eq!(
            Endpoint::from_config(sock, None, None).ok(),
            Some(Endpoint::Unix(sock.into()))
        );
        assert_eq!(
            Endpoint::from_config(sock, Some("unix:///tmp/d.sock"), None).ok(),
            Some(Endpoint::Unix("/tmp/d.sock".into()))
        );
        assert_eq!(
            Endpoint::from_config(sock, Some("tcp://proxy:2375"), None).ok(),
            Some(Endpoint::Tcp("proxy:2375".into()))
        );
        assert_eq!(
            Endpoint::from_config(sock, Some("http://127.0.0.1:2375/"), None).ok(),
            Some(Endpoint::Tcp("127.0.0.1:2375".into()))
        );
        assert!(Endpoint::from_config(sock, Some("https://x:1"), None).is_err());
    }

    #[test]
    fn bad_tls_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").expect("write");
        let missing = dir.path().join("missing.pem");
        for (ca, expected) in [(&missing, "missing.pem"), (&garbage, "garbage.pem")] {
            let files = TlsFiles {
                ca: ca.clone(),
                cert: garbage.clone(),
                key: garbage.clone(),
            };
            let error = tls_config(&files).expect_err("refused");
            assert!(error.to_string().contains(expected), "{error}");
        }
    }
}
