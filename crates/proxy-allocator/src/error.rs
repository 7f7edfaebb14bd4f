//! The crate's one error type.
//!
//! No variant ever carries a password or a full proxy URL: proxies are named by their endpoint
//! id or by `host:port`, and parse errors say what is wrong without echoing the input.

use std::time::Duration;

use tenant_isolation::{ChipId, TenantId};

use crate::endpoint::EndpointId;

/// Everything that can go wrong while configuring sources, allocating leases or checking proxies.
///
/// Each variant says what the caller can do about it; [`ProxyError::is_retryable`] is the one
/// place that decides whether trying the same call again later can help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// A proxy URL could not be parsed. Fix the configuration; the URL itself is never echoed.
    #[error("invalid proxy URL: {reason}")]
    InvalidProxyUrl {
        /// What is wrong with it.
        reason: String,
    },

    /// A user name or password that the proxy's authentication cannot carry: a `:` in an HTTP
    /// user name (Basic authentication joins user and password with `:`, RFC 7617), a control
    /// character in an HTTP user name or password (RFC 7617), a SOCKS5 user name without a
    /// password or a SOCKS5 user name or password over 255 bytes (RFC 1929), or an empty user
    /// name (see [`CredentialProblem`]). Raised when the address is built (URL parsing,
    /// [`crate::ProxyAddress::with_credentials`], the line format, a gateway's configuration or
    /// session), never at connection time. Fix the configuration; neither value is echoed.
    #[error("unusable credentials for proxy {proxy}: {problem}")]
    InvalidCredentials {
        /// `host:port` of the proxy, with where it was configured when known (a line number,
        /// a gateway id).
        proxy: String,
        /// What is wrong.
        problem: CredentialProblem,
    },

    /// A source, template, policy or request is invalid. Fix the configuration or the input.
    #[error("invalid proxy configuration: {reason}")]
    InvalidConfig {
        /// What is wrong with it.
        reason: String,
    },

    /// No endpoint can take this chip: every candidate is full, unhealthy, used by another
    /// tenant under exclusivity, or none matches the country or labels. Add endpoints, raise the
    /// cap, or relax the policy; retrying later helps once capacity is freed.
    #[error("no proxy endpoint can take chip {chip} of tenant {tenant}: {reason}")]
    NoCapacity {
        /// The tenant.
        tenant: TenantId,
        /// The chip.
        chip: ChipId,
        /// Why no candidate was eligible.
        reason: NoCapacityReason,
    },

    /// The chip holds no lease. Allocate one first.
    #[error("chip {chip} of tenant {tenant} holds no proxy lease")]
    NotLeased {
        /// The tenant.
        tenant: TenantId,
        /// The chip.
        chip: ChipId,
    },

    /// A lease points at an endpoint its source no longer offers. Allocate again
    /// ([`crate::ProxyAllocator::allocate`] moves the chip to a live endpoint).
    #[error("proxy endpoint {endpoint} is no longer offered by the source")]
    EndpointGone {
        /// The endpoint id.
        endpoint: EndpointId,
    },

    /// The proxy rejected the credentials (HTTP 407, SOCKS5 authentication failure or no
    /// acceptable method). Fix the username or password; retrying will not help.
    #[error("proxy {proxy} rejected the credentials")]
    ProxyAuthRejected {
        /// `host:port` of the proxy.
        proxy: String,
    },

    /// The proxy could not be reached (connection refused, DNS failure, reset). Retry later or
    /// rotate the chip to another endpoint.
    #[error("proxy {proxy} is unreachable: {source}")]
    ProxyUnreachable {
        /// `host:port` of the proxy.
        proxy: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The proxy answered but refused to open the connection to the target (an HTTP status other
    /// than 200/407, or a SOCKS5 reply other than "succeeded"). Retry later or rotate.
    #[error("proxy {proxy} refused to reach the target: {reason}")]
    ProxyRefused {
        /// `host:port` of the proxy.
        proxy: String,
        /// The status line or SOCKS5 reply meaning.
        reason: String,
    },

    /// The proxy spoke something that is not the protocol its scheme says. Check the scheme
    /// (`http://` versus `socks5://`) in the configuration.
    #[error("proxy {proxy} broke the protocol: {reason}")]
    ProxyProtocol {
        /// `host:port` of the proxy.
        proxy: String,
        /// What was unexpected.
        reason: String,
    },

    /// A proxy operation did not finish in time. Retry later or rotate.
    #[error("proxy {proxy} did not answer within {after:?}")]
    Timeout {
        /// `host:port` of the proxy.
        proxy: String,
        /// The deadline that passed.
        after: Duration,
    },

    /// The egress-IP echo service answered with something that is not an IP address, or with
    /// an error status. Check the echo URL.
    #[error("egress IP check failed: {reason}")]
    EgressCheck {
        /// What went wrong.
        reason: String,
    },

    /// A static proxy list file could not be read. Check the path and permissions.
    #[error("cannot read proxy list {path}: {source}")]
    SourceFile {
        /// The file path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The lease store failed (database unreachable, pool exhausted, a statement refused,
    /// conflict retries exhausted). [`ProxyError::is_retryable`] says whether retrying later
    /// can help: for `PostgresLeaseStore` the source is the [`tenant_isolation::Error`] and its
    /// own `is_retryable` decides (lost connections, pool time-outs, serialization failures and
    /// deadlocks are retryable; a refused statement, a failed migration or a bad database URL
    /// are not); a store failure with any other source counts as retryable.
    #[error("lease store failed during {operation}: {source}")]
    Store {
        /// What the store was doing.
        operation: &'static str,
        /// The backend error (never contains a connection string): a
        /// [`tenant_isolation::Error`] for `PostgresLeaseStore`.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// Stored data could not be understood (an id or country that no longer parses). Someone
    /// edited the tables by hand or a newer version wrote them; inspect the row.
    #[error("lease store holds invalid data: {reason}")]
    Corrupt {
        /// What could not be decoded.
        reason: String,
    },
}

/// Why [`ProxyError::NoCapacity`] was returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoCapacityReason {
    /// The source offers no endpoint at all.
    #[error("the source offers no endpoints")]
    NoEndpoints,
    /// No endpoint serves the chip's country (under [`crate::CountryMatch::Require`]) or carries
    /// the requested labels.
    #[error("no endpoint matches the chip's country or labels")]
    NoMatchingEndpoint,
    /// Matching endpoints exist, but each is full, unhealthy, excluded for rotation or (under
    /// tenant exclusivity) used by another tenant.
    #[error("every matching endpoint is full, unhealthy or used by another tenant")]
    AllBusy,
}

/// Why [`ProxyError::InvalidCredentials`] was returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialProblem {
    /// The user name is empty.
    #[error("the user name is empty")]
    EmptyUserName,
    /// An HTTP proxy's user name contains `:`. Basic authentication sends `user:password`, so
    /// the proxy would split the user name at the `:` (RFC 7617 forbids it in the user-id).
    #[error("the user name contains ':', which HTTP Basic authentication (RFC 7617) cannot carry")]
    ColonInHttpUserName,
    /// A SOCKS5 user name is longer than the 255 bytes RFC 1929 allows.
    #[error("the user name is {bytes} bytes long; SOCKS5 (RFC 1929) allows at most 255")]
    Socks5UserNameTooLong {
        /// Its length in bytes (UTF-8).
        bytes: usize,
    },
    /// A SOCKS5 password is longer than the 255 bytes RFC 1929 allows.
    #[error("the password is longer than the 255 bytes SOCKS5 (RFC 1929) allows")]
    Socks5PasswordTooLong,
    /// An HTTP proxy's user name contains a control character (`\r`, `\n`, `\0`, DEL, ...).
    /// RFC 7617 forbids control characters in the Basic user-id.
    #[error(
        "the user name contains a control character, which HTTP Basic authentication \
         (RFC 7617) forbids"
    )]
    ControlCharacterInUserName,
    /// An HTTP proxy's password contains a control character (`\r`, `\n`, `\0`, DEL, ...).
    /// RFC 7617 forbids control characters in the Basic password.
    #[error(
        "the password contains a control character, which HTTP Basic authentication \
         (RFC 7617) forbids"
    )]
    ControlCharacterInPassword,
    /// A SOCKS5 proxy is given a user name but no password, or an empty one. RFC 1929's
    /// username/password authentication sends a password of 1 to 255 bytes; a SOCKS5 proxy
    /// without authentication takes an address without a user name.
    #[error(
        "a SOCKS5 user name needs a password of 1 to 255 bytes (RFC 1929); \
         leave out the user name for a proxy without authentication"
    )]
    Socks5PasswordMissing,
    /// The password is longer than a secret may be (4096 bytes).
    #[error("the password is longer than 4096 bytes")]
    PasswordTooLong,
}

impl ProxyError {
    /// A short, stable name of the variant, for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::InvalidProxyUrl { .. } => "invalid_proxy_url",
            ProxyError::InvalidCredentials { .. } => "invalid_credentials",
            ProxyError::InvalidConfig { .. } => "invalid_config",
            ProxyError::NoCapacity { .. } => "no_capacity",
            ProxyError::NotLeased { .. } => "not_leased",
            ProxyError::EndpointGone { .. } => "endpoint_gone",
            ProxyError::ProxyAuthRejected { .. } => "proxy_auth_rejected",
            ProxyError::ProxyUnreachable { .. } => "proxy_unreachable",
            ProxyError::ProxyRefused { .. } => "proxy_refused",
            ProxyError::ProxyProtocol { .. } => "proxy_protocol",
            ProxyError::Timeout { .. } => "timeout",
            ProxyError::EgressCheck { .. } => "egress_check",
            ProxyError::SourceFile { .. } => "source_file",
            ProxyError::Store { .. } => "store",
            ProxyError::Corrupt { .. } => "corrupt",
        }
    }

    /// Whether the same call may succeed if tried again later (without changing configuration).
    pub fn is_retryable(&self) -> bool {
        match self {
            ProxyError::NoCapacity { reason, .. } => *reason == NoCapacityReason::AllBusy,
            // The database's own classification, when the store is built on tenant-isolation's.
            ProxyError::Store { source, .. } => source
                .downcast_ref::<tenant_isolation::Error>()
                .is_none_or(tenant_isolation::Error::is_retryable),
            ProxyError::ProxyUnreachable { .. }
            | ProxyError::ProxyRefused { .. }
            | ProxyError::Timeout { .. } => true,
            ProxyError::InvalidProxyUrl { .. }
            | ProxyError::InvalidCredentials { .. }
            | ProxyError::InvalidConfig { .. }
            | ProxyError::NotLeased { .. }
            | ProxyError::EndpointGone { .. }
            | ProxyError::ProxyAuthRejected { .. }
            | ProxyError::ProxyProtocol { .. }
            | ProxyError::EgressCheck { .. }
            | ProxyError::SourceFile { .. }
            | ProxyError::Corrupt { .. } => false,
        }
    }

    /// Whether this error says the proxy itself is bad (as opposed to the store or the input):
    /// such an error counts as a health-check failure.
    pub fn is_proxy_failure(&self) -> bool {
        matches!(
            self,
            ProxyError::ProxyAuthRejected { .. }
                | ProxyError::ProxyUnreachable { .. }
                | ProxyError::ProxyRefused { .. }
                | ProxyError::ProxyProtocol { .. }
                | ProxyError::Timeout { .. }
        )
    }

    pub(crate) fn config(reason: impl Into<String>) -> Self {
        ProxyError::InvalidConfig {
            reason: reason.into(),
        }
    }

    pub(crate) fn url(reason: impl Into<String>) -> Self {
        ProxyError::InvalidProxyUrl {
            reason: reason.into(),
        }
    }
}
