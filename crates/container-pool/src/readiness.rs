//! The HTTP readiness probe seam.

use async_trait::async_trait;
use url::Url;

use crate::ApiKey;

/// The last readiness check: an authenticated HTTP request to the container.
///
/// The default, `WahaHealthProbe`, asks WAHA's `/health` and falls back to `/ping` on servers
/// that answer `/health` with 422 (old Core). Tests may plug in their own.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ReadinessProbe: Send + Sync {
    /// `Ok` when the server at `base_url` answers as ready; otherwise why not (a message
    /// without secrets).
    async fn probe(&self, base_url: &Url, api_key: &ApiKey) -> Result<(), String>;
}

/// The default probe: waha-client's [`health`](waha_client::WahaApi::health) (`GET /health`
/// with the key, falling back to `GET /ping` when an old server answers 422), one attempt per
/// poll, no retries (the pool polls).
#[derive(Debug, Clone)]
pub struct WahaHealthProbe {
    http: reqwest::Client,
    config: waha_client::ClientConfig,
}

impl WahaHealthProbe {
    /// A probe whose requests time out after `timeout` (the pool also caps each probe by its
    /// own `probe_timeout` and the time left).
    pub fn new(timeout: std::time::Duration) -> Result<Self, crate::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| {
                crate::Error::InvalidConfig(format!("cannot build the probe's HTTP client: {e}"))
            })?;
        let mut config = waha_client::ClientConfig::default();
        config.timeouts.connect = timeout;
        config.timeouts.probe = timeout;
        Ok(Self { http, config })
    }
}

#[async_trait]
impl ReadinessProbe for WahaHealthProbe {
    async fn probe(&self, base_url: &Url, api_key: &ApiKey) -> Result<(), String> {
        use waha_client::WahaApi;
        let client = waha_client::WahaClient::with_http_client(
            base_url.clone(),
            api_key.clone(),
            self.config.clone(),
            self.http.clone(),
        )
        .map_err(|e| e.to_string())?;
        client.health().await.map(|_| ()).map_err(|e| e.to_string())
    }
}
