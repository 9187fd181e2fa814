//! Files the platform writes for itself: secrets readable by the owner only (0600 in
//! a 0700 directory), and whole-file replacement so a reader never sees half a file.

use std::{
    fs::{DirBuilder, OpenOptions},
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

use anyhow::Context;

const PRIVATE_FILE: u32 = 0o600;
const PUBLIC_FILE: u32 = 0o644;
const PRIVATE_DIR: u32 = 0o700;

/// Creates `dir` (and its parents) readable by the owner only.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Replaces `path` with `bytes`, readable by the owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    replace(path, bytes, PRIVATE_FILE)
}

/// Replaces `path` with `bytes` (a certificate, anything not secret).
pub fn write_replace(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    replace(path, bytes, PUBLIC_FILE)
}

/// Creates `path` with `bytes`, readable by the owner only, unless it exists: whether
/// this call created it.
pub fn create_private(path: &Path, bytes: &[u8]) -> anyhow::Result<bool> {
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(err) => return Err(err).with_context(|| format!("creating {}", path.display())),
    };
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}

/// Narrows an existing file that others may read (written by an older version) to
/// 0600; a missing file is left missing.
pub fn narrow_private(path: &Path) -> anyhow::Result<()> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    if metadata.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE_FILE))
            .with_context(|| format!("narrowing {}", path.display()))?;
        tracing::info!(path = %path.display(), "narrowed file permissions to 0600");
    }
    Ok(())
}

/// Writes a temporary file beside `path` with `mode`, then renames it over `path`.
fn replace(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("file operation")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn secrets_are_the_owners_alone() {
        let dir = tempfile::tempdir().expect("file operation");
        let secrets = dir.path().join("a/b");
        private_dir(&secrets).expect("file operation");
        assert_eq!(mode(&secrets), 0o700);
        let key = secrets.join("key");
        write_private(&key, b"one").expect("file operation");
        assert_eq!(mode(&key), 0o600);
        write_private(&key, b"two").expect("file operation");
        assert_eq!(std::fs::read(&key).expect("file operation"), b"two");
        assert!(!create_private(&key, b"three").expect("file operation"));
        assert_eq!(std::fs::read(&key).expect("file operation"), b"two");
        let fresh = secrets.join("fresh");
        assert!(create_private(&fresh, b"x").expect("file operation"));
        assert_eq!(mode(&fresh), 0o600);
        let cert = secrets.join("cert");
        write_replace(&cert, b"c").expect("file operation");
        assert_eq!(mode(&cert), 0o644);
        // A file an older version left readable by others is narrowed.
        narrow_private(&cert).expect("file operation");
        assert_eq!(mode(&cert), 0o600);
        narrow_private(&secrets.join("missing")).expect("a missing file is fine");
        // Nothing temporary is left behind.
        assert_eq!(
            std::fs::read_dir(&secrets).expect("file operation").count(),
            3
        );
    }
}
