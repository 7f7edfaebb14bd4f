//! Counters of webhook deliveries.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// What happened to webhook deliveries so far, and how many dispatcher tasks are alive now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct WebhookStats {
    /// HTTP requests sent (first attempts and retries; attempts lost by the drop fault never
    /// left, so they are not counted here).
    pub attempts: u64,
    /// Deliveries that got a 2xx (and kept it).
    pub delivered: u64,
    /// Deliveries abandoned after the last retry.
    pub failed: u64,
    /// Attempts lost by the drop fault before they reached the receiver (each retried on the
    /// webhook's policy while retries are left).
    pub dropped: u64,
    /// Answers lost by the duplicate fault: the receiver had the delivery, which was retried
    /// (so it arrives again while retries are left).
    pub duplicated: u64,
    /// Deliveries held back by the reorder fault.
    pub reordered: u64,
    /// Per-URL dispatcher tasks alive right now (a gauge, not a counter): one per destination
    /// with recent traffic; each exits once its destination has been idle for 30 s of
    /// simulated time.
    pub dispatchers: u64,
}

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct WebhookCounters {
    pub(crate) attempts: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) duplicated: AtomicU64,
    pub(crate) reordered: AtomicU64,
    dispatchers: AtomicU64,
}

impl WebhookCounters {
    pub(crate) fn bump(counter: &AtomicU64, outcome: &'static str) {
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("waha_sim_webhook_deliveries_total", "outcome" => outcome).increment(1);
    }

    /// A per-URL dispatcher task started.
    pub(crate) fn lane_opened(&self) {
        self.dispatchers.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("waha_sim_webhook_dispatchers").increment(1.0);
    }

    /// A per-URL dispatcher task ended.
    pub(crate) fn lane_closed(&self) {
        self.dispatchers.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("waha_sim_webhook_dispatchers").decrement(1.0);
    }

    pub(crate) fn snapshot(&self) -> WebhookStats {
        WebhookStats {
            attempts: self.attempts.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            duplicated: self.duplicated.load(Ordering::Relaxed),
            reordered: self.reordered.load(Ordering::Relaxed),
            dispatchers: self.dispatchers.load(Ordering::Relaxed),
        }
    }
}
