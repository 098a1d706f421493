//! How Hermes itself talks TLS upstream: the handshake accepts any certificate
//! (signatures still checked, so the handshake is real), and the chain is judged
//! afterwards, before any request is sent, against the system's roots plus any the
//! configuration adds (`egress.tls.verify_upstream`). Judging after the handshake
//! lets the gateway show the box what the real server would have shown: a
//! certificate its client trusts, or one it does not.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The upstream client configuration: any certificate, signatures checked.
pub fn client_config() -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    // The request sent upstream is HTTP/1.1, whatever the box spoke.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What the gateway made of an upstream certificate chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A root trusted it, for the name asked.
    Verified,
    /// It did not verify: why, in rustls's words.
    Unverified(String),
}

/// Judges upstream chains (`verify_upstream: true`).
#[derive(Debug)]
pub struct Judge(Option<Arc<WebPkiServerVerifier>>);

impl Judge {
    /// A judge trusting the system's roots and `extra_roots` (a test's own CA; a
    /// site's inspection CA).
    pub fn new(extra_roots: &[CertificateDer<'static>]) -> Result<Judge, rustls::Error> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!(target: "hermes::egress", %error, "a system root certificate could not be read");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        let (extra, bad) = roots.add_parsable_certificates(extra_roots.iter().cloned());
        if bad > 0 {
            return Err(rustls::Error::General(format!(
                "{bad} of the extra upstream roots are not usable certificates"
            )));
        }
        tracing::debug!(target: "hermes::egress", system = added, ignored, extra, "upstream TLS roots");
        if roots.is_empty() {
            tracing::warn!(target: "hermes::egress", "no root certificates: no upstream certificate will verify");
            return Ok(Judge(None));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|error| rustls::Error::General(error.to_string()))?;
        Ok(Judge(Some(verifier)))
    }

    /// Whether `chain` (leaf first) is trusted for `name` now.
    pub fn judge(&self, chain: &[CertificateDer<'_>], name: &ServerName<'_>) -> Verdict {
        let Some(verifier) = &self.0 else {
            return Verdict::Unverified("no root certificates to verify against".to_owned());
        };
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Verdict::Unverified("no certificate".to_owned());
        };
        match verifier.verify_server_cert(leaf, intermediates, name, &[], UnixTime::now()) {
            Ok(_) => Verdict::Verified,
            Err(error) => Verdict::Unverified(error.to_string()),
        }
    }
}

/// Accepts any server certificate in the handshake; [`Judge`] decides after it.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
