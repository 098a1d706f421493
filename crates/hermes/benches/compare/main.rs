//! Hermes side by side with a real Debian sshd (or any SSH servers): authentication
//! rate and CPU, time to a shell, `ssh host true`, 200 concurrent typing sessions,
//! bulk data through a terminal and scp, idle cost. Prints one table with the ratios
//! and the targets; `--record FILE` appends it with the date, commit and machine.
//!
//! `scripts/bench.sh` (or `cargo bench -p hermes --bench compare -- [options]`):
//!
//! ```text
//! --only auth,shell,exec,throughput,concurrency,idle   which measurements (all)
//! --target name=N,host=H,port=P,user=U,password=W[,pid=PID][,comm=NAME]
//!                       a server to measure (repeatable); without it the harness
//!                       starts Hermes and Debian's sshd on loopback
//! --runs N              repeated runs of auth, throughput (3)
//! --logins N            sequential logins for the time to a shell (50)
//! --exec-runs N         `ssh host true` runs (20)
//! --sessions N          concurrent sessions (200)      --seconds N   typing time (30)
//! --parallel N          authentication clients (64)    --auth-seconds N  per run (10)
//! --idle N              idle connections (1000)        --megabytes N  bulk size (100)
//! --record FILE         append the table to FILE
//! ```
//!
//! `BENCH_DEBUG=1` shows the clients' failures; `BENCH_TRACE=1` prints to stderr, for
//! every answered command of the typing sessions, `TRACE second ms-into-it ms-to-answer
//! sent-at` (the Enter's CLOCK_MONOTONIC in ns, the clock of bpftrace and perf traces).
//!
//! Every load is bounded in count and time. CPU and memory come from /proc for
//! servers whose pid is known (local ones); nothing is asserted.

use hermes_test_support::{client, harness, reference};

mod auth;
mod clients;
mod idle;
mod procfs;
mod report;
mod shells;
mod stats;
mod target;
mod transfer;

use std::io::Write as _;
use std::process::Command;

use report::Figures;
use target::Target;

struct Args {
    only: Vec<String>,
    targets: Vec<Target>,
    runs: usize,
    logins: usize,
    exec_runs: usize,
    sessions: usize,
    seconds: usize,
    parallel: usize,
    auth_seconds: u64,
    idle: usize,
    megabytes: usize,
    record: Option<String>,
}

const ALL: &[&str] = &["idle", "shell", "exec", "throughput", "auth", "concurrency"];

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        only: ALL.iter().map(|s| s.to_string()).collect(),
        targets: Vec::new(),
        runs: 3,
        logins: 50,
        exec_runs: 20,
        sessions: 200,
        seconds: 30,
        parallel: 64,
        auth_seconds: 10,
        idle: 1000,
        megabytes: 100,
        record: None,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        if flag == "--bench" {
            continue; // cargo bench passes it
        }
        let mut value = || given.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |text: String| {
            text.parse::<usize>()
                .map_err(|_| format!("{flag}: {text:?} is not a number"))
        };
        match flag.as_str() {
            "--only" => {
                let list = value()?;
                args.only = list.split(',').map(|s| s.trim().to_owned()).collect();
                if let Some(bad) = args.only.iter().find(|m| !ALL.contains(&m.as_str())) {
                    return Err(format!(
                        "--only: unknown measurement {bad:?} ({})",
                        ALL.join(",")
                    ));
                }
            }
            "--target" => args.targets.push(Target::parse(&value()?)?),
            "--runs" => args.runs = number(value()?)?.max(1),
            "--logins" => args.logins = number(value()?)?.max(1),
            "--exec-runs" => args.exec_runs = number(value()?)?.max(1),
            "--sessions" => args.sessions = number(value()?)?.max(1),
            "--seconds" => args.seconds = number(value()?)?.max(1),
            "--parallel" => args.parallel = number(value()?)?.max(1),
            "--auth-seconds" => args.auth_seconds = number(value()?)?.max(1) as u64,
            "--idle" => args.idle = number(value()?)?,
            "--megabytes" => args.megabytes = number(value()?)?.max(1),
            "--record" => args.record = Some(value()?),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(args)
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The commit measured (with `+changes` when the tree differs from it).
fn commit() -> String {
    let head = command_output("git", &["rev-parse", "--short", "HEAD"]);
    let dirty =
        !command_output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    format!("{head}{}", if dirty { "+changes" } else { "" })
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    format!(
        "{cores} cores ({model}), {memory_gib:.0} GiB, Linux {}",
        command_output("uname", &["-r"])
    )
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("compare: {message}");
            std::process::exit(2);
        }
    };
    harness::raise_fd_limit();
    let local = if args.targets.is_empty() {
        hermes_test_support::require_docker!();
        Some(target::start_local(true, true, args.sessions))
    } else {
        None
    };
    let targets: Vec<Target> = match &local {
        Some(local) => local.targets.clone(),
        None => args.targets.clone(),
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let openssh = clients::OpenSsh::new(dir.path());
    let payload = dir.path().join("payload.bin");
    let mut figures: Vec<Figures> = targets.iter().map(|_| Figures::default()).collect();
    let wanted = |m: &str| args.only.iter().any(|o| o == m);
    let started = std::time::Instant::now();

    for (target, figures) in targets.iter().zip(figures.iter_mut()) {
        if wanted("idle") && args.idle > 0 {
            println!("idle: {} ({} connections)", target.name, args.idle);
            runtime.block_on(idle::measure(target, args.idle, figures));
        }
    }
    for (target, figures) in targets.iter().zip(figures.iter_mut()) {
        if wanted("shell") {
            println!("time to a shell: {} ({} logins)", target.name, args.logins);
            runtime.block_on(shells::time_to_shell(target, args.logins, figures));
            println!("returning source: {} ({} logins)", target.name, args.logins);
            runtime.block_on(shells::time_to_shell_returning(
                target,
                args.logins,
                figures,
            ));
        }
        if wanted("exec") {
            println!("`ssh host true`: {} ({} runs)", target.name, args.exec_runs);
            transfer::exec_round_trip(&openssh, target, args.exec_runs, figures);
        }
    }
    if wanted("throughput") {
        harness::binary_file(&payload, args.megabytes * 1_000_000);
        for (target, figures) in targets.iter().zip(figures.iter_mut()) {
            println!(
                "throughput: {} ({} MB, {} runs)",
                target.name, args.megabytes, args.runs
            );
            runtime.block_on(transfer::terminal(
                target,
                args.megabytes,
                args.runs,
                figures,
            ));
            transfer::scp_rates(&openssh, target, &payload, dir.path(), args.runs, figures);
        }
    }
    for (target, figures) in targets.iter().zip(figures.iter_mut()) {
        if wanted("auth") {
            println!(
                "authentication: {} ({} clients, {} runs of {} s)",
                target.name, args.parallel, args.runs, args.auth_seconds
            );
            runtime.block_on(auth::measure(
                target,
                args.parallel,
                args.auth_seconds,
                args.runs,
                figures,
            ));
        }
    }
    for (target, figures) in targets.iter().zip(figures.iter_mut()) {
        if wanted("concurrency") {
            println!(
                "concurrency: {} ({} sessions, {} s)",
                target.name, args.sessions, args.seconds
            );
            runtime.block_on(shells::concurrency(
                target,
                args.sessions,
                args.seconds,
                figures,
            ));
        }
    }

    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let table = report::table(&names, &figures);
    let heading = format!(
        "## {} UTC, commit {}\n\nMachine: {}. Run: {}; {:.0} s.\n",
        command_output("date", &["-u", "+%Y-%m-%d %H:%M"]),
        commit(),
        machine(),
        parameters(&args),
        started.elapsed().as_secs_f64()
    );
    println!("\n{heading}\n{table}");
    if let Some(path) = &args.record {
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| write!(f, "\n{heading}\n{table}"));
        match written {
            Ok(()) => println!("appended to {path}"),
            Err(error) => eprintln!("compare: could not append to {path}: {error}"),
        }
    }
    drop(local);
}

fn parameters(args: &Args) -> String {
    format!(
        "{} auth clients × {} s × {} runs; {} logins; {} exec runs; {} MB × {} runs; {} sessions × {} s; {} idle connections",
        args.parallel,
        args.auth_seconds,
        args.runs,
        args.logins,
        args.exec_runs,
        args.megabytes,
        args.runs,
        args.sessions,
        args.seconds,
        args.idle
    )
}
