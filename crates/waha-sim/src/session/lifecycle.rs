//! The session state machine. Every operation takes the sessions lock briefly, applies the
//! transition, emits its events and schedules its timers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::scheduler::Timer;
use crate::session::disconnect::{Reaction, qr_expired_event};
use crate::session::{AckLevel, DisconnectReason, Me, Session, SessionStatus, SessionView};
use crate::settings::Engine;
use crate::state::{SentMessage, SimState, now_ms};
use crate::webhook::{
    AckPayload, EventPayload, MessagePayload, OutgoingEvent, StateChangePayload, StatusPayload,
};
use crate::wire::SessionConfig;

const CONNECTED: &[&str] = &["STARTING", "SCAN_QR_CODE", "WORKING"];
pub(crate) const SCAN_QR_CODE: &[&str] = &["SCAN_QR_CODE"];
pub(crate) const WORKING: &[&str] = &["WORKING"];

/// Why an operation was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    NotFound,
    AlreadyExists,
    AlreadyStarted,
    WrongStatus {
        status: SessionStatus,
        expected: &'static [&'static str],
    },
    MessageNotFound,
}

impl SimState {
    pub(crate) fn view(&self, name: &str) -> Option<SessionView> {
        self.sessions().get(name).map(|s| s.view(name))
    }

    pub(crate) fn status_of(&self, name: &str) -> Option<SessionStatus> {
        self.sessions().get(name).map(|s| s.status)
    }

    pub(crate) fn session_count(&self) -> usize {
        self.sessions().len()
    }

    /// Sessions sorted by name; without `all`, STOPPED ones are left out.
    pub(crate) fn list(&self, all: bool) -> Vec<SessionView> {
        let mut views: Vec<SessionView> = self
            .sessions()
            .iter()
            .filter(|(_, s)| all || s.is_running())
            .map(|(name, s)| s.view(name))
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }

    pub(crate) fn create(
        &self,
        name: Option<String>,
        config: Option<SessionConfig>,
        start: bool,
    ) -> Result<SessionView, Refusal> {
        let name = name.unwrap_or_else(|| format!("session_{:016x}", fastrand::u64(..)));
        let mut sessions = self.sessions();
        if sessions.contains_key(&name) {
            return Err(Refusal::AlreadyExists);
        }
        let mut session = Session::new(config, None);
        if start {
            self.transition(&name, &mut session, SessionStatus::Starting);
        }
        let view = session.view(&name);
        sessions.insert(name.clone(), session);
        drop(sessions);
        self.mark_dirty(&name);
        self.notify_status_change();
        Ok(view)
    }

    /// Inserts a session restored from the state directory (STOPPED).
    pub(crate) fn restore(&self, name: String, config: Option<SessionConfig>, me: Option<Me>) {
        self.sessions().insert(name, Session::new(config, me));
    }

    pub(crate) fn update(
        &self,
        name: &str,
        config: Option<SessionConfig>,
    ) -> Result<SessionView, Refusal> {
        let mut sessions = self.sessions();
        let session = sessions.get_mut(name).ok_or(Refusal::NotFound)?;
        let was_running = session.is_running();
        if was_running {
            self.transition(name, session, SessionStatus::Stopped);
        }
        session.config = config.map(Arc::new);
        if was_running {
            self.transition(name, session, SessionStatus::Starting);
        }
        let view = session.view(name);
        drop(sessions);
        self.mark_dirty(name);
        Ok(view)
    }

    pub(crate) fn delete(&self, name: &str) {
        let mut sessions = self.sessions();
        if let Some(mut session) = sessions.remove(name) {
            if session.is_running() {
                self.transition(name, &mut session, SessionStatus::Stopped);
            }
            drop(sessions);
            self.mark_dirty(name);
            self.notify_status_change();
        }
    }

    pub(crate) fn start(&self, name: &str) -> Result<SessionView, Refusal> {
        self.with_session(name, |state, session| {
            if session.is_running() {
                return Err(Refusal::AlreadyStarted);
            }
            state.transition(name, session, SessionStatus::Starting);
            Ok(())
        })
    }

    /// `None` when the session does not exist (WAHA answers 201 with an empty body then).
    pub(crate) fn stop(&self, name: &str) -> Option<SessionView> {
        self.with_session(name, |state, session| {
            if session.is_running() {
                state.transition(name, session, SessionStatus::Stopped);
            }
            Ok(())
        })
        .ok()
    }

    pub(crate) fn restart(&self, name: &str) -> Result<SessionView, Refusal> {
        self.with_session(name, |state, session| {
            if session.is_running() {
                state.transition(name, session, SessionStatus::Stopped);
            }
            state.transition(name, session, SessionStatus::Starting);
            Ok(())
        })
    }

    pub(crate) fn logout(&self, name: &str) -> Result<SessionView, Refusal> {
        self.with_session(name, |state, session| {
            session.me = None;
            if session.is_running() {
                state.transition(name, session, SessionStatus::Starting);
            }
            Ok(())
        })
    }

    /// Control: the QR code (or pairing code) was used on a phone.
    pub(crate) fn scan(&self, name: &str, me: Option<Me>) -> Result<SessionView, Refusal> {
        self.with_session(name, |state, session| {
            require_status(session, SCAN_QR_CODE)?;
            session.me = Some(me.unwrap_or_else(|| {
                Me::phone(&format!("55119{:08}", fastrand::u32(..100_000_000)), name)
            }));
            state.transition(name, session, SessionStatus::Working);
            Ok(())
        })
    }

    /// Control: the session goes FAILED without a word from the engine (a blocked account shows
    /// only as FAILED); it stays so until restarted.
    pub(crate) fn fail(&self, name: &str) -> Result<SessionView, Refusal> {
        self.with_session(name, |state, session| {
            require_status(session, CONNECTED)?;
            state.transition(name, session, SessionStatus::Failed);
            Ok(())
        })
    }

    /// Control: the engine drops the connection for `reason`. It says so in its own shape
    /// (`state.change` first on WEBJS, then `engine.event`), then WAHA reacts as it does for
    /// that engine (see [`DisconnectReason`]).
    pub(crate) fn disconnect(
        &self,
        name: &str,
        reason: DisconnectReason,
    ) -> Result<SessionView, Refusal> {
        self.with_session(name, |state, session| {
            require_status(session, CONNECTED)?;
            // The engine noticed: whatever silence there was is over.
            session.silent = false;
            let engine = state.settings.engine;
            if let Some(webjs_state) = reason.state_change(engine) {
                state.emit(
                    name,
                    session,
                    "state.change",
                    EventPayload::State(StateChangePayload { state: webjs_state }),
                );
            }
            state.emit(
                name,
                session,
                "engine.event",
                EventPayload::Engine(reason.engine_event(engine, now_ms())),
            );
            match reason.reaction(engine) {
                Reaction::Fail { logged_out } => {
                    // A logged-out account is gone before FAILED is announced (as `logout`
                    // does), so the FAILED webhook carries no `me`.
                    if logged_out {
                        session.me = None;
                    }
                    state.transition(name, session, SessionStatus::Failed);
                }
                Reaction::Reconnect => state.reconnect(name, session),
                Reaction::FailThenRestart => {
                    state.transition(name, session, SessionStatus::Failed);
                    state.scheduler.schedule(
                        state.settings.scaled(state.settings.timings.restart_delay),
                        Timer::Restart {
                            session: name.to_owned(),
                            generation: session.generation,
                        },
                    );
                }
            }
            Ok(())
        })
    }

    /// Control: the silent-WORKING fault. The session stays WORKING, but emits nothing (no
    /// webhook at all), incoming messages are swallowed and sent ones never get an ack, until
    /// its next status change (a restart, a stop, a logout, a disconnect).
    pub(crate) fn silence(&self, name: &str) -> Result<SessionView, Refusal> {
        self.with_session(name, |_, session| {
            require_status(session, WORKING)?;
            session.silent = true;
            Ok(())
        })
    }

    /// `POST /api/sendText`.
    pub(crate) fn send_text(
        &self,
        name: &str,
        chat_id: &str,
        text: &str,
    ) -> Result<MessagePayload, Refusal> {
        let sessions = self.sessions();
        let session = sessions
            .get(name)
            .filter(|s| s.is_running())
            .ok_or(Refusal::NotFound)?;
        let me = working_account(session)?;
        // A silent session accepts the send, which then never progresses.
        let silent = session.silent;
        let message = MessagePayload {
            id: format!("true_{chat_id}_{}", message_suffix()),
            timestamp: now_ms() / 1000,
            from: me.id.clone(),
            from_me: true,
            to: chat_id.to_owned(),
            body: text.to_owned(),
            has_media: false,
            ack: AckLevel::Pending.code(),
            ack_name: AckLevel::Pending.name(),
        };
        self.emit(
            name,
            session,
            "message.any",
            EventPayload::Message(message.clone()),
        );
        drop(sessions);
        self.messages().insert(
            message.id.clone(),
            SentMessage {
                session: name.to_owned(),
                from: me.id,
                to: chat_id.to_owned(),
            },
        );
        if !silent && let Some(interval) = self.settings.timings.ack_interval {
            let interval = self.settings.scaled(interval);
            for (n, level) in [AckLevel::Server, AckLevel::Device, AckLevel::Read]
                .into_iter()
                .enumerate()
            {
                self.scheduler.schedule(
                    interval.saturating_mul(u32::try_from(n + 1).unwrap_or(1)),
                    Timer::Ack {
                        message_id: message.id.clone(),
                        level,
                    },
                );
            }
        }
        Ok(message)
    }

    /// Emits a `message.ack` for a sent message.
    pub(crate) fn ack(&self, message_id: &str, level: AckLevel) -> Result<(), Refusal> {
        let (session_name, payload) = {
            let messages = self.messages();
            let sent = messages.get(message_id).ok_or(Refusal::MessageNotFound)?;
            (
                sent.session.clone(),
                AckPayload {
                    id: message_id.to_owned(),
                    from: sent.from.clone(),
                    to: sent.to.clone(),
                    participant: None,
                    from_me: true,
                    ack: level.code(),
                    ack_name: level.name(),
                },
            )
        };
        let sessions = self.sessions();
        if let Some(session) = sessions.get(&session_name) {
            self.emit(
                &session_name,
                session,
                "message.ack",
                EventPayload::Ack(payload),
            );
        }
        Ok(())
    }

    /// Control: a message arrives from `from`; emits `message` and `message.any`.
    pub(crate) fn receive(&self, name: &str, from: &str, text: &str) -> Result<String, Refusal> {
        let sessions = self.sessions();
        let session = sessions.get(name).ok_or(Refusal::NotFound)?;
        let me = working_account(session)?;
        let message = MessagePayload {
            id: format!("false_{from}_{}", message_suffix()),
            timestamp: now_ms() / 1000,
            from: from.to_owned(),
            from_me: false,
            to: me.id,
            body: text.to_owned(),
            has_media: false,
            ack: AckLevel::Device.code(),
            ack_name: AckLevel::Device.name(),
        };
        let id = message.id.clone();
        self.emit(
            name,
            session,
            "message",
            EventPayload::Message(message.clone()),
        );
        self.emit(name, session, "message.any", EventPayload::Message(message));
        Ok(id)
    }

    /// A timer fired.
    pub(crate) fn on_timer(&self, timer: Timer) {
        match timer {
            Timer::Started {
                session: name,
                generation,
            } => self.if_current(&name, generation, SessionStatus::Starting, |session| {
                if self.settings.dial_proxies
                    && let Some(proxy) = session.config.as_ref().and_then(|c| c.proxy.as_ref())
                    && let Err(error) = dial(&proxy.server)
                {
                    tracing::info!(session = %name, proxy = %proxy.server, %error, "the proxy cannot be reached; the session fails");
                    self.transition(&name, session, SessionStatus::Failed);
                    return;
                }
                let next = if session.me.is_some() {
                    SessionStatus::Working
                } else {
                    SessionStatus::ScanQrCode
                };
                self.transition(&name, session, next);
            }),
            Timer::QrExpired {
                session: name,
                generation,
            } => self.if_current(&name, generation, SessionStatus::ScanQrCode, |session| {
                if session.qr_refreshes < self.settings.timings.qr_refreshes {
                    self.refresh_qr(&name, session);
                } else {
                    if let Some(event) = qr_expired_event(self.settings.engine, now_ms()) {
                        self.emit(&name, session, "engine.event", EventPayload::Engine(event));
                    }
                    self.transition(&name, session, SessionStatus::Failed);
                }
            }),
            Timer::Restart {
                session: name,
                generation,
            } => self.if_current(&name, generation, SessionStatus::Failed, |session| {
                self.transition(&name, session, SessionStatus::Starting);
            }),
            Timer::AutoStart { session: name } => {
                let _ = self.start(&name);
            }
            Timer::Ack { message_id, level } => {
                let _ = self.ack(&message_id, level);
            }
        }
    }

    /// Applies a timer's effect if the timer is still current: the session exists, has not
    /// moved since the timer was set (`generation`) and is still `status`.
    fn if_current(
        &self,
        name: &str,
        generation: u32,
        status: SessionStatus,
        apply: impl FnOnce(&mut Session),
    ) {
        let mut sessions = self.sessions();
        if let Some(session) = sessions
            .get_mut(name)
            .filter(|s| s.generation == generation && s.status == status)
        {
            apply(session);
        }
    }

    /// Waits until `check` holds or `deadline` passes; returns whether it held.
    pub(crate) async fn wait_until(
        &self,
        deadline: Instant,
        mut check: impl FnMut(&SimState) -> bool,
    ) -> bool {
        let mut changes = self.subscribe_status_changes();
        loop {
            if check(self) {
                return true;
            }
            match tokio::time::timeout_at(deadline.into(), changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return check(self),
            }
        }
    }

    fn with_session(
        &self,
        name: &str,
        apply: impl FnOnce(&SimState, &mut Session) -> Result<(), Refusal>,
    ) -> Result<SessionView, Refusal> {
        let mut sessions = self.sessions();
        let session = sessions.get_mut(name).ok_or(Refusal::NotFound)?;
        apply(self, session)?;
        let view = session.view(name);
        drop(sessions);
        self.mark_dirty(name);
        Ok(view)
    }

    fn transition(&self, name: &str, session: &mut Session, to: SessionStatus) {
        enter(session, to);
        let timings = &self.settings.timings;
        match to {
            SessionStatus::Starting => {
                self.schedule_started(name, session, self.settings.scaled(timings.starting));
            }
            SessionStatus::ScanQrCode => {
                session.qr = Some(new_qr_value().into_boxed_str());
                session.qr_refreshes = 0;
                self.scheduler.schedule(
                    self.settings.scaled(timings.first_qr),
                    Timer::QrExpired {
                        session: name.to_owned(),
                        generation: session.generation,
                    },
                );
            }
            SessionStatus::Stopped | SessionStatus::Working | SessionStatus::Failed => {}
        }
        self.announce(name, session);
    }

    /// NOWEB's restart and GOWS's reconnect after a disconnect: STARTING now, up again after the
    /// restart delay plus the usual start-up.
    fn reconnect(&self, name: &str, session: &mut Session) {
        enter(session, SessionStatus::Starting);
        let timings = &self.settings.timings;
        let delay = self
            .settings
            .scaled(timings.restart_delay)
            .saturating_add(self.settings.scaled(timings.starting));
        self.schedule_started(name, session, delay);
        self.announce(name, session);
    }

    fn schedule_started(&self, name: &str, session: &Session, delay: Duration) {
        self.scheduler.schedule(
            delay,
            Timer::Started {
                session: name.to_owned(),
                generation: session.generation,
            },
        );
    }

    /// Emits the new status (WEBJS also reports its `CONNECTED` state first) and wakes the
    /// status waiters.
    fn announce(&self, name: &str, session: &Session) {
        tracing::debug!(session = name, status = %session.status, "session status");
        if session.status == SessionStatus::Working && self.settings.engine == Engine::Webjs {
            self.emit(
                name,
                session,
                "state.change",
                EventPayload::State(StateChangePayload { state: "CONNECTED" }),
            );
        }
        self.emit_status(name, session);
        self.notify_status_change();
    }

    fn refresh_qr(&self, name: &str, session: &mut Session) {
        session.generation = session.generation.wrapping_add(1);
        session.qr = Some(new_qr_value().into_boxed_str());
        session.qr_refreshes += 1;
        self.scheduler.schedule(
            self.settings.scaled(self.settings.timings.qr_refresh),
            Timer::QrExpired {
                session: name.to_owned(),
                generation: session.generation,
            },
        );
        self.emit_status(name, session);
        self.notify_status_change();
    }

    fn emit_status(&self, name: &str, session: &Session) {
        self.emit(
            name,
            session,
            "session.status",
            EventPayload::Status(StatusPayload {
                name: name.to_owned(),
                status: session.status,
            }),
        );
    }

    /// Queues `event` if one of the session's webhooks wants it (nothing is built otherwise,
    /// so sessions without webhooks cost nothing here). A silent session emits nothing.
    fn emit(&self, name: &str, session: &Session, event: &'static str, payload: EventPayload) {
        if session.silent {
            return;
        }
        let Some(config) = &session.config else {
            return;
        };
        if !config.webhooks().iter().any(|w| w.wants(event)) {
            return;
        }
        self.publish(OutgoingEvent {
            id: format!("evt_{}", ulid::Ulid::generate().to_string().to_lowercase()),
            timestamp_ms: now_ms(),
            session: name.to_owned(),
            event,
            payload,
            config: Arc::clone(config),
            me: session.me.clone(),
            faults: self.faults(),
        });
    }
}

/// A session enters a status: timers set for the previous one go stale, the QR is gone and so
/// is any silence.
fn enter(session: &mut Session, to: SessionStatus) {
    session.status = to;
    session.generation = session.generation.wrapping_add(1);
    session.qr = None;
    session.silent = false;
}

/// Refuses unless the session's status is one of `expected`.
fn require_status(session: &Session, expected: &'static [&'static str]) -> Result<(), Refusal> {
    if expected.contains(&session.status.as_str()) {
        Ok(())
    } else {
        Err(Refusal::WrongStatus {
            status: session.status,
            expected,
        })
    }
}

/// The account of a WORKING session, or why there is none.
fn working_account(session: &Session) -> Result<Me, Refusal> {
    match (&session.me, session.status) {
        (Some(me), SessionStatus::Working) => Ok(me.clone()),
        _ => Err(Refusal::WrongStatus {
            status: session.status,
            expected: WORKING,
        }),
    }
}

fn message_suffix() -> String {
    format!("3EB0{:016X}", fastrand::u64(..))
}

/// A QR payload shaped like WhatsApp's: `2@<ref>,<key>,<key>,<key>`.
fn new_qr_value() -> String {
    let part = |len: usize| -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        (0..len)
            .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
            .collect()
    };
    format!("2@{},{}=,{}=,{}=", part(60), part(43), part(43), part(43))
}

/// Opens (and closes) a TCP connection to a proxy `server` (`host:port`, or a URL
/// `scheme://host:port`), within 1 s: what a session needs before its engine can connect.
fn dial(server: &str) -> std::io::Result<()> {
    use std::net::{TcpStream, ToSocketAddrs};
    let host_port = server.split_once("://").map_or(server, |(_, rest)| rest);
    let host_port = host_port.trim_end_matches('/');
    let mut last = std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "the proxy server names no address",
    );
    for address in host_port.to_socket_addrs()? {
        match TcpStream::connect_timeout(&address, std::time::Duration::from_secs(1)) {
            Ok(_) => return Ok(()),
            Err(error) => last = error,
        }
    }
    Err(last)
}
