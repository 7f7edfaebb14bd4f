//! The QR code and pairing code forms.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::WahaError;

/// The QR code as base64 JSON (`GET /api/{session}/auth/qr` with `Accept: application/json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QrImage {
    /// The image type, `image/png`.
    pub mimetype: String,
    /// The image, base64.
    pub data: String,
}

impl QrImage {
    /// The image bytes.
    ///
    /// # Errors
    /// [`WahaError::Decode`] (path `data`) when `data` is not valid base64.
    pub fn to_bytes(&self) -> Result<Vec<u8>, WahaError> {
        base64::engine::general_purpose::STANDARD
            .decode(self.data.trim())
            .map_err(|err| WahaError::Decode {
                operation: "qr_base64",
                path: "data".into(),
                message: err.to_string(),
            })
    }
}

/// The QR code's raw text (`GET /api/{session}/auth/qr?format=raw`), to render yourself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QrValue {
    /// The text encoded in the QR code.
    pub value: String,
}

/// A pairing code to type on the phone instead of scanning a QR code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairingCode {
    /// The code, e.g. `ABCD-ABCD`.
    pub code: String,
}

/// The body of `POST /api/{session}/auth/request-code`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PairingCodeRequest<'a> {
    pub(crate) phone_number: &'a str,
}
