//! Result files, served from `/files/{name}` as fal's CDN serves results. Small files
//! are kept in memory (up to a budget), larger ones in a temp directory of the
//! simulator's own (removed when it stops): a simulated run then costs the machine
//! what fal's side would not, no more.

use std::{
    collections::HashMap,
    io,
    path::Path,
    sync::{Mutex, PoisonError},
};

use bytes::Bytes;
use tempfile::TempDir;

use crate::imaging::Format;

/// Files up to this size are kept in memory.
const IN_MEMORY_FILE_MAX: usize = 1 << 20;
/// At most this many bytes of files are kept in memory; later ones go to disk.
const IN_MEMORY_BUDGET: usize = 128 << 20;

/// The simulator's result files.
#[derive(Debug)]
pub(crate) struct Files {
    dir: TempDir,
    memory: Mutex<InMemory>,
    /// Bytes appended to every file stored from now on (see
    /// [`SimHandle::set_result_trailer`](crate::SimHandle::set_result_trailer)).
    trailer: Mutex<Option<Bytes>>,
}

#[derive(Debug, Default)]
struct InMemory {
    files: HashMap<String, Bytes>,
    held: usize,
}

/// A stored file's contents: whole when it is small, else a file to stream.
pub(crate) enum Contents {
    Memory(Bytes),
    Disk(tokio::fs::File),
}

/// A stored file opened for serving.
pub(crate) struct Opened {
    pub contents: Contents,
    pub size: u64,
    pub content_type: &'static str,
}

impl Files {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            dir: tempfile::Builder::new()
                .prefix("atelier-fal-sim-")
                .tempdir()?,
            memory: Mutex::default(),
            trailer: Mutex::default(),
        })
    }

    /// Appends `trailer` to every file stored from now on; `None` stops.
    pub(crate) fn set_trailer(&self, trailer: Option<Bytes>) {
        *self.trailer.lock().unwrap_or_else(PoisonError::into_inner) = trailer;
    }

    /// Stores `bytes` as a new file and returns its name.
    pub(crate) async fn store(&self, bytes: &[u8], format: Format) -> io::Result<String> {
        let trailer = self
            .trailer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let with_trailer;
        let bytes = match trailer {
            Some(trailer) => {
                with_trailer = [bytes, &trailer].concat();
                with_trailer.as_slice()
            }
            None => bytes,
        };
        let name = format!("{}.{}", uuid::Uuid::new_v4().simple(), format.extension());
        if bytes.len() <= IN_MEMORY_FILE_MAX {
            let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
            if memory.held + bytes.len() <= IN_MEMORY_BUDGET {
                memory.held += bytes.len();
                memory
                    .files
                    .insert(name.clone(), Bytes::copy_from_slice(bytes));
                return Ok(name);
            }
        }
        tokio::fs::write(self.dir.path().join(&name), bytes).await?;
        Ok(name)
    }

    /// The file called `name`, its size and its content type, when there is one.
    /// A file on disk is served as a stream: a large result is never held whole.
    pub(crate) async fn open(&self, name: &str) -> io::Result<Option<Opened>> {
        if !is_valid_name(name) {
            return Ok(None);
        }
        let path = self.dir.path().join(name);
        let content_type = content_type_of(&path);
        let kept = self
            .memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .files
            .get(name)
            .cloned();
        if let Some(bytes) = kept {
            return Ok(Some(Opened {
                size: bytes.len() as u64,
                contents: Contents::Memory(bytes),
                content_type,
            }));
        }
        match tokio::fs::File::open(&path).await {
            Ok(file) => Ok(Some(Opened {
                size: file.metadata().await?.len(),
                contents: Contents::Disk(file),
                content_type,
            })),
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

    async fn read(files: &Files, name: &str) -> (Vec<u8>, u64, &'static str, bool) {
        let opened = files.open(name).await.expect("reading").expect("found");
        let (bytes, on_disk) = match opened.contents {
            Contents::Memory(bytes) => (bytes.to_vec(), false),
            Contents::Disk(mut file) => {
                let mut bytes = Vec::new();
                tokio::io::AsyncReadExt::read_to_end(&mut file, &mut bytes)
                    .await
                    .expect("reading");
                (bytes, true)
            }
        };
        (bytes, opened.size, opened.content_type, on_disk)
    }

    #[tokio::test]
    async fn files_round_trip_and_paths_are_refused() {
        let files = Files::new().expect("a temp dir");
        let small = files
            .store(b"png bytes", Format::Png)
            .await
            .expect("storing");
        assert_eq!(
            read(&files, &small).await,
            (b"png bytes".to_vec(), 9, "image/png", false)
        );
        let large_bytes = vec![7u8; IN_MEMORY_FILE_MAX + 1];
        let large = files
            .store(&large_bytes, Format::Jpeg)
            .await
            .expect("storing");
        assert_eq!(
            read(&files, &large).await,
            (
                large_bytes,
                IN_MEMORY_FILE_MAX as u64 + 1,
                "image/jpeg",
                true
            )
        );
        for name in ["../etc/passwd", ".hidden", "missing.png"] {
            assert!(files.open(name).await.expect("reading").is_none(), "{name}");
        }
    }
}
