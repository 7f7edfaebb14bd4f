//! Client call overhead: `WahaClient` against raw reqwest doing the same request (same
//! headers, same per-request time-out, same decoding into `SessionInfo`) to a local axum server
//! on 127.0.0.1. Goal: client / raw ≤ 1.05×.
//!
//! Two measurements:
//! - criterion groups `get_session` and `ping`, each function measured on its own;
//! - a paired measurement printed as `paired ratio ...`: raw and client calls alternate in
//!   blocks of 50 on the same connection, round after round, and the median of the per-round
//!   ratios is reported. Alternating cancels the drift of a shared virtual machine, which moves
//!   separately measured medians by ±20 % here; that ratio is the figure to cite.
//!
//! Run: `cargo bench -p waha-client --bench call_overhead -- --warm-up-time 3 --measurement-time 10`

use std::future::Future;
use std::hint::black_box;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use reqwest::header::ACCEPT;
use waha_client::{ApiKey, ClientConfig, SessionInfo, WahaApi, WahaClient};

const SESSION: &str = r#"{"name":"chip-1","status":"WORKING","me":{"id":"5511999999999@c.us","pushName":"Chip"},"assignedWorker":"","config":{"metadata":{"tenant":"t1","chip":"c1"},"webhooks":[{"url":"http://127.0.0.1:9/hook","events":["session.status","message"],"hmac":{"key":"k"},"retries":{"policy":"constant","delaySeconds":2,"attempts":3}}],"proxy":{"server":"127.0.0.1:3128","username":"u","password":"p"}},"engine":{"engine":"NOWEB","state":"CONNECTED"}}"#;
const PONG: &str = r#"{"message":"pong"}"#;
const KEY: &str = "bench-api-key";

fn server(runtime: &tokio::runtime::Runtime) -> String {
    runtime.block_on(async {
        let app = Router::new()
            .route(
                "/ping",
                get(|| async { ([(CONTENT_TYPE, "application/json")], PONG) }),
            )
            .route(
                "/api/sessions/{name}",
                get(|| async { ([(CONTENT_TYPE, "application/json")], SESSION) }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let address = listener.local_addr().expect("local address");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        format!("http://{address}")
    })
}

/// The raw reqwest equivalent of `WahaClient::get_session`.
async fn raw_get_session(raw: &reqwest::Client, url: &str) -> SessionInfo {
    let response = raw
        .get(url)
        .header("x-api-key", KEY)
        .header(ACCEPT, "application/json")
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("send");
    assert!(response.status().is_success());
    let body = response.bytes().await.expect("body");
    serde_json::from_slice::<SessionInfo>(&body).expect("decode")
}

/// The raw reqwest equivalent of `WahaClient::ping`.
async fn raw_ping(raw: &reqwest::Client, url: &str) -> bytes::Bytes {
    let response = raw
        .get(url)
        .header("x-api-key", KEY)
        .header(ACCEPT, "application/json")
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .expect("send");
    assert!(response.status().is_success());
    response.bytes().await.expect("body")
}

fn call_overhead(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let base = server(&runtime);
    // The default configuration: retries enabled, metrics and tracing calls in place.
    let client = WahaClient::with_config(
        base.parse().expect("url"),
        ApiKey::new(KEY).unwrap(),
        ClientConfig::default(),
    )
    .expect("client");
    let raw = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .expect("reqwest");
    let session_url = format!("{base}/api/sessions/chip-1");
    let ping_url = format!("{base}/ping");

    let mut group = c.benchmark_group("get_session");
    group.bench_function("raw_reqwest", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(raw_get_session(&raw, &session_url).await) });
    });
    group.bench_function("waha_client", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(client.get_session("chip-1").await.expect("get")) });
    });
    group.finish();

    let mut group = c.benchmark_group("ping");
    group.bench_function("raw_reqwest", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(raw_ping(&raw, &ping_url).await) });
    });
    group.bench_function("waha_client", |b| {
        b.to_async(&runtime)
            .iter(|| async { client.ping().await.expect("ping") });
    });
    group.finish();
}

/// Times `block` calls of `call`.
async fn timed<F, Fut>(block: u32, call: &F) -> Duration
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let started = Instant::now();
    for _ in 0..block {
        call().await;
    }
    started.elapsed()
}

/// Median over `rounds` of (client time / raw time), the two alternating in blocks.
async fn paired_ratio<R, RF, C, CF>(rounds: usize, block: u32, raw: R, client: C) -> (f64, f64, f64)
where
    R: Fn() -> RF,
    RF: Future<Output = ()>,
    C: Fn() -> CF,
    CF: Future<Output = ()>,
{
    // Warm both paths (connection, allocator, caches).
    timed(block, &raw).await;
    timed(block, &client).await;
    let mut ratios = Vec::with_capacity(rounds);
    for round in 0..rounds {
        // Alternate which goes first, so neither always follows the other.
        let (raw_time, client_time) = if round % 2 == 0 {
            let r = timed(block, &raw).await;
            (r, timed(block, &client).await)
        } else {
            let c = timed(block, &client).await;
            (timed(block, &raw).await, c)
        };
        ratios.push(client_time.as_secs_f64() / raw_time.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.1), at(0.9))
}

fn paired(_: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let base = server(&runtime);
    let client = WahaClient::with_config(
        base.parse().expect("url"),
        ApiKey::new(KEY).unwrap(),
        ClientConfig::default(),
    )
    .expect("client");
    let raw = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .expect("reqwest");
    let session_url = format!("{base}/api/sessions/chip-1");
    let ping_url = format!("{base}/ping");
    runtime.block_on(async {
        let (p50, p10, p90) = paired_ratio(
            200,
            50,
            || async {
                black_box(raw_get_session(&raw, &session_url).await);
            },
            || async {
                black_box(client.get_session("chip-1").await.expect("get"));
            },
        )
        .await;
        println!(
            "paired ratio get_session (client / raw, 200 rounds x 50 calls): median {p50:.3}, p10 {p10:.3}, p90 {p90:.3}"
        );
        let (p50, p10, p90) = paired_ratio(
            200,
            50,
            || async {
                black_box(raw_ping(&raw, &ping_url).await);
            },
            || async {
                client.ping().await.expect("ping");
            },
        )
        .await;
        println!(
            "paired ratio ping (client / raw, 200 rounds x 50 calls): median {p50:.3}, p10 {p10:.3}, p90 {p90:.3}"
        );
    });
}

criterion_group!(benches, call_overhead, paired);
criterion_main!(benches);
