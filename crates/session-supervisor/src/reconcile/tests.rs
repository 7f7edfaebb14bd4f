//! Table and scenario tests of `decide` and `apply`, on a `ManualClock`, without I/O.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use container_pool::{ContainerId, Engine, Placement};
use fleet_vocab::{Clock, ManualClock};
use proxy_allocator::{EndpointId, LeaseHealth, ProxyLease};
use serde_json::json;
use tenant_isolation::{ChipId, TenantId};
use waha_client::{Me, SessionStatus, TransientCause, WahaError};

use super::*;
use crate::chip::{
    ChipKey, ChipRecord, ChipSpec, ContainerRef, Desired, LastError, LoginOffer, PairingCodeSecret,
    PhoneNumber, ProxyRef, RunState, SessionRef,
};
use crate::phase::{Finalizers, LoginKind, Phase, StopCause};
use crate::policy::{ParkReason, Policy, Reason, RestartBudgets, classify_engine_event};
use crate::signal::{Signal, SignalBody};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn me() -> Me {
    Me::new("5511999999999@c.us", Some("Sales".into()))
}

fn container() -> ContainerRef {
    ContainerRef {
        name: "waha-acme-0".into(),
        id: ContainerId::new("container-1"),
        base_url: "http://127.0.0.1:3000".parse().expect("a URL"),
        ready_at: UNIX_EPOCH,
    }
}

fn running(container: &ContainerRef) -> ContainerSeen {
    ContainerSeen::Running {
        id: container.id.clone(),
        base_url: container.base_url.clone(),
    }
}

/// One chip, its world and a clock; `apply`'s patches are committed as a store would.
struct Harness {
    clock: ManualClock,
    policy: Policy,
    record: ChipRecord,
    world: World,
}

impl Harness {
    fn for_chip(tenant: &str, chip: &str, spec: ChipSpec, engine: Engine) -> Self {
        let clock = ManualClock::new(UNIX_EPOCH + secs(1_700_000_000));
        let key = ChipKey::new(
            TenantId::new(tenant).expect("a tenant id"),
            ChipId::new(chip).expect("a chip id"),
        );
        let record = ChipRecord::new(key, spec, true, clock.now());
        let mut world = World::new(clock.now(), Placement::new(4).expect("a placement"), engine);
        world.tenant = TenantSeen::Active;
        world.container = ContainerSeen::Missing;
        Harness {
            clock,
            policy: Policy::default(),
            record,
            world,
        }
    }

    fn new(spec: ChipSpec) -> Self {
        Harness::for_chip("acme", "sales-1", spec, Engine::Noweb)
    }

    fn now(&self) -> SystemTime {
        self.clock.now()
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    fn decide(&mut self) -> Decision {
        self.world.now = self.clock.now();
        decide(&self.record, &self.world, &self.policy)
    }

    fn apply(&mut self, decision: &Decision, result: Result<Outcome, StepError>) {
        let patch = apply(&self.record, &self.world, decision, &result, &self.policy);
        self.record.commit_observed(patch, self.world.now);
    }

    /// Decides, checks the step, and applies `outcome` as the step's success.
    fn expect(&mut self, step: Step, outcome: Outcome) -> Decision {
        let decision = self.decide();
        assert_eq!(
            decision.step, step,
            "in phase {:?}",
            self.record.observed.phase
        );
        self.apply(&decision, Ok(outcome));
        decision
    }

    /// Decides, checks the step, and applies `error` as its failure.
    fn expect_failing(&mut self, step: Step, error: StepError) {
        let decision = self.decide();
        assert_eq!(
            decision.step, step,
            "in phase {:?}",
            self.record.observed.phase
        );
        self.apply(&decision, Err(error));
    }

    fn present(&mut self, status: SessionStatus) {
        self.world.session = SessionSeen::Present {
            status,
            config_equivalent: true,
            me: None,
        };
    }

    fn present_working(&mut self) {
        self.world.session = SessionSeen::Present {
            status: SessionStatus::Working,
            config_equivalent: true,
            me: Some(me()),
        };
    }

    fn signal(&mut self, body: SignalBody) {
        let seq = self.world.last_signal_seq().unwrap_or(0) + 1;
        let at = self.clock.now();
        self.world.signals.push(Signal { seq, at, body });
    }

    /// A signal observed at `at` (a late delivery).
    fn signal_at(&mut self, at: SystemTime, body: SignalBody) {
        let seq = self.world.last_signal_seq().unwrap_or(0) + 1;
        self.world.signals.push(Signal { seq, at, body });
    }

    fn disconnect(&mut self, reason: Reason) {
        self.signal(SignalBody::Disconnect {
            reason,
            ban_expires: None,
        });
    }

    fn change_desired(&mut self, change: impl FnOnce(&mut Desired)) {
        let mut desired = self.record.desired.clone();
        change(&mut desired);
        self.record.commit_desired(desired, self.clock.now());
    }

    fn lease(&self, generation: u64) -> ProxyLease {
        ProxyLease {
            tenant: self.record.key.tenant.clone(),
            chip: self.record.key.chip.clone(),
            endpoint: EndpointId::new(format!("http://203.0.113.{generation}:3128"))
                .expect("an endpoint id"),
            session_id: None,
            country: None,
            generation,
            assigned_at: UNIX_EPOCH,
            health: LeaseHealth::Healthy,
            consecutive_failures: 0,
            last_failure_at: None,
            egress_ip: None,
        }
    }

    fn plan(&self, proxy_generation: u64) -> SessionPlan {
        SessionPlan {
            name: self.record.key.session_name(),
            proxy_generation,
        }
    }

    /// Drives a new QR chip to `WORKING` (each step is checked in
    /// `from_created_to_working_step_by_step`).
    fn drive_to_working(&mut self) {
        self.drive_to_qr();
        self.present_working();
        self.expect(Step::ConfirmWorking, Outcome::LoggedIn(me()));
        assert!(matches!(self.record.observed.phase, Phase::Working { .. }));
    }

    /// Drives a new QR chip to `AwaitingLogin { Qr }`.
    fn drive_to_qr(&mut self) {
        self.drive_to_scan();
        let since = self.now();
        self.expect(
            Step::Record {
                phase: Phase::AwaitingLogin {
                    method: LoginKind::Qr,
                    since,
                },
            },
            Outcome::Done,
        );
    }

    /// Drives a new chip through its start until WAHA reports `SCAN_QR_CODE` (not acted on
    /// yet).
    fn drive_to_scan(&mut self) {
        self.expect(Step::ReserveRunningSlot, Outcome::Done);
        let slot = self.world.placement.place(&self.world.occupancy);
        self.expect(Step::PlaceChip { slot }, Outcome::Done);
        self.expect(
            Step::EnsureContainer { slot },
            Outcome::Container(container()),
        );
        self.world.container = running(&container());
        let lease = self.lease(1);
        self.expect(Step::LeaseProxy, Outcome::Lease(ProxyRef::from(&lease)));
        self.world.lease = Some(lease);
        self.world.session = SessionSeen::Missing;
        let plan = self.plan(1);
        let session = SessionRef {
            name: plan.name.clone(),
            proxy_generation: 1,
            ensured_at: self.now(),
        };
        self.expect(
            Step::EnsureSession {
                plan,
                budgeted: false,
            },
            Outcome::Session {
                session,
                status: SessionStatus::Stopped,
            },
        );
        self.present(SessionStatus::Stopped);
        self.expect(
            Step::StartSession { budgeted: false },
            Outcome::Status(SessionStatus::Starting),
        );
        self.present(SessionStatus::ScanQrCode);
    }

    fn last_reason(&self) -> Option<Reason> {
        self.record.observed.last_error.as_ref().map(|e| e.reason)
    }
}

#[test]
fn from_created_to_working_step_by_step() {
    let mut h = Harness::new(ChipSpec::qr());
    h.expect(Step::ReserveRunningSlot, Outcome::Done);
    assert_eq!(
        h.record.observed.phase,
        Phase::Provisioning {
            next: StepKind::PlaceChip
        }
    );
    assert!(h.record.observed.running_slot);

    // Slot 0 is full (4 per container): the chip opens slot 1, and stays there.
    h.world.occupancy = vec![4, 1];
    h.expect(Step::PlaceChip { slot: 1 }, Outcome::Done);
    assert_eq!(h.record.observed.placement, Some(1));
    h.expect(
        Step::EnsureContainer { slot: 1 },
        Outcome::Container(container()),
    );

    h.world.container = running(&container());
    let lease = h.lease(1);
    h.expect(Step::LeaseProxy, Outcome::Lease(ProxyRef::from(&lease)));
    h.world.lease = Some(lease);

    h.world.session = SessionSeen::Missing;
    let plan = h.plan(1);
    assert_eq!(plan.name.as_str(), "cf_acme_sales-1");
    let session = SessionRef {
        name: plan.name.clone(),
        proxy_generation: 1,
        ensured_at: h.now(),
    };
    h.expect(
        Step::EnsureSession {
            plan,
            budgeted: false,
        },
        Outcome::Session {
            session,
            status: SessionStatus::Stopped,
        },
    );

    h.present(SessionStatus::Stopped);
    h.expect(
        Step::StartSession { budgeted: false },
        Outcome::Status(SessionStatus::Starting),
    );
    assert_eq!(
        h.record.observed.phase,
        Phase::Provisioning {
            next: StepKind::ConfirmWorking
        }
    );

    // STARTING (the seed's booting server): waiting is no failure until the timeout.
    h.present(SessionStatus::Starting);
    let started = h.now();
    assert_eq!(
        h.decide().step,
        Step::Wait {
            until: Some(started + h.policy.starting_timeout)
        }
    );

    h.advance(secs(3));
    h.present(SessionStatus::ScanQrCode);
    let qr_at = h.now();
    h.expect(
        Step::Record {
            phase: Phase::AwaitingLogin {
                method: LoginKind::Qr,
                since: qr_at,
            },
        },
        Outcome::Done,
    );
    assert_eq!(
        h.record.observed.login,
        Some(LoginOffer::Qr {
            window_started_at: qr_at
        })
    );
    assert!(
        matches!(h.decide().step, Step::Wait { until: Some(_) }),
        "the phone has to scan"
    );

    h.advance(secs(20));
    h.present_working();
    h.expect(Step::ConfirmWorking, Outcome::LoggedIn(me()));
    let observed = &h.record.observed;
    assert_eq!(observed.phase, Phase::Working { since: h.now() });
    assert_eq!(observed.me, Some(me()));
    assert_eq!(observed.login, None, "the login window closed");
    assert!(observed.pacer_activated);
    assert_eq!(observed.acted_on, 1);

    // Nothing to do: wait for the resync (5 min ± 10 %), well before the silence threshold.
    let Step::Wait { until: Some(until) } = h.decide().step else {
        panic!("a working chip waits");
    };
    assert!(until > h.now() && until <= h.now() + h.policy.resync_interval * 11 / 10);

    // Every step's outcome is in the log, in order.
    let steps: Vec<StepKind> = h.record.steps.iter().map(|entry| entry.step).collect();
    assert_eq!(
        steps,
        [
            StepKind::ReserveRunningSlot,
            StepKind::PlaceChip,
            StepKind::EnsureContainer,
            StepKind::LeaseProxy,
            StepKind::EnsureSession,
            StepKind::StartSession,
            StepKind::Record,
            StepKind::ConfirmWorking,
        ]
    );
    assert_eq!(h.record.observed_version, 9);
}

#[test]
fn pairing_code_is_requested_once_and_the_window_expires_to_the_host() {
    let phone = PhoneNumber::new("+5511999999999").expect("a phone number");
    let mut h = Harness::new(ChipSpec::pairing_code(phone));
    h.expect(Step::ReserveRunningSlot, Outcome::Done);
    h.expect(Step::PlaceChip { slot: 0 }, Outcome::Done);
    h.expect(
        Step::EnsureContainer { slot: 0 },
        Outcome::Container(container()),
    );
    h.world.container = running(&container());
    h.world.lease = Some(h.lease(1));
    h.present(SessionStatus::Stopped);
    let session = SessionRef {
        name: h.record.key.session_name(),
        proxy_generation: 1,
        ensured_at: h.now(),
    };
    // The session exists already (a crash after its create): ensuring it changes nothing,
    // so it needs no budget.
    h.expect(
        Step::EnsureSession {
            plan: h.plan(1),
            budgeted: false,
        },
        Outcome::Session {
            session,
            status: SessionStatus::Stopped,
        },
    );
    h.expect(
        Step::StartSession { budgeted: false },
        Outcome::Status(SessionStatus::Starting),
    );

    h.present(SessionStatus::ScanQrCode);
    let expires_at = h.now() + h.policy.pairing_code_ttl;
    h.expect(
        Step::RequestPairingCode,
        Outcome::PairingCode {
            code: PairingCodeSecret::new("ABCD-EFGH"),
            expires_at,
        },
    );
    assert_eq!(
        h.record.observed.phase,
        Phase::AwaitingLogin {
            method: LoginKind::PairingCode,
            since: h.now()
        }
    );
    let offer = h.record.observed.login.clone().expect("an offer");
    assert_eq!(
        offer
            .live_pairing_code(h.now())
            .map(|code| code.expose_secret()),
        Some("ABCD-EFGH")
    );

    // Never requested again by itself, also once the code expired.
    h.advance(h.policy.pairing_code_ttl + secs(1));
    assert!(matches!(h.decide().step, Step::Wait { .. }));

    // FAILED after SCAN_QR_CODE: noted, then, without a signal within the reason grace, the
    // QR window ran out.
    h.present(SessionStatus::Failed);
    let phase = h.record.observed.phase;
    h.expect(Step::Record { phase }, Outcome::Done);
    h.advance(h.policy.reason_grace);
    let expired = h.now();
    h.expect(
        Step::Record {
            phase: Phase::LoginExpired { since: expired },
        },
        Outcome::Done,
    );
    assert_eq!(h.last_reason(), Some(Reason::QrWindowExpired));
    assert_eq!(h.record.observed.login, None);
    h.expect(
        Step::StopSession {
            cause: StopCause::Held,
        },
        Outcome::Done,
    );
    h.present(SessionStatus::Stopped);
    h.expect(Step::ReleaseRunningSlot, Outcome::Done);
    assert_eq!(
        h.decide().step,
        Step::Wait { until: None },
        "waits for the host"
    );

    // The host asks for a new code: a new login window, afresh.
    h.change_desired(Desired::request_login);
    h.expect(Step::ReserveRunningSlot, Outcome::Done);
    h.expect(
        Step::StartSession { budgeted: false },
        Outcome::Status(SessionStatus::Starting),
    );
    assert_eq!(h.record.observed.applied.login, 1);
    assert_eq!(h.record.observed.last_error, None);
    h.present(SessionStatus::ScanQrCode);
    assert_eq!(h.decide().step, Step::RequestPairingCode);
}

#[test]
fn replaced_is_parked_and_never_reconnected_on_every_engine() {
    let noweb_440 = json!({
        "connection": "close",
        "lastDisconnect": {"error": {"output": {"statusCode": 440,
            "payload": {"statusCode": 440, "error": "Unknown",
                        "message": "Stream Errored (conflict)"}}}},
    });
    let engines = [
        (Engine::Noweb, "connection.update", noweb_440),
        (Engine::Gows, "events.StreamReplaced", json!({})),
        (Engine::Webjs, "disconnected", json!({"reason": "CONFLICT"})),
    ];
    for (engine, event, data) in engines {
        let mut h = Harness::for_chip("acme", "sales-1", ChipSpec::qr(), engine);
        h.drive_to_working();
        let found = classify_engine_event(engine, event, &data).expect("a disconnect");
        let body = SignalBody::disconnect(found, h.now());
        h.signal(body);
        // NOWEB is already reconnecting; the supervisor parks at once anyway.
        h.present(SessionStatus::Starting);
        let at = h.now();
        h.expect(
            Step::Record {
                phase: Phase::Parked {
                    reason: ParkReason::Replaced,
                    since: at,
                },
            },
            Outcome::Done,
        );
        assert_eq!(h.record.observed.signals_applied, 1, "{engine}");
        assert_eq!(h.last_reason(), Some(Reason::Replaced));
        h.expect(
            Step::StopSession {
                cause: StopCause::Held,
            },
            Outcome::Done,
        );
        h.present(SessionStatus::Stopped);
        h.expect(Step::ReleaseRunningSlot, Outcome::Done);
        for _ in 0..3 {
            h.advance(secs(3_600));
            assert_eq!(h.decide().step, Step::Wait { until: None }, "{engine}");
        }
        // If WAHA brings it back by itself, it is stopped again, never confirmed.
        h.present_working();
        assert_eq!(
            h.decide().step,
            Step::StopSession {
                cause: StopCause::Held
            }
        );

        // Only the host restarts a parked chip, and it starts afresh.
        h.present(SessionStatus::Stopped);
        h.change_desired(Desired::request_restart);
        h.expect(Step::ReserveRunningSlot, Outcome::Done);
        h.expect(
            Step::RestartSession { budgeted: false },
            Outcome::Status(SessionStatus::Starting),
        );
        assert_eq!(h.record.observed.last_error, None);
        assert!(matches!(
            h.record.observed.phase,
            Phase::Provisioning { .. }
        ));
    }
}

#[test]
fn account_signals_follow_the_table() {
    // Logged out: re-pair by restarting (a budgeted restart), `me` forgotten.
    let mut h = Harness::new(ChipSpec::qr());
    h.drive_to_working();
    h.disconnect(Reason::LoggedOut);
    h.present(SessionStatus::Failed);
    h.expect(
        Step::RestartSession { budgeted: true },
        Outcome::Status(SessionStatus::Starting),
    );
    assert_eq!(h.record.observed.me, None);
    assert_eq!(h.last_reason(), Some(Reason::LoggedOut));

    // Multi-device mismatch: log out first.
    let mut h = Harness::new(ChipSpec::qr());
    h.drive_to_working();
    h.disconnect(Reason::MultideviceMismatch);
    h.expect(
        Step::LogoutSession { budgeted: true },
        Outcome::Status(SessionStatus::Starting),
    );
    assert_eq!(h.record.observed.me, None);

    // Client outdated: parked (the 405 retried dozens of times).
    let mut h = Harness::new(ChipSpec::qr());
    h.drive_to_working();
    h.disconnect(Reason::ClientOutdated);
    let at = h.now();
    assert_eq!(
        h.decide().step,
        Step::Record {
            phase: Phase::Parked {
                reason: ParkReason::ClientOutdated,
                since: at
            }
        }
    );

    // A parking signal wins over a later, milder one.
    let mut h = Harness::new(ChipSpec::qr());
    h.drive_to_working();
    h.disconnect(Reason::Replaced);
    h.disconnect(Reason::ConnectionClosed);
    assert!(matches!(
        h.decide().step,
        Step::Record {
            phase: Phase::Parked {
                reason: ParkReason::Replaced,
                ..
            }
        }
    ));
}

#[test]
fn a_temporary_ban_waits_for_its_expiry_and_a_second_one_parks() {
    let mut h = Harness::for_chip("acme", "sales-1", ChipSpec::qr(), Engine::Gows);
    h.drive_to_working();
    let found = classify_engine_event(
        Engine::Gows,
        "events.TemporaryBan",
        &json!({"Code": 101, "Expire": 3_600_000_000_000_u64}),
    )
    .expect("a ban");
    let body = SignalBody::disconnect(found, h.now());
    h.signal(body);
    let banned_at = h.now();
    let decision = h.decide();
    let Step::Record {
        phase:
            Phase::BackingOff {
                reason: Reason::TemporarilyBanned,
                attempt: 1,
                next_try,
            },
    } = decision.step
    else {
        panic!("a ban backs off, got {:?}", decision.step);
    };
    let expiry = banned_at + secs(3_600);
    assert!(next_try >= expiry && next_try <= expiry + h.policy.temp_ban_jitter);
    h.apply(&decision, Ok(Outcome::Done));
    assert_eq!(h.record.observed.temp_bans, [banned_at]);
    assert_eq!(h.record.observed.next_try, Some(next_try));

    // The session stays stopped during the ban, even if WAHA restarts it.
    h.expect(
        Step::StopSession {
            cause: StopCause::Held,
        },
        Outcome::Done,
    );
    h.present(SessionStatus::Stopped);
    h.advance(secs(1_800));
    assert_eq!(
        h.decide().step,
        Step::Wait {
            until: Some(next_try)
        }
    );

    // After the ban: a budgeted start.
    h.clock.set(next_try);
    h.expect(
        Step::StartSession { budgeted: true },
        Outcome::Status(SessionStatus::Starting),
    );
    h.present_working();
    h.expect(Step::ConfirmWorking, Outcome::LoggedIn(me()));

    // A second ban within 7 days parks `banned`.
    h.advance(secs(24 * 3_600));
    let body = SignalBody::disconnect(found, h.now());
    h.signal(body);
    let at = h.now();
    assert_eq!(
        h.decide().step,
        Step::Record {
            phase: Phase::Parked {
                reason: ParkReason::Banned,
                since: at
            }
        }
    );
}

#[test]
fn a_lost_connection_heals_by_itself_or_reports_the_proxy_and_rotates() {
    let mut h = Harness::new(ChipSpec::qr());
    h.drive_to_working();
    let working_since = h.now();

    // WAHA restarts the session itself: the supervisor waits for the self-heal grace.
    h.disconnect(Reason::ConnectionLost);
    let lost_at = h.now();
    h.present(SessionStatus::Starting);
    assert_eq!(
        h.decide().step,
        Step::Wait {
            until: Some(lost_at + h.policy.self_heal_grace)
        }
    );
    // ... and WORKING came back: healed, counted, folded.
    h.advance(secs(10));
    h.present_working();
    h.expect(
        Step::Record {
            phase: Phase::Working {
                since: working_since,
            },
        },
        Outcome::Done,
    );
    assert_eq!(h.record.observed.signals_applied, 1);
    assert_eq!(h.last_reason(), Some(Reason::ConnectionLost));
    assert_eq!(h.record.observed.failures.iter().count(), 1);

    // Lost again and not back within the grace: the failure goes to the proxy allocator on
    // the lease generation.
    h.advance(secs(60));
    h.disconnect(Reason::ConnectionLost);
    h.present(SessionStatus::Starting);
    h.advance(h.policy.self_heal_grace);
    let rotated = h.lease(2);
    h.expect(
        Step::ReportProxyFailure { generation: 1 },
        Outcome::ProxyReport(ProxyReport::Rotated {
            to: ProxyRef::from(&rotated),
        }),
    );
    assert_eq!(
        h.record.observed.phase,
        Phase::Provisioning {
            next: StepKind::EnsureSession
        }
    );
    assert_eq!(h.record.observed.proxy, Some(ProxyRef::from(&rotated)));

    // The session is ensured again through the new proxy (a PUT restarts it: budgeted).
    h.world.lease = Some(rotated);
    h.world.session = SessionSeen::Present {
        status: SessionStatus::Starting,
        config_equivalent: false,
        me: None,
    };
    assert_eq!(
        h.decide().step,
        Step::EnsureSession {
            plan: h.plan(2),
            budgeted: true
        }
    );

    // Without a rotation the chip backs off in the session class.
    let mut h = Harness::new(ChipSpec::qr());
    h.drive_to_working();
    h.disconnect(Reason::ConnectionClosed);
    h.present(SessionStatus::Starting);
    h.advance(h.policy.self_heal_grace);
    h.expect(
        Step::ReportProxyFailure { generation: 1 },
        Outcome::ProxyReport(ProxyReport::Counted),
    );
    let Phase::BackingOff {
        reason: Reason::ConnectionClosed,
        attempt: 1,
        next_try,
    } = h.record.observed.phase
    else {
        panic!("backs off, got {:?}", h.record.observed.phase);
    };
    let delay = next_try.duration_since(h.now()).expect("in the future");
    assert!(delay >= secs(2) && delay <= secs(5), "{delay:?}");
}

#[test]
fn restart_required_restarts_at_once_after_its_grace() {
    let mut h = Harness::new(ChipSpec::qr());
    h.drive_to_working();
    h.disconnect(Reason::RestartRequired);
    h.present(SessionStatus::Starting);
    h.advance(h.policy.restart_required_grace);
    let now = h.now();
    h.expect(
        Step::Record {
            phase: Phase::BackingOff {
                reason: Reason::RestartRequired,
                attempt: 1,
                next_try: now,
            },
        },
        Outcome::Done,
    );
    // Due at once, but budgeted: without a token, it waits and the attempt does not move.
    h.world.budget = BudgetSeen::NextAt(now + secs(3));
    assert_eq!(
        h.decide().step,
        Step::Wait {
            until: Some(now + secs(3))
        }
    );
    h.world.budget = BudgetSeen::Granted;
    h.expect(
        Step::RestartSession { budgeted: true },
        Outcome::Status(SessionStatus::Starting),
    );
    assert_eq!(
        h.record.observed.last_error.as_ref().map(|e| e.attempt),
        Some(1)
    );
}

#[test]
fn backoff_delays_grow_and_repeated_failures_park_looping() {
    let mut h = Harness::new(ChipSpec::qr());
    h.drive_to_working();
    let mut gaps = Vec::new();
    let parked = loop {
        // FAILED without a signal: noted, then classified after the reason grace.
        h.present(SessionStatus::Failed);
        let noted = h.decide();
        assert_eq!(
            noted.step,
            Step::Record {
                phase: h.record.observed.phase
            },
            "the new status is noted first"
        );
        h.apply(&noted, Ok(Outcome::Done));
        assert_eq!(
            h.decide().step,
            Step::Wait {
                until: Some(h.now() + h.policy.reason_grace)
            }
        );
        h.advance(h.policy.reason_grace);
        let decision = h.decide();
        let Step::Record { phase } = decision.step else {
            panic!("a failure is recorded, got {:?}", decision.step);
        };
        h.apply(&decision, Ok(Outcome::Done));
        match phase {
            Phase::BackingOff {
                reason: Reason::FailedNoSignal,
                attempt,
                next_try,
            } => {
                assert_eq!(attempt as usize, gaps.len() + 1);
                gaps.push(next_try.duration_since(h.now()).expect("ahead"));
                h.clock.set(next_try);
                h.expect(
                    Step::RestartSession { budgeted: true },
                    Outcome::Status(SessionStatus::Starting),
                );
            }
            Phase::Parked { reason, .. } => break reason,
            other => panic!("unexpected phase {other:?}"),
        }
    };
    assert_eq!(
        parked,
        ParkReason::Looping {
            last_reason: Reason::FailedNoSignal
        }
    );
    assert_eq!(
        gaps.len(),
        5,
        "the 6th failure within the loop window parks"
    );
    assert!(gaps.windows(2).all(|pair| pair[0] <= pair[1]), "{gaps:?}");
    assert!(gaps.iter().all(|gap| *gap <= secs(600)));
    // A parked chip is stopped and waits for the host.
    h.expect(
        Step::StopSession {
            cause: StopCause::Held,
        },
        Outcome::Done,
    );
}

#[test]
fn a_deadline_is_retried_and_only_the_budget_parks() {
    let mut h = Harness::new(ChipSpec::qr());
    h.expect(Step::ReserveRunningSlot, Outcome::Done);
    h.expect(Step::PlaceChip { slot: 0 }, Outcome::Done);
    let first = h.now();
    let timeout = container_pool::Error::StartupTimeout {
        container: "waha-acme-0".into(),
        elapsed: secs(180),
        deadline: secs(180),
        last_probe_error: "HTTP 400 while booting".into(),
    };
    let mut attempts = 0;
    let parked = loop {
        h.expect_failing(
            Step::EnsureContainer { slot: 0 },
            StepError::from_pool(&timeout),
        );
        attempts += 1;
        match h.record.observed.phase {
            Phase::BackingOff {
                reason: Reason::Transient,
                attempt,
                next_try,
            } => {
                assert_eq!(attempt, attempts);
                assert!(next_try.duration_since(h.now()).expect("ahead") <= secs(300));
                h.clock.set(next_try);
            }
            Phase::Parked { reason, .. } => break reason,
            other => panic!("unexpected phase {other:?}"),
        }
        assert!(attempts < 100, "the budget must end the retries");
    };
    assert_eq!(
        parked,
        ParkReason::RetryBudgetSpent {
            last_reason: Reason::Transient
        }
    );
    assert!(attempts > 15, "15 attempts first ({attempts})");
    let elapsed = h.now().duration_since(first).expect("time passed");
    assert!(elapsed >= secs(30 * 60), "and 30 minutes ({elapsed:?})");
    let last = h
        .record
        .observed
        .last_error
        .clone()
        .expect("the last error");
    assert_eq!(last.kind, "startup_timeout");
    assert_eq!(last.first_at, first);
}

#[test]
fn a_reconnect_storm_is_bounded_by_the_restart_budgets() {
    // 20 tenants x 5 chips, all failed and due at the same moment.
    let mut chips: Vec<Harness> = Vec::new();
    for tenant in 0..20 {
        for chip in 0..5 {
            let mut h = Harness::for_chip(
                &format!("t{tenant}"),
                &format!("c{chip}"),
                ChipSpec::qr(),
                Engine::Noweb,
            );
            h.drive_to_working();
            let now = h.now();
            h.record.observed.phase = Phase::BackingOff {
                reason: Reason::FailedNoSignal,
                attempt: 1,
                next_try: now,
            };
            h.record.observed.last_error = Some(LastError {
                reason: Reason::FailedNoSignal,
                kind: "failed_no_signal".into(),
                detail: String::new(),
                attempt: 1,
                first_at: now,
                at: now,
            });
            h.present(SessionStatus::Failed);
            chips.push(h);
        }
    }
    let start = chips[0].now();
    let mut budgets = RestartBudgets::new(
        RestartBudgets::DEFAULT_TENANT,
        RestartBudgets::DEFAULT_GLOBAL,
        start,
    );
    let mut restarted = vec![false; chips.len()];
    let mut per_second = Vec::new();
    for second in 0..60 {
        let now = start + secs(second);
        let mut this_second = 0;
        for (h, done) in chips.iter_mut().zip(restarted.iter_mut()) {
            if *done {
                continue;
            }
            h.clock.set(now);
            let tenant = h.record.key.tenant.clone();
            h.world.budget = budgets.peek(&tenant, now);
            let decision = h.decide();
            if decision.step.budgeted() {
                assert_eq!(decision.step, Step::RestartSession { budgeted: true });
                assert_eq!(budgets.take(&tenant, now), BudgetSeen::Granted);
                *done = true;
                this_second += 1;
            } else {
                let Step::Wait { until: Some(until) } = decision.step else {
                    panic!("a denied restart waits, got {:?}", decision.step);
                };
                assert!(until > now, "it waits for the next token");
                assert_eq!(
                    h.record.observed.last_error.as_ref().map(|e| e.attempt),
                    Some(1),
                    "a denial is no attempt"
                );
            }
        }
        per_second.push(this_second);
    }
    assert_eq!(per_second[0], 30, "the global burst");
    assert!(
        per_second[1..].iter().all(|n| *n <= 2),
        "then 2 a second: {per_second:?}"
    );
    assert!(
        restarted.iter().all(|done| *done),
        "everyone restarts within a minute"
    );
}

#[test]
fn a_silent_session_is_probed_then_restarted_on_gows_only() {
    for (engine, restarts) in [(Engine::Gows, true), (Engine::Noweb, false)] {
        let mut h = Harness::for_chip("acme", "sales-1", ChipSpec::qr(), engine);
        h.drive_to_working();
        for probe in 1..=2 {
            h.advance(h.policy.silence_threshold);
            h.expect(
                Step::Probe,
                Outcome::Probe {
                    status: SessionStatus::Working,
                    me: Some(me()),
                },
            );
            assert_eq!(h.record.observed.silent_probes, probe);
        }
        h.advance(h.policy.silence_threshold);
        let decision = h.decide();
        let step = decision.step.clone();
        if restarts {
            let Step::Record {
                phase:
                    Phase::BackingOff {
                        reason: Reason::Silent,
                        next_try,
                        ..
                    },
            } = step
            else {
                panic!("GOWS's silent death is restarted: {step:?}");
            };
            h.apply(&decision, Ok(Outcome::Done));
            // WAHA still says WORKING: that is the silent death, not a healing.
            assert!(next_try > h.now());
            assert_eq!(
                h.decide().step,
                Step::Wait {
                    until: Some(next_try)
                }
            );
            h.clock.set(next_try);
            h.expect(
                Step::RestartSession { budgeted: true },
                Outcome::Status(SessionStatus::Starting),
            );
            assert_eq!(
                h.record.observed.phase,
                Phase::Provisioning {
                    next: StepKind::ConfirmWorking
                }
            );
            assert_eq!(h.last_reason(), Some(Reason::Silent));
        } else {
            assert_eq!(step, Step::Probe, "{engine} keeps probing");
        }
    }

    // An event resets the count.
    let mut h = Harness::for_chip("acme", "sales-1", ChipSpec::qr(), Engine::Gows);
    h.drive_to_working();
    h.advance(h.policy.silence_threshold);
    let ok = Outcome::Probe {
        status: SessionStatus::Working,
        me: Some(me()),
    };
    h.expect(Step::Probe, ok.clone());
    h.advance(secs(60));
    h.signal(SignalBody::Activity);
    h.advance(h.policy.silence_threshold);
    h.expect(Step::Probe, ok);
    assert_eq!(h.record.observed.silent_probes, 1);

    // A probe that finds the session down restarts it with backoff.
    h.advance(h.policy.silence_threshold);
    h.expect(
        Step::Probe,
        Outcome::Probe {
            status: SessionStatus::Working,
            me: None,
        },
    );
    assert!(matches!(
        h.record.observed.phase,
        Phase::BackingOff {
            reason: Reason::Silent,
            ..
        }
    ));
}

#[test]
fn a_suspended_tenant_stops_its_chips_and_reactivation_resumes() {
    let mut h = Harness::new(ChipSpec::qr());
    h.drive_to_working();
    h.world.tenant = TenantSeen::Suspended;
    h.expect(
        Step::StopSession {
            cause: StopCause::TenantInactive,
        },
        Outcome::Done,
    );
    h.present(SessionStatus::Stopped);
    h.expect(Step::ReleaseRunningSlot, Outcome::Done);
    h.expect(
        Step::Record {
            phase: Phase::Stopped {
                cause: StopCause::TenantInactive,
            },
        },
        Outcome::Done,
    );
    assert_eq!(h.decide().step, Step::Wait { until: None });

    h.world.tenant = TenantSeen::Active;
    h.expect(Step::ReserveRunningSlot, Outcome::Done);
    h.expect(
        Step::StartSession { budgeted: false },
        Outcome::Status(SessionStatus::Starting),
    );

    // A tenant that vanished parks its chips; an unread tenant is read again.
    h.world.tenant = TenantSeen::Missing;
    let at = h.now();
    h.expect(
        Step::Record {
            phase: Phase::Parked {
                reason: ParkReason::TenantMissing,
                since: at,
            },
        },
        Outcome::Done,
    );
    h.world.tenant = TenantSeen::Unread;
    assert_eq!(
        h.decide().step,
        Step::Wait {
            until: Some(at + h.policy.reread_after)
        }
    );
}

#[test]
fn deletion_runs_every_finalizer_and_backs_off_instead_of_parking() {
    let mut h = Harness::new(ChipSpec::qr());
    h.drive_to_working();
    h.change_desired(|desired| desired.run = RunState::Deleted);

    // A finalizer failing with a "park" error backs off: deletion never parks.
    let invalid = WahaError::Invalid {
        messages: vec!["no".into()],
    };
    h.expect_failing(Step::DeleteSession, StepError::from_waha(&invalid));
    let Phase::Deleting { remaining } = h.record.observed.phase else {
        panic!("deleting, got {:?}", h.record.observed.phase);
    };
    assert!(remaining.session && remaining.proxy && remaining.chip_slot);
    let retry_at = h.record.observed.next_try.expect("a retry time");
    assert_eq!(
        h.decide().step,
        Step::Wait {
            until: Some(retry_at)
        }
    );

    h.clock.set(retry_at);
    h.expect(Step::DeleteSession, Outcome::Done);
    h.world.session = SessionSeen::Missing;
    h.expect(Step::ReleaseProxy, Outcome::Done);
    h.world.lease = None;
    h.expect(Step::ReleaseRunningSlot, Outcome::Done);
    h.expect(Step::ReleaseChipSlot, Outcome::Done);
    h.expect(Step::ForgetPacer, Outcome::Done);
    assert_eq!(
        h.record.observed.phase,
        Phase::Deleting {
            remaining: Finalizers::default()
        }
    );
    assert_eq!(h.decide().step, Step::RemoveRecord);

    // A session that may still live in a stopped container's volume: the container first.
    let mut h = Harness::new(ChipSpec::qr());
    h.drive_to_working();
    h.world.container = ContainerSeen::Missing;
    h.world.session = SessionSeen::Unread;
    h.change_desired(|desired| desired.run = RunState::Deleted);
    assert_eq!(h.decide().step, Step::EnsureContainer { slot: 0 });
}

#[test]
fn errors_go_through_the_table() {
    // The container is gone: ensured again after a short backoff.
    let mut h = Harness::new(ChipSpec::qr());
    h.drive_to_working();
    h.change_desired(Desired::request_restart);
    let refused = WahaError::Transient {
        cause: TransientCause::Connect,
        detail: "connection refused".into(),
    };
    h.expect_failing(
        Step::RestartSession { budgeted: false },
        StepError::from_waha(&refused),
    );
    assert_eq!(h.record.observed.container, None);
    assert_eq!(h.last_reason(), Some(Reason::ContainerGone));
    let next_try = h.record.observed.next_try.expect("backing off");
    h.clock.set(next_try);
    assert_eq!(h.decide().step, Step::EnsureContainer { slot: 0 });

    // A re-read (version conflict, stale view) is no attempt and changes no phase.
    let mut h = Harness::new(ChipSpec::qr());
    h.drive_to_working();
    let phase = h.record.observed.phase;
    let stale = StepError::from_waha(&WahaError::NotFound {
        message: "Session not found".into(),
    });
    h.change_desired(Desired::request_logout);
    h.expect_failing(Step::LogoutSession { budgeted: false }, stale);
    assert_eq!(h.record.observed.phase, phase);
    assert_eq!(h.record.observed.last_error, None);
    assert!(matches!(
        h.record.steps.last().map(|entry| &entry.outcome),
        Some(crate::chip::StepOutcome::Failed {
            reason: Reason::StaleView,
            ..
        })
    ));

    // No running slot left: the capacity class, never parked.
    let mut h = Harness::new(ChipSpec::qr());
    let full = tenant_isolation::Error::QuotaExceeded {
        tenant: h.record.key.tenant.clone(),
        limit: tenant_isolation::QuotaLimit::MaxRunningSessions,
        max: 1,
        in_use: 1,
    };
    for _ in 0..30 {
        h.expect_failing(Step::ReserveRunningSlot, StepError::from_tenant(&full));
        let Phase::BackingOff {
            reason: Reason::QuotaExceeded,
            next_try,
            ..
        } = h.record.observed.phase
        else {
            panic!("capacity backs off, got {:?}", h.record.observed.phase);
        };
        assert!(next_try.duration_since(h.now()).expect("ahead") <= secs(15 * 60 * 11 / 10));
        h.clock.set(next_try);
    }

    // A deadline of the step itself is retryable.
    let mut h = Harness::new(ChipSpec::qr());
    h.expect_failing(Step::ReserveRunningSlot, StepError::deadline(secs(240)));
    assert!(matches!(
        h.record.observed.phase,
        Phase::BackingOff {
            reason: Reason::StepDeadline,
            ..
        }
    ));
}

/// Drives a chip to `WORKING`, parks it `replaced` and holds it: session stopped, running slot
/// released.
fn parked_and_held(h: &mut Harness) {
    h.drive_to_working();
    h.disconnect(Reason::Replaced);
    let at = h.now();
    h.expect(
        Step::Record {
            phase: Phase::Parked {
                reason: ParkReason::Replaced,
                since: at,
            },
        },
        Outcome::Done,
    );
    h.expect(
        Step::StopSession {
            cause: StopCause::Held,
        },
        Outcome::Done,
    );
    h.present(SessionStatus::Stopped);
    h.expect(Step::ReleaseRunningSlot, Outcome::Done);
    assert_eq!(h.decide().step, Step::Wait { until: None });
}

#[test]
fn a_failed_stop_keeps_the_phase_and_is_retried_later() {
    // A parked chip whose stop fails stays parked; the stop is tried again at `next_try`.
    let mut h = Harness::new(ChipSpec::qr());
    h.drive_to_working();
    h.disconnect(Reason::Replaced);
    let at = h.now();
    let parked = Phase::Parked {
        reason: ParkReason::Replaced,
        since: at,
    };
    h.expect(Step::Record { phase: parked }, Outcome::Done);
    let stop = Step::StopSession {
        cause: StopCause::Held,
    };
    h.expect_failing(stop.clone(), StepError::deadline(secs(30)));
    assert_eq!(
        h.record.observed.phase, parked,
        "a failed stop never un-parks"
    );
    let retry = h.record.observed.next_try.expect("a retry time");
    assert!(retry > h.now());
    assert_eq!(h.decide().step, Step::Wait { until: Some(retry) });
    h.clock.set(retry);
    h.expect(stop, Outcome::Done);
    assert_eq!(h.record.observed.phase, parked);
    assert_eq!(h.record.observed.next_try, None);

    // Stopped by the host: a failed stop or release keeps the phase and waits too.
    let mut h = Harness::new(ChipSpec::qr());
    h.drive_to_working();
    let working = h.record.observed.phase;
    h.change_desired(|desired| desired.run = RunState::Stopped);
    h.expect_failing(
        Step::StopSession {
            cause: StopCause::Host,
        },
        StepError::deadline(secs(30)),
    );
    assert_eq!(h.record.observed.phase, working);
    assert_eq!(h.record.observed.failures.iter().count(), 0);
    let retry = h.record.observed.next_try.expect("a retry time");
    assert_eq!(h.decide().step, Step::Wait { until: Some(retry) });
    h.clock.set(retry);
    h.expect(
        Step::StopSession {
            cause: StopCause::Host,
        },
        Outcome::Done,
    );
    h.present(SessionStatus::Stopped);
    h.expect_failing(Step::ReleaseRunningSlot, StepError::deadline(secs(30)));
    assert_eq!(h.record.observed.phase, working);
    assert!(h.record.observed.running_slot);
    let retry = h.record.observed.next_try.expect("a retry time");
    assert_eq!(h.decide().step, Step::Wait { until: Some(retry) });
}

#[test]
fn a_suspension_never_unparks_a_chip() {
    let mut h = Harness::new(ChipSpec::qr());
    parked_and_held(&mut h);
    let parked = h.record.observed.phase;
    h.world.tenant = TenantSeen::Suspended;
    assert_eq!(h.decide().step, Step::Wait { until: None });
    assert_eq!(h.record.observed.phase, parked);
    h.world.tenant = TenantSeen::Active;
    assert_eq!(
        h.decide().step,
        Step::Wait { until: None },
        "reactivation does not restart a replaced chip"
    );

    // Nor a host's stop and start.
    h.change_desired(|desired| desired.run = RunState::Stopped);
    assert_eq!(h.decide().step, Step::Wait { until: None });
    h.change_desired(|desired| desired.run = RunState::Running);
    assert_eq!(h.decide().step, Step::Wait { until: None });
    assert_eq!(h.record.observed.phase, parked);

    // A temporary ban is still served after a suspension.
    let mut h = Harness::new(ChipSpec::qr());
    h.drive_to_working();
    let now = h.now();
    let banned = Phase::BackingOff {
        reason: Reason::TemporarilyBanned,
        attempt: 1,
        next_try: now + secs(3_600),
    };
    h.record.observed.phase = banned;
    h.record.observed.next_try = banned.next_try();
    h.world.tenant = TenantSeen::Suspended;
    h.expect(
        Step::StopSession {
            cause: StopCause::TenantInactive,
        },
        Outcome::Done,
    );
    h.present(SessionStatus::Stopped);
    h.expect(Step::ReleaseRunningSlot, Outcome::Done);
    assert_eq!(h.decide().step, Step::Wait { until: None });
    assert_eq!(h.record.observed.phase, banned);
    h.world.tenant = TenantSeen::Active;
    assert_eq!(
        h.decide().step,
        Step::Wait {
            until: banned.next_try()
        }
    );
}

#[test]
fn a_ban_reported_again_is_folded_not_counted() {
    let mut h = Harness::for_chip("acme", "sales-1", ChipSpec::qr(), Engine::Gows);
    h.drive_to_working();
    let ban = |at: SystemTime, hours: u64| SignalBody::Disconnect {
        reason: Reason::TemporarilyBanned,
        ban_expires: Some(at + secs(hours * 3_600)),
    };
    let banned_at = h.now();
    h.signal(ban(banned_at, 1));
    let decision = h.decide();
    let Step::Record {
        phase: Phase::BackingOff { next_try, .. },
    } = decision.step
    else {
        panic!("a ban backs off, got {:?}", decision.step);
    };
    h.apply(&decision, Ok(Outcome::Done));
    h.expect(
        Step::StopSession {
            cause: StopCause::Held,
        },
        Outcome::Done,
    );
    h.present(SessionStatus::Stopped);

    // The same ban, reported again with a later expiry: the backoff is extended, no park.
    h.advance(secs(600));
    let again_at = h.now();
    h.signal(ban(again_at, 2));
    let decision = h.decide();
    let Step::Record {
        phase:
            Phase::BackingOff {
                reason: Reason::TemporarilyBanned,
                attempt: 1,
                next_try: extended,
            },
    } = decision.step
    else {
        panic!("the ban is folded, got {:?}", decision.step);
    };
    assert!(extended > next_try && extended >= again_at + secs(2 * 3_600));
    assert_eq!(decision.handles, None);
    h.apply(&decision, Ok(Outcome::Done));
    assert_eq!(h.record.observed.temp_bans, [banned_at], "counted once");
    assert_eq!(
        h.decide().step,
        Step::Wait {
            until: Some(extended)
        }
    );

    // After the ban, a late report of it (observed before it ended) is no second ban.
    h.clock.set(extended);
    h.expect(
        Step::StartSession { budgeted: true },
        Outcome::Status(SessionStatus::Starting),
    );
    h.present_working();
    h.expect(Step::ConfirmWorking, Outcome::LoggedIn(me()));
    let working = h.record.observed.phase;
    h.advance(secs(60));
    h.signal_at(again_at + secs(1), ban(again_at, 1));
    assert_eq!(h.decide().step, Step::Record { phase: working });
}

#[test]
fn the_self_heal_grace_runs_from_the_first_disconnect() {
    let mut h = Harness::new(ChipSpec::qr());
    h.drive_to_working();
    h.disconnect(Reason::ConnectionLost);
    let lost_at = h.now();
    h.present(SessionStatus::Starting);
    let give_up_at = lost_at + h.policy.self_heal_grace;
    assert_eq!(
        h.decide().step,
        Step::Wait {
            until: Some(give_up_at)
        }
    );
    // A newer disconnect of the same run does not move the deadline.
    h.advance(secs(30));
    h.disconnect(Reason::ConnectionLost);
    assert_eq!(
        h.decide().step,
        Step::Wait {
            until: Some(give_up_at)
        }
    );
    h.clock.set(give_up_at);
    assert_eq!(h.decide().step, Step::ReportProxyFailure { generation: 1 });
}

#[test]
fn a_held_chip_rereads_a_container_it_could_not_read() {
    let mut h = Harness::new(ChipSpec::qr());
    parked_and_held(&mut h);
    h.world.container = ContainerSeen::Unread;
    h.world.session = SessionSeen::Unread;
    assert_eq!(
        h.decide().step,
        Step::Wait {
            until: Some(h.now() + h.policy.reread_after)
        }
    );
}

#[test]
fn a_failed_pairing_request_is_not_repeated_nor_retried_hot() {
    let phone = PhoneNumber::new("+5511999999999").expect("a phone number");
    let mut h = Harness::new(ChipSpec::pairing_code(phone));
    h.drive_to_scan();
    let stale = StepError::from_waha(&WahaError::NotFound {
        message: "Session not found".into(),
    });
    h.expect_failing(Step::RequestPairingCode, stale);
    assert_eq!(
        h.record.observed.last_error, None,
        "a re-read is no attempt"
    );
    let reread_at = h.now() + h.policy.reread_after;
    assert_eq!(h.record.observed.next_try, Some(reread_at));
    assert_eq!(
        h.decide().step,
        Step::Wait {
            until: Some(reread_at)
        }
    );
    h.clock.set(reread_at);
    assert!(matches!(
        h.record.observed.login,
        Some(LoginOffer::PairingCode { code: None, .. })
    ));
    let step = h.decide().step;
    assert!(
        matches!(step, Step::Wait { .. }),
        "never a second request by itself: {step:?}"
    );
}

#[test]
fn re_pairing_is_budgeted_and_loop_checked() {
    // A log-out for a re-pair needs a budget token.
    let mut h = Harness::new(ChipSpec::qr());
    h.drive_to_working();
    h.disconnect(Reason::MultideviceMismatch);
    let at = h.now() + secs(3);
    h.world.budget = BudgetSeen::NextAt(at);
    assert_eq!(h.decide().step, Step::Wait { until: Some(at) });

    // Re-pairs that repeat within the loop window park `looping`.
    for reason in [Reason::LoggedOut, Reason::BadSession] {
        let mut h = Harness::new(ChipSpec::qr());
        h.drive_to_working();
        let now = h.now();
        for _ in 1..h.policy.loop_max_failures {
            h.record.observed.failures.record(now, reason);
        }
        h.disconnect(reason);
        let since = h.now();
        assert_eq!(
            h.decide().step,
            Step::Record {
                phase: Phase::Parked {
                    reason: ParkReason::Looping {
                        last_reason: reason
                    },
                    since,
                },
            },
            "{reason}"
        );
    }
}

#[test]
fn failed_while_awaiting_login_waits_for_its_reason_except_on_gows() {
    for (engine, grace) in [
        (Engine::Noweb, Some(Policy::default().reason_grace)),
        (Engine::Webjs, Some(Policy::default().self_heal_grace)),
        (Engine::Gows, None),
    ] {
        let mut h = Harness::for_chip("acme", "sales-1", ChipSpec::qr(), engine);
        h.drive_to_qr();
        h.present(SessionStatus::Failed);
        if let Some(grace) = grace {
            let phase = h.record.observed.phase;
            h.expect(Step::Record { phase }, Outcome::Done);
            assert_eq!(
                h.decide().step,
                Step::Wait {
                    until: Some(h.now() + grace)
                },
                "{engine}"
            );
            h.advance(grace);
        }
        let expired = h.now();
        h.expect(
            Step::Record {
                phase: Phase::LoginExpired { since: expired },
            },
            Outcome::Done,
        );
        assert_eq!(h.last_reason(), Some(Reason::QrWindowExpired), "{engine}");
    }

    // A WEBJS session that recovers within the grace awaits the login again.
    let mut h = Harness::for_chip("acme", "sales-1", ChipSpec::qr(), Engine::Webjs);
    h.drive_to_qr();
    let awaiting = h.record.observed.phase;
    h.present(SessionStatus::Failed);
    h.expect(Step::Record { phase: awaiting }, Outcome::Done);
    h.advance(secs(20));
    h.present(SessionStatus::ScanQrCode);
    assert!(matches!(h.decide().step, Step::Wait { .. }));
    assert_eq!(h.record.observed.phase, awaiting);
}

#[test]
fn a_proxy_failure_seen_right_after_a_rotation_belongs_to_the_old_proxy() {
    // WEBJS reports one PROXYBLOCK twice (state change, then disconnect). The first rotated
    // the proxy; the second, observed within `reason_grace` of the new lease, is reported on
    // the old generation (the allocator answers `Superseded`), never rotating again.
    let mut h = Harness::new(ChipSpec::qr());
    h.drive_to_working();
    h.advance(secs(60));
    let mut rotated = h.lease(2);
    rotated.assigned_at = h.clock.now();
    on_lease(&mut h, rotated);
    h.disconnect(Reason::ProxyFailure);
    h.present(SessionStatus::Failed);
    h.advance(h.policy.reason_grace);
    assert_eq!(h.decide().step, Step::ReportProxyFailure { generation: 1 });

    // Later, the new proxy failing is its own failure.
    let mut h = Harness::new(ChipSpec::qr());
    h.drive_to_working();
    let mut current = h.lease(2);
    current.assigned_at = h.clock.now();
    on_lease(&mut h, current);
    h.advance(secs(60));
    h.disconnect(Reason::ProxyFailure);
    h.present(SessionStatus::Failed);
    h.advance(h.policy.reason_grace);
    assert_eq!(h.decide().step, Step::ReportProxyFailure { generation: 2 });
}

/// The chip runs through `lease` (rotated to and ensured with it).
fn on_lease(h: &mut Harness, lease: ProxyLease) {
    h.record.observed.proxy = Some(ProxyRef::from(&lease));
    if let Some(session) = h.record.observed.session.as_mut() {
        session.proxy_generation = lease.generation;
    }
    h.world.lease = Some(lease);
}
