//! `/webhooks`: registering, changing, deleting and replaying webhooks (contract:
//! `events.md`). The secret is shown once, in the answer that created it.

use warp::http::StatusCode;
use warp::reply::Response;

use super::errors::ApiError;
use super::errors::ErrorBody;
use super::models::Success;
use super::models::{CreateWebhook, ReplayWebhook, UpdateWebhook, WebhookList};
use super::request::{Request, session_id};
use super::{Ctx, json, json_status, success};
use wagate_actors::event_log::is_event_type;
use wagate_actors::webhook_delivery::{check_url, secret_key};
use wagate_actors::webhooks::{CreatedWebhook, WebhookView};
use wagate_actors::webhooks::{WebhookPatch, WebhookSpec};

const MAX_URL_BYTES: usize = 2048;

fn url(raw: String) -> Result<String, ApiError> {
    if raw.len() > MAX_URL_BYTES {
        return Err(ApiError::validation(
            "url",
            format!("longer than {MAX_URL_BYTES} bytes"),
        ));
    }
    check_url(&raw).map_err(|m| ApiError::validation("url", m))?;
    Ok(raw)
}

/// `["*"]` or known event types.
fn events(list: Vec<String>) -> Result<Vec<String>, ApiError> {
    if list.is_empty() {
        return Err(ApiError::validation(
            "events",
            "name event types, or [\"*\"] for all",
        ));
    }
    if list.iter().any(|e| e == "*") {
        return Ok(vec!["*".into()]);
    }
    if let Some(unknown) = list.iter().find(|e| !is_event_type(e)) {
        return Err(ApiError::validation(
            "events",
            format!("'{unknown}' is not an event type"),
        ));
    }
    let mut list = list;
    list.dedup();
    Ok(list)
}

/// `["*"]` or session ids.
fn sessions(list: Vec<String>) -> Result<Vec<String>, ApiError> {
    if list.is_empty() {
        return Err(ApiError::validation(
            "sessions",
            "name session ids, or [\"*\"] for all",
        ));
    }
    if list.iter().any(|s| s == "*") {
        return Ok(vec!["*".into()]);
    }
    for raw in &list {
        session_id(raw).map_err(|_| {
            ApiError::validation("sessions", format!("'{raw}' is not a session id"))
        })?;
    }
    let mut list = list;
    list.dedup();
    Ok(list)
}

fn secret(raw: String) -> Result<String, ApiError> {
    secret_key(&raw).map(|_| raw).ok_or_else(|| {
        ApiError::validation(
            "secret",
            "must be whsec_ followed by the base64 of 16-64 random bytes",
        )
    })
}

fn webhook_id(req: &Request) -> String {
    req.param(0).to_owned()
}

#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    summary = "Register a webhook; the secret is shown only here",
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "The webhook, with its secret", body = CreatedWebhook),
        (status = 400, description = "`invalid_json`, `validation`, `invalid_session_id`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
    ),
)]
pub async fn create(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let body: CreateWebhook = req.json().await?;
    let spec = WebhookSpec {
        url: url(body.url)?,
        events: events(body.events.unwrap_or_else(|| vec!["*".into()]))?,
        sessions: sessions(body.sessions.unwrap_or_else(|| vec!["*".into()]))?,
        secret: body.secret.map(secret).transpose()?,
    };
    let created = ctx.gateway.create_webhook(spec).await?;
    Ok(json_status(&created, StatusCode::CREATED))
}

#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    summary = "Every webhook with its delivery state",
    responses(
        (status = 200, description = "The webhooks", body = WebhookList),
    ),
)]
pub async fn list(ctx: &Ctx) -> Result<Response, ApiError> {
    let hooks = ctx.gateway.list_webhooks().await?;
    Ok(json(&WebhookList { webhooks: hooks }))
}

#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "One webhook with its delivery state",
    params(
        ("id" = String, Path, description = "The webhook id"),
    ),
    responses(
        (status = 200, description = "The webhook", body = WebhookView),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
)]
pub async fn get(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    Ok(json(&ctx.gateway.webhook(webhook_id(&req)).await?))
}

#[utoipa::path(
    put,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "Change a webhook; a new secret signs beside the old one for 24 h",
    params(
        ("id" = String, Path, description = "The webhook id"),
    ),
    request_body = UpdateWebhook,
    responses(
        (status = 200, description = "The webhook", body = WebhookView),
        (status = 400, description = "`invalid_json`, `validation`, `invalid_session_id`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
    ),
)]
pub async fn update(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let id = webhook_id(&req);
    let body: UpdateWebhook = req.json().await?;
    let patch = WebhookPatch {
        url: body.url.map(url).transpose()?,
        events: body.events.map(events).transpose()?,
        sessions: body.sessions.map(sessions).transpose()?,
        secret: body.secret.map(secret).transpose()?,
    };
    Ok(json(&ctx.gateway.update_webhook(id, patch).await?))
}

#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "Delete a webhook",
    params(
        ("id" = String, Path, description = "The webhook id"),
    ),
    responses(
        (status = 200, description = "Deleted", body = Success),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
)]
pub async fn delete(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    ctx.gateway.delete_webhook(webhook_id(&req)).await?;
    Ok(success())
}

#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{id}/replay",
    tag = "webhooks",
    summary = "Deliver a session's events again from a seq",
    params(
        ("id" = String, Path, description = "The webhook id"),
    ),
    request_body = ReplayWebhook,
    responses(
        (status = 200, description = "The webhook", body = WebhookView),
        (status = 400, description = "`invalid_json`, `validation`, `invalid_session_id`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
    ),
)]
pub async fn replay(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let id = webhook_id(&req);
    let body: ReplayWebhook = req.json().await?;
    let session = session_id(&body.session)?;
    Ok(json(
        &ctx.gateway.replay_webhook(id, &session, body.after).await?,
    ))
}
