//! Delivers events to each session's webhooks: in order per destination URL on the first
//! attempt, retries on their own schedule (so one failing event does not hold back the rest),
//! with the drop / duplicate / reorder faults decided per delivery when its event is taken
//! (from the seeded random source, in event order: see [`crate::Faults`]).
//!
//! As WAHA: `X-Webhook-Request-Id` is one per (event, webhook) and every retry reuses it;
//! `X-Webhook-Timestamp` is the event's creation time (the body's `timestamp`), not the send
//! time.
//!
//! Each destination URL gets a lane: a queue and one task that makes the first attempts in
//! order. A lane whose queue is empty, with no first attempt in flight and nothing sent to it
//! for [`LANE_IDLE`], is closed and its task exits; the next event for that URL opens a new
//! one. Only the dispatcher loop sends to lanes and closes them, so a lane is never closed with
//! work in it and two lanes of one URL never overlap: the order of first attempts holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backon::Retryable;
use bytes::Bytes;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::faults::DeliveryPlan;
use crate::state::SimState;
use crate::time_scale::deadline_after;
use crate::webhook::retry::RetrySchedule;
use crate::webhook::signature::sign;
use crate::webhook::{OutgoingEvent, WebhookCounters};
use crate::wire::{SessionConfig, WebhookConfig};

/// How long (simulated time, scaled by the time scale) a lane may sit idle before its task
/// exits.
pub(crate) const LANE_IDLE: Duration = Duration::from_secs(30);

/// The wall-clock floor of [`LANE_IDLE`], so a tiny time scale cannot make the sweep spin.
const MIN_LANE_IDLE: Duration = Duration::from_millis(10);

/// One event to one webhook (retries reuse it).
struct Delivery {
    config: Arc<SessionConfig>,
    index: usize,
    body: Bytes,
    request_id: String,
    /// When the event happened (`X-Webhook-Timestamp`).
    timestamp_ms: u64,
    session: String,
    event: &'static str,
    /// What the webhook faults decided for it.
    plan: DeliveryPlan,
    /// Attempts made so far, lost ones included.
    tries: AtomicU32,
}

impl Delivery {
    fn webhook(&self) -> &WebhookConfig {
        &self.config.webhooks()[self.index]
    }
}

#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("the receiver answered {0}")]
    Status(u16),
    #[error("transport error: {0}")]
    Transport(String),
    /// The drop fault lost the attempt before it reached the receiver.
    #[error("the attempt was lost on its way (drop fault)")]
    Lost,
    /// The duplicate fault lost the receiver's answer: the receiver has the delivery, the
    /// simulator retries it.
    #[error("the receiver's answer was lost (duplicate fault)")]
    AnswerLost,
    /// The HMAC could not be keyed (not expected: HMAC takes keys of any length).
    #[error("cannot compute the HMAC signature")]
    Signing,
}

struct Sender {
    client: reqwest::Client,
    state: Arc<SimState>,
}

/// The queue of one destination URL, as the dispatcher loop holds it.
struct Lane {
    tx: UnboundedSender<Delivery>,
    /// Deliveries sent to the lane whose first attempt has not finished yet.
    unfinished: Arc<AtomicUsize>,
    last_send: Instant,
}

impl Lane {
    /// Opens a lane: spawns its task, which runs until the lane is dropped and its queue is
    /// empty.
    fn open(sender: &Arc<Sender>) -> Self {
        let (tx, mut rx) = unbounded_channel::<Delivery>();
        let unfinished = Arc::new(AtomicUsize::new(0));
        let sender = Arc::clone(sender);
        let counted = Arc::clone(&unfinished);
        let alive = LaneAlive::new(&sender.state);
        tokio::spawn(async move {
            let _alive = alive;
            while let Some(delivery) = rx.recv().await {
                if sender.attempt(&delivery).await.is_ok() {
                    WebhookCounters::bump(&sender.state.webhook_counters.delivered, "delivered");
                } else {
                    let sender = Arc::clone(&sender);
                    tokio::spawn(async move { sender.retry(delivery).await });
                }
                counted.fetch_sub(1, Ordering::Release);
            }
        });
        Self {
            tx,
            unfinished,
            last_send: Instant::now(),
        }
    }

    fn send(&mut self, delivery: Delivery) {
        self.unfinished.fetch_add(1, Ordering::Relaxed);
        self.last_send = Instant::now();
        if self.tx.send(delivery).is_err() {
            // The task is gone (it only ends once the lane is dropped, or on a panic).
            self.unfinished.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("webhook lane closed unexpectedly; delivery lost");
        }
    }

    /// Nothing queued, nothing in flight, nothing sent for `idle`.
    fn is_idle(&self, now: Instant, idle: Duration) -> bool {
        self.unfinished.load(Ordering::Acquire) == 0
            && now.saturating_duration_since(self.last_send) >= idle
    }
}

/// Counts a lane task as alive from its creation until it ends.
struct LaneAlive(Arc<SimState>);

impl LaneAlive {
    fn new(state: &Arc<SimState>) -> Self {
        state.webhook_counters.lane_opened();
        Self(Arc::clone(state))
    }
}

impl Drop for LaneAlive {
    fn drop(&mut self) {
        self.0.webhook_counters.lane_closed();
    }
}

/// Runs until every event sender is gone.
pub(crate) async fn run(state: Arc<SimState>, mut events: UnboundedReceiver<OutgoingEvent>) {
    let client = match reqwest::Client::builder()
        .timeout(state.settings.webhook_timeout)
        .no_proxy()
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the webhook HTTP client; webhooks are disabled");
            return;
        }
    };
    let idle = state.settings.scaled(LANE_IDLE).max(MIN_LANE_IDLE);
    let sender = Arc::new(Sender { client, state });
    let mut lanes: HashMap<String, Lane> = HashMap::new();
    let sweep = tokio::time::sleep_until(deadline_after(idle).into());
    tokio::pin!(sweep);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => dispatch(&sender, &mut lanes, &event),
                None => break,
            },
            () = &mut sweep, if !lanes.is_empty() => {
                let now = Instant::now();
                lanes.retain(|_, lane| !lane.is_idle(now, idle));
                sweep.as_mut().reset(deadline_after(idle).into());
            }
        }
    }
}

/// Queues one event's deliveries, deciding the webhook faults for each.
fn dispatch(sender: &Arc<Sender>, lanes: &mut HashMap<String, Lane>, event: &OutgoingEvent) {
    let state = &sender.state;
    let body = Bytes::from(event.body(&state.environment));
    for (index, webhook) in event.config.webhooks().iter().enumerate() {
        if !webhook.wants(event.event) {
            continue;
        }
        let tries = RetrySchedule::new(webhook.retries.as_ref(), state.settings.time_scale)
            .attempts()
            .saturating_add(1);
        let plan = state.plan_delivery(&event.faults, tries);
        let delivery = Delivery {
            config: Arc::clone(&event.config),
            index,
            body: body.clone(),
            request_id: ulid::Ulid::generate().to_string(),
            timestamp_ms: event.timestamp_ms,
            session: event.session.clone(),
            event: event.event,
            plan,
            tries: AtomicU32::new(0),
        };
        if plan.held {
            WebhookCounters::bump(&state.webhook_counters.reordered, "reordered");
            let hold = state.settings.scaled(state.settings.timings.reorder_delay);
            let sender = Arc::clone(sender);
            tokio::spawn(async move {
                tokio::time::sleep(hold).await;
                sender.deliver(delivery).await;
            });
        } else if let Some(lane) = lanes.get_mut(&webhook.url) {
            lane.send(delivery);
        } else {
            let mut lane = Lane::open(sender);
            lane.send(delivery);
            lanes.insert(webhook.url.clone(), lane);
        }
    }
}

impl Sender {
    /// First attempt, then retries.
    async fn deliver(&self, delivery: Delivery) {
        if self.attempt(&delivery).await.is_ok() {
            WebhookCounters::bump(&self.state.webhook_counters.delivered, "delivered");
        } else {
            self.retry(delivery).await;
        }
    }

    /// Retries after a failed first attempt, on the webhook's schedule.
    async fn retry(&self, delivery: Delivery) {
        let mut schedule = RetrySchedule::new(
            delivery.webhook().retries.as_ref(),
            self.state.settings.time_scale,
        );
        let outcome = match schedule.next() {
            None => Err(()),
            Some(first) => {
                tokio::time::sleep(first).await;
                (|| self.attempt(&delivery))
                    .retry(schedule)
                    .notify(|error, wait| {
                        tracing::debug!(
                            session = %delivery.session,
                            event = delivery.event,
                            %error,
                            ?wait,
                            "webhook delivery failed, retrying"
                        );
                    })
                    .await
                    .map_err(|_| ())
            }
        };
        match outcome {
            Ok(()) => WebhookCounters::bump(&self.state.webhook_counters.delivered, "delivered"),
            Err(()) => {
                WebhookCounters::bump(&self.state.webhook_counters.failed, "failed");
                tracing::warn!(
                    session = %delivery.session,
                    event = delivery.event,
                    "webhook delivery abandoned after the last retry"
                );
            }
        }
    }

    async fn attempt(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        let counters = &self.state.webhook_counters;
        let n = delivery.tries.fetch_add(1, Ordering::Relaxed);
        if n < delivery.plan.lost {
            WebhookCounters::bump(&counters.dropped, "dropped");
            tracing::debug!(
                session = %delivery.session,
                event = delivery.event,
                "webhook attempt lost (drop fault)"
            );
            return Err(DeliveryError::Lost);
        }
        let webhook = delivery.webhook();
        WebhookCounters::bump(&counters.attempts, "attempt");
        let mut request = self
            .client
            .post(&webhook.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("X-Webhook-Request-Id", &delivery.request_id)
            .header("X-Webhook-Timestamp", delivery.timestamp_ms.to_string());
        if let Some(key) = webhook
            .hmac
            .as_ref()
            .and_then(|h| h.key.as_deref())
            .filter(|k| !k.is_empty())
        {
            let mac = sign(key.as_bytes(), &delivery.body).ok_or(DeliveryError::Signing)?;
            request = request
                .header("X-Webhook-Hmac", mac)
                .header("X-Webhook-Hmac-Algorithm", "sha512");
        }
        for header in webhook.custom_headers.iter().flatten() {
            request = request.header(header.name.as_str(), header.value.as_str());
        }
        let response = request
            .body(delivery.body.clone())
            .send()
            .await
            .map_err(|e| DeliveryError::Transport(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(DeliveryError::Status(response.status().as_u16()));
        }
        if n == delivery.plan.lost && delivery.plan.answer_lost {
            WebhookCounters::bump(&counters.duplicated, "duplicated");
            return Err(DeliveryError::AnswerLost);
        }
        Ok(())
    }
}
