//! What the simulator keeps per session (kept small: thousands of sessions must stay cheap).

use std::sync::Arc;

use crate::session::{Me, SessionStatus};
use crate::wire::SessionConfig;

/// One session's state.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) status: SessionStatus,
    pub(crate) config: Option<Arc<SessionConfig>>,
    pub(crate) me: Option<Me>,
    /// The current QR value while in SCAN_QR_CODE.
    pub(crate) qr: Option<Box<str>>,
    pub(crate) qr_refreshes: u8,
    /// The silent-WORKING fault: WORKING, yet nothing is delivered and sends do not progress.
    /// Ends at the next status change.
    pub(crate) silent: bool,
    /// Bumped at every transition; timers carry the generation they were set for and are
    /// ignored when it no longer matches.
    pub(crate) generation: u32,
}

impl Session {
    pub(crate) fn new(config: Option<SessionConfig>, me: Option<Me>) -> Self {
        Self {
            status: SessionStatus::Stopped,
            config: config.map(Arc::new),
            me,
            qr: None,
            qr_refreshes: 0,
            silent: false,
            generation: 0,
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        self.status != SessionStatus::Stopped
    }

    pub(crate) fn view(&self, name: &str) -> SessionView {
        SessionView {
            name: name.to_owned(),
            status: self.status,
            config: self.config.clone(),
            me: self.me.clone(),
        }
    }
}

/// A snapshot of a session, taken under the lock and answered outside it.
#[derive(Clone, Debug)]
pub(crate) struct SessionView {
    pub(crate) name: String,
    pub(crate) status: SessionStatus,
    pub(crate) config: Option<Arc<SessionConfig>>,
    pub(crate) me: Option<Me>,
}
