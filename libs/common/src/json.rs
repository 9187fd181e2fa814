//! JSON values to and from `google.protobuf.Struct`, the form JSON objects take
//! in the contracts. Struct keeps no key order and has only doubles: whole
//! numbers come back as integers.

use prost_types::{ListValue, Struct, Value as ProtoValue, value::Kind};
use serde_json::{Map, Number, Value};

/// `value` as a Struct; `None` unless it is an object.
pub fn to_struct(value: &Value) -> Option<Struct> {
    let Value::Object(map) = value else {
        return None;
    };
    Some(map_to_struct(map))
}

pub fn map_to_struct(map: &Map<String, Value>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(key, value)| (key.clone(), to_value(value)))
            .collect(),
    }
}

fn to_value(value: &Value) -> ProtoValue {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(map_to_struct(map)),
    };
    ProtoValue { kind: Some(kind) }
}

/// A Struct as a JSON object (empty when absent).
pub fn from_struct(value: Option<Struct>) -> Map<String, Value> {
    value
        .map(|object| {
            let mut fields: Vec<_> = object.fields.into_iter().collect();
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            fields
                .into_iter()
                .map(|(key, value)| (key, from_value(value)))
                .collect()
        })
        .unwrap_or_default()
}

fn from_value(value: ProtoValue) -> Value {
    match value.kind {
        Some(Kind::BoolValue(b)) => b.into(),
        Some(Kind::NumberValue(n)) => number(n),
        Some(Kind::StringValue(s)) => s.into(),
        Some(Kind::ListValue(list)) => list.values.into_iter().map(from_value).collect(),
        Some(Kind::StructValue(object)) => Value::Object(from_struct(Some(object))),
        Some(Kind::NullValue(_)) | None => Value::Null,
    }
}

/// Whole numbers as integers, so `"type": "integer"` accepts a 2.0 that came
/// through a Struct.
fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
        Value::Number(Number::from(n as i64))
    } else {
        Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

/// Where the display order of an object schema's properties is kept, since
/// neither a Struct nor PostgreSQL's jsonb keeps key order (fal's own convention).
pub const ORDER_KEY: &str = "x-fal-order-properties";

/// Adds [`ORDER_KEY`] to every object schema, listing its properties in order.
pub fn with_order(schema: &Value) -> Value {
    let mut schema = schema.clone();
    annotate(&mut schema);
    schema
}

fn annotate(schema: &mut Value) {
    let Value::Object(object) = schema else {
        return;
    };
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        let order: Vec<Value> = properties.keys().cloned().map(Value::String).collect();
        for property in properties.values_mut() {
            annotate(property);
        }
        object.insert(ORDER_KEY.into(), Value::Array(order));
    }
    if let Some(items) = object.get_mut("items") {
        annotate(items);
    }
}

/// Puts properties back in the order [`ORDER_KEY`] lists (after a trip through
/// a Struct), keeping any unlisted ones at the end.
pub fn restore_order(schema: &mut Value) {
    let Value::Object(object) = schema else {
        return;
    };
    let order: Vec<String> = object
        .get(ORDER_KEY)
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(|name| name.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        let mut ordered = Map::new();
        for name in &order {
            if let Some(value) = properties.remove(name) {
                ordered.insert(name.clone(), value);
            }
        }
        ordered.append(properties);
        for property in ordered.values_mut() {
            restore_order(property);
        }
        *properties = ordered;
    }
    if let Some(items) = object.get_mut("items") {
        restore_order(items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_round_trip_with_whole_numbers_as_integers() {
        let value = serde_json::json!({"a": 2, "b": 0.5, "c": [true, null, "x"], "d": {"e": -3}});
        let back = Value::Object(from_struct(to_struct(&value)));
        assert_eq!(back, value);
        assert!(back["a"].is_i64());
        assert_eq!(to_struct(&serde_json::json!([1])), None);
    }
}
