//! The API's errors: one JSON shape, one mapping per sibling error type.
//!
//! ```json
//! {"error": {"code": "quota_exceeded", "message": "...", "limit": "max_chips", "max": 2, "in_use": 2}}
//! ```
//!
//! | Status | When |
//! |---|---|
//! | 400 | invalid input (`invalid_input`, `invalid_id`, `invalid_spec`, `invalid_request`, `idempotency_key_required`, ...) |
//! | 401 | no token, a malformed one, or a wrong one (`unauthorized`) |
//! | 403 | the tenant is suspended or deleted (`tenant_inactive`, with `reason`) |
//! | 404 | no such tenant, chip (also another tenant's chip) or message; unknown route |
//! | 409 | a conflict with the current state (`chip_conflict`, `being_deleted`, `not_ready` with `phase`, `idempotency_conflict`, `send_outcome_unknown`, `tenant_already_exists`, ...) |
//! | 422 | a plan limit (`quota_exceeded` with `limit`, `max`, `in_use`) |
//! | 429 | the send pacer or the daily send limit (`paced` with `retry_after_ms`; `quota_exceeded`, retryable at the next UTC day), with `Retry-After` |
//! | 502 | WAHA refused a call (`waha_error`, with its `kind`) |
//! | 503 | retryable: busy, shutting down, a backend unavailable (`retryable: true`, `Retry-After`) |
//! | 500 | anything else (`internal`; details only in the log) |
//!
//! Messages come from the sibling crates' `Display`, which never carries a secret; WAHA's
//! answers are never repeated (only their kind), and 5xx details go to the log only.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use session_supervisor::{OutboxError, SendError, SupervisorError};
use tenant_isolation::{PaceLimit, QuotaLimit};
use tracing::warn;
use waha_client::WahaError;

use super::auth::TokenStoreError;

/// An API error: a status, a stable snake-case code, a message for humans, and details (the
/// limit or reason that applies). Answers as
/// `{"error": {"code": ..., "message": ..., ...details}}`, with `Retry-After` when a retry
/// after a delay can help and `WWW-Authenticate: Bearer` on 401.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Map<String, Value>,
    retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Map::new(),
            retry_after: None,
        }
    }

    /// With a detail field.
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// With `Retry-After` (whole seconds, rounded up) and `retryable: true`.
    #[must_use]
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self.details
            .insert("retryable".to_owned(), Value::Bool(true));
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// 400 `invalid_input`.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404 `<code>`.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 500 `internal`: the cause goes to the log (as `kind` and its `Display`), not to the
    /// client.
    pub fn internal(kind: &'static str, error: &dyn fmt::Display) -> Self {
        warn!(kind, %error, "request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred; it was logged",
        )
        .with("kind", kind)
    }

    /// 503 `<code>`, retryable after a second; the cause goes to the log.
    pub fn unavailable(code: &'static str, error: &dyn fmt::Display) -> Self {
        warn!(code, %error, "a backend is unavailable");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code,
            "a backend is unavailable now; retry later",
        )
        .retry_after(Duration::from_secs(1))
    }

    /// A server-side failure: 503 when retrying can help, 500 otherwise.
    fn server(code: &'static str, retryable: bool, error: &dyn fmt::Display) -> Self {
        if retryable {
            ApiError::unavailable(code, error)
        } else {
            ApiError::internal(code, error)
        }
    }

    /// A plan limit: 429 for the daily send limit (it resets at the start of the next UTC
    /// day: `Retry-After` says in how many seconds), 422 for the others.
    fn quota(limit: QuotaLimit, max: u32, in_use: u32, message: String) -> Self {
        let refused = |status: StatusCode| {
            ApiError::new(status, "quota_exceeded", message)
                .with("limit", limit.as_str())
                .with("max", max)
                .with("in_use", in_use)
        };
        match limit {
            QuotaLimit::MaxSendsPerDay => refused(StatusCode::TOO_MANY_REQUESTS)
                .retry_after(until_next_utc_day(SystemTime::now())),
            _ => refused(StatusCode::UNPROCESSABLE_ENTITY),
        }
    }

    /// The tenant may not operate (suspended or deleted).
    fn tenant_inactive(reason: &str, message: String) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "tenant_inactive", message).with("reason", reason)
    }

    /// A failed WAHA call: never repeats WAHA's answer, only its kind.
    pub(crate) fn waha(error: &WahaError) -> Self {
        let kind = error.kind();
        if error.is_retryable() {
            warn!(kind, %error, "WAHA unavailable");
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "waha_unavailable",
                format!("WAHA cannot be reached now ({kind}); retry later"),
            )
            .with("kind", kind)
            .retry_after(Duration::from_secs(1));
        }
        if matches!(
            error,
            WahaError::NotReady { .. } | WahaError::NotFound { .. }
        ) {
            return ApiError::new(
                StatusCode::CONFLICT,
                "not_ready",
                format!("WAHA's session is not ready for this now ({kind})"),
            )
            .with("kind", kind)
            .retry_after(Duration::from_secs(1));
        }
        warn!(kind, %error, "WAHA refused a call");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "waha_error",
            format!("WAHA refused the call ({kind})"),
        )
        .with("kind", kind)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = Map::new();
        error.insert("code".to_owned(), Value::String(self.code.to_owned()));
        error.insert("message".to_owned(), Value::String(self.message));
        for (key, value) in self.details {
            error.entry(key).or_insert(value);
        }
        let mut body = Map::new();
        body.insert("error".to_owned(), Value::Object(error));
        let mut response = (self.status, Json(Value::Object(body))).into_response();
        let headers = response.headers_mut();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            headers.insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<SupervisorError> for ApiError {
    /// The one mapping of the supervisor's errors, by [`SupervisorError::kind`].
    fn from(error: SupervisorError) -> Self {
        let error = match error {
            SupervisorError::Tenant(inner) => return ApiError::from(inner),
            SupervisorError::Waha(inner) => return ApiError::waha(&inner),
            other => other,
        };
        let code = error.kind();
        let retryable = error.is_retryable();
        let message = error.to_string();
        match &error {
            SupervisorError::ChipNotFound { key } => {
                ApiError::not_found(code, message).with("chip", key.chip.as_str())
            }
            SupervisorError::ChipConflict { key, .. } => {
                ApiError::new(StatusCode::CONFLICT, code, message).with("chip", key.chip.as_str())
            }
            SupervisorError::BeingDeleted { key } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
                    .with("chip", key.chip.as_str())
                    .retry_after(Duration::from_secs(1))
            }
            SupervisorError::QuotaExceeded {
                limit, max, in_use, ..
            } => ApiError::quota(*limit, *max, *in_use, message),
            SupervisorError::TenantInactive { status, .. } => {
                ApiError::tenant_inactive(status.as_str(), message)
            }
            SupervisorError::InvalidSpec { problem } => {
                ApiError::new(StatusCode::BAD_REQUEST, code, message)
                    .with("problem", problem.as_str())
            }
            SupervisorError::NotReady { key, phase, what } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
                    .with("chip", key.chip.as_str())
                    .with("phase", phase.as_str())
                    .with("what", *what)
            }
            SupervisorError::Busy { .. } | SupervisorError::NotOwned { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
                    .retry_after(Duration::from_secs(1))
            }
            SupervisorError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
                    .retry_after(Duration::from_secs(5))
            }
            SupervisorError::OffboardIncomplete { remaining, .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
                    .with("remaining", *remaining)
                    .retry_after(Duration::from_secs(5))
            }
            _ => ApiError::server(code, retryable, &error),
        }
    }
}

impl From<SendError> for ApiError {
    /// The one mapping of the send errors, by [`SendError::kind`].
    fn from(error: SendError) -> Self {
        let error = match error {
            SendError::Tenant(inner) => return ApiError::from(inner),
            SendError::Waha(inner) => return ApiError::waha(&inner),
            other => other,
        };
        let code = error.kind();
        let retryable = error.is_retryable();
        let message = error.to_string();
        match &error {
            SendError::TenantInactive { status, .. } => {
                ApiError::tenant_inactive(status.as_str(), message)
            }
            SendError::ChipNotFound { key } => {
                ApiError::not_found(code, message).with("chip", key.chip.as_str())
            }
            SendError::NotReady { key, phase } => {
                let refused = ApiError::new(StatusCode::CONFLICT, code, message)
                    .with("chip", key.chip.as_str())
                    .with("phase", phase.as_str());
                if retryable {
                    refused.retry_after(Duration::from_secs(2))
                } else {
                    refused
                }
            }
            SendError::InvalidRequest { problem } => {
                ApiError::new(StatusCode::BAD_REQUEST, code, message).with("problem", *problem)
            }
            SendError::IdempotencyConflict { .. } | SendError::SendOutcomeUnknown { .. } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            SendError::Paced {
                retry_after, limit, ..
            } => ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message)
                .with("limit", pace_limit(*limit))
                .with(
                    "retry_after_ms",
                    u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
                )
                .retry_after(*retry_after),
            SendError::QuotaExceeded {
                limit, max, in_use, ..
            } => ApiError::quota(*limit, *max, *in_use, message),
            _ => ApiError::server(code, retryable, &error),
        }
    }
}

impl From<tenant_isolation::Error> for ApiError {
    /// The one mapping of the tenant directory's errors, by `kind()`.
    fn from(error: tenant_isolation::Error) -> Self {
        use tenant_isolation::Error as E;
        let code = error.kind();
        let retryable = error.is_retryable();
        let message = error.to_string();
        match &error {
            E::InvalidId { .. } | E::InvalidSessionName { .. } | E::InvalidConfig { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, code, message)
            }
            E::TenantNotFound { tenant } => {
                ApiError::not_found(code, message).with("tenant", tenant.as_str())
            }
            E::TenantAlreadyExists { tenant } => {
                ApiError::new(StatusCode::CONFLICT, code, message).with("tenant", tenant.as_str())
            }
            E::TenantSuspended { .. } => ApiError::tenant_inactive("suspended", message),
            E::TenantDeleted { .. } => ApiError::tenant_inactive("deleted", message),
            E::InvalidStatusTransition { from, to, .. } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
                    .with("from", from.as_str())
                    .with("to", to.as_str())
            }
            E::QuotaExceeded {
                limit, max, in_use, ..
            } => ApiError::quota(*limit, *max, *in_use, message),
            E::SecretsChanged { .. } | E::VersionConflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
                    .retry_after(Duration::from_secs(1))
            }
            _ => ApiError::server(code, retryable, &error),
        }
    }
}

impl From<OutboxError> for ApiError {
    fn from(error: OutboxError) -> Self {
        match error {
            OutboxError::NotFound => {
                ApiError::not_found("message_not_found", "no message with this id or key")
            }
            other => ApiError::server("outbox", other.is_retryable(), &other),
        }
    }
}

impl From<TokenStoreError> for ApiError {
    fn from(error: TokenStoreError) -> Self {
        ApiError::server("token_store", error.is_retryable(), &error)
    }
}

/// How long from `now` until the next UTC day starts (when the daily send quotas reset;
/// tenant-isolation's `UtcDay`): at least one second.
fn until_next_utc_day(now: SystemTime) -> Duration {
    const DAY: u64 = 86_400;
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or(0);
    Duration::from_secs((DAY - secs % DAY).max(1))
}

/// A pacer limit's stable name.
fn pace_limit(limit: PaceLimit) -> &'static str {
    match limit {
        PaceLimit::ChipBurst => "chip_burst",
        PaceLimit::ChipDaily { .. } => "chip_daily",
        PaceLimit::TenantBurst => "tenant_burst",
        PaceLimit::ChipGap => "chip_gap",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daily_quota_refusal_says_when_the_next_utc_day_starts() {
        const DAY: u64 = 86_400;
        let late = UNIX_EPOCH + Duration::from_secs(3 * DAY + 86_000);
        assert_eq!(until_next_utc_day(late), Duration::from_secs(400));
        let midnight = UNIX_EPOCH + Duration::from_secs(3 * DAY);
        assert_eq!(until_next_utc_day(midnight), Duration::from_secs(DAY));

        let response =
            ApiError::quota(QuotaLimit::MaxSendsPerDay, 1, 1, "refused".to_owned()).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let after: u64 = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok())
            .expect("a Retry-After in whole seconds");
        assert!((1..=DAY).contains(&after), "{after}");

        let other =
            ApiError::quota(QuotaLimit::MaxChips, 2, 2, "refused".to_owned()).into_response();
        assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(other.headers().get(RETRY_AFTER).is_none());
    }
}
