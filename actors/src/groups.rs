//! `session:<id>/groups`: the session's group operations and its group metadata cache.
//!
//! Reads within the refresh interval never reach this actor: the façade serves them from the
//! snapshot it publishes on its [`SessionLink`] after every change. A stale or missing entry
//! costs one WhatsApp query, and concurrent reads of the same group (or of the list) share it.
//! Writes go to WhatsApp first; the cache is then patched from WhatsApp's answer, persisted,
//! and only then is the write acknowledged. Group notifications patch the cache as they
//! arrive. Every WhatsApp round-trip runs in a spawned task, so the mailbox never waits on the
//! network.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::directory::{ActorKind, SessionLink, child_name};
use crate::error::{GatewayError, Result};
use crate::group_cache::{
    CachedGroup, Change, GroupCache, NotificationEffect, ParticipantAction, may_send,
    participant_results,
};
use crate::model::{
    ChatJid, GroupJid, GroupSettingsChange, GroupSummary, OutgoingText, ParticipantResult,
    SentMessage, SessionId, UserJid,
};
use crate::services::Shared;
use crate::store::CacheKind;
use crate::whatsapp::{GroupNotification, WaClient};

/// The sled key under which the time of the last full list query is kept.
const LIST_MARKER: &str = "#list";

/// Sends a finished write's answer once its cache change is on disk.
pub type Answer = Box<dyn FnOnce() + Send>;

pub enum GroupsMsg {
    /// The session's client changed (built, replaced or gone).
    ClientChanged(Option<WaClient>),
    /// A group notification pushed by WhatsApp.
    Notification(GroupNotification),
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
        reply: RpcReplyPort<Result<Arc<CachedGroup>>>,
    },
    Create {
        name: String,
        participants: Vec<UserJid>,
        settings: GroupSettingsChange,
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
        change: GroupSettingsChange,
        reply: RpcReplyPort<Result<()>>,
    },
    SendText {
        jid: GroupJid,
        text: OutgoingText,
        reply: RpcReplyPort<Result<SentMessage>>,
    },
    /// A group query finished.
    Fetched {
        jid: GroupJid,
        result: Result<CachedGroup>,
    },
    /// A list query finished.
    ListFetched(Result<Vec<CachedGroup>>),
    /// A write finished on WhatsApp: patch the cache, persist it, close its intent, answer.
    Written {
        change: Change,
        answer: Answer,
        intent: Option<(GroupJid, u64)>,
    },
    /// A write's outcome is unknown (no answer in time): read the group again.
    Revalidate { jid: GroupJid, intent: u64 },
    /// The session logged in: read again every group whose write outcome is unknown.
    LoggedIn,
    /// Test builds only: panic while handling a message.
    #[cfg(feature = "test-server")]
    Crash,
}

pub struct GroupsActor;

pub struct GroupsArgs {
    pub services: Shared,
    pub id: SessionId,
    pub client: Option<WaClient>,
    pub link: Arc<SessionLink>,
}

pub struct GroupsState {
    services: Shared,
    id: SessionId,
    client: Option<WaClient>,
    link: Arc<SessionLink>,
    cache: GroupCache,
    /// Readers waiting on an in-flight query, per group.
    waiting: HashMap<String, Vec<RpcReplyPort<Result<Arc<CachedGroup>>>>>,
    list_waiting: Option<Vec<RpcReplyPort<Result<Vec<GroupSummary>>>>>,
    /// Writes whose outcome is unknown, per group: closed once the group is read again.
    open_intents: HashMap<String, Vec<u64>>,
    /// Groups WhatsApp said this account is not in, and when: asked again only after the
    /// refresh interval (or on `refresh`), so polling one costs at most a query per interval.
    missing: HashMap<String, u64>,
    messages: Arc<AtomicU64>,
}

/// Whether a failed write may still have been applied by WhatsApp.
fn outcome_unknown(e: &GatewayError) -> bool {
    matches!(
        e,
        GatewayError::WhatsAppTimeout(_) | GatewayError::NotConnected(_)
    )
}

impl GroupsState {
    fn fresh(&self, fetched_at: u64) -> bool {
        crate::group_cache::is_fresh(
            fetched_at,
            crate::unix_now(),
            self.services.settings.groups.refresh_interval.as_secs(),
        )
    }

    fn client(&self) -> Result<WaClient> {
        self.client.clone().ok_or(GatewayError::NotLoggedIn)
    }

    fn own_user(&self) -> Option<String> {
        self.client.as_ref().and_then(WaClient::own_user)
    }

    fn publish(&self) {
        self.link.publish_groups(self.cache.snapshot());
    }

    async fn persist(&self, jid: &str) {
        let store = &self.services.store;
        let result = match self.cache.get(jid) {
            Some(group) => {
                store
                    .put_cached(CacheKind::Groups, &self.id, jid, group)
                    .await
            }
            None => store.remove_cached(CacheKind::Groups, &self.id, jid).await,
        };
        if let Err(e) = result {
            tracing::error!(session = %self.id, group = jid, error = %e, "could not persist group cache");
        }
    }

    /// Applies a change to the cache, persists what it touched and publishes the result.
    async fn apply(&mut self, change: Change) {
        let own = self.own_user();
        if let Some(touched) = self.cache.apply(change, own.as_deref()) {
            self.missing.remove(&touched);
            self.persist(&touched).await;
            self.publish();
        }
    }

    /// Whether WhatsApp said lately that this account is not in the group.
    fn known_missing(&self, jid: &str) -> bool {
        self.missing.get(jid).is_some_and(|at| self.fresh(*at))
    }

    fn mark_missing(&mut self, jid: &str) {
        let now = crate::unix_now();
        let interval = self.services.settings.groups.refresh_interval.as_secs();
        self.missing
            .retain(|_, at| crate::group_cache::is_fresh(*at, now, interval));
        self.missing.insert(jid.to_owned(), now);
    }

    /// Starts (or joins) the one query for this group.
    fn fetch(
        &mut self,
        myself: &ActorRef<GroupsMsg>,
        jid: GroupJid,
        waiter: Option<RpcReplyPort<Result<Arc<CachedGroup>>>>,
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
        let myself = myself.clone();
        tokio::spawn(async move {
            let result = client.group(&jid).await;
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
        let myself = myself.clone();
        tokio::spawn(async move {
            let result = client.participating_groups().await;
            let _ = myself.cast(GroupsMsg::ListFetched(result));
        });
    }

    /// Runs a write against WhatsApp in a task. A write to a known group is first recorded as
    /// an intent, so a crash or a lost answer leads to reading the group again. A write that
    /// changes the cache (or closes an intent) comes back as `Written`, so the change is on
    /// disk before the answer; one that does not answers from the task.
    fn write<T, F, Fut>(
        &self,
        myself: &ActorRef<GroupsMsg>,
        group: Option<GroupJid>,
        reply: RpcReplyPort<Result<T>>,
        work: F,
    ) where
        T: Send + 'static,
        F: FnOnce(WaClient) -> Fut,
        Fut: Future<Output = Result<(Change, T)>> + Send + 'static,
    {
        self.write_steps(myself, group, reply, false, work);
    }

    /// [`Self::write`] for work of several WhatsApp calls (`steps`): after a failure, the
    /// steps before it may have been applied, so the group is read again, as after a lost
    /// answer (except when WhatsApp asked to slow down).
    fn write_steps<T, F, Fut>(
        &self,
        myself: &ActorRef<GroupsMsg>,
        group: Option<GroupJid>,
        reply: RpcReplyPort<Result<T>>,
        steps: bool,
        work: F,
    ) where
        T: Send + 'static,
        F: FnOnce(WaClient) -> Fut,
        Fut: Future<Output = Result<(Change, T)>> + Send + 'static,
    {
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let work = work(client);
        let myself = myself.clone();
        let store = self.services.store.clone();
        let id = self.id.clone();
        tokio::spawn(async move {
            let intent = match &group {
                Some(jid) => match store.begin_intent(&id, jid.as_str()).await {
                    Ok(intent) => Some((jid.clone(), intent)),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                },
                None => None,
            };
            match work.await {
                Ok((change, value)) if change == Change::None && intent.is_none() => {
                    let _ = reply.send(Ok(value));
                }
                Ok((change, value)) => {
                    let answer: Answer = Box::new(move || {
                        let _ = reply.send(Ok(value));
                    });
                    let _ = myself.cast(GroupsMsg::Written {
                        change,
                        answer,
                        intent,
                    });
                }
                Err(e) => {
                    if let Some((jid, intent)) = intent {
                        let partly_applied =
                            steps && !matches!(e, GatewayError::RateLimited { .. });
                        if outcome_unknown(&e) || partly_applied {
                            let _ = myself.cast(GroupsMsg::Revalidate { jid, intent });
                        } else if let Err(err) = store.end_intent(&id, jid.as_str(), intent) {
                            tracing::warn!(session = %id, error = %err, "could not close a write intent");
                        }
                    }
                    let _ = reply.send(Err(e));
                }
            }
        });
    }

    fn end_intents(&mut self, jid: &str) {
        for intent in self.open_intents.remove(jid).unwrap_or_default() {
            if let Err(e) = self.services.store.end_intent(&self.id, jid, intent) {
                tracing::warn!(session = %self.id, error = %e, "could not close a write intent");
            }
        }
    }

    /// Reads again every group with a write of unknown outcome.
    fn revalidate(&mut self, myself: &ActorRef<GroupsMsg>) {
        let jids: Vec<String> = self.open_intents.keys().cloned().collect();
        for jid in jids {
            if let Some(jid) = GroupJid::parse(&jid) {
                self.fetch(myself, jid, None);
            }
        }
    }

    async fn on_notification(&mut self, myself: &ActorRef<GroupsMsg>, note: &GroupNotification) {
        let own = self.own_user();
        match self.cache.effect_of(note, own.as_deref()) {
            NotificationEffect::Patch(change) => self.apply(*change).await,
            NotificationEffect::Refetch(jid) => {
                if let Some(jid) = GroupJid::parse(&jid) {
                    self.fetch(myself, jid, None);
                }
            }
            NotificationEffect::Nothing => {}
        }
    }

    async fn on_list(&mut self, result: Result<Vec<CachedGroup>>) {
        let waiters = self.list_waiting.take().unwrap_or_default();
        let answer = match result {
            Ok(groups) => {
                let now = crate::unix_now();
                let gone = self.cache.replace_all(groups, now);
                for group in self.cache.groups() {
                    self.missing.remove(&group.jid);
                }
                let store = &self.services.store;
                let mut saved =
                    store.put_cached_unflushed(CacheKind::Groups, &self.id, LIST_MARKER, &now);
                for group in self.cache.groups() {
                    saved = saved.and_then(|()| {
                        store.put_cached_unflushed(CacheKind::Groups, &self.id, &group.jid, group)
                    });
                }
                for jid in &gone {
                    saved = saved.and_then(|()| {
                        store.remove_cached_unflushed(CacheKind::Groups, &self.id, jid)
                    });
                }
                if let Err(e) = saved {
                    tracing::error!(session = %self.id, error = %e, "could not persist group list");
                } else if let Err(e) = store.flush().await {
                    tracing::error!(session = %self.id, error = %e, "could not flush group list");
                }
                self.publish();
                Ok(self.cache.snapshot().summaries())
            }
            Err(e) => Err(e),
        };
        for w in waiters {
            let _ = w.send(answer.clone());
        }
    }

    async fn on_fetched(&mut self, jid: GroupJid, result: Result<CachedGroup>) {
        let waiters = self.waiting.remove(jid.as_str()).unwrap_or_default();
        let answer = match result {
            Ok(group) => {
                self.apply(Change::Upsert(group)).await;
                self.end_intents(jid.as_str());
                self.cache
                    .get_shared(jid.as_str())
                    .ok_or(GatewayError::GroupNotFound)
            }
            Err(GatewayError::GroupNotFound) => {
                if self.cache.contains(jid.as_str()) {
                    self.apply(Change::Remove(jid.as_str().to_owned())).await;
                }
                self.mark_missing(jid.as_str());
                self.end_intents(jid.as_str());
                Err(GatewayError::GroupNotFound)
            }
            Err(e) => Err(e),
        };
        for w in waiters {
            let _ = w.send(answer.clone());
        }
    }

    fn inspect(&self) -> serde_json::Value {
        serde_json::json!({
            "session": self.id.as_str(),
            "client_ready": self.client.is_some(),
            "cached_groups": self.cache.len(),
            "groups": self.cache.jids().collect::<Vec<_>>(),
            "list_fetched_at": self.cache.list_fetched_at,
            "queries_in_flight": self.waiting.len() + usize::from(self.list_waiting.is_some()),
            "writes_of_unknown_outcome": self.open_intents.values().map(Vec::len).sum::<usize>(),
        })
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
        let name = child_name(args.id.as_str(), ActorKind::Groups);
        let messages = args.services.directory.starting(&name, ActorKind::Groups);
        let mut groups = Vec::new();
        let mut list_fetched_at = 0;
        for (key, env) in args
            .services
            .store
            .cached::<serde_json::Value>(CacheKind::Groups, &args.id)?
        {
            if key == LIST_MARKER {
                list_fetched_at = env.data.as_u64().unwrap_or(0);
            } else if let Ok(group) = serde_json::from_value::<CachedGroup>(env.data) {
                groups.push(group);
            }
        }
        let mut cache = GroupCache::new(list_fetched_at, groups);
        let mut open_intents: HashMap<String, Vec<u64>> = HashMap::new();
        for (jid, intent) in args.services.store.intents(&args.id)? {
            // What the cache says of this group may predate a write WhatsApp applied.
            cache.apply(Change::Stale(jid.clone()), None);
            open_intents.entry(jid).or_default().push(intent);
        }
        Ok(GroupsState {
            services: args.services,
            id: args.id,
            client: args.client,
            link: args.link,
            cache,
            waiting: HashMap::new(),
            list_waiting: None,
            open_intents,
            missing: HashMap::new(),
            messages,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        state.publish();
        state
            .link
            .publish_child(ActorKind::Groups, Some(myself.get_cell()));
        state.services.directory.running(
            &child_name(state.id.as_str(), ActorKind::Groups),
            myself.get_cell(),
        );
        if state.client.as_ref().is_some_and(WaClient::is_connected) {
            state.revalidate(&myself);
        }
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
            GroupsMsg::Notification(note) => state.on_notification(&myself, &note).await,
            GroupsMsg::Learn(jid) => {
                state.missing.remove(jid.as_str());
                state.fetch(&myself, jid, None)
            }
            GroupsMsg::Inspect(reply) => {
                let _ = reply.send(state.inspect());
            }
            GroupsMsg::List { refresh, reply } => {
                let list_fresh =
                    state.cache.list_fetched_at > 0 && state.fresh(state.cache.list_fetched_at);
                if !refresh && list_fresh {
                    let _ = reply.send(Ok(state.cache.snapshot().summaries()));
                } else {
                    state.fetch_list(&myself, reply);
                }
            }
            GroupsMsg::ListFetched(result) => state.on_list(result).await,
            GroupsMsg::Get {
                jid,
                refresh,
                reply,
            } => match state.cache.get_shared(jid.as_str()) {
                Some(group) if !refresh && state.fresh(group.fetched_at) => {
                    let _ = reply.send(Ok(group));
                }
                None if !refresh && state.known_missing(jid.as_str()) => {
                    let _ = reply.send(Err(GatewayError::GroupNotFound));
                }
                _ => state.fetch(&myself, jid, Some(reply)),
            },
            GroupsMsg::Fetched { jid, result } => state.on_fetched(jid, result).await,
            GroupsMsg::Create {
                name,
                participants,
                settings,
                reply,
            } => state.write(&myself, None, reply, move |client| async move {
                let group = client.create_group(name, &participants, settings).await?;
                let jid = GroupJid::parse(&group.jid).ok_or_else(|| GatewayError::WhatsApp {
                    code: None,
                    message: format!("WhatsApp returned an unexpected group id {}", group.jid),
                })?;
                Ok((Change::Upsert(group), jid))
            }),
            GroupsMsg::SetSubject {
                jid,
                subject,
                reply,
            } => state.write(
                &myself,
                Some(jid.clone()),
                reply,
                move |client| async move {
                    let stored = client.set_subject(&jid, subject).await?;
                    Ok((Change::Subject(jid.as_str().to_owned(), stored), ()))
                },
            ),
            GroupsMsg::SetDescription {
                jid,
                description,
                prev_id,
                reply,
            } => state.write(
                &myself,
                Some(jid.clone()),
                reply,
                move |client| async move {
                    let change = match client.set_description(&jid, description, prev_id).await? {
                        Some(group) => Change::Upsert(group),
                        None => Change::Stale(jid.as_str().to_owned()),
                    };
                    Ok((change, ()))
                },
            ),
            GroupsMsg::Leave { jid, reply } => state.write(
                &myself,
                Some(jid.clone()),
                reply,
                move |client| async move {
                    client.leave_group(&jid).await?;
                    Ok((Change::Remove(jid.as_str().to_owned()), ()))
                },
            ),
            GroupsMsg::Participants {
                jid,
                action,
                participants,
                reply,
            } => state.write(
                &myself,
                Some(jid.clone()),
                reply,
                move |client| async move {
                    let answers = client
                        .change_participants(&jid, action, &participants)
                        .await?;
                    let (results, applied) = participant_results(action, &participants, &answers);
                    Ok((
                        Change::Participants(jid.as_str().to_owned(), action, applied),
                        results,
                    ))
                },
            ),
            GroupsMsg::Settings { jid, change, reply } => state.write_steps(
                &myself,
                Some(jid.clone()),
                reply,
                true,
                move |client| async move {
                    if let Some(on) = change.announce {
                        client.set_announce(&jid, on).await?;
                    }
                    if let Some(on) = change.locked {
                        client.set_locked(&jid, on).await?;
                    }
                    if let Some(mode) = change.member_add_mode {
                        client.set_member_add_mode(&jid, mode).await?;
                    }
                    if let Some(mode) = change.member_link_mode {
                        client.set_member_link_mode(&jid, mode).await?;
                    }
                    if let Some(on) = change.membership_approval {
                        client.set_membership_approval(&jid, on).await?;
                    }
                    Ok((Change::Settings(jid.as_str().to_owned(), change), ()))
                },
            ),
            GroupsMsg::SendText { jid, text, reply } => {
                let cached = state.cache.get_shared(jid.as_str());
                if cached.is_none() && state.known_missing(jid.as_str()) {
                    let _ = reply.send(Err(GatewayError::GroupNotFound));
                    return Ok(());
                }
                let own = state.own_user();
                state.write(&myself, None, reply, move |client| async move {
                    let (group, change) = match cached {
                        Some(group) => (group, Change::None),
                        None => {
                            let group = client.group(&jid).await?;
                            (Arc::new(group.clone()), Change::Upsert(group))
                        }
                    };
                    may_send(&group, own.as_deref())?;
                    let sent = client.send_text(&ChatJid::Group(jid), text).await?;
                    Ok((change, sent))
                });
            }
            GroupsMsg::Written {
                change,
                answer,
                intent,
            } => {
                state.apply(change).await;
                if let Some((jid, intent)) = intent
                    && let Err(e) = state
                        .services
                        .store
                        .end_intent(&state.id, jid.as_str(), intent)
                {
                    tracing::warn!(session = %state.id, error = %e, "could not close a write intent");
                }
                answer();
            }
            GroupsMsg::Revalidate { jid, intent } => {
                state
                    .open_intents
                    .entry(jid.as_str().to_owned())
                    .or_default()
                    .push(intent);
                state.fetch(&myself, jid, None);
            }
            GroupsMsg::LoggedIn => state.revalidate(&myself),
            #[cfg(feature = "test-server")]
            GroupsMsg::Crash => panic!("crash requested through the test-only admin trigger"),
        }
        Ok(())
    }
}
