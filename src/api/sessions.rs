//! `/sessions`: create, list, inspect, connect, disconnect, log out, pair (QR or code) and
//! delete sessions (contract: `sessions.md`).

use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::errors::{ApiError, OrReject};
use super::models::{CreateSession, PairRequest, QrQuery, json_body};
use super::{Ctx, api_auth, json_status, qr, session_id, with_ctx};
use wagate_actors::model::{SessionId, normalize_phone};

pub fn routes(ctx: Ctx) -> BoxedFilter<(warp::reply::Response,)> {
    let limit = ctx.body_limit;
    let auth = api_auth(ctx.clone());
    let create = warp::path!("sessions")
        .and(warp::post())
        .and(auth.clone())
        .and(json_body::<CreateSession>(limit))
        .and(with_ctx(ctx.clone()))
        .and_then(create);
    let list = warp::path!("sessions")
        .and(warp::get())
        .and(auth.clone())
        .and(with_ctx(ctx.clone()))
        .and_then(list);
    let get = warp::path!("sessions" / String)
        .and(warp::get())
        .and(auth.clone())
        .and(with_ctx(ctx.clone()))
        .and_then(get);
    let delete = warp::path!("sessions" / String)
        .and(warp::delete())
        .and(auth.clone())
        .and(with_ctx(ctx.clone()))
        .and_then(delete);
    let status = warp::path!("sessions" / String / "status")
        .and(warp::get())
        .and(auth.clone())
        .and(with_ctx(ctx.clone()))
        .and_then(status);
    let connect = warp::path!("sessions" / String / "connect")
        .and(warp::post())
        .and(auth.clone())
        .and(with_ctx(ctx.clone()))
        .and_then(connect);
    let disconnect = warp::path!("sessions" / String / "disconnect")
        .and(warp::post())
        .and(auth.clone())
        .and(with_ctx(ctx.clone()))
        .and_then(disconnect);
    let logout = warp::path!("sessions" / String / "logout")
        .and(warp::post())
        .and(auth.clone())
        .and(with_ctx(ctx.clone()))
        .and_then(logout);
    let qr = warp::path!("sessions" / String / "qr")
        .and(warp::get())
        .and(auth.clone())
        .and(warp::query::<QrQuery>())
        .and(with_ctx(ctx.clone()))
        .and_then(qr_code);
    let pair = warp::path!("sessions" / String / "pair")
        .and(warp::post())
        .and(auth.clone())
        .and(json_body::<PairRequest>(limit))
        .and(with_ctx(ctx.clone()))
        .and_then(pair);
    let device = warp::path!("sessions" / String / "device")
        .and(warp::get())
        .and(auth)
        .and(with_ctx(ctx))
        .and_then(device);
    create
        .or(list)
        .or(get)
        .or(delete)
        .or(status)
        .or(connect)
        .or(disconnect)
        .or(logout)
        .or(qr)
        .or(pair)
        .or(device)
        .map(Reply::into_response)
        .boxed()
}

fn success() -> warp::reply::Json {
    warp::reply::json(&serde_json::json!({"success": true}))
}

async fn create(body: CreateSession, ctx: Ctx) -> Result<warp::reply::Response, Rejection> {
    let id = match body.id.as_deref() {
        Some(raw) => Some(SessionId::parse(raw).map_err(|_| {
            ApiError::InvalidSessionId(format!(
                "'{raw}' is not a session id (1-64 characters of A-Z, a-z, 0-9, '_' and '-')"
            ))
            .reject()
        })?),
        None => None,
    };
    let name = match body.name {
        Some(name) if name.trim().is_empty() || name.chars().count() > 256 => {
            return Err(ApiError::validation("name", "must be 1-256 characters").reject());
        }
        other => other,
    };
    let session = ctx.gateway.create_session(id, name).await.or_reject()?;
    Ok(json_status(
        &serde_json::json!({ "session": session }),
        StatusCode::CREATED,
    ))
}

async fn list(ctx: Ctx) -> Result<impl Reply, Rejection> {
    let sessions = ctx.gateway.list_sessions().await.or_reject()?;
    Ok(warp::reply::json(&serde_json::json!({
        "total": sessions.len(),
        "sessions": sessions,
    })))
}

async fn get(id: String, ctx: Ctx) -> Result<impl Reply, Rejection> {
    let id = session_id(&id)?;
    Ok(warp::reply::json(
        &ctx.gateway.session(&id).await.or_reject()?,
    ))
}

async fn delete(id: String, ctx: Ctx) -> Result<impl Reply, Rejection> {
    let id = session_id(&id)?;
    ctx.gateway.delete(&id).await.or_reject()?;
    Ok(success())
}

async fn status(id: String, ctx: Ctx) -> Result<impl Reply, Rejection> {
    let id = session_id(&id)?;
    Ok(warp::reply::json(
        &ctx.gateway.status(&id).await.or_reject()?,
    ))
}

async fn connect(id: String, ctx: Ctx) -> Result<impl Reply, Rejection> {
    let id = session_id(&id)?;
    let status = ctx.gateway.connect(&id).await.or_reject()?;
    Ok(warp::reply::json(
        &serde_json::json!({"success": true, "status": status}),
    ))
}

async fn disconnect(id: String, ctx: Ctx) -> Result<impl Reply, Rejection> {
    let id = session_id(&id)?;
    ctx.gateway.disconnect(&id).await.or_reject()?;
    Ok(success())
}

async fn logout(id: String, ctx: Ctx) -> Result<impl Reply, Rejection> {
    let id = session_id(&id)?;
    ctx.gateway.logout(&id).await.or_reject()?;
    Ok(success())
}

async fn qr_code(id: String, query: QrQuery, ctx: Ctx) -> Result<warp::reply::Response, Rejection> {
    let id = session_id(&id)?;
    let format = query
        .format
        .as_deref()
        .unwrap_or("json")
        .to_ascii_lowercase();
    if !matches!(format.as_str(), "json" | "png" | "svg") {
        return Err(ApiError::validation("format", "expected png, svg or json").reject());
    }
    let view = ctx.gateway.qr(&id).await.or_reject()?;
    let Some(code) = view.qr_codes.first() else {
        return Ok(warp::reply::json(&view).into_response());
    };
    let rendered = match format.as_str() {
        "png" => qr::png(code).map(|bytes| {
            warp::reply::with_header(bytes, "content-type", "image/png").into_response()
        }),
        "svg" => qr::svg(code).map(|text| {
            warp::reply::with_header(text, "content-type", "image/svg+xml").into_response()
        }),
        _ => return Ok(warp::reply::json(&view).into_response()),
    };
    rendered
        .map_err(|e| wagate_actors::GatewayError::Internal(format!("rendering the QR code: {e}")))
        .or_reject()
}

async fn pair(id: String, body: PairRequest, ctx: Ctx) -> Result<impl Reply, Rejection> {
    let id = session_id(&id)?;
    let phone = normalize_phone(&body.phone_number).or_reject()?;
    Ok(warp::reply::json(
        &ctx.gateway.pair(&id, phone).await.or_reject()?,
    ))
}

async fn device(id: String, ctx: Ctx) -> Result<impl Reply, Rejection> {
    let id = session_id(&id)?;
    Ok(warp::reply::json(
        &ctx.gateway.device(&id).await.or_reject()?,
    ))
}
