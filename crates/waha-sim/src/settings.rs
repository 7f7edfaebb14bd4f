//! Plain configuration data: the engine, timings and what a crash does.

use std::time::Duration;

use crate::api_key::KeyCheck;
use crate::time_scale::TimeScale;

/// The WhatsApp engine the simulated server reports (`WHATSAPP_DEFAULT_ENGINE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// whatsapp-web.js in Chromium (WAHA's default).
    #[default]
    Webjs,
    /// Baileys, no browser.
    Noweb,
    /// whatsmeow, no browser.
    Gows,
}

impl Engine {
    /// WAHA's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webjs => "WEBJS",
            Self::Noweb => "NOWEB",
            Self::Gows => "GOWS",
        }
    }

    /// Parses `WEBJS`, `NOWEB` or `GOWS` (any case).
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Webjs, Self::Noweb, Self::Gows]
            .into_iter()
            .find(|e| e.as_str().eq_ignore_ascii_case(text.trim()))
    }
}

/// How long simulated things take, in simulated time (see [`TimeScale`]). Defaults follow
/// WAHA's observed behaviour.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Timings {
    /// STARTING → SCAN_QR_CODE (or → WORKING for a logged-in session, also after a
    /// disconnect). Default 1 s.
    pub starting: Duration,
    /// Lifetime of the first QR code. Default 60 s.
    pub first_qr: Duration,
    /// Lifetime of each later QR code. Default 20 s.
    pub qr_refresh: Duration,
    /// QR refreshes before the session gives up and goes FAILED. Default 5.
    pub qr_refreshes: u8,
    /// How long the QR and pairing-code routes wait for SCAN_QR_CODE before answering 422.
    /// Default 5 s.
    pub qr_wait: Duration,
    /// Interval of the automatic acks after `sendText` (SERVER, then DEVICE, then READ, one
    /// interval apart); `None` leaves acks to the control API. Default 1 s.
    pub ack_interval: Option<Duration>,
    /// How long a reordered webhook delivery is held back. Default 500 ms.
    pub reorder_delay: Duration,
    /// How long an engine waits before it starts again after a disconnect (see
    /// [`DisconnectReason`](crate::DisconnectReason)): NOWEB's fixed restart delay, the first
    /// step of GOWS's reconnect, WEBJS's restart after a transient FAILED. Default 2 s.
    pub restart_delay: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            starting: Duration::from_secs(1),
            first_qr: Duration::from_secs(60),
            qr_refresh: Duration::from_secs(20),
            qr_refreshes: 5,
            qr_wait: Duration::from_secs(5),
            ack_interval: Some(Duration::from_secs(1)),
            reorder_delay: Duration::from_millis(500),
            restart_delay: Duration::from_secs(2),
        }
    }
}

/// What a crash (control API `crash`) does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CrashBehaviour {
    /// In-process: the server stops abruptly (open connections are cut, nothing is flushed).
    #[default]
    StopServer,
    /// The whole process exits with status 70 (what the binary does).
    ExitProcess,
}

/// Everything a running simulator was configured with.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) key: KeyCheck,
    pub(crate) engine: Engine,
    pub(crate) worker_id: String,
    pub(crate) time_scale: TimeScale,
    pub(crate) timings: Timings,
    pub(crate) auto_start_delay: Duration,
    pub(crate) crash: CrashBehaviour,
    pub(crate) webhook_timeout: Duration,
    /// [`SimulatorBuilder::dial_proxies`](crate::SimulatorBuilder::dial_proxies).
    pub(crate) dial_proxies: bool,
}

impl Settings {
    /// Scales a simulated duration to wall-clock time.
    pub(crate) fn scaled(&self, d: Duration) -> Duration {
        self.time_scale.scale(d)
    }
}
