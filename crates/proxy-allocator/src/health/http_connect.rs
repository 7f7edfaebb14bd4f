//! HTTP `CONNECT` with Basic proxy authentication.

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::address::ProxyAddress;
use crate::error::ProxyError;
use crate::health::{TargetAddr, io_error};

/// Largest response head accepted from a proxy.
const MAX_HEAD: usize = 16 * 1024;

/// The `Proxy-Authorization` header line for the proxy's credentials, if it has any.
pub(crate) fn proxy_authorization(proxy: &ProxyAddress) -> Option<String> {
    let user = proxy.username()?;
    let password = proxy
        .password()
        .map(|p| p.expose_secret())
        .unwrap_or_default();
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    Some(format!("Proxy-Authorization: Basic {token}\r\n"))
}

pub(crate) async fn handshake(
    stream: &mut TcpStream,
    proxy: &ProxyAddress,
    target: &TargetAddr,
) -> Result<(), ProxyError> {
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(header) = proxy_authorization(proxy) {
        request.push_str(&header);
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| io_error(proxy, e))?;
    let head = read_head(stream, proxy).await?;
    let status = status_code(&head, proxy)?;
    match status {
        200..=299 => Ok(()),
        // 407 is the standard answer; tinyproxy answers 401. A CONNECT answer always comes from
        // the proxy itself, so both mean the proxy refused the credentials.
        401 | 407 => Err(ProxyError::ProxyAuthRejected {
            proxy: proxy.host_port(),
        }),
        _ => Err(ProxyError::ProxyRefused {
            proxy: proxy.host_port(),
            reason: status_line(&head),
        }),
    }
}

/// Reads up to and including the blank line that ends the response head, one byte at a time so
/// that nothing of the tunnel's payload is consumed.
async fn read_head(stream: &mut TcpStream, proxy: &ProxyAddress) -> Result<Vec<u8>, ProxyError> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return Err(ProxyError::ProxyProtocol {
                proxy: proxy.host_port(),
                reason: "the response head is larger than 16 KiB".into(),
            });
        }
        let n = stream
            .read(&mut byte)
            .await
            .map_err(|e| io_error(proxy, e))?;
        if n == 0 {
            return Err(ProxyError::ProxyProtocol {
                proxy: proxy.host_port(),
                reason: "the proxy closed the connection before answering CONNECT".into(),
            });
        }
        head.push(byte[0]);
    }
    Ok(head)
}

/// The status code of an HTTP response head.
pub(crate) fn status_code(head: &[u8], proxy: &ProxyAddress) -> Result<u16, ProxyError> {
    let line = status_line(head);
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(version), Some(code)) if version.starts_with("HTTP/") => Ok(code),
        _ => Err(ProxyError::ProxyProtocol {
            proxy: proxy.host_port(),
            reason: "the answer is not HTTP (is this a SOCKS5 proxy?)".into(),
        }),
    }
}

/// Whether the response head has a header with this (lower-case) name.
pub(crate) fn has_header(head: &[u8], name: &str) -> bool {
    String::from_utf8_lossy(head).lines().skip(1).any(|line| {
        line.split_once(':')
            .is_some_and(|(key, _)| key.trim().eq_ignore_ascii_case(name))
    })
}

/// The first line, lossily decoded and cut to 120 characters.
pub(crate) fn status_line(head: &[u8]) -> String {
    let end = head
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(head.len());
    String::from_utf8_lossy(&head[..end])
        .chars()
        .take(120)
        .collect()
}
