//! One knob that speeds up (or slows down) every wait the simulator makes.

use std::time::Duration;

use crate::SimError;

/// A factor applied to every duration the simulator waits for: QR lifetimes, start-up and
/// booting windows, latency, slow stops, ack timers and webhook retry delays.
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

    /// `duration` in simulated time, scaled to wall-clock time.
    pub fn scale(self, duration: Duration) -> Duration {
        if duration.is_zero() {
            return duration;
        }
        duration.mul_f64(self.0)
    }
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
}
