//! A leaf that looks like an upstream server's certificate but that nobody trusts:
//! its subject, issuer name, validity and alternative names copied, signed by a key
//! of our own (itself when the original was self-issued, otherwise a throwaway
//! issuer of the same name). A client that checks certificates then refuses it as
//! it would refuse the original an unknown CA signed; one that does not (`curl -k`)
//! goes on, and Hermes reads its request. Signed by the sensor's CA instead, it is
//! a certificate a box trusts the issuer of but whose names and dates are the
//! original's (one a real root signed for another name, or expired).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

use super::ca::{CaError, datetime, serial};
use super::der::{Attribute, DerError, MirrorFields};

/// Why a certificate could not be mirrored.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The original is not DER we read.
    #[error("upstream certificate: {0}")]
    Der(#[from] DerError),
    /// Making the mirror.
    #[error(transparent)]
    Make(#[from] CaError),
}

/// The mirror of the DER certificate `original`; `host` (the name or address the
/// client asked for) is its alternative name when none of the original's can be
/// copied. Signed by `issuer` when given (the sensor's CA, for a certificate a root
/// vouches for but that is expired or for another name: the box then fails for
/// that same reason), otherwise by a key of its own as said above.
pub fn mirror(
    original: &[u8],
    host: &str,
    issuer: Option<&Issuer<'static, KeyPair>>,
) -> Result<Arc<CertifiedKey>, MirrorError> {
    let fields = MirrorFields::of(original)?;
    let key = KeyPair::generate().map_err(CaError::from)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&fields.subject);
    params.subject_alt_names = alt_names(&fields, host);
    let (not_before, not_after) = validity(&fields);
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(serial());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let certificate = if let Some(issuer) = issuer {
        params.signed_by(&key, issuer).map_err(CaError::from)?
    } else if fields.self_issued {
        params.self_signed(&key).map_err(CaError::from)?
    } else {
        let issuer_key = KeyPair::generate().map_err(CaError::from)?;
        let mut issuer = CertificateParams::default();
        issuer.distinguished_name = distinguished_name(&fields.issuer);
        issuer.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        issuer.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params
            .signed_by(&key, &Issuer::new(issuer, issuer_key))
            .map_err(CaError::from)?
    };
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signer = rustls::crypto::ring::sign::any_supported_type(&private).map_err(CaError::from)?;
    Ok(Arc::new(CertifiedKey::new(
        vec![certificate.der().clone()],
        signer,
    )))
}

/// The name as written, each value in the string type it had where rcgen has one;
/// an attribute whose type is no valid OID (the server's choice) is left out, as
/// the encoder would refuse it.
fn distinguished_name(attributes: &[Attribute]) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    for attribute in attributes {
        let oid: Vec<u64> = attribute
            .oid
            .split('.')
            .filter_map(|part| part.parse().ok())
            .collect();
        let valid = match oid.as_slice() {
            [0..=1, second, ..] => *second < 40,
            [2, second, ..] => *second < u64::MAX / 2,
            _ => false,
        };
        if !valid {
            continue;
        }
        let text = attribute.value.clone();
        let value = match attribute.tag {
            0x13 => match text.clone().try_into() {
                Ok(printable) => DnValue::PrintableString(printable),
                Err(_) => DnValue::Utf8String(text),
            },
            0x16 => match text.clone().try_into() {
                Ok(ia5) => DnValue::Ia5String(ia5),
                Err(_) => DnValue::Utf8String(text),
            },
            _ => DnValue::Utf8String(text),
        };
        name.push(DnType::from_oid(&oid), value);
    }
    name
}

fn alt_names(fields: &MirrorFields, host: &str) -> Vec<SanType> {
    let mut names: Vec<SanType> = fields
        .dns_names
        .iter()
        .filter_map(|name| name.clone().try_into().ok().map(SanType::DnsName))
        .collect();
    names.extend(fields.addresses.iter().copied().map(SanType::IpAddress));
    let had_names = !fields.dns_names.is_empty() || !fields.addresses.is_empty();
    // None we could copy: the host asked for. None at all (the host in the subject
    // only, old style): none either.
    if names.is_empty() && had_names {
        match host.parse() {
            Ok(address) => names.push(SanType::IpAddress(address)),
            Err(_) => names.extend(host.to_owned().try_into().ok().map(SanType::DnsName)),
        }
    }
    names
}

/// The original's validity; a month either side of now when it cannot be read.
fn validity(fields: &MirrorFields) -> (OffsetDateTime, OffsetDateTime) {
    match (parse(&fields.not_before), parse(&fields.not_after)) {
        (Some(before), Some(after)) => (before, after),
        _ => {
            let month = Duration::from_secs(30 * 24 * 3600);
            let now = SystemTime::now();
            (datetime(now - month), datetime(now + month))
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub(super) fn parse(text: &str) -> Option<OffsetDateTime> {
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<u32>().ok();
    let month = Month::try_from(u8::try_from(number(5..7)?).ok()?).ok()?;
    let date = Date::from_calendar_date(
        i32::try_from(number(0..4)?).ok()?,
        month,
        u8::try_from(number(8..10)?).ok()?,
    )
    .ok()?;
    let time = Time::from_hms(
        u8::try_from(number(11..13)?).ok()?,
        u8::try_from(number(14..16)?).ok()?,
        u8::try_from(number(17..19)?).ok()?,
    )
    .ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::der::CertSummary;

    fn original(self_signed: bool) -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec!["payload.test".to_owned()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress("203.0.113.9".parse().expect("ip")));
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CountryName,
            DnValue::PrintableString("RU".try_into().expect("printable")),
        );
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Bulletproof Ltd");
        params
            .distinguished_name
            .push(DnType::CommonName, "payload.test");
        params.not_before = rcgen::date_time_ymd(2026, 1, 2);
        params.not_after = rcgen::date_time_ymd(2027, 3, 4);
        if self_signed {
            return params.self_signed(&key).expect("cert").der().to_vec();
        }
        let ca_key = KeyPair::generate().expect("key");
        let mut ca = CertificateParams::default();
        ca.distinguished_name = DistinguishedName::new();
        ca.distinguished_name
            .push(DnType::CommonName, "Shady Root CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .signed_by(&key, &Issuer::new(ca, ca_key))
            .expect("cert")
            .der()
            .to_vec()
    }

    #[test]
    fn a_mirror_copies_names_validity_and_alternative_names_but_not_the_key() {
        for self_signed in [true, false] {
            let der = original(self_signed);
            let copy = mirror(&der, "ignored.test", None).expect("mirror");
            let copy = &copy.cert[0];
            assert_ne!(copy.as_ref(), der.as_slice());
            let (was, is) = (
                CertSummary::of(&der).expect("original"),
                CertSummary::of(copy).expect("copy"),
            );
            assert_eq!(is.subject, "C=RU, O=Bulletproof Ltd, CN=payload.test");
            assert_eq!(is.subject, was.subject);
            assert_eq!(is.issuer, was.issuer);
            assert_eq!(is.not_after, "2027-03-04T00:00:00Z");
            let fields = MirrorFields::of(copy).expect("fields");
            assert_eq!(fields.self_issued, self_signed);
            assert_eq!(fields.not_before, "2026-01-02T00:00:00Z");
            assert_eq!(fields.dns_names, ["payload.test"]);
            assert_eq!(
                fields.addresses,
                ["203.0.113.9".parse::<std::net::IpAddr>().expect("ip")]
            );
        }
    }

    #[test]
    fn attribute_types_that_are_no_valid_oid_are_left_out() {
        let attribute = |oid: &str| Attribute {
            oid: oid.to_owned(),
            tag: 0x0c,
            value: "x".to_owned(),
        };
        let attributes = [
            attribute("6.2.1"),
            attribute("1.77"),
            attribute("5"),
            attribute(""),
            attribute("2.5.4.3"),
        ];
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&attributes);
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("encodable");
        let summary = CertSummary::of(cert.der()).expect("summary");
        assert_eq!(summary.subject, "CN=x");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(
            mirror(b"", "a.test", None),
            Err(MirrorError::Der(_))
        ));
        let der = original(true);
        for cut in (0..der.len()).step_by(7) {
            let _ = mirror(&der[..cut], "a.test", None);
        }
    }
}
