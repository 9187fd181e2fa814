//! What the rules keep: accounts, refresh tokens and failed sign-in counts. The
//! store maps them to its rows.

use time::OffsetDateTime;
use uuid::Uuid;

/// An account, with what signing in checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// Access tokens issued before this instant are refused.
    pub tokens_not_before: Option<OffsetDateTime>,
    /// `user` or `admin`.
    pub role: String,
}

/// A refresh token, kept only as its hash; rotating it makes its successor in
/// the same family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshToken {
    pub id: Uuid,
    pub user_id: Uuid,
    pub family_id: Uuid,
    pub token_hash: String,
    pub expires_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    pub replaced_by: Option<Uuid>,
    pub created_at: OffsetDateTime,
}

/// Failed sign-ins for one email address (known or not), keyed by the SHA-256
/// of the normalised address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Throttle {
    pub key: String,
    /// Failures since the count last started over (attempts under way count).
    pub failures: i32,
    pub last_failure_at: OffsetDateTime,
    /// Password attempts are refused until then.
    pub locked_until: Option<OffsetDateTime>,
    /// Bumped on every write, so concurrent attempts cannot both count as one.
    pub version: i64,
}

/// What happened when a refresh token was presented for rotation.
#[derive(Debug)]
pub enum Rotation {
    Rotated {
        account: Account,
        family_id: Uuid,
    },
    /// Unknown token.
    Unknown,
    Expired,
    /// Already rotated or revoked: the whole family has now been revoked.
    Reused,
}
