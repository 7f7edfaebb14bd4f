//! The one start-up deadline of an `ensure`: fixed when it begins, bounding every step.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::Error;

/// Started when `ensure` begins; key lookup, listing, creating, starting and every readiness
/// poll run under it.
pub(super) struct Deadline {
    started: Instant,
    at: Instant,
    total: Duration,
}

impl Deadline {
    pub(super) fn new(total: Duration) -> Self {
        let started = Instant::now();
        Self {
            started,
            at: started + total,
            total,
        }
    }

    pub(super) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub(super) fn left(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    pub(super) fn passed(&self) -> bool {
        Instant::now() >= self.at
    }

    /// The timeout error for `container`, naming what was last waited for.
    pub(super) fn timeout(&self, container: &str, last_probe_error: String) -> Error {
        Error::StartupTimeout {
            container: container.to_owned(),
            elapsed: self.elapsed(),
            deadline: self.total,
            last_probe_error,
        }
    }

    /// Runs one step (a runtime or key-store call) with the time left; a step still running at
    /// the deadline is abandoned as [`Error::StartupTimeout`].
    pub(super) async fn run<T>(
        &self,
        container: &str,
        step: &str,
        future: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.left(), future).await {
            Ok(result) => result,
            Err(_) => Err(self.timeout(container, format!("{step} did not finish in time"))),
        }
    }
}
