//! Following a job until it is final: its Server-Sent Events stream
//! (`/api/processing/{id}/events`), resumed with `Last-Event-ID` when it breaks off,
//! and its status read after each stream ends (the truth the stream only reports).
//! When the stream cannot be had (too many open, or it keeps failing) the status is
//! polled instead.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::Semaphore;

use super::{
    api::{self, Api},
    error::{Exit, Result},
};

/// A stream quiet for this long (the server sends a comment every 15 s) is dead.
const IDLE_TIMEOUT: Duration = Duration::from_secs(45);
/// Streams that end without the job being final before the status is polled instead.
const MAX_RECONNECTS: u32 = 8;
/// How often the status is read when polling.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The states in which a job stays.
pub fn is_final(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled")
}

/// One event of a `text/event-stream`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// An incremental `text/event-stream` parser (the WHATWG rules the CLI needs:
/// `id`, `event`, multi-line `data`, comments, CR LF or LF line ends).
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// Feeds `bytes`; the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if self.has_data {
                    events.push(std::mem::take(&mut self.current));
                } else {
                    self.current = SseEvent::default();
                }
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line.as_ref(), ""),
            };
            match field {
                "id" => self.current.id = Some(value.to_owned()),
                "event" => self.current.event = value.to_owned(),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        events
    }
}

/// What a follower reports as the job moves.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// The job's status, with its place in the queue when known.
    Status {
        status: String,
        queue_position: Option<i64>,
    },
    /// How far along the job is, 0 to 1.
    Progress(f64),
}

/// The update a stream event stands for, if any.
fn update_of(event: &SseEvent) -> Option<Update> {
    let data: Value = serde_json::from_str(&event.data).ok()?;
    if let Some(progress) = data.get("progress").and_then(Value::as_f64)
        && event.event == "progress"
    {
        return Some(Update::Progress(progress));
    }
    let status = data.get("status").and_then(Value::as_str)?;
    Some(Update::Status {
        status: status.to_owned(),
        queue_position: data.get("queue_position").and_then(Value::as_i64),
    })
}

/// The job's status document (`GET /api/processing/{id}/status`).
pub async fn status(api: &Api, job_id: &str) -> Result<Value> {
    api.get(&format!("/api/processing/{}/status", api::encode(job_id)))
        .await
}

pub fn status_of(job: &Value) -> &str {
    job.get("status")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Follows `job_id` until it is final, telling `report` of each change; the final
/// status document. `streams` bounds the event streams open at once (the server
/// allows a user so many).
pub async fn follow(
    api: &Api,
    job_id: &str,
    streams: &Arc<Semaphore>,
    report: &mut (dyn FnMut(Update) + Send),
) -> Result<Value> {
    let mut last_event_id: Option<String> = None;
    let mut reconnects = 0;
    let mut polling = false;
    loop {
        if !polling {
            match stream_once(api, job_id, streams, &mut last_event_id, report).await {
                Ok(true) => {}
                Ok(false) => reconnects += 1,
                Err(err) if matches!(err.exit, Exit::NotFound | Exit::Unauthorized) => {
                    return Err(err);
                }
                // Too many streams open: this one polls.
                Err(err) if err.exit == Exit::Limited => polling = true,
                Err(_) => reconnects += 1,
            }
            if reconnects > MAX_RECONNECTS {
                polling = true;
            }
        }
        let job = status(api, job_id).await?;
        let current = status_of(&job).to_owned();
        report(Update::Status {
            status: current.clone(),
            queue_position: job.get("queue_position").and_then(Value::as_i64),
        });
        if is_final(&current) {
            return Ok(job);
        }
        let pause = if polling {
            POLL_INTERVAL
        } else {
            Duration::from_millis(250 * u64::from(reconnects.min(8)))
        };
        tokio::time::sleep(pause).await;
    }
}

/// Reads the event stream once, from after `last_event_id`, until it ends; whether
/// it reported a final status.
async fn stream_once(
    api: &Api,
    job_id: &str,
    streams: &Arc<Semaphore>,
    last_event_id: &mut Option<String>,
    report: &mut (dyn FnMut(Update) + Send),
) -> Result<bool> {
    let _slot = streams
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| super::error::CliError::unexpected("the stream limit closed"))?;
    let url = api.url(&format!("/api/processing/{}/events", api::encode(job_id)));
    let resume = last_event_id.clone();
    let response = api
        .send(|http| {
            let request = http
                .get(&url)
                .header(reqwest::header::ACCEPT, "text/event-stream");
            match &resume {
                Some(id) => request.header("last-event-id", id),
                None => request,
            }
        })
        .await?;
    let mut body = response.bytes_stream();
    let mut parser = SseParser::default();
    loop {
        let chunk = match tokio::time::timeout(IDLE_TIMEOUT, body.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            // Ended, broke off, or went quiet: the caller reads the status.
            Ok(None) | Ok(Some(Err(_))) | Err(_) => return Ok(false),
        };
        for event in parser.feed(&chunk) {
            if let Some(id) = &event.id {
                *last_event_id = Some(id.clone());
            }
            if let Some(update) = update_of(&event) {
                let done = matches!(&update, Update::Status { status, .. } if is_final(status));
                report(update);
                if done {
                    return Ok(true);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_reads_events_split_anywhere() {
        let text = ": keep-alive\r\nid: 1\r\nevent: created\r\ndata: {\"status\":\"pending\"}\r\n\r\n\
                    id: 2\nevent: status\ndata: {\"status\":\n\ndata:line one\ndata: line two\n\n";
        let mut whole = SseParser::default();
        let expected = whole.feed(text.as_bytes());
        assert_eq!(
            expected,
            vec![
                SseEvent {
                    id: Some("1".into()),
                    event: "created".into(),
                    data: "{\"status\":\"pending\"}".into(),
                },
                SseEvent {
                    id: Some("2".into()),
                    event: "status".into(),
                    data: "{\"status\":".into(),
                },
                SseEvent {
                    id: None,
                    event: String::new(),
                    data: "line one\nline two".into(),
                },
            ]
        );
        // Byte by byte gives the same events.
        let mut split = SseParser::default();
        let events: Vec<_> = text
            .as_bytes()
            .iter()
            .flat_map(|byte| split.feed(std::slice::from_ref(byte)))
            .collect();
        assert_eq!(events, expected);
    }

    #[test]
    fn events_become_updates() {
        let event = |kind: &str, data: &str| SseEvent {
            id: Some("3".into()),
            event: kind.into(),
            data: data.into(),
        };
        assert_eq!(
            update_of(&event(
                "status",
                r#"{"status":"queued","queue_position":4,"seq":3}"#
            )),
            Some(Update::Status {
                status: "queued".into(),
                queue_position: Some(4),
            })
        );
        assert_eq!(
            update_of(&event("progress", r#"{"progress":0.5}"#)),
            Some(Update::Progress(0.5))
        );
        assert_eq!(update_of(&event("log", r#"{"message":"hi"}"#)), None);
        assert_eq!(update_of(&event("status", "not json")), None);
        assert!(is_final("failed") && is_final("completed") && !is_final("processing"));
    }
}
