//! Session statuses, the logged-in account and message ack levels.

use serde::{Deserialize, Serialize};

/// A session's status, as WAHA names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SessionStatus {
    /// Not running.
    Stopped,
    /// Starting the engine (or reconnecting after a disconnect).
    Starting,
    /// Waiting for a QR scan or a pairing code; re-entered at every QR refresh.
    ScanQrCode,
    /// Logged in and connected.
    Working,
    /// Failed; stays so until restarted (WEBJS restarts by itself after most disconnects).
    Failed,
}

impl SessionStatus {
    /// WAHA's spelling, e.g. `SCAN_QR_CODE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "STOPPED",
            Self::Starting => "STARTING",
            Self::ScanQrCode => "SCAN_QR_CODE",
            Self::Working => "WORKING",
            Self::Failed => "FAILED",
        }
    }
}

impl std::fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The WhatsApp account a session is logged in as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    /// `<digits>@c.us`.
    pub id: String,
    /// The profile name.
    #[serde(rename = "pushName")]
    pub push_name: String,
}

impl Me {
    /// An account for a phone number (digits only), e.g. `Me::phone("5511999990001", "Ana")`.
    pub fn phone(digits: &str, push_name: &str) -> Self {
        Self {
            id: format!("{digits}@c.us"),
            push_name: push_name.to_owned(),
        }
    }
}

/// A message acknowledgement level (`message.ack` webhooks carry it as `ack` and `ackName`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AckLevel {
    /// -1: sending failed.
    Error,
    /// 0: not yet sent.
    Pending,
    /// 1: reached WhatsApp's server.
    Server,
    /// 2: reached the recipient's device.
    Device,
    /// 3: read.
    Read,
    /// 4: played (voice messages).
    Played,
}

impl AckLevel {
    /// WAHA's number for it.
    pub fn code(self) -> i8 {
        match self {
            Self::Error => -1,
            Self::Pending => 0,
            Self::Server => 1,
            Self::Device => 2,
            Self::Read => 3,
            Self::Played => 4,
        }
    }

    /// WAHA's name for it (`ackName`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Error => "ERROR",
            Self::Pending => "PENDING",
            Self::Server => "SERVER",
            Self::Device => "DEVICE",
            Self::Read => "READ",
            Self::Played => "PLAYED",
        }
    }

    /// Parses a number (`3`) or a name (`"READ"`, any case).
    pub fn parse(text: &str) -> Option<Self> {
        let all = [
            Self::Error,
            Self::Pending,
            Self::Server,
            Self::Device,
            Self::Read,
            Self::Played,
        ];
        all.into_iter().find(|level| {
            level.name().eq_ignore_ascii_case(text.trim())
                || level.code().to_string() == text.trim()
        })
    }
}
