//! The processing service's rules: a job's lifecycle, its admission against the
//! caller's quota, and the workers that run it at fal. Nothing here speaks gRPC or
//! SQL: other services are reached through [`crate::peers`], the tables through
//! [`crate::store`].

pub mod analytics;
pub mod failure;
pub mod job;
pub mod jobs;
pub mod outbound;
mod outcome;
pub mod pipelines;
pub mod quota;
pub mod reconciler;
mod results;
pub mod spend;
pub mod webhook;
pub mod worker;

#[cfg(test)]
mod tests;

pub use job::{Event, Job, JobFilter, Priority, Status, search_text};
pub use jobs::{BatchView, Claim, Jobs, Peers, StartRequest};
pub use quota::{Quota, Quotas};
pub use results::Results;
pub use webhook::{WebhookOutcome, Webhooks};
pub use worker::{Worker, WorkerConfig};
