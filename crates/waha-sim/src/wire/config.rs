//! `SessionConfig` and the structures inside it. Unknown fields are dropped on input, absent
//! fields stay absent on output, and secrets are redacted from `Debug`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A session's configuration, as sent in `POST /api/sessions` and `PUT /api/sessions/{name}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionConfig {
    /// String metadata echoed in every webhook of the session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// The proxy the session connects through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyConfig>,
    /// Debug logging.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<bool>,
    /// NOWEB engine settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noweb: Option<NowebConfig>,
    /// Device and browser names shown on the phone (newer servers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientConfig>,
    /// Where the session's events are delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<Vec<WebhookConfig>>,
}

impl SessionConfig {
    /// The configured webhooks (none when absent).
    pub fn webhooks(&self) -> &[WebhookConfig] {
        self.webhooks.as_deref().unwrap_or_default()
    }
}

/// A proxy: `server` is `host:port` (a scheme is optional).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyConfig {
    /// `host:port`.
    pub server: String,
    /// Proxy user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Proxy password (redacted from `Debug`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// NOWEB engine settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NowebConfig {
    /// Mark the account online when connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mark_online: Option<bool>,
    /// The local store of contacts, chats and messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<NowebStoreConfig>,
}

/// NOWEB store settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NowebStoreConfig {
    /// Keep a store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Full history sync at login.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_sync: Option<bool>,
}

/// Device and browser names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientConfig {
    /// Device name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// Browser name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub browser_name: Option<String>,
}

/// One webhook destination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookConfig {
    /// Where events are POSTed.
    pub url: String,
    /// The event names delivered there.
    pub events: Vec<String>,
    /// HMAC signing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hmac: Option<HmacConfig>,
    /// The retry policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetriesConfig>,
    /// Extra headers sent with every delivery (values redacted from `Debug`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_headers: Option<Vec<CustomHeader>>,
}

impl WebhookConfig {
    /// Whether this webhook wants `event`.
    pub fn wants(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == event)
    }
}

/// HMAC signing of deliveries.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct HmacConfig {
    /// The key (redacted from `Debug`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl std::fmt::Debug for HmacConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacConfig")
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A webhook's retry policy. Absent fields take the simulator's defaults: `constant`, 2 s,
/// 15 retries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetriesConfig {
    /// How the delay grows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<RetryPolicy>,
    /// The base delay in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_seconds: Option<f64>,
    /// Retries after the first attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

/// How the delay between webhook retries grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetryPolicy {
    /// `delay` every time.
    Constant,
    /// `delay × n` before retry `n`.
    Linear,
    /// `delay × 2^(n-1)` before retry `n`.
    Exponential,
}

/// A custom header sent with every delivery of a webhook.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomHeader {
    /// Header name.
    pub name: String,
    /// Header value (redacted from `Debug`: it often carries a token).
    pub value: String,
}

impl std::fmt::Debug for CustomHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomHeader")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets_and_unknown_fields_are_dropped() {
        let config: SessionConfig = serde_json::from_str(
            r#"{"proxy":{"server":"p:1","username":"u","password":"pw-secret"},
                "webhooks":[{"url":"http://127.0.0.1:1/h","events":["message"],
                  "hmac":{"key":"hmac-secret"},
                  "customHeaders":[{"name":"Authorization","value":"Bearer tok-secret"}]}],
                "surprise":{"x":1}}"#,
        )
        .unwrap();
        let debug = format!("{config:?}");
        for secret in ["pw-secret", "hmac-secret", "tok-secret"] {
            assert!(!debug.contains(secret), "{secret} leaked in {debug}");
        }
        let echoed = serde_json::to_string(&config).unwrap();
        assert!(!echoed.contains("surprise"));
        assert!(
            echoed.contains("hmac-secret"),
            "WAHA echoes secrets in clear text"
        );
    }
}
