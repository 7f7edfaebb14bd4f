//! Idempotent steps built on [`WahaApi`]: make a session exist with a config, make it run.

use async_trait::async_trait;
use tracing::{debug, info};

use crate::api::WahaApi;
use crate::error::WahaError;
use crate::model::{NewSession, SessionConfig, SessionInfo};

/// Idempotent steps over any [`WahaApi`] (also `dyn WahaApi` and mocks). Each can be called
/// again and again and ends in the same state.
#[async_trait]
pub trait WahaApiExt: WahaApi {
    /// Makes session `name` exist with exactly `config`, without starting it.
    ///
    /// 1. `POST /api/sessions {name, config, start: false}`; a session in the answer is returned.
    /// 2. On `AlreadyExists`: `GET` it; if its config is already
    ///    [equivalent](SessionConfig::is_equivalent_to) to `config`, it is returned as is (no
    ///    `PUT`, which would restart a running session); otherwise `PUT` the config.
    /// 3. On a 201 with an empty body (old Core after a DELETE): `GET` it; if the server has no
    ///    such session, [`WahaError::SessionNotCreated`]; otherwise as in 2 (compare, `PUT` if
    ///    the stored config differs).
    ///
    /// Old Core's built-in `default` session (`config: null`) takes path 2. Any other error
    /// (for example `SingleSessionServer`, `Invalid`) is returned unchanged.
    async fn ensure_session(
        &self,
        name: &str,
        config: &SessionConfig,
    ) -> Result<SessionInfo, WahaError> {
        match self
            .create_session(&NewSession::new(name, config.clone()))
            .await
        {
            Ok(Some(created)) => {
                info!(session = name, "session created");
                Ok(created)
            }
            Ok(None) => match self.get_session(name).await {
                Ok(found) => converge(self, name, config, found).await,
                Err(WahaError::NotFound { .. }) => Err(WahaError::SessionNotCreated {
                    name: name.to_owned(),
                }),
                Err(err) => Err(err),
            },
            Err(WahaError::AlreadyExists { .. }) => {
                let current = self.get_session(name).await?;
                converge(self, name, config, current).await
            }
            Err(err) => Err(err),
        }
    }

    /// [`ensure_session`](Self::ensure_session) for a session the caller has just seen exist:
    /// `GET` it and bring its config to `config` (a `PUT` only when the stored config is not
    /// [equivalent](SessionConfig::is_equivalent_to)), without a `POST` that WAHA would refuse
    /// with "already exists". Only when the `GET` finds no session (it was deleted meanwhile)
    /// does it fall back to [`ensure_session`](Self::ensure_session).
    async fn ensure_existing_session(
        &self,
        name: &str,
        config: &SessionConfig,
    ) -> Result<SessionInfo, WahaError> {
        match self.get_session(name).await {
            Ok(current) => converge(self, name, config, current).await,
            Err(WahaError::NotFound { .. }) => self.ensure_session(name, config).await,
            Err(err) => Err(err),
        }
    }

    /// Starts session `name`; when it runs already, returns its current state instead of
    /// [`WahaError::AlreadyStarted`].
    async fn ensure_started(&self, name: &str) -> Result<SessionInfo, WahaError> {
        match self.start_session(name).await {
            Err(WahaError::AlreadyStarted { .. }) => self.get_session(name).await,
            other => other,
        }
    }
}

impl<T: WahaApi + ?Sized> WahaApiExt for T {}

/// Brings an existing session's stored config to `config`: returns `current` unchanged when
/// its config is already equivalent (a `PUT` would restart a running session), otherwise
/// `PUT`s the whole config.
async fn converge<A: WahaApi + ?Sized>(
    api: &A,
    name: &str,
    config: &SessionConfig,
    current: SessionInfo,
) -> Result<SessionInfo, WahaError> {
    if current
        .config
        .as_ref()
        .is_some_and(|current| current.is_equivalent_to(config))
    {
        debug!(session = name, "session exists with the desired config");
        Ok(current)
    } else {
        info!(session = name, "session exists; updating its config");
        api.update_session(name, config).await
    }
}
