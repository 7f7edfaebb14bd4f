//! A tenant: incarnation, status, plan limits and secrets.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::{ApiKey, HmacKey, Incarnation, QuotaLimit, TenantId};

/// Whether a tenant may operate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// Operations are allowed.
    Active,
    /// Operations are refused with [`Error::TenantSuspended`] (for example, a lapsed
    /// subscription); an administrator can reactivate it. Releasing quota slots still works.
    Suspended,
    /// Operations are refused for good with [`Error::TenantDeleted`]; the id is never reused.
    Deleted,
}

impl TenantStatus {
    /// The stored spelling: `active`, `suspended`, `deleted`.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
            TenantStatus::Deleted => "deleted",
        }
    }

    /// Whether a tenant in this status may move to `to`. Staying put is always allowed;
    /// nothing leaves `Deleted`.
    pub fn can_become(self, to: TenantStatus) -> bool {
        self == to || self != TenantStatus::Deleted
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TenantStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "active" => Ok(TenantStatus::Active),
            "suspended" => Ok(TenantStatus::Suspended),
            "deleted" => Ok(TenantStatus::Deleted),
            other => Err(Error::CorruptData {
                detail: format!("unknown tenant status {:?}", crate::error::clip(other)),
            }),
        }
    }
}

/// A tenant's plan limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PlanLimits {
    /// How many chips the tenant may have.
    pub max_chips: u32,
    /// How many sessions may run at the same time.
    pub max_running_sessions: u32,
    /// How many messages the tenant may send per UTC day, over all its chips.
    pub max_sends_per_day: u32,
}

impl PlanLimits {
    /// Largest value a limit may have (it is stored as a PostgreSQL `integer`).
    pub const MAX_VALUE: u32 = i32::MAX as u32;

    /// Plan limits from their three values.
    pub fn new(max_chips: u32, max_running_sessions: u32, max_sends_per_day: u32) -> Self {
        PlanLimits {
            max_chips,
            max_running_sessions,
            max_sends_per_day,
        }
    }

    /// The value of one limit.
    pub fn get(&self, limit: QuotaLimit) -> u32 {
        match limit {
            QuotaLimit::MaxChips => self.max_chips,
            QuotaLimit::MaxRunningSessions => self.max_running_sessions,
            QuotaLimit::MaxSendsPerDay => self.max_sends_per_day,
        }
    }

    /// Checks every value is at most [`PlanLimits::MAX_VALUE`].
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the limit.
    pub fn validate(&self) -> Result<(), Error> {
        for limit in [
            QuotaLimit::MaxChips,
            QuotaLimit::MaxRunningSessions,
            QuotaLimit::MaxSendsPerDay,
        ] {
            if self.get(limit) > Self::MAX_VALUE {
                return Err(Error::InvalidConfig {
                    reason: format!("{limit} must be at most {}", Self::MAX_VALUE),
                });
            }
        }
        Ok(())
    }
}

/// A tenant's secrets. `Debug` redacts all of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantSecrets {
    /// The API key of the tenant's WAHA container.
    pub container_api_key: ApiKey,
    /// The key WAHA signs the tenant's webhooks with.
    pub webhook_hmac_key: HmacKey,
    /// While a rotation of the webhook key is in progress, the key it replaces: sessions not
    /// yet moved to the new key still sign with it, so webhooks verified by it are accepted.
    /// `None` when no rotation is in progress.
    pub previous_webhook_hmac_key: Option<HmacKey>,
}

impl TenantSecrets {
    /// Both secrets freshly generated from the OS CSPRNG; no rotation in progress.
    ///
    /// # Errors
    /// [`Error::Secret`] when the OS random source fails.
    pub fn generate() -> Result<Self, Error> {
        Ok(TenantSecrets {
            container_api_key: ApiKey::generate()?,
            webhook_hmac_key: HmacKey::generate()?,
            previous_webhook_hmac_key: None,
        })
    }

    /// Whether a rotation of the webhook key is in progress (a previous key is kept).
    pub fn webhook_key_rotating(&self) -> bool {
        self.previous_webhook_hmac_key.is_some()
    }

    /// The keys a webhook of this tenant may be signed with: the current one, then the
    /// previous one while a rotation is in progress.
    pub fn webhook_keys(&self) -> impl Iterator<Item = &HmacKey> {
        std::iter::once(&self.webhook_hmac_key).chain(self.previous_webhook_hmac_key.as_ref())
    }

    /// These secrets with the webhook key rotated to `next`: the current key becomes the
    /// previous one, accepted until [`finish_webhook_rotation`](Self::finish_webhook_rotation).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when a rotation is already in progress (finish it first: the
    /// key before the previous one may still be on a session), or when `next` is the current
    /// key.
    pub fn begin_webhook_rotation(&self, next: HmacKey) -> Result<Self, Error> {
        if self.webhook_key_rotating() {
            return Err(Error::InvalidConfig {
                reason: "a webhook key rotation is already in progress; finish it first".into(),
            });
        }
        if next == self.webhook_hmac_key {
            return Err(Error::InvalidConfig {
                reason: "the new webhook key is the current one".into(),
            });
        }
        Ok(TenantSecrets {
            container_api_key: self.container_api_key.clone(),
            previous_webhook_hmac_key: Some(self.webhook_hmac_key.clone()),
            webhook_hmac_key: next,
        })
    }

    /// These secrets with the rotation finished: the previous webhook key is forgotten.
    pub fn finish_webhook_rotation(&self) -> Self {
        TenantSecrets {
            previous_webhook_hmac_key: None,
            ..self.clone()
        }
    }
}

/// Everything needed to create a tenant; it starts [`TenantStatus::Active`].
#[derive(Clone, Debug)]
pub struct NewTenant {
    /// The new tenant's id.
    pub id: TenantId,
    /// Its incarnation: freshly minted by [`NewTenant::new`]; set by
    /// [`NewTenant::with_incarnation`] only to restore a tenant from a backup.
    pub incarnation: Incarnation,
    /// Its plan limits.
    pub limits: PlanLimits,
    /// Its secrets.
    pub secrets: TenantSecrets,
}

impl NewTenant {
    /// A new tenant from its parts, with a freshly minted [`Incarnation`]: a tenant created
    /// again under the id of a purged one is a new incarnation, and nothing labelled with the
    /// old one is its.
    pub fn new(id: TenantId, limits: PlanLimits, secrets: TenantSecrets) -> Self {
        NewTenant {
            id,
            incarnation: Incarnation::generate(),
            limits,
            secrets,
        }
    }

    /// The same, with the given incarnation instead of a fresh one: for a host restoring a
    /// tenant (and its volumes) from a backup, which is the same life of the tenant. Never use
    /// it to give a new customer an earlier tenant's incarnation.
    pub fn with_incarnation(self, incarnation: Incarnation) -> Self {
        NewTenant {
            incarnation,
            ..self
        }
    }
}

/// A tenant as the directory knows it. `Debug` redacts its secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tenant {
    /// Its id.
    pub id: TenantId,
    /// Which life of `id` this is: minted when the tenant was created and never changed while
    /// it exists. Label what belongs to this tenant outside the directory (container volumes)
    /// with [`Incarnation::as_str`], and refuse what carries another one.
    pub incarnation: Incarnation,
    /// Whether it may operate.
    pub status: TenantStatus,
    /// Its plan limits.
    pub limits: PlanLimits,
    /// Its secrets.
    pub secrets: TenantSecrets,
}

impl Tenant {
    /// A tenant with the given incarnation and status (for backends and test doubles).
    pub fn new(
        id: TenantId,
        incarnation: Incarnation,
        status: TenantStatus,
        limits: PlanLimits,
        secrets: TenantSecrets,
    ) -> Self {
        Tenant {
            id,
            incarnation,
            status,
            limits,
            secrets,
        }
    }

    /// Succeeds only for an active tenant.
    ///
    /// # Errors
    /// [`Error::TenantSuspended`] or [`Error::TenantDeleted`].
    pub fn ensure_active(&self) -> Result<(), Error> {
        status_gate(&self.id, self.status)
    }
}

/// The one place that turns a status into "may operate or not".
pub(crate) fn status_gate(tenant: &TenantId, status: TenantStatus) -> Result<(), Error> {
    match status {
        TenantStatus::Active => Ok(()),
        TenantStatus::Suspended => Err(Error::TenantSuspended {
            tenant: tenant.clone(),
        }),
        TenantStatus::Deleted => Err(Error::TenantDeleted {
            tenant: tenant.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        use TenantStatus::*;
        assert!(Active.can_become(Suspended));
        assert!(Suspended.can_become(Active));
        assert!(Suspended.can_become(Deleted));
        assert!(Deleted.can_become(Deleted));
        assert!(!Deleted.can_become(Active));
        assert!(!Deleted.can_become(Suspended));
        for s in [Active, Suspended, Deleted] {
            assert_eq!(s.as_str().parse::<TenantStatus>().unwrap(), s);
        }
    }

    #[test]
    fn tenant_debug_redacts_secrets() {
        let secrets = TenantSecrets::generate().unwrap();
        let raw = secrets.container_api_key.expose_secret().to_owned();
        let hmac = secrets.webhook_hmac_key.expose_secret().to_owned();
        let tenant = Tenant::new(
            TenantId::new("acme").unwrap(),
            Incarnation::generate(),
            TenantStatus::Active,
            PlanLimits::new(1, 1, 1),
            secrets,
        );
        let text = format!("{tenant:?} {tenant:#?}");
        assert!(!text.contains(&raw) && !text.contains(&hmac), "{text}");
    }

    #[test]
    fn webhook_rotation_keeps_the_previous_key_until_finished() {
        let secrets = TenantSecrets::generate().unwrap();
        assert!(!secrets.webhook_key_rotating());
        assert_eq!(secrets.webhook_keys().count(), 1);
        let next = HmacKey::generate().unwrap();
        let rotating = secrets.begin_webhook_rotation(next.clone()).unwrap();
        assert_eq!(rotating.webhook_hmac_key, next);
        assert_eq!(
            rotating.previous_webhook_hmac_key.as_ref(),
            Some(&secrets.webhook_hmac_key)
        );
        assert_eq!(
            rotating.webhook_keys().cloned().collect::<Vec<_>>(),
            vec![next.clone(), secrets.webhook_hmac_key.clone()]
        );
        assert_eq!(rotating.container_api_key, secrets.container_api_key);
        let previous = rotating
            .previous_webhook_hmac_key
            .as_ref()
            .unwrap()
            .expose_secret()
            .to_owned();
        assert!(!format!("{rotating:?}").contains(&previous));
        // One rotation at a time, and never to the same key.
        assert!(matches!(
            rotating.begin_webhook_rotation(HmacKey::generate().unwrap()),
            Err(Error::InvalidConfig { .. })
        ));
        assert!(matches!(
            secrets.begin_webhook_rotation(secrets.webhook_hmac_key.clone()),
            Err(Error::InvalidConfig { .. })
        ));
        let done = rotating.finish_webhook_rotation();
        assert_eq!(done.webhook_hmac_key, next);
        assert!(!done.webhook_key_rotating());
    }

    #[test]
    fn new_tenants_get_fresh_incarnations_unless_restored() {
        let id = TenantId::new("acme").unwrap();
        let limits = PlanLimits::new(1, 1, 1);
        let first = NewTenant::new(id.clone(), limits, TenantSecrets::generate().unwrap());
        let again = NewTenant::new(id, limits, TenantSecrets::generate().unwrap());
        assert_ne!(first.incarnation, again.incarnation);
        let restored = again.with_incarnation(first.incarnation.clone());
        assert_eq!(restored.incarnation, first.incarnation);
    }

    #[test]
    fn limits_fit_postgres_integers() {
        assert!(PlanLimits::new(u32::MAX, 1, 1).validate().is_err());
        assert!(
            PlanLimits::new(PlanLimits::MAX_VALUE, 0, 0)
                .validate()
                .is_ok()
        );
    }
}
