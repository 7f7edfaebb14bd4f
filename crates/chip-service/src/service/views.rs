//! The JSON shapes the API answers, defined here (never the sibling crates' `Debug` or serde
//! forms, which may change and, for a chip record, would carry a pairing code). Times are
//! milliseconds since the Unix epoch (`*_ms`). Nothing here carries a tenant secret, a QR
//! value or a pairing code.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use session_supervisor::{
    Alert, ChangeItem, ChipChange, ChipChangeKind, ChipRecord, LoginKind, LoginMethod, LoginOffer,
    OffboardReport, OutboxRecord, OutboxStatus, ParkReason, Phase, RunState, SendReceipt,
    StopCause, UpgradeStage, WebhookKeyRotation,
};
use tenant_isolation::{PlanLimits, Tenant};
use waha_client::Me;
use waha_client::webhook::MessageAck;

/// The host label a QR chip's phone number is kept under (a pairing-code chip has it in its
/// login method). Host labels are never sent to WAHA.
pub const PHONE_LABEL: &str = "chipservice.phone";

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn limits_json(limits: &PlanLimits) -> Value {
    json!({
        "max_chips": limits.max_chips,
        "max_running_sessions": limits.max_running_sessions,
        "max_sends_per_day": limits.max_sends_per_day,
    })
}

/// A tenant, without its secrets.
pub(crate) fn tenant_json(tenant: &Tenant) -> Value {
    json!({
        "id": tenant.id.as_str(),
        "status": tenant.status.as_str(),
        "limits": limits_json(&tenant.limits),
        "webhook_key_rotating": tenant.secrets.webhook_key_rotating(),
    })
}

fn me_json(me: &Me) -> Value {
    json!({ "id": me.id, "push_name": me.push_name })
}

fn run_state(run: RunState) -> &'static str {
    match run {
        RunState::Running => "running",
        RunState::Stopped => "stopped",
        RunState::Deleted => "deleted",
    }
}

fn login_kind(kind: LoginKind) -> &'static str {
    match kind {
        LoginKind::Qr => "qr",
        LoginKind::PairingCode => "pairing_code",
        LoginKind::Passkey => "passkey",
    }
}

fn park_last_reason(reason: ParkReason) -> Option<&'static str> {
    match reason {
        ParkReason::Looping { last_reason } | ParkReason::RetryBudgetSpent { last_reason } => {
            Some(last_reason.as_str())
        }
        _ => None,
    }
}

/// What the phase carries besides its name.
fn phase_detail(phase: &Phase) -> Value {
    match phase {
        Phase::Pending => json!({}),
        Phase::Provisioning { next } => json!({ "next_step": next.as_str() }),
        Phase::AwaitingLogin { method, since } => {
            json!({ "method": login_kind(*method), "since_ms": ms(*since) })
        }
        Phase::Working { since } => json!({ "since_ms": ms(*since) }),
        Phase::BackingOff {
            reason,
            attempt,
            next_try,
        } => json!({
            "reason": reason.as_str(),
            "attempt": attempt,
            "next_try_ms": ms(*next_try),
        }),
        Phase::LoginExpired { since } => json!({ "since_ms": ms(*since) }),
        Phase::Parked { reason, since } => json!({
            "reason": reason.as_str(),
            "last_reason": park_last_reason(*reason),
            "since_ms": ms(*since),
        }),
        Phase::Stopped { cause } => {
            let cause = match cause {
                StopCause::Host => "host",
                StopCause::TenantInactive => "tenant_inactive",
                StopCause::Held => "held",
            };
            json!({ "cause": cause })
        }
        Phase::Deleting { remaining } => json!({
            "session": remaining.session,
            "proxy": remaining.proxy,
            "running_slot": remaining.running_slot,
            "chip_slot": remaining.chip_slot,
            "pacer": remaining.pacer,
        }),
    }
}

/// The login on offer: that a QR code or a pairing code is available, never the value.
fn login_offer(offer: Option<&LoginOffer>, now: SystemTime) -> Value {
    let Some(offer) = offer else {
        return Value::Null;
    };
    match offer {
        LoginOffer::Qr { window_started_at } => json!({
            "kind": "qr",
            "window_started_at_ms": ms(*window_started_at),
        }),
        LoginOffer::PairingCode { expires_at, .. } => json!({
            "kind": "pairing_code",
            "code_available": offer.live_pairing_code(now).is_some(),
            "expires_at_ms": ms(*expires_at),
        }),
    }
}

/// A chip, as the API shows it.
pub(crate) fn chip_json(record: &ChipRecord) -> Value {
    let spec = &record.desired.spec;
    let (login, phone) = match &spec.login {
        LoginMethod::Qr => ("qr", spec.host_labels.get(PHONE_LABEL).cloned()),
        LoginMethod::PairingCode { phone } => ("pairing_code", Some(phone.as_str().to_owned())),
    };
    let observed = &record.observed;
    // Never `error.detail`: it is the failing call's `Display` text, which for a WAHA API
    // error carries WAHA's response body (a session's config could be echoed in it). It stays
    // in the chip record, for operators; tenants get the reason, the kind and the attempt.
    let last_error = observed.last_error.as_ref().map(|error| {
        json!({
            "reason": error.reason.as_str(),
            "kind": error.kind,
            "attempt": error.attempt,
            "first_at_ms": ms(error.first_at),
            "at_ms": ms(error.at),
        })
    });
    json!({
        "id": record.key.chip.as_str(),
        "phase": observed.phase.kind(),
        "phase_detail": phase_detail(&observed.phase),
        "desired": run_state(record.desired.run),
        "login": login,
        "phone": phone,
        "proxy_country": spec.proxy.country.map(|country| country.as_str().to_owned()),
        "login_offer": login_offer(observed.login.as_ref(), SystemTime::now()),
        "account": observed.me.as_ref().map(me_json),
        "last_error": last_error,
        "next_try_ms": observed.next_try.map(ms),
        "created_at_ms": ms(record.created_at),
        "updated_at_ms": ms(record.updated_at),
        "desired_version": record.desired_version,
        "observed_version": record.observed_version,
    })
}

fn ack_name(ack: MessageAck) -> &'static str {
    match i64::from(ack) {
        -1 => "error",
        0 => "pending",
        1 => "server",
        2 => "device",
        3 => "read",
        4 => "played",
        n if n < 0 => "error",
        _ => "other",
    }
}

/// Inserts a send status's fields: `status`, and `ack` and `ack_code` (sent) or
/// `failure_reason` (failed).
fn status_fields(map: &mut Map<String, Value>, status: &OutboxStatus) {
    map.insert("status".to_owned(), json!(status.as_str()));
    let (ack, ack_code, failure) = match status {
        OutboxStatus::Sent { ack } => (Some(ack_name(*ack)), Some(i64::from(*ack)), None),
        OutboxStatus::Failed { reason } => (None, None, Some(reason.clone())),
        _ => (None, None, None),
    };
    map.insert("ack".to_owned(), json!(ack));
    map.insert("ack_code".to_owned(), json!(ack_code));
    map.insert("failure_reason".to_owned(), json!(failure));
}

/// What a send answered.
pub(crate) fn receipt_json(receipt: &SendReceipt) -> Value {
    let mut map = Map::new();
    map.insert("chip".to_owned(), json!(receipt.key.chip.as_str()));
    map.insert("message_id".to_owned(), json!(receipt.message_id));
    status_fields(&mut map, &receipt.status);
    map.insert("replayed".to_owned(), json!(receipt.replayed));
    Value::Object(map)
}

/// A send as the outbox keeps it (the text itself is never stored: its length is).
pub(crate) fn outbox_json(record: &OutboxRecord) -> Value {
    let mut map = Map::new();
    map.insert("idempotency_key".to_owned(), json!(record.key));
    map.insert("chip".to_owned(), json!(record.chip.as_str()));
    map.insert("chat".to_owned(), json!(record.chat));
    map.insert("message_id".to_owned(), json!(record.message_id));
    status_fields(&mut map, &record.status);
    map.insert("text_len".to_owned(), json!(record.text_len));
    map.insert("created_at_ms".to_owned(), json!(ms(record.created_at)));
    map.insert("updated_at_ms".to_owned(), json!(ms(record.updated_at)));
    Value::Object(map)
}

pub(crate) fn offboard_json(report: &OffboardReport, tenant: &Tenant) -> Value {
    json!({
        "tenant": tenant_json(tenant),
        "chips": report.chips.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        "containers": report.containers,
        "volumes_removed": report.volumes_removed,
        "proxy_rows": report.proxy_rows,
        "stray_reservations": report.stray_reservations,
        "records": report.records,
    })
}

pub(crate) fn rotation_json(report: &WebhookKeyRotation) -> Value {
    json!({
        "started": report.started,
        "finished": report.finished,
        "moved": report.moved.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        "pending": report.pending.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
    })
}

/// A chip change: `seq`, `chip`, `at_ms`, `phase` (after the change), `observed_version`,
/// `kind`, and the kind's fields. A pairing code is never included (`pairing_code` says one
/// is on offer and until when: read it from `GET /v1/chips/{chip}/pairing-code`); QR values
/// never are (`qr_available`: fetch `GET /v1/chips/{chip}/qr`).
pub(crate) fn change_json(change: &ChipChange) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("seq".to_owned(), json!(change.seq));
    map.insert("chip".to_owned(), json!(change.chip.as_str()));
    map.insert("at_ms".to_owned(), json!(ms(change.at)));
    map.insert("phase".to_owned(), json!(change.phase.as_str()));
    map.insert(
        "observed_version".to_owned(),
        json!(change.observed_version),
    );
    let mut put = |key: &str, value: Value| {
        map.insert(key.to_owned(), value);
    };
    let kind = match &change.kind {
        ChipChangeKind::Created => "created",
        ChipChangeKind::PhaseChanged { from, to } => {
            put("from", json!(from.as_str()));
            put("to", json!(to.as_str()));
            "phase_changed"
        }
        ChipChangeKind::QrAvailable { window_started_at } => {
            put("window_started_at_ms", json!(ms(*window_started_at)));
            "qr_available"
        }
        ChipChangeKind::PairingCode { expires_at, .. } => {
            put("expires_at_ms", json!(ms(*expires_at)));
            "pairing_code"
        }
        ChipChangeKind::LoggedIn { me } => {
            put("account", me_json(me));
            "logged_in"
        }
        ChipChangeKind::BackingOff {
            reason,
            attempt,
            next_try,
        } => {
            put("reason", json!(reason.as_str()));
            put("attempt", json!(attempt));
            put("next_try_ms", json!(ms(*next_try)));
            "backing_off"
        }
        ChipChangeKind::Parked { reason } => {
            put("reason", json!(reason.as_str()));
            put("last_reason", json!(park_last_reason(*reason)));
            "parked"
        }
        ChipChangeKind::LoginExpired => "login_expired",
        ChipChangeKind::StepFailed { step, reason, kind } => {
            put("step", json!(step.as_str()));
            put("reason", json!(reason.as_str()));
            put("error_kind", json!(kind));
            "step_failed"
        }
        ChipChangeKind::Alert(alert) => {
            let (name, last_reason) = match alert {
                Alert::Loop { last_reason } => ("loop", Some(last_reason.as_str())),
                Alert::BudgetSpent { last_reason } => ("budget_spent", Some(last_reason.as_str())),
                _ => ("other", None),
            };
            put("alert", json!(name));
            put("last_reason", json!(last_reason));
            "alert"
        }
        ChipChangeKind::Deleted => "deleted",
        ChipChangeKind::MessageReceived { chat, message_id } => {
            put("chat", json!(chat));
            put("message_id", json!(message_id));
            "message_received"
        }
        ChipChangeKind::MessageStatus {
            chat,
            message_id,
            ack,
        } => {
            put("chat", json!(chat));
            put("message_id", json!(message_id));
            put("ack", json!(ack_name(*ack)));
            put("ack_code", json!(i64::from(*ack)));
            "message_status"
        }
        ChipChangeKind::SendFailed { chat, key, reason } => {
            put("chat", json!(chat));
            put("idempotency_key", json!(key));
            put("reason", json!(reason));
            "send_failed"
        }
        ChipChangeKind::Upgrade { stage } => {
            let stage = match stage {
                UpgradeStage::Started => "started",
                UpgradeStage::ContainerReplaced => "container_replaced",
                UpgradeStage::Done => "done",
                UpgradeStage::Failed => "failed",
                _ => "other",
            };
            put("stage", json!(stage));
            "upgrade"
        }
        _ => "other",
    };
    map.insert("kind".to_owned(), json!(kind));
    map
}

/// A gap: `missed` changes were lost to this subscriber; resume after `resume_after`.
pub(crate) fn gap_json(missed: u64, resume_after: u64) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("missed".to_owned(), json!(missed));
    map.insert("resume_after".to_owned(), json!(resume_after));
    map
}

/// A stream item as one WebSocket text message: `{"type": "change", ...}` or
/// `{"type": "gap", "missed": .., "resume_after": ..}`.
pub(crate) fn item_message(item: &ChangeItem) -> String {
    let (kind, mut map) = match item {
        ChangeItem::Change(change) => ("change", change_json(change)),
        ChangeItem::Gap {
            missed,
            resume_after,
        } => ("gap", gap_json(*missed, *resume_after)),
    };
    map.insert("type".to_owned(), json!(kind));
    Value::Object(map).to_string()
}
