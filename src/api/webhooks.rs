//! `/webhooks`: registering, changing, deleting and replaying webhooks (contract:
//! `events.md`). The secret is shown once, in the answer that created it.

use warp::http::StatusCode;
use warp::reply::Response;

use super::errors::ApiError;
use super::models::{CreateWebhook, ReplayWebhook, UpdateWebhook};
use super::request::{Request, session_id};
use super::{Ctx, json, json_status, success};
use wagate_actors::event_log::is_event_type;
use wagate_actors::webhook_delivery::{check_url, secret_key};
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

pub async fn list(ctx: &Ctx) -> Result<Response, ApiError> {
    let hooks = ctx.gateway.list_webhooks().await?;
    Ok(json(&serde_json::json!({ "webhooks": hooks })))
}

pub async fn get(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    Ok(json(&ctx.gateway.webhook(webhook_id(&req)).await?))
}

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

pub async fn delete(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    ctx.gateway.delete_webhook(webhook_id(&req)).await?;
    Ok(success())
}

pub async fn replay(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let id = webhook_id(&req);
    let body: ReplayWebhook = req.json().await?;
    let session = session_id(&body.session)?;
    Ok(json(
        &ctx.gateway.replay_webhook(id, &session, body.after).await?,
    ))
}
