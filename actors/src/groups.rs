//! `session:<id>/groups`: the session's group operations and its group metadata cache,
//! persisted in sled so reads survive restarts and cost WhatsApp at most one query per group
//! per refresh interval.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use whatsapp_rust::Client;
use whatsapp_rust::types::events::Event;

use crate::directory::{self, ActorKind, Handle};
use crate::error::GatewayError;
use crate::model::SessionId;
use crate::services::Shared;
use crate::store::CacheKind;

/// What the cache keeps of a group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CachedGroup {
    pub jid: String,
    pub name: String,
    pub topic: Option<String>,
    pub topic_id: Option<String>,
    pub owner: Option<String>,
    pub created_at: u64,
    pub participants: Vec<CachedParticipant>,
    pub announce: bool,
    pub locked: bool,
    /// When WhatsApp last answered a query for this group (Unix seconds).
    pub fetched_at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CachedParticipant {
    pub jid: String,
    pub role: String,
}

pub enum GroupsMsg {
    /// The session's client changed (connected, replaced or gone).
    ClientChanged(Option<Arc<Client>>),
    /// A group notification pushed by WhatsApp.
    Notification(Arc<Event>),
    /// What this actor holds now, for the admin API.
    Inspect(RpcReplyPort<serde_json::Value>),
    /// Test builds only: panic while handling a message.
    #[cfg(feature = "test-server")]
    Crash,
}

impl GroupsMsg {
    /// Answers a request that cannot reach this actor.
    pub fn reject(self, error: GatewayError) {
        match self {
            Self::Inspect(reply) => {
                let _ = reply.send(serde_json::json!({ "error": error.to_string() }));
            }
            Self::ClientChanged(_) | Self::Notification(_) => {}
            #[cfg(feature = "test-server")]
            Self::Crash => {}
        }
    }
}

pub struct GroupsActor;

pub struct GroupsArgs {
    pub services: Shared,
    pub id: SessionId,
    pub client: Option<Arc<Client>>,
}

pub struct GroupsState {
    services: Shared,
    id: SessionId,
    name: String,
    client: Option<Arc<Client>>,
    cache: BTreeMap<String, CachedGroup>,
    messages: Arc<AtomicU64>,
}

impl Actor for GroupsActor {
    type Msg = GroupsMsg;
    type State = GroupsState;
    type Arguments = GroupsArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: GroupsArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let name = directory::groups_name(args.id.as_str());
        let messages = args.services.directory.starting(&name, ActorKind::Groups);
        let cache = args
            .services
            .store
            .cached::<CachedGroup>(CacheKind::Groups, &args.id)?
            .into_iter()
            .map(|(jid, env)| (jid, env.data))
            .collect();
        Ok(GroupsState {
            services: args.services,
            id: args.id,
            name,
            client: args.client,
            cache,
            messages,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state
            .services
            .directory
            .running(&state.name, Handle::Groups(myself));
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.messages.fetch_add(1, Ordering::Relaxed);
        match msg {
            GroupsMsg::ClientChanged(client) => state.client = client,
            GroupsMsg::Notification(event) => {
                tracing::debug!(session = %state.id, ?event, "group notification");
            }
            GroupsMsg::Inspect(reply) => {
                let _ = reply.send(serde_json::json!({
                    "session": state.id.as_str(),
                    "client_ready": state.client.is_some(),
                    "cached_groups": state.cache.len(),
                    "groups": state.cache.keys().collect::<Vec<_>>(),
                }));
            }
            #[cfg(feature = "test-server")]
            GroupsMsg::Crash => panic!("crash requested through the test-only admin trigger"),
        }
        Ok(())
    }
}
