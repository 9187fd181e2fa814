//! Encryption at rest for the local store: AES-256-GCM in 64 KiB segments, with the
//! STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár: "Online
//! Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance"), as the RustCrypto
//! `aead::stream` module implements it (`StreamBE32`).
//!
//! An encrypted object is a header and its segments:
//!
//! | bytes | what |
//! |---|---|
//! | 8 | magic `ATELIER\x1a` |
//! | 1 | format version, 1 |
//! | 1 | log2 of the segment size (16: 64 KiB) |
//! | 8 | the key's id: the first 8 bytes of SHA-256("atelier storage key id" ‖ key) |
//! | 32 | a random salt, new for every object |
//! | … | segments: up to 64 KiB of ciphertext each, with its 16-byte GCM tag |
//!
//! Each object has a key of its own, HKDF-SHA256 of the configured key and its salt,
//! so nonces never repeat across objects under one key. Segment `i`'s nonce is a
//! 7-byte prefix (from the same HKDF) ‖ `i` (32-bit big-endian) ‖ a byte that is 1
//! for the last segment only, and every segment authenticates the header as associated
//! data. So a segment changed, moved, dropped or added, a truncated object (its last
//! segment is not marked last) and an edited header all fail to decrypt. An object
//! always has a last segment, empty for an empty object.
//!
//! Segments are independent, so a range is read by decrypting only the segments that
//! cover it (plus the last one, which authenticates the object's length). Memory is
//! one segment per read or write whatever the object's size.
//!
//! Objects written before a key was configured have no header and are read as they
//! are; a header with another key's id is refused with both ids named.

use std::{fmt, path::Path, sync::Arc};

use aes_gcm::{
    Aes256Gcm, KeyInit,
    aead::stream::{NewStream, StreamBE32, StreamPrimitive},
};
use base64::Engine as _;
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

use crate::StorageError;

/// The first bytes of every encrypted object.
pub const MAGIC: [u8; 8] = *b"ATELIER\x1a";
const VERSION: u8 = 1;
/// log2 of the plaintext bytes in one segment: 64 KiB.
const SEGMENT_LOG2: u8 = 16;
/// The GCM tag after each segment's ciphertext.
pub(crate) const TAG_LEN: u64 = 16;
const SALT_LEN: usize = 32;
const KEY_ID_LEN: usize = 8;
/// The header's length.
pub const HEADER_LEN: usize = MAGIC.len() + 2 + KEY_ID_LEN + SALT_LEN;
/// What the per-object key is derived for.
const HKDF_INFO: &[u8] = b"atelier object encryption v1";

/// The key objects are encrypted with: 32 bytes, from `STORAGE_ENCRYPTION_KEY_FILE`.
#[derive(Clone)]
pub struct EncryptionKey {
    key: Arc<[u8; 32]>,
    id: [u8; KEY_ID_LEN],
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

impl EncryptionKey {
    /// A key from 32 bytes: raw, or written as 64 hex digits or base64 (standard or
    /// URL-safe, padded or not), surrounding whitespace ignored.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StorageError> {
        let key: Vec<u8> = if bytes.len() == 32 {
            bytes.to_vec()
        } else {
            let text = std::str::from_utf8(bytes).map_err(|_| bad_key("it is not 32 bytes"))?;
            let text = text.trim();
            let decoded = if text.len() == 64 {
                hex::decode(text).ok()
            } else {
                use base64::engine::general_purpose::{
                    STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
                };
                [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                    .iter()
                    .find_map(|engine| engine.decode(text).ok())
            };
            match decoded {
                Some(key) => key,
                None => {
                    return Err(bad_key(&format!(
                        "it is {} bytes, neither 32 raw bytes nor 64 hex digits nor base64",
                        bytes.len()
                    )));
                }
            }
        };
        let key: [u8; 32] = key.try_into().map_err(|key: Vec<u8>| {
            bad_key(&format!("it decodes to {} bytes, not 32", key.len()))
        })?;
        if key.iter().all(|&byte| byte == key[0]) {
            return Err(bad_key("every byte is the same: use 32 random bytes"));
        }
        let mut hash = Sha256::new();
        hash.update(b"atelier storage key id");
        hash.update(key);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&hash.finalize()[..KEY_ID_LEN]);
        Ok(Self {
            key: Arc::new(key),
            id,
        })
    }

    /// The key in the file at `path` (see [`EncryptionKey::from_bytes`]).
    pub fn from_file(path: &Path) -> Result<Self, StorageError> {
        let bytes = std::fs::read(path).map_err(|err| {
            StorageError::Backend(format!(
                "STORAGE_ENCRYPTION_KEY_FILE: cannot read {}: {err}",
                path.display()
            ))
        })?;
        Self::from_bytes(&bytes).map_err(|err| match err {
            StorageError::Backend(message) => {
                StorageError::Backend(format!("{message} ({})", path.display()))
            }
            other => other,
        })
    }

    /// The key's id, in hex: names the key in errors and logs without revealing it.
    pub fn id(&self) -> String {
        hex::encode(self.id)
    }

    /// A header for a new object, and what seals its segments.
    pub(crate) fn seal(&self) -> Sealer {
        let salt: [u8; SALT_LEN] = rand::random();
        let mut header = [0u8; HEADER_LEN];
        header[..MAGIC.len()].copy_from_slice(&MAGIC);
        header[MAGIC.len()] = VERSION;
        header[MAGIC.len() + 1] = SEGMENT_LOG2;
        header[MAGIC.len() + 2..MAGIC.len() + 2 + KEY_ID_LEN].copy_from_slice(&self.id);
        header[HEADER_LEN - SALT_LEN..].copy_from_slice(&salt);
        Sealer {
            segments: self.segments(&salt, header),
            pending: Vec::with_capacity(segment_size() as usize + TAG_LEN as usize),
            next: 0,
        }
    }

    /// What opens the segments of the object with `header`, when it is encrypted with
    /// this key.
    pub(crate) fn open(&self, header: &[u8; HEADER_LEN]) -> Result<Segments, String> {
        let version = header[MAGIC.len()];
        if version != VERSION {
            return Err(format!(
                "it is encrypted in format version {version}, which this version does not read"
            ));
        }
        if header[MAGIC.len() + 1] != SEGMENT_LOG2 {
            return Err(format!(
                "its segment size 2^{} is not the 2^{SEGMENT_LOG2} this version writes",
                header[MAGIC.len() + 1]
            ));
        }
        let id = &header[MAGIC.len() + 2..MAGIC.len() + 2 + KEY_ID_LEN];
        if id != self.id {
            return Err(format!(
                "it was encrypted with another key (id {}), not the configured one (id {})",
                hex::encode(id),
                self.id()
            ));
        }
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&header[HEADER_LEN - SALT_LEN..]);
        Ok(self.segments(&salt, *header))
    }

    fn segments(&self, salt: &[u8; SALT_LEN], header: [u8; HEADER_LEN]) -> Segments {
        let mut okm = [0u8; 32 + 7];
        Hkdf::<Sha256>::new(Some(&salt[..]), self.key.as_slice())
            .expand(HKDF_INFO, &mut okm)
            .expect("39 bytes is a valid HKDF-SHA256 output length");
        let (mut key, mut prefix) = ([0u8; 32], [0u8; 7]);
        key.copy_from_slice(&okm[..32]);
        prefix.copy_from_slice(&okm[32..]);
        let cipher = Aes256Gcm::new(&key.into());
        Segments {
            stream: StreamBE32::from_aead(cipher, &prefix.into()),
            header,
        }
    }
}

fn bad_key(why: &str) -> StorageError {
    StorageError::Backend(format!(
        "STORAGE_ENCRYPTION_KEY_FILE must hold 32 random bytes (raw, 64 hex digits, or \
         base64 as `openssl rand -base64 32` writes): {why}"
    ))
}

/// The plaintext bytes in a full segment.
pub(crate) fn segment_size() -> u64 {
    1 << SEGMENT_LOG2
}

/// The bytes a full segment takes on disk.
fn sealed_segment_size() -> u64 {
    segment_size() + TAG_LEN
}

/// Whether `prefix`, the first bytes of an object, are an encryption header's.
pub(crate) fn is_encrypted(prefix: &[u8]) -> bool {
    prefix.starts_with(&MAGIC)
}

/// The plaintext size of an encrypted object of `file_len` bytes; `None` when no
/// object of the format is that long.
pub(crate) fn plaintext_len(file_len: u64) -> Option<u64> {
    let body = file_len.checked_sub(HEADER_LEN as u64)?;
    let count = body.div_ceil(sealed_segment_size());
    let last = body.checked_sub((count.checked_sub(1)?) * sealed_segment_size())?;
    (last >= TAG_LEN).then(|| body - count * TAG_LEN)
}

/// The number of segments of an object of `plain` plaintext bytes (at least one).
pub(crate) fn segment_count(plain: u64) -> u64 {
    plain.div_ceil(segment_size()).max(1)
}

/// Where segment `index` starts in the file, and how many bytes it takes there, in
/// an object of `plain` plaintext bytes.
pub(crate) fn segment_span(plain: u64, index: u64) -> (u64, u64) {
    let start = HEADER_LEN as u64 + index * sealed_segment_size();
    let plain_len = if index + 1 == segment_count(plain) {
        plain - index * segment_size()
    } else {
        segment_size()
    };
    (start, plain_len + TAG_LEN)
}

/// One object's segment cipher.
pub(crate) struct Segments {
    stream: StreamBE32<Aes256Gcm>,
    header: [u8; HEADER_LEN],
}

impl Segments {
    /// Decrypts segment `index` in place; fails when it was changed, moved, or is
    /// not (or is) the last one as `last` says.
    pub(crate) fn open(&self, index: u64, last: bool, buffer: &mut Vec<u8>) -> Result<(), ()> {
        let position = u32::try_from(index).map_err(|_| ())?;
        self.stream
            .decrypt_in_place(position, last, &self.header, buffer)
            .map_err(|_| ())
    }

    fn seal(&self, index: u32, last: bool, buffer: &mut Vec<u8>) -> Result<(), StorageError> {
        self.stream
            .encrypt_in_place(index, last, &self.header, buffer)
            .map_err(|_| StorageError::Backend("encrypting an object segment failed".to_owned()))
    }
}

/// Encrypts one object as its bytes arrive: a full segment is sealed once more bytes
/// follow it (only then is it known not to be the last).
pub(crate) struct Sealer {
    segments: Segments,
    pending: Vec<u8>,
    next: u32,
}

impl Sealer {
    /// The header to write before the segments.
    pub(crate) fn header(&self) -> [u8; HEADER_LEN] {
        self.segments.header
    }

    /// Takes `data`; adds every segment sealed meanwhile to `out`.
    pub(crate) fn push(
        &mut self,
        mut data: &[u8],
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), StorageError> {
        let full = segment_size() as usize;
        while !data.is_empty() {
            if self.pending.len() == full {
                let mut segment = std::mem::replace(
                    &mut self.pending,
                    Vec::with_capacity(full + TAG_LEN as usize),
                );
                self.segments.seal(self.next, false, &mut segment)?;
                self.next = self.next.checked_add(1).ok_or_else(|| {
                    StorageError::Backend("the object is too large to encrypt".to_owned())
                })?;
                out.push(segment);
            }
            let take = (full - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Seals the last segment.
    pub(crate) fn finish(mut self) -> Result<Vec<u8>, StorageError> {
        let mut segment = std::mem::take(&mut self.pending);
        self.segments.seal(self.next, true, &mut segment)?;
        Ok(segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> EncryptionKey {
        EncryptionKey::from_bytes(&[7u8; 31].iter().chain(&[9u8]).copied().collect::<Vec<_>>())
            .expect("key")
    }

    #[test]
    fn keys_are_read_raw_hex_or_base64() {
        let raw: Vec<u8> = (0u8..32).collect();
        let id = EncryptionKey::from_bytes(&raw).expect("raw").id();
        let hex_text = format!("{}\n", hex::encode(&raw));
        assert_eq!(
            EncryptionKey::from_bytes(hex_text.as_bytes())
                .expect("hex")
                .id(),
            id
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
        assert_eq!(
            EncryptionKey::from_bytes(format!(" {b64}\n").as_bytes())
                .expect("base64")
                .id(),
            id
        );
        for bad in [
            &b"short"[..],
            &[0u8; 32][..],
            &[1u8; 33][..],
            &b"zz3456789012345678901234567890123456789012345678901234567890abcd"[..],
            base64::engine::general_purpose::STANDARD
                .encode([5u8; 16])
                .as_bytes(),
        ] {
            let err = EncryptionKey::from_bytes(bad).expect_err("bad key");
            assert!(err.to_string().contains("32 random bytes"), "{err}");
        }
        assert!(
            !format!("{:?}", key()).contains("[7"),
            "the key stays out of Debug"
        );
    }

    #[test]
    fn sizes_round_trip() {
        let full = segment_size();
        for plain in [0, 1, full - 1, full, full + 1, 3 * full, 3 * full + 5] {
            let count = segment_count(plain);
            let file = HEADER_LEN as u64 + plain + count * TAG_LEN;
            assert_eq!(plaintext_len(file), Some(plain), "{plain}");
            let (start, len) = segment_span(plain, count - 1);
            assert_eq!(start + len, file, "{plain}");
        }
        assert_eq!(plaintext_len(HEADER_LEN as u64 + 15), None);
        assert_eq!(plaintext_len(HEADER_LEN as u64 + full + TAG_LEN + 3), None);
        assert_eq!(plaintext_len(3), None);
    }

    #[test]
    fn segments_open_only_in_place_and_with_their_key() {
        let key = key();
        let mut sealer = key.seal();
        let header = sealer.header();
        let data = vec![42u8; segment_size() as usize + 10];
        let mut sealed = Vec::new();
        sealer.push(&data, &mut sealed).expect("push");
        sealed.push(sealer.finish().expect("finish"));
        assert_eq!(sealed.len(), 2);
        let opener = key.open(&header).expect("same key");
        let mut first = sealed[0].clone();
        opener.open(0, false, &mut first).expect("first");
        assert_eq!(first.len(), segment_size() as usize);
        // The last segment is only the last one, only at its place.
        assert!(opener.open(1, false, &mut sealed[1].clone()).is_err());
        assert!(opener.open(0, true, &mut sealed[1].clone()).is_err());
        assert!(opener.open(0, true, &mut sealed[0].clone()).is_err());
        let mut last = sealed[1].clone();
        opener.open(1, true, &mut last).expect("last");
        assert_eq!(last, vec![42u8; 10]);

        let other = EncryptionKey::from_bytes(&(0u8..32).collect::<Vec<_>>()).expect("key");
        let err = other.open(&header).err().expect("another key");
        assert!(
            err.contains(&key.id()) && err.contains(&other.id()),
            "{err}"
        );
    }
}
