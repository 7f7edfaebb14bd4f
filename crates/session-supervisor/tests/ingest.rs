//! The webhook ingest (issue 13, "Webhook ingest"), one test per step, with bodies the tests
//! sign themselves under the tenants' keys from the in-memory world's directory (`support`).
//! The supervisor under the ingest is built but not running: the ingest needs only its
//! directory, chip store, bus and clock. Secrets and bodies are never printed.

mod shared;
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use axum::http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use session_supervisor::{
    Admission, ChangeFilter, ChangeItem, ChangeStream, ChipChangeKind, ChipKey, ChipSpec,
    DropReason, EntryId, HandlerError, InboundBatch, InboundBuffer, InboundConfig, InboundHandle,
    InboundHandler, InboundRetry, Inbox, InboxEntry, InboxError, Ingest, IngestConfig,
    IngestOutcome, IngestRefusal, MemoryInbox, ReapplyReport, Supervisor, SystemClock,
};
use tenant_isolation::{ChipId, HmacKey, TenantId, TenantStatus};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::timeout;
use waha_client::webhook::{self, ALGORITHM_HEADER, MessageAck, SIGNATURE_HEADER};

use shared::signed;
use support::*;

// ---------------------------------------------------------------------------------------------
// Helpers of this file.
// ---------------------------------------------------------------------------------------------

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(since.as_millis()).expect("milliseconds fit in u64")
}

/// A webhook body under construction: WAHA's envelope, with the metadata chipfleet sets.
#[derive(Clone)]
struct Event {
    event: &'static str,
    session: String,
    id: Option<String>,
    timestamp_ms: Option<u64>,
    metadata: Value,
    payload: Value,
}

impl Event {
    fn new(tenant: &TenantId, chip: &ChipId, event: &'static str, payload: Value) -> Self {
        Event {
            event,
            session: session(tenant, chip),
            id: None,
            timestamp_ms: Some(now_ms()),
            metadata: json!({ "tenant": tenant.as_str(), "chip": chip.as_str() }),
            payload,
        }
    }

    fn id(mut self, id: &str) -> Self {
        self.id = Some(id.to_owned());
        self
    }

    fn at(mut self, timestamp_ms: Option<u64>) -> Self {
        self.timestamp_ms = timestamp_ms;
        self
    }

    fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }

    fn session(mut self, session: &str) -> Self {
        self.session = session.to_owned();
        self
    }

    fn body(&self) -> Vec<u8> {
        let mut envelope = json!({
            "event": self.event,
            "session": self.session,
            "metadata": self.metadata,
            "me": null,
            "engine": "NOWEB",
            "payload": self.payload,
        });
        if let Some(id) = &self.id {
            envelope["id"] = json!(id);
        }
        if let Some(timestamp) = self.timestamp_ms {
            envelope["timestamp"] = json!(timestamp);
        }
        serde_json::to_vec(&envelope).expect("JSON")
    }
}

const CUSTOMER: &str = "5511999999999@c.us";
const CHIP_NUMBER: &str = "5522999999999@c.us";

/// An incoming message's payload.
fn message(id: &str) -> Value {
    json!({
        "id": id,
        "timestamp": 1_700_000_000,
        "from": CUSTOMER,
        "fromMe": false,
        "to": CHIP_NUMBER,
        "body": "hello",
        "hasMedia": false,
    })
}

/// The ack of a message this chip sent.
fn ack(id: &str, level: i64) -> Value {
    json!({
        "id": id,
        "from": CHIP_NUMBER,
        "to": CUSTOMER,
        "fromMe": true,
        "ack": level,
    })
}

fn status(tenant: &TenantId, chip: &ChipId) -> Value {
    json!({ "name": session(tenant, chip), "status": "WORKING" })
}

/// The changes of these kinds waiting on `stream`, in order.
fn message_changes(stream: &mut ChangeStream) -> Vec<ChipChangeKind> {
    let mut kinds = Vec::new();
    while let Some(item) = stream.try_next() {
        match item {
            ChangeItem::Change(change) => {
                if let kind @ (ChipChangeKind::MessageReceived { .. }
                | ChipChangeKind::MessageStatus { .. }) = change.kind
                {
                    kinds.push(kind);
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    kinds
}

fn accepted(outcome: &IngestOutcome) -> bool {
    matches!(outcome, IngestOutcome::Accepted { .. })
}

fn dropped(outcome: &IngestOutcome, want: DropReason) -> bool {
    matches!(outcome, IngestOutcome::Dropped { reason } if *reason == want)
}

/// An inbox that fails while `down` is set (a database outage).
struct FlakyInbox {
    inner: Arc<MemoryInbox>,
    down: AtomicBool,
}

impl FlakyInbox {
    fn check(&self) -> Result<(), InboxError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(InboxError::Unavailable {
                reason: "test outage".to_owned(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Inbox for FlakyInbox {
    async fn admit(&self, entry: InboxEntry) -> Result<Admission, InboxError> {
        self.check()?;
        self.inner.admit(entry).await
    }

    async fn record_ack(
        &self,
        tenant: &TenantId,
        message_id: &str,
        ack: MessageAck,
    ) -> Result<bool, InboxError> {
        self.check()?;
        self.inner.record_ack(tenant, message_id, ack).await
    }

    async fn prune(&self, older_than: SystemTime) -> Result<u64, InboxError> {
        self.check()?;
        self.inner.prune(older_than).await
    }

    async fn mark_applied(&self, tenant: &TenantId, entry: EntryId) -> Result<(), InboxError> {
        self.check()?;
        self.inner.mark_applied(tenant, entry).await
    }

    async fn claim_unapplied(
        &self,
        received_before: SystemTime,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<(EntryId, InboxEntry)>, InboxError> {
        self.check()?;
        self.inner
            .claim_unapplied(received_before, now, limit)
            .await
    }
}

/// An in-memory world with tenants `acme` and `beta`, each with chip `c1`, and an ingest in
/// front of a (not running) supervisor.
struct Harness {
    fleet: Fleet,
    supervisor: Supervisor,
    memory: Arc<MemoryInbox>,
    ingest: Arc<Ingest>,
    acme: TenantId,
    beta: TenantId,
    c1: ChipId,
}

async fn harness() -> Harness {
    let memory = Arc::new(MemoryInbox::new());
    harness_with(memory.clone(), memory, |_| {}).await
}

async fn harness_with(
    memory: Arc<MemoryInbox>,
    inbox: Arc<dyn Inbox>,
    tune: impl FnOnce(&mut IngestConfig),
) -> Harness {
    let fleet = Fleet::builder().tenant("acme").tenant("beta").build().await;
    let supervisor = fleet.build_supervisor(fleet.config(), None);
    let (acme, beta, c1) = (tenant("acme"), tenant("beta"), chip("c1"));
    for owner in [&acme, &beta] {
        supervisor
            .create_chip(owner, &c1, ChipSpec::qr())
            .await
            .expect("chip created");
    }
    let mut config = IngestConfig::for_supervisor(supervisor.config());
    tune(&mut config);
    let ingest = Ingest::new(supervisor.clone(), inbox, config).expect("a valid ingest config");
    Harness {
        fleet,
        supervisor,
        memory,
        ingest: Arc::new(ingest),
        acme,
        beta,
        c1,
    }
}

impl Harness {
    async fn key(&self, tenant: &TenantId) -> HmacKey {
        self.fleet
            .directory
            .get(tenant)
            .await
            .expect("the tenant exists")
            .secrets
            .webhook_hmac_key
    }

    /// Posts `body` to `url_tenant`'s URL, signed under `key`.
    async fn post(&self, url_tenant: &str, key: &HmacKey, body: &[u8]) -> IngestOutcome {
        self.ingest
            .ingest(url_tenant, &signed(key, body), body)
            .await
    }

    /// Posts `body` as `tenant`'s container would: to its URL, under its key.
    async fn post_as(&self, tenant: &TenantId, body: &[u8]) -> IngestOutcome {
        let key = self.key(tenant).await;
        self.post(tenant.as_str(), &key, body).await
    }

    async fn subscribe(&self, tenant: &TenantId) -> ChangeStream {
        self.supervisor
            .subscribe(tenant, ChangeFilter::all())
            .await
            .expect("subscribed")
    }
}

// ---------------------------------------------------------------------------------------------
// Step 1: size.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_oversized_body_is_refused_and_nothing_is_stored() {
    let h = harness().await;
    let mut payload = message("big");
    payload["body"] = json!("x".repeat(IngestConfig::DEFAULT_MAX_BODY_BYTES));
    let body = Event::new(&h.acme, &h.c1, "message", payload)
        .id("evt_big")
        .body();
    assert!(body.len() > h.ingest.config().max_body_bytes);

    let outcome = h.post_as(&h.acme, &body).await;
    assert_eq!(
        outcome,
        IngestOutcome::Refused(IngestRefusal::TooLarge {
            limit: IngestConfig::DEFAULT_MAX_BODY_BYTES
        })
    );
    assert_eq!(outcome.http_status(), 413);
    assert!(h.memory.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Step 2: the tenant from the URL; the session name strictly, and the URL tenant's.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tenant_bs_session_under_tenant_as_url_and_key_is_refused() {
    let h = harness().await;
    let acme_key = h.key(&h.acme).await;
    // Tenant B's session (and metadata), under A's URL and signed with A's key.
    let body = Event::new(&h.beta, &h.c1, "message", message("m1"))
        .id("evt_1")
        .body();
    let outcome = h.post(h.acme.as_str(), &acme_key, &body).await;
    assert_eq!(
        outcome,
        IngestOutcome::Refused(IngestRefusal::ForeignSession)
    );
    // The same answer as a bad signature: an unsigned caller learns nothing about tenants.
    assert_eq!(outcome.http_status(), 401);

    // A name chipfleet never generates (seed report 000's `test_1`).
    let body = Event::new(&h.acme, &h.c1, "message", message("m2"))
        .session("test_1")
        .id("evt_2")
        .body();
    let outcome = h.post(h.acme.as_str(), &acme_key, &body).await;
    assert_eq!(
        outcome,
        IngestOutcome::Refused(IngestRefusal::ForeignSession)
    );

    // A URL that names no tenant, or an invalid one.
    let body = Event::new(&h.acme, &h.c1, "message", message("m3")).body();
    for url_tenant in ["nobody", "../acme", "ACME", ""] {
        let outcome = h.post(url_tenant, &acme_key, &body).await;
        assert!(
            matches!(
                outcome,
                IngestOutcome::Refused(
                    IngestRefusal::UnknownTenant | IngestRefusal::ForeignSession
                )
            ),
            "{url_tenant:?}: {outcome:?}"
        );
        assert!(!outcome.is_success());
    }
    assert!(h.memory.is_empty(), "nothing stored");
}

// ---------------------------------------------------------------------------------------------
// Step 3: the tenant's key; inactive tenants.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_body_signed_with_another_key_is_a_bad_signature() {
    let h = harness().await;
    let beta_key = h.key(&h.beta).await;
    let body = Event::new(&h.acme, &h.c1, "message", message("m1"))
        .id("evt_1")
        .body();
    let outcome = h.post(h.acme.as_str(), &beta_key, &body).await;
    assert_eq!(outcome, IngestOutcome::Refused(IngestRefusal::BadSignature));
    assert_eq!(outcome.http_status(), 401);

    // No signature at all.
    let outcome = h.ingest.ingest("acme", &HeaderMap::new(), &body).await;
    assert_eq!(outcome, IngestOutcome::Refused(IngestRefusal::BadSignature));

    // The right signature over other bytes (a body altered in transit).
    let acme_key = h.key(&h.acme).await;
    let headers = signed(&acme_key, &body);
    let altered = Event::new(&h.acme, &h.c1, "message", message("m2"))
        .id("evt_1")
        .body();
    let outcome = h.ingest.ingest("acme", &headers, &altered).await;
    assert_eq!(outcome, IngestOutcome::Refused(IngestRefusal::BadSignature));
    assert!(h.memory.is_empty(), "nothing stored");
}

#[tokio::test]
async fn during_a_key_rotation_the_previous_key_verifies_and_after_it_does_not() {
    let h = harness().await;
    let old = h.key(&h.acme).await;
    let directory = &h.fleet.directory;
    let secrets = directory.get(&h.acme).await.expect("acme").secrets;
    let rotating = secrets
        .begin_webhook_rotation(HmacKey::generate().expect("random"))
        .expect("no rotation in progress");
    directory
        .set_secrets(&h.acme, rotating.clone())
        .await
        .expect("rotation begun");
    let new = rotating.webhook_hmac_key.clone();

    // A session not moved yet signs with the old key; a moved one with the new key.
    let from_old = Event::new(&h.acme, &h.c1, "message", message("m_old"))
        .id("evt_old")
        .body();
    let outcome = h.post(h.acme.as_str(), &old, &from_old).await;
    assert!(accepted(&outcome), "the previous key verifies: {outcome:?}");
    let from_new = Event::new(&h.acme, &h.c1, "message", message("m_new"))
        .id("evt_new")
        .body();
    let outcome = h.post(h.acme.as_str(), &new, &from_new).await;
    assert!(accepted(&outcome), "the new key verifies: {outcome:?}");
    // Another tenant's key still does not.
    let beta_key = h.key(&h.beta).await;
    let forged = Event::new(&h.acme, &h.c1, "message", message("m_forged"))
        .id("evt_forged")
        .body();
    let outcome = h.post(h.acme.as_str(), &beta_key, &forged).await;
    assert_eq!(outcome, IngestOutcome::Refused(IngestRefusal::BadSignature));

    // Once every session has the new key, the previous one is forgotten.
    directory
        .set_secrets(&h.acme, rotating.finish_webhook_rotation())
        .await
        .expect("rotation finished");
    let late = Event::new(&h.acme, &h.c1, "message", message("m_late"))
        .id("evt_late")
        .body();
    let outcome = h.post(h.acme.as_str(), &old, &late).await;
    assert_eq!(
        outcome,
        IngestOutcome::Refused(IngestRefusal::BadSignature),
        "the old key no longer verifies"
    );
    let outcome = h.post(h.acme.as_str(), &new, &late).await;
    assert!(accepted(&outcome), "{outcome:?}");
}

#[tokio::test]
async fn a_suspended_tenants_webhooks_are_acknowledged_and_dropped() {
    let h = harness().await;
    h.fleet
        .directory
        .set_status(&h.acme, TenantStatus::Suspended)
        .await
        .expect("suspended");
    let body = Event::new(&h.acme, &h.c1, "message", message("m1"))
        .id("evt_1")
        .body();
    let outcome = h.post_as(&h.acme, &body).await;
    assert_eq!(
        outcome,
        IngestOutcome::Dropped {
            reason: DropReason::TenantInactive
        }
    );
    assert_eq!(outcome.http_status(), 200, "2xx: WAHA must stop retrying");
    assert!(h.memory.is_empty());

    // Verification comes first: a forged delivery for the suspended tenant is still refused.
    let beta_key = h.key(&h.beta).await;
    let outcome = h.post(h.acme.as_str(), &beta_key, &body).await;
    assert_eq!(outcome, IngestOutcome::Refused(IngestRefusal::BadSignature));

    // Reactivated: accepted again.
    h.fleet
        .directory
        .set_status(&h.acme, TenantStatus::Active)
        .await
        .expect("reactivated");
    assert!(accepted(&h.post_as(&h.acme, &body).await));
}

// ---------------------------------------------------------------------------------------------
// Step 4: parse and metadata.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_bodies_are_typed_refusals() {
    let h = harness().await;
    // Signed, routable, but the payload is not a message.
    let body = Event::new(&h.acme, &h.c1, "message", json!({ "id": 5 }))
        .id("evt_1")
        .body();
    let outcome = h.post_as(&h.acme, &body).await;
    let IngestOutcome::Refused(IngestRefusal::Malformed { detail }) = &outcome else {
        panic!("expected Malformed, got {outcome:?}");
    };
    assert!(detail.contains("payload"), "names the path: {detail}");
    assert_eq!(outcome.http_status(), 400);

    // Not JSON at all, and JSON without a session.
    for body in [&b"not json"[..], &br#"{"event":"message"}"#[..], &b""[..]] {
        let outcome = h.post_as(&h.acme, body).await;
        assert!(
            matches!(
                outcome,
                IngestOutcome::Refused(IngestRefusal::Malformed { .. })
            ),
            "{outcome:?}"
        );
    }
    assert!(h.memory.is_empty());
}

#[tokio::test]
async fn metadata_must_name_the_session_names_tenant_and_chip() {
    let h = harness().await;
    for metadata in [
        json!({ "tenant": "beta", "chip": "c1" }),
        json!({ "tenant": "acme", "chip": "c2" }),
        json!({ "chip": "other" }),
    ] {
        let body = Event::new(&h.acme, &h.c1, "session.status", status(&h.acme, &h.c1))
            .metadata(metadata)
            .id("evt_1")
            .body();
        let outcome = h.post_as(&h.acme, &body).await;
        assert_eq!(
            outcome,
            IngestOutcome::Refused(IngestRefusal::MetadataMismatch)
        );
        assert_eq!(outcome.http_status(), 403);
    }
    assert!(h.memory.is_empty());

    // Metadata left out (a session created before chipfleet set it) is accepted.
    let body = Event::new(&h.acme, &h.c1, "session.status", status(&h.acme, &h.c1))
        .metadata(json!({}))
        .id("evt_2")
        .body();
    assert!(accepted(&h.post_as(&h.acme, &body).await));
}

// ---------------------------------------------------------------------------------------------
// Step 5: freshness.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_replay_outside_the_window_is_stale_and_a_late_retry_inside_is_not() {
    let h = harness().await;
    let window = h.ingest.config().freshness;
    let window_ms = u64::try_from(window.as_millis()).expect("fits");
    assert!(
        window >= h.supervisor.config().webhook_retry_span(),
        "validated against the retry span"
    );

    let old = now_ms() - window_ms - 60_000;
    let body = Event::new(&h.acme, &h.c1, "message", message("m1"))
        .id("evt_old")
        .at(Some(old))
        .body();
    let outcome = h.post_as(&h.acme, &body).await;
    let IngestOutcome::Refused(IngestRefusal::Stale {
        age_secs,
        window_secs,
    }) = outcome
    else {
        panic!("expected Stale, got {outcome:?}");
    };
    assert_eq!(window_secs, window.as_secs());
    assert!(age_secs > window_secs);

    // Far in the future: refused too.
    let body = Event::new(&h.acme, &h.c1, "message", message("m2"))
        .id("evt_future")
        .at(Some(now_ms() + 3_600_000))
        .body();
    assert!(matches!(
        h.post_as(&h.acme, &body).await,
        IngestOutcome::Refused(IngestRefusal::Stale { .. })
    ));
    assert!(h.memory.is_empty());

    // WAHA's last retry after an outage: old, but inside the window.
    let late = now_ms() - window_ms + 60_000;
    let body = Event::new(&h.acme, &h.c1, "message", message("m3"))
        .id("evt_late")
        .at(Some(late))
        .body();
    assert!(accepted(&h.post_as(&h.acme, &body).await));
    // An older server sends no timestamp.
    let body = Event::new(&h.acme, &h.c1, "message", message("m4"))
        .id("evt_none")
        .at(None)
        .body();
    assert!(accepted(&h.post_as(&h.acme, &body).await));
}

#[tokio::test]
async fn a_window_shorter_than_the_retry_span_is_refused() {
    let fleet = Fleet::builder().tenant("acme").build().await;
    let supervisor = fleet.build_supervisor(fleet.config(), None);
    let span = supervisor.config().webhook_retry_span();
    assert!(!span.is_zero(), "the test configuration retries");
    let mut config = IngestConfig::for_supervisor(supervisor.config());
    config.freshness = span - Duration::from_secs(1);
    let error = Ingest::new(supervisor, Arc::new(MemoryInbox::new()), config).expect_err("refused");
    assert_eq!(error.setting(), "freshness");
}

// ---------------------------------------------------------------------------------------------
// Step 6: de-duplication.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_same_event_twice_and_three_times_is_accepted_once() {
    let h = harness().await;
    let body = Event::new(&h.acme, &h.c1, "session.status", status(&h.acme, &h.c1))
        .id("evt_1")
        .body();
    let first = h.post_as(&h.acme, &body).await;
    assert_eq!(
        first,
        IngestOutcome::Accepted {
            key: ChipKey::new(h.acme.clone(), h.c1.clone()),
            event: Some("evt_1".to_owned()),
        }
    );
    for _ in 0..2 {
        let again = h.post_as(&h.acme, &body).await;
        assert!(dropped(&again, DropReason::Duplicate), "{again:?}");
        assert_eq!(again.http_status(), 200);
    }
    assert_eq!(h.memory.len(), 1);

    // The same event id under another tenant is that tenant's own.
    let body = Event::new(&h.beta, &h.c1, "session.status", status(&h.beta, &h.c1))
        .id("evt_1")
        .body();
    assert!(accepted(&h.post_as(&h.beta, &body).await));
    assert_eq!(h.memory.len(), 2);
}

#[tokio::test]
async fn nowebs_double_delivery_of_one_message_is_accepted_once() {
    let h = harness().await;
    let mut changes = h.subscribe(&h.acme).await;
    let first = Event::new(&h.acme, &h.c1, "message", message("true_5511_ABC"))
        .id("evt_1")
        .body();
    let second = Event::new(&h.acme, &h.c1, "message", message("true_5511_ABC"))
        .id("evt_2")
        .body();
    assert!(accepted(&h.post_as(&h.acme, &first).await));
    let outcome = h.post_as(&h.acme, &second).await;
    assert!(dropped(&outcome, DropReason::Duplicate), "{outcome:?}");
    assert_eq!(h.memory.len(), 1);
    assert_eq!(
        message_changes(&mut changes),
        [ChipChangeKind::MessageReceived {
            chat: CUSTOMER.to_owned(),
            message_id: "true_5511_ABC".to_owned(),
        }],
        "one message, published once"
    );
}

// ---------------------------------------------------------------------------------------------
// Step 7: observe and publish; acks only move forward.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn out_of_order_acks_only_move_the_status_forward() {
    let h = harness().await;
    let mut changes = h.subscribe(&h.acme).await;
    let harness = &h;
    let post_ack = move |id: &'static str, level: i64| {
        let body = Event::new(
            &harness.acme,
            &harness.c1,
            "message.ack",
            ack("out_1", level),
        )
        .id(id)
        .body();
        async move { harness.post_as(&harness.acme, &body).await }
    };

    assert!(accepted(&post_ack("evt_a1", 3).await), "read first");
    let regression = post_ack("evt_a2", 2).await;
    assert!(
        dropped(&regression, DropReason::AckRegression),
        "{regression:?}"
    );
    assert_eq!(regression.http_status(), 200);
    let repeat = post_ack("evt_a3", 3).await;
    assert!(
        dropped(&repeat, DropReason::Duplicate),
        "the same level again: {repeat:?}"
    );
    assert!(accepted(&post_ack("evt_a4", 4).await), "played moves on");

    let status = |ack: MessageAck| ChipChangeKind::MessageStatus {
        chat: CUSTOMER.to_owned(),
        message_id: "out_1".to_owned(),
        ack,
    };
    assert_eq!(
        message_changes(&mut changes),
        [status(MessageAck::Read), status(MessageAck::Played)],
        "only forward moves are published"
    );
    assert_eq!(h.memory.ack_of(&h.acme, "out_1"), Some(MessageAck::Played));
    assert_eq!(
        h.memory.len(),
        3,
        "the regression is stored; the repeat is not"
    );
}

// ---------------------------------------------------------------------------------------------
// Step 8: the applied mark; a crash after the store.
// ---------------------------------------------------------------------------------------------

/// Stores `body` of `tenant`'s chip `c1` straight into the inbox with `keys` (as the ingest
/// derives them), received `age` ago, and applies nothing: a crash right after step 6.
async fn store_unapplied(
    h: &Harness,
    tenant: &TenantId,
    keys: &[&str],
    body: &[u8],
    age: Duration,
) -> EntryId {
    let admission = h
        .memory
        .admit(InboxEntry {
            tenant: tenant.clone(),
            chip: h.c1.clone(),
            keys: keys.iter().map(|key| (*key).to_owned()).collect(),
            received_at: SystemTime::now() - age,
            body: body.to_vec(),
        })
        .await
        .expect("stored");
    match admission {
        Admission::New { entry } => entry,
        other => panic!("a new entry, not {other:?}"),
    }
}

fn received(message_id: &str) -> ChipChangeKind {
    ChipChangeKind::MessageReceived {
        chat: CUSTOMER.to_owned(),
        message_id: message_id.to_owned(),
    }
}

#[tokio::test]
async fn every_delivery_the_ingest_acts_on_is_marked_applied() {
    let h = harness().await;
    let bodies = [
        Event::new(&h.acme, &h.c1, "message", message("m1"))
            .id("evt_m1")
            .body(),
        Event::new(&h.acme, &h.c1, "message.ack", ack("out_1", 3))
            .id("evt_a1")
            .body(),
        // A regression: dropped after it was stored and observed, and marked all the same.
        Event::new(&h.acme, &h.c1, "message.ack", ack("out_1", 2))
            .id("evt_a2")
            .body(),
        Event::new(&h.acme, &h.c1, "session.status", status(&h.acme, &h.c1))
            .id("evt_s1")
            .body(),
        // A chip the supervisor does not know: stored, not published, marked.
        Event::new(&h.acme, &chip("c9"), "message", message("m9"))
            .id("evt_m9")
            .body(),
    ];
    for body in &bodies {
        let outcome = h.post_as(&h.acme, body).await;
        assert!(outcome.is_success(), "{outcome:?}");
    }
    assert_eq!(h.memory.len(), bodies.len());
    assert_eq!(
        h.memory.unapplied(),
        0,
        "every stored delivery was marked applied"
    );
    assert_eq!(
        h.ingest
            .reapply_pending(Duration::ZERO, 100)
            .await
            .expect("a sweep"),
        ReapplyReport::default(),
        "nothing for the sweep"
    );
}

#[tokio::test]
async fn an_event_stored_but_never_applied_is_applied_by_the_sweep() {
    let h = harness().await;
    let mut changes = h.subscribe(&h.acme).await;
    let body = Event::new(&h.acme, &h.c1, "message", message("m_crash"))
        .id("evt_crash")
        .body();
    let entry = store_unapplied(
        &h,
        &h.acme,
        &["event:evt_crash", "message:m_crash"],
        &body,
        secs(60),
    )
    .await;
    assert!(
        message_changes(&mut changes).is_empty(),
        "stored, not applied: nothing was published"
    );

    assert_eq!(
        h.ingest
            .reapply_pending(secs(120), 10)
            .await
            .expect("a sweep"),
        ReapplyReport::default(),
        "within the grace the entry is left alone (an ingest may still be applying it)"
    );
    let report = h
        .ingest
        .reapply_pending(secs(30), 10)
        .await
        .expect("a sweep");
    assert_eq!(
        report,
        ReapplyReport {
            reapplied: 1,
            ..ReapplyReport::default()
        }
    );
    assert_eq!(
        message_changes(&mut changes),
        [received("m_crash")],
        "the sweep applied it: its MessageReceived is published"
    );
    assert_eq!(h.memory.is_applied(entry), Some(true));

    assert_eq!(
        h.ingest
            .reapply_pending(Duration::ZERO, 10)
            .await
            .expect("a sweep"),
        ReapplyReport::default(),
        "applied: a second sweep does nothing"
    );
    assert!(message_changes(&mut changes).is_empty());
    let retry = h.post_as(&h.acme, &body).await;
    assert!(
        dropped(&retry, DropReason::Duplicate),
        "applied: WAHA's retry is a duplicate: {retry:?}"
    );
    assert!(message_changes(&mut changes).is_empty());
    assert_eq!(h.memory.len(), 1);
}

#[tokio::test]
async fn a_retry_of_an_event_stored_but_never_applied_is_applied() {
    let h = harness().await;
    let mut changes = h.subscribe(&h.acme).await;
    let body = Event::new(&h.acme, &h.c1, "message", message("m_retry"))
        .id("evt_retry")
        .body();
    let entry = store_unapplied(
        &h,
        &h.acme,
        &["event:evt_retry", "message:m_retry"],
        &body,
        secs(60),
    )
    .await;

    // WAHA got no 2xx (the process died) and retries the same signed bytes, later than the
    // reapply grace.
    let retry = h.post_as(&h.acme, &body).await;
    assert_eq!(
        retry,
        IngestOutcome::Accepted {
            key: ChipKey::new(h.acme.clone(), h.c1.clone()),
            event: Some("evt_retry".to_owned()),
        },
        "applied, not dropped as a duplicate"
    );
    assert_eq!(message_changes(&mut changes), [received("m_retry")]);
    assert_eq!(h.memory.len(), 1, "nothing new stored");
    assert_eq!(
        h.memory.is_applied(entry),
        Some(true),
        "the stored entry is marked"
    );

    let third = h.post_as(&h.acme, &body).await;
    assert!(dropped(&third, DropReason::Duplicate), "{third:?}");
    assert!(message_changes(&mut changes).is_empty(), "published once");
    assert_eq!(
        h.ingest
            .reapply_pending(Duration::ZERO, 10)
            .await
            .expect("a sweep"),
        ReapplyReport::default()
    );
}

#[tokio::test]
async fn a_copy_arriving_while_the_first_is_being_applied_is_not_applied_twice() {
    let h = harness().await;
    let mut changes = h.subscribe(&h.acme).await;
    let body = Event::new(&h.acme, &h.c1, "message", message("m_twin"))
        .id("evt_twin")
        .body();
    // The first copy is stored and (as far as the inbox knows) still being applied.
    let entry = store_unapplied(
        &h,
        &h.acme,
        &["event:evt_twin", "message:m_twin"],
        &body,
        Duration::ZERO,
    )
    .await;
    let twin = Event::new(&h.acme, &h.c1, "message", message("m_twin"))
        .id("evt_twin_2")
        .body();
    let outcome = h.post_as(&h.acme, &twin).await;
    assert!(
        dropped(&outcome, DropReason::Duplicate),
        "NOWEB's second copy within the grace is left to the first: {outcome:?}"
    );
    assert!(
        message_changes(&mut changes).is_empty(),
        "not published twice"
    );
    assert_eq!(h.memory.is_applied(entry), Some(false));
    // Had the first delivery failed, the sweep applies it once the grace has passed.
    let report = h
        .ingest
        .reapply_pending(Duration::ZERO, 10)
        .await
        .expect("a sweep");
    assert_eq!(report.reapplied, 1, "{report:?}");
    assert_eq!(message_changes(&mut changes), [received("m_twin")]);
    assert_eq!(h.memory.is_applied(entry), Some(true));
}

#[tokio::test]
async fn a_reapplied_ack_whose_level_was_recorded_publishes_nothing() {
    let h = harness().await;
    let mut changes = h.subscribe(&h.acme).await;
    let body = Event::new(&h.acme, &h.c1, "message.ack", ack("out_9", 3))
        .id("evt_ack9")
        .body();
    let entry = store_unapplied(
        &h,
        &h.acme,
        &["event:evt_ack9", "ack:out_9:3"],
        &body,
        secs(60),
    )
    .await;
    // The crash came after the ack's level was recorded, before its status change was
    // published and the entry marked.
    assert!(
        h.memory
            .record_ack(&h.acme, "out_9", MessageAck::Read)
            .await
            .expect("recorded")
    );

    let retry = h.post_as(&h.acme, &body).await;
    assert!(
        dropped(&retry, DropReason::AckRegression),
        "the level is recorded already: {retry:?}"
    );
    assert_eq!(retry.http_status(), 200);
    assert!(
        message_changes(&mut changes).is_empty(),
        "a repeat of a recorded level publishes no status change"
    );
    assert_eq!(h.memory.ack_of(&h.acme, "out_9"), Some(MessageAck::Read));
    assert_eq!(h.memory.is_applied(entry), Some(true));
    let again = h.post_as(&h.acme, &body).await;
    assert!(dropped(&again, DropReason::Duplicate), "{again:?}");
}

#[tokio::test]
async fn the_sweep_marks_what_it_must_not_or_cannot_apply() {
    let h = harness().await;
    let mut acme_changes = h.subscribe(&h.acme).await;
    let mut beta_changes = h.subscribe(&h.beta).await;
    let acme_body = Event::new(&h.acme, &h.c1, "message", message("m_acme"))
        .id("evt_acme")
        .body();
    let beta_body = Event::new(&h.beta, &h.c1, "message", message("m_beta"))
        .id("evt_beta")
        .body();
    let acme = store_unapplied(
        &h,
        &h.acme,
        &["event:evt_acme", "message:m_acme"],
        &acme_body,
        secs(60),
    )
    .await;
    let beta = store_unapplied(
        &h,
        &h.beta,
        &["event:evt_beta", "message:m_beta"],
        &beta_body,
        secs(60),
    )
    .await;
    let garbled = store_unapplied(
        &h,
        &h.acme,
        &["event:evt_garbled"],
        br#"{"not":"a webhook"}"#,
        secs(60),
    )
    .await;
    h.fleet
        .directory
        .set_status(&h.beta, TenantStatus::Suspended)
        .await
        .expect("suspended");

    let report = h
        .ingest
        .reapply_pending(secs(30), 10)
        .await
        .expect("a sweep");
    assert_eq!(
        report,
        ReapplyReport {
            reapplied: 1,
            dropped_inactive: 1,
            unparsable: 1,
            deferred: 0,
        }
    );
    assert_eq!(report.claimed(), 3);
    assert_eq!(message_changes(&mut acme_changes), [received("m_acme")]);
    assert!(
        message_changes(&mut beta_changes).is_empty(),
        "a suspended tenant's webhook is dropped, as the ingest drops it"
    );
    for entry in [acme, beta, garbled] {
        assert_eq!(h.memory.is_applied(entry), Some(true), "entry {entry}");
    }
    assert_eq!(
        h.ingest
            .reapply_pending(Duration::ZERO, 10)
            .await
            .expect("a sweep"),
        ReapplyReport::default()
    );
}

#[tokio::test]
async fn the_spawned_sweep_applies_what_a_crash_left_and_stops() {
    let h = harness().await;
    let mut changes = h.subscribe(&h.acme).await;
    let body = Event::new(&h.acme, &h.c1, "message", message("m_boot"))
        .id("evt_boot")
        .body();
    let entry = store_unapplied(
        &h,
        &h.acme,
        &["event:evt_boot", "message:m_boot"],
        &body,
        // Older than the default grace (30 s).
        secs(60),
    )
    .await;

    let sweep = h.ingest.spawn_reapply(ms(20));
    assert!(sweep.is_running());
    let memory = h.memory.clone();
    eventually(secs(5), "the sweep applied the entry", move || {
        let memory = memory.clone();
        async move { (memory.is_applied(entry) == Some(true)).then_some(()) }
    })
    .await;
    sweep.shutdown().await;
    assert_eq!(message_changes(&mut changes), [received("m_boot")]);
}

// ---------------------------------------------------------------------------------------------
// The inbound buffer wired: the applied mark waits for the batch's final disposition.
// ---------------------------------------------------------------------------------------------

/// The host's agent: reports every batch on a channel, then (when gated) waits for a permit
/// of `gate`, then answers `answer`.
struct Agent {
    calls: mpsc::UnboundedSender<InboundBatch>,
    gate: Option<Arc<Semaphore>>,
    answer: Result<(), HandlerError>,
}

#[async_trait]
impl InboundHandler for Agent {
    async fn handle(&self, batch: InboundBatch) -> Result<(), HandlerError> {
        let _ = self.calls.send(batch);
        if let Some(gate) = &self.gate
            && let Ok(permit) = gate.acquire().await
        {
            permit.forget();
        }
        self.answer.clone()
    }
}

/// An ingest over the harness's supervisor and inbox with an inbound buffer wired: the buffer
/// hands batches to an [`Agent`] (its timer started when `spawn`), fast settings.
struct Wired {
    ingest: Ingest,
    buffer: InboundBuffer,
    handle: Option<InboundHandle>,
    calls: mpsc::UnboundedReceiver<InboundBatch>,
}

fn inbound_config() -> InboundConfig {
    InboundConfig {
        quiet: ms(50),
        retry: InboundRetry {
            attempts: 2,
            first_backoff: ms(10),
            max_backoff: ms(10),
        },
        ..InboundConfig::default()
    }
}

fn wired(
    h: &Harness,
    gate: Option<Arc<Semaphore>>,
    answer: Result<(), HandlerError>,
    spawn: bool,
) -> Wired {
    let (tx, calls) = mpsc::unbounded_channel();
    let agent = Arc::new(Agent {
        calls: tx,
        gate,
        answer,
    });
    let buffer =
        InboundBuffer::new(agent, inbound_config(), Arc::new(SystemClock)).expect("valid config");
    let handle = spawn.then(|| buffer.spawn());
    let ingest = Ingest::new(
        h.supervisor.clone(),
        h.memory.clone(),
        h.ingest.config().clone(),
    )
    .expect("a valid ingest config")
    .with_inbound(Arc::new(buffer.clone()));
    Wired {
        ingest,
        buffer,
        handle,
        calls,
    }
}

impl Wired {
    /// Posts `body` as `tenant`'s container would, to this ingest.
    async fn post_as(&self, h: &Harness, tenant: &TenantId, body: &[u8]) -> IngestOutcome {
        let key = h.key(tenant).await;
        self.ingest
            .ingest(tenant.as_str(), &signed(&key, body), body)
            .await
    }

    async fn next_call(&mut self) -> InboundBatch {
        timeout(secs(5), self.calls.recv())
            .await
            .expect("a handler call within the bound")
            .expect("the handler is alive")
    }

    async fn shutdown(mut self) {
        if let Some(handle) = self.handle.take() {
            timeout(secs(5), handle.shutdown())
                .await
                .expect("shutdown within the bound");
        }
    }
}

/// Waits until `entry` is marked applied.
async fn applied_eventually(h: &Harness, entry: EntryId, what: &str) {
    let memory = h.memory.clone();
    eventually(secs(5), what, move || {
        let memory = memory.clone();
        async move { (memory.is_applied(entry) == Some(true)).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_buffered_message_is_marked_applied_only_once_the_handler_took_it() {
    let h = harness().await;
    let gate = Arc::new(Semaphore::new(0));
    let mut w = wired(&h, Some(gate.clone()), Ok(()), true);
    let body = Event::new(&h.acme, &h.c1, "message", message("m_wait"))
        .id("evt_wait")
        .body();
    assert!(accepted(&w.post_as(&h, &h.acme, &body).await));
    let entry = EntryId::new(0);
    assert_eq!(h.memory.len(), 1);
    assert_eq!(
        h.memory.is_applied(entry),
        Some(false),
        "in the buffer: not applied yet"
    );

    let batch = w.next_call().await;
    assert_eq!(batch.messages.len(), 1);
    assert_eq!(batch.messages[0].id, "m_wait");
    tokio::time::sleep(ms(50)).await;
    assert_eq!(
        h.memory.is_applied(entry),
        Some(false),
        "the handler has not answered yet"
    );
    // WAHA's retry meanwhile is left to the delivery that stored it (the sweep's grace).
    let retry = w.post_as(&h, &h.acme, &body).await;
    assert!(dropped(&retry, DropReason::Duplicate), "{retry:?}");

    gate.add_permits(1);
    applied_eventually(&h, entry, "the entry marked once the handler answered Ok").await;
    assert_eq!(h.memory.unapplied(), 0);
    w.shutdown().await;
}

#[tokio::test]
async fn a_batch_given_up_on_a_permanent_error_is_marked_applied() {
    let h = harness().await;
    let mut w = wired(
        &h,
        None,
        Err(HandlerError::permanent("the agent refuses this chat")),
        true,
    );
    let body = Event::new(&h.acme, &h.c1, "message", message("m_refused"))
        .id("evt_refused")
        .body();
    assert!(accepted(&w.post_as(&h, &h.acme, &body).await));
    let entry = EntryId::new(0);
    let batch = w.next_call().await;
    assert_eq!(batch.messages[0].id, "m_refused");
    applied_eventually(&h, entry, "the entry marked once the batch was given up").await;
    // The mark comes after the last call: a retry would be on the channel by now.
    assert!(
        w.calls.try_recv().is_err(),
        "a permanent error is not retried"
    );
    assert_eq!(h.memory.unapplied(), 0);
    w.shutdown().await;
}

#[tokio::test]
async fn what_a_dead_processs_buffer_held_is_handed_over_again_from_the_inbox() {
    let h = harness().await;
    let mut changes = h.subscribe(&h.acme).await;
    // The first process: its buffer's timer never runs (it died before handing anything
    // over).
    let dead = wired(&h, None, Ok(()), false);
    let body = Event::new(&h.acme, &h.c1, "message", message("m_lost"))
        .id("evt_lost")
        .body();
    assert!(accepted(&dead.post_as(&h, &h.acme, &body).await));
    let entry = EntryId::new(0);
    assert_eq!(dead.buffer.pending(&h.acme), 1, "held in memory only");
    assert_eq!(h.memory.is_applied(entry), Some(false));
    assert_eq!(message_changes(&mut changes), [received("m_lost")]);
    // The process dies: its ingest and buffer go without a shutdown.
    drop(dead);

    // Another process on the same inbox and supervisor sweeps (grace zero: the test does not
    // wait for the real one).
    let mut alive = wired(&h, None, Ok(()), true);
    tokio::time::sleep(ms(5)).await;
    let report = alive
        .ingest
        .reapply_pending(Duration::ZERO, 10)
        .await
        .expect("a sweep");
    assert_eq!(
        report,
        ReapplyReport {
            reapplied: 1,
            ..ReapplyReport::default()
        }
    );
    let batch = alive.next_call().await;
    assert_eq!(batch.tenant, h.acme);
    assert_eq!(batch.chip, h.c1);
    assert_eq!(batch.chat, CUSTOMER);
    assert_eq!(batch.messages.len(), 1);
    assert_eq!(
        batch.messages[0].id, "m_lost",
        "at least once, from the inbox"
    );
    assert_eq!(
        message_changes(&mut changes),
        [received("m_lost")],
        "published again by the sweep"
    );
    applied_eventually(&h, entry, "the entry marked once the new handler took it").await;
    alive.shutdown().await;
}

#[tokio::test]
async fn the_sweep_grace_covers_what_the_buffer_may_hold() {
    let h = harness().await;
    let reapply_grace = h.ingest.config().reapply_grace;
    assert_eq!(
        h.ingest.sweep_grace(),
        reapply_grace,
        "no buffer: the configured grace"
    );

    let defaults = InboundConfig::default();
    let hold = defaults.max_hold();
    assert_eq!(
        hold,
        defaults.max_age
            + defaults.handler_timeout * defaults.retry.attempts
            + ms(500 + 1_000 + 2_000 + 4_000),
        "30 s collecting, 5 calls of 60 s, waits of 0.5, 1, 2 and 4 s"
    );
    assert_eq!(hold, ms(337_500));
    let (tx, _calls) = mpsc::unbounded_channel();
    let agent = Arc::new(Agent {
        calls: tx,
        gate: None,
        answer: Ok(()),
    });
    let buffer = InboundBuffer::new(agent, defaults, Arc::new(SystemClock)).expect("defaults");
    let ingest = Ingest::new(
        h.supervisor.clone(),
        h.memory.clone(),
        h.ingest.config().clone(),
    )
    .expect("a valid ingest config")
    .with_inbound(Arc::new(buffer));
    assert!(ingest.sweep_grace() >= hold);
    assert_eq!(
        ingest.sweep_grace(),
        reapply_grace.max(hold + Ingest::INBOUND_GRACE_MARGIN)
    );

    // Step 6 uses it too: NOWEB's second copy of a message stored 60 s ago (past the
    // configured grace, well within the buffer's hold) is left to the first.
    let first = Event::new(&h.acme, &h.c1, "message", message("m_slow"))
        .id("evt_slow")
        .body();
    let entry = store_unapplied(
        &h,
        &h.acme,
        &["event:evt_slow", "message:m_slow"],
        &first,
        secs(60),
    )
    .await;
    assert!(secs(60) > reapply_grace && secs(60) < ingest.sweep_grace());
    let twin = Event::new(&h.acme, &h.c1, "message", message("m_slow"))
        .id("evt_slow_2")
        .body();
    let key = h.key(&h.acme).await;
    let outcome = ingest.ingest("acme", &signed(&key, &twin), &twin).await;
    assert!(dropped(&outcome, DropReason::Duplicate), "{outcome:?}");
    assert_eq!(h.memory.is_applied(entry), Some(false));
    // Without a buffer the configured grace applies: the copy is applied.
    let outcome = h.post_as(&h.acme, &twin).await;
    assert!(accepted(&outcome), "{outcome:?}");
    assert_eq!(h.memory.is_applied(entry), Some(true));
}

// ---------------------------------------------------------------------------------------------
// A store outage, then recovery.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_inbox_outage_answers_retry_later_and_nothing_answered_2xx_is_lost() {
    let memory = Arc::new(MemoryInbox::new());
    let flaky = Arc::new(FlakyInbox {
        inner: memory.clone(),
        down: AtomicBool::new(false),
    });
    let h = harness_with(memory.clone(), flaky.clone(), |_| {}).await;
    let bodies: Vec<Vec<u8>> = (1..=5)
        .map(|n| {
            Event::new(&h.acme, &h.c1, "message", message(&format!("m{n}")))
                .id(&format!("evt_{n}"))
                .body()
        })
        .collect();
    let mut answered_2xx: Vec<&[u8]> = Vec::new();

    // Before the outage.
    let outcome = h.post_as(&h.acme, &bodies[0]).await;
    assert!(accepted(&outcome));
    answered_2xx.push(&bodies[0]);

    // The outage: WAHA is told to retry, nothing is stored.
    flaky.down.store(true, Ordering::SeqCst);
    for body in &bodies[1..3] {
        let outcome = h.post_as(&h.acme, body).await;
        assert!(
            matches!(outcome, IngestOutcome::RetryLater { .. }),
            "{outcome:?}"
        );
        assert_eq!(outcome.http_status(), 503);
    }
    assert_eq!(memory.len(), 1);

    // Recovery: WAHA's retries and new events arrive, with a duplicate of the first.
    flaky.down.store(false, Ordering::SeqCst);
    for body in [&bodies[1], &bodies[2], &bodies[0], &bodies[3], &bodies[4]] {
        let outcome = h.post_as(&h.acme, body).await;
        assert!(outcome.is_success(), "{outcome:?}");
        answered_2xx.push(body);
    }

    let stored: Vec<Vec<u8>> = memory.entries().into_iter().map(|e| e.body).collect();
    for body in &answered_2xx {
        assert!(
            stored.iter().any(|s| s.as_slice() == *body),
            "every delivery answered 2xx is in the inbox"
        );
    }
    assert_eq!(stored.len(), 5, "each event once");
}

// ---------------------------------------------------------------------------------------------
// The axum adapter.
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "axum")]
#[tokio::test]
async fn the_axum_router_answers_the_outcomes_http_statuses() {
    const LIMIT: usize = 4096;
    let memory = Arc::new(MemoryInbox::new());
    let h = harness_with(memory.clone(), memory, |config| {
        config.max_body_bytes = LIMIT;
    })
    .await;
    let app = session_supervisor::ingest_router(h.ingest.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port");
    let addr = listener.local_addr().expect("the address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client = reqwest::Client::new();
    let acme_key = h.key(&h.acme).await;
    let beta_key = h.key(&h.beta).await;
    let post = |tenant: &str, key: &HmacKey, body: Vec<u8>| {
        let request = client
            .post(format!("http://{addr}/webhooks/{tenant}"))
            .header(SIGNATURE_HEADER, webhook::sign(key, &body))
            .body(body);
        async move {
            request
                .send()
                .await
                .expect("the router answers")
                .status()
                .as_u16()
        }
    };

    let good = Event::new(&h.acme, &h.c1, "message", message("m1"))
        .id("evt_1")
        .body();
    assert_eq!(post("acme", &acme_key, good.clone()).await, 200);
    assert_eq!(
        post("acme", &acme_key, good.clone()).await,
        200,
        "duplicate"
    );
    assert_eq!(post("acme", &beta_key, good.clone()).await, 401);
    // acme's session under another tenant's URL is foreign before any lookup, and a tenant
    // the directory does not know is unknown: both answer like a bad signature, so tenant ids
    // cannot be enumerated without a key.
    assert_eq!(post("nobody", &acme_key, good.clone()).await, 401);
    let nobody = TenantId::new("nobody").expect("a tenant id");
    let unknown = Event::new(&nobody, &h.c1, "message", message("m9"))
        .id("evt_9")
        .body();
    assert_eq!(post("nobody", &acme_key, unknown).await, 401);
    let foreign = Event::new(&h.beta, &h.c1, "message", message("m2"))
        .id("evt_2")
        .body();
    assert_eq!(post("acme", &acme_key, foreign).await, 401);
    assert_eq!(post("acme", &acme_key, b"{\"nope\":1}".to_vec()).await, 400);
    let mut payload = message("m3");
    payload["body"] = json!("x".repeat(2 * LIMIT));
    let oversized = Event::new(&h.acme, &h.c1, "message", payload)
        .id("evt_3")
        .body();
    assert_eq!(post("acme", &acme_key, oversized).await, 413);
    assert_eq!(h.memory.len(), 1, "only the good delivery is stored");
}

// ---------------------------------------------------------------------------------------------
// Property: arbitrary bytes and headers.
// ---------------------------------------------------------------------------------------------

/// How a generated delivery is signed.
#[derive(Clone, Debug)]
enum Signature {
    None,
    Acme,
    Beta,
    OtherKey,
    Raw(Vec<u8>),
}

fn generated_body() -> impl Strategy<Value = Vec<u8>> {
    let structured = (
        prop::sample::select(vec![
            "cf_acme_c1",
            "cf_beta_c1",
            "cf_acme_c2",
            "test_1",
            "default",
            "cf_acme_",
        ]),
        prop::sample::select(vec![
            "message",
            "message.any",
            "message.ack",
            "session.status",
            "state.change",
            "x.unknown",
        ]),
        0u32..4,
        prop_oneof![
            Just(None::<u64>),
            Just(Some(now_ms())),
            any::<u64>().prop_map(Some)
        ],
        prop::sample::select(vec!["acme", "beta", ""]),
    )
        .prop_map(|(session, event, n, timestamp, meta_tenant)| {
            let payload = match event {
                "message" | "message.any" => message(&format!("m{n}")),
                "message.ack" => ack(&format!("m{n}"), i64::from(n)),
                "session.status" => json!({ "name": session, "status": "WORKING" }),
                _ => json!({ "n": n }),
            };
            let mut envelope = json!({
                "event": event,
                "session": session,
                "id": format!("evt_{n}"),
                "metadata": { "tenant": meta_tenant },
                "payload": payload,
            });
            if let Some(timestamp) = timestamp {
                envelope["timestamp"] = json!(timestamp);
            }
            serde_json::to_vec(&envelope).expect("JSON")
        });
    prop_oneof![prop::collection::vec(any::<u8>(), 0..512), structured,]
}

fn generated_signature() -> impl Strategy<Value = Signature> {
    prop_oneof![
        Just(Signature::None),
        Just(Signature::Acme),
        Just(Signature::Beta),
        Just(Signature::OtherKey),
        prop::collection::vec(any::<u8>(), 0..160).prop_map(Signature::Raw),
    ]
}

fn generated_tenant() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["acme", "beta", "nobody", "", "ACME", "../acme"])
            .prop_map(str::to_owned),
        ".{0,30}",
    ]
}

#[test]
fn arbitrary_bytes_and_headers_never_panic_and_store_only_what_verifies() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let h = runtime.block_on(harness());
    let mut keys: HashMap<String, HmacKey> = HashMap::new();
    for tenant in [&h.acme, &h.beta] {
        keys.insert(tenant.as_str().to_owned(), runtime.block_on(h.key(tenant)));
    }
    let other_key = HmacKey::new("not-a-tenants-key").expect("a key");

    let mut runner = TestRunner::new(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (
        generated_tenant(),
        generated_body(),
        generated_signature(),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..16)),
    );
    runner
        .run(&strategy, |(url_tenant, body, signature, algorithm)| {
            let mut headers = HeaderMap::new();
            let value = match &signature {
                Signature::None => None,
                Signature::Acme => Some(webhook::sign(&keys["acme"], &body).into_bytes()),
                Signature::Beta => Some(webhook::sign(&keys["beta"], &body).into_bytes()),
                Signature::OtherKey => Some(webhook::sign(&other_key, &body).into_bytes()),
                Signature::Raw(raw) => Some(raw.clone()),
            };
            if let Some(value) = value.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
                headers.insert(SIGNATURE_HEADER, value);
            }
            if let Some(value) = algorithm.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
                headers.insert(ALGORITHM_HEADER, value);
            }

            let before = h.memory.len();
            let outcome = runtime.block_on(h.ingest.ingest(&url_tenant, &headers, &body));
            let after = h.memory.len();

            let verifies = keys
                .get(&url_tenant)
                .is_some_and(|key| webhook::verify_headers(key, &headers, &body).is_ok());
            if after > before || outcome.is_success() {
                prop_assert!(
                    verifies,
                    "stored or acknowledged without a valid signature for the routed tenant: {}",
                    outcome.kind()
                );
            }
            if after > before {
                let last = h.memory.entries().pop().expect("an entry");
                prop_assert_eq!(last.tenant.as_str(), url_tenant.as_str());
            }
            Ok(())
        })
        .expect("the property holds");
    runtime.block_on(async move { drop(h) });
}
