//! Just enough DER to name a certificate in an event (subject, issuer, expiry), to
//! read back our own CA's subject and to mirror an upstream certificate (its names,
//! validity and alternative names): a full X.509 parser would be a heavy dependency
//! for these few fields.

use std::net::IpAddr;

use hermes_core::capture::sha256_hex;

/// Longest text kept of one name attribute (the upstream server chose it).
const MAX_VALUE: usize = 256;
/// Attributes of one name rendered at most (the rest is `...`).
const MAX_ATTRIBUTES: usize = 16;

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const VERSION: u8 = 0xa0;
const EXTENSIONS: u8 = 0xa3;
const OCTET_STRING: u8 = 0x04;
const BOOLEAN: u8 = 0x01;
/// subjectAltName, 2.5.29.17.
const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11];
/// GeneralName's dNSName and iPAddress, context-specific primitive.
const DNS_NAME: u8 = 0x82;
const IP_ADDRESS: u8 = 0x87;
/// Alternative names kept of one certificate.
const MAX_ALT_NAMES: usize = 64;

/// A certificate that is not the DER we can read.
#[derive(Debug, thiserror::Error)]
#[error("malformed certificate: {0}")]
pub struct DerError(&'static str);

/// One attribute of a distinguished name, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Its type, dotted (`2.5.4.3` is the common name).
    pub oid: String,
    /// The DER string tag its value had (UTF8String, PrintableString...).
    pub tag: u8,
    /// Its value, lossily decoded and bounded.
    pub value: String,
}

/// What an event says about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The subject, `CN=..., O=...` in the order written.
    pub subject: String,
    /// The issuer, likewise.
    pub issuer: String,
    /// SHA-256 of the DER, lower-case hex.
    pub sha256: String,
    /// The end of validity, `YYYY-MM-DDTHH:MM:SSZ`.
    pub not_after: String,
}

impl CertSummary {
    /// Summarizes a DER certificate.
    pub fn of(der: &[u8]) -> Result<CertSummary, DerError> {
        let fields = TbsFields::of(der)?;
        Ok(CertSummary {
            subject: render(&name(fields.subject)?),
            issuer: render(&name(fields.issuer)?),
            sha256: sha256_hex(der),
            not_after: time(fields.not_after)?,
        })
    }
}

/// What a mirror of a certificate copies: its names, validity and alternative names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorFields {
    /// The subject, attribute by attribute.
    pub subject: Vec<Attribute>,
    /// The issuer, likewise.
    pub issuer: Vec<Attribute>,
    /// Whether the issuer is the subject, byte for byte (self-signed, or so it says).
    pub self_issued: bool,
    /// The start of validity, `YYYY-MM-DDTHH:MM:SSZ`.
    pub not_before: String,
    /// The end of validity, likewise.
    pub not_after: String,
    /// The DNS names of its subjectAltName (the first [`MAX_ALT_NAMES`]).
    pub dns_names: Vec<String>,
    /// The addresses of its subjectAltName, likewise bounded.
    pub addresses: Vec<IpAddr>,
}

impl MirrorFields {
    /// Reads them from a DER certificate.
    pub fn of(der: &[u8]) -> Result<MirrorFields, DerError> {
        let fields = TbsFields::of(der)?;
        let mut mirror = MirrorFields {
            subject: name(fields.subject)?,
            issuer: name(fields.issuer)?,
            self_issued: fields.subject == fields.issuer,
            not_before: time(fields.not_before)?,
            not_after: time(fields.not_after)?,
            dns_names: Vec::new(),
            addresses: Vec::new(),
        };
        if let Some(san) = extension(fields.after_subject, SAN_OID)? {
            let (mut names, _) = expect(san, SEQUENCE, "subjectAltName")?;
            while !names.is_empty()
                && mirror.dns_names.len() + mirror.addresses.len() < MAX_ALT_NAMES
            {
                let (tag, value, rest) = tlv(names)?;
                names = rest;
                match tag {
                    DNS_NAME => mirror.dns_names.push(text(0x16, value)),
                    IP_ADDRESS => match value.len() {
                        4 => mirror.addresses.push(IpAddr::from(
                            <[u8; 4]>::try_from(value).map_err(|_| DerError("address"))?,
                        )),
                        16 => mirror.addresses.push(IpAddr::from(
                            <[u8; 16]>::try_from(value).map_err(|_| DerError("address"))?,
                        )),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        Ok(mirror)
    }
}

/// The value (the OCTET STRING's content) of the extension `oid`, if the
/// certificate has it; `after_subject` is what follows the subject in the TBS.
fn extension<'a>(after_subject: &'a [u8], oid: &[u8]) -> Result<Option<&'a [u8]>, DerError> {
    // subjectPublicKeyInfo, then the optional unique ids, then [3] extensions.
    let (_, mut rest) = expect(after_subject, SEQUENCE, "subjectPublicKeyInfo")?;
    while !rest.is_empty() {
        let (tag, content, after) = tlv(rest)?;
        rest = after;
        if tag != EXTENSIONS {
            continue;
        }
        let (mut list, _) = expect(content, SEQUENCE, "extensions")?;
        while !list.is_empty() {
            let (extension, after) = expect(list, SEQUENCE, "extension")?;
            list = after;
            let (id, mut value) = expect(extension, OID, "extension")?;
            if let Ok((_, after)) = expect(value, BOOLEAN, "critical") {
                value = after;
            }
            if id == oid {
                return Ok(Some(expect(value, OCTET_STRING, "extension value")?.0));
            }
        }
    }
    Ok(None)
}

/// The subject of a DER certificate, attribute by attribute.
pub fn subject(der: &[u8]) -> Result<Vec<Attribute>, DerError> {
    name(TbsFields::of(der)?.subject)
}

/// String types OpenSSL canonicalizes before hashing a name.
const CANON_TAGS: &[u8] = &[0x0c, 0x13, 0x14, 0x16, 0x1a, 0x1c, 0x1e];

/// OpenSSL's subject hash (`openssl x509 -hash`), the name a CA is linked under in
/// /etc/ssl/certs (`<hash>.0`) for OpenSSL's directory lookup: SHA-1 of the subject
/// with every string value lower-cased, its white space collapsed, re-encoded as
/// UTF8String, without the outer SEQUENCE.
pub fn openssl_subject_hash(der: &[u8]) -> Result<String, DerError> {
    let (mut sets, _) = expect(TbsFields::of(der)?.subject, SEQUENCE, "name")?;
    let mut canon = Vec::new();
    while !sets.is_empty() {
        let (mut set, rest) = expect(sets, SET, "name")?;
        sets = rest;
        let mut pairs = Vec::new();
        while !set.is_empty() {
            let (pair, rest) = expect(set, SEQUENCE, "name")?;
            set = rest;
            let (oid, value) = split_tlv(pair, OID, "name")?;
            let (tag, content, _) = tlv(value)?;
            let mut encoded = oid.to_vec();
            if CANON_TAGS.contains(&tag) {
                encoded.extend(encode(0x0c, canonical(&decode(tag, content)).as_bytes()));
            } else {
                encoded.extend_from_slice(value);
            }
            pairs.push(encode(SEQUENCE, &encoded));
        }
        pairs.sort();
        canon.extend(encode(SET, &pairs.concat()));
    }
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &canon);
    let bytes = digest.as_ref();
    let hash = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    Ok(format!("{hash:08x}"))
}

/// Lower-cased ASCII, no white space at the ends, runs of it one space.
fn canonical(text: &str) -> String {
    let space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r');
    let mut out = String::with_capacity(text.len());
    let mut in_space = false;
    for c in text.trim_matches(space).chars() {
        if space(c) {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c.to_ascii_lowercase());
            in_space = false;
        }
    }
    out
}

/// A DER TLV.
fn encode(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let length = content.len();
    if length < 0x80 {
        out.push(length as u8);
    } else {
        let bytes: Vec<u8> = length
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// The parts of `tbsCertificate` we read: each a whole TLV.
struct TbsFields<'a> {
    issuer: &'a [u8],
    not_before: (u8, &'a [u8]),
    not_after: (u8, &'a [u8]),
    subject: &'a [u8],
    /// What follows the subject: the key, any extensions.
    after_subject: &'a [u8],
}

impl<'a> TbsFields<'a> {
    fn of(der: &'a [u8]) -> Result<TbsFields<'a>, DerError> {
        let (certificate, _) = expect(der, SEQUENCE, "certificate")?;
        let (tbs, _) = expect(certificate, SEQUENCE, "tbsCertificate")?;
        let (tag, _, mut rest) = tlv(tbs)?;
        if tag == VERSION {
            // The serial follows the explicit version.
            rest = tlv(rest)?.2;
        }
        let rest = expect(rest, SEQUENCE, "signature")?.1;
        let (issuer, rest) = split_tlv(rest, SEQUENCE, "issuer")?;
        let (validity, rest) = expect(rest, SEQUENCE, "validity")?;
        let (before_tag, not_before, after) = tlv(validity)?;
        let (tag, not_after, _) = tlv(after)?;
        let (subject, after_subject) = split_tlv(rest, SEQUENCE, "subject")?;
        Ok(TbsFields {
            issuer,
            not_before: (before_tag, not_before),
            not_after: (tag, not_after),
            subject,
            after_subject,
        })
    }
}

/// One TLV: its tag, its content, what follows it.
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), DerError> {
    let (&tag, rest) = input.split_first().ok_or(DerError("truncated"))?;
    let (&first, mut rest) = rest.split_first().ok_or(DerError("truncated"))?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return Err(DerError("bad length"));
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |length, &byte| (length << 8) | usize::from(byte))
    };
    if rest.len() < length {
        return Err(DerError("truncated"));
    }
    let (content, after) = rest.split_at(length);
    Ok((tag, content, after))
}

/// A TLV that must have `tag`: its content and what follows.
fn expect<'a>(
    input: &'a [u8],
    tag: u8,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), DerError> {
    match tlv(input)? {
        (found, content, rest) if found == tag => Ok((content, rest)),
        _ => Err(DerError(what)),
    }
}

/// A TLV that must have `tag`, whole (tag and length included), and what follows.
fn split_tlv<'a>(
    input: &'a [u8],
    tag: u8,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), DerError> {
    let (_, rest) = expect(input, tag, what)?;
    Ok((&input[..input.len() - rest.len()], rest))
}

/// The attributes of a Name (a whole SEQUENCE TLV).
fn name(whole: &[u8]) -> Result<Vec<Attribute>, DerError> {
    let (mut sets, _) = expect(whole, SEQUENCE, "name")?;
    let mut attributes = Vec::new();
    while !sets.is_empty() {
        let (mut set, rest) = expect(sets, SET, "name")?;
        sets = rest;
        while !set.is_empty() {
            let (pair, rest) = expect(set, SEQUENCE, "name")?;
            set = rest;
            let (oid, value) = expect(pair, OID, "name")?;
            let (tag, value, _) = tlv(value)?;
            attributes.push(Attribute {
                oid: dotted(oid)?,
                tag,
                value: text(tag, value),
            });
        }
    }
    Ok(attributes)
}

/// `CN=a, O=b` in the order written, the first [`MAX_ATTRIBUTES`] of them.
fn render(attributes: &[Attribute]) -> String {
    let mut parts: Vec<String> = attributes
        .iter()
        .take(MAX_ATTRIBUTES)
        .map(|attribute| {
            let short = match attribute.oid.as_str() {
                "2.5.4.3" => "CN",
                "2.5.4.6" => "C",
                "2.5.4.7" => "L",
                "2.5.4.8" => "ST",
                "2.5.4.10" => "O",
                "2.5.4.11" => "OU",
                "2.5.4.5" => "serialNumber",
                "1.2.840.113549.1.9.1" => "emailAddress",
                other => other,
            };
            format!("{short}={}", attribute.value)
        })
        .collect();
    if attributes.len() > MAX_ATTRIBUTES {
        parts.push("...".to_owned());
    }
    parts.join(", ")
}

fn dotted(oid: &[u8]) -> Result<String, DerError> {
    let (&first, rest) = oid.split_first().ok_or(DerError("empty oid"))?;
    let mut parts = vec![u64::from(first / 40), u64::from(first % 40)];
    let mut value = 0u64;
    for &byte in rest {
        if value > u64::MAX >> 7 {
            return Err(DerError("oid too long"));
        }
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            parts.push(value);
            value = 0;
        }
    }
    Ok(parts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("."))
}

/// A string value, whatever its type, bounded.
fn text(tag: u8, value: &[u8]) -> String {
    decode(tag, value).chars().take(MAX_VALUE).collect()
}

/// A string value, whatever its type.
fn decode(tag: u8, value: &[u8]) -> String {
    match tag {
        // BMPString: UCS-2, big-endian.
        0x1e => char::decode_utf16(
            value
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]])),
        )
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect(),
        // UniversalString: UCS-4, big-endian.
        0x1c => value
            .chunks_exact(4)
            .map(|b| {
                char::from_u32(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
        // TeletexString: taken as Latin-1, as OpenSSL does.
        0x14 => value.iter().map(|&b| char::from(b)).collect(),
        _ => String::from_utf8_lossy(value).into_owned(),
    }
}

/// A UTCTime or GeneralizedTime as `YYYY-MM-DDTHH:MM:SSZ`.
fn time((tag, value): (u8, &[u8])) -> Result<String, DerError> {
    if !value.is_ascii() {
        return Err(DerError("time"));
    }
    let digits = std::str::from_utf8(value).map_err(|_| DerError("time"))?;
    let full = match tag {
        UTC_TIME if digits.len() == 13 => {
            let year: u32 = digits[..2].parse().map_err(|_| DerError("time"))?;
            let century = if year < 50 { "20" } else { "19" };
            format!("{century}{digits}")
        }
        GENERALIZED_TIME if digits.len() == 15 => digits.to_owned(),
        _ => return Err(DerError("time")),
    };
    if !full[..14].bytes().all(|b| b.is_ascii_digit()) || !full.ends_with('Z') {
        return Err(DerError("time"));
    }
    Ok(format!(
        "{}-{}-{}T{}:{}:{}Z",
        &full[..4],
        &full[4..6],
        &full[6..8],
        &full[8..10],
        &full[10..12],
        &full[12..14]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_is_summarized() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["dropper.test".to_owned()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CountryName,
            rcgen::DnValue::PrintableString("NL".try_into().expect("printable")),
        );
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example Ltd");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "dropper.test");
        params.not_after = rcgen::date_time_ymd(2031, 7, 9);
        let cert = params.self_signed(&key).expect("cert");
        let summary = CertSummary::of(cert.der()).expect("summary");
        assert_eq!(summary.subject, "C=NL, O=Example Ltd, CN=dropper.test");
        assert_eq!(summary.issuer, summary.subject);
        assert_eq!(summary.not_after, "2031-07-09T00:00:00Z");
        assert_eq!(summary.sha256, sha256_hex(cert.der()));
        let attributes = subject(cert.der()).expect("subject");
        assert_eq!(attributes[0].tag, 0x13);
        assert_eq!(attributes[2].tag, 0x0c);
    }

    #[test]
    fn a_name_of_many_long_attributes_is_bounded() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for n in 0..40u64 {
            params.distinguished_name.push(
                rcgen::DnType::CustomDnType(vec![1, 3, 6, 1, 4, 1, n]),
                "x".repeat(1000),
            );
        }
        let cert = params.self_signed(&key).expect("cert");
        let summary = CertSummary::of(cert.der()).expect("summary");
        assert!(
            summary.subject.len() < MAX_ATTRIBUTES * (MAX_VALUE + 32),
            "{}",
            summary.subject.len()
        );
        assert!(summary.subject.ends_with(", ..."));
    }

    #[test]
    fn garbage_and_truncations_are_errors_not_panics() {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        let der = cert.der().to_vec();
        for cut in 0..der.len() {
            let _ = CertSummary::of(&der[..cut]);
        }
        for flip in 0..der.len().min(200) {
            let mut bad = der.clone();
            bad[flip] ^= 0xff;
            let _ = CertSummary::of(&bad);
        }
        assert!(CertSummary::of(b"").is_err());
        assert!(CertSummary::of(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn the_subject_hash_is_openssls() {
        let Ok(_) = std::process::Command::new("openssl")
            .arg("version")
            .output()
        else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "openssl missing"
            );
            return;
        };
        let dir = tempfile::tempdir().expect("dir");
        for (organization, common_name) in [
            ("Northwave Hosting Ltd", "Northwave Hosting Internal CA G2"),
            ("  Mixed CASE\t  and   spaces ", "Ünïcode Root — 2"),
        ] {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::default();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.distinguished_name.push(
                rcgen::DnType::CountryName,
                rcgen::DnValue::PrintableString("NL".try_into().expect("printable")),
            );
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, organization);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, common_name);
            let cert = params.self_signed(&key).expect("cert");
            let file = dir.path().join("ca.pem");
            std::fs::write(&file, cert.pem()).expect("write");
            let out = std::process::Command::new("openssl")
                .args(["x509", "-noout", "-hash", "-in"])
                .arg(&file)
                .output()
                .expect("openssl");
            let expected = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            assert_eq!(expected.len(), 8, "{out:?}");
            assert_eq!(openssl_subject_hash(cert.der()).expect("hash"), expected);
        }
    }

    #[test]
    fn utc_times_before_1950_wrap_to_the_21st_century() {
        assert_eq!(
            time((UTC_TIME, b"490101000000Z")).expect("time"),
            "2049-01-01T00:00:00Z"
        );
        assert_eq!(
            time((UTC_TIME, b"991231235959Z")).expect("time"),
            "1999-12-31T23:59:59Z"
        );
        assert!(time((UTC_TIME, b"9912312359Z")).is_err());
    }
}
