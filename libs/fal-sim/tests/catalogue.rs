//! Every catalogue endpoint, run for real on a small picture: the output has fal's shape,
//! and its image downloads, decodes and has the expected size and format.

mod common;

use common::{Sim, picture, png_data_uri, quick};
use image::{DynamicImage, GenericImageView as _};
use serde_json::{Value, json};

/// 64x48: the size the tests send.
fn input() -> Value {
    json!({ "image_url": png_data_uri(64, 48) })
}

fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}

fn size(image: &DynamicImage) -> (u32, u32) {
    (image.width(), image.height())
}

#[tokio::test]
async fn upscalers_scale_by_their_factor() {
    let sim = Sim::start(quick()).await;

    let output = sim.run("fal-ai/esrgan", &input()).await;
    assert_eq!(output.as_object().map(|o| o.len()), Some(1), "{output}");
    assert_eq!(output["image"]["content_type"], "image/png");
    assert_eq!(size(&sim.image(&output["image"]).await), (128, 96));

    let output = sim
        .run(
            "fal-ai/esrgan",
            &with(input(), json!({ "scale": 3, "output_format": "jpeg" })),
        )
        .await;
    assert_eq!(output["image"]["content_type"], "image/jpeg");
    assert_eq!(size(&sim.image(&output["image"]).await), (192, 144));

    let output = sim
        .run(
            "fal-ai/clarity-upscaler",
            &with(input(), json!({ "seed": 42 })),
        )
        .await;
    assert_eq!(output["seed"], 42);
    assert!(output["timings"]["inference"].is_number(), "{output}");
    assert_eq!(size(&sim.image(&output["image"]).await), (128, 96));

    let output = sim.run("fal-ai/aura-sr", &input()).await;
    assert!(output["timings"]["inference"].is_number(), "{output}");
    assert_eq!(size(&sim.image(&output["image"]).await), (256, 192));
}

#[tokio::test]
async fn background_removal_makes_the_background_transparent() {
    let sim = Sim::start(quick()).await;

    let output = sim.run("fal-ai/birefnet", &input()).await;
    assert!(output.get("mask_image").is_none(), "{output}");
    let image = sim.image(&output["image"]).await;
    assert_eq!(size(&image), (64, 48));
    assert!(image.color().has_alpha());
    assert_eq!(image.get_pixel(1, 1).0[3], 0, "the background is gone");
    assert_eq!(image.get_pixel(32, 24).0[3], 255, "the subject stays");

    for (format, content_type) in [("webp", "image/webp"), ("gif", "image/gif")] {
        let output = sim
            .run(
                "fal-ai/birefnet",
                &with(
                    input(),
                    json!({ "output_format": format, "output_mask": true }),
                ),
            )
            .await;
        assert_eq!(output["image"]["content_type"], content_type);
        let image = sim.image(&output["image"]).await;
        assert_eq!(image.get_pixel(1, 1).0[3], 0, "{format}");
        let mask = sim.image(&output["mask_image"]).await;
        assert_eq!(size(&mask), (64, 48));
        assert_eq!(mask.to_luma8().get_pixel(32, 24).0[0], 255, "{format}");
        assert_eq!(mask.to_luma8().get_pixel(1, 1).0[0], 0, "{format}");
    }

    let output = sim.run("fal-ai/imageutils/rembg", &input()).await;
    let whole = sim.image(&output["image"]).await;
    assert_eq!(size(&whole), (64, 48));
    assert_eq!(whole.get_pixel(0, 0).0[3], 0);
    let output = sim
        .run(
            "fal-ai/imageutils/rembg",
            &with(input(), json!({ "crop_to_bbox": true })),
        )
        .await;
    let cropped = sim.image(&output["image"]).await;
    // The disc has a radius of 16: the crop is about 32 pixels square.
    assert!((30..=36).contains(&cropped.width()), "{:?}", size(&cropped));
    assert!(
        (30..=36).contains(&cropped.height()),
        "{:?}",
        size(&cropped)
    );
}

#[tokio::test]
async fn image_to_image_follows_the_prompt_and_makes_num_images() {
    let sim = Sim::start(quick()).await;
    let output = sim
        .run(
            "fal-ai/flux/dev/image-to-image",
            &with(
                input(),
                json!({ "prompt": "a noir film still", "num_images": 2, "seed": 7, "strength": 1.0 }),
            ),
        )
        .await;
    assert_eq!(output["seed"], 7);
    assert_eq!(output["prompt"], "a noir film still");
    assert_eq!(output["has_nsfw_concepts"], json!([false, false]));
    assert!(output["timings"]["inference"].is_number());
    let images = output["images"].as_array().expect("images");
    assert_eq!(images.len(), 2);
    for image in images {
        assert_eq!(image["content_type"], "image/jpeg");
        let decoded = sim.image(image).await;
        assert_eq!(size(&decoded), (64, 48));
        // Noir is monochrome; the slight hue shift of a variant keeps it (nearly) gray.
        let p = decoded.to_rgb8().get_pixel(32, 24).0;
        let spread = p.iter().max().unwrap_or(&0) - p.iter().min().unwrap_or(&0);
        assert!(spread <= 12, "{p:?}");
    }

    // Without a seed one is picked and reported.
    let output = sim
        .run(
            "fal-ai/flux/dev/image-to-image",
            &with(
                input(),
                json!({ "prompt": "pop art poster", "output_format": "png" }),
            ),
        )
        .await;
    assert!(output["seed"].is_u64(), "{output}");
    assert_eq!(output["images"][0]["content_type"], "image/png");
    let original = picture(64, 48).to_rgb8();
    let styled = sim.image(&output["images"][0]).await.to_rgb8();
    assert_ne!(styled, original, "the style changes the picture");
}

#[tokio::test]
async fn preprocessors_make_gray_maps_of_the_same_size() {
    let sim = Sim::start(quick()).await;
    for endpoint in [
        "fal-ai/image-preprocessors/canny",
        "fal-ai/imageutils/depth",
        "fal-ai/image-preprocessors/lineart",
    ] {
        let output = sim.run(endpoint, &input()).await;
        assert_eq!(output.as_object().map(|o| o.len()), Some(1), "{output}");
        let image = sim.image(&output["image"]).await;
        assert_eq!(size(&image), (64, 48), "{endpoint}");
        let rgb = image.to_rgb8();
        assert!(
            rgb.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]),
            "{endpoint} is gray"
        );
    }

    let canny = sim
        .run(
            "fal-ai/image-preprocessors/canny",
            &with(
                input(),
                json!({ "low_threshold": 50, "high_threshold": 150 }),
            ),
        )
        .await;
    let edges = sim.image(&canny["image"]).await.to_luma8();
    assert_eq!(edges.get_pixel(32, 24).0[0], 0, "no edge inside the disc");
    assert!(edges.pixels().any(|p| p.0[0] == 255), "the disc's outline");

    let lineart = sim
        .run("fal-ai/image-preprocessors/lineart", &input())
        .await;
    let lines = sim.image(&lineart["image"]).await.to_luma8();
    assert!(lines.get_pixel(32, 24).0[0] > 200, "white where flat");
    assert!(lines.pixels().any(|p| p.0[0] < 100), "dark lines at edges");

    let depth = sim.run("fal-ai/imageutils/depth", &input()).await;
    let depth = sim.image(&depth["image"]).await.to_luma8();
    let values: Vec<u8> = depth.pixels().map(|p| p.0[0]).collect();
    assert_eq!(values.iter().min(), Some(&0), "stretched to the full range");
    assert_eq!(
        values.iter().max(),
        Some(&255),
        "stretched to the full range"
    );
}

#[tokio::test]
async fn inputs_come_from_urls_and_results_can_be_data_uris() {
    let sim = Sim::start(quick()).await;
    // The result of one endpoint feeds the next, fetched over HTTP from the simulator.
    let first = sim.run("fal-ai/esrgan", &input()).await;
    let url = first["image"]["url"].as_str().expect("url");
    assert!(
        url.starts_with(&format!("{}/files/", sim.handle.base_url())),
        "{url}"
    );
    let second = sim.run("fal-ai/esrgan", &json!({ "image_url": url })).await;
    assert_eq!(size(&sim.image(&second["image"]).await), (256, 192));

    let inline = sim
        .run(
            "fal-ai/esrgan",
            &with(input(), json!({ "sync_mode": true })),
        )
        .await;
    let url = inline["image"]["url"].as_str().expect("url");
    assert!(url.starts_with("data:image/png;base64,"), "{}", &url[..40]);
}
