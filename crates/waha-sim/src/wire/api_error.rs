//! Error answers in WAHA's (NestJS's) shapes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::session::SessionStatus;

/// An error answer.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// `{"statusCode":N,"message":"...","error":"<reason phrase>"}`.
    Message(StatusCode, String),
    /// `{"statusCode":N,"message":"..."}` without `error` (NestJS's 401 and 500).
    Bare(StatusCode, &'static str),
    /// A validation failure: 400 with `message` as a list of strings.
    Validation(Vec<String>),
    /// The "session status is not as expected" 422, which has no `statusCode`.
    UnexpectedStatus {
        session: String,
        status: SessionStatus,
        expected: &'static [&'static str],
    },
}

impl ApiError {
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::Message(StatusCode::NOT_FOUND, message.into())
    }

    pub(crate) fn unprocessable(message: impl Into<String>) -> Self {
        Self::Message(StatusCode::UNPROCESSABLE_ENTITY, message.into())
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::Message(StatusCode::BAD_REQUEST, message.into())
    }

    /// The 404 for a session that exists but is not running (or does not exist), on routes that
    /// need a running session.
    pub(crate) fn not_running(session: &str) -> Self {
        Self::not_found(format!(
            "We didn't find a session with name '{session}'. Please start it first by using \
             POST /api/sessions/{session}/start request"
        ))
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NestError<'a, M: Serialize> {
    status_code: u16,
    message: M,
    error: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BareError<'a> {
    status_code: u16,
    message: &'a str,
}

#[derive(Serialize)]
struct StatusMismatch<'a> {
    error: &'static str,
    session: &'a str,
    status: SessionStatus,
    expected: &'static [&'static str],
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )],
        bytes,
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Message(status, message) => json_response(
                status,
                &NestError {
                    status_code: status.as_u16(),
                    message,
                    error: status.canonical_reason().unwrap_or("Error"),
                },
            ),
            Self::Bare(status, message) => json_response(
                status,
                &BareError {
                    status_code: status.as_u16(),
                    message,
                },
            ),
            Self::Validation(messages) => json_response(
                StatusCode::BAD_REQUEST,
                &NestError {
                    status_code: 400,
                    message: messages,
                    error: "Bad Request",
                },
            ),
            Self::UnexpectedStatus {
                session,
                status,
                expected,
            } => json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &StatusMismatch {
                    error: "Session status is not as expected. Try again later or restart the \
                            session",
                    session: &session,
                    status,
                    expected,
                },
            ),
        }
    }
}

/// A JSON answer with a status code.
pub(crate) fn json(status: StatusCode, body: &impl Serialize) -> Response {
    json_response(status, body)
}

/// An answer with an empty body.
pub(crate) fn empty(status: StatusCode) -> Response {
    (status, axum::body::Body::empty()).into_response()
}
