//! The one policy table: a [`Reason`] to an [`Action`], and the timings `decide` uses.

use std::time::Duration;

use container_pool::Engine;

use super::{BackoffClass, BackoffClasses, ParkReason, Reason};

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
