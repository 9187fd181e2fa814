//! Parameters against a workflow's JSON Schema (draft 2020-12): defaults filled
//! in, unknown fields rejected, every violation reported with its JSON Pointer.

use jsonschema::{Validator, error::ValidationErrorKind};
use serde_json::{Map, Value};

pub use atelier_common::json::{ORDER_KEY, restore_order, with_order};

/// One way parameters break the schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// JSON Pointer to the offending value, e.g. `/strength`.
    pub field: String,
    /// The schema keyword that failed, e.g. `maximum`.
    pub keyword: String,
    pub description: String,
}

/// Compiles a parameters schema.
pub fn compile(schema: &Value) -> Result<Validator, String> {
    jsonschema::draft202012::new(schema).map_err(|err| err.to_string())
}

/// The `default` of every top-level property that has one.
pub fn defaults_of(schema: &Value) -> Map<String, Value> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|properties| {
            properties
                .iter()
                .filter_map(|(name, property)| {
                    Some((name.clone(), property.get("default")?.clone()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `params` over `defaults`, checked against `validator`: the parameters a job
/// runs with, or every violation.
pub fn validate(
    validator: &Validator,
    defaults: &Map<String, Value>,
    params: Map<String, Value>,
) -> Result<Map<String, Value>, Vec<Violation>> {
    let mut merged = defaults.clone();
    for (name, value) in params {
        // An explicit null asks for the default, as fal's clients treat it.
        if value.is_null() {
            continue;
        }
        merged.insert(name, value);
    }
    let instance = Value::Object(merged);
    let mut violations = Vec::new();
    for error in validator.iter_errors(&instance) {
        let path = error.instance_path().as_str().to_owned();
        let keyword = error.kind().keyword().to_owned();
        match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                violations.extend(unexpected.iter().map(|name| Violation {
                    field: format!("{path}/{name}"),
                    keyword: keyword.clone(),
                    description: format!("{name} is not a parameter of this workflow"),
                }));
            }
            ValidationErrorKind::Required { property } => {
                let name = property.as_str().unwrap_or_default();
                violations.push(Violation {
                    field: format!("{path}/{name}"),
                    keyword,
                    description: format!("{name} is required"),
                });
            }
            _ => violations.push(Violation {
                field: path,
                keyword,
                description: error.to_string(),
            }),
        }
    }
    let Value::Object(merged) = instance else {
        unreachable!("built as an object above");
    };
    if violations.is_empty() {
        Ok(merged)
    } else {
        Err(violations)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["prompt"],
            "properties": {
                "prompt": {"type": "string", "minLength": 1},
                "strength": {"type": "number", "minimum": 0.01, "maximum": 1, "default": 0.95},
                "steps": {"type": "integer", "minimum": 1, "maximum": 50, "default": 40},
                "format": {"type": "string", "enum": ["jpeg", "png"], "default": "jpeg"}
            }
        })
    }

    fn check(params: Value) -> Result<Map<String, Value>, Vec<Violation>> {
        let schema = schema();
        let validator = compile(&schema).expect("compiles");
        let Value::Object(params) = params else {
            panic!("object")
        };
        validate(&validator, &defaults_of(&schema), params)
    }

    fn fields(violations: &[Violation]) -> Vec<(&str, &str)> {
        violations
            .iter()
            .map(|v| (v.field.as_str(), v.keyword.as_str()))
            .collect()
    }

    #[test]
    fn defaults_fill_what_is_missing() {
        let params = check(json!({"prompt": "a cat", "steps": 10})).expect("valid");
        assert_eq!(
            Value::Object(params),
            json!({"strength": 0.95, "steps": 10, "format": "jpeg", "prompt": "a cat"})
        );
        let nulls = check(json!({"prompt": "a cat", "steps": null})).expect("valid");
        assert_eq!(nulls["steps"], 40);
    }

    #[test]
    fn every_violation_is_reported_with_its_path() {
        let violations =
            check(json!({"strength": 3, "steps": 2.5, "format": "gif", "colour": "red"}))
                .expect_err("invalid");
        let mut found = fields(&violations);
        found.sort();
        assert_eq!(
            found,
            [
                ("/colour", "additionalProperties"),
                ("/format", "enum"),
                ("/prompt", "required"),
                ("/steps", "type"),
                ("/strength", "maximum"),
            ]
        );
        let wrong_type = check(json!({"prompt": 5})).expect_err("invalid");
        assert_eq!(fields(&wrong_type), [("/prompt", "type")]);
        let below = check(json!({"prompt": "x", "steps": 0})).expect_err("invalid");
        assert_eq!(fields(&below), [("/steps", "minimum")]);
    }

    #[test]
    fn order_survives_a_trip_through_an_unordered_map() {
        let annotated = with_order(&schema());
        let mut shuffled: Value = serde_json::from_str(&annotated.to_string()).expect("json");
        if let Some(Value::Object(properties)) = shuffled.get_mut("properties") {
            properties.sort_keys();
        }
        restore_order(&mut shuffled);
        let names: Vec<_> = shuffled["properties"]
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect();
        assert_eq!(names, ["prompt", "strength", "steps", "format"]);
    }
}
