//! What an uploaded file really is: its type by magic bytes (never the declared
//! type), its dimensions from the header before any decoding (against
//! decompression bombs), a full decode that proves it is whole, its EXIF
//! orientation and location, and a 512 px thumbnail. Every decoder, header reads
//! included, runs within [`DecodeLimits`]. Blocking: run it on the blocking pool
//! (through the service's decode gate, which bounds the decodes at once).

use std::{
    fs::File,
    io::{BufRead, BufReader, Cursor, Read, Seek},
    path::Path,
};

use fast_image_resize::{self as fr, ResizeOptions, Resizer};
use image::{
    DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits,
    codecs::{jpeg::JpegEncoder, webp::WebPEncoder},
    metadata::Orientation,
};

/// The longest side of a thumbnail.
pub const THUMBNAIL_SIZE: u32 = 512;
const THUMBNAIL_JPEG_QUALITY: u8 = 82;
const STRIPPED_JPEG_QUALITY: u8 = 92;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    #[error("the file is empty")]
    Empty,
    #[error("the file is not an image of a supported type (JPEG, PNG, WebP, GIF, TIFF)")]
    NotAnImage,
    #[error("{0} images are not supported: no decoder is available")]
    Unsupported(&'static str),
    #[error("the image is {width}x{height} pixels, over the limit of {limit} pixels")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("the image's dimensions are over the limit of {limit} pixels")]
    DimensionsOverLimit { limit: u64 },
    #[error("decoding the image would take more than the limit of {limit_mb} MB of memory")]
    TooLargeToDecode { limit_mb: u64 },
    #[error("the image is corrupt or truncated: {0}")]
    Corrupt(String),
}

/// The accepted types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Jpeg,
    Png,
    WebP,
    Gif,
    Tiff,
}

impl Kind {
    pub fn mime(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::WebP => "image/webp",
            Self::Gif => "image/gif",
            Self::Tiff => "image/tiff",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Jpeg => "jpg",
            Self::Png => "png",
            Self::WebP => "webp",
            Self::Gif => "gif",
            Self::Tiff => "tiff",
        }
    }

    fn format(self) -> ImageFormat {
        match self {
            Self::Jpeg => ImageFormat::Jpeg,
            Self::Png => ImageFormat::Png,
            Self::WebP => ImageFormat::WebP,
            Self::Gif => ImageFormat::Gif,
            Self::Tiff => ImageFormat::Tiff,
        }
    }
}

/// The type of a file from its first bytes (at least 16 are needed to be sure).
pub fn sniff(head: &[u8]) -> Result<Kind, Rejection> {
    if head.is_empty() {
        return Err(Rejection::Empty);
    }
    // ISO-BMFF images: HEIC/HEIF and AVIF share the `ftyp` box.
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        return Err(match &head[8..12] {
            b"avif" | b"avis" => Rejection::Unsupported("AVIF"),
            b"heic" | b"heix" | b"hevc" | b"heim" | b"heis" | b"mif1" | b"msf1" => {
                Rejection::Unsupported("HEIC")
            }
            _ => Rejection::NotAnImage,
        });
    }
    match image::guess_format(head) {
        Ok(ImageFormat::Jpeg) => Ok(Kind::Jpeg),
        Ok(ImageFormat::Png) => Ok(Kind::Png),
        Ok(ImageFormat::WebP) => Ok(Kind::WebP),
        Ok(ImageFormat::Gif) => Ok(Kind::Gif),
        Ok(ImageFormat::Tiff) => Ok(Kind::Tiff),
        _ => Err(Rejection::NotAnImage),
    }
}

/// What one decode may cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// The largest width × height accepted (`MAX_IMAGE_PIXELS`).
    pub max_pixels: u64,
    /// The most memory one decoder may allocate, in bytes (`MAX_DECODE_BYTES`).
    pub max_alloc: u64,
}

impl DecodeLimits {
    /// The `image` crate's limits: no side longer than the pixel limit allows, no
    /// allocation over `max_alloc` (header reads included).
    fn image(self) -> Limits {
        let side = u32::try_from(self.max_pixels).unwrap_or(u32::MAX);
        let mut limits = Limits::default();
        limits.max_image_width = Some(side);
        limits.max_image_height = Some(side);
        limits.max_alloc = Some(self.max_alloc);
        limits
    }

    fn png(self) -> png::Limits {
        png::Limits {
            bytes: usize::try_from(self.max_alloc).unwrap_or(usize::MAX),
        }
    }

    /// Refuses an image of `width`x`height` over the pixel limit, or whose
    /// decoded pixels (`bytes_per_pixel` each) would not fit `max_alloc`.
    fn check(self, width: u32, height: u32, bytes_per_pixel: u64) -> Result<(), Rejection> {
        let pixels = u64::from(width) * u64::from(height);
        if pixels > self.max_pixels || width == 0 || height == 0 {
            return Err(Rejection::TooManyPixels {
                width,
                height,
                limit: self.max_pixels,
            });
        }
        if pixels.saturating_mul(bytes_per_pixel) > self.max_alloc {
            return Err(self.over_memory());
        }
        Ok(())
    }

    fn over_memory(self) -> Rejection {
        Rejection::TooLargeToDecode {
            limit_mb: self.max_alloc / (1024 * 1024),
        }
    }

    /// A decoder's error, as a rejection: its limits named as such.
    fn rejection(self, err: &image::ImageError) -> Rejection {
        match err {
            image::ImageError::Limits(limit) => match limit.kind() {
                image::error::LimitErrorKind::DimensionError => Rejection::DimensionsOverLimit {
                    limit: self.max_pixels,
                },
                _ => self.over_memory(),
            },
            other => Rejection::Corrupt(other.to_string()),
        }
    }
}

/// What inspection found out.
pub struct Inspected {
    pub kind: Kind,
    /// As displayed, after EXIF orientation.
    pub width: u32,
    pub height: u32,
    pub orientation: u8,
    pub had_location: bool,
    pub thumbnail: Vec<u8>,
    pub thumbnail_mime: &'static str,
    /// The image re-encoded without metadata, when location data had to go.
    pub stripped: Option<Vec<u8>>,
}

/// Inspects the file at `path` within `limits`; see the module docs.
pub fn inspect(
    path: &Path,
    limits: DecodeLimits,
    strip_location: bool,
) -> Result<Inspected, Rejection> {
    let corrupt = |err: &dyn std::fmt::Display| Rejection::Corrupt(err.to_string());
    let mut file = File::open(path).map_err(|err| corrupt(&err))?;
    let mut head = [0u8; 32];
    let read = file.read(&mut head).map_err(|err| corrupt(&err))?;
    let kind = sniff(&head[..read])?;

    let open = || -> Result<BufReader<File>, Rejection> {
        Ok(BufReader::new(
            File::open(path).map_err(|err| corrupt(&err))?,
        ))
    };
    match kind {
        Kind::Jpeg => {
            // At hand, every JPEG is inspected.
            return inspect_jpeg(open()?, limits, strip_location, Whole::AtHand)?
                .ok_or_else(|| corrupt(&"the JPEG could not be inspected"));
        }
        Kind::Png => {
            if let Some(inspected) = inspect_png(open()?, limits, strip_location)? {
                return Ok(inspected);
            }
        }
        _ => {}
    }
    let reader = || -> Result<ImageReader<BufReader<File>>, Rejection> {
        let file = File::open(path).map_err(|err| corrupt(&err))?;
        let mut reader = ImageReader::with_format(BufReader::new(file), kind.format());
        reader.limits(limits.image());
        Ok(reader)
    };
    // The header alone, within the limits: nothing is decoded before the pixel
    // count, and the memory the pixels need, are known to fit.
    let (width, height) = reader()?
        .into_dimensions()
        .map_err(|err| limits.rejection(&err))?;
    limits.check(width, height, 1)?;
    let mut decoder = reader()?
        .into_decoder()
        .map_err(|err| limits.rejection(&err))?;
    let exif = decoder.exif_metadata().ok().flatten();
    let (orientation, had_location) = exif.as_deref().map_or((1, false), read_exif);
    let image = DynamicImage::from_decoder(decoder).map_err(|err| limits.rejection(&err))?;
    finish(
        kind,
        image,
        width,
        height,
        orientation,
        had_location,
        strip_location,
    )
}

/// Inspects an upload as its bytes arrive, from `reader`: a PNG row by row, a JPEG
/// scaled down in the DCT, in one pass, keeping a few rows at most. `None` when
/// the image needs its whole file instead ([`inspect`] it then): other types,
/// images with a location to strip, interlaced PNGs and progressive JPEGs (their
/// pixels come in several passes over the whole image).
pub fn inspect_stream<R: BufRead + Seek>(
    kind: Kind,
    reader: R,
    limits: DecodeLimits,
    strip_location: bool,
) -> Result<Option<Inspected>, Rejection> {
    match kind {
        Kind::Jpeg => inspect_jpeg(reader, limits, strip_location, Whole::Streaming),
        Kind::Png => inspect_png(reader, limits, strip_location),
        _ => Ok(None),
    }
}

/// Whether a decoder may need the whole file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Whole {
    /// The file is at hand: any decode goes.
    AtHand,
    /// The bytes stream in: only decodes that keep little state.
    Streaming,
}

/// JPEG through `jpeg-decoder`, in one pass: the header and EXIF first, without the
/// scan data, then the pixels at 1/2 to 1/8 scale in the DCT (the thumbnail's
/// size), so a 50 MB photo never sits whole in memory just to make its thumbnail.
/// A location to strip needs the full image (it is re-encoded); `None` for that,
/// and for a progressive JPEG, while streaming.
fn inspect_jpeg<R: Read>(
    reader: R,
    limits: DecodeLimits,
    strip_location: bool,
    whole: Whole,
) -> Result<Option<Inspected>, Rejection> {
    let corrupt = |err: &dyn std::fmt::Display| Rejection::Corrupt(err.to_string());
    let mut decoder = jpeg_decoder::Decoder::new(reader);
    decoder.set_max_decoding_buffer_size(usize::try_from(limits.max_alloc).unwrap_or(usize::MAX));
    decoder.read_info().map_err(|err| corrupt(&err))?;
    let info = decoder.info().ok_or_else(|| corrupt(&"no header"))?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    let (orientation, had_location) = decoder.exif_data().map_or((1, false), read_exif);
    let needs_full = strip_location && had_location;
    // A full decode holds every pixel (up to 4 bytes each); a scaled one a
    // quarter of them at most.
    limits.check(width, height, if needs_full { 4 } else { 1 })?;
    if whole == Whole::Streaming
        && (needs_full || info.coding_process != jpeg_decoder::CodingProcess::DctSequential)
    {
        return Ok(None);
    }
    if !needs_full {
        let side = THUMBNAIL_SIZE as u16;
        decoder.scale(side, side).map_err(|err| corrupt(&err))?;
    }
    let image = decode_jpeg(decoder)?;
    finish(
        Kind::Jpeg,
        image,
        width,
        height,
        orientation,
        had_location,
        strip_location,
    )
    .map(Some)
}

/// PNG row by row: every row is decoded (proving the file whole) but only a box
/// average at most twice the thumbnail's size is kept, so a 100-megapixel result
/// costs a few megabytes, not 400. `None` when the image must be decoded whole
/// instead: it carries a location to strip, or it is interlaced (its rows come in
/// seven passes; fal and cameras do not write such files).
fn inspect_png<R: BufRead + Seek>(
    reader: R,
    limits: DecodeLimits,
    strip_location: bool,
) -> Result<Option<Inspected>, Rejection> {
    let corrupt = |err: &dyn std::fmt::Display| Rejection::Corrupt(err.to_string());
    let mut decoder = png::Decoder::new_with_limits(reader, limits.png());
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|err| match err {
        png::DecodingError::LimitsExceeded => limits.over_memory(),
        other => corrupt(&other),
    })?;
    let info = reader.info();
    let (width, height) = (info.width, info.height);
    limits.check(width, height, 1)?;
    let (orientation, had_location) = info.exif_metadata.as_deref().map_or((1, false), read_exif);
    if (strip_location && had_location) || info.interlaced {
        return Ok(None);
    }
    let channels = reader.output_color_type().0.samples();
    let preview = box_shrunk(&mut reader, width, height, channels)?;
    let image = match channels {
        1 => image::GrayImage::from_raw(preview.0, preview.1, preview.2).map(DynamicImage::from),
        2 => {
            image::GrayAlphaImage::from_raw(preview.0, preview.1, preview.2).map(DynamicImage::from)
        }
        3 => image::RgbImage::from_raw(preview.0, preview.1, preview.2).map(DynamicImage::from),
        _ => image::RgbaImage::from_raw(preview.0, preview.1, preview.2).map(DynamicImage::from),
    }
    .ok_or_else(|| corrupt(&"pixel data does not match the header"))?;
    finish(
        Kind::Png,
        image,
        width,
        height,
        orientation,
        had_location,
        false,
    )
    .map(Some)
}

/// A preview: width, height and its 8-bit samples.
type Preview = (u32, u32, Vec<u8>);

/// Averages `factor`×`factor` boxes of a non-interlaced PNG's rows, where
/// `factor` leaves at least twice the thumbnail's size on the longer side. Each
/// row is added to a row of sums (which vectorises), and a band of `factor` rows
/// is folded into boxes once complete.
fn box_shrunk<R: BufRead + Seek>(
    reader: &mut png::Reader<R>,
    width: u32,
    height: u32,
    channels: usize,
) -> Result<Preview, Rejection> {
    let corrupt = |err: &dyn std::fmt::Display| Rejection::Corrupt(err.to_string());
    let factor = (width.max(height) / (2 * THUMBNAIL_SIZE)).max(1) as usize;
    let (w, h) = (width as usize, height as usize);
    let (out_w, out_h) = (w.div_ceil(factor), h.div_ceil(factor));
    let mut out = Vec::with_capacity(out_w * out_h * channels);
    let mut sums = vec![0u32; w * channels];
    let mut rows_in_band = 0;
    for y in 0..h {
        let row = reader
            .next_row()
            .map_err(|err| corrupt(&err))?
            .ok_or_else(|| corrupt(&"fewer rows than the header says"))?;
        let data = row
            .data()
            .get(..w * channels)
            .ok_or_else(|| corrupt(&"a row is shorter than the header says"))?;
        for (sum, &sample) in sums.iter_mut().zip(data) {
            *sum += u32::from(sample);
        }
        rows_in_band += 1;
        if rows_in_band == factor || y + 1 == h {
            fold_band(&mut out, &mut sums, factor, rows_in_band, channels);
            rows_in_band = 0;
        }
    }
    // The rest of the file (chunks after the pixels) must be whole too.
    reader.finish().map_err(|err| corrupt(&err))?;
    Ok((out_w as u32, out_h as u32, out))
}

/// Appends the boxes of a band (`rows` rows summed into `sums`, `factor` pixels
/// wide) to `out`, and empties `sums` for the next band.
fn fold_band(out: &mut Vec<u8>, sums: &mut [u32], factor: usize, rows: usize, channels: usize) {
    for cell in sums.chunks(factor * channels) {
        let count = (cell.len() / channels * rows).max(1) as u64;
        for channel in 0..channels {
            let total: u64 = cell
                .iter()
                .skip(channel)
                .step_by(channels)
                .map(|&sum| u64::from(sum))
                .sum();
            out.push((total / count) as u8);
        }
    }
    sums.fill(0);
}

/// Orients the decoded image, strips it when it carries a location, and makes
/// its thumbnail.
fn finish(
    kind: Kind,
    image: DynamicImage,
    width: u32,
    height: u32,
    orientation: u8,
    had_location: bool,
    strip_location: bool,
) -> Result<Inspected, Rejection> {
    let mut image = image;
    image.apply_orientation(
        Orientation::from_exif(orientation).unwrap_or(Orientation::NoTransforms),
    );
    let (width, height) = if orientation >= 5 {
        (height, width)
    } else {
        (width, height)
    };

    let stripped = (strip_location && had_location)
        .then(|| encode_like(&image, kind))
        .transpose()?;
    let (thumbnail, thumbnail_mime) = thumbnail(&image)?;
    Ok(Inspected {
        kind,
        width,
        height,
        orientation,
        had_location,
        thumbnail,
        thumbnail_mime,
        stripped,
    })
}

/// The EXIF orientation (1-8) and whether any GPS field is present.
fn read_exif(raw: &[u8]) -> (u8, bool) {
    let Ok(exif) = exif::Reader::new().read_raw(raw.to_vec()) else {
        return (1, false);
    };
    let orientation = exif
        .get_field(exif::Tag::Orientation, exif::In::PRIMARY)
        .and_then(|field| field.value.get_uint(0))
        .and_then(|value| u8::try_from(value).ok())
        .filter(|value| (1..=8).contains(value))
        .unwrap_or(1);
    let location = exif
        .fields()
        .any(|field| field.tag.context() == exif::Context::Gps);
    (orientation, location)
}

fn decode_jpeg<R: Read>(mut decoder: jpeg_decoder::Decoder<R>) -> Result<DynamicImage, Rejection> {
    let corrupt = |err: &dyn std::fmt::Display| Rejection::Corrupt(err.to_string());
    let pixels = decoder.decode().map_err(|err| corrupt(&err))?;
    let info = decoder.info().ok_or_else(|| corrupt(&"no header"))?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    let image = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => {
            image::GrayImage::from_raw(w, h, pixels).map(DynamicImage::from)
        }
        jpeg_decoder::PixelFormat::L16 => {
            let wide: Vec<u16> = pixels
                .chunks_exact(2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .collect();
            image::ImageBuffer::<image::Luma<u16>, _>::from_raw(w, h, wide).map(DynamicImage::from)
        }
        jpeg_decoder::PixelFormat::RGB24 => {
            image::RgbImage::from_raw(w, h, pixels).map(DynamicImage::from)
        }
        jpeg_decoder::PixelFormat::CMYK32 => {
            let rgb = pixels
                .chunks_exact(4)
                .flat_map(|p| {
                    let k = u16::from(p[3]);
                    [p[0], p[1], p[2]].map(|c| ((u16::from(c) * k) / 255) as u8)
                })
                .collect();
            image::RgbImage::from_raw(w, h, rgb).map(DynamicImage::from)
        }
    };
    image.ok_or_else(|| corrupt(&"pixel data does not match the header"))
}

/// Re-encodes in the same type, without any metadata.
fn encode_like(image: &DynamicImage, kind: Kind) -> Result<Vec<u8>, Rejection> {
    let mut out = Cursor::new(Vec::new());
    let result = match kind {
        Kind::Jpeg => image
            .to_rgb8()
            .write_with_encoder(JpegEncoder::new_with_quality(
                &mut out,
                STRIPPED_JPEG_QUALITY,
            )),
        Kind::WebP => image
            .to_rgba8()
            .write_with_encoder(WebPEncoder::new_lossless(&mut out)),
        other => image.write_to(&mut out, other.format()),
    };
    result.map_err(|err| Rejection::Corrupt(err.to_string()))?;
    Ok(out.into_inner())
}

/// A thumbnail whose longest side is at most [`THUMBNAIL_SIZE`]: JPEG, or
/// lossless WebP when the image has transparency.
fn thumbnail(image: &DynamicImage) -> Result<(Vec<u8>, &'static str), Rejection> {
    let failed = |err: &dyn std::fmt::Display| Rejection::Corrupt(err.to_string());
    let (width, height) = (image.width(), image.height());
    let scale = f64::from(THUMBNAIL_SIZE) / f64::from(width.max(height));
    let (tw, th) = if scale < 1.0 {
        (
            ((f64::from(width) * scale).round() as u32).max(1),
            ((f64::from(height) * scale).round() as u32).max(1),
        )
    } else {
        (width, height)
    };
    let alpha = image.color().has_alpha();
    let source = if alpha {
        DynamicImage::ImageRgba8(image.to_rgba8())
    } else {
        DynamicImage::ImageRgb8(image.to_rgb8())
    };
    let mut resized = DynamicImage::new(tw, th, source.color());
    Resizer::new()
        .resize(
            &source,
            &mut resized,
            &ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3)),
        )
        .map_err(|err| failed(&err))?;
    let mut out = Cursor::new(Vec::new());
    if alpha {
        resized
            .write_with_encoder(WebPEncoder::new_lossless(&mut out))
            .map_err(|err| failed(&err))?;
        Ok((out.into_inner(), "image/webp"))
    } else {
        resized
            .write_with_encoder(JpegEncoder::new_with_quality(
                &mut out,
                THUMBNAIL_JPEG_QUALITY,
            ))
            .map_err(|err| failed(&err))?;
        Ok((out.into_inner(), "image/jpeg"))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// The service's defaults.
    const LIMITS: DecodeLimits = DecodeLimits {
        max_pixels: 100_000_000,
        max_alloc: 512 * 1024 * 1024,
    };

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(bytes).expect("write");
        file
    }

    fn encoded(image: &DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, ImageFormat::Png).expect("png");
        out.into_inner()
    }

    #[test]
    fn a_large_png_is_previewed_row_by_row() {
        // Left half red, right half transparent blue: the thumbnail must show both.
        let (w, h) = (2600, 1300);
        let image = image::RgbaImage::from_fn(w, h, |x, _| {
            if x < w / 2 {
                image::Rgba([255, 0, 0, 255])
            } else {
                image::Rgba([0, 0, 255, 0])
            }
        });
        let file = file_with(&encoded(&DynamicImage::from(image)));
        let inspected = inspect(file.path(), LIMITS, true).expect("inspected");
        assert_eq!(
            (inspected.kind, inspected.width, inspected.height),
            (Kind::Png, w, h)
        );
        assert_eq!(inspected.thumbnail_mime, "image/webp", "transparency kept");
        let thumbnail = image::load_from_memory(&inspected.thumbnail)
            .expect("thumbnail decodes")
            .to_rgba8();
        assert_eq!(thumbnail.dimensions(), (512, 256));
        assert_eq!(thumbnail.get_pixel(10, 128).0, [255, 0, 0, 255]);
        assert_eq!(thumbnail.get_pixel(500, 128).0[3], 0);
    }

    #[test]
    fn grey_and_sixteen_bit_pngs_are_previewed_too() {
        let grey = DynamicImage::from(image::GrayImage::from_fn(1500, 900, |x, _| {
            image::Luma([(x % 256) as u8])
        }));
        let deep = DynamicImage::from(image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(
            1200,
            1200,
            |x, y| image::Rgb([(x * 50) as u16, (y * 50) as u16, 40_000]),
        ));
        for image in [grey, deep] {
            let file = file_with(&encoded(&image));
            let inspected = inspect(file.path(), LIMITS, true).expect("inspected");
            assert_eq!(
                (inspected.width, inspected.height),
                (image.width(), image.height())
            );
            let thumbnail = image::load_from_memory(&inspected.thumbnail).expect("thumbnail");
            assert_eq!(thumbnail.width().max(thumbnail.height()), THUMBNAIL_SIZE);
        }
    }

    #[test]
    fn a_truncated_png_is_refused_as_corrupt() {
        let image = DynamicImage::from(image::RgbImage::from_fn(1200, 800, |x, y| {
            image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x * y) % 239) as u8])
        }));
        let bytes = encoded(&image);
        let file = file_with(&bytes[..bytes.len() * 2 / 3]);
        assert!(matches!(
            inspect(file.path(), LIMITS, true),
            Err(Rejection::Corrupt(_))
        ));
    }

    #[test]
    fn a_png_over_the_pixel_limit_is_refused_before_decoding() {
        let image = DynamicImage::from(image::RgbImage::new(400, 300));
        let file = file_with(&encoded(&image));
        assert!(matches!(
            inspect(
                file.path(),
                DecodeLimits {
                    max_pixels: 100_000,
                    ..LIMITS
                },
                true
            ),
            Err(Rejection::TooManyPixels { .. })
        ));
    }
}
