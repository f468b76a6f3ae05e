//! The façade the edge calls: opens the store, starts the supervision tree, and turns each
//! request into one typed message to the right actor, always with a timeout.

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef, RpcReplyPort};
use std::sync::Arc;
use std::time::Duration;

use crate::directory::{ActorKind, Directory, Handle, NodeView, ROOT};
use crate::error::{GatewayError, Result};
use crate::groups::GroupsMsg;
use crate::invites::InvitesMsg;
use crate::model::{
    ChatJid, DeviceView, PairCodeView, QrView, SentMessage, SessionId, SessionStatus, SessionView,
    StatusView,
};
use crate::services::{Intensity, Services, Shared};
use crate::session::{RESTART_REASON, SessionMsg};
use crate::settings::Settings;
use crate::store::Store;
use crate::supervisor::{Supervisor, SupervisorMsg};
use crate::whatsapp::ClientSlots;

/// How long a request waits for a session that is being restarted to come back.
const RESTART_WAIT: Duration = Duration::from_secs(3);
/// Upper bound for asking an actor what it holds (admin only).
const INSPECT_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Gateway {
    services: Shared,
    supervisor: ActorRef<SupervisorMsg>,
    supervisor_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub sessions_by_status: Vec<(SessionStatus, usize)>,
    pub actors: usize,
    pub restarts_total: u64,
    pub live_clients: usize,
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
        let services = Arc::new(Services {
            connect_permits: Arc::new(tokio::sync::Semaphore::new(
                settings.whatsapp.connect_concurrency.max(1),
            )),
            settings,
            store,
            directory: Directory::default(),
            intensity: Intensity::default(),
            slots: ClientSlots::default(),
        });
        let (supervisor, supervisor_task) = Actor::spawn(None, Supervisor, services.clone())
            .await
            .map_err(|e| GatewayError::Internal(format!("starting the supervisor: {e}")))?;
        Ok(Self {
            services,
            supervisor,
            supervisor_task: std::sync::Mutex::new(Some(supervisor_task)),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.services.settings
    }

    fn call_timeout(&self) -> Duration {
        self.services.settings.supervision.call_timeout
    }

    /// The session's actor; waits briefly while a stored session is being restarted.
    async fn session_ref(&self, id: &SessionId) -> Result<ActorRef<SessionMsg>> {
        let deadline = tokio::time::Instant::now() + RESTART_WAIT;
        loop {
            if let Some(actor) = self.services.directory.session(id.as_str()) {
                return Ok(actor);
            }
            if self.services.store.session(id)?.is_none() {
                return Err(GatewayError::SessionNotFound(id.to_string()));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(GatewayError::Unavailable);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn call<T: Send + 'static>(
        &self,
        id: &SessionId,
        build: impl FnOnce(RpcReplyPort<Result<T>>) -> SessionMsg,
    ) -> Result<T> {
        let actor = self.session_ref(id).await?;
        match actor.call(build, Some(self.call_timeout())).await {
            Ok(CallResult::Success(result)) => result,
            Ok(CallResult::Timeout) => Err(GatewayError::Unavailable),
            Ok(CallResult::SenderError) | Err(_) => {
                if self.services.store.session(id)?.is_some() {
                    Err(GatewayError::Unavailable)
                } else {
                    Err(GatewayError::SessionNotFound(id.to_string()))
                }
            }
        }
    }

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
        match reply {
            Ok(CallResult::Success(result)) => result,
            _ => Err(GatewayError::Unavailable),
        }
    }

    /// Every session, in id order. A session whose actor does not answer in time is shown as
    /// its snapshot last recorded it.
    pub async fn list_sessions(&self) -> Result<Vec<SessionView>> {
        let records = self.services.store.sessions()?;
        let timeout = Duration::from_millis(500).min(self.call_timeout());
        let lookups = records.into_iter().map(|record| async move {
            if let Some(actor) = self.services.directory.session(record.id.as_str())
                && let Ok(CallResult::Success(Ok(view))) =
                    actor.call(SessionMsg::Get, Some(timeout)).await
            {
                return Some(view);
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
        self.call(id, SessionMsg::Get).await
    }

    pub async fn status(&self, id: &SessionId) -> Result<StatusView> {
        self.call(id, SessionMsg::Status).await
    }

    pub async fn connect(&self, id: &SessionId) -> Result<SessionStatus> {
        self.call(id, SessionMsg::Connect).await
    }

    pub async fn disconnect(&self, id: &SessionId) -> Result<()> {
        self.call(id, SessionMsg::Disconnect).await
    }

    pub async fn logout(&self, id: &SessionId) -> Result<()> {
        self.call(id, SessionMsg::Logout).await
    }

    pub async fn qr(&self, id: &SessionId) -> Result<QrView> {
        self.call(id, SessionMsg::Qr).await
    }

    /// Requests a pair code; `phone` is digits only (see [`crate::model::normalize_phone`]).
    pub async fn pair(&self, id: &SessionId, phone: String) -> Result<PairCodeView> {
        self.call(id, |reply| SessionMsg::Pair(phone, reply)).await
    }

    pub async fn device(&self, id: &SessionId) -> Result<DeviceView> {
        self.call(id, SessionMsg::Device).await
    }

    pub async fn delete(&self, id: &SessionId) -> Result<()> {
        self.call(id, SessionMsg::Delete).await
    }

    /// A request for the session's groups actor.
    pub async fn groups<T: Send + 'static>(
        &self,
        id: &SessionId,
        build: impl FnOnce(RpcReplyPort<Result<T>>) -> GroupsMsg,
    ) -> Result<T> {
        self.call(id, |reply| SessionMsg::Groups(build(reply)))
            .await
    }

    /// A request for the session's invites actor.
    pub async fn invites<T: Send + 'static>(
        &self,
        id: &SessionId,
        build: impl FnOnce(RpcReplyPort<Result<T>>) -> InvitesMsg,
    ) -> Result<T> {
        self.call(id, |reply| SessionMsg::Invites(build(reply)))
            .await
    }

    /// Sends a text to a user or a group.
    pub async fn send_text(
        &self,
        id: &SessionId,
        to: ChatJid,
        text: String,
    ) -> Result<SentMessage> {
        match to {
            ChatJid::Group(jid) => {
                self.groups(id, |reply| GroupsMsg::SendText { jid, text, reply })
                    .await
            }
            ChatJid::User(to) => {
                self.call(id, |reply| SessionMsg::SendText { to, text, reply })
                    .await
            }
        }
    }

    /// The live supervision tree.
    pub fn actor_tree(&self) -> Option<NodeView> {
        self.services.directory.tree()
    }

    /// One actor, plus what it holds now (redacted).
    pub async fn actor(&self, name: &str) -> Result<(NodeView, serde_json::Value)> {
        let not_found = || GatewayError::NotFound(format!("no actor named '{name}'"));
        let node = self.services.directory.node(name).ok_or_else(not_found)?;
        let state = match self.services.directory.handle(name) {
            Some(Handle::Supervisor(_)) => serde_json::json!({
                "sessions": self.services.directory.count(ActorKind::Session),
                "live_clients": self.services.slots.live_count(),
            }),
            Some(Handle::Session(r)) => {
                inspect(r.call(SessionMsg::Inspect, Some(INSPECT_TIMEOUT)).await)
            }
            Some(Handle::Groups(r)) => {
                inspect(r.call(GroupsMsg::Inspect, Some(INSPECT_TIMEOUT)).await)
            }
            Some(Handle::Invites(r)) => {
                inspect(r.call(InvitesMsg::Inspect, Some(INSPECT_TIMEOUT)).await)
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
        let handle =
            self.services.directory.handle(name).ok_or_else(|| {
                GatewayError::NotFound(format!("no running actor named '{name}'"))
            })?;
        handle.cell().stop(Some(RESTART_REASON.into()));
        Ok(())
    }

    /// Test builds only: makes an actor panic while handling a message.
    #[cfg(feature = "test-server")]
    pub fn crash_actor(&self, name: &str) -> Result<()> {
        let handle =
            self.services.directory.handle(name).ok_or_else(|| {
                GatewayError::NotFound(format!("no running actor named '{name}'"))
            })?;
        let sent = match handle {
            Handle::Session(r) => r.cast(SessionMsg::Crash).is_ok(),
            Handle::Groups(r) => r.cast(GroupsMsg::Crash).is_ok(),
            Handle::Invites(r) => r.cast(InvitesMsg::Crash).is_ok(),
            Handle::Supervisor(_) => {
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

    pub async fn metrics(&self) -> Metrics {
        let sessions = self.list_sessions().await.unwrap_or_default();
        let mut by_status: Vec<(SessionStatus, usize)> = Vec::new();
        for s in &sessions {
            match by_status.iter_mut().find(|(st, _)| *st == s.status) {
                Some((_, n)) => *n += 1,
                None => by_status.push((s.status, 1)),
            }
        }
        let tree = &self.services.directory;
        Metrics {
            sessions_by_status: by_status,
            actors: [
                ActorKind::Supervisor,
                ActorKind::Session,
                ActorKind::Groups,
                ActorKind::Invites,
            ]
            .iter()
            .map(|k| tree.count(*k))
            .sum(),
            restarts_total: tree.restarts_total(),
            live_clients: self.services.slots.live_count(),
        }
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

fn inspect<E>(result: std::result::Result<CallResult<serde_json::Value>, E>) -> serde_json::Value {
    match result {
        Ok(CallResult::Success(state)) => state,
        Ok(CallResult::Timeout) => serde_json::json!({"unresponsive": true}),
        _ => serde_json::Value::Null,
    }
}
