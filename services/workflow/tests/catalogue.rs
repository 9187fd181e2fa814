//! The catalogue over REST and gRPC, and the domain's seeding, caching,
//! validation and refresh from fal's model API.

use std::{sync::Arc, time::Duration};

use atelier_common::json::map_to_struct;
use atelier_proto::workflow::v1::{self as pb, workflow_service_client::WorkflowServiceClient};
use atelier_testbed::{Backend, ServiceName, TestPlatform};
use atelier_testkit::{TestDb, backends};
use atelier_workflow::{
    Catalogue,
    catalogue::{Entry, parse},
    domain::manage::{Actor, AuditLog, Change, Management, NewWorkflow},
    error::WorkflowError,
    refresh::{refresh_once, refresh_prices},
    store::Store,
};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

async fn get_json(url: String) -> (StatusCode, Value) {
    let response = Client::new().get(url).send().await.expect("get");
    let status = response.status();
    (status, response.json().await.expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_over_rest() {
    let platform = TestPlatform::spawn(Backend::Postgres).await;
    let base = &platform.gateway_url;

    let (status, all) = get_json(format!("{base}/api/workflows")).await;
    assert_eq!(status, StatusCode::OK);
    let workflows = all["workflows"].as_array().expect("workflows");
    assert!(workflows.len() >= 9);
    assert!(workflows.iter().all(|workflow| workflow["active"] == true));

    let (_, upscalers) = get_json(format!("{base}/api/workflows?category=upscale")).await;
    let ids: Vec<_> = upscalers["workflows"]
        .as_array()
        .expect("list")
        .iter()
        .map(|w| w["id"].clone())
        .collect();
    assert_eq!(
        ids,
        [
            json!("clarity-upscale"),
            json!("esrgan-upscale"),
            json!("aura-sr-upscale")
        ]
    );

    let (status, esrgan) = get_json(format!("{base}/api/workflows/esrgan-upscale")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(esrgan["fal_endpoint"], "fal-ai/esrgan");
    assert_eq!(esrgan["defaults"]["scale"], 2);
    let order: Vec<_> = esrgan["parameters_schema"]["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        order,
        ["scale", "model", "face", "tile", "output_format"],
        "catalogue order kept"
    );

    let (status, schema) = get_json(format!(
        "{base}/api/workflows/flux-image-to-image/parameters"
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["properties"]["strength"]["maximum"], 1);
    assert_eq!(schema["required"], json!(["prompt"]));

    let (status, missing) = get_json(format!("{base}/api/workflows/no-such-thing")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["status"], 404);

    let validate = |id: &str, parameters: Value| {
        Client::new()
            .post(format!("{base}/api/workflows/{id}/validate"))
            .json(&json!({"parameters": parameters}))
            .send()
    };
    let valid: Value = validate(
        "flux-image-to-image",
        json!({"prompt": "a watercolour fox", "num_images": 2}),
    )
    .await
    .expect("validate")
    .json()
    .await
    .expect("json");
    assert_eq!(valid["valid"], true);
    assert_eq!(valid["parameters"]["strength"], 0.95);
    assert_eq!(valid["parameters"]["num_images"], 2);

    let invalid: Value = validate(
        "flux-image-to-image",
        json!({"strength": 2, "num_inference_steps": "many", "output_format": "bmp", "colour": "red"}),
    )
    .await
    .expect("validate")
    .json()
    .await
    .expect("json");
    assert_eq!(invalid["valid"], false);
    let mut found: Vec<(String, String)> = invalid["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| {
            (
                v["field"].as_str().expect("field").to_owned(),
                v["keyword"].as_str().expect("kw").to_owned(),
            )
        })
        .collect();
    found.sort();
    let expected = [
        ("/colour", "additionalProperties"),
        ("/num_inference_steps", "type"),
        ("/output_format", "enum"),
        ("/prompt", "required"),
        ("/strength", "maximum"),
    ];
    assert_eq!(found, expected.map(|(f, k)| (f.to_owned(), k.to_owned())));
    let unknown = validate("no-such-thing", json!({}))
        .await
        .expect("validate");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_over_grpc_takes_struct_numbers() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let channel = platform.channel_as(ServiceName::Gateway, &platform.workflow_url);
    let mut client = WorkflowServiceClient::new(channel);
    let Value::Object(params) = json!({"low_threshold": 10.0, "high_threshold": 250}) else {
        unreachable!()
    };
    let reply = client
        .validate_parameters(pb::ValidateParametersRequest {
            workflow_id: "canny-edges".into(),
            parameters: Some(map_to_struct(&params)),
        })
        .await
        .expect("validate")
        .into_inner();
    assert!(reply.valid, "{:?}", reply.violations);
    assert_eq!(reply.fal_endpoint, "fal-ai/image-preprocessors/canny");
    assert_eq!(reply.workflow_version, 1);
    let Value::Object(params) = json!({"low_threshold": 10.5}) else {
        unreachable!()
    };
    let reply = client
        .validate_parameters(pb::ValidateParametersRequest {
            workflow_id: "canny-edges".into(),
            parameters: Some(map_to_struct(&params)),
        })
        .await
        .expect("validate")
        .into_inner();
    assert!(!reply.valid);
    assert_eq!(reply.violations[0].field, "/low_threshold");
    assert_eq!(reply.violations[0].keyword, "type");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn estimates_over_grpc_with_precise_errors() {
    let platform = TestPlatform::spawn(Backend::Sqlite).await;
    let channel = platform.channel_as(ServiceName::Gateway, &platform.workflow_url);
    let mut client = WorkflowServiceClient::new(channel);
    let request = |workflow: &str, params: Value, inputs: Vec<(u32, u32)>| pb::EstimateRequest {
        workflow_id: workflow.into(),
        parameters: params.as_object().map(map_to_struct),
        inputs: inputs
            .into_iter()
            .enumerate()
            .map(|(index, (width, height))| pb::EstimateInput {
                image_id: format!("image-{index}"),
                width,
                height,
            })
            .collect(),
    };
    let reply = client
        .estimate(request(
            "birefnet-background-removal",
            json!({"output_mask": true, "output_format": "webp"}),
            vec![(4000, 3000)],
        ))
        .await
        .expect("estimate")
        .into_inner();
    let job = &reply.jobs[0];
    let roles: Vec<_> = job
        .outputs
        .iter()
        .map(|output| output.role.as_str())
        .collect();
    assert_eq!(roles, ["image", "mask"]);
    assert_eq!((job.outputs[0].width, job.outputs[0].height), (4000, 3000));
    assert!(job.outputs[0].estimated_bytes >= 4000 * 3000 * 4);
    assert_eq!(
        job.estimated_bytes,
        job.outputs[0].estimated_bytes + job.outputs[1].estimated_bytes
    );
    assert!(job.allowed, "{}", job.reason);
    assert_eq!(reply.max_result_pixels, 100_000_000);
    let parameters = atelier_common::json::from_struct(reply.parameters);
    assert_eq!(parameters["refine_foreground"], true, "defaults filled");

    let refused = client
        .estimate(request(
            "esrgan-upscale",
            json!({"scale": 4}),
            vec![(6000, 4000)],
        ))
        .await
        .expect("estimate")
        .into_inner();
    assert!(!refused.jobs[0].allowed);
    assert_eq!(refused.jobs[0].field, "parameters.scale");
    assert!(
        refused.jobs[0].reason.contains("24000×16000 pixels"),
        "{}",
        refused.jobs[0].reason
    );

    let invalid = client
        .estimate(request(
            "esrgan-upscale",
            json!({"scale": 9}),
            vec![(10, 10)],
        ))
        .await
        .expect_err("invalid");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    let fields: Vec<_> = atelier_common::error::field_violations(&invalid)
        .into_iter()
        .map(|violation| violation.field)
        .collect();
    assert_eq!(fields, ["parameters.scale"]);
    let empty = client
        .estimate(request("esrgan-upscale", json!({}), vec![]))
        .await
        .expect_err("no inputs");
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        atelier_common::error::field_violations(&empty)[0].field,
        "inputs"
    );
    let unknown = client
        .estimate(request("no-such-workflow", json!({}), vec![(10, 10)]))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

async fn catalogue(
    backend: Backend,
    ttl: Duration,
) -> (Arc<Catalogue>, Option<TestDb>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, test_db) =
        atelier_testkit::migrated_database::<atelier_workflow::migration::Migrator>(
            backend,
            "workflow",
            dir.path(),
        )
        .await
        .expect("database");
    (Catalogue::new(Store::new(db), ttl), test_db, dir)
}

fn entries(scale_maximum: u32, active: bool) -> Vec<Entry> {
    parse(
        &json!({"workflows": [{
            "id": "test-upscale",
            "name": "Test upscale",
            "description": "For tests",
            "category": "upscale",
            "fal_endpoint": "fal-ai/esrgan",
            "output": {"scale_parameter": "scale", "format": "png"},
            "active": active,
            "parameters_schema": {
                "type": "object",
                "additionalProperties": false,
                "properties": {"scale": {"type": "number", "minimum": 1, "maximum": scale_maximum, "default": 2}}
            }
        }]})
        .to_string(),
    )
    .expect("catalogue")
}

/// A fal simulator of the test's own, stopped with the token.
async fn simulator() -> (
    atelier_fal_sim::SimHandle,
    tokio_util::sync::CancellationToken,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let sim = atelier_fal_sim::start(
        atelier_fal_sim::SimConfig::default(),
        listener,
        shutdown.clone(),
    )
    .await
    .expect("simulator");
    (sim, shutdown)
}

/// A fal client of the simulator's platform API that does not retry.
fn fal_client(sim: &atelier_fal_sim::SimHandle) -> atelier_fal::FalClient {
    let mut config = atelier_fal::FalConfig::new("test");
    config.queue_url = sim.base_url().to_owned();
    config.api_url = format!("{}/v1", sim.base_url());
    config.retry.max_retries = 0;
    atelier_fal::FalClient::new(config).expect("client")
}

backends!(
    a_pinned_schema_stays_until_unpinned,
    administrators_edits_survive_a_reseed,
    seeding_versions_and_inactive_workflows,
    refresh_from_fal_keeps_the_last_good_schema,
    prices_from_fal_stay_while_fal_is_down_and_survive_a_reseed
);

async fn prices_from_fal_stay_while_fal_is_down_and_survive_a_reseed(backend: Backend) {
    let (catalogue, _db, _dir) = catalogue(backend, Duration::ZERO).await;
    let now = time::OffsetDateTime::now_utc();
    catalogue.seed(&entries(4, true), now).await.expect("seed");
    assert_eq!(
        catalogue
            .get("test-upscale")
            .await
            .expect("get")
            .row
            .unit_price,
        None
    );

    let (sim, shutdown) = simulator().await;
    let fal = fal_client(&sim);

    assert_eq!(refresh_prices(&catalogue, &fal).await, Ok(1));
    let priced = catalogue.get("test-upscale").await.expect("get").row;
    assert_eq!(priced.unit_price, Some(0.00111));
    assert_eq!(priced.price_unit.as_deref(), Some("second"));
    assert_eq!(priced.currency.as_deref(), Some("USD"));
    let priced_at = priced.priced_at.expect("priced at");

    sim.set_failures(atelier_fal_sim::Failures {
        outage_until: Some(std::time::Instant::now() + Duration::from_secs(60)),
        ..Default::default()
    });
    assert!(refresh_prices(&catalogue, &fal).await.is_err());
    let kept = catalogue.get("test-upscale").await.expect("get").row;
    assert_eq!(
        kept.unit_price,
        Some(0.00111),
        "fal down: the last good price stays"
    );
    assert_eq!(kept.priced_at, Some(priced_at));

    // A new catalogue version keeps the price: only fal changes it.
    catalogue
        .seed(&entries(8, true), time::OffsetDateTime::now_utc())
        .await
        .expect("reseed");
    let reseeded = catalogue.get("test-upscale").await.expect("get").row;
    assert_eq!(reseeded.version, 2);
    assert_eq!(reseeded.unit_price, Some(0.00111));
    shutdown.cancel();
}

async fn seeding_versions_and_inactive_workflows(backend: Backend) {
    let (catalogue, _db, _dir) = catalogue(backend, Duration::from_secs(60)).await;
    let now = time::OffsetDateTime::now_utc();
    catalogue.seed(&entries(4, true), now).await.expect("seed");
    catalogue
        .seed(&entries(4, true), now)
        .await
        .expect("seed again");
    assert_eq!(
        catalogue
            .get("test-upscale")
            .await
            .expect("get")
            .row
            .version,
        1,
        "unchanged: same version"
    );

    let first = catalogue.all().await.expect("all");
    let again = catalogue.all().await.expect("all");
    assert!(Arc::ptr_eq(&first, &again), "served from the cache");

    catalogue
        .seed(&entries(8, false), now)
        .await
        .expect("changed");
    let changed = catalogue.get("test-upscale").await.expect("get");
    assert_eq!(changed.row.version, 2);
    assert!(
        catalogue.list(None, false).await.expect("list").is_empty(),
        "inactive hidden"
    );
    assert_eq!(
        catalogue
            .list(Some("upscale"), true)
            .await
            .expect("list")
            .len(),
        1
    );
    let Value::Object(params) = json!({"scale": 6}) else {
        unreachable!()
    };
    assert!(matches!(
        catalogue.validate("test-upscale", params).await,
        Err(WorkflowError::Inactive)
    ));
}

async fn refresh_from_fal_keeps_the_last_good_schema(backend: Backend) {
    let (catalogue, _db, _dir) = catalogue(backend, Duration::ZERO).await;
    catalogue
        .seed(&entries(4, true), time::OffsetDateTime::now_utc())
        .await
        .expect("seed");

    let (sim, shutdown) = simulator().await;
    let fal = fal_client(&sim);

    // The simulator's esrgan takes scales up to 8, and more fields than the entry.
    assert_eq!(refresh_once(&catalogue, &fal).await, 1);
    let refreshed = catalogue.get("test-upscale").await.expect("get");
    assert_eq!(refreshed.row.version, 2);
    let properties = &refreshed.row.parameters_schema["properties"];
    assert_eq!(properties["scale"]["maximum"], 8);
    assert!(properties.get("image_url").is_none());
    assert!(properties.get("sync_mode").is_none());
    assert_eq!(refreshed.row.defaults["model"], "RealESRGAN_x4plus");
    assert_eq!(
        refresh_once(&catalogue, &fal).await,
        0,
        "unchanged: no new version"
    );

    sim.set_failures(atelier_fal_sim::Failures {
        outage_until: Some(std::time::Instant::now() + Duration::from_secs(60)),
        ..Default::default()
    });
    assert_eq!(refresh_once(&catalogue, &fal).await, 0);
    let kept = catalogue.get("test-upscale").await.expect("get");
    assert_eq!(kept.row.version, 2, "fal down: the last good schema stays");
    let Value::Object(params) = json!({"scale": 6}) else {
        unreachable!()
    };
    assert!(
        catalogue
            .validate("test-upscale", params)
            .await
            .expect("validate")
            .is_ok()
    );
    shutdown.cancel();
}

/// The audit log, remembered.
#[derive(Default)]
struct Audited(std::sync::Mutex<Vec<String>>);

#[async_trait::async_trait]
impl AuditLog for Audited {
    async fn record(
        &self,
        record: atelier_common::audit::AuditRecord,
    ) -> Result<(), WorkflowError> {
        self.0.lock().expect("audit").push(record.action);
        Ok(())
    }
}

fn management(
    catalogue: &Arc<Catalogue>,
    sim: &atelier_fal_sim::SimHandle,
) -> (Management, Arc<Audited>) {
    let audited = Arc::new(Audited::default());
    let models = Arc::new(atelier_workflow::peers::FalModels(fal_client(sim)));
    (
        Management::new(catalogue.clone(), audited.clone(), models),
        audited,
    )
}

async fn a_pinned_schema_stays_until_unpinned(backend: Backend) {
    let (catalogue, _db, _dir) = catalogue(backend, Duration::ZERO).await;
    let now = time::OffsetDateTime::now_utc();
    catalogue.seed(&entries(4, true), now).await.expect("seed");
    let (sim, shutdown) = simulator().await;
    let fal = fal_client(&sim);
    let (manage, audited) = management(&catalogue, &sim);

    let pin = Change {
        pinned: Some(true),
        ..Change::default()
    };
    let pinned = manage
        .update("test-upscale", 1, pin.clone(), Actor::default(), now)
        .await
        .expect("pinned");
    assert!(pinned.pinned);
    assert_eq!((pinned.version, pinned.latest_version()), (2, 2));
    assert!(matches!(
        manage
            .update("test-upscale", 1, pin, Actor::default(), now)
            .await,
        Err(WorkflowError::Conflict(1))
    ));

    // fal's schema differs (scales up to 8): the refresh keeps the pinned one
    // and shows the newer as the latest version.
    assert_eq!(refresh_once(&catalogue, &fal).await, 0);
    let kept = catalogue.get("test-upscale").await.expect("get").row;
    assert_eq!(kept.parameters_schema["properties"]["scale"]["maximum"], 4);
    assert_eq!((kept.version, kept.latest_version()), (2, 3));
    // A reseed with the same file keeps it pinned too.
    catalogue
        .seed(&entries(4, true), now)
        .await
        .expect("reseed");
    assert_eq!(
        catalogue
            .get("test-upscale")
            .await
            .expect("get")
            .row
            .version,
        2
    );

    // Unpinned: the latest schema applies.
    let unpinned = manage
        .update(
            "test-upscale",
            2,
            Change {
                pinned: Some(false),
                ..Change::default()
            },
            Actor::default(),
            now,
        )
        .await
        .expect("unpinned");
    assert_eq!((unpinned.version, unpinned.latest_version()), (3, 3));
    assert_eq!(
        unpinned.parameters_schema["properties"]["scale"]["maximum"],
        8
    );
    assert_eq!(unpinned.defaults["model"], "RealESRGAN_x4plus");
    assert_eq!(
        *audited.0.lock().expect("audit"),
        ["workflow.pinned", "workflow.unpinned"]
    );
    shutdown.cancel();
}

async fn administrators_edits_survive_a_reseed(backend: Backend) {
    let (catalogue, _db, _dir) = catalogue(backend, Duration::ZERO).await;
    let now = time::OffsetDateTime::now_utc();
    catalogue.seed(&entries(4, true), now).await.expect("seed");
    let (sim, shutdown) = simulator().await;
    let (manage, audited) = management(&catalogue, &sim);

    let Value::Object(defaults) = json!({"scale": 3}) else {
        unreachable!()
    };
    let edited = manage
        .update(
            "test-upscale",
            1,
            Change {
                name: Some("Sharper".into()),
                defaults: Some(defaults),
                active: Some(false),
                ..Change::default()
            },
            Actor::default(),
            now,
        )
        .await
        .expect("edited");
    assert_eq!((edited.name.as_str(), edited.is_active), ("Sharper", false));
    let Value::Object(bad) = json!({"scale": 9, "nope": true}) else {
        unreachable!()
    };
    let Err(WorkflowError::InvalidInput(violations)) = manage
        .update(
            "test-upscale",
            2,
            Change {
                defaults: Some(bad),
                ..Change::default()
            },
            Actor::default(),
            now,
        )
        .await
    else {
        panic!("defaults out of the schema are refused");
    };
    let mut fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["defaults.nope", "defaults.scale"]);

    catalogue
        .seed(&entries(4, true), now)
        .await
        .expect("reseed");
    let row = catalogue.get("test-upscale").await.expect("get").row;
    assert_eq!(
        (row.name.as_str(), row.is_active, &row.defaults),
        ("Sharper", false, &json!({"scale": 3})),
        "the catalogue file does not undo an administrator's edits"
    );

    // Added from an endpoint: the schema from fal's model API.
    let added = manage
        .add(
            NewWorkflow {
                id: "esrgan-copy".into(),
                fal_endpoint: "fal-ai/esrgan".into(),
                name: "ESRGAN (copy)".into(),
                category: "upscale".into(),
                active: true,
                ..NewWorkflow::default()
            },
            Actor::default(),
            now,
        )
        .await
        .expect("added");
    assert!(added.custom);
    assert_eq!(added.parameters_schema["properties"]["scale"]["maximum"], 8);
    for (new, field) in [
        (
            NewWorkflow {
                id: "nowhere".into(),
                fal_endpoint: "fal-ai/no-such-model".into(),
                name: "Nowhere".into(),
                category: "utility".into(),
                ..NewWorkflow::default()
            },
            "fal_endpoint",
        ),
        (
            NewWorkflow {
                id: "broken".into(),
                fal_endpoint: "fal-ai/esrgan".into(),
                name: "Broken".into(),
                category: "utility".into(),
                parameters_schema: Some(json!({"type": "string"})),
                ..NewWorkflow::default()
            },
            "parameters_schema",
        ),
        (
            NewWorkflow {
                id: "Not An Id".into(),
                fal_endpoint: "fal-ai/esrgan".into(),
                name: "x".into(),
                category: "utility".into(),
                ..NewWorkflow::default()
            },
            "workflow_id",
        ),
    ] {
        let Err(WorkflowError::InvalidInput(violations)) =
            manage.add(new, Actor::default(), now).await
        else {
            panic!("{field}: refused");
        };
        assert_eq!(violations[0].field, field, "{violations:?}");
    }
    let again = NewWorkflow {
        id: "esrgan-copy".into(),
        fal_endpoint: "fal-ai/esrgan".into(),
        name: "Again".into(),
        category: "upscale".into(),
        ..NewWorkflow::default()
    };
    assert!(matches!(
        manage.add(again, Actor::default(), now).await,
        Err(WorkflowError::AlreadyExists)
    ));
    assert_eq!(
        *audited.0.lock().expect("audit"),
        ["workflow.updated", "workflow.added"]
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_listing_through_redis() {
    let url = std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("atelier-test-{}:", uuid::Uuid::new_v4().simple());
    let redis = atelier_common::redis::Redis::connect(&url, prefix)
        .await
        .expect("Redis is not reachable at TEST_REDIS_URL; `make test` starts it");
    let test_db = TestDb::create().await.expect("database");
    let db = atelier_common::db::connect_postgres(&test_db.url, "workflow")
        .await
        .expect("connect");
    atelier_common::db::migrate::<atelier_workflow::migration::Migrator>(&db, "workflow")
        .await
        .expect("migrate");
    let store = Store::new(db);
    let ttl = Duration::from_secs(60);
    let first = Catalogue::with_shared_cache(store.clone(), ttl, Some(redis.clone()));
    first
        .seed(&entries(4, true), time::OffsetDateTime::now_utc())
        .await
        .expect("seed");
    assert_eq!(
        first.all().await.expect("all").len(),
        1,
        "loaded, and shared"
    );

    // Behind every cache's back, the table changes.
    let mut row = store.get("test-upscale").await.expect("get").expect("row");
    row.name = "Renamed in the database".into();
    store.upsert(row).await.expect("upsert");

    let second = Catalogue::with_shared_cache(store.clone(), ttl, Some(redis.clone()));
    let listed = second.get("test-upscale").await.expect("get");
    assert_eq!(
        listed.row.name, "Test upscale",
        "the second replica read Redis, not the table"
    );

    first.invalidate().await;
    let third = Catalogue::with_shared_cache(store, ttl, Some(redis));
    assert_eq!(
        third.get("test-upscale").await.expect("get").row.name,
        "Renamed in the database"
    );
}
