//! Issue 12 across PROCESSES: two (then three) supervisor processes on one PostgreSQL database
//! and one Docker daemon, the chips of one tenant in flight.
//!
//! 1. SIGKILL (the fault-matrix row "a supervisor process killed with SIGKILL mid-provision and
//!    started again, with a second replica running → every chip finishes; the simulators' call
//!    logs show at most one create per chip and no mutation by a fenced owner"): the owner
//!    (child A) is killed with SIGKILL while provisioning; the other process (child B) takes the
//!    tenant over once A's lease expires; A is started again (child A2: a new process, so a new
//!    owner id) and, with both replicas running, every chip finishes while the lease row names
//!    one live replica at a time. Then: every create call in every simulator's call log, any
//!    status, is the one accepted create of its session; no process's call record has a
//!    mutating call written while the lease row named another lease (A2 never mutates what B
//!    owns); every mutating call a simulator received after B's takeover was announced by a
//!    live replica's call record (none is a late call of the killed A); one container per
//!    slot, the proxy leases keep their generation, the quota counts each chip once.
//! 2. SIGSTOP: A2 is killed (it owns nothing; B keeps or takes back the tenant), B (the owner
//!    now) is paused with SIGSTOP past its lease expiry; child C takes over and acts on a
//!    restart request; B is resumed with SIGCONT. After resuming, B sends no mutating WAHA call
//!    (from B's own call record), none of its store writes lands (no step entry with B's
//!    fencing token after the takeover), and every mutating call the simulator received after
//!    C's takeover was announced by C (none is a call B had in flight when it was stopped).
//!    The run's checks (creates, mutations inside ownership) are made once more at the end.
//!
//! The processes: this test binary re-executes itself (`child_supervisor`, a `#[test]` that
//! returns at once unless `CHIPFLEET_CHILD_ROLE` is set) once per supervisor; each builds its
//! own pieces on the shared scratch database (`PgTenantDirectory`, `PgQuotaLedger`,
//! `PgChipStore`, the proxy allocator on `PostgresLeaseStore`, so a takeover keeps the lease
//! generation) and its own pool with the same `PoolConfig` (same managed-by label, same key
//! fingerprint secret, same image and environment, so every process adopts the containers
//! another made). The pool addresses containers by their IP on a user-defined bridge network
//! (`AddressingPolicy::NetworkIp`), which Linux routes from the host: no host port is
//! allocated, so no process needs another's port store.
//!
//! No webhooks: a container on a bridge network cannot reach a receiver on the host's
//! 127.0.0.1, and this test listens nowhere else. The webhook URL points at the container's own
//! closed port 9 (deliveries fail, which the simulator tolerates); the supervisors progress by
//! their resync, which reads WAHA every second (`fast_policy`: `resync_interval` 1 s,
//! `reread_after` 200 ms).
//!
//! Ownership over time: the test reads the tenant's lease row at every poll of its waits
//! ([`LeaseSample`], wall clock before and after each read) and judges each process's call
//! record against those reads; the children, the simulators (containers share the host's
//! kernel clock) and this process stamp with the same wall clock.
//!
//! PostgreSQL's connection limit: each process keeps small pools (2-3 connections each, about
//! 8 per process); at most three processes and this one are connected at once (B and A2, then
//! B and C). The scratch database gets `idle_in_transaction_session_timeout` so that a process
//! paused inside a transaction (holding a lease or chip row lock) cannot block the takeover for
//! longer than that.
//!
//! Everything this file creates carries the managed-by label `ss-2p-<run>` (containers,
//! volumes, the network) and is removed at the end, also when the body panics; the children are
//! killed first (a guard kills them on drop too), and a child exits by itself when its parent
//! goes away. Every wait polls under a deadline; the two places a time window is the assertion
//! are the two replicas running side by side after the chips finished, and B's silence after
//! SIGCONT (said there). These tests FAIL (never skip) when Docker or PostgreSQL is not
//! available.
#![cfg(all(feature = "docker", feature = "postgres"))]

mod shared;
mod support;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use container_pool::{
    AddressingPolicy, ContainerRuntime, ContainerState, DockerRuntime, EnvVar,
    KeyFingerprintSecret, LabelSelector, PoolConfig, labels,
};
use futures::FutureExt;
use proxy_allocator::{PostgresLeaseStore, ProxyAllocator};
use session_supervisor::store::PgChipStore;
use session_supervisor::{
    ChipRecord, ChipSpec, ChipStore, OwnerId, PhaseName, StepKind, StepOutcome, Supervisor,
    SupervisorConfig, SupervisorParts, SystemClock, WahaClients,
};
use tenant_isolation::pg::reexports::tokio_postgres;
use tenant_isolation::pg::{self, AdminDb, PgQuotaLedger, PgTenantDirectory};
use tenant_isolation::{ChipId, PlanLimits, QuotaLedger, TenantDirectory, TenantId};
use waha_client::{
    ChatRef, Me, NewSession, PairingCode, QrImage, QrValue, SeenReceipt, SentMessage, ServerHealth,
    ServerStatus, ServerVersion, SessionConfig, SessionInfo, TextMessage, WahaApi, WahaError,
};
use waha_sim::SimControlClient;

use shared::docker::{
    docker, docker_pool_config, docker_with_sim_image, remove_docker_leftovers, run_id,
};
use shared::pg::{
    admin_url, app_db, app_url, end_app_connections, migrated_admin, on_database, pool_options,
    scratch,
};
use shared::{
    SupervisorTimings, create_tenant, fake_proxies, http_clients, supervisor_config, tenant_pool,
};
use support::{chip, describe, ms, secs, session, tenant};

/// The longest any single wait of this file may take.
const DEADLINE: Duration = Duration::from_secs(90);

/// How often a polled condition is looked at again (several processes share 2 cores and one
/// PostgreSQL).
const POLL: Duration = Duration::from_millis(100);

/// How long B is watched after SIGCONT. Longer than its renew interval (500 ms), its tick
/// (50 ms) and a resync (1 s) together, so a resumed B that would still act gets to.
const RESUMED_WINDOW: Duration = Duration::from_secs(4);

/// How long B and the restarted A run side by side once every chip finished: several claim
/// intervals (300 ms), renewals (500 ms) and resyncs (1 s), so a restarted A that would claim
/// the tenant or act on it gets to.
const REPLICA_WINDOW: Duration = Duration::from_secs(3);

/// The closed port the simulators' webhooks go to (see the file's documentation).
const WEBHOOK_URL: &str = "http://127.0.0.1:9/webhooks/{tenant}";

/// The child's environment.
const ENV_ROLE: &str = "CHIPFLEET_CHILD_ROLE";
const ENV_DB: &str = "CHIPFLEET_CHILD_DB";
const ENV_IMAGE: &str = "CHIPFLEET_CHILD_IMAGE";
const ENV_MANAGED_BY: &str = "CHIPFLEET_CHILD_MANAGED_BY";
const ENV_NETWORK: &str = "CHIPFLEET_CHILD_NETWORK";
const ENV_OWNER: &str = "CHIPFLEET_CHILD_OWNER";
const ENV_CALLS: &str = "CHIPFLEET_CHILD_CALLS";

/// A child exits by itself after this long (a leak guard; the test kills it much earlier).
const CHILD_LIFETIME: Duration = Duration::from_secs(10 * 60);

// ---------------------------------------------------------------------------------------------
// PostgreSQL (as in `fleet_docker.rs`).
// ---------------------------------------------------------------------------------------------

/// The tenant's owner lease as the owner role sees it: `(owner_id, token)`.
async fn owner_lease(
    client: &tokio_postgres::Client,
    tenant: &TenantId,
) -> Option<(Option<String>, i64)> {
    client
        .query_opt(
            "SELECT owner_id, token FROM supervisor_owner_leases WHERE tenant_id = $1",
            &[&tenant.as_str()],
        )
        .await
        .expect("the owner role reads supervisor_owner_leases")
        .map(|row| (row.get(0), row.get(1)))
}

/// One read of the tenant's lease row by this test: the row as [`owner_lease`] reads it
/// (`None`: no row yet), and the wall clock (unix ms) just before the query was sent and just
/// after its answer came, so the row was as read at some instant in `[from_ms, to_ms]`.
#[derive(Clone, Debug)]
struct LeaseSample {
    from_ms: u128,
    to_ms: u128,
    lease: Option<(Option<String>, i64)>,
}

/// Every read of the lease row in the run, in order: all are made one after the other on the
/// test's one owner-role connection, so later reads saw later states.
type Timeline = Mutex<Vec<LeaseSample>>;

/// Reads the tenant's lease row, adds the read to `timeline` and returns the row.
async fn sample_lease(
    client: &tokio_postgres::Client,
    tenant: &TenantId,
    timeline: &Timeline,
) -> Option<(Option<String>, i64)> {
    let from_ms = unix_ms(SystemTime::now());
    let lease = owner_lease(client, tenant).await;
    let to_ms = unix_ms(SystemTime::now());
    timeline
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(LeaseSample {
            from_ms,
            to_ms,
            lease: lease.clone(),
        });
    lease
}

/// The reads so far.
fn lease_reads(timeline: &Timeline) -> Vec<LeaseSample> {
    timeline.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// When the last read ended (unix ms): the state it saw held at or before then.
fn last_read_ms(timeline: &Timeline) -> u128 {
    timeline
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .last()
        .expect("the lease row was read")
        .to_ms
}

/// The reads where the lease changed (owner or token), for failure messages.
fn lease_history(reads: &[LeaseSample]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut last: Option<&Option<(Option<String>, i64)>> = None;
    for read in reads {
        if last != Some(&read.lease) {
            out.push(format!(
                "[{}..{}] {:?}",
                read.from_ms, read.to_ms, read.lease
            ));
            last = Some(&read.lease);
        }
    }
    out.join(", ")
}

/// With both replicas running: every read names one of `replicas` as the tenant's owner (the
/// row has one owner column, so one replica at a time), and the lease only moves forward: the
/// token never goes down and one token always names the same owner (a takeover bumps it).
fn assert_owned_by_one_of(samples: &[LeaseSample], replicas: &[&str]) {
    assert!(
        !samples.is_empty(),
        "the lease row was read while the replicas ran"
    );
    let history = lease_history(samples);
    let mut by_token: BTreeMap<i64, String> = BTreeMap::new();
    let mut last_token = i64::MIN;
    for read in samples {
        let Some((Some(owner), token)) = &read.lease else {
            panic!("a read named no owner while {replicas:?} ran: {history}");
        };
        assert!(
            replicas.contains(&owner.as_str()),
            "the tenant is owned by {owner}, not one of the live replicas {replicas:?}: {history}"
        );
        assert!(
            *token >= last_token,
            "the lease token went down ({last_token} -> {token}): {history}"
        );
        last_token = *token;
        let named = by_token.entry(*token).or_insert_with(|| owner.clone());
        assert_eq!(
            named.as_str(),
            owner.as_str(),
            "token {token} named two owners (a takeover without a new token): {history}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// What every process builds.
// ---------------------------------------------------------------------------------------------

/// What a process needs to build its pieces on the shared database and daemon.
#[derive(Clone, Debug)]
struct Setup {
    /// The scratch database's name.
    db_name: String,
    /// The `waha-sim` image.
    image: String,
    /// The managed-by label (and name prefix) of this run.
    managed_by: String,
    /// The user-defined bridge network of this run.
    network: String,
}

impl Setup {
    fn from_env() -> Self {
        let get =
            |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("the child needs {name}"));
        Setup {
            db_name: get(ENV_DB),
            image: get(ENV_IMAGE),
            managed_by: get(ENV_MANAGED_BY),
            network: get(ENV_NETWORK),
        }
    }
}

/// The pool configuration every process uses, identical field for field (the spec hash and the
/// key fingerprint must match for a process to adopt another's container): network-IP
/// addressing, volumes on, small containers, a fingerprint secret derived from the run label
/// (replicas must share it), the simulator's timings shortened (first QR 3 s after the start,
/// QR codes refreshed every 60 s, so a QR window outlasts the test).
fn pool_config(setup: &Setup) -> PoolConfig {
    let mut config = docker_pool_config(
        &setup.image,
        &setup.managed_by,
        AddressingPolicy::NetworkIp {
            network: setup.network.clone(),
        },
        secs(4),
        // A provisioning that lasts at least 3 s: the test kills the owner inside it.
        secs(3),
    );
    config.key_fingerprint_secret = Some(
        KeyFingerprintSecret::new(format!("two-processes-fingerprint-{}", setup.managed_by))
            .expect("a fingerprint secret of at least 16 bytes"),
    );
    config
        .extra_env
        .push(EnvVar::plain("SIM_QR_REFRESH_MS", "60000"));
    config
}

/// The supervisor configuration of every process: the ownership timings of the issue (lease
/// 3 s, renewed every 500 ms, safety margin 1 s, claims every 300 ms), ticks every 50 ms.
fn process_config() -> SupervisorConfig {
    supervisor_config(
        WEBHOOK_URL.to_owned(),
        SupervisorTimings {
            tick_interval: ms(50),
            step_timeout: secs(5),
            lease_ttl: secs(3),
            renew_every: ms(500),
            safety_margin: secs(1),
            claim_interval: ms(300),
            shutdown_grace: secs(5),
        },
    )
}

/// A process's pieces on the shared database and daemon.
struct World {
    directory: Arc<dyn TenantDirectory>,
    quota: Arc<dyn QuotaLedger>,
    proxies: Arc<ProxyAllocator>,
    supervisor: Supervisor,
}

/// Builds a process's pieces: the directory, quota ledger and chip store on the scratch
/// database, the proxy allocator on `PostgresLeaseStore` (same list in every process, so the
/// same endpoint ids), the pool on Docker, and a supervisor (not run) with `owner`.
async fn assemble(
    setup: &Setup,
    runtime: Arc<DockerRuntime>,
    waha: Arc<dyn WahaClients>,
    owner: OwnerId,
) -> World {
    let owner_url = on_database(&admin_url(), &setup.db_name);
    let app_url = on_database(&app_url(), &setup.db_name);
    let admin =
        AdminDb::connect(&owner_url, &pool_options(2)).expect("DATABASE_URL is a valid URL");
    let tenant_db = app_db(&app_url, &pool_options(3)).await;
    // The owner role's pool: the chip store's platform tables and the proxy leases.
    let owner_pool =
        pg::build_pool(&owner_url, &pool_options(3)).expect("DATABASE_URL is a valid URL");
    let directory: Arc<dyn TenantDirectory> = Arc::new(PgTenantDirectory::new(admin));
    let quota: Arc<dyn QuotaLedger> =
        Arc::new(PgQuotaLedger::new(tenant_db.clone(), Arc::new(SystemClock)));
    let store =
        Arc::new(PgChipStore::new(tenant_db, owner_pool.clone()).with_clock(Arc::new(SystemClock)));
    let proxies = fake_proxies(4, Arc::new(PostgresLeaseStore::new(owner_pool)));
    let pool = tenant_pool(runtime, &directory, pool_config(setup));
    let supervisor = Supervisor::builder(SupervisorParts {
        directory: directory.clone(),
        quota: quota.clone(),
        pool,
        proxies: proxies.clone(),
        store: store as Arc<dyn ChipStore>,
        waha,
        clock: Arc::new(SystemClock),
    })
    .config(process_config())
    .owner_id(owner)
    .build()
    .expect("the test configuration is valid");
    World {
        directory,
        quota,
        proxies,
        supervisor,
    }
}

// ---------------------------------------------------------------------------------------------
// The call record of a child: every mutating WAHA call, written before it is sent.
// ---------------------------------------------------------------------------------------------

fn unix_ms(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

/// An append-only file of `<unix_ms> <method> <session>` lines, one write and flush per line.
struct CallLog {
    file: Mutex<File>,
}

impl CallLog {
    fn open(path: &Path) -> Self {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("opening the call record {}: {e}", path.display()));
        CallLog {
            file: Mutex::new(file),
        }
    }

    fn record(&self, method: &str, session: &str) {
        let line = format!("{} {method} {session}\n", unix_ms(SystemTime::now()));
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = file.write_all(line.as_bytes()).and_then(|()| file.flush()) {
            eprintln!("the call record failed: {e}");
        }
    }
}

/// [`WahaClients`] whose clients record every mutating call before sending it.
struct RecordingClients {
    inner: Arc<dyn WahaClients>,
    log: Arc<CallLog>,
}

impl WahaClients for RecordingClients {
    fn client(
        &self,
        base_url: &url::Url,
        key: fleet_vocab::ApiKey,
    ) -> Result<Arc<dyn WahaApi>, WahaError> {
        Ok(Arc::new(RecordingWaha {
            inner: self.inner.client(base_url, key)?,
            log: self.log.clone(),
        }))
    }
}

/// A [`WahaApi`] that records each mutating call (as `FencedWaha` fences them), reads pass
/// through. The supervisor wraps it in its `FencedWaha`, so only calls past the owner guard
/// reach it.
struct RecordingWaha {
    inner: Arc<dyn WahaApi>,
    log: Arc<CallLog>,
}

#[async_trait]
impl WahaApi for RecordingWaha {
    async fn ping(&self) -> Result<(), WahaError> {
        self.inner.ping().await
    }

    async fn health(&self) -> Result<ServerHealth, WahaError> {
        self.inner.health().await
    }

    async fn version(&self) -> Result<ServerVersion, WahaError> {
        self.inner.version().await
    }

    async fn server_status(&self) -> Result<ServerStatus, WahaError> {
        self.inner.server_status().await
    }

    async fn list_sessions(&self, all: bool) -> Result<Vec<SessionInfo>, WahaError> {
        self.inner.list_sessions(all).await
    }

    async fn get_session(&self, name: &str) -> Result<SessionInfo, WahaError> {
        self.inner.get_session(name).await
    }

    async fn create_session(&self, new: &NewSession) -> Result<Option<SessionInfo>, WahaError> {
        self.log.record("create_session", &new.name);
        self.inner.create_session(new).await
    }

    async fn update_session(
        &self,
        name: &str,
        config: &SessionConfig,
    ) -> Result<SessionInfo, WahaError> {
        self.log.record("update_session", name);
        self.inner.update_session(name, config).await
    }

    async fn delete_session(&self, name: &str) -> Result<(), WahaError> {
        self.log.record("delete_session", name);
        self.inner.delete_session(name).await
    }

    async fn start_session(&self, name: &str) -> Result<SessionInfo, WahaError> {
        self.log.record("start_session", name);
        self.inner.start_session(name).await
    }

    async fn stop_session(&self, name: &str) -> Result<Option<SessionInfo>, WahaError> {
        self.log.record("stop_session", name);
        self.inner.stop_session(name).await
    }

    async fn restart_session(&self, name: &str) -> Result<SessionInfo, WahaError> {
        self.log.record("restart_session", name);
        self.inner.restart_session(name).await
    }

    async fn logout_session(&self, name: &str) -> Result<(), WahaError> {
        self.log.record("logout_session", name);
        self.inner.logout_session(name).await
    }

    async fn me(&self, name: &str) -> Result<Option<Me>, WahaError> {
        self.inner.me(name).await
    }

    async fn qr_png(&self, name: &str) -> Result<Vec<u8>, WahaError> {
        self.inner.qr_png(name).await
    }

    async fn qr_base64(&self, name: &str) -> Result<QrImage, WahaError> {
        self.inner.qr_base64(name).await
    }

    async fn qr_raw(&self, name: &str) -> Result<QrValue, WahaError> {
        self.inner.qr_raw(name).await
    }

    async fn request_pairing_code(
        &self,
        name: &str,
        phone_number: &str,
    ) -> Result<PairingCode, WahaError> {
        self.log.record("request_pairing_code", name);
        self.inner.request_pairing_code(name, phone_number).await
    }

    async fn send_text(&self, message: &TextMessage) -> Result<SentMessage, WahaError> {
        self.log.record("send_text", &message.session);
        self.inner.send_text(message).await
    }

    async fn send_seen(&self, receipt: &SeenReceipt) -> Result<(), WahaError> {
        self.log.record("send_seen", &receipt.session);
        self.inner.send_seen(receipt).await
    }

    async fn start_typing(&self, chat: &ChatRef) -> Result<(), WahaError> {
        self.log.record("start_typing", &chat.session);
        self.inner.start_typing(chat).await
    }

    async fn stop_typing(&self, chat: &ChatRef) -> Result<(), WahaError> {
        self.log.record("stop_typing", &chat.session);
        self.inner.stop_typing(chat).await
    }
}

/// The lines of a call record written after `after_ms` (a missing file has none).
fn calls_after(path: &Path, after_ms: u128) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|line| {
            line.split_whitespace()
                .next()
                .and_then(|ms| ms.parse::<u128>().ok())
                // An unreadable line counts: nothing but this file's recorder writes there.
                .is_none_or(|ms| ms > after_ms)
        })
        .map(str::to_owned)
        .collect()
}

/// The lines of the call record `path` of the process `owner` written while the lease row
/// certainly named another lease than `owner`'s: a line written at `w` lies between a read that
/// ended before `w` and a read that started after `w` (the nearest ones), both of the same
/// token and neither naming `owner`. Only a takeover names a new owner and it bumps the token
/// (tokens never go down), so between two reads of one token the lease never was `owner`'s: a
/// line there is a mutating call of a fenced (or never owning) process, past its owner guard.
/// A line outside the reads (before the first, after the last, across a token change) is not
/// judged; an unreadable line counts.
fn calls_outside_ownership(path: &Path, owner: &str, reads: &[LeaseSample]) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|line| {
            let Some(at) = line
                .split_whitespace()
                .next()
                .and_then(|ms| ms.parse::<u128>().ok())
            else {
                return true;
            };
            let before = reads
                .iter()
                .rev()
                .find(|read| read.to_ms < at)
                .and_then(|read| read.lease.as_ref());
            let after = reads
                .iter()
                .find(|read| read.from_ms > at)
                .and_then(|read| read.lease.as_ref());
            match (before, after) {
                (Some((owner_before, token_before)), Some((owner_after, token_after))) => {
                    token_before == token_after
                        && owner_before.as_deref() != Some(owner)
                        && owner_after.as_deref() != Some(owner)
                }
                _ => false,
            }
        })
        .map(str::to_owned)
        .collect()
}

/// Checks that no process of `processes` (`(child name, owner id)`) made a mutating WAHA call
/// while the lease row named another lease ([`calls_outside_ownership`] over `reads`). The run
/// has one tenant, so every line of a call record is about its sessions.
fn assert_no_fenced_mutation(
    children: &Mutex<Children>,
    processes: &[(&str, &str)],
    reads: &[LeaseSample],
) {
    for &(name, owner) in processes {
        let calls = children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .calls
            .clone();
        let fenced = calls_outside_ownership(&calls, owner, reads);
        assert!(
            fenced.is_empty(),
            "child {name} ({owner}) sent mutating WAHA calls while the tenant's lease was \
             another's (a mutation by a fenced or non-owning process): {fenced:?}; the lease \
             over time: {}",
            lease_history(reads)
        );
    }
}

/// A call record's lines as `(unix_ms, method, session)` (unreadable lines left out).
fn record_lines(path: &Path) -> Vec<(u128, String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let at = parts.next()?.parse::<u128>().ok()?;
            let method = parts.next()?.to_owned();
            let session = parts.next()?.to_owned();
            Some((at, method, session))
        })
        .collect()
}

/// The [`RecordingWaha`] method behind a simulator call, by its route (the routes
/// `waha-client` calls); `None` for any other route.
fn recorded_method(call: &waha_sim::CallRecord) -> Option<&'static str> {
    let method = match (call.method.as_str(), call.route.as_str()) {
        ("POST", "/api/sessions") => "create_session",
        ("PUT", "/api/sessions/{session}") => "update_session",
        ("DELETE", "/api/sessions/{session}") => "delete_session",
        ("POST", "/api/sessions/{session}/start") => "start_session",
        ("POST", "/api/sessions/{session}/stop") => "stop_session",
        ("POST", "/api/sessions/{session}/restart") => "restart_session",
        ("POST", "/api/sessions/{session}/logout") => "logout_session",
        ("POST", "/api/{session}/auth/request-code") => "request_pairing_code",
        ("POST", "/api/sendText") => "send_text",
        ("POST", "/api/sendSeen") => "send_seen",
        ("POST", "/api/startTyping") => "start_typing",
        ("POST", "/api/stopTyping") => "stop_typing",
        _ => return None,
    };
    Some(method)
}

/// The mutating calls of `calls` (the simulators' logs) that arrived after `after_ms` and that
/// no line of the call records `announcers` announced. Lines and calls are matched one to one,
/// in time order: each call takes the earliest line not taken yet of the same method and
/// session (either unknown on the simulator's side: any) written at or before the call
/// arrived. A process writes its line before sending, and the supervisors here run their
/// clients without retries (one line, one call), so every call of the announcers is announced;
/// a call left over was sent by another process: a fenced owner's call still in flight, or one
/// it sent once resumed, even when an announcer made the same call too.
fn unannounced_calls(
    calls: &[waha_sim::CallRecord],
    after_ms: u128,
    announcers: &[PathBuf],
) -> Vec<String> {
    let mut lines: Vec<(u128, String, String)> = announcers
        .iter()
        .flat_map(|path| record_lines(path))
        .collect();
    lines.sort_by_key(|(at, _, _)| *at);
    let mut taken = vec![false; lines.len()];
    let mut ordered: Vec<&waha_sim::CallRecord> = calls.iter().collect();
    ordered.sort_by_key(|call| (call.at_ms, call.seq));
    let mut left = Vec::new();
    for call in ordered {
        let method = recorded_method(call);
        let line = lines
            .iter()
            .enumerate()
            .position(|(index, (at, line_method, line_session))| {
                !taken[index]
                    && *at <= u128::from(call.at_ms)
                    && method.is_none_or(|m| m == line_method.as_str())
                    && call
                        .session
                        .as_deref()
                        .is_none_or(|s| s == line_session.as_str())
            });
        match line {
            Some(index) => taken[index] = true,
            None if u128::from(call.at_ms) > after_ms => left.push(format!(
                "{} {} {:?} -> {} at {}",
                call.method, call.route, call.session, call.status, call.at_ms
            )),
            None => {}
        }
    }
    left
}

/// Every mutating call logged by every simulator of the run (the run has one tenant, `tenant`;
/// each container must be running, since a stopped simulator's log is gone), each log checked
/// complete (numbered from 1 without a gap: nothing forgotten).
async fn simulator_calls(
    runtime: &DockerRuntime,
    setup: &Setup,
    directory: &dyn TenantDirectory,
    tenant: &TenantId,
) -> Vec<waha_sim::CallRecord> {
    let selector = LabelSelector::new(labels::MANAGED_BY, &setup.managed_by);
    let containers = runtime
        .list(&selector)
        .await
        .expect("Docker lists the run's containers");
    assert!(
        !containers.is_empty(),
        "the run has simulator containers to read the call logs of"
    );
    let tenant_record = directory
        .get(tenant)
        .await
        .unwrap_or_else(|e| panic!("reading tenant {tenant}: {e}"));
    let mut all = Vec::new();
    for c in &containers {
        assert_eq!(
            c.label(labels::TENANT),
            Some(tenant.as_str()),
            "every container of the run is {tenant}'s: {c:?}"
        );
        assert!(
            c.state == ContainerState::Running && c.restart_count == 0,
            "container {} is not running, or was restarted: its call log is (partly) gone: {c:?}",
            c.name
        );
        let base_url = c
            .url
            .clone()
            .unwrap_or_else(|| panic!("container {}'s address on {}", c.name, setup.network));
        let control = SimControlClient::new(
            base_url.as_str(),
            Some(waha_sim::ApiKey::new(
                tenant_record.secrets.container_api_key.expose_secret(),
            )),
        )
        .expect("a control client");
        let calls = control
            .calls()
            .await
            .unwrap_or_else(|e| panic!("the call log of {}: {e}", c.name));
        assert!(
            (1u64..).zip(&calls).all(|(n, call)| call.seq == n),
            "the call log of {} is complete (numbered 1, 2, ...): {calls:?}",
            c.name
        );
        all.extend(calls);
    }
    all
}

/// The row's "at most one create per chip", counting EVERY create call of every simulator's log,
/// whatever its status: exactly one create names each of `sessions`, and it was accepted (201);
/// no other create is logged (none naming no session, none naming another).
///
/// Counting refused creates too is right in this run, not only the accepted ones: no booting
/// window is configured (`SIM_BOOTING_MS` unset), no error rate, and every process presents the
/// tenant's key, so nothing refuses a create before reading it (such a refusal names no session,
/// so it could not be told apart per chip); the supervisor's `ensure_session` posts the create
/// and, on "already exists", reads and compares instead. So a second create call naming a
/// session can only be a create of an existing session (422: the new owner posting again what
/// the killed owner created, or a client repeat after an applied create): what the row forbids.
/// A run that configured a booting window would have to relax this to: exactly one 201 per
/// session and no create after it (the creates refused while booting are legitimate retries).
fn assert_one_create_per_session(calls: &[waha_sim::CallRecord], sessions: &[String], when: &str) {
    let creates: Vec<String> = calls
        .iter()
        .filter(|call| call.is_create())
        .map(|call| format!("{:?} -> {} at {}", call.session, call.status, call.at_ms))
        .collect();
    for name in sessions {
        let of_session: Vec<u16> = calls
            .iter()
            .filter(|call| call.is_create() && call.session.as_deref() == Some(name.as_str()))
            .map(|call| call.status)
            .collect();
        assert_eq!(
            of_session,
            vec![201],
            "{when}: {name}: exactly one create call, accepted, in the simulators' logs \
             (all creates: {creates:?})"
        );
    }
    assert_eq!(
        creates.len(),
        sessions.len(),
        "{when}: no create call but one per chip in the simulators' logs: {creates:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The child process.
// ---------------------------------------------------------------------------------------------

/// The supervisor process: does nothing unless `CHIPFLEET_CHILD_ROLE=supervisor` (the parent
/// test re-executes this binary with `--exact child_supervisor`). Runs a supervisor with the
/// given owner id until it is killed.
#[test]
fn child_supervisor() {
    let Ok(role) = std::env::var(ENV_ROLE) else {
        return;
    };
    assert_eq!(role, "supervisor", "an unknown child role");
    // Leak guard: exit when the parent test process is gone (re-parented) or after a while.
    let parent = std::os::unix::process::parent_id();
    let born = Instant::now();
    std::thread::spawn(move || watch_parent(parent, born));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(child_main());
}

/// Exits the child process when its parent is gone (it was re-parented) or after
/// [`CHILD_LIFETIME`].
fn watch_parent(parent: u32, born: Instant) {
    while std::os::unix::process::parent_id() == parent && born.elapsed() <= CHILD_LIFETIME {
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("child: the parent is gone or the lifetime is over; exiting");
    std::process::exit(3);
}

async fn child_main() {
    let setup = Setup::from_env();
    let owner = std::env::var(ENV_OWNER).expect("the child needs its owner id");
    let calls = PathBuf::from(std::env::var(ENV_CALLS).expect("the child needs a call record"));
    let docker = Arc::new(docker().await);
    let waha: Arc<dyn WahaClients> = Arc::new(RecordingClients {
        inner: http_clients(),
        log: Arc::new(CallLog::open(&calls)),
    });
    let world = assemble(&setup, docker, waha, OwnerId::new(owner.clone())).await;
    let _running = world
        .supervisor
        .run()
        .await
        .unwrap_or_else(|e| panic!("child {owner}: the supervisor does not run: {e}"));
    eprintln!("child {owner}: running");
    std::future::pending::<()>().await;
}

/// One child process, its output file and its call record.
struct ChildProc {
    name: String,
    owner: String,
    process: std::process::Child,
    log: PathBuf,
    calls: PathBuf,
}

impl ChildProc {
    fn pid(&self) -> u32 {
        self.process.id()
    }
}

/// Every child of the test; killed (SIGKILL, also a stopped one) and reaped on drop.
#[derive(Default)]
struct Children {
    list: Vec<ChildProc>,
}

impl Children {
    fn get(&self, name: &str) -> &ChildProc {
        self.list
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no child {name}"))
    }

    fn get_mut(&mut self, name: &str) -> &mut ChildProc {
        self.list
            .iter_mut()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no child {name}"))
    }

    /// Panics (with its output) when the child `name` has exited.
    fn assert_alive(&mut self, name: &str) {
        let child = self.get_mut(name);
        match child.process.try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => panic!(
                "child {name} exited ({status}); its output:\n{}",
                tail(&child.log)
            ),
            Err(e) => panic!("child {name}: waiting on it failed: {e}"),
        }
    }

    fn kill_all(&mut self) {
        for child in &mut self.list {
            let _ = child.process.kill();
            let _ = child.process.wait();
        }
    }

    fn print_logs(&self) {
        for child in &self.list {
            eprintln!(
                "----- child {} ({}) output -----\n{}",
                child.name,
                child.owner,
                tail(&child.log)
            );
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// The last lines of a child's output.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Starts the supervisor process `name` (owner id `<managed_by>-<name>`).
fn spawn_child(setup: &Setup, dir: &Path, children: &Mutex<Children>, name: &str) -> String {
    let owner = format!("{}-{name}", setup.managed_by);
    let log = dir.join(format!("{name}.log"));
    let calls = dir.join(format!("{name}.calls"));
    File::create(&calls).expect("an empty call record");
    let out = File::create(&log).expect("the child's output file");
    let err = out.try_clone().expect("the child's output file, twice");
    let process = Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "child_supervisor",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_ROLE, "supervisor")
        .env(ENV_DB, &setup.db_name)
        .env(ENV_IMAGE, &setup.image)
        .env(ENV_MANAGED_BY, &setup.managed_by)
        .env(ENV_NETWORK, &setup.network)
        .env(ENV_OWNER, &owner)
        .env(ENV_CALLS, &calls)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .unwrap_or_else(|e| panic!("starting child {name}: {e}"));
    children
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .list
        .push(ChildProc {
            name: name.to_owned(),
            owner: owner.clone(),
            process,
            log,
            calls,
        });
    owner
}

fn assert_alive(children: &Mutex<Children>, name: &str) {
    children
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .assert_alive(name);
}

/// Sends `signal` (`-STOP`, `-CONT`) to `pid` through kill(1) (no libc dependency).
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("running kill {signal} {pid}: {e}"));
    assert!(status.success(), "kill {signal} {pid} failed: {status}");
}

/// The states (`R`, `S`, `T`, ...) of every thread of `pid`, from `/proc`.
fn thread_states(pid: u32) -> Vec<char> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|stat| {
            // `pid (comm) S ...`: the command may contain spaces and parentheses.
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.trim_start().chars().next()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Waits.
// ---------------------------------------------------------------------------------------------

/// Polls `check` every [`POLL`] until it answers `Some`, checking that the children in `alive`
/// still run; panics naming `what` (and the last thing seen) after [`DEADLINE`].
async fn wait_for<T>(
    what: &str,
    children: &Mutex<Children>,
    alive: &[&str],
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        for name in alive {
            assert_alive(children, name);
        }
        let last = match check().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}; last seen: {last}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `owner` holds the tenant's lease (each read added to `timeline`); returns its
/// token.
async fn wait_owner(
    db: &tokio_postgres::Client,
    tenant: &TenantId,
    owner: &str,
    children: &Mutex<Children>,
    alive: &[&str],
    timeline: &Timeline,
) -> i64 {
    wait_for(
        &format!("{owner} to own tenant {tenant}"),
        children,
        alive,
        async || match sample_lease(db, tenant, timeline).await {
            Some((Some(id), token)) if id == owner => Ok(token),
            other => Err(format!("lease {other:?}")),
        },
    )
    .await
}

async fn records(supervisor: &Supervisor, tenant: &TenantId, chips: &[ChipId]) -> Vec<ChipRecord> {
    let mut out = Vec::new();
    for c in chips {
        out.push(
            supervisor
                .get_chip(tenant, c)
                .await
                .unwrap_or_else(|e| panic!("{tenant}/{c}: get_chip failed: {e}")),
        );
    }
    out
}

fn describe_all(records: &[ChipRecord]) -> String {
    records.iter().map(describe).collect::<Vec<_>>().join(" | ")
}

fn succeeded(record: &ChipRecord, step: StepKind) -> bool {
    record
        .steps
        .iter()
        .any(|entry| entry.step == step && entry.outcome == StepOutcome::Succeeded)
}

// ---------------------------------------------------------------------------------------------
// The test.
// ---------------------------------------------------------------------------------------------

/// Issue 12 with processes: SIGKILL of the owner mid-provision, then the killed process started
/// again next to the other replica (every chip finishes, one create per chip in the simulators'
/// logs, no mutation by a fenced owner), then SIGSTOP of the new owner past its lease expiry
/// (after SIGCONT it makes no WAHA mutation and its writes are refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_sigstop_two_processes() {
    // Docker first: fail loudly when it is missing, and build the image (reused when unchanged).
    let (runtime, image) = docker_with_sim_image().await;
    let run = run_id();
    let managed_by = format!("ss-2p-{run}");
    let network = format!("ss-2p-net-{run}");
    let dir = std::env::temp_dir().join(format!("chipfleet-two-processes-{run}"));
    std::fs::create_dir_all(&dir).expect("a temporary directory for the children's files");
    let db = scratch::ScratchDb::create().await;
    let setup = Setup {
        db_name: db.name.clone(),
        image,
        managed_by: managed_by.clone(),
        network: network.clone(),
    };
    let children = Mutex::new(Children::default());

    let outcome = AssertUnwindSafe(body(&setup, &dir, runtime.clone(), &db, &children))
        .catch_unwind()
        .await;

    // Clean-up, whatever happened: the children first (so nothing re-creates containers), then
    // Docker, then the database.
    {
        let mut children = children.lock().unwrap_or_else(|p| p.into_inner());
        children.kill_all();
        if outcome.is_err() {
            children.print_logs();
        }
    }
    remove_docker_leftovers(&runtime, &managed_by, Some(&network)).await;
    end_app_connections(&on_database(&app_url(), &db.name)).await;
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn body(
    setup: &Setup,
    dir: &Path,
    runtime: Arc<DockerRuntime>,
    db: &scratch::ScratchDb,
    children: &Mutex<Children>,
) {
    // The database: a paused process must not hold row locks for longer than this (see the
    // file's documentation); set before any connection to it is made.
    let server = scratch::owner_client(&admin_url()).await;
    server
        .batch_execute(&format!(
            "ALTER DATABASE {} SET idle_in_transaction_session_timeout = '5s'",
            db.name
        ))
        .await
        .expect("the owner role owns the scratch database");
    drop(server);
    let admin = migrated_admin(
        &db.url,
        &pool_options(2),
        &[PostgresLeaseStore::MIGRATIONS, PgChipStore::MIGRATIONS],
    )
    .await;
    drop(admin);
    let owner_db = scratch::owner_client(&db.url).await;
    // Every read of the tenant's lease row, in order (see `LeaseSample`).
    let timeline: Timeline = Mutex::new(Vec::new());

    // This process: API writes only (any replica may write desired state); never run.
    let api = assemble(
        setup,
        runtime.clone(),
        http_clients(),
        OwnerId::new(format!("{}-api", setup.managed_by)),
    )
    .await;
    let supervisor = &api.supervisor;

    let t = tenant("acme");
    let chips: [ChipId; 2] = [chip("sales-1"), chip("sales-2")];
    let sessions: Vec<String> = chips.iter().map(|c| session(&t, c)).collect();
    create_tenant(api.directory.as_ref(), &t, PlanLimits::new(50, 50, 10_000)).await;

    // -----------------------------------------------------------------------------------------
    // SIGKILL mid-provision.
    // -----------------------------------------------------------------------------------------

    let owner_a = spawn_child(setup, dir, children, "a");
    for c in &chips {
        supervisor
            .create_chip(&t, c, ChipSpec::qr())
            .await
            .unwrap_or_else(|e| panic!("{t}/{c}: create_chip failed: {e}"));
    }
    // The lease row exists once the tenant has a chip; B starts only once A owns the tenant, so
    // the first owner is known.
    let token_a = wait_owner(&owner_db, &t, &owner_a, children, &["a"], &timeline).await;
    let owner_b = spawn_child(setup, dir, children, "b");

    // Mid-provision: a chip leased its proxy and is still provisioning (the first QR comes 3 s
    // after the session starts, so this lasts); A is the only owner so far.
    let at_kill = wait_for(
        "a chip of A's mid-provision (proxy leased, no QR yet)",
        children,
        &["a", "b"],
        async || {
            sample_lease(&owner_db, &t, &timeline).await;
            let seen = records(supervisor, &t, &chips).await;
            if seen.iter().any(|r| {
                matches!(
                    r.observed.phase.name(),
                    PhaseName::Provisioning | PhaseName::BackingOff
                ) && succeeded(r, StepKind::LeaseProxy)
            }) {
                Ok(seen)
            } else {
                Err(describe_all(&seen))
            }
        },
    )
    .await;
    let mut generations: BTreeMap<ChipId, u64> = BTreeMap::new();
    for c in &chips {
        if let Some(lease) = api
            .proxies
            .lease(&t, c)
            .await
            .expect("the allocator reads leases")
        {
            generations.insert(c.clone(), lease.generation);
        }
    }
    {
        let mut list = children.lock().unwrap_or_else(|p| p.into_inner());
        let a = list.get_mut("a");
        a.process.kill().expect("SIGKILL to A");
        a.process.wait().expect("A reaped");
    }
    assert!(
        at_kill
            .iter()
            .any(|r| r.observed.phase.name() != PhaseName::AwaitingLogin),
        "precondition: A was killed mid-provision: {}",
        describe_all(&at_kill)
    );
    assert!(
        !generations.is_empty(),
        "precondition: a proxy lease existed before the kill"
    );

    // B takes over once A's lease expires.
    let token_b = wait_owner(&owner_db, &t, &owner_b, children, &["b"], &timeline).await;
    // B's lease was in force at the latest when this read ended.
    let b_took_over_ms = last_read_ms(&timeline);
    assert!(
        token_b > token_a,
        "the takeover bumped the token ({token_a} -> {token_b})"
    );

    // A started again, with B (the second replica) running. A restarted process is a new
    // process with a new owner id: the supervisor's default owner id is host, pid and a random
    // suffix, and two processes must never share one (`SupervisorBuilder::owner_id`). Here that
    // is the child `a2`, owner id `<managed_by>-a2` (`spawn_child` names the owner, the output
    // and the call record after the child, so A's own record stays as A left it).
    let owner_a2 = spawn_child(setup, dir, children, "a2");
    let replicas_from = lease_reads(&timeline).len();
    let a2_log = children
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get("a2")
        .log
        .clone();
    wait_for(
        "the restarted A to run its supervisor",
        children,
        &["b", "a2"],
        async || {
            sample_lease(&owner_db, &t, &timeline).await;
            if std::fs::read_to_string(&a2_log)
                .unwrap_or_default()
                .contains(&format!("child {owner_a2}: running"))
            {
                Ok(())
            } else {
                Err(tail(&a2_log))
            }
        },
    )
    .await;

    // Every chip finishes, both replicas alive.
    let done = wait_for(
        "every chip in its QR window after the takeover, both replicas running",
        children,
        &["b", "a2"],
        async || {
            sample_lease(&owner_db, &t, &timeline).await;
            let seen = records(supervisor, &t, &chips).await;
            if seen
                .iter()
                .all(|r| r.observed.phase.name() == PhaseName::AwaitingLogin)
            {
                Ok(seen)
            } else {
                Err(describe_all(&seen))
            }
        },
    )
    .await;
    assert_eq!(done.len(), 2);

    // THE TIME WINDOW IS THE ASSERTION here (no event says "A2 will not claim or act"): for
    // REPLICA_WINDOW both replicas run side by side, the lease row read at every poll; then the
    // chips are still finished and the lease named one live replica at every read.
    let window_end = Instant::now() + REPLICA_WINDOW;
    while Instant::now() < window_end {
        assert_alive(children, "b");
        assert_alive(children, "a2");
        sample_lease(&owner_db, &t, &timeline).await;
        tokio::time::sleep(POLL).await;
    }
    assert_alive(children, "b");
    assert_alive(children, "a2");
    let still = records(supervisor, &t, &chips).await;
    assert!(
        still
            .iter()
            .all(|r| r.observed.phase.name() == PhaseName::AwaitingLogin),
        "every chip stays finished with both replicas running: {}",
        describe_all(&still)
    );
    sample_lease(&owner_db, &t, &timeline).await;
    let run_reads = lease_reads(&timeline);
    assert_owned_by_one_of(
        &run_reads[replicas_from..],
        &[owner_b.as_str(), owner_a2.as_str()],
    );

    // No mutation by a fenced owner, from the processes' own call records: no line written
    // while the lease row named another lease. A (killed) has no line after it lost the lease;
    // the restarted A never mutates the tenant B owns; B none outside its own lease.
    assert_no_fenced_mutation(
        children,
        &[
            ("a", owner_a.as_str()),
            ("b", owner_b.as_str()),
            ("a2", owner_a2.as_str()),
        ],
        &run_reads,
    );

    // One container per slot (every state counts: a second one, even stopped, is a duplicate).
    let selector = LabelSelector::new(labels::MANAGED_BY, &setup.managed_by);
    let containers = runtime
        .list(&selector)
        .await
        .expect("Docker lists the run's containers");
    let mut per_slot: BTreeMap<(String, String), usize> = BTreeMap::new();
    for c in &containers {
        *per_slot
            .entry((
                c.label(labels::TENANT).unwrap_or("?").to_owned(),
                c.label(labels::SLOT).unwrap_or("?").to_owned(),
            ))
            .or_insert(0) += 1;
    }
    assert!(
        !per_slot.is_empty() && per_slot.values().all(|n| *n == 1),
        "one container per slot: {per_slot:?}"
    );

    // Exactly one create answered 201 per session, in the simulator's own call log.
    let running = containers
        .iter()
        .find(|c| {
            c.label(labels::TENANT) == Some(t.as_str())
                && c.label(labels::SLOT) == Some("0")
                && c.state == ContainerState::Running
        })
        .unwrap_or_else(|| panic!("a running slot-0 container of {t}: {containers:?}"));
    let base_url = running
        .url
        .clone()
        .unwrap_or_else(|| panic!("the running container's address on {}", setup.network));
    let tenant_record = api
        .directory
        .get(&t)
        .await
        .unwrap_or_else(|e| panic!("reading tenant {t}: {e}"));
    let control = SimControlClient::new(
        base_url.as_str(),
        Some(waha_sim::ApiKey::new(
            tenant_record.secrets.container_api_key.expose_secret(),
        )),
    )
    .expect("a control client");
    let calls = control
        .calls()
        .await
        .unwrap_or_else(|e| panic!("the simulator's call log: {e}"));
    for c in &chips {
        let name = session(&t, c);
        let creates: Vec<u16> = calls
            .iter()
            .filter(|call| call.is_create() && call.session.as_deref() == Some(name.as_str()))
            .map(|call| call.status)
            .collect();
        assert_eq!(
            creates.iter().filter(|status| **status == 201).count(),
            1,
            "{name}: exactly one accepted create across both processes: {creates:?}"
        );
    }

    // The proxy leases kept their generation across the takeover (the same PostgreSQL store).
    for (c, before) in &generations {
        let after = api
            .proxies
            .lease(&t, c)
            .await
            .expect("the allocator reads leases")
            .unwrap_or_else(|| panic!("{t}/{c}: the lease survived the takeover"));
        assert_eq!(
            after.generation, *before,
            "{t}/{c}: the takeover kept the lease generation"
        );
    }

    // The quota counts each chip once.
    let usage = api.quota.usage(&t).await.expect("quota usage");
    assert_eq!(usage.chips, 2, "two chips in the quota: {usage:?}");
    assert_eq!(
        usage.running_sessions, 2,
        "two running slots, none reserved twice: {usage:?}"
    );

    // Every simulator's call log, every create call whatever its status: one create per chip,
    // the accepted one (see `assert_one_create_per_session`).
    let sim_calls = simulator_calls(&runtime, setup, api.directory.as_ref(), &t).await;
    assert_one_create_per_session(&sim_calls, &sessions, "after the SIGKILL");

    // No late mutation of the fenced A in the simulators' logs: every mutating call that
    // arrived after B's takeover was announced by a live replica (B or A2) in its call record.
    let (calls_b_path, calls_a2_path) = {
        let list = children.lock().unwrap_or_else(|p| p.into_inner());
        (list.get("b").calls.clone(), list.get("a2").calls.clone())
    };
    let late = unannounced_calls(&sim_calls, b_took_over_ms, &[calls_b_path, calls_a2_path]);
    assert!(
        late.is_empty(),
        "mutating calls reached WAHA after B's takeover (at {b_took_over_ms}) that neither B \
         nor the restarted A sent (a late call of the killed A): {late:?}"
    );

    // A2 leaves before the SIGSTOP part (at most three processes on the database, and the
    // takeover there must go to C): SIGKILL, as A. It owns nothing unless the lease moved to
    // it; then B takes the tenant back once A2's lease expires.
    {
        let mut list = children.lock().unwrap_or_else(|p| p.into_inner());
        let a2 = list.get_mut("a2");
        a2.process.kill().expect("SIGKILL to A2");
        a2.process.wait().expect("A2 reaped");
    }
    let token_b = wait_owner(&owner_db, &t, &owner_b, children, &["b"], &timeline).await;

    // -----------------------------------------------------------------------------------------
    // SIGSTOP past the lease expiry, then SIGCONT.
    // -----------------------------------------------------------------------------------------

    let (pid_b, calls_b) = {
        let list = children.lock().unwrap_or_else(|p| p.into_inner());
        let b = list.get("b");
        (b.pid(), b.calls.clone())
    };
    signal(pid_b, "-STOP");
    wait_for("B to be stopped", children, &["b"], async || {
        let states = thread_states(pid_b);
        if !states.is_empty() && states.iter().all(|s| *s == 'T' || *s == 't') {
            Ok(())
        } else {
            Err(format!("thread states {states:?}"))
        }
    })
    .await;

    let owner_c = spawn_child(setup, dir, children, "c");
    let token_c = wait_owner(&owner_db, &t, &owner_c, children, &["b", "c"], &timeline).await;
    // C's lease was in force at the latest when this read ended.
    let c_took_over_ms = last_read_ms(&timeline);
    assert!(
        token_c > token_b,
        "the takeover bumped the token ({token_b} -> {token_c})"
    );

    // B cannot write while stopped: the step log up to now is the mark.
    let marks: BTreeMap<ChipId, u64> = records(supervisor, &t, &chips)
        .await
        .into_iter()
        .map(|r| {
            let mark = r.steps.iter().map(|e| e.seq).max().unwrap_or(0);
            (r.key.chip.clone(), mark)
        })
        .collect();

    // A write that needs a WAHA mutation; C acts on it.
    let restarted = &chips[0];
    supervisor
        .restart_chip(&t, restarted)
        .await
        .unwrap_or_else(|e| panic!("{t}/{restarted}: restart_chip failed: {e}"));
    let mark = marks[restarted];
    let token_c_u64 = u64::try_from(token_c).expect("tokens are positive");
    wait_for(
        "C's restart of the chip",
        children,
        &["b", "c"],
        async || {
            let record = supervisor
                .get_chip(&t, restarted)
                .await
                .map_err(|e| e.to_string())?;
            if record.steps.iter().any(|e| {
                e.seq > mark
                    && e.step == StepKind::RestartSession
                    && e.outcome == StepOutcome::Succeeded
                    && e.owner_token == token_c_u64
            }) {
                Ok(())
            } else {
                Err(describe(&record))
            }
        },
    )
    .await;
    let t_ms = unix_ms(SystemTime::now());

    // Resume B, then watch it: THE TIME WINDOW IS THE ASSERTION here (no event says "B will do
    // nothing more"): for RESUMED_WINDOW after SIGCONT, B runs (alive, not stopped) and its call
    // record gains no line (checked as it happens, and once more at the end).
    signal(pid_b, "-CONT");
    wait_for("B to run again", children, &["b"], async || {
        let states = thread_states(pid_b);
        if !states.is_empty() && states.iter().all(|s| *s != 'T' && *s != 't') {
            Ok(())
        } else {
            Err(format!("thread states {states:?}"))
        }
    })
    .await;
    let window_end = Instant::now() + RESUMED_WINDOW;
    while Instant::now() < window_end {
        assert_alive(children, "b");
        sample_lease(&owner_db, &t, &timeline).await;
        let late = calls_after(&calls_b, t_ms);
        assert!(
            late.is_empty(),
            "B sent mutating WAHA calls after resuming (its lease had expired): {late:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    assert_alive(children, "b");
    let late = calls_after(&calls_b, t_ms);
    assert!(
        late.is_empty(),
        "B sent mutating WAHA calls after resuming (its lease had expired): {late:?}"
    );

    // B's writes were refused: no step entry under B's token past the marks.
    let token_b_u64 = u64::try_from(token_b).expect("tokens are positive");
    for record in records(supervisor, &t, &chips).await {
        let mark = marks[&record.key.chip];
        let by_b: Vec<u64> = record
            .steps
            .iter()
            .filter(|e| e.seq > mark && e.owner_token == token_b_u64)
            .map(|e| e.seq)
            .collect();
        assert!(
            by_b.is_empty(),
            "B's writes after the takeover landed (entries {by_b:?}): {}",
            describe(&record)
        );
    }

    // C still owns the tenant under its token: B took nothing back.
    assert_eq!(
        owner_lease(&owner_db, &t).await,
        Some((Some(owner_c.clone()), token_c)),
        "C keeps the tenant after B resumed"
    );

    // And C finishes the restart: the chip is back in its QR window.
    wait_for(
        "the restarted chip back in its QR window",
        children,
        &["c"],
        async || {
            let record = supervisor
                .get_chip(&t, restarted)
                .await
                .map_err(|e| e.to_string())?;
            if record.observed.phase.name() == PhaseName::AwaitingLogin {
                Ok(())
            } else {
                Err(describe(&record))
            }
        },
    )
    .await;

    // The whole run, once more. No process made a mutating call while the lease row named
    // another lease (B after the takeover by C included).
    sample_lease(&owner_db, &t, &timeline).await;
    assert_no_fenced_mutation(
        children,
        &[
            ("a", owner_a.as_str()),
            ("b", owner_b.as_str()),
            ("a2", owner_a2.as_str()),
            ("c", owner_c.as_str()),
        ],
        &lease_reads(&timeline),
    );
    // Every mutating call the simulators received after C's takeover was announced by C: none
    // is a call B had in flight when it was stopped, or sent once resumed.
    let sim_calls = simulator_calls(&runtime, setup, api.directory.as_ref(), &t).await;
    let calls_c_path = children
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get("c")
        .calls
        .clone();
    let late = unannounced_calls(&sim_calls, c_took_over_ms, &[calls_c_path]);
    assert!(
        late.is_empty(),
        "mutating calls reached WAHA after C's takeover (at {c_took_over_ms}) that C did not \
         send (a late call of the stopped B): {late:?}"
    );
    // And still one create per chip over the whole run: the restart created nothing.
    assert_one_create_per_session(&sim_calls, &sessions, "at the end of the run");

    drop(owner_db);
}
