//! One knob that speeds up (or slows down) every wait the simulator makes.

use std::time::{Duration, Instant};

use crate::SimError;

/// A factor applied to every duration the simulator waits for: QR lifetimes, start-up and
/// booting windows, latency, slow stops, ack timers, webhook retry delays and the idle time
/// after which a webhook destination's dispatcher task exits.
///
/// `1.0` is real time (WAHA's own timings). Tests use e.g. `0.01`, so a 60 s QR lives 0.6 s.
/// HTTP time-outs of webhook deliveries are not scaled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimeScale(f64);

impl TimeScale {
    /// Real time.
    pub const REAL: Self = Self(1.0);

    /// A scale factor; must be finite and greater than zero.
    pub fn new(factor: f64) -> Result<Self, SimError> {
        if factor.is_finite() && factor > 0.0 {
            Ok(Self(factor))
        } else {
            Err(SimError::setting(
                "time_scale",
                format!("must be a finite number greater than 0, got {factor}"),
            ))
        }
    }

    /// The factor.
    pub fn factor(self) -> f64 {
        self.0
    }

    /// `duration` in simulated time, scaled to wall-clock time. Saturates at
    /// [`Duration::MAX`] (a huge duration times a large factor never panics).
    pub fn scale(self, duration: Duration) -> Duration {
        if duration.is_zero() {
            return duration;
        }
        Duration::try_from_secs_f64(duration.as_secs_f64() * self.0).unwrap_or(Duration::MAX)
    }
}

/// A wait so long that it stands for "never" (an `Instant` cannot hold `Duration::MAX`).
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The instant `wait` after now; a wait too long for an `Instant` becomes a century.
pub(crate) fn deadline_after(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

impl Default for TimeScale {
    fn default() -> Self {
        Self::REAL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_and_validates() {
        let s = TimeScale::new(0.01).unwrap();
        assert_eq!(s.scale(Duration::from_secs(60)), Duration::from_millis(600));
        assert!(TimeScale::new(0.0).is_err());
        assert!(TimeScale::new(f64::NAN).is_err());
        assert!(TimeScale::new(-1.0).is_err());
    }

    #[test]
    fn huge_durations_saturate_instead_of_panicking() {
        let slow = TimeScale::new(1e6).unwrap();
        assert_eq!(slow.scale(Duration::MAX), Duration::MAX);
        assert_eq!(slow.scale(Duration::from_millis(u64::MAX)), Duration::MAX);
        assert!(deadline_after(Duration::MAX) > Instant::now() + Duration::from_secs(3600));
        let soon = deadline_after(Duration::from_millis(5));
        assert!(soon <= Instant::now() + Duration::from_millis(5));
    }
}
