//! The one policy table: a [`Reason`] to an [`Action`], and the timings `decide` uses.

use std::time::Duration;

use container_pool::Engine;

use super::{BackoffClass, BackoffClasses, Jitter, ParkReason, Reason};

/// The longest duration a setting may have: a century. Longer ones would overflow when added
/// to a time (the supervisor saturates at a century ahead anyway).
pub(super) const LONGEST_SETTING: Duration = Duration::from_secs(100 * 365 * 24 * 3_600);

/// A setting [`Policy::validate`] (or [`Rate::validate`](super::Rate::validate)) refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A delay, interval, factor or count that must not be zero is zero (it would retry or
    /// re-read in a busy loop, or park at the first failure).
    #[error("policy setting {setting} must not be zero")]
    Zero {
        /// The setting, e.g. `classes.session.base`.
        setting: String,
    },
    /// A duration longer than a century: adding it to a time would overflow.
    #[error("policy setting {setting} is {value:?}, longer than a century")]
    TooLong {
        /// The setting.
        setting: String,
        /// Its value.
        value: Duration,
    },
    /// A proportional jitter of 100 % or more: a delay could be zero.
    #[error("policy setting {setting} spreads delays by {percent} %, which can reach zero")]
    JitterTooWide {
        /// The setting, e.g. `classes.capacity.jitter`.
        setting: String,
        /// The configured spread.
        percent: u8,
    },
}

impl PolicyError {
    /// A short, stable name of the variant, for metric labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyError::Zero { .. } => "zero",
            PolicyError::TooLong { .. } => "too_long",
            PolicyError::JitterTooWide { .. } => "jitter_too_wide",
        }
    }

    /// The setting refused.
    pub fn setting(&self) -> &str {
        match self {
            PolicyError::Zero { setting }
            | PolicyError::TooLong { setting, .. }
            | PolicyError::JitterTooWide { setting, .. } => setting.as_str(),
        }
    }
}

/// `value` must not be zero.
fn non_zero(setting: &str, value: Duration) -> Result<(), PolicyError> {
    if value.is_zero() {
        return Err(PolicyError::Zero {
            setting: setting.to_owned(),
        });
    }
    Ok(())
}

/// `value` must be at most [`LONGEST_SETTING`].
pub(super) fn at_most_a_century(setting: &str, value: Duration) -> Result<(), PolicyError> {
    if value > LONGEST_SETTING {
        return Err(PolicyError::TooLong {
            setting: setting.to_owned(),
            value,
        });
    }
    Ok(())
}

/// What the supervisor does about a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Re-read the world and decide again: not an attempt, no backoff.
    Resync,
    /// Back off in `class`, then retry the step or restart the session; the class's retry
    /// budget and loop detection park.
    Retry {
        /// The backoff class.
        class: BackoffClass,
    },
    /// WAHA restarts the session by itself: give it `grace`, then (report a proxy failure
    /// when `report_proxy`, and) back off in `class` and restart. When `first_immediate`, the
    /// first restart comes without a delay (still budgeted).
    SelfHeal {
        /// How long WAHA gets.
        grace: Duration,
        /// The backoff class of the restarts.
        class: BackoffClass,
        /// Report the failure to the proxy allocator on the lease generation first.
        report_proxy: bool,
        /// No delay before the first restart.
        first_immediate: bool,
    },
    /// Report the failure to the proxy allocator on the lease generation: a rotation (or a
    /// lease already rotated) re-ensures the session on the new proxy; otherwise back off in
    /// `class` and restart.
    RotateProxy {
        /// The backoff class when the proxy is kept.
        class: BackoffClass,
    },
    /// Start a new login window (after logging out first when `logout`).
    RePair {
        /// Log out first (the stored login is unusable).
        logout: bool,
    },
    /// Restart once; if the same reason comes back before the chip is stable, re-pair.
    RestartThenRePair,
    /// Stop the session, release the running slot and wait for the host (`LoginExpired`).
    LoginExpired,
    /// Stop the session and back off until the ban expires (plus jitter); a second ban within
    /// the ban memory parks `banned`.
    TemporaryBan,
    /// Stop the session and park.
    Park(ParkReason),
    /// The tenant is suspended or deleted: the chip stops (tenant rule of `decide`).
    StopTenant,
    /// Reserve the chip slot again, then continue.
    RepairChipSlot,
    /// Ensure the container again, on the same volume.
    EnsureContainer,
    /// Lease a proxy again (the allocator moves the chip).
    LeaseAgain,
    /// Probe the session (status and `me`).
    Probe,
    /// This process lost the tenant: drop it locally, no retry and no write.
    DropTenant,
}

/// The timings and classes of the policy, plain data with the defaults of
/// `docs/session-supervisor.md` (sections 5 and 8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Backoff classes.
    pub classes: BackoffClasses,
    /// A session `STARTING` for longer than this is a `transient` failure (90 s).
    pub starting_timeout: Duration,
    /// How long a `FAILED` waits for the engine signal that explains it (5 s); also how long
    /// after a disconnect a `WORKING` status counts as healed.
    pub reason_grace: Duration,
    /// How long WAHA gets to heal a disconnect by itself (45 s); also WEBJS's transient
    /// `FAILED`.
    pub self_heal_grace: Duration,
    /// The grace of `restart_required` (15 s).
    pub restart_required_grace: Duration,
    /// A `WORKING` chip with no event for this long is probed (30 min).
    pub silence_threshold: Duration,
    /// Probes that find a working but silent session before it is restarted (2) ...
    pub silent_probes_before_restart: u32,
    /// ... on these engines (GOWS: its silent death).
    pub silent_restart_engines: Vec<Engine>,
    /// The window of loop detection (15 min).
    pub loop_window: Duration,
    /// Session failures within the window that park the chip `looping` (6).
    pub loop_max_failures: u32,
    /// A chip working this long starts its next failure at attempt 1 (2 min).
    pub stable_after: Duration,
    /// A temporary ban without an expiry (NOWEB's 402) lasts this long (24 h).
    pub temp_ban_fallback: Duration,
    /// Up to this much is added to a ban's expiry (5 min), spread by the jitter draw.
    pub temp_ban_jitter: Duration,
    /// A second temporary ban within this long parks `banned` (7 days).
    pub temp_ban_memory: Duration,
    /// How long a pairing code is offered (150 s; WAHA's window is about 160 s).
    pub pairing_code_ttl: Duration,
    /// A chip with nothing to do is looked at again after this long (5 min, ±10 %).
    pub resync_interval: Duration,
    /// A failed read (tenant, container, session) is tried again after this long (10 s).
    pub reread_after: Duration,
    /// The seed of the jitter draws; the same on every replica.
    pub jitter_seed: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            classes: BackoffClasses::default(),
            starting_timeout: Duration::from_secs(90),
            reason_grace: Duration::from_secs(5),
            self_heal_grace: Duration::from_secs(45),
            restart_required_grace: Duration::from_secs(15),
            silence_threshold: Duration::from_secs(30 * 60),
            silent_probes_before_restart: 2,
            silent_restart_engines: vec![Engine::Gows],
            loop_window: Duration::from_secs(15 * 60),
            loop_max_failures: 6,
            stable_after: Duration::from_secs(2 * 60),
            temp_ban_fallback: Duration::from_secs(24 * 3_600),
            temp_ban_jitter: Duration::from_secs(5 * 60),
            temp_ban_memory: Duration::from_secs(7 * 24 * 3_600),
            pairing_code_ttl: Duration::from_secs(150),
            resync_interval: Duration::from_secs(5 * 60),
            reread_after: Duration::from_secs(10),
            jitter_seed: 0,
        }
    }
}

impl Policy {
    /// Checks settings that would make the supervisor loop, panic or park at once; call it
    /// before running a policy that did not come from [`Policy::default`] (which passes).
    ///
    /// Refused: a backoff class's `base`, `factor` or `cap` of zero (a retry without delay), a
    /// `Proportional` jitter of 100 % or more (a delay that can be zero), a retry budget of 0
    /// attempts and a `loop_max_failures` of 0 (the first failure parks);
    /// `starting_timeout`, `silence_threshold`, `loop_window`, `pairing_code_ttl`,
    /// `resync_interval` or `reread_after` of zero (a busy loop of probes, restarts or
    /// re-reads, loop detection off, a code that is never on offer); and any duration longer
    /// than a century (it would overflow a time). The graces, `stable_after` and the ban
    /// settings may be zero.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for class in [
            BackoffClass::Infra,
            BackoffClass::Provision,
            BackoffClass::Session,
            BackoffClass::Capacity,
        ] {
            let backoff = self.classes.get(class);
            let name = |field: &str| format!("classes.{}.{field}", class.as_str());
            non_zero(&name("base"), backoff.base)?;
            non_zero(&name("cap"), backoff.cap)?;
            at_most_a_century(&name("base"), backoff.base)?;
            at_most_a_century(&name("cap"), backoff.cap)?;
            if backoff.factor == 0 {
                return Err(PolicyError::Zero {
                    setting: name("factor"),
                });
            }
            if let Jitter::Proportional { percent } = backoff.jitter
                && percent >= 100
            {
                return Err(PolicyError::JitterTooWide {
                    setting: name("jitter"),
                    percent,
                });
            }
            if backoff.budget.max_attempts == Some(0) {
                return Err(PolicyError::Zero {
                    setting: name("budget.max_attempts"),
                });
            }
            if let Some(span) = backoff.budget.min_span {
                at_most_a_century(&name("budget.min_span"), span)?;
            }
        }
        if self.loop_max_failures == 0 {
            return Err(PolicyError::Zero {
                setting: "loop_max_failures".to_owned(),
            });
        }
        let must_not_be_zero = [
            ("starting_timeout", self.starting_timeout),
            ("silence_threshold", self.silence_threshold),
            ("loop_window", self.loop_window),
            ("pairing_code_ttl", self.pairing_code_ttl),
            ("resync_interval", self.resync_interval),
            ("reread_after", self.reread_after),
        ];
        for (setting, value) in must_not_be_zero {
            non_zero(setting, value)?;
        }
        let may_be_zero = [
            ("reason_grace", self.reason_grace),
            ("self_heal_grace", self.self_heal_grace),
            ("restart_required_grace", self.restart_required_grace),
            ("stable_after", self.stable_after),
            ("temp_ban_fallback", self.temp_ban_fallback),
            ("temp_ban_jitter", self.temp_ban_jitter),
            ("temp_ban_memory", self.temp_ban_memory),
        ];
        for (setting, value) in must_not_be_zero.into_iter().chain(may_be_zero) {
            at_most_a_century(setting, value)?;
        }
        Ok(())
    }

    /// The policy table: what to do about `reason` (`docs/session-supervisor.md`, 5.1 and
    /// 5.2).
    pub fn action(&self, reason: Reason) -> Action {
        use BackoffClass::{Capacity, Infra, Provision, Session};
        match reason {
            Reason::LoggedOut => Action::RePair { logout: false },
            Reason::Forbidden => Action::Park(ParkReason::Forbidden),
            Reason::Banned => Action::Park(ParkReason::Banned),
            Reason::TemporarilyBanned => Action::TemporaryBan,
            Reason::ClientOutdated => Action::Park(ParkReason::ClientOutdated),
            // Never reconnect, never `takeoverOnConflict`: that is the endless 440 loop.
            Reason::Replaced => Action::Park(ParkReason::Replaced),
            Reason::MultideviceMismatch => Action::RePair { logout: true },
            Reason::BadSession => Action::RestartThenRePair,
            Reason::ConnectionLost | Reason::ConnectionClosed => Action::SelfHeal {
                grace: self.self_heal_grace,
                class: Session,
                report_proxy: true,
                first_immediate: false,
            },
            Reason::ProxyFailure => Action::RotateProxy { class: Session },
            Reason::WaUnavailable => Action::SelfHeal {
                grace: self.self_heal_grace,
                class: Session,
                report_proxy: false,
                first_immediate: false,
            },
            Reason::RestartRequired => Action::SelfHeal {
                grace: self.restart_required_grace,
                class: Session,
                report_proxy: false,
                first_immediate: true,
            },
            Reason::QrWindowExpired => Action::LoginExpired,
            Reason::FailedNoSignal | Reason::Unknown | Reason::SessionRejected => {
                Action::Retry { class: Session }
            }
            Reason::Silent => Action::Probe,
            Reason::ContainerGone | Reason::Unauthorized => Action::EnsureContainer,
            Reason::TenantInactive => Action::StopTenant,
            Reason::TenantMissing => Action::Park(ParkReason::TenantMissing),
            Reason::QuotaExceeded | Reason::PortsExhausted | Reason::ProxyBusy => {
                Action::Retry { class: Capacity }
            }
            Reason::ChipSlotMissing => Action::RepairChipSlot,
            Reason::VersionConflict | Reason::StaleView => Action::Resync,
            Reason::Infra => Action::Retry { class: Infra },
            Reason::Transient | Reason::StepDeadline | Reason::ContainerFailed => {
                Action::Retry { class: Provision }
            }
            Reason::ImageMissing => Action::Park(ParkReason::ImageMissing),
            Reason::VolumeConflict => Action::Park(ParkReason::VolumeConflict),
            Reason::ContainerConfig => Action::Park(ParkReason::ContainerConfig),
            Reason::ProxyConfig => Action::Park(ParkReason::ProxyConfig),
            Reason::ProxyLeaseLost => Action::LeaseAgain,
            Reason::InvalidSessionConfig => Action::Park(ParkReason::InvalidSessionConfig),
            Reason::UnsupportedServer => Action::Park(ParkReason::UnsupportedServer),
            Reason::Corrupt => Action::Park(ParkReason::Corrupt),
            Reason::StaleOwner => Action::DropTenant,
        }
    }

    /// Whether `reason` is acted on before anything else: the session must stop at once
    /// (park, login expired, temporary ban), even before provisioning is repaired.
    pub fn stops_at_once(&self, reason: Reason) -> bool {
        matches!(
            self.action(reason),
            Action::Park(_) | Action::LoginExpired | Action::TemporaryBan
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RetryBudget;

    #[test]
    fn the_default_policy_is_valid() {
        assert_eq!(Policy::default().validate(), Ok(()));
    }

    /// The policy with `change` applied must be refused; the error.
    fn refused(change: impl FnOnce(&mut Policy)) -> PolicyError {
        let mut policy = Policy::default();
        change(&mut policy);
        policy.validate().expect_err("refused")
    }

    fn zero(setting: &str) -> PolicyError {
        PolicyError::Zero {
            setting: setting.to_owned(),
        }
    }

    fn duration_mut<'a>(policy: &'a mut Policy, setting: &str) -> &'a mut Duration {
        match setting {
            "starting_timeout" => &mut policy.starting_timeout,
            "silence_threshold" => &mut policy.silence_threshold,
            "loop_window" => &mut policy.loop_window,
            "pairing_code_ttl" => &mut policy.pairing_code_ttl,
            "resync_interval" => &mut policy.resync_interval,
            "reread_after" => &mut policy.reread_after,
            "reason_grace" => &mut policy.reason_grace,
            "self_heal_grace" => &mut policy.self_heal_grace,
            "temp_ban_memory" => &mut policy.temp_ban_memory,
            other => panic!("no duration setting {other}"),
        }
    }

    #[test]
    fn validate_refuses_zero_delays_factors_and_intervals() {
        assert_eq!(
            refused(|p| p.classes.session.base = Duration::ZERO),
            zero("classes.session.base")
        );
        assert_eq!(
            refused(|p| p.classes.infra.factor = 0),
            zero("classes.infra.factor")
        );
        assert_eq!(
            refused(|p| p.classes.provision.cap = Duration::ZERO),
            zero("classes.provision.cap")
        );
        for setting in [
            "starting_timeout",
            "silence_threshold",
            "loop_window",
            "pairing_code_ttl",
            "resync_interval",
            "reread_after",
        ] {
            let error = refused(|p| *duration_mut(p, setting) = Duration::ZERO);
            assert_eq!(error, zero(setting));
            assert_eq!((error.kind(), error.setting()), ("zero", setting));
        }
        for setting in ["reason_grace", "self_heal_grace"] {
            let mut policy = Policy::default();
            *duration_mut(&mut policy, setting) = Duration::ZERO;
            assert_eq!(policy.validate(), Ok(()), "{setting} may be zero");
        }
    }

    #[test]
    fn validate_refuses_settings_that_park_at_once() {
        let parks = refused(|p| p.loop_max_failures = 0);
        assert_eq!(parks, zero("loop_max_failures"));
        assert!(parks.to_string().contains("loop_max_failures"));
        assert_eq!(
            refused(|p| {
                p.classes.capacity.budget = RetryBudget {
                    max_attempts: Some(0),
                    min_span: None,
                };
            }),
            zero("classes.capacity.budget.max_attempts")
        );
    }

    #[test]
    fn validate_refuses_jitter_that_reaches_zero() {
        let wide = refused(|p| p.classes.capacity.jitter = Jitter::Proportional { percent: 100 });
        assert_eq!(
            wide,
            PolicyError::JitterTooWide {
                setting: "classes.capacity.jitter".to_owned(),
                percent: 100,
            }
        );
        assert_eq!(wide.kind(), "jitter_too_wide");
        assert_eq!(
            refused(|p| p.classes.session.jitter = Jitter::Proportional { percent: u8::MAX })
                .kind(),
            "jitter_too_wide"
        );
        let mut policy = Policy::default();
        policy.classes.capacity.jitter = Jitter::Proportional { percent: 99 };
        assert_eq!(policy.validate(), Ok(()), "99 % never reaches zero");
    }

    #[test]
    fn validate_refuses_durations_that_overflow_a_time() {
        let long = refused(|p| p.classes.session.cap = Duration::MAX);
        assert_eq!(long.kind(), "too_long");
        assert_eq!(long.setting(), "classes.session.cap");
        let memory = refused(|p| *duration_mut(p, "temp_ban_memory") = Duration::MAX);
        assert_eq!(
            memory,
            PolicyError::TooLong {
                setting: "temp_ban_memory".to_owned(),
                value: Duration::MAX,
            }
        );
        let policy = Policy {
            temp_ban_memory: LONGEST_SETTING,
            ..Policy::default()
        };
        assert_eq!(policy.validate(), Ok(()), "a century is allowed");
    }

    #[test]
    fn every_reason_has_an_action_and_the_field_traps_are_stopped() {
        let policy = Policy::default();
        // An engine signal always leads to an action on the chip, never to a plain re-read.
        for reason in &Reason::ALL[..18] {
            assert!(
                !matches!(
                    policy.action(*reason),
                    Action::Resync | Action::DropTenant | Action::StopTenant
                ),
                "{reason}"
            );
        }
        // The endless 440 and the 405 retried dozens of times: parked, never reconnected.
        assert_eq!(
            policy.action(Reason::Replaced),
            Action::Park(ParkReason::Replaced)
        );
        assert_eq!(
            policy.action(Reason::ClientOutdated),
            Action::Park(ParkReason::ClientOutdated)
        );
        assert!(policy.stops_at_once(Reason::Replaced));
        assert!(policy.stops_at_once(Reason::TemporarilyBanned));
        assert!(policy.stops_at_once(Reason::QrWindowExpired));
        assert!(!policy.stops_at_once(Reason::ConnectionLost));
        // A deadline is retryable, never final.
        assert_eq!(
            policy.action(Reason::StepDeadline),
            Action::Retry {
                class: BackoffClass::Provision
            }
        );
        // A fleet-wide database outage never parks.
        let Action::Retry { class } = policy.action(Reason::Infra) else {
            panic!("infra is retried");
        };
        assert_eq!(class, BackoffClass::Infra);
        assert_eq!(policy.classes.get(class).budget.max_attempts, None);
        assert!(matches!(
            policy.action(Reason::ConnectionLost),
            Action::SelfHeal {
                report_proxy: true,
                ..
            }
        ));
    }
}
