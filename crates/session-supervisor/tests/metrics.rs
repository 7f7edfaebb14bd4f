//! The supervisor's metrics, read the way a Prometheus scrape would: one global recorder per
//! test binary, so this binary holds one test.

mod shared;
mod support;

use metrics_exporter_prometheus::PrometheusBuilder;
use session_supervisor::{ChipSpec, PhaseName, Toggle};
use support::*;
use waha_sim::DisconnectReason;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_reports_phases_reconciles_retries_and_parking() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let scrape = recorder.handle();
    metrics::set_global_recorder(recorder).expect("the only recorder of this binary");

    let fleet = Fleet::builder().tenant("acme").build().await;
    let mut config = fleet.config();
    config.monitor_intervals.silent_scan = ms(50);
    config.monitors.proxy_history = Toggle::Off {
        reason: "shown off in the gauge".into(),
    };
    let replica = fleet.supervisor_with(config).await;
    let acme = tenant("acme");
    let sales = chip("sales-1");
    replica
        .create_chip(&acme, &sales, ChipSpec::qr())
        .await
        .expect("created");
    wait_phase(&replica, &acme, &sales, PhaseName::AwaitingLogin, WAIT).await;
    fleet.scan(&acme, &sales, "5511999990501").await;
    wait_phase(&replica, &acme, &sales, PhaseName::Working, WAIT).await;
    let control = fleet.control_for(&acme).await;
    control
        .disconnect(&session(&acme, &sales), DisconnectReason::Banned)
        .expect("injected");
    wait_phase(&replica, &acme, &sales, PhaseName::Parked, WAIT).await;

    // The phase gauge is refreshed by the silent-death scan.
    let text = eventually(WAIT, "the parked chip in the phase gauge", || {
        let text = scrape.render();
        std::future::ready(
            text.lines()
                .any(|line| line == "supervisor_chips{phase=\"parked\"} 1")
                .then_some(text),
        )
    })
    .await;
    for expected in [
        "supervisor_reconciles_total{outcome=\"waiting\"}",
        "supervisor_steps_total{step=\"ensure_session\",outcome=\"ok\"}",
        "supervisor_steps_total{step=\"confirm_working\",outcome=\"ok\"}",
        "supervisor_parked_total{reason=\"banned\"} 1",
        "supervisor_failures_total{reason=\"banned\"}",
        "supervisor_owned_tenants 1",
        "supervisor_task_enabled{task=\"idle_reaping\"} 1",
        "supervisor_task_enabled{task=\"proxy_history\"} 0",
        "supervisor_reconcile_seconds",
        "supervisor_chips{phase=\"working\"} 0",
    ] {
        assert!(
            text.contains(expected),
            "the scrape has {expected}:\n{text}"
        );
    }
    replica.shutdown().await;
}
