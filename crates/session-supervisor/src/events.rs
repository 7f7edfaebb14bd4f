//! Chip changes and the [`EventBus`] seam (`docs/session-supervisor.md`, 7.2).
//!
//! Changes are published only after the store write committed: the record, not the bus, is
//! the truth. A subscriber sees one tenant's changes, in the order of their per-tenant
//! sequence numbers; one that falls behind gets a [`ChangeItem::Gap`] naming how many it
//! missed, never a silent loss. Issue 13 adds resume, rooms and a PostgreSQL backend behind
//! the same trait.

use std::collections::{BTreeSet, HashMap, VecDeque};
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
    /// A message arrived on the chip (issue 13's ingest publishes it; the text is not
    /// included: the host reads it from its own store or WAHA).
    MessageReceived {
        /// The chat (`<number>@c.us`, a group id).
        chat: String,
        /// WhatsApp's message id.
        message_id: String,
    },
    /// A message's delivery status moved forward (never back: see
    /// [`MessageAck::supersedes`](waha_client::webhook::MessageAck::supersedes)).
    MessageStatus {
        /// The chat.
        chat: String,
        /// WhatsApp's message id.
        message_id: String,
        /// The new status.
        ack: waha_client::webhook::MessageAck,
    },
    /// A send was refused by WAHA ([`Supervisor::send_text`](crate::Supervisor::send_text)):
    /// nothing was sent, and the outbox record of `key` is `Failed`. The text is not
    /// included.
    SendFailed {
        /// The chat the message was for.
        chat: String,
        /// The host's idempotency key of the send (delivered only to the tenant's
        /// subscribers, like the chat).
        key: String,
        /// Why: the kind of WAHA's error (`not_found`, `invalid`, `api`, ...).
        reason: String,
    },
    /// A fleet upgrade reached the chip's container.
    Upgrade {
        /// How far.
        stage: UpgradeStage,
    },
}

/// Whether a change may still be handed out at `now`: a pairing code is a short-lived
/// credential and is never replayed after it expired (a resuming subscriber gets the changes
/// around it, without a gap: the code's number stays held, and reads the chip for the current
/// offer).
pub(crate) fn still_offered(change: &ChipChange, now: SystemTime) -> bool {
    code_expiry(change).is_none_or(|expires_at| expires_at > now)
}

/// When the pairing code `change` carries expires (`None`: it carries none).
pub(crate) fn code_expiry(change: &ChipChange) -> Option<SystemTime> {
    match &change.kind {
        ChipChangeKind::PairingCode { expires_at, .. } => Some(*expires_at),
        _ => None,
    }
}

impl ChipChangeKind {
    /// The chat a message event is about (`None` for every other kind).
    pub fn chat(&self) -> Option<&str> {
        match self {
            ChipChangeKind::MessageReceived { chat, .. }
            | ChipChangeKind::MessageStatus { chat, .. }
            | ChipChangeKind::SendFailed { chat, .. } => Some(chat),
            _ => None,
        }
    }
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
    chats: Option<BTreeSet<String>>,
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
            chats: None,
        }
    }

    /// Only the message events of these chats (a conversation's "room"); combined with a chip
    /// filter, of those chips.
    #[must_use]
    pub fn with_chats(mut self, chats: impl IntoIterator<Item = String>) -> Self {
        self.chats = Some(chats.into_iter().collect());
        self
    }

    /// Whether `change` passes.
    pub fn matches(&self, change: &ChipChange) -> bool {
        let chip = self
            .chips
            .as_ref()
            .is_none_or(|chips| chips.contains(&change.chip));
        let chat = match (&self.chats, change.kind.chat()) {
            (None, _) => true,
            (Some(chats), Some(chat)) => chats.contains(chat),
            (Some(_), None) => false,
        };
        chip && chat
    }
}

/// What a [`ChangeStream`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeItem {
    /// A change.
    Change(ChipChange),
    /// The subscriber fell behind and missed changes: resume with
    /// [`EventBus::subscribe_from`] after `resume_after` (the bus replays what it still holds,
    /// or reports the next gap), or re-read the records.
    Gap {
        /// How many were missed (as far as known).
        missed: u64,
        /// The last sequence number delivered before the gap (0: none).
        resume_after: u64,
    },
}

/// One subscriber's stream of one tenant's changes: first what it asked to replay, then the
/// live changes, in sequence order, never one twice.
pub struct ChangeStream {
    backlog: VecDeque<ChangeItem>,
    receiver: broadcast::Receiver<ChipChange>,
    filter: ChangeFilter,
    /// The highest sequence number delivered or replayed (live items at or below are skipped).
    last_seq: u64,
}

impl ChangeStream {
    /// A stream over a broadcast receiver of one tenant's changes (for bus backends).
    pub fn new(receiver: broadcast::Receiver<ChipChange>, filter: ChangeFilter) -> Self {
        ChangeStream {
            backlog: VecDeque::new(),
            receiver,
            filter,
            last_seq: 0,
        }
    }

    /// A stream that first yields `replay` (changes and gap markers, oldest first, as a
    /// backend read them), then the receiver's live changes after the last replayed one.
    /// `last_seq` is the sequence number the subscription resumed after.
    pub fn resuming(
        receiver: broadcast::Receiver<ChipChange>,
        filter: ChangeFilter,
        replay: impl IntoIterator<Item = ChangeItem>,
        last_seq: u64,
    ) -> Self {
        ChangeStream {
            backlog: replay.into_iter().collect(),
            receiver,
            filter,
            last_seq,
        }
    }

    /// The highest sequence number this stream delivered (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    fn take_backlog(&mut self) -> Option<ChangeItem> {
        while let Some(item) = self.backlog.pop_front() {
            match item {
                ChangeItem::Change(change) => {
                    if change.seq <= self.last_seq {
                        continue;
                    }
                    self.last_seq = change.seq;
                    if self.filter.matches(&change) {
                        return Some(ChangeItem::Change(change));
                    }
                }
                gap @ ChangeItem::Gap { .. } => return Some(gap),
            }
        }
        None
    }

    /// What a live item becomes: `None` to skip it (already delivered, or filtered out).
    fn live(&mut self, change: ChipChange) -> Option<ChangeItem> {
        if change.seq <= self.last_seq {
            return None;
        }
        self.last_seq = change.seq;
        self.filter
            .matches(&change)
            .then_some(ChangeItem::Change(change))
    }

    fn lagged(&mut self, missed: u64) -> ChangeItem {
        let resume_after = self.last_seq;
        // The missed changes are gone from this receiver: skip their numbers.
        self.last_seq = self.last_seq.saturating_add(missed);
        ChangeItem::Gap {
            missed,
            resume_after,
        }
    }

    /// The next change that passes the filter, or a gap; `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<ChangeItem> {
        if let Some(item) = self.take_backlog() {
            return Some(item);
        }
        loop {
            match self.receiver.recv().await {
                Ok(change) => {
                    if let Some(item) = self.live(change) {
                        return Some(item);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Some(self.lagged(missed));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next change already waiting, without waiting (`None`: nothing waits, or the bus
    /// is gone).
    pub fn try_next(&mut self) -> Option<ChangeItem> {
        if let Some(item) = self.take_backlog() {
            return Some(item);
        }
        loop {
            match self.receiver.try_recv() {
                Ok(change) => {
                    if let Some(item) = self.live(change) {
                        return Some(item);
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                    return Some(self.lagged(missed));
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

    /// Subscribes to one tenant's changes numbered after `after` (a reconnecting client
    /// resumes from the last number it saw): the ones the backend still holds are replayed,
    /// then the live ones follow, none twice. Changes no longer held come as one
    /// [`ChangeItem::Gap`] first, never as silent loss.
    async fn subscribe_from(
        &self,
        tenant: &TenantId,
        filter: ChangeFilter,
        after: u64,
    ) -> Result<ChangeStream, BusError>;
}

struct TenantChannel {
    /// `None` until someone subscribes, and again once the tenant is forgotten (nobody
    /// listens: a change published then reaches no one, as with no subscriber).
    sender: Option<broadcast::Sender<ChipChange>>,
    /// The last number given, kept also when the tenant is forgotten.
    last_seq: u64,
    /// The newest numbers with their changes, for subscribers that resume (at most the bus's
    /// capacity). A pairing code is withheld (`None`) once it expired: its number stays held,
    /// so a resume sees no gap where it was, and the code is no longer kept.
    history: VecDeque<(u64, Option<ChipChange>)>,
    /// The earliest expiry of a pairing code `history` may still hold (`None`: it holds none);
    /// earlier than that only when the code went out of the history first.
    next_code_expiry: Option<SystemTime>,
}

impl TenantChannel {
    fn empty() -> Self {
        TenantChannel {
            sender: None,
            last_seq: 0,
            history: VecDeque::new(),
            next_code_expiry: None,
        }
    }

    /// Withholds the pairing codes of the history that expired by `now` (their numbers stay);
    /// answers how many. Looks at the history only when a code is due.
    fn scrub(&mut self, now: SystemTime) -> u64 {
        if self.next_code_expiry.is_none_or(|expiry| expiry > now) {
            return 0;
        }
        let mut scrubbed = 0;
        let mut next: Option<SystemTime> = None;
        for (_, held) in &mut self.history {
            let Some(expires_at) = (match held {
                Some(change) => code_expiry(change),
                None => None,
            }) else {
                continue;
            };
            if expires_at <= now {
                *held = None;
                scrubbed += 1;
            } else {
                next = Some(next.map_or(expires_at, |n| n.min(expires_at)));
            }
        }
        self.next_code_expiry = next;
        scrubbed
    }
}

/// The in-process [`EventBus`]: one bounded `tokio::sync::broadcast` channel per tenant.
///
/// Each tenant's newest changes (as many as the capacity) are kept for
/// [`subscribe_from`](EventBus::subscribe_from). A pairing code among them is kept only until
/// it expires: the bus withholds it when it publishes or resumes for the tenant after that
/// (on the system clock), or when [`scrub_expired`](InProcessEventBus::scrub_expired) is
/// called; its number stays held, so a resume sees no gap where it was.
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
            channel.history.clear();
            channel.next_code_expiry = None;
        }
    }

    /// Withholds, in every tenant's history, the pairing codes that expired by `now`: they are
    /// no longer kept (their numbers stay held, so a resume sees no gap where they were).
    /// Answers how many went. The bus does the same for a tenant whenever it publishes or a
    /// subscriber resumes (on the system clock); call this to let go of the codes of tenants
    /// that stay quiet.
    pub fn scrub_expired(&self, now: SystemTime) -> u64 {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values_mut()
            .map(|channel| channel.scrub(now))
            .sum()
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
        if channel.history.len() == self.capacity {
            channel.history.pop_front();
        }
        if let Some(expires_at) = code_expiry(&change) {
            channel.next_code_expiry = Some(
                channel
                    .next_code_expiry
                    .map_or(expires_at, |next| next.min(expires_at)),
            );
        }
        channel
            .history
            .push_back((change.seq, Some(change.clone())));
        // Expired pairing codes are not kept (looked at only when one is due).
        if channel.next_code_expiry.is_some() {
            channel.scrub(SystemTime::now());
        }
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

    async fn subscribe_from(
        &self,
        tenant: &TenantId,
        filter: ChangeFilter,
        after: u64,
    ) -> Result<ChangeStream, BusError> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let capacity = self.capacity;
        let channel = channels
            .entry(tenant.clone())
            .or_insert_with(TenantChannel::empty);
        // Subscribed and copied under one lock: nothing published in between is missed, and
        // the stream drops the overlap by sequence number.
        let receiver = channel
            .sender
            .get_or_insert_with(|| broadcast::channel(capacity).0)
            .subscribe();
        let mut replay = Vec::new();
        if after > channel.last_seq {
            // A cursor from before a restart of this process (numbers start again at 1):
            // a gap that resumes at the head, never a silent wait until the numbers pass it.
            replay.push(ChangeItem::Gap {
                missed: 0,
                resume_after: channel.last_seq,
            });
            return Ok(ChangeStream::resuming(
                receiver,
                filter,
                replay,
                channel.last_seq,
            ));
        }
        let now = SystemTime::now();
        channel.scrub(now);
        // A withheld pairing code's number is held all the same: no gap for it.
        let oldest_held = channel
            .history
            .front()
            .map_or(channel.last_seq + 1, |(seq, _)| *seq);
        if after + 1 < oldest_held {
            replay.push(ChangeItem::Gap {
                missed: oldest_held - after - 1,
                resume_after: after,
            });
        }
        replay.extend(
            channel
                .history
                .iter()
                .filter(|(seq, _)| *seq > after)
                .filter_map(|(_, held)| held.as_ref())
                .filter(|change| still_offered(change, now))
                .cloned()
                .map(ChangeItem::Change),
        );
        let start = after.max(oldest_held.saturating_sub(1));
        Ok(ChangeStream::resuming(receiver, filter, replay, start))
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
    async fn a_subscriber_resumes_after_the_last_number_it_saw_without_loss_or_repeats() {
        let clock = clock();
        let bus = InProcessEventBus::with_capacity(8);
        let a = record("acme", "a", &clock);
        let tenant = a.key.tenant.clone();
        for _ in 0..5 {
            bus.publish(ChipChange::of(&a, ChipChangeKind::Created))
                .await
                .unwrap();
        }
        // A client that saw up to 3 reconnects: 4 and 5 are replayed, then live ones follow.
        let mut resumed = bus
            .subscribe_from(&tenant, ChangeFilter::all(), 3)
            .await
            .unwrap();
        bus.publish(ChipChange::of(&a, ChipChangeKind::Created))
            .await
            .unwrap();
        let seqs: Vec<u64> = (0..3)
            .map(|_| expect_change(resumed.try_next()).seq)
            .collect();
        assert_eq!(seqs, vec![4, 5, 6]);
        assert_eq!(resumed.try_next(), None, "nothing twice");
        assert_eq!(resumed.last_seq(), 6);

        // Older than the history holds: a gap first, naming where the replay starts.
        for _ in 0..10 {
            bus.publish(ChipChange::of(&a, ChipChangeKind::Created))
                .await
                .unwrap();
        }
        let mut late = bus
            .subscribe_from(&tenant, ChangeFilter::all(), 2)
            .await
            .unwrap();
        assert_eq!(
            late.try_next(),
            Some(ChangeItem::Gap {
                missed: 6,
                resume_after: 2
            }),
            "changes 3 to 8 are gone"
        );
        let replayed: Vec<u64> = std::iter::from_fn(|| late.try_next())
            .map(|item| expect_change(Some(item)).seq)
            .collect();
        assert_eq!(replayed, (9..=16).collect::<Vec<_>>());

        // A cursor ahead of the head (the process restarted): a gap naming the head, then
        // every new change.
        let mut ahead = bus
            .subscribe_from(&tenant, ChangeFilter::all(), 500)
            .await
            .unwrap();
        assert_eq!(
            ahead.try_next(),
            Some(ChangeItem::Gap {
                missed: 0,
                resume_after: 16
            })
        );
        bus.publish(ChipChange::of(&a, ChipChangeKind::Created))
            .await
            .unwrap();
        assert_eq!(expect_change(ahead.try_next()).seq, 17);

        // Another tenant's history is never replayed.
        let mut beta = bus
            .subscribe_from(&TenantId::new("beta").unwrap(), ChangeFilter::all(), 0)
            .await
            .unwrap();
        assert_eq!(beta.try_next(), None);
    }

    #[tokio::test]
    async fn an_expired_pairing_code_is_never_replayed() {
        let clock = clock();
        let bus = InProcessEventBus::new();
        let a = record("acme", "a", &clock);
        let tenant = a.key.tenant.clone();
        let code = |expires_at| ChipChangeKind::PairingCode {
            code: crate::chip::PairingCodeSecret::new("ABCD-EFGH"),
            expires_at,
        };
        // Expired long ago (the record's clock is in 2023), then one still on offer.
        bus.publish(ChipChange::of(&a, code(clock.now())))
            .await
            .unwrap();
        bus.publish(ChipChange::of(&a, ChipChangeKind::Created))
            .await
            .unwrap();
        let later = SystemTime::now() + Duration::from_secs(120);
        bus.publish(ChipChange::of(&a, code(later))).await.unwrap();
        let mut resumed = bus
            .subscribe_from(&tenant, ChangeFilter::all(), 0)
            .await
            .unwrap();
        let seqs: Vec<u64> = std::iter::from_fn(|| resumed.try_next())
            .map(|item| expect_change(Some(item)).seq)
            .collect();
        assert_eq!(
            seqs,
            vec![2, 3],
            "the expired code (1) is not handed out again"
        );
    }

    #[tokio::test]
    async fn expired_pairing_codes_are_not_kept_in_the_history() {
        let clock = clock();
        let bus = InProcessEventBus::new();
        let a = record("acme", "a", &clock);
        let tenant = a.key.tenant.clone();
        let code = |secret: &str, expires_at| ChipChangeKind::PairingCode {
            code: crate::chip::PairingCodeSecret::new(secret),
            expires_at,
        };
        // Both on offer by the system clock: one expires in an hour, the other in two.
        let soon = SystemTime::now() + Duration::from_secs(3_600);
        let later = soon + Duration::from_secs(3_600);
        bus.publish(ChipChange::of(&a, code("SOON-0001", soon)))
            .await
            .unwrap();
        bus.publish(ChipChange::of(&a, ChipChangeKind::Created))
            .await
            .unwrap();
        bus.publish(ChipChange::of(&a, code("LATE-0002", later)))
            .await
            .unwrap();
        assert_eq!(
            bus.scrub_expired(soon - Duration::from_secs(1)),
            0,
            "nothing expired yet"
        );
        assert_eq!(bus.scrub_expired(soon), 1, "the first code, at its expiry");
        assert_eq!(bus.scrub_expired(soon), 0, "once");
        {
            let channels = bus.channels.lock().unwrap();
            let history = &channels[&tenant].history;
            let seqs: Vec<u64> = history.iter().map(|(seq, _)| *seq).collect();
            assert_eq!(seqs, [1, 2, 3], "the numbers stay held");
            assert_eq!(history[0].1, None, "the expired code is no longer kept");
            assert!(history[2].1.is_some(), "the code still on offer stays");
        }
        // A resume from before the withheld code: no gap, the changes around it.
        let mut resumed = bus
            .subscribe_from(&tenant, ChangeFilter::all(), 0)
            .await
            .unwrap();
        let seqs: Vec<u64> = std::iter::from_fn(|| resumed.try_next())
            .map(|item| expect_change(Some(item)).seq)
            .collect();
        assert_eq!(seqs, vec![2, 3], "no gap, and not the withheld code");
        assert_eq!(resumed.last_seq(), 3);
    }

    #[tokio::test]
    async fn a_chat_room_sees_only_its_conversation() {
        let clock = clock();
        let bus = InProcessEventBus::new();
        let a = record("acme", "a", &clock);
        let tenant = a.key.tenant.clone();
        let mut room = bus
            .subscribe(
                &tenant,
                ChangeFilter::all().with_chats(["5511@c.us".to_owned()]),
            )
            .await
            .unwrap();
        for (chat, id) in [
            ("5511@c.us", "m1"),
            ("5522@c.us", "m2"),
            ("5511@c.us", "m3"),
        ] {
            bus.publish(ChipChange::of(
                &a,
                ChipChangeKind::MessageReceived {
                    chat: chat.into(),
                    message_id: id.into(),
                },
            ))
            .await
            .unwrap();
        }
        bus.publish(ChipChange::of(&a, ChipChangeKind::Created))
            .await
            .unwrap();
        let ids: Vec<String> = std::iter::from_fn(|| room.try_next())
            .map(|item| match expect_change(Some(item)).kind {
                ChipChangeKind::MessageReceived { message_id, .. } => message_id,
                other => panic!("only messages of the room, got {other:?}"),
            })
            .collect();
        assert_eq!(ids, vec!["m1", "m3"]);
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
        assert_eq!(
            slow.next().await,
            Some(ChangeItem::Gap {
                missed: 6,
                resume_after: 0
            })
        );
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
