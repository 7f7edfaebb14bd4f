//! Paced sending (issue 13, "Sending, paced"): [`Supervisor::send_text`], its request,
//! receipt and errors, and the anti-ban choreography (seed 002: seen, then typing for a time
//! that grows with the text, then the send).
//!
//! **The order** (each step only after the previous one passed):
//! 1. the tenant is active ([`SendError::TenantInactive`]);
//! 2. the request is valid ([`SendError::InvalidRequest`]; a pure check);
//! 3. the chip exists ([`SendError::ChipNotFound`]), is `Working` and desired running
//!    ([`SendError::NotReady`]);
//! 4. the outbox is looked up by (tenant, idempotency key): an existing record answers without
//!    sending ([`SendReceipt::replayed`]; a key reused for another chip, chat or text is
//!    [`SendError::IdempotencyConflict`]; a record whose outcome is not known is
//!    [`SendError::SendOutcomeUnknown`]);
//! 5. a WAHA client for the chip's container (nothing is counted if there is none);
//! 6. the outbox record is written `Pending` (the key is claimed), **before anything is
//!    counted and before any WAHA call**: of two racing calls with one key only one goes on,
//!    and one key never sends twice, also across a crash (a crash leaves `Pending`, and a
//!    retry answers `SendOutcomeUnknown`);
//! 7. the pacer first ([`SendPacer::acquire`](tenant_isolation::SendPacer::acquire)): a
//!    refusal whose wait is longer than [`SendRequest::max_wait`] is [`SendError::Paced`] and
//!    **nothing is counted** (the pacer counts nothing when it refuses, and the daily quota is
//!    not asked); then the daily quota (`admit_send`, not safe to retry: it runs once per send
//!    the pacer let through): [`SendError::QuotaExceeded`]. A refusal of either sent nothing,
//!    so the claim is given back and the key may be tried again;
//! 8. the pacer's jitter, then the choreography (seen, typing start, typing for
//!    [`Choreography::typing_for`], typing stop; each best effort), then `sendText`;
//! 9. the outcome is recorded: `Sent` with WAHA's message id; `Unknown` when the request may
//!    have reached WAHA (never retried blindly); `Failed` when WAHA refused it (a
//!    [`ChipChangeKind::SendFailed`] is published); a request that certainly never left
//!    (a refused connection, a 429) frees its key so the same request can be retried.
//!
//! Sends are not fenced by tenant ownership: any replica may send. The outbox's unique
//! (tenant, key) is what keeps one key to one send across replicas; pacing limits hold across
//! replicas only with a shared pacer backend.
//!
//! Texts, chats and idempotency keys are never logged nor put into errors: logs carry lengths,
//! tenant and chip ids, and WAHA's message id.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tenant_isolation::{ChipId, Pace, PaceLimit, QuotaLimit, TenantId, TenantStatus};
use tracing::{debug, info, warn};
use waha_client::webhook::MessageAck;
use waha_client::{
    ChatRef, SeenReceipt, SentMessage, TextMessage, TransientCause, WahaApi, WahaError,
};

use crate::chip::{ChipKey, ChipRecord, RunState};
use crate::events::{ChipChange, ChipChangeKind};
use crate::outbox::{Begin, Outbox, OutboxError, OutboxRecord, OutboxStatus};
use crate::phase::PhaseName;
use crate::store::StoreError;
use crate::supervisor::Supervisor;

/// The longest idempotency key, in characters.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;
/// The longest chat id accepted, in bytes.
pub const MAX_CHAT_LEN: usize = 256;
/// The longest text accepted, in characters (WhatsApp's limit).
pub const MAX_TEXT_CHARS: usize = 65_536;
/// How many times a send asks the pacer again after waiting, at most.
const PACER_ROUNDS: usize = 16;

/// The anti-ban choreography before a send (seed 002): mark the chat as seen, show "typing…"
/// for a time that grows with the text's length, then send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choreography {
    /// Send a "seen" receipt for the chat first (default `true`).
    pub seen: bool,
    /// Typing time per character of the text (default 50 ms).
    pub typing_per_char: Duration,
    /// The shortest typing time (default 1 s). Zero with a zero `typing_per_char`: no typing.
    pub typing_min: Duration,
    /// The longest typing time (default 6 s).
    pub typing_max: Duration,
}

impl Default for Choreography {
    fn default() -> Self {
        Choreography {
            seen: true,
            typing_per_char: Duration::from_millis(50),
            typing_min: Duration::from_secs(1),
            typing_max: Duration::from_secs(6),
        }
    }
}

impl Choreography {
    /// How long "typing…" shows before `text` is sent:
    /// `min(typing_max, typing_min + characters × typing_per_char)`.
    pub fn typing_for(&self, text: &str) -> Duration {
        let chars = u32::try_from(text.chars().count()).unwrap_or(u32::MAX);
        self.typing_min
            .saturating_add(self.typing_per_char.saturating_mul(chars))
            .min(self.typing_max)
    }
}

/// A text to send ([`Supervisor::send_text`]).
///
/// `Debug` shows lengths only: the chat, the text and the key may carry personal data.
#[derive(Clone, PartialEq, Eq)]
pub struct SendRequest {
    /// The chat, e.g. `5511999999999@c.us`.
    pub chat: String,
    /// The text.
    pub text: String,
    /// The host's idempotency key: 1 to [`MAX_IDEMPOTENCY_KEY`] printable ASCII characters
    /// (space to `~`), unique per tenant. A retry of the same request uses the same key.
    pub idempotency_key: String,
    /// The choreography before the send; `None` sends at once (after the pacer's jitter).
    /// [`SendRequest::new`] turns it on with [`Choreography::default`].
    pub choreography: Option<Choreography>,
    /// How long the call may wait for the pacer (default zero: a pacer refusal answers
    /// [`SendError::Paced`] at once). The pacer's jitter of a granted send is always waited.
    pub max_wait: Duration,
}

impl SendRequest {
    /// `text` to `chat` under `idempotency_key`, with the default choreography and no wait
    /// for the pacer.
    pub fn new(
        chat: impl Into<String>,
        text: impl Into<String>,
        idempotency_key: impl Into<String>,
    ) -> Self {
        SendRequest {
            chat: chat.into(),
            text: text.into(),
            idempotency_key: idempotency_key.into(),
            choreography: Some(Choreography::default()),
            max_wait: Duration::ZERO,
        }
    }

    /// With `choreography` (`None`: none).
    #[must_use]
    pub fn with_choreography(mut self, choreography: Option<Choreography>) -> Self {
        self.choreography = choreography;
        self
    }

    /// Waiting up to `max_wait` for the pacer.
    #[must_use]
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Checks the request.
    ///
    /// # Errors
    /// [`SendError::InvalidRequest`] naming the problem (never a value).
    pub fn validate(&self) -> Result<(), SendError> {
        let invalid = |problem: &'static str| Err(SendError::InvalidRequest { problem });
        let key_chars = self.idempotency_key.chars().count();
        if key_chars == 0 || key_chars > MAX_IDEMPOTENCY_KEY {
            return invalid("the idempotency key must have 1 to 128 characters");
        }
        if !self
            .idempotency_key
            .chars()
            .all(|c| c == ' ' || c.is_ascii_graphic())
        {
            return invalid("the idempotency key must be printable ASCII (space to `~`)");
        }
        if self.chat.trim().is_empty() || self.chat.len() > MAX_CHAT_LEN {
            return invalid("the chat must have 1 to 256 bytes");
        }
        if self.chat.chars().any(char::is_control) {
            return invalid("the chat must not contain control characters");
        }
        if self.text.trim().is_empty() {
            return invalid("the text must not be empty");
        }
        if self.text.chars().count() > MAX_TEXT_CHARS {
            return invalid("the text is longer than 65536 characters");
        }
        if let Some(choreography) = &self.choreography
            && choreography.typing_min > choreography.typing_max
        {
            return invalid("the choreography's typing_min exceeds its typing_max");
        }
        Ok(())
    }
}

impl fmt::Debug for SendRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendRequest")
            .field("chat_len", &self.chat.len())
            .field("text_len", &self.text.len())
            .field("idempotency_key_len", &self.idempotency_key.len())
            .field("choreography", &self.choreography)
            .field("max_wait", &self.max_wait)
            .finish()
    }
}

/// What [`Supervisor::send_text`] answers: the send's outbox record as it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendReceipt {
    /// The chip that sent.
    pub key: ChipKey,
    /// WAHA's message id (`None` when WAHA's answer carried none).
    pub message_id: Option<String>,
    /// Where the send stands: `Sent` (with its delivery state), or, for a replay,
    /// `Failed` (WAHA refused it the first time; use a new key to send again).
    pub status: OutboxStatus,
    /// `true` when the key had been used before and nothing was sent by this call.
    pub replayed: bool,
}

impl SendReceipt {
    fn of(record: &OutboxRecord, replayed: bool) -> Self {
        SendReceipt {
            key: ChipKey::new(record.tenant.clone(), record.chip.clone()),
            message_id: record.message_id.clone(),
            status: record.status.clone(),
            replayed,
        }
    }
}

/// Why [`Supervisor::send_text`] did not send. No variant carries a text, a chat or an
/// idempotency key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The tenant is suspended or deleted: its sends are refused.
    #[error("tenant {tenant} is {status}; its sends are refused")]
    TenantInactive {
        /// The tenant.
        tenant: TenantId,
        /// Its status.
        status: TenantStatus,
    },
    /// No such chip.
    #[error("chip {key} not found")]
    ChipNotFound {
        /// The chip.
        key: ChipKey,
    },
    /// The chip cannot send now: it is not `Working` (or is being stopped or deleted, or its
    /// container cannot be reached).
    #[error("chip {key} is {phase}: it cannot send now")]
    NotReady {
        /// The chip.
        key: ChipKey,
        /// Its phase.
        phase: PhaseName,
    },
    /// The request is malformed.
    #[error("invalid send request: {problem}")]
    InvalidRequest {
        /// What is wrong (never a value).
        problem: &'static str,
    },
    /// The idempotency key was used before for another request (another chip, chat or
    /// text). Nothing was sent.
    #[error("the idempotency key was used before for another request of tenant {tenant}")]
    IdempotencyConflict {
        /// The tenant.
        tenant: TenantId,
    },
    /// The pacer holds the chip back: ask again after `retry_after`. Nothing was counted
    /// (neither by the pacer nor against the daily quota).
    #[error("chip {key} is paced by its {limit}: retry after {retry_after:?}")]
    Paced {
        /// The chip.
        key: ChipKey,
        /// How long to wait before asking again.
        retry_after: Duration,
        /// The limit holding it back.
        limit: PaceLimit,
    },
    /// The tenant's daily send limit is reached (the pacer had let the send through).
    #[error("tenant {tenant}: {limit} is {max}, {in_use} in use")]
    QuotaExceeded {
        /// The tenant.
        tenant: TenantId,
        /// The limit reached ([`QuotaLimit::MaxSendsPerDay`]).
        limit: QuotaLimit,
        /// The plan's maximum.
        max: u32,
        /// How many were counted.
        in_use: u32,
    },
    /// The request may have reached WAHA but no answer said it was sent (a time-out, a lost
    /// connection, a 5xx; or an earlier call with the same key has not finished, or stopped
    /// in a crash). It is **not** retried: the outbox record stays `Pending` or `Unknown`,
    /// and every retry with the same key answers this again.
    #[error(
        "the outcome of a send from chip {key} is unknown: the request may have reached WAHA, \
         so it is not retried"
    )]
    SendOutcomeUnknown {
        /// The chip.
        key: ChipKey,
    },
    /// WAHA refused the send (the outbox record is `Failed`), or the request certainly never
    /// reached it (the key is free again: [`is_retryable`](SendError::is_retryable)).
    #[error("WAHA: {0}")]
    Waha(#[source] WahaError),
    /// The chip store failed.
    #[error("chip store: {0}")]
    Store(#[source] StoreError),
    /// The send outbox failed (nothing was sent).
    #[error("send outbox: {0}")]
    Outbox(#[source] OutboxError),
    /// The tenant directory, the quota ledger or the pacer failed.
    #[error("tenant directory, quota or pacer: {0}")]
    Tenant(#[source] tenant_isolation::Error),
}

impl SendError {
    /// A short, stable name of the variant, for metric labels and HTTP mappings.
    pub fn kind(&self) -> &'static str {
        match self {
            SendError::TenantInactive { .. } => "tenant_inactive",
            SendError::ChipNotFound { .. } => "chip_not_found",
            SendError::NotReady { .. } => "not_ready",
            SendError::InvalidRequest { .. } => "invalid_request",
            SendError::IdempotencyConflict { .. } => "idempotency_conflict",
            SendError::Paced { .. } => "paced",
            SendError::QuotaExceeded { .. } => "quota_exceeded",
            SendError::SendOutcomeUnknown { .. } => "send_outcome_unknown",
            SendError::Waha(_) => "waha",
            SendError::Store(_) => "store",
            SendError::Outbox(_) => "outbox",
            SendError::Tenant(_) => "tenant",
        }
    }

    /// Whether the same call (same key) may succeed later unchanged: a pacer refusal; a chip
    /// on its way to `Working` (or whose container is coming back); a request that certainly
    /// never reached WAHA; a retryable store, outbox or directory failure. Never for
    /// [`SendError::SendOutcomeUnknown`].
    pub fn is_retryable(&self) -> bool {
        match self {
            SendError::Paced { .. } => true,
            SendError::NotReady { phase, .. } => matches!(
                phase,
                PhaseName::Pending
                    | PhaseName::Provisioning
                    | PhaseName::BackingOff
                    | PhaseName::Working
            ),
            SendError::Waha(error) => certainly_not_sent(error),
            SendError::Store(error) => error.is_retryable(),
            SendError::Outbox(error) => error.is_retryable(),
            SendError::Tenant(error) => error.is_retryable(),
            _ => false,
        }
    }
}

impl From<OutboxError> for SendError {
    fn from(error: OutboxError) -> Self {
        SendError::Outbox(error)
    }
}

impl From<StoreError> for SendError {
    fn from(error: StoreError) -> Self {
        SendError::Store(error)
    }
}

impl From<tenant_isolation::Error> for SendError {
    /// Inactive tenants and quota refusals become their own variants; the rest is wrapped.
    fn from(error: tenant_isolation::Error) -> Self {
        match error {
            tenant_isolation::Error::TenantSuspended { tenant } => SendError::TenantInactive {
                tenant,
                status: TenantStatus::Suspended,
            },
            tenant_isolation::Error::TenantDeleted { tenant } => SendError::TenantInactive {
                tenant,
                status: TenantStatus::Deleted,
            },
            tenant_isolation::Error::QuotaExceeded {
                tenant,
                limit,
                max,
                in_use,
            } => SendError::QuotaExceeded {
                tenant,
                limit,
                max,
                in_use,
            },
            other => SendError::Tenant(other),
        }
    }
}

/// Whether a failed `sendText` certainly never reached WAHA (or WAHA certainly did not act
/// on it): a refused connection, or a 429.
fn certainly_not_sent(error: &WahaError) -> bool {
    error.request_not_sent()
        || matches!(
            error,
            WahaError::Transient {
                cause: TransientCause::Unavailable { status: 429 },
                ..
            }
        )
}

/// Whether WAHA answered a failed `sendText` with a refusal (it did not send): its typed
/// 4xx answers, and any other 3xx/4xx. Everything else (time-outs, lost connections, 5xx,
/// undecodable or oversized answers, variants newer than this crate) may have been sent.
fn refused_by_waha(error: &WahaError) -> bool {
    match error {
        WahaError::Unauthorized { .. }
        | WahaError::NotFound { .. }
        | WahaError::AlreadyExists { .. }
        | WahaError::AlreadyStarted { .. }
        | WahaError::NotReady { .. }
        | WahaError::Invalid { .. }
        | WahaError::SingleSessionServer { .. }
        | WahaError::SessionNotCreated { .. } => true,
        WahaError::Api { status, .. } => (300..500).contains(status),
        _ => false,
    }
}

/// The delivery state `sendText`'s answer reports (`ack`), else `Server`: WAHA has it.
fn answered_ack(sent: &SentMessage) -> MessageAck {
    sent.raw
        .get("ack")
        .and_then(serde_json::Value::as_i64)
        .map_or(MessageAck::Server, MessageAck::from)
}

/// Counts a send's outcome in `supervisor_sends_total{outcome}`.
fn count(result: &Result<SendReceipt, SendError>) {
    let outcome = match result {
        Ok(receipt) if receipt.replayed => "replayed",
        Ok(_) => "sent",
        Err(error) => error.kind(),
    };
    metrics::counter!("supervisor_sends_total", "outcome" => outcome).increment(1);
}

impl Supervisor {
    /// The send outbox (for hosts that prune it, or read a record).
    pub fn outbox(&self) -> &Arc<dyn Outbox> {
        &self.inner.outbox
    }

    /// Sends `request.text` from `chip` to `request.chat`, paced, at most once per
    /// idempotency key. See the [module documentation](crate::send) for the order of the
    /// checks; counted in `supervisor_sends_total{outcome}`.
    ///
    /// Cancel safety: dropping the future after the outbox record was written leaves it
    /// `Pending`; a retry with the same key then answers [`SendError::SendOutcomeUnknown`].
    ///
    /// # Errors
    /// [`SendError`]; each variant says whether anything was counted or sent.
    pub async fn send_text(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        request: SendRequest,
    ) -> Result<SendReceipt, SendError> {
        let result = self.send_paced(tenant, chip, &request).await;
        count(&result);
        result
    }

    async fn send_paced(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        request: &SendRequest,
    ) -> Result<SendReceipt, SendError> {
        let effects = &self.inner.effects;
        let key = ChipKey::new(tenant.clone(), chip.clone());

        // 1. The tenant is active.
        tenant_isolation::require_active(&*effects.directory, tenant).await?;

        // 2. The request.
        request.validate()?;

        // 3. The chip exists and works.
        let record = effects
            .store
            .get(&key)
            .await?
            .ok_or_else(|| SendError::ChipNotFound { key: key.clone() })?;
        let phase = record.observed.phase.name();
        if phase != PhaseName::Working || record.desired.run != RunState::Running {
            return Err(SendError::NotReady { key, phase });
        }

        let candidate = OutboxRecord::pending(
            tenant.clone(),
            request.idempotency_key.clone(),
            chip.clone(),
            request.chat.clone(),
            &request.text,
            effects.clock.now(),
        );

        // 4. One key, one send.
        if let Some(existing) = self
            .inner
            .outbox
            .get(tenant, &request.idempotency_key)
            .await?
        {
            return replay(&existing, &candidate, &key);
        }

        // 5. A client for the chip's container (before anything is counted).
        let client: Arc<dyn WahaApi> = effects.client_for(&record).await.map_err(|error| {
            debug!(tenant = %tenant, chip = %chip, kind = error.kind, "no WAHA client to send with");
            SendError::NotReady {
                key: key.clone(),
                phase,
            }
        })?;

        // 6. The key is claimed before anything is counted: of two racing calls with one
        //    key, the loser stops here, having used neither pacer nor quota.
        let started = match self.inner.outbox.begin(candidate.clone()).await? {
            Begin::Started(started) => started,
            Begin::Existing(existing) => {
                debug!(tenant = %tenant, chip = %chip, "a concurrent send holds the key; not sending");
                return replay(&existing, &candidate, &key);
            }
        };

        // 7. The pacer first, then the daily quota (counted once, for a send the pacer let
        //    through). A refusal of either sent nothing: the claim is given back, so the same
        //    key may be tried again later.
        let admitted = async {
            let jitter = self.pace(&key, request.max_wait).await?;
            let admission = effects.quota.admit_send(tenant).await?;
            debug!(tenant = %tenant, chip = %chip, sent_today = admission.sent, max = admission.max, "send admitted");
            Ok::<_, SendError>(jitter)
        }
        .await;
        let jitter = match admitted {
            Ok(jitter) => jitter,
            Err(refused) => {
                if let Err(error) = self
                    .inner
                    .outbox
                    .abandon(tenant, &request.idempotency_key)
                    .await
                {
                    warn!(tenant = %tenant, chip = %chip, %error, "giving back an unsent send's key failed; it stays pending");
                }
                return Err(refused);
            }
        };

        // 8. Jitter, choreography, send.
        tokio::time::sleep(jitter).await;
        let session = key.session_name();
        if let Some(choreography) = &request.choreography {
            choreograph(&*client, session.as_str(), request, choreography, &key).await;
        }
        let message = TextMessage::new(session.as_str(), &request.chat, &request.text);
        let answer = client.send_text(&message).await;

        // 9. The outcome.
        self.settle(&record, &started, request, answer).await
    }

    /// Asks the pacer, waiting while its answer fits in `max_wait`; answers the jitter to
    /// wait before sending.
    async fn pace(&self, key: &ChipKey, max_wait: Duration) -> Result<Duration, SendError> {
        let pacer = &self.inner.send_pacer;
        let mut waited = Duration::ZERO;
        for _ in 0..PACER_ROUNDS {
            match pacer.acquire(&key.tenant, &key.chip).await? {
                Pace::Go { jitter } => return Ok(jitter),
                Pace::RetryAfter { after, limit } => {
                    let total = waited.saturating_add(after);
                    if total > max_wait {
                        debug!(tenant = %key.tenant, chip = %key.chip, %limit, ?after, "send paced");
                        return Err(SendError::Paced {
                            key: key.clone(),
                            retry_after: after,
                            limit,
                        });
                    }
                    tokio::time::sleep(after).await;
                    waited = total;
                }
            }
        }
        // The pacer kept answering short waits: answer its last one to the caller.
        match pacer.acquire(&key.tenant, &key.chip).await? {
            Pace::Go { jitter } => Ok(jitter),
            Pace::RetryAfter { after, limit } => Err(SendError::Paced {
                key: key.clone(),
                retry_after: after,
                limit,
            }),
        }
    }

    /// Records what `sendText` answered and turns it into the call's answer.
    async fn settle(
        &self,
        chip_record: &ChipRecord,
        started: &OutboxRecord,
        request: &SendRequest,
        answer: Result<SentMessage, WahaError>,
    ) -> Result<SendReceipt, SendError> {
        let key = &chip_record.key;
        let outbox = &self.inner.outbox;
        let now = self.inner.effects.clock.now();
        let idempotency_key = &started.key;
        match answer {
            Ok(sent) => {
                let status = OutboxStatus::Sent {
                    ack: answered_ack(&sent),
                };
                if sent.id.is_none() {
                    warn!(tenant = %key.tenant, chip = %key.chip, "sendText answered without a message id; acks cannot be matched");
                }
                info!(
                    tenant = %key.tenant, chip = %key.chip, message_id = sent.id.as_deref().unwrap_or(""),
                    text_len = request.text.len(), key_len = idempotency_key.len(), "message sent"
                );
                match outbox
                    .finish(
                        &key.tenant,
                        idempotency_key,
                        status.clone(),
                        sent.id.clone(),
                        now,
                    )
                    .await
                {
                    Ok(record) => Ok(SendReceipt::of(&record, false)),
                    Err(error) => {
                        // The message went out: say so. The record stays `Pending`, so a retry
                        // with the key answers `SendOutcomeUnknown`, never a second send.
                        warn!(
                            tenant = %key.tenant, chip = %key.chip, kind = error.kind(),
                            "a sent message could not be recorded in the outbox; it stays pending"
                        );
                        let mut record = started.clone();
                        record.status = status;
                        record.message_id = sent.id;
                        Ok(SendReceipt::of(&record, false))
                    }
                }
            }
            Err(error) if certainly_not_sent(&error) => {
                debug!(tenant = %key.tenant, chip = %key.chip, kind = error.kind(), "sendText never reached WAHA; the key is free again");
                if let Err(outbox_error) = outbox.abandon(&key.tenant, idempotency_key).await {
                    warn!(
                        tenant = %key.tenant, chip = %key.chip, kind = outbox_error.kind(),
                        "freeing the key of an unsent message failed; it stays pending"
                    );
                }
                Err(SendError::Waha(error))
            }
            Err(error) if refused_by_waha(&error) => {
                let reason = error.kind().to_owned();
                warn!(tenant = %key.tenant, chip = %key.chip, kind = %reason, "WAHA refused the send");
                let failed = OutboxStatus::Failed {
                    reason: reason.clone(),
                };
                if let Err(outbox_error) = outbox
                    .finish(&key.tenant, idempotency_key, failed, None, now)
                    .await
                {
                    warn!(
                        tenant = %key.tenant, chip = %key.chip, kind = outbox_error.kind(),
                        "recording a refused send failed; it stays pending"
                    );
                }
                let mut change = ChipChange::of(
                    chip_record,
                    ChipChangeKind::SendFailed {
                        chat: request.chat.clone(),
                        key: idempotency_key.clone(),
                        reason,
                    },
                );
                change.at = now;
                self.publish(change).await;
                Err(SendError::Waha(error))
            }
            Err(error) => {
                warn!(
                    tenant = %key.tenant, chip = %key.chip, kind = error.kind(),
                    "sendText may have reached WAHA; its outcome is unknown and it is not retried"
                );
                if let Err(outbox_error) = outbox
                    .finish(
                        &key.tenant,
                        idempotency_key,
                        OutboxStatus::Unknown,
                        None,
                        now,
                    )
                    .await
                {
                    warn!(
                        tenant = %key.tenant, chip = %key.chip, kind = outbox_error.kind(),
                        "recording an unknown send outcome failed; it stays pending"
                    );
                }
                Err(SendError::SendOutcomeUnknown { key: key.clone() })
            }
        }
    }
}

/// The answer for a key that has a record: a conflict when it describes another request;
/// otherwise the record's receipt (settled) or `SendOutcomeUnknown` (pending or unknown).
fn replay(
    existing: &OutboxRecord,
    candidate: &OutboxRecord,
    key: &ChipKey,
) -> Result<SendReceipt, SendError> {
    if !existing.same_request(candidate) {
        debug!(tenant = %key.tenant, chip = %key.chip, "idempotency key reused for another request");
        return Err(SendError::IdempotencyConflict {
            tenant: key.tenant.clone(),
        });
    }
    if existing.status.is_settled() {
        Ok(SendReceipt::of(existing, true))
    } else {
        debug!(tenant = %key.tenant, chip = %key.chip, status = %existing.status, "a send with this key is pending or unknown; not sending again");
        Err(SendError::SendOutcomeUnknown { key: key.clone() })
    }
}

/// Seen, typing start, typing, typing stop: each call best effort (a failure is logged; the
/// send goes on and meets the real problem, if any).
async fn choreograph(
    client: &dyn WahaApi,
    session: &str,
    request: &SendRequest,
    choreography: &Choreography,
    key: &ChipKey,
) {
    if choreography.seen
        && let Err(error) = client
            .send_seen(&SeenReceipt::new(session, &request.chat))
            .await
    {
        debug!(tenant = %key.tenant, chip = %key.chip, kind = error.kind(), "sendSeen failed; sending anyway");
    }
    let typing = choreography.typing_for(&request.text);
    if typing.is_zero() {
        return;
    }
    let chat = ChatRef::new(session, &request.chat);
    let typing_shown = match client.start_typing(&chat).await {
        Ok(()) => true,
        Err(error) => {
            debug!(tenant = %key.tenant, chip = %key.chip, kind = error.kind(), "startTyping failed; sending anyway");
            false
        }
    };
    tokio::time::sleep(typing).await;
    if typing_shown && let Err(error) = client.stop_typing(&chat).await {
        debug!(tenant = %key.tenant, chip = %key.chip, kind = error.kind(), "stopTyping failed; sending anyway");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_grows_with_the_text_within_bounds() {
        let choreography = Choreography::default();
        assert_eq!(choreography.typing_for("hi"), Duration::from_millis(1_100));
        assert_eq!(
            choreography.typing_for(&"x".repeat(1_000)),
            Duration::from_secs(6)
        );
        let off = Choreography {
            seen: false,
            typing_per_char: Duration::ZERO,
            typing_min: Duration::ZERO,
            typing_max: Duration::ZERO,
        };
        assert!(off.typing_for("hello").is_zero());
    }

    #[test]
    fn requests_are_validated_without_echoing_values() {
        let ok = SendRequest::new("5511999999999@c.us", "hello", "order-42");
        ok.validate().unwrap();
        for bad in [
            SendRequest::new("5511999999999@c.us", "hello", ""),
            SendRequest::new("5511999999999@c.us", "hello", "k".repeat(129)),
            SendRequest::new("5511999999999@c.us", "hello", "tab\there"),
            SendRequest::new("5511999999999@c.us", "hello", "clé"),
            SendRequest::new("", "hello", "k"),
            SendRequest::new("5511999999999@c.us", "  ", "k"),
        ] {
            let error = bad.validate().unwrap_err();
            assert_eq!(error.kind(), "invalid_request");
            assert!(!error.to_string().contains("5511"));
        }
        SendRequest::new("5511999999999@c.us", "hello", "k".repeat(128))
            .validate()
            .unwrap();
        let debug = format!("{ok:?}");
        assert!(
            !debug.contains("hello") && !debug.contains("order-42"),
            "{debug}"
        );
    }

    #[test]
    fn waha_errors_are_sorted_by_whether_the_send_may_have_happened() {
        let transient = |cause| WahaError::Transient {
            cause,
            detail: String::new(),
        };
        assert!(certainly_not_sent(&transient(TransientCause::Connect)));
        assert!(certainly_not_sent(&transient(
            TransientCause::Unavailable { status: 429 }
        )));
        for maybe in [
            transient(TransientCause::Timeout),
            transient(TransientCause::Disconnected),
            transient(TransientCause::Unavailable { status: 504 }),
            WahaError::Api {
                status: 500,
                body: String::new(),
            },
        ] {
            assert!(!certainly_not_sent(&maybe) && !refused_by_waha(&maybe));
        }
        assert!(refused_by_waha(&WahaError::Api {
            status: 400,
            body: String::new()
        }));
        assert!(refused_by_waha(&WahaError::NotFound {
            message: String::new()
        }));
        assert!(refused_by_waha(&WahaError::Unauthorized { status: 401 }));
    }

    #[test]
    fn the_answers_ack_or_server() {
        let with = SentMessage::from(serde_json::json!({"id": "m1", "ack": 0}));
        assert_eq!(answered_ack(&with), MessageAck::Pending);
        let without = SentMessage::from(serde_json::json!({"id": "m1"}));
        assert_eq!(answered_ack(&without), MessageAck::Server);
    }
}
