//! `atelier upload` and `atelier process`: files in, results out.
//!
//! `process` checks every file and the parameters first (the server validates them
//! against the workflow's schema before anything is uploaded), uploads the files,
//! starts the jobs as batches, follows each job live, and downloads each result next
//! to its input (or into `--out`). A job that fails does not stop the others; the
//! command then exits with the first failure's code.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use clap::Args;
use futures::{StreamExt, future::join_all};
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use super::{
    Common,
    api::{self, Api},
    check_files,
    error::{CliError, Exit, Problem, ProblemField, Result},
    events::{self, Update},
    files,
    jobs::{download_outputs, job_failure},
    params, print_json,
    progress::{JobBar, Progress},
};

/// Uploads at once.
const PARALLEL_UPLOADS: usize = 4;
/// Event streams open at once (the gateway allows a user 16 by default).
const PARALLEL_STREAMS: usize = 8;
/// Images per batch (the API's limit).
const BATCH_SIZE: usize = 100;

#[derive(Args, Debug)]
pub struct UploadArgs {
    #[command(flatten)]
    pub common: Common,
    /// The images (JPEG, PNG, WebP, GIF or TIFF)
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ProcessArgs {
    #[command(flatten)]
    pub common: Common,
    /// The images to process
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The workflow to run (see `atelier workflows`)
    #[arg(long, short)]
    pub workflow: String,
    /// A parameter, key=value; the value is JSON when it parses as JSON (2, true,
    /// "quoted"), else text. Repeat for more
    #[arg(long = "param", short = 'p', value_name = "KEY=VALUE", value_parser = params::parse_param)]
    pub params: Vec<(String, Value)>,
    /// Write the results into this directory rather than next to each input
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// How soon the jobs run
    #[arg(long, value_parser = ["high", "normal", "low"])]
    pub priority: Option<String>,
}

/// Whether an error stops the whole command rather than one file.
fn is_fatal(err: &CliError) -> bool {
    matches!(err.exit, Exit::Unauthorized | Exit::Unreachable)
}

/// Uploads `file` as the request body; the image document the server answers.
async fn upload_one(api: &Api, file: &Path) -> Result<Value> {
    let name = file
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let size = tokio::fs::metadata(file).await?.len();
    let url = api.url(&format!(
        "/api/images/upload?filename={}",
        api::encode(&name)
    ));
    let response = api
        .send(|http| {
            // Opened per attempt: a retry after a refresh sends the file from the start.
            let body = match std::fs::File::open(file) {
                Ok(opened) => reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(
                    tokio::fs::File::from_std(opened),
                )),
                Err(err) => reqwest::Body::wrap_stream(futures::stream::once(async move {
                    Err::<Vec<u8>, _>(err)
                })),
            };
            http.put(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .header(reqwest::header::CONTENT_LENGTH, size)
                .body(body)
        })
        .await
        .map_err(|err| err.with_context(file.display()))?;
    api::decode(response)
        .await
        .map_err(|err| err.with_context(file.display()))
}

/// Uploads `files`, at most [`PARALLEL_UPLOADS`] at once; each one's outcome in order.
async fn upload_all(api: &Api, files: &[PathBuf]) -> Vec<Result<Value>> {
    futures::stream::iter(files)
        .map(|file| upload_one(api, file))
        .buffered(PARALLEL_UPLOADS)
        .collect()
        .await
}

/// The first failure's error, in input order.
fn first_failure(errors: impl IntoIterator<Item = CliError>) -> Result<()> {
    match errors.into_iter().next() {
        Some(err) => Err(CliError::new(
            err.exit,
            "not every file went through (see above)",
        )),
        None => Ok(()),
    }
}

pub async fn upload(args: UploadArgs) -> Result<()> {
    check_files(&args.files)?;
    let api = Api::new(&args.common)?;
    api.require_credentials()?;
    let outcomes = upload_all(&api, &args.files).await;
    let mut documents = Vec::new();
    let mut failures = Vec::new();
    for (file, outcome) in args.files.iter().zip(outcomes) {
        match outcome {
            Ok(image) => {
                if !args.common.json {
                    println!("{}", image["id"].as_str().unwrap_or_default());
                }
                let mut document = json!({"input": file.display().to_string()});
                document["image_id"] = image["id"].clone();
                document["image"] = image;
                documents.push(document);
            }
            Err(err) if is_fatal(&err) => return Err(err),
            Err(err) => {
                eprintln!("atelier: {err}");
                documents.push(json!({
                    "input": file.display().to_string(),
                    "image_id": null,
                    "error": err.to_json(),
                }));
                failures.push(err);
            }
        }
    }
    if args.common.json {
        print_json(&Value::Array(documents))?;
    }
    first_failure(failures)
}

/// Asks the server whether `parameters` suit `workflow`: "not found" for an
/// unknown workflow, "rejected" with each violation for invalid parameters.
async fn validate(api: &Api, workflow: &str, parameters: &Map<String, Value>) -> Result<()> {
    let result: Value = api
        .post(
            &format!("/api/workflows/{}/validate", api::encode(workflow)),
            &json!({"parameters": parameters}),
        )
        .await
        .map_err(|err| {
            if err.exit == Exit::NotFound {
                CliError::new(
                    Exit::NotFound,
                    format!("no workflow {workflow:?}: see `atelier workflows`"),
                )
            } else {
                err
            }
        })?;
    if result["valid"].as_bool() == Some(true) {
        return Ok(());
    }
    let errors: Vec<ProblemField> = result["violations"]
        .as_array()
        .map(|violations| {
            violations
                .iter()
                .map(|violation| {
                    let pointer = violation["field"].as_str().unwrap_or_default();
                    ProblemField {
                        field: pointer.trim_start_matches('/').replace('/', "."),
                        pointer: pointer.to_owned(),
                        detail: violation["detail"].as_str().unwrap_or_default().to_owned(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let detail = format!("the parameters do not suit workflow {workflow}");
    Err(CliError {
        exit: Exit::Rejected,
        message: detail.clone(),
        problem: Some(Box::new(Problem {
            title: "Invalid parameters".into(),
            status: 422,
            detail,
            errors,
            ..Default::default()
        })),
    })
}

/// What became of one input file.
struct Outcome {
    input: PathBuf,
    image_id: Option<String>,
    job_id: Option<String>,
    status: String,
    results: Vec<PathBuf>,
    error: Option<CliError>,
}

impl Outcome {
    fn failed(input: &Path, status: &str, error: CliError) -> Self {
        Self {
            input: input.to_owned(),
            image_id: None,
            job_id: None,
            status: status.to_owned(),
            results: Vec::new(),
            error: Some(error),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "input": self.input.display().to_string(),
            "image_id": self.image_id,
            "job_id": self.job_id,
            "status": self.status,
            "result_path": self.results.first().map(|path| path.display().to_string()),
            "result_paths": self.results.iter().map(|path| path.display().to_string()).collect::<Vec<_>>(),
            "error": self.error.as_ref().map(|err| err.message.clone()),
            "exit_code": self.error.as_ref().map(|err| err.exit.code()),
        })
    }
}

/// Starts the jobs for `images` (image ids), in batches; each image's job id.
async fn start_jobs(
    api: &Api,
    args: &ProcessArgs,
    parameters: &Map<String, Value>,
    images: &[String],
) -> Result<HashMap<String, String>> {
    let mut jobs = HashMap::new();
    for chunk in images.chunks(BATCH_SIZE) {
        let mut body = json!({
            "image_ids": chunk,
            "workflow_id": args.workflow,
            "parameters": parameters,
        });
        if let Some(priority) = &args.priority {
            body["priority"] = priority.clone().into();
        }
        // One key per batch: a start sent again after a lost answer is the same batch.
        let key = uuid::Uuid::new_v4().to_string();
        let url = api.url("/api/processing/batch");
        let response = api
            .send(|http| http.post(&url).header("idempotency-key", &key).json(&body))
            .await?;
        let batch: Value = api::decode(response).await?;
        for job in batch["jobs"].as_array().into_iter().flatten() {
            if let (Some(image), Some(job)) = (job["image_id"].as_str(), job["job_id"].as_str()) {
                jobs.insert(image.to_owned(), job.to_owned());
            }
        }
    }
    Ok(jobs)
}

/// Follows one job to the end and downloads its results.
async fn finish_job(
    api: &Api,
    args: &ProcessArgs,
    streams: &Arc<Semaphore>,
    mut outcome: Outcome,
    bar: JobBar,
) -> Outcome {
    let Some(job_id) = outcome.job_id.clone() else {
        bar.finish("not started");
        return outcome;
    };
    let mut report = |update: Update| bar.update(&update);
    let job = match events::follow(api, &job_id, streams, &mut report).await {
        Ok(job) => job,
        Err(err) => {
            bar.finish(format!("error: {}", err.message));
            outcome.error = Some(err);
            return outcome;
        }
    };
    outcome.status = events::status_of(&job).to_owned();
    if let Some(err) = job_failure(&job) {
        bar.finish(format!("{}: {}", outcome.status, err.message));
        outcome.error = Some(err);
        return outcome;
    }
    bar.message("downloading");
    let input = outcome.input.clone();
    let downloaded = download_outputs(api, &job, |output, index| {
        let mime = output["mime_type"].as_str().unwrap_or_default();
        let name = output["filename"].as_str().unwrap_or_default();
        files::result_path(
            &input,
            args.out.as_deref(),
            &args.workflow,
            output["role"].as_str(),
            index,
            &files::extension(mime, name),
        )
    })
    .await;
    match downloaded {
        Ok(paths) => {
            bar.finish(match paths.first() {
                Some(path) => format!("→ {}", path.display()),
                None => "completed".into(),
            });
            outcome.results = paths;
        }
        Err(err) => {
            bar.finish(format!("download failed: {}", err.message));
            outcome.error = Some(err);
        }
    }
    outcome
}

pub async fn process(args: ProcessArgs) -> Result<()> {
    let parameters = params::collect(&args.params).map_err(CliError::usage)?;
    check_files(&args.files)?;
    if let Some(out) = &args.out {
        tokio::fs::create_dir_all(out).await.map_err(|err| {
            CliError::unexpected(format!("cannot create {}: {err}", out.display()))
        })?;
    }
    let api = Api::new(&args.common)?;
    api.require_credentials()?;
    validate(&api, &args.workflow, &parameters).await?;

    let progress = Progress::new(args.common.quiet, args.common.json);
    let bars: Vec<JobBar> = args
        .files
        .iter()
        .map(|file| progress.job(&file.display().to_string()))
        .collect();
    let uploads = upload_all(&api, &args.files).await;
    let mut outcomes = Vec::with_capacity(args.files.len());
    for ((file, upload), bar) in args.files.iter().zip(uploads).zip(&bars) {
        match upload {
            Ok(image) => {
                bar.message("starting");
                outcomes.push(Outcome {
                    input: file.clone(),
                    image_id: image["id"].as_str().map(str::to_owned),
                    job_id: None,
                    status: "uploaded".into(),
                    results: Vec::new(),
                    error: None,
                });
            }
            Err(err) if is_fatal(&err) => return Err(err),
            Err(err) => {
                bar.finish(format!("upload failed: {}", err.message));
                outcomes.push(Outcome::failed(file, "not_started", err));
            }
        }
    }
    let images: Vec<String> = outcomes
        .iter()
        .filter_map(|outcome| outcome.image_id.clone())
        .collect();
    if !images.is_empty() {
        let jobs = start_jobs(&api, &args, &parameters, &images).await?;
        for outcome in &mut outcomes {
            if let Some(image) = &outcome.image_id {
                outcome.job_id = jobs.get(image).cloned();
                if outcome.job_id.is_none() {
                    outcome.error = Some(CliError::unexpected("the server started no job for it"));
                }
            }
        }
    }
    let streams = Arc::new(Semaphore::new(PARALLEL_STREAMS));
    let outcomes: Vec<Outcome> = join_all(
        outcomes
            .into_iter()
            .zip(bars)
            .map(|(outcome, bar)| finish_job(&api, &args, &streams, outcome, bar)),
    )
    .await;

    if args.common.json {
        print_json(&Value::Array(
            outcomes.iter().map(Outcome::to_json).collect(),
        ))?;
    } else {
        for outcome in &outcomes {
            match &outcome.error {
                None => {
                    let results: Vec<String> = outcome
                        .results
                        .iter()
                        .map(|path| path.display().to_string())
                        .collect();
                    println!("{} → {}", outcome.input.display(), results.join(", "));
                }
                Some(err) => eprintln!("atelier: {}: {err}", outcome.input.display()),
            }
        }
    }
    let failures: Vec<CliError> = outcomes
        .into_iter()
        .filter_map(|outcome| outcome.error)
        .collect();
    let count = failures.len();
    match failures.into_iter().next() {
        None => Ok(()),
        Some(first) => Err(CliError::new(
            first.exit,
            format!("{count} of {} files failed", args.files.len()),
        )),
    }
}
