//! An injectable clock, so pacing and daily quotas are testable without sleeping.

use std::time::{SystemTime, UNIX_EPOCH};

#[cfg(feature = "mock")]
pub use fleet_vocab::MockClock;
/// The clock every crate of the workspace shares (defined in `fleet-vocab`).
pub use fleet_vocab::{Clock, ManualClock, SystemClock};

/// A UTC calendar day, counted from 1970-01-01 (day 0). Daily send quotas reset at its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UtcDay(pub u32);

impl UtcDay {
    /// The UTC day `at` falls in (times before 1970 count as day 0).
    pub fn of(at: SystemTime) -> Self {
        let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        UtcDay(u32::try_from(secs / 86_400).unwrap_or(u32::MAX))
    }
}
