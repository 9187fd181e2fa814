//! What makes polling a job's status cheap: the status bodies the gateway answered
//! lately, and the result images' signed URLs, kept in memory.
//!
//! A status body is kept for a short while (`JOB_STATUS_CACHE_MS`) and dropped as
//! soon as the processing service announces a change to the job (its event bus:
//! Redis pub/sub across replicas, in-process otherwise), so a client sees a change
//! as fast as without the cache; the short lifetime bounds what a lost announcement
//! (Redis away) or a change made without an event (fal's queue position) can hide.
//! A body is only ever served to the user it was fetched for: another user's job
//! goes on to the processing service, which answers not-found.
//!
//! A signed URL is reused until half its lifetime has passed (so every URL handed
//! out still works for at least half of `SIGNED_URL_TTL`), and at most
//! [`URL_REUSE_MAX`], which bounds how long an image deleted through another
//! gateway replica may still be listed; deleting through this one forgets it at once.

use std::{
    collections::HashMap,
    sync::{
        PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use atelier_common::redis::Redis;
use atelier_proto::image::v1 as image_pb;
use bytes::Bytes;
use fred::prelude::{ClientLike, EventInterface, PubsubInterface};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The longest a signed URL is handed out again.
pub const URL_REUSE_MAX: Duration = Duration::from_secs(60);
/// Entries kept at most per cache; expired ones are dropped first, then all.
const MAX_ENTRIES: usize = 100_000;
/// Invalidation generations, one per shard of job ids (see [`JobCache::generation`]).
const SHARDS: usize = 64;

struct Body {
    owner: Uuid,
    body: Bytes,
    until: Instant,
}

/// Status bodies by job id.
pub struct JobCache {
    ttl: Duration,
    entries: RwLock<HashMap<Uuid, Body>>,
    /// Bumped when a job of the shard is announced, so a body fetched before the
    /// announcement is not kept after it.
    generations: [AtomicU64; SHARDS],
}

impl JobCache {
    /// Bodies kept for `ttl`; zero keeps none.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RwLock::new(HashMap::new()),
            generations: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    fn shard(job_id: Uuid) -> usize {
        (job_id.as_u128() % SHARDS as u128) as usize
    }

    /// The body of `job_id` for `user`, when one is kept for them and fresh.
    pub fn get(&self, job_id: Uuid, user: Uuid) -> Option<Bytes> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(&job_id)
            .filter(|entry| entry.owner == user && entry.until > Instant::now())
            .map(|entry| entry.body.clone())
    }

    /// Take before fetching a job; pass to [`JobCache::put`] with what was fetched.
    pub fn generation(&self, job_id: Uuid) -> u64 {
        self.generations[Self::shard(job_id)].load(Ordering::SeqCst)
    }

    /// Keeps `body` of `owner`'s job until `ttl` has passed or `until` (the first
    /// signed URL in it due for renewal), unless the job was announced since
    /// `generation` was taken.
    pub fn put(
        &self,
        job_id: Uuid,
        owner: Uuid,
        body: Bytes,
        generation: u64,
        until: Option<Instant>,
    ) {
        if !self.enabled() {
            return;
        }
        let now = Instant::now();
        let until = until.map_or(now + self.ttl, |until| until.min(now + self.ttl));
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if self.generation(job_id) != generation {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, entry| entry.until > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(job_id, Body { owner, body, until });
    }

    /// Drops what is kept of `job_id`.
    pub fn forget(&self, job_id: Uuid) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        self.generations[Self::shard(job_id)].fetch_add(1, Ordering::SeqCst);
        entries.remove(&job_id);
    }

    /// Drops everything (announcements may have been missed).
    pub fn forget_all(&self) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        for generation in &self.generations {
            generation.fetch_add(1, Ordering::SeqCst);
        }
        entries.clear();
    }

    /// Drops a job's body whenever the processing service announces a change to it,
    /// in this process and, with `redis`, on every replica, until `stop`.
    pub fn listen(self: &std::sync::Arc<Self>, redis: Option<&Redis>, stop: CancellationToken) {
        if !self.enabled() {
            return;
        }
        let mut local = atelier_common::job_changes::subscribe_local();
        let cache = self.clone();
        let local_stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = local_stop.cancelled() => break,
                    received = local.recv() => match received {
                        Ok(job_id) => cache.forget(job_id),
                        Err(RecvError::Lagged(_)) => cache.forget_all(),
                        Err(RecvError::Closed) => break,
                    },
                }
            }
        });
        let Some(redis) = redis else {
            return;
        };
        // Connects (and reconnects) in the background; every connection subscribes
        // anew, and forgets everything announced while it was away.
        let subscriber = redis.client.clone_new();
        let mut messages = subscriber.message_rx();
        let mut reconnects = subscriber.reconnect_rx();
        drop(subscriber.connect());
        let channel = redis.key(atelier_common::job_changes::CHANNEL);
        let cache = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    received = messages.recv() => match received {
                        Ok(message) => {
                            let job_id = message
                                .value
                                .as_str()
                                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                                .and_then(|event| event["job_id"].as_str().and_then(|id| Uuid::parse_str(id).ok()));
                            match job_id {
                                Some(job_id) => cache.forget(job_id),
                                None => tracing::debug!("ignoring a malformed job announcement"),
                            }
                        }
                        Err(RecvError::Lagged(_)) => cache.forget_all(),
                        Err(RecvError::Closed) => break,
                    },
                    connected = reconnects.recv() => {
                        if matches!(connected, Err(RecvError::Closed)) {
                            break;
                        }
                        cache.forget_all();
                        if let Err(err) = subscriber.subscribe(channel.clone()).await {
                            tracing::warn!(error = %err, "cannot subscribe to job announcements");
                        }
                    }
                }
            }
            let _ = subscriber.quit().await;
        });
    }
}

struct Signed {
    image: image_pb::Image,
    reuse_until: Instant,
}

/// Result images with their signed URLs, by image id.
#[derive(Default)]
pub struct UrlCache {
    entries: RwLock<HashMap<String, Signed>>,
}

impl UrlCache {
    /// `user`'s image `id` with URLs still good to hand out, and until when.
    pub fn get(&self, user: &str, id: &str) -> Option<(image_pb::Image, Instant)> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(id)
            .filter(|entry| entry.image.user_id == user && entry.reuse_until > Instant::now())
            .map(|entry| (entry.image.clone(), entry.reuse_until))
    }

    /// Keeps `image` (as the image service answered its owner) for reuse; until
    /// when. An image whose URLs carry no expiry is not kept.
    pub fn put(&self, image: &image_pb::Image) -> Option<Instant> {
        let reuse_until = reuse_until(image, SystemTime::now(), Instant::now())?;
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            let now = Instant::now();
            entries.retain(|_, entry| entry.reuse_until > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            image.id.clone(),
            Signed {
                image: image.clone(),
                reuse_until,
            },
        );
        Some(reuse_until)
    }

    /// Forgets image `id` (deleted).
    pub fn forget(&self, id: &str) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

/// Until when `image`'s URLs may be handed out again, given the wall clock `now`
/// and the monotonic `mono` of the same moment: half their remaining lifetime, at
/// most [`URL_REUSE_MAX`], and never past the image's own expiry.
fn reuse_until(image: &image_pb::Image, now: SystemTime, mono: Instant) -> Option<Instant> {
    let left = |at: &prost_types::Timestamp| -> Option<Duration> {
        let at = SystemTime::UNIX_EPOCH
            + Duration::new(
                u64::try_from(at.seconds).ok()?,
                u32::try_from(at.nanos).ok()?,
            );
        at.duration_since(now).ok()
    };
    let mut reuse = left(image.url_expires_at.as_ref()?)? / 2;
    if let Some(expires) = &image.expires_at {
        reuse = reuse.min(left(expires)?);
    }
    let reuse = reuse.min(URL_REUSE_MAX);
    (!reuse.is_zero()).then(|| mono + reuse)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(now: SystemTime, later: Duration) -> prost_types::Timestamp {
        let since = (now + later)
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after the epoch");
        prost_types::Timestamp {
            seconds: since.as_secs() as i64,
            nanos: since.subsec_nanos() as i32,
        }
    }

    #[test]
    fn a_url_is_reused_for_half_its_life_at_most_a_minute_and_never_past_the_image() {
        let now = SystemTime::now();
        let mono = Instant::now();
        let image = |url_left: Duration, image_left: Option<Duration>| image_pb::Image {
            url_expires_at: Some(at(now, url_left)),
            expires_at: image_left.map(|left| at(now, left)),
            ..Default::default()
        };
        let reuse = |image: &image_pb::Image| {
            reuse_until(image, now, mono).map(|until| (until - mono).as_secs())
        };
        assert_eq!(reuse(&image(Duration::from_secs(80), None)), Some(40));
        assert_eq!(reuse(&image(Duration::from_secs(900), None)), Some(60));
        assert_eq!(
            reuse(&image(
                Duration::from_secs(900),
                Some(Duration::from_secs(10))
            )),
            Some(10)
        );
        assert_eq!(reuse(&image(Duration::ZERO, None)), None);
        assert_eq!(
            reuse(&image_pb::Image::default()),
            None,
            "no expiry, no reuse"
        );
    }

    #[test]
    fn an_image_is_only_handed_to_its_owner() {
        let cache = UrlCache::default();
        let now = SystemTime::now();
        let image = image_pb::Image {
            id: "img".into(),
            user_id: "alice".into(),
            url: "https://files.example/img?sig=1".into(),
            url_expires_at: Some(at(now, Duration::from_secs(900))),
            ..Default::default()
        };
        assert!(cache.put(&image).is_some());
        assert_eq!(
            cache.get("alice", "img").map(|(image, _)| image.url),
            Some(image.url.clone())
        );
        assert!(cache.get("bob", "img").is_none());
        cache.forget("img");
        assert!(cache.get("alice", "img").is_none());
    }

    #[test]
    fn a_body_is_only_served_to_its_owner_and_dropped_when_announced() {
        let cache = JobCache::new(Duration::from_secs(5));
        let (job, alice, bob) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let generation = cache.generation(job);
        cache.put(job, alice, Bytes::from_static(b"{}"), generation, None);
        assert_eq!(cache.get(job, alice), Some(Bytes::from_static(b"{}")));
        assert_eq!(cache.get(job, bob), None);
        cache.forget(job);
        assert_eq!(cache.get(job, alice), None);
    }

    #[test]
    fn a_body_fetched_before_an_announcement_is_not_kept() {
        let cache = JobCache::new(Duration::from_secs(5));
        let (job, alice) = (Uuid::now_v7(), Uuid::now_v7());
        let generation = cache.generation(job);
        // The job changes while its old state is on the way.
        cache.forget(job);
        cache.put(job, alice, Bytes::from_static(b"old"), generation, None);
        assert_eq!(cache.get(job, alice), None);
        cache.forget_all();
        let generation = cache.generation(job);
        cache.put(job, alice, Bytes::from_static(b"new"), generation, None);
        assert_eq!(cache.get(job, alice), Some(Bytes::from_static(b"new")));
    }

    #[test]
    fn bodies_expire_and_a_zero_lifetime_keeps_none() {
        let cache = JobCache::new(Duration::from_secs(5));
        let (job, alice) = (Uuid::now_v7(), Uuid::now_v7());
        let generation = cache.generation(job);
        cache.put(
            job,
            alice,
            Bytes::from_static(b"{}"),
            generation,
            Some(Instant::now()),
        );
        assert_eq!(cache.get(job, alice), None, "due for renewal at once");
        let off = JobCache::new(Duration::ZERO);
        off.put(
            job,
            alice,
            Bytes::from_static(b"{}"),
            off.generation(job),
            None,
        );
        assert_eq!(off.get(job, alice), None);
    }
}
