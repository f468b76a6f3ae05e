//! `/admin`: the live actor tree, one actor with its state, restarting an actor, and a
//! session's persisted snapshot (contract: `admin.md`). Admin token only.

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;

use super::errors::ApiError;
use super::request::Request;
use super::{Ctx, json, json_status};

pub fn tree(ctx: &Ctx) -> Response {
    let actors: Vec<_> = ctx.gateway.actor_tree().into_iter().collect();
    json(&json!({ "actors": actors }))
}

pub async fn actor(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let (node, state) = ctx.gateway.actor(req.param(0)).await?;
    let mut body = serde_json::to_value(node)
        .map_err(|e| wagate_actors::GatewayError::Internal(e.to_string()))?;
    if let Some(obj) = body.as_object_mut() {
        obj.insert("state".into(), state);
    }
    Ok(json(&body))
}

pub fn restart(ctx: &Ctx, req: &Request) -> Result<Response, ApiError> {
    ctx.gateway.restart_actor(req.param(0))?;
    Ok(json_status(&json!({"success": true}), StatusCode::ACCEPTED))
}

#[cfg(feature = "test-server")]
pub fn crash(ctx: &Ctx, req: &Request) -> Result<Response, ApiError> {
    ctx.gateway.crash_actor(req.param(0))?;
    Ok(json_status(&json!({"success": true}), StatusCode::ACCEPTED))
}

pub fn snapshot(ctx: &Ctx, req: &Request) -> Result<Response, ApiError> {
    Ok(json(&ctx.gateway.snapshot(&req.session()?)?))
}
