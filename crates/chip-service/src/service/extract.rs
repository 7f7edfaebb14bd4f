//! Extractors whose refusals are the API's JSON errors (axum's own answer in plain text).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use tenant_isolation::{ChipId, TenantId};

use super::error::ApiError;

/// A JSON body; a refused one is a 400 `invalid_input` (415 without a JSON content type, 413
/// when too large).
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_refused(&rejection)),
        }
    }
}

fn json_refused(rejection: &JsonRejection) -> ApiError {
    let status = match rejection.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, "invalid_input", rejection.body_text())
}

/// The query string; a refused one is a 400 `invalid_input`.
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::try_from_uri(&parts.uri) {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::invalid_input(rejection.body_text())),
        }
    }
}

/// The one path parameter of a route, as text.
async fn path_param<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<String, ApiError> {
    match Path::<String>::from_request_parts(parts, state).await {
        Ok(Path(value)) => Ok(value),
        Err(rejection) => Err(ApiError::invalid_input(rejection.body_text())),
    }
}

/// The `{chip}` of a route, validated (400 `invalid_id`).
pub(crate) struct ChipPath(pub(crate) ChipId);

impl<S: Send + Sync> FromRequestParts<S> for ChipPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let text = path_param(parts, state).await?;
        Ok(ChipPath(ChipId::new(text)?))
    }
}

/// The `{tenant}` of a route, validated (400 `invalid_id`).
pub(crate) struct TenantPath(pub(crate) TenantId);

impl<S: Send + Sync> FromRequestParts<S> for TenantPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let text = path_param(parts, state).await?;
        Ok(TenantPath(TenantId::new(text)?))
    }
}

/// The `{message_id}` of a route.
pub(crate) struct TextPath(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for TextPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(TextPath(path_param(parts, state).await?))
    }
}
