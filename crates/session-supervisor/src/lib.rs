//! The chipfleet controller.
//!
//! **Status: planned.** This crate will hold the chip lifecycle (provision, reconcile, remove),
//! webhook ingest (verify, route, de-duplicate, apply in order), the tenant-scoped event bus with
//! resumable sequence numbers, and the per-chip ownership lease with a fencing token.
