//! The OpenAPI 3.1 document, generated from the route table the router is built from
//! (`routes::table`): every route the router serves is in it by construction, with its
//! method, path parameters, query parameters, headers, request body, success and error
//! answers and security. The schemas below are kept by hand next to the JSON shapes of
//! `views` (their tests check both sides).

use serde_json::{Map, Value, json};

use super::routes::{Auth, RouteSpec, table};

/// The `(METHOD, path)` of every route the router serves, as documented (path parameters in
/// braces, as in axum: `/v1/chips/{chip}`).
pub fn documented_routes() -> Vec<(&'static str, &'static str)> {
    table()
        .iter()
        .map(|route| (route.spec.verb.upper(), route.spec.path))
        .collect()
}

/// The OpenAPI 3.1 document of the service (served at `GET /openapi.json`).
pub fn openapi_document() -> Value {
    let mut paths = Map::new();
    for route in table() {
        let spec = &route.spec;
        let item = paths
            .entry(spec.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(operations) = item {
            operations.insert(spec.verb.lower().to_owned(), operation(spec));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "chip-service",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The chipfleet HTTP service: tenants (admin token), chips, QR and pairing codes, paced sends and message status (tenant tokens), the tenant's chip changes as Server-Sent Events and WebSocket, WAHA's webhooks, metrics and health. Errors are `{\"error\": {\"code\", \"message\", ...}}` with a stable snake_case code. Times are milliseconds since the Unix epoch (`*_ms`).",
        },
        "tags": [
            {"name": "tenants", "description": "Tenant management (admin token)."},
            {"name": "chips", "description": "The token's tenant's chips."},
            {"name": "messages", "description": "Paced sending and message status."},
            {"name": "events", "description": "The tenant's chip changes, live and resumable."},
            {"name": "webhooks", "description": "WAHA's webhooks (the ingest)."},
            {"name": "operations", "description": "Health, readiness, metrics, this document."},
            {"name": "dashboard", "description": "The web dashboard: a page, its script and its style sheet, served from the service's own origin (no secret in them). The page calls the API with the tenant token its user types."},
        ],
        "paths": Value::Object(paths),
        "components": {
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The admin token (CHIPSERVICE_ADMIN_TOKEN).",
                },
                "tenantToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A tenant's API token (`cft_<tenant>_<64 hex>`), shown once at creation or rotation.",
                },
                "webhookSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Webhook-Hmac",
                    "description": "WAHA's HMAC-SHA512 of the body with the tenant's webhook key (with X-Webhook-Hmac-Algorithm: sha512).",
                },
            },
            "schemas": schemas(),
        },
    })
}

/// The `{name}` parameters of a path.
fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

fn reference(schema: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{schema}") })
}

fn status_text(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols: the WebSocket is open",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Invalid input",
        401 => "No token, or a wrong one",
        403 => "The tenant is suspended or deleted",
        404 => "Not found (also another tenant's chip or message)",
        409 => "Conflicts with the current state",
        413 => "The body is too large",
        422 => "A plan limit is reached",
        426 => "A WebSocket upgrade is required",
        429 => "Paced, or the daily send limit is reached (see Retry-After)",
        500 => "Internal error (details in the log)",
        502 => "WAHA refused the call",
        503 => "Unavailable now; retry (see Retry-After)",
        _ => "See the error code",
    }
}

fn operation(spec: &RouteSpec) -> Value {
    let mut op = Map::new();
    op.insert("operationId".to_owned(), json!(spec.operation_id));
    op.insert("summary".to_owned(), json!(spec.summary));
    op.insert("tags".to_owned(), json!([spec.tag]));
    let security = match spec.auth {
        Auth::Public => json!([]),
        Auth::Admin => json!([{ "adminToken": [] }]),
        Auth::Tenant => json!([{ "tenantToken": [] }]),
        Auth::Webhook => json!([{ "webhookSignature": [] }]),
    };
    op.insert("security".to_owned(), security);

    let mut parameters: Vec<Value> = path_params(spec.path)
        .into_iter()
        .map(|name| {
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": { "type": "string" },
            })
        })
        .collect();
    for (name, kind, description) in spec.query {
        parameters.push(json!({
            "name": name,
            "in": "query",
            "required": false,
            "description": description,
            "schema": { "type": kind },
        }));
    }
    for (name, required, description) in spec.headers {
        parameters.push(json!({
            "name": name,
            "in": "header",
            "required": required,
            "description": description,
            "schema": { "type": "string" },
        }));
    }
    if !parameters.is_empty() {
        op.insert("parameters".to_owned(), Value::Array(parameters));
    }

    if let Some(body) = spec.body {
        op.insert(
            "requestBody".to_owned(),
            json!({
                "required": true,
                "content": { "application/json": { "schema": reference(body) } },
            }),
        );
    }

    let mut responses = Map::new();
    let (status, media, schema) = spec.ok;
    let mut ok = Map::new();
    ok.insert("description".to_owned(), json!(status_text(status)));
    let schema = schema.map_or_else(
        || {
            if media == "image/png" {
                json!({ "type": "string", "contentMediaType": "image/png" })
            } else {
                json!({})
            }
        },
        reference,
    );
    let mut content = Map::new();
    content.insert(media.to_owned(), json!({ "schema": schema }));
    ok.insert("content".to_owned(), Value::Object(content));
    responses.insert(status.to_string(), Value::Object(ok));
    for (status, description) in spec.also {
        responses.insert(status.to_string(), json!({ "description": description }));
    }
    for status in spec.errors {
        responses.insert(
            status.to_string(),
            json!({
                "description": status_text(*status),
                "content": { "application/json": { "schema": reference("Error") } },
            }),
        );
    }
    op.insert("responses".to_owned(), Value::Object(responses));
    Value::Object(op)
}

/// The JSON schemas of the bodies the API takes and answers.
fn schemas() -> Value {
    let ms = json!({ "type": "integer", "description": "Milliseconds since the Unix epoch." });
    let ms_or_null =
        json!({ "type": ["integer", "null"], "description": "Milliseconds since the Unix epoch." });
    let string_or_null = json!({ "type": ["string", "null"] });
    let phase = json!({
        "type": "string",
        "enum": ["pending", "provisioning", "awaiting_login", "working", "backing_off",
                 "login_expired", "parked", "stopped", "deleting"],
    });
    let mut schemas = Map::new();
    let mut put = |name: &str, schema: Value| {
        schemas.insert(name.to_owned(), schema);
    };
    put(
        "Error",
        json!({
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": { "type": "string", "description": "Stable snake_case code (quota_exceeded, chip_not_found, unauthorized, ...)." },
                        "message": { "type": "string" },
                        "retryable": { "type": "boolean" },
                        "limit": { "type": "string" },
                        "max": { "type": "integer" },
                        "in_use": { "type": "integer" },
                        "reason": { "type": "string" },
                        "phase": phase,
                        "retry_after_ms": { "type": "integer" },
                        "field": { "type": "string" },
                    },
                    "additionalProperties": true,
                },
            },
        }),
    );
    put(
        "Status",
        json!({
            "type": "object",
            "required": ["status"],
            "properties": { "status": { "type": "string" } },
        }),
    );
    put(
        "Limits",
        json!({
            "type": "object",
            "required": ["max_chips", "max_running_sessions", "max_sends_per_day"],
            "properties": {
                "max_chips": { "type": "integer", "minimum": 0 },
                "max_running_sessions": { "type": "integer", "minimum": 0 },
                "max_sends_per_day": { "type": "integer", "minimum": 0 },
            },
            "additionalProperties": false,
        }),
    );
    put(
        "CreateTenant",
        json!({
            "type": "object",
            "required": ["id"],
            "properties": {
                "id": { "type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,22}[a-z0-9])?$" },
                "limits": reference("Limits"),
            },
            "additionalProperties": false,
        }),
    );
    put(
        "Tenant",
        json!({
            "type": "object",
            "required": ["id", "status", "limits", "webhook_key_rotating"],
            "properties": {
                "id": { "type": "string" },
                "status": { "type": "string", "enum": ["active", "suspended", "deleted"] },
                "limits": reference("Limits"),
                "webhook_key_rotating": { "type": "boolean" },
            },
        }),
    );
    put(
        "TenantList",
        json!({
            "type": "object",
            "required": ["tenants"],
            "properties": { "tenants": { "type": "array", "items": reference("Tenant") } },
        }),
    );
    put(
        "TenantCreated",
        json!({
            "type": "object",
            "required": ["tenant", "api_token"],
            "properties": {
                "tenant": reference("Tenant"),
                "api_token": { "type": "string", "description": "Shown once: store it." },
            },
        }),
    );
    put(
        "TokenRotated",
        json!({
            "type": "object",
            "required": ["tenant", "api_token"],
            "properties": {
                "tenant": { "type": "string" },
                "api_token": { "type": "string", "description": "Shown once; the previous token no longer works." },
            },
        }),
    );
    put(
        "OffboardReport",
        json!({
            "type": "object",
            "properties": {
                "tenant": reference("Tenant"),
                "chips": { "type": "array", "items": { "type": "string" } },
                "containers": { "type": "array", "items": { "type": "string" } },
                "volumes_removed": { "type": "boolean" },
                "proxy_rows": { "type": "integer" },
                "stray_reservations": { "type": "integer" },
                "records": { "type": "integer" },
            },
        }),
    );
    put(
        "WebhookKeyRotation",
        json!({
            "type": "object",
            "properties": {
                "started": { "type": "boolean" },
                "finished": { "type": "boolean" },
                "moved": { "type": "array", "items": { "type": "string" } },
                "pending": { "type": "array", "items": { "type": "string" } },
            },
        }),
    );
    put(
        "CreateChip",
        json!({
            "type": "object",
            "properties": {
                "id": { "type": "string", "description": "1 to 26 of a-z, 0-9, '-' (a fresh ULID when absent)." },
                "login": { "type": "string", "enum": ["qr", "pairing_code"], "default": "qr" },
                "phone": { "type": "string", "description": "Country code first, 5 to 15 digits; required for pairing_code." },
                "proxy_country": { "type": "string", "description": "ISO 3166-1 alpha-2, e.g. BR." },
            },
            "additionalProperties": false,
        }),
    );
    put(
        "Chip",
        json!({
            "type": "object",
            "required": ["id", "phase", "desired", "login"],
            "properties": {
                "id": { "type": "string" },
                "phase": phase,
                "phase_detail": { "type": "object", "description": "The phase's data: since_ms, reason, attempt, next_try_ms, method, cause, ..." },
                "desired": { "type": "string", "enum": ["running", "stopped", "deleted"] },
                "login": { "type": "string", "enum": ["qr", "pairing_code"] },
                "phone": string_or_null,
                "proxy_country": string_or_null,
                "login_offer": {
                    "type": ["object", "null"],
                    "description": "What is on offer while awaiting login: {kind: qr, window_started_at_ms} or {kind: pairing_code, code_available, expires_at_ms}; never the value.",
                },
                "account": {
                    "type": ["object", "null"],
                    "properties": { "id": { "type": "string" }, "push_name": string_or_null },
                },
                "last_error": {
                    "type": ["object", "null"],
                    "properties": {
                        "reason": { "type": "string" },
                        "kind": { "type": "string" },
                        "attempt": { "type": "integer" },
                        "first_at_ms": ms,
                        "at_ms": ms,
                    },
                },
                "next_try_ms": ms_or_null,
                "created_at_ms": ms,
                "updated_at_ms": ms,
                "desired_version": { "type": "integer" },
                "observed_version": { "type": "integer" },
            },
        }),
    );
    put(
        "ChipList",
        json!({
            "type": "object",
            "required": ["chips"],
            "properties": {
                "chips": { "type": "array", "items": reference("Chip") },
                "next_after": string_or_null,
            },
        }),
    );
    put(
        "QrRaw",
        json!({
            "type": "object",
            "required": ["value"],
            "properties": { "value": { "type": "string", "description": "The text the QR code encodes (a credential: do not log it)." } },
        }),
    );
    put(
        "PairingCode",
        json!({
            "type": "object",
            "required": ["code"],
            "properties": {
                "code": { "type": "string", "description": "The code to type on the phone (a credential: do not log it)." },
                "expires_at_ms": ms_or_null,
            },
        }),
    );
    put(
        "SendText",
        json!({
            "type": "object",
            "required": ["chat", "text"],
            "properties": {
                "chat": { "type": "string", "description": "e.g. 5511999999999@c.us" },
                "text": { "type": "string" },
                "choreography": { "type": "boolean", "default": true, "description": "Seen, then typing for a time that grows with the text, before the send." },
                "max_wait_ms": { "type": "integer", "default": 0, "description": "How long to wait for the pacer (at most 30000)." },
            },
            "additionalProperties": false,
        }),
    );
    put(
        "SendReceipt",
        json!({
            "type": "object",
            "required": ["chip", "status", "replayed"],
            "properties": {
                "chip": { "type": "string" },
                "message_id": string_or_null,
                "status": { "type": "string", "enum": ["pending", "sent", "unknown", "failed"] },
                "ack": { "type": ["string", "null"], "enum": ["error", "pending", "server", "device", "read", "played", "other", null] },
                "ack_code": { "type": ["integer", "null"] },
                "failure_reason": string_or_null,
                "replayed": { "type": "boolean" },
            },
        }),
    );
    put(
        "Message",
        json!({
            "type": "object",
            "required": ["idempotency_key", "chip", "chat", "status"],
            "properties": {
                "idempotency_key": { "type": "string" },
                "chip": { "type": "string" },
                "chat": { "type": "string" },
                "message_id": string_or_null,
                "status": { "type": "string", "enum": ["pending", "sent", "unknown", "failed"] },
                "ack": { "type": ["string", "null"] },
                "ack_code": { "type": ["integer", "null"] },
                "failure_reason": string_or_null,
                "text_len": { "type": "integer" },
                "created_at_ms": ms,
                "updated_at_ms": ms,
            },
        }),
    );
    put(
        "Event",
        json!({
            "type": "object",
            "description": "The data of an SSE `change` event (its id is `seq`). A `gap` event's data is Gap.",
            "required": ["seq", "chip", "at_ms", "phase", "observed_version", "kind"],
            "properties": {
                "seq": { "type": "integer" },
                "chip": { "type": "string" },
                "at_ms": ms,
                "phase": phase,
                "observed_version": { "type": "integer" },
                "kind": {
                    "type": "string",
                    "enum": ["created", "phase_changed", "qr_available", "pairing_code", "logged_in",
                             "backing_off", "parked", "login_expired", "step_failed", "alert",
                             "deleted", "message_received", "message_status", "send_failed",
                             "upgrade", "other"],
                },
                "from": phase,
                "to": phase,
                "window_started_at_ms": ms,
                "expires_at_ms": ms,
                "account": { "type": "object" },
                "reason": { "type": "string" },
                "last_reason": string_or_null,
                "attempt": { "type": "integer" },
                "next_try_ms": ms,
                "step": { "type": "string" },
                "error_kind": { "type": "string" },
                "alert": { "type": "string" },
                "chat": { "type": "string" },
                "message_id": { "type": "string" },
                "ack": { "type": "string" },
                "ack_code": { "type": "integer" },
                "idempotency_key": { "type": "string" },
                "stage": { "type": "string" },
            },
        }),
    );
    put(
        "Gap",
        json!({
            "type": "object",
            "required": ["missed", "resume_after"],
            "properties": {
                "missed": { "type": "integer" },
                "resume_after": { "type": "integer", "description": "Reconnect with Last-Event-ID (or after=) this number." },
            },
        }),
    );
    put(
        "WsMessage",
        json!({
            "description": "One WebSocket text message: an Event or a Gap with `type` change or gap.",
            "oneOf": [
                { "allOf": [reference("Event"), { "properties": { "type": { "const": "change" } } }] },
                { "allOf": [reference("Gap"), { "properties": { "type": { "const": "gap" } } }] },
            ],
        }),
    );
    Value::Object(schemas)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::{Duration, UNIX_EPOCH};

    use session_supervisor::{ChipKey, ChipRecord, ChipSpec, LastError, Reason};
    use tenant_isolation::{ChipId, TenantId};

    use super::*;

    /// The property names of an object schema, and of its nested object schemas, as dotted
    /// paths.
    fn schema_fields(schema: &Value, prefix: &str, found: &mut BTreeSet<String>) {
        if let Some(properties) = schema["properties"].as_object() {
            for (name, property) in properties {
                let path = format!("{prefix}{name}");
                found.insert(path.clone());
                schema_fields(property, &format!("{path}."), found);
            }
        }
    }

    /// The field names of a JSON value, and of its nested objects, as dotted paths.
    fn value_fields(value: &Value, prefix: &str, found: &mut BTreeSet<String>) {
        if let Some(map) = value.as_object() {
            for (name, field) in map {
                let path = format!("{prefix}{name}");
                found.insert(path.clone());
                value_fields(field, &format!("{path}."), found);
            }
        }
    }

    #[test]
    fn the_chip_schema_names_exactly_what_a_chip_view_carries() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let key = ChipKey::new(
            TenantId::new("acme").expect("a tenant id"),
            ChipId::new("sales-1").expect("a chip id"),
        );
        let mut record = ChipRecord::new(key, ChipSpec::qr(), true, at);
        record.observed.last_error = Some(LastError {
            reason: Reason::StepDeadline,
            kind: "step_deadline".to_owned(),
            detail: "WAHA said something that must not reach a tenant".to_owned(),
            attempt: 1,
            first_at: at,
            at,
        });
        let view = crate::service::views::chip_json(&record);
        let mut in_view = BTreeSet::new();
        value_fields(&view, "", &mut in_view);
        let mut in_schema = BTreeSet::new();
        schema_fields(
            &openapi_document()["components"]["schemas"]["Chip"],
            "",
            &mut in_schema,
        );
        let undocumented: Vec<_> = in_view.difference(&in_schema).collect();
        assert!(
            undocumented.is_empty(),
            "fields the Chip schema lacks: {undocumented:?}"
        );
        // Every documented top-level field is there (nested ones may be absent, e.g. no account).
        let missing: Vec<_> = in_schema
            .iter()
            .filter(|path| !path.contains('.') && !in_view.contains(*path))
            .collect();
        assert!(
            missing.is_empty(),
            "documented fields a chip view lacks: {missing:?}"
        );
        assert!(
            !view.to_string().contains("must not reach"),
            "no WAHA detail in a view"
        );
    }

    fn refs(value: &Value, found: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    if key == "$ref"
                        && let Value::String(target) = value
                    {
                        found.insert(target.clone());
                    }
                    refs(value, found);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
            _ => {}
        }
    }

    #[test]
    fn every_route_is_documented_once_and_every_reference_resolves() {
        let document = openapi_document();
        let paths = document["paths"].as_object().expect("paths");
        let routes = documented_routes();
        let unique: BTreeSet<_> = routes.iter().collect();
        assert_eq!(unique.len(), routes.len(), "a route is listed twice");
        for (method, path) in &routes {
            let operation = &document["paths"][*path][method.to_ascii_lowercase().as_str()];
            assert!(operation.is_object(), "{method} {path} is not documented");
            assert!(operation["responses"].is_object(), "{method} {path}");
            for name in path_params(path) {
                let documented = operation["parameters"].as_array().is_some_and(|params| {
                    params
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path")
                });
                assert!(documented, "{method} {path}: path parameter {name}");
            }
        }
        let operations: usize = paths
            .values()
            .map(|item| item.as_object().map_or(0, Map::len))
            .sum();
        assert_eq!(
            operations,
            routes.len(),
            "the document has no route the table lacks"
        );
        let mut found = BTreeSet::new();
        refs(&document, &mut found);
        let schemas = document["components"]["schemas"]
            .as_object()
            .expect("schemas");
        for target in found {
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected reference {target}"));
            assert!(schemas.contains_key(name), "{target} does not resolve");
        }
        let ids: BTreeSet<_> = paths
            .values()
            .flat_map(|item| item.as_object().into_iter().flat_map(|ops| ops.values()))
            .map(|op| op["operationId"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(ids.len(), routes.len(), "operation ids are unique");
    }

    #[test]
    fn the_ingest_route_is_documented() {
        assert!(
            documented_routes().contains(&("POST", session_supervisor::INGEST_ROUTE)),
            "{:?}",
            documented_routes()
        );
    }
}
