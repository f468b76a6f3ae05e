//! Bookkeeping of the live supervision tree, and the links the façade uses to reach a session.
//!
//! Per actor: its kind, status, start time, restart count, last failure, message counter and
//! untyped cell. Supervisors write it when they start, restart or give up on a child; the
//! admin API reads it without messaging any actor, so it answers while an actor is busy.
//!
//! Per live session: a [`SessionLink`] with the cells of the session and its children, the
//! status the session last published, the groups cache's latest snapshot and the session's
//! logged-in client, so that cached reads and texts to cached groups never wait behind a
//! mailbox.

use arc_swap::{ArcSwap, ArcSwapOption};
use ractor::{ActorCell, ActorStatus};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::group_cache::GroupsSnapshot;
use crate::model::SessionStatus;
use crate::whatsapp::WaClient;

pub const ROOT: &str = "supervisor";
/// The webhook deliveries' actor, a child of the root.
pub const WEBHOOKS: &str = "webhooks";

pub fn session_name(id: &str) -> String {
    format!("session:{id}")
}

pub fn child_name(id: &str, kind: ActorKind) -> String {
    match kind {
        ActorKind::Groups => format!("session:{id}/groups"),
        ActorKind::Invites => format!("session:{id}/invites"),
        ActorKind::Events => format!("session:{id}/events"),
        ActorKind::Webhooks => WEBHOOKS.to_owned(),
        ActorKind::Session => session_name(id),
        ActorKind::Supervisor => ROOT.to_owned(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    Supervisor,
    Session,
    Groups,
    Invites,
    Events,
    Webhooks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Starting,
    Running,
    Restarting,
    Stopped,
    Failed,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Failure {
    pub at: u64,
    pub reason: String,
}

struct Node {
    kind: ActorKind,
    status: NodeStatus,
    started_at: u64,
    restarts: u32,
    last_failure: Option<Failure>,
    messages: Arc<AtomicU64>,
    cell: Option<ActorCell>,
}

/// One node of the tree as the admin API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct NodeView {
    pub name: String,
    pub kind: ActorKind,
    pub status: NodeStatus,
    pub started_at: u64,
    pub restarts: u32,
    pub last_failure: Option<Failure>,
    pub messages_handled: u64,
    #[schema(no_recursion)]
    pub children: Vec<NodeView>,
}

fn is_gone(cell: &ActorCell) -> bool {
    matches!(
        cell.get_status(),
        ActorStatus::Stopped | ActorStatus::Stopping
    )
}

/// How the façade reaches one session: written by the session and its children, read by
/// request handlers without messaging anyone.
pub struct SessionLink {
    session: ActorCell,
    status: AtomicU8,
    groups: ArcSwapOption<ActorCell>,
    invites: ArcSwapOption<ActorCell>,
    events: ArcSwapOption<ActorCell>,
    groups_cache: ArcSwap<GroupsSnapshot>,
    /// Published by the session actor, which alone creates and stops clients; a handle here
    /// never outlives the connection it talks through.
    client: ArcSwapOption<WaClient>,
}

impl SessionLink {
    pub fn new(session: ActorCell, status: SessionStatus) -> Self {
        Self {
            session,
            status: AtomicU8::new(status.code()),
            groups: ArcSwapOption::empty(),
            invites: ArcSwapOption::empty(),
            events: ArcSwapOption::empty(),
            groups_cache: ArcSwap::from_pointee(GroupsSnapshot::default()),
            client: ArcSwapOption::empty(),
        }
    }

    pub fn session(&self) -> &ActorCell {
        &self.session
    }

    /// Whether the session actor is gone (crashed, stopped or deleted).
    pub fn is_gone(&self) -> bool {
        is_gone(&self.session)
    }

    pub fn status(&self) -> SessionStatus {
        SessionStatus::from_code(self.status.load(Ordering::Acquire))
    }

    pub fn publish_status(&self, status: SessionStatus) {
        self.status.store(status.code(), Ordering::Release);
    }

    /// The live child of that kind, if it is running.
    pub fn child(&self, kind: ActorKind) -> Option<ActorCell> {
        let slot = match kind {
            ActorKind::Groups => &self.groups,
            ActorKind::Invites => &self.invites,
            ActorKind::Events => &self.events,
            ActorKind::Session | ActorKind::Supervisor | ActorKind::Webhooks => return None,
        };
        slot.load_full()
            .map(|cell| (*cell).clone())
            .filter(|cell| !is_gone(cell))
    }

    pub fn publish_child(&self, kind: ActorKind, cell: Option<ActorCell>) {
        let value = cell.map(Arc::new);
        match kind {
            ActorKind::Groups => self.groups.store(value),
            ActorKind::Invites => self.invites.store(value),
            ActorKind::Events => self.events.store(value),
            ActorKind::Session | ActorKind::Supervisor | ActorKind::Webhooks => {}
        }
    }

    pub fn groups_cache(&self) -> Arc<GroupsSnapshot> {
        self.groups_cache.load_full()
    }

    pub fn publish_groups(&self, snapshot: GroupsSnapshot) {
        self.groups_cache.store(Arc::new(snapshot));
    }

    /// The session's current client, once its connection is up.
    pub fn client(&self) -> Option<Arc<WaClient>> {
        self.client.load_full()
    }

    pub fn publish_client(&self, client: Option<WaClient>) {
        self.client.store(client.map(Arc::new));
    }
}

#[derive(Default)]
pub struct Directory {
    nodes: Mutex<BTreeMap<String, Node>>,
    links: RwLock<HashMap<String, Arc<SessionLink>>>,
}

impl Directory {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Node>> {
        // Every update is a single field store, so a poisoned lock is still consistent.
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that an actor is starting (or restarting); returns its message counter.
    pub fn starting(&self, name: &str, kind: ActorKind) -> Arc<AtomicU64> {
        let mut nodes = self.lock();
        let node = nodes.entry(name.to_owned()).or_insert_with(|| Node {
            kind,
            status: NodeStatus::Starting,
            started_at: crate::unix_now(),
            restarts: 0,
            last_failure: None,
            messages: Arc::new(AtomicU64::new(0)),
            cell: None,
        });
        node.kind = kind;
        node.status = NodeStatus::Starting;
        node.started_at = crate::unix_now();
        node.cell = None;
        node.messages.clone()
    }

    pub fn running(&self, name: &str, cell: ActorCell) {
        if let Some(node) = self.lock().get_mut(name) {
            node.status = NodeStatus::Running;
            node.cell = Some(cell);
        }
    }

    /// Records a failure that will be followed by a restart.
    pub fn failed_restarting(&self, name: &str, reason: &str) {
        if let Some(node) = self.lock().get_mut(name) {
            node.status = NodeStatus::Restarting;
            node.restarts += 1;
            node.last_failure = Some(Failure {
                at: crate::unix_now(),
                reason: reason.to_owned(),
            });
            node.cell = None;
        }
    }

    /// Records a restart that an operator asked for (not a failure).
    pub fn restarting(&self, name: &str) {
        if let Some(node) = self.lock().get_mut(name) {
            node.status = NodeStatus::Restarting;
            node.restarts += 1;
            node.cell = None;
        }
    }

    pub fn set_status(&self, name: &str, status: NodeStatus) {
        if let Some(node) = self.lock().get_mut(name) {
            node.status = status;
        }
    }

    /// Records a final failure (no restart follows).
    pub fn gave_up(&self, name: &str, reason: &str) {
        if let Some(node) = self.lock().get_mut(name) {
            node.status = NodeStatus::Failed;
            node.last_failure = Some(Failure {
                at: crate::unix_now(),
                reason: reason.to_owned(),
            });
        }
    }

    /// Forgets a session: its nodes (`session:<id>` and below) and its link.
    pub fn remove_session(&self, id: &str) {
        let name = session_name(id);
        let prefix = format!("{name}/");
        self.lock()
            .retain(|k, _| *k != name && !k.starts_with(&prefix));
        self.links
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// The running actor of that name and its kind.
    pub fn cell(&self, name: &str) -> Option<(ActorKind, ActorCell)> {
        let nodes = self.lock();
        let node = nodes.get(name)?;
        node.cell.clone().map(|cell| (node.kind, cell))
    }

    pub fn publish_link(&self, id: &str, link: Arc<SessionLink>) {
        self.links
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), link);
    }

    pub fn link(&self, id: &str) -> Option<Arc<SessionLink>> {
        self.links
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn view(name: &str, node: &Node) -> NodeView {
        // The directory can lag a crash by a moment; the actor's own status is the truth.
        let gone = node.cell.as_ref().is_some_and(is_gone);
        NodeView {
            name: name.to_owned(),
            kind: node.kind,
            status: if gone && node.status == NodeStatus::Running {
                NodeStatus::Stopped
            } else {
                node.status
            },
            started_at: node.started_at,
            restarts: node.restarts,
            last_failure: node.last_failure.clone(),
            messages_handled: node.messages.load(Ordering::Relaxed),
            children: Vec::new(),
        }
    }

    /// One node, without children.
    pub fn node(&self, name: &str) -> Option<NodeView> {
        let nodes = self.lock();
        nodes.get(name).map(|n| Self::view(name, n))
    }

    /// The whole tree, rooted at the supervisor; children sorted by name.
    pub fn tree(&self) -> Option<NodeView> {
        let nodes = self.lock();
        let mut root = Self::view(ROOT, nodes.get(ROOT)?);
        for (name, node) in nodes.iter() {
            if node.kind == ActorKind::Session {
                let mut session = Self::view(name, node);
                let prefix = format!("{name}/");
                session.children = nodes
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, n)| Self::view(k, n))
                    .collect();
                root.children.push(session);
            }
        }
        if let Some(node) = nodes.get(WEBHOOKS) {
            root.children.push(Self::view(WEBHOOKS, node));
        }
        Some(root)
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    pub fn restarts_total(&self) -> u64 {
        self.lock().values().map(|n| u64::from(n.restarts)).sum()
    }
}
