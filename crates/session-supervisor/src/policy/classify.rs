//! Classification: engine signals and sibling crates' errors to a [`Reason`].
//!
//! Payload shapes are those of `docs/waha-contract.md` ("How each engine reports a
//! disconnect") and of `waha-sim`'s renditions (`session/disconnect.rs`).

use std::time::{Duration, SystemTime};

use container_pool::Engine;
use serde_json::Value;
use waha_client::webhook::{EventPayload, StateChange};
use waha_client::{TransientCause, WahaError};

use super::Reason;
use crate::signal::SignalBody;
use crate::store::StoreError;

/// A disconnect an engine reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disconnect {
    /// Why.
    pub reason: Reason,
    /// How long a temporary ban lasts, when the engine says (GOWS `TemporaryBan.Expire`;
    /// NOWEB's 402 carries none).
    pub ban_lasts: Option<Duration>,
}

impl Disconnect {
    fn of(reason: Reason) -> Self {
        Disconnect {
            reason,
            ban_lasts: None,
        }
    }
}

/// Classifies an `engine.event` (`{event, data}`) of `engine`. `None`: the event reports no
/// disconnect (a connect, a QR refresh, an engine event this table does not treat as one).
///
/// - NOWEB: `connection.update` with `lastDisconnect.error.output.statusCode`; 408 with the
///   message "QR refs attempts ended" is the QR window, any other 408 a lost connection.
/// - GOWS: whatsmeow's type names with Go field names (`events.LoggedOut{Reason}`,
///   `events.TemporaryBan{Expire}` in nanoseconds, `events.ConnectFailure{Reason}`,
///   `events.StreamError{Code}`, ...).
/// - WEBJS: `disconnected` with `data.reason` (or `data` itself) holding a state or `LOGOUT`.
pub fn classify_engine_event(engine: Engine, event: &str, data: &Value) -> Option<Disconnect> {
    match engine {
        Engine::Noweb => classify_noweb(event, data),
        Engine::Gows => classify_gows(event, data),
        Engine::Webjs => classify_webjs(event, data),
    }
}

fn classify_noweb(event: &str, data: &Value) -> Option<Disconnect> {
    if event != "connection.update" {
        return None;
    }
    let error = data.pointer("/lastDisconnect/error")?;
    let code = error
        .pointer("/output/statusCode")
        .or_else(|| error.pointer("/output/payload/statusCode"))
        .and_then(Value::as_u64);
    let message = error
        .pointer("/output/payload/message")
        .or_else(|| error.pointer("/message"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let reason = match code {
        Some(401) => Reason::LoggedOut,
        Some(402) => Reason::TemporarilyBanned,
        Some(403) => Reason::Forbidden,
        Some(405) => Reason::ClientOutdated,
        Some(406) => Reason::Banned,
        Some(408) if message.contains("QR refs attempts ended") => Reason::QrWindowExpired,
        Some(408) => Reason::ConnectionLost,
        Some(411) => Reason::MultideviceMismatch,
        Some(428) => Reason::ConnectionClosed,
        Some(440) => Reason::Replaced,
        Some(500) => Reason::BadSession,
        Some(503) => Reason::WaUnavailable,
        Some(515) => Reason::RestartRequired,
        _ => Reason::Unknown,
    };
    Some(Disconnect::of(reason))
}

/// A numeric Go field, also when a string carries it (`"515"`).
fn go_number(data: &Value, field: &str) -> Option<u64> {
    let value = data.get(field)?;
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|text| text.trim().parse().ok()))
}

fn classify_gows(event: &str, data: &Value) -> Option<Disconnect> {
    let reason = match event {
        "events.LoggedOut" => match go_number(data, "Reason") {
            Some(403) => Reason::Forbidden,
            Some(406) => Reason::Banned,
            _ => Reason::LoggedOut,
        },
        "events.TemporaryBan" => {
            return Some(Disconnect {
                reason: Reason::TemporarilyBanned,
                ban_lasts: go_number(data, "Expire").map(Duration::from_nanos),
            });
        }
        "events.ConnectFailure" => match go_number(data, "Reason") {
            Some(401) => Reason::LoggedOut,
            Some(403) => Reason::Forbidden,
            Some(405) => Reason::ClientOutdated,
            Some(406) => Reason::Banned,
            Some(400 | 411) => Reason::MultideviceMismatch,
            Some(500) => Reason::BadSession,
            Some(503) => Reason::WaUnavailable,
            _ => Reason::Unknown,
        },
        "events.ClientOutdated" => Reason::ClientOutdated,
        "events.StreamReplaced" => Reason::Replaced,
        "events.StreamError" => match go_number(data, "Code") {
            Some(515) => Reason::RestartRequired,
            _ => Reason::Unknown,
        },
        "events.KeepAliveTimeout" => Reason::ConnectionLost,
        "events.Disconnected" => Reason::ConnectionClosed,
        _ => return None,
    };
    Some(Disconnect::of(reason))
}

fn classify_webjs(event: &str, data: &Value) -> Option<Disconnect> {
    if event != "disconnected" {
        return None;
    }
    let reason = data
        .get("reason")
        .and_then(Value::as_str)
        .or_else(|| data.as_str())
        .unwrap_or_default();
    let reason = if reason == "LOGOUT" {
        Reason::LoggedOut
    } else if reason.contains("Max qrcode retries") {
        Reason::QrWindowExpired
    } else {
        webjs_state(reason).unwrap_or(Reason::Unknown)
    };
    Some(Disconnect::of(reason))
}

/// WEBJS's client states that mean a disconnect (others, like `CONNECTED`, mean none).
fn webjs_state(state: &str) -> Option<Reason> {
    Some(match state {
        "CONFLICT" => Reason::Replaced,
        "UNPAIRED" | "UNPAIRED_IDLE" => Reason::MultideviceMismatch,
        "TOS_BLOCK" | "SMB_TOS_BLOCK" => Reason::Banned,
        "DEPRECATED_VERSION" => Reason::ClientOutdated,
        "PROXYBLOCK" => Reason::ProxyFailure,
        "TIMEOUT" => Reason::ConnectionLost,
        "UNLAUNCHED" => Reason::RestartRequired,
        _ => return None,
    })
}

/// Classifies a `state.change` (WEBJS reports its client state there before `disconnected`;
/// the other engines send none that means a disconnect).
pub fn classify_state_change(engine: Engine, change: &StateChange) -> Option<Reason> {
    match engine {
        Engine::Webjs => change.state.as_deref().and_then(webjs_state),
        Engine::Noweb | Engine::Gows => None,
    }
}

/// Classifies a verified webhook payload of a session on `engine` that arrived at `at`, as
/// `observe` appends it: a disconnect, a status, or plain activity (any other event, which
/// still proves the session is alive).
///
/// Most events of a busy session are activity (every message is one). They only tell that the
/// session was alive at `at`, so stores coalesce them: a chip keeps one pending
/// [`SignalBody::Activity`] (the latest), and activity never pushes a pending disconnect out of
/// the bounded signals (see [`ChipStore`](crate::ChipStore), "Signals").
pub fn classify_event(engine: Engine, payload: &EventPayload, at: SystemTime) -> SignalBody {
    let disconnect = match payload {
        EventPayload::SessionStatus(change) => {
            return SignalBody::Status {
                status: change.status.clone(),
            };
        }
        EventPayload::EngineEvent(event) => event
            .event
            .as_deref()
            .and_then(|name| classify_engine_event(engine, name, &event.data)),
        EventPayload::StateChange(change) => {
            classify_state_change(engine, change).map(Disconnect::of)
        }
        _ => None,
    };
    match disconnect {
        Some(found) => SignalBody::disconnect(found, at),
        None => SignalBody::Activity,
    }
}

/// Classifies a [`tenant_isolation::Error`] by its `kind()` and `is_retryable()`.
pub fn classify_tenant_error(error: &tenant_isolation::Error) -> Reason {
    match error.kind() {
        "tenant_suspended" | "tenant_deleted" => Reason::TenantInactive,
        "tenant_not_found" => Reason::TenantMissing,
        "quota_exceeded" => Reason::QuotaExceeded,
        "chip_slot_required" => Reason::ChipSlotMissing,
        "version_conflict" => Reason::VersionConflict,
        // A database failure (retryable or not) is retried in the infra class, which never
        // parks; whether the whole supervisor stops on a permanent one is `run()`'s decision.
        "database" | "pool" | "transaction_aborted" => Reason::Infra,
        _ if error.is_retryable() => Reason::Infra,
        _ => Reason::Corrupt,
    }
}

/// Classifies a [`container_pool::Error`]; a tenant-directory failure is classified by its
/// source.
pub fn classify_pool_error(error: &container_pool::Error) -> Reason {
    if let container_pool::Error::TenantDirectory { source, .. } = error {
        return match classify_tenant_error(source) {
            Reason::Corrupt if error.is_retryable() => Reason::Transient,
            reason => reason,
        };
    }
    match error.kind() {
        "startup_timeout" | "conflict" | "events_lagged" => Reason::Transient,
        "runtime_unavailable" => Reason::Infra,
        "exited" | "start_failed" | "unhealthy" | "not_found" => Reason::ContainerFailed,
        "image_missing" => Reason::ImageMissing,
        "volume_conflict" => Reason::VolumeConflict,
        "ports_exhausted" => Reason::PortsExhausted,
        _ if error.is_retryable() => Reason::Transient,
        _ => Reason::ContainerConfig,
    }
}

/// Classifies a [`proxy_allocator::ProxyError`].
pub fn classify_proxy_error(error: &proxy_allocator::ProxyError) -> Reason {
    if error.is_proxy_failure() {
        return Reason::ProxyFailure;
    }
    match error.kind() {
        "no_capacity" if error.is_retryable() => Reason::ProxyBusy,
        "not_leased" | "endpoint_gone" => Reason::ProxyLeaseLost,
        // The lease store is infrastructure; an egress check failing says nothing about the
        // chip (logged only), so it never counts against it either.
        "store" | "egress_check" => Reason::Infra,
        _ if error.is_retryable() => Reason::Transient,
        _ => Reason::ProxyConfig,
    }
}

/// Classifies a [`WahaError`]: a connection that cannot even be opened means the container
/// is gone; other transient failures are retried in the provision class.
pub fn classify_waha_error(error: &WahaError) -> Reason {
    if let WahaError::Transient {
        cause: TransientCause::Connect,
        ..
    } = error
    {
        return Reason::ContainerGone;
    }
    match error.kind() {
        "transient" => Reason::Transient,
        "not_found" | "not_ready" | "already_exists" | "already_started" => Reason::StaleView,
        "unauthorized" => Reason::Unauthorized,
        "api" | "decode" | "session_not_created" => Reason::SessionRejected,
        "invalid" => Reason::InvalidSessionConfig,
        "single_session_server" | "response_too_large" => Reason::UnsupportedServer,
        _ if error.is_retryable() => Reason::Transient,
        _ => Reason::SessionRejected,
    }
}

/// Classifies a [`StoreError`].
pub fn classify_store_error(error: &StoreError) -> Reason {
    match error {
        StoreError::VersionConflict { .. } => Reason::VersionConflict,
        StoreError::NotFound { .. } => Reason::StaleView,
        StoreError::StaleOwner { .. } => Reason::StaleOwner,
        StoreError::Corrupt { .. } => Reason::Corrupt,
        StoreError::Database(source) => classify_tenant_error(source),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::UNIX_EPOCH;

    use serde_json::json;
    use tenant_isolation::{ChipId, QuotaLimit, TenantId};
    use waha_client::SessionStatus;
    use waha_client::webhook::{EngineEvent, SessionStatusChange};

    use super::*;

    /// Baileys' close, as `waha-sim` renders it.
    fn noweb_close(code: u16, message: &str) -> Value {
        json!({
            "connection": "close",
            "lastDisconnect": {
                "error": {
                    "data": null, "isBoom": true, "isServer": code >= 500,
                    "output": {
                        "statusCode": code,
                        "payload": {"statusCode": code, "error": "Unknown", "message": message},
                        "headers": {},
                    },
                },
                "date": "2026-01-01T00:00:00.000Z",
            },
        })
    }

    fn reason(engine: Engine, event: &str, data: Value) -> Option<Reason> {
        classify_engine_event(engine, event, &data).map(|found| found.reason)
    }

    #[test]
    fn noweb_status_codes() {
        let cases = [
            (401, Reason::LoggedOut),
            (402, Reason::TemporarilyBanned),
            (403, Reason::Forbidden),
            (405, Reason::ClientOutdated),
            (406, Reason::Banned),
            (408, Reason::ConnectionLost),
            (411, Reason::MultideviceMismatch),
            (428, Reason::ConnectionClosed),
            (440, Reason::Replaced),
            (500, Reason::BadSession),
            (503, Reason::WaUnavailable),
            (515, Reason::RestartRequired),
            (499, Reason::Unknown),
        ];
        for (code, expected) in cases {
            let data = noweb_close(code, "Connection Failure");
            assert_eq!(
                reason(Engine::Noweb, "connection.update", data),
                Some(expected),
                "{code}"
            );
        }
        let qr = noweb_close(408, "QR refs attempts ended");
        assert_eq!(
            reason(Engine::Noweb, "connection.update", qr),
            Some(Reason::QrWindowExpired)
        );
        // An open connection and other events are no disconnect; NOWEB's 402 has no expiry.
        let open = json!({"connection": "open"});
        assert_eq!(reason(Engine::Noweb, "connection.update", open), None);
        assert_eq!(
            reason(Engine::Noweb, "messages.upsert", noweb_close(440, "")),
            None
        );
        let ban = classify_engine_event(
            Engine::Noweb,
            "connection.update",
            &noweb_close(402, "Connection Failure"),
        )
        .unwrap();
        assert_eq!(ban.ban_lasts, None);
    }

    #[test]
    fn gows_event_types_and_go_fields() {
        let cases = [
            (
                "events.LoggedOut",
                json!({"OnConnect": false, "Reason": 401}),
                Reason::LoggedOut,
            ),
            (
                "events.LoggedOut",
                json!({"OnConnect": true, "Reason": 403}),
                Reason::Forbidden,
            ),
            (
                "events.LoggedOut",
                json!({"OnConnect": true, "Reason": 406}),
                Reason::Banned,
            ),
            ("events.ClientOutdated", json!({}), Reason::ClientOutdated),
            ("events.StreamReplaced", json!({}), Reason::Replaced),
            (
                "events.KeepAliveTimeout",
                json!({"ErrorCount": 3}),
                Reason::ConnectionLost,
            ),
            ("events.Disconnected", json!({}), Reason::ConnectionClosed),
            (
                "events.ConnectFailure",
                json!({"Reason": 400}),
                Reason::MultideviceMismatch,
            ),
            (
                "events.ConnectFailure",
                json!({"Reason": 403}),
                Reason::Forbidden,
            ),
            (
                "events.ConnectFailure",
                json!({"Reason": 500}),
                Reason::BadSession,
            ),
            (
                "events.ConnectFailure",
                json!({"Reason": 503}),
                Reason::WaUnavailable,
            ),
            (
                "events.ConnectFailure",
                json!({"Reason": 999}),
                Reason::Unknown,
            ),
            (
                "events.StreamError",
                json!({"Code": "515", "Raw": null}),
                Reason::RestartRequired,
            ),
            (
                "events.StreamError",
                json!({"Code": "401"}),
                Reason::Unknown,
            ),
        ];
        for (event, data, expected) in cases {
            assert_eq!(reason(Engine::Gows, event, data), Some(expected), "{event}");
        }
        let ban = classify_engine_event(
            Engine::Gows,
            "events.TemporaryBan",
            &json!({"Code": 101, "Expire": 86_400_000_000_000_u64}),
        )
        .unwrap();
        assert_eq!(ban.reason, Reason::TemporarilyBanned);
        assert_eq!(ban.ban_lasts, Some(Duration::from_secs(86_400)));
        assert_eq!(reason(Engine::Gows, "events.Connected", json!({})), None);
    }

    #[test]
    fn webjs_states_and_disconnects() {
        let cases = [
            ("LOGOUT", Reason::LoggedOut),
            ("CONFLICT", Reason::Replaced),
            ("UNPAIRED", Reason::MultideviceMismatch),
            ("TOS_BLOCK", Reason::Banned),
            ("DEPRECATED_VERSION", Reason::ClientOutdated),
            ("PROXYBLOCK", Reason::ProxyFailure),
            ("TIMEOUT", Reason::ConnectionLost),
            ("UNLAUNCHED", Reason::RestartRequired),
            ("Max qrcode retries reached", Reason::QrWindowExpired),
            ("SOMETHING_NEW", Reason::Unknown),
        ];
        for (text, expected) in cases {
            let data = json!({ "reason": text });
            assert_eq!(reason(Engine::Webjs, "disconnected", data), Some(expected));
        }
        assert_eq!(
            reason(Engine::Webjs, "disconnected", json!("CONFLICT")),
            Some(Reason::Replaced),
            "data may be the bare reason"
        );
        let conflict = StateChange {
            state: Some("CONFLICT".into()),
            ..StateChange::default()
        };
        assert_eq!(
            classify_state_change(Engine::Webjs, &conflict),
            Some(Reason::Replaced)
        );
        assert_eq!(classify_state_change(Engine::Noweb, &conflict), None);
        let connected = StateChange {
            state: Some("CONNECTED".into()),
            ..StateChange::default()
        };
        assert_eq!(classify_state_change(Engine::Webjs, &connected), None);
    }

    #[test]
    fn webhook_payloads_become_signals() {
        let at = UNIX_EPOCH + Duration::from_secs(1_000);
        let ban = EventPayload::EngineEvent(EngineEvent {
            event: Some("events.TemporaryBan".into()),
            data: json!({"Code": 101, "Expire": 3_600_000_000_000_u64}),
        });
        assert_eq!(
            classify_event(Engine::Gows, &ban, at),
            SignalBody::Disconnect {
                reason: Reason::TemporarilyBanned,
                ban_expires: Some(at + Duration::from_secs(3_600)),
            }
        );
        let status = EventPayload::SessionStatus(SessionStatusChange {
            name: "cf_acme_a".into(),
            status: SessionStatus::Failed,
        });
        assert_eq!(
            classify_event(Engine::Noweb, &status, at),
            SignalBody::Status {
                status: SessionStatus::Failed
            }
        );
        let other = EventPayload::Other(json!({"anything": 1}));
        assert_eq!(
            classify_event(Engine::Noweb, &other, at),
            SignalBody::Activity
        );
    }

    #[test]
    fn crate_errors_map_to_reasons() {
        let tenant = TenantId::new("acme").unwrap();
        let chip = ChipId::new("a").unwrap();
        let suspended = tenant_isolation::Error::TenantSuspended {
            tenant: tenant.clone(),
        };
        assert_eq!(classify_tenant_error(&suspended), Reason::TenantInactive);
        let quota = tenant_isolation::Error::QuotaExceeded {
            tenant: tenant.clone(),
            limit: QuotaLimit::MaxRunningSessions,
            max: 1,
            in_use: 1,
        };
        assert_eq!(classify_tenant_error(&quota), Reason::QuotaExceeded);
        let slot = tenant_isolation::Error::ChipSlotRequired {
            tenant: tenant.clone(),
            chip: chip.clone(),
        };
        assert_eq!(classify_tenant_error(&slot), Reason::ChipSlotMissing);
        let corrupt = tenant_isolation::Error::CorruptData { detail: "x".into() };
        assert_eq!(classify_tenant_error(&corrupt), Reason::Corrupt);

        let pool = |e: container_pool::Error| classify_pool_error(&e);
        assert_eq!(
            pool(container_pool::Error::ImageMissing { image: "i".into() }),
            Reason::ImageMissing
        );
        assert_eq!(
            pool(container_pool::Error::StartupTimeout {
                container: "c".into(),
                elapsed: Duration::from_secs(1),
                deadline: Duration::from_secs(1),
                last_probe_error: String::new(),
            }),
            Reason::Transient
        );
        assert_eq!(
            pool(container_pool::Error::Exited {
                container: "c".into(),
                exit_code: Some(1),
                oom_killed: false,
                last_logs: Vec::new(),
            }),
            Reason::ContainerFailed
        );
        assert_eq!(
            pool(container_pool::Error::RuntimeUnavailable("down".into())),
            Reason::Infra
        );
        assert_eq!(
            pool(container_pool::Error::Unauthorized {
                container: "c".into()
            }),
            Reason::ContainerConfig
        );
        assert_eq!(
            pool(container_pool::Error::TenantDirectory {
                tenant: tenant.clone(),
                source: Arc::new(tenant_isolation::Error::TenantDeleted {
                    tenant: tenant.clone()
                }),
            }),
            Reason::TenantInactive
        );

        let proxy = |e: proxy_allocator::ProxyError| classify_proxy_error(&e);
        assert_eq!(
            proxy(proxy_allocator::ProxyError::NoCapacity {
                tenant: tenant.clone(),
                chip: chip.clone(),
                reason: proxy_allocator::NoCapacityReason::AllBusy,
            }),
            Reason::ProxyBusy
        );
        assert_eq!(
            proxy(proxy_allocator::ProxyError::NoCapacity {
                tenant: tenant.clone(),
                chip: chip.clone(),
                reason: proxy_allocator::NoCapacityReason::NoEndpoints,
            }),
            Reason::ProxyConfig
        );
        assert_eq!(
            proxy(proxy_allocator::ProxyError::NotLeased {
                tenant: tenant.clone(),
                chip: chip.clone(),
            }),
            Reason::ProxyLeaseLost
        );
        assert_eq!(
            proxy(proxy_allocator::ProxyError::Timeout {
                proxy: "p:1".into(),
                after: Duration::from_secs(1),
            }),
            Reason::ProxyFailure
        );

        let waha = |e: WahaError| classify_waha_error(&e);
        assert_eq!(
            waha(WahaError::Transient {
                cause: TransientCause::Connect,
                detail: String::new(),
            }),
            Reason::ContainerGone
        );
        assert_eq!(
            waha(WahaError::Transient {
                cause: TransientCause::Booting,
                detail: String::new(),
            }),
            Reason::Transient
        );
        assert_eq!(
            waha(WahaError::NotFound {
                message: String::new()
            }),
            Reason::StaleView
        );
        assert_eq!(
            waha(WahaError::Unauthorized { status: 401 }),
            Reason::Unauthorized
        );
        assert_eq!(
            waha(WahaError::Invalid {
                messages: Vec::new()
            }),
            Reason::InvalidSessionConfig
        );
        assert_eq!(
            waha(WahaError::Api {
                status: 500,
                body: String::new()
            }),
            Reason::SessionRejected
        );

        let store = StoreError::StaleOwner {
            tenant,
            held: 1,
            current: 2,
        };
        assert_eq!(classify_store_error(&store), Reason::StaleOwner);
    }
}
