//! Tenant management (the admin token): create, list, get, suspend, reactivate, offboard,
//! limits, API token and webhook key rotation.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use session_supervisor::RotationOptions;
use tenant_isolation::{NewTenant, PlanLimits, TenantId, TenantSecrets, TenantStatus};
use tracing::info;

use super::{WaitQuery, no_store};
use crate::service::AppState;
use crate::service::auth::{AdminAuth, issue_token};
use crate::service::error::ApiError;
use crate::service::extract::{ApiJson, ApiQuery, TenantPath};
use crate::service::views::{offboard_json, rotation_json, tenant_json};

/// The limits a tenant gets when its creation names none.
pub(crate) const DEFAULT_LIMITS: PlanLimits = PlanLimits {
    max_chips: 10,
    max_running_sessions: 10,
    max_sends_per_day: 1_000,
};

/// A tenant's plan limits, as the API takes them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsBody {
    max_chips: u32,
    max_running_sessions: u32,
    max_sends_per_day: u32,
}

impl LimitsBody {
    fn limits(&self) -> PlanLimits {
        PlanLimits::new(
            self.max_chips,
            self.max_running_sessions,
            self.max_sends_per_day,
        )
    }
}

/// `POST /v1/tenants`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTenantBody {
    id: String,
    #[serde(default)]
    limits: Option<LimitsBody>,
}

/// `POST /v1/tenants`: creates a tenant with fresh secrets and answers its API token, once.
pub(crate) async fn create_tenant(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateTenantBody>,
) -> Result<Response, ApiError> {
    let id = TenantId::new(body.id)?;
    let limits = body
        .limits
        .as_ref()
        .map_or(DEFAULT_LIMITS, LimitsBody::limits);
    limits.validate()?;
    let secrets = TenantSecrets::generate()?;
    let tenant = state
        .inner
        .directory
        .create(NewTenant::new(id.clone(), limits, secrets))
        .await?;
    let token = issue_token(&*state.inner.tokens, &id).await?;
    info!(tenant = %id, "tenant created");
    Ok(no_store(
        StatusCode::CREATED,
        json!({ "tenant": tenant_json(&tenant), "api_token": token.expose_secret() }),
    ))
}

/// `GET /v1/tenants`.
pub(crate) async fn list_tenants(
    _: AdminAuth,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let tenants = state.inner.directory.list().await?;
    let tenants: Vec<Value> = tenants.iter().map(tenant_json).collect();
    Ok(Json(json!({ "tenants": tenants })))
}

/// `GET /v1/tenants/{tenant}`.
pub(crate) async fn get_tenant(
    _: AdminAuth,
    State(state): State<AppState>,
    TenantPath(id): TenantPath,
) -> Result<Json<Value>, ApiError> {
    let tenant = state.inner.directory.get(&id).await?;
    Ok(Json(tenant_json(&tenant)))
}

async fn set_status(
    state: &AppState,
    id: &TenantId,
    status: TenantStatus,
) -> Result<Json<Value>, ApiError> {
    let tenant = state.inner.directory.set_status(id, status).await?;
    info!(tenant = %id, status = status.as_str(), "tenant status changed");
    Ok(Json(tenant_json(&tenant)))
}

/// `POST /v1/tenants/{tenant}/suspend`: its operations are refused; the supervisor stops its
/// sessions.
pub(crate) async fn suspend_tenant(
    _: AdminAuth,
    State(state): State<AppState>,
    TenantPath(id): TenantPath,
) -> Result<Json<Value>, ApiError> {
    set_status(&state, &id, TenantStatus::Suspended).await
}

/// `POST /v1/tenants/{tenant}/reactivate`.
pub(crate) async fn reactivate_tenant(
    _: AdminAuth,
    State(state): State<AppState>,
    TenantPath(id): TenantPath,
) -> Result<Json<Value>, ApiError> {
    set_status(&state, &id, TenantStatus::Active).await
}

/// `POST /v1/tenants/{tenant}/offboard?wait_secs=`: every chip deleted through its
/// finalizers, the containers, volumes and proxy rows removed (the supervisor's
/// `offboard_tenant`), then the tenant marked deleted and its API token forgotten. Safe to
/// call again (503 `offboard_incomplete` says to).
pub(crate) async fn offboard_tenant(
    _: AdminAuth,
    State(state): State<AppState>,
    TenantPath(id): TenantPath,
    ApiQuery(query): ApiQuery<WaitQuery>,
) -> Result<Json<Value>, ApiError> {
    let options = &state.inner.options;
    let wait = query.wait(options.offboard_wait, options.max_wait)?;
    state.inner.directory.get(&id).await?;
    let report = state.inner.supervisor.offboard_tenant(&id, wait).await?;
    let tenant = state
        .inner
        .directory
        .set_status(&id, TenantStatus::Deleted)
        .await?;
    state.inner.tokens.remove(&id).await?;
    info!(tenant = %id, chips = report.chips.len(), "tenant offboarded");
    Ok(Json(offboard_json(&report, &tenant)))
}

/// `PUT /v1/tenants/{tenant}/limits`.
pub(crate) async fn set_limits(
    _: AdminAuth,
    State(state): State<AppState>,
    TenantPath(id): TenantPath,
    ApiJson(body): ApiJson<LimitsBody>,
) -> Result<Json<Value>, ApiError> {
    let limits = body.limits();
    limits.validate()?;
    let tenant = state.inner.directory.set_limits(&id, limits).await?;
    info!(tenant = %id, "tenant limits changed");
    Ok(Json(tenant_json(&tenant)))
}

/// `POST /v1/tenants/{tenant}/token/rotate`: a new API token, answered once; the old one
/// stops working at once.
pub(crate) async fn rotate_token(
    _: AdminAuth,
    State(state): State<AppState>,
    TenantPath(id): TenantPath,
) -> Result<Response, ApiError> {
    let tenant = state.inner.directory.get(&id).await?;
    if tenant.status == TenantStatus::Deleted {
        return Err(tenant_isolation::Error::TenantDeleted { tenant: id }.into());
    }
    let token = issue_token(&*state.inner.tokens, &id).await?;
    info!(tenant = %id, "tenant API token rotated");
    Ok(no_store(
        StatusCode::OK,
        json!({ "tenant": id.as_str(), "api_token": token.expose_secret() }),
    ))
}

/// `POST /v1/tenants/{tenant}/webhook-key/rotate?wait_secs=`: the supervisor's
/// `rotate_webhook_key` (the previous key stays accepted until every session has the new
/// one). 200 when it finished, 202 when sessions still carry the previous key (call again).
/// The key itself is never answered.
pub(crate) async fn rotate_webhook_key(
    _: AdminAuth,
    State(state): State<AppState>,
    TenantPath(id): TenantPath,
    ApiQuery(query): ApiQuery<WaitQuery>,
) -> Result<Response, ApiError> {
    let options = &state.inner.options;
    let wait = query.wait(options.rotation_wait, options.max_wait)?;
    let report = state
        .inner
        .supervisor
        .rotate_webhook_key(
            &id,
            RotationOptions {
                wait,
                ..RotationOptions::default()
            },
        )
        .await?;
    info!(
        tenant = %id,
        started = report.started,
        finished = report.finished,
        pending = report.pending.len(),
        "webhook key rotation"
    );
    let status = if report.finished {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(rotation_json(&report))).into_response())
}
