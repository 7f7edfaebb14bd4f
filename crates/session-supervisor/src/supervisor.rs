//! The public API (`docs/session-supervisor.md`, 8): [`Supervisor`], built from the existing
//! pieces by [`SupervisorBuilder`], framework-agnostic (the host's HTTP layer calls it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use container_pool::{ChipActivity, TenantPool};
use fleet_vocab::Clock;
use proxy_allocator::{HealthChecker, ProxyAllocator};
use tenant_isolation::{
    ChipId, MemorySendPacer, PacerConfig, QuotaLedger, SendPacer, SessionName, SlotKind,
    TenantDirectory, TenantId,
};
use tokio::sync::Notify;
use tracing::{debug, info, warn};
use waha_client::webhook::WebhookEvent;
use waha_client::{QrValue, WahaApi};

use crate::chip::{ChipKey, ChipRecord, ChipSpec, Desired, RunState};
use crate::clients::WahaClients;
use crate::config::SupervisorConfig;
use crate::error::SupervisorError;
use crate::events::{
    ChangeFilter, ChangeStream, ChipChange, ChipChangeKind, EventBus, InProcessEventBus,
};
use crate::execute::Effects;
use crate::outbox::{MemoryOutbox, Outbox};
use crate::owner::Owned;
use crate::phase::{LoginKind, Phase};
use crate::policy::{RestartBudgets, classify_event};
use crate::runtime::{self, SupervisorHandle};
use crate::store::{ChipStore, CreateOutcome, NewChip, OwnerId, Trigger};

/// How many compare-and-set rounds a desired-state write tries before answering
/// [`SupervisorError::Busy`].
const DESIRED_WRITE_ATTEMPTS: usize = 5;

/// The pieces a supervisor is assembled from (all shared; the host keeps its own handles).
pub struct SupervisorParts {
    /// Tenants, their status and secrets.
    pub directory: Arc<dyn TenantDirectory>,
    /// Chip and running-session slots.
    pub quota: Arc<dyn QuotaLedger>,
    /// The tenants' WAHA containers.
    pub pool: Arc<TenantPool>,
    /// Sticky proxy leases.
    pub proxies: Arc<ProxyAllocator>,
    /// Where chips live.
    pub store: Arc<dyn ChipStore>,
    /// How WAHA is reached ([`HttpWahaClients`](crate::HttpWahaClients) by default).
    pub waha: Arc<dyn WahaClients>,
    /// The clock decisions and records use.
    pub clock: Arc<dyn Clock>,
}

/// Builds a [`Supervisor`]; `build` validates and does no I/O.
pub struct SupervisorBuilder {
    parts: SupervisorParts,
    pacer: Option<Arc<dyn SendPacer>>,
    outbox: Option<Arc<dyn Outbox>>,
    bus: Option<Arc<dyn EventBus>>,
    config: Option<SupervisorConfig>,
    owner_id: Option<OwnerId>,
    health_checker: Option<Arc<dyn HealthChecker>>,
}

impl SupervisorBuilder {
    /// The checker the proxy-health task connects through each working chip's proxy with
    /// (for example `TunnelHealthChecker` to WhatsApp's host). Required while
    /// `monitors.proxy_health` is on.
    #[must_use]
    pub fn proxy_health_checker(mut self, checker: Arc<dyn HealthChecker>) -> Self {
        self.health_checker = Some(checker);
        self
    }

    /// The send pacer: told when a chip starts working (its warm-up) and is forgotten, and
    /// asked before every [`Supervisor::send_text`]. Without one, sends are paced by a
    /// [`MemorySendPacer`] with [`PacerConfig::default`] on the supervisor's clock, private to
    /// this supervisor, whose chips' warm-up starts at their first send; replicas that share
    /// limits need a shared pacer backend here.
    #[must_use]
    pub fn pacer(mut self, pacer: Arc<dyn SendPacer>) -> Self {
        self.pacer = Some(pacer);
        self
    }

    /// The send outbox [`Supervisor::send_text`] records every send in (default: a
    /// [`MemoryOutbox`], which does not survive the process: "one key never sends twice
    /// across a crash" needs a durable backend shared by the replicas).
    #[must_use]
    pub fn outbox(mut self, outbox: Arc<dyn Outbox>) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// Where chip changes are published (default: an [`InProcessEventBus`]).
    #[must_use]
    pub fn event_bus(mut self, bus: Arc<dyn EventBus>) -> Self {
        self.bus = Some(bus);
        self
    }

    /// The configuration (required: it names the webhook URL).
    #[must_use]
    pub fn config(mut self, config: SupervisorConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// This process's owner id (default: host name, pid and a random suffix). Two processes
    /// must never share one.
    #[must_use]
    pub fn owner_id(mut self, owner: OwnerId) -> Self {
        self.owner_id = Some(owner);
        self
    }

    /// Validates the configuration against the pool's and assembles the supervisor. No I/O.
    ///
    /// # Errors
    /// [`SupervisorError::Config`] naming the refused setting.
    pub fn build(self) -> Result<Supervisor, SupervisorError> {
        let config = self.config.ok_or_else(|| {
            SupervisorError::Config(crate::config::ConfigError::Invalid {
                setting: "webhook_url",
                problem: "is required: call .config(SupervisorConfig::new(url))".to_owned(),
            })
        })?;
        config.validate(self.parts.pool.config().startup_deadline)?;
        if config.monitors.proxy_health.is_on() && self.health_checker.is_none() {
            return Err(SupervisorError::Config(
                crate::config::ConfigError::Invalid {
                    setting: "monitors.proxy_health",
                    problem:
                        "is on but no health checker was given: call .proxy_health_checker(..) \
                          or turn the task off with a reason"
                            .to_owned(),
                },
            ));
        }
        let now = self.parts.clock.now();
        let budgets = RestartBudgets::new(
            config.tenant_restart_budget,
            config.global_restart_budget,
            now,
        );
        let bus = self
            .bus
            .unwrap_or_else(|| Arc::new(InProcessEventBus::new()) as Arc<dyn EventBus>);
        let owner_id = self.owner_id.unwrap_or_else(default_owner_id);
        let send_pacer = match &self.pacer {
            Some(pacer) => pacer.clone(),
            None => Arc::new(
                MemorySendPacer::new(PacerConfig::default(), self.parts.clock.clone())
                    .map_err(SupervisorError::Tenant)?,
            ) as Arc<dyn SendPacer>,
        };
        let outbox = self
            .outbox
            .unwrap_or_else(|| Arc::new(MemoryOutbox::new()) as Arc<dyn Outbox>);
        let parts = self.parts;
        Ok(Supervisor {
            inner: Arc::new(Inner {
                effects: Effects {
                    directory: parts.directory,
                    quota: parts.quota,
                    pool: parts.pool,
                    proxies: parts.proxies,
                    store: parts.store,
                    waha: parts.waha,
                    clock: parts.clock,
                    pacer: self.pacer,
                    config,
                    budgets: Mutex::new(budgets),
                },
                bus,
                outbox,
                send_pacer,
                owner_id,
                owned: Owned::default(),
                wake: Notify::new(),
                claim_now: Notify::new(),
                running: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
                in_flight: Mutex::new(HashMap::new()),
                placement_locks: Mutex::new(HashMap::new()),
                health_checker: self.health_checker,
                orphans_seen: Mutex::new(HashMap::new()),
            }),
        })
    }
}

fn default_owner_id() -> OwnerId {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".to_owned());
    let mut random = [0u8; 6];
    let suffix = match getrandom::fill(&mut random) {
        Ok(()) => random
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        Err(_) => format!(
            "{:x}",
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ),
    };
    OwnerId::new(format!("{host}-{}-{suffix}", std::process::id()))
}

pub(crate) struct Inner {
    pub(crate) effects: Effects,
    pub(crate) bus: Arc<dyn EventBus>,
    /// Where sends are recorded ([`Supervisor::send_text`]).
    pub(crate) outbox: Arc<dyn Outbox>,
    /// The pacer sends ask: the builder's, else a private in-memory one.
    pub(crate) send_pacer: Arc<dyn SendPacer>,
    pub(crate) owner_id: OwnerId,
    pub(crate) owned: Owned,
    /// Wakes the scheduler (work was queued in this process).
    pub(crate) wake: Notify,
    /// Wakes the ownership loop to claim tenants at once (a chip was created for a tenant this
    /// process does not own).
    pub(crate) claim_now: Notify,
    pub(crate) running: AtomicBool,
    pub(crate) stopping: AtomicBool,
    /// Chips being reconciled in this process; `true` when a trigger arrived meanwhile (run
    /// again right after).
    pub(crate) in_flight: Mutex<HashMap<ChipKey, bool>>,
    /// Per tenant: held from reading occupancy to writing a chip's placement.
    pub(crate) placement_locks: Mutex<HashMap<TenantId, Arc<tokio::sync::Mutex<()>>>>,
    /// The proxy-health task's checker.
    pub(crate) health_checker: Option<Arc<dyn HealthChecker>>,
    /// Quota reservations without a record, and when each was first seen so.
    pub(crate) orphans_seen: Mutex<HashMap<(TenantId, ChipId, SlotKind), SystemTime>>,
}

/// What [`Supervisor::observe`] did with an event.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObserveOutcome {
    /// A signal was appended under this number and the chip was queued.
    Recorded {
        /// The chip.
        key: ChipKey,
        /// The signal's number.
        seq: u64,
    },
    /// Activity (a message, an ack) was recorded under this number; no reconcile is queued
    /// for it (the next one folds it in).
    Activity {
        /// The chip.
        key: ChipKey,
        /// The signal's number.
        seq: u64,
    },
    /// The event names no chip this supervisor knows (a removed chip, a foreign session):
    /// nothing was recorded.
    UnknownChip,
}

/// The QR code of a chip waiting for a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QrCode {
    /// A PNG image.
    Png(Vec<u8>),
    /// The raw value to render yourself.
    Raw(QrValue),
}

/// Which QR form to fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QrFormat {
    /// A PNG image.
    Png,
    /// The raw value.
    Raw,
}

/// The chipfleet controller. Cheap to clone; every method works on any replica (desired-state
/// writes are compare-and-set; only the tenant's owner acts).
///
/// ```no_run
/// # use std::sync::Arc;
/// # use session_supervisor::{Supervisor, SupervisorConfig, SupervisorParts};
/// # async fn demo(parts: SupervisorParts) -> Result<(), Box<dyn std::error::Error>> {
/// let supervisor = Supervisor::builder(parts)
///     .config(SupervisorConfig::new("http://127.0.0.1:8080/webhooks/{tenant}"))
///     .build()?;
/// let handle = supervisor.run().await?;
/// // ... serve the host's API with `supervisor` ...
/// let report = handle.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Supervisor {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("owner_id", &self.inner.owner_id)
            .field("owned_tenants", &self.inner.owned.len())
            .field("config", &self.inner.effects.config)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A builder over `parts`.
    pub fn builder(parts: SupervisorParts) -> SupervisorBuilder {
        SupervisorBuilder {
            parts,
            pacer: None,
            outbox: None,
            bus: None,
            config: None,
            owner_id: None,
            health_checker: None,
        }
    }

    /// Starts claiming tenants, the scheduler and the always-on tasks; returns the handle
    /// that shuts them down.
    ///
    /// # Errors
    /// [`SupervisorError::AlreadyRunning`] when called twice.
    pub async fn run(&self) -> Result<SupervisorHandle, SupervisorError> {
        runtime::start(self.clone()).await
    }

    /// This process's owner id.
    pub fn owner_id(&self) -> &OwnerId {
        &self.inner.owner_id
    }

    /// The tenants this process owns now.
    pub fn owned_tenants(&self) -> Vec<TenantId> {
        self.inner
            .owned
            .guards()
            .into_iter()
            .map(|g| g.tenant().clone())
            .collect()
    }

    /// The configuration.
    pub fn config(&self) -> &SupervisorConfig {
        &self.inner.effects.config
    }

    fn store(&self) -> &dyn ChipStore {
        &*self.inner.effects.store
    }

    fn now(&self) -> SystemTime {
        self.inner.effects.clock.now()
    }

    fn refuse_when_stopping(&self) -> Result<(), SupervisorError> {
        if self.inner.stopping.load(Ordering::Acquire) {
            return Err(SupervisorError::ShuttingDown);
        }
        Ok(())
    }

    /// Creates a chip: idempotent on the host's id. The same id and spec return the same
    /// chip; the same id with another spec is [`SupervisorError::ChipConflict`]; a full plan
    /// is [`SupervisorError::QuotaExceeded`] naming the limit. The order is: tenant active,
    /// chip slot reserved (idempotent per chip, so racing creates of one id reserve one
    /// slot), record written. Progress arrives as [`ChipChange`]s.
    ///
    /// # Errors
    /// As above; [`SupervisorError::InvalidSpec`] for an engine the pool does not run,
    /// [`SupervisorError::TenantInactive`], store and directory failures.
    pub async fn create_chip(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        spec: ChipSpec,
    ) -> Result<ChipRecord, SupervisorError> {
        self.refuse_when_stopping()?;
        let pool_engine = self.inner.effects.pool.config().engine;
        if let Some(engine) = spec.engine
            && engine != pool_engine
        {
            return Err(SupervisorError::InvalidSpec {
                problem: format!(
                    "engine {engine:?} differs from the pool's {pool_engine:?}; one pool runs one engine"
                ),
            });
        }
        let key = ChipKey::new(tenant.clone(), chip.clone());
        // An existing chip answers before any admission: a repeat never needs a slot.
        if let Some(existing) = self.store().get(&key).await? {
            return same_spec(existing, &spec);
        }
        tenant_isolation::require_active(&*self.inner.effects.directory, tenant).await?;
        self.inner
            .effects
            .quota
            .reserve(tenant, SlotKind::Chip, chip)
            .await?;
        let created = match self
            .store()
            .create(NewChip {
                key: key.clone(),
                spec: spec.clone(),
                chip_slot: true,
            })
            .await
        {
            Ok(created) => created,
            Err(error) => {
                self.release_unrecorded_slot(&key).await;
                return Err(error.into());
            }
        };
        match created {
            CreateOutcome::Created(record) => {
                info!(tenant = %tenant, chip = %chip, "chip created");
                self.publish(ChipChange::of(&record, ChipChangeKind::Created))
                    .await;
                self.inner.wake.notify_one();
                // A tenant nobody here owns yet (its first chip): claim it now rather than at
                // the next claim interval, so the chip's first step is not a claim interval
                // late. Another replica may win the claim; its reconcile then takes the chip.
                if self.inner.owned.guard(tenant).is_none() {
                    self.inner.claim_now.notify_one();
                }
                Ok(record)
            }
            CreateOutcome::Existing(record) => same_spec(record, &spec),
        }
    }

    /// After a failed create: releases the chip slot just reserved, unless a record holds it
    /// (a racing create of the same id won). Best effort; the orphan-reservation task
    /// releases what this misses.
    async fn release_unrecorded_slot(&self, key: &ChipKey) {
        if let Ok(None) = self.store().get(key).await {
            match self
                .inner
                .effects
                .quota
                .release(&key.tenant, SlotKind::Chip, &key.chip)
                .await
            {
                Ok(_) => {
                    debug!(tenant = %key.tenant, chip = %key.chip, "chip slot released after a failed create")
                }
                Err(error) => {
                    warn!(tenant = %key.tenant, chip = %key.chip, %error, "releasing the chip slot of a failed create failed")
                }
            }
        }
    }

    /// One chip.
    ///
    /// # Errors
    /// [`SupervisorError::ChipNotFound`]; store failures.
    pub async fn get_chip(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
    ) -> Result<ChipRecord, SupervisorError> {
        let key = ChipKey::new(tenant.clone(), chip.clone());
        self.store()
            .get(&key)
            .await?
            .ok_or(SupervisorError::ChipNotFound { key })
    }

    /// A page of one tenant's chips, ordered by chip id, after `after`, at most `limit`.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list_chips(
        &self,
        tenant: &TenantId,
        after: Option<&ChipId>,
        limit: u32,
    ) -> Result<Vec<ChipRecord>, SupervisorError> {
        Ok(self.store().list(tenant, after, limit).await?)
    }

    /// Stops a chip's session (its login stays in the volume).
    ///
    /// # Errors
    /// [`SupervisorError::ChipNotFound`], [`SupervisorError::Busy`], store failures.
    pub async fn stop_chip(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
    ) -> Result<ChipRecord, SupervisorError> {
        self.change_desired(tenant, chip, |record, desired| {
            if desired.run == RunState::Running {
                desired.run = RunState::Stopped;
            }
            let _ = record;
        })
        .await
    }

    /// Starts a stopped chip; out of `LoginExpired` or `Parked` it opens a new login window.
    ///
    /// # Errors
    /// As [`stop_chip`](Self::stop_chip).
    pub async fn start_chip(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
    ) -> Result<ChipRecord, SupervisorError> {
        self.change_desired(tenant, chip, |record, desired| {
            if desired.run == RunState::Stopped {
                desired.run = RunState::Running;
            }
            if waits_for_host(&record.observed.phase) {
                desired.request_login();
            }
        })
        .await
    }

    /// Restarts a chip's session; out of `LoginExpired` or `Parked` it opens a new login
    /// window instead.
    ///
    /// # Errors
    /// As [`stop_chip`](Self::stop_chip).
    pub async fn restart_chip(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
    ) -> Result<ChipRecord, SupervisorError> {
        self.change_desired(tenant, chip, |record, desired| {
            if desired.run == RunState::Stopped {
                desired.run = RunState::Running;
            }
            if waits_for_host(&record.observed.phase) {
                desired.request_login();
            } else {
                desired.request_restart();
            }
        })
        .await
    }

    /// Logs a chip out: the next login needs a new QR scan or pairing code.
    ///
    /// # Errors
    /// As [`stop_chip`](Self::stop_chip).
    pub async fn logout_chip(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
    ) -> Result<ChipRecord, SupervisorError> {
        self.change_desired(tenant, chip, |_, desired| desired.request_logout())
            .await
    }

    /// Deletes a chip: its session is logged out and deleted, its proxy lease and quota
    /// slots released, then the record removed (a finalizer; progress arrives as changes,
    /// the last one [`ChipChangeKind::Deleted`]).
    ///
    /// # Errors
    /// As [`stop_chip`](Self::stop_chip).
    pub async fn delete_chip(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
    ) -> Result<ChipRecord, SupervisorError> {
        self.change_desired(tenant, chip, |_, desired| desired.run = RunState::Deleted)
            .await
    }

    /// Compare-and-set of the desired state, then a trigger.
    async fn change_desired(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        change: impl Fn(&ChipRecord, &mut Desired),
    ) -> Result<ChipRecord, SupervisorError> {
        self.refuse_when_stopping()?;
        let key = ChipKey::new(tenant.clone(), chip.clone());
        for _ in 0..DESIRED_WRITE_ATTEMPTS {
            let record = self
                .store()
                .get(&key)
                .await?
                .ok_or_else(|| SupervisorError::ChipNotFound { key: key.clone() })?;
            if record.desired.run == RunState::Deleted {
                // A deleted chip only finishes its finalizers.
                return Ok(record);
            }
            let mut desired = record.desired.clone();
            change(&record, &mut desired);
            if desired == record.desired {
                return Ok(record);
            }
            match self
                .store()
                .update_desired(&key, record.desired_version, desired)
                .await
            {
                Ok(updated) => {
                    self.trigger(&key, Trigger::Api).await;
                    return Ok(updated);
                }
                Err(crate::store::StoreError::VersionConflict { .. }) => continue,
                Err(crate::store::StoreError::NotFound { key }) => {
                    return Err(SupervisorError::ChipNotFound { key });
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(SupervisorError::Busy { key })
    }

    /// Every chip of one tenant, page by page, in id order.
    pub(crate) async fn chips_of(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<ChipRecord>, SupervisorError> {
        const PAGE: u32 = 200;
        let mut all = Vec::new();
        let mut after: Option<ChipId> = None;
        loop {
            let page = self.store().list(tenant, after.as_ref(), PAGE).await?;
            let full = page.len() == PAGE as usize;
            after = page.last().map(|r| r.key.chip.clone());
            all.extend(page);
            if !full {
                return Ok(all);
            }
        }
    }

    /// Queues a chip now and wakes this process's scheduler. A failed enqueue is logged: the
    /// periodic resync queues the chip again.
    pub(crate) async fn trigger(&self, key: &ChipKey, trigger: Trigger) {
        if let Err(error) = self.store().enqueue(key, self.now(), trigger).await {
            warn!(tenant = %key.tenant, chip = %key.chip, %error, "could not queue the chip; the resync will");
        }
        if let Some(dirty) = self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(key)
        {
            *dirty = true;
        }
        self.inner.wake.notify_one();
    }

    /// The QR code of a chip in a QR login window, fetched from WAHA on demand (QR values
    /// are never stored).
    ///
    /// # Errors
    /// [`SupervisorError::NotReady`] outside `AwaitingLogin { Qr }`; WAHA failures.
    pub async fn qr(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
        format: QrFormat,
    ) -> Result<QrCode, SupervisorError> {
        let record = self.get_chip(tenant, chip).await?;
        if !matches!(
            record.observed.phase,
            Phase::AwaitingLogin {
                method: LoginKind::Qr,
                ..
            }
        ) {
            return Err(SupervisorError::NotReady {
                key: record.key.clone(),
                phase: record.observed.phase.name(),
                what: "a QR code",
            });
        }
        let client: Arc<dyn WahaApi> = self.inner.effects.client_for(&record).await.map_err(
            |error| {
                debug!(tenant = %tenant, chip = %chip, %error, "no WAHA client for the QR code");
                SupervisorError::NotReady {
                    key: record.key.clone(),
                    phase: record.observed.phase.name(),
                    what: "a QR code (the container is not reachable)",
                }
            },
        )?;
        let name = record.key.session_name();
        Ok(match format {
            QrFormat::Png => QrCode::Png(client.qr_png(name.as_str()).await?),
            QrFormat::Raw => QrCode::Raw(client.qr_raw(name.as_str()).await?),
        })
    }

    /// The pairing code on offer, if any (expired codes are never returned).
    ///
    /// # Errors
    /// [`SupervisorError::ChipNotFound`]; store failures.
    pub async fn pairing_code(
        &self,
        tenant: &TenantId,
        chip: &ChipId,
    ) -> Result<Option<crate::chip::PairingCodeSecret>, SupervisorError> {
        let record = self.get_chip(tenant, chip).await?;
        let now = self.now();
        Ok(record
            .observed
            .login
            .as_ref()
            .and_then(|offer| offer.live_pairing_code(now))
            .cloned())
    }

    /// The changes of one tenant's chips from now on.
    ///
    /// # Errors
    /// Bus failures.
    pub async fn subscribe(
        &self,
        tenant: &TenantId,
        filter: ChangeFilter,
    ) -> Result<ChangeStream, SupervisorError> {
        Ok(self.inner.bus.subscribe(tenant, filter).await?)
    }

    /// The changes of one tenant's chips numbered after `after` (a client reconnecting
    /// resumes from the last number it saw), then the live ones; what the bus no longer holds
    /// comes as a [`ChangeItem::Gap`](crate::ChangeItem::Gap) first.
    ///
    /// # Errors
    /// Bus failures.
    pub async fn subscribe_from(
        &self,
        tenant: &TenantId,
        filter: ChangeFilter,
        after: u64,
    ) -> Result<ChangeStream, SupervisorError> {
        Ok(self.inner.bus.subscribe_from(tenant, filter, after).await?)
    }

    /// Takes a WAHA webhook event that was already verified (signature, de-duplication) and
    /// routed to `tenant` (from the URL). It classifies the event, appends a signal and queues
    /// the chip; the reconcile reads WAHA (a webhook is a trigger, not the truth). Works on
    /// any replica.
    ///
    /// # Errors
    /// Store failures. An event for a session of another tenant is
    /// [`SupervisorError::InvalidSpec`]-free: it is [`ObserveOutcome::UnknownChip`].
    pub async fn observe(
        &self,
        tenant: &TenantId,
        event: &WebhookEvent,
    ) -> Result<ObserveOutcome, SupervisorError> {
        let Ok(name) = SessionName::parse(&event.session) else {
            return Ok(ObserveOutcome::UnknownChip);
        };
        if name.tenant() != tenant {
            debug!(tenant = %tenant, "event for another tenant's session ignored");
            return Ok(ObserveOutcome::UnknownChip);
        }
        let key = ChipKey::new(tenant.clone(), name.chip().clone());
        let Some(record) = self.store().get(&key).await? else {
            return Ok(ObserveOutcome::UnknownChip);
        };
        let engine = record
            .desired
            .spec
            .engine
            .unwrap_or(self.inner.effects.pool.config().engine);
        let at = self.now();
        let body = classify_event(engine, &event.payload, at);
        let activity = body == crate::signal::SignalBody::Activity;
        let seq = self.store().append_signal(&key, at, body).await?;
        if activity {
            // Messages and acks prove the session lives; the next reconcile folds that in
            // (the silent-death scan reads it). Reconciling on every message would read WAHA
            // and the runtime for each one.
            return Ok(ObserveOutcome::Activity { key, seq });
        }
        self.trigger(&key, Trigger::Signal).await;
        Ok(ObserveOutcome::Recorded { key, seq })
    }

    pub(crate) async fn publish(&self, change: ChipChange) {
        if let Err(error) = self.inner.bus.publish(change).await {
            warn!(%error, "a chip change could not be published; the record holds it");
        }
    }
}

fn same_spec(existing: ChipRecord, spec: &ChipSpec) -> Result<ChipRecord, SupervisorError> {
    if existing.desired.run == RunState::Deleted {
        // Its finalizers run; the id is free once the record is gone.
        return Err(SupervisorError::BeingDeleted {
            key: existing.key.clone(),
        });
    }
    if existing.desired.spec == *spec {
        Ok(existing)
    } else {
        Err(SupervisorError::ChipConflict {
            key: existing.key.clone(),
            existing: Box::new(existing.desired.spec.clone()),
        })
    }
}

/// Whether the chip waits for the host (a start or restart opens a new login window).
fn waits_for_host(phase: &Phase) -> bool {
    phase.waits_for_host()
}

#[async_trait]
impl ChipActivity for Supervisor {
    /// Chips of `tenant` placed in `slot` that hold a running slot or are desired running:
    /// the pool never reaps a container such a chip needs.
    async fn running_chips(
        &self,
        tenant: &TenantId,
        slot: u32,
    ) -> Result<u32, container_pool::Error> {
        let chips =
            self.chips_of(tenant)
                .await
                .map_err(|error| container_pool::Error::Runtime {
                    operation: "count the chips of a slot",
                    message: format!("chip store: {error}"),
                })?;
        let count = chips
            .iter()
            .filter(|r| r.observed.placement == Some(slot))
            .filter(|r| {
                r.observed.running_slot
                    || r.desired.run == RunState::Running && !waits_for_host(&r.observed.phase)
            })
            .count();
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        Ok(count)
    }
}

/// The pool the supervisor's containers come from (for hosts that kept only the supervisor).
impl Supervisor {
    /// The container pool.
    pub fn pool(&self) -> &Arc<TenantPool> {
        &self.inner.effects.pool
    }

    /// The proxy allocator.
    pub fn proxies(&self) -> &Arc<ProxyAllocator> {
        &self.inner.effects.proxies
    }
}
