//! Container limits from the WhatsApp engine and the number of sessions a container holds.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The WhatsApp engine WAHA runs (`WHATSAPP_DEFAULT_ENGINE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Engine {
    /// whatsapp-web.js in Chromium: by far the heaviest.
    Webjs,
    /// The NOWEB (Baileys) engine: no browser.
    #[default]
    Noweb,
    /// The GOWS (whatsmeow) engine: no browser, the lightest.
    Gows,
}

impl Engine {
    /// The value WAHA expects in `WHATSAPP_DEFAULT_ENGINE`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Webjs => "WEBJS",
            Self::Noweb => "NOWEB",
            Self::Gows => "GOWS",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Engine {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_uppercase().as_str() {
            "WEBJS" => Ok(Self::Webjs),
            "NOWEB" => Ok(Self::Noweb),
            "GOWS" => Ok(Self::Gows),
            _ => Err(Error::InvalidConfig(format!("unknown WAHA engine `{s}`"))),
        }
    }
}

/// Memory, CPU and process limits of one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory_bytes: u64,
    /// CPU limit in billionths of a CPU (Docker's `NanoCpus`).
    pub nano_cpus: u64,
    /// Maximum number of processes and threads.
    pub pids_limit: u64,
}

/// One row of a sizing table: the resources a container with `sessions` sessions needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizingRow {
    /// Sessions in the container.
    pub sessions: u32,
    /// CPU in thousandths of a CPU.
    pub millicpus: u64,
    /// Memory in MiB.
    pub memory_mib: u64,
}

/// Maps engine × sessions per container to [`Resources`].
///
/// The default is WAHA's published sizing guide (1, 10 and 50 sessions per engine; see
/// `docs/waha-contract.md`, "Sizing"). For a session count between two rows the next larger
/// row applies (never under-provision); above the last row the last row is scaled linearly.
/// The pids limit is `pids_base + pids_per_session × sessions` (Chromium starts many processes
/// per session, so WEBJS gets more).
///
/// Container runtimes take limits as signed 64-bit numbers: [`try_resources`](Self::try_resources)
/// (which [`PoolConfig::validate`](crate::PoolConfig::validate) calls for the configured engine
/// and sessions) rejects limits above `i64::MAX`; [`resources`](Self::resources) saturates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizingPolicy {
    webjs: Vec<SizingRow>,
    noweb: Vec<SizingRow>,
    gows: Vec<SizingRow>,
    /// Processes every container may start regardless of sessions.
    pub pids_base: u64,
    /// Extra processes per session for WEBJS.
    pub pids_per_session_webjs: u64,
    /// Extra processes per session for NOWEB and GOWS.
    pub pids_per_session_light: u64,
}

/// Bytes per MiB.
const MIB: u64 = 1024 * 1024;
/// Billionths of a CPU per thousandth.
const NANOS: u64 = 1_000_000;

/// Whether a limit fits the signed 64-bit fields of container runtimes.
fn fits(v: u64) -> bool {
    i64::try_from(v).is_ok()
}

const fn row(sessions: u32, millicpus: u64, memory_mib: u64) -> SizingRow {
    SizingRow {
        sessions,
        millicpus,
        memory_mib,
    }
}

impl Default for SizingPolicy {
    fn default() -> Self {
        Self::waha_guide()
    }
}

impl SizingPolicy {
    /// WAHA's published sizing guide.
    pub fn waha_guide() -> Self {
        Self {
            webjs: vec![row(1, 300, 400), row(10, 3000, 2560), row(50, 15000, 20480)],
            noweb: vec![row(1, 100, 200), row(10, 1000, 2048), row(50, 2000, 4096)],
            gows: vec![row(1, 100, 200), row(10, 500, 1024), row(50, 1500, 3072)],
            pids_base: 256,
            pids_per_session_webjs: 128,
            pids_per_session_light: 16,
        }
    }

    /// Replaces the table of one engine. Rows must be non-empty, with strictly increasing
    /// session counts and non-zero resources, and each row's limits (memory in bytes, CPU in
    /// billionths) must fit a container runtime (`i64::MAX`).
    pub fn with_table(mut self, engine: Engine, rows: Vec<SizingRow>) -> Result<Self, Error> {
        let increasing = rows.windows(2).all(|w| w[0].sessions < w[1].sessions);
        let positive = rows
            .iter()
            .all(|r| r.sessions > 0 && r.millicpus > 0 && r.memory_mib > 0);
        if rows.is_empty() || !increasing || !positive {
            return Err(Error::InvalidConfig(format!(
                "sizing table for {engine} must be non-empty, strictly increasing in sessions, with non-zero values"
            )));
        }
        if let Some(r) = rows.iter().find(|r| {
            !fits(r.memory_mib.saturating_mul(MIB)) || !fits(r.millicpus.saturating_mul(NANOS))
        }) {
            return Err(Error::InvalidConfig(format!(
                "sizing row for {engine} with {} sessions is too large: {} MiB and {} millicpus \
                 exceed what a container runtime accepts",
                r.sessions, r.memory_mib, r.millicpus
            )));
        }
        *self.table_mut(engine) = rows;
        Ok(self)
    }

    fn table(&self, engine: Engine) -> &[SizingRow] {
        match engine {
            Engine::Webjs => &self.webjs,
            Engine::Noweb => &self.noweb,
            Engine::Gows => &self.gows,
        }
    }

    fn table_mut(&mut self, engine: Engine) -> &mut Vec<SizingRow> {
        match engine {
            Engine::Webjs => &mut self.webjs,
            Engine::Noweb => &mut self.noweb,
            Engine::Gows => &mut self.gows,
        }
    }

    /// The limits of a container running `engine` with up to `sessions` sessions. A limit too
    /// large for a `u64` saturates at `u64::MAX` (see [`try_resources`](Self::try_resources)).
    pub fn resources(&self, engine: Engine, sessions: u32) -> Resources {
        let sessions = sessions.max(1);
        let table = self.table(engine);
        let (millicpus, memory_mib) = match table.iter().find(|r| r.sessions >= sessions) {
            Some(r) => (r.millicpus, r.memory_mib),
            None => {
                let last = table[table.len() - 1];
                let scale = |v: u64| {
                    let scaled =
                        (u128::from(v) * u128::from(sessions)).div_ceil(u128::from(last.sessions));
                    u64::try_from(scaled).unwrap_or(u64::MAX)
                };
                (scale(last.millicpus), scale(last.memory_mib))
            }
        };
        let per_session = match engine {
            Engine::Webjs => self.pids_per_session_webjs,
            Engine::Noweb | Engine::Gows => self.pids_per_session_light,
        };
        Resources {
            memory_bytes: memory_mib.saturating_mul(MIB),
            nano_cpus: millicpus.saturating_mul(NANOS),
            pids_limit: self
                .pids_base
                .saturating_add(per_session.saturating_mul(u64::from(sessions))),
        }
    }

    /// [`resources`](Self::resources), or [`Error::InvalidConfig`] when a limit exceeds what a
    /// container runtime accepts (`i64::MAX`: bytes, billionths of a CPU, processes), e.g.
    /// because of huge `pids_*` values or a session count far past the table.
    pub fn try_resources(&self, engine: Engine, sessions: u32) -> Result<Resources, Error> {
        let r = self.resources(engine, sessions);
        if fits(r.memory_bytes) && fits(r.nano_cpus) && fits(r.pids_limit) {
            Ok(r)
        } else {
            Err(Error::InvalidConfig(format!(
                "the limits for {sessions} {engine} sessions are too large for a container \
                 runtime: {r:?} (each must be at most {})",
                i64::MAX
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_waha_guide_rounding_up_and_scaling_past_the_table() {
        let p = SizingPolicy::waha_guide();
        let one = p.resources(Engine::Webjs, 1);
        assert_eq!(one.memory_bytes, 400 * 1024 * 1024);
        assert_eq!(one.nano_cpus, 300_000_000);
        // 4 sessions round up to the 10-session row.
        let four = p.resources(Engine::Noweb, 4);
        assert_eq!(four.memory_bytes, 2048 * 1024 * 1024);
        assert_eq!(four.nano_cpus, 1_000_000_000);
        assert_eq!(four.pids_limit, 256 + 16 * 4);
        // 100 GOWS sessions: twice the 50-session row.
        let hundred = p.resources(Engine::Gows, 100);
        assert_eq!(hundred.nano_cpus, 3_000_000_000);
        assert_eq!(hundred.memory_bytes, 6144 * 1024 * 1024);
        // Zero sessions is sized like one.
        assert_eq!(p.resources(Engine::Gows, 0), p.resources(Engine::Gows, 1));
    }

    #[test]
    fn rejects_bad_tables_and_engines() {
        let p = SizingPolicy::waha_guide();
        assert!(p.clone().with_table(Engine::Gows, vec![]).is_err());
        assert!(
            p.clone()
                .with_table(Engine::Gows, vec![row(10, 1, 1), row(5, 1, 1)])
                .is_err()
        );
        let custom = p
            .clone()
            .with_table(Engine::Gows, vec![row(5, 250, 300)])
            .unwrap();
        assert_eq!(custom.resources(Engine::Gows, 5).nano_cpus, 250_000_000);
        // Limits a container runtime cannot take (and whose bytes overflow a u64).
        for huge in [row(1, 1, u64::MAX), row(1, u64::MAX / 1000, 1)] {
            assert!(matches!(
                p.clone().with_table(Engine::Gows, vec![huge]),
                Err(Error::InvalidConfig(_))
            ));
        }
        assert!("gows".parse::<Engine>().is_ok());
        assert!("chromium".parse::<Engine>().is_err());
    }

    #[test]
    fn limits_past_what_a_runtime_takes_saturate_and_are_rejected_not_a_panic() {
        // The largest row a runtime accepts, scaled a thousandfold past the table.
        let big = SizingPolicy::waha_guide()
            .with_table(Engine::Noweb, vec![row(1, 1000, (i64::MAX as u64) / MIB)])
            .unwrap();
        assert!(big.try_resources(Engine::Noweb, 1).is_ok());
        assert_eq!(big.resources(Engine::Noweb, 1000).memory_bytes, u64::MAX);
        assert!(matches!(
            big.try_resources(Engine::Noweb, 1000),
            Err(Error::InvalidConfig(_))
        ));
        let mut pids = SizingPolicy::waha_guide();
        pids.pids_per_session_light = u64::MAX;
        assert_eq!(pids.resources(Engine::Gows, 2).pids_limit, u64::MAX);
        assert!(pids.try_resources(Engine::Gows, 2).is_err());
        assert!(pids.try_resources(Engine::Webjs, 2).is_ok());
    }
}
