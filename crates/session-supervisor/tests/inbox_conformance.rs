//! The `Inbox` conformance suite against the in-memory backend (`MemoryInbox`), a fresh inbox
//! per check.

use std::sync::Arc;

use session_supervisor::{Inbox, MemoryInbox};

session_supervisor::inbox_conformance!(|| async { Arc::new(MemoryInbox::new()) as Arc<dyn Inbox> });
