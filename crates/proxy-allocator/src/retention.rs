//! How much lease history a store keeps: [`HistoryRetention`].

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::ProxyError;

/// How much of each chip's proxy history a [`LeaseStore`](crate::LeaseStore) keeps. Plain data;
/// [`HistoryRetention::default`] documents the defaults.
///
/// Two limits, both always on:
/// - **A count per chip, applied on write.** A chip keeps at most `max_entries_per_chip`
///   entries, the newest: the step that appends an entry drops the chip's oldest ones beyond
///   the limit (in PostgreSQL, in the same statement). A chip whose endpoint flaps therefore
///   cannot grow its history without bound.
/// - **An age, applied by [`LeaseStore::prune_history`](crate::LeaseStore::prune_history).**
///   Entries recorded more than `max_age` before the `now` it is given are removed, for every
///   chip, released or not. Call it periodically (daily is plenty), e.g. through
///   [`ProxyAllocator::prune_history`](crate::ProxyAllocator::prune_history). The in-memory
///   store also applies it by itself, at most once an hour of the times it is given, so a
///   process that never calls it still forgets released chips.
///
/// Keep `max_age` above the policy's `rotation_cooldown`: the allocator reads the history to
/// avoid endpoints a chip left less than a cooldown ago.
///
/// Generations do not depend on the history: every store keeps the highest generation of each
/// chip apart from it (one small record per chip ever leased, never pruned), so no retention
/// and no purge of the history can make a generation be handed out twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryRetention {
    /// The most history entries kept per chip, the newest ones. Default 100. At least 1.
    pub max_entries_per_chip: u32,
    /// Entries older than this are removed by `prune_history`. Default 90 days. At least one
    /// second, at most 100 years.
    #[serde(with = "crate::policy::secs")]
    pub max_age: Duration,
}

impl Default for HistoryRetention {
    fn default() -> Self {
        Self {
            max_entries_per_chip: 100,
            max_age: Duration::from_secs(90 * DAY_SECS),
        }
    }
}

const DAY_SECS: u64 = 24 * 3600;

/// The longest accepted [`HistoryRetention::max_age`].
const MAX_AGE: Duration = Duration::from_secs(100 * 365 * DAY_SECS);

impl HistoryRetention {
    /// Checks the limits are usable.
    ///
    /// # Errors
    /// [`ProxyError::InvalidConfig`] for a zero count, an age under one second or one over
    /// 100 years.
    pub fn validate(&self) -> Result<(), ProxyError> {
        if self.max_entries_per_chip == 0 {
            return Err(ProxyError::config(
                "history retention: max_entries_per_chip must be at least 1",
            ));
        }
        if self.max_age < Duration::from_secs(1) {
            return Err(ProxyError::config(
                "history retention: max_age must be at least one second",
            ));
        }
        if self.max_age > MAX_AGE {
            return Err(ProxyError::config(
                "history retention: max_age must be at most 100 years",
            ));
        }
        Ok(())
    }

    /// The time before which entries are removed by a prune at `now`: `now - max_age`
    /// (`None` when that is before what the platform's clock can represent: nothing is old).
    pub(crate) fn cutoff(&self, now: SystemTime) -> Option<SystemTime> {
        now.checked_sub(self.max_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_limits() {
        let ok = HistoryRetention::default();
        assert_eq!(ok.max_entries_per_chip, 100);
        assert_eq!(ok.max_age, Duration::from_secs(90 * 86_400));
        assert!(ok.validate().is_ok());
        for bad in [
            HistoryRetention {
                max_entries_per_chip: 0,
                ..ok
            },
            HistoryRetention {
                max_age: Duration::from_millis(999),
                ..ok
            },
            serde_json::from_str(r#"{"max_age": 18446744073709551615}"#).unwrap(),
        ] {
            assert!(
                matches!(bad.validate(), Err(ProxyError::InvalidConfig { .. })),
                "{bad:?}"
            );
        }
        let parsed: HistoryRetention =
            serde_json::from_str(r#"{"max_entries_per_chip": 20}"#).unwrap();
        assert_eq!(
            parsed,
            HistoryRetention {
                max_entries_per_chip: 20,
                ..ok
            }
        );
    }
}
