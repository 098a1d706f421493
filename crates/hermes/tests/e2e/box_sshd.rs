//! Sessions run by the box's own sshd: what a session shows of its server (its
//! process ancestry, loginuid, SSH_CONNECTION, who, last, ss and the auth log)
//! against Debian's sshd on loopback, and a hostile root that stops or replaces the
//! box's sshd.

use std::process::Command;
use std::time::Duration;

use crate::client::Client;
use crate::harness::{Hermes, Options, openssh_command};
use hermes_core::config::{BoxSshdIo, Seconds};
use hermes_test_support::reference::ReferenceSshd;

/// An account that exists in both places: created on this machine for the reference
/// sshd (and removed again), let in by Hermes and made in its box.
const USER: &str = "webadmin";
const PASSWORD: &str = "W3b-admin!";

/// What a session says of the sshd that runs it, one `name=value` per line. The
/// ancestry runs from the session's program up to (not including) the listener.
const FACTS: &str = r#"p=$PPID; chain=
while [ "$p" -gt 1 ]; do
  t=$(tr '\0' ' ' < /proc/$p/cmdline | sed 's/ *$//')
  case $t in *'[listener]'*) break ;; esac
  chain="$chain|$t"; p=$(cut -d' ' -f4 /proc/$p/stat)
done
echo "chain=$chain"
[ "$(cat /proc/self/loginuid)" = "$(id -u)" ] && echo loginuid=uid || echo "loginuid=$(cat /proc/self/loginuid)"
echo "tty=$SSH_TTY"
echo "connection=$SSH_CONNECTION"
set -- $SSH_CONNECTION
[ "$SSH_CLIENT" = "$1 $2 $4" ] && echo client=agrees || echo "client=$SSH_CLIENT"
echo "ss=$(ss -Htn state established "( sport = :$4 )" | grep -c " $1:$2\b")"
echo "who=$(who | grep -c "^$(id -un) .*pts/.*($1)")"
echo "last=$(last -n 5 "$(id -un)" | grep -c "pts/.* $1 .*still logged in")"
echo end"#;

/// The facts a session printed, with the numbers that differ between any two
/// sessions (ports, pts numbers) and the client's address kept apart.
struct Facts {
    lines: Vec<(String, String)>,
    client: String,
    client_port: String,
}

impl Facts {
    fn parse(out: &str) -> Facts {
        let lines: Vec<(String, String)> = out
            .lines()
            .map(|line| line.trim_end_matches('\r'))
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert!(out.contains("end"), "the facts did not finish: {out}");
        let connection = lines
            .iter()
            .find(|(k, _)| k == "connection")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let fields: Vec<&str> = connection.split(' ').collect();
        assert_eq!(fields.len(), 4, "SSH_CONNECTION: {connection:?}");
        Facts {
            client: fields[0].to_owned(),
            client_port: fields[1].to_owned(),
            lines,
        }
    }

    /// Every line with digits made `N` and the connection left out (its addresses
    /// are each server's own).
    fn shape(&self) -> Vec<(String, String)> {
        self.lines
            .iter()
            .filter(|(k, _)| k != "connection")
            .map(|(k, v)| {
                let v: String = v
                    .chars()
                    .map(|c| if c.is_ascii_digit() { 'N' } else { c })
                    .collect();
                (k.clone(), v.replace("NN", "N").replace("NN", "N"))
            })
            .collect()
    }

    fn accepted_line(&self) -> String {
        format!(
            "Accepted password for {USER} from {} port {} ssh2",
            self.client, self.client_port
        )
    }
}

/// The host account for the reference sshd, removed when dropped (with its home).
struct HostAccount;

impl HostAccount {
    fn create() -> HostAccount {
        let _ = Command::new("userdel").args(["-r", USER]).output();
        let made = Command::new("useradd")
            .args(["-m", "-s", "/bin/bash", USER])
            .status()
            .expect("useradd");
        assert!(made.success(), "useradd {USER}");
        let mut chpasswd = Command::new("chpasswd")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("chpasswd");
        if let Some(stdin) = chpasswd.stdin.as_mut() {
            use std::io::Write;
            writeln!(stdin, "{USER}:{PASSWORD}").expect("chpasswd input");
        }
        drop(chpasswd.stdin.take());
        assert!(chpasswd.wait().is_ok_and(|s| s.success()), "chpasswd");
        // sshd keeps utmp and wtmp only where they exist, as on any Debian server.
        for file in ["/var/run/utmp", "/var/log/wtmp"] {
            if !std::path::Path::new(file).exists() {
                std::fs::write(file, b"").expect("login records");
            }
        }
        HostAccount
    }
}

impl Drop for HostAccount {
    fn drop(&mut self) {
        let _ = Command::new("pkill").args(["-u", USER]).status();
        let _ = Command::new("userdel").args(["-r", USER]).output();
    }
}

fn facts_over(mut command: Command) -> String {
    let output = command.output().expect("ssh");
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// The session of an OpenSSH client is the box's sshd's, and says so as Debian's
/// sshd says it on loopback: the same ancestry (`sshd: USER [priv]` above
/// `sshd: USER@pts/N`), loginuid set by PAM, SSH_CONNECTION and SSH_CLIENT naming
/// the client, the connection in `ss`, the session in `who` and `last`, and sshd's
/// own "Accepted password" line.
///
/// Both ways of carrying the channel's bytes: the program's terminal taken from
/// sshd (the default), and every byte through sshd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_is_the_boxs_own_sshd_session_as_on_debians_sshd() {
    require_docker!();
    session_as_on_debians_sshd(BoxSshdIo::Taken, "sshd_taken").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_the_session_is_the_boxs_own_sshd_session_as_on_debians_sshd() {
    require_docker!();
    session_as_on_debians_sshd(BoxSshdIo::Relay, "sshd").await;
}

async fn session_as_on_debians_sshd(io: BoxSshdIo, path: &str) {
    let Some(reference) = ReferenceSshd::start_with_pam(true) else {
        return;
    };
    let _account = HostAccount::create();
    // The source's next login finds the same box (its auth.log).
    let hermes = Hermes::start(
        Options {
            credentials: vec![(USER, PASSWORD)],
            reuse: true,
            ..Options::default()
        }
        .configure(move |config| {
            config.container_pool.reuse.linger = Seconds::new(120);
            config.container_pool.box_sshd_io = io;
        }),
    );

    let mut theirs = openssh_command(
        hermes.dir.path(),
        reference.port,
        "ssh",
        &[PASSWORD],
        "password",
        "ERROR",
    );
    theirs.args(["-tt", &format!("{USER}@127.0.0.1"), FACTS]);
    let reference_out = facts_over(theirs);
    let mut ours = hermes.ssh(USER, &[PASSWORD], "password");
    ours.args(["-tt", FACTS]);
    let hermes_out = facts_over(ours);

    let reference_facts = Facts::parse(&reference_out);
    let hermes_facts = Facts::parse(&hermes_out);
    assert_eq!(
        hermes_facts.shape(),
        reference_facts.shape(),
        "Hermes:\n{hermes_out}\nDebian's sshd:\n{reference_out}"
    );
    // The shapes are right, not only alike.
    let shape = hermes_facts.shape();
    let value = |key: &str| {
        shape
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        value("chain"),
        format!("|sshd: {USER}@pts/N|sshd: {USER} [priv]")
    );
    assert_eq!(value("loginuid"), "uid");
    assert_eq!(value("client"), "agrees");
    for counted in ["ss", "who", "last"] {
        assert_eq!(value(counted), "N", "{counted}: {hermes_out}");
    }
    // The box's network cannot carry a loopback client: the box sees its gateway.
    assert_eq!(hermes_facts.client, "10.0.2.2", "{hermes_out}");

    // sshd's own line, in the box's auth.log (through its rsyslog) and in the
    // reference's log.
    assert!(
        reference.log().contains(&reference_facts.accepted_line()),
        "{}",
        reference.log()
    );
    let accepted = hermes_facts.accepted_line();
    let container = hermes
        .events_of("hermes.container.allocate")
        .first()
        .and_then(|e| e["container_id"].as_str().map(str::to_owned))
        .expect("the box");
    let mut found = String::new();
    for _ in 0..50 {
        let grep = Command::new("docker")
            .args([
                "exec",
                &container,
                "grep",
                "-c",
                &accepted,
                "/var/log/auth.log",
            ])
            .output()
            .expect("docker exec");
        found = String::from_utf8_lossy(&grep.stdout).into_owned();
        if found.trim() == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(found.trim(), "1", "`{accepted}` in the box's auth.log");
    // The account's password is the attacker's, as SHA-512 crypt (sshd_path.rs says
    // why not yescrypt), and checks against it.
    let shadow = Command::new("docker")
        .args(["exec", &container, "getent", "shadow", USER])
        .output()
        .expect("docker exec");
    let hash = String::from_utf8_lossy(&shadow.stdout)
        .split(':')
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    assert!(hash.starts_with("$6$"), "{USER}'s hash: {hash}");
    let check = Command::new("docker")
        .args(["exec", "-e", &format!("H={hash}"), &container, "perl", "-e"])
        .arg(format!(
            "exit(crypt(q({PASSWORD}), $ENV{{H}}) eq $ENV{{H}} ? 0 : 1)"
        ))
        .status()
        .expect("docker exec");
    assert!(
        check.success(),
        "the box's hash is not of the login's password"
    );
    // Setting the account's password (and making the account) is the server's
    // doing: nothing of it is captured as the session's.
    let captured: Vec<String> = hermes
        .events_of("cowrie.session.file_download")
        .iter()
        .filter_map(|e| e["destfile"].as_str().map(str::to_owned))
        .collect();
    assert!(captured.is_empty(), "{captured:?}");
    // Each channel went the configured way.
    let paths: Vec<String> = hermes
        .events_of("hermes.channel.process")
        .iter()
        .filter_map(|e| e["path"].as_str().map(str::to_owned))
        .collect();
    assert!(
        !paths.is_empty() && paths.iter().all(|p| p == path),
        "{paths:?}"
    );
}

/// The text a session that cannot start prints before it closes.
const STAGE_MESSAGE: &str = "-bash: fork: Cannot allocate memory";

/// A login of `source` whose session cannot start: the client reads the stage
/// message and the connection closes, within the login's bound.
async fn ends_with_the_stage_message(hermes: &Hermes, source: [u8; 4]) {
    let client = Client::login_from(hermes.port, source.into(), "root", "toor").await;
    let mut shell = client.shell(80, 24).await;
    assert!(
        shell
            .read_until(STAGE_MESSAGE, 0, Duration::from_secs(40))
            .await,
        "{}",
        shell.text()
    );
    assert!(shell.read_to_close(Duration::from_secs(10)).await);
}

/// Root in a box stops its sshd, then puts a fake one on port 22 that answers with
/// garbage. The source's next sessions end with the stage message, within the
/// login's bound, with the reason in the session's errors; Hermes goes on serving
/// other sources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_whose_root_stops_or_fakes_its_sshd_ends_the_next_session_with_its_message() {
    require_docker!();
    let hermes = Hermes::start(
        Options {
            reuse: true,
            ..Options::default()
        }
        .configure(|config| {
            config.container_pool.reuse.linger = hermes_core::config::Seconds::new(300)
        }),
    );
    let source = [127, 0, 0, 71];
    let client = Client::login_from(hermes.port, source.into(), "root", "toor").await;
    let mut shell = client.shell(120, 40).await;
    let prompt = format!("root@{}:~# ", hermes.hostname);
    assert!(shell.read_until(&prompt, 0, Duration::from_secs(20)).await);
    let out = shell
        .run(
            "systemctl stop ssh; pgrep -c -f 'sshd: /usr/sbin/sshd'; echo stopped",
            &prompt,
        )
        .await;
    assert!(out.contains("0\r\nstopped"), "{out}");
    shell.send("exit\n").await;
    assert!(shell.read_to_close(Duration::from_secs(10)).await);
    drop(client);

    // Nothing listens: the next session ends.
    ends_with_the_stage_message(&hermes, source).await;

    // A fake sshd: an identification line, then bytes no SSH server sends.
    let container = hermes
        .events_of("hermes.container.allocate")
        .first()
        .and_then(|e| e["container_id"].as_str().map(str::to_owned))
        .expect("the box");
    let fake = "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('',22))\ns.listen()\nwhile True:\n  c,_=s.accept()\n  c.send(b'SSH-2.0-OpenSSH_9.2p1\\r\\n'+bytes(range(256))*64)\n";
    let started = Command::new("docker")
        .args(["exec", "-d", &container, "python3", "-c", fake])
        .status()
        .expect("docker exec");
    assert!(started.success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    ends_with_the_stage_message(&hermes, source).await;

    // The client can hear the message before the event writer has written the
    // second session's error.
    tokio::task::block_in_place(|| {
        hermes.wait_for_events("both sessions' errors written", |events| {
            events
                .iter()
                .filter(|e| e["eventid"] == "hermes.session.error")
                .count()
                >= 2
        })
    });
    let stages: Vec<String> = hermes
        .events_of("hermes.session.error")
        .iter()
        .filter_map(|e| e["stage"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(stages, ["box_sshd", "box_sshd"], "{stages:?}");
    // Nothing lost: both sessions that could not start are closed in the event log,
    // with their record (the login, how it ended).
    let failed: Vec<String> = hermes
        .events_of("hermes.session.error")
        .iter()
        .filter_map(|e| e["session"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    let events = tokio::task::block_in_place(|| {
        hermes.wait_for_events("both failed sessions closed", |events| {
            failed.iter().all(|session| {
                events.iter().any(|e| {
                    e["eventid"] == "cowrie.session.closed" && e["session"] == session.as_str()
                })
            })
        })
    });
    assert!(!events.is_empty());
    for session in &failed {
        let metadata: serde_json::Value = serde_json::from_slice(
            &std::fs::read(hermes.session_file(session, "json")).expect("metadata"),
        )
        .expect("json");
        assert!(metadata["end_reason"].is_string(), "{metadata}");
        assert_eq!(metadata["username"], "root", "{metadata}");
    }
    // Another source's box is untouched.
    let (_other, mut shell) = {
        let client = Client::login_from(hermes.port, [127, 0, 0, 72].into(), "root", "toor").await;
        let shell = client.shell(80, 24).await;
        (client, shell)
    };
    assert!(
        shell.read_until(&prompt, 0, Duration::from_secs(20)).await,
        "{}",
        shell.text()
    );
}

/// Output of `docker exec CONTAINER ARGS...`.
fn in_box(container: &str, args: &[&str]) -> String {
    let out = Command::new("docker")
        .arg("exec")
        .arg(container)
        .args(args)
        .output()
        .expect("docker exec");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A root login on a box fresh from the pool: Hermes writes root's password into the
/// box's /etc/shadow from the host (nothing runs in the box through the engine for
/// it), and the box holds what `chpasswd` would have
/// left: the hash is SHA-512 crypt of the login's password with sixteen characters of
/// salt and today's date of change; the file keeps its owner and mode; the old file
/// is `/etc/shadow-` with its old times; no temporary file is left; the session's
/// capture takes neither file; the login goes through the box's sshd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_boxs_root_password_is_written_as_chpasswd_writes_it() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let (client, mut shell) = crate::client::root_shell(hermes.port).await;
    let container = hermes
        .events_of("hermes.container.allocate")
        .first()
        .and_then(|e| e["container_id"].as_str().map(str::to_owned))
        .expect("the box");
    // No chpasswd was started in the box through the engine: the engine's own record
    // of execs, up to now (the test's `docker exec`s come after).
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 1;
    let execs = Command::new("docker")
        .args(["events", "--since", &started.to_string(), "--until"])
        .arg(until.to_string())
        .args(["--filter", &format!("container={container}")])
        .args(["--filter", "event=exec_create", "--format", "{{.Action}}"])
        .output()
        .expect("docker events");
    assert!(execs.status.success());
    let execs = String::from_utf8_lossy(&execs.stdout).into_owned();
    assert!(!execs.contains("chpasswd"), "started in the box: {execs}");

    let entry = in_box(&container, &["getent", "shadow", "root"]);
    let fields: Vec<&str> = entry.trim().split(':').collect();
    assert_eq!(fields.len(), 9, "{entry}");
    let hash = fields[1];
    let parts: Vec<&str> = hash.split('$').collect();
    assert_eq!(parts.len(), 4, "{hash}");
    assert_eq!(
        (parts[1], parts[2].len(), parts[3].len()),
        ("6", 16, 86),
        "{hash}"
    );
    let today = in_box(&container, &["sh", "-c", "echo $(( $(date +%s) / 86400 ))"]);
    assert_eq!(
        fields[2],
        today.trim(),
        "the date of change is today: {entry}"
    );
    let check = Command::new("docker")
        .args(["exec", "-e", &format!("H={hash}"), &container, "perl", "-e"])
        .arg("exit(crypt(q(toor), $ENV{H}) eq $ENV{H} ? 0 : 1)")
        .status()
        .expect("docker exec");
    assert!(check.success(), "the hash is not of the login's password");

    let stat = in_box(
        &container,
        &[
            "stat",
            "-c",
            "%n %a %U %G %Y",
            "/etc/shadow",
            "/etc/shadow-",
        ],
    );
    let stat: Vec<Vec<&str>> = stat.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(stat.len(), 2, "{stat:?}");
    for file in &stat {
        assert_eq!(&file[1..4], ["640", "root", "shadow"], "{file:?}");
    }
    let mtime = |file: &Vec<&str>| file[4].parse::<u64>().expect("mtime");
    assert!(
        mtime(&stat[0]) + 2 >= started,
        "/etc/shadow is new: {stat:?}"
    );
    assert!(
        mtime(&stat[1]) < started,
        "the backup keeps the old times: {stat:?}"
    );
    let old = in_box(&container, &["grep", "^root:", "/etc/shadow-"]);
    assert!(old.starts_with("root:") && !old.contains(hash), "{old}");
    let left = in_box(&container, &["sh", "-c", "ls -a /etc | grep -c '+$'"]);
    assert_eq!(left.trim(), "0", "a temporary file left in /etc");

    let out = shell.run("echo ok", crate::client::ROOT_PROMPT).await;
    assert!(out.contains("ok"), "{out}");
    shell.send("exit\n").await;
    assert!(shell.read_to_close(Duration::from_secs(10)).await);
    drop(shell);
    drop(client);
    let events = tokio::task::block_in_place(|| {
        hermes.wait_for_events("the session closed", |events| {
            events
                .iter()
                .any(|e| e["eventid"] == "cowrie.session.closed")
        })
    });
    // The session's own shell history is its; the account files are not.
    let captured: Vec<&str> = events
        .iter()
        .filter(|e| e["eventid"] == "cowrie.session.file_download")
        .filter_map(|e| e["destfile"].as_str())
        .collect();
    assert!(
        !captured.iter().any(|f| f.starts_with("/etc/")),
        "{captured:?}"
    );
    let paths: Vec<&str> = events
        .iter()
        .filter(|e| e["eventid"] == "hermes.channel.process")
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert_eq!(paths, ["sshd_taken"], "{paths:?}");
}
