//! The shim launcher as containerd runs it: from a directory laid out as installed,
//! in a bundle's directory, with the runtime options on stdin, handing over to a
//! stand-in shim that writes down what it was given.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use serde_json::Value;

const ID: &str = "5af94946db382d6b00646b41fcaaa4545417c2000e647a8f59a8e381b6c1414e";
const SPEC: &str = r#"{"ociVersion":"1.0.2-dev","process":{"args":["/sbin/init"]}}"#;

/// Held while a test writes a program or starts one: a child forked while another
/// test still has a program open for writing would keep it open, and the program's
/// exec would fail with ETXTBSY (tests share one process under `cargo test`).
static PROGRAMS: Mutex<()> = Mutex::new(());

/// `lib/engine/containerd-shim-runc-v2` (the launcher), `bin/containerd` and
/// `bin/containerd-shim-runc-v2` (the stand-in), and a bundle.
struct Layout {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Layout {
    fn new() -> Layout {
        let _programs = PROGRAMS.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        fs::create_dir_all(root.join("lib/engine")).unwrap();
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("bundle")).unwrap();
        fs::copy(
            env!("CARGO_BIN_EXE_hermes-shim-launcher"),
            root.join("lib/engine/containerd-shim-runc-v2"),
        )
        .unwrap();
        fs::write(root.join("bin/containerd"), "").unwrap();
        let stand_in = root.join("bin/containerd-shim-runc-v2");
        fs::write(
            &stand_in,
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > got-args\ncat > got-stdin\ncp config.json got-spec\n",
        )
        .unwrap();
        fs::set_permissions(&stand_in, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join("bundle/config.json"), SPEC).unwrap();
        Layout { _dir: dir, root }
    }

    fn runtime(&self) -> String {
        self.root
            .join("lib/hermes-box-runtime")
            .display()
            .to_string()
    }

    fn args(&self, action: &str, publish: bool) -> Vec<String> {
        let mut args = vec![
            "-namespace".to_owned(),
            "moby".to_owned(),
            "-id".to_owned(),
            ID.to_owned(),
        ];
        if publish {
            args.push("-publish-binary".to_owned());
            args.push(self.root.join("bin/containerd").display().to_string());
        }
        args.extend([
            "-address".to_owned(),
            "/run/containerd.sock".to_owned(),
            action.to_owned(),
        ]);
        args
    }

    fn run(&self, args: &[String], stdin: &[u8], path: &str) -> Output {
        let programs = PROGRAMS.lock().unwrap_or_else(|p| p.into_inner());
        let mut child = Command::new(self.root.join("lib/engine/containerd-shim-runc-v2"))
            .args(args)
            .current_dir(self.root.join("bundle"))
            .env("PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(programs);
        // A launcher that gives up at once never reads it: a broken pipe is its answer.
        let _ = child.stdin.take().unwrap().write_all(stdin);
        child.wait_with_output().unwrap()
    }

    fn got(&self, name: &str) -> Vec<u8> {
        fs::read(self.root.join("bundle").join(name)).unwrap()
    }

    fn spec(&self) -> Value {
        serde_json::from_slice(&self.got("got-spec")).unwrap()
    }
}

/// Runtime options as containerd sends them: Any { type_url, value: { binary_name } }.
fn options_naming(path: &str) -> Vec<u8> {
    let mut inner = vec![0x22, path.len() as u8];
    inner.extend_from_slice(path.as_bytes());
    let type_url = b"containerd.runc.v1.Options";
    let mut any = vec![0x0a, type_url.len() as u8];
    any.extend_from_slice(type_url);
    any.push(0x12);
    any.push(inner.len() as u8);
    any.extend_from_slice(&inner);
    any
}

fn lines(args: &[String]) -> Vec<u8> {
    args.iter()
        .flat_map(|a| format!("{a}\n").into_bytes())
        .collect()
}

#[test]
fn a_box_is_put_in_a_group_and_the_shim_gets_the_same_arguments_and_options() {
    let layout = Layout::new();
    let args = layout.args("start", true);
    let options = options_naming(&layout.runtime());
    let out = layout.run(&args, &options, "/usr/bin:/bin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(layout.got("got-args"), lines(&args));
    assert_eq!(layout.got("got-stdin"), options);
    let group = layout.spec()["annotations"]["io.containerd.runc.v2.group"].clone();
    assert!(
        group.as_str().is_some_and(|g| g.starts_with("boxes-")),
        "{group}"
    );
    assert_eq!(layout.spec()["process"]["args"][0], "/sbin/init");
}

#[test]
fn another_runtimes_container_and_other_calls_are_handed_over_untouched() {
    let layout = Layout::new();
    let args = layout.args("start", true);
    let options = options_naming("/usr/bin/runc");
    let out = layout.run(&args, &options, "/usr/bin:/bin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(layout.got("got-stdin"), options);
    assert_eq!(layout.got("got-spec"), SPEC.as_bytes());

    // `delete` (and every call but `start`) is not read from: stdin goes straight on.
    let args = layout.args("delete", true);
    let out = layout.run(&args, b"\x00\x01\x02 anything", "/usr/bin:/bin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(layout.got("got-args"), lines(&args));
    assert_eq!(layout.got("got-stdin"), b"\x00\x01\x02 anything");
    assert_eq!(layout.got("got-spec"), SPEC.as_bytes());
}

#[test]
fn a_bundle_that_cannot_be_grouped_still_starts_with_a_shim_of_its_own() {
    let layout = Layout::new();
    fs::write(
        layout.root.join("bundle/config.json"),
        b"\x00\x01\x02 not json",
    )
    .unwrap();
    let args = layout.args("start", true);
    let options = options_naming(&layout.runtime());
    let out = layout.run(&args, &options, "/usr/bin:/bin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(layout.got("got-stdin"), options);
    assert_eq!(layout.got("got-spec"), b"\x00\x01\x02 not json");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("keeps a shim of its own") && said.contains("config.json"),
        "{said}"
    );
}

#[test]
fn the_shim_is_found_on_path_and_never_the_launcher_itself() {
    let layout = Layout::new();
    let engine = layout.root.join("lib/engine").display().to_string();
    let bin = layout.root.join("bin").display().to_string();
    // No -publish-binary: the first shim on PATH that is not this program.
    let args = layout.args("start", false);
    let options = options_naming(&layout.runtime());
    let out = layout.run(&args, &options, &format!("{engine}:{bin}:/bin"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(layout.got("got-stdin"), options);

    // Only the launcher itself: a clear error, not a loop.
    let out = layout.run(&args, &options, &engine);
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("containerd-shim-runc-v2 not found"));
}
