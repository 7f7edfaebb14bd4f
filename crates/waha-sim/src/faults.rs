//! Injectable faults: what makes the simulator behave like a struggling WAHA container.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::SimError;

/// What session calls answer while the simulator is booting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BootingStatus {
    /// `400 Bad Request`, as the seed reports saw from `POST /api/sessions` on a booting
    /// WAHA Plus container (the default).
    #[default]
    #[serde(rename = "400")]
    BadRequest,
    /// `503 Service Unavailable`.
    #[serde(rename = "503")]
    ServiceUnavailable,
}

impl BootingStatus {
    pub(crate) fn code(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::ServiceUnavailable => 503,
        }
    }
}

/// Faults, set at start and changeable at run time through the control handle or
/// `PUT /_sim/faults`. All durations are in simulated time (see [`crate::TimeScale`]).
///
/// JSON form (every field optional, unknown fields refused):
/// `{"startupDelayMs":0,"bootingMs":0,"bootingStatus":"400","latencyMs":0,"errorRate":0.0,
///   "slowStopMs":0,"webhookDropRate":0.0,"webhookDuplicateRate":0.0,"webhookReorderRate":0.0}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
#[non_exhaustive]
pub struct Faults {
    /// Delay before the simulator listens at all (connections are refused meanwhile). Only
    /// read at start.
    #[serde(rename = "startupDelayMs", with = "millis")]
    pub startup_delay: Duration,
    /// A booting window after the simulator starts listening: `/ping` answers, `/health`
    /// answers 503 and session calls get [`Faults::booting_status`]. Read at start; at run time
    /// use `SimulatorControl::set_booting`.
    #[serde(rename = "bootingMs", with = "millis")]
    pub booting: Duration,
    /// The status session calls get while booting.
    pub booting_status: BootingStatus,
    /// Added to every answer (except the `/_sim` control routes).
    #[serde(rename = "latencyMs", with = "millis")]
    pub latency: Duration,
    /// Probability (0..=1) that an `/api/...` call (other than `/api/server/...`) answers
    /// `500 Internal server error` instead of doing its work.
    pub error_rate: f64,
    /// How long stop, restart, delete and a PUT on a running session take.
    #[serde(rename = "slowStopMs", with = "millis")]
    pub slow_stop: Duration,
    /// Probability (0..=1) that a webhook delivery is silently dropped.
    pub webhook_drop_rate: f64,
    /// Probability (0..=1) that a webhook delivery is sent twice (same event id).
    pub webhook_duplicate_rate: f64,
    /// Probability (0..=1) that a webhook delivery is held back so later events overtake it.
    pub webhook_reorder_rate: f64,
}

impl Faults {
    /// No faults at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// Sets the start-up delay.
    pub fn with_startup_delay(mut self, delay: Duration) -> Self {
        self.startup_delay = delay;
        self
    }

    /// Sets the booting window and what session calls answer during it.
    pub fn with_booting(mut self, window: Duration, status: BootingStatus) -> Self {
        self.booting = window;
        self.booting_status = status;
        self
    }

    /// Sets the added latency.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Sets the error rate of API calls.
    pub fn with_error_rate(mut self, rate: f64) -> Self {
        self.error_rate = rate;
        self
    }

    /// Sets how long stop-like operations take.
    pub fn with_slow_stop(mut self, duration: Duration) -> Self {
        self.slow_stop = duration;
        self
    }

    /// Sets the webhook drop, duplicate and reorder probabilities.
    pub fn with_webhook_faults(mut self, drop: f64, duplicate: f64, reorder: f64) -> Self {
        self.webhook_drop_rate = drop;
        self.webhook_duplicate_rate = duplicate;
        self.webhook_reorder_rate = reorder;
        self
    }

    /// Checks that every probability lies in `0..=1`.
    pub fn validate(&self) -> Result<(), SimError> {
        for (name, rate) in [
            ("errorRate", self.error_rate),
            ("webhookDropRate", self.webhook_drop_rate),
            ("webhookDuplicateRate", self.webhook_duplicate_rate),
            ("webhookReorderRate", self.webhook_reorder_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(SimError::setting(
                    format!("faults.{name}"),
                    format!("a probability lies between 0 and 1, got {rate}"),
                ));
            }
        }
        Ok(())
    }
}

/// Draws `true` with probability `rate`.
pub(crate) fn chance(rate: f64) -> bool {
    rate > 0.0 && fastrand::f64() < rate
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_validation() {
        let f = Faults::none()
            .with_latency(Duration::from_millis(5))
            .with_booting(Duration::from_secs(2), BootingStatus::ServiceUnavailable);
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["latencyMs"], 5);
        assert_eq!(json["bootingStatus"], "503");
        let back: Faults = serde_json::from_value(json).unwrap();
        assert_eq!(back, f);
        assert!(serde_json::from_str::<Faults>(r#"{"nope":1}"#).is_err());
        assert!(Faults::none().with_error_rate(1.5).validate().is_err());
        assert!(Faults::none().with_error_rate(0.5).validate().is_ok());
    }
}
