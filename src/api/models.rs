//! Request and response bodies, and the parsing of requests: syntax errors are 400
//! `invalid_json`, shape errors 400 `validation` naming the field. The OpenAPI document is
//! generated from these types, so the description cannot drift from what is served.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::errors::ApiError;
use wagate_actors::directory::NodeView;
use wagate_actors::model::{GroupSummary, ParticipantResult, SessionStatus, SessionView};
use wagate_actors::webhooks::WebhookView;

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateSession {
    pub id: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PairRequest {
    pub phone_number: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateGroup {
    pub name: String,
    #[serde(default)]
    pub participants: Vec<String>,
    pub member_add_mode: Option<String>,
    pub member_link_mode: Option<String>,
    pub membership_approval_mode: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SetSubject {
    pub subject: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SetDescription {
    /// Required: a text sets the description, `null` deletes it (`None` means the field was
    /// missing).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = true)]
    pub description: Option<Option<String>>,
    #[serde(default)]
    pub prev_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct Participants {
    pub participants: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct JoinGroup {
    pub code: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct GroupSettings {
    pub announce: Option<bool>,
    pub locked: Option<bool>,
    /// waxum's names: `admin_add` / `all_member_add`.
    pub member_add_mode: Option<String>,
    /// `admin_link` / `all_member_link`.
    pub member_link_mode: Option<String>,
    /// `on` / `off`.
    pub membership_approval_mode: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SendText {
    pub to: String,
    pub text: String,
    /// Replies to this message, quoting it: one the session received (or sent from another
    /// device) that its event log still holds.
    #[serde(default)]
    pub quoted_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    pub url: String,
    pub events: Option<Vec<String>>,
    pub sessions: Option<Vec<String>>,
    pub secret: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub sessions: Option<Vec<String>>,
    pub secret: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayWebhook {
    pub session: String,
    pub after: u64,
}

/// `{"success": true}`: the change is done (and, where it is stored, on disk).
#[derive(Debug, Serialize, ToSchema)]
pub struct Success {
    pub success: bool,
}

impl Success {
    pub const DONE: Success = Success { success: true };
}

/// `POST /sessions`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionCreated {
    pub session: SessionView,
}

/// `GET /sessions`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
    pub total: usize,
}

/// `POST /sessions/{id}/connect`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Connected {
    pub success: bool,
    pub status: SessionStatus,
}

/// `GET /sessions/{id}/groups`.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupList {
    pub groups: Vec<GroupSummary>,
    pub total: usize,
}

/// `POST /groups` and `POST /groups/join`.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupCreated {
    pub group_jid: String,
}

/// Adding or removing participants: one result per participant.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParticipantResults {
    pub results: Vec<ParticipantResult>,
}

/// `GET /groups/{group_jid}/invite-link`.
#[derive(Debug, Serialize, ToSchema)]
pub struct InviteLink {
    pub invite_link: String,
}

/// `GET /webhooks`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

/// `GET /admin/actors`: the supervision tree, rooted at the supervisor.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActorTree {
    pub actors: Vec<NodeView>,
}

/// `GET /admin/actors/{name}`: the node and what the actor holds now (redacted).
#[derive(Debug, Serialize, ToSchema)]
pub struct ActorDetail {
    #[serde(flatten)]
    pub node: NodeView,
    /// `null` while the actor is not running.
    #[schema(value_type = Option<Object>)]
    pub state: serde_json::Value,
}

/// `GET /health` and `GET /ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` for health; `ready` or `not_ready` for readiness.
    pub status: &'static str,
}

/// One event as every transport carries it (events.md). The log stores these bytes and the
/// transports send them as they are, so this type only describes them.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventEnvelope {
    /// Unique and stable across retries and transports: the idempotency key.
    pub id: String,
    /// Per session, from 1, strictly increasing without gaps.
    pub seq: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub session: String,
    pub occurred_at: u64,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// `GET /sessions/{id}/events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<EventEnvelope>,
    /// Pass as `after` to read on.
    pub next_after: u64,
}

/// Tells a field given as `null` (`Some(None)`) from a missing one (`None`, by `default`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// Parses a body, telling syntax errors (`invalid_json`) from shape errors (`validation`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let value: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    if !value.is_object() {
        return Err(ApiError::validation("body", "expected a JSON object"));
    }
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let field = if path == "." || path.is_empty() {
            // "missing field `x`" names the field itself.
            inner
                .split('`')
                .nth(1)
                .map(str::to_owned)
                .unwrap_or_else(|| "body".into())
        } else {
            path
        };
        ApiError::validation(field, inner)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(e: ApiError) -> String {
        match e {
            ApiError::InvalidJson(_) => "invalid_json".into(),
            ApiError::Validation { field, .. } => format!("validation:{field}"),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn bodies_are_classified() {
        assert_eq!(
            code(parse_json::<CreateSession>(b"{").unwrap_err()),
            "invalid_json"
        );
        assert_eq!(
            code(parse_json::<CreateSession>(br#"{"name": 5}"#).unwrap_err()),
            "validation:name"
        );
        assert_eq!(
            code(parse_json::<PairRequest>(b"{}").unwrap_err()),
            "validation:phone_number"
        );
        assert_eq!(
            code(parse_json::<CreateSession>(b"[]").unwrap_err()),
            "validation:body"
        );
        assert!(parse_json::<CreateSession>(b"").unwrap().id.is_none());
    }

    #[test]
    fn a_null_description_differs_from_a_missing_one() {
        let null = parse_json::<SetDescription>(br#"{"description": null}"#).unwrap();
        assert_eq!(null.description, Some(None));
        let text = parse_json::<SetDescription>(br#"{"description": "x"}"#).unwrap();
        assert_eq!(text.description, Some(Some("x".into())));
        let missing = parse_json::<SetDescription>(br#"{"prev_id": "a"}"#).unwrap();
        assert_eq!(missing.description, None);
    }
}
