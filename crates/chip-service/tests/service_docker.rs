//! chip-service's REST flow once on real Docker and PostgreSQL (issue 14, "Tests"): the
//! production backend (`CHIPSERVICE_BACKEND=docker`), configured the way the binary is (the
//! variables go through `ServiceConfig::from_lookup`) and run by `run_on_listener`, the
//! binary's own run loop. Create a tenant, create a chip, its QR code as PNG and raw, a scan,
//! WORKING, a send with an idempotency key (replayed without a second send), the message acked
//! to read; then the rows in PostgreSQL (the chip, the API token's hash, this replica's owner
//! lease) and a graceful stop that releases the lease.
//!
//! The world:
//! - a scratch PostgreSQL database (tenant-isolation's `ScratchDb` and session-supervisor's
//!   PostgreSQL test helpers, included from their single sources rather than copied), which
//!   the service migrates itself at startup, as in production;
//! - the project's `FROM scratch` `waha-sim` image, built (or reused when unchanged) by
//!   waha-sim's own library function through session-supervisor's Docker test helper, run
//!   as the WAHA image;
//! - the containers on Docker's host network (`CHIPSERVICE_DOCKER_ADDRESSING=host-network`,
//!   each simulator on 127.0.0.1 at a port of its own), so their webhooks reach the service
//!   listening on 127.0.0.1: a container on a bridge network could not reach the host's
//!   loopback. The listener is bound first, so the webhook base URL names its port;
//! - proxies on documentation addresses (203.0.113.x), never contacted (the simulator does not
//!   dial out), with the proxy-health task off.
//!
//! The scan goes through the simulator's control API over HTTP (`SimControlClient`), at the
//! container's address (from Docker's labels) with the tenant's key (from the directory).
//!
//! Settings come from the environment `scripts/test-env.sh` prints: `DATABASE_URL` (the owner
//! role), `APP_DATABASE_URL` (the application role) and `DOCKER_HOST`. Everything this test
//! creates in Docker carries the managed-by label `cs-test-<run>` and is removed at the end,
//! also when the body panics (the panic is re-raised after the clean-up); the scratch database
//! is dropped likewise. Every wait polls under a deadline, and the whole flow is bounded. It
//! FAILS (never skips) when Docker or PostgreSQL is missing.

mod common;

// What a test binary leaves unused of the shared helpers is not dead.
#[allow(dead_code)]
#[path = "../../session-supervisor/tests/shared/docker.rs"]
mod shared_docker;
#[allow(dead_code)]
#[path = "../../session-supervisor/tests/shared/pg.rs"]
mod shared_pg;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use chip_service::service::{ServiceConfig, TokenHash, run_on_listener, vars};
use container_pool::DockerRuntime;
use futures::FutureExt;
use reqwest::Method;
use serde_json::{Value, json};
use session_supervisor::ChipKey;
use tenant_isolation::pg::{AdminDb, PgTenantDirectory};
use tenant_isolation::{ChipId, TenantId};
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep, timeout};
use waha_sim::SessionStatus;

use common::{Api, CHAT, PNG_MAGIC, running_sim};
use shared_docker::{docker_with_sim_image, remove_docker_leftovers, run_id};
use shared_pg::{app_url, end_app_connections, on_database, pool_options, scratch};

/// This file's own admin token (the production backend's configuration), not
/// [`common::ADMIN`] (the embedded default's).
const ADMIN: &str = "docker-admin-token-0123456789abcdef0123456789abcdef";
const FINGERPRINT: &str = "docker-fingerprint-0123456789abcdef0123456789abcdef";

/// The longest any single wait of this file may take.
const DEADLINE: Duration = Duration::from_secs(120);

/// The bound of the whole flow, from the service's start to its stop.
const FLOW_DEADLINE: Duration = Duration::from_secs(360);

/// The ports the host-network containers get (below the ephemeral ports, apart from the
/// ranges of session-supervisor's and container-pool's Docker tests).
const HOST_PORTS: &str = "23600-23799";

/// Used by the shared Docker helpers.
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Used by the shared Docker helpers.
fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Polls the chip until `done` holds (within [`DEADLINE`]); answers its last view.
async fn wait_for_chip(
    api: &Api,
    token: &str,
    chip: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let answer = api.get(&format!("/v1/chips/{chip}"), Some(token)).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let view = answer.json();
        if done(&view) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "{chip}: {what} within {DEADLINE:?}; last seen {view}"
        );
        sleep(ms(250)).await;
    }
}

/// The service's settings, as the binary reads them from its environment.
fn service_config(
    port: u16,
    image: &str,
    managed_by: &str,
    db: &scratch::ScratchDb,
) -> ServiceConfig {
    let pairs: Vec<(&str, String)> = vec![
        (vars::ADMIN_TOKEN, ADMIN.to_owned()),
        (vars::LISTEN, format!("127.0.0.1:{port}")),
        (vars::LOG, "info".to_owned()),
        (vars::BACKEND, "docker".to_owned()),
        (vars::DATABASE_URL, db.url.clone()),
        (vars::APP_DATABASE_URL, on_database(&app_url(), &db.name)),
        (vars::DATABASE_POOL_SIZE, "4".to_owned()),
        (vars::WAHA_IMAGE, image.to_owned()),
        (vars::DOCKER_ADDRESSING, "host-network".to_owned()),
        (vars::HOST_PORTS, HOST_PORTS.to_owned()),
        (vars::MANAGED_BY, managed_by.to_owned()),
        (vars::WEBHOOK_BASE_URL, format!("http://127.0.0.1:{port}")),
        (
            vars::PROXIES,
            "http://203.0.113.10:3128 country=BR; http://203.0.113.11:3128 country=BR".to_owned(),
        ),
        (vars::PROXY_HEALTH, "off".to_owned()),
        (vars::FINGERPRINT_SECRET, FINGERPRINT.to_owned()),
        (vars::OWNER_ID, managed_by.to_owned()),
    ];
    let map: HashMap<&str, String> = pairs.into_iter().collect();
    ServiceConfig::from_lookup(|name| map.get(name).cloned())
        .unwrap_or_else(|e| panic!("the test's configuration is refused: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_flow_on_docker_and_postgres() {
    // Docker first: fail loudly when it is missing, and build the image (reused when
    // unchanged). Then PostgreSQL: the scratch database fails loudly likewise.
    let (runtime, image) = docker_with_sim_image().await;
    let managed_by = format!("cs-test-{}", run_id());
    let db = scratch::ScratchDb::create().await;
    let app_url = on_database(&app_url(), &db.name);

    let outcome = AssertUnwindSafe(timeout(
        FLOW_DEADLINE,
        body(runtime.clone(), image, managed_by.clone(), &db),
    ))
    .catch_unwind()
    .await;

    // Clean-up, whatever happened: the service is stopped (or dropped with the panicking
    // body); remove the containers and volumes, end the application role's connections
    // (the event bus's LISTEN among them), drop the database.
    remove_docker_leftovers(&runtime, &managed_by, None).await;
    end_app_connections(&app_url).await;
    db.drop_db().await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("the flow did not finish within {FLOW_DEADLINE:?}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

async fn body(
    runtime: std::sync::Arc<DockerRuntime>,
    image: String,
    managed_by: String,
    db: &scratch::ScratchDb,
) {
    // Bound first, so the webhook base URL names the port the service will serve on.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port");
    let addr = listener.local_addr().expect("its address");
    let config = service_config(addr.port(), &image, &managed_by, db);
    let (stop, stopped) = oneshot::channel::<()>();
    let mut service = Box::pin(run_on_listener(
        config,
        None,
        async move {
            let _ = stopped.await;
        },
        listener,
    ));

    // The flow runs while the service does; the service ending first is a failure.
    let api = Api::new(format!("http://{addr}"), Some(Duration::from_secs(30)));
    let flow = Box::pin(flow(api, &runtime, &managed_by, db));
    let owner_id = tokio::select! {
        ended = &mut service => panic!(
            "the service stopped before the flow finished: {}",
            match ended {
                Ok(report) => format!("it returned ({report})"),
                Err(error) => error.to_string(),
            }
        ),
        owner = flow => owner,
    };

    // A graceful stop: the lease is released.
    let _ = stop.send(());
    let report = timeout(Duration::from_secs(60), service)
        .await
        .expect("the service stops within 60 s")
        .unwrap_or_else(|e| panic!("the service's shutdown: {e}"));
    assert_eq!(report.released_tenants, 1, "{report}");
    let owner = scratch::owner_client(&db.url).await;
    let held: i64 = owner
        .query_one(
            "SELECT count(*) FROM supervisor_owner_leases WHERE owner_id = $1",
            &[&owner_id],
        )
        .await
        .expect("the owner role reads the leases")
        .get(0);
    assert_eq!(held, 0, "the stopped replica holds no lease");
}

/// The REST flow; answers the owner id the tenant's lease named.
async fn flow(
    api: Api,
    runtime: &DockerRuntime,
    managed_by: &str,
    db: &scratch::ScratchDb,
) -> String {
    // Ready once the backend migrated, connected and started (requests wait in the listen
    // queue meanwhile, and one that times out is asked again).
    let deadline = Instant::now() + DEADLINE;
    loop {
        let last = match api
            .http
            .get(format!("{}/readyz", api.base))
            .timeout(secs(10))
            .send()
            .await
        {
            Ok(response) if response.status().as_u16() == 200 => break,
            Ok(response) => format!("answered {}", response.status()),
            Err(error) => format!("no answer: {error}"),
        };
        assert!(
            Instant::now() < deadline,
            "/readyz within {DEADLINE:?}: {last}"
        );
        sleep(ms(250)).await;
    }
    assert_eq!(api.get("/healthz", None).await.json()["status"], "ok");

    // The tenant (admin) and its token.
    let created = api
        .post(
            "/v1/tenants",
            Some(ADMIN),
            Some(json!({
                "id": "acme",
                "limits": {"max_chips": 5, "max_running_sessions": 5, "max_sends_per_day": 100},
            })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let token = created.json()["api_token"]
        .as_str()
        .expect("a token")
        .to_owned();
    assert!(token.starts_with("cft_acme_"));
    assert_eq!(api.get("/v1/chips", None).await.status, 401);
    let acme = TenantId::new("acme").unwrap();

    // The chip.
    let spec =
        json!({"id": "sales-1", "login": "qr", "phone": "5511999990001", "proxy_country": "BR"});
    let chip = api.post("/v1/chips", Some(&token), Some(spec)).await;
    assert_eq!(chip.status, 201, "{}", chip.text());
    assert_eq!(chip.json()["desired"], "running");

    // Its QR window, on a real container: the QR code as PNG and raw.
    wait_for_chip(&api, &token, "sales-1", "awaiting a QR scan", |c| {
        c["phase"] == "awaiting_login" && c["login_offer"]["kind"] == "qr"
    })
    .await;
    let deadline = Instant::now() + DEADLINE;
    let (png, raw) = loop {
        let png = api.get("/v1/chips/sales-1/qr", Some(&token)).await;
        let raw = api.get("/v1/chips/sales-1/qr/raw", Some(&token)).await;
        if png.status == 200 && raw.status == 200 {
            break (png, raw);
        }
        assert!(
            Instant::now() < deadline,
            "QR: {} {} / {} {}",
            png.status,
            png.text(),
            raw.status,
            raw.text()
        );
        sleep(ms(250)).await;
    };
    assert_eq!(
        png.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("image/png")
    );
    assert!(png.body.starts_with(PNG_MAGIC), "a PNG image");
    assert!(
        raw.json()["value"]
            .as_str()
            .is_some_and(|value| !value.is_empty()),
        "a raw QR value"
    );

    // The phone scans, through the simulator's control API in the container.
    let directory = PgTenantDirectory::new(
        AdminDb::connect(&db.url, &pool_options(2)).expect("DATABASE_URL is a valid URL"),
    );
    let session = ChipKey::new(acme.clone(), ChipId::new("sales-1").unwrap()).session_name();
    let deadline = Instant::now() + DEADLINE;
    let control = loop {
        let scanned = match running_sim(runtime, managed_by, &directory, &acme)
            .await
            .map(|(control, _)| control)
        {
            Some(control) => {
                match control
                    .wait_for_status(session.as_str(), SessionStatus::ScanQrCode, secs(5))
                    .await
                {
                    Ok(_) => control
                        .scan(session.as_str())
                        .await
                        .map(|_| control)
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            None => Err("no running container yet".to_owned()),
        };
        match scanned {
            Ok(control) => break control,
            Err(error) => {
                assert!(Instant::now() < deadline, "the scan: {error}");
                sleep(ms(250)).await;
            }
        }
    };
    let working = wait_for_chip(&api, &token, "sales-1", "working", |c| {
        c["phase"] == "working"
    })
    .await;
    assert!(working["account"]["id"].is_string(), "{working}");

    // A send under an idempotency key; the same key again answers the same message without
    // a second send.
    let send = |text: &'static str| {
        let api = api.clone();
        let token = token.clone();
        async move {
            api.call(
                Method::POST,
                "/v1/chips/sales-1/messages",
                Some(&token),
                Some(json!({"chat": CHAT, "text": text, "choreography": false})),
                &[("Idempotency-Key", "order-1")],
            )
            .await
        }
    };
    let sent = send("hello from docker").await;
    assert_eq!(sent.status, 201, "{}", sent.text());
    assert_eq!(sent.json()["status"], "sent");
    let message_id = sent.json()["message_id"]
        .as_str()
        .expect("WAHA's message id")
        .to_owned();
    let replay = send("hello from docker").await;
    assert_eq!(replay.status, 200, "{}", replay.text());
    assert_eq!(replay.json()["replayed"], true);
    assert_eq!(replay.json()["message_id"], message_id.as_str());
    let reused = send("another text").await;
    assert_eq!(
        (reused.status, reused.code()),
        (409, "idempotency_conflict".to_owned())
    );
    let sends = control
        .calls_for(session.as_str())
        .await
        .expect("the simulator's call log")
        .into_iter()
        .filter(|call| call.route.starts_with("/api/sendText"))
        .count();
    assert_eq!(sends, 1, "one key, one sendText");

    // The message's status, moved forward by the simulator's acks (webhooks from the
    // container to the service, through the ingest and the PostgreSQL inbox and outbox).
    let path = format!("/v1/messages/{message_id}");
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        let answer = api.get(&path, Some(&token)).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let status = answer.json();
        if status["ack"] == "read" {
            break status;
        }
        assert!(Instant::now() < deadline, "acked to read: {status}");
        sleep(ms(250)).await;
    };
    assert_eq!(status["idempotency_key"], "order-1");
    assert_eq!(status["chip"], "sales-1");
    let by_key = api
        .get("/v1/messages?idempotency_key=order-1", Some(&token))
        .await;
    assert_eq!(by_key.json()["message_id"], message_id.as_str());

    // In PostgreSQL: the chip working, the token's hash (never the token), this replica's
    // owner lease.
    let owner = scratch::owner_client(&db.url).await;
    let phase: String = owner
        .query_one(
            "SELECT phase FROM supervisor_chips WHERE tenant_id = 'acme' AND chip_id = 'sales-1'",
            &[],
        )
        .await
        .expect("the chip's row")
        .get(0);
    assert_eq!(phase, "working");
    let stored: Vec<u8> = owner
        .query_one(
            "SELECT token_hash FROM chip_service_tokens WHERE tenant_id = 'acme'",
            &[],
        )
        .await
        .expect("the token's row")
        .get(0);
    assert_eq!(stored, TokenHash::of(&token).to_bytes().to_vec());
    let lease: Option<String> = owner
        .query_one(
            "SELECT owner_id FROM supervisor_owner_leases WHERE tenant_id = 'acme'",
            &[],
        )
        .await
        .expect("the tenant's lease")
        .get(0);
    assert_eq!(
        lease.as_deref(),
        Some(managed_by),
        "CHIPSERVICE_OWNER_ID names the owner"
    );
    managed_by.to_owned()
}
