//! The egress-IP hook: an HTTP GET through the proxy to an echo service the host chooses.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::address::{ProxyAddress, ProxyScheme};
use crate::error::ProxyError;
use crate::health::http_connect::{has_header, proxy_authorization, status_code, status_line};
use crate::health::{EgressIpProbe, TargetAddr, connect, io_error, open_tunnel};

/// Largest echo response read.
const MAX_RESPONSE: u64 = 64 * 1024;

/// Asks an echo service, through the proxy, which IP the request came from.
///
/// The echo URL is plain `http://` (the request goes through the proxy as an absolute-form
/// `GET` for HTTP proxies, through a SOCKS5 tunnel otherwise), so no TLS stack is involved; run
/// the echo service on your own infrastructure or use a public one that serves plain HTTP. The
/// response body must be the IP address as text (surrounding whitespace allowed) or a JSON
/// object with an `ip` or `origin` field.
#[derive(Debug, Clone)]
pub struct HttpEchoProbe {
    target: TargetAddr,
    host_header: String,
    path: String,
    timeout: Duration,
}

impl HttpEchoProbe {
    /// A probe for `http://host[:port][/path]`, with a 10 s deadline.
    pub fn new(echo_url: &str) -> Result<Self, ProxyError> {
        let rest = echo_url.strip_prefix("http://").ok_or_else(|| {
            ProxyError::config("the echo URL must start with http:// (plain HTTP; no TLS)")
        })?;
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err(ProxyError::config(
                "the echo URL must not carry credentials",
            ));
        }
        let target: TargetAddr = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !authority.ends_with(']')
        {
            authority.parse()?
        } else {
            let host = authority.trim_start_matches('[').trim_end_matches(']');
            TargetAddr::new(host, 80)?
        };
        let path = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        if path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(ProxyError::config(
                "the echo URL path must not contain spaces or control characters",
            ));
        }
        Ok(Self {
            host_header: authority.to_owned(),
            target,
            path,
            timeout: Duration::from_secs(10),
        })
    }

    /// Sets the deadline for one probe.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn fetch(&self, proxy: &ProxyAddress) -> Result<Vec<u8>, ProxyError> {
        let (mut stream, request) = match proxy.scheme() {
            ProxyScheme::Http => {
                let stream = connect(proxy).await?;
                let mut request = format!(
                    "GET http://{}{} HTTP/1.0\r\nHost: {}\r\n",
                    self.host_header, self.path, self.host_header
                );
                if let Some(header) = proxy_authorization(proxy) {
                    request.push_str(&header);
                }
                (stream, request)
            }
            ProxyScheme::Socks5 => {
                let stream = open_tunnel(proxy, &self.target, self.timeout).await?;
                let request = format!(
                    "GET {} HTTP/1.0\r\nHost: {}\r\n",
                    self.path, self.host_header
                );
                (stream, request)
            }
        };
        let request = format!(
            "{request}Accept: text/plain, application/json\r\nUser-Agent: proxy-allocator\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| io_error(proxy, e))?;
        let mut response = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE)
            .read_to_end(&mut response)
            .await
            .map_err(|e| io_error(proxy, e))?;
        Ok(response)
    }
}

#[async_trait]
impl EgressIpProbe for HttpEchoProbe {
    async fn egress_ip(&self, proxy: &ProxyAddress) -> Result<IpAddr, ProxyError> {
        let response = tokio::time::timeout(self.timeout, self.fetch(proxy))
            .await
            .map_err(|_| ProxyError::Timeout {
                proxy: proxy.host_port(),
                after: self.timeout,
            })??;
        let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Err(ProxyError::EgressCheck {
                reason: "the echo response has no complete HTTP head".into(),
            });
        };
        let status = status_code(&response[..split], proxy)?;
        // 407 is the standard refusal; tinyproxy answers 401. A 401 the proxy generated itself
        // carries no `Via` header, while one forwarded from the echo service does.
        let head = &response[..split];
        let proxy_refused = status == 407 || (status == 401 && !has_header(head, "via"));
        if proxy_refused && proxy.scheme() == ProxyScheme::Http {
            return Err(ProxyError::ProxyAuthRejected {
                proxy: proxy.host_port(),
            });
        }
        if !(200..=299).contains(&status) {
            return Err(ProxyError::EgressCheck {
                reason: format!("the echo service answered {}", status_line(&response)),
            });
        }
        parse_ip(&response[split + 4..])
    }
}

/// An IP from a plain-text or JSON (`{"ip": ...}` / `{"origin": ...}`) body.
fn parse_ip(body: &[u8]) -> Result<IpAddr, ProxyError> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(ip);
    }
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) {
        for key in ["ip", "origin"] {
            if let Some(ip) = map
                .get(key)
                .and_then(|v| v.as_str())
                .and_then(|s| s.split(',').next())
                .and_then(|s| s.trim().parse::<IpAddr>().ok())
            {
                return Ok(ip);
            }
        }
    }
    Err(ProxyError::EgressCheck {
        reason: "the echo response body is not an IP address".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_json_bodies() {
        assert_eq!(
            parse_ip(b" 203.0.113.9\n").unwrap().to_string(),
            "203.0.113.9"
        );
        assert_eq!(
            parse_ip(br#"{"ip":"2001:db8::1"}"#).unwrap().to_string(),
            "2001:db8::1"
        );
        assert_eq!(
            parse_ip(br#"{"origin":"198.51.100.2, 10.0.0.1"}"#)
                .unwrap()
                .to_string(),
            "198.51.100.2"
        );
        assert!(matches!(
            parse_ip(b"<html>"),
            Err(ProxyError::EgressCheck { .. })
        ));
    }

    #[test]
    fn echo_urls_must_be_plain_http() {
        assert!(HttpEchoProbe::new("https://echo.example/").is_err());
        assert!(HttpEchoProbe::new("http://u:p@echo.example/").is_err());
        let probe = HttpEchoProbe::new("http://echo.example").unwrap();
        assert_eq!(probe.target.port(), 80);
        assert_eq!(probe.path, "/");
        let probe = HttpEchoProbe::new("http://127.0.0.1:8080/ip?format=json").unwrap();
        assert_eq!(probe.target.to_string(), "127.0.0.1:8080");
        assert_eq!(probe.path, "/ip?format=json");
        let probe = HttpEchoProbe::new("http://[::1]/ip").unwrap();
        assert_eq!(probe.target.to_string(), "[::1]:80");
    }
}
