//! Starting and stopping a simulator: its own thread, its own single-threaded runtime.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpSocket;

use crate::SimError;
use crate::api_key::KeyCheck;
use crate::control::SimulatorControl;
use crate::faults::Faults;
use crate::persistence::Persistence;
use crate::scheduler::Timer;
use crate::settings::{CrashBehaviour, Engine, Settings, Timings};
use crate::state::{RunSignal, SimState};
use crate::time_scale::TimeScale;
use crate::wire::Environment;

/// The socket handed to the simulator's thread.
enum PendingSocket {
    /// Already listening (registered with the thread's runtime there).
    Listening(std::net::TcpListener),
    /// Bound only: refuses connections until the start-up delay has passed.
    Bound(TcpSocket),
}

/// How long a graceful shutdown waits for open requests.
const GRACE: Duration = Duration::from_secs(2);

/// Entry point: `Simulator::builder()...start().await`.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// A builder with WAHA's defaults: no API key, engine WEBJS, no faults, no state directory,
    /// real time, bound to `127.0.0.1:0`.
    pub fn builder() -> SimulatorBuilder {
        SimulatorBuilder::default()
    }
}

/// Configures a simulator. Plain data: nothing happens until [`SimulatorBuilder::start`].
#[derive(Clone)]
pub struct SimulatorBuilder {
    pub(crate) api_key: Option<String>,
    pub(crate) engine: Engine,
    pub(crate) worker_id: String,
    pub(crate) version: String,
    pub(crate) tier: String,
    pub(crate) browser: Option<String>,
    pub(crate) faults: Faults,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) restart_all: bool,
    pub(crate) auto_start_delay: Duration,
    pub(crate) time_scale: f64,
    pub(crate) timings: Timings,
    pub(crate) bind: SocketAddr,
    pub(crate) crash: CrashBehaviour,
    pub(crate) webhook_timeout: Duration,
    pub(crate) dial_proxies: bool,
}

impl Default for SimulatorBuilder {
    fn default() -> Self {
        Self {
            api_key: None,
            engine: Engine::default(),
            worker_id: String::new(),
            version: "2026.6.1".to_owned(),
            tier: "PLUS".to_owned(),
            browser: Some("/usr/bin/chromium".to_owned()),
            faults: Faults::none(),
            state_dir: None,
            restart_all: false,
            auto_start_delay: Duration::ZERO,
            time_scale: 1.0,
            timings: Timings::default(),
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            crash: CrashBehaviour::default(),
            webhook_timeout: Duration::from_secs(10),
            dial_proxies: false,
        }
    }
}

impl std::fmt::Debug for SimulatorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatorBuilder")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("engine", &self.engine)
            .field("worker_id", &self.worker_id)
            .field("version", &self.version)
            .field("faults", &self.faults)
            .field("state_dir", &self.state_dir)
            .field("time_scale", &self.time_scale)
            .field("timings", &self.timings)
            .field("bind", &self.bind)
            .finish_non_exhaustive()
    }
}

impl SimulatorBuilder {
    /// Requires this key in `X-Api-Key` (or `?x-api-key=`). `sha512:<hex>` means "compare the
    /// sha512 of the presented key"; a weak key (`admin`, `123`, ...) is replaced by a random
    /// one, as WAHA does.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Accepts every call without a key (the default; `WAHA_NO_API_KEY=true`).
    pub fn no_api_key(mut self) -> Self {
        self.api_key = None;
        self
    }

    /// The engine reported by the server and in webhooks.
    pub fn engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// `WAHA_WORKER_ID`: reported in `/api/server/status` and as `assignedWorker`.
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = id.into();
        self
    }

    /// The version reported (default `2026.6.1`).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// The tier reported (default `PLUS`). `CORE` also makes `/health` answer 422, as old Core
    /// servers did.
    pub fn tier(mut self, tier: impl Into<String>) -> Self {
        self.tier = tier.into();
        self
    }

    /// Faults in force from the start.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Keeps sessions in this directory (a container volume): they come back after a restart.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// `WHATSAPP_RESTART_ALL_SESSIONS`: at start, start every restored session, not only those
    /// that were running.
    pub fn restart_all_sessions(mut self, yes: bool) -> Self {
        self.restart_all = yes;
        self
    }

    /// `WAHA_AUTO_START_DELAY_SECONDS`: delay between the starts of restored sessions
    /// (simulated time).
    pub fn auto_start_delay(mut self, delay: Duration) -> Self {
        self.auto_start_delay = delay;
        self
    }

    /// Scales every simulated wait (see [`TimeScale`]); tests use e.g. `0.01`.
    pub fn time_scale(mut self, factor: f64) -> Self {
        self.time_scale = factor;
        self
    }

    /// QR, start-up and ack timings.
    pub fn timings(mut self, timings: Timings) -> Self {
        self.timings = timings;
        self
    }

    /// The listening address (default `127.0.0.1:0`, a free port).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// What a crash does (default: the in-process server stops).
    pub fn crash_behaviour(mut self, crash: CrashBehaviour) -> Self {
        self.crash = crash;
        self
    }

    /// Time-out of one webhook HTTP request (wall-clock, default 10 s).
    pub fn webhook_timeout(mut self, timeout: Duration) -> Self {
        self.webhook_timeout = timeout;
        self
    }

    /// Whether a starting session first opens a TCP connection to the proxy its config names,
    /// and goes `FAILED` when that fails, as WAHA's engine cannot connect through a dead proxy
    /// (default `false`: the simulator never dials out, so tests may name proxies on addresses
    /// nothing answers). Only a connection is opened (no `CONNECT`, no credentials sent), with a
    /// 1 s time-out that holds up the simulator's timers meanwhile: name proxies that answer or
    /// refuse at once (loopback ones).
    pub fn dial_proxies(mut self, dial: bool) -> Self {
        self.dial_proxies = dial;
        self
    }

    /// Validates the settings, loads the state directory, binds the socket and starts serving
    /// on the simulator's own thread. Returns at once: with a start-up delay fault the port is
    /// reserved but refuses connections until the delay has passed.
    pub async fn start(self) -> Result<RunningSimulator, SimError> {
        let time_scale = TimeScale::new(self.time_scale)?;
        self.faults.validate()?;
        let mut faults = self.faults.clone();
        let seed = *faults.seed.get_or_insert_with(|| fastrand::u64(..));
        let key = match &self.api_key {
            None => KeyCheck::Disabled,
            Some(raw) => KeyCheck::from_setting("api_key", raw)?,
        };
        let (persistence, restored) = match &self.state_dir {
            Some(dir) => {
                let (p, restored) = Persistence::open(dir)?;
                (Some(p), restored)
            }
            None => (None, Vec::new()),
        };
        let bind_error = |source| SimError::Bind {
            addr: self.bind,
            source,
        };
        let socket = if self.bind.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(bind_error)?;
        socket.set_reuseaddr(true).map_err(bind_error)?;
        socket.bind(self.bind).map_err(bind_error)?;
        let addr = socket.local_addr().map_err(bind_error)?;
        // Without a start-up delay, listen now: connections queue until the thread accepts them.
        let socket = if self.faults.startup_delay.is_zero() {
            let listener = socket.listen(1024).map_err(bind_error)?;
            PendingSocket::Listening(listener.into_std().map_err(bind_error)?)
        } else {
            PendingSocket::Bound(socket)
        };

        let environment = Environment {
            version: self.version.clone(),
            engine: self.engine.as_str(),
            tier: self.tier.clone(),
            browser: self.browser.clone(),
        };
        let settings = Settings {
            key,
            engine: self.engine,
            worker_id: self.worker_id.clone(),
            time_scale,
            timings: self.timings.clone(),
            auto_start_delay: self.auto_start_delay,
            crash: self.crash,
            webhook_timeout: self.webhook_timeout,
            dial_proxies: self.dial_proxies,
        };
        let (state, events) = SimState::new(settings, environment, faults, persistence);
        let state = Arc::new(state);
        let mut autostart = Vec::new();
        for session in restored {
            if session.running || self.restart_all {
                autostart.push(session.name.clone());
            }
            state.restore(session.name, session.config, session.me);
        }
        let startup_delay = self.faults.startup_delay;
        if startup_delay.is_zero() {
            state.set_booting(Some(self.faults.booting));
        }
        let thread_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name(format!("waha-sim-{}", addr.port()))
            .spawn(move || run_thread(thread_state, events, socket, startup_delay, autostart))
            .map_err(SimError::Runtime)?;
        let url = if addr.ip().is_unspecified() {
            format!("http://127.0.0.1:{}", addr.port())
        } else {
            format!("http://{addr}")
        };
        tracing::info!(%url, seed, "waha-sim started (replay its webhook faults with this seed)");
        Ok(RunningSimulator {
            url,
            addr,
            control: SimulatorControl { state },
            thread: Some(thread),
        })
    }
}

/// A simulator serving on its own thread. Dropping it shuts it down in the background; call
/// [`RunningSimulator::shutdown`] to wait for that.
#[derive(Debug)]
pub struct RunningSimulator {
    url: String,
    addr: SocketAddr,
    control: SimulatorControl,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningSimulator {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The control handle.
    pub fn control(&self) -> &SimulatorControl {
        &self.control
    }

    /// Stops accepting, lets open requests finish (up to 2 s), writes pending state and stops
    /// the thread. After a crash it only waits for the thread.
    pub async fn shutdown(mut self) {
        self.control.state.signal(RunSignal::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        self.control.state.signal(RunSignal::Shutdown);
    }
}

fn run_thread(
    state: Arc<SimState>,
    events: tokio::sync::mpsc::UnboundedReceiver<crate::webhook::OutgoingEvent>,
    socket: PendingSocket,
    startup_delay: Duration,
    autostart: Vec<String>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot build the simulator runtime");
            state.signal(RunSignal::Crash);
            return;
        }
    };
    runtime.block_on(async {
        tokio::spawn(crate::scheduler::run(Arc::clone(&state)));
        tokio::spawn(crate::webhook::run_dispatcher(Arc::clone(&state), events));
        tokio::spawn(crate::persistence::run(Arc::clone(&state)));
        let server = tokio::spawn(serve(Arc::clone(&state), socket, startup_delay, autostart));
        let mut signal = state.run_signal();
        let outcome = match signal.wait_for(|s| *s != RunSignal::Run).await {
            Ok(signal) => *signal,
            Err(_) => RunSignal::Shutdown,
        };
        if outcome == RunSignal::Shutdown {
            let _ = tokio::time::timeout(GRACE, server).await;
            let flush_state = Arc::clone(&state);
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(p) = flush_state.persistence.as_ref() {
                    p.flush(&flush_state);
                }
            })
            .await;
            tracing::info!("waha-sim stopped");
        } else {
            tracing::warn!("waha-sim crashed");
        }
    });
    // Drops every task still alive (connections included): abrupt after a crash.
    runtime.shutdown_background();
}

async fn serve(
    state: Arc<SimState>,
    socket: PendingSocket,
    startup_delay: Duration,
    autostart: Vec<String>,
) {
    let mut signal = state.run_signal();
    let delay = state.settings.scaled(startup_delay);
    if !delay.is_zero() {
        let stopped = async { signal.wait_for(|s| *s != RunSignal::Run).await.map(|_| ()) };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stopped => return,
        }
    }
    let listener = match socket {
        PendingSocket::Listening(listener) => tokio::net::TcpListener::from_std(listener),
        PendingSocket::Bound(socket) => socket.listen(1024),
    };
    let listener = match listener {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "cannot listen");
            state.signal(RunSignal::Crash);
            return;
        }
    };
    if !delay.is_zero() {
        state.set_booting(Some(state.faults().booting));
    }
    let stagger = state.settings.scaled(state.settings.auto_start_delay);
    for (i, session) in autostart.into_iter().enumerate() {
        state.scheduler.schedule(
            stagger.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX)),
            Timer::AutoStart { session },
        );
    }
    let app = crate::server::router(Arc::clone(&state));
    let shutdown = async move {
        let _ = signal.wait_for(|s| *s != RunSignal::Run).await.map(|_| ());
    };
    // The peer's address reaches the call log.
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(%error, "server error");
    }
}
