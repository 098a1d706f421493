//! The sensor's own CA: generated at first start beside the host keys, reused after,
//! trusted by every box; it signs a leaf certificate for each name the box asks for.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngExt;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

use super::der;

const DAY: u64 = 24 * 3600;

/// A CA that cannot be loaded, generated or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading or writing a CA file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A CA file that is not what it should be.
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// Generating or signing a certificate.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// A minted leaf rustls cannot use.
    #[error("leaf key: {0}")]
    Leaf(#[from] rustls::Error),
}

/// How the CA names itself (it must not name Hermes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaName {
    /// Its organization (`O`).
    pub organization: String,
    /// Its common name (`CN`).
    pub common_name: String,
}

/// The sensor's CA, able to sign leaves.
pub struct SensorCa {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
    pem: String,
}

impl std::fmt::Debug for SensorCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SensorCa").finish_non_exhaustive()
    }
}

impl SensorCa {
    /// The CA in `cert` and `key`, generated (key mode 0600) when neither exists.
    /// Returns whether it was generated. A CA already there keeps its name, as host
    /// keys are kept: boxes made before trust it.
    pub fn load_or_generate(
        cert: &Path,
        key: &Path,
        name: &CaName,
    ) -> Result<(SensorCa, bool), CaError> {
        match (cert.exists(), key.exists()) {
            (true, true) => Ok((SensorCa::load(cert, key)?, false)),
            (false, false) => {
                let (ca, key_pem) = SensorCa::generate_with_key(name)?;
                write_file(key, key_pem.as_bytes(), 0o600)?;
                write_file(cert, ca.pem.as_bytes(), 0o644)?;
                Ok((ca, true))
            }
            (true, false) => Err(invalid(key, "missing while its certificate exists")),
            (false, true) => Err(invalid(cert, "missing while its key exists")),
        }
    }

    /// A new CA, kept nowhere (tests).
    pub fn generate(name: &CaName) -> Result<SensorCa, CaError> {
        Ok(SensorCa::generate_with_key(name)?.0)
    }

    fn generate_with_key(name: &CaName) -> Result<(SensorCa, String), CaError> {
        let key = KeyPair::generate()?;
        let key_pem = key.serialize_pem();
        let mut params = ca_params(distinguished_name(name));
        // Made some time ago, valid ten years: an enterprise CA, not a fresh one.
        let not_before = now() - Duration::from_secs(rand::rng().random_range(90..700) * DAY);
        params.not_before = datetime(not_before);
        params.not_after = datetime(not_before + Duration::from_secs(3652 * DAY));
        params.serial_number = Some(serial());
        let certificate = params.self_signed(&key)?;
        let der = certificate.der().clone();
        let pem = certificate.pem();
        Ok((
            SensorCa {
                issuer: Issuer::new(params, key),
                der,
                pem,
            },
            key_pem,
        ))
    }

    fn load(cert: &Path, key: &Path) -> Result<SensorCa, CaError> {
        let key_pem = read(key)?;
        let key_pair = KeyPair::from_pem(&key_pem)
            .map_err(|error| invalid(key, format!("not a private key: {error}")))?;
        let pem = read(cert)?;
        let der = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|error| invalid(cert, format!("not a PEM certificate: {error}")))?;
        let raw = key_pair.public_key_raw();
        if !der.windows(raw.len()).any(|window| window == raw) {
            return Err(invalid(cert, "its key is not the one in the key file"));
        }
        let attributes = der::subject(&der).map_err(|error| invalid(cert, error.to_string()))?;
        let mut name = DistinguishedName::new();
        for attribute in attributes {
            let oid: Vec<u64> = attribute
                .oid
                .split('.')
                .filter_map(|part| part.parse().ok())
                .collect();
            let value = match attribute.tag {
                0x0c => DnValue::Utf8String(attribute.value),
                0x13 => DnValue::PrintableString(
                    attribute
                        .value
                        .try_into()
                        .map_err(|_| invalid(cert, "subject: bad PrintableString"))?,
                ),
                0x16 => DnValue::Ia5String(
                    attribute
                        .value
                        .try_into()
                        .map_err(|_| invalid(cert, "subject: bad IA5String"))?,
                ),
                tag => return Err(invalid(cert, format!("subject: string type {tag:#x}"))),
            };
            name.push(DnType::from_oid(&oid), value);
        }
        Ok(SensorCa {
            issuer: Issuer::new(ca_params(name), key_pair),
            der,
            pem,
        })
    }

    /// The CA certificate, PEM (what the box trusts).
    pub fn certificate_pem(&self) -> &str {
        &self.pem
    }

    /// OpenSSL's hash of the CA's subject (its `<hash>.0` link in /etc/ssl/certs).
    pub fn subject_hash(&self) -> Option<String> {
        der::openssl_subject_hash(&self.der).ok()
    }

    /// The CA as an issuer (to sign mirrors of certificates).
    pub(super) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// The CA certificate, DER.
    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// A new leaf for `host` (a DNS name or an address), signed by the CA: its own
    /// key, a random serial, issued some days ago for 90 days as public CAs do.
    pub fn mint(&self, host: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![match host.parse() {
            Ok(address) => SanType::IpAddress(address),
            Err(_) => SanType::DnsName(host.try_into()?),
        }];
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, host);
        let not_before = now() - Duration::from_secs(rand::rng().random_range(1..60) * DAY);
        params.not_before = datetime(not_before);
        params.not_after = datetime(not_before + Duration::from_secs(90 * DAY));
        params.serial_number = Some(serial());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let certificate = params.signed_by(&key, &self.issuer)?;
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer = rustls::crypto::ring::sign::any_supported_type(&private)?;
        Ok(Arc::new(CertifiedKey::new(
            vec![certificate.der().clone()],
            signer,
        )))
    }
}

fn ca_params(name: DistinguishedName) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn distinguished_name(name: &CaName) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, name.organization.as_str());
    dn.push(DnType::CommonName, name.common_name.as_str());
    dn
}

/// 16 random bytes, positive.
pub(super) fn serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::rng().random();
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

fn now() -> SystemTime {
    SystemTime::now()
}

pub(super) fn datetime(at: SystemTime) -> OffsetDateTime {
    let seconds = at
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0);
    let seconds = i64::try_from(seconds).unwrap_or(0);
    OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes `path` whole or not at all, created with `mode`.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let io = |source| CaError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)
}

fn invalid(path: &Path, reason: impl Into<String>) -> CaError {
    CaError::Invalid {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn name() -> CaName {
        CaName {
            organization: "Northwave Hosting Ltd".to_owned(),
            common_name: "Northwave Hosting Internal CA G2".to_owned(),
        }
    }

    #[test]
    fn the_ca_is_generated_once_then_reused_and_its_key_is_private() {
        let dir = tempfile::tempdir().expect("dir");
        let cert = dir.path().join("keys/egress_ca.crt");
        let key = dir.path().join("keys/egress_ca.key");
        let (first, generated) = SensorCa::load_or_generate(&cert, &key, &name()).expect("ca");
        assert!(generated);
        let mode = std::fs::metadata(&key).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, generated) = SensorCa::load_or_generate(&cert, &key, &name()).expect("ca");
        assert!(!generated);
        assert_eq!(first.certificate_der(), again.certificate_der());
        let summary = der::CertSummary::of(again.certificate_der()).expect("summary");
        assert_eq!(
            summary.subject,
            "O=Northwave Hosting Ltd, CN=Northwave Hosting Internal CA G2"
        );
        // A leaf the reloaded CA signs names the CA as its issuer, byte for byte.
        let leaf = again.mint("dropper.test").expect("leaf");
        let leaf = der::CertSummary::of(&leaf.cert[0]).expect("leaf summary");
        assert_eq!(leaf.issuer, summary.subject);
        assert_eq!(leaf.subject, "CN=dropper.test");
    }

    #[test]
    fn a_half_present_or_mismatched_ca_is_an_error() {
        let dir = tempfile::tempdir().expect("dir");
        let cert = dir.path().join("ca.crt");
        let key = dir.path().join("ca.key");
        SensorCa::load_or_generate(&cert, &key, &name()).expect("ca");
        let other = dir.path().join("other.key");
        std::fs::write(&other, KeyPair::generate().expect("key").serialize_pem()).expect("write");
        assert!(matches!(
            SensorCa::load_or_generate(&cert, &other, &name()),
            Err(CaError::Invalid { .. })
        ));
        std::fs::remove_file(&cert).expect("remove");
        assert!(SensorCa::load_or_generate(&cert, &key, &name()).is_err());
    }

    #[test]
    fn leaves_for_names_and_addresses_are_distinct_and_plausible() {
        let ca = SensorCa::generate(&name()).expect("ca");
        let a = ca.mint("a.test").expect("a");
        let b = ca.mint("203.0.113.9").expect("b");
        assert_ne!(a.cert[0], b.cert[0]);
        let summary = der::CertSummary::of(&b.cert[0]).expect("summary");
        assert_eq!(summary.subject, "CN=203.0.113.9");
        let year: u32 = summary.not_after[..4].parse().expect("year");
        assert!((2025..2100).contains(&year), "{}", summary.not_after);
    }
}
