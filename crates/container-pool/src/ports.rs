//! Host-port allocation for [`HostPorts::Range`](crate::HostPorts::Range) and
//! [`AddressingPolicy::HostNetwork`](crate::AddressingPolicy::HostNetwork).
//!
//! Each container (by name) owns one port from the configured range for as long as it exists:
//! re-creating a tenant's container keeps its port, so whatever points at it stays valid. The
//! allocation survives pool restarts when the store does ([`FilePortStore`]); a port a
//! container of the pool holds by its labels is recorded again when the store lost it
//! ([`PortAllocationStore::reserve`]). Ports another process already holds on the host are
//! skipped ([`PortAllocationStore::allocate_unbound`]): a published port or a host-network
//! server could not bind them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

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

    /// Like [`allocate`](Self::allocate), but skips every port a socket on this host already
    /// holds on `bind` (a listener could not be bound there now), the one `owner` holds
    /// included: an owner whose port was taken meanwhile moves to the lowest usable free port.
    /// For containers whose port is bound on the host (published host ports, host-network
    /// servers), which would otherwise fail to start. Only "address in use" counts as taken;
    /// an address this host does not have is left to the container to report.
    ///
    /// The provided implementation (for stores that predate this method) allocates as
    /// [`allocate`](Self::allocate) does, without the check; [`InMemoryPortStore`] and
    /// [`FilePortStore`] check.
    async fn allocate_unbound(
        &self,
        owner: &str,
        range: RangeInclusive<u16>,
        bind: IpAddr,
    ) -> Result<u16, Error> {
        let _ = bind;
        self.allocate(owner, range).await
    }

    /// Records that `owner` holds `port` (a container found holding it, which the store had
    /// lost: an in-memory store after a restart, a replaced file), replacing any other port
    /// recorded for `owner`. `Ok(false)`, and nothing changes, when another owner holds
    /// `port` in the store. The pool calls it before allocating, for every port its
    /// containers hold by their labels, so it never hands a held port to another container.
    ///
    /// The provided implementation (for stores that predate this method) records nothing and
    /// returns `Ok(false)`: such a store cannot recover a lost allocation.
    /// [`InMemoryPortStore`] and [`FilePortStore`] record it.
    async fn reserve(&self, owner: &str, port: u16) -> Result<bool, Error> {
        let _ = (owner, port);
        Ok(false)
    }

    /// Frees `owner`'s port; freeing an owner without one succeeds.
    async fn release(&self, owner: &str) -> Result<(), Error>;

    /// Every allocation, by owner.
    async fn allocations(&self) -> Result<BTreeMap<String, u16>, Error>;
}

/// The port `owner` holds in `table`, or the lowest free one of `range` (what
/// [`PortAllocationStore::allocate`] picks), without recording it. A port `taken` says is held
/// outside the table is skipped, `owner`'s own included (pass `|_| false` to skip none).
pub(crate) fn pick(
    table: &BTreeMap<String, u16>,
    owner: &str,
    range: &RangeInclusive<u16>,
    taken: impl Fn(u16) -> bool,
) -> Result<u16, Error> {
    if range.is_empty() {
        return Err(Error::InvalidConfig(format!(
            "empty host port range {range:?}"
        )));
    }
    if let Some(&port) = table.get(owner)
        && !taken(port)
    {
        return Ok(port);
    }
    let used: std::collections::HashSet<u16> = table
        .iter()
        .filter(|(holder, _)| holder.as_str() != owner)
        .map(|(_, port)| *port)
        .collect();
    range
        .clone()
        .find(|p| !used.contains(p) && !taken(*p))
        .ok_or(Error::PortsExhausted {
            first: *range.start(),
            last: *range.end(),
        })
}

/// [`PortAllocationStore::allocate`] on a table: `owner` now holds the port [`pick`] chooses.
/// Returns that port, and whether the table changed.
fn allocate_in(
    table: &mut BTreeMap<String, u16>,
    owner: &str,
    range: &RangeInclusive<u16>,
    taken: impl Fn(u16) -> bool,
) -> Result<(u16, bool), Error> {
    let port = pick(table, owner, range, taken)?;
    let changed = table.insert(owner.to_owned(), port) != Some(port);
    Ok((port, changed))
}

/// [`PortAllocationStore::reserve`] on a table: `owner` now holds `port` unless another owner
/// does. Returns whether it holds it, and whether the table changed.
fn reserve_in(table: &mut BTreeMap<String, u16>, owner: &str, port: u16) -> (bool, bool) {
    if table
        .iter()
        .any(|(holder, held)| *held == port && holder.as_str() != owner)
    {
        return (false, false);
    }
    let changed = table.insert(owner.to_owned(), port) != Some(port);
    (true, changed)
}

/// Whether a socket on this host already holds `port` on `bind`: binding a listener there
/// fails with "address in use" (the listener is closed at once). Any other failure (an address
/// this host does not have, a privileged port) does not count.
pub(crate) fn is_bound(bind: IpAddr, port: u16) -> bool {
    matches!(
        std::net::TcpListener::bind((bind, port)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse
    )
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

    async fn allocate_skipping(
        &self,
        owner: &str,
        range: RangeInclusive<u16>,
        taken: impl Fn(u16) -> bool,
    ) -> Result<u16, Error> {
        let (port, _) = allocate_in(&mut *self.table.lock().await, owner, &range, taken)?;
        Ok(port)
    }
}

#[async_trait]
impl PortAllocationStore for InMemoryPortStore {
    async fn allocate(&self, owner: &str, range: RangeInclusive<u16>) -> Result<u16, Error> {
        self.allocate_skipping(owner, range, |_| false).await
    }

    async fn allocate_unbound(
        &self,
        owner: &str,
        range: RangeInclusive<u16>,
        bind: IpAddr,
    ) -> Result<u16, Error> {
        self.allocate_skipping(owner, range, move |port| is_bound(bind, port))
            .await
    }

    async fn reserve(&self, owner: &str, port: u16) -> Result<bool, Error> {
        Ok(reserve_in(&mut *self.table.lock().await, owner, port).0)
    }

    async fn release(&self, owner: &str) -> Result<(), Error> {
        self.table.lock().await.remove(owner);
        Ok(())
    }

    async fn allocations(&self) -> Result<BTreeMap<String, u16>, Error> {
        Ok(self.table.lock().await.clone())
    }
}

/// Allocations in a JSON file, written atomically and durably (temporary file, fsync, rename,
/// fsync of the directory) on every change.
///
/// One process at a time may use a file (the pool of one host); several pool replicas need a
/// shared database-backed store behind the same trait. A corrupt file (empty, torn, not JSON)
/// is reported as [`Error::PortStore`] naming the file, by every method, and left untouched:
/// fix or remove it by hand.
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

    async fn allocate_skipping(
        &self,
        owner: &str,
        range: RangeInclusive<u16>,
        taken: impl Fn(u16) -> bool,
    ) -> Result<u16, Error> {
        self.update(|table| allocate_in(table, owner, &range, taken))
            .await
    }

    /// Runs `change` on the table under the store's lock, and saves the table when `change`
    /// says it changed it. Returns what `change` returned.
    async fn update<T>(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, u16>) -> Result<(T, bool), Error>,
    ) -> Result<T, Error> {
        let _guard = self.lock.lock().await;
        let mut table = self.load().await?;
        let (result, changed) = change(&mut table)?;
        if changed {
            self.save(&table).await?;
        }
        Ok(result)
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

    /// Writes the table durably: a temporary file, fsynced, renamed over the file, then the
    /// directory fsynced, so a crash leaves either the old or the new table, never an empty
    /// or torn one.
    async fn save(&self, table: &BTreeMap<String, u16>) -> Result<(), Error> {
        let body = serde_json::to_vec_pretty(table).map_err(|e| Error::PortStore(e.to_string()))?;
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || write_durably(&path, &body))
            .await
            .map_err(|e| Error::PortStore(format!("writing {}: {e}", self.path.display())))?;
        written.map_err(|e| Error::PortStore(format!("writing {}: {e}", self.path.display())))
    }
}

fn write_durably(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(body)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    sync_parent(path)
}

/// Makes the rename itself durable (POSIX: the directory entry lives in the directory).
#[cfg(unix)]
fn sync_parent(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// Directories cannot be opened for syncing here; the rename is as durable as the OS makes it.
#[cfg(not(unix))]
fn sync_parent(_: &Path) -> std::io::Result<()> {
    Ok(())
}

#[async_trait]
impl PortAllocationStore for FilePortStore {
    async fn allocate(&self, owner: &str, range: RangeInclusive<u16>) -> Result<u16, Error> {
        self.allocate_skipping(owner, range, |_| false).await
    }

    async fn allocate_unbound(
        &self,
        owner: &str,
        range: RangeInclusive<u16>,
        bind: IpAddr,
    ) -> Result<u16, Error> {
        self.allocate_skipping(owner, range, move |port| is_bound(bind, port))
            .await
    }

    async fn reserve(&self, owner: &str, port: u16) -> Result<bool, Error> {
        self.update(|table| Ok(reserve_in(table, owner, port)))
            .await
    }

    async fn release(&self, owner: &str) -> Result<(), Error> {
        self.update(|table| Ok(((), table.remove(owner).is_some())))
            .await
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
        // A port a container was found holding is recorded for it, and then never given to
        // another owner; a port another owner holds is not taken from it.
        assert!(store.reserve("found", 4005).await.unwrap());
        assert!(store.reserve("found", 4005).await.unwrap(), "idempotent");
        assert!(!store.reserve("intruder", 4005).await.unwrap());
        assert!(!store.reserve("found", 4001).await.unwrap(), "d holds 4001");
        assert_eq!(store.allocations().await.unwrap()["found"], 4005);
        assert_eq!(store.allocate("f", 4005..=4006).await.unwrap(), 4006);
        store.release("found").await.unwrap();
        store.release("f").await.unwrap();
    }

    #[tokio::test]
    async fn in_memory_store_allocates_lowest_free_sticky_ports() {
        exercise(&InMemoryPortStore::new()).await;
    }

    /// A loopback port held by the returned listener whose neighbour above was free when
    /// looked at.
    fn held_port_with_a_free_neighbour() -> (std::net::TcpListener, u16) {
        for _ in 0..100 {
            let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = held.local_addr().unwrap().port();
            let Some(next) = port.checked_add(1) else {
                continue;
            };
            if std::net::TcpListener::bind(("127.0.0.1", next)).is_ok() {
                return (held, port);
            }
        }
        panic!("found no two adjacent loopback ports");
    }

    async fn skips_bound_ports(store: &dyn PortAllocationStore) {
        let lo = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        let (held, port) = held_port_with_a_free_neighbour();
        let next = port + 1;
        assert!(is_bound(lo, port) && !is_bound(lo, next));
        // A new owner skips the port a listener holds...
        let unbound = store.allocate_unbound("x", port..=next, lo).await.unwrap();
        assert_eq!(unbound, next);
        // ...plain `allocate` (published ports, bound by the runtime) does not look.
        assert_eq!(store.allocate("w", port..=next).await.unwrap(), port);
        // An owner whose port is taken looks for another; with none free: exhausted, and the
        // allocations are left as they were.
        assert!(matches!(
            store.allocate_unbound("w", port..=next, lo).await,
            Err(Error::PortsExhausted { first, last }) if first == port && last == next
        ));
        let all = store.allocations().await.unwrap();
        assert_eq!((all["w"], all["x"]), (port, next));
        // With one free, it moves there.
        store.release("x").await.unwrap();
        assert_eq!(
            store.allocate_unbound("w", port..=next, lo).await.unwrap(),
            next
        );
        assert_eq!(
            store.allocations().await.unwrap(),
            BTreeMap::from([("w".to_owned(), next)])
        );
        // A port nobody holds any more is usable again.
        drop(held);
        assert_eq!(
            store.allocate_unbound("v", port..=next, lo).await.unwrap(),
            port
        );
    }

    #[tokio::test]
    async fn in_memory_store_skips_ports_a_socket_holds_when_asked() {
        skips_bound_ports(&InMemoryPortStore::new()).await;
    }

    #[tokio::test]
    async fn file_store_skips_ports_a_socket_holds_when_asked() {
        let path = std::env::temp_dir().join(format!(
            "container-pool-unbound-ports-{}.json",
            std::process::id()
        ));
        let _ = tokio::fs::remove_file(&path).await;
        skips_bound_ports(&FilePortStore::new(&path)).await;
        // What it allocated was persisted.
        let reopened = FilePortStore::new(&path).allocations().await.unwrap();
        assert_eq!(reopened.len(), 2, "{reopened:?}");
        tokio::fs::remove_file(&path).await.unwrap();
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
        let saved = tokio::fs::read(&path).await.unwrap();
        assert!(
            !dir.join("ports.tmp").exists(),
            "the temporary file was renamed"
        );
        // An empty (crash), torn or garbage file: a typed error naming the file from every
        // method, and the file is never overwritten.
        let torn = &saved[..saved.len() / 2];
        for bad in [&b""[..], torn, b"{not json", &[0xff, 0x00, 0x13][..]] {
            tokio::fs::write(&path, bad).await.unwrap();
            let store = FilePortStore::new(&path);
            for result in [
                store.allocate("z", 4000..=4010).await.map(|_| ()),
                store.allocate("a", 4000..=4010).await.map(|_| ()),
                store.release("a").await,
                store.allocations().await.map(|_| ()),
            ] {
                match result {
                    Err(Error::PortStore(msg)) => {
                        assert!(msg.contains(&path.display().to_string()), "{msg}")
                    }
                    other => panic!("expected PortStore for {bad:?}, got {other:?}"),
                }
            }
            assert_eq!(tokio::fs::read(&path).await.unwrap(), bad);
        }
        tokio::fs::remove_dir_all(&dir).await.unwrap();
    }
}
