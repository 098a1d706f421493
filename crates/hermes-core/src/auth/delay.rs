//! How long a failed attempt takes on Debian's sshd, reproduced.
//!
//! Two mechanisms add up there. PAM (pam_unix) asks for a 2 s failure delay, which
//! Linux-PAM randomises: base × (1 + mean of three draws − ½), so 1 to 3 s, where the
//! draws come from a linear congruential generator seeded with the current second (the
//! generator's quirks shape the distribution, so they are reproduced as they are).
//! Then sshd's `ensure_minimum_time_since` rounds every failure up: a per-user base of
//! 5 ms plus 0-4.3 ms (from a keyed hash of the user name) is doubled until it exceeds
//! the time spent. A password failure thus lands on base·2^k, which for most users is
//! about 2.1-2.3 s or twice that; a "none" or public-key failure takes the base alone.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// sshd's minimum delay per user (MIN_FAIL_DELAY_SECONDS).
const MIN_USER_DELAY: Duration = Duration::from_millis(5);
/// Past this much elapsed time sshd adds nothing (MAX_FAIL_DELAY_SECONDS).
const MAX_ROUNDED: Duration = Duration::from_secs(5);

/// The failure timing of one Hermes instance (its per-user bases are keyed by a
/// secret drawn at start, as sshd's are).
#[derive(Debug, Clone)]
pub struct FailureTiming {
    pam_base: Duration,
    secret: std::collections::hash_map::RandomState,
}

/// What failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedMethod {
    /// A password or keyboard-interactive answer (goes through PAM).
    Password,
    /// `none` or a public key (answered without PAM).
    Other,
}

impl FailureTiming {
    /// `pam_base`: PAM's requested delay; zero turns every delay off.
    pub fn new(pam_base: Duration) -> Self {
        FailureTiming {
            pam_base,
            secret: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The per-user base sshd rounds to (5 ms + up to 4.3 ms).
    pub fn user_base(&self, username: &str) -> Duration {
        let mut hasher = self.secret.build_hasher();
        hasher.write(username.as_bytes());
        let word = hasher.finish() as u32;
        MIN_USER_DELAY + Duration::from_nanos(u64::from(word) / 1000)
    }

    /// Linux-PAM's randomised failure delay for an attempt made at `unix_seconds`.
    pub fn pam_delay_at(&self, unix_seconds: u64) -> Duration {
        if self.pam_base.is_zero() {
            return Duration::ZERO;
        }
        // Three steps of the generator (Numerical Recipes' constants), seeded with the
        // time in seconds truncated to 32 bits, each scaled to [0, 1).
        let mut seed = unix_seconds as u32;
        let mut sum = 0.0;
        for _ in 0..3 {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            sum += f64::from((seed / 10) % 1_000_000);
        }
        let offset = sum / 3.0 / 1e6 - 0.5;
        let micros = (self.pam_base.as_micros() as f64 * (1.0 + offset)) as u64;
        Duration::from_micros(micros)
    }

    /// Linux-PAM's randomised failure delay for an attempt made now.
    pub fn pam_delay(&self) -> Duration {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.pam_delay_at(now)
    }

    /// How long a failure by `username` takes before it is answered.
    pub fn failure_delay(&self, username: &str, method: FailedMethod) -> Duration {
        if self.pam_base.is_zero() {
            return Duration::ZERO;
        }
        let spent = match method {
            FailedMethod::Password => self.pam_delay(),
            FailedMethod::Other => Duration::ZERO,
        };
        round_up(self.user_base(username), spent)
    }
}

/// sshd's `ensure_minimum_time_since`: the smallest base·2^k not below `spent`.
fn round_up(base: Duration, spent: Duration) -> Duration {
    if spent > MAX_ROUNDED || base.is_zero() {
        return spent;
    }
    let mut required = base;
    while required < spent {
        required *= 2;
    }
    required
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_doubles_the_user_base() {
        let base = Duration::from_micros(8_300);
        assert_eq!(round_up(base, Duration::ZERO), base);
        assert_eq!(round_up(base, Duration::from_millis(2000)), base * 256);
        assert_eq!(round_up(base, Duration::from_millis(2200)), base * 512);
        assert_eq!(
            round_up(base, Duration::from_secs(6)),
            Duration::from_secs(6)
        );
    }

    #[test]
    fn user_bases_are_stable_and_in_range() {
        let timing = FailureTiming::new(Duration::from_secs(2));
        let root = timing.user_base("root");
        assert_eq!(root, timing.user_base("root"));
        for user in ["root", "admin", "oracle", "", "x"] {
            let base = timing.user_base(user);
            assert!(
                base >= Duration::from_millis(5) && base <= Duration::from_micros(9_295),
                "{base:?}"
            );
        }
    }

    #[test]
    fn password_failures_land_on_powers_of_two_of_the_base() {
        let timing = FailureTiming::new(Duration::from_secs(2));
        let base = timing.user_base("root");
        for _ in 0..200 {
            let delay = timing.failure_delay("root", FailedMethod::Password);
            // PAM's 1-3 s rounded up to base·2^k: k is 7 to 10 depending on the
            // random per-user base and this second's PAM draw (up to twice 3 s).
            // Whole nanoseconds: a float ratio of the two is not always exact.
            let (whole, rest) = (
                delay.as_nanos() / base.as_nanos(),
                delay.as_nanos() % base.as_nanos(),
            );
            assert!(
                rest == 0 && [128, 256, 512, 1024].contains(&whole),
                "{delay:?} / {base:?}"
            );
            assert!(delay >= Duration::from_millis(1000) && delay < Duration::from_secs(6));
        }
        assert_eq!(timing.failure_delay("root", FailedMethod::Other), base);
    }

    /// Known answers computed independently of this code (a Python transcription of
    /// Linux-PAM's formula).
    #[test]
    fn pam_delay_matches_linux_pams_formula() {
        let timing = FailureTiming::new(Duration::from_secs(2));
        assert_eq!(
            timing.pam_delay_at(1_795_424_400),
            Duration::from_micros(1_799_907)
        );
        assert_eq!(timing.pam_delay_at(0), Duration::from_micros(2_347_378));
        assert_eq!(
            timing.pam_delay_at(1_700_000_000),
            Duration::from_micros(1_657_064)
        );
    }

    #[test]
    fn pam_delays_spread_between_half_and_one_and_a_half_base() {
        let timing = FailureTiming::new(Duration::from_secs(2));
        let draws: Vec<f64> = (0..100_000u64)
            .map(|t| timing.pam_delay_at(1_795_424_400 + t).as_secs_f64())
            .collect();
        assert!(draws.iter().all(|d| (1.0..3.0).contains(d)));
        // The share below 2.125 s, where sshd's rounding splits for a common user
        // base; measured on Debian 12: 60 of 93 failures.
        let below = draws.iter().filter(|d| **d < 2.125).count() as f64 / draws.len() as f64;
        assert!((below - 0.64).abs() < 0.01, "{below}");
    }

    #[test]
    fn zero_turns_delays_off() {
        let timing = FailureTiming::new(Duration::ZERO);
        assert_eq!(
            timing.failure_delay("root", FailedMethod::Password),
            Duration::ZERO
        );
        assert_eq!(
            timing.failure_delay("root", FailedMethod::Other),
            Duration::ZERO
        );
    }
}
