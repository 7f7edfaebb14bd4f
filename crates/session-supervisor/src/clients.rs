//! How the supervisor reaches WAHA: a [`WahaClients`] factory (one client per container) and
//! [`FencedWaha`], the wrapper through which every mutating WAHA call of an owner passes its
//! [`OwnerGuard`] check.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use fleet_vocab::ApiKey;
use tracing::debug;
use url::Url;
use waha_client::{
    ChatRef, ClientConfig, Me, NewSession, PairingCode, QrImage, QrValue, SeenReceipt, SentMessage,
    ServerHealth, ServerStatus, ServerVersion, SessionConfig, SessionInfo, TextMessage, WahaApi,
    WahaClient, WahaError,
};

use crate::owner::OwnerGuard;

/// Builds a WAHA client for one container. The default, [`HttpWahaClients`], wraps
/// [`WahaClient::with_config`]; tests wrap it to record or fault calls.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait WahaClients: Send + Sync {
    /// A client for the WAHA at `base_url` that sends `key`.
    ///
    /// # Errors
    /// When the client cannot be built (an invalid URL, TLS set-up).
    fn client(&self, base_url: &Url, key: ApiKey) -> Result<Arc<dyn WahaApi>, WahaError>;
}

/// [`WahaClients`] over HTTP: one [`WahaClient`] per call, all sharing one connection pool.
#[derive(Clone, Debug)]
pub struct HttpWahaClients {
    config: ClientConfig,
    http: reqwest::Client,
}

impl HttpWahaClients {
    /// Clients with `config` (time-outs, retries, response limits).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(config: ClientConfig) -> Result<Self, WahaError> {
        let http = config.build_http_client()?;
        Ok(HttpWahaClients { config, http })
    }
}

impl WahaClients for HttpWahaClients {
    fn client(&self, base_url: &Url, key: ApiKey) -> Result<Arc<dyn WahaApi>, WahaError> {
        Ok(Arc::new(WahaClient::with_http_client(
            base_url.clone(),
            key,
            self.config.clone(),
            self.http.clone(),
        )?))
    }
}

/// The start of the message of the error [`FencedWaha`] returns instead of sending a call
/// (see [`FencedWaha::is_refusal`]).
const REFUSAL: &str = "refused before sending: the owner guard failed for";

/// A [`WahaApi`] that sends a mutating call only while its [`OwnerGuard`] allows acting
/// (`docs/session-supervisor.md`, 6, "How each mutating effect is fenced").
///
/// Every call that changes WAHA's state (create, update, delete, start, stop, restart and log
/// out a session, request a pairing code, send a text or a receipt, typing) first calls
/// [`OwnerGuard::check`]; reads (ping, health, version, status, sessions, `me`, QR codes) pass
/// unchecked. [`WahaApiExt`](waha_client::WahaApiExt)'s steps built on it are fenced call by
/// call: `ensure_session` checks before its create and again before its update.
///
/// A refused call never reaches WAHA. `waha-client` has no variant for "this process may not
/// act", so the refusal is a [`WahaError::Invalid`] (the variant for "a request this client
/// refused to send") whose message names the owner guard; tell it apart from WAHA's own
/// validation errors with [`FencedWaha::is_refusal`]. The executor also checks the guard itself
/// right before each mutating call, so this is the second line of defence; a refusal that
/// still surfaces is classified as [`Reason::StaleOwner`](crate::Reason::StaleOwner), never as
/// an invalid session configuration.
///
/// WAHA takes no fencing token: the window between the check and the request leaving the
/// socket remains (the new owner's next reconcile reads WAHA and corrects what such a late
/// call changed).
#[derive(Clone)]
pub struct FencedWaha {
    inner: Arc<dyn WahaApi>,
    guard: OwnerGuard,
}

impl FencedWaha {
    /// `inner`, fenced by `guard`.
    pub fn new(inner: Arc<dyn WahaApi>, guard: OwnerGuard) -> Self {
        FencedWaha { inner, guard }
    }

    /// The guard the mutating calls check.
    pub fn guard(&self) -> &OwnerGuard {
        &self.guard
    }

    /// Whether `error` is a call this wrapper refused because the guard failed (nothing was
    /// sent), rather than an answer from WAHA.
    pub fn is_refusal(error: &WahaError) -> bool {
        matches!(
            error,
            WahaError::Invalid { messages }
                if messages.first().is_some_and(|message| message.starts_with(REFUSAL))
        )
    }

    /// `Ok` while the guard allows acting; otherwise the refusal, logged without secrets.
    fn fence(&self, call: &'static str) -> Result<(), WahaError> {
        self.guard.check().map_err(|not_owner| {
            debug!(
                tenant = %not_owner.tenant,
                token = not_owner.token,
                call,
                "not the owner any more: WAHA call not sent"
            );
            WahaError::Invalid {
                messages: vec![format!("{REFUSAL} {call}: {not_owner}")],
            }
        })
    }
}

impl FencedWaha {
    /// Sends `request` only while the guard allows acting, and abandons it (a retry the inner
    /// client would send later included) the moment the guard is lost or expires: a client
    /// that retries by itself must not carry a call past the owner's lease.
    async fn fenced<T>(
        &self,
        call: &'static str,
        request: impl Future<Output = Result<T, WahaError>>,
    ) -> Result<T, WahaError> {
        self.fence(call)?;
        tokio::select! {
            biased;
            () = self.guard.lost() => Err(self.fence(call).err().unwrap_or_else(|| {
                WahaError::Invalid {
                    messages: vec![format!("{REFUSAL} {call}: the guard ran out")],
                }
            })),
            result = request => result,
        }
    }
}

impl fmt::Debug for FencedWaha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FencedWaha")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl WahaApi for FencedWaha {
    async fn ping(&self) -> Result<(), WahaError> {
        self.inner.ping().await
    }

    async fn health(&self) -> Result<ServerHealth, WahaError> {
        self.inner.health().await
    }

    async fn version(&self) -> Result<ServerVersion, WahaError> {
        self.inner.version().await
    }

    async fn server_status(&self) -> Result<ServerStatus, WahaError> {
        self.inner.server_status().await
    }

    async fn list_sessions(&self, all: bool) -> Result<Vec<SessionInfo>, WahaError> {
        self.inner.list_sessions(all).await
    }

    async fn get_session(&self, name: &str) -> Result<SessionInfo, WahaError> {
        self.inner.get_session(name).await
    }

    async fn create_session(&self, new: &NewSession) -> Result<Option<SessionInfo>, WahaError> {
        self.fenced("create_session", self.inner.create_session(new))
            .await
    }

    async fn update_session(
        &self,
        name: &str,
        config: &SessionConfig,
    ) -> Result<SessionInfo, WahaError> {
        self.fenced("update_session", self.inner.update_session(name, config))
            .await
    }

    async fn delete_session(&self, name: &str) -> Result<(), WahaError> {
        self.fenced("delete_session", self.inner.delete_session(name))
            .await
    }

    async fn start_session(&self, name: &str) -> Result<SessionInfo, WahaError> {
        self.fenced("start_session", self.inner.start_session(name))
            .await
    }

    async fn stop_session(&self, name: &str) -> Result<Option<SessionInfo>, WahaError> {
        self.fenced("stop_session", self.inner.stop_session(name))
            .await
    }

    async fn restart_session(&self, name: &str) -> Result<SessionInfo, WahaError> {
        self.fenced("restart_session", self.inner.restart_session(name))
            .await
    }

    async fn logout_session(&self, name: &str) -> Result<(), WahaError> {
        self.fenced("logout_session", self.inner.logout_session(name))
            .await
    }

    async fn me(&self, name: &str) -> Result<Option<Me>, WahaError> {
        self.inner.me(name).await
    }

    async fn qr_png(&self, name: &str) -> Result<Vec<u8>, WahaError> {
        self.inner.qr_png(name).await
    }

    async fn qr_base64(&self, name: &str) -> Result<QrImage, WahaError> {
        self.inner.qr_base64(name).await
    }

    async fn qr_raw(&self, name: &str) -> Result<QrValue, WahaError> {
        self.inner.qr_raw(name).await
    }

    async fn request_pairing_code(
        &self,
        name: &str,
        phone_number: &str,
    ) -> Result<PairingCode, WahaError> {
        self.fenced(
            "request_pairing_code",
            self.inner.request_pairing_code(name, phone_number),
        )
        .await
    }

    async fn send_text(&self, message: &TextMessage) -> Result<SentMessage, WahaError> {
        self.fenced("send_text", self.inner.send_text(message))
            .await
    }

    async fn send_seen(&self, receipt: &SeenReceipt) -> Result<(), WahaError> {
        self.fenced("send_seen", self.inner.send_seen(receipt))
            .await
    }

    async fn start_typing(&self, chat: &ChatRef) -> Result<(), WahaError> {
        self.fenced("start_typing", self.inner.start_typing(chat))
            .await
    }

    async fn stop_typing(&self, chat: &ChatRef) -> Result<(), WahaError> {
        self.fenced("stop_typing", self.inner.stop_typing(chat))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tenant_isolation::TenantId;
    use tokio::time::Instant;

    use super::*;
    use crate::store::Fence;

    /// Counts the calls that reach it; answers every one with `NotFound`.
    #[derive(Default)]
    struct Counting {
        calls: AtomicUsize,
    }

    impl Counting {
        fn call<T>(&self) -> Result<T, WahaError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Err(WahaError::NotFound {
                message: "fake".to_owned(),
            })
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl WahaApi for Counting {
        async fn ping(&self) -> Result<(), WahaError> {
            self.call()
        }
        async fn health(&self) -> Result<ServerHealth, WahaError> {
            self.call()
        }
        async fn version(&self) -> Result<ServerVersion, WahaError> {
            self.call()
        }
        async fn server_status(&self) -> Result<ServerStatus, WahaError> {
            self.call()
        }
        async fn list_sessions(&self, _: bool) -> Result<Vec<SessionInfo>, WahaError> {
            self.call()
        }
        async fn get_session(&self, _: &str) -> Result<SessionInfo, WahaError> {
            self.call()
        }
        async fn create_session(&self, _: &NewSession) -> Result<Option<SessionInfo>, WahaError> {
            self.call()
        }
        async fn update_session(
            &self,
            _: &str,
            _: &SessionConfig,
        ) -> Result<SessionInfo, WahaError> {
            self.call()
        }
        async fn delete_session(&self, _: &str) -> Result<(), WahaError> {
            self.call()
        }
        async fn start_session(&self, _: &str) -> Result<SessionInfo, WahaError> {
            self.call()
        }
        async fn stop_session(&self, _: &str) -> Result<Option<SessionInfo>, WahaError> {
            self.call()
        }
        async fn restart_session(&self, _: &str) -> Result<SessionInfo, WahaError> {
            self.call()
        }
        async fn logout_session(&self, _: &str) -> Result<(), WahaError> {
            self.call()
        }
        async fn me(&self, _: &str) -> Result<Option<Me>, WahaError> {
            self.call()
        }
        async fn qr_png(&self, _: &str) -> Result<Vec<u8>, WahaError> {
            self.call()
        }
        async fn qr_base64(&self, _: &str) -> Result<QrImage, WahaError> {
            self.call()
        }
        async fn qr_raw(&self, _: &str) -> Result<QrValue, WahaError> {
            self.call()
        }
        async fn request_pairing_code(&self, _: &str, _: &str) -> Result<PairingCode, WahaError> {
            self.call()
        }
        async fn send_text(&self, _: &TextMessage) -> Result<SentMessage, WahaError> {
            self.call()
        }
        async fn send_seen(&self, _: &SeenReceipt) -> Result<(), WahaError> {
            self.call()
        }
        async fn start_typing(&self, _: &ChatRef) -> Result<(), WahaError> {
            self.call()
        }
        async fn stop_typing(&self, _: &ChatRef) -> Result<(), WahaError> {
            self.call()
        }
    }

    fn guard() -> OwnerGuard {
        OwnerGuard::new(
            Fence {
                tenant: TenantId::new("acme").expect("a tenant id"),
                token: 7,
            },
            Instant::now() + Duration::from_secs(600),
        )
    }

    /// Every mutating call of the trait, through `api`; the refusals (or answers) it got.
    async fn every_mutation(api: &FencedWaha) -> Vec<WahaError> {
        let config = SessionConfig::default();
        let chat = ChatRef::new("s", "1@c.us");
        vec![
            api.create_session(&NewSession::new("s", config.clone()))
                .await
                .err(),
            api.update_session("s", &config).await.err(),
            api.delete_session("s").await.err(),
            api.start_session("s").await.err(),
            api.stop_session("s").await.err(),
            api.restart_session("s").await.err(),
            api.logout_session("s").await.err(),
            api.request_pairing_code("s", "5511999999999").await.err(),
            api.send_text(&TextMessage::new("s", "1@c.us", "hi"))
                .await
                .err(),
            api.send_seen(&SeenReceipt::new("s", "1@c.us")).await.err(),
            api.start_typing(&chat).await.err(),
            api.stop_typing(&chat).await.err(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    #[tokio::test]
    async fn a_lost_guard_sends_no_mutation_and_reads_still_pass() {
        let inner = Arc::new(Counting::default());
        let guard = guard();
        let api = FencedWaha::new(inner.clone(), guard.clone());

        // While this process owns the tenant, every call reaches WAHA.
        let answers = every_mutation(&api).await;
        assert_eq!(inner.calls(), 12);
        assert!(answers.iter().all(|error| !FencedWaha::is_refusal(error)));

        guard.lose();
        let refusals = every_mutation(&api).await;
        assert_eq!(
            inner.calls(),
            12,
            "no mutating call was sent after the loss"
        );
        assert_eq!(refusals.len(), 12);
        for refusal in &refusals {
            assert!(FencedWaha::is_refusal(refusal), "{refusal}");
            assert!(refusal.to_string().contains("acme"), "{refusal}");
        }

        // Reads pass unchecked.
        let _ = api.get_session("s").await;
        let _ = api.me("s").await;
        let _ = api.qr_raw("s").await;
        let _ = api.list_sessions(true).await;
        assert_eq!(inner.calls(), 16);
    }

    #[test]
    fn waha_validation_errors_are_not_refusals() {
        let invalid = WahaError::Invalid {
            messages: vec!["name must be shorter than or equal to 54 characters".to_owned()],
        };
        assert!(!FencedWaha::is_refusal(&invalid));
        assert!(!FencedWaha::is_refusal(&WahaError::Invalid {
            messages: Vec::new()
        }));
    }
}
