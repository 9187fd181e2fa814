//! The client's configuration file: which server to talk to and the credentials for
//! each server signed in to, in `$XDG_CONFIG_HOME/atelier/config.toml` (else
//! `~/.config/atelier/config.toml`). The directory is 0700 and the file 0600, written
//! whole to a temporary file and renamed over the old one, so it is never seen half
//! written. Credentials are kept per server URL and only ever sent to that server.

use std::{
    collections::BTreeMap,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::error::{CliError, Exit, Result};

/// The server used when none is given or saved: where `atelier serve` listens.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Config {
    /// The server `atelier login` last signed in to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_url: Option<String>,
    /// Credentials by server URL.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub servers: BTreeMap<String, Credentials>,
}

/// What is kept for one server: a session (access and refresh token) or an API key.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Credentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// When the access token expires, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

/// The configuration file's path.
pub fn path() -> Result<PathBuf> {
    let from_env = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    let base = from_env("XDG_CONFIG_HOME")
        .or_else(|| from_env("HOME").map(|home| home.join(".config")))
        .ok_or_else(|| {
            CliError::unexpected(
                "cannot find a configuration directory: set HOME or XDG_CONFIG_HOME",
            )
        })?;
    Ok(base.join("atelier").join("config.toml"))
}

/// The configuration at `path`; an empty one when there is no file yet.
pub fn load(path: &Path) -> Result<Config> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text)
            .map_err(|err| CliError::unexpected(format!("{} is not valid: {err}", path.display()))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(err) => Err(CliError::unexpected(format!(
            "cannot read {}: {err}",
            path.display()
        ))),
    }
}

/// Writes `config` to `path`: the directory 0700, the file 0600, replaced atomically.
pub fn save(path: &Path, config: &Config) -> Result<()> {
    let failed = |what: &str, err: std::io::Error| {
        CliError::new(
            Exit::Unexpected,
            format!("cannot {what} {}: {err}", path.display()),
        )
    };
    let dir = path
        .parent()
        .ok_or_else(|| CliError::unexpected("the configuration path has no directory"))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|err| failed("create the directory of", err))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|err| failed("restrict the directory of", err))?;
    let text = toml::to_string(config)
        .map_err(|err| CliError::unexpected(format!("cannot encode the configuration: {err}")))?;
    let temporary = dir.join(format!(".config.toml.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(err) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(failed("write", err));
    }
    Ok(())
}

/// Loads, changes and saves the configuration in one go.
pub fn update(path: &Path, change: impl FnOnce(&mut Config)) -> Result<()> {
    let mut config = load(path)?;
    change(&mut config);
    save(path, &config)
}

/// `url` as the configuration keys it: scheme, host, port and path without a
/// trailing slash. Anything but an http(s) URL is refused.
pub fn normalize_url(url: &str) -> Result<String> {
    let parsed = reqwest::Url::parse(url.trim())
        .map_err(|err| CliError::usage(format!("invalid server URL {url:?}: {err}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(CliError::usage(format!(
            "invalid server URL {url:?}: give an http:// or https:// URL"
        )));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(CliError::usage(format!(
            "invalid server URL {url:?}: no query or fragment"
        )));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_keyed_without_a_trailing_slash_and_only_http_is_taken() {
        assert_eq!(
            normalize_url("http://127.0.0.1:8080/").expect("valid"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            normalize_url("https://Atelier.Example/base/").expect("valid"),
            "https://atelier.example/base"
        );
        for bad in ["ftp://x", "not a url", "http://x/?a=1", "file:///tmp"] {
            assert_eq!(
                normalize_url(bad).expect_err(bad).exit,
                Exit::Usage,
                "{bad}"
            );
        }
    }

    #[test]
    fn saving_makes_a_private_file_in_a_private_directory_and_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("atelier").join("config.toml");
        let mut config = Config {
            default_url: Some(DEFAULT_URL.into()),
            ..Default::default()
        };
        config.servers.insert(
            DEFAULT_URL.into(),
            Credentials {
                email: Some("ada@example.com".into()),
                refresh_token: Some("secret".into()),
                access_expires_at: Some(1_700_000_000),
                ..Default::default()
            },
        );
        save(&path, &config).expect("save");
        let mode = |path: &Path| {
            std::fs::metadata(path)
                .expect("metadata")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().expect("dir")), 0o700);
        assert_eq!(load(&path).expect("load"), config);
        update(&path, |config| {
            config.servers.clear();
        })
        .expect("update");
        assert!(load(&path).expect("load").servers.is_empty());
        assert_eq!(
            std::fs::read_dir(path.parent().expect("dir"))
                .expect("list")
                .count(),
            1,
            "no temporary file is left behind"
        );
        assert_eq!(
            load(&dir.path().join("missing.toml")).expect("empty"),
            Config::default()
        );
    }
}
