//! What administrators do to the catalogue: enable and disable workflows, edit
//! their metadata and defaults, pin a schema, add a workflow from a fal
//! endpoint. Every change is checked against the version the administrator
//! saw, and audited before it commits.

use std::sync::Arc;

use async_trait::async_trait;
use atelier_common::{
    FieldViolation,
    audit::{AuditRecord, RequestOrigin},
};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Catalogue, Definition, schema};
use crate::error::WorkflowError;

/// The platform's audit log (kept by the auth service).
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends `record`; an error means the change must not happen.
    async fn record(&self, record: AuditRecord) -> Result<(), WorkflowError>;
}

/// fal's model API.
#[async_trait]
pub trait ModelApi: Send + Sync {
    /// The parameters schema of `endpoint` as fal describes it: `None` when fal
    /// knows no such endpoint, `Some(None)` when its description holds no
    /// usable input schema.
    async fn input_schema(&self, endpoint: &str) -> Result<Option<Option<Value>>, WorkflowError>;
}

/// Who asked for a change, for the audit log.
#[derive(Clone, Debug, Default)]
pub struct Actor {
    /// The administrator; `None` for the operator certificate.
    pub user_id: Option<Uuid>,
    pub origin: RequestOrigin,
}

/// A change to a workflow: only what is set changes.
#[derive(Clone, Debug, Default)]
pub struct Change {
    pub name: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub defaults: Option<Map<String, Value>>,
    pub active: Option<bool>,
    pub pinned: Option<bool>,
}

/// A workflow to add.
#[derive(Clone, Debug, Default)]
pub struct NewWorkflow {
    pub id: String,
    pub fal_endpoint: String,
    pub name: String,
    pub description: String,
    pub category: String,
    /// `None`: read from fal's model API.
    pub parameters_schema: Option<Value>,
    /// `None`: the schema's own.
    pub defaults: Option<Map<String, Value>>,
    pub active: bool,
}

/// Where workflows added by administrators come in the display order: after
/// the catalogue file's.
const CUSTOM_POSITION: i32 = 10_000;

pub struct Management {
    catalogue: Arc<Catalogue>,
    audit: Arc<dyn AuditLog>,
    models: Arc<dyn ModelApi>,
}

fn text(
    field: &str,
    value: &str,
    max: usize,
    violations: &mut Vec<FieldViolation>,
) -> Option<String> {
    let value = value.trim();
    if value.is_empty() {
        violations.push(FieldViolation::new(field, "must not be empty"));
    } else if value.chars().count() > max {
        violations.push(FieldViolation::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Some(value.to_owned())
}

/// What is wrong with `defaults` for `schema`, each under `defaults`. A
/// required parameter needs no default.
fn check_defaults(
    schema_value: &Value,
    defaults: &Map<String, Value>,
    violations: &mut Vec<FieldViolation>,
) {
    let Ok(validator) = schema::compile(schema_value) else {
        return;
    };
    if let Err(found) = schema::validate(&validator, &Map::new(), defaults.clone()) {
        violations.extend(
            found
                .into_iter()
                .filter(|violation| violation.keyword != "required")
                .map(|violation| {
                    FieldViolation::new(
                        format!("defaults{}", violation.field.replace('/', ".")),
                        violation.description,
                    )
                }),
        );
    }
}

fn invalid(violations: Vec<FieldViolation>) -> Result<(), WorkflowError> {
    if violations.is_empty() {
        Ok(())
    } else {
        Err(WorkflowError::InvalidInput(violations))
    }
}

/// Whether `id` may name a workflow: lowercase letters, digits and dashes, 1
/// to 64 characters, starting with a letter or digit.
fn is_workflow_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !id.starts_with('-')
}

impl Management {
    pub fn new(
        catalogue: Arc<Catalogue>,
        audit: Arc<dyn AuditLog>,
        models: Arc<dyn ModelApi>,
    ) -> Self {
        Self {
            catalogue,
            audit,
            models,
        }
    }

    pub fn catalogue(&self) -> &Arc<Catalogue> {
        &self.catalogue
    }

    /// Every workflow, disabled ones included, straight from the table.
    pub async fn list(&self) -> Result<Vec<Definition>, WorkflowError> {
        Ok(self.catalogue.store.all().await?)
    }

    /// Applies `change` to workflow `id` if it is still at `expected_version`.
    pub async fn update(
        &self,
        id: &str,
        expected_version: i32,
        change: Change,
        actor: Actor,
        now: OffsetDateTime,
    ) -> Result<Definition, WorkflowError> {
        let row = self
            .catalogue
            .store
            .get(id)
            .await?
            .ok_or(WorkflowError::NotFound)?;
        if row.version != expected_version {
            return Err(WorkflowError::Conflict(expected_version));
        }
        let mut violations = Vec::new();
        let mut next = row.clone();
        let mut changed: Vec<&str> = Vec::new();
        if let Some(name) = &change.name {
            next.name = text("name", name, 200, &mut violations).unwrap_or_default();
            changed.push("name");
        }
        if let Some(description) = &change.description {
            if description.chars().count() > 4000 {
                violations.push(FieldViolation::new(
                    "description",
                    "must be at most 4000 characters",
                ));
            }
            next.description = description.trim().to_owned();
            changed.push("description");
        }
        if let Some(category) = &change.category {
            next.category = text("category", category, 64, &mut violations).unwrap_or_default();
            changed.push("category");
        }
        if let Some(pinned) = change.pinned
            && pinned != row.pinned
        {
            next.pinned = pinned;
            changed.push("pinned");
            if !pinned && let Some(latest) = next.latest_schema.take() {
                // Unpinning takes the schema fal offered meanwhile.
                next.defaults = Value::Object(schema::defaults_of(&latest));
                next.parameters_schema = latest;
                changed.push("parameters_schema");
            }
        }
        if let Some(defaults) = &change.defaults {
            check_defaults(&next.parameters_schema, defaults, &mut violations);
            next.defaults = Value::Object(defaults.clone());
            changed.push("defaults");
        }
        if let Some(active) = change.active
            && active != row.is_active
        {
            next.is_active = active;
            changed.push("active");
        }
        invalid(violations)?;
        if changed.is_empty() {
            return Ok(row);
        }
        next.edited = true;
        next.version = row.version + 1;
        next.updated_at = now;
        let action = match changed.as_slice() {
            ["active"] if next.is_active => "workflow.enabled",
            ["active"] => "workflow.disabled",
            ["pinned"] if next.pinned => "workflow.pinned",
            ["pinned"] | ["pinned", "parameters_schema"] => "workflow.unpinned",
            _ => "workflow.updated",
        };
        let record = AuditRecord::new(action, actor.origin)
            .actor(actor.user_id)
            .target("workflow", id)
            .detail(
                "changed",
                changed
                    .iter()
                    .map(|field| Value::from(*field))
                    .collect::<Vec<_>>(),
            )
            .detail("version", next.version);
        let applied = self
            .catalogue
            .store
            .replace_if(next.clone(), expected_version, self.audit.record(record))
            .await?;
        if !applied {
            return Err(WorkflowError::Conflict(expected_version));
        }
        self.catalogue.invalidate().await;
        tracing::info!(
            workflow = id,
            action,
            version = next.version,
            "workflow changed"
        );
        Ok(next)
    }

    /// Adds `new`, its schema read from fal when not given.
    pub async fn add(
        &self,
        new: NewWorkflow,
        actor: Actor,
        now: OffsetDateTime,
    ) -> Result<Definition, WorkflowError> {
        let mut violations = Vec::new();
        if !is_workflow_id(&new.id) {
            violations.push(FieldViolation::new(
                "workflow_id",
                "must be 1 to 64 lowercase letters, digits and dashes",
            ));
        }
        if let Err(err) = atelier_fal::EndpointId::parse(&new.fal_endpoint) {
            violations.push(FieldViolation::new("fal_endpoint", err.to_string()));
        }
        let name = text("name", &new.name, 200, &mut violations).unwrap_or_default();
        let category = text("category", &new.category, 64, &mut violations).unwrap_or_default();
        if new.description.chars().count() > 4000 {
            violations.push(FieldViolation::new(
                "description",
                "must be at most 4000 characters",
            ));
        }
        invalid(std::mem::take(&mut violations))?;
        let parameters_schema = match new.parameters_schema {
            Some(given) => {
                if given.get("type").and_then(Value::as_str) != Some("object") {
                    violations.push(FieldViolation::new(
                        "parameters_schema",
                        "must be a JSON Schema of type object",
                    ));
                } else if let Err(err) = schema::compile(&given) {
                    violations.push(FieldViolation::new(
                        "parameters_schema",
                        format!("is not a usable JSON Schema: {err}"),
                    ));
                }
                given
            }
            None => match self.models.input_schema(&new.fal_endpoint).await? {
                None => {
                    return Err(WorkflowError::InvalidInput(vec![FieldViolation::new(
                        "fal_endpoint",
                        format!("fal knows no endpoint {}", new.fal_endpoint),
                    )]));
                }
                Some(None) => {
                    return Err(WorkflowError::InvalidInput(vec![FieldViolation::new(
                        "fal_endpoint",
                        "fal describes no usable input schema for this endpoint: give parameters_schema",
                    )]));
                }
                Some(Some(schema)) => {
                    if let Err(err) = schema::compile(&schema) {
                        return Err(WorkflowError::InvalidInput(vec![FieldViolation::new(
                            "fal_endpoint",
                            format!("fal's input schema for this endpoint is unusable: {err}"),
                        )]));
                    }
                    schema
                }
            },
        };
        invalid(std::mem::take(&mut violations))?;
        let defaults = match new.defaults {
            Some(defaults) => {
                check_defaults(&parameters_schema, &defaults, &mut violations);
                defaults
            }
            None => schema::defaults_of(&parameters_schema),
        };
        invalid(violations)?;
        let row = Definition {
            id: new.id.clone(),
            name,
            description: new.description.trim().to_owned(),
            category,
            fal_endpoint: new.fal_endpoint.clone(),
            parameters_schema: schema::with_order(&parameters_schema),
            defaults: Value::Object(defaults),
            is_active: new.active,
            position: CUSTOM_POSITION,
            version: 1,
            updated_at: now,
            unit_price: None,
            price_unit: None,
            currency: None,
            priced_at: None,
            pinned: false,
            custom: true,
            edited: true,
            latest_schema: None,
        };
        let record = AuditRecord::new("workflow.added", actor.origin)
            .actor(actor.user_id)
            .target("workflow", &new.id)
            .detail("fal_endpoint", new.fal_endpoint.clone())
            .detail("active", new.active);
        if !self
            .catalogue
            .store
            .insert_new(row.clone(), self.audit.record(record))
            .await?
        {
            return Err(WorkflowError::AlreadyExists);
        }
        self.catalogue.invalidate().await;
        tracing::info!(
            workflow = new.id,
            endpoint = new.fal_endpoint,
            "workflow added"
        );
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_ids_are_slugs() {
        assert!(is_workflow_id("esrgan-upscale-2"));
        for bad in ["", "-x", "Upper", "with space", "a/b", &"x".repeat(65)] {
            assert!(!is_workflow_id(bad), "{bad}");
        }
    }

    #[test]
    fn defaults_are_checked_against_the_schema() {
        let schema = serde_json::json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["prompt"],
            "properties": {
                "prompt": {"type": "string"},
                "scale": {"type": "number", "minimum": 1, "maximum": 4}
            }
        });
        let mut violations = Vec::new();
        let good = serde_json::json!({"scale": 2});
        check_defaults(&schema, good.as_object().expect("object"), &mut violations);
        assert!(violations.is_empty(), "{violations:?}");
        let bad = serde_json::json!({"scale": 9, "nope": 1});
        check_defaults(&schema, bad.as_object().expect("object"), &mut violations);
        let mut fields: Vec<_> = violations.iter().map(|v| v.field.clone()).collect();
        fields.sort();
        assert_eq!(fields, ["defaults.nope", "defaults.scale"]);
    }
}
