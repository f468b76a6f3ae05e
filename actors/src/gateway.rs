//! The façade the edge calls: one typed async method per operation. It opens the store,
//! starts the supervision tree, and turns each request into one typed message to the right
//! actor, always with a timeout. Cached group reads are answered from the snapshot the groups
//! actor publishes, without messaging anyone.

use futures_util::StreamExt;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef, RpcReplyPort};
use std::sync::Arc;
use std::time::Duration;

use crate::directory::{ActorKind, Directory, NodeView, ROOT, SessionLink, WEBHOOKS};
use crate::error::{GatewayError, Result};
use crate::event_log::{EventLog, StoredEvent};
use crate::events::EventsMsg;
use crate::group_cache::{
    CachedGroup, GroupsSnapshot, ParticipantAction, may_send, may_share_link, refused_admin_changes,
};
use crate::groups::GroupsMsg;
use crate::intensity::Intensity;
use crate::invites::InvitesMsg;
use crate::model::{
    ChatJid, DeviceView, GroupInfoView, GroupJid, GroupSettingsChange, GroupSummary, GroupView,
    InviteInfoView, OutgoingText, PairCodeView, ParticipantResult, QrView, Quote, Rendered,
    SentMessage, SessionId, SessionStatus, SessionView, StatusView, UserJid,
};
use crate::services::{Services, Shared};
use crate::session::{RESTART_REASON, SessionMsg};
use crate::settings::Settings;
use crate::store::Store;
use crate::supervisor::{Supervisor, SupervisorMsg};
use crate::telemetry::{StatusLabels, Telemetry, WebhookLabels};
use crate::webhooks::{CreatedWebhook, WebhookPatch, WebhookSpec, WebhookView, WebhooksMsg};
use crate::whatsapp::connection::{ClientSlots, ConnectionEnv};
use crate::whatsapp::session_store::SentMessages;

/// How long the root may take to start the webhooks actor and every stored session's actor.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a request waits for a session (or its child) that is being restarted.
const RESTART_WAIT: Duration = Duration::from_secs(3);
/// How often a waiting request looks again.
const RESTART_POLL: Duration = Duration::from_millis(20);
/// Upper bound for asking an actor what it holds (admin only).
const INSPECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How many events one pull looks at, at most, when a type filter skips most of them.
const MAX_SCAN: usize = 10_000;
/// Upper bound for one session's answer while listing all of them.
const LIST_TIMEOUT: Duration = Duration::from_millis(500);

pub struct Gateway {
    services: Shared,
    supervisor: ActorRef<SupervisorMsg>,
    supervisor_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Turns true when shutdown starts.
    shutdown: tokio::sync::watch::Sender<bool>,
}

/// One page of a session's event log.
#[derive(Debug, Clone)]
pub struct EventPage {
    pub events: Vec<StoredEvent>,
    pub next_after: u64,
}

/// Where a pull reads on: after the last event returned; past the events a type filter
/// skipped when the scan stopped short of a page, so a sparse filter still moves forward;
/// else where it started.
fn next_after(page: &crate::event_log::Page, after: u64) -> u64 {
    match page.events.last() {
        Some(last) => last.seq,
        None if page.cut_short => page.scanned_to,
        None => after,
    }
}

/// Turns an actor call's outcome into the domain's.
fn answered<T>(
    outcome: std::result::Result<CallResult<Result<T>>, impl std::fmt::Debug>,
) -> std::result::Result<Result<T>, ()> {
    match outcome {
        Ok(CallResult::Success(result)) => Ok(result),
        _ => Err(()),
    }
}

fn logged_in(link: &SessionLink) -> Result<()> {
    if link.status() == SessionStatus::LoggedIn {
        Ok(())
    } else {
        Err(GatewayError::NotLoggedIn)
    }
}

impl Gateway {
    /// Opens the store under `settings.data_dir` and starts the tree, restoring every stored
    /// session.
    pub async fn start(settings: Settings) -> Result<Self> {
        std::fs::create_dir_all(settings.sessions_dir()).map_err(|e| {
            GatewayError::Storage(format!("creating {}: {e}", settings.data_dir.display()))
        })?;
        let store = {
            let settings = settings.clone();
            tokio::task::spawn_blocking(move || Store::open(&settings))
                .await
                .map_err(|e| GatewayError::Internal(e.to_string()))??
        };
        let telemetry = Arc::new(Telemetry::new());
        let connections = ConnectionEnv {
            sessions_dir: settings.sessions_dir(),
            whatsapp: settings.whatsapp.clone(),
            slots: Arc::new(ClientSlots::default()),
            connect_permits: Arc::new(tokio::sync::Semaphore::new(
                settings.whatsapp.connect_concurrency.max(1),
            )),
            telemetry: telemetry.clone(),
            sent_messages: SentMessages::open(store.db())?,
        };
        let events = EventLog::open(store.db())?;
        let services = Arc::new(Services {
            settings,
            store,
            directory: Directory::default(),
            intensity: Intensity::default(),
            connections,
            events,
            telemetry,
        });
        let (supervisor, supervisor_task) = Actor::spawn(None, Supervisor, services.clone())
            .await
            .map_err(|e| GatewayError::Internal(format!("starting the supervisor: {e}")))?;
        // The spawn returns before the root's post_start has built the rest of the tree.
        let ready = supervisor
            .call(SupervisorMsg::Ready, Some(START_TIMEOUT))
            .await;
        if !matches!(ready, Ok(CallResult::Success(()))) {
            supervisor.stop(Some("start-up did not finish".into()));
            return Err(GatewayError::Internal(format!(
                "the actor tree did not finish starting within {START_TIMEOUT:?}"
            )));
        }
        Ok(Self {
            services,
            supervisor,
            supervisor_task: std::sync::Mutex::new(Some(supervisor_task)),
            shutdown: tokio::sync::watch::channel(false).0,
        })
    }

    /// Shutdown has started: open event streams end now, so the HTTP drain is not held up.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn settings(&self) -> &Settings {
        &self.services.settings
    }

    fn call_timeout(&self) -> Duration {
        self.services.settings.supervision.call_timeout
    }

    fn refresh_secs(&self) -> u64 {
        self.services.settings.groups.refresh_interval.as_secs()
    }

    fn is_stored(&self, id: &SessionId) -> Result<bool> {
        Ok(self.services.store.session(id)?.is_some())
    }

    /// The session's link once its actor runs; waits briefly while it is being restarted.
    async fn link(&self, id: &SessionId) -> Result<Arc<SessionLink>> {
        let deadline = tokio::time::Instant::now() + RESTART_WAIT;
        loop {
            if let Some(link) = self.services.directory.link(id.as_str())
                && !link.is_gone()
            {
                return Ok(link);
            }
            if !self.is_stored(id)? {
                return Err(GatewayError::SessionNotFound(id.to_string()));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(GatewayError::Unavailable);
            }
            tokio::time::sleep(RESTART_POLL).await;
        }
    }

    /// A session's child, for an operation that needs the session logged in.
    async fn child<M: Send + 'static>(
        &self,
        id: &SessionId,
        kind: ActorKind,
    ) -> Result<ActorRef<M>> {
        // One deadline for both waits: the session coming back, then its child.
        let deadline = tokio::time::Instant::now() + RESTART_WAIT;
        let link = self.link(id).await?;
        loop {
            logged_in(&link)?;
            if let Some(cell) = link.child(kind) {
                return Ok(ActorRef::from(cell));
            }
            if link.is_gone() {
                return Err(self.lost(id));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(GatewayError::Unavailable);
            }
            tokio::time::sleep(RESTART_POLL).await;
        }
    }

    /// A session that stopped answering is restarting, unless it was deleted meanwhile.
    fn lost(&self, id: &SessionId) -> GatewayError {
        match self.is_stored(id) {
            Ok(false) => GatewayError::SessionNotFound(id.to_string()),
            Ok(true) => GatewayError::Unavailable,
            Err(e) => e,
        }
    }

    async fn call_session<T: Send + 'static>(
        &self,
        id: &SessionId,
        build: impl FnOnce(RpcReplyPort<Result<T>>) -> SessionMsg,
    ) -> Result<T> {
        let actor: ActorRef<SessionMsg> = ActorRef::from(self.link(id).await?.session().clone());
        answered(actor.call(build, Some(self.call_timeout())).await).map_err(|()| self.lost(id))?
    }

    async fn call_groups<T: Send + 'static>(
        &self,
        id: &SessionId,
        build: impl FnOnce(RpcReplyPort<Result<T>>) -> GroupsMsg,
    ) -> Result<T> {
        let actor = self.child::<GroupsMsg>(id, ActorKind::Groups).await?;
        answered(actor.call(build, Some(self.call_timeout())).await).map_err(|()| self.lost(id))?
    }

    async fn call_invites<T: Send + 'static>(
        &self,
        id: &SessionId,
        build: impl FnOnce(RpcReplyPort<Result<T>>) -> InvitesMsg,
    ) -> Result<T> {
        let actor = self.child::<InvitesMsg>(id, ActorKind::Invites).await?;
        answered(actor.call(build, Some(self.call_timeout())).await).map_err(|()| self.lost(id))?
    }

    // ---- sessions (sessions.md) ----

    pub async fn create_session(
        &self,
        id: Option<SessionId>,
        name: Option<String>,
    ) -> Result<SessionView> {
        let reply = self
            .supervisor
            .call(
                |reply| SupervisorMsg::Create { id, name, reply },
                Some(self.call_timeout()),
            )
            .await;
        answered(reply).map_err(|()| GatewayError::Unavailable)?
    }

    /// Every session, in id order. A session whose actor does not answer in time is shown as
    /// its snapshot last recorded it.
    pub async fn list_sessions(&self) -> Result<Vec<SessionView>> {
        let records = self.services.store.sessions()?;
        let timeout = LIST_TIMEOUT.min(self.call_timeout());
        let lookups = records.into_iter().map(|record| async move {
            if let Some(link) = self.services.directory.link(record.id.as_str())
                && !link.is_gone()
            {
                let actor: ActorRef<SessionMsg> = ActorRef::from(link.session().clone());
                if let Ok(Ok(view)) = answered(actor.call(SessionMsg::Get, Some(timeout)).await) {
                    return Some(view);
                }
            }
            // Deleted while listing: leave it out.
            self.services.store.session(&record.id).ok().flatten()?;
            Some(SessionView::from_record(&record, record.status))
        });
        Ok(futures_util::future::join_all(lookups)
            .await
            .into_iter()
            .flatten()
            .collect())
    }

    pub async fn session(&self, id: &SessionId) -> Result<SessionView> {
        self.call_session(id, SessionMsg::Get).await
    }

    pub async fn status(&self, id: &SessionId) -> Result<StatusView> {
        self.call_session(id, SessionMsg::Status).await
    }

    pub async fn connect(&self, id: &SessionId) -> Result<SessionStatus> {
        self.call_session(id, SessionMsg::Connect).await
    }

    pub async fn disconnect(&self, id: &SessionId) -> Result<()> {
        self.call_session(id, SessionMsg::Disconnect).await
    }

    pub async fn logout(&self, id: &SessionId) -> Result<()> {
        self.call_session(id, SessionMsg::Logout).await
    }

    pub async fn qr(&self, id: &SessionId) -> Result<QrView> {
        self.call_session(id, SessionMsg::Qr).await
    }

    /// Requests a pair code; `phone` is digits only (see [`crate::model::normalize_phone`]).
    pub async fn pair(&self, id: &SessionId, phone: String) -> Result<PairCodeView> {
        self.call_session(id, |reply| SessionMsg::Pair(phone, reply))
            .await
    }

    pub async fn device(&self, id: &SessionId) -> Result<DeviceView> {
        self.call_session(id, SessionMsg::Device).await
    }

    /// Deletes a session, then its webhook cursors: a session created again under this id is
    /// delivered from its own first event. Should that step fail, the webhooks actor forgets
    /// the cursors of every deleted session when it next starts.
    pub async fn delete(&self, id: &SessionId) -> Result<()> {
        self.call_session(id, SessionMsg::Delete).await?;
        let session = id.to_string();
        if let Err(e) = self
            .call_webhooks(|reply| WebhooksMsg::ForgetSession(session, reply))
            .await
        {
            tracing::error!(session = %id, error = %e, "deleted, but its webhook cursors remain until the webhooks actor restarts");
        }
        Ok(())
    }

    // ---- groups (groups.md, groups-extra.md) ----

    /// The session's groups; from the cache while its list is fresh.
    pub async fn list_groups(&self, id: &SessionId, refresh: bool) -> Result<Vec<GroupSummary>> {
        if !refresh
            && let Some(list) = self
                .groups_snapshot(id)
                .await?
                .fresh_list(crate::unix_now(), self.refresh_secs())
        {
            return Ok(list);
        }
        self.call_groups(id, |reply| GroupsMsg::List { refresh, reply })
            .await
    }

    /// The session's groups snapshot, once it is logged in.
    async fn groups_snapshot(&self, id: &SessionId) -> Result<Arc<GroupsSnapshot>> {
        let link = self.link(id).await?;
        logged_in(&link)?;
        Ok(link.groups_cache())
    }

    /// The group as the groups actor has it, after querying WhatsApp when stale or `refresh`.
    async fn queried_group(
        &self,
        id: &SessionId,
        jid: &GroupJid,
        refresh: bool,
    ) -> Result<Arc<CachedGroup>> {
        let jid = jid.clone();
        self.call_groups(id, |reply| GroupsMsg::Get {
            jid,
            refresh,
            reply,
        })
        .await
    }

    /// `GET /groups/{jid}`; a fresh cached group's reply is rendered once per cache change.
    pub async fn group(
        &self,
        id: &SessionId,
        jid: &GroupJid,
        refresh: bool,
    ) -> Result<Rendered<GroupView>> {
        self.group_reply(
            id,
            jid,
            refresh,
            GroupsSnapshot::fresh_view,
            CachedGroup::view,
        )
        .await
    }

    /// `GET /groups/{jid}/info`; rendered as [`Self::group`] is.
    pub async fn group_info(
        &self,
        id: &SessionId,
        jid: &GroupJid,
        refresh: bool,
    ) -> Result<Rendered<GroupInfoView>> {
        self.group_reply(
            id,
            jid,
            refresh,
            GroupsSnapshot::fresh_info,
            CachedGroup::info,
        )
        .await
    }

    /// A group reply: the snapshot's rendering (`cached`) while the group is fresh, else
    /// `view` of the group the actor queried.
    async fn group_reply<T: serde::Serialize>(
        &self,
        id: &SessionId,
        jid: &GroupJid,
        refresh: bool,
        cached: impl FnOnce(&GroupsSnapshot, &str, u64, u64) -> Option<Result<Rendered<T>>>,
        view: impl FnOnce(&CachedGroup) -> T,
    ) -> Result<Rendered<T>> {
        if !refresh {
            let snapshot = self.groups_snapshot(id).await?;
            let now = crate::unix_now();
            if let Some(reply) = cached(&snapshot, jid.as_str(), now, self.refresh_secs()) {
                return reply;
            }
        }
        Rendered::render(&view(&*self.queried_group(id, jid, refresh).await?))
    }

    pub async fn create_group(
        &self,
        id: &SessionId,
        name: String,
        participants: Vec<UserJid>,
        settings: GroupSettingsChange,
    ) -> Result<GroupJid> {
        self.call_groups(id, |reply| GroupsMsg::Create {
            name,
            participants,
            settings,
            reply,
        })
        .await
    }

    pub async fn set_group_subject(
        &self,
        id: &SessionId,
        jid: GroupJid,
        subject: String,
    ) -> Result<()> {
        self.call_groups(id, |reply| GroupsMsg::SetSubject {
            jid,
            subject,
            reply,
        })
        .await
    }

    /// Sets the description, or deletes it with `None`.
    pub async fn set_group_description(
        &self,
        id: &SessionId,
        jid: GroupJid,
        description: Option<String>,
        prev_id: Option<String>,
    ) -> Result<()> {
        self.call_groups(id, |reply| GroupsMsg::SetDescription {
            jid,
            description,
            prev_id,
            reply,
        })
        .await
    }

    pub async fn leave_group(&self, id: &SessionId, jid: GroupJid) -> Result<()> {
        self.call_groups(id, |reply| GroupsMsg::Leave { jid, reply })
            .await
    }

    async fn change_participants(
        &self,
        id: &SessionId,
        jid: GroupJid,
        action: ParticipantAction,
        participants: Vec<UserJid>,
    ) -> Result<Vec<ParticipantResult>> {
        self.call_groups(id, |reply| GroupsMsg::Participants {
            jid,
            action,
            participants,
            reply,
        })
        .await
    }

    /// Adds participants; WhatsApp answers per participant.
    pub async fn add_participants(
        &self,
        id: &SessionId,
        jid: GroupJid,
        participants: Vec<UserJid>,
    ) -> Result<Vec<ParticipantResult>> {
        self.change_participants(id, jid, ParticipantAction::Add, participants)
            .await
    }

    /// Removes participants; WhatsApp answers per participant.
    pub async fn remove_participants(
        &self,
        id: &SessionId,
        jid: GroupJid,
        participants: Vec<UserJid>,
    ) -> Result<Vec<ParticipantResult>> {
        self.change_participants(id, jid, ParticipantAction::Remove, participants)
            .await
    }

    async fn change_admins(
        &self,
        id: &SessionId,
        jid: GroupJid,
        action: ParticipantAction,
        participants: Vec<UserJid>,
    ) -> Result<()> {
        let results = self
            .change_participants(id, jid, action, participants)
            .await?;
        match refused_admin_changes(&results) {
            Some(refused) => Err(refused),
            None => Ok(()),
        }
    }

    /// Promotes participants to admins; fails naming everyone WhatsApp refused.
    pub async fn promote_participants(
        &self,
        id: &SessionId,
        jid: GroupJid,
        participants: Vec<UserJid>,
    ) -> Result<()> {
        self.change_admins(id, jid, ParticipantAction::Promote, participants)
            .await
    }

    /// Demotes admins; fails naming everyone WhatsApp refused.
    pub async fn demote_participants(
        &self,
        id: &SessionId,
        jid: GroupJid,
        participants: Vec<UserJid>,
    ) -> Result<()> {
        self.change_admins(id, jid, ParticipantAction::Demote, participants)
            .await
    }

    pub async fn set_group_settings(
        &self,
        id: &SessionId,
        jid: GroupJid,
        change: GroupSettingsChange,
    ) -> Result<()> {
        self.call_groups(id, |reply| GroupsMsg::Settings { jid, change, reply })
            .await
    }

    /// The group's invite link; `reset` revokes the current one first. A cached link is
    /// served only while the groups cache shows this account an admin of the group.
    pub async fn invite_link(&self, id: &SessionId, jid: GroupJid, reset: bool) -> Result<String> {
        let link = self.link(id).await?;
        let own_user = link.client().and_then(|client| client.own_user());
        let group = link.groups_cache().group(jid.as_str());
        let may_use_cached = may_share_link(group.as_deref(), own_user.as_deref());
        self.call_invites(id, |reply| InvitesMsg::Link {
            jid,
            reset,
            may_use_cached,
            reply,
        })
        .await
    }

    /// Joins the group behind an invite code; the groups cache learns it.
    pub async fn join_group(&self, id: &SessionId, code: String) -> Result<GroupJid> {
        let jid = self
            .call_invites(id, |reply| InvitesMsg::Join { code, reply })
            .await?;
        if let Ok(groups) = self.child::<GroupsMsg>(id, ActorKind::Groups).await {
            let _ = groups.cast(GroupsMsg::Learn(jid.clone()));
        }
        Ok(jid)
    }

    pub async fn invite_info(&self, id: &SessionId, code: String) -> Result<InviteInfoView> {
        self.call_invites(id, |reply| InvitesMsg::Info { code, reply })
            .await
    }

    // ---- messages (messages.md) ----

    /// Sends a text to a user or a group; with `quoted_id`, as a reply quoting that message,
    /// which the session's event log must hold (`not_found` otherwise).
    pub async fn send_text(
        &self,
        id: &SessionId,
        to: ChatJid,
        text: String,
        quoted_id: Option<String>,
    ) -> Result<SentMessage> {
        let quote = match quoted_id {
            Some(quoted_id) => Some(self.quote(id, &to, quoted_id).await?),
            None => None,
        };
        let text = OutgoingText { text, quote };
        let chat = to.as_str().to_owned();
        let sent = match to {
            ChatJid::Group(jid) => self.send_to_group(id, jid, text).await,
            ChatJid::User(to) => {
                self.call_session(id, |reply| SessionMsg::SendText { to, text, reply })
                    .await
            }
        }?;
        // WhatsApp's server accepted it: the first of the message's acks.
        let ack = crate::model::MessageAck {
            chat,
            by: "s.whatsapp.net".into(),
            message_ids: vec![sent.message_id.clone()],
            status: crate::model::AckStatus::Server,
            timestamp: sent.timestamp,
        };
        if let Some(log) = self
            .services
            .directory
            .link(id.as_str())
            .and_then(|link| link.child(ActorKind::Events))
        {
            let _ = ActorRef::<EventsMsg>::from(log)
                .cast(EventsMsg::Record(crate::event_data::acks(&ack)));
        }
        Ok(sent)
    }

    /// The message `quoted_id` names, as a reply to it shows it, from the session's event log.
    /// A session that cannot send says so first.
    async fn quote(&self, id: &SessionId, to: &ChatJid, quoted_id: String) -> Result<Quote> {
        logged_in(&*self.link(id).await?)?;
        let log = self.services.events.clone();
        let (session, chat) = (id.to_string(), to.as_str().to_owned());
        let lookup = quoted_id.clone();
        // A message the chat does not hold is looked for among all the session's: a scan.
        let found = tokio::task::spawn_blocking(move || log.find_message(&session, &chat, &lookup))
            .await
            .map_err(|e| GatewayError::Internal(format!("quote lookup: {e}")))??;
        let event = found.ok_or_else(|| {
            GatewayError::NotFound(format!(
                "message '{quoted_id}' is not in this session's event log; a reply can quote a \
                 message the session received, or sent from another device, while it is retained"
            ))
        })?;
        let envelope: serde_json::Value = serde_json::from_slice(&event.envelope)?;
        let data = &envelope["data"];
        let sender = data["sender"]
            .as_str()
            .ok_or_else(|| GatewayError::Internal(format!("event {} has no sender", event.seq)))?;
        Ok(Quote {
            id: quoted_id,
            sender: sender.to_owned(),
            text: data["text"].as_str().map(str::to_owned),
        })
    }

    /// A text to a group the cache knows goes straight to the session's client, as cached
    /// reads do: it needs nothing else from the groups actor, whose mailbox may be busy with
    /// queries. An unknown group goes through the actor, which queries it first.
    async fn send_to_group(
        &self,
        id: &SessionId,
        jid: GroupJid,
        text: OutgoingText,
    ) -> Result<SentMessage> {
        let link = self.link(id).await?;
        logged_in(&link)?;
        if let Some(client) = link.client()
            && let Some(group) = link.groups_cache().group(jid.as_str())
        {
            may_send(&group, client.own_user().as_deref())?;
            return client.send_text(&ChatJid::Group(jid), text).await;
        }
        self.call_groups(id, |reply| GroupsMsg::SendText { jid, text, reply })
            .await
    }

    // ---- admin (admin.md) ----

    /// `GET /sessions/{id}/events`: up to `limit` events after `after` (from the oldest still
    /// held when `None`), of `types` (all when `None`); `events_expired` when retention dropped
    /// some of those.
    pub async fn events(
        &self,
        id: &SessionId,
        after: Option<u64>,
        limit: usize,
        types: Option<Vec<String>>,
    ) -> Result<EventPage> {
        if !self.is_stored(id)? {
            return Err(GatewayError::SessionNotFound(id.to_string()));
        }
        let log = self.services.events.clone();
        let session = id.to_string();
        // A page may scan up to MAX_SCAN entries: off the request's task.
        let read = tokio::task::spawn_blocking(move || {
            let after = log.read_from(&session, after)?;
            Ok::<_, GatewayError>((
                after,
                log.read(&session, after, limit, types.as_deref(), MAX_SCAN)?,
            ))
        })
        .await
        .map_err(|e| GatewayError::Internal(format!("reading events: {e}")))?;
        match read? {
            (after, Ok(page)) => Ok(EventPage {
                next_after: next_after(&page, after),
                events: page.events,
            }),
            (_, Err(expired)) => Err(GatewayError::EventsExpired {
                oldest: expired.oldest,
            }),
        }
    }

    /// `GET /sessions/{id}/events/stream`: everything after `after` (from the oldest still
    /// held when `None`) from the log, then each new event as it becomes durable; ends when the
    /// gateway shuts down.
    pub fn event_stream(
        &self,
        id: &SessionId,
        after: Option<u64>,
        types: Option<Vec<String>>,
    ) -> Result<impl futures_util::Stream<Item = StoredEvent> + Send + Sync + 'static> {
        if !self.is_stored(id)? {
            return Err(GatewayError::SessionNotFound(id.to_string()));
        }
        let log = self.services.events.clone();
        let after = log.read_from(id.as_str(), after)?;
        if let Err(expired) = log.read(id.as_str(), after, 1, None, 1)? {
            return Err(GatewayError::EventsExpired {
                oldest: expired.oldest,
            });
        }
        let heads = log.subscribe(id.as_str())?;
        let shutdown = self.shutdown.subscribe();
        Ok(crate::event_stream::follow(
            log,
            id.as_str().to_owned(),
            after,
            types,
            heads,
            shutdown,
        ))
    }

    /// `GET /events/stream`: the events of `sessions` that become durable from now on, merged;
    /// each session's stay in seq order. Without `sessions`, every session's, including those
    /// created while the stream is open (from their first event).
    pub fn live_events(
        &self,
        sessions: Option<Vec<SessionId>>,
        types: Option<Vec<String>>,
    ) -> Result<impl futures_util::Stream<Item = StoredEvent> + Send + Sync + 'static> {
        let log = self.services.events.clone();
        let Some(ids) = sessions else {
            return Ok(
                crate::event_stream::follow_every(log, types, self.shutdown.subscribe())
                    .left_stream(),
            );
        };
        for id in &ids {
            if !self.is_stored(id)? {
                return Err(GatewayError::SessionNotFound(id.to_string()));
            }
        }
        let mut streams = Vec::with_capacity(ids.len());
        for id in ids {
            let heads = log.subscribe(id.as_str())?;
            // The published head is durable: following from it yields only what comes next.
            let now = *heads.borrow();
            streams.push(Box::pin(crate::event_stream::follow(
                log.clone(),
                id.as_str().to_owned(),
                now,
                types.clone(),
                heads,
                self.shutdown.subscribe(),
            )));
        }
        Ok(futures_util::stream::select_all(streams).right_stream())
    }

    /// The webhooks actor; waits briefly while it is being restarted.
    async fn webhooks_actor(&self) -> Result<ActorRef<WebhooksMsg>> {
        let deadline = tokio::time::Instant::now() + RESTART_WAIT;
        loop {
            if let Some((ActorKind::Webhooks, cell)) = self.services.directory.cell(WEBHOOKS)
                && !matches!(
                    cell.get_status(),
                    ractor::ActorStatus::Stopped | ractor::ActorStatus::Stopping
                )
            {
                return Ok(ActorRef::from(cell));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(GatewayError::Unavailable);
            }
            tokio::time::sleep(RESTART_POLL).await;
        }
    }

    async fn call_webhooks<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<Result<T>>) -> WebhooksMsg,
    ) -> Result<T> {
        let actor = self.webhooks_actor().await?;
        answered(actor.call(build, Some(self.call_timeout())).await)
            .map_err(|()| GatewayError::Unavailable)?
    }

    pub async fn create_webhook(&self, spec: WebhookSpec) -> Result<CreatedWebhook> {
        self.call_webhooks(|r| WebhooksMsg::Create(spec, r)).await
    }

    pub async fn list_webhooks(&self) -> Result<Vec<WebhookView>> {
        self.call_webhooks(WebhooksMsg::List).await
    }

    pub async fn webhook(&self, id: String) -> Result<WebhookView> {
        self.call_webhooks(|r| WebhooksMsg::Get(id, r)).await
    }

    pub async fn update_webhook(&self, id: String, patch: WebhookPatch) -> Result<WebhookView> {
        self.call_webhooks(|r| WebhooksMsg::Update(id, patch, r))
            .await
    }

    pub async fn delete_webhook(&self, id: String) -> Result<()> {
        self.call_webhooks(|r| WebhooksMsg::Delete(id, r)).await
    }

    pub async fn replay_webhook(
        &self,
        id: String,
        session: &SessionId,
        after: u64,
    ) -> Result<WebhookView> {
        let session = session.to_string();
        self.call_webhooks(|reply| WebhooksMsg::Replay {
            id,
            session,
            after,
            reply,
        })
        .await
    }

    /// The live supervision tree.
    pub fn actor_tree(&self) -> Option<NodeView> {
        self.services.directory.tree()
    }

    /// One actor, plus what it holds now (redacted).
    pub async fn actor(&self, name: &str) -> Result<(NodeView, serde_json::Value)> {
        let directory = &self.services.directory;
        let node = directory
            .node(name)
            .ok_or_else(|| GatewayError::NotFound(format!("no actor named '{name}'")))?;
        let state = match directory.cell(name) {
            Some((ActorKind::Supervisor, _)) => serde_json::json!({
                "sessions": self.services.store.sessions()?.len(),
                "live_clients": self.services.connections.slots.live_count(),
            }),
            Some((ActorKind::Session, cell)) => {
                inspect(ActorRef::<SessionMsg>::from(cell), SessionMsg::Inspect).await
            }
            Some((ActorKind::Groups, cell)) => {
                inspect(ActorRef::<GroupsMsg>::from(cell), GroupsMsg::Inspect).await
            }
            Some((ActorKind::Invites, cell)) => {
                inspect(ActorRef::<InvitesMsg>::from(cell), InvitesMsg::Inspect).await
            }
            Some((ActorKind::Events, cell)) => {
                inspect(ActorRef::<EventsMsg>::from(cell), EventsMsg::Inspect).await
            }
            Some((ActorKind::Webhooks, cell)) => {
                inspect(ActorRef::<WebhooksMsg>::from(cell), WebhooksMsg::Inspect).await
            }
            None => serde_json::Value::Null,
        };
        Ok((node, state))
    }

    /// Stops an actor; its supervisor restarts it from its last snapshot.
    pub fn restart_actor(&self, name: &str) -> Result<()> {
        if name == ROOT {
            return Err(GatewayError::validation(
                "name",
                "the supervisor is the root of the tree and cannot be restarted on its own",
            ));
        }
        let (_, cell) =
            self.services.directory.cell(name).ok_or_else(|| {
                GatewayError::NotFound(format!("no running actor named '{name}'"))
            })?;
        cell.stop(Some(RESTART_REASON.into()));
        Ok(())
    }

    /// Test builds only: makes an actor panic while handling a message.
    #[cfg(feature = "test-server")]
    pub fn crash_actor(&self, name: &str) -> Result<()> {
        let (kind, cell) =
            self.services.directory.cell(name).ok_or_else(|| {
                GatewayError::NotFound(format!("no running actor named '{name}'"))
            })?;
        let sent = match kind {
            ActorKind::Session => ActorRef::<SessionMsg>::from(cell)
                .cast(SessionMsg::Crash)
                .is_ok(),
            ActorKind::Groups => ActorRef::<GroupsMsg>::from(cell)
                .cast(GroupsMsg::Crash)
                .is_ok(),
            ActorKind::Invites => ActorRef::<InvitesMsg>::from(cell)
                .cast(InvitesMsg::Crash)
                .is_ok(),
            ActorKind::Events => ActorRef::<EventsMsg>::from(cell)
                .cast(EventsMsg::Crash)
                .is_ok(),
            ActorKind::Webhooks => ActorRef::<WebhooksMsg>::from(cell)
                .cast(WebhooksMsg::Crash)
                .is_ok(),
            ActorKind::Supervisor => {
                return Err(GatewayError::validation(
                    "name",
                    "the supervisor cannot be crashed on purpose",
                ));
            }
        };
        if sent {
            Ok(())
        } else {
            Err(GatewayError::Unavailable)
        }
    }

    /// The session's persisted snapshot as stored (credentials are never part of it).
    pub fn snapshot(&self, id: &SessionId) -> Result<serde_json::Value> {
        self.services
            .store
            .raw_snapshot(id)?
            .ok_or_else(|| GatewayError::SessionNotFound(id.to_string()))
    }

    /// Store open and supervisor running.
    pub fn is_ready(&self) -> bool {
        matches!(self.supervisor.get_status(), ractor::ActorStatus::Running)
            && self.services.store.is_open()
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.services.telemetry
    }

    /// `/metrics`: the Prometheus exposition, with the tree's gauges read now.
    pub async fn render_metrics(&self) -> String {
        let sessions = self.list_sessions().await.unwrap_or_default();
        let webhooks = match self.webhooks_actor().await {
            Ok(actor) => match actor.call(WebhooksMsg::Stats, Some(INSPECT_TIMEOUT)).await {
                Ok(CallResult::Success(stats)) => stats,
                _ => Vec::new(),
            },
            Err(_) => Vec::new(),
        };
        let directory = &self.services.directory;
        let live_clients = self.services.connections.slots.live_count();
        self.services.telemetry.render(|t| {
            t.sessions.clear();
            for status in SessionStatus::ALL {
                let n = sessions.iter().filter(|s| s.status == status).count();
                t.sessions
                    .get_or_create(&StatusLabels {
                        status: status.to_string(),
                    })
                    .set(n as i64);
            }
            t.actors.set(directory.count() as i64);
            t.sync_restarts(directory.restarts_total());
            t.whatsapp_clients.set(live_clients as i64);
            t.webhook_pending.clear();
            t.webhook_oldest_pending.clear();
            for w in &webhooks {
                let labels = WebhookLabels {
                    webhook: w.id.clone(),
                };
                t.webhook_pending
                    .get_or_create(&labels)
                    .set(w.pending as i64);
                t.webhook_oldest_pending
                    .get_or_create(&labels)
                    .set(w.oldest_pending_age_seconds as i64);
            }
        })
    }

    /// Stops the tree in order (sessions stop their clients and children), then flushes sled.
    pub async fn shutdown(&self) {
        let grace = self.services.settings.supervision.shutdown_timeout;
        let _ = self
            .supervisor
            .stop_and_wait(Some("shutdown".into()), Some(grace * 2))
            .await;
        let task = self
            .supervisor_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(grace, task).await;
        }
        if let Err(e) = self.services.store.flush().await {
            tracing::error!(error = %e, "final flush failed");
        }
    }
}

async fn inspect<M: ractor::Message>(
    actor: ActorRef<M>,
    build: impl FnOnce(RpcReplyPort<serde_json::Value>) -> M,
) -> serde_json::Value {
    match actor.call(build, Some(INSPECT_TIMEOUT)).await {
        Ok(CallResult::Success(state)) => state,
        Ok(CallResult::Timeout) => serde_json::json!({"unresponsive": true}),
        _ => serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_log::Page;

    #[test]
    fn a_pull_reads_on_after_its_last_event_or_past_what_its_filter_skipped() {
        let page = |events: Vec<u64>, scanned_to, cut_short| Page {
            events: events.into_iter().map(StoredEvent::at_seq).collect(),
            scanned_to,
            cut_short,
        };
        assert_eq!(next_after(&page(vec![3, 5], 9, true), 1), 5);
        assert_eq!(next_after(&page(vec![], 9, true), 1), 9);
        assert_eq!(next_after(&page(vec![], 9, false), 1), 1);
    }
}
