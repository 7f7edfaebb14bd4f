//! The durable webhook inbox (issue 13): what [`Ingest`](crate::Ingest) stores before it
//! answers 2xx, and the keys it de-duplicates by. See [`Inbox`].

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

/// What [`Inbox::admit`] did with an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// None of its keys was seen: the entry and all its keys are stored.
    New,
    /// At least one of its keys was already seen (a retry of the same event, or the same
    /// message under another event id): nothing was stored.
    Duplicate,
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

/// The durable webhook inbox: de-duplication keys, stored deliveries, and each message's
/// highest ack. Any replica may write it.
///
/// The seam is shaped so that a PostgreSQL backend implements each method as one
/// transaction: [`Inbox::admit`] checks the keys and stores the entry with all its keys
/// atomically (the keys under a unique index, then the entry, rolled back as a whole when a
/// key exists), [`Inbox::record_ack`] is one conditional upsert of a message's highest ack,
/// and [`Inbox::prune`] one `DELETE` by age. [`MemoryInbox`] is the in-process backend.
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
    /// Stores `entry` unless it is a duplicate: [`Admission::Duplicate`] when **any** of its
    /// keys was already seen for its tenant (nothing is stored then); otherwise the entry and
    /// all its keys are stored atomically and the answer is [`Admission::New`]. An entry
    /// without keys is always new.
    ///
    /// # Errors
    /// [`InboxError`]; nothing was stored.
    async fn admit(&self, entry: InboxEntry) -> Result<Admission, InboxError>;

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
}

#[derive(Default)]
struct State {
    /// The next entry number.
    next: u64,
    /// Entries by number (admission order).
    entries: BTreeMap<u64, InboxEntry>,
    /// Per tenant: key → the number of the entry that brought it.
    keys: HashMap<TenantId, HashMap<String, u64>>,
    /// Per tenant: message id → its highest ack.
    acks: HashMap<TenantId, HashMap<String, MessageAck>>,
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
/// assert_eq!(inbox.admit(entry.clone()).await?, Admission::New);
/// let mut again = entry.clone();
/// again.keys = vec!["event:evt_2".into(), "message:m1".into()];
/// assert_eq!(inbox.admit(again).await?, Admission::Duplicate, "the same message");
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
        self.lock().entries.values().cloned().collect()
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
        let mut state = self.lock();
        let seen = state
            .keys
            .get(&entry.tenant)
            .is_some_and(|keys| entry.keys.iter().any(|key| keys.contains_key(key)));
        if seen {
            return Ok(Admission::Duplicate);
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
        state.entries.insert(number, entry);
        Ok(Admission::New)
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
            .filter(|(_, entry)| entry.received_at < older_than)
            .map(|(number, _)| *number)
            .collect();
        for number in &old {
            let Some(entry) = state.entries.remove(number) else {
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
        assert_eq!(
            inbox
                .admit(entry("acme", &["event:e1", "message:m1"], 0))
                .await
                .unwrap(),
            Admission::New
        );
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
            Admission::New,
            "another tenant's ids are its own"
        );
        assert_eq!(
            inbox.admit(entry("acme", &[], 2)).await.unwrap(),
            Admission::New
        );
        assert_eq!(
            inbox.admit(entry("acme", &[], 2)).await.unwrap(),
            Admission::New
        );
        assert_eq!(inbox.len(), 4);
        assert!(!format!("{:?}", inbox.entries()).contains("secret body"));
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
        assert_eq!(
            inbox.admit(entry("acme", &["event:e1"], 30)).await.unwrap(),
            Admission::New,
            "a pruned key is forgotten"
        );
    }
}
