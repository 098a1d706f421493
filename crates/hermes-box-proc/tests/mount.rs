//! The server through the kernel: mounted for real (root and /dev/fuse needed, as on
//! the project's machines; without them the test fails under CI=true and says why
//! elsewhere), read by ordinary file calls, stopped by SIGTERM.

use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Mounted {
    child: Child,
    dir: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn mounted(dir: &Path) -> bool {
    let wanted = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|line| {
            line.split(' ').nth(4) == Some(wanted.as_str()) && line.contains(" - fuse.lxcfs lxcfs ")
        })
}

/// Mounts the server on a fresh directory, or None (said) where this machine cannot.
fn mount(name: &str) -> Option<Mounted> {
    let able = Path::new("/dev/fuse").exists() && is_root();
    if !able {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI=true: this test needs root and /dev/fuse"
        );
        eprintln!("skipped: needs root and /dev/fuse");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("box-proc-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_hermes-box-proc"))
        .arg(&dir)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mounted_server = Mounted { child, dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mounted(&mounted_server.dir) {
        assert!(Instant::now() < deadline, "not mounted within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(mounted_server)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

#[test]
fn a_reader_outside_a_box_reads_the_kernels_files_whole_or_in_pieces() {
    let Some(server) = mount("read") else { return };
    let stat = server.dir.join("proc/stat");
    let whole = std::fs::read_to_string(&stat).unwrap();
    let kernel = std::fs::read_to_string("/proc/stat").unwrap();
    let btime = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("btime "))
            .map(str::to_owned)
    };
    assert!(btime(&whole).is_some(), "{whole}");
    assert_eq!(btime(&whole), btime(&kernel));
    // Seven bytes at a time: one text, however it is read.
    let mut file = std::fs::File::open(&stat).unwrap();
    let (mut pieces, mut chunk) = (Vec::new(), [0u8; 7]);
    loop {
        let n = file.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        pieces.extend_from_slice(&chunk[..n]);
    }
    let pieces = String::from_utf8(pieces).unwrap();
    let keys = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| l.split(' ').next().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(keys(&pieces), keys(&whole), "{pieces}");
    assert_eq!(btime(&pieces), btime(&kernel));
    let uptime = std::fs::read_to_string(server.dir.join("proc/uptime")).unwrap();
    assert_eq!(uptime.split_whitespace().count(), 2, "{uptime}");
    let meta = std::fs::metadata(&stat).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o7777, 0o444);
    assert_eq!(meta.len(), 0, "as the kernel's /proc files");
    let names: Vec<String> = std::fs::read_dir(server.dir.join("proc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn writes_are_refused_and_open_files_are_bounded() {
    let Some(server) = mount("bounds") else {
        return;
    };
    let stat = server.dir.join("proc/stat");
    let error = std::fs::OpenOptions::new()
        .write(true)
        .open(&stat)
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::PermissionDenied, "{error}");
    let error = std::fs::File::create(server.dir.join("proc/other")).unwrap_err();
    assert!(error.raw_os_error().is_some(), "{error}");
    assert!(std::fs::metadata(server.dir.join("proc/meminfo")).is_err());
    // One reader's share (64) open at once, then EMFILE; closing frees them.
    let held: Vec<std::fs::File> = (0..64)
        .map(|_| std::fs::File::open(&stat).unwrap())
        .collect();
    let error = std::fs::File::open(&stat).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EMFILE), "{error}");
    drop(held);
    // Release is asynchronous in FUSE: room comes back shortly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::File::open(&stat) {
            Ok(_) => break,
            Err(error) => assert!(Instant::now() < deadline, "still refused: {error}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_unmounts() {
    let Some(mut server) = mount("term") else {
        return;
    };
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!mounted(&server.dir), "still mounted after SIGTERM");
}
