//! The catalogue as callers see it: listed from an in-process cache with a TTL,
//! validators compiled once per workflow version.

pub mod catalogue;
pub mod estimate;
pub mod manage;
pub mod schema;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use atelier_common::redis::Redis;
use fred::prelude::{Expiration, KeysInterface};
use jsonschema::Validator;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tokio::sync::RwLock;

use crate::{error::WorkflowError, store::Store};
use catalogue::Entry;
use estimate::{JobEstimate, Limits, OutputSpec, Price};
use schema::Violation;

/// A workflow as the catalogue keeps it: a fal endpoint with the schema of its
/// parameters, their defaults and, once fal gave one, its price.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Definition {
    pub id: String,
    pub name: String,
    pub description: String,
    pub category: String,
    pub fal_endpoint: String,
    pub parameters_schema: Value,
    pub defaults: Value,
    pub is_active: bool,
    /// Display order within the catalogue file.
    pub position: i32,
    pub version: i32,
    pub updated_at: OffsetDateTime,
    /// fal's unit price of the endpoint, in `currency`, when known.
    #[serde(default)]
    pub unit_price: Option<f64>,
    /// fal's billing unit: `image`, `megapixels`, `second`, ...
    #[serde(default)]
    pub price_unit: Option<String>,
    #[serde(default)]
    pub currency: Option<String>,
    /// When the price was read from fal.
    #[serde(default)]
    pub priced_at: Option<OffsetDateTime>,
    /// The schema is pinned: fal's refresh leaves it (a newer one waits in
    /// `latest_schema`).
    #[serde(default)]
    pub pinned: bool,
    /// Added by an administrator, not from the catalogue file.
    #[serde(default)]
    pub custom: bool,
    /// An administrator changed its metadata, defaults or state: the catalogue
    /// file no longer overrides them.
    #[serde(default)]
    pub edited: bool,
    /// A newer schema fal offered while the workflow was pinned.
    #[serde(default)]
    pub latest_schema: Option<Value>,
}

impl Definition {
    /// The version the workflow would have with the latest schema fal offers.
    pub fn latest_version(&self) -> i32 {
        self.version + i32::from(self.latest_schema.is_some())
    }
}

/// A workflow with its compiled validator.
#[derive(Clone)]
pub struct Workflow {
    pub row: Definition,
    pub validator: Arc<Validator>,
}

/// Parameters that passed validation.
#[derive(Clone, Debug)]
pub struct Validated {
    pub parameters: Map<String, Value>,
    pub version: i32,
    pub fal_endpoint: String,
    pub name: String,
}

struct Snapshot {
    loaded: Instant,
    workflows: Arc<Vec<Workflow>>,
}

pub struct Catalogue {
    store: Store,
    /// Each workflow's output description, from the catalogue file it was
    /// seeded with.
    outputs: std::sync::RwLock<HashMap<String, OutputSpec>>,
    ttl: Duration,
    cache: RwLock<Option<Snapshot>>,
    /// Shared by every replica when Redis is configured.
    shared: Option<Redis>,
}

/// The Redis key of the cached catalogue.
const SHARED_KEY: &str = "workflow:catalogue:v2";

impl Catalogue {
    pub fn new(store: Store, ttl: Duration) -> Arc<Self> {
        Self::with_shared_cache(store, ttl, None)
    }

    /// A catalogue whose listing is also cached in Redis, for every replica.
    pub fn with_shared_cache(store: Store, ttl: Duration, shared: Option<Redis>) -> Arc<Self> {
        Arc::new(Self {
            store,
            outputs: std::sync::RwLock::new(HashMap::new()),
            ttl,
            cache: RwLock::new(None),
            shared,
        })
    }

    /// Brings the table in line with the catalogue file: new workflows are added,
    /// changed ones updated with a new version.
    pub async fn seed(&self, entries: &[Entry], now: OffsetDateTime) -> Result<(), WorkflowError> {
        {
            let mut outputs = self
                .outputs
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for entry in entries {
                outputs.insert(entry.id.clone(), entry.output.clone());
            }
        }
        for (position, entry) in entries.iter().enumerate() {
            schema::compile(&entry.parameters_schema)
                .map_err(|err| anyhow::anyhow!("workflow {}: invalid schema: {err}", entry.id))?;
            let defaults = Value::Object(schema::defaults_of(&entry.parameters_schema));
            let existing = self.store.get(&entry.id).await?;
            let candidate = Definition {
                id: entry.id.clone(),
                name: entry.name.clone(),
                description: entry.description.clone(),
                category: entry.category.clone(),
                fal_endpoint: entry.fal_endpoint.clone(),
                // The display order is kept in the schema itself: PostgreSQL's jsonb
                // does not keep key order.
                parameters_schema: schema::with_order(&entry.parameters_schema),
                defaults,
                is_active: entry.active,
                position: position as i32,
                version: 1,
                updated_at: now,
                unit_price: None,
                price_unit: None,
                currency: None,
                priced_at: None,
                pinned: false,
                custom: false,
                edited: false,
                latest_schema: None,
            };
            let candidate = match &existing {
                Some(row) => keep_managed(row, candidate),
                None => candidate,
            };
            match existing {
                Some(row) if same(&row, &candidate) => {}
                Some(row) => {
                    self.store
                        .upsert(Definition {
                            version: row.version + 1,
                            ..candidate
                        })
                        .await?;
                }
                None => self.store.upsert(candidate).await?,
            }
        }
        self.invalidate().await;
        Ok(())
    }

    /// Replaces a workflow's schema (refreshed from fal), bumping its version when
    /// it changed. Returns whether it did.
    pub async fn replace_schema(
        &self,
        id: &str,
        schema: Value,
        now: OffsetDateTime,
    ) -> Result<bool, WorkflowError> {
        schema::compile(&schema)
            .map_err(|err| anyhow::anyhow!("workflow {id}: invalid schema: {err}"))?;
        let row = self.store.get(id).await?.ok_or(WorkflowError::NotFound)?;
        let schema = schema::with_order(&schema);
        if row.pinned {
            // Kept aside for an administrator to see and take (by unpinning).
            let latest = (row.parameters_schema != schema).then_some(schema);
            if row.latest_schema != latest {
                self.store.set_latest_schema(id, latest).await?;
                self.invalidate().await;
            }
            return Ok(false);
        }
        if row.parameters_schema == schema {
            return Ok(false);
        }
        let defaults = Value::Object(schema::defaults_of(&schema));
        self.store
            .upsert(Definition {
                parameters_schema: schema,
                defaults,
                version: row.version + 1,
                updated_at: now,
                ..row
            })
            .await?;
        self.invalidate().await;
        Ok(true)
    }

    /// Records fal's prices: each workflow whose endpoint is among `prices`
    /// takes its price (stamped `now`); the others keep what they had. Returns
    /// how many workflows were priced.
    pub async fn set_prices(
        &self,
        prices: &[atelier_fal::Price],
        now: OffsetDateTime,
    ) -> Result<usize, WorkflowError> {
        let mut priced = 0;
        for row in self.store.all().await? {
            if let Some(price) = prices
                .iter()
                .find(|price| price.endpoint_id == row.fal_endpoint)
            {
                self.store
                    .set_price(&row.id, price.unit_price, &price.unit, &price.currency, now)
                    .await?;
                priced += 1;
            }
        }
        self.invalidate().await;
        Ok(priced)
    }

    pub async fn invalidate(&self) {
        *self.cache.write().await = None;
        if let Some(redis) = &self.shared
            && let Err(err) = redis.client.del::<i64, _>(redis.key(SHARED_KEY)).await
        {
            tracing::warn!(error = %err, "cannot drop the shared workflow cache");
        }
    }

    /// The rows: from Redis when it has them, else from the database (and then
    /// into Redis for the other replicas).
    async fn rows(&self) -> Result<Vec<Definition>, WorkflowError> {
        let Some(redis) = &self.shared else {
            return Ok(self.store.all().await?);
        };
        let key = redis.key(SHARED_KEY);
        match redis.client.get::<Option<String>, _>(&key).await {
            Ok(Some(cached)) => match serde_json::from_str(&cached) {
                Ok(rows) => return Ok(rows),
                Err(err) => {
                    tracing::warn!(error = %err, "ignoring an unreadable shared workflow cache")
                }
            },
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "shared workflow cache unavailable"),
        }
        let rows = self.store.all().await?;
        if let Ok(text) = serde_json::to_string(&rows) {
            let expiry = Some(Expiration::EX(self.ttl.as_secs().max(1) as i64));
            if let Err(err) = redis
                .client
                .set::<(), _, _>(&key, text, expiry, None, false)
                .await
            {
                tracing::warn!(error = %err, "cannot fill the shared workflow cache");
            }
        }
        Ok(rows)
    }

    /// Every workflow, from the cache while it is fresh.
    pub async fn all(&self) -> Result<Arc<Vec<Workflow>>, WorkflowError> {
        if let Some(snapshot) = self.cache.read().await.as_ref()
            && snapshot.loaded.elapsed() < self.ttl
        {
            return Ok(snapshot.workflows.clone());
        }
        let mut cache = self.cache.write().await;
        if let Some(snapshot) = cache.as_ref()
            && snapshot.loaded.elapsed() < self.ttl
        {
            return Ok(snapshot.workflows.clone());
        }
        let mut compiled: HashMap<(String, i32), Arc<Validator>> = HashMap::new();
        let mut workflows = Vec::new();
        for row in self.rows().await? {
            let key = (row.id.clone(), row.version);
            let validator = match compiled.get(&key) {
                Some(validator) => validator.clone(),
                None => {
                    let validator =
                        Arc::new(schema::compile(&row.parameters_schema).map_err(|err| {
                            anyhow::anyhow!("workflow {}: invalid schema: {err}", row.id)
                        })?);
                    compiled.insert(key, validator.clone());
                    validator
                }
            };
            workflows.push(Workflow { row, validator });
        }
        let workflows = Arc::new(workflows);
        *cache = Some(Snapshot {
            loaded: Instant::now(),
            workflows: workflows.clone(),
        });
        metrics::counter!("atelier_workflow_cache_loads_total").increment(1);
        Ok(workflows)
    }

    /// Workflows of `category` (all when `None`), active ones unless asked.
    pub async fn list(
        &self,
        category: Option<&str>,
        include_inactive: bool,
    ) -> Result<Vec<Workflow>, WorkflowError> {
        Ok(self
            .all()
            .await?
            .iter()
            .filter(|workflow| include_inactive || workflow.row.is_active)
            .filter(|workflow| category.is_none_or(|category| workflow.row.category == category))
            .cloned()
            .collect())
    }

    pub async fn get(&self, id: &str) -> Result<Workflow, WorkflowError> {
        self.all()
            .await?
            .iter()
            .find(|workflow| workflow.row.id == id)
            .cloned()
            .ok_or(WorkflowError::NotFound)
    }

    /// Checks `params` for workflow `id`: the parameters to run with, or every
    /// violation.
    pub async fn validate(
        &self,
        id: &str,
        params: Map<String, Value>,
    ) -> Result<Result<Validated, Vec<Violation>>, WorkflowError> {
        let workflow = self.get(id).await?;
        if !workflow.row.is_active {
            return Err(WorkflowError::Inactive);
        }
        let defaults = workflow
            .row
            .defaults
            .as_object()
            .cloned()
            .unwrap_or_default();
        Ok(
            schema::validate(&workflow.validator, &defaults, params).map(|parameters| Validated {
                parameters,
                version: workflow.row.version,
                fal_endpoint: workflow.row.fal_endpoint.clone(),
                name: workflow.row.name.clone(),
            }),
        )
    }
}

/// What running a workflow on some inputs would give.
#[derive(Clone, Debug)]
pub struct Estimate {
    /// The parameters as checked, with the workflow they were checked against.
    pub validated: Validated,
    pub price: Option<Price>,
    /// Per input, in order: (image id, width, height, estimate).
    pub jobs: Vec<(String, u32, u32, JobEstimate)>,
}

impl Catalogue {
    /// Estimates workflow `id` with `params` on `inputs` (image id, width,
    /// height); invalid parameters give their violations.
    pub async fn estimate(
        &self,
        id: &str,
        params: Map<String, Value>,
        inputs: &[(String, u32, u32)],
        limits: Limits,
    ) -> Result<Result<Estimate, Vec<Violation>>, WorkflowError> {
        let workflow = self.get(id).await?;
        let validated = match self.validate(id, params).await? {
            Ok(validated) => validated,
            Err(violations) => return Ok(Err(violations)),
        };
        let spec = self
            .outputs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
            .unwrap_or_else(|| OutputSpec {
                scale: 1.0,
                format: "png".to_owned(),
                ..OutputSpec::default()
            });
        let row = &workflow.row;
        let price = match (&row.unit_price, &row.price_unit, &row.currency) {
            (Some(unit_price), Some(unit), Some(currency)) => Some(Price {
                unit_price: *unit_price,
                unit: unit.clone(),
                currency: currency.clone(),
            }),
            _ => None,
        };
        let jobs = inputs
            .iter()
            .map(|(image_id, width, height)| {
                let estimate = spec.estimate(
                    *width,
                    *height,
                    &validated.parameters,
                    price.as_ref(),
                    limits,
                );
                (image_id.clone(), *width, *height, estimate)
            })
            .collect();
        Ok(Ok(Estimate {
            validated,
            price,
            jobs,
        }))
    }
}

/// The catalogue file's `candidate` for `row`, less what an administrator
/// manages: their edits, and a pinned schema (the file's waits as the latest).
fn keep_managed(row: &Definition, candidate: Definition) -> Definition {
    let mut merged = Definition {
        pinned: row.pinned,
        custom: row.custom,
        edited: row.edited,
        latest_schema: row.latest_schema.clone(),
        ..candidate
    };
    if row.edited {
        merged.name = row.name.clone();
        merged.description = row.description.clone();
        merged.category = row.category.clone();
        merged.is_active = row.is_active;
        merged.defaults = row.defaults.clone();
    }
    if row.pinned {
        if merged.parameters_schema != row.parameters_schema {
            merged.latest_schema = Some(merged.parameters_schema.clone());
        }
        merged.parameters_schema = row.parameters_schema.clone();
        merged.defaults = row.defaults.clone();
    }
    merged
}

fn same(a: &Definition, b: &Definition) -> bool {
    a.name == b.name
        && a.description == b.description
        && a.category == b.category
        && a.fal_endpoint == b.fal_endpoint
        && a.parameters_schema == b.parameters_schema
        && a.is_active == b.is_active
        && a.position == b.position
        && a.defaults == b.defaults
        && a.latest_schema == b.latest_schema
}
