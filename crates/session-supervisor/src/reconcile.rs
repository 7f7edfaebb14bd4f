//! Reconcile, the pure part: [`decide`](fn@decide) picks one next step from the record and
//! what a reconcile read ([`World`]); [`apply`](fn@apply) folds the step's outcome into the
//! next observed state (`docs/session-supervisor.md`, 4.1 to 4.3).
//!
//! The executor (next) runs the loop: read the record, observe the world (reads only),
//! `decide`, execute the step as an effect under its deadline, `apply`, write the patch with
//! the owner's fence, publish the changes; so every step's outcome is in the store before the
//! next step is decided.

mod apply;
mod decide;
mod step;
mod world;

#[cfg(test)]
mod tests;

pub use apply::apply;
pub use decide::decide;
pub use step::{Decision, Failure, Outcome, ProxyReport, SessionPlan, Step, StepError, StepKind};
pub use world::{BudgetSeen, ContainerSeen, SessionSeen, TenantSeen, World};
