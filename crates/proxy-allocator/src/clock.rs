//! Time, injectable so that cooldowns can be tested without sleeping: the workspace's one
//! [`Clock`] (defined in `fleet-vocab`), re-exported.

pub use fleet_vocab::{Clock, ManualClock, SystemClock};
