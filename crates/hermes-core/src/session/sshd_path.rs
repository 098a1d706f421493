//! A session's way into its box through the box's own sshd (see
//! [`crate::box_sshd`]): the account given the attacker's password in the box, one
//! login per session shared by its channels, ended with the session.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::Connection;
use super::launch::{Program, X11Forward, account_name};
use crate::box_sshd::{
    BoxChannel, BoxConnecting, BoxLogin, BoxProgram, BoxSession, BoxSshd, BoxSshdError,
};
use crate::sandbox::{
    ChangedFile, FileEdit, Lease, LeaseSource, ProcessSpec, SandboxError, TtySize,
};
use crate::shadow;

/// The session's login to its box's sshd.
#[derive(Default)]
pub(super) enum BoxSlot {
    /// Not made yet.
    #[default]
    Untried,
    /// The box's account has the login's password: the login comes next, on
    /// `connected` when its key exchange is done. `known`: the password was set by
    /// an earlier session (root there may have changed it since).
    Prepared {
        login: BoxLogin,
        known: bool,
        connected: Result<Box<dyn BoxConnecting>, BoxSshdError>,
    },
    /// Made: every channel opens on it.
    Open(Arc<dyn BoxSession>),
    /// This session's channels go through the engine (no box sshd, or no password
    /// it could check).
    Engine,
    /// The login failed: every channel ends with this.
    Failed(SandboxError),
    /// The session is over.
    Closed,
}

/// Creates the account when the box lacks it (as the session helper of the engine
/// path does: cloud images' default users in `sudo`, a history of their own), then
/// hands its password to `chpasswd` from stdin, so that the box's sshd and PAM check
/// the attacker's password as a real server's would. The hash is SHA-512 crypt
/// (`$6$`, what Debian wrote before bullseye and what upgraded servers still hold)
/// rather than Debian 12's yescrypt: the box's sshd checks it at every login within
/// the box's half core, where yescrypt costs about 30 ms a check and 45 ms more to
/// set (measured in a box). `$1` is the account.
const SET_ACCOUNT: &str = r#"u=$1
PATH=/usr/sbin:/usr/bin:/sbin:/bin
if ! getent passwd "$u" > /dev/null; then
  case $u in
    admin|administrator|ubuntu|debian|pi|ec2-user|azureuser|centos|vagrant|devops|deploy)
      useradd --create-home --shell /bin/bash --groups sudo "$u" ;;
    *) useradd --create-home --shell /bin/bash "$u" ;;
  esac > /dev/null 2>&1 || exit 1
  IFS=: read -r _ _ uid gid _ home _ <<< "$(getent passwd "$u")"
  printf '%s\n' ls "ls -la" cd "cd /tmp" "cd .." pwd "df -h" "free -m" uptime w top \
    "ps aux" "ip a" "cat /etc/os-release" "uname -a" "crontab -l" "python3 --version" \
    "sudo -i" "ls -la ~/.ssh" "vi .bashrc" clear history exit |
    shuf -n $((RANDOM % 8 + 5)) |
    setpriv "--reuid=$uid" "--regid=$gid" --init-groups -- env -i HOME="$home" \
      /bin/bash -c 'umask 077; cat > "$HOME/.bash_history"' > /dev/null 2>&1
fi
exec chpasswd --crypt-method SHA512"#;

/// The files in /etc that `useradd` and `chpasswd` rewrite (each with a `-` backup).
const ACCOUNT_FILES: [&str; 6] = ["passwd", "shadow", "group", "gshadow", "subuid", "subgid"];
/// What a new account's home gets: /etc/skel's files and its history.
const HOME_FILES: [&str; 4] = [".bashrc", ".profile", ".bash_logout", ".bash_history"];

/// How long setting the account may take.
const SET_ACCOUNT_TIMEOUT: Duration = Duration::from_secs(15);
/// Output of the account's setting kept for the error message.
const SET_ACCOUNT_OUTPUT: usize = 4096;

/// Longest password sshd checks (OpenSSH's MAX_PASSWORD_LEN): longer ones it refuses
/// whatever the account's, so such a session goes through the engine; hashing one
/// would also cost the host time growing with the square of its length.
const MAX_PASSWORD_LEN: usize = 1024;

/// A password `chpasswd` can set and sshd accepts (sshd refuses empty passwords).
fn settable(password: &str) -> bool {
    !password.is_empty()
        && password.len() <= MAX_PASSWORD_LEN
        && !password.contains(['\n', '\r', '\0'])
}

/// A connection to a box's sshd opened while the client was still logging in (see
/// [`Connection::connect_box_ahead`]). Not used, it is closed once its key exchange
/// is over (the task is left to end, within the login's bound): cut off in the middle,
/// sshd would log a broken pipe where a client that gave up leaves `Connection closed`.
pub(super) struct BoxAhead {
    /// The box, in the run it was connected in.
    to: crate::machines::RunningBox,
    connecting: tokio::task::JoinHandle<Result<Box<dyn BoxConnecting>, BoxSshdError>>,
}

/// Where a connection stands with its connection made ahead (once per connection).
pub(super) enum Ahead {
    /// No authentication request yet.
    NotTried,
    /// Made, not taken yet.
    Connecting(BoxAhead),
    /// None was made (no running box), or the login took it.
    Over,
}

/// What identifies a login set in a container: the container, account and password.
fn login_digest(container_id: &str, account: &str, password: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in [container_id, account, password] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize().into()
}

impl Connection {
    /// At the client's first authentication request: when the source's box runs
    /// already (its lingering box, or the box a session of it uses now), connects to
    /// that box's sshd while the login goes on. The login there, once the password is
    /// accepted, then no longer waits for sshd to start a connection's process and
    /// for the key exchange. Once per connection; a connection the session does not
    /// take is closed with it, as sshd sees a client that gave up (a frozen box is
    /// not thawed for it).
    pub(super) fn connect_box_ahead(&self, username: &str) {
        let mut ahead = self.box_ahead.lock().unwrap_or_else(|p| p.into_inner());
        if !matches!(*ahead, Ahead::NotTried) {
            return;
        }
        *ahead = Ahead::Over;
        let Some(sshd) = self.services.box_sshd.get() else {
            return;
        };
        if !self.services.machines.enabled() {
            return;
        }
        let source = self.context.src;
        let Some(to) = self.services.machines.running_box(source.ip(), username) else {
            return;
        };
        let sshd = Arc::clone(sshd);
        let id = to.container_id.clone();
        let connecting = tokio::spawn(async move { sshd.connect(&id, source).await });
        *ahead = Ahead::Connecting(BoxAhead { to, connecting });
    }

    /// The connection to the login's box: the one made ahead when it is to that box
    /// in the run the session got (not stopped and started again since) and worked,
    /// else a new one.
    async fn connect_box(
        &self,
        sshd: &dyn BoxSshd,
        login: &BoxLogin,
    ) -> Result<Box<dyn BoxConnecting>, BoxSshdError> {
        let ahead = match std::mem::replace(
            &mut *self.box_ahead.lock().unwrap_or_else(|p| p.into_inner()),
            Ahead::Over,
        ) {
            Ahead::Connecting(ahead) => Some(ahead),
            Ahead::NotTried | Ahead::Over => None,
        };
        let machine = self.state().machine.clone();
        let current = |ahead: &BoxAhead| {
            machine
                .as_ref()
                .is_some_and(|machine| ahead.to.is_current(machine, &login.container_id))
        };
        if let Some(ahead) = ahead.filter(current) {
            match ahead.connecting.await {
                Ok(Ok(connected)) => {
                    tracing::debug!(target: "hermes::session", session_id = %self.context.session, "the box's sshd was connected while the client logged in");
                    return Ok(connected);
                }
                Ok(Err(error)) => {
                    tracing::debug!(target: "hermes::session", session_id = %self.context.session, error = %crate::escape::escape_untrusted(&error.to_string()), "connecting to the box's sshd ahead failed; connecting again");
                }
                Err(_) => {}
            }
        }
        sshd.connect(&login.container_id, login.source).await
    }

    /// Gets the box ready for the session's login to its sshd: the account and its
    /// password set in the box (before the session's capture baseline, so that this
    /// change is not taken for the attacker's). Decides the session's path: the
    /// engine when there is no box sshd or no password it could check.
    pub(super) async fn prepare_box_login(self: &Arc<Self>, lease: &Lease) {
        let mut slot = self.box_slot.lock().await;
        self.prepare_once(&mut slot, lease).await;
    }

    async fn prepare_once(&self, slot: &mut BoxSlot, lease: &Lease) {
        if matches!(slot, BoxSlot::Untried) {
            *slot = self.prepare(lease).await;
        }
    }

    async fn prepare(&self, lease: &Lease) -> BoxSlot {
        let Some(sshd) = self.services.box_sshd.get() else {
            return BoxSlot::Engine;
        };
        let Some(password) = self.login_password().filter(|p| settable(p)) else {
            tracing::info!(target: "hermes::session", session_id = %self.context.session, "no password the box's sshd can check (an empty or multi-line one): this session goes through the engine");
            return BoxSlot::Engine;
        };
        let login = BoxLogin {
            container_id: lease.container_id.clone(),
            account: account_name(&self.username()),
            password,
            source: self.context.src,
        };
        let digest = login_digest(&login.container_id, &login.account, &login.password);
        let machine = self.state().machine.clone();
        let fresh = matches!(lease.source, LeaseSource::Pool | LeaseSource::OnDemand);
        let known = !fresh && machine.as_ref().is_some_and(|m| m.has_box_login(&digest));
        // The key exchange needs no password: it runs while the password is set.
        let connect = self.connect_box(sshd.as_ref(), &login);
        let connected = if known {
            connect.await
        } else {
            let (set, connected) = tokio::join!(self.set_login(lease, &login, fresh), connect);
            let written = match set {
                Ok(written) => written,
                Err(error) => return BoxSlot::Failed(error),
            };
            if let Some(machine) = &machine {
                machine.set_box_login(Some(digest));
            }
            self.account_files_are_not_the_sessions(lease, &login.account, written)
                .await;
            connected
        };
        BoxSlot::Prepared {
            login,
            known,
            connected,
        }
    }

    /// What setting the account wrote (the password files and their backups, a new
    /// account's home) is the server's doing, not the attacker's: the capture counts
    /// it as already there, and takes it only when the session changes it again.
    async fn account_files_are_not_the_sessions(
        &self,
        lease: &Lease,
        account: &str,
        written: Option<Vec<ChangedFile>>,
    ) {
        if self.services.capture.is_none() {
            return;
        }
        if let Some(files) = written {
            let mut seen = self.files();
            for file in files {
                seen.changed(&file.path, file.size, &file.modified);
            }
            return;
        }
        let mut paths: Vec<String> = ACCOUNT_FILES
            .iter()
            .flat_map(|file| [format!("/etc/{file}"), format!("/etc/{file}-")])
            .collect();
        if account != "root" {
            for file in HOME_FILES {
                paths.push(format!("/home/{account}/{file}"));
            }
        }
        let stat = self.services.sandbox.stat_files(lease, paths);
        if let Ok(Ok(files)) = tokio::time::timeout(SET_ACCOUNT_TIMEOUT, stat).await {
            let mut seen = self.files();
            for file in files {
                seen.changed(&file.path, file.size, &file.modified);
            }
        }
    }

    /// The session's login to its box's sshd, made once (while the client opens its
    /// first channel) and shared by its channels; None when this session's channels
    /// go through the engine.
    pub(super) async fn box_session(
        self: &Arc<Self>,
        lease: &Lease,
    ) -> Result<Option<Arc<dyn BoxSession>>, SandboxError> {
        let mut slot = self.box_slot.lock().await;
        self.prepare_once(&mut slot, lease).await;
        let (login, known, connected) = match std::mem::take(&mut *slot) {
            BoxSlot::Open(session) => {
                *slot = BoxSlot::Open(Arc::clone(&session));
                return Ok(Some(session));
            }
            BoxSlot::Failed(error) => {
                *slot = BoxSlot::Failed(error.clone());
                return Err(error);
            }
            BoxSlot::Closed => {
                *slot = BoxSlot::Closed;
                return Err(SandboxError::Unavailable("the session is over".into()));
            }
            BoxSlot::Engine | BoxSlot::Untried => {
                *slot = BoxSlot::Engine;
                return Ok(None);
            }
            BoxSlot::Prepared {
                login,
                known,
                connected,
            } => (login, known, connected),
        };
        let Some(sshd) = self.services.box_sshd.get() else {
            *slot = BoxSlot::Engine;
            return Ok(None);
        };
        let first = match connected {
            Ok(connected) => connected.authenticate(&login).await,
            Err(error) => Err(error),
        };
        let logged_in = match first {
            // Root in the box changed the password since: set it again, once.
            Err(BoxSshdError::Refused(_)) if known => match self.set_account(lease, &login).await {
                Ok(()) => sshd.login(&login).await.map_err(SandboxError::from),
                Err(error) => Err(error),
            },
            other => other.map_err(SandboxError::from),
        };
        match logged_in {
            Ok(session) => {
                *slot = BoxSlot::Open(Arc::clone(&session));
                Ok(Some(session))
            }
            Err(error) => {
                if let Some(machine) = &self.state().machine {
                    machine.set_box_login(None);
                }
                *slot = BoxSlot::Failed(error.clone());
                Err(error)
            }
        }
    }

    /// Ends the session's login to its box (the box's sshd writes its logout).
    pub(super) async fn close_box_session(&self) {
        let previous = std::mem::replace(&mut *self.box_slot.lock().await, BoxSlot::Closed);
        if let BoxSlot::Open(session) = previous {
            session.close().await;
        }
    }

    /// The password of the accepted login (password or keyboard-interactive).
    fn login_password(&self) -> Option<String> {
        let state = self.state();
        state
            .metadata
            .auth_attempts
            .iter()
            .rev()
            .find(|attempt| attempt.success)
            .map(|attempt| attempt.password.clone())
    }

    /// Sets the login's password on the box's account. In a box fresh from the pool
    /// whose account exists, Hermes writes /etc/shadow from the host as `chpasswd`
    /// would (the files written are returned); otherwise, or when that cannot be done
    /// here, `chpasswd` runs in the box ([`Self::set_account`]), which costs a process
    /// started through the engine. A box that has had a session is not written from
    /// the host: root there may have changed anything.
    async fn set_login(
        &self,
        lease: &Lease,
        login: &BoxLogin,
        fresh: bool,
    ) -> Result<Option<Vec<ChangedFile>>, SandboxError> {
        if fresh {
            let account = login.account.clone();
            let password = login.password.clone();
            // Hashed in the engine's worker, off the async threads.
            let edit: FileEdit = Box::new(move |old| {
                shadow::set_password(old, &account, password.as_bytes(), shadow::today())
            });
            let edited = tokio::time::timeout(
                SET_ACCOUNT_TIMEOUT,
                self.services.sandbox.edit_etc_file(lease, "shadow", edit),
            )
            .await
            .unwrap_or(Err(SandboxError::Timeout(SET_ACCOUNT_TIMEOUT.as_secs())));
            match edited {
                Ok(Some(files)) => return Ok(Some(files)),
                Ok(None) => {}
                Err(error) => {
                    tracing::info!(target: "hermes::session", session_id = %self.context.session, %error, "cannot set the account's password from the host: setting it in the box");
                }
            }
        }
        self.set_account(lease, login).await.map(|()| None)
    }

    /// Creates the account in the box when missing and sets its password.
    async fn set_account(&self, lease: &Lease, login: &BoxLogin) -> Result<(), SandboxError> {
        let spec = ProcessSpec {
            argv: vec![
                "/bin/bash".into(),
                "-c".into(),
                SET_ACCOUNT.into(),
                "bash".into(),
                login.account.clone(),
            ],
            env: Vec::new(),
            user: "root".into(),
            workdir: "/".into(),
            tty: None,
            standby_input: None,
            file_transfer: false,
        };
        let run = async {
            let mut process = self.services.sandbox.spawn(lease, spec).await?;
            let line = format!("{}:{}\n", login.account, login.password);
            let written = async {
                process.input.write_all(line.as_bytes()).await?;
                process.input.shutdown().await
            };
            written
                .await
                .map_err(|e| SandboxError::Engine(format!("setting the account: {e}")))?;
            let mut said = Vec::new();
            while let Some(chunk) = process
                .output
                .next_chunk()
                .await
                .map_err(|e| SandboxError::Engine(format!("setting the account: {e}")))?
            {
                let bytes = match chunk {
                    crate::sandbox::OutputChunk::Stdout(b)
                    | crate::sandbox::OutputChunk::Stderr(b) => b,
                };
                let room = SET_ACCOUNT_OUTPUT.saturating_sub(said.len());
                said.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
            let status = super::pump::wait_exit_status(process.control.as_ref()).await?;
            if status == Some(0) {
                Ok(())
            } else {
                Err(SandboxError::Engine(format!(
                    "setting the account {} failed ({status:?}): {}",
                    crate::escape::escape_untrusted(&login.account),
                    crate::escape::escape_untrusted(&String::from_utf8_lossy(&said))
                )))
            }
        };
        tokio::time::timeout(SET_ACCOUNT_TIMEOUT, run)
            .await
            .map_err(|_| SandboxError::Timeout(SET_ACCOUNT_TIMEOUT.as_secs()))?
    }
}

/// The channel's request as the box's sshd gets it.
pub(super) fn box_channel(
    program: &Program,
    pty: Option<&(String, TtySize)>,
    env: &[(String, String)],
    x11: Option<&X11Forward>,
    agent: bool,
) -> BoxChannel {
    BoxChannel {
        program: match program {
            Program::Shell => BoxProgram::Shell,
            Program::Exec(command) => BoxProgram::Exec(command.clone()),
            Program::Subsystem { name, .. } => BoxProgram::Subsystem(name.clone()),
        },
        pty: pty.cloned(),
        env: env.to_vec(),
        x11: x11.map(|x| (x.protocol.clone(), x.cookie.clone(), x.screen)),
        agent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_passwords_chpasswd_and_sshd_take_are_set() {
        assert!(settable("hunter2"));
        assert!(settable("with:colon and space"));
        assert!(!settable(""));
        assert!(!settable("two\nlines"));
        assert!(!settable("nul\0"));
        assert!(settable(&"x".repeat(MAX_PASSWORD_LEN)));
        assert!(!settable(&"x".repeat(MAX_PASSWORD_LEN + 1)));
    }

    #[test]
    fn a_login_is_known_by_container_account_and_password_together() {
        let one = login_digest("c1", "root", "pw");
        assert_eq!(one, login_digest("c1", "root", "pw"));
        assert_ne!(one, login_digest("c2", "root", "pw"));
        assert_ne!(one, login_digest("c1", "admin", "pw"));
        assert_ne!(one, login_digest("c1", "root", "pw2"));
        // Lengths keep the parts apart.
        assert_ne!(login_digest("c1", "ro", "otpw"), one);
    }

    #[test]
    fn the_account_script_parses() {
        let status = std::process::Command::new("bash")
            .args(["-n", "-c", SET_ACCOUNT])
            .status()
            .expect("bash");
        assert!(status.success());
        assert!(!SET_ACCOUNT.to_ascii_lowercase().contains("hermes"));
    }
}
