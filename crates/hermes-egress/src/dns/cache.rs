//! Upstream answers kept for their TTL (at most [`MAX_TTL`]) so that a box asking
//! the same name again, or many boxes asking it, costs one upstream query. Bounded
//! in entries; a full cache drops expired entries, then the one expiring first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::wire::Rcode;

/// An answer is kept this long at most, whatever its TTL.
pub const MAX_TTL: Duration = Duration::from_secs(300);
/// Answers without any record (no TTL to go by) are kept this long.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(30);

/// What a cache lookup is keyed by: the name's key, type and class.
pub type CacheKey = (String, u16, u16);

/// A cached answer, as relayed.
#[derive(Debug, Clone)]
pub struct CachedAnswer {
    /// The upstream's message (its own id; readdressed when served).
    pub message: Vec<u8>,
    /// Offsets of its records' TTLs, aged when served.
    pub ttl_offsets: Vec<usize>,
    /// Its response code, for the event.
    pub rcode: String,
    /// Its addresses, for the event.
    pub addresses: Vec<IpAddr>,
}

struct Entry {
    answer: CachedAnswer,
    stored: Instant,
    expires: Instant,
}

/// The shared cache.
pub struct Cache {
    entries: Mutex<HashMap<CacheKey, Entry>>,
    capacity: usize,
}

impl Cache {
    /// A cache of `capacity` answers at most (0: nothing is cached).
    pub fn new(capacity: usize) -> Self {
        Cache {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The answer for `key` if it has not expired, its TTLs lowered by its age.
    pub fn get(&self, key: &CacheKey, now: Instant) -> Option<CachedAnswer> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = entries.get(key)?;
        if entry.expires <= now {
            entries.remove(key);
            return None;
        }
        let age = u32::try_from(now.duration_since(entry.stored).as_secs()).unwrap_or(u32::MAX);
        let mut answer = entry.answer.clone();
        for &offset in &answer.ttl_offsets {
            if let Some(field) = answer.message.get_mut(offset..offset + 4) {
                let ttl = u32::from_be_bytes([field[0], field[1], field[2], field[3]]);
                field.copy_from_slice(&ttl.saturating_sub(age).to_be_bytes());
            }
        }
        Some(answer)
    }

    /// Keeps `answer` for `ttl` (capped at [`MAX_TTL`]); only NOERROR and NXDOMAIN
    /// answers are worth keeping.
    pub fn put(&self, key: CacheKey, answer: CachedAnswer, ttl: Option<u32>, now: Instant) {
        if self.capacity == 0
            || !(answer.rcode == Rcode::NoError.name() || answer.rcode == Rcode::NxDomain.name())
        {
            return;
        }
        let keep = ttl
            .map_or(NEGATIVE_TTL, |t| Duration::from_secs(u64::from(t)))
            .min(MAX_TTL);
        if keep.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, entry| entry.expires > now);
            if entries.len() >= self.capacity {
                let first = entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.expires)
                    .map(|(key, _)| key.clone());
                if let Some(first) = first {
                    entries.remove(&first);
                }
            }
        }
        entries.insert(
            key,
            Entry {
                answer,
                stored: now,
                expires: now + keep,
            },
        );
    }

    /// Answers kept now (expired ones included until they are next looked at).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(ttl: u32) -> CachedAnswer {
        let mut message = vec![0u8; 8];
        message.extend_from_slice(&ttl.to_be_bytes());
        CachedAnswer {
            message,
            ttl_offsets: vec![8],
            rcode: "NOERROR".to_owned(),
            addresses: Vec::new(),
        }
    }

    fn key(name: &str) -> CacheKey {
        (name.to_owned(), 1, 1)
    }

    #[test]
    fn entries_age_and_expire() {
        let cache = Cache::new(4);
        let start = Instant::now();
        cache.put(key("a"), answer(100), Some(100), start);
        let later = cache
            .get(&key("a"), start + Duration::from_secs(40))
            .expect("kept");
        assert_eq!(later.message[8..12], 60u32.to_be_bytes());
        assert!(
            cache
                .get(&key("a"), start + Duration::from_secs(100))
                .is_none()
        );
        // A day-long TTL is kept MAX_TTL at most.
        cache.put(key("b"), answer(86_400), Some(86_400), start);
        assert!(cache.get(&key("b"), start + MAX_TTL).is_none());
    }

    #[test]
    fn the_cache_stays_bounded_and_skips_failures() {
        let cache = Cache::new(3);
        let start = Instant::now();
        for i in 0..50u32 {
            cache.put(key(&i.to_string()), answer(60 + i), Some(60 + i), start);
            assert!(cache.len() <= 3);
        }
        assert_eq!(cache.len(), 3);
        // The latest stay (the first to expire went first).
        assert!(cache.get(&key("49"), start).is_some());
        let mut failed = answer(60);
        failed.rcode = "SERVFAIL".to_owned();
        cache.put(key("f"), failed, Some(60), start);
        assert!(cache.get(&key("f"), start).is_none());
    }
}
