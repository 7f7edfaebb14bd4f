//! The route table: each route's method, path, handler and documentation in one place. The
//! router is built from it ([`super::router`]) and so is the OpenAPI document
//! ([`super::openapi_document`]), so the document covers every route the router serves.

use axum::handler::Handler;
use axum::routing::{MethodFilter, MethodRouter, on};

use super::AppState;
use super::events::{events_sse, events_ws};
use super::handlers::{admin, chips, dashboard, messages, ops};

/// An HTTP method of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verb {
    Get,
    Post,
    Put,
    Delete,
}

impl Verb {
    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Put => MethodFilter::PUT,
            Verb::Delete => MethodFilter::DELETE,
        }
    }

    /// The lower-case name (OpenAPI's key).
    pub(crate) fn lower(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Put => "put",
            Verb::Delete => "delete",
        }
    }

    /// The upper-case name.
    pub(crate) fn upper(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Put => "PUT",
            Verb::Delete => "DELETE",
        }
    }
}

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Auth {
    /// Anyone.
    Public,
    /// The admin token.
    Admin,
    /// A tenant's API token.
    Tenant,
    /// WAHA, signing with the tenant's webhook HMAC key.
    Webhook,
}

/// A query parameter: name, JSON schema type, description.
pub(crate) type Param = (&'static str, &'static str, &'static str);

/// What a route's documentation says.
#[derive(Clone, Debug)]
pub(crate) struct RouteSpec {
    pub(crate) verb: Verb,
    pub(crate) path: &'static str,
    pub(crate) operation_id: &'static str,
    pub(crate) tag: &'static str,
    pub(crate) auth: Auth,
    pub(crate) summary: &'static str,
    /// The JSON request body's schema name.
    pub(crate) body: Option<&'static str>,
    pub(crate) query: &'static [Param],
    /// Request headers: name, required, description.
    pub(crate) headers: &'static [(&'static str, bool, &'static str)],
    /// The success status, media type and schema name (`None`: no schema).
    pub(crate) ok: (u16, &'static str, Option<&'static str>),
    /// Other success statuses with their meaning (202 of an unfinished rotation, ...).
    pub(crate) also: &'static [(u16, &'static str)],
    /// The error statuses it may answer (each with the `Error` schema).
    pub(crate) errors: &'static [u16],
}

const JSON: &str = "application/json";

impl RouteSpec {
    fn new(
        verb: Verb,
        path: &'static str,
        operation_id: &'static str,
        tag: &'static str,
        auth: Auth,
        summary: &'static str,
    ) -> Self {
        RouteSpec {
            verb,
            path,
            operation_id,
            tag,
            auth,
            summary,
            body: None,
            query: &[],
            headers: &[],
            ok: (200, JSON, None),
            also: &[],
            errors: &[],
        }
    }

    fn body(mut self, schema: &'static str) -> Self {
        self.body = Some(schema);
        self
    }

    fn query(mut self, params: &'static [Param]) -> Self {
        self.query = params;
        self
    }

    fn headers(mut self, headers: &'static [(&'static str, bool, &'static str)]) -> Self {
        self.headers = headers;
        self
    }

    fn ok(mut self, status: u16, media: &'static str, schema: Option<&'static str>) -> Self {
        self.ok = (status, media, schema);
        self
    }

    fn json(self, status: u16, schema: &'static str) -> Self {
        self.ok(status, JSON, Some(schema))
    }

    fn also(mut self, also: &'static [(u16, &'static str)]) -> Self {
        self.also = also;
        self
    }

    fn errors(mut self, errors: &'static [u16]) -> Self {
        self.errors = errors;
        self
    }
}

/// One row of the table: its documentation and its handler (`None` for a route another
/// router serves: the webhook ingest).
pub(crate) struct Route {
    pub(crate) spec: RouteSpec,
    pub(crate) handler: Option<MethodRouter<AppState>>,
}

fn route<H, T>(spec: RouteSpec, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let handler = on(spec.verb.filter(), handler);
    Route {
        spec,
        handler: Some(handler),
    }
}

const ADMIN_ERRORS: &[u16] = &[400, 401, 404, 409, 500, 503];
const CHIP_ERRORS: &[u16] = &[400, 401, 403, 404, 409, 500, 503];
const WAIT: &[Param] = &[(
    "wait_secs",
    "integer",
    "How long to wait, in seconds (at most 300).",
)];
const EVENTS_QUERY: &[Param] = &[
    (
        "chip",
        "string",
        "Comma-separated chip ids: only these chips' changes.",
    ),
    (
        "chat",
        "string",
        "Comma-separated chat ids: only the message events of these chats.",
    ),
    (
        "after",
        "integer",
        "Resume after this sequence number (replays what the bus still holds); 0 replays everything held.",
    ),
];
const LAST_EVENT_ID: &[(&str, bool, &str)] = &[(
    "Last-Event-ID",
    false,
    "Resume after this sequence number (what an EventSource sends when it reconnects); wins over `after`.",
)];

/// Every route the service serves, in the order of the documentation.
pub(crate) fn table() -> Vec<Route> {
    use Auth::{Admin, Public, Tenant, Webhook};
    use Verb::{Delete, Get, Post, Put};
    vec![
        // Tenants (admin).
        route(
            RouteSpec::new(Post, "/v1/tenants", "createTenant", "tenants", Admin,
                "Create a tenant; answers its API token once")
                .body("CreateTenant")
                .json(201, "TenantCreated")
                .errors(&[400, 401, 409, 500, 503]),
            admin::create_tenant,
        ),
        route(
            RouteSpec::new(Get, "/v1/tenants", "listTenants", "tenants", Admin, "List the tenants")
                .json(200, "TenantList")
                .errors(&[401, 500, 503]),
            admin::list_tenants,
        ),
        route(
            RouteSpec::new(Get, "/v1/tenants/{tenant}", "getTenant", "tenants", Admin, "One tenant")
                .json(200, "Tenant")
                .errors(&[400, 401, 404, 500, 503]),
            admin::get_tenant,
        ),
        route(
            RouteSpec::new(Post, "/v1/tenants/{tenant}/suspend", "suspendTenant", "tenants", Admin,
                "Suspend a tenant: its operations are refused and its sessions stopped")
                .json(200, "Tenant")
                .errors(ADMIN_ERRORS),
            admin::suspend_tenant,
        ),
        route(
            RouteSpec::new(Post, "/v1/tenants/{tenant}/reactivate", "reactivateTenant", "tenants",
                Admin, "Reactivate a suspended tenant")
                .json(200, "Tenant")
                .errors(ADMIN_ERRORS),
            admin::reactivate_tenant,
        ),
        route(
            RouteSpec::new(Post, "/v1/tenants/{tenant}/offboard", "offboardTenant", "tenants",
                Admin,
                "Offboard a tenant: delete its chips, containers, volumes and proxy rows, mark it deleted, forget its API token")
                .query(WAIT)
                .json(200, "OffboardReport")
                .errors(ADMIN_ERRORS),
            admin::offboard_tenant,
        ),
        route(
            RouteSpec::new(Put, "/v1/tenants/{tenant}/limits", "setTenantLimits", "tenants", Admin,
                "Replace a tenant's plan limits")
                .body("Limits")
                .json(200, "Tenant")
                .errors(ADMIN_ERRORS),
            admin::set_limits,
        ),
        route(
            RouteSpec::new(Post, "/v1/tenants/{tenant}/token/rotate", "rotateTenantToken",
                "tenants", Admin,
                "Rotate a tenant's API token: answers the new one once; the old one stops working")
                .json(200, "TokenRotated")
                .errors(&[400, 401, 403, 404, 500, 503]),
            admin::rotate_token,
        ),
        route(
            RouteSpec::new(Post, "/v1/tenants/{tenant}/webhook-key/rotate", "rotateWebhookKey",
                "tenants", Admin,
                "Rotate a tenant's webhook HMAC key (the previous key stays accepted until every session has the new one)")
                .query(WAIT)
                .json(200, "WebhookKeyRotation")
                .also(&[(202, "The rotation goes on: some sessions still carry the previous key; call again.")])
                .errors(&[400, 401, 404, 500, 503]),
            admin::rotate_webhook_key,
        ),
        // Chips (tenant).
        route(
            RouteSpec::new(Post, "/v1/chips", "createChip", "chips", Tenant,
                "Create a chip (idempotent on its id)")
                .body("CreateChip")
                .json(201, "Chip")
                .errors(&[400, 401, 403, 409, 422, 500, 503]),
            chips::create_chip,
        ),
        route(
            RouteSpec::new(Get, "/v1/chips", "listChips", "chips", Tenant,
                "A page of the tenant's chips, in id order")
                .query(&[
                    ("after", "string", "The last chip id of the previous page."),
                    ("limit", "integer", "The page size (default 100, at most 500)."),
                ])
                .json(200, "ChipList")
                .errors(&[400, 401, 500, 503]),
            chips::list_chips,
        ),
        route(
            RouteSpec::new(Get, "/v1/chips/{chip}", "getChip", "chips", Tenant, "One chip")
                .json(200, "Chip")
                .errors(&[400, 401, 404, 500, 503]),
            chips::get_chip,
        ),
        route(
            RouteSpec::new(Delete, "/v1/chips/{chip}", "deleteChip", "chips", Tenant,
                "Delete a chip: its session is logged out and deleted, its proxy and slots released, then its record removed")
                .json(202, "Chip")
                .errors(CHIP_ERRORS),
            chips::delete_chip,
        ),
        route(
            RouteSpec::new(Post, "/v1/chips/{chip}/stop", "stopChip", "chips", Tenant,
                "Stop a chip's session (its login stays)")
                .json(200, "Chip")
                .errors(CHIP_ERRORS),
            chips::stop_chip,
        ),
        route(
            RouteSpec::new(Post, "/v1/chips/{chip}/start", "startChip", "chips", Tenant,
                "Start a stopped chip (a new login window out of login_expired or parked)")
                .json(200, "Chip")
                .errors(CHIP_ERRORS),
            chips::start_chip,
        ),
        route(
            RouteSpec::new(Post, "/v1/chips/{chip}/restart", "restartChip", "chips", Tenant,
                "Restart a chip's session")
                .json(200, "Chip")
                .errors(CHIP_ERRORS),
            chips::restart_chip,
        ),
        route(
            RouteSpec::new(Post, "/v1/chips/{chip}/logout", "logoutChip", "chips", Tenant,
                "Log a chip out: the next login needs a new QR scan or pairing code")
                .json(200, "Chip")
                .errors(CHIP_ERRORS),
            chips::logout_chip,
        ),
        route(
            RouteSpec::new(Get, "/v1/chips/{chip}/qr", "getQrPng", "chips", Tenant,
                "The QR code to scan, as a PNG image")
                .ok(200, "image/png", None)
                .errors(&[400, 401, 404, 409, 500, 502, 503]),
            chips::qr_png,
        ),
        route(
            RouteSpec::new(Get, "/v1/chips/{chip}/qr/raw", "getQrRaw", "chips", Tenant,
                "The QR code's value, to render yourself")
                .json(200, "QrRaw")
                .errors(&[400, 401, 404, 409, 500, 502, 503]),
            chips::qr_raw,
        ),
        route(
            RouteSpec::new(Get, "/v1/chips/{chip}/pairing-code", "getPairingCode", "chips",
                Tenant, "The pairing code on offer")
                .json(200, "PairingCode")
                .errors(&[400, 401, 404, 409, 500, 503]),
            chips::pairing_code,
        ),
        // Messages (tenant).
        route(
            RouteSpec::new(Post, "/v1/chips/{chip}/messages", "sendText", "messages", Tenant,
                "Send a text, paced, at most once per idempotency key")
                .headers(&[(
                    "Idempotency-Key",
                    true,
                    "1 to 128 printable ASCII characters, unique per tenant; a retry of the same send uses the same key.",
                )])
                .body("SendText")
                .json(201, "SendReceipt")
                .also(&[(200, "The key was used before for the same request: nothing was sent again (`replayed: true`).")])
                .errors(&[400, 401, 403, 404, 409, 429, 500, 502, 503]),
            messages::send_text,
        ),
        route(
            RouteSpec::new(Get, "/v1/messages", "getMessageByKey", "messages", Tenant,
                "A send by its idempotency key")
                .query(&[("idempotency_key", "string", "The send's idempotency key (required).")])
                .json(200, "Message")
                .errors(&[400, 401, 404, 500, 503]),
            messages::message_by_key,
        ),
        route(
            RouteSpec::new(Get, "/v1/messages/{message_id}", "getMessage", "messages", Tenant,
                "A send by WAHA's message id")
                .json(200, "Message")
                .errors(&[401, 404, 500, 503]),
            messages::message_by_id,
        ),
        // Events (tenant).
        route(
            RouteSpec::new(Get, "/v1/events", "streamEvents", "events", Tenant,
                "The tenant's chip changes as Server-Sent Events (`event: change`, `id: <seq>`; `event: gap`)")
                .query(EVENTS_QUERY)
                .headers(LAST_EVENT_ID)
                .ok(200, "text/event-stream", Some("Event"))
                .errors(&[400, 401, 500, 503]),
            events_sse,
        ),
        route(
            RouteSpec::new(Get, "/v1/events/ws", "streamEventsWebSocket", "events", Tenant,
                "The tenant's chip changes over a WebSocket (one JSON text per change or gap, with `type`)")
                .query(EVENTS_QUERY)
                .ok(101, JSON, Some("WsMessage"))
                .errors(&[400, 401, 426, 500, 503]),
            events_ws,
        ),
        // WAHA's webhooks (session-supervisor's ingest router).
        Route {
            spec: RouteSpec::new(Post, session_supervisor::INGEST_ROUTE, "receiveWebhook",
                "webhooks", Webhook,
                "WAHA's webhook for one tenant's sessions (HMAC-SHA512 with the tenant's key)")
                .ok(200, JSON, None)
                .also(&[(204, "Accepted (or a duplicate)")])
                .errors(&[400, 401, 404, 413, 503]),
            handler: None,
        },
        // Operations.
        route(
            RouteSpec::new(Get, "/healthz", "healthz", "operations", Public, "The process is up")
                .json(200, "Status"),
            ops::healthz,
        ),
        route(
            RouteSpec::new(Get, "/readyz", "readyz", "operations", Public,
                "The supervisor runs and the tenant directory answers")
                .json(200, "Status")
                .errors(&[503]),
            ops::readyz,
        ),
        route(
            RouteSpec::new(Get, "/metrics", "metrics", "operations", Public,
                "Prometheus metrics (supervisor_*, chipservice_http_*)")
                .ok(200, "text/plain", None)
                .errors(&[404]),
            ops::metrics,
        ),
        route(
            RouteSpec::new(Get, "/openapi.json", "openapi", "operations", Public,
                "This document")
                .ok(200, JSON, None),
            ops::openapi,
        ),
        // The dashboard: static same-origin assets embedded in the binary; no secret in them.
        // The page asks for the tenant's API token and calls the API above with it.
        route(
            RouteSpec::new(Get, "/dashboard", "dashboard", "dashboard", Public,
                "The dashboard page (HTML; Content-Security-Policy: same origin only): asks for a tenant API token, then shows the tenant's chips live")
                .ok(200, "text/html", None),
            dashboard::page,
        ),
        route(
            RouteSpec::new(Get, "/dashboard/app.js", "dashboardScript", "dashboard", Public,
                "The dashboard's script")
                .ok(200, "text/javascript", None),
            dashboard::script,
        ),
        route(
            RouteSpec::new(Get, "/dashboard/app.css", "dashboardStyle", "dashboard", Public,
                "The dashboard's style sheet")
                .ok(200, "text/css", None),
            dashboard::style,
        ),
    ]
}
