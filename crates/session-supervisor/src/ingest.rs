//! Webhook ingest (issue 13, "Webhook ingest"): [`Ingest`], its configuration and outcomes,
//! and the axum adapter (feature `axum`).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use serde::Deserialize;
use tenant_isolation::metadata::{CHIP, TENANT};
use tenant_isolation::{SessionName, Tenant, TenantId, TenantStatus};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use waha_client::webhook::{EventPayload, WebhookEvent, verify_headers};

use crate::chip::ChipKey;
use crate::config::SupervisorConfig;
use crate::events::{ChipChange, ChipChangeKind};
use crate::inbound::{InboundBuffer, InboundMessage, InboxMark};
use crate::inbox::{
    Admission, EntryId, Inbox, InboxEntry, InboxError, ack_key, event_key, message_key,
};
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
    /// How long an inbox entry may stay unapplied before the sweep
    /// ([`Ingest::spawn_reapply`]) applies it again (30 s): longer than an ingest takes to
    /// apply a delivery it just stored, or the sweep applies deliveries still in progress a
    /// second time; shorter is faster recovery after a crash. Must not be zero, and must be
    /// shorter than `inbox_retention`. With an inbound buffer wired
    /// ([`Ingest::with_inbound`]) the sweep uses a longer grace when the buffer may hold a
    /// message for longer ([`Ingest::sweep_grace`]).
    pub reapply_grace: Duration,
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
    /// The default [`reapply_grace`](Self::reapply_grace): 30 s.
    pub const DEFAULT_REAPPLY_GRACE: Duration = Duration::from_secs(30);

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
            reapply_grace: Self::DEFAULT_REAPPLY_GRACE,
        }
    }

    /// Checks the settings; `retry_span` is how long WAHA keeps retrying one delivery
    /// ([`SupervisorConfig::webhook_retry_span`]).
    ///
    /// # Errors
    /// [`IngestConfigError::Invalid`] naming the setting: `max_body_bytes` of zero, a
    /// `freshness` shorter than `retry_span` (a legitimate retry after an outage would be
    /// refused as a replay), an `inbox_retention` shorter than `freshness + future_skew`, a
    /// `reapply_grace` of zero (the sweep would apply deliveries an ingest is still applying)
    /// or not shorter than `inbox_retention` (entries would be pruned before the sweep
    /// reached them).
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
        if self.reapply_grace.is_zero() {
            return Err(IngestConfigError::invalid(
                "reapply_grace",
                "must not be zero: the sweep would apply deliveries an ingest is still applying",
            ));
        }
        if self.reapply_grace >= self.inbox_retention {
            return Err(IngestConfigError::invalid(
                "reapply_grace",
                format!(
                    "{:?} is not shorter than inbox_retention ({:?}): entries would be pruned \
                     before the sweep applied them",
                    self.reapply_grace, self.inbox_retention
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
    /// The URL names no tenant of the directory (401, like every refusal before a verified
    /// signature, so tenants cannot be enumerated).
    UnknownTenant,
    /// The body's session is not a chipfleet session name, or belongs to another tenant than
    /// the URL's (401, as above).
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
    /// | `Refused(BadSignature)`, `Refused(ForeignSession)`, `Refused(UnknownTenant)` | 401 (one status for every refusal before a verified signature) |
    /// | `Refused(MetadataMismatch)` (after the signature verified) | 403 |
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
///    of whose keys was seen is a duplicate: dropped when the entry that brought the key was
///    applied, applied again (step 7) when it was not ([`Admission::Unapplied`]: the process
///    that stored it crashed or failed before the end of step 7).
/// 7. [`Supervisor::observe`], then a [`ChipChangeKind::MessageReceived`] for an incoming
///    message (not one this account sent) or a [`ChipChangeKind::MessageStatus`] for an ack
///    that moves the message forward; an ack that does not is dropped
///    ([`DropReason::AckRegression`]) after it was stored and observed. An ack that moves
///    its message forward also moves the send's [`Outbox`] record
///    ([`Outbox::advance_ack`], forward only; the supervisor's outbox unless
///    [`Ingest::with_outbox`] names another).
/// 8. The entry is marked applied ([`Inbox::mark_applied`]) once step 7 completed; an entry
///    whose step 7 failed in part (`observe`, a message's publish, an ack's record) stays
///    unapplied for the sweep; and an inbound message handed to the inbound buffer ([`Ingest::with_inbound`]),
///    whose entry the buffer marks once the message's batch reached its final disposition,
///    and one the buffer refused (it shuts down), whose entry stays unapplied for the sweep.
///
/// **Answers.** WAHA retries every non-2xx answer (16 tries by default): what is dropped on
/// purpose (duplicates, inactive tenants, ack regressions) is answered 200; "retry later"
/// (503) only when the tenant directory or the inbox is down; refusals (4xx) for what no retry
/// can fix. **Nothing answered 2xx is lost:** the inbox stores the delivery before anything
/// acts on it, and a failure after that (observe, the ack mark, publishing, the applied mark)
/// is logged and still answered 200: the event is durable. An entry whose step 7 did not end
/// with the applied mark (a crash; a failed mark) is applied again, at least once: by WAHA's
/// retry, if one comes (step 6), else by the sweep, [`Ingest::reapply_pending`], which the
/// host runs with [`Ingest::spawn_reapply`]. An event may so be applied twice (see
/// [`Ingest::reapply_pending`]); step 7 tolerates a repeat.
///
/// Nothing here logs a body, a header value or a key; outcomes carry no secret.
///
/// Cheap to clone (clones share the supervisor, the inbox and the buffer) and to share behind
/// an `Arc`; any replica can ingest.
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
/// // Once, at start-up: applies again what a crash left unapplied.
/// let sweep = ingest.spawn_reapply(std::time::Duration::from_secs(10));
/// // On the way down:
/// sweep.shutdown().await;
/// # let _ = status; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Ingest {
    supervisor: Supervisor,
    inbox: Arc<dyn Inbox>,
    config: IngestConfig,
    inbound: Option<Arc<InboundBuffer>>,
    outbox: Option<Arc<dyn Outbox>>,
    /// The effective grace of the sweep and of step 6 ([`Ingest::sweep_grace`]).
    sweep_grace: Duration,
}

impl fmt::Debug for Ingest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ingest")
            .field("supervisor", &self.supervisor)
            .field("config", &self.config)
            .field("inbound", &self.inbound.is_some())
            .field("sweep_grace", &self.sweep_grace)
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
        let sweep_grace = config.reapply_grace;
        Ok(Ingest {
            supervisor,
            inbox,
            config,
            inbound: None,
            outbox: None,
            sweep_grace,
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

    /// What [`Ingest::with_inbound`] adds to the buffer's
    /// [`max_hold`](crate::InboundConfig::max_hold) for the sweep's grace: 10 s (a late
    /// timer, a slow inbox, clocks of replicas a little apart).
    pub const INBOUND_GRACE_MARGIN: Duration = Duration::from_secs(10);

    /// Hands every accepted inbound message (step 7: a `message` not sent by this account,
    /// for a chip the supervisor knows) to `buffer` as well, after its `MessageReceived` is
    /// published, so the host's [`InboundHandler`](crate::InboundHandler) gets a
    /// conversation's messages in batches.
    ///
    /// **At least once, from the durable inbox.** The inbox stored each message first, and
    /// step 8 leaves the entry's applied mark to the buffer: it marks the entry once the
    /// message's batch reached its final disposition (handled, given up after its retries or
    /// a permanent error, or shed). A message still in the buffer's memory when the process
    /// dies so stays unapplied, and the sweep ([`Ingest::reapply_pending`]) applies it again:
    /// its `MessageReceived` is published again and it is pushed to the buffer of the process
    /// that sweeps. A message the buffer refuses (its shutdown began) is not marked either,
    /// and every sweep applies it again: stop the ingest and the sweep before
    /// [`InboundHandle::shutdown`](crate::InboundHandle::shutdown).
    ///
    /// **The grace.** A message legitimately waits in the buffer up to
    /// [`InboundConfig::max_hold`](crate::InboundConfig::max_hold) unapplied, so the sweep's
    /// grace ([`Ingest::sweep_grace`]) becomes the longer of
    /// [`IngestConfig::reapply_grace`] and `max_hold` + [`Ingest::INBOUND_GRACE_MARGIN`]
    /// (347.5 s with the defaults): recovery after a crash takes that long. Step 6 leaves a
    /// duplicate of an unapplied entry younger than that grace to the delivery that stored it,
    /// so NOWEB's second copy of a message waiting in the buffer is still dropped.
    #[must_use]
    pub fn with_inbound(mut self, buffer: Arc<InboundBuffer>) -> Self {
        let hold = buffer
            .config()
            .max_hold()
            .saturating_add(Self::INBOUND_GRACE_MARGIN);
        self.sweep_grace = self.config.reapply_grace.max(hold);
        if self.sweep_grace >= self.config.inbox_retention {
            warn!(
                sweep_grace = ?self.sweep_grace,
                inbox_retention = ?self.config.inbox_retention,
                "the inbound buffer may hold a message longer than the inbox keeps it: entries may be pruned before the sweep applies them again"
            );
        }
        self.inbound = Some(buffer);
        self
    }

    /// The grace [`Ingest::spawn_reapply`]'s sweep applies entries after, and under which
    /// step 6 drops a duplicate of an unapplied entry: [`IngestConfig::reapply_grace`], or
    /// longer with an inbound buffer wired (see [`Ingest::with_inbound`]).
    pub fn sweep_grace(&self) -> Duration {
        self.sweep_grace
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

    /// How many entries [`Ingest::spawn_reapply`]'s sweep claims at a time.
    pub const REAPPLY_BATCH: usize = 100;

    /// The sweep, once: applies again the inbox entries of every tenant that are not marked
    /// applied and were received more than `grace` ago by the supervisor's clock (a crash or a
    /// failure after step 6 left them so, and no retry of WAHA's came), at most `limit` of
    /// them, oldest first. [`Ingest::spawn_reapply`] runs it periodically; a host calls it
    /// directly only to drive it itself.
    ///
    /// Each entry is claimed first ([`Inbox::claim_unapplied`]): a sweep on another replica
    /// skips it for one `grace`, and takes it up after that if this one died before marking
    /// it. Each entry is then, in order:
    /// - of a tenant that is not active (or no longer in the directory): marked applied
    ///   without acting on it, as the ingest drops such a tenant's webhooks
    ///   ([`ReapplyReport::dropped_inactive`]);
    /// - of a tenant the directory cannot answer for: left for a later sweep
    ///   ([`ReapplyReport::deferred`]);
    /// - a body that no longer parses as a webhook: marked applied and counted
    ///   ([`ReapplyReport::unparsable`]; logged without the body);
    /// - else parsed and applied as step 7 applies a new delivery, then marked applied
    ///   ([`ReapplyReport::reapplied`], `ingest_reapplied_total{via="sweep"}`). A failed
    ///   mark is logged; the entry is applied again one grace later. An inbound message
    ///   pushed to the inbound buffer is marked by the buffer instead, once its batch reached
    ///   its final disposition (see [`Ingest::with_inbound`]): this is how a message the
    ///   buffer of a process that died held is handed over again.
    ///
    /// **At least once.** An entry may be applied twice: the process that stored it may have
    /// acted on it and died before the mark, or still be acting on it after `grace` (choose a
    /// grace well above the time step 7 takes). A message is then published and pushed to the
    /// inbound buffer again. An ack is not: its level was recorded by the first application
    /// ([`Inbox::record_ack`] answers `false` for a repeat), so a second one publishes no
    /// `MessageStatus` and moves no outbox record, and the recorded highest level is the truth
    /// either way; if the first application died between recording the level and
    /// publishing, that status change is not published at all (its level still is in the
    /// inbox).
    ///
    /// # Errors
    /// [`InboxError`] when the inbox cannot claim entries (nothing was applied).
    pub async fn reapply_pending(
        &self,
        grace: Duration,
        limit: usize,
    ) -> Result<ReapplyReport, InboxError> {
        let now = self.now();
        let cutoff = now.checked_sub(grace).unwrap_or(UNIX_EPOCH);
        let claimed = self.inbox.claim_unapplied(cutoff, now, limit).await?;
        let mut report = ReapplyReport::default();
        let mut tenants: HashMap<TenantId, TenantState> = HashMap::new();
        for (id, entry) in claimed {
            let state = match tenants.get(&entry.tenant) {
                Some(state) => *state,
                None => {
                    let state = self.tenant_state(&entry.tenant).await;
                    tenants.insert(entry.tenant.clone(), state);
                    state
                }
            };
            let key = ChipKey::new(entry.tenant, entry.chip);
            match state {
                TenantState::Active => {}
                TenantState::Inactive => {
                    debug!(tenant = %key.tenant, chip = %key.chip, entry = %id, "an unapplied webhook of an inactive tenant dropped");
                    self.mark_applied(&key, id).await;
                    report.dropped_inactive += 1;
                    continue;
                }
                TenantState::Unavailable => {
                    report.deferred += 1;
                    continue;
                }
            }
            let Ok(event) = WebhookEvent::from_slice(&entry.body) else {
                warn!(tenant = %key.tenant, chip = %key.chip, entry = %id, "a stored webhook no longer parses; marked applied without acting on it");
                self.mark_applied(&key, id).await;
                report.unparsable += 1;
                continue;
            };
            let (outcome, mark) = self.apply(&key, &event, id, now).await;
            debug!(tenant = %key.tenant, chip = %key.chip, entry = %id, outcome = outcome.kind(), "an unapplied webhook applied again");
            if mark == Mark::Now {
                self.mark_applied(&key, id).await;
            }
            metrics::counter!("ingest_reapplied_total", "via" => "sweep").increment(1);
            report.reapplied += 1;
        }
        if report.claimed() > 0 {
            info!(
                reapplied = report.reapplied,
                dropped_inactive = report.dropped_inactive,
                unparsable = report.unparsable,
                deferred = report.deferred,
                "inbox sweep: unapplied webhooks handled"
            );
        }
        Ok(report)
    }

    /// Starts the sweep (on the current Tokio runtime: call it from within one): at once,
    /// then every `every`, [`Ingest::reapply_pending`] with [`Ingest::sweep_grace`]
    /// ([`IngestConfig::reapply_grace`], or longer with an inbound buffer wired),
    /// [`Ingest::REAPPLY_BATCH`] entries at a time until a batch comes back short. Run it on
    /// every replica (claims keep them from applying one entry together); every 10 s is
    /// plenty. An `every` below 10 ms is taken as 10 ms. A
    /// sweep that fails (the inbox is down) is logged and tried again `every` later.
    ///
    /// Stop it with [`ReapplyHandle::shutdown`]; dropping the handle stops it too, after the
    /// batch in progress.
    #[must_use = "stop the sweep through the handle (dropping it stops the sweep)"]
    pub fn spawn_reapply(&self, every: Duration) -> ReapplyHandle {
        let (stop, stopped) = watch::channel(false);
        let every = every.max(MIN_REAPPLY_EVERY);
        let task = tokio::spawn(reapply_loop(self.clone(), every, stopped));
        ReapplyHandle { stop, task }
    }

    /// Whether `tenant`'s webhooks are acted on, as step 3 decides.
    async fn tenant_state(&self, tenant: &TenantId) -> TenantState {
        match self.supervisor.inner.effects.directory.get(tenant).await {
            Ok(record) if record.status == TenantStatus::Active => TenantState::Active,
            Ok(_) | Err(tenant_isolation::Error::TenantNotFound { .. }) => TenantState::Inactive,
            Err(error) => {
                warn!(tenant = %tenant, kind = error.kind(), "tenant directory unavailable; its unapplied webhooks are left for a later sweep");
                TenantState::Unavailable
            }
        }
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
        let stored = match self.inbox.admit(entry).await {
            Ok(Admission::New { entry }) => entry,
            Ok(Admission::Unapplied { received_at, .. })
                if now
                    .duration_since(received_at)
                    .is_ok_and(|age| age < self.sweep_grace)
                    || now < received_at =>
            {
                // Stored within the grace: the delivery that stored it is most likely acting
                // on it now (NOWEB's two copies of a message arrive together), or its message
                // waits in the inbound buffer (the sweep's grace covers that), and the sweep
                // applies it if that delivery failed. Acting on this copy too would publish
                // the message twice.
                return IngestOutcome::Dropped {
                    reason: DropReason::Duplicate,
                };
            }
            Ok(Admission::Unapplied { entry, .. }) => {
                // A retry of an event whose first delivery was stored but not applied within
                // the grace (its process crashed or failed): apply this one, and mark the
                // stored entry.
                debug!(tenant = %tenant, chip = %name.chip(), %entry, "a duplicate of an unapplied entry: applying it");
                metrics::counter!("ingest_reapplied_total", "via" => "retry").increment(1);
                entry
            }
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
        };

        // 7. Observe, publish, answer. The event is durable from here: failures are logged
        // and still answered 200.
        let key = ChipKey::new(tenant, name.chip().clone());
        let (outcome, mark) = self.apply(&key, &event, stored, now).await;
        // 8. Applied, whatever the outcome (an ack regression was acted on too); a message
        // the inbound buffer took is marked by the buffer, one it refused by nobody.
        if mark == Mark::Now {
            self.mark_applied(&key, stored).await;
        }
        outcome
    }

    /// Step 8: marks `entry` applied. A failure is logged only: the delivery was acted on,
    /// and the sweep applies it again one grace later.
    async fn mark_applied(&self, key: &ChipKey, entry: EntryId) {
        if let Err(error) = self.inbox.mark_applied(&key.tenant, entry).await {
            warn!(tenant = %key.tenant, chip = %key.chip, %entry, kind = error.kind(), "marking a webhook applied failed; the sweep applies it again");
        }
    }

    /// Step 7, after the inbox stored the event as `entry`. Answers the outcome and who marks
    /// `entry` applied.
    async fn apply(
        &self,
        key: &ChipKey,
        event: &WebhookEvent,
        entry: EntryId,
        now: SystemTime,
    ) -> (IngestOutcome, Mark) {
        let accepted = IngestOutcome::Accepted {
            key: key.clone(),
            event: event.id.clone(),
        };
        match self.supervisor.observe(&key.tenant, event).await {
            Ok(ObserveOutcome::UnknownChip) => {
                debug!(tenant = %key.tenant, chip = %key.chip, "webhook for a chip the supervisor does not know; stored, not published");
                return (accepted, Mark::Now);
            }
            Ok(_) => {}
            Err(error) => {
                // Left unapplied: the sweep (or WAHA's retry past the grace) applies the whole
                // event again, which step 7 tolerates.
                warn!(tenant = %key.tenant, chip = %key.chip, %error, "observing a stored webhook failed; the inbox holds it for the sweep");
                return (accepted, Mark::Left);
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
                if !self.publish(key, kind, now).await {
                    // Not pushed either: the sweep publishes and pushes it again.
                    return (accepted, Mark::Left);
                }
                if let Some(buffer) = &self.inbound {
                    let mark = InboxMark::new(Arc::clone(&self.inbox), key.tenant.clone(), entry);
                    let taken = buffer.push_tracked(
                        key.tenant.clone(),
                        key.chip.clone(),
                        message.from.clone(),
                        InboundMessage::from_event(message, now),
                        mark,
                    );
                    if !taken {
                        debug!(tenant = %key.tenant, chip = %key.chip, %entry, "the inbound buffer shuts down; the entry stays unapplied for the sweep");
                        return (accepted, Mark::Left);
                    }
                    return (accepted, Mark::Buffer);
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
                        // A failed publish is not retried: the level is recorded, and a
                        // re-applied ack of a recorded level publishes nothing.
                        self.publish(key, kind, now).await;
                    }
                    Ok(false) => {
                        debug!(tenant = %key.tenant, chip = %key.chip, "an ack that does not move its message forward dropped");
                        let dropped = IngestOutcome::Dropped {
                            reason: DropReason::AckRegression,
                        };
                        return (dropped, Mark::Now);
                    }
                    Err(error) => {
                        warn!(tenant = %key.tenant, chip = %key.chip, kind = error.kind(), "recording a stored ack failed; the inbox holds it for the sweep");
                        return (accepted, Mark::Left);
                    }
                }
            }
            _ => {}
        }
        (accepted, Mark::Now)
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
    ///
    /// Answers whether the change went to the bus (`false`: the chip could not be read).
    async fn publish(&self, key: &ChipKey, kind: ChipChangeKind, now: SystemTime) -> bool {
        match self.supervisor.get_chip(&key.tenant, &key.chip).await {
            Ok(record) => {
                let mut change = ChipChange::of(&record, kind);
                change.at = now;
                self.supervisor.publish(change).await;
                true
            }
            Err(error) => {
                warn!(tenant = %key.tenant, chip = %key.chip, %error, "a webhook's change could not be published; the inbox holds the event");
                false
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

/// What one [`Ingest::reapply_pending`] did with the entries it claimed; each is counted in
/// exactly one field.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReapplyReport {
    /// Applied again (step 7) and marked applied.
    pub reapplied: usize,
    /// Of a tenant that is not active (suspended, deleted, or no longer in the directory):
    /// marked applied without acting on them, as the ingest drops such a tenant's webhooks.
    pub dropped_inactive: usize,
    /// Whose body no longer parses as a webhook: marked applied without acting on them.
    pub unparsable: usize,
    /// Left unapplied because the tenant directory was unavailable: claimed again one grace
    /// later.
    pub deferred: usize,
}

impl ReapplyReport {
    /// How many entries the sweep claimed: the sum of the counts.
    pub fn claimed(&self) -> usize {
        self.reapplied
            .saturating_add(self.dropped_inactive)
            .saturating_add(self.unparsable)
            .saturating_add(self.deferred)
    }
}

/// The running inbox sweep, from [`Ingest::spawn_reapply`].
#[derive(Debug)]
pub struct ReapplyHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ReapplyHandle {
    /// Whether the sweep still runs.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Stops the sweep: waits for the batch in progress, if any (bound it with
    /// `tokio::time::timeout` if the inbox may hang; entries claimed and not marked are
    /// claimed again one grace later).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            warn!(%error, "the inbox sweep ended abnormally");
        }
    }
}

/// The shortest period of [`Ingest::spawn_reapply`].
const MIN_REAPPLY_EVERY: Duration = Duration::from_millis(10);

/// Who marks an entry applied after step 7 ([`Ingest::with_inbound`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mark {
    /// The ingest, at once (step 8).
    Now,
    /// The inbound buffer, once the message's batch reached its final disposition.
    Buffer,
    /// Nobody: step 7 did not complete (`observe`, the publish of a message or the ack's
    /// record failed) or the inbound buffer refused the message (it shuts down); the entry
    /// stays unapplied and the sweep applies it again.
    Left,
}

/// Whether a tenant's webhooks are acted on ([`Ingest::reapply_pending`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TenantState {
    Active,
    /// Suspended, deleted, or no longer in the directory.
    Inactive,
    /// The directory did not answer.
    Unavailable,
}

/// [`Ingest::spawn_reapply`]'s task.
async fn reapply_loop(ingest: Ingest, every: Duration, mut stop: watch::Receiver<bool>) {
    let grace = ingest.sweep_grace;
    loop {
        // Batch after batch while they come back full (a backlog after an outage).
        loop {
            if *stop.borrow() || stop.has_changed().is_err() {
                return;
            }
            match ingest.reapply_pending(grace, Ingest::REAPPLY_BATCH).await {
                Ok(report) if report.claimed() >= Ingest::REAPPLY_BATCH => {}
                Ok(_) => break,
                Err(error) => {
                    warn!(kind = error.kind(), %error, "the inbox sweep could not claim entries; trying again later");
                    break;
                }
            }
        }
        if !crate::runtime::pause(&mut stop, every).await {
            return;
        }
    }
}

fn refused(refusal: IngestRefusal) -> IngestOutcome {
    IngestOutcome::Refused(refusal)
}

/// Verifies the signature with the tenant's key, or with its previous key while a rotation
/// is in progress (sessions not yet moved sign with it). Answers the failure's kind (the
/// current key's, when both fail).
fn verify(tenant: &Tenant, headers: &HeaderMap, body: &[u8]) -> Result<(), &'static str> {
    let secrets = &tenant.secrets;
    match verify_headers(&secrets.webhook_hmac_key, headers, body) {
        Ok(()) => Ok(()),
        Err(error) => match &secrets.previous_webhook_hmac_key {
            Some(previous) if verify_headers(previous, headers, body).is_ok() => {
                metrics::counter!("ingest_previous_key_total").increment(1);
                Ok(())
            }
            _ => Err(error.kind()),
        },
    }
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

        assert_eq!(config.reapply_grace, IngestConfig::DEFAULT_REAPPLY_GRACE);
        let mut eager = config.clone();
        eager.reapply_grace = Duration::ZERO;
        assert_eq!(eager.validate(span).unwrap_err().setting(), "reapply_grace");
        let mut late = config.clone();
        late.reapply_grace = late.inbox_retention;
        assert_eq!(late.validate(span).unwrap_err().setting(), "reapply_grace");

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
