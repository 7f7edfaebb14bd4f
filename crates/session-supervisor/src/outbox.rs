//! The send outbox (issue 13, "Sending, paced"): one record per (tenant, idempotency key),
//! written before any WAHA call, so one key never sends twice, also across a crash. See
//! [`Outbox`].

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tenant_isolation::{ChipId, TenantId};
use waha_client::webhook::MessageAck;

/// Where a send stands.
///
/// `Pending` → `Sent` / `Unknown` / `Failed` (once, by the process that began the send);
/// then only `Sent { ack }` moves, and only forward ([`MessageAck::supersedes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutboxStatus {
    /// The record is written and the send may be under way (or the process that began it
    /// stopped before it finished: a crash). A retry with the same key never sends again.
    Pending,
    /// WAHA accepted the message; `ack` is its delivery state, moved forward by acks.
    Sent {
        /// The highest delivery state seen.
        ack: MessageAck,
    },
    /// The request may have reached WAHA, but no answer said so (a time-out, a connection
    /// lost after the body left, a 5xx, an undecodable answer). Never retried blindly: the
    /// host decides (for example after looking at the chat).
    Unknown,
    /// WAHA refused the send (a 4xx answer): nothing was sent.
    Failed {
        /// The error's kind ([`WahaError::kind`](waha_client::WahaError::kind)).
        reason: String,
    },
}

impl OutboxStatus {
    /// A short, stable name: `pending`, `sent`, `unknown` or `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Sent { .. } => "sent",
            OutboxStatus::Unknown => "unknown",
            OutboxStatus::Failed { .. } => "failed",
        }
    }

    /// Whether the send's outcome is settled (`Sent` or `Failed`).
    pub fn is_settled(&self) -> bool {
        matches!(
            self,
            OutboxStatus::Sent { .. } | OutboxStatus::Failed { .. }
        )
    }
}

impl fmt::Display for OutboxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One send, as the outbox keeps it. The text itself is never stored: only its length and a
/// fingerprint ([`text_fingerprint`]), enough to tell a retry of the same request from a key
/// reused for another one.
///
/// `Debug` shows lengths, never the idempotency key or the chat (they may carry personal
/// data).
#[derive(Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    /// The tenant.
    pub tenant: TenantId,
    /// The host's idempotency key (unique per tenant).
    pub key: String,
    /// The chip that sends.
    pub chip: ChipId,
    /// The chat sent to.
    pub chat: String,
    /// The text's length in bytes.
    pub text_len: u64,
    /// The text's fingerprint ([`text_fingerprint`]).
    pub text_fingerprint: u64,
    /// Where the send stands.
    pub status: OutboxStatus,
    /// WAHA's message id, once `sendText` answered with one.
    pub message_id: Option<String>,
    /// When the record was begun.
    pub created_at: SystemTime,
    /// When it last changed.
    pub updated_at: SystemTime,
}

impl OutboxRecord {
    /// A `Pending` record of a send of `text` from `chip` to `chat` under `key`, at `now`.
    pub fn pending(
        tenant: TenantId,
        key: impl Into<String>,
        chip: ChipId,
        chat: impl Into<String>,
        text: &str,
        now: SystemTime,
    ) -> Self {
        OutboxRecord {
            tenant,
            key: key.into(),
            chip,
            chat: chat.into(),
            text_len: u64::try_from(text.len()).unwrap_or(u64::MAX),
            text_fingerprint: text_fingerprint(text),
            status: OutboxStatus::Pending,
            message_id: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// Whether `other` describes the same request (chip, chat and text), whatever its status.
    pub fn same_request(&self, other: &OutboxRecord) -> bool {
        self.tenant == other.tenant
            && self.key == other.key
            && self.chip == other.chip
            && self.chat == other.chat
            && self.text_len == other.text_len
            && self.text_fingerprint == other.text_fingerprint
    }
}

impl fmt::Debug for OutboxRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxRecord")
            .field("tenant", &self.tenant)
            .field("key_len", &self.key.len())
            .field("chip", &self.chip)
            .field("chat_len", &self.chat.len())
            .field("text_len", &self.text_len)
            .field("status", &self.status)
            .field("message_id", &self.message_id)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// The fingerprint of a text the outbox compares requests by: 64-bit FNV-1a over its UTF-8
/// bytes. Stable across processes and releases (it is stored). Not a cryptographic hash: it
/// guards against a host reusing a key by mistake, not against an adversary (a tenant can
/// only confuse its own sends).
pub fn text_fingerprint(text: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    text.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// What [`Outbox::begin`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Begin {
    /// No record had the key: this one is stored (`Pending`); the caller sends.
    Started(OutboxRecord),
    /// A record with the key exists (as stored; it may describe another request): nothing
    /// was written, the caller must not send.
    Existing(OutboxRecord),
}

/// Why the outbox could not do what was asked. Every variant leaves the outbox as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The backend is unavailable (a database, a network).
    #[error("send outbox unavailable: {reason}")]
    Unavailable {
        /// What failed (never a text, a chat or a key).
        reason: String,
    },
    /// The outbox holds as many records as it may ([`MemoryOutbox::with_capacity`]);
    /// pruning frees room.
    #[error("send outbox is full ({capacity} records retained): prune it")]
    Full {
        /// How many records it retains at most.
        capacity: usize,
    },
    /// No record has the key (it was pruned, or never begun).
    #[error("no send outbox record for this key")]
    NotFound,
    /// A stored record could not be read back (a corrupt row).
    #[error("a send outbox record is corrupt: {detail}")]
    Corrupt {
        /// What was wrong (never a value).
        detail: String,
    },
}

impl OutboxError {
    /// A short, stable name of the variant, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            OutboxError::Unavailable { .. } => "unavailable",
            OutboxError::Full { .. } => "full",
            OutboxError::NotFound => "not_found",
            OutboxError::Corrupt { .. } => "corrupt",
        }
    }

    /// Whether retrying later can help (the backend comes back, a prune frees room).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            OutboxError::Unavailable { .. } | OutboxError::Full { .. }
        )
    }
}

/// The durable send outbox: one record per (tenant, idempotency key). Any replica may write
/// it; records are scoped per tenant (one tenant's keys never collide with another's).
///
/// The seam is shaped so that a database backend implements each method as one statement or
/// one short transaction on one row:
/// - [`begin`](Outbox::begin): an atomic insert-if-absent on (tenant, key)
///   (`INSERT … ON CONFLICT DO NOTHING`, then a read of the existing row);
/// - [`finish`](Outbox::finish): one conditional `UPDATE … WHERE status = 'pending'`;
/// - [`abandon`](Outbox::abandon): one `DELETE … WHERE status = 'pending'`;
/// - [`advance_ack`](Outbox::advance_ack): one conditional `UPDATE` of the row with the
///   message id (or an upsert of an early ack mark, see below);
/// - [`prune`](Outbox::prune): one `DELETE` by age;
/// - [`prune_marks`](Outbox::prune_marks): one `DELETE` of the expired early ack marks.
///
/// **Early acks.** WAHA may deliver a message's first ack before the sender has stored the
/// message id that `sendText` answered. `advance_ack` for a message id no record holds keeps
/// the ack as a mark (answering `false`), and `finish` folds a mark for its message id into
/// the record (forward only).
///
/// **Mark lifetime.** Such an ack comes seconds before its send is recorded (the time
/// `sendText`'s answer takes to come back and be stored); an ack of a message that was not
/// sent through the outbox (typed on the phone) leaves a mark that no record will ever take.
/// So a mark lives for the backend's early-ack lifetime (`with_early_ack_ttl`,
/// [`MemoryOutbox::DEFAULT_EARLY_ACK_TTL`], 10 minutes, by default), counted from its last
/// move (the `at` of the `advance_ack` that set it): a mark seen at `seen` is expired at `now`
/// when `seen + ttl <= now`. An expired mark is never folded in (`finish` at `at` drops it),
/// an ack after a mark expired starts a new mark (the expired level is forgotten), and
/// [`prune_marks`](Outbox::prune_marks) removes the expired marks; [`prune`](Outbox::prune)
/// also removes the marks last moved before its cutoff. Marks are compared with the callers'
/// times only, never a backend's clock.
///
/// [`MemoryOutbox`] is the in-process backend.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Stores `record` (status `Pending`) unless its tenant already has a record with its
    /// key: atomically, so of any number of racing callers exactly one gets
    /// [`Begin::Started`]; the others get [`Begin::Existing`] with the stored record.
    ///
    /// # Errors
    /// [`OutboxError`]; nothing was stored.
    async fn begin(&self, record: OutboxRecord) -> Result<Begin, OutboxError>;

    /// The record of `key`, if any.
    ///
    /// # Errors
    /// [`OutboxError`].
    async fn get(&self, tenant: &TenantId, key: &str) -> Result<Option<OutboxRecord>, OutboxError>;

    /// Settles a `Pending` record: `status` (not `Pending`) and WAHA's message id, with the
    /// updated time `at`. A record that is no longer `Pending` is left as it is and returned.
    /// For a `Sent` record, an early ack mark of `message_id` that supersedes `status`'s ack
    /// is folded in.
    ///
    /// # Errors
    /// [`OutboxError::NotFound`] when no record has the key; other [`OutboxError`]s.
    async fn finish(
        &self,
        tenant: &TenantId,
        key: &str,
        status: OutboxStatus,
        message_id: Option<String>,
        at: SystemTime,
    ) -> Result<OutboxRecord, OutboxError>;

    /// Removes a `Pending` record whose request certainly never reached WAHA (a refused
    /// connection), so that a retry with the same key sends. Answers whether it removed one
    /// (`false`: no record, or not `Pending`).
    ///
    /// # Errors
    /// [`OutboxError`]; nothing changed.
    async fn abandon(&self, tenant: &TenantId, key: &str) -> Result<bool, OutboxError>;

    /// The record holding WAHA's `message_id`, if any (for acks).
    ///
    /// # Errors
    /// [`OutboxError`].
    async fn by_message_id(
        &self,
        tenant: &TenantId,
        message_id: &str,
    ) -> Result<Option<OutboxRecord>, OutboxError>;

    /// Moves the `Sent` record of `message_id` to `ack` if that supersedes its ack
    /// ([`MessageAck::supersedes`]), at `at`. Answers whether a record moved: `false` for a
    /// regression, a repeat, or a message id no record holds (then the ack is kept as an
    /// early mark, see [`Outbox`]).
    ///
    /// # Errors
    /// [`OutboxError`]; nothing changed.
    async fn advance_ack(
        &self,
        tenant: &TenantId,
        message_id: &str,
        ack: MessageAck,
        at: SystemTime,
    ) -> Result<bool, OutboxError>;

    /// Removes the records created before `older_than` (whatever their status: the
    /// idempotency guarantee holds for the retention) and the early ack marks seen before it.
    /// Answers how many records went.
    ///
    /// # Errors
    /// [`OutboxError`]; nothing was removed.
    async fn prune(&self, older_than: SystemTime) -> Result<u64, OutboxError>;

    /// Removes the early ack marks expired at `now` (last moved at least the early-ack
    /// lifetime before it, see [`Outbox`]), of every tenant. Answers how many went. An expired
    /// mark is ignored anyway; this frees its room (call it every minute or so, with
    /// [`prune`](Outbox::prune) or on its own).
    ///
    /// # Errors
    /// [`OutboxError`]; a database backend may have removed some tenants' marks already.
    async fn prune_marks(&self, now: SystemTime) -> Result<u64, OutboxError>;
}

/// Whether an early ack mark last moved at `seen` is expired at `now` with lifetime `ttl`
/// (`seen + ttl <= now`; never when that sum is beyond `SystemTime`'s range).
pub(crate) fn mark_expired(seen: SystemTime, ttl: Duration, now: SystemTime) -> bool {
    seen.checked_add(ttl).is_some_and(|end| end <= now)
}

/// Per tenant: message id → the highest ack seen before any record held the id, and when it
/// last moved.
type Marks = HashMap<TenantId, HashMap<String, (MessageAck, SystemTime)>>;

/// Removes the marks of `marks` expired at `now` (and the tenants left without one); answers
/// how many went.
fn drop_expired_marks(marks: &mut Marks, ttl: Duration, now: SystemTime) -> u64 {
    let mut removed = 0u64;
    for tenant_marks in marks.values_mut() {
        tenant_marks.retain(|_, (_, seen)| {
            let keep = !mark_expired(*seen, ttl, now);
            if !keep {
                removed += 1;
            }
            keep
        });
    }
    marks.retain(|_, tenant_marks| !tenant_marks.is_empty());
    removed
}

#[derive(Default)]
struct State {
    /// Per tenant: key → record.
    records: HashMap<TenantId, HashMap<String, OutboxRecord>>,
    /// Per tenant: message id → key.
    by_message: HashMap<TenantId, HashMap<String, String>>,
    /// Per tenant: message id → the highest ack seen before any record held the id, and when.
    early_acks: Marks,
    /// Records held, over every tenant.
    len: usize,
    /// A lower bound of the `seen` time of every early ack mark (`None`: no mark, or not
    /// known). A full outbox sweeps its marks for expired ones (a scan of every mark) only once
    /// this bound has expired, so acks arriving while the marks are full and alive cost no scan;
    /// a sweep sets the bound to the oldest mark left.
    oldest_mark: Option<SystemTime>,
}

/// The in-process [`Outbox`]: a `Mutex` over maps. Durable only as long as the process
/// lives ("across a crash" needs a database backend): for one process and for tests.
///
/// **Bound.** It retains at most [`capacity`](MemoryOutbox::capacity) records
/// ([`MemoryOutbox::DEFAULT_CAPACITY`] by default), and as many early ack marks. When full,
/// [`Outbox::begin`] answers [`OutboxError::Full`] (nothing is evicted: an evicted key
/// would let a resend through) until [`Outbox::prune`] removes old records. Marks live for
/// [`early_ack_ttl`](MemoryOutbox::early_ack_ttl) ([`MemoryOutbox::DEFAULT_EARLY_ACK_TTL`] by
/// default; see [`Outbox`]): when the marks are full, the expired ones make room for a new
/// one, which is dropped only when that many marks are all alive (as many acks within one
/// lifetime; the sweep, a scan of every mark, runs only once the oldest mark may have expired,
/// so acks arriving while the marks are full and alive cost no scan); [`Outbox::prune_marks`]
/// removes them too.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use session_supervisor::{Begin, MemoryOutbox, Outbox, OutboxRecord, OutboxStatus};
/// use tenant_isolation::{ChipId, TenantId};
/// use waha_client::webhook::MessageAck;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let outbox = MemoryOutbox::new();
/// let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let acme = TenantId::new("acme")?;
/// let record = OutboxRecord::pending(
///     acme.clone(), "order-42", ChipId::new("sales-1")?, "5511999999999@c.us", "hi", now,
/// );
/// assert!(matches!(outbox.begin(record.clone()).await?, Begin::Started(_)));
/// assert!(matches!(outbox.begin(record).await?, Begin::Existing(_)), "one key, one send");
/// let sent = OutboxStatus::Sent { ack: MessageAck::Server };
/// outbox.finish(&acme, "order-42", sent, Some("m1".into()), now).await?;
/// assert!(outbox.advance_ack(&acme, "m1", MessageAck::Read, now).await?);
/// assert!(!outbox.advance_ack(&acme, "m1", MessageAck::Device, now).await?, "never back");
/// # Ok(()) }
/// ```
pub struct MemoryOutbox {
    capacity: usize,
    early_ack_ttl: Duration,
    state: Mutex<State>,
}

impl MemoryOutbox {
    /// How many records a [`MemoryOutbox::new`] retains at most.
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// How long an early ack mark lives by default (both backends), from its last move: 10
    /// minutes. A genuine early ack precedes the record of its send by the time `sendText`'s
    /// answer takes to come back and be stored, seconds; ten minutes leave room for a slow
    /// answer, a slow database and clocks of replicas a little apart, and keep the marks of
    /// acks nobody will claim (messages typed on the phone) to about ten minutes' worth.
    pub const DEFAULT_EARLY_ACK_TTL: Duration = Duration::from_secs(10 * 60);

    /// An empty outbox retaining at most [`MemoryOutbox::DEFAULT_CAPACITY`] records.
    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// An empty outbox retaining at most `capacity` records (at least 1), its early ack marks
    /// living [`MemoryOutbox::DEFAULT_EARLY_ACK_TTL`].
    pub fn with_capacity(capacity: usize) -> Self {
        MemoryOutbox {
            capacity: capacity.max(1),
            early_ack_ttl: Self::DEFAULT_EARLY_ACK_TTL,
            state: Mutex::new(State::default()),
        }
    }

    /// The same outbox whose early ack marks live `ttl` from their last move (see [`Outbox`]);
    /// `Duration::ZERO` keeps no mark alive (early acks are then never applied).
    #[must_use]
    pub fn with_early_ack_ttl(mut self, ttl: Duration) -> Self {
        self.early_ack_ttl = ttl;
        self
    }

    /// How many records it retains at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How long an early ack mark lives from its last move.
    pub fn early_ack_ttl(&self) -> Duration {
        self.early_ack_ttl
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.lock().len
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every record of `tenant` (for tests and inspection), in no particular order.
    pub fn records(&self, tenant: &TenantId) -> Vec<OutboxRecord> {
        self.lock()
            .records
            .get(tenant)
            .map(|records| records.values().cloned().collect())
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryOutbox {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryOutbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryOutbox")
            .field("capacity", &self.capacity)
            .field("early_ack_ttl", &self.early_ack_ttl)
            .field("records", &self.len())
            .finish()
    }
}

#[async_trait]
impl Outbox for MemoryOutbox {
    async fn begin(&self, record: OutboxRecord) -> Result<Begin, OutboxError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        if let Some(existing) = state
            .records
            .get(&record.tenant)
            .and_then(|records| records.get(&record.key))
        {
            return Ok(Begin::Existing(existing.clone()));
        }
        if state.len >= self.capacity {
            return Err(OutboxError::Full {
                capacity: self.capacity,
            });
        }
        let mut stored = record;
        stored.status = OutboxStatus::Pending;
        stored.message_id = None;
        state
            .records
            .entry(stored.tenant.clone())
            .or_default()
            .insert(stored.key.clone(), stored.clone());
        state.len += 1;
        Ok(Begin::Started(stored))
    }

    async fn get(&self, tenant: &TenantId, key: &str) -> Result<Option<OutboxRecord>, OutboxError> {
        Ok(self
            .lock()
            .records
            .get(tenant)
            .and_then(|records| records.get(key))
            .cloned())
    }

    async fn finish(
        &self,
        tenant: &TenantId,
        key: &str,
        status: OutboxStatus,
        message_id: Option<String>,
        at: SystemTime,
    ) -> Result<OutboxRecord, OutboxError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let record = state
            .records
            .get_mut(tenant)
            .and_then(|records| records.get_mut(key))
            .ok_or(OutboxError::NotFound)?;
        if record.status != OutboxStatus::Pending || status == OutboxStatus::Pending {
            return Ok(record.clone());
        }
        let mut status = status;
        // The mark is taken either way; an expired one is not folded in.
        if let (OutboxStatus::Sent { ack }, Some(id)) = (&mut status, &message_id)
            && let Some((early, seen)) = state
                .early_acks
                .get_mut(tenant)
                .and_then(|marks| marks.remove(id))
            && !mark_expired(seen, self.early_ack_ttl, at)
            && MessageAck::supersedes(*ack, early)
        {
            *ack = early;
        }
        record.status = status;
        record.message_id.clone_from(&message_id);
        record.updated_at = at;
        let settled = record.clone();
        if let Some(id) = message_id {
            state
                .by_message
                .entry(tenant.clone())
                .or_default()
                .insert(id, key.to_owned());
        }
        Ok(settled)
    }

    async fn abandon(&self, tenant: &TenantId, key: &str) -> Result<bool, OutboxError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(records) = state.records.get_mut(tenant) else {
            return Ok(false);
        };
        let removed = match records.entry(key.to_owned()) {
            Entry::Occupied(record) if record.get().status == OutboxStatus::Pending => {
                record.remove();
                true
            }
            _ => false,
        };
        if removed {
            state.len -= 1;
            if records.is_empty() {
                state.records.remove(tenant);
            }
        }
        Ok(removed)
    }

    async fn by_message_id(
        &self,
        tenant: &TenantId,
        message_id: &str,
    ) -> Result<Option<OutboxRecord>, OutboxError> {
        let state = self.lock();
        Ok(state
            .by_message
            .get(tenant)
            .and_then(|ids| ids.get(message_id))
            .and_then(|key| state.records.get(tenant).and_then(|r| r.get(key)))
            .cloned())
    }

    async fn advance_ack(
        &self,
        tenant: &TenantId,
        message_id: &str,
        ack: MessageAck,
        at: SystemTime,
    ) -> Result<bool, OutboxError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let key = state
            .by_message
            .get(tenant)
            .and_then(|ids| ids.get(message_id))
            .cloned();
        let record = match key {
            Some(key) => state
                .records
                .get_mut(tenant)
                .and_then(|records| records.get_mut(&key)),
            None => None,
        };
        match record {
            Some(record) => match &mut record.status {
                OutboxStatus::Sent { ack: current } if MessageAck::supersedes(*current, ack) => {
                    *current = ack;
                    record.updated_at = at;
                    Ok(true)
                }
                _ => Ok(false),
            },
            None => {
                // An ack ahead of `finish`: keep the highest one for it, for the marks'
                // lifetime (bounded: when full, the expired marks make room).
                let ttl = self.early_ack_ttl;
                let marks_len: usize = state.early_acks.values().map(HashMap::len).sum();
                let room = marks_len < self.capacity
                    || (state
                        .oldest_mark
                        .is_none_or(|oldest| mark_expired(oldest, ttl, at))
                        && {
                            drop_expired_marks(&mut state.early_acks, ttl, at);
                            state.oldest_mark = state
                                .early_acks
                                .values()
                                .flat_map(HashMap::values)
                                .map(|(_, seen)| *seen)
                                .min();
                            state.early_acks.values().map(HashMap::len).sum::<usize>()
                                < self.capacity
                        });
                let marks = state.early_acks.entry(tenant.clone()).or_default();
                let mut marked = false;
                match marks.entry(message_id.to_owned()) {
                    Entry::Occupied(mut mark) => {
                        let (current, seen) = *mark.get();
                        // An expired mark's level is forgotten: the new ack starts afresh.
                        if mark_expired(seen, ttl, at) || MessageAck::supersedes(current, ack) {
                            mark.insert((ack, at));
                            marked = true;
                        }
                    }
                    Entry::Vacant(mark) => {
                        if room {
                            mark.insert((ack, at));
                            marked = true;
                        }
                    }
                }
                if marks.is_empty() {
                    state.early_acks.remove(tenant);
                }
                if marked {
                    state.oldest_mark = Some(state.oldest_mark.map_or(at, |oldest| oldest.min(at)));
                }
                Ok(false)
            }
        }
    }

    async fn prune(&self, older_than: SystemTime) -> Result<u64, OutboxError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut removed = 0u64;
        for (tenant, records) in &mut state.records {
            records.retain(|_, record| {
                let keep = record.created_at >= older_than;
                if !keep {
                    removed += 1;
                    if let (Some(id), Some(ids)) =
                        (&record.message_id, state.by_message.get_mut(tenant))
                    {
                        ids.remove(id);
                    }
                }
                keep
            });
        }
        state.records.retain(|_, records| !records.is_empty());
        state.by_message.retain(|_, ids| !ids.is_empty());
        for marks in state.early_acks.values_mut() {
            marks.retain(|_, (_, seen)| *seen >= older_than);
        }
        state.early_acks.retain(|_, marks| !marks.is_empty());
        state.len = state.records.values().map(HashMap::len).sum();
        Ok(removed)
    }

    async fn prune_marks(&self, now: SystemTime) -> Result<u64, OutboxError> {
        let mut guard = self.lock();
        Ok(drop_expired_marks(
            &mut guard.early_acks,
            self.early_ack_ttl,
            now,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn record(tenant: &str, key: &str, text: &str, secs: u64) -> OutboxRecord {
        OutboxRecord::pending(
            TenantId::new(tenant).unwrap(),
            key,
            ChipId::new("c1").unwrap(),
            "5511999999999@c.us",
            text,
            at(secs),
        )
    }

    #[tokio::test]
    async fn one_key_begins_once_per_tenant() {
        let outbox = MemoryOutbox::new();
        assert!(matches!(
            outbox.begin(record("acme", "k", "hi", 0)).await.unwrap(),
            Begin::Started(_)
        ));
        let Begin::Existing(existing) =
            outbox.begin(record("acme", "k", "other", 1)).await.unwrap()
        else {
            panic!("the key exists");
        };
        assert!(!existing.same_request(&record("acme", "k", "other", 1)));
        assert!(existing.same_request(&record("acme", "k", "hi", 5)));
        assert!(matches!(
            outbox.begin(record("beta", "k", "hi", 0)).await.unwrap(),
            Begin::Started(_)
        ));
        assert_eq!(outbox.len(), 2);
        let debug = format!("{existing:?}");
        assert!(!debug.contains("5511999999999"), "{debug}");
    }

    #[tokio::test]
    async fn acks_move_forward_only_and_early_acks_are_folded_in() {
        let outbox = MemoryOutbox::new();
        let acme = TenantId::new("acme").unwrap();
        outbox.begin(record("acme", "k1", "hi", 0)).await.unwrap();
        // The Device ack arrives before `finish` stored the id.
        assert!(
            !outbox
                .advance_ack(&acme, "m1", MessageAck::Device, at(1))
                .await
                .unwrap()
        );
        let sent = outbox
            .finish(
                &acme,
                "k1",
                OutboxStatus::Sent {
                    ack: MessageAck::Server,
                },
                Some("m1".into()),
                at(2),
            )
            .await
            .unwrap();
        assert_eq!(
            sent.status,
            OutboxStatus::Sent {
                ack: MessageAck::Device
            }
        );
        assert!(
            !outbox
                .advance_ack(&acme, "m1", MessageAck::Server, at(3))
                .await
                .unwrap()
        );
        assert!(
            outbox
                .advance_ack(&acme, "m1", MessageAck::Read, at(4))
                .await
                .unwrap()
        );
        let read = outbox.by_message_id(&acme, "m1").await.unwrap().unwrap();
        assert_eq!(
            read.status,
            OutboxStatus::Sent {
                ack: MessageAck::Read
            }
        );
        // A settled record is never settled again.
        let again = outbox
            .finish(&acme, "k1", OutboxStatus::Unknown, None, at(5))
            .await
            .unwrap();
        assert_eq!(again.status, read.status);
    }

    #[tokio::test]
    async fn abandon_frees_only_pending_keys_and_prune_by_age() {
        let outbox = MemoryOutbox::with_capacity(2);
        let acme = TenantId::new("acme").unwrap();
        outbox.begin(record("acme", "k1", "hi", 0)).await.unwrap();
        outbox.begin(record("acme", "k2", "hi", 10)).await.unwrap();
        assert_eq!(
            outbox
                .begin(record("acme", "k3", "hi", 20))
                .await
                .unwrap_err()
                .kind(),
            "full"
        );
        outbox
            .finish(&acme, "k2", OutboxStatus::Unknown, None, at(11))
            .await
            .unwrap();
        assert!(!outbox.abandon(&acme, "k2").await.unwrap(), "not pending");
        assert!(outbox.abandon(&acme, "k1").await.unwrap());
        assert!(outbox.get(&acme, "k1").await.unwrap().is_none());
        assert_eq!(outbox.prune(at(15)).await.unwrap(), 1);
        assert!(outbox.is_empty());
    }

    #[tokio::test]
    async fn expired_marks_make_room_when_the_marks_are_full() {
        let outbox = MemoryOutbox::with_capacity(2).with_early_ack_ttl(Duration::from_secs(60));
        assert_eq!(outbox.early_ack_ttl(), Duration::from_secs(60));
        let acme = TenantId::new("acme").unwrap();
        let sent = OutboxStatus::Sent {
            ack: MessageAck::Server,
        };
        // Two acks of messages typed on the phone fill the marks.
        for id in ["phone-1", "phone-2"] {
            assert!(
                !outbox
                    .advance_ack(&acme, id, MessageAck::Read, at(0))
                    .await
                    .unwrap()
            );
        }
        // Full, none expired yet: a third mark is dropped.
        assert!(
            !outbox
                .advance_ack(&acme, "m1", MessageAck::Device, at(59))
                .await
                .unwrap()
        );
        outbox.begin(record("acme", "k1", "hi", 59)).await.unwrap();
        let first = outbox
            .finish(&acme, "k1", sent.clone(), Some("m1".into()), at(59))
            .await
            .unwrap();
        assert_eq!(first.status, sent, "the dropped mark is not applied");
        // A minute later the phone's marks expired: they make room for a new one.
        assert!(
            !outbox
                .advance_ack(&acme, "m2", MessageAck::Device, at(60))
                .await
                .unwrap()
        );
        outbox.begin(record("acme", "k2", "hi", 60)).await.unwrap();
        let second = outbox
            .finish(&acme, "k2", sent, Some("m2".into()), at(61))
            .await
            .unwrap();
        assert_eq!(
            second.status,
            OutboxStatus::Sent {
                ack: MessageAck::Device
            },
            "the new mark was kept and applied"
        );
        assert_eq!(
            outbox.prune_marks(at(1_000)).await.unwrap(),
            0,
            "the expired marks already went"
        );
    }
}
