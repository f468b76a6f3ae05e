//! `/sessions/{id}/groups`: every group endpoint of `groups.md`, in its order, then those of
//! `groups-extra.md` (join, invite info, settings). Reads are served by the session's groups
//! actor from its cache; invite operations by its invites actor.

use serde::Deserialize;
use warp::filters::BoxedFilter;
use warp::{Filter, Rejection, Reply};

use super::errors::{ApiError, OrReject};
use super::models::json_body;
use super::{Ctx, api_auth, session_id, with_ctx};
use wagate_actors::groups::{CachedGroup, GroupsMsg, ParticipantAction};
use wagate_actors::invites::{InvitesMsg, invite_code};
use wagate_actors::model::{
    GroupInfoView, GroupJid, GroupView, ParticipantResult, ParticipantView, UserJid,
};

#[derive(Debug, Default, Deserialize)]
pub struct RefreshQuery {
    pub refresh: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ResetQuery {
    pub reset: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct InviteQuery {
    pub code: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CreateGroup {
    pub name: String,
    #[serde(default)]
    pub participants: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct SetSubject {
    pub subject: String,
}

#[derive(Debug, Deserialize)]
pub struct SetDescription {
    /// `null` deletes the description.
    pub description: Option<String>,
    #[serde(default)]
    pub prev_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Participants {
    pub participants: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct JoinGroup {
    pub code: String,
}

#[derive(Debug, Deserialize)]
pub struct Settings {
    pub announce: Option<bool>,
    pub locked: Option<bool>,
}

/// At most this many participants per request (WhatsApp's own group size limit).
const MAX_PARTICIPANTS: usize = 1024;

pub fn routes(ctx: Ctx) -> BoxedFilter<(warp::reply::Response,)> {
    let limit = ctx.body_limit;
    let auth = api_auth(ctx.clone());
    let c = move || with_ctx(ctx.clone());
    let list = warp::path!("sessions" / String / "groups")
        .and(warp::get())
        .and(auth.clone())
        .and(warp::query::<RefreshQuery>())
        .and(c())
        .and_then(list);
    let create = warp::path!("sessions" / String / "groups")
        .and(warp::post())
        .and(auth.clone())
        .and(json_body::<CreateGroup>(limit))
        .and(c())
        .and_then(create);
    // Literal paths before `{group_jid}` so `join` and `invite-info` are never read as JIDs.
    let join = warp::path!("sessions" / String / "groups" / "join")
        .and(warp::post())
        .and(auth.clone())
        .and(json_body::<JoinGroup>(limit))
        .and(c())
        .and_then(join);
    let invite_info = warp::path!("sessions" / String / "groups" / "invite-info")
        .and(warp::get())
        .and(auth.clone())
        .and(warp::query::<InviteQuery>())
        .and(c())
        .and_then(invite_info);
    let get = warp::path!("sessions" / String / "groups" / String)
        .and(warp::get())
        .and(auth.clone())
        .and(warp::query::<RefreshQuery>())
        .and(c())
        .and_then(get);
    let info = warp::path!("sessions" / String / "groups" / String / "info")
        .and(warp::get())
        .and(auth.clone())
        .and(warp::query::<RefreshQuery>())
        .and(c())
        .and_then(info);
    let subject = warp::path!("sessions" / String / "groups" / String / "subject")
        .and(warp::put())
        .and(auth.clone())
        .and(json_body::<SetSubject>(limit))
        .and(c())
        .and_then(set_subject);
    let description = warp::path!("sessions" / String / "groups" / String / "description")
        .and(warp::put())
        .and(auth.clone())
        .and(json_body::<SetDescription>(limit))
        .and(c())
        .and_then(set_description);
    let leave = warp::path!("sessions" / String / "groups" / String / "leave")
        .and(warp::post())
        .and(auth.clone())
        .and(c())
        .and_then(leave);
    let add = warp::path!("sessions" / String / "groups" / String / "participants")
        .and(warp::post())
        .and(auth.clone())
        .and(json_body::<Participants>(limit))
        .and(c())
        .and_then(|s, g, b, ctx| participants(s, g, b, ctx, ParticipantAction::Add));
    let remove = warp::path!("sessions" / String / "groups" / String / "participants")
        .and(warp::delete())
        .and(auth.clone())
        .and(json_body::<Participants>(limit))
        .and(c())
        .and_then(|s, g, b, ctx| participants(s, g, b, ctx, ParticipantAction::Remove));
    let promote = warp::path!("sessions" / String / "groups" / String / "admins")
        .and(warp::post())
        .and(auth.clone())
        .and(json_body::<Participants>(limit))
        .and(c())
        .and_then(|s, g, b, ctx| admins(s, g, b, ctx, ParticipantAction::Promote));
    let demote = warp::path!("sessions" / String / "groups" / String / "admins")
        .and(warp::delete())
        .and(auth.clone())
        .and(json_body::<Participants>(limit))
        .and(c())
        .and_then(|s, g, b, ctx| admins(s, g, b, ctx, ParticipantAction::Demote));
    let invite_link = warp::path!("sessions" / String / "groups" / String / "invite-link")
        .and(warp::get())
        .and(auth.clone())
        .and(warp::query::<ResetQuery>())
        .and(c())
        .and_then(invite_link);
    let settings = warp::path!("sessions" / String / "groups" / String / "settings")
        .and(warp::put())
        .and(auth)
        .and(json_body::<Settings>(limit))
        .and(c())
        .and_then(settings);
    list.or(create)
        .or(join)
        .or(invite_info)
        .or(get)
        .or(info)
        .or(subject)
        .or(description)
        .or(leave)
        .or(add)
        .or(remove)
        .or(promote)
        .or(demote)
        .or(invite_link)
        .or(settings)
        .map(Reply::into_response)
        .boxed()
}

fn success() -> warp::reply::Json {
    warp::reply::json(&serde_json::json!({"success": true}))
}

fn group_jid(raw: &str) -> Result<GroupJid, Rejection> {
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    GroupJid::parse(&decoded).ok_or_else(|| {
        ApiError::InvalidJid {
            field: "group_jid".into(),
            message: format!("'{decoded}' is not a group JID (e.g. 123456789-1234567890@g.us)"),
        }
        .reject()
    })
}

/// Parses a participant list: non-empty, every entry a user JID or phone number, no duplicates.
pub fn user_list(raw: &[String], allow_empty: bool) -> Result<Vec<UserJid>, Rejection> {
    if raw.is_empty() && !allow_empty {
        return Err(ApiError::validation("participants", "must not be empty").reject());
    }
    if raw.len() > MAX_PARTICIPANTS {
        return Err(ApiError::validation(
            "participants",
            format!("at most {MAX_PARTICIPANTS} per request"),
        )
        .reject());
    }
    let mut out: Vec<UserJid> = Vec::with_capacity(raw.len());
    for (i, entry) in raw.iter().enumerate() {
        let jid = UserJid::parse(entry).ok_or_else(|| {
            ApiError::InvalidJid {
                field: format!("participants[{i}]"),
                message: format!("'{entry}' is not a user JID or phone number"),
            }
            .reject()
        })?;
        if !out.contains(&jid) {
            out.push(jid);
        }
    }
    Ok(out)
}

async fn list(session: String, q: RefreshQuery, ctx: Ctx) -> Result<impl Reply, Rejection> {
    let id = session_id(&session)?;
    let refresh = q.refresh.unwrap_or(false);
    let groups = ctx
        .gateway
        .groups(&id, |reply| GroupsMsg::List { refresh, reply })
        .await
        .or_reject()?;
    Ok(warp::reply::json(&serde_json::json!({
        "groups": groups,
        "total": groups.len(),
    })))
}

async fn fetch(
    session: &str,
    group: &str,
    q: RefreshQuery,
    ctx: &Ctx,
) -> Result<CachedGroup, Rejection> {
    let id = session_id(session)?;
    let jid = group_jid(group)?;
    let refresh = q.refresh.unwrap_or(false);
    ctx.gateway
        .groups(&id, |reply| GroupsMsg::Get {
            jid,
            refresh,
            reply,
        })
        .await
        .or_reject()
}

async fn get(
    session: String,
    group: String,
    q: RefreshQuery,
    ctx: Ctx,
) -> Result<impl Reply, Rejection> {
    // `invite-info` is its own route; a rejection there falls through to this one, which must
    // not answer for it.
    if group == "invite-info" {
        return Err(warp::reject::not_found());
    }
    let g = fetch(&session, &group, q, &ctx).await?;
    Ok(warp::reply::json(&GroupView {
        participant_count: g.participants.len(),
        jid: g.jid,
        name: g.name,
        topic: g.topic.unwrap_or_default(),
        created_at: g.created_at,
    }))
}

async fn info(
    session: String,
    group: String,
    q: RefreshQuery,
    ctx: Ctx,
) -> Result<impl Reply, Rejection> {
    let g = fetch(&session, &group, q, &ctx).await?;
    Ok(warp::reply::json(&GroupInfoView {
        jid: g.jid,
        name: g.name,
        topic: g.topic.unwrap_or_default(),
        owner: g.owner,
        created_at: g.created_at,
        participants: g
            .participants
            .into_iter()
            .map(|p| ParticipantView {
                jid: p.jid,
                role: p.role,
            })
            .collect(),
    }))
}

fn check_subject(field: &str, text: &str) -> Result<(), Rejection> {
    let len = text.chars().count();
    if text.trim().is_empty() || len > 100 {
        return Err(ApiError::validation(field, "must be 1-100 characters").reject());
    }
    Ok(())
}

async fn create(session: String, body: CreateGroup, ctx: Ctx) -> Result<impl Reply, Rejection> {
    let id = session_id(&session)?;
    check_subject("name", &body.name)?;
    let participants = user_list(&body.participants, true)?;
    let jid = ctx
        .gateway
        .groups(&id, |reply| GroupsMsg::Create {
            name: body.name,
            participants,
            reply,
        })
        .await
        .or_reject()?;
    Ok(warp::reply::json(&serde_json::json!({ "group_jid": jid })))
}

async fn set_subject(
    session: String,
    group: String,
    body: SetSubject,
    ctx: Ctx,
) -> Result<impl Reply, Rejection> {
    let id = session_id(&session)?;
    let jid = group_jid(&group)?;
    check_subject("subject", &body.subject)?;
    ctx.gateway
        .groups(&id, |reply| GroupsMsg::SetSubject {
            jid,
            subject: body.subject,
            reply,
        })
        .await
        .or_reject()?;
    Ok(success())
}

async fn set_description(
    session: String,
    group: String,
    body: SetDescription,
    ctx: Ctx,
) -> Result<impl Reply, Rejection> {
    let id = session_id(&session)?;
    let jid = group_jid(&group)?;
    if body
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 2048)
    {
        return Err(ApiError::validation("description", "at most 2048 characters").reject());
    }
    if body
        .prev_id
        .as_ref()
        .is_some_and(|p| p.is_empty() || p.len() > 64)
    {
        return Err(
            ApiError::validation("prev_id", "must be the id of the current description").reject(),
        );
    }
    ctx.gateway
        .groups(&id, |reply| GroupsMsg::SetDescription {
            jid,
            description: body.description,
            prev_id: body.prev_id,
            reply,
        })
        .await
        .or_reject()?;
    Ok(success())
}

async fn leave(session: String, group: String, ctx: Ctx) -> Result<impl Reply, Rejection> {
    let id = session_id(&session)?;
    let jid = group_jid(&group)?;
    ctx.gateway
        .groups(&id, |reply| GroupsMsg::Leave { jid, reply })
        .await
        .or_reject()?;
    Ok(success())
}

/// Sends one participant change to the groups actor; WhatsApp answers per participant.
async fn change_participants(
    session: &str,
    group: &str,
    body: Participants,
    ctx: &Ctx,
    action: ParticipantAction,
) -> Result<Vec<ParticipantResult>, Rejection> {
    let id = session_id(session)?;
    let jid = group_jid(group)?;
    let participants = user_list(&body.participants, false)?;
    ctx.gateway
        .groups(&id, |reply| GroupsMsg::Participants {
            jid,
            action,
            participants,
            reply,
        })
        .await
        .or_reject()
}

/// Add and remove answer with each participant's result.
async fn participants(
    session: String,
    group: String,
    body: Participants,
    ctx: Ctx,
    action: ParticipantAction,
) -> Result<warp::reply::Json, Rejection> {
    let results = change_participants(&session, &group, body, &ctx, action).await?;
    Ok(warp::reply::json(
        &serde_json::json!({ "results": results }),
    ))
}

/// Promote and demote answer `success`; a refusal for any participant fails the call, naming
/// them.
async fn admins(
    session: String,
    group: String,
    body: Participants,
    ctx: Ctx,
    action: ParticipantAction,
) -> Result<warp::reply::Json, Rejection> {
    let results = change_participants(&session, &group, body, &ctx, action).await?;
    let refused: Vec<String> = results
        .iter()
        .filter(|r| !matches!(r.status.as_str(), "Promoted" | "Demoted"))
        .map(|r| format!("{} ({})", r.jid, r.status))
        .collect();
    if !refused.is_empty() {
        return Err(ApiError::validation(
            "participants",
            format!("WhatsApp refused: {}", refused.join(", ")),
        )
        .reject());
    }
    Ok(success())
}

async fn invite_link(
    session: String,
    group: String,
    q: ResetQuery,
    ctx: Ctx,
) -> Result<impl Reply, Rejection> {
    let id = session_id(&session)?;
    let jid = group_jid(&group)?;
    let reset = q.reset.unwrap_or(false);
    let link = ctx
        .gateway
        .invites(&id, |reply| InvitesMsg::Link { jid, reset, reply })
        .await
        .or_reject()?;
    Ok(warp::reply::json(
        &serde_json::json!({ "invite_link": link }),
    ))
}

fn code_of(raw: &str) -> Result<String, Rejection> {
    invite_code(raw).ok_or_else(|| {
        ApiError::validation(
            "code",
            "expected an invite code or a https://chat.whatsapp.com/ link",
        )
        .reject()
    })
}

async fn join(session: String, body: JoinGroup, ctx: Ctx) -> Result<impl Reply, Rejection> {
    let id = session_id(&session)?;
    let code = code_of(&body.code)?;
    let jid = ctx
        .gateway
        .invites(&id, |reply| InvitesMsg::Join { code, reply })
        .await
        .or_reject()?;
    Ok(warp::reply::json(&serde_json::json!({ "group_jid": jid })))
}

async fn invite_info(session: String, q: InviteQuery, ctx: Ctx) -> Result<impl Reply, Rejection> {
    let id = session_id(&session)?;
    let raw = q.code.ok_or_else(|| {
        ApiError::validation("code", "the code query parameter is required").reject()
    })?;
    let code = code_of(&raw)?;
    let info = ctx
        .gateway
        .invites(&id, |reply| InvitesMsg::Info { code, reply })
        .await
        .or_reject()?;
    Ok(warp::reply::json(&info))
}

async fn settings(
    session: String,
    group: String,
    body: Settings,
    ctx: Ctx,
) -> Result<impl Reply, Rejection> {
    let id = session_id(&session)?;
    let jid = group_jid(&group)?;
    if body.announce.is_none() && body.locked.is_none() {
        return Err(
            ApiError::validation("announce", "give at least one of announce and locked").reject(),
        );
    }
    ctx.gateway
        .groups(&id, |reply| GroupsMsg::Settings {
            jid,
            announce: body.announce,
            locked: body.locked,
            reply,
        })
        .await
        .or_reject()?;
    Ok(success())
}
