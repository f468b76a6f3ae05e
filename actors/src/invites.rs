//! `session:<id>/invites`: the session's group invite links (cached, reset), joining by code
//! or link, and invite info.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use whatsapp_rust::Client;

use crate::directory::{self, ActorKind, Handle};
use crate::error::GatewayError;
use crate::model::SessionId;
use crate::services::Shared;
use crate::store::CacheKind;

/// A group's invite link as last seen.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CachedInvite {
    pub group_jid: String,
    pub code: String,
    pub fetched_at: u64,
}

pub enum InvitesMsg {
    ClientChanged(Option<Arc<Client>>),
    Inspect(RpcReplyPort<serde_json::Value>),
    #[cfg(feature = "test-server")]
    Crash,
}

impl InvitesMsg {
    /// Answers a request that cannot reach this actor.
    pub fn reject(self, error: GatewayError) {
        match self {
            Self::Inspect(reply) => {
                let _ = reply.send(serde_json::json!({ "error": error.to_string() }));
            }
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
}

pub struct InvitesState {
    services: Shared,
    id: SessionId,
    name: String,
    client: Option<Arc<Client>>,
    links: BTreeMap<String, CachedInvite>,
    messages: Arc<AtomicU64>,
}

impl Actor for InvitesActor {
    type Msg = InvitesMsg;
    type State = InvitesState;
    type Arguments = InvitesArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: InvitesArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
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
            links,
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
            .running(&state.name, Handle::Invites(myself));
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
            InvitesMsg::ClientChanged(client) => state.client = client,
            InvitesMsg::Inspect(reply) => {
                let _ = reply.send(serde_json::json!({
                    "session": state.id.as_str(),
                    "client_ready": state.client.is_some(),
                    "cached_links": state.links.len(),
                }));
            }
            #[cfg(feature = "test-server")]
            InvitesMsg::Crash => panic!("crash requested through the test-only admin trigger"),
        }
        Ok(())
    }
}
