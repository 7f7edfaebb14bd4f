//! Seed report 000 (issue 12) on the real thing: the supervisor on the Docker daemon with the
//! locally built `waha-sim` image (`FROM scratch`) and its chips in PostgreSQL.
//!
//! The world: a scratch PostgreSQL database migrated as a host does (tenant-isolation's set, then
//! the store's); `PgTenantDirectory`, `PgQuotaLedger` and `PgChipStore` on it (the chip rows refer
//! to the directory's `tenants` rows, so the directory must be the PostgreSQL one). The proxy
//! allocator keeps its leases in memory (`InMemoryLeaseStore`) over documentation addresses that
//! are never contacted. The pool runs on Docker with host-network addressing (every simulator
//! listens on 127.0.0.1 on a port of its own), so the simulators' webhooks reach this test's
//! receiver on 127.0.0.1, which verifies them with the tenant's HMAC key and hands them to the
//! supervisor's `observe`.
//!
//! Everything this file creates in Docker carries the managed-by label `ss-test-<run>` and is
//! removed at the end, also when the test body panics (the panic is re-raised after the
//! clean-up); the scratch database is dropped likewise. Every wait polls under a deadline; no
//! outcome is decided by a fixed sleep. Secrets are never printed. These tests FAIL (never skip)
//! when Docker or PostgreSQL is not available.
#![cfg(all(feature = "docker", feature = "postgres"))]

mod shared;
mod support;

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use container_pool::{
    AddressingPolicy, ContainerRuntime, DockerRuntime, EnvVar, InMemoryPortStore, TenantEndpoint,
    TenantPool,
};
use futures::FutureExt;
use proxy_allocator::InMemoryLeaseStore;
use session_supervisor::store::PgChipStore;
use session_supervisor::{
    ChipSpec, ChipStore, Phase, PhaseName, QrCode, QrFormat, StepKind, StepOutcome, Supervisor,
    SupervisorConfig, SupervisorHandle, SupervisorParts, SystemClock,
};
use tenant_isolation::pg::{self, PgQuotaLedger, PgTenantDirectory};
use tenant_isolation::{ChipId, PlanLimits, QuotaLedger, TenantDirectory, TenantId};
use waha_client::webhook::WebhookEvent;
use waha_client::{NewSession, SessionConfig, WahaApi, WahaClient};
use waha_sim::SimControlClient;

use shared::docker::{docker_pool_config, docker_with_sim_image, remove_docker_leftovers, run_id};
use shared::pg::{
    app_db, app_url, end_app_connections, migrated_admin, on_database, pool_options, scratch,
};
use shared::{
    SupervisorTimings, create_tenant, fake_proxies, http_clients, supervisor_config, tenant_pool,
};
use support::{chip, describe, ms, secs, session, tenant, wait_phase};

/// The longest any single wait of this file may take.
const DEADLINE: Duration = Duration::from_secs(90);

/// How often a polled condition is looked at again.
const POLL: Duration = Duration::from_millis(100);

/// The sessions the seed report found in a reused volume.
const STALE: [&str; 2] = ["default", "chip_test_1"];

/// The PNG signature.
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

// ---------------------------------------------------------------------------------------------
// PostgreSQL (as in `pg_store.rs`).
// ---------------------------------------------------------------------------------------------

/// Pools of at most this many connections.
const POOL_SIZE: usize = 4;

/// The PostgreSQL side of the world, on a migrated scratch database.
struct Pg {
    directory: Arc<dyn TenantDirectory>,
    quota: Arc<dyn QuotaLedger>,
    store: Arc<PgChipStore>,
}

async fn migrated(db: &scratch::ScratchDb) -> (Pg, String) {
    let options = pool_options(POOL_SIZE);
    let admin = migrated_admin(&db.url, &options, &[PgChipStore::MIGRATIONS]).await;
    let app_url = on_database(&app_url(), &db.name);
    let tenant_db = app_db(&app_url, &options).await;
    let owner = pg::build_pool(&db.url, &options).expect("DATABASE_URL is a valid URL");
    let directory: Arc<dyn TenantDirectory> = Arc::new(PgTenantDirectory::new(admin));
    let quota: Arc<dyn QuotaLedger> =
        Arc::new(PgQuotaLedger::new(tenant_db.clone(), Arc::new(SystemClock)));
    let store = Arc::new(PgChipStore::new(tenant_db, owner).with_clock(Arc::new(SystemClock)));
    (
        Pg {
            directory,
            quota,
            store,
        },
        app_url,
    )
}

// ---------------------------------------------------------------------------------------------
// Docker (as in container-pool's `tests/docker.rs`).
// ---------------------------------------------------------------------------------------------

/// A pool on Docker: host-network addressing on 127.0.0.1 (ports from `ports`), volumes on,
/// small containers, the simulator's timings shortened (first QR after 1 s of wall-clock time;
/// the QR window then lasts 100 s), and `faults` as `SIM_*` variables.
fn docker_pool(
    runtime: &Arc<DockerRuntime>,
    image: &str,
    managed_by: &str,
    ports: &Arc<InMemoryPortStore>,
    directory: &Arc<dyn TenantDirectory>,
    startup_deadline: Duration,
    faults: &[(&str, String)],
) -> Arc<TenantPool> {
    let mut config = docker_pool_config(
        image,
        managed_by,
        // Below the ephemeral ports (32768+); the allocator skips ports something else holds.
        AddressingPolicy::loopback_host_network(23_000..=23_199, ports.clone()),
        startup_deadline,
        secs(1),
    );
    for (name, value) in faults {
        config.extra_env.push(EnvVar::plain(*name, value.clone()));
    }
    tenant_pool(runtime.clone(), directory, config)
}

// ---------------------------------------------------------------------------------------------
// WAHA helpers.
// ---------------------------------------------------------------------------------------------

fn waha(endpoint: &TenantEndpoint) -> WahaClient {
    WahaClient::new(endpoint.base_url.clone(), endpoint.api_key.clone()).expect("a WAHA client")
}

fn sim_control(endpoint: &TenantEndpoint) -> SimControlClient {
    SimControlClient::new(
        endpoint.base_url.as_str(),
        Some(waha_sim::ApiKey::new(endpoint.api_key.expose_secret())),
    )
    .expect("a control client")
}

/// The session names the server behind `endpoint` lists, sorted; polled under the deadline
/// (a booting server answers 400 meanwhile).
async fn session_names(endpoint: &TenantEndpoint) -> Vec<String> {
    let client = waha(endpoint);
    let deadline = Instant::now() + DEADLINE;
    loop {
        match client.list_sessions(true).await {
            Ok(sessions) => {
                let mut names: Vec<String> = sessions.into_iter().map(|s| s.name).collect();
                names.sort();
                return names;
            }
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "{}: sessions never listed within {DEADLINE:?}: {error}",
                    endpoint.container_name
                );
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether `needle` appears in `hay` in order (not necessarily adjacent).
fn is_subsequence(needle: &[StepKind], hay: &[StepKind]) -> bool {
    let mut rest = hay.iter();
    needle.iter().all(|wanted| rest.any(|step| step == wanted))
}

// ---------------------------------------------------------------------------------------------
// The webhook receiver (as in `support`, for one supervisor).
// ---------------------------------------------------------------------------------------------

type Observer = Arc<Mutex<Option<Supervisor>>>;

#[derive(Clone)]
struct Receiver {
    directory: Arc<dyn TenantDirectory>,
    observer: Observer,
}

/// `POST /webhooks/{tenant}`: verify with the tenant's HMAC key over the raw body, then
/// `observe`.
async fn receive(
    State(receiver): State<Receiver>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Ok(tenant) = TenantId::new(tenant) else {
        return StatusCode::NOT_FOUND;
    };
    let Ok(record) = receiver.directory.get(&tenant).await else {
        return StatusCode::NOT_FOUND;
    };
    let Ok(event) = WebhookEvent::from_signed(&record.secrets.webhook_hmac_key, &headers, &body)
    else {
        return StatusCode::UNAUTHORIZED;
    };
    let supervisor = receiver
        .observer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let Some(supervisor) = supervisor else {
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    match supervisor.observe(&tenant, &event).await {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Starts the receiver on 127.0.0.1; returns the webhook URL template.
async fn start_receiver(directory: Arc<dyn TenantDirectory>, observer: Observer) -> String {
    let app = axum::Router::new()
        .route("/webhooks/{tenant}", post(receive))
        .with_state(Receiver {
            directory,
            observer,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port for the webhook receiver");
    let addr = listener.local_addr().expect("the receiver's address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/webhooks/{{tenant}}")
}

/// The test configuration (like `support`'s, with ownership timings that tolerate a loaded
/// 2-core machine talking to PostgreSQL).
fn test_config(webhook_url: String, step_timeout: Duration) -> SupervisorConfig {
    supervisor_config(
        webhook_url,
        SupervisorTimings {
            tick_interval: ms(50),
            step_timeout,
            lease_ttl: secs(6),
            renew_every: secs(1),
            safety_margin: secs(2),
            claim_interval: ms(200),
            shutdown_grace: secs(5),
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Seed report 000.
// ---------------------------------------------------------------------------------------------

/// Seed report 000 on Docker and PostgreSQL: 2 tenants × 2 chips; every container boots for
/// longer than a step may take (`/health` 200, session calls 400), and comes up on a reused
/// volume holding stale `default` and `chip_test_1` sessions. All 4 chips reach their QR window
/// with a PNG QR code, the stale sessions are gone, and the step log is in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000_two_tenants_two_chips_on_docker_and_postgres() {
    // Docker first: fail loudly when it is missing, and build the image (reused when unchanged).
    let (runtime, image) = docker_with_sim_image().await;
    let managed_by = format!("ss-test-{}", run_id());
    let db = scratch::ScratchDb::create().await;

    // What the clean-up must reach even when the body panics.
    let observer: Observer = Arc::default();
    let handle: Arc<tokio::sync::Mutex<Option<SupervisorHandle>>> = Arc::default();
    let app_url = Arc::new(Mutex::new(None::<String>));

    let outcome = AssertUnwindSafe(seed_000_body(
        runtime.clone(),
        image,
        managed_by.clone(),
        &db,
        observer.clone(),
        handle.clone(),
        app_url.clone(),
    ))
    .catch_unwind()
    .await;

    // Clean-up, whatever happened: stop the supervisor (so nothing re-creates containers), drop
    // every handle on the database, remove the containers and volumes, drop the database.
    if let Some(running) = handle.lock().await.take() {
        let _ = tokio::time::timeout(secs(30), running.shutdown()).await;
    }
    observer.lock().unwrap_or_else(|p| p.into_inner()).take();
    remove_docker_leftovers(&runtime, &managed_by, None).await;
    let app_url = app_url.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(url) = app_url {
        end_app_connections(&url).await;
    }
    db.drop_db().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn seed_000_body(
    runtime: Arc<DockerRuntime>,
    image: String,
    managed_by: String,
    db: &scratch::ScratchDb,
    observer: Observer,
    handle_slot: Arc<tokio::sync::Mutex<Option<SupervisorHandle>>>,
    app_url_slot: Arc<Mutex<Option<String>>>,
) {
    let (pg, app_url) = migrated(db).await;
    *app_url_slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(app_url);

    let tenants = [tenant("acme"), tenant("beta")];
    let chips: [ChipId; 2] = [chip("sales-1"), chip("sales-2")];
    for t in &tenants {
        create_tenant(pg.directory.as_ref(), t, PlanLimits::new(50, 50, 10_000)).await;
    }

    let ports = Arc::new(InMemoryPortStore::new());

    // 1. The reused volumes: an earlier life of each tenant's container (no faults) leaves the
    //    stale sessions in its volume; the container goes, the volume stays.
    let earlier = docker_pool(
        &runtime,
        &image,
        &managed_by,
        &ports,
        &pg.directory,
        secs(30),
        &[],
    );
    for t in &tenants {
        let endpoint = earlier
            .ensure(t)
            .await
            .unwrap_or_else(|e| panic!("{t}: the earlier container never got ready: {e}"));
        let client = waha(&endpoint);
        for name in STALE {
            client
                .create_session(&NewSession::new(name, SessionConfig::default()))
                .await
                .unwrap_or_else(|e| panic!("{t}: pre-creating {name} failed: {e}"));
        }
        // Stopped with a grace period (the simulator's final flush), then removed; the volume
        // is kept.
        runtime
            .stop(&endpoint.container, secs(10))
            .await
            .unwrap_or_else(|e| panic!("{t}: stopping the earlier container: {e}"));
        earlier
            .remove_tenant(t, false)
            .await
            .unwrap_or_else(|e| panic!("{t}: removing the earlier container: {e}"));

        // Precondition: a container re-created on that volume finds the stale sessions.
        let again = earlier
            .ensure(t)
            .await
            .unwrap_or_else(|e| panic!("{t}: the re-created container never got ready: {e}"));
        assert_ne!(again.container, endpoint.container, "{t}: a new container");
        let names = session_names(&again).await;
        for name in STALE {
            assert!(
                names.iter().any(|n| n == name),
                "{t}: precondition: the reused volume holds {name}: {names:?}"
            );
        }
        runtime
            .stop(&again.container, secs(10))
            .await
            .unwrap_or_else(|e| panic!("{t}: stopping the re-created container: {e}"));
        earlier
            .remove_tenant(t, false)
            .await
            .unwrap_or_else(|e| panic!("{t}: removing the re-created container: {e}"));
    }
    drop(earlier);

    // 2. The supervisor's pool: every container boots for `booting` (health 200, session calls
    //    400), longer than a step may take; the pool's readiness only checks health.
    let booting = secs(10);
    let startup_deadline = secs(4);
    let step_timeout = secs(5);
    assert!(
        step_timeout < booting && startup_deadline < step_timeout,
        "precondition: the booting window outlasts a step's deadline"
    );
    let pool = docker_pool(
        &runtime,
        &image,
        &managed_by,
        &ports,
        &pg.directory,
        startup_deadline,
        &[
            ("SIM_BOOTING_MS", booting.as_millis().to_string()),
            ("SIM_BOOTING_STATUS", "400".to_owned()),
            ("SIM_BOOTING_HEALTH", "200".to_owned()),
        ],
    );

    // The supervisor retries through its own policy.
    let waha_clients = http_clients();
    let webhook_url = start_receiver(pg.directory.clone(), observer.clone()).await;
    let supervisor = Supervisor::builder(SupervisorParts {
        directory: pg.directory.clone(),
        quota: pg.quota.clone(),
        pool: pool.clone(),
        proxies: fake_proxies(4, Arc::new(InMemoryLeaseStore::new())),
        store: pg.store.clone() as Arc<dyn ChipStore>,
        waha: waha_clients,
        clock: Arc::new(SystemClock),
    })
    .config(test_config(webhook_url, step_timeout))
    .build()
    .expect("the test configuration is valid");
    *observer.lock().unwrap_or_else(|p| p.into_inner()) = Some(supervisor.clone());
    let running = supervisor.run().await.expect("the supervisor runs");
    *handle_slot.lock().await = Some(running);

    for t in &tenants {
        for c in &chips {
            supervisor
                .create_chip(t, c, ChipSpec::qr())
                .await
                .unwrap_or_else(|e| panic!("{t}/{c}: create_chip failed: {e}"));
        }
    }

    // 3. 4 of 4 chips reach their QR window, each with a PNG QR code.
    let mut records = Vec::new();
    for t in &tenants {
        for c in &chips {
            let record = wait_phase(&supervisor, t, c, PhaseName::AwaitingLogin, DEADLINE).await;
            assert!(
                matches!(record.observed.phase, Phase::AwaitingLogin { .. }),
                "{}",
                describe(&record)
            );
            records.push(record);
        }
    }
    assert_eq!(records.len(), 4, "4 of 4 chips reach their QR window");
    for t in &tenants {
        for c in &chips {
            let deadline = Instant::now() + DEADLINE;
            let png = loop {
                let last = match supervisor.qr(t, c, QrFormat::Png).await {
                    Ok(QrCode::Png(bytes)) if bytes.starts_with(PNG_MAGIC) => break bytes,
                    Ok(QrCode::Png(bytes)) => format!("{} bytes, not a PNG", bytes.len()),
                    Ok(QrCode::Raw(_)) => "a raw value for a PNG request".to_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    Instant::now() < deadline,
                    "{t}/{c}: no PNG QR code within {DEADLINE:?}; last: {last}"
                );
                tokio::time::sleep(POLL).await;
            };
            assert!(png.len() > PNG_MAGIC.len(), "{t}/{c}: an empty PNG");
        }
    }

    // 4. The QR windows opened only after the boot (it outlasts a step's deadline), and booting
    //    never parked a chip.
    for record in &records {
        let Phase::AwaitingLogin { since, .. } = record.observed.phase else {
            unreachable!("waited for AwaitingLogin");
        };
        let waited = since.duration_since(record.created_at).unwrap_or_default();
        assert!(
            waited >= booting.mul_f64(0.8),
            "{}: the QR window opened after the boot ({waited:?} after creation, boot {booting:?})",
            record.key
        );
    }

    // 5. The stale sessions are gone (the sweep on pool Ready, or this explicit sweep), and each
    //    tenant's own sessions stay.
    for t in &tenants {
        let sweep = supervisor
            .sweep_stale_sessions(t)
            .await
            .unwrap_or_else(|| panic!("{t}: the running supervisor owns the tenant"));
        assert!(
            sweep.unreadable_containers.is_empty(),
            "{t}: every container was read: {sweep:?}"
        );
        assert!(
            sweep.kept_foreign.is_empty(),
            "{t}: nothing foreign is kept under the default policy: {sweep:?}"
        );
        let mut own: Vec<String> = chips.iter().map(|c| session(t, c)).collect();
        own.sort();
        for name in &own {
            assert!(
                sweep.kept.contains(name),
                "{t}: the chip's session {name} is kept: {sweep:?}"
            );
        }
        let endpoint = pool
            .ensure(t)
            .await
            .unwrap_or_else(|e| panic!("{t}: the tenant's container: {e}"));
        let deadline = Instant::now() + DEADLINE;
        loop {
            let names = session_names(&endpoint).await;
            if names == own {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{t}: the sessions left should be exactly {own:?}, got {names:?}"
            );
            tokio::time::sleep(POLL).await;
        }

        // Nothing was created while WAHA booted: every create in the call log was accepted,
        // exactly one per chip session.
        let calls = sim_control(&endpoint)
            .calls()
            .await
            .unwrap_or_else(|e| panic!("{t}: the simulator's call log: {e}"));
        let creates: Vec<(Option<String>, u16)> = calls
            .iter()
            .filter(|call| call.is_create())
            .map(|call| (call.session.clone(), call.status))
            .collect();
        assert!(
            creates.iter().all(|(_, status)| *status == 201),
            "{t}: every create was accepted: {creates:?}"
        );
        for name in &own {
            let accepted = creates
                .iter()
                .filter(|(s, status)| s.as_deref() == Some(name.as_str()) && *status == 201)
                .count();
            assert_eq!(accepted, 1, "{t}: one create of {name}: {creates:?}");
        }
    }

    // 6. Every step is in the store: the records read back from PostgreSQL carry the
    //    provisioning steps in order.
    let expected = [
        StepKind::ReserveRunningSlot,
        StepKind::PlaceChip,
        StepKind::EnsureContainer,
        StepKind::LeaseProxy,
        StepKind::EnsureSession,
        StepKind::StartSession,
    ];
    for t in &tenants {
        for c in &chips {
            let record = supervisor
                .get_chip(t, c)
                .await
                .unwrap_or_else(|e| panic!("{t}/{c}: read back from PostgreSQL: {e}"));
            let succeeded: Vec<StepKind> = record
                .steps
                .iter()
                .filter(|entry| entry.outcome == StepOutcome::Succeeded)
                .map(|entry| entry.step)
                .collect();
            assert!(
                is_subsequence(&expected, &succeeded),
                "the provisioning steps succeeded in order ({expected:?}): {}",
                describe(&record)
            );
            assert!(
                !matches!(record.observed.phase, Phase::Parked { .. }),
                "booting never parks: {}",
                describe(&record)
            );
        }
    }

    // The rows themselves, seen by the owner role (the admin policy sees every tenant's rows).
    let owner = scratch::owner_client(&db.url).await;
    let rows = owner
        .query(
            "SELECT tenant_id, chip_id, phase FROM supervisor_chips \
              ORDER BY tenant_id COLLATE \"C\", chip_id",
            &[],
        )
        .await
        .expect("the owner role reads supervisor_chips");
    let seen: Vec<(String, String, String)> = rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let mut want = Vec::new();
    for t in &tenants {
        for c in &chips {
            want.push((
                t.as_str().to_owned(),
                c.as_str().to_owned(),
                PhaseName::AwaitingLogin.as_str().to_owned(),
            ));
        }
    }
    want.sort();
    assert_eq!(
        seen, want,
        "one row per chip in PostgreSQL, in its QR window"
    );
    drop(owner);

    // An orderly stop (the clean-up would otherwise do it).
    if let Some(running) = handle_slot.lock().await.take() {
        let _report = running.shutdown().await;
    }
    observer.lock().unwrap_or_else(|p| p.into_inner()).take();
}
