//! The quickstart's scenario (seed report 000 on the embedded default), judged by the
//! simulators' own state rather than by the report alone: the report is what the quickstart
//! prints, and this test checks each of its claims against what the in-process WAHA servers
//! hold and logged (session statuses and accounts, the call log's creates, deletes and sends),
//! against the supervisor's records, and against the files it names.

use std::collections::BTreeSet;

use chip_service::TerminalProgress;
use chip_service::quickstart::{self, CHIPS, QuickstartOptions, QuickstartReport, STALE_SESSIONS};
use session_supervisor::{OutboxStatus, PhaseName};
use waha_client::webhook::MessageAck;
use waha_sim::SessionStatus;

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_passes_seed_000_and_the_simulators_agree() {
    let output_dir =
        std::env::temp_dir().join(format!("chip-service-quickstart-{}", std::process::id()));
    let options = QuickstartOptions {
        output_dir: output_dir.clone(),
        ..QuickstartOptions::default()
    };
    let booting = options.booting;
    let deadline = options.deadline;
    let progress = TerminalProgress::plain();
    let finished = quickstart::play(options, &progress)
        .await
        .unwrap_or_else(|error| panic!("the quickstart failed: {error}"));
    let report = &finished.report;
    let world = &finished.world;
    report.check().expect("the report's own promises hold");

    // 4 of 4 chips: WAHA says WORKING, logged in as the number the report names; the
    // supervisor agrees; one create per session, accepted (none was tried while WAHA booted);
    // the QR PNG on disk is the one reported.
    assert_eq!(report.chips.len(), QuickstartReport::expected_chips());
    assert_eq!(
        report.working_sessions(),
        QuickstartReport::expected_chips()
    );
    assert_eq!(report.qr_codes(), QuickstartReport::expected_chips());
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

    // The refused webhooks: refused on the wire, with the expected typed outcome.
    assert!(!report.refusals.is_empty());
    for refusal in &report.refusals {
        assert_eq!(refusal.http_status, 401, "{}", refusal.what);
        assert_eq!(refusal.outcome, refusal.expected, "{}", refusal.what);
    }
    assert!(!report.quota_refusal.is_empty());
    assert!(
        report.elapsed < deadline,
        "the run took {:?}",
        report.elapsed
    );

    finished.world.shutdown().await;
    let _ = std::fs::remove_dir_all(output_dir);
}
