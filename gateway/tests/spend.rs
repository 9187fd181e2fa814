//! Spend control and analytics end to end, through the gateway: a job run with the
//! simulator records what fal billed; spend, budgets and alerts per user and for
//! the platform; a budget stop refuses a start with the clear problem and
//! `Retry-After` at the period's end; and every analytics figure (percentiles and
//! CSV included) matches a seeded data set exactly, on PostgreSQL and SQLite.

use std::time::{Duration, Instant};

use atelier_common::identity::ServiceName;
use atelier_proto::spend::v1::{GetMySpendRequest, spend_service_client::SpendServiceClient};
use atelier_testbed::{
    Backend, Options, TestPlatform,
    seed::{SeedJob, jobs},
};
use atelier_testkit::{
    backends, fixtures,
    rest::{User, get, sign_up, start, start_job, upload},
};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use time::{Date, Month, OffsetDateTime, macros::time as at};

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("request");
    let status = response.status();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Waits (at most 30 s) until the workflow service has read the simulator's prices.
async fn priced(platform: &TestPlatform, user: &User) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = get(platform, user, "/api/workflows").await;
        if list["workflows"]
            .as_array()
            .expect("workflows")
            .iter()
            .all(|workflow| workflow["pricing"].is_object())
        {
            return;
        }
        assert!(Instant::now() < deadline, "never priced: {list}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The first day of the month after `at`'s.
fn next_month(at: OffsetDateTime) -> OffsetDateTime {
    let (year, month) = match at.month() {
        Month::December => (at.year() + 1, Month::January),
        month => (at.year(), month.next()),
    };
    Date::from_calendar_date(year, month, 1)
        .expect("date")
        .midnight()
        .assume_utc()
}

/// Moves the processing clock to noon of the 15th of next month, so the
/// seeded days are inside this test's periods whenever it runs; that noon.
fn to_mid_month(platform: &TestPlatform) -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    let target = next_month(now)
        .replace_day(15)
        .expect("day")
        .replace_time(at!(12:00));
    platform
        .processing_clock
        .advance((target - now).try_into().expect("ahead"));
    target
}

backends!(
    a_job_run_at_fal_records_what_it_cost,
    figures_match_a_seeded_data_set,
    a_budget_stops_starts_until_the_period_ends,
    alerts_fire_once_per_period_and_threshold,
);

async fn a_job_run_at_fal_records_what_it_cost(backend: Backend) {
    let platform = TestPlatform::spawn(backend).await;
    let ada = sign_up(&platform, "ada@example.com").await;
    priced(&platform, &ada).await;
    let image = upload(&platform, &ada, fixtures::png(200, 100)).await;
    // Per megapixel of output: 0.025 × (200 × 100) / 1e6.
    let job = start_job(
        &platform,
        &ada,
        &image,
        "flux-image-to-image",
        json!({"prompt": "a fox"}),
    )
    .await;
    let done = atelier_testkit::rest::finished(&platform, &ada, &job).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["estimated_cost"],
        json!({"amount": 0.0005, "currency": "USD"})
    );
    let (_, result) = get(
        &platform,
        &ada,
        format!(
            "/api/images/{}",
            done["result_image_id"].as_str().expect("result")
        ),
    )
    .await;
    let pixels =
        result["width"].as_f64().expect("width") * result["height"].as_f64().expect("height");
    let expected = (0.025 * pixels / 1e6 * 1e6).round() / 1e6;
    assert_eq!(
        done["actual_cost"],
        json!({"amount": expected, "currency": "USD"}),
        "{done}"
    );
    // Per output image: one image (and a mask, not billed) at 0.002.
    let job = start_job(
        &platform,
        &ada,
        &image,
        "birefnet-background-removal",
        json!({}),
    )
    .await;
    let done = atelier_testkit::rest::finished(&platform, &ada, &job).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["actual_cost"],
        json!({"amount": 0.002, "currency": "USD"}),
        "{done}"
    );
    // The user's spend counts both.
    let (status, spend) = get(&platform, &ada, "/api/users/me/spend").await;
    assert_eq!(status, StatusCode::OK, "{spend}");
    let total = ((expected + 0.002) * 1e6).round() / 1e6;
    assert_eq!(spend["day"]["spent"], json!(total), "{spend}");
    assert_eq!(spend["day"]["jobs"], 2);
    assert_eq!(spend["day"]["budget"], Value::Null, "no budget by default");
    assert_eq!(spend["budget_source"], "tier");
}

async fn figures_match_a_seeded_data_set(backend: Backend) {
    let platform = TestPlatform::spawn(backend).await;
    let root = sign_up(&platform, "root@example.com").await;
    let admin = platform.make_admin(&root).await;
    let ada = sign_up(&platform, "ada@example.com").await;
    let bob = sign_up(&platform, "bob@example.com").await;
    let noon = to_mid_month(&platform);
    let day = |d: u8, h: u8, m: u8| {
        noon.replace_day(d)
            .expect("day")
            .replace_time(time::Time::from_hms(h, m, 0).expect("time"))
    };
    let (ada_id, bob_id) = (ada.id.parse().expect("id"), bob.id.parse().expect("id"));
    let job =
        |user, workflow, status, created: OffsetDateTime, wait: Option<i64>, ms, cost| SeedJob {
            user_id: user,
            workflow_id: workflow,
            status,
            created_at: created,
            started_at: wait.map(|secs| created + time::Duration::seconds(secs)),
            processing_time_ms: ms,
            estimated_cost: Some(0.01),
            actual_cost: cost,
        };
    let mut rows = Vec::new();
    // Last month: in no figure of this month.
    rows.push(job(
        ada_id,
        "w-upscale",
        "completed",
        day(15, 1, 0) - time::Duration::days(40),
        Some(1),
        Some(5),
        Some(5.0),
    ));
    // Bob on the 3rd: three completed (10 s in the queue), one cancelled before it ran.
    for ms in [150, 50, 250] {
        rows.push(job(
            bob_id,
            "w-cutout",
            "completed",
            day(3, 9, 0),
            Some(10),
            Some(ms),
            Some(0.002),
        ));
    }
    rows.push(job(
        bob_id,
        "w-cutout",
        "cancelled",
        day(3, 9, 30),
        None,
        None,
        Some(0.0),
    ));
    // Ada on the 14th: a job from before actual costs were kept (its estimate counts).
    let mut legacy = job(
        ada_id,
        "w-upscale",
        "completed",
        day(14, 10, 0),
        Some(2),
        Some(1500),
        None,
    );
    legacy.estimated_cost = Some(0.5);
    rows.push(legacy);
    // Ada today: ten completed, two failed (fal bills nothing for them).
    let times = [900, 100, 500, 300, 700, 200, 800, 400, 600, 1000];
    let waits = [5, 1, 3, 2, 4, 6, 8, 7, 9, 10];
    for (i, (ms, wait)) in times.iter().zip(waits).enumerate() {
        rows.push(job(
            ada_id,
            "w-upscale",
            "completed",
            day(15, 8, i as u8),
            Some(wait),
            Some(*ms),
            Some(0.01),
        ));
    }
    for i in 0..2 {
        rows.push(job(
            ada_id,
            "w-upscale",
            "failed",
            day(15, 9, i),
            Some(1),
            None,
            Some(0.0),
        ));
    }
    jobs(&platform, &rows).await;

    // Each user sees their own spend only.
    let (status, spend) = get(&platform, &ada, "/api/users/me/spend").await;
    assert_eq!(status, StatusCode::OK, "{spend}");
    let month_start = noon.replace_day(1).expect("day").replace_time(at!(0:00));
    let month_end = next_month(noon);
    let rfc = |at: OffsetDateTime| {
        at.format(&time::format_description::well_known::Rfc3339)
            .expect("format")
    };
    assert_eq!(
        spend,
        json!({
            "currency": "USD",
            "day": {"period": "day", "start": rfc(day(15, 0, 0)), "end": rfc(day(15, 0, 0) + time::Duration::days(1)),
                    "spent": 0.1, "reserved": 0.0, "jobs": 12, "budget": null, "percent": null, "remaining": null},
            "month": {"period": "month", "start": rfc(month_start), "end": rfc(month_end),
                      "spent": 0.6, "reserved": 0.0, "jobs": 13, "budget": null, "percent": null, "remaining": null},
            "budget_source": "tier",
            "alert_percent": 80,
            "hard_stop": true,
            "alerts": [],
        })
    );
    let (_, spend) = get(&platform, &bob, "/api/users/me/spend").await;
    assert_eq!(
        (
            &spend["day"]["spent"],
            &spend["day"]["jobs"],
            &spend["month"]["spent"],
            &spend["month"]["jobs"]
        ),
        (&json!(0.0), &json!(0), &json!(0.006), &json!(4)),
        "{spend}"
    );
    // The same over gRPC.
    let reply = SpendServiceClient::new(
        platform.channel_as(ServiceName::Gateway, &platform.processing_url),
    )
    .get_my_spend(bearer(GetMySpendRequest {}, &bob.token))
    .await
    .expect("grpc spend")
    .into_inner();
    assert_eq!(
        reply
            .spend
            .and_then(|spend| spend.month)
            .map(|month| month.spent),
        Some(0.006)
    );

    // The platform's, for the operator.
    let (status, platform_spend) = get(&platform, &admin, "/api/admin/spend").await;
    assert_eq!(status, StatusCode::OK, "{platform_spend}");
    assert_eq!(platform_spend["day"]["spent"], 0.1);
    assert_eq!(platform_spend["day"]["jobs"], 12);
    assert_eq!(platform_spend["month"]["spent"], 0.606);
    assert_eq!(platform_spend["month"]["jobs"], 17);
    assert_eq!(
        platform_spend["top_users"],
        json!([
            {"user_id": ada.id, "cost": 0.6, "jobs": 13},
            {"user_id": bob.id, "cost": 0.006, "jobs": 4},
        ])
    );

    // Every analytics figure, over this month.
    let range = format!(
        "from={}&to={}",
        month_start.date(),
        (month_end - time::Duration::days(1)).date()
    );
    let (status, analytics) = get(&platform, &admin, format!("/api/admin/analytics?{range}")).await;
    assert_eq!(status, StatusCode::OK, "{analytics}");
    let date = |d: u8| day(d, 0, 0).date().to_string();
    assert_eq!(
        analytics,
        json!({
            "from": rfc(month_start),
            "to": rfc(month_end),
            "currency": "USD",
            "totals": {"workflow_id": "all", "jobs": 17, "succeeded": 14, "failed": 2, "cancelled": 1,
                       "success_rate": 0.875, "p50_ms": 400, "p95_ms": 1500,
                       "queue_wait_p50_ms": 5000, "queue_wait_p95_ms": 10000, "cost": 0.606},
            "days": [
                {"date": date(3), "workflow_id": "w-cutout", "jobs": 4, "succeeded": 3, "failed": 0, "cancelled": 1, "cost": 0.006},
                {"date": date(14), "workflow_id": "w-upscale", "jobs": 1, "succeeded": 1, "failed": 0, "cancelled": 0, "cost": 0.5},
                {"date": date(15), "workflow_id": "w-upscale", "jobs": 12, "succeeded": 10, "failed": 2, "cancelled": 0, "cost": 0.1},
            ],
            "workflows": [
                {"workflow_id": "w-cutout", "jobs": 4, "succeeded": 3, "failed": 0, "cancelled": 1,
                 "success_rate": 1.0, "p50_ms": 150, "p95_ms": 250,
                 "queue_wait_p50_ms": 10000, "queue_wait_p95_ms": 10000, "cost": 0.006},
                {"workflow_id": "w-upscale", "jobs": 13, "succeeded": 11, "failed": 2, "cancelled": 0,
                 "success_rate": 0.8462, "p50_ms": 600, "p95_ms": 1500,
                 "queue_wait_p50_ms": 4000, "queue_wait_p95_ms": 10000, "cost": 0.6},
            ],
            "top_users": [
                {"user_id": ada.id, "cost": 0.6, "jobs": 13},
                {"user_id": bob.id, "cost": 0.006, "jobs": 4},
            ],
            "storage_bytes": 0,
            "storage_images": 0,
        })
    );
    let (status, stats) = get(
        &platform,
        &admin,
        format!("/api/admin/analytics/workflows?{range}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(
        stats,
        json!({"workflows": [
            {"workflow_id": "w-cutout", "jobs": 4, "succeeded": 3, "failed": 0, "success_rate": 1.0,
             "p50_ms": 150, "p95_ms": 250, "cost": 0.006},
            {"workflow_id": "w-upscale", "jobs": 13, "succeeded": 11, "failed": 2, "success_rate": 0.8462,
             "p50_ms": 600, "p95_ms": 1500, "cost": 0.6},
        ]})
    );
    let response = Client::new()
        .get(format!(
            "{}/api/admin/analytics/export.csv?{range}",
            platform.gateway_url
        ))
        .bearer_auth(&admin.token)
        .send()
        .await
        .expect("csv");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    assert_eq!(
        response.text().await.expect("csv"),
        format!(
            "date,workflow_id,jobs,succeeded,failed,cancelled,success_rate,p50_ms,p95_ms,queue_wait_p50_ms,queue_wait_p95_ms,cost\n\
             {},w-cutout,4,3,0,1,,,,,,0.006\n\
             {},w-upscale,1,1,0,0,,,,,,0.5\n\
             {},w-upscale,12,10,2,0,,,,,,0.1\n\
             all,w-cutout,4,3,0,1,1,150,250,10000,10000,0.006\n\
             all,w-upscale,13,11,2,0,0.8462,600,1500,4000,10000,0.6\n\
             all,all,17,14,2,1,0.875,400,1500,5000,10000,0.606\n",
            date(3),
            date(14),
            date(15)
        )
    );
    // A range that is not one.
    let (status, problem) = get(&platform, &admin, "/api/admin/analytics?from=2026-13-01").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "from");

    // The operator's routes are no one else's business.
    let http = Client::new();
    let url = |path: &str| format!("{}{path}", platform.gateway_url);
    let budget = format!("/api/admin/users/{}/budget", ada.id);
    for request in [
        http.get(url("/api/admin/spend")),
        http.get(url(&format!("/api/admin/users/{}/spend", bob.id))),
        http.get(url("/api/admin/analytics")),
        http.get(url("/api/admin/analytics/workflows")),
        http.get(url("/api/admin/analytics/export.csv")),
        http.put(url(&budget)).json(&json!({"monthly": 100.0})),
        http.delete(url(&budget)),
    ] {
        let (status, problem) = send(request.bearer_auth(&ada.token)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    }
    let (_, spend) = get(&platform, &ada, "/api/users/me/spend").await;
    assert_eq!(spend["budget_source"], "tier", "nothing was set");
}

/// `message` with `token` as its bearer.
fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request
}

/// A platform whose free tier may spend `monthly` per month.
async fn with_budget(backend: Backend, monthly: f64, hard_stop: bool) -> TestPlatform {
    let mut options = Options::new(backend);
    for tier in atelier_testbed::Tier::ALL {
        options.tiers.get_mut(tier).monthly_budget = Some(monthly);
    }
    options.budgets.hard_stop = hard_stop;
    options.pricing_every = Duration::from_secs(1);
    TestPlatform::spawn_with(options).await
}

async fn a_budget_stops_starts_until_the_period_ends(backend: Backend) {
    // Two background removals (0.002 each) fit, a third does not.
    let platform = with_budget(backend, 0.005, true).await;
    let root = sign_up(&platform, "root@example.com").await;
    let admin = platform.make_admin(&root).await;
    let ada = sign_up(&platform, "ada@example.com").await;
    priced(&platform, &ada).await;
    platform
        .processing_clock
        .advance(Duration::from_secs(3 * 24 * 3600));
    let image = upload(&platform, &ada, fixtures::png(64, 64)).await;
    let body = json!({"image_id": image, "workflow_id": "birefnet-background-removal"});
    for _ in 0..2 {
        let job = start_job(
            &platform,
            &ada,
            &image,
            "birefnet-background-removal",
            json!({}),
        )
        .await;
        atelier_testkit::rest::finished(&platform, &ada, &job).await;
    }
    let (_, spend) = get(&platform, &ada, "/api/users/me/spend").await;
    assert_eq!(spend["month"]["spent"], 0.004, "{spend}");
    assert_eq!(spend["month"]["budget"], 0.005);
    assert_eq!(spend["month"]["remaining"], 0.001);
    assert_eq!(spend["month"]["percent"], 80.0);

    let response = start(&platform, &ada, body.clone(), None).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let now = OffsetDateTime::now_utc() + time::Duration::seconds(3 * 24 * 3600);
    let period_end = next_month(now);
    let retry_after: i64 = response.headers()["retry-after"]
        .to_str()
        .expect("retry-after")
        .parse()
        .expect("seconds");
    let expected = (period_end - now).whole_seconds();
    assert!(
        (retry_after - expected).abs() <= 5,
        "Retry-After {retry_after}, the month ends in {expected} s"
    );
    let problem: Value = response.json().await.expect("problem");
    assert_eq!(
        problem["type"],
        "https://atelier.dev/problems/budget-exceeded"
    );
    assert_eq!(problem["budget_scope"], "user");
    assert_eq!(problem["period"], "month");
    assert_eq!(problem["budget"], 0.005);
    assert_eq!(problem["spent"], 0.004);
    assert_eq!(problem["estimate"], 0.002);
    assert_eq!(problem["currency"], "USD");
    assert_eq!(
        problem["period_end"],
        period_end
            .format(&time::format_description::well_known::Rfc3339)
            .expect("format")
    );
    // A batch is refused as a whole.
    let (status, _) = atelier_testkit::rest::post(
        &platform,
        &ada,
        "/api/processing/batch",
        json!({"image_ids": [image], "workflow_id": "birefnet-background-removal"}),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    // An administrator's budget for the user beats the tier's, until removed.
    let budget = format!("{}/api/admin/users/{}/budget", platform.gateway_url, ada.id);
    let (status, spend) = send(
        Client::new()
            .put(&budget)
            .bearer_auth(&admin.token)
            .json(&json!({"monthly": 1.0, "daily": null})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{spend}");
    assert_eq!(spend["budget_source"], "override");
    assert_eq!(spend["month"]["budget"], 1.0);
    let job = start_job(
        &platform,
        &ada,
        &image,
        "birefnet-background-removal",
        json!({}),
    )
    .await;
    atelier_testkit::rest::finished(&platform, &ada, &job).await;
    let (status, problem) = send(
        Client::new()
            .put(&budget)
            .bearer_auth(&admin.token)
            .json(&json!({"monthly": -1.0})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "monthly");
    // Someone the platform does not know has no budget to set; a malformed id is named.
    for (id, expected) in [
        (
            "0190a000-0000-7000-8000-000000000000",
            StatusCode::NOT_FOUND,
        ),
        ("nope", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let (status, problem) = send(
            Client::new()
                .put(format!(
                    "{}/api/admin/users/{id}/budget",
                    platform.gateway_url
                ))
                .bearer_auth(&admin.token)
                .json(&json!({"monthly": 1.0})),
        )
        .await;
        assert_eq!(status, expected, "{problem}");
    }
    let (status, spend) = send(Client::new().delete(&budget).bearer_auth(&admin.token)).await;
    assert_eq!(status, StatusCode::OK, "{spend}");
    assert_eq!(spend["budget_source"], "tier");
    let response = start(&platform, &ada, body, None).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}

async fn alerts_fire_once_per_period_and_threshold(backend: Backend) {
    // 0.002 a job against 0.005 a month: the 80 % alert at the second job, the
    // 100 % one at the third; with the hard stop off, starts go on.
    let platform = with_budget(backend, 0.005, false).await;
    let ada = sign_up(&platform, "ada@example.com").await;
    priced(&platform, &ada).await;
    let (status, webhook) = atelier_testkit::rest::post(
        &platform,
        &ada,
        "/api/webhooks",
        json!({"url": "http://127.0.0.1:9/hook", "event_types": ["budget.threshold_reached"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{webhook}");
    let image = upload(&platform, &ada, fixtures::png(64, 64)).await;
    let mut thresholds = Vec::new();
    for _ in 0..5 {
        let job = start_job(
            &platform,
            &ada,
            &image,
            "birefnet-background-removal",
            json!({}),
        )
        .await;
        atelier_testkit::rest::finished(&platform, &ada, &job).await;
        let (_, spend) = get(&platform, &ada, "/api/users/me/spend").await;
        thresholds.push(
            spend["alerts"]
                .as_array()
                .expect("alerts")
                .iter()
                .map(|alert| alert["threshold_percent"].as_u64().expect("threshold"))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(
        thresholds,
        [
            vec![],
            vec![80],
            vec![80, 100],
            vec![80, 100],
            vec![80, 100]
        ]
    );
    let (_, spend) = get(&platform, &ada, "/api/users/me/spend").await;
    assert_eq!(spend["alerts"][0]["period"], "month");
    assert_eq!(spend["alerts"][0]["budget"], 0.005);
    assert_eq!(spend["hard_stop"], false);
    // One webhook message per alert.
    let id = webhook["id"].as_str().expect("id");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, deliveries) = get(&platform, &ada, format!("/api/webhooks/{id}/deliveries")).await;
        let events: Vec<&Value> = deliveries["deliveries"]
            .as_array()
            .expect("deliveries")
            .iter()
            .map(|delivery| &delivery["event_type"])
            .collect();
        if events.len() >= 2 {
            assert_eq!(
                events,
                [&json!("budget.threshold_reached"); 2],
                "{deliveries}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{deliveries}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
