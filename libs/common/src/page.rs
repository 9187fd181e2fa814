//! Cursor pagination: opaque page tokens that carry the last key a page ended at.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Serialize, de::DeserializeOwned};

use crate::FieldViolation;

pub const DEFAULT_PAGE_SIZE: u64 = 20;
pub const MAX_PAGE_SIZE: u64 = 100;

/// The page size asked for, defaulted and capped; negative sizes are invalid.
pub fn page_size(requested: i32) -> Result<u64, FieldViolation> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        size if size < 0 => Err(FieldViolation::new("page_size", "must not be negative")),
        size => Ok((size as u64).min(MAX_PAGE_SIZE)),
    }
}

/// Encodes a cursor as an opaque token.
pub fn encode<C: Serialize>(cursor: &C) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).unwrap_or_default())
}

/// Decodes a token made by [`encode`]; an empty token means the first page.
pub fn decode<C: DeserializeOwned>(token: &str) -> Result<Option<C>, FieldViolation> {
    if token.is_empty() {
        return Ok(None);
    }
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .map(Some)
        .ok_or_else(|| FieldViolation::new("page_token", "is not a token this API issued"))
}

/// A page request's size and cursor, with every invalid field reported.
pub fn request<C: DeserializeOwned>(
    page_size: i32,
    page_token: &str,
) -> Result<(u64, Option<C>), Vec<FieldViolation>> {
    match (self::page_size(page_size), decode(page_token)) {
        (Ok(size), Ok(cursor)) => Ok((size, cursor)),
        (size, cursor) => Err(size.err().into_iter().chain(cursor.err()).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let token = encode(&("2026-11-25", 42));
        assert_eq!(
            decode::<(String, i32)>(&token),
            Ok(Some(("2026-11-25".into(), 42)))
        );
        assert_eq!(decode::<(String, i32)>(""), Ok(None));
        assert!(decode::<(String, i32)>("!!").is_err());
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(1000), Ok(MAX_PAGE_SIZE));
        assert!(page_size(-1).is_err());
        let both = request::<u64>(-1, "!!").expect_err("two violations");
        let fields: Vec<_> = both.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["page_size", "page_token"]);
    }
}
