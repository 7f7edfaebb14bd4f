//! The HTTP readiness probe seam.

use async_trait::async_trait;
use url::Url;

use crate::ApiKey;

/// Why a readiness probe did not pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The server is not ready yet (refused, timed out, 5xx, booting): the pool polls again.
    /// The message carries no secret.
    #[error("{0}")]
    NotReady(String),
    /// The server refused the API key (401/403). Polling cannot fix it: the pool stops at once
    /// with [`Error::Unauthorized`](crate::Error::Unauthorized) (after re-creating a container
    /// started with a rotated key).
    #[error("the server refused the API key (HTTP 401/403)")]
    Unauthorized,
    /// The probe cannot even be sent: the URL or the key cannot be used (for example a key
    /// that is not a valid HTTP header value, a URL with a query). Polling cannot fix it: the pool stops at once
    /// with [`Error::InvalidConfig`](crate::Error::InvalidConfig). The message carries no
    /// secret.
    #[error("the probe cannot be sent: {0}")]
    Misconfigured(String),
}

impl ProbeError {
    /// A short, stable name of the variant, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotReady(_) => "not_ready",
            Self::Unauthorized => "unauthorized",
            Self::Misconfigured(_) => "misconfigured",
        }
    }

    /// Whether polling again can help: only for [`ProbeError::NotReady`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::NotReady(_))
    }
}

/// The last readiness check: an authenticated HTTP request to the container.
///
/// The default, `WahaHealthProbe`, asks WAHA's `/health` and falls back to `/ping` on servers
/// that answer `/health` with 422 (old Core). Tests may plug in their own.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ReadinessProbe: Send + Sync {
    /// `Ok` when the server at `base_url` answers as ready; otherwise why not.
    async fn probe(&self, base_url: &Url, api_key: &ApiKey) -> Result<(), ProbeError>;
}

/// The default probe: waha-client's [`health`](waha_client::WahaApi::health) (`GET /health`
/// with the key, falling back to `GET /ping` when an old server answers 422), one attempt per
/// poll, no retries (the pool polls). It never follows a redirect: reqwest would carry the
/// `X-Api-Key` header to the redirect target, so a 3xx answer is "not ready".
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
            // A redirect target (possibly another host) would receive the API key.
            .redirect(reqwest::redirect::Policy::none())
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
    async fn probe(&self, base_url: &Url, api_key: &ApiKey) -> Result<(), ProbeError> {
        use waha_client::{WahaApi, WahaError};
        let client = waha_client::WahaClient::with_http_client(
            base_url.clone(),
            api_key.clone(),
            self.config.clone(),
            self.http.clone(),
        )
        .map_err(|e| ProbeError::Misconfigured(e.to_string()))?;
        match client.health().await {
            Ok(_) => Ok(()),
            Err(WahaError::Unauthorized { .. }) => Err(ProbeError::Unauthorized),
            Err(e) => Err(ProbeError::NotReady(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Answers every request with `answer` and records the request heads it received.
    async fn serve(answer: String) -> (Url, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = vec![0u8; 8192];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        (url, seen)
    }

    #[tokio::test]
    async fn the_probe_does_not_follow_a_redirect_and_so_never_sends_the_key_elsewhere() {
        let (elsewhere, stolen) =
            serve("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}".into())
                .await;
        let (probed, asked) = serve(format!(
            "HTTP/1.1 302 Found\r\nlocation: {elsewhere}health\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        ))
        .await;
        let probe = WahaHealthProbe::new(Duration::from_secs(2)).unwrap();
        let key = ApiKey::new("probe-key-0123456789").unwrap();
        let result = probe.probe(&probed, &key).await;
        assert!(
            matches!(result, Err(ProbeError::NotReady(_))),
            "a redirect is not ready: {result:?}"
        );
        assert!(
            asked
                .lock()
                .unwrap()
                .iter()
                .any(|r| r.contains("probe-key-0123456789")),
            "the probed server got the key"
        );
        let stolen = stolen.lock().unwrap();
        assert!(
            stolen.is_empty(),
            "the redirect target was asked: {stolen:?}"
        );
    }

    /// A URL the client refuses (here one with a query) makes the probe unsendable: a
    /// permanent `Misconfigured`, not a `NotReady` the pool would poll until its deadline.
    /// Nothing is sent, and the key is not in the message.
    #[tokio::test]
    async fn an_unusable_url_is_misconfigured_not_not_ready() {
        let (mut probed, asked) =
            serve("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".into()).await;
        probed.set_query(Some("x=1"));
        let probe = WahaHealthProbe::new(Duration::from_secs(2)).unwrap();
        let key = ApiKey::new("probe-key-0123456789").unwrap();
        let err = probe.probe(&probed, &key).await.unwrap_err();
        assert!(matches!(err, ProbeError::Misconfigured(_)), "{err:?}");
        assert!(!err.is_retryable());
        assert_eq!(err.kind(), "misconfigured");
        assert!(!err.to_string().contains("0123456789"), "{err}");
        assert!(asked.lock().unwrap().is_empty(), "nothing was sent");
    }
}
