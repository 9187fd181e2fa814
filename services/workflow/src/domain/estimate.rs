//! What a run would produce before it starts: each output's size from the
//! workflow's output description (`output` in the catalogue file) and the
//! parameters, an upper bound of its bytes, its cost at fal's price, and
//! whether it fits the platform's limits.
//!
//! Bytes are an upper bound per format, so a start refused here could not have
//! been stored anyway, and one allowed is not refused later for its size:
//!
//! | output | bytes per pixel |
//! |---|---|
//! | PNG or WebP image | 4 (RGBA, uncompressed; deflate never grows it by more than about 0.1 %) |
//! | PNG or WebP mask (grayscale) | 1 |
//! | JPEG | 0.75 (photos at high quality stay well under; pure noise may not) |
//! | GIF | 1 (8-bit palette) |
//!
//! plus 64 KiB for headers and metadata per file, and for PNG one filter byte
//! per row.

use serde::Deserialize;
use serde_json::{Map, Value};

/// How a workflow's outputs follow from its input and parameters.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// The parameter whose value scales both sides of the input (an upscale
    /// factor); `scale` when absent.
    #[serde(default)]
    pub scale_parameter: Option<String>,
    /// The fixed scale when no parameter sets it (1: the input's size).
    #[serde(default = "one")]
    pub scale: f64,
    /// The parameter giving how many images are made; 1 when absent.
    #[serde(default)]
    pub count_parameter: Option<String>,
    /// The boolean parameter that adds a mask (same size, grayscale).
    #[serde(default)]
    pub mask_parameter: Option<String>,
    /// The parameter choosing the output format; `format` when absent.
    #[serde(default)]
    pub format_parameter: Option<String>,
    /// The output format when no parameter chooses it: `png`, `jpeg`, `webp`
    /// or `gif`.
    pub format: String,
}

fn one() -> f64 {
    1.0
}

/// The limits a result must fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest file fal may return (`FAL_MAX_RESULT_BYTES`).
    pub max_bytes: u64,
    /// The largest image stored, width × height (`MAX_IMAGE_PIXELS`).
    pub max_pixels: u64,
}

/// A price: so much per unit.
#[derive(Clone, Debug, PartialEq)]
pub struct Price {
    pub unit_price: f64,
    pub unit: String,
    pub currency: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// `image` or `mask`.
    pub role: &'static str,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
}

/// What one input would give.
#[derive(Clone, Debug, PartialEq)]
pub struct JobEstimate {
    pub outputs: Vec<Output>,
    pub bytes: u64,
    pub cost: Option<f64>,
    /// `None` when allowed; else why not and the parameter to change (empty
    /// when none would help).
    pub refusal: Option<(String, String)>,
}

const FILE_OVERHEAD: u64 = 64 * 1024;

/// The upper bound of a file's size (see the module documentation).
pub fn file_bytes(format: &str, width: u32, height: u32, mask: bool) -> u64 {
    let pixels = u64::from(width) * u64::from(height);
    let body = match format {
        "jpeg" | "jpg" => pixels * 3 / 4,
        "gif" => pixels,
        "png" => {
            let channels = if mask { 1 } else { 4 };
            let raw = pixels * channels + u64::from(height);
            raw + raw / 1000
        }
        // WebP (lossless or not) and anything unknown: as an uncompressed image.
        _ => {
            let channels = if mask { 1 } else { 4 };
            pixels * channels + pixels * channels / 1000
        }
    };
    body + FILE_OVERHEAD
}

/// A size for people: `12 KB`, `340 MB`, `1.5 GB` (binary multiples).
pub fn human_bytes(bytes: u64) -> String {
    const KB: f64 = 1024.0;
    let b = bytes as f64;
    if b >= KB * KB * KB {
        let gb = b / (KB * KB * KB);
        if gb >= 10.0 {
            format!("{gb:.0} GB")
        } else {
            format!("{gb:.1} GB")
        }
    } else if b >= KB * KB {
        format!("{:.0} MB", b / (KB * KB))
    } else {
        format!("{:.0} KB", (b / KB).max(1.0))
    }
}

fn human_pixels(pixels: u64) -> String {
    let mp = pixels as f64 / 1_000_000.0;
    if mp >= 10.0 || mp.fract() == 0.0 {
        format!("{mp:.0} megapixels")
    } else {
        format!("{mp:.1} megapixels")
    }
}

impl OutputSpec {
    fn scale_of(&self, parameters: &Map<String, Value>) -> f64 {
        self.scale_parameter
            .as_ref()
            .and_then(|name| parameters.get(name))
            .and_then(Value::as_f64)
            .filter(|scale| scale.is_finite() && *scale > 0.0)
            .unwrap_or(self.scale)
    }

    fn count_of(&self, parameters: &Map<String, Value>) -> u32 {
        self.count_parameter
            .as_ref()
            .and_then(|name| parameters.get(name))
            .and_then(Value::as_u64)
            .map(|count| count.clamp(1, 1000) as u32)
            .unwrap_or(1)
    }

    fn format_of<'a>(&'a self, parameters: &'a Map<String, Value>) -> &'a str {
        self.format_parameter
            .as_ref()
            .and_then(|name| parameters.get(name))
            .and_then(Value::as_str)
            .unwrap_or(&self.format)
    }

    fn with_mask(&self, parameters: &Map<String, Value>) -> bool {
        self.mask_parameter
            .as_ref()
            .and_then(|name| parameters.get(name))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// The estimate for an input of `width`×`height` with the (validated)
    /// `parameters`.
    pub fn estimate(
        &self,
        width: u32,
        height: u32,
        parameters: &Map<String, Value>,
        price: Option<&Price>,
        limits: Limits,
    ) -> JobEstimate {
        let scale = self.scale_of(parameters);
        let side = |n: u32| {
            (f64::from(n) * scale)
                .round()
                .clamp(1.0, f64::from(u32::MAX)) as u32
        };
        let (out_width, out_height) = (side(width), side(height));
        let format = self.format_of(parameters);
        let count = self.count_of(parameters);
        let mut outputs: Vec<Output> = (0..count)
            .map(|_| Output {
                role: "image",
                width: out_width,
                height: out_height,
                bytes: file_bytes(format, out_width, out_height, false),
            })
            .collect();
        if self.with_mask(parameters) {
            outputs.push(Output {
                role: "mask",
                width: out_width,
                height: out_height,
                bytes: file_bytes(format, out_width, out_height, true),
            });
        }
        let bytes = outputs.iter().map(|output| output.bytes).sum();
        let images = outputs.iter().filter(|output| output.role == "image");
        let cost = price.and_then(|price| match price.unit.as_str() {
            "image" | "images" => Some(price.unit_price * f64::from(count)),
            "megapixels" | "megapixel" => Some(
                price.unit_price
                    * images
                        .map(|output| {
                            f64::from(output.width) * f64::from(output.height) / 1_000_000.0
                        })
                        .sum::<f64>(),
            ),
            _ => None,
        });
        let refusal = self.refusal(&outputs, format, limits);
        JobEstimate {
            outputs,
            bytes,
            cost: cost.map(round_cost),
            refusal,
        }
    }

    /// Why the largest output does not fit, if it does not, and the parameter
    /// to change.
    fn refusal(
        &self,
        outputs: &[Output],
        format: &str,
        limits: Limits,
    ) -> Option<(String, String)> {
        let largest = outputs.iter().max_by_key(|output| output.bytes)?;
        let pixels = u64::from(largest.width) * u64::from(largest.height);
        let parameter = |name: &Option<String>| {
            name.as_ref()
                .map(|name| format!("parameters.{name}"))
                .unwrap_or_default()
        };
        let size = format!(
            "the result would be {}×{} pixels (about {})",
            largest.width,
            largest.height,
            human_bytes(largest.bytes)
        );
        if pixels > limits.max_pixels {
            return Some((
                format!(
                    "{size}, over the largest result of {}",
                    human_pixels(limits.max_pixels)
                ),
                parameter(&self.scale_parameter),
            ));
        }
        if largest.bytes > limits.max_bytes {
            // A smaller format helps before a smaller size does.
            let field = if self.format_parameter.is_some() && !matches!(format, "jpeg" | "jpg") {
                parameter(&self.format_parameter)
            } else {
                parameter(&self.scale_parameter)
            };
            return Some((
                format!(
                    "{size}, over the largest result of {}",
                    human_bytes(limits.max_bytes)
                ),
                field,
            ));
        }
        None
    }
}

/// Costs to a millionth of the currency unit, so sums do not show float noise.
pub fn round_cost(cost: f64) -> f64 {
    (cost * 1_000_000.0).round() / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const LIMITS: Limits = Limits {
        max_bytes: 512 * 1024 * 1024,
        max_pixels: 100_000_000,
    };

    fn params(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("object")
    }

    fn esrgan() -> OutputSpec {
        serde_json::from_value(json!({
            "scale_parameter": "scale", "format_parameter": "output_format", "format": "png"
        }))
        .expect("spec")
    }

    #[test]
    fn an_upscale_scales_both_sides_and_bounds_the_bytes_by_format() {
        let png = esrgan().estimate(
            6000,
            4000,
            &params(json!({"scale": 2, "output_format": "png"})),
            None,
            LIMITS,
        );
        assert_eq!(png.outputs.len(), 1);
        assert_eq!((png.outputs[0].width, png.outputs[0].height), (12000, 8000));
        // 96 MP × 4 B: at least the raw RGBA, within 1 % above it.
        assert!(
            png.bytes >= 384_000_000 && png.bytes < 388_000_000,
            "{}",
            png.bytes
        );
        assert_eq!(png.cost, None);
        assert_eq!(png.refusal, None, "96 MP and ~370 MB fit 100 MP and 512 MB");

        let jpeg = esrgan().estimate(
            6000,
            4000,
            &params(json!({"scale": 2, "output_format": "jpeg"})),
            None,
            LIMITS,
        );
        assert!(jpeg.bytes < png.bytes / 4);
        // The JPEG fal really made of this (23 132 605 bytes) is under the bound.
        assert!(jpeg.bytes > 23_132_605);
    }

    #[test]
    fn too_many_pixels_names_the_scale_and_says_why() {
        let refused = esrgan().estimate(
            6000,
            4000,
            &params(json!({"scale": 4, "output_format": "png"})),
            None,
            LIMITS,
        );
        let (reason, field) = refused.refusal.expect("refused");
        assert_eq!(field, "parameters.scale");
        assert_eq!(
            reason,
            "the result would be 24000×16000 pixels (about 1.4 GB), over the largest result of 100 megapixels"
        );
    }

    #[test]
    fn too_many_bytes_names_the_format_first() {
        let limits = Limits {
            max_bytes: 100 * 1024 * 1024,
            max_pixels: 100_000_000,
        };
        let refused = esrgan().estimate(
            6000,
            4000,
            &params(json!({"scale": 2, "output_format": "png"})),
            None,
            limits,
        );
        let (reason, field) = refused.refusal.expect("refused");
        assert_eq!(field, "parameters.output_format");
        assert!(
            reason.ends_with("over the largest result of 100 MB"),
            "{reason}"
        );
        let jpeg = esrgan().estimate(
            6000,
            4000,
            &params(json!({"scale": 2, "output_format": "jpeg"})),
            None,
            limits,
        );
        assert_eq!(jpeg.refusal, None);
    }

    #[test]
    fn masks_and_image_counts_add_outputs_and_prices_follow_the_unit() {
        let cutout: OutputSpec = serde_json::from_value(json!({
            "format_parameter": "output_format", "format": "png", "mask_parameter": "output_mask"
        }))
        .expect("spec");
        let per_image = Price {
            unit_price: 0.002,
            unit: "image".into(),
            currency: "USD".into(),
        };
        let with_mask = cutout.estimate(
            4000,
            3000,
            &params(json!({"output_format": "png", "output_mask": true})),
            Some(&per_image),
            LIMITS,
        );
        let roles: Vec<_> = with_mask.outputs.iter().map(|output| output.role).collect();
        assert_eq!(roles, ["image", "mask"]);
        assert!(with_mask.outputs[1].bytes < with_mask.outputs[0].bytes / 3);
        assert_eq!(with_mask.cost, Some(0.002), "the mask is not billed");

        let generator: OutputSpec = serde_json::from_value(json!({
            "count_parameter": "num_images", "format_parameter": "output_format", "format": "jpeg"
        }))
        .expect("spec");
        let per_megapixel = Price {
            unit_price: 0.025,
            unit: "megapixels".into(),
            currency: "USD".into(),
        };
        let three = generator.estimate(
            2000,
            1000,
            &params(json!({"num_images": 3})),
            Some(&per_megapixel),
            LIMITS,
        );
        assert_eq!(three.outputs.len(), 3);
        assert_eq!(three.cost, Some(0.15), "3 images × 2 MP × 0.025");
        let per_second = Price {
            unit_price: 0.001,
            unit: "second".into(),
            currency: "USD".into(),
        };
        assert_eq!(
            generator
                .estimate(10, 10, &Map::new(), Some(&per_second), LIMITS)
                .cost,
            None,
            "GPU time cannot be known before the run"
        );
    }

    #[test]
    fn sizes_read_as_people_say_them() {
        assert_eq!(human_bytes(512 * 1024 * 1024), "512 MB");
        assert_eq!(human_bytes(1_536_000_000), "1.4 GB");
        assert_eq!(human_bytes(2_000), "2 KB");
    }
}
