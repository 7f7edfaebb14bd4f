//! Typed client for the WAHA ("WhatsApp HTTP API") server.
//!
//! - [`WahaApi`]: the seam every other chipfleet crate talks to WAHA through (`async_trait`,
//!   `Send + Sync`, usable as `Arc<dyn WahaApi>`); [`WahaApiExt`] adds idempotent steps such as
//!   [`ensure_session`](WahaApiExt::ensure_session).
//! - [`WahaClient`]: its reqwest (rustls) implementation, with per-operation time-outs and
//!   bounded, jittered retries of transient errors on calls that are safe to repeat.
//! - [`WahaError`]: one error type whose variants say what to do; [`WahaError::is_retryable`]
//!   is the one place that decides what is transient.
//! - [`model`]: serde types that cope with what the real server sends.
//! - [`webhook`]: the event envelope, typed payloads, and HMAC-SHA512 verification.
//! - Secrets ([`ApiKey`], [`HmacKey`], [`ProxyPassword`], [`HeaderValueSecret`]) redact
//!   themselves in `Debug` and `Display`.
//! - Feature `mock`: `MockWahaApi`, a mockall mock of [`WahaApi`] for your own tests.
//!
//! ```
//! use waha_client::{ApiKey, HmacKey, WahaClient, webhook};
//!
//! // Construction does no I/O.
//! let client = WahaClient::new("http://127.0.0.1:3000".parse()?, ApiKey::new("my-api-key")?)?;
//! assert!(!format!("{client:?}").contains("my-api-key"));
//!
//! // Webhooks are verified over the raw body before parsing.
//! let key = HmacKey::new("my-secret-key")?;
//! let body = br#"{"event":"message","session":"default","engine":"WEBJS"}"#;
//! let signature = webhook::sign(&key, body);
//! assert!(signature.starts_with("208f8a55"));
//! webhook::verify(&key, body, Some(&signature), Some("sha512"))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Talking to a server (needs one running, hence `no_run`):
//!
//! ```no_run
//! use std::sync::Arc;
//! use waha_client::{
//!     ApiKey, HmacKey, ProxyConfig, ProxyPassword, SessionConfig, WahaApi, WahaApiExt,
//!     WahaClient, WahaError, WebhookConfig,
//! };
//!
//! # async fn provision() -> Result<(), WahaError> {
//! let api: Arc<dyn WahaApi> = Arc::new(WahaClient::new(
//!     "http://waha-tenant-1:3000".parse().expect("a URL"),
//!     ApiKey::new("my-api-key").expect("a valid key"),
//! )?);
//! api.ping().await?;
//!
//! let mut config = SessionConfig::default();
//! config.metadata.insert(waha_client::metadata::TENANT.into(), "t1".into());
//! config.proxy = Some(ProxyConfig::new("proxy:3128").with_credentials(
//!     "user",
//!     ProxyPassword::new("password").expect("a valid password"),
//! ));
//! config.webhooks.push(
//!     WebhookConfig::new("http://chipfleet:8080/webhooks", ["session.status", "message"])
//!         .signed_with(HmacKey::new("hmac-key").expect("a valid key")),
//! );
//! // Creates, or updates an existing session; safe to call again and again.
//! api.ensure_session("t1_chip1", &config).await?;
//! api.ensure_started("t1_chip1").await?;
//! match api.qr_raw("t1_chip1").await {
//!     Ok(qr) => println!("scan: {}", qr.value),
//!     Err(WahaError::NotReady { status, .. }) => println!("not ready yet: {status:?}"),
//!     Err(err) => return Err(err),
//! }
//! # Ok(())
//! # }
//! ```

mod api;
mod ensure;
mod error;
mod http;
pub mod model;
mod redact;
mod response;
pub mod secret;
pub mod webhook;

#[cfg(feature = "mock")]
pub use api::MockWahaApi;
pub use api::WahaApi;
pub use ensure::WahaApiExt;
pub use error::{TransientCause, WahaError};
pub use fleet_vocab::metadata;
pub use http::{ClientConfig, RetryConfig, Timeouts, WahaClient};
pub use model::{
    ChatRef, ClientNames, CustomHeader, EngineInfo, HealthSource, Me, NewSession, NowebConfig,
    NowebStore, PairingCode, ProxyConfig, QrImage, QrValue, SeenReceipt, SentMessage, ServerHealth,
    ServerStatus, ServerVersion, SessionConfig, SessionInfo, SessionStatus, TextMessage,
    WebhookConfig, WebhookHmac, WebhookRetries, WebhookRetryPolicy, WorkerInfo,
};
pub use secret::{ApiKey, HeaderValueSecret, HmacKey, ProxyPassword};
pub use url::Url;
