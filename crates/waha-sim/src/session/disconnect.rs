//! Why an engine drops a session, how each engine says so (`engine.event`, and `state.change`
//! on WEBJS), and what WAHA does next. Written from the contract's "Why a session stopped
//! working" section.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::settings::Engine;
use crate::state::iso8601;
use crate::webhook::EngineEventPayload;

/// Why a session's connection ended, in engine-neutral terms.
///
/// [`SimulatorControl::disconnect`](crate::SimulatorControl::disconnect) makes the simulated
/// engine report the reason the way the configured [`Engine`] reports it, then react as WAHA
/// does for that engine. The renditions (an engine with no distinct signal for a reason uses
/// the closest one it has):
///
/// | reason | NOWEB `statusCode` | GOWS `event` | WEBJS state |
/// |---|---|---|---|
/// | `loggedOut` | 401 | `events.LoggedOut{OnConnect:false,Reason:401}` | `LOGOUT` |
/// | `temporaryBan` | 402 | `events.TemporaryBan{Code:101,Expire:<24 h in ns>}` | `TOS_BLOCK` |
/// | `forbidden` | 403 | `events.LoggedOut{OnConnect:true,Reason:403}` | `TOS_BLOCK` |
/// | `clientOutdated` | 405 | `events.ClientOutdated` | `DEPRECATED_VERSION` |
/// | `banned` | 406 | `events.LoggedOut{OnConnect:true,Reason:406}` | `TOS_BLOCK` |
/// | `connectionLost` | 408 | `events.KeepAliveTimeout{ErrorCount,LastSuccess}` | `TIMEOUT` |
/// | `multideviceMismatch` | 411 | `events.ConnectFailure{Reason:400}` | `UNPAIRED` |
/// | `connectionClosed` | 428 | `events.Disconnected` | `TIMEOUT` |
/// | `connectionReplaced` | 440 | `events.StreamReplaced` | `CONFLICT` |
/// | `badSession` | 500 | `events.ConnectFailure{Reason:500}` | `UNPAIRED` |
/// | `unavailable` | 503 | `events.ConnectFailure{Reason:503}` | `TIMEOUT` |
/// | `restartRequired` | 515 | `events.StreamError{Code:"515"}` | `UNLAUNCHED` |
/// | `proxyBlocked` | 408 | `events.Disconnected` | `PROXYBLOCK` |
///
/// Payloads (`engine.event`, `{event, data}`):
/// - NOWEB (Baileys): `{"event":"connection.update","data":{"connection":"close",
///   "lastDisconnect":{"error":{"data":null,"isBoom":true,"isServer":..,"output":{"statusCode":N,
///   "payload":{"statusCode":N,"error":"<HTTP phrase or Unknown>","message":".."},"headers":{}}},
///   "date":"<ISO 8601>"}}}` (a Boom error as `JSON.stringify` writes it).
/// - GOWS (whatsmeow): `{"event":"events.<Type>","data":{<Go field names>}}`.
/// - WEBJS: `state.change` `{"state":"<STATE>"}` first (not for `LOGOUT`, which is no state),
///   then `{"event":"disconnected","data":{"reason":"<STATE or LOGOUT>"}}`.
///
/// What WAHA does next:
/// - NOWEB: `loggedOut` → FAILED, final, logged out; anything else → STARTING at once, up again
///   after [`Timings::restart_delay`](crate::Timings) (2 s) plus the start-up.
/// - GOWS: `loggedOut`, `forbidden`, `banned` → FAILED, logged out; `connectionReplaced`,
///   `temporaryBan`, `clientOutdated` → FAILED (what WAHA 2026.7.1 fixed; before, the session
///   stayed WORKING in silence: see [`SimulatorControl::silence`](crate::SimulatorControl::silence));
///   anything else → STARTING, reconnected after the restart delay.
/// - WEBJS: `loggedOut` → FAILED, final, logged out; anything else → FAILED, then restarted
///   after the restart delay (a transient FAILED).
///
/// A session that is not logged in any more needs a new QR scan when it starts again.
/// JSON (control API): the camelCase names in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The phone logged the session out (Baileys 401).
    LoggedOut,
    /// A temporary ban (Baileys 402).
    TemporaryBan,
    /// Forbidden: the account is locked (Baileys 403).
    Forbidden,
    /// The client version is too old (Baileys 405).
    ClientOutdated,
    /// The account is banned (Baileys 406).
    Banned,
    /// The connection was lost or timed out (Baileys 408).
    ConnectionLost,
    /// Multi-device mismatch (Baileys 411).
    MultideviceMismatch,
    /// The connection was closed (Baileys 428).
    ConnectionClosed,
    /// Another client connected with the same credentials (Baileys 440).
    ConnectionReplaced,
    /// The stored session is unusable (Baileys 500).
    BadSession,
    /// WhatsApp's service is unavailable (Baileys 503).
    Unavailable,
    /// The server asks for a restart (Baileys 515).
    RestartRequired,
    /// The proxy refused or blocked the connection (WEBJS `PROXYBLOCK`).
    ProxyBlocked,
}

/// What WAHA does after an engine reported a disconnect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reaction {
    /// FAILED and stays; `logged_out` also forgets the account.
    Fail { logged_out: bool },
    /// STARTING now, up again after the restart delay (NOWEB's restart, GOWS's reconnect).
    Reconnect,
    /// FAILED now, restarted after the restart delay (WEBJS).
    FailThenRestart,
}

impl DisconnectReason {
    /// Every reason.
    pub const ALL: [Self; 13] = [
        Self::LoggedOut,
        Self::TemporaryBan,
        Self::Forbidden,
        Self::ClientOutdated,
        Self::Banned,
        Self::ConnectionLost,
        Self::MultideviceMismatch,
        Self::ConnectionClosed,
        Self::ConnectionReplaced,
        Self::BadSession,
        Self::Unavailable,
        Self::RestartRequired,
        Self::ProxyBlocked,
    ];

    /// The control API's name, e.g. `connectionReplaced`.
    pub fn name(self) -> &'static str {
        match self {
            Self::LoggedOut => "loggedOut",
            Self::TemporaryBan => "temporaryBan",
            Self::Forbidden => "forbidden",
            Self::ClientOutdated => "clientOutdated",
            Self::Banned => "banned",
            Self::ConnectionLost => "connectionLost",
            Self::MultideviceMismatch => "multideviceMismatch",
            Self::ConnectionClosed => "connectionClosed",
            Self::ConnectionReplaced => "connectionReplaced",
            Self::BadSession => "badSession",
            Self::Unavailable => "unavailable",
            Self::RestartRequired => "restartRequired",
            Self::ProxyBlocked => "proxyBlocked",
        }
    }

    /// Parses a name from [`DisconnectReason::name`].
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == text.trim())
    }

    /// Baileys' `lastDisconnect.error.output.statusCode` (NOWEB).
    pub fn noweb_status_code(self) -> u16 {
        match self {
            Self::LoggedOut => 401,
            Self::TemporaryBan => 402,
            Self::Forbidden => 403,
            Self::ClientOutdated => 405,
            Self::Banned => 406,
            Self::ConnectionLost | Self::ProxyBlocked => 408,
            Self::MultideviceMismatch => 411,
            Self::ConnectionClosed => 428,
            Self::ConnectionReplaced => 440,
            Self::BadSession => 500,
            Self::Unavailable => 503,
            Self::RestartRequired => 515,
        }
    }

    /// whatsmeow's event type name (GOWS), e.g. `events.StreamReplaced`.
    pub fn gows_event(self) -> &'static str {
        match self {
            Self::LoggedOut | Self::Forbidden | Self::Banned => "events.LoggedOut",
            Self::TemporaryBan => "events.TemporaryBan",
            Self::ClientOutdated => "events.ClientOutdated",
            Self::ConnectionLost => "events.KeepAliveTimeout",
            Self::MultideviceMismatch | Self::BadSession | Self::Unavailable => {
                "events.ConnectFailure"
            }
            Self::ConnectionClosed | Self::ProxyBlocked => "events.Disconnected",
            Self::ConnectionReplaced => "events.StreamReplaced",
            Self::RestartRequired => "events.StreamError",
        }
    }

    /// whatsapp-web.js's disconnect reason (WEBJS): `LOGOUT` or a state.
    pub fn webjs_state(self) -> &'static str {
        match self {
            Self::LoggedOut => "LOGOUT",
            Self::TemporaryBan | Self::Forbidden | Self::Banned => "TOS_BLOCK",
            Self::ClientOutdated => "DEPRECATED_VERSION",
            Self::ConnectionLost | Self::ConnectionClosed | Self::Unavailable => "TIMEOUT",
            Self::MultideviceMismatch | Self::BadSession => "UNPAIRED",
            Self::ConnectionReplaced => "CONFLICT",
            Self::RestartRequired => "UNLAUNCHED",
            Self::ProxyBlocked => "PROXYBLOCK",
        }
    }

    /// Baileys' message for the close.
    fn noweb_message(self) -> &'static str {
        match self {
            Self::LoggedOut
            | Self::TemporaryBan
            | Self::Forbidden
            | Self::ClientOutdated
            | Self::Banned => "Connection Failure",
            Self::ConnectionLost | Self::ProxyBlocked => "Connection was lost",
            Self::MultideviceMismatch => "Require multi-device edition",
            Self::ConnectionClosed => "Connection Closed",
            Self::ConnectionReplaced => "Stream Errored (conflict)",
            Self::BadSession => "Bad session",
            Self::Unavailable => "Stream Errored (service unavailable)",
            Self::RestartRequired => "Stream Errored (restart required)",
        }
    }

    /// The `engine.event` payload the engine emits, `now_ms` being the wall clock.
    pub(crate) fn engine_event(self, engine: Engine, now_ms: u64) -> EngineEventPayload {
        match engine {
            Engine::Noweb => noweb_close(self.noweb_status_code(), self.noweb_message(), now_ms),
            Engine::Gows => EngineEventPayload {
                event: self.gows_event(),
                data: self.gows_data(now_ms),
            },
            Engine::Webjs => webjs_disconnected(self.webjs_state()),
        }
    }

    /// The `state.change` state WEBJS reports first (`LOGOUT` is no state); other engines
    /// report none.
    pub(crate) fn state_change(self, engine: Engine) -> Option<&'static str> {
        (engine == Engine::Webjs && self != Self::LoggedOut).then_some(self.webjs_state())
    }

    /// What WAHA does next on `engine`.
    pub(crate) fn reaction(self, engine: Engine) -> Reaction {
        match (engine, self) {
            (_, Self::LoggedOut) | (Engine::Gows, Self::Forbidden | Self::Banned) => {
                Reaction::Fail { logged_out: true }
            }
            (
                Engine::Gows,
                Self::ConnectionReplaced | Self::TemporaryBan | Self::ClientOutdated,
            ) => Reaction::Fail { logged_out: false },
            (Engine::Noweb | Engine::Gows, _) => Reaction::Reconnect,
            (Engine::Webjs, _) => Reaction::FailThenRestart,
        }
    }

    /// whatsmeow's event struct, as Go's `encoding/json` writes it.
    fn gows_data(self, now_ms: u64) -> Value {
        match self {
            Self::LoggedOut => json!({ "OnConnect": false, "Reason": 401 }),
            Self::Forbidden => json!({ "OnConnect": true, "Reason": 403 }),
            Self::Banned => json!({ "OnConnect": true, "Reason": 406 }),
            // TempBanReason 101 ("sent too many messages"), expiry in nanoseconds (24 h).
            Self::TemporaryBan => json!({ "Code": 101, "Expire": 86_400_000_000_000_u64 }),
            Self::ConnectionLost => json!({
                "ErrorCount": 3,
                "LastSuccess": iso8601(now_ms.saturating_sub(60_000)),
            }),
            Self::MultideviceMismatch => {
                json!({ "Reason": 400, "Message": "multi-device mismatch", "Raw": null })
            }
            Self::BadSession => {
                json!({ "Reason": 500, "Message": "internal-server-error", "Raw": null })
            }
            Self::Unavailable => {
                json!({ "Reason": 503, "Message": "service-unavailable", "Raw": null })
            }
            Self::RestartRequired => json!({ "Code": "515", "Raw": null }),
            Self::ClientOutdated
            | Self::ConnectionClosed
            | Self::ConnectionReplaced
            | Self::ProxyBlocked => json!({}),
        }
    }
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the engine emits when the last QR code expires (the session then goes FAILED):
/// Baileys closes with 408 "QR refs attempts ended", whatsapp-web.js reports `disconnected`
/// "Max qrcode retries reached"; whatsmeow's QR channel only says `timeout`, which WAHA does
/// not forward (nothing).
pub(crate) fn qr_expired_event(engine: Engine, now_ms: u64) -> Option<EngineEventPayload> {
    match engine {
        Engine::Noweb => Some(noweb_close(408, "QR refs attempts ended", now_ms)),
        Engine::Webjs => Some(webjs_disconnected("Max qrcode retries reached")),
        Engine::Gows => None,
    }
}

/// Baileys' `connection.update` for a close with a Boom error.
fn noweb_close(code: u16, message: &str, now_ms: u64) -> EngineEventPayload {
    let phrase = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|status| status.canonical_reason())
        .unwrap_or("Unknown");
    EngineEventPayload {
        event: "connection.update",
        data: json!({
            "connection": "close",
            "lastDisconnect": {
                "error": {
                    "data": null,
                    "isBoom": true,
                    "isServer": code >= 500,
                    "output": {
                        "statusCode": code,
                        "payload": { "statusCode": code, "error": phrase, "message": message },
                        "headers": {},
                    },
                },
                "date": iso8601(now_ms),
            },
        }),
    }
}

/// whatsapp-web.js's `disconnected`.
fn webjs_disconnected(reason: &str) -> EngineEventPayload {
    EngineEventPayload {
        event: "disconnected",
        data: json!({ "reason": reason }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde() {
        for reason in DisconnectReason::ALL {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.name());
            assert_eq!(DisconnectReason::parse(reason.name()), Some(reason));
        }
        assert_eq!(DisconnectReason::parse("nope"), None);
    }

    #[test]
    fn each_engine_speaks_its_own_shape() {
        let noweb = DisconnectReason::ConnectionReplaced.engine_event(Engine::Noweb, 0);
        assert_eq!(noweb.event, "connection.update");
        let error = &noweb.data["lastDisconnect"]["error"];
        assert_eq!(error["output"]["statusCode"], 440);
        assert_eq!(error["output"]["payload"]["error"], "Unknown");
        assert_eq!(error["isServer"], false);
        assert_eq!(noweb.data["connection"], "close");
        assert_eq!(
            noweb.data["lastDisconnect"]["date"],
            "1970-01-01T00:00:00.000Z"
        );
        let logged_out = DisconnectReason::LoggedOut.engine_event(Engine::Noweb, 0);
        assert_eq!(
            logged_out.data["lastDisconnect"]["error"]["output"]["payload"]["error"],
            "Unauthorized"
        );

        let gows = DisconnectReason::TemporaryBan.engine_event(Engine::Gows, 0);
        assert_eq!(gows.event, "events.TemporaryBan");
        assert_eq!(gows.data["Code"], 101);
        let gows = DisconnectReason::Banned.engine_event(Engine::Gows, 0);
        assert_eq!(
            (gows.event, gows.data),
            (
                "events.LoggedOut",
                json!({"OnConnect": true, "Reason": 406})
            )
        );

        let webjs = DisconnectReason::ConnectionReplaced.engine_event(Engine::Webjs, 0);
        assert_eq!(
            (webjs.event, webjs.data),
            ("disconnected", json!({"reason": "CONFLICT"}))
        );
        assert_eq!(
            DisconnectReason::ConnectionReplaced.state_change(Engine::Webjs),
            Some("CONFLICT")
        );
        assert_eq!(
            DisconnectReason::LoggedOut.state_change(Engine::Webjs),
            None
        );
        assert_eq!(
            DisconnectReason::ConnectionReplaced.state_change(Engine::Noweb),
            None
        );
    }

    #[test]
    fn reactions_follow_the_contract() {
        use DisconnectReason as R;
        for engine in [Engine::Noweb, Engine::Gows, Engine::Webjs] {
            assert_eq!(
                R::LoggedOut.reaction(engine),
                Reaction::Fail { logged_out: true }
            );
        }
        assert_eq!(
            R::ConnectionReplaced.reaction(Engine::Noweb),
            Reaction::Reconnect
        );
        assert_eq!(R::Banned.reaction(Engine::Noweb), Reaction::Reconnect);
        assert_eq!(
            R::ConnectionReplaced.reaction(Engine::Webjs),
            Reaction::FailThenRestart
        );
        assert_eq!(
            R::ConnectionReplaced.reaction(Engine::Gows),
            Reaction::Fail { logged_out: false }
        );
        assert_eq!(
            R::Banned.reaction(Engine::Gows),
            Reaction::Fail { logged_out: true }
        );
        assert_eq!(
            R::ConnectionLost.reaction(Engine::Gows),
            Reaction::Reconnect
        );
    }

    #[test]
    fn qr_expiry_per_engine() {
        let noweb = qr_expired_event(Engine::Noweb, 0).unwrap();
        assert_eq!(
            noweb.data["lastDisconnect"]["error"]["output"]["statusCode"],
            408
        );
        assert_eq!(
            qr_expired_event(Engine::Webjs, 0).unwrap().data["reason"],
            "Max qrcode retries reached"
        );
        assert!(qr_expired_event(Engine::Gows, 0).is_none());
    }
}
