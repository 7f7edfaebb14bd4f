//! A tenant's chips (the tenant's token): create, get, list, stop, start, restart, logout,
//! delete, QR code (PNG and raw) and pairing code. The tenant always comes from the token: a
//! chip of another tenant is not found (404).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use proxy_allocator::CountryCode;
use serde::Deserialize;
use serde_json::{Value, json};
use session_supervisor::{ChipSpec, LoginOffer, PhoneNumber, QrCode, QrFormat};
use tenant_isolation::ChipId;

use super::no_store;
use crate::service::AppState;
use crate::service::auth::TenantAuth;
use crate::service::error::ApiError;
use crate::service::extract::{ApiJson, ApiQuery, ChipPath};
use crate::service::views::{PHONE_LABEL, chip_json, ms};

/// How the phone logs in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LoginBody {
    /// Scan a QR code.
    #[default]
    Qr,
    /// Type a pairing code (needs `phone`).
    #[serde(alias = "pairing")]
    PairingCode,
}

/// `POST /v1/chips`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateChipBody {
    /// The chip's id (a fresh ULID when absent: then a retry creates another chip).
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    login: LoginBody,
    /// The number, country code first (required for `pairing_code`).
    #[serde(default)]
    phone: Option<String>,
    /// The proxy's country, ISO 3166-1 alpha-2.
    #[serde(default)]
    proxy_country: Option<String>,
}

/// `POST /v1/chips`: creates a chip (idempotent on its id: the same id and spec answer the
/// same chip, 201 again; another spec is 409 `chip_conflict`; a full plan 422
/// `quota_exceeded`).
pub(crate) async fn create_chip(
    TenantAuth(tenant): TenantAuth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateChipBody>,
) -> Result<Response, ApiError> {
    let chip = match body.id {
        Some(id) => ChipId::new(id)?,
        None => ChipId::generate(),
    };
    let phone =
        match body.phone.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(PhoneNumber::new(text).map_err(|error| {
                ApiError::invalid_input(error.to_string()).with("field", "phone")
            })?),
        };
    let country = match body.proxy_country.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(text.parse::<CountryCode>().map_err(|_| {
            ApiError::invalid_input(
                "proxy_country must be an ISO 3166-1 alpha-2 code (two letters, e.g. BR)",
            )
            .with("field", "proxy_country")
        })?),
    };
    let mut spec = match body.login {
        LoginBody::Qr => ChipSpec::qr(),
        LoginBody::PairingCode => {
            let Some(phone) = phone.clone() else {
                return Err(
                    ApiError::invalid_input("a pairing_code login needs a phone number")
                        .with("field", "phone"),
                );
            };
            ChipSpec::pairing_code(phone)
        }
    };
    spec.proxy.country = country;
    if let (LoginBody::Qr, Some(phone)) = (body.login, &phone) {
        spec.host_labels
            .insert(PHONE_LABEL.to_owned(), phone.as_str().to_owned());
    }
    let record = state
        .inner
        .supervisor
        .create_chip(&tenant, &chip, spec)
        .await?;
    Ok((StatusCode::CREATED, Json(chip_json(&record))).into_response())
}

/// `GET /v1/chips?after=&limit=`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    after: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/chips`: a page of the tenant's chips in id order; `next_after` names the last one
/// when the page is full.
pub(crate) async fn list_chips(
    TenantAuth(tenant): TenantAuth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let max = state.inner.options.max_page;
    let limit = query.limit.unwrap_or(100_u32.min(max));
    if limit == 0 || limit > max {
        return Err(ApiError::invalid_input(format!("limit must be 1 to {max}"))
            .with("field", "limit")
            .with("max", max));
    }
    let after = query.after.map(ChipId::new).transpose()?;
    let chips = state
        .inner
        .supervisor
        .list_chips(&tenant, after.as_ref(), limit)
        .await?;
    let full = chips.len() == limit as usize;
    let next_after = if full {
        chips
            .last()
            .map(|record| record.key.chip.as_str().to_owned())
    } else {
        None
    };
    let chips: Vec<Value> = chips.iter().map(chip_json).collect();
    Ok(Json(json!({ "chips": chips, "next_after": next_after })))
}

/// `GET /v1/chips/{chip}`.
pub(crate) async fn get_chip(
    TenantAuth(tenant): TenantAuth,
    State(state): State<AppState>,
    ChipPath(chip): ChipPath,
) -> Result<Json<Value>, ApiError> {
    let record = state.inner.supervisor.get_chip(&tenant, &chip).await?;
    Ok(Json(chip_json(&record)))
}

/// A one-shot change of a chip's desired state, answered with the chip as it stands.
#[derive(Clone, Copy)]
enum ChipAction {
    Stop,
    Start,
    Restart,
    Logout,
}

/// Applies `action` to the token's tenant's chip.
async fn chip_action(
    state: &AppState,
    tenant: &tenant_isolation::TenantId,
    chip: &ChipId,
    action: ChipAction,
) -> Result<Json<Value>, ApiError> {
    let supervisor = &state.inner.supervisor;
    let record = match action {
        ChipAction::Stop => supervisor.stop_chip(tenant, chip).await,
        ChipAction::Start => supervisor.start_chip(tenant, chip).await,
        ChipAction::Restart => supervisor.restart_chip(tenant, chip).await,
        ChipAction::Logout => supervisor.logout_chip(tenant, chip).await,
    }?;
    Ok(Json(chip_json(&record)))
}

/// `POST /v1/chips/{chip}/stop`.
pub(crate) async fn stop_chip(
    TenantAuth(tenant): TenantAuth,
    State(state): State<AppState>,
    ChipPath(chip): ChipPath,
) -> Result<Json<Value>, ApiError> {
    chip_action(&state, &tenant, &chip, ChipAction::Stop).await
}

/// `POST /v1/chips/{chip}/start`.
pub(crate) async fn start_chip(
    TenantAuth(tenant): TenantAuth,
    State(state): State<AppState>,
    ChipPath(chip): ChipPath,
) -> Result<Json<Value>, ApiError> {
    chip_action(&state, &tenant, &chip, ChipAction::Start).await
}

/// `POST /v1/chips/{chip}/restart`.
pub(crate) async fn restart_chip(
    TenantAuth(tenant): TenantAuth,
    State(state): State<AppState>,
    ChipPath(chip): ChipPath,
) -> Result<Json<Value>, ApiError> {
    chip_action(&state, &tenant, &chip, ChipAction::Restart).await
}

/// `POST /v1/chips/{chip}/logout`.
pub(crate) async fn logout_chip(
    TenantAuth(tenant): TenantAuth,
    State(state): State<AppState>,
    ChipPath(chip): ChipPath,
) -> Result<Json<Value>, ApiError> {
    chip_action(&state, &tenant, &chip, ChipAction::Logout).await
}

/// `DELETE /v1/chips/{chip}`: 202; the chip goes once its finalizers ran (a `deleted`
/// event, then 404).
pub(crate) async fn delete_chip(
    TenantAuth(tenant): TenantAuth,
    State(state): State<AppState>,
    ChipPath(chip): ChipPath,
) -> Result<Response, ApiError> {
    let record = state.inner.supervisor.delete_chip(&tenant, &chip).await?;
    Ok((StatusCode::ACCEPTED, Json(chip_json(&record))).into_response())
}

/// `GET /v1/chips/{chip}/qr`: the QR code as `image/png` (409 `not_ready` outside a QR login
/// window).
pub(crate) async fn qr_png(
    TenantAuth(tenant): TenantAuth,
    State(state): State<AppState>,
    ChipPath(chip): ChipPath,
) -> Result<Response, ApiError> {
    match state
        .inner
        .supervisor
        .qr(&tenant, &chip, QrFormat::Png)
        .await?
    {
        QrCode::Png(bytes) => Ok((
            [(CONTENT_TYPE, "image/png"), (CACHE_CONTROL, "no-store")],
            bytes,
        )
            .into_response()),
        QrCode::Raw(_) => Err(ApiError::internal(
            "qr",
            &"the supervisor answered a raw QR value for a PNG",
        )),
    }
}

/// `GET /v1/chips/{chip}/qr/raw`: `{"value": "<the text the QR code encodes>"}`.
pub(crate) async fn qr_raw(
    TenantAuth(tenant): TenantAuth,
    State(state): State<AppState>,
    ChipPath(chip): ChipPath,
) -> Result<Response, ApiError> {
    match state
        .inner
        .supervisor
        .qr(&tenant, &chip, QrFormat::Raw)
        .await?
    {
        QrCode::Raw(value) => Ok(no_store(StatusCode::OK, json!({ "value": value.value }))),
        QrCode::Png(_) => Err(ApiError::internal(
            "qr",
            &"the supervisor answered a PNG for a raw QR value",
        )),
    }
}

/// `GET /v1/chips/{chip}/pairing-code`: `{"code": .., "expires_at_ms": ..}` while one is on
/// offer (409 `not_ready` otherwise).
pub(crate) async fn pairing_code(
    TenantAuth(tenant): TenantAuth,
    State(state): State<AppState>,
    ChipPath(chip): ChipPath,
) -> Result<Response, ApiError> {
    let supervisor = &state.inner.supervisor;
    let record = supervisor.get_chip(&tenant, &chip).await?;
    let Some(code) = supervisor.pairing_code(&tenant, &chip).await? else {
        let phase = record.observed.phase.kind();
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_ready",
            format!("chip {chip} has no pairing code on offer (it is {phase})"),
        )
        .with("chip", chip.as_str())
        .with("phase", phase));
    };
    let expires_at_ms = match &record.observed.login {
        Some(LoginOffer::PairingCode { expires_at, .. }) => Some(ms(*expires_at)),
        _ => None,
    };
    Ok(no_store(
        StatusCode::OK,
        json!({ "code": code.expose_secret(), "expires_at_ms": expires_at_ms }),
    ))
}
