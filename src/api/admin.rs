//! `/admin`: the live actor tree, one actor with its state, restarting an actor, and a
//! session's persisted snapshot (contract: `admin.md`). Admin token only.

use warp::http::StatusCode;
use warp::reply::Response;

use super::errors::ApiError;
use super::errors::ErrorBody;
use super::models::{ActorDetail, ActorTree, Success};
use super::request::Request;
use super::{Ctx, json, json_status};

#[utoipa::path(
    get,
    path = "/api/v1/admin/actors",
    tag = "admin",
    summary = "The live supervision tree",
    responses(
        (status = 200, description = "The tree", body = ActorTree),
    ),
)]
pub fn tree(ctx: &Ctx) -> Response {
    let actors: Vec<_> = ctx.gateway.actor_tree().into_iter().collect();
    json(&ActorTree { actors })
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/actors/{name}",
    tag = "admin",
    summary = "One actor and what it holds now (redacted)",
    params(
        ("name" = String, Path, description = "The actor name as /admin/actors shows it, e.g. `session:s1/groups`"),
    ),
    responses(
        (status = 200, description = "The actor", body = ActorDetail),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
    ),
)]
pub async fn actor(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let (node, state) = ctx.gateway.actor(req.param(0)).await?;
    Ok(json(&ActorDetail { node, state }))
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/actors/{name}/restart",
    tag = "admin",
    summary = "Stop an actor; its supervisor restarts it from its last snapshot",
    params(
        ("name" = String, Path, description = "The actor name as /admin/actors shows it, e.g. `session:s1/groups`"),
    ),
    responses(
        (status = 202, description = "Restarting", body = Success),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
)]
pub fn restart(ctx: &Ctx, req: &Request) -> Result<Response, ApiError> {
    ctx.gateway.restart_actor(req.param(0))?;
    Ok(json_status(&Success::DONE, StatusCode::ACCEPTED))
}

#[cfg(feature = "test-server")]
#[utoipa::path(
    post,
    path = "/api/v1/admin/actors/{name}/crash",
    tag = "admin",
    summary = "Test builds only: make an actor panic",
    params(
        ("name" = String, Path, description = "The actor name as /admin/actors shows it, e.g. `session:s1/groups`"),
    ),
    responses(
        (status = 202, description = "Crashing", body = Success),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
)]
pub fn crash(ctx: &Ctx, req: &Request) -> Result<Response, ApiError> {
    ctx.gateway.crash_actor(req.param(0))?;
    Ok(json_status(&Success::DONE, StatusCode::ACCEPTED))
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/sessions/{id}/snapshot",
    tag = "admin",
    summary = "The session's persisted snapshot as stored (redacted), with `saved_at`",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
    ),
    responses(
        (status = 200, description = "The snapshot", body = Object),
        (status = 400, description = "`invalid_session_id`", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
    ),
)]
pub fn snapshot(ctx: &Ctx, req: &Request) -> Result<Response, ApiError> {
    Ok(json(&ctx.gateway.snapshot(&req.session()?)?))
}
