//! Typed client for the WAHA ("WhatsApp HTTP API") server.
//!
//! **Status: in progress.** This crate will hold the `WahaApi` trait (the seam every other
//! chipfleet crate talks to WAHA through), its reqwest implementation with typed errors and
//! bounded retries, the session/QR/message models, and the webhook envelope with HMAC-SHA512
//! verification. See `docs/architecture.md` in the repository.
