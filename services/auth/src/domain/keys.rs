//! The Ed25519 keys that sign access tokens.
//!
//! Keys are PKCS#8 PEM files in one directory (`JWT_KEYS_DIR`, a mounted Secret in
//! production). The file whose name sorts last signs; every file is published in
//! the JWKS, so a key can be rotated by adding a newer file and removing the old
//! one once the tokens it signed have expired. An empty, writable directory gets a
//! fresh key (the embedded default).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{
    SigningKey,
    pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sha2::{Digest, Sha256};

/// A published Ed25519 public key: its id and its bytes, base64url encoded (a
/// JWK's `kid` and `x`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: String,
    pub x: String,
}

pub struct KeyRing {
    signing_kid: String,
    signing_key: EncodingKey,
    public_keys: Vec<PublicKey>,
}

impl KeyRing {
    /// Loads every key in `dir`, creating one if there is none.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        atelier_common::files::private_dir(dir)?;
        let mut files = pem_files(dir)?;
        if files.is_empty() {
            let path = dir.join(format!(
                "{}.pem",
                time::OffsetDateTime::now_utc().unix_timestamp()
            ));
            write_new_key(&path)?;
            tracing::info!(path = %path.display(), "generated a new token signing key");
            files.push(path);
        }
        let keys = files
            .iter()
            .map(|path| {
                let pem = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let key = SigningKey::from_pkcs8_pem(&pem).map_err(|err| {
                    anyhow::anyhow!("{} is not an Ed25519 PKCS#8 key: {err}", path.display())
                })?;
                Ok(key)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Self::from_keys(keys)
    }

    /// A ring of `keys`, the last one signing.
    fn from_keys(keys: Vec<SigningKey>) -> anyhow::Result<Self> {
        let Some(last) = keys.last() else {
            bail!("no signing keys");
        };
        let signing_kid = kid(last);
        let der = last
            .to_pkcs8_der()
            .map_err(|err| anyhow::anyhow!("encoding the signing key: {err}"))?;
        let signing_key = EncodingKey::from_ed_der(der.as_bytes());
        let public_keys = keys.iter().map(public_key).collect();
        Ok(Self {
            signing_kid,
            signing_key,
            public_keys,
        })
    }

    /// A ring with one new key that lives only in memory (tests).
    pub fn ephemeral() -> anyhow::Result<Self> {
        Self::from_keys(vec![SigningKey::generate(&mut rand::rngs::OsRng)])
    }

    /// Every key of the ring, for verifiers.
    pub fn public_keys(&self) -> &[PublicKey] {
        &self.public_keys
    }

    /// Signs `claims` with the current key, naming it in the `kid` header.
    pub fn sign<T: serde::Serialize>(&self, claims: &T) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.signing_kid.clone());
        jsonwebtoken::encode(&header, claims, &self.signing_key).context("signing a token")
    }
}

fn pem_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "pem") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn write_new_key(path: &Path) -> anyhow::Result<()> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|err| anyhow::anyhow!("encoding a key: {err}"))?;
    if !atelier_common::files::create_private(path, pem.as_bytes())? {
        bail!("{} exists already", path.display());
    }
    Ok(())
}

/// A key's id: the start of the SHA-256 of its public key, so it is stable
/// across restarts and replicas.
fn kid(key: &SigningKey) -> String {
    let digest = Sha256::digest(key.verifying_key().as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..12])
}

fn public_key(key: &SigningKey) -> PublicKey {
    PublicKey {
        kid: kid(key),
        x: URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_persist_and_rotate_by_file_name() {
        let dir = std::env::temp_dir().join(format!("atelier-keys-{}", uuid::Uuid::new_v4()));
        let first = KeyRing::load_or_create(&dir).expect("create");
        let again = KeyRing::load_or_create(&dir).expect("reload");
        assert_eq!(
            first.signing_kid, again.signing_kid,
            "a restart keeps the key"
        );

        write_new_key(&dir.join("9999999999.pem")).expect("second key");
        let rotated = KeyRing::load_or_create(&dir).expect("rotated");
        assert_eq!(rotated.public_keys().len(), 2, "both keys are published");
        assert_ne!(
            rotated.signing_kid, first.signing_kid,
            "the newest key signs"
        );
        assert!(
            rotated
                .public_keys()
                .iter()
                .any(|key| key.kid == first.signing_kid)
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
