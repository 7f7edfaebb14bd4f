//! The inbound buffer (issue 13, "Inbound buffer", seed report 004): consecutive inbound
//! messages of one conversation are collected for a quiet time, then handed to the host's
//! [`InboundHandler`] as one [`InboundBatch`]. See [`InboundBuffer`].

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use fleet_vocab::Clock;
use futures::FutureExt;
use tenant_isolation::{ChipId, TenantId};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, error, warn};
use waha_client::webhook::MessageEvent;

use crate::inbox::{EntryId, Inbox};

/// The shortest the timer task sleeps between two checks (so a clock that lags Tokio's timer
/// never makes it spin).
const MIN_WAIT: Duration = Duration::from_millis(1);

/// The applied mark of the inbox entry an inbound message came from, which the
/// [`Ingest`](crate::Ingest) leaves to the buffer ([`InboundBuffer::push_tracked`]): the entry
/// is marked applied once the message's batch reached its final disposition (handled, given
/// up, or shed), never before. A mark dropped unused (the process died, the buffer was
/// dropped) leaves the entry unapplied, so the sweep
/// ([`Ingest::reapply_pending`](crate::Ingest::reapply_pending)) hands the message over again.
pub(crate) struct InboxMark {
    inbox: Arc<dyn Inbox>,
    tenant: TenantId,
    entry: EntryId,
}

impl InboxMark {
    /// The mark of `entry` of `tenant` in `inbox`.
    pub(crate) fn new(inbox: Arc<dyn Inbox>, tenant: TenantId, entry: EntryId) -> Self {
        InboxMark {
            inbox,
            tenant,
            entry,
        }
    }
}

/// Marks the inbox entries of messages whose batch reached its final disposition applied, one
/// after the other. A failure (or a panicking inbox) is logged with ids only: the entry stays
/// unapplied and the sweep hands its message over again.
async fn settle(marks: Vec<InboxMark>) {
    for mark in marks {
        let outcome = AssertUnwindSafe(mark.inbox.mark_applied(&mark.tenant, mark.entry))
            .catch_unwind()
            .await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                warn!(tenant = %mark.tenant, entry = %mark.entry, kind = error.kind(), "marking an inbound message's inbox entry applied failed; the sweep hands it over again");
            }
            Err(_panic) => {
                warn!(tenant = %mark.tenant, entry = %mark.entry, "the inbox panicked marking an inbound message's entry applied; the sweep hands it over again");
            }
        }
    }
}

/// Settles the marks of shed batches ([`State::take_shed`] counted them in
/// [`State::marking`]) on a task of their own, so no lock is held while the inbox is called.
/// Outside a Tokio runtime they are left unmarked (the sweep hands the messages over again).
fn settle_shed(inner: &Arc<Inner>, marks: Vec<InboxMark>) {
    if marks.is_empty() {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            let inner = Arc::clone(inner);
            runtime.spawn(async move {
                settle(marks).await;
                shed_settled(&inner);
            });
        }
        Err(_) => {
            warn!(
                entries = marks.len(),
                "no Tokio runtime to mark shed inbound messages applied; the sweep hands them over again"
            );
            shed_settled(inner);
        }
    }
}

/// One [`settle_shed`] is done: a shutdown waiting for the buffer to drain looks again.
fn shed_settled(inner: &Inner) {
    {
        let mut state = inner.lock();
        state.marking = state.marking.saturating_sub(1);
    }
    inner.drained.notify_waiters();
}

/// The host's side of the [`InboundBuffer`]: what to do with a conversation's batch of
/// inbound messages (in seed 004, let an AI agent answer them).
///
/// Delivery is **at least once**: a call that fails (an `Err`, a panic, or no answer within
/// [`InboundConfig::handler_timeout`]) is retried with the same batch, so a handler must
/// tolerate seeing a batch again (the message ids are stable: de-duplicate by them if a
/// second answer would hurt). Calls for one conversation never overlap and come in order;
/// calls for different conversations may run concurrently (see [`InboundConfig`]).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait InboundHandler: Send + Sync {
    /// Handles one batch. `Ok` when it is done with it; an `Err` that
    /// [`is_retryable`](HandlerError::is_retryable) has it retried with backoff
    /// ([`InboundConfig::retry`]).
    async fn handle(&self, batch: InboundBatch) -> Result<(), HandlerError>;
}

/// Why an [`InboundHandler`] did not handle a batch. Its reason is logged: never put message
/// content in it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct HandlerError {
    reason: String,
    retryable: bool,
}

impl HandlerError {
    /// A failure worth retrying (the agent's backend is down, a timeout, ...).
    pub fn new(reason: impl Into<String>) -> Self {
        HandlerError {
            reason: reason.into(),
            retryable: true,
        }
    }

    /// A failure no retry can fix: the batch is dropped from memory at once, logged and
    /// counted (its messages' inbox entries are marked applied: it is not handed over
    /// again).
    pub fn permanent(reason: impl Into<String>) -> Self {
        HandlerError {
            reason: reason.into(),
            retryable: false,
        }
    }

    /// What went wrong.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Whether the buffer retries the batch.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

/// One inbound message, as the buffer keeps it.
///
/// `Debug` shows the body's length, never the body (customer content).
#[derive(Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// The WhatsApp message id (stable across redeliveries: a handler can de-duplicate by it).
    pub id: String,
    /// When the sender sent it (WAHA's `timestamp`), or when it was received when the event
    /// carried none.
    pub at: SystemTime,
    /// In a group, the member who sent it; `None` in a one-to-one chat.
    pub participant: Option<String>,
    /// The text, or a media caption.
    pub body: Option<String>,
    /// Whether it has media (fetch it through WAHA with the message id).
    pub has_media: bool,
}

impl InboundMessage {
    /// The message of a webhook's `message` event; `received_at` stands in for a missing or
    /// out-of-range `timestamp`.
    pub fn from_event(event: &MessageEvent, received_at: SystemTime) -> Self {
        let at = event
            .timestamp
            .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
            .unwrap_or(received_at);
        InboundMessage {
            id: event.id.clone(),
            at,
            participant: event.participant.clone(),
            body: event.body.clone(),
            has_media: event.has_media,
        }
    }
}

impl fmt::Debug for InboundMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundMessage")
            .field("id", &self.id)
            .field("at", &self.at)
            .field("participant", &self.participant)
            .field("body_len", &self.body.as_ref().map(String::len))
            .field("has_media", &self.has_media)
            .finish()
    }
}

/// Consecutive inbound messages of one conversation (tenant, chip, chat), handed to the
/// [`InboundHandler`] at once.
///
/// `Debug` shows ids, times and body lengths, never a body.
#[derive(Clone, PartialEq, Eq)]
pub struct InboundBatch {
    /// The tenant.
    pub tenant: TenantId,
    /// The chip (the tenant's WhatsApp number) the messages reached.
    pub chip: ChipId,
    /// The chat (WAHA's chat id: `<number>@c.us`, `<id>@g.us`, ...), where an answer goes.
    pub chat: String,
    /// The messages, oldest first (in the order they were received). Never empty.
    pub messages: Vec<InboundMessage>,
    /// When the buffer received the first message (by its clock).
    pub first_at: SystemTime,
    /// When the buffer received the last message (by its clock).
    pub last_at: SystemTime,
}

impl fmt::Debug for InboundBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundBatch")
            .field("tenant", &self.tenant)
            .field("chip", &self.chip)
            .field("chat", &self.chat)
            .field("messages", &self.messages)
            .field("first_at", &self.first_at)
            .field("last_at", &self.last_at)
            .finish()
    }
}

/// How a failed handler call is retried: up to `attempts` calls in all, waiting
/// `first_backoff`, then twice as long each time, at most `max_backoff`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundRetry {
    /// Handler calls per batch at most, the first included (5).
    pub attempts: u32,
    /// The wait after the first failure (500 ms).
    pub first_backoff: Duration,
    /// The longest wait (10 s).
    pub max_backoff: Duration,
}

impl Default for InboundRetry {
    fn default() -> Self {
        InboundRetry {
            attempts: 5,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// The [`InboundBuffer`]'s settings; [`Default`] gives the documented defaults, checked by
/// [`InboundConfig::validate`] when the buffer is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundConfig {
    /// A conversation's batch is handed over once no message came for this long (3 s).
    pub quiet: Duration,
    /// ... or once it holds this many messages (20) ...
    pub max_messages: usize,
    /// ... or this long after its first message, even if messages keep coming (30 s).
    pub max_age: Duration,
    /// Messages one tenant may have collecting (not yet in a batch) at most (1,000). Beyond,
    /// the tenant's oldest conversation is handed over early: one tenant's flood fills only
    /// its own share.
    pub max_pending_per_tenant: usize,
    /// Batches of one tenant waiting for a handler call at most (100). Beyond, the oldest
    /// waiting batch is dropped from memory (logged and counted; its messages' inbox entries
    /// are marked applied, so it is not handed over again): a tenant whose handler cannot
    /// keep up cannot exhaust the host's memory.
    pub max_queued_batches_per_tenant: usize,
    /// Handler calls of one tenant at a time at most (2).
    pub handler_concurrency_per_tenant: usize,
    /// Handler calls at a time at most, all tenants together (16).
    pub handler_concurrency: usize,
    /// How long one handler call may take before it counts as failed and is retried (60 s).
    pub handler_timeout: Duration,
    /// How failed handler calls are retried.
    pub retry: InboundRetry,
}

impl Default for InboundConfig {
    fn default() -> Self {
        InboundConfig {
            quiet: Self::DEFAULT_QUIET,
            max_messages: Self::DEFAULT_MAX_MESSAGES,
            max_age: Self::DEFAULT_MAX_AGE,
            max_pending_per_tenant: Self::DEFAULT_MAX_PENDING_PER_TENANT,
            max_queued_batches_per_tenant: Self::DEFAULT_MAX_QUEUED_BATCHES_PER_TENANT,
            handler_concurrency_per_tenant: Self::DEFAULT_HANDLER_CONCURRENCY_PER_TENANT,
            handler_concurrency: Self::DEFAULT_HANDLER_CONCURRENCY,
            handler_timeout: Self::DEFAULT_HANDLER_TIMEOUT,
            retry: InboundRetry::default(),
        }
    }
}

impl InboundConfig {
    /// The default [`quiet`](Self::quiet): 3 s.
    pub const DEFAULT_QUIET: Duration = Duration::from_secs(3);
    /// The default [`max_messages`](Self::max_messages): 20.
    pub const DEFAULT_MAX_MESSAGES: usize = 20;
    /// The default [`max_age`](Self::max_age): 30 s.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30);
    /// The default [`max_pending_per_tenant`](Self::max_pending_per_tenant): 1,000.
    pub const DEFAULT_MAX_PENDING_PER_TENANT: usize = 1_000;
    /// The default [`max_queued_batches_per_tenant`](Self::max_queued_batches_per_tenant):
    /// 100.
    pub const DEFAULT_MAX_QUEUED_BATCHES_PER_TENANT: usize = 100;
    /// The default [`handler_concurrency_per_tenant`](Self::handler_concurrency_per_tenant):
    /// 2.
    pub const DEFAULT_HANDLER_CONCURRENCY_PER_TENANT: usize = 2;
    /// The default [`handler_concurrency`](Self::handler_concurrency): 16.
    pub const DEFAULT_HANDLER_CONCURRENCY: usize = 16;
    /// The default [`handler_timeout`](Self::handler_timeout): 60 s.
    pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(60);

    /// Checks the settings.
    ///
    /// # Errors
    /// [`InboundConfigError::Invalid`] naming the setting: a zero `quiet`, `max_age`,
    /// `max_messages`, `max_queued_batches_per_tenant`, `handler_concurrency_per_tenant`,
    /// `handler_timeout` or `retry.attempts`; a `max_pending_per_tenant` below
    /// `max_messages` (no conversation could reach the count cap); a `handler_concurrency`
    /// of zero or above what a semaphore holds; a `retry.first_backoff` longer than
    /// `retry.max_backoff`.
    pub fn validate(&self) -> Result<(), InboundConfigError> {
        let zero = |setting: &'static str| InboundConfigError::invalid(setting, "must not be zero");
        if self.quiet.is_zero() {
            return Err(zero("quiet"));
        }
        if self.max_age.is_zero() {
            return Err(zero("max_age"));
        }
        if self.max_messages == 0 {
            return Err(zero("max_messages"));
        }
        if self.max_pending_per_tenant < self.max_messages {
            return Err(InboundConfigError::invalid(
                "max_pending_per_tenant",
                format!(
                    "{} is below max_messages ({}): no conversation could reach the count cap",
                    self.max_pending_per_tenant, self.max_messages
                ),
            ));
        }
        if self.max_queued_batches_per_tenant == 0 {
            return Err(zero("max_queued_batches_per_tenant"));
        }
        if self.handler_concurrency_per_tenant == 0 {
            return Err(zero("handler_concurrency_per_tenant"));
        }
        if self.handler_concurrency == 0 {
            return Err(zero("handler_concurrency"));
        }
        if self.handler_concurrency > Semaphore::MAX_PERMITS {
            return Err(InboundConfigError::invalid(
                "handler_concurrency",
                format!("must be at most {}", Semaphore::MAX_PERMITS),
            ));
        }
        if self.handler_timeout.is_zero() {
            return Err(zero("handler_timeout"));
        }
        if self.retry.attempts == 0 {
            return Err(zero("retry.attempts"));
        }
        if self.retry.first_backoff > self.retry.max_backoff {
            return Err(InboundConfigError::invalid(
                "retry.first_backoff",
                format!(
                    "{:?} is longer than retry.max_backoff ({:?})",
                    self.retry.first_backoff, self.retry.max_backoff
                ),
            ));
        }
        Ok(())
    }

    /// The longest a message stays in the buffer before its batch reaches its final
    /// disposition (handled, given up or shed), when handler calls start as soon as the batch
    /// is due: [`max_age`](Self::max_age) collecting, then every one of `retry.attempts`
    /// calls taking the whole [`handler_timeout`](Self::handler_timeout), with the retry
    /// waits between them (`retry.first_backoff`, doubling, at most `retry.max_backoff`).
    /// Saturating: a huge setting answers [`Duration::MAX`]. With the defaults, 337.5 s:
    /// 30 s, 5 calls of 60 s, and waits of 0.5, 1, 2 and 4 s.
    ///
    /// Time a due batch waits for a handler call (behind its conversation's earlier batch,
    /// its tenant's [`handler_concurrency_per_tenant`](Self::handler_concurrency_per_tenant)
    /// or the [`handler_concurrency`](Self::handler_concurrency)) is not bounded and not
    /// counted. [`Ingest::with_inbound`](crate::Ingest::with_inbound) keeps the inbox sweep
    /// this long (and a margin) away from entries whose message the buffer may still hold.
    pub fn max_hold(&self) -> Duration {
        let retry = &self.retry;
        let calls = self.handler_timeout.saturating_mul(retry.attempts);
        // The waits between the calls, as `deliver` sleeps them: `first_backoff`, then twice
        // the previous one, at most `max_backoff`.
        let mut waits = Duration::ZERO;
        let mut backoff = retry.first_backoff;
        let mut left = retry.attempts.saturating_sub(1);
        while left > 0 && !backoff.is_zero() {
            if backoff >= retry.max_backoff {
                // This wait, then `max_backoff` for every one left.
                waits = waits
                    .saturating_add(backoff)
                    .saturating_add(retry.max_backoff.saturating_mul(left - 1));
                break;
            }
            waits = waits.saturating_add(backoff);
            backoff = backoff.saturating_mul(2).min(retry.max_backoff);
            left -= 1;
        }
        self.max_age.saturating_add(calls).saturating_add(waits)
    }

    /// When a conversation whose first message came at `first` and last at `last` is due.
    fn deadline(&self, first: SystemTime, last: SystemTime) -> SystemTime {
        match (
            last.checked_add(self.quiet),
            first.checked_add(self.max_age),
        ) {
            (Some(quiet), Some(age)) => quiet.min(age),
            (Some(at), None) | (None, Some(at)) => at,
            (None, None) => last,
        }
    }
}

/// An inbound buffer setting [`InboundConfig::validate`] refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InboundConfigError {
    /// A setting is out of range.
    #[error("inbound buffer setting {setting} {problem}")]
    Invalid {
        /// The setting.
        setting: &'static str,
        /// What is wrong.
        problem: String,
    },
}

impl InboundConfigError {
    fn invalid(setting: &'static str, problem: impl Into<String>) -> Self {
        InboundConfigError::Invalid {
            setting,
            problem: problem.into(),
        }
    }

    /// The setting refused.
    pub fn setting(&self) -> &'static str {
        match self {
            InboundConfigError::Invalid { setting, .. } => setting,
        }
    }
}

/// A conversation: the buffer's key. It carries the tenant, so two tenants never share one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct ConvKey {
    tenant: TenantId,
    chip: ChipId,
    chat: String,
}

/// A conversation collecting messages.
struct Collecting {
    /// Unique, increasing with creation: the tenant's oldest conversation has the lowest.
    seq: u64,
    /// When it is due (its entry in `State::deadlines` is `(deadline, seq)`).
    deadline: SystemTime,
    first_received: SystemTime,
    last_received: SystemTime,
    messages: Vec<InboundMessage>,
    /// The inbox marks of the tracked messages among `messages`.
    marks: Vec<InboxMark>,
}

/// A batch waiting for a handler call.
struct Queued {
    key: ConvKey,
    batch: InboundBatch,
    /// The inbox marks of its tracked messages: settled once the batch is handled, given up
    /// or shed.
    marks: Vec<InboxMark>,
}

/// One tenant's share of the buffer.
#[derive(Default)]
struct TenantState {
    /// Messages in collecting conversations.
    collecting: usize,
    /// The tenant's collecting conversations, oldest first.
    conversations: BTreeMap<u64, ConvKey>,
    /// Batches waiting for a handler call, oldest first.
    queue: VecDeque<Queued>,
    /// Messages in `queue`.
    queued: usize,
    /// Delivery workers running for this tenant (at most `handler_concurrency_per_tenant`).
    workers: usize,
    /// Conversations with a batch in a handler call (their next batch waits).
    busy: HashSet<ConvKey>,
}

impl TenantState {
    fn is_idle(&self) -> bool {
        self.collecting == 0
            && self.conversations.is_empty()
            && self.queue.is_empty()
            && self.workers == 0
            && self.busy.is_empty()
    }
}

/// Everything under the buffer's one lock.
#[derive(Default)]
struct State {
    conversations: HashMap<ConvKey, Collecting>,
    /// Every collecting conversation's deadline: `(deadline, seq)`, earliest first.
    deadlines: BTreeMap<(SystemTime, u64), ConvKey>,
    tenants: HashMap<TenantId, TenantState>,
    /// Tenants with batches queued since the timer last started workers.
    dirty: HashSet<TenantId>,
    next_seq: u64,
    /// Batches queued, all tenants.
    queued_batches: usize,
    /// Workers running, all tenants.
    workers: usize,
    /// Shutdown began: pushes are refused.
    closed: bool,
    /// The timer task is to end.
    stopping: bool,
    /// A timer task was spawned.
    timer_started: bool,
    /// The inbox marks of batches shed since they were last taken ([`State::take_shed`]).
    shed_marks: Vec<InboxMark>,
    /// Tasks settling shed batches' marks ([`settle_shed`]) not done yet.
    marking: usize,
}

impl State {
    fn earliest(&self) -> Option<SystemTime> {
        self.deadlines.first_key_value().map(|((at, _), _)| *at)
    }

    /// Adds a message to its conversation and applies the count and tenant caps. Answers
    /// whether the timer must look again (an earlier deadline, or batches queued).
    fn push(
        &mut self,
        key: ConvKey,
        message: InboundMessage,
        mark: Option<InboxMark>,
        now: SystemTime,
        config: &InboundConfig,
    ) -> bool {
        let earliest = self.earliest();
        let tenant = self.tenants.entry(key.tenant.clone()).or_default();
        tenant.collecting = tenant.collecting.saturating_add(1);
        let (count, deadline) = match self.conversations.get_mut(&key) {
            Some(conv) => {
                self.deadlines.remove(&(conv.deadline, conv.seq));
                conv.messages.push(message);
                conv.marks.extend(mark);
                conv.last_received = now;
                conv.deadline = config.deadline(conv.first_received, now);
                self.deadlines
                    .insert((conv.deadline, conv.seq), key.clone());
                (conv.messages.len(), conv.deadline)
            }
            None => {
                let seq = self.next_seq;
                self.next_seq = self.next_seq.wrapping_add(1);
                let deadline = config.deadline(now, now);
                tenant.conversations.insert(seq, key.clone());
                self.deadlines.insert((deadline, seq), key.clone());
                self.conversations.insert(
                    key.clone(),
                    Collecting {
                        seq,
                        deadline,
                        first_received: now,
                        last_received: now,
                        messages: vec![message],
                        marks: mark.into_iter().collect(),
                    },
                );
                (1, deadline)
            }
        };
        let mut wake = earliest.is_none_or(|at| deadline < at);
        if count >= config.max_messages {
            metrics::counter!("inbound_early_flushes_total", "cause" => "max_messages")
                .increment(1);
            self.close(&key, config);
            wake = true;
        }
        while let Some(tenant) = self.tenants.get(&key.tenant) {
            if tenant.collecting <= config.max_pending_per_tenant {
                break;
            }
            let Some(oldest) = tenant.conversations.values().next().cloned() else {
                break;
            };
            if !self.close(&oldest, config) {
                // Never expected: an index entry without its conversation. Drop it, stop.
                if let Some(tenant) = self.tenants.get_mut(&key.tenant) {
                    tenant.conversations.retain(|_, held| *held != oldest);
                }
                break;
            }
            metrics::counter!("inbound_early_flushes_total", "cause" => "tenant_cap").increment(1);
            debug!(tenant = %key.tenant, chip = %oldest.chip, "tenant's inbound buffer full; its oldest conversation handed over early");
            wake = true;
        }
        wake
    }

    /// Hands over every conversation due at `now`.
    fn flush_due(&mut self, now: SystemTime, config: &InboundConfig) {
        while let Some(((at, _), _)) = self.deadlines.first_key_value() {
            if *at > now {
                break;
            }
            let Some((_, key)) = self.deadlines.pop_first() else {
                break;
            };
            self.close(&key, config);
        }
    }

    /// Hands over every collecting conversation (shutdown).
    fn flush_all(&mut self, config: &InboundConfig) {
        while let Some((_, key)) = self.deadlines.pop_first() {
            self.close(&key, config);
        }
        // Nothing should be left; never keep a conversation without a deadline.
        let rest: Vec<ConvKey> = self.conversations.keys().cloned().collect();
        for key in rest {
            self.close(&key, config);
        }
    }

    /// Turns a collecting conversation into a queued batch, within the tenant's queue cap.
    /// Answers whether there was such a conversation.
    fn close(&mut self, key: &ConvKey, config: &InboundConfig) -> bool {
        let Some(conv) = self.conversations.remove(key) else {
            return false;
        };
        self.deadlines.remove(&(conv.deadline, conv.seq));
        let count = conv.messages.len();
        let tenant = self.tenants.entry(key.tenant.clone()).or_default();
        tenant.conversations.remove(&conv.seq);
        tenant.collecting = tenant.collecting.saturating_sub(count);
        tenant.queued = tenant.queued.saturating_add(count);
        tenant.queue.push_back(Queued {
            key: key.clone(),
            batch: InboundBatch {
                tenant: key.tenant.clone(),
                chip: key.chip.clone(),
                chat: key.chat.clone(),
                messages: conv.messages,
                first_at: conv.first_received,
                last_at: conv.last_received,
            },
            marks: conv.marks,
        });
        self.queued_batches = self.queued_batches.saturating_add(1);
        while tenant.queue.len() > config.max_queued_batches_per_tenant {
            let Some(shed) = tenant.queue.pop_front() else {
                break;
            };
            let messages = shed.batch.messages.len();
            tenant.queued = tenant.queued.saturating_sub(messages);
            self.queued_batches = self.queued_batches.saturating_sub(1);
            metrics::counter!("inbound_batches_total", "outcome" => "shed").increment(1);
            warn!(
                tenant = %shed.key.tenant,
                chip = %shed.key.chip,
                messages,
                "tenant's inbound queue full: its oldest batch dropped from memory (it stays in the durable inbox, marked applied)"
            );
            // Its final disposition: its entries are marked applied, after the lock.
            self.shed_marks.extend(shed.marks);
        }
        self.dirty.insert(key.tenant.clone());
        true
    }

    /// The next batch of `tenant` a worker may take (the oldest whose conversation has no
    /// call in progress). `None` retires the asking worker, in the same critical section.
    fn take_next(&mut self, tenant: &TenantId) -> Option<Queued> {
        let Some(state) = self.tenants.get_mut(tenant) else {
            self.workers = self.workers.saturating_sub(1);
            return None;
        };
        let position = state
            .queue
            .iter()
            .position(|queued| !state.busy.contains(&queued.key));
        match position.and_then(|index| state.queue.remove(index)) {
            Some(queued) => {
                state.queued = state.queued.saturating_sub(queued.batch.messages.len());
                state.busy.insert(queued.key.clone());
                self.queued_batches = self.queued_batches.saturating_sub(1);
                Some(queued)
            }
            None => {
                state.workers = state.workers.saturating_sub(1);
                self.workers = self.workers.saturating_sub(1);
                if state.is_idle() {
                    self.tenants.remove(tenant);
                }
                None
            }
        }
    }

    /// A worker is done with a conversation's batch.
    fn finish(&mut self, key: &ConvKey) {
        if let Some(tenant) = self.tenants.get_mut(&key.tenant) {
            tenant.busy.remove(key);
        }
    }

    /// The marks of the batches shed since the last call, to settle once the lock is released
    /// ([`settle_shed`]); counted in `marking` until then when there are any.
    fn take_shed(&mut self) -> Vec<InboxMark> {
        if self.shed_marks.is_empty() {
            return Vec::new();
        }
        self.marking = self.marking.saturating_add(1);
        std::mem::take(&mut self.shed_marks)
    }

    /// Nothing collecting, queued, in a handler call or being marked applied.
    fn is_drained(&self) -> bool {
        self.conversations.is_empty()
            && self.queued_batches == 0
            && self.workers == 0
            && self.marking == 0
    }
}

struct Inner {
    handler: Arc<dyn InboundHandler>,
    config: InboundConfig,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    /// Handler calls in progress, all tenants.
    global: Semaphore,
    /// Wakes the timer task: an earlier deadline, batches queued, stopping.
    wake: Notify,
    /// A worker ended (shutdown waits for the buffer to drain).
    drained: Notify,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The inbound buffer of seed 004: consecutive inbound messages of one conversation are
/// collected, then handed to the host's [`InboundHandler`] as one [`InboundBatch`], so an
/// AI agent answers a burst of messages once rather than each of them.
///
/// **Batches.** A conversation is keyed by (tenant, chip, chat). Its batch is handed over
/// when no message came for [`InboundConfig::quiet`] (3 s), when it holds
/// [`max_messages`](InboundConfig::max_messages) (20, at once), or
/// [`max_age`](InboundConfig::max_age) (30 s) after its first message even if messages keep
/// coming. Messages are in the order [`push`](Self::push) received them. One timer task
/// keeps every conversation's deadline in an ordered map: a push is O(log n).
///
/// **Fairness.** Keys carry the tenant. A tenant has at most
/// [`max_pending_per_tenant`](InboundConfig::max_pending_per_tenant) messages collecting
/// (beyond, its oldest conversation is handed over early) and at most
/// [`max_queued_batches_per_tenant`](InboundConfig::max_queued_batches_per_tenant) batches
/// waiting (beyond, its oldest waiting batch is shed). Handler calls are limited per tenant
/// ([`handler_concurrency_per_tenant`](InboundConfig::handler_concurrency_per_tenant)
/// delivery workers per tenant) and overall
/// ([`handler_concurrency`](InboundConfig::handler_concurrency), a FIFO semaphore taken
/// per call and released during retry waits). A tenant whose chats flood or whose handler is
/// slow fills only its own share; another tenant's batch waits at most for the calls in
/// progress, never for the flooding tenant's backlog. [`push`](Self::push) never blocks.
///
/// **Delivery, at least once.** A conversation's batches are handed over one at a time, in
/// order. A failed call (an error, a panic, a
/// [`handler_timeout`](InboundConfig::handler_timeout)) is retried with the same batch and
/// backoff ([`InboundConfig::retry`]); after the last attempt (or a
/// [`HandlerError::permanent`]) the batch is logged, counted and dropped from memory. On
/// [`InboundHandle::shutdown`] every collecting conversation is handed over at once and the
/// shutdown waits until every batch was handled (or gave up). Every message the buffer got
/// from the ingest ([`Ingest::with_inbound`](crate::Ingest::with_inbound)) was stored in the
/// durable inbox first, and its inbox entry is marked applied only once its batch reached
/// its final disposition: handled, given up (after the last attempt or a permanent error) or
/// shed. What the buffer holds when the process dies is so still unapplied in the inbox, and
/// the ingest's sweep ([`Ingest::reapply_pending`](crate::Ingest::reapply_pending)) hands it
/// over again one grace later ([`Ingest::sweep_grace`](crate::Ingest::sweep_grace), which
/// covers [`InboundConfig::max_hold`]): **at least once, from the durable inbox**, also
/// across a crash. Messages given to [`push`](Self::push) by hand are not tracked.
///
/// **Time.** Decisions (is a conversation due?) use the injected [`Clock`]; the timer task
/// waits with `tokio::time` for the remaining time by that clock, then checks again, so a
/// clock that runs behind Tokio's timer only delays a batch, never hurries it. The two must
/// move together: [`SystemClock`](fleet_vocab::SystemClock) in production; the tests use it
/// with short durations. [`InboundBatch::first_at`] and `last_at` are receipt times by that
/// clock; [`InboundMessage::at`] is the sender's time.
///
/// Nothing here logs a message body. Metrics: `inbound_batches_total{outcome}` (`delivered`,
/// `failed`, `shed`), `inbound_handler_retries_total`, `inbound_early_flushes_total{cause}`
/// (`max_messages`, `tenant_cap`), `inbound_messages_refused_total` (pushed after shutdown).
///
/// Cheap to clone (clones share the buffer).
///
/// ```no_run
/// # use std::sync::Arc;
/// # use std::time::SystemTime;
/// # use session_supervisor::{InboundBuffer, InboundConfig, InboundHandler, InboundMessage, SystemClock};
/// # use tenant_isolation::{ChipId, TenantId};
/// # async fn demo(agent: Arc<dyn InboundHandler>) -> Result<(), Box<dyn std::error::Error>> {
/// let buffer = InboundBuffer::new(agent, InboundConfig::default(), Arc::new(SystemClock))?;
/// let handle = buffer.spawn();
/// // Usually `Ingest::with_inbound(Arc::new(buffer.clone()))` pushes; by hand:
/// let message = InboundMessage {
///     id: "false_5511999999999@c.us_AAA".into(),
///     at: SystemTime::now(),
///     participant: None,
///     body: Some("olá".into()),
///     has_media: false,
/// };
/// buffer.push(TenantId::new("acme")?, ChipId::new("sales-1")?, "5511999999999@c.us", message);
/// // On the way down: what is collecting is handed over, not lost.
/// handle.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct InboundBuffer {
    inner: Arc<Inner>,
}

impl fmt::Debug for InboundBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.lock();
        f.debug_struct("InboundBuffer")
            .field("config", &self.inner.config)
            .field("conversations", &state.conversations.len())
            .field("queued_batches", &state.queued_batches)
            .field("workers", &state.workers)
            .field("closed", &state.closed)
            .finish_non_exhaustive()
    }
}

impl InboundBuffer {
    /// A buffer handing batches to `handler`, timed by `clock`. Nothing is handed over until
    /// [`spawn`](Self::spawn) starts its timer.
    ///
    /// # Errors
    /// [`InboundConfigError`] when `config` does not pass [`InboundConfig::validate`].
    pub fn new(
        handler: Arc<dyn InboundHandler>,
        config: InboundConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, InboundConfigError> {
        config.validate()?;
        let global = Semaphore::new(config.handler_concurrency);
        Ok(InboundBuffer {
            inner: Arc::new(Inner {
                handler,
                config,
                clock,
                state: Mutex::new(State::default()),
                global,
                wake: Notify::new(),
                drained: Notify::new(),
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &InboundConfig {
        &self.inner.config
    }

    /// Starts the timer task (on the current Tokio runtime: call it from within one), which
    /// hands over due batches and starts delivery workers. Call it once: a second call starts
    /// nothing and answers a handle that can still shut the buffer down. A handle dropped
    /// without [`InboundHandle::shutdown`] leaves the timer running.
    #[must_use = "shut the buffer down through the handle, or pending batches are not handed over"]
    pub fn spawn(&self) -> InboundHandle {
        let start = {
            let mut state = self.inner.lock();
            !std::mem::replace(&mut state.timer_started, true)
        };
        let timer = if start {
            Some(tokio::spawn(timer(Arc::clone(&self.inner))))
        } else {
            warn!("the inbound buffer's timer runs already; not started twice");
            None
        };
        InboundHandle {
            inner: Arc::clone(&self.inner),
            timer,
        }
    }

    /// Adds an inbound message to its conversation (`tenant`, `chip`, `chat`). Never blocks
    /// and never waits for another tenant: it takes the buffer's lock for O(log n) work.
    /// Once [`InboundHandle::shutdown`] began, the message is refused (counted in
    /// `inbound_messages_refused_total`; a message of the ingest stays unapplied in the
    /// durable inbox, and the sweep applies it again).
    ///
    /// A message pushed by hand has no inbox entry: nothing hands it over again if the
    /// process dies while the buffer holds it.
    pub fn push(
        &self,
        tenant: TenantId,
        chip: ChipId,
        chat: impl Into<String>,
        message: InboundMessage,
    ) {
        self.push_with(tenant, chip, chat.into(), message, None);
    }

    /// [`push`](Self::push) for the ingest: the message's inbox entry is marked applied
    /// through `mark` once its batch reached its final disposition (handled, given up after
    /// its retries or a permanent error, or shed), and never if the process dies first (the
    /// sweep then hands it over again). Answers whether the message was taken: `false` after
    /// shutdown began (`mark` is dropped unused; the entry stays unapplied).
    pub(crate) fn push_tracked(
        &self,
        tenant: TenantId,
        chip: ChipId,
        chat: impl Into<String>,
        message: InboundMessage,
        mark: InboxMark,
    ) -> bool {
        self.push_with(tenant, chip, chat.into(), message, Some(mark))
    }

    /// [`push`](Self::push), with the message's inbox mark if it has one. Answers whether the
    /// message was taken.
    fn push_with(
        &self,
        tenant: TenantId,
        chip: ChipId,
        chat: String,
        message: InboundMessage,
        mark: Option<InboxMark>,
    ) -> bool {
        let now = self.inner.clock.now();
        let key = ConvKey { tenant, chip, chat };
        let (wake, shed) = {
            let mut state = self.inner.lock();
            if state.closed {
                drop(state);
                metrics::counter!("inbound_messages_refused_total").increment(1);
                debug!(tenant = %key.tenant, chip = %key.chip, "inbound message after shutdown refused; the inbox holds it");
                return false;
            }
            let wake = state.push(key, message, mark, now, &self.inner.config);
            (wake, state.take_shed())
        };
        settle_shed(&self.inner, shed);
        if wake {
            self.inner.wake.notify_one();
        }
        true
    }

    /// Messages of `tenant` the buffer holds and has not handed to the handler yet: those
    /// collecting and those in batches waiting for a handler call (not those in a call).
    pub fn pending(&self, tenant: &TenantId) -> usize {
        self.inner
            .lock()
            .tenants
            .get(tenant)
            .map_or(0, |state| state.collecting.saturating_add(state.queued))
    }
}

/// The running [`InboundBuffer`]'s timer, from [`InboundBuffer::spawn`].
pub struct InboundHandle {
    inner: Arc<Inner>,
    timer: Option<JoinHandle<()>>,
}

impl fmt::Debug for InboundHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundHandle")
            .field("timer", &self.timer)
            .finish_non_exhaustive()
    }
}

impl InboundHandle {
    /// Shuts the buffer down without losing what it holds: refuses further pushes, hands
    /// every collecting conversation over at once, waits until every batch was handled (with
    /// its retries) or given up, then stops the timer. How long it takes depends on the
    /// handler: bound it with `tokio::time::timeout` if needed (then what was not handled
    /// yet is only in the durable inbox).
    pub async fn shutdown(mut self) {
        let shed = {
            let mut state = self.inner.lock();
            state.closed = true;
            state.flush_all(&self.inner.config);
            state.take_shed()
        };
        settle_shed(&self.inner, shed);
        self.inner.wake.notify_one();
        loop {
            let mut notified = pin!(self.inner.drained.notified());
            notified.as_mut().enable();
            if self.inner.lock().is_drained() {
                break;
            }
            notified.await;
        }
        self.inner.lock().stopping = true;
        self.inner.wake.notify_waiters();
        self.inner.wake.notify_one();
        if let Some(timer) = self.timer.take()
            && let Err(error) = timer.await
        {
            warn!(%error, "the inbound buffer's timer ended abnormally");
        }
    }
}

/// The timer task: hands over due conversations and starts delivery workers.
async fn timer(inner: Arc<Inner>) {
    loop {
        let mut notified = pin!(inner.wake.notified());
        notified.as_mut().enable();
        let (next, shed) = {
            let mut guard = inner.lock();
            let state = &mut *guard;
            if state.stopping {
                return;
            }
            state.flush_due(inner.clock.now(), &inner.config);
            start_workers(&inner, state);
            (state.earliest(), state.take_shed())
        };
        settle_shed(&inner, shed);
        match next {
            Some(deadline) => {
                let wait = deadline
                    .duration_since(inner.clock.now())
                    .unwrap_or(Duration::ZERO)
                    .max(MIN_WAIT);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = notified.as_mut() => {}
                }
            }
            None => notified.await,
        }
    }
}

/// Starts workers for the tenants with batches queued, up to each tenant's limit.
fn start_workers(inner: &Arc<Inner>, state: &mut State) {
    let dirty = std::mem::take(&mut state.dirty);
    for tenant in dirty {
        let Some(tenant_state) = state.tenants.get_mut(&tenant) else {
            continue;
        };
        let room = inner
            .config
            .handler_concurrency_per_tenant
            .saturating_sub(tenant_state.workers);
        for _ in 0..room.min(tenant_state.queue.len()) {
            tenant_state.workers = tenant_state.workers.saturating_add(1);
            state.workers = state.workers.saturating_add(1);
            tokio::spawn(worker(Arc::clone(inner), tenant.clone()));
        }
    }
}

/// One delivery worker of `tenant`: takes its batches one by one until none is left that
/// it may take. Once a batch is handled or given up, its messages' inbox entries are marked
/// applied (no lock held).
async fn worker(inner: Arc<Inner>, tenant: TenantId) {
    loop {
        let next = inner.lock().take_next(&tenant);
        let Some(Queued { key, batch, marks }) = next else {
            break;
        };
        deliver(&inner, batch).await;
        inner.lock().finish(&key);
        settle(marks).await;
    }
    inner.drained.notify_waiters();
}

/// Hands one batch to the handler, with retries.
async fn deliver(inner: &Inner, batch: InboundBatch) {
    let retry = &inner.config.retry;
    let timeout = inner.config.handler_timeout;
    let messages = batch.messages.len();
    let mut backoff = retry.first_backoff;
    let mut attempt: u32 = 1;
    loop {
        let permit = inner.global.acquire().await.ok();
        let call = AssertUnwindSafe(inner.handler.handle(batch.clone())).catch_unwind();
        let outcome = tokio::time::timeout(timeout, call).await;
        drop(permit);
        let failure = match outcome {
            Ok(Ok(Ok(()))) => {
                metrics::counter!("inbound_batches_total", "outcome" => "delivered").increment(1);
                return;
            }
            Ok(Ok(Err(failure))) => failure,
            Ok(Err(_panic)) => HandlerError::new("the handler panicked"),
            Err(_elapsed) => HandlerError::new(format!("the handler took longer than {timeout:?}")),
        };
        if !failure.is_retryable() || attempt >= retry.attempts {
            metrics::counter!("inbound_batches_total", "outcome" => "failed").increment(1);
            error!(
                tenant = %batch.tenant,
                chip = %batch.chip,
                messages,
                attempts = attempt,
                error = %failure,
                "inbound batch not handled: dropped from memory (it stays in the durable inbox)"
            );
            return;
        }
        metrics::counter!("inbound_handler_retries_total").increment(1);
        warn!(
            tenant = %batch.tenant,
            chip = %batch.chip,
            messages,
            attempt,
            error = %failure,
            retry_in = ?backoff,
            "inbound handler failed; retrying"
        );
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2).min(retry.max_backoff);
        attempt = attempt.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_refusals_name_the_setting() {
        InboundConfig::default().validate().unwrap();
        let refused = |change: fn(&mut InboundConfig)| {
            let mut config = InboundConfig::default();
            change(&mut config);
            config.validate().unwrap_err().setting()
        };
        assert_eq!(refused(|c| c.quiet = Duration::ZERO), "quiet");
        assert_eq!(refused(|c| c.max_messages = 0), "max_messages");
        assert_eq!(
            refused(|c| c.max_pending_per_tenant = 5),
            "max_pending_per_tenant"
        );
        assert_eq!(
            refused(|c| c.handler_concurrency = 0),
            "handler_concurrency"
        );
        assert_eq!(refused(|c| c.retry.attempts = 0), "retry.attempts");
        assert_eq!(
            refused(|c| c.retry.first_backoff = Duration::from_secs(60)),
            "retry.first_backoff"
        );
    }

    #[test]
    fn max_hold_sums_the_age_the_calls_and_the_waits_as_deliver_sleeps_them() {
        let secs = Duration::from_secs;
        let ms = Duration::from_millis;
        let config = InboundConfig::default();
        assert_eq!(config.max_hold(), secs(30) + secs(300) + ms(7_500));
        let one = InboundConfig {
            retry: InboundRetry {
                attempts: 1,
                ..InboundRetry::default()
            },
            ..InboundConfig::default()
        };
        assert_eq!(
            one.max_hold(),
            secs(30) + secs(60),
            "no wait after a single call"
        );
        let capped = InboundConfig {
            retry: InboundRetry {
                attempts: 7,
                first_backoff: ms(500),
                max_backoff: secs(2),
            },
            ..InboundConfig::default()
        };
        // Waits: 0.5, 1, 2, 2, 2, 2 s.
        assert_eq!(capped.max_hold(), secs(30) + secs(420) + ms(9_500));
        let huge = InboundConfig {
            handler_timeout: Duration::MAX,
            retry: InboundRetry {
                attempts: u32::MAX,
                first_backoff: ms(1),
                max_backoff: Duration::MAX,
            },
            ..InboundConfig::default()
        };
        assert_eq!(
            huge.max_hold(),
            Duration::MAX,
            "saturates, and answers at once"
        );
    }

    #[test]
    fn deadline_is_the_earlier_of_quiet_and_age() {
        let config = InboundConfig::default();
        let first = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(config.deadline(first, first), first + config.quiet);
        let late = first + Duration::from_secs(29);
        assert_eq!(config.deadline(first, late), first + config.max_age);
    }
}
