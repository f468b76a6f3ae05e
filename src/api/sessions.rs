//! `/sessions`: create, list, inspect, connect, disconnect, log out, pair (QR or code) and
//! delete sessions (contract: `sessions.md`).

use warp::Reply;
use warp::http::StatusCode;
use warp::reply::Response;

use super::errors::ApiError;
use super::errors::ErrorBody;
use super::models::Success;
use super::models::{Connected, CreateSession, PairRequest, SessionCreated, SessionList};
use super::request::{Request, session_id};
use super::{Ctx, json, json_status, qr, success};
use wagate_actors::model::normalize_phone;
use wagate_actors::model::{DeviceView, PairCodeView, QrView, SessionView, StatusView};

#[utoipa::path(
    post,
    path = "/api/v1/sessions",
    tag = "sessions",
    summary = "Create a session; it starts connecting at once",
    request_body = CreateSession,
    responses(
        (status = 201, description = "The session", body = SessionCreated),
        (status = 400, description = "`invalid_json`, `validation`, `invalid_session_id`", body = ErrorBody),
        (status = 409, description = "`session_exists`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
    ),
)]
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
        &SessionCreated { session },
        StatusCode::CREATED,
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/sessions",
    tag = "sessions",
    summary = "List the sessions",
    responses(
        (status = 200, description = "Every session", body = SessionList),
    ),
)]
pub async fn list(ctx: &Ctx) -> Result<Response, ApiError> {
    let sessions = ctx.gateway.list_sessions().await?;
    Ok(json(&SessionList {
        total: sessions.len(),
        sessions,
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/sessions/{id}",
    tag = "sessions",
    summary = "One session",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
    ),
    responses(
        (status = 200, description = "The session object", body = SessionView),
        (status = 400, description = "`invalid_session_id`", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
    ),
)]
pub async fn get(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    Ok(json(&ctx.gateway.session(&req.session()?).await?))
}

#[utoipa::path(
    delete,
    path = "/api/v1/sessions/{id}",
    tag = "sessions",
    summary = "Delete a session: unlinks the device, stops its actors, erases what is stored for it",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
    ),
    responses(
        (status = 200, description = "Deleted", body = Success),
        (status = 400, description = "`invalid_session_id`", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
    ),
)]
pub async fn delete(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    ctx.gateway.delete(&req.session()?).await?;
    Ok(success())
}

#[utoipa::path(
    get,
    path = "/api/v1/sessions/{id}/status",
    tag = "sessions",
    summary = "A session's live status",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
    ),
    responses(
        (status = 200, description = "The status", body = StatusView),
        (status = 400, description = "`invalid_session_id`", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
    ),
)]
pub async fn status(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    Ok(json(&ctx.gateway.status(&req.session()?).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/sessions/{id}/connect",
    tag = "sessions",
    summary = "(Re)connect; the session stays wanted online across restarts",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
    ),
    responses(
        (status = 200, description = "Connecting or connected", body = Connected),
        (status = 400, description = "`invalid_session_id`", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
    ),
)]
pub async fn connect(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let status = ctx.gateway.connect(&req.session()?).await?;
    Ok(json(&Connected {
        success: true,
        status,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/sessions/{id}/disconnect",
    tag = "sessions",
    summary = "Close the socket and keep the credentials; stays offline until connect",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
    ),
    responses(
        (status = 200, description = "Disconnected", body = Success),
        (status = 400, description = "`invalid_session_id`", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
    ),
)]
pub async fn disconnect(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    ctx.gateway.disconnect(&req.session()?).await?;
    Ok(success())
}

#[utoipa::path(
    post,
    path = "/api/v1/sessions/{id}/logout",
    tag = "sessions",
    summary = "Unlink the device and erase its credentials; the record stays (`logged_out`)",
    description = "A session that is not logged in connects first, since only a logged-in client can unlink its device; when WhatsApp does not let it log in within `whatsapp.request_timeout`, nothing changes and the answer is 504.",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
    ),
    responses(
        (status = 200, description = "Logged out", body = Success),
        (status = 400, description = "`invalid_session_id`", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 409, description = "`not_logged_in`", body = ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
        (status = 504, description = "`whatsapp_timeout`: WhatsApp did not answer; the device stays linked, its credentials stay", body = ErrorBody),
    ),
)]
pub async fn logout(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    ctx.gateway.logout(&req.session()?).await?;
    Ok(success())
}

#[utoipa::path(
    get,
    path = "/api/v1/sessions/{id}/qr",
    tag = "sessions",
    summary = "The pending QR code, as JSON or as an image",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
        ("format" = Option<String>, Query, description = "`json` (default), `png` or `svg`"),
    ),
    responses(
        (status = 200, description = "The QR codes (JSON), or the current code as `image/png` / `image/svg+xml`", content(
            (QrView = "application/json"),
            (Vec<u8> = "image/png"),
            (String = "image/svg+xml"),
        )),
        (status = 400, description = "`validation`, `invalid_session_id`", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 409, description = "`no_qr_pending`, `already_logged_in`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
    ),
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/sessions/{id}/pair",
    tag = "sessions",
    summary = "Pair by code: WhatsApp shows this code on the phone to enter",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
    ),
    request_body = PairRequest,
    responses(
        (status = 200, description = "The pair code", body = PairCodeView),
        (status = 400, description = "`invalid_json`, `validation`, `invalid_session_id`", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 409, description = "`pair_code_pending`, `already_logged_in`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
        (status = 504, description = "`whatsapp_timeout`", body = ErrorBody),
    ),
)]
pub async fn pair(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let id = req.session()?;
    let body: PairRequest = req.json().await?;
    let phone = normalize_phone(&body.phone_number)?;
    Ok(json(&ctx.gateway.pair(&id, phone).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/sessions/{id}/device",
    tag = "sessions",
    summary = "The linked device, also while the session is offline",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
    ),
    responses(
        (status = 200, description = "The device", body = DeviceView),
        (status = 400, description = "`invalid_session_id`", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 409, description = "`not_logged_in`: not paired (yet, or since a logout)", body = ErrorBody),
    ),
)]
pub async fn device(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    Ok(json(&ctx.gateway.device(&req.session()?).await?))
}
