//! A real Debian 12 server to compare the box with: the machine
//! `images/reference-vm/build.sh` builds, booted with qemu on KVM, with its SSH port
//! forwarded to loopback and user networking restricted (nothing leaves the machine).

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::free_port;

/// The machine's memory and CPUs: the box's limits (256 MiB, one core), so `free`
/// and `nproc` compare meaningfully.
pub const MEMORY_MIB: u64 = 256;
const CPUS: u32 = 1;

/// How long a boot may take to the SSH banner: seconds with KVM, about a minute
/// emulated (TCG); generous for a loaded machine.
const BOOT_TIMEOUT_KVM: Duration = Duration::from_secs(120);
const BOOT_TIMEOUT_TCG: Duration = Duration::from_secs(400);

/// Where the built machine is kept: `HERMES_REFVM_DIR`, else
/// /var/lib/hermes-test/refvm.
pub fn machine_dir() -> PathBuf {
    std::env::var_os("HERMES_REFVM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/hermes-test/refvm"))
}

/// The repository's root (this crate is crates/hermes-test-support).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// How qemu runs the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation: boots in seconds, times like a real server.
    Kvm,
    /// Emulation: about a minute to boot and slow, but the same machine.
    Tcg,
}

/// The accelerator for this host: `HERMES_REFVM_ACCEL` (`kvm` or `tcg`) when set;
/// else KVM where /dev/kvm runs ordinary guests; else None, after saying loudly
/// that the differential tests skip (issue 17: skip where KVM is missing, under
/// CI=true too). A /dev/kvm served only by `kvm_pvm` (PVM, the nested
/// virtualisation of some cloud sandboxes) runs PVM-enabled guest kernels only,
/// and Debian's is not one: it hangs right after the real-mode setup. There the
/// machine is emulated (TCG) instead, and the test says so.
pub fn accelerator() -> Option<Accel> {
    match std::env::var("HERMES_REFVM_ACCEL").as_deref() {
        Ok("kvm") => return Some(Accel::Kvm),
        Ok("tcg") => return Some(Accel::Tcg),
        _ => {}
    }
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !usable {
        eprintln!(
            "\n*** SKIPPED: /dev/kvm is missing or not usable: the reference Debian 12 machine \
             cannot boot, so the differential test did not run ***\n"
        );
        return None;
    }
    let hardware = ["kvm_intel", "kvm_amd"]
        .iter()
        .any(|m| Path::new("/sys/module").join(m).exists());
    if hardware {
        return Some(Accel::Kvm);
    }
    eprintln!(
        "\n*** /dev/kvm here is not hardware KVM (no kvm_intel or kvm_amd module; PVM runs \
         only PVM guest kernels): the reference machine is EMULATED (TCG), slower to boot and \
         to run; set HERMES_REFVM_ACCEL=kvm to force KVM ***\n"
    );
    Some(Accel::Tcg)
}

/// A booted reference machine; dropping it kills qemu.
pub struct ReferenceVm {
    child: Child,
    /// The loopback port forwarded to the machine's port 22.
    pub port: u16,
    /// Seconds from starting qemu to the SSH banner.
    pub boot_time: Duration,
    console: PathBuf,
    _dir: tempfile::TempDir,
}

/// Builds the machine (a no-op when its recipe has not changed) and returns how long
/// that took; panics with the script's output when the build fails.
pub fn build() -> Duration {
    let started = Instant::now();
    let script = repo_root().join("images/reference-vm/build.sh");
    let output = Command::new("bash")
        .arg(&script)
        .env("HERMES_REFVM_DIR", machine_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} failed ({}):\n{}{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    started.elapsed()
}

impl ReferenceVm {
    /// Boots the built machine (from a throwaway snapshot of its disk: every boot
    /// starts from the same installed state) and waits for its SSH banner.
    pub fn boot(accel: Accel) -> ReferenceVm {
        let machine = machine_dir();
        let cmdline = std::fs::read_to_string(machine.join("cmdline")).unwrap_or_else(|e| {
            panic!(
                "{}/cmdline: {e} (build the machine first)",
                machine.display()
            )
        });
        let dir = tempfile::tempdir().expect("tempdir");
        // qemu cannot bind port 0 and say which port it took: a port free a moment
        // ago, and another when qemu exits because something took it (bounded).
        for _ in 0..5 {
            let port = free_port();
            let console = dir.path().join(format!("console-{port}.log"));
            let errors = dir.path().join(format!("qemu-{port}.log"));
            let started = Instant::now();
            let mut child = Command::new("qemu-system-x86_64")
                .args(match accel {
                    Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
                    Accel::Tcg => ["-accel", "tcg", "-cpu", "max"],
                })
                .args(["-machine", "pc"])
                .args(["-m", &format!("{MEMORY_MIB}M"), "-smp", &CPUS.to_string()])
                .args(["-display", "none", "-monitor", "none"])
                .arg("-serial")
                .arg(format!("file:{}", console.display()))
                .arg("-kernel")
                .arg(machine.join("vmlinuz"))
                .arg("-initrd")
                .arg(machine.join("initrd.img"))
                .args(["-append", cmdline.trim()])
                .arg("-drive")
                .arg(format!(
                    "file={},format=raw,if=virtio,snapshot=on",
                    machine.join("disk.img").display()
                ))
                // restrict=on: the machine reaches nothing but the forwarded port.
                .args([
                    "-netdev",
                    &format!("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22"),
                    "-device",
                    "virtio-net-pci,netdev=n0,addr=0x3",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&errors).expect("qemu log"))
                .spawn()
                .expect("spawn qemu-system-x86_64");
            let timeout = match accel {
                Accel::Kvm => BOOT_TIMEOUT_KVM,
                Accel::Tcg => BOOT_TIMEOUT_TCG,
            };
            match wait_for_banner(&mut child, port, &errors, timeout) {
                Ok(()) => {
                    return ReferenceVm {
                        child,
                        port,
                        boot_time: started.elapsed(),
                        console,
                        _dir: dir,
                    };
                }
                Err(Exit::Qemu(stderr)) if stderr.contains("hostfwd") => continue,
                Err(Exit::Qemu(stderr)) => panic!("qemu exited: {stderr}"),
                Err(Exit::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "no SSH banner within {timeout:?}; console:\n{}",
                        std::fs::read_to_string(&console).unwrap_or_default()
                    );
                }
            }
        }
        panic!("qemu could not forward any of 5 free ports");
    }

    /// What the machine printed on its serial console so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }
}

enum Exit {
    Qemu(String),
    Timeout,
}

/// Waits until the forwarded port answers with an SSH banner. User networking
/// accepts a connection on the host side before the guest listens (and then closes
/// it), so a connect alone proves nothing: the banner does.
fn wait_for_banner(
    child: &mut Child,
    port: u16,
    errors: &Path,
    timeout: Duration,
) -> Result<(), Exit> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return Err(Exit::Qemu(
                std::fs::read_to_string(errors).unwrap_or_default(),
            ));
        }
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 64];
            if let Ok(n) = stream.read(&mut buf)
                && buf[..n].starts_with(b"SSH-2.0-")
            {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(Exit::Timeout)
}

impl Drop for ReferenceVm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let console = self.console();
            let start = console.len().saturating_sub(6000);
            let start = (start..console.len())
                .find(|&i| console.is_char_boundary(i))
                .unwrap_or(console.len());
            eprintln!(
                "--- reference machine console (tail) ---\n{}\n---",
                &console[start..]
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
