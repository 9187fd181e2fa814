//! Result files: written to a temp directory of the simulator's own (removed when it
//! stops) and served from `/files/{name}`, as fal's CDN serves results.

use std::{io, path::Path};

use tempfile::TempDir;

use crate::imaging::Format;

/// The simulator's result files.
#[derive(Debug)]
pub(crate) struct Files {
    dir: TempDir,
}

impl Files {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            dir: tempfile::Builder::new()
                .prefix("atelier-fal-sim-")
                .tempdir()?,
        })
    }

    /// Stores `bytes` as a new file and returns its name.
    pub(crate) async fn store(&self, bytes: &[u8], format: Format) -> io::Result<String> {
        let name = format!("{}.{}", uuid::Uuid::new_v4().simple(), format.extension());
        tokio::fs::write(self.dir.path().join(&name), bytes).await?;
        Ok(name)
    }

    /// The file called `name` and its content type, when there is one.
    pub(crate) async fn read(&self, name: &str) -> io::Result<Option<(Vec<u8>, &'static str)>> {
        if !is_valid_name(name) {
            return Ok(None);
        }
        let path = self.dir.path().join(name);
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some((bytes, content_type_of(&path)))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Names are ours (`<uuid>.<ext>`): anything else, a path in particular, is not a file.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

fn content_type_of(path: &Path) -> &'static str {
    let format = path
        .extension()
        .and_then(|e| e.to_str())
        .and_then(Format::from_name);
    format.map_or("application/octet-stream", Format::content_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_round_trip_and_paths_are_refused() {
        let files = Files::new().expect("a temp dir");
        let name = files
            .store(b"png bytes", Format::Png)
            .await
            .expect("storing");
        let (bytes, content_type) = files.read(&name).await.expect("reading").expect("found");
        assert_eq!(
            (bytes.as_slice(), content_type),
            (&b"png bytes"[..], "image/png")
        );
        assert!(
            files
                .read("../etc/passwd")
                .await
                .expect("reading")
                .is_none()
        );
        assert!(files.read(".hidden").await.expect("reading").is_none());
        assert!(files.read("missing.png").await.expect("reading").is_none());
    }
}
