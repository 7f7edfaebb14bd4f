//! The `healthcheck` subcommand: a raw HTTP probe of `/ping` (a `FROM scratch` image has no
//! curl).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::SimError;

/// Probes `GET /ping` on `127.0.0.1:port`; `Ok` on a 200.
pub fn probe(port: u16, timeout: Duration) -> Result<(), SimError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let unhealthy = |what: &str, e: std::io::Error| SimError::Unhealthy(format!("{what}: {e}"));
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| unhealthy("connect", e))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| unhealthy("socket", e))?;
    stream
        .write_all(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| unhealthy("write", e))?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        let n = stream
            .read(&mut head[read..])
            .map_err(|e| unhealthy("read", e))?;
        if n == 0 {
            break;
        }
        read += n;
    }
    let line = String::from_utf8_lossy(&head[..read]);
    if line.starts_with("HTTP/1.1 200") || line.starts_with("HTTP/1.0 200") {
        Ok(())
    } else {
        Err(SimError::Unhealthy(format!(
            "unexpected answer: {:?}",
            line.lines().next().unwrap_or_default()
        )))
    }
}

/// Probes the port in `PORT` (default 3000) with a 3 s time-out.
pub fn probe_from_env() -> Result<(), SimError> {
    let port = match std::env::var("PORT") {
        Ok(p) if !p.trim().is_empty() => p
            .trim()
            .parse()
            .map_err(|_| SimError::setting("PORT", "not a port number"))?,
        _ => 3000,
    };
    probe(port, Duration::from_secs(3))
}
