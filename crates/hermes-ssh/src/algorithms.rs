//! The persona's algorithm lists, reduced to what russh implements, in the persona's
//! order.

use std::borrow::Cow;
use std::str::FromStr;

use hermes_core::persona;
use russh::keys::Algorithm;
use russh::{Preferred, cipher, compression, kex, mac};

/// What the server offers, and which persona names it had to leave out.
#[derive(Debug, Clone)]
pub struct Offer {
    /// The lists handed to russh.
    pub preferred: Preferred,
    /// Persona names russh does not implement (left out of the offer).
    pub unsupported: Vec<&'static str>,
}

fn kex_name(name: &str) -> Option<kex::Name> {
    if name == kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER.as_ref() {
        return Some(kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER);
    }
    kex::Name::try_from(name).ok()
}

fn cipher_name(name: &str) -> Option<cipher::Name> {
    cipher::ALL_CIPHERS
        .iter()
        .find(|n| n.as_ref() == name)
        .map(|n| **n)
}

fn mac_name(name: &str) -> Option<mac::Name> {
    mac::ALL_MAC_ALGORITHMS
        .iter()
        .find(|n| n.as_ref() == name)
        .map(|n| **n)
}

fn compression_name(name: &str) -> Option<compression::Name> {
    compression::ALL_COMPRESSION_ALGORITHMS
        .iter()
        .find(|n| n.as_ref() == name)
        .map(|n| **n)
}

fn key_algorithm(name: &str) -> Option<Algorithm> {
    Algorithm::from_str(name).ok()
}

fn pick<T>(
    names: &[&'static str],
    map: fn(&str) -> Option<T>,
    unsupported: &mut Vec<&'static str>,
) -> Vec<T> {
    names
        .iter()
        .filter_map(|name| {
            let mapped = map(name);
            if mapped.is_none() {
                unsupported.push(name);
            }
            mapped
        })
        .collect()
}

/// The Debian 12 OpenSSH offer, minus what russh lacks.
pub fn build_offer() -> Offer {
    let mut unsupported = Vec::new();
    let kex = pick(persona::KEX, kex_name, &mut unsupported);
    let key = pick(persona::HOST_KEY, key_algorithm, &mut unsupported);
    let cipher = pick(persona::CIPHERS, cipher_name, &mut unsupported);
    let mac = pick(persona::MACS, mac_name, &mut unsupported);
    let compression = pick(persona::COMPRESSION, compression_name, &mut unsupported);
    Offer {
        preferred: Preferred {
            kex: Cow::Owned(kex),
            key: Cow::Owned(key),
            host_key_certificates: Cow::Owned(Vec::new()),
            cipher: Cow::Owned(cipher),
            mac: Cow::Owned(mac),
            compression: Cow::Owned(compression),
        },
        unsupported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_offer_keeps_order_and_drops_only_what_russh_lacks() {
        let offer = build_offer();
        let kex: Vec<&str> = offer.preferred.kex.iter().map(|n| n.as_ref()).collect();
        assert_eq!(
            kex,
            [
                "curve25519-sha256",
                "curve25519-sha256@libssh.org",
                "ecdh-sha2-nistp256",
                "ecdh-sha2-nistp384",
                "ecdh-sha2-nistp521",
                "diffie-hellman-group-exchange-sha256",
                "diffie-hellman-group16-sha512",
                "diffie-hellman-group18-sha512",
                "diffie-hellman-group14-sha256",
                "kex-strict-s-v00@openssh.com",
            ]
        );
        let macs: Vec<&str> = offer.preferred.mac.iter().map(|n| n.as_ref()).collect();
        assert_eq!(
            macs,
            [
                "hmac-sha2-256-etm@openssh.com",
                "hmac-sha2-512-etm@openssh.com",
                "hmac-sha1-etm@openssh.com",
                "hmac-sha2-256",
                "hmac-sha2-512",
                "hmac-sha1",
            ]
        );
        let ciphers: Vec<&str> = offer.preferred.cipher.iter().map(|n| n.as_ref()).collect();
        assert_eq!(ciphers, persona::CIPHERS);
        let keys: Vec<String> = offer.preferred.key.iter().map(|k| k.to_string()).collect();
        assert_eq!(keys, persona::HOST_KEY);
        let comp: Vec<&str> = offer
            .preferred
            .compression
            .iter()
            .map(|n| n.as_ref())
            .collect();
        assert_eq!(comp, persona::COMPRESSION);
        let mut dropped = offer.unsupported.clone();
        dropped.sort_unstable();
        assert_eq!(
            dropped,
            [
                "sntrup761x25519-sha512",
                "sntrup761x25519-sha512@openssh.com",
                "umac-128-etm@openssh.com",
                "umac-128@openssh.com",
                "umac-64-etm@openssh.com",
                "umac-64@openssh.com",
            ]
        );
    }
}
