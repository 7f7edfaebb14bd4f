//! Configuration from environment variables: WAHA's own, plus `SIM_*` for what WAHA has no
//! variable for.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::SimError;
use crate::faults::{BootingHealth, BootingStatus};
use crate::settings::{CrashBehaviour, Engine};
use crate::simulator::SimulatorBuilder;

/// Where the state directory is by default (WAHA's sessions volume).
pub const DEFAULT_STATE_DIR: &str = "/app/.sessions";

impl SimulatorBuilder {
    /// A builder from the process environment (see [`SimulatorBuilder::from_env_vars`]).
    pub fn from_env() -> Result<Self, SimError> {
        Self::from_env_vars(|name| std::env::var(name).ok())
    }

    /// A builder from environment variables, read through `var`. The binary's configuration:
    ///
    /// | variable | meaning | default |
    /// |---|---|---|
    /// | `PORT` | listening port | `3000` |
    /// | `SIM_HOST` | listening address (an IP address; container-pool's host-network mode sets `127.0.0.1`) | `0.0.0.0` |
    /// | `WAHA_API_KEY` / `WHATSAPP_API_KEY` | API key (plain or `sha512:<hex>`) | none: open |
    /// | `WAHA_NO_API_KEY` | `true` disables the key | `false` |
    /// | `WHATSAPP_DEFAULT_ENGINE` | `WEBJS`, `NOWEB`, `GOWS` | `WEBJS` |
    /// | `WAHA_WORKER_ID` | worker id | empty |
    /// | `WAHA_AUTO_START_DELAY_SECONDS` | delay between restored-session starts | `0` |
    /// | `WHATSAPP_RESTART_ALL_SESSIONS` | start every restored session | `false` |
    /// | `SIM_STATE_DIR` | state directory; empty or `none` disables | `/app/.sessions` |
    /// | `SIM_TIME_SCALE` | time scale factor | `1` |
    /// | `SIM_STARTUP_DELAY_MS`, `SIM_BOOTING_MS` (milliseconds, or `MIN..MAX`: drawn once at start, so a fleet boots unevenly), `SIM_BOOTING_STATUS` (`400`/`503`), `SIM_BOOTING_HEALTH` (`503`/`200`), `SIM_LATENCY_MS`, `SIM_ERROR_RATE`, `SIM_SLOW_STOP_MS`, `SIM_WEBHOOK_DROP_RATE`, `SIM_WEBHOOK_DUPLICATE_RATE`, `SIM_WEBHOOK_REORDER_RATE` | faults | none |
    /// | `SIM_SEED` | seed of the webhook faults (replays a run) | random, logged at start |
    /// | `SIM_STARTING_MS`, `SIM_FIRST_QR_MS`, `SIM_QR_REFRESH_MS`, `SIM_QR_REFRESHES`, `SIM_QR_WAIT_MS`, `SIM_ACK_INTERVAL_MS` (`0`: acks only through the control API), `SIM_RESTART_DELAY_MS` | timings | WAHA's |
    /// | `SIM_PROXY_DIAL` | a starting session first connects to its proxy and goes `FAILED` when it cannot ([`SimulatorBuilder::dial_proxies`]) | `false` |
    /// | `SIM_VERSION`, `SIM_TIER` | reported version and tier | `2026.6.1`, `PLUS` |
    ///
    /// A crash exits the process. Any unparsable value is an [`SimError::InvalidSetting`]
    /// naming the variable.
    pub fn from_env_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, SimError> {
        SimulatorBuilder::default()
            .crash_behaviour(CrashBehaviour::ExitProcess)
            .apply_env_vars(var)
    }

    /// Applies the variables of [`SimulatorBuilder::from_env_vars`] that are set on top of
    /// `self`; the listening address and the state directory are always set (from `PORT`,
    /// `SIM_HOST`, `SIM_STATE_DIR` or their defaults).
    pub(crate) fn apply_env_vars(
        self,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SimError> {
        let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let mut builder = self;

        let port: u16 = parse(&get, "PORT")?.unwrap_or(3000);
        let host: IpAddr = parse(&get, "SIM_HOST")?.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        builder = builder.bind(SocketAddr::new(host, port));

        let no_key = flag(&get, "WAHA_NO_API_KEY")?.unwrap_or(false);
        if !no_key {
            if let Some(key) = get("WAHA_API_KEY").or_else(|| get("WHATSAPP_API_KEY")) {
                builder = builder.api_key(key);
            } else if builder.api_key.is_none() {
                tracing::warn!("no WAHA_API_KEY set: the API accepts every call");
            }
        }
        if let Some(engine) = get("WHATSAPP_DEFAULT_ENGINE") {
            builder = builder.engine(Engine::parse(&engine).ok_or_else(|| {
                SimError::setting("WHATSAPP_DEFAULT_ENGINE", "expected WEBJS, NOWEB or GOWS")
            })?);
        }
        if let Some(worker) = get("WAHA_WORKER_ID") {
            builder = builder.worker_id(worker);
        }
        if let Some(seconds) = parse::<f64>(&get, "WAHA_AUTO_START_DELAY_SECONDS")? {
            let delay = Duration::try_from_secs_f64(seconds).map_err(|_| {
                SimError::setting("WAHA_AUTO_START_DELAY_SECONDS", "must be 0 or more")
            })?;
            builder = builder.auto_start_delay(delay);
        }
        if let Some(dial) = flag(&get, "SIM_PROXY_DIAL")? {
            builder = builder.dial_proxies(dial);
        }
        if let Some(all) = flag(&get, "WHATSAPP_RESTART_ALL_SESSIONS")? {
            builder = builder.restart_all_sessions(all);
        }
        match var("SIM_STATE_DIR") {
            Some(dir) if dir.trim().is_empty() || dir.trim() == "none" => builder.state_dir = None,
            Some(dir) => builder = builder.state_dir(PathBuf::from(dir)),
            None => builder = builder.state_dir(DEFAULT_STATE_DIR),
        }
        if let Some(scale) = parse(&get, "SIM_TIME_SCALE")? {
            builder = builder.time_scale(scale);
        }
        if let Some(version) = get("SIM_VERSION") {
            builder = builder.version(version);
        }
        if let Some(tier) = get("SIM_TIER") {
            builder = builder.tier(tier);
        }

        let faults = &mut builder.faults;
        set_ms_or_range(&get, "SIM_STARTUP_DELAY_MS", &mut faults.startup_delay)?;
        set_ms_or_range(&get, "SIM_BOOTING_MS", &mut faults.booting)?;
        if let Some(status) = get("SIM_BOOTING_STATUS") {
            faults.booting_status = match status.trim() {
                "400" => BootingStatus::BadRequest,
                "503" => BootingStatus::ServiceUnavailable,
                _ => {
                    return Err(SimError::setting(
                        "SIM_BOOTING_STATUS",
                        "expected 400 or 503",
                    ));
                }
            };
        }
        if let Some(health) = get("SIM_BOOTING_HEALTH") {
            faults.booting_health = match health.trim() {
                "503" => BootingHealth::Unavailable,
                "200" => BootingHealth::Ok,
                _ => {
                    return Err(SimError::setting(
                        "SIM_BOOTING_HEALTH",
                        "expected 503 or 200",
                    ));
                }
            };
        }
        if let Some(seed) = parse::<u64>(&get, "SIM_SEED")? {
            faults.seed = Some(seed);
        }
        set_ms(&get, "SIM_LATENCY_MS", &mut faults.latency)?;
        set_ms(&get, "SIM_SLOW_STOP_MS", &mut faults.slow_stop)?;
        for (name, field) in [
            ("SIM_ERROR_RATE", &mut faults.error_rate),
            ("SIM_WEBHOOK_DROP_RATE", &mut faults.webhook_drop_rate),
            (
                "SIM_WEBHOOK_DUPLICATE_RATE",
                &mut faults.webhook_duplicate_rate,
            ),
            ("SIM_WEBHOOK_REORDER_RATE", &mut faults.webhook_reorder_rate),
        ] {
            if let Some(rate) = parse(&get, name)? {
                *field = rate;
            }
        }
        faults.validate()?;

        let timings = &mut builder.timings;
        set_ms(&get, "SIM_STARTING_MS", &mut timings.starting)?;
        set_ms(&get, "SIM_FIRST_QR_MS", &mut timings.first_qr)?;
        set_ms(&get, "SIM_QR_REFRESH_MS", &mut timings.qr_refresh)?;
        set_ms(&get, "SIM_QR_WAIT_MS", &mut timings.qr_wait)?;
        set_ms(&get, "SIM_RESTART_DELAY_MS", &mut timings.restart_delay)?;
        if let Some(n) = parse(&get, "SIM_QR_REFRESHES")? {
            timings.qr_refreshes = n;
        }
        if let Some(ms) = parse::<u64>(&get, "SIM_ACK_INTERVAL_MS")? {
            timings.ack_interval = (ms > 0).then(|| Duration::from_millis(ms));
        }
        Ok(builder)
    }
}

fn parse<T: FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
) -> Result<Option<T>, SimError>
where
    T::Err: std::fmt::Display,
{
    get(name)
        .map(|v| {
            v.trim()
                .parse::<T>()
                .map_err(|e| SimError::setting(name, format!("cannot parse {v:?}: {e}")))
        })
        .transpose()
}

fn flag(get: &impl Fn(&str) -> Option<String>, name: &str) -> Result<Option<bool>, SimError> {
    get(name)
        .map(|v| match v.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(SimError::setting(
                name,
                format!("expected true or false, got {v:?}"),
            )),
        })
        .transpose()
}

fn set_ms(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    field: &mut Duration,
) -> Result<(), SimError> {
    if let Some(ms) = parse::<u64>(get, name)? {
        *field = Duration::from_millis(ms);
    }
    Ok(())
}

/// Like [`set_ms`], but also accepts `MIN..MAX` (milliseconds): a value drawn uniformly from
/// that half-open range once, at start, so containers started from one configuration boot for
/// different times (a fleet of them is not in lock-step). Drawn from the process's own random
/// source, not [`Faults::seed`](crate::Faults::seed): one seed shared by a fleet would draw
/// the same value everywhere.
fn set_ms_or_range(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    field: &mut Duration,
) -> Result<(), SimError> {
    let Some(value) = get(name) else {
        return Ok(());
    };
    let Some((min, max)) = value.trim().split_once("..") else {
        return set_ms(get, name, field);
    };
    let bound = |text: &str| {
        text.trim().parse::<u64>().map_err(|_| {
            SimError::setting(name, "expected milliseconds, or a range MIN..MAX of them")
        })
    };
    let (min, max) = (bound(min)?, bound(max)?);
    if min >= max {
        return Err(SimError::setting(
            name,
            "a range MIN..MAX needs MIN below MAX",
        ));
    }
    *field = Duration::from_millis(fastrand::u64(min..max));
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn builder(vars: &[(&str, &str)]) -> Result<SimulatorBuilder, SimError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        SimulatorBuilder::from_env_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_and_waha_variables() {
        let b = builder(&[]).unwrap();
        assert_eq!(b.bind, "0.0.0.0:3000".parse().unwrap());
        assert_eq!(b.state_dir, Some(PathBuf::from(DEFAULT_STATE_DIR)));
        assert_eq!(b.crash, CrashBehaviour::ExitProcess);
        assert!(b.api_key.is_none());

        let b = builder(&[
            ("PORT", "3100"),
            ("WHATSAPP_API_KEY", "old-name-key"),
            ("WHATSAPP_DEFAULT_ENGINE", "noweb"),
            ("WAHA_WORKER_ID", "w1"),
            ("WAHA_AUTO_START_DELAY_SECONDS", "1.5"),
            ("WHATSAPP_RESTART_ALL_SESSIONS", "True"),
            ("SIM_STATE_DIR", "none"),
            ("SIM_BOOTING_STATUS", "503"),
            ("SIM_ERROR_RATE", "0.25"),
            ("SIM_ACK_INTERVAL_MS", "0"),
            ("SIM_SEED", "42"),
            ("SIM_BOOTING_HEALTH", "200"),
            ("SIM_RESTART_DELAY_MS", "50"),
        ])
        .unwrap();
        assert_eq!(b.faults.seed, Some(42));
        assert_eq!(b.faults.booting_health, BootingHealth::Ok);
        assert_eq!(b.timings.restart_delay, Duration::from_millis(50));
        assert_eq!(b.bind.port(), 3100);
        assert_eq!(b.api_key.as_deref(), Some("old-name-key"));
        assert_eq!(b.engine, Engine::Noweb);
        assert_eq!(b.worker_id, "w1");
        assert_eq!(b.auto_start_delay, Duration::from_millis(1500));
        assert!(b.restart_all);
        assert_eq!(b.state_dir, None);
        assert_eq!(b.faults.booting_status, BootingStatus::ServiceUnavailable);
        assert_eq!(b.faults.error_rate, 0.25);
        assert_eq!(b.timings.ack_interval, None);

        let b = builder(&[("WAHA_API_KEY", "k1-strong"), ("WAHA_NO_API_KEY", "true")]).unwrap();
        assert!(b.api_key.is_none());
        let b = builder(&[("WAHA_API_KEY", "new"), ("WHATSAPP_API_KEY", "old")]).unwrap();
        assert_eq!(b.api_key.as_deref(), Some("new"));
    }

    #[test]
    fn boot_timings_take_a_range_drawn_once_within_it() {
        for _ in 0..50 {
            let b = builder(&[
                ("SIM_STARTUP_DELAY_MS", "2000..6000"),
                ("SIM_BOOTING_MS", " 100 .. 300 "),
            ])
            .unwrap();
            let delay = b.faults.startup_delay.as_millis();
            assert!((2_000..6_000).contains(&delay), "{delay}");
            let booting = b.faults.booting.as_millis();
            assert!((100..300).contains(&booting), "{booting}");
        }
        let drawn: std::collections::HashSet<u128> = (0..50)
            .map(|_| {
                builder(&[("SIM_STARTUP_DELAY_MS", "0..1000000")])
                    .unwrap()
                    .faults
                    .startup_delay
                    .as_millis()
            })
            .collect();
        assert!(drawn.len() > 1, "each start draws its own value: {drawn:?}");
        for bad in ["5..5", "6..5", "a..5", "5..", "..5"] {
            let err = builder(&[("SIM_STARTUP_DELAY_MS", bad)]).unwrap_err();
            assert!(
                err.to_string().contains("SIM_STARTUP_DELAY_MS"),
                "{bad}: {err}"
            );
        }
        assert_eq!(
            builder(&[("SIM_BOOTING_MS", "250")])
                .unwrap()
                .faults
                .booting,
            Duration::from_millis(250)
        );
    }

    #[test]
    fn sim_host_sets_the_listening_address() {
        let b = builder(&[("PORT", "4100"), ("SIM_HOST", "127.0.0.1")]).unwrap();
        assert_eq!(b.bind, "127.0.0.1:4100".parse().unwrap());
        let b = builder(&[("SIM_HOST", "::1")]).unwrap();
        assert_eq!(b.bind, "[::1]:3000".parse().unwrap());
        // An address, not a name: the binary resolves nothing before it binds.
        let error = builder(&[("SIM_HOST", "localhost")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("SIM_HOST"), "{error}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("PORT", "70000"),
            ("WHATSAPP_DEFAULT_ENGINE", "CHROME"),
            ("WAHA_NO_API_KEY", "maybe"),
            ("SIM_ERROR_RATE", "2"),
            ("SIM_BOOTING_STATUS", "418"),
            ("SIM_BOOTING_HEALTH", "204"),
            ("SIM_SEED", "-1"),
            ("SIM_LATENCY_MS", "-1"),
        ] {
            let error = builder(&[(name, value)]).unwrap_err().to_string();
            let expected = if name == "SIM_ERROR_RATE" {
                "errorRate"
            } else {
                name
            };
            assert!(error.contains(expected), "{name}: {error}");
        }
    }

    #[test]
    fn builder_debug_redacts_the_key() {
        let b = builder(&[("WAHA_API_KEY", "top-secret-key-1")]).unwrap();
        assert!(!format!("{b:?}").contains("top-secret"));
    }
}
