//! The user service's rules: a profile for every account (made the first time
//! the account is met, never for one that is gone), its settings and their
//! limits, the tiers and what each allows, and an account's deletion across the
//! services that hold its data. Other services are reached through
//! [`crate::peers`], the profiles through [`crate::store`].

pub mod profiles;
pub mod settings;
pub mod tiers;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use atelier_common::Clock;

pub use profiles::{Profile, display_name};
pub use settings::{Notifications, Settings, Theme};
pub use tiers::{Limits, Quota, Tier, Tiers, Usage, quota_window};

use crate::{
    peers::{Accounts, AuditLog, ImageLibrary, JobLedger, WorkflowCatalogue},
    store::Store,
};

/// The services the user service reads from and deletes through.
#[derive(Clone)]
pub struct Peers {
    pub accounts: Arc<dyn Accounts>,
    pub jobs: Arc<dyn JobLedger>,
    pub images: Arc<dyn ImageLibrary>,
    pub workflows: Arc<dyn WorkflowCatalogue>,
    pub audit: Arc<dyn AuditLog>,
}

pub struct Users {
    store: Store,
    tiers: Tiers,
    clock: Arc<dyn Clock>,
    peers: Peers,
}

impl Users {
    pub fn new(store: Store, tiers: Tiers, clock: Arc<dyn Clock>, peers: Peers) -> Self {
        Self {
            store,
            tiers,
            clock,
            peers,
        }
    }

    /// What `tier` allows.
    pub fn limits(&self, tier: Tier) -> Limits {
        self.tiers.get(tier)
    }
}
