//! What every Atelier service shares: configuration, telemetry, the platform error
//! codes, the gRPC server and client plumbing, access-token verification, databases,
//! the admin endpoint and graceful shutdown.

pub mod admin;
pub mod audit;
pub mod config;
pub mod db;
pub mod error;
pub mod files;
pub mod grpc;
pub mod identity;
pub mod job_changes;
pub mod shutdown;
pub mod telemetry;
pub mod token;
mod transport;

pub use error::{ErrorCode, FieldViolation, QuotaExceeded, ServiceError};
pub use token::{Caller, Claims, JwtVerifier};

/// The time, passed in so tests control it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> time::OffsetDateTime;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
    }
}

/// A protobuf timestamp for `at`.
pub fn timestamp(at: time::OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.unix_timestamp(),
        nanos: at.nanosecond() as i32,
    }
}

/// The instant a protobuf timestamp names; `None` when it is out of range.
pub fn instant(at: prost_types::Timestamp) -> Option<time::OffsetDateTime> {
    Some(
        time::OffsetDateTime::from_unix_timestamp(at.seconds).ok()?
            + time::Duration::nanoseconds(i64::from(at.nanos)),
    )
}

pub mod json;
pub mod page;
pub mod redis;
