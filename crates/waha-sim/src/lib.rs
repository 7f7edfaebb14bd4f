//! A WAHA-compatible server simulator (development tool, not published).
//!
//! **Status: in progress.** This crate will start a simulator in-process on `127.0.0.1:0` (or
//! as a binary inside a `FROM scratch` image) that answers like a multi-session WAHA server:
//! the same paths, status codes, error bodies, webhook envelope and signing, with injectable
//! faults.
