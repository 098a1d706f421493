//! The OpenSSH client end to end: `ssh host true` round trips, and bulk data through a
//! terminal (`cat` of a file) and through scp, up and down.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::clients::{OpenSsh, Stream, at_prompt, contains, login};
use crate::report::Figures;
use crate::stats::Samples;
use crate::target::Target;

/// Pause between runs (the same for every server; Hermes's pool refills).
const BETWEEN_RUNS: Duration = Duration::from_millis(300);
const REMOTE_TEXT: &str = "/tmp/hermes-bench.txt";
const REMOTE_BINARY: &str = "/tmp/hermes-bench.bin";

/// `ssh` to `target` with `options` (before the destination) and `remote` (the
/// command, after it).
fn ssh(openssh: &OpenSsh, target: &Target, options: &[&str], remote: &[&str]) -> Command {
    let mut command = openssh.command("ssh", target);
    command
        .args(options)
        .args(["-l", &target.user])
        .arg(target.addr.ip().to_string())
        .args(remote);
    command
}

pub fn exec_round_trip(openssh: &OpenSsh, target: &Target, runs: usize, figures: &mut Figures) {
    let mut times = Vec::new();
    for _ in 0..runs {
        let mut command = ssh(openssh, target, &[], &["true"]);
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let started = Instant::now();
        if command.status().is_ok_and(|s| s.success()) {
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        std::thread::sleep(BETWEEN_RUNS);
    }
    if times.len() < runs {
        println!(
            "  {}: {} of {runs} `ssh host true` runs failed",
            target.name,
            runs - times.len()
        );
    }
    figures.add("exec", Samples::new(times));
}

/// `cat` of a `megabytes` MB text file through a terminal, `runs` times in one shell;
/// MB/s of each.
pub async fn terminal(target: &Target, megabytes: usize, runs: usize, figures: &mut Figures) {
    let Some(connection) = login(target, None).await else {
        println!("  {}: login failed, no terminal figure", target.name);
        return;
    };
    let size = megabytes * 1_000_000;
    // Printable text of exactly `size` bytes in 76-column lines.
    let make = format!(
        "head -c {} /dev/urandom | base64 -w 76 | head -c {size} > {REMOTE_TEXT}",
        size * 3 / 4 + 1024
    );
    if !Stream::exec_to_end(&connection, &make, Duration::from_secs(120)).await {
        println!("  {}: could not write the test file", target.name);
        return;
    }
    let Some(mut shell) = Stream::shell(&connection).await else {
        return;
    };
    if !shell.read_until(at_prompt, Duration::from_secs(30)).await {
        println!("  {}: no prompt for the terminal figure", target.name);
        return;
    }
    let mut rates = Vec::new();
    for _ in 0..runs {
        shell.clear();
        // The echoed command line reads `__E""ND__`; only the output has `__END__`
        // (never in base64) on a line of its own.
        let command = format!("cat {REMOTE_TEXT}; echo; echo __E\"\"ND__\r");
        let started = Instant::now();
        if !shell.send(command.as_bytes()).await {
            break;
        }
        let done = shell
            .read_until(
                |tail| contains(tail, b"\n__END__\r"),
                Duration::from_secs(300),
            )
            .await;
        if !done {
            println!("  {}: the cat did not finish", target.name);
            break;
        }
        rates.push(size as f64 / 1e6 / started.elapsed().as_secs_f64());
        shell.read_until(at_prompt, Duration::from_secs(10)).await;
    }
    let _ = shell
        .send(format!("rm -f {REMOTE_TEXT}; exit\r").as_bytes())
        .await;
    shell.read_until(|_| false, Duration::from_secs(10)).await;
    figures.add("pty", Samples::new(rates));
}

/// A master connection the scp runs share (one login, so one Hermes container
/// holds the uploaded file for the download).
struct Master {
    child: Child,
    socket: String,
}

impl Master {
    fn open(openssh: &OpenSsh, target: &Target, dir: &Path) -> Option<Master> {
        let socket = dir.join(format!("master-{}.sock", target.addr.port()));
        let _ = std::fs::remove_file(&socket);
        let socket = socket.to_string_lossy().into_owned();
        let child = ssh(openssh, target, &["-M", "-S", &socket, "-N"], &[])
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("BENCH_DEBUG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .ok()?;
        let mut master = Master { child, socket };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = master.child.try_wait() {
                return None;
            }
            let check = ssh(openssh, target, &["-S", &master.socket, "-O", "check"], &[])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if check.is_ok_and(|s| s.success()) {
                return Some(master);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = master.child.kill();
        None
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scp(openssh: &OpenSsh, target: &Target, master: &Master, from: &str, to: &str) -> Option<f64> {
    let mut command = openssh.command("scp", target);
    command
        .args(["-o", &format!("ControlPath={}", master.socket)])
        .arg(from)
        .arg(to)
        .stdout(Stdio::null());
    let started = Instant::now();
    let output = command.output().ok()?;
    if !output.status.success() {
        println!(
            "  {}: scp {from} {to}: {}",
            target.name,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        return None;
    }
    Some(started.elapsed().as_secs_f64())
}

/// scp (OpenSSH 9's SFTP protocol) of `payload` up and back down, `runs` times.
pub fn scp_rates(
    openssh: &OpenSsh,
    target: &Target,
    payload: &Path,
    dir: &Path,
    runs: usize,
    figures: &mut Figures,
) {
    let Some(master) = Master::open(openssh, target, dir) else {
        println!("  {}: no master connection, no scp figure", target.name);
        return;
    };
    let bytes = std::fs::metadata(payload).map(|m| m.len()).unwrap_or(0) as f64;
    let remote = format!("{}:{REMOTE_BINARY}", OpenSsh::destination(target));
    let back = dir.join("back.bin");
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        if let Some(seconds) = scp(
            openssh,
            target,
            &master,
            &payload.to_string_lossy(),
            &remote,
        ) {
            up.push(bytes / 1e6 / seconds);
        }
        if let Some(seconds) = scp(openssh, target, &master, &remote, &back.to_string_lossy()) {
            let whole = std::fs::metadata(&back).is_ok_and(|m| m.len() as f64 == bytes);
            if whole {
                down.push(bytes / 1e6 / seconds);
            } else {
                println!("  {}: the download came back incomplete", target.name);
            }
        }
        let _ = std::fs::remove_file(&back);
    }
    let _ = ssh(
        openssh,
        target,
        &["-S", &master.socket],
        &["rm", "-f", REMOTE_BINARY],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .status();
    figures.add("scp_up", Samples::new(up));
    figures.add("scp_down", Samples::new(down));
}
