//! Signed download URLs for the local backend: `/files/<image id>/<variant>?
//! expires=<unix seconds>&signature=<hex HMAC-SHA256>`. The signature covers the
//! image id, the variant and the expiry, so a URL cannot be altered into another
//! image's, another variant or a later expiry. The gateway serves these paths by
//! handing them to the image service, which checks them.
//!
//! URLs handed out by a share link carry `shared=1`, covered by the signature
//! too: the object is then served under a neutral name, never its owner's file
//! name, and taking the mark off breaks the signature.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;
use uuid::Uuid;

/// The path prefix of signed URLs, served by the gateway.
pub const PREFIX: &str = "/files/";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Original,
    Thumbnail,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Original => "original",
            Self::Thumbnail => "thumbnail",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        match value {
            "original" => Some(Self::Original),
            "thumbnail" => Some(Self::Thumbnail),
            _ => None,
        }
    }
}

pub struct UrlSigner {
    key: Vec<u8>,
}

impl UrlSigner {
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    fn mac(&self, id: Uuid, variant: Variant, expires: i64, shared: bool) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("hmac takes any key length");
        mac.update(format!("{id}\n{}\n{expires}", variant.as_str()).as_bytes());
        if shared {
            mac.update(b"\nshared");
        }
        mac
    }

    /// The path and query of a URL for `id`'s `variant` valid until `expires`.
    pub fn sign(&self, id: Uuid, variant: Variant, expires: OffsetDateTime) -> String {
        let expires = expires.unix_timestamp();
        let signature = hex::encode(
            self.mac(id, variant, expires, false)
                .finalize()
                .into_bytes(),
        );
        format!(
            "{PREFIX}{id}/{}?expires={expires}&signature={signature}",
            variant.as_str()
        )
    }

    /// As [`Self::sign`], for a share link's viewer: served under a neutral name.
    pub fn sign_shared(&self, id: Uuid, variant: Variant, expires: OffsetDateTime) -> String {
        let expires = expires.unix_timestamp();
        let signature = hex::encode(self.mac(id, variant, expires, true).finalize().into_bytes());
        format!(
            "{PREFIX}{id}/{}?expires={expires}&shared=1&signature={signature}",
            variant.as_str()
        )
    }

    /// Checks a signed URL's path and query at `now`; `None` when it is not one
    /// this signer made, was altered, or has expired.
    pub fn verify(&self, path: &str, query: &str, now: OffsetDateTime) -> Option<(Uuid, Variant)> {
        self.verify_any(path, query, now)
            .map(|verified| (verified.id, verified.variant))
    }

    /// As [`Self::verify`], saying whether the URL was signed for a share link.
    pub fn verify_any(&self, path: &str, query: &str, now: OffsetDateTime) -> Option<Verified> {
        let rest = path.strip_prefix(PREFIX)?;
        let (id, variant) = rest.split_once('/')?;
        let id = Uuid::parse_str(id).ok()?;
        let variant = Variant::parse(variant)?;
        let (mut expires, mut signature, mut shared) = (None, None, false);
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("expires", value)) => expires = value.parse::<i64>().ok(),
                Some(("signature", value)) => signature = hex::decode(value).ok(),
                Some(("shared", "1")) => shared = true,
                _ => {}
            }
        }
        let (expires, signature) = (expires?, signature?);
        // Constant-time comparison, inside `verify_slice`.
        self.mac(id, variant, expires, shared)
            .verify_slice(&signature)
            .ok()?;
        (now.unix_timestamp() <= expires).then_some(Verified {
            id,
            variant,
            shared,
        })
    }
}

/// What a signed URL names, once its signature held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    pub id: Uuid,
    pub variant: Variant,
    /// Signed for a share link's viewer.
    pub shared: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_urls_verify_until_they_expire_and_resist_tampering() {
        let signer = UrlSigner::new(b"test key".to_vec());
        let now = OffsetDateTime::now_utc();
        let id = Uuid::now_v7();
        let url = signer.sign(id, Variant::Original, now + time::Duration::minutes(15));
        let (path, query) = url.split_once('?').expect("query");
        assert_eq!(
            signer.verify(path, query, now),
            Some((id, Variant::Original))
        );
        assert_eq!(
            signer.verify(path, query, now + time::Duration::minutes(16)),
            None
        );

        let other = Uuid::now_v7();
        let moved = path.replace(&id.to_string(), &other.to_string());
        assert_eq!(signer.verify(&moved, query, now), None, "another image");
        let thumb = path.replace("original", "thumbnail");
        assert_eq!(signer.verify(&thumb, query, now), None, "another variant");
        let later = query.replace("expires=", "expires=9");
        assert_eq!(signer.verify(path, &later, now), None, "a later expiry");
        let other_key = UrlSigner::new(b"other key".to_vec());
        assert_eq!(other_key.verify(path, query, now), None, "another key");
    }

    #[test]
    fn shared_urls_keep_their_mark_and_name_only_their_image() {
        let signer = UrlSigner::new(b"test key".to_vec());
        let now = OffsetDateTime::now_utc();
        let id = Uuid::now_v7();
        let url = signer.sign_shared(id, Variant::Original, now + time::Duration::minutes(5));
        let (path, query) = url.split_once('?').expect("query");
        assert_eq!(
            signer.verify_any(path, query, now),
            Some(Verified {
                id,
                variant: Variant::Original,
                shared: true
            })
        );
        let unmarked = query.replace("shared=1&", "");
        assert_eq!(
            signer.verify(path, &unmarked, now),
            None,
            "the mark taken off"
        );
        let moved = path.replace(&id.to_string(), &Uuid::now_v7().to_string());
        assert_eq!(signer.verify(&moved, query, now), None, "another image");
        let thumb = path.replace("original", "thumbnail");
        assert_eq!(signer.verify(&thumb, query, now), None, "another variant");
        // An owner's URL cannot be marked shared either.
        let own = signer.sign(id, Variant::Original, now + time::Duration::minutes(5));
        let (path, query) = own.split_once('?').expect("query");
        let marked = format!("shared=1&{query}");
        assert_eq!(signer.verify(path, &marked, now), None, "a mark added");
    }
}
