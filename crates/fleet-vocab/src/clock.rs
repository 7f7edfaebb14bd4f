//! Injectable time: every crate of the workspace reads "now" through [`Clock`].

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// A source of the current time. Production code uses [`SystemClock`]; tests inject a
/// [`ManualClock`] (or, with the `mock` feature, `MockClock`).
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to. Clones share the same time, so a test keeps one
/// clone and hands the other to the code under test.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use fleet_vocab::{Clock, ManualClock};
/// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(86_400));
/// let shared = clock.clone();
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(shared.now(), UNIX_EPOCH + Duration::from_secs(86_405));
/// ```
#[derive(Clone)]
pub struct ManualClock {
    now: Arc<Mutex<SystemTime>>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: SystemTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) += by;
    }

    /// Sets the clock. It may go backwards: consumers must tolerate that, as they must with a
    /// wall clock that is corrected.
    pub fn set(&self, to: SystemTime) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn clones_share_time_and_set_may_go_back() {
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(100));
        let other = clock.clone();
        other.advance(Duration::from_secs(1));
        assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_secs(101));
        clock.set(UNIX_EPOCH);
        assert_eq!(other.now(), UNIX_EPOCH);
        let shared: Arc<dyn Clock> = Arc::new(other);
        assert_eq!(shared.now(), UNIX_EPOCH);
    }
}
