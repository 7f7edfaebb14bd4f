//! [`MemoryChipStore`]: one process, one mutex, lease expiry on the injected clock.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use fleet_vocab::{Clock, SystemClock};
use tenant_isolation::{ChipId, TenantId};

use super::{ChipStore, CreateOutcome, Fence, NewChip, OwnerId, StoreError, Trigger, VersionKind};
use crate::chip::{ChipKey, ChipRecord, Desired, ObservedPatch};
use crate::signal::{Signal, SignalBody};

/// The in-memory [`ChipStore`]: always compiled, for tests, examples and a single-process
/// embedding. Everything sits behind one `Mutex`; lease expiry follows the injected
/// [`Clock`]. Two supervisors in one process (a test) may share one store; it is not shared
/// across processes.
///
/// ```
/// use std::sync::Arc;
/// use session_supervisor::{ChipKey, ChipSpec, ChipStore, CreateOutcome, MemoryChipStore, NewChip};
/// use tenant_isolation::{ChipId, TenantId};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemoryChipStore::new();
/// let key = ChipKey::new(TenantId::new("acme")?, ChipId::new("sales-1")?);
/// let new = NewChip { key: key.clone(), spec: ChipSpec::qr(), chip_slot: true };
/// assert!(matches!(store.create(new.clone()).await?, CreateOutcome::Created(_)));
/// assert!(matches!(store.create(new).await?, CreateOutcome::Existing(_)));
/// assert_eq!(store.get(&key).await?.map(|chip| chip.observed_version), Some(1));
/// # Ok(()) }
/// ```
pub struct MemoryChipStore {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    records: BTreeMap<ChipKey, ChipRecord>,
    signals: HashMap<ChipKey, ChipSignals>,
    work: BTreeMap<ChipKey, WorkRow>,
    leases: BTreeMap<TenantId, Lease>,
    fences: HashMap<TenantId, u64>,
}

#[derive(Default)]
struct ChipSignals {
    last_seq: u64,
    kept: VecDeque<Signal>,
}

impl ChipSignals {
    /// Keeps `signal` (numbered already), at most `capacity` signals in all. A new
    /// [`SignalBody::Activity`] replaces the pending one (keeping the later of their times), so
    /// one chatty session holds at most one. When the signals are full, the oldest one that is
    /// not a disconnect makes room; a disconnect is dropped only for a newer disconnect or
    /// status, never for activity (an activity that finds only disconnects is not kept).
    fn keep(&mut self, mut signal: Signal, capacity: usize) {
        let is_activity = matches!(signal.body, SignalBody::Activity);
        if is_activity
            && let Some(index) = self
                .kept
                .iter()
                .position(|kept| matches!(kept.body, SignalBody::Activity))
            && let Some(previous) = self.kept.remove(index)
        {
            signal.at = signal.at.max(previous.at);
        }
        if self.kept.len() >= capacity {
            let evictable = self
                .kept
                .iter()
                .position(|kept| !matches!(kept.body, SignalBody::Disconnect { .. }));
            match evictable {
                Some(index) => {
                    self.kept.remove(index);
                }
                None if is_activity => return,
                None => {
                    self.kept.pop_front();
                }
            }
        }
        self.kept.push_back(signal);
    }
}

struct WorkRow {
    /// `None`: taken, in flight until enqueued again.
    due: Option<SystemTime>,
}

struct Lease {
    owner: Option<OwnerId>,
    token: u64,
    expires_at: SystemTime,
}

impl Lease {
    fn unowned() -> Self {
        Lease {
            owner: None,
            token: 0,
            expires_at: UNIX_EPOCH,
        }
    }
}

/// `now + ttl`, saturating a century ahead.
fn expiry(now: SystemTime, ttl: Duration) -> SystemTime {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3_600);
    now.checked_add(ttl.min(CENTURY)).unwrap_or(now)
}

/// A page size as a length.
fn as_len(limit: u32) -> usize {
    usize::try_from(limit).unwrap_or(usize::MAX)
}

/// `record` as a read at `now` shows it: an expired pairing code is dropped (the stored one
/// goes with the next owner write).
fn scrubbed(mut record: ChipRecord, now: SystemTime) -> ChipRecord {
    record.observed.login = record.observed.login.map(|offer| offer.scrubbed(now));
    record
}

impl State {
    /// The tenant's current fence must be `fence` (and exist: token 0 is never valid).
    fn check_fence(&self, key: &ChipKey, fence: &Fence) -> Result<(), StoreError> {
        let current = self.fences.get(&key.tenant).copied().unwrap_or(0);
        if fence.tenant != key.tenant || current == 0 || fence.token != current {
            return Err(StoreError::StaleOwner {
                tenant: key.tenant.clone(),
                held: fence.token,
                current,
            });
        }
        Ok(())
    }

    /// The record, if its `which` version is `expected`.
    fn versioned(
        &mut self,
        key: &ChipKey,
        expected: u64,
        which: VersionKind,
    ) -> Result<&mut ChipRecord, StoreError> {
        let record = self
            .records
            .get_mut(key)
            .ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
        let actual = match which {
            VersionKind::Desired => record.desired_version,
            VersionKind::Observed => record.observed_version,
        };
        if actual != expected {
            return Err(StoreError::VersionConflict {
                key: key.clone(),
                which,
                expected,
                actual,
            });
        }
        Ok(record)
    }

    /// Queues `key` at `due` (the earliest due time wins); a chip with no record is ignored, so
    /// a late trigger never brings work (and an owner) back for a removed or purged chip.
    /// Returns whether the chip was queued.
    fn enqueue(&mut self, key: &ChipKey, due: SystemTime) -> bool {
        if !self.records.contains_key(key) {
            return false;
        }
        self.leases
            .entry(key.tenant.clone())
            .or_insert_with(Lease::unowned);
        let row = self
            .work
            .entry(key.clone())
            .or_insert(WorkRow { due: None });
        if row.due.is_none_or(|current| due < current) {
            row.due = Some(due);
        }
        true
    }
}

impl MemoryChipStore {
    /// Signals kept per chip (see [`ChipStore`] for which make room).
    pub const SIGNALS_KEPT: usize = 64;

    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty store whose lease expiry and timestamps follow `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemoryChipStore {
            clock,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryChipStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryChipStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("MemoryChipStore")
            .field("clock", &self.clock)
            .field("chips", &state.records.len())
            .field("tenants", &state.leases.len())
            .finish()
    }
}

#[async_trait]
impl ChipStore for MemoryChipStore {
    async fn create(&self, new: NewChip) -> Result<CreateOutcome, StoreError> {
        let now = self.clock.now();
        let mut guard = self.state();
        let state = &mut *guard;
        if let Some(existing) = state.records.get(&new.key) {
            return Ok(CreateOutcome::Existing(scrubbed(existing.clone(), now)));
        }
        let record = ChipRecord::new(new.key.clone(), new.spec, new.chip_slot, now);
        state.records.insert(new.key.clone(), record.clone());
        state.enqueue(&new.key, now);
        tracing::trace!(chip = %new.key, trigger = ?Trigger::Created, "queued");
        Ok(CreateOutcome::Created(record))
    }

    async fn get(&self, key: &ChipKey) -> Result<Option<ChipRecord>, StoreError> {
        let now = self.clock.now();
        Ok(self
            .state()
            .records
            .get(key)
            .map(|record| scrubbed(record.clone(), now)))
    }

    async fn list<'a>(
        &self,
        tenant: &TenantId,
        after: Option<&'a ChipId>,
        limit: u32,
    ) -> Result<Vec<ChipRecord>, StoreError> {
        let now = self.clock.now();
        let state = self.state();
        // Records are ordered by (tenant, chip): a range over the tenant's keys, not a scan of
        // every tenant's records. "0" is the smallest valid chip id.
        let start = match after {
            Some(after) => Bound::Excluded(ChipKey::new(tenant.clone(), after.clone())),
            None => Bound::Included(ChipKey::new(
                tenant.clone(),
                ChipId::new("0").expect("\"0\" is a valid chip id"),
            )),
        };
        Ok(state
            .records
            .range((start, Bound::Unbounded))
            .map(|(_, record)| record)
            .take_while(|record| &record.key.tenant == tenant)
            .take(as_len(limit))
            .map(|record| scrubbed(record.clone(), now))
            .collect())
    }

    async fn update_desired(
        &self,
        key: &ChipKey,
        expected: u64,
        desired: Desired,
    ) -> Result<ChipRecord, StoreError> {
        let now = self.clock.now();
        let mut state = self.state();
        let record = state.versioned(key, expected, VersionKind::Desired)?;
        record.commit_desired(desired, now);
        Ok(scrubbed(record.clone(), now))
    }

    async fn write_observed(
        &self,
        key: &ChipKey,
        expected: u64,
        patch: ObservedPatch,
        fence: &Fence,
    ) -> Result<ChipRecord, StoreError> {
        let now = self.clock.now();
        let mut guard = self.state();
        let state = &mut *guard;
        state.check_fence(key, fence)?;
        let record = state.versioned(key, expected, VersionKind::Observed)?;
        record.commit_observed(patch, now);
        let written = record.clone();
        let applied = written.observed.signals_applied;
        if let Some(signals) = state.signals.get_mut(key) {
            signals.kept.retain(|signal| signal.seq > applied);
        }
        Ok(written)
    }

    async fn remove(&self, key: &ChipKey, expected: u64, fence: &Fence) -> Result<(), StoreError> {
        let mut guard = self.state();
        let state = &mut *guard;
        state.check_fence(key, fence)?;
        state.versioned(key, expected, VersionKind::Observed)?;
        state.records.remove(key);
        state.signals.remove(key);
        state.work.remove(key);
        Ok(())
    }

    async fn append_signal(
        &self,
        key: &ChipKey,
        at: SystemTime,
        body: SignalBody,
    ) -> Result<u64, StoreError> {
        let mut guard = self.state();
        let state = &mut *guard;
        if !state.records.contains_key(key) {
            return Err(StoreError::NotFound { key: key.clone() });
        }
        let signals = state.signals.entry(key.clone()).or_default();
        signals.last_seq += 1;
        let seq = signals.last_seq;
        signals.keep(Signal { seq, at, body }, Self::SIGNALS_KEPT);
        Ok(seq)
    }

    async fn signals_after(&self, key: &ChipKey, after: u64) -> Result<Vec<Signal>, StoreError> {
        let state = self.state();
        Ok(state
            .signals
            .get(key)
            .map(|signals| {
                signals
                    .kept
                    .iter()
                    .filter(|signal| signal.seq > after)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn enqueue(
        &self,
        key: &ChipKey,
        due: SystemTime,
        trigger: Trigger,
    ) -> Result<(), StoreError> {
        if self.state().enqueue(key, due) {
            tracing::trace!(chip = %key, ?trigger, "queued");
        } else {
            tracing::trace!(chip = %key, ?trigger, "not queued: no such chip");
        }
        Ok(())
    }

    async fn take_due(
        &self,
        owned: &[Fence],
        now: SystemTime,
        limit: u32,
    ) -> Result<Vec<ChipKey>, StoreError> {
        let mut guard = self.state();
        let state = &mut *guard;
        let tenants: HashSet<&TenantId> = owned
            .iter()
            .filter(|fence| state.fences.get(&fence.tenant) == Some(&fence.token))
            .map(|fence| &fence.tenant)
            .collect();
        let mut due: Vec<(SystemTime, ChipKey)> = state
            .work
            .iter()
            .filter_map(|(key, row)| match row.due {
                Some(at) if at <= now && tenants.contains(&key.tenant) => Some((at, key.clone())),
                _ => None,
            })
            .collect();
        due.sort();
        due.truncate(as_len(limit));
        for (_, key) in &due {
            if let Some(row) = state.work.get_mut(key) {
                row.due = None;
            }
        }
        Ok(due.into_iter().map(|(_, key)| key).collect())
    }

    async fn acquire(
        &self,
        owner: &OwnerId,
        limit: u32,
        ttl: Duration,
    ) -> Result<Vec<Fence>, StoreError> {
        let now = self.clock.now();
        let mut guard = self.state();
        let state = &mut *guard;
        let with_work: BTreeSet<TenantId> =
            state.work.keys().map(|key| key.tenant.clone()).collect();
        let mut acquired = Vec::new();
        for tenant in with_work {
            if acquired.len() >= as_len(limit) {
                break;
            }
            let lease = state
                .leases
                .entry(tenant.clone())
                .or_insert_with(Lease::unowned);
            if lease.owner.is_some() && lease.expires_at > now {
                continue;
            }
            lease.token += 1;
            lease.owner = Some(owner.clone());
            lease.expires_at = expiry(now, ttl);
            let token = lease.token;
            state.fences.insert(tenant.clone(), token);
            // The new owner re-reads every record: all of the tenant's chips are due now.
            for (key, row) in state.work.iter_mut() {
                if key.tenant == tenant {
                    row.due = Some(row.due.map_or(now, |due| due.min(now)));
                }
            }
            acquired.push(Fence { tenant, token });
        }
        Ok(acquired)
    }

    async fn renew(
        &self,
        owner: &OwnerId,
        held: &[Fence],
        ttl: Duration,
    ) -> Result<Vec<Fence>, StoreError> {
        let now = self.clock.now();
        let mut state = self.state();
        let mut kept = Vec::new();
        for fence in held {
            if let Some(lease) = state.leases.get_mut(&fence.tenant)
                && lease.owner.as_ref() == Some(owner)
                && lease.token == fence.token
            {
                lease.expires_at = expiry(now, ttl);
                kept.push(fence.clone());
            }
        }
        Ok(kept)
    }

    async fn release(&self, owner: &OwnerId, held: &[Fence]) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut state = self.state();
        for fence in held {
            if let Some(lease) = state.leases.get_mut(&fence.tenant)
                && lease.owner.as_ref() == Some(owner)
                && lease.token == fence.token
            {
                lease.owner = None;
                lease.expires_at = now;
            }
        }
        Ok(())
    }

    async fn purge_tenant(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let mut guard = self.state();
        let state = &mut *guard;
        let before = state.records.len();
        state.records.retain(|key, _| &key.tenant != tenant);
        let removed = before - state.records.len();
        state.signals.retain(|key, _| &key.tenant != tenant);
        state.work.retain(|key, _| &key.tenant != tenant);
        // No fence covers the tenant any more: its old owner's writes and takes are refused,
        // also once chips are created again under the same id. The lease keeps its token.
        state.fences.remove(tenant);
        if let Some(lease) = state.leases.get_mut(tenant) {
            lease.owner = None;
            lease.expires_at = now;
        }
        Ok(u64::try_from(removed).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use fleet_vocab::ManualClock;

    use super::*;
    use crate::chip::ChipSpec;

    fn start() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn key(tenant: &str, chip: &str) -> ChipKey {
        ChipKey::new(TenantId::new(tenant).unwrap(), ChipId::new(chip).unwrap())
    }

    async fn created(store: &MemoryChipStore, key: &ChipKey) -> ChipRecord {
        let new = NewChip {
            key: key.clone(),
            spec: ChipSpec::qr(),
            chip_slot: true,
        };
        store.create(new).await.unwrap().record().clone()
    }

    #[tokio::test]
    async fn leases_expire_on_the_injected_clock() {
        let clock = ManualClock::new(start());
        let store = MemoryChipStore::with_clock(Arc::new(clock.clone()));
        let chip = key("acme", "a");
        created(&store, &chip).await;
        let first = OwnerId::new("first");
        let second = OwnerId::new("second");
        let ttl = Duration::from_secs(30);

        let fences = store.acquire(&first, 10, ttl).await.unwrap();
        assert_eq!(fences.len(), 1);
        clock.advance(Duration::from_secs(29));
        assert!(
            store.acquire(&second, 10, ttl).await.unwrap().is_empty(),
            "still live"
        );
        assert_eq!(store.renew(&first, &fences, ttl).await.unwrap(), fences);
        clock.advance(Duration::from_secs(29));
        assert!(
            store.acquire(&second, 10, ttl).await.unwrap().is_empty(),
            "renewed"
        );
        clock.advance(Duration::from_secs(2));
        let taken = store.acquire(&second, 10, ttl).await.unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].token, fences[0].token + 1);
        assert!(store.renew(&first, &fences, ttl).await.unwrap().is_empty());
        // The new owner finds the chip due at once, the old one nothing.
        assert_eq!(
            store.take_due(&taken, clock.now(), 10).await.unwrap(),
            vec![chip.clone()]
        );
        assert!(
            store
                .take_due(&fences, clock.now(), 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn timestamps_follow_the_clock() {
        let clock = ManualClock::new(start());
        let store = MemoryChipStore::with_clock(Arc::new(clock.clone()));
        let chip = key("acme", "a");
        let record = created(&store, &chip).await;
        assert_eq!((record.created_at, record.updated_at), (start(), start()));
        clock.advance(Duration::from_secs(5));
        let updated = store
            .update_desired(&chip, 1, record.desired.clone())
            .await
            .unwrap();
        assert_eq!(updated.updated_at, start() + Duration::from_secs(5));
        assert_eq!(updated.created_at, start());
        let err = store
            .update_desired(&chip, 1, record.desired)
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            StoreError::VersionConflict {
                which: VersionKind::Desired,
                expected: 1,
                actual: 2,
                ..
            }
        ));
        assert_eq!(err.kind(), "version_conflict");
        assert!(!err.is_retryable());
        assert!(format!("{store:?}").contains("chips: 1"));
    }
}
