//! The main job on the embedded default: no Docker, no PostgreSQL.
//!
//! `cargo run --example quickstart` plays seed report 000's multi-tenant test on the
//! `Supervisor` (`chip_service::quickstart`, assembled by `chip_service::embedded`): 2 tenants ×
//! 2 chips, WAHA simulators that answer 400 for a while after they come up, and reused volumes
//! holding stale `default` and `chip_test_1` sessions. It shows, as it happens, each chip's
//! progress (a live board on a terminal, timestamped lines otherwise), each QR code as a block
//! to scan and as a PNG under `target/quickstart/`, the simulated scans, WORKING, a paced
//! message acked to read through the real webhook ingest, a forged webhook and foreign ones
//! refused, and a final table.
//!
//! It exits non-zero when any of that fails, or when the run passes its hard deadline of 60 s.
//! Nothing printed is canned: every value was measured during the run, and
//! `crates/chip-service/tests/quickstart.rs` checks the same scenario against the simulators'
//! own state.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use chip_service::TerminalProgress;
use chip_service::quickstart::{self, QuickstartOptions};

/// How long after the deadline the watchdog ends the process, should the runtime itself be
/// stuck (the run's own deadline fires first in every other case).
const WATCHDOG_GRACE: Duration = Duration::from_secs(3);

#[tokio::main]
async fn main() -> ExitCode {
    let options = QuickstartOptions {
        output_dir: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("quickstart"),
        ..QuickstartOptions::default()
    };
    let deadline = options.deadline;
    std::thread::spawn(move || {
        std::thread::sleep(deadline + WATCHDOG_GRACE);
        eprintln!("quickstart: the hard deadline of {deadline:?} passed; exiting");
        std::process::exit(2);
    });

    let progress = TerminalProgress::for_stdout();
    match quickstart::run(options, &progress).await {
        Ok(report) => {
            println!(
                "quickstart passed: {} of {} sessions WORKING, {} QR codes, stale sessions removed, in {:.1} s",
                report.working_sessions(),
                quickstart::QuickstartReport::expected_chips(),
                report.qr_codes(),
                report.elapsed.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("quickstart failed: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}
