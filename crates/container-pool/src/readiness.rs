//! The HTTP readiness probe seam.

use async_trait::async_trait;
use tracing::warn;
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
    /// The server that answered reports another worker id (`WAHA_WORKER_ID`) than the one the
    /// pool gave the container: something else holds the container's address (a recycled
    /// address or port). Polling cannot fix it, and no call with the tenant's key may go
    /// there: the pool stops at once with
    /// [`Error::WorkerMismatch`](crate::Error::WorkerMismatch).
    #[error("the server reports worker id `{reported}`, not `{expected}`")]
    WorkerMismatch {
        /// The worker id the pool gave the container (its name).
        expected: String,
        /// The worker id the answering server reported.
        reported: String,
    },
}

impl ProbeError {
    /// A short, stable name of the variant, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotReady(_) => "not_ready",
            Self::Unauthorized => "unauthorized",
            Self::Misconfigured(_) => "misconfigured",
            Self::WorkerMismatch { .. } => "worker_mismatch",
        }
    }

    /// Whether polling again can help: only for [`ProbeError::NotReady`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::NotReady(_))
    }
}

/// The last readiness check: an authenticated HTTP request to the container, which also
/// confirms that the server answering is the container the pool created.
///
/// The default, `WahaHealthProbe`, asks WAHA's `/health` (falling back to `/ping` on servers
/// that answer `/health` with 422, old Core) and then `/api/server/status` for the worker id.
/// Tests may plug in their own.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ReadinessProbe: Send + Sync {
    /// `Ok` when the server at `base_url` answers as ready and is the worker `worker_id`;
    /// otherwise why not.
    ///
    /// `worker_id` is what the pool set `WAHA_WORKER_ID` to (the container's name). A server
    /// that reports another worker id is [`ProbeError::WorkerMismatch`]; one that reports none
    /// (old Core, or a server started without the variable) is accepted, with a warning.
    async fn probe(
        &self,
        base_url: &Url,
        api_key: &ApiKey,
        worker_id: &str,
    ) -> Result<(), ProbeError>;
}

/// The default probe: waha-client's [`health`](waha_client::WahaApi::health) (`GET /health`
/// with the key, falling back to `GET /ping` when an old server answers 422), then
/// [`server_status`](waha_client::WahaApi::server_status) (`GET /api/server/status`) to
/// compare the worker id it reports with the expected one; one attempt each per poll, no
/// retries (the pool polls).
///
/// Its HTTP client is [`ClientConfig::build_http_client`](waha_client::ClientConfig::build_http_client)'s:
/// it never follows a redirect (reqwest would carry the `X-Api-Key` header to the redirect
/// target, so a 3xx answer is "not ready"), and it ignores `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY`
/// unless [`use_system_proxy`](waha_client::ClientConfig::use_system_proxy) is set (the key
/// goes straight to the container).
#[derive(Debug, Clone)]
pub struct WahaHealthProbe {
    http: reqwest::Client,
    config: waha_client::ClientConfig,
}

impl WahaHealthProbe {
    /// A probe whose requests time out after `timeout` (the pool also caps each probe by its
    /// own `probe_timeout` and the time left). It uses no proxy.
    pub fn new(timeout: std::time::Duration) -> Result<Self, crate::Error> {
        let mut config = waha_client::ClientConfig::default();
        config.timeouts.connect = timeout;
        config.timeouts.probe = timeout;
        config.timeouts.read = timeout;
        Self::with_config(config)
    }

    /// A probe with waha-client's configuration: `timeouts.connect` (opening a connection),
    /// `timeouts.probe` (`/health`, `/ping`), `timeouts.read` (`/api/server/status`),
    /// `max_response_bytes`, and `use_system_proxy` (default `false`: the environment's proxy
    /// variables are ignored). Retries are turned off whatever `config.retry` says: the pool
    /// polls.
    pub fn with_config(mut config: waha_client::ClientConfig) -> Result<Self, crate::Error> {
        config.retry = waha_client::RetryConfig::disabled();
        let http = config.build_http_client().map_err(|e| {
            crate::Error::InvalidConfig(format!("cannot build the probe's HTTP client: {e}"))
        })?;
        Ok(Self { http, config })
    }
}

#[async_trait]
impl ReadinessProbe for WahaHealthProbe {
    async fn probe(
        &self,
        base_url: &Url,
        api_key: &ApiKey,
        worker_id: &str,
    ) -> Result<(), ProbeError> {
        use waha_client::{WahaApi, WahaError};
        let client = waha_client::WahaClient::with_http_client(
            base_url.clone(),
            api_key.clone(),
            self.config.clone(),
            self.http.clone(),
        )
        .map_err(|e| ProbeError::Misconfigured(e.to_string()))?;
        let refused = |e: WahaError| match e {
            WahaError::Unauthorized { .. } => ProbeError::Unauthorized,
            e => ProbeError::NotReady(e.to_string()),
        };
        client.health().await.map_err(refused)?;
        let reported = match client.server_status().await {
            Ok(status) => status.worker_id().map(str::to_owned),
            // No status route (404), or a status this client cannot read: the server says
            // nothing about its worker.
            Err(WahaError::NotFound { .. } | WahaError::Decode { .. }) => None,
            Err(e) => return Err(refused(e)),
        };
        match reported {
            Some(reported) if reported == worker_id => Ok(()),
            Some(reported) => Err(ProbeError::WorkerMismatch {
                expected: worker_id.to_owned(),
                reported,
            }),
            None => {
                warn!(
                    worker_id,
                    "the server reports no worker id (old WAHA Core?): accepted without \
                     confirming that it is the container the pool created"
                );
                Ok(())
            }
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

    const WORKER: &str = "cp-acme-0";
    const KEY: &str = "probe-key-0123456789";

    /// Answers each request with `answer(request head)` and records the request heads.
    async fn serve_with(
        answer: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> (Url, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (log, answer) = (log.clone(), answer.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 8192];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let reply = answer(&head);
                    log.lock().unwrap().push(head);
                    let _ = socket.write_all(reply.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        (url, seen)
    }

    /// Answers every request with `answer`.
    async fn serve(answer: String) -> (Url, Arc<Mutex<Vec<String>>>) {
        serve_with(move |_| answer.clone()).await
    }

    fn http(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    /// The path a request head asks for, also in the absolute form a proxy gets
    /// (`GET http://host:port/path HTTP/1.1`).
    fn requested_path(head: &str) -> &str {
        let target = head.split(' ').nth(1).unwrap_or_default();
        match target.strip_prefix("http://") {
            Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
            None => target,
        }
    }

    /// A WAHA server: `/health` is ok; `/api/server/status` answers `status` (a JSON body),
    /// or 404 like a server without the route when `None`.
    async fn waha(status: Option<&'static str>) -> (Url, Arc<Mutex<Vec<String>>>) {
        serve_with(move |head| {
            let path = requested_path(head);
            if path == "/health" {
                http("200 OK", r#"{"status":"ok","info":{},"error":{},"details":{}}"#)
            } else if path == "/api/server/status" {
                match status {
                    Some(body) => http("200 OK", body),
                    None => http(
                        "404 Not Found",
                        r#"{"statusCode":404,"message":"Cannot GET /api/server/status","error":"Not Found"}"#,
                    ),
                }
            } else {
                http("599 Unexpected", "{}")
            }
        })
        .await
    }

    fn key() -> ApiKey {
        ApiKey::new(KEY).unwrap()
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
        let result = probe.probe(&probed, &key(), WORKER).await;
        assert!(
            matches!(result, Err(ProbeError::NotReady(_))),
            "a redirect is not ready: {result:?}"
        );
        assert!(
            asked.lock().unwrap().iter().any(|r| r.contains(KEY)),
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
        let err = probe.probe(&probed, &key(), WORKER).await.unwrap_err();
        assert!(matches!(err, ProbeError::Misconfigured(_)), "{err:?}");
        assert!(!err.is_retryable());
        assert_eq!(err.kind(), "misconfigured");
        assert!(!err.to_string().contains("0123456789"), "{err}");
        assert!(asked.lock().unwrap().is_empty(), "nothing was sent");
    }

    /// The server at the address reports another worker id: a typed, permanent mismatch. The
    /// same server reporting the expected id is ready.
    #[tokio::test]
    async fn a_server_reporting_another_worker_id_is_a_mismatch() {
        let (url, asked) = waha(Some(
            r#"{"startTimestamp":1,"uptime":2,"worker":{"id":"cp-other-0"}}"#,
        ))
        .await;
        let probe = WahaHealthProbe::new(Duration::from_secs(2)).unwrap();
        let err = probe.probe(&url, &key(), WORKER).await.unwrap_err();
        assert_eq!(
            err,
            ProbeError::WorkerMismatch {
                expected: WORKER.to_owned(),
                reported: "cp-other-0".to_owned(),
            }
        );
        assert!(!err.is_retryable());
        assert_eq!(err.kind(), "worker_mismatch");
        probe.probe(&url, &key(), "cp-other-0").await.unwrap();
        let asked = asked.lock().unwrap();
        assert!(
            asked
                .iter()
                .any(|head| requested_path(head) == "/api/server/status"),
            "{asked:?}"
        );
    }

    /// Old Core reports no worker id (an empty one, or no status route at all): accepted.
    #[tokio::test]
    async fn a_server_reporting_no_worker_id_is_accepted() {
        let probe = WahaHealthProbe::new(Duration::from_secs(2)).unwrap();
        for status in [
            Some(r#"{"startTimestamp":1,"uptime":2,"worker":{"id":""}}"#),
            Some(r#"{"startTimestamp":1,"uptime":2}"#),
            None,
        ] {
            let (url, _) = waha(status).await;
            probe
                .probe(&url, &key(), WORKER)
                .await
                .unwrap_or_else(|e| panic!("{status:?}: {e}"));
        }
    }

    /// Set in a child's environment: the base URL of the WAHA server to probe.
    const CHILD_TARGET: &str = "CONTAINER_POOL_PROBE_PROXY_TARGET";

    /// Runs the test `name` alone in a child process (this test binary again) whose proxy
    /// variables all name `proxy` and which exempts nothing from them: the environment cannot
    /// be changed safely inside this multi-threaded test process.
    async fn run_child(name: &'static str, target: &Url, proxy: &Url) {
        let exe = std::env::current_exe().unwrap();
        let target = target.to_string();
        let proxy = format!(
            "http://{}:{}",
            proxy.host_str().unwrap_or_default(),
            proxy.port().unwrap_or_default()
        );
        let output = tokio::task::spawn_blocking(move || {
            let mut command = std::process::Command::new(exe);
            command
                .args([name, "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_TARGET, target)
                .env_remove("REQUEST_METHOD")
                .env_remove("NO_PROXY")
                .env_remove("no_proxy");
            for var in [
                "HTTP_PROXY",
                "http_proxy",
                "HTTPS_PROXY",
                "https_proxy",
                "ALL_PROXY",
                "all_proxy",
            ] {
                command.env(var, &proxy);
            }
            command.output()
        })
        .await
        .unwrap()
        .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "the child run of {name} failed or did not run:\n{stdout}\n{stderr}"
        );
    }

    /// The child's part: one probe of the target, with or without the system proxy.
    async fn probe_as_child(target: &str, use_system_proxy: bool) {
        let config = waha_client::ClientConfig {
            use_system_proxy,
            ..waha_client::ClientConfig::default()
        };
        let probe = WahaHealthProbe::with_config(config).unwrap();
        probe
            .probe(&target.parse().unwrap(), &key(), WORKER)
            .await
            .unwrap();
    }

    /// A WAHA server of worker [`WORKER`]; also the stand-in proxy, which answers like it (so
    /// a proxied probe passes too) and records what it gets.
    async fn worker_server() -> (Url, Arc<Mutex<Vec<String>>>) {
        waha(Some(
            r#"{"startTimestamp":1,"uptime":2,"worker":{"id":"cp-acme-0"}}"#,
        ))
        .await
    }

    #[tokio::test]
    async fn the_probe_ignores_the_environments_proxy() {
        if let Ok(target) = std::env::var(CHILD_TARGET) {
            probe_as_child(&target, false).await;
            return;
        }
        let (target, direct) = worker_server().await;
        let (proxy, proxied) = worker_server().await;
        run_child(
            "readiness::tests::the_probe_ignores_the_environments_proxy",
            &target,
            &proxy,
        )
        .await;
        let proxied = proxied.lock().unwrap().clone();
        assert!(
            proxied.is_empty(),
            "the key went through the proxy: {proxied:?}"
        );
        let direct = direct.lock().unwrap().clone();
        assert_eq!(
            direct.len(),
            2,
            "/health and /api/server/status: {direct:?}"
        );
        assert!(direct.iter().all(|head| head.contains(KEY)), "{direct:?}");
    }

    #[tokio::test]
    async fn the_probe_uses_the_environments_proxy_only_when_opted_in() {
        if let Ok(target) = std::env::var(CHILD_TARGET) {
            probe_as_child(&target, true).await;
            return;
        }
        let (target, direct) = worker_server().await;
        let (proxy, proxied) = worker_server().await;
        run_child(
            "readiness::tests::the_probe_uses_the_environments_proxy_only_when_opted_in",
            &target,
            &proxy,
        )
        .await;
        let direct = direct.lock().unwrap().clone();
        assert!(direct.is_empty(), "the proxy was bypassed: {direct:?}");
        let proxied = proxied.lock().unwrap().clone();
        assert_eq!(proxied.len(), 2, "{proxied:?}");
    }
}
