//! `session:<id>/groups`: the session's group operations and its group metadata cache.
//!
//! Reads are answered from the cache, persisted in sled, while an entry is younger than the
//! refresh interval; a stale or missing entry costs one WhatsApp query, and concurrent reads
//! of the same group (or of the list) share that one query. Writes go to WhatsApp first, then
//! update the cache from WhatsApp's answer. Group notifications pushed by WhatsApp patch the
//! cache as they arrive. Every WhatsApp round-trip runs in a spawned task that reports back
//! by message, so the mailbox never waits on the network.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use whatsapp_rust::types::events::Event;
use whatsapp_rust::wacore::stanza::groups::GroupNotificationAction;
use whatsapp_rust::{
    Client, GroupCreateOptions, GroupDescription, GroupError, GroupMetadata,
    GroupParticipantOptions, GroupSubject, Jid, ParticipantChangeResponse, ParticipantType,
    PreviousDescription,
};

use crate::directory::{self, ActorKind, Handle};
use crate::error::{GatewayError, Result};
use crate::model::{GroupJid, GroupSummary, ParticipantResult, SentMessage, SessionId, UserJid};
use crate::services::Shared;
use crate::store::CacheKind;
use crate::whatsapp::map_iq_error;

/// The sled key under which the time of the last full list query is kept.
const LIST_MARKER: &str = "#list";

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

impl CachedGroup {
    pub(crate) fn from_metadata(meta: &GroupMetadata) -> Self {
        let participants = meta
            .participants
            .iter()
            .map(|p| CachedParticipant {
                jid: p.phone_number.as_ref().unwrap_or(&p.jid).to_non_ad_string(),
                role: match p.participant_type {
                    ParticipantType::SuperAdmin => "superadmin",
                    ParticipantType::Admin => "admin",
                    ParticipantType::Member => "member",
                }
                .to_owned(),
            })
            .collect();
        Self {
            jid: meta.id.to_non_ad_string(),
            name: meta.subject.clone(),
            topic: meta.description.clone(),
            topic_id: meta.description_id.clone(),
            owner: meta
                .creator_pn
                .as_ref()
                .or(meta.creator.as_ref())
                .map(|j| j.to_non_ad_string()),
            created_at: meta.creation_time.unwrap_or(0),
            participants,
            announce: meta.is_announcement,
            locked: meta.is_locked,
            fetched_at: crate::unix_now(),
        }
    }

    fn summary(&self) -> GroupSummary {
        GroupSummary {
            jid: self.jid.clone(),
            name: self.name.clone(),
            participant_count: self.participants.len(),
        }
    }

    fn role_of(&self, user: &str) -> Option<&str> {
        self.participants
            .iter()
            .find(|p| p.jid == user)
            .map(|p| p.role.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParticipantAction {
    Add,
    Remove,
    Promote,
    Demote,
}

pub enum GroupsMsg {
    /// The session's client changed (connected, replaced or gone).
    ClientChanged(Option<Arc<Client>>),
    /// A group notification pushed by WhatsApp.
    Notification(Arc<Event>),
    /// The session joined a group some other way (an invite): learn it.
    Learn(GroupJid),
    /// What this actor holds now, for the admin API.
    Inspect(RpcReplyPort<serde_json::Value>),
    List {
        refresh: bool,
        reply: RpcReplyPort<Result<Vec<GroupSummary>>>,
    },
    Get {
        jid: GroupJid,
        refresh: bool,
        reply: RpcReplyPort<Result<CachedGroup>>,
    },
    Create {
        name: String,
        participants: Vec<UserJid>,
        reply: RpcReplyPort<Result<GroupJid>>,
    },
    SetSubject {
        jid: GroupJid,
        subject: String,
        reply: RpcReplyPort<Result<()>>,
    },
    SetDescription {
        jid: GroupJid,
        description: Option<String>,
        prev_id: Option<String>,
        reply: RpcReplyPort<Result<()>>,
    },
    Leave {
        jid: GroupJid,
        reply: RpcReplyPort<Result<()>>,
    },
    Participants {
        jid: GroupJid,
        action: ParticipantAction,
        participants: Vec<UserJid>,
        reply: RpcReplyPort<Result<Vec<ParticipantResult>>>,
    },
    Settings {
        jid: GroupJid,
        announce: Option<bool>,
        locked: Option<bool>,
        reply: RpcReplyPort<Result<()>>,
    },
    SendText {
        jid: GroupJid,
        text: String,
        reply: RpcReplyPort<Result<SentMessage>>,
    },
    /// A group query finished.
    Fetched {
        jid: GroupJid,
        result: Result<CachedGroup>,
    },
    /// A list query finished.
    ListFetched(Result<Vec<CachedGroup>>),
    /// A write finished on WhatsApp: patch the cache, then answer.
    Written(Change, Done),
    /// Test builds only: panic while handling a message.
    #[cfg(feature = "test-server")]
    Crash,
}

/// A cache patch that follows a successful write or a notification.
#[derive(Debug)]
pub enum Change {
    None,
    Upsert(CachedGroup),
    Remove(String),
    Subject(String, String),
    Participants(String, ParticipantAction, Vec<String>),
    Settings(String, Option<bool>, Option<bool>),
}

/// The reply a finished write owes.
pub enum Done {
    Unit(RpcReplyPort<Result<()>>, Result<()>),
    Jid(RpcReplyPort<Result<GroupJid>>, Result<GroupJid>),
    Results(
        RpcReplyPort<Result<Vec<ParticipantResult>>>,
        Result<Vec<ParticipantResult>>,
    ),
    Sent(RpcReplyPort<Result<SentMessage>>, Result<SentMessage>),
}

impl Done {
    fn send(self) {
        match self {
            Self::Unit(r, v) => drop(r.send(v)),
            Self::Jid(r, v) => drop(r.send(v)),
            Self::Results(r, v) => drop(r.send(v)),
            Self::Sent(r, v) => drop(r.send(v)),
        }
    }
}

impl std::fmt::Debug for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Done")
    }
}

impl GroupsMsg {
    /// Answers a request that cannot reach this actor.
    pub fn reject(self, error: GatewayError) {
        match self {
            Self::Inspect(reply) => {
                drop(reply.send(serde_json::json!({ "error": error.to_string() })))
            }
            Self::List { reply, .. } => drop(reply.send(Err(error))),
            Self::Get { reply, .. } => drop(reply.send(Err(error))),
            Self::Create { reply, .. } => drop(reply.send(Err(error))),
            Self::SetSubject { reply, .. }
            | Self::SetDescription { reply, .. }
            | Self::Leave { reply, .. }
            | Self::Settings { reply, .. } => drop(reply.send(Err(error))),
            Self::Participants { reply, .. } => drop(reply.send(Err(error))),
            Self::SendText { reply, .. } => drop(reply.send(Err(error))),
            Self::Fetched { .. }
            | Self::ListFetched(_)
            | Self::Written(..)
            | Self::ClientChanged(_)
            | Self::Notification(_)
            | Self::Learn(_) => {}
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
    /// When the full list was last fetched (Unix seconds), persisted with the cache.
    list_fetched_at: u64,
    /// Readers waiting on an in-flight query, per group.
    waiting: HashMap<String, Vec<RpcReplyPort<Result<CachedGroup>>>>,
    list_waiting: Option<Vec<RpcReplyPort<Result<Vec<GroupSummary>>>>>,
    messages: Arc<AtomicU64>,
}

fn group_jid(jid: &GroupJid) -> Result<Jid> {
    jid.as_str()
        .parse::<Jid>()
        .map_err(|e| GatewayError::validation("group_jid", e.to_string()))
}

fn user_jids(users: &[UserJid]) -> Result<Vec<Jid>> {
    users
        .iter()
        .map(|u| {
            u.as_str()
                .parse::<Jid>()
                .map_err(|e| GatewayError::validation("participants", e.to_string()))
        })
        .collect()
}

/// Maps a failed group operation. `read` tells a query (where "forbidden" means "not a
/// member") from a change (where it means "not an admin").
pub fn map_group_error(e: GroupError, timeout: Duration, read: bool) -> GatewayError {
    match e {
        GroupError::Iq(whatsapp_rust::IqError::ServerError { code, .. })
            if read && matches!(code, 401 | 403 | 404) =>
        {
            GatewayError::GroupNotFound
        }
        GroupError::Iq(iq) => map_iq_error(&iq, timeout),
        GroupError::DescriptionConflict => GatewayError::DescriptionConflict,
        GroupError::InvalidRequest(m) => GatewayError::validation("request", m),
        other => GatewayError::WhatsApp {
            code: None,
            message: other.to_string(),
        },
    }
}

fn participant_status(action: ParticipantAction, r: &ParticipantChangeResponse) -> String {
    let code = r.error.as_deref().unwrap_or("");
    match (action, code) {
        (ParticipantAction::Add, "") => "Added".into(),
        (ParticipantAction::Remove, "") => "Removed".into(),
        (ParticipantAction::Promote, "") => "Promoted".into(),
        (ParticipantAction::Demote, "") => "Demoted".into(),
        (ParticipantAction::Add, "409") => "AlreadyInGroup".into(),
        (ParticipantAction::Add, "403") if r.add_request.is_some() => "InviteRequired".into(),
        (_, "403") => "Forbidden".into(),
        (ParticipantAction::Add, "404") => "NotOnWhatsApp".into(),
        (_, "404") => "NotInGroup".into(),
        (ParticipantAction::Add, "408") => "RecentlyLeft".into(),
        (_, "406") => "NotAllowed".into(),
        (_, code) => format!("Failed:{code}"),
    }
}

impl GroupsState {
    fn fresh(&self, fetched_at: u64) -> bool {
        crate::unix_now().saturating_sub(fetched_at)
            < self.services.settings.groups.refresh_interval.as_secs()
    }

    fn timeout(&self) -> Duration {
        self.services.settings.whatsapp.request_timeout
    }

    fn client(&self) -> Result<Arc<Client>> {
        self.client.clone().ok_or(GatewayError::NotLoggedIn)
    }

    fn own_user(&self) -> Option<String> {
        self.client
            .as_ref()
            .and_then(|c| c.pn())
            .map(|j| j.to_non_ad_string())
    }

    async fn persist(&self, jid: &str) {
        let result = match self.cache.get(jid) {
            Some(group) => {
                self.services
                    .store
                    .put_cached(CacheKind::Groups, &self.id, jid, group)
                    .await
            }
            None => {
                self.services
                    .store
                    .remove_cached(CacheKind::Groups, &self.id, jid)
                    .await
            }
        };
        if let Err(e) = result {
            tracing::error!(session = %self.id, group = jid, error = %e, "could not persist group cache");
        }
    }

    /// Starts (or joins) the one query for this group.
    fn fetch(
        &mut self,
        myself: &ActorRef<GroupsMsg>,
        jid: GroupJid,
        waiter: Option<RpcReplyPort<Result<CachedGroup>>>,
    ) {
        let key = jid.as_str().to_owned();
        if let Some(waiters) = self.waiting.get_mut(&key) {
            waiters.extend(waiter);
            return;
        }
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => {
                if let Some(w) = waiter {
                    let _ = w.send(Err(e));
                }
                return;
            }
        };
        self.waiting.insert(key, waiter.into_iter().collect());
        let timeout = self.timeout();
        let myself = myself.clone();
        tokio::spawn(async move {
            let result = async {
                let target = group_jid(&jid)?;
                match tokio::time::timeout(timeout, client.groups().get_metadata(&target)).await {
                    Ok(Ok(meta)) => Ok(CachedGroup::from_metadata(&meta)),
                    Ok(Err(e)) => Err(map_group_error(e, timeout, true)),
                    Err(_) => Err(GatewayError::WhatsAppTimeout(timeout)),
                }
            }
            .await;
            let _ = myself.cast(GroupsMsg::Fetched { jid, result });
        });
    }

    fn fetch_list(
        &mut self,
        myself: &ActorRef<GroupsMsg>,
        waiter: RpcReplyPort<Result<Vec<GroupSummary>>>,
    ) {
        if let Some(waiters) = &mut self.list_waiting {
            waiters.push(waiter);
            return;
        }
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => {
                let _ = waiter.send(Err(e));
                return;
            }
        };
        self.list_waiting = Some(vec![waiter]);
        let timeout = self.timeout();
        let myself = myself.clone();
        tokio::spawn(async move {
            let result =
                match tokio::time::timeout(timeout, client.groups().get_participating()).await {
                    Ok(Ok(groups)) => Ok(groups.values().map(CachedGroup::from_metadata).collect()),
                    Ok(Err(e)) => Err(map_group_error(e, timeout, true)),
                    Err(_) => Err(GatewayError::WhatsAppTimeout(timeout)),
                };
            let _ = myself.cast(GroupsMsg::ListFetched(result));
        });
    }

    fn summaries(&self) -> Vec<GroupSummary> {
        self.cache.values().map(CachedGroup::summary).collect()
    }

    /// Runs a write against WhatsApp in a task; `Written` patches the cache and answers.
    fn write<F, Fut>(
        &self,
        myself: &ActorRef<GroupsMsg>,
        reply: impl FnOnce(Result<Change>) -> (Change, Done) + Send + 'static,
        work: F,
    ) where
        F: FnOnce(Arc<Client>, Duration) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<Change>> + Send,
    {
        let client = self.client();
        let timeout = self.timeout();
        let myself = myself.clone();
        tokio::spawn(async move {
            let result = match client {
                Ok(client) => tokio::time::timeout(timeout, work(client, timeout))
                    .await
                    .unwrap_or(Err(GatewayError::WhatsAppTimeout(timeout))),
                Err(e) => Err(e),
            };
            let (change, done) = reply(result);
            let _ = myself.cast(GroupsMsg::Written(change, done));
        });
    }

    async fn apply(&mut self, change: Change) {
        let touched = match change {
            Change::None => return,
            Change::Upsert(group) => {
                let jid = group.jid.clone();
                self.cache.insert(jid.clone(), group);
                jid
            }
            Change::Remove(jid) => {
                self.cache.remove(&jid);
                jid
            }
            Change::Subject(jid, subject) => {
                let Some(group) = self.cache.get_mut(&jid) else {
                    return;
                };
                group.name = subject;
                jid
            }
            Change::Settings(jid, announce, locked) => {
                let Some(group) = self.cache.get_mut(&jid) else {
                    return;
                };
                if let Some(a) = announce {
                    group.announce = a;
                }
                if let Some(l) = locked {
                    group.locked = l;
                }
                jid
            }
            Change::Participants(jid, action, users) => {
                let own = self.own_user();
                if action == ParticipantAction::Remove
                    && own.as_ref().is_some_and(|o| users.contains(o))
                {
                    self.cache.remove(&jid);
                } else {
                    let Some(group) = self.cache.get_mut(&jid) else {
                        return;
                    };
                    for user in users {
                        match action {
                            ParticipantAction::Add => {
                                if !group.participants.iter().any(|p| p.jid == user) {
                                    group.participants.push(CachedParticipant {
                                        jid: user,
                                        role: "member".into(),
                                    });
                                }
                            }
                            ParticipantAction::Remove => {
                                group.participants.retain(|p| p.jid != user)
                            }
                            ParticipantAction::Promote | ParticipantAction::Demote => {
                                if let Some(p) =
                                    group.participants.iter_mut().find(|p| p.jid == user)
                                {
                                    let promote = action == ParticipantAction::Promote;
                                    if promote && p.role == "member" {
                                        p.role = "admin".into();
                                    } else if !promote {
                                        p.role = "member".into();
                                    }
                                }
                            }
                        }
                    }
                }
                jid
            }
        };
        self.persist(&touched).await;
    }

    async fn on_notification(&mut self, myself: &ActorRef<GroupsMsg>, event: &Event) {
        let Event::GroupUpdate(update) = event else {
            return;
        };
        let jid = update.group_jid.to_non_ad_string();
        let users =
            |list: &[whatsapp_rust::wacore::stanza::groups::GroupParticipantInfo]| -> Vec<String> {
                list.iter()
                    .map(|p| p.phone_number.as_ref().unwrap_or(&p.jid).to_non_ad_string())
                    .collect()
            };
        let own = self.own_user();
        let change = match &update.action {
            GroupNotificationAction::Add { participants, .. } => {
                let users = users(participants);
                if own.as_ref().is_some_and(|o| users.contains(o)) || !self.cache.contains_key(&jid)
                {
                    // Added to a group we did not know: learn all of it.
                    if let Some(g) = GroupJid::parse(&jid) {
                        self.fetch(myself, g, None);
                    }
                    Change::None
                } else {
                    Change::Participants(jid, ParticipantAction::Add, users)
                }
            }
            GroupNotificationAction::Remove { participants, .. } => {
                Change::Participants(jid, ParticipantAction::Remove, users(participants))
            }
            GroupNotificationAction::Promote { participants } => {
                Change::Participants(jid, ParticipantAction::Promote, users(participants))
            }
            GroupNotificationAction::Demote { participants } => {
                Change::Participants(jid, ParticipantAction::Demote, users(participants))
            }
            GroupNotificationAction::Subject { subject, .. } => {
                Change::Subject(jid, subject.clone())
            }
            GroupNotificationAction::Description { id, description } => {
                if let Some(group) = self.cache.get_mut(&jid) {
                    group.topic = description.clone();
                    group.topic_id = description.as_ref().map(|_| id.clone());
                    self.persist(&jid).await;
                }
                Change::None
            }
            GroupNotificationAction::Locked { .. } => Change::Settings(jid, None, Some(true)),
            GroupNotificationAction::Unlocked => Change::Settings(jid, None, Some(false)),
            GroupNotificationAction::Announce => Change::Settings(jid, Some(true), None),
            GroupNotificationAction::NotAnnounce => Change::Settings(jid, Some(false), None),
            _ => {
                // Anything else (create, modify, …): refetch the group on the next read.
                if let Some(group) = self.cache.get_mut(&jid) {
                    group.fetched_at = 0;
                } else if let Some(g) = GroupJid::parse(&jid) {
                    self.fetch(myself, g, None);
                }
                Change::None
            }
        };
        self.apply(change).await;
    }
}

impl Actor for GroupsActor {
    type Msg = GroupsMsg;
    type State = GroupsState;
    type Arguments = GroupsArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: GroupsArgs,
    ) -> std::result::Result<Self::State, ActorProcessingErr> {
        let name = directory::groups_name(args.id.as_str());
        let messages = args.services.directory.starting(&name, ActorKind::Groups);
        let mut cache = BTreeMap::new();
        let mut list_fetched_at = 0;
        for (key, env) in args
            .services
            .store
            .cached::<serde_json::Value>(CacheKind::Groups, &args.id)?
        {
            if key == LIST_MARKER {
                list_fetched_at = env.data.as_u64().unwrap_or(0);
            } else if let Ok(group) = serde_json::from_value::<CachedGroup>(env.data) {
                cache.insert(key, group);
            }
        }
        Ok(GroupsState {
            services: args.services,
            id: args.id,
            name,
            client: args.client,
            cache,
            list_fetched_at,
            waiting: HashMap::new(),
            list_waiting: None,
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
            .running(&state.name, Handle::Groups(myself));
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
            GroupsMsg::ClientChanged(client) => state.client = client,
            GroupsMsg::Notification(event) => state.on_notification(&myself, &event).await,
            GroupsMsg::Learn(jid) => state.fetch(&myself, jid, None),
            GroupsMsg::Inspect(reply) => {
                let _ = reply.send(serde_json::json!({
                    "session": state.id.as_str(),
                    "client_ready": state.client.is_some(),
                    "cached_groups": state.cache.len(),
                    "groups": state.cache.keys().collect::<Vec<_>>(),
                    "list_fetched_at": state.list_fetched_at,
                    "queries_in_flight": state.waiting.len() + usize::from(state.list_waiting.is_some()),
                }));
            }
            GroupsMsg::List { refresh, reply } => {
                if !refresh && state.list_fetched_at > 0 && state.fresh(state.list_fetched_at) {
                    let _ = reply.send(Ok(state.summaries()));
                } else {
                    state.fetch_list(&myself, reply);
                }
            }
            GroupsMsg::ListFetched(result) => {
                let waiters = state.list_waiting.take().unwrap_or_default();
                let answer = match result {
                    Ok(groups) => {
                        let now = crate::unix_now();
                        let fresh: BTreeMap<String, CachedGroup> =
                            groups.into_iter().map(|g| (g.jid.clone(), g)).collect();
                        let gone: Vec<String> = state
                            .cache
                            .keys()
                            .filter(|k| !fresh.contains_key(*k))
                            .cloned()
                            .collect();
                        state.cache = fresh;
                        state.list_fetched_at = now;
                        let store = &state.services.store;
                        let mut saved = store.put_cached_unflushed(
                            CacheKind::Groups,
                            &state.id,
                            LIST_MARKER,
                            &now,
                        );
                        for (jid, group) in &state.cache {
                            saved = saved.and_then(|()| {
                                store.put_cached_unflushed(CacheKind::Groups, &state.id, jid, group)
                            });
                        }
                        for jid in &gone {
                            saved = saved.and_then(|()| {
                                store.remove_cached_unflushed(CacheKind::Groups, &state.id, jid)
                            });
                        }
                        if let Err(e) = saved {
                            tracing::error!(session = %state.id, error = %e, "could not persist group list");
                        } else if let Err(e) = store.flush().await {
                            tracing::error!(session = %state.id, error = %e, "could not flush group list");
                        }
                        Ok(state.summaries())
                    }
                    Err(e) => Err(e),
                };
                for w in waiters {
                    let _ = w.send(answer.clone());
                }
            }
            GroupsMsg::Get {
                jid,
                refresh,
                reply,
            } => match state.cache.get(jid.as_str()) {
                Some(group) if !refresh && state.fresh(group.fetched_at) => {
                    let _ = reply.send(Ok(group.clone()));
                }
                _ => state.fetch(&myself, jid, Some(reply)),
            },
            GroupsMsg::Fetched { jid, result } => {
                let waiters = state.waiting.remove(jid.as_str()).unwrap_or_default();
                match &result {
                    Ok(group) => state.apply(Change::Upsert(group.clone())).await,
                    Err(GatewayError::GroupNotFound) => {
                        if state.cache.contains_key(jid.as_str()) {
                            state.apply(Change::Remove(jid.as_str().to_owned())).await;
                        }
                    }
                    Err(_) => {}
                }
                for w in waiters {
                    let _ = w.send(result.clone());
                }
            }
            GroupsMsg::Create {
                name,
                participants,
                reply,
            } => {
                state.write(
                    &myself,
                    move |r: Result<Change>| match r {
                        Ok(Change::Upsert(g)) => {
                            let jid =
                                GroupJid::parse(&g.jid).ok_or_else(|| GatewayError::WhatsApp {
                                    code: None,
                                    message: format!(
                                        "WhatsApp returned an unexpected group id {}",
                                        g.jid
                                    ),
                                });
                            (Change::Upsert(g), Done::Jid(reply, jid))
                        }
                        Ok(_) => (
                            Change::None,
                            Done::Jid(
                                reply,
                                Err(GatewayError::Internal("no group returned".into())),
                            ),
                        ),
                        Err(e) => (Change::None, Done::Jid(reply, Err(e))),
                    },
                    move |client, timeout| async move {
                        let subject = GroupSubject::new(name)
                            .map_err(|e| GatewayError::validation("name", e.to_string()))?;
                        let participants = user_jids(&participants)?
                            .into_iter()
                            .map(GroupParticipantOptions::new)
                            .collect();
                        let options = GroupCreateOptions {
                            subject: subject.into_string(),
                            participants,
                            ..Default::default()
                        };
                        let created = client
                            .groups()
                            .create_group(options)
                            .await
                            .map_err(|e| map_group_error(e, timeout, false))?;
                        Ok(Change::Upsert(CachedGroup::from_metadata(
                            &created.metadata,
                        )))
                    },
                );
            }
            GroupsMsg::SetSubject {
                jid,
                subject,
                reply,
            } => {
                state.write(
                    &myself,
                    unit_reply(reply),
                    move |client, timeout| async move {
                        let target = group_jid(&jid)?;
                        let subject = GroupSubject::new(subject.clone())
                            .map_err(|e| GatewayError::validation("subject", e.to_string()))?;
                        let text = subject.as_str().to_owned();
                        client
                            .groups()
                            .set_subject(target, subject)
                            .await
                            .map_err(|e| map_group_error(e, timeout, false))?;
                        Ok(Change::Subject(jid.as_str().to_owned(), text))
                    },
                );
            }
            GroupsMsg::SetDescription {
                jid,
                description,
                prev_id,
                reply,
            } => {
                state.write(
                    &myself,
                    unit_reply(reply),
                    move |client, timeout| async move {
                        let target = group_jid(&jid)?;
                        let description = description
                            .map(|d| {
                                GroupDescription::new(d).map_err(|e| {
                                    GatewayError::validation("description", e.to_string())
                                })
                            })
                            .transpose()?;
                        let prev = match prev_id.as_deref() {
                            Some(id) => PreviousDescription::Id(id),
                            None => PreviousDescription::Resolve,
                        };
                        let groups = client.groups();
                        groups
                            .set_description(target.clone(), description, prev)
                            .await
                            .map_err(|e| map_group_error(e, timeout, false))?;
                        // The new description id is chosen inside the client: read it back.
                        match groups.get_metadata(&target).await {
                            Ok(meta) => Ok(Change::Upsert(CachedGroup::from_metadata(&meta))),
                            Err(_) => Ok(Change::None),
                        }
                    },
                );
            }
            GroupsMsg::Leave { jid, reply } => {
                state.write(
                    &myself,
                    unit_reply(reply),
                    move |client, timeout| async move {
                        let target = group_jid(&jid)?;
                        client
                            .groups()
                            .leave(target)
                            .await
                            .map_err(|e| map_group_error(e, timeout, false))?;
                        Ok(Change::Remove(jid.as_str().to_owned()))
                    },
                );
            }
            GroupsMsg::Participants {
                jid,
                action,
                participants,
                reply,
            } => {
                let results: Arc<std::sync::Mutex<Vec<ParticipantResult>>> = Arc::default();
                let collected = results.clone();
                state.write(
                    &myself,
                    move |r: Result<Change>| {
                        let results = std::mem::take(
                            &mut *collected.lock().unwrap_or_else(|p| p.into_inner()),
                        );
                        match r {
                            Ok(change) => (change, Done::Results(reply, Ok(results))),
                            Err(e) => (Change::None, Done::Results(reply, Err(e))),
                        }
                    },
                    move |client, timeout| async move {
                        let target = group_jid(&jid)?;
                        let users = user_jids(&participants)?;
                        let groups = client.groups();
                        let answer = match action {
                            ParticipantAction::Add => groups.add_participants(target, &users).await,
                            ParticipantAction::Remove => {
                                groups.remove_participants(target, &users).await
                            }
                            ParticipantAction::Promote => {
                                groups.promote_participants(target, &users).await
                            }
                            ParticipantAction::Demote => {
                                groups.demote_participants(target, &users).await
                            }
                        }
                        .map_err(|e| map_group_error(e, timeout, false))?;
                        let mut ok = Vec::new();
                        let mut out = Vec::new();
                        for (i, asked) in participants.iter().enumerate() {
                            // WhatsApp answers per JID; match by JID, else by position.
                            let answered = answer
                                .iter()
                                .find(|a| a.jid.to_non_ad_string() == asked.as_str())
                                .or_else(|| answer.get(i));
                            if answered.is_some_and(|r| r.is_ok()) {
                                ok.push(asked.as_str().to_owned());
                            }
                            out.push(ParticipantResult {
                                jid: asked.as_str().to_owned(),
                                status: answered
                                    .map(|r| participant_status(action, r))
                                    .unwrap_or_else(|| "Failed:unanswered".into()),
                            });
                        }
                        *results.lock().unwrap_or_else(|p| p.into_inner()) = out;
                        Ok(Change::Participants(jid.as_str().to_owned(), action, ok))
                    },
                );
            }
            GroupsMsg::Settings {
                jid,
                announce,
                locked,
                reply,
            } => {
                state.write(
                    &myself,
                    unit_reply(reply),
                    move |client, timeout| async move {
                        let target = group_jid(&jid)?;
                        let groups = client.groups();
                        if let Some(a) = announce {
                            groups
                                .set_announce(target.clone(), a)
                                .await
                                .map_err(|e| map_group_error(e, timeout, false))?;
                        }
                        if let Some(l) = locked {
                            groups
                                .set_locked(target, l)
                                .await
                                .map_err(|e| map_group_error(e, timeout, false))?;
                        }
                        Ok(Change::Settings(jid.as_str().to_owned(), announce, locked))
                    },
                );
            }
            GroupsMsg::SendText { jid, text, reply } => {
                let cached = state.cache.get(jid.as_str()).cloned();
                let own = state.own_user();
                let sent: Arc<std::sync::Mutex<Option<Result<SentMessage>>>> = Arc::default();
                let outcome = sent.clone();
                state.write(
                    &myself,
                    move |r: Result<Change>| {
                        let result = outcome
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .take()
                            .unwrap_or_else(|| {
                                Err(GatewayError::Internal("send did not run".into()))
                            });
                        match r {
                            Ok(change) => (change, Done::Sent(reply, result)),
                            Err(e) => (Change::None, Done::Sent(reply, Err(e))),
                        }
                    },
                    move |client, timeout| async move {
                        let target = group_jid(&jid)?;
                        let (group, change) = match cached {
                            Some(g) => (g, Change::None),
                            None => {
                                let meta = client
                                    .groups()
                                    .get_metadata(&target)
                                    .await
                                    .map_err(|e| map_group_error(e, timeout, true))?;
                                let g = CachedGroup::from_metadata(&meta);
                                (g.clone(), Change::Upsert(g))
                            }
                        };
                        let role = own.as_deref().and_then(|o| group.role_of(o));
                        let result = match role {
                            None => Err(GatewayError::GroupNotFound),
                            Some("member") if group.announce => Err(GatewayError::NotGroupAdmin(
                                "only admins can send messages to this group".into(),
                            )),
                            Some(_) => client
                                .send_text(target, text)
                                .await
                                .map(|r| SentMessage {
                                    message_id: r.message_id,
                                    timestamp: crate::unix_now(),
                                })
                                .map_err(|e| GatewayError::WhatsApp {
                                    code: None,
                                    message: e.to_string(),
                                }),
                        };
                        *sent.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                        Ok(change)
                    },
                );
            }
            GroupsMsg::Written(change, done) => {
                state.apply(change).await;
                done.send();
            }
            #[cfg(feature = "test-server")]
            GroupsMsg::Crash => panic!("crash requested through the test-only admin trigger"),
        }
        Ok(())
    }
}

fn unit_reply(
    reply: RpcReplyPort<Result<()>>,
) -> impl FnOnce(Result<Change>) -> (Change, Done) + Send + 'static {
    move |r| match r {
        Ok(change) => (change, Done::Unit(reply, Ok(()))),
        Err(e) => (Change::None, Done::Unit(reply, Err(e))),
    }
}
