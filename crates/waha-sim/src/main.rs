//! `waha-sim`: the simulator as a program, configured by WAHA's environment variables.
//!
//! `waha-sim` serves; `waha-sim healthcheck` probes `/ping` on `127.0.0.1:$PORT` and exits 0
//! when healthy, 1 otherwise.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;
use waha_sim::SimulatorBuilder;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        None => serve(),
        Some("healthcheck") => match waha_sim::healthcheck::probe_from_env() {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("waha-sim: {error}");
                ExitCode::FAILURE
            }
        },
        Some("-h" | "--help" | "help") => {
            println!(
                "waha-sim: a WAHA-compatible simulator\n\n\
                 usage: waha-sim              serve (configured by PORT, WAHA_API_KEY, SIM_*...)\n\
                 \x20      waha-sim healthcheck  probe GET /ping on 127.0.0.1:$PORT"
            );
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("waha-sim: unknown command {other:?} (try --help)");
            ExitCode::from(2)
        }
    }
}

fn serve() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let builder = match SimulatorBuilder::from_env() {
        Ok(builder) => builder,
        Err(error) => {
            eprintln!("waha-sim: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("waha-sim: cannot start a runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let sim = match builder.start().await {
            Ok(sim) => sim,
            Err(error) => {
                eprintln!("waha-sim: {error}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(addr = %sim.addr(), "waha-sim serving");
        terminated().await;
        tracing::info!("termination signal received, shutting down");
        sim.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Ctrl-C or SIGTERM (`docker stop`; PID 1 gets no default handler).
async fn terminated() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
