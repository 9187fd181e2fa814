//! The image operations behind the catalogue: resampling, background removal, style
//! filters, edge maps and pseudo-depth, plus encoding. Plain CPU work: callers run it on
//! a blocking thread.

use std::{collections::VecDeque, io::Cursor};

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::{
    DynamicImage, GrayImage, ImageFormat, Luma, RgbImage, RgbaImage, codecs::jpeg::JpegEncoder,
    imageops,
};

/// The most pixels an operation may produce (as many as an input may have).
pub(crate) const MAX_OUTPUT_PIXELS: u64 = 100_000_000;

/// The quality JPEG results are written with.
const JPEG_QUALITY: u8 = 90;

/// What can go wrong in an operation.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImagingError {
    /// The result would have more than [`MAX_OUTPUT_PIXELS`].
    #[error("the result would be {width}x{height}, more than {MAX_OUTPUT_PIXELS} pixels")]
    TooLarge { width: u64, height: u64 },
    /// Resampling failed.
    #[error("resizing failed: {0}")]
    Resize(String),
    /// Encoding the result failed.
    #[error("encoding failed: {0}")]
    Encode(#[from] image::ImageError),
}

/// An output file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Png,
    Jpeg,
    Webp,
    Gif,
}

impl Format {
    /// The format named as fal's `output_format` values name them.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name {
            "png" => Some(Self::Png),
            "jpeg" | "jpg" => Some(Self::Jpeg),
            "webp" => Some(Self::Webp),
            "gif" => Some(Self::Gif),
            _ => None,
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Webp => "image/webp",
            Self::Gif => "image/gif",
        }
    }

    pub(crate) fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
            Self::Webp => "webp",
            Self::Gif => "gif",
        }
    }
}

/// Brings a decoded image to 8-bit gray, RGB or RGBA, the layouts the operations handle.
pub(crate) fn normalise(image: DynamicImage) -> DynamicImage {
    match image {
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_) => {
            image
        }
        other if other.color().has_alpha() => DynamicImage::ImageRgba8(other.to_rgba8()),
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    }
}

/// Encodes `image` as `format` (JPEG drops the alpha channel).
pub(crate) fn encode(image: &DynamicImage, format: Format) -> Result<Vec<u8>, ImagingError> {
    let mut out = Cursor::new(Vec::new());
    match format {
        Format::Jpeg => {
            JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY).encode_image(&image.to_rgb8())?
        }
        Format::Png => normalise(image.clone()).write_to(&mut out, ImageFormat::Png)?,
        Format::Webp => {
            let image = if image.color().has_alpha() {
                DynamicImage::ImageRgba8(image.to_rgba8())
            } else {
                DynamicImage::ImageRgb8(image.to_rgb8())
            };
            image.write_to(&mut out, ImageFormat::WebP)?;
        }
        Format::Gif => {
            DynamicImage::ImageRgba8(image.to_rgba8()).write_to(&mut out, ImageFormat::Gif)?
        }
    }
    Ok(out.into_inner())
}

/// The size of `width`x`height` scaled by `factor` (at least 1x1), refused past
/// [`MAX_OUTPUT_PIXELS`].
pub(crate) fn scaled_size(
    width: u32,
    height: u32,
    factor: f64,
) -> Result<(u32, u32), ImagingError> {
    let scale = |n: u32| ((f64::from(n) * factor).round() as u64).max(1);
    let (w, h) = (scale(width), scale(height));
    if w.saturating_mul(h) > MAX_OUTPUT_PIXELS || w > u64::from(u32::MAX) || h > u64::from(u32::MAX)
    {
        return Err(ImagingError::TooLarge {
            width: w,
            height: h,
        });
    }
    Ok((w as u32, h as u32))
}

/// Resamples `image` by `factor` with a Lanczos-3 filter.
pub(crate) fn upscale(image: &DynamicImage, factor: f64) -> Result<DynamicImage, ImagingError> {
    let (width, height) = scaled_size(image.width(), image.height(), factor)?;
    resize(image, width, height)
}

/// Resamples `image` to `width`x`height` with a Lanczos-3 filter.
pub(crate) fn resize(
    image: &DynamicImage,
    width: u32,
    height: u32,
) -> Result<DynamicImage, ImagingError> {
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    let mut resizer = Resizer::new();
    let failed = |e: fast_image_resize::ResizeError| ImagingError::Resize(e.to_string());
    Ok(match normalise(image.clone()) {
        DynamicImage::ImageLuma8(src) => {
            let mut dst = GrayImage::new(width, height);
            resizer.resize(&src, &mut dst, &options).map_err(failed)?;
            DynamicImage::ImageLuma8(dst)
        }
        DynamicImage::ImageRgba8(src) => {
            let mut dst = RgbaImage::new(width, height);
            resizer.resize(&src, &mut dst, &options).map_err(failed)?;
            DynamicImage::ImageRgba8(dst)
        }
        other => {
            let src = other.to_rgb8();
            let mut dst = RgbImage::new(width, height);
            resizer.resize(&src, &mut dst, &options).map_err(failed)?;
            DynamicImage::ImageRgb8(dst)
        }
    })
}

/// A mild unsharp mask, as an upscaler's detail pass.
pub(crate) fn sharpen(image: &DynamicImage) -> DynamicImage {
    image.unsharpen(0.8, 2)
}

// ---------------------------------------------------------------------------------------
// Background removal

/// Removes the background: estimates its colour from the border pixels, floods the pixels
/// close to it inwards from the border, and makes them transparent with a soft edge.
/// Returns the cut-out image and its mask (white is foreground).
pub(crate) fn cutout(image: &DynamicImage) -> (RgbaImage, GrayImage) {
    let rgba = image.to_rgba8();
    let (width, height) = rgba.dimensions();
    if width == 0 || height == 0 {
        return (rgba, GrayImage::new(width, height));
    }
    let border = border_pixels(width, height);
    let background = {
        let mut channels: [Vec<u8>; 3] = Default::default();
        for &(x, y) in &border {
            let p = rgba.get_pixel(x, y).0;
            for (c, values) in channels.iter_mut().enumerate() {
                values.push(p[c]);
            }
        }
        channels.map(|mut values| {
            values.sort_unstable();
            f32::from(values[values.len() / 2])
        })
    };
    // Each pixel's colour distance to the background estimate.
    let distance: Vec<f32> = rgba
        .as_raw()
        .chunks_exact(4)
        .map(|p| {
            let (r, g, b) = (
                f32::from(p[0]) - background[0],
                f32::from(p[1]) - background[1],
                f32::from(p[2]) - background[2],
            );
            (r * r + g * g + b * b).sqrt()
        })
        .collect();
    let (w, h) = (width as usize, height as usize);
    let index = |x: u32, y: u32| (y as usize) * w + x as usize;
    // How far border pixels stray from the estimate tells the noise in the background.
    let mut border_distances: Vec<f32> =
        border.iter().map(|&(x, y)| distance[index(x, y)]).collect();
    border_distances.sort_unstable_by(f32::total_cmp);
    let noise = border_distances[border_distances.len() * 9 / 10];
    let low = (noise + 12.0).min(160.0);
    let high = low + 48.0;

    // Flood the background inwards from the border.
    let mut reached = vec![false; w * h];
    let mut queue = VecDeque::new();
    for &(x, y) in &border {
        let i = index(x, y);
        if !reached[i] && distance[i] < high {
            reached[i] = true;
            queue.push_back(i);
        }
    }
    while let Some(i) = queue.pop_front() {
        let (x, y) = (i % w, i / w);
        let neighbours = [
            (x > 0).then(|| i - 1),
            (x + 1 < w).then_some(i + 1),
            (y > 0).then(|| i - w),
            (y + 1 < h).then_some(i + w),
        ];
        for n in neighbours.into_iter().flatten() {
            if !reached[n] && distance[n] < high {
                reached[n] = true;
                queue.push_back(n);
            }
        }
    }

    let alpha: Vec<u8> = reached
        .iter()
        .zip(&distance)
        .map(|(&background, &d)| {
            let a = if background {
                smoothstep(low, high, d)
            } else {
                1.0
            };
            (a * 255.0).round() as u8
        })
        .collect();
    let hard =
        GrayImage::from_raw(width, height, alpha).unwrap_or_else(|| GrayImage::new(width, height));
    let soft = DynamicImage::ImageLuma8(hard).blur(0.8).into_luma8();
    let mut out = rgba;
    for (pixel, a) in out.as_mut().chunks_exact_mut(4).zip(soft.as_raw()) {
        pixel[3] = pixel[3].min(*a);
    }
    let mask: Vec<u8> = out.as_raw().chunks_exact(4).map(|p| p[3]).collect();
    let mask =
        GrayImage::from_raw(width, height, mask).unwrap_or_else(|| GrayImage::new(width, height));
    (out, mask)
}

/// The pixels of the outer ring, a few pixels thick on larger images.
fn border_pixels(width: u32, height: u32) -> Vec<(u32, u32)> {
    let ring = (width.min(height) / 64).clamp(1, 4);
    let mut pixels = Vec::new();
    for y in 0..height {
        if y < ring || y >= height.saturating_sub(ring) {
            pixels.extend((0..width).map(|x| (x, y)));
        } else {
            pixels.extend((0..ring.min(width)).map(|x| (x, y)));
            pixels.extend((width.saturating_sub(ring).max(ring)..width).map(|x| (x, y)));
        }
    }
    pixels
}

fn smoothstep(low: f32, high: f32, value: f32) -> f32 {
    let t = ((value - low) / (high - low)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Crops to the box around the pixels that are not (almost) transparent; an image with
/// none is left whole.
pub(crate) fn crop_to_content(image: &RgbaImage) -> RgbaImage {
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, pixel) in image.enumerate_pixels() {
        if pixel.0[3] > 8 {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 {
        return image.clone();
    }
    imageops::crop_imm(image, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image()
}

// ---------------------------------------------------------------------------------------
// Style filters (image-to-image)

type Filter = fn(&mut RgbaImage);

/// Filters picked by words in the prompt, applied in this order.
const STYLES: &[(&[&str], Filter)] = &[
    (
        &[
            "watercolor",
            "watercolour",
            "dream",
            "soft",
            "painting",
            "oil",
            "blur",
        ],
        soften,
    ),
    (
        &[
            "noir",
            "black and white",
            "monochrome",
            "grayscale",
            "greyscale",
        ],
        monochrome,
    ),
    (&["sepia", "vintage", "old photo", "retro"], sepia),
    (&["warm", "sunset", "golden", "autumn", "summer"], warm),
    (
        &["cold", "cool", "winter", "ice", "night", "cyberpunk"],
        cool,
    ),
    (
        &[
            "pop art",
            "comic",
            "poster",
            "cartoon",
            "anime",
            "posterize",
        ],
        posterise,
    ),
    (&["sketch", "pencil", "drawing", "line art"], sketch),
    (&["invert", "negative"], invert),
];

/// Restyles `image` after `prompt`, blending the filtered image over the original by
/// `strength` (0 to 1); `variant` tints each of several outputs a little differently.
pub(crate) fn stylise(
    image: &DynamicImage,
    prompt: &str,
    strength: f64,
    variant: u64,
) -> DynamicImage {
    let original = image.to_rgba8();
    let mut filtered = original.clone();
    let prompt = prompt.to_lowercase();
    let mut matched = false;
    for (words, filter) in STYLES {
        if words.iter().any(|w| prompt.contains(w)) {
            filter(&mut filtered);
            matched = true;
        }
    }
    if !matched {
        vivid(&mut filtered);
    }
    let shift = (variant % 31) as i32 - 15;
    if shift != 0 {
        filtered = DynamicImage::ImageRgba8(filtered)
            .huerotate(shift)
            .into_rgba8();
    }
    let s = strength.clamp(0.0, 1.0) as f32;
    let mut out = original;
    for (o, f) in out.pixels_mut().zip(filtered.pixels()) {
        for c in 0..3 {
            o.0[c] = to_u8(f32::from(o.0[c]) * (1.0 - s) + f32::from(f.0[c]) * s);
        }
    }
    DynamicImage::ImageRgba8(out)
}

fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

fn luma_of(p: [u8; 4]) -> f32 {
    0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])
}

fn map_rgb(image: &mut RgbaImage, f: impl Fn([f32; 3]) -> [f32; 3]) {
    for p in image.pixels_mut() {
        let out = f([f32::from(p.0[0]), f32::from(p.0[1]), f32::from(p.0[2])]);
        for (channel, value) in p.0.iter_mut().zip(out) {
            *channel = to_u8(value);
        }
    }
}

fn saturate(image: &mut RgbaImage, amount: f32, contrast: f32) {
    for p in image.pixels_mut() {
        let l = luma_of(p.0);
        for c in 0..3 {
            let v = l + (f32::from(p.0[c]) - l) * amount;
            p.0[c] = to_u8((v - 128.0) * contrast + 128.0);
        }
    }
}

fn vivid(image: &mut RgbaImage) {
    saturate(image, 1.35, 1.1);
}

fn soften(image: &mut RgbaImage) {
    let sigma = image.width().max(image.height()) as f32 / 200.0 + 1.5;
    *image = DynamicImage::ImageRgba8(std::mem::take(image))
        .fast_blur(sigma)
        .into_rgba8();
}

fn monochrome(image: &mut RgbaImage) {
    for p in image.pixels_mut() {
        let v = to_u8((luma_of(p.0) - 128.0) * 1.2 + 128.0);
        p.0[..3].fill(v);
    }
}

fn sepia(image: &mut RgbaImage) {
    map_rgb(image, |[r, g, b]| {
        [
            0.393 * r + 0.769 * g + 0.189 * b,
            0.349 * r + 0.686 * g + 0.168 * b,
            0.272 * r + 0.534 * g + 0.131 * b,
        ]
    });
}

fn warm(image: &mut RgbaImage) {
    map_rgb(image, |[r, g, b]| {
        [r * 1.08 + 12.0, g * 1.02 + 4.0, b * 0.85]
    });
}

fn cool(image: &mut RgbaImage) {
    map_rgb(image, |[r, g, b]| [r * 0.85, g + 2.0, b * 1.08 + 14.0]);
}

fn posterise(image: &mut RgbaImage) {
    saturate(image, 1.4, 1.0);
    const LEVELS: f32 = 4.0;
    map_rgb(image, |rgb| {
        rgb.map(|v| (v / 255.0 * (LEVELS - 1.0)).round() * 255.0 / (LEVELS - 1.0))
    });
}

fn sketch(image: &mut RgbaImage) {
    let lines = lineart(&DynamicImage::ImageRgba8(image.clone()), false);
    for (p, l) in image.pixels_mut().zip(lines.pixels()) {
        p.0[..3].fill(l.0[0]);
    }
}

fn invert(image: &mut RgbaImage) {
    map_rgb(image, |rgb| rgb.map(|v| 255.0 - v));
}

// ---------------------------------------------------------------------------------------
// Preprocessors: edges and depth

/// Horizontal and vertical 3x3 Sobel gradients of a gray image (edges replicated).
fn sobel(gray: &GrayImage) -> (Vec<f32>, Vec<f32>) {
    let (w, h) = (gray.width() as usize, gray.height() as usize);
    // Pad by one pixel on each side, so the kernel needs no bounds checks.
    let pw = w + 2;
    let mut padded = vec![0f32; pw * (h + 2)];
    for py in 0..h + 2 {
        let y = py.saturating_sub(1).min(h - 1);
        let row = &gray.as_raw()[y * w..(y + 1) * w];
        let out = &mut padded[py * pw..(py + 1) * pw];
        out[0] = f32::from(row[0]);
        out[pw - 1] = f32::from(row[w - 1]);
        for (o, v) in out[1..=w].iter_mut().zip(row) {
            *o = f32::from(*v);
        }
    }
    let mut gx = vec![0f32; w * h];
    let mut gy = vec![0f32; w * h];
    for y in 0..h {
        let (up, mid, down) = (
            &padded[y * pw..(y + 1) * pw],
            &padded[(y + 1) * pw..(y + 2) * pw],
            &padded[(y + 2) * pw..(y + 3) * pw],
        );
        let (row_x, row_y) = (&mut gx[y * w..(y + 1) * w], &mut gy[y * w..(y + 1) * w]);
        for x in 0..w {
            row_x[x] = up[x + 2] + 2.0 * mid[x + 2] + down[x + 2] - up[x] - 2.0 * mid[x] - down[x];
            row_y[x] =
                down[x] + 2.0 * down[x + 1] + down[x + 2] - up[x] - 2.0 * up[x + 1] - up[x + 2];
        }
    }
    (gx, gy)
}

/// A Canny edge map (white edges on black): Gaussian blur, Sobel gradients (L1 magnitude,
/// as OpenCV's default, so the thresholds mean what they mean there), non-maximum
/// suppression and hysteresis between `low` and `high`.
pub(crate) fn canny(image: &DynamicImage, low: f32, high: f32) -> GrayImage {
    let gray = image.grayscale().blur(1.4).into_luma8();
    let (w, h) = gray.dimensions();
    if w == 0 || h == 0 {
        return gray;
    }
    let (gx, gy) = sobel(&gray);
    let magnitude: Vec<f32> = gx.iter().zip(&gy).map(|(x, y)| x.abs() + y.abs()).collect();
    let (w, h) = (w as usize, h as usize);
    let mut thin = vec![0f32; w * h];
    for y in 1..h.saturating_sub(1) {
        for x in 1..w.saturating_sub(1) {
            let i = y * w + x;
            let m = magnitude[i];
            if m == 0.0 {
                continue;
            }
            let angle = gy[i].atan2(gx[i]).to_degrees().rem_euclid(180.0);
            let (a, b) = if !(22.5..157.5).contains(&angle) {
                (i - 1, i + 1)
            } else if angle < 67.5 {
                (i - w - 1, i + w + 1)
            } else if angle < 112.5 {
                (i - w, i + w)
            } else {
                (i - w + 1, i + w - 1)
            };
            if m >= magnitude[a] && m >= magnitude[b] {
                thin[i] = m;
            }
        }
    }
    let mut edges = vec![0u8; w * h];
    let mut stack: Vec<usize> = Vec::new();
    for (i, &m) in thin.iter().enumerate() {
        if m >= high {
            edges[i] = 255;
            stack.push(i);
        }
    }
    while let Some(i) = stack.pop() {
        let (x, y) = (i % w, i / w);
        for dy in [-1i64, 0, 1] {
            for dx in [-1i64, 0, 1] {
                let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                    continue;
                }
                let j = ny as usize * w + nx as usize;
                if edges[j] == 0 && thin[j] >= low {
                    edges[j] = 255;
                    stack.push(j);
                }
            }
        }
    }
    GrayImage::from_raw(w as u32, h as u32, edges)
        .unwrap_or_else(|| GrayImage::new(w as u32, h as u32))
}

/// Line art: dark lines on white, the inverse of a normalised gradient map; `coarse`
/// blurs more first, for bolder, fewer lines.
pub(crate) fn lineart(image: &DynamicImage, coarse: bool) -> GrayImage {
    let gray = image
        .grayscale()
        .blur(if coarse { 2.0 } else { 1.0 })
        .into_luma8();
    let (w, h) = gray.dimensions();
    if w == 0 || h == 0 {
        return gray;
    }
    let (gx, gy) = sobel(&gray);
    let magnitude: Vec<f32> = gx.iter().zip(&gy).map(|(x, y)| x.hypot(*y)).collect();
    let mut sorted = magnitude.clone();
    sorted.sort_unstable_by(f32::total_cmp);
    let scale = sorted[sorted.len() * 98 / 100].max(32.0);
    let pixels = magnitude
        .iter()
        .map(|m| 255 - to_u8(m / scale * 255.0))
        .collect();
    GrayImage::from_raw(w, h, pixels).unwrap_or_else(|| GrayImage::new(w, h))
}

/// A grayscale pseudo-depth map: luminance, blurred well and stretched to the full range
/// (bright is near).
pub(crate) fn depth(image: &DynamicImage) -> GrayImage {
    let sigma = image.width().max(image.height()) as f32 / 64.0 + 1.0;
    let blurred = image.grayscale().fast_blur(sigma).into_luma8();
    let (min, max) = blurred.pixels().fold((u8::MAX, u8::MIN), |(lo, hi), p| {
        (lo.min(p.0[0]), hi.max(p.0[0]))
    });
    let range = f32::from(max.saturating_sub(min)).max(1.0);
    GrayImage::from_fn(blurred.width(), blurred.height(), |x, y| {
        Luma([to_u8(
            (f32::from(blurred.get_pixel(x, y).0[0]) - f32::from(min)) / range * 255.0,
        )])
    })
}

#[cfg(test)]
mod tests {
    use image::Rgba;

    use super::*;

    /// A red disc on a light gray background.
    fn disc(width: u32, height: u32) -> DynamicImage {
        let (cx, cy, r) = (
            width as f32 / 2.0,
            height as f32 / 2.0,
            width.min(height) as f32 / 4.0,
        );
        DynamicImage::ImageRgba8(RgbaImage::from_fn(width, height, |x, y| {
            if (x as f32 - cx).hypot(y as f32 - cy) < r {
                Rgba([200, 30, 30, 255])
            } else {
                Rgba([230, 230, 225, 255])
            }
        }))
    }

    #[test]
    fn upscale_scales_and_refuses_huge_results() {
        let image = disc(64, 48);
        let big = upscale(&image, 2.0).expect("upscaling");
        assert_eq!((big.width(), big.height()), (128, 96));
        assert!(matches!(
            scaled_size(20_000, 20_000, 4.0),
            Err(ImagingError::TooLarge { .. })
        ));
    }

    #[test]
    fn cutout_clears_the_background_and_keeps_the_subject() {
        let (out, mask) = cutout(&disc(64, 64));
        assert_eq!(out.get_pixel(2, 2).0[3], 0, "corner is background");
        assert_eq!(out.get_pixel(32, 32).0[3], 255, "centre is the subject");
        assert_eq!(mask.get_pixel(32, 32).0[0], 255);
        let cropped = crop_to_content(&out);
        assert!(
            cropped.width() < 40 && cropped.width() >= 30,
            "{}",
            cropped.width()
        );
    }

    #[test]
    fn canny_finds_the_disc_outline_only() {
        let edges = canny(&disc(64, 64), 100.0, 200.0);
        assert_eq!(edges.get_pixel(32, 32).0[0], 0, "no edge inside");
        assert_eq!(edges.get_pixel(2, 2).0[0], 0, "no edge in the background");
        assert!(edges.pixels().any(|p| p.0[0] == 255), "an outline");
    }

    #[test]
    fn stylise_follows_the_prompt() {
        let image = disc(16, 16);
        let mono = stylise(&image, "a noir photo", 1.0, 15).to_rgba8();
        let p = mono.get_pixel(8, 8).0;
        assert!(p[0] == p[1] && p[1] == p[2], "monochrome: {p:?}");
        let untouched = stylise(&image, "anything", 0.0, 15).to_rgba8();
        assert_eq!(untouched, image.to_rgba8());
    }

    #[test]
    fn every_format_encodes() {
        let image = disc(8, 8);
        for format in [Format::Png, Format::Jpeg, Format::Webp, Format::Gif] {
            let bytes = encode(&image, format).expect("encoding");
            let decoded = image::load_from_memory(&bytes).expect("decoding");
            assert_eq!((decoded.width(), decoded.height()), (8, 8), "{format:?}");
        }
    }
}
