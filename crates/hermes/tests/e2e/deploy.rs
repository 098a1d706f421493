//! The systemd units shipped for running Hermes on the host: systemd itself must
//! accept every directive of them.

use std::process::Command;

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "systemd-analyze is missing"
        );
        eprintln!("SKIPPED: systemd-analyze is missing");
        return;
    };
    assert!(version.status.success());
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/systemd/hermes.service"),
    )
    .expect("unit");
    for directive in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(directive), "{directive}");
    }
    // Verified with this build's binary in place of the installed one.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hermes.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/hermes", env!("CARGO_BIN_EXE_hermes")),
    )
    .expect("write");
    verify(&path);

    // The boxes' clock files' unit, its binary stood in for (another crate's).
    let clock = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/systemd/hermes-box-proc.service"),
    )
    .expect("unit");
    assert!(
        clock.contains("ExecStart=/usr/local/lib/hermes/hermes-box-proc /var/lib/hermes-box-proc")
    );
    let path = dir.path().join("hermes-box-proc.service");
    std::fs::write(
        &path,
        clock.replace("/usr/local/lib/hermes/hermes-box-proc", "/bin/true"),
    )
    .expect("write");
    verify(&path);
}

/// systemd-analyze accepts the unit at `path`, and warns of no unknown or misspelt
/// directive (those are warnings, not failures: none allowed).
fn verify(path: &std::path::Path) {
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(path)
        .output()
        .expect("systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("Unknown") && !text.contains("unknown"),
        "{text}"
    );
}
