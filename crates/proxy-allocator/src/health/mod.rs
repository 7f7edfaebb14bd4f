//! Health checks through a proxy: connectivity and latency, and the egress IP.

pub mod egress;
mod http_connect;
mod socks5;
mod target;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::net::TcpStream;

pub use egress::HttpEchoProbe;
pub use target::TargetAddr;

use crate::address::{ProxyAddress, ProxyScheme};
use crate::error::ProxyError;

/// A passed check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthReport {
    /// From starting the TCP connection to the proxy until the tunnel to the target was open.
    pub latency: Duration,
}

/// Checks that a proxy works.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait HealthChecker: Send + Sync {
    /// Connects through `proxy`; `Ok` with the latency, or the typed reason it failed
    /// ([`ProxyError::ProxyAuthRejected`], [`ProxyError::ProxyUnreachable`],
    /// [`ProxyError::ProxyRefused`], [`ProxyError::ProxyProtocol`], [`ProxyError::Timeout`]).
    async fn check(&self, proxy: &ProxyAddress) -> Result<HealthReport, ProxyError>;
}

/// Finds out which IP address a proxy's traffic leaves from.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait EgressIpProbe: Send + Sync {
    /// The egress IP seen through `proxy`.
    async fn egress_ip(&self, proxy: &ProxyAddress) -> Result<IpAddr, ProxyError>;
}

/// Opens a tunnel through the proxy to a fixed target (HTTP `CONNECT` with Basic
/// authentication, or SOCKS5 with username/password authentication) and measures how long that
/// takes. The tunnel is closed right after; nothing is sent through it.
#[derive(Debug, Clone)]
pub struct TunnelHealthChecker {
    target: TargetAddr,
    timeout: Duration,
}

impl TunnelHealthChecker {
    /// A checker that tunnels to `target`, with a 10 s deadline per check.
    pub fn new(target: TargetAddr) -> Self {
        Self {
            target,
            timeout: Duration::from_secs(10),
        }
    }

    /// Sets the deadline for one whole check (connect, handshake, tunnel).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

#[async_trait]
impl HealthChecker for TunnelHealthChecker {
    async fn check(&self, proxy: &ProxyAddress) -> Result<HealthReport, ProxyError> {
        let started = Instant::now();
        let stream = open_tunnel(proxy, &self.target, self.timeout).await?;
        let latency = started.elapsed();
        drop(stream);
        metrics::histogram!("proxy_allocator_health_check_seconds", "scheme" => proxy.scheme().as_str())
            .record(latency.as_secs_f64());
        Ok(HealthReport { latency })
    }
}

/// Connects to the proxy and asks it for a tunnel to `target`, all within `timeout`.
pub(crate) async fn open_tunnel(
    proxy: &ProxyAddress,
    target: &TargetAddr,
    timeout: Duration,
) -> Result<TcpStream, ProxyError> {
    tokio::time::timeout(timeout, async {
        let mut stream = connect(proxy).await?;
        match proxy.scheme() {
            ProxyScheme::Http => http_connect::handshake(&mut stream, proxy, target).await?,
            ProxyScheme::Socks5 => socks5::handshake(&mut stream, proxy, target).await?,
        }
        Ok(stream)
    })
    .await
    .map_err(|_| ProxyError::Timeout {
        proxy: proxy.host_port(),
        after: timeout,
    })?
}

pub(crate) async fn connect(proxy: &ProxyAddress) -> Result<TcpStream, ProxyError> {
    let stream = TcpStream::connect((proxy.host(), proxy.port()))
        .await
        .map_err(|source| ProxyError::ProxyUnreachable {
            proxy: proxy.host_port(),
            source,
        })?;
    stream.set_nodelay(true).ok();
    Ok(stream)
}

pub(crate) fn io_error(proxy: &ProxyAddress, source: std::io::Error) -> ProxyError {
    if source.kind() == std::io::ErrorKind::UnexpectedEof {
        ProxyError::ProxyProtocol {
            proxy: proxy.host_port(),
            reason: "the proxy closed the connection mid-handshake".into(),
        }
    } else {
        ProxyError::ProxyUnreachable {
            proxy: proxy.host_port(),
            source,
        }
    }
}
