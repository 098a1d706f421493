//! Waiting for a started box's init to finish booting: a box joins the ready set (and
//! a returning attacker's box is handed back) only once its services run, so a login
//! never races systemd starting sshd, cron or rsyslog.

use super::*;
use hermes_core::sandbox::ProcessOutput;

/// Run in the box right after it starts, before anyone logs in. Docker leaves a
/// `/.dockerenv` in every container; no server has one. systemd: `is-system-running
/// --wait` blocks until startup is over (before the manager listens it answers
/// `offline`, which is retried). sysvinit: booted once in a multi-user runlevel with
/// no boot script (`rc`, `startpar`) left running, seen twice 50 ms apart (init writes
/// the runlevel just before it starts that runlevel's scripts). Any other init has
/// nothing to wait for.
const BOOT_WAIT: &str = r#"rm -f /.dockerenv
booting() {
  set -- $(runlevel 2> /dev/null)
  case ${2-} in [2-5]) ;; *) return 0 ;; esac
  for comm in /proc/[0-9]*/comm; do
    read -r name < "$comm" 2> /dev/null || continue
    case $name in rc | startpar) return 0 ;; esac
  done
  return 1
}
case $(readlink /proc/1/exe) in
*/systemd)
  while :; do
    state=$(systemctl is-system-running --wait 2> /dev/null)
    case $state in
    '' | offline | initializing | starting) sleep 0.05 ;;
    *) echo "$state"; exit 0 ;;
    esac
  done ;;
*/init)
  while booting || { sleep 0.05; booting; }; do sleep 0.05; done
  echo running ;;
*) echo none ;;
esac"#;

/// The longest state line we read back.
const MAX_STATE_BYTES: usize = 64;

/// What the box's init said once booted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Booted {
    /// Every unit started.
    Running,
    /// Booted, but some unit failed (`systemctl --failed` says which).
    Degraded,
    /// PID 1 is not systemd: nothing to wait for.
    NoManager,
}

/// The state line the script printed, judged.
fn judge(output: &str) -> Result<Booted, String> {
    match output.trim() {
        "running" => Ok(Booted::Running),
        "degraded" => Ok(Booted::Degraded),
        "none" => Ok(Booted::NoManager),
        other => Err(hermes_core::escape::escape_untrusted(other).into_owned()),
    }
}

impl DockerSandbox {
    /// Waits until the box's init has booted, within `spawn_timeout`. A box whose
    /// init stops, or says anything but running or degraded, is not ready.
    pub(super) async fn wait_booted(&self, container_id: &str) -> Result<Booted, SandboxError> {
        let timeout = self.settings.spawn_timeout;
        let spec = ProcessSpec {
            argv: vec!["/bin/sh".to_owned(), "-c".to_owned(), BOOT_WAIT.to_owned()],
            env: Vec::new(),
            user: "root".to_owned(),
            workdir: "/".to_owned(),
            tty: None,
            standby_input: None,
            file_transfer: false,
        };
        let read = async {
            let (_exec_id, stream) = self.exec(container_id, &spec).await?;
            let (reader, _writer) = tokio::io::split(stream);
            let mut output = MuxOutput::new(reader);
            let mut text = Vec::new();
            while let Some(chunk) = output
                .next_chunk()
                .await
                .map_err(|error| SandboxError::Engine(error.to_string()))?
            {
                if let OutputChunk::Stdout(bytes) = chunk {
                    text.extend_from_slice(&bytes);
                    if text.len() > MAX_STATE_BYTES {
                        break;
                    }
                }
            }
            Ok::<Vec<u8>, SandboxError>(text)
        };
        let text = match tokio::time::timeout(timeout, read).await {
            Ok(result) => result?,
            Err(_) => return Err(SandboxError::Timeout(timeout.as_secs())),
        };
        judge(&String::from_utf8_lossy(&text)).map_err(|state| {
            SandboxError::Engine(format!("the box's init did not boot: state {state:?}"))
        })
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
        assert_eq!(judge("running\n"), Ok(Booted::Running));
        assert_eq!(judge("degraded\n"), Ok(Booted::Degraded));
        assert_eq!(judge("none\n"), Ok(Booted::NoManager));
        assert!(judge("stopping\n").is_err());
        assert!(judge("").is_err(), "the script ended without a state");
        assert_eq!(judge("\u{1b}[2J"), Err("\\x1b[2J".to_owned()));
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
