//! The one mapping of every error (edge or domain) onto the contract's status codes and its
//! `{"error", "message"}` body, and the rejection handler that applies it.

use std::convert::Infallible;
use std::time::Duration;
use warp::http::StatusCode;
use warp::{Rejection, Reply};

use wagate_actors::GatewayError;

#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    Forbidden,
    InvalidJson(String),
    Validation { field: String, message: String },
    InvalidSessionId(String),
    InvalidJid { field: String, message: String },
    PayloadTooLarge(u64),
    UnsupportedMediaType,
    Domain(GatewayError),
}

impl warp::reject::Reject for ApiError {}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        Self::Domain(e)
    }
}

/// Turns a domain result into a warp one (the orphan rule forbids a `From` impl).
pub trait OrReject<T> {
    fn or_reject(self) -> Result<T, Rejection>;
}

impl<T> OrReject<T> for Result<T, GatewayError> {
    fn or_reject(self) -> Result<T, Rejection> {
        self.map_err(|e| warp::reject::custom(ApiError::Domain(e)))
    }
}

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn reject(self) -> Rejection {
        warp::reject::custom(self)
    }

    fn parts(&self) -> (StatusCode, &'static str, String, Option<Duration>) {
        use GatewayError as G;
        match self {
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or unknown bearer token".into(),
                None,
            ),
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "this endpoint needs the admin token".into(),
                None,
            ),
            Self::InvalidJson(m) => (
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body is not valid JSON: {m}"),
                None,
            ),
            Self::Validation { field, message } => (
                StatusCode::BAD_REQUEST,
                "validation",
                format!("invalid '{field}': {message}"),
                None,
            ),
            Self::InvalidSessionId(m) => (
                StatusCode::BAD_REQUEST,
                "invalid_session_id",
                m.clone(),
                None,
            ),
            Self::InvalidJid { field, message } => (
                StatusCode::BAD_REQUEST,
                "invalid_jid",
                format!("invalid '{field}': {message}"),
                None,
            ),
            Self::PayloadTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body exceeds the limit of {limit} bytes"),
                None,
            ),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as application/json".into(),
                None,
            ),
            Self::Domain(e) => {
                let message = e.to_string();
                match e {
                    G::SessionNotFound(_) => {
                        (StatusCode::NOT_FOUND, "session_not_found", message, None)
                    }
                    G::SessionExists(_) => (StatusCode::CONFLICT, "session_exists", message, None),
                    G::NotLoggedIn => (StatusCode::CONFLICT, "not_logged_in", message, None),
                    G::AlreadyLoggedIn => {
                        (StatusCode::CONFLICT, "already_logged_in", message, None)
                    }
                    G::NoQrPending(_) => (StatusCode::CONFLICT, "no_qr_pending", message, None),
                    G::NotConnected(_) => (StatusCode::CONFLICT, "not_connected", message, None),
                    G::Validation { field, message } => (
                        StatusCode::BAD_REQUEST,
                        "validation",
                        format!("invalid '{field}': {message}"),
                        None,
                    ),
                    G::DescriptionConflict => {
                        (StatusCode::CONFLICT, "description_conflict", message, None)
                    }
                    G::GroupNotFound => (StatusCode::NOT_FOUND, "group_not_found", message, None),
                    G::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", message, None),
                    G::NotGroupAdmin(_) => {
                        (StatusCode::FORBIDDEN, "not_group_admin", message, None)
                    }
                    G::RateLimited { retry_after } => (
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        message,
                        *retry_after,
                    ),
                    G::WhatsApp { .. } => {
                        (StatusCode::BAD_GATEWAY, "whatsapp_error", message, None)
                    }
                    G::WhatsAppTimeout(_) => (
                        StatusCode::GATEWAY_TIMEOUT,
                        "whatsapp_timeout",
                        message,
                        None,
                    ),
                    G::Unavailable => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        message,
                        Some(Duration::from_secs(1)),
                    ),
                    G::Storage(_) | G::Internal(_) => {
                        tracing::error!(error = %e, "request failed on the server side");
                        (StatusCode::INTERNAL_SERVER_ERROR, "internal", message, None)
                    }
                }
            }
        }
    }
}

#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

pub fn error_reply(
    status: StatusCode,
    code: &str,
    message: String,
    retry_after: Option<Duration>,
) -> warp::reply::Response {
    let mut resp = warp::reply::with_status(
        warp::reply::json(&ErrorBody {
            error: code,
            message,
        }),
        status,
    )
    .into_response();
    if let Some(after) = retry_after {
        let secs = after.as_secs().max(1).to_string();
        if let Ok(value) = warp::http::HeaderValue::from_str(&secs) {
            resp.headers_mut()
                .insert(warp::http::header::RETRY_AFTER, value);
        }
    }
    resp
}

impl Reply for ApiError {
    fn into_response(self) -> warp::reply::Response {
        let (status, code, message, retry) = self.parts();
        error_reply(status, code, message, retry)
    }
}

/// Turns every rejection into the contract's JSON error.
pub async fn handle_rejection(err: Rejection) -> Result<warp::reply::Response, Infallible> {
    if let Some(e) = err.find::<ApiError>() {
        let (status, code, message, retry) = e.parts();
        return Ok(error_reply(status, code, message, retry));
    }
    let (status, code, message) = if err.is_not_found() {
        (
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route".to_owned(),
        )
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not accept that method".to_owned(),
        )
    } else if let Some(e) = err.find::<warp::reject::InvalidQuery>() {
        (
            StatusCode::BAD_REQUEST,
            "validation",
            format!("invalid query string: {e}"),
        )
    } else if err.find::<warp::reject::UnsupportedMediaType>().is_some() {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json".to_owned(),
        )
    } else if err.find::<warp::reject::PayloadTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the body is too large".to_owned(),
        )
    } else if let Some(e) = err.find::<warp::reject::InvalidHeader>() {
        (StatusCode::BAD_REQUEST, "validation", e.to_string())
    } else if let Some(e) = err.find::<warp::reject::MissingHeader>() {
        (StatusCode::BAD_REQUEST, "validation", e.to_string())
    } else {
        tracing::error!(?err, "unhandled rejection");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "unexpected error".to_owned(),
        )
    };
    Ok(error_reply(status, code, message, None))
}
