//! The supervisor's plain configuration (`docs/session-supervisor.md`, 8), validated by
//! [`SupervisorBuilder::build`](crate::SupervisorBuilder::build).

use std::fmt;
use std::time::Duration;

use waha_client::{WebhookRetries, WebhookRetryPolicy};

use crate::policy::{Policy, PolicyError, Rate, RestartBudgets};

/// The placeholder [`SupervisorConfig::webhook_url`] must contain; the tenant id replaces it.
pub const TENANT_PLACEHOLDER: &str = "{tenant}";

/// The webhook events every session subscribes to, by name (WAHA's `*` covers neither
/// `engine.event` nor `state.change`).
pub const DEFAULT_WEBHOOK_EVENTS: [&str; 5] = [
    "session.status",
    "state.change",
    "engine.event",
    "message",
    "message.ack",
];

/// Whether an always-on task runs. Turning one off is explicit and carries a reason, which
/// `run()` logs at `warn` and reports in the `supervisor_task_enabled` gauge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Toggle {
    /// The task runs (the default).
    On,
    /// The task does not run.
    Off {
        /// Why (logged).
        reason: String,
    },
}

impl Toggle {
    /// Whether the task runs.
    pub fn is_on(&self) -> bool {
        matches!(self, Toggle::On)
    }
}

/// The always-on tasks of `run()` (`docs/session-supervisor.md`, 9), each on by default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Monitors {
    /// Idle reaping through the pool (the supervisor is the `ChipActivity`).
    pub idle_reaping: Toggle,
    /// The orphan-container sweep.
    pub orphan_containers: Toggle,
    /// The stale-session sweep of owned tenants' containers.
    pub stale_sessions: Toggle,
    /// Releasing chip-slot reservations no record holds.
    pub orphan_reservations: Toggle,
    /// Proxy lease health checks of working chips.
    pub proxy_health: Toggle,
    /// Queuing working chips silent past the threshold (the reconcile probes them).
    pub silent_death: Toggle,
    /// Clearing pairing codes past their expiry from stored records nothing else writes.
    pub expired_offers: Toggle,
    /// Pruning the proxy allocator's history.
    pub proxy_history: Toggle,
}

impl Default for Monitors {
    fn default() -> Self {
        Monitors {
            idle_reaping: Toggle::On,
            orphan_containers: Toggle::On,
            stale_sessions: Toggle::On,
            orphan_reservations: Toggle::On,
            proxy_health: Toggle::On,
            silent_death: Toggle::On,
            expired_offers: Toggle::On,
            proxy_history: Toggle::On,
        }
    }
}

impl Monitors {
    /// Every task with its name, for logs and the gauge.
    pub fn iter(&self) -> [(&'static str, &Toggle); 8] {
        [
            ("idle_reaping", &self.idle_reaping),
            ("orphan_containers", &self.orphan_containers),
            ("stale_sessions", &self.stale_sessions),
            ("orphan_reservations", &self.orphan_reservations),
            ("proxy_health", &self.proxy_health),
            ("silent_death", &self.silent_death),
            ("expired_offers", &self.expired_offers),
            ("proxy_history", &self.proxy_history),
        ]
    }
}

/// What the stale-session sweep does with a session whose name is not in chipfleet's format
/// (`default`, `chip_test_1`). Names in chipfleet's format that no chip of the tenant owns
/// are always removed; the tenant's own chips are always kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ForeignSessionPolicy {
    /// Delete it (the default: seed report 000's stale sessions in reused volumes).
    #[default]
    Remove,
    /// Leave it, and publish [`Alert::ForeignSession`](crate::Alert) once per sweep.
    Keep,
}

/// How often each always-on task runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitorIntervals {
    /// Idle reaping (1 min).
    pub idle_reaping: Duration,
    /// Orphan containers, stale sessions, orphan reservations, proxy health (10 min).
    pub sweeps: Duration,
    /// The silent-death scan (1 min).
    pub silent_scan: Duration,
    /// Clearing expired pairing codes from stored records (1 min).
    pub expired_offers: Duration,
    /// Proxy history pruning (1 day).
    pub proxy_history: Duration,
    /// How old a chip-slot reservation without a record must be before it is released
    /// (10 min: a create in flight has reserved but not yet recorded).
    pub orphan_reservation_age: Duration,
}

impl Default for MonitorIntervals {
    fn default() -> Self {
        MonitorIntervals {
            idle_reaping: Duration::from_secs(60),
            sweeps: Duration::from_secs(10 * 60),
            silent_scan: Duration::from_secs(60),
            expired_offers: Duration::from_secs(60),
            proxy_history: Duration::from_secs(24 * 3_600),
            orphan_reservation_age: Duration::from_secs(10 * 60),
        }
    }
}

/// Everything the supervisor can be told, with documented defaults. Plain data: build it with
/// [`SupervisorConfig::new`] and change fields.
#[derive(Clone, PartialEq, Eq)]
pub struct SupervisorConfig {
    /// Where WAHA posts webhooks; must contain `{tenant}` (the ingest routes by the URL's
    /// tenant). Treat it as a secret when it carries a token: it is never logged.
    pub webhook_url: String,
    /// The events each session's webhook lists ([`DEFAULT_WEBHOOK_EVENTS`]).
    pub webhook_events: Vec<String>,
    /// WAHA's delivery retries: exponential, 2 s, 12 attempts (about 2.3 h if WAHA doubles).
    pub webhook_retries: WebhookRetries,
    /// The decision policy: timings, backoff classes, loop detection.
    pub policy: Policy,
    /// Restart budget per tenant (10/min, burst 5).
    pub tenant_restart_budget: Rate,
    /// Restart budget of this process (120/min, burst 30; per replica).
    pub global_restart_budget: Rate,
    /// Reconciles running at once in this process (16).
    pub reconcile_concurrency: usize,
    /// Reconciles of one tenant running at once (4): one tenant's 100 chips do not starve
    /// another's one.
    pub per_tenant_concurrency: usize,
    /// Steps one reconcile takes before it requeues its chip (12), for fairness.
    pub max_steps_per_reconcile: u32,
    /// How often due work is looked for when nothing wakes the scheduler (1 s).
    pub tick_interval: Duration,
    /// The longest a step's effect may take (240 s); must exceed the pool's
    /// `startup_deadline`. A step that takes longer is a retryable failure.
    pub step_timeout: Duration,
    /// How long an owner lease lasts (30 s).
    pub lease_ttl: Duration,
    /// How often owned leases are renewed (5 s).
    pub renew_every: Duration,
    /// How long before its lease's expiry an owner that could not renew stops acting (10 s).
    /// `lease_ttl ≥ safety_margin + 2 × renew_every` is checked.
    pub safety_margin: Duration,
    /// How often tenants without a live owner are claimed (2 s).
    pub claim_interval: Duration,
    /// How many tenants one claim takes at most (16).
    pub claim_batch: u32,
    /// How long `shutdown` lets in-flight steps finish (30 s).
    pub shutdown_grace: Duration,
    /// What the stale-session sweep does with foreign session names.
    pub foreign_sessions: ForeignSessionPolicy,
    /// Which always-on tasks run.
    pub monitors: Monitors,
    /// How often they run.
    pub monitor_intervals: MonitorIntervals,
}

impl fmt::Debug for SupervisorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorConfig")
            .field("webhook_url", &"<redacted>")
            .field("webhook_events", &self.webhook_events)
            .field("webhook_retries", &self.webhook_retries)
            .field("policy", &self.policy)
            .field("tenant_restart_budget", &self.tenant_restart_budget)
            .field("global_restart_budget", &self.global_restart_budget)
            .field("reconcile_concurrency", &self.reconcile_concurrency)
            .field("per_tenant_concurrency", &self.per_tenant_concurrency)
            .field("max_steps_per_reconcile", &self.max_steps_per_reconcile)
            .field("tick_interval", &self.tick_interval)
            .field("step_timeout", &self.step_timeout)
            .field("lease_ttl", &self.lease_ttl)
            .field("renew_every", &self.renew_every)
            .field("safety_margin", &self.safety_margin)
            .field("claim_interval", &self.claim_interval)
            .field("claim_batch", &self.claim_batch)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("foreign_sessions", &self.foreign_sessions)
            .field("monitors", &self.monitors)
            .field("monitor_intervals", &self.monitor_intervals)
            .finish()
    }
}

impl SupervisorConfig {
    /// The defaults, with WAHA posting webhooks to `webhook_url` (a template containing
    /// `{tenant}`).
    pub fn new(webhook_url: impl Into<String>) -> Self {
        SupervisorConfig {
            webhook_url: webhook_url.into(),
            webhook_events: DEFAULT_WEBHOOK_EVENTS
                .iter()
                .map(|e| (*e).to_owned())
                .collect(),
            webhook_retries: WebhookRetries {
                policy: Some(WebhookRetryPolicy::Exponential),
                delay_seconds: Some(2),
                attempts: Some(12),
            },
            policy: Policy::default(),
            tenant_restart_budget: RestartBudgets::DEFAULT_TENANT,
            global_restart_budget: RestartBudgets::DEFAULT_GLOBAL,
            reconcile_concurrency: 16,
            per_tenant_concurrency: 4,
            max_steps_per_reconcile: 12,
            tick_interval: Duration::from_secs(1),
            step_timeout: Duration::from_secs(240),
            lease_ttl: Duration::from_secs(30),
            renew_every: Duration::from_secs(5),
            safety_margin: Duration::from_secs(10),
            claim_interval: Duration::from_secs(2),
            claim_batch: 16,
            shutdown_grace: Duration::from_secs(30),
            foreign_sessions: ForeignSessionPolicy::Remove,
            monitors: Monitors::default(),
            monitor_intervals: MonitorIntervals::default(),
        }
    }

    /// The webhook URL for `tenant`.
    pub fn webhook_url_for(&self, tenant: &tenant_isolation::TenantId) -> String {
        self.webhook_url
            .replace(TENANT_PLACEHOLDER, tenant.as_str())
    }

    /// How long WAHA keeps retrying one webhook delivery under
    /// [`webhook_retries`](Self::webhook_retries), assuming it doubles the delay for the
    /// exponential policy (issue 13's freshness window).
    pub fn webhook_retry_span(&self) -> Duration {
        let delay = u64::from(self.webhook_retries.delay_seconds.unwrap_or(2));
        let attempts = self.webhook_retries.attempts.unwrap_or(1).max(1);
        let waits = attempts - 1;
        let seconds = match self
            .webhook_retries
            .policy
            .unwrap_or(WebhookRetryPolicy::Constant)
        {
            WebhookRetryPolicy::Exponential => {
                delay.saturating_mul((1u64 << waits.min(40)).saturating_sub(1))
            }
            WebhookRetryPolicy::Linear => {
                delay.saturating_mul(u64::from(waits) * (u64::from(waits) + 1) / 2)
            }
            _ => delay.saturating_mul(u64::from(waits)),
        };
        Duration::from_secs(seconds)
    }

    /// Checks every setting; `startup_deadline` is the pool's, which a step must outlast.
    ///
    /// # Errors
    /// [`ConfigError`] naming the setting.
    pub fn validate(&self, startup_deadline: Duration) -> Result<(), ConfigError> {
        if !self.webhook_url.contains(TENANT_PLACEHOLDER) {
            return Err(ConfigError::invalid(
                "webhook_url",
                "must contain {tenant}: the ingest routes webhooks by the URL's tenant",
            ));
        }
        let probe = self.webhook_url.replace(TENANT_PLACEHOLDER, "tenant");
        match url::Url::parse(&probe) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            _ => {
                return Err(ConfigError::invalid("webhook_url", "is not an http(s) URL"));
            }
        }
        if self.webhook_events.is_empty() {
            return Err(ConfigError::invalid("webhook_events", "must not be empty"));
        }
        if self.webhook_events.iter().any(|e| e == "*") {
            return Err(ConfigError::invalid(
                "webhook_events",
                "`*` covers neither engine.event nor state.change: list events by name",
            ));
        }
        self.policy.validate().map_err(ConfigError::Policy)?;
        self.tenant_restart_budget
            .validate()
            .map_err(ConfigError::Policy)?;
        self.global_restart_budget
            .validate()
            .map_err(ConfigError::Policy)?;
        for (name, value) in [
            ("reconcile_concurrency", self.reconcile_concurrency),
            ("per_tenant_concurrency", self.per_tenant_concurrency),
            (
                "max_steps_per_reconcile",
                self.max_steps_per_reconcile as usize,
            ),
            ("claim_batch", self.claim_batch as usize),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(name, "must not be zero"));
            }
        }
        for (name, value) in [
            ("tick_interval", self.tick_interval),
            ("step_timeout", self.step_timeout),
            ("lease_ttl", self.lease_ttl),
            ("renew_every", self.renew_every),
            ("claim_interval", self.claim_interval),
            (
                "monitor_intervals.idle_reaping",
                self.monitor_intervals.idle_reaping,
            ),
            ("monitor_intervals.sweeps", self.monitor_intervals.sweeps),
            (
                "monitor_intervals.silent_scan",
                self.monitor_intervals.silent_scan,
            ),
            (
                "monitor_intervals.expired_offers",
                self.monitor_intervals.expired_offers,
            ),
            (
                "monitor_intervals.proxy_history",
                self.monitor_intervals.proxy_history,
            ),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(name, "must not be zero"));
            }
        }
        if self.step_timeout <= startup_deadline {
            return Err(ConfigError::invalid(
                "step_timeout",
                format!(
                    "{:?} must exceed the pool's startup_deadline {:?}, or every slow container start fails its step",
                    self.step_timeout, startup_deadline
                ),
            ));
        }
        if self.lease_ttl < self.safety_margin + self.renew_every * 2 {
            return Err(ConfigError::invalid(
                "lease_ttl",
                "must be at least safety_margin + 2 × renew_every",
            ));
        }
        if self.safety_margin.is_zero() {
            return Err(ConfigError::invalid("safety_margin", "must not be zero"));
        }
        Ok(())
    }
}

/// A setting [`SupervisorConfig::validate`] refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A supervisor setting.
    #[error("supervisor setting {setting} {problem}")]
    Invalid {
        /// The setting.
        setting: &'static str,
        /// What is wrong (never the value of a secret).
        problem: String,
    },
    /// A policy setting.
    #[error(transparent)]
    Policy(PolicyError),
}

impl ConfigError {
    fn invalid(setting: &'static str, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            setting,
            problem: problem.into(),
        }
    }

    /// The setting refused.
    pub fn setting(&self) -> &str {
        match self {
            ConfigError::Invalid { setting, .. } => setting,
            ConfigError::Policy(error) => error.setting(),
        }
    }
}
