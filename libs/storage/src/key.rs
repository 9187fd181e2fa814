//! Object keys, the same for every backend.

use crate::StorageError;

/// The longest key accepted, in bytes (S3's own limit).
pub const MAX_KEY_LEN: usize = 1024;

/// The longest segment accepted, in bytes (a file name on common filesystems).
const MAX_SEGMENT_LEN: usize = 255;

/// Checks that `key` is a relative path of `[A-Za-z0-9._-]` segments joined by `/`, at
/// most [`MAX_KEY_LEN`] bytes long, with no empty, `.` or `..` segment and no segment
/// longer than 255 bytes. Every backend applies it, so keys mean the same everywhere.
pub fn validate_key(key: &str) -> Result<(), StorageError> {
    let valid = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.split('/').all(|segment| {
            !segment.is_empty()
                && segment.len() <= MAX_SEGMENT_LEN
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if valid {
        Ok(())
    } else {
        Err(StorageError::InvalidKey(key.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_relative_paths_of_plain_segments() {
        for key in [
            "a",
            "images/2024/01/abc.png",
            "u_1/x-y.z",
            ".hidden",
            "a/..b/c..",
            "A.B-C_D",
        ] {
            assert!(validate_key(key).is_ok(), "{key:?} should be accepted");
        }
        assert!(validate_key(&"a".repeat(255)).is_ok());
        let mut segments = vec!["b".repeat(255); 3];
        segments.extend(["b".repeat(254), "c".to_owned()]);
        let longest = segments.join("/");
        assert_eq!(longest.len(), MAX_KEY_LEN);
        assert!(validate_key(&longest).is_ok());
        assert!(validate_key(&format!("{longest}d")).is_err());
    }

    #[test]
    fn rejects_everything_else() {
        let too_long = ["a"; 513].join("/");
        for key in [
            "",
            "/",
            "/abs",
            "a/",
            "a//b",
            "..",
            "a/../b",
            ".",
            "./a",
            "a\\b",
            "a b",
            "a?b",
            "é",
            "a\0b",
            "a%2Fb",
            &"a".repeat(256),
            &too_long,
        ] {
            assert!(
                matches!(validate_key(key), Err(StorageError::InvalidKey(k)) if k == key),
                "{key:?} should be rejected"
            );
        }
    }
}
