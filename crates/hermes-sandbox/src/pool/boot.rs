//! Waiting for a started box's init to finish booting: a box joins the ready set (and
//! a returning attacker's box is handed back) only once its services run, so a login
//! never races systemd starting sshd, cron or rsyslog.

use super::*;

/// Run in the box right after it starts, before anyone logs in. Docker leaves a
/// `/.dockerenv` in every container, and systemd, finding it, writes the engine's name in
/// /run/systemd/container; no server has either. systemd: `is-system-running
/// --wait` blocks until startup is over (before the manager listens it answers
/// `offline`, which is retried). sysvinit: booted once in a multi-user runlevel with
/// no boot script (`rc`, `startpar`) left running, seen twice 50 ms apart (init writes
/// the runlevel just before it starts that runlevel's scripts). Any other init has
/// nothing to wait for. An engine that manages the box's network mounts /etc/hosts in
/// its own layout at every start (a box made so by an earlier version, kept and started
/// again); a mounted /etc/hosts gets the Debian installer's (`HOSTS_FILE`), dated with
/// the installation. A box without that mount has the installer's file of its own.
const BOOT_WAIT: &str = r#"rm -f /.dockerenv /run/systemd/container
if [ -n "${HOSTS_FILE-}" ] && grep -q ' /etc/hosts ' /proc/self/mountinfo 2> /dev/null; then
  printf '%s' "$HOSTS_FILE" > /etc/hosts
  [ -z "${INSTALLED-}" ] || touch -d "@$INSTALLED" /etc/hosts
fi
unset HOSTS_FILE INSTALLED
booting() {
  set -- $(runlevel 2> /dev/null)
  case ${2-} in [2-5]) ;; *) return 0 ;; esac
  for comm in /proc/[0-9]*/comm; do
    read -r name < "$comm" 2> /dev/null || continue
    case $name in rc | startpar) return 0 ;; esac
  done
  return 1
}
# A hostnamed started during the boot saw /.dockerenv and would name the engine
# until it exits idle: the next `hostnamectl` starts a fresh one.
fresh_hostnamed() {
  ! systemctl -q is-active systemd-hostnamed 2> /dev/null || systemctl stop systemd-hostnamed
}
case $(readlink /proc/1/exe) in
*/systemd)
  while :; do
    state=$(systemctl is-system-running --wait 2> /dev/null)
    case $state in
    '' | offline | initializing | starting) sleep 0.05 ;;
    running) fresh_hostnamed; exit 0 ;;
    degraded) fresh_hostnamed; exit 3 ;;
    *) exit 4 ;;
    esac
  done ;;
*/init)
  while booting || { sleep 0.05; booting; }; do sleep 0.05; done ;;
esac
exit 0"#;

/// What the box's init said once booted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Booted {
    /// Every unit started (or an init with nothing to wait for).
    Running,
    /// Booted, but some unit failed (`systemctl --failed` says which).
    Degraded,
}

/// The wait's exit status, judged: the status says it, not its output (which the
/// engine's stream may not carry on every transport).
fn judge(status: Option<i64>) -> Result<Booted, String> {
    match status {
        Some(0) => Ok(Booted::Running),
        Some(3) => Ok(Booted::Degraded),
        Some(4) => Err("systemd is in neither state".to_owned()),
        Some(other) => Err(format!("the wait exited with {other}")),
        None => Err("the wait did not end".to_owned()),
    }
}

impl DockerSandbox {
    /// Waits until the box's init has booted, within `spawn_timeout`. A box whose
    /// init stops, or says anything but running or degraded, is not ready.
    pub(super) async fn wait_booted(&self, container_id: &str) -> Result<Booted, SandboxError> {
        let timeout = self.settings.spawn_timeout;
        let hosts = super::name_files::etc_hosts(&self.profile.hostname);
        let mut env = vec![("HOSTS_FILE".to_owned(), hosts)];
        if let Some(installed) = self.installed_at() {
            env.push(("INSTALLED".to_owned(), installed.to_string()));
        }
        let spec = ProcessSpec {
            argv: vec!["/bin/sh".to_owned(), "-c".to_owned(), BOOT_WAIT.to_owned()],
            env,
            // By number: an image without /etc/passwd has no name for it.
            user: "0".to_owned(),
            workdir: "/".to_owned(),
            tty: None,
            standby_input: None,
            file_transfer: false,
        };
        let run = async {
            let (exec_id, stream) = self.exec(container_id, &spec).await?;
            // Nothing is read from it: it ends when the wait does.
            let mut stream = stream;
            let mut sink = [0u8; 1024];
            while tokio::io::AsyncReadExt::read(&mut stream, &mut sink)
                .await
                .is_ok_and(|read| read > 0)
            {}
            loop {
                let inspect = self.docker.inspect_exec(&exec_id).await.map_err(engine)?;
                if inspect.running != Some(true) {
                    return Ok::<Option<i64>, SandboxError>(inspect.exit_code);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let status = match tokio::time::timeout(timeout, run).await {
            Ok(result) => result?,
            Err(_) => return Err(SandboxError::Timeout(timeout.as_secs())),
        };
        judge(status)
            .map_err(|state| SandboxError::Engine(format!("the box's init did not boot: {state}")))
    }

    /// [`Self::wait_booted`], logging a degraded boot.
    pub(super) async fn ensure_booted(&self, container_id: &str) -> Result<(), SandboxError> {
        if self.wait_booted(container_id).await? == Booted::Degraded {
            tracing::warn!(target: "hermes::sandbox", container_id = %short(container_id), "the box booted degraded: a unit failed (systemctl --failed in it says which)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_degraded_and_other_inits_are_ready_anything_else_is_not() {
        assert_eq!(judge(Some(0)), Ok(Booted::Running));
        assert_eq!(judge(Some(3)), Ok(Booted::Degraded));
        assert!(judge(Some(4)).is_err(), "systemd stopping");
        assert!(judge(Some(127)).is_err());
        assert!(judge(None).is_err(), "the wait did not end");
    }

    #[test]
    fn the_wait_parses_as_sh() {
        let status = std::process::Command::new("/bin/sh")
            .args(["-n", "-c", BOOT_WAIT])
            .status()
            .expect("sh");
        assert!(status.success());
    }
}
