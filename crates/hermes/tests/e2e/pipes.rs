//! File transfers (sftp, scp) carry their data through the container's own pipes
//! opened from the host, not through the engine's exec stream; everything else still
//! goes through the engine, and nothing of the pipes is left in the container.

use std::sync::atomic::Ordering;

use crate::harness::{Hermes, Options, binary_file, require_docker, sha256_file, succeeded};
use crate::lifecycle::counting_proxy;

const SIZE: usize = 16 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_bypass_the_engine_stream_and_leave_no_pipe_behind() {
    if !require_docker() {
        return;
    }
    let (port, _seen, from_engine) = counting_proxy("/var/run/docker.sock").await;
    let url = Box::leak(format!("tcp://127.0.0.1:{port}").into_boxed_str());
    let hermes = Hermes::start(Options {
        docker_url: Some(url),
        reuse: true,
        pool_size: 1,
        ..Options::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let payload = dir.path().join("payload.bin");
    binary_file(&payload, SIZE);
    let hash = sha256_file(&payload);
    let engine_bytes_during = |args: &[&str]| {
        let before = from_engine.load(Ordering::Relaxed);
        let mut command = hermes.openssh("scp", &["toor"], "password");
        command.args(args).current_dir(dir.path());
        tokio::task::block_in_place(|| succeeded(&mut command));
        from_engine.load(Ordering::Relaxed) - before
    };

    // SFTP (scp's default protocol) both ways, then the legacy protocol's own scp.
    let up = engine_bytes_during(&["payload.bin", "root@127.0.0.1:/root/"]);
    let down = engine_bytes_during(&["root@127.0.0.1:/root/payload.bin", "back.bin"]);
    assert_eq!(sha256_file(&dir.path().join("back.bin")), hash);
    let legacy = engine_bytes_during(&["-O", "root@127.0.0.1:/root/payload.bin", "legacy.bin"]);
    assert_eq!(sha256_file(&dir.path().join("legacy.bin")), hash);
    // Through the engine, each download alone would bring 16 MiB back.
    for (what, bytes) in [
        ("upload", up),
        ("download", down),
        ("legacy download", legacy),
    ] {
        assert!(
            bytes < (SIZE / 8) as u64,
            "{what}: {bytes} bytes came through the engine"
        );
    }

    // A command that is not a transfer still runs on the engine's pipes (as sshd's
    // session would: no file name for its output), and no FIFO is left in /dev.
    let before = from_engine.load(Ordering::Relaxed);
    let out = tokio::task::block_in_place(|| {
        succeeded(
            hermes
                .ssh("root", &["toor"], "password")
                .arg("readlink /proc/self/fd/1; find /dev -type p | wc -l; head -c 1000000 /dev/zero | wc -c"),
        )
    });
    assert!(
        from_engine.load(Ordering::Relaxed) - before > 20,
        "no exec stream"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.first().is_some_and(|l| l.starts_with("pipe:[")),
        "{out}"
    );
    assert_eq!(lines.get(1), Some(&"0"), "{out}");
    assert_eq!(lines.get(2), Some(&"1000000"), "{out}");
}
