//! The settings document: what it holds, its stored form and its rules, and
//! its changes, guarded by its revision.

use std::collections::BTreeMap;

use atelier_common::{
    FieldViolation,
    audit::{AuditRecord, RequestOrigin},
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{Profile, Users};
use crate::error::UserError;

/// The format version documents are written in.
pub const SCHEMA_VERSION: i32 = 1;
/// Workflows a document may hold default parameters for.
const MAX_WORKFLOW_DEFAULTS: usize = 100;
/// The longest workflow id.
const MAX_WORKFLOW_ID: usize = 64;
/// The largest settings document, as stored (JSON).
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
/// Default parameters checked with the workflow service at once, at most.
const VALIDATIONS_AT_ONCE: usize = 8;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Theme {
    #[default]
    System,
    Light,
    Dark,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Notifications {
    pub job_completed: bool,
    pub job_failed: bool,
    pub quota_warning: bool,
}

impl Default for Notifications {
    fn default() -> Self {
        Self {
            job_completed: true,
            job_failed: true,
            quota_warning: true,
        }
    }
}

/// A user's settings, as stored (JSON) and as served.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub schema_version: i32,
    pub default_workflow_id: Option<String>,
    pub workflow_defaults: BTreeMap<String, Map<String, Value>>,
    pub retention_days: Option<i32>,
    pub notifications: Notifications,
    pub theme: Theme,
}

impl Settings {
    /// A stored document, upgraded to the current format (a document the service
    /// cannot read falls back to the defaults rather than locking the user out).
    pub fn from_stored(value: &Value) -> Self {
        let mut settings: Self = serde_json::from_value(value.clone()).unwrap_or_default();
        settings.schema_version = SCHEMA_VERSION;
        settings
    }

    pub fn to_stored(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Checks everything that needs no other service: sizes, ranges against the tier's
    /// `max_retention_days`, the format version.
    pub fn violations(&self, max_retention_days: Option<i32>) -> Vec<FieldViolation> {
        let mut violations = Vec::new();
        if self.schema_version != 0 && self.schema_version != SCHEMA_VERSION {
            violations.push(FieldViolation::new(
                "schema_version",
                format!("must be {SCHEMA_VERSION}"),
            ));
        }
        if let Some(id) = &self.default_workflow_id
            && (id.is_empty() || id.len() > MAX_WORKFLOW_ID)
        {
            violations.push(FieldViolation::new(
                "default_workflow_id",
                format!("must be a workflow id of 1 to {MAX_WORKFLOW_ID} characters"),
            ));
        }
        if self.workflow_defaults.len() > MAX_WORKFLOW_DEFAULTS {
            violations.push(FieldViolation::new(
                "workflow_defaults",
                format!("may hold at most {MAX_WORKFLOW_DEFAULTS} workflows"),
            ));
        } else if let Some(id) = self
            .workflow_defaults
            .keys()
            .find(|id| id.is_empty() || id.len() > MAX_WORKFLOW_ID)
        {
            violations.push(FieldViolation::new(
                format!(
                    "workflow_defaults.{}",
                    id.chars().take(MAX_WORKFLOW_ID).collect::<String>()
                ),
                format!("must be a workflow id of 1 to {MAX_WORKFLOW_ID} characters"),
            ));
        } else if self.to_stored().to_string().len() > MAX_DOCUMENT_BYTES {
            violations.push(FieldViolation::new(
                "workflow_defaults",
                format!(
                    "make the settings larger than {} KiB",
                    MAX_DOCUMENT_BYTES / 1024
                ),
            ));
        }
        if let Some(days) = self.retention_days {
            let max = max_retention_days.unwrap_or(i32::MAX);
            if days < 1 || days > max {
                let range = match max_retention_days {
                    Some(max) => format!("between 1 and {max} (your plan's longest retention)"),
                    None => "at least 1".to_owned(),
                };
                violations.push(FieldViolation::new(
                    "retention_days",
                    format!("must be {range}"),
                ));
            }
        }
        violations
    }
}

/// The top-level settings whose stored value differs between `before` and `after`.
fn changed_keys(before: &Settings, after: &Settings) -> Vec<String> {
    let (before, after) = (before.to_stored(), after.to_stored());
    let empty = Map::new();
    let (before, after) = (
        before.as_object().unwrap_or(&empty),
        after.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<String> = before
        .keys()
        .chain(after.keys())
        // The document's format version is no setting of the user's.
        .filter(|key| *key != "schema_version" && before.get(*key) != after.get(*key))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

impl Users {
    /// Replaces the user's settings if they are still at revision `expected` (any
    /// revision when `None`), once they are within the tier's limits and name only
    /// workflows of the catalogue with parameters their schemas accept. A changed
    /// retention applies to the images stored already. Returns the profile with
    /// the new settings. The change is recorded in the audit log
    /// (`user.settings_changed`, naming the settings that changed) before it
    /// commits: when the entry cannot be written, nothing changes.
    pub async fn update_settings(
        &self,
        user_id: Uuid,
        settings: Settings,
        expected: Option<i64>,
        origin: &RequestOrigin,
    ) -> Result<Profile, UserError> {
        let profile = self.profile(user_id).await?;
        let limits = self.tiers.get(profile.tier);
        // Only a document within its size limits is worth asking the workflow
        // service about.
        let mut violations = settings.violations(limits.max_retention_days);
        if violations.is_empty() {
            violations = self.workflow_violations(&settings).await?;
        }
        if !violations.is_empty() {
            return Err(UserError::InvalidInput(violations));
        }
        let changed: Vec<Value> = changed_keys(&profile.settings, &settings)
            .into_iter()
            .map(Value::String)
            .collect();
        let record = AuditRecord::new("user.settings_changed", origin.clone())
            .actor(Some(user_id))
            .about_user(user_id)
            .detail("changed", changed);
        let written = self
            .store
            .replace_settings(
                user_id,
                &settings,
                expected,
                self.clock.now(),
                self.peers.audit.record(record),
            )
            .await?;
        if !written {
            return Err(UserError::StaleSettings);
        }
        if profile.settings.retention_days != settings.retention_days {
            self.peers
                .images
                .set_retention(user_id, settings.retention_days.unwrap_or(0))
                .await?;
        }
        self.profile(user_id).await
    }

    /// Checks what needs the workflow service: the default workflow exists and every
    /// workflow's default parameters are valid for its schema.
    async fn workflow_violations(
        &self,
        settings: &Settings,
    ) -> Result<Vec<FieldViolation>, UserError> {
        let mut violations = Vec::new();
        if let Some(id) = &settings.default_workflow_id
            && !self.peers.workflows.contains(id).await?
        {
            violations.push(FieldViolation::new(
                "default_workflow_id",
                "is not a workflow of the catalogue",
            ));
        }
        // A few at a time, in the document's order.
        let defaults: Vec<(String, Map<String, Value>)> = settings
            .workflow_defaults
            .iter()
            .map(|(id, parameters)| (id.clone(), parameters.clone()))
            .collect();
        let checked: Vec<Result<Vec<FieldViolation>, UserError>> = futures::stream::iter(defaults)
            .map(|(id, parameters)| async move { self.default_violations(&id, &parameters).await })
            .buffered(VALIDATIONS_AT_ONCE)
            .collect()
            .await;
        for found in checked {
            violations.extend(found?);
        }
        Ok(violations)
    }

    /// What is wrong with the default `parameters` of workflow `id`.
    async fn default_violations(
        &self,
        id: &str,
        parameters: &Map<String, Value>,
    ) -> Result<Vec<FieldViolation>, UserError> {
        let field = format!("workflow_defaults.{id}");
        Ok(
            match self.peers.workflows.violations(id, parameters).await? {
                Some(found) => found
                    .into_iter()
                    .map(|violation| {
                        FieldViolation::new(
                            format!("{field}{}", violation.field.replace('/', ".")),
                            violation.description,
                        )
                    })
                    .collect(),
                None => vec![FieldViolation::new(
                    field,
                    "is not a workflow of the catalogue",
                )],
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_documents_round_trip_and_old_ones_upgrade() {
        let settings = Settings {
            schema_version: SCHEMA_VERSION,
            default_workflow_id: Some("upscale".to_owned()),
            retention_days: Some(7),
            theme: Theme::Dark,
            ..Settings::default()
        };
        assert_eq!(Settings::from_stored(&settings.to_stored()), settings);
        let old = Settings::from_stored(&serde_json::json!({"theme": "light"}));
        assert_eq!(old.schema_version, SCHEMA_VERSION);
        assert_eq!(old.theme, Theme::Light);
        assert!(old.notifications.job_completed);
    }

    #[test]
    fn retention_is_bounded_by_the_tier() {
        let with = |days| Settings {
            retention_days: Some(days),
            ..Settings::default()
        };
        assert!(with(30).violations(Some(30)).is_empty());
        assert_eq!(with(31).violations(Some(30))[0].field, "retention_days");
        assert_eq!(with(0).violations(None)[0].field, "retention_days");
        assert!(with(3650).violations(None).is_empty());
    }

    #[test]
    fn workflow_defaults_are_bounded_in_number_and_size() {
        let with = |count: usize, value_len: usize| Settings {
            workflow_defaults: (0..count)
                .map(|i| {
                    let mut parameters = Map::new();
                    parameters.insert("prompt".to_owned(), Value::from("x".repeat(value_len)));
                    (format!("workflow-{i}"), parameters)
                })
                .collect(),
            ..Settings::default()
        };
        assert!(with(100, 10).violations(None).is_empty());
        assert_eq!(with(101, 10).violations(None)[0].field, "workflow_defaults");
        let too_big = with(10, 8 * 1024).violations(None);
        assert_eq!(too_big[0].field, "workflow_defaults");
        assert!(too_big[0].description.contains("64 KiB"), "{too_big:?}");
    }
}
