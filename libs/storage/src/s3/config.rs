//! Where and how objects are stored on S3: the settings, read from the environment
//! and checked before a client is built.

use std::fmt;

use crate::StorageError;

/// SSE-S3: objects encrypted by the store with keys it manages; the default.
pub const SSE_AES256: &str = "AES256";

/// The region used when none is configured.
pub const DEFAULT_REGION: &str = "us-east-1";
/// The default multipart part size: 8 MiB.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
/// The smallest part S3 accepts (but for the last one): 5 MiB.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// The largest part S3 accepts: 5 GiB.
pub const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;

/// Where and how objects are stored on S3.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket every object goes into.
    pub bucket: String,
    /// The bucket's region (`us-east-1` by default).
    pub region: String,
    /// The endpoint of an S3-compatible store (MinIO, Ceph, R2, ...); AWS when `None`.
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`) rather than virtual-hosted
    /// (`bucket.endpoint/key`); most S3-compatible stores want it.
    pub force_path_style: bool,
    /// Static credentials; when either is `None` the default AWS credential chain is used
    /// (environment, profile, web identity, ECS and EC2 instance roles).
    pub access_key_id: Option<String>,
    /// The secret for `access_key_id`.
    pub secret_access_key: Option<String>,
    /// Server-side encryption asked for on every write (PutObject and
    /// CreateMultipartUpload): `AES256` (the default: SSE-S3) or `aws:kms`; `None`
    /// sends no header (`S3_SSE=none`, for a store that cannot encrypt, e.g. MinIO
    /// without a KMS).
    pub server_side_encryption: Option<String>,
    /// The KMS key for `aws:kms` (the bucket's default key when `None`).
    pub sse_kms_key_id: Option<String>,
    /// The multipart part size, and so the memory one put holds: at least 5 MiB.
    pub part_size: usize,
}

impl S3Config {
    /// A config for `bucket` on AWS in `us-east-1`, with the default credential chain,
    /// SSE-S3 (`AES256`) and 8 MiB parts.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            region: DEFAULT_REGION.to_owned(),
            endpoint: None,
            force_path_style: false,
            access_key_id: None,
            secret_access_key: None,
            server_side_encryption: Some(SSE_AES256.to_owned()),
            sse_kms_key_id: None,
            part_size: DEFAULT_PART_SIZE,
        }
    }

    /// Reads the config from the environment, `None` when `S3_BUCKET` is unset or empty:
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `S3_BUCKET` | the bucket |
    /// | `S3_REGION` | its region, `us-east-1` by default |
    /// | `S3_ENDPOINT` | an S3-compatible store's endpoint |
    /// | `S3_FORCE_PATH_STYLE` | `true`/`false`; `true` by default when `S3_ENDPOINT` is set |
    /// | `S3_ACCESS_KEY_ID`, `S3_SECRET_ACCESS_KEY` | static credentials (both or neither) |
    /// | `S3_SSE` | `AES256` (the default), `aws:kms`, or `none` |
    /// | `S3_SSE_KMS_KEY_ID` | the KMS key for `aws:kms` |
    pub fn from_env() -> Result<Option<Self>, StorageError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`S3Config::from_env`] over any source of variables.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, StorageError> {
        let var = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let Some(bucket) = var("S3_BUCKET") else {
            return Ok(None);
        };
        let endpoint = var("S3_ENDPOINT");
        let force_path_style = match var("S3_FORCE_PATH_STYLE") {
            None => endpoint.is_some(),
            Some(value) => match value.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => {
                    return Err(invalid_config(format!(
                        "S3_FORCE_PATH_STYLE must be true or false, not {value:?}"
                    )));
                }
            },
        };
        let config = Self {
            bucket,
            region: var("S3_REGION").unwrap_or_else(|| DEFAULT_REGION.to_owned()),
            endpoint,
            force_path_style,
            access_key_id: var("S3_ACCESS_KEY_ID"),
            secret_access_key: var("S3_SECRET_ACCESS_KEY"),
            server_side_encryption: match var("S3_SSE") {
                None => Some(SSE_AES256.to_owned()),
                Some(value) if value.trim().eq_ignore_ascii_case("none") => None,
                Some(value) => Some(value.trim().to_owned()),
            },
            sse_kms_key_id: var("S3_SSE_KMS_KEY_ID"),
            part_size: DEFAULT_PART_SIZE,
        };
        config.validate()?;
        Ok(Some(config))
    }

    /// Checks the settings fit together; [`S3Store::new`](super::S3Store::new) calls it.
    pub fn validate(&self) -> Result<(), StorageError> {
        if self.bucket.trim().is_empty() {
            return Err(invalid_config("the bucket is empty".to_owned()));
        }
        if self.region.trim().is_empty() {
            return Err(invalid_config("the region is empty".to_owned()));
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err(invalid_config(
                "set both the access key id and the secret access key, or neither".to_owned(),
            ));
        }
        match self.server_side_encryption.as_deref() {
            None | Some("AES256") => {
                if self.sse_kms_key_id.is_some() {
                    return Err(invalid_config(
                        "a KMS key id (S3_SSE_KMS_KEY_ID) needs S3_SSE=aws:kms".to_owned(),
                    ));
                }
            }
            Some("aws:kms") => {}
            Some(other) => {
                return Err(invalid_config(format!(
                    "server-side encryption (S3_SSE) must be AES256, aws:kms or none, not {other:?}"
                )));
            }
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return Err(invalid_config(format!(
                "the part size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes, not {}",
                self.part_size
            )));
        }
        Ok(())
    }
}

/// Like the derived one, but the secret stays out of logs.
impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("force_path_style", &self.force_path_style)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("server_side_encryption", &self.server_side_encryption)
            .field("sse_kms_key_id", &self.sse_kms_key_id)
            .field("part_size", &self.part_size)
            .finish()
    }
}

fn invalid_config(message: String) -> StorageError {
    StorageError::Backend(format!("invalid S3 config: {message}"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn from_env_without_bucket_is_none() {
        assert!(matches!(S3Config::from_lookup(lookup(&[])), Ok(None)));
        assert!(matches!(
            S3Config::from_lookup(lookup(&[("S3_BUCKET", ""), ("S3_REGION", "eu-west-1")])),
            Ok(None)
        ));
    }

    #[test]
    fn from_env_defaults() {
        let config = S3Config::from_lookup(lookup(&[("S3_BUCKET", "images")]))
            .ok()
            .flatten();
        assert_eq!(config, Some(S3Config::new("images")));
        assert_eq!(
            config.and_then(|config| config.server_side_encryption),
            Some("AES256".to_owned()),
            "objects are encrypted at rest unless asked otherwise"
        );
        let none = S3Config::from_lookup(lookup(&[("S3_BUCKET", "images"), ("S3_SSE", "none")]))
            .ok()
            .flatten();
        assert_eq!(none.map(|config| config.server_side_encryption), Some(None));
    }

    #[test]
    fn from_env_reads_everything() {
        let config = S3Config::from_lookup(lookup(&[
            ("S3_BUCKET", "images"),
            ("S3_REGION", "eu-west-3"),
            ("S3_ENDPOINT", "http://minio:9000"),
            ("S3_ACCESS_KEY_ID", "id"),
            ("S3_SECRET_ACCESS_KEY", "secret"),
            ("S3_SSE", "aws:kms"),
            ("S3_SSE_KMS_KEY_ID", "alias/atelier"),
        ]))
        .ok()
        .flatten();
        assert_eq!(
            config,
            Some(S3Config {
                bucket: "images".to_owned(),
                region: "eu-west-3".to_owned(),
                endpoint: Some("http://minio:9000".to_owned()),
                force_path_style: true,
                access_key_id: Some("id".to_owned()),
                secret_access_key: Some("secret".to_owned()),
                server_side_encryption: Some("aws:kms".to_owned()),
                sse_kms_key_id: Some("alias/atelier".to_owned()),
                part_size: DEFAULT_PART_SIZE,
            })
        );
        let virtual_hosted = S3Config::from_lookup(lookup(&[
            ("S3_BUCKET", "images"),
            ("S3_ENDPOINT", "https://r2.example"),
            ("S3_FORCE_PATH_STYLE", "false"),
        ]))
        .ok()
        .flatten();
        assert_eq!(virtual_hosted.map(|c| c.force_path_style), Some(false));
    }

    #[test]
    fn from_env_rejects_bad_values() {
        for vars in [
            &[("S3_BUCKET", "b"), ("S3_FORCE_PATH_STYLE", "maybe")][..],
            &[("S3_BUCKET", "b"), ("S3_SSE", "aes")],
            &[("S3_BUCKET", "b"), ("S3_SSE_KMS_KEY_ID", "k")],
            &[
                ("S3_BUCKET", "b"),
                ("S3_SSE", "none"),
                ("S3_SSE_KMS_KEY_ID", "k"),
            ],
            &[
                ("S3_BUCKET", "b"),
                ("S3_SSE", "AES256"),
                ("S3_SSE_KMS_KEY_ID", "k"),
            ],
            &[("S3_BUCKET", "b"), ("S3_ACCESS_KEY_ID", "id")],
            &[("S3_BUCKET", "b"), ("S3_SECRET_ACCESS_KEY", "secret")],
        ] {
            assert!(
                matches!(
                    S3Config::from_lookup(lookup(vars)),
                    Err(StorageError::Backend(_))
                ),
                "{vars:?}"
            );
        }
    }

    #[test]
    fn part_size_is_bounded() {
        let mut config = S3Config::new("b");
        config.part_size = MIN_PART_SIZE - 1;
        assert!(config.validate().is_err());
        config.part_size = MIN_PART_SIZE;
        assert!(config.validate().is_ok());
    }

    #[test]
    fn debug_hides_the_secret() {
        let mut config = S3Config::new("b");
        config.access_key_id = Some("id".to_owned());
        config.secret_access_key = Some("hunter2".to_owned());
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
