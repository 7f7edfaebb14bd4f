//! Per-tenant names for external stores: vector collections, cache keys, queue names.

use std::fmt;

use crate::TenantId;
use crate::error::{Error, IdKind, IdRejection};
use crate::id::validate_id;

/// The kind of external store a [`ScopedName`] is for. Each kind has its own prefix, so a
/// name made for one kind is never a valid name of another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreKind {
    /// A vector-store collection: `cfv_<tenant>_<name>`.
    VectorCollection,
    /// A queue or topic: `cfq_<tenant>_<name>`.
    Queue,
    /// A cache key: `cf:<tenant>:<key>`.
    CacheKey,
}

impl StoreKind {
    fn prefix(self) -> &'static str {
        match self {
            StoreKind::VectorCollection => "cfv_",
            StoreKind::Queue => "cfq_",
            StoreKind::CacheKey => "cf:",
        }
    }

    fn separator(self) -> char {
        match self {
            StoreKind::CacheKey => ':',
            StoreKind::VectorCollection | StoreKind::Queue => '_',
        }
    }
}

/// Longest store name for collections and queues: the whole name stays within 63 characters
/// (the tightest common limit, PostgreSQL identifiers).
pub const MAX_STORE_NAME: usize = 34;
/// Longest cache key suffix, in bytes.
pub const MAX_CACHE_KEY: usize = 200;

const STORE_ALPHABET: &str = "a-z, 0-9, '-' and '_' (starting and ending with a letter or digit)";

fn validate_store_name(name: &str) -> Result<(), IdRejection> {
    // The same rules as ids, plus '_' inside (it cannot be confused with the separator, which
    // is fixed right after the tenant id, and tenant ids never contain '_').
    let without_underscores = name.replace('_', "-");
    validate_id(&without_underscores, MAX_STORE_NAME).map_err(|r| match r {
        IdRejection::InvalidChar { ch, at, .. } => IdRejection::InvalidChar {
            ch,
            at,
            allowed: STORE_ALPHABET,
        },
        other => other,
    })
}

fn validate_cache_key(key: &str) -> Result<(), IdRejection> {
    if key.is_empty() {
        return Err(IdRejection::Empty);
    }
    if key.len() > MAX_CACHE_KEY {
        return Err(IdRejection::TooManyBytes {
            len: key.len(),
            max: MAX_CACHE_KEY,
        });
    }
    if let Some((at, ch)) = key
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_control() || c.is_whitespace())
    {
        return Err(IdRejection::InvalidChar {
            ch,
            at,
            allowed: "any character except whitespace and control characters",
        });
    }
    Ok(())
}

/// A name in an external store, owned by one tenant.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopedName {
    full: String,
    tenant: TenantId,
    name_start: usize,
}

impl ScopedName {
    /// The full name to use in the store.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The tenant that owns it.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The tenant-local part (what was passed to [`TenantNamespace`]).
    pub fn local_name(&self) -> &str {
        &self.full[self.name_start..]
    }

    /// Attributes a name found in a store (for example while sweeping collections) to its
    /// tenant.
    ///
    /// # Errors
    /// [`Error::InvalidId`] with [`IdKind::ScopedName`] if `kind`'s rules cannot produce it.
    pub fn parse(kind: StoreKind, full: &str) -> Result<Self, Error> {
        let fail = |reason| Error::invalid_id(IdKind::ScopedName, full, reason);
        let rest = full.strip_prefix(kind.prefix()).ok_or_else(|| {
            fail(IdRejection::MissingPrefix {
                expected: kind.prefix(),
            })
        })?;
        let (tenant, name) = rest.split_once(kind.separator()).ok_or_else(|| {
            fail(IdRejection::MissingPrefix {
                expected: "<tenant><separator>",
            })
        })?;
        let tenant = TenantId::new(tenant).map_err(|e| match e {
            Error::InvalidId { reason, .. } => fail(reason),
            other => other,
        })?;
        let namespace = TenantNamespace::new(tenant);
        match kind {
            StoreKind::CacheKey => namespace.cache_key(name),
            StoreKind::VectorCollection => namespace.vector_collection(name),
            StoreKind::Queue => namespace.queue(name),
        }
        .map_err(|e| match e {
            Error::InvalidId { reason, .. } => fail(reason),
            other => other,
        })
    }
}

impl fmt::Display for ScopedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl AsRef<str> for ScopedName {
    fn as_ref(&self) -> &str {
        &self.full
    }
}

/// Names in external stores for one tenant.
///
/// Every name is `<kind prefix><tenant><separator><local name>`. Tenant ids cannot contain
/// either separator (`_`, `:`), so a name splits back into exactly one tenant: two tenants can
/// never be handed the same name, whatever local names they ask for.
///
/// ```
/// use tenant_isolation::{StoreKind, ScopedName, TenantId, TenantNamespace};
/// let ns = TenantNamespace::new(TenantId::new("acme")?);
/// assert_eq!(ns.vector_collection("memories")?.as_str(), "cfv_acme_memories");
/// assert_eq!(ns.queue("outbox")?.as_str(), "cfq_acme_outbox");
/// assert_eq!(ns.cache_key("chat:5511999@c.us")?.as_str(), "cf:acme:chat:5511999@c.us");
/// assert!(ns.vector_collection("../other").is_err());
/// let found = ScopedName::parse(StoreKind::VectorCollection, "cfv_acme_memories")?;
/// assert_eq!(found.tenant().as_str(), "acme");
/// # Ok::<(), tenant_isolation::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TenantNamespace {
    tenant: TenantId,
}

impl TenantNamespace {
    /// The namespace of `tenant`.
    pub fn new(tenant: TenantId) -> Self {
        TenantNamespace { tenant }
    }

    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    fn scoped(&self, kind: StoreKind, name: &str) -> ScopedName {
        let mut full = String::with_capacity(kind.prefix().len() + 25 + name.len());
        full.push_str(kind.prefix());
        full.push_str(self.tenant.as_str());
        full.push(kind.separator());
        let name_start = full.len();
        full.push_str(name);
        ScopedName {
            full,
            tenant: self.tenant.clone(),
            name_start,
        }
    }

    /// A vector-store collection: `cfv_<tenant>_<name>`; `name` is 1 to 34 characters of
    /// `a-z`, `0-9`, `-`, `_`.
    ///
    /// # Errors
    /// [`Error::InvalidId`] with [`IdKind::StoreName`].
    pub fn vector_collection(&self, name: &str) -> Result<ScopedName, Error> {
        validate_store_name(name).map_err(|r| Error::invalid_id(IdKind::StoreName, name, r))?;
        Ok(self.scoped(StoreKind::VectorCollection, name))
    }

    /// A queue or topic name: `cfq_<tenant>_<name>`, same rules as collections.
    ///
    /// # Errors
    /// [`Error::InvalidId`] with [`IdKind::StoreName`].
    pub fn queue(&self, name: &str) -> Result<ScopedName, Error> {
        validate_store_name(name).map_err(|r| Error::invalid_id(IdKind::StoreName, name, r))?;
        Ok(self.scoped(StoreKind::Queue, name))
    }

    /// A cache key: `cf:<tenant>:<key>`; `key` is 1 to 200 bytes without whitespace or
    /// control characters (it may contain `:`).
    ///
    /// # Errors
    /// [`Error::InvalidId`] with [`IdKind::StoreName`].
    pub fn cache_key(&self, key: &str) -> Result<ScopedName, Error> {
        validate_cache_key(key).map_err(|r| Error::invalid_id(IdKind::StoreName, key, r))?;
        Ok(self.scoped(StoreKind::CacheKey, key))
    }

    /// The prefix every cache key of this tenant starts with (`cf:<tenant>:`), for scans and
    /// bulk deletion.
    pub fn cache_prefix(&self) -> String {
        format!("cf:{}:", self.tenant)
    }
}
