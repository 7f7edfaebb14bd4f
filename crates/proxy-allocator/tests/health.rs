//! Health checks against a real HTTP proxy (tinyproxy with Basic auth, started by
//! `scripts/test-env.sh`) and an in-test SOCKS5 server, all on 127.0.0.1.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxy_allocator::{
    AllocationPolicy, ChipProxyRequest, EgressIpChange, EgressIpProbe, HealthChecker, HistoryEvent,
    HttpEchoProbe, InMemoryLeaseStore, LeaseCheck, ProxyAddress, ProxyAllocator, ProxyError,
    StaticListSource, StaticProxyEntry, TargetAddr, TunnelHealthChecker,
};
use tenant_isolation::{ChipId, TenantId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const DEFAULT_PROXY: &str = "http://chipfleet:s3cr-et.p_ss@127.0.0.1:18888";

fn tinyproxy() -> ProxyAddress {
    let url = std::env::var("TEST_PROXY_URL").unwrap_or_else(|_| DEFAULT_PROXY.to_owned());
    ProxyAddress::parse(&url).expect("TEST_PROXY_URL is a valid proxy URL")
}

/// Fails loudly when tinyproxy is not running.
async fn require_tinyproxy() -> ProxyAddress {
    let proxy = tinyproxy();
    if let Err(err) = TcpStream::connect((proxy.host(), proxy.port())).await {
        panic!(
            "tinyproxy is not reachable at {} ({err}); run scripts/test-env.sh to start it",
            proxy.host_port()
        );
    }
    proxy
}

/// A loopback listener that accepts connections, writes `greeting` on each and holds them open
/// (dropping them when the test's runtime ends). Returns its port.
async fn holding_listener(greeting: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(greeting).await;
            held.push(stream);
        }
    });
    port
}

/// The CONNECT target: an ephemeral loopback port that accepts and holds connections (the test
/// environment's tinyproxy has no `ConnectPort` lines, so CONNECT may reach any port).
async fn target() -> TargetAddr {
    TargetAddr::new("127.0.0.1", holding_listener(b"").await).expect("target")
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

/// A plain-HTTP echo service answering each request with the next body from `bodies`
/// (the last one repeats), or with the caller's IP when `bodies` is empty.
async fn echo_server(bodies: Vec<String>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let bodies = Arc::new(Mutex::new(bodies));
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = {
                    let mut bodies = bodies.lock().expect("lock");
                    match bodies.len() {
                        0 => peer.ip().to_string(),
                        1 => bodies[0].clone(),
                        _ => bodies.remove(0),
                    }
                };
                let response = format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://127.0.0.1:{port}/ip")
}

/// A minimal SOCKS5 server (RFC 1928 CONNECT, RFC 1929 username/password) for tests.
async fn socks5_server(user: &'static str, password: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_socks5(stream, user, password));
        }
    });
    port
}

async fn serve_socks5(mut client: TcpStream, user: &str, password: &str) -> std::io::Result<()> {
    let mut head = [0u8; 2];
    client.read_exact(&mut head).await?;
    let mut methods = vec![0u8; usize::from(head[1])];
    client.read_exact(&mut methods).await?;
    if !methods.contains(&0x02) {
        client.write_all(&[5, 0xFF]).await?;
        return Ok(());
    }
    client.write_all(&[5, 0x02]).await?;
    let mut ver_len = [0u8; 2];
    client.read_exact(&mut ver_len).await?;
    let mut got_user = vec![0u8; usize::from(ver_len[1])];
    client.read_exact(&mut got_user).await?;
    let mut plen = [0u8; 1];
    client.read_exact(&mut plen).await?;
    let mut got_password = vec![0u8; usize::from(plen[0])];
    client.read_exact(&mut got_password).await?;
    if got_user != user.as_bytes() || got_password != password.as_bytes() {
        client.write_all(&[1, 1]).await?;
        return Ok(());
    }
    client.write_all(&[1, 0]).await?;
    let mut request = [0u8; 4];
    client.read_exact(&mut request).await?;
    let host = match request[3] {
        1 => {
            let mut ip = [0u8; 4];
            client.read_exact(&mut ip).await?;
            std::net::Ipv4Addr::from(ip).to_string()
        }
        3 => {
            let mut len = [0u8; 1];
            client.read_exact(&mut len).await?;
            let mut name = vec![0u8; usize::from(len[0])];
            client.read_exact(&mut name).await?;
            String::from_utf8_lossy(&name).into_owned()
        }
        _ => {
            client.write_all(&[5, 8, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
            return Ok(());
        }
    };
    let mut port = [0u8; 2];
    client.read_exact(&mut port).await?;
    match TcpStream::connect((host.as_str(), u16::from_be_bytes(port))).await {
        Ok(mut upstream) => {
            client.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0]).await?;
            tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        }
        Err(_) => client.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await?,
    }
    Ok(())
}

fn checker(target: TargetAddr) -> TunnelHealthChecker {
    TunnelHealthChecker::new(target).with_timeout(Duration::from_secs(5))
}

fn with_password(proxy: &ProxyAddress, password: &str) -> ProxyAddress {
    proxy
        .clone()
        .with_credentials(
            proxy.username().expect("user"),
            Some(proxy_allocator::ProxyPassword::new(password).expect("a valid password")),
        )
        .expect("credentials")
}

#[tokio::test]
async fn tinyproxy_good_credentials_pass_and_measure_latency() {
    let proxy = require_tinyproxy().await;
    let report = checker(target().await)
        .check(&proxy)
        .await
        .expect("a good proxy passes the check");
    assert!(report.latency > Duration::ZERO);
    assert!(report.latency < Duration::from_secs(5));
}

#[tokio::test]
async fn tinyproxy_wrong_password_is_rejected_without_leaking_it() {
    let proxy = with_password(&require_tinyproxy().await, "not-the-password");
    let err = checker(target().await)
        .check(&proxy)
        .await
        .expect_err("a wrong password must fail");
    assert!(
        matches!(err, ProxyError::ProxyAuthRejected { .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    let text = format!("{err} {err:?}");
    assert!(!text.contains("not-the-password"), "{text}");
    // No credentials at all is rejected the same way.
    let anonymous = ProxyAddress::new(proxy.scheme(), proxy.host(), proxy.port()).expect("address");
    let err = checker(target().await)
        .check(&anonymous)
        .await
        .expect_err("no credentials");
    assert!(
        matches!(err, ProxyError::ProxyAuthRejected { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn closed_proxy_port_is_unreachable() {
    let proxy = tinyproxy();
    let closed = ProxyAddress::parse(&format!("http://127.0.0.1:{}", closed_port().await))
        .expect("address")
        .with_credentials("chipfleet", proxy.password().cloned())
        .expect("credentials");
    let err = checker(target().await)
        .check(&closed)
        .await
        .expect_err("a closed port must fail");
    assert!(
        matches!(err, ProxyError::ProxyUnreachable { .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(err.is_proxy_failure());
}

#[tokio::test]
async fn tinyproxy_refuses_a_closed_target() {
    let proxy = require_tinyproxy().await;
    let dead = TargetAddr::new("127.0.0.1", closed_port().await).expect("target");
    let err = checker(dead)
        .check(&proxy)
        .await
        .expect_err("the target is closed");
    assert!(matches!(err, ProxyError::ProxyRefused { .. }), "{err:?}");
}

#[tokio::test]
async fn a_silent_proxy_times_out() {
    // Accepts TCP but never answers.
    let port = holding_listener(b"").await;
    let proxy = ProxyAddress::parse(&format!("http://u:p@127.0.0.1:{port}")).expect("address");
    let err = TunnelHealthChecker::new(target().await)
        .with_timeout(Duration::from_millis(200))
        .check(&proxy)
        .await
        .expect_err("silence times out");
    assert!(matches!(err, ProxyError::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn socks5_with_username_and_password() {
    let port = socks5_server("sock-user", "p@ss:w/rd").await;
    let good = ProxyAddress::parse(&format!(
        "socks5://sock-user:p%40ss%3Aw%2Frd@127.0.0.1:{port}"
    ))
    .expect("address");
    checker(target().await)
        .check(&good)
        .await
        .expect("good SOCKS5 credentials pass");
    let bad = with_password(&good, "wrong");
    let err = checker(target().await)
        .check(&bad)
        .await
        .expect_err("wrong password");
    assert!(
        matches!(err, ProxyError::ProxyAuthRejected { .. }),
        "{err:?}"
    );
    let anonymous = ProxyAddress::parse(&format!("socks5://127.0.0.1:{port}")).expect("address");
    let err = checker(target().await)
        .check(&anonymous)
        .await
        .expect_err("no credentials");
    assert!(
        matches!(err, ProxyError::ProxyAuthRejected { .. }),
        "{err:?}"
    );
    let dead = TargetAddr::new("127.0.0.1", closed_port().await).expect("target");
    let err = checker(dead).check(&good).await.expect_err("closed target");
    assert!(matches!(err, ProxyError::ProxyRefused { .. }), "{err:?}");
}

#[tokio::test]
async fn scheme_mismatch_is_a_protocol_error() {
    // Something that is not an HTTP proxy: answers with an SSH banner and keeps the line open.
    let port = holding_listener(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await;
    let as_http = ProxyAddress::parse(&format!("http://u:p@127.0.0.1:{port}")).expect("address");
    let err = checker(target().await)
        .check(&as_http)
        .await
        .expect_err("not HTTP");
    assert!(matches!(err, ProxyError::ProxyProtocol { .. }), "{err:?}");
    let proxy = require_tinyproxy().await;
    let as_socks = ProxyAddress::parse(&format!("socks5://chipfleet:x@{}", proxy.host_port()))
        .expect("address");
    // tinyproxy waits for a request line that a SOCKS5 greeting never completes.
    let err = TunnelHealthChecker::new(target().await)
        .with_timeout(Duration::from_millis(500))
        .check(&as_socks)
        .await
        .expect_err("not SOCKS5");
    assert!(
        matches!(
            err,
            ProxyError::ProxyProtocol { .. } | ProxyError::Timeout { .. }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn egress_ip_through_tinyproxy_and_socks5() {
    let echo = echo_server(vec![]).await;
    let probe = HttpEchoProbe::new(&echo).expect("echo url");
    let ip = probe
        .egress_ip(&require_tinyproxy().await)
        .await
        .expect("egress through tinyproxy");
    assert_eq!(ip, "127.0.0.1".parse::<IpAddr>().expect("ip"));
    let port = socks5_server("u", "p").await;
    let socks = ProxyAddress::parse(&format!("socks5://u:p@127.0.0.1:{port}")).expect("address");
    assert_eq!(
        probe
            .egress_ip(&socks)
            .await
            .expect("egress through socks5"),
        ip
    );
    let bad = with_password(&require_tinyproxy().await, "wrong");
    let err = probe.egress_ip(&bad).await.expect_err("wrong password");
    assert!(
        matches!(err, ProxyError::ProxyAuthRejected { .. }),
        "{err:?}"
    );
}

fn allocator_on(entries: Vec<StaticProxyEntry>) -> ProxyAllocator {
    ProxyAllocator::new(
        Arc::new(StaticListSource::new(entries).expect("source")),
        Arc::new(InMemoryLeaseStore::new()),
        AllocationPolicy {
            max_chips_per_endpoint: 1,
            ..AllocationPolicy::default()
        },
    )
    .expect("allocator")
}

#[tokio::test]
async fn a_failing_endpoint_marks_its_leases_unhealthy() {
    let good = require_tinyproxy().await;
    let bad_port = closed_port().await;
    let bad =
        ProxyAddress::parse(&format!("http://chipfleet:x@127.0.0.1:{bad_port}")).expect("address");
    let allocator = allocator_on(vec![
        StaticProxyEntry::new(good)
            .expect("entry")
            .with_id("good".parse().expect("id")),
        StaticProxyEntry::new(bad)
            .expect("entry")
            .with_id("bad".parse().expect("id")),
    ]);
    let tenant = TenantId::generate();
    let mut leases = Vec::new();
    for n in 0..2 {
        let chip = ChipId::new(format!("chip-{n}")).expect("chip");
        leases.push(
            allocator
                .allocate(&ChipProxyRequest::new(tenant.clone(), chip))
                .await
                .expect("allocates"),
        );
    }
    let checks = allocator
        .check_endpoints(&checker(target().await))
        .await
        .expect("checks");
    for check in &checks {
        match check.endpoint.as_str() {
            "good" => assert!(check.result.is_ok(), "{:?}", check.result),
            "bad" => {
                assert!(matches!(
                    check.result,
                    Err(ProxyError::ProxyUnreachable { .. })
                ));
                assert_eq!(check.leases_changed, 1);
            }
            other => panic!("unexpected endpoint {other}"),
        }
    }
    for lease in &leases {
        let now = allocator
            .lease(&lease.tenant, &lease.chip)
            .await
            .expect("read")
            .expect("leased");
        assert_eq!(
            now.health.is_healthy(),
            lease.endpoint.as_str() == "good",
            "{lease:?} -> {now:?}"
        );
    }
    let loads = allocator.store().endpoint_loads().await.expect("loads");
    assert!(
        loads
            .iter()
            .any(|l| l.endpoint.as_str() == "bad" && !l.health.is_healthy())
    );
}

#[tokio::test]
async fn lease_checks_record_egress_ip_changes_in_history() {
    let proxy = require_tinyproxy().await;
    let echo = echo_server(vec![
        "203.0.113.10".into(),
        "203.0.113.10".into(),
        "{\"ip\": \"198.51.100.7\"}".into(),
    ])
    .await;
    let probe = HttpEchoProbe::new(&echo).expect("echo url");
    let allocator = allocator_on(vec![StaticProxyEntry::new(proxy).expect("entry")]);
    let (tenant, chip) = (TenantId::generate(), ChipId::new("chip-1").expect("chip"));
    allocator
        .allocate(&ChipProxyRequest::new(tenant.clone(), chip.clone()))
        .await
        .expect("allocates");
    let checker = checker(target().await);
    let mut changes = Vec::new();
    for _ in 0..3 {
        let check = allocator
            .check_lease(&tenant, &chip, &checker, Some(&probe))
            .await
            .expect("check");
        let LeaseCheck::Recorded { result, egress, .. } = check else {
            panic!("nothing rotated the chip, so the check is recorded: {check:?}")
        };
        assert!(result.is_ok(), "{result:?}");
        changes.push(egress.expect("probe ran").expect("egress ip"));
    }
    let a: IpAddr = "203.0.113.10".parse().expect("ip");
    let b: IpAddr = "198.51.100.7".parse().expect("ip");
    assert_eq!(
        changes,
        vec![
            EgressIpChange::First(a),
            EgressIpChange::Unchanged(a),
            EgressIpChange::Changed { from: a, to: b }
        ]
    );
    let lease = allocator
        .lease(&tenant, &chip)
        .await
        .expect("read")
        .expect("leased");
    assert_eq!(lease.egress_ip, Some(b));
    let history = allocator.history(&tenant, &chip).await.expect("history");
    assert!(history.iter().any(|h| h.event
        == HistoryEvent::EgressIpChanged {
            from: Some(a),
            to: b
        }));
}

#[tokio::test]
async fn a_failing_lease_check_marks_only_that_lease() {
    let proxy = with_password(&require_tinyproxy().await, "expired-password");
    let allocator = allocator_on(vec![StaticProxyEntry::new(proxy).expect("entry")]);
    let (tenant, chip) = (TenantId::generate(), ChipId::new("chip-1").expect("chip"));
    allocator
        .allocate(&ChipProxyRequest::new(tenant.clone(), chip.clone()))
        .await
        .expect("allocates");
    let probe = HttpEchoProbe::new(&echo_server(vec![]).await).expect("echo");
    let check = allocator
        .check_lease(&tenant, &chip, &checker(target().await), Some(&probe))
        .await
        .expect("check ran");
    let LeaseCheck::Recorded {
        lease,
        result,
        egress,
    } = check
    else {
        panic!("nothing rotated the chip, so the check is recorded: {check:?}")
    };
    assert!(matches!(result, Err(ProxyError::ProxyAuthRejected { .. })));
    assert!(egress.is_none(), "no egress probe through a failing proxy");
    assert!(!lease.health.is_healthy());
    let stored = allocator
        .store()
        .lease(&tenant, &chip)
        .await
        .expect("read")
        .expect("leased");
    let text = format!(
        "{stored:?} {:?}",
        allocator.history(&tenant, &chip).await.expect("history")
    );
    assert!(!text.contains("expired-password"), "{text}");
}
