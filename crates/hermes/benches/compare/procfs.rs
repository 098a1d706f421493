//! What the OS says about a server under test: CPU seconds and memory of its whole
//! process tree (sshd forks per connection, Hermes is one process), read from /proc,
//! and the memory of the containers Hermes runs, read from their cgroups.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// One process as /proc/PID/stat describes it.
#[derive(Debug, Clone)]
struct Proc {
    pid: u32,
    ppid: u32,
    comm: String,
    /// utime + stime, in clock ticks (whole group, threads that ended included).
    own_ticks: u64,
    /// cutime + cstime, in clock ticks: every descendant it has reaped.
    reaped_ticks: u64,
    rss_pages: u64,
}

fn read_proc(pid: u32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    // ... rss(21).
    let number = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(Proc {
        pid,
        ppid: number(1)? as u32,
        comm,
        own_ticks: number(11)? + number(12)?,
        reaped_ticks: number(13)? + number(14)?,
        rss_pages: number(21)?,
    })
}

fn all_processes() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read_proc)
        .collect()
}

/// `root` and all its live descendants.
fn tree(root: u32) -> Vec<Proc> {
    let all = all_processes();
    let mut children: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, p) in all.iter().enumerate() {
        children.entry(p.ppid).or_default().push(i);
    }
    let mut out = Vec::new();
    let mut stack: Vec<usize> = all.iter().position(|p| p.pid == root).into_iter().collect();
    while let Some(i) = stack.pop() {
        out.push(all[i].clone());
        if let Some(kids) = children.get(&all[i].pid) {
            stack.extend(kids);
        }
    }
    out
}

/// CPU nanoseconds a process has used, with what it reaped.
///
/// Not utime + stime alone: the kernel reports each process's total rounded down to
/// a clock tick (10 ms), so a server of many small processes (sshd's two per
/// connection and the shells, the engine's shims) reads as using almost nothing. The
/// scheduler's own count (`schedstat`, nanoseconds) of each live thread is exact;
/// the tick figure is taken instead when it is higher, which happens only when
/// threads have ended (their time is in the tick figure alone).
fn cpu_nanos(p: &Proc) -> u64 {
    let tick = 1e9 / clock_ticks();
    let mut threads: u64 = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", p.pid)) {
        for task in tasks.flatten() {
            let runtime = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
            threads += runtime.unwrap_or(0);
        }
    }
    let own = threads.max((p.own_ticks as f64 * tick) as u64);
    own + (p.reaped_ticks as f64 * tick) as u64
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64).max(1.0)
}

fn page_kib() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64 / 1024).max(1)
}

/// CPU seconds used so far by `root`'s tree: live processes plus everything reaped.
pub fn tree_cpu_seconds(root: u32) -> f64 {
    tree(root).iter().map(cpu_nanos).sum::<u64>() as f64 / 1e9
}

/// CPU seconds of `root`'s tree split into the server's own processes (named
/// `server_comm`) and the rest (the shells it started, with what they reaped).
pub fn tree_cpu_split(root: u32, server_comm: &str) -> (f64, f64) {
    let (mut own, mut rest) = (0, 0);
    for p in tree(root) {
        if p.comm == server_comm || p.pid == root {
            own += cpu_nanos(&p);
        } else {
            rest += cpu_nanos(&p);
        }
    }
    (own as f64 / 1e9, rest as f64 / 1e9)
}

/// Number of processes in `root`'s tree.
pub fn tree_size(root: u32) -> usize {
    tree(root).len()
}

/// Resident memory of `root`'s tree in KiB, split into the server's own processes
/// (named `server_comm`) and the rest (the shells it started).
pub fn tree_rss_kib(root: u32, server_comm: &str) -> (u64, u64) {
    rss_split(&tree(root), root, server_comm)
}

fn rss_split(processes: &[Proc], root: u32, server_comm: &str) -> (u64, u64) {
    let page = page_kib();
    let mut own = 0;
    let mut rest = 0;
    for p in processes {
        if p.comm == server_comm || p.pid == root {
            own += p.rss_pages * page;
        } else {
            rest += p.rss_pages * page;
        }
    }
    (own, rest)
}

/// Proportional set size of `root`'s tree in KiB (shared pages divided among the
/// processes that map them), split like [`tree_rss_kib`]. Costlier to read than RSS.
pub fn tree_pss_kib(root: u32, server_comm: &str) -> (u64, u64) {
    let mut own = 0;
    let mut rest = 0;
    for p in tree(root) {
        let pss = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", p.pid))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("Pss:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(0);
        if p.comm == server_comm || p.pid == root {
            own += pss;
        } else {
            rest += pss;
        }
    }
    (own, rest)
}

/// Memory in use by the containers with these full ids, in KiB, as `docker stats`
/// counts it (usage without inactive page cache). cgroup v1 and v2 layouts.
pub fn containers_memory_kib(ids: &[String]) -> u64 {
    let mut total = 0;
    for id in ids {
        let dirs = [
            format!("/sys/fs/cgroup/memory/docker/{id}"),
            format!("/sys/fs/cgroup/docker/{id}"),
            format!("/sys/fs/cgroup/system.slice/docker-{id}.scope"),
        ];
        for dir in dirs {
            let usage = std::fs::read_to_string(format!("{dir}/memory.usage_in_bytes"))
                .or_else(|_| std::fs::read_to_string(format!("{dir}/memory.current")));
            let Ok(usage) = usage else { continue };
            let usage: u64 = usage.trim().parse().unwrap_or(0);
            let stat = std::fs::read_to_string(format!("{dir}/memory.stat")).unwrap_or_default();
            let inactive: u64 = stat
                .lines()
                .find_map(|l| {
                    l.strip_prefix("total_inactive_file ")
                        .or_else(|| l.strip_prefix("inactive_file "))
                })
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            total += usage.saturating_sub(inactive) / 1024;
            break;
        }
    }
    total
}

/// Samples a tree's resident memory in the background and keeps the peak of each
/// part (server processes, other processes).
/// Samples between two searches of the whole tree (see [`PeakSampler::start`]).
const TREE_EVERY: u64 = 16;

pub struct PeakSampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(u64, u64)>>,
}

impl PeakSampler {
    /// Starts sampling every `every`; `None` root samples nothing.
    pub fn start(root: Option<u32>, server_comm: &str, every: Duration) -> PeakSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = root.map(|root| {
            let stop = Arc::clone(&stop);
            let server_comm = server_comm.to_owned();
            std::thread::spawn(move || {
                let (mut own, mut rest) = (0, 0);
                let mut members = Vec::new();
                for sample in 0u64.. {
                    // The tree is found by reading every process of the machine (a
                    // box server's are thousands): only every few seconds, its known
                    // members in between, so the sampler itself stays out of the way
                    // of what it measures.
                    let processes: Vec<Proc> = if sample % TREE_EVERY == 0 {
                        tree(root)
                    } else {
                        members.iter().filter_map(|&pid| read_proc(pid)).collect()
                    };
                    members = processes.iter().map(|p| p.pid).collect();
                    let (o, r) = rss_split(&processes, root, &server_comm);
                    own = own.max(o);
                    rest = rest.max(r);
                    if stop.load(Ordering::Relaxed) {
                        return (own, rest);
                    }
                    std::thread::sleep(every);
                }
                (own, rest)
            })
        });
        PeakSampler { stop, thread }
    }

    /// Peak RSS in KiB of (server processes, other processes), or None without a root.
    pub fn finish(mut self) -> Option<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok())
    }
}

/// The container engine's processes: dockerd, containerd and every containerd-shim
/// (the kernel cuts a name to 15 characters: `containerd-shim`).
fn is_engine(comm: &str) -> bool {
    comm == "dockerd" || comm == "containerd" || comm.starts_with("containerd-shim")
}

/// The engine's processes' CPU nanoseconds so far, by PID.
pub struct EngineSnapshot(HashMap<u32, u64>);

/// Where the engine's processes are now (see [`engine_cpu_since`]).
pub fn engine_snapshot() -> EngineSnapshot {
    EngineSnapshot(
        all_processes()
            .into_iter()
            .filter(|p| is_engine(&p.comm))
            .map(|p| (p.pid, cpu_nanos(&p)))
            .collect(),
    )
}

/// CPU seconds the engine's processes used since `before`: each live one's growth,
/// a new one's whole (a shim that ended in between is not counted; the window opens
/// once the sessions are up, so none should).
pub fn engine_cpu_since(before: &EngineSnapshot) -> f64 {
    let nanos: u64 = all_processes()
        .into_iter()
        .filter(|p| is_engine(&p.comm))
        .map(|p| cpu_nanos(&p).saturating_sub(before.0.get(&p.pid).copied().unwrap_or(0)))
        .sum();
    nanos as f64 / 1e9
}

/// Resident memory of the engine's processes, KiB.
pub fn engine_rss_kib() -> u64 {
    let page = page_kib();
    all_processes()
        .into_iter()
        .filter(|p| is_engine(&p.comm))
        .map(|p| p.rss_pages * page)
        .sum()
}

/// CPU seconds the containers' processes used so far, from their cgroups.
pub fn containers_cpu_seconds(ids: &[String]) -> f64 {
    let mut nanos: u64 = 0;
    for id in ids {
        let v1 = [
            format!("/sys/fs/cgroup/cpuacct/docker/{id}/cpuacct.usage"),
            format!("/sys/fs/cgroup/cpu,cpuacct/docker/{id}/cpuacct.usage"),
        ];
        if let Some(usage) = v1
            .iter()
            .find_map(|path| std::fs::read_to_string(path).ok())
        {
            nanos += usage.trim().parse::<u64>().unwrap_or(0);
            continue;
        }
        for dir in [
            format!("/sys/fs/cgroup/docker/{id}"),
            format!("/sys/fs/cgroup/system.slice/docker-{id}.scope"),
        ] {
            if let Ok(stat) = std::fs::read_to_string(format!("{dir}/cpu.stat")) {
                let micros: u64 = stat
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                nanos += micros * 1000;
                break;
            }
        }
    }
    nanos as f64 / 1e9
}

/// CPU seconds the whole machine has spent busy (all but idle and iowait) since boot.
pub fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let idle = ticks.get(3).unwrap_or(&0.0) + ticks.get(4).unwrap_or(&0.0);
    (ticks.iter().sum::<f64>() - idle) / clock_ticks()
}

/// Memory in use on the whole machine (MemTotal less MemAvailable), KiB.
pub fn machine_used_kib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |key: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field("MemTotal:").saturating_sub(field("MemAvailable:"))
}
