//! The gateway's REST API as the CLI calls it: the server URL, the credentials
//! (an API key, or a session whose access token is refreshed with its refresh token
//! when it expires or is refused), and errors decoded from problem documents.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::Value;
use tokio::sync::Mutex;

use super::{
    Common,
    config::{self, Credentials},
    error::{CliError, Exit, Result},
};

/// A request with no body of its own answers within this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// An access token this close to its expiry is refreshed before use.
const REFRESH_MARGIN_SECS: i64 = 30;

/// How requests are signed.
enum Auth {
    None,
    /// An API key (`ATELIER_API_KEY` or one saved by `atelier login --key`).
    Key(String),
    /// A session from `atelier login`; refreshed in place and saved.
    Session(Mutex<Credentials>),
}

pub struct Api {
    http: reqwest::Client,
    /// The server's URL without a trailing slash.
    pub base: String,
    auth: Auth,
    config_path: std::path::PathBuf,
}

/// A signed-in session as `/api/auth/login`, `/register` and `/refresh` answer it.
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
    pub user: UserInfo,
}

#[derive(Debug, Deserialize)]
pub struct UserInfo {
    pub id: String,
    pub email: String,
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or_default()
}

impl TokenResponse {
    /// The credentials to keep for this session.
    pub fn credentials(&self) -> Credentials {
        Credentials {
            email: Some(self.user.email.clone()),
            user_id: Some(self.user.id.clone()),
            access_token: Some(self.access_token.clone()),
            access_expires_at: Some(now_secs() + self.expires_in),
            refresh_token: Some(self.refresh_token.clone()),
            api_key: None,
        }
    }
}

fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("atelier-cli/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|err| CliError::unexpected(format!("cannot set up HTTP: {err}")))
}

impl Api {
    /// The client for the server `common` names (`--url`, `ATELIER_URL`), else the
    /// one saved by `atelier login`, else the local default; signed with
    /// `ATELIER_API_KEY` when set, else with what is saved for that server.
    pub fn new(common: &Common) -> Result<Self> {
        let config_path = config::path()?;
        let config = config::load(&config_path)?;
        let base = match &common.url {
            Some(url) => config::normalize_url(url)?,
            None => config
                .default_url
                .clone()
                .unwrap_or_else(|| config::DEFAULT_URL.to_owned()),
        };
        let saved = config.servers.get(&base).cloned();
        let env_key = std::env::var("ATELIER_API_KEY")
            .ok()
            .filter(|key| !key.trim().is_empty());
        let auth = match (env_key, saved) {
            (Some(key), _) => Auth::Key(key.trim().to_owned()),
            (
                None,
                Some(Credentials {
                    api_key: Some(key), ..
                }),
            ) => Auth::Key(key),
            (None, Some(credentials)) if credentials.refresh_token.is_some() => {
                Auth::Session(Mutex::new(credentials))
            }
            _ => Auth::None,
        };
        Ok(Self {
            http: http_client()?,
            base,
            auth,
            config_path,
        })
    }

    /// The same server with no credentials (for signing in).
    pub fn anonymous(&self) -> Result<Self> {
        Ok(Self {
            http: self.http.clone(),
            base: self.base.clone(),
            auth: Auth::None,
            config_path: self.config_path.clone(),
        })
    }

    /// The same server signed with the API key `key`.
    pub fn with_key(&self, key: &str) -> Self {
        Self {
            http: self.http.clone(),
            base: self.base.clone(),
            auth: Auth::Key(key.to_owned()),
            config_path: self.config_path.clone(),
        }
    }

    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    pub fn has_credentials(&self) -> bool {
        !matches!(self.auth, Auth::None)
    }

    /// Fails with "not signed in" (exit 3) when there are no credentials at all.
    pub fn require_credentials(&self) -> Result<()> {
        if self.has_credentials() {
            Ok(())
        } else {
            Err(CliError::not_signed_in(&self.base))
        }
    }

    /// The saved session's refresh token, if this client signs with one.
    pub async fn refresh_token(&self) -> Option<String> {
        match &self.auth {
            Auth::Session(session) => session.lock().await.refresh_token.clone(),
            _ => None,
        }
    }

    /// `path` (`/api/...`) or an absolute URL, resolved against the server.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    pub fn transport(&self, err: &reqwest::Error) -> CliError {
        CliError::from_transport(&self.base, err)
    }

    /// The bearer token to send now, refreshing a session's access token first when
    /// it expires within [`REFRESH_MARGIN_SECS`].
    async fn bearer(&self) -> Result<Option<String>> {
        match &self.auth {
            Auth::None => Ok(None),
            Auth::Key(key) => Ok(Some(key.clone())),
            Auth::Session(session) => {
                let mut session = session.lock().await;
                let fresh = session
                    .access_expires_at
                    .is_some_and(|at| at - REFRESH_MARGIN_SECS > now_secs());
                if !fresh || session.access_token.is_none() {
                    self.refresh_locked(&mut session).await?;
                }
                Ok(session.access_token.clone())
            }
        }
    }

    /// After a 401 with `used`: refreshes the session unless another request did
    /// already. Whether sending again may help.
    async fn refresh_after_refusal(&self, used: Option<&str>) -> Result<bool> {
        let Auth::Session(session) = &self.auth else {
            return Ok(false);
        };
        let mut session = session.lock().await;
        if session.access_token.as_deref() == used {
            self.refresh_locked(&mut session).await?;
        }
        Ok(true)
    }

    /// Exchanges the refresh token for a new session and saves it. Callers hold the
    /// session's lock, so a refresh token is never used twice (which would end it).
    async fn refresh_locked(&self, session: &mut Credentials) -> Result<()> {
        let refresh_token = session
            .refresh_token
            .clone()
            .ok_or_else(|| CliError::not_signed_in(&self.base))?;
        let response = self
            .http
            .post(self.url("/api/auth/refresh"))
            .timeout(REQUEST_TIMEOUT)
            .json(&serde_json::json!({"refresh_token": refresh_token}))
            .send()
            .await
            .map_err(|err| self.transport(&err))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            // The session is over: forget it, so the next command says so at once.
            let base = self.base.clone();
            let _ = config::update(&self.config_path, |config| {
                config.servers.remove(&base);
            });
            return Err(CliError::new(
                Exit::Unauthorized,
                format!(
                    "the session with {} has ended: run `atelier login` again",
                    self.base
                ),
            ));
        }
        let tokens: TokenResponse = decode(response).await.map_err(|err| {
            if status.is_success() {
                err
            } else {
                err.with_context("refreshing the session")
            }
        })?;
        *session = tokens.credentials();
        let (base, saved) = (self.base.clone(), session.clone());
        config::update(&self.config_path, |config| {
            config.servers.insert(base, saved);
        })
    }

    /// Sends the request `build` makes, signed; once more after refreshing the session
    /// when the server refuses the token. Any answer but a success becomes an error.
    pub async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response> {
        let mut retried = false;
        loop {
            let token = self.bearer().await?;
            let mut request = build(&self.http);
            if let Some(token) = &token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.map_err(|err| self.transport(&err))?;
            if response.status() == StatusCode::UNAUTHORIZED
                && !retried
                && self.refresh_after_refusal(token.as_deref()).await?
            {
                retried = true;
                continue;
            }
            return check(response).await;
        }
    }

    /// A JSON request to `path` (a body when `body` is given), its JSON answer.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T> {
        let url = self.url(path);
        let response = self
            .send(|http| {
                let request = http.request(method.clone(), &url).timeout(REQUEST_TIMEOUT);
                match body {
                    Some(body) => request.json(body),
                    None => request,
                }
            })
            .await?;
        decode(response).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(Method::GET, path, None).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T> {
        self.json(Method::POST, path, Some(body)).await
    }

    /// A request whose answer has no body (`204`).
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<()> {
        let url = self.url(path);
        self.send(|http| {
            let request = http.request(method.clone(), &url).timeout(REQUEST_TIMEOUT);
            match body {
                Some(body) => request.json(body),
                None => request,
            }
        })
        .await?;
        Ok(())
    }

    /// A GET of a signed URL: no credentials are sent (a presigned S3 URL refuses
    /// a request that carries two).
    pub async fn get_signed(&self, url: &str) -> Result<Response> {
        let response = self
            .http
            .get(self.url(url))
            .send()
            .await
            .map_err(|err| self.transport(&err))?;
        check(response).await
    }
}

/// The answer when it is a success, else the error its problem document describes.
pub async fn check(response: Response) -> Result<Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    Err(CliError::from_response(status.as_u16(), &body))
}

/// The JSON body of a successful answer.
pub async fn decode<T: DeserializeOwned>(response: Response) -> Result<T> {
    let response = check(response).await?;
    let bytes = response
        .bytes()
        .await
        .map_err(|err| CliError::new(Exit::Unreachable, format!("reading the answer: {err}")))?;
    serde_json::from_slice(&bytes).map_err(|err| {
        CliError::unexpected(format!("the server's answer is not as expected: {err}"))
    })
}

/// Percent-encodes one path segment or query value (dots too, so `..` stays a name).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode("esrgan-upscale"), "esrgan-upscale");
        assert_eq!(encode("../x y?z"), "%2E%2E%2Fx%20y%3Fz");
        assert_eq!(encode("é"), "%C3%A9");
    }
}
