//! An image as the rules keep it; the store maps it to its row.

use time::OffsetDateTime;
use uuid::Uuid;

/// Where an image came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// Uploaded by its owner.
    Original,
    /// Stored by the processing service as a job's output.
    Result,
}

impl ImageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Original => "original",
            Self::Result => "result",
        }
    }
}

/// What the malware scan said of a stored image (an infected file is never
/// stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanStatus {
    /// The scanner found nothing.
    Clean,
    /// No scanner was configured when it was stored.
    NotScanned,
}

impl ScanStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::NotScanned => "not_scanned",
        }
    }
}

/// A stored image: its objects, what inspection found, and its retention.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub filename: String,
    pub original_filename: String,
    pub file_size: i64,
    pub mime_type: String,
    pub storage_path: String,
    pub thumbnail_path: Option<String>,
    pub thumbnail_mime_type: Option<String>,
    pub sha256: String,
    pub width: i32,
    pub height: i32,
    pub metadata: serde_json::Value,
    pub kind: ImageKind,
    pub job_id: Option<Uuid>,
    pub output_index: Option<i32>,
    pub source_image_id: Option<Uuid>,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub scan_status: ScanStatus,
    /// When it was scanned; `None` when it was not.
    pub scanned_at: Option<OffsetDateTime>,
    /// The scanner that said so (`clamd`); `None` when it was not scanned.
    pub scanner: Option<String>,
}

/// A public link to an image, as the rules keep it. The token itself is never
/// kept: only its SHA-256, in hex.
#[derive(Clone, Debug, PartialEq)]
pub struct ShareLinkRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub image_id: Uuid,
    pub before_image_id: Option<Uuid>,
    pub token_hash: String,
    pub expires_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub view_count: i64,
    pub last_viewed_at: Option<OffsetDateTime>,
}
