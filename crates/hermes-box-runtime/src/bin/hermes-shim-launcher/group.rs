//! Which boxes share an engine shim, and how containerd is told: the group label the
//! runc v2 shim reads from the bundle's `config.json` when it starts (the label
//! Kubernetes pods share a shim by). The label stays on the host: runc does not show
//! a container its annotations.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde_json::{Map, Value};

/// The labels the shim groups by, in its order; a bundle with either keeps it.
const GROUP_LABELS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

/// How many shims the boxes are spread over. Each shim forces a garbage collection
/// every 30 s and holds about 14 MB; spread over a few, one shim's crash ends only
/// its share of the boxes.
pub const GROUPS: u32 = 8;

/// A `config.json` larger than this is not a bundle containerd wrote; left alone.
const MAX_SPEC_BYTES: u64 = 4 << 20;

/// Whether the runtime options containerd hands the shim (a protobuf on stdin) name
/// `runtime` as the runtime binary: a length-prefixed string of exactly its bytes.
pub fn runs_under(options: &[u8], runtime: &[u8]) -> bool {
    let Ok(length) = u8::try_from(runtime.len()) else {
        return false;
    };
    if runtime.is_empty() || length >= 0x80 {
        return false;
    }
    options
        .windows(runtime.len() + 1)
        .any(|window| window[0] == length && &window[1..] == runtime)
}

/// The group of a container, from its id: the same id always lands in the same one.
pub fn group_of(id: &str) -> String {
    // FNV-1a: stable across builds, unlike the standard library's hasher.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in id.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("boxes-{}", hash % GROUPS)
}

/// What [`join`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Joined {
    /// The label was added.
    Added,
    /// The bundle already names a group; it is kept.
    AlreadyGrouped,
}

/// Why a bundle's spec could not be given its group.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("reading {0}: {1}")]
    Read(String, io::Error),
    #[error("{0} is larger than {MAX_SPEC_BYTES} bytes")]
    TooLarge(String),
    #[error("{0} is not a JSON object: {1}")]
    NotSpec(String, String),
    #[error("writing {0}: {1}")]
    Write(String, io::Error),
}

/// Adds the group label to the spec at `spec` (the bundle's `config.json`), replacing
/// the file whole: written beside it, then renamed over it.
pub fn join(spec: &Path, group: &str) -> Result<Joined, JoinError> {
    let name = spec.display().to_string();
    let meta = fs::symlink_metadata(spec).map_err(|e| JoinError::Read(name.clone(), e))?;
    if !meta.is_file() {
        return Err(JoinError::NotSpec(name, "not a regular file".to_owned()));
    }
    if meta.len() > MAX_SPEC_BYTES {
        return Err(JoinError::TooLarge(name));
    }
    let text = fs::read(spec).map_err(|e| JoinError::Read(name.clone(), e))?;
    let mut document: Value = serde_json::from_slice(&text)
        .map_err(|e| JoinError::NotSpec(name.clone(), e.to_string()))?;
    let Some(root) = document.as_object_mut() else {
        return Err(JoinError::NotSpec(name, "not an object".to_owned()));
    };
    let annotations = root
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(annotations) = annotations.as_object_mut() else {
        return Err(JoinError::NotSpec(
            name,
            "annotations is not an object".to_owned(),
        ));
    };
    if GROUP_LABELS
        .iter()
        .any(|label| annotations.contains_key(*label))
    {
        return Ok(Joined::AlreadyGrouped);
    }
    annotations.insert(GROUP_LABELS[0].to_owned(), Value::String(group.to_owned()));
    let bytes = serde_json::to_vec(&document)
        .map_err(|e| JoinError::NotSpec(name.clone(), e.to_string()))?;
    let temp = spec.with_file_name("config.json.hermes-group");
    let written = fs::File::create(&temp)
        .and_then(|mut file| file.write_all(&bytes))
        .and_then(|()| fs::rename(&temp, spec));
    if let Err(error) = written {
        let _ = fs::remove_file(&temp);
        return Err(JoinError::Write(name, error));
    }
    Ok(Joined::Added)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNTIME: &[u8] = b"/usr/local/lib/hermes/hermes-box-runtime";

    fn options_naming(path: &[u8]) -> Vec<u8> {
        // An Any { type_url, value: Options { binary_name } } as containerd sends it.
        let mut inner = vec![0x22, path.len() as u8];
        inner.extend_from_slice(path);
        let type_url = b"containerd.runc.v1.Options";
        let mut any = vec![0x0a, type_url.len() as u8];
        any.extend_from_slice(type_url);
        any.push(0x12);
        any.push(inner.len() as u8);
        any.extend_from_slice(&inner);
        any
    }

    #[test]
    fn the_boxes_runtime_is_recognised_in_the_options_and_nothing_else_is() {
        assert!(runs_under(&options_naming(RUNTIME), RUNTIME));
        assert!(!runs_under(&options_naming(b"/usr/bin/runc"), RUNTIME));
        // A longer path that starts with ours is another runtime.
        assert!(!runs_under(
            &options_naming(b"/usr/local/lib/hermes/hermes-box-runtime2"),
            RUNTIME
        ));
        assert!(!runs_under(b"", RUNTIME));
        assert!(!runs_under(&options_naming(RUNTIME), b""));
    }

    #[test]
    fn a_container_id_always_lands_in_the_same_of_the_groups() {
        let id = "5af94946db382d6b00646b41fcaaa4545417c2000e647a8f59a8e381b6c1414e";
        assert_eq!(group_of(id), group_of(id));
        let groups: std::collections::HashSet<String> =
            (0..400).map(|n| group_of(&format!("{n:064x}"))).collect();
        assert_eq!(groups.len(), GROUPS as usize, "{groups:?}");
        assert!(groups.iter().all(|g| g.starts_with("boxes-")));
    }

    #[test]
    fn the_label_is_added_and_the_rest_of_the_spec_kept() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("config.json");
        fs::write(&spec, br#"{"ociVersion":"1.0.2-dev","process":{"args":["/sbin/init"]},"annotations":{"other":"x"}}"#).unwrap();
        assert_eq!(join(&spec, "boxes-3").unwrap(), Joined::Added);
        let document: Value = serde_json::from_slice(&fs::read(&spec).unwrap()).unwrap();
        assert_eq!(
            document["annotations"]["io.containerd.runc.v2.group"],
            "boxes-3"
        );
        assert_eq!(document["annotations"]["other"], "x");
        assert_eq!(document["process"]["args"][0], "/sbin/init");
        assert_eq!(document["ociVersion"], "1.0.2-dev");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );

        // Without annotations at all.
        fs::write(&spec, br#"{"ociVersion":"1.0.2-dev"}"#).unwrap();
        assert_eq!(join(&spec, "boxes-0").unwrap(), Joined::Added);
        let document: Value = serde_json::from_slice(&fs::read(&spec).unwrap()).unwrap();
        assert_eq!(
            document["annotations"]["io.containerd.runc.v2.group"],
            "boxes-0"
        );
    }

    #[test]
    fn a_bundle_that_already_names_a_group_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("config.json");
        let text = br#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod"}}"#;
        fs::write(&spec, text).unwrap();
        assert_eq!(join(&spec, "boxes-1").unwrap(), Joined::AlreadyGrouped);
        assert_eq!(fs::read(&spec).unwrap(), text);
    }

    #[test]
    fn a_spec_that_is_not_one_is_left_as_it_is_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("config.json");
        for text in [
            &b"[1,2]"[..],
            b"{\"annotations\":7}",
            b"\x00\x01\x02 not json",
            b"",
        ] {
            fs::write(&spec, text).unwrap();
            let error = join(&spec, "boxes-1").unwrap_err();
            assert!(matches!(error, JoinError::NotSpec(..)), "{error}");
            assert!(error.to_string().contains("config.json"), "{error}");
            assert_eq!(fs::read(&spec).unwrap(), text);
        }
        let missing = dir.path().join("gone").join("config.json");
        assert!(matches!(
            join(&missing, "boxes-1"),
            Err(JoinError::Read(..))
        ));
        fs::write(&spec, vec![b' '; (MAX_SPEC_BYTES + 1) as usize]).unwrap();
        assert!(matches!(
            join(&spec, "boxes-1"),
            Err(JoinError::TooLarge(..))
        ));
    }
}
