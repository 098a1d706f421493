//! Byte sizes in the configuration: digits and a `k`, `m` or `g` suffix (powers of
//! 1024, either case), the prototype's syntax. Parsed once at load; code reads bytes.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A size in bytes, always a whole number of KiB (the smallest unit the syntax has),
/// so that it prints back in the syntax it was read in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(u64);

impl ByteSize {
    /// `n` KiB (saturating).
    pub const fn kib(n: u64) -> Self {
        Self::units(n, KIB)
    }

    /// `n` MiB (saturating).
    pub const fn mib(n: u64) -> Self {
        Self::units(n, MIB)
    }

    /// `n` GiB (saturating).
    pub const fn gib(n: u64) -> Self {
        Self::units(n, GIB)
    }

    const fn units(n: u64, unit: u64) -> Self {
        let most = u64::MAX / unit;
        Self(if n > most { most } else { n } * unit)
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// The size in bytes as an `i64` (Docker's API type), saturating.
    pub fn bytes_i64(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    /// The size in bytes as a `usize`, saturating.
    pub fn bytes_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    /// Parses `256m`, `1g`, `512K`: digits, then one of k, m, g.
    pub fn parse(text: &str) -> Result<Self, String> {
        let malformed =
            || format!("must be a number with a k, m or g suffix, e.g. `256m`; not {text:?}");
        let Some(unit) = text.chars().last() else {
            return Err(malformed());
        };
        let digits = &text[..text.len() - unit.len_utf8()];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let multiplier = match unit {
            'k' | 'K' => KIB,
            'm' | 'M' => MIB,
            'g' | 'G' => GIB,
            _ => return Err(malformed()),
        };
        digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(multiplier))
            .map(Self)
            .ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    /// The largest unit that divides the size exactly, so that it parses back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (count, suffix) = if self.0.is_multiple_of(GIB) && self.0 > 0 {
            (self.0 / GIB, "g")
        } else if self.0.is_multiple_of(MIB) && self.0 > 0 {
            (self.0 / MIB, "m")
        } else {
            (self.0 / KIB, "k")
        };
        write!(f, "{count}{suffix}")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

struct ByteSizeVisitor;

impl Visitor<'_> for ByteSizeVisitor {
    type Value = ByteSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size such as `256m` (k, m or g suffix)")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<ByteSize, E> {
        ByteSize::parse(text).map_err(E::custom)
    }

    /// A bare number has no unit: refused as the text `256` is.
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<ByteSize, E> {
        self.visit_str(&n.to_string())
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
        self.visit_str(&n.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(ByteSizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_prototype_rule() {
        for (good, bytes) in [
            ("256m", 256 << 20),
            ("1g", 1 << 30),
            ("512k", 512 << 10),
            ("100M", 100 << 20),
            ("2G", 2 << 30),
            ("1024K", 1 << 20),
            ("0k", 0),
        ] {
            assert_eq!(
                ByteSize::parse(good).map(ByteSize::bytes),
                Ok(bytes),
                "{good}"
            );
        }
        for bad in [
            "", "256", "m256", "256mb", "256 m", "-1m", "0.5g", "1t", "1é",
        ] {
            assert!(ByteSize::parse(bad).is_err(), "{bad}");
        }
        assert!(ByteSize::parse("99999999999999999999g").is_err());
        assert!(ByteSize::parse("17179869184g").is_err());
    }

    #[test]
    fn sizes_print_back_in_their_syntax() {
        for (text, shown) in [
            ("256m", "256m"),
            ("1024K", "1m"),
            ("1536k", "1536k"),
            ("2048m", "2g"),
            ("0k", "0k"),
        ] {
            let size = ByteSize::parse(text).expect("parses");
            assert_eq!(size.to_string(), shown);
            assert_eq!(ByteSize::parse(shown), Ok(size));
        }
        assert_eq!(
            ByteSize::parse(&ByteSize::gib(u64::MAX).to_string()),
            Ok(ByteSize::gib(u64::MAX))
        );
    }
}
