//! The seam: [`WahaApi`], what every WAHA backend (the HTTP client, a fake, a mock) offers.

use async_trait::async_trait;

use crate::error::WahaError;
use crate::model::{
    ChatRef, Me, NewSession, PairingCode, QrImage, QrValue, SeenReceipt, SentMessage, ServerHealth,
    ServerStatus, ServerVersion, SessionConfig, SessionInfo, TextMessage,
};

/// The WAHA HTTP API, one method per call this project needs.
///
/// # Contract (what every implementation must do)
/// - Map WAHA's answers to [`WahaError`] as the table in `docs/waha-client.md` says: 401 →
///   `Unauthorized`, 404 → `NotFound`, the 422 texts → `AlreadyExists` / `AlreadyStarted` /
///   `SingleSessionServer` / `NotReady`, validation 400 → `Invalid`, unreachable or booting
///   server → `Transient`.
/// - Never put a secret into an error, a log line or `Debug` output.
/// - Bound every call in time; a hung server yields `Transient(Timeout)`, never a hung caller.
/// - Retry only transient errors, only on calls that are safe to repeat.
///
/// Higher-level steps built from these calls ([`ensure_session`](crate::WahaApiExt::ensure_session),
/// [`ensure_started`](crate::WahaApiExt::ensure_started)) live in [`WahaApiExt`](crate::WahaApiExt),
/// implemented for every `WahaApi`, also `dyn WahaApi`.
#[cfg_attr(
    feature = "mock",
    doc = r#"
# Mocking (feature `mock`)

`MockWahaApi` is a [mockall](https://docs.rs/mockall) mock of this trait for host applications'
own tests:

```
use std::sync::Arc;
use waha_client::{
    MockWahaApi, SessionConfig, SessionInfo, SessionStatus, WahaApi, WahaApiExt, WahaError,
};

let mut api = MockWahaApi::new();
// The session exists already, with another config: ensure_session updates it.
api.expect_create_session()
    .returning(|new| Err(WahaError::AlreadyExists { message: format!("Session '{}' already exists", new.name) }));
api.expect_get_session()
    .withf(|name| name == "chip-1")
    .returning(|name| Ok(SessionInfo::new(name, SessionStatus::Stopped)));
api.expect_update_session()
    .times(1)
    .returning(|name, config| {
        let mut info = SessionInfo::new(name, SessionStatus::Stopped);
        info.config = Some(config.clone());
        Ok(info)
    });

let api: Arc<dyn WahaApi> = Arc::new(api);
let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
let mut config = SessionConfig::default();
config.metadata.insert("tenant".into(), "t1".into());
let info = runtime.block_on(api.ensure_session("chip-1", &config)).unwrap();
assert_eq!(info.config.unwrap().metadata["tenant"], "t1");
```
"#
)]
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait WahaApi: Send + Sync {
    /// `GET /ping`: the liveness probe every version has. Fails fast; never retried.
    async fn ping(&self) -> Result<(), WahaError>;

    /// `GET /health`, or `GET /ping` when an old server answers `/health` with 422. A 503
    /// (unhealthy) is `Transient`. Never retried: callers poll.
    async fn health(&self) -> Result<ServerHealth, WahaError>;

    /// `GET /api/server/version`.
    async fn version(&self) -> Result<ServerVersion, WahaError>;

    /// `GET /api/server/status`.
    async fn server_status(&self) -> Result<ServerStatus, WahaError>;

    /// `GET /api/sessions[?all=true]`. Without `all`, stopped sessions are left out.
    async fn list_sessions(&self, all: bool) -> Result<Vec<SessionInfo>, WahaError>;

    /// `GET /api/sessions/{name}`.
    async fn get_session(&self, name: &str) -> Result<SessionInfo, WahaError>;

    /// `POST /api/sessions`. `Ok(None)` when the server answered 201 with an empty body (old
    /// Core after a DELETE: the session may not exist; `ensure_session` checks).
    async fn create_session(&self, new: &NewSession) -> Result<Option<SessionInfo>, WahaError>;

    /// `PUT /api/sessions/{name}`: replaces the whole config; a running session restarts.
    async fn update_session(
        &self,
        name: &str,
        config: &SessionConfig,
    ) -> Result<SessionInfo, WahaError>;

    /// `DELETE /api/sessions/{name}`. Idempotent: deleting a missing session succeeds.
    async fn delete_session(&self, name: &str) -> Result<(), WahaError>;

    /// `POST /api/sessions/{name}/start`. `AlreadyStarted` when it runs already.
    async fn start_session(&self, name: &str) -> Result<SessionInfo, WahaError>;

    /// `POST /api/sessions/{name}/stop`. Idempotent; `Ok(None)` when the server answered with an
    /// empty body (the session does not exist).
    async fn stop_session(&self, name: &str) -> Result<Option<SessionInfo>, WahaError>;

    /// `POST /api/sessions/{name}/restart`.
    async fn restart_session(&self, name: &str) -> Result<SessionInfo, WahaError>;

    /// `POST /api/sessions/{name}/logout`: removes the login; a running session starts again
    /// and shows a new QR code.
    async fn logout_session(&self, name: &str) -> Result<(), WahaError>;

    /// `GET /api/sessions/{name}/me`. `Ok(None)` while running but not logged in; `NotFound`
    /// when not running.
    async fn me(&self, name: &str) -> Result<Option<Me>, WahaError>;

    /// `GET /api/{name}/auth/qr` as PNG bytes. `NotReady` when the session is not waiting for
    /// a scan.
    async fn qr_png(&self, name: &str) -> Result<Vec<u8>, WahaError>;

    /// `GET /api/{name}/auth/qr` as base64 JSON.
    async fn qr_base64(&self, name: &str) -> Result<QrImage, WahaError>;

    /// `GET /api/{name}/auth/qr?format=raw`: the text to render as a QR code yourself.
    async fn qr_raw(&self, name: &str) -> Result<QrValue, WahaError>;

    /// `POST /api/{name}/auth/request-code`: a pairing code for `phone_number` (digits, country
    /// code first). Bounded by its own time-out: the real server could hang while `STARTING`.
    async fn request_pairing_code(
        &self,
        name: &str,
        phone_number: &str,
    ) -> Result<PairingCode, WahaError>;

    /// `POST /api/sendText`. Not repeated after the request may have reached the server (a
    /// repeat would send the message twice).
    async fn send_text(&self, message: &TextMessage) -> Result<SentMessage, WahaError>;

    /// `POST /api/sendSeen`.
    async fn send_seen(&self, receipt: &SeenReceipt) -> Result<(), WahaError>;

    /// `POST /api/startTyping`.
    async fn start_typing(&self, chat: &ChatRef) -> Result<(), WahaError>;

    /// `POST /api/stopTyping`.
    async fn stop_typing(&self, chat: &ChatRef) -> Result<(), WahaError>;
}
