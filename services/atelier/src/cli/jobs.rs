//! `atelier workflows`, `jobs`, `watch` and `download`.

use std::{path::PathBuf, sync::Arc};

use clap::Args;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::{
    Common,
    api::{self, Api},
    error::{CliError, Exit, Result},
    events::{self, Update},
    files, print_json, print_table,
    progress::Progress,
};

#[derive(Args, Debug)]
pub struct JobsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Only jobs in these states (pending, queued, submitted, processing, completed,
    /// failed, cancelled; comma-separated or repeated)
    #[arg(long, value_delimiter = ',')]
    pub status: Vec<String>,
    /// Only jobs of this workflow
    #[arg(long, short)]
    pub workflow: Option<String>,
    /// How many jobs to list at most
    #[arg(long, short = 'n', default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub common: Common,
    /// The job's id
    pub job: String,
}

#[derive(Args, Debug)]
pub struct DownloadArgs {
    #[command(flatten)]
    pub common: Common,
    /// The job's id
    pub job: String,
    /// The directory to write to [default: the current one]
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// An RFC 3339 time to the second, as a table shows it (`2026-05-01 12:00:00`).
fn short_time(rfc3339: &str) -> String {
    rfc3339.get(..19).unwrap_or(rfc3339).replacen('T', " ", 1)
}

/// The parameter names of a workflow's schema, required ones marked `*`, with
/// their defaults.
fn parameter_summary(workflow: &Value) -> String {
    let schema = &workflow["parameters_schema"];
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = schema["properties"].as_object() else {
        return String::new();
    };
    properties
        .iter()
        .map(|(name, property)| {
            let mut shown = name.clone();
            if required.contains(&name.as_str()) {
                shown.push('*');
            }
            // Short defaults only: a long prompt would swamp the table.
            if let Some(default) = workflow["defaults"]
                .get(name)
                .or_else(|| property.get("default"))
                .map(Value::to_string)
                .filter(|default| default.chars().count() <= 24)
            {
                shown.push_str(&format!("={default}"));
            }
            shown
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn workflows(common: Common) -> Result<()> {
    let api = Api::new(&common)?;
    let list: Value = api.get("/api/workflows").await?;
    let workflows = list["workflows"].as_array().cloned().unwrap_or_default();
    if common.json {
        return print_json(&Value::Array(workflows));
    }
    let rows: Vec<Vec<String>> = workflows
        .iter()
        .map(|workflow| {
            vec![
                text(workflow, "id"),
                text(workflow, "name"),
                text(workflow, "category"),
                parameter_summary(workflow),
            ]
        })
        .collect();
    print_table(
        &["ID", "NAME", "CATEGORY", "PARAMETERS (* required)"],
        &rows,
    );
    Ok(())
}

pub async fn jobs(args: JobsArgs) -> Result<()> {
    let api = Api::new(&args.common)?;
    api.require_credentials()?;
    let limit = args.limit as usize;
    let mut jobs: Vec<Value> = Vec::new();
    let mut page_token: Option<String> = None;
    while jobs.len() < limit {
        let mut query = vec![format!("page_size={}", (limit - jobs.len()).min(100))];
        if !args.status.is_empty() {
            query.push(format!("status={}", api::encode(&args.status.join(","))));
        }
        if let Some(workflow) = &args.workflow {
            query.push(format!("workflow_id={}", api::encode(workflow)));
        }
        if let Some(token) = &page_token {
            query.push(format!("page_token={}", api::encode(token)));
        }
        let page: Value = api
            .get(&format!("/api/processing/jobs?{}", query.join("&")))
            .await?;
        jobs.extend(page["jobs"].as_array().cloned().unwrap_or_default());
        page_token = page["next_page_token"]
            .as_str()
            .filter(|token| !token.is_empty())
            .map(str::to_owned);
        if page_token.is_none() {
            break;
        }
    }
    jobs.truncate(limit);
    if args.common.json {
        return print_json(&Value::Array(jobs));
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            let detail = match job["error"]["message"].as_str() {
                Some(message) => message.to_owned(),
                None => job["outputs"]
                    .as_array()
                    .map(|outputs| match outputs.len() {
                        0 => String::new(),
                        1 => "1 output".into(),
                        n => format!("{n} outputs"),
                    })
                    .unwrap_or_default(),
            };
            vec![
                text(job, "job_id"),
                text(job, "status"),
                text(job, "workflow_id"),
                short_time(&text(job, "created_at")),
                detail,
            ]
        })
        .collect();
    print_table(&["ID", "STATUS", "WORKFLOW", "CREATED", "RESULT"], &rows);
    Ok(())
}

/// The error a final job that did not complete stands for.
pub fn job_failure(job: &Value) -> Option<CliError> {
    let status = events::status_of(job);
    if status == "completed" {
        return None;
    }
    let message = job["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("the job was {status}"));
    Some(CliError::new(Exit::JobFailed, message))
}

pub async fn watch(args: WatchArgs) -> Result<()> {
    let api = Api::new(&args.common)?;
    api.require_credentials()?;
    let progress = Progress::new(args.common.quiet, args.common.json);
    let bar = progress.job(&args.job);
    bar.message("connecting");
    let streams = Arc::new(Semaphore::new(1));
    let quiet = args.common.quiet || args.common.json;
    let mut last_status = String::new();
    let mut report = |update: Update| {
        bar.update(&update);
        // Without bars, each new status is a line on stderr.
        if let Update::Status { status, .. } = &update
            && *status != last_status
        {
            if !quiet && !progress.shows_bars() {
                eprintln!("{}: {status}", args.job);
            }
            last_status = status.clone();
        }
    };
    let job = events::follow(&api, &args.job, &streams, &mut report)
        .await
        .map_err(|err| err.with_context(format!("job {}", args.job)))?;
    let failure = job_failure(&job);
    bar.finish(match &failure {
        None => "completed".to_owned(),
        Some(err) => format!("{}: {}", events::status_of(&job), err.message),
    });
    if args.common.json {
        print_json(&job)?;
    } else {
        println!("{}", events::status_of(&job));
    }
    match failure {
        Some(err) => Err(err.with_context(format!("job {}", args.job))),
        None => Ok(()),
    }
}

/// Downloads every output of the completed `job` to the path `name` gives for it
/// (output, index); the paths written.
pub async fn download_outputs(
    api: &Api,
    job: &Value,
    name: impl Fn(&Value, usize) -> PathBuf,
) -> Result<Vec<PathBuf>> {
    let job_id = job["job_id"].as_str().unwrap_or_default().to_owned();
    let outputs = job["outputs"].as_array().cloned().unwrap_or_default();
    if outputs.is_empty() {
        return Err(CliError::new(
            Exit::JobFailed,
            format!("job {job_id} has no result to download"),
        ));
    }
    let mut written = Vec::new();
    for (index, output) in outputs.iter().enumerate() {
        let url = output["url"].as_str().unwrap_or_default();
        let response = match api.get_signed(url).await {
            Ok(response) => response,
            // A signed URL may have expired: ask for fresh ones once.
            Err(err) if matches!(err.exit, Exit::Unauthorized | Exit::NotFound) => {
                let fresh = events::status(api, &job_id).await?;
                let url = fresh["outputs"][index]["url"].as_str().unwrap_or_default();
                api.get_signed(url).await?
            }
            Err(err) => return Err(err),
        };
        written.push(files::download_to(response, &name(output, index)).await?);
    }
    Ok(written)
}

pub async fn download(args: DownloadArgs) -> Result<()> {
    let api = Api::new(&args.common)?;
    api.require_credentials()?;
    let job = events::status(&api, &args.job)
        .await
        .map_err(|err| err.with_context(format!("job {}", args.job)))?;
    let status = events::status_of(&job).to_owned();
    if status != "completed" {
        let message = if events::is_final(&status) {
            job_failure(&job).map(|err| err.message).unwrap_or_default()
        } else {
            format!("it is {status}; wait with `atelier watch {}`", args.job)
        };
        return Err(CliError::new(
            Exit::JobFailed,
            format!("job {} has no result: {message}", args.job),
        ));
    }
    let dir = args.out.clone().unwrap_or_else(|| PathBuf::from("."));
    tokio::fs::create_dir_all(&dir).await?;
    let paths = download_outputs(&api, &job, |output, index| {
        let fallback = format!("{}-{index}", args.job);
        let name = output["filename"].as_str().unwrap_or_default();
        dir.join(files::safe_component(name, &fallback))
    })
    .await?;
    if args.common.json {
        return print_json(&json!({
            "job_id": args.job,
            "status": status,
            "files": paths.iter().map(|path| path.display().to_string()).collect::<Vec<_>>(),
        }));
    }
    for path in paths {
        println!("{}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_show_short_times_and_parameters_with_short_defaults() {
        assert_eq!(
            short_time("2026-05-01T12:00:00.123456Z"),
            "2026-05-01 12:00:00"
        );
        assert_eq!(short_time(""), "");
        let workflow = json!({
            "parameters_schema": {
                "required": ["prompt"],
                "properties": {
                    "prompt": {"type": "string"},
                    "scale": {"type": "number", "default": 2},
                    "style": {"type": "string", "default": "a very long default that swamps tables"},
                },
            },
            "defaults": {"scale": 4},
        });
        assert_eq!(parameter_summary(&workflow), "prompt* scale=4 style");
    }
}
