//! `--param key=value`: the value is JSON when it parses as JSON (`scale=2`,
//! `crop=true`, `tags=["a","b"]`, `name="2"` for the string "2"), else the text as a
//! string (`prompt=a red fox`).

use serde_json::{Map, Value};

/// One `key=value` (clap's value parser: a malformed one is a usage error, exit 2).
pub fn parse_param(raw: &str) -> Result<(String, Value), String> {
    let (key, value) = raw
        .split_once('=')
        .ok_or_else(|| format!("{raw:?} is not key=value"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("{raw:?} has no key before '='"));
    }
    let value =
        serde_json::from_str::<Value>(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((key.to_owned(), value))
}

/// The parameters object; a key given twice is a usage error.
pub fn collect(params: &[(String, Value)]) -> Result<Map<String, Value>, String> {
    let mut map = Map::new();
    for (key, value) in params {
        if map.insert(key.clone(), value.clone()).is_some() {
            return Err(format!("--param {key} is given more than once"));
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn value(raw: &str) -> Value {
        parse_param(raw).expect(raw).1
    }

    #[test]
    fn json_values_keep_their_type_and_the_rest_are_strings() {
        assert_eq!(value("scale=2"), json!(2));
        assert_eq!(value("strength=0.75"), json!(0.75));
        assert_eq!(value("crop_to_bbox=true"), json!(true));
        assert_eq!(value("seed=null"), json!(null));
        assert_eq!(value("sizes=[1, 2]"), json!([1, 2]));
        assert_eq!(value(r#"opts={"a":1}"#), json!({"a": 1}));
        assert_eq!(value(r#"name="2""#), json!("2"));
        assert_eq!(value("prompt=a red fox"), json!("a red fox"));
        assert_eq!(value("prompt=true story"), json!("true story"));
        assert_eq!(value("model=x4plus"), json!("x4plus"));
        assert_eq!(value("empty="), json!(""));
        // Only the first '=' splits: the value may hold more.
        assert_eq!(value("prompt=a=b"), json!("a=b"));
        assert_eq!(parse_param(" scale =3").expect("trimmed key").0, "scale");
    }

    #[test]
    fn malformed_params_are_refused() {
        assert!(parse_param("scale").is_err());
        assert!(parse_param("=2").is_err());
        let twice = [
            ("scale".to_owned(), json!(2)),
            ("scale".to_owned(), json!(3)),
        ];
        assert!(collect(&twice).expect_err("twice").contains("scale"));
        let map = collect(&twice[..1]).expect("once");
        assert_eq!(Value::Object(map), json!({"scale": 2}));
    }
}
