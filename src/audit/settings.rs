//! `[audit]`: how long the audit trail in the store is kept.

use std::time::Duration;

use serde::Deserialize;

use crate::settings::Invalid;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSection {
    #[serde(with = "humantime_serde")]
    retention: Duration,
}

impl Default for AuditSection {
    fn default() -> Self {
        Self { retention: Duration::from_secs(90 * 24 * 3600) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditSettings {
    /// Events older than this are purged.
    pub retention: Duration,
}

impl AuditSection {
    pub fn build(&self) -> Result<AuditSettings, Invalid> {
        if self.retention < Duration::from_secs(24 * 3600) {
            return Err(Invalid::new("retention", "must be at least 1d: the help desk looks back days, not hours"));
        }
        if self.retention > Duration::from_secs(10 * 366 * 24 * 3600) {
            return Err(Invalid::new("retention", "must be at most 10 years"));
        }
        Ok(AuditSettings { retention: self.retention })
    }
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self { retention: Duration::from_secs(90 * 24 * 3600) }
    }
}
