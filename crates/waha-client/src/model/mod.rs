//! serde models of WAHA's requests and answers, shaped by what the real server sends (see
//! `docs/waha-contract.md`, "Sessions"): empty bodies, `"me": null`, `"engine": {}`,
//! `"config": null`.

mod config;
pub(crate) mod lenient;
mod message;
mod qr;
mod server;
mod session;
mod status;

pub use config::{
    ClientNames, CustomHeader, NowebConfig, NowebStore, ProxyConfig, SessionConfig, WebhookConfig,
    WebhookHmac, WebhookRetries, WebhookRetryPolicy,
};
pub use message::{ChatRef, SeenReceipt, SentMessage, TextMessage};
pub(crate) use qr::PairingCodeRequest;
pub use qr::{PairingCode, QrImage, QrValue};
pub(crate) use server::HealthBody;
pub use server::{HealthSource, ServerHealth, ServerStatus, ServerVersion, WorkerInfo};
pub(crate) use session::SessionUpdate;
pub use session::{EngineInfo, Me, NewSession, SessionInfo};
pub use status::SessionStatus;

#[cfg(test)]
mod tests;
