//! Keeps the catalogue in step with fal's platform API, through the one fal client
//! (its retries and circuit breaker): prices from `GET {api}/models/pricing`, and,
//! when a `FAL_KEY` is set, parameter schemas from
//! `GET {api}/models?endpoint_id=<id>&expand=openapi-3.0`, whose request body schema
//! becomes the workflow's. When fal is unreachable or answers nonsense, the last good
//! prices and schemas stay.

use std::{sync::Arc, time::Duration};

use atelier_fal::{EndpointId, FalClient, FalConfig};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::domain::Catalogue;

/// Fields Atelier supplies itself, never the user.
const SUPPLIED: [&str; 3] = ["image_url", "sync_mode", "webhook_url"];
/// `$ref`s are inlined at most this deep.
const MAX_DEPTH: usize = 8;

/// Where prices and schemas come from: fal's platform API (`FAL_API_URL`) with
/// `FAL_KEY`, or the simulator's in the embedded default.
#[derive(Clone, Debug)]
pub struct RefreshConfig {
    pub fal: FalConfig,
    /// `WORKFLOW_REFRESH_SECS`, default 3600.
    pub every: Duration,
    /// Whether parameter schemas follow fal's too, not only prices: set with
    /// `FAL_KEY` (the simulator runs the catalogue's own schemas).
    pub schemas: bool,
}

/// The input schema of `endpoint` from its OpenAPI document, as a parameters
/// schema: `$ref`s inlined, supplied fields removed, unknown fields refused.
pub fn input_schema(openapi: &Value, endpoint: &str) -> Option<Value> {
    let paths = openapi.get("paths")?.as_object()?;
    let operation = paths
        .get(&format!("/{endpoint}"))
        .or_else(|| paths.values().find(|path| path.get("post").is_some()))?
        .get("post")?;
    let body = operation.pointer("/requestBody/content/application~1json/schema")?;
    let mut schema = inline(body, openapi, 0)?;
    let object = schema.as_object_mut()?;
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        for field in SUPPLIED {
            properties.remove(field);
        }
        if let Some(Value::Array(order)) = object.get("x-fal-order-properties").cloned() {
            let mut ordered = Map::new();
            if let Some(Value::Object(properties)) = object.get_mut("properties") {
                for name in order.iter().filter_map(Value::as_str) {
                    if let Some(value) = properties.remove(name) {
                        ordered.insert(name.to_owned(), value);
                    }
                }
                ordered.append(properties);
                *properties = ordered;
            }
        }
    }
    if let Some(Value::Array(required)) = object.get_mut("required") {
        required.retain(|name| name.as_str().is_none_or(|name| !SUPPLIED.contains(&name)));
    }
    object.remove("x-fal-order-properties");
    object.remove("title");
    object.insert("type".into(), "object".into());
    object.insert("additionalProperties".into(), false.into());
    Some(schema)
}

fn inline(schema: &Value, openapi: &Value, depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return None;
    }
    match schema {
        Value::Object(object) => {
            // A `$ref` is replaced by its target; keywords beside it still apply.
            let mut out = match object.get("$ref").and_then(Value::as_str) {
                Some(reference) => {
                    let target = openapi.pointer(reference.strip_prefix('#')?)?;
                    match inline(target, openapi, depth + 1)? {
                        Value::Object(resolved) => resolved,
                        _ => return None,
                    }
                }
                None => Map::new(),
            };
            for (key, value) in object.iter().filter(|(key, _)| *key != "$ref") {
                // OpenAPI 3.0 only; JSON Schema has `type: [.., "null"]` instead.
                if key == "nullable" || key == "examples" && !value.is_array() {
                    continue;
                }
                out.insert(key.clone(), inline(value, openapi, depth + 1)?);
            }
            Some(Value::Object(out))
        }
        Value::Array(items) => items
            .iter()
            .map(|item| inline(item, openapi, depth + 1))
            .collect::<Option<Vec<_>>>()
            .map(Value::Array),
        other => Some(other.clone()),
    }
}

/// One pass over every workflow; returns how many schemas changed.
pub async fn refresh_once(catalogue: &Catalogue, fal: &FalClient) -> usize {
    let Ok(workflows) = catalogue.all().await else {
        return 0;
    };
    let mut changed = 0;
    for workflow in workflows.iter() {
        let endpoint = &workflow.row.fal_endpoint;
        let answer = match EndpointId::parse(endpoint) {
            Ok(id) => fal.openapi(&id).await,
            Err(err) => {
                tracing::warn!(endpoint, error = %err, "not a fal endpoint id, its schema is not refreshed");
                continue;
            }
        };
        let answer = match answer {
            Ok(openapi) => openapi,
            Err(err) => {
                tracing::warn!(endpoint, error = %err, "cannot refresh a workflow schema, keeping the last good one");
                if err.retry_after().is_some() {
                    // The breaker is open: the other endpoints would be refused too.
                    break;
                }
                None
            }
        };
        let Some(schema) = answer
            .as_ref()
            .and_then(|openapi| input_schema(openapi, endpoint))
        else {
            continue;
        };
        match catalogue
            .replace_schema(&workflow.row.id, schema, time::OffsetDateTime::now_utc())
            .await
        {
            Ok(true) => {
                tracing::info!(
                    workflow = workflow.row.id,
                    "workflow schema refreshed from fal"
                );
                changed += 1;
            }
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(workflow = workflow.row.id, error = %err, "refreshed schema rejected")
            }
        }
    }
    changed
}

/// Reads every workflow's price from fal and records it. When fal cannot be
/// reached or answers nonsense, the prices already stored stay. Returns how
/// many workflows were priced.
pub async fn refresh_prices(catalogue: &Catalogue, fal: &FalClient) -> Result<usize, String> {
    let workflows = catalogue.all().await.map_err(|err| err.to_string())?;
    let mut endpoints: Vec<EndpointId> = workflows
        .iter()
        .filter_map(|workflow| EndpointId::parse(&workflow.row.fal_endpoint).ok())
        .collect();
    endpoints.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    endpoints.dedup_by(|a, b| a.as_str() == b.as_str());
    let prices = fal
        .pricing(&endpoints)
        .await
        .map_err(|err| err.to_string())?;
    catalogue
        .set_prices(&prices, time::OffsetDateTime::now_utc())
        .await
        .map_err(|err| err.to_string())
}

/// Refreshes prices, and schemas when `config.schemas`, every `config.every` until
/// `shutdown`, both through one fal client.
pub fn spawn(
    catalogue: Arc<Catalogue>,
    config: RefreshConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let fal = FalClient::new(config.fal)?;
    if config.schemas {
        spawn_schemas(
            catalogue.clone(),
            fal.clone(),
            config.every,
            shutdown.clone(),
        );
    }
    spawn_pricing(catalogue, fal, config.every, shutdown);
    Ok(())
}

/// Refreshes prices every `every`; after a failure, tries again sooner (from 2 s,
/// doubling up to `every`), since fal (or the simulator starting beside this service)
/// may just not be up yet.
fn spawn_pricing(
    catalogue: Arc<Catalogue>,
    fal: FalClient,
    every: Duration,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_secs(2);
        loop {
            let wait = match refresh_prices(&catalogue, &fal).await {
                Ok(priced) => {
                    tracing::info!(priced, "workflow prices refreshed from fal");
                    backoff = Duration::from_secs(2);
                    every
                }
                Err(err) => {
                    tracing::warn!(error = %err, retry_in_secs = backoff.as_secs(), "cannot refresh workflow prices, keeping the last good ones");
                    let wait = backoff.min(every);
                    backoff = (backoff * 2).min(every);
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => break,
            }
        }
    });
}

/// Refreshes schemas every `every`.
fn spawn_schemas(
    catalogue: Arc<Catalogue>,
    fal: FalClient,
    every: Duration,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => { refresh_once(&catalogue, &fal).await; }
                () = shutdown.cancelled() => break,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_request_body_schema_becomes_the_parameters_schema() {
        let openapi = json!({
            "paths": {"/fal-ai/esrgan": {"post": {"requestBody": {"content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/EsrganInput"}}}}}}},
            "components": {"schemas": {
                "EsrganInput": {
                    "title": "EsrganInput",
                    "type": "object",
                    "x-fal-order-properties": ["image_url", "scale", "model"],
                    "required": ["image_url"],
                    "properties": {
                        "model": {"$ref": "#/components/schemas/Model", "default": "RealESRGAN_x4plus"},
                        "image_url": {"type": "string"},
                        "scale": {"type": "number", "minimum": 1, "maximum": 8, "default": 2, "nullable": true}
                    }
                },
                "Model": {"type": "string", "enum": ["RealESRGAN_x4plus", "RealESRGAN_x2plus"]}
            }}
        });
        let schema = input_schema(&openapi, "fal-ai/esrgan").expect("schema");
        let names: Vec<_> = schema["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .cloned()
            .collect();
        assert_eq!(names, ["scale", "model"]);
        assert_eq!(
            schema["properties"]["model"]["enum"][1],
            "RealESRGAN_x2plus"
        );
        assert_eq!(
            schema["properties"]["model"]["default"],
            "RealESRGAN_x4plus"
        );
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["required"], json!([]));
        assert!(schema["properties"]["scale"].get("nullable").is_none());
        crate::schema::compile(&schema).expect("a valid JSON Schema");
        assert!(input_schema(&json!({"paths": {}}), "fal-ai/esrgan").is_none());
    }
}
