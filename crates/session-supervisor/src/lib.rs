//! The chipfleet controller: takes every chip (one WhatsApp number of one tenant) from
//! "created" to `WORKING` and keeps it there, in kube-runtime's controller model
//! (`docs/session-supervisor.md`).
//!
//! **What is built.** The [`Supervisor`] (assembled by [`Supervisor::builder`] from the tenant
//! directory, quota ledger, container pool, proxy allocator, a [`ChipStore`], a
//! [`WahaClients`] factory and a clock; `run()` starts the ownership loop, the fair scheduler,
//! the reconcile loop and the always-on monitors), and under it:
//! - [`ChipRecord`]: desired state (run, stop, delete; QR or pairing-code login; proxy wish;
//!   engine) and observed state (phase, container, proxy lease generation, session, WAHA's
//!   last status, login on offer, `me`, last error with attempt, next try), each with its own
//!   version for compare-and-set, and a bounded [`StepLog`].
//! - [`Phase`]: pending, provisioning, awaiting login, working, backing off, login expired,
//!   parked, stopped, deleting.
//! - [`policy`]: the one table from a failure [`Reason`] (engine signals per engine, sibling
//!   crates' errors) to an [`Action`]; backoff classes with a deterministic jitter; the restart
//!   budgets that stop storms ([`RestartBudgets`]).
//! - [`decide`](fn@decide) and [`apply`](fn@apply): the next step from the record and what a
//!   reconcile read ([`World`]), and how its outcome changes the record. Both pure.
//! - [`ChipStore`] with [`MemoryChipStore`] and the public [`conformance`] suite; the
//!   [`EventBus`] seam with [`InProcessEventBus`].
//!
//! - [`OwnerGuard`]: one owner per tenant across replicas, with fencing tokens; every mutating
//!   effect checks it ([`FencedWaha`] for WAHA calls), every store write is fenced.
//! - `PgChipStore` (feature `postgres`): tenant rows under row-level security, the work queue
//!   and owner leases in platform tables.
//!
//! - [`Supervisor::upgrade_fleet`]: a new container spec rolled out tenant by tenant, chips
//!   kept logged in through their volumes.
//!
//! - [`Ingest`] (issue 13, first part): one entry point for WAHA's webhooks (size limit, tenant
//!   from the URL, strict session name, HMAC with the tenant's key, metadata check, freshness
//!   window, durable de-duplication through an [`Inbox`], then `observe` and message events,
//!   then the entry's applied mark; a sweep, [`Ingest::spawn_reapply`], applies again what a
//!   crash left unapplied), with an axum router behind feature `axum`; `PgInbox` (feature
//!   `postgres`) keeps the inbox in PostgreSQL; event subscriptions resume after a sequence
//!   number, and `PgEventBus` (feature `postgres`) shares events between replicas.
//! - [`InboundBuffer`]: a conversation's inbound messages collected for a quiet time, then
//!   handed to the host's [`InboundHandler`] as one batch, fair between tenants.
//! - [`Supervisor::send_text`] ([`send`]): paced sending: the tenant active, the pacer first,
//!   then the daily quota, an [`Outbox`] record before any WAHA call (one idempotency key
//!   never sends twice), the anti-ban [`Choreography`] (seen, typing, send); acks move the
//!   record forward only ([`Ingest`] advances it). [`MemoryOutbox`] is the in-process outbox,
//!   `PgOutbox` (feature `postgres`) keeps it in PostgreSQL (one key never sends twice, also
//!   across a crash), and both pass one [`outbox_conformance`](mod@outbox_conformance) suite.
//!   Warm-up and daily counts survive restarts with `tenant_isolation::pg::PgSendPacer`.
//! - Secret rotation: [`Supervisor::rotate_webhook_key`] moves every session to a new webhook
//!   key within the restart budgets while the previous key stays accepted, and
//!   [`Supervisor::rotate_api_key`] rolls a new container API key out on the tenant's owner.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use session_supervisor::{
//!     ChipKey, ChipSpec, ChipStore, ContainerSeen, MemoryChipStore, NewChip, Policy, Step,
//!     TenantSeen, World, decide,
//! };
//! use container_pool::{Engine, Placement};
//! use tenant_isolation::{ChipId, TenantId};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryChipStore::new();
//! let key = ChipKey::new(TenantId::new("acme")?, ChipId::new("sales-1")?);
//! // The API reserved the chip's quota slot, then recorded the chip.
//! let new = NewChip { key: key.clone(), spec: ChipSpec::qr(), chip_slot: true };
//! let record = store.create(new).await?.record().clone();
//!
//! // What a reconcile read: the tenant is active, no container runs yet.
//! let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let mut world = World::new(now, Placement::new(4)?, Engine::Noweb);
//! world.tenant = TenantSeen::Active;
//! world.container = ContainerSeen::Missing;
//!
//! let policy = Policy::default();
//! assert_eq!(decide(&record, &world, &policy).step, Step::ReserveRunningSlot);
//! # Ok(()) }
//! ```

#[cfg(feature = "postgres")]
mod bus_pg;
pub mod chip;
mod clients;
pub mod config;
pub mod conformance;
mod error;
pub mod events;
mod execute;
mod inbound;
mod inbox;
pub mod inbox_conformance;
#[cfg(feature = "postgres")]
mod inbox_pg;
mod ingest;
mod monitor;
mod offboard;
mod outbox;
pub mod outbox_conformance;
#[cfg(feature = "postgres")]
mod outbox_pg;
mod owner;
#[cfg(feature = "postgres")]
mod pg_common;
pub mod phase;
pub mod policy;
pub mod reconcile;
mod rotation;
mod runtime;
pub mod send;
pub mod signal;
pub mod store;
mod supervisor;
mod upgrade;

#[cfg(feature = "postgres")]
pub use bus_pg::PgEventBus;
pub use chip::{
    ChipKey, ChipRecord, ChipSpec, ContainerRef, Desired, FailureWindow, InvalidPhoneNumber,
    LastError, LoginMethod, LoginOffer, Nonces, Observed, ObservedPatch, PairingCodeSecret,
    PhoneNumber, ProxyRef, ProxyWish, RunState, SessionRef, StepEntry, StepLog, StepOutcome,
    WahaSeen,
};
#[cfg(feature = "mock")]
pub use clients::MockWahaClients;
pub use clients::{FencedWaha, HttpWahaClients, WahaClients};
pub use config::{
    ConfigError, ForeignSessionPolicy, MonitorIntervals, Monitors, SupervisorConfig, Toggle,
};
pub use error::{ShutdownReport, SupervisorError};
#[cfg(feature = "mock")]
pub use events::MockEventBus;
pub use events::{
    Alert, BusError, ChangeFilter, ChangeItem, ChangeStream, ChipChange, ChipChangeKind, EventBus,
    InProcessEventBus, UpgradeStage,
};
pub use fleet_vocab::{Clock, ManualClock, SystemClock};
#[cfg(feature = "mock")]
pub use inbound::MockInboundHandler;
pub use inbound::{
    HandlerError, InboundBatch, InboundBuffer, InboundConfig, InboundConfigError, InboundHandle,
    InboundHandler, InboundMessage, InboundRetry,
};
#[cfg(feature = "mock")]
pub use inbox::MockInbox;
pub use inbox::{Admission, EntryId, Inbox, InboxEntry, InboxError, MemoryInbox};
#[cfg(feature = "postgres")]
pub use inbox_pg::PgInbox;
#[cfg(feature = "axum")]
pub use ingest::axum::{ROUTE as INGEST_ROUTE, router as ingest_router};
pub use ingest::{
    DropReason, Ingest, IngestConfig, IngestConfigError, IngestOutcome, IngestRefusal,
    ReapplyHandle, ReapplyReport,
};
pub use monitor::SessionSweep;
pub use offboard::OffboardReport;
#[cfg(feature = "mock")]
pub use outbox::MockOutbox;
pub use outbox::{
    Begin, MemoryOutbox, Outbox, OutboxError, OutboxRecord, OutboxStatus, text_fingerprint,
};
#[cfg(feature = "postgres")]
pub use outbox_pg::PgOutbox;
pub use owner::{NotOwner, OwnerGuard};
pub use phase::{Finalizers, LoginKind, Phase, PhaseName, StopCause};
pub use policy::{
    Action, Backoff, BackoffClass, BackoffClasses, ParkReason, Policy, PolicyError, Reason,
    RestartBudgets,
};
pub use reconcile::{
    BudgetSeen, ContainerSeen, Decision, Failure, Outcome, ProxyReport, SessionPlan, SessionSeen,
    Step, StepError, StepKind, TenantSeen, World, apply, decide,
};
pub use rotation::{RotationOptions, WebhookKeyRotation};
pub use runtime::SupervisorHandle;
pub use send::{Choreography, SendError, SendReceipt, SendRequest};
pub use signal::{Signal, SignalBody};
#[cfg(feature = "mock")]
pub use store::MockChipStore;
#[cfg(feature = "postgres")]
pub use store::PgChipStore;
pub use store::{
    ChipStore, CreateOutcome, Fence, MemoryChipStore, NewChip, OwnerId, StoreError, Trigger,
    VersionKind,
};
pub use supervisor::{
    ObserveOutcome, QrCode, QrFormat, Supervisor, SupervisorBuilder, SupervisorParts,
};
pub use upgrade::{TenantUpgrade, UpgradeOptions, UpgradeReport};
