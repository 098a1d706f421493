//! honeypot-auditor 1.0.4 `--deep` against Hermes with the shipped default
//! configuration and against Debian's real sshd, in the same run: Hermes must score
//! no higher (issue 17, "Tests").

use std::collections::BTreeSet;

use hermes_test_support::auditor;
use hermes_test_support::reference::ReferenceSshd;

use crate::events::Events;
use crate::harness::{Hermes, Options};

/// config/hermes.yaml, changed only where a test must: loopback and port 0, the
/// test's own directories and sensor, names from the test's map and no upstream
/// (nothing leaves the machine), and the JSON operational log the harness reads.
fn shipped_default() -> Options {
    let path = hermes_test_support::refvm::repo_root().join("config/hermes.yaml");
    let shipped =
        hermes_core::config::load_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Options::default().configure(move |test| {
        let mut config = shipped.clone();
        config.server.host = test.server.host;
        config.server.port = test.server.port;
        config.server.host_key_path = test.server.host_key_path.clone();
        config.server.sensor_name = test.server.sensor_name.clone();
        if let (Some(sticky), Some(state)) = (
            config.authentication.sticky.as_mut(),
            test.container_pool.reuse.state_file.parent(),
        ) {
            sticky.state_file = state.join("sticky.json");
        }
        config.container_pool.reuse.state_file = test.container_pool.reuse.state_file.clone();
        config.recording.output_dir = test.recording.output_dir.clone();
        config.capture.output_dir = test.capture.output_dir.clone();
        config.logging = test.logging.clone();
        config.egress.dns.static_only = test.egress.dns.static_only;
        config.egress.upstream_allow = test.egress.upstream_allow.clone();
        *test = config;
    })
}

fn print_report(name: &str, report: &serde_json::Value) {
    eprintln!("{name}: score {:.1} %", auditor::score(report));
    let states: Vec<String> = report["indicators"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|i| {
                    format!(
                        "{}={}",
                        i["id"].as_str().unwrap_or("?"),
                        i["status"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    eprintln!("  indicators: {}", states.join(" "));
    for (id, detail) in auditor::triggered(report) {
        eprintln!("  {id}: {detail}");
    }
}

#[test]
fn the_auditor_scores_hermes_no_higher_than_debians_sshd() {
    require_docker!();
    let Some(program) = auditor::ensure() else {
        return;
    };
    let Some(sshd) = ReferenceSshd::start() else {
        return;
    };
    let hermes = Hermes::start(shipped_default());
    let dir = tempfile::tempdir().expect("tempdir");

    let sshd_report = auditor::audit(&program, sshd.port, dir.path());
    let hermes_report = auditor::audit(&program, hermes.port, dir.path());
    print_report("Debian sshd", &sshd_report);
    print_report("Hermes (shipped default config)", &hermes_report);
    let on_sshd: BTreeSet<String> = auditor::triggered(&sshd_report)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let only_hermes: Vec<String> = auditor::triggered(&hermes_report)
        .into_iter()
        .filter(|(id, _)| !on_sshd.contains(id))
        .map(|(id, detail)| format!("{id}: {detail}"))
        .collect();
    eprintln!("fired on Hermes only:\n  {}", only_hermes.join("\n  "));

    // Both runs really probed: the auditor tried to log in to Hermes (its random
    // accounts), and both reports carry the SSH and deep indicators.
    let events = hermes.events();
    let (failed, accepted) = (
        events.count_of("cowrie.login.failed"),
        events.count_of("cowrie.login.success"),
    );
    eprintln!("the auditor's logins on Hermes: {failed} refused, {accepted} accepted");
    assert!(failed + accepted > 0, "the auditor never tried to log in");
    for report in [&sshd_report, &hermes_report] {
        let indicators = report["indicators"].as_array().map_or(0, Vec::len);
        assert!(indicators >= 10, "too few indicators: {report}");
    }
    let (hermes_score, sshd_score) = (auditor::score(&hermes_report), auditor::score(&sshd_report));
    assert!(
        hermes_score <= sshd_score,
        "Hermes {hermes_score} % > sshd {sshd_score} %; fired on Hermes only:\n{}",
        only_hermes.join("\n")
    );
}
