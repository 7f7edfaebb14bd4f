//! The `Outbox` conformance suite against the in-memory backend (`MemoryOutbox`), a fresh outbox
//! per check.

use std::sync::Arc;

use session_supervisor::{MemoryOutbox, Outbox};

session_supervisor::outbox_conformance!(|| async {
    Arc::new(MemoryOutbox::new()) as Arc<dyn Outbox>
});
