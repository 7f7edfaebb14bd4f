//! Integration tests of the simulator (one test binary: linking is the slow part here).

mod binary;
mod contract_qr;
mod contract_server;
mod contract_sessions;
mod control_http;
mod faults;
mod messages;
mod persistence;
mod robustness;
mod scale;
mod state_machine;
mod support;
mod webhooks;
