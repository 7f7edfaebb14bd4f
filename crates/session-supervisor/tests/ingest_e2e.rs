//! The webhook ingest end to end with the simulator's seeded webhook faults (issue 13, Tests:
//! "End to end with the simulator's seeded webhook faults (drops, duplicates, reordering)").
//!
//! The in-memory world (`support::Fleet`), but WAHA's webhooks go through the real path: the
//! supervisor's webhook URL points at `session_supervisor::ingest_router` (feature `axum`) on
//! 127.0.0.1, in front of an `Ingest` over a `MemoryInbox`. One tenant, two chips scanned and
//! working; then the simulator's webhook faults are switched on, seeded (`SIM_SEED`, default
//! 13, printed so a failing run can be replayed):
//! - drop: attempts lost before they reach the receiver, retried on the webhook's policy;
//! - duplicate: the receiver's 200 is lost, so the same delivery (same event id, same
//!   `X-Webhook-Request-Id`) arrives again after the retry delay;
//! - reorder: a delivery held back, so later events overtake it (an ack SERVER after READ).
//!
//! Traffic: messages arrive on both chips (`control.receive_message`), and messages sent through
//! WAHA get their acks SERVER, DEVICE, READ one right after the other (`control.ack`; the
//! simulator's automatic acks are off, so every ack is one the test caused).
//!
//! Asserted once every delivery is finished (delivered or abandoned, as the simulator counts
//! them, and every request the receiver got answered), all waits bounded:
//! - every answer was 200 (nothing refused, nothing to retry later);
//! - every message and every ack level is in the inbox exactly once;
//! - every repeated request (same request id) was dropped as a duplicate
//!   (`ingest_events_total{outcome="duplicate"}`), and nothing else was;
//! - the published `MessageStatus` of one message never moves backwards and ends at READ, each
//!   incoming message is published once, and no subscriber saw a gap;
//! - both chips are still working.

#![cfg(feature = "axum")]

mod shared;
mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use session_supervisor::{
    ChangeFilter, ChangeItem, ChipChangeKind, ChipSpec, Ingest, IngestConfig, MemoryInbox,
    PhaseName, ingest_router,
};
use waha_client::webhook::MessageAck;
use waha_client::{TextMessage, WahaApi};
use waha_sim::{AckLevel, Faults, Timings};

use support::*;

/// The seed of the webhook faults unless `SIM_SEED` names another.
const DEFAULT_SEED: u64 = 13;

/// Incoming messages per chip.
const RECEIVED_PER_CHIP: usize = 12;

/// Sent messages (each acked SERVER, DEVICE, READ) per chip.
const SENT_PER_CHIP: usize = 6;

const CUSTOMER: &str = "5511999999999@c.us";

/// One request the receiver answered: its `X-Webhook-Request-Id` and the status.
type Answered = (Option<String>, u16);

/// What the receiver was asked and answered, one entry per request.
#[derive(Clone, Default)]
struct Seen {
    requests: Arc<Mutex<Vec<Answered>>>,
}

impl Seen {
    fn snapshot(&self) -> Vec<Answered> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Around the ingest router: records each request's id and the status it was answered.
async fn record(State(seen): State<Seen>, request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-webhook-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = next.run(request).await;
    seen.requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((id, response.status().as_u16()));
    response
}

/// The value of `ingest_events_total{outcome="<outcome>"}` in a scrape (0 when absent).
fn ingest_count(scrape: &PrometheusHandle, outcome: &str) -> u64 {
    let prefix = format!("ingest_events_total{{outcome=\"{outcome}\"}}");
    scrape
        .render()
        .lines()
        .find(|line| line.starts_with(&prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

fn seed() -> u64 {
    match std::env::var("SIM_SEED") {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("SIM_SEED must be an unsigned integer, got {value:?}")),
        Err(_) => DEFAULT_SEED,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_webhook_faults_are_admitted_once_in_order_and_chips_keep_working() {
    // The only recorder of this binary: the ingest's outcome counters.
    let recorder = PrometheusBuilder::new().build_recorder();
    let scrape = recorder.handle();
    metrics::set_global_recorder(recorder).expect("the only recorder of this binary");

    // Acks only when the test asks for them (no automatic SERVER/DEVICE/READ after sendText).
    let mut timings = Timings::default();
    timings.ack_interval = None;
    let fleet = Fleet::builder()
        .tenant("acme")
        .timings(timings)
        .build()
        .await;
    let acme = tenant("acme");
    let chips = [chip("c1"), chip("c2")];

    // The receiver: the ingest's axum adapter, with the request log around it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port for the ingest");
    let addr = listener.local_addr().expect("the ingest's address");
    let mut config = fleet.config();
    config.webhook_url = format!("http://{addr}/webhooks/{{tenant}}");
    let supervisor = fleet.build_supervisor(config, None);
    let inbox = Arc::new(MemoryInbox::new());
    let ingest = Ingest::new(
        supervisor.clone(),
        inbox.clone(),
        IngestConfig::for_supervisor(supervisor.config()),
    )
    .expect("a valid ingest config");
    let seen = Seen::default();
    let app =
        ingest_router(Arc::new(ingest)).layer(middleware::from_fn_with_state(seen.clone(), record));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let replica = fleet.start(supervisor).await;

    // Two chips, scanned and working, with no faults yet.
    for (n, chip) in chips.iter().enumerate() {
        replica
            .create_chip(&acme, chip, ChipSpec::qr())
            .await
            .unwrap_or_else(|error| panic!("creating {chip} failed: {error}"));
        wait_phase(&replica, &acme, chip, PhaseName::AwaitingLogin, WAIT).await;
        fleet
            .scan(&acme, chip, &format!("552200000000{}", n + 1))
            .await;
    }
    for chip in &chips {
        wait_phase(&replica, &acme, chip, PhaseName::Working, WAIT).await;
    }
    let mut changes = replica
        .subscribe(&acme, ChangeFilter::all())
        .await
        .expect("subscribed");

    // The faults, seeded.
    let seed = seed();
    println!("webhook faults: drop 0.2, duplicate 0.3, reorder 0.3, SIM_SEED={seed}");
    let control = fleet.control_for(&acme).await;
    control
        .set_faults(
            Faults::none()
                .with_webhook_faults(0.2, 0.3, 0.3)
                .with_seed(seed),
        )
        .expect("valid faults");

    // Traffic: incoming messages, and sent messages acked in quick succession.
    let waha = fleet.waha_for(&acme).await;
    let mut received: Vec<String> = Vec::new();
    let mut sent: Vec<String> = Vec::new();
    for n in 0..RECEIVED_PER_CHIP.max(SENT_PER_CHIP) {
        for chip in &chips {
            let name = session(&acme, chip);
            if n < RECEIVED_PER_CHIP {
                let from = format!("55119{n:08}@c.us");
                let id = control
                    .receive_message(&name, &from, &format!("hello {n}"))
                    .unwrap_or_else(|error| panic!("{name} did not receive: {error}"));
                received.push(id);
            }
            if n < SENT_PER_CHIP {
                let answer = waha
                    .send_text(&TextMessage::new(
                        name.clone(),
                        CUSTOMER,
                        format!("reply {n}"),
                    ))
                    .await
                    .unwrap_or_else(|error| panic!("sendText on {name} failed: {error}"));
                let id = answer.id.expect("sendText answers the message id");
                for level in [AckLevel::Server, AckLevel::Device, AckLevel::Read] {
                    control
                        .ack(&id, level)
                        .unwrap_or_else(|error| panic!("acking {id}: {error}"));
                }
                sent.push(id);
            }
        }
    }

    // Every delivery finished: each message and ack level admitted, every request the
    // simulator sent answered, every delivery the receiver saw counted delivered or abandoned
    // by the simulator (a duplicate's second attempt included).
    let wanted_messages: HashSet<String> =
        received.iter().map(|id| format!("message:{id}")).collect();
    let wanted_acks: HashSet<String> = sent
        .iter()
        .flat_map(|id| (1..=3).map(move |level| format!("ack:{id}:{level}")))
        .collect();
    {
        // Only references are captured: `move` copies them into each poll's future.
        let (inbox, seen, control) = (&inbox, &seen, &control);
        let (wanted_messages, wanted_acks) = (&wanted_messages, &wanted_acks);
        eventually(
            WAIT * 2,
            "every faulty delivery to finish",
            move || async move {
                let keys: HashSet<String> = inbox
                    .entries()
                    .into_iter()
                    .flat_map(|entry| entry.keys)
                    .collect();
                if !wanted_messages.is_subset(&keys) || !wanted_acks.is_subset(&keys) {
                    return None;
                }
                let requests = seen.snapshot();
                let distinct: HashSet<&Option<String>> =
                    requests.iter().map(|(id, _)| id).collect();
                let stats = control.webhook_stats();
                (requests.len() as u64 == stats.attempts
                    && stats.delivered + stats.failed >= distinct.len() as u64)
                    .then_some(())
            },
        )
        .await;
    }

    let stats = control.webhook_stats();
    println!("simulator webhook stats (SIM_SEED={seed}): {stats:?}");
    assert_eq!(
        stats.failed, 0,
        "no delivery may be abandoned with 12 tries (SIM_SEED={seed})"
    );
    assert!(
        stats.dropped > 0 && stats.duplicated > 0 && stats.reordered > 0,
        "the seeded faults must have dropped, duplicated and reordered something \
         (SIM_SEED={seed}): {stats:?}"
    );

    // Every answer 200: dropped on purpose is still 2xx; nothing refused, nothing to retry.
    let requests = seen.snapshot();
    let refused: Vec<u16> = requests
        .iter()
        .map(|(_, status)| *status)
        .filter(|status| *status != 200)
        .collect();
    assert!(refused.is_empty(), "answers other than 200: {refused:?}");
    assert!(
        requests.iter().all(|(id, _)| id.is_some()),
        "every WAHA request carries X-Webhook-Request-Id"
    );

    // Admitted exactly once: one inbox entry per message, one per (message, ack level).
    let entries = inbox.entries();
    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    for entry in &entries {
        for key in &entry.keys {
            *per_key.entry(key.clone()).or_insert(0) += 1;
        }
    }
    for key in wanted_messages.iter().chain(wanted_acks.iter()) {
        assert_eq!(
            per_key.get(key).copied(),
            Some(1),
            "{key} must be admitted exactly once (SIM_SEED={seed})"
        );
    }
    let duplicated_keys: Vec<&String> = per_key
        .iter()
        .filter(|(_, count)| **count > 1)
        .map(|(key, _)| key)
        .collect();
    assert!(
        duplicated_keys.is_empty(),
        "keys stored twice: {duplicated_keys:?}"
    );

    // Duplicates dropped, and only duplicates: each delivery (request id) stored once, every
    // repeat of it answered `Dropped(Duplicate)`.
    let distinct: HashSet<&Option<String>> = requests.iter().map(|(id, _)| id).collect();
    let repeats = (requests.len() - distinct.len()) as u64;
    assert!(
        repeats > 0,
        "the duplicate fault must have repeated a request (SIM_SEED={seed})"
    );
    assert_eq!(
        ingest_count(&scrape, "duplicate"),
        repeats,
        "every repeated request, and nothing else, is a duplicate (SIM_SEED={seed})"
    );
    assert_eq!(
        entries.len(),
        distinct.len(),
        "each delivery the receiver saw is stored once"
    );
    assert_eq!(
        ingest_count(&scrape, "accepted") + ingest_count(&scrape, "ack_regression"),
        distinct.len() as u64,
        "each first arrival is accepted, or stored and dropped as an ack regression"
    );
    for id in &sent {
        assert_eq!(
            inbox.ack_of(&acme, id),
            Some(MessageAck::Read),
            "{id}: the highest ack is READ whatever the arrival order"
        );
    }

    // What subscribers saw: statuses forward only, ending at READ; each message once; no gap;
    // no phase other than Working.
    let mut statuses: BTreeMap<String, Vec<MessageAck>> = BTreeMap::new();
    let mut published: BTreeMap<String, usize> = BTreeMap::new();
    let mut phases = Vec::new();
    while let Some(item) = changes.try_next() {
        match item {
            ChangeItem::Change(change) => match change.kind {
                ChipChangeKind::MessageStatus {
                    message_id, ack, ..
                } => statuses.entry(message_id).or_default().push(ack),
                ChipChangeKind::MessageReceived { message_id, .. } => {
                    *published.entry(message_id).or_insert(0) += 1;
                }
                ChipChangeKind::PhaseChanged { to, .. } => phases.push((change.chip, to)),
                _ => {}
            },
            gap @ ChangeItem::Gap { .. } => panic!("the subscriber missed changes: {gap:?}"),
        }
    }
    for id in &sent {
        let seq = statuses
            .get(id)
            .unwrap_or_else(|| panic!("{id}: no MessageStatus published"));
        for pair in seq.windows(2) {
            assert!(
                MessageAck::supersedes(pair[0], pair[1]),
                "{id}: status went from {:?} to {:?}; published {seq:?} (SIM_SEED={seed})",
                pair[0],
                pair[1]
            );
        }
        assert_eq!(
            seq.last(),
            Some(&MessageAck::Read),
            "{id}: published {seq:?}"
        );
    }
    for id in &received {
        assert_eq!(
            published.get(id).copied(),
            Some(1),
            "{id}: MessageReceived must be published exactly once (SIM_SEED={seed})"
        );
    }
    assert!(
        phases.iter().all(|(_, to)| *to == PhaseName::Working),
        "chips left Working under webhook faults: {phases:?} (SIM_SEED={seed})"
    );

    // The chips stay working.
    for chip in &chips {
        assert_eq!(
            chip_phase(&replica, &acme, chip).await,
            Some(PhaseName::Working),
            "{chip} must still be working (SIM_SEED={seed})"
        );
        assert_eq!(
            control.session_status(&session(&acme, chip)),
            Some(waha_sim::SessionStatus::Working),
            "{chip}'s session must still be WORKING"
        );
    }

    replica.shutdown().await;
}
