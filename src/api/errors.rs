//! The one mapping of every error (edge or domain) onto the contract's status codes and its
//! `{"error", "message"}` body. Handlers return `Result<_, ApiError>`; nothing is a warp
//! rejection.

use std::time::Duration;
use warp::Reply;
use warp::http::{HeaderValue, Method, StatusCode, header};

use wagate_actors::GatewayError;

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
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
}

fn parts(status: StatusCode, code: &'static str, message: String) -> Parts {
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
        self.parts().code
    }

    fn parts(&self) -> Parts {
        use GatewayError as G;
        use StatusCode as S;
        match self {
            Self::Unauthorized => parts(
                S::UNAUTHORIZED,
                "unauthorized",
                "missing or unknown bearer token".into(),
            ),
            Self::Forbidden => parts(
                S::FORBIDDEN,
                "forbidden",
                "this endpoint needs the admin token".into(),
            ),
            Self::NotFound => parts(S::NOT_FOUND, "not_found", "no such route".into()),
            Self::MethodNotAllowed(allowed) => parts(
                S::METHOD_NOT_ALLOWED,
                "method_not_allowed",
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
                "validation",
                format!("the request target is longer than {limit} bytes"),
            ),
            Self::InvalidJson(m) => parts(
                S::BAD_REQUEST,
                "invalid_json",
                format!("the body is not valid JSON: {m}"),
            ),
            Self::Validation { field, message } => parts(
                S::BAD_REQUEST,
                "validation",
                format!("invalid '{field}': {message}"),
            ),
            Self::InvalidSessionId(m) => parts(S::BAD_REQUEST, "invalid_session_id", m.clone()),
            Self::InvalidJid { field, message } => parts(
                S::BAD_REQUEST,
                "invalid_jid",
                format!("invalid '{field}': {message}"),
            ),
            Self::PayloadTooLarge(limit) => parts(
                S::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body exceeds the limit of {limit} bytes"),
            ),
            Self::BodyTimeout(limit) => parts(
                S::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the body did not arrive within {}s", limit.as_secs()),
            ),
            Self::UnsupportedMediaType => parts(
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as application/json".into(),
            ),
            Self::Domain(e) => {
                let message = e.to_string();
                match e {
                    G::SessionNotFound(_) => parts(S::NOT_FOUND, "session_not_found", message),
                    G::SessionExists(_) => parts(S::CONFLICT, "session_exists", message),
                    G::NotLoggedIn | G::NotConnected(_) => {
                        parts(S::CONFLICT, "not_logged_in", message)
                    }
                    G::AlreadyLoggedIn => parts(S::CONFLICT, "already_logged_in", message),
                    G::PairCodePending { .. } => parts(S::CONFLICT, "pair_code_pending", message),
                    G::NoQrPending(_) => parts(S::CONFLICT, "no_qr_pending", message),
                    G::Validation { field, message } => parts(
                        S::BAD_REQUEST,
                        "validation",
                        format!("invalid '{field}': {message}"),
                    ),
                    G::DescriptionConflict => parts(S::CONFLICT, "description_conflict", message),
                    G::GroupNotFound => parts(S::NOT_FOUND, "group_not_found", message),
                    G::NotFound(_) => parts(S::NOT_FOUND, "not_found", message),
                    G::EventsExpired { .. } => parts(S::GONE, "events_expired", message),
                    G::NotGroupAdmin(_) => parts(S::FORBIDDEN, "not_group_admin", message),
                    G::RateLimited { retry_after } => Parts {
                        retry_after: *retry_after,
                        ..parts(S::TOO_MANY_REQUESTS, "rate_limited", message)
                    },
                    G::WhatsApp { .. } => parts(S::BAD_GATEWAY, "whatsapp_error", message),
                    G::WhatsAppTimeout(_) => parts(S::GATEWAY_TIMEOUT, "whatsapp_timeout", message),
                    G::Unavailable => Parts {
                        retry_after: Some(Duration::from_secs(1)),
                        ..parts(S::SERVICE_UNAVAILABLE, "unavailable", message)
                    },
                    G::Storage(_) | G::Internal(_) => {
                        tracing::error!(error = %e, "request failed on the server side");
                        parts(S::INTERNAL_SERVER_ERROR, "internal", message)
                    }
                }
            }
        }
    }
}

#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl Reply for ApiError {
    fn into_response(self) -> warp::reply::Response {
        let p = self.parts();
        let body = ErrorBody {
            error: p.code,
            message: &p.message,
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
    fn unavailable_asks_to_retry() {
        let resp = ApiError::from(GatewayError::Unavailable).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    }
}
