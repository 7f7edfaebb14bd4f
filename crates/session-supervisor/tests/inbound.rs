//! The inbound buffer (issue 13, "Inbound buffer", seed 004): batching, the count and age
//! caps, the tenant cap, tenant fairness, retries (at least once), shutdown, and `Debug`
//! without bodies.
//!
//! Timing: the buffer decides with `SystemClock` and waits with Tokio's real timer, so these
//! tests use short durations and assert only what scheduling noise cannot break (a cap that
//! must fire long before a one-hour quiet time, a batch that must arrive within a bound).
//! Every wait is bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use session_supervisor::{
    HandlerError, InboundBatch, InboundBuffer, InboundConfig, InboundHandle, InboundHandler,
    InboundMessage, InboundRetry, SystemClock,
};
use tenant_isolation::{ChipId, TenantId};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// How long any single expected event may take.
const WAIT: Duration = Duration::from_secs(5);
/// A quiet time no test reaches.
const HOUR: Duration = Duration::from_secs(3_600);

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).expect("a valid tenant id")
}

fn chip(id: &str) -> ChipId {
    ChipId::new(id).expect("a valid chip id")
}

fn message(id: &str, body: &str) -> InboundMessage {
    InboundMessage {
        id: id.to_owned(),
        at: SystemTime::now(),
        participant: None,
        body: Some(body.to_owned()),
        has_media: false,
    }
}

fn ids(batch: &InboundBatch) -> Vec<&str> {
    batch.messages.iter().map(|m| m.id.as_str()).collect()
}

/// Settings for the tests: the defaults, with a short quiet time and fast retries.
fn config(quiet: Duration) -> InboundConfig {
    InboundConfig {
        quiet,
        retry: InboundRetry {
            attempts: 5,
            first_backoff: ms(10),
            max_backoff: ms(50),
        },
        ..InboundConfig::default()
    }
}

/// A handler that reports every call (failed or not) on a channel; optionally slow for one
/// tenant, optionally failing its first calls.
struct Recorder {
    calls: mpsc::UnboundedSender<InboundBatch>,
    slow: Option<(TenantId, Duration)>,
    failures_left: AtomicU32,
}

#[async_trait]
impl InboundHandler for Recorder {
    async fn handle(&self, batch: InboundBatch) -> Result<(), HandlerError> {
        if let Some((slow, delay)) = &self.slow
            && *slow == batch.tenant
        {
            tokio::time::sleep(*delay).await;
        }
        let _ = self.calls.send(batch);
        let fail = self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            Err(HandlerError::new("scripted failure"))
        } else {
            Ok(())
        }
    }
}

struct Rig {
    buffer: InboundBuffer,
    handle: InboundHandle,
    calls: mpsc::UnboundedReceiver<InboundBatch>,
}

fn rig(config: InboundConfig, slow: Option<(TenantId, Duration)>, failures: u32) -> Rig {
    let (tx, calls) = mpsc::unbounded_channel();
    let handler = Arc::new(Recorder {
        calls: tx,
        slow,
        failures_left: AtomicU32::new(failures),
    });
    let buffer = InboundBuffer::new(handler, config, Arc::new(SystemClock)).expect("valid config");
    let handle = buffer.spawn();
    Rig {
        buffer,
        handle,
        calls,
    }
}

impl Rig {
    async fn next(&mut self) -> InboundBatch {
        timeout(WAIT, self.calls.recv())
            .await
            .expect("a handler call within the bound")
            .expect("the handler is alive")
    }

    /// Asserts the handler is not called for `quiet`.
    async fn nothing_for(&mut self, quiet: Duration) {
        if let Ok(batch) = timeout(quiet, self.calls.recv()).await {
            panic!("an unexpected handler call: {batch:?}");
        }
    }

    async fn shutdown(self) {
        timeout(WAIT, self.handle.shutdown())
            .await
            .expect("shutdown within the bound");
    }
}

#[tokio::test]
async fn messages_within_the_quiet_time_make_one_batch_in_order() {
    let quiet = ms(200);
    let mut rig = rig(config(quiet), None, 0);
    let (acme, sales) = (tenant("acme"), chip("sales-1"));
    let chat = "5511999990000@c.us";

    let start = Instant::now();
    for id in ["m1", "m2", "m3"] {
        rig.buffer
            .push(acme.clone(), sales.clone(), chat, message(id, "oi"));
    }
    assert_eq!(rig.buffer.pending(&acme), 3);

    let batch = rig.next().await;
    assert!(
        start.elapsed() >= quiet / 2,
        "handed over before the quiet time: {:?}",
        start.elapsed()
    );
    assert_eq!(batch.tenant, acme);
    assert_eq!(batch.chip, sales);
    assert_eq!(batch.chat, chat);
    assert_eq!(ids(&batch), ["m1", "m2", "m3"]);
    assert!(batch.first_at <= batch.last_at);
    assert_eq!(rig.buffer.pending(&acme), 0);

    // After the quiet time: a new batch.
    rig.buffer.push(
        acme.clone(),
        sales.clone(),
        chat,
        message("m4", "tudo bem?"),
    );
    let second = rig.next().await;
    assert_eq!(ids(&second), ["m4"]);
    rig.nothing_for(ms(400)).await;
    rig.shutdown().await;
}

#[tokio::test]
async fn conversations_are_batched_apart() {
    let mut rig = rig(config(ms(100)), None, 0);
    let (acme, sales) = (tenant("acme"), chip("sales-1"));
    rig.buffer
        .push(acme.clone(), sales.clone(), "a@c.us", message("a1", "x"));
    rig.buffer
        .push(acme.clone(), sales.clone(), "b@c.us", message("b1", "y"));
    rig.buffer
        .push(acme.clone(), sales.clone(), "a@c.us", message("a2", "z"));
    let mut batches = [rig.next().await, rig.next().await];
    batches.sort_by(|x, y| x.chat.cmp(&y.chat));
    assert_eq!(ids(&batches[0]), ["a1", "a2"]);
    assert_eq!(ids(&batches[1]), ["b1"]);
    rig.shutdown().await;
}

#[tokio::test]
async fn max_messages_hands_the_batch_over_at_once() {
    let mut rig = rig(
        InboundConfig {
            max_messages: 3,
            max_age: HOUR,
            ..config(HOUR)
        },
        None,
        0,
    );
    let (acme, sales) = (tenant("acme"), chip("sales-1"));
    for id in ["m1", "m2", "m3", "m4"] {
        rig.buffer
            .push(acme.clone(), sales.clone(), "c@c.us", message(id, "."));
    }
    // The quiet time is an hour: only the count cap can have fired.
    let batch = rig.next().await;
    assert_eq!(ids(&batch), ["m1", "m2", "m3"]);
    assert_eq!(
        rig.buffer.pending(&acme),
        1,
        "the fourth starts a new batch"
    );
    rig.nothing_for(ms(200)).await;
    rig.shutdown().await;
}

#[tokio::test]
async fn max_age_hands_over_a_chat_that_never_goes_quiet() {
    let max_age = ms(300);
    let mut rig = rig(
        InboundConfig {
            max_age,
            ..config(Duration::from_secs(10))
        },
        None,
        0,
    );
    let (acme, sales) = (tenant("acme"), chip("sales-1"));
    const SENT: usize = 60;
    let buffer = rig.buffer.clone();
    let (t, c) = (acme.clone(), sales.clone());
    let pusher = tokio::spawn(async move {
        for n in 0..SENT {
            buffer.push(
                t.clone(),
                c.clone(),
                "chatty@c.us",
                message(&format!("m{n}"), "."),
            );
            tokio::time::sleep(ms(50)).await;
        }
    });

    // The quiet time (10 s) is never reached while messages come every 50 ms: a batch
    // before the pusher is done can only come from the age cap.
    let batch = rig.next().await;
    assert!(
        !pusher.is_finished(),
        "the batch came only after messages stopped"
    );
    assert!(batch.messages.len() < SENT);
    assert_eq!(batch.messages[0].id, "m0");
    let expected: Vec<String> = (0..batch.messages.len()).map(|n| format!("m{n}")).collect();
    assert_eq!(ids(&batch), expected);
    pusher.abort();
    rig.shutdown().await;
}

#[tokio::test]
async fn a_tenant_over_its_cap_hands_its_oldest_conversation_over_early() {
    let mut rig = rig(
        InboundConfig {
            max_messages: 5,
            max_pending_per_tenant: 5,
            max_age: HOUR,
            ..config(HOUR)
        },
        None,
        0,
    );
    let (acme, other, sales) = (tenant("acme"), tenant("other"), chip("sales-1"));
    rig.buffer
        .push(other.clone(), sales.clone(), "o@c.us", message("o1", "."));
    for n in 0..6 {
        rig.buffer.push(
            acme.clone(),
            sales.clone(),
            format!("chat-{n}@c.us"),
            message(&format!("m{n}"), "."),
        );
    }
    let batch = rig.next().await;
    assert_eq!(batch.tenant, acme);
    assert_eq!(
        batch.chat, "chat-0@c.us",
        "the oldest conversation goes first"
    );
    assert_eq!(rig.buffer.pending(&acme), 5);
    assert_eq!(
        rig.buffer.pending(&other),
        1,
        "another tenant's share is untouched"
    );
    rig.nothing_for(ms(200)).await;
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_flood_does_not_delay_another_tenants_batch() {
    let (flood, calm, sales) = (tenant("flood"), tenant("calm"), chip("sales-1"));
    let quiet = ms(100);
    let mut rig = rig(config(quiet), Some((flood.clone(), ms(200))), 0);

    // 500 messages over 50 chats; each batch takes the flooding tenant's handler 200 ms,
    // with 2 calls at a time: about 5 s for its whole backlog.
    const CHATS: usize = 50;
    for n in 0..500 {
        rig.buffer.push(
            flood.clone(),
            sales.clone(),
            format!("chat-{}@c.us", n % CHATS),
            message(&format!("f{n}"), "."),
        );
    }
    let start = Instant::now();
    rig.buffer.push(
        calm.clone(),
        sales.clone(),
        "calm@c.us",
        message("c1", "oi"),
    );

    let mut flood_batches = 0;
    let calm_batch = loop {
        let batch = timeout(ms(2_000).saturating_sub(start.elapsed()), rig.calls.recv())
            .await
            .expect("the calm tenant's batch within 2 s")
            .expect("the handler is alive");
        if batch.tenant == calm {
            break batch;
        }
        flood_batches += 1;
    };
    assert_eq!(ids(&calm_batch), ["c1"]);
    assert!(
        flood_batches < CHATS / 2,
        "the calm tenant waited for the flood's backlog ({flood_batches} of its batches first)"
    );
    assert!(
        rig.buffer.pending(&flood) > 0,
        "the flood is still being worked off"
    );
    assert_eq!(rig.buffer.pending(&calm), 0);
    // The flood's backlog is left to the runtime's end.
}

#[tokio::test]
async fn a_failing_handler_gets_the_same_batch_again_until_it_succeeds() {
    let mut rig = rig(config(ms(100)), None, 2);
    let (acme, sales) = (tenant("acme"), chip("sales-1"));
    rig.buffer
        .push(acme.clone(), sales.clone(), "c@c.us", message("m1", "a"));
    rig.buffer
        .push(acme.clone(), sales.clone(), "c@c.us", message("m2", "b"));

    let first = rig.next().await;
    let second = rig.next().await;
    let third = rig.next().await;
    assert_eq!(ids(&first), ["m1", "m2"]);
    assert_eq!(second, first);
    assert_eq!(third, first);
    // The third call succeeded: no fourth.
    rig.nothing_for(ms(300)).await;
    rig.shutdown().await;
}

#[tokio::test]
async fn a_handler_that_always_fails_is_given_up_after_the_attempts() {
    let mut rig = rig(config(ms(50)), None, u32::MAX);
    let (acme, sales) = (tenant("acme"), chip("sales-1"));
    rig.buffer
        .push(acme.clone(), sales.clone(), "c@c.us", message("m1", "a"));
    for _ in 0..5 {
        assert_eq!(ids(&rig.next().await), ["m1"]);
    }
    rig.nothing_for(ms(300)).await;
    assert_eq!(rig.buffer.pending(&acme), 0);
    rig.shutdown().await;
}

#[tokio::test]
async fn shutdown_hands_pending_batches_over() {
    let rig = rig(
        InboundConfig {
            max_age: HOUR,
            ..config(HOUR)
        },
        None,
        0,
    );
    let (acme, other, sales) = (tenant("acme"), tenant("other"), chip("sales-1"));
    rig.buffer
        .push(acme.clone(), sales.clone(), "x@c.us", message("x1", "."));
    rig.buffer
        .push(acme.clone(), sales.clone(), "x@c.us", message("x2", "."));
    rig.buffer
        .push(other.clone(), sales.clone(), "y@c.us", message("y1", "."));
    assert_eq!(rig.buffer.pending(&acme), 2);
    assert_eq!(rig.buffer.pending(&other), 1);

    let buffer = rig.buffer.clone();
    let mut calls = rig.calls;
    timeout(WAIT, rig.handle.shutdown())
        .await
        .expect("shutdown within the bound");

    let mut batches = Vec::new();
    while let Ok(batch) = calls.try_recv() {
        batches.push(batch);
    }
    batches.sort_by(|a, b| a.chat.cmp(&b.chat));
    assert_eq!(batches.len(), 2, "every pending conversation handed over");
    assert_eq!(ids(&batches[0]), ["x1", "x2"]);
    assert_eq!(ids(&batches[1]), ["y1"]);
    assert_eq!(buffer.pending(&acme), 0);

    // After shutdown, pushes are refused (the durable inbox holds them).
    buffer.push(acme.clone(), sales, "x@c.us", message("x3", "."));
    assert_eq!(buffer.pending(&acme), 0);
}

#[test]
fn debug_never_shows_a_body() {
    let secret = "meu cartão é 4111 1111 1111 1111";
    let m = message("m1", secret);
    let batch = InboundBatch {
        tenant: tenant("acme"),
        chip: chip("sales-1"),
        chat: "5511999990000@c.us".to_owned(),
        messages: vec![m.clone()],
        first_at: m.at,
        last_at: m.at,
    };
    for shown in [
        format!("{m:?}"),
        format!("{batch:?}"),
        format!("{batch:#?}"),
    ] {
        assert!(!shown.contains(secret), "a body in Debug: {shown}");
        assert!(!shown.contains("4111"), "part of a body in Debug: {shown}");
        assert!(shown.contains("body_len"));
        assert!(shown.contains("m1"));
    }
}

#[test]
fn settings_are_validated() {
    InboundConfig::default()
        .validate()
        .expect("the defaults are valid");
    let bad = InboundConfig {
        handler_concurrency_per_tenant: 0,
        ..InboundConfig::default()
    };
    assert_eq!(
        bad.validate().expect_err("refused").setting(),
        "handler_concurrency_per_tenant"
    );
    let (tx, _rx) = mpsc::unbounded_channel();
    let handler = Arc::new(Recorder {
        calls: tx,
        slow: None,
        failures_left: AtomicU32::new(0),
    });
    assert!(InboundBuffer::new(handler, bad, Arc::new(SystemClock)).is_err());
}
