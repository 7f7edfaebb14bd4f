//! Several sources used as one.

use std::sync::Arc;

use async_trait::async_trait;

use crate::endpoint::ProxyEndpoint;
use crate::error::ProxyError;
use crate::source::{ProxySource, check_unique_ids};

/// The endpoints of several sources, in order (for example a static list of datacenter proxies
/// plus a residential gateway). Endpoint ids must be unique across all of them.
#[derive(Clone, Default)]
pub struct ChainedSource {
    sources: Vec<Arc<dyn ProxySource>>,
}

impl ChainedSource {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a source.
    pub fn with(mut self, source: Arc<dyn ProxySource>) -> Self {
        self.sources.push(source);
        self
    }
}

impl std::fmt::Debug for ChainedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainedSource")
            .field("sources", &self.sources.len())
            .finish()
    }
}

#[async_trait]
impl ProxySource for ChainedSource {
    async fn endpoints(&self) -> Result<Arc<[ProxyEndpoint]>, ProxyError> {
        let mut all = Vec::new();
        for source in &self.sources {
            all.extend(source.endpoints().await?.iter().cloned());
        }
        check_unique_ids(&all)?;
        Ok(all.into())
    }
}
