//! The credential policy as a client meets it.

use serde_json::Value;

use crate::client::Client;
use crate::events::id_of;
use crate::harness::{Hermes, Options, succeeded};

#[test]
fn after_n_failures_on_one_connection_any_password_is_accepted() {
    require_docker!();
    let hermes = Hermes::start(Options {
        mode: "accept_after_failures",
        accept_after: 2,
        ..Options::default()
    });

    // Two failures, then a third, arbitrary password gets in.
    let ok = succeeded(
        hermes
            .ssh("oracle", &["wrong-1", "wrong-2", "whatever-3"], "password")
            .arg("echo in-after-$((1+1))-failures"),
    );
    assert_eq!(ok, "in-after-2-failures\n");

    // With only two tries on the connection the rule never fires.
    let output = hermes
        .ssh("oracle", &["wrong-1", "wrong-2"], "password")
        .arg("true")
        .output()
        .expect("ssh");
    assert_eq!(output.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&output.stderr).contains("Permission denied"));

    let events = hermes.wait_for_count("cowrie.session.closed", 2);
    let logins: Vec<(String, String, String)> = events
        .iter()
        .filter(|e| {
            matches!(
                id_of(e),
                Some("cowrie.login.failed" | "cowrie.login.success")
            )
        })
        .map(|e| {
            (
                id_of(e).unwrap_or_default().to_owned(),
                e["username"].as_str().unwrap_or_default().to_owned(),
                e["password"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let failed = |pw: &str| {
        (
            "cowrie.login.failed".to_owned(),
            "oracle".to_owned(),
            pw.to_owned(),
        )
    };
    assert_eq!(
        logins,
        vec![
            failed("wrong-1"),
            failed("wrong-2"),
            (
                "cowrie.login.success".to_owned(),
                "oracle".to_owned(),
                "whatever-3".to_owned()
            ),
            failed("wrong-1"),
            failed("wrong-2"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_password_of_a_repeated_username_logs_in() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    for password in ["admin", "s3cret"] {
        let client = Client::login(hermes.port, "admin", password).await;
        drop(client);
    }
    // A configured password of another user does not work for root.
    let mut handle = crate::client::connect(hermes.port).await.expect("connect");
    let result = handle
        .authenticate_password("root", "admin")
        .await
        .expect("auth");
    assert!(!result.success());
    // Rejections keep advertising the methods, so clients keep trying.
    match result {
        russh::client::AuthResult::Failure {
            remaining_methods, ..
        } => {
            let names: Vec<&str> = remaining_methods.iter().map(|m| m.into()).collect();
            assert_eq!(names, ["publickey", "password"]);
        }
        russh::client::AuthResult::Success => unreachable!(),
    }
}

#[test]
fn keyboard_interactive_answers_go_through_the_same_policy() {
    require_docker!();
    let hermes = Hermes::start(Options {
        keyboard_interactive: true,
        mode: "accept_after_failures",
        accept_after: 1,
        ..Options::default()
    });
    let ok = succeeded(
        hermes
            .ssh("root", &["toor"], "keyboard-interactive")
            .arg("echo kbd-ok"),
    );
    assert_eq!(ok, "kbd-ok\n");
    let ok = succeeded(
        hermes
            .ssh("guest", &["bad", "then-anything"], "keyboard-interactive")
            .arg("echo kbd-accept-all"),
    );
    assert_eq!(ok, "kbd-accept-all\n");
    let events = hermes.wait_for_count("cowrie.login.success", 2);
    let passwords: Vec<&Value> = events
        .iter()
        .filter(|e| id_of(e).is_some_and(|id| id.starts_with("cowrie.login.")))
        .map(|e| &e["password"])
        .collect();
    assert_eq!(passwords, ["toor", "bad", "then-anything"]);
}
