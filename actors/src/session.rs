//! `session:<id>`: one WhatsApp session. Owns the session's one client (through the WhatsApp
//! port's [`connection`](crate::whatsapp::connection)), follows its reports through the status
//! machine in [`crate::status`], persists the session record on every change, publishes its
//! status on its [`SessionLink`], and supervises its `groups` and `invites` children.
//!
//! The mailbox stays responsive: anything that waits on WhatsApp (pair codes, logout, delete,
//! direct texts) runs in a spawned task that owns the reply port, and reports back by message
//! when the actor's state must change.

use futures_util::future::BoxFuture;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::directory::{self, ActorKind, NodeStatus, SessionLink, child_name};
use crate::error::{GatewayError, Result};
use crate::event_data;
use crate::event_log::NewEvent;
use crate::events::{EventsActor, EventsArgs, EventsMsg};
use crate::groups::{GroupsActor, GroupsArgs, GroupsMsg};
use crate::invites::{InvitesActor, InvitesArgs, InvitesMsg};
use crate::model::{
    ChatJid, DeviceView, OutgoingText, PairCodeView, QrView, SentMessage, SessionId, SessionRecord,
    SessionStatus, SessionView, StatusView, UserJid,
};
use crate::services::Shared;
use crate::status::{self, Live};
use crate::whatsapp::connection::{self, Connection, Reporter};
use crate::whatsapp::inbound::MessageSink;
use crate::whatsapp::{
    ConnectionExit, ConnectionReport, GroupChange, ReportKind, WaClient, WaEvent,
};

/// How long the WhatsApp client waits for a batch of messages to be made durable before it
/// leaves them unacknowledged (WhatsApp then delivers them again).
const APPEND_TIMEOUT: Duration = Duration::from_secs(10);

/// How many group names from notifications a session remembers.
const TOLD_NAMES: usize = 1024;

/// How long a pair code stays valid on WhatsApp's side.
const PAIR_CODE_TTL: Duration = Duration::from_secs(180);

/// The stop reason an operator's restart uses: the supervisor restarts the actor right away.
pub const RESTART_REASON: &str = "restart requested";
/// Why a session whose credentials another client took over is `failed`.
pub const REPLACED_REASON: &str =
    "replaced: another client logged in with this session's credentials";
/// Why a session whose stream kept ending in `conflict` is `failed`.
pub const CONFLICT_REASON: &str =
    "conflict: WhatsApp kept ending the stream with a conflict (409) after retries";
/// The stop reason of a deleted session: the supervisor forgets it.
pub const DELETED_REASON: &str = "session deleted";

pub enum SessionMsg {
    Get(RpcReplyPort<Result<SessionView>>),
    Status(RpcReplyPort<Result<StatusView>>),
    Connect(RpcReplyPort<Result<SessionStatus>>),
    Disconnect(RpcReplyPort<Result<()>>),
    Logout(RpcReplyPort<Result<()>>),
    Qr(RpcReplyPort<Result<QrView>>),
    /// Requests a pair code for this phone number (digits only).
    Pair(String, RpcReplyPort<Result<PairCodeView>>),
    Device(RpcReplyPort<Result<DeviceView>>),
    Delete(RpcReplyPort<Result<()>>),
    /// Sends a text to a user (group texts go through the groups child).
    SendText {
        to: UserJid,
        text: OutgoingText,
        reply: RpcReplyPort<Result<SentMessage>>,
    },
    /// What this actor holds now, redacted, for the admin API.
    Inspect(RpcReplyPort<serde_json::Value>),
    /// A report of one of this session's connections.
    Connection(ConnectionReport),
    /// Retry building a client after a failed start.
    Reconnect,
    RestartChild(ActorKind),
    /// A pair-code request finished.
    PairCodeReady(Result<String>),
    /// A spawned logout finished: record it, then answer.
    LogoutDone(Vec<RpcReplyPort<Result<()>>>),
    /// A logout that connected to unlink the device gives up waiting for the login (the
    /// number tells this wait from a later one).
    LogoutUnreached(u64),
    /// A spawned delete finished: stop for good.
    Deleted,
    /// Test builds only: panic while handling a message.
    #[cfg(feature = "test-server")]
    Crash,
}

pub struct SessionActor;

/// A pair code asked of WhatsApp for one phone number.
struct Pairing {
    phone: String,
    /// `None` while WhatsApp has not answered; those asking meanwhile wait in `waiting`.
    code: Option<String>,
    expires: Instant,
    waiting: Vec<RpcReplyPort<Result<PairCodeView>>>,
}

impl Pairing {
    fn view(&self, code: &str) -> PairCodeView {
        PairCodeView {
            code: format_pair_code(code),
            timeout_seconds: self
                .expires
                .saturating_duration_since(Instant::now())
                .as_secs(),
        }
    }
}

pub struct SessionArgs {
    pub services: Shared,
    pub id: SessionId,
    /// Start parked as `failed` (the supervisor gave up restarting it).
    pub park_failed: bool,
}

pub struct SessionState {
    services: Shared,
    id: SessionId,
    name: String,
    record: SessionRecord,
    link: Arc<SessionLink>,
    /// What the current connection reports; meaningful while `conn` is set.
    live: SessionStatus,
    conn: Option<Connection>,
    qr: Option<(String, Instant)>,
    /// The pair code requested (or being requested) for a phone number, until it expires.
    pairing: Option<Pairing>,
    groups: Option<ActorRef<GroupsMsg>>,
    invites: Option<ActorRef<InvitesMsg>>,
    events: Option<ActorRef<EventsMsg>>,
    children: HashMap<ActorId, ActorKind>,
    /// The status last published (and recorded as an event), and why it changed.
    published: SessionStatus,
    status_reason: Option<String>,
    /// Group names from the latest notifications, for events that name a group.
    told_names: HashMap<String, String>,
    /// Parked after too many failures: no client, no children, until `connect`.
    failed: bool,
    /// A delete is in progress: every request answers `session_not_found`.
    deleting: bool,
    /// The client reported a logout: erase credentials once it is gone.
    erase_on_exit: bool,
    /// Logouts of a session that was not logged in, waiting for the connection they started
    /// to log in, so that the device can be unlinked at WhatsApp.
    logout_waiting: Vec<RpcReplyPort<Result<()>>>,
    /// Counts those waits, so that the timer of one that ended cannot end a later one.
    logout_waits: u64,
    messages: Arc<AtomicU64>,
}

impl SessionState {
    fn client(&self) -> Option<WaClient> {
        self.conn.as_ref().and_then(|c| c.client.clone())
    }

    fn socket_alive(&self) -> bool {
        self.conn
            .as_ref()
            .and_then(|c| c.client.as_ref())
            .is_some_and(WaClient::is_connected)
    }

    fn status(&self) -> SessionStatus {
        let live = self.conn.as_ref().map(|_| Live {
            reported: self.live,
            socket_alive: self.socket_alive(),
        });
        status::effective(self.failed, self.record.status, live)
    }

    fn view(&self) -> SessionView {
        SessionView::from_record(&self.record, self.status())
    }

    fn is_paired(&self) -> bool {
        self.record.phone_number.is_some()
    }

    async fn persist(&mut self) -> Result<()> {
        self.record.updated_at = crate::unix_now();
        self.services.store.put_session(&self.record).await
    }

    async fn persist_or_log(&mut self) {
        if let Err(e) = self.persist().await {
            tracing::error!(session = %self.id, error = %e, "could not persist session snapshot");
        }
    }

    fn reporter(myself: &ActorRef<SessionMsg>) -> Reporter {
        let myself = myself.clone();
        // A dead actor means its connection is being replaced; the driver notices on its own.
        Arc::new(move |report| {
            let _ = myself.cast(SessionMsg::Connection(report));
        })
    }

    /// Hands inbound messages to this session's event log; `Ok` once they are durable.
    fn message_sink(&self) -> MessageSink {
        let services = self.services.clone();
        let id = self.id.clone();
        Arc::new(move |messages: Vec<crate::model::IncomingMessage>| {
            let append: BoxFuture<'static, std::result::Result<(), String>> =
                Box::pin(append_messages(services.clone(), id.clone(), messages));
            append
        })
    }

    /// Appends events without waiting; the log's actor reports its own failures.
    fn record(&self, events: Vec<NewEvent>) {
        if events.is_empty() {
            return;
        }
        match &self.events {
            Some(log) => {
                let _ = log.cast(EventsMsg::Record(events));
            }
            None => {
                tracing::warn!(session = %self.id, lost = events.len(), "event log not running; events not recorded")
            }
        }
    }

    /// Publishes the status for readers and records a change as a `session.status` event.
    fn publish(&mut self) {
        let status = self.status();
        self.link.publish_status(status);
        if status != self.published {
            let previous = std::mem::replace(&mut self.published, status);
            let reason = self.status_reason.take();
            self.record(vec![event_data::status(
                status,
                previous,
                reason.as_deref(),
                crate::unix_now(),
            )]);
        }
    }

    fn own_jids(&self) -> Vec<String> {
        let mut own = Vec::new();
        if let Some(phone) = &self.record.phone_number {
            own.push(format!("{phone}@s.whatsapp.net"));
        }
        if let Some(lid) = &self.record.lid {
            let user = lid.split('@').next().unwrap_or(lid);
            own.push(format!("{user}@lid"));
        }
        own
    }

    fn start_connection(&mut self, myself: &ActorRef<SessionMsg>) {
        if self.conn.is_none() {
            self.conn = Some(connection::connect(
                &self.services.connections,
                self.id.as_str(),
                Self::reporter(myself),
                self.message_sink(),
            ));
            self.live = SessionStatus::Connecting;
            self.qr = None;
            self.end_pairing();
        }
    }

    fn stop_connection(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.request_stop();
        }
        self.qr = None;
        self.end_pairing();
        self.tell_children_client(None);
    }

    /// Stops any connection a previous incarnation may have left, without waiting here.
    fn stop_leftover_connection(&self) {
        let services = self.services.clone();
        let id = self.id.clone();
        tokio::spawn(async move { services.connections.slots.stop(id.as_str()).await });
    }

    /// Hands the current client (or its absence) to the children and to the façade's link.
    fn tell_children_client(&self, client: Option<WaClient>) {
        self.link.publish_client(client.clone());
        if let Some(g) = &self.groups {
            let _ = g.cast(GroupsMsg::ClientChanged(client.clone()));
        }
        if let Some(i) = &self.invites {
            let _ = i.cast(InvitesMsg::ClientChanged(client));
        }
    }

    async fn spawn_child(&mut self, myself: &ActorRef<SessionMsg>, kind: ActorKind) {
        let cell = myself.get_cell();
        let client = self.client();
        let result = match kind {
            ActorKind::Groups => {
                let args = GroupsArgs {
                    services: self.services.clone(),
                    id: self.id.clone(),
                    client,
                    link: self.link.clone(),
                };
                cell.spawn_linked(None, GroupsActor, args)
                    .await
                    .map(|(r, _)| {
                        let id = r.get_id();
                        self.groups = Some(r);
                        id
                    })
            }
            ActorKind::Invites => {
                let args = InvitesArgs {
                    services: self.services.clone(),
                    id: self.id.clone(),
                    client,
                    link: self.link.clone(),
                };
                cell.spawn_linked(None, InvitesActor, args)
                    .await
                    .map(|(r, _)| {
                        let id = r.get_id();
                        self.invites = Some(r);
                        id
                    })
            }
            ActorKind::Events => {
                let args = EventsArgs {
                    services: self.services.clone(),
                    id: self.id.clone(),
                    link: self.link.clone(),
                };
                cell.spawn_linked(None, EventsActor, args)
                    .await
                    .map(|(r, _)| {
                        let id = r.get_id();
                        self.events = Some(r);
                        id
                    })
            }
            ActorKind::Session | ActorKind::Supervisor | ActorKind::Webhooks => return,
        };
        match result {
            Ok(actor_id) => {
                self.children.insert(actor_id, kind);
            }
            Err(e) => {
                tracing::error!(session = %self.id, child = ?kind, error = %e, "child failed to start");
                let delay = self.services.settings.supervision.restart_backoff_max;
                myself.send_after(delay, move || SessionMsg::RestartChild(kind));
            }
        }
    }

    fn forget_child(&mut self, kind: ActorKind) {
        match kind {
            ActorKind::Groups => self.groups = None,
            ActorKind::Invites => self.invites = None,
            ActorKind::Events => self.events = None,
            ActorKind::Session | ActorKind::Supervisor | ActorKind::Webhooks => {}
        }
        self.link.publish_child(kind, None);
    }

    /// Too many failures: drop the client and the children, and wait for `connect`.
    async fn park_failed(&mut self, myself: &ActorRef<SessionMsg>, reason: &str) {
        tracing::error!(session = %self.id, %reason, "session parked as failed until connect");
        self.failed = true;
        self.stop_connection();
        self.forget_child(ActorKind::Groups);
        self.forget_child(ActorKind::Invites);
        self.forget_child(ActorKind::Events);
        self.children.clear();
        myself
            .stop_children_and_wait(Some("session failed".into()), Some(Duration::from_secs(2)))
            .await;
        for kind in [ActorKind::Groups, ActorKind::Invites, ActorKind::Events] {
            self.services
                .directory
                .gave_up(&child_name(self.id.as_str(), kind), reason);
        }
        // The log stays open while parked: the `failed` status itself is an event.
        self.spawn_child(myself, ActorKind::Events).await;
        self.status_reason = Some(reason.to_owned());
        self.services.directory.gave_up(&self.name, reason);
        self.record.status = SessionStatus::Failed;
        self.persist_or_log().await;
    }

    async fn revive(&mut self, myself: &ActorRef<SessionMsg>) {
        self.failed = false;
        self.services.intensity.clear(self.id.as_str());
        self.services
            .directory
            .set_status(&self.name, NodeStatus::Running);
        self.record.status = if self.is_paired() {
            SessionStatus::Connecting
        } else {
            SessionStatus::Disconnected
        };
        self.spawn_child(myself, ActorKind::Groups).await;
        self.spawn_child(myself, ActorKind::Invites).await;
    }

    async fn on_report(&mut self, myself: &ActorRef<SessionMsg>, report: ConnectionReport) {
        let current = self
            .conn
            .as_ref()
            .is_some_and(|c| c.generation == report.generation);
        if !current {
            return;
        }
        match report.kind {
            ReportKind::ClientReady(client) => {
                if let Some(conn) = self.conn.as_mut() {
                    conn.client = Some(client.clone());
                }
                self.tell_children_client(Some(client));
            }
            ReportKind::Event(event) => {
                let logged_in = matches!(event, WaEvent::Connected(_));
                self.on_event(event).await;
                if logged_in && !self.logout_waiting.is_empty() {
                    let waiting = std::mem::take(&mut self.logout_waiting);
                    self.log_out(myself, waiting);
                }
            }
            ReportKind::Exited(exit) => self.on_exit(myself, exit).await,
        }
    }

    async fn on_event(&mut self, event: WaEvent) {
        self.live = status::after_event(self.live, &event);
        match event {
            WaEvent::Qr { code, timeout } => {
                self.qr = Some((code, Instant::now() + timeout));
            }
            WaEvent::QrExhausted => {
                tracing::info!(session = %self.id, "no QR code was scanned in time");
                self.qr = None;
            }
            WaEvent::PairCode { timeout, .. } => {
                // WhatsApp's own validity wins over the default.
                if let Some(pairing) = self.pairing.as_mut() {
                    pairing.expires = Instant::now() + timeout;
                }
            }
            WaEvent::PairSuccess(device) => {
                tracing::info!(session = %self.id, "paired with WhatsApp");
                self.qr = None;
                self.end_pairing();
                self.record.phone_number = Some(device.phone);
                self.record.lid = Some(device.lid);
                self.record.device_id = Some(device.device);
                if !device.business_name.is_empty() {
                    self.record.push_name = Some(device.business_name);
                }
                self.record.status = SessionStatus::Connected;
                self.persist_or_log().await;
            }
            WaEvent::PairError(error) => {
                tracing::warn!(session = %self.id, %error, "pairing failed");
            }
            WaEvent::Connected(identity) => {
                self.qr = None;
                self.end_pairing();
                if let Some(phone) = identity.phone {
                    self.record.phone_number = Some(phone);
                    self.record.device_id = identity.device;
                }
                if let Some(lid) = identity.lid {
                    self.record.lid = Some(lid);
                }
                if let Some(name) = identity.push_name {
                    self.record.push_name = Some(name);
                }
                self.record.status = SessionStatus::LoggedIn;
                self.record.last_connected_at = Some(crate::unix_now());
                self.persist_or_log().await;
                if let Some(g) = &self.groups {
                    let _ = g.cast(GroupsMsg::LoggedIn);
                }
            }
            WaEvent::Disconnected(reason) => {
                tracing::info!(session = %self.id, %reason, "disconnected from WhatsApp");
            }
            WaEvent::Reconnecting(delay) => {
                tracing::debug!(session = %self.id, ?delay, "reconnecting");
            }
            WaEvent::LoggedOut(reason) => {
                tracing::warn!(session = %self.id, %reason, "logged out by WhatsApp; credentials will be erased");
                self.status_reason = Some(format!("logged out by WhatsApp: {reason}"));
                self.erase_on_exit = true;
            }
            WaEvent::Replaced => {
                tracing::warn!(session = %self.id, "another client logged in with this session's credentials; not reconnecting");
            }
            WaEvent::Group(note) => {
                tracing::debug!(session = %self.id, group = %note.group, author = ?note.author, change = ?note.change, "group notification");
                // One notification, two effects: the events it makes, then the cache patch.
                // Names WhatsApp just told us win over a cache that may not have caught up.
                match &note.change {
                    GroupChange::Created { name: Some(name) } | GroupChange::Subject(name) => {
                        if self.told_names.len() >= TOLD_NAMES {
                            self.told_names.clear();
                        }
                        self.told_names.insert(note.group.clone(), name.clone());
                    }
                    _ => {}
                }
                let cache = self.link.groups_cache();
                let told = &self.told_names;
                let events = event_data::group(&note, &self.own_jids(), |jid| {
                    told.get(jid).cloned().or_else(|| cache.name_of(jid))
                });
                self.record(events);
                if let Some(g) = &self.groups {
                    let _ = g.cast(GroupsMsg::Notification(note));
                }
            }
            WaEvent::Ack(ack) => self.record(event_data::acks(&ack)),
        }
    }

    async fn on_exit(&mut self, myself: &ActorRef<SessionMsg>, exit: ConnectionExit) {
        self.conn = None;
        self.qr = None;
        self.end_pairing();
        self.tell_children_client(None);
        match exit {
            ConnectionExit::LoggedOut => self.erase_on_exit = true,
            ConnectionExit::ClientClosed => {
                // Nobody paired in time: stay offline until the operator asks again.
                self.record.wanted_online = false;
            }
            ConnectionExit::BuildFailed(e) => {
                if self.record.wanted_online {
                    let delay = self.services.settings.whatsapp.reconnect_backoff_max;
                    tracing::warn!(session = %self.id, error = %e, ?delay, "retrying client start later");
                    myself.send_after(delay, || SessionMsg::Reconnect);
                }
            }
            ConnectionExit::Replaced => {
                // Reconnecting would take the account back from the other client, which would
                // take it back again: wait for an operator's `connect`, also across restarts.
                self.record.wanted_online = false;
                self.park_failed(myself, REPLACED_REASON).await;
            }
            ConnectionExit::Conflict => {
                self.record.wanted_online = false;
                self.park_failed(myself, CONFLICT_REASON).await;
            }
            ConnectionExit::Stopped => {}
        }
        if self.erase_on_exit {
            self.erase_on_exit = false;
            if let Err(e) =
                crate::whatsapp::erase_credentials(&self.services.connections, self.id.as_str())
                    .await
            {
                tracing::error!(session = %self.id, error = %e, "could not erase credentials");
            }
            self.mark_logged_out();
        } else {
            self.record.status = status::after_exit(self.record.status, self.record.wanted_online);
        }
        self.persist_or_log().await;
        if self.record.status == SessionStatus::LoggedOut {
            // The phone had unlinked the device already: what a waiting logout wanted.
            for reply in std::mem::take(&mut self.logout_waiting) {
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Unlinks the device through the logged-in client and stops it; `LogoutDone` erases the
    /// credentials and answers.
    fn log_out(&mut self, myself: &ActorRef<SessionMsg>, replies: Vec<RpcReplyPort<Result<()>>>) {
        let myself = myself.clone();
        self.release_client(true, move |_, _| {
            Box::pin(async move {
                let _ = myself.cast(SessionMsg::LogoutDone(replies));
            })
        });
    }

    fn mark_logged_out(&mut self) {
        self.record.status = SessionStatus::LoggedOut;
        self.record.wanted_online = false;
        self.record.phone_number = None;
        self.record.lid = None;
        self.record.device_id = None;
        self.record.push_name = None;
    }

    fn inspect(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id.as_str(),
            "status": self.status(),
            "wanted_online": self.record.wanted_online,
            "phone_number": self.record.phone_number,
            "push_name": self.record.push_name,
            "connection_generation": self.conn.as_ref().map(|c| c.generation),
            "client_ready": self.client().is_some(),
            "socket_alive": self.socket_alive(),
            "qr_pending": self.qr.is_some(),
            "pair_code_pending": self.pairing.is_some(),
            "children": self.children.len(),
            "failed": self.failed,
        })
    }

    /// Forgets the pair code; anyone still waiting for it learns the connection changed
    /// instead of seeing the request vanish.
    fn end_pairing(&mut self) {
        if let Some(pairing) = self.pairing.take() {
            for reply in pairing.waiting {
                let _ = reply.send(Err(GatewayError::NotConnected(
                    "the connection changed before WhatsApp sent the pair code".into(),
                )));
            }
        }
    }

    /// Asks WhatsApp for a pair code, once per phone number while it is valid: the same
    /// number gets the same code again, another number waits for it to expire.
    fn request_pair_code(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        phone: String,
        reply: RpcReplyPort<Result<PairCodeView>>,
    ) {
        let status = self.status();
        if self.is_paired() || status == SessionStatus::LoggedIn {
            let _ = reply.send(Err(GatewayError::AlreadyLoggedIn));
            return;
        }
        if let Some(pairing) = self.pairing.as_mut().filter(|p| p.expires > Instant::now()) {
            if pairing.phone != phone {
                let seconds_left = pairing
                    .expires
                    .saturating_duration_since(Instant::now())
                    .as_secs()
                    .max(1);
                let _ = reply.send(Err(GatewayError::PairCodePending { seconds_left }));
            } else if let Some(code) = pairing.code.clone() {
                let _ = reply.send(Ok(pairing.view(&code)));
            } else {
                pairing.waiting.push(reply);
            }
            return;
        }
        let Some(client) = self.client() else {
            let _ = reply.send(Err(GatewayError::NotConnected(status.to_string())));
            return;
        };
        self.pairing = Some(Pairing {
            phone: phone.clone(),
            code: None,
            expires: Instant::now() + PAIR_CODE_TTL,
            waiting: vec![reply],
        });
        let myself = myself.clone();
        tokio::spawn(async move {
            let result = client.request_pair_code(phone).await;
            let _ = myself.cast(SessionMsg::PairCodeReady(result));
        });
    }

    fn pair_code_ready(&mut self, result: Result<String>) {
        let Some(mut pairing) = self.pairing.take() else {
            return;
        };
        let waiting = std::mem::take(&mut pairing.waiting);
        let answer = match result {
            Ok(code) => {
                let view = pairing.view(&code);
                pairing.code = Some(code);
                self.pairing = Some(pairing);
                Ok(view)
            }
            Err(e) => Err(e),
        };
        for reply in waiting {
            let _ = reply.send(answer.clone());
        }
    }

    fn qr_view(&self) -> Result<QrView> {
        let status = self.status();
        match &self.qr {
            Some((code, expires)) if status == SessionStatus::WaitingForQr => Ok(QrView {
                qr_codes: vec![code.clone()],
                timeout_seconds: expires.saturating_duration_since(Instant::now()).as_secs(),
                status,
            }),
            _ => Err(GatewayError::NoQrPending(status.to_string())),
        }
    }

    /// The paired device, also while the session is offline; `not_logged_in` before pairing.
    fn device_view(&self) -> Result<DeviceView> {
        if !self.is_paired() {
            return Err(GatewayError::NotLoggedIn);
        }
        Ok(DeviceView {
            device_id: self.record.device_id,
            phone_number: self.record.phone_number.clone(),
            lid: self.record.lid.clone(),
            push_name: self.record.push_name.clone(),
        })
    }

    fn status_view(&self) -> StatusView {
        let status = self.status();
        StatusView {
            status,
            is_logged_in: status == SessionStatus::LoggedIn,
            socket_alive: self.socket_alive(),
            phone_number: self.record.phone_number.clone(),
            push_name: self.record.push_name.clone(),
        }
    }

    /// Unlinks the device (when `unlink`), stops the connection and waits for its client to be
    /// gone, in a task; `then` runs once it is.
    fn release_client(
        &mut self,
        unlink: bool,
        then: impl FnOnce(Shared, SessionId) -> futures_util::future::BoxFuture<'static, ()>
        + Send
        + 'static,
    ) {
        let client = if unlink { self.client() } else { None };
        self.conn = None;
        self.tell_children_client(None);
        let services = self.services.clone();
        let id = self.id.clone();
        tokio::spawn(async move {
            if let Some(client) = client
                && let Err(e) = client.logout().await
            {
                tracing::warn!(session = %id, error = %e, "unlinking the device failed; erasing its credentials anyway");
            }
            services.connections.slots.stop(id.as_str()).await;
            then(services, id).await;
        });
    }
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SessionArgs,
    ) -> std::result::Result<Self::State, ActorProcessingErr> {
        let SessionArgs {
            services,
            id,
            park_failed,
        } = args;
        let name = directory::session_name(id.as_str());
        let messages = services.directory.starting(&name, ActorKind::Session);
        let Some(stored) = services.store.session(&id)? else {
            return Err(format!("no snapshot for session {id}").into());
        };
        let mut record = stored.data;
        let mut dirty = false;
        // Credentials are the truth for "paired": a snapshot never claims a pairing whose
        // keys are gone.
        let sessions_dir = services.settings.sessions_dir();
        if record.phone_number.is_some()
            && !crate::whatsapp::has_credentials(&sessions_dir, id.as_str())
        {
            tracing::warn!(session = %id, "credentials missing; a new pairing is needed");
            record.status = SessionStatus::LoggedOut;
            record.wanted_online = false;
            record.phone_number = None;
            record.lid = None;
            record.device_id = None;
            record.push_name = None;
            dirty = true;
        }
        let failed =
            park_failed || (record.status == SessionStatus::Failed && !record.wanted_online);
        if park_failed && record.status != SessionStatus::Failed {
            record.status = SessionStatus::Failed;
            dirty = true;
        }
        let link = Arc::new(SessionLink::new(myself.get_cell(), record.status));
        let published = record.status;
        let mut state = SessionState {
            services,
            id,
            name,
            record,
            link,
            live: SessionStatus::Connecting,
            conn: None,
            qr: None,
            pairing: None,
            groups: None,
            invites: None,
            events: None,
            children: HashMap::new(),
            published,
            status_reason: None,
            told_names: HashMap::new(),
            failed,
            deleting: false,
            erase_on_exit: false,
            logout_waiting: Vec::new(),
            logout_waits: 0,
            messages,
        };
        if dirty {
            state.persist().await?;
        }
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        let directory = &state.services.directory;
        directory.publish_link(state.id.as_str(), state.link.clone());
        directory.running(&state.name, myself.get_cell());
        // The log first: the connection's inbound messages and status changes go there.
        state.spawn_child(&myself, ActorKind::Events).await;
        if state.failed {
            state
                .services
                .directory
                .set_status(&state.name, NodeStatus::Failed);
            state.stop_leftover_connection();
        } else {
            state.spawn_child(&myself, ActorKind::Groups).await;
            state.spawn_child(&myself, ActorKind::Invites).await;
            if state.record.wanted_online {
                state.start_connection(&myself);
            } else {
                state.stop_leftover_connection();
            }
        }
        state.publish();
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        state.stop_connection();
        let grace = state.services.settings.supervision.shutdown_timeout;
        myself
            .stop_children_and_wait(Some("session stopping".into()), Some(grace))
            .await;
        let _ = tokio::time::timeout(
            grace,
            state.services.connections.slots.stop(state.id.as_str()),
        )
        .await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        state.messages.fetch_add(1, Ordering::Relaxed);
        if matches!(msg, SessionMsg::Deleted) {
            myself.stop(Some(DELETED_REASON.into()));
            return Ok(());
        }
        if state.deleting {
            reject_deleted(msg, &state.id);
            return Ok(());
        }
        handle_message(&myself, msg, state).await;
        state.publish();
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(kind) = state.children.remove(&cell.get_id()) else {
                    return Ok(());
                };
                state.forget_child(kind);
                let child = child_name(state.id.as_str(), kind);
                let reason = err.to_string();
                tracing::warn!(actor = %child, %reason, "actor failed");
                state.services.directory.failed_restarting(&child, &reason);
                let services = &state.services;
                match services.intensity.record(
                    state.id.as_str(),
                    Instant::now(),
                    &services.settings.supervision,
                ) {
                    Some(delay) => {
                        myself.send_after(delay, move || SessionMsg::RestartChild(kind));
                    }
                    None => state.park_failed(&myself, &reason).await,
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let Some(kind) = state.children.remove(&cell.get_id()) else {
                    return Ok(());
                };
                state.forget_child(kind);
                if reason.as_deref() == Some(RESTART_REASON) {
                    let child = child_name(state.id.as_str(), kind);
                    state.services.directory.restarting(&child);
                    state.spawn_child(&myself, kind).await;
                }
            }
            _ => {}
        }
        state.publish();
        Ok(())
    }
}

async fn handle_message(myself: &ActorRef<SessionMsg>, msg: SessionMsg, state: &mut SessionState) {
    match msg {
        SessionMsg::Get(reply) => {
            let _ = reply.send(Ok(state.view()));
        }
        SessionMsg::Status(reply) => {
            let _ = reply.send(Ok(state.status_view()));
        }
        SessionMsg::Connect(reply) => {
            if state.failed {
                state.revive(myself).await;
            }
            state.record.wanted_online = true;
            state.start_connection(myself);
            if state.record.status != SessionStatus::LoggedOut || state.conn.is_some() {
                state.record.status = SessionStatus::Connecting;
            }
            let result = state.persist().await.map(|()| state.status());
            let _ = reply.send(result);
        }
        SessionMsg::Disconnect(reply) => {
            state.record.wanted_online = false;
            if state.conn.is_some() {
                state.stop_connection();
            }
            if !matches!(
                state.record.status,
                SessionStatus::LoggedOut | SessionStatus::Failed
            ) {
                state.record.status = SessionStatus::Disconnected;
            }
            let _ = reply.send(state.persist().await);
        }
        SessionMsg::Logout(reply) => {
            if !state.is_paired() {
                let _ = reply.send(Err(GatewayError::NotLoggedIn));
                return;
            }
            if state.status() == SessionStatus::LoggedIn {
                state.log_out(myself, vec![reply]);
                return;
            }
            // Unlinking needs a logged-in client: connect for it, and wait a while.
            state.logout_waiting.push(reply);
            if state.logout_waiting.len() == 1 {
                if state.failed {
                    state.revive(myself).await;
                }
                state.start_connection(myself);
                state.logout_waits += 1;
                let this_wait = state.logout_waits;
                let wait = state.services.settings.whatsapp.request_timeout;
                myself.send_after(wait, move || SessionMsg::LogoutUnreached(this_wait));
            }
        }
        SessionMsg::LogoutUnreached(this_wait) => {
            if this_wait != state.logout_waits || state.logout_waiting.is_empty() {
                return;
            }
            // Nothing changed: the device stays linked and its credentials stay, so the
            // logout can be asked again (or the session deleted).
            if !state.record.wanted_online {
                state.stop_connection();
            }
            let wait = state.services.settings.whatsapp.request_timeout;
            for reply in std::mem::take(&mut state.logout_waiting) {
                let _ = reply.send(Err(GatewayError::WhatsAppTimeout(wait)));
            }
        }
        SessionMsg::LogoutDone(replies) => {
            let erased =
                crate::whatsapp::erase_credentials(&state.services.connections, state.id.as_str())
                    .await;
            state.mark_logged_out();
            let persisted = state.persist().await;
            let result = erased.and(persisted);
            for reply in replies {
                let _ = reply.send(result.clone());
            }
        }
        SessionMsg::Qr(reply) => {
            let _ = reply.send(state.qr_view());
        }
        SessionMsg::Pair(phone, reply) => state.request_pair_code(myself, phone, reply),
        SessionMsg::PairCodeReady(result) => state.pair_code_ready(result),
        SessionMsg::Device(reply) => {
            let _ = reply.send(state.device_view());
        }
        SessionMsg::Delete(reply) => {
            state.deleting = true;
            let unlink = state.status() == SessionStatus::LoggedIn;
            let myself = myself.clone();
            state.release_client(unlink, move |services, id| {
                Box::pin(async move {
                    let result = async {
                        crate::whatsapp::erase_credentials(&services.connections, id.as_str())
                            .await?;
                        services.events.delete_session(id.as_str())?;
                        services.store.delete_session(&id).await
                    }
                    .await;
                    if result.is_ok() {
                        services.directory.remove_session(id.as_str());
                    }
                    let _ = reply.send(result);
                    let _ = myself.cast(SessionMsg::Deleted);
                })
            });
        }
        SessionMsg::Deleted => {}
        SessionMsg::SendText { to, text, reply } => {
            let client = state
                .client()
                .filter(|_| state.status() == SessionStatus::LoggedIn);
            let Some(client) = client else {
                let _ = reply.send(Err(GatewayError::NotLoggedIn));
                return;
            };
            tokio::spawn(async move {
                let _ = reply.send(client.send_text(&ChatJid::User(to), text).await);
            });
        }
        SessionMsg::Inspect(reply) => {
            let _ = reply.send(state.inspect());
        }
        SessionMsg::Connection(report) => state.on_report(myself, report).await,
        SessionMsg::Reconnect => {
            if state.record.wanted_online && !state.failed {
                state.start_connection(myself);
            }
        }
        SessionMsg::RestartChild(kind) => {
            // A parked session keeps its event log.
            let wanted = !state.failed || kind == ActorKind::Events;
            if wanted && !state.children.values().any(|k| *k == kind) {
                state.spawn_child(myself, kind).await;
            }
        }
        #[cfg(feature = "test-server")]
        SessionMsg::Crash => panic!("crash requested through the test-only admin trigger"),
    }
}

/// Appends a batch of inbound messages to the session's log. A restarting log is waited for
/// (the client retries a refused batch only on its next connection), up to a deadline.
async fn append_messages(
    services: Shared,
    id: SessionId,
    messages: Vec<crate::model::IncomingMessage>,
) -> std::result::Result<(), String> {
    use ractor::rpc::CallResult;
    let events: Vec<NewEvent> = messages.iter().map(event_data::message).collect();
    let deadline = tokio::time::Instant::now() + APPEND_TIMEOUT;
    loop {
        let log = services
            .directory
            .link(id.as_str())
            .and_then(|link| link.child(ActorKind::Events))
            .map(ActorRef::<EventsMsg>::from);
        let outcome = match log {
            Some(log) => {
                let batch = events.clone();
                match log
                    .call(|r| EventsMsg::Append(batch, r), Some(APPEND_TIMEOUT))
                    .await
                {
                    Ok(CallResult::Success(Ok(_))) => return Ok(()),
                    Ok(CallResult::Success(Err(e))) => e.to_string(),
                    Ok(CallResult::Timeout) => "the event log timed out".into(),
                    Ok(CallResult::SenderError) | Err(_) => "the event log stopped".into(),
                }
            }
            None => "the session's event log is restarting".into(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(outcome);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pair codes are shown the way the phone asks for them: `ABCD-EFGH`.
fn format_pair_code(code: &str) -> String {
    if code.len() == 8 && code.is_ascii() && !code.contains('-') {
        format!("{}-{}", &code[..4], &code[4..])
    } else {
        code.to_owned()
    }
}

/// While a delete runs, every request is answered as if the session were already gone.
fn reject_deleted(msg: SessionMsg, id: &SessionId) {
    let gone = || GatewayError::SessionNotFound(id.to_string());
    match msg {
        SessionMsg::Get(r) => drop(r.send(Err(gone()))),
        SessionMsg::Status(r) => drop(r.send(Err(gone()))),
        SessionMsg::Connect(r) => drop(r.send(Err(gone()))),
        SessionMsg::Disconnect(r) => drop(r.send(Err(gone()))),
        SessionMsg::Logout(r) => drop(r.send(Err(gone()))),
        SessionMsg::LogoutDone(replies) => {
            for r in replies {
                let _ = r.send(Err(gone()));
            }
        }
        SessionMsg::LogoutUnreached(_) => {}
        SessionMsg::Qr(r) => drop(r.send(Err(gone()))),
        SessionMsg::Pair(_, r) => drop(r.send(Err(gone()))),
        SessionMsg::PairCodeReady(_) => {}
        SessionMsg::Device(r) => drop(r.send(Err(gone()))),
        SessionMsg::Delete(r) => drop(r.send(Err(gone()))),
        SessionMsg::SendText { reply, .. } => drop(reply.send(Err(gone()))),
        SessionMsg::Inspect(r) => {
            drop(r.send(serde_json::json!({"id": id.as_str(), "deleting": true})))
        }
        SessionMsg::Connection(_)
        | SessionMsg::Reconnect
        | SessionMsg::RestartChild(_)
        | SessionMsg::Deleted => {}
        #[cfg(feature = "test-server")]
        SessionMsg::Crash => {}
    }
}

#[cfg(test)]
mod tests {
    use super::format_pair_code;

    #[test]
    fn pair_codes_are_split_in_two() {
        assert_eq!(format_pair_code("ABCDEFGH"), "ABCD-EFGH");
        assert_eq!(format_pair_code("ABCD-EFGH"), "ABCD-EFGH");
        assert_eq!(format_pair_code("ABC"), "ABC");
    }
}
