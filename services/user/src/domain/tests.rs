//! The rules with the other services faked in memory and the profiles in SQLite.

use std::sync::Arc;

use uuid::Uuid;

use super::*;
use crate::{error::UserError, peers::fakes};

struct Domain {
    users: Users,
    peers: Arc<fakes::Peers>,
    _dir: tempfile::TempDir,
}

async fn domain() -> Domain {
    let dir = tempfile::tempdir().expect("tempdir");
    let peers = Arc::new(fakes::Peers::with_workflows(&["upscale", "rembg"]));
    let users = Users::new(
        Store::temporary(dir.path()).await,
        Tiers::default(),
        Arc::new(atelier_common::SystemClock),
        Peers {
            accounts: peers.clone(),
            jobs: peers.clone(),
            images: peers.clone(),
            workflows: peers.clone(),
            audit: peers.clone(),
        },
    );
    Domain {
        users,
        peers,
        _dir: dir,
    }
}

fn origin() -> atelier_common::audit::RequestOrigin {
    atelier_common::audit::RequestOrigin {
        client_ip: "203.0.113.7".to_owned(),
        user_agent: "tests".to_owned(),
        request_id: "req-1".to_owned(),
    }
}

fn audited(domain: &Domain) -> Vec<atelier_common::audit::AuditRecord> {
    domain
        .peers
        .audited
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

fn fields(err: UserError) -> Vec<String> {
    match err {
        UserError::InvalidInput(violations) => violations.into_iter().map(|v| v.field).collect(),
        other => panic!("expected invalid input, got {other:?}"),
    }
}

#[tokio::test]
async fn a_profile_is_made_once_and_never_for_a_deleted_account() {
    let domain = domain().await;
    let ada = Uuid::new_v4();
    let first = domain.users.profile(ada).await.expect("profile");
    assert_eq!((first.tier, first.settings_revision), (Tier::Free, 0));
    let renamed = domain.users.rename(ada, "  Ada ").await.expect("rename");
    assert_eq!(renamed.display_name, "Ada");
    assert_eq!(renamed.created_at, first.created_at);
    assert!(matches!(
        domain.users.rename(ada, "a\u{7}").await,
        Err(UserError::InvalidInput(_))
    ));

    let gone = Uuid::new_v4();
    domain
        .peers
        .deleted_accounts
        .lock()
        .expect("lock")
        .insert(gone);
    for _ in 0..2 {
        assert!(matches!(
            domain.users.profile(gone).await,
            Err(UserError::AccountNotFound)
        ));
    }
    assert!(
        domain.users.store.get(gone).await.expect("read").is_none(),
        "nothing is left behind"
    );
}

#[tokio::test]
async fn settings_are_checked_against_the_tier_and_the_catalogue_and_their_revision() {
    let domain = domain().await;
    let ada = Uuid::new_v4();
    let mut defaults = serde_json::Map::new();
    defaults.insert("bad".to_owned(), 1.into());
    let wrong = Settings {
        default_workflow_id: Some("nonesuch".to_owned()),
        workflow_defaults: [
            ("upscale".to_owned(), defaults),
            ("nonesuch".to_owned(), serde_json::Map::new()),
        ]
        .into(),
        ..Settings::default()
    };
    let refused = domain
        .users
        .update_settings(ada, wrong, None, &origin())
        .await;
    assert_eq!(
        fields(refused.expect_err("refused")),
        [
            "default_workflow_id",
            "workflow_defaults.nonesuch",
            "workflow_defaults.upscale.bad"
        ]
    );
    let too_long = Settings {
        retention_days: Some(31),
        ..Settings::default()
    };
    let refused = domain
        .users
        .update_settings(ada, too_long, None, &origin())
        .await;
    assert_eq!(fields(refused.expect_err("refused")), ["retention_days"]);

    let week = Settings {
        default_workflow_id: Some("rembg".to_owned()),
        retention_days: Some(7),
        ..Settings::default()
    };
    let stored = domain
        .users
        .update_settings(ada, week.clone(), Some(0), &origin())
        .await
        .expect("stored");
    assert_eq!(stored.settings_revision, 1);
    assert_eq!(
        stored.settings.default_workflow_id.as_deref(),
        Some("rembg")
    );
    assert!(matches!(
        domain
            .users
            .update_settings(ada, week, Some(0), &origin())
            .await,
        Err(UserError::StaleSettings)
    ));
    assert_eq!(
        domain.peers.logged(),
        ["retention 7"],
        "told once, when it changed"
    );
}

#[tokio::test]
async fn the_quota_holds_the_retention_within_the_tier() {
    let domain = domain().await;
    let ada = Uuid::new_v4();
    domain
        .users
        .set_tier(ada, Tier::Pro, &origin())
        .await
        .expect("pro");
    let long = Settings {
        retention_days: Some(200),
        ..Settings::default()
    };
    domain
        .users
        .update_settings(ada, long, None, &origin())
        .await
        .expect("stored");
    assert_eq!(
        domain.users.quota(ada).await.expect("quota").retention_days,
        200
    );
    domain
        .users
        .set_tier(ada, Tier::Free, &origin())
        .await
        .expect("free");
    let quota = domain.users.quota(ada).await.expect("quota");
    assert_eq!(
        (quota.tier, quota.limits, quota.retention_days),
        (Tier::Free, Limits::builtin(Tier::Free), 30)
    );
    let usage = domain.users.usage(ada).await.expect("usage");
    assert_eq!((usage.jobs_today, usage.storage_bytes), (4, 2048));
    assert_eq!(usage.period_start, quota.period_start);
}

#[tokio::test]
async fn an_account_is_deleted_jobs_first_and_profile_last() {
    let domain = domain().await;
    let ada = Uuid::new_v4();
    domain.users.profile(ada).await.expect("profile");
    let caller = crate::peers::Credentials::none();
    domain
        .users
        .delete_account(ada, &caller)
        .await
        .expect("deleted");
    assert_eq!(
        domain.peers.logged(),
        ["jobs deleted", "images deleted", "account deleted"]
    );
    assert!(domain.users.store.get(ada).await.expect("read").is_none());
}

#[tokio::test]
async fn tier_and_settings_changes_are_audited_once_each() {
    let domain = domain().await;
    let ada = Uuid::new_v4();
    domain
        .users
        .set_tier(ada, Tier::Pro, &origin())
        .await
        .expect("pro");
    let week = Settings {
        retention_days: Some(7),
        ..Settings::default()
    };
    domain
        .users
        .update_settings(ada, week, None, &origin())
        .await
        .expect("stored");
    let entries = audited(&domain);
    let actions: Vec<_> = entries.iter().map(|entry| entry.action.as_str()).collect();
    assert_eq!(actions, ["user.tier_changed", "user.settings_changed"]);
    let tier = &entries[0];
    assert_eq!(tier.subject_user_id, Some(ada));
    assert_eq!(tier.actor_user_id, None, "the operator acted, not a user");
    assert_eq!(tier.origin, origin());
    assert_eq!(tier.details["previous_tier"], "free");
    assert_eq!(tier.details["tier"], "pro");
    let settings = &entries[1];
    assert_eq!(settings.actor_user_id, Some(ada));
    assert_eq!(
        settings.details["changed"],
        serde_json::json!(["retention_days"])
    );
}

#[tokio::test]
async fn a_change_the_audit_log_cannot_record_does_not_happen() {
    let domain = domain().await;
    let ada = Uuid::new_v4();
    domain.users.profile(ada).await.expect("profile");
    domain
        .peers
        .audit_down
        .store(true, std::sync::atomic::Ordering::SeqCst);

    let refused = domain.users.set_tier(ada, Tier::Pro, &origin()).await;
    assert!(
        matches!(&refused, Err(err) if atelier_common::ServiceError::code(err) == atelier_common::ErrorCode::Unavailable),
        "{refused:?}"
    );
    let week = Settings {
        retention_days: Some(7),
        ..Settings::default()
    };
    let refused = domain
        .users
        .update_settings(ada, week, None, &origin())
        .await;
    assert!(
        matches!(refused, Err(UserError::Upstream(_))),
        "{refused:?}"
    );

    let profile = domain.users.profile(ada).await.expect("profile");
    assert_eq!(profile.tier, Tier::Free, "the tier did not change");
    assert_eq!(profile.settings_revision, 0, "the settings did not change");
    assert_eq!(profile.settings.retention_days, None);
    assert!(domain.peers.logged().is_empty(), "no retention was applied");
    assert!(audited(&domain).is_empty());
}
