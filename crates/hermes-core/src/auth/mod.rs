//! The credential policy: which authentication attempts log in.
//!
//! Pure decisions from (configured credentials, the mode's memory, the attempt).
//! Nothing here knows about SSH; the front end asks and reports the answer.

mod delay;
mod glob;
mod sticky;
mod usernames;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

pub use delay::{FailedMethod, FailureTiming};
pub use glob::glob_match;
pub use sticky::{StickyMemory, StickyVerdict};
pub use usernames::{DEFAULT_PLAUSIBLE_USERNAMES, LoginNames};

use crate::config::{AuthMode, AuthenticationConfig};

/// Why an attempt was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptReason {
    /// A configured pair (or wildcard) matched.
    StaticCredential,
    /// Enough failures on this connection: the prototype's accept-all rule.
    AcceptAfterFailures,
    /// The source failed enough times; this pair is now remembered for it.
    StickyNew,
    /// The pair this source logged in with before.
    StickyRemembered,
}

impl AcceptReason {
    /// Name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            AcceptReason::StaticCredential => "static",
            AcceptReason::AcceptAfterFailures => "accept_after_failures",
            AcceptReason::StickyNew => "sticky_new",
            AcceptReason::StickyRemembered => "sticky_remembered",
        }
    }
}

/// The answer to one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Log in.
    Accept(AcceptReason),
    /// Refuse; the number of password failures on this connection so far.
    Reject {
        /// Password failures so far on this connection.
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
    /// Failed password attempts on this connection so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// Configured pairs, exact ones in a map and wildcard ones in a list.
#[derive(Debug, Clone, Default)]
struct StaticCredentials {
    exact: HashMap<String, HashSet<String>>,
    patterns: Vec<(String, String)>,
}

impl StaticCredentials {
    fn matches_exactly(&self, username: &str, password: &str) -> bool {
        self.exact
            .get(username)
            .is_some_and(|set| set.contains(password))
    }

    fn matches_a_pattern(&self, username: &str, password: &str) -> bool {
        self.patterns
            .iter()
            .any(|(user, pass)| glob_match(user, username) && glob_match(pass, password))
    }

    fn len(&self) -> usize {
        self.exact.values().map(HashSet::len).sum::<usize>() + self.patterns.len()
    }
}

/// The configured rule.
#[derive(Debug, Clone)]
pub struct CredentialPolicy {
    statics: StaticCredentials,
    mode: AuthMode,
    accept_after: u32,
    sticky: Option<Arc<StickyMemory>>,
    accept_public_keys: bool,
    names: LoginNames,
}

impl CredentialPolicy {
    /// Builds the policy; in `sticky` mode the state file is loaded.
    pub fn from_config(config: &AuthenticationConfig) -> Self {
        let mut statics = StaticCredentials::default();
        for credential in &config.static_credentials {
            if credential.username.contains('*') || credential.password.contains('*') {
                statics
                    .patterns
                    .push((credential.username.clone(), credential.password.clone()));
            } else {
                statics
                    .exact
                    .entry(credential.username.clone())
                    .or_default()
                    .insert(credential.password.clone());
            }
        }
        let mode = config.effective_mode();
        let sticky = (mode == AuthMode::Sticky).then(|| {
            let settings = config.sticky_settings();
            Arc::new(StickyMemory::load(
                settings.min_failures,
                settings.max_failures,
                settings.remember_for.get(),
                &settings.state_file,
            ))
        });
        let names = LoginNames::new(
            &config.usernames,
            config
                .static_credentials
                .iter()
                .map(|credential| credential.username.as_str()),
        );
        Self {
            names,
            statics,
            mode,
            accept_after: config.accept_after(),
            sticky,
            accept_public_keys: config.accept_public_keys,
        }
    }

    /// The mode in force.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The sticky rule's memory, in `sticky` mode (to save it).
    pub fn sticky_memory(&self) -> Option<&Arc<StickyMemory>> {
        self.sticky.as_ref()
    }

    /// Whether offered public keys log in.
    pub fn accepts_public_keys(&self) -> bool {
        self.accept_public_keys
    }

    /// Whether a public key logs `username` in: keys are accepted, and the name is
    /// one [`LoginNames`] admits (a random name gets no shell by key either).
    pub fn accepts_public_key_for(&self, username: &str) -> bool {
        self.accept_public_keys && self.names.admits(username)
    }

    /// Decides one password (or keyboard-interactive answer) attempt from `source`
    /// and updates the history.
    pub fn check_password(
        &self,
        state: &mut ConnectionAuthState,
        source: IpAddr,
        username: &str,
        password: &str,
    ) -> Decision {
        if self.statics.matches_exactly(username, password) {
            return Decision::Accept(AcceptReason::StaticCredential);
        }
        let admitted = self.names.admits(username);
        if admitted && self.statics.matches_a_pattern(username, password) {
            return Decision::Accept(AcceptReason::StaticCredential);
        }
        let accepted = match self.mode {
            _ if !admitted => {
                if let Some(sticky) = &self.sticky {
                    sticky.refuse(source);
                }
                None
            }
            AuthMode::Static => None,
            AuthMode::AcceptAfterFailures => {
                (state.failures >= self.accept_after).then_some(AcceptReason::AcceptAfterFailures)
            }
            AuthMode::Sticky => match self
                .sticky
                .as_ref()
                .map(|s| s.attempt(source, username, password))
            {
                Some(StickyVerdict::NewlyAccepted) => Some(AcceptReason::StickyNew),
                Some(StickyVerdict::Remembered) => Some(AcceptReason::StickyRemembered),
                Some(StickyVerdict::Refused) | None => None,
            },
        };
        if let Some(reason) = accepted {
            return Decision::Accept(reason);
        }
        state.failures = state.failures.saturating_add(1);
        Decision::Reject {
            failures: state.failures,
        }
    }

    /// Whether the next password attempt logs in whatever its password, given a
    /// name [`LoginNames`] admits (so a connection at its last try must not be cut
    /// before it).
    pub fn next_attempt_always_accepted(
        &self,
        state: &ConnectionAuthState,
        source: IpAddr,
        username: &str,
    ) -> bool {
        if !self.names.admits(username) {
            return false;
        }
        match self.mode {
            AuthMode::Static => false,
            AuthMode::AcceptAfterFailures => state.failures >= self.accept_after,
            AuthMode::Sticky => self
                .sticky
                .as_ref()
                .is_some_and(|s| s.next_attempt_accepted(source)),
        }
    }

    /// Number of configured pairs (wildcard entries count once).
    pub fn credential_count(&self) -> usize {
        self.statics.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Credential, StickyConfig};

    const SOURCE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 9));

    fn config(pairs: &[(&str, &str)], mode: AuthMode) -> AuthenticationConfig {
        AuthenticationConfig {
            mode: Some(mode),
            static_credentials: pairs
                .iter()
                .map(|(u, p)| Credential {
                    username: (*u).to_owned(),
                    password: (*p).to_owned(),
                })
                .collect(),
            ..AuthenticationConfig::default()
        }
    }

    /// Sticky mode where each source gets in after exactly two failures.
    fn sticky_after_two(dir: &tempfile::TempDir, pairs: &[(&str, &str)]) -> CredentialPolicy {
        let mut cfg = config(pairs, AuthMode::Sticky);
        cfg.sticky = Some(StickyConfig {
            min_failures: 2,
            max_failures: 2,
            remember_for: crate::config::Seconds::new(3600),
            state_file: dir.path().join("s.json"),
        });
        CredentialPolicy::from_config(&cfg)
    }

    fn accepts(policy: &CredentialPolicy, user: &str, pass: &str) -> bool {
        policy
            .check_password(&mut ConnectionAuthState::default(), SOURCE, user, pass)
            .is_accept()
    }

    #[test]
    fn every_password_of_a_repeated_username_works() {
        let policy = CredentialPolicy::from_config(&config(
            &[
                ("admin", "admin"),
                ("admin", "admin123"),
                ("admin", "password"),
            ],
            AuthMode::Static,
        ));
        for pw in ["admin", "admin123", "password"] {
            assert!(accepts(&policy, "admin", pw), "{pw}");
        }
        assert!(!accepts(&policy, "admin", "Admin"));
        assert_eq!(policy.credential_count(), 3);
    }

    #[test]
    fn wildcards_match_users_and_passwords() {
        let policy = CredentialPolicy::from_config(&config(
            &[("*", "123456"), ("root", "*"), ("adm*", "pass*")],
            AuthMode::Static,
        ));
        assert!(accepts(&policy, "oracle", "123456"));
        assert!(accepts(&policy, "root", "anything"));
        assert!(accepts(&policy, "admin", "password1"));
        assert!(!accepts(&policy, "oracle", "1234567"));
        assert!(!accepts(&policy, "user", "password"));
    }

    #[test]
    fn static_mode_never_gives_in() {
        let policy = CredentialPolicy::from_config(&config(&[], AuthMode::Static));
        let mut state = ConnectionAuthState::default();
        for n in 1..=50 {
            assert_eq!(
                policy.check_password(&mut state, SOURCE, "x", "y"),
                Decision::Reject { failures: n }
            );
            assert!(!policy.next_attempt_always_accepted(&state, SOURCE, "root"));
        }
    }

    #[test]
    fn after_n_failures_the_next_attempt_is_accepted() {
        let mut cfg = config(&[], AuthMode::AcceptAfterFailures);
        cfg.accept_all_after_failures = Some(3);
        let policy = CredentialPolicy::from_config(&cfg);
        let mut state = ConnectionAuthState::default();
        for n in 1..=3 {
            assert_eq!(
                policy.check_password(&mut state, SOURCE, "x", "y"),
                Decision::Reject { failures: n }
            );
        }
        assert!(policy.next_attempt_always_accepted(&state, SOURCE, "root"));
        assert_eq!(
            policy.check_password(&mut state, SOURCE, "guest", "anything"),
            Decision::Accept(AcceptReason::AcceptAfterFailures)
        );
        // Another connection starts from zero.
        assert!(!accepts(&policy, "guest", "anything"));
    }

    #[test]
    fn sticky_mode_counts_across_connections_and_remembers_the_pair() {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = sticky_after_two(&dir, &[("root", "toor")]);
        // One failure on each of two connections, then any pair gets in.
        assert!(!accepts(&policy, "root", "a"));
        assert!(!accepts(&policy, "root", "b"));
        assert!(policy.next_attempt_always_accepted(
            &ConnectionAuthState::default(),
            SOURCE,
            "root"
        ));
        assert_eq!(
            policy.check_password(
                &mut ConnectionAuthState::default(),
                SOURCE,
                "pi",
                "raspberry"
            ),
            Decision::Accept(AcceptReason::StickyNew)
        );
        assert!(accepts(&policy, "pi", "raspberry"));
        assert!(
            !accepts(&policy, "pi", "raspberry2"),
            "a second random pair is refused"
        );
        assert!(accepts(&policy, "root", "toor"), "static pairs still work");
    }

    #[test]
    fn random_names_never_log_in_however_often_tried() {
        let mut cfg = config(
            &[("*", "123456"), ("svc_x9", "pw")],
            AuthMode::AcceptAfterFailures,
        );
        cfg.accept_all_after_failures = Some(2);
        let policy = CredentialPolicy::from_config(&cfg);
        let mut state = ConnectionAuthState::default();
        for n in 1..=20 {
            assert_eq!(
                policy.check_password(&mut state, SOURCE, "user_a37", "x"),
                Decision::Reject { failures: n }
            );
        }
        assert!(
            !accepts(&policy, "user_a37", "123456"),
            "a wildcard pair admits no random name"
        );
        assert!(accepts(&policy, "oracle", "123456"), "but a plausible one");
        assert!(
            accepts(&policy, "svc_x9", "pw"),
            "an exact static pair is the operator's word"
        );
        assert_eq!(
            policy.check_password(&mut state, SOURCE, "ubuntu", "anything"),
            Decision::Accept(AcceptReason::AcceptAfterFailures),
            "the random names' failures counted"
        );
    }

    #[test]
    fn sticky_mode_counts_random_names_but_remembers_only_a_plausible_pair() {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = sticky_after_two(&dir, &[]);
        for n in 0..10 {
            assert!(!accepts(&policy, "qwzx", &format!("p{n}")), "attempt {n}");
        }
        assert_eq!(
            policy.check_password(
                &mut ConnectionAuthState::default(),
                SOURCE,
                "pi",
                "raspberry"
            ),
            Decision::Accept(AcceptReason::StickyNew)
        );
        assert!(!accepts(&policy, "qwzx", "p0"));
        assert!(accepts(&policy, "pi", "raspberry"));
    }

    #[test]
    fn the_any_policy_lets_in_random_names_as_before() {
        let mut cfg = config(&[], AuthMode::AcceptAfterFailures);
        cfg.accept_all_after_failures = Some(1);
        cfg.usernames.policy = crate::config::UsernamePolicy::Any;
        let policy = CredentialPolicy::from_config(&cfg);
        let mut state = ConnectionAuthState::default();
        assert!(
            !policy
                .check_password(&mut state, SOURCE, "user_a37", "x")
                .is_accept()
        );
        assert!(
            policy
                .check_password(&mut state, SOURCE, "user_a37", "x")
                .is_accept()
        );
    }

    #[test]
    fn a_random_name_is_never_the_attempt_that_would_get_in() {
        let mut cfg = config(&[], AuthMode::AcceptAfterFailures);
        cfg.accept_all_after_failures = Some(1);
        let policy = CredentialPolicy::from_config(&cfg);
        let mut state = ConnectionAuthState::default();
        policy.check_password(&mut state, SOURCE, "user_a37", "x");
        assert!(policy.next_attempt_always_accepted(&state, SOURCE, "root"));
        assert!(!policy.next_attempt_always_accepted(&state, SOURCE, "user_a37"));
    }

    #[test]
    fn public_keys_log_in_only_names_a_server_has() {
        let mut cfg = config(&[], AuthMode::Static);
        cfg.accept_public_keys = true;
        let policy = CredentialPolicy::from_config(&cfg);
        assert!(policy.accepts_public_key_for("root"));
        assert!(policy.accepts_public_key_for("ubuntu"));
        assert!(!policy.accepts_public_key_for("user_a37"));
        cfg.accept_public_keys = false;
        let policy = CredentialPolicy::from_config(&cfg);
        assert!(!policy.accepts_public_key_for("root"));
    }
}
