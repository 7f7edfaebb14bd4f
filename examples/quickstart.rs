//! The main job on the embedded default: no Docker, no PostgreSQL.
//!
//! `cargo run --example quickstart` provisions two chips for one tenant end to end with the
//! finished crates, and prints what happens as it happens:
//!
//! 1. a tenant with plan limits and generated secrets in the in-memory directory;
//! 2. quota admission (the third chip of a two-chip plan is refused, naming the limit);
//! 3. the tenant's WAHA container from the pool, on the in-memory runtime, which runs the
//!    project's WAHA simulator in-process; the pool's readiness gate probes it over HTTP;
//! 4. a sticky proxy lease per chip, matched to the phone number's country;
//! 5. WAHA sessions created with the generated session name, the proxy, a signed webhook and
//!    tenant/chip metadata, then started;
//! 6. webhooks received on a local HTTP endpoint, verified (HMAC-SHA512 over the raw bytes),
//!    and routed to (tenant, chip) by parsing the session name; a forged and a foreign one are
//!    refused;
//! 7. the QR code (raw value and PNG) once the session asks for a scan; a simulated phone scans;
//! 8. a paced message send, then its delivery acks arriving as webhooks;
//! 9. explicit clean-up.
//!
//! Nothing here is canned: every line printed reports a value the libraries returned.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chipfleet::container_pool::{
    ImageRef, InMemoryRuntime, PoolConfig, PoolEventKind, TenantPool, WahaHealthProbe,
    keys_from_directory,
};
use chipfleet::proxy_allocator::{
    AllocationPolicy, ChipProxyRequest, InMemoryLeaseStore, ProxyAllocator, StaticListSource,
};
use chipfleet::tenant_isolation::{
    ChipId, MemoryQuotaLedger, MemorySendPacer, MemoryTenantDirectory, NewTenant, Pace,
    PacerConfig, PlanLimits, QuotaLedger, SendPacer, SessionName, SlotKind, SystemClock,
    TenantDirectory, TenantId, TenantSecrets,
};
use chipfleet::waha_client::metadata;
use chipfleet::waha_client::webhook::{EventPayload, MessageAck, WebhookEvent};
use chipfleet::waha_client::{
    HmacKey, SessionConfig, SessionStatus, TextMessage, WahaApi, WahaApiExt, WahaClient,
    WebhookConfig,
};
use tokio::sync::mpsc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let started = Instant::now();
    let say = |text: String| println!("[{:>6.3}s] {text}", started.elapsed().as_secs_f64());

    // 1. The tenant.
    let directory: Arc<dyn TenantDirectory> = Arc::new(MemoryTenantDirectory::new());
    let tenant_id = TenantId::new("acme")?;
    let tenant = directory
        .create(NewTenant::new(
            tenant_id.clone(),
            PlanLimits::new(2, 2, 500),
            TenantSecrets::generate()?,
        ))
        .await?;
    say(format!(
        "tenant {} created: status {:?}, limits {:?}, secrets {:?}",
        tenant.id, tenant.status, tenant.limits, tenant.secrets
    ));
    let hmac_key = tenant.secrets.webhook_hmac_key.clone();

    // 2. Quota admission: two chips fit the plan, a third does not.
    let ledger = MemoryQuotaLedger::new(directory.clone(), Arc::new(SystemClock));
    let chips = [ChipId::new("sales")?, ChipId::new("support")?];
    for chip in &chips {
        let reservation = ledger.reserve(&tenant_id, SlotKind::Chip, chip).await?;
        say(format!("chip slot reserved for {chip}: {reservation:?}"));
    }
    match ledger
        .reserve(&tenant_id, SlotKind::Chip, &ChipId::new("extra")?)
        .await
    {
        Err(refused) => say(format!("third chip refused: {refused}")),
        Ok(reservation) => return Err(format!("quota let a third chip in: {reservation:?}").into()),
    }

    // 3. The tenant's container, on the in-memory runtime (the embedded default).
    // The embedded default's "containers": the WAHA simulator, in-process on 127.0.0.1 (the
    // project's `waha_sim::SimLauncher`), configured by each container's environment.
    let launcher = Arc::new(waha_sim::SimLauncher::new());
    let runtime = Arc::new(InMemoryRuntime::new(launcher.clone()));
    let mut config = PoolConfig::new(ImageRef::parse("devlikeapro/waha:latest")?);
    config.volumes = false;
    let pool = TenantPool::new(
        runtime,
        keys_from_directory(directory.clone()),
        Arc::new(WahaHealthProbe::new(Duration::from_secs(2))?),
        config,
    )?;
    let mut progress = pool.subscribe();
    let progress_printer = tokio::spawn(async move {
        // Printed as the pool reports them, while `ensure` is still running.
        while let Ok(event) = progress.recv().await {
            println!(
                "[{:>6.3}s] pool: {} {:?}",
                started.elapsed().as_secs_f64(),
                event.tenant,
                event.kind
            );
            if matches!(
                event.kind,
                PoolEventKind::Ready { .. } | PoolEventKind::Failed { .. }
            ) {
                break;
            }
        }
    });
    let endpoint = pool.ensure(&tenant_id).await?;
    progress_printer.await?;
    say(format!(
        "container {} ready at {} (api key {:?})",
        endpoint.container_name, endpoint.base_url, endpoint.api_key
    ));
    let waha: Arc<dyn WahaApi> = Arc::new(WahaClient::new(
        endpoint.base_url.clone(),
        endpoint.api_key.clone(),
    )?);
    let version = waha.version().await?;
    say(format!(
        "server: WAHA {} (engine {}, tier {})",
        version.version,
        version.engine.as_deref().unwrap_or("?"),
        version.tier.as_deref().unwrap_or("?")
    ));

    // 4. Sticky proxy leases, matched by the phone number's country.
    let proxies = StaticListSource::parse(
        "http://br-user:p%40ss%3Aw%2Frd@203.0.113.10:3128 country=BR\n\
         http://pt-user:secret@198.51.100.20:3128 country=PT\n",
    )?;
    let allocator = ProxyAllocator::new(
        Arc::new(proxies),
        Arc::new(InMemoryLeaseStore::new()),
        AllocationPolicy::default(),
    )?;
    let phones = ["+55 11 98888-0001", "+351 912 000 002"];

    // 6 (set up first). The webhook endpoint: verify, parse, route.
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let receiver = WebhookReceiver {
        hmac_key: hmac_key.clone(),
        events: events_tx,
    };
    let webhook_addr = serve_webhooks(receiver).await?;
    let webhook_url = format!("http://{webhook_addr}/webhooks/waha");
    say(format!("webhook endpoint listening on {webhook_url}"));

    // 5. Sessions: generated names, proxy, signed webhook, metadata; then start.
    let mut names = Vec::new();
    for (chip, phone) in chips.iter().zip(phones) {
        let name = SessionName::new(&tenant_id, chip);
        let lease = allocator
            .allocate(&ChipProxyRequest::new(tenant_id.clone(), chip.clone()).with_phone(phone))
            .await?;
        let again = allocator
            .allocate(&ChipProxyRequest::new(tenant_id.clone(), chip.clone()).with_phone(phone))
            .await?;
        let proxy = allocator.waha_proxy(&lease).await?;
        say(format!(
            "chip {chip} ({phone}): proxy lease on {} (sticky: {}), WAHA proxy {proxy:?}",
            lease.endpoint,
            again == lease
        ));
        promise(again == lease, "a chip's proxy lease is sticky")?;

        let mut session_config = SessionConfig::default();
        session_config
            .metadata
            .insert(metadata::TENANT.into(), tenant_id.to_string());
        session_config
            .metadata
            .insert(metadata::CHIP.into(), chip.to_string());
        session_config.proxy = Some(proxy);
        session_config.webhooks.push(
            WebhookConfig::new(
                webhook_url.clone(),
                ["session.status", "message", "message.ack"],
            )
            .signed_with(hmac_key.clone()),
        );
        let created = waha.ensure_session(name.as_str(), &session_config).await?;
        let repeated = waha.ensure_session(name.as_str(), &session_config).await?;
        // What the server accepted, from its own log: one create, and nothing for the repeat
        // (which tries a create first, is answered 422 "already exists", then only reads).
        let accepted: Vec<_> = launcher
            .control(&endpoint.container_name)
            .ok_or("the tenant's simulator is not running")?
            .calls_for(name.as_str())
            .into_iter()
            .filter(|call| (200..300).contains(&call.status))
            .collect();
        say(format!(
            "session {} ensured (status {:?}); ensuring again changed nothing: {} \
             (the server accepted {} mutating call(s) for it)",
            created.name,
            created.status,
            repeated.config == created.config,
            accepted.len()
        ));
        promise(
            repeated.config == created.config && accepted.len() == 1 && accepted[0].is_create(),
            "ensuring a session twice creates it once and changes nothing the second time",
        )?;
        let slot = ledger
            .reserve(&tenant_id, SlotKind::RunningSession, chip)
            .await?;
        say(format!(
            "running-session slot for {chip}: {} of {} in use",
            slot.in_use, slot.max
        ));
        let running = waha.ensure_started(name.as_str()).await?;
        say(format!(
            "session {} started: {:?}",
            running.name, running.status
        ));
        names.push(name);
    }

    // 6 (continued). Refusals: a forged signature and a session name that is not ours.
    let forged = post_webhook(
        &webhook_url,
        br#"{"event":"session.status","session":"cf_acme_sales","payload":{"name":"cf_acme_sales","status":"WORKING"}}"#,
        Some(&"0".repeat(128)),
    )
    .await?;
    say(format!("forged webhook answered {forged}"));
    promise(
        forged.starts_with("401:"),
        "a webhook with a forged signature is refused",
    )?;
    let foreign_body =
        br#"{"event":"session.status","session":"test_1","payload":{"name":"test_1","status":"WORKING"}}"#;
    let signature = chipfleet::waha_client::webhook::sign(&hmac_key, foreign_body);
    let foreign = post_webhook(&webhook_url, foreign_body, Some(&signature)).await?;
    say(format!(
        "correctly signed webhook for the foreign session `test_1` answered {foreign}"
    ));
    promise(
        foreign.starts_with("422:"),
        "a correctly signed webhook for a session that is not ours is refused",
    )?;

    // 7. Wait for each chip to ask for a scan (pushed, not polled), show its QR, scan it.
    let mut working = HashMap::new();
    let mut asked = HashMap::new();
    while working.len() < names.len() {
        let routed = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await?
            .ok_or("webhook channel closed")?;
        say(format!(
            "webhook {} for tenant {} chip {}: {}",
            routed.event.event,
            routed.tenant,
            routed.chip,
            describe(&routed.event.payload)
        ));
        if let EventPayload::SessionStatus(change) = &routed.event.payload {
            let name = SessionName::new(&routed.tenant, &routed.chip);
            match change.status {
                SessionStatus::ScanQrCode if !asked.contains_key(&routed.chip) => {
                    let raw = waha.qr_raw(name.as_str()).await?;
                    let png = waha.qr_png(name.as_str()).await?;
                    say(format!(
                        "QR for {}: raw value {} chars, PNG {} bytes (magic ok: {})",
                        routed.chip,
                        raw.value.len(),
                        png.len(),
                        png.starts_with(b"\x89PNG")
                    ));
                    asked.insert(routed.chip.clone(), ());
                    let index = chips.iter().position(|c| c == &routed.chip).unwrap_or(0);
                    let phone: String =
                        phones[index].chars().filter(char::is_ascii_digit).collect();
                    // The simulated phone: the in-process simulator of this tenant's container.
                    launcher
                        .control(&endpoint.container_name)
                        .ok_or("the tenant's simulator is not running")?
                        .scan_as(name.as_str(), waha_sim::Me::phone(&phone, "Acme"))?;
                    say(format!("a phone scanned the QR of {}", routed.chip));
                }
                SessionStatus::Working => {
                    working.insert(routed.chip.clone(), ());
                }
                _ => {}
            }
        }
    }
    for name in &names {
        let me = waha.me(name.as_str()).await?;
        say(format!("{} is logged in as {:?}", name, me.map(|m| m.id)));
    }

    // 8. A paced send, then its acks as webhooks.
    let pacer = MemorySendPacer::new(
        PacerConfig {
            jitter_min: Duration::from_millis(50),
            jitter_max: Duration::from_millis(250),
            ..PacerConfig::default()
        },
        Arc::new(SystemClock),
    )?;
    let sender = &chips[0];
    pacer
        .chip_activated(&tenant_id, sender, SystemTime::now())
        .await?;
    // The pacer first, then the daily quota: a send the pacer refuses is never counted
    // (`admit_send` is not safe to retry).
    let sent = match pacer.acquire(&tenant_id, sender).await? {
        Pace::Go { jitter } => {
            say(format!("pacer: go after a jitter of {jitter:?}"));
            let admission = ledger.admit_send(&tenant_id).await?;
            say(format!("plan admits the send: {admission:?}"));
            tokio::time::sleep(jitter).await;
            let session = SessionName::new(&tenant_id, sender);
            waha.send_text(&TextMessage::new(
                session.as_str(),
                "5511999990000@c.us",
                "Olá! Seu pedido saiu para entrega.",
            ))
            .await?
        }
        other => return Err(format!("pacer refused the first send: {other:?}").into()),
    };
    let message_id = sent.id.clone().ok_or("sendText answered without an id")?;
    say(format!("sent message {message_id}"));
    let mut read = false;
    while !read {
        let routed = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await?
            .ok_or("webhook channel closed")?;
        if let EventPayload::MessageAck(ack) = &routed.event.payload {
            say(format!(
                "webhook message.ack for chip {}: message {} is {:?}",
                routed.chip, ack.id, ack.ack
            ));
            read = ack.id == message_id && matches!(ack.ack, MessageAck::Read | MessageAck::Played);
        }
    }
    let usage = ledger.usage(&tenant_id).await?;
    say(format!("quota usage now: {usage:?}"));

    // 9. Clean-up, explicit and async.
    for (chip, name) in chips.iter().zip(&names) {
        waha.delete_session(name.as_str()).await?;
        allocator.release(&tenant_id, chip).await?;
        ledger.release(&tenant_id, SlotKind::Chip, chip).await?;
    }
    pool.remove_tenant(&tenant_id, true).await?;
    say(format!(
        "cleaned up: sessions deleted, leases and quota released, container removed; {} chips hold slots",
        ledger.usage(&tenant_id).await?.chips
    ));
    Ok(())
}

/// A short, human description of a webhook payload.
fn describe(payload: &EventPayload) -> String {
    match payload {
        EventPayload::SessionStatus(change) => format!("status {:?}", change.status),
        EventPayload::MessageAck(ack) => format!("message {} ack {:?}", ack.id, ack.ack),
        EventPayload::Message(message) => format!("message {} from {}", message.id, message.from),
        other => format!("{other:?}"),
    }
}

/// A webhook that passed verification and routing.
struct Routed {
    tenant: TenantId,
    chip: ChipId,
    event: WebhookEvent,
}

/// The host's webhook endpoint: verify over the raw bytes, parse, route by session name and
/// cross-check with the metadata.
#[derive(Clone)]
struct WebhookReceiver {
    hmac_key: HmacKey,
    events: mpsc::UnboundedSender<Routed>,
}

async fn receive(
    State(receiver): State<WebhookReceiver>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let event = match WebhookEvent::from_signed(&receiver.hmac_key, &headers, &body) {
        Ok(event) => event,
        Err(refused) => return (StatusCode::UNAUTHORIZED, refused.to_string()),
    };
    let name = match SessionName::parse(&event.session) {
        Ok(name) => name,
        Err(refused) => return (StatusCode::UNPROCESSABLE_ENTITY, refused.to_string()),
    };
    let (tenant, chip) = name.into_parts();
    if event.metadata.get(metadata::TENANT).map(String::as_str) != Some(tenant.as_str())
        || event.metadata.get(metadata::CHIP).map(String::as_str) != Some(chip.as_str())
    {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "metadata does not match the session name".into(),
        );
    }
    let _ = receiver.events.send(Routed {
        tenant,
        chip,
        event,
    });
    (StatusCode::OK, String::new())
}

async fn serve_webhooks(receiver: WebhookReceiver) -> Result<SocketAddr, BoxError> {
    let app = axum::Router::new()
        .route("/webhooks/waha", post(receive))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// Fails the run (non-zero exit) when a promise of the README does not hold.
fn promise(holds: bool, what: &str) -> Result<(), BoxError> {
    if holds {
        Ok(())
    } else {
        Err(format!("broken promise: {what}").into())
    }
}

/// Posts a body to the webhook endpoint as a sender would; returns "STATUS: reason".
async fn post_webhook(url: &str, body: &[u8], signature: Option<&str>) -> Result<String, BoxError> {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request
            .header("X-Webhook-Hmac", signature)
            .header("X-Webhook-Hmac-Algorithm", "sha512");
    }
    let response = request.send().await?;
    let status = response.status();
    Ok(format!("{}: {}", status.as_u16(), response.text().await?))
}
