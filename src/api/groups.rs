//! `/sessions/{id}/groups`: every group endpoint of `groups.md`, in its order, then those of
//! `groups-extra.md` (join, invite info, settings). Handlers validate, call one typed
//! [`Gateway`](wagate_actors::Gateway) method and shape its answer.

use warp::reply::Response;

use super::errors::ApiError;
use super::errors::ErrorBody;
use super::models::Success;
use super::models::{
    CreateGroup, GroupCreated, GroupList, GroupSettings, InviteLink, JoinGroup, ParticipantResults,
    Participants, SetDescription, SetSubject,
};
use super::request::Request;
use super::{Ctx, json, rendered, success};
use wagate_actors::invites::invite_code;
use wagate_actors::model::{GroupInfoView, GroupView, InviteInfoView};
use wagate_actors::model::{
    GroupJid, GroupSettingsChange, MemberAddMode, MemberLinkMode, SessionId, UserJid,
};

/// At most this many participants per request (WhatsApp's own group size limit).
const MAX_PARTICIPANTS: usize = 1024;
/// WhatsApp's limits for a subject and a description.
const MAX_SUBJECT_CHARS: usize = 100;
const MAX_DESCRIPTION_CHARS: usize = 2048;

/// Parses a participant list: every entry a user JID or phone number, duplicates dropped.
pub fn user_list(raw: &[String], allow_empty: bool) -> Result<Vec<UserJid>, ApiError> {
    if raw.is_empty() && !allow_empty {
        return Err(ApiError::validation("participants", "must not be empty"));
    }
    if raw.len() > MAX_PARTICIPANTS {
        return Err(ApiError::validation(
            "participants",
            format!("at most {MAX_PARTICIPANTS} per request"),
        ));
    }
    let mut out: Vec<UserJid> = Vec::with_capacity(raw.len());
    for (i, entry) in raw.iter().enumerate() {
        let jid = UserJid::parse(entry).ok_or_else(|| {
            ApiError::invalid_jid(
                format!("participants[{i}]"),
                format!("'{entry}' is not a user JID or phone number"),
            )
        })?;
        if !out.contains(&jid) {
            out.push(jid);
        }
    }
    Ok(out)
}

fn check_subject(field: &str, text: &str) -> Result<(), ApiError> {
    if text.trim().is_empty() || text.chars().count() > MAX_SUBJECT_CHARS {
        return Err(ApiError::validation(
            field,
            format!("must be 1-{MAX_SUBJECT_CHARS} characters"),
        ));
    }
    Ok(())
}

fn code_of(raw: &str) -> Result<String, ApiError> {
    invite_code(raw).ok_or_else(|| {
        ApiError::validation(
            "code",
            "expected an invite code or a https://chat.whatsapp.com/ link",
        )
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/sessions/{id}/groups",
    tag = "groups",
    summary = "The groups this account is in (cached)",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
        ("refresh" = Option<bool>, Query, description = "`true` asks WhatsApp instead of the cache"),
    ),
    responses(
        (status = 200, description = "The groups", body = GroupList),
        (status = 400, description = "`invalid_session_id`", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 409, description = "`not_logged_in`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
        (status = 504, description = "`whatsapp_timeout`", body = ErrorBody),
    ),
)]
pub async fn list(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let id = req.session()?;
    let groups = ctx.gateway.list_groups(&id, req.flag("refresh")?).await?;
    Ok(json(&GroupList {
        total: groups.len(),
        groups,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/sessions/{id}/groups",
    tag = "groups",
    summary = "Create a group",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
    ),
    request_body = CreateGroup,
    responses(
        (status = 200, description = "The new group", body = GroupCreated),
        (status = 400, description = "`invalid_json`, `validation`, `invalid_jid`, `invalid_session_id`", body = ErrorBody),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 409, description = "`not_logged_in`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
        (status = 504, description = "`whatsapp_timeout`", body = ErrorBody),
    ),
)]
pub async fn create(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let id = req.session()?;
    let body: CreateGroup = req.json().await?;
    check_subject("name", &body.name)?;
    let participants = user_list(&body.participants, true)?;
    let settings = modes(
        body.member_add_mode.as_deref(),
        body.member_link_mode.as_deref(),
        body.membership_approval_mode.as_deref(),
    )?;
    let jid = ctx
        .gateway
        .create_group(&id, body.name, participants, settings)
        .await?;
    Ok(json(&GroupCreated {
        group_jid: jid.to_string(),
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/sessions/{id}/groups/{group_jid}",
    tag = "groups",
    summary = "One group (cached)",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
        ("group_jid" = String, Path, description = "A group JID (`<id>@g.us`) or a bare group id"),
        ("refresh" = Option<bool>, Query, description = "`true` asks WhatsApp instead of the cache"),
    ),
    responses(
        (status = 200, description = "The group", body = GroupView),
        (status = 400, description = "`invalid_session_id`, `invalid_jid`", body = ErrorBody),
        (status = 404, description = "`session_not_found`, `group_not_found`", body = ErrorBody),
        (status = 409, description = "`not_logged_in`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
        (status = 504, description = "`whatsapp_timeout`", body = ErrorBody),
    ),
)]
pub async fn get(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let (id, jid) = (req.session()?, req.group()?);
    Ok(rendered(
        &ctx.gateway.group(&id, &jid, req.flag("refresh")?).await?,
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/sessions/{id}/groups/{group_jid}/info",
    tag = "groups",
    summary = "One group with its participants (cached)",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
        ("group_jid" = String, Path, description = "A group JID (`<id>@g.us`) or a bare group id"),
        ("refresh" = Option<bool>, Query, description = "`true` asks WhatsApp instead of the cache"),
    ),
    responses(
        (status = 200, description = "The group and its participants", body = GroupInfoView),
        (status = 400, description = "`invalid_session_id`, `invalid_jid`", body = ErrorBody),
        (status = 404, description = "`session_not_found`, `group_not_found`", body = ErrorBody),
        (status = 409, description = "`not_logged_in`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
        (status = 504, description = "`whatsapp_timeout`", body = ErrorBody),
    ),
)]
pub async fn info(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let (id, jid) = (req.session()?, req.group()?);
    Ok(rendered(
        &ctx.gateway
            .group_info(&id, &jid, req.flag("refresh")?)
            .await?,
    ))
}

#[utoipa::path(
    put,
    path = "/api/v1/sessions/{id}/groups/{group_jid}/subject",
    tag = "groups",
    summary = "Rename a group",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
        ("group_jid" = String, Path, description = "A group JID (`<id>@g.us`) or a bare group id"),
    ),
    request_body = SetSubject,
    responses(
        (status = 200, description = "Renamed", body = Success),
        (status = 400, description = "`invalid_json`, `validation`, `invalid_session_id`, `invalid_jid`", body = ErrorBody),
        (status = 403, description = "`not_group_admin`", body = ErrorBody),
        (status = 404, description = "`session_not_found`, `group_not_found`", body = ErrorBody),
        (status = 409, description = "`not_logged_in`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
        (status = 504, description = "`whatsapp_timeout`", body = ErrorBody),
    ),
)]
pub async fn set_subject(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let (id, jid) = (req.session()?, req.group()?);
    let body: SetSubject = req.json().await?;
    check_subject("subject", &body.subject)?;
    ctx.gateway
        .set_group_subject(&id, jid, body.subject)
        .await?;
    Ok(success())
}

#[utoipa::path(
    put,
    path = "/api/v1/sessions/{id}/groups/{group_jid}/description",
    tag = "groups",
    summary = "Set or delete (`null`) a group's description",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
        ("group_jid" = String, Path, description = "A group JID (`<id>@g.us`) or a bare group id"),
    ),
    request_body = SetDescription,
    responses(
        (status = 200, description = "Set", body = Success),
        (status = 400, description = "`invalid_json`, `validation`, `invalid_session_id`, `invalid_jid`", body = ErrorBody),
        (status = 403, description = "`not_group_admin`", body = ErrorBody),
        (status = 404, description = "`session_not_found`, `group_not_found`", body = ErrorBody),
        (status = 409, description = "`description_conflict`, `not_logged_in`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
        (status = 504, description = "`whatsapp_timeout`", body = ErrorBody),
    ),
)]
pub async fn set_description(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let (id, jid) = (req.session()?, req.group()?);
    let body: SetDescription = req.json().await?;
    let description = body.description.ok_or_else(|| {
        ApiError::validation(
            "description",
            "required: a text sets the description, null deletes it",
        )
    })?;
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
    {
        return Err(ApiError::validation(
            "description",
            format!("at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    if body
        .prev_id
        .as_ref()
        .is_some_and(|p| p.is_empty() || p.len() > 64)
    {
        return Err(ApiError::validation(
            "prev_id",
            "must be the id of the current description",
        ));
    }
    ctx.gateway
        .set_group_description(&id, jid, description, body.prev_id)
        .await?;
    Ok(success())
}

#[utoipa::path(
    post,
    path = "/api/v1/sessions/{id}/groups/{group_jid}/leave",
    tag = "groups",
    summary = "Leave a group",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
        ("group_jid" = String, Path, description = "A group JID (`<id>@g.us`) or a bare group id"),
    ),
    responses(
        (status = 200, description = "Left", body = Success),
        (status = 400, description = "`invalid_session_id`, `invalid_jid`", body = ErrorBody),
        (status = 404, description = "`session_not_found`, `group_not_found`", body = ErrorBody),
        (status = 409, description = "`not_logged_in`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
        (status = 504, description = "`whatsapp_timeout`", body = ErrorBody),
    ),
)]
pub async fn leave(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let (id, jid) = (req.session()?, req.group()?);
    ctx.gateway.leave_group(&id, jid).await?;
    Ok(success())
}

/// The group, and the participants the body names.
async fn participants_request(
    req: Request,
) -> Result<(SessionId, GroupJid, Vec<UserJid>), ApiError> {
    let (id, jid) = (req.session()?, req.group()?);
    let body: Participants = req.json().await?;
    Ok((id, jid, user_list(&body.participants, false)?))
}

#[utoipa::path(
    post,
    path = "/api/v1/sessions/{id}/groups/{group_jid}/participants",
    tag = "groups",
    summary = "Add participants",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
        ("group_jid" = String, Path, description = "A group JID (`<id>@g.us`) or a bare group id"),
    ),
    request_body = Participants,
    responses(
        (status = 200, description = "One result per participant", body = ParticipantResults),
        (status = 400, description = "`invalid_json`, `validation`, `invalid_session_id`, `invalid_jid`", body = ErrorBody),
        (status = 403, description = "`not_group_admin`", body = ErrorBody),
        (status = 404, description = "`session_not_found`, `group_not_found`", body = ErrorBody),
        (status = 409, description = "`not_logged_in`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
        (status = 504, description = "`whatsapp_timeout`", body = ErrorBody),
    ),
)]
pub async fn add_participants(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let (id, jid, users) = participants_request(req).await?;
    let results = ctx.gateway.add_participants(&id, jid, users).await?;
    Ok(json(&ParticipantResults { results }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/sessions/{id}/groups/{group_jid}/participants",
    tag = "groups",
    summary = "Remove participants",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
        ("group_jid" = String, Path, description = "A group JID (`<id>@g.us`) or a bare group id"),
    ),
    request_body = Participants,
    responses(
        (status = 200, description = "One result per participant", body = ParticipantResults),
        (status = 400, description = "`invalid_json`, `validation`, `invalid_session_id`, `invalid_jid`", body = ErrorBody),
        (status = 403, description = "`not_group_admin`", body = ErrorBody),
        (status = 404, description = "`session_not_found`, `group_not_found`", body = ErrorBody),
        (status = 409, description = "`not_logged_in`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
        (status = 504, description = "`whatsapp_timeout`", body = ErrorBody),
    ),
)]
pub async fn remove_participants(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let (id, jid, users) = participants_request(req).await?;
    let results = ctx.gateway.remove_participants(&id, jid, users).await?;
    Ok(json(&ParticipantResults { results }))
}

#[utoipa::path(
    post,
    path = "/api/v1/sessions/{id}/groups/{group_jid}/admins",
    tag = "groups",
    summary = "Promote participants to admins",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
        ("group_jid" = String, Path, description = "A group JID (`<id>@g.us`) or a bare group id"),
    ),
    request_body = Participants,
    responses(
        (status = 200, description = "Promoted", body = Success),
        (status = 400, description = "`invalid_json`, `validation`, `invalid_session_id`, `invalid_jid`", body = ErrorBody),
        (status = 403, description = "`not_group_admin`", body = ErrorBody),
        (status = 404, description = "`session_not_found`, `group_not_found`", body = ErrorBody),
        (status = 409, description = "`not_logged_in`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
        (status = 504, description = "`whatsapp_timeout`", body = ErrorBody),
    ),
)]
pub async fn promote(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let (id, jid, users) = participants_request(req).await?;
    ctx.gateway.promote_participants(&id, jid, users).await?;
    Ok(success())
}

#[utoipa::path(
    delete,
    path = "/api/v1/sessions/{id}/groups/{group_jid}/admins",
    tag = "groups",
    summary = "Demote admins",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
        ("group_jid" = String, Path, description = "A group JID (`<id>@g.us`) or a bare group id"),
    ),
    request_body = Participants,
    responses(
        (status = 200, description = "Demoted", body = Success),
        (status = 400, description = "`invalid_json`, `validation`, `invalid_session_id`, `invalid_jid`", body = ErrorBody),
        (status = 403, description = "`not_group_admin`", body = ErrorBody),
        (status = 404, description = "`session_not_found`, `group_not_found`", body = ErrorBody),
        (status = 409, description = "`not_logged_in`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
        (status = 504, description = "`whatsapp_timeout`", body = ErrorBody),
    ),
)]
pub async fn demote(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let (id, jid, users) = participants_request(req).await?;
    ctx.gateway.demote_participants(&id, jid, users).await?;
    Ok(success())
}

#[utoipa::path(
    get,
    path = "/api/v1/sessions/{id}/groups/{group_jid}/invite-link",
    tag = "groups",
    summary = "The group's invite link",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
        ("group_jid" = String, Path, description = "A group JID (`<id>@g.us`) or a bare group id"),
        ("reset" = Option<bool>, Query, description = "`true` revokes the current link and makes a new one"),
    ),
    responses(
        (status = 200, description = "The link", body = InviteLink),
        (status = 400, description = "`invalid_session_id`, `invalid_jid`", body = ErrorBody),
        (status = 403, description = "`not_group_admin`", body = ErrorBody),
        (status = 404, description = "`session_not_found`, `group_not_found`", body = ErrorBody),
        (status = 409, description = "`not_logged_in`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
        (status = 504, description = "`whatsapp_timeout`", body = ErrorBody),
    ),
)]
pub async fn invite_link(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let (id, jid) = (req.session()?, req.group()?);
    let link = ctx
        .gateway
        .invite_link(&id, jid, req.flag("reset")?)
        .await?;
    Ok(json(&InviteLink { invite_link: link }))
}

#[utoipa::path(
    post,
    path = "/api/v1/sessions/{id}/groups/join",
    tag = "groups",
    summary = "Join a group by invite code or link",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
    ),
    request_body = JoinGroup,
    responses(
        (status = 200, description = "The joined group", body = GroupCreated),
        (status = 400, description = "`invalid_json`, `validation`, `invalid_session_id`", body = ErrorBody),
        (status = 404, description = "`session_not_found`; `not_found` for an unknown or revoked code", body = ErrorBody),
        (status = 409, description = "`not_logged_in`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
        (status = 504, description = "`whatsapp_timeout`", body = ErrorBody),
    ),
)]
pub async fn join(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let id = req.session()?;
    let body: JoinGroup = req.json().await?;
    let jid = ctx.gateway.join_group(&id, code_of(&body.code)?).await?;
    Ok(json(&GroupCreated {
        group_jid: jid.to_string(),
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/sessions/{id}/groups/invite-info",
    tag = "groups",
    summary = "What an invite code leads to, without joining",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
        ("code" = String, Query, description = "An invite code or a https://chat.whatsapp.com/ link"),
    ),
    responses(
        (status = 200, description = "The group behind the code", body = InviteInfoView),
        (status = 400, description = "`validation`, `invalid_session_id`", body = ErrorBody),
        (status = 404, description = "`session_not_found`; `not_found` for an unknown or revoked code", body = ErrorBody),
        (status = 409, description = "`not_logged_in`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
        (status = 504, description = "`whatsapp_timeout`", body = ErrorBody),
    ),
)]
pub async fn invite_info(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let id = req.session()?;
    let raw = req
        .query("code")
        .ok_or_else(|| ApiError::validation("code", "the code query parameter is required"))?;
    let info = ctx.gateway.invite_info(&id, code_of(raw)?).await?;
    Ok(json(&info))
}

/// waxum's setting names and values, checked.
fn modes(
    member_add_mode: Option<&str>,
    member_link_mode: Option<&str>,
    membership_approval_mode: Option<&str>,
) -> Result<GroupSettingsChange, ApiError> {
    let member_add_mode = member_add_mode
        .map(|raw| {
            MemberAddMode::parse(raw).ok_or_else(|| {
                ApiError::validation("member_add_mode", "expected admin_add or all_member_add")
            })
        })
        .transpose()?;
    let member_link_mode = member_link_mode
        .map(|raw| {
            MemberLinkMode::parse(raw).ok_or_else(|| {
                ApiError::validation("member_link_mode", "expected admin_link or all_member_link")
            })
        })
        .transpose()?;
    let membership_approval = membership_approval_mode
        .map(|raw| match raw {
            "on" => Ok(true),
            "off" => Ok(false),
            _ => Err(ApiError::validation(
                "membership_approval_mode",
                "expected on or off",
            )),
        })
        .transpose()?;
    Ok(GroupSettingsChange {
        member_add_mode,
        member_link_mode,
        membership_approval,
        ..Default::default()
    })
}

#[utoipa::path(
    put,
    path = "/api/v1/sessions/{id}/groups/{group_jid}/settings",
    tag = "groups",
    summary = "Change a group's settings; absent fields stay as they are",
    params(
        ("id" = String, Path, description = "The session id: 1-64 of A-Z a-z 0-9 _ -"),
        ("group_jid" = String, Path, description = "A group JID (`<id>@g.us`) or a bare group id"),
    ),
    request_body = GroupSettings,
    responses(
        (status = 200, description = "Changed", body = Success),
        (status = 400, description = "`invalid_json`, `validation`, `invalid_session_id`, `invalid_jid`", body = ErrorBody),
        (status = 403, description = "`not_group_admin`", body = ErrorBody),
        (status = 404, description = "`session_not_found`, `group_not_found`", body = ErrorBody),
        (status = 409, description = "`not_logged_in`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody),
        (status = 504, description = "`whatsapp_timeout`", body = ErrorBody),
    ),
)]
pub async fn settings(ctx: &Ctx, req: Request) -> Result<Response, ApiError> {
    let (id, jid) = (req.session()?, req.group()?);
    let body: GroupSettings = req.json().await?;
    let change = GroupSettingsChange {
        announce: body.announce,
        locked: body.locked,
        ..modes(
            body.member_add_mode.as_deref(),
            body.member_link_mode.as_deref(),
            body.membership_approval_mode.as_deref(),
        )?
    };
    if change.is_empty() {
        return Err(ApiError::validation(
            "announce",
            "give at least one of announce, locked, member_add_mode, member_link_mode and \
             membership_approval_mode",
        ));
    }
    ctx.gateway.set_group_settings(&id, jid, change).await?;
    Ok(success())
}
