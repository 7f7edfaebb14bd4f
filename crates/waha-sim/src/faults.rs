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

/// What `/health` answers while the simulator is booting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BootingHealth {
    /// `503` with the sessions check down (the default).
    #[default]
    #[serde(rename = "503")]
    Unavailable,
    /// `200`, while session calls still get [`Faults::booting_status`]: what the seed report saw
    /// from a booting WAHA Plus container (healthy, yet `POST /api/sessions` answered 400).
    #[serde(rename = "200")]
    Ok,
}

/// Faults, set at start and changeable at run time through the control handle or
/// `PUT /_sim/faults`. All durations are in simulated time (see [`crate::TimeScale`]).
///
/// JSON form (every field optional, unknown fields refused):
/// `{"startupDelayMs":0,"bootingMs":0,"bootingStatus":"400","bootingHealth":"503",
///   "latencyMs":0,"errorRate":0.0,"slowStopMs":0,"webhookDropRate":0.0,
///   "webhookDuplicateRate":0.0,"webhookReorderRate":0.0,"seed":42}`
///
/// # Webhook faults and the seed
/// The three webhook faults are decided once per delivery (one event to one webhook), when the
/// dispatcher takes the event, from a random source seeded with [`Faults::seed`]. The same seed
/// and the same sequence of events give the same decisions, so a failing run can be replayed:
/// - **drop**: attempts are lost before they reach the receiver (the first, and each retry with
///   the same probability, until one gets through). A lost attempt is a failed attempt, so it is
///   retried on the webhook's retry policy as WAHA retries (default 15 retries, 2 s apart); with
///   no retries left the delivery is abandoned.
/// - **duplicate**: the first attempt that reaches the receiver has its answer lost, so it is
///   retried too: the receiver gets the same body twice (same event id, same
///   `X-Webhook-Request-Id`, same `X-Webhook-Timestamp`), the second time after the retry delay.
/// - **reorder**: the first attempt is held back [`Timings::reorder_delay`](crate::Timings), so
///   later events to the same URL overtake it.
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
    /// What `/health` answers while booting.
    pub booting_health: BootingHealth,
    /// Added to every answer (except the `/_sim` control routes).
    #[serde(rename = "latencyMs", with = "millis")]
    pub latency: Duration,
    /// Probability (0..=1) that an `/api/...` call (other than `/api/server/...`) answers
    /// `500 Internal server error` instead of doing its work.
    pub error_rate: f64,
    /// How long stop, restart, delete and a PUT on a running session take.
    #[serde(rename = "slowStopMs", with = "millis")]
    pub slow_stop: Duration,
    /// Probability (0..=1) that a webhook attempt is lost before it reaches the receiver (and
    /// is retried on the webhook's policy).
    pub webhook_drop_rate: f64,
    /// Probability (0..=1) that the receiver's answer to a webhook delivery is lost, so the
    /// delivery is retried and arrives twice (same event id and request id).
    pub webhook_duplicate_rate: f64,
    /// Probability (0..=1) that a webhook delivery is held back so later events overtake it.
    pub webhook_reorder_rate: f64,
    /// Seed of the random source the webhook faults are drawn from. When a simulator starts
    /// without one, it picks one at random and reports it here (`GET /_sim/faults`, and the
    /// start-up log), so a failing run can be replayed with it. Setting faults that carry a
    /// seed restarts the random sequence from it; faults without one keep the sequence going
    /// (and the seed reported).
    pub seed: Option<u64>,
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

    /// Sets what `/health` answers while booting.
    pub fn with_booting_health(mut self, health: BootingHealth) -> Self {
        self.booting_health = health;
        self
    }

    /// Sets the seed of the webhook faults' random source.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
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

/// Draws `true` with probability `rate` (process-wide random source: API error rate only).
pub(crate) fn chance(rate: f64) -> bool {
    rate > 0.0 && fastrand::f64() < rate
}

/// What the webhook faults decided for one delivery (see [`Faults`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DeliveryPlan {
    /// Leading attempts lost before they reach the receiver.
    pub(crate) lost: u32,
    /// The answer to the first attempt that reaches the receiver is lost.
    pub(crate) answer_lost: bool,
    /// The first attempt is held back.
    pub(crate) held: bool,
}

impl Faults {
    /// Draws one delivery's fate from `rng`; `tries` is how many attempts its webhook allows
    /// (the first plus the retries). A rate of 0 draws nothing, so the sequence only depends on
    /// the deliveries that could be affected.
    pub(crate) fn plan_delivery(&self, rng: &mut fastrand::Rng, tries: u32) -> DeliveryPlan {
        let lost = if self.webhook_drop_rate >= 1.0 {
            tries
        } else {
            let mut lost = 0;
            while lost < tries && draw(rng, self.webhook_drop_rate) {
                lost += 1;
            }
            lost
        };
        let answer_lost = lost < tries && draw(rng, self.webhook_duplicate_rate);
        let held = draw(rng, self.webhook_reorder_rate);
        DeliveryPlan {
            lost,
            answer_lost,
            held,
        }
    }
}

/// Draws `true` with probability `rate` from `rng` (nothing is drawn for a rate of 0).
fn draw(rng: &mut fastrand::Rng, rate: f64) -> bool {
    rate > 0.0 && rng.f64() < rate
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
        let f = Faults::none()
            .with_seed(7)
            .with_booting_health(BootingHealth::Ok);
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["seed"], 7);
        assert_eq!(json["bootingHealth"], "200");
        assert_eq!(serde_json::from_value::<Faults>(json).unwrap(), f);
    }

    #[test]
    fn plans_replay_from_the_seed() {
        let faults = Faults::none().with_webhook_faults(0.4, 0.3, 0.2);
        let plans = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (0..200)
                .map(|_| faults.plan_delivery(&mut rng, 4))
                .collect::<Vec<_>>()
        };
        assert_eq!(plans(1), plans(1));
        assert_ne!(plans(1), plans(2));
        let all = plans(3);
        assert!(all.iter().all(|p| p.lost <= 4));
        assert!(all.iter().any(|p| p.lost > 0));
        assert!(all.iter().any(|p| p.answer_lost));
        assert!(all.iter().any(|p| p.held));
        assert!(all.iter().filter(|p| p.lost == 4).all(|p| !p.answer_lost));

        let mut rng = fastrand::Rng::with_seed(9);
        let certain = Faults::none().with_webhook_faults(1.0, 0.0, 0.0);
        assert_eq!(certain.plan_delivery(&mut rng, u32::MAX).lost, u32::MAX);
        let none = Faults::none();
        assert_eq!(none.plan_delivery(&mut rng, 16), DeliveryPlan::default());
    }
}
