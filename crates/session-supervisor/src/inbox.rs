//! The durable webhook inbox (issue 13): what [`Ingest`](crate::Ingest) stores before it
//! answers 2xx, the keys it de-duplicates by, and the applied marks that get every stored
//! delivery acted on at least once. See [`Inbox`].

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use async_trait::async_trait;
use tenant_isolation::{ChipId, TenantId};
use waha_client::webhook::MessageAck;

/// The prefix of an event-id key.
pub(crate) const EVENT_KEY_PREFIX: &str = "event:";
/// The prefix of a message-id key.
pub(crate) const MESSAGE_KEY_PREFIX: &str = "message:";
/// The prefix of an ack key.
pub(crate) const ACK_KEY_PREFIX: &str = "ack:";

/// The key of WAHA's event id.
pub(crate) fn event_key(id: &str) -> String {
    format!("{EVENT_KEY_PREFIX}{id}")
}

/// The key of a WhatsApp message id (`message`, `message.any`).
pub(crate) fn message_key(message_id: &str) -> String {
    format!("{MESSAGE_KEY_PREFIX}{message_id}")
}

/// The key of one ack level of one message (`message.ack`).
pub(crate) fn ack_key(message_id: &str, ack: MessageAck) -> String {
    format!("{ACK_KEY_PREFIX}{message_id}:{}", i64::from(ack))
}

/// The message id of an ack key (`ack:<message id>:<level>`; the id may itself contain `:`,
/// the level never does).
fn ack_key_message_id(key: &str) -> Option<&str> {
    key.strip_prefix(ACK_KEY_PREFIX)
        .and_then(|rest| rest.rsplit_once(':'))
        .map(|(message_id, _level)| message_id)
}

/// One webhook delivery as the inbox stores it: the raw body exactly as received (and
/// verified), with the keys it is de-duplicated by.
///
/// `Debug` shows the body's length, never its bytes (a body carries message text and
/// personal data).
#[derive(Clone, PartialEq, Eq)]
pub struct InboxEntry {
    /// The tenant (from the URL, cross-checked with the session name).
    pub tenant: TenantId,
    /// The chip (from the session name).
    pub chip: ChipId,
    /// The de-duplication keys (see [`Inbox`]); may be empty (an old
    /// server's `session.status` without an event id: never a duplicate).
    pub keys: Vec<String>,
    /// When the delivery was received (the retention counts from here).
    pub received_at: SystemTime,
    /// The raw body, as signed.
    pub body: Vec<u8>,
}

impl fmt::Debug for InboxEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboxEntry")
            .field("tenant", &self.tenant)
            .field("chip", &self.chip)
            .field("keys", &self.keys)
            .field("received_at", &self.received_at)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// The number an [`Inbox`] gives an entry it stores ([`Admission::New`]), unique within that
/// inbox (across tenants); [`Inbox::mark_applied`] and [`Inbox::claim_unapplied`] name entries
/// by it. Numbers only identify: their order is not the order of `received_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId(u64);

impl EntryId {
    /// The entry numbered `value`.
    pub const fn new(value: u64) -> Self {
        EntryId(value)
    }

    /// Its number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for EntryId {
    fn from(value: u64) -> Self {
        EntryId(value)
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// What [`Inbox::admit`] did with an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// None of its keys was seen: the entry and all its keys are stored, not yet applied. The
    /// caller acts on it, then [`marks it applied`](Inbox::mark_applied).
    New {
        /// The stored entry.
        entry: EntryId,
    },
    /// At least one of its keys was already seen (a retry of the same event, or the same
    /// message under another event id), and every entry that brought one of those keys is
    /// marked applied: nothing was stored, nothing is left to do.
    Duplicate,
    /// At least one of its keys was already seen, but an entry that brought one of them is not
    /// marked applied yet (the process that stored it crashed, or failed, before it acted on
    /// it, or is still acting on it): nothing was stored. The caller acts on this delivery
    /// (the same event) and then marks `entry` applied.
    Unapplied {
        /// The earlier entry (the lowest-numbered unapplied one when several match).
        entry: EntryId,
        /// When that entry was received: the ingest leaves a young one to the delivery that
        /// stored it, which may still be acting on it (two copies arriving together).
        received_at: SystemTime,
    },
}

impl Admission {
    /// Whether the caller should act on the delivery ([`New`](Self::New) or
    /// [`Unapplied`](Self::Unapplied)), and the entry to mark applied afterwards.
    pub fn to_apply(self) -> Option<EntryId> {
        match self {
            Admission::New { entry } | Admission::Unapplied { entry, .. } => Some(entry),
            Admission::Duplicate => None,
        }
    }
}

/// Why the inbox could not do what was asked. Every variant leaves the inbox as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError {
    /// The backend is unavailable (a database, a network).
    #[error("webhook inbox unavailable: {reason}")]
    Unavailable {
        /// What failed (never a body or a secret).
        reason: String,
    },
    /// The inbox holds as many entries as it may ([`MemoryInbox::with_capacity`]); pruning
    /// frees room.
    #[error("webhook inbox is full ({capacity} entries retained): prune it")]
    Full {
        /// How many entries it retains at most.
        capacity: usize,
    },
}

impl InboxError {
    /// A short, stable name of the variant, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            InboxError::Unavailable { .. } => "unavailable",
            InboxError::Full { .. } => "full",
        }
    }

    /// Whether retrying later can help (both: the backend comes back, a prune frees room).
    pub fn is_retryable(&self) -> bool {
        match self {
            InboxError::Unavailable { .. } | InboxError::Full { .. } => true,
        }
    }
}

/// The durable webhook inbox: de-duplication keys, stored deliveries with their applied
/// marks, and each message's highest ack. Any replica may write it.
///
/// The seam is shaped so that a PostgreSQL backend implements each method as one
/// transaction: [`Inbox::admit`] checks the keys and stores the entry with all its keys
/// atomically (the keys under a unique index, then the entry, rolled back as a whole when a
/// key exists), [`Inbox::mark_applied`] is one `UPDATE` of one entry, [`Inbox::record_ack`]
/// is one conditional upsert of a message's highest ack, [`Inbox::claim_unapplied`] one
/// `UPDATE … FOR UPDATE SKIP LOCKED` per tenant, and [`Inbox::prune`] one `DELETE` by age.
/// [`MemoryInbox`] is the in-process backend.
///
/// **Applied marks.** Storing a delivery and acting on it (observe, publish, the inbound
/// buffer, the ack mark) are two steps: a process can crash between them, after the delivery
/// was answered 2xx. So every entry is stored *unapplied*, and the
/// [`Ingest`](crate::Ingest) marks it applied ([`Inbox::mark_applied`]) once it acted on it.
/// An entry that stays unapplied is acted on again, at least once in all:
/// - by WAHA's retry: a duplicate of an unapplied entry is answered
///   [`Admission::Unapplied`] (nothing new stored), and the ingest applies the retry and marks
///   the earlier entry;
/// - by the sweep ([`Ingest::reapply_pending`](crate::Ingest::reapply_pending)):
///   [`Inbox::claim_unapplied`] hands out the entries left unapplied for longer than a grace
///   (oldest first), marking each claimed so another replica's sweep leaves it alone for one
///   more grace.
///
/// An event can therefore be applied twice (a crash after acting, before the mark; a retry
/// that arrives while the first delivery is still being applied): what acts on it is
/// idempotent or tolerates a repeat (observe records a signal, changes are published again,
/// the ack mark moves forward only).
///
/// **Keys** are scoped per tenant: one tenant's event or message ids never suppress another
/// tenant's events. [`Ingest`](crate::Ingest) derives them from the signed body:
/// - `event:<id>`: WAHA's event id, the same for every retry of one event;
/// - `message:<id>` for `message` and `message.any`: WhatsApp's message id, which catches
///   NOWEB's two deliveries of one message under two event ids (and the same message arriving
///   as both `message` and `message.any`);
/// - `ack:<message id>:<ack level>` for `message.ack`.
///
/// A delivery is a duplicate when **any** of its keys was seen: a retry carries the same
/// bytes, so all its keys were; another delivery sharing a message key is the same message.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Inbox: Send + Sync {
    /// Stores `entry` unless it is a duplicate. When **any** of its keys was already seen for
    /// its tenant, nothing is stored and the answer is [`Admission::Unapplied`] naming the
    /// lowest-numbered entry that brought one of those keys and is not marked applied, or
    /// [`Admission::Duplicate`] when all of them are. Otherwise the entry and all its keys are
    /// stored atomically, unapplied, and the answer is [`Admission::New`] with its number. An
    /// entry without keys is always new.
    ///
    /// # Errors
    /// [`InboxError`]; nothing was stored.
    async fn admit(&self, entry: InboxEntry) -> Result<Admission, InboxError>;

    /// Marks `entry` of `tenant` applied: the delivery it stored was acted on. From then on a
    /// duplicate of it is [`Admission::Duplicate`] (unless another entry it matches is still
    /// unapplied) and [`Inbox::claim_unapplied`] no longer hands it out. Idempotent; an entry
    /// that does not exist (pruned, never stored, or another tenant's) is left alone and the
    /// answer is `Ok`.
    ///
    /// # Errors
    /// [`InboxError`]; nothing changed.
    async fn mark_applied(&self, tenant: &TenantId, entry: EntryId) -> Result<(), InboxError>;

    /// Records `ack` as the highest ack of `message_id` of `tenant` if it moves the message
    /// forward ([`MessageAck::supersedes`]; a message's first ack always does). Answers
    /// whether it did: `false` is a regression or a repeat, and nothing changed.
    ///
    /// # Errors
    /// [`InboxError`]; nothing changed.
    async fn record_ack(
        &self,
        tenant: &TenantId,
        message_id: &str,
        ack: MessageAck,
    ) -> Result<bool, InboxError>;

    /// Removes the entries received before `older_than`, with their keys, and the ack marks
    /// of messages no remaining entry mentions. Answers how many entries went.
    ///
    /// # Errors
    /// [`InboxError`]; nothing was removed.
    async fn prune(&self, older_than: SystemTime) -> Result<u64, InboxError>;

    /// Claims up to `limit` entries, of every tenant, that are not marked applied, were
    /// received before `received_before` and were not claimed at or after `received_before`;
    /// each claimed entry is stamped `claimed_at = now`. Answers them oldest first (by
    /// `received_at`, then by number), with their numbers.
    ///
    /// The stamp keeps an entry from being handed out again (to this caller or another
    /// replica's sweep) until a later call's `received_before` passes `now`: the sweep passes
    /// `received_before = now - grace`, so a claimed entry whose claimer died is claimed again
    /// one grace later. Entries another call is claiming at the same moment are skipped, never
    /// waited for. Times are the caller's (a backend never compares them with its own clock).
    ///
    /// # Errors
    /// [`InboxError`]; nothing was claimed. (A backend that claims tenant by tenant and fails
    /// after it claimed some entries answers those, and logs the failure.)
    async fn claim_unapplied(
        &self,
        received_before: SystemTime,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<(EntryId, InboxEntry)>, InboxError>;
}

#[derive(Default)]
struct State {
    /// The next entry number.
    next: u64,
    /// Entries by number (admission order).
    entries: BTreeMap<u64, Stored>,
    /// Per tenant: key → the number of the entry that brought it.
    keys: HashMap<TenantId, HashMap<String, u64>>,
    /// Per tenant: message id → its highest ack.
    acks: HashMap<TenantId, HashMap<String, MessageAck>>,
}

/// One entry of a [`MemoryInbox`] with its marks.
struct Stored {
    entry: InboxEntry,
    /// Marked applied ([`Inbox::mark_applied`]).
    applied: bool,
    /// When [`Inbox::claim_unapplied`] last handed it out (the caller's time).
    claimed_at: Option<SystemTime>,
}

/// The in-process [`Inbox`]: a `Mutex` over maps. Durable only as long as the process lives:
/// for one process and for tests; replicas share a database-backed inbox.
///
/// **Bound.** It retains at most [`capacity`](MemoryInbox::capacity) entries
/// ([`MemoryInbox::DEFAULT_CAPACITY`] by default; bodies are at most the ingest's
/// `max_body_bytes` each). When full, [`Inbox::admit`] answers [`InboxError::Full`] (the
/// ingest answers "retry later"; nothing is evicted, since an evicted key would let a retry
/// in again) until [`Inbox::prune`] removes entries older than the retention
/// ([`Ingest::prune_inbox`](crate::Ingest::prune_inbox)). Ack marks live as long as an entry
/// carrying one of the message's `ack:` keys.
///
/// **Applied marks** are kept with each entry (numbered from 0 in admission order);
/// [`Inbox::claim_unapplied`] scans every entry it holds, which is fine at its bound.
/// Everything goes with the process: after a restart there is nothing left to re-apply.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use session_supervisor::{Admission, Inbox, InboxEntry, MemoryInbox};
/// use tenant_isolation::{ChipId, TenantId};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let inbox = MemoryInbox::new();
/// let entry = InboxEntry {
///     tenant: TenantId::new("acme")?,
///     chip: ChipId::new("sales-1")?,
///     keys: vec!["event:evt_1".into(), "message:m1".into()],
///     received_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
///     body: b"{}".to_vec(),
/// };
/// let Admission::New { entry: stored } = inbox.admit(entry.clone()).await? else {
///     panic!("a first delivery is new");
/// };
/// let mut again = entry.clone();
/// again.keys = vec!["event:evt_2".into(), "message:m1".into()];
/// assert_eq!(
///     inbox.admit(again.clone()).await?,
///     Admission::Unapplied { entry: stored, received_at: entry.received_at },
///     "the same message, not applied yet: act on it again (once the grace has passed)"
/// );
/// inbox.mark_applied(&entry.tenant, stored).await?;
/// assert_eq!(inbox.admit(again).await?, Admission::Duplicate, "applied: nothing to do");
/// assert_eq!(inbox.len(), 1);
/// # Ok(()) }
/// ```
pub struct MemoryInbox {
    capacity: usize,
    state: Mutex<State>,
}

impl MemoryInbox {
    /// How many entries a [`MemoryInbox::new`] retains at most.
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// An empty inbox retaining at most [`MemoryInbox::DEFAULT_CAPACITY`] entries.
    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// An empty inbox retaining at most `capacity` entries (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        MemoryInbox {
            capacity: capacity.max(1),
            state: Mutex::new(State::default()),
        }
    }

    /// How many entries it retains at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    /// Every entry it holds, in admission order (for tests and inspection; bodies included).
    pub fn entries(&self) -> Vec<InboxEntry> {
        self.lock()
            .entries
            .values()
            .map(|stored| stored.entry.clone())
            .collect()
    }

    /// Whether `entry` is marked applied; `None` when it holds no such entry.
    pub fn is_applied(&self, entry: EntryId) -> Option<bool> {
        self.lock()
            .entries
            .get(&entry.get())
            .map(|stored| stored.applied)
    }

    /// How many of its entries are not marked applied.
    pub fn unapplied(&self) -> usize {
        self.lock()
            .entries
            .values()
            .filter(|stored| !stored.applied)
            .count()
    }

    /// The highest ack recorded for a message of `tenant`, if any.
    pub fn ack_of(&self, tenant: &TenantId, message_id: &str) -> Option<MessageAck> {
        self.lock()
            .acks
            .get(tenant)
            .and_then(|acks| acks.get(message_id))
            .copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryInbox {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryInbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryInbox")
            .field("capacity", &self.capacity)
            .field("entries", &self.len())
            .finish()
    }
}

#[async_trait]
impl Inbox for MemoryInbox {
    async fn admit(&self, entry: InboxEntry) -> Result<Admission, InboxError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        if let Some(keys) = state.keys.get(&entry.tenant) {
            let mut seen = false;
            let mut unapplied: Option<(u64, SystemTime)> = None;
            for number in entry.keys.iter().filter_map(|key| keys.get(key)) {
                seen = true;
                if let Some(stored) = state.entries.get(number)
                    && !stored.applied
                    && unapplied.is_none_or(|(earlier, _)| *number < earlier)
                {
                    unapplied = Some((*number, stored.entry.received_at));
                }
            }
            if let Some((number, received_at)) = unapplied {
                return Ok(Admission::Unapplied {
                    entry: EntryId(number),
                    received_at,
                });
            }
            if seen {
                return Ok(Admission::Duplicate);
            }
        }
        if state.entries.len() >= self.capacity {
            return Err(InboxError::Full {
                capacity: self.capacity,
            });
        }
        let number = state.next;
        state.next += 1;
        let keys = state.keys.entry(entry.tenant.clone()).or_default();
        for key in &entry.keys {
            keys.insert(key.clone(), number);
        }
        state.entries.insert(
            number,
            Stored {
                entry,
                applied: false,
                claimed_at: None,
            },
        );
        Ok(Admission::New {
            entry: EntryId(number),
        })
    }

    async fn mark_applied(&self, tenant: &TenantId, entry: EntryId) -> Result<(), InboxError> {
        let mut state = self.lock();
        if let Some(stored) = state.entries.get_mut(&entry.get())
            && stored.entry.tenant == *tenant
        {
            stored.applied = true;
        }
        Ok(())
    }

    async fn record_ack(
        &self,
        tenant: &TenantId,
        message_id: &str,
        ack: MessageAck,
    ) -> Result<bool, InboxError> {
        let mut state = self.lock();
        let acks = state.acks.entry(tenant.clone()).or_default();
        Ok(match acks.entry(message_id.to_owned()) {
            Entry::Occupied(mut highest) => {
                if MessageAck::supersedes(*highest.get(), ack) {
                    highest.insert(ack);
                    true
                } else {
                    false
                }
            }
            Entry::Vacant(first) => {
                first.insert(ack);
                true
            }
        })
    }

    async fn prune(&self, older_than: SystemTime) -> Result<u64, InboxError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let old: Vec<u64> = state
            .entries
            .iter()
            .filter(|(_, stored)| stored.entry.received_at < older_than)
            .map(|(number, _)| *number)
            .collect();
        for number in &old {
            let Some(Stored { entry, .. }) = state.entries.remove(number) else {
                continue;
            };
            if let Some(keys) = state.keys.get_mut(&entry.tenant) {
                for key in &entry.keys {
                    if keys.get(key) == Some(number) {
                        keys.remove(key);
                    }
                }
                if keys.is_empty() {
                    state.keys.remove(&entry.tenant);
                }
            }
        }
        // Ack marks of messages no remaining entry mentions go too.
        let mentioned: HashSet<(&TenantId, &str)> = state
            .keys
            .iter()
            .flat_map(|(tenant, keys)| {
                keys.keys()
                    .filter_map(|key| ack_key_message_id(key))
                    .map(move |message_id| (tenant, message_id))
            })
            .collect();
        let mut acks = std::mem::take(&mut state.acks);
        for (tenant, marks) in &mut acks {
            marks.retain(|message_id, _| mentioned.contains(&(tenant, message_id.as_str())));
        }
        acks.retain(|_, marks| !marks.is_empty());
        state.acks = acks;
        Ok(u64::try_from(old.len()).unwrap_or(u64::MAX))
    }

    async fn claim_unapplied(
        &self,
        received_before: SystemTime,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<(EntryId, InboxEntry)>, InboxError> {
        let mut state = self.lock();
        let mut due: Vec<(SystemTime, u64)> = state
            .entries
            .iter()
            .filter(|(_, stored)| {
                !stored.applied
                    && stored.entry.received_at < received_before
                    && stored
                        .claimed_at
                        .is_none_or(|claimed| claimed < received_before)
            })
            .map(|(number, stored)| (stored.entry.received_at, *number))
            .collect();
        due.sort_unstable();
        due.truncate(limit);
        let mut claimed = Vec::with_capacity(due.len());
        for (_, number) in due {
            if let Some(stored) = state.entries.get_mut(&number) {
                stored.claimed_at = Some(now);
                claimed.push((EntryId(number), stored.entry.clone()));
            }
        }
        Ok(claimed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn entry(tenant: &str, keys: &[&str], secs: u64) -> InboxEntry {
        InboxEntry {
            tenant: TenantId::new(tenant).unwrap(),
            chip: ChipId::new("c1").unwrap(),
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            received_at: at(secs),
            body: b"secret body".to_vec(),
        }
    }

    #[tokio::test]
    async fn any_seen_key_is_a_duplicate_and_keys_are_per_tenant() {
        let inbox = MemoryInbox::new();
        let acme = TenantId::new("acme").unwrap();
        let new = |number| Admission::New {
            entry: EntryId::new(number),
        };
        assert_eq!(
            inbox
                .admit(entry("acme", &["event:e1", "message:m1"], 0))
                .await
                .unwrap(),
            new(0)
        );
        assert_eq!(
            inbox
                .admit(entry("acme", &["event:e1", "message:m1"], 1))
                .await
                .unwrap(),
            Admission::Unapplied {
                entry: EntryId::new(0),
                received_at: at(0),
            },
            "not applied yet"
        );
        assert_eq!(inbox.is_applied(EntryId::new(0)), Some(false));
        inbox.mark_applied(&acme, EntryId::new(0)).await.unwrap();
        assert_eq!(inbox.is_applied(EntryId::new(0)), Some(true));
        assert_eq!(
            inbox
                .admit(entry("acme", &["event:e1", "message:m1"], 1))
                .await
                .unwrap(),
            Admission::Duplicate
        );
        assert_eq!(
            inbox
                .admit(entry("acme", &["event:e2", "message:m1"], 1))
                .await
                .unwrap(),
            Admission::Duplicate
        );
        assert_eq!(
            inbox
                .admit(entry("beta", &["event:e1", "message:m1"], 1))
                .await
                .unwrap(),
            new(1),
            "another tenant's ids are its own"
        );
        assert_eq!(inbox.admit(entry("acme", &[], 2)).await.unwrap(), new(2));
        assert_eq!(inbox.admit(entry("acme", &[], 2)).await.unwrap(), new(3));
        assert_eq!(inbox.len(), 4);
        assert_eq!(inbox.unapplied(), 3);
        assert_eq!(inbox.is_applied(EntryId::new(9)), None);
        assert!(!format!("{:?}", inbox.entries()).contains("secret body"));
    }

    #[tokio::test]
    async fn claims_take_the_oldest_unapplied_once_per_grace() {
        let inbox = MemoryInbox::new();
        let acme = TenantId::new("acme").unwrap();
        for (keys, secs) in [(["event:a"], 5), (["event:b"], 3), (["event:c"], 20)] {
            inbox.admit(entry("acme", &keys, secs)).await.unwrap();
        }
        let claimed = inbox.claim_unapplied(at(10), at(100), 10).await.unwrap();
        let numbers: Vec<u64> = claimed.iter().map(|(id, _)| id.get()).collect();
        assert_eq!(numbers, [1, 0], "received before the cut-off, oldest first");
        assert!(
            inbox
                .claim_unapplied(at(10), at(100), 10)
                .await
                .unwrap()
                .is_empty(),
            "claimed after the cut-off"
        );
        inbox.mark_applied(&acme, EntryId::new(1)).await.unwrap();
        let again = inbox.claim_unapplied(at(200), at(300), 1).await.unwrap();
        assert_eq!(again.len(), 1, "the limit");
        assert_eq!(again[0].0, EntryId::new(0), "claimed again one grace later");
    }

    #[tokio::test]
    async fn full_refuses_and_prune_frees_keys_and_acks() {
        let inbox = MemoryInbox::with_capacity(2);
        let acme = TenantId::new("acme").unwrap();
        inbox
            .admit(entry("acme", &["event:e1", "ack:m:1:3"], 0))
            .await
            .unwrap();
        inbox.admit(entry("acme", &["event:e2"], 10)).await.unwrap();
        let full = inbox
            .admit(entry("acme", &["event:e3"], 20))
            .await
            .unwrap_err();
        assert_eq!(full.kind(), "full");
        assert!(full.is_retryable());
        assert!(
            inbox
                .record_ack(&acme, "m:1", MessageAck::Read)
                .await
                .unwrap()
        );
        assert!(
            !inbox
                .record_ack(&acme, "m:1", MessageAck::Device)
                .await
                .unwrap()
        );
        assert!(
            !inbox
                .record_ack(&acme, "m:1", MessageAck::Read)
                .await
                .unwrap()
        );

        assert_eq!(inbox.prune(at(5)).await.unwrap(), 1);
        assert_eq!(
            inbox.ack_of(&acme, "m:1"),
            None,
            "no entry mentions it any more"
        );
        assert!(
            matches!(
                inbox.admit(entry("acme", &["event:e1"], 30)).await.unwrap(),
                Admission::New { .. }
            ),
            "a pruned key is forgotten"
        );
        assert_eq!(inbox.is_applied(EntryId::new(0)), None, "pruned");
        inbox
            .mark_applied(&acme, EntryId::new(0))
            .await
            .expect("marking a pruned entry is no error");
    }
}
