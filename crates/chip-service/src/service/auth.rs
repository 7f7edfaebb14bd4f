//! Authentication: the admin token, the tenants' API tokens and where their hashes live.
//!
//! **Tenant API tokens** are `cft_<tenant>_<64 hex digits>`: 32 bytes of the OS CSPRNG
//! (`getrandom`), prefixed with the tenant id so a presented token names the one hash to
//! compare with. A token is shown once (when the tenant is created or its token rotated) and
//! stored as its SHA-256 ([`TokenHash`]; a fast hash is enough for a 256-bit random secret);
//! presented tokens are hashed and compared in constant time (`subtle`). Rotation replaces the
//! stored hash, so the old token stops working at once.
//!
//! **The admin token** comes from the configuration and is held only as its hash
//! ([`AdminToken`]), compared the same way.

use std::collections::HashMap;
use std::fmt;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tenant_isolation::TenantId;

use super::AppState;
use super::error::ApiError;

/// The prefix of every tenant API token.
pub const TOKEN_PREFIX: &str = "cft_";

/// The number of random bytes in a token.
const TOKEN_BYTES: usize = 32;

/// The SHA-256 of a token: what is stored. `Debug` shows nothing of it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash of `secret`.
    pub fn of(secret: &str) -> Self {
        let digest = Sha256::digest(secret.as_bytes());
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_slice());
        TokenHash(bytes)
    }

    /// A hash from its stored bytes (for backends that keep them).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        TokenHash(bytes)
    }

    /// The bytes to store.
    pub fn to_bytes(self) -> [u8; 32] {
        self.0
    }

    /// Whether `other` is the same hash, compared in constant time.
    pub fn matches(&self, other: &TokenHash) -> bool {
        bool::from(self.0[..].ct_eq(&other.0[..]))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// A tenant's API token, as handed out once. `Debug` and `Display` redact it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// A fresh token for `tenant`.
    ///
    /// # Errors
    /// [`TokenError::Entropy`] when the OS random source fails.
    pub fn generate(tenant: &TenantId) -> Result<Self, TokenError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(|error| TokenError::Entropy {
            reason: error.to_string(),
        })?;
        let mut token =
            String::with_capacity(TOKEN_PREFIX.len() + tenant.as_str().len() + 1 + 2 * TOKEN_BYTES);
        token.push_str(TOKEN_PREFIX);
        token.push_str(tenant.as_str());
        token.push('_');
        for byte in bytes {
            let _ = write!(token, "{byte:02x}");
        }
        Ok(ApiToken(token))
    }

    /// The token, to hand to the tenant (once).
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Its hash, to store.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }

    /// The tenant a presented token claims to be for (`None`: not shaped like a token). Says
    /// nothing about whether the token is valid.
    pub fn claimed_tenant(presented: &str) -> Option<TenantId> {
        let rest = presented.strip_prefix(TOKEN_PREFIX)?;
        let (tenant, secret) = rest.rsplit_once('_')?;
        let well_formed = secret.len() == 2 * TOKEN_BYTES
            && secret
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !well_formed {
            return None;
        }
        TenantId::new(tenant).ok()
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl fmt::Display for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The OS random source failed.
    #[error("the OS random source failed: {reason}")]
    Entropy {
        /// What failed.
        reason: String,
    },
}

/// Why a [`TokenStore`] failed. Never carries a token or a hash.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenStoreError {
    /// The backend is unavailable (a database, a network).
    #[error("token store unavailable: {reason}")]
    Unavailable {
        /// What failed.
        reason: String,
    },
}

impl TokenStoreError {
    /// A short, stable name of the variant.
    pub fn kind(&self) -> &'static str {
        match self {
            TokenStoreError::Unavailable { .. } => "unavailable",
        }
    }

    /// Whether retrying later can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            TokenStoreError::Unavailable { .. } => true,
        }
    }
}

/// Where the tenants' API token hashes live: one current hash per tenant. Two
/// implementations: the in-memory [`MemoryTokenStore`] (the embedded default) and
/// [`PgTokenStore`](super::PgTokenStore) (the production backend: PostgreSQL, kept across
/// restarts and shared by the replicas).
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// The hash of `tenant`'s current token, if it has one.
    async fn get(&self, tenant: &TenantId) -> Result<Option<TokenHash>, TokenStoreError>;

    /// Makes `hash` `tenant`'s token hash, replacing any previous one (rotation: the old
    /// token stops working).
    async fn set(&self, tenant: &TenantId, hash: TokenHash) -> Result<(), TokenStoreError>;

    /// Forgets `tenant`'s token (offboarding); answers whether it had one.
    async fn remove(&self, tenant: &TenantId) -> Result<bool, TokenStoreError>;
}

/// The in-process [`TokenStore`]: a map behind a mutex, gone with the process (tokens must be
/// issued again after a restart: use a durable store where that matters).
#[derive(Default)]
pub struct MemoryTokenStore {
    hashes: Mutex<HashMap<TenantId, TokenHash>>,
}

impl MemoryTokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl fmt::Debug for MemoryTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tenants = self
            .hashes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("MemoryTokenStore")
            .field("tenants", &tenants)
            .finish()
    }
}

#[async_trait]
impl TokenStore for MemoryTokenStore {
    async fn get(&self, tenant: &TenantId) -> Result<Option<TokenHash>, TokenStoreError> {
        Ok(self
            .hashes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .copied())
    }

    async fn set(&self, tenant: &TenantId, hash: TokenHash) -> Result<(), TokenStoreError> {
        self.hashes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tenant.clone(), hash);
        Ok(())
    }

    async fn remove(&self, tenant: &TenantId) -> Result<bool, TokenStoreError> {
        Ok(self
            .hashes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(tenant)
            .is_some())
    }
}

/// Mints a token for `tenant` and stores its hash (the previous token stops working).
pub(crate) async fn issue_token(
    tokens: &dyn TokenStore,
    tenant: &TenantId,
) -> Result<ApiToken, ApiError> {
    let token = ApiToken::generate(tenant).map_err(|error| ApiError::internal("token", &error))?;
    tokens.set(tenant, token.hash()).await?;
    Ok(token)
}

/// The admin token, held only as its hash. `Debug` shows nothing of it.
#[derive(Clone)]
pub struct AdminToken {
    hash: TokenHash,
}

/// Why an admin token was refused (the token is never repeated).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidAdminToken {
    /// Fewer than [`AdminToken::MIN_LEN`] characters (how many it has is not said: nothing
    /// about the secret is repeated).
    #[error("must have at least {min} characters", min = AdminToken::MIN_LEN)]
    TooShort,
    /// Something else than printable ASCII without spaces.
    #[error("must be printable ASCII without spaces")]
    NotPrintable,
}

impl AdminToken {
    /// The fewest characters an admin token may have.
    pub const MIN_LEN: usize = 32;

    /// The admin token `secret` (kept as its hash).
    ///
    /// # Errors
    /// [`InvalidAdminToken`] for a short token or one with spaces or control characters.
    pub fn new(secret: &str) -> Result<Self, InvalidAdminToken> {
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidAdminToken::NotPrintable);
        }
        if secret.len() < Self::MIN_LEN {
            return Err(InvalidAdminToken::TooShort);
        }
        Ok(AdminToken {
            hash: TokenHash::of(secret),
        })
    }

    /// Whether `presented` is the admin token (constant time in the stored token).
    pub fn matches(&self, presented: &str) -> bool {
        self.hash.matches(&TokenHash::of(presented))
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// The bearer token of a request.
fn bearer(parts: &Parts) -> Result<String, ApiError> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "a bearer token is required (Authorization: Bearer <token>)",
        ));
    };
    let refused = || ApiError::unauthorized("the Authorization header is not a bearer token");
    let value = value.to_str().map_err(|_| refused())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(refused)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(refused());
    }
    Ok(token.to_owned())
}

/// The tenant a request authenticated as, from its bearer token.
#[derive(Clone, Debug)]
pub(crate) struct TenantAuth(pub(crate) TenantId);

impl FromRequestParts<AppState> for TenantAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let presented = bearer(parts)?;
        let invalid = || ApiError::unauthorized("the token is not valid");
        let Some(tenant) = ApiToken::claimed_tenant(&presented) else {
            return Err(invalid());
        };
        let presented = TokenHash::of(&presented);
        let stored = state.inner.tokens.get(&tenant).await?;
        // Compared even when the tenant has no token, so both refusals take the same time.
        let matched = stored.unwrap_or(TokenHash([0u8; 32])).matches(&presented);
        if stored.is_some() && matched {
            Ok(TenantAuth(tenant))
        } else {
            Err(invalid())
        }
    }
}

/// A request authenticated with the admin token.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let presented = bearer(parts)?;
        if state.inner.admin_token.matches(&presented) {
            Ok(AdminAuth)
        } else {
            Err(ApiError::unauthorized("the admin token is required"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_tenant_and_redact_themselves() {
        let acme = TenantId::new("acme-2").unwrap();
        let token = ApiToken::generate(&acme).unwrap();
        let text = token.expose_secret();
        assert!(text.starts_with("cft_acme-2_"), "{}", text.len());
        assert_eq!(ApiToken::claimed_tenant(text), Some(acme.clone()));
        assert_ne!(ApiToken::generate(&acme).unwrap(), token);
        assert!(!format!("{token:?} {token}").contains(text));
        assert!(token.hash().matches(&TokenHash::of(text)));
        assert!(!token.hash().matches(&TokenHash::of("cft_acme-2_00")));
        for bad in [
            "",
            "cft_",
            "cft_acme",
            "cft_acme_xyz",
            "Bearer x",
            "cft_Acme_00",
        ] {
            assert_eq!(ApiToken::claimed_tenant(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_admin_token_is_checked_and_never_shown() {
        let secret = "0123456789abcdef0123456789abcdef";
        let admin = AdminToken::new(secret).unwrap();
        assert!(admin.matches(secret));
        assert!(!admin.matches("0123456789abcdef0123456789abcdeF"));
        assert!(!format!("{admin:?}").contains(secret));
        assert_eq!(
            AdminToken::new("short").unwrap_err(),
            InvalidAdminToken::TooShort
        );
        assert!(
            !AdminToken::new("short")
                .unwrap_err()
                .to_string()
                .contains('5')
        );
        assert_eq!(
            AdminToken::new("0123456789abcdef 0123456789abcdef").unwrap_err(),
            InvalidAdminToken::NotPrintable
        );
    }

    #[tokio::test]
    async fn the_memory_store_rotates_and_forgets() {
        let store = MemoryTokenStore::new();
        let acme = TenantId::new("acme").unwrap();
        assert_eq!(store.get(&acme).await.unwrap(), None);
        let first = ApiToken::generate(&acme).unwrap();
        store.set(&acme, first.hash()).await.unwrap();
        let second = ApiToken::generate(&acme).unwrap();
        store.set(&acme, second.hash()).await.unwrap();
        let stored = store.get(&acme).await.unwrap().unwrap();
        assert!(stored.matches(&second.hash()) && !stored.matches(&first.hash()));
        assert!(store.remove(&acme).await.unwrap());
        assert!(!store.remove(&acme).await.unwrap());
    }
}
