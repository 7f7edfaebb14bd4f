//! The WAHA session `proxy` object for a lease: [`waha_client::ProxyConfig`].

use waha_client::ProxyConfig;

use crate::address::{ProxyAddress, ProxyScheme};
use crate::error::ProxyError;

impl ProxyAddress {
    /// The `proxy` field of a WAHA session config for this proxy: `{"server", "username",
    /// "password"}`.
    ///
    /// `server` is `host:port` (`[v6]:port` for IPv6): WAHA prefixes `http://` and tunnels with
    /// HTTP `CONNECT`, so only HTTP proxies can be handed to it. It never carries credentials.
    /// `username` and `password` are the decoded values: WAHA puts them into Basic
    /// `Proxy-Authorization` as they are, so `@`, `:`, `/` and `%` in the password arrive
    /// intact, and so do all but `:` in the user name (Basic authentication cannot carry a `:`
    /// there, so [`ProxyAddress`] refuses one when it is built, as it refuses control characters
    /// in either value, which RFC 7617 forbids).
    ///
    /// # Errors
    /// [`ProxyError::InvalidConfig`] for a SOCKS5 proxy: WAHA's `proxy.server` is `host:port` of
    /// an HTTP proxy (a `socks5://` prefix is not understood). Keep SOCKS5 endpoints away from
    /// WAHA chips, for example with labels.
    pub fn waha_proxy(&self) -> Result<ProxyConfig, ProxyError> {
        match self.scheme() {
            ProxyScheme::Http => Ok(ProxyConfig {
                server: self.host_port(),
                username: self.username().map(str::to_owned),
                password: self.password().cloned(),
            }),
            ProxyScheme::Socks5 => Err(ProxyError::config(format!(
                "WAHA sessions take HTTP proxies only (WAHA tunnels with HTTP CONNECT); \
                 {self} is a SOCKS5 proxy"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_characters_survive_and_debug_redacts() {
        let address =
            ProxyAddress::parse("http://us%40er%2F%25:p%40ss%3Aw%2Frd%25@10.0.0.1:3128").unwrap();
        let config = address.waha_proxy().unwrap();
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"server": "10.0.0.1:3128", "username": "us@er/%", "password": "p@ss:w/rd%"})
        );
        let debug = format!("{config:?}");
        assert!(!debug.contains("p@ss"), "{debug}");
        let v6 = ProxyAddress::parse("http://[::1]:3128").unwrap();
        let json = serde_json::to_value(v6.waha_proxy().unwrap()).unwrap();
        assert_eq!(json, serde_json::json!({"server": "[::1]:3128"}));
    }

    #[test]
    fn socks5_is_refused_without_leaking_the_password() {
        let socks = ProxyAddress::parse("socks5://u:hunter2@10.0.0.1:1080").unwrap();
        let err = socks.waha_proxy().unwrap_err();
        assert!(matches!(err, ProxyError::InvalidConfig { .. }), "{err:?}");
        let text = format!("{err} {err:?}");
        assert!(text.contains("10.0.0.1:1080"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
