//! `WahaApi` for [`WahaClient`]: one short method per call.

use async_trait::async_trait;

use super::operation::Operation;
use super::path::{RequestPath, check_session_name};
use super::{Request, WahaClient};
use crate::api::WahaApi;
use crate::error::WahaError;
use crate::model::{
    ChatRef, HealthBody, HealthSource, Me, NewSession, PairingCode, PairingCodeRequest, QrImage,
    QrValue, SeenReceipt, SentMessage, ServerHealth, ServerStatus, ServerVersion, SessionConfig,
    SessionInfo, SessionUpdate, TextMessage,
};
use crate::response::{decode, decode_optional};

const SESSIONS: &str = "api/sessions";
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The forms `GET /api/{session}/auth/qr` answers in.
#[derive(Clone, Copy)]
enum QrForm {
    /// `image/png` bytes.
    Png,
    /// `{"mimetype", "data"}` (base64), asked for with `Accept: application/json`.
    Base64,
    /// `{"value"}`, asked for with `?format=raw`.
    Raw,
}

impl QrForm {
    fn operation(self) -> Operation {
        match self {
            Self::Png => Operation::QrPng,
            Self::Base64 => Operation::QrBase64,
            Self::Raw => Operation::QrRaw,
        }
    }
}

/// Whether an error is the 422 that old Core gives for `/health` ("available only in Plus").
fn is_unprocessable(err: &WahaError) -> bool {
    matches!(err, WahaError::Api { status: 422, .. })
}

impl WahaClient {
    async fn session_call(
        &self,
        operation: Operation,
        name: &str,
        suffix: &'static str,
    ) -> Result<bytes::Bytes, WahaError> {
        let request =
            Request::new(operation, RequestPath::session(SESSIONS, name, suffix)?).session(name);
        self.execute(&request).await
    }

    async fn qr(&self, form: QrForm, name: &str) -> Result<bytes::Bytes, WahaError> {
        let request = Request::new(
            form.operation(),
            RequestPath::session("api", name, "auth/qr")?,
        )
        .session(name);
        let request = match form {
            QrForm::Png => request.accept("image/png"),
            // `Accept: application/json` (exactly), the request's default.
            QrForm::Base64 => request,
            QrForm::Raw => request.query("format=raw"),
        };
        self.execute(&request).await
    }

    async fn chat_call<T: serde::Serialize + Sync>(
        &self,
        operation: Operation,
        path: &'static str,
        session: &str,
        body: &T,
    ) -> Result<bytes::Bytes, WahaError> {
        check_session_name(session)?;
        let request = Request::new(operation, RequestPath::fixed(path))
            .session(session)
            .json(body)?;
        self.execute(&request).await
    }
}

#[async_trait]
impl WahaApi for WahaClient {
    async fn ping(&self) -> Result<(), WahaError> {
        self.execute(&Request::new(Operation::Ping, RequestPath::fixed("ping")))
            .await
            .map(drop)
    }

    async fn health(&self) -> Result<ServerHealth, WahaError> {
        let request = Request::new(Operation::Health, RequestPath::fixed("health"));
        match self.execute(&request).await {
            Ok(body) => {
                let health: Option<HealthBody> = decode_optional("health", &body)?;
                let (status, details) = health.map_or_else(
                    || ("ok".to_owned(), Default::default()),
                    |health| {
                        (
                            health.status.unwrap_or_else(|| "ok".to_owned()),
                            health.details,
                        )
                    },
                );
                Ok(ServerHealth {
                    source: HealthSource::Health,
                    status,
                    details,
                })
            }
            Err(err) if is_unprocessable(&err) => {
                self.ping().await?;
                Ok(ServerHealth {
                    source: HealthSource::Ping,
                    status: "ok".to_owned(),
                    details: Default::default(),
                })
            }
            Err(err) => Err(err),
        }
    }

    async fn version(&self) -> Result<ServerVersion, WahaError> {
        let request = Request::new(Operation::Version, RequestPath::fixed("api/server/version"));
        decode("version", &self.execute(&request).await?)
    }

    async fn server_status(&self) -> Result<ServerStatus, WahaError> {
        let request = Request::new(
            Operation::ServerStatus,
            RequestPath::fixed("api/server/status"),
        );
        decode("server_status", &self.execute(&request).await?)
    }

    async fn list_sessions(&self, all: bool) -> Result<Vec<SessionInfo>, WahaError> {
        let mut request = Request::new(Operation::ListSessions, RequestPath::fixed(SESSIONS));
        if all {
            request = request.query("all=true");
        }
        // `docs/waha-contract.md`, "Sessions": always an array. An empty body is a `Decode`
        // error, never "no sessions": a reconciler would take that for every session gone.
        decode("list_sessions", &self.execute(&request).await?)
    }

    async fn get_session(&self, name: &str) -> Result<SessionInfo, WahaError> {
        decode(
            "get_session",
            &self.session_call(Operation::GetSession, name, "").await?,
        )
    }

    async fn create_session(&self, new: &NewSession) -> Result<Option<SessionInfo>, WahaError> {
        check_session_name(&new.name)?;
        let request = Request::new(Operation::CreateSession, RequestPath::fixed(SESSIONS))
            .session(&new.name)
            .json(new)?;
        decode_optional("create_session", &self.execute(&request).await?)
    }

    async fn update_session(
        &self,
        name: &str,
        config: &SessionConfig,
    ) -> Result<SessionInfo, WahaError> {
        let request = Request::new(
            Operation::UpdateSession,
            RequestPath::session(SESSIONS, name, "")?,
        )
        .session(name)
        .json(&SessionUpdate { config })?;
        decode("update_session", &self.execute(&request).await?)
    }

    async fn delete_session(&self, name: &str) -> Result<(), WahaError> {
        self.session_call(Operation::DeleteSession, name, "")
            .await
            .map(drop)
    }

    async fn start_session(&self, name: &str) -> Result<SessionInfo, WahaError> {
        decode(
            "start_session",
            &self
                .session_call(Operation::StartSession, name, "start")
                .await?,
        )
    }

    async fn stop_session(&self, name: &str) -> Result<Option<SessionInfo>, WahaError> {
        decode_optional(
            "stop_session",
            &self
                .session_call(Operation::StopSession, name, "stop")
                .await?,
        )
    }

    async fn restart_session(&self, name: &str) -> Result<SessionInfo, WahaError> {
        decode(
            "restart_session",
            &self
                .session_call(Operation::RestartSession, name, "restart")
                .await?,
        )
    }

    async fn logout_session(&self, name: &str) -> Result<(), WahaError> {
        self.session_call(Operation::LogoutSession, name, "logout")
            .await
            .map(drop)
    }

    async fn me(&self, name: &str) -> Result<Option<Me>, WahaError> {
        decode_optional("me", &self.session_call(Operation::Me, name, "me").await?)
    }

    async fn qr_png(&self, name: &str) -> Result<Vec<u8>, WahaError> {
        let body = self.qr(QrForm::Png, name).await?;
        if body.starts_with(PNG_MAGIC) {
            Ok(body.to_vec())
        } else {
            Err(WahaError::Decode {
                operation: "qr_png",
                path: ".".into(),
                message: "the answer is not a PNG image".into(),
            })
        }
    }

    async fn qr_base64(&self, name: &str) -> Result<QrImage, WahaError> {
        decode("qr_base64", &self.qr(QrForm::Base64, name).await?)
    }

    async fn qr_raw(&self, name: &str) -> Result<QrValue, WahaError> {
        decode("qr_raw", &self.qr(QrForm::Raw, name).await?)
    }

    async fn request_pairing_code(
        &self,
        name: &str,
        phone_number: &str,
    ) -> Result<PairingCode, WahaError> {
        let digits = phone_number.len();
        if !(5..=15).contains(&digits) || !phone_number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(WahaError::invalid(
                "phone number must be 5 to 15 digits, country code first, without '+' or spaces",
            ));
        }
        let request = Request::new(
            Operation::RequestPairingCode,
            RequestPath::session("api", name, "auth/request-code")?,
        )
        .session(name)
        .json(&PairingCodeRequest { phone_number })?;
        decode("request_pairing_code", &self.execute(&request).await?)
    }

    async fn send_text(&self, message: &TextMessage) -> Result<SentMessage, WahaError> {
        let body = self
            .chat_call(
                Operation::SendText,
                "api/sendText",
                &message.session,
                message,
            )
            .await?;
        Ok(decode_optional("send_text", &body)?
            .unwrap_or_else(|| SentMessage::from(serde_json::Value::Null)))
    }

    async fn send_seen(&self, receipt: &SeenReceipt) -> Result<(), WahaError> {
        self.chat_call(
            Operation::SendSeen,
            "api/sendSeen",
            &receipt.session,
            receipt,
        )
        .await
        .map(drop)
    }

    async fn start_typing(&self, chat: &ChatRef) -> Result<(), WahaError> {
        self.chat_call(
            Operation::StartTyping,
            "api/startTyping",
            &chat.session,
            chat,
        )
        .await
        .map(drop)
    }

    async fn stop_typing(&self, chat: &ChatRef) -> Result<(), WahaError> {
        self.chat_call(Operation::StopTyping, "api/stopTyping", &chat.session, chat)
            .await
            .map(drop)
    }
}
