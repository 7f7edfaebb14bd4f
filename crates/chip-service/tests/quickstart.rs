//! The quickstart's scenario (seed report 000 on the embedded default), judged by the
//! simulators' own state rather than by the report alone: the report is what the quickstart
//! prints, and this test checks each of its claims against what the in-process WAHA servers
//! hold and logged (session statuses and accounts, the call log's creates, deletes and sends),
//! against the supervisor's records, the ingest's inbox, and the files it names (each QR PNG
//! is decoded and compared with the value WAHA's raw QR endpoint offered).
//!
//! Needs `rqrr` (QR decoding) and `image` (PNG decoding) as dev-dependencies.

mod common;

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use chip_service::quickstart::{
    self, CHIPS, QuickstartOptions, QuickstartReport, STALE_SESSIONS, TENANTS,
};
use chip_service::{Progress, TerminalProgress};
use session_supervisor::{ChipKey, OutboxStatus, PhaseName, SupervisorError};
use tenant_isolation::{ChipId, TenantId};
use waha_client::webhook::MessageAck;
use waha_sim::SessionStatus;

use common::{PNG_MAGIC, decode_png};

/// The chip the quickstart tries over the plan (`quickstart::Scenario::over_the_plan`).
const OVER_THE_PLAN: &str = "sales-3";

/// What the refused webhooks' event ids start with (`quickstart::webhook_body`).
const REFUSED_EVENT_ID: &str = "evt_quickstart_";

/// Shows the run on stdout like [`TerminalProgress`] and keeps every block it was shown: the
/// QR codes, as the quickstart rendered them from the value WAHA's raw QR endpoint answered.
struct Capture {
    inner: TerminalProgress,
    blocks: Mutex<Vec<(String, String)>>,
}

impl Progress for Capture {
    fn line(&self, text: &str) {
        self.inner.line(text);
    }

    fn chip(&self, chip: &str, state: &str) {
        self.inner.chip(chip, state);
    }

    fn block(&self, title: &str, body: &str) {
        self.blocks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((title.to_owned(), body.to_owned()));
        self.inner.block(title, body);
    }
}

/// The text the QR code drawn as a terminal block encodes. The quickstart draws it with
/// `qrcode`'s `Dense1x2` for a dark terminal: two module rows per line, and a *light* module
/// is the drawn half (`▀` top, `▄` bottom, `█` both, space neither).
fn decode_block(block: &str) -> Result<String, String> {
    let mut modules: Vec<Vec<bool>> = Vec::new(); // `true`: a dark module
    for line in block.lines() {
        let mut top = Vec::new();
        let mut bottom = Vec::new();
        for symbol in line.chars() {
            let (top_drawn, bottom_drawn) = match symbol {
                ' ' => (false, false),
                '\u{2580}' => (true, false),
                '\u{2584}' => (false, true),
                '\u{2588}' => (true, true),
                other => return Err(format!("{other:?} is not a QR block symbol")),
            };
            top.push(!top_drawn);
            bottom.push(!bottom_drawn);
        }
        modules.push(top);
        modules.push(bottom);
    }
    // A QR code is square: the last line's bottom half is padding when the side is odd.
    let side = modules.first().map_or(0, Vec::len);
    if side == 0 || modules.len() < side || modules.iter().any(|row| row.len() != side) {
        return Err(format!(
            "not a square block: {} module rows of {side}",
            modules.len()
        ));
    }
    modules.truncate(side);
    // Four pixels a module: room for the detector's thresholds.
    const SCALE: usize = 4;
    let mut prepared =
        rqrr::PreparedImage::prepare_from_bitmap(side * SCALE, side * SCALE, |x, y| {
            modules[y / SCALE][x / SCALE]
        });
    let decoded: Vec<Result<String, String>> = prepared
        .detect_grids()
        .iter()
        .map(|grid| {
            grid.decode()
                .map(|(_, text)| text)
                .map_err(|error| error.to_string())
        })
        .collect();
    only_one(decoded)
}

fn only_one(mut decoded: Vec<Result<String, String>>) -> Result<String, String> {
    match decoded.len() {
        1 => decoded.remove(0),
        n => Err(format!("{n} QR codes found, not 1")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_passes_seed_000_and_the_simulators_agree() {
    let output_dir =
        std::env::temp_dir().join(format!("chip-service-quickstart-{}", std::process::id()));
    let options = QuickstartOptions {
        output_dir: output_dir.clone(),
        ..QuickstartOptions::default()
    };
    let booting = options.booting;
    let progress = Capture {
        inner: TerminalProgress::plain(),
        blocks: Mutex::new(Vec::new()),
    };
    let finished = quickstart::play(options, &progress)
        .await
        .unwrap_or_else(|error| panic!("the quickstart failed: {error}"));
    let report = &finished.report;
    let world = &finished.world;
    let blocks = progress
        .blocks
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();

    // 4 of 4 chips: WAHA says WORKING, logged in as the number the report names; the
    // supervisor agrees; one create per session, accepted (none was tried while WAHA booted);
    // the QR PNG on disk is the one reported, and it encodes the value WAHA offered.
    assert_eq!(report.chips.len(), QuickstartReport::expected_chips());
    assert_eq!(
        report.working_sessions(),
        QuickstartReport::expected_chips()
    );
    let keys: BTreeSet<String> = report.chips.iter().map(|c| c.key.to_string()).collect();
    assert_eq!(keys.len(), report.chips.len(), "every chip reported once");
    for chip in &report.chips {
        let control = world
            .control_for(&chip.key.tenant)
            .await
            .unwrap_or_else(|| panic!("{}: a running simulator", chip.key));
        assert_eq!(
            control.session_status(&chip.session),
            Some(SessionStatus::Working),
            "{}: WAHA's own status",
            chip.key
        );
        let me = control
            .session_me(&chip.session)
            .unwrap_or_else(|| panic!("{}: WAHA knows its account", chip.key));
        assert_eq!(me.id, format!("{}@c.us", chip.phone), "{}", chip.key);
        assert_eq!(
            chip.logged_in_as.as_deref(),
            Some(me.id.as_str()),
            "{}",
            chip.key
        );

        let creates: Vec<u16> = control
            .calls_for(&chip.session)
            .iter()
            .filter(|call| call.is_create())
            .map(|call| call.status)
            .collect();
        assert_eq!(
            creates,
            vec![201],
            "{}: one create, accepted at once",
            chip.key
        );
        assert_eq!(chip.creates_accepted, 1, "{}", chip.key);

        let record = world
            .supervisor()
            .get_chip(&chip.key.tenant, &chip.key.chip)
            .await
            .unwrap_or_else(|error| panic!("{}: {error}", chip.key));
        assert_eq!(record.observed.phase.name(), PhaseName::Working);

        let png = std::fs::read(&chip.qr_png)
            .unwrap_or_else(|error| panic!("{}: {}: {error}", chip.key, chip.qr_png.display()));
        assert!(png.starts_with(PNG_MAGIC), "{}: a PNG", chip.key);
        assert_eq!(png.len(), chip.qr_png_bytes, "{}", chip.key);
        // The PNG (WAHA's image endpoint) and the terminal block (drawn from WAHA's raw QR
        // endpoint's value) encode one value, shaped as the simulator makes them
        // (`2@<ref>,<key>=,<key>=,<key>=`). The values are credentials: never printed.
        let in_png = decode_png(&png)
            .unwrap_or_else(|error| panic!("{}: its QR PNG does not decode: {error}", chip.key));
        let title = format!("{}: QR code", chip.key);
        let shown: Vec<&String> = blocks
            .iter()
            .filter(|(shown_title, _)| shown_title.starts_with(&title))
            .map(|(_, body)| body)
            .collect();
        let [block] = shown.as_slice() else {
            panic!("{}: {} QR blocks shown, not 1", chip.key, shown.len());
        };
        let offered = decode_block(block)
            .unwrap_or_else(|error| panic!("{}: its QR block does not decode: {error}", chip.key));
        assert!(
            in_png == offered,
            "{}: the PNG encodes another value than the raw QR endpoint offered",
            chip.key
        );
        assert_eq!(
            offered.chars().count(),
            chip.qr_value_chars,
            "{}: the value's length as reported",
            chip.key
        );
        assert!(
            offered.starts_with("2@") && offered.split(',').count() == 4,
            "{}: a WhatsApp-shaped QR value",
            chip.key
        );
        assert!(
            chip.qr_after >= booting.mul_f64(0.8),
            "{}: the QR window opened after the boot ({:?}, boot {booting:?})",
            chip.key,
            chip.qr_after
        );
    }

    // Each tenant: its container answered 400 while booting; the reused volume's stale
    // sessions were found, deleted (the simulator logged the deletes) and are gone; WAHA holds
    // exactly the tenant's chips.
    for tenant in &report.tenants {
        assert_eq!(tenant.booting_status, Some(400), "{}", tenant.tenant);
        let control = world
            .control_for(&tenant.tenant)
            .await
            .unwrap_or_else(|| panic!("{}: a running simulator", tenant.tenant));
        for stale in STALE_SESSIONS {
            assert!(
                tenant.stale_found.iter().any(|found| found == stale),
                "{}: the reused volume held {stale}: {:?}",
                tenant.tenant,
                tenant.stale_found
            );
            assert_eq!(
                control.session_status(stale),
                None,
                "{}: {stale} is gone",
                tenant.tenant
            );
            let deleted = control
                .calls_for(stale)
                .iter()
                .any(|call| call.method == "DELETE" && (200..300).contains(&call.status));
            assert!(
                deleted,
                "{}: the simulator logged the delete of {stale}",
                tenant.tenant
            );
        }
        assert_eq!(control.session_count(), CHIPS.len(), "{}", tenant.tenant);
        for session in &tenant.sessions_left {
            assert_eq!(
                control.session_status(session),
                Some(SessionStatus::Working),
                "{}: {session}",
                tenant.tenant
            );
        }
    }

    // The message: one sendText reached WAHA for the sender, after the choreography; the
    // outbox holds it as read, moved there by the ack webhooks.
    let message = &report.message;
    let control = world
        .control_for(&message.key.tenant)
        .await
        .expect("the sender's simulator");
    let session = message.key.session_name().as_str().to_owned();
    let routes: Vec<String> = control
        .calls_for(&session)
        .into_iter()
        .filter(|call| call.route.starts_with("/api/send") || call.route.contains("Typing"))
        .map(|call| format!("{} {}", call.route, call.status))
        .collect();
    assert_eq!(
        routes
            .iter()
            .filter(|r| r.starts_with("/api/sendText "))
            .count(),
        1,
        "one sendText: {routes:?}"
    );
    assert_eq!(
        routes.last().map(String::as_str),
        Some("/api/sendText 201"),
        "the send comes last: {routes:?}"
    );
    assert_eq!(
        message.outbox,
        OutboxStatus::Sent {
            ack: MessageAck::Read
        }
    );
    assert_eq!(message.acks.last(), Some(&MessageAck::Read));
    let record = world
        .supervisor()
        .outbox()
        .by_message_id(&message.key.tenant, &message.message_id)
        .await
        .expect("the outbox reads")
        .expect("the send's record");
    assert_eq!(record.status, message.outbox);

    // The refused webhooks: refused on the wire, with the expected typed outcome, and they
    // left nothing behind: the ingest's inbox (every delivery it accepted is stored there, the
    // READ ack included) holds none of them.
    assert!(!report.refusals.is_empty());
    for refusal in &report.refusals {
        assert_eq!(refusal.http_status, 401, "{}", refusal.what);
        assert_eq!(refusal.outcome, refusal.expected, "{}", refusal.what);
    }
    let inbox = world.inbox();
    assert_eq!(
        inbox.ack_of(&message.key.tenant, &message.message_id),
        Some(MessageAck::Read),
        "the inbox is the one the ingest stored the acks in"
    );
    let entries = inbox.entries();
    assert!(!entries.is_empty());
    for entry in &entries {
        let body = String::from_utf8_lossy(&entry.body);
        assert!(
            !body.contains(REFUSED_EVENT_ID)
                && !entry.keys.iter().any(|key| key.contains(REFUSED_EVENT_ID)),
            "a refused webhook was stored for {}/{}",
            entry.tenant,
            entry.chip
        );
    }

    // The chip over the plan was refused before anything existed: no record in the store, no
    // session in any simulator, nothing WAHA was asked about it; each tenant holds its plan's
    // chips and no more.
    let extra = ChipId::new(OVER_THE_PLAN).unwrap();
    for tenant in TENANTS {
        let tenant = TenantId::new(tenant).unwrap();
        match world.supervisor().get_chip(&tenant, &extra).await {
            Err(SupervisorError::ChipNotFound { .. }) => {}
            Ok(record) => panic!("{}: the refused chip exists", record.key),
            Err(error) => panic!("{tenant}/{OVER_THE_PLAN}: {error}"),
        }
        let listed = world
            .supervisor()
            .list_chips(&tenant, None, 100)
            .await
            .expect("the tenant's chips");
        assert_eq!(listed.len(), CHIPS.len(), "{tenant}: its plan's chips");
        let session = ChipKey::new(tenant.clone(), extra.clone()).session_name();
        let control = world
            .control_for(&tenant)
            .await
            .unwrap_or_else(|| panic!("{tenant}: a running simulator"));
        assert_eq!(control.session_status(session.as_str()), None, "{tenant}");
        assert!(
            control.calls_for(session.as_str()).is_empty(),
            "{tenant}: WAHA never heard of {OVER_THE_PLAN}"
        );
    }
    assert!(
        report.quota_refusal.contains("max_chips"),
        "the refusal names the limit: {}",
        report.quota_refusal
    );

    finished.world.shutdown().await;
    let _ = std::fs::remove_dir_all(output_dir);
}
