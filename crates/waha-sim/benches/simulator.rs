//! Requests per second on one core (the simulator runs on its own single-threaded runtime) and
//! memory per simulated session.
//!
//! `cargo bench -p waha-sim --bench simulator -- --warm-up-time 1 --measurement-time 3`

use std::time::Duration;

use criterion::{Criterion, Throughput};
use futures::StreamExt;
use serde_json::json;
use waha_sim::{SessionStatus, Simulator, Timings};

const KEY: &str = "bench-key-0123456789";
const BATCH: u64 = 64;
const MEMORY_SESSIONS: usize = 10_000;

fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn requests(c: &mut Criterion) {
    let rt = client_runtime();
    let sim = rt.block_on(async {
        let mut timings = Timings::default();
        timings.ack_interval = None;
        Simulator::builder()
            .api_key(KEY)
            .timings(timings)
            .time_scale(0.001)
            .start()
            .await
            .unwrap()
    });
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = sim.url().to_owned();
    rt.block_on(async {
        http.post(format!("{base}/api/sessions"))
            .header("X-Api-Key", KEY)
            .json(&json!({"name": "bench", "start": true}))
            .send()
            .await
            .unwrap();
        sim.control()
            .wait_for_status("bench", SessionStatus::ScanQrCode, Duration::from_secs(5))
            .await
            .unwrap();
        sim.control().scan("bench").unwrap();
    });

    let mut group = c.benchmark_group("one_core");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("GET /api/sessions/{name} x64 concurrent", |b| {
        b.to_async(&rt).iter(|| {
            let http = http.clone();
            let url = format!("{base}/api/sessions/bench");
            async move {
                futures::stream::iter(0..BATCH)
                    .for_each_concurrent(BATCH as usize, |_| {
                        let request = http.get(&url).header("X-Api-Key", KEY);
                        async move {
                            let response = request.send().await.unwrap();
                            assert_eq!(response.status(), 200);
                            response.bytes().await.unwrap();
                        }
                    })
                    .await;
            }
        });
    });
    group.bench_function("POST /api/sendText x64 concurrent", |b| {
        b.to_async(&rt).iter(|| {
            let http = http.clone();
            let url = format!("{base}/api/sendText");
            async move {
                futures::stream::iter(0..BATCH)
                    .for_each_concurrent(BATCH as usize, |_| {
                        let request = http.post(&url).header("X-Api-Key", KEY).json(
                            &json!({"session": "bench", "chatId": "5511999999999@c.us", "text": "hi"}),
                        );
                        async move {
                            let response = request.send().await.unwrap();
                            assert_eq!(response.status(), 201);
                            response.bytes().await.unwrap();
                        }
                    })
                    .await;
            }
        });
    });
    group.finish();
    rt.block_on(sim.shutdown());
}

/// Resident set size of this process, in bytes (Linux).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Memory per started session in SCAN_QR_CODE (config-less), as the RSS delta over
/// `MEMORY_SESSIONS` sessions created through the HTTP API.
fn memory_per_session() {
    let rt = client_runtime();
    rt.block_on(async {
        let sim = Simulator::builder()
            .time_scale(0.001)
            .start()
            .await
            .unwrap();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let create = |range: std::ops::Range<usize>| {
            let http = http.clone();
            let url = format!("{}/api/sessions", sim.url());
            async move {
                futures::stream::iter(range)
                    .for_each_concurrent(32, |i| {
                        let request = http.post(&url).json(&json!({
                            "name": format!("tenant-0042-chip-{i:06}"),
                            "start": true,
                            "config": {"metadata": {"tenant": "0042", "chip": format!("{i}")}}
                        }));
                        async move {
                            assert_eq!(request.send().await.unwrap().status(), 201);
                        }
                    })
                    .await;
            }
        };
        create(0..200).await; // warm up pools and buffers
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = rss_bytes();
        create(200..200 + MEMORY_SESSIONS).await;
        let last = format!("tenant-0042-chip-{:06}", 199 + MEMORY_SESSIONS);
        sim.control()
            .wait_for_status(&last, SessionStatus::ScanQrCode, Duration::from_secs(30))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = rss_bytes();
        let per_session = after.saturating_sub(before) / MEMORY_SESSIONS as u64;
        println!(
            "memory per session: {per_session} bytes (RSS {} MiB -> {} MiB over {MEMORY_SESSIONS} \
             started sessions with metadata, in SCAN_QR_CODE)",
            before / (1 << 20),
            after / (1 << 20)
        );
        sim.shutdown().await;
    });
}

fn main() {
    memory_per_session();
    let mut criterion = Criterion::default().configure_from_args();
    requests(&mut criterion);
    criterion.final_summary();
}
