//! Paced sending (issue 13, "Sending, paced"), in memory: real supervisors on in-process WAHA
//! simulators (`support`), a `MemorySendPacer` given through the builder, and the simulator's
//! call log to count what reached WAHA. Idempotency (also across a rebuilt supervisor on the
//! same outbox), the pacer before the quota, a typed quota refusal, the choreography's order,
//! and acks that move a send's record forward only (signed webhooks through the `Ingest`).
//!
//! Texts, chats and keys are never printed by the code under test; these tests print only
//! routes, statuses and kinds.

mod shared;
mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use session_supervisor::{
    ChipSpec, Choreography, EventBus, Ingest, IngestConfig, IngestOutcome, MemoryInbox,
    MemoryOutbox, Outbox, OutboxRecord, OutboxStatus, PhaseName, SendError, SendReceipt,
    SendRequest, Supervisor,
};
use tenant_isolation::{
    ChipId, HmacKey, MemorySendPacer, PaceLimit, PacerConfig, PlanLimits, QuotaLimit, SystemClock,
    TenantId, TenantStatus, WarmupCurve,
};
use waha_client::webhook::MessageAck;

use shared::signed;
use support::*;

// ---------------------------------------------------------------------------------------------
// Helpers of this file.
// ---------------------------------------------------------------------------------------------

const CUSTOMER: &str = "5511999999999@c.us";
const TEXT: &str = "Olá! Seu pedido saiu para entrega.";

const SEND_TEXT: &str = "/api/sendText";
const SEND_SEEN: &str = "/api/sendSeen";
const START_TYPING: &str = "/api/startTyping";
const STOP_TYPING: &str = "/api/stopTyping";

/// A pacer that lets `burst` sends of a chip through back to back, with no jitter and no gap
/// (the tests decide when it refuses).
fn pacer_config(burst: u32) -> PacerConfig {
    PacerConfig {
        chip_burst: burst,
        chip_refill_every: Duration::from_secs(3_600),
        tenant_burst: 100,
        tenant_refill_every: Duration::from_secs(1),
        warmup: WarmupCurve::flat(1_000).expect("a valid curve"),
        jitter_min: Duration::ZERO,
        jitter_max: Duration::ZERO,
        chip_min_gap: Duration::ZERO,
    }
}

/// A short choreography (the default one types for seconds).
fn quick_choreography() -> Choreography {
    Choreography {
        seen: true,
        typing_per_char: Duration::from_millis(1),
        typing_min: Duration::from_millis(10),
        typing_max: Duration::from_millis(50),
    }
}

fn request(key: &str) -> SendRequest {
    SendRequest::new(CUSTOMER, TEXT, key).with_choreography(Some(quick_choreography()))
}

/// A supervisor of `fleet` with this pacer and outbox, built but not running.
fn build(fleet: &Fleet, pacer: Arc<MemorySendPacer>, outbox: Arc<MemoryOutbox>) -> Supervisor {
    Supervisor::builder(fleet.parts())
        .event_bus(fleet.bus.clone() as Arc<dyn EventBus>)
        .config(fleet.config())
        .pacer(pacer)
        .outbox(outbox)
        .build()
        .expect("the test configuration is valid")
}

/// A running world: tenant `acme` with `limits`, chip `c1` working, a supervisor with a
/// pacer of `pacer_config` and a memory outbox.
struct World {
    fleet: Fleet,
    replica: Replica,
    pacer: Arc<MemorySendPacer>,
    outbox: Arc<MemoryOutbox>,
    acme: TenantId,
    c1: ChipId,
}

async fn world(limits: PlanLimits, pacer_config: PacerConfig) -> World {
    let fleet = Fleet::builder()
        .tenant_with_limits("acme", limits)
        .build()
        .await;
    let pacer = Arc::new(
        MemorySendPacer::new(pacer_config, Arc::new(SystemClock)).expect("a valid pacer config"),
    );
    let outbox = Arc::new(MemoryOutbox::new());
    let replica = fleet
        .start(build(&fleet, pacer.clone(), outbox.clone()))
        .await;
    let (acme, c1) = (tenant("acme"), chip("c1"));
    working_chip(&fleet, &replica, &acme, &c1, "5522999990001").await;
    World {
        fleet,
        replica,
        pacer,
        outbox,
        acme,
        c1,
    }
}

impl World {
    fn session(&self) -> String {
        session(&self.acme, &self.c1)
    }

    async fn send(&self, request: SendRequest) -> Result<SendReceipt, SendError> {
        self.replica.send_text(&self.acme, &self.c1, request).await
    }

    /// The routes of the message calls WAHA received for the chip's session after `mark`.
    async fn message_calls_after(&self, mark: u64) -> Vec<(String, u16)> {
        let control = self.fleet.control_for(&self.acme).await;
        control
            .calls_for(&self.session())
            .into_iter()
            .filter(|call| call.seq > mark)
            .filter(|call| {
                [SEND_TEXT, SEND_SEEN, START_TYPING, STOP_TYPING].contains(&call.route.as_str())
            })
            .map(|call| (call.route, call.status))
            .collect()
    }

    /// How many `sendText` calls WAHA received for the chip's session.
    async fn send_texts(&self) -> usize {
        self.message_calls_after(0)
            .await
            .iter()
            .filter(|(route, _)| route == SEND_TEXT)
            .count()
    }

    async fn sends_today(&self) -> u32 {
        self.fleet.usage(&self.acme).await.sends_today
    }

    async fn mark(&self) -> u64 {
        call_mark(&self.fleet.control_for(&self.acme).await)
    }
}

// ---------------------------------------------------------------------------------------------
// Idempotency.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_twice_sends_once_and_answers_the_same_receipt() {
    let w = world(GENEROUS, pacer_config(10)).await;

    let first = w
        .send(request("order-1"))
        .await
        .expect("the first send goes out");
    assert!(!first.replayed);
    assert!(
        matches!(first.status, OutboxStatus::Sent { .. }),
        "{first:?}"
    );
    let message_id = first
        .message_id
        .clone()
        .expect("WAHA answered a message id");

    let again = w
        .send(request("order-1"))
        .await
        .expect("a retry answers the receipt");
    assert!(again.replayed, "nothing was sent the second time");
    assert_eq!(again.message_id.as_deref(), Some(message_id.as_str()));
    assert_eq!(again.key, first.key);
    assert_eq!(w.send_texts().await, 1, "one key, one sendText");
    assert_eq!(w.sends_today().await, 1, "a replay is not counted");

    // The same key for another text is refused, and sends nothing.
    let other = SendRequest::new(CUSTOMER, "another text", "order-1")
        .with_choreography(Some(quick_choreography()));
    let conflict = w.send(other).await.expect_err("a reused key");
    assert!(
        matches!(conflict, SendError::IdempotencyConflict { .. }),
        "{conflict:?}"
    );
    assert!(!conflict.is_retryable());
    assert_eq!(w.send_texts().await, 1);

    let record = w
        .outbox
        .by_message_id(&w.acme, &message_id)
        .await
        .expect("the outbox reads")
        .expect("the record holds WAHA's message id");
    assert_eq!(record.key, "order-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_never_sends_twice_across_a_crash() {
    let w = world(GENEROUS, pacer_config(10)).await;
    let sent = w
        .send(request("order-sent"))
        .await
        .expect("sent before the crash");

    // The process "crashed" after writing a record and before WAHA answered: the record is
    // left `Pending`.
    let pending = OutboxRecord::pending(
        w.acme.clone(),
        "order-crash",
        w.c1.clone(),
        CUSTOMER,
        TEXT,
        SystemTime::now(),
    );
    w.outbox
        .begin(pending)
        .await
        .expect("the record is written");
    let sends_before = w.sends_today().await;
    let World {
        fleet,
        replica,
        pacer,
        outbox,
        acme,
        c1,
    } = w;
    replica.shutdown().await;

    // A new supervisor on the same outbox (and store, and WAHA).
    let rebuilt = build(&fleet, pacer.clone(), outbox.clone());
    let mark = call_mark(&fleet.control_for(&acme).await);

    let unknown = rebuilt
        .send_text(&acme, &c1, request("order-crash"))
        .await
        .expect_err("a pending key is never sent again");
    assert!(
        matches!(unknown, SendError::SendOutcomeUnknown { .. }),
        "{unknown:?}"
    );
    assert!(!unknown.is_retryable());

    let replay = rebuilt
        .send_text(&acme, &c1, request("order-sent"))
        .await
        .expect("a sent key answers its receipt");
    assert!(replay.replayed);
    assert_eq!(replay.message_id, sent.message_id);

    let control = fleet.control_for(&acme).await;
    let after: Vec<_> = control
        .calls_for(&session(&acme, &c1))
        .into_iter()
        .filter(|call| call.seq > mark)
        .map(|call| call.route)
        .collect();
    assert!(
        !after.iter().any(|route| route == SEND_TEXT),
        "no sendText after the rebuild: {after:?}"
    );
    assert_eq!(
        fleet.usage(&acme).await.sends_today,
        sends_before,
        "nothing was counted for the replays"
    );
}

// ---------------------------------------------------------------------------------------------
// Pacing, then the quota.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pacer_refusal_counts_nothing_against_the_daily_quota() {
    let w = world(GENEROUS, pacer_config(1)).await;
    w.send(request("order-1"))
        .await
        .expect("the burst's one send");
    assert_eq!(w.sends_today().await, 1);

    for _ in 0..3 {
        let paced = w
            .send(request("order-2"))
            .await
            .expect_err("the burst is spent");
        match &paced {
            SendError::Paced {
                retry_after, limit, ..
            } => {
                assert_eq!(*limit, PaceLimit::ChipBurst);
                assert!(!retry_after.is_zero());
            }
            other => panic!("expected Paced, got {other:?}"),
        }
        assert!(paced.is_retryable());
    }
    assert_eq!(w.sends_today().await, 1, "a paced send is never counted");
    assert_eq!(w.send_texts().await, 1);
    assert!(
        w.outbox
            .get(&w.acme, "order-2")
            .await
            .expect("the outbox reads")
            .is_none(),
        "a paced send leaves no record: the same key may be sent later"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_quota_refuses_with_a_typed_error() {
    let w = world(PlanLimits::new(5, 5, 1), pacer_config(10)).await;
    w.send(request("order-1"))
        .await
        .expect("the day's one send");
    let refused = w
        .send(request("order-2"))
        .await
        .expect_err("the plan's limit");
    match &refused {
        SendError::QuotaExceeded { limit, max, .. } => {
            assert_eq!(*limit, QuotaLimit::MaxSendsPerDay);
            assert_eq!(*max, 1);
        }
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    assert_eq!(refused.kind(), "quota_exceeded");
    assert_eq!(w.send_texts().await, 1);
    assert!(
        w.outbox
            .get(&w.acme, "order-2")
            .await
            .expect("the outbox reads")
            .is_none()
    );
}

// ---------------------------------------------------------------------------------------------
// The choreography.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seen_then_typing_then_the_send() {
    let w = world(GENEROUS, pacer_config(10)).await;

    let mark = w.mark().await;
    w.send(request("order-1")).await.expect("sent");
    let calls = w.message_calls_after(mark).await;
    let routes: Vec<&str> = calls.iter().map(|(route, _)| route.as_str()).collect();
    assert_eq!(
        routes,
        [SEND_SEEN, START_TYPING, STOP_TYPING, SEND_TEXT],
        "{calls:?}"
    );
    assert!(calls.iter().all(|(_, status)| *status == 201), "{calls:?}");

    // Without a choreography: the send alone.
    let mark = w.mark().await;
    w.send(SendRequest::new(CUSTOMER, TEXT, "order-2").with_choreography(None))
        .await
        .expect("sent");
    let calls = w.message_calls_after(mark).await;
    let routes: Vec<&str> = calls.iter().map(|(route, _)| route.as_str()).collect();
    assert_eq!(routes, [SEND_TEXT]);
}

// ---------------------------------------------------------------------------------------------
// Refusals before anything is counted (no running supervisor needed).
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn inactive_tenants_unknown_chips_and_chips_not_working_are_refused_typed() {
    let fleet = Fleet::builder().tenant("acme").tenant("beta").build().await;
    let pacer = Arc::new(
        MemorySendPacer::new(pacer_config(10), Arc::new(SystemClock)).expect("a valid config"),
    );
    let supervisor = build(&fleet, pacer, Arc::new(MemoryOutbox::new()));
    let (acme, beta, c1) = (tenant("acme"), tenant("beta"), chip("c1"));

    let missing = supervisor
        .send_text(&acme, &c1, request("k1"))
        .await
        .expect_err("no such chip");
    assert!(
        matches!(missing, SendError::ChipNotFound { .. }),
        "{missing:?}"
    );

    supervisor
        .create_chip(&acme, &c1, ChipSpec::qr())
        .await
        .expect("chip created");
    let pending = supervisor
        .send_text(&acme, &c1, request("k1"))
        .await
        .expect_err("not logged in");
    match &pending {
        SendError::NotReady { phase, .. } => assert_eq!(*phase, PhaseName::Pending),
        other => panic!("expected NotReady, got {other:?}"),
    }

    let invalid = supervisor
        .send_text(&acme, &c1, SendRequest::new(CUSTOMER, TEXT, ""))
        .await
        .expect_err("an empty key");
    assert!(
        matches!(invalid, SendError::InvalidRequest { .. }),
        "{invalid:?}"
    );

    fleet
        .directory
        .set_status(&beta, TenantStatus::Suspended)
        .await
        .expect("suspended");
    let inactive = supervisor
        .send_text(&beta, &c1, request("k1"))
        .await
        .expect_err("a suspended tenant");
    match &inactive {
        SendError::TenantInactive { status, .. } => assert_eq!(*status, TenantStatus::Suspended),
        other => panic!("expected TenantInactive, got {other:?}"),
    }
    assert_eq!(fleet.usage(&acme).await.sends_today, 0);
}

// ---------------------------------------------------------------------------------------------
// Acks move the record forward only.
// ---------------------------------------------------------------------------------------------

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(since.as_millis()).expect("milliseconds fit in u64")
}

/// A signed `message.ack` of a message the chip sent, as WAHA delivers it.
fn ack_body(
    tenant: &TenantId,
    chip: &ChipId,
    event_id: &str,
    message_id: &str,
    level: i64,
) -> Vec<u8> {
    let envelope = json!({
        "id": event_id,
        "timestamp": now_ms(),
        "event": "message.ack",
        "session": session(tenant, chip),
        "metadata": { "tenant": tenant.as_str(), "chip": chip.as_str() },
        "me": null,
        "engine": "NOWEB",
        "payload": {
            "id": message_id,
            "from": "5522999990001@c.us",
            "to": CUSTOMER,
            "fromMe": true,
            "ack": level,
        },
    });
    serde_json::to_vec(&envelope).expect("JSON")
}

/// Posts a signed ack of `message_id` at `level` to the ingest, as `tenant`'s container.
#[allow(clippy::too_many_arguments)]
async fn post_ack(
    ingest: &Ingest,
    key: &HmacKey,
    tenant: &TenantId,
    chip: &ChipId,
    event_id: &str,
    message_id: &str,
    level: i64,
) -> IngestOutcome {
    let body = ack_body(tenant, chip, event_id, message_id, level);
    ingest
        .ingest(tenant.as_str(), &signed(key, &body), &body)
        .await
}

/// The status of the outbox record holding `message_id`.
async fn status_of(outbox: &MemoryOutbox, tenant: &TenantId, message_id: &str) -> OutboxStatus {
    outbox
        .by_message_id(tenant, message_id)
        .await
        .expect("the outbox reads")
        .expect("the record")
        .status
}

#[tokio::test]
async fn acks_move_a_sends_record_forward_only() {
    let fleet = Fleet::builder().tenant("acme").build().await;
    let pacer = Arc::new(
        MemorySendPacer::new(pacer_config(10), Arc::new(SystemClock)).expect("a valid config"),
    );
    let outbox = Arc::new(MemoryOutbox::new());
    let supervisor = build(&fleet, pacer, outbox.clone());
    let (acme, c1) = (tenant("acme"), chip("c1"));
    supervisor
        .create_chip(&acme, &c1, ChipSpec::qr())
        .await
        .expect("chip created");

    // A send WAHA accepted as `true_..._AAA`.
    let message_id = format!("true_{CUSTOMER}_AAA");
    let now = SystemTime::now();
    outbox
        .begin(OutboxRecord::pending(
            acme.clone(),
            "order-1",
            c1.clone(),
            CUSTOMER,
            TEXT,
            now,
        ))
        .await
        .expect("begun");
    outbox
        .finish(
            &acme,
            "order-1",
            OutboxStatus::Sent {
                ack: MessageAck::Server,
            },
            Some(message_id.clone()),
            now,
        )
        .await
        .expect("finished");

    let ingest = Ingest::new(
        supervisor.clone(),
        Arc::new(MemoryInbox::new()),
        IngestConfig::for_supervisor(supervisor.config()),
    )
    .expect("a valid ingest config");
    let key = fleet
        .directory
        .get(&acme)
        .await
        .expect("the tenant")
        .secrets
        .webhook_hmac_key;
    let device = post_ack(&ingest, &key, &acme, &c1, "evt_device", &message_id, 2).await;
    assert!(
        matches!(device, IngestOutcome::Accepted { .. }),
        "{device:?}"
    );
    assert_eq!(
        status_of(&outbox, &acme, &message_id).await,
        OutboxStatus::Sent {
            ack: MessageAck::Device
        }
    );

    // A late SERVER ack: stored, dropped as a regression, the record stays at DEVICE.
    let server = post_ack(&ingest, &key, &acme, &c1, "evt_server", &message_id, 1).await;
    assert!(server.is_success(), "{server:?}");
    assert_eq!(
        status_of(&outbox, &acme, &message_id).await,
        OutboxStatus::Sent {
            ack: MessageAck::Device
        }
    );

    let read = post_ack(&ingest, &key, &acme, &c1, "evt_read", &message_id, 3).await;
    assert!(matches!(read, IngestOutcome::Accepted { .. }), "{read:?}");
    assert_eq!(
        status_of(&outbox, &acme, &message_id).await,
        OutboxStatus::Sent {
            ack: MessageAck::Read
        }
    );

    // The supervisor's own outbox is the one the ingest moved.
    assert_eq!(
        supervisor
            .outbox()
            .by_message_id(&acme, &message_id)
            .await
            .expect("the outbox reads")
            .map(|record| record.status),
        Some(OutboxStatus::Sent {
            ack: MessageAck::Read
        })
    );
}
