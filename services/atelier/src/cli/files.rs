//! Where results are written: next to their input (`photo.jpg` →
//! `photo.<workflow>.png`) or into `--out`, never over an existing file (`photo.<workflow>-1.png`,
//! `-2`, ...). A name is claimed by creating the file exclusively, so two downloads at
//! once (or two inputs with the same stem) never write to the same file.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::error::{CliError, Exit, Result};

/// How many numbered names are tried before giving up.
const MAX_SUFFIX: u32 = 10_000;

/// A name safe to use as one path component: separators, control characters and
/// leading dots go; an empty result becomes `fallback`.
pub fn safe_component(name: &str, fallback: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() || c == ':' {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').to_owned();
    if cleaned.is_empty() {
        fallback.to_owned()
    } else {
        cleaned
    }
}

/// The extension for a result of `mime_type` (else `filename`'s, else `bin`).
pub fn extension(mime_type: &str, filename: &str) -> String {
    match mime_type {
        "image/png" => "png".into(),
        "image/jpeg" => "jpg".into(),
        "image/webp" => "webp".into(),
        "image/gif" => "gif".into(),
        "image/tiff" => "tiff".into(),
        _ => Path::new(filename)
            .extension()
            .and_then(|ext| ext.to_str())
            .map(|ext| safe_component(ext, "bin"))
            .unwrap_or_else(|| "bin".into()),
    }
}

/// The wished-for path of a result of `input`: `<dir>/<stem>.<workflow><role>.<ext>`,
/// where `dir` is `out` or the input's directory and `role` tells a job's outputs
/// apart (`.mask`, `.2`, ...; nothing for the first image).
pub fn result_path(
    input: &Path,
    out: Option<&Path>,
    workflow: &str,
    role: Option<&str>,
    index: usize,
    extension: &str,
) -> PathBuf {
    let dir = match out {
        Some(out) => out.to_owned(),
        None => input
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let stem = input
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = safe_component(&stem, "result");
    let workflow = safe_component(workflow, "result");
    let role = match role {
        Some("mask") => ".mask".to_owned(),
        _ if index == 0 => String::new(),
        _ => format!(".{}", index + 1),
    };
    dir.join(format!("{stem}.{workflow}{role}.{extension}"))
}

/// `wanted`, or with `-1`, `-2`, ... before its extension: the `n`th candidate.
pub fn candidate(wanted: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return wanted.to_owned();
    }
    let stem = wanted
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match wanted.extension() {
        Some(ext) => format!("{stem}-{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{n}"),
    };
    wanted.with_file_name(name)
}

/// Creates the first free candidate of `wanted` exclusively; its path and handle.
pub async fn create_unique(wanted: &Path) -> Result<(PathBuf, tokio::fs::File)> {
    for n in 0..MAX_SUFFIX {
        let path = candidate(wanted, n);
        match tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
        {
            Ok(file) => return Ok((path, file)),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(err) => {
                return Err(CliError::unexpected(format!(
                    "cannot create {}: {err}",
                    path.display()
                )));
            }
        }
    }
    Err(CliError::unexpected(format!(
        "no free name left for {}",
        wanted.display()
    )))
}

/// Streams the answer to a new file at `wanted` (or a free name beside it); the path
/// written. A failed download leaves no file behind.
pub async fn download_to(response: reqwest::Response, wanted: &Path) -> Result<PathBuf> {
    let (path, mut file) = create_unique(wanted).await?;
    let written = async {
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|err| {
                CliError::new(Exit::Unreachable, format!("the download broke off: {err}"))
            })?;
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        file.sync_all().await?;
        Ok::<_, CliError>(())
    }
    .await;
    if let Err(err) = written {
        drop(file);
        let _ = tokio::fs::remove_file(&path).await;
        return Err(err.with_context(format!("writing {}", path.display())));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_named_after_their_input_and_workflow() {
        let name = |input: &str, out: Option<&str>, role: Option<&str>, index: usize| {
            result_path(
                Path::new(input),
                out.map(Path::new),
                "esrgan-upscale",
                role,
                index,
                "png",
            )
        };
        assert_eq!(
            name("photo.jpg", None, Some("image"), 0),
            Path::new("./photo.esrgan-upscale.png")
        );
        assert_eq!(
            name("shots/photo.jpg", None, Some("image"), 0),
            Path::new("shots/photo.esrgan-upscale.png")
        );
        assert_eq!(
            name("shots/photo.jpg", Some("out"), Some("image"), 0),
            Path::new("out/photo.esrgan-upscale.png")
        );
        assert_eq!(
            name("photo.jpg", None, Some("mask"), 1),
            Path::new("./photo.esrgan-upscale.mask.png")
        );
        assert_eq!(
            name("photo.jpg", None, Some("image"), 2),
            Path::new("./photo.esrgan-upscale.3.png")
        );
        assert_eq!(
            name("archive.tar.gz", None, None, 0),
            Path::new("./archive.tar.esrgan-upscale.png")
        );
    }

    #[test]
    fn server_names_cannot_escape_the_directory() {
        assert_eq!(safe_component("../../etc/passwd", "x"), "_.._etc_passwd");
        assert_eq!(safe_component("..", "x"), "x");
        assert_eq!(safe_component(".hidden", "x"), "hidden");
        assert_eq!(safe_component("a\nb", "x"), "a_b");
        assert_eq!(safe_component("photo_esrgan.png", "x"), "photo_esrgan.png");
        assert_eq!(extension("image/png", "x.jpg"), "png");
        assert_eq!(extension("application/x-unknown", "x.exr"), "exr");
        assert_eq!(extension("", "noext"), "bin");
    }

    #[test]
    fn candidates_number_before_the_extension() {
        let wanted = Path::new("dir/photo.esrgan.png");
        assert_eq!(candidate(wanted, 0), wanted);
        assert_eq!(candidate(wanted, 1), Path::new("dir/photo.esrgan-1.png"));
        assert_eq!(candidate(wanted, 12), Path::new("dir/photo.esrgan-12.png"));
        assert_eq!(candidate(Path::new("bare"), 2), Path::new("bare-2"));
    }

    #[tokio::test]
    async fn an_existing_file_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wanted = dir.path().join("photo.esrgan.png");
        std::fs::write(&wanted, b"mine").expect("write");
        let (first, _file) = create_unique(&wanted).await.expect("first");
        let (second, _file) = create_unique(&wanted).await.expect("second");
        assert_eq!(first, dir.path().join("photo.esrgan-1.png"));
        assert_eq!(second, dir.path().join("photo.esrgan-2.png"));
        assert_eq!(std::fs::read(&wanted).expect("read"), b"mine");
    }
}
