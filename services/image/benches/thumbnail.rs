//! A 24-megapixel JPEG's thumbnail: our inspection (the whole file decoded to prove
//! it whole, at 1/8 scale in the DCT, then resized to 512 px and encoded) against
//! libvips' `vipsthumbnail` on the same file at the same size, which shrinks on load
//! the same way. `vipsthumbnail` runs as the command people run, so its time
//! includes starting the process; ours runs in-process, as it does in the service.
//! Target: no slower than libvips. `make bench` runs the full measurement; `cargo
//! test` a smoke run on a 2-megapixel JPEG.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use atelier_bench::{Mode, Report, Row, Spread, ms, version_of};
use atelier_image::domain::inspect::{DecodeLimits, THUMBNAIL_SIZE, inspect};

/// The service's defaults.
const LIMITS: DecodeLimits = DecodeLimits {
    max_pixels: 100_000_000,
    max_alloc: 512 * 1024 * 1024,
};

fn ours(path: &Path) -> Duration {
    let started = Instant::now();
    let inspected = inspect(path, LIMITS, true).expect("our inspection accepts the photo");
    let took = started.elapsed();
    let thumbnail = image::load_from_memory(&inspected.thumbnail).expect("our thumbnail decodes");
    assert_eq!(
        thumbnail.width().max(thumbnail.height()),
        THUMBNAIL_SIZE,
        "our thumbnail has the size asked of libvips"
    );
    took
}

fn vips(path: &Path, out: &Path) -> Duration {
    let started = Instant::now();
    let status = Command::new("vipsthumbnail")
        .arg(path)
        .args(["--size", &THUMBNAIL_SIZE.to_string(), "-o"])
        .arg(format!("{}[Q=82]", out.display()))
        .status()
        .expect("vipsthumbnail runs (apt-get install libvips-tools)");
    let took = started.elapsed();
    assert!(status.success(), "vipsthumbnail failed: {status}");
    let thumbnail = image::open(out).expect("libvips' thumbnail decodes");
    assert_eq!(thumbnail.width().max(thumbnail.height()), THUMBNAIL_SIZE);
    took
}

fn main() {
    let mode = Mode::from_args();
    let (width, height) = mode.pick((6000, 4000), (1800, 1200));
    let runs = mode.pick(9, 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let photo = dir.path().join("photo.jpg");
    let out = dir.path().join("thumbnail.jpg");
    let bytes = atelier_testkit::fixtures::encode(
        &atelier_testkit::fixtures::photo(width, height),
        image::ImageFormat::Jpeg,
    );
    std::fs::write(&photo, &bytes).expect("write the photo");
    let megapixels = f64::from(width * height) / 1e6;
    println!(
        "{width}x{height} JPEG ({megapixels:.0} MP, {:.1} MB), {runs} runs each",
        bytes.len() as f64 / 1e6
    );

    // A first run of each warms caches (the file, the libraries).
    ours(&photo);
    vips(&photo, &out);
    let (mut our_times, mut vips_times) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        our_times.push(ms(ours(&photo)));
        vips_times.push(ms(vips(&photo, &out)));
    }

    let peer = version_of("vipsthumbnail", &["--vips-version"]);
    let mut report = Report::new("thumbnail", "Thumbnail of a JPEG photo");
    report.row(
        Row::new(format!(
            "{megapixels:.0} MP JPEG ({width}×{height}) → {THUMBNAIL_SIZE} px thumbnail, ms"
        ))
        .ours_spread(Spread::of(&our_times), "ms")
        .peer_spread(format!("vipsthumbnail ({peer})"), Spread::of(&vips_times))
        .at_most_ratio(1.0),
    );
    report.note(format!(
        "{}. Ours: `inspect` in-process on the file (every scan decoded at 1/8 scale with \
         jpeg-decoder, EXIF read, Lanczos3 to {THUMBNAIL_SIZE} px, JPEG q82). Peer: \
         `vipsthumbnail photo.jpg --size {THUMBNAIL_SIZE} -o thumbnail.jpg[Q=82]`, the process \
         timed from spawn to exit. The photo: `fixtures::photo` (smooth colour fields with \
         grain) encoded by the `image` crate, {:.1} MB; medians of {runs} runs after a warm-up.",
        atelier_bench::machine(),
        bytes.len() as f64 / 1e6
    ));
    report.finish(mode);
}
