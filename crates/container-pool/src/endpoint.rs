//! What `ensure` returns.

use url::Url;

use crate::{ApiKey, ContainerId, TenantId};

/// A ready tenant container: where to reach it and the key it accepts.
///
/// `Debug` redacts the key.
#[derive(Debug, Clone)]
pub struct TenantEndpoint {
    /// The tenant.
    pub tenant: TenantId,
    /// The container's slot within the tenant (see [`Placement`](crate::Placement)).
    pub slot: u32,
    /// The runtime's id of the container.
    pub container: ContainerId,
    /// The container's name.
    pub container_name: String,
    /// WAHA's base URL (`http://host:port`).
    pub base_url: Url,
    /// The `X-Api-Key` the container accepts.
    pub api_key: ApiKey,
}
