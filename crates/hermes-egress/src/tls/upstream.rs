//! How Hermes itself talks TLS upstream: the handshake accepts any certificate
//! (signatures still checked, so the handshake is real), and the chain is judged
//! afterwards, before any request is sent, against the system's roots plus any the
//! configuration adds (`egress.tls.verify_upstream`). Judging after the handshake
//! lets the gateway show the box what the real server would have shown: a
//! certificate its client trusts, or one it does not.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::der::MirrorFields;
use super::mirror;

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
    /// A root vouches for it, but not for the name asked or not now (expired, not
    /// yet valid): why, in rustls's words.
    Invalid(String),
    /// No root vouches for it (self-signed, an unknown CA, a bad signature...).
    Untrusted(String),
}

impl Verdict {
    /// Why it did not verify, if it did not.
    pub fn error(&self) -> Option<&str> {
        match self {
            Verdict::Verified => None,
            Verdict::Invalid(error) | Verdict::Untrusted(error) => Some(error),
        }
    }
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
            return Verdict::Untrusted("no root certificates to verify against".to_owned());
        };
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Verdict::Untrusted("no certificate".to_owned());
        };
        match verifier.verify_server_cert(leaf, intermediates, name, &[], UnixTime::now()) {
            Ok(_) => Verdict::Verified,
            Err(rustls::Error::InvalidCertificate(error))
                if name_or_time(&error) && vouched_for(verifier, leaf, intermediates) =>
            {
                Verdict::Invalid(rustls::Error::InvalidCertificate(error).to_string())
            }
            Err(error) => Verdict::Untrusted(error.to_string()),
        }
    }
}

/// An error about the name or the time, which a trusted chain can have too.
fn name_or_time(error: &CertificateError) -> bool {
    matches!(
        error,
        CertificateError::NotValidForName
            | CertificateError::NotValidForNameContext { .. }
            | CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. }
    )
}

/// Whether a root vouches for `leaf` for a name it names, within its validity:
/// an expired or misnamed certificate of a trusted CA, not a self-signed one (which
/// webpki reports expired before it looks for an issuer).
fn vouched_for(
    verifier: &WebPkiServerVerifier,
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> bool {
    let Ok(fields) = MirrorFields::of(leaf) else {
        return false;
    };
    let name = match (fields.dns_names.first(), fields.addresses.first()) {
        (Some(dns), _) => match ServerName::try_from(dns.clone()) {
            Ok(name) => name,
            Err(_) => return false,
        },
        (None, Some(address)) => ServerName::IpAddress((*address).into()),
        (None, None) => return false,
    };
    let (Some(from), Some(until)) = (
        mirror::parse(&fields.not_before),
        mirror::parse(&fields.not_after),
    ) else {
        return false;
    };
    let middle = from.unix_timestamp() / 2 + until.unix_timestamp() / 2;
    let Ok(seconds) = u64::try_from(middle) else {
        return false;
    };
    let then = UnixTime::since_unix_epoch(Duration::from_secs(seconds));
    verifier
        .verify_server_cert(leaf, intermediates, &name, &[], then)
        .is_ok()
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

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    use super::*;

    /// A certificate for `names`, valid from `from` to `until` (years), signed by
    /// `issuer` or by itself.
    fn certificate(
        names: &[&str],
        (from, until): (i32, i32),
        issuer: Option<&Issuer<'static, KeyPair>>,
    ) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("key");
        let names = names
            .iter()
            .map(|name| name.to_string())
            .collect::<Vec<_>>();
        let mut params = CertificateParams::new(names).expect("params");
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(until, 1, 1);
        match issuer {
            Some(issuer) => params.signed_by(&key, issuer),
            None => params.self_signed(&key),
        }
        .expect("certificate")
        .der()
        .clone()
    }

    #[test]
    fn a_trusted_chain_for_another_name_or_out_of_date_is_invalid_anything_else_untrusted() {
        let ca_key = KeyPair::generate().expect("key");
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = ca.self_signed(&ca_key).expect("root").der().clone();
        let issuer = Issuer::new(ca, ca_key);
        let judge = Judge::new(std::slice::from_ref(&root)).expect("judge");
        let name = ServerName::try_from("payload.test").expect("name");
        let verdict = |cert: CertificateDer<'static>| judge.judge(&[cert], &name);

        let now = (2024, 2099);
        assert_eq!(
            verdict(certificate(&["payload.test"], now, Some(&issuer))),
            Verdict::Verified
        );
        for (names, years) in [(&["other.test"], now), (&["payload.test"], (2001, 2002))] {
            let cert = certificate(names, years, Some(&issuer));
            assert!(
                matches!(verdict(cert), Verdict::Invalid(_)),
                "{names:?} {years:?}"
            );
        }
        // Self-signed, in date or not (webpki says "expired" before it looks for
        // an issuer): no root vouches for it.
        for years in [now, (2001, 2002)] {
            let cert = certificate(&["payload.test"], years, None);
            assert!(matches!(verdict(cert), Verdict::Untrusted(_)), "{years:?}");
        }
        assert!(matches!(judge.judge(&[], &name), Verdict::Untrusted(_)));
    }
}
