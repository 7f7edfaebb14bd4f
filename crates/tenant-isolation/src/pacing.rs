//! Anti-ban send pacing: token buckets per tenant and per chip, warm-up for new numbers,
//! jitter between sends, and a clear "retry after" answer.

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::error::Error;
use crate::{ChipId, TenantId};

pub(crate) mod bucket;
pub mod memory;
pub(crate) mod rule;
mod warmup;

pub use warmup::WarmupCurve;

/// The answer to "may this chip send now?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Pace {
    /// Send, after waiting `jitter` (a random pause so sends do not look machine-timed).
    /// The send has already been counted, and the chip's next send is held back until
    /// `jitter` plus the pacer's minimum gap have passed.
    Go {
        /// How long to wait before sending.
        jitter: Duration,
    },
    /// Do not send now; ask again after `after`. Nothing was counted.
    RetryAfter {
        /// How long to wait before asking again.
        after: Duration,
        /// The limit that is holding the send back (the slowest one, if several are).
        limit: PaceLimit,
    },
}

impl Pace {
    /// `Some(wait)` when throttled.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Pace::Go { .. } => None,
            Pace::RetryAfter { after, .. } => Some(*after),
        }
    }
}

/// Which pacing limit held a send back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PaceLimit {
    /// The chip's short-term burst bucket is empty.
    ChipBurst,
    /// The chip's allowance for its current warm-up day is used up; `after` is the start of
    /// its next warm-up day.
    ChipDaily {
        /// The chip's day since activation, from 1.
        warmup_day: u32,
        /// Its allowance per day on that day.
        per_day: u32,
    },
    /// The tenant's burst bucket (over all its chips) is empty.
    TenantBurst,
    /// The chip sent (or is about to send, after its jitter) less than
    /// [`chip_min_gap`](crate::PacerConfig::chip_min_gap) ago.
    ChipGap,
}

impl fmt::Display for PaceLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PaceLimit::ChipBurst => f.write_str("chip burst"),
            PaceLimit::ChipDaily {
                warmup_day,
                per_day,
            } => write!(
                f,
                "chip daily allowance ({per_day}/day on warm-up day {warmup_day})"
            ),
            PaceLimit::TenantBurst => f.write_str("tenant burst"),
            PaceLimit::ChipGap => f.write_str("chip minimum gap between sends"),
        }
    }
}

/// Paces sends per tenant and per chip.
///
/// Contract: [`acquire`](SendPacer::acquire) either counts the send against every bucket and
/// answers [`Pace::Go`], or counts nothing and answers [`Pace::RetryAfter`] with a wait after
/// which (absent other sends) the same call succeeds. A chip's warm-up age starts at the
/// earliest [`chip_activated`](SendPacer::chip_activated) it was told, or at its first
/// `acquire` if never told.
///
/// The in-memory backend is [`MemorySendPacer`](memory::MemorySendPacer); `pg::PgSendPacer`
/// (feature `postgres`) keeps the same state in PostgreSQL, shared by several replicas and
/// kept across restarts. Both apply one rule and answer the same.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait SendPacer: Send + Sync {
    /// Records when a chip's number was first paired, which sets its warm-up day. The earliest
    /// time told counts: a later announcement (a restart, a re-pairing) changes nothing.
    async fn chip_activated(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        at: SystemTime,
    ) -> Result<(), Error>;
    /// Asks to send one message from `chip`.
    async fn acquire(&self, tenant: &TenantId, chip: &ChipId) -> Result<Pace, Error>;
    /// Forgets a chip (after deletion); a later `acquire` starts its warm-up again.
    async fn forget_chip(&self, tenant: &TenantId, chip: &ChipId) -> Result<(), Error>;
}
