//! The HTTP client's configuration: plain data with documented defaults.

use std::time::Duration;

use crate::error::WahaError;

/// Configuration of a [`WahaClient`](crate::WahaClient). `Default` gives the values documented
/// on each field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Per-operation time-outs.
    pub timeouts: Timeouts,
    /// Retries of transient errors.
    pub retry: RetryConfig,
    /// The largest answer body (in bytes) the client reads; a larger one is
    /// [`WahaError::ResponseTooLarge`](crate::WahaError::ResponseTooLarge). Default 8 MiB.
    pub max_response_bytes: usize,
    /// Whether requests go through the proxy the environment names (`HTTP_PROXY`,
    /// `HTTPS_PROXY`, `ALL_PROXY` and their lowercase forms, minus `NO_PROXY`). Default
    /// `false`: the client connects straight to the base URL whatever the environment says,
    /// so the API key and request bodies (proxy passwords, webhook HMAC keys) never pass
    /// through a proxy that was set for other traffic. Set it only when the WAHA server really
    /// is reached through that proxy. (A session's own proxy, `SessionConfig::proxy`, is
    /// unrelated: WAHA uses it for WhatsApp's traffic.)
    pub use_system_proxy: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            timeouts: Timeouts::default(),
            retry: RetryConfig::default(),
            max_response_bytes: 8 * 1024 * 1024,
            use_system_proxy: false,
        }
    }
}

impl ClientConfig {
    /// The `reqwest::Client` [`WahaClient::with_config`](crate::WahaClient::with_config)
    /// builds: redirects never followed, [`Timeouts::connect`], `TCP_NODELAY`, this crate's
    /// user agent, and no proxy unless [`use_system_proxy`](Self::use_system_proxy) is set.
    /// Build one here to share its connection pool through
    /// [`WahaClient::with_http_client`](crate::WahaClient::with_http_client) (container-pool's
    /// readiness probe does).
    ///
    /// # Errors
    /// [`WahaError::Invalid`] when the TLS backend cannot be set up.
    pub fn build_http_client(&self) -> Result<reqwest::Client, WahaError> {
        let mut builder = reqwest::Client::builder()
            // Never follow a redirect: reqwest would carry `X-Api-Key` to another host (it
            // strips only `Authorization`, `Cookie` and `Proxy-Authorization`) and re-send
            // request bodies (proxy passwords, HMAC keys) on 307/308. A 3xx is an `Api` error.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.timeouts.connect)
            .tcp_nodelay(true)
            .user_agent(concat!("waha-client/", env!("CARGO_PKG_VERSION")));
        if !self.use_system_proxy {
            // reqwest reads HTTP_PROXY/HTTPS_PROXY/ALL_PROXY by default: the key and the
            // bodies would go to whatever proxy the process environment names.
            builder = builder.no_proxy();
        }
        builder
            .build()
            .map_err(|err| WahaError::invalid(format!("could not build the HTTP client: {err}")))
    }
}

/// Time-outs per kind of operation. Each bounds one attempt (connect, send, whole answer).
/// When a call may be retried, each attempt's time-out is also cut to what is left of
/// [`RetryConfig::max_elapsed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening a connection. Default 3 s.
    pub connect: Duration,
    /// `ping` and `health`: probes must fail fast. Default 2 s.
    pub probe: Duration,
    /// Reads: version, status, list, get, me. Default 10 s.
    pub read: Duration,
    /// Session operations: create, update, delete, start, stop, restart, logout. A real server
    /// took about 13 s for stop, restart, delete and PUT-while-running. Default 30 s.
    pub session: Duration,
    /// The QR routes, which wait up to about 5 s for `SCAN_QR_CODE` before answering 422.
    /// Default 15 s.
    pub qr: Duration,
    /// Requesting a pairing code, which could hang on a real server while `STARTING`.
    /// Default 20 s.
    pub pairing_code: Duration,
    /// Messages: sendText, sendSeen, start/stop typing. Default 20 s.
    pub message: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            probe: Duration::from_secs(2),
            read: Duration::from_secs(10),
            session: Duration::from_secs(30),
            qr: Duration::from_secs(15),
            pairing_code: Duration::from_secs(20),
            message: Duration::from_secs(20),
        }
    }
}

/// Retries of transient errors: exponential backoff with jitter, bounded in attempts and in
/// total time. Which calls are retried at all is fixed per operation (see
/// `docs/waha-client.md`).
///
/// The delays double from `min_delay` up to `max_delay`. With `jitter`, backon adds a random
/// 0–100 % to each delay, so a delay lies between `d` and `2 × d`: up to `2 × max_delay`.
/// `max_elapsed` bounds the whole call whatever the jitter does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    /// Retries after the first attempt (0 disables retries). Default 6.
    pub max_retries: usize,
    /// The first delay. Default 200 ms.
    pub min_delay: Duration,
    /// The longest delay. Default 5 s.
    pub max_delay: Duration,
    /// The bound on the whole call, first attempt and retries included, for calls that may be
    /// retried: a retry whose delay would end past it is not made, and each attempt's
    /// time-out is cut to the time left (an attempt cut short fails with
    /// `Transient(Timeout)`). Calls that are never retried (`ping`, `health`) and clients with
    /// retries disabled are bounded by their per-operation time-out alone. Default 60 s.
    pub max_elapsed: Duration,
    /// Randomise each delay by adding 0–100 % of it (so that many clients do not retry in
    /// step). Default true.
    pub jitter: bool,
}

impl RetryConfig {
    /// No retries at all.
    pub fn disabled() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 6,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(60),
            jitter: true,
        }
    }
}
