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

    /// The file called `name` opened for reading, its size and its content type,
    /// when there is one. Served as a stream: a large result is never held whole.
    pub(crate) async fn open(
        &self,
        name: &str,
    ) -> io::Result<Option<(tokio::fs::File, u64, &'static str)>> {
        if !is_valid_name(name) {
            return Ok(None);
        }
        let path = self.dir.path().join(name);
        match tokio::fs::File::open(&path).await {
            Ok(file) => {
                let size = file.metadata().await?.len();
                Ok(Some((file, size, content_type_of(&path))))
            }
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
        let (mut file, size, content_type) =
            files.open(&name).await.expect("reading").expect("found");
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut file, &mut bytes)
            .await
            .expect("reading");
        assert_eq!(
            (bytes.as_slice(), size, content_type),
            (&b"png bytes"[..], 9, "image/png")
        );
        for name in ["../etc/passwd", ".hidden", "missing.png"] {
            assert!(files.open(name).await.expect("reading").is_none(), "{name}");
        }
    }
}
