//! The embedded default: everything a [`Supervisor`] needs, on in-memory backends and the
//! in-process WAHA simulator, plus the webhook [`Ingest`] served by axum on `127.0.0.1:0` as
//! the endpoint the sessions post to. One process, no Docker, no PostgreSQL.
//!
//! What [`Embedded::build`] assembles (the production shape, with in-memory backends):
//! - the tenant directory ([`MemoryTenantDirectory`]) and quota ledger ([`MemoryQuotaLedger`]);
//! - the container pool on container-pool's [`InMemoryRuntime`], whose "containers" are
//!   `waha-sim` servers started in-process on `127.0.0.1` by [`SimLauncher`] (one state
//!   directory per volume, so a container re-created on a volume finds its sessions), probed
//!   ready over HTTP by [`WahaHealthProbe`];
//! - a proxy allocator over a static list of documentation addresses (`203.0.113.x`, never
//!   contacted: the simulator does not dial out), with the proxy-health monitor turned off,
//!   saying why;
//! - the chip store ([`MemoryChipStore`]), event bus ([`InProcessEventBus`]), send outbox
//!   ([`MemoryOutbox`]) and pacer ([`MemorySendPacer`]);
//! - WAHA clients over HTTP without client-side retries (the supervisor retries through its
//!   policy);
//! - the [`Ingest`] over a [`MemoryInbox`], served by `ingest_router` on `127.0.0.1:0`; the
//!   supervisor's webhook URL points there.
//!
//! [`Embedded::start`] runs the supervisor (and the ingest's re-apply sweep);
//! [`Embedded::shutdown`] stops everything and removes the tenants' containers and volumes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use container_pool::{
    AutoStartStagger, ContainerRuntime, ContainerState, EnvVar, ImageRef, InMemoryRuntime,
    KeyFingerprintSecret, PoolConfig, TenantPool, WahaHealthProbe, keys_from_directory, labels,
};
use proxy_allocator::{AllocationPolicy, InMemoryLeaseStore, ProxyAllocator, StaticListSource};
use session_supervisor::{
    HttpWahaClients, InProcessEventBus, Ingest, IngestConfig, MemoryChipStore, MemoryInbox,
    MemoryOutbox, Policy, ReapplyHandle, ShutdownReport, Supervisor, SupervisorConfig,
    SupervisorHandle, SupervisorParts, SystemClock, Toggle, ingest_router,
};
use tenant_isolation::{
    MemoryQuotaLedger, MemorySendPacer, MemoryTenantDirectory, NewTenant, PacerConfig, PlanLimits,
    QuotaLedger, Tenant, TenantDirectory, TenantId, TenantSecrets,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use waha_client::webhook::{ALGORITHM_HEADER, SIGNATURE_HEADER};
use waha_client::{ClientConfig, NewSession, RetryConfig, SessionConfig, WahaApi, WahaClient};
use waha_sim::{SimLauncher, SimulatorControl, Timings};

use crate::BoxError;

/// The image the pool's containers name (the in-memory runtime does not interpret it: every
/// container runs the in-process simulator).
pub const IMAGE: &str = "devlikeapro/waha:latest";

/// Why the proxy-health monitor is off in the embedded default.
pub const NO_REAL_PROXIES: &str = "the embedded default has no real proxies: its proxy list is \
     documentation addresses (203.0.113.x) that nothing ever connects to";

/// How the embedded default is set up. [`Default`] gives the values documented on each field.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// The simulators' time scale (default 0.1: WAHA's 60 s first QR code lasts 6 s, its whole
    /// QR window 16 s). Must be positive and finite.
    pub time_scale: f64,
    /// A booting window after each container of the supervisor's pool comes up, in wall-clock
    /// time: `/health` already answers 200 while every session call answers 400 (seed report
    /// 000's WAHA Plus). Default `None`: no booting window.
    pub booting: Option<Duration>,
    /// Whether the simulated phones acknowledge sent messages by themselves (SERVER, DEVICE,
    /// READ, one simulated second apart). `false` leaves acks to
    /// [`SimulatorControl::ack`]. Default `true`.
    pub automatic_acks: bool,
    /// The pool's startup deadline (default 3 s); a supervisor step may take one second more.
    pub startup_deadline: Duration,
    /// The send pacer's settings (default [`PacerConfig::default`]).
    pub pacer: PacerConfig,
    /// The managed-by label of the pool's containers (default `chipfleet-embedded`).
    pub managed_by: String,
    /// How many proxy endpoints the static list has, 16 chips each (default 4).
    pub proxy_endpoints: usize,
    /// How many of each tenant's newest changes the event bus keeps for a resuming
    /// subscriber, and how far a live subscriber may fall behind before it gets a gap
    /// (default [`InProcessEventBus::DEFAULT_CAPACITY`], 1024; 0 counts as 1).
    pub event_history: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            time_scale: 0.1,
            booting: None,
            automatic_acks: true,
            startup_deadline: Duration::from_secs(3),
            pacer: PacerConfig::default(),
            managed_by: "chipfleet-embedded".to_owned(),
            proxy_endpoints: 4,
            event_history: InProcessEventBus::DEFAULT_CAPACITY,
        }
    }
}

/// Why the embedded default could not be assembled or could not do what was asked. Carries
/// no secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// An option is out of range.
    #[error("embedded option {setting} {problem}")]
    Invalid {
        /// The option.
        setting: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A piece could not be built or started.
    #[error("{what}: {source}")]
    Setup {
        /// The piece.
        what: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// An operation on one tenant failed.
    #[error("tenant {tenant}: {what}: {source}")]
    Tenant {
        /// The tenant.
        tenant: TenantId,
        /// The operation.
        what: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// Something that should exist does not (a container, its address).
    #[error("{what}")]
    Missing {
        /// What is missing.
        what: String,
    },
}

/// `map_err` for a piece of the assembly.
fn setup<E: Into<BoxError>>(what: &'static str) -> impl FnOnce(E) -> EmbeddedError {
    move |error| EmbeddedError::Setup {
        what,
        source: error.into(),
    }
}

/// `map_err` for an operation on one tenant.
fn on_tenant<E: Into<BoxError>>(
    tenant: &TenantId,
    what: &'static str,
) -> impl FnOnce(E) -> EmbeddedError {
    let tenant = tenant.clone();
    move |error| EmbeddedError::Tenant {
        tenant,
        what,
        source: error.into(),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The embedded default's decision policy: the default table and graces, with retries scaled
/// to an in-process WAHA that answers within milliseconds (a retry costs nothing here), and a
/// booting WAHA re-read every 250 ms.
pub fn embedded_policy() -> Policy {
    let mut policy = Policy::default();
    policy.classes.infra.base = ms(100);
    policy.classes.infra.cap = secs(1);
    policy.classes.provision.base = ms(200);
    policy.classes.provision.cap = secs(2);
    policy.classes.session.base = ms(200);
    policy.classes.session.cap = secs(2);
    policy.classes.capacity.base = ms(500);
    policy.classes.capacity.cap = secs(5);
    policy.reread_after = ms(250);
    policy.resync_interval = secs(5);
    policy
}

/// The supervisor's configuration in the embedded default: webhooks to `webhook_url`, a step
/// timeout one second above the pool's `startup_deadline`, quick ticks and ownership timings
/// (`lease_ttl ≥ safety_margin + 2 × renew_every`), [`embedded_policy`], the silent-death scan
/// every 2 s (it also refreshes the `supervisor_chips{phase}` gauge, so `/metrics` follows the
/// chips within seconds; a working chip is still probed only once silent past the policy's
/// `silence_threshold`), and the proxy-health monitor off ([`NO_REAL_PROXIES`]). Every other
/// always-on task runs.
pub fn supervisor_config(webhook_url: String, startup_deadline: Duration) -> SupervisorConfig {
    let mut config = SupervisorConfig::new(webhook_url);
    config.tick_interval = ms(50);
    config.step_timeout = startup_deadline + secs(1);
    config.lease_ttl = secs(10);
    config.renew_every = secs(2);
    config.safety_margin = secs(4);
    config.claim_interval = ms(200);
    config.shutdown_grace = secs(5);
    config.policy = embedded_policy();
    // Listing the chips of the owned tenants in memory costs nothing; a probe is queued only
    // for a chip silent past the threshold, and a probe moves `last_event_at`, so a working
    // chip is not probed more often than with the default minute.
    config.monitor_intervals.silent_scan = secs(2);
    config.monitors.proxy_health = Toggle::Off {
        reason: NO_REAL_PROXIES.to_owned(),
    };
    config
}

/// The embedded default, assembled ([`Embedded::build`]) and, once started
/// ([`Embedded::start`]), running. Stop it with [`Embedded::shutdown`].
pub struct Embedded {
    options: EmbeddedOptions,
    directory: Arc<dyn TenantDirectory>,
    quota: Arc<dyn QuotaLedger>,
    launcher: Arc<SimLauncher>,
    runtime: Arc<InMemoryRuntime>,
    pool: Arc<TenantPool>,
    /// The pool's configuration without the booting window: what an earlier life of a
    /// container ran with ([`Embedded::seed_reused_volume`]).
    plain_pool_config: PoolConfig,
    proxies: Arc<ProxyAllocator>,
    supervisor: Supervisor,
    ingest: Arc<Ingest>,
    inbox: Arc<MemoryInbox>,
    webhook_addr: SocketAddr,
    http: reqwest::Client,
    running: Option<SupervisorHandle>,
    reapply: Option<ReapplyHandle>,
    server: Option<JoinHandle<()>>,
    stop_server: Option<oneshot::Sender<()>>,
}

impl Embedded {
    /// Assembles the embedded default and starts serving the ingest on `127.0.0.1:0`; the
    /// supervisor is built but not running yet ([`Embedded::start`]), so tenants can be
    /// created and volumes seeded first.
    ///
    /// # Errors
    /// [`EmbeddedError::Invalid`] for a time scale that is not positive and finite;
    /// [`EmbeddedError::Setup`] naming the piece that could not be built (a configuration a
    /// crate refused, no local port).
    pub async fn build(options: EmbeddedOptions) -> Result<Self, EmbeddedError> {
        let usable_scale = options.time_scale.is_finite() && options.time_scale > 0.0;
        if !usable_scale {
            return Err(EmbeddedError::Invalid {
                setting: "time_scale",
                problem: format!("must be positive and finite, got {}", options.time_scale),
            });
        }
        let directory: Arc<dyn TenantDirectory> = Arc::new(MemoryTenantDirectory::new());
        let quota: Arc<dyn QuotaLedger> = Arc::new(MemoryQuotaLedger::new(
            directory.clone(),
            Arc::new(SystemClock),
        ));

        // The "containers": one in-process simulator each, on the options' time scale.
        let mut timings = Timings::default();
        if !options.automatic_acks {
            timings.ack_interval = None;
        }
        let scale = options.time_scale;
        let launcher = Arc::new(
            SimLauncher::new()
                .configure(move |builder| builder.time_scale(scale).timings(timings.clone())),
        );
        let runtime = Arc::new(InMemoryRuntime::new(launcher.clone()));

        let mut plain = PoolConfig::new(ImageRef::parse(IMAGE).map_err(setup("the image"))?);
        plain.managed_by = options.managed_by.clone();
        plain.volumes = true;
        plain.startup_deadline = options.startup_deadline;
        plain.poll_interval = ms(20);
        plain.probe_timeout = secs(1);
        plain.auto_start = AutoStartStagger {
            base: Duration::ZERO,
            spread: Duration::ZERO,
        };
        // One fingerprint secret for every pool of this world (see `KeyFingerprintSecret`).
        plain.key_fingerprint_secret =
            Some(KeyFingerprintSecret::random().map_err(setup("the key-fingerprint secret"))?);
        let mut config = plain.clone();
        if let Some(booting) = options.booting {
            // The simulator reads its faults in simulated time.
            let simulated = booting.div_f64(scale);
            config.extra_env.extend([
                EnvVar::plain("SIM_BOOTING_MS", simulated.as_millis().to_string()),
                EnvVar::plain("SIM_BOOTING_STATUS", "400"),
                EnvVar::plain("SIM_BOOTING_HEALTH", "200"),
            ]);
        }
        let pool = Arc::new(
            TenantPool::new(
                runtime.clone(),
                keys_from_directory(directory.clone()),
                Arc::new(WahaHealthProbe::new(secs(1)).map_err(setup("the health probe"))?),
                config,
            )
            .map_err(setup("the container pool"))?,
        );

        // Proxies: documentation addresses, never contacted (the simulator does not dial out).
        let list: String = (0..options.proxy_endpoints.max(1))
            .map(|n| format!("http://203.0.113.{}:3128 country=BR\n", 10 + n))
            .collect();
        let proxies = Arc::new(
            ProxyAllocator::new(
                Arc::new(StaticListSource::parse(&list).map_err(setup("the proxy list"))?),
                Arc::new(InMemoryLeaseStore::new()),
                AllocationPolicy {
                    max_chips_per_endpoint: 16,
                    ..AllocationPolicy::default()
                },
            )
            .map_err(setup("the proxy allocator"))?,
        );

        // The supervisor retries through its policy; a client retrying inside a step would
        // only hide what happened from the step log.
        let waha = HttpWahaClients::new(ClientConfig {
            retry: RetryConfig::disabled(),
            ..ClientConfig::default()
        })
        .map_err(setup("the WAHA clients"))?;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(setup("a local port for the webhook endpoint"))?;
        let webhook_addr = listener
            .local_addr()
            .map_err(setup("the webhook endpoint's address"))?;
        let config = supervisor_config(
            format!("http://{webhook_addr}/webhooks/{{tenant}}"),
            options.startup_deadline,
        );
        let pacer = MemorySendPacer::new(options.pacer.clone(), Arc::new(SystemClock))
            .map_err(setup("the send pacer"))?;
        let supervisor = Supervisor::builder(SupervisorParts {
            directory: directory.clone(),
            quota: quota.clone(),
            pool: pool.clone(),
            proxies: proxies.clone(),
            store: Arc::new(MemoryChipStore::new()),
            waha: Arc::new(waha),
            clock: Arc::new(SystemClock),
        })
        .config(config)
        .event_bus(Arc::new(InProcessEventBus::with_capacity(
            options.event_history,
        )))
        .outbox(Arc::new(MemoryOutbox::new()))
        .pacer(Arc::new(pacer))
        .build()
        .map_err(setup("the supervisor"))?;

        let inbox = Arc::new(MemoryInbox::new());
        let ingest = Arc::new(
            Ingest::new(
                supervisor.clone(),
                inbox.clone(),
                IngestConfig::for_supervisor(supervisor.config()),
            )
            .map_err(setup("the webhook ingest"))?,
        );
        let app = ingest_router(ingest.clone());
        let (stop_server, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let stopped = async move {
                let _ = stopped.await;
            };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::warn!(%error, "the webhook endpoint stopped");
            }
        });

        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(setup("an HTTP client"))?;

        Ok(Embedded {
            options,
            directory,
            quota,
            launcher,
            runtime,
            pool,
            plain_pool_config: plain,
            proxies,
            supervisor,
            ingest,
            inbox,
            webhook_addr,
            http,
            running: None,
            reapply: None,
            server: Some(server),
            stop_server: Some(stop_server),
        })
    }

    /// Runs the supervisor (claiming tenants, reconciling chips, the always-on monitors) and
    /// the ingest's re-apply sweep. Calling it again does nothing.
    ///
    /// # Errors
    /// [`EmbeddedError::Setup`] when the supervisor does not start.
    pub async fn start(&mut self) -> Result<(), EmbeddedError> {
        if self.running.is_some() {
            return Ok(());
        }
        let handle = self
            .supervisor
            .run()
            .await
            .map_err(setup("running the supervisor"))?;
        self.running = Some(handle);
        self.reapply = Some(self.ingest.spawn_reapply(secs(10)));
        Ok(())
    }

    /// Whether the supervisor runs.
    pub fn is_running(&self) -> bool {
        self.running
            .as_ref()
            .is_some_and(SupervisorHandle::is_running)
    }

    /// The options it was built with.
    pub fn options(&self) -> &EmbeddedOptions {
        &self.options
    }

    /// The supervisor.
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// The webhook ingest (also served over HTTP at [`Embedded::webhook_url_for`]).
    pub fn ingest(&self) -> &Arc<Ingest> {
        &self.ingest
    }

    /// The ingest's webhook inbox: every delivery the ingest accepted and stored (a refused
    /// one is never stored), with its applied mark, and each message's highest ack.
    pub fn inbox(&self) -> &Arc<MemoryInbox> {
        &self.inbox
    }

    /// The tenant directory.
    pub fn directory(&self) -> &Arc<dyn TenantDirectory> {
        &self.directory
    }

    /// The quota ledger.
    pub fn quota(&self) -> &Arc<dyn QuotaLedger> {
        &self.quota
    }

    /// The supervisor's container pool.
    pub fn pool(&self) -> &Arc<TenantPool> {
        &self.pool
    }

    /// The proxy allocator.
    pub fn proxies(&self) -> &Arc<ProxyAllocator> {
        &self.proxies
    }

    /// The launcher of the in-process simulators (their controls, by container name).
    pub fn launcher(&self) -> &Arc<SimLauncher> {
        &self.launcher
    }

    /// Where the ingest listens.
    pub fn webhook_addr(&self) -> SocketAddr {
        self.webhook_addr
    }

    /// The webhook URL of `tenant`'s sessions.
    pub fn webhook_url_for(&self, tenant: &TenantId) -> String {
        self.supervisor.config().webhook_url_for(tenant)
    }

    /// Creates `tenant` with `limits` and freshly generated secrets.
    ///
    /// # Errors
    /// [`EmbeddedError::Tenant`]: the OS random source failed, or the directory refused (an
    /// existing id).
    pub async fn create_tenant(
        &self,
        tenant: &TenantId,
        limits: PlanLimits,
    ) -> Result<Tenant, EmbeddedError> {
        let secrets = TenantSecrets::generate().map_err(on_tenant(tenant, "generating secrets"))?;
        self.directory
            .create(NewTenant::new(tenant.clone(), limits, secrets))
            .await
            .map_err(on_tenant(tenant, "creating it"))
    }

    /// A pool like the supervisor's, on the same runtime and volumes, without the booting
    /// window.
    fn plain_pool(&self) -> Result<TenantPool, EmbeddedError> {
        TenantPool::new(
            self.runtime.clone(),
            keys_from_directory(self.directory.clone()),
            Arc::new(WahaHealthProbe::new(secs(1)).map_err(setup("the health probe"))?),
            self.plain_pool_config.clone(),
        )
        .map_err(setup("the earlier pool"))
    }

    /// An earlier life of `tenant`'s container leaves `sessions` (stopped) in its volume: a
    /// container is created on the tenant's slot-0 volume (without the booting window), the
    /// sessions are created in it, and it is stopped and removed with the volume kept. Then a
    /// container re-created on that volume is asked what it finds, and removed again.
    /// Answers the sessions it listed, sorted: what the supervisor's container will find on
    /// the reused volume. Call it before [`Embedded::start`].
    ///
    /// # Errors
    /// [`EmbeddedError::Tenant`] naming the operation that failed.
    pub async fn seed_reused_volume(
        &self,
        tenant: &TenantId,
        sessions: &[&str],
    ) -> Result<Vec<String>, EmbeddedError> {
        let earlier = self.plain_pool()?;
        let endpoint = earlier
            .ensure(tenant)
            .await
            .map_err(on_tenant(tenant, "starting the earlier container"))?;
        let client = WahaClient::new(endpoint.base_url.clone(), endpoint.api_key.clone())
            .map_err(on_tenant(tenant, "a WAHA client"))?;
        for name in sessions {
            client
                .create_session(&NewSession::new(*name, SessionConfig::default()))
                .await
                .map_err(on_tenant(
                    tenant,
                    "creating a session in the earlier container",
                ))?;
        }
        // Stopped with a grace period (the simulator's final flush to its volume), then
        // removed; the volume stays.
        self.runtime
            .stop(&endpoint.container, secs(5))
            .await
            .map_err(on_tenant(tenant, "stopping the earlier container"))?;
        earlier
            .remove_tenant(tenant, false)
            .await
            .map_err(on_tenant(tenant, "removing the earlier container"))?;

        let again = earlier
            .ensure(tenant)
            .await
            .map_err(on_tenant(tenant, "re-creating a container on the volume"))?;
        let client = WahaClient::new(again.base_url.clone(), again.api_key.clone())
            .map_err(on_tenant(tenant, "a WAHA client"))?;
        let mut found: Vec<String> = client
            .list_sessions(true)
            .await
            .map_err(on_tenant(
                tenant,
                "listing the sessions on the reused volume",
            ))?
            .into_iter()
            .map(|session| session.name)
            .collect();
        found.sort();
        self.runtime
            .stop(&again.container, secs(5))
            .await
            .map_err(on_tenant(tenant, "stopping the re-created container"))?;
        earlier
            .remove_tenant(tenant, false)
            .await
            .map_err(on_tenant(tenant, "removing the re-created container"))?;
        Ok(found)
    }

    /// The control of the simulator behind `tenant`'s running slot-0 container of the
    /// supervisor's pool (`None` while none runs): scans, acks, faults, its call log.
    pub async fn control_for(&self, tenant: &TenantId) -> Option<SimulatorControl> {
        let containers = self.pool.containers(tenant).await.ok()?;
        containers
            .into_iter()
            .filter(|c| c.state == ContainerState::Running && c.label(labels::SLOT) == Some("0"))
            .find_map(|c| self.launcher.control(&c.name))
            .filter(SimulatorControl::is_running)
    }

    /// The session names WAHA lists in `tenant`'s slot-0 container, sorted (the container is
    /// ensured: created when missing).
    ///
    /// # Errors
    /// [`EmbeddedError::Tenant`]: no ready container, or WAHA refused the listing.
    pub async fn session_names(&self, tenant: &TenantId) -> Result<Vec<String>, EmbeddedError> {
        let endpoint = self
            .pool
            .ensure(tenant)
            .await
            .map_err(on_tenant(tenant, "the tenant's container"))?;
        let client = WahaClient::new(endpoint.base_url.clone(), endpoint.api_key.clone())
            .map_err(on_tenant(tenant, "a WAHA client"))?;
        let mut names: Vec<String> = client
            .list_sessions(true)
            .await
            .map_err(on_tenant(tenant, "listing its sessions"))?
            .into_iter()
            .map(|session| session.name)
            .collect();
        names.sort();
        Ok(names)
    }

    /// The HTTP status `tenant`'s container `container` answers now to `GET /api/sessions`
    /// with the tenant's key: 200 once WAHA's session manager is up, 400 while it boots
    /// (seed report 000). Reads only: nothing lands in the simulator's call log.
    ///
    /// # Errors
    /// [`EmbeddedError::Missing`] when the container or its address is gone;
    /// [`EmbeddedError::Tenant`] when the directory or the request failed.
    pub async fn probe_session_api(
        &self,
        tenant: &TenantId,
        container: &str,
    ) -> Result<u16, EmbeddedError> {
        let info = self
            .pool
            .containers(tenant)
            .await
            .map_err(on_tenant(tenant, "listing its containers"))?
            .into_iter()
            .find(|c| c.name == container)
            .ok_or_else(|| EmbeddedError::Missing {
                what: format!("tenant {tenant} has no container {container}"),
            })?;
        let url = info.url.ok_or_else(|| EmbeddedError::Missing {
            what: format!("container {container} has no address"),
        })?;
        let key = self
            .directory
            .get(tenant)
            .await
            .map_err(on_tenant(tenant, "reading its key"))?
            .secrets
            .container_api_key;
        let response = self
            .http
            .get(format!(
                "{}/api/sessions?all=true",
                url.as_str().trim_end_matches('/')
            ))
            .header("X-Api-Key", key.expose_secret())
            .send()
            .await
            .map_err(on_tenant(tenant, "probing its session API"))?;
        Ok(response.status().as_u16())
    }

    /// Posts `body` to `tenant`'s webhook URL as WAHA would, signed with `signature` (hex
    /// HMAC-SHA512); answers the HTTP status the ingest gave.
    ///
    /// # Errors
    /// [`EmbeddedError::Tenant`] when the request failed.
    pub async fn post_webhook(
        &self,
        tenant: &TenantId,
        body: &[u8],
        signature: &str,
    ) -> Result<u16, EmbeddedError> {
        let response = self
            .http
            .post(self.webhook_url_for(tenant))
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(ALGORITHM_HEADER, "sha512")
            .body(body.to_vec())
            .send()
            .await
            .map_err(on_tenant(tenant, "posting a webhook"))?;
        Ok(response.status().as_u16())
    }

    /// Stops the supervisor (in-flight steps finish within its grace, ownership is released),
    /// the re-apply sweep and the webhook endpoint, then removes the containers and volumes of
    /// every tenant the directory lists (the simulators stop), however the tenant was created
    /// ([`Embedded::create_tenant`], the HTTP API, the directory directly). Answers the
    /// supervisor's shutdown report.
    pub async fn shutdown(mut self) -> ShutdownReport {
        let report = match self.running.take() {
            Some(handle) => handle.shutdown().await,
            None => ShutdownReport::default(),
        };
        if let Some(reapply) = self.reapply.take() {
            reapply.shutdown().await;
        }
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        if let Some(mut server) = self.server.take() {
            // Graceful: open connections get a moment to finish, then the task is dropped.
            if tokio::time::timeout(secs(2), &mut server).await.is_err() {
                server.abort();
            }
        }
        match self.directory.list().await {
            Ok(tenants) => {
                for tenant in &tenants {
                    if let Err(error) = self.pool.remove_tenant(&tenant.id, true).await {
                        tracing::warn!(tenant = %tenant.id, %error, "removing the tenant's containers failed");
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "listing the tenants to remove their containers failed");
            }
        }
        report
    }
}
