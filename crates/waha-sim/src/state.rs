//! The simulator's shared state. Every method here is synchronous and cheap, so it can be
//! called from the simulator's own runtime and from a test's runtime alike.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};

use crate::calls::CallLog;
use crate::faults::{DeliveryPlan, Faults};
use crate::persistence::Persistence;
use crate::scheduler::Scheduler;
use crate::session::Session;
use crate::settings::{CrashBehaviour, Settings};
use crate::time_scale::deadline_after;
use crate::webhook::{OutgoingEvent, WebhookCounters};
use crate::wire::Environment;

/// Sent messages remembered for acks (oldest forgotten first).
const MESSAGE_MEMORY: usize = 100_000;

/// What the simulator's thread should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunSignal {
    Run,
    Shutdown,
    Crash,
}

/// Where a sent message went.
#[derive(Debug)]
pub(crate) struct SentMessage {
    pub(crate) session: String,
    pub(crate) from: String,
    pub(crate) to: String,
}

/// Sent messages, bounded.
#[derive(Debug, Default)]
pub(crate) struct MessageLog {
    by_id: HashMap<String, SentMessage>,
    order: VecDeque<String>,
}

impl MessageLog {
    pub(crate) fn insert(&mut self, id: String, message: SentMessage) {
        if self.order.len() >= MESSAGE_MEMORY
            && let Some(old) = self.order.pop_front()
        {
            self.by_id.remove(&old);
        }
        self.order.push_back(id.clone());
        self.by_id.insert(id, message);
    }

    pub(crate) fn get(&self, id: &str) -> Option<&SentMessage> {
        self.by_id.get(id)
    }
}

/// Everything a running simulator shares between its HTTP handlers, its timers, its webhook
/// dispatcher and the control handle.
pub(crate) struct SimState {
    pub(crate) settings: Settings,
    pub(crate) environment: Environment,
    faults: RwLock<Faults>,
    /// The webhook faults' random source (seeded from `Faults::seed`).
    webhook_rng: Mutex<fastrand::Rng>,
    booting_until: Mutex<Option<Instant>>,
    pub(crate) sessions: Mutex<HashMap<String, Session>>,
    pub(crate) messages: Mutex<MessageLog>,
    pub(crate) scheduler: Scheduler,
    outbox: mpsc::UnboundedSender<OutgoingEvent>,
    status_changes: watch::Sender<u64>,
    pub(crate) persistence: Option<Persistence>,
    pub(crate) started_at_ms: u64,
    /// When the simulator started (simulated time is measured from here).
    pub(crate) started: Instant,
    pub(crate) webhook_counters: WebhookCounters,
    /// The mutating calls received.
    pub(crate) calls: CallLog,
    run_signal: watch::Sender<RunSignal>,
}

impl SimState {
    /// A new state; `faults.seed` should be set (the simulator picks one when the caller did
    /// not).
    pub(crate) fn new(
        settings: Settings,
        environment: Environment,
        faults: Faults,
        persistence: Option<Persistence>,
    ) -> (Self, mpsc::UnboundedReceiver<OutgoingEvent>) {
        let (outbox, events) = mpsc::unbounded_channel();
        let rng = fastrand::Rng::with_seed(faults.seed.unwrap_or_default());
        let state = Self {
            settings,
            environment,
            faults: RwLock::new(faults),
            webhook_rng: Mutex::new(rng),
            booting_until: Mutex::new(None),
            sessions: Mutex::new(HashMap::new()),
            messages: Mutex::new(MessageLog::default()),
            scheduler: Scheduler::default(),
            outbox,
            status_changes: watch::Sender::new(0),
            persistence,
            started_at_ms: now_ms(),
            started: Instant::now(),
            webhook_counters: WebhookCounters::default(),
            calls: CallLog::default(),
            run_signal: watch::Sender::new(RunSignal::Run),
        };
        (state, events)
    }

    pub(crate) fn sessions(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn messages(&self) -> MutexGuard<'_, MessageLog> {
        self.messages.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn faults(&self) -> Faults {
        self.faults
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the faults. Faults that carry a seed restart the webhook faults' random
    /// sequence from it; faults without one keep the sequence (and the seed reported).
    pub(crate) fn set_faults(&self, mut faults: Faults) {
        let mut current = self.faults.write().unwrap_or_else(|p| p.into_inner());
        match faults.seed {
            Some(seed) => {
                *self.webhook_rng.lock().unwrap_or_else(|p| p.into_inner()) =
                    fastrand::Rng::with_seed(seed);
            }
            None => faults.seed = current.seed,
        }
        *current = faults;
    }

    /// Draws the fate of one webhook delivery under `faults` (those in force when its event
    /// happened); `tries` is how many attempts its webhook allows.
    pub(crate) fn plan_delivery(&self, faults: &Faults, tries: u32) -> DeliveryPlan {
        let mut rng = self.webhook_rng.lock().unwrap_or_else(|p| p.into_inner());
        faults.plan_delivery(&mut rng, tries)
    }

    /// Milliseconds of simulated time since the simulator started (wall-clock time divided by
    /// the time scale).
    pub(crate) fn simulated_ms(&self) -> u64 {
        let seconds = self.started.elapsed().as_secs_f64() / self.settings.time_scale.factor();
        // `as` saturates (and maps NaN to 0).
        (seconds * 1000.0) as u64
    }

    /// Starts (or with `None`, ends) a booting window of `window` simulated time.
    pub(crate) fn set_booting(&self, window: Option<Duration>) {
        let until = window
            .filter(|w| !w.is_zero())
            .map(|w| deadline_after(self.settings.scaled(w)));
        *self.booting_until.lock().unwrap_or_else(|p| p.into_inner()) = until;
    }

    pub(crate) fn is_booting(&self) -> bool {
        self.booting_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    /// Queues an event for the dispatcher (dropped quietly once the simulator has stopped).
    pub(crate) fn publish(&self, event: OutgoingEvent) {
        let _ = self.outbox.send(event);
    }

    /// Tells waiters (QR route, `wait_for_status`) that some session changed.
    pub(crate) fn notify_status_change(&self) {
        self.status_changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn subscribe_status_changes(&self) -> watch::Receiver<u64> {
        self.status_changes.subscribe()
    }

    pub(crate) fn mark_dirty(&self, name: &str) {
        if let Some(persistence) = &self.persistence {
            persistence.mark(name);
        }
    }

    pub(crate) fn signal(&self, signal: RunSignal) {
        self.run_signal.send_if_modified(|current| {
            if *current == RunSignal::Run {
                *current = signal;
                true
            } else {
                false
            }
        });
    }

    pub(crate) fn run_signal(&self) -> watch::Receiver<RunSignal> {
        self.run_signal.subscribe()
    }

    pub(crate) fn is_running(&self) -> bool {
        *self.run_signal.borrow() == RunSignal::Run
    }

    /// The crash fault.
    pub(crate) fn crash(&self) {
        tracing::warn!("crash requested through the control API");
        match self.settings.crash {
            CrashBehaviour::ExitProcess => std::process::exit(70),
            CrashBehaviour::StopServer => self.signal(RunSignal::Crash),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `ms` since the Unix epoch as ISO 8601 in UTC with milliseconds, the way JavaScript's
/// `Date.toISOString` writes it (`2026-06-01T12:00:00.000Z`).
pub(crate) fn iso8601(ms: u64) -> String {
    let seconds = ms / 1000;
    let (hour, minute, second) = (seconds / 3600 % 24, seconds / 60 % 60, seconds % 60);
    // Howard Hinnant's `civil_from_days`, for days since 1970-01-01.
    let z = i64::try_from(seconds / 86_400).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{:03}Z",
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::iso8601;

    #[test]
    fn iso8601_matches_javascript() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        // 2000-02-29 (a leap day in a century year) and 2024-03-01.
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(iso8601(1_709_251_200_000), "2024-03-01T00:00:00.000Z");
    }
}
