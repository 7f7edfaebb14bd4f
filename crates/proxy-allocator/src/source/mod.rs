//! Where endpoints come from: the [`ProxySource`] trait and its implementations.

pub mod chained;
pub mod gateway;
pub mod static_list;

use std::sync::Arc;

use async_trait::async_trait;

use crate::endpoint::ProxyEndpoint;
use crate::error::ProxyError;

/// A provider of egress endpoints.
///
/// Contract for implementations:
/// - `endpoints` returns every endpoint currently offered, each with an id that is stable
///   across calls and restarts (leases refer to endpoints by id) and unique within the result;
/// - an endpoint that disappears from the result is treated as gone: chips leased on it are
///   moved to another endpoint on their next allocation;
/// - it does no allocation itself and keeps no per-chip state (the [`crate::LeaseStore`] does);
/// - it may do I/O (read a file, ask a provider's API) and is called on every allocation, so
///   cache if that I/O is slow. The result is shared (`Arc`) so that a source holding a fixed
///   list answers without copying it.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait ProxySource: Send + Sync {
    /// Every endpoint currently offered.
    async fn endpoints(&self) -> Result<Arc<[ProxyEndpoint]>, ProxyError>;
}

pub(crate) fn check_unique_ids(endpoints: &[ProxyEndpoint]) -> Result<(), ProxyError> {
    let mut seen = std::collections::HashSet::new();
    for endpoint in endpoints {
        if !seen.insert(&endpoint.id) {
            return Err(ProxyError::config(format!(
                "endpoint id {} appears more than once; give each entry its own id",
                endpoint.id
            )));
        }
    }
    Ok(())
}
