//! `/sessions/{id}/messages`: sending text to a user or a group (contract: `messages.md`).

use serde::Deserialize;
use warp::filters::BoxedFilter;
use warp::{Filter, Rejection, Reply};

use super::errors::{ApiError, OrReject};
use super::models::json_body;
use super::{Ctx, api_auth, session_id, with_ctx};
use wagate_actors::model::ChatJid;

/// WhatsApp's own limit for one text.
const MAX_TEXT_CHARS: usize = 65_536;

#[derive(Debug, Deserialize)]
pub struct SendText {
    pub to: String,
    pub text: String,
    #[serde(default)]
    pub quoted_id: Option<String>,
}

pub fn routes(ctx: Ctx) -> BoxedFilter<(warp::reply::Response,)> {
    warp::path!("sessions" / String / "messages" / "text")
        .and(warp::post())
        .and(api_auth(ctx.clone()))
        .and(json_body::<SendText>(ctx.body_limit))
        .and(with_ctx(ctx))
        .and_then(send_text)
        .map(Reply::into_response)
        .boxed()
}

async fn send_text(session: String, body: SendText, ctx: Ctx) -> Result<impl Reply, Rejection> {
    let id = session_id(&session)?;
    let to = ChatJid::parse(&body.to).ok_or_else(|| {
        ApiError::InvalidJid {
            field: "to".into(),
            message: format!("'{}' is not a user or group JID", body.to),
        }
        .reject()
    })?;
    let chars = body.text.chars().count();
    if body.text.trim().is_empty() || chars > MAX_TEXT_CHARS {
        return Err(
            ApiError::validation("text", format!("must be 1-{MAX_TEXT_CHARS} characters")).reject(),
        );
    }
    if body.quoted_id.is_some() {
        // A quote needs the quoted message's sender and content, which wagate does not store
        // yet; sending the text without the quote would be a silent lie.
        return Err(ApiError::validation(
            "quoted_id",
            "quoting is not supported yet; send the text without quoted_id",
        )
        .reject());
    }
    let sent = ctx
        .gateway
        .send_text(&id, to, body.text)
        .await
        .or_reject()?;
    Ok(warp::reply::json(&sent))
}
