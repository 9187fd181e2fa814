//! Object storage behind one trait, [`ObjectStore`], with two backends: S3 (any
//! S3-compatible store, through `aws-sdk-s3`) and a local directory (the embedded
//! default). Only the image service touches object keys.
//!
//! Keys are the same for every backend: relative paths of `[A-Za-z0-9._-]` segments
//! joined by `/` (see [`validate_key`]), so a caller that works on one backend works on
//! the other.

use std::{io, ops::RangeInclusive, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, stream::BoxStream};

pub mod encryption;
mod key;
pub mod local;
mod range;
pub mod s3;

pub use encryption::EncryptionKey;
pub use key::{MAX_KEY_LEN, validate_key};
pub use local::LocalStore;
pub use s3::{S3Config, S3Store};

/// A `Content-Disposition` value naming a file (RFC 6266): `kind` (`inline` or
/// `attachment`), an ASCII `filename` for old clients (letters, digits and `.-_`,
/// anything else as `_`) and the exact name as `filename*` (UTF-8, percent-encoded).
pub fn content_disposition(kind: &str, name: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    let ascii: String = name
        .chars()
        .map(|c| if plain(c) { c } else { '_' })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if plain(char::from(b)) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// The content type reported for an object the store has none for.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// A stream of bytes going into or coming out of the store.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// What can go wrong talking to a store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No object under that key.
    #[error("object not found")]
    NotFound,
    /// The range asks for nothing inside the object (it starts at or past the end, ends
    /// before it starts, or the object is empty).
    #[error("requested range is not satisfiable")]
    InvalidRange,
    /// The key is not a relative path of `[A-Za-z0-9._-]` segments (see [`validate_key`]).
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    /// The body stream failed (e.g. the client went away); nothing was stored.
    #[error("body stream failed: {0}")]
    Body(io::Error),
    /// The backend failed or is misconfigured (I/O error, S3 error, bad settings).
    #[error("storage backend error: {0}")]
    Backend(String),
}

/// What a stored object is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's whole size in bytes.
    pub size: u64,
    /// The content type given to [`ObjectStore::put`].
    pub content_type: String,
}

/// An object being read, whole or a byte range of it.
pub struct ObjectRead {
    /// The whole object's size and content type.
    pub meta: ObjectMeta,
    /// The inclusive byte range `body` carries (`0..=size-1` when whole). For an empty
    /// object read whole it is the empty range `1..=0`: use [`ObjectRead::len`] rather
    /// than `end - start + 1`.
    pub range: RangeInclusive<u64>,
    /// The bytes of `range`, streamed.
    pub body: ByteStream,
}

impl ObjectRead {
    /// How many bytes `body` carries (the `Content-Length` of the answer).
    pub fn len(&self) -> u64 {
        range::range_len(&self.range)
    }

    /// Whether `body` carries no bytes (only an empty object read whole).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this is a part of the object rather than all of it (answer `206` with
    /// `Content-Range: bytes start-end/size` rather than `200`).
    pub fn is_partial(&self) -> bool {
        self.len() != self.meta.size
    }
}

impl std::fmt::Debug for ObjectRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectRead")
            .field("meta", &self.meta)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// A byte range as HTTP `Range` asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=start-end` (inclusive), or `bytes=start-` when `end` is `None`.
    From { start: u64, end: Option<u64> },
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
}

/// An object store: [`LocalStore`] or [`S3Store`].
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Streams `body` into `key`, replacing any object there. The object appears
    /// only once the whole body is stored: when the body fails or the future is
    /// dropped, nothing is left behind (on S3 the multipart upload is aborted).
    /// Memory stays bounded whatever the size. Returns the stored size.
    async fn put(
        &self,
        key: &str,
        content_type: &str,
        body: ByteStream,
    ) -> Result<u64, StorageError>;

    /// Like [`ObjectStore::put`], for a body of exactly `len` bytes, known before the
    /// first one arrives: a body of another length fails with [`StorageError::Body`] and
    /// leaves nothing behind. On S3 the body streams through one PutObject (up to
    /// [`s3::MAX_SINGLE_PUT`]) instead of a multipart upload: nothing is held in memory
    /// and the object costs no completion step (which some stores, s3s-fs among them,
    /// pay by copying every part once more).
    async fn put_exact(
        &self,
        key: &str,
        content_type: &str,
        len: u64,
        body: ByteStream,
    ) -> Result<u64, StorageError> {
        self.put(key, content_type, exact_length(body, len)).await
    }

    /// Reads `key`, or the part of it `range` asks for.
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<ObjectRead, StorageError>;

    /// The size and content type of `key`.
    async fn head(&self, key: &str) -> Result<ObjectMeta, StorageError>;

    /// Deletes `key`; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;

    /// The keys that start with `prefix`, sorted; for audits and tests (every key
    /// is listed, so keep prefixes narrow).
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError>;

    /// A URL anyone can GET `key` from until `ttl` has passed, when the backend
    /// signs URLs itself (S3 presigned GET); with `download_name`, the answer names
    /// the file so (`Content-Disposition`). `None` for the local backend, whose URLs
    /// the image service signs and the gateway serves.
    async fn presigned_get(
        &self,
        key: &str,
        ttl: Duration,
        download_name: Option<&str>,
    ) -> Result<Option<String>, StorageError>;
}

/// `body`, failing as soon as it carries more than `len` bytes, or when it ends with
/// fewer.
pub fn exact_length(body: ByteStream, len: u64) -> ByteStream {
    let mut seen = 0u64;
    let mut done = false;
    body.map(Some)
        .chain(futures::stream::once(async { None }))
        .filter_map(move |item| {
            let out = match item {
                _ if done => None,
                Some(Ok(chunk)) => {
                    seen += chunk.len() as u64;
                    if seen > len {
                        done = true;
                        Some(Err(length_mismatch(len, "more")))
                    } else {
                        Some(Ok(chunk))
                    }
                }
                Some(Err(e)) => {
                    done = true;
                    Some(Err(e))
                }
                None if seen < len => Some(Err(length_mismatch(len, "fewer"))),
                None => None,
            };
            futures::future::ready(out)
        })
        .boxed()
}

fn length_mismatch(len: u64, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the body carries {what} bytes than the {len} declared"),
    )
}
