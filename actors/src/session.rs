//! `session:<id>`: one WhatsApp session. Owns the session's one whatsapp-rust client (through
//! [`crate::whatsapp`]), maps its events to the contract's statuses, persists the session
//! record on every change, and supervises its `groups` and `invites` children.
//!
//! The mailbox stays responsive: anything that waits on WhatsApp (pair codes, logout, delete)
//! runs in a spawned task that owns the reply port, and reports back by message when the
//! actor's state must change.

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use whatsapp_rust::Client;
use whatsapp_rust::pair_code::PairCodeOptions;

use crate::directory::{self, ActorKind, Handle, NodeStatus};
use crate::error::{GatewayError, Result};
use crate::groups::{GroupsActor, GroupsArgs, GroupsMsg};
use crate::invites::{InvitesActor, InvitesArgs, InvitesMsg};
use crate::model::{
    DeviceView, PairCodeView, QrView, SentMessage, SessionId, SessionRecord, SessionStatus,
    SessionView, StatusView, UserJid,
};
use crate::services::Shared;
use crate::whatsapp::{self, Connection, DriverExit, WaEvent};

/// How long a pair code stays valid on WhatsApp's side.
const PAIR_CODE_TTL: Duration = Duration::from_secs(180);

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
    /// A request for the groups child; answered by it.
    Groups(GroupsMsg),
    /// A request for the invites child; answered by it.
    Invites(InvitesMsg),
    /// Sends a text to a user (group texts go through the groups child).
    SendText {
        to: UserJid,
        text: String,
        reply: RpcReplyPort<Result<SentMessage>>,
    },
    /// What this actor holds now, redacted, for the admin API.
    Inspect(RpcReplyPort<serde_json::Value>),
    /// The driver of connection `generation` built its client.
    ClientReady(u64, Arc<Client>),
    /// An event of connection `generation`.
    Wa(u64, WaEvent),
    /// The driver of connection `generation` is gone, and so is its client.
    DriverExited(u64, DriverExit),
    /// Retry building a client after a failed start.
    Reconnect,
    RestartChild(ChildKind),
    /// A spawned logout finished: record it, then answer.
    LogoutDone(RpcReplyPort<Result<()>>),
    /// A spawned delete finished: stop for good.
    Deleted,
    /// Test builds only: panic while handling a message.
    #[cfg(feature = "test-server")]
    Crash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildKind {
    Groups,
    Invites,
}

pub struct SessionActor;

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
    /// What the current connection reports; meaningful while `conn` is set.
    live: SessionStatus,
    conn: Option<Connection>,
    qr: Option<(String, Instant)>,
    pair_code: Option<(String, Instant)>,
    groups: Option<ActorRef<GroupsMsg>>,
    invites: Option<ActorRef<InvitesMsg>>,
    children: HashMap<ActorId, ChildKind>,
    /// Parked after too many failures: no client, no children, until `connect`.
    failed: bool,
    /// A delete is in progress: every request answers `session_not_found`.
    deleting: bool,
    /// The client reported a logout: erase credentials once it is gone.
    erase_on_exit: bool,
    messages: Arc<AtomicU64>,
}

impl SessionState {
    fn status(&self) -> SessionStatus {
        if self.failed {
            return SessionStatus::Failed;
        }
        let Some(conn) = &self.conn else {
            return self.record.status;
        };
        let socket = conn.client.as_ref().is_some_and(|c| c.is_connected());
        match self.live {
            SessionStatus::LoggedIn if !socket => SessionStatus::Connecting,
            SessionStatus::Connecting if socket => SessionStatus::Connected,
            other => other,
        }
    }

    fn view(&self) -> SessionView {
        SessionView::from_record(&self.record, self.status())
    }

    fn client(&self) -> Option<Arc<Client>> {
        self.conn.as_ref().and_then(|c| c.client.clone())
    }

    fn is_paired(&self) -> bool {
        self.record.phone_number.is_some()
    }

    async fn persist(&mut self) -> Result<()> {
        self.record.updated_at = crate::unix_now();
        self.services.store.put_session(&self.record).await
    }

    fn start_connection(&mut self, myself: &ActorRef<SessionMsg>) {
        if self.conn.is_none() {
            self.conn = Some(whatsapp::connect(&self.services, &self.id, myself.clone()));
            self.live = SessionStatus::Connecting;
            self.qr = None;
            self.pair_code = None;
        }
    }

    fn stop_connection(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.request_stop();
        }
        self.qr = None;
        self.pair_code = None;
        self.tell_children_client(None);
    }

    fn tell_children_client(&self, client: Option<Arc<Client>>) {
        if let Some(g) = &self.groups {
            let _ = g.cast(GroupsMsg::ClientChanged(client.clone()));
        }
        if let Some(i) = &self.invites {
            let _ = i.cast(InvitesMsg::ClientChanged(client));
        }
    }

    async fn spawn_child(&mut self, myself: &ActorRef<SessionMsg>, kind: ChildKind) {
        let cell = myself.get_cell();
        let client = self.client();
        let result = match kind {
            ChildKind::Groups => cell
                .spawn_linked(
                    None,
                    GroupsActor,
                    GroupsArgs {
                        services: self.services.clone(),
                        id: self.id.clone(),
                        client,
                    },
                )
                .await
                .map(|(r, _)| {
                    let id = r.get_id();
                    self.groups = Some(r);
                    id
                }),
            ChildKind::Invites => cell
                .spawn_linked(
                    None,
                    InvitesActor,
                    InvitesArgs {
                        services: self.services.clone(),
                        id: self.id.clone(),
                        client,
                        session: myself.clone(),
                    },
                )
                .await
                .map(|(r, _)| {
                    let id = r.get_id();
                    self.invites = Some(r);
                    id
                }),
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

    /// Too many failures: drop the client and the children, and wait for `connect`.
    async fn park_failed(&mut self, myself: &ActorRef<SessionMsg>, reason: &str) {
        tracing::error!(session = %self.id, %reason, "restart intensity exceeded; session parked as failed");
        self.failed = true;
        self.stop_connection();
        self.groups = None;
        self.invites = None;
        self.children.clear();
        myself
            .stop_children_and_wait(Some("session failed".into()), Some(Duration::from_secs(2)))
            .await;
        for child in [
            directory::groups_name(self.id.as_str()),
            directory::invites_name(self.id.as_str()),
        ] {
            self.services.directory.gave_up(&child, reason);
        }
        self.services.directory.gave_up(&self.name, reason);
        self.record.status = SessionStatus::Failed;
        if let Err(e) = self.persist().await {
            tracing::error!(session = %self.id, error = %e, "could not persist failed status");
        }
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
        self.spawn_child(myself, ChildKind::Groups).await;
        self.spawn_child(myself, ChildKind::Invites).await;
    }

    async fn on_wa_event(&mut self, event: WaEvent) {
        match event {
            WaEvent::Qr { code, timeout } => {
                self.live = SessionStatus::WaitingForQr;
                self.qr = Some((code, Instant::now() + timeout));
            }
            WaEvent::QrExhausted => {
                tracing::info!(session = %self.id, "no QR code was scanned in time");
                self.qr = None;
            }
            WaEvent::PairCode { code, timeout } => {
                self.live = SessionStatus::WaitingForPairCode;
                self.pair_code = Some((code, Instant::now() + timeout));
            }
            WaEvent::PairSuccess {
                phone,
                lid,
                device,
                business_name,
            } => {
                tracing::info!(session = %self.id, "paired with WhatsApp");
                self.live = SessionStatus::Connected;
                self.qr = None;
                self.pair_code = None;
                self.record.phone_number = Some(phone);
                self.record.lid = Some(lid);
                self.record.device_id = Some(device);
                if !business_name.is_empty() {
                    self.record.push_name = Some(business_name);
                }
                self.record.status = SessionStatus::Connected;
                self.persist_or_log().await;
            }
            WaEvent::PairError(error) => {
                tracing::warn!(session = %self.id, %error, "pairing failed");
            }
            WaEvent::Connected => {
                self.live = SessionStatus::LoggedIn;
                self.qr = None;
                self.pair_code = None;
                if let Some(client) = self.client() {
                    if let Some(pn) = client.pn() {
                        self.record.phone_number = Some(pn.user.to_string());
                        self.record.device_id = Some(pn.device);
                    }
                    if let Some(lid) = client.lid() {
                        self.record.lid = Some(lid.to_string());
                    }
                    let push_name = client.push_name();
                    if !push_name.is_empty() {
                        self.record.push_name = Some(push_name);
                    }
                }
                self.record.status = SessionStatus::LoggedIn;
                self.record.last_connected_at = Some(crate::unix_now());
                self.persist_or_log().await;
            }
            WaEvent::Disconnected(reason) => {
                tracing::info!(session = %self.id, %reason, "disconnected from WhatsApp");
                self.live = SessionStatus::Connecting;
            }
            WaEvent::Reconnecting(delay) => {
                tracing::debug!(session = %self.id, ?delay, "reconnecting");
                self.live = SessionStatus::Connecting;
            }
            WaEvent::LoggedOut(reason) => {
                tracing::warn!(session = %self.id, %reason, "logged out by WhatsApp; credentials will be erased");
                self.live = SessionStatus::LoggedOut;
                self.erase_on_exit = true;
            }
            WaEvent::GroupUpdate(event) => {
                if let Some(g) = &self.groups {
                    let _ = g.cast(GroupsMsg::Notification(event));
                }
            }
        }
    }

    async fn persist_or_log(&mut self) {
        if let Err(e) = self.persist().await {
            tracing::error!(session = %self.id, error = %e, "could not persist session snapshot");
        }
    }

    async fn on_driver_exit(&mut self, myself: &ActorRef<SessionMsg>, exit: DriverExit) {
        self.conn = None;
        self.qr = None;
        self.pair_code = None;
        self.tell_children_client(None);
        match exit {
            DriverExit::LoggedOut => self.erase_on_exit = true,
            DriverExit::ClientClosed => {
                // Nobody paired in time: stay offline until the operator asks again.
                self.record.wanted_online = false;
            }
            DriverExit::BuildFailed(e) => {
                if self.record.wanted_online {
                    let delay = self.services.settings.whatsapp.reconnect_backoff_max;
                    tracing::warn!(session = %self.id, error = %e, ?delay, "retrying client start later");
                    myself.send_after(delay, || SessionMsg::Reconnect);
                }
            }
            DriverExit::Stopped => {}
        }
        if self.erase_on_exit {
            self.erase_on_exit = false;
            if let Err(e) = whatsapp::erase_credentials(&self.services, &self.id).await {
                tracing::error!(session = %self.id, error = %e, "could not erase credentials");
            }
            self.mark_logged_out();
        } else if self.record.status != SessionStatus::Failed {
            self.record.status = if self.record.wanted_online {
                SessionStatus::Connecting
            } else {
                SessionStatus::Disconnected
            };
        }
        self.persist_or_log().await;
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
            "socket_alive": self.client().is_some_and(|c| c.is_connected()),
            "qr_pending": self.qr.is_some(),
            "pair_code_pending": self.pair_code.is_some(),
            "children": self.children.len(),
            "failed": self.failed,
        })
    }
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
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
        if record.phone_number.is_some() && !whatsapp::has_credentials(&services, &id) {
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
        let mut state = SessionState {
            services,
            id,
            name,
            record,
            live: SessionStatus::Connecting,
            conn: None,
            qr: None,
            pair_code: None,
            groups: None,
            invites: None,
            children: HashMap::new(),
            failed,
            deleting: false,
            erase_on_exit: false,
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
        state
            .services
            .directory
            .running(&state.name, Handle::Session(myself.clone()));
        if state.failed {
            state
                .services
                .directory
                .set_status(&state.name, NodeStatus::Failed);
            // A previous incarnation may have left a client running.
            let services = state.services.clone();
            let id = state.id.clone();
            tokio::spawn(async move { services.slots.stop(&id).await });
            return Ok(());
        }
        state.spawn_child(&myself, ChildKind::Groups).await;
        state.spawn_child(&myself, ChildKind::Invites).await;
        if state.record.wanted_online {
            state.start_connection(&myself);
        } else {
            let services = state.services.clone();
            let id = state.id.clone();
            tokio::spawn(async move { services.slots.stop(&id).await });
        }
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
        let _ = tokio::time::timeout(grace, state.services.slots.stop(&state.id)).await;
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
        match msg {
            SessionMsg::Get(reply) => {
                let _ = reply.send(Ok(state.view()));
            }
            SessionMsg::Status(reply) => {
                let status = state.status();
                let _ = reply.send(Ok(StatusView {
                    status,
                    is_logged_in: status == SessionStatus::LoggedIn,
                    socket_alive: state.client().is_some_and(|c| c.is_connected()),
                    phone_number: state.record.phone_number.clone(),
                    push_name: state.record.push_name.clone(),
                }));
            }
            SessionMsg::Connect(reply) => {
                if state.failed {
                    state.revive(&myself).await;
                }
                state.record.wanted_online = true;
                state.start_connection(&myself);
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
                    return Ok(());
                }
                let client = state.client();
                state.conn = None;
                state.tell_children_client(None);
                let services = state.services.clone();
                let id = state.id.clone();
                let timeout = services.settings.whatsapp.request_timeout;
                tokio::spawn(async move {
                    if let Some(client) = client {
                        // Unlinks the device on WhatsApp's side (best effort while offline).
                        if tokio::time::timeout(timeout, client.logout())
                            .await
                            .is_err()
                        {
                            tracing::warn!(session = %id, "logout request timed out; erasing credentials anyway");
                        }
                    }
                    services.slots.stop(&id).await;
                    let _ = myself.cast(SessionMsg::LogoutDone(reply));
                });
            }
            SessionMsg::LogoutDone(reply) => {
                let erased = whatsapp::erase_credentials(&state.services, &state.id).await;
                state.mark_logged_out();
                let persisted = state.persist().await;
                let _ = reply.send(erased.and(persisted));
            }
            SessionMsg::Qr(reply) => {
                let status = state.status();
                let result = match &state.qr {
                    Some((code, expires)) if status == SessionStatus::WaitingForQr => Ok(QrView {
                        qr_codes: vec![code.clone()],
                        timeout_seconds: expires
                            .saturating_duration_since(Instant::now())
                            .as_secs(),
                        status,
                    }),
                    _ => Err(GatewayError::NoQrPending(status.to_string())),
                };
                let _ = reply.send(result);
            }
            SessionMsg::Pair(phone, reply) => {
                let status = state.status();
                if state.is_paired() || status == SessionStatus::LoggedIn {
                    let _ = reply.send(Err(GatewayError::AlreadyLoggedIn));
                    return Ok(());
                }
                let Some(client) = state.client() else {
                    let _ = reply.send(Err(GatewayError::NotConnected(status.to_string())));
                    return Ok(());
                };
                let timeout = state.services.settings.whatsapp.request_timeout;
                tokio::spawn(async move {
                    let result = tokio::time::timeout(timeout, async {
                        client
                            .wait_for_socket(timeout)
                            .await
                            .map_err(|e| GatewayError::NotConnected(e.to_string()))?;
                        client
                            .pair_with_code(PairCodeOptions {
                                phone_number: phone,
                                ..Default::default()
                            })
                            .await
                            .map_err(|e| match e {
                                whatsapp_rust::pair_code::PairError::RequestFailed(iq) => {
                                    whatsapp::map_iq_error(&iq, timeout)
                                }
                                other => GatewayError::WhatsApp {
                                    code: None,
                                    message: other.to_string(),
                                },
                            })
                    })
                    .await
                    .unwrap_or(Err(GatewayError::WhatsAppTimeout(timeout)))
                    .map(|code| PairCodeView {
                        code: format_pair_code(&code),
                        timeout_seconds: PAIR_CODE_TTL.as_secs(),
                    });
                    let _ = reply.send(result);
                });
            }
            SessionMsg::Device(reply) => {
                let result = if state.status() == SessionStatus::LoggedIn {
                    Ok(DeviceView {
                        device_id: state.record.device_id,
                        phone_number: state.record.phone_number.clone(),
                        lid: state.record.lid.clone(),
                        push_name: state.record.push_name.clone(),
                    })
                } else {
                    Err(GatewayError::NotLoggedIn)
                };
                let _ = reply.send(result);
            }
            SessionMsg::Delete(reply) => {
                state.deleting = true;
                let client = if state.status() == SessionStatus::LoggedIn {
                    state.client()
                } else {
                    None
                };
                state.conn = None;
                let services = state.services.clone();
                let id = state.id.clone();
                let timeout = services.settings.whatsapp.request_timeout;
                tokio::spawn(async move {
                    if let Some(client) = client
                        && tokio::time::timeout(timeout, client.logout())
                            .await
                            .is_err()
                    {
                        tracing::warn!(session = %id, "unlink on delete timed out; erasing anyway");
                    }
                    services.slots.stop(&id).await;
                    let result = async {
                        whatsapp::erase_credentials(&services, &id).await?;
                        services.store.delete_session(&id).await
                    }
                    .await;
                    if result.is_ok() {
                        services
                            .directory
                            .remove_subtree(&directory::session_name(id.as_str()));
                    }
                    let _ = reply.send(result);
                    let _ = myself.cast(SessionMsg::Deleted);
                });
            }
            SessionMsg::Deleted => {}
            SessionMsg::Groups(msg) => {
                let internal = matches!(msg, GroupsMsg::Learn(_));
                match &state.groups {
                    Some(_) if !internal && state.status() != SessionStatus::LoggedIn => {
                        msg.reject(GatewayError::NotLoggedIn)
                    }
                    Some(groups) => {
                        let _ = groups.cast(msg);
                    }
                    None if state.failed => msg.reject(GatewayError::NotLoggedIn),
                    None => msg.reject(GatewayError::Unavailable),
                }
            }
            SessionMsg::Invites(msg) => match &state.invites {
                Some(_) if state.status() != SessionStatus::LoggedIn => {
                    msg.reject(GatewayError::NotLoggedIn)
                }
                Some(invites) => {
                    let _ = invites.cast(msg);
                }
                None if state.failed => msg.reject(GatewayError::NotLoggedIn),
                None => msg.reject(GatewayError::Unavailable),
            },
            SessionMsg::SendText { to, text, reply } => {
                if state.status() != SessionStatus::LoggedIn {
                    let _ = reply.send(Err(GatewayError::NotLoggedIn));
                    return Ok(());
                }
                let Some(client) = state.client() else {
                    let _ = reply.send(Err(GatewayError::NotLoggedIn));
                    return Ok(());
                };
                let timeout = state.services.settings.whatsapp.request_timeout;
                tokio::spawn(async move {
                    let result = async {
                        let target: whatsapp_rust::Jid = to
                            .as_str()
                            .parse::<whatsapp_rust::Jid>()
                            .map_err(|e| GatewayError::validation("to", e.to_string()))?;
                        match tokio::time::timeout(timeout, client.send_text(target, text)).await {
                            Ok(Ok(sent)) => Ok(SentMessage {
                                message_id: sent.message_id,
                                timestamp: crate::unix_now(),
                            }),
                            Ok(Err(e)) => Err(GatewayError::WhatsApp {
                                code: None,
                                message: e.to_string(),
                            }),
                            Err(_) => Err(GatewayError::WhatsAppTimeout(timeout)),
                        }
                    }
                    .await;
                    let _ = reply.send(result);
                });
            }
            SessionMsg::Inspect(reply) => {
                let _ = reply.send(state.inspect());
            }
            SessionMsg::ClientReady(generation, client) => {
                if let Some(conn) = state.conn.as_mut().filter(|c| c.generation == generation) {
                    conn.client = Some(client.clone());
                    state.tell_children_client(Some(client));
                }
            }
            SessionMsg::Wa(generation, event) => {
                if state
                    .conn
                    .as_ref()
                    .is_some_and(|c| c.generation == generation)
                {
                    state.on_wa_event(event).await;
                }
            }
            SessionMsg::DriverExited(generation, exit) => {
                if state
                    .conn
                    .as_ref()
                    .is_some_and(|c| c.generation == generation)
                {
                    state.on_driver_exit(&myself, exit).await;
                }
            }
            SessionMsg::Reconnect => {
                if state.record.wanted_online && !state.failed {
                    state.start_connection(&myself);
                }
            }
            SessionMsg::RestartChild(kind) => {
                if !state.failed && !state.children.values().any(|k| *k == kind) {
                    state.spawn_child(&myself, kind).await;
                }
            }
            #[cfg(feature = "test-server")]
            SessionMsg::Crash => panic!("crash requested through the test-only admin trigger"),
        }
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
                let child = state.child_name(kind);
                let reason = err.to_string();
                tracing::warn!(actor = %child, %reason, "actor failed");
                state.services.directory.failed_restarting(&child, &reason);
                if let Some(delay) = state
                    .services
                    .intensity
                    .record(state.id.as_str(), &state.services.settings)
                {
                    myself.send_after(delay, move || SessionMsg::RestartChild(kind));
                } else {
                    state.park_failed(&myself, &reason).await;
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let Some(kind) = state.children.remove(&cell.get_id()) else {
                    return Ok(());
                };
                state.forget_child(kind);
                if reason.as_deref() == Some(RESTART_REASON) {
                    state.services.directory.restarting(&state.child_name(kind));
                    state.spawn_child(&myself, kind).await;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The stop reason an operator's restart uses: the supervisor restarts the actor right away.
pub const RESTART_REASON: &str = "restart requested";
/// The stop reason of a deleted session: the supervisor forgets it.
pub const DELETED_REASON: &str = "session deleted";

impl SessionState {
    fn child_name(&self, kind: ChildKind) -> String {
        match kind {
            ChildKind::Groups => directory::groups_name(self.id.as_str()),
            ChildKind::Invites => directory::invites_name(self.id.as_str()),
        }
    }

    fn forget_child(&mut self, kind: ChildKind) {
        match kind {
            ChildKind::Groups => self.groups = None,
            ChildKind::Invites => self.invites = None,
        }
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
        SessionMsg::Logout(r) | SessionMsg::LogoutDone(r) => drop(r.send(Err(gone()))),
        SessionMsg::Qr(r) => drop(r.send(Err(gone()))),
        SessionMsg::Pair(_, r) => drop(r.send(Err(gone()))),
        SessionMsg::Device(r) => drop(r.send(Err(gone()))),
        SessionMsg::Delete(r) => drop(r.send(Err(gone()))),
        SessionMsg::Groups(m) => m.reject(gone()),
        SessionMsg::Invites(m) => m.reject(gone()),
        SessionMsg::SendText { reply, .. } => drop(reply.send(Err(gone()))),
        SessionMsg::Inspect(r) => {
            drop(r.send(serde_json::json!({"id": id.as_str(), "deleting": true})))
        }
        SessionMsg::ClientReady(..)
        | SessionMsg::Wa(..)
        | SessionMsg::DriverExited(..)
        | SessionMsg::Reconnect
        | SessionMsg::RestartChild(_) => {}
        SessionMsg::Deleted => {}
        #[cfg(feature = "test-server")]
        SessionMsg::Crash => {}
    }
}
