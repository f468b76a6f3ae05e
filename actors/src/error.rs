//! The domain error: everything that can go wrong below the HTTP edge, with enough detail for
//! the edge to pick the contract's status and code in one place.

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("session '{0}' does not exist")]
    SessionNotFound(String),
    #[error("a session with id '{0}' already exists")]
    SessionExists(String),
    #[error("the session is not logged in to WhatsApp")]
    NotLoggedIn,
    #[error("the session is already logged in; log out first to pair again")]
    AlreadyLoggedIn,
    #[error("no QR code is pending for this session (status: {0})")]
    NoQrPending(String),
    #[error("the session has no connection to WhatsApp yet (status: {0}); connect it and retry")]
    NotConnected(String),
    #[error(
        "a pair code for another phone number is still valid for {seconds_left} s; wait for it to expire or use that number"
    )]
    PairCodePending { seconds_left: u64 },
    #[error("invalid value for '{field}': {message}")]
    Validation { field: String, message: String },
    #[error("the group does not exist or this account is not a member of it")]
    GroupNotFound,
    #[error("{0}")]
    NotFound(String),
    #[error("WhatsApp refused: this account lacks the rights for that ({0})")]
    NotGroupAdmin(String),
    #[error("the group description changed since prev_id was read; read it again and retry")]
    DescriptionConflict,
    #[error("WhatsApp rate limit hit; retry later")]
    RateLimited { retry_after: Option<Duration> },
    #[error("WhatsApp answered with an error{}: {message}", code.map(|c| format!(" {c}")).unwrap_or_default())]
    WhatsApp { code: Option<u16>, message: String },
    #[error("WhatsApp did not answer within {0:?}")]
    WhatsAppTimeout(Duration),
    #[error("the session's actor is busy or restarting; retry shortly")]
    Unavailable,
    #[error("events up to {} are no longer retained; the oldest event held is {oldest}", oldest.saturating_sub(1))]
    EventsExpired { oldest: u64 },
    #[error("storage error: {0}")]
    Storage(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<sled::Error> for GatewayError {
    fn from(e: sled::Error) -> Self {
        Self::Storage(e.to_string())
    }
}

impl From<serde_json::Error> for GatewayError {
    fn from(e: serde_json::Error) -> Self {
        Self::Storage(format!("snapshot encoding: {e}"))
    }
}

pub type Result<T, E = GatewayError> = std::result::Result<T, E>;
