//! One conformance suite, run against every backend: the local directory and S3 (the
//! `s3s-fs` server that `make test` starts through `.ci/deps.sh`).
//!
//! Each suite test is a generic async fn over a [`Fixture`]; `conformance_suite!` makes a
//! `#[tokio::test]` of it per backend (`local::name`, `s3::name`). Every S3 test gets a
//! bucket of its own. The S3 server is never optional: when it does not answer, the S3
//! tests fail and say how to start it.
//!
//! | variable | default |
//! |---|---|
//! | `TEST_S3_ENDPOINT` | `http://127.0.0.1:9000` |
//! | `TEST_S3_ACCESS_KEY` | `atelier-test` |
//! | `TEST_S3_SECRET_KEY` | `atelier-test-secret` |
//! | `TEST_S3_FS_ROOT` | `/tmp/atelier-s3`: s3s-fs's data directory, read to find multipart uploads in flight, since s3s-fs does not implement ListMultipartUploads |

use std::{io, sync::Arc, task::Poll, time::Duration};

use atelier_storage::{
    ByteRange, ByteStream, EncryptionKey, LocalStore, ObjectMeta, ObjectRead, ObjectStore,
    S3Config, S3Store, StorageError, s3::MIN_PART_SIZE,
};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::sync::oneshot;

const MIB: usize = 1024 * 1024;
/// The part size of the S3 store under test: the smallest S3 allows, so multipart uploads
/// take little data.
const PART_SIZE: usize = MIN_PART_SIZE;
/// How long to wait for something that should happen at once (an abort landing).
const SETTLE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Backends under test

/// A store under test, with what is needed to look behind it.
struct Fixture {
    store: Arc<dyn ObjectStore>,
    backend: Backend,
}

enum Backend {
    Local { dir: TempDir },
    S3 { store: S3Store },
}

impl Fixture {
    fn local() -> Self {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let store = LocalStore::new(dir.path().join("store")).expect("opening the local store");
        Self {
            store: Arc::new(store),
            backend: Backend::Local { dir },
        }
    }

    /// The local store, encrypting its objects.
    fn local_encrypted() -> Self {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let store = LocalStore::new(dir.path().join("store"))
            .expect("opening the local store")
            .encrypted(test_key(1));
        Self {
            store: Arc::new(store),
            backend: Backend::Local { dir },
        }
    }

    async fn s3() -> Self {
        let store = S3Store::new(s3_config())
            .await
            .expect("building the S3 store");
        if let Err(e) = store.create_bucket_if_missing().await {
            panic!(
                "the S3 test server at {} does not answer or refuses us ({e}): run `make test`, \
                 which starts s3s-fs through .ci/deps.sh, or start it as .ci/deps.sh does \
                 (and set TEST_S3_ENDPOINT, TEST_S3_ACCESS_KEY, TEST_S3_SECRET_KEY if it is \
                 elsewhere)",
                s3_endpoint()
            );
        }
        Self {
            store: Arc::new(store.clone()),
            backend: Backend::S3 { store },
        }
    }

    fn store(&self) -> &dyn ObjectStore {
        self.store.as_ref()
    }

    /// The uploads the backend holds that are not objects (yet): temp files for the local
    /// store, in-progress multipart uploads for S3.
    async fn uploads_in_flight(&self) -> Vec<String> {
        match &self.backend {
            Backend::Local { dir } => std::fs::read_dir(dir.path().join("store").join("tmp"))
                .expect("listing the temp dir")
                .map(|entry| {
                    entry
                        .expect("reading the temp dir")
                        .file_name()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect(),
            Backend::S3 { store } => {
                let listed = store
                    .client()
                    .list_multipart_uploads()
                    .bucket(store.bucket())
                    .send()
                    .await;
                match listed {
                    Ok(listed) => listed
                        .uploads()
                        .iter()
                        .map(|upload| format!("{:?} {:?}", upload.key(), upload.upload_id()))
                        .collect(),
                    Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 501) => {
                        s3s_fs_uploads(store.bucket())
                    }
                    Err(e) => panic!("listing multipart uploads: {e:?}"),
                }
            }
        }
    }

    /// Waits (boundedly) until no upload is in flight, and says what is left otherwise.
    async fn settled_uploads(&self) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let uploads = self.uploads_in_flight().await;
            if uploads.is_empty() || tokio::time::Instant::now() > deadline {
                return uploads;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many parts S3 stored `key` in (`None` for the local store, or when the server
    /// does not say).
    async fn parts_count(&self, key: &str) -> Option<i32> {
        let Backend::S3 { store } = &self.backend else {
            return None;
        };
        let head = store
            .client()
            .head_object()
            .bucket(store.bucket())
            .key(key)
            .part_number(1)
            .send()
            .await
            .ok()?;
        head.parts_count().or_else(|| {
            // A multipart object's ETag is "<md5 of the parts' md5s>-<parts>".
            head.e_tag()?
                .trim_matches('"')
                .rsplit_once('-')?
                .1
                .parse()
                .ok()
        })
    }

    async fn cleanup(self) {
        let left = self.uploads_in_flight().await;
        assert!(
            left.is_empty(),
            "uploads left in flight at the end of the test: {left:?}"
        );
        let Backend::S3 { store } = &self.backend else {
            return;
        };
        let (client, bucket) = (store.client(), store.bucket());
        let listed = client
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .expect("listing the test bucket");
        for object in listed.contents() {
            client
                .delete_object()
                .bucket(bucket)
                .key(object.key().expect("a listed object has a key"))
                .send()
                .await
                .expect("emptying the test bucket");
        }
        client
            .delete_bucket()
            .bucket(bucket)
            .send()
            .await
            .expect("deleting the test bucket");
    }
}

/// The multipart uploads in flight in `bucket`, read from s3s-fs's data directory: it
/// keeps one `.bucket-<base64 bucket>.object-<base64 key>.upload-<id>.metadata.json` file
/// per upload, from CreateMultipartUpload to Complete or Abort.
fn s3s_fs_uploads(bucket: &str) -> Vec<String> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

    let root = std::path::PathBuf::from(env_or("TEST_S3_FS_ROOT", "/tmp/atelier-s3"));
    assert!(
        root.join(bucket).is_dir(),
        "the S3 server does not implement ListMultipartUploads (s3s-fs), and {} is not its \
         data directory (no {bucket}/ in it): set TEST_S3_FS_ROOT to the directory s3s-fs serves",
        root.display()
    );
    let prefix = format!(".bucket-{}.object-", URL_SAFE_NO_PAD.encode(bucket));
    std::fs::read_dir(&root)
        .expect("listing the s3s-fs data directory")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            (name.starts_with(&prefix)
                && name.contains(".upload-")
                && name.ends_with(".metadata.json"))
            .then_some(name)
        })
        .collect()
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn s3_endpoint() -> String {
    env_or("TEST_S3_ENDPOINT", "http://127.0.0.1:9000")
}

fn s3_config() -> S3Config {
    let mut config = S3Config::new(format!("atelier-test-{}", uuid::Uuid::new_v4().simple()));
    config.endpoint = Some(s3_endpoint());
    config.force_path_style = true;
    config.access_key_id = Some(env_or("TEST_S3_ACCESS_KEY", "atelier-test"));
    config.secret_access_key = Some(env_or("TEST_S3_SECRET_KEY", "atelier-test-secret"));
    config.part_size = PART_SIZE;
    config
}

/// Makes a `#[tokio::test]` per backend of each suite fn.
macro_rules! conformance_suite {
    ($($test:ident),+ $(,)?) => {
        mod local {
            $(
                #[tokio::test]
                async fn $test() {
                    let fixture = super::Fixture::local();
                    super::$test(&fixture).await;
                    fixture.cleanup().await;
                }
            )+
        }

        mod local_encrypted {
            $(
                #[tokio::test]
                async fn $test() {
                    let fixture = super::Fixture::local_encrypted();
                    super::$test(&fixture).await;
                    fixture.cleanup().await;
                }
            )+
        }

        mod s3 {
            $(
                #[tokio::test]
                async fn $test() {
                    let fixture = super::Fixture::s3().await;
                    super::$test(&fixture).await;
                    fixture.cleanup().await;
                }
            )+
        }
    };
}

conformance_suite!(
    listing,
    round_trip,
    empty_object,
    ranges,
    missing_key,
    put_replaces,
    failed_body_leaves_nothing,
    failed_body_keeps_the_old_object,
    dropped_put_leaves_nothing,
    large_object,
    invalid_keys,
    keys_that_look_internal,
    exact_puts_store_the_body,
    exact_puts_refuse_another_length,
    exact_puts_that_fail_leave_nothing,
);

// ---------------------------------------------------------------------------------------
// Helpers

/// A 32-byte key that differs with `seed`.
fn test_key(seed: u64) -> EncryptionKey {
    EncryptionKey::from_bytes(&data(32, seed + 1000)).expect("a test key")
}

/// `len` bytes that differ from one test object to the next (xorshift).
fn data(len: usize, seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// `data` as a stream of `chunk`-byte chunks.
fn chunks(data: &Bytes, chunk: usize) -> Vec<io::Result<Bytes>> {
    (0..data.len())
        .step_by(chunk.max(1))
        .map(|start| Ok(data.slice(start..(start + chunk).min(data.len()))))
        .collect()
}

fn body(data: &Bytes, chunk: usize) -> ByteStream {
    futures::stream::iter(chunks(data, chunk)).boxed()
}

/// `len` bytes, then an error (the client went away).
fn failing_body(len: usize) -> ByteStream {
    let mut items = chunks(&data(len, 7), 64 * 1024);
    items.push(Err(io::Error::new(
        io::ErrorKind::ConnectionReset,
        "client went away",
    )));
    futures::stream::iter(items).boxed()
}

/// `len` bytes, then a signal on the receiver, then `tail` bytes, then nothing more, ever.
fn stalling_body(len: usize, tail: usize) -> (ByteStream, oneshot::Receiver<()>) {
    let (reached, signal) = oneshot::channel();
    let mut reached = Some(reached);
    let body = futures::stream::iter(chunks(&data(len, 11), 64 * 1024))
        .chain(futures::stream::poll_fn(move |_| {
            if let Some(reached) = reached.take() {
                let _ = reached.send(());
            }
            Poll::Ready(None)
        }))
        .chain(futures::stream::iter(chunks(&data(tail, 12), 64 * 1024)))
        .chain(futures::stream::pending())
        .boxed();
    (body, signal)
}

async fn read_all(read: ObjectRead) -> Vec<u8> {
    let expected = read.len();
    let bytes: Vec<Bytes> = read.body.try_collect().await.expect("reading the body");
    let bytes = bytes.concat();
    assert_eq!(
        bytes.len() as u64,
        expected,
        "body length and range disagree"
    );
    bytes
}

async fn get(fixture: &Fixture, key: &str, range: Option<ByteRange>) -> (ObjectRead, Vec<u8>) {
    let read = fixture
        .store()
        .get(key, range)
        .await
        .unwrap_or_else(|e| panic!("get {key:?} {range:?}: {e}"));
    let meta = read.meta.clone();
    let range = read.range.clone();
    let bytes = read_all(read).await;
    let read = ObjectRead {
        meta,
        range,
        body: futures::stream::empty().boxed(),
    };
    (read, bytes)
}

fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StorageError>) {
    assert!(
        matches!(result, Err(StorageError::NotFound)),
        "expected NotFound, got {result:?}"
    );
}

#[track_caller]
fn assert_invalid_range<T: std::fmt::Debug>(result: Result<T, StorageError>) {
    assert!(
        matches!(result, Err(StorageError::InvalidRange)),
        "expected InvalidRange, got {result:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The suite

async fn listing(fixture: &Fixture) {
    let store = fixture.store();
    for key in [
        "images/u1/a/original",
        "images/u1/a/thumbnail",
        "images/u1/b/original",
        "images/u2/c/original",
        "images/u10/d/original",
    ] {
        store
            .put(key, "image/png", body(&data(10, 3), 4))
            .await
            .expect("put");
    }
    assert_eq!(
        store.list("images/u1/").await.expect("list"),
        [
            "images/u1/a/original",
            "images/u1/a/thumbnail",
            "images/u1/b/original"
        ]
    );
    assert_eq!(
        store.list("images/u1").await.expect("list").len(),
        4,
        "a bare prefix also matches u10"
    );
    assert!(store.list("images/u3/").await.expect("list").is_empty());
    store.delete("images/u1/a/original").await.expect("delete");
    assert_eq!(
        store.list("images/u1/a/").await.expect("list"),
        ["images/u1/a/thumbnail"]
    );
}

async fn round_trip(fixture: &Fixture) {
    let store = fixture.store();
    let key = "users/42/images/photo.png";
    let bytes = data(100_000, 1);
    let size = store
        .put(key, "image/png", body(&bytes, 7_000))
        .await
        .expect("put");
    assert_eq!(size, 100_000);
    let meta = ObjectMeta {
        size: 100_000,
        content_type: "image/png".to_owned(),
    };
    assert_eq!(store.head(key).await.expect("head"), meta);

    let (read, got) = get(fixture, key, None).await;
    assert_eq!(read.meta, meta);
    assert_eq!(read.range, 0..=99_999);
    assert!(!read.is_partial());
    assert!(got == bytes, "the bytes read back differ");

    store.delete(key).await.expect("delete");
    assert_not_found(store.head(key).await);
    assert_not_found(store.get(key, None).await.map(|r| r.meta));
    store.delete(key).await.expect("deleting twice");
    assert!(fixture.settled_uploads().await.is_empty());
}

async fn empty_object(fixture: &Fixture) {
    let store = fixture.store();
    let size = store
        .put("empty", "text/plain", futures::stream::empty().boxed())
        .await
        .expect("put");
    assert_eq!(size, 0);
    assert_eq!(
        store.head("empty").await.expect("head"),
        ObjectMeta {
            size: 0,
            content_type: "text/plain".to_owned()
        }
    );
    let (read, got) = get(fixture, "empty", None).await;
    assert!(got.is_empty());
    assert!(read.is_empty() && read.range.is_empty() && !read.is_partial());
    assert_invalid_range(
        store
            .get("empty", Some(ByteRange::Suffix(1)))
            .await
            .map(|r| r.meta),
    );
    assert_invalid_range(
        store
            .get(
                "empty",
                Some(ByteRange::From {
                    start: 0,
                    end: None,
                }),
            )
            .await
            .map(|r| r.meta),
    );
}

async fn ranges(fixture: &Fixture) {
    let store = fixture.store();
    let bytes = data(1000, 2);
    store
        .put("r", "application/octet-stream", body(&bytes, 100))
        .await
        .expect("put");
    let from = |start, end| Some(ByteRange::From { start, end });
    for (range, expected) in [
        (from(10, Some(19)), 10..=19u64),
        (from(0, Some(0)), 0..=0),
        (from(990, None), 990..=999),
        (from(0, None), 0..=999),
        (from(999, None), 999..=999),
        (from(995, Some(5000)), 995..=999),
        (Some(ByteRange::Suffix(10)), 990..=999),
        (Some(ByteRange::Suffix(1)), 999..=999),
        (Some(ByteRange::Suffix(5000)), 0..=999),
    ] {
        let (read, got) = get(fixture, "r", range).await;
        assert_eq!(read.range, expected, "{range:?}");
        assert_eq!(read.meta.size, 1000, "{range:?}");
        let (start, end) = (*expected.start() as usize, *expected.end() as usize);
        assert!(got == bytes[start..=end], "{range:?}: wrong bytes");
    }
    for range in [
        from(1000, None),
        from(1000, Some(1000)),
        from(2000, Some(3000)),
        from(5, Some(4)),
        Some(ByteRange::Suffix(0)),
    ] {
        let result = store.get("r", range).await.map(|r| r.meta);
        assert!(
            matches!(result, Err(StorageError::InvalidRange)),
            "{range:?}: expected InvalidRange, got {result:?}"
        );
    }
    assert_not_found(store.get("nope", from(0, Some(1))).await.map(|r| r.meta));
}

async fn missing_key(fixture: &Fixture) {
    let store = fixture.store();
    assert_not_found(store.head("never/stored").await);
    assert_not_found(store.get("never/stored", None).await.map(|r| r.meta));
    store
        .delete("never/stored")
        .await
        .expect("deleting a missing object");
    // A key below an existing object.
    store
        .put("a/b", "text/plain", body(&data(3, 3), 3))
        .await
        .expect("put");
    assert_not_found(store.head("a/b/c").await);
    assert_not_found(store.get("a/b/c", None).await.map(|r| r.meta));
    store
        .delete("a/b/c")
        .await
        .expect("deleting below an object");
    assert!(store.head("a/b").await.is_ok(), "a/b must survive");
}

async fn put_replaces(fixture: &Fixture) {
    let store = fixture.store();
    let first = data(5000, 4);
    let second = data(300, 5);
    store
        .put("k", "image/png", body(&first, 1000))
        .await
        .expect("first put");
    store
        .put("k", "image/jpeg", body(&second, 1000))
        .await
        .expect("second put");
    assert_eq!(
        store.head("k").await.expect("head"),
        ObjectMeta {
            size: 300,
            content_type: "image/jpeg".to_owned()
        }
    );
    let (read, got) = get(fixture, "k", None).await;
    assert_eq!(read.meta.content_type, "image/jpeg");
    assert!(got == second);
}

async fn failed_body_leaves_nothing(fixture: &Fixture) {
    let store = fixture.store();
    // Within the first part, and past it (a multipart upload on S3).
    for (key, len) in [("small", 1000), ("large", PART_SIZE + MIB)] {
        let result = store.put(key, "image/png", failing_body(len)).await;
        assert!(
            matches!(&result, Err(StorageError::Body(e)) if e.kind() == io::ErrorKind::ConnectionReset),
            "{key}: expected a body error, got {result:?}"
        );
        assert_not_found(store.head(key).await);
        let left = fixture.settled_uploads().await;
        assert!(left.is_empty(), "{key}: uploads left behind: {left:?}");
    }
}

async fn failed_body_keeps_the_old_object(fixture: &Fixture) {
    let store = fixture.store();
    let old = data(2000, 6);
    store
        .put("keep", "image/webp", body(&old, 500))
        .await
        .expect("put");
    for len in [10, PART_SIZE + MIB] {
        let result = store.put("keep", "image/png", failing_body(len)).await;
        assert!(matches!(result, Err(StorageError::Body(_))), "{result:?}");
        let (read, got) = get(fixture, "keep", None).await;
        assert_eq!(read.meta.content_type, "image/webp");
        assert!(got == old, "the old object changed");
    }
    assert!(fixture.settled_uploads().await.is_empty());
}

async fn dropped_put_leaves_nothing(fixture: &Fixture) {
    // Stalled while filling the second part (on S3: a multipart upload going, one part
    // uploaded), and right when the put sees there is more than one part (on S3: while
    // the multipart upload is being created).
    for (len, tail, when) in [
        (PART_SIZE + MIB, 0, "after the first part"),
        (PART_SIZE, 1000, "while starting a multipart upload"),
    ] {
        let store = Arc::clone(&fixture.store);
        let (body, stalled) = stalling_body(len, tail);
        let put = tokio::spawn(async move { store.put("dropped", "image/png", body).await });
        tokio::time::timeout(SETTLE, stalled)
            .await
            .unwrap_or_else(|_| panic!("{when}: the body was never read that far"))
            .expect("the body signals");
        if tail == 0 {
            assert!(
                !fixture.uploads_in_flight().await.is_empty(),
                "{when}: the upload should be in flight"
            );
        }
        // Dropping the put future, as a client that goes away does.
        put.abort();
        let joined = put.await;
        assert!(
            joined.as_ref().is_err_and(|e| e.is_cancelled()),
            "{when}: the put must stall until dropped, got {joined:?}"
        );
        let left = fixture.settled_uploads().await;
        assert!(left.is_empty(), "{when}: uploads left behind: {left:?}");
        assert_not_found(fixture.store().head("dropped").await);
    }

    // Dropped by a timeout before the first part is full.
    let (body, _stalled) = stalling_body(1000, 0);
    let result = tokio::time::timeout(
        Duration::from_millis(300),
        fixture.store().put("dropped", "image/png", body),
    )
    .await;
    assert!(result.is_err(), "the put must time out");
    assert!(fixture.settled_uploads().await.is_empty());
    assert_not_found(fixture.store().head("dropped").await);
}

async fn large_object(fixture: &Fixture) {
    let store = fixture.store();
    // 20 MiB and a bit, in chunks that straddle the part boundaries.
    let bytes = data(20 * MIB + 123, 8);
    let size = store
        .put("big/object.tiff", "image/tiff", body(&bytes, MIB + 17))
        .await
        .expect("put");
    assert_eq!(size, bytes.len() as u64);
    assert_eq!(
        store.head("big/object.tiff").await.expect("head").size,
        bytes.len() as u64
    );
    if let Backend::S3 { .. } = fixture.backend {
        // 20 MiB + 123 bytes in 5 MiB parts.
        assert_eq!(fixture.parts_count("big/object.tiff").await, Some(5));
    }

    let (read, got) = get(fixture, "big/object.tiff", None).await;
    assert_eq!(read.meta.content_type, "image/tiff");
    assert_eq!(got.len(), bytes.len());
    assert_eq!(sha256(&got), sha256(&bytes));

    // A range across the first part boundary.
    let start = (PART_SIZE - 10) as u64;
    let (read, got) = get(
        fixture,
        "big/object.tiff",
        Some(ByteRange::From {
            start,
            end: Some(start + 19),
        }),
    )
    .await;
    assert_eq!(read.range, start..=start + 19);
    assert!(read.is_partial());
    assert!(got == bytes[PART_SIZE - 10..PART_SIZE + 10]);
    assert!(fixture.settled_uploads().await.is_empty());
}

async fn exact_puts_store_the_body(fixture: &Fixture) {
    let store = fixture.store();
    // Within a part and over several (a single streamed PutObject on S3 either way).
    for (key, len) in [("exact/small", 1000), ("exact/large", 2 * PART_SIZE + 123)] {
        let bytes = data(len, 21);
        let size = store
            .put_exact(key, "image/png", len as u64, body(&bytes, 64 * 1024 + 3))
            .await
            .expect("put");
        assert_eq!(size, len as u64);
        let (read, got) = get(fixture, key, None).await;
        assert_eq!(read.meta.content_type, "image/png");
        assert!(got == bytes, "{key}: stored as sent");
        if let Backend::S3 { store } = &fixture.backend {
            // One PutObject: its ETag is the body's MD5, not a multipart one (`-<parts>`).
            let head = store
                .client()
                .head_object()
                .bucket(store.bucket())
                .key(key)
                .send()
                .await
                .expect("head");
            let etag = head.e_tag().unwrap_or_default();
            assert!(!etag.contains('-'), "{key}: a multipart ETag {etag}");
        }
    }
    // A body that pauses before its end (its caller deciding whether it wants the
    // object) longer than clients give up on stalled uploads by default (5 s).
    let bytes = data(3000, 24);
    let tail = bytes.slice(2000..);
    let paused = futures::stream::iter(chunks(&bytes.slice(..2000), 500))
        .chain(futures::stream::once(async move {
            tokio::time::sleep(Duration::from_secs(6)).await;
            Ok(tail)
        }))
        .boxed();
    store
        .put_exact("exact/paused", "image/png", 3000, paused)
        .await
        .expect("a paused body is stored");
    assert!(get(fixture, "exact/paused", None).await.1 == bytes);
    let empty = store
        .put_exact("exact/empty", "image/png", 0, body(&Bytes::new(), 1))
        .await
        .expect("put");
    assert_eq!(empty, 0);
    assert_eq!(store.head("exact/empty").await.expect("head").size, 0);
    assert!(fixture.settled_uploads().await.is_empty());
}

async fn exact_puts_refuse_another_length(fixture: &Fixture) {
    let store = fixture.store();
    let old = data(500, 22);
    store
        .put("exact", "image/webp", body(&old, 100))
        .await
        .expect("put");
    for (declared, sent) in [
        (1000, 999),
        (1000, 1001),
        (1000, 0),
        (PART_SIZE as u64 + 10, PART_SIZE + 9),
        (PART_SIZE as u64, 2 * PART_SIZE),
    ] {
        let result = store
            .put_exact("exact", "image/png", declared, body(&data(sent, 23), 4096))
            .await;
        assert!(
            matches!(&result, Err(StorageError::Body(e)) if e.kind() == io::ErrorKind::InvalidData),
            "{declared} declared, {sent} sent: {result:?}"
        );
        let (read, got) = get(fixture, "exact", None).await;
        assert_eq!(read.meta.content_type, "image/webp");
        assert!(
            got == old,
            "{declared} declared, {sent} sent: the old object changed"
        );
    }
    assert!(fixture.settled_uploads().await.is_empty());
}

async fn exact_puts_that_fail_leave_nothing(fixture: &Fixture) {
    let declared = 2 * PART_SIZE as u64;
    let result = fixture
        .store()
        .put_exact("failed", "image/png", declared, failing_body(PART_SIZE))
        .await;
    assert!(
        matches!(&result, Err(StorageError::Body(e)) if e.kind() == io::ErrorKind::ConnectionReset),
        "expected the body's error, got {result:?}"
    );
    assert_not_found(fixture.store().head("failed").await);

    // Dropped midway, as a client that goes away does.
    let store = Arc::clone(&fixture.store);
    let (body, stalled) = stalling_body(PART_SIZE, 0);
    let put = tokio::spawn(async move {
        store
            .put_exact("dropped", "image/png", declared, body)
            .await
    });
    tokio::time::timeout(SETTLE, stalled)
        .await
        .expect("the body was never read that far")
        .expect("the body signals");
    put.abort();
    let joined = put.await;
    assert!(
        joined.as_ref().is_err_and(|e| e.is_cancelled()),
        "the put must stall until dropped, got {joined:?}"
    );
    assert_not_found(fixture.store().head("dropped").await);

    // Every byte sent, but the body not ended: the object must not appear before it
    // ends (a caller decides late whether it wants it), and dropped, never does.
    for len in [1000, PART_SIZE + 10] {
        let (body, stalled) = stalling_body(len, 0);
        let put = fixture
            .store()
            .put_exact("unfinished", "image/png", len as u64, body);
        let waited = tokio::time::timeout(Duration::from_millis(500), async {
            tokio::join!(put, async {
                stalled.await.expect("the body signals");
                tokio::time::sleep(Duration::from_millis(300)).await;
                assert_not_found(fixture.store().head("unfinished").await);
            })
        })
        .await;
        assert!(
            waited.is_err(),
            "{len}: the put must wait for the body's end"
        );
        assert_not_found(fixture.store().head("unfinished").await);
    }
    assert!(fixture.settled_uploads().await.is_empty());
}

async fn invalid_keys(fixture: &Fixture) {
    let store = fixture.store();
    let too_long = "a/".repeat(600) + "a";
    for key in [
        "",
        "/etc/passwd",
        "../escape",
        "a/../../escape",
        "a/./b",
        ".",
        "a//b",
        "a/",
        "a\\b",
        "C:\\x",
        "a b",
        "ünïcode",
        "a?b",
        "a%2F..",
        too_long.as_str(),
    ] {
        let invalid = |result: Result<(), StorageError>| {
            assert!(
                matches!(&result, Err(StorageError::InvalidKey(k)) if k == key),
                "{key:?}: expected InvalidKey, got {result:?}"
            );
        };
        invalid(
            store
                .put(key, "text/plain", body(&data(10, 9), 10))
                .await
                .map(drop),
        );
        invalid(store.get(key, None).await.map(drop));
        invalid(store.head(key).await.map(drop));
        invalid(store.delete(key).await);
        invalid(
            store
                .presigned_get(key, Duration::from_secs(60), None)
                .await
                .map(drop),
        );
    }
    assert!(fixture.settled_uploads().await.is_empty());
}

/// Keys whose names could clash with how a backend keeps things (a `.meta` sidecar, a
/// `.tmp` or `tmp` directory) are objects like any other.
async fn keys_that_look_internal(fixture: &Fixture) {
    let store = fixture.store();
    let keys = [
        ("x", "image/png"),
        ("x.meta", "text/plain"),
        (".tmp/y", "image/gif"),
        ("tmp/y", "image/jpeg"),
        ("meta/x", "image/avif"),
        ("objects/x", "image/bmp"),
        (".hidden..name_-", "image/webp"),
    ];
    for (i, (key, content_type)) in keys.iter().enumerate() {
        store
            .put(key, content_type, body(&data(10 + i, i as u64), 4))
            .await
            .unwrap_or_else(|e| panic!("put {key:?}: {e}"));
    }
    for (i, (key, content_type)) in keys.iter().enumerate() {
        let (read, got) = get(fixture, key, None).await;
        assert_eq!(read.meta.content_type, *content_type, "{key:?}");
        assert!(got == data(10 + i, i as u64), "{key:?}: wrong bytes");
    }
    store.delete("x").await.expect("delete");
    assert_not_found(store.head("x").await);
    assert_eq!(
        store.head("x.meta").await.expect("x.meta survives").size,
        11
    );
}

// ---------------------------------------------------------------------------------------
// What differs between backends

mod local_only {
    use super::*;

    #[tokio::test]
    async fn no_presigned_urls() {
        let fixture = Fixture::local();
        fixture
            .store()
            .put("k", "text/plain", body(&data(3, 1), 3))
            .await
            .expect("put");
        let url = fixture
            .store()
            .presigned_get("k", Duration::from_secs(60), None)
            .await
            .expect("presigned_get");
        assert_eq!(url, None);
    }

    #[tokio::test]
    async fn objects_are_plain_files_and_stale_temp_files_go() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("nested/root");
        let store = LocalStore::new(root.clone()).expect("open");
        store
            .put(
                "a/b.txt",
                "text/plain",
                body(&Bytes::from_static(b"hello"), 2),
            )
            .await
            .expect("put");
        assert_eq!(
            std::fs::read(root.join("objects/a/b.txt")).expect("the object's file"),
            b"hello"
        );

        // A crash mid-upload leaves a temp file; opening the store again removes it once
        // it is old, and leaves a fresh one (maybe another store's upload) alone.
        let old = root.join("tmp/old-upload");
        let fresh = root.join("tmp/fresh-upload");
        for path in [&old, &fresh] {
            std::fs::write(path, b"partial").expect("writing a temp file");
        }
        let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 60 * 60);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .and_then(|file| file.set_modified(two_hours_ago))
            .expect("ageing the temp file");
        LocalStore::new(root.clone()).expect("reopen");
        assert!(!old.exists(), "the stale temp file is removed");
        assert!(fresh.exists(), "a fresh temp file is left alone");
    }

    /// An object is one file, its content type an attribute of it; objects stored
    /// with a content type file beside them (before attributes were used) keep theirs.
    #[tokio::test]
    async fn an_object_is_one_file_and_older_content_type_files_still_count() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_owned();
        let store = LocalStore::new(root.clone()).expect("open");
        store
            .put("a/b.png", "image/png", body(&data(3, 1), 3))
            .await
            .expect("put");
        assert!(
            !root.join("meta/a").exists(),
            "no file or directory beside the object"
        );
        assert_eq!(
            store.head("a/b.png").await.expect("head").content_type,
            "image/png"
        );

        for (path, bytes) in [
            ("objects/old/c.webp", "webp"),
            ("meta/old/c.webp", "image/webp"),
        ] {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
            std::fs::write(path, bytes).expect("write");
        }
        assert_eq!(
            store.head("old/c.webp").await.expect("head").content_type,
            "image/webp"
        );
        let read = store.get("old/c.webp", None).await.expect("get");
        assert_eq!(read.meta.content_type, "image/webp");
        store.delete("old/c.webp").await.expect("delete");
        assert!(
            !root.join("meta/old/c.webp").exists(),
            "its content type goes too"
        );
    }

    /// s3s-fs keeps objects as files too, and answers 500 for these (S3 answers 404).
    #[tokio::test]
    async fn a_prefix_is_not_an_object() {
        let fixture = Fixture::local();
        let store = fixture.store();
        store
            .put("a/b", "text/plain", body(&data(3, 3), 3))
            .await
            .expect("put");
        assert_not_found(store.head("a").await);
        assert_not_found(store.get("a", None).await.map(|r| r.meta));
        store
            .delete("a")
            .await
            .expect("deleting a prefix is a no-op");
        assert!(store.head("a/b").await.is_ok(), "a/b must survive");
    }

    #[tokio::test]
    async fn a_key_cannot_be_both_object_and_prefix() {
        let fixture = Fixture::local();
        let store = fixture.store();
        store
            .put("a", "text/plain", body(&data(3, 1), 3))
            .await
            .expect("put");
        let result = store.put("a/b", "text/plain", body(&data(3, 1), 3)).await;
        assert!(
            matches!(result, Err(StorageError::Backend(_))),
            "{result:?}"
        );
        assert!(fixture.settled_uploads().await.is_empty());
        assert_eq!(store.head("a").await.expect("a survives").size, 3);
    }
}

mod s3_only {
    use super::*;

    async fn fetch(url: &str) -> (reqwest::StatusCode, Bytes) {
        let response = reqwest::get(url).await.expect("fetching the presigned URL");
        let status = response.status();
        (status, response.bytes().await.expect("reading the answer"))
    }

    #[tokio::test]
    async fn presigned_url_serves_the_object() {
        let fixture = Fixture::s3().await;
        let bytes = data(70_000, 1);
        fixture
            .store()
            .put("shared/photo.png", "image/png", body(&bytes, 10_000))
            .await
            .expect("put");
        let url = fixture
            .store()
            .presigned_get("shared/photo.png", Duration::from_secs(300), None)
            .await
            .expect("presigned_get")
            .expect("S3 presigns URLs");
        let response = reqwest::get(&url)
            .await
            .expect("fetching the presigned URL");
        assert_eq!(response.status(), reqwest::StatusCode::OK, "{url}");
        assert_eq!(
            response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("image/png")
        );
        assert!(response.bytes().await.expect("body") == bytes);
        fixture.cleanup().await;
    }

    #[tokio::test]
    async fn presigned_url_names_the_download() {
        let fixture = Fixture::s3().await;
        let bytes = data(5_000, 3);
        fixture
            .store()
            .put("named/result", "image/png", body(&bytes, 1_000))
            .await
            .expect("put");
        let url = fixture
            .store()
            .presigned_get(
                "named/result",
                Duration::from_secs(300),
                Some("Strandbild Süd_esrgan-upscale.png"),
            )
            .await
            .expect("presigned_get")
            .expect("S3 presigns URLs");
        let parsed = reqwest::Url::parse(&url).expect("url");
        let disposition = parsed
            .query_pairs()
            .find(|(name, _)| name == "response-content-disposition")
            .map(|(_, value)| value.into_owned());
        assert_eq!(
            disposition.as_deref(),
            Some(
                "inline; filename=\"Strandbild_S_d_esrgan-upscale.png\"; \
                 filename*=UTF-8''Strandbild%20S%C3%BCd_esrgan-upscale.png"
            )
        );
        // The name is part of what is signed: the URL still works as a whole.
        let (status, served) = fetch(&url).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{url}");
        assert!(served == bytes);
        fixture.cleanup().await;
    }

    #[tokio::test]
    async fn presigned_url_expires() {
        let fixture = Fixture::s3().await;
        let bytes = data(100, 2);
        fixture
            .store()
            .put("soon-gone", "text/plain", body(&bytes, 100))
            .await
            .expect("put");
        let url = fixture
            .store()
            .presigned_get("soon-gone", Duration::from_secs(1), None)
            .await
            .expect("presigned_get")
            .expect("S3 presigns URLs");
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let (status, answer) = fetch(&url).await;
        assert_eq!(
            status,
            reqwest::StatusCode::FORBIDDEN,
            "an expired URL must be refused: {}",
            String::from_utf8_lossy(&answer)
        );
        fixture.cleanup().await;
    }

    #[tokio::test]
    async fn presigned_url_covers_its_key_only() {
        let fixture = Fixture::s3().await;
        for key in ["mine/a.png", "mine/b.png"] {
            fixture
                .store()
                .put(key, "image/png", body(&data(100, 3), 100))
                .await
                .expect("put");
        }
        let url = fixture
            .store()
            .presigned_get("mine/a.png", Duration::from_secs(300), None)
            .await
            .expect("presigned_get")
            .expect("S3 presigns URLs");
        assert_eq!(fetch(&url).await.0, reqwest::StatusCode::OK);
        assert!(url.contains("/mine/a.png?"), "{url}");
        // Another object that exists: only the signature can refuse it.
        let altered = url.replace("/mine/a.png?", "/mine/b.png?");
        let (status, answer) = fetch(&altered).await;
        assert_eq!(
            status,
            reqwest::StatusCode::FORBIDDEN,
            "a URL for another key must be refused: {}",
            String::from_utf8_lossy(&answer)
        );
        fixture.cleanup().await;
    }
}

// ---------------------------------------------------------------------------------------
// Encryption at rest

mod local_encryption {
    use super::*;

    const SEGMENT: usize = 64 * 1024;

    fn open(root: &std::path::Path, key: Option<EncryptionKey>) -> LocalStore {
        let store = LocalStore::new(root.to_owned()).expect("open");
        match key {
            Some(key) => store.encrypted(key),
            None => store,
        }
    }

    async fn read(store: &LocalStore, key: &str, range: Option<ByteRange>) -> io::Result<Vec<u8>> {
        let read = store
            .get(key, range)
            .await
            .map_err(|err| io::Error::other(err.to_string()))?;
        let chunks: Vec<Bytes> = read.body.try_collect().await?;
        assert!(
            chunks.iter().all(|chunk| chunk.len() <= SEGMENT),
            "a read holds one segment at a time"
        );
        Ok(chunks.concat())
    }

    /// The object's file, for looking behind the store.
    fn file(root: &std::path::Path, key: &str) -> std::path::PathBuf {
        root.join("objects").join(key)
    }

    #[tokio::test]
    async fn the_disk_holds_no_plaintext_and_ranges_decrypt_only_what_they_cover() {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(dir.path(), Some(test_key(1)));
        // Three full segments and a bit, sent in chunks that straddle segment bounds.
        let bytes = data(3 * SEGMENT + 1234, 7);
        let stored = store
            .put("big", "image/png", body(&bytes, 10_000))
            .await
            .expect("put");
        assert_eq!(stored, bytes.len() as u64);
        let on_disk = std::fs::read(file(dir.path(), "big")).expect("file");
        assert!(on_disk.starts_with(b"ATELIER\x1a"));
        assert!(
            !on_disk
                .windows(32)
                .any(|window| window == &bytes[5000..5032]),
            "plaintext on disk"
        );
        assert_eq!(
            store.head("big").await.expect("head").size,
            bytes.len() as u64,
            "head reports the plaintext size"
        );
        let from = |start: usize, end: Option<usize>| {
            Some(ByteRange::From {
                start: start as u64,
                end: end.map(|end| end as u64),
            })
        };
        for (range, expected) in [
            (None, 0..=bytes.len() - 1),
            (from(0, Some(0)), 0..=0),
            (from(SEGMENT - 1, Some(SEGMENT)), SEGMENT - 1..=SEGMENT),
            (
                from(SEGMENT, Some(2 * SEGMENT - 1)),
                SEGMENT..=2 * SEGMENT - 1,
            ),
            (from(100, Some(3 * SEGMENT + 5)), 100..=3 * SEGMENT + 5),
            (from(3 * SEGMENT, None), 3 * SEGMENT..=bytes.len() - 1),
            (
                Some(ByteRange::Suffix(10)),
                bytes.len() - 10..=bytes.len() - 1,
            ),
        ] {
            let got = read(&store, "big", range).await.expect("read");
            assert!(got == bytes[expected.clone()], "{range:?}: wrong bytes");
        }
        // An object of exactly one segment, and an empty one.
        for len in [SEGMENT, 0] {
            let bytes = data(len, 3);
            store
                .put("edge", "text/plain", body(&bytes, 4096))
                .await
                .expect("put");
            assert_eq!(store.head("edge").await.expect("head").size, len as u64);
            assert!(read(&store, "edge", None).await.expect("read") == bytes);
        }
    }

    /// Stores `bytes` as `x` again; the file's bytes.
    async fn stored(store: &LocalStore, bytes: &Bytes, path: &std::path::Path) -> Vec<u8> {
        store
            .put("x", "application/octet-stream", body(bytes, 8192))
            .await
            .expect("put");
        std::fs::read(path).expect("file")
    }

    /// Asserts that reading `x` whole fails its integrity check.
    async fn fails(store: &LocalStore, what: &str) {
        let err = read(store, "x", None).await.expect_err(what);
        assert!(err.to_string().contains("integrity"), "{what}: {err}");
    }

    #[tokio::test]
    async fn tampering_truncation_and_reordering_are_detected() {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(dir.path(), Some(test_key(1)));
        let bytes = data(3 * SEGMENT + 100, 8);
        let path = file(dir.path(), "x");
        let original = || stored(&store, &bytes, &path);
        let fails = |what: &'static str| fails(&store, what);
        let header = 50;
        let sealed = SEGMENT + 16;

        // One bit changed in the second segment: a whole read fails there, a range
        // in it fails, a range elsewhere (with the last segment intact) still reads.
        let mut changed = original().await;
        changed[header + sealed + 10] ^= 1;
        std::fs::write(&path, &changed).expect("write");
        fails("a changed segment").await;
        let range = Some(ByteRange::From {
            start: SEGMENT as u64,
            end: Some(SEGMENT as u64 + 5),
        });
        assert!(read(&store, "x", range).await.is_err());
        let range = Some(ByteRange::From {
            start: 0,
            end: Some(5),
        });
        assert!(read(&store, "x", range).await.expect("untouched") == bytes[..=5]);

        // A changed header (it is every segment's associated data).
        let mut changed = original().await;
        changed[header - 1] ^= 1;
        std::fs::write(&path, &changed).expect("write");
        fails("a changed header").await;

        // Two segments swapped.
        let mut swapped = original().await;
        let (first, second) = swapped[header..].split_at_mut(sealed);
        first.swap_with_slice(&mut second[..sealed]);
        std::fs::write(&path, &swapped).expect("write");
        fails("swapped segments").await;

        // Truncated at a segment boundary (the last segment dropped), and mid-segment;
        // a range at the start fails too, since the last segment is checked.
        let whole = original().await;
        for cut in [header + 3 * sealed, whole.len() - 7] {
            std::fs::write(&path, &whole[..cut]).expect("write");
            fails("a truncated object").await;
            let range = Some(ByteRange::From {
                start: 0,
                end: Some(5),
            });
            assert!(
                read(&store, "x", range).await.is_err(),
                "truncated at {cut}"
            );
        }
        // Extended by a segment's worth.
        let mut extended = whole.clone();
        extended.extend_from_slice(&whole[header..header + sealed]);
        std::fs::write(&path, &extended).expect("write");
        fails("an extended object").await;
    }

    #[tokio::test]
    async fn the_wrong_key_or_none_is_a_clear_error_and_old_plain_objects_still_read() {
        let dir = tempfile::tempdir().expect("dir");
        // Objects from before a key was configured.
        let plain = open(dir.path(), None);
        let old = data(100_000, 4);
        plain
            .put("old", "image/jpeg", body(&old, 4096))
            .await
            .expect("put");
        let encrypted = open(dir.path(), Some(test_key(1)));
        assert_eq!(encrypted.head("old").await.expect("head").size, 100_000);
        assert!(read(&encrypted, "old", None).await.expect("old object") == old);
        let range = Some(ByteRange::From {
            start: 70_000,
            end: Some(70_099),
        });
        assert!(read(&encrypted, "old", range).await.expect("range") == old[70_000..70_100]);

        let new = data(10, 5);
        encrypted
            .put("new", "text/plain", body(&new, 10))
            .await
            .expect("put");
        let key = test_key(1);
        let wrong = open(dir.path(), Some(test_key(2)));
        let err = wrong
            .get("new", None)
            .await
            .map(|read| read.meta)
            .expect_err("wrong key");
        let message = err.to_string();
        assert!(message.contains("another key"), "{message}");
        assert!(
            message.contains(&key.id()) && message.contains(&test_key(2).id()),
            "{message}"
        );
        let err = plain
            .get("new", None)
            .await
            .map(|read| read.meta)
            .expect_err("no key");
        assert!(
            err.to_string().contains("STORAGE_ENCRYPTION_KEY_FILE"),
            "{err}"
        );
    }

    #[test]
    fn bad_key_files_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("key");
        std::fs::write(&path, "not a key").expect("write");
        let err = EncryptionKey::from_file(&path).expect_err("bad key");
        assert!(err.to_string().contains("32 random bytes"), "{err}");
        assert!(err.to_string().contains("key"), "{err}");
        let err = EncryptionKey::from_file(&dir.path().join("missing")).expect_err("missing");
        assert!(err.to_string().contains("cannot read"), "{err}");
    }
}

// ---------------------------------------------------------------------------------------
// Server-side encryption on S3, as sent on the wire

mod s3_encryption {
    use std::{
        net::SocketAddr,
        sync::{Arc, Mutex},
    };

    use http_body_util::BodyExt as _;
    use hyper::{Request, body::Incoming, header::HeaderMap, service::service_fn};
    use hyper_util::{
        client::legacy::{Client, connect::HttpConnector},
        rt::{TokioExecutor, TokioIo},
    };

    use super::*;

    /// One request as the S3 server received it.
    #[derive(Clone, Debug)]
    struct Seen {
        method: String,
        path: String,
        query: String,
        headers: HeaderMap,
    }

    /// A proxy in front of the S3 test server that records every request it passes
    /// on (headers untouched, so signatures still hold).
    async fn recording_proxy(upstream: String) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let client: Client<HttpConnector, Incoming> =
            Client::builder(TokioExecutor::new()).build_http();
        let recorded = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (client, recorded, upstream) =
                    (client.clone(), recorded.clone(), upstream.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |mut request: Request<Incoming>| {
                        let (client, recorded) = (client.clone(), recorded.clone());
                        recorded.lock().expect("lock").push(Seen {
                            method: request.method().to_string(),
                            path: request.uri().path().to_owned(),
                            query: request.uri().query().unwrap_or_default().to_owned(),
                            headers: request.headers().clone(),
                        });
                        let target = format!(
                            "{upstream}{}",
                            request
                                .uri()
                                .path_and_query()
                                .map(|pq| pq.as_str())
                                .unwrap_or("/")
                        );
                        *request.uri_mut() = target.parse().expect("upstream uri");
                        async move {
                            let response = client.request(request).await?;
                            Ok::<_, hyper_util::client::legacy::Error>(
                                response.map(|body| body.boxed()),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        (addr, seen)
    }

    /// Stores objects through every write path with `sse` (and `kms_key`), and
    /// returns the writes the server received, by kind.
    async fn writes(sse: Option<&str>, kms_key: Option<&str>) -> Vec<(&'static str, Seen)> {
        let (proxy, seen) = recording_proxy(s3_endpoint().trim_end_matches('/').to_owned()).await;
        let mut config = s3_config();
        config.endpoint = Some(format!("http://{proxy}"));
        config.server_side_encryption = sse.map(str::to_owned);
        config.sse_kms_key_id = kms_key.map(str::to_owned);
        let store = S3Store::new(config).await.expect("store");
        store.create_bucket_if_missing().await.expect("bucket");
        let fixture = Fixture {
            store: Arc::new(store.clone()),
            backend: Backend::S3 {
                store: store.clone(),
            },
        };
        let small = data(1000, 1);
        store
            .put("single", "image/png", body(&small, 100))
            .await
            .expect("single put");
        store
            .put_exact("exact", "image/png", 1000, body(&small, 100))
            .await
            .expect("streamed put");
        let large = data(PART_SIZE + 10, 2);
        store
            .put("multipart", "image/png", body(&large, 64 * 1024))
            .await
            .expect("multipart put");
        let seen = seen.lock().expect("lock").clone();
        fixture.cleanup().await;

        let bucket = store.bucket().to_owned();
        let mut writes = Vec::new();
        for request in seen {
            let object = request.path.trim_matches('/') != bucket;
            let has = |name: &str| {
                request
                    .query
                    .split('&')
                    .any(|pair| pair.split('=').next() == Some(name))
            };
            let kind = match request.method.as_str() {
                "PUT" if request.headers.contains_key("x-amz-copy-source") => "CopyObject",
                "PUT" if object && has("partNumber") => "UploadPart",
                "PUT" if object => "PutObject",
                "POST" if has("uploads") => "CreateMultipartUpload",
                _ => continue,
            };
            writes.push((kind, request));
        }
        let count = |kind| writes.iter().filter(|(k, _)| *k == kind).count();
        assert_eq!(count("PutObject"), 2, "{writes:?}");
        assert_eq!(count("CreateMultipartUpload"), 1, "{writes:?}");
        assert!(count("UploadPart") >= 2, "{writes:?}");
        writes
    }

    #[tokio::test]
    async fn every_write_asks_for_sse_s3_by_default() {
        let config = s3_config();
        assert_eq!(config.server_side_encryption.as_deref(), Some("AES256"));
        for (kind, request) in writes(Some("AES256"), None).await {
            if kind == "UploadPart" {
                continue;
            }
            assert_eq!(
                request
                    .headers
                    .get("x-amz-server-side-encryption")
                    .map(|value| value.as_bytes()),
                Some(&b"AES256"[..]),
                "{kind} without server-side encryption: {request:?}"
            );
            assert!(
                !request
                    .headers
                    .contains_key("x-amz-server-side-encryption-aws-kms-key-id")
            );
        }
    }

    #[tokio::test]
    async fn every_write_names_the_kms_key() {
        for (kind, request) in writes(Some("aws:kms"), Some("alias/atelier-test")).await {
            if kind == "UploadPart" {
                continue;
            }
            let header = |name: &str| {
                request
                    .headers
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned)
            };
            assert_eq!(
                header("x-amz-server-side-encryption").as_deref(),
                Some("aws:kms"),
                "{kind}: {request:?}"
            );
            assert_eq!(
                header("x-amz-server-side-encryption-aws-kms-key-id").as_deref(),
                Some("alias/atelier-test"),
                "{kind}: {request:?}"
            );
        }
    }

    #[tokio::test]
    async fn none_sends_no_encryption_header() {
        for (kind, request) in writes(None, None).await {
            assert!(
                !request.headers.contains_key("x-amz-server-side-encryption"),
                "{kind}: {request:?}"
            );
        }
    }
}
