//! Every credential policy mode, as a client meets it.

use crate::client::connect;
use crate::events::Events;
use crate::harness::{Hermes, Options};

/// One password attempt on a fresh connection.
async fn attempt(port: u16, user: &str, password: &str) -> bool {
    let mut handle = connect(port).await.expect("connect");
    handle
        .authenticate_password(user, password)
        .await
        .expect("auth exchange")
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_mode_takes_wildcards_and_nothing_else() {
    require_docker!();
    let hermes = Hermes::start(Options {
        credentials: vec![("*", "123456"), ("deploy", "*"), ("adm*", "Passw0rd")],
        ..Options::default()
    });
    assert!(attempt(hermes.port, "oracle", "123456").await);
    assert!(attempt(hermes.port, "deploy", "whatever it is").await);
    assert!(attempt(hermes.port, "administrator", "Passw0rd").await);
    assert!(!attempt(hermes.port, "root", "1234567").await);
    assert!(!attempt(hermes.port, "administrator", "passw0rd").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_mode_remembers_the_pair_per_source_across_connections_and_restarts() {
    require_docker!();
    let mut hermes = Hermes::start(Options {
        mode: "sticky",
        sticky: (2, 2),
        credentials: vec![("root", "toor")],
        ..Options::default()
    });
    // Two failures, each on its own connection (as bots do), then any pair gets in.
    assert!(!attempt(hermes.port, "root", "password").await);
    assert!(!attempt(hermes.port, "root", "123456").await);
    assert!(
        attempt(hermes.port, "pi", "raspberry").await,
        "third attempt from the source"
    );
    // From now on, only that pair (and the static ones) work from this source.
    assert!(attempt(hermes.port, "pi", "raspberry").await);
    assert!(
        !attempt(hermes.port, "pi", "raspberry1").await,
        "a second random pair"
    );
    assert!(!attempt(hermes.port, "admin", "admin").await);
    assert!(attempt(hermes.port, "root", "toor").await);

    tokio::task::block_in_place(|| hermes.restart());
    assert!(
        attempt(hermes.port, "pi", "raspberry").await,
        "remembered across a restart"
    );
    assert!(!attempt(hermes.port, "ubuntu", "ubuntu").await);

    let events = hermes.events();
    let successes: Vec<(&str, &str)> = events
        .of("cowrie.login.success")
        .into_iter()
        .map(|e| {
            (
                e["username"].as_str().unwrap_or_default(),
                e["password"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        successes,
        [
            ("pi", "raspberry"),
            ("pi", "raspberry"),
            ("root", "toor"),
            ("pi", "raspberry")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_after_failures_counts_per_connection() {
    require_docker!();
    let hermes = Hermes::start(Options {
        mode: "accept_after_failures",
        accept_after: 1,
        ..Options::default()
    });
    // One failure per connection never reaches the rule.
    for _ in 0..3 {
        assert!(!attempt(hermes.port, "root", "nope").await);
    }
    // Two attempts on one connection: the second gets in whatever its password, but
    // only with a name a real server has: a random one never does.
    let mut handle = connect(hermes.port).await.expect("connect");
    for (user, password, accepted) in [
        ("root", "a", false),
        ("user_a37", "b", false),
        ("xk3j9q", "b", false),
        ("oracle", "b", true),
    ] {
        assert_eq!(
            handle
                .authenticate_password(user, password)
                .await
                .expect("auth")
                .success(),
            accepted,
            "{user}/{password}"
        );
    }
}

/// The shipped default (sticky, plausible names): a scanner that keeps trying a
/// random name never gets a shell that echoes it, while a common name gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_mode_never_lets_in_a_random_name() {
    require_docker!();
    let hermes = Hermes::start(Options {
        mode: "sticky",
        sticky: (2, 2),
        ..Options::default()
    });
    for n in 0..8 {
        assert!(
            !attempt(hermes.port, "user_a37", &format!("pw{n}")).await,
            "attempt {n} with a random name"
        );
    }
    assert!(attempt(hermes.port, "test", "test").await);
    assert!(!attempt(hermes.port, "user_a37", "pw0").await);
    // The last failure's event may be written just after the client hears it.
    let random_failures = |events: &[serde_json::Value]| {
        events
            .of("cowrie.login.failed")
            .into_iter()
            .filter(|e| e["username"] == "user_a37")
            .count()
    };
    let events = hermes.wait_for_events("9 failed logins as user_a37", |events| {
        random_failures(events) >= 9
    });
    let failed = random_failures(&events);
    assert_eq!(
        failed, 9,
        "every random-name attempt is logged as a failure"
    );
}

/// Past the mode's threshold a random name still never gets in, so a client that
/// keeps trying one is cut at `max_auth_tries` with sshd's "Too many authentication
/// failures", not given the extra tries a name that could get in would get.
#[test]
fn a_random_name_is_cut_at_the_limit_as_sshd_cuts_it() {
    require_docker!();
    let hermes = Hermes::start(Options {
        mode: "accept_after_failures",
        accept_after: 1,
        ..Options::default()
    });
    let output = hermes
        .ssh("user_a37", &["p"; 10], "password")
        .arg("true")
        .output()
        .expect("ssh");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(255), "{stderr}");
    assert!(
        stderr.contains("Too many authentication failures"),
        "{stderr}"
    );
    let events = hermes.wait_for("hermes.auth.max_tries");
    assert_eq!(events.count_of("cowrie.login.failed"), 5, "{stderr}");
    assert!(!events.has("cowrie.login.success"));
}
