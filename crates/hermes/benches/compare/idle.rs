//! Idle cost: the server's memory with no connections (Hermes's pool warm), and per
//! unauthenticated connection that sends nothing, or only its version line.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::clients::tcp;
use crate::procfs;
use crate::report::Figures;
use crate::stats::Samples;
use crate::target::{Target, loopback_source};

/// Holds `count` connections (from distinct loopback sources when possible).
async fn hold(target: &Target, count: usize, version_line: bool) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::with_capacity(count);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    while held.len() < count && Instant::now() < deadline {
        let source = target.on_loopback().then(|| loopback_source(i));
        i += 1;
        if let Ok(mut stream) = tcp(target.addr, source).await {
            if version_line {
                let _ = stream
                    .write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
                    .await;
            }
            held.push(stream);
        }
    }
    held
}

/// Waits until the server's tree stops growing (sshd forks a process per connection).
fn settle(pid: Option<u32>) {
    std::thread::sleep(Duration::from_secs(1));
    let Some(pid) = pid else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = procfs::tree_size(pid);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let now = procfs::tree_size(pid);
        if now == last {
            break;
        }
        last = now;
    }
}

/// Memory (RSS, PSS) of the server's own processes in KiB.
fn memory(target: &Target) -> Option<(u64, u64)> {
    let pid = target.pid?;
    let (rss, _) = procfs::tree_rss_kib(pid, &target.comm);
    let (pss, _) = procfs::tree_pss_kib(pid, &target.comm);
    Some((rss, pss))
}

pub async fn measure(target: &Target, connections: usize, figures: &mut Figures) {
    // Let a fresh server finish starting (Hermes fills its pool) and go quiet.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let Some((idle_rss, idle_pss)) = memory(target) else {
        println!("  {}: no local pid, idle memory not measured", target.name);
        return;
    };
    figures.add("idle_rss", Samples::one(idle_rss as f64 / 1024.0));
    figures.add("idle_pss", Samples::one(idle_pss as f64 / 1024.0));
    let containers = procfs::containers_memory_kib(&target.containers());
    if containers > 0 {
        figures.add("idle_containers", Samples::one(containers as f64 / 1024.0));
    }
    for (version_line, rss_key, pss_key) in [
        (false, "idle_silent_rss", "idle_silent_pss"),
        (true, "idle_version_rss", "idle_version_pss"),
    ] {
        let held = hold(target, connections, version_line).await;
        settle(target.pid);
        let (rss, pss) = memory(target).unwrap_or((0, 0));
        let n = held.len().max(1) as f64;
        figures.add(
            rss_key,
            Samples::one(rss.saturating_sub(idle_rss) as f64 / n),
        );
        figures.add(
            pss_key,
            Samples::one(pss.saturating_sub(idle_pss) as f64 / n),
        );
        figures.add(
            if version_line {
                "idle_version_held"
            } else {
                "idle_silent_held"
            },
            Samples::one(held.len() as f64),
        );
        drop(held);
        // Let the server notice the closes before the next step.
        tokio::time::sleep(Duration::from_secs(2)).await;
        settle(target.pid);
    }
}
