//! Share links through the domain, with a clock the test moves: a link shows its
//! image (and the one before) to anyone holding the token until it expires or is
//! revoked; every refusal is the same; another user's images and links are not
//! found; the URLs it hands out open only its images, under a neutral name.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use atelier_common::Clock;
use atelier_image::{
    Images, Settings, ShareSettings,
    domain::{
        NewImage, Origin, Shares,
        shares::{Before, Expiry, NewShare},
        signing::UrlSigner,
    },
    error::ImageError,
    store::Store,
};
use atelier_storage::{LocalStore, ObjectStore};
use atelier_testkit::{Backend, TestDb, backends, fixtures};
use bytes::Bytes;
use futures::StreamExt;
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
        objects,
        UrlSigner::new(b"shares test".to_vec()),
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
        clock,
        _db: test_db,
        _dir: dir,
    }
}

async fn store(harness: &Harness, user_id: Uuid, origin: Origin) -> Uuid {
    let new = NewImage {
        user_id,
        filename: "holiday-secret.png".into(),
        origin,
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

fn shares(harness: &Harness) -> Shares {
    Shares::new(harness.images.clone(), ShareSettings::default())
}

fn share(user_id: Uuid, image_id: Uuid, before: Before) -> NewShare {
    NewShare {
        user_id,
        image_id,
        expiry: Expiry::Default,
        before,
    }
}

fn result_of(source: Uuid) -> Origin {
    Origin::Result {
        job_id: Uuid::now_v7(),
        output_index: 0,
        source_image_id: Some(source),
    }
}

/// The path and query of a URL the view handed out.
fn split(url: &str) -> (String, String) {
    let rest = url
        .strip_prefix("http://127.0.0.1:8080")
        .expect("served by the gateway");
    let (path, query) = rest.split_once('?').expect("query");
    (path.to_owned(), query.to_owned())
}

backends!(
    a_link_shows_its_image_until_it_expires_or_is_revoked,
    other_users_images_and_links_are_not_found,
    shared_urls_open_only_their_images_under_a_neutral_name
);

async fn a_link_shows_its_image_until_it_expires_or_is_revoked(backend: Backend) {
    let harness = harness(backend).await;
    let shares = shares(&harness);
    let user = Uuid::now_v7();
    let original = store(&harness, user, Origin::Upload).await;
    let result = store(&harness, user, result_of(original)).await;

    let created = shares
        .create(share(user, result, Before::Source))
        .await
        .expect("create");
    assert_eq!(created.link.before_image_id, Some(original));
    assert_eq!(created.token.len(), 43, "32 random bytes, base64url");
    assert_ne!(
        created.link.token_hash, created.token,
        "only a hash is kept"
    );
    let now = harness.clock.now();
    assert_eq!(
        created.link.expires_at,
        now + time::Duration::days(7),
        "the default expiry"
    );

    let view = shares.view(&created.token).await.expect("view");
    assert_eq!((view.image.width, view.image.height), (600, 400));
    assert_eq!(view.image.mime_type, "image/png");
    assert!(view.before.is_some(), "before/after");
    assert!(view.url_expires_at <= now + time::Duration::minutes(15));
    shares.view(&created.token).await.expect("view again");
    let (links, _) = shares.list(user, None, 50).await.expect("list");
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].view_count, 2);
    assert!(links[0].last_viewed_at.is_some());

    // A token one character off, a malformed one, an empty one: refused alike.
    let mut tampered = created.token.clone().into_bytes();
    tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    for token in [tampered.as_str(), "not-a-token", "", &created.token[..42]] {
        let refused = shares.view(token).await.expect_err("refused");
        assert!(
            matches!(refused, ImageError::ShareUnavailable),
            "{token}: {refused:?}"
        );
    }

    // Expiry bounds.
    for expiry in [
        Expiry::In(Duration::from_secs(59)),
        Expiry::In(Duration::from_secs(91 * 24 * 60 * 60)),
        Expiry::At(now - time::Duration::hours(1)),
    ] {
        let refused = shares
            .create(NewShare {
                expiry,
                ..share(user, result, Before::None)
            })
            .await
            .expect_err("out of bounds");
        assert!(
            matches!(refused, ImageError::InvalidInput(_)),
            "{refused:?}"
        );
    }

    // Past its expiry: refused as an unknown token is.
    let short = shares
        .create(NewShare {
            expiry: Expiry::In(Duration::from_secs(3600)),
            ..share(user, result, Before::None)
        })
        .await
        .expect("create");
    shares.view(&short.token).await.expect("shown while young");
    harness.clock.advance(time::Duration::minutes(61));
    let refused = shares.view(&short.token).await.expect_err("expired");
    assert!(
        matches!(refused, ImageError::ShareUnavailable),
        "{refused:?}"
    );
    assert_eq!(
        refused.to_string(),
        ImageError::ShareUnavailable.to_string()
    );

    // Revoked: refused at once, and again revoking changes nothing.
    let revoked = shares.revoke(user, created.link.id).await.expect("revoke");
    let revoked_at = revoked.revoked_at.expect("revoked");
    let refused = shares.view(&created.token).await.expect_err("revoked");
    assert!(
        matches!(refused, ImageError::ShareUnavailable),
        "{refused:?}"
    );
    let again = shares.revoke(user, created.link.id).await.expect("again");
    assert_eq!(again.revoked_at, Some(revoked_at));

    // An upload names no source: before/after needs one named.
    let refused = shares
        .create(share(user, original, Before::Source))
        .await
        .expect_err("no source");
    assert!(
        matches!(refused, ImageError::InvalidInput(_)),
        "{refused:?}"
    );
    let named = shares
        .create(share(user, original, Before::Image(result)))
        .await
        .expect("named before");
    assert_eq!(named.link.before_image_id, Some(result));

    // Deleting the image drops its links.
    let kept = shares
        .create(share(user, result, Before::None))
        .await
        .expect("create");
    harness.images.discard(user, result).await.expect("delete");
    let refused = shares.view(&kept.token).await.expect_err("image gone");
    assert!(
        matches!(refused, ImageError::ShareUnavailable),
        "{refused:?}"
    );
    let (links, _) = shares.list(user, None, 50).await.expect("list");
    assert!(
        links.iter().all(|link| link.image_id != result),
        "{links:?}"
    );
    let named_link = links
        .iter()
        .find(|link| link.id == named.link.id)
        .expect("the link of the original stays");
    assert_eq!(named_link.before_image_id, None, "its before is gone");
}

async fn other_users_images_and_links_are_not_found(backend: Backend) {
    let harness = harness(backend).await;
    let shares = shares(&harness);
    let (owner, stranger) = (Uuid::now_v7(), Uuid::now_v7());
    let theirs = store(&harness, owner, Origin::Upload).await;
    let mine = store(&harness, stranger, Origin::Upload).await;
    let created = shares
        .create(share(owner, theirs, Before::None))
        .await
        .expect("create");

    let refused = shares
        .create(share(stranger, theirs, Before::None))
        .await
        .expect_err("another user's image");
    assert!(matches!(refused, ImageError::NotFound), "{refused:?}");
    let refused = shares
        .create(share(stranger, mine, Before::Image(theirs)))
        .await
        .expect_err("another user's image as before");
    assert!(matches!(refused, ImageError::NotFound), "{refused:?}");
    // A result whose source is someone else's shows no before.
    let borrowed = store(&harness, stranger, result_of(theirs)).await;
    let refused = shares
        .create(share(stranger, borrowed, Before::Source))
        .await
        .expect_err("another user's source");
    assert!(
        matches!(refused, ImageError::InvalidInput(_)),
        "{refused:?}"
    );

    let refused = shares
        .revoke(stranger, created.link.id)
        .await
        .expect_err("another user's link");
    assert!(matches!(refused, ImageError::ShareNotFound), "{refused:?}");
    let (links, next) = shares.list(stranger, None, 50).await.expect("list");
    assert!(links.is_empty() && next.is_none());
    shares.view(&created.token).await.expect("still shown");
}

async fn shared_urls_open_only_their_images_under_a_neutral_name(backend: Backend) {
    let harness = harness(backend).await;
    let shares = shares(&harness);
    let user = Uuid::now_v7();
    let shared = store(&harness, user, Origin::Upload).await;
    let other = store(&harness, user, Origin::Upload).await;
    let created = shares
        .create(share(user, shared, Before::None))
        .await
        .expect("create");
    let view = shares.view(&created.token).await.expect("view");
    assert!(view.before.is_none());
    let (path, query) = split(&view.image.url);
    assert!(query.contains("shared=1"), "{query}");

    let served = harness
        .images
        .read_signed(&path, &query, None)
        .await
        .expect("served");
    assert_eq!(served.row.id, shared);
    assert_eq!(
        served.row.original_filename, "shared.png",
        "no owner's file name"
    );
    let bytes: Vec<Bytes> = served
        .body
        .map(|chunk| chunk.expect("chunk"))
        .collect()
        .await;
    assert_eq!(
        bytes.iter().map(Bytes::len).sum::<usize>() as i64,
        view.image.file_size
    );

    // Another image, another variant, the mark taken off: refused.
    for (path, query) in [
        (
            path.replace(&shared.to_string(), &other.to_string()),
            query.clone(),
        ),
        (path.replace("original", "thumbnail"), query.clone()),
        (path.clone(), query.replace("shared=1&", "")),
    ] {
        let refused = harness.images.read_signed(&path, &query, None).await;
        assert!(
            matches!(refused, Err(ImageError::NotFound)),
            "{path}?{query}"
        );
    }
    // The URLs expire with their time.
    harness.clock.advance(time::Duration::minutes(16));
    assert!(matches!(
        harness.images.read_signed(&path, &query, None).await,
        Err(ImageError::NotFound)
    ));
}
