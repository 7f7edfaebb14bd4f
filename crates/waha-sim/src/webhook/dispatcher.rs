//! Delivers events to each session's webhooks: in order per destination URL on the first
//! attempt, retries on their own schedule (so one failing event does not hold back the rest),
//! with the drop / duplicate / reorder faults applied per delivery.

use std::collections::HashMap;
use std::sync::Arc;

use backon::Retryable;
use bytes::Bytes;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::faults::chance;
use crate::state::{SimState, now_ms};
use crate::webhook::retry::RetrySchedule;
use crate::webhook::signature::sign;
use crate::webhook::{OutgoingEvent, WebhookCounters};
use crate::wire::{SessionConfig, WebhookConfig};

/// One POST to one webhook (retries reuse it).
struct Delivery {
    config: Arc<SessionConfig>,
    index: usize,
    body: Bytes,
    request_id: String,
    session: String,
    event: &'static str,
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
}

struct Sender {
    client: reqwest::Client,
    state: Arc<SimState>,
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
    let sender = Arc::new(Sender { client, state });
    let mut lanes: HashMap<String, UnboundedSender<Delivery>> = HashMap::new();
    while let Some(event) = events.recv().await {
        let state = &sender.state;
        let body = Bytes::from(event.body(&state.environment));
        for (index, webhook) in event.config.webhooks().iter().enumerate() {
            if !webhook.wants(event.event) {
                continue;
            }
            let faults = &event.faults;
            if chance(faults.webhook_drop_rate) {
                WebhookCounters::bump(&state.webhook_counters.dropped, "dropped");
                tracing::debug!(session = %event.session, event = event.event, "webhook dropped (fault)");
                continue;
            }
            let copies = if chance(faults.webhook_duplicate_rate) {
                WebhookCounters::bump(&state.webhook_counters.duplicated, "duplicated");
                2
            } else {
                1
            };
            for _ in 0..copies {
                let delivery = Delivery {
                    config: Arc::clone(&event.config),
                    index,
                    body: body.clone(),
                    request_id: ulid::Ulid::new().to_string(),
                    session: event.session.clone(),
                    event: event.event,
                };
                if chance(faults.webhook_reorder_rate) {
                    WebhookCounters::bump(&state.webhook_counters.reordered, "reordered");
                    let hold = state.settings.scaled(state.settings.timings.reorder_delay);
                    let sender = Arc::clone(&sender);
                    tokio::spawn(async move {
                        tokio::time::sleep(hold).await;
                        sender.deliver(delivery).await;
                    });
                } else {
                    lane(&mut lanes, &webhook.url, &sender).send(delivery).ok();
                }
            }
        }
    }
}

fn lane<'a>(
    lanes: &'a mut HashMap<String, UnboundedSender<Delivery>>,
    url: &str,
    sender: &Arc<Sender>,
) -> &'a UnboundedSender<Delivery> {
    lanes.entry(url.to_owned()).or_insert_with(|| {
        let (tx, mut rx) = unbounded_channel::<Delivery>();
        let sender = Arc::clone(sender);
        tokio::spawn(async move {
            while let Some(delivery) = rx.recv().await {
                if sender.attempt(&delivery).await.is_ok() {
                    WebhookCounters::bump(&sender.state.webhook_counters.delivered, "delivered");
                } else {
                    let sender = Arc::clone(&sender);
                    tokio::spawn(async move { sender.retry(delivery).await });
                }
            }
        });
        tx
    })
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
        let webhook = delivery.webhook();
        WebhookCounters::bump(&self.state.webhook_counters.attempts, "attempt");
        let mut request = self
            .client
            .post(&webhook.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("X-Webhook-Request-Id", &delivery.request_id)
            .header("X-Webhook-Timestamp", now_ms().to_string());
        if let Some(key) = webhook
            .hmac
            .as_ref()
            .and_then(|h| h.key.as_deref())
            .filter(|k| !k.is_empty())
        {
            request = request
                .header("X-Webhook-Hmac", sign(key.as_bytes(), &delivery.body))
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
        if response.status().is_success() {
            Ok(())
        } else {
            Err(DeliveryError::Status(response.status().as_u16()))
        }
    }
}
