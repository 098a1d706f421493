//! Which stopped containers the retention rules remove: those past the age limit, and
//! then the oldest until both the count and the disk cap hold.

use std::time::Duration;

/// A stopped container as the sweep sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stopped {
    pub(crate) id: String,
    /// Creation time, Unix seconds.
    pub(crate) created: i64,
    /// When it stopped (Unix nanoseconds), when known: "oldest" for the caps means
    /// the one that stopped first, i.e. served its attacker longest ago.
    pub(crate) finished: Option<i128>,
    /// Writable layer size in bytes.
    pub(crate) size: u64,
}

impl Stopped {
    fn order(&self) -> i128 {
        self.finished
            .unwrap_or(i128::from(self.created) * 1_000_000_000)
    }
}

/// The rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rules {
    /// Remove when older than this; None keeps them regardless of age.
    pub(crate) max_age: Option<Duration>,
    /// Keep at most this many.
    pub(crate) max_count: usize,
    /// Keep at most this many bytes of writable layers.
    pub(crate) max_bytes: u64,
}

/// Why a container is removed (the `reason` of `hermes.container.remove`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Age,
    Count,
    Disk,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Age => "retention_age",
            Reason::Count => "retention_count",
            Reason::Disk => "retention_disk",
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Reason::Age => "older than cleanup_stopped_after_days",
            Reason::Count => "more stopped containers than max_stopped_containers",
            Reason::Disk => "stopped containers over max_stopped_disk",
        }
    }
}

fn too_old(container: &Stopped, now: i64, rules: Rules) -> bool {
    rules
        .max_age
        .is_some_and(|age| now.saturating_sub(container.created) >= age.as_secs() as i64)
}

/// Whether the caps will remove some of what the age rule keeps (then stop times are
/// worth fetching to order them).
pub(crate) fn caps_exceeded(stopped: &[Stopped], now: i64, rules: Rules) -> bool {
    let kept: Vec<&Stopped> = stopped.iter().filter(|s| !too_old(s, now, rules)).collect();
    kept.len() > rules.max_count || kept.iter().map(|s| s.size).sum::<u64>() > rules.max_bytes
}

/// The containers to remove, oldest first, each with its reason.
pub(crate) fn choose(mut stopped: Vec<Stopped>, now: i64, rules: Rules) -> Vec<(String, Reason)> {
    stopped.sort_by_key(Stopped::order);
    let mut removals = Vec::new();
    let mut kept: Vec<Stopped> = Vec::with_capacity(stopped.len());
    for container in stopped {
        if too_old(&container, now, rules) {
            removals.push((container.id, Reason::Age));
        } else {
            kept.push(container);
        }
    }
    let mut count = kept.len();
    let mut bytes: u64 = kept.iter().map(|s| s.size).sum();
    for container in kept {
        if count > rules.max_count {
            removals.push((container.id, Reason::Count));
        } else if bytes > rules.max_bytes {
            removals.push((container.id, Reason::Disk));
        } else {
            break;
        }
        count -= 1;
        bytes = bytes.saturating_sub(container.size);
    }
    removals
}

/// Parses Docker's RFC 3339 UTC times (`2026-11-23T08:49:38.819268878Z`) into Unix
/// nanoseconds.
pub(crate) fn parse_time(text: &str) -> Option<i128> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date_parts = date.split('-').map(|p| p.parse::<i64>());
    let (year, month, day) = (
        date_parts.next()?.ok()?,
        date_parts.next()?.ok()?,
        date_parts.next()?.ok()?,
    );
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock_parts = clock.split(':').map(|p| p.parse::<i64>());
    let (hour, minute, second) = (
        clock_parts.next()?.ok()?,
        clock_parts.next()?.ok()?,
        clock_parts.next()?.ok()?,
    );
    let digits: String = fraction.chars().take(9).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let nanos: i128 = format!("{digits:0<9}").parse().ok()?;
    // Days from the civil date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(i128::from(seconds) * 1_000_000_000 + nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopped(id: &str, created: i64, size: u64) -> Stopped {
        Stopped {
            id: id.to_owned(),
            created,
            finished: None,
            size,
        }
    }

    #[test]
    fn stop_times_order_containers_created_in_the_same_second() {
        let mut a = stopped("stopped-last", 100, 1);
        a.finished = parse_time("2026-11-23T08:49:38.9Z");
        let mut b = stopped("stopped-first", 100, 1);
        b.finished = parse_time("2026-11-23T08:49:38.81926Z");
        let rules = Rules {
            max_age: None,
            max_count: 1,
            max_bytes: u64::MAX,
        };
        assert!(caps_exceeded(&[a.clone(), b.clone()], 200, rules));
        assert_eq!(
            choose(vec![a, b], 200, rules),
            vec![("stopped-first".into(), Reason::Count)]
        );
    }

    #[test]
    fn docker_times_parse() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Some(1_000_000_000));
        assert_eq!(
            parse_time("2026-11-23T08:49:38.819268878Z"),
            Some(1_795_423_778_819_268_878)
        );
        assert_eq!(
            parse_time("2026-11-23T08:49:38.8Z"),
            Some(1_795_423_778_800_000_000)
        );
        assert_eq!(
            parse_time("0001-01-01T00:00:00Z").map(|t| t < 0),
            Some(true)
        );
        assert_eq!(parse_time("garbage"), None);
    }

    fn rules(max_count: usize, max_bytes: u64) -> Rules {
        Rules {
            max_age: Some(Duration::from_secs(1000)),
            max_count,
            max_bytes,
        }
    }

    #[test]
    fn age_then_count_then_disk_oldest_first() {
        let now = 10_000;
        let all = vec![
            stopped("new", 9_900, 10),
            stopped("ancient", 1, 10),
            stopped("old", 9_500, 10),
            stopped("older", 9_200, 500),
        ];
        assert_eq!(
            choose(all.clone(), now, rules(10, 10_000)),
            vec![("ancient".into(), Reason::Age)]
        );
        assert_eq!(
            choose(all.clone(), now, rules(1, 10_000)),
            vec![
                ("ancient".into(), Reason::Age),
                ("older".into(), Reason::Count),
                ("old".into(), Reason::Count)
            ]
        );
        assert_eq!(
            choose(all.clone(), now, rules(10, 100)),
            vec![
                ("ancient".into(), Reason::Age),
                ("older".into(), Reason::Disk)
            ]
        );
        let no_age = Rules {
            max_age: None,
            ..rules(10, 10_000)
        };
        assert!(choose(all, now, no_age).is_empty());
    }
}
