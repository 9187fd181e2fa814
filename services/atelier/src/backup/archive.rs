//! The backup archive: one tar file, gzip-compressed (a name ending in `.tar` is
//! written uncompressed; reading tells the two apart by their first bytes). Every
//! entry is a regular file, 0600. The manifest (`manifest.json`) is the last entry:
//! it lists every other entry with its size and SHA-256, and nothing else may be in
//! the archive. Reading checks each entry against it.
//!
//! Layout:
//! - `objects/<key>`: local objects as stored (encrypted ones stay encrypted), their
//!   content type in the manifest;
//! - `keys/jwt/<file>`, `keys/url-signing.key`, `keys/storage-encryption.key`: keys;
//! - `tls/<service>/...`: the generated service CA and certificates;
//! - `databases/<service>.db`: the SQLite databases, copied last;
//! - `manifest.json`.
//!
//! The checksums find an archive that was damaged or changed by accident; they are
//! no signature. The archive holds secrets and belongs where only operators reach.

use std::{
    collections::{BTreeMap, HashSet},
    fs::File,
    io::{self, BufReader, BufWriter, Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail, ensure};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const FORMAT: &str = "atelier-backup";
pub const VERSION: u32 = 1;
pub const MANIFEST: &str = "manifest.json";
/// The largest manifest read (a million objects' entries fit).
const MAX_MANIFEST_BYTES: u64 = 512 * 1024 * 1024;

/// The roots an entry may be under.
pub const OBJECTS: &str = "objects/";
pub const DATABASES: &str = "databases/";
pub const JWT_KEYS: &str = "keys/jwt/";
pub const URL_SIGNING_KEY: &str = "keys/url-signing.key";
pub const STORAGE_KEY: &str = "keys/storage-encryption.key";
pub const TLS: &str = "tls/";

/// What the archive holds, written last into it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// The `atelier` that wrote it.
    pub atelier_version: String,
    /// When the databases were copied (RFC 3339, UTC).
    pub created_at: String,
    /// Always true: keys are in it.
    pub contains_secrets: bool,
    pub counts: Counts,
    pub files: Vec<FileEntry>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Rows per table, per database.
    pub databases: BTreeMap<String, BTreeMap<String, u64>>,
    pub objects: u64,
    /// Image rows of the copied database left out: their objects were deleted
    /// before they could be copied, or they are results of jobs the copy of the
    /// processing database does not hold as completed.
    pub images_left_out: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// An object's content type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// Whether `name` is an entry an archive may hold: a relative path of plain
/// components under one of the known roots.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    // Segment by segment: `Path::components` would pass `a/./b` and `a//b`.
    let plain = name
        .split('/')
        .all(|segment| !matches!(segment, "" | "." | ".."));
    ensure!(plain, "archive entry {name:?} is not a plain relative path");
    let known = [OBJECTS, DATABASES, JWT_KEYS, TLS]
        .iter()
        .any(|root| name.len() > root.len() && name.starts_with(root))
        || name == URL_SIGNING_KEY
        || name == STORAGE_KEY;
    ensure!(known, "archive entry {name:?} is nothing a backup holds");
    Ok(())
}

/// A reader that hashes and counts what passes through it.
pub struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Hashing<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The bytes read and their SHA-256 (hex).
    pub fn finish(self) -> (u64, String) {
        (self.count, hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        self.count += read as u64;
        Ok(read)
    }
}

/// Writes an archive: to `<path>.partial` (0600), renamed to `path` once whole and
/// synced, so `path` never holds half an archive.
pub struct Writer {
    builder: tar::Builder<Box<dyn Write + Send>>,
    files: Vec<FileEntry>,
    names: HashSet<String>,
    partial: PathBuf,
    path: PathBuf,
    mtime: u64,
}

impl Writer {
    pub fn create(path: &Path, mtime: u64) -> anyhow::Result<Self> {
        let name = path
            .file_name()
            .with_context(|| format!("{} is not a file name", path.display()))?;
        let partial = path.with_file_name(format!("{}.partial", name.to_string_lossy()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        let file = BufWriter::with_capacity(256 * 1024, file);
        let out: Box<dyn Write + Send> = if is_plain_tar(path) {
            Box::new(file)
        } else {
            Box::new(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::fast(),
            ))
        };
        let mut builder = tar::Builder::new(out);
        builder.mode(tar::HeaderMode::Deterministic);
        Ok(Self {
            builder,
            files: Vec::new(),
            names: HashSet::new(),
            partial,
            path: path.to_owned(),
            mtime,
        })
    }

    /// Adds the `size` bytes `body` yields as `name`. Fails when `body` yields a
    /// different number of bytes.
    pub fn add(
        &mut self,
        name: &str,
        size: u64,
        body: impl Read,
        content_type: Option<String>,
    ) -> anyhow::Result<()> {
        check_name(name)?;
        ensure!(self.names.insert(name.to_owned()), "{name} added twice");
        let mut hashing = Hashing::new(body.take(size));
        self.append(name, size, &mut hashing)?;
        let (read, sha256) = hashing.finish();
        ensure!(
            read == size,
            "{name} changed while it was copied ({read} bytes read, {size} expected)"
        );
        self.files.push(FileEntry {
            path: name.to_owned(),
            size,
            sha256,
            content_type,
        });
        Ok(())
    }

    /// Adds the file at `path` as `name`.
    pub fn add_file(&mut self, name: &str, path: &Path) -> anyhow::Result<()> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let size = file.metadata()?.len();
        self.add(name, size, BufReader::new(file), None)
            .with_context(|| format!("copying {}", path.display()))
    }

    fn append(&mut self, name: &str, size: u64, body: &mut dyn Read) -> anyhow::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o600);
        header.set_mtime(self.mtime);
        header.set_entry_type(tar::EntryType::Regular);
        self.builder
            .append_data(&mut header, name, body)
            .with_context(|| format!("writing {name} into the archive"))
    }

    /// The entries added so far.
    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }

    /// Writes `manifest` (its files: the entries added) last, and puts the archive
    /// in place. Returns the archive's size.
    pub fn finish(mut self, mut manifest: Manifest) -> anyhow::Result<u64> {
        manifest.files = std::mem::take(&mut self.files);
        let json = serde_json::to_vec_pretty(&manifest)?;
        self.append(MANIFEST, json.len() as u64, &mut json.as_slice())?;
        let mut out = self.builder.into_inner().context("finishing the archive")?;
        out.flush()?;
        drop(out);
        // The encoder and buffer are gone: the file is whole. Sync it, then rename.
        let file = File::open(&self.partial)?;
        file.sync_all()
            .with_context(|| format!("syncing {}", self.partial.display()))?;
        let size = file.metadata()?.len();
        std::fs::rename(&self.partial, &self.path)
            .with_context(|| format!("renaming to {}", self.path.display()))?;
        if let Some(dir) = self.path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            File::open(dir).and_then(|dir| dir.sync_all()).ok();
        }
        Ok(size)
    }

    /// Removes the unfinished archive.
    pub fn abandon(self) {
        let partial = self.partial.clone();
        drop(self);
        let _ = std::fs::remove_file(partial);
    }
}

/// `.tar` names an uncompressed archive; anything else is gzip-compressed.
fn is_plain_tar(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "tar")
}

/// Calls `visit` with every entry of the archive at `path` but the manifest, in
/// order, and returns the manifest's bytes (it must be the last entry).
pub fn read_entries(
    path: &Path,
    mut visit: impl FnMut(&str, &mut dyn Read) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<u8>> {
    let mut file = BufReader::with_capacity(
        256 * 1024,
        File::open(path).with_context(|| format!("opening {}", path.display()))?,
    );
    let gzip = {
        let head = io::BufRead::fill_buf(&mut file)?;
        head.starts_with(&[0x1f, 0x8b])
    };
    let input: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(input);
    let mut manifest = None;
    for entry in archive
        .entries()
        .with_context(|| format!("reading {}", path.display()))?
    {
        let mut entry = entry.with_context(|| format!("reading {}", path.display()))?;
        let name = entry
            .path()?
            .to_str()
            .context("an archive entry whose name is not UTF-8")?
            .to_owned();
        ensure!(
            entry.header().entry_type() == tar::EntryType::Regular,
            "archive entry {name:?} is not a regular file"
        );
        if manifest.is_some() {
            bail!("archive entry {name:?} follows the manifest");
        }
        if name == MANIFEST {
            let mut bytes = Vec::new();
            (&mut entry)
                .take(MAX_MANIFEST_BYTES)
                .read_to_end(&mut bytes)?;
            manifest = Some(bytes);
        } else {
            check_name(&name)?;
            visit(&name, &mut entry).with_context(|| format!("archive entry {name}"))?;
        }
    }
    manifest.context("the archive has no manifest (it is cut short, or no Atelier backup)")
}

/// Reads the whole archive and checks every entry against the manifest: the same
/// names, sizes and SHA-256, nothing missing, nothing more. Returns the manifest.
pub fn verify(path: &Path) -> anyhow::Result<Manifest> {
    let mut seen: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let manifest = read_entries(path, |name, body| {
        let mut hashing = Hashing::new(body);
        io::copy(&mut hashing, &mut io::sink())?;
        ensure!(
            seen.insert(name.to_owned(), hashing.finish()).is_none(),
            "{name} is in the archive twice"
        );
        Ok(())
    })?;
    let manifest = parse(&manifest)?;
    let mut listed = HashSet::new();
    for file in &manifest.files {
        check_name(&file.path)?;
        ensure!(
            listed.insert(file.path.as_str()),
            "the manifest lists {} twice",
            file.path
        );
        let Some((size, sha256)) = seen.get(&file.path) else {
            bail!(
                "{} is listed in the manifest but not in the archive",
                file.path
            );
        };
        ensure!(
            *size == file.size && *sha256 == file.sha256,
            "{} does not match the manifest: sha256 {sha256} ({size} bytes), the manifest says {} ({} bytes)",
            file.path,
            file.sha256,
            file.size
        );
    }
    if let Some(extra) = seen.keys().find(|name| !listed.contains(name.as_str())) {
        bail!("{extra} is in the archive but not in its manifest");
    }
    Ok(manifest)
}

fn parse(bytes: &[u8]) -> anyhow::Result<Manifest> {
    let manifest: Manifest =
        serde_json::from_slice(bytes).context("the manifest is not valid JSON")?;
    ensure!(
        manifest.format == FORMAT,
        "the manifest is not an Atelier backup's (format {:?})",
        manifest.format
    );
    ensure!(
        manifest.version == VERSION,
        "backup format version {} is not supported (this atelier reads version {VERSION})",
        manifest.version
    );
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_plain_paths_under_known_roots() {
        for good in [
            "objects/images/u/i-original",
            "databases/auth.db",
            "keys/jwt/1.pem",
            "keys/url-signing.key",
            "tls/ca/ca.key",
        ] {
            check_name(good).expect(good);
        }
        for bad in [
            "",
            "/etc/passwd",
            "objects/../../etc/passwd",
            "objects/",
            "objects/./a",
            "other/file",
            "keys/other.key",
            "databases//a.db",
            "manifest.json",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT.into(),
            version: VERSION,
            atelier_version: "test".into(),
            created_at: "2026-12-07T00:00:00Z".into(),
            contains_secrets: true,
            counts: Counts::default(),
            files: Vec::new(),
        }
    }

    #[test]
    fn an_archive_reads_back_and_a_changed_one_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in ["backup.tar.gz", "backup.tar"] {
            let path = dir.path().join(name);
            let started = || {
                let mut writer = Writer::create(&path, 0).expect("create");
                writer
                    .add(
                        "objects/a/b",
                        5,
                        b"hello".as_slice(),
                        Some("image/png".into()),
                    )
                    .expect("add");
                writer
            };
            let mut writer = started();
            writer
                .add("databases/auth.db", 3, b"abc".as_slice(), None)
                .expect("add");
            assert!(
                writer
                    .add("objects/a/c", 9, b"short".as_slice(), None)
                    .is_err(),
                "a body shorter than said"
            );
            // The failed entry is still written (padded): such an archive is
            // abandoned, never finished, by the caller. Here: start again.
            writer.abandon();
            started().finish(manifest()).expect("finish");
            let read = verify(&path).expect("verify");
            assert_eq!(read.files.len(), 1);
            assert_eq!(read.files[0].content_type.as_deref(), Some("image/png"));
            assert_eq!(
                std::fs::metadata(&path)
                    .expect("archive")
                    .permissions()
                    .mode()
                    & 0o777,
                0o600
            );
        }
        // An uncompressed archive with one byte of an object changed.
        let path = dir.path().join("backup.tar");
        let mut bytes = std::fs::read(&path).expect("archive");
        let at = bytes
            .windows(5)
            .position(|window| window == b"hello")
            .expect("the object's bytes");
        bytes[at] = b'j';
        std::fs::write(&path, bytes).expect("write");
        let err = verify(&path).expect_err("changed");
        assert!(
            format!("{err:#}").contains("does not match the manifest"),
            "{err:#}"
        );
    }

    use std::os::unix::fs::PermissionsExt;
}
