//! The one mapping of every error (edge or domain) onto the contract's status codes and its
//! `{"error", "message"}` body. Handlers return `Result<_, ApiError>`; nothing is a warp
//! rejection.

use std::time::Duration;
use warp::Reply;
use warp::http::{HeaderValue, Method, StatusCode, header};

use utoipa::ToSchema;
use wagate_actors::GatewayError;

/// Every error code the contract names (README's table, events.md), plus `request_timeout`
/// for a body that never arrived and `internal` for a server fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Validation,
    InvalidJson,
    InvalidSessionId,
    InvalidJid,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    SessionNotFound,
    SessionExists,
    NotLoggedIn,
    AlreadyLoggedIn,
    PairCodePending,
    NoQrPending,
    DescriptionConflict,
    GroupNotFound,
    EventsExpired,
    NotGroupAdmin,
    RateLimited,
    WhatsappError,
    WhatsappTimeout,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Validation => "validation",
            Self::InvalidJson => "invalid_json",
            Self::InvalidSessionId => "invalid_session_id",
            Self::InvalidJid => "invalid_jid",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::SessionNotFound => "session_not_found",
            Self::SessionExists => "session_exists",
            Self::NotLoggedIn => "not_logged_in",
            Self::AlreadyLoggedIn => "already_logged_in",
            Self::PairCodePending => "pair_code_pending",
            Self::NoQrPending => "no_qr_pending",
            Self::DescriptionConflict => "description_conflict",
            Self::GroupNotFound => "group_not_found",
            Self::EventsExpired => "events_expired",
            Self::NotGroupAdmin => "not_group_admin",
            Self::RateLimited => "rate_limited",
            Self::WhatsappError => "whatsapp_error",
            Self::WhatsappTimeout => "whatsapp_timeout",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed(Vec<Method>),
    UriTooLong(usize),
    InvalidJson(String),
    Validation {
        field: String,
        message: String,
    },
    InvalidSessionId(String),
    InvalidJid {
        field: String,
        message: String,
    },
    PayloadTooLarge(u64),
    /// The body did not arrive in time.
    BodyTimeout(std::time::Duration),
    UnsupportedMediaType,
    Domain(GatewayError),
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        Self::Domain(e)
    }
}

/// What an error looks like on the wire.
struct Parts {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    retry_after: Option<Duration>,
}

fn parts(status: StatusCode, code: ErrorCode, message: String) -> Parts {
    Parts {
        status,
        code,
        message,
        retry_after: None,
    }
}

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn invalid_jid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidJid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The contract's code, for logs and tests.
    pub fn code(&self) -> &'static str {
        self.parts().code.as_str()
    }

    fn parts(&self) -> Parts {
        use GatewayError as G;
        use StatusCode as S;
        match self {
            Self::Unauthorized => parts(
                S::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "missing or unknown bearer token".into(),
            ),
            Self::Forbidden => parts(
                S::FORBIDDEN,
                ErrorCode::Forbidden,
                "this endpoint needs the admin token".into(),
            ),
            Self::NotFound => parts(S::NOT_FOUND, ErrorCode::NotFound, "no such route".into()),
            Self::MethodNotAllowed(allowed) => parts(
                S::METHOD_NOT_ALLOWED,
                ErrorCode::MethodNotAllowed,
                format!(
                    "this route accepts only {}",
                    allowed
                        .iter()
                        .map(Method::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Self::UriTooLong(limit) => parts(
                S::URI_TOO_LONG,
                ErrorCode::Validation,
                format!("the request target is longer than {limit} bytes"),
            ),
            Self::InvalidJson(m) => parts(
                S::BAD_REQUEST,
                ErrorCode::InvalidJson,
                format!("the body is not valid JSON: {m}"),
            ),
            Self::Validation { field, message } => parts(
                S::BAD_REQUEST,
                ErrorCode::Validation,
                format!("invalid '{field}': {message}"),
            ),
            Self::InvalidSessionId(m) => {
                parts(S::BAD_REQUEST, ErrorCode::InvalidSessionId, m.clone())
            }
            Self::InvalidJid { field, message } => parts(
                S::BAD_REQUEST,
                ErrorCode::InvalidJid,
                format!("invalid '{field}': {message}"),
            ),
            Self::PayloadTooLarge(limit) => parts(
                S::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                format!("the body exceeds the limit of {limit} bytes"),
            ),
            Self::BodyTimeout(limit) => parts(
                S::REQUEST_TIMEOUT,
                ErrorCode::RequestTimeout,
                format!("the body did not arrive within {}s", limit.as_secs()),
            ),
            Self::UnsupportedMediaType => parts(
                S::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "send the body as application/json".into(),
            ),
            Self::Domain(e) => {
                let message = e.to_string();
                match e {
                    G::SessionNotFound(_) => {
                        parts(S::NOT_FOUND, ErrorCode::SessionNotFound, message)
                    }
                    G::SessionExists(_) => parts(S::CONFLICT, ErrorCode::SessionExists, message),
                    G::NotLoggedIn | G::NotConnected(_) => {
                        parts(S::CONFLICT, ErrorCode::NotLoggedIn, message)
                    }
                    G::AlreadyLoggedIn => parts(S::CONFLICT, ErrorCode::AlreadyLoggedIn, message),
                    G::PairCodePending { .. } => {
                        parts(S::CONFLICT, ErrorCode::PairCodePending, message)
                    }
                    G::NoQrPending(_) => parts(S::CONFLICT, ErrorCode::NoQrPending, message),
                    G::Validation { field, message } => parts(
                        S::BAD_REQUEST,
                        ErrorCode::Validation,
                        format!("invalid '{field}': {message}"),
                    ),
                    G::DescriptionConflict => {
                        parts(S::CONFLICT, ErrorCode::DescriptionConflict, message)
                    }
                    G::GroupNotFound => parts(S::NOT_FOUND, ErrorCode::GroupNotFound, message),
                    G::NotFound(_) => parts(S::NOT_FOUND, ErrorCode::NotFound, message),
                    G::EventsExpired { .. } => parts(S::GONE, ErrorCode::EventsExpired, message),
                    G::NotGroupAdmin(_) => parts(S::FORBIDDEN, ErrorCode::NotGroupAdmin, message),
                    G::RateLimited { retry_after } => Parts {
                        retry_after: *retry_after,
                        ..parts(S::TOO_MANY_REQUESTS, ErrorCode::RateLimited, message)
                    },
                    G::WhatsApp { .. } => parts(S::BAD_GATEWAY, ErrorCode::WhatsappError, message),
                    G::WhatsAppTimeout(_) => {
                        parts(S::GATEWAY_TIMEOUT, ErrorCode::WhatsappTimeout, message)
                    }
                    G::Unavailable => Parts {
                        retry_after: Some(Duration::from_secs(1)),
                        ..parts(S::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, message)
                    },
                    G::Storage(_) | G::Internal(_) => {
                        tracing::error!(error = %e, "request failed on the server side");
                        parts(S::INTERNAL_SERVER_ERROR, ErrorCode::Internal, message)
                    }
                }
            }
        }
    }
}

/// The contract's body of every error.
#[derive(serde::Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
}

impl Reply for ApiError {
    fn into_response(self) -> warp::reply::Response {
        let p = self.parts();
        let body = ErrorBody {
            error: p.code,
            message: p.message,
        };
        let mut resp = warp::reply::with_status(warp::reply::json(&body), p.status).into_response();
        let headers = resp.headers_mut();
        if let Some(after) = p.retry_after
            && let Ok(value) = HeaderValue::from_str(&after.as_secs().max(1).to_string())
        {
            headers.insert(header::RETRY_AFTER, value);
        }
        if matches!(self, Self::BodyTimeout(_)) {
            // The rest of a body that did not arrive cannot be skipped: close the connection.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Self::MethodNotAllowed(allowed) = &self {
            let list = allowed
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            if let Ok(value) = HeaderValue::from_str(&list) {
                headers.insert(header::ALLOW, value);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_not_allowed_names_the_methods_in_allow() {
        let resp = ApiError::MethodNotAllowed(vec![Method::GET, Method::DELETE]).into_response();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(resp.headers()[header::ALLOW], "GET, DELETE");
    }

    #[test]
    fn dropped_connections_are_not_logged_in() {
        let e = ApiError::from(GatewayError::NotConnected("down".into()));
        assert_eq!(e.code(), "not_logged_in");
    }

    #[test]
    fn error_codes_serialize_as_their_names() {
        for code in [
            ErrorCode::WhatsappError,
            ErrorCode::NoQrPending,
            ErrorCode::Unauthorized,
        ] {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::json!(code.as_str())
            );
        }
    }

    #[test]
    fn unavailable_asks_to_retry() {
        let resp = ApiError::from(GatewayError::Unavailable).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    }
}
