//! The WAHA session `proxy` object for a lease.

use serde::{Deserialize, Serialize};

use crate::address::{ProxyAddress, ProxyScheme};
use crate::secret::ProxyPassword;

/// The `proxy` field of a WAHA session config: `{"server", "username", "password"}`.
///
/// `server` is `host:port` for HTTP proxies (WAHA adds `http://`) and `socks5://host:port` for
/// SOCKS5 ones; it never carries credentials. `username` and `password` are the decoded values:
/// WAHA puts them into Basic `Proxy-Authorization` as they are, so `@`, `:` and `/` arrive
/// intact. `Debug` redacts the password; serializing writes it (WAHA needs it), so never log
/// the serialized form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WahaProxyConfig {
    /// `host:port` or `socks5://host:port`.
    pub server: String,
    /// The proxy user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The proxy password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<ProxyPassword>,
}

impl From<&ProxyAddress> for WahaProxyConfig {
    fn from(address: &ProxyAddress) -> Self {
        let server = match address.scheme() {
            ProxyScheme::Http => address.host_port(),
            ProxyScheme::Socks5 => format!("socks5://{}", address.host_port()),
        };
        Self {
            server,
            username: address.username().map(str::to_owned),
            password: address.password().cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_characters_survive_and_debug_redacts() {
        let address = ProxyAddress::parse("http://us%40er:p%40ss%3Aw%2Frd@10.0.0.1:3128").unwrap();
        let config = WahaProxyConfig::from(&address);
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"server": "10.0.0.1:3128", "username": "us@er", "password": "p@ss:w/rd"})
        );
        let debug = format!("{config:?}");
        assert!(!debug.contains("p@ss"), "{debug}");
        let socks = ProxyAddress::parse("socks5://[::1]:1080").unwrap();
        let json = serde_json::to_value(WahaProxyConfig::from(&socks)).unwrap();
        assert_eq!(json, serde_json::json!({"server": "socks5://[::1]:1080"}));
    }
}
