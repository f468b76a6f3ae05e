//! The HTTP edge. One warp filter takes every request apart (method, path, query, headers,
//! body); the route table in [`router`] finds its endpoint and who may call it; the endpoint's
//! handler, a plain `async fn` in the resource's module, parses and validates, calls one typed
//! [`Gateway`] method and shapes the answer. Every failure is an [`ApiError`] turned into the
//! contract's JSON in one place ([`errors`]); nothing relies on warp's rejections or route
//! order.
//!
//! - [`sessions`], [`groups`], [`messages`], [`events`], [`webhooks`], [`admin`], [`health`]:
//!   the handlers, per resource.
//! - [`request`]: path parameters, query flags and JSON bodies as the domain's types.
//! - [`models`]: request and response bodies.
//! - [`openapi`]: the OpenAPI document, generated from the handlers and [`models`].
//! - [`ui`]: the dashboard and the docs UI, compiled into the binary.

pub mod admin;
pub mod errors;
pub mod events;
pub mod groups;
pub mod health;
pub mod messages;
pub mod models;
pub mod openapi;
pub mod qr;
pub mod request;
pub mod router;
pub mod sessions;
pub mod ui;
pub mod webhooks;

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::config::Secret;
use errors::ApiError;
use request::Request;
use router::{Access, Endpoint, Miss, ROUTES};
use wagate_actors::Gateway;
use wagate_actors::model::Rendered;

/// Longest request target (path and query) the router looks at.
const MAX_TARGET_BYTES: usize = 8 * 1024;
/// Where the token-guarded API lives.
const API_BASE: &str = "/api/v1";

/// What every handler can reach.
pub struct Context {
    pub gateway: Gateway,
    pub auth: Auth,
    pub body_limit: u64,
    /// A request body must arrive within this.
    pub body_timeout: std::time::Duration,
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
    fn classify(&self, header: Option<&HeaderValue>) -> Presented {
        let token = header
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let Some(token) = token else {
            return Presented::Unknown;
        };
        // Compare digests against both tokens every time, so timing says nothing about either,
        // not even its length.
        let presented = Sha256::digest(token.as_bytes());
        let matches = |secret: &Secret| -> bool {
            presented
                .as_slice()
                .ct_eq(Sha256::digest(secret.expose().as_bytes()).as_slice())
                .into()
        };
        let api = matches(&self.api);
        let admin = self.admin.as_ref().is_some_and(matches);
        if admin {
            Presented::Admin
        } else if api {
            Presented::Api
        } else {
            Presented::Unknown
        }
    }

    /// Whether the request's token opens a route with this access.
    fn check(&self, access: Access, header: Option<&HeaderValue>) -> Result<(), ApiError> {
        match (access, self.classify(header)) {
            (Access::Public, _) => Ok(()),
            (_, Presented::Unknown) => Err(ApiError::Unauthorized),
            (Access::Api, _) | (Access::Admin, Presented::Admin) => Ok(()),
            (Access::Admin, Presented::Api) if self.admin.is_none() => Ok(()),
            (Access::Admin, Presented::Api) => Err(ApiError::Forbidden),
        }
    }
}

/// A JSON reply with status 200.
pub fn json<T: serde::Serialize>(value: &T) -> Response {
    warp::reply::json(value).into_response()
}

/// A reply the façade rendered to JSON already, with status 200.
pub fn rendered<T>(view: &Rendered<T>) -> Response {
    let mut response = Response::new(view.json().into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A JSON reply with a status.
pub fn json_status<T: serde::Serialize>(value: &T, status: StatusCode) -> Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

pub fn success() -> Response {
    json(&models::Success::DONE)
}

fn with_ctx(ctx: Ctx) -> impl Filter<Extract = (Ctx,), Error = Infallible> + Clone {
    warp::any().map(move || ctx.clone())
}

/// The whole server: every request goes through the route table.
pub fn routes(ctx: Ctx) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let raw_query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::method()
        .and(warp::path::full())
        .and(raw_query)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(with_ctx(ctx))
        .then(serve)
        .recover(stray_rejection)
        .unify()
}

async fn serve(
    method: Method,
    path: FullPath,
    query: String,
    headers: HeaderMap,
    body: impl Stream<Item = Result<impl Buf + Send + 'static, warp::Error>> + Send + 'static,
    ctx: Ctx,
) -> Response {
    let started = Instant::now();
    let body: request::BodyStream = Box::pin(
        body.map(|chunk| chunk.map(|mut buf| -> Bytes { buf.copy_to_bytes(buf.remaining()) })),
    );
    let mut route = "unmatched";
    let response = match answer(
        &ctx,
        &method,
        path.as_str(),
        &query,
        headers,
        body,
        &mut route,
    )
    .await
    {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    let status = response.status();
    ctx.gateway.telemetry().observe_http(
        method.as_str(),
        route,
        status.as_u16(),
        started.elapsed(),
    );
    if status.is_server_error() {
        tracing::warn!(%method, path = path.as_str(), %status, elapsed = ?started.elapsed(), "request failed");
    } else {
        tracing::debug!(%method, path = path.as_str(), %status, elapsed = ?started.elapsed(), "request");
    }
    response
}

async fn answer(
    ctx: &Ctx,
    method: &Method,
    path: &str,
    query: &str,
    headers: HeaderMap,
    body: request::BodyStream,
    route: &mut &'static str,
) -> Result<Response, ApiError> {
    if path.len() + query.len() > MAX_TARGET_BYTES {
        return Err(ApiError::UriTooLong(MAX_TARGET_BYTES));
    }
    let matched = router::resolve(&ROUTES, method, path).map_err(|miss| {
        // Everything under the API needs a token, a path that leads nowhere too: a caller
        // without one learns nothing of which routes exist.
        let api = path == API_BASE || path.starts_with(&format!("{API_BASE}/"));
        if api && ctx.auth.classify(headers.get(header::AUTHORIZATION)) == Presented::Unknown {
            return ApiError::Unauthorized;
        }
        match miss {
            Miss::NotFound => ApiError::NotFound,
            Miss::MethodNotAllowed(allowed) => ApiError::MethodNotAllowed(allowed),
        }
    })?;
    *route = matched.route.pattern;
    ctx.auth
        .check(matched.route.access, headers.get(header::AUTHORIZATION))?;
    let req = Request::new(matched.params, query, headers, body, ctx.body_limit)?
        .with_body_timeout(ctx.body_timeout);
    dispatch(ctx, matched.route.endpoint, req).await
}

async fn dispatch(ctx: &Ctx, endpoint: Endpoint, req: Request) -> Result<Response, ApiError> {
    use Endpoint as E;
    match endpoint {
        E::Health => Ok(health::health()),
        E::Ready => Ok(health::ready(ctx)),
        E::Metrics => Ok(health::metrics(ctx).await),
        E::CreateSession => sessions::create(ctx, req).await,
        E::ListSessions => sessions::list(ctx).await,
        E::GetSession => sessions::get(ctx, req).await,
        E::DeleteSession => sessions::delete(ctx, req).await,
        E::SessionStatus => sessions::status(ctx, req).await,
        E::Connect => sessions::connect(ctx, req).await,
        E::Disconnect => sessions::disconnect(ctx, req).await,
        E::Logout => sessions::logout(ctx, req).await,
        E::Qr => sessions::qr_code(ctx, req).await,
        E::Pair => sessions::pair(ctx, req).await,
        E::Device => sessions::device(ctx, req).await,
        E::ListGroups => groups::list(ctx, req).await,
        E::CreateGroup => groups::create(ctx, req).await,
        E::JoinGroup => groups::join(ctx, req).await,
        E::InviteInfo => groups::invite_info(ctx, req).await,
        E::GetGroup => groups::get(ctx, req).await,
        E::GroupInfo => groups::info(ctx, req).await,
        E::SetSubject => groups::set_subject(ctx, req).await,
        E::SetDescription => groups::set_description(ctx, req).await,
        E::LeaveGroup => groups::leave(ctx, req).await,
        E::AddParticipants => groups::add_participants(ctx, req).await,
        E::RemoveParticipants => groups::remove_participants(ctx, req).await,
        E::PromoteAdmins => groups::promote(ctx, req).await,
        E::DemoteAdmins => groups::demote(ctx, req).await,
        E::InviteLink => groups::invite_link(ctx, req).await,
        E::GroupSettings => groups::settings(ctx, req).await,
        E::SendText => messages::send_text(ctx, req).await,
        E::PullEvents => events::pull(ctx, req).await,
        E::StreamEvents => events::stream(ctx, req).await,
        E::CreateWebhook => webhooks::create(ctx, req).await,
        E::ListWebhooks => webhooks::list(ctx).await,
        E::GetWebhook => webhooks::get(ctx, req).await,
        E::UpdateWebhook => webhooks::update(ctx, req).await,
        E::DeleteWebhook => webhooks::delete(ctx, req).await,
        E::ReplayWebhook => webhooks::replay(ctx, req).await,
        E::ActorTree => Ok(admin::tree(ctx)),
        E::Actor => admin::actor(ctx, req).await,
        E::RestartActor => admin::restart(ctx, &req),
        #[cfg(feature = "test-server")]
        E::CrashActor => admin::crash(ctx, &req),
        E::SessionSnapshot => admin::snapshot(ctx, &req),
        E::StreamAllEvents => events::stream_all(ctx, req).await,
        E::OpenApi => Ok(openapi::openapi_json()),
        E::Docs => Ok(ui::docs()),
        E::DocsFile => ui::docs_file(&req),
        E::Dashboard => Ok(ui::dashboard()),
        E::DashboardAsset => ui::asset(&req),
    }
}

/// The filter above never rejects; should warp still hand back a rejection, it is answered in
/// the contract's shape rather than warp's plain text.
async fn stray_rejection(err: Rejection) -> Result<Response, Infallible> {
    tracing::warn!(?err, "unexpected rejection");
    Ok(if err.is_not_found() {
        ApiError::NotFound.into_response()
    } else {
        ApiError::validation("request", "the request could not be read").into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(admin: bool) -> Auth {
        Auth {
            api: Secret::new("api-token-1".into()),
            admin: admin.then(|| Secret::new("admin-token-1".into())),
        }
    }

    fn header(value: &str) -> HeaderValue {
        HeaderValue::from_str(value).unwrap()
    }

    #[test]
    fn tokens_are_classified_with_any_scheme_case() {
        let auth = auth(true);
        let classify = |v: &str| auth.classify(Some(&header(v)));
        assert_eq!(classify("Bearer api-token-1"), Presented::Api);
        assert_eq!(classify("bearer api-token-1"), Presented::Api);
        assert_eq!(classify("BEARER admin-token-1"), Presented::Admin);
        assert_eq!(classify("Bearer api-token-"), Presented::Unknown);
        assert_eq!(classify("api-token-1"), Presented::Unknown);
        assert_eq!(classify("Basic api-token-1"), Presented::Unknown);
        assert_eq!(auth.classify(None), Presented::Unknown);
    }

    #[test]
    fn the_admin_token_opens_the_api_and_the_api_token_not_admin() {
        let auth = auth(true);
        let api = header("Bearer api-token-1");
        let admin = header("Bearer admin-token-1");
        assert!(auth.check(Access::Api, Some(&admin)).is_ok());
        assert!(auth.check(Access::Admin, Some(&admin)).is_ok());
        assert_eq!(
            auth.check(Access::Admin, Some(&api)).unwrap_err().code(),
            "forbidden"
        );
        assert_eq!(
            auth.check(Access::Api, None).unwrap_err().code(),
            "unauthorized"
        );
        assert!(auth.check(Access::Public, None).is_ok());
    }

    #[test]
    fn without_an_admin_token_the_api_token_is_admin() {
        let auth = auth(false);
        assert!(
            auth.check(Access::Admin, Some(&header("Bearer api-token-1")))
                .is_ok()
        );
    }
}
