//! UTC timestamps in the one format events and metadata use:
//! ISO 8601 with microseconds and `Z`, e.g. `2026-06-23T14:15:26.253618Z`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Formats `time` as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC). Times before 1970 print as the
/// epoch: no clock Hermes runs on reports them.
pub fn iso8601_micros(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let micros = since.subsec_micros();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// The current time, formatted by [`iso8601_micros`].
pub fn now_iso8601() -> String {
    iso8601_micros(SystemTime::now())
}

/// Seconds since the epoch as a float, as asciicast headers and metadata carry them.
pub fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); Howard Hinnant's
/// `civil_from_days`.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(iso8601_micros(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::new(1_782_224_126, 253_618_000);
        assert_eq!(iso8601_micros(t), "2026-06-23T14:15:26.253618Z");
        // 2024-02-29 (leap day) 23:59:59.999999
        let t = UNIX_EPOCH + Duration::new(1_709_251_199, 999_999_000);
        assert_eq!(iso8601_micros(t), "2024-02-29T23:59:59.999999Z");
        let t = UNIX_EPOCH + Duration::new(4_102_444_800, 0);
        assert_eq!(iso8601_micros(t), "2100-01-01T00:00:00.000000Z");
    }
}
