//! A token bucket over an injectable clock.

use std::time::{Duration, SystemTime};

/// Tokens at or above `1 - EPSILON` count as a whole token (float rounding).
const EPSILON: f64 = 1e-9;

/// A token bucket. Capacity and rate are passed on each call so they can change over time
/// (the warm-up curve raises them day by day).
///
/// Its two fields are the whole state: a backend that stores buckets (the PostgreSQL pacer)
/// writes them and reads them back exactly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct TokenBucket {
    /// Tokens available at `last`.
    pub(crate) tokens: f64,
    /// When the bucket was last refilled.
    pub(crate) last: SystemTime,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn full(capacity: f64, now: SystemTime) -> Self {
        TokenBucket {
            tokens: capacity,
            last: now,
        }
    }

    /// Adds the tokens earned since the last refill. A clock that went backwards adds nothing.
    pub(crate) fn refill(&mut self, now: SystemTime, capacity: f64, per_second: f64) {
        if let Ok(elapsed) = now.duration_since(self.last) {
            self.tokens = (self.tokens + elapsed.as_secs_f64() * per_second).min(capacity);
            self.last = now;
        }
    }

    /// `None` if a token is available, else how long until one is (rounded up to a millisecond).
    pub(crate) fn wait(&self, per_second: f64) -> Option<Duration> {
        if self.tokens >= 1.0 - EPSILON {
            return None;
        }
        let secs = (1.0 - self.tokens) / per_second;
        let millis = (secs * 1000.0).ceil().max(1.0);
        Some(Duration::from_millis(millis as u64))
    }

    /// Takes one token (call only after `wait` returned `None`).
    pub(crate) fn take(&mut self) {
        self.tokens = (self.tokens - 1.0).max(0.0);
    }

    /// Whether the bucket would be full at `now` (`false` for a `now` before its last refill):
    /// then it behaves exactly like a new full bucket, and need not be kept.
    pub(crate) fn is_full(&self, now: SystemTime, capacity: f64, per_second: f64) -> bool {
        now.duration_since(self.last).is_ok_and(|elapsed| {
            self.tokens + elapsed.as_secs_f64() * per_second >= capacity - EPSILON
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn refills_at_rate_and_caps() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1000);
        let mut b = TokenBucket::full(2.0, t0);
        b.take();
        b.take();
        assert_eq!(b.wait(0.5), Some(Duration::from_secs(2)));
        b.refill(t0 + Duration::from_secs(2), 2.0, 0.5);
        assert_eq!(b.wait(0.5), None);
        b.refill(t0 + Duration::from_secs(100), 2.0, 0.5);
        b.take();
        b.take();
        assert!(b.wait(0.5).is_some(), "capacity caps the refill");
        // A clock going backwards neither adds nor panics.
        b.refill(t0, 2.0, 0.5);
        assert!(b.wait(0.5).is_some());
    }

    #[test]
    fn a_bucket_is_full_once_refilled() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1000);
        let mut b = TokenBucket::full(2.0, t0);
        assert!(b.is_full(t0, 2.0, 0.5));
        b.take();
        assert!(!b.is_full(t0 + Duration::from_secs(1), 2.0, 0.5));
        assert!(b.is_full(t0 + Duration::from_secs(2), 2.0, 0.5));
        assert!(
            !b.is_full(t0 - Duration::from_secs(1), 2.0, 0.5),
            "a clock gone back"
        );
    }
}
