//! Durations in the configuration. Each key has one unit, named in its doc comment and
//! its type: a bare integer counts in that unit (`session_timeout: 3600`, as the files
//! have always said it). A number with a suffix (`500ms`, `90s`, `5m`, `1h`, `2d`) is
//! accepted too when it is a whole number of the key's unit. Code reads a
//! [`std::time::Duration`]; the effective configuration prints the bare integer again.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Reads `text` as a count of `unit_ms` milliseconds: bare digits are that count, a
/// suffixed number is converted and must come out whole.
fn parse(text: &str, unit_ms: u64, unit: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits_end = text
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    let expected = || {
        format!(
            "must be a whole number of {unit}, or a number with a unit (ms, s, m, h, d), e.g. `90s`; not {text:?}"
        )
    };
    let number: u64 = if digits.is_empty() {
        return Err(expected());
    } else {
        digits
            .parse()
            .map_err(|_| format!("{text:?} is too large"))?
    };
    let suffix_ms: u64 = match suffix.trim_start() {
        "" => return Ok(number),
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(expected()),
    };
    let total_ms = number
        .checked_mul(suffix_ms)
        .ok_or_else(|| format!("{text:?} is too large"))?;
    if !total_ms.is_multiple_of(unit_ms) {
        return Err(format!("{text:?} is not a whole number of {unit}"));
    }
    Ok(total_ms / unit_ms)
}

macro_rules! duration_type {
    ($(#[$doc:meta])* $name:ident, $unit_ms:expr, $unit:literal, $visitor:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u64);

        impl $name {
            /// Milliseconds in one unit.
            const UNIT_MS: u64 = $unit_ms;

            /// `count` units; counts past what a `u64` of milliseconds holds saturate.
            pub const fn new(count: u64) -> Self {
                let most = u64::MAX / Self::UNIT_MS;
                Self(if count > most { most } else { count })
            }

            /// The duration.
            pub const fn get(self) -> Duration {
                Duration::from_millis(self.0 * Self::UNIT_MS)
            }

            /// The count in this key's unit, as the file writes it.
            pub const fn count(self) -> u64 {
                self.0
            }

            /// Zero, which several keys use for "off".
            pub const fn is_zero(self) -> bool {
                self.0 == 0
            }

            /// The duration, or None for zero ("off").
            pub fn non_zero(self) -> Option<Duration> {
                (!self.is_zero()).then(|| self.get())
            }

            fn from_count(count: u64) -> Result<Self, String> {
                if count > u64::MAX / Self::UNIT_MS {
                    return Err(format!("{count} {} is too long", $unit));
                }
                Ok(Self(count))
            }
        }

        impl From<$name> for Duration {
            fn from(value: $name) -> Duration {
                value.get()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{} {}", self.0, $unit)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_u64(self.0)
            }
        }

        struct $visitor;

        impl Visitor<'_> for $visitor {
            type Value = $name;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a whole number of {}, or a number with a unit such as `90s`", $unit)
            }

            fn visit_u64<E: de::Error>(self, count: u64) -> Result<$name, E> {
                $name::from_count(count).map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, count: i64) -> Result<$name, E> {
                let count = u64::try_from(count)
                    .map_err(|_| E::custom(format!("must not be negative, not {count}")))?;
                self.visit_u64(count)
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<$name, E> {
                parse(text, $name::UNIT_MS, $unit)
                    .and_then($name::from_count)
                    .map_err(E::custom)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any($visitor)
            }
        }

        /// `#[garde(range(...))]` bounds count in the key's unit.
        impl garde::rules::range::Bounds for $name {
            type Size = u64;
            const MIN: u64 = 0;
            const MAX: u64 = u64::MAX;

            fn validate_bounds(
                &self,
                lower_bound: u64,
                upper_bound: u64,
            ) -> Result<(), garde::rules::range::OutOfBounds> {
                if self.0 < lower_bound {
                    Err(garde::rules::range::OutOfBounds::Lower)
                } else if self.0 > upper_bound {
                    Err(garde::rules::range::OutOfBounds::Upper)
                } else {
                    Ok(())
                }
            }
        }
    };
}

duration_type!(
    /// A duration key counted in milliseconds.
    Millis,
    1,
    "milliseconds",
    MillisVisitor
);
duration_type!(
    /// A duration key counted in seconds.
    Seconds,
    1_000,
    "seconds",
    SecondsVisitor
);
duration_type!(
    /// A duration key counted in days.
    Days,
    86_400_000,
    "days",
    DaysVisitor
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_numbers_count_in_the_keys_unit() {
        assert_eq!(parse("3600", 1_000, "seconds"), Ok(3600));
        assert_eq!(Seconds::new(3600).get(), Duration::from_secs(3600));
        assert_eq!(Millis::new(2000).get(), Duration::from_secs(2));
        assert_eq!(Days::new(7).get(), Duration::from_secs(7 * 86_400));
    }

    #[test]
    fn suffixes_convert_when_whole() {
        assert_eq!(parse("90s", 1_000, "seconds"), Ok(90));
        assert_eq!(parse("5m", 1_000, "seconds"), Ok(300));
        assert_eq!(parse("1h", 1_000, "seconds"), Ok(3600));
        assert_eq!(parse("2d", 1_000, "seconds"), Ok(172_800));
        assert_eq!(parse("2s", 1, "milliseconds"), Ok(2000));
        assert_eq!(parse("1500ms", 1, "milliseconds"), Ok(1500));
        assert_eq!(parse("48h", 86_400_000, "days"), Ok(2));
        assert!(parse("1500ms", 1_000, "seconds").is_err());
        assert!(parse("12h", 86_400_000, "days").is_err());
    }

    #[test]
    fn malformed_durations_are_refused() {
        for bad in [
            "",
            "s",
            "-1",
            "1.5h",
            "10 minutes",
            "1h30m",
            "99999999999999999999999",
        ] {
            assert!(parse(bad, 1_000, "seconds").is_err(), "{bad}");
        }
        assert!(parse("99999999999999999d", 1_000, "seconds").is_err());
        assert!(Days::from_count(u64::MAX).is_err());
    }

    #[test]
    fn zero_means_off_where_a_key_says_so() {
        assert_eq!(Seconds::new(0).non_zero(), None);
        assert_eq!(Seconds::new(3).non_zero(), Some(Duration::from_secs(3)));
    }
}
