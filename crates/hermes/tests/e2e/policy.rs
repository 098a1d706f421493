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
    // Two attempts on one connection: the second gets in, whatever it is.
    let mut handle = connect(hermes.port).await.expect("connect");
    assert!(
        !handle
            .authenticate_password("root", "a")
            .await
            .expect("auth")
            .success()
    );
    assert!(
        handle
            .authenticate_password("whoever", "b")
            .await
            .expect("auth")
            .success()
    );
}
