//! Shared by the integration tests: the in-process `waha-sim` launcher, tenant keys, helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use container_pool::{
    ApiKey, ChipActivity, Error, Incarnation, LaunchSpec, LaunchedServer, ProcessLauncher,
    TenantEndpoint, TenantExists, TenantId, TenantKeys, TenantPool,
};
/// Starts `waha-sim` in-process on 127.0.0.1:0, configured by the container's environment
/// (WAHA and `SIM_*` variables), with one state directory per volume name.
pub use waha_sim::SimLauncher;

/// A misbehaviour of [`QuirkyLauncher`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Quirk {
    /// The first launch never finishes (until its caller gives up).
    HangFirst,
    /// The first launch fails.
    FailFirst,
    /// Every server is started with a key other than the container's `WAHA_API_KEY`.
    WrongKey,
    /// Every server reports the worker id `someone-else` instead of the container's
    /// `WAHA_WORKER_ID` (another container answering at the address).
    WrongWorker,
    /// Every server is started without `WAHA_WORKER_ID`, so it reports no worker id (like old
    /// WAHA Core).
    NoWorker,
}

/// A [`SimLauncher`] with one [`Quirk`]; counts launches.
pub struct QuirkyLauncher {
    inner: SimLauncher,
    quirk: Quirk,
    pub launches: std::sync::atomic::AtomicUsize,
}

impl QuirkyLauncher {
    pub fn new(quirk: Quirk) -> Self {
        Self {
            inner: SimLauncher::new(),
            quirk,
            launches: Default::default(),
        }
    }
}

#[async_trait]
impl ProcessLauncher for QuirkyLauncher {
    async fn launch(&self, spec: &LaunchSpec) -> Result<LaunchedServer, Error> {
        let n = self
            .launches
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match self.quirk {
            Quirk::HangFirst if n == 0 => futures::future::pending().await,
            Quirk::FailFirst if n == 0 => Err(Error::StartFailed {
                container: spec.name.clone(),
                reason: "the first launch fails".into(),
            }),
            Quirk::WrongKey => {
                let mut spec = spec.clone();
                spec.env.retain(|e| e.name != "WAHA_API_KEY");
                spec.env.push(container_pool::EnvVar::secret(
                    "WAHA_API_KEY",
                    "a-key-nobody-was-given-0123",
                ));
                self.inner.launch(&spec).await
            }
            Quirk::WrongWorker | Quirk::NoWorker => {
                let mut spec = spec.clone();
                spec.env.retain(|e| e.name != "WAHA_WORKER_ID");
                if self.quirk == Quirk::WrongWorker {
                    spec.env.push(container_pool::EnvVar::plain(
                        "WAHA_WORKER_ID",
                        "someone-else",
                    ));
                }
                self.inner.launch(&spec).await
            }
            _ => self.inner.launch(spec).await,
        }
    }
}

/// Tenant keys and incarnations from maps; an unknown tenant gets a fresh key and incarnation
/// on first use, which it keeps. Also answers "exists?".
#[derive(Default)]
pub struct Tenants {
    keys: Mutex<HashMap<TenantId, String>>,
    incarnations: Mutex<HashMap<TenantId, Incarnation>>,
    deleted: Mutex<Vec<TenantId>>,
}

impl Tenants {
    pub fn key_of(&self, tenant: &TenantId) -> String {
        self.keys
            .lock()
            .unwrap()
            .entry(tenant.clone())
            .or_insert_with(|| format!("key-{}-{}", tenant.as_str(), ulid::Ulid::generate()))
            .clone()
    }

    /// Gives the tenant a new key (a rotation); returns it.
    pub fn rotate(&self, tenant: &TenantId) -> String {
        let key = format!("rotated-{}-{}", tenant.as_str(), ulid::Ulid::generate());
        self.keys
            .lock()
            .unwrap()
            .insert(tenant.clone(), key.clone());
        key
    }

    /// The tenant's incarnation (minted on first use, then kept).
    pub fn incarnation_of(&self, tenant: &TenantId) -> Incarnation {
        self.incarnations
            .lock()
            .unwrap()
            .entry(tenant.clone())
            .or_insert_with(Incarnation::generate)
            .clone()
    }

    /// The tenant was purged and a new one created under the same id: a new incarnation and a
    /// new key. Returns the new incarnation.
    pub fn reincarnate(&self, tenant: &TenantId) -> Incarnation {
        self.rotate(tenant);
        let fresh = Incarnation::generate();
        self.incarnations
            .lock()
            .unwrap()
            .insert(tenant.clone(), fresh.clone());
        fresh
    }

    /// Gives the tenant this incarnation (a tenant restored from a backup keeps its own).
    pub fn restore(&self, tenant: &TenantId, incarnation: Incarnation) {
        self.incarnations
            .lock()
            .unwrap()
            .insert(tenant.clone(), incarnation);
    }

    pub fn delete(&self, tenant: &TenantId) {
        self.deleted.lock().unwrap().push(tenant.clone());
    }
}

#[async_trait]
impl TenantKeys for Tenants {
    async fn container_api_key(&self, tenant: &TenantId) -> Result<ApiKey, Error> {
        Ok(ApiKey::new(self.key_of(tenant)).unwrap())
    }

    async fn incarnation(&self, tenant: &TenantId) -> Result<Incarnation, Error> {
        Ok(self.incarnation_of(tenant))
    }
}

#[async_trait]
impl TenantExists for Tenants {
    async fn tenant_exists(&self, tenant: &TenantId) -> Result<bool, Error> {
        Ok(!self.deleted.lock().unwrap().contains(tenant))
    }
}

/// Chip counts per tenant slot.
#[derive(Default)]
pub struct Activity(pub Mutex<HashMap<(TenantId, u32), u32>>);

#[async_trait]
impl ChipActivity for Activity {
    async fn running_chips(&self, tenant: &TenantId, slot: u32) -> Result<u32, Error> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .get(&(tenant.clone(), slot))
            .copied()
            .unwrap_or(0))
    }
}

pub fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

pub fn tenants() -> Arc<Tenants> {
    Arc::new(Tenants::default())
}

/// A short per-run id usable in names and labels.
pub fn run_id() -> String {
    ulid::Ulid::generate().to_string().to_lowercase()[16..].to_owned()
}

pub const FAST: Duration = Duration::from_millis(20);

/// Creates session `name` in the server behind `endpoint`.
pub async fn create_session(endpoint: &TenantEndpoint, name: &str) {
    let created = reqwest::Client::new()
        .post(endpoint.base_url.join("api/sessions").unwrap())
        .header("X-Api-Key", endpoint.api_key.expose_secret())
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
}

/// `GET path` (relative to the endpoint's base URL) with the endpoint's key.
async fn get(endpoint: &TenantEndpoint, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(endpoint.base_url.join(path).unwrap())
        .header("X-Api-Key", endpoint.api_key.expose_secret())
        .send()
        .await
        .unwrap()
}

/// The JSON body of `GET path` (relative to the endpoint's base URL) with the endpoint's key,
/// whatever the status.
pub async fn get_json(endpoint: &TenantEndpoint, path: &str) -> serde_json::Value {
    get(endpoint, path).await.json().await.unwrap()
}

/// Every session the server behind `endpoint` knows (`GET api/sessions?all=true`, which must
/// answer 200).
pub async fn list_sessions(endpoint: &TenantEndpoint) -> serde_json::Value {
    let response = get(endpoint, "api/sessions?all=true").await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// A new incarnation of tenant `t` was refused the earlier incarnation's volume `volume`: `err`
/// is a typed, permanent `VolumeConflict` naming the earlier incarnation `earlier`, and the pool
/// has no container for `t`. Returns the conflict's reason.
pub async fn assert_volume_refused<'e>(
    err: &'e Error,
    pool: &TenantPool,
    t: &TenantId,
    volume: &str,
    earlier: &Incarnation,
) -> &'e str {
    let reason = match err {
        Error::VolumeConflict {
            volume: refused,
            reason,
        } => {
            assert_eq!(refused, volume);
            assert!(reason.contains(earlier.as_str()), "{reason}");
            reason
        }
        other => panic!("expected VolumeConflict, got {other:?}"),
    };
    assert!(!err.is_retryable());
    assert_eq!(err.kind(), "volume_conflict");
    assert!(
        pool.containers(t).await.unwrap().is_empty(),
        "nothing was created for the new incarnation"
    );
    reason
}

/// Tenant `t`, restored to its earlier incarnation `earlier` (from a backup, say), gets its own
/// volume back: the server of its container knows session `session`.
pub async fn assert_restored_tenant_finds_session(
    pool: &TenantPool,
    tenants: &Tenants,
    t: &TenantId,
    earlier: Incarnation,
    session: &str,
) {
    tenants.restore(t, earlier);
    let restored = pool.ensure(t).await.unwrap();
    let listed = list_sessions(&restored).await;
    assert!(listed.to_string().contains(session), "{listed}");
}

/// `err` says the server at container `container`'s address reported the worker id `reported`
/// (another container answers there): typed and permanent.
pub fn assert_worker_mismatch(err: &Error, container: &str, reported: &str) {
    match err {
        Error::WorkerMismatch {
            container: expected,
            reported: got,
        } => {
            assert_eq!(expected, container);
            assert_eq!(got, reported);
        }
        other => panic!("expected WorkerMismatch, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert_eq!(err.kind(), "worker_mismatch");
}
