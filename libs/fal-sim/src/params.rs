//! Reading a model's input the way fal's (pydantic) models do: every field checked, every
//! problem reported at once as a 422 `detail` entry, unknown fields ignored.

use std::ops::RangeInclusive;

use serde_json::{Map, Value, json};

use crate::error::FieldError;

/// A model input being read. Each getter returns the field's value, or its default when
/// the field is absent or wrong (the problem is then recorded); [`Params::finish`] says
/// whether there were any.
///
/// Made with [`Params::describing`], it also writes down each field it is asked for as
/// JSON Schema, so an endpoint's published input schema is the code that reads it.
pub(crate) struct Params<'a> {
    body: &'a Map<String, Value>,
    errors: Vec<FieldError>,
    schema: Option<Schema>,
}

/// The fields asked for so far, in order.
#[derive(Default)]
struct Schema {
    properties: Map<String, Value>,
    required: Vec<String>,
}

impl<'a> Params<'a> {
    pub(crate) fn new(body: &'a Map<String, Value>) -> Self {
        Self {
            body,
            errors: Vec::new(),
            schema: None,
        }
    }

    /// Reads `body` and writes down every field asked for: see [`Params::schema`].
    pub(crate) fn describing(body: &'a Map<String, Value>) -> Self {
        Self {
            schema: Some(Schema::default()),
            ..Self::new(body)
        }
    }

    /// The JSON Schema of the fields asked for, as fal's OpenAPI documents write a model
    /// input: `properties` and `x-fal-order-properties` in the order the model reads
    /// them, and the fields it cannot do without as `required`. `None` unless
    /// [`Params::describing`].
    pub(crate) fn schema(self) -> Option<Value> {
        let Schema {
            properties,
            required,
        } = self.schema?;
        let order: Vec<&String> = properties.keys().collect();
        Some(json!({
            "type": "object",
            "x-fal-order-properties": order,
            "required": required,
            "properties": properties,
        }))
    }

    /// Writes `name` down as `schema` when describing.
    fn describe(&mut self, name: &str, schema: Value, required: bool) {
        if let Some(described) = &mut self.schema {
            described.properties.insert(name.to_owned(), schema);
            if required {
                described.required.push(name.to_owned());
            }
        }
    }

    /// The problems found, if any.
    pub(crate) fn finish(self) -> Result<(), Vec<FieldError>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }

    /// The field's value; `null` counts as absent when `nullable`.
    fn get(&self, name: &str, nullable: bool) -> Option<&'a Value> {
        match self.body.get(name) {
            Some(Value::Null) if nullable => None,
            other => other,
        }
    }

    fn wrong(&mut self, name: &str, kind: &'static str, msg: &str, value: &Value) {
        self.errors
            .push(FieldError::field(name, kind, msg).with_input(value));
    }

    /// A string the model cannot do without.
    pub(crate) fn required_string(&mut self, name: &str) -> String {
        self.describe(name, json!({ "type": "string" }), true);
        match self.get(name, false) {
            None => {
                self.errors
                    .push(FieldError::field(name, "missing", "Field required"));
                String::new()
            }
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                self.wrong(name, "string_type", "Input should be a valid string", other);
                String::new()
            }
        }
    }

    /// An optional string.
    pub(crate) fn optional_string(&mut self, name: &str) -> Option<String> {
        self.describe(name, json!({ "type": "string" }), false);
        match self.get(name, true)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.wrong(name, "string_type", "Input should be a valid string", other);
                None
            }
        }
    }

    /// A boolean with a default.
    pub(crate) fn boolean(&mut self, name: &str, default: bool) -> bool {
        self.describe(
            name,
            json!({ "type": "boolean", "default": default }),
            false,
        );
        match self.get(name, false) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.wrong(name, "bool_type", "Input should be a valid boolean", other);
                default
            }
        }
    }

    /// A number with a default, within `range` (inclusive).
    pub(crate) fn number(&mut self, name: &str, default: f64, range: RangeInclusive<f64>) -> f64 {
        let mut schema = bounds("number", *range.start(), *range.end());
        schema["default"] = Num(default).json();
        self.describe(name, schema, false);
        let Some(value) = self.get(name, false) else {
            return default;
        };
        let Some(n) = value.as_f64() else {
            self.wrong(name, "float_type", "Input should be a valid number", value);
            return default;
        };
        if self.check_range(name, n, *range.start(), *range.end(), value) {
            n
        } else {
            default
        }
    }

    /// An integer with a default, within `range` (inclusive). A float without a fraction
    /// counts, as in pydantic.
    pub(crate) fn integer(&mut self, name: &str, default: i64, range: RangeInclusive<i64>) -> i64 {
        let mut schema = bounds("integer", *range.start() as f64, *range.end() as f64);
        schema["default"] = json!(default);
        self.describe(name, schema, false);
        self.integer_value(name, range).unwrap_or(default)
    }

    /// An optional integer within `range` (inclusive); `null` counts as absent.
    pub(crate) fn optional_integer(
        &mut self,
        name: &str,
        range: RangeInclusive<i64>,
    ) -> Option<i64> {
        let schema = bounds("integer", *range.start() as f64, *range.end() as f64);
        self.describe(name, schema, false);
        self.integer_value(name, range)
    }

    /// An integer within `range` (inclusive), `None` when absent, `null` or wrong.
    fn integer_value(&mut self, name: &str, range: RangeInclusive<i64>) -> Option<i64> {
        let value = self.get(name, true)?;
        let n = match value {
            Value::Number(n) => match n.as_i64() {
                Some(i) => i,
                None => match n.as_f64() {
                    Some(f) if f.fract() != 0.0 => {
                        self.wrong(
                            name,
                            "int_from_float",
                            "Input should be a valid integer, got a number with a fractional part",
                            value,
                        );
                        return None;
                    }
                    Some(f) if f.abs() < 9.0e15 => f as i64,
                    _ => {
                        self.wrong(
                            name,
                            "int_parsing_size",
                            "Unable to parse input string as an integer, exceeded maximum size",
                            value,
                        );
                        return None;
                    }
                },
            },
            other => {
                self.wrong(name, "int_type", "Input should be a valid integer", other);
                return None;
            }
        };
        let ok = self.check_range(
            name,
            n as f64,
            *range.start() as f64,
            *range.end() as f64,
            value,
        );
        ok.then_some(n)
    }

    fn check_range(&mut self, name: &str, n: f64, min: f64, max: f64, value: &Value) -> bool {
        if n < min {
            self.errors.push(
                FieldError::field(
                    name,
                    "greater_than_equal",
                    format!("Input should be greater than or equal to {}", Num(min)),
                )
                .with_ctx(json!({ "ge": Num(min).json() }))
                .with_input(value),
            );
            false
        } else if n > max {
            self.errors.push(
                FieldError::field(
                    name,
                    "less_than_equal",
                    format!("Input should be less than or equal to {}", Num(max)),
                )
                .with_ctx(json!({ "le": Num(max).json() }))
                .with_input(value),
            );
            false
        } else {
            true
        }
    }

    /// An integer that must be one of `allowed`, with a default.
    pub(crate) fn integer_choice(&mut self, name: &str, default: i64, allowed: &[i64]) -> i64 {
        self.describe(
            name,
            json!({ "type": "integer", "enum": allowed, "default": default }),
            false,
        );
        let Some(value) = self.get(name, false) else {
            return default;
        };
        let found = value
            .as_f64()
            .filter(|f| f.fract() == 0.0)
            .and_then(|f| allowed.iter().copied().find(|a| *a as f64 == f));
        if let Some(found) = found {
            return found;
        }
        let names: Vec<String> = allowed.iter().map(i64::to_string).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let expected = expected_list(&names).replace('\'', "");
        self.errors.push(
            FieldError::field(name, "literal_error", format!("Input should be {expected}"))
                .with_ctx(json!({ "expected": expected }))
                .with_input(value),
        );
        default
    }

    /// One of `allowed`, with a default.
    pub(crate) fn choice(
        &mut self,
        name: &str,
        default: &'static str,
        allowed: &[&'static str],
    ) -> &'static str {
        self.describe(
            name,
            json!({ "type": "string", "enum": allowed, "default": default }),
            false,
        );
        let Some(value) = self.get(name, false) else {
            return default;
        };
        if let Some(found) = value
            .as_str()
            .and_then(|s| allowed.iter().find(|a| **a == s))
        {
            return found;
        }
        let expected = expected_list(allowed);
        self.errors.push(
            FieldError::field(name, "literal_error", format!("Input should be {expected}"))
                .with_ctx(json!({ "expected": expected }))
                .with_input(value),
        );
        default
    }
}

/// A `kind` of number within `min..=max`; a bound at the end of what the type holds is
/// no bound.
fn bounds(kind: &str, min: f64, max: f64) -> Value {
    let mut schema = json!({ "type": kind });
    if min > i64::MIN as f64 && min > f64::MIN {
        schema["minimum"] = Num(min).json();
    }
    if max < i64::MAX as f64 && max < f64::MAX {
        schema["maximum"] = Num(max).json();
    }
    schema
}

/// `'a', 'b' or 'c'`, as pydantic lists the values a literal may take.
fn expected_list(allowed: &[&str]) -> String {
    let quoted: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// A bound, written as an integer when it is one.
struct Num(f64);

impl Num {
    fn json(&self) -> Value {
        if self.0.fract() == 0.0 && self.0.abs() < 9.0e15 {
            json!(self.0 as i64)
        } else {
            json!(self.0)
        }
    }
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn defaults_apply_and_problems_are_all_reported() {
        let input = body(json!({ "scale": 9, "face": "yes", "output_format": "bmp", "tile": 1.5 }));
        let mut p = Params::new(&input);
        let url = p.required_string("image_url");
        let scale = p.number("scale", 2.0, 1.0..=8.0);
        let face = p.boolean("face", false);
        let format = p.choice("output_format", "png", &["png", "jpeg"]);
        let tile = p.integer("tile", 0, 0..=1024);
        assert_eq!(
            (url.as_str(), scale, face, format, tile),
            ("", 2.0, false, "png", 0)
        );
        let errors = p.finish().expect_err("five problems");
        let kinds: Vec<_> = errors.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                "missing",
                "less_than_equal",
                "bool_type",
                "literal_error",
                "int_from_float"
            ]
        );
        assert_eq!(errors[1].msg, "Input should be less than or equal to 8");
        assert_eq!(errors[1].ctx.as_deref(), Some(&json!({ "le": 8 })));
        assert_eq!(errors[3].msg, "Input should be 'png' or 'jpeg'");
    }

    #[test]
    fn good_input_passes() {
        let input = body(json!({ "image_url": "data:,", "scale": 4, "seed": null }));
        let mut p = Params::new(&input);
        assert_eq!(p.required_string("image_url"), "data:,");
        assert_eq!(p.number("scale", 2.0, 1.0..=8.0), 4.0);
        assert_eq!(p.optional_integer("seed", 0..=i64::MAX), None);
        assert!(p.finish().is_ok());
    }

    #[test]
    fn literal_lists_read_like_pydantic() {
        assert_eq!(expected_list(&["a"]), "'a'");
        assert_eq!(expected_list(&["a", "b", "c"]), "'a', 'b' or 'c'");
    }
}
