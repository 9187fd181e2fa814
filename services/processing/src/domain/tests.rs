//! The rules with the other services faked in memory and the tables in SQLite.

use std::sync::Arc;

use atelier_queue::{MemoryQueue, Queue, QueueConfig};
use serde_json::Map;
use time::OffsetDateTime;
use uuid::Uuid;

use super::*;
use crate::{
    error::ProcessingError,
    events::Bus,
    peers::fakes::{Images, Tiers, Workflows},
    store::Store,
};

fn quota(tier: &str, high_priority: bool) -> Quota {
    Quota {
        tier: tier.to_owned(),
        jobs_per_day: None,
        concurrent_jobs: Some(3),
        parallel_jobs: None,
        high_priority,
        period_start: OffsetDateTime::UNIX_EPOCH,
        period_end: OffsetDateTime::now_utc() + time::Duration::days(1),
        daily_budget: None,
        monthly_budget: None,
    }
}

struct Domain {
    jobs: Arc<Jobs>,
    queue: Arc<dyn Queue>,
    images: Arc<Images>,
    tiers: Arc<Tiers>,
    _dir: tempfile::TempDir,
}

async fn domain() -> Domain {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new(
        QueueConfig::default(),
        Arc::new(|_| usize::MAX),
    ));
    let images = Arc::new(Images::default());
    let tiers = Arc::new(Tiers::new(quota("free", false)));
    let jobs = Jobs::new(
        Store::temporary(dir.path()).await,
        queue.clone(),
        Bus::local(),
        Arc::new(atelier_common::SystemClock),
        Peers {
            images: images.clone(),
            workflows: Arc::new(Workflows { max_width: 4096 }),
        },
        Quotas::new(tiers.clone()),
        atelier_fal::FalClient::new(atelier_fal::FalConfig::new("unused")).expect("fal client"),
    );
    Domain {
        jobs,
        queue,
        images,
        tiers,
        _dir: dir,
    }
}

fn request(user_id: Uuid, image_id: Uuid, workflow_id: &str) -> StartRequest {
    StartRequest {
        user_id,
        image_id,
        workflow_id: workflow_id.to_owned(),
        parameters: Map::new(),
        priority: Priority::Normal,
        idempotency_key: None,
        batch_id: None,
    }
}

#[tokio::test]
async fn a_started_job_is_queued_with_its_cost_and_replayed_by_its_key() {
    let domain = domain().await;
    let user = Uuid::new_v4();
    let image = domain.images.add(user, 640, 480);
    let keyed = StartRequest {
        idempotency_key: Some("once".to_owned()),
        ..request(user, image, "lineart")
    };
    let (job, replayed) = domain.jobs.start(keyed.clone()).await.expect("start");
    assert!(!replayed);
    assert_eq!(job.status, Status::Queued);
    assert_eq!(job.workflow_name, "Line art");
    assert_eq!(
        (job.estimated_cost, job.cost_currency.as_deref()),
        (Some(0.01), Some("USD"))
    );
    assert!(domain.queue.contains(job.id).await.expect("queue"));
    let (again, replayed) = domain.jobs.start(keyed).await.expect("replay");
    assert!(replayed);
    assert_eq!(again.id, job.id);
    assert_eq!(
        domain
            .jobs
            .usage(user, OffsetDateTime::UNIX_EPOCH)
            .await
            .ok(),
        Some((1, 1))
    );
}

#[tokio::test]
async fn starts_are_refused_for_others_images_and_unknown_workflows() {
    let domain = domain().await;
    let user = Uuid::new_v4();
    let theirs = domain.images.add(Uuid::new_v4(), 640, 480);
    assert!(matches!(
        domain.jobs.start(request(user, theirs, "lineart")).await,
        Err(ProcessingError::ImageNotFound)
    ));
    let mine = domain.images.add(user, 640, 480);
    assert!(matches!(
        domain.jobs.start(request(user, mine, "nonesuch")).await,
        Err(ProcessingError::WorkflowNotFound)
    ));
    // Of unknown size, the image is not estimated: the parameters are still checked.
    let unknown = domain.images.add(user, 0, 0);
    assert!(matches!(
        domain.jobs.start(request(user, unknown, "nonesuch")).await,
        Err(ProcessingError::WorkflowNotFound)
    ));
    let (job, _) = domain
        .jobs
        .start(request(user, unknown, "lineart"))
        .await
        .expect("start");
    assert_eq!(job.estimated_cost, None);
}

#[tokio::test]
async fn a_batch_with_one_result_too_large_names_it_and_starts_nothing() {
    let domain = domain().await;
    let user = Uuid::new_v4();
    let small = domain.images.add(user, 640, 480);
    let huge = domain.images.add(user, 10_000, 480);
    let refused = domain
        .jobs
        .start_batch(request(user, Uuid::nil(), "lineart"), &[small, huge])
        .await;
    let Err(ProcessingError::InvalidInput(violations)) = refused else {
        panic!("the batch must be refused: {refused:?}");
    };
    assert_eq!(violations[0].field, "image_ids[1]");
    let (listed, _) = domain
        .jobs
        .list(user, &JobFilter::default(), None, 10)
        .await
        .expect("list");
    assert!(listed.is_empty(), "all or none");

    let (batch, _) = domain
        .jobs
        .start_batch(request(user, Uuid::nil(), "lineart"), &[small, small])
        .await
        .expect("batch");
    assert_eq!(batch.count(&[Status::Queued]), 2);
    assert_eq!(batch.progress(), 0.0);
    let (cancelled, count) = domain
        .jobs
        .cancel_batch(user, batch.id)
        .await
        .expect("cancel");
    assert_eq!((count, cancelled.count(&[Status::Cancelled])), (2, 2));
    assert_eq!(cancelled.progress(), 1.0);
    let (retried, ids) = domain
        .jobs
        .retry_batch(user, batch.id)
        .await
        .expect("retry");
    assert!(ids.is_empty(), "only failed jobs of a batch are retried");
    assert_eq!(retried.count(&[Status::Cancelled]), 2);
}

#[tokio::test]
async fn the_tier_is_asked_again_before_a_refusal_so_an_upgrade_applies_at_once() {
    let domain = domain().await;
    let user = Uuid::new_v4();
    let image = domain.images.add(user, 640, 480);
    domain
        .jobs
        .start(request(user, image, "lineart"))
        .await
        .expect("start");
    let asked = domain.tiers.asked();
    domain
        .jobs
        .start(request(user, image, "lineart"))
        .await
        .expect("start");
    assert_eq!(domain.tiers.asked(), asked, "limits seen just now serve");

    let high = || StartRequest {
        priority: Priority::High,
        ..request(user, image, "lineart")
    };
    assert!(matches!(
        domain.jobs.start(high()).await,
        Err(ProcessingError::PriorityNotAllowed(tier)) if tier == "free"
    ));
    domain.tiers.set(quota("pro", true));
    let (job, _) = domain.jobs.start(high()).await.expect("upgraded");
    assert_eq!(job.priority, Priority::High);

    // The concurrency limit (3) is counted from the table.
    assert!(matches!(
        domain.jobs.start(request(user, image, "lineart")).await,
        Err(ProcessingError::QuotaExceeded(refused)) if refused.limit == "concurrent_jobs"
    ));
    domain.jobs.cancel(user, job.id).await.expect("cancel");
    // A retry is a new run: it needs room too, and goes back at the tier's priority.
    domain.tiers.set(quota("free", false));
    let retried = domain.jobs.retry(user, job.id).await.expect("retry");
    assert_eq!(
        (retried.status, retried.priority),
        (Status::Queued, Priority::Normal)
    );
}
