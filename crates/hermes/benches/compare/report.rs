//! The table: every figure of every server side by side, the ratio of the first
//! server to the second, and the target for it.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::stats::{Samples, short};

/// One server's measured figures by key.
#[derive(Default)]
pub struct Figures {
    values: HashMap<&'static str, Samples>,
}

impl Figures {
    pub fn add(&mut self, key: &'static str, samples: Samples) {
        if !samples.is_empty() {
            self.values.insert(key, samples);
        }
    }

    fn get(&self, key: &str) -> Option<&Samples> {
        self.values.get(key)
    }
}

/// What a figure must reach (for the first server, against the second).
#[derive(Clone, Copy)]
enum Goal {
    /// Ratio first/second at least this.
    RatioAtLeast(f64),
    /// Ratio first/second at most this.
    RatioAtMost(f64),
    /// The first server's median at most this.
    AtMost(f64),
    None,
}

struct Row {
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    goals: &'static [Goal],
}

const ROWS: &[Row] = &[
    Row {
        key: "auth_rate",
        label: "1. failed password attempts per second",
        unit: "/s",
        goals: &[Goal::RatioAtLeast(5.0)],
    },
    Row {
        key: "auth_cpu",
        label: "1. server CPU per attempt",
        unit: "µs",
        goals: &[Goal::RatioAtMost(0.2)],
    },
    Row {
        key: "shell_prompt",
        label: "2. password accepted → prompt",
        unit: "ms",
        goals: &[Goal::AtMost(100.0), Goal::RatioAtMost(1.5)],
    },
    Row {
        key: "shell_prompt_p95",
        label: "2. password accepted → prompt, p95",
        unit: "ms",
        goals: &[Goal::None],
    },
    Row {
        key: "shell_first_byte",
        label: "2. password accepted → first byte",
        unit: "ms",
        goals: &[Goal::None],
    },
    Row {
        key: "shell_whole_login",
        label: "2. password sent → prompt",
        unit: "ms",
        goals: &[Goal::None],
    },
    Row {
        key: "shell_prompt_returning",
        label: "2. returning source, password accepted → prompt",
        unit: "ms",
        goals: &[Goal::RatioAtMost(1.2)],
    },
    Row {
        key: "shell_whole_login_returning",
        label: "2. returning source, password sent → prompt",
        unit: "ms",
        goals: &[Goal::None],
    },
    Row {
        key: "shell_failed",
        label: "2. failed logins",
        unit: "",
        goals: &[Goal::None],
    },
    Row {
        key: "exec",
        label: "3. `ssh host true`, whole client run",
        unit: "ms",
        goals: &[Goal::RatioAtMost(1.5)],
    },
    Row {
        key: "conc_opened",
        label: "4. sessions open at once",
        unit: "",
        goals: &[Goal::None],
    },
    Row {
        key: "conc_failures",
        label: "4. commands not answered within 5 s",
        unit: "",
        goals: &[Goal::AtMost(0.0)],
    },
    Row {
        key: "conc_ramp",
        label: "4. time to open them all (8 at a time)",
        unit: "s",
        goals: &[Goal::None],
    },
    Row {
        key: "conc_latency",
        label: "4. Enter → command output",
        unit: "ms",
        goals: &[Goal::RatioAtMost(1.5)],
    },
    Row {
        key: "conc_latency_p95",
        label: "4. Enter → command output, p95",
        unit: "ms",
        goals: &[Goal::RatioAtMost(2.0)],
    },
    Row {
        key: "conc_rss",
        label: "4. server's own RSS, peak",
        unit: "MB",
        goals: &[Goal::AtMost(64.0)],
    },
    Row {
        key: "conc_pss",
        label: "4. server's own PSS, at the end",
        unit: "MB",
        goals: &[Goal::None],
    },
    Row {
        key: "conc_engine_rss",
        label: "4. engine's RSS (dockerd, containerd, shims), at the end",
        unit: "MB",
        goals: &[Goal::None],
    },
    Row {
        key: "conc_machine_mem",
        label: "4. whole machine's memory in use, sessions open",
        unit: "MB",
        goals: &[Goal::None],
    },
    Row {
        key: "conc_sessions_rss",
        label: "4. sessions' memory (containers / shells)",
        unit: "MB",
        goals: &[Goal::None],
    },
    Row {
        key: "conc_sessions_pss",
        label: "4. sessions' PSS (shells)",
        unit: "MB",
        goals: &[Goal::None],
    },
    Row {
        key: "conc_cpu",
        label: "4. server CPU per session-second",
        unit: "ms",
        goals: &[Goal::None],
    },
    Row {
        key: "conc_sessions_cpu",
        label: "4. sessions' CPU per session-second (boxes / shells)",
        unit: "ms",
        goals: &[Goal::None],
    },
    Row {
        key: "conc_engine_cpu",
        label: "4. engine's CPU per session-second (dockerd, containerd, shims)",
        unit: "ms",
        goals: &[Goal::None],
    },
    Row {
        key: "conc_total_cpu",
        label: "4. whole stack's CPU per session-second (server, engine, sessions)",
        unit: "ms",
        goals: &[Goal::RatioAtMost(1.5)],
    },
    Row {
        key: "pty",
        label: "5. `cat` of a file through a terminal",
        unit: "MB/s",
        goals: &[Goal::RatioAtLeast(0.5)],
    },
    Row {
        key: "scp_up",
        label: "5. scp upload",
        unit: "MB/s",
        goals: &[Goal::RatioAtLeast(0.5)],
    },
    Row {
        key: "scp_down",
        label: "5. scp download",
        unit: "MB/s",
        goals: &[Goal::RatioAtLeast(0.5)],
    },
    Row {
        key: "idle_rss",
        label: "6. RSS, no connections",
        unit: "MB",
        goals: &[Goal::None],
    },
    Row {
        key: "idle_pss",
        label: "6. PSS, no connections",
        unit: "MB",
        goals: &[Goal::None],
    },
    Row {
        key: "idle_containers",
        label: "6. warm pool's containers",
        unit: "MB",
        goals: &[Goal::None],
    },
    Row {
        key: "idle_silent_held",
        label: "6. silent connections held",
        unit: "",
        goals: &[Goal::None],
    },
    Row {
        key: "idle_silent_rss",
        label: "6. RSS per silent connection",
        unit: "KiB",
        goals: &[Goal::None],
    },
    Row {
        key: "idle_silent_pss",
        label: "6. PSS per silent connection",
        unit: "KiB",
        goals: &[Goal::None],
    },
    Row {
        key: "idle_version_held",
        label: "6. connections held past the version line",
        unit: "",
        goals: &[Goal::None],
    },
    Row {
        key: "idle_version_rss",
        label: "6. RSS per connection past the version line",
        unit: "KiB",
        goals: &[Goal::None],
    },
    Row {
        key: "idle_version_pss",
        label: "6. PSS per connection past the version line",
        unit: "KiB",
        goals: &[Goal::None],
    },
];

fn cell(samples: Option<&Samples>) -> String {
    let Some(s) = samples else {
        return "–".into();
    };
    let (Some(median), Some(min), Some(max)) = (s.median(), s.min(), s.max()) else {
        return "–".into();
    };
    if s.len() == 1 {
        short(median)
    } else {
        format!(
            "{} ({}–{}, n={})",
            short(median),
            short(min),
            short(max),
            s.len()
        )
    }
}

fn goal_text(goal: Goal, unit: &str) -> Option<String> {
    match goal {
        Goal::RatioAtLeast(r) => Some(format!("≥{r}×")),
        Goal::RatioAtMost(r) => Some(format!("≤{r}×")),
        Goal::AtMost(v) => Some(format!("≤{} {unit}", short(v))),
        Goal::None => None,
    }
}

fn goal_met(goal: Goal, first: Option<f64>, ratio: Option<f64>) -> Option<bool> {
    match goal {
        Goal::RatioAtLeast(r) => ratio.map(|x| x >= r),
        Goal::RatioAtMost(r) => ratio.map(|x| x <= r),
        Goal::AtMost(v) => first.map(|x| x <= v),
        Goal::None => None,
    }
}

/// The markdown table of `names` (servers in order) and their figures.
pub fn table(names: &[String], figures: &[Figures]) -> String {
    let mut out = String::new();
    let _ = write!(out, "| figure | unit |");
    for name in names {
        let _ = write!(out, " {name} |");
    }
    let comparing = names.len() >= 2;
    if comparing {
        let _ = write!(out, " {} / {} | target | met |", names[0], names[1]);
    }
    out.push('\n');
    let columns = 2 + names.len() + if comparing { 3 } else { 0 };
    out.push_str(&"|---".repeat(columns));
    out.push_str("|\n");
    for row in ROWS {
        if figures.iter().all(|f| f.get(row.key).is_none()) {
            continue;
        }
        let _ = write!(out, "| {} | {} |", row.label, row.unit);
        for f in figures {
            let _ = write!(out, " {} |", cell(f.get(row.key)));
        }
        if comparing {
            let first = figures[0].get(row.key).and_then(Samples::median);
            let second = figures[1].get(row.key).and_then(Samples::median);
            let ratio = match (first, second) {
                (Some(a), Some(b)) if b != 0.0 => Some(a / b),
                _ => None,
            };
            let goals: Vec<String> = row
                .goals
                .iter()
                .filter_map(|g| goal_text(*g, row.unit))
                .collect();
            let met: Vec<bool> = row
                .goals
                .iter()
                .filter_map(|g| goal_met(*g, first, ratio))
                .collect();
            let met = if met.is_empty() {
                String::new()
            } else if met.iter().all(|m| *m) {
                "yes".into()
            } else {
                "**no**".into()
            };
            let _ = write!(
                out,
                " {} | {} | {met} |",
                ratio
                    .map(|r| format!("{}×", short(r)))
                    .unwrap_or_else(|| "–".into()),
                goals.join(", "),
            );
        }
        out.push('\n');
    }
    out
}
