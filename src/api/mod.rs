//! The HTTP edge: warp filters per resource, joined under `/api/v1`, plus `/health`, `/ready`
//! and `/metrics`. A handler parses and validates, sends one typed message through the
//! [`Gateway`], and turns the typed reply (or error) into JSON.

pub mod admin;
pub mod errors;
pub mod groups;
pub mod health;
pub mod messages;
pub mod models;
pub mod qr;
pub mod sessions;

use std::convert::Infallible;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use warp::{Filter, Rejection, Reply};

use crate::config::Secret;
use errors::ApiError;
use wagate_actors::Gateway;
use wagate_actors::model::SessionId;

/// What every handler can reach.
pub struct Context {
    pub gateway: Gateway,
    pub auth: Auth,
    pub body_limit: u64,
}

pub type Ctx = Arc<Context>;

pub struct Auth {
    pub api: Secret,
    /// When absent, the API token also opens the admin endpoints.
    pub admin: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presented {
    Api,
    Admin,
    Unknown,
}

impl Auth {
    fn classify(&self, header: Option<&str>) -> Presented {
        let Some(token) = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
        else {
            return Presented::Unknown;
        };
        // Compare against both tokens every time so timing says nothing about either.
        let api: bool = token.as_bytes().ct_eq(self.api.expose().as_bytes()).into();
        let admin: bool = self
            .admin
            .as_ref()
            .map(|a| token.as_bytes().ct_eq(a.expose().as_bytes()).into())
            .unwrap_or(false);
        if admin {
            Presented::Admin
        } else if api {
            Presented::Api
        } else {
            Presented::Unknown
        }
    }
}

pub fn with_ctx(ctx: Ctx) -> impl Filter<Extract = (Ctx,), Error = Infallible> + Clone {
    warp::any().map(move || ctx.clone())
}

/// Requires the API token. Place it after the path and method filters, so a request for one
/// route is never answered with another route's auth error.
pub fn api_auth(ctx: Ctx) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and_then(move |header: Option<String>| {
            let ctx = ctx.clone();
            async move {
                match ctx.auth.classify(header.as_deref()) {
                    Presented::Api => Ok(()),
                    Presented::Admin | Presented::Unknown => Err(ApiError::Unauthorized.reject()),
                }
            }
        })
        .untuple_one()
}

/// Requires the admin token (or the API token when no admin token is configured).
pub fn admin_auth(ctx: Ctx) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and_then(move |header: Option<String>| {
            let ctx = ctx.clone();
            async move {
                match (
                    ctx.auth.classify(header.as_deref()),
                    ctx.auth.admin.is_some(),
                ) {
                    (Presented::Admin, _) | (Presented::Api, false) => Ok(()),
                    (Presented::Api, true) => Err(ApiError::Forbidden.reject()),
                    (Presented::Unknown, _) => Err(ApiError::Unauthorized.reject()),
                }
            }
        })
        .untuple_one()
}

/// A session id taken from the path, percent-decoded and validated.
pub fn session_id(raw: &str) -> Result<SessionId, Rejection> {
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    SessionId::parse(&decoded).map_err(|_| {
        ApiError::InvalidSessionId(format!(
            "'{decoded}' is not a session id (1-64 characters of A-Z, a-z, 0-9, '_' and '-')"
        ))
        .reject()
    })
}

/// Every route of the server, with the one rejection handler and request tracing.
pub fn routes(ctx: Ctx) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let api = warp::path("api").and(warp::path("v1")).and(
        sessions::routes(ctx.clone())
            .or(groups::routes(ctx.clone()))
            .or(messages::routes(ctx.clone()))
            .or(admin::routes(ctx.clone())),
    );
    api.or(health::routes(ctx))
        .recover(errors::handle_rejection)
        .with(warp::trace::request())
}

/// A JSON reply with a status.
pub fn json_status<T: serde::Serialize>(
    value: &T,
    status: warp::http::StatusCode,
) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_classified() {
        let auth = Auth {
            api: Secret::new("api-token-1".into()),
            admin: Some(Secret::new("admin-token-1".into())),
        };
        assert_eq!(auth.classify(Some("Bearer api-token-1")), Presented::Api);
        assert_eq!(
            auth.classify(Some("Bearer admin-token-1")),
            Presented::Admin
        );
        assert_eq!(auth.classify(Some("Bearer api-token-")), Presented::Unknown);
        assert_eq!(auth.classify(Some("api-token-1")), Presented::Unknown);
        assert_eq!(auth.classify(None), Presented::Unknown);
    }
}
