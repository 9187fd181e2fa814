//! Getting a model's input image: fetched from an http(s) URL or read from a `data:` URI,
//! within size limits, and decoded with its EXIF orientation applied. Problems are fal's
//! model errors on `image_url`.

use std::io::Cursor;

use base64::{
    Engine as _, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use futures::StreamExt as _;
use image::{DynamicImage, ImageDecoder as _, ImageReader, Limits};
use serde_json::{Value, json};

use crate::error::FieldError;

/// The largest input file accepted.
pub(crate) const MAX_INPUT_BYTES: usize = 50 * 1024 * 1024;
/// The most pixels an input image may have.
pub(crate) const MAX_INPUT_PIXELS: u64 = 100_000_000;
/// The most memory a decoder may take.
const MAX_DECODE_ALLOC: u64 = 1024 * 1024 * 1024;

const FIELD: &str = "image_url";

/// Base64 as `data:` URIs come: padded or not, either alphabet.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

fn download_error(url: &str, why: impl std::fmt::Display) -> FieldError {
    tracing::info!(url = %shorten(url), error = %why, "input download failed");
    FieldError::field(
        FIELD,
        "file_download_error",
        "Failed to download the file. Please check if the URL is accessible.",
    )
    .with_input(&Value::String(shorten(url)))
}

fn too_large(url: &str) -> FieldError {
    FieldError::field(
        FIELD,
        "file_too_large",
        format!(
            "File size exceeds the maximum allowed size of {} MB.",
            MAX_INPUT_BYTES / (1024 * 1024)
        ),
    )
    .with_ctx(json!({ "max_size": MAX_INPUT_BYTES }))
    .with_input(&Value::String(shorten(url)))
}

pub(crate) fn load_error() -> FieldError {
    FieldError::field(
        FIELD,
        "image_load_error",
        "Failed to load the image. Please ensure the image file is not corrupted and is in a supported format.",
    )
}

/// The URL as errors and logs show it: `data:` URIs cut short.
fn shorten(url: &str) -> String {
    if url.len() > 120 {
        let mut end = 120;
        while !url.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &url[..end])
    } else {
        url.to_owned()
    }
}

/// Fetches the bytes `url` points at: an http(s) URL or a `data:` URI.
pub(crate) async fn fetch(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, FieldError> {
    if let Some(rest) = url.strip_prefix("data:") {
        return read_data_uri(url, rest);
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(download_error(url, "not an http(s) or data: URL"));
    }
    let response = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| download_error(url, e))?;
    if response
        .content_length()
        .is_some_and(|n| n > MAX_INPUT_BYTES as u64)
    {
        return Err(too_large(url));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| download_error(url, e))?;
        if body.len() + chunk.len() > MAX_INPUT_BYTES {
            return Err(too_large(url));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads `data:[<type>][;base64],<data>` (`rest` is what follows `data:`).
fn read_data_uri(url: &str, rest: &str) -> Result<Vec<u8>, FieldError> {
    let Some((meta, data)) = rest.split_once(',') else {
        return Err(download_error(url, "a data: URI without a comma"));
    };
    if meta.ends_with(";base64") {
        let data: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        if data.len() / 4 * 3 > MAX_INPUT_BYTES + 3 {
            return Err(too_large(url));
        }
        let engine = if data.contains(['-', '_']) {
            &URL_SAFE
        } else {
            &STANDARD
        };
        let bytes = engine.decode(&data).map_err(|e| download_error(url, e))?;
        if bytes.len() > MAX_INPUT_BYTES {
            return Err(too_large(url));
        }
        Ok(bytes)
    } else {
        let bytes =
            percent_decode(data).ok_or_else(|| download_error(url, "bad percent-encoding"))?;
        if bytes.len() > MAX_INPUT_BYTES {
            return Err(too_large(url));
        }
        Ok(bytes)
    }
}

fn percent_decode(data: &str) -> Option<Vec<u8>> {
    let bytes = data.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = data.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Decodes an image within the pixel limit, turned upright as its EXIF says.
pub(crate) fn decode(bytes: &[u8]) -> Result<DynamicImage, FieldError> {
    let reader = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|_| load_error())
    };
    let first = reader()?;
    if first.format().is_none() {
        return Err(load_error());
    }
    let (width, height) = first.into_dimensions().map_err(|_| load_error())?;
    if u64::from(width) * u64::from(height) > MAX_INPUT_PIXELS {
        return Err(FieldError::field(
            FIELD,
            "image_too_large",
            format!(
                "Image dimensions {width}x{height} exceed the maximum of {} megapixels.",
                MAX_INPUT_PIXELS / 1_000_000
            ),
        )
        .with_ctx(json!({ "max_pixels": MAX_INPUT_PIXELS })));
    }
    let mut reader = reader()?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|_| load_error())?;
    let orientation = decoder.orientation().map_err(|_| load_error())?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(|_| load_error())?;
    image.apply_orientation(orientation);
    Ok(crate::imaging::normalise(image))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = DynamicImage::ImageRgb8(image::RgbImage::new(width, height));
        crate::imaging::encode(&image, crate::imaging::Format::Png).expect("encoding")
    }

    #[tokio::test]
    async fn data_uris_are_read() {
        let bytes = png(3, 2);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let client = reqwest::Client::new();
        let got = fetch(&client, &format!("data:image/png;base64,{b64}"))
            .await
            .expect("reading the data URI");
        assert_eq!(got, bytes);
        let image = decode(&got).expect("decoding");
        assert_eq!((image.width(), image.height()), (3, 2));
        assert_eq!(
            fetch(&client, "data:text/plain,a%20b")
                .await
                .expect("plain"),
            b"a b"
        );
    }

    #[tokio::test]
    async fn bad_inputs_are_model_errors() {
        let client = reqwest::Client::new();
        let err = fetch(&client, "ftp://example.invalid/a.png")
            .await
            .expect_err("not http");
        assert_eq!(err.kind, "file_download_error");
        let err = fetch(&client, "data:image/png;base64,@@@@")
            .await
            .expect_err("bad base64");
        assert_eq!(err.kind, "file_download_error");
        assert_eq!(
            decode(b"not an image").expect_err("garbage").kind,
            "image_load_error"
        );
    }
}
