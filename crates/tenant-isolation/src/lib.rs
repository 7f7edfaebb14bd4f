//! Tenant identity, quotas, rate limits and PostgreSQL row-level security for chipfleet.
//!
//! This crate makes "which tenant" impossible to forget:
//!
//! - **Identity.** [`TenantId`], [`ChipId`] and [`SessionName`] (`cf_<tenant>_<chip>`, at most
//!   54 characters, parseable back for webhook routing; foreign names such as `default` or
//!   `test_1` are refused with a typed error).
//! - **Tenant directory.** [`TenantDirectory`]: status (active, suspended, deleted), plan
//!   limits, secrets as redacting types ([`ApiKey`], [`HmacKey`]), and an [`Incarnation`]
//!   minted at creation that tells a re-created tenant from an earlier one with the same id.
//! - **Quotas and admission.** [`QuotaLedger`]: atomic check-and-reserve; racing callers never
//!   push a tenant past a limit, and the loser gets [`Error::QuotaExceeded`] naming it.
//! - **Pacing.** [`SendPacer`]: token buckets per tenant and per chip, a warm-up curve for new
//!   numbers, jitter, and a [`Pace::RetryAfter`] answer, on an injectable [`Clock`].
//! - **Namespaces.** [`TenantNamespace`]: per-tenant names for vector collections, cache keys
//!   and queues that cannot collide across tenants.
//! - **PostgreSQL** (feature `postgres`): embedded migrations under an advisory lock, a
//!   tenant-scoped handle (`pg::TenantDb::scoped`) enforced by row-level security, and a
//!   separate, explicitly named `pg::AdminDb`.
//!
//! In-memory backends are always compiled; `mock` adds mockall mocks of the traits.
//!
//! ```
//! use std::sync::Arc;
//! use tenant_isolation::{
//!     ChipId, Error, MemoryQuotaLedger, MemoryTenantDirectory, NewTenant, PlanLimits, QuotaLedger,
//!     QuotaLimit, SessionName, SlotKind, SystemClock, TenantDirectory, TenantId, TenantSecrets,
//!     TenantStatus,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Error> {
//! let directory = Arc::new(MemoryTenantDirectory::new());
//! let acme = TenantId::new("acme")?;
//! let limits = PlanLimits::new(1, 1, 500);
//! directory.create(NewTenant::new(acme.clone(), limits, TenantSecrets::generate()?)).await?;
//!
//! // Admission: one chip slot, atomically reserved.
//! let ledger = MemoryQuotaLedger::new(directory.clone(), Arc::new(SystemClock));
//! let sales = ChipId::new("sales-1")?;
//! ledger.reserve(&acme, SlotKind::Chip, &sales).await?;
//! let second = ledger.reserve(&acme, SlotKind::Chip, &ChipId::new("sales-2")?).await;
//! assert!(matches!(second, Err(Error::QuotaExceeded { limit: QuotaLimit::MaxChips, max: 1, .. })));
//!
//! // Session names round-trip; foreign ones are refused.
//! let session = SessionName::new(&acme, &sales);
//! assert_eq!(session.as_str(), "cf_acme_sales-1");
//! assert_eq!(SessionName::parse("cf_acme_sales-1")?.chip(), &sales);
//! assert!(matches!(SessionName::parse("test_1"), Err(Error::InvalidSessionName { .. })));
//!
//! // A suspended tenant's operations fail with a typed error.
//! directory.set_status(&acme, TenantStatus::Suspended).await?;
//! let refused = ledger.admit_send(&acme).await;
//! assert!(matches!(refused, Err(Error::TenantSuspended { .. })));
//! # Ok(())
//! # }
//! ```

mod clock;
pub mod conformance;
mod directory;
mod error;
mod id;
mod namespace;
mod pacing;
#[cfg(feature = "postgres")]
pub mod pg;
mod quota;
mod secret;
mod session_name;
mod tenant;

#[cfg(feature = "mock")]
pub use clock::MockClock;
pub use clock::{Clock, ManualClock, SystemClock, UtcDay};
#[cfg(feature = "mock")]
pub use directory::MockTenantDirectory;
pub use directory::memory::MemoryTenantDirectory;
pub use directory::{TenantDirectory, require_active};
#[cfg(feature = "postgres")]
pub use error::DatabaseError;
pub use error::{
    Error, IdKind, IdRejection, MigrationProblem, RowSecurityProblem, SessionNameRejection,
};
pub use fleet_vocab::metadata;
pub use id::{ChipId, Incarnation, TenantId};
pub use namespace::{MAX_CACHE_KEY, MAX_STORE_NAME, ScopedName, StoreKind, TenantNamespace};
#[cfg(feature = "mock")]
pub use pacing::MockSendPacer;
pub use pacing::memory::{MemorySendPacer, PacerConfig};
pub use pacing::{Pace, PaceLimit, SendPacer, WarmupCurve};
#[cfg(feature = "mock")]
pub use quota::MockQuotaLedger;
pub use quota::memory::MemoryQuotaLedger;
pub use quota::{QuotaLedger, QuotaLimit, QuotaUsage, Reservation, SendAdmission, SlotKind};
pub use secret::{ApiKey, HmacKey, SecretError};
pub use session_name::SessionName;
pub use tenant::{NewTenant, PlanLimits, Tenant, TenantSecrets, TenantStatus};
