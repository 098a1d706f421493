//! The authentication half of a connection: every attempt decided, recorded and
//! answered after sshd's delay, and sshd's MaxAuthTries counted.

use std::sync::Arc;
use std::time::Duration;

use super::Connection;
use crate::admission::DropReason;
use crate::auth::{Decision, FailedMethod};
use crate::escape::escape_untrusted;
use crate::events::{EventBuilder, EventId};
use crate::record::AuthAttempt;

/// Which authentication method an attempt used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// `password`.
    Password,
    /// `keyboard-interactive` (each answer counts as one attempt).
    KeyboardInteractive,
}

impl AuthMethod {
    fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Password => "password",
            AuthMethod::KeyboardInteractive => "keyboard-interactive",
        }
    }
}

/// A public key a client offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedKey {
    /// Key type, e.g. `ssh-ed25519`.
    pub key_type: String,
    /// `SHA256:...` fingerprint, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The key in OpenSSH's one-line form (`type base64`).
    pub openssh: String,
}

/// The client's key exchange offer, from its plaintext KEXINIT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKex {
    /// md5 of `hassh_algorithms`, lowercase hex.
    pub hassh: String,
    /// `kex;ciphers;macs;compression` (client to server).
    pub hassh_algorithms: String,
    /// Key exchange methods.
    pub kex: Vec<String>,
    /// Host key algorithms.
    pub host_key: Vec<String>,
    /// Ciphers, client to server.
    pub enc_cs: Vec<String>,
    /// MACs, client to server.
    pub mac_cs: Vec<String>,
    /// Compression, client to server.
    pub comp_cs: Vec<String>,
    /// Languages, client to server.
    pub lang_cs: Vec<String>,
}

/// The answer to an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthReply {
    /// The attempt logged in (or, for a key offer, may go on to the signature).
    pub accepted: bool,
    /// The next attempt reaches `max_auth_tries` and cannot succeed: answer it with
    /// sshd's disconnect instead of a failure.
    pub last_try: bool,
}

impl AuthReply {
    const ACCEPTED: AuthReply = AuthReply {
        accepted: true,
        last_try: false,
    };
}

impl Connection {
    /// Records a failure of `username` (`counted` for `max_auth_tries`) and says
    /// whether the next attempt is the one that reaches the limit and cannot succeed
    /// (judged by the name just tried: a name no server has never gets in, so a
    /// client trying one is cut at the limit as sshd cuts it).
    fn record_failure(&self, counted: bool, username: &str) -> bool {
        let max = self.services.config.persona.max_auth_tries;
        let mut state = self.state();
        if counted {
            state.counted_failures = state.counted_failures.saturating_add(1);
        }
        let policy = self.services.policy();
        state.counted_failures + 1 >= max
            && !policy.accepts_public_key_for(username)
            && !policy.next_attempt_always_accepted(&state.auth, self.context.src.ip(), username)
    }

    async fn delay_failure(&self, username: &str, method: FailedMethod) {
        let delay = self.services.timing.failure_delay(username, method);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    /// The `none` method (how clients ask which methods exist). The first one does not
    /// count as a failure, as with sshd.
    pub async fn auth_none(&self, username: &str) -> AuthReply {
        self.connect_box_ahead(username);
        let first = !std::mem::replace(&mut self.state().none_seen, true);
        let last_try = self.record_failure(!first, username);
        self.delay_failure(username, FailedMethod::Other).await;
        AuthReply {
            accepted: false,
            last_try,
        }
    }

    /// A public key offered (before its signature): logged; refused unless the policy
    /// accepts keys.
    pub async fn pubkey_offer(&self, username: &str, key: &OfferedKey) -> AuthReply {
        self.connect_box_ahead(username);
        self.auth_attempted();
        self.services.events.emit(
            EventBuilder::connection(EventId::ClientFingerprint, &self.context)
                .field("username", username)
                .field("fingerprint", key.fingerprint.clone())
                .field("key", key.openssh.clone())
                .field("type", key.key_type.clone())
                .message(format!(
                    "public key {} {} offered for {username}",
                    key.key_type, key.fingerprint
                )),
        );
        if self.services.policy().accepts_public_key_for(username) {
            return AuthReply::ACCEPTED;
        }
        let last_try = self.record_failure(true, username);
        self.delay_failure(username, FailedMethod::Other).await;
        AuthReply {
            accepted: false,
            last_try,
        }
    }

    /// A public key whose signature checked out, with the policy accepting keys.
    pub fn pubkey_login(self: &Arc<Self>, username: &str, key: &OfferedKey) -> bool {
        if !self.services.policy().accepts_public_key_for(username) {
            return false;
        }
        self.services.events.emit(
            EventBuilder::connection(EventId::LoginSuccess, &self.context)
                .field("username", username)
                .field("fingerprint", key.fingerprint.clone())
                .field("key", key.openssh.clone())
                .field("type", key.key_type.clone())
                .message(format!(
                    "public key login [{username}] {} succeeded",
                    key.fingerprint
                )),
        );
        tracing::info!(target: "hermes::auth", session_id = %self.context.session, username = %escape_untrusted(username), method = "publickey", result = "succeeded", "login attempt");
        self.logged_in(username);
        true
    }

    /// Decides a password or keyboard-interactive attempt, records it, and on failure
    /// waits sshd's failure delay (a timer: no thread or CPU is held); on success,
    /// the box's sshd's own check of the password (see [`super::login_ready`]).
    pub async fn password_attempt(
        self: &Arc<Self>,
        method: AuthMethod,
        username: &str,
        password: &str,
    ) -> AuthReply {
        self.connect_box_ahead(username);
        self.auth_attempted();
        let decision = {
            let mut state = self.state();
            let decision = self.services.policy().check_password(
                &mut state.auth,
                self.context.src.ip(),
                username,
                password,
            );
            state.metadata.auth_attempts.push(AuthAttempt {
                method: method.as_str(),
                username: username.to_owned(),
                password: password.to_owned(),
                success: decision.is_accept(),
                timestamp: crate::time::now_iso8601(),
            });
            decision
        };
        let (id, verdict) = match decision {
            Decision::Accept(_) => (EventId::LoginSuccess, "succeeded"),
            Decision::Reject { .. } => (EventId::LoginFailed, "failed"),
        };
        self.services.events.emit(
            EventBuilder::connection(id, &self.context)
                .field("username", username)
                .field("password", password)
                .message(format!("login attempt [{username}/{password}] {verdict}")),
        );
        tracing::info!(
            target: "hermes::auth",
            session_id = %self.context.session,
            username = %escape_untrusted(username),
            method = method.as_str(),
            result = verdict,
            rule = match decision {
                Decision::Accept(reason) => reason.as_str(),
                Decision::Reject { .. } => "none",
            },
            "login attempt"
        );
        match decision {
            Decision::Accept(_) => {
                self.logged_in(username);
                self.box_login_settled().await;
                AuthReply::ACCEPTED
            }
            Decision::Reject { .. } => {
                let last_try = self.record_failure(true, username);
                self.delay_failure(username, FailedMethod::Password).await;
                AuthReply {
                    accepted: false,
                    last_try,
                }
            }
        }
    }

    /// The attempt that reaches `max_auth_tries` arrived: record it and say how long
    /// sshd would take to answer it (with its disconnect).
    pub fn max_tries_reached(&self) -> Duration {
        let (failures, username) = {
            let state = self.state();
            let username = state
                .metadata
                .auth_attempts
                .last()
                .map(|a| a.username.clone())
                .unwrap_or_default();
            (state.counted_failures + 1, username)
        };
        self.services.events.emit(
            EventBuilder::connection(EventId::AuthMaxTries, &self.context)
                .field("failures", failures)
                .message(format!(
                    "maximum authentication attempts exceeded ({failures}); disconnecting"
                )),
        );
        tracing::info!(target: "hermes::auth", session_id = %self.context.session, failures, "max_auth_tries reached");
        self.services
            .timing
            .failure_delay(&username, FailedMethod::Password)
    }

    /// The client's KEXINIT arrived.
    pub fn client_kex(&self, kex: &ClientKex) {
        self.services.events.emit(
            EventBuilder::connection(EventId::ClientKex, &self.context)
                .field("hassh", kex.hassh.clone())
                .field("hasshAlgorithms", kex.hassh_algorithms.clone())
                .field("kexAlgs", kex.kex.clone())
                .field("keyAlgs", kex.host_key.clone())
                .field("encCS", kex.enc_cs.clone())
                .field("macCS", kex.mac_cs.clone())
                .field("compCS", kex.comp_cs.clone())
                .field("langCS", kex.lang_cs.clone())
                .message(format!("SSH client hassh fingerprint: {}", kex.hassh)),
        );
    }

    /// The connection was closed to make room for a new one.
    pub fn evicted(&self, reason: DropReason, silent: Duration) {
        let silent_ms = silent.as_millis() as u64;
        self.services.events.emit(
            EventBuilder::connection(EventId::ConnectionEvicted, &self.context)
                .field("reason", reason.as_str())
                .field("silent_ms", silent_ms)
                .message(format!(
                    "Unauthenticated connection silent for {silent_ms} ms closed to make room ({})",
                    reason.as_str()
                )),
        );
        tracing::debug!(target: "hermes::admission", session_id = %self.context.session, reason = reason.as_str(), silent_ms, "connection closed to make room");
    }

    /// The client's identification line was refused with `reply`.
    pub fn bad_version(&self, line: &str, reply: &str) {
        self.services.events.emit(
            EventBuilder::connection(EventId::ClientBadVersion, &self.context)
                .field("version", line)
                .field("reply", reply)
                .message(format!("Bad protocol version identification: {line}")),
        );
    }

    /// A password or key was tried: the connection is never penalised.
    fn auth_attempted(&self) {
        if let Some(ticket) = &self.state().ticket {
            ticket.progress().auth_attempted();
        }
    }

    /// The login grace time ran out.
    pub fn login_grace_expired(&self, seconds: u64) {
        if let Some(ticket) = &self.state().ticket {
            ticket.progress().grace_exceeded();
        }
        self.services.events.emit(
            EventBuilder::connection(EventId::LoginGraceTimeout, &self.context)
                .field("seconds", seconds)
                .message(format!(
                    "Timeout before authentication after {seconds} seconds"
                )),
        );
    }
}
