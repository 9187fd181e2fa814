//! The audit log end to end, through the gateway: each audited action, done the
//! way a user or the operator does it, writes exactly one entry with who, what,
//! from where and the request id; only administrators read the log over REST; and
//! neither the REST API nor the gRPC contract has any way to change an entry.

use atelier_common::identity::ServiceName;
use atelier_proto::{
    access::METHODS,
    user::v1::{
        SetSubscriptionTierRequest, SubscriptionTier, user_service_client::UserServiceClient,
    },
};
use atelier_testbed::{Backend, TestPlatform};
use atelier_testkit::{
    backends, fixtures,
    rest::{PASSWORD, User, get, grpc_web_status, sign_up, upload},
};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

/// Every entry as an admin exports it (JSON lines), less the exports themselves.
async fn exported(platform: &TestPlatform, admin: &User) -> Vec<Value> {
    let response = Client::new()
        .get(format!(
            "{}/api/admin/audit-events/export",
            platform.gateway_url
        ))
        .bearer_auth(&admin.token)
        .send()
        .await
        .expect("export");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().expect("type"),
        "application/x-ndjson"
    );
    let text = response.text().await.expect("lines");
    text.lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("one JSON object a line"))
        .filter(|entry| entry["action"] != "audit.exported")
        .collect()
}

fn actions(entries: &[Value]) -> Vec<&str> {
    entries
        .iter()
        .map(|entry| entry["action"].as_str().expect("action"))
        .collect()
}

/// The entries an action added after the `seen` first ones: exactly `wanted`,
/// each from the test's address with `request_id`.
fn step(entries: Vec<Value>, seen: &mut usize, wanted: &[&str], request_id: &str) -> Vec<Value> {
    let new = entries[*seen..].to_vec();
    *seen = entries.len();
    assert_eq!(actions(&new), wanted, "{new:#?}");
    for entry in &new {
        assert_eq!(entry["request_id"], request_id, "{entry}");
        assert_eq!(entry["client_ip"], "127.0.0.1", "{entry}");
    }
    new
}

backends!(every_audited_action_writes_one_entry, the_log_is_for_admins);

async fn every_audited_action_writes_one_entry(backend: Backend) {
    let platform = TestPlatform::spawn(backend).await;
    let admin = sign_up(&platform, "root@example.com").await;
    let admin = platform.make_admin(&admin).await;
    let ada = sign_up(&platform, "ada@example.com").await;
    let http = Client::new();
    let url = |path: &str| format!("{}{path}", platform.gateway_url);
    let mut seen = exported(&platform, &admin).await.len();

    // Sign-ins, failed and not, with the user agent the client sent.
    let failed = http
        .post(url("/api/auth/login"))
        .header("x-request-id", "req-failed")
        .header("user-agent", "audit-client/2")
        .header("x-atelier-client-ip", "10.9.9.9")
        .json(&json!({"email": "ada@example.com", "password": "not the password"}))
        .send()
        .await
        .expect("login");
    assert_eq!(failed.status(), StatusCode::UNAUTHORIZED);
    let new = step(
        exported(&platform, &admin).await,
        &mut seen,
        &["auth.sign_in_failed"],
        "req-failed",
    );
    assert_eq!(new[0]["details"]["email"], "ada@example.com");
    assert_eq!(new[0]["outcome"], "failure");
    assert_eq!(
        new[0]["user_agent"], "audit-client/2",
        "the client cannot name its address"
    );
    let login: Value = http
        .post(url("/api/auth/login"))
        .header("x-request-id", "req-login")
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("tokens");
    let new = step(
        exported(&platform, &admin).await,
        &mut seen,
        &["auth.sign_in"],
        "req-login",
    );
    assert_eq!(new[0]["actor_user_id"], ada.id.as_str());
    let old_refresh = login["refresh_token"].as_str().expect("refresh").to_owned();

    // Refresh-token reuse.
    let refreshed = http
        .post(url("/api/auth/refresh"))
        .json(&json!({"refresh_token": old_refresh}))
        .send()
        .await
        .expect("refresh");
    assert_eq!(refreshed.status(), StatusCode::OK);
    let successor: Value = refreshed.json().await.expect("tokens");
    // Its successor used, the rotated token is past its second chance.
    let again = http
        .post(url("/api/auth/refresh"))
        .json(&json!({"refresh_token": successor["refresh_token"]}))
        .send()
        .await
        .expect("refresh");
    assert_eq!(again.status(), StatusCode::OK);
    let reused = http
        .post(url("/api/auth/refresh"))
        .header("x-request-id", "req-reuse")
        .json(&json!({"refresh_token": old_refresh}))
        .send()
        .await
        .expect("reuse");
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);
    step(
        exported(&platform, &admin).await,
        &mut seen,
        &["auth.refresh_reuse"],
        "req-reuse",
    );

    // Settings (a user's change) and tier (the operator's).
    let settings = http
        .put(url("/api/users/settings"))
        .bearer_auth(&ada.token)
        .header("x-request-id", "req-settings")
        .json(&json!({"retention_days": 7}))
        .send()
        .await
        .expect("settings");
    assert_eq!(
        settings.status(),
        StatusCode::OK,
        "{:?}",
        settings.text().await
    );
    let new = step(
        exported(&platform, &admin).await,
        &mut seen,
        &["user.settings_changed"],
        "req-settings",
    );
    assert_eq!(new[0]["actor_user_id"], ada.id.as_str());
    assert_eq!(new[0]["actor_service"], "user");
    assert_eq!(new[0]["details"]["changed"], json!(["retention_days"]));
    UserServiceClient::new(platform.channel_as(ServiceName::Operator, &platform.user_url))
        .set_subscription_tier(SetSubscriptionTierRequest {
            user_id: ada.id.clone(),
            tier: SubscriptionTier::Pro as i32,
        })
        .await
        .expect("tier set");
    let entries = exported(&platform, &admin).await;
    let tier = entries.last().expect("an entry").clone();
    seen = entries.len();
    assert_eq!(tier["action"], "user.tier_changed");
    assert_eq!(tier["subject_user_id"], ada.id.as_str());
    assert_eq!(
        tier["actor_user_id"],
        Value::Null,
        "the operator, not a user"
    );
    assert_eq!(tier["details"]["tier"], "pro");

    // An image's deletion.
    let image = upload(&platform, &ada, fixtures::png(32, 32)).await;
    let deleted = http
        .delete(url(&format!("/api/images/{image}")))
        .bearer_auth(&ada.token)
        .header("x-request-id", "req-image")
        .send()
        .await
        .expect("delete image");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let new = step(
        exported(&platform, &admin).await,
        &mut seen,
        &["image.deleted"],
        "req-image",
    );
    assert_eq!(new[0]["target"], json!({"kind": "image", "id": image}));
    assert_eq!(new[0]["actor_service"], "image");

    // The password, then signing out everywhere.
    let weak = http
        .post(url("/api/auth/password"))
        .bearer_auth(&ada.token)
        .json(&json!({"current_password": PASSWORD, "new_password": "short"}))
        .send()
        .await
        .expect("password");
    assert_eq!(weak.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = weak.json().await.expect("problem");
    assert_eq!(problem["errors"][0]["field"], "new_password", "{problem}");
    let wrong = http
        .post(url("/api/auth/password"))
        .bearer_auth(&ada.token)
        .json(&json!({"current_password": "not my password", "new_password": "a brand new passphrase"}))
        .send()
        .await
        .expect("password");
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let changed = http
        .post(url("/api/auth/password"))
        .bearer_auth(&ada.token)
        .header("x-request-id", "req-password")
        .json(&json!({
            "current_password": PASSWORD,
            "new_password": "a brand new passphrase",
            "refresh_token": ada.refresh_token,
        }))
        .send()
        .await
        .expect("password");
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    step(
        exported(&platform, &admin).await,
        &mut seen,
        &["auth.password_changed"],
        "req-password",
    );
    let ada_now: Value = http
        .post(url("/api/auth/refresh"))
        .json(&json!({"refresh_token": ada.refresh_token}))
        .send()
        .await
        .expect("refresh")
        .json()
        .await
        .expect("tokens");
    let token = ada_now["access_token"]
        .as_str()
        .expect("the kept session")
        .to_owned();
    let all = http
        .post(url("/api/auth/logout-all"))
        .bearer_auth(&token)
        .header("x-request-id", "req-all")
        .send()
        .await
        .expect("logout all");
    assert_eq!(all.status(), StatusCode::NO_CONTENT);
    step(
        exported(&platform, &admin).await,
        &mut seen,
        &["auth.logout_all"],
        "req-all",
    );

    // The account's deletion: one entry, written by auth as the user service acts
    // for Ada.
    let bob = sign_up(&platform, "bob@example.com").await;
    let gone = http
        .delete(url("/api/users/me"))
        .bearer_auth(&bob.token)
        .header("x-request-id", "req-delete")
        .send()
        .await
        .expect("delete account");
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    let new = step(
        exported(&platform, &admin).await,
        &mut seen,
        &["account.deleted"],
        "req-delete",
    );
    assert_eq!(new[0]["actor_user_id"], bob.id.as_str());
    assert_eq!(new[0]["actor_service"], "user");

    // Reading the log is an action too.
    let (status, _) = get(&platform, &admin, "/api/admin/audit-events?page_size=1").await;
    assert_eq!(status, StatusCode::OK);
    let entries = exported(&platform, &admin).await;
    assert_eq!(actions(&entries[seen..]), ["audit.queried"]);
    let response = Client::new()
        .get(url("/api/admin/audit-events/export?action=audit.exported"))
        .bearer_auth(&admin.token)
        .send()
        .await
        .expect("export");
    let exports = response.text().await.expect("lines");
    assert!(
        exports.lines().count() >= 10,
        "every export recorded: {exports}"
    );
}

async fn the_log_is_for_admins(backend: Backend) {
    let platform = TestPlatform::spawn(backend).await;
    let ada = sign_up(&platform, "ada@example.com").await;
    for path in ["/api/admin/audit-events", "/api/admin/audit-events/export"] {
        let (status, problem) = get(&platform, &ada, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {problem}");
        assert_eq!(problem["status"], 404);
        let anonymous = Client::new()
            .get(format!("{}{path}", platform.gateway_url))
            .send()
            .await
            .expect("anonymous");
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let (status, me) = get(&platform, &ada, "/api/auth/me").await;
    assert_eq!(
        (status, me["role"].as_str()),
        (StatusCode::OK, Some("user"))
    );

    let admin = platform.make_admin(&ada).await;
    let (status, me) = get(&platform, &admin, "/api/auth/me").await;
    assert_eq!(
        (status, me["role"].as_str()),
        (StatusCode::OK, Some("admin"))
    );
    let (status, page) = get(
        &platform,
        &admin,
        format!(
            "/api/admin/audit-events?action=user.&subject_user_id={}",
            ada.id
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        actions(page["events"].as_array().expect("events")),
        ["user.role_changed"]
    );
    let role = &page["events"][0];
    assert_eq!(role["actor_service"], "operator");
    assert_eq!(role["details"]["role"], "admin");
    let (status, problem) = get(
        &platform,
        &admin,
        "/api/admin/audit-events?from=yesterday&page_token=nope&actor_user_id=1",
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let fields: Vec<_> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|error| error["field"].as_str().expect("field"))
        .collect();
    assert_eq!(fields, ["actor_user_id", "from", "page_token"]);

    // No route of the REST API writes to the log, and no method of the contract
    // but recording does.
    let document: Value = Client::new()
        .get(format!("{}/api/openapi.json", platform.gateway_url))
        .send()
        .await
        .expect("document")
        .json()
        .await
        .expect("json");
    for (path, operations) in document["paths"].as_object().expect("paths") {
        if path.contains("audit") {
            let methods: Vec<_> = operations.as_object().expect("operations").keys().collect();
            assert_eq!(methods, ["get"], "{path} only reads");
        }
    }
    let audit: Vec<_> = METHODS
        .iter()
        .filter(|method| method.service() == "atelier.audit.v1.AuditService")
        .map(|method| method.path.rsplit('/').next().expect("name"))
        .collect();
    assert_eq!(
        audit,
        ["RecordAuditEvent", "ListAuditEvents", "ExportAuditEvents"],
        "no method changes or deletes an entry"
    );
    for method in METHODS
        .iter()
        .filter(|method| method.service() == "atelier.audit.v1.AuditService")
    {
        assert!(
            method.path.ends_with("/RecordAuditEvent") || method.admin(),
            "{} is for admins",
            method.path
        );
        assert!(!method.public, "{}", method.path);
    }

    // gRPC-web and gRPC through the gateway: the same rule (no token: refused).
    let grpc = Client::new()
        .post(format!(
            "{}/atelier.audit.v1.AuditService/ListAuditEvents",
            platform.gateway_url
        ))
        .header("content-type", "application/grpc-web+proto")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .expect("grpc-web");
    assert_eq!(
        grpc_web_status(grpc).await.as_deref(),
        Some("16"),
        "unauthenticated without a token"
    );
    let grpc = Client::new()
        .post(format!(
            "{}/atelier.audit.v1.AuditService/ListAuditEvents",
            platform.gateway_url
        ))
        .header("content-type", "application/grpc-web+proto")
        .bearer_auth(&admin.token)
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .expect("grpc-web");
    assert_eq!(grpc.status(), StatusCode::OK);
    assert_eq!(
        grpc_web_status(grpc).await.as_deref(),
        Some("0"),
        "an admin lists over gRPC-web"
    );
}
