//! One timer queue for the whole simulator (no task per session): QR refreshes, start-up
//! completions, restarts after a disconnect, restored-session auto-starts and automatic acks.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::session::AckLevel;
use crate::state::SimState;
use crate::time_scale::deadline_after;

/// What a timer does when it fires.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// STARTING is over.
    Started { session: String, generation: u32 },
    /// The QR code expired.
    QrExpired { session: String, generation: u32 },
    /// A session FAILED by a disconnect is started again (WEBJS).
    Restart { session: String, generation: u32 },
    /// Start a session restored from the state directory.
    AutoStart { session: String },
    /// Acknowledge a sent message.
    Ack { message_id: String, level: AckLevel },
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    at: Instant,
    seq: u64,
    timer: Timer,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A min-heap of timers and one task that fires them.
#[derive(Debug, Default)]
pub(crate) struct Scheduler {
    heap: Mutex<BinaryHeap<Reverse<Entry>>>,
    seq: AtomicU64,
    wake: Notify,
}

impl Scheduler {
    /// Fires `timer` after `delay` (wall-clock; callers scale first).
    pub(crate) fn schedule(&self, delay: Duration, timer: Timer) {
        let entry = Entry {
            at: deadline_after(delay),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            timer,
        };
        self.heap
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Reverse(entry));
        self.wake.notify_one();
    }

    /// Timers still pending.
    pub(crate) fn pending(&self) -> usize {
        self.heap.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn take_due(&self, now: Instant) -> (Vec<Timer>, Option<Instant>) {
        let mut heap = self.heap.lock().unwrap_or_else(|p| p.into_inner());
        let mut due = Vec::new();
        while heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
            if let Some(Reverse(entry)) = heap.pop() {
                due.push(entry.timer);
            }
        }
        (due, heap.peek().map(|Reverse(e)| e.at))
    }
}

/// Fires timers until the simulator stops.
pub(crate) async fn run(state: Arc<SimState>) {
    loop {
        let (due, next) = state.scheduler.take_due(Instant::now());
        for timer in due {
            state.on_timer(timer);
        }
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = state.scheduler.wake.notified() => {}
                }
            }
            None => state.scheduler.wake.notified().await,
        }
    }
}
