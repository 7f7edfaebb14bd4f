//! Chip changes and the [`EventBus`] seam (`docs/session-supervisor.md`, 7.2).
//!
//! Changes are published only after the store write committed: the record, not the bus, is
//! the truth. A subscriber sees one tenant's changes, in the order of their per-tenant
//! sequence numbers; one that falls behind gets a [`ChangeItem::Gap`] naming how many it
//! missed, never a silent loss. Issue 13 adds resume, rooms and a PostgreSQL backend behind
//! the same trait.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use async_trait::async_trait;
use tenant_isolation::{ChipId, TenantId};
use tokio::sync::broadcast;
use waha_client::Me;

use crate::chip::{ChipKey, ChipRecord, LoginOffer, PairingCodeSecret, StepOutcome};
use crate::phase::{Phase, PhaseName};
use crate::policy::{ParkReason, Reason};
use crate::reconcile::StepKind;

/// Something that needs attention beyond one phase change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Alert {
    /// The chip failed again and again within the loop window and was parked.
    Loop {
        /// The last failure.
        last_reason: Reason,
    },
    /// A retry budget was spent and the chip was parked.
    BudgetSpent {
        /// The last failure.
        last_reason: Reason,
    },
}

/// What changed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChipChangeKind {
    /// The chip was created.
    Created,
    /// The phase changed.
    PhaseChanged {
        /// The phase before.
        from: PhaseName,
        /// The phase now.
        to: PhaseName,
    },
    /// A QR window opened (the value is not included: call `qr()`).
    QrAvailable {
        /// When the window opened.
        window_started_at: SystemTime,
    },
    /// A pairing code is on offer.
    PairingCode {
        /// The code (redacted in `Debug` and `Display`).
        code: PairingCodeSecret,
        /// When it expires.
        expires_at: SystemTime,
    },
    /// The chip logged in.
    LoggedIn {
        /// The account.
        me: Me,
    },
    /// A failure is retried after a delay.
    BackingOff {
        /// Why.
        reason: Reason,
        /// Which attempt is next.
        attempt: u32,
        /// When.
        next_try: SystemTime,
    },
    /// The chip was parked.
    Parked {
        /// Why.
        reason: ParkReason,
    },
    /// The QR window ran out; the chip waits for the host.
    LoginExpired,
    /// A step failed.
    StepFailed {
        /// The step.
        step: StepKind,
        /// Why.
        reason: Reason,
        /// The error's kind.
        kind: String,
    },
    /// Needs attention.
    Alert(Alert),
    /// The chip's record was removed (its finalizers ran).
    Deleted,
    /// A fleet upgrade reached the chip's container.
    Upgrade {
        /// How far.
        stage: UpgradeStage,
    },
}

/// How far a fleet upgrade got with one chip
/// ([`Supervisor::upgrade_fleet`](crate::Supervisor::upgrade_fleet)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpgradeStage {
    /// The chip's tenant is being upgraded: its containers are replaced now.
    Started,
    /// The chip's container runs the new spec; the chip reconnects from its volume.
    ContainerReplaced,
    /// The chip is back in the phase it had before (logged in chips: `Working`).
    Done,
    /// The container could not be replaced, or the chip did not come back in time (it goes
    /// on reconciling; see its phase).
    Failed,
}

/// One change of one chip, numbered per tenant by the bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChipChange {
    /// The tenant.
    pub tenant: TenantId,
    /// The chip.
    pub chip: ChipId,
    /// The tenant's sequence number, assigned by [`EventBus::publish`] (monotonic per
    /// tenant; 0 until published).
    pub seq: u64,
    /// When the change was written.
    pub at: SystemTime,
    /// The record's `observed_version` after the change.
    pub observed_version: u64,
    /// The chip's phase after the change.
    pub phase: PhaseName,
    /// What changed.
    pub kind: ChipChangeKind,
}

impl ChipChange {
    /// A change of `record` (as written), not published yet.
    pub fn of(record: &ChipRecord, kind: ChipChangeKind) -> Self {
        ChipChange {
            tenant: record.key.tenant.clone(),
            chip: record.key.chip.clone(),
            seq: 0,
            at: record.updated_at,
            observed_version: record.observed_version,
            phase: record.observed.phase.name(),
            kind,
        }
    }

    /// The removal of `key` at `at`, after its last write at `observed_version`.
    pub fn deleted(key: &ChipKey, at: SystemTime, observed_version: u64) -> Self {
        ChipChange {
            tenant: key.tenant.clone(),
            chip: key.chip.clone(),
            seq: 0,
            at,
            observed_version,
            phase: PhaseName::Deleting,
            kind: ChipChangeKind::Deleted,
        }
    }

    /// The changes one owner write made, from the record before to the record after.
    pub fn between(before: &ChipRecord, after: &ChipRecord) -> Vec<ChipChange> {
        let mut kinds = Vec::new();
        if before.observed.phase.name() != after.observed.phase.name() {
            kinds.push(ChipChangeKind::PhaseChanged {
                from: before.observed.phase.name(),
                to: after.observed.phase.name(),
            });
        }
        if before.observed.phase != after.observed.phase {
            match after.observed.phase {
                Phase::BackingOff {
                    reason,
                    attempt,
                    next_try,
                } => kinds.push(ChipChangeKind::BackingOff {
                    reason,
                    attempt,
                    next_try,
                }),
                Phase::Parked { reason, .. } => {
                    kinds.push(ChipChangeKind::Parked { reason });
                    match reason {
                        ParkReason::Looping { last_reason } => {
                            kinds.push(ChipChangeKind::Alert(Alert::Loop { last_reason }));
                        }
                        ParkReason::RetryBudgetSpent { last_reason } => {
                            kinds.push(ChipChangeKind::Alert(Alert::BudgetSpent { last_reason }));
                        }
                        _ => {}
                    }
                }
                Phase::LoginExpired { .. } => kinds.push(ChipChangeKind::LoginExpired),
                _ => {}
            }
        }
        if before.observed.login != after.observed.login {
            match &after.observed.login {
                Some(LoginOffer::Qr { window_started_at }) => {
                    kinds.push(ChipChangeKind::QrAvailable {
                        window_started_at: *window_started_at,
                    });
                }
                Some(LoginOffer::PairingCode {
                    code: Some(code),
                    expires_at,
                    ..
                }) => kinds.push(ChipChangeKind::PairingCode {
                    code: code.clone(),
                    expires_at: *expires_at,
                }),
                _ => {}
            }
        }
        if before.observed.me.is_none()
            && let Some(me) = &after.observed.me
        {
            kinds.push(ChipChangeKind::LoggedIn { me: me.clone() });
        }
        if after.steps.last() != before.steps.last()
            && let Some(entry) = after.steps.last()
            && let StepOutcome::Failed { reason, kind } = &entry.outcome
        {
            kinds.push(ChipChangeKind::StepFailed {
                step: entry.step,
                reason: *reason,
                kind: kind.clone(),
            });
        }
        kinds
            .into_iter()
            .map(|kind| ChipChange::of(after, kind))
            .collect()
    }
}

/// Which of a tenant's changes a subscriber wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeFilter {
    chips: Option<BTreeSet<ChipId>>,
}

impl ChangeFilter {
    /// Every chip of the tenant.
    pub fn all() -> Self {
        ChangeFilter::default()
    }

    /// Only these chips.
    pub fn chips(chips: impl IntoIterator<Item = ChipId>) -> Self {
        ChangeFilter {
            chips: Some(chips.into_iter().collect()),
        }
    }

    /// Whether `change` passes.
    pub fn matches(&self, change: &ChipChange) -> bool {
        self.chips
            .as_ref()
            .is_none_or(|chips| chips.contains(&change.chip))
    }
}

/// What a [`ChangeStream`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeItem {
    /// A change.
    Change(ChipChange),
    /// The subscriber fell behind and missed this many changes (re-read the records).
    Gap {
        /// How many.
        missed: u64,
    },
}

/// One subscriber's stream of one tenant's changes.
pub struct ChangeStream {
    receiver: broadcast::Receiver<ChipChange>,
    filter: ChangeFilter,
}

impl ChangeStream {
    /// A stream over a broadcast receiver of one tenant's changes (for bus backends).
    pub fn new(receiver: broadcast::Receiver<ChipChange>, filter: ChangeFilter) -> Self {
        ChangeStream { receiver, filter }
    }

    /// The next change that passes the filter, or a gap; `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<ChangeItem> {
        loop {
            match self.receiver.recv().await {
                Ok(change) if self.filter.matches(&change) => {
                    return Some(ChangeItem::Change(change));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Some(ChangeItem::Gap { missed });
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next change already waiting, without waiting (`None`: nothing waits, or the bus
    /// is gone).
    pub fn try_next(&mut self) -> Option<ChangeItem> {
        loop {
            match self.receiver.try_recv() {
                Ok(change) if self.filter.matches(&change) => {
                    return Some(ChangeItem::Change(change));
                }
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                    return Some(ChangeItem::Gap { missed });
                }
                Err(
                    broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed,
                ) => return None,
            }
        }
    }
}

impl fmt::Debug for ChangeStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeStream")
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

/// Why the bus refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The backend is unavailable (a database, a broker).
    #[error("event bus unavailable: {reason}")]
    Unavailable {
        /// What failed.
        reason: String,
    },
}

impl BusError {
    /// A short, stable name of the variant, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            BusError::Unavailable { .. } => "unavailable",
        }
    }

    /// Whether retrying later can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            BusError::Unavailable { .. } => true,
        }
    }
}

/// Where chip changes go. Implementations number each tenant's changes (1, 2, 3, ...) in the
/// order they publish them, deliver a tenant's changes only to that tenant's subscribers, and
/// report a lagging subscriber's loss as a [`ChangeItem::Gap`].
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Publishes a change; returns the sequence number it got.
    async fn publish(&self, change: ChipChange) -> Result<u64, BusError>;

    /// Subscribes to one tenant's changes from now on.
    async fn subscribe(
        &self,
        tenant: &TenantId,
        filter: ChangeFilter,
    ) -> Result<ChangeStream, BusError>;
}

struct TenantChannel {
    /// `None` until someone subscribes, and again once the tenant is forgotten (nobody
    /// listens: a change published then reaches no one, as with no subscriber).
    sender: Option<broadcast::Sender<ChipChange>>,
    /// The last number given, kept also when the tenant is forgotten.
    last_seq: u64,
}

impl TenantChannel {
    fn empty() -> Self {
        TenantChannel {
            sender: None,
            last_seq: 0,
        }
    }
}

/// The in-process [`EventBus`]: one bounded `tokio::sync::broadcast` channel per tenant.
///
/// ```
/// use session_supervisor::{ChangeFilter, ChangeItem, EventBus, InProcessEventBus};
/// # use session_supervisor::{ChipChange, ChipChangeKind, ChipKey, ChipRecord, ChipSpec};
/// # use std::time::SystemTime;
/// # use tenant_isolation::{ChipId, TenantId};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = InProcessEventBus::new();
/// let acme = TenantId::new("acme")?;
/// let mut changes = bus.subscribe(&acme, ChangeFilter::all()).await?;
/// let record = ChipRecord::new(
///     ChipKey::new(acme.clone(), ChipId::new("sales-1")?),
///     ChipSpec::qr(),
///     true,
///     SystemTime::now(),
/// );
/// assert_eq!(bus.publish(ChipChange::of(&record, ChipChangeKind::Created)).await?, 1);
/// let Some(ChangeItem::Change(change)) = changes.next().await else { panic!("a change") };
/// assert_eq!((change.seq, change.kind), (1, ChipChangeKind::Created));
/// # Ok(()) }
/// ```
pub struct InProcessEventBus {
    capacity: usize,
    channels: Mutex<HashMap<TenantId, TenantChannel>>,
}

impl InProcessEventBus {
    /// The default capacity of a tenant's channel.
    pub const DEFAULT_CAPACITY: usize = 1024;

    /// A bus whose tenant channels hold [`InProcessEventBus::DEFAULT_CAPACITY`] changes.
    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// A bus whose tenant channels hold `capacity` changes (at least 1; tokio rounds up to a
    /// power of two) before a slow subscriber lags.
    pub fn with_capacity(capacity: usize) -> Self {
        InProcessEventBus {
            capacity: capacity.max(1),
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets a tenant's channel (offboarding): its subscribers' streams end and its buffer
    /// is freed. The tenant's last sequence number is kept (one number per forgotten tenant),
    /// so a change published for it later, or after it is created again under the same id,
    /// never reuses a number.
    pub fn forget_tenant(&self, tenant: &TenantId) {
        if let Some(channel) = self
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(tenant)
        {
            channel.sender = None;
        }
    }
}

impl Default for InProcessEventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for InProcessEventBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tenants = self
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("InProcessEventBus")
            .field("capacity", &self.capacity)
            .field("tenants", &tenants)
            .finish()
    }
}

#[async_trait]
impl EventBus for InProcessEventBus {
    async fn publish(&self, mut change: ChipChange) -> Result<u64, BusError> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let channel = channels
            .entry(change.tenant.clone())
            .or_insert_with(TenantChannel::empty);
        channel.last_seq += 1;
        change.seq = channel.last_seq;
        // Numbered and sent under one lock: numbers and delivery order agree. No subscriber
        // is not an error.
        if let Some(sender) = &channel.sender {
            let _ = sender.send(change);
        }
        Ok(channel.last_seq)
    }

    async fn subscribe(
        &self,
        tenant: &TenantId,
        filter: ChangeFilter,
    ) -> Result<ChangeStream, BusError> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let capacity = self.capacity;
        let channel = channels
            .entry(tenant.clone())
            .or_insert_with(TenantChannel::empty);
        let sender = channel
            .sender
            .get_or_insert_with(|| broadcast::channel(capacity).0);
        Ok(ChangeStream::new(sender.subscribe(), filter))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use fleet_vocab::{Clock, ManualClock};

    use super::*;
    use crate::chip::{ChipSpec, ObservedPatch, StepEntry};

    fn record(tenant: &str, chip: &str, clock: &ManualClock) -> ChipRecord {
        let key = ChipKey::new(TenantId::new(tenant).unwrap(), ChipId::new(chip).unwrap());
        ChipRecord::new(key, ChipSpec::qr(), true, clock.now())
    }

    fn clock() -> ManualClock {
        ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    }

    fn expect_change(item: Option<ChangeItem>) -> ChipChange {
        match item {
            Some(ChangeItem::Change(change)) => change,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn changes_are_numbered_per_tenant_and_stay_with_their_tenant() {
        let clock = clock();
        let bus = InProcessEventBus::new();
        let a = record("acme", "a", &clock);
        let b = record("beta", "b", &clock);
        let mut acme = bus
            .subscribe(&a.key.tenant, ChangeFilter::all())
            .await
            .unwrap();
        let mut beta = bus
            .subscribe(&b.key.tenant, ChangeFilter::all())
            .await
            .unwrap();

        let mut seqs = Vec::new();
        for owner in [&a, &b, &a, &a, &b] {
            clock.advance(Duration::from_secs(1));
            let kind = ChipChangeKind::PhaseChanged {
                from: PhaseName::Pending,
                to: PhaseName::Provisioning,
            };
            let mut change = ChipChange::of(owner, kind);
            change.at = clock.now();
            seqs.push(bus.publish(change).await.unwrap());
        }
        assert_eq!(seqs, [1, 1, 2, 3, 2], "numbers count per tenant");

        for expected in 1..=3 {
            let change = expect_change(acme.try_next());
            assert_eq!((change.tenant.as_str(), change.seq), ("acme", expected));
        }
        assert_eq!(acme.try_next(), None, "never another tenant's change");
        for expected in 1..=2 {
            let change = expect_change(beta.next().await);
            assert_eq!((change.tenant.as_str(), change.seq), ("beta", expected));
        }
        assert_eq!(beta.try_next(), None);
    }

    #[tokio::test]
    async fn a_lagging_subscriber_gets_a_gap_and_filters_apply() {
        let clock = clock();
        let bus = InProcessEventBus::with_capacity(4);
        let a = record("acme", "a", &clock);
        let other = record("acme", "other", &clock);
        let tenant = a.key.tenant.clone();
        let mut slow = bus.subscribe(&tenant, ChangeFilter::all()).await.unwrap();
        let mut only_a = bus
            .subscribe(&tenant, ChangeFilter::chips([a.key.chip.clone()]))
            .await
            .unwrap();
        for _ in 0..10 {
            bus.publish(ChipChange::of(&a, ChipChangeKind::Created))
                .await
                .unwrap();
        }
        assert_eq!(slow.next().await, Some(ChangeItem::Gap { missed: 6 }));
        assert_eq!(expect_change(slow.next().await).seq, 7);

        let mut only_a_fresh = bus
            .subscribe(&tenant, ChangeFilter::chips([a.key.chip.clone()]))
            .await
            .unwrap();
        bus.publish(ChipChange::of(&other, ChipChangeKind::Created))
            .await
            .unwrap();
        bus.publish(ChipChange::of(&a, ChipChangeKind::Created))
            .await
            .unwrap();
        let change = expect_change(only_a_fresh.next().await);
        assert_eq!((change.chip.as_str(), change.seq), ("a", 12));
        assert!(matches!(only_a.next().await, Some(ChangeItem::Gap { .. })));

        bus.forget_tenant(&tenant);
        assert_eq!(
            only_a_fresh.next().await,
            None,
            "the bus let go of the tenant"
        );
    }

    #[tokio::test]
    async fn a_forgotten_tenant_never_reuses_a_sequence_number() {
        let clock = clock();
        let bus = InProcessEventBus::new();
        let a = record("acme", "a", &clock);
        let tenant = a.key.tenant.clone();
        async fn publish(bus: &InProcessEventBus, record: &ChipRecord) -> u64 {
            let change = ChipChange::of(record, ChipChangeKind::Created);
            bus.publish(change).await.unwrap()
        }
        assert_eq!(
            publish(&bus, &a).await,
            1,
            "no subscriber yet: numbered all the same"
        );
        let mut before = bus.subscribe(&tenant, ChangeFilter::all()).await.unwrap();
        assert_eq!(publish(&bus, &a).await, 2);
        assert_eq!(expect_change(before.try_next()).seq, 2);

        bus.forget_tenant(&tenant);
        assert_eq!(before.next().await, None, "the old stream ends");
        assert_eq!(publish(&bus, &a).await, 3, "a late change after the forget");
        let mut after = bus.subscribe(&tenant, ChangeFilter::all()).await.unwrap();
        assert_eq!(
            publish(&bus, &a).await,
            4,
            "the tenant again under the same id"
        );
        assert_eq!(expect_change(after.next().await).seq, 4);
        assert_eq!(after.try_next(), None);
        // Forgetting a tenant the bus never saw keeps nothing.
        bus.forget_tenant(&TenantId::new("never").unwrap());
        assert!(format!("{bus:?}").contains("tenants: 1"));
    }

    #[test]
    fn writes_become_changes() {
        let clock = clock();
        let before = record("acme", "a", &clock);
        let mut after = before.clone();
        let mut observed = after.observed.clone();
        observed.phase = Phase::Parked {
            reason: ParkReason::Looping {
                last_reason: Reason::Replaced,
            },
            since: clock.now(),
        };
        let failed = StepOutcome::Failed {
            reason: Reason::Replaced,
            kind: "replaced".into(),
        };
        after.commit_observed(
            ObservedPatch {
                observed,
                step: Some(StepEntry::new(StepKind::Record, failed, clock.now())),
            },
            clock.now(),
        );
        let kinds: Vec<ChipChangeKind> = ChipChange::between(&before, &after)
            .into_iter()
            .map(|change| {
                assert_eq!(change.observed_version, 2);
                assert_eq!(change.phase, PhaseName::Parked);
                change.kind
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ChipChangeKind::PhaseChanged {
                    from: PhaseName::Pending,
                    to: PhaseName::Parked,
                },
                ChipChangeKind::Parked {
                    reason: ParkReason::Looping {
                        last_reason: Reason::Replaced
                    }
                },
                ChipChangeKind::Alert(Alert::Loop {
                    last_reason: Reason::Replaced
                }),
                ChipChangeKind::StepFailed {
                    step: StepKind::Record,
                    reason: Reason::Replaced,
                    kind: "replaced".into(),
                },
            ]
        );
        let gone = ChipChange::deleted(&after.key, clock.now(), after.observed_version);
        assert_eq!(gone.kind, ChipChangeKind::Deleted);
    }
}
