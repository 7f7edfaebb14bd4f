//! The effects executor (`docs/session-supervisor.md`, 4.4): what a reconcile reads
//! ([`Effects::observe_world`], no mutation) and how one [`Step`] is carried out
//! ([`Effects::execute`]). Decisions live in [`decide`](crate::decide); this file only acts.
//!
//! - **Reads never fail.** A read that fails leaves its part of the [`World`] unread (or
//!   empty), so `decide` re-reads instead of acting on a guess.
//! - **Every mutating effect is fenced.** `guard.check()` runs immediately before each call
//!   that changes something (quota, pool, allocator, pacer, WAHA); WAHA calls also go through
//!   [`FencedWaha`], which checks again. A failed check is [`Reason::StaleOwner`].
//! - **Every effect is idempotent**, so a crash between an effect and the write of its outcome
//!   is safe: `reserve` is idempotent per chip, `ensure_slot` finds the container by its
//!   labels, `allocate` returns the sticky lease, `ensure_session` creates or compares,
//!   `ensure_started` absorbs "already started", stop, delete and release repeat harmlessly.
//!   The exception, `request_pairing_code` (a repeat replaces the code), is sent once per step
//!   and never retried here.
//! - **Secrets stay here.** The container key, the webhook HMAC key and the proxy password are
//!   read when an effect needs them and never logged, nor is the webhook URL (it may carry a
//!   token), a pairing code, a phone number or an account id.
//!
//! The restart budget of a budgeted step is taken by the reconcile loop before it calls
//! [`Effects::execute`]; `RemoveRecord` is carried out by the loop as a store removal.

use std::sync::{Arc, Mutex, PoisonError};

use container_pool::{ContainerInfo, ContainerState, TenantPool, labels};
use fleet_vocab::{Clock, metadata};
use proxy_allocator::{ChipProxyRequest, ProxyAllocator, ProxyError, ProxyLease};
use tenant_isolation::{
    ChipId, HmacKey, QuotaLedger, SendPacer, SlotKind, TenantDirectory, TenantId, TenantSecrets,
};
use tracing::{Instrument, debug, debug_span, info, warn};
use url::Url;
use waha_client::{
    ProxyConfig, SessionConfig, SessionStatus, WahaApi, WahaApiExt, WahaError, WebhookConfig,
};

use crate::chip::{
    ChipKey, ChipRecord, ContainerRef, LoginMethod, PairingCodeSecret, ProxyRef, RunState,
    SessionRef,
};
use crate::clients::{FencedWaha, WahaClients};
use crate::config::SupervisorConfig;
use crate::owner::OwnerGuard;
use crate::policy::{Reason, RestartBudgets};
use crate::reconcile::{
    ContainerSeen, Outcome, ProxyReport, SessionPlan, SessionSeen, Step, StepError, TenantSeen,
    World,
};
use crate::store::{ChipStore, StoreError};

/// How many records one page of the occupancy read lists.
const OCCUPANCY_PAGE: u32 = 500;

/// Everything an effect may touch. Built once by the supervisor's builder.
pub(crate) struct Effects {
    pub(crate) directory: Arc<dyn TenantDirectory>,
    pub(crate) quota: Arc<dyn QuotaLedger>,
    pub(crate) pool: Arc<TenantPool>,
    pub(crate) proxies: Arc<ProxyAllocator>,
    pub(crate) store: Arc<dyn ChipStore>,
    pub(crate) waha: Arc<dyn WahaClients>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) pacer: Option<Arc<dyn SendPacer>>,
    pub(crate) config: SupervisorConfig,
    pub(crate) budgets: Mutex<RestartBudgets>,
}

impl Effects {
    /// Reads the world of one chip; never mutates, never fails (a failed read is `Unread`).
    ///
    /// - `tenant`: the directory's status (`Missing` when the directory does not know it).
    /// - `occupancy`: read only for a running chip that has no slot yet (the one case `decide`
    ///   looks at it): chips per slot among every placed record of the tenant, deleted ones
    ///   included (their session still lives in the slot's volume until its finalizer ran).
    ///   When that read fails, the tenant is reported `Unread`: a placement is set once and
    ///   never moved, so it is never made from a guess.
    /// - `container`: the pool's container of the chip's slot; `Missing` for a chip without a
    ///   slot. A running container without an address yet is `NotRunning` (ensuring it waits
    ///   for the address).
    /// - `lease`: the allocator's lease (`None` also when the read failed: leasing is sticky).
    /// - `session`: read through the running container with the tenant's key; its config is
    ///   compared with [`session_config`](Self::session_config) for the current lease (not
    ///   equivalent when there is no lease or its proxy cannot be built); `me` is read when
    ///   WAHA says `WORKING`.
    /// - `signals` (empty when the read failed: nothing is folded then) and `budget` (a peek;
    ///   the loop takes the token).
    pub(crate) async fn observe_world(&self, record: &ChipRecord) -> World {
        let key = &record.key;
        let now = self.clock.now();
        let engine = record
            .desired
            .spec
            .engine
            .unwrap_or(self.pool.config().engine);
        let mut world = World::new(now, self.pool.placement(), engine);

        let needs_occupancy =
            record.observed.placement.is_none() && record.desired.run == RunState::Running;
        let (tenant, occupancy, container, lease, signals) = tokio::join!(
            self.directory.get(&key.tenant),
            async {
                if needs_occupancy {
                    Some(self.occupancy(&key.tenant).await)
                } else {
                    None
                }
            },
            self.observe_container(record),
            self.proxies.lease(&key.tenant, &key.chip),
            self.store
                .signals_after(key, record.observed.signals_applied),
        );

        let secrets = match tenant {
            Ok(tenant) => {
                world.tenant = tenant.status.into();
                Some(tenant.secrets)
            }
            Err(tenant_isolation::Error::TenantNotFound { .. }) => {
                world.tenant = TenantSeen::Missing;
                None
            }
            Err(error) => {
                debug!(
                    tenant = %key.tenant, chip = %key.chip, kind = error.kind(), %error,
                    "reading the tenant failed; it stays unread"
                );
                None
            }
        };
        match occupancy {
            Some(Ok(occupancy)) => world.occupancy = occupancy,
            Some(Err(error)) => {
                warn!(
                    tenant = %key.tenant, chip = %key.chip, kind = error.kind(), %error,
                    "reading the tenant's chips failed; the chip is not placed on a guess"
                );
                if world.tenant == TenantSeen::Active {
                    world.tenant = TenantSeen::Unread;
                }
            }
            None => {}
        }
        world.container = container;
        world.lease = match lease {
            Ok(lease) => lease,
            Err(error) => {
                debug!(
                    tenant = %key.tenant, chip = %key.chip, kind = error.kind(), %error,
                    "reading the proxy lease failed"
                );
                None
            }
        };
        if let (ContainerSeen::Running { base_url, .. }, Some(secrets)) =
            (&world.container, &secrets)
        {
            world.session = self
                .observe_session(key, base_url, secrets, world.lease.as_ref())
                .await;
        }
        world.signals = match signals {
            Ok(signals) => signals,
            Err(error) => {
                warn!(
                    tenant = %key.tenant, chip = %key.chip, kind = error.kind(), %error,
                    "reading the chip's signals failed; none are folded this time"
                );
                Vec::new()
            }
        };
        world.budget = self
            .budgets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .peek(&key.tenant, now);
        world
    }

    /// Carries out one step under `guard`.
    pub(crate) async fn execute(
        &self,
        record: &ChipRecord,
        world: &World,
        step: &Step,
        guard: &OwnerGuard,
    ) -> Result<Outcome, StepError> {
        let key = &record.key;
        let span = debug_span!(
            "step",
            tenant = %key.tenant,
            chip = %key.chip,
            session = %key.session_name(),
            step = %step.kind()
        );
        async move {
            debug!("step starts");
            let result = self.act(record, world, step, guard).await;
            match &result {
                Ok(_) => debug!("step done"),
                // The detail stays out of the log line (the loop records it in the record).
                Err(error) => debug!(reason = %error.reason, kind = error.kind, "step failed"),
            }
            result
        }
        .instrument(span)
        .await
    }

    /// An unfenced WAHA client for `record`'s recorded container, with the tenant's current
    /// key: for reads (the API's QR reads, probes). Mutating calls go through [`FencedWaha`].
    ///
    /// # Errors
    /// [`Reason::ContainerGone`] when the record names no container; the directory's error;
    /// the client factory's error.
    pub(crate) async fn client_for(
        &self,
        record: &ChipRecord,
    ) -> Result<Arc<dyn WahaApi>, StepError> {
        let container = record
            .observed
            .container
            .as_ref()
            .ok_or_else(no_container)?;
        let secrets = self.tenant_secrets(&record.key.tenant).await?;
        self.client_at(&container.base_url, &secrets)
    }

    /// The session configuration of `key`'s chip (`docs/session-supervisor.md`, 4.3): the
    /// lease's `proxy`; one webhook to the tenant's URL with the configured events and
    /// retries, signed with `hmac_key`; the tenant and chip ids as metadata. `start` is not
    /// part of it (`ensure_session` sends `start: false` on create).
    ///
    /// The one definition: `EnsureSession` sends it, and `observe_world` compares WAHA's stored
    /// config with it (`config_equivalent`).
    pub(crate) fn session_config(
        &self,
        key: &ChipKey,
        proxy: ProxyConfig,
        hmac_key: &HmacKey,
    ) -> SessionConfig {
        let mut webhook = WebhookConfig::new(
            self.config.webhook_url_for(&key.tenant),
            self.config.webhook_events.iter().cloned(),
        )
        .signed_with(hmac_key.clone());
        webhook.retries = Some(self.config.webhook_retries.clone());
        let ids = [
            (metadata::TENANT.to_owned(), key.tenant.as_str().to_owned()),
            (metadata::CHIP.to_owned(), key.chip.as_str().to_owned()),
        ];
        SessionConfig {
            webhooks: vec![webhook],
            metadata: ids.into_iter().collect(),
            proxy: Some(proxy),
            ..SessionConfig::default()
        }
    }

    // --- reads ---------------------------------------------------------------------------

    /// Chips per slot of `tenant`, from every placed record (all pages).
    async fn occupancy(&self, tenant: &TenantId) -> Result<Vec<u32>, StoreError> {
        let mut slots = Vec::new();
        let mut after: Option<ChipId> = None;
        loop {
            let page = self
                .store
                .list(tenant, after.as_ref(), OCCUPANCY_PAGE)
                .await?;
            slots.extend(page.iter().filter_map(|record| record.observed.placement));
            let last = page.last().map(|record| record.key.chip.clone());
            let full = u32::try_from(page.len()).is_ok_and(|len| len >= OCCUPANCY_PAGE);
            match last {
                // A backend that did not move forward would page forever.
                Some(last) if full && after.as_ref().is_none_or(|before| &last > before) => {
                    after = Some(last);
                }
                _ => break,
            }
        }
        Ok(occupancy_of(&slots))
    }

    /// The pool's container of the chip's slot.
    async fn observe_container(&self, record: &ChipRecord) -> ContainerSeen {
        let key = &record.key;
        let Some(slot) = record.observed.placement else {
            // An unplaced chip has no container (and no session in any volume).
            return ContainerSeen::Missing;
        };
        match self.pool.containers(&key.tenant).await {
            Ok(containers) => container_seen(&containers, slot),
            Err(error) => {
                debug!(
                    tenant = %key.tenant, chip = %key.chip, slot, kind = error.kind(), %error,
                    "listing the tenant's containers failed"
                );
                ContainerSeen::Unread
            }
        }
    }

    /// The chip's session as the WAHA at `base_url` reports it.
    async fn observe_session(
        &self,
        key: &ChipKey,
        base_url: &Url,
        secrets: &TenantSecrets,
        lease: Option<&ProxyLease>,
    ) -> SessionSeen {
        let name = key.session_name();
        let client = match self.client_at(base_url, secrets) {
            Ok(client) => client,
            Err(error) => {
                debug!(
                    tenant = %key.tenant, chip = %key.chip, kind = error.kind,
                    "no WAHA client for the chip's container"
                );
                return SessionSeen::Unread;
            }
        };
        let info = match client.get_session(name.as_str()).await {
            Ok(info) => info,
            Err(WahaError::NotFound { .. }) => return SessionSeen::Missing,
            Err(error) => {
                debug!(
                    tenant = %key.tenant, chip = %key.chip, session = %name,
                    kind = error.kind(), %error, "reading the session failed"
                );
                return SessionSeen::Unread;
            }
        };
        let config_equivalent = match (&info.config, lease) {
            (Some(stored), Some(lease)) => match self.proxies.waha_proxy(lease).await {
                Ok(proxy) => stored.is_equivalent_to(&self.session_config(
                    key,
                    proxy,
                    &secrets.webhook_hmac_key,
                )),
                Err(error) => {
                    // `EnsureSession` builds the same proxy and reports why it cannot.
                    debug!(
                        tenant = %key.tenant, chip = %key.chip, kind = error.kind(), %error,
                        "the lease's WAHA proxy cannot be built; the config counts as different"
                    );
                    false
                }
            },
            // No lease: `decide` leases first. No stored config: old Core's `default`.
            _ => false,
        };
        let me = if info.status == SessionStatus::Working {
            match client.me(name.as_str()).await {
                Ok(me) => me,
                Err(error) => {
                    debug!(
                        tenant = %key.tenant, chip = %key.chip, session = %name,
                        kind = error.kind(), "reading `me` failed; using the session's"
                    );
                    info.me.clone()
                }
            }
        } else {
            None
        };
        SessionSeen::Present {
            status: info.status,
            config_equivalent,
            me,
        }
    }

    /// The tenant's secrets, read when an effect needs them (never stored, never logged).
    async fn tenant_secrets(&self, tenant: &TenantId) -> Result<TenantSecrets, StepError> {
        self.directory
            .get(tenant)
            .await
            .map(|tenant| tenant.secrets)
            .map_err(|error| StepError::from_tenant(&error))
    }

    /// A client for the WAHA at `base_url` with the tenant's container key.
    pub(crate) fn client_at(
        &self,
        base_url: &Url,
        secrets: &TenantSecrets,
    ) -> Result<Arc<dyn WahaApi>, StepError> {
        self.waha
            .client(base_url, secrets.container_api_key.clone())
            .map_err(|error| StepError::from_waha(&error))
    }

    /// The client for a step on the chip's session: the container the world saw running
    /// (what `decide` acted on), else the one the record names; with the tenant's secrets.
    /// The chip's client, fenced by `guard`, after checking the guard: for the steps that
    /// mutate the session.
    async fn fenced_client(
        &self,
        record: &ChipRecord,
        world: &World,
        guard: &OwnerGuard,
    ) -> Result<FencedWaha, StepError> {
        let (client, _) = self.session_client(record, world).await?;
        guard.check()?;
        Ok(FencedWaha::new(client, guard.clone()))
    }

    async fn session_client(
        &self,
        record: &ChipRecord,
        world: &World,
    ) -> Result<(Arc<dyn WahaApi>, TenantSecrets), StepError> {
        let base_url = match &world.container {
            ContainerSeen::Running { base_url, .. } => base_url,
            _ => {
                &record
                    .observed
                    .container
                    .as_ref()
                    .ok_or_else(no_container)?
                    .base_url
            }
        };
        let secrets = self.tenant_secrets(&record.key.tenant).await?;
        let client = self.client_at(base_url, &secrets)?;
        Ok((client, secrets))
    }

    // --- steps ---------------------------------------------------------------------------

    async fn act(
        &self,
        record: &ChipRecord,
        world: &World,
        step: &Step,
        guard: &OwnerGuard,
    ) -> Result<Outcome, StepError> {
        match step {
            Step::ReserveChipSlot => self.reserve(&record.key, SlotKind::Chip, guard).await,
            Step::ReserveRunningSlot => {
                self.reserve(&record.key, SlotKind::RunningSession, guard)
                    .await
            }
            Step::ReleaseRunningSlot => {
                self.release_slot(&record.key, SlotKind::RunningSession, guard)
                    .await
            }
            Step::ReleaseChipSlot => self.release_slot(&record.key, SlotKind::Chip, guard).await,
            // Pure: `apply` records the slot `decide` chose.
            Step::PlaceChip { .. } => Ok(Outcome::Done),
            Step::EnsureContainer { slot } => {
                self.ensure_container(&record.key, *slot, guard).await
            }
            Step::LeaseProxy => self.lease_proxy(record, guard).await,
            Step::EnsureSession { plan, .. } => {
                self.ensure_session(record, world, plan, guard).await
            }
            Step::StartSession { .. } => self.start_session(record, world, guard, false).await,
            Step::RestartSession { .. } => self.start_session(record, world, guard, true).await,
            Step::LogoutSession { .. } => self.logout_session(record, world, guard).await,
            Step::StopSession { cause } => {
                debug!(?cause, "stopping the session");
                self.stop_session(record, world, guard).await
            }
            Step::RequestPairingCode => self.request_pairing_code(record, world, guard).await,
            Step::ConfirmWorking => self.confirm_working(record, world, guard).await,
            Step::ReportProxyFailure { generation } => {
                self.report_proxy_failure(record, *generation, guard).await
            }
            Step::Probe => self.probe(record, world).await,
            Step::DeleteSession => self.delete_session(record, world, guard).await,
            Step::ReleaseProxy => self.release_proxy(&record.key, guard).await,
            Step::ForgetPacer => self.forget_pacer(&record.key, guard).await,
            // No effect: a phase to write, nothing to do, or the loop's own store removal.
            Step::Record { .. } | Step::Wait { .. } | Step::RemoveRecord => Ok(Outcome::Done),
        }
    }

    /// `reserve` is idempotent per chip: a slot the chip holds is not taken twice.
    async fn reserve(
        &self,
        key: &ChipKey,
        kind: SlotKind,
        guard: &OwnerGuard,
    ) -> Result<Outcome, StepError> {
        guard.check()?;
        let reservation = self
            .quota
            .reserve(&key.tenant, kind, &key.chip)
            .await
            .map_err(|error| StepError::from_tenant(&error))?;
        debug!(
            slot = %kind,
            newly = reservation.newly_reserved,
            in_use = reservation.in_use,
            max = reservation.max,
            "quota slot held"
        );
        Ok(Outcome::Done)
    }

    /// `release` always works and is idempotent.
    async fn release_slot(
        &self,
        key: &ChipKey,
        kind: SlotKind,
        guard: &OwnerGuard,
    ) -> Result<Outcome, StepError> {
        guard.check()?;
        let freed = self
            .quota
            .release(&key.tenant, kind, &key.chip)
            .await
            .map_err(|error| StepError::from_tenant(&error))?;
        debug!(slot = %kind, freed, "quota slot released");
        Ok(Outcome::Done)
    }

    /// `ensure_slot` finds the container by its labels or creates it (single-flight), and
    /// waits until it is ready.
    async fn ensure_container(
        &self,
        key: &ChipKey,
        slot: u32,
        guard: &OwnerGuard,
    ) -> Result<Outcome, StepError> {
        guard.check()?;
        let endpoint = self
            .pool
            .ensure_slot(&key.tenant, slot)
            .await
            .map_err(|error| StepError::from_pool(&error))?;
        info!(slot, container = %endpoint.container_name, "container ready");
        Ok(Outcome::Container(ContainerRef {
            name: endpoint.container_name,
            id: endpoint.container,
            base_url: endpoint.base_url,
            ready_at: self.clock.now(),
        }))
    }

    /// `allocate` is sticky: the chip's lease comes back unchanged (same generation).
    async fn lease_proxy(
        &self,
        record: &ChipRecord,
        guard: &OwnerGuard,
    ) -> Result<Outcome, StepError> {
        let request = proxy_request(record);
        guard.check()?;
        let lease = self
            .proxies
            .allocate(&request)
            .await
            .map_err(|error| StepError::from_proxy(&error))?;
        info!(endpoint = %lease.endpoint, generation = lease.generation, "proxy leased");
        Ok(Outcome::Lease(ProxyRef::from(&lease)))
    }

    /// Creates the session, or updates it when its stored config differs (a `PUT` restarts a
    /// running session). The config carries the lease `decide` planned with: a lease that
    /// changed since the world was read is a stale view, re-read and planned again.
    async fn ensure_session(
        &self,
        record: &ChipRecord,
        world: &World,
        plan: &SessionPlan,
        guard: &OwnerGuard,
    ) -> Result<Outcome, StepError> {
        let Some(lease) = world.lease.as_ref() else {
            return Err(StepError::new(
                Reason::ProxyLeaseLost,
                "not_leased",
                "the chip holds no proxy lease to configure the session with",
            ));
        };
        if lease.generation != plan.proxy_generation {
            return Err(StepError::new(
                Reason::StaleView,
                "lease_changed",
                format!(
                    "the plan names proxy generation {}, the lease read has {}",
                    plan.proxy_generation, lease.generation
                ),
            ));
        }
        let proxy = self
            .proxies
            .waha_proxy(lease)
            .await
            .map_err(|error| StepError::from_proxy(&error))?;
        let (client, secrets) = self.session_client(record, world).await?;
        let config = self.session_config(&record.key, proxy, &secrets.webhook_hmac_key);
        guard.check()?;
        let waha = FencedWaha::new(client, guard.clone());
        // A session the world read saw (a replica that died between WAHA's answer and its
        // write, a record restored from an older state) is adopted without a second create.
        let info = match world.session {
            SessionSeen::Present { .. } => {
                waha.ensure_existing_session(plan.name.as_str(), &config)
                    .await
            }
            _ => waha.ensure_session(plan.name.as_str(), &config).await,
        }
        .map_err(|error| waha_error(&error))?;
        info!(
            generation = plan.proxy_generation,
            status = %info.status.as_str(),
            "session ensured"
        );
        Ok(Outcome::Session {
            session: SessionRef {
                name: plan.name.clone(),
                proxy_generation: plan.proxy_generation,
                ensured_at: self.clock.now(),
            },
            status: info.status,
        })
    }

    /// Starts the session (`ensure_started` absorbs "already started": it reads the session
    /// instead), or restarts it; the status WAHA answered.
    async fn start_session(
        &self,
        record: &ChipRecord,
        world: &World,
        guard: &OwnerGuard,
        restart: bool,
    ) -> Result<Outcome, StepError> {
        let name = record.key.session_name();
        let client = self.fenced_client(record, world, guard).await?;
        let info = if restart {
            client.restart_session(name.as_str()).await
        } else {
            client.ensure_started(name.as_str()).await
        }
        .map_err(|error| waha_error(&error))?;
        info!(status = %info.status.as_str(), restart, "session started");
        Ok(Outcome::Status(info.status))
    }

    /// Logs the session out, then reads its status (WAHA starts a running session again for
    /// a new login). A failed read after a successful log-out is no failure: `Done`, and the
    /// next reconcile reads the status.
    async fn logout_session(
        &self,
        record: &ChipRecord,
        world: &World,
        guard: &OwnerGuard,
    ) -> Result<Outcome, StepError> {
        let name = record.key.session_name();
        let client = self.fenced_client(record, world, guard).await?;
        client
            .logout_session(name.as_str())
            .await
            .map_err(|error| waha_error(&error))?;
        info!("session logged out");
        match client.get_session(name.as_str()).await {
            Ok(info) => Ok(Outcome::Status(info.status)),
            Err(error) => {
                debug!(
                    kind = error.kind(),
                    "reading the status after the log-out failed"
                );
                Ok(Outcome::Done)
            }
        }
    }

    /// Stopping repeats harmlessly; a session WAHA does not have is stopped.
    async fn stop_session(
        &self,
        record: &ChipRecord,
        world: &World,
        guard: &OwnerGuard,
    ) -> Result<Outcome, StepError> {
        let name = record.key.session_name();
        match self
            .fenced_client(record, world, guard)
            .await?
            .stop_session(name.as_str())
            .await
        {
            Ok(_) => info!("session stopped"),
            Err(WahaError::NotFound { .. }) => debug!("no session to stop"),
            Err(error) => return Err(waha_error(&error)),
        }
        Ok(Outcome::Done)
    }

    /// Sent once: a repeat would replace the code the person may be typing, so this step
    /// never retries it (the client repeats it only when the request never left).
    async fn request_pairing_code(
        &self,
        record: &ChipRecord,
        world: &World,
        guard: &OwnerGuard,
    ) -> Result<Outcome, StepError> {
        let LoginMethod::PairingCode { phone } = &record.desired.spec.login else {
            return Err(StepError::new(
                Reason::StaleView,
                "not_pairing",
                "the chip logs in by QR code: there is no number to request a pairing code for",
            ));
        };
        let name = record.key.session_name();
        let (client, _) = self.session_client(record, world).await?;
        guard.check()?;
        // The code's lifetime runs from before the request: never offered past its expiry.
        let requested_at = self.clock.now();
        let code = FencedWaha::new(client, guard.clone())
            .request_pairing_code(name.as_str(), phone.as_str())
            .await
            .map_err(|error| waha_error(&error))?;
        info!("pairing code issued");
        let ttl = self.config.policy.pairing_code_ttl;
        Ok(Outcome::PairingCode {
            code: PairingCodeSecret::new(code.code),
            expires_at: requested_at.checked_add(ttl).unwrap_or(requested_at),
        })
    }

    /// Reads `me`; tells the allocator the proxy works and the pacer (once) that the number
    /// is paired. WAHA reporting no account yet is a stale view (re-read, not an attempt).
    ///
    /// The allocator and pacer reports are advisory: a failed one is logged and the chip is
    /// still confirmed (a working chip is not backed off for them). A lost success report
    /// leaves the lease's failure count as it was; a lost activation makes the pacer start
    /// the chip's warm-up at its first send, the conservative side.
    async fn confirm_working(
        &self,
        record: &ChipRecord,
        world: &World,
        guard: &OwnerGuard,
    ) -> Result<Outcome, StepError> {
        let key = &record.key;
        let name = key.session_name();
        let (client, _) = self.session_client(record, world).await?;
        let Some(me) = client
            .me(name.as_str())
            .await
            .map_err(|error| StepError::from_waha(&error))?
        else {
            return Err(StepError::new(
                Reason::StaleView,
                "not_logged_in",
                "WAHA reports no account for the session yet",
            ));
        };
        // The generation the session's connection was configured with.
        let generation = record
            .observed
            .session
            .as_ref()
            .map(|session| session.proxy_generation)
            .or_else(|| world.lease.as_ref().map(|lease| lease.generation));
        if let Some(generation) = generation {
            guard.check()?;
            match self
                .proxies
                .report_success(&key.tenant, &key.chip, generation)
                .await
            {
                Ok(update) if update.is_applied() => {
                    debug!(generation, "proxy success reported");
                }
                Ok(update) => debug!(
                    generation,
                    current = update.lease().generation,
                    "proxy success on a superseded lease; nothing changed"
                ),
                Err(error) => warn!(
                    generation, kind = error.kind(), %error,
                    "reporting the proxy's success failed; its failure count stays"
                ),
            }
        }
        if !record.observed.pacer_activated
            && let Some(pacer) = &self.pacer
        {
            guard.check()?;
            if let Err(error) = pacer
                .chip_activated(&key.tenant, &key.chip, self.clock.now())
                .await
            {
                warn!(
                    kind = error.kind(), %error,
                    "telling the pacer the chip is paired failed; its warm-up starts at the first send"
                );
            }
        }
        info!("chip logged in");
        Ok(Outcome::LoggedIn(me))
    }

    /// Reports the failure on the lease generation it happened on; the allocator fences the
    /// report on it (a superseded generation counts nothing).
    async fn report_proxy_failure(
        &self,
        record: &ChipRecord,
        generation: u64,
        guard: &OwnerGuard,
    ) -> Result<Outcome, StepError> {
        let request = proxy_request(record);
        guard.check()?;
        let outcome = self
            .proxies
            .report_failure(&request, generation)
            .await
            .map_err(|error| StepError::from_proxy(&error))?;
        // The report, not the allocator's outcome: that names gateway session ids.
        let report = ProxyReport::from(&outcome);
        info!(generation, ?report, "proxy failure reported");
        Ok(Outcome::ProxyReport(report))
    }

    /// Reads the status and, when `WORKING`, `me` (empty or not running: `None`). Reads only.
    async fn probe(&self, record: &ChipRecord, world: &World) -> Result<Outcome, StepError> {
        let name = record.key.session_name();
        let (client, _) = self.session_client(record, world).await?;
        let info = client
            .get_session(name.as_str())
            .await
            .map_err(|error| StepError::from_waha(&error))?;
        let me = if info.status == SessionStatus::Working {
            match client.me(name.as_str()).await {
                Ok(me) => me,
                Err(WahaError::NotFound { .. }) => None,
                Err(error) => return Err(StepError::from_waha(&error)),
            }
        } else {
            None
        };
        debug!(status = %info.status.as_str(), logged_in = me.is_some(), "session probed");
        Ok(Outcome::Probe {
            status: info.status,
            me,
        })
    }

    /// Logs the session out (so the phone unlinks the device), then deletes it; both repeat
    /// harmlessly. A log-out WAHA refuses (not logged in, not running, no such session) does
    /// not stop the deletion; one that could not reach WAHA, or was refused for the key, fails
    /// the step (the deletion would fail the same way).
    async fn delete_session(
        &self,
        record: &ChipRecord,
        world: &World,
        guard: &OwnerGuard,
    ) -> Result<Outcome, StepError> {
        let name = record.key.session_name();
        let (client, _) = self.session_client(record, world).await?;
        let fenced = FencedWaha::new(client, guard.clone());
        guard.check()?;
        match fenced.logout_session(name.as_str()).await {
            Ok(()) => debug!("session logged out before its deletion"),
            Err(error) if FencedWaha::is_refusal(&error) => return Err(waha_error(&error)),
            Err(error @ (WahaError::Transient { .. } | WahaError::Unauthorized { .. })) => {
                return Err(StepError::from_waha(&error));
            }
            Err(error) => debug!(
                kind = error.kind(),
                "the log-out before the deletion was refused; deleting anyway"
            ),
        }
        guard.check()?;
        match fenced.delete_session(name.as_str()).await {
            Ok(()) => info!("session deleted"),
            Err(WahaError::NotFound { .. }) => debug!("no session to delete"),
            Err(error) => return Err(waha_error(&error)),
        }
        Ok(Outcome::Done)
    }

    /// Releasing is idempotent; a chip without a lease is released.
    async fn release_proxy(&self, key: &ChipKey, guard: &OwnerGuard) -> Result<Outcome, StepError> {
        guard.check()?;
        match self.proxies.release(&key.tenant, &key.chip).await {
            Ok(Some(lease)) => info!(endpoint = %lease.endpoint, "proxy lease released"),
            Ok(None) | Err(ProxyError::NotLeased { .. }) => debug!("no proxy lease to release"),
            Err(error) => return Err(StepError::from_proxy(&error)),
        }
        Ok(Outcome::Done)
    }

    async fn forget_pacer(&self, key: &ChipKey, guard: &OwnerGuard) -> Result<Outcome, StepError> {
        if let Some(pacer) = &self.pacer {
            guard.check()?;
            pacer
                .forget_chip(&key.tenant, &key.chip)
                .await
                .map_err(|error| StepError::from_tenant(&error))?;
            debug!("pacer forgot the chip");
        }
        Ok(Outcome::Done)
    }
}

/// What the allocator needs to know about the chip: its spec's country and labels, and the
/// pairing number (whose calling code gives the country when none is set).
fn proxy_request(record: &ChipRecord) -> ChipProxyRequest {
    let spec = &record.desired.spec;
    let mut request = ChipProxyRequest::new(record.key.tenant.clone(), record.key.chip.clone());
    request.country = spec.proxy.country;
    request.labels = spec.proxy.labels.clone();
    if let LoginMethod::PairingCode { phone } = &spec.login {
        request.phone = Some(phone.as_str().to_owned());
    }
    request
}

/// Chips per slot, from the slot of each placed chip. A slot beyond the number of placed chips
/// cannot come from the placement rule (it fills the lowest slot with room, or opens the next):
/// such a record is left out rather than sizing the vector by a corrupt number.
fn occupancy_of(slots: &[u32]) -> Vec<u32> {
    let bound = slots.len();
    let mut occupancy: Vec<u32> = Vec::new();
    for &slot in slots {
        let Some(index) = usize::try_from(slot).ok().filter(|index| *index <= bound) else {
            warn!(
                slot,
                "a chip is placed beyond any slot the placement rule opens; ignored"
            );
            continue;
        };
        if occupancy.len() <= index {
            occupancy.resize(index + 1, 0);
        }
        occupancy[index] = occupancy[index].saturating_add(1);
    }
    occupancy
}

/// The container of `slot` among the tenant's (by the pool's slot label): a running one with
/// an address wins over a leftover of the same slot.
fn container_seen(containers: &[ContainerInfo], slot: u32) -> ContainerSeen {
    let slot_label = slot.to_string();
    let mut of_slot = containers
        .iter()
        .filter(|info| info.label(labels::SLOT) == Some(slot_label.as_str()));
    let Some(first) = of_slot.next() else {
        return ContainerSeen::Missing;
    };
    let running =
        std::iter::once(first)
            .chain(of_slot)
            .find_map(|info| match (&info.state, &info.url) {
                (ContainerState::Running, Some(url)) => Some((info, url)),
                _ => None,
            });
    match running {
        Some((info, url)) => ContainerSeen::Running {
            id: info.id.clone(),
            base_url: url.clone(),
        },
        // Also a running container without an address yet: ensuring it waits for one.
        None => ContainerSeen::NotRunning {
            state: first.state.clone(),
        },
    }
}

/// The record names no container to reach the session through: ensure it again.
fn no_container() -> StepError {
    StepError::new(
        Reason::ContainerGone,
        "no_container",
        "the chip's container is not known",
    )
}

/// A failed WAHA call through [`FencedWaha`]: its refusal (nothing was sent) is a stale
/// owner, never an invalid request; anything else is classified as WAHA's answer.
fn waha_error(error: &WahaError) -> StepError {
    if FencedWaha::is_refusal(error) {
        return StepError::new(Reason::StaleOwner, "stale_owner", error.to_string());
    }
    StepError::from_waha(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupancy_counts_chips_per_slot_and_ignores_impossible_slots() {
        assert_eq!(occupancy_of(&[]), Vec::<u32>::new());
        assert_eq!(occupancy_of(&[0, 0, 2, 1, 0]), vec![3, 1, 1]);
        // A slot number no placement could have made does not size the vector.
        assert_eq!(occupancy_of(&[0, u32::MAX]), vec![1]);
    }

    fn container(id: &str, slot: &str, state: ContainerState, url: Option<&str>) -> ContainerInfo {
        ContainerInfo {
            id: container_pool::ContainerId::new(id),
            labels: [(labels::SLOT.to_owned(), slot.to_owned())]
                .into_iter()
                .collect(),
            state,
            url: url.map(|url| url.parse().expect("a URL")),
            ..ContainerInfo::default()
        }
    }

    #[test]
    fn the_running_container_of_the_slot_is_seen() {
        let containers = [
            container(
                "a",
                "0",
                ContainerState::Running,
                Some("http://127.0.0.1:3000"),
            ),
            container(
                "b",
                "1",
                ContainerState::Exited { exit_code: Some(1) },
                None,
            ),
            container(
                "c",
                "1",
                ContainerState::Running,
                Some("http://127.0.0.1:3001"),
            ),
            container("d", "2", ContainerState::Running, None),
        ];
        assert!(matches!(
            container_seen(&containers, 1),
            ContainerSeen::Running { id, .. } if id.as_str() == "c"
        ));
        assert_eq!(
            container_seen(&containers, 2),
            ContainerSeen::NotRunning {
                state: ContainerState::Running
            }
        );
        assert_eq!(container_seen(&containers, 3), ContainerSeen::Missing);
    }

    #[test]
    fn waha_validation_errors_keep_their_classification() {
        let invalid = WahaError::Invalid {
            messages: vec!["webhooks.0.url must be a URL".to_owned()],
        };
        assert_eq!(waha_error(&invalid).reason, Reason::InvalidSessionConfig);
        assert!(!FencedWaha::is_refusal(&invalid));
    }
}
