//! The production backend: everything a [`Supervisor`] needs on real backends, assembled from
//! the configuration (`CHIPSERVICE_BACKEND=docker` or `swarm`, see
//! [`ServiceConfig`](crate::service::ServiceConfig)): the tenants' WAHA containers on Docker
//! (or Docker Swarm) through container-pool, every store in PostgreSQL, and the webhook
//! [`Ingest`] that the service's own router serves at `POST /webhooks/{tenant}`.
//!
//! What [`Production::build`] does, in this order (the startup order documented in
//! `docs/chip-service.md`, "Running on Docker and PostgreSQL"); the first step that fails
//! stops the startup with a [`ProductionError`] naming it:
//! 1. **Migrations**, once, as the owner role (`CHIPSERVICE_DATABASE_URL`), through
//!    tenant-isolation's runner ([`AdminDb::migrate_with`]): tenant-isolation's own set, then
//!    session-supervisor's ([`PgChipStore::MIGRATIONS`]: chips, events, webhook inbox, send
//!    outbox), proxy-allocator's ([`PostgresLeaseStore::MIGRATIONS`]) and chip-service's
//!    ([`PgTokenStore::MIGRATIONS`]), then the application role's grants, in one transaction
//!    under an advisory lock (every replica may run it at once; one applies, the others find
//!    nothing left to do). See [`MIGRATION_SETS`].
//! 2. **The application role** (`CHIPSERVICE_APP_DATABASE_URL`) is connected and checked
//!    ([`TenantDb::verify_role_with`]): it must not be able to see another tenant's rows
//!    through any of those tables.
//! 3. **The stores**: the tenant directory ([`PgTenantDirectory`], owner role), the quota
//!    ledger ([`PgQuotaLedger`]), the chip store ([`PgChipStore`]), the event bus
//!    ([`PgEventBus`], whose LISTEN connection is opened here), the send outbox
//!    ([`PgOutbox`]), the send pacer ([`PgSendPacer`]), the webhook inbox ([`PgInbox`]) and the
//!    API token store ([`PgTokenStore`]), all tenant-scoped through the application role but
//!    the directory and the platform tables.
//! 4. **The proxies**: the list (`CHIPSERVICE_PROXIES`, inline or a file) is read and must
//!    hold at least one endpoint; leases live in PostgreSQL ([`PostgresLeaseStore`]), shared by
//!    the replicas.
//! 5. **Docker**: the daemon (`DOCKER_HOST`, else `/var/run/docker.sock`) is connected, as a
//!    plain engine ([`DockerRuntime`]) or a Swarm manager ([`SwarmRuntime`]), and the WAHA
//!    image (`CHIPSERVICE_WAHA_IMAGE`) must be on it (nothing is pulled).
//! 6. **The pool, the supervisor and the ingest** are assembled (no I/O).
//!
//! [`Production::start`] then runs the supervisor (claiming tenants, reconciling chips, the
//! always-on monitors), the ingest's re-apply sweep and a maintenance task (retention of the
//! inbox, the events and the outbox). [`Production::shutdown`] stops them and releases this
//! replica's ownership leases, so another replica takes its tenants over at once. It leaves
//! the containers running: the WhatsApp logins live in them, and the next owner (this service
//! restarted, or another replica) adopts them as they are.

use std::fmt;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use container_pool::{
    AddressingPolicy, ContainerRuntime, DockerRuntime, Engine, ImageRef, InMemoryPortStore,
    KeyFingerprintSecret, PoolConfig, SwarmOptions, SwarmRuntime, TenantPool, WahaHealthProbe,
    keys_from_directory,
};
use proxy_allocator::{
    AllocationPolicy, PostgresLeaseStore, ProxyAllocator, ProxySource, StaticListSource,
    TargetAddr, TunnelHealthChecker,
};
use session_supervisor::{
    ChipStore, Clock, HttpWahaClients, INGEST_ROUTE, Ingest, IngestConfig, Outbox, OwnerId,
    PgChipStore, PgEventBus, PgInbox, PgOutbox, ReapplyHandle, ShutdownReport, Supervisor,
    SupervisorConfig, SupervisorHandle, SupervisorParts, SystemClock, Toggle,
};
use tenant_isolation::pg::reexports::tokio_postgres;
use tenant_isolation::pg::{
    self, AdminDb, MigrationConfig, MigrationSet, PgQuotaLedger, PgSendPacer, PgTenantDirectory,
    PoolOptions, TenantDb,
};
use tenant_isolation::{PacerConfig, QuotaLedger, TenantDirectory, TenantId};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use waha_client::{ClientConfig, RetryConfig};

use crate::BoxError;
use crate::service::{PgTokenStore, TokenStore};

/// Every component's migrations besides tenant-isolation's own (which
/// [`AdminDb::migrate_with`] always applies first), in the order they are applied: the
/// supervisor's, the proxy leases', chip-service's API tokens. Also the sets whose tenant
/// tables [`TenantDb::verify_role_with`] checks.
pub const MIGRATION_SETS: [MigrationSet; 3] = [
    PgChipStore::MIGRATIONS,
    PostgresLeaseStore::MIGRATIONS,
    PgTokenStore::MIGRATIONS,
];

/// How often the ingest's sweep applies again what a crash left unapplied (on every replica).
pub const REAPPLY_EVERY: Duration = Duration::from_secs(10);

/// How often the maintenance task prunes the inbox, the events and the outbox.
pub const MAINTENANCE_EVERY: Duration = Duration::from_secs(10 * 60);

/// How long a send's outbox record is kept: an idempotency key never sends twice within it.
pub const OUTBOX_RETENTION: Duration = Duration::from_secs(30 * 24 * 3_600);

/// How long [`Production::shutdown`] waits for the sweep and the maintenance task.
const TASK_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Which container runtime the production backend drives (`CHIPSERVICE_BACKEND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeKind {
    /// One Docker Engine: each tenant slot is a container ([`DockerRuntime`]).
    Docker,
    /// A Docker Swarm manager: each tenant slot is a one-replica service placed on any node
    /// ([`SwarmRuntime`]). Volumes are node-local: pin tenants with
    /// [`ProductionConfig::swarm_constraints`].
    Swarm,
}

impl RuntimeKind {
    /// The backend's name, as `CHIPSERVICE_BACKEND` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Swarm => "swarm",
        }
    }
}

/// How the pool addresses the WAHA containers (`CHIPSERVICE_DOCKER_ADDRESSING`; see
/// `docs/container-pool.md`, "Addressing").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerAddressing {
    /// By container name on the network (`name`, the default): chip-service runs in a
    /// container attached to the same network, and the containers reach it by its name
    /// there. On Swarm the network is an attachable overlay network.
    Name,
    /// By IP address on the network (`ip`): chip-service runs on the Docker host itself
    /// (Linux routes to bridge networks); the containers reach it at the network's gateway
    /// address. Docker only.
    Ip,
    /// On the host's network (`host-network`): each container listens on `127.0.0.1` at its
    /// own port from `ports` and shares the host's loopback, so it reaches chip-service on
    /// `127.0.0.1`. No isolation between containers: single-host setups and tests only.
    /// Docker only (Swarm refuses it).
    HostNetwork {
        /// The ports the pool may give containers (`CHIPSERVICE_HOST_PORTS`).
        ports: RangeInclusive<u16>,
    },
}

impl ContainerAddressing {
    /// The mode's name, as `CHIPSERVICE_DOCKER_ADDRESSING` spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            ContainerAddressing::Name => "name",
            ContainerAddressing::Ip => "ip",
            ContainerAddressing::HostNetwork { .. } => "host-network",
        }
    }
}

/// Where the proxy list comes from (`CHIPSERVICE_PROXIES`), in proxy-allocator's
/// [`StaticListSource`] line format. `Debug` never shows the list: its URLs may carry
/// passwords.
#[derive(Clone)]
pub enum ProxyList {
    /// The list itself (one proxy per line).
    Inline(String),
    /// A file holding the list, read at startup.
    File(PathBuf),
}

impl fmt::Debug for ProxyList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyList::Inline(text) => write!(f, "Inline(<{} lines>)", text.lines().count()),
            ProxyList::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// Whether the supervisor's proxy-health task runs (`CHIPSERVICE_PROXY_HEALTH`), and where it
/// tunnels to through each working chip's proxy (`CHIPSERVICE_PROXY_HEALTH_TARGET`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyHealth {
    /// The task runs: an HTTP `CONNECT` (or SOCKS5) tunnel to `host:port` through each proxy.
    On {
        /// The target host.
        host: String,
        /// The target port (443: many proxies allow `CONNECT` only to 443 and 80).
        port: u16,
    },
    /// The task does not run (proxies that must not or cannot be probed, tests).
    Off,
}

/// The production backend's settings, read from the environment by
/// [`ServiceConfig::from_env`](crate::service::ServiceConfig::from_env) (the variables and
/// their defaults are in `docs/chip-service.md`). `Debug` shows no database URL, proxy list or
/// secret.
#[derive(Clone)]
pub struct ProductionConfig {
    /// Docker or Swarm (`CHIPSERVICE_BACKEND`).
    pub runtime: RuntimeKind,
    /// The owner role's URL (`CHIPSERVICE_DATABASE_URL`): migrations, the tenant directory,
    /// the platform tables.
    pub database_url: String,
    /// The application role's URL (`CHIPSERVICE_APP_DATABASE_URL`): every tenant-scoped read
    /// and write, and the event bus's LISTEN connection.
    pub app_database_url: String,
    /// The most connections each of the three database pools holds
    /// (`CHIPSERVICE_DATABASE_POOL_SIZE`, default 8).
    pub database_pool_size: usize,
    /// The WAHA image (`CHIPSERVICE_WAHA_IMAGE`).
    pub waha_image: ImageRef,
    /// The WhatsApp engine (`CHIPSERVICE_WAHA_ENGINE`, default NOWEB).
    pub engine: Engine,
    /// Chips per container (`CHIPSERVICE_SESSIONS_PER_CONTAINER`, default 10); the container
    /// limits follow WAHA's sizing guide for the engine and this count.
    pub sessions_per_container: u32,
    /// How long a container gets to pass the readiness gate
    /// (`CHIPSERVICE_WAHA_STARTUP_DEADLINE_SECS`, default 180 s).
    pub startup_deadline: Duration,
    /// How containers are addressed (`CHIPSERVICE_DOCKER_ADDRESSING`, default `name`).
    pub addressing: ContainerAddressing,
    /// The network of the `name` and `ip` modes (`CHIPSERVICE_DOCKER_NETWORK`, default
    /// `chipfleet`; created, labelled, when missing).
    pub network: String,
    /// The managed-by label and name prefix of every container and volume
    /// (`CHIPSERVICE_MANAGED_BY`, default `chipfleet`): the pool only touches what carries it.
    pub managed_by: String,
    /// Where the WAHA containers reach this service (`CHIPSERVICE_WEBHOOK_BASE_URL`): the
    /// webhook URL is this plus `/webhooks/{tenant}`.
    pub webhook_base_url: String,
    /// The proxy list (`CHIPSERVICE_PROXIES`).
    pub proxies: ProxyList,
    /// The proxy-health task (`CHIPSERVICE_PROXY_HEALTH`, `CHIPSERVICE_PROXY_HEALTH_TARGET`).
    pub proxy_health: ProxyHealth,
    /// The most chips sharing one proxy endpoint (`CHIPSERVICE_MAX_CHIPS_PER_PROXY`,
    /// default 3).
    pub max_chips_per_proxy: u32,
    /// The shared key-fingerprint secret (`CHIPSERVICE_FINGERPRINT_SECRET`; `None`: a random
    /// one per process, see [`KeyFingerprintSecret`]).
    pub fingerprint_secret: Option<KeyFingerprintSecret>,
    /// This replica's owner id (`CHIPSERVICE_OWNER_ID`; `None`: host name, pid and a random
    /// suffix). Two processes must never share one.
    pub owner_id: Option<String>,
    /// Placement constraints of every tenant service on Swarm
    /// (`CHIPSERVICE_SWARM_CONSTRAINTS`, comma-separated, e.g. `node.labels.waha==true`).
    pub swarm_constraints: Vec<String>,
}

impl fmt::Debug for ProductionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProductionConfig")
            .field("runtime", &self.runtime)
            .field("database_url", &"<redacted>")
            .field("app_database_url", &"<redacted>")
            .field("database_pool_size", &self.database_pool_size)
            .field("waha_image", &self.waha_image.to_string())
            .field("engine", &self.engine)
            .field("sessions_per_container", &self.sessions_per_container)
            .field("startup_deadline", &self.startup_deadline)
            .field("addressing", &self.addressing)
            .field("network", &self.network)
            .field("managed_by", &self.managed_by)
            .field("webhook_base_url", &self.webhook_base_url)
            .field("proxies", &self.proxies)
            .field("proxy_health", &self.proxy_health)
            .field("max_chips_per_proxy", &self.max_chips_per_proxy)
            .field("fingerprint_secret", &self.fingerprint_secret.is_some())
            .field("owner_id", &self.owner_id)
            .field("swarm_constraints", &self.swarm_constraints)
            .finish()
    }
}

impl ProductionConfig {
    /// The webhook URL template the sessions post to: the base URL and `/webhooks/{tenant}`
    /// (the route the service's router serves).
    pub fn webhook_url(&self) -> String {
        format!(
            "{}{INGEST_ROUTE}",
            self.webhook_base_url.trim_end_matches('/')
        )
    }

    /// The pool's configuration: the image, engine, capacity, deadline, addressing, labels and
    /// fingerprint secret above; everything else at container-pool's defaults (WAHA's sizing
    /// guide, `unless-stopped`, named volumes, the 0–30 s auto-start stagger, idle containers
    /// stopped after 30 min).
    pub fn pool_config(&self) -> PoolConfig {
        let mut config = PoolConfig::new(self.waha_image.clone());
        config.managed_by = self.managed_by.clone();
        config.name_prefix = self.managed_by.clone();
        config.engine = self.engine;
        config.sessions_per_container = self.sessions_per_container;
        config.startup_deadline = self.startup_deadline;
        config.addressing = match &self.addressing {
            ContainerAddressing::Name => AddressingPolicy::NetworkName {
                network: self.network.clone(),
            },
            ContainerAddressing::Ip => AddressingPolicy::NetworkIp {
                network: self.network.clone(),
            },
            // The pool re-records, before it allocates, every port its own containers hold by
            // their labels, so an in-memory store survives a restart of this process.
            ContainerAddressing::HostNetwork { ports } => AddressingPolicy::loopback_host_network(
                ports.clone(),
                Arc::new(InMemoryPortStore::new()),
            ),
        };
        config.key_fingerprint_secret = self.fingerprint_secret.clone();
        config
    }

    /// The supervisor's configuration: session-supervisor's defaults, webhooks to
    /// [`webhook_url`](Self::webhook_url), a step timeout at least a minute above the pool's
    /// startup deadline, and the proxy-health task as configured.
    pub fn supervisor_config(&self) -> SupervisorConfig {
        let mut config = SupervisorConfig::new(self.webhook_url());
        config.step_timeout = config.step_timeout.max(
            self.startup_deadline
                .saturating_add(Duration::from_secs(60)),
        );
        if self.proxy_health == ProxyHealth::Off {
            config.monitors.proxy_health = Toggle::Off {
                reason: "CHIPSERVICE_PROXY_HEALTH=off".to_owned(),
            };
        }
        config
    }
}

/// Why the production backend could not be assembled or started. Carries no secret: database
/// URLs, proxy URLs and keys are never repeated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProductionError {
    /// A piece could not be built, connected or started.
    #[error("{what}: {source}")]
    Setup {
        /// The piece (and the variable that configures it).
        what: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The environment is not usable as configured (an image missing, an empty proxy list).
    #[error("{what}")]
    Refused {
        /// What is wrong and how to fix it.
        what: String,
    },
}

/// `map_err` for a piece of the assembly.
fn setup<E: Into<BoxError>>(what: &'static str) -> impl FnOnce(E) -> ProductionError {
    move |error| ProductionError::Setup {
        what,
        source: error.into(),
    }
}

/// What [`Production::build_tuned`] lets a host change before the backend is assembled.
#[derive(Debug)]
#[non_exhaustive]
pub struct Tuning<'a> {
    /// The pool's configuration ([`ProductionConfig::pool_config`]).
    pub pool: &'a mut PoolConfig,
    /// The supervisor's configuration ([`ProductionConfig::supervisor_config`]).
    pub supervisor: &'a mut SupervisorConfig,
    /// The proxy allocation policy (`max_chips_per_endpoint` from
    /// [`ProductionConfig::max_chips_per_proxy`], the rest at proxy-allocator's defaults).
    pub proxies: &'a mut AllocationPolicy,
}

/// The production backend, assembled ([`Production::build`]) and, once started
/// ([`Production::start`]), running. Stop it with [`Production::shutdown`].
pub struct Production {
    config: ProductionConfig,
    directory: Arc<dyn TenantDirectory>,
    tokens: Arc<PgTokenStore>,
    bus: Arc<PgEventBus>,
    outbox: Arc<dyn Outbox>,
    pool: Arc<TenantPool>,
    supervisor: Supervisor,
    ingest: Arc<Ingest>,
    running: Option<SupervisorHandle>,
    reapply: Option<ReapplyHandle>,
    maintenance: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

impl fmt::Debug for Production {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Production")
            .field("config", &self.config)
            .field("supervisor", &self.supervisor)
            .field("running", &self.running.is_some())
            .finish_non_exhaustive()
    }
}

impl Production {
    /// Migrates the database, connects PostgreSQL and Docker and assembles the supervisor and
    /// the ingest, in the order of the [module documentation](self). The supervisor is built
    /// but not running yet ([`Production::start`]).
    ///
    /// # Errors
    /// [`ProductionError::Setup`] naming the piece that failed (a database or Docker that does
    /// not answer, a migration refused, an unsafe application role, a proxy list that does not
    /// parse, a configuration a crate refused); [`ProductionError::Refused`] for a WAHA image
    /// missing on the Docker host or an empty proxy list.
    pub async fn build(config: ProductionConfig) -> Result<Self, ProductionError> {
        Self::build_tuned(config, |_| {}).await
    }

    /// [`Production::build`], with `tune` given the configurations the environment does not
    /// reach before anything is built from them: the pool's (e.g. extra container variables),
    /// the supervisor's (the retry policy, monitor intervals, restart budgets) and the proxy
    /// allocation policy (rotation threshold and cooldown). What `config` says is already in
    /// them; `tune` changes what it must and leaves the rest. After it, the step time-out is
    /// raised again to at least a minute above the (tuned) startup deadline, and the health
    /// probe uses the tuned `probe_timeout`. [`Production::config`] keeps answering `config`
    /// as given (the environment's view), not the tuned values.
    ///
    /// # Errors
    /// As [`Production::build`]; a tuned configuration a crate refuses is a
    /// [`ProductionError::Setup`] naming that crate's piece.
    pub async fn build_tuned(
        config: ProductionConfig,
        tune: impl FnOnce(Tuning<'_>),
    ) -> Result<Self, ProductionError> {
        let mut pool_config = config.pool_config();
        let mut supervisor_config = config.supervisor_config();
        let mut allocation = AllocationPolicy {
            max_chips_per_endpoint: config.max_chips_per_proxy,
            ..AllocationPolicy::default()
        };
        tune(Tuning {
            pool: &mut pool_config,
            supervisor: &mut supervisor_config,
            proxies: &mut allocation,
        });
        // What the configuration derives from the pool's settings, derived again from the
        // tuned ones: a step waits for a container at least a minute past its startup deadline.
        supervisor_config.step_timeout = supervisor_config.step_timeout.max(
            pool_config
                .startup_deadline
                .saturating_add(Duration::from_secs(60)),
        );
        if supervisor_config.monitors.proxy_health.is_on()
            && config.proxy_health == ProxyHealth::Off
        {
            return Err(ProductionError::Refused {
                what: "the tuning turns the proxy-health task on, but CHIPSERVICE_PROXY_HEALTH is \
                       off: it has no target to check through the proxies (set \
                       CHIPSERVICE_PROXY_HEALTH and CHIPSERVICE_PROXY_HEALTH_TARGET instead)"
                    .to_owned(),
            });
        }
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let options = PoolOptions {
            max_size: config.database_pool_size.max(1),
            ..PoolOptions::default()
        };

        // 1. The migrations, as the owner role; the application role gets its grants.
        let listen: tokio_postgres::Config =
            config
                .app_database_url
                .parse()
                .map_err(|_| ProductionError::Refused {
                    what: "CHIPSERVICE_APP_DATABASE_URL is not a valid PostgreSQL connection \
                           string"
                        .to_owned(),
                })?;
        let app_role = listen
            .get_user()
            .ok_or_else(|| ProductionError::Refused {
                what: "CHIPSERVICE_APP_DATABASE_URL names no user: it must name the application \
                       role (e.g. chipfleet_app)"
                    .to_owned(),
            })?
            .to_owned();
        let admin = AdminDb::connect(&config.database_url, &options).map_err(setup(
            "the owner role's connection pool (CHIPSERVICE_DATABASE_URL)",
        ))?;
        let migration = MigrationConfig {
            app_role,
            ..MigrationConfig::default()
        };
        let report = admin
            .migrate_with(&migration, &MIGRATION_SETS)
            .await
            .map_err(setup(
                "migrating the database as the owner role (CHIPSERVICE_DATABASE_URL)",
            ))?;
        info!(
            applied = report.applied.len(),
            already_applied = report.already_applied.len(),
            "database migrated"
        );

        // 2. The application role, checked against every component's tenant tables.
        let tenant_db = TenantDb::connect(&config.app_database_url, &options)
            .await
            .map_err(setup("the application role (CHIPSERVICE_APP_DATABASE_URL)"))?;
        tenant_db
            .verify_role_with(&MIGRATION_SETS)
            .await
            .map_err(setup(
                "checking the application role's row-level security (CHIPSERVICE_APP_DATABASE_URL)",
            ))?;
        let owner = pg::build_pool(&config.database_url, &options).map_err(setup(
            "the owner role's connection pool (CHIPSERVICE_DATABASE_URL)",
        ))?;

        // 3. The stores.
        let directory: Arc<dyn TenantDirectory> = Arc::new(PgTenantDirectory::new(admin));
        let quota: Arc<dyn QuotaLedger> =
            Arc::new(PgQuotaLedger::new(tenant_db.clone(), clock.clone()));
        let store: Arc<dyn ChipStore> =
            Arc::new(PgChipStore::new(tenant_db.clone(), owner.clone()).with_clock(clock.clone()));
        let bus = Arc::new(PgEventBus::new(tenant_db.clone(), owner.clone(), listen));
        bus.start().await.map_err(setup(
            "the event bus's LISTEN connection (CHIPSERVICE_APP_DATABASE_URL)",
        ))?;
        let outbox: Arc<dyn Outbox> = Arc::new(PgOutbox::new(tenant_db.clone(), owner.clone()));
        let pacer = Arc::new(
            PgSendPacer::new(tenant_db.clone(), PacerConfig::default(), clock.clone())
                .map_err(setup("the send pacer"))?,
        );
        let inbox = Arc::new(PgInbox::new(tenant_db.clone(), owner.clone()));
        let tokens = Arc::new(PgTokenStore::new(tenant_db));

        // 4. The proxies; their leases are shared by the replicas.
        let source = match &config.proxies {
            ProxyList::Inline(text) => StaticListSource::parse(text)
                .map_err(setup("the proxy list (CHIPSERVICE_PROXIES)"))?,
            ProxyList::File(path) => StaticListSource::from_file(path)
                .await
                .map_err(setup("the proxy list file (CHIPSERVICE_PROXIES)"))?,
        };
        let endpoints = source
            .endpoints()
            .await
            .map_err(setup("the proxy list (CHIPSERVICE_PROXIES)"))?
            .len();
        if endpoints == 0 {
            return Err(ProductionError::Refused {
                what: "CHIPSERVICE_PROXIES lists no proxy: every chip needs one (one proxy URL \
                       per line, e.g. `http://user:pass@203.0.113.7:3128 country=BR`)"
                    .to_owned(),
            });
        }
        info!(endpoints, "proxy list read");
        let proxies = Arc::new(
            ProxyAllocator::new(
                Arc::new(source),
                Arc::new(PostgresLeaseStore::new(owner)),
                allocation,
            )
            .map_err(setup(
                "the proxy allocator (CHIPSERVICE_MAX_CHIPS_PER_PROXY)",
            ))?,
        );

        // 5. Docker (or the Swarm manager), with the WAHA image on it.
        let docker = DockerRuntime::connect().await.map_err(setup(
            "the Docker daemon (DOCKER_HOST, else /var/run/docker.sock)",
        ))?;
        let runtime: Arc<dyn ContainerRuntime> = match config.runtime {
            RuntimeKind::Docker => Arc::new(docker),
            RuntimeKind::Swarm => {
                let mut options = SwarmOptions::default();
                options.constraints = config.swarm_constraints.clone();
                Arc::new(SwarmRuntime::new(docker, options))
            }
        };
        let present = runtime
            .has_image(&config.waha_image)
            .await
            .map_err(setup("looking for the WAHA image (CHIPSERVICE_WAHA_IMAGE)"))?;
        if !present {
            return Err(ProductionError::Refused {
                what: format!(
                    "the WAHA image {image} (CHIPSERVICE_WAHA_IMAGE) is not on the Docker host: \
                     pull or build it first (`docker pull {image}`); the pool never pulls",
                    image = config.waha_image
                ),
            });
        }

        // 6. The pool, the supervisor and the ingest.
        let pool = Arc::new(
            TenantPool::new(
                runtime,
                keys_from_directory(directory.clone()),
                Arc::new(
                    WahaHealthProbe::new(pool_config.probe_timeout)
                        .map_err(setup("the health probe"))?,
                ),
                pool_config,
            )
            .map_err(setup("the container pool"))?,
        );
        // The supervisor retries through its policy; a client retrying inside a step would
        // only hide what happened from the step log.
        let waha = HttpWahaClients::new(ClientConfig {
            retry: RetryConfig::disabled(),
            ..ClientConfig::default()
        })
        .map_err(setup("the WAHA clients"))?;
        let mut builder = Supervisor::builder(SupervisorParts {
            directory: directory.clone(),
            quota,
            pool: pool.clone(),
            proxies,
            store,
            waha: Arc::new(waha),
            clock,
        })
        .config(supervisor_config)
        .event_bus(bus.clone())
        .outbox(outbox.clone())
        .pacer(pacer);
        if let ProxyHealth::On { host, port } = &config.proxy_health {
            let target = TargetAddr::new(host.clone(), *port).map_err(setup(
                "the proxy health-check target (CHIPSERVICE_PROXY_HEALTH_TARGET)",
            ))?;
            builder = builder.proxy_health_checker(Arc::new(TunnelHealthChecker::new(target)));
        }
        if let Some(owner_id) = &config.owner_id {
            builder = builder.owner_id(OwnerId::new(owner_id.clone()));
        }
        let supervisor = builder.build().map_err(setup("the supervisor"))?;
        let ingest = Arc::new(
            Ingest::new(
                supervisor.clone(),
                inbox,
                IngestConfig::for_supervisor(supervisor.config()),
            )
            .map_err(setup("the webhook ingest"))?,
        );
        if config.fingerprint_secret.is_none() {
            warn!(
                "CHIPSERVICE_FINGERPRINT_SECRET is not set: this process draws its own key-fingerprint \
                 secret, so container labels written by other replicas or earlier runs do not \
                 match (containers that accept the current key are kept all the same)"
            );
        }
        info!(
            backend = config.runtime.as_str(),
            addressing = config.addressing.as_str(),
            owner = %supervisor.owner_id(),
            "the production backend is assembled"
        );

        Ok(Production {
            config,
            directory,
            tokens,
            bus,
            outbox,
            pool,
            supervisor,
            ingest,
            running: None,
            reapply: None,
            maintenance: None,
        })
    }

    /// Runs the supervisor (claiming tenants, reconciling chips, the always-on monitors), the
    /// ingest's re-apply sweep (every [`REAPPLY_EVERY`]) and the maintenance task (every
    /// [`MAINTENANCE_EVERY`]: the inbox pruned after the ingest's retention, the events after
    /// [`PgEventBus::DEFAULT_RETENTION`], the outbox after [`OUTBOX_RETENTION`], expired
    /// early ack marks). Calling it again does nothing.
    ///
    /// # Errors
    /// [`ProductionError::Setup`] when the supervisor does not start.
    pub async fn start(&mut self) -> Result<(), ProductionError> {
        if self.running.is_some() {
            return Ok(());
        }
        let handle = self
            .supervisor
            .run()
            .await
            .map_err(setup("running the supervisor"))?;
        self.running = Some(handle);
        self.reapply = Some(self.ingest.spawn_reapply(REAPPLY_EVERY));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(maintain(
            self.ingest.clone(),
            self.bus.clone(),
            self.outbox.clone(),
            stopped,
        ));
        self.maintenance = Some((stop, task));
        info!(owner = %self.supervisor.owner_id(), "the production backend runs");
        Ok(())
    }

    /// Whether the supervisor runs.
    pub fn is_running(&self) -> bool {
        self.running
            .as_ref()
            .is_some_and(SupervisorHandle::is_running)
    }

    /// The settings it was built with.
    pub fn config(&self) -> &ProductionConfig {
        &self.config
    }

    /// The supervisor.
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// The webhook ingest (the service's router serves it at `POST /webhooks/{tenant}`).
    pub fn ingest(&self) -> &Arc<Ingest> {
        &self.ingest
    }

    /// The tenant directory.
    pub fn directory(&self) -> &Arc<dyn TenantDirectory> {
        &self.directory
    }

    /// The API token store, for the service's router.
    pub fn tokens(&self) -> Arc<dyn TokenStore> {
        self.tokens.clone()
    }

    /// The supervisor's container pool.
    pub fn pool(&self) -> &Arc<TenantPool> {
        &self.pool
    }

    /// The webhook URL of `tenant`'s sessions.
    pub fn webhook_url_for(&self, tenant: &TenantId) -> String {
        self.supervisor.config().webhook_url_for(tenant)
    }

    /// Stops the supervisor (in-flight steps finish within its grace; this replica's ownership
    /// leases are released, so another replica takes its tenants over at once), the re-apply
    /// sweep and the maintenance task. The containers keep running, with their sessions:
    /// whoever owns their tenants next adopts them. Answers the supervisor's shutdown report.
    pub async fn shutdown(mut self) -> ShutdownReport {
        let report = match self.running.take() {
            Some(handle) => handle.shutdown().await,
            None => ShutdownReport::default(),
        };
        if let Some(reapply) = self.reapply.take()
            && tokio::time::timeout(TASK_STOP_TIMEOUT, reapply.shutdown())
                .await
                .is_err()
        {
            warn!("the inbox sweep did not stop in time; left to end with the process");
        }
        if let Some((stop, mut task)) = self.maintenance.take() {
            let _ = stop.send(true);
            if tokio::time::timeout(TASK_STOP_TIMEOUT, &mut task)
                .await
                .is_err()
            {
                task.abort();
                warn!("the maintenance task did not stop in time; aborted");
            }
        }
        info!(%report, "the production backend stopped; its containers keep running");
        report
    }
}

/// The maintenance task: at once, then every [`MAINTENANCE_EVERY`], until `stop` changes (or
/// its sender is gone).
async fn maintain(
    ingest: Arc<Ingest>,
    bus: Arc<PgEventBus>,
    outbox: Arc<dyn Outbox>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(MAINTENANCE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        prune_once(&ingest, &bus, outbox.as_ref()).await;
    }
}

/// One round of retention; a failure is logged and tried again next round.
async fn prune_once(ingest: &Ingest, bus: &PgEventBus, outbox: &dyn Outbox) {
    let now = SystemTime::now();
    match ingest.prune_inbox().await {
        Ok(removed) => debug!(removed, "webhook inbox pruned"),
        Err(error) => warn!(%error, "pruning the webhook inbox failed"),
    }
    let cutoff = now
        .checked_sub(PgEventBus::DEFAULT_RETENTION)
        .unwrap_or(UNIX_EPOCH);
    match bus.prune(cutoff).await {
        Ok(removed) => debug!(removed, "old events pruned"),
        Err(error) => warn!(%error, "pruning the events failed"),
    }
    let cutoff = now.checked_sub(OUTBOX_RETENTION).unwrap_or(UNIX_EPOCH);
    match outbox.prune(cutoff).await {
        Ok(removed) => debug!(removed, "old outbox records pruned"),
        Err(error) => warn!(%error, "pruning the outbox failed"),
    }
    match outbox.prune_marks(now).await {
        Ok(removed) => debug!(removed, "expired early ack marks pruned"),
        Err(error) => warn!(%error, "pruning the early ack marks failed"),
    }
}
