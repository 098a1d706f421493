//! honeypot-auditor (PyPI), the scanner issue 17 measures Hermes with: installed once
//! in a venv under the reference machine's cache directory, run against loopback
//! targets only.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::refvm::machine_dir;

/// The version issue 17 names.
pub const VERSION: &str = "1.0.4";

/// The venv's `honeypot-auditor`, installed with pip on first use (one installer at
/// a time); None, after saying why, when it cannot be installed (no python3 venv or
/// no package index) and CI is not set, a panic under CI=true.
pub fn ensure() -> Option<PathBuf> {
    let venv = machine_dir().join(format!("auditor-{VERSION}"));
    let program = venv.join("bin/honeypot-auditor");
    if program.is_file() {
        return Some(program);
    }
    if let Err(e) = std::fs::create_dir_all(machine_dir()) {
        panic!("{}: {e}", machine_dir().display());
    }
    let script = format!(
        "[ -x '{program}' ] || {{ python3 -m venv '{venv}' && '{venv}/bin/pip' install -q 'honeypot-auditor=={VERSION}'; }}",
        program = program.display(),
        venv = venv.display()
    );
    let output = Command::new("flock")
        .arg(machine_dir().join(".auditor.lock"))
        .args(["bash", "-c", &script])
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(out) if out.status.success() && program.is_file() => Some(program),
        other => {
            let why = match other {
                Ok(out) => format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) => e.to_string(),
            };
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("cannot install honeypot-auditor {VERSION}: {why}");
            }
            eprintln!("SKIPPED: cannot install honeypot-auditor {VERSION}: {why}");
            None
        }
    }
}

/// One `--deep` run against 127.0.0.1:`port`: the JSON report. Only that port is
/// probed (`-p`), the co-tenancy probe knocks on other loopback ports, and no
/// passive-intel provider runs (Shodan needs a key: none is passed on).
pub fn audit(program: &Path, port: u16, dir: &Path) -> Value {
    let report = dir.join(format!("audit-{port}.json"));
    let output = Command::new("timeout")
        .arg(RUN_LIMIT.as_secs().to_string())
        .arg(program)
        .args(["--target", "127.0.0.1", "-p", &port.to_string(), "--deep"])
        .args(["--format", "json", "--output"])
        .arg(&report)
        .env_remove("SHODAN_API_KEY")
        .env("NO_COLOR", "1")
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run honeypot-auditor");
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "no report from honeypot-auditor ({}, {e}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("report {}: {e}", report.display()))
}

/// The report's score in percent.
pub fn score(report: &Value) -> f64 {
    report["score"]
        .as_f64()
        .unwrap_or_else(|| panic!("no score in the report: {report}"))
}

/// The ids of the indicators that fired, each with its detail.
pub fn triggered(report: &Value) -> Vec<(String, String)> {
    report["indicators"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|i| i["triggered"].as_bool() == Some(true))
                .map(|i| {
                    (
                        i["id"].as_str().unwrap_or("?").to_owned(),
                        i["detail"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// How long one run may take at most.
const RUN_LIMIT: Duration = Duration::from_secs(600);
