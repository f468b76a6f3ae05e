//! `session:<id>/invites`: group invite links (cached and persisted; `reset` revokes the old
//! link), joining a group by code or link, and reading an invite's group without joining.
//! WhatsApp round-trips run in spawned tasks that report back by message or answer directly.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::directory::{ActorKind, SessionLink, child_name};
use crate::error::{GatewayError, Result};
use crate::model::{GroupJid, InviteInfoView, SessionId};
use crate::services::Shared;
use crate::store::CacheKind;
use crate::whatsapp::WaClient;

const LINK_PREFIX: &str = "https://chat.whatsapp.com/";

/// A group's invite link as last seen.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CachedInvite {
    pub group_jid: String,
    pub link: String,
    pub fetched_at: u64,
}

pub enum InvitesMsg {
    ClientChanged(Option<WaClient>),
    Inspect(RpcReplyPort<serde_json::Value>),
    /// The group's invite link; `reset` revokes the current one and returns the new one. A
    /// cached link is served only when `may_use_cached` (the caller checked it may be shared).
    Link {
        jid: GroupJid,
        reset: bool,
        may_use_cached: bool,
        reply: RpcReplyPort<Result<String>>,
    },
    /// Joins the group behind a code (already extracted from a link).
    Join {
        code: String,
        reply: RpcReplyPort<Result<GroupJid>>,
    },
    /// The group behind a code, without joining.
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

pub struct InvitesActor;

pub struct InvitesArgs {
    pub services: Shared,
    pub id: SessionId,
    pub client: Option<WaClient>,
    pub link: Arc<SessionLink>,
}

pub struct InvitesState {
    services: Shared,
    id: SessionId,
    client: Option<WaClient>,
    link: Arc<SessionLink>,
    links: BTreeMap<String, CachedInvite>,
    messages: Arc<AtomicU64>,
}

impl InvitesState {
    fn client(&self) -> Result<WaClient> {
        self.client.clone().ok_or(GatewayError::NotLoggedIn)
    }

    fn fresh(&self, fetched_at: u64) -> bool {
        crate::group_cache::is_fresh(
            fetched_at,
            crate::unix_now(),
            self.services.settings.groups.refresh_interval.as_secs(),
        )
    }

    async fn on_link(
        &mut self,
        jid: GroupJid,
        result: Result<String>,
        reply: RpcReplyPort<Result<String>>,
    ) {
        let store = &self.services.store;
        match &result {
            Ok(link) => {
                let entry = CachedInvite {
                    group_jid: jid.as_str().to_owned(),
                    link: link.clone(),
                    fetched_at: crate::unix_now(),
                };
                let saved = store
                    .put_cached(CacheKind::Invites, &self.id, jid.as_str(), &entry)
                    .await;
                self.links.insert(jid.as_str().to_owned(), entry);
                if let Err(e) = saved {
                    let _ = reply.send(Err(e));
                    return;
                }
            }
            Err(GatewayError::GroupNotFound | GatewayError::NotGroupAdmin(_)) => {
                self.links.remove(jid.as_str());
                if let Err(e) = store
                    .remove_cached(CacheKind::Invites, &self.id, jid.as_str())
                    .await
                {
                    tracing::warn!(session = %self.id, error = %e, "could not forget an invite link");
                }
            }
            Err(_) => {}
        }
        let _ = reply.send(result);
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
        let name = child_name(args.id.as_str(), ActorKind::Invites);
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
            client: args.client,
            link: args.link,
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
            .link
            .publish_child(ActorKind::Invites, Some(myself.get_cell()));
        state.services.directory.running(
            &child_name(state.id.as_str(), ActorKind::Invites),
            myself.get_cell(),
        );
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
            InvitesMsg::Link {
                jid,
                reset,
                may_use_cached,
                reply,
            } => {
                if !reset
                    && may_use_cached
                    && let Some(cached) = state.links.get(jid.as_str())
                    && state.fresh(cached.fetched_at)
                {
                    let _ = reply.send(Ok(cached.link.clone()));
                    return Ok(());
                }
                match state.client() {
                    Ok(client) => {
                        tokio::spawn(async move {
                            let result = client.invite_link(&jid, reset).await;
                            let _ = myself.cast(InvitesMsg::LinkFetched { jid, result, reply });
                        });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            InvitesMsg::LinkFetched { jid, result, reply } => {
                state.on_link(jid, result, reply).await;
            }
            InvitesMsg::Join { code, reply } => match state.client() {
                Ok(client) => {
                    tokio::spawn(async move {
                        let _ = reply.send(client.join_with_invite(&code).await);
                    });
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            InvitesMsg::Info { code, reply } => match state.client() {
                Ok(client) => {
                    tokio::spawn(async move {
                        let _ = reply.send(client.invite_info(&code).await);
                    });
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
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
