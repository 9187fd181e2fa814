//! The web app and the API docs (`gateway/web/dist`): served from `WEB_DIR` when it
//! holds a build, else from the copy embedded in the binary. Release builds embed
//! the dist present when they were compiled (none: nothing embedded), so one binary
//! serves the app on its own; debug builds read `gateway/web/dist` from disk instead.

use std::path::Path;

use axum::{
    Router,
    http::{HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use rust_embed::Embed;
use tower_http::services::{ServeDir, ServeFile};

#[derive(Embed)]
#[folder = "web/dist"]
#[allow_missing = true]
struct Assets;

/// Whether a built app is embedded (or, in debug builds, present in `gateway/web/dist`).
pub fn embedded() -> bool {
    Assets::get("index.html").is_some()
}

/// Whether `dir` holds a build of the app.
pub fn on_disk(dir: &Path) -> bool {
    dir.join("index.html").is_file()
}

/// Adds the app (`/`, with `index.html` for every unknown path) and the API docs
/// (`/api/docs/`) to `router`: from `dir` when it holds a build or nothing is
/// embedded, else from the embedded copy.
pub fn serve(router: Router, dir: &Path) -> Router {
    if on_disk(dir) || !embedded() {
        let docs = ServeDir::new(dir.join("api-docs"));
        let app = ServeDir::new(dir).fallback(ServeFile::new(dir.join("index.html")));
        router
            .nest_service("/api/docs/", docs)
            .fallback_service(app)
    } else {
        router
            .route("/api/docs/", axum::routing::get(embedded_file))
            .route("/api/docs/{*rest}", axum::routing::get(embedded_file))
            .fallback(embedded_file)
    }
}

/// The embedded file a request path names: `/api/docs/...` is `api-docs/...`, a
/// directory is its `index.html`. `None` for paths that never name a file.
fn asset_path(path: &str) -> Option<String> {
    let path = path.trim_start_matches('/');
    let path = match path.strip_prefix("api/docs/") {
        Some(rest) => format!("api-docs/{rest}"),
        None => path.to_owned(),
    };
    if path.split('/').any(|part| part == "..") {
        return None;
    }
    if path.is_empty() || path.ends_with('/') {
        Some(format!("{path}index.html"))
    } else {
        Some(path)
    }
}

async fn embedded_file(uri: Uri) -> Response {
    let Some(path) = asset_path(uri.path()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Some(file) = Assets::get(&path) {
        return file_response(&path, file);
    }
    // Unknown app paths are the app's own routes; a missing docs file is missing.
    match Assets::get("index.html") {
        Some(index) if !path.starts_with("api-docs/") => file_response("index.html", index),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn file_response(path: &str, file: rust_embed::EmbeddedFile) -> Response {
    let mime = file.metadata.mimetype().to_owned();
    // Vite's hashed assets never change; everything else is checked on each load.
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut response = file.data.into_owned().into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&mime) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

#[cfg(test)]
mod tests {
    use super::asset_path;

    #[test]
    fn request_paths_name_embedded_files() {
        assert_eq!(asset_path("/").as_deref(), Some("index.html"));
        assert_eq!(
            asset_path("/assets/index-abc.js").as_deref(),
            Some("assets/index-abc.js")
        );
        assert_eq!(
            asset_path("/api/docs/").as_deref(),
            Some("api-docs/index.html")
        );
        assert_eq!(
            asset_path("/api/docs/swagger-ui.css").as_deref(),
            Some("api-docs/swagger-ui.css")
        );
        assert_eq!(asset_path("/jobs/abc").as_deref(), Some("jobs/abc"));
        assert_eq!(asset_path("/../secret"), None);
    }
}
