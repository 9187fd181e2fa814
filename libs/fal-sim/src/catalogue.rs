//! The endpoints the simulator runs: one table from endpoint id to the function that
//! reads and checks its input (as fal's model does, field by field) into a [`Job`]; then
//! [`run`] fetches the image, applies the job's operation and answers in the endpoint's
//! output shape.

use std::time::Instant;

use base64::Engine as _;
use image::DynamicImage;
use serde_json::{Value, json};

use crate::{
    error::{Failure, FieldError},
    files::Files,
    imaging::{self, Format, ImagingError},
    input,
    params::Params,
};

/// One endpoint: its id, how it reads its input, and its price.
pub(crate) struct Endpoint {
    pub id: &'static str,
    read: fn(&mut Params<'_>) -> Job,
    /// The simulator's fixed unit price (USD) and fal's billing unit for it:
    /// `image` (per output image), `megapixels` (per output megapixel) or
    /// `second` (of GPU time). The values are the simulator's own, shaped like
    /// fal's; fal's real prices come from fal's platform API.
    pub price: (f64, &'static str),
}

/// Every endpoint the simulator serves.
static CATALOGUE: &[Endpoint] = &[
    Endpoint {
        id: "fal-ai/clarity-upscaler",
        read: clarity_upscaler,
        price: (0.03, "megapixels"),
    },
    Endpoint {
        id: "fal-ai/esrgan",
        read: esrgan,
        price: (0.00111, "second"),
    },
    Endpoint {
        id: "fal-ai/aura-sr",
        read: aura_sr,
        price: (0.00125, "megapixels"),
    },
    Endpoint {
        id: "fal-ai/birefnet",
        read: birefnet,
        price: (0.002, "image"),
    },
    Endpoint {
        id: "fal-ai/imageutils/rembg",
        read: rembg,
        price: (0.001, "image"),
    },
    Endpoint {
        id: "fal-ai/flux/dev/image-to-image",
        read: flux_image_to_image,
        price: (0.025, "megapixels"),
    },
    Endpoint {
        id: "fal-ai/image-preprocessors/canny",
        read: canny,
        price: (0.00111, "second"),
    },
    Endpoint {
        id: "fal-ai/imageutils/depth",
        read: depth,
        price: (0.00111, "second"),
    },
    Endpoint {
        id: "fal-ai/image-preprocessors/lineart",
        read: lineart,
        price: (0.00111, "second"),
    },
    Endpoint {
        id: "workflows/atelier/upscale-cutout",
        read: upscale_cutout,
        price: (0.02, "image"),
    },
];

/// Every endpoint, in the catalogue's order.
pub(crate) fn all() -> &'static [Endpoint] {
    CATALOGUE
}

/// The endpoint with exactly this id.
pub(crate) fn find(id: &str) -> Option<&'static Endpoint> {
    CATALOGUE.iter().find(|e| e.id == id)
}

const SEEDS: std::ops::RangeInclusive<i64> = 0..=i64::MAX;

fn seed(p: &mut Params<'_>) -> Option<u64> {
    p.optional_integer("seed", SEEDS)
        .and_then(|s| u64::try_from(s).ok())
}

fn clarity_upscaler(p: &mut Params<'_>) -> Job {
    p.optional_string("prompt");
    p.optional_string("negative_prompt");
    let factor = p.number("upscale_factor", 2.0, 1.0..=4.0);
    p.number("creativity", 0.35, 0.0..=1.0);
    p.number("resemblance", 0.6, 0.0..=1.0);
    p.number("guidance_scale", 4.0, 0.0..=20.0);
    p.integer("num_inference_steps", 18, 4..=50);
    p.boolean("enable_safety_checker", true);
    Job {
        op: Op::Upscale {
            factor,
            sharpen: true,
        },
        format: Format::Png,
        output: Output::ImageSeedTimings,
        seed: seed(p),
    }
}

fn esrgan(p: &mut Params<'_>) -> Job {
    let factor = p.number("scale", 2.0, 1.0..=8.0);
    p.choice(
        "model",
        "RealESRGAN_x4plus",
        &[
            "RealESRGAN_x4plus",
            "RealESRGAN_x2plus",
            "RealESRGAN_x4plus_anime_6B",
            "RealESRGAN_x4_v3",
            "RealESRGAN_x4_wdn_v3",
            "RealESRGAN_x4_anime_v3",
        ],
    );
    p.boolean("face", false);
    p.integer("tile", 0, 0..=4096);
    let format = p.choice("output_format", "png", &["png", "jpeg"]);
    Job {
        op: Op::Upscale {
            factor,
            sharpen: false,
        },
        format: Format::from_name(format).unwrap_or(Format::Png),
        output: Output::Image,
        seed: None,
    }
}

fn aura_sr(p: &mut Params<'_>) -> Job {
    let factor = p.integer_choice("upscale_factor", 4, &[4]);
    p.choice("checkpoint", "v1", &["v1", "v2"]);
    p.boolean("overlapping_tiles", false);
    Job {
        op: Op::Upscale {
            factor: factor as f64,
            sharpen: false,
        },
        format: Format::Png,
        output: Output::ImageTimings,
        seed: None,
    }
}

fn birefnet(p: &mut Params<'_>) -> Job {
    p.choice(
        "model",
        "General Use (Light)",
        &["General Use (Light)", "General Use (Heavy)", "Portrait"],
    );
    p.choice(
        "operating_resolution",
        "1024x1024",
        &["1024x1024", "2048x2048"],
    );
    let format = p.choice("output_format", "png", &["png", "webp", "gif"]);
    let mask = p.boolean("output_mask", false);
    p.boolean("refine_foreground", true);
    Job {
        op: Op::Cutout { crop: false },
        format: Format::from_name(format).unwrap_or(Format::Png),
        output: Output::Cutout { mask },
        seed: None,
    }
}

fn rembg(p: &mut Params<'_>) -> Job {
    let crop = p.boolean("crop_to_bbox", false);
    Job {
        op: Op::Cutout { crop },
        format: Format::Png,
        output: Output::Image,
        seed: None,
    }
}

fn flux_image_to_image(p: &mut Params<'_>) -> Job {
    let prompt = p.required_string("prompt");
    let strength = p.number("strength", 0.95, 0.01..=1.0);
    p.integer("num_inference_steps", 40, 1..=50);
    p.number("guidance_scale", 3.5, 1.0..=20.0);
    let count = p.integer("num_images", 1, 1..=4);
    let format = p.choice("output_format", "jpeg", &["jpeg", "png"]);
    p.boolean("enable_safety_checker", true);
    Job {
        op: Op::Stylise {
            prompt: prompt.clone(),
            strength,
            count: u32::try_from(count).unwrap_or(1),
        },
        format: Format::from_name(format).unwrap_or(Format::Jpeg),
        output: Output::Generated { prompt },
        seed: seed(p),
    }
}

fn canny(p: &mut Params<'_>) -> Job {
    let low = p.integer("low_threshold", 100, 0..=255);
    let high = p.integer("high_threshold", 200, 0..=255);
    Job {
        op: Op::Canny {
            low: low as f32,
            high: high as f32,
        },
        format: Format::Png,
        output: Output::Image,
        seed: None,
    }
}

fn depth(p: &mut Params<'_>) -> Job {
    p.number("a", std::f64::consts::TAU, 0.0..=f64::MAX);
    p.number("bg_th", 0.1, 0.0..=f64::MAX);
    p.boolean("depth_and_normal", false);
    Job {
        op: Op::Depth,
        format: Format::Png,
        output: Output::Image,
        seed: None,
    }
}

fn lineart(p: &mut Params<'_>) -> Job {
    let coarse = p.boolean("coarse", false);
    Job {
        op: Op::Lineart { coarse },
        format: Format::Png,
        output: Output::Image,
        seed: None,
    }
}

fn upscale_cutout(p: &mut Params<'_>) -> Job {
    let factor = p.number("scale", 2.0, 1.0..=4.0);
    Job {
        op: Op::UpscaleCutout { factor },
        format: Format::Png,
        output: Output::Image,
        seed: None,
    }
}

// ---------------------------------------------------------------------------------------
// Jobs

/// A model input, read and checked.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub image_url: String,
    /// Answer with `data:` URIs rather than file URLs.
    pub sync_mode: bool,
    pub job: Job,
}

impl Endpoint {
    /// Reads and checks `input` as the endpoint's model would: every problem at once.
    pub(crate) fn read(&self, input: &Value) -> Result<Spec, Vec<FieldError>> {
        let Value::Object(body) = input else {
            return Err(vec![
                FieldError::body(
                    "model_attributes_type",
                    "Input should be a valid dictionary or object to extract fields from",
                )
                .with_input(input),
            ]);
        };
        let mut p = Params::new(body);
        let spec = self.fields(&mut p);
        p.finish()?;
        Ok(spec)
    }

    /// Every field of the input, as the model reads them.
    fn fields(&self, p: &mut Params<'_>) -> Spec {
        let image_url = p.required_string("image_url");
        let sync_mode = p.boolean("sync_mode", false);
        let job = (self.read)(p);
        Spec {
            image_url,
            sync_mode,
            job,
        }
    }

    /// The endpoint's OpenAPI 3.0 document, shaped as fal's model API serves one: a
    /// `POST /{endpoint_id}` whose request body is the input schema, by reference.
    pub(crate) fn openapi(&self) -> Value {
        let empty = serde_json::Map::new();
        let mut p = Params::describing(&empty);
        self.fields(&mut p);
        let mut input = p.schema().unwrap_or_else(|| json!({ "type": "object" }));
        let name = format!("{}Input", type_name(self.id));
        input["title"] = json!(name);
        json!({
            "openapi": "3.0.4",
            "info": { "title": self.id, "version": "1.0.0" },
            "paths": {
                format!("/{}", self.id): {
                    "post": {
                        "requestBody": {
                            "required": true,
                            "content": { "application/json": {
                                "schema": { "$ref": format!("#/components/schemas/{name}") }
                            } }
                        },
                        "responses": { "200": { "description": "Successful Response" } }
                    }
                }
            },
            "components": { "schemas": { name: input } }
        })
    }
}

/// `fal-ai/image-preprocessors/canny` as a schema name: `ImagePreprocessorsCanny` (the
/// owner names no type).
fn type_name(id: &str) -> String {
    id.split('/')
        .skip(1)
        .flat_map(|segment| segment.split(['-', '_']))
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect()
            })
        })
        .collect()
}

/// What an endpoint does with its image, and how it answers.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    op: Op,
    format: Format,
    output: Output,
    /// The seed asked for; a random one is picked otherwise.
    pub seed: Option<u64>,
}

#[derive(Clone, Debug)]
enum Op {
    Upscale {
        factor: f64,
        sharpen: bool,
    },
    Cutout {
        crop: bool,
    },
    Stylise {
        prompt: String,
        strength: f64,
        count: u32,
    },
    Canny {
        low: f32,
        high: f32,
    },
    Depth,
    Lineart {
        coarse: bool,
    },
    UpscaleCutout {
        factor: f64,
    },
}

/// The output shapes.
#[derive(Clone, Debug)]
enum Output {
    /// `{image}`
    Image,
    /// `{image, timings}`
    ImageTimings,
    /// `{image, seed, timings}`
    ImageSeedTimings,
    /// `{image, mask_image?}`
    Cutout { mask: bool },
    /// `{images, seed, prompt, has_nsfw_concepts, timings}`
    Generated { prompt: String },
}

/// What an operation made.
struct Rendered {
    images: Vec<DynamicImage>,
    mask: Option<DynamicImage>,
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Self::Upscale { .. } => "upscale",
            Self::Cutout { .. } => "background removal",
            Self::Stylise { .. } => "image-to-image",
            Self::Canny { .. } => "canny edges",
            Self::Depth => "depth estimation",
            Self::Lineart { .. } => "line art",
            Self::UpscaleCutout { .. } => "upscale and background removal",
        }
    }

    fn apply(&self, image: &DynamicImage, seed: u64) -> Result<Rendered, ImagingError> {
        let one = |image: DynamicImage| Rendered {
            images: vec![image],
            mask: None,
        };
        Ok(match self {
            Self::Upscale { factor, sharpen } => {
                let big = imaging::upscale(image, *factor)?;
                one(if *sharpen {
                    imaging::sharpen(&big)
                } else {
                    big
                })
            }
            Self::Cutout { crop } => {
                let (cut, mask) = imaging::cutout(image);
                let cut = if *crop {
                    imaging::crop_to_content(&cut)
                } else {
                    cut
                };
                Rendered {
                    images: vec![DynamicImage::ImageRgba8(cut)],
                    mask: Some(DynamicImage::ImageLuma8(mask)),
                }
            }
            Self::Stylise {
                prompt,
                strength,
                count,
            } => Rendered {
                images: (0..u64::from(*count))
                    .map(|i| imaging::stylise(image, prompt, *strength, seed.wrapping_add(i * 7)))
                    .collect(),
                mask: None,
            },
            Self::Canny { low, high } => {
                one(DynamicImage::ImageLuma8(imaging::canny(image, *low, *high)))
            }
            Self::Depth => one(DynamicImage::ImageLuma8(imaging::depth(image))),
            Self::Lineart { coarse } => {
                one(DynamicImage::ImageLuma8(imaging::lineart(image, *coarse)))
            }
            Self::UpscaleCutout { factor } => {
                let big = imaging::upscale(image, *factor)?;
                one(DynamicImage::ImageRgba8(imaging::cutout(&big).0))
            }
        })
    }
}

/// An encoded result image.
struct Encoded {
    bytes: Vec<u8>,
    width: u32,
    height: u32,
}

fn encode(image: &DynamicImage, format: Format) -> Result<Encoded, ImagingError> {
    Ok(Encoded {
        bytes: imaging::encode(image, format)?,
        width: image.width(),
        height: image.height(),
    })
}

/// What running a job needs from the simulator.
pub(crate) struct Runner<'a> {
    /// Fetches inputs.
    pub http: &'a reqwest::Client,
    /// Keeps results.
    pub files: &'a Files,
    /// The base of result URLs.
    pub base_url: &'a str,
    /// Adds a line to the request's logs.
    pub log: &'a (dyn Fn(&str) + Send + Sync),
}

/// Runs `spec`: fetches its image, applies the operation, stores the results and answers
/// in the endpoint's output shape.
pub(crate) async fn run(runner: &Runner<'_>, spec: Spec, seed: u64) -> Result<Value, Failure> {
    (runner.log)("downloading the input image");
    let bytes = input::fetch(runner.http, &spec.image_url)
        .await
        .map_err(|e| Failure::Model(vec![e]))?;
    (runner.log)(&format!("running {}", spec.job.op.name()));
    let job = spec.job.clone();
    let (images, mask, inference) = tokio::task::spawn_blocking(move || {
        let image = input::decode(&bytes).map_err(|e| Failure::Model(vec![e]))?;
        let started = Instant::now();
        let rendered = job.op.apply(&image, seed).map_err(imaging_failure)?;
        let inference = started.elapsed().as_secs_f64();
        let images = rendered
            .images
            .iter()
            .map(|i| encode(i, job.format))
            .collect::<Result<Vec<_>, _>>()
            .map_err(imaging_failure)?;
        let mask = match (&job.output, rendered.mask) {
            (Output::Cutout { mask: true }, Some(mask)) => {
                Some(encode(&mask, job.format).map_err(imaging_failure)?)
            }
            _ => None,
        };
        Ok::<_, Failure>((images, mask, inference))
    })
    .await
    .map_err(|error| {
        tracing::error!(%error, "image operation panicked");
        Failure::request("runner_server_error")
    })??;

    (runner.log)(&format!(
        "uploading {} result image(s)",
        images.len() + usize::from(mask.is_some())
    ));
    let format = spec.job.format;
    let mut files = Vec::with_capacity(images.len());
    for image in &images {
        files.push(store(runner, image, format, spec.sync_mode).await?);
    }
    let mask = match &mask {
        Some(mask) => Some(store(runner, mask, format, spec.sync_mode).await?),
        None => None,
    };
    let timings = json!({ "inference": inference });
    let mut files = files.into_iter();
    let first = files.next().unwrap_or(Value::Null);
    Ok(match &spec.job.output {
        Output::Image => json!({ "image": first }),
        Output::ImageTimings => json!({ "image": first, "timings": timings }),
        Output::ImageSeedTimings => json!({ "image": first, "seed": seed, "timings": timings }),
        Output::Cutout { .. } => match mask {
            Some(mask) => json!({ "image": first, "mask_image": mask }),
            None => json!({ "image": first }),
        },
        Output::Generated { prompt } => {
            let images: Vec<Value> = std::iter::once(first).chain(files).collect();
            json!({
                "has_nsfw_concepts": vec![false; images.len()],
                "images": images,
                "seed": seed,
                "prompt": prompt,
                "timings": timings,
            })
        }
    })
}

fn imaging_failure(error: ImagingError) -> Failure {
    match error {
        ImagingError::TooLarge { width, height } => Failure::Model(vec![
            FieldError::field(
                "image_url",
                "image_too_large",
                format!(
                    "The result would be {width}x{height}, more than {} megapixels.",
                    imaging::MAX_OUTPUT_PIXELS / 1_000_000
                ),
            )
            .with_ctx(json!({ "max_pixels": imaging::MAX_OUTPUT_PIXELS })),
        ]),
        other => {
            tracing::error!(error = %other, "image operation failed");
            Failure::request("runner_server_error")
        }
    }
}

/// Keeps a result and describes it as fal's `File`/`Image` objects do.
async fn store(
    runner: &Runner<'_>,
    image: &Encoded,
    format: Format,
    sync: bool,
) -> Result<Value, Failure> {
    let (url, file_name) = if sync {
        let data = base64::engine::general_purpose::STANDARD.encode(&image.bytes);
        let name = format!("{}.{}", uuid::Uuid::new_v4().simple(), format.extension());
        (
            format!("data:{};base64,{data}", format.content_type()),
            name,
        )
    } else {
        let name = runner
            .files
            .store(&image.bytes, format)
            .await
            .map_err(|error| {
                tracing::error!(%error, "storing a result failed");
                Failure::request("runner_server_error")
            })?;
        (format!("{}/files/{name}", runner.base_url), name)
    };
    Ok(json!({
        "url": url,
        "content_type": format.content_type(),
        "file_name": file_name,
        "file_size": image.bytes.len(),
        "width": image.width,
        "height": image.height,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_parse_as_app_ids() {
        for (i, endpoint) in CATALOGUE.iter().enumerate() {
            assert!(
                CATALOGUE[i + 1..].iter().all(|e| e.id != endpoint.id),
                "{} twice",
                endpoint.id
            );
            assert!(
                crate::routes::AppPath::parse(endpoint.id).is_some(),
                "{}",
                endpoint.id
            );
        }
    }

    #[test]
    fn inputs_are_checked_like_fal() {
        let esrgan = find("fal-ai/esrgan").expect("esrgan");
        let errors = esrgan
            .read(&json!({ "scale": "big", "output_format": "bmp" }))
            .expect_err("bad input");
        let fields: Vec<_> = errors.iter().map(|e| (e.loc[1].clone(), e.kind)).collect();
        assert_eq!(
            fields,
            [
                (json!("image_url"), "missing"),
                (json!("scale"), "float_type"),
                (json!("output_format"), "literal_error"),
            ]
        );
        let flux = find("fal-ai/flux/dev/image-to-image").expect("flux");
        let errors = flux
            .read(&json!({ "image_url": "data:," }))
            .expect_err("no prompt");
        assert_eq!(errors[0].loc, [json!("body"), json!("prompt")]);
        assert!(flux.read(&json!([1, 2])).is_err());
        assert!(
            find("fal-ai/aura-sr")
                .expect("aura")
                .read(&json!({ "image_url": "x", "upscale_factor": 2 }))
                .is_err()
        );
    }

    #[test]
    fn the_published_input_schema_is_what_the_model_reads() {
        let esrgan = find("fal-ai/esrgan").expect("esrgan").openapi();
        let reference = esrgan
            .pointer(
                "/paths/~1fal-ai~1esrgan/post/requestBody/content/application~1json/schema/$ref",
            )
            .and_then(Value::as_str)
            .expect("a reference to the input");
        assert_eq!(reference, "#/components/schemas/EsrganInput");
        let input = &esrgan["components"]["schemas"]["EsrganInput"];
        assert_eq!(
            input["x-fal-order-properties"],
            json!([
                "image_url",
                "sync_mode",
                "scale",
                "model",
                "face",
                "tile",
                "output_format"
            ])
        );
        assert_eq!(input["required"], json!(["image_url"]));
        assert_eq!(
            input["properties"]["scale"],
            json!({ "type": "number", "minimum": 1, "maximum": 8, "default": 2 })
        );
        assert_eq!(input["properties"]["model"]["enum"][1], "RealESRGAN_x2plus");
        assert_eq!(
            input["properties"]["tile"],
            json!({ "type": "integer", "minimum": 0, "maximum": 4096, "default": 0 })
        );
        let depth = find("fal-ai/imageutils/depth").expect("depth").openapi();
        assert_eq!(
            depth["components"]["schemas"]["ImageutilsDepthInput"]["properties"]["a"],
            json!({ "type": "number", "minimum": 0, "default": std::f64::consts::TAU }),
            "no maximum for an unbounded field"
        );

        // Every field at its published default (and the required ones given) is an
        // input the model takes.
        for endpoint in all() {
            let openapi = endpoint.openapi();
            let schemas = openapi["components"]["schemas"]
                .as_object()
                .expect("schemas");
            let (_, input) = schemas.iter().next().expect("the input schema");
            let mut body = serde_json::Map::new();
            for (name, field) in input["properties"].as_object().expect("properties") {
                let value = match field.get("default") {
                    Some(default) => default.clone(),
                    None => json!("data:,"),
                };
                body.insert(name.clone(), value);
            }
            body.remove("seed");
            assert!(
                endpoint.read(&Value::Object(body)).is_ok(),
                "{}: defaults refused",
                endpoint.id
            );
        }
    }
}
