//! The `ChipStore` conformance suite against the in-memory backend, on a manual clock that
//! shows the present (the checks never sleep).

use std::sync::Arc;
use std::time::SystemTime;

use session_supervisor::{ChipStore, ManualClock, MemoryChipStore};

session_supervisor::chip_store_conformance!(|| async {
    let clock = ManualClock::new(SystemTime::now());
    Arc::new(MemoryChipStore::with_clock(Arc::new(clock))) as Arc<dyn ChipStore>
});
