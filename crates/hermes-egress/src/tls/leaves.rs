//! The box-facing TLS configurations, one per name: minting a leaf costs a key
//! generation and a signature, so the recent ones are kept (bounded, least recently
//! used out first).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::ServerConfig;

/// Names kept at most.
pub const CAPACITY: usize = 1024;

/// Recently used configurations by name.
#[derive(Debug, Default)]
pub struct Leaves {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, (Arc<ServerConfig>, u64)>,
    tick: u64,
}

impl Leaves {
    /// The configuration for `host`, if kept (now the most recently used).
    pub fn get(&self, host: &str) -> Option<Arc<ServerConfig>> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.tick += 1;
        let tick = inner.tick;
        let (config, used) = inner.entries.get_mut(host)?;
        *used = tick;
        Some(Arc::clone(config))
    }

    /// Keeps `config` for `host`, dropping the least recently used past [`CAPACITY`].
    pub fn put(&self, host: &str, config: Arc<ServerConfig>) {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.tick += 1;
        let tick = inner.tick;
        inner.entries.insert(host.to_owned(), (config, tick));
        if inner.entries.len() > CAPACITY {
            let oldest = inner
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(host, _)| host.clone());
            if let Some(oldest) = oldest {
                inner.entries.remove(&oldest);
            }
        }
    }

    /// Names kept now.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entries
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let resolver = Arc::new(rustls::server::ResolvesServerCertUsingSni::new());
        Arc::new(
            ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_cert_resolver(resolver),
        )
    }

    #[test]
    fn the_least_recently_used_goes_first_and_the_bound_holds() {
        let leaves = Leaves::default();
        let shared = config();
        leaves.put("first", Arc::clone(&shared));
        for n in 1..CAPACITY {
            leaves.put(&format!("host{n}"), Arc::clone(&shared));
        }
        assert_eq!(leaves.len(), CAPACITY);
        // Touch `first`, so `host1` is now the oldest.
        assert!(leaves.get("first").is_some());
        leaves.put("new", Arc::clone(&shared));
        assert_eq!(leaves.len(), CAPACITY);
        assert!(leaves.get("first").is_some());
        assert!(leaves.get("host1").is_none());
        assert!(leaves.get("host2").is_some());
    }
}
