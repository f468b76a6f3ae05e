//! `/admin`: the live actor tree, one actor with its state, restarting an actor, and a
//! session's persisted snapshot (contract: `admin.md`). Admin token only.

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::errors::OrReject;
use super::{Ctx, admin_auth, json_status, session_id, with_ctx};
use wagate_actors::GatewayError;

pub fn routes(ctx: Ctx) -> BoxedFilter<(warp::reply::Response,)> {
    let auth = admin_auth(ctx.clone());
    let tree = warp::path!("admin" / "actors")
        .and(warp::get())
        .and(auth.clone())
        .and(with_ctx(ctx.clone()))
        .map(|ctx: Ctx| {
            let actors: Vec<_> = ctx.gateway.actor_tree().into_iter().collect();
            warp::reply::json(&serde_json::json!({ "actors": actors }))
        });
    let node = warp::path!("admin" / "actors" / String)
        .and(warp::get())
        .and(auth.clone())
        .and(with_ctx(ctx.clone()))
        .and_then(node);
    let restart = warp::path!("admin" / "actors" / String / "restart")
        .and(warp::post())
        .and(auth.clone())
        .and(with_ctx(ctx.clone()))
        .and_then(restart);
    let snapshot = warp::path!("admin" / "sessions" / String / "snapshot")
        .and(warp::get())
        .and(auth.clone())
        .and(with_ctx(ctx.clone()))
        .and_then(snapshot);
    let routes = tree.or(node).or(restart).or(snapshot);
    #[cfg(feature = "test-server")]
    let routes = routes.or(warp::path!("admin" / "actors" / String / "crash")
        .and(warp::post())
        .and(auth)
        .and(with_ctx(ctx))
        .and_then(crash));
    #[cfg(not(feature = "test-server"))]
    let _ = (auth, ctx);
    routes.map(Reply::into_response).boxed()
}

fn actor_name(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

async fn node(name: String, ctx: Ctx) -> Result<impl Reply, Rejection> {
    let name = actor_name(&name);
    let (node, state) = ctx.gateway.actor(&name).await.or_reject()?;
    let mut body = serde_json::to_value(node)
        .map_err(|e| GatewayError::Internal(e.to_string()))
        .or_reject()?;
    if let Some(obj) = body.as_object_mut() {
        obj.insert("state".into(), state);
    }
    Ok(warp::reply::json(&body))
}

async fn restart(name: String, ctx: Ctx) -> Result<impl Reply, Rejection> {
    ctx.gateway.restart_actor(&actor_name(&name)).or_reject()?;
    Ok(json_status(
        &serde_json::json!({"success": true}),
        StatusCode::ACCEPTED,
    ))
}

#[cfg(feature = "test-server")]
async fn crash(name: String, ctx: Ctx) -> Result<impl Reply, Rejection> {
    ctx.gateway.crash_actor(&actor_name(&name)).or_reject()?;
    Ok(json_status(
        &serde_json::json!({"success": true}),
        StatusCode::ACCEPTED,
    ))
}

async fn snapshot(id: String, ctx: Ctx) -> Result<impl Reply, Rejection> {
    let id = session_id(&id)?;
    Ok(warp::reply::json(&ctx.gateway.snapshot(&id).or_reject()?))
}
