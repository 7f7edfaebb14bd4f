//! The simulator's shared state. Every method here is synchronous and cheap, so it can be
//! called from the simulator's own runtime and from a test's runtime alike.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};

use crate::faults::Faults;
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
    booting_until: Mutex<Option<Instant>>,
    pub(crate) sessions: Mutex<HashMap<String, Session>>,
    pub(crate) messages: Mutex<MessageLog>,
    pub(crate) scheduler: Scheduler,
    outbox: mpsc::UnboundedSender<OutgoingEvent>,
    status_changes: watch::Sender<u64>,
    pub(crate) persistence: Option<Persistence>,
    pub(crate) started_at_ms: u64,
    pub(crate) webhook_counters: WebhookCounters,
    run_signal: watch::Sender<RunSignal>,
}

impl SimState {
    pub(crate) fn new(
        settings: Settings,
        environment: Environment,
        faults: Faults,
        persistence: Option<Persistence>,
    ) -> (Self, mpsc::UnboundedReceiver<OutgoingEvent>) {
        let (outbox, events) = mpsc::unbounded_channel();
        let state = Self {
            settings,
            environment,
            faults: RwLock::new(faults),
            booting_until: Mutex::new(None),
            sessions: Mutex::new(HashMap::new()),
            messages: Mutex::new(MessageLog::default()),
            scheduler: Scheduler::default(),
            outbox,
            status_changes: watch::Sender::new(0),
            persistence,
            started_at_ms: now_ms(),
            webhook_counters: WebhookCounters::default(),
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

    pub(crate) fn set_faults(&self, faults: Faults) {
        *self.faults.write().unwrap_or_else(|p| p.into_inner()) = faults;
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
