//! The status of a WAHA session.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The status of a WAHA session, as WAHA spells it on the wire.
///
/// A status this crate does not know yet (newer servers add some) is kept as
/// [`SessionStatus::Other`] instead of failing to decode.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionStatus {
    /// `STOPPED`: the session exists and is not running.
    Stopped,
    /// `STARTING`: the engine is starting.
    Starting,
    /// `SCAN_QR_CODE`: waiting for the phone to scan the QR code (re-emitted at every refresh).
    ScanQrCode,
    /// `WORKING`: logged in and connected.
    Working,
    /// `FAILED`: the engine failed; restart the session.
    Failed,
    /// `PASSKEY_REQUIRED` (newer servers).
    PasskeyRequired,
    /// `PASSKEY_CONFIRMATION_REQUIRED` (newer servers).
    PasskeyConfirmationRequired,
    /// Any other status, verbatim.
    Other(String),
}

impl SessionStatus {
    /// The wire spelling, e.g. `SCAN_QR_CODE`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Stopped => "STOPPED",
            Self::Starting => "STARTING",
            Self::ScanQrCode => "SCAN_QR_CODE",
            Self::Working => "WORKING",
            Self::Failed => "FAILED",
            Self::PasskeyRequired => "PASSKEY_REQUIRED",
            Self::PasskeyConfirmationRequired => "PASSKEY_CONFIRMATION_REQUIRED",
            Self::Other(other) => other,
        }
    }

    /// Whether the engine is running (starting, waiting for a scan, working or asking for a
    /// passkey).
    pub fn is_running(&self) -> bool {
        matches!(
            self,
            Self::Starting
                | Self::ScanQrCode
                | Self::Working
                | Self::PasskeyRequired
                | Self::PasskeyConfirmationRequired
        )
    }
}

impl From<&str> for SessionStatus {
    fn from(value: &str) -> Self {
        match value {
            "STOPPED" => Self::Stopped,
            "STARTING" => Self::Starting,
            "SCAN_QR_CODE" => Self::ScanQrCode,
            "WORKING" => Self::Working,
            "FAILED" => Self::Failed,
            "PASSKEY_REQUIRED" => Self::PasskeyRequired,
            "PASSKEY_CONFIRMATION_REQUIRED" => Self::PasskeyConfirmationRequired,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl From<String> for SessionStatus {
    fn from(value: String) -> Self {
        match Self::from(value.as_str()) {
            Self::Other(_) => Self::Other(value),
            known => known,
        }
    }
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for SessionStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SessionStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_statuses_round_trip() {
        for wire in [
            "STOPPED",
            "SCAN_QR_CODE",
            "PASSKEY_REQUIRED",
            "SOMETHING_NEW",
        ] {
            let status: SessionStatus = serde_json::from_str(&format!("\"{wire}\"")).unwrap();
            assert_eq!(status.as_str(), wire);
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{wire}\"")
            );
        }
        assert_eq!(
            SessionStatus::from("SOMETHING_NEW"),
            SessionStatus::Other("SOMETHING_NEW".into())
        );
        assert!(SessionStatus::ScanQrCode.is_running());
        assert!(!SessionStatus::Stopped.is_running());
    }
}
