//! The sensor's CA in every box's trust store (`egress` HTTPS): the image is built
//! once, the CA is per sensor, so it is put into each container between its create
//! and its start, as `update-ca-certificates` would have left it: the certificate
//! under /usr/local/share/ca-certificates, its link in /etc/ssl/certs, and the
//! bundle /etc/ssl/certs/ca-certificates.crt (the image's own, plus it).

use bollard::query_parameters::DownloadFromContainerOptionsBuilder;
use futures_util::StreamExt;

use super::*;
use crate::tar;
use crate::tar_write::TarWriter;

/// The bundle every TLS library of a Debian box reads.
const BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";
/// Largest image bundle read (Debian's is about 220 KB).
const MAX_BUNDLE: usize = 4 << 20;

/// A CA to put into every box.
#[derive(Debug)]
pub(super) struct TrustedCa {
    /// The file's name without extension, as update-ca-certificates names it.
    name: String,
    /// The certificate, PEM.
    pem: String,
    /// OpenSSL's hash of its subject, 8 hex digits: its `<hash>.0` link.
    hash: Option<String>,
    /// The image's bundle and its modification time, read once from the first
    /// container made.
    image_bundle: tokio::sync::OnceCell<ImageBundle>,
}

/// The image's own CA bundle.
#[derive(Debug, Default)]
struct ImageBundle {
    content: Vec<u8>,
    /// Seconds since the epoch; None when the image has no bundle.
    mtime: Option<u64>,
}

impl DockerSandbox {
    /// Makes every box created from now on trust `pem` (a CA certificate), filed
    /// under a name made of `name`, and linked under `hash` (OpenSSL's subject hash,
    /// as `openssl x509 -hash` prints it) when given.
    pub fn set_trusted_ca(&self, name: &str, pem: String, hash: Option<String>) {
        let hash =
            hash.filter(|hash| hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(60)
            .collect();
        let ca = TrustedCa {
            name,
            pem,
            hash,
            image_bundle: tokio::sync::OnceCell::new(),
        };
        if self.trusted_ca.set(ca).is_err() {
            tracing::warn!(target: "hermes::sandbox", "the boxes' CA was set twice; keeping the first");
        }
    }

    /// Adds the CA, as update-ca-certificates would have left it, to what goes into
    /// the created, not yet started, container `id`.
    pub(super) async fn add_ca(&self, id: &str, tar: &mut TarWriter) -> Result<(), SandboxError> {
        let Some(ca) = self.trusted_ca.get() else {
            return Ok(());
        };
        let image_bundle = ca
            .image_bundle
            .get_or_try_init(|| read_bundle(&self.docker, id))
            .await?;
        // Dated as the image's bundle, as if update-ca-certificates had run when it
        // was made: a date in the box's first second would count as the first
        // session's own file, and its capture would take them.
        let mtime = Self::server_file_time(image_bundle.mtime);
        ca_entries(ca, &image_bundle.content, mtime, tar)
            .map_err(|error| SandboxError::Engine(error.to_string()))
    }
}

/// Adds what update-ca-certificates would have written for `ca` to `tar`.
fn ca_entries(
    ca: &TrustedCa,
    image_bundle: &[u8],
    mtime: u64,
    tar: &mut TarWriter,
) -> Result<(), crate::tar_write::NameTooLong> {
    let certificate = format!("usr/local/share/ca-certificates/{}.crt", ca.name);
    let mut bundle = image_bundle.to_vec();
    if !bundle.is_empty() && !bundle.ends_with(b"\n") {
        bundle.push(b'\n');
    }
    bundle.extend_from_slice(ca.pem.as_bytes());
    tar.file(&certificate, ca.pem.as_bytes(), 0o644, mtime)?;
    tar.symlink(
        &format!("etc/ssl/certs/{}.pem", ca.name),
        &format!("/{certificate}"),
        mtime,
    )?;
    if let Some(hash) = &ca.hash {
        tar.symlink(
            &format!("etc/ssl/certs/{hash}.0"),
            &format!("{}.pem", ca.name),
            mtime,
        )?;
    }
    tar.file(BUNDLE, &bundle, 0o644, mtime)
}

/// The image's bundle as a container created from it (not started: untouched) has
/// it; empty when the image has none.
async fn read_bundle(docker: &Docker, id: &str) -> Result<ImageBundle, SandboxError> {
    let options = DownloadFromContainerOptionsBuilder::default()
        .path(&format!("/{BUNDLE}"))
        .build();
    let mut stream = docker.download_from_container(id, Some(options));
    let mut archive = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => archive.extend_from_slice(&bytes),
            Err(error) if is_not_found(&error) => return Ok(ImageBundle::default()),
            Err(error) => return Err(engine(error)),
        }
        if archive.len() > MAX_BUNDLE + 64 * 1024 {
            return Err(SandboxError::Engine(format!(
                "the image's /{BUNDLE} is over {MAX_BUNDLE} bytes"
            )));
        }
    }
    // A link (/etc/ssl/certs/... is a file on Debian) or anything else: none.
    Ok(tar::entries(&archive, 1)
        .into_iter()
        .next()
        .and_then(|entry| {
            let mtime = (entry.mtime > 0).then_some(entry.mtime);
            entry.data.map(|content| ImageBundle { content, mtime })
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::EntryKind;

    #[test]
    fn the_archive_holds_the_certificate_its_link_and_the_bundle_with_it_last() {
        let ca = TrustedCa {
            name: "Northwave_Hosting_Internal_CA_G2".to_owned(),
            pem: "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n".to_owned(),
            hash: Some("1a2b3c4d".to_owned()),
            image_bundle: tokio::sync::OnceCell::new(),
        };
        let mut tar = TarWriter::default();
        ca_entries(&ca, b"IMAGE ROOTS", 1_700_000_000, &mut tar).expect("entries");
        let bytes = tar.finish();
        let found = tar::entries(&bytes, 10);
        let paths: Vec<&str> = found.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "usr/local/share/ca-certificates/Northwave_Hosting_Internal_CA_G2.crt",
                "etc/ssl/certs/Northwave_Hosting_Internal_CA_G2.pem",
                "etc/ssl/certs/1a2b3c4d.0",
                "etc/ssl/certs/ca-certificates.crt",
            ]
        );
        assert_eq!(found[0].data.as_deref(), Some(ca.pem.as_bytes()));
        assert_eq!(found[1].kind, EntryKind::Other);
        let bundle = found[3].data.clone().expect("bundle");
        assert_eq!(bundle, format!("IMAGE ROOTS\n{}", ca.pem).into_bytes());
    }
}
