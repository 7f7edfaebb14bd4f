//! Failures: reason, signal, policy (`docs/session-supervisor.md`, section 5).
//!
//! - [`Reason`]: every failure the supervisor tells apart, whether an engine reported it
//!   ([`classify_engine_event`], [`classify_state_change`], [`classify_event`]) or a sibling
//!   crate's call failed ([`classify_tenant_error`], [`classify_pool_error`],
//!   [`classify_proxy_error`], [`classify_waha_error`], [`classify_store_error`]).
//! - [`Policy::action`]: the one table from a reason to an [`Action`].
//! - [`BackoffClass`] and [`Backoff`]: delays that grow and cap, with a deterministic jitter
//!   ([`jitter_draw`]), and a retry budget per class.
//! - [`RestartBudgets`]: the storm guard, token buckets per tenant and per process on the
//!   caller's clock.

mod backoff;
mod budget;
mod classify;
mod reason;
mod table;

pub use backoff::{Backoff, BackoffClass, BackoffClasses, Jitter, RetryBudget, jitter_draw};
pub use budget::{Rate, RestartBudgets, TokenBucket};
pub use classify::{
    Disconnect, classify_engine_event, classify_event, classify_pool_error, classify_proxy_error,
    classify_state_change, classify_store_error, classify_tenant_error, classify_waha_error,
};
pub use reason::{ParkReason, Reason};
pub use table::{Action, Policy, PolicyError};
