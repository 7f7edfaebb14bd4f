//! Egress endpoints: what a source offers and a lease points at.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::address::ProxyAddress;
use crate::country::CountryCode;
use crate::error::ProxyError;
use crate::source::gateway::GatewayEndpoint;

/// The stable name of an egress endpoint, unique within the sources an allocator uses.
///
/// Leases refer to endpoints by this id (the PostgreSQL store persists it), so it must not
/// change across restarts: static entries default to `scheme://host:port`, with `#` and a
/// 12-hex-digit hash when the URL has a user name
/// ([`StaticProxyEntry::default_id`](crate::StaticProxyEntry::default_id); the user name itself
/// never appears), gateways use their configured id. 1 to 200 printable ASCII characters, no
/// whitespace.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(String);

impl EndpointId {
    /// Validates and wraps an id.
    pub fn new(id: impl Into<String>) -> Result<Self, ProxyError> {
        let id = id.into();
        if id.is_empty() || id.len() > 200 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ProxyError::config(
                "an endpoint id must be 1 to 200 printable ASCII characters without spaces",
            ));
        }
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for EndpointId {
    type Err = ProxyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EndpointId({})", self.0)
    }
}

impl Serialize for EndpointId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EndpointId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// One egress endpoint offered by a [`crate::ProxySource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyEndpoint {
    /// Stable id; leases refer to it.
    pub id: EndpointId,
    /// The country its traffic leaves from, when known (a gateway that can target any country
    /// leaves this `None` and lists its countries in [`GatewayEndpoint::countries`]).
    pub country: Option<CountryCode>,
    /// Free-form labels a request may require (`mobile`, `premium`, ...).
    pub labels: BTreeSet<String>,
    /// A fixed proxy or a rotating gateway.
    pub kind: EndpointKind,
}

/// What kind of egress an endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointKind {
    /// One proxy, one egress: chips on it share its IP, up to the policy's per-endpoint cap.
    Fixed(ProxyAddress),
    /// A rotating gateway: every lease gets its own sticky session id, encoded in the user name,
    /// and so its own egress IP.
    Gateway(GatewayEndpoint),
}

impl ProxyEndpoint {
    /// Whether this endpoint can serve traffic from `country`: a fixed endpoint by its own
    /// country, a gateway by the countries its template can target.
    pub fn serves_country(&self, country: CountryCode) -> bool {
        match &self.kind {
            EndpointKind::Gateway(gateway) if gateway.targets_countries() => gateway
                .countries
                .as_ref()
                .is_none_or(|allowed| allowed.contains(&country)),
            _ => self.country == Some(country),
        }
    }

    /// `host:port` of the proxy behind this endpoint, for logs and errors.
    pub fn host_port(&self) -> String {
        match &self.kind {
            EndpointKind::Fixed(address) => address.host_port(),
            EndpointKind::Gateway(gateway) => gateway.address.host_port(),
        }
    }
}
