//! `/sessions/{id}/messages`: sending text to a user or a group (contract: `messages.md`).

use warp::reply::Response;

use super::errors::ApiError;
use super::models::SendText;
use super::request::Request;
use super::{Ctx, json};
use wagate_actors::model::ChatJid;

/// WhatsApp's own limit for one text.
const MAX_TEXT_CHARS: usize = 65_536;

pub async fn send_text(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let id = req.session()?;
    let body: SendText = req.json().await?;
    let to = ChatJid::parse(&body.to).ok_or_else(|| {
        ApiError::invalid_jid("to", format!("'{}' is not a user or group JID", body.to))
    })?;
    if body.text.trim().is_empty() || body.text.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::validation(
            "text",
            format!("must be 1-{MAX_TEXT_CHARS} characters"),
        ));
    }
    if body.quoted_id.is_some() {
        // A quote needs the quoted message's sender and content, which wagate does not store
        // yet; sending the text without the quote would be a silent lie.
        return Err(ApiError::validation(
            "quoted_id",
            "quoting is not supported yet; send the text without quoted_id",
        ));
    }
    Ok(json(&ctx.gateway.send_text(&id, to, body.text).await?))
}
