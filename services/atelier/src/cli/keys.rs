//! `atelier keys list|create|revoke`: API keys over `/api/keys`.
//!
//! The shapes the routes answer are read in one place ([`key_list`]), so a change
//! of the list's envelope is a change here only.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::{
    Common,
    api::{self, Api},
    error::{CliError, Result},
    print_json, print_table,
};

#[derive(Args, Debug)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// List your API keys (never their secrets)
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Create an API key; its secret is shown once
    Create {
        #[command(flatten)]
        common: Common,
        /// A name to tell the key by
        #[arg(long)]
        name: String,
        /// What the key may do (repeat or comma-separate for more)
        #[arg(long = "scope", value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// When the key stops working (RFC 3339, e.g. 2026-12-31T00:00:00Z)
        #[arg(long)]
        expires_at: Option<String>,
        /// Requests a minute the key may make
        #[arg(long)]
        rate_limit_per_minute: Option<u32>,
    },
    /// Revoke an API key at once
    Revoke {
        #[command(flatten)]
        common: Common,
        /// The key's id
        id: String,
    },
}

/// The keys of a `GET /api/keys` answer: `{"keys": [...]}` (or a bare array).
fn key_list(answer: Value) -> Vec<Value> {
    match answer {
        Value::Array(keys) => keys,
        Value::Object(mut object) => match object.remove("keys") {
            Some(Value::Array(keys)) => keys,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| item.to_string())
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

pub async fn keys(args: KeysArgs) -> Result<()> {
    match args.command {
        KeysCommand::List { common } => {
            let api = Api::new(&common)?;
            api.require_credentials()?;
            let keys = key_list(api.get("/api/keys").await?);
            if common.json {
                return print_json(&Value::Array(keys));
            }
            let rows: Vec<Vec<String>> = keys
                .iter()
                .map(|key| {
                    [
                        "id",
                        "name",
                        "prefix",
                        "scopes",
                        "created_at",
                        "expires_at",
                        "last_used_at",
                        "revoked_at",
                    ]
                    .iter()
                    .map(|field| text(key, field))
                    .collect()
                })
                .collect();
            print_table(
                &[
                    "ID",
                    "NAME",
                    "PREFIX",
                    "SCOPES",
                    "CREATED",
                    "EXPIRES",
                    "LAST USED",
                    "REVOKED",
                ],
                &rows,
            );
            Ok(())
        }
        KeysCommand::Create {
            common,
            name,
            scopes,
            expires_at,
            rate_limit_per_minute,
        } => {
            let api = Api::new(&common)?;
            api.require_credentials()?;
            let mut body = json!({"name": name, "scopes": scopes});
            if let Some(expires_at) = expires_at {
                body["expires_at"] = expires_at.into();
            }
            if let Some(limit) = rate_limit_per_minute {
                body["rate_limit_per_minute"] = limit.into();
            }
            let created: Value = api.post("/api/keys", &body).await?;
            if common.json {
                return print_json(&created);
            }
            let secret = created["key"]
                .as_str()
                .ok_or_else(|| CliError::unexpected("the server's answer holds no key"))?;
            println!("{secret}");
            if !common.quiet {
                eprintln!(
                    "Created key {} ({}). Copy it now: it is not shown again.",
                    text(&created, "id"),
                    text(&created, "name")
                );
            }
            Ok(())
        }
        KeysCommand::Revoke { common, id } => {
            let api = Api::new(&common)?;
            api.require_credentials()?;
            api.call(
                Method::DELETE,
                &format!("/api/keys/{}", api::encode(&id)),
                None,
            )
            .await
            .map_err(|err| err.with_context(format!("key {id}")))?;
            if common.json {
                return print_json(&json!({"id": id, "revoked": true}));
            }
            if !common.quiet {
                eprintln!("Revoked key {id}");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_read_from_its_envelope() {
        let key = json!({"id": "k1", "name": "ci", "scopes": ["jobs:write", "images:read"]});
        assert_eq!(key_list(json!({"keys": [key.clone()]})), vec![key.clone()]);
        assert_eq!(key_list(json!([key.clone()])), vec![key.clone()]);
        assert!(key_list(json!({"other": 1})).is_empty());
        assert_eq!(text(&key, "scopes"), "jobs:write,images:read");
        assert_eq!(text(&key, "expires_at"), "-");
    }
}
