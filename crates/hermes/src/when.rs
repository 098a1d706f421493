//! UTC instants for the archive commands: parsing the metadata's ISO 8601 timestamps and
//! the `--since`/`--until` arguments, and printing table times.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hermes_core::time::iso8601_micros;

const MICROS_PER_SEC: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SEC;

/// What `--since`/`--until` accept, for error messages.
pub const TIME_FORMS: &str =
    "expected RFC 3339 (2026-11-23T15:00:00Z), a date (2026-11-23) or an age (30m, 2h, 7d)";

/// A UTC instant: microseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcTime(i64);

impl UtcTime {
    /// The current time.
    pub fn now() -> Self {
        let micros = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_micros()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_micros()).unwrap_or(i64::MAX),
        };
        Self(micros)
    }

    /// Days since the epoch of the UTC date this instant falls on.
    pub fn day(self) -> i64 {
        self.0.div_euclid(MICROS_PER_DAY)
    }

    /// Seconds from `earlier` to `self` (negative when `earlier` is later).
    pub fn seconds_since(self, earlier: UtcTime) -> f64 {
        (self.0 as f64 - earlier.0 as f64) / MICROS_PER_SEC as f64
    }

    /// `YYYY-MM-DD HH:MM:SS`, as the session table shows it.
    pub fn table_format(self) -> String {
        let iso = iso8601_micros(self.to_system_time());
        // iso8601_micros always yields `YYYY-MM-DDTHH:MM:SS.ffffffZ` (ASCII).
        match (iso.get(..10), iso.get(11..19)) {
            (Some(date), Some(time)) => format!("{date} {time}"),
            _ => iso,
        }
    }

    fn to_system_time(self) -> SystemTime {
        u64::try_from(self.0)
            .map(|micros| UNIX_EPOCH + Duration::from_micros(micros))
            .unwrap_or(UNIX_EPOCH)
    }

    /// Parses an RFC 3339 timestamp (`2026-11-23T15:04:05.123456Z`, `...+02:00`). The
    /// offset may be left out (UTC), the separator may be a space and the fraction has
    /// any number of digits (kept to the microsecond).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if !text.is_ascii() || bytes.len() < 19 {
            return None;
        }
        let days = parse_date_days(&bytes[..10])?;
        if !matches!(bytes[10], b'T' | b't' | b' ') || bytes[13] != b':' || bytes[16] != b':' {
            return None;
        }
        let hour = number(&bytes[11..13]).filter(|h| *h < 24)?;
        let minute = number(&bytes[14..16]).filter(|m| *m < 60)?;
        let second = number(&bytes[17..19]).filter(|s| *s <= 60)?;
        let mut rest = &bytes[19..];
        let mut micros = 0i64;
        if let Some(fraction) = rest.strip_prefix(b".") {
            let digits = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 {
                return None;
            }
            for place in 0..6 {
                let digit = fraction.get(place).filter(|_| place < digits);
                micros = micros * 10 + digit.map_or(0, |d| i64::from(d - b'0'));
            }
            rest = &fraction[digits..];
        }
        let offset_minutes = match rest {
            b"" | b"Z" | b"z" => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let hours = number(&[*h1, *h2]).filter(|h| *h < 24)?;
                let minutes = number(&[*m1, *m2]).filter(|m| *m < 60)?;
                let total = hours * 60 + minutes;
                if *sign == b'-' { -total } else { total }
            }
            _ => return None,
        };
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
        Some(Self(seconds * MICROS_PER_SEC + micros))
    }

    /// Parses a date (`2026-11-23`) as its midnight UTC.
    pub fn parse_date(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        (bytes.len() == 10)
            .then(|| parse_date_days(bytes))
            .flatten()
            .map(|days| Self(days * MICROS_PER_DAY))
    }
}

/// Parses a `--since`/`--until` value: RFC 3339, a date, or an age before now.
pub fn parse_time_arg(text: &str) -> Result<UtcTime, String> {
    parse_time_arg_at(text, UtcTime::now())
}

/// [`parse_time_arg`] with ages counted back from `now`.
pub fn parse_time_arg_at(text: &str, now: UtcTime) -> Result<UtcTime, String> {
    let text = text.trim();
    if let Some(time) = UtcTime::parse_date(text).or_else(|| UtcTime::parse_rfc3339(text)) {
        return Ok(time);
    }
    parse_age(text)
        .and_then(|age| now.0.checked_sub(age))
        .map(UtcTime)
        .ok_or_else(|| TIME_FORMS.to_owned())
}

/// `30s`, `30m`, `2h`, `7d`, `2w` as microseconds.
fn parse_age(text: &str) -> Option<i64> {
    let unit = match text.chars().last()? {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return None,
    };
    let count = &text[..text.len() - 1];
    if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    count
        .parse::<i64>()
        .ok()?
        .checked_mul(unit)?
        .checked_mul(MICROS_PER_SEC)
}

/// `YYYY-MM-DD` (exactly ten bytes) to days since the epoch, checking the calendar.
fn parse_date_days(bytes: &[u8]) -> Option<i64> {
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let year = number(&bytes[..4])?;
    let month = number(&bytes[5..7]).filter(|m| (1..=12).contains(m))?;
    let day = number(&bytes[8..10]).filter(|d| *d >= 1 && *d <= days_in_month(year, month))?;
    Some(days_from_civil(year, month, day))
}

/// A run of ASCII digits as a number.
fn number(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || bytes.len() > 9 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        bytes
            .iter()
            .fold(0i64, |acc, b| acc * 10 + i64::from(b - b'0')),
    )
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Proleptic Gregorian date to days since 1970-01-01 (Howard Hinnant's
/// `days_from_civil`, the inverse of the one in `hermes_core::time`).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> UtcTime {
        UtcTime::parse_rfc3339(text).expect("parses")
    }

    #[test]
    fn rfc3339_round_trips_through_core_formatting() {
        let t = at("2026-11-23T15:04:05.123456Z");
        assert_eq!(
            iso8601_micros(t.to_system_time()),
            "2026-11-23T15:04:05.123456Z"
        );
        assert_eq!(t.table_format(), "2026-11-23 15:04:05");
        assert_eq!(
            at("2024-02-29T23:59:59Z").table_format(),
            "2024-02-29 23:59:59"
        );
        assert_eq!(at("1970-01-01T00:00:00Z").0, 0);
    }

    #[test]
    fn rfc3339_variants() {
        let utc = at("2026-11-23T15:00:00Z");
        assert_eq!(at("2026-11-23T17:00:00+02:00"), utc);
        assert_eq!(at("2026-11-23T10:30:00-04:30"), utc);
        assert_eq!(at("2026-11-23 15:00:00"), utc);
        assert_eq!(at("2026-11-23t15:00:00z"), utc);
        assert_eq!(at("2026-11-23T15:00:00.5Z").0 - utc.0, 500_000);
        assert_eq!(at("2026-11-23T15:00:00.123456789Z").0 - utc.0, 123_456);
    }

    #[test]
    fn rfc3339_rejects_garbage() {
        for bad in [
            "",
            "2026-11-23",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T15:00:00.Z",
            "2026-11-23T15:00:00+2",
            "2026-11-23T15:00:00Zjunk",
            "2026-11-23T15:00:0é",
            "２０２６-11-23T15:00:00Z",
        ] {
            assert_eq!(UtcTime::parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn dates_are_midnight_utc() {
        assert_eq!(
            UtcTime::parse_date("2026-11-23"),
            Some(at("2026-11-23T00:00:00Z"))
        );
        assert_eq!(UtcTime::parse_date("2023-02-29"), None);
        assert_eq!(UtcTime::parse_date("2026-1-23"), None);
        assert_eq!(
            at("2026-11-23T23:59:59Z").day(),
            days_from_civil(2026, 11, 23)
        );
        assert_eq!(UtcTime(-1).day(), -1);
    }

    #[test]
    fn time_arguments_in_all_three_forms() {
        let now = at("2026-11-23T15:00:00Z");
        assert_eq!(
            parse_time_arg_at("2026-11-23T14:00:00Z", now),
            Ok(at("2026-11-23T14:00:00Z"))
        );
        assert_eq!(
            parse_time_arg_at("2026-11-22", now),
            Ok(at("2026-11-22T00:00:00Z"))
        );
        assert_eq!(
            parse_time_arg_at("30m", now),
            Ok(at("2026-11-23T14:30:00Z"))
        );
        assert_eq!(parse_time_arg_at("2h", now), Ok(at("2026-11-23T13:00:00Z")));
        assert_eq!(parse_time_arg_at("7d", now), Ok(at("2026-11-16T15:00:00Z")));
        assert_eq!(parse_time_arg_at("1w", now), Ok(at("2026-11-16T15:00:00Z")));
        assert_eq!(
            parse_time_arg_at("45s", now),
            Ok(at("2026-11-23T14:59:15Z"))
        );
        for bad in [
            "yesterday",
            "m",
            "-2h",
            "2.5h",
            "2 h",
            "99999999999999999999d",
            "7y",
        ] {
            assert_eq!(
                parse_time_arg_at(bad, now),
                Err(TIME_FORMS.to_owned()),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }
}
