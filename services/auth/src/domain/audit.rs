//! The audit log: who did what, when and from where. Entries are only ever
//! appended (the store's triggers refuse any change); the retention purge is the
//! one way they go.

use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

/// What the log records, as `<area>.<verb>`.
pub mod actions {
    pub const SIGN_IN: &str = "auth.sign_in";
    pub const SIGN_IN_FAILED: &str = "auth.sign_in_failed";
    pub const REFRESH_REUSE: &str = "auth.refresh_reuse";
    pub const LOGOUT_ALL: &str = "auth.logout_all";
    pub const PASSWORD_CHANGED: &str = "auth.password_changed";
    pub const ACCOUNT_DELETED: &str = "account.deleted";
    pub const ROLE_CHANGED: &str = "user.role_changed";
    pub const AUDIT_QUERIED: &str = "audit.queried";
    pub const AUDIT_EXPORTED: &str = "audit.exported";
    pub const API_KEY_CREATED: &str = "api_key.created";
    pub const API_KEY_REVOKED: &str = "api_key.revoked";

    /// Actions other services record through `RecordAuditEvent`.
    pub const RECORDED_BY_SERVICES: &[&str] = &[
        "user.tier_changed",
        "user.settings_changed",
        "user.profile_changed",
        "account.deletion_requested",
        "image.deleted",
    ];
}

/// `success` or `failure`.
pub const SUCCESS: &str = "success";
pub const FAILURE: &str = "failure";

/// Who made a request and from where: the verified user (if any), the service
/// whose certificate made the call, and what the gateway saw of the client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub actor_user_id: Option<Uuid>,
    pub actor_service: String,
    pub client_ip: String,
    pub user_agent: String,
    pub request_id: String,
}

/// One entry of the log.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    pub id: Uuid,
    pub at: OffsetDateTime,
    pub actor_user_id: Option<Uuid>,
    pub actor_service: String,
    pub action: String,
    pub subject_user_id: Option<Uuid>,
    pub target_kind: String,
    pub target_id: String,
    pub outcome: String,
    pub client_ip: String,
    pub user_agent: String,
    pub request_id: String,
    /// Never a secret.
    pub details: Map<String, Value>,
}

impl AuditEntry {
    /// A successful `action` by `origin` at `at`, about no one yet.
    pub fn new(origin: &Origin, action: &str, at: OffsetDateTime) -> Self {
        Self {
            id: Uuid::now_v7(),
            at,
            actor_user_id: origin.actor_user_id,
            actor_service: origin.actor_service.clone(),
            action: action.to_owned(),
            subject_user_id: None,
            target_kind: String::new(),
            target_id: String::new(),
            outcome: SUCCESS.to_owned(),
            client_ip: origin.client_ip.clone(),
            user_agent: origin.user_agent.clone(),
            request_id: origin.request_id.clone(),
            details: Map::new(),
        }
    }

    /// About the user `user_id` (the target is their account).
    pub fn about_user(mut self, user_id: Uuid) -> Self {
        self.subject_user_id = Some(user_id);
        self.target_kind = "user".to_owned();
        self.target_id = user_id.to_string();
        self
    }

    /// About the API key `key` (the target is the key; its name, prefix and
    /// scopes are details, never the key).
    pub fn api_key(mut self, key: &super::api_keys::ApiKey) -> Self {
        self.target_kind = "api_key".to_owned();
        self.target_id = key.id.to_string();
        self.detail("name", key.name.clone())
            .detail("prefix", key.prefix.clone())
            .detail("scopes", key.scopes.clone())
    }

    pub fn failed(mut self) -> Self {
        self.outcome = FAILURE.to_owned();
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}

/// Which entries a listing or an export wants: every filter set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor_user_id: Option<Uuid>,
    pub subject_user_id: Option<Uuid>,
    pub action_prefix: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
}

impl AuditFilter {
    /// What the filter asked for, as an entry's details keep it.
    pub fn describe(&self) -> Map<String, Value> {
        let mut described = Map::new();
        let mut put = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                described.insert(key.to_owned(), Value::String(value));
            }
        };
        put("actor_user_id", self.actor_user_id.map(|id| id.to_string()));
        put(
            "subject_user_id",
            self.subject_user_id.map(|id| id.to_string()),
        );
        put("action_prefix", self.action_prefix.clone());
        let rfc3339 = |at: OffsetDateTime| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        };
        put("since", self.since.and_then(rfc3339));
        put("until", self.until.and_then(rfc3339));
        described
    }
}

/// Whether `action` is a well-formed action name: `<area>.<verb>`, lowercase
/// letters and underscores, at most 64 characters.
pub fn is_action(action: &str) -> bool {
    action.len() <= 64
        && action.split_once('.').is_some_and(|(area, verb)| {
            let word = |part: &str| {
                !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            };
            word(area) && word(verb)
        })
}

/// `text` cut to at most `max` bytes on a character boundary.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names() {
        assert!(is_action("auth.sign_in"));
        assert!(is_action("image.deleted"));
        assert!(!is_action("auth"));
        assert!(!is_action("Auth.sign_in"));
        assert!(!is_action("auth.sign in"));
        assert!(!is_action(".x"));
    }

    #[test]
    fn clip_keeps_characters_whole() {
        assert_eq!(clip("héllo", 2), "h");
        assert_eq!(clip("hello", 10), "hello");
    }
}
