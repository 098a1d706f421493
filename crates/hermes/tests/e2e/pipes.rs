//! File transfers (sftp, scp) carry their data through the container's own pipes
//! opened from the host, not through the engine's exec stream; everything else still
//! goes through the engine, and nothing of the pipes is left in the container.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::events::Events;
use crate::harness::{Hermes, Options, binary_file, sha256_file, succeeded};
use crate::lifecycle::hermes_behind_proxy;

const SIZE: usize = 16 << 20;

/// Hermes behind a proxy that counts the bytes the engine sends, with returning
/// sources getting their box back, and a payload of [`SIZE`] in a directory.
struct Setup {
    hermes: Hermes,
    from_engine: Arc<AtomicU64>,
    dir: tempfile::TempDir,
    hash: String,
}

impl Setup {
    /// Bytes the engine sent while `scp ARGS` ran from the source address `from`.
    fn engine_bytes_during(&self, from: &str, args: &[&str]) -> u64 {
        let before = self.from_engine.load(Ordering::Relaxed);
        let mut command = self.hermes.openssh("scp", &["toor"], "password");
        command
            .args(["-o", &format!("BindAddress={from}")])
            .args(args)
            .current_dir(self.dir.path());
        tokio::task::block_in_place(|| succeeded(&mut command));
        self.from_engine.load(Ordering::Relaxed) - before
    }
}

async fn setup(pool_size: u32) -> Setup {
    let (hermes, _seen, from_engine) = hermes_behind_proxy(Options {
        reuse: true,
        pool_size,
        ..Options::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let payload = dir.path().join("payload.bin");
    binary_file(&payload, SIZE);
    let hash = sha256_file(&payload);
    Setup {
        hermes,
        from_engine,
        dir,
        hash,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_bypass_the_engine_stream_and_leave_no_pipe_behind() {
    require_docker!();
    let setup = setup(1).await;
    let Setup {
        hermes,
        from_engine,
        dir,
        hash,
    } = &setup;
    let engine_bytes_during = |args: &[&str]| setup.engine_bytes_during("127.0.0.1", args);

    // SFTP (scp's default protocol) both ways, then the legacy protocol's own scp.
    let up = engine_bytes_during(&["payload.bin", "root@127.0.0.1:/root/"]);
    let down = engine_bytes_during(&["root@127.0.0.1:/root/payload.bin", "back.bin"]);
    assert_eq!(&sha256_file(&dir.path().join("back.bin")), hash);
    let legacy = engine_bytes_during(&["-O", "root@127.0.0.1:/root/payload.bin", "legacy.bin"]);
    assert_eq!(&sha256_file(&dir.path().join("legacy.bin")), hash);
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
    // session would: no file name for its output), and no FIFO of Hermes's is left
    // in /dev (Debian's rsyslog boot script makes /dev/xconsole, the box's own).
    let before = from_engine.load(Ordering::Relaxed);
    let out = tokio::task::block_in_place(|| {
        succeeded(
            hermes
                .ssh("root", &["toor"], "password")
                .arg("readlink /proc/self/fd/1; find /dev -type p ! -path /dev/xconsole | wc -l; head -c 1000000 /dev/zero | wc -c"),
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

/// The `path` of each `hermes.channel.process` event of the sessions from `source`.
fn process_paths(hermes: &Hermes, source: &str) -> Vec<String> {
    hermes
        .events()
        .of("hermes.channel.process")
        .into_iter()
        .filter(|e| e["src_ip"] == source)
        .filter_map(|e| e["path"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_that_breaks_its_pipes_loses_the_fast_path_alone() {
    require_docker!();
    let setup = setup(2).await;
    let Setup {
        hermes, dir, hash, ..
    } = &setup;
    // `from`: the client's source address (each source has its own box).
    let engine_bytes_during = |from: &str, args: &[&str]| setup.engine_bytes_during(from, args);

    // The attacker at 127.0.0.1 replaces its box's /bin/sh, which the pipes need,
    // then uploads with the legacy protocol: the transfer still works, through the
    // engine's stream (an upload's data goes to the engine, so the channel event
    // below tells which way it went).
    tokio::task::block_in_place(|| {
        succeeded(
            hermes
                .ssh("root", &["toor"], "password")
                .arg("ln -sf /bin/true /bin/sh"),
        )
    });
    engine_bytes_during(
        "127.0.0.1",
        &["-O", "payload.bin", "root@127.0.0.1:/root/up.bin"],
    );

    // Another source's box keeps the pipes, both ways.
    let up = engine_bytes_during(
        "127.0.0.77",
        &["-O", "payload.bin", "root@127.0.0.1:/root/up.bin"],
    );
    let down = engine_bytes_during("127.0.0.77", &["root@127.0.0.1:/root/up.bin", "back.bin"]);
    assert_eq!(&sha256_file(&dir.path().join("back.bin")), hash);
    for (what, bytes) in [("upload", up), ("download", down)] {
        assert!(
            bytes < (SIZE / 8) as u64,
            "the other source's {what}: {bytes} bytes came through the engine"
        );
    }
    // The broken box goes on through the engine, and still delivers.
    let again = engine_bytes_during(
        "127.0.0.1",
        &["-O", "root@127.0.0.1:/root/up.bin", "again.bin"],
    );
    assert_eq!(&sha256_file(&dir.path().join("again.bin")), hash);
    assert!(again > (SIZE / 2) as u64, "{again} bytes");

    // The per-channel event says which way each session's data went.
    let paths = |source: &str| {
        hermes.wait_for_at_least("hermes.channel.process", 5);
        process_paths(hermes, source)
    };
    assert_eq!(paths("127.0.0.77"), ["direct", "direct"]);
    // The command that broke the box ran on the engine's stream, as every command
    // without a transfer does; its transfers did too.
    assert_eq!(paths("127.0.0.1"), ["engine", "engine", "engine"]);
}
