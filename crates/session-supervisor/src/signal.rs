//! Signals: classified facts about a chip's session that any replica appends (`observe`) and
//! the owner folds into the record. A signal only triggers a reconcile; the reconcile reads
//! WAHA.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use waha_client::SessionStatus;

use crate::policy::{Disconnect, Reason};

/// What a signal says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "signal", rename_all = "snake_case")]
pub enum SignalBody {
    /// The engine reported a disconnect.
    Disconnect {
        /// Why.
        reason: Reason,
        /// When a temporary ban ends, when the engine said.
        ban_expires: Option<SystemTime>,
    },
    /// WAHA reported a session status (`session.status`).
    Status {
        /// The status.
        status: SessionStatus,
    },
    /// Any other event: the session is alive (silent-death detection).
    Activity,
}

impl SignalBody {
    /// The signal of a disconnect reported at `at`.
    pub fn disconnect(found: Disconnect, at: SystemTime) -> Self {
        SignalBody::Disconnect {
            reason: found.reason,
            ban_expires: found.ban_lasts.and_then(|lasts| at.checked_add(lasts)),
        }
    }
}

/// A stored signal: numbered per chip (monotonic, never reused while the chip exists).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    /// The chip's signal number.
    pub seq: u64,
    /// When it was observed.
    pub at: SystemTime,
    /// What it says.
    pub body: SignalBody,
}
