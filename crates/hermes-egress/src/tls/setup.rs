//! `egress.tls` at start: the sensor's CA loaded or generated, the upstream roots.

use std::path::{Path, PathBuf};

use hermes_core::config::EgressTlsConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::{CaError, CaName, SensorCa, TlsGateway};

/// Why HTTPS interception cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The CA.
    #[error("egress.tls.ca_path: {0}")]
    Ca(#[from] CaError),
    /// The extra roots file.
    #[error("egress.tls.extra_roots: {path}: {reason}")]
    Roots { path: PathBuf, reason: String },
    /// The upstream client.
    #[error("egress.tls: {0}")]
    Client(#[from] rustls::Error),
}

impl TlsGateway {
    /// The gateway `config` describes, its CA beside `host_key_path` unless
    /// configured; also the CA file when it was generated now.
    pub fn from_config(
        config: &EgressTlsConfig,
        host_key_path: &Path,
    ) -> Result<(TlsGateway, Option<PathBuf>), TlsSetupError> {
        let (cert, key) = config.ca_files(host_key_path);
        let name = CaName {
            organization: config.ca_organization.clone(),
            common_name: config.ca_common_name.clone(),
        };
        let (ca, generated) = SensorCa::load_or_generate(&cert, &key, &name)?;
        let roots = match &config.extra_roots {
            Some(path) => read_roots(path)?,
            None => Vec::new(),
        };
        let gateway = TlsGateway::new(ca, config.verify_upstream, &roots)?;
        Ok((gateway, generated.then_some(cert)))
    }
}

/// Every certificate of a PEM file; at least one.
fn read_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let error = |reason: String| TlsSetupError::Roots {
        path: path.to_owned(),
        reason,
    };
    let roots = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if roots.is_empty() {
        return Err(error("no certificate in it".to_owned()));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_gateway_generates_its_ca_once_beside_the_host_keys() {
        let dir = tempfile::tempdir().expect("dir");
        let host_key = dir.path().join("ssh_host_rsa_key");
        let config = EgressTlsConfig::default();
        let (first, generated) = TlsGateway::from_config(&config, &host_key).expect("gateway");
        assert_eq!(generated, Some(dir.path().join("egress_ca.crt")));
        assert!(dir.path().join("egress_ca.key").exists());
        let (again, generated) = TlsGateway::from_config(&config, &host_key).expect("gateway");
        assert_eq!(generated, None);
        assert_eq!(first.ca().certificate_der(), again.ca().certificate_der());

        // Extra roots: a PEM file with certificates; an empty or missing one is an error.
        let roots = dir.path().join("roots.pem");
        std::fs::write(&roots, first.ca().certificate_pem()).expect("write");
        let with_roots = EgressTlsConfig {
            extra_roots: Some(roots.clone()),
            ..EgressTlsConfig::default()
        };
        assert!(TlsGateway::from_config(&with_roots, &host_key).is_ok());
        std::fs::write(&roots, "").expect("write");
        assert!(matches!(
            TlsGateway::from_config(&with_roots, &host_key),
            Err(TlsSetupError::Roots { .. })
        ));
    }
}
