//! Host-port allocation for [`HostPorts::Range`](crate::HostPorts::Range).
//!
//! Each container (by name) owns one port from the configured range for as long as it exists:
//! re-creating a tenant's container keeps its port, so whatever points at it stays valid. The
//! allocation survives pool restarts when the store does ([`FilePortStore`]).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::PathBuf;

use async_trait::async_trait;
use tokio::sync::Mutex;

use crate::Error;

/// Persists which owner (a container name) holds which host port.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait PortAllocationStore: Send + Sync {
    /// The port `owner` already holds, or the lowest free port of `range`, now held by `owner`.
    /// [`Error::PortsExhausted`] when none is free.
    async fn allocate(&self, owner: &str, range: RangeInclusive<u16>) -> Result<u16, Error>;

    /// Frees `owner`'s port; freeing an owner without one succeeds.
    async fn release(&self, owner: &str) -> Result<(), Error>;

    /// Every allocation, by owner.
    async fn allocations(&self) -> Result<BTreeMap<String, u16>, Error>;
}

fn pick(
    table: &BTreeMap<String, u16>,
    owner: &str,
    range: &RangeInclusive<u16>,
) -> Result<u16, Error> {
    if range.is_empty() {
        return Err(Error::InvalidConfig(format!(
            "empty host port range {range:?}"
        )));
    }
    if let Some(port) = table.get(owner) {
        return Ok(*port);
    }
    let used: std::collections::HashSet<u16> = table.values().copied().collect();
    range
        .clone()
        .find(|p| !used.contains(p))
        .ok_or(Error::PortsExhausted {
            first: *range.start(),
            last: *range.end(),
        })
}

/// Allocations in memory; lost when the process ends.
#[derive(Debug, Default)]
pub struct InMemoryPortStore {
    table: Mutex<BTreeMap<String, u16>>,
}

impl InMemoryPortStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl PortAllocationStore for InMemoryPortStore {
    async fn allocate(&self, owner: &str, range: RangeInclusive<u16>) -> Result<u16, Error> {
        let mut table = self.table.lock().await;
        let port = pick(&table, owner, &range)?;
        table.insert(owner.to_owned(), port);
        Ok(port)
    }

    async fn release(&self, owner: &str) -> Result<(), Error> {
        self.table.lock().await.remove(owner);
        Ok(())
    }

    async fn allocations(&self) -> Result<BTreeMap<String, u16>, Error> {
        Ok(self.table.lock().await.clone())
    }
}

/// Allocations in a JSON file, written atomically (temporary file, then rename) on every change.
///
/// One process at a time may use a file (the pool of one host); several pool replicas need a
/// shared database-backed store behind the same trait. A corrupt file is reported as
/// [`Error::PortStore`] and left untouched.
#[derive(Debug)]
pub struct FilePortStore {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FilePortStore {
    /// A store in `path` (created on the first allocation). No I/O happens here.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }

    async fn load(&self) -> Result<BTreeMap<String, u16>, Error> {
        match tokio::fs::read(&self.path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::PortStore(format!(
                    "{} is not a port allocation file: {e}",
                    self.path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(Error::PortStore(format!(
                "reading {}: {e}",
                self.path.display()
            ))),
        }
    }

    async fn save(&self, table: &BTreeMap<String, u16>) -> Result<(), Error> {
        let io =
            |e: std::io::Error| Error::PortStore(format!("writing {}: {e}", self.path.display()));
        let tmp = self.path.with_extension("tmp");
        let body = serde_json::to_vec_pretty(table).map_err(|e| Error::PortStore(e.to_string()))?;
        tokio::fs::write(&tmp, body).await.map_err(io)?;
        tokio::fs::rename(&tmp, &self.path).await.map_err(io)
    }
}

#[async_trait]
impl PortAllocationStore for FilePortStore {
    async fn allocate(&self, owner: &str, range: RangeInclusive<u16>) -> Result<u16, Error> {
        let _guard = self.lock.lock().await;
        let mut table = self.load().await?;
        if let Some(port) = table.get(owner) {
            return Ok(*port);
        }
        let port = pick(&table, owner, &range)?;
        table.insert(owner.to_owned(), port);
        self.save(&table).await?;
        Ok(port)
    }

    async fn release(&self, owner: &str) -> Result<(), Error> {
        let _guard = self.lock.lock().await;
        let mut table = self.load().await?;
        if table.remove(owner).is_some() {
            self.save(&table).await?;
        }
        Ok(())
    }

    async fn allocations(&self) -> Result<BTreeMap<String, u16>, Error> {
        let _guard = self.lock.lock().await;
        self.load().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exercise(store: &dyn PortAllocationStore) {
        assert_eq!(store.allocate("a", 4000..=4002).await.unwrap(), 4000);
        assert_eq!(store.allocate("b", 4000..=4002).await.unwrap(), 4001);
        // Sticky: the same owner keeps its port.
        assert_eq!(store.allocate("a", 4000..=4002).await.unwrap(), 4000);
        assert_eq!(store.allocate("c", 4000..=4002).await.unwrap(), 4002);
        assert!(matches!(
            store.allocate("d", 4000..=4002).await,
            Err(Error::PortsExhausted {
                first: 4000,
                last: 4002
            })
        ));
        store.release("b").await.unwrap();
        store.release("never-held").await.unwrap();
        assert_eq!(store.allocate("d", 4000..=4002).await.unwrap(), 4001);
        let all = store.allocations().await.unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all["d"], 4001);
        #[allow(clippy::reversed_empty_ranges)]
        let empty = 10..=9;
        assert!(matches!(
            store.allocate("e", empty).await,
            Err(Error::InvalidConfig(_))
        ));
    }

    #[tokio::test]
    async fn in_memory_store_allocates_lowest_free_sticky_ports() {
        exercise(&InMemoryPortStore::new()).await;
    }

    #[tokio::test]
    async fn file_store_persists_and_rejects_corrupt_files() {
        let dir = std::env::temp_dir().join(format!("container-pool-ports-{}", std::process::id()));
        tokio::fs::create_dir_all(&dir).await.unwrap();
        let path = dir.join("ports.json");
        let _ = tokio::fs::remove_file(&path).await;
        exercise(&FilePortStore::new(&path)).await;
        // A new store on the same file sees the same allocations.
        let reopened = FilePortStore::new(&path);
        assert_eq!(reopened.allocate("a", 4000..=4002).await.unwrap(), 4000);
        assert_eq!(reopened.allocations().await.unwrap().len(), 3);
        tokio::fs::write(&path, b"{not json").await.unwrap();
        assert!(matches!(
            reopened.allocate("z", 4000..=4010).await,
            Err(Error::PortStore(_))
        ));
        assert_eq!(tokio::fs::read(&path).await.unwrap(), b"{not json");
        tokio::fs::remove_dir_all(&dir).await.unwrap();
    }
}
