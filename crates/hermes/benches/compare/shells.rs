//! Interactive shells: the time from "password accepted" (and from the password's
//! sending) to the prompt over sequential logins, and many sessions open at once, each typing a command a second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::clients::{Connection, Stream, at_prompt, connect, contains, login};
use crate::procfs::{self, PeakSampler};
use crate::report::Figures;
use crate::stats::Samples;
use crate::target::{Target, loopback_source};

/// Pause between sequential logins (the same for every server; Hermes's pool refills).
const BETWEEN_LOGINS: Duration = Duration::from_millis(300);

async fn close(connection: Connection, mut stream: Stream) {
    let _ = stream.send(b"exit\n").await;
    stream.read_until(|_| false, Duration::from_secs(5)).await;
    drop(stream);
    let _ = connection
        .disconnect(russh::Disconnect::ByApplication, "", "")
        .await;
}

/// One login's times in ms.
struct LoginTimes {
    /// Password accepted → the shell's first byte.
    first: f64,
    /// Password accepted → the prompt.
    prompt: f64,
    /// Password sent → the prompt: the whole login after the key exchange, with the
    /// server's own check of the password (sshd's PAM; Hermes's and its box's sshd's).
    whole: f64,
}

async fn time_one(target: &Target, source: Option<std::net::IpAddr>) -> Option<LoginTimes> {
    let mut connection = connect(target.addr, source).await?;
    let sent = Instant::now();
    let result = connection
        .authenticate_password(target.user.clone(), target.password.clone())
        .await
        .ok()?;
    if !result.success() {
        return None;
    }
    let accepted = Instant::now();
    let mut stream = Stream::shell(&connection).await?;
    stream
        .read_until(|tail| !tail.is_empty(), Duration::from_secs(30))
        .await
        .then_some(())?;
    let first = accepted.elapsed().as_secs_f64() * 1000.0;
    stream
        .read_until(at_prompt, Duration::from_secs(30))
        .await
        .then_some(())?;
    let prompt = accepted.elapsed().as_secs_f64() * 1000.0;
    let whole = sent.elapsed().as_secs_f64() * 1000.0;
    close(connection, stream).await;
    Some(LoginTimes {
        first,
        prompt,
        whole,
    })
}

pub async fn time_to_shell(target: &Target, logins: usize, figures: &mut Figures) {
    let mut first = Vec::new();
    let mut prompt = Vec::new();
    let mut whole = Vec::new();
    let mut failed = 0;
    for i in 0..logins {
        let source = target.on_loopback().then(|| loopback_source(2000 + i));
        match time_one(target, source).await {
            Some(times) => {
                first.push(times.first);
                prompt.push(times.prompt);
                whole.push(times.whole);
            }
            None => failed += 1,
        }
        tokio::time::sleep(BETWEEN_LOGINS).await;
    }
    if failed > 0 {
        println!("  {}: {failed} of {logins} logins failed", target.name);
    }
    let prompt = Samples::new(prompt);
    figures.add(
        "shell_prompt_p95",
        Samples::one(prompt.percentile(95.0).unwrap_or(f64::NAN)),
    );
    figures.add("shell_prompt", prompt);
    figures.add("shell_first_byte", Samples::new(first));
    figures.add("shell_whole_login", Samples::new(whole));
    figures.add("shell_failed", Samples::one(failed as f64));
}

/// A returning source: logins one after another from one address, as a bot that
/// comes back (the first login is not counted). Hermes hands each the box the
/// source's last session left lingering; sshd has nothing to keep.
pub async fn time_to_shell_returning(target: &Target, logins: usize, figures: &mut Figures) {
    let source = target.on_loopback().then(|| loopback_source(1999));
    let mut prompt = Vec::new();
    let mut whole = Vec::new();
    let mut failed = 0;
    for i in 0..=logins {
        match time_one(target, source).await {
            Some(times) if i > 0 => {
                prompt.push(times.prompt);
                whole.push(times.whole);
            }
            Some(_) => {}
            None => failed += 1,
        }
        tokio::time::sleep(BETWEEN_LOGINS).await;
    }
    if failed > 0 {
        println!(
            "  {}: {failed} of {} returning logins failed",
            target.name,
            logins + 1
        );
    }
    figures.add("shell_prompt_returning", Samples::new(prompt));
    figures.add("shell_whole_login_returning", Samples::new(whole));
}

/// Waits (at most 60 s) until the pool has refilled: `boxes` containers run and the
/// engine's processes have used under a tenth of a core for two seconds running. The
/// logins just made each took a box from the pool, and the pool makes and boots new
/// ones: that is the logins' cost (sshd's own login work is done before its window
/// too), and it would otherwise land in the typing window's session-seconds.
async fn settle_pool(target: &Target, boxes: usize) {
    let waited = engine_quiet(|| target.containers().len() >= boxes, false).await;
    println!(
        "  {}: the pool refilled ({} boxes running) after {waited:.1} s",
        target.name,
        target.containers().len(),
    );
}

/// Waits (at most 60 s) until the engine's processes have used under a tenth of a
/// core for two seconds running, with `ready` true; the seconds it took. Before a
/// server's sessions open: the boxes of the server measured before it are still
/// being stopped and the pool refilled, which would land in this one's figures.
/// With `whole_machine`, the machine as a whole also stays under a fifth of a core:
/// the last server's own work after its sessions (capture, archives) is over too.
async fn engine_quiet(ready: impl Fn() -> bool, whole_machine: bool) -> f64 {
    const STEP: Duration = Duration::from_millis(500);
    let started = Instant::now();
    let mut quiet = 0;
    while started.elapsed() < Duration::from_secs(60) && quiet < 4 {
        let before = procfs::engine_snapshot();
        let machine_before = procfs::machine_busy_seconds();
        tokio::time::sleep(STEP).await;
        let machine = procfs::machine_busy_seconds() - machine_before;
        let idle = procfs::engine_cpu_since(&before) < 0.1 * STEP.as_secs_f64()
            && (!whole_machine || machine < 0.2 * STEP.as_secs_f64());
        quiet = if idle && ready() { quiet + 1 } else { 0 };
    }
    started.elapsed().as_secs_f64()
}

/// What one concurrent session saw.
struct SessionResult {
    answered: usize,
    latencies_ms: Vec<f64>,
}

/// Types `echo t-K` a key at a time, once a second from `start`, and times each answer.
async fn typing_session(
    connection: Connection,
    mut stream: Stream,
    start: tokio::time::Instant,
    seconds: usize,
) -> (Connection, Stream, SessionResult) {
    let (answered, latencies_ms) = type_commands(&mut stream, start, seconds).await;
    let result = SessionResult {
        answered,
        latencies_ms,
    };
    (connection, stream, result)
}

async fn type_commands(
    stream: &mut Stream,
    start: tokio::time::Instant,
    seconds: usize,
) -> (usize, Vec<f64>) {
    let mut answered = 0;
    let mut latencies = Vec::new();
    for k in 0..seconds {
        tokio::time::sleep_until(start + Duration::from_secs(k as u64)).await;
        stream.clear();
        let line = format!("echo t-{k}");
        for key in line.bytes() {
            if !stream.send(&[key]).await {
                return (answered, latencies);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sent = Instant::now();
        let sent_clock = monotonic_ns();
        if !stream.send(b"\r").await {
            return (answered, latencies);
        }
        // The answer is its own line ("t-K" after a line end or bash's bracketed-paste
        // switch, which ends in CR); the echoed input reads "echo t-K".
        let answer = format!("t-{k}\r\n");
        let after_newline = format!("\n{answer}");
        let after_cr = format!("\r{answer}");
        let seen = stream
            .read_until(
                |tail| {
                    contains(tail, after_newline.as_bytes()) || contains(tail, after_cr.as_bytes())
                },
                Duration::from_secs(5),
            )
            .await;
        if seen {
            answered += 1;
            latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
            if std::env::var_os("BENCH_TRACE").is_some() {
                // When in its second the Enter went, and its answer's time: how much
                // of a burst the server absorbs.
                let second = start.into_std() + Duration::from_secs(k as u64);
                eprintln!(
                    "TRACE {k} {:.3} {:.3} {sent_clock}",
                    sent.duration_since(second).as_secs_f64() * 1000.0,
                    sent.elapsed().as_secs_f64() * 1000.0
                );
            }
        } else if std::env::var_os("BENCH_DEBUG").is_some() {
            eprintln!(
                "no answer to {line:?}: {:?}",
                String::from_utf8_lossy(stream.tail())
            );
        }
    }
    (answered, latencies)
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of kernel traces (`bpftrace`'s
/// `nsecs`, `perf record -k CLOCK_MONOTONIC`), to line a trace up with the Enters.
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return 0;
    }
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

pub async fn concurrency(target: &Target, sessions: usize, seconds: usize, figures: &mut Figures) {
    // The boxes of the sessions measured before (the last server's, lingering and
    // then stopped) are gone: at most a pool runs (a server given with --target
    // may keep a larger one: then this waits its 60 s).
    let waited = engine_quiet(
        || crate::target::boxes_running() <= crate::target::POOL_SIZE as usize,
        true,
    )
    .await;
    println!("  {}: the engine quiet after {waited:.1} s", target.name);
    // Open them all, eight logins at a time.
    let gate = Arc::new(Semaphore::new(8));
    let ramp_started = Instant::now();
    let mut opening = Vec::new();
    for i in 0..sessions {
        let gate = Arc::clone(&gate);
        let target = target.clone();
        opening.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            let source = target.on_loopback().then(|| loopback_source(5000 + i));
            let connection = login(&target, source).await?;
            let mut stream = Stream::shell(&connection).await?;
            stream
                .read_until(at_prompt, Duration::from_secs(60))
                .await
                .then_some((connection, stream))
        }));
    }
    let mut open = Vec::new();
    for task in opening {
        if let Ok(Some(session)) = task.await {
            open.push(session);
        }
    }
    let ramp = ramp_started.elapsed().as_secs_f64();
    println!(
        "  {}: {} of {sessions} sessions at their prompt after {ramp:.1} s",
        target.name,
        open.len()
    );

    if target.sensor.is_some() {
        settle_pool(target, open.len() + crate::target::POOL_SIZE as usize).await;
    }
    let boxes = target.containers();

    // Everyone types for `seconds`.
    let sampler = PeakSampler::start(target.pid, &target.comm, Duration::from_millis(250));
    let cpu_before = target
        .pid
        .map(|pid| procfs::tree_cpu_split(pid, &target.comm));
    // A server of containers: the engine's processes and the boxes' own CPU are
    // part of its cost, over the same window.
    let engine_before = (!boxes.is_empty()).then(procfs::engine_snapshot);
    let boxes_before = procfs::containers_cpu_seconds(&boxes);
    let start = tokio::time::Instant::now() + Duration::from_millis(500);
    let typing: Vec<_> = open
        .into_iter()
        .map(|(connection, stream)| {
            tokio::spawn(typing_session(connection, stream, start, seconds))
        })
        .collect();
    let mut results = Vec::new();
    let mut sessions_left = Vec::new();
    for task in typing {
        if let Ok((connection, stream, result)) = task.await {
            sessions_left.push((connection, stream));
            results.push(result);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = match (target.pid, cpu_before) {
        (Some(pid), Some(before)) => {
            let after = procfs::tree_cpu_split(pid, &target.comm);
            Some((after.0 - before.0, after.1 - before.1))
        }
        _ => None,
    };
    let engine_cpu = engine_before.as_ref().map(procfs::engine_cpu_since);
    let boxes_cpu = procfs::containers_cpu_seconds(&boxes) - boxes_before;
    let machine_used = procfs::machine_used_kib();
    let engine_rss = engine_before.as_ref().map(|_| procfs::engine_rss_kib());
    let pss = target
        .pid
        .map(|pid| procfs::tree_pss_kib(pid, &target.comm));
    let containers = procfs::containers_memory_kib(&target.containers());
    let peak = sampler.finish();

    let opened = results.len();
    let answered: usize = results.iter().map(|r| r.answered).sum();
    let expected = sessions * seconds;
    let latencies: Vec<f64> = results
        .iter()
        .flat_map(|r| r.latencies_ms.clone())
        .collect();
    let latencies = Samples::new(latencies);
    figures.add("conc_opened", Samples::one(opened as f64));
    figures.add("conc_failures", Samples::one((expected - answered) as f64));
    figures.add("conc_ramp", Samples::one(ramp));
    figures.add(
        "conc_latency_p95",
        Samples::one(latencies.percentile(95.0).unwrap_or(f64::NAN)),
    );
    figures.add("conc_latency", latencies);
    if let Some((own, rest)) = peak {
        figures.add("conc_rss", Samples::one(own as f64 / 1024.0));
        if rest > 0 {
            figures.add("conc_sessions_rss", Samples::one(rest as f64 / 1024.0));
        }
    }
    if let Some((own, rest)) = pss {
        figures.add("conc_pss", Samples::one(own as f64 / 1024.0));
        if rest > 0 {
            figures.add("conc_sessions_pss", Samples::one(rest as f64 / 1024.0));
        }
    }
    if containers > 0 {
        figures.add(
            "conc_sessions_rss",
            Samples::one(containers as f64 / 1024.0),
        );
    }
    figures.add(
        "conc_machine_mem",
        Samples::one(machine_used as f64 / 1024.0),
    );
    if let Some(kib) = engine_rss {
        figures.add("conc_engine_rss", Samples::one(kib as f64 / 1024.0));
    }
    if let Some((own, rest)) = cpu {
        let session_seconds = (opened.max(1) as f64) * elapsed;
        let per = |seconds: f64| Samples::one(seconds * 1000.0 / session_seconds);
        figures.add("conc_cpu", per(own));
        // The shells: the server's children, or the boxes' processes.
        let sessions = rest + boxes_cpu.max(0.0);
        if sessions > 0.0 {
            figures.add("conc_sessions_cpu", per(sessions));
        }
        if let Some(engine) = engine_cpu {
            figures.add("conc_engine_cpu", per(engine));
        }
        figures.add(
            "conc_total_cpu",
            per(own + sessions + engine_cpu.unwrap_or(0.0)),
        );
    }
    println!(
        "  {}: {answered} of {expected} commands answered",
        target.name
    );
    let closing: Vec<_> = sessions_left
        .into_iter()
        .map(|(connection, stream)| tokio::spawn(close(connection, stream)))
        .collect();
    for task in closing {
        let _ = task.await;
    }
}
