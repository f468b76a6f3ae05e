//! `/sessions`: create, list, inspect, connect, disconnect, log out, pair (QR or code) and
//! delete sessions (contract: `sessions.md`).

use serde_json::json;
use warp::Reply;
use warp::http::StatusCode;
use warp::reply::Response;

use super::errors::ApiError;
use super::models::{CreateSession, PairRequest};
use super::request::{Request, session_id};
use super::{Ctx, json, json_status, qr, success};
use wagate_actors::model::normalize_phone;

pub async fn create(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let body: CreateSession = req.json().await?;
    let id = body.id.as_deref().map(session_id).transpose()?;
    let name = match body.name {
        Some(name) if name.trim().is_empty() || name.chars().count() > 256 => {
            return Err(ApiError::validation("name", "must be 1-256 characters"));
        }
        other => other,
    };
    let session = ctx.gateway.create_session(id, name).await?;
    Ok(json_status(
        &json!({ "session": session }),
        StatusCode::CREATED,
    ))
}

pub async fn list(ctx: &Ctx) -> Result<Response, ApiError> {
    let sessions = ctx.gateway.list_sessions().await?;
    Ok(json(
        &json!({ "total": sessions.len(), "sessions": sessions }),
    ))
}

pub async fn get(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    Ok(json(&ctx.gateway.session(&req.session()?).await?))
}

pub async fn delete(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    ctx.gateway.delete(&req.session()?).await?;
    Ok(success())
}

pub async fn status(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    Ok(json(&ctx.gateway.status(&req.session()?).await?))
}

pub async fn connect(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let status = ctx.gateway.connect(&req.session()?).await?;
    Ok(json(&json!({ "success": true, "status": status })))
}

pub async fn disconnect(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    ctx.gateway.disconnect(&req.session()?).await?;
    Ok(success())
}

pub async fn logout(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    ctx.gateway.logout(&req.session()?).await?;
    Ok(success())
}

pub async fn qr_code(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let id = req.session()?;
    let format = req.query("format").unwrap_or("json").to_ascii_lowercase();
    if !matches!(format.as_str(), "json" | "png" | "svg") {
        return Err(ApiError::validation("format", "expected png, svg or json"));
    }
    let view = ctx.gateway.qr(&id).await?;
    let code = match view.qr_codes.first() {
        Some(code) if format != "json" => code,
        _ => return Ok(json(&view)),
    };
    let rendered = if format == "png" {
        qr::png(code).map(|bytes| {
            warp::reply::with_header(bytes, "content-type", "image/png").into_response()
        })
    } else {
        qr::svg(code).map(|text| {
            warp::reply::with_header(text, "content-type", "image/svg+xml").into_response()
        })
    };
    rendered.map_err(|e| {
        wagate_actors::GatewayError::Internal(format!("rendering the QR code: {e}")).into()
    })
}

pub async fn pair(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let id = req.session()?;
    let body: PairRequest = req.json().await?;
    let phone = normalize_phone(&body.phone_number)?;
    Ok(json(&ctx.gateway.pair(&id, phone).await?))
}

pub async fn device(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    Ok(json(&ctx.gateway.device(&req.session()?).await?))
}
