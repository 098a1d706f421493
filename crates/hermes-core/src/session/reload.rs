//! Configuration reload (SIGHUP): the credential policy and the connection and
//! session limits change for what comes next; open sessions go on untouched. Every
//! other changed key is named as needing a restart.

use std::sync::Arc;

use serde_json::Value;

use super::SessionServices;
use crate::admission::Limits;
use crate::auth::CredentialPolicy;
use crate::config::Config;

/// Keys (and whole sections) a reload applies.
const RELOADABLE: &[&str] = &[
    "authentication",
    "server.max_concurrent_sessions",
    "server.max_startups",
    "server.per_source_max_startups",
    "server.max_connections_per_source",
    "server.max_connections",
    "server.evict_stalled_startups",
    "server.startup_idle",
    "server.penalties",
];

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Changed keys now in force.
    pub applied: Vec<String>,
    /// Changed keys that take effect only after a restart.
    pub needs_restart: Vec<String>,
}

impl SessionServices {
    /// Applies the reloadable part of `new` (already validated) and reports every
    /// changed key against the configuration Hermes started with.
    pub fn reload(&self, new: &Config) -> ReloadReport {
        let mut changed = Vec::new();
        let old = serde_json::to_value(&*self.config).unwrap_or(Value::Null);
        let fresh = serde_json::to_value(new).unwrap_or(Value::Null);
        changed_keys(&old, &fresh, "", &mut changed);
        let (applied, needs_restart): (Vec<String>, Vec<String>) =
            changed.into_iter().partition(|key| is_reloadable(key));

        let policy = CredentialPolicy::from_config(&new.authentication);
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
        self.admission.set_limits(Limits::from_config(&new.server));
        self.session_slots
            .resize(new.server.max_concurrent_sessions);
        ReloadReport {
            applied,
            needs_restart,
        }
    }
}

fn is_reloadable(key: &str) -> bool {
    RELOADABLE.iter().any(|prefix| {
        key == *prefix
            || key
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    })
}

/// Dotted paths of the leaves that differ (a list that differs is one key).
fn changed_keys(old: &Value, new: &Value, path: &str, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                changed_keys(
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                    &child,
                    out,
                );
            }
        }
        (a, b) if a != b => out.push(path.to_owned()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_are_split_into_applied_and_restart() {
        let old = Config::default();
        let mut new = Config::default();
        new.authentication.accept_public_keys = !old.authentication.accept_public_keys;
        new.server.max_connections = 7;
        new.server.port = 2200;
        new.persona.hostname = "db-01".to_owned();
        let a = serde_json::to_value(&old).expect("json");
        let b = serde_json::to_value(&new).expect("json");
        let mut changed = Vec::new();
        changed_keys(&a, &b, "", &mut changed);
        let (applied, restart): (Vec<String>, Vec<String>) =
            changed.into_iter().partition(|k| is_reloadable(k));
        assert_eq!(
            applied,
            vec![
                "authentication.accept_public_keys",
                "server.max_connections"
            ]
        );
        assert_eq!(restart, vec!["persona.hostname", "server.port"]);
        assert!(!is_reloadable("server.max_connections_extra"));
        assert!(!is_reloadable("authentications"));
    }
}
