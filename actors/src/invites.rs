//! `session:<id>/invites`: group invite links (cached and persisted; `reset` revokes the old
//! link), joining a group by code or link, and reading an invite's group without joining.
//! WhatsApp round-trips run in spawned tasks that report back by message.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use whatsapp_rust::{Client, GroupError, IqError, Jid};

use crate::directory::{self, ActorKind, Handle};
use crate::error::{GatewayError, Result};
use crate::groups::{CachedGroup, GroupsMsg, map_group_error};
use crate::model::{GroupJid, InviteInfoView, SessionId};
use crate::services::Shared;
use crate::session::SessionMsg;
use crate::store::CacheKind;

const LINK_PREFIX: &str = "https://chat.whatsapp.com/";

/// A group's invite link as last seen.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CachedInvite {
    pub group_jid: String,
    pub link: String,
    pub fetched_at: u64,
}

pub enum InvitesMsg {
    ClientChanged(Option<Arc<Client>>),
    Inspect(RpcReplyPort<serde_json::Value>),
    /// The group's invite link; `reset` revokes the current one and returns the new one.
    Link {
        jid: GroupJid,
        reset: bool,
        reply: RpcReplyPort<Result<String>>,
    },
    /// Joins the group behind a code or link.
    Join {
        code: String,
        reply: RpcReplyPort<Result<GroupJid>>,
    },
    /// The group behind a code or link, without joining.
    Info {
        code: String,
        reply: RpcReplyPort<Result<InviteInfoView>>,
    },
    /// A link query finished: cache it, then answer.
    LinkFetched {
        jid: GroupJid,
        result: Result<String>,
        reply: RpcReplyPort<Result<String>>,
    },
    #[cfg(feature = "test-server")]
    Crash,
}

impl InvitesMsg {
    /// Answers a request that cannot reach this actor.
    pub fn reject(self, error: GatewayError) {
        match self {
            Self::Inspect(reply) => {
                drop(reply.send(serde_json::json!({ "error": error.to_string() })))
            }
            Self::Link { reply, .. } => drop(reply.send(Err(error))),
            Self::Join { reply, .. } => drop(reply.send(Err(error))),
            Self::Info { reply, .. } => drop(reply.send(Err(error))),
            Self::LinkFetched { reply, .. } => drop(reply.send(Err(error))),
            Self::ClientChanged(_) => {}
            #[cfg(feature = "test-server")]
            Self::Crash => {}
        }
    }
}

pub struct InvitesActor;

pub struct InvitesArgs {
    pub services: Shared,
    pub id: SessionId,
    pub client: Option<Arc<Client>>,
    /// The parent session, to tell its groups actor about groups joined here.
    pub session: ActorRef<SessionMsg>,
}

pub struct InvitesState {
    services: Shared,
    id: SessionId,
    name: String,
    client: Option<Arc<Client>>,
    session: ActorRef<SessionMsg>,
    links: BTreeMap<String, CachedInvite>,
    messages: Arc<AtomicU64>,
}

/// Maps a failed join or invite-info query: unknown, expired or revoked codes are `not_found`.
fn map_invite_error(e: GroupError, timeout: Duration) -> GatewayError {
    match e {
        GroupError::Iq(IqError::ServerError {
            code: 400 | 404 | 406 | 410,
            ..
        }) => GatewayError::NotFound("the invite code is unknown, expired or revoked".into()),
        GroupError::InvalidRequest(m) => GatewayError::validation("code", m),
        other => map_group_error(other, timeout, false),
    }
}

impl InvitesState {
    fn client(&self) -> Result<Arc<Client>> {
        self.client.clone().ok_or(GatewayError::NotLoggedIn)
    }

    fn timeout(&self) -> Duration {
        self.services.settings.whatsapp.request_timeout
    }

    fn fresh(&self, fetched_at: u64) -> bool {
        crate::unix_now().saturating_sub(fetched_at)
            < self.services.settings.groups.refresh_interval.as_secs()
    }
}

impl Actor for InvitesActor {
    type Msg = InvitesMsg;
    type State = InvitesState;
    type Arguments = InvitesArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: InvitesArgs,
    ) -> std::result::Result<Self::State, ActorProcessingErr> {
        let name = directory::invites_name(args.id.as_str());
        let messages = args.services.directory.starting(&name, ActorKind::Invites);
        let links = args
            .services
            .store
            .cached::<CachedInvite>(CacheKind::Invites, &args.id)?
            .into_iter()
            .map(|(jid, env)| (jid, env.data))
            .collect();
        Ok(InvitesState {
            services: args.services,
            id: args.id,
            name,
            client: args.client,
            session: args.session,
            links,
            messages,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        state
            .services
            .directory
            .running(&state.name, Handle::Invites(myself));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        state.messages.fetch_add(1, Ordering::Relaxed);
        match msg {
            InvitesMsg::ClientChanged(client) => state.client = client,
            InvitesMsg::Inspect(reply) => {
                let _ = reply.send(serde_json::json!({
                    "session": state.id.as_str(),
                    "client_ready": state.client.is_some(),
                    "cached_links": state.links.len(),
                }));
            }
            InvitesMsg::Link { jid, reset, reply } => {
                if !reset
                    && let Some(cached) = state.links.get(jid.as_str())
                    && state.fresh(cached.fetched_at)
                {
                    let _ = reply.send(Ok(cached.link.clone()));
                    return Ok(());
                }
                let client = match state.client() {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return Ok(());
                    }
                };
                let timeout = state.timeout();
                tokio::spawn(async move {
                    let result = async {
                        let target: Jid = jid
                            .as_str()
                            .parse::<whatsapp_rust::Jid>()
                            .map_err(|e| GatewayError::validation("group_jid", e.to_string()))?;
                        match tokio::time::timeout(
                            timeout,
                            client.groups().get_invite_link(target, reset),
                        )
                        .await
                        {
                            Ok(Ok(link)) => Ok(link),
                            Ok(Err(e)) => Err(map_group_error(e, timeout, false)),
                            Err(_) => Err(GatewayError::WhatsAppTimeout(timeout)),
                        }
                    }
                    .await;
                    let _ = myself.cast(InvitesMsg::LinkFetched { jid, result, reply });
                });
            }
            InvitesMsg::LinkFetched { jid, result, reply } => {
                if let Ok(link) = &result {
                    let entry = CachedInvite {
                        group_jid: jid.as_str().to_owned(),
                        link: link.clone(),
                        fetched_at: crate::unix_now(),
                    };
                    let saved = state
                        .services
                        .store
                        .put_cached(CacheKind::Invites, &state.id, jid.as_str(), &entry)
                        .await;
                    state.links.insert(jid.as_str().to_owned(), entry);
                    if let Err(e) = saved {
                        let _ = reply.send(Err(e));
                        return Ok(());
                    }
                } else if matches!(
                    result,
                    Err(GatewayError::GroupNotFound | GatewayError::NotGroupAdmin(_))
                ) {
                    state.links.remove(jid.as_str());
                    let _ = state
                        .services
                        .store
                        .remove_cached(CacheKind::Invites, &state.id, jid.as_str())
                        .await;
                }
                let _ = reply.send(result);
            }
            InvitesMsg::Join { code, reply } => {
                let client = match state.client() {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return Ok(());
                    }
                };
                let timeout = state.timeout();
                let session = state.session.clone();
                tokio::spawn(async move {
                    let result = match tokio::time::timeout(
                        timeout,
                        client.groups().join_with_invite_code(&code),
                    )
                    .await
                    {
                        Ok(Ok(joined)) => {
                            let raw = joined.group_jid().to_non_ad_string();
                            GroupJid::parse(&raw).ok_or_else(|| GatewayError::WhatsApp {
                                code: None,
                                message: format!("WhatsApp returned an unexpected group id {raw}"),
                            })
                        }
                        Ok(Err(e)) => Err(map_invite_error(e, timeout)),
                        Err(_) => Err(GatewayError::WhatsAppTimeout(timeout)),
                    };
                    if let Ok(jid) = &result {
                        let _ = session.cast(SessionMsg::Groups(GroupsMsg::Learn(jid.clone())));
                    }
                    let _ = reply.send(result);
                });
            }
            InvitesMsg::Info { code, reply } => {
                let client = match state.client() {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return Ok(());
                    }
                };
                let timeout = state.timeout();
                tokio::spawn(async move {
                    let result =
                        match tokio::time::timeout(timeout, client.groups().get_invite_info(&code))
                            .await
                        {
                            Ok(Ok(meta)) => {
                                let g = CachedGroup::from_metadata(&meta);
                                Ok(InviteInfoView {
                                    participant_count: meta
                                        .size
                                        .map(|s| s as usize)
                                        .unwrap_or(g.participants.len()),
                                    jid: g.jid,
                                    name: g.name,
                                    topic: g.topic.unwrap_or_default(),
                                    owner: g.owner,
                                    created_at: g.created_at,
                                })
                            }
                            Ok(Err(e)) => Err(map_invite_error(e, timeout)),
                            Err(_) => Err(GatewayError::WhatsAppTimeout(timeout)),
                        };
                    let _ = reply.send(result);
                });
            }
            #[cfg(feature = "test-server")]
            InvitesMsg::Crash => panic!("crash requested through the test-only admin trigger"),
        }
        Ok(())
    }
}

/// Extracts the code from `AbCdEf` or `https://chat.whatsapp.com/AbCdEf`; `None` when it is
/// neither.
pub fn invite_code(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let code = raw
        .strip_prefix(LINK_PREFIX)
        .or_else(|| raw.strip_prefix("http://chat.whatsapp.com/"))
        .map(|rest| rest.strip_prefix("invite/").unwrap_or(rest))
        .map(|rest| {
            rest.split(['?', '#'])
                .next()
                .unwrap_or("")
                .trim_end_matches('/')
        })
        .unwrap_or(raw);
    let ok = (6..=64).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then(|| code.to_owned())
}

#[cfg(test)]
mod tests {
    use super::invite_code;

    #[test]
    fn codes_and_links_are_accepted() {
        assert_eq!(invite_code("AbCdEfGhIjK").as_deref(), Some("AbCdEfGhIjK"));
        assert_eq!(
            invite_code("https://chat.whatsapp.com/AbCdEfGhIjK").as_deref(),
            Some("AbCdEfGhIjK")
        );
        assert_eq!(
            invite_code("https://chat.whatsapp.com/invite/AbCdEfGhIjK?x=1").as_deref(),
            Some("AbCdEfGhIjK")
        );
        assert!(invite_code("https://example.com/x y").is_none());
        assert!(invite_code("").is_none());
    }
}
