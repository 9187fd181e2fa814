//! The local-directory backend, the embedded default.
//!
//! Layout under the root:
//! - `objects/<key>`: the object's bytes, exactly as stored (an operator can look at them),
//!   its content type in the extended attribute `user.atelier.content_type`;
//! - `meta/<key>`: the content type instead, as plain text, on a filesystem without user
//!   extended attributes (and for objects stored before they were used);
//! - `tmp/<uuid>`: uploads in flight, renamed into place once complete and synced.
//!
//! The attribute travels with the file through the rename and is synced with it, so an
//! object costs one file: a second file per object doubled the inodes created and the
//! syncs of every put, which on a busy disk cost more than the rest of storing a result.
//! Content types in files live in a tree of their own rather than beside the object
//! (`<key>.meta`) because `a.meta` is itself a valid key.
//!
//! With a key ([`LocalStore::encrypted`], `STORAGE_ENCRYPTION_KEY_FILE`), objects are
//! stored encrypted (see [`crate::encryption`]); objects stored before, without the
//! header, are still read as they are. Content types are not encrypted. As on any filesystem, `a` and
//! `a/b` cannot both be objects: storing one while the other exists fails with
//! [`StorageError::Backend`].

use std::{
    io::{self, SeekFrom, Write as _},
    os::fd::AsFd,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::{
    fs::{self, File},
    io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter},
};
use tokio_util::io::ReaderStream;

use crate::{
    ByteRange, ByteStream, DEFAULT_CONTENT_TYPE, ObjectMeta, ObjectRead, ObjectStore, StorageError,
    encryption::{self, EncryptionKey},
    range, validate_key,
};

/// The size of the chunks `get` streams.
const READ_CHUNK: usize = 64 * 1024;

/// The extended attribute holding an object's content type.
const CONTENT_TYPE_ATTRIBUTE: &str = "user.atelier.content_type";

/// Temp files older than this are left by a crash, and removed when a store opens.
const STALE_TEMP_AGE: Duration = Duration::from_secs(60 * 60);

/// Objects in a local directory. URLs to them are signed by the image service and served
/// by the gateway, so [`ObjectStore::presigned_get`] answers `None`.
#[derive(Clone, Debug)]
pub struct LocalStore {
    root: PathBuf,
    objects: PathBuf,
    meta: PathBuf,
    tmp: PathBuf,
    /// Whether the filesystem keeps user extended attributes (else `meta/` holds the
    /// content types).
    attributes: bool,
    /// The key new objects are encrypted with, and encrypted objects read with.
    encryption: Option<EncryptionKey>,
}

impl LocalStore {
    /// Opens the store at `root`, creating the directory when missing, and removes
    /// uploads left in flight by a crash (temp files older than an hour).
    pub fn new(root: PathBuf) -> Result<Self, StorageError> {
        let store = Self {
            objects: root.join("objects"),
            meta: root.join("meta"),
            tmp: root.join("tmp"),
            root,
            attributes: false,
            encryption: None,
        };
        // Users' images are theirs: only this process's user may read them.
        let mut private = std::fs::DirBuilder::new();
        private.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut private, 0o700);
        for dir in [&store.root, &store.objects, &store.meta, &store.tmp] {
            private
                .create(dir)
                .map_err(|e| backend(format!("creating {}", dir.display()), e))?;
        }
        store.remove_stale_temp_files();
        let attributes = store.keeps_attributes();
        if !attributes {
            tracing::info!(root = %store.root.display(), "no user extended attributes here: content types are kept in files");
        }
        Ok(Self {
            attributes,
            ..store
        })
    }

    /// The store, encrypting the objects it writes with `key` from now on (those
    /// written before stay readable).
    pub fn encrypted(self, key: EncryptionKey) -> Self {
        tracing::info!(root = %self.root.display(), key_id = key.id(), "local objects are encrypted");
        Self {
            encryption: Some(key),
            ..self
        }
    }

    /// Whether a file in `tmp/` takes a content type attribute.
    fn keeps_attributes(&self) -> bool {
        let probe = TempFile::new(&self.tmp);
        std::fs::File::create_new(&probe.path)
            .is_ok_and(|file| set_content_type(&file, DEFAULT_CONTENT_TYPE).is_ok())
    }

    /// The directory this store keeps its objects under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn remove_stale_temp_files(&self) {
        let Ok(entries) = std::fs::read_dir(&self.tmp) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| {
                    now.duration_since(modified)
                        .is_ok_and(|age| age > STALE_TEMP_AGE)
                });
            if stale && let Err(error) = std::fs::remove_file(entry.path()) {
                tracing::warn!(path = %entry.path().display(), %error, "removing stale temp file failed");
            }
        }
    }

    /// The object's path and its content type's path, for a valid key.
    fn paths(&self, key: &str) -> Result<(PathBuf, PathBuf), StorageError> {
        validate_key(key)?;
        Ok((self.objects.join(key), self.meta.join(key)))
    }

    /// Writes `body` to a new temp file with `content_type` as its attribute (where
    /// the filesystem keeps them), synced; the guard removes it unless disarmed.
    async fn write_temp(
        &self,
        mut body: ByteStream,
        content_type: &str,
    ) -> Result<(TempFile, u64), StorageError> {
        let temp = TempFile::new(&self.tmp);
        let file = File::create_new(&temp.path)
            .await
            .map_err(|e| backend(format!("creating {}", temp.path.display()), e))?;
        let mut writer = BufWriter::with_capacity(READ_CHUNK, file);
        let writing = |e| backend(format!("writing {}", temp.path.display()), e);
        let mut size = 0u64;
        let mut sealer = self.encryption.as_ref().map(EncryptionKey::seal);
        if let Some(sealer) = &sealer {
            writer.write_all(&sealer.header()).await.map_err(writing)?;
        }
        let mut sealed = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(StorageError::Body)?;
            match &mut sealer {
                Some(sealer) => {
                    sealer.push(&chunk, &mut sealed)?;
                    for segment in sealed.drain(..) {
                        writer.write_all(&segment).await.map_err(writing)?;
                    }
                }
                None => writer.write_all(&chunk).await.map_err(writing)?,
            }
            size += chunk.len() as u64;
        }
        if let Some(sealer) = sealer {
            writer.write_all(&sealer.finish()?).await.map_err(writing)?;
        }
        writer
            .flush()
            .await
            .map_err(|e| backend(format!("writing {}", temp.path.display()), e))?;
        let file = writer.into_inner();
        if self.attributes {
            set_content_type(&file, content_type)
                .map_err(|e| backend(format!("labelling {}", temp.path.display()), e))?;
        }
        file.sync_all()
            .await
            .map_err(|e| backend(format!("syncing {}", temp.path.display()), e))?;
        Ok((temp, size))
    }
}

/// Copying objects whole, as they lie on disk (encrypted or not), for backups:
/// blocking calls, for a backup's own thread.
impl LocalStore {
    /// The object's file as stored (its bytes are not decrypted) and its content
    /// type; `None` when there is no such object. The file stays readable whole
    /// even if the object is deleted or replaced meanwhile.
    pub fn open_stored(&self, key: &str) -> Result<Option<(std::fs::File, String)>, StorageError> {
        let (object_path, meta_path) = self.paths(key)?;
        let file = match std::fs::File::open(&object_path) {
            Ok(file) => file,
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => return Err(backend(format!("opening {key:?}"), e)),
        };
        let is_file = file
            .metadata()
            .map_err(|e| backend(format!("reading {key:?}"), e))?
            .is_file();
        if !is_file {
            return Ok(None);
        }
        let content_type = match content_type_of(&file) {
            Some(content_type) => content_type,
            None => match std::fs::read_to_string(&meta_path) {
                Ok(content_type) => content_type.trim().to_owned(),
                Err(e) if is_missing(&e) => DEFAULT_CONTENT_TYPE.to_owned(),
                Err(e) => return Err(backend(format!("reading {}", meta_path.display()), e)),
            },
        };
        Ok(Some((file, content_type)))
    }

    /// Stores the bytes `body` yields under `key` exactly as they are (an object
    /// [`LocalStore::open_stored`] read, encrypted or not: this store's key is not
    /// applied), labelled `content_type`; synced and renamed into place like a put.
    /// Returns the bytes written.
    pub fn put_stored(
        &self,
        key: &str,
        content_type: &str,
        body: &mut dyn io::Read,
    ) -> Result<u64, StorageError> {
        let (object_path, meta_path) = self.paths(key)?;
        let temp = TempFile::new(&self.tmp);
        let writing = |e| backend(format!("writing {}", temp.path.display()), e);
        let mut file = std::fs::File::create_new(&temp.path).map_err(writing)?;
        let size = io::copy(body, &mut file).map_err(writing)?;
        if self.attributes {
            set_content_type(&file, content_type).map_err(writing)?;
        }
        file.sync_all().map_err(writing)?;
        drop(file);
        let meta = (!self.attributes).then(|| (TempFile::new(&self.tmp), meta_path));
        place(key, content_type, temp, meta, &object_path)?;
        Ok(size)
    }
}

impl LocalStore {
    /// Reads the encrypted object in `file` (`file_len` bytes, `header` read), or
    /// the part of it `range` asks for, decrypting only the segments that cover it.
    async fn get_encrypted(
        &self,
        key: &str,
        mut file: File,
        file_len: u64,
        header: &[u8; encryption::HEADER_LEN],
        range: Option<ByteRange>,
        content_type: String,
    ) -> Result<ObjectRead, StorageError> {
        let Some(encryption) = &self.encryption else {
            return Err(StorageError::Backend(format!(
                "object {key:?} is encrypted, but no key is configured \
                 (STORAGE_ENCRYPTION_KEY_FILE)"
            )));
        };
        let segments = encryption.open(header).map_err(|why| {
            StorageError::Backend(format!("cannot decrypt object {key:?}: {why}"))
        })?;
        let size = encryption::plaintext_len(file_len).ok_or_else(|| corrupt(key))?;
        let range = range::resolve(size, range)?;
        let count = encryption::segment_count(size);
        let segment = encryption::segment_size();
        let (first, last) = if range.is_empty() {
            (count, count - 1)
        } else {
            (range.start() / segment, range.end() / segment)
        };
        let reading = |e| backend(format!("reading {key:?}"), e);
        // The last segment says the object is whole (not truncated): read it first
        // when the range does not reach it.
        if last + 1 < count || range.is_empty() {
            let (start, len) = encryption::segment_span(size, count - 1);
            let mut buffer = vec![0u8; len as usize];
            file.seek(SeekFrom::Start(start)).await.map_err(reading)?;
            file.read_exact(&mut buffer).await.map_err(reading)?;
            segments
                .open(count - 1, true, &mut buffer)
                .map_err(|()| corrupt(key))?;
        }
        if first < count {
            let (start, _) = encryption::segment_span(size, first);
            file.seek(SeekFrom::Start(start)).await.map_err(reading)?;
        }
        let state = Decrypting {
            file,
            segments,
            key: key.to_owned(),
            next: first,
            last,
            count,
            size,
            range: range.clone(),
        };
        let body = futures::stream::try_unfold(state, Decrypting::next).boxed();
        Ok(ObjectRead {
            meta: ObjectMeta { size, content_type },
            range,
            body,
        })
    }
}

/// The segments of an encrypted object a read covers, decrypted one at a time.
struct Decrypting {
    file: File,
    segments: encryption::Segments,
    key: String,
    /// The next segment to read, and the last one to.
    next: u64,
    last: u64,
    count: u64,
    size: u64,
    range: std::ops::RangeInclusive<u64>,
}

impl Decrypting {
    async fn next(mut self) -> io::Result<Option<(bytes::Bytes, Self)>> {
        if self.next > self.last || self.next >= self.count {
            return Ok(None);
        }
        let index = self.next;
        let (_, len) = encryption::segment_span(self.size, index);
        let mut buffer = vec![0u8; len as usize];
        self.file.read_exact(&mut buffer).await?;
        self.segments
            .open(index, index + 1 == self.count, &mut buffer)
            .map_err(|()| io::Error::new(io::ErrorKind::InvalidData, corrupt(&self.key)))?;
        // The part of this segment's plaintext the range covers.
        let offset = index * encryption::segment_size();
        let from = self.range.start().saturating_sub(offset) as usize;
        let to = (self.range.end() - offset + 1).min(buffer.len() as u64) as usize;
        buffer.truncate(to);
        let bytes = bytes::Bytes::from(buffer).slice(from..);
        self.next += 1;
        Ok(Some((bytes, self)))
    }
}

/// Reads the encryption header at the start of `file` (`len` bytes), if it has one.
async fn read_header(
    file: &mut File,
    len: u64,
    key: &str,
) -> Result<Option<[u8; encryption::HEADER_LEN]>, StorageError> {
    if len < encryption::MAGIC.len() as u64 {
        return Ok(None);
    }
    let reading = |e| backend(format!("reading {key:?}"), e);
    let mut magic = [0u8; encryption::MAGIC.len()];
    file.read_exact(&mut magic).await.map_err(reading)?;
    if !encryption::is_encrypted(&magic) {
        return Ok(None);
    }
    let mut header = [0u8; encryption::HEADER_LEN];
    header[..magic.len()].copy_from_slice(&magic);
    file.read_exact(&mut header[magic.len()..])
        .await
        .map_err(|_| corrupt(key))?;
    Ok(Some(header))
}

/// An encrypted object that does not decrypt: changed, truncated or extended.
fn corrupt(key: &str) -> StorageError {
    StorageError::Backend(format!(
        "object {key:?} failed its integrity check: it was changed or truncated on disk"
    ))
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(
        &self,
        key: &str,
        content_type: &str,
        body: ByteStream,
    ) -> Result<u64, StorageError> {
        let (object_path, meta_path) = self.paths(key)?;
        let (data, size) = self.write_temp(body, content_type).await?;
        let meta = (!self.attributes).then(|| (TempFile::new(&self.tmp), meta_path));
        let (key, content_type) = (key.to_owned(), content_type.to_owned());
        // The rest is small blocking calls (directories, renames, syncs): one trip to
        // the blocking pool rather than one each.
        tokio::task::spawn_blocking(move || place(&key, &content_type, data, meta, &object_path))
            .await
            .map_err(|e| backend("storing an object".to_owned(), io::Error::other(e)))??;
        Ok(size)
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<ObjectRead, StorageError> {
        let (object_path, meta_path) = self.paths(key)?;
        let mut file = match File::open(&object_path).await {
            Ok(file) => file,
            Err(e) if is_missing(&e) => return Err(StorageError::NotFound),
            Err(e) => return Err(backend(format!("opening {key:?}"), e)),
        };
        // The size comes from the opened file: a put replacing the object meanwhile
        // renames a new file into place, and this one stays whole.
        let metadata = file
            .metadata()
            .await
            .map_err(|e| backend(format!("reading {key:?}"), e))?;
        if !metadata.is_file() {
            return Err(StorageError::NotFound);
        }
        let content_type = match content_type_of(&file) {
            Some(content_type) => content_type,
            None => content_type_in(&meta_path).await?,
        };
        if let Some(header) = read_header(&mut file, metadata.len(), key).await? {
            return self
                .get_encrypted(key, file, metadata.len(), &header, range, content_type)
                .await;
        }
        let size = metadata.len();
        let range = range::resolve(size, range)?;
        let len = range::range_len(&range);
        if len > 0 && *range.start() > 0 {
            file.seek(SeekFrom::Start(*range.start()))
                .await
                .map_err(|e| backend(format!("reading {key:?}"), e))?;
        } else {
            file.rewind()
                .await
                .map_err(|e| backend(format!("reading {key:?}"), e))?;
        }
        let body = ReaderStream::with_capacity(file.take(len), READ_CHUNK).boxed();
        Ok(ObjectRead {
            meta: ObjectMeta { size, content_type },
            range,
            body,
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StorageError> {
        let (object_path, meta_path) = self.paths(key)?;
        let opened = tokio::task::spawn_blocking(move || {
            let mut file = std::fs::File::open(&object_path)?;
            let metadata = file.metadata()?;
            // The first bytes say whether the object is encrypted.
            let mut prefix = [0u8; encryption::MAGIC.len()];
            let encrypted = metadata.is_file()
                && metadata.len() >= prefix.len() as u64
                && io::Read::read_exact(&mut file, &mut prefix).is_ok()
                && encryption::is_encrypted(&prefix);
            Ok::<_, io::Error>((metadata, encrypted, content_type_of(&file)))
        })
        .await
        .map_err(|e| backend(format!("reading {key:?}"), io::Error::other(e)))?;
        let (metadata, encrypted, content_type) = match opened {
            Ok((metadata, encrypted, content_type)) if metadata.is_file() => {
                (metadata, encrypted, content_type)
            }
            Ok(_) => return Err(StorageError::NotFound),
            Err(e) if is_missing(&e) => return Err(StorageError::NotFound),
            Err(e) => return Err(backend(format!("reading {key:?}"), e)),
        };
        let size = if encrypted {
            encryption::plaintext_len(metadata.len()).ok_or_else(|| corrupt(key))?
        } else {
            metadata.len()
        };
        let content_type = match content_type {
            Some(content_type) => content_type,
            None => content_type_in(&meta_path).await?,
        };
        Ok(ObjectMeta { size, content_type })
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let (object_path, meta_path) = self.paths(key)?;
        // The object first: once it is gone, a left-over content type is never read.
        for path in [object_path, meta_path] {
            match fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if is_missing(&e) || e.kind() == io::ErrorKind::IsADirectory => {}
                Err(e) => return Err(backend(format!("deleting {key:?}"), e)),
            }
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        // Walk from the deepest directory the prefix names; keys are `/`-separated.
        let start = match prefix.rfind('/') {
            Some(end) => self.objects.join(&prefix[..end]),
            None => self.objects.clone(),
        };
        let mut keys = Vec::new();
        let mut pending = vec![start];
        while let Some(dir) = pending.pop() {
            let mut entries = match fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e) if is_missing(&e) || e.kind() == io::ErrorKind::NotADirectory => continue,
                Err(e) => return Err(backend(format!("listing {}", dir.display()), e)),
            };
            while let Some(entry) = entries
                .next_entry()
                .await
                .map_err(|e| backend(format!("listing {}", dir.display()), e))?
            {
                let path = entry.path();
                let is_dir = entry
                    .file_type()
                    .await
                    .map_err(|e| backend(format!("listing {}", path.display()), e))?
                    .is_dir();
                if is_dir {
                    pending.push(path);
                } else if let Some(key) = path
                    .strip_prefix(&self.objects)
                    .ok()
                    .and_then(Path::to_str)
                    .filter(|key| key.starts_with(prefix))
                {
                    keys.push(key.to_owned());
                }
            }
        }
        keys.sort_unstable();
        Ok(keys)
    }

    async fn presigned_get(
        &self,
        key: &str,
        _ttl: Duration,
        _download_name: Option<&str>,
    ) -> Result<Option<String>, StorageError> {
        validate_key(key)?;
        Ok(None)
    }
}

/// Puts an object whose bytes are in `data` (synced) into place, with its content type
/// written to a file first where `meta` says to (the temp file and where it goes), and
/// makes the renames durable. Blocking.
fn place(
    key: &str,
    content_type: &str,
    data: TempFile,
    meta: Option<(TempFile, PathBuf)>,
    object_path: &Path,
) -> Result<(), StorageError> {
    let storing = |e| backend(format!("storing {key:?}"), e);
    if let Some((file, _)) = &meta {
        let mut file = std::fs::File::create_new(&file.path).map_err(storing)?;
        file.write_all(content_type.as_bytes()).map_err(storing)?;
        file.sync_all().map_err(storing)?;
    }
    let dirs: Vec<PathBuf> = std::iter::once(object_path)
        .chain(meta.as_ref().map(|(_, path)| path.as_path()))
        .filter_map(Path::parent)
        .map(Path::to_path_buf)
        .collect();
    for dir in &dirs {
        std::fs::create_dir_all(dir).map_err(storing)?;
    }
    // The content type goes first: a put that fails between the two renames leaves
    // at worst a content type without an object, which nothing reads.
    if let Some((file, path)) = meta {
        file.persist(&path).map_err(storing)?;
    }
    data.persist(object_path).map_err(storing)?;
    // Make the renames durable. The object is in place already, so a failure here
    // is only reported.
    let synced = dirs
        .iter()
        .try_for_each(|dir| std::fs::File::open(dir)?.sync_all());
    if let Err(error) = synced {
        tracing::warn!(key, %error, "syncing object directories failed");
    }
    Ok(())
}

/// Labels an open file with `content_type`.
fn set_content_type(file: &impl AsFd, content_type: &str) -> io::Result<()> {
    rustix::fs::fsetxattr(
        file,
        CONTENT_TYPE_ATTRIBUTE,
        content_type.as_bytes(),
        rustix::fs::XattrFlags::empty(),
    )?;
    Ok(())
}

/// The content type an open object is labelled with; `None` when it has none (stored
/// with a content type file, or on a filesystem without attributes).
fn content_type_of(file: &impl AsFd) -> Option<String> {
    let mut value = [0u8; 1024];
    let len = rustix::fs::fgetxattr(file, CONTENT_TYPE_ATTRIBUTE, &mut value).ok()?;
    String::from_utf8(value[..len].to_vec()).ok()
}

/// The content type in the file at `meta_path`; the default when there is none.
async fn content_type_in(meta_path: &Path) -> Result<String, StorageError> {
    match fs::read_to_string(meta_path).await {
        Ok(content_type) => Ok(content_type.trim().to_owned()),
        Err(e) if is_missing(&e) => Ok(DEFAULT_CONTENT_TYPE.to_owned()),
        Err(e) => Err(backend(format!("reading {}", meta_path.display()), e)),
    }
}

/// A temp file under `tmp/`, removed when dropped unless it was persisted (renamed into
/// place): a put that fails or is dropped leaves nothing behind.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    fn new(tmp: &Path) -> Self {
        Self {
            path: tmp.join(uuid::Uuid::new_v4().simple().to_string()),
            armed: true,
        }
    }

    /// Renames the file to `to`. Blocking.
    fn persist(mut self, to: &Path) -> io::Result<()> {
        std::fs::rename(&self.path, to)?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed
            && let Err(error) = std::fs::remove_file(&self.path)
            && !is_missing(&error)
        {
            tracing::warn!(path = %self.path.display(), %error, "removing temp file failed");
        }
    }
}

/// Whether an I/O error says the path is not there (or a parent of it is a file).
fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn backend(context: String, e: io::Error) -> StorageError {
    StorageError::Backend(format!("{context}: {e}"))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn body(bytes: &'static [u8]) -> ByteStream {
        futures::stream::once(async move { Ok(Bytes::from_static(bytes)) }).boxed()
    }

    /// Where the filesystem keeps no attributes, content types are kept in files.
    #[tokio::test]
    async fn without_attributes_content_types_are_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalStore {
            attributes: false,
            ..LocalStore::new(dir.path().to_owned()).expect("open")
        };
        store
            .put("a/b.png", "image/png", body(b"png"))
            .await
            .expect("put");
        let meta = dir.path().join("meta/a/b.png");
        assert_eq!(
            std::fs::read(&meta).expect("the content type's file"),
            b"image/png"
        );
        let object = std::fs::File::open(dir.path().join("objects/a/b.png")).expect("object");
        assert_eq!(content_type_of(&object), None, "no attribute");
        assert_eq!(
            store.head("a/b.png").await.expect("head").content_type,
            "image/png"
        );
        let read = store.get("a/b.png", None).await.expect("get");
        assert_eq!(read.meta.content_type, "image/png");
        store.delete("a/b.png").await.expect("delete");
        assert!(
            !meta.exists(),
            "the content type's file goes with the object"
        );
    }
}
