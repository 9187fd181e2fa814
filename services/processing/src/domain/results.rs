//! A finished request's results: each output fal returned streamed into the
//! image service, chunk by chunk, named after the job's input and workflow.

use std::sync::Arc;

use atelier_fal::{FalClient, FalError};
use futures::StreamExt;
use serde_json::Value;

use super::spend::{StoredOutput, actual_cost};
use super::{
    Jobs, failure,
    job::Job,
    outcome::{Outcome, download_outcome},
};
use crate::peers::{ImageDirectory, NewResult, StoreRefusal, StoredImage};

/// Stores what fal returned and finishes the job; for workers and webhooks alike.
#[derive(Clone)]
pub struct Results {
    jobs: Arc<Jobs>,
    images: Arc<dyn ImageDirectory>,
    fal: FalClient,
}

impl Results {
    pub fn new(jobs: Arc<Jobs>, images: Arc<dyn ImageDirectory>, fal: FalClient) -> Self {
        Self { jobs, images, fal }
    }

    /// Streams every output image of fal's `output` into the image service and
    /// finishes the job.
    pub(super) async fn store(&self, row: &Job, output: &Value) -> Outcome {
        let outputs = output_images(output);
        if outputs.is_empty() {
            return Outcome::Fail(failure::Failure {
                code: "no_output".into(),
                message: failure::NO_OUTPUT.into(),
                details: None,
                cause: Some(format!("fal's output has no image: {output}")),
            });
        }
        let base = self.result_name(row).await;
        let mut stored = Vec::with_capacity(outputs.len());
        let mut sizes = Vec::with_capacity(outputs.len());
        for (index, (url, role)) in outputs.iter().enumerate() {
            let name = if outputs.len() > 1 {
                format!("{base}_{}", index + 1)
            } else {
                base.clone()
            };
            match self.store_output(row, index, url, role, name).await {
                Ok(image) => {
                    stored.push(image.id);
                    sizes.push((*role, image.width, image.height));
                }
                Err(outcome) => return outcome,
            }
        }
        let outputs: Vec<StoredOutput<'_>> = sizes
            .iter()
            .map(|(role, width, height)| StoredOutput {
                role,
                width: *width,
                height: *height,
            })
            .collect();
        let cost = match (row.unit_price, row.price_unit.as_deref()) {
            (Some(price), Some(unit)) => actual_cost(price, unit, &outputs),
            _ => None,
        };
        self.jobs.completed(row, &stored, cost).await;
        Outcome::Done
    }

    /// `<input's name without extension>_<workflow id>`: what a job's results are
    /// called (the image service adds the extension of the type it finds).
    async fn result_name(&self, row: &Job) -> String {
        if let Some(input) = &row.input_filename {
            return result_name(input, &row.workflow_id);
        }
        // Jobs from before input names were kept ask the image service.
        let input = self
            .images
            .owned(row.user_id, row.image_id)
            .await
            .ok()
            .flatten()
            .map(|image| image.original_filename)
            .unwrap_or_default();
        result_name(&input, &row.workflow_id)
    }

    /// Streams one output from fal into the image service, chunk by chunk: no
    /// buffer ever holds the whole image. A download that fails mid-way cancels
    /// the store, so nothing half-written is kept.
    async fn store_output(
        &self,
        row: &Job,
        index: usize,
        url: &str,
        role: &str,
        name: String,
    ) -> Result<StoredImage, Outcome> {
        let result = self.fal.download(url).await.map_err(download_outcome)?;
        let mut metadata = serde_json::Map::new();
        metadata.insert("output_role".into(), role.into());
        if let Some(request_id) = &row.fal_request_id {
            metadata.insert("fal_request_id".into(), request_id.clone().into());
        }
        let stored = NewResult {
            user_id: row.user_id,
            job_id: row.id,
            output_index: index,
            source_image_id: row.image_id,
            filename: name,
            mime_type: result.content_type,
            metadata,
            size: result.size,
        };
        // A pump feeds the store from the download, one chunk at a time. When the
        // download fails, the chunk stream is left open (never ended, which would
        // store a truncated image) and the store is dropped, which cancels it.
        let (chunks, queue) = tokio::sync::mpsc::channel(2);
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<FalError>();
        let mut body = result.body;
        let pump = tokio::spawn(async move {
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(chunk) => {
                        if chunks.send(chunk).await.is_err() {
                            return;
                        }
                    }
                    Err(err) => {
                        let _ = failed_tx.send(err);
                        chunks.closed().await;
                        return;
                    }
                }
            }
        });
        let _pump = AbortOnDrop(pump);
        let chunks = Box::pin(tokio_stream::wrappers::ReceiverStream::new(queue));
        let reply = tokio::select! {
            reply = self.images.store_result(stored, chunks) => reply,
            Ok(err) = failed_rx => return Err(download_outcome(err)),
        };
        reply.map_err(|refusal| match refusal {
            StoreRefusal::Invalid(why) => {
                Outcome::fail("result_invalid", failure::result_invalid(&why)).because(why)
            }
            StoreRefusal::Malware(signature) => {
                tracing::warn!(job_id = %row.id, signature, "the result carries malware, the job fails");
                Outcome::fail("result_malware", failure::result_malware(&signature))
                    .because(format!("malware found: {signature}"))
            }
            // The job (or its owner's account) was deleted meanwhile: the image
            // service kept nothing, and there is nothing left to finish.
            StoreRefusal::Gone(why) => {
                tracing::info!(job_id = %row.id, reason = why, "result dropped, its job is gone");
                Outcome::Done
            }
            // Anything else (storage or the connection failing, an internal
            // error) may pass: the job is tried again, and the redelivery
            // resumes the same fal request.
            StoreRefusal::Failed(err) => Outcome::Retry(format!("storing the result: {err}")),
        })
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `<input stem>_<workflow id>`, from an input's display name.
fn result_name(input: &str, workflow_id: &str) -> String {
    let stem = match input.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && !ext.is_empty() && ext.len() <= 5 => stem,
        _ => input,
    };
    let stem = stem.trim();
    if stem.is_empty() {
        workflow_id.to_owned()
    } else {
        format!("{stem}_{workflow_id}")
    }
}

/// The images of a fal output with their role, in fal's order: `image`, `images[]`
/// (role `image`), then `mask_image` (role `mask`).
fn output_images(output: &Value) -> Vec<(String, &'static str)> {
    let mut images = Vec::new();
    if let Some(url) = output.pointer("/image/url").and_then(Value::as_str) {
        images.push((url.to_owned(), "image"));
    }
    for image in output
        .get("images")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(url) = image.get("url").and_then(Value::as_str) {
            images.push((url.to_owned(), "image"));
        }
    }
    if let Some(url) = output.pointer("/mask_image/url").and_then(Value::as_str) {
        images.push((url.to_owned(), "mask"));
    }
    images
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn results_are_named_after_their_input_and_workflow() {
        assert_eq!(
            result_name("IMG_2041.JPG", "esrgan-upscale"),
            "IMG_2041_esrgan-upscale"
        );
        assert_eq!(
            result_name("holiday.photo.png", "rembg"),
            "holiday.photo_rembg"
        );
        assert_eq!(result_name("scan", "rembg"), "scan_rembg");
        assert_eq!(result_name("", "rembg"), "rembg");
        assert_eq!(result_name(".png", "rembg"), ".png_rembg");
    }

    #[test]
    fn outputs_keep_fal_order_and_name_the_mask() {
        let output = json!({
            "image": {"url": "https://v3.fal.media/a.png"},
            "images": [{"url": "https://v3.fal.media/b.png"}, {"no_url": true}],
            "mask_image": {"url": "https://v3.fal.media/m.png"},
        });
        assert_eq!(
            output_images(&output),
            vec![
                ("https://v3.fal.media/a.png".to_owned(), "image"),
                ("https://v3.fal.media/b.png".to_owned(), "image"),
                ("https://v3.fal.media/m.png".to_owned(), "mask"),
            ]
        );
        assert!(output_images(&json!({"seed": 1})).is_empty());
    }
}
