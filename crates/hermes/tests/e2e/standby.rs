//! The standby login waiting in each pool container: a login with a terminal takes it
//! over without a call to the engine, and no session ever sees one.

use std::time::Duration;

use crate::client::{Client, ROOT_PROMPT, root_shell};
use crate::events::Events;
use crate::harness::Options;
use crate::lifecycle::hermes_behind_proxy;

/// What `ps` shows of a waiting standby or of its hand-over.
fn shows_standby(ps: &str) -> bool {
    ps.contains("ssh-session-helper") || ps.contains("stty") || ps.contains("read -r rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_login_takes_over_the_standby_and_no_session_sees_one() {
    require_docker!();
    let (hermes, seen, _) = hermes_behind_proxy(Options {
        pool_size: 2,
        ..Options::default()
    })
    .await;
    let before = seen.lock().map(|s| s.len()).unwrap_or(0);

    // A shell: its container's standby becomes the login.
    let (client, mut shell) = root_shell(hermes.port).await;
    // Nothing of the hand-over reaches the client: not the parameters line (echoed if
    // written before the standby quieted its terminal), not its ready byte.
    let text = shell.text();
    assert!(text.starts_with("Linux "), "{text:?}");
    assert!(
        !text.contains("user=root") && !text.contains("\\x0a"),
        "{text:?}"
    );
    let during: Vec<(String, String)> = seen
        .lock()
        .map(|s| s[before..].to_vec())
        .unwrap_or_default();
    let events = hermes.wait_for("hermes.container.allocate");
    let container = events
        .first_of("hermes.container.allocate")
        .and_then(|e| e["container_id"].as_str())
        .expect("container id")
        .to_owned();
    assert!(
        !during.iter().any(|(method, path)| method == "POST"
            && path.contains(&format!("/containers/{container}/exec"))),
        "the login created an exec in its container: {during:?}"
    );
    // The terminal has the client's size, set by the standby itself.
    let size = shell.run("stty size", ROOT_PROMPT).await;
    assert!(size.contains("50 200"), "{size:?}");
    let ps = shell.run("ps -eo args", ROOT_PROMPT).await;
    assert!(ps.contains("sshd: root@pts/"), "{ps}");
    assert!(!shows_standby(&ps), "{ps}");
    shell.send("exit\n").await;
    assert!(shell.read_to_close(Duration::from_secs(10)).await);
    drop(shell);
    drop(client);

    // A command without a terminal: the standby is told to go before it starts.
    let client = Client::login(hermes.port, "root", "toor").await;
    let mut exec = client.exec("ps -eo args").await;
    assert!(exec.read_to_close(Duration::from_secs(20)).await);
    let ps = exec.text();
    assert!(ps.contains("ps -eo args"), "{ps}");
    assert!(!shows_standby(&ps), "{ps}");
    assert_eq!(exec.exit_status, Some(0));
}
