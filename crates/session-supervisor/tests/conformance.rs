//! The `ChipStore` conformance suite against the in-memory backend, on a manual clock that
//! shows the present (the checks never sleep; the clocked checks advance the clock).

use std::sync::Arc;

use session_supervisor::{ChipStore, ManualClock, MemoryChipStore};

session_supervisor::chip_store_conformance!(clocked |clock: ManualClock| async move {
    Arc::new(MemoryChipStore::with_clock(Arc::new(clock))) as Arc<dyn ChipStore>
});
