//! `hermes sessions` and `hermes replay` against a recordings directory built here:
//! sessions over two day directories and the flat layout, a running one, a cast cut
//! short by a kill, a corrupt metadata file and a hostile username and recording.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use hermes_core::time::iso8601_micros;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn hermes(args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_hermes"))
        .args(args)
        .output()
        .expect("run hermes");
    Run {
        code: status.code(),
        stdout: String::from_utf8(stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn root(&self) -> &str {
        self.root.to_str().expect("utf-8 path")
    }

    /// `hermes <command> --dir ROOT <args>`.
    fn run(&self, command: &str, args: &[&str]) -> Run {
        let mut all = vec![command, "--dir", self.root()];
        all.extend_from_slice(args);
        hermes(&all)
    }

    /// The SESSION column of `hermes sessions`.
    fn listed(&self, args: &[&str]) -> Vec<String> {
        let run = self.run("sessions", args);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        run.stdout
            .lines()
            .skip(1)
            .map(|line| {
                line.split_whitespace()
                    .nth(2)
                    .expect("session column")
                    .to_owned()
            })
            .collect()
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

const CAST_HEADER: &str = "{\"version\":2,\"width\":80,\"height\":24,\"timestamp\":1764000000,\"title\":\"t\",\"env\":{\"TERM\":\"xterm\"}}\n";

const ALPHA: &str = "aaaaaaaaaaa1";
const EVIL: &str = "aaaaaaaaaaa2";
const RUNNING: &str = "bbbbbbbbbbb1";
const CORRUPT: &str = "bbbbbbbbbbb2";
const FLAT: &str = "cccccccccccc";
const RECENT: &str = "dddddddddddd";

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("recordings");
    let day1 = root.join("2025/11/22");
    let day2 = root.join("2025/11/23");

    write(
        &day1.join(format!("{ALPHA}.json")),
        r#"{"session":"aaaaaaaaaaa1","username":"root","end_reason":"exited","exit_status":0,
        "recording":"2025/11/22/aaaaaaaaaaa1.cast",
        "recordings":["2025/11/22/aaaaaaaaaaa1.cast","2025/11/22/aaaaaaaaaaa1-1.cast"],
        "src_ip":"198.51.100.7","src_port":40001,"dst_ip":"203.0.113.5","dst_port":22,
        "client_version":"SSH-2.0-OpenSSH_9.2p1",
        "auth_attempts":[{"method":"password","username":"root","password":"x","success":true,"timestamp":"2025-11-22T10:00:00.500000Z"}],
        "start_time":"2025-11-22T10:00:00.000000Z","end_time":"2025-11-22T10:00:54.900000Z","duration":54.9,
        "container_id":"abc",
        "commands":[
          {"time":"2025-11-22T10:00:10.000000Z","channel":0,"input":"python3"},
          {"time":"2025-11-22T10:00:02.000000Z","channel":0,"input":"uname -a"},
          {"time":"2025-11-22T10:00:12.250000Z","channel":0,"input":"print(1)","realm":"python3"},
          {"time":"2025-11-22T10:00:20.000000Z","channel":1,"input":"ls /tm","approximate":true}],
        "files":[
          {"time":"2025-11-22T10:00:05.000000Z","kind":"download","destfile":"/tmp/x.sh",
           "shasum":"5f0c7b2d4e6a8c1f3b5d7e9f0a2c4e6b8d0f1a3c5e7b9d1f3a5c7e9b0d2f4a6c","size":123,
           "url":"http://192.0.2.9/x.sh","duplicate":false},
          {"time":"2025-11-22T10:00:30.000000Z","kind":"upload","destfile":"/root/a.bin",
           "shasum":"1111111111111111111111111111111111111111111111111111111111111111","size":9,"duplicate":true}]}"#,
    );
    write(
        &day1.join(format!("{ALPHA}.cast")),
        &format!(
            "{CAST_HEADER}[0.1, \"o\", \"root@web:~# \"]\n\
             [0.5, \"i\", \"SECRET-INPUT\\r\"]\n\
             [0.6, \"o\", \"uid=0(root)\\r\\n\"]\n\
             [0.7, \"o\", \"\\u001b]52;c;Y3VybCBldmls\\u0007\"]\n\
             [0.8, \"o\", \"\\u001b[6n\\u001b]0;PWNED-TITLE\\u0007\\u009b6n\"]\n\
             [9.0, \"r\", \"100x30\"]\n\
             [30.0, \"o\", \"\\u001b[32mCLIPBOARD-DONE\\u001b[0m\\r\\n\"]\n"
        ),
    );
    write(
        &day1.join(format!("{ALPHA}-1.cast")),
        &format!("{CAST_HEADER}[0.1, \"o\", \"channel one output\\r\\n\"]\n"),
    );
    write(
        &day1.join(format!("{EVIL}.json")),
        r#"{"session":"aaaaaaaaaaa2","username":"ev\u001b[31mil\u009b6n","end_reason":"client_closed",
        "src_ip":"2001:db8::5","src_port":40002,"start_time":"2025-11-22T23:30:00.000000Z",
        "end_time":"2025-11-22T23:33:12.000000Z","duration":192.0,
        "commands":[{"time":"2025-11-22T23:30:01.000000Z","channel":0,"input":"echo \u001b]52;c;eA==\u0007"}],
        "files":null}"#,
    );
    write(
        &day2.join(format!("{RUNNING}.json")),
        r#"{"session":"bbbbbbbbbbb1","username":"admin","end_reason":"running","exit_status":null,
        "recording":null,"src_ip":"203.0.113.9","src_port":40003,"start_time":"2025-11-23T15:04:05.123456Z",
        "end_time":null,"duration":null}"#,
    );
    write(
        &day2.join(format!("{RUNNING}.cast")),
        &format!("{CAST_HEADER}[0.1, \"o\", \"before the kill\\r\\n\"]\n[0.2, \"o\", \"cut sh"),
    );
    write(
        &day2.join(format!("{CORRUPT}.json")),
        r#"{"session":"bbbbbbbbbbb2","username":"#,
    );
    write(
        &root.join(format!("{FLAT}.json")),
        r#"{"session":"cccccccccccc","username":"oracle","end_reason":"timeout",
        "src_ip":"::ffff:198.51.100.200","src_port":40004,"start_time":"2025-11-21T08:00:00.000000Z",
        "end_time":"2025-11-21T09:00:05.000000Z","duration":3605.0,"commands":["id"]}"#,
    );
    let hour_ago = iso8601_micros(SystemTime::now() - Duration::from_secs(3600));
    let recent_dir = format!(
        "{}/{}/{}",
        &hour_ago[..4],
        &hour_ago[5..7],
        &hour_ago[8..10]
    );
    write(
        &root.join(&recent_dir).join(format!("{RECENT}.json")),
        &format!(
            r#"{{"session":"dddddddddddd","username":"recent","end_reason":"exited",
            "src_ip":"192.0.2.50","src_port":40005,"start_time":"{hour_ago}","duration":3.0}}"#
        ),
    );
    Fixture { dir, root }
}

#[test]
fn lists_newest_first_and_skips_corrupt_metadata() {
    let fx = fixture();
    let run = fx.run("sessions", &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "START", "SESSION", "SOURCE", "USER", "DURATION", "CMDS", "FILES", "END"
        ]
    );
    assert_eq!(fx.listed(&[]), [RECENT, RUNNING, EVIL, ALPHA, FLAT]);
    let alpha = lines.iter().find(|l| l.contains(ALPHA)).expect("alpha row");
    assert_eq!(
        alpha.split_whitespace().collect::<Vec<_>>(),
        [
            "2025-11-22",
            "10:00:00",
            ALPHA,
            "198.51.100.7:40001",
            "root",
            "54.9s",
            "4",
            "2",
            "exited"
        ]
    );
    let running = lines
        .iter()
        .find(|l| l.contains(RUNNING))
        .expect("running row");
    assert!(running.contains("2025-11-23 15:04:05"), "{running}");
    assert!(running.contains(" running "), "{running}");
    assert!(running.ends_with("running"), "{running}");
    let flat = lines.iter().find(|l| l.contains(FLAT)).expect("flat row");
    assert!(
        flat.contains("198.51.100.200:40004") && flat.contains("1h00m"),
        "{flat}"
    );
    let evil = lines.iter().find(|l| l.contains(EVIL)).expect("evil row");
    assert!(
        evil.contains("[2001:db8::5]:40002") && evil.contains("3m12s"),
        "{evil}"
    );
    // The corrupt file is named on stderr and does not stop the listing.
    assert!(
        run.stderr.contains(&format!("{CORRUPT}.json")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("not valid JSON"), "{}", run.stderr);
    assert!(!run.stdout.contains(CORRUPT));
}

#[test]
fn attacker_strings_are_escaped_in_the_table() {
    let fx = fixture();
    let run = fx.run("sessions", &[]);
    assert!(
        run.stdout.contains("ev\\x1b[31mil\\u{9b}6n"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains('\x1b') && !run.stdout.contains('\u{9b}'));
}

#[test]
fn source_filter_exact_and_cidr() {
    let fx = fixture();
    assert_eq!(fx.listed(&["--source", "198.51.100.7"]), [ALPHA]);
    assert_eq!(fx.listed(&["--source", "198.51.100.0/24"]), [ALPHA, FLAT]);
    assert_eq!(fx.listed(&["--source", "::ffff:198.51.100.200"]), [FLAT]);
    assert_eq!(fx.listed(&["--source", "198.51.100.200"]), [FLAT]);
    assert_eq!(fx.listed(&["--source", "2001:db8::5"]), [EVIL]);
    assert_eq!(fx.listed(&["--source", "2001:db8::/32"]), [EVIL]);
    assert_eq!(
        fx.listed(&["--source", "0.0.0.0/0"]),
        [RECENT, RUNNING, ALPHA, FLAT]
    );
}

#[test]
fn time_filters_in_all_three_forms() {
    let fx = fixture();
    assert_eq!(
        fx.listed(&[
            "--since",
            "2025-11-22T12:00:00Z",
            "--until",
            "2025-11-23T16:00:00Z"
        ]),
        [RUNNING, EVIL]
    );
    assert_eq!(
        fx.listed(&[
            "--since",
            "2025-11-22T11:00:00+01:00",
            "--until",
            "2025-11-22T10:00:00Z"
        ]),
        [ALPHA]
    );
    assert_eq!(
        fx.listed(&["--since", "2025-11-22", "--until", "2025-11-23"]),
        [EVIL, ALPHA]
    );
    assert_eq!(fx.listed(&["--until", "2025-11-22"]), [FLAT]);
    assert_eq!(fx.listed(&["--since", "2h"]), [RECENT]);
    assert_eq!(fx.listed(&["--since", "90m"]), [RECENT]);
    assert_eq!(fx.listed(&["--until", "30m", "--since", "1d"]), [RECENT]);
    assert_eq!(fx.listed(&["--until", "2h"]), [RUNNING, EVIL, ALPHA, FLAT]);
}

#[test]
fn limit_and_json() {
    let fx = fixture();
    assert_eq!(fx.listed(&["--limit", "2"]), [RECENT, RUNNING]);
    let run = fx.run(
        "sessions",
        &["--json", "--source", "198.51.100.0/22", "--limit", "3"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let docs: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["session"], ALPHA);
    assert_eq!(docs[0]["files"][0]["destfile"], "/tmp/x.sh");
    assert_eq!(docs[1]["session"], FLAT);

    let all = fx.run("sessions", &["--json"]);
    assert_eq!(all.stdout.lines().count(), 5);
    assert!(!all.stdout.contains('\x1b') && !all.stdout.contains('\u{9b}'));
    let evil: serde_json::Value = all
        .stdout
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("json"))
        .find(|doc| doc["session"] == EVIL)
        .expect("evil session");
    assert_eq!(evil["username"], "ev\u{1b}[31mil\u{9b}6n");
}

#[test]
fn no_sessions_is_not_an_error() {
    let fx = fixture();
    let run = fx.run("sessions", &["--source", "10.0.0.1"]);
    assert_eq!(run.code, Some(0));
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr.lines().last(), Some("no sessions"));
    let empty = tempfile::tempdir().expect("tempdir");
    let run = hermes(&["sessions", "--dir", empty.path().to_str().expect("utf-8")]);
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (Some(0), "", "no sessions\n")
    );
}

#[test]
fn bad_arguments_exit_2_naming_the_argument() {
    let fx = fixture();
    for (args, needle) in [
        (&["--since", "yesterday"][..], "--since"),
        (&["--until", "2025-13-01"][..], "--until"),
        (&["--source", "198.51.100.0/33"][..], "--source"),
        (&["--source", "example.com"][..], "--source"),
        (&["--limit", "0"][..], "--limit"),
    ] {
        let run = fx.run("sessions", args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(needle), "{args:?}: {}", run.stderr);
    }
    let missing = fx.root.join("nope");
    let run = hermes(&["sessions", "--dir", missing.to_str().expect("utf-8")]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("--dir") && run.stderr.contains("no such directory"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}

#[test]
fn replay_plays_sanitised_output() {
    let fx = fixture();
    let run = fx.run("replay", &[ALPHA, "--speed", "1000"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.starts_with("root@web:~# uid=0(root)\r\n"),
        "{:?}",
        run.stdout
    );
    assert!(
        run.stdout.contains("\x1b[32mCLIPBOARD-DONE\x1b[0m\r\n"),
        "{:?}",
        run.stdout
    );
    for hostile in [
        "52;c",
        "Y3VybCBldmls",
        "\x1b]",
        "\x1b[6n",
        "PWNED-TITLE",
        "\u{9b}",
        "SECRET-INPUT",
    ] {
        assert!(
            !run.stdout.contains(hostile),
            "{hostile:?} in {:?}",
            run.stdout
        );
    }
    assert_eq!(run.stderr, "");

    let one = fx.run("replay", &[ALPHA, "--speed", "1000", "--channel", "1"]);
    assert_eq!(one.code, Some(0), "{}", one.stderr);
    assert_eq!(one.stdout, "channel one output\r\n");

    let by_path = fx.root.join("2025/11/22").join(format!("{ALPHA}.cast"));
    let direct = hermes(&[
        "replay",
        by_path.to_str().expect("utf-8"),
        "--speed",
        "1000",
    ]);
    assert_eq!(direct.code, Some(0), "{}", direct.stderr);
    assert_eq!(direct.stdout, run.stdout);
}

#[test]
fn replay_caps_idle_time() {
    let fx = fixture();
    // 30 s of recording; capped to 0.5 s pauses at speed 10 it takes well under 2 s.
    let started = std::time::Instant::now();
    let run = fx.run("replay", &[ALPHA, "--speed", "10", "--max-idle", "0.5"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(run.stdout.contains("CLIPBOARD-DONE"));
}

#[test]
fn replay_of_a_cut_short_cast_plays_and_warns() {
    let fx = fixture();
    let run = fx.run("replay", &[RUNNING, "--speed", "1000"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, "before the kill\r\n");
    assert!(
        run.stderr.contains("warning") && run.stderr.contains("cut short"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("{RUNNING}.cast")),
        "{}",
        run.stderr
    );
}

#[test]
fn commands_timeline_in_time_order() {
    let fx = fixture();
    let run = fx.run("replay", &[ALPHA, "--commands"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "session aaaaaaaaaaa1  from 198.51.100.7:40001  user root  start 2025-11-22 10:00:00 UTC  end exited"
    );
    let body: Vec<String> = lines[1..]
        .iter()
        .map(|l| l.trim_start().to_owned())
        .collect();
    assert_eq!(
        body,
        [
            "+2.000s  [ch0] uname -a",
            "+5.000s  file download /tmp/x.sh sha256=5f0c7b2d4e6a8c1f3b5d7e9f0a2c4e6b8d0f1a3c5e7b9d1f3a5c7e9b0d2f4a6c 123 B from http://192.0.2.9/x.sh",
            "+10.000s  [ch0] python3",
            "+12.250s  [ch0] print(1) (realm: python3)",
            "+20.000s  [ch1] ls /tm (approximate)",
            "+30.000s  file upload /root/a.bin sha256=1111111111111111111111111111111111111111111111111111111111111111 9 B (duplicate)",
        ]
    );

    let evil = fx.run("replay", &[EVIL, "--commands"]);
    assert_eq!(evil.code, Some(0), "{}", evil.stderr);
    assert!(
        evil.stdout.contains("user ev\\x1b[31mil\\u{9b}6n"),
        "{}",
        evil.stdout
    );
    assert!(
        evil.stdout
            .contains("+1.000s  [ch0] echo \\x1b]52;c;eA==\\x07"),
        "{}",
        evil.stdout
    );
    assert!(!evil.stdout.contains('\x1b') && !evil.stdout.contains('\u{9b}'));
}

#[test]
fn replay_errors() {
    let fx = fixture();
    let unknown = fx.run("replay", &["ffffffffffff"]);
    assert_eq!(unknown.code, Some(1));
    assert_eq!(
        unknown.stderr,
        format!("hermes: no session ffffffffffff under {}\n", fx.root())
    );
    let no_channel = fx.run("replay", &[ALPHA, "--channel", "5"]);
    assert_eq!(no_channel.code, Some(1));
    assert!(
        no_channel.stderr.contains("recorded channels: 0, 1"),
        "{}",
        no_channel.stderr
    );
    let no_cast = fx.run("replay", &[EVIL]);
    assert_eq!(no_cast.code, Some(1), "{}", no_cast.stderr);
    let corrupt = fx.run("replay", &[CORRUPT, "--commands"]);
    assert_eq!(corrupt.code, Some(1));
    assert!(
        corrupt.stderr.contains("not valid JSON"),
        "{}",
        corrupt.stderr
    );
    let missing_file = fx.run("replay", &["/nonexistent/x.cast"]);
    assert_eq!(missing_file.code, Some(1));

    for args in [
        &["not-a-session"][..],
        &[ALPHA, "--speed", "0"][..],
        &[ALPHA, "--speed", "fast"][..],
        &[ALPHA, "--max-idle", "-1"][..],
        &[ALPHA, "--channel", "-1"][..],
    ] {
        let run = fx.run("replay", args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
    }
    let no_dir = hermes(&["replay", ALPHA, "--dir", "/nonexistent/recordings"]);
    assert_eq!(no_dir.code, Some(2), "{}", no_dir.stderr);
}

#[test]
fn recordings_directory_from_the_config_file() {
    let fx = fixture();
    let config = fx.dir.path().join("hermes.yaml");
    write(
        &config,
        &format!("recording:\n  output_dir: {}\n", fx.root()),
    );
    let config = config.to_str().expect("utf-8");
    let run = hermes(&["sessions", "--config", config, "--limit", "1"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains(RECENT), "{}", run.stdout);
    let replay = hermes(&[
        "replay",
        ALPHA,
        "-c",
        config,
        "--speed",
        "1000",
        "--channel",
        "1",
    ]);
    assert_eq!(replay.stdout, "channel one output\r\n", "{}", replay.stderr);

    let elsewhere = fx.dir.path().join("other.yaml");
    write(
        &elsewhere,
        "recording:\n  output_dir: /nonexistent/recordings\n",
    );
    let run = hermes(&["sessions", "--config", elsewhere.to_str().expect("utf-8")]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("recording.output_dir"),
        "{}",
        run.stderr
    );
    let missing = hermes(&["sessions", "--config", "/nonexistent/hermes.yaml"]);
    assert_eq!(missing.code, Some(2), "{}", missing.stderr);
}
