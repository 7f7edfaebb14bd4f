//! The chip record: what the host asked for ([`Desired`]) and what the owner saw and did
//! ([`Observed`]), each with its own version, plus a bounded log of recent steps.
//!
//! Secrets are never stored here: the container key and the webhook HMAC key are read from
//! the tenant directory when an effect needs them, and QR values are fetched from WAHA on
//! demand. The one exception is a pairing code on offer, held in [`PairingCodeSecret`]
//! (redacted in `Debug` and `Display`) and dropped by the first write after it expires.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, SystemTime};

use container_pool::{ContainerId, Engine};
use proxy_allocator::{CountryCode, EndpointId, ProxyLease};
use serde::{Deserialize, Serialize};
use tenant_isolation::{ChipId, SessionName, TenantId};
use url::Url;
use waha_client::{Me, SessionStatus};

use crate::phase::{LoginKind, Phase};
use crate::policy::Reason;
use crate::reconcile::StepKind;

/// A chip's identity: the tenant and the host's id for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChipKey {
    /// The tenant.
    pub tenant: TenantId,
    /// The chip, unique within its tenant.
    pub chip: ChipId,
}

impl ChipKey {
    /// The key of `chip` of `tenant`.
    pub fn new(tenant: TenantId, chip: ChipId) -> Self {
        ChipKey { tenant, chip }
    }

    /// The chip's WAHA session name, `cf_<tenant>_<chip>`.
    pub fn session_name(&self) -> SessionName {
        SessionName::new(&self.tenant, &self.chip)
    }
}

impl fmt::Display for ChipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.chip)
    }
}

/// Why a phone number was refused. The number itself is not repeated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidPhoneNumber {
    /// Not 5 to 15 digits.
    #[error("a phone number has 5 to 15 digits, country code first; this one has {len}")]
    Length {
        /// The number of characters after an optional leading `+`.
        len: usize,
    },
    /// Something else than digits (after an optional leading `+`).
    #[error("a phone number is digits only, country code first (an optional leading '+')")]
    NotDigits,
    /// A leading 0: the country code is missing.
    #[error("a phone number starts with its country code, never with 0")]
    LeadingZero,
}

/// A phone number for a pairing code: 5 to 15 digits, country code first, as WAHA wants it
/// (a leading `+` is accepted and dropped; spaces, dashes and a leading 0 are refused).
///
/// `Debug` shows only the last two digits (`PhoneNumber("…01")`): records, specs and errors
/// are logged, a customer's number is not.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail = &self.0[self.0.len().saturating_sub(2)..];
        write!(f, "PhoneNumber(\"…{tail}\")")
    }
}

impl PhoneNumber {
    /// The fewest digits.
    pub const MIN_DIGITS: usize = 5;
    /// The most digits (E.164).
    pub const MAX_DIGITS: usize = 15;

    /// Validates a phone number.
    ///
    /// # Errors
    /// [`InvalidPhoneNumber`] says what is wrong, without repeating the number.
    pub fn new(input: &str) -> Result<Self, InvalidPhoneNumber> {
        let digits = input.strip_prefix('+').unwrap_or(input);
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidPhoneNumber::NotDigits);
        }
        if !(Self::MIN_DIGITS..=Self::MAX_DIGITS).contains(&digits.len()) {
            return Err(InvalidPhoneNumber::Length { len: digits.len() });
        }
        if digits.starts_with('0') {
            return Err(InvalidPhoneNumber::LeadingZero);
        }
        Ok(PhoneNumber(digits.to_owned()))
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = InvalidPhoneNumber;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        PhoneNumber::new(&value)
    }
}

impl From<PhoneNumber> for String {
    fn from(phone: PhoneNumber) -> String {
        phone.0
    }
}

/// How the phone logs in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum LoginMethod {
    /// Scan a QR code.
    Qr,
    /// Enter a pairing code that WAHA issues for this number.
    PairingCode {
        /// The number being paired.
        phone: PhoneNumber,
    },
}

impl LoginMethod {
    /// The kind of login window this method opens.
    pub fn kind(&self) -> LoginKind {
        match self {
            LoginMethod::Qr => LoginKind::Qr,
            LoginMethod::PairingCode { .. } => LoginKind::PairingCode,
        }
    }
}

/// What the host wants of the chip's proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyWish {
    /// The country the traffic should leave from (`None`: the phone number's country, or any).
    pub country: Option<CountryCode>,
    /// Labels an endpoint must carry.
    pub labels: BTreeSet<String>,
}

/// What the host asked for; compared field by field for create idempotence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChipSpec {
    /// The engine (`None`: the pool's; another one than the pool's is an invalid spec).
    #[serde(with = "engine_name")]
    pub engine: Option<Engine>,
    /// How the phone logs in.
    pub login: LoginMethod,
    /// Proxy country and labels.
    pub proxy: ProxyWish,
    /// The host's own tags; never sent to WAHA.
    pub host_labels: BTreeMap<String, String>,
}

impl ChipSpec {
    /// A chip that logs in by QR code, on the pool's engine, with any proxy.
    pub fn qr() -> Self {
        ChipSpec {
            engine: None,
            login: LoginMethod::Qr,
            proxy: ProxyWish::default(),
            host_labels: BTreeMap::new(),
        }
    }

    /// A chip that logs in with a pairing code for `phone`.
    pub fn pairing_code(phone: PhoneNumber) -> Self {
        ChipSpec {
            login: LoginMethod::PairingCode { phone },
            ..ChipSpec::qr()
        }
    }
}

/// Whether the chip should run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Running (provisioned, logged in, kept working).
    Running,
    /// Stopped by the host.
    Stopped,
    /// Deleted by the host: the finalizers run, then the record goes.
    Deleted,
}

/// Counters the host bumps to ask for an action once (kube's "generation" for one-shot
/// requests); the owner records the values it has acted on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Nonces {
    /// Bumped by a restart.
    pub restart: u32,
    /// Bumped by a log-out.
    pub logout: u32,
    /// Bumped by a start or restart out of `LoginExpired` or `Parked` (a new login window).
    pub login: u32,
}

/// What the host asked for. Written by API calls on any replica, compare-and-set on
/// `desired_version`; not fenced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// The chip's specification.
    pub spec: ChipSpec,
    /// Run, stop or delete.
    pub run: RunState,
    /// One-shot requests.
    pub nonces: Nonces,
}

impl Desired {
    /// A running chip with `spec`.
    pub fn new(spec: ChipSpec) -> Self {
        Desired {
            spec,
            run: RunState::Running,
            nonces: Nonces::default(),
        }
    }

    /// Asks for a restart.
    pub fn request_restart(&mut self) {
        self.nonces.restart = self.nonces.restart.wrapping_add(1);
    }

    /// Asks for a log-out (the next login needs a new QR scan or pairing code).
    pub fn request_logout(&mut self) {
        self.nonces.logout = self.nonces.logout.wrapping_add(1);
    }

    /// Asks for a new login window (a start or restart out of `LoginExpired` or `Parked`).
    pub fn request_login(&mut self) {
        self.nonces.login = self.nonces.login.wrapping_add(1);
    }
}

/// The tenant container a chip's session lives in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRef {
    /// The container's name.
    pub name: String,
    /// The runtime's id.
    #[serde(with = "container_id")]
    pub id: ContainerId,
    /// WAHA's base URL.
    pub base_url: Url,
    /// When it was last found ready.
    pub ready_at: SystemTime,
}

/// The chip's proxy lease, as far as the record needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyRef {
    /// The endpoint.
    pub endpoint: EndpointId,
    /// The lease generation (reports name it; a rotation bumps it).
    pub generation: u64,
}

impl From<&ProxyLease> for ProxyRef {
    fn from(lease: &ProxyLease) -> Self {
        ProxyRef {
            endpoint: lease.endpoint.clone(),
            generation: lease.generation,
        }
    }
}

/// The WAHA session as last ensured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRef {
    /// The session name.
    pub name: SessionName,
    /// The proxy generation its configuration carries.
    pub proxy_generation: u64,
    /// When it was ensured.
    pub ensured_at: SystemTime,
}

/// The session status WAHA last reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WahaSeen {
    /// The status.
    pub status: SessionStatus,
    /// Since when WAHA has reported this status (as far as the owner saw).
    pub since: SystemTime,
    /// When it was last read.
    pub read_at: SystemTime,
}

/// A pairing code, redacted in `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PairingCodeSecret(String);

impl PairingCodeSecret {
    /// Wraps a code WAHA issued.
    pub fn new(code: impl Into<String>) -> Self {
        PairingCodeSecret(code.into())
    }

    /// The code, to show to the person holding the phone.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PairingCodeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PairingCodeSecret(<redacted>)")
    }
}

impl fmt::Display for PairingCodeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The login on offer while a chip awaits login. QR values are never stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "offer", rename_all = "snake_case")]
pub enum LoginOffer {
    /// WAHA shows QR codes (fetch them with `qr()`).
    Qr {
        /// When the QR window was first seen.
        window_started_at: SystemTime,
    },
    /// A pairing code was requested in this login window (never twice by itself).
    PairingCode {
        /// The code, until it expires.
        code: Option<PairingCodeSecret>,
        /// When it was requested.
        requested_at: SystemTime,
        /// When it stops being offered.
        expires_at: SystemTime,
    },
}

impl LoginOffer {
    /// The offer as a write at `now` keeps it: an expired pairing code is dropped (the fact
    /// that one was requested stays).
    pub fn scrubbed(self, now: SystemTime) -> Self {
        match self {
            LoginOffer::PairingCode {
                requested_at,
                expires_at,
                ..
            } if now >= expires_at => LoginOffer::PairingCode {
                code: None,
                requested_at,
                expires_at,
            },
            other => other,
        }
    }

    /// The pairing code, if one is on offer at `now`.
    pub fn live_pairing_code(&self, now: SystemTime) -> Option<&PairingCodeSecret> {
        match self {
            LoginOffer::PairingCode {
                code: Some(code),
                expires_at,
                ..
            } if now < *expires_at => Some(code),
            _ => None,
        }
    }
}

/// The last failure of a chip and how many attempts its run of failures has taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// Why.
    pub reason: Reason,
    /// The sibling crate's error kind (or the reason's name for engine signals).
    pub kind: String,
    /// Details for humans (never a secret).
    pub detail: String,
    /// Which attempt of the current run of failures this was (1 for the first).
    pub attempt: u32,
    /// When the run of failures began.
    pub first_at: SystemTime,
    /// When this failure was recorded.
    pub at: SystemTime,
}

/// One failure in the loop-detection window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureMark {
    /// When.
    pub at: SystemTime,
    /// Why.
    pub reason: Reason,
}

/// The last 16 session failures (loop detection).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureWindow {
    marks: VecDeque<FailureMark>,
}

impl FailureWindow {
    /// How many failures are kept.
    pub const CAPACITY: usize = 16;

    /// Records a failure, dropping the oldest beyond [`FailureWindow::CAPACITY`].
    pub fn record(&mut self, at: SystemTime, reason: Reason) {
        if self.marks.len() == Self::CAPACITY {
            self.marks.pop_front();
        }
        self.marks.push_back(FailureMark { at, reason });
    }

    /// How many kept failures happened at or after `since`.
    pub fn count_since(&self, since: SystemTime) -> usize {
        self.marks.iter().filter(|mark| mark.at >= since).count()
    }

    /// The kept failures, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &FailureMark> {
        self.marks.iter()
    }

    /// Forgets every failure (a host restart starts afresh).
    pub fn clear(&mut self) {
        self.marks.clear();
    }
}

/// What the owner saw and did. Written only by the tenant's owner, fenced, compare-and-set on
/// `observed_version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// The phase.
    pub phase: Phase,
    /// The `desired_version` the last step was decided from.
    pub acted_on: u64,
    /// The one-shot requests already acted on.
    pub applied: Nonces,
    /// The quota's chip slot is held.
    pub chip_slot: bool,
    /// The quota's running-session slot is held.
    pub running_slot: bool,
    /// The send pacer was told the chip is active.
    pub pacer_activated: bool,
    /// The container slot: set once, never moved (the login lives in its volume).
    pub placement: Option<u32>,
    /// The container, as last ensured.
    pub container: Option<ContainerRef>,
    /// The proxy lease, as last leased.
    pub proxy: Option<ProxyRef>,
    /// The WAHA session, as last ensured.
    pub session: Option<SessionRef>,
    /// The status WAHA last reported.
    pub waha: Option<WahaSeen>,
    /// The login on offer.
    pub login: Option<LoginOffer>,
    /// The account, once logged in.
    pub me: Option<Me>,
    /// The last failure.
    pub last_error: Option<LastError>,
    /// When the next try is due (mirrors [`Phase::BackingOff`]; also a failed finalizer's).
    pub next_try: Option<SystemTime>,
    /// Recent session failures.
    pub failures: FailureWindow,
    /// The last event of this session (silent-death detection).
    pub last_event_at: Option<SystemTime>,
    /// Probes in a row that found the session working but silent.
    pub silent_probes: u32,
    /// The highest signal sequence number folded into this record.
    pub signals_applied: u64,
    /// Temporary bans within the ban memory.
    pub temp_bans: Vec<SystemTime>,
    /// When the last temporary ban ended (its expiry with the jitter): a report of a ban
    /// observed before then is that ban again, never a second one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ban_until: Option<SystemTime>,
}

impl Observed {
    /// The observed state of a chip just recorded: [`Phase::Pending`], holding its chip slot
    /// when `chip_slot`.
    pub fn pending(chip_slot: bool) -> Self {
        Observed {
            phase: Phase::Pending,
            acted_on: 0,
            applied: Nonces::default(),
            chip_slot,
            running_slot: false,
            pacer_activated: false,
            placement: None,
            container: None,
            proxy: None,
            session: None,
            waha: None,
            login: None,
            me: None,
            last_error: None,
            next_try: None,
            failures: FailureWindow::default(),
            last_event_at: None,
            silent_probes: 0,
            signals_applied: 0,
            temp_bans: Vec::new(),
            ban_until: None,
        }
    }
}

/// How a step ended, in the step log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum StepOutcome {
    /// It succeeded.
    Succeeded,
    /// It failed.
    Failed {
        /// Why.
        reason: Reason,
        /// The error's kind.
        kind: String,
    },
}

/// One entry of the step log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepEntry {
    /// The entry's number within the chip's log (assigned by [`StepLog::push`]).
    pub seq: u64,
    /// The step.
    pub step: StepKind,
    /// How it ended.
    pub outcome: StepOutcome,
    /// When it was decided.
    pub at: SystemTime,
    /// How long its effect took.
    pub took: Duration,
    /// The fencing token of the owner that took it.
    pub owner_token: u64,
}

impl StepEntry {
    /// An entry for `step` that ended with `outcome`, decided at `at` (the executor fills in
    /// `took` and `owner_token`).
    pub fn new(step: StepKind, outcome: StepOutcome, at: SystemTime) -> Self {
        StepEntry {
            seq: 0,
            step,
            outcome,
            at,
            took: Duration::ZERO,
            owner_token: 0,
        }
    }
}

/// The last 32 steps of a chip, written with every observed write.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepLog {
    entries: VecDeque<StepEntry>,
    last_seq: u64,
}

impl StepLog {
    /// How many entries are kept.
    pub const CAPACITY: usize = 32;

    /// Appends an entry under the next sequence number, dropping the oldest beyond
    /// [`StepLog::CAPACITY`]; returns the number.
    pub fn push(&mut self, mut entry: StepEntry) -> u64 {
        self.last_seq += 1;
        entry.seq = self.last_seq;
        if self.entries.len() == Self::CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
        self.last_seq
    }

    /// The kept entries, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &StepEntry> {
        self.entries.iter()
    }

    /// The newest entry.
    pub fn last(&self) -> Option<&StepEntry> {
        self.entries.back()
    }

    /// How many entries are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no step was logged yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What one owner write changes: the next observed state and the step that led to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedPatch {
    /// The observed state after the step.
    pub observed: Observed,
    /// The step log entry (`None`: a write without a step).
    pub step: Option<StepEntry>,
}

/// A chip: its key, desired and observed state with their versions, and its step log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChipRecord {
    /// The chip.
    pub key: ChipKey,
    /// When it was recorded.
    pub created_at: SystemTime,
    /// When it was last written.
    pub updated_at: SystemTime,
    /// What the host asked for.
    pub desired: Desired,
    /// 1 at create, +1 per desired write.
    pub desired_version: u64,
    /// What the owner saw and did.
    pub observed: Observed,
    /// 1 at create, +1 per owner write.
    pub observed_version: u64,
    /// The last steps.
    pub steps: StepLog,
}

impl ChipRecord {
    /// A chip just created at `at`: desired running with `spec`, [`Phase::Pending`], both
    /// versions 1.
    pub fn new(key: ChipKey, spec: ChipSpec, chip_slot: bool, at: SystemTime) -> Self {
        ChipRecord {
            key,
            created_at: at,
            updated_at: at,
            desired: Desired::new(spec),
            desired_version: 1,
            observed: Observed::pending(chip_slot),
            observed_version: 1,
            steps: StepLog::default(),
        }
    }

    /// Applies a desired write at `at`, as every store does on a successful compare-and-set.
    pub fn commit_desired(&mut self, desired: Desired, at: SystemTime) {
        self.desired = desired;
        self.desired_version += 1;
        self.updated_at = at;
    }

    /// Applies an owner write at `at`, as every store does on a successful compare-and-set:
    /// the observed state is replaced (an expired pairing code dropped), the step appended to
    /// the log, and `observed_version` bumped.
    pub fn commit_observed(&mut self, patch: ObservedPatch, at: SystemTime) {
        let mut observed = patch.observed;
        observed.login = observed.login.map(|offer| offer.scrubbed(at));
        self.observed = observed;
        if let Some(step) = patch.step {
            self.steps.push(step);
        }
        self.observed_version += 1;
        self.updated_at = at;
    }
}

/// `serde` for `Option<container_pool::Engine>` by its WAHA name.
mod engine_name {
    use container_pool::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        engine: &Option<Engine>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match engine {
            Some(engine) => serializer.serialize_some(engine.as_str()),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Engine>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|name| name.parse::<Engine>().map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// `serde` for `container_pool::ContainerId` as its string.
mod container_id {
    use container_pool::ContainerId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        id: &ContainerId,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(id.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<ContainerId, D::Error> {
        String::deserialize(deserializer).map(ContainerId::new)
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn key() -> ChipKey {
        ChipKey::new(
            TenantId::new("acme").unwrap(),
            ChipId::new("sales-1").unwrap(),
        )
    }

    #[test]
    fn a_phone_number_never_shows_in_debug_output() {
        let spec = ChipSpec::pairing_code(PhoneNumber::new("+5511988880001").unwrap());
        let shown = format!("{spec:?}");
        assert!(!shown.contains("5511988880001"), "{shown}");
        assert!(!shown.contains("988880"), "{shown}");
        assert!(shown.contains("PhoneNumber(\"…01\")"), "{shown}");
    }

    #[test]
    fn phone_numbers_are_digits_with_a_country_code() {
        assert_eq!(
            PhoneNumber::new("+5511999999999").unwrap().as_str(),
            "5511999999999"
        );
        assert_eq!(
            PhoneNumber::new("55 11 9999").unwrap_err(),
            InvalidPhoneNumber::NotDigits
        );
        assert_eq!(
            PhoneNumber::new("1234").unwrap_err(),
            InvalidPhoneNumber::Length { len: 4 }
        );
        assert_eq!(
            PhoneNumber::new("1234567890123456").unwrap_err(),
            InvalidPhoneNumber::Length { len: 16 }
        );
        assert_eq!(
            PhoneNumber::new("011999").unwrap_err(),
            InvalidPhoneNumber::LeadingZero
        );
        assert!(!PhoneNumber::new("").unwrap_err().to_string().is_empty());
        assert!(serde_json::from_str::<PhoneNumber>("\"+0\"").is_err());
    }

    #[test]
    fn the_step_log_keeps_the_newest_32() {
        let mut log = StepLog::default();
        for n in 0..40 {
            let seq = log.push(StepEntry::new(
                StepKind::Probe,
                StepOutcome::Succeeded,
                at(n),
            ));
            assert_eq!(seq, n + 1);
        }
        assert_eq!(log.len(), StepLog::CAPACITY);
        let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (9..=40).collect::<Vec<u64>>());
        assert_eq!(log.last().map(|e| e.at), Some(at(39)));
    }

    #[test]
    fn the_failure_window_is_bounded_and_counts_by_time() {
        let mut window = FailureWindow::default();
        for n in 0..20 {
            window.record(at(n * 60), Reason::ConnectionLost);
        }
        assert_eq!(window.iter().count(), FailureWindow::CAPACITY);
        assert_eq!(window.count_since(at(17 * 60)), 3);
        window.clear();
        assert_eq!(window.count_since(at(0)), 0);
    }

    #[test]
    fn pairing_codes_redact_and_expire() {
        let code = PairingCodeSecret::new("ABCD-EFGH");
        assert_eq!(format!("{code:?}"), "PairingCodeSecret(<redacted>)");
        assert_eq!(code.to_string(), "<redacted>");
        let offer = LoginOffer::PairingCode {
            code: Some(code),
            requested_at: at(0),
            expires_at: at(150),
        };
        assert_eq!(
            offer.live_pairing_code(at(149)).map(|c| c.expose_secret()),
            Some("ABCD-EFGH")
        );
        assert!(offer.live_pairing_code(at(150)).is_none());
        let kept = offer.clone().scrubbed(at(100));
        assert_eq!(kept, offer);
        let scrubbed = offer.scrubbed(at(150));
        assert!(matches!(
            scrubbed,
            LoginOffer::PairingCode { code: None, .. }
        ));
    }

    #[test]
    fn records_round_trip_through_json_and_commits_bump_versions() {
        let spec = ChipSpec {
            engine: Some(Engine::Gows),
            ..ChipSpec::pairing_code(PhoneNumber::new("5511999999999").unwrap())
        };
        let mut record = ChipRecord::new(key(), spec, true, at(10));
        assert_eq!((record.desired_version, record.observed_version), (1, 1));
        assert_eq!(record.key.session_name().as_str(), "cf_acme_sales-1");

        let mut desired = record.desired.clone();
        desired.request_restart();
        record.commit_desired(desired, at(11));
        assert_eq!(record.desired_version, 2);
        assert_eq!(record.desired.nonces.restart, 1);

        let mut observed = record.observed.clone();
        observed.container = Some(ContainerRef {
            name: "waha-acme-0".into(),
            id: ContainerId::new("abc123"),
            base_url: "http://127.0.0.1:3000".parse().unwrap(),
            ready_at: at(12),
        });
        observed.login = Some(LoginOffer::PairingCode {
            code: Some(PairingCodeSecret::new("ABCD-EFGH")),
            requested_at: at(12),
            expires_at: at(20),
        });
        record.commit_observed(
            ObservedPatch {
                observed,
                step: Some(StepEntry::new(
                    StepKind::EnsureContainer,
                    StepOutcome::Succeeded,
                    at(12),
                )),
            },
            at(12),
        );
        assert_eq!((record.desired_version, record.observed_version), (2, 2));
        assert_eq!(record.steps.len(), 1);

        let json = serde_json::to_string(&record).unwrap();
        let back: ChipRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, record);
        assert!(json.contains("\"GOWS\""));

        // The first write after the expiry drops the code.
        let patch = ObservedPatch {
            observed: record.observed.clone(),
            step: None,
        };
        record.commit_observed(patch, at(25));
        assert!(matches!(
            record.observed.login,
            Some(LoginOffer::PairingCode { code: None, .. })
        ));
    }
}
