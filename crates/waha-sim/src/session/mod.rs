//! Sessions: their status, their record and the state machine that moves them.

pub(crate) mod disconnect;
pub(crate) mod lifecycle;
mod record;
mod status;

pub use disconnect::DisconnectReason;
pub(crate) use record::{Session, SessionView};
pub use status::{AckLevel, Me, SessionStatus};
