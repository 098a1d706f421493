//! A box's query budget: a token bucket holding one second's worth of queries, so a
//! burst as a resolver library makes (A and AAAA, a few search domains) passes and a
//! flood is cut to the configured rate.

use std::time::Instant;

/// Queries a box may send now, refilled continuously.
#[derive(Debug)]
pub struct TokenBucket {
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `per_second` tokens.
    pub fn new(per_second: u32, now: Instant) -> Self {
        let per_second = f64::from(per_second.max(1));
        TokenBucket {
            per_second,
            tokens: per_second,
            last: now,
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_passes_and_a_flood_gets_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, start);
        let burst = (0..100).filter(|_| bucket.take(start)).count();
        assert_eq!(burst, 10);
        // Ten seconds of a flood at 1000 a second: ten a second get through.
        let mut passed = 0;
        for ms in 1..=10_000u64 {
            if bucket.take(start + Duration::from_millis(ms)) {
                passed += 1;
            }
        }
        assert!((99..=101).contains(&passed), "{passed}");
        // An idle minute refills one second's worth, no more.
        let later = start + Duration::from_secs(70);
        assert_eq!((0..100).filter(|_| bucket.take(later)).count(), 10);
    }
}
