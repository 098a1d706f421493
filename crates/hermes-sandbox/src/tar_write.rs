//! A writer for the few files Hermes puts into a box before it starts (ustar, root
//! owned, short names only): the engine's archive upload takes a tar.

const BLOCK: usize = 512;

/// A tar being built.
#[derive(Debug, Default)]
pub(crate) struct TarWriter {
    bytes: Vec<u8>,
}

/// A name too long for a plain ustar header.
#[derive(Debug, thiserror::Error)]
#[error("tar entry name too long: {0}")]
pub(crate) struct NameTooLong(String);

impl TarWriter {
    /// Adds a regular file owned by root.
    pub(crate) fn file(
        &mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        mtime: u64,
    ) -> Result<(), NameTooLong> {
        self.file_owned(path, data, mode, (0, 0), mtime)
    }

    /// Adds a regular file owned by `owner` (uid, gid).
    pub(crate) fn file_owned(
        &mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        owner: (u32, u32),
        mtime: u64,
    ) -> Result<(), NameTooLong> {
        let mut header = header(path, data.len() as u64, mode, mtime, b'0', "")?;
        if owner != (0, 0) {
            octal(&mut header[108..116], u64::from(owner.0));
            octal(&mut header[116..124], u64::from(owner.1));
            // The names would win over the ids in some readers: leave them out.
            header[265..329].fill(0);
            checksum(&mut header);
        }
        self.bytes.extend_from_slice(&header);
        self.bytes.extend_from_slice(data);
        let padded = self.bytes.len().div_ceil(BLOCK) * BLOCK;
        self.bytes.resize(padded, 0);
        Ok(())
    }

    /// Adds a symbolic link to `target`.
    pub(crate) fn symlink(
        &mut self,
        path: &str,
        target: &str,
        mtime: u64,
    ) -> Result<(), NameTooLong> {
        let header = header(path, 0, 0o777, mtime, b'2', target)?;
        self.bytes.extend_from_slice(&header);
        Ok(())
    }

    /// Nothing added yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The archive, with its end marker.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.bytes.resize(self.bytes.len() + 2 * BLOCK, 0);
        self.bytes
    }
}

fn header(
    path: &str,
    size: u64,
    mode: u32,
    mtime: u64,
    typeflag: u8,
    link: &str,
) -> Result<[u8; BLOCK], NameTooLong> {
    if path.len() > 99 || path.is_empty() {
        return Err(NameTooLong(path.to_owned()));
    }
    if link.len() > 99 {
        return Err(NameTooLong(link.to_owned()));
    }
    let mut block = [0u8; BLOCK];
    block[..path.len()].copy_from_slice(path.as_bytes());
    octal(&mut block[100..108], u64::from(mode));
    octal(&mut block[108..116], 0);
    octal(&mut block[116..124], 0);
    octal(&mut block[124..136], size);
    octal(&mut block[136..148], mtime);
    block[156] = typeflag;
    block[157..157 + link.len()].copy_from_slice(link.as_bytes());
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    block[265..269].copy_from_slice(b"root");
    block[297..301].copy_from_slice(b"root");
    checksum(&mut block);
    Ok(block)
}

/// Sets the header's checksum, computed with its own field as spaces.
fn checksum(block: &mut [u8; BLOCK]) {
    block[148..156].copy_from_slice(b"        ");
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(text.as_bytes());
}

/// A zero-padded octal field ending in NUL.
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    let text = &text.as_bytes()[text.len().saturating_sub(width)..];
    field[..width].copy_from_slice(text);
    field[width] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::{EntryKind, entries};

    #[test]
    fn what_is_written_reads_back_and_tar_accepts_it() {
        let mut tar = TarWriter::default();
        tar.file(
            "etc/ssl/certs/bundle.crt",
            b"-----BEGIN\n",
            0o644,
            1_700_000_000,
        )
        .expect("file");
        tar.symlink(
            "etc/ssl/certs/x.pem",
            "/usr/local/share/x.crt",
            1_700_000_000,
        )
        .expect("link");
        let bytes = tar.finish();
        let found = entries(&bytes, 10);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].path, "etc/ssl/certs/bundle.crt");
        assert_eq!(found[0].kind, EntryKind::File);
        assert_eq!(found[0].data.as_deref(), Some(&b"-----BEGIN\n"[..]));
        assert_eq!(found[1].kind, EntryKind::Other);
        assert!(
            TarWriter::default()
                .file(&"x".repeat(100), b"", 0o644, 0)
                .is_err()
        );

        // The system's tar reads it: names, modes, link target.
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("a.tar");
        std::fs::write(&file, &bytes).expect("write");
        let Ok(out) = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&file)
            .output()
        else {
            return;
        };
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(listing.contains("-rw-r--r-- root/root"), "{listing}");
        assert!(
            listing.contains("x.pem -> /usr/local/share/x.crt"),
            "{listing}"
        );
    }

    #[test]
    fn owned_files_carry_their_ids() {
        let mut tar = TarWriter::default();
        tar.file_owned("var/log/auth.log", b"x\n", 0o640, (0, 4), 1_700_000_000)
            .expect("file");
        let bytes = tar.finish();
        assert_eq!(entries(&bytes, 10)[0].path, "var/log/auth.log");
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("a.tar");
        std::fs::write(&file, &bytes).expect("write");
        let out = std::process::Command::new("tar")
            .args(["--numeric-owner", "-tvf"])
            .arg(&file)
            .output()
            .expect("tar runs");
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(listing.starts_with("-rw-r----- 0/4 "), "{listing}");
    }
}
