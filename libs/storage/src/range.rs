//! Byte ranges, resolved the same way by every backend.

use std::ops::RangeInclusive;

use crate::{ByteRange, StorageError};

/// The empty range, what an empty object read whole carries.
pub(crate) const EMPTY: RangeInclusive<u64> = RangeInclusive::new(1, 0);

/// How many bytes an inclusive range covers (0 for an empty one).
pub(crate) fn range_len(range: &RangeInclusive<u64>) -> u64 {
    if range.is_empty() {
        0
    } else {
        range.end() - range.start() + 1
    }
}

/// Rejects ranges that cannot be satisfied whatever the object's size: an end before the
/// start, or a zero-length suffix.
pub(crate) fn check(range: ByteRange) -> Result<(), StorageError> {
    match range {
        ByteRange::From {
            start,
            end: Some(end),
        } if end < start => Err(StorageError::InvalidRange),
        ByteRange::Suffix(0) => Err(StorageError::InvalidRange),
        _ => Ok(()),
    }
}

/// The inclusive range of an object of `size` bytes that `range` asks for, as HTTP
/// resolves it: the end is clamped to the object, a suffix longer than the object is the
/// whole object, and a start at or past the end is [`StorageError::InvalidRange`].
pub(crate) fn resolve(
    size: u64,
    range: Option<ByteRange>,
) -> Result<RangeInclusive<u64>, StorageError> {
    let Some(range) = range else {
        return Ok(if size == 0 { EMPTY } else { 0..=size - 1 });
    };
    check(range)?;
    if size == 0 {
        return Err(StorageError::InvalidRange);
    }
    let last = size - 1;
    match range {
        ByteRange::From { start, .. } if start >= size => Err(StorageError::InvalidRange),
        ByteRange::From { start, end } => Ok(start..=end.map_or(last, |end| end.min(last))),
        ByteRange::Suffix(n) => Ok(size.saturating_sub(n)..=last),
    }
}

/// The HTTP `Range` header value for `range`.
pub(crate) fn header(range: ByteRange) -> String {
    match range {
        ByteRange::From { start, end: None } => format!("bytes={start}-"),
        ByteRange::From {
            start,
            end: Some(end),
        } => format!("bytes={start}-{end}"),
        ByteRange::Suffix(n) => format!("bytes=-{n}"),
    }
}

/// Parses a `Content-Range: bytes start-end/size` header value.
pub(crate) fn parse_content_range(value: &str) -> Option<(RangeInclusive<u64>, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, size) = rest.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    let (start, end, size) = (
        start.trim().parse().ok()?,
        end.trim().parse().ok()?,
        size.trim().parse().ok()?,
    );
    (start <= end && end < size).then_some((start..=end, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(start: u64, end: Option<u64>) -> Option<ByteRange> {
        Some(ByteRange::From { start, end })
    }

    #[test]
    fn resolves_like_http() {
        assert_eq!(resolve(10, None).ok(), Some(0..=9));
        assert_eq!(resolve(0, None).ok(), Some(EMPTY));
        assert_eq!(resolve(10, from(2, Some(4))).ok(), Some(2..=4));
        assert_eq!(resolve(10, from(2, Some(100))).ok(), Some(2..=9));
        assert_eq!(resolve(10, from(9, None)).ok(), Some(9..=9));
        assert_eq!(resolve(10, from(3, Some(3))).ok(), Some(3..=3));
        assert_eq!(resolve(10, Some(ByteRange::Suffix(3))).ok(), Some(7..=9));
        assert_eq!(resolve(10, Some(ByteRange::Suffix(30))).ok(), Some(0..=9));
    }

    #[test]
    fn unsatisfiable_ranges() {
        for (size, range) in [
            (10, from(10, None)),
            (10, from(11, Some(20))),
            (10, from(5, Some(4))),
            (10, Some(ByteRange::Suffix(0))),
            (0, from(0, None)),
            (0, Some(ByteRange::Suffix(1))),
        ] {
            assert!(
                matches!(resolve(size, range), Err(StorageError::InvalidRange)),
                "{range:?} of {size} bytes"
            );
        }
    }

    #[test]
    fn lengths() {
        assert_eq!(range_len(&EMPTY), 0);
        assert_eq!(range_len(&(0..=0)), 1);
        assert_eq!(range_len(&(3..=9)), 7);
    }

    #[test]
    fn headers() {
        assert_eq!(
            header(ByteRange::From {
                start: 3,
                end: None
            }),
            "bytes=3-"
        );
        assert_eq!(
            header(ByteRange::From {
                start: 3,
                end: Some(5)
            }),
            "bytes=3-5"
        );
        assert_eq!(header(ByteRange::Suffix(7)), "bytes=-7");
        assert_eq!(parse_content_range("bytes 3-5/10"), Some((3..=5, 10)));
        assert_eq!(parse_content_range("bytes 3-5/*"), None);
        assert_eq!(parse_content_range("bytes */10"), None);
        assert_eq!(parse_content_range("bytes 5-3/10"), None);
    }
}
