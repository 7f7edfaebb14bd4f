//! chip-service under load on 127.0.0.1: the real `chip-service` binary on the embedded
//! default, driven over HTTP by this process. The figures are measured in this one run (a
//! plain `main`, `harness = false`, not criterion) and printed as they are measured.
//!
//! - **Open files.** This process first raises its soft `RLIMIT_NOFILE` (towards 65 536,
//!   capped by the hard limit) and prints it; the server, spawned after that, inherits it (its
//!   limits are read back from `/proc/<pid>/limits` and printed). Each side holds one socket
//!   per stream and per client, so the bench refuses to run under a soft limit it cannot
//!   use.
//! - **Status reads** (`GET /v1/chips/{chip}` with the chip's tenant's token): 200
//!   concurrent clients, each its own `reqwest::Client` and so its own kept-alive connection,
//!   each reading in a loop for `LOAD_SECONDS` (default 10) after a 2 s warm-up. Printed: the
//!   requests started in the window, req/s, latency p50/p95/p99/max (from the send to the
//!   body's end, per request), the errors by status (any answer but 200 is one; transport
//!   failures by kind), and the CPU time the server and this process used in the window.
//! - **Event streams** (`GET /v1/events`, Server-Sent Events, the tenant's token): 1,000
//!   streams at once, 100 per tenant over the 10 tenants, each a task reading the byte stream.
//!   The server's RSS (`VmRSS` in `/proc/<pid>/status`) and open files before they open and
//!   once all are connected, and the RSS delta per stream. Then every tenant creates 3 chips
//!   through the REST API: a creation publishes the chip's `created` change to its tenant's
//!   streams before it answers. Every stream must receive the `created` change of each of
//!   its tenant's new chips within 60 s, and no stream may receive a change of another
//!   tenant's chip (every chip id starts with its tenant's id and a `-`). Printed: how many
//!   streams got everything, delivery latency p50/p99/max (from just before the
//!   `POST /v1/chips` to the arrival of the chunk that carried the change), the changes each
//!   stream received, gaps, and the server's RSS after the deliveries.
//! - **Shutdown.** The streams are closed, then the server gets SIGTERM (`kill -TERM`) and
//!   must exit 0 within 60 s; its log must not carry the admin token or a tenant's token.
//!
//! Set-up, through the API as a host does it: 10 tenants (admin API, plan limits of 5 chips
//! and 5 running sessions), 2 chips each (`POST /v1/chips`, QR login; status reads need no
//! `WORKING` chip). The admin token is random per run (`CHIPSERVICE_ADMIN_TOKEN`, from the OS
//! random source) and, like the tenants' tokens, never printed. The server listens on a free
//! port (`CHIPSERVICE_LISTEN=127.0.0.1:0`; the bench reads the address from the line it
//! prints) and logs to a temp file named at the start (`LOAD_SERVER_LOG` sets its log filter,
//! default `info` as in production: every API request is logged).
//!
//! The bench exits 1 when a correctness check fails (a read answered anything but 200 or
//! another chip, except time-outs, which are a figure; a stream did not open, missed a
//! change, carried another tenant's change or ended early; the server did not exit 0 on
//! SIGTERM; a token in its log), never because of a figure.
//!
//! Run: `cargo bench -p chip-service --bench load` (`LOAD_SECONDS=30 cargo bench ...` for a
//! longer window). Linux only (`/proc`).
//!
//! **The machine.** Client and server share it: on the reference machine's 2 cores the 200
//! clients (and the 1,000 streams' readers) compete with the server for CPU, so req/s and
//! latencies are those of the pair, not the server's ceiling; the CPU line of the reads says
//! how the cores were split. Compare figures only within one run.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chip_service::service::vars;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};

/// Tenants created through the admin API.
const TENANTS: usize = 10;
/// Chips each tenant creates before the reads.
const CHIPS_PER_TENANT: usize = 2;
/// Chips each tenant creates while the streams are open: each creation is one `created`
/// change every stream of the tenant must receive.
const EVENTS_PER_TENANT: usize = 3;
/// Concurrent status-read clients, each on its own connection.
const CLIENTS: usize = 200;
/// Event streams per tenant.
const STREAMS_PER_TENANT: usize = 100;
/// Event streams in all.
const STREAMS: usize = TENANTS * STREAMS_PER_TENANT;
/// Reads before the measured window.
const WARM_UP: Duration = Duration::from_secs(2);
/// The measured window of the reads, in seconds, unless `LOAD_SECONDS` says otherwise.
const DEFAULT_LOAD_SECONDS: u64 = 10;
/// The time-out of one REST request (and of opening one stream).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server gets to listen and report ready.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long the streams get to open, all of them.
const OPEN_DEADLINE: Duration = Duration::from_secs(60);
/// Streams being opened at once (the rest wait their turn).
const OPENING_AT_ONCE: usize = 50;
/// How long after the first event's `POST` every stream must have received its tenant's.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(60);
/// A pause before reading the server's memory once the streams are open.
const SETTLE: Duration = Duration::from_secs(1);
/// The server's drain timeout on SIGTERM.
const DRAIN_TIMEOUT_SECS: &str = "30";
/// How long the server gets to exit after SIGTERM.
const EXIT_DEADLINE: Duration = Duration::from_secs(60);
/// The soft open-file limit the bench asks for.
const NOFILE_WANTED: u64 = 65_536;
/// Open files each process needs besides one per stream and per client.
const FD_MARGIN: u64 = 256;
/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const USER_HZ: f64 = 100.0;
/// What the server prints to stdout once it listens, before its address.
const LISTENING: &str = "chip-service listening on http://";

/// A token the bench holds (the admin token, a tenant's API token): never printed, `Debug`
/// redacts it.
struct Secret(String);

impl Secret {
    /// 32 bytes from the OS random source, as 64 hex digits (an admin token the service
    /// accepts).
    fn random() -> Result<Self, String> {
        let mut bytes = [0_u8; 32];
        getrandom::fill(&mut bytes).map_err(|error| format!("the OS random source: {error}"))?;
        Ok(Secret(
            bytes.iter().map(|byte| format!("{byte:02x}")).collect(),
        ))
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// A tenant of the run: its id, API token, the chips it reads and the chips whose creation
/// is its streams' events.
struct LoadTenant {
    id: String,
    token: Arc<Secret>,
    chips: Vec<String>,
    new_chips: Arc<Vec<String>>,
}

fn main() -> ExitCode {
    let (soft, hard) = match raise_nofile() {
        Ok(limits) => limits,
        Err(problem) => {
            eprintln!("load: {problem}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "open-file limit (RLIMIT_NOFILE) of this process: soft {soft}, hard {hard} \
         (asked for {NOFILE_WANTED}); the server inherits it"
    );
    let needed = (STREAMS + CLIENTS) as u64 + FD_MARGIN;
    if soft < needed {
        eprintln!(
            "load: the soft open-file limit {soft} is below the {needed} each process needs \
             ({STREAMS} streams, {CLIENTS} clients, {FD_MARGIN} more); raise the hard limit \
             (`ulimit -Hn`) and run again"
        );
        return ExitCode::FAILURE;
    }
    let seconds = match load_seconds() {
        Ok(seconds) => seconds,
        Err(problem) => {
            eprintln!("load: {problem}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("load: the Tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(seconds)) {
        Ok(failures) if failures.is_empty() => {
            println!("checks: all passed");
            ExitCode::SUCCESS
        }
        Ok(failures) => {
            for failure in &failures {
                eprintln!("check failed: {failure}");
            }
            ExitCode::FAILURE
        }
        Err(problem) => {
            eprintln!("load: {problem}");
            ExitCode::FAILURE
        }
    }
}

/// Raises this process's soft open-file limit towards [`NOFILE_WANTED`] (never above the
/// hard limit); answers the limits now in force.
fn raise_nofile() -> Result<(u64, u64), String> {
    let soft = rlimit::increase_nofile_limit(NOFILE_WANTED)
        .map_err(|error| format!("raising RLIMIT_NOFILE: {error}"))?;
    let (_, hard) = rlimit::Resource::NOFILE
        .get()
        .map_err(|error| format!("reading RLIMIT_NOFILE: {error}"))?;
    Ok((soft, hard))
}

/// `LOAD_SECONDS`, or [`DEFAULT_LOAD_SECONDS`].
fn load_seconds() -> Result<u64, String> {
    match std::env::var("LOAD_SECONDS") {
        Err(_) => Ok(DEFAULT_LOAD_SECONDS),
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(seconds) if seconds > 0 => Ok(seconds),
            _ => Err(format!(
                "LOAD_SECONDS must be a whole number of seconds above 0, not {text:?}"
            )),
        },
    }
}

/// The whole run; answers the failed correctness checks (empty: all passed). An error is a
/// set-up that could not be done (the server is killed).
async fn run(seconds: u64) -> Result<Vec<String>, String> {
    let mut failures = Vec::new();
    let admin = Secret::random()?;
    let mut server = Server::start(&admin).await?;
    println!(
        "chip-service (embedded default) pid {} at {}; its log: {}",
        server.pid,
        server.base,
        server.log.display()
    );
    match nofile_of(server.pid) {
        Ok((soft, hard)) => println!("open-file limit of the server: soft {soft}, hard {hard}"),
        Err(problem) => println!("open-file limit of the server: unknown ({problem})"),
    }
    let http = plain_client(Some(REQUEST_TIMEOUT))?;
    let tenants = set_up(&http, &server.base, &admin).await?;
    status_reads(&server, &tenants, seconds, &mut failures).await?;
    event_streams(&server, &tenants, &http, &mut failures).await?;
    println!(
        "server peak RSS (VmHWM): {}",
        mib(status_kib(&server.pid.to_string(), "VmHWM")?)
    );
    let (status, took) = server.terminate().await?;
    println!(
        "SIGTERM: the server exited ({status}) in {:.2} s",
        took.as_secs_f64()
    );
    if !status.success() {
        failures.push(format!(
            "the server exited {status} after SIGTERM, not 0 (its log: {})",
            server.log.display()
        ));
    }
    check_log(&server, &admin, &tenants, &mut failures);
    Ok(failures)
}

/// The `chip-service` child process. Dropping it kills the process if it still runs.
struct Server {
    child: Option<Child>,
    pid: u32,
    /// `http://127.0.0.1:<port>`.
    base: Arc<str>,
    log: PathBuf,
}

impl Server {
    /// Starts the binary on the embedded default, listening on a free 127.0.0.1 port with
    /// `admin` as its admin token, its stdout and stderr to a temp file; waits until it
    /// listens and `/readyz` answers 200.
    async fn start(admin: &Secret) -> Result<Server, String> {
        let log =
            std::env::temp_dir().join(format!("chip-service-load-{}.log", std::process::id()));
        let stdout =
            File::create(&log).map_err(|error| format!("creating {}: {error}", log.display()))?;
        let stderr = stdout
            .try_clone()
            .map_err(|error| format!("{}: {error}", log.display()))?;
        let filter = std::env::var("LOAD_SERVER_LOG").unwrap_or_else(|_| "info".to_owned());
        let child = Command::new(env!("CARGO_BIN_EXE_chip-service"))
            .env(vars::ADMIN_TOKEN, admin.expose())
            .env(vars::LISTEN, "127.0.0.1:0")
            .env(vars::LOG, filter)
            .env(vars::LOG_JSON, "false")
            .env(vars::DRAIN_TIMEOUT_SECS, DRAIN_TIMEOUT_SECS)
            // The embedded default, at its default time scale, whatever the shell says.
            .env_remove(vars::BACKEND)
            .env_remove(vars::EMBEDDED_TIME_SCALE)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|error| format!("starting chip-service: {error}"))?;
        let pid = child.id();
        let mut server = Server {
            child: Some(child),
            pid,
            base: Arc::from(""),
            log,
        };
        let started = Instant::now();
        let addr = server.wait_listening(started).await?;
        server.base = Arc::from(format!("http://{addr}"));
        server.wait_ready(started).await?;
        Ok(server)
    }

    /// Whether the process exited, and how.
    fn exited(&mut self) -> Result<Option<ExitStatus>, String> {
        match self.child.as_mut() {
            Some(child) => child
                .try_wait()
                .map_err(|error| format!("waiting for chip-service: {error}")),
            None => Err("chip-service was already waited for".to_owned()),
        }
    }

    /// The address the server printed once it listened (`127.0.0.1:<port>`).
    async fn wait_listening(&mut self, started: Instant) -> Result<String, String> {
        loop {
            let bytes = std::fs::read(&self.log).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            if let Some(at) = text.find(LISTENING) {
                let rest = &text[at + LISTENING.len()..];
                if let Some(line_end) = rest.find('\n') {
                    return Ok(rest[..line_end].trim().to_owned());
                }
            }
            if let Some(status) = self.exited()? {
                return Err(format!(
                    "chip-service exited ({status}) before it listened; its log: {}",
                    self.log.display()
                ));
            }
            if started.elapsed() > START_DEADLINE {
                return Err(format!(
                    "chip-service did not listen within {START_DEADLINE:?}; its log: {}",
                    self.log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `/readyz` until it answers 200.
    async fn wait_ready(&mut self, started: Instant) -> Result<(), String> {
        let http = plain_client(Some(Duration::from_secs(2)))?;
        let url = format!("{}/readyz", self.base);
        loop {
            let status = match http.get(url.as_str()).send().await {
                Ok(response) => response.status().as_u16().to_string(),
                Err(error) => error.to_string(),
            };
            if status == "200" {
                return Ok(());
            }
            if let Some(exit) = self.exited()? {
                return Err(format!(
                    "chip-service exited ({exit}) before it was ready; its log: {}",
                    self.log.display()
                ));
            }
            if started.elapsed() > START_DEADLINE {
                return Err(format!(
                    "/readyz did not answer 200 within {START_DEADLINE:?} (last: {status})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM (`kill -TERM <pid>`) and waits for the exit; answers its status and how
    /// long it took.
    async fn terminate(&mut self) -> Result<(ExitStatus, Duration), String> {
        let signalled = Instant::now();
        let kill = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .map_err(|error| format!("running kill -TERM: {error}"))?;
        if !kill.success() {
            return Err(format!("kill -TERM {} failed: {kill}", self.pid));
        }
        loop {
            if let Some(status) = self.exited()? {
                self.child = None;
                return Ok((status, signalled.elapsed()));
            }
            if signalled.elapsed() > EXIT_DEADLINE {
                return Err(format!(
                    "chip-service did not exit within {EXIT_DEADLINE:?} of SIGTERM (killed); \
                     its log: {}",
                    self.log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTP client that never goes through a proxy (the server is on 127.0.0.1), with a
/// time-out per request when `request_timeout` is given.
fn plain_client(request_timeout: Option<Duration>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(REQUEST_TIMEOUT);
    if let Some(limit) = request_timeout {
        builder = builder.timeout(limit);
    }
    builder
        .build()
        .map_err(|error| format!("an HTTP client: {error}"))
}

/// An error answer's code and message (never a secret: error bodies carry none).
fn describe(body: &Value) -> String {
    let error = &body["error"];
    format!(
        "{}: {}",
        error["code"].as_str().unwrap_or("no error code"),
        error["message"].as_str().unwrap_or_default()
    )
}

/// `POST {base}{path}` with `token` and a JSON body; answers the status and the JSON answer
/// (`null` when it is not JSON).
async fn post_json(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: &Secret,
    body: Value,
) -> Result<(u16, Value), String> {
    let url = format!("{base}{path}");
    let response = http
        .post(url.as_str())
        .bearer_auth(token.expose())
        .json(&body)
        .send()
        .await
        .map_err(|error| format!("POST {path}: {error}"))?;
    let status = response.status().as_u16();
    let answer = response.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, answer))
}

/// Creates tenant `id` with room for its chips; answers its API token.
async fn create_tenant(
    http: &reqwest::Client,
    base: &str,
    admin: &Secret,
    id: &str,
) -> Result<Secret, String> {
    let room = CHIPS_PER_TENANT + EVENTS_PER_TENANT;
    let (status, answer) = post_json(
        http,
        base,
        "/v1/tenants",
        admin,
        json!({
            "id": id,
            "limits": {
                "max_chips": room,
                "max_running_sessions": room,
                "max_sends_per_day": 100,
            },
        }),
    )
    .await?;
    if status != 201 {
        return Err(format!(
            "POST /v1/tenants ({id}) answered {status}: {}",
            describe(&answer)
        ));
    }
    answer["api_token"]
        .as_str()
        .map(|token| Secret(token.to_owned()))
        .ok_or_else(|| format!("POST /v1/tenants ({id}) answered no api_token"))
}

/// Creates chip `chip` (QR login) with the tenant's `token`; 201 expected.
async fn create_chip(
    http: &reqwest::Client,
    base: &str,
    token: &Secret,
    chip: &str,
) -> Result<(), String> {
    let (status, answer) = post_json(http, base, "/v1/chips", token, json!({ "id": chip })).await?;
    if status == 201 {
        Ok(())
    } else {
        Err(format!(
            "POST /v1/chips ({chip}) answered {status}: {}",
            describe(&answer)
        ))
    }
}

/// The tenants and their chips, through the API.
async fn set_up(
    http: &reqwest::Client,
    base: &str,
    admin: &Secret,
) -> Result<Vec<LoadTenant>, String> {
    let started = Instant::now();
    let mut tenants = Vec::with_capacity(TENANTS);
    for number in 0..TENANTS {
        let id = format!("load-{number:02}");
        let token = create_tenant(http, base, admin, &id).await?;
        let chips: Vec<String> = (0..CHIPS_PER_TENANT)
            .map(|chip| format!("{id}-c{chip}"))
            .collect();
        for chip in &chips {
            create_chip(http, base, &token, chip).await?;
        }
        let new_chips = (0..EVENTS_PER_TENANT)
            .map(|event| format!("{id}-ev{event}"))
            .collect();
        tenants.push(LoadTenant {
            id,
            token: Arc::new(token),
            chips,
            new_chips: Arc::new(new_chips),
        });
    }
    println!(
        "set-up: {TENANTS} tenants (admin API) × {CHIPS_PER_TENANT} chips (POST /v1/chips) in \
         {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(tenants)
}

// ---------------------------------------------------------------------------------------
// Phase 1: status reads.
// ---------------------------------------------------------------------------------------

/// What one read client saw.
#[derive(Default)]
struct ReadReport {
    /// The latency of each successful read started in the measured window.
    latencies: Vec<Duration>,
    /// Non-200 answers by status, transport failures by kind (warm-up included).
    errors: BTreeMap<String, u64>,
    /// The checked answer was not the chip asked for.
    wrong: Option<String>,
}

/// A transport failure's kind (its text could be long and varied).
fn transport_kind(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_body() || error.is_decode() {
        "body"
    } else if error.is_request() {
        "request"
    } else {
        "transport"
    };
    kind.to_owned()
}

/// One `GET` read to its body's end; answers the status and, when `parse`, the JSON body.
async fn read_once(
    client: &reqwest::Client,
    url: &str,
    token: &Secret,
    parse: bool,
) -> Result<(u16, Option<Value>), String> {
    let response = client
        .get(url)
        .bearer_auth(token.expose())
        .send()
        .await
        .map_err(|error| transport_kind(&error))?;
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .map_err(|error| transport_kind(&error))?;
    let parsed = if parse {
        serde_json::from_slice::<Value>(&body).ok()
    } else {
        None
    };
    Ok((status, parsed))
}

/// One client: reads `chip` in a loop until `end`, keeping the latencies of the reads started
/// from `start`. Its first answer and every 64th after it are checked to be that chip.
async fn read_loop(
    client: reqwest::Client,
    url: String,
    token: Arc<Secret>,
    chip: String,
    start: Instant,
    end: Instant,
) -> ReadReport {
    let mut report = ReadReport::default();
    let mut reads = 0u64;
    loop {
        let began = Instant::now();
        if began >= end {
            break;
        }
        // The first answer and every 64th after it are parsed and checked to be the chip.
        let check = reads.is_multiple_of(64);
        reads += 1;
        let answer = read_once(&client, &url, &token, check).await;
        let took = began.elapsed();
        match answer {
            Ok((200, parsed)) => {
                if check {
                    let id = parsed.as_ref().and_then(|view| view["id"].as_str());
                    if id != Some(chip.as_str()) && report.wrong.is_none() {
                        report.wrong =
                            Some(format!("GET /v1/chips/{chip} answered the chip {id:?}"));
                    }
                }
                if began >= start {
                    report.latencies.push(took);
                }
            }
            Ok((status, _)) => {
                *report.errors.entry(status.to_string()).or_default() += 1;
            }
            Err(kind) => {
                *report.errors.entry(kind).or_default() += 1;
                // Not a busy loop on a refused connection.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    report
}

/// Phase 1: [`CLIENTS`] clients read their tenant's chips for `seconds` after [`WARM_UP`].
async fn status_reads(
    server: &Server,
    tenants: &[LoadTenant],
    seconds: u64,
    failures: &mut Vec<String>,
) -> Result<(), String> {
    println!(
        "phase 1 — status reads, GET /v1/chips/{{chip}}: {CLIENTS} clients (each its own \
         keep-alive connection), {} s warm-up, then {seconds} s measured",
        WARM_UP.as_secs()
    );
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        clients.push(plain_client(Some(REQUEST_TIMEOUT))?);
    }
    let warm_from = Instant::now();
    let start = warm_from + WARM_UP;
    let window = Duration::from_secs(seconds);
    let end = start + window;
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(number, client)| {
            let tenant = &tenants[number % TENANTS];
            let chip = tenant.chips[(number / TENANTS) % CHIPS_PER_TENANT].clone();
            let url = format!("{}/v1/chips/{chip}", server.base);
            tokio::spawn(read_loop(
                client,
                url,
                tenant.token.clone(),
                chip,
                start,
                end,
            ))
        })
        .collect();
    let server_proc = server.pid.to_string();
    tokio::time::sleep_until(tokio::time::Instant::from_std(start)).await;
    let cpu_before = (cpu_seconds(&server_proc), cpu_seconds("self"));
    tokio::time::sleep_until(tokio::time::Instant::from_std(end)).await;
    let cpu_after = (cpu_seconds(&server_proc), cpu_seconds("self"));

    let mut latencies = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for handle in handles {
        match handle.await {
            Ok(report) => {
                latencies.extend(report.latencies);
                for (kind, count) in report.errors {
                    *errors.entry(kind).or_default() += count;
                }
                if let Some(wrong) = report.wrong {
                    failures.push(wrong);
                }
            }
            Err(error) => failures.push(format!("a read client failed: {error}")),
        }
    }
    latencies.sort_unstable();
    let requests = latencies.len();
    let error_count: u64 = errors.values().sum();
    println!(
        "  reads answered 200: {requests} in {:.1} s = {:.0} req/s",
        window.as_secs_f64(),
        requests as f64 / window.as_secs_f64()
    );
    println!("  latency: {}", latency_summary(&latencies, true));
    if error_count == 0 {
        println!("  errors: 0");
    } else {
        println!("  errors: {error_count} (warm-up included) by status or kind: {errors:?}");
    }
    if let ((Some(server_from), Some(own_from)), (Some(server_to), Some(own_to))) =
        (cpu_before, cpu_after)
    {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        println!(
            "  CPU in the window: server {:.1} s, this process (the clients) {:.1} s, of {:.1} \
             core-seconds on {cores} cores",
            server_to - server_from,
            own_to - own_from,
            window.as_secs_f64() * cores as f64
        );
    }
    println!(
        "  server RSS after the reads: {}",
        mib(status_kib(&server_proc, "VmRSS")?)
    );
    if requests == 0 {
        failures.push("no status read succeeded in the measured window".to_owned());
    }
    let refused: u64 = errors
        .iter()
        .filter(|(kind, _)| kind.as_str() != "timeout")
        .map(|(_, count)| count)
        .sum();
    if refused > 0 {
        failures.push(format!(
            "{refused} status reads failed (time-outs aside): {errors:?}"
        ));
    }
    // Time-outs are a figure, not a refusal; more than 1 % of the reads is a failure.
    let timed_out = errors.get("timeout").copied().unwrap_or(0);
    if timed_out * 100 > requests.max(1) as u64 {
        failures.push(format!(
            "{timed_out} status reads timed out, over 1 % of the {requests} answered"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Phase 2: event streams.
// ---------------------------------------------------------------------------------------

/// What one stream is for.
struct StreamSpec {
    /// `<tenant id>-`: every chip id of the tenant starts with it.
    prefix: String,
    token: Arc<Secret>,
    /// The chips whose `created` change the stream must receive.
    new_chips: Arc<Vec<String>>,
}

/// What every stream task shares with the bench.
#[derive(Clone)]
struct StreamWiring {
    client: reqwest::Client,
    /// `http://127.0.0.1:<port>/v1/events`.
    url: Arc<str>,
    /// Bounds the streams being opened at once.
    opening: Arc<Semaphore>,
    /// One message per stream: opened, or why not.
    opened: mpsc::UnboundedSender<Result<(), String>>,
    /// One message per stream that received every change it must.
    complete: mpsc::UnboundedSender<()>,
    /// Turns `true` when the streams are to close.
    stop: watch::Receiver<bool>,
}

/// What one stream saw.
#[derive(Default)]
struct StreamReport {
    opened: bool,
    /// Why it ended before the bench closed it.
    ended: Option<String>,
    /// `change` events received.
    changes: u64,
    /// `gap` events received.
    gaps: u64,
    /// Changes whose data was not a JSON object with a chip.
    malformed: u64,
    /// The chips of changes that were not its tenant's.
    foreign: Vec<String>,
    /// When the `created` change of each of its tenant's new chips arrived.
    received: HashMap<String, Instant>,
}

impl StreamReport {
    /// Takes one SSE frame (its lines, without the blank line that ended it) that arrived at
    /// `arrived`.
    fn take_frame(&mut self, frame: &[u8], spec: &StreamSpec, arrived: Instant) {
        let text = String::from_utf8_lossy(frame);
        let mut event = "message";
        let mut data = String::new();
        for line in text.lines() {
            if let Some(value) = line.strip_prefix("event:") {
                event = value.trim();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
        }
        match event {
            "change" => {
                self.changes += 1;
                let Ok(change) = serde_json::from_str::<Value>(&data) else {
                    self.malformed += 1;
                    return;
                };
                let Some(chip) = change["chip"].as_str() else {
                    self.malformed += 1;
                    return;
                };
                if !chip.starts_with(spec.prefix.as_str()) {
                    self.foreign.push(chip.to_owned());
                    return;
                }
                if change["kind"] == "created" && spec.new_chips.iter().any(|new| new == chip) {
                    self.received.entry(chip.to_owned()).or_insert(arrived);
                }
            }
            "gap" => self.gaps += 1,
            // Keep-alive comments.
            _ => {}
        }
    }
}

/// Where the first frame in `buffer` ends (the index of its blank line's first `\n`).
fn frame_end(buffer: &[u8]) -> Option<usize> {
    buffer.windows(2).position(|pair| pair == b"\n\n")
}

/// Opens the stream `spec` names (200 and `text/event-stream`, or why not).
async fn open_stream(
    wiring: &StreamWiring,
    spec: &StreamSpec,
) -> Result<reqwest::Response, String> {
    let permit = wiring.opening.clone().acquire_owned().await;
    let sent = tokio::time::timeout(
        REQUEST_TIMEOUT,
        wiring
            .client
            .get(&*wiring.url)
            .bearer_auth(spec.token.expose())
            .header("accept", "text/event-stream")
            .send(),
    )
    .await;
    drop(permit);
    let response = match sent {
        Err(_) => return Err("no answer within the time-out".to_owned()),
        Ok(Err(error)) => return Err(format!("not opened: {}", transport_kind(&error))),
        Ok(Ok(response)) => response,
    };
    let status = response.status().as_u16();
    if status != 200 {
        return Err(format!("answered {status}"));
    }
    let event_stream = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"));
    if !event_stream {
        return Err("answered 200 but not text/event-stream".to_owned());
    }
    Ok(response)
}

/// One stream: opens it, then reads it until the bench stops the streams (or it ends).
async fn follow(wiring: StreamWiring, spec: StreamSpec) -> StreamReport {
    let mut report = StreamReport::default();
    let mut stop = wiring.stop.clone();
    let mut response = match open_stream(&wiring, &spec).await {
        Ok(response) => response,
        Err(problem) => {
            let _ = wiring.opened.send(Err(problem));
            return report;
        }
    };
    report.opened = true;
    let _ = wiring.opened.send(Ok(()));
    let mut buffer: Vec<u8> = Vec::new();
    let mut complete = false;
    loop {
        tokio::select! {
            chunk = response.chunk() => {
                let arrived = Instant::now();
                match chunk {
                    Ok(Some(bytes)) => {
                        buffer.extend_from_slice(&bytes);
                        while let Some(end) = frame_end(&buffer) {
                            let frame: Vec<u8> = buffer.drain(..end + 2).collect();
                            report.take_frame(&frame[..end], &spec, arrived);
                        }
                        if !complete && report.received.len() == spec.new_chips.len() {
                            complete = true;
                            let _ = wiring.complete.send(());
                        }
                    }
                    Ok(None) => {
                        report.ended = Some("the stream ended".to_owned());
                        break;
                    }
                    Err(error) => {
                        let kind = transport_kind(&error);
                        report.ended = Some(format!("the stream failed: {kind}"));
                        break;
                    }
                }
            }
            _ = stop.changed() => break,
        }
    }
    report
}

/// Phase 2: [`STREAMS`] event streams, their memory, then each tenant's new chips' changes
/// delivered to every stream of the tenant and to no other.
async fn event_streams(
    server: &Server,
    tenants: &[LoadTenant],
    http: &reqwest::Client,
    failures: &mut Vec<String>,
) -> Result<(), String> {
    println!(
        "phase 2 — event streams, GET /v1/events (SSE): {STREAMS} streams, {STREAMS_PER_TENANT} \
         per tenant"
    );
    let server_proc = server.pid.to_string();
    let rss_before = status_kib(&server_proc, "VmRSS")?;
    let own_before = status_kib("self", "VmRSS")?;
    let files_before = open_files(&server_proc);

    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel();
    let (complete_tx, mut complete_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|error| format!("an HTTP client: {error}"))?;
    let wiring = StreamWiring {
        client,
        url: Arc::from(format!("{}/v1/events", server.base)),
        opening: Arc::new(Semaphore::new(OPENING_AT_ONCE)),
        opened: opened_tx,
        complete: complete_tx,
        stop: stop_rx,
    };
    let opening_from = Instant::now();
    let mut handles = Vec::with_capacity(STREAMS);
    for stream in 0..STREAMS {
        let tenant = &tenants[stream % TENANTS];
        let spec = StreamSpec {
            prefix: format!("{}-", tenant.id),
            token: tenant.token.clone(),
            new_chips: tenant.new_chips.clone(),
        };
        handles.push(tokio::spawn(follow(wiring.clone(), spec)));
    }
    // Only the tasks hold senders now: a channel closes once every task is done with it.
    drop(wiring);

    let mut opened = 0_usize;
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..STREAMS {
        let left = OPEN_DEADLINE.saturating_sub(opening_from.elapsed());
        match tokio::time::timeout(left, opened_rx.recv()).await {
            Ok(Some(Ok(()))) => opened += 1,
            Ok(Some(Err(problem))) => *refused.entry(problem).or_default() += 1,
            Ok(None) | Err(_) => break,
        }
    }
    println!(
        "  opened: {opened}/{STREAMS} in {:.2} s{}",
        opening_from.elapsed().as_secs_f64(),
        if refused.is_empty() {
            String::new()
        } else {
            format!("; not opened: {refused:?}")
        }
    );
    if opened < STREAMS {
        failures.push(format!(
            "{} of {STREAMS} streams did not open within {OPEN_DEADLINE:?}: {refused:?}",
            STREAMS - opened
        ));
    }
    tokio::time::sleep(SETTLE).await;
    let rss_open = status_kib(&server_proc, "VmRSS")?;
    let own_open = status_kib("self", "VmRSS")?;
    let files_open = open_files(&server_proc);
    let per_stream = if opened == 0 {
        0.0
    } else {
        (rss_open as f64 - rss_before as f64) / opened as f64
    };
    println!(
        "  server RSS: {} before, {} with the streams open: {:+.1} KiB per stream",
        mib(rss_before),
        mib(rss_open),
        per_stream
    );
    println!(
        "  server open files: {} before, {} with the streams open; this process's RSS: {} → {}",
        shown(files_before),
        shown(files_open),
        mib(own_before),
        mib(own_open)
    );

    // The events: each tenant creates its new chips, one after the other; the tenants at once.
    let generating_from = Instant::now();
    let mut generators = Vec::with_capacity(TENANTS);
    for tenant in tenants {
        let http = http.clone();
        let base = server.base.clone();
        let token = tenant.token.clone();
        let chips = tenant.new_chips.clone();
        generators.push(tokio::spawn(async move {
            let mut sent = Vec::with_capacity(chips.len());
            for chip in chips.iter() {
                let at = Instant::now();
                let created = create_chip(&http, &base, &token, chip).await;
                sent.push((chip.clone(), at, created));
            }
            sent
        }));
    }
    let mut sent_at: HashMap<String, Instant> = HashMap::new();
    for generator in generators {
        match generator.await {
            Ok(sent) => {
                for (chip, at, created) in sent {
                    if let Err(problem) = created {
                        failures.push(problem);
                    }
                    sent_at.insert(chip, at);
                }
            }
            Err(error) => failures.push(format!("an event generator failed: {error}")),
        }
    }
    let mut complete = 0_usize;
    while complete < opened {
        let left = DELIVERY_DEADLINE.saturating_sub(generating_from.elapsed());
        match tokio::time::timeout(left, complete_rx.recv()).await {
            Ok(Some(())) => complete += 1,
            Ok(None) | Err(_) => break,
        }
    }
    let delivered_in = generating_from.elapsed();
    let rss_events = status_kib(&server_proc, "VmRSS")?;

    // Close the streams and collect what each saw.
    stop_tx.send_replace(true);
    let mut reports = Vec::with_capacity(STREAMS);
    for handle in handles {
        match handle.await {
            Ok(report) => reports.push(report),
            Err(error) => failures.push(format!("a stream task failed: {error}")),
        }
    }
    let expected = EVENTS_PER_TENANT;
    let mut latencies = Vec::with_capacity(STREAMS * expected);
    let mut everything = 0_usize;
    let mut deliveries = 0_usize;
    let mut gaps = 0_u64;
    let mut malformed = 0_u64;
    let mut foreign: Vec<String> = Vec::new();
    let mut ended: BTreeMap<String, usize> = BTreeMap::new();
    let mut changes: Vec<u64> = Vec::with_capacity(STREAMS);
    for report in &reports {
        if !report.opened {
            continue;
        }
        if report.received.len() == expected {
            everything += 1;
        }
        deliveries += report.received.len();
        for (chip, arrived) in &report.received {
            if let Some(sent) = sent_at.get(chip) {
                latencies.push(arrived.saturating_duration_since(*sent));
            }
        }
        gaps += report.gaps;
        malformed += report.malformed;
        foreign.extend(report.foreign.iter().cloned());
        if let Some(why) = &report.ended {
            *ended.entry(why.clone()).or_default() += 1;
        }
        changes.push(report.changes);
    }
    latencies.sort_unstable();
    changes.sort_unstable();
    println!(
        "  delivery: {everything}/{STREAMS} streams received all {expected} of their tenant's \
         `created` changes ({deliveries} of {} deliveries), {complete} within {:.2} s of the \
         first POST",
        STREAMS * expected,
        delivered_in.as_secs_f64()
    );
    println!(
        "  delivery latency (POST sent → change received): {}",
        latency_summary(&latencies, false)
    );
    println!(
        "  changes per stream: min {}, max {}, total {}; gaps {gaps}; other tenants' changes {}; \
         malformed {malformed}",
        changes.first().copied().unwrap_or(0),
        changes.last().copied().unwrap_or(0),
        changes.iter().sum::<u64>(),
        foreign.len()
    );
    println!("  server RSS after the deliveries: {}", mib(rss_events));

    if everything < STREAMS {
        failures.push(format!(
            "{} of {STREAMS} streams did not receive all {expected} of their tenant's changes \
             within {DELIVERY_DEADLINE:?} ({deliveries} of {} deliveries)",
            STREAMS - everything,
            STREAMS * expected
        ));
    }
    if !foreign.is_empty() {
        foreign.sort_unstable();
        foreign.dedup();
        foreign.truncate(10);
        failures.push(format!(
            "streams received changes of other tenants' chips (first: {foreign:?})"
        ));
    }
    if malformed > 0 {
        failures.push(format!("{malformed} changes were not JSON naming a chip"));
    }
    if !ended.is_empty() {
        failures.push(format!(
            "streams ended before the bench closed them: {ended:?}"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The server's log, /proc and formatting.
// ---------------------------------------------------------------------------------------

/// The server's log must not carry the admin token or a tenant's API token (which is
/// searched for, never printed).
fn check_log(server: &Server, admin: &Secret, tenants: &[LoadTenant], failures: &mut Vec<String>) {
    let log = match std::fs::read(&server.log) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(error) => {
            failures.push(format!("reading {}: {error}", server.log.display()));
            return;
        }
    };
    println!(
        "server log: {} ({:.1} MiB)",
        server.log.display(),
        log.len() as f64 / (1024.0 * 1024.0)
    );
    if log.contains(admin.expose()) {
        failures.push("the admin token is in the server's log".to_owned());
    }
    for tenant in tenants {
        if log.contains(tenant.token.expose()) {
            failures.push(format!(
                "tenant {}'s API token is in the server's log",
                tenant.id
            ));
        }
    }
}

/// A `/proc/<proc>/status` field in KiB (`VmRSS`, `VmHWM`); `proc` is a pid or `self`.
fn status_kib(proc: &str, field: &str) -> Result<u64, String> {
    let path = format!("/proc/{proc}/status");
    let status =
        std::fs::read_to_string(&path).map_err(|error| format!("reading {path}: {error}"))?;
    status
        .lines()
        .find_map(|line| {
            let value = line.strip_prefix(field)?.strip_prefix(':')?;
            value.trim().strip_suffix("kB")?.trim().parse().ok()
        })
        .ok_or_else(|| format!("no {field} line in {path}"))
}

/// The CPU time (user and system) `proc` used so far, in seconds.
fn cpu_seconds(proc: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{proc}/stat")).ok()?;
    // After the command name (in parentheses, maybe with spaces): field 3 onwards; utime is
    // field 14, stime 15.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / USER_HZ)
}

/// How many files `proc` has open.
fn open_files(proc: &str) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{proc}/fd"))
        .ok()
        .map(Iterator::count)
}

/// The soft and hard open-file limits of process `pid`.
fn nofile_of(pid: u32) -> Result<(String, String), String> {
    let path = format!("/proc/{pid}/limits");
    let limits =
        std::fs::read_to_string(&path).map_err(|error| format!("reading {path}: {error}"))?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .ok_or_else(|| format!("no open-file line in {path}"))?;
    let mut values = line["Max open files".len()..].split_whitespace();
    match (values.next(), values.next()) {
        (Some(soft), Some(hard)) => Ok((soft.to_owned(), hard.to_owned())),
        _ => Err(format!("an unreadable open-file line in {path}")),
    }
}

/// KiB as MiB.
fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A count, or `?`.
fn shown(count: Option<usize>) -> String {
    count.map_or_else(|| "?".to_owned(), |count| count.to_string())
}

/// The nearest-rank `p`-th percentile of `sorted`.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A duration in milliseconds.
fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

/// p50, (p95,) p99 and max of `sorted`.
fn latency_summary(sorted: &[Duration], with_p95: bool) -> String {
    if sorted.is_empty() {
        return "no samples".to_owned();
    }
    let p95 = if with_p95 {
        format!(", p95 {}", ms(percentile(sorted, 95.0)))
    } else {
        String::new()
    };
    format!(
        "p50 {}{p95}, p99 {}, max {} ({} samples)",
        ms(percentile(sorted, 50.0)),
        ms(percentile(sorted, 99.0)),
        ms(sorted[sorted.len() - 1]),
        sorted.len()
    )
}
