//! `hermes`: command line entry point.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod archive;
mod cast;
mod cmd;
mod logging;
mod metrics_http;
mod priority;
mod replay;
mod run;
mod sessions;
mod source;
mod terminal;
mod timeline;
mod when;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hermes_core::config::{self, ConfigError, LogLevel};

/// Hermes, a high-interaction SSH honeypot: real shells in locked-down containers.
#[derive(Debug, Parser)]
#[command(name = "hermes", version, about)]
struct Cli {
    /// Log level, overriding `logging.level` from the configuration.
    #[arg(long, global = true, value_enum)]
    log_level: Option<LevelArg>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the honeypot.
    Run {
        /// Configuration file.
        #[arg(short, long, default_value = "config/hermes.yaml")]
        config: PathBuf,
    },
    /// Validate a configuration file: print the effective configuration (exit 0) or
    /// every problem with its key path and line (exit 2).
    CheckConfig {
        /// Configuration file.
        #[arg(short, long, default_value = "config/hermes.yaml")]
        config: PathBuf,
    },
    /// List recorded sessions, newest first.
    Sessions(sessions::SessionsArgs),
    /// Play a session's recording to the terminal (sanitised), or print its commands.
    Replay(replay::ReplayArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "UPPERCASE")]
enum LevelArg {
    #[value(alias = "trace")]
    Trace,
    #[value(alias = "debug")]
    Debug,
    #[value(alias = "info")]
    Info,
    #[value(alias = "warning", alias = "WARN", alias = "warn")]
    Warning,
    #[value(alias = "error", alias = "CRITICAL", alias = "critical")]
    Error,
}

impl From<LevelArg> for LogLevel {
    fn from(level: LevelArg) -> Self {
        match level {
            LevelArg::Trace => LogLevel::Trace,
            LevelArg::Debug => LogLevel::Debug,
            LevelArg::Info => LogLevel::Info,
            LevelArg::Warning => LogLevel::Warning,
            LevelArg::Error => LogLevel::Error,
        }
    }
}

/// Exit status for an invalid configuration (as the issue tracker and scripts expect).
const EXIT_CONFIG: u8 = 2;

fn load(path: &std::path::Path) -> Result<config::Config, ExitCode> {
    config::load_file(path).map_err(|error| {
        report_config_error(&error);
        ExitCode::from(EXIT_CONFIG)
    })
}

fn report_config_error(error: &ConfigError) {
    eprintln!("hermes: {error}");
}

/// glibc gives each thread that allocates its own arena (up to eight per core), and
/// memory freed in one stays mapped there: with hundreds of sessions moving between
/// the runtime's and the blocking pool's threads, that held tens of MB.
/// Threads for blocking work at most (see the runtime's construction).
const MAX_BLOCKING_THREADS: usize = 32;

fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator tuning; called before any other thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// What `check-config` says about LXCFS on this machine (on stderr: stdout is the
/// effective configuration). A missing LXCFS with `required` is for `run` to refuse.
fn lxcfs_note(config: &hermes_core::config::Config) -> String {
    use hermes_core::config::LxcfsMode;
    let lxcfs = &config.container_pool.security.lxcfs;
    if lxcfs.mode == LxcfsMode::Off {
        return "lxcfs: off (boxes show the host's memory, CPUs and uptime)".to_owned();
    }
    match hermes_sandbox::lxcfs::probe_blocking(&lxcfs.path) {
        Ok(_) => format!("lxcfs: running at {}", lxcfs.path.display()),
        Err(problem) if lxcfs.mode == LxcfsMode::Required => {
            format!("lxcfs: NOT usable ({problem}); `hermes run` refuses to start (mode required)")
        }
        Err(problem) => format!(
            "lxcfs: NOT usable ({problem}); boxes would show the host's memory, CPUs and uptime (mode auto)"
        ),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Sessions(args) => cmd::finish(sessions::run(&args)),
        Command::Replay(args) => cmd::finish(replay::run(&args)),
        Command::CheckConfig { config } => match load(&config) {
            Ok(config) => {
                print!("{}", config.to_yaml());
                eprintln!("{}", lxcfs_note(&config));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run { config: path } => {
            let config = match load(&path) {
                Ok(config) => config,
                Err(code) => return code,
            };
            limit_malloc_arenas();
            // Before the runtime's threads exist: they start at this thread's value.
            let priority = priority::set(config.server.nice);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                // Blocking work (capture walks and reads, store writes, netns and
                // iptables runs) is short, bounded and CPU-bound on a machine of a
                // few cores: a typing crowd's capture passes grew the default pool of
                // 512 to 180 threads here, each with its own stack and allocator
                // caches, for no throughput.
                .max_blocking_threads(MAX_BLOCKING_THREADS)
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("hermes: cannot start the async runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            let level = cli.log_level.map(LogLevel::from);
            match runtime.block_on(run::run(config, path, level, priority)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(target: "hermes", "{error:#}");
                    eprintln!("hermes: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
