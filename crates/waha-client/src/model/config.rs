//! The configuration of a WAHA session (`SessionConfig` on the wire).
//!
//! Every field is optional on the wire. `null` and a missing field both decode to the empty
//! value, and empty values are left out when serialising, so a config survives a round trip
//! through the server unchanged. Secrets are [`crate::secret`] types: `Debug` redacts them, and
//! the fields holding them name `serialize_with = "fleet_vocab::expose"` (WAHA needs the values). Two plain strings can hold secrets too, so their
//! `Debug` is written by hand: a webhook `url` shows only its scheme, host and port, and a
//! proxy `server` hides credentials written into it (`user:password@host:port`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::lenient::{null_as_default, optional_whole_u32, valid_secret_or_none};
use crate::redact::{redact_authority, redact_url};
use crate::secret::{HeaderValueSecret, HmacKey, ProxyPassword, REDACTED};

/// A session's configuration: webhooks, metadata, proxy, engine options and client names.
///
/// `PUT /api/sessions/{name}` replaces the whole config, so always send the complete desired
/// config, never a patch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionConfig {
    /// Where WAHA posts this session's events.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub webhooks: Vec<WebhookConfig>,
    /// String key/values WAHA echoes in every webhook of this session (put tenant and chip ids
    /// here). WAHA rejects non-string values with 400.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub metadata: BTreeMap<String, String>,
    /// The proxy the engine connects to WhatsApp through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyConfig>,
    /// Verbose engine logs (`false` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug: Option<bool>,
    /// NOWEB engine options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noweb: Option<NowebConfig>,
    /// The device and browser names shown on the phone (newer servers; older ones drop it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientNames>,
}

impl SessionConfig {
    /// Whether two configs mean the same to WAHA: equal after filling in the server's defaults
    /// (`debug: false` is the same as no `debug`, an `hmac` without a key is no `hmac`).
    ///
    /// [`ensure_session`](crate::WahaApiExt::ensure_session) uses it to skip a `PUT` (which
    /// restarts a running session) when the server already holds the desired config.
    pub fn is_equivalent_to(&self, other: &Self) -> bool {
        self.normalized() == other.normalized()
    }

    fn normalized(&self) -> Self {
        let mut config = self.clone();
        if config.debug == Some(false) {
            config.debug = None;
        }
        for webhook in &mut config.webhooks {
            if webhook.hmac.as_ref().is_some_and(|hmac| hmac.key.is_none()) {
                webhook.hmac = None;
            }
        }
        config
    }
}

/// A proxy for the session's connection to WhatsApp.
///
/// `Debug` redacts the password, the user name (gateway user names carry session ids), and
/// credentials written into `server`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyConfig {
    /// `host:port`; WAHA adds `http://` when there is no scheme.
    pub server: String,
    /// Proxy user name, if the proxy needs authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Proxy password (secret). A stored value that is not a valid secret (empty, control
    /// characters) reads as `None`.
    #[serde(
        default,
        serialize_with = "fleet_vocab::expose_option",
        deserialize_with = "valid_secret_or_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub password: Option<ProxyPassword>,
}

impl ProxyConfig {
    /// A proxy without authentication.
    pub fn new(server: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            username: None,
            password: None,
        }
    }

    /// The same proxy with Basic credentials.
    pub fn with_credentials(
        mut self,
        username: impl Into<String>,
        password: ProxyPassword,
    ) -> Self {
        self.username = Some(username.into());
        self.password = Some(password);
        self
    }
}

/// One webhook target of a session.
///
/// `Debug` shows only the scheme, host and port of `url` (its credentials, path, query and
/// fragment become `<redacted>`: receivers put tokens there), and redacts the HMAC key and the
/// custom header values.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookConfig {
    /// The URL WAHA posts to. Treat it as a secret when it carries a token.
    pub url: String,
    /// Event names, e.g. `session.status`, `message`, `message.ack`. Unknown names (also `*`)
    /// make WAHA answer 400.
    #[serde(default, deserialize_with = "null_as_default")]
    pub events: Vec<String>,
    /// Signing: with a key, WAHA adds `X-Webhook-Hmac` (HMAC-SHA512 of the body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac: Option<WebhookHmac>,
    /// WAHA's delivery retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<WebhookRetries>,
    /// Extra headers on every delivery; values are secrets.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub custom_headers: Vec<CustomHeader>,
}

impl WebhookConfig {
    /// A webhook for `events` at `url`, unsigned, with the server's default retries.
    pub fn new<E: Into<String>>(
        url: impl Into<String>,
        events: impl IntoIterator<Item = E>,
    ) -> Self {
        Self {
            url: url.into(),
            events: events.into_iter().map(Into::into).collect(),
            hmac: None,
            retries: None,
            custom_headers: Vec::new(),
        }
    }

    /// The same webhook, signed with `key` (an [`HmacKey`] is never empty, so WAHA always
    /// signs what it sends).
    #[must_use]
    pub fn signed_with(mut self, key: HmacKey) -> Self {
        self.hmac = Some(WebhookHmac { key: Some(key) });
        self
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured, so that a new field cannot be forgotten here.
        let Self {
            url,
            events,
            hmac,
            retries,
            custom_headers,
        } = self;
        f.debug_struct("WebhookConfig")
            .field("url", &redact_url(url))
            .field("events", events)
            .field("hmac", hmac)
            .field("retries", retries)
            .field("custom_headers", custom_headers)
            .finish()
    }
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            server,
            username,
            password,
        } = self;
        // Gateway user names carry session ids and targeting options: only their presence shows.
        f.debug_struct("ProxyConfig")
            .field("server", &redact_authority(server))
            .field("username", &username.as_ref().map(|_| REDACTED))
            .field("password", password)
            .finish()
    }
}

/// The HMAC signing settings of a webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookHmac {
    /// The signing key (secret). No key means no signature. A stored value that is not a valid
    /// secret (empty, control characters) reads as `None`.
    #[serde(
        default,
        serialize_with = "fleet_vocab::expose_option",
        deserialize_with = "valid_secret_or_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub key: Option<HmacKey>,
}

/// How WAHA retries a failed webhook delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRetries {
    /// The delay policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<WebhookRetryPolicy>,
    /// The base delay in seconds. WAHA types it as a JSON number: an answer of `2.0` reads
    /// as 2 (a fraction is dropped).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_whole_u32"
    )]
    pub delay_seconds: Option<u32>,
    /// How many attempts in total (a JSON number; `15.0` reads as 15).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_whole_u32"
    )]
    pub attempts: Option<u32>,
}

/// The delay policy of WAHA's webhook retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookRetryPolicy {
    /// The same delay every time.
    Constant,
    /// The delay grows linearly.
    Linear,
    /// The delay doubles.
    Exponential,
}

/// A header WAHA adds to every delivery of a webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomHeader {
    /// Header name.
    pub name: String,
    /// Header value (secret).
    #[serde(serialize_with = "fleet_vocab::expose")]
    pub value: HeaderValueSecret,
}

/// NOWEB engine options.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NowebConfig {
    /// Keep contacts, chats and messages in the engine's store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<NowebStore>,
    /// Mark the account online when it connects (server default: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark_online: Option<bool>,
}

/// The NOWEB store settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NowebStore {
    /// Enable the store.
    #[serde(default)]
    pub enabled: bool,
    /// Download the whole history at the first login.
    #[serde(default)]
    pub full_sync: bool,
}

/// The names WhatsApp shows for the linked device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientNames {
    /// The device name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// The browser name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser_name: Option<String>,
}
