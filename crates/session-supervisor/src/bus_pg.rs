//! [`PgEventBus`]: the [`EventBus`] in PostgreSQL for several replicas (feature `postgres`,
//! issue 13): events stored per tenant under row-level security, numbered in the transaction
//! that stores them, and LISTEN/NOTIFY to wake every replica's subscribers.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tenant_isolation::pg::reexports::deadpool_postgres::Pool;
use tenant_isolation::pg::reexports::tokio_postgres::tls::NoTlsStream;
use tenant_isolation::pg::reexports::tokio_postgres::{
    AsyncMessage, Client, Config, Connection, Error as PgError, NoTls, Row, Socket,
};
use tenant_isolation::pg::{TenantDb, TenantTx};
use tenant_isolation::{ChipId, TenantId};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use waha_client::Me;
use waha_client::webhook::MessageAck;

use crate::chip::PairingCodeSecret;
use crate::events::{
    Alert, BusError, ChangeFilter, ChangeItem, ChangeStream, ChipChange, ChipChangeKind, EventBus,
    InProcessEventBus, UpgradeStage,
};
use crate::pg_common::{self, UnsignedError, db_reason, tenants_to_prune};
use crate::phase::PhaseName;
use crate::policy::{ParkReason, Reason};
use crate::reconcile::StepKind;

/// The channel every replica listens on; a payload is `<tenant>:<seq>` (no content).
const CHANNEL: &str = "supervisor_events";
const LISTEN: &str = "LISTEN supervisor_events";

/// Numbers and stores a change (`$1` tenant, `$2` at, `$3` chip, `$4` stored change) and
/// notifies, in one statement. The upsert takes the tenant's counter row lock, held until the
/// transaction ends: one tenant's publishers are serialized, so numbers are gap-free and commit
/// in their order. The notification is delivered at commit.
const PUBLISH: &str = "WITH numbered AS ( \
         INSERT INTO supervisor_event_seqs AS s (tenant_id, last_seq) VALUES ($1::text, 1) \
         ON CONFLICT (tenant_id) DO UPDATE SET last_seq = s.last_seq + 1 \
         RETURNING last_seq \
     ), stored AS ( \
         INSERT INTO supervisor_events (tenant_id, seq, at, chip_id, change) \
         SELECT $1::text, last_seq, $2::timestamptz, $3::text, $4::jsonb FROM numbered \
         RETURNING seq \
     ) \
     SELECT stored.seq, pg_notify('supervisor_events', $1::text || ':' || stored.seq::text) \
       FROM stored";

/// The tenant's last number (no row: none given yet).
const LAST_SEQ: &str = "SELECT last_seq FROM supervisor_event_seqs WHERE tenant_id = $1";

/// Up to `$3` events after `$2`, oldest first (the live path's catch-up).
const EVENTS_AFTER: &str = "SELECT seq, chip_id, change FROM supervisor_events \
     WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";

/// The newest `$4` events in `($2, $3]`, oldest first (a resume's replay).
const NEWEST_BETWEEN: &str = "SELECT seq, chip_id, change FROM ( \
         SELECT seq, chip_id, change FROM supervisor_events \
          WHERE tenant_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq DESC LIMIT $4 \
     ) newest ORDER BY seq";

/// The tenants that may have events, read by the owner role: those with a counter row (all of
/// them where the owner is the admin role, the default) and those that ever had a chip (the
/// platform lease table, whatever the owner's policy).
const TENANTS_WITH_EVENTS: &str = "SELECT tenant_id FROM supervisor_event_seqs \
     UNION SELECT tenant_id FROM supervisor_owner_leases";

const PRUNE: &str = "DELETE FROM supervisor_events WHERE tenant_id = $1 AND at < $2";

/// Rewrites the tenant's (`$1`) stored pairing codes that expired by `$2` (microseconds since
/// the Unix epoch) to their redacted form ([`StoredKind::PairingCodeExpired`]: the expiry stays,
/// the code goes). `code_expires_us` (migration 6) is generated from the change, so a rewritten
/// row leaves the partial index the statement searches; rows are rewritten, never deleted, so
/// their numbers stay held and a resume sees no gap where a code was withheld.
const SCRUB: &str = "UPDATE supervisor_events \
        SET change = jsonb_set(change, '{kind}', jsonb_build_object( \
            'type', 'pairing_code_expired', 'expires_at', change -> 'kind' -> 'expires_at')) \
      WHERE tenant_id = $1::text AND code_expires_us <= $2::bigint";

/// Events the live path reads per query.
const CATCH_UP_BATCH: usize = 1_000;

/// How often the listener retries a catch-up whose read failed.
const CATCH_UP_RETRY: Duration = Duration::from_secs(1);

/// Notifications buffered between the LISTEN connection and the listener (the connection
/// waits, and the server queues, when it is full).
const NOTIFICATION_BUFFER: usize = 1_024;

/// The reconnect delays of the LISTEN connection: doubling from the first to the cap.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_CAP: Duration = Duration::from_secs(10);

/// Whole microseconds since the Unix epoch (rounded down) of `at`; `None` before the epoch,
/// `bigint`'s end beyond its range.
fn micros_since_epoch(at: SystemTime) -> Option<i64> {
    let since = at.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    Some(i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
}

/// The [`EventBus`] in PostgreSQL, shared by every replica on the same database
/// (`docs/session-supervisor.md`, 7.2; issue 13).
///
/// # Storage
/// Its tables come with [`PgChipStore::MIGRATIONS`](crate::PgChipStore::MIGRATIONS) (version
/// 2, `migrations/0002_events.sql`): `supervisor_event_seqs` (each tenant's last number) and
/// `supervisor_events` (the changes), both tenant tables under forced row-level security, with
/// a foreign key to the tenant directory (publish for tenants that exist). Version 6
/// (`migrations/0006_event_code_expiry.sql`) adds `supervisor_events.code_expires_us`, the
/// expiry of the pairing code a row holds, generated from the stored change, and its index.
///
/// [`publish`](EventBus::publish) runs one transaction scoped to the change's tenant
/// ([`TenantDb::scoped`], application role): it takes the tenant's next number (the counter's
/// row lock serializes the tenant's publishers until they commit, so numbers are gap-free and
/// commit in order: a subscriber that resumes after N never skips a change committed late),
/// stores the change and sends `pg_notify('supervisor_events', '<tenant>:<seq>')`. A `publish`
/// whose commit failed may still have committed (the connection broke): its change is then
/// delivered, and retrying it publishes it a second time under a new number.
///
/// # Delivery
/// Each bus keeps one task with a dedicated connection (`listen`, any role that may connect)
/// that runs `LISTEN supervisor_events`, and one `tokio::sync::broadcast` channel per tenant
/// with subscribers (capacity [`InProcessEventBus::DEFAULT_CAPACITY`] unless
/// [`with_capacity`](PgEventBus::with_capacity)). On a notification it reads that tenant's
/// changes after the last one it forwarded (in the tenant's scope, so nothing of another
/// tenant can reach the channel) and sends them in order. A change published on any replica
/// reaches the subscribers of every replica; a subscriber resumes from any replica with
/// [`subscribe_from`](EventBus::subscribe_from). When the LISTEN connection drops, the task
/// reconnects (bounded exponential delay, 100 ms doubling to 10 s) and then catches up every
/// tenant with subscribers from its last forwarded change: nothing is lost, only delayed. The
/// task starts with [`start`](PgEventBus::start), or with the first subscription.
///
/// A subscriber that falls behind its channel gets a [`ChangeItem::Gap`] and resumes with
/// `subscribe_from`, which replays at most [`PgEventBus::REPLAY_LIMIT`] changes (the newest;
/// older ones come as a gap first, like changes removed by retention).
///
/// # Retention
/// Changes stay until [`prune`](PgEventBus::prune) removes them; the host (the supervisor's
/// monitor) calls it with `now - DEFAULT_RETENTION` ([`PgEventBus::DEFAULT_RETENTION`],
/// 7 days) unless configured otherwise.
///
/// A stored [`ChipChangeKind::PairingCode`] holds a short-lived credential: it is kept only in
/// its tenant's rows, under row-level security, never logged, and only until it expires.
/// [`scrub_expired`](PgEventBus::scrub_expired) rewrites every stored code whose `expires_at`
/// passed to a redacted form (the expiry stays, the code goes; one indexed `UPDATE` per tenant
/// on `code_expires_us`, migration 6). A started bus runs it by itself every
/// [`PgEventBus::DEFAULT_SCRUB_INTERVAL`] (1 min; see
/// [`with_scrub_interval`](PgEventBus::with_scrub_interval)) on the system clock, so a code
/// stays in the table at most about that long past its expiry; any replica's scrub serves every
/// replica. Rows are rewritten, never deleted: a deleted row right after a resume cursor would
/// read as a [`ChangeItem::Gap`] (changes lost) when nothing was lost. A redacted row keeps its
/// number and is never delivered, and neither is a code past its expiry that was not scrubbed
/// yet: a subscriber resuming from before it gets the changes around it, no gap, and reads the
/// chip for the current offer (a jump in numbers, as a [`ChangeFilter`] makes too). The
/// redacted row goes with retention like any other.
///
/// A tenant's counter stays, so numbers are never reused while the tenant exists; when the
/// tenant is erased from the directory its rows cascade and a tenant created again under the
/// same id starts from 1: call [`forget_tenant`](PgEventBus::forget_tenant) on every replica
/// when purging a tenant.
///
/// A change that no longer decodes (a row edited by hand) is an error for a resume
/// ([`BusError::Unavailable`], the row is never quoted); the live path logs its tenant and
/// number and skips it.
///
/// ```no_run
/// use session_supervisor::{ChangeFilter, EventBus, PgEventBus};
/// use tenant_isolation::pg::{self, PoolOptions, TenantDb};
/// use tenant_isolation::TenantId;
///
/// # async fn wire() -> Result<(), Box<dyn std::error::Error>> {
/// let options = PoolOptions::default();
/// let owner_url = "postgres://chipfleet:secret@127.0.0.1:5432/chipfleet";
/// let app_url = "postgres://chipfleet_app:secret@127.0.0.1:5432/chipfleet";
/// let tenant_db = TenantDb::connect(app_url, &options).await?;
/// let owner = pg::build_pool(owner_url, &options)?;
/// let bus = PgEventBus::new(tenant_db, owner, app_url.parse()?);
/// bus.start().await?;
/// let _changes = bus.subscribe(&TenantId::new("acme")?, ChangeFilter::all()).await?;
/// # Ok(()) }
/// ```
pub struct PgEventBus {
    shared: Arc<Shared>,
    owner: Pool,
    listen: Config,
    /// How often the started bus scrubs expired pairing codes (`None`: never by itself).
    scrub_every: Option<Duration>,
    /// Subscriptions ask the listener to catch a tenant up (see [`Shared::register`]).
    kick: mpsc::UnboundedSender<TenantId>,
    listener: tokio::sync::Mutex<ListenerState>,
}

struct ListenerState {
    /// Taken by the listener task when it starts.
    kicks: Option<mpsc::UnboundedReceiver<TenantId>>,
    task: Option<JoinHandle<()>>,
    /// The periodic scrub of expired pairing codes, started with the listener.
    scrubber: Option<JoinHandle<()>>,
}

/// What the bus and its listener task share.
struct Shared {
    tenant_db: TenantDb,
    capacity: usize,
    channels: Mutex<HashMap<TenantId, Channel>>,
}

/// One tenant's local channel.
struct Channel {
    sender: broadcast::Sender<ChipChange>,
    /// The last number sent on the channel (everything up to it was sent, or committed before
    /// the channel's subscribers read the tenant's head); `None` until the first subscription
    /// read the head.
    forwarded: Option<u64>,
}

impl PgEventBus {
    /// How many changes a resume replays at most (the newest; older ones come as a gap).
    pub const REPLAY_LIMIT: u64 = 10_000;

    /// The retention the host should prune with unless it configures another.
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

    /// How often a started bus scrubs expired pairing codes from the stored history unless
    /// [`with_scrub_interval`](PgEventBus::with_scrub_interval) says otherwise: a code stays
    /// stored at most about this long past its expiry (codes live minutes; the scrub is one
    /// indexed statement per tenant).
    pub const DEFAULT_SCRUB_INTERVAL: Duration = Duration::from_secs(60);

    /// A bus over `tenant_db` (the application role: every read and write of events is scoped
    /// to one tenant), `owner`, a pool of the role that owns the tables (only
    /// [`prune`](PgEventBus::prune) and [`scrub_expired`](PgEventBus::scrub_expired) use it,
    /// to find the tenants), and `listen`, the connection settings of the LISTEN connection
    /// (any role that may connect, e.g. the application role's URL parsed). No I/O.
    pub fn new(tenant_db: TenantDb, owner: Pool, listen: Config) -> Self {
        let (kick, kicks) = mpsc::unbounded_channel();
        PgEventBus {
            shared: Arc::new(Shared {
                tenant_db,
                capacity: InProcessEventBus::DEFAULT_CAPACITY,
                channels: Mutex::new(HashMap::new()),
            }),
            owner,
            listen,
            scrub_every: Some(Self::DEFAULT_SCRUB_INTERVAL),
            kick,
            listener: tokio::sync::Mutex::new(ListenerState {
                kicks: Some(kicks),
                task: None,
                scrubber: None,
            }),
        }
    }

    /// The same bus, scrubbing expired pairing codes every `every` once started
    /// ([`PgEventBus::DEFAULT_SCRUB_INTERVAL`] by default); `Duration::ZERO` turns the periodic
    /// scrub off (the host then calls [`scrub_expired`](PgEventBus::scrub_expired) itself).
    /// Call it before [`start`](PgEventBus::start) and the first subscription.
    #[must_use]
    pub fn with_scrub_interval(self, every: Duration) -> Self {
        PgEventBus {
            scrub_every: (!every.is_zero()).then_some(every),
            ..self
        }
    }

    /// The same bus whose tenant channels hold `capacity` changes (at least 1) before a slow
    /// subscriber lags. Call it before the first subscription.
    #[must_use]
    pub fn with_capacity(self, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let shared = match Arc::try_unwrap(self.shared) {
            Ok(shared) => Arc::new(Shared { capacity, ..shared }),
            // Not started yet, so nothing else holds it; if it were, the old capacity stays.
            Err(shared) => shared,
        };
        PgEventBus { shared, ..self }
    }

    /// Starts the listener task: opens the LISTEN connection (an error if that fails; the
    /// next call or subscription tries again), then keeps it, reconnecting by itself. Does
    /// nothing once started. Subscriptions call it.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the LISTEN connection cannot be opened.
    pub async fn start(&self) -> Result<(), BusError> {
        let mut state = self.listener.lock().await;
        if state.task.is_some() {
            return Ok(());
        }
        let Some(kicks) = state.kicks.take() else {
            return Ok(());
        };
        let session = match Session::open(&self.listen).await {
            Ok(session) => session,
            Err(err) => {
                state.kicks = Some(kicks);
                return Err(BusError::Unavailable {
                    reason: format!("event bus LISTEN connection: {err}"),
                });
            }
        };
        let listener = Listener {
            shared: self.shared.clone(),
            config: self.listen.clone(),
            kicks,
            retry: HashSet::new(),
        };
        state.task = Some(tokio::spawn(listener.run(session)));
        if let Some(every) = self.scrub_every {
            state.scrubber = Some(tokio::spawn(scrub_periodically(
                self.shared.clone(),
                self.owner.clone(),
                every,
            )));
        }
        tracing::debug!("event bus listener started");
        Ok(())
    }

    /// Rewrites every stored pairing code that expired by `now` (`expires_at <= now`, to the
    /// microsecond, never before) to a redacted form without the code, tenant by tenant (the
    /// tenants read with the owner pool, each in a transaction of its own); answers how many
    /// rows it rewrote. The rows keep their numbers and are never delivered again, so a
    /// subscriber resuming from before one gets no gap for it (see the type's "Retention").
    /// A started bus calls it every [`PgEventBus::DEFAULT_SCRUB_INTERVAL`] with the system
    /// clock; calling it again changes nothing.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the database fails (the tenants done so far stay
    /// scrubbed).
    pub async fn scrub_expired(&self, now: SystemTime) -> Result<u64, BusError> {
        scrub(&self.shared.tenant_db, &self.owner, now).await
    }

    /// Removes the events older than `older_than` of every tenant (retention; see the type's
    /// documentation and [`PgEventBus::DEFAULT_RETENTION`]); returns how many went. A
    /// subscriber that resumes from before them gets a [`ChangeItem::Gap`].
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the database fails (the tenants done so far stay pruned).
    pub async fn prune(&self, older_than: SystemTime) -> Result<u64, BusError> {
        let tenants = tenants_to_prune(
            &self.owner,
            TENANTS_WITH_EVENTS,
            "event bus",
            unavailable,
            || corrupt("a tenant id does not read as text"),
        )
        .await?;
        let mut removed = 0;
        for tenant in tenants {
            let tx = self
                .shared
                .tenant_db
                .scoped(&tenant)
                .await
                .map_err(unavailable)?;
            let deleted = tx.execute(PRUNE, &[&tenant.as_str(), &older_than]).await;
            let deleted = tx.finish_with(deleted).await.map_err(unavailable)?;
            if deleted > 0 {
                tracing::debug!(tenant = %tenant, events = deleted, "old events pruned");
            }
            removed += deleted;
        }
        Ok(removed)
    }

    /// Forgets a tenant's local channel (offboarding, on every replica): its subscribers'
    /// streams end. Its stored events stay until retention or until the tenant is erased.
    pub fn forget_tenant(&self, tenant: &TenantId) {
        self.shared.lock().remove(tenant);
    }

    /// Subscribes to `tenant` and reads what the stream starts with: `after = None` is "from
    /// the tenant's last change on", `Some(n)` a resume after `n`.
    async fn open_stream(
        &self,
        tenant: &TenantId,
        filter: ChangeFilter,
        after: Option<u64>,
    ) -> Result<ChangeStream, BusError> {
        // LISTEN first: a change committed after the reads below is notified.
        self.start().await?;
        let (receiver, initializes) = self.shared.register(tenant);
        let tx = self
            .shared
            .tenant_db
            .scoped(tenant)
            .await
            .map_err(unavailable)?;
        let read = read_start(&tx, tenant, after).await;
        let (head, replay, start) = finish(tx, read).await?;
        if initializes {
            self.shared.initialize(tenant, head);
            // A notification that came before the channel knew where to start was ignored.
            let _ = self.kick.send(tenant.clone());
        }
        Ok(ChangeStream::resuming(receiver, filter, replay, start))
    }
}

/// Dropping the bus ends its listener task (and with it the LISTEN connection) and its scrub.
impl Drop for ListenerState {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(scrubber) = self.scrubber.take() {
            scrubber.abort();
        }
    }
}

/// [`PgEventBus::scrub_expired`] with the bus's pools.
async fn scrub(db: &TenantDb, owner: &Pool, now: SystemTime) -> Result<u64, BusError> {
    let Some(now_us) = micros_since_epoch(now) else {
        // No code expires before 1970.
        return Ok(0);
    };
    let tenants = tenants_to_prune(owner, TENANTS_WITH_EVENTS, "event bus", unavailable, || {
        corrupt("a tenant id does not read as text")
    })
    .await?;
    let mut scrubbed = 0;
    for tenant in tenants {
        let tx = db.scoped(&tenant).await.map_err(unavailable)?;
        let rewritten = tx.execute(SCRUB, &[&tenant.as_str(), &now_us]).await;
        let rewritten = tx.finish_with(rewritten).await.map_err(unavailable)?;
        if rewritten > 0 {
            tracing::debug!(tenant = %tenant, codes = rewritten, "expired pairing codes scrubbed");
        }
        scrubbed += rewritten;
    }
    Ok(scrubbed)
}

/// The started bus's periodic scrub: every `every` (the first right away), on the system clock.
/// A failure is logged and the next tick tries again.
async fn scrub_periodically(shared: Arc<Shared>, owner: Pool, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(err) = scrub(&shared.tenant_db, &owner, SystemTime::now()).await {
            tracing::warn!(
                error = %err,
                "event bus: scrubbing expired pairing codes failed; retrying at the next interval"
            );
        }
    }
}

impl fmt::Debug for PgEventBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgEventBus")
            .field("tenant_db", &self.shared.tenant_db)
            .field("owner", &self.owner.status())
            .field("capacity", &self.shared.capacity)
            .field("tenants", &self.shared.lock().len())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl EventBus for PgEventBus {
    async fn publish(&self, mut change: ChipChange) -> Result<u64, BusError> {
        let stored =
            serde_json::to_value(StoredChange::of(&change)).map_err(|_| BusError::Unavailable {
                reason: "the change cannot be stored as JSON (a time before 1970?)".into(),
            })?;
        let tenant = change.tenant.as_str();
        let chip = change.chip.as_str();
        let tx = self
            .shared
            .tenant_db
            .scoped(&change.tenant)
            .await
            .map_err(unavailable)?;
        let row = tx
            .query_one(PUBLISH, &[&tenant, &change.at, &chip, &stored])
            .await;
        let row = tx.finish_with(row).await.map_err(unavailable)?;
        change.seq = unsigned(&row, "seq")?;
        tracing::trace!(tenant = %change.tenant, seq = change.seq, "change published");
        Ok(change.seq)
    }

    async fn subscribe(
        &self,
        tenant: &TenantId,
        filter: ChangeFilter,
    ) -> Result<ChangeStream, BusError> {
        self.open_stream(tenant, filter, None).await
    }

    async fn subscribe_from(
        &self,
        tenant: &TenantId,
        filter: ChangeFilter,
        after: u64,
    ) -> Result<ChangeStream, BusError> {
        self.open_stream(tenant, filter, Some(after)).await
    }
}

/// A stream's start, read in one tenant-scoped transaction: the tenant's head (last number),
/// the replay (for a resume) and the number the stream resumes after.
async fn read_start(
    tx: &TenantTx,
    tenant: &TenantId,
    after: Option<u64>,
) -> Result<(u64, Vec<ChangeItem>, u64), BusError> {
    // Every change up to the head is committed (numbers commit in order).
    let head = match tx
        .query_opt(LAST_SEQ, &[&tenant.as_str()])
        .await
        .map_err(unavailable)?
    {
        Some(row) => unsigned(&row, "last_seq")?,
        None => 0,
    };
    let Some(after) = after else {
        return Ok((head, Vec::new(), head));
    };
    if after > head {
        // A cursor from before a restore, or from elsewhere: the numbers restarted below it.
        // Say so (a gap that resumes at the head) instead of skipping everything up to it.
        let gap = ChangeItem::Gap {
            missed: 0,
            resume_after: head,
        };
        return Ok((head, vec![gap], head));
    }
    let mut replay = Vec::new();
    // Each row's number, and its change (`None`: a pairing code scrubbed at its expiry).
    let mut held = Vec::new();
    if after < head {
        let limit = bigint(PgEventBus::REPLAY_LIMIT);
        let rows = tx
            .query(
                NEWEST_BETWEEN,
                &[&tenant.as_str(), &bigint(after), &bigint(head), &limit],
            )
            .await
            .map_err(unavailable)?;
        for row in &rows {
            held.push((unsigned(row, "seq")?, change_from_row(row, tenant)?));
        }
    }
    // Changes from after + 1 to the first row held are gone (retention) or beyond the limit. A
    // scrubbed row is held: its number is no gap.
    let first = held.first().map_or(head.saturating_add(1), |(seq, _)| *seq);
    if after.saturating_add(1) < first {
        replay.push(ChangeItem::Gap {
            missed: first - after - 1,
            resume_after: after,
        });
    }
    let now = SystemTime::now();
    replay.extend(
        held.into_iter()
            .filter_map(|(_, change)| change)
            .filter(|change| crate::events::still_offered(change, now))
            .map(ChangeItem::Change),
    );
    Ok((head, replay, after.max(first.saturating_sub(1))))
}

/// Commits a read-only transaction after `read`, or rolls it back; `read`'s error first.
async fn finish<T>(tx: TenantTx, read: Result<T, BusError>) -> Result<T, BusError> {
    match read {
        Ok(value) => {
            tx.commit().await.map_err(unavailable)?;
            Ok(value)
        }
        Err(err) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::debug!(error = %rollback, "rollback of a failed event bus read");
            }
            Err(err)
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Channel>> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A receiver of `tenant`'s channel (made if missing), and whether this subscription must
    /// tell the channel where it starts ([`Shared::initialize`]): it must when the channel
    /// does not know yet, since the listener ignores notifications until then.
    fn register(&self, tenant: &TenantId) -> (broadcast::Receiver<ChipChange>, bool) {
        let mut channels = self.lock();
        let capacity = self.capacity;
        let channel = channels.entry(tenant.clone()).or_insert_with(|| Channel {
            sender: broadcast::channel(capacity).0,
            forwarded: None,
        });
        (channel.sender.subscribe(), channel.forwarded.is_none())
    }

    /// The channel starts after `head` (read after the subscription registered). Several
    /// subscriptions that registered before it knew keep the lowest head: the listener then
    /// sends again what some already have, and their streams skip it by number.
    fn initialize(&self, tenant: &TenantId, head: u64) {
        if let Some(channel) = self.lock().get_mut(tenant) {
            channel.forwarded = Some(channel.forwarded.map_or(head, |f| f.min(head)));
        }
    }

    /// Where the listener continues `tenant`: its sender and last forwarded number; `None`
    /// when nobody listens (the channel is then dropped) or the channel does not know yet.
    fn forwarding(&self, tenant: &TenantId) -> Option<(broadcast::Sender<ChipChange>, u64)> {
        let mut channels = self.lock();
        let channel = channels.get(tenant)?;
        if channel.sender.receiver_count() == 0 {
            channels.remove(tenant);
            return None;
        }
        Some((channel.sender.clone(), channel.forwarded?))
    }

    /// The listener sent up to `reached`, starting after `from`. A subscription that lowered
    /// the channel's start meanwhile wins (its kick makes the listener send from there).
    fn forwarded(
        &self,
        tenant: &TenantId,
        sender: &broadcast::Sender<ChipChange>,
        from: u64,
        reached: u64,
    ) {
        if let Some(channel) = self.lock().get_mut(tenant)
            && channel.sender.same_channel(sender)
            && channel.forwarded.is_none_or(|f| f >= from)
        {
            channel.forwarded = Some(channel.forwarded.map_or(reached, |f| f.max(reached)));
        }
    }

    /// The tenants whose channels have subscribers.
    fn listened(&self) -> Vec<TenantId> {
        let mut channels = self.lock();
        channels.retain(|_, channel| channel.sender.receiver_count() > 0);
        channels.keys().cloned().collect()
    }
}

/// The dedicated LISTEN connection: its client, and the notifications its connection task
/// forwards. Dropping it ends both.
struct Session {
    /// Kept: the connection ends when its client is gone.
    client: Client,
    messages: mpsc::Receiver<AsyncMessage>,
    driver: JoinHandle<()>,
}

impl Session {
    /// Connects and runs `LISTEN`.
    async fn open(config: &Config) -> Result<Session, PgError> {
        let (client, connection) = config.connect(NoTls).await?;
        let (tx, messages) = mpsc::channel(NOTIFICATION_BUFFER);
        let session = Session {
            client,
            messages,
            driver: tokio::spawn(drive(connection, tx)),
        };
        // The connection is polled by its task: the LISTEN's answer arrives through it.
        session.client.batch_execute(LISTEN).await?;
        Ok(session)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Polls the connection, forwarding its asynchronous messages (notifications, notices) until it
/// closes or fails; the receiver then sees the end.
async fn drive(mut connection: Connection<Socket, NoTlsStream>, tx: mpsc::Sender<AsyncMessage>) {
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(message)) => {
                if tx.send(message).await.is_err() {
                    return;
                }
            }
            Some(Err(err)) => {
                tracing::warn!(error = %err, "event bus LISTEN connection failed");
                return;
            }
            None => return,
        }
    }
}

/// The listener task's state.
struct Listener {
    shared: Arc<Shared>,
    config: Config,
    kicks: mpsc::UnboundedReceiver<TenantId>,
    /// Tenants whose last catch-up failed, retried every [`CATCH_UP_RETRY`].
    retry: HashSet<TenantId>,
}

impl Listener {
    async fn run(mut self, session: Session) {
        let mut session = Some(session);
        let mut delay = RECONNECT_FIRST;
        loop {
            if session.is_none() {
                tokio::time::sleep(delay).await;
                match Session::open(&self.config).await {
                    Ok(opened) => {
                        tracing::info!("event bus LISTEN connection restored");
                        session = Some(opened);
                        delay = RECONNECT_FIRST;
                        // What was committed while nobody listened.
                        self.retry.extend(self.shared.listened());
                        self.retry_failed().await;
                    }
                    Err(err) => {
                        tracing::warn!(
                            error = %err,
                            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                            "event bus LISTEN connection: reconnect failed"
                        );
                        delay = (delay * 2).min(RECONNECT_CAP);
                    }
                }
                continue;
            }
            let Some(current) = session.as_mut() else {
                continue;
            };
            let retrying = !self.retry.is_empty();
            tokio::select! {
                message = current.messages.recv() => match message {
                    Some(AsyncMessage::Notification(notification)) => {
                        if notification.channel() == CHANNEL
                            && let Some((tenant, seq)) = parse_payload(notification.payload())
                        {
                            self.notified(&tenant, seq).await;
                        }
                    }
                    Some(_) => {}
                    None => {
                        tracing::warn!("event bus LISTEN connection lost; reconnecting");
                        session = None;
                    }
                },
                Some(tenant) = self.kicks.recv() => self.catch_up(&tenant).await,
                () = tokio::time::sleep(CATCH_UP_RETRY), if retrying => self.retry_failed().await,
            }
        }
    }

    /// A change `seq` of `tenant` committed: catch up unless it was sent already.
    async fn notified(&mut self, tenant: &TenantId, seq: u64) {
        let behind = self
            .shared
            .lock()
            .get(tenant)
            .and_then(|channel| channel.forwarded)
            .is_some_and(|forwarded| seq > forwarded);
        if behind {
            self.catch_up(tenant).await;
        }
    }

    async fn retry_failed(&mut self) {
        let tenants: Vec<TenantId> = self.retry.drain().collect();
        for tenant in tenants {
            self.catch_up(&tenant).await;
        }
    }

    /// Sends `tenant`'s changes after the last forwarded one to its channel, in order.
    async fn catch_up(&mut self, tenant: &TenantId) {
        let Some((sender, mut from)) = self.shared.forwarding(tenant) else {
            return;
        };
        loop {
            let started = from;
            let read = read_after(&self.shared.tenant_db, tenant, from).await;
            let rows = match read {
                Ok(rows) => rows,
                Err(err) => {
                    tracing::warn!(
                        tenant = %tenant,
                        error = %err,
                        "event bus catch-up failed; retrying"
                    );
                    self.retry.insert(tenant.clone());
                    return;
                }
            };
            let full = rows.len() >= CATCH_UP_BATCH;
            let now = SystemTime::now();
            for (seq, change) in rows {
                match change {
                    Ok(Some(change)) => {
                        // A pairing code read after its expiry (a catch-up after a reconnect)
                        // is not handed out, as in a resume. No subscriber left is not an
                        // error.
                        if crate::events::still_offered(&change, now) {
                            let _ = sender.send(change);
                        }
                    }
                    // A pairing code scrubbed at its expiry: nothing to hand out.
                    Ok(None) => {}
                    Err(_) => {
                        tracing::error!(
                            tenant = %tenant,
                            seq,
                            "a stored event does not decode; not delivered (repair the row)"
                        );
                    }
                }
                from = seq;
            }
            self.shared.forwarded(tenant, &sender, started, from);
            if !full {
                self.retry.remove(tenant);
                return;
            }
        }
    }
}

/// Up to [`CATCH_UP_BATCH`] of `tenant`'s changes after `after`, each with its number and its
/// decoding (`None`: a pairing code scrubbed at its expiry).
async fn read_after(
    db: &TenantDb,
    tenant: &TenantId,
    after: u64,
) -> Result<Vec<(u64, Result<Option<ChipChange>, BusError>)>, BusError> {
    let tx = db.scoped(tenant).await.map_err(unavailable)?;
    let limit = i64::try_from(CATCH_UP_BATCH).unwrap_or(i64::MAX);
    let rows = tx
        .query(EVENTS_AFTER, &[&tenant.as_str(), &bigint(after), &limit])
        .await
        .map_err(unavailable);
    let rows = finish(tx, rows).await?;
    rows.iter()
        .map(|row| Ok((unsigned(row, "seq")?, change_from_row(row, tenant))))
        .collect()
}

/// `<tenant>:<seq>`.
fn parse_payload(payload: &str) -> Option<(TenantId, u64)> {
    let (tenant, seq) = payload.rsplit_once(':')?;
    Some((TenantId::new(tenant).ok()?, seq.parse().ok()?))
}

/// A change from the columns `seq, chip_id, change` of a row of `tenant`; `None` for a pairing
/// code scrubbed at its expiry (nothing to hand out).
fn change_from_row(row: &Row, tenant: &TenantId) -> Result<Option<ChipChange>, BusError> {
    let seq = unsigned(row, "seq")?;
    let chip: String = row
        .try_get("chip_id")
        .map_err(|_| corrupt("supervisor_events.chip_id does not read as text"))?;
    let chip = ChipId::new(chip)
        .map_err(|_| corrupt("supervisor_events.chip_id is not a valid chip id"))?;
    let value: serde_json::Value = row
        .try_get("change")
        .map_err(|_| corrupt("supervisor_events.change does not read as JSON"))?;
    // The decoder's message can quote stored values (a pairing code): only its category.
    let stored: StoredChange =
        serde_json::from_value(value).map_err(|err| BusError::Unavailable {
            reason: format!(
                "stored event {seq} of tenant {tenant} does not decode ({:?} error)",
                err.classify()
            ),
        })?;
    Ok(stored.into_change(tenant.clone(), chip, seq))
}

/// A database failure, without row contents.
fn unavailable(err: impl Into<tenant_isolation::Error>) -> BusError {
    BusError::Unavailable {
        reason: db_reason("event store", err),
    }
}

fn corrupt(detail: &str) -> BusError {
    BusError::Unavailable {
        reason: format!("stored event data is corrupt: {detail}"),
    }
}

/// A stored `bigint` that must not be negative.
fn unsigned(row: &Row, name: &str) -> Result<u64, BusError> {
    pg_common::unsigned(row, name).map_err(|err| match err {
        UnsignedError::Unreadable => corrupt("a number does not read as bigint"),
        UnsignedError::Negative(_) => corrupt("a stored number is negative"),
    })
}

/// A number for a `bigint` bound (beyond its range: its end).
fn bigint(value: u64) -> i64 {
    pg_common::bigint(value, i64::MAX)
}

/// A [`ChipChange`] as stored in `supervisor_events.change` (tenant, chip and number are
/// columns). Its own types, so the stored form changes only on purpose.
#[derive(Serialize, Deserialize)]
struct StoredChange {
    /// Full precision (the `at` column is truncated to microseconds; it serves retention).
    at: SystemTime,
    observed_version: u64,
    phase: PhaseName,
    kind: StoredKind,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StoredKind {
    Created,
    PhaseChanged {
        from: PhaseName,
        to: PhaseName,
    },
    QrAvailable {
        window_started_at: SystemTime,
    },
    /// A short-lived credential: stored in the tenant's rows only, never logged, and rewritten
    /// to [`StoredKind::PairingCodeExpired`] once expired ([`PgEventBus::scrub_expired`]).
    PairingCode {
        code: PairingCodeSecret,
        expires_at: SystemTime,
    },
    /// A pairing code scrubbed at its expiry: only its expiry is left. Never written by
    /// `publish` (the scrub's SQL writes it) and never delivered.
    PairingCodeExpired {
        expires_at: SystemTime,
    },
    LoggedIn {
        me: Me,
    },
    BackingOff {
        reason: Reason,
        attempt: u32,
        next_try: SystemTime,
    },
    Parked {
        reason: ParkReason,
    },
    LoginExpired,
    StepFailed {
        step: StepKind,
        reason: Reason,
        error_kind: String,
    },
    LoopAlert {
        last_reason: Reason,
    },
    BudgetSpentAlert {
        last_reason: Reason,
    },
    Deleted,
    MessageReceived {
        chat: String,
        message_id: String,
    },
    MessageStatus {
        chat: String,
        message_id: String,
        ack: MessageAck,
    },
    SendFailed {
        chat: String,
        key: String,
        reason: String,
    },
    Upgrade {
        stage: StoredStage,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredStage {
    Started,
    ContainerReplaced,
    Done,
    Failed,
}

impl StoredChange {
    fn of(change: &ChipChange) -> Self {
        StoredChange {
            at: change.at,
            observed_version: change.observed_version,
            phase: change.phase,
            kind: StoredKind::of(&change.kind),
        }
    }

    /// The change; `None` for a pairing code scrubbed at its expiry.
    fn into_change(self, tenant: TenantId, chip: ChipId, seq: u64) -> Option<ChipChange> {
        Some(ChipChange {
            tenant,
            chip,
            seq,
            at: self.at,
            observed_version: self.observed_version,
            phase: self.phase,
            kind: self.kind.into_kind()?,
        })
    }
}

impl StoredKind {
    fn of(kind: &ChipChangeKind) -> Self {
        match kind.clone() {
            ChipChangeKind::Created => StoredKind::Created,
            ChipChangeKind::PhaseChanged { from, to } => StoredKind::PhaseChanged { from, to },
            ChipChangeKind::QrAvailable { window_started_at } => {
                StoredKind::QrAvailable { window_started_at }
            }
            ChipChangeKind::PairingCode { code, expires_at } => {
                StoredKind::PairingCode { code, expires_at }
            }
            ChipChangeKind::LoggedIn { me } => StoredKind::LoggedIn { me },
            ChipChangeKind::BackingOff {
                reason,
                attempt,
                next_try,
            } => StoredKind::BackingOff {
                reason,
                attempt,
                next_try,
            },
            ChipChangeKind::Parked { reason } => StoredKind::Parked { reason },
            ChipChangeKind::LoginExpired => StoredKind::LoginExpired,
            ChipChangeKind::StepFailed { step, reason, kind } => StoredKind::StepFailed {
                step,
                reason,
                error_kind: kind,
            },
            ChipChangeKind::Alert(Alert::Loop { last_reason }) => {
                StoredKind::LoopAlert { last_reason }
            }
            ChipChangeKind::Alert(Alert::BudgetSpent { last_reason }) => {
                StoredKind::BudgetSpentAlert { last_reason }
            }
            ChipChangeKind::Deleted => StoredKind::Deleted,
            ChipChangeKind::MessageReceived { chat, message_id } => {
                StoredKind::MessageReceived { chat, message_id }
            }
            ChipChangeKind::MessageStatus {
                chat,
                message_id,
                ack,
            } => StoredKind::MessageStatus {
                chat,
                message_id,
                ack,
            },
            ChipChangeKind::SendFailed { chat, key, reason } => {
                StoredKind::SendFailed { chat, key, reason }
            }
            ChipChangeKind::Upgrade { stage } => StoredKind::Upgrade {
                stage: match stage {
                    UpgradeStage::Started => StoredStage::Started,
                    UpgradeStage::ContainerReplaced => StoredStage::ContainerReplaced,
                    UpgradeStage::Done => StoredStage::Done,
                    UpgradeStage::Failed => StoredStage::Failed,
                },
            },
        }
    }

    /// The kind; `None` for a pairing code scrubbed at its expiry.
    fn into_kind(self) -> Option<ChipChangeKind> {
        Some(match self {
            StoredKind::Created => ChipChangeKind::Created,
            StoredKind::PhaseChanged { from, to } => ChipChangeKind::PhaseChanged { from, to },
            StoredKind::QrAvailable { window_started_at } => {
                ChipChangeKind::QrAvailable { window_started_at }
            }
            StoredKind::PairingCode { code, expires_at } => {
                ChipChangeKind::PairingCode { code, expires_at }
            }
            StoredKind::PairingCodeExpired { .. } => return None,
            StoredKind::LoggedIn { me } => ChipChangeKind::LoggedIn { me },
            StoredKind::BackingOff {
                reason,
                attempt,
                next_try,
            } => ChipChangeKind::BackingOff {
                reason,
                attempt,
                next_try,
            },
            StoredKind::Parked { reason } => ChipChangeKind::Parked { reason },
            StoredKind::LoginExpired => ChipChangeKind::LoginExpired,
            StoredKind::StepFailed {
                step,
                reason,
                error_kind,
            } => ChipChangeKind::StepFailed {
                step,
                reason,
                kind: error_kind,
            },
            StoredKind::LoopAlert { last_reason } => {
                ChipChangeKind::Alert(Alert::Loop { last_reason })
            }
            StoredKind::BudgetSpentAlert { last_reason } => {
                ChipChangeKind::Alert(Alert::BudgetSpent { last_reason })
            }
            StoredKind::Deleted => ChipChangeKind::Deleted,
            StoredKind::MessageReceived { chat, message_id } => {
                ChipChangeKind::MessageReceived { chat, message_id }
            }
            StoredKind::MessageStatus {
                chat,
                message_id,
                ack,
            } => ChipChangeKind::MessageStatus {
                chat,
                message_id,
                ack,
            },
            StoredKind::SendFailed { chat, key, reason } => {
                ChipChangeKind::SendFailed { chat, key, reason }
            }
            StoredKind::Upgrade { stage } => ChipChangeKind::Upgrade {
                stage: match stage {
                    StoredStage::Started => UpgradeStage::Started,
                    StoredStage::ContainerReplaced => UpgradeStage::ContainerReplaced,
                    StoredStage::Done => UpgradeStage::Done,
                    StoredStage::Failed => UpgradeStage::Failed,
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn round_trip(kind: ChipChangeKind) {
        let change = ChipChange {
            tenant: TenantId::new("acme").unwrap(),
            chip: ChipId::new("a").unwrap(),
            seq: 7,
            at: UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
            observed_version: 3,
            phase: PhaseName::AwaitingLogin,
            kind,
        };
        let value = serde_json::to_value(StoredChange::of(&change)).unwrap();
        let back: StoredChange = serde_json::from_value(value).unwrap();
        assert_eq!(
            back.into_change(change.tenant.clone(), change.chip.clone(), 7),
            Some(change)
        );
    }

    #[test]
    fn every_kind_round_trips_through_the_stored_form() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        for kind in [
            ChipChangeKind::Created,
            ChipChangeKind::PhaseChanged {
                from: PhaseName::Pending,
                to: PhaseName::Provisioning,
            },
            ChipChangeKind::QrAvailable {
                window_started_at: at,
            },
            ChipChangeKind::PairingCode {
                code: PairingCodeSecret::new("ABCD-1234"),
                expires_at: at,
            },
            ChipChangeKind::LoggedIn {
                me: Me::new("5511999999999@c.us", Some("Sales".into())),
            },
            ChipChangeKind::BackingOff {
                reason: Reason::Replaced,
                attempt: 2,
                next_try: at,
            },
            ChipChangeKind::Parked {
                reason: ParkReason::Looping {
                    last_reason: Reason::Replaced,
                },
            },
            ChipChangeKind::LoginExpired,
            ChipChangeKind::StepFailed {
                step: StepKind::Record,
                reason: Reason::Replaced,
                kind: "replaced".into(),
            },
            ChipChangeKind::Alert(Alert::Loop {
                last_reason: Reason::Replaced,
            }),
            ChipChangeKind::Alert(Alert::BudgetSpent {
                last_reason: Reason::Replaced,
            }),
            ChipChangeKind::Deleted,
            ChipChangeKind::MessageReceived {
                chat: "5511@c.us".into(),
                message_id: "m1".into(),
            },
            ChipChangeKind::MessageStatus {
                chat: "5511@c.us".into(),
                message_id: "m1".into(),
                ack: MessageAck::Read,
            },
            ChipChangeKind::Upgrade {
                stage: UpgradeStage::ContainerReplaced,
            },
        ] {
            round_trip(kind);
        }
    }

    /// A stored pairing code as migration 6 reads it, and as [`SCRUB`] rewrites it (the same
    /// rewrite, in JSON): the scrubbed row keeps its expiry, loses its code, and decodes to
    /// nothing to hand out.
    #[test]
    fn a_scrubbed_pairing_code_keeps_its_expiry_and_is_never_delivered() {
        let expires_at = UNIX_EPOCH + Duration::new(1_700_000_100, 1);
        let change = ChipChange {
            tenant: TenantId::new("acme").unwrap(),
            chip: ChipId::new("a").unwrap(),
            seq: 7,
            at: expires_at,
            observed_version: 3,
            phase: PhaseName::AwaitingLogin,
            kind: ChipChangeKind::PairingCode {
                code: PairingCodeSecret::new("ABCD-1234"),
                expires_at,
            },
        };
        let mut value = serde_json::to_value(StoredChange::of(&change)).unwrap();
        // The paths the generated column `code_expires_us` reads.
        assert_eq!(value["kind"]["type"], "pairing_code");
        assert_eq!(
            value["kind"]["expires_at"]["secs_since_epoch"],
            1_700_000_100_u64
        );
        assert_eq!(value["kind"]["expires_at"]["nanos_since_epoch"], 1_u64);
        let migration = include_str!("../migrations/0006_event_code_expiry.sql");
        for path in [
            "'{kind,type}' = 'pairing_code'",
            "'{kind,expires_at,secs_since_epoch}'",
            "'{kind,expires_at,nanos_since_epoch}'",
        ] {
            assert!(migration.contains(path), "migration 6 reads {path}");
        }
        assert!(SCRUB.contains("'type', 'pairing_code_expired'"));

        let expiry = value["kind"]["expires_at"].clone();
        value["kind"] = serde_json::json!({ "type": "pairing_code_expired", "expires_at": expiry });
        assert!(!value.to_string().contains("ABCD-1234"), "the code is gone");
        let back: StoredChange = serde_json::from_value(value).unwrap();
        assert!(matches!(
            back.kind,
            StoredKind::PairingCodeExpired { expires_at: kept } if kept == expires_at
        ));
        assert_eq!(back.into_change(change.tenant, change.chip, 7), None);
    }

    #[test]
    fn times_are_bound_as_whole_microseconds_since_the_epoch() {
        assert_eq!(
            micros_since_epoch(UNIX_EPOCH + Duration::new(1_700_000_100, 1_999)),
            Some(1_700_000_100_000_001)
        );
        assert_eq!(micros_since_epoch(UNIX_EPOCH), Some(0));
        assert_eq!(
            micros_since_epoch(UNIX_EPOCH - Duration::from_secs(1)),
            None
        );
    }

    #[test]
    fn payloads_name_a_tenant_and_a_number() {
        assert_eq!(
            parse_payload("acme:12"),
            Some((TenantId::new("acme").unwrap(), 12))
        );
        assert_eq!(parse_payload("acme"), None);
        assert_eq!(parse_payload("acme:x"), None);
        assert_eq!(parse_payload("Not A Tenant:1"), None);
    }
}
