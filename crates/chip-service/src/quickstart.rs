//! The quickstart: seed report 000's multi-tenant test, played on the [`Supervisor`] over the
//! embedded default ([`Embedded`]), with no hand wiring.
//!
//! Seed report 000 tried 2 tenants × 2 chips on WAHA Plus and got 0 of 4 sessions and 0 of 4
//! QR codes: the containers answered `400 Bad Request` for a while after they came up, the
//! session creates were not retried, and reused volumes still held stale `default` and
//! `chip_test_1` sessions. [`run`] plays exactly that world, in process:
//!
//! 1. two tenants on plans of 2 chips; a third chip is refused, naming the limit;
//! 2. each tenant's volume first holds the stale sessions, left by an earlier container;
//! 3. every container of the supervisor's pool answers 400 to session calls for
//!    [`QuickstartOptions::booting`] after it comes up, while `/health` already answers 200
//!    (probed and shown as it happens);
//! 4. the supervisor provisions the 4 chips; each QR code is shown as a scannable block in the
//!    terminal and written as WAHA's PNG (paths printed); a simulated phone scans it; the chips
//!    reach WORKING;
//! 5. the stale sessions are swept (`Supervisor::sweep_stale_sessions`) and WAHA lists only the
//!    chips' sessions;
//! 6. one paced message (`Supervisor::send_text`: pacer, quota, outbox, seen and typing first),
//!    acked to READ by the simulated phone through signed webhooks and the real [`Ingest`]
//!    (`session_supervisor::Ingest`);
//! 7. a forged webhook, and correctly signed ones for foreign sessions, refused by that ingest
//!    (over HTTP, and with their typed outcome);
//! 8. a final table: 4 of 4 sessions, 4 of 4 QR codes, stale sessions removed.
//!
//! Every value in the [`QuickstartReport`] was measured during the run; [`QuickstartReport::check`]
//! holds it to the promises above, and [`run`] fails on the first broken one or when the run
//! passes [`QuickstartOptions::deadline`]. The crate's test `tests/quickstart.rs` plays the
//! scenario with [`play`] and checks the report against the simulators' own state.
//!
//! [`Ingest`]: session_supervisor::Ingest

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use container_pool::{PoolEvent, PoolEventKind};
use http::{HeaderMap, HeaderValue};
use qrcode::render::unicode::Dense1x2;
use session_supervisor::{
    ChangeFilter, ChangeItem, ChipChange, ChipChangeKind, ChipKey, ChipRecord, ChipSpec,
    Choreography, LoginKind, OutboxStatus, Phase, PhaseName, QrCode, QrFormat, SendRequest,
    Supervisor, SupervisorError,
};
use tenant_isolation::{ChipId, HmacKey, PacerConfig, PlanLimits, SessionName, TenantId};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use waha_client::webhook::{ALGORITHM_HEADER, MessageAck, SIGNATURE_HEADER, sign};
use waha_sim::{AckLevel, Me};

use crate::BoxError;
use crate::embedded::{Embedded, EmbeddedError, EmbeddedOptions};
use crate::progress::Progress;

/// Seed report 000's tenants.
pub const TENANTS: [&str; 2] = ["acme", "beta"];

/// Each tenant's chips.
pub const CHIPS: [&str; 2] = ["sales-1", "sales-2"];

/// The sessions an earlier container left on each tenant's reused volume (seed report 000).
pub const STALE_SESSIONS: [&str; 2] = ["chip_test_1", "default"];

/// The chat the quickstart's message goes to.
pub const CUSTOMER_CHAT: &str = "5511999990000@c.us";

/// The idempotency key of the quickstart's message.
pub const IDEMPOTENCY_KEY: &str = "quickstart-order-1";

/// Each tenant's plan: 2 chips, 2 running sessions, 100 sends a day.
pub const PLAN: PlanLimits = PlanLimits {
    max_chips: 2,
    max_running_sessions: 2,
    max_sends_per_day: 100,
};

const MESSAGE_TEXT: &str = "Olá! Seu pedido saiu para entrega.";

/// The PNG signature.
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// How often the chips' records are read again while waiting (events trigger reads too).
const POLL: Duration = Duration::from_millis(200);

/// How the quickstart runs. [`Default`] gives the values documented on each field.
#[derive(Clone, Debug)]
pub struct QuickstartOptions {
    /// The hard deadline of the whole run, shutdown included (60 s).
    pub deadline: Duration,
    /// The simulators' time scale (0.1: WAHA's 60 s first QR code lasts 6 s).
    pub time_scale: f64,
    /// How long each WAHA container answers 400 to session calls after it comes up, in
    /// wall-clock time (5 s: longer than a supervisor step may take, 4 s).
    pub booting: Duration,
    /// Where the QR codes' PNG files are written, created when missing (a directory under
    /// the system's temporary directory).
    pub output_dir: PathBuf,
}

impl Default for QuickstartOptions {
    fn default() -> Self {
        QuickstartOptions {
            deadline: Duration::from_secs(60),
            time_scale: 0.1,
            booting: Duration::from_secs(5),
            output_dir: std::env::temp_dir().join("chipfleet-quickstart"),
        }
    }
}

/// Why the quickstart failed. Carries no secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuickstartError {
    /// The embedded default could not be assembled, or refused an operation.
    #[error("embedded default: {0}")]
    Embedded(#[from] EmbeddedError),
    /// A step of the scenario failed.
    #[error("{step}: {source}")]
    Failed {
        /// The step.
        step: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The run went through but a promise does not hold.
    #[error("broken promise: {promise}")]
    Broken {
        /// What does not hold.
        promise: String,
    },
    /// The hard deadline passed.
    #[error("the hard deadline of {deadline:?} passed while {waiting_for}")]
    Deadline {
        /// The deadline.
        deadline: Duration,
        /// What the run was doing.
        waiting_for: String,
    },
}

impl QuickstartError {
    fn failed(step: impl Into<String>, source: impl Into<BoxError>) -> Self {
        QuickstartError::Failed {
            step: step.into(),
            source: source.into(),
        }
    }

    fn broken(promise: impl Into<String>) -> Self {
        QuickstartError::Broken {
            promise: promise.into(),
        }
    }
}

/// `map_err` for a step.
fn failed<E: Into<BoxError>>(step: &'static str) -> impl FnOnce(E) -> QuickstartError {
    move |error| QuickstartError::failed(step, error)
}

/// One chip, as the run measured it.
#[derive(Clone, Debug)]
pub struct ChipReport {
    /// The chip.
    pub key: ChipKey,
    /// Its WAHA session name.
    pub session: String,
    /// From the chip's creation to its QR window, by its record (after the booting window).
    pub qr_after: Duration,
    /// Where WAHA's QR PNG was written.
    pub qr_png: PathBuf,
    /// The PNG's size in bytes.
    pub qr_png_bytes: usize,
    /// The QR value's length in characters (the value itself is a credential: not kept).
    pub qr_value_chars: usize,
    /// The number the simulated phone scanned with (digits).
    pub phone: String,
    /// The account the record says the chip is logged in as.
    pub logged_in_as: Option<String>,
    /// From the chip's creation to WORKING, by its record.
    pub working_after: Duration,
    /// The chip's phase at the end.
    pub phase: PhaseName,
    /// Session creates WAHA accepted for it, by the simulator's call log.
    pub creates_accepted: usize,
}

/// One tenant, as the run measured it.
#[derive(Clone, Debug)]
pub struct TenantReport {
    /// The tenant.
    pub tenant: TenantId,
    /// Its container (the first one the supervisor's pool reported ready).
    pub container: Option<String>,
    /// What its session API answered right after the container passed its readiness checks
    /// (400 while WAHA boots).
    pub booting_status: Option<u16>,
    /// The sessions a container re-created on its volume found before the supervisor ran.
    pub stale_found: Vec<String>,
    /// The stale sessions whose delete the tenant's WAHA logged (the supervisor's sweeps:
    /// the one a ready container triggers, or the one the run asks for).
    pub stale_removed: Vec<String>,
    /// The sessions WAHA listed after the sweep.
    pub sessions_left: Vec<String>,
}

/// The paced message, as the run measured it.
#[derive(Clone, Debug)]
pub struct MessageReport {
    /// The chip that sent it.
    pub key: ChipKey,
    /// The chat it went to.
    pub chat: String,
    /// WhatsApp's message id.
    pub message_id: String,
    /// How long `send_text` took (the pacer's jitter and the choreography included).
    pub send_took: Duration,
    /// The calls WAHA logged for the send, in order (`route status`).
    pub calls: Vec<String>,
    /// The send's outbox status as `send_text` answered it.
    pub answered: OutboxStatus,
    /// The message statuses published from the ack webhooks, in order.
    pub acks: Vec<MessageAck>,
    /// The outbox status at the end.
    pub outbox: OutboxStatus,
}

/// One webhook the ingest should refuse, and what it did.
#[derive(Clone, Debug)]
pub struct RefusalReport {
    /// What was posted.
    pub what: String,
    /// The HTTP status the ingest answered over the wire.
    pub http_status: u16,
    /// The outcome's kind when the same delivery is handed to `Ingest::ingest`.
    pub outcome: &'static str,
    /// The kind expected.
    pub expected: &'static str,
}

/// What the quickstart measured: every field was read from the libraries or the simulators
/// during the run.
#[derive(Clone, Debug)]
pub struct QuickstartReport {
    /// The run's duration until the report (shutdown excluded).
    pub elapsed: Duration,
    /// The hard deadline.
    pub deadline: Duration,
    /// The booting window each container had.
    pub booting: Duration,
    /// The chips, by key.
    pub chips: Vec<ChipReport>,
    /// The tenants.
    pub tenants: Vec<TenantReport>,
    /// The refusal of a chip over the plan.
    pub quota_refusal: String,
    /// The paced message.
    pub message: MessageReport,
    /// The webhooks the ingest refused.
    pub refusals: Vec<RefusalReport>,
}

impl QuickstartReport {
    /// How many chips the scenario creates (tenants × chips).
    pub fn expected_chips() -> usize {
        TENANTS.len() * CHIPS.len()
    }

    /// Chips that ended WORKING.
    pub fn working_sessions(&self) -> usize {
        self.chips
            .iter()
            .filter(|chip| chip.phase == PhaseName::Working)
            .count()
    }

    /// Chips whose QR code was fetched (a PNG written and a terminal block shown).
    pub fn qr_codes(&self) -> usize {
        self.chips
            .iter()
            .filter(|chip| chip.qr_png_bytes > 0 && chip.qr_value_chars > 0)
            .count()
    }

    /// Whether every tenant's volume held stale sessions, WAHA deleted each of them, and none
    /// is left.
    pub fn stale_removed(&self) -> bool {
        !self.tenants.is_empty()
            && self.tenants.iter().all(|tenant| {
                !tenant.stale_found.is_empty()
                    && tenant.stale_found.iter().all(|stale| {
                        tenant.stale_removed.contains(stale)
                            && !tenant.sessions_left.contains(stale)
                    })
            })
    }

    /// Every promise of the quickstart, checked against the measured values.
    ///
    /// # Errors
    /// [`QuickstartError::Broken`] listing every promise that does not hold.
    pub fn check(&self) -> Result<(), QuickstartError> {
        let mut broken = Vec::new();
        let expected = Self::expected_chips();
        if self.working_sessions() != expected || self.chips.len() != expected {
            broken.push(format!(
                "{} of {expected} sessions WORKING",
                self.working_sessions()
            ));
        }
        if self.qr_codes() != expected {
            broken.push(format!("{} of {expected} QR codes", self.qr_codes()));
        }
        for chip in &self.chips {
            if chip.creates_accepted != 1 {
                broken.push(format!(
                    "{}: {} session creates accepted, not 1",
                    chip.key, chip.creates_accepted
                ));
            }
            if chip.qr_after < self.booting.mul_f64(0.8) {
                broken.push(format!(
                    "{}: its QR window opened {:?} after creation, inside the booting window of {:?}",
                    chip.key, chip.qr_after, self.booting
                ));
            }
            let phone = format!("{}@c.us", chip.phone);
            if chip.logged_in_as.as_deref() != Some(phone.as_str()) {
                broken.push(format!(
                    "{}: logged in as {:?}, not the phone that scanned ({phone})",
                    chip.key, chip.logged_in_as
                ));
            }
        }
        if self.tenants.len() != TENANTS.len() {
            broken.push(format!(
                "{} of {} tenants",
                self.tenants.len(),
                TENANTS.len()
            ));
        }
        for tenant in &self.tenants {
            if tenant.booting_status != Some(400) {
                broken.push(format!(
                    "{}: the session API answered {:?} right after the container came up, not 400 (booting)",
                    tenant.tenant, tenant.booting_status
                ));
            }
            let mut stale: Vec<String> = STALE_SESSIONS.iter().map(|s| (*s).to_owned()).collect();
            stale.sort();
            if tenant.stale_found != stale {
                broken.push(format!(
                    "{}: the reused volume held {:?}, not {stale:?}",
                    tenant.tenant, tenant.stale_found
                ));
            }
            let mut own: Vec<String> = self
                .chips
                .iter()
                .filter(|chip| chip.key.tenant == tenant.tenant)
                .map(|chip| chip.session.clone())
                .collect();
            own.sort();
            if tenant.sessions_left != own {
                broken.push(format!(
                    "{}: WAHA lists {:?} after the sweep, not exactly the chips' sessions {own:?}",
                    tenant.tenant, tenant.sessions_left
                ));
            }
        }
        if !self.stale_removed() {
            broken.push("the stale sessions were not all removed".to_owned());
        }
        if self.quota_refusal.is_empty() {
            broken.push("a chip over the plan was not refused".to_owned());
        }
        let read = OutboxStatus::Sent {
            ack: MessageAck::Read,
        };
        if self.message.outbox != read || self.message.acks.last() != Some(&MessageAck::Read) {
            broken.push(format!(
                "the message was not acked to READ (published {:?}, outbox {:?})",
                self.message.acks, self.message.outbox
            ));
        }
        if self.refusals.is_empty() {
            broken.push("no webhook was tried against the ingest".to_owned());
        }
        for refusal in &self.refusals {
            if refusal.outcome != refusal.expected || !(400..500).contains(&refusal.http_status) {
                broken.push(format!(
                    "{}: answered {} ({}), expected a refusal ({})",
                    refusal.what, refusal.http_status, refusal.outcome, refusal.expected
                ));
            }
        }
        if self.elapsed > self.deadline {
            broken.push(format!(
                "the run took {:?}, past its deadline of {:?}",
                self.elapsed, self.deadline
            ));
        }
        if broken.is_empty() {
            Ok(())
        } else {
            Err(QuickstartError::broken(broken.join("; ")))
        }
    }

    /// The final table, as printed at the end of the run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        table_row(
            &mut out,
            [
                "chip",
                "session",
                "QR after",
                "WORKING at",
                "logged in as",
                "creates",
                "QR PNG",
            ],
        );
        for chip in &self.chips {
            let key = chip.key.to_string();
            let qr_after = format!("{:.1} s", chip.qr_after.as_secs_f64());
            let working_after = format!("{:.1} s", chip.working_after.as_secs_f64());
            let creates = chip.creates_accepted.to_string();
            let png = format!("{} ({} bytes)", chip.qr_png.display(), chip.qr_png_bytes);
            table_row(
                &mut out,
                [
                    key.as_str(),
                    chip.session.as_str(),
                    qr_after.as_str(),
                    working_after.as_str(),
                    chip.logged_in_as.as_deref().unwrap_or("-"),
                    creates.as_str(),
                    png.as_str(),
                ],
            );
        }
        let expected = Self::expected_chips();
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "sessions WORKING   {} of {expected}",
            self.working_sessions()
        );
        let _ = writeln!(
            out,
            "QR codes           {} of {expected} (terminal blocks and PNG files)",
            self.qr_codes()
        );
        for tenant in &self.tenants {
            let _ = writeln!(
                out,
                "{:<18} booting: session API answered {} once /health was 200; stale: found {} on the reused volume, WAHA deleted {}; WAHA lists {}",
                tenant.tenant.to_string(),
                tenant
                    .booting_status
                    .map_or_else(|| "-".to_owned(), |status| status.to_string()),
                list(&tenant.stale_found),
                list(&tenant.stale_removed),
                list(&tenant.sessions_left)
            );
        }
        let _ = writeln!(
            out,
            "stale sessions     {}",
            if self.stale_removed() {
                "removed"
            } else {
                "NOT removed"
            }
        );
        let message = &self.message;
        let acks: Vec<String> = message.acks.iter().map(|ack| format!("{ack:?}")).collect();
        let _ = writeln!(
            out,
            "message            {} → {}: {} sent in {:.2} s ({}), acks {}; outbox {:?}",
            message.key,
            message.chat,
            message.message_id,
            message.send_took.as_secs_f64(),
            message.calls.join(", "),
            acks.join(" → "),
            message.outbox
        );
        for refusal in &self.refusals {
            let _ = writeln!(
                out,
                "webhook refused    {}: HTTP {} ({})",
                refusal.what, refusal.http_status, refusal.outcome
            );
        }
        let _ = writeln!(out, "quota              {}", self.quota_refusal);
        let _ = writeln!(
            out,
            "run time           {:.1} s (hard deadline {} s)",
            self.elapsed.as_secs_f64(),
            self.deadline.as_secs()
        );
        out
    }
}

/// One row of the chips' table.
fn table_row(out: &mut String, cells: [&str; 7]) {
    let [chip, session, qr_after, working_after, me, creates, png] = cells;
    let _ = writeln!(
        out,
        "{chip:<14} {session:<18} {qr_after:>9} {working_after:>11}  {me:<20} {creates:>7}  {png}"
    );
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "nothing".to_owned()
    } else {
        names.join(", ")
    }
}

/// A run that finished, with its world still running (for a test to inspect the simulators);
/// stop it with [`Embedded::shutdown`].
pub struct Finished {
    /// What the run measured.
    pub report: QuickstartReport,
    /// The embedded default it ran on, still running.
    pub world: Embedded,
}

/// Plays the quickstart, reporting to `progress` as it goes, then shuts the embedded default
/// down. The whole run, shutdown included, is held to [`QuickstartOptions::deadline`].
///
/// # Errors
/// [`QuickstartError`]: a step failed, a promise does not hold ([`QuickstartReport::check`]),
/// or the deadline passed.
pub async fn run(
    options: QuickstartOptions,
    progress: &dyn Progress,
) -> Result<QuickstartReport, QuickstartError> {
    let started = Instant::now();
    let deadline = options.deadline;
    let Finished { report, world } = play(options, progress).await?;
    progress.line("shutting down: the supervisor, the ingest, the simulators");
    let left = deadline.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, world.shutdown()).await {
        Ok(stopped) => {
            progress.line(&format!("stopped: {stopped}"));
            Ok(report)
        }
        Err(_) => Err(QuickstartError::Deadline {
            deadline,
            waiting_for: "the embedded default shut down".to_owned(),
        }),
    }
}

/// Plays the quickstart and answers its report with the world still running (see
/// [`Finished`]); [`run`] is this plus the shutdown. Held to [`QuickstartOptions::deadline`].
///
/// # Errors
/// As [`run`].
pub async fn play(
    options: QuickstartOptions,
    progress: &dyn Progress,
) -> Result<Finished, QuickstartError> {
    let deadline = options.deadline;
    let scenario = Scenario {
        options,
        progress,
        stage: Mutex::new("starting".to_owned()),
    };
    match tokio::time::timeout(deadline, scenario.play()).await {
        Ok(result) => result,
        Err(_) => Err(QuickstartError::Deadline {
            deadline,
            waiting_for: scenario.waiting_for(),
        }),
    }
}

/// What the run waits on: the tenants' chip changes and the pool's container events.
enum Happening {
    Chip(ChangeItem),
    Pool(PoolEvent),
    PoolLagged(u64),
}

/// A chip while the run waits for it to work.
struct ChipState {
    /// The digits of the number the simulated phone scans with.
    phone: String,
    /// The state last shown.
    shown: String,
    qr: Option<QrTaken>,
    /// The last reason the QR code or the scan was not available yet (shown once).
    waiting: Option<String>,
    scanned: bool,
    working: Option<Working>,
}

struct QrTaken {
    after: Duration,
    png: PathBuf,
    png_bytes: usize,
    value_chars: usize,
}

struct Working {
    after: Duration,
    me: Option<String>,
}

/// What the run saw of a tenant's container right after it was ready.
struct BootingSeen {
    container: String,
    status: Option<u16>,
}

struct Scenario<'a> {
    options: QuickstartOptions,
    progress: &'a dyn Progress,
    /// What the run is doing now (named when the deadline passes).
    stage: Mutex<String>,
}

impl Scenario<'_> {
    fn stage(&self, what: &str) {
        what.clone_into(&mut self.stage.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn waiting_for(&self) -> String {
        self.stage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn line(&self, text: &str) {
        self.progress.line(text);
    }

    async fn play(&self) -> Result<Finished, QuickstartError> {
        let started = Instant::now();
        let options = &self.options;

        // The embedded default, with seed report 000's booting WAHA.
        self.stage("assembling the embedded default");
        let pacer = PacerConfig {
            jitter_min: Duration::from_millis(300),
            jitter_max: Duration::from_millis(1_200),
            ..PacerConfig::default()
        };
        let mut world = Embedded::build(EmbeddedOptions {
            time_scale: options.time_scale,
            booting: Some(options.booting),
            automatic_acks: false,
            pacer,
            ..EmbeddedOptions::default()
        })
        .await?;
        self.line(&format!(
            "embedded default: WAHA simulators in process (time scale {}), in-memory tenant \
             directory, quota ledger, chip store, event bus, outbox and inbox; the webhook \
             ingest listens on http://{}/webhooks/{{tenant}}",
            options.time_scale,
            world.webhook_addr()
        ));
        std::fs::create_dir_all(&options.output_dir)
            .map_err(failed("creating the QR output directory"))?;

        // 1. Tenants.
        self.stage("creating the tenants");
        let tenants = TENANTS
            .iter()
            .map(|id| TenantId::new(*id))
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed("a tenant id"))?;
        let chip_ids = CHIPS
            .iter()
            .map(|id| ChipId::new(*id))
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed("a chip id"))?;
        for tenant in &tenants {
            let created = world.create_tenant(tenant, PLAN).await?;
            self.line(&format!(
                "tenant {} created ({:?}): plan of {} chips, {} running sessions, {} sends a \
                 day; secrets generated {:?}",
                created.id,
                created.status,
                created.limits.max_chips,
                created.limits.max_running_sessions,
                created.limits.max_sends_per_day,
                created.secrets
            ));
        }

        // 2. Reused volumes holding stale sessions.
        self.stage("leaving stale sessions on the tenants' volumes");
        let mut stale_found: BTreeMap<TenantId, Vec<String>> = BTreeMap::new();
        for tenant in &tenants {
            let found = world.seed_reused_volume(tenant, &STALE_SESSIONS).await?;
            self.line(&format!(
                "{tenant}: an earlier container left {} on the volume the tenant's next \
                 container mounts",
                list(&found)
            ));
            stale_found.insert(tenant.clone(), found);
        }

        // The supervisor, and what the run watches.
        self.stage("starting the supervisor");
        world.start().await?;
        let supervisor = world.supervisor().clone();
        self.line(&format!(
            "supervisor running; every WAHA container answers 400 to session calls for {:.1} s \
             after it comes up (seed report 000), longer than a step may take ({:.1} s)",
            options.booting.as_secs_f64(),
            supervisor.config().step_timeout.as_secs_f64()
        ));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut forwarders = JoinSet::new();
        for tenant in &tenants {
            let mut stream = supervisor
                .subscribe(tenant, ChangeFilter::all())
                .await
                .map_err(failed("subscribing to the chips' changes"))?;
            let tx = tx.clone();
            forwarders.spawn(async move {
                while let Some(item) = stream.next().await {
                    if tx.send(Happening::Chip(item)).is_err() {
                        return;
                    }
                }
            });
        }
        let mut pool_events = supervisor.pool().subscribe();
        forwarders.spawn(async move {
            loop {
                let happening = match pool_events.recv().await {
                    Ok(event) => Happening::Pool(event),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        Happening::PoolLagged(missed)
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(happening).is_err() {
                    return;
                }
            }
        });

        // 3. Chips, and one over the plan.
        self.stage("creating 2 chips per tenant");
        let mut chips: BTreeMap<ChipKey, ChipState> = BTreeMap::new();
        for tenant in &tenants {
            for chip in &chip_ids {
                let record = supervisor
                    .create_chip(tenant, chip, ChipSpec::qr())
                    .await
                    .map_err(|error| {
                        QuickstartError::failed(format!("creating chip {tenant}/{chip}"), error)
                    })?;
                let number = chips.len() + 1;
                self.progress.chip(&record.key.to_string(), "created");
                chips.insert(
                    record.key.clone(),
                    ChipState {
                        phone: format!("55119{number:08}"),
                        shown: "created".to_owned(),
                        qr: None,
                        waiting: None,
                        scanned: false,
                        working: None,
                    },
                );
            }
        }
        let quota_refusal = self.over_the_plan(&supervisor, &tenants).await?;

        // 4. Booting WAHA, QR codes, scans, WORKING.
        self.stage("waiting for 4 of 4 chips to reach WORKING (booting WAHA, QR codes, scans)");
        let mut booting: BTreeMap<TenantId, BootingSeen> = BTreeMap::new();
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        while chips.values().any(|state| state.working.is_none()) {
            tokio::select! {
                happening = rx.recv() => {
                    let Some(happening) = happening else {
                        return Err(QuickstartError::broken("the event streams ended"));
                    };
                    match happening {
                        Happening::Pool(event) => {
                            self.on_pool_event(&world, &event, &mut booting).await;
                        }
                        Happening::PoolLagged(missed) => {
                            self.line(&format!("missed {missed} container events"));
                        }
                        Happening::Chip(ChangeItem::Change(change)) => {
                            self.on_change(&change);
                            let key = ChipKey::new(change.tenant.clone(), change.chip.clone());
                            if let Some(state) = chips.get_mut(&key)
                                && state.working.is_none()
                            {
                                self.advance(&world, &key, state).await?;
                            }
                        }
                        Happening::Chip(ChangeItem::Gap { missed, .. }) => {
                            self.line(&format!(
                                "missed {missed} chip changes; the records are read again"
                            ));
                        }
                    }
                }
                _ = tick.tick() => {
                    for (key, state) in &mut chips {
                        if state.working.is_none() {
                            self.advance(&world, key, state).await?;
                        }
                    }
                }
            }
        }
        self.line("4 of 4 chips WORKING");

        // What the simulators logged for each chip.
        self.stage("reading the simulators' call logs");
        let mut chip_reports = Vec::new();
        for (key, state) in &chips {
            let session = key.session_name().as_str().to_owned();
            let control = world.control_for(&key.tenant).await.ok_or_else(|| {
                QuickstartError::broken(format!("no simulator runs for tenant {}", key.tenant))
            })?;
            let creates_accepted = control
                .calls_for(&session)
                .iter()
                .filter(|call| call.is_create() && call.status == 201)
                .count();
            let record = supervisor
                .get_chip(&key.tenant, &key.chip)
                .await
                .map_err(|error| QuickstartError::failed(format!("reading chip {key}"), error))?;
            let (Some(qr), Some(working)) = (&state.qr, &state.working) else {
                return Err(QuickstartError::broken(format!(
                    "{key} is WORKING without a QR code taken"
                )));
            };
            chip_reports.push(ChipReport {
                key: key.clone(),
                session,
                qr_after: qr.after,
                qr_png: qr.png.clone(),
                qr_png_bytes: qr.png_bytes,
                qr_value_chars: qr.value_chars,
                phone: state.phone.clone(),
                logged_in_as: working.me.clone(),
                working_after: working.after,
                phase: record.observed.phase.name(),
                creates_accepted,
            });
        }

        // 5. The stale sessions.
        self.stage("sweeping the stale sessions");
        let mut tenant_reports = Vec::new();
        for tenant in &tenants {
            let sweep = supervisor
                .sweep_stale_sessions(tenant)
                .await
                .ok_or_else(|| {
                    QuickstartError::broken(format!(
                        "this process does not own tenant {tenant}, so it cannot sweep it"
                    ))
                })?;
            let mut swept = sweep.removed_foreign.clone();
            swept.extend(sweep.removed_unowned.iter().cloned());
            swept.sort();
            let left = world.session_names(tenant).await?;
            // Which stale sessions the tenant's WAHA deleted, by its own call log (the
            // supervisor's sweep after the container came up, or the one just run).
            let found = stale_found.remove(tenant).unwrap_or_default();
            let control = world.control_for(tenant).await.ok_or_else(|| {
                QuickstartError::broken(format!("no simulator runs for tenant {tenant}"))
            })?;
            let deleted: Vec<String> = found
                .iter()
                .filter(|name| {
                    control
                        .calls_for(name.as_str())
                        .iter()
                        .any(|call| call.method == "DELETE" && (200..300).contains(&call.status))
                })
                .cloned()
                .collect();
            self.line(&format!(
                "{tenant}: the stale-session sweep run now removed {}; WAHA logged the deletes of {} and now lists {}",
                list(&swept),
                list(&deleted),
                list(&left)
            ));
            let seen = booting.remove(tenant);
            tenant_reports.push(TenantReport {
                tenant: tenant.clone(),
                container: seen.as_ref().map(|seen| seen.container.clone()),
                booting_status: seen.and_then(|seen| seen.status),
                stale_found: found,
                stale_removed: deleted,
                sessions_left: left,
            });
        }

        // 6. A paced message, acked to READ.
        let sender = chips
            .keys()
            .next()
            .cloned()
            .ok_or_else(|| QuickstartError::broken("no chip to send from"))?;
        let message = self.send_and_follow(&world, &sender, &mut rx).await?;

        // 7. Webhooks the ingest must refuse.
        self.stage("posting a forged webhook and webhooks for foreign sessions");
        let refusals = self.refusals(&world, &tenants, &chip_ids).await?;

        // 8. The table.
        drop(forwarders);
        let report = QuickstartReport {
            elapsed: started.elapsed(),
            deadline: options.deadline,
            booting: options.booting,
            chips: chip_reports,
            tenants: tenant_reports,
            quota_refusal,
            message,
            refusals,
        };
        self.progress.block("result", &report.table());
        report.check()?;
        Ok(Finished { report, world })
    }

    /// A third chip for the first tenant, on a plan of 2: refused, naming the limit.
    async fn over_the_plan(
        &self,
        supervisor: &Supervisor,
        tenants: &[TenantId],
    ) -> Result<String, QuickstartError> {
        let tenant = tenants
            .first()
            .ok_or_else(|| QuickstartError::broken("no tenant"))?;
        let extra = ChipId::new("sales-3").map_err(failed("a chip id"))?;
        match supervisor.create_chip(tenant, &extra, ChipSpec::qr()).await {
            Err(refused @ SupervisorError::QuotaExceeded { .. }) => {
                let refusal = refused.to_string();
                self.line(&format!("a third chip for {tenant} is refused: {refusal}"));
                Ok(refusal)
            }
            Err(other) => Err(QuickstartError::failed(
                format!("creating a third chip for {tenant}"),
                other,
            )),
            Ok(record) => Err(QuickstartError::broken(format!(
                "a third chip ({}) was admitted on a plan of {} chips",
                record.key, PLAN.max_chips
            ))),
        }
    }

    /// Shows a container event; right after a container is first ready, asks its session API
    /// what it answers (400 while WAHA boots).
    async fn on_pool_event(
        &self,
        world: &Embedded,
        event: &PoolEvent,
        booting: &mut BTreeMap<TenantId, BootingSeen>,
    ) {
        let who = format!("{}: container {}", event.tenant, event.container);
        match &event.kind {
            PoolEventKind::Creating => self.line(&format!("{who} is being created")),
            PoolEventKind::Starting => self.line(&format!("{who} is starting")),
            PoolEventKind::WaitingForHealth { elapsed, check, .. } => self.line(&format!(
                "{who}: waiting for its {check:?} check ({:.1} s)",
                elapsed.as_secs_f64()
            )),
            PoolEventKind::Ready { took } => {
                // Every `ensure` of a running container reports it ready again: shown once.
                if booting.contains_key(&event.tenant) {
                    return;
                }
                self.line(&format!(
                    "{who} passed its readiness checks in {:.2} s (/health answers 200)",
                    took.as_secs_f64()
                ));
                let status = match world
                    .probe_session_api(&event.tenant, &event.container)
                    .await
                {
                    Ok(400) => {
                        self.line(&format!(
                            "{who}: yet its session API answers 400 Bad Request: WAHA is still \
                             booting (seed report 000); the supervisor reads again until it \
                             answers, and creates nothing meanwhile"
                        ));
                        Some(400)
                    }
                    Ok(status) => {
                        self.line(&format!("{who}: its session API answers {status}"));
                        Some(status)
                    }
                    Err(error) => {
                        self.line(&format!(
                            "{who}: its session API could not be probed: {error}"
                        ));
                        None
                    }
                };
                booting.insert(
                    event.tenant.clone(),
                    BootingSeen {
                        container: event.container.clone(),
                        status,
                    },
                );
            }
            PoolEventKind::Failed { error, reason } => {
                self.line(&format!("{who} failed ({error}): {reason}"));
            }
            PoolEventKind::Removed { reason } => {
                self.line(&format!("{who} was removed: {reason}"));
            }
            PoolEventKind::Stopped => self.line(&format!("{who} was stopped (idle)")),
            other => self.line(&format!("{who}: {other:?}")),
        }
    }

    /// Shows the chip changes worth a line (phases show on the chip's own row).
    fn on_change(&self, change: &ChipChange) {
        let chip = format!("{}/{}", change.tenant, change.chip);
        match &change.kind {
            ChipChangeKind::Created | ChipChangeKind::PhaseChanged { .. } => {}
            ChipChangeKind::QrAvailable { .. } => {
                self.line(&format!("{chip}: WAHA offers a QR code"));
            }
            ChipChangeKind::LoggedIn { me } => {
                self.line(&format!("{chip}: logged in as {}", me.id));
            }
            ChipChangeKind::BackingOff {
                reason, attempt, ..
            } => self.line(&format!(
                "{chip}: backing off ({}, attempt {attempt})",
                reason.as_str()
            )),
            ChipChangeKind::StepFailed { step, reason, kind } => self.line(&format!(
                "{chip}: step {} failed: {} ({kind})",
                step.as_str(),
                reason.as_str()
            )),
            ChipChangeKind::Parked { reason } => {
                self.line(&format!("{chip}: parked ({})", reason.as_str()));
            }
            ChipChangeKind::LoginExpired => {
                self.line(&format!("{chip}: its QR window ran out"));
            }
            ChipChangeKind::MessageStatus {
                message_id, ack, ..
            } => self.line(&format!(
                "{chip}: message {message_id} is now {ack:?} (a signed message.ack webhook, \
                 through the ingest)"
            )),
            other => self.line(&format!("{chip}: {other:?}")),
        }
    }

    /// Reads the chip's record, shows its state, and does what it waits for: takes the QR
    /// code, lets the simulated phone scan it, notes WORKING.
    async fn advance(
        &self,
        world: &Embedded,
        key: &ChipKey,
        state: &mut ChipState,
    ) -> Result<(), QuickstartError> {
        let record = world
            .supervisor()
            .get_chip(&key.tenant, &key.chip)
            .await
            .map_err(|error| QuickstartError::failed(format!("reading chip {key}"), error))?;
        let shown = describe(&record);
        if shown != state.shown {
            self.progress.chip(&key.to_string(), &shown);
            state.shown = shown;
        }
        match record.observed.phase {
            Phase::AwaitingLogin {
                method: LoginKind::Qr,
                since,
            } => {
                if state.qr.is_none() {
                    let after = since.duration_since(record.created_at).unwrap_or_default();
                    self.take_qr(world, key, after, state).await?;
                }
                if state.qr.is_some() && !state.scanned {
                    self.scan(world, key, state).await;
                }
            }
            Phase::Working { since } => {
                state.working = Some(Working {
                    after: since.duration_since(record.created_at).unwrap_or_default(),
                    me: record.observed.me.as_ref().map(|me| me.id.clone()),
                });
            }
            Phase::Parked { reason, .. } => {
                return Err(QuickstartError::broken(format!(
                    "{key} was parked ({}): {}",
                    reason.as_str(),
                    state.shown
                )));
            }
            Phase::LoginExpired { .. } => {
                return Err(QuickstartError::broken(format!(
                    "{key}: its QR window ran out before the scan"
                )));
            }
            _ => {}
        }
        Ok(())
    }

    /// Shows once why the chip is not ready for its next move yet.
    fn waiting(&self, key: &ChipKey, state: &mut ChipState, why: String) {
        if state.waiting.as_deref() != Some(why.as_str()) {
            self.line(&format!("{key}: {why}"));
            state.waiting = Some(why);
        }
    }

    /// Fetches the chip's QR code (raw and PNG) through the supervisor, writes the PNG, shows
    /// the code as a terminal block. A QR code not available yet is tried again later.
    async fn take_qr(
        &self,
        world: &Embedded,
        key: &ChipKey,
        after: Duration,
        state: &mut ChipState,
    ) -> Result<(), QuickstartError> {
        let supervisor = world.supervisor();
        let value = match supervisor.qr(&key.tenant, &key.chip, QrFormat::Raw).await {
            Ok(QrCode::Raw(value)) => value.value,
            Ok(QrCode::Png(_)) => {
                return Err(QuickstartError::broken(format!(
                    "{key}: a PNG answered a request for the raw QR value"
                )));
            }
            Err(error) => {
                self.waiting(key, state, format!("no QR code yet: {error}"));
                return Ok(());
            }
        };
        let png = match supervisor.qr(&key.tenant, &key.chip, QrFormat::Png).await {
            Ok(QrCode::Png(bytes)) => bytes,
            Ok(QrCode::Raw(_)) => {
                return Err(QuickstartError::broken(format!(
                    "{key}: a raw value answered a request for the QR PNG"
                )));
            }
            Err(error) => {
                self.waiting(key, state, format!("no QR PNG yet: {error}"));
                return Ok(());
            }
        };
        if !png.starts_with(PNG_MAGIC) || png.len() <= PNG_MAGIC.len() {
            return Err(QuickstartError::broken(format!(
                "{key}: WAHA's QR image ({} bytes) is not a PNG",
                png.len()
            )));
        }
        let path = self
            .options
            .output_dir
            .join(format!("{}-{}.png", key.tenant, key.chip));
        tokio::fs::write(&path, &png).await.map_err(|error| {
            QuickstartError::failed(format!("writing {}", path.display()), error)
        })?;
        let block = qr_block(&value).map_err(|error| {
            QuickstartError::failed(format!("{key}: rendering its QR code"), error)
        })?;
        self.progress.block(
            &format!(
                "{key}: QR code, {:.1} s after the chip was created (WAHA's PNG: {}, {} bytes)",
                after.as_secs_f64(),
                path.display(),
                png.len()
            ),
            &block,
        );
        state.qr = Some(QrTaken {
            after,
            png: path,
            png_bytes: png.len(),
            value_chars: value.chars().count(),
        });
        Ok(())
    }

    /// The simulated phone scans the chip's QR code (tried again later when WAHA is between
    /// two codes).
    async fn scan(&self, world: &Embedded, key: &ChipKey, state: &mut ChipState) {
        let Some(control) = world.control_for(&key.tenant).await else {
            self.waiting(
                key,
                state,
                "no simulator runs for its tenant yet".to_owned(),
            );
            return;
        };
        let session = key.session_name();
        let me = Me::phone(&state.phone, &format!("{} {}", key.tenant, key.chip));
        match control.scan_as(session.as_str(), me) {
            Ok(()) => {
                state.scanned = true;
                self.line(&format!(
                    "{key}: a simulated phone (+{}) scanned the QR code",
                    state.phone
                ));
            }
            Err(error) => self.waiting(key, state, format!("the scan did not take: {error}")),
        }
    }

    /// Sends one paced message from `sender`, has the simulated phone report it delivered
    /// and read, and follows the acks through the ingest to the outbox.
    async fn send_and_follow(
        &self,
        world: &Embedded,
        sender: &ChipKey,
        rx: &mut mpsc::UnboundedReceiver<Happening>,
    ) -> Result<MessageReport, QuickstartError> {
        self.stage("sending a paced message");
        let supervisor = world.supervisor();
        let control = world.control_for(&sender.tenant).await.ok_or_else(|| {
            QuickstartError::broken(format!("no simulator runs for tenant {}", sender.tenant))
        })?;
        let session = sender.session_name().as_str().to_owned();
        let mark = control
            .calls_for(&session)
            .last()
            .map_or(0, |call| call.seq);
        let choreography = Choreography {
            seen: true,
            typing_per_char: Duration::from_millis(20),
            typing_min: Duration::from_millis(300),
            typing_max: Duration::from_millis(1_500),
        };
        self.line(&format!(
            "{sender}: Supervisor::send_text to {CUSTOMER_CHAT} (key {IDEMPOTENCY_KEY}): the \
             pacer, the daily quota and the outbox first, then seen, typing, send"
        ));
        let sending = Instant::now();
        let receipt = supervisor
            .send_text(
                &sender.tenant,
                &sender.chip,
                SendRequest::new(CUSTOMER_CHAT, MESSAGE_TEXT, IDEMPOTENCY_KEY)
                    .with_choreography(Some(choreography))
                    .with_max_wait(Duration::from_secs(20)),
            )
            .await
            .map_err(|error| QuickstartError::failed(format!("{sender}: send_text"), error))?;
        let send_took = sending.elapsed();
        let message_id = receipt.message_id.clone().ok_or_else(|| {
            QuickstartError::broken("WAHA answered sendText without a message id")
        })?;
        let calls: Vec<String> = control
            .calls_for(&session)
            .into_iter()
            .filter(|call| call.seq > mark)
            .map(|call| format!("{} {}", call.route, call.status))
            .collect();
        self.line(&format!(
            "{sender}: sent as {message_id} in {:.2} s (the pacer's jitter and typing included); \
             WAHA received {}; the outbox says {:?}",
            send_took.as_secs_f64(),
            calls.join(", "),
            receipt.status
        ));

        self.stage("waiting for the message's acks (DEVICE, then READ)");
        let mut acks = Vec::new();
        for (level, wanted, what) in [
            (AckLevel::Device, MessageAck::Device, "delivered"),
            (AckLevel::Read, MessageAck::Read, "read"),
        ] {
            control.ack(&message_id, level).map_err(|error| {
                QuickstartError::failed(format!("the simulated phone acking {message_id}"), error)
            })?;
            self.line(&format!(
                "the phone of {CUSTOMER_CHAT} reports the message {what}"
            ));
            loop {
                let happening = rx
                    .recv()
                    .await
                    .ok_or_else(|| QuickstartError::broken("the event streams ended"))?;
                let Happening::Chip(ChangeItem::Change(change)) = happening else {
                    continue;
                };
                self.on_change(&change);
                if let ChipChangeKind::MessageStatus {
                    message_id: id,
                    ack,
                    ..
                } = &change.kind
                    && *id == message_id
                {
                    acks.push(*ack);
                    if *ack == wanted {
                        break;
                    }
                }
            }
        }
        let outbox = supervisor
            .outbox()
            .by_message_id(&sender.tenant, &message_id)
            .await
            .map_err(failed("reading the outbox"))?
            .ok_or_else(|| QuickstartError::broken("the outbox has no record of the message"))?
            .status;
        self.line(&format!("outbox record of {IDEMPOTENCY_KEY}: {outbox:?}"));
        Ok(MessageReport {
            key: sender.clone(),
            chat: CUSTOMER_CHAT.to_owned(),
            message_id,
            send_took,
            calls,
            answered: receipt.status,
            acks,
            outbox,
        })
    }

    /// Posts webhooks the ingest must refuse to the first tenant's URL, over HTTP, and hands
    /// the same deliveries to `Ingest::ingest` for their typed outcome.
    async fn refusals(
        &self,
        world: &Embedded,
        tenants: &[TenantId],
        chips: &[ChipId],
    ) -> Result<Vec<RefusalReport>, QuickstartError> {
        let (Some(first), Some(second), Some(chip)) =
            (tenants.first(), tenants.get(1), chips.first())
        else {
            return Err(QuickstartError::broken("two tenants and a chip are needed"));
        };
        let key = world
            .directory()
            .get(first)
            .await
            .map_err(failed("reading the tenant's webhook key"))?
            .secrets
            .webhook_hmac_key;
        let not_the_key = HmacKey::generate().map_err(failed("a random key"))?;
        let own = SessionName::new(first, chip).as_str().to_owned();
        let others = SessionName::new(second, chip).as_str().to_owned();
        let cases = [
            (
                format!("forged: {own} signed with a key that is not {first}'s"),
                own,
                (first, chip),
                not_the_key,
                "bad_signature",
            ),
            (
                format!("foreign session chip_test_1, signed with {first}'s key"),
                "chip_test_1".to_owned(),
                (first, chip),
                key.clone(),
                "foreign_session",
            ),
            (
                format!("{second}'s session {others} at {first}'s URL, signed with {first}'s key"),
                others,
                (second, chip),
                key,
                "foreign_session",
            ),
        ];
        let mut reports = Vec::new();
        for (what, session, (meta_tenant, meta_chip), signing_key, expected) in cases {
            let body = webhook_body(&session, meta_tenant, meta_chip);
            let signature = sign(&signing_key, &body);
            let http_status = world.post_webhook(first, &body, &signature).await?;
            let mut headers = HeaderMap::new();
            headers.insert(
                SIGNATURE_HEADER,
                HeaderValue::from_str(&signature).map_err(failed("a signature header"))?,
            );
            headers.insert(ALGORITHM_HEADER, HeaderValue::from_static("sha512"));
            let outcome = world.ingest().ingest(first.as_str(), &headers, &body).await;
            self.line(&format!(
                "webhook {what}: HTTP {http_status}; Ingest::ingest answers {} ({})",
                outcome.kind(),
                outcome.http_status()
            ));
            reports.push(RefusalReport {
                what,
                http_status,
                outcome: outcome.kind(),
                expected,
            });
        }
        Ok(reports)
    }
}

/// A chip's state in a few words, from its record.
fn describe(record: &ChipRecord) -> String {
    let mut text = match record.observed.phase {
        Phase::Pending => "pending".to_owned(),
        Phase::Provisioning { next } => format!("provisioning, next step {}", next.as_str()),
        Phase::AwaitingLogin {
            method: LoginKind::Qr,
            ..
        } => "awaiting login: QR code".to_owned(),
        Phase::AwaitingLogin { .. } => "awaiting login".to_owned(),
        Phase::Working { .. } => "WORKING".to_owned(),
        Phase::BackingOff {
            reason, attempt, ..
        } => format!("backing off: {} (attempt {attempt})", reason.as_str()),
        other => other.name().as_str().to_owned(),
    };
    if !matches!(record.observed.phase, Phase::Working { .. })
        && let Some(error) = &record.observed.last_error
    {
        let _ = write!(
            text,
            "; last error {} ({})",
            error.reason.as_str(),
            error.kind
        );
    }
    text
}

/// The QR code as a block of text to scan in a terminal: two modules per character, light
/// modules drawn, for a dark terminal background.
fn qr_block(value: &str) -> Result<String, qrcode::types::QrError> {
    let code = qrcode::QrCode::new(value.as_bytes())?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// A `session.status` webhook about `session`, as WAHA sends one (the signature is added by
/// the caller).
fn webhook_body(session: &str, tenant: &TenantId, chip: &ChipId) -> Vec<u8> {
    let now = now_ms();
    serde_json::json!({
        "id": format!("evt_quickstart_{now}"),
        "timestamp": now,
        "event": "session.status",
        "session": session,
        "metadata": { "tenant": tenant.as_str(), "chip": chip.as_str() },
        "me": null,
        "engine": "NOWEB",
        "payload": { "name": session, "status": "WORKING" },
    })
    .to_string()
    .into_bytes()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}
