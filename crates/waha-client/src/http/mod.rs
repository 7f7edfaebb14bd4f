//! The reqwest implementation of [`WahaApi`](crate::WahaApi).

mod api_impl;
mod config;
mod operation;
mod path;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::{Bytes, BytesMut};
use reqwest::Client;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use tokio::time::Instant;
use tracing::{Instrument, debug_span, warn};
use url::Url;

pub use config::{ClientConfig, RetryConfig, Timeouts};
use operation::{Operation, Repeat};
use path::RequestPath;

use crate::error::{TransientCause, WahaError};
use crate::response::{classify, transport};
use crate::secret::ApiKey;

const API_KEY_HEADER: &str = "x-api-key";
const JSON: &str = "application/json";

/// A WAHA client over HTTP (reqwest, rustls).
///
/// Built from a base URL and an [`ApiKey`]; construction does no I/O. Cloning is cheap and
/// clones share one connection pool, so keep one client per WAHA server and clone it freely.
/// Each call has its own time-out ([`Timeouts`]); transient errors are retried with jittered
/// exponential backoff where the call is safe to repeat ([`RetryConfig`]).
///
/// ```
/// use waha_client::{ApiKey, ClientConfig, RetryConfig, WahaClient};
///
/// let mut config = ClientConfig::default();
/// config.timeouts.session = std::time::Duration::from_secs(45);
/// config.retry = RetryConfig::disabled();
/// let client = WahaClient::with_config(
///     "http://127.0.0.1:3000".parse()?,
///     ApiKey::new("my-api-key")?,
///     config,
/// )?;
/// assert!(!format!("{client:?}").contains("my-api-key"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct WahaClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: Client,
    base: Url,
    /// The base URL's path without its trailing `/` (`""` for the root).
    base_path: String,
    api_key: Option<ApiKey>,
    api_key_header: Option<HeaderValue>,
    config: ClientConfig,
}

/// One request, ready to be sent (and sent again).
struct Request<'a> {
    operation: Operation,
    path: RequestPath,
    query: Option<&'static str>,
    body: Option<Bytes>,
    accept: &'static str,
    session: Option<&'a str>,
}

impl<'a> Request<'a> {
    fn new(operation: Operation, path: RequestPath) -> Self {
        Self {
            operation,
            path,
            query: None,
            body: None,
            accept: JSON,
            session: None,
        }
    }

    fn session(mut self, name: &'a str) -> Self {
        self.session = Some(name);
        self
    }

    fn query(mut self, query: &'static str) -> Self {
        self.query = Some(query);
        self
    }

    fn accept(mut self, accept: &'static str) -> Self {
        self.accept = accept;
        self
    }

    fn json<T: serde::Serialize + ?Sized>(mut self, body: &T) -> Result<Self, WahaError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|err| WahaError::invalid(format!("could not serialise the request: {err}")))?;
        self.body = Some(Bytes::from(bytes));
        Ok(self)
    }
}

impl WahaClient {
    /// A client with the default [`ClientConfig`].
    ///
    /// # Errors
    /// [`WahaError::Invalid`] when the URL is not an `http`/`https` base URL or the key is not a
    /// valid header value.
    ///
    /// `api_key` is an [`ApiKey`], or `None` for a server that runs without one
    /// (`WAHA_NO_API_KEY`): then no `X-Api-Key` header is sent.
    pub fn new(base_url: Url, api_key: impl Into<Option<ApiKey>>) -> Result<Self, WahaError> {
        Self::with_config(base_url, api_key, ClientConfig::default())
    }

    /// A client with its own configuration, over the `reqwest::Client` that
    /// [`ClientConfig::build_http_client`] builds (no redirects followed; the environment's
    /// proxy variables ignored unless [`ClientConfig::use_system_proxy`] is set).
    ///
    /// # Errors
    /// As [`WahaClient::new`]; also when the TLS backend cannot be set up.
    pub fn with_config(
        base_url: Url,
        api_key: impl Into<Option<ApiKey>>,
        config: ClientConfig,
    ) -> Result<Self, WahaError> {
        let http = config.build_http_client()?;
        Self::with_http_client(base_url, api_key, config, http)
    }

    /// A client over a `reqwest::Client` you built (to share its pool or add settings). Its own
    /// time-outs are overridden per call by `config.timeouts`, except `connect`, which is the
    /// given client's.
    ///
    /// **Build it with `.redirect(reqwest::redirect::Policy::none())`.** reqwest follows
    /// redirects by default, and on a redirect to another host it strips only `Authorization`,
    /// `Cookie` and `Proxy-Authorization`: the `X-Api-Key` header goes to the new host, and a
    /// 307/308 re-sends the request body (proxy passwords, HMAC keys, custom header values).
    /// A `reqwest::Client` does not reveal its redirect policy, so this cannot be checked here.
    /// What the client does check: an answer that arrived from another URL than the one asked
    /// (a redirect was followed) is refused with [`WahaError::Invalid`], but by then the
    /// request has already been sent to the redirect target. With `Policy::none()`, a 3xx
    /// answer is [`WahaError::Api`] with its status, as with [`WahaClient::new`].
    ///
    /// A `reqwest::Client` also sends every request through the proxy that `HTTP_PROXY`,
    /// `HTTPS_PROXY` or `ALL_PROXY` names unless it was built with `.no_proxy()`, and
    /// [`ClientConfig::use_system_proxy`] cannot change a client built elsewhere.
    /// [`ClientConfig::build_http_client`] builds one with both settings right.
    ///
    /// ```
    /// use waha_client::{ApiKey, ClientConfig, WahaClient};
    ///
    /// let http = reqwest::Client::builder()
    ///     .redirect(reqwest::redirect::Policy::none())
    ///     .build()?;
    /// let client = WahaClient::with_http_client(
    ///     "http://127.0.0.1:3000".parse()?,
    ///     ApiKey::new("my-api-key")?,
    ///     ClientConfig::default(),
    ///     http,
    /// )?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`WahaClient::new`].
    pub fn with_http_client(
        base_url: Url,
        api_key: impl Into<Option<ApiKey>>,
        config: ClientConfig,
        http: Client,
    ) -> Result<Self, WahaError> {
        if !matches!(base_url.scheme(), "http" | "https") || base_url.cannot_be_a_base() {
            return Err(WahaError::invalid(format!(
                "the WAHA base URL must be an http or https URL, got scheme {:?}",
                base_url.scheme()
            )));
        }
        if base_url.query().is_some() || base_url.fragment().is_some() {
            return Err(WahaError::invalid(
                "the WAHA base URL must not have a query or a fragment",
            ));
        }
        let api_key: Option<ApiKey> = api_key.into();
        let api_key_header = if let Some(api_key) = &api_key {
            let mut value = HeaderValue::from_str(api_key.expose_secret()).map_err(|_| {
                WahaError::invalid("the API key contains characters not allowed in an HTTP header")
            })?;
            value.set_sensitive(true);
            Some(value)
        } else {
            None
        };
        let base_path = base_url.path().trim_end_matches('/').to_owned();
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base: base_url,
                base_path,
                api_key,
                api_key_header,
                config,
            }),
        })
    }

    /// The base URL.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Sends `request`, retrying transient errors where the operation allows it, and returns
    /// the body of a successful answer. A retried call is bounded as a whole by
    /// `retry.max_elapsed`.
    async fn execute(&self, request: &Request<'_>) -> Result<Bytes, WahaError> {
        let operation = request.operation;
        let span = debug_span!(
            "waha_request",
            operation = operation.name(),
            session = request.session.unwrap_or_default()
        );
        let started = Instant::now();
        let retry = &self.inner.config.retry;
        let result = if operation.repeat() == Repeat::Never || retry.max_retries == 0 {
            self.attempt(request, None).instrument(span).await
        } else {
            let mut backoff = ExponentialBuilder::default()
                .with_min_delay(retry.min_delay)
                .with_max_delay(retry.max_delay)
                .with_max_times(retry.max_retries);
            if retry.jitter {
                backoff = backoff.with_jitter();
            }
            let deadline = started + retry.max_elapsed;
            (|| self.attempt(request, Some(deadline)))
                .retry(backoff)
                .sleep(tokio::time::sleep)
                .when(|err| operation.may_retry(err))
                // The delay is the jittered one: a retry that would start past the budget is
                // not made.
                .adjust(|_, delay| delay.filter(|delay| Instant::now() + *delay < deadline))
                .notify(|err, delay| {
                    // Kind and cause only: an error's text can carry (redacted) body excerpts.
                    let cause = match err {
                        WahaError::Transient { cause, .. } => Some(tracing::field::display(*cause)),
                        _ => None,
                    };
                    warn!(
                        operation = operation.name(),
                        session = request.session.unwrap_or_default(),
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        error = err.kind(),
                        cause,
                        "transient WAHA error; retrying"
                    );
                    metrics::counter!("waha_client_retries_total", "operation" => operation.name())
                        .increment(1);
                })
                .instrument(span)
                .await
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(err) => err.kind(),
        };
        metrics::counter!(
            "waha_client_requests_total",
            "operation" => operation.name(),
            "outcome" => outcome
        )
        .increment(1);
        metrics::histogram!(
            "waha_client_request_duration_seconds",
            "operation" => operation.name()
        )
        .record(started.elapsed().as_secs_f64());
        result
    }

    /// One attempt: send, read the whole answer (up to `max_response_bytes`), classify a
    /// failure. With a `deadline`, the attempt's time-out is cut to the time left before it.
    async fn attempt(
        &self,
        request: &Request<'_>,
        deadline: Option<Instant>,
    ) -> Result<Bytes, WahaError> {
        let inner = &*self.inner;
        let operation = request.operation;
        let mut timeout = operation.timeout(&inner.config.timeouts);
        let mut cut_by_budget = false;
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left < timeout {
                timeout = left;
                cut_by_budget = true;
            }
        }
        if timeout.is_zero() {
            return Err(budget_exhausted(&inner.config));
        }
        let result = self.exchange(request, timeout).await;
        match result {
            Err(WahaError::Transient {
                cause: TransientCause::Timeout,
                ..
            }) if cut_by_budget => Err(budget_exhausted(&inner.config)),
            other => other,
        }
    }

    async fn exchange(&self, request: &Request<'_>, timeout: Duration) -> Result<Bytes, WahaError> {
        let inner = &*self.inner;
        let url = request
            .path
            .url(&inner.base, &inner.base_path, request.query);
        let mut builder = inner
            .http
            .request(request.operation.method(), url.clone())
            .timeout(timeout)
            .header(ACCEPT, request.accept);
        if let Some(key) = &inner.api_key_header {
            builder = builder.header(API_KEY_HEADER, key.clone());
        }
        if let Some(body) = &request.body {
            builder = builder.header(CONTENT_TYPE, JSON).body(body.clone());
        }
        let response = builder.send().await.map_err(transport)?;
        if !same_target(response.url(), &url) {
            // Only a caller-supplied client can get here (see `with_http_client`).
            return Err(followed_redirect());
        }
        let status = response.status();
        let body = read_body(
            response,
            request.operation.name(),
            inner.config.max_response_bytes,
        )
        .await?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(classify(
                status,
                &body,
                inner.api_key.as_ref().map_or("", ApiKey::expose_secret),
            ))
        }
    }
}

/// The error of an attempt that ran out of the retry time budget.
fn budget_exhausted(config: &ClientConfig) -> WahaError {
    WahaError::Transient {
        cause: TransientCause::Timeout,
        detail: format!(
            "the retry time budget ({} ms) ran out",
            config.retry.max_elapsed.as_millis()
        ),
    }
}

/// Whether an answer came from the URL that was asked. reqwest moves a URL's user name and
/// password into an `Authorization` header and drops them from the URL, so they are not
/// compared.
fn same_target(answered: &Url, asked: &Url) -> bool {
    answered.scheme() == asked.scheme()
        && answered[url::Position::BeforeHost..] == asked[url::Position::BeforeHost..]
}

/// The error for an answer that a caller-supplied `reqwest::Client` fetched by following a
/// redirect. Neither URL is named: either may carry credentials.
fn followed_redirect() -> WahaError {
    WahaError::invalid(
        "the HTTP client followed a redirect, so the API key and the request body may have \
         been sent to another server; the answer was refused. Build the reqwest::Client passed \
         to WahaClient::with_http_client with .redirect(reqwest::redirect::Policy::none())",
    )
}

/// Reads the whole body, refusing one larger than `limit` bytes (announced or actual).
async fn read_body(
    mut response: reqwest::Response,
    operation: &'static str,
    limit: usize,
) -> Result<Bytes, WahaError> {
    let too_large = || WahaError::ResponseTooLarge { operation, limit };
    if response
        .content_length()
        .is_some_and(|length| length > u64::try_from(limit).unwrap_or(u64::MAX))
    {
        return Err(too_large());
    }
    let Some(first) = response.chunk().await.map_err(transport)? else {
        return Ok(Bytes::new());
    };
    if first.len() > limit {
        return Err(too_large());
    }
    let Some(second) = response.chunk().await.map_err(transport)? else {
        return Ok(first);
    };
    let mut body = BytesMut::from(first);
    let mut next = Some(second);
    while let Some(chunk) = next {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
        next = response.chunk().await.map_err(transport)?;
    }
    Ok(body.freeze())
}

impl fmt::Debug for WahaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WahaClient")
            .field("base_url", &shown_base_url(&self.inner.base))
            .field("api_key", &self.inner.api_key)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// The base URL for `Debug`: any user name or password (`http://<token>@waha:3000` puts a
/// token in the user name) is replaced by one `<redacted>`.
fn shown_base_url(base: &Url) -> String {
    if base.username().is_empty() && base.password().is_none() {
        return base.as_str().to_owned();
    }
    let mut bare = base.clone();
    // Cannot fail: the base URL has a host (checked when the client was built).
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    let text = bare.as_str();
    match text.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}@{rest}", crate::secret::REDACTED),
        None => crate::secret::REDACTED.to_owned(),
    }
}
