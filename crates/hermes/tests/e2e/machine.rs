//! The container as the attacker meets it: a Debian server's login and process tree,
//! their own account, and their own machine again when they come back.

use std::time::Duration;

use serde_json::Value;

use crate::client::{Client, Shell};
use crate::events::Events;
use crate::harness::{Hermes, Options};

async fn run(shell: &mut Shell, command: &str, prompt: &str) -> String {
    shell.run(command, prompt).await
}

/// A root login from `source` with a terminal, at its prompt.
async fn root_login_from(hermes: &Hermes, source: [u8; 4], prompt: &str) -> (Client, Shell) {
    let client = Client::login_from(hermes.port, source.into(), "root", "toor").await;
    let mut shell = client.shell(160, 40).await;
    assert!(
        shell.read_until(prompt, 0, Duration::from_secs(20)).await,
        "{}",
        shell.text()
    );
    (client, shell)
}

/// A new account's prompt on an xterm-256color terminal: Debian's /etc/skel/.bashrc
/// colours it, as on any Debian server where `useradd -m` made the account.
fn user_prompt(user: &str, hostname: &str) -> String {
    format!("\u{1b}[01;32m{user}@{hostname}\u{1b}[00m:\u{1b}[01;34m~\u{1b}[00m$ ")
}

/// The box's /etc/machine-id (32 hex digits).
async fn machine_id(shell: &mut Shell, prompt: &str) -> String {
    let out = run(shell, "cat /etc/machine-id", prompt).await;
    out.lines()
        .filter_map(|line| line.trim().rsplit('\r').next())
        .find(|line| line.len() == 32 && line.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no machine id: {out}"))
        .to_owned()
}

/// The answer of `ps -eo args | grep -ci NAME; <two counts>; echo end` says nothing
/// was found (`grep -ci` in the ps pipeline counts its own command line).
fn names_nothing(out: &str) -> bool {
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    lines
        .windows(4)
        .any(|w| w[0].rsplit('\r').next() == Some("1") && w[1..] == ["0", "0", "end"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_and_the_process_tree_look_like_a_debian_server() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    let client = Client::login(hermes.port, "root", "toor").await;
    let mut shell = client.shell(120, 40).await;
    let prompt = format!("root@{}:~# ", hermes.hostname);
    assert!(
        shell.read_until(&prompt, 0, Duration::from_secs(20)).await,
        "{}",
        shell.text()
    );
    let banner = shell.text();
    assert!(
        banner.starts_with("Linux web-prod-01 "),
        "uname line first: {banner:?}"
    );
    assert!(
        banner
            .contains("The programs included with the Debian GNU/Linux system are free software;")
    );
    // The server's past may have root's last login (by key, from the admin's
    // place); never this client's, which has not logged in before.
    if let Some(line) = banner.lines().find(|line| line.starts_with("Last login:")) {
        assert!(!line.contains("127.0.0.1"), "{banner}");
    }

    let out = run(
        &mut shell,
        "ls -la /.dockerenv; hostname; echo \"tty=$SSH_TTY client=$SSH_CLIENT\"; getent hosts $(hostname); sudo -n true 2>&1; echo sudo=$?",
        &prompt,
    )
    .await;
    assert!(out.contains("cannot access '/.dockerenv'"), "{out}");
    assert!(out.contains("web-prod-01"), "{out}");
    // The host is named in /etc/hosts, as Debian's installer does: sudo resolves it.
    assert!(out.contains("127.0.1.1       web-prod-01"), "{out}");
    assert!(!out.contains("unable to resolve host"), "{out}");
    assert!(out.contains("sudo=0"), "{out}");
    // Bait cloud keys of the image's own, not AWS's published example pair.
    let bait = run(
        &mut shell,
        "grep -cE '^AWS_ACCESS_KEY_ID=AKIA[A-Z2-7]{16}$' /opt/app/.env; grep -cE '^AWS_SECRET_ACCESS_KEY=[A-Za-z0-9/+]{40}$' /opt/app/.env; grep -ci example /opt/app/.env",
        &prompt,
    )
    .await;
    assert!(bait.contains("1\r\n1\r\n0\r\n"), "{bait}");
    // So are the database password and the deploy key root trusts (a secret shared
    // by every installation would be a signature).
    let secrets = run(
        &mut shell,
        "grep -c '^DB_PASSWORD=[A-Za-z0-9]\\{16\\}$' /opt/app/.env; grep -c @ /opt/app/.env; ssh-keygen -lf /root/.ssh/authorized_keys | cut -d' ' -f1,4; grep -c AAAAIJ4lq2bEw1m0dmEw7Sd0uB9dD5b4 /root/.ssh/authorized_keys",
        &prompt,
    )
    .await;
    assert!(
        secrets.contains("1\r\n0\r\n256 (ED25519)\r\n0\r\n"),
        "{secrets}"
    );
    // The bait history tells the box's own story: every program it runs is there
    // (admin's read as admin: root here lacks CAP_DAC_OVERRIDE).
    let history = run(
        &mut shell,
        "check='n=0; while read -r cmd _; do n=$((n+1)); type \"$cmd\" >/dev/null 2>&1 || echo \"missing $cmd\"; done < ~/.bash_history; echo \"$(whoami) $n\"'; bash -c \"$check\"; setpriv --reuid=admin --regid=admin --init-groups env HOME=/home/admin bash -c \"$check\"",
        &prompt,
    )
    .await;
    assert!(
        !history.lines().any(|line| line.starts_with("missing ")),
        "{history}"
    );
    assert!(history.contains("admin 6"), "{history}");
    assert!(history.contains("root 11"), "{history}");
    // The box's sshd sees a loopback client as coming from the box's gateway.
    assert!(out.contains("tty=/dev/pts/0 client=10.0.2.2 "), "{out}");

    let out = run(&mut shell, "ps -eo comm=,args= | cat", &prompt).await;
    for expected in [
        "systemd         /sbin/init",
        "systemd-journal /lib/systemd/systemd-journald",
        "systemd-logind  /lib/systemd/systemd-logind",
        "rsyslogd        /usr/sbin/rsyslogd",
        "cron            /usr/sbin/cron",
        "dbus-daemon     /usr/bin/dbus-daemon --system",
        "sshd            sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups",
        "sshd            sshd: root@pts/0",
        "bash            -bash",
    ] {
        assert!(out.contains(expected), "`{expected}` missing from:\n{out}");
    }
    let out = run(&mut shell, "tr '\\0' ' ' < /proc/$PPID/cmdline; echo; cat /proc/$PPID/environ | tr '\\0' '\\n' | grep -c SSH_SESSION", &prompt).await;
    assert!(out.contains("sshd: root@pts/0"), "{out}");
    assert!(
        out.contains("\r\n0\r\n"),
        "no launcher parameters visible: {out}"
    );
    let out = run(&mut shell, "who; last -n 1 root | head -n 1; grep -c 'Accepted password for root from 10.0.2.2' /var/log/auth.log", &prompt).await;
    assert!(out.contains("root     pts/0"), "who: {out}");
    assert!(out.contains("10.0.2.2"), "{out}");
    assert!(out.contains("\r\n1\r\n"), "auth.log has the login: {out}");
    let out = run(&mut shell, "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; cat /proc/self/cgroup | grep -c docker", &prompt).await;
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(
        out.contains("\r\n0\r\n"),
        "no container id in /proc/self/cgroup: {out}"
    );
}

/// PID 1 is Debian's systemd, as on an installed Debian 12: its binary, name and
/// units agree (ssh, cron, rsyslog and dbus run, nothing failed), `systemctl`,
/// `journalctl`, `hostnamectl` and `service` answer, each box has a machine id of its
/// own, and nothing in the box names the product or the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid_1_is_debians_systemd_whose_units_run_and_each_box_has_its_own_machine_id() {
    require_docker!();
    let hermes = Hermes::start(Options {
        pool_size: 2,
        ..Options::default()
    });
    let prompt = format!("root@{}:~# ", hermes.hostname);
    let mut machine_ids = Vec::new();
    for source in [[127, 0, 0, 1], [127, 0, 0, 2]] {
        let (_client, mut shell) = root_login_from(&hermes, source, &prompt).await;
        let out = run(
            &mut shell,
            "readlink /proc/1/exe; cat /proc/1/comm; dpkg -S /sbin/init; echo \"state=$(systemctl is-system-running)\"; grep name=systemd /proc/1/cgroup",
            &prompt,
        )
        .await;
        assert!(
            out.contains("/usr/lib/systemd/systemd\r\nsystemd\r\nsystemd-sysv: /sbin/init\r\nstate=running\r\n"),
            "{out}"
        );
        assert!(out.contains(":name=systemd:/init.scope"), "{out}");
        let out = run(
            &mut shell,
            "systemctl list-units --type=service --state=running --no-pager --plain | awk '{print $1}' | sort | tr '\\n' ' '; echo; systemctl --failed --no-legend --no-pager | wc -l",
            &prompt,
        )
        .await;
        for unit in [
            "ssh.service",
            "cron.service",
            "rsyslog.service",
            "dbus.service",
            "systemd-journald.service",
            "systemd-logind.service",
        ] {
            assert!(out.contains(unit), "{unit} not running: {out}");
        }
        assert!(out.contains("\r\n0\r\n"), "a unit failed: {out}");
        let out = run(
            &mut shell,
            "systemctl status ssh --no-pager | head -3; service ssh status > /dev/null; echo \"service=$?\"; journalctl -n 20 --no-pager | grep -c . ; hostnamectl | grep -E 'Static hostname|Operating System|Virtualization'",
            &prompt,
        )
        .await;
        assert!(
            out.contains("ssh.service - OpenBSD Secure Shell server"),
            "{out}"
        );
        assert!(out.contains("Active: active (running)"), "{out}");
        assert!(out.contains("service=0"), "{out}");
        assert!(
            out.contains(&format!("Static hostname: {}", hermes.hostname)),
            "{out}"
        );
        assert!(out.contains("Debian GNU/Linux 12 (bookworm)"), "{out}");
        assert!(
            !out.contains("docker"),
            "hostnamectl names the engine: {out}"
        );
        let journal_lines = out
            .lines()
            .filter_map(|line| line.trim().rsplit('\r').next())
            .find_map(|line| line.parse::<u32>().ok());
        assert!(
            journal_lines.is_some_and(|n| n >= 5),
            "journalctl -n: {out}"
        );
        let out = run(
            &mut shell,
            "ps -eo args | grep -ci hermes; grep -rIil -e hermes -e docker /etc /usr/sbin /usr/lib/openssh /run/systemd 2>/dev/null | wc -l; ls -a / /run/systemd | grep -c -e dockerenv -e '^container$'; echo end",
            &prompt,
        )
        .await;
        assert!(
            names_nothing(&out),
            "the box names the product or the engine: {out}"
        );
        machine_ids.push(machine_id(&mut shell, &prompt).await);
        // The installer's /etc/hosts, dated with the installation (weeks before), not
        // the engine's.
        let out = run(
            &mut shell,
            "head -2 /etc/hosts; grep -c -e fe00:: -e ff00:: -e 172. /etc/hosts; find /etc/hosts /etc/machine-id -mtime +30 | wc -l",
            &prompt,
        )
        .await;
        assert!(
            out.contains(&format!(
                "127.0.0.1\tlocalhost\r\n127.0.1.1\t{}\r\n0\r\n2\r\n",
                hermes.hostname
            )),
            "{out:?}"
        );
    }
    assert_ne!(machine_ids[0], machine_ids[1], "two boxes, one machine id");
}

/// Root in the box owns its part of the name=systemd hierarchy and nothing else: the
/// controllers (its limits) stay read-only, the hierarchy's root (release_agent) is
/// out of sight, and a box that makes cgroups without end is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_in_the_box_owns_only_its_own_cgroup_and_a_cgroup_flood_stops_the_box() {
    require_docker!();
    let hermes = Hermes::start(Options::default());
    let client = Client::login(hermes.port, "root", "toor").await;
    let mut shell = client.shell(160, 40).await;
    let prompt = format!("root@{}:~# ", hermes.hostname);
    assert!(
        shell.read_until(&prompt, 0, Duration::from_secs(20)).await,
        "{}",
        shell.text()
    );
    let out = run(
        &mut shell,
        "echo 1073741824 > /sys/fs/cgroup/memory/memory.limit_in_bytes; echo 100000 > /sys/fs/cgroup/pids/pids.max; cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max; ls /sys/fs/cgroup/systemd/release_agent; mkdir /sys/fs/cgroup/systemd/mine && echo made; ls /sys/fs/cgroup/systemd | grep -c docker",
        &prompt,
    )
    .await;
    assert!(
        out.contains("268435456\r\n100\r\n"),
        "limits unchanged: {out}"
    );
    assert!(out.matches("Read-only file system").count() >= 2, "{out}");
    assert!(out.contains("release_agent': No such file"), "{out}");
    assert!(out.contains("made"), "its own part is its own: {out}");
    assert!(out.contains("\r\n0\r\n"), "no other box in sight: {out}");

    shell
        .send("python3 -c 'import os; [os.mkdir(\"/sys/fs/cgroup/systemd/f%d\" % i) for i in range(200000)]'; echo flood-$((40+2))\r")
        .await;
    let ended = shell.read_to_close(Duration::from_secs(60)).await;
    assert!(ended, "the box was not stopped: {}", shell.text());
    assert!(!shell.text().contains("flood-42"), "{}", shell.text());
    hermes.wait_for("hermes.container.allocate");
    let container = hermes
        .events_of("hermes.container.allocate")
        .first()
        .and_then(|e| e["container_id"].as_str().map(str::to_owned))
        .expect("the session's container");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !hermes.output().contains("made more cgroups than allowed") {
        assert!(
            std::time::Instant::now() < deadline,
            "the stop is not logged: {}",
            hermes.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(line) = hermes
        .output()
        .lines()
        .find(|l| l.contains("made more cgroups than allowed"))
    {
        eprintln!("{line}");
    }
    // Its groups are gone from the host with it.
    let group = std::path::Path::new("/sys/fs/cgroup/systemd/docker").join(&container);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while group.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} is still there",
            group.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where a box cannot have a cgroup of its own (here: delegation switched off), the
/// fallback image boots Debian's own sysvinit through its runlevel scripts: its
/// binary, name, runlevel and services agree, each box has a machine id of its own,
/// and nothing in the box names the product.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cgroup_of_its_own_the_box_boots_the_fallback_sysvinit() {
    require_docker!();
    let hermes = Hermes::start(
        Options {
            pool_size: 2,
            ..Options::default()
        }
        .configure(|c| {
            c.container_pool.security.cgroup_delegation =
                hermes_core::config::CgroupDelegation::Off;
        }),
    );
    let prompt = format!("root@{}:~# ", hermes.hostname);
    let mut machine_ids = Vec::new();
    for source in [[127, 0, 0, 1], [127, 0, 0, 2]] {
        let (_client, mut shell) = root_login_from(&hermes, source, &prompt).await;
        let out = run(
            &mut shell,
            "readlink /proc/1/exe; cat /proc/1/comm; dpkg -S /sbin/init; runlevel",
            &prompt,
        )
        .await;
        assert!(
            out.contains("/usr/sbin/init\r\ninit\r\nsysvinit-core: /sbin/init\r\nN 2\r\n"),
            "{out}"
        );
        let out = run(
            &mut shell,
            "for s in ssh cron rsyslog dbus; do service $s status; echo \"$s=$?\"; done",
            &prompt,
        )
        .await;
        for expected in [
            "sshd is running.",
            "ssh=0",
            "cron is running.",
            "cron=0",
            "rsyslogd is running.",
            "rsyslog=0",
            "dbus is running.",
            "dbus=0",
        ] {
            assert!(out.contains(expected), "`{expected}` missing from:\n{out}");
        }
        // The boot's syslog lines are there, as after any boot (rsyslogd writes them
        // on its own time: up to 5 s).
        let out = run(
            &mut shell,
            "for i in $(seq 50); do grep -q 'rsyslogd: .*start' /var/log/syslog && break; sleep 0.1; done; echo \"starts=$(grep -c 'rsyslogd: .*start' /var/log/syslog)\"",
            &prompt,
        )
        .await;
        let starts = out
            .lines()
            .filter_map(|line| line.trim().rsplit('\r').next())
            .find_map(|line| line.strip_prefix("starts=")?.parse::<u32>().ok());
        assert!(starts.is_some_and(|n| n >= 1), "{out}");
        let out = run(
            &mut shell,
            "ps -eo args | grep -ci hermes; grep -ci hermes /sbin/init; grep -rIil hermes /etc /usr/sbin /usr/lib/openssh /etc/init.d 2>/dev/null | wc -l; echo end",
            &prompt,
        )
        .await;
        assert!(names_nothing(&out), "the box names the product: {out}");
        machine_ids.push(machine_id(&mut shell, &prompt).await);
    }
    assert_ne!(machine_ids[0], machine_ids[1], "two boxes, one machine id");
}

/// What the box's clock says: `up=` (/proc/uptime), `pid1=` (ps's age of PID 1),
/// `start=` (PID 1's start, in clock ticks after the boot), `lstart=` (ps's START of
/// PID 1, from /proc/stat's btime), `now=`, the CPUs /proc/stat counts (`cpus=`), and
/// whether the shell is on PID 1's clock (`same=`).
const CLOCK: &str = "echo \"up=$(cut -d' ' -f1 /proc/uptime) pid1=$(ps -o etimes= -p 1 | tr -d ' ') start=$(cut -d' ' -f22 /proc/1/stat) lstart=$(date -d \"$(ps -o lstart= -p 1)\" +%s) now=$(date +%s) cpus=$(grep -c '^cpu[0-9]' /proc/stat) same=$([ \"$(readlink /proc/self/ns/time)\" = \"$(readlink /proc/1/ns/time)\" ] && echo yes || echo no)\"";

fn clock_value(out: &str, key: &str) -> f64 {
    out.split_whitespace()
        .find_map(|word| word.rsplit('\r').next()?.strip_prefix(key)?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

/// The box boots with a clock of its own (the engine's `hermes-box` runtime): PID 1
/// started a second or so after the "boot", `ps` agrees with the uptime, and the
/// session, on the box's sshd or through the engine's exec, reads the same clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_box_boots_with_a_clock_of_its_own_that_every_session_reads() {
    require_docker!();
    use hermes_core::config::SessionServer;
    let host_up: f64 = std::fs::read_to_string("/proc/uptime")
        .expect("host uptime")
        .split_whitespace()
        .next()
        .and_then(|up| up.parse().ok())
        .expect("host uptime");
    for server in [SessionServer::BoxSshd, SessionServer::Engine] {
        let hermes = Hermes::start(Options::default().configure(move |c| {
            c.container_pool.session_server = server;
        }));
        let prompt = format!("root@{}:~# ", hermes.hostname);
        let (_client, mut shell) = root_login_from(&hermes, [127, 0, 0, 1], &prompt).await;
        let out = run(&mut shell, CLOCK, &prompt).await;
        let (up, pid1, start) = (
            clock_value(&out, "up="),
            clock_value(&out, "pid1="),
            clock_value(&out, "start="),
        );
        // USER_HZ is 100: a VM's PID 1 starts 0.5 to 2 s into the boot.
        assert!(
            (40.0..=300.0).contains(&start),
            "{server:?}: PID 1 started at {start} ticks: {out}"
        );
        assert!(
            (up - pid1).abs() <= 3.0,
            "{server:?}: uptime {up} s, PID 1 {pid1} s old: {out}"
        );
        assert!(
            up < host_up,
            "{server:?}: uptime {up} s, the host's {host_up} s: {out}"
        );
        assert!(
            out.contains("same=yes"),
            "{server:?}: the shell is on another clock: {out}"
        );
        // ps's START of PID 1 is the box's boot, not the host's (LXCFS's btime).
        let (lstart, now) = (clock_value(&out, "lstart="), clock_value(&out, "now="));
        assert!(
            (lstart - (now - up)).abs() <= 3.0,
            "{server:?}: PID 1 started at {lstart}, the box booted at {}: {out}",
            now - up
        );
        // /proc/stat counts the box's one core (cpu_pinning core), as cpuinfo does.
        assert_eq!(clock_value(&out, "cpus="), 1.0, "{server:?}: {out}");
    }
}

/// A box made on demand (the pool of one is taken) is handed over only once its init
/// has booted: the first command of the session already finds every service up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_made_on_demand_has_booted_before_the_session_sees_it() {
    require_docker!();
    let hermes = Hermes::start(Options {
        pool_size: 1,
        ..Options::default()
    });
    let hermes = &hermes;
    let login = |last: u8| async move {
        let began = std::time::Instant::now();
        let client =
            Client::login_from(hermes.port, [127, 0, 0, last].into(), "root", "toor").await;
        let mut shell = client.shell(120, 40).await;
        let prompt = format!("root@{}:~# ", hermes.hostname);
        assert!(
            shell.read_until(&prompt, 0, Duration::from_secs(30)).await,
            "{}",
            shell.text()
        );
        let to_prompt = began.elapsed();
        let out = run(
            &mut shell,
            "for s in ssh cron rsyslog dbus; do service $s status > /dev/null || echo \"$s\"_down; done; echo \"state=$(systemctl is-system-running)\"",
            &prompt,
        )
        .await;
        (to_prompt, out, client)
    };
    let (a, b, c) = tokio::join!(login(3), login(4), login(5));
    let events = hermes.wait_for_count("hermes.container.allocate", 3);
    let sources: Vec<&str> = events
        .of("hermes.container.allocate")
        .iter()
        .filter_map(|e| e["source"].as_str())
        .collect();
    assert!(sources.contains(&"on_demand"), "{sources:?}");
    for (to_prompt, out, _client) in [&a, &b, &c] {
        for service in ["ssh", "cron", "rsyslog", "dbus"] {
            assert!(!out.contains(&format!("{service}_down")), "{out}");
        }
        assert!(out.contains("state=running"), "{out}");
        // Within the engine's spawn timeout with room to spare, boot included.
        assert!(*to_prompt < Duration::from_secs(15), "{to_prompt:?}");
    }
    eprintln!(
        "login to prompt: {:?} {:?} {:?} (sources {sources:?})",
        a.0, b.0, c.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_root_login_gets_its_own_account_and_home() {
    require_docker!();
    let hermes = Hermes::start(Options {
        credentials: vec![("deploy", "deploy"), ("oracle", "oracle"), ("root", "toor")],
        ..Options::default()
    });
    let client = Client::login(hermes.port, "deploy", "deploy").await;
    let mut shell = client.shell(80, 24).await;
    let prompt = user_prompt("deploy", &hermes.hostname);
    assert!(
        shell.read_until(&prompt, 0, Duration::from_secs(20)).await,
        "{}",
        shell.text()
    );
    let out = run(
        &mut shell,
        "id -un; pwd; echo $HOME $USER $SHELL; ls -ld /home/deploy | cut -d' ' -f3",
        &prompt,
    )
    .await;
    assert!(out.contains("deploy\r\n/home/deploy\r\n"), "{out:?}");
    assert!(out.contains("/home/deploy deploy /bin/bash"), "{out}");
    assert!(
        out.contains("\r\ndeploy\r\n"),
        "home owned by the account: {out}"
    );
    let out = run(
        &mut shell,
        "touch /root/x 2>&1; tr '\\0' ' ' < /proc/$PPID/cmdline",
        &prompt,
    )
    .await;
    assert!(
        out.contains("Permission denied"),
        "an unprivileged account: {out}"
    );
    assert!(out.contains("sshd: deploy@pts/0"), "{out}");

    // A consistent account: a deploy user administers the machine (sudo group, as
    // cloud images' default users do); its history is its own and runs only programs
    // the box has.
    let check_history = "n=0; while read -r cmd _; do n=$((n+1)); type \"$cmd\" >/dev/null 2>&1 || echo \"missing $cmd\"; done < ~/.bash_history; echo \"lines=$n\"; id -Gn; stat -c %U:%a ~/.bash_history";
    let out = run(&mut shell, check_history, &prompt).await;
    assert!(
        !out.lines().any(|line| line.starts_with("missing ")),
        "{out}"
    );
    assert!(out.contains("deploy sudo"), "{out}");
    assert!(out.contains("deploy:600"), "{out}");
    let lines = |out: &str| -> usize {
        out.rsplit("lines=")
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!((5..=12).contains(&lines(&out)), "{out}");
    let deploy_history = run(&mut shell, "md5sum < ~/.bash_history", &prompt).await;

    let other = Client::login(hermes.port, "oracle", "oracle").await;
    let mut other = other.shell(80, 24).await;
    let prompt = user_prompt("oracle", &hermes.hostname);
    assert!(
        other.read_until(&prompt, 0, Duration::from_secs(20)).await,
        "{}",
        other.text()
    );
    let out = run(&mut other, check_history, &prompt).await;
    assert!(
        !out.lines().any(|line| line.starts_with("missing ")),
        "{out}"
    );
    assert!(out.contains("\r\noracle\r\n"), "only its own group: {out}");
    assert!((5..=12).contains(&lines(&out)), "{out}");
    let oracle_history = run(&mut other, "md5sum < ~/.bash_history", &prompt).await;
    assert_ne!(deploy_history, oracle_history, "each account has its own");
}

fn allocations(events: &[Value]) -> Vec<(String, String)> {
    events
        .of("hermes.container.allocate")
        .into_iter()
        .map(|e| {
            (
                e["container_id"].as_str().unwrap_or_default().to_owned(),
                e["source"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_source_gets_its_own_container_back_with_its_files() {
    require_docker!();
    let mut hermes = Hermes::start(Options {
        reuse: true,
        ..Options::default()
    });
    let prompt = format!("root@{}:~# ", hermes.hostname);
    {
        let client = Client::login(hermes.port, "root", "toor").await;
        let mut shell = client.shell(80, 24).await;
        assert!(shell.read_until(&prompt, 0, Duration::from_secs(20)).await);
        run(&mut shell, "echo left-by-$((1+1))st-visit > /root/marker; mkdir -p /tmp/.x && echo hidden > /tmp/.x/tool", &prompt).await;
        shell.send("exit\n").await;
        assert!(shell.read_to_close(Duration::from_secs(10)).await);
    }
    // The container is stopped (kept) before the source comes back.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while hermes.containers(Some("exited")).len() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "first container not stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = Client::login(hermes.port, "root", "toor").await;
    let mut shell = client.shell(80, 24).await;
    assert!(
        shell.read_until(&prompt, 0, Duration::from_secs(20)).await,
        "{}",
        shell.text()
    );
    assert!(shell.text().contains("Last login: "), "{}", shell.text());
    assert!(shell.text().contains(" from 10.0.2.2"), "{}", shell.text());
    let out = run(&mut shell, "cat /root/marker /tmp/.x/tool", &prompt).await;
    assert!(
        out.contains("left-by-2st-visit") && out.contains("hidden"),
        "{out}"
    );

    // A second login while this one runs shares the running machine.
    let second = Client::login(hermes.port, "root", "toor").await;
    let mut other = second.shell(80, 24).await;
    assert!(other.read_until(&prompt, 0, Duration::from_secs(20)).await);
    let out = run(&mut other, "cat /root/marker; who | wc -l", &prompt).await;
    assert!(out.contains("left-by-2st-visit"), "{out}");
    assert!(out.contains("\r\n2\r\n"), "both sessions in utmp: {out}");
    drop(other);
    drop(second);
    shell.send("exit\n").await;
    assert!(shell.read_to_close(Duration::from_secs(10)).await);
    drop(shell);
    drop(client);

    let events = tokio::task::block_in_place(|| {
        hermes.wait_for_events("three allocations and two releases", |events| {
            allocations(events).len() == 3 && events.count_of("hermes.container.release") == 2
        })
    });
    let allocated = allocations(&events);
    assert_eq!(allocated[0].0, allocated[1].0);
    assert_eq!(allocated[1].0, allocated[2].0);
    let sources: Vec<&str> = allocated.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(sources, ["pool", "reused", "shared"]);

    // And across a restart of Hermes.
    tokio::task::block_in_place(|| hermes.restart());
    let client = Client::login(hermes.port, "root", "toor").await;
    let mut shell = client.shell(80, 24).await;
    assert!(shell.read_until(&prompt, 0, Duration::from_secs(20)).await);
    let out = run(&mut shell, "cat /root/marker", &prompt).await;
    assert!(out.contains("left-by-2st-visit"), "after a restart: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_by_source_and_user_each_account_has_its_machine() {
    require_docker!();
    let hermes = Hermes::start(Options {
        reuse: true,
        reuse_key: "source_and_user",
        ..Options::default()
    });
    for (user, password) in [("root", "toor"), ("admin", "admin"), ("root", "toor")] {
        let client = Client::login(hermes.port, user, password).await;
        let mut shell = client.shell(80, 24).await;
        assert!(
            shell.read_until("$ ", 0, Duration::from_secs(20)).await || shell.text().contains("# ")
        );
        shell.send("exit\n").await;
        assert!(shell.read_to_close(Duration::from_secs(10)).await);
        drop(shell);
        drop(client);
        tokio::task::block_in_place(|| {
            hermes.wait_for_events("released", |events| {
                events.count_of("cowrie.session.closed") == allocations(events).len()
            })
        });
        // Wait for the stop, so the next visit finds the machine stopped.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let events = hermes.events();
    let allocated = allocations(&events);
    assert_eq!(allocated.len(), 3);
    assert_ne!(
        allocated[0].0, allocated[1].0,
        "root and admin: two machines"
    );
    assert_eq!(allocated[0].0, allocated[2].0, "root again: root's machine");
    assert_eq!(allocated[2].1, "reused");
}

/// A box is a server that has been up and used: weeks of rotated logs (the admin's
/// logins, cron, scanners), `last` and `lastb` with entries, the current boot last,
/// and every box of one sensor tells the same past. `persona.past: false` turns it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_box_has_the_past_of_a_server_in_use() {
    require_docker!();
    let hermes = Hermes::start(Options {
        pool_size: 2,
        ..Options::default()
    });
    let probe = "ls /var/log | tr '\\n' ' '; echo; stat -c '%U:%G %a' /var/log/auth.log; \
        echo boot=$(last -x reboot | head -1 | grep -c reboot) admin=$( (last admin; last -f /var/log/wtmp.1 admin) | grep -c '^admin ') \
        failed=$(lastb | grep -c ssh:notty) hermes=$(zcat -f /var/log/auth.log* /var/log/syslog* | grep -ci -e hermes -e honeypot); \
        echo future=$(find /var/log /etc /root -newermt '+1 minute' | wc -l); \
        zcat /var/log/auth.log.2.gz | grep -m1 'Failed password' | md5sum";
    let client = Client::login(hermes.port, "root", "toor").await;
    let mut first = client.exec(probe).await;
    assert!(first.read_to_close(Duration::from_secs(20)).await);
    let first = first.text();
    for file in [
        "auth.log ",
        "auth.log.1 ",
        "auth.log.2.gz ",
        "syslog.1 ",
        "wtmp ",
        "wtmp.1 ",
        "btmp ",
        "lastlog ",
    ] {
        assert!(first.contains(file), "{file} missing: {first}");
    }
    assert!(first.contains("root:adm 640"), "{first}");
    assert!(first.contains("boot=1 "), "{first}");
    assert!(!first.contains("admin=0 "), "the admin logs in: {first}");
    assert!(!first.contains("failed=0 "), "scanners try: {first}");
    assert!(first.contains("hermes=0"), "{first}");
    assert!(first.contains("future=0"), "{first}");

    // Another box of the same sensor (another source): the same past.
    let other = Client::login_from(
        hermes.port,
        std::net::Ipv4Addr::new(127, 0, 0, 23),
        "root",
        "toor",
    )
    .await;
    let mut second = other.exec(probe).await;
    assert!(second.read_to_close(Duration::from_secs(20)).await);
    let second = second.text();
    let digest = |out: &str| out.lines().last().unwrap_or_default().to_owned();
    assert_eq!(digest(&first), digest(&second), "{first}\n{second}");
    let boxes: std::collections::HashSet<String> = hermes
        .events()
        .of("hermes.container.allocate")
        .into_iter()
        .map(|e| e["container_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(boxes.len(), 2, "two boxes");
    drop(hermes);

    let hermes = Hermes::start(Options {
        changes: vec![std::sync::Arc::new(
            |config: &mut hermes_core::config::Config| {
                config.persona.past = false;
            },
        )],
        ..Options::default()
    });
    let client = Client::login(hermes.port, "root", "toor").await;
    let mut out = client
        .exec("ls /var/log/auth.log.1 2>&1; last | grep -c pts")
        .await;
    assert!(out.read_to_close(Duration::from_secs(20)).await);
    let out = out.text();
    assert!(out.contains("No such file"), "{out}");
}

/// `docker inspect`'s `State.Status` of a container (`running`, `paused`, `exited`).
fn container_status(id: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.State.Status}}", id])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A box of a returning source lingers (running, or frozen) between its sessions:
/// the second login finds the file and the process the first left, and the same PID
/// 1; after the linger time the box is stopped and kept, as before.
async fn a_lingering_box_keeps_what_runs(freeze: bool) {
    const LINGER: u64 = 8;
    let hermes = Hermes::start(
        Options {
            reuse: true,
            ..Options::default()
        }
        .configure(move |c| {
            c.container_pool.reuse.linger = hermes_core::config::Seconds::new(LINGER);
            c.container_pool.reuse.freeze_lingering = freeze;
        }),
    );
    let prompt = format!("root@{}:~# ", hermes.hostname);
    let source = [127, 0, 0, 1];
    let (client, mut shell) = root_login_from(&hermes, source, &prompt).await;
    let first = run(
        &mut shell,
        "echo stayed > /root/mark; (setsid sleep 4242 </dev/null >/dev/null 2>&1 &); sleep 0.2; echo pid1=$(cut -d' ' -f22 /proc/1/stat) sleeper=$(pgrep -x -f 'sleep 4242')",
        &prompt,
    )
    .await;
    shell.send("exit\n").await;
    assert!(shell.read_to_close(Duration::from_secs(10)).await);
    drop(shell);
    drop(client);
    let field = |out: &str, name: &str| -> String {
        out.split_whitespace()
            .find_map(|word| word.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
            .to_owned()
    };
    let (pid1, sleeper) = (field(&first, "pid1"), field(&first, "sleeper"));
    assert!(!pid1.is_empty() && !sleeper.is_empty(), "{first}");

    tokio::task::block_in_place(|| hermes.wait_for_count("hermes.container.linger", 1));
    let events = hermes.events_of("hermes.container.linger");
    let id = events[0]["container_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(events[0]["frozen"], freeze);
    assert_eq!(
        container_status(&id),
        if freeze { "paused" } else { "running" },
        "between the sessions"
    );
    assert_eq!(hermes.events_of("hermes.container.release").len(), 0);
    if !freeze {
        a_failed_login_leaves_no_connection_in_the_box(&hermes, source, &id).await;
    }

    // Back within the linger: the same box, thawed, with what the first visit left.
    let (client, mut shell) = root_login_from(&hermes, source, &prompt).await;
    let second = run(
        &mut shell,
        "cat /root/mark; echo pid1=$(cut -d' ' -f22 /proc/1/stat) sleeper=$(pgrep -x -f 'sleep 4242')",
        &prompt,
    )
    .await;
    assert!(second.contains("stayed"), "{second}");
    assert_eq!(field(&second, "pid1"), pid1, "PID 1 is the same: {second}");
    assert_eq!(
        field(&second, "sleeper"),
        sleeper,
        "still running: {second}"
    );
    assert_eq!(container_status(&id), "running");
    shell.send("exit\n").await;
    assert!(shell.read_to_close(Duration::from_secs(10)).await);
    drop(shell);
    drop(client);

    // The running box's sshd was connected while the second login went on; a
    // frozen one is not thawed for a login that may fail.
    let log = std::fs::read_to_string(hermes.log_dir().join("hermes.log")).unwrap_or_default();
    let ahead = log
        .lines()
        .filter(|line| line.contains("the box's sshd was connected while the client logged in"))
        .count();
    assert_eq!(ahead, usize::from(!freeze), "{log}");

    let allocated = allocations(&hermes.events());
    let sources: Vec<&str> = allocated.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(sources, ["pool", "reused"]);
    assert!(allocated.iter().all(|(got, _)| *got == id));

    // After the second linger: stopped once, and kept for forensics.
    tokio::task::block_in_place(|| hermes.wait_for_count("hermes.container.release", 1));
    let released = hermes.events_of("hermes.container.release");
    assert_eq!(released[0]["container_id"], id.as_str());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while container_status(&id) != "exited" {
        assert!(
            std::time::Instant::now() < deadline,
            "not stopped: {}",
            container_status(&id)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(hermes.events_of("hermes.container.linger").len(), 2);
}

/// A connection from `source` whose password was refused, still open.
async fn refused_login_from(
    hermes: &Hermes,
    source: [u8; 4],
) -> russh::client::Handle<crate::client::AcceptAnyKey> {
    let mut handle = crate::client::connect_from(hermes.port, source.into())
        .await
        .expect("connect");
    let refused = handle
        .authenticate_password("root", "not-the-password")
        .await
        .expect("auth exchange");
    assert!(!refused.success());
    handle
}

/// sshd processes in box `id`.
fn sshd_processes(id: &str) -> usize {
    let out = std::process::Command::new("docker")
        .args(["exec", id, "pgrep", "-x", "sshd"])
        .output()
        .expect("docker exec");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// A returning source whose password is wrong, on a box that runs: Hermes connects to
/// the box's sshd while the client tries (its listener plus that connection's
/// processes), and that connection ends with the client's, leaving only the listener.
async fn a_failed_login_leaves_no_connection_in_the_box(
    hermes: &Hermes,
    source: [u8; 4],
    id: &str,
) {
    assert_eq!(sshd_processes(id), 1, "only the listener before");
    let handle = refused_login_from(hermes, source).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sshd_processes(id) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no connection to the box's sshd"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(handle);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sshd_processes(id) != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the connection made ahead stayed open: {} sshd processes",
            sshd_processes(id)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // sshd logs what it logs for a client that gave up, not a broken connection.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = std::process::Command::new("docker")
            .args(["exec", id, "tail", "-n", "3", "/var/log/auth.log"])
            .output()
            .expect("docker exec");
        let log = String::from_utf8_lossy(&out.stdout).into_owned();
        if log.contains("Connection closed by") && log.contains("[preauth]") {
            assert!(!log.contains("Broken pipe"), "{log}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A connection made to a source's box while a login goes on is not taken once that
/// box has been stopped and started again: the login first fails while the source's
/// other session runs, that session ends (its box is stopped), and the right password
/// then gets the box started again, with a connection of its own to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_started_again_during_a_login_is_connected_to_again() {
    require_docker!();
    let hermes = Hermes::start(
        Options {
            reuse: true,
            ..Options::default()
        }
        .configure(|c| c.container_pool.reuse.linger = hermes_core::config::Seconds::new(0)),
    );
    let prompt = format!("root@{}:~# ", hermes.hostname);
    let source = [127, 0, 0, 1];
    let (first, mut shell) = root_login_from(&hermes, source, &prompt).await;
    let mut handle = refused_login_from(&hermes, source).await;
    // The early connection to the running box has had its time.
    tokio::time::sleep(Duration::from_secs(1)).await;
    shell.send("exit\n").await;
    assert!(shell.read_to_close(Duration::from_secs(10)).await);
    drop(shell);
    drop(first);
    tokio::task::block_in_place(|| hermes.wait_for_count("hermes.container.release", 1));
    let id = hermes.events_of("hermes.container.release")[0]["container_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while container_status(&id) != "exited" {
        assert!(std::time::Instant::now() < deadline, "not stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let accepted = handle
        .authenticate_password("root", "toor")
        .await
        .expect("auth exchange");
    assert!(accepted.success());
    let client = Client { handle };
    let mut out = client.exec("echo second-run").await;
    assert!(out.read_to_close(Duration::from_secs(20)).await);
    assert!(out.text().contains("second-run"), "{}", out.text());
    let allocated = allocations(&hermes.events());
    let sources: Vec<&str> = allocated.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(sources, ["pool", "reused"]);
    assert!(allocated.iter().all(|(got, _)| *got == id));
    let log = std::fs::read_to_string(hermes.log_dir().join("hermes.log")).unwrap_or_default();
    assert!(
        !log.contains("the box's sshd was connected while the client logged in"),
        "the connection to the box's earlier run was taken"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_source_finds_its_lingering_box_running_with_what_it_left() {
    require_docker!();
    a_lingering_box_keeps_what_runs(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_lingering_box_is_thawed_for_its_source_with_what_it_left() {
    require_docker!();
    a_lingering_box_keeps_what_runs(true).await;
}

/// The account files a login writes (its password set on the box's account) are
/// the server's doing in every session, also in the next session of the source when
/// it takes the box lingering within the same second: short exec logins with a new
/// password, then the same one again, three times over. Each login after a setting
/// is one where a whole-second baseline would have taken the password files as the
/// session's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_session_on_a_lingering_box_captures_no_account_file_of_the_login_before() {
    require_docker!();
    let hermes = Hermes::start(
        Options {
            credentials: vec![
                ("root", "first-pw"),
                ("root", "second-pw"),
                ("root", "third-pw"),
            ],
            reuse: true,
            ..Options::default()
        }
        .configure(|c| c.container_pool.reuse.linger = hermes_core::config::Seconds::new(60)),
    );
    let mut logins = 0;
    for password in ["first-pw", "second-pw", "third-pw"] {
        for _ in 0..2 {
            let mut ssh = hermes.ssh("root", &[password], "password");
            ssh.arg("true");
            let status = tokio::task::block_in_place(|| ssh.status()).expect("ssh");
            assert!(status.success(), "login with {password}: {status}");
            logins += 1;
            // Its box lingers before the next login comes.
            tokio::task::block_in_place(|| {
                hermes.wait_for_count("hermes.container.linger", logins)
            });
        }
    }
    let allocated = allocations(&hermes.events());
    assert_eq!(allocated.len(), 6, "{allocated:?}");
    assert!(
        allocated
            .iter()
            .skip(1)
            .all(|(id, source)| *id == allocated[0].0 && source == "reused"),
        "one box, taken lingering: {allocated:?}"
    );
    let captured: Vec<String> = hermes
        .events_of("cowrie.session.file_download")
        .iter()
        .filter_map(|e| e["destfile"].as_str().map(str::to_owned))
        .collect();
    assert!(
        captured.is_empty(),
        "captured as the sessions': {captured:?}"
    );
}
