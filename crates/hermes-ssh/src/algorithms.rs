//! The persona's algorithm lists as russh takes them, in the persona's order.

use std::borrow::Cow;
use std::str::FromStr;

use russh::keys::Algorithm;
use russh::{Preferred, cipher, compression, kex, mac};

/// Lists to offer, by name (validated against the names this transport implements).
#[derive(Debug, Clone, Default)]
pub struct AlgorithmNames {
    /// Key exchange.
    pub kex: Vec<String>,
    /// Host key algorithms.
    pub host_key: Vec<String>,
    /// Ciphers.
    pub ciphers: Vec<String>,
    /// MACs.
    pub macs: Vec<String>,
    /// Compression.
    pub compression: Vec<String>,
}

/// What the server offers, and any names that had no russh counterpart.
#[derive(Debug, Clone)]
pub struct Offer {
    /// The lists handed to russh.
    pub preferred: Preferred,
    /// Names left out (empty when the configuration was validated).
    pub unsupported: Vec<String>,
}

pub(crate) fn kex_name(name: &str) -> Option<kex::Name> {
    [
        kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
        kex::EXTENSION_SUPPORT_AS_SERVER,
    ]
    .into_iter()
    .find(|n| n.as_ref() == name)
    .or_else(|| kex::Name::try_from(name).ok())
}

pub(crate) fn cipher_name(name: &str) -> Option<cipher::Name> {
    cipher::ALL_CIPHERS
        .iter()
        .find(|n| n.as_ref() == name)
        .map(|n| **n)
}

pub(crate) fn mac_name(name: &str) -> Option<mac::Name> {
    mac::ALL_MAC_ALGORITHMS
        .iter()
        .find(|n| n.as_ref() == name)
        .map(|n| **n)
}

pub(crate) fn compression_name(name: &str) -> Option<compression::Name> {
    compression::ALL_COMPRESSION_ALGORITHMS
        .iter()
        .find(|n| n.as_ref() == name)
        .map(|n| **n)
}

pub(crate) fn key_algorithm(name: &str) -> Option<Algorithm> {
    Algorithm::from_str(name).ok()
}

fn pick<T>(names: &[String], map: fn(&str) -> Option<T>, unsupported: &mut Vec<String>) -> Vec<T> {
    names
        .iter()
        .filter_map(|name| {
            let mapped = map(name);
            if mapped.is_none() {
                unsupported.push(name.clone());
            }
            mapped
        })
        .collect()
}

/// Builds russh's lists from names.
pub fn build_offer(names: &AlgorithmNames) -> Offer {
    let mut unsupported = Vec::new();
    let preferred = Preferred {
        kex: Cow::Owned(pick(&names.kex, kex_name, &mut unsupported)),
        key: Cow::Owned(pick(&names.host_key, key_algorithm, &mut unsupported)),
        host_key_certificates: Cow::Owned(Vec::new()),
        cipher: Cow::Owned(pick(&names.ciphers, cipher_name, &mut unsupported)),
        mac: Cow::Owned(pick(&names.macs, mac_name, &mut unsupported)),
        compression: Cow::Owned(pick(&names.compression, compression_name, &mut unsupported)),
    };
    Offer {
        preferred,
        unsupported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermes_core::persona;

    /// The core validates configurations against its lists of implemented names; each
    /// of those must exist in russh, and russh must not implement Debian names the
    /// core calls unsupported (they would be left out for nothing).
    #[test]
    fn the_cores_supported_lists_match_russh() {
        for name in persona::SUPPORTED_KEX {
            assert!(kex_name(name).is_some(), "kex {name}");
        }
        for name in persona::SUPPORTED_HOST_KEY {
            assert!(key_algorithm(name).is_some(), "host key {name}");
        }
        for name in persona::SUPPORTED_CIPHERS {
            assert!(cipher_name(name).is_some(), "cipher {name}");
        }
        for name in persona::SUPPORTED_MACS {
            assert!(mac_name(name).is_some(), "mac {name}");
        }
        for name in persona::SUPPORTED_COMPRESSION {
            assert!(compression_name(name).is_some(), "compression {name}");
        }
        for name in persona::left_out(persona::KEX, persona::SUPPORTED_KEX) {
            assert!(
                kex_name(name).is_none(),
                "russh implements {name} after all"
            );
        }
        for name in persona::left_out(persona::MACS, persona::SUPPORTED_MACS) {
            assert!(
                mac_name(name).is_none(),
                "russh implements {name} after all"
            );
        }
    }

    #[test]
    fn the_default_persona_offer_keeps_debians_order() {
        let defaults = hermes_core::config::PersonaConfig::default();
        let names = AlgorithmNames {
            kex: defaults.kex_algorithms.clone(),
            host_key: defaults.host_key_algorithms.clone(),
            ciphers: defaults.ciphers.clone(),
            macs: defaults.macs.clone(),
            compression: defaults.compression.clone(),
        };
        let offer = build_offer(&names);
        assert!(offer.unsupported.is_empty());
        let kex: Vec<&str> = offer.preferred.kex.iter().map(|n| n.as_ref()).collect();
        assert_eq!(kex, persona::offered(persona::KEX, persona::SUPPORTED_KEX));
        let macs: Vec<&str> = offer.preferred.mac.iter().map(|n| n.as_ref()).collect();
        assert_eq!(
            macs,
            persona::offered(persona::MACS, persona::SUPPORTED_MACS)
        );
        let keys: Vec<String> = offer.preferred.key.iter().map(|k| k.to_string()).collect();
        assert_eq!(keys, persona::HOST_KEY);
    }
}
