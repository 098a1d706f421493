//! Host keys: loaded when present, generated and persisted when missing, as sshd's
//! `ssh-keygen -A` would (Ed25519, ECDSA P-256, RSA 3072).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::private::{KeypairData, RsaKeypair};
use russh::keys::ssh_key::{self, LineEnding};
use russh::keys::{Algorithm, EcdsaCurve, PrivateKey};

/// RSA modulus size of generated keys (ssh-keygen's default).
const RSA_BITS: usize = 3072;

/// Why host keys could not be had.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    /// A key file exists but cannot be read or parsed.
    #[error("host key {path}: {message}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A generated key could not be written.
    #[error("cannot write host key {path}: {message}")]
    Unwritable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The three key files for a configured RSA key path: the RSA key itself and its
/// Ed25519 and ECDSA siblings in the same directory.
pub fn key_paths(rsa_key_path: &Path) -> [(PathBuf, Algorithm); 3] {
    let dir = rsa_key_path.parent().unwrap_or_else(|| Path::new("."));
    [
        (dir.join("ssh_host_ed25519_key"), Algorithm::Ed25519),
        (
            dir.join("ssh_host_ecdsa_key"),
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
        ),
        (rsa_key_path.to_owned(), Algorithm::Rsa { hash: None }),
    ]
}

/// Loads the host keys, generating and saving any that are missing. Returns the keys
/// and the paths that were generated.
pub fn load_or_generate(
    rsa_key_path: &Path,
) -> Result<(Vec<PrivateKey>, Vec<PathBuf>), HostKeyError> {
    let mut keys = Vec::new();
    let mut generated = Vec::new();
    for (path, algorithm) in key_paths(rsa_key_path) {
        if path.exists() {
            keys.push(load(&path, &algorithm)?);
        } else {
            let key = generate(&algorithm).map_err(|e| HostKeyError::Unwritable {
                path: path.clone(),
                message: e.to_string(),
            })?;
            save(&path, &key)?;
            keys.push(key);
            generated.push(path);
        }
    }
    Ok((keys, generated))
}

fn load(path: &Path, expected: &Algorithm) -> Result<PrivateKey, HostKeyError> {
    let unreadable = |message: String| HostKeyError::Unreadable {
        path: path.to_owned(),
        message,
    };
    let key = PrivateKey::read_openssh_file(path).map_err(|e| unreadable(e.to_string()))?;
    if key.is_encrypted() {
        return Err(unreadable(
            "is encrypted; host keys must not have a passphrase".into(),
        ));
    }
    let same_family = matches!(
        (key.algorithm(), expected),
        (Algorithm::Rsa { .. }, Algorithm::Rsa { .. })
            | (Algorithm::Ed25519, Algorithm::Ed25519)
            | (Algorithm::Ecdsa { .. }, Algorithm::Ecdsa { .. })
    );
    if !same_family {
        return Err(unreadable(format!(
            "holds a {} key where a {} key belongs",
            key.algorithm(),
            expected
        )));
    }
    Ok(key)
}

fn generate(algorithm: &Algorithm) -> ssh_key::Result<PrivateKey> {
    let mut rng = rand::rng();
    match algorithm {
        Algorithm::Rsa { .. } => {
            let keypair = RsaKeypair::random(&mut rng, RSA_BITS)?;
            PrivateKey::new(KeypairData::from(keypair), "")
        }
        other => PrivateKey::random(&mut rng, other.clone()),
    }
}

fn save(path: &Path, key: &PrivateKey) -> Result<(), HostKeyError> {
    let unwritable = |message: String| HostKeyError::Unwritable {
        path: path.to_owned(),
        message,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| unwritable(e.to_string()))?;
    }
    let private = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| unwritable(e.to_string()))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| unwritable(e.to_string()))?;
    let write = |target: &Path, text: &[u8], mode: u32| -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(target)?;
        file.write_all(text)?;
        file.sync_all()
    };
    write(path, private.as_bytes(), 0o600).map_err(|e| unwritable(e.to_string()))?;
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    let _ = std::fs::remove_file(&pub_path);
    write(
        Path::new(&pub_path),
        format!("{public} root@localhost\n").as_bytes(),
        0o644,
    )
    .map_err(|e| unwritable(e.to_string()))?;
    Ok(())
}
