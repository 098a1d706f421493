//! The credential policy: which username/password pairs log in.
//!
//! Pure decisions from (configured credentials, this connection's history, the attempt).
//! Nothing here knows about SSH; the front end asks and reports the answer.

use std::collections::{HashMap, HashSet};

use crate::config::AuthenticationConfig;

/// Why an attempt was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptReason {
    /// The pair is configured.
    StaticCredential,
    /// Enough failures on this connection: the prototype's accept-all rule.
    AcceptAfterFailures,
}

/// The answer to one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Log in.
    Accept(AcceptReason),
    /// Refuse; the number of failures on this connection so far, this one included.
    Reject {
        /// Failures so far on this connection.
        failures: u32,
    },
}

impl Decision {
    /// True for [`Decision::Accept`].
    pub fn is_accept(self) -> bool {
        matches!(self, Decision::Accept(_))
    }
}

/// What the policy remembers about one connection.
#[derive(Debug, Default, Clone)]
pub struct ConnectionAuthState {
    failures: u32,
}

impl ConnectionAuthState {
    /// Failed attempts on this connection so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// Configured credentials plus the accept-after-N-failures rule.
#[derive(Debug, Clone, Default)]
pub struct CredentialPolicy {
    passwords: HashMap<String, HashSet<String>>,
    accept_after_failures: u32,
}

impl CredentialPolicy {
    /// Builds the policy; every password of a repeated username is kept.
    pub fn from_config(config: &AuthenticationConfig) -> Self {
        let mut passwords: HashMap<String, HashSet<String>> = HashMap::new();
        for credential in &config.static_credentials {
            passwords
                .entry(credential.username.clone())
                .or_default()
                .insert(credential.password.clone());
        }
        Self {
            passwords,
            accept_after_failures: config.accept_all_after_failures,
        }
    }

    /// Decides one password (or keyboard-interactive answer) attempt and updates the
    /// connection's history.
    pub fn check_password(
        &self,
        state: &mut ConnectionAuthState,
        username: &str,
        password: &str,
    ) -> Decision {
        let configured = self
            .passwords
            .get(username)
            .is_some_and(|set| set.contains(password));
        if configured {
            return Decision::Accept(AcceptReason::StaticCredential);
        }
        if self.accept_after_failures > 0 && state.failures >= self.accept_after_failures {
            return Decision::Accept(AcceptReason::AcceptAfterFailures);
        }
        state.failures = state.failures.saturating_add(1);
        Decision::Reject {
            failures: state.failures,
        }
    }

    /// Number of distinct configured username/password pairs.
    pub fn credential_count(&self) -> usize {
        self.passwords.values().map(HashSet::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Credential;

    fn policy(pairs: &[(&str, &str)], accept_after: u32) -> CredentialPolicy {
        CredentialPolicy::from_config(&AuthenticationConfig {
            static_credentials: pairs
                .iter()
                .map(|(u, p)| Credential {
                    username: (*u).to_owned(),
                    password: (*p).to_owned(),
                })
                .collect(),
            accept_all_after_failures: accept_after,
        })
    }

    #[test]
    fn every_password_of_a_repeated_username_works() {
        let policy = policy(
            &[
                ("admin", "admin"),
                ("admin", "admin123"),
                ("admin", "password"),
            ],
            0,
        );
        for pw in ["admin", "admin123", "password"] {
            let mut state = ConnectionAuthState::default();
            assert!(
                policy.check_password(&mut state, "admin", pw).is_accept(),
                "{pw}"
            );
        }
        assert_eq!(policy.credential_count(), 3);
    }

    #[test]
    fn wrong_or_unknown_pairs_fail_and_count() {
        let policy = policy(&[("root", "toor")], 0);
        let mut state = ConnectionAuthState::default();
        assert_eq!(
            policy.check_password(&mut state, "root", "Toor"),
            Decision::Reject { failures: 1 }
        );
        assert_eq!(
            policy.check_password(&mut state, "toor", "root"),
            Decision::Reject { failures: 2 }
        );
    }

    #[test]
    fn after_n_failures_the_next_attempt_is_accepted() {
        let policy = policy(&[], 3);
        let mut state = ConnectionAuthState::default();
        for n in 1..=3 {
            assert_eq!(
                policy.check_password(&mut state, "x", "y"),
                Decision::Reject { failures: n }
            );
        }
        assert_eq!(
            policy.check_password(&mut state, "anyone", "anything"),
            Decision::Accept(AcceptReason::AcceptAfterFailures)
        );
    }

    #[test]
    fn zero_disables_accept_all() {
        let policy = policy(&[], 0);
        let mut state = ConnectionAuthState::default();
        for _ in 0..50 {
            assert!(!policy.check_password(&mut state, "x", "y").is_accept());
        }
    }

    #[test]
    fn counters_are_per_connection() {
        let policy = policy(&[], 1);
        let mut a = ConnectionAuthState::default();
        let mut b = ConnectionAuthState::default();
        assert!(!policy.check_password(&mut a, "x", "1").is_accept());
        assert!(!policy.check_password(&mut b, "x", "1").is_accept());
        assert!(policy.check_password(&mut a, "x", "2").is_accept());
    }
}
