//! Where a tunnel leads.

use std::fmt;
use std::str::FromStr;

use crate::address::ProxyAddress;
use crate::address::ProxyScheme;
use crate::error::ProxyError;

/// A `host:port` reached through a proxy.
#[derive(Clone, PartialEq, Eq)]
pub struct TargetAddr {
    host: String,
    port: u16,
}

impl TargetAddr {
    /// A target. The host is a name, an IPv4 address or an IPv6 address (brackets optional).
    pub fn new(host: impl Into<String>, port: u16) -> Result<Self, ProxyError> {
        // Reuse the proxy address validation rules for host and port.
        let address = ProxyAddress::new(ProxyScheme::Http, host, port).map_err(|_| {
            ProxyError::config("the check target must be a valid host and a port from 1 to 65535")
        })?;
        Ok(Self {
            host: address.host().to_owned(),
            port: address.port(),
        })
    }

    /// The host (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl FromStr for TargetAddr {
    type Err = ProxyError;

    /// Parses `host:port` or `[v6]:port`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let address = ProxyAddress::parse(&format!("http://{s}"))
            .map_err(|_| ProxyError::config("the check target must be written host:port"))?;
        if address.username().is_some() {
            return Err(ProxyError::config(
                "the check target must be written host:port",
            ));
        }
        Self::new(address.host(), address.port())
    }
}

impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TargetAddr({self})")
    }
}
