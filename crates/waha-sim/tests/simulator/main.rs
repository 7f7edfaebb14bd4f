//! Integration tests of the simulator (one test binary: linking is the slow part here).

mod binary;
mod call_log;
mod contract_qr;
mod contract_server;
mod contract_sessions;
mod control_client;
mod control_http;
mod engine_events;
mod faults;
#[cfg(feature = "pool")]
mod launcher;
mod messages;
mod persistence;
mod robustness;
mod scale;
mod state_machine;
mod support;
mod webhooks;
