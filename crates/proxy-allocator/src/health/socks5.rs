//! SOCKS5 `CONNECT` (RFC 1928) with username/password authentication (RFC 1929).

use std::net::IpAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::address::ProxyAddress;
use crate::error::{CredentialProblem, ProxyError};
use crate::health::{TargetAddr, io_error};

const VERSION: u8 = 0x05;
const NO_AUTH: u8 = 0x00;
const USER_PASS: u8 = 0x02;
const NO_ACCEPTABLE: u8 = 0xFF;

pub(crate) async fn handshake(
    stream: &mut TcpStream,
    proxy: &ProxyAddress,
    target: &TargetAddr,
) -> Result<(), ProxyError> {
    let protocol = |reason: &str| ProxyError::ProxyProtocol {
        proxy: proxy.host_port(),
        reason: reason.to_owned(),
    };
    let io = |e| io_error(proxy, e);

    // `ProxyAddress` refuses, when it is built, a SOCKS5 user name without a password (or with
    // an empty one) and credentials over 255 bytes, so the one-byte lengths below (ULEN, PLEN;
    // RFC 1929: 1 to 255) always fit; they are checked again rather than trusted.
    let credentials = proxy.username().map(|user| {
        (
            user.as_bytes(),
            proxy
                .password()
                .map(|p| p.expose_secret().as_bytes())
                .unwrap_or_default(),
        )
    });
    let greeting: &[u8] = if credentials.is_some() {
        &[VERSION, 2, NO_AUTH, USER_PASS]
    } else {
        &[VERSION, 1, NO_AUTH]
    };
    stream.write_all(greeting).await.map_err(io)?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await.map_err(io)?;
    if choice[0] != VERSION {
        return Err(protocol(
            "the answer is not SOCKS5 (is this an HTTP proxy?)",
        ));
    }
    match (choice[1], credentials) {
        (NO_AUTH, _) => {}
        (USER_PASS, Some((user, password))) => {
            let unusable = |problem| ProxyError::InvalidCredentials {
                proxy: proxy.host_port(),
                problem,
            };
            let user_len = u8::try_from(user.len()).map_err(|_| {
                unusable(CredentialProblem::Socks5UserNameTooLong { bytes: user.len() })
            })?;
            let password_len = match u8::try_from(password.len()) {
                Ok(0) => return Err(unusable(CredentialProblem::Socks5PasswordMissing)),
                Ok(len) => len,
                Err(_) => return Err(unusable(CredentialProblem::Socks5PasswordTooLong)),
            };
            let mut auth = Vec::with_capacity(3 + user.len() + password.len());
            auth.push(0x01);
            auth.push(user_len);
            auth.extend_from_slice(user);
            auth.push(password_len);
            auth.extend_from_slice(password);
            stream.write_all(&auth).await.map_err(io)?;
            let mut status = [0u8; 2];
            stream.read_exact(&mut status).await.map_err(io)?;
            if status[1] != 0x00 {
                return Err(ProxyError::ProxyAuthRejected {
                    proxy: proxy.host_port(),
                });
            }
        }
        (NO_ACCEPTABLE, _) => {
            return Err(ProxyError::ProxyAuthRejected {
                proxy: proxy.host_port(),
            });
        }
        _ => {
            return Err(protocol(
                "the proxy chose an authentication method we did not offer",
            ));
        }
    }

    let mut request = vec![VERSION, 0x01, 0x00];
    match target.host().parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => {
            request.push(0x01);
            request.extend_from_slice(&ip.octets());
        }
        Ok(IpAddr::V6(ip)) => {
            request.push(0x04);
            request.extend_from_slice(&ip.octets());
        }
        Err(_) => {
            let name = target.host().as_bytes();
            if name.len() > 255 {
                return Err(ProxyError::config(
                    "the target host name is longer than 255 bytes",
                ));
            }
            request.push(0x03);
            request.push(name.len() as u8);
            request.extend_from_slice(name);
        }
    }
    request.extend_from_slice(&target.port().to_be_bytes());
    stream.write_all(&request).await.map_err(io)?;

    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).await.map_err(io)?;
    if reply[0] != VERSION {
        return Err(protocol("the CONNECT reply is not SOCKS5"));
    }
    if reply[1] != 0x00 {
        return Err(ProxyError::ProxyRefused {
            proxy: proxy.host_port(),
            reason: reply_meaning(reply[1]).to_owned(),
        });
    }
    let bound_len = match reply[3] {
        0x01 => 4,
        0x04 => 16,
        0x03 => {
            let mut len = [0u8; 1];
            stream.read_exact(&mut len).await.map_err(io)?;
            usize::from(len[0])
        }
        _ => return Err(protocol("the CONNECT reply has an unknown address type")),
    };
    let mut bound = vec![0u8; bound_len + 2];
    stream.read_exact(&mut bound).await.map_err(io)?;
    Ok(())
}

fn reply_meaning(code: u8) -> &'static str {
    match code {
        0x01 => "general SOCKS server failure",
        0x02 => "connection not allowed by ruleset",
        0x03 => "network unreachable",
        0x04 => "host unreachable",
        0x05 => "connection refused",
        0x06 => "TTL expired",
        0x07 => "command not supported",
        0x08 => "address type not supported",
        _ => "unknown SOCKS5 reply code",
    }
}
