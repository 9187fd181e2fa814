//! Images made on the spot, for upload tests: one of each supported type, and
//! the awkward ones (EXIF orientation and location, bombs, polyglots, truncation).

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

/// A `width`x`height` gradient, so thumbnails have something to resample.
pub fn picture(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
        Rgb([
            (x * 255 / width.max(1)) as u8,
            (y * 255 / height.max(1)) as u8,
            128,
        ])
    }))
}

/// `image` encoded as `format`.
pub fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    let image = match format {
        ImageFormat::WebP => DynamicImage::ImageRgba8(image.to_rgba8()),
        _ => image.clone(),
    };
    image.write_to(&mut out, format).expect("encode a fixture");
    out.into_inner()
}

pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
    encode(&picture(width, height), ImageFormat::Jpeg)
}

pub fn png(width: u32, height: u32) -> Vec<u8> {
    encode(&picture(width, height), ImageFormat::Png)
}

/// A PNG with transparency.
pub fn png_with_alpha(width: u32, height: u32) -> Vec<u8> {
    let image = RgbaImage::from_fn(width, height, |x, _| Rgba([200, 10, 10, (x % 256) as u8]));
    encode(&DynamicImage::ImageRgba8(image), ImageFormat::Png)
}

/// One of each supported type: (name, bytes, mime type).
pub fn every_format(width: u32, height: u32) -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let picture = picture(width, height);
    vec![
        (
            "photo.jpg",
            encode(&picture, ImageFormat::Jpeg),
            "image/jpeg",
        ),
        ("photo.png", encode(&picture, ImageFormat::Png), "image/png"),
        (
            "photo.webp",
            encode(&picture, ImageFormat::WebP),
            "image/webp",
        ),
        ("photo.gif", encode(&picture, ImageFormat::Gif), "image/gif"),
        (
            "photo.tiff",
            encode(&picture, ImageFormat::Tiff),
            "image/tiff",
        ),
    ]
}

/// A JPEG whose EXIF says `orientation` and, when `gps`, where it was taken.
pub fn jpeg_with_exif(width: u32, height: u32, orientation: u16, gps: bool) -> Vec<u8> {
    use exif::{Field, In, Tag, Value, experimental::Writer};
    let jpeg = jpeg(width, height);
    let mut fields = vec![Field {
        tag: Tag::Orientation,
        ifd_num: In::PRIMARY,
        value: Value::Short(vec![orientation]),
    }];
    if gps {
        fields.push(Field {
            tag: Tag::GPSLatitudeRef,
            ifd_num: In::PRIMARY,
            value: Value::Ascii(vec![b"N".to_vec()]),
        });
        fields.push(Field {
            tag: Tag::GPSLatitude,
            ifd_num: In::PRIMARY,
            value: Value::Rational(vec![(48, 1).into(), (51, 1).into(), (2964, 100).into()]),
        });
    }
    let mut writer = Writer::new();
    for field in &fields {
        writer.push_field(field);
    }
    let mut tiff = Cursor::new(Vec::new());
    writer.write(&mut tiff, false).expect("write exif");
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff.into_inner());
    let length = u16::try_from(app1.len() + 2).expect("exif fits a segment");
    // SOI, then APP1 with the EXIF, then the rest of the encoded JPEG.
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// A small PNG whose header claims `width`x`height`: a decompression bomb.
pub fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    let mut png = png(1, 1);
    // Signature (8), IHDR length (4), "IHDR" (4), then width and height.
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32fast::hash(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

/// A TIFF of a few hundred bytes whose header claims `width`x`height` RGBA pixels of
/// 16 bits (8 bytes each) in one uncompressed strip that holds 16 bytes: decoding
/// it would allocate `width * height * 8` bytes before finding the data missing.
pub fn tiff_bomb(width: u32, height: u32) -> Vec<u8> {
    const SHORT: u16 = 3;
    const LONG: u16 = 4;
    let entries: [(u16, u16, u32, u32); 11] = [
        (256, LONG, 1, width),
        (257, LONG, 1, height),
        (258, SHORT, 4, 146), // BitsPerSample: four values, after the directory
        (259, SHORT, 1, 1),   // no compression
        (262, SHORT, 1, 2),   // RGB
        (273, LONG, 1, 154),  // the strip, after the bits per sample
        (277, SHORT, 1, 4),   // samples per pixel
        (278, LONG, 1, height),
        (279, LONG, 1, 16), // the strip's byte count
        (284, SHORT, 1, 1), // chunky
        (338, SHORT, 1, 2), // the fourth sample is unassociated alpha
    ];
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, kind, count, value) in entries {
        tiff.extend_from_slice(&tag.to_le_bytes());
        tiff.extend_from_slice(&kind.to_le_bytes());
        tiff.extend_from_slice(&count.to_le_bytes());
        tiff.extend_from_slice(&value.to_le_bytes());
    }
    tiff.extend_from_slice(&0u32.to_le_bytes());
    for _ in 0..4 {
        tiff.extend_from_slice(&16u16.to_le_bytes());
    }
    tiff.extend_from_slice(&[0x7f; 16]);
    tiff
}

/// GIF magic bytes wrapped around a script: a GIF/JavaScript polyglot.
pub fn gif_script_polyglot() -> Vec<u8> {
    b"GIF89a/*\x01\x00\x01\x00\x00\xff\x00*/=1;alert(document.domain);//".to_vec()
}

/// A valid JPEG with an HTML document appended after its end.
pub fn jpeg_with_trailing_html() -> Vec<u8> {
    let mut jpeg = jpeg(16, 16);
    jpeg.extend_from_slice(b"<html><script>alert(document.domain)</script></html>");
    jpeg
}

/// Something like a phone photo: smooth colour fields with sensor-like grain, so
/// codecs meet real-world sizes (a 24-megapixel JPEG of about 10 MB; an upscale
/// of it as PNG well over 100 MB). Deterministic (xorshift).
pub fn photo(width: u32, height: u32) -> DynamicImage {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut grain = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 41) as i32 - 20
    };
    let (w, h) = (width.max(1), height.max(1));
    DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
        let base = [
            (x * 200 / w + 30) as i32,
            (y * 180 / h + 40) as i32,
            ((x + y) * 120 / (w + h) + 70) as i32,
        ];
        Rgb(base.map(|c| (c + grain()).clamp(0, 255) as u8))
    }))
}

/// A JPEG of random noise at top quality: as many bytes as pixels allow, the
/// hardest case for a decoder's memory. Deterministic (xorshift).
pub fn noise_jpeg(width: u32, height: u32) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let image = RgbImage::from_fn(width, height, |_, _| {
        let bits = next().to_le_bytes();
        Rgb([bits[0], bits[1], bits[2]])
    });
    let mut out = Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 100)
        .encode_image(&image)
        .expect("encode noise");
    out.into_inner()
}
