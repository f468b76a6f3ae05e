//! `/sessions/{id}/messages`: sending text to a user or a group (contract: `messages.md`).

use warp::reply::Response;

use super::errors::ApiError;
use super::errors::ErrorBody;
use super::models::SendText;
use super::request::Request;
use super::{Ctx, json};
use wagate_actors::model::ChatJid;
use wagate_actors::model::SentMessage;

/// WhatsApp's own limit for one text.
const MAX_TEXT_CHARS: usize = 65_536;

#[utoipa::path(
    post,
    path = "/api/v1/sessions/{id}/messages/text",
    tag = "messages",
    summary = "Send a text to a user or a group",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
    ),
    request_body = SendText,
    responses(
        (status = 200, description = "Accepted by WhatsApp", body = SentMessage),
        (status = 400, description = "`invalid_json`, `validation`, `invalid_jid`, `invalid_session_id`", body = ErrorBody),
        (status = 403, description = "`not_group_admin`", body = ErrorBody),
        (status = 404, description = "`session_not_found`, `group_not_found`; `not_found` for a `quoted_id` the session's event log does not hold (a reply quotes a message the session received, or sent from another device, while it is retained)", body = ErrorBody),
        (status = 409, description = "`not_logged_in`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
        (status = 504, description = "`whatsapp_timeout`", body = ErrorBody),
    ),
)]
pub async fn send_text(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let id = req.session()?;
    let body: SendText = req.json().await?;
    let to = ChatJid::parse(&body.to).ok_or_else(|| {
        ApiError::invalid_jid("to", format!("'{}' is not a user or group JID", body.to))
    })?;
    if body.text.is_empty() || body.text.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::validation(
            "text",
            format!("must be 1-{MAX_TEXT_CHARS} characters"),
        ));
    }
    if body
        .quoted_id
        .as_deref()
        .is_some_and(|q| q.trim().is_empty())
    {
        return Err(ApiError::validation(
            "quoted_id",
            "must name a message id when present",
        ));
    }
    Ok(json(
        &ctx.gateway
            .send_text(&id, to, body.text, body.quoted_id)
            .await?,
    ))
}
