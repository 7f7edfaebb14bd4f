//! The client ignores `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` unless
//! `ClientConfig::use_system_proxy` is set.
//!
//! A test cannot change its own environment safely (the test harness runs tests on several
//! threads, and reqwest reads the variables when a client is built), so each case re-executes
//! this test binary for that one test, with the proxy variables pointing at a local listener
//! that records every request it gets. The child makes the call; the parent, which runs both
//! listeners, checks who saw it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use waha_client::{ApiKey, ClientConfig, RetryConfig, WahaApi, WahaClient};

use crate::support::API_KEY;

/// Set in the child's environment: the WAHA base URL to call. Its presence makes a test run
/// as the child.
const CHILD_TARGET: &str = "WAHA_CLIENT_PROXY_TEST_TARGET";

/// The variables reqwest reads a proxy from.
const PROXY_VARS: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// A listener that records the head of every request it gets and answers each with WAHA's
/// `/ping` answer, standing in for the WAHA server or for a proxy.
async fn recording_listener() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let body = r#"{"message":"pong"}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (addr, seen)
}

/// In the child: the base URL to call. `None` in the parent.
fn child_target() -> Option<String> {
    std::env::var(CHILD_TARGET).ok()
}

/// The child's part: one `ping` through a client built with `use_system_proxy`.
async fn ping_as_child(target: &str, use_system_proxy: bool) {
    let client = WahaClient::with_config(
        target.parse().unwrap(),
        ApiKey::new(API_KEY).unwrap(),
        ClientConfig {
            retry: RetryConfig::disabled(),
            use_system_proxy,
            ..ClientConfig::default()
        },
    )
    .unwrap();
    client.ping().await.unwrap();
}

/// Runs the test `name` (its path in this binary) alone in a child process whose environment
/// names `proxy` in every proxy variable, with nothing exempted by `NO_PROXY`; asserts that it
/// ran and passed.
async fn run_child(name: &'static str, target: SocketAddr, proxy: SocketAddr) {
    let exe = std::env::current_exe().unwrap();
    let output = tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(exe);
        command
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_TARGET, format!("http://{target}/"))
            // reqwest ignores HTTP_PROXY under CGI, and NO_PROXY could exempt 127.0.0.1.
            .env_remove("REQUEST_METHOD")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy");
        for var in PROXY_VARS {
            command.env(var, format!("http://{proxy}"));
        }
        command.output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the child run of {name} failed or did not run:\n{stdout}\n{stderr}"
    );
}

#[tokio::test]
async fn the_environments_proxy_is_not_used_by_default() {
    if let Some(target) = child_target() {
        ping_as_child(&target, false).await;
        return;
    }
    let (waha, waha_saw) = recording_listener().await;
    let (proxy, proxy_saw) = recording_listener().await;
    run_child(
        "proxy::the_environments_proxy_is_not_used_by_default",
        waha,
        proxy,
    )
    .await;
    let proxied = proxy_saw.lock().unwrap().clone();
    assert!(proxied.is_empty(), "the proxy was used: {proxied:?}");
    let direct = waha_saw.lock().unwrap().clone();
    assert_eq!(direct.len(), 1, "{direct:?}");
    assert!(direct[0].starts_with("GET /ping "), "{direct:?}");
}

#[tokio::test]
async fn the_environments_proxy_is_used_when_opted_in() {
    if let Some(target) = child_target() {
        ping_as_child(&target, true).await;
        return;
    }
    let (waha, waha_saw) = recording_listener().await;
    let (proxy, proxy_saw) = recording_listener().await;
    run_child(
        "proxy::the_environments_proxy_is_used_when_opted_in",
        waha,
        proxy,
    )
    .await;
    let direct = waha_saw.lock().unwrap().clone();
    assert!(direct.is_empty(), "the proxy was bypassed: {direct:?}");
    let proxied = proxy_saw.lock().unwrap().clone();
    assert_eq!(proxied.len(), 1, "{proxied:?}");
    // A forward proxy gets the absolute URL of the WAHA server.
    assert!(
        proxied[0].starts_with(&format!("GET http://{waha}/ping ")),
        "{proxied:?}"
    );
}
