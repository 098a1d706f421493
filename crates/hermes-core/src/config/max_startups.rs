//! `server.max_startups`: sshd's MaxStartups, `start:rate:full`, parsed at load.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// sshd's MaxStartups, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxStartups {
    /// Unauthenticated connections accepted before random drops begin.
    pub start: u32,
    /// Drop probability (percent) at `start`.
    pub rate: u32,
    /// Unauthenticated connections at which every new one is dropped.
    pub full: u32,
}

impl Default for MaxStartups {
    fn default() -> Self {
        Self {
            start: 10,
            rate: 30,
            full: 100,
        }
    }
}

impl MaxStartups {
    /// `start:rate:full` (or a single number, meaning `start` = `full`), as sshd parses
    /// it, with 1 <= start <= full and rate <= 100.
    pub fn parse(text: &str) -> Result<Self, String> {
        let malformed = || {
            format!(
                "must be `start:rate:full` with 1 <= start <= full and rate <= 100 (sshd's MaxStartups), e.g. `10:30:100`; not {text:?}"
            )
        };
        let numbers: Vec<u32> = text
            .split(':')
            .map(|part| part.trim().parse::<u32>())
            .collect::<Result<_, _>>()
            .map_err(|_| malformed())?;
        let parsed = match numbers[..] {
            [full] => MaxStartups {
                start: full,
                rate: 100,
                full,
            },
            [start, rate, full] => MaxStartups { start, rate, full },
            _ => return Err(malformed()),
        };
        if parsed.start >= 1 && parsed.start <= parsed.full && parsed.rate <= 100 {
            Ok(parsed)
        } else {
            Err(malformed())
        }
    }
}

impl fmt::Display for MaxStartups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.start, self.rate, self.full)
    }
}

impl Serialize for MaxStartups {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

struct MaxStartupsVisitor;

impl Visitor<'_> for MaxStartupsVisitor {
    type Value = MaxStartups;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`start:rate:full`, e.g. `10:30:100`")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<MaxStartups, E> {
        MaxStartups::parse(text).map_err(E::custom)
    }

    /// A single number (`max_startups: 20`) is sshd's short form.
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<MaxStartups, E> {
        self.visit_str(&n.to_string())
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<MaxStartups, E> {
        self.visit_str(&n.to_string())
    }
}

impl<'de> Deserialize<'de> for MaxStartups {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(MaxStartupsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_startups_like_sshd() {
        assert_eq!(
            MaxStartups::parse("10:30:100"),
            Ok(MaxStartups {
                start: 10,
                rate: 30,
                full: 100
            })
        );
        assert_eq!(
            MaxStartups::parse("20"),
            Ok(MaxStartups {
                start: 20,
                rate: 100,
                full: 20
            })
        );
        for bad in ["", "10:30", "a:b:c", "100:30:10", "10:130:100", "0:30:100"] {
            assert!(MaxStartups::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn max_startups_print_back() {
        for text in ["10:30:100", "20"] {
            let parsed = MaxStartups::parse(text).expect("parses");
            assert_eq!(MaxStartups::parse(&parsed.to_string()), Ok(parsed));
        }
    }
}
