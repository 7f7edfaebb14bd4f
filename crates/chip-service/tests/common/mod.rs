//! The helpers several of chip-service's test binaries need, defined once: the admin token
//! and the constants the flows share, a plain HTTP client of the service ([`Api`], answering
//! an [`Answer`]), and the embedded default served on 127.0.0.1 ([`serve`], [`Service`]) with
//! the simulated phone's scan ([`scan_when_ready`]).
//!
//! Included with `mod common;` by `service.rs`, `service_docker.rs` and `dashboard.rs`.
// Each test binary uses a subset of these helpers; what one binary leaves unused is not dead.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chip_service::service::{AdminToken, MemoryTokenStore, ServiceParts, ShutdownSignal, router};
use chip_service::{Embedded, EmbeddedOptions};
use metrics_exporter_prometheus::PrometheusHandle;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tenant_isolation::{PacerConfig, TenantId};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

/// The admin token the service runs with on the embedded default.
pub const ADMIN: &str = "test-admin-token-0123456789abcdef0123456789abcdef";

/// What a PNG file starts with.
pub const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The chat the flows send to.
pub const CHAT: &str = "5511988887777@c.us";

/// An HTTP client that never goes through a proxy (the service is on 127.0.0.1), with a
/// timeout per request when `request_timeout` is given.
pub fn http_client(request_timeout: Option<Duration>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().no_proxy();
    if let Some(limit) = request_timeout {
        builder = builder.timeout(limit);
    }
    builder.build().expect("an HTTP client")
}

/// What a request answered.
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP client of the service at `base` (`http://host:port`).
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    /// A client of `base` ([`http_client`] with `request_timeout`).
    pub fn new(base: String, request_timeout: Option<Duration>) -> Self {
        Api {
            base,
            http: http_client(request_timeout),
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: the request is answered: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("a body").to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.call(Method::GET, path, token, None, &[]).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        self.call(Method::POST, path, token, body, &[]).await
    }
}

/// The embedded default the tests run on.
pub fn embedded_options() -> EmbeddedOptions {
    EmbeddedOptions {
        // WAHA's 60 s first QR code lasts 15 s, its window 40 s: room for a loaded machine.
        time_scale: 0.25,
        pacer: PacerConfig {
            jitter_min: Duration::ZERO,
            jitter_max: Duration::from_millis(50),
            ..PacerConfig::default()
        },
        ..EmbeddedOptions::default()
    }
}

/// The embedded default on `options`, its supervisor running when `start`.
pub async fn build_embedded(options: EmbeddedOptions, start: bool) -> Embedded {
    let mut embedded = Embedded::build(options)
        .await
        .expect("the embedded default builds");
    if start {
        embedded.start().await.expect("the supervisor starts");
    }
    embedded
}

/// chip-service on the embedded default, on 127.0.0.1.
pub struct Service {
    pub embedded: Embedded,
    pub addr: SocketAddr,
    pub shutdown: ShutdownSignal,
    pub server: JoinHandle<()>,
}

impl Service {
    /// Triggers the shutdown, waits (10 s at most) for the server to drain, then shuts the
    /// embedded default down.
    pub async fn stop(self) {
        self.shutdown.trigger();
        if timeout(Duration::from_secs(10), self.server).await.is_err() {
            panic!("the service did not drain within 10 s");
        }
        self.embedded.shutdown().await;
    }
}

/// Serves `embedded` with [`ADMIN`] on a free 127.0.0.1 port, `/metrics` on `metrics` when
/// given; the server drains gracefully once [`Service::stop`] triggers its shutdown signal.
pub async fn serve(embedded: Embedded, metrics: Option<PrometheusHandle>) -> Service {
    let shutdown = ShutdownSignal::new();
    let mut parts = ServiceParts::new(
        embedded.supervisor().clone(),
        embedded.ingest().clone(),
        embedded.directory().clone(),
        Arc::new(MemoryTokenStore::new()),
        AdminToken::new(ADMIN).expect("a valid admin token"),
    );
    if let Some(handle) = metrics {
        parts = parts.with_metrics(handle);
    }
    parts.shutdown = shutdown.clone();
    let app = router(parts);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port");
    let addr = listener.local_addr().expect("its address");
    let stop = shutdown.clone();
    let server = tokio::spawn(async move {
        let stopped = async move {
            while !stop.is_triggered() {
                sleep(Duration::from_millis(50)).await;
            }
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
            .expect("the service serves");
    });
    Service {
        embedded,
        addr,
        shutdown,
        server,
    }
}

/// The simulated phone scans the QR code of `session` as soon as `tenant`'s simulator runs
/// and offers one (within 30 s).
pub async fn scan_when_ready(embedded: &Embedded, tenant: &TenantId, session: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let scanned = match embedded.control_for(tenant).await {
            Some(control) => control.scan(session).map_err(|e| e.to_string()),
            None => Err("no simulator yet".to_owned()),
        };
        match scanned {
            Ok(()) => break,
            Err(error) => {
                assert!(Instant::now() < deadline, "the scan: {error}");
                sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The text the one QR code in the PNG image `png` encodes (`image` decodes the PNG, `rqrr`
/// the QR code); an error when the image holds no QR code or more than one.
pub fn decode_png(png: &[u8]) -> Result<String, String> {
    let image = image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .map_err(|error| format!("not a PNG image: {error}"))?
        .to_luma8();
    let (width, height) = image.dimensions();
    let mut prepared =
        rqrr::PreparedImage::prepare_from_greyscale(width as usize, height as usize, |x, y| {
            image.get_pixel(x as u32, y as u32).0[0]
        });
    let grids = prepared.detect_grids();
    match grids.as_slice() {
        [grid] => grid
            .decode()
            .map(|(_, text)| text)
            .map_err(|error| format!("the QR code does not decode: {error}")),
        [] => Err("no QR code in the image".to_owned()),
        more => Err(format!(
            "{} QR codes in the image, expected one",
            more.len()
        )),
    }
}

/// The simulator behind `tenant`'s running slot-0 container on Docker: its control API and a
/// WAHA client, at the container's address (from the pool's labels, under `managed_by`) with
/// the tenant's key (from `directory`). `None` while there is none.
pub async fn running_sim(
    runtime: &container_pool::DockerRuntime,
    managed_by: &str,
    directory: &dyn tenant_isolation::TenantDirectory,
    tenant: &TenantId,
) -> Option<(waha_sim::SimControlClient, waha_client::WahaClient)> {
    use container_pool::{ContainerRuntime, ContainerState, LabelSelector, labels};
    let url = runtime
        .list(&LabelSelector::new(labels::MANAGED_BY, managed_by))
        .await
        .ok()?
        .into_iter()
        .find(|c| {
            c.state == ContainerState::Running
                && c.label(labels::TENANT) == Some(tenant.as_str())
                && c.label(labels::SLOT) == Some("0")
        })?
        .url?;
    let key = directory.get(tenant).await.ok()?.secrets.container_api_key;
    let control = waha_sim::SimControlClient::new(
        url.as_str(),
        Some(waha_sim::ApiKey::new(key.expose_secret())),
    )
    .ok()?;
    let waha = waha_client::WahaClient::new(url, key).ok()?;
    Some((control, waha))
}
