//! Cursor pagination: a page token is the key the previous page ended at, in its
//! plain text form (an id, an offset). Any well-formed key is a place to start from,
//! so a token is checked for its form only: every query is scoped to its caller,
//! and a key names no data by itself.

use std::{fmt::Display, str::FromStr};

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

/// The token of a cursor.
pub fn encode<C: Display>(cursor: &C) -> String {
    cursor.to_string()
}

/// The cursor of a token made by [`encode`]; an empty token means the first page.
pub fn decode<C: FromStr>(token: &str) -> Result<Option<C>, FieldViolation> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .parse()
        .map(Some)
        .map_err(|_| FieldViolation::new("page_token", "is not a token this API issued"))
}

/// A page request's size and cursor, with every invalid field reported.
pub fn request<C: FromStr>(
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
        let id = uuid::Uuid::now_v7();
        let token = encode(&id);
        assert_eq!(token, id.to_string());
        assert_eq!(decode::<uuid::Uuid>(&token), Ok(Some(id)));
        assert_eq!(decode::<uuid::Uuid>(""), Ok(None));
        assert!(decode::<uuid::Uuid>("!!").is_err());
        assert_eq!(decode::<usize>(&encode(&40_usize)), Ok(Some(40)));
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(1000), Ok(MAX_PAGE_SIZE));
        assert!(page_size(-1).is_err());
        let both = request::<u64>(-1, "!!").expect_err("two violations");
        let fields: Vec<_> = both.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["page_size", "page_token"]);
    }
}
