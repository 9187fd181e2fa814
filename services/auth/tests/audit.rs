//! The audit log over real gRPC, on PostgreSQL and on SQLite: what the auth
//! service's own actions write, who may read the log, and that nothing (no API,
//! no plain SQL) changes or deletes an entry but the retention purge.

use atelier_auth::{
    domain::audit::{AuditEntry, Origin},
    store::Store,
};
use atelier_common::identity::ServiceName;
use atelier_proto::{
    audit::v1::{self as audit_pb, audit_service_client::AuditServiceClient},
    auth::v1::{self as pb, auth_service_client::AuthServiceClient},
};
use atelier_testbed::{Backend, TestPlatform, tonic_channel::Channel};
use atelier_testkit::backends;
use sea_orm::{ConnectionTrait, DatabaseBackend, Statement};
use tonic::{Code, Request};

const PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "a brand new passphrase";

fn auth(platform: &TestPlatform) -> AuthServiceClient<Channel> {
    AuthServiceClient::new(platform.auth_channel())
}

fn audit_as(platform: &TestPlatform, service: ServiceName) -> AuditServiceClient<Channel> {
    AuditServiceClient::new(platform.channel_as(service, &platform.auth_url))
}

/// `message` as a request from a client the gateway saw at `ip`, with `token`.
fn from_client<T>(message: T, token: Option<&str>, ip: &str, request_id: &str) -> Request<T> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert("x-atelier-client-ip", ip.parse().expect("ip"));
    metadata.insert(
        "x-atelier-user-agent",
        "audit-test/1".parse().expect("agent"),
    );
    metadata.insert("x-request-id", request_id.parse().expect("id"));
    if let Some(token) = token {
        metadata.insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    request
}

async fn register(client: &mut AuthServiceClient<Channel>, email: &str) -> pb::Session {
    client
        .register(pb::RegisterRequest {
            email: email.into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("register")
        .into_inner()
        .session
        .expect("session")
}

/// Every entry, oldest first, read as the operator (which itself records an export).
async fn entries(platform: &TestPlatform) -> Vec<audit_pb::AuditEvent> {
    let mut stream = audit_as(platform, ServiceName::Operator)
        .export_audit_events(audit_pb::ExportAuditEventsRequest { filter: None })
        .await
        .expect("export")
        .into_inner();
    let mut all = Vec::new();
    while let Some(batch) = stream.message().await.expect("batch") {
        all.extend(batch.events);
    }
    all.into_iter()
        .filter(|event| event.action != "audit.exported")
        .collect()
}

fn actions(events: &[audit_pb::AuditEvent]) -> Vec<&str> {
    events.iter().map(|event| event.action.as_str()).collect()
}

backends!(
    each_auth_action_writes_one_entry,
    only_admins_and_the_operator_read_the_log,
    the_log_cannot_be_changed_or_deleted,
);

async fn each_auth_action_writes_one_entry(backend: Backend) {
    let platform = TestPlatform::spawn(backend).await;
    let mut client = auth(&platform);
    let session = register(&mut client, "ada@example.com").await;
    let user_id = session.user.clone().expect("user").id;
    assert!(
        entries(&platform).await.is_empty(),
        "registering is not audited"
    );

    // A failed sign-in records the email attempted, never the password.
    let refused = client
        .login(from_client(
            pb::LoginRequest {
                email: "Ada@Example.com".into(),
                password: "wrong password!".into(),
            },
            None,
            "203.0.113.9",
            "req-failed",
        ))
        .await
        .expect_err("wrong password");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let signed_in = client
        .login(from_client(
            pb::LoginRequest {
                email: "ada@example.com".into(),
                password: PASSWORD.into(),
            },
            None,
            "203.0.113.9",
            "req-login",
        ))
        .await
        .expect("login")
        .into_inner()
        .session
        .expect("session");
    let events = entries(&platform).await;
    assert_eq!(actions(&events), ["auth.sign_in_failed", "auth.sign_in"]);
    let failed = &events[0];
    assert_eq!(
        (
            failed.outcome.as_str(),
            failed.client_ip.as_str(),
            failed.request_id.as_str()
        ),
        ("failure", "203.0.113.9", "req-failed")
    );
    let details = serde_json::to_string(&atelier_common::json::from_struct(failed.details.clone()))
        .expect("json");
    assert!(details.contains("ada@example.com"), "{details}");
    assert!(
        !details.contains("wrong password"),
        "no password is kept: {details}"
    );
    let login = &events[1];
    assert_eq!(login.actor_user_id, user_id);
    assert_eq!(login.subject_user_id, user_id);
    assert_eq!(login.actor_service, "gateway");
    assert_eq!(login.user_agent, "audit-test/1");
    assert_eq!(login.request_id, "req-login");

    // Reusing a rotated refresh token.
    let rotated = client
        .refresh(pb::RefreshRequest {
            refresh_token: signed_in.refresh_token.clone(),
        })
        .await
        .expect("refresh")
        .into_inner()
        .session
        .expect("session");
    // Its successor used, the rotated token is past its second chance.
    client
        .refresh(pb::RefreshRequest {
            refresh_token: rotated.refresh_token,
        })
        .await
        .expect("refresh the successor");
    let reused = client
        .refresh(from_client(
            pb::RefreshRequest {
                refresh_token: signed_in.refresh_token.clone(),
            },
            None,
            "198.51.100.1",
            "req-reuse",
        ))
        .await
        .expect_err("reuse");
    assert_eq!(reused.code(), Code::Unauthenticated);
    let events = entries(&platform).await;
    assert_eq!(
        actions(&events[2..]),
        ["auth.refresh_reuse"],
        "a plain rotation is not audited, its reuse is"
    );
    assert_eq!(events[2].subject_user_id, user_id);
    assert_eq!(events[2].client_ip, "198.51.100.1");

    // Changing the password: the current one is checked, the new one too.
    let wrong = client
        .change_password(from_client(
            pb::ChangePasswordRequest {
                current_password: "not my password".into(),
                new_password: NEW_PASSWORD.into(),
                refresh_token: String::new(),
            },
            Some(&session.access_token),
            "203.0.113.9",
            "req-pw-wrong",
        ))
        .await
        .expect_err("wrong current password");
    assert_eq!(wrong.code(), Code::PermissionDenied);
    let weak = client
        .change_password(from_client(
            pb::ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: "short".into(),
                refresh_token: String::new(),
            },
            Some(&session.access_token),
            "203.0.113.9",
            "req-pw-weak",
        ))
        .await
        .expect_err("weak new password");
    assert_eq!(weak.code(), Code::InvalidArgument);
    let fields: Vec<_> = atelier_common::error::field_violations(&weak)
        .into_iter()
        .map(|violation| violation.field)
        .collect();
    assert_eq!(fields, ["new_password"]);
    let changed = client
        .change_password(from_client(
            pb::ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: NEW_PASSWORD.into(),
                refresh_token: session.refresh_token.clone(),
            },
            Some(&session.access_token),
            "203.0.113.9",
            "req-pw",
        ))
        .await
        .expect("password changed")
        .into_inner();
    assert_eq!(
        changed.revoked_count, 0,
        "the other session was revoked by its reuse"
    );
    // The kept session refreshes; the old password no longer signs in.
    let kept = client
        .refresh(pb::RefreshRequest {
            refresh_token: session.refresh_token.clone(),
        })
        .await
        .expect("the kept session refreshes")
        .into_inner()
        .session
        .expect("session");
    let old = client
        .login(pb::LoginRequest {
            email: "ada@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect_err("old password");
    assert_eq!(old.code(), Code::Unauthenticated);

    client
        .logout_all(from_client(
            pb::LogoutAllRequest {},
            Some(&kept.access_token),
            "203.0.113.10",
            "req-all",
        ))
        .await
        .expect("logout all");
    let events = entries(&platform).await;
    assert_eq!(
        actions(&events[3..]),
        [
            "auth.password_changed",
            "auth.sign_in_failed",
            "auth.logout_all"
        ],
        "refused password changes change nothing and are not entries"
    );
    let changed = &events[3];
    assert_eq!(
        (changed.actor_user_id.as_str(), changed.request_id.as_str()),
        (user_id.as_str(), "req-pw")
    );
    let all = &events[5];
    assert_eq!(
        (all.actor_user_id.as_str(), all.client_ip.as_str()),
        (user_id.as_str(), "203.0.113.10")
    );

    // The role, by the operator only.
    let mut operator =
        AuthServiceClient::new(platform.channel_as(ServiceName::Operator, &platform.auth_url));
    let refused = client
        .set_user_role(pb::SetUserRoleRequest {
            user_id: user_id.clone(),
            role: "admin".into(),
            email: String::new(),
        })
        .await
        .expect_err("the gateway may not");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let bad = operator
        .set_user_role(pb::SetUserRoleRequest {
            user_id: user_id.clone(),
            role: "root".into(),
            email: String::new(),
        })
        .await
        .expect_err("no such role");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let user = operator
        .set_user_role(pb::SetUserRoleRequest {
            user_id: user_id.clone(),
            role: "admin".into(),
            email: String::new(),
        })
        .await
        .expect("role set")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(user.role, "admin");
    let events = entries(&platform).await;
    assert_eq!(actions(&events[6..]), ["user.role_changed"]);
    let role = &events[6];
    assert_eq!(
        (
            role.actor_service.as_str(),
            role.actor_user_id.as_str(),
            role.subject_user_id.as_str()
        ),
        ("operator", "", user_id.as_str())
    );
    assert_eq!(events.len(), 7, "exactly one entry per action");
}

async fn only_admins_and_the_operator_read_the_log(backend: Backend) {
    let platform = TestPlatform::spawn(backend).await;
    let mut client = auth(&platform);
    let ada = register(&mut client, "ada@example.com").await;
    let ada_id = ada.user.clone().expect("user").id;
    let list = |token: Option<String>| {
        let mut request = Request::new(audit_pb::ListAuditEventsRequest {
            page_size: 1,
            ..Default::default()
        });
        if let Some(token) = token {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("header"),
            );
        }
        request
    };
    let mut as_gateway = audit_as(&platform, ServiceName::Gateway);
    let refused = as_gateway
        .list_audit_events(list(Some(ada.access_token.clone())))
        .await
        .expect_err("not an admin");
    assert_eq!(refused.code(), Code::NotFound);
    let refused = as_gateway
        .list_audit_events(list(None))
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let refused = as_gateway
        .export_audit_events(Request::new(audit_pb::ExportAuditEventsRequest {
            filter: None,
        }))
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    // Services record; they do not read.
    let refused = audit_as(&platform, ServiceName::User)
        .list_audit_events(list(None))
        .await
        .expect_err("a service is no admin");
    assert_eq!(refused.code(), Code::Unauthenticated);

    // The operator reads without a token, and makes Ada an admin.
    let page = audit_as(&platform, ServiceName::Operator)
        .list_audit_events(list(None))
        .await
        .expect("the operator reads")
        .into_inner();
    assert!(page.events.is_empty());
    AuthServiceClient::new(platform.channel_as(ServiceName::Operator, &platform.auth_url))
        .set_user_role(pb::SetUserRoleRequest {
            user_id: ada_id.clone(),
            role: "admin".into(),
            email: String::new(),
        })
        .await
        .expect("role set");
    // Her old token carried the old role: it is refused (once the change has reached
    // this verifier's session cache, through the event bus); a refreshed one is an admin's.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let stale = as_gateway
            .list_audit_events(list(Some(ada.access_token.clone())))
            .await
            .expect_err("the token from before the change");
        if stale.code() == Code::Unauthenticated {
            break;
        }
        assert_eq!(stale.code(), Code::NotFound, "{stale:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "the old token still accepted after 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let admin = client
        .refresh(pb::RefreshRequest {
            refresh_token: ada.refresh_token.clone(),
        })
        .await
        .expect("refresh")
        .into_inner()
        .session
        .expect("session");
    assert_eq!(admin.user.expect("user").role, "admin");
    let page = as_gateway
        .list_audit_events(list(Some(admin.access_token.clone())))
        .await
        .expect("an admin reads")
        .into_inner();
    assert_eq!(actions(&page.events), ["user.role_changed"], "newest first");
    assert!(!page.next_page_token.is_empty());
    let next = as_gateway
        .list_audit_events({
            let mut request = list(Some(admin.access_token.clone()));
            request.get_mut().page_token = page.next_page_token.clone();
            request
        })
        .await
        .expect("next page")
        .into_inner();
    assert_eq!(
        actions(&next.events),
        ["audit.queried"],
        "the operator's reading was recorded too"
    );
    assert!(next.next_page_token.is_empty(), "the last page");

    // Filters: by action prefix and by subject.
    let mut filtered = list(Some(admin.access_token.clone()));
    filtered.get_mut().filter = Some(audit_pb::AuditFilter {
        action_prefix: "user.".into(),
        subject_user_id: ada_id.clone(),
        ..Default::default()
    });
    filtered.get_mut().page_size = 10;
    let page = as_gateway
        .list_audit_events(filtered)
        .await
        .expect("filtered")
        .into_inner();
    assert_eq!(actions(&page.events), ["user.role_changed"]);
    let mut invalid = list(Some(admin.access_token.clone()));
    invalid.get_mut().filter = Some(audit_pb::AuditFilter {
        actor_user_id: "nope".into(),
        ..Default::default()
    });
    invalid.get_mut().page_token = "!!".into();
    let refused = as_gateway
        .list_audit_events(invalid)
        .await
        .expect_err("invalid");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let fields: Vec<_> = atelier_common::error::field_violations(&refused)
        .into_iter()
        .map(|violation| violation.field)
        .collect();
    assert_eq!(fields, ["filter.actor_user_id", "page_token"]);

    // Recording is for services; the id, time and service are the log's own.
    let recorded = audit_as(&platform, ServiceName::Image)
        .record_audit_event(audit_pb::RecordAuditEventRequest {
            event: Some(audit_pb::AuditEvent {
                id: "forged".into(),
                actor_service: "auth".into(),
                action: "image.deleted".into(),
                actor_user_id: ada_id.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("recorded")
        .into_inner();
    let events = entries(&platform).await;
    let last = events.last().expect("an entry");
    assert_eq!(last.id, recorded.id);
    assert_eq!(
        (
            last.action.as_str(),
            last.actor_service.as_str(),
            last.outcome.as_str()
        ),
        ("image.deleted", "image", "success")
    );
    let refused = audit_as(&platform, ServiceName::Image)
        .record_audit_event(audit_pb::RecordAuditEventRequest {
            event: Some(audit_pb::AuditEvent {
                action: "Not An Action".into(),
                ..Default::default()
            }),
        })
        .await
        .expect_err("bad action");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let refused = audit_as(&platform, ServiceName::Operator)
        .record_audit_event(audit_pb::RecordAuditEventRequest {
            event: Some(audit_pb::AuditEvent {
                action: "image.deleted".into(),
                ..Default::default()
            }),
        })
        .await
        .expect_err("not a recording service");
    assert_eq!(refused.code(), Code::PermissionDenied);
}

async fn the_log_cannot_be_changed_or_deleted(backend: Backend) {
    let platform = TestPlatform::spawn(backend).await;
    let mut client = auth(&platform);
    register(&mut client, "ada@example.com").await;
    client
        .login(pb::LoginRequest {
            email: "ada@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("login");
    let db = atelier_common::db::connect(&platform.platform, "auth")
        .await
        .expect("the auth database");
    for statement in [
        "UPDATE audit_events SET action = 'auth.nothing'",
        "DELETE FROM audit_events",
    ] {
        let refused = db.execute_unprepared(statement).await;
        assert!(refused.is_err(), "{statement} went through");
        assert!(
            refused
                .expect_err("refused")
                .to_string()
                .contains("append-only"),
            "{statement}"
        );
    }
    if backend == Backend::Postgres {
        let refused = db.execute_unprepared("TRUNCATE audit_events").await;
        assert!(refused.is_err(), "TRUNCATE went through");
    }
    assert_eq!(
        entries(&platform).await.len(),
        1,
        "the sign-in is still there"
    );

    // The retention purge removes old entries only.
    let store = Store::new(db.clone());
    let now = time::OffsetDateTime::now_utc();
    let origin = Origin {
        actor_service: "operator".into(),
        ..Origin::default()
    };
    let old = AuditEntry::new(
        &origin,
        "user.tier_changed",
        now - time::Duration::days(400),
    );
    store.insert_audit(&old).await.expect("an old entry");
    let purged = store
        .purge_audit(now - time::Duration::days(365))
        .await
        .expect("purge");
    assert_eq!(purged, 1);
    let left = entries(&platform).await;
    assert_eq!(actions(&left), ["auth.sign_in"]);
    let refused = db.execute_unprepared("DELETE FROM audit_events").await;
    assert!(refused.is_err(), "the purge leaves the table guarded");

    if backend == Backend::Postgres {
        // The production role: INSERT and SELECT only, EXECUTE on the purge.
        let role = format!("audit_test_{}", uuid::Uuid::new_v4().simple());
        let schema = "auth";
        for statement in [
            format!("CREATE ROLE {role} NOLOGIN"),
            format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
            format!("GRANT SELECT, INSERT ON {schema}.audit_events TO {role}"),
            format!("REVOKE UPDATE, DELETE, TRUNCATE ON {schema}.audit_events FROM {role}"),
            format!("GRANT EXECUTE ON FUNCTION {schema}.audit_events_purge(timestamptz) TO {role}"),
        ] {
            db.execute_unprepared(&statement).await.expect(&statement);
        }
        let txn = sea_orm::TransactionTrait::begin(&db).await.expect("txn");
        txn.execute_unprepared(&format!("SET LOCAL ROLE {role}"))
            .await
            .expect("set role");
        txn.execute_unprepared("SAVEPOINT s")
            .await
            .expect("savepoint");
        let refused = txn
            .execute_unprepared("SET LOCAL atelier.audit_purge = 'on'; DELETE FROM audit_events")
            .await
            .expect_err("the role may not delete, even marked as the purge");
        assert!(
            refused.to_string().contains("permission denied"),
            "{refused}"
        );
        txn.execute_unprepared("ROLLBACK TO SAVEPOINT s")
            .await
            .expect("rollback");
        let refused = txn
            .execute_unprepared("UPDATE audit_events SET action = 'auth.nothing'")
            .await
            .expect_err("the role may not update");
        assert!(
            refused.to_string().contains("permission denied"),
            "{refused}"
        );
        txn.execute_unprepared("ROLLBACK TO SAVEPOINT s")
            .await
            .expect("rollback");
        let inserted = AuditEntry::new(&origin, "user.tier_changed", now);
        Store::insert_audit_in(&txn, &inserted)
            .await
            .expect("the role inserts");
        let purged = txn
            .query_one_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "SELECT audit_events_purge($1) AS purged",
                [(now - time::Duration::days(30)).into()],
            ))
            .await
            .expect("the role purges through the function");
        assert!(purged.is_some());
        let too_recent = txn
            .execute_unprepared("SELECT audit_events_purge(now())")
            .await;
        assert!(too_recent.is_err(), "the purge keeps the last day");
        drop(txn);
        db.execute_unprepared(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
            .await
            .expect("drop role");
    }
}
