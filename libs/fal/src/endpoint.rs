//! fal endpoint ids and the queue URLs built from them.

use std::{fmt, str::FromStr};

use reqwest::Url;

/// The namespaces that may prefix an endpoint id (`workflows/owner/alias`).
const NAMESPACES: [&str; 2] = ["workflows", "comfy"];

/// A fal endpoint id: `owner/alias[/subpath...]`, or `workflows/owner/alias[/...]` and
/// `comfy/owner/alias[/...]` where the first segment is a namespace.
///
/// Submitting uses the whole id; status, result and cancel use the [app
/// id](EndpointId::app_id), which drops the subpath.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointId {
    id: String,
    /// Length of the app id prefix of `id`.
    app_len: usize,
}

/// Why a string is not an endpoint id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointIdError {
    /// Fewer than `owner/alias` (after a namespace, if any).
    #[error("endpoint id {0:?} needs at least owner/alias")]
    TooShort(String),
    /// A segment is empty, `.` or `..`, or holds a character other than
    /// `[A-Za-z0-9._~-]`.
    #[error("endpoint id {0:?} has an invalid segment")]
    InvalidSegment(String),
}

impl EndpointId {
    /// Parses `owner/alias[/subpath...]` (optionally with a `workflows/` or `comfy/`
    /// namespace in front).
    pub fn parse(id: &str) -> Result<Self, EndpointIdError> {
        let segments: Vec<&str> = id.split('/').collect();
        if !segments.iter().all(|s| valid_segment(s)) {
            return Err(EndpointIdError::InvalidSegment(id.to_owned()));
        }
        let app_segments = if NAMESPACES.contains(&segments[0]) {
            3
        } else {
            2
        };
        if segments.len() < app_segments {
            return Err(EndpointIdError::TooShort(id.to_owned()));
        }
        let app_len = segments[..app_segments]
            .iter()
            .map(|s| s.len())
            .sum::<usize>()
            + (app_segments - 1);
        Ok(Self {
            id: id.to_owned(),
            app_len,
        })
    }

    /// The whole id, subpath included (`fal-ai/flux/dev`).
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The app id: the id without its subpath (`fal-ai/flux`, `workflows/u/n`).
    pub fn app_id(&self) -> &str {
        &self.id[..self.app_len]
    }

    /// The subpath after the app id, if any (`dev` for `fal-ai/flux/dev`).
    pub fn subpath(&self) -> Option<&str> {
        self.id.get(self.app_len + 1..).filter(|s| !s.is_empty())
    }

    /// The namespace (`workflows`, `comfy`), if the id has one.
    pub fn namespace(&self) -> Option<&str> {
        let first = self.id.split('/').next()?;
        NAMESPACES.contains(&first).then_some(first)
    }

    /// `{base}/{id}`: where a request is submitted.
    pub fn submit_url(&self, base: &Url) -> Url {
        join(base, self.id.split('/'))
    }

    /// `{base}/{app_id}/requests/{request_id}`: the request, whose `GET` is its result.
    pub fn request_url(&self, base: &Url, request_id: &str) -> Url {
        join(
            base,
            self.app_id().split('/').chain(["requests", request_id]),
        )
    }

    /// `{base}/{app_id}/requests/{request_id}/status`.
    pub fn status_url(&self, base: &Url, request_id: &str) -> Url {
        join(
            base,
            self.app_id()
                .split('/')
                .chain(["requests", request_id, "status"]),
        )
    }

    /// `{base}/{app_id}/requests/{request_id}/cancel`.
    pub fn cancel_url(&self, base: &Url, request_id: &str) -> Url {
        join(
            base,
            self.app_id()
                .split('/')
                .chain(["requests", request_id, "cancel"]),
        )
    }
}

/// Appends `segments` to `base`'s path, percent-encoding each one (so a request id
/// can never add a path segment of its own).
pub(crate) fn join<'a>(base: &Url, segments: impl IntoIterator<Item = &'a str>) -> Url {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

fn valid_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

impl FromStr for EndpointId {
    type Err = EndpointIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://queue.fal.run").expect("base url")
    }

    #[test]
    fn plain_id_without_subpath() {
        let id = EndpointId::parse("fal-ai/esrgan").expect("valid");
        assert_eq!(id.as_str(), "fal-ai/esrgan");
        assert_eq!(id.app_id(), "fal-ai/esrgan");
        assert_eq!(id.subpath(), None);
        assert_eq!(id.namespace(), None);
    }

    #[test]
    fn subpath_is_dropped_from_the_app_id() {
        let id = EndpointId::parse("fal-ai/flux/dev/image-to-image").expect("valid");
        assert_eq!(id.app_id(), "fal-ai/flux");
        assert_eq!(id.subpath(), Some("dev/image-to-image"));
        assert_eq!(
            id.submit_url(&base()).as_str(),
            "https://queue.fal.run/fal-ai/flux/dev/image-to-image"
        );
        assert_eq!(
            id.status_url(&base(), "abc").as_str(),
            "https://queue.fal.run/fal-ai/flux/requests/abc/status"
        );
        assert_eq!(
            id.request_url(&base(), "abc").as_str(),
            "https://queue.fal.run/fal-ai/flux/requests/abc"
        );
        assert_eq!(
            id.cancel_url(&base(), "abc").as_str(),
            "https://queue.fal.run/fal-ai/flux/requests/abc/cancel"
        );
    }

    #[test]
    fn namespaced_ids_keep_three_segments() {
        let id = EndpointId::parse("workflows/someone/upscale-then-crop").expect("valid");
        assert_eq!(id.namespace(), Some("workflows"));
        assert_eq!(id.app_id(), "workflows/someone/upscale-then-crop");
        assert_eq!(
            id.status_url(&base(), "r1").as_str(),
            "https://queue.fal.run/workflows/someone/upscale-then-crop/requests/r1/status"
        );

        let id = EndpointId::parse("comfy/owner/graph/v2").expect("valid");
        assert_eq!(id.app_id(), "comfy/owner/graph");
        assert_eq!(id.subpath(), Some("v2"));
        assert_eq!(
            id.submit_url(&base()).as_str(),
            "https://queue.fal.run/comfy/owner/graph/v2"
        );
        assert_eq!(
            id.request_url(&base(), "r1").as_str(),
            "https://queue.fal.run/comfy/owner/graph/requests/r1"
        );
    }

    #[test]
    fn too_short_or_bad_ids_are_refused() {
        for bad in ["fal-ai", "workflows/owner", "comfy/x", ""] {
            assert!(EndpointId::parse(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "fal-ai//flux",
            "fal-ai/flux/",
            "/fal-ai/flux",
            "fal-ai/../admin",
            "fal-ai/flux?x=1",
            "fal-ai/fl ux",
            "fal-ai/flux#x",
        ] {
            assert!(
                matches!(
                    EndpointId::parse(bad),
                    Err(EndpointIdError::InvalidSegment(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn base_path_is_kept_and_request_ids_are_encoded() {
        let base = Url::parse("http://127.0.0.1:4010/fal/").expect("base url");
        let id = EndpointId::parse("fal-ai/flux/dev").expect("valid");
        assert_eq!(
            id.submit_url(&base).as_str(),
            "http://127.0.0.1:4010/fal/fal-ai/flux/dev"
        );
        assert_eq!(
            id.status_url(&base, "../x?y").as_str(),
            "http://127.0.0.1:4010/fal/fal-ai/flux/requests/..%2Fx%3Fy/status"
        );
    }
}
