//! Webhook ingest (issue 13, "Webhook ingest"): [`Ingest`], its configuration and outcomes,
//! and the axum adapter (feature `axum`).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use serde::Deserialize;
use tenant_isolation::metadata::{CHIP, TENANT};
use tenant_isolation::{SessionName, Tenant, TenantId, TenantStatus};
use tracing::{debug, warn};
use waha_client::webhook::{EventPayload, WebhookEvent, verify_headers};

use crate::chip::ChipKey;
use crate::config::SupervisorConfig;
use crate::events::{ChipChange, ChipChangeKind};
use crate::inbound::{InboundBuffer, InboundMessage};
use crate::inbox::{Admission, Inbox, InboxEntry, InboxError, ack_key, event_key, message_key};
use crate::outbox::Outbox;
use crate::supervisor::{ObserveOutcome, Supervisor};

#[cfg(feature = "axum")]
pub mod axum;

/// The ingest's settings, with documented defaults ([`IngestConfig::for_supervisor`]);
/// checked by [`IngestConfig::validate`] when the [`Ingest`] is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestConfig {
    /// The largest body accepted, in bytes (1 MiB).
    pub max_body_bytes: usize,
    /// How old a delivery's signed `timestamp` may be (the supervisor's
    /// [`webhook_retry_span`](SupervisorConfig::webhook_retry_span) + 10 min). Must be at
    /// least the retry span: WAHA's timestamp is when the event arose, not when this attempt
    /// left, so a last retry after an outage carries an old one.
    pub freshness: Duration,
    /// How far a delivery's `timestamp` may be ahead of this host's clock (5 min: clock
    /// skew between hosts).
    pub future_skew: Duration,
    /// How long the inbox keeps entries and their de-duplication keys (7 days). Must be at
    /// least `freshness + future_skew`: a key forgotten while its event is still fresh would
    /// let a replay in again.
    pub inbox_retention: Duration,
}

impl IngestConfig {
    /// The default [`max_body_bytes`](Self::max_body_bytes): 1 MiB.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
    /// What the default [`freshness`](Self::freshness) adds to the retry span: 10 min.
    pub const FRESHNESS_MARGIN: Duration = Duration::from_secs(10 * 60);
    /// The default [`future_skew`](Self::future_skew): 5 min.
    pub const DEFAULT_FUTURE_SKEW: Duration = Duration::from_secs(5 * 60);
    /// The default [`inbox_retention`](Self::inbox_retention): 7 days.
    pub const DEFAULT_INBOX_RETENTION: Duration = Duration::from_secs(7 * 24 * 3_600);

    /// The defaults for a supervisor configured with `config` (its webhook retries set the
    /// freshness window).
    pub fn for_supervisor(config: &SupervisorConfig) -> Self {
        let freshness = config
            .webhook_retry_span()
            .saturating_add(Self::FRESHNESS_MARGIN);
        IngestConfig {
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            freshness,
            future_skew: Self::DEFAULT_FUTURE_SKEW,
            inbox_retention: Self::DEFAULT_INBOX_RETENTION
                .max(freshness.saturating_add(Self::DEFAULT_FUTURE_SKEW)),
        }
    }

    /// Checks the settings; `retry_span` is how long WAHA keeps retrying one delivery
    /// ([`SupervisorConfig::webhook_retry_span`]).
    ///
    /// # Errors
    /// [`IngestConfigError::Invalid`] naming the setting: `max_body_bytes` of zero, a
    /// `freshness` shorter than `retry_span` (a legitimate retry after an outage would be
    /// refused as a replay), an `inbox_retention` shorter than `freshness + future_skew`.
    pub fn validate(&self, retry_span: Duration) -> Result<(), IngestConfigError> {
        if self.max_body_bytes == 0 {
            return Err(IngestConfigError::invalid(
                "max_body_bytes",
                "must not be zero",
            ));
        }
        if self.freshness < retry_span {
            return Err(IngestConfigError::invalid(
                "freshness",
                format!(
                    "{:?} is shorter than the webhook retry span {:?}: a legitimate retry after \
                     an outage would be refused as a replay",
                    self.freshness, retry_span
                ),
            ));
        }
        let needed = self.freshness.saturating_add(self.future_skew);
        if self.inbox_retention < needed {
            return Err(IngestConfigError::invalid(
                "inbox_retention",
                format!(
                    "{:?} is shorter than freshness + future_skew ({needed:?}): a replay of an \
                     event still inside the window would no longer be recognised",
                    self.inbox_retention
                ),
            ));
        }
        Ok(())
    }
}

/// An ingest setting [`IngestConfig::validate`] refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IngestConfigError {
    /// A setting is out of range.
    #[error("ingest setting {setting} {problem}")]
    Invalid {
        /// The setting.
        setting: &'static str,
        /// What is wrong.
        problem: String,
    },
}

impl IngestConfigError {
    fn invalid(setting: &'static str, problem: impl Into<String>) -> Self {
        IngestConfigError::Invalid {
            setting,
            problem: problem.into(),
        }
    }

    /// The setting refused.
    pub fn setting(&self) -> &'static str {
        match self {
            IngestConfigError::Invalid { setting, .. } => setting,
        }
    }
}

/// Why a delivery was acknowledged (2xx) without being acted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// Any of its keys was seen: a retry, or the same message under another event id.
    Duplicate,
    /// The tenant is suspended or deleted (the signature was verified first).
    TenantInactive,
    /// An ack that does not move its message forward (it was stored and observed; no status
    /// change is published).
    AckRegression,
}

impl DropReason {
    /// A short, stable name, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            DropReason::Duplicate => "duplicate",
            DropReason::TenantInactive => "tenant_inactive",
            DropReason::AckRegression => "ack_regression",
        }
    }
}

/// Why a delivery was refused (4xx). None of these gets better by retrying the same bytes.
/// No variant carries a body, a header value or a key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IngestRefusal {
    /// The body is larger than the limit (413).
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The URL names no tenant of the directory (404).
    UnknownTenant,
    /// The body's session is not a chipfleet session name, or belongs to another tenant than
    /// the URL's (403).
    ForeignSession,
    /// The signature is missing, malformed or does not verify under the tenant's key (401).
    BadSignature,
    /// The body is not a webhook this crate reads (400).
    Malformed {
        /// Where it failed (a JSON path and what was wrong; never a value from the body).
        detail: String,
    },
    /// The metadata's tenant or chip differs from the session name's (403).
    MetadataMismatch,
    /// The signed timestamp is outside the freshness window (400): a replay, or a clock far
    /// ahead (then `age_secs` is 0).
    Stale {
        /// How old the event is, in seconds (0 for one from the future).
        age_secs: u64,
        /// The window, in seconds.
        window_secs: u64,
    },
}

impl IngestRefusal {
    /// A short, stable name, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            IngestRefusal::TooLarge { .. } => "too_large",
            IngestRefusal::UnknownTenant => "unknown_tenant",
            IngestRefusal::ForeignSession => "foreign_session",
            IngestRefusal::BadSignature => "bad_signature",
            IngestRefusal::Malformed { .. } => "malformed",
            IngestRefusal::MetadataMismatch => "metadata_mismatch",
            IngestRefusal::Stale { .. } => "stale",
        }
    }

    /// The HTTP status to answer with (see [`IngestOutcome::http_status`]).
    pub fn http_status(&self) -> u16 {
        match self {
            IngestRefusal::TooLarge { .. } => 413,
            // Refused before (or instead of) a verified signature: one answer for all three,
            // so an unsigned caller cannot tell tenants that exist from those that do not
            // (the metrics keep them apart).
            IngestRefusal::UnknownTenant
            | IngestRefusal::ForeignSession
            | IngestRefusal::BadSignature => 401,
            IngestRefusal::MetadataMismatch => 403,
            IngestRefusal::Malformed { .. } | IngestRefusal::Stale { .. } => 400,
        }
    }
}

/// What [`Ingest::ingest`] did with a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IngestOutcome {
    /// Stored in the inbox and handed to the supervisor (200).
    Accepted {
        /// The chip the event is about.
        key: ChipKey,
        /// WAHA's event id, when the server sent one.
        event: Option<String>,
    },
    /// Acknowledged on purpose without acting on it (200, so WAHA stops retrying).
    Dropped {
        /// Why.
        reason: DropReason,
    },
    /// Refused (4xx).
    Refused(IngestRefusal),
    /// The tenant directory or the inbox is unavailable: nothing was stored; WAHA should
    /// retry (503).
    RetryLater {
        /// What was unavailable (never a body or a secret).
        reason: String,
    },
}

impl IngestOutcome {
    /// The HTTP status to answer with. WAHA retries every non-2xx answer:
    ///
    /// | outcome | status |
    /// |---|---|
    /// | `Accepted`, `Dropped` | 200 |
    /// | `Refused(BadSignature)` | 401 |
    /// | `Refused(ForeignSession)`, `Refused(MetadataMismatch)` | 403 |
    /// | `Refused(UnknownTenant)` | 404 |
    /// | `Refused(Malformed)`, `Refused(Stale)` | 400 |
    /// | `Refused(TooLarge)` | 413 |
    /// | `RetryLater` | 503 |
    pub fn http_status(&self) -> u16 {
        match self {
            IngestOutcome::Accepted { .. } | IngestOutcome::Dropped { .. } => 200,
            IngestOutcome::Refused(refusal) => refusal.http_status(),
            IngestOutcome::RetryLater { .. } => 503,
        }
    }

    /// Whether the answer is 2xx (WAHA stops retrying).
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            IngestOutcome::Accepted { .. } | IngestOutcome::Dropped { .. }
        )
    }

    /// A short, stable name, the `outcome` label of `ingest_events_total`: `accepted`,
    /// `retry_later`, a [`DropReason::kind`] or an [`IngestRefusal::kind`].
    pub fn kind(&self) -> &'static str {
        match self {
            IngestOutcome::Accepted { .. } => "accepted",
            IngestOutcome::Dropped { reason } => reason.kind(),
            IngestOutcome::Refused(refusal) => refusal.kind(),
            IngestOutcome::RetryLater { .. } => "retry_later",
        }
    }
}

/// Counts an outcome in `ingest_events_total{outcome}`.
pub(crate) fn count(outcome: &IngestOutcome) {
    metrics::counter!("ingest_events_total", "outcome" => outcome.kind()).increment(1);
}

/// The only field read before the signature is verified.
#[derive(Deserialize)]
struct Routing {
    session: String,
}

/// The webhook ingest: verification, de-duplication and storage in front of
/// [`Supervisor::observe`]. One framework-agnostic entry point, [`Ingest::ingest`], takes the
/// tenant named by the URL path, the headers and the raw body, and answers a typed
/// [`IngestOutcome`] the host maps to an HTTP status ([`IngestOutcome::http_status`]). An
/// axum adapter is behind the feature `axum` (`ingest_router`).
///
/// **The steps, in order.**
/// 1. Size: a body over [`IngestConfig::max_body_bytes`] is refused (the axum adapter applies
///    the limit before the body is read whole).
/// 2. Routing: the tenant comes from the URL, never from the body. The body's `session` is read
///    (and nothing else trusted) and parsed strictly as a [`SessionName`]; a name that is not
///    chipfleet's, or that belongs to another tenant, is refused and counted
///    (`ingest_foreign_sessions_total`).
/// 3. The tenant is looked up; its HMAC key verifies the signature over the raw bytes. A
///    suspended or deleted tenant's (verified) webhook is acknowledged and dropped.
/// 4. Parse; the metadata's tenant and chip, when present, must match the session name.
/// 5. Freshness: the signed `timestamp` must be within [`IngestConfig::freshness`] (and not
///    more than [`IngestConfig::future_skew`] ahead of the clock). The window is validated
///    against the supervisor's webhook retry span, so a legitimate retry is never refused as a
///    replay. A delivery without a timestamp (older servers) is accepted.
/// 6. De-duplication and storage in the durable [`Inbox`], in one atomic step: by event id,
///    message id, and message id with ack level (see [`Inbox`] for the keys). A delivery any
///    of whose keys was seen is a duplicate.
/// 7. [`Supervisor::observe`], then a [`ChipChangeKind::MessageReceived`] for an incoming
///    message (not one this account sent) or a [`ChipChangeKind::MessageStatus`] for an ack
///    that moves the message forward; an ack that does not is dropped
///    ([`DropReason::AckRegression`]) after it was stored and observed. An ack that moves
///    its message forward also moves the send's [`Outbox`] record
///    ([`Outbox::advance_ack`], forward only; the supervisor's outbox unless
///    [`Ingest::with_outbox`] names another).
///
/// **Answers.** WAHA retries every non-2xx answer (16 tries by default): what is dropped on
/// purpose (duplicates, inactive tenants, ack regressions) is answered 200; "retry later"
/// (503) only when the tenant directory or the inbox is down; refusals (4xx) for what no retry
/// can fix. **Nothing answered 2xx is lost:** the inbox stores the delivery before anything
/// acts on it, and a failure after that (observe, the ack mark, publishing) is logged and
/// still answered 200: the event is durable, and retrying it would only meet the duplicate
/// check.
///
/// Nothing here logs a body, a header value or a key; outcomes carry no secret.
///
/// Cheap to share behind an `Arc`; any replica can ingest.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use session_supervisor::{Ingest, IngestConfig, MemoryInbox, Supervisor};
/// # async fn demo(supervisor: Supervisor, headers: http::HeaderMap, body: Vec<u8>)
/// #     -> Result<(), Box<dyn std::error::Error>> {
/// let config = IngestConfig::for_supervisor(supervisor.config());
/// let ingest = Ingest::new(supervisor, Arc::new(MemoryInbox::new()), config)?;
/// // In the host's `POST /webhooks/{tenant}` handler:
/// let outcome = ingest.ingest("acme", &headers, &body).await;
/// let status = outcome.http_status();
/// # let _ = status; Ok(()) }
/// ```
pub struct Ingest {
    supervisor: Supervisor,
    inbox: Arc<dyn Inbox>,
    config: IngestConfig,
    inbound: Option<Arc<InboundBuffer>>,
    outbox: Option<Arc<dyn Outbox>>,
}

impl fmt::Debug for Ingest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ingest")
            .field("supervisor", &self.supervisor)
            .field("config", &self.config)
            .field("inbound", &self.inbound.is_some())
            .finish_non_exhaustive()
    }
}

impl Ingest {
    /// An ingest in front of `supervisor`, storing into `inbox`.
    ///
    /// # Errors
    /// [`IngestConfigError`] when `config` does not pass [`IngestConfig::validate`] against
    /// the supervisor's webhook retry span.
    pub fn new(
        supervisor: Supervisor,
        inbox: Arc<dyn Inbox>,
        config: IngestConfig,
    ) -> Result<Self, IngestConfigError> {
        config.validate(supervisor.config().webhook_retry_span())?;
        Ok(Ingest {
            supervisor,
            inbox,
            config,
            inbound: None,
            outbox: None,
        })
    }

    /// Moves the records of `outbox` with acks (default: the supervisor's
    /// [`outbox`](Supervisor::outbox), which is what [`Supervisor::send_text`] records in).
    #[must_use]
    pub fn with_outbox(mut self, outbox: Arc<dyn Outbox>) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// The outbox acks move.
    fn outbox(&self) -> &Arc<dyn Outbox> {
        self.outbox
            .as_ref()
            .unwrap_or_else(|| self.supervisor.outbox())
    }

    /// Hands every accepted inbound message (step 7: a `message` not sent by this account,
    /// for a chip the supervisor knows) to `buffer` as well, after its `MessageReceived` is
    /// published, so the host's [`InboundHandler`](crate::InboundHandler) gets a
    /// conversation's messages in batches. The inbox stored each message first; re-reading it
    /// after a crash to refill the buffer is not built yet (see [`InboundBuffer`]).
    #[must_use]
    pub fn with_inbound(mut self, buffer: Arc<InboundBuffer>) -> Self {
        self.inbound = Some(buffer);
        self
    }

    /// The settings.
    pub fn config(&self) -> &IngestConfig {
        &self.config
    }

    /// The inbox it stores into.
    pub fn inbox(&self) -> &Arc<dyn Inbox> {
        &self.inbox
    }

    /// Removes inbox entries older than [`IngestConfig::inbox_retention`] by the supervisor's
    /// clock; call it periodically (hourly is plenty). Answers how many went.
    ///
    /// # Errors
    /// [`InboxError`].
    pub async fn prune_inbox(&self) -> Result<u64, InboxError> {
        let now = self.now();
        let cutoff = now
            .checked_sub(self.config.inbox_retention)
            .unwrap_or(UNIX_EPOCH);
        self.inbox.prune(cutoff).await
    }

    fn now(&self) -> SystemTime {
        self.supervisor.inner.effects.clock.now()
    }

    /// Ingests one delivery: `tenant` is the URL path segment, `headers` and `body` the
    /// request's, exactly as received. Never panics on any input; see [`Ingest`] for the
    /// steps and [`IngestOutcome::http_status`] for the answer. Counted in
    /// `ingest_events_total{outcome}`.
    pub async fn ingest(&self, tenant: &str, headers: &HeaderMap, body: &[u8]) -> IngestOutcome {
        let outcome = self.run(tenant, headers, body).await;
        count(&outcome);
        outcome
    }

    async fn run(&self, tenant: &str, headers: &HeaderMap, body: &[u8]) -> IngestOutcome {
        // 1. Size.
        if body.len() > self.config.max_body_bytes {
            return refused(IngestRefusal::TooLarge {
                limit: self.config.max_body_bytes,
            });
        }

        // 2. Routing: the URL's tenant; the body's session name, strictly.
        let Ok(tenant) = TenantId::new(tenant) else {
            return refused(IngestRefusal::UnknownTenant);
        };
        let session = match serde_json::from_slice::<Routing>(body) {
            Ok(routing) => routing.session,
            Err(error) => {
                return refused(IngestRefusal::Malformed {
                    detail: format!(
                        "no string `session` in a JSON object (line {}, column {})",
                        error.line(),
                        error.column()
                    ),
                });
            }
        };
        let name = match SessionName::parse(&session) {
            Ok(name) if *name.tenant() == tenant => name,
            _ => {
                metrics::counter!("ingest_foreign_sessions_total").increment(1);
                debug!(tenant = %tenant, "webhook for a foreign session refused");
                return refused(IngestRefusal::ForeignSession);
            }
        };

        // 3. The tenant, its key, its status.
        let record = match self.supervisor.inner.effects.directory.get(&tenant).await {
            Ok(record) => record,
            Err(tenant_isolation::Error::TenantNotFound { .. }) => {
                return refused(IngestRefusal::UnknownTenant);
            }
            Err(error) => {
                warn!(tenant = %tenant, kind = error.kind(), "tenant directory unavailable; webhook to be retried");
                return IngestOutcome::RetryLater {
                    reason: format!("tenant directory: {}", error.kind()),
                };
            }
        };
        if let Err(kind) = verify(&record, headers, body) {
            debug!(tenant = %tenant, kind, "webhook signature refused");
            return refused(IngestRefusal::BadSignature);
        }
        if record.status != TenantStatus::Active {
            debug!(tenant = %tenant, status = %record.status, "webhook of an inactive tenant dropped");
            return IngestOutcome::Dropped {
                reason: DropReason::TenantInactive,
            };
        }

        // 4. Parse; the metadata must agree with the session name.
        let event = match WebhookEvent::from_slice(body) {
            Ok(event) => event,
            Err(error) => {
                return refused(IngestRefusal::Malformed {
                    detail: error.to_string(),
                });
            }
        };
        if event.session != name.as_str() {
            // The routing read and the full parse disagree: never act on such a body.
            return refused(IngestRefusal::Malformed {
                detail: "the session name is ambiguous".to_owned(),
            });
        }
        let metadata_tenant = event.metadata.get(TENANT);
        let metadata_chip = event.metadata.get(CHIP);
        if metadata_tenant.is_some_and(|t| t != name.tenant().as_str())
            || metadata_chip.is_some_and(|c| c != name.chip().as_str())
        {
            warn!(tenant = %tenant, chip = %name.chip(), "webhook metadata names another tenant or chip");
            return refused(IngestRefusal::MetadataMismatch);
        }

        // 5. Freshness.
        let now = self.now();
        if let Some(refusal) = self.stale(event.timestamp_ms, now) {
            debug!(tenant = %tenant, chip = %name.chip(), "stale webhook refused");
            return refused(refusal);
        }

        // 6. De-duplicate and store, atomically. Store first, then act.
        let entry = InboxEntry {
            tenant: tenant.clone(),
            chip: name.chip().clone(),
            keys: dedupe_keys(&event),
            received_at: now,
            body: body.to_vec(),
        };
        match self.inbox.admit(entry).await {
            Ok(Admission::New) => {}
            Ok(Admission::Duplicate) => {
                return IngestOutcome::Dropped {
                    reason: DropReason::Duplicate,
                };
            }
            Err(error) => {
                warn!(tenant = %tenant, kind = error.kind(), "webhook inbox unavailable; webhook to be retried");
                return IngestOutcome::RetryLater {
                    reason: format!("webhook inbox: {error}"),
                };
            }
        }

        // 7. Observe, publish, answer. The event is durable from here: failures are logged
        // and still answered 200.
        let key = ChipKey::new(tenant, name.chip().clone());
        self.apply(&key, &event, now).await
    }

    /// Step 7, after the inbox stored the event.
    async fn apply(&self, key: &ChipKey, event: &WebhookEvent, now: SystemTime) -> IngestOutcome {
        let accepted = IngestOutcome::Accepted {
            key: key.clone(),
            event: event.id.clone(),
        };
        match self.supervisor.observe(&key.tenant, event).await {
            Ok(ObserveOutcome::UnknownChip) => {
                debug!(tenant = %key.tenant, chip = %key.chip, "webhook for a chip the supervisor does not know; stored, not published");
                return accepted;
            }
            Ok(_) => {}
            Err(error) => {
                warn!(tenant = %key.tenant, chip = %key.chip, %error, "observing a stored webhook failed; the inbox holds it");
            }
        }
        match &event.payload {
            EventPayload::Message(message) | EventPayload::MessageAny(message)
                if !message.from_me =>
            {
                let kind = ChipChangeKind::MessageReceived {
                    chat: message.from.clone(),
                    message_id: message.id.clone(),
                };
                self.publish(key, kind, now).await;
                if let Some(buffer) = &self.inbound {
                    buffer.push(
                        key.tenant.clone(),
                        key.chip.clone(),
                        message.from.clone(),
                        InboundMessage::from_event(message, now),
                    );
                }
            }
            EventPayload::MessageAck(ack) => {
                match self.inbox.record_ack(&key.tenant, &ack.id, ack.ack).await {
                    Ok(true) => {
                        let chat = if ack.from_me {
                            ack.to.clone().or_else(|| ack.from.clone())
                        } else {
                            ack.from.clone().or_else(|| ack.to.clone())
                        };
                        if ack.from_me {
                            self.advance_outbox(key, &ack.id, ack.ack, now).await;
                        }
                        let kind = ChipChangeKind::MessageStatus {
                            chat: chat.unwrap_or_default(),
                            message_id: ack.id.clone(),
                            ack: ack.ack,
                        };
                        self.publish(key, kind, now).await;
                    }
                    Ok(false) => {
                        debug!(tenant = %key.tenant, chip = %key.chip, "an ack that does not move its message forward dropped");
                        return IngestOutcome::Dropped {
                            reason: DropReason::AckRegression,
                        };
                    }
                    Err(error) => {
                        warn!(tenant = %key.tenant, chip = %key.chip, kind = error.kind(), "recording a stored ack failed; no status change published");
                    }
                }
            }
            _ => {}
        }
        accepted
    }

    /// Moves the outbox record of a sent message forward (best effort: the inbox holds the
    /// ack, and its highest level is what the status change publishes).
    async fn advance_outbox(
        &self,
        key: &ChipKey,
        message_id: &str,
        ack: waha_client::webhook::MessageAck,
        now: SystemTime,
    ) {
        match self
            .outbox()
            .advance_ack(&key.tenant, message_id, ack, now)
            .await
        {
            Ok(moved) => {
                debug!(tenant = %key.tenant, chip = %key.chip, message_id, moved, "outbox ack");
            }
            Err(error) => {
                warn!(tenant = %key.tenant, chip = %key.chip, kind = error.kind(), "moving a sent message's outbox record failed");
            }
        }
    }

    /// Publishes a change of the chip, as its record stands now (best effort: the record and
    /// the inbox are the truth).
    async fn publish(&self, key: &ChipKey, kind: ChipChangeKind, now: SystemTime) {
        match self.supervisor.get_chip(&key.tenant, &key.chip).await {
            Ok(record) => {
                let mut change = ChipChange::of(&record, kind);
                change.at = now;
                self.supervisor.publish(change).await;
            }
            Err(error) => {
                warn!(tenant = %key.tenant, chip = %key.chip, %error, "a webhook's change could not be published; the inbox holds the event");
            }
        }
    }

    /// Step 5: `Some` refusal when the signed timestamp is outside the window.
    fn stale(&self, timestamp_ms: Option<u64>, now: SystemTime) -> Option<IngestRefusal> {
        let timestamp_ms = timestamp_ms?;
        let window_secs = self.config.freshness.as_secs();
        let Some(at) = UNIX_EPOCH.checked_add(Duration::from_millis(timestamp_ms)) else {
            return Some(IngestRefusal::Stale {
                age_secs: 0,
                window_secs,
            });
        };
        match now.duration_since(at) {
            Ok(age) if age > self.config.freshness => Some(IngestRefusal::Stale {
                age_secs: age.as_secs(),
                window_secs,
            }),
            Ok(_) => None,
            Err(ahead) if ahead.duration() > self.config.future_skew => {
                Some(IngestRefusal::Stale {
                    age_secs: 0,
                    window_secs,
                })
            }
            Err(_) => None,
        }
    }
}

fn refused(refusal: IngestRefusal) -> IngestOutcome {
    IngestOutcome::Refused(refusal)
}

/// Verifies the signature with the tenant's key. Answers the failure's kind.
///
/// Rotation (issue 13, "Inactive tenants and secret rotation") is not built yet: the
/// directory holds one webhook key per tenant. Once it keeps the previous key while a rotation
/// is in progress, try it here after the current one fails.
fn verify(tenant: &Tenant, headers: &HeaderMap, body: &[u8]) -> Result<(), &'static str> {
    verify_headers(&tenant.secrets.webhook_hmac_key, headers, body).map_err(|error| error.kind())
}

/// The de-duplication keys of an event (see [`Inbox`]).
fn dedupe_keys(event: &WebhookEvent) -> Vec<String> {
    let mut keys = Vec::with_capacity(2);
    if let Some(id) = &event.id {
        keys.push(event_key(id));
    }
    match &event.payload {
        EventPayload::Message(message) | EventPayload::MessageAny(message) => {
            keys.push(message_key(&message.id));
        }
        EventPayload::MessageAck(ack) => keys.push(ack_key(&ack.id, ack.ack)),
        _ => {}
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_the_setting() {
        let config = IngestConfig::for_supervisor(&SupervisorConfig::new(
            "http://127.0.0.1/webhooks/{tenant}",
        ));
        let span = SupervisorConfig::new("http://127.0.0.1/webhooks/{tenant}").webhook_retry_span();
        assert!(config.freshness >= span);
        config.validate(span).unwrap();

        let mut short = config.clone();
        short.freshness = span / 2;
        short.inbox_retention = IngestConfig::DEFAULT_INBOX_RETENTION;
        assert_eq!(short.validate(span).unwrap_err().setting(), "freshness");

        let mut forgetful = config.clone();
        forgetful.inbox_retention = forgetful.freshness;
        assert_eq!(
            forgetful.validate(span).unwrap_err().setting(),
            "inbox_retention"
        );

        let mut zero = config;
        zero.max_body_bytes = 0;
        assert_eq!(zero.validate(span).unwrap_err().setting(), "max_body_bytes");
    }

    #[test]
    fn statuses() {
        let refused = |r: IngestRefusal| IngestOutcome::Refused(r).http_status();
        assert_eq!(refused(IngestRefusal::TooLarge { limit: 1 }), 413);
        assert_eq!(refused(IngestRefusal::BadSignature), 401);
        // One answer before a verified signature: tenants cannot be enumerated.
        assert_eq!(refused(IngestRefusal::ForeignSession), 401);
        assert_eq!(refused(IngestRefusal::UnknownTenant), 401);
        assert_eq!(refused(IngestRefusal::MetadataMismatch), 403);
        assert_eq!(
            IngestOutcome::Dropped {
                reason: DropReason::Duplicate
            }
            .http_status(),
            200
        );
        assert_eq!(
            IngestOutcome::RetryLater {
                reason: String::new()
            }
            .http_status(),
            503
        );
    }
}
