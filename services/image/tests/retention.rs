//! Retention: images past `RETENTION_DAYS` are swept, objects first, then rows,
//! safely when several replicas sweep at once. Driven through the domain with a
//! clock the test moves.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use atelier_common::Clock;
use atelier_image::{
    Images, Settings,
    domain::{NewImage, Origin, signing::UrlSigner},
    error::ImageError,
    store::Store,
};
use atelier_storage::{LocalStore, ObjectStore};
use atelier_testkit::{Backend, TestDb, backends, fixtures};
use bytes::Bytes;
use time::OffsetDateTime;
use uuid::Uuid;

struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    fn advance(&self, by: time::Duration) {
        *self.0.lock().expect("clock") += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().expect("clock")
    }
}

struct Harness {
    images: Arc<Images>,
    objects: Arc<dyn ObjectStore>,
    clock: Arc<ManualClock>,
    _db: Option<TestDb>,
    _dir: tempfile::TempDir,
}

async fn harness(backend: Backend) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, test_db) = atelier_testkit::migrated_database::<atelier_image::migration::Migrator>(
        backend,
        "image",
        dir.path(),
    )
    .await
    .expect("database");
    let objects: Arc<dyn ObjectStore> =
        Arc::new(LocalStore::new(dir.path().join("objects")).expect("store"));
    let clock = Arc::new(ManualClock(Mutex::new(OffsetDateTime::now_utc())));
    let images = Images::new(
        Store::new(db),
        objects.clone(),
        UrlSigner::new(b"retention test".to_vec()),
        clock.clone(),
        Arc::new(atelier_scan::NoScanner),
        Settings {
            max_file_bytes: 10 * 1024 * 1024,
            max_result_bytes: 10 * 1024 * 1024,
            max_pixels: 10_000_000,
            max_decode_bytes: 512 * 1024 * 1024,
            max_parallel_decodes: 2,
            strip_location: true,
            retention: Duration::from_secs(30 * 24 * 60 * 60),
            url_ttl: Duration::from_secs(900),
            public_base: "http://127.0.0.1:8080".into(),
            tmp_dir: dir.path().to_owned(),
        },
    );
    Harness {
        images,
        objects,
        clock,
        _db: test_db,
        _dir: dir,
    }
}

async fn store(harness: &Harness, user_id: Uuid) -> Uuid {
    let new = NewImage {
        user_id,
        filename: "kept.png".into(),
        origin: Origin::Upload,
        metadata: serde_json::Map::new(),
        retention_days: None,
        size: None,
    };
    let body = futures::stream::iter([Ok::<_, ImageError>(Bytes::from(fixtures::png(600, 400)))]);
    let (image, _) = harness
        .images
        .upload(new, None, body)
        .await
        .expect("upload");
    image.row.id
}

/// The keys of the objects image `id` of `user_id` has in the store.
async fn keys(harness: &Harness, user_id: Uuid, id: Uuid) -> Vec<String> {
    let keys = harness
        .objects
        .list(&format!("images/{user_id}/"))
        .await
        .expect("list");
    keys.into_iter()
        .filter(|key| key.contains(&id.to_string()))
        .collect()
}

backends!(
    expired_images_are_swept_once_by_concurrent_sweepers,
    retention_follows_the_users_setting
);

async fn expired_images_are_swept_once_by_concurrent_sweepers(backend: Backend) {
    let harness = harness(backend).await;
    let user = Uuid::now_v7();
    let old = store(&harness, user).await;
    harness.clock.advance(time::Duration::days(20));
    let young = store(&harness, user).await;

    harness.clock.advance(time::Duration::days(9));
    assert_eq!(
        harness.images.sweep().await.expect("sweep"),
        0,
        "nothing is 30 days old yet"
    );

    harness.clock.advance(time::Duration::days(2));
    // Two replicas sweeping at the same moment delete the image once between them.
    let (first, second) = tokio::join!(harness.images.sweep(), harness.images.sweep());
    assert_eq!(first.expect("sweep") + second.expect("sweep"), 1);

    assert!(matches!(
        harness.images.get(user, old).await,
        Err(ImageError::NotFound)
    ));
    assert_eq!(
        keys(&harness, user, old).await,
        Vec::<String>::new(),
        "swept"
    );
    harness
        .images
        .get(user, young)
        .await
        .expect("the younger image stays");
    let kept = keys(&harness, user, young).await;
    assert_eq!(
        kept.len(),
        2,
        "the original and the thumbnail stay: {kept:?}"
    );
    for key in kept {
        harness.objects.head(&key).await.expect("its objects stay");
    }
}

async fn retention_follows_the_users_setting(backend: Backend) {
    let harness = harness(backend).await;
    let (user, other) = (Uuid::now_v7(), Uuid::now_v7());
    let image = store(&harness, user).await;
    let others = store(&harness, other).await;
    assert_eq!(
        harness
            .images
            .set_retention(user, Some(1))
            .await
            .expect("retention"),
        1
    );
    harness.clock.advance(time::Duration::days(2));
    assert_eq!(harness.images.sweep().await.expect("sweep"), 1);
    assert!(matches!(
        harness.images.get(user, image).await,
        Err(ImageError::NotFound)
    ));
    harness
        .images
        .get(other, others)
        .await
        .expect("another user's default applies");
}
