//! Bookkeeping of the live supervision tree: per actor its kind, status, start time, restart
//! count, last failure and message counter, plus a typed handle to reach it. Supervisors write
//! it when they start, restart or give up on a child; the admin API reads it without sending
//! any actor a message, so it answers even while an actor is busy.

use ractor::ActorRef;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::groups::GroupsMsg;
use crate::invites::InvitesMsg;
use crate::session::SessionMsg;
use crate::supervisor::SupervisorMsg;

pub const ROOT: &str = "supervisor";

pub fn session_name(id: &str) -> String {
    format!("session:{id}")
}
pub fn groups_name(id: &str) -> String {
    format!("session:{id}/groups")
}
pub fn invites_name(id: &str) -> String {
    format!("session:{id}/invites")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    Supervisor,
    Session,
    Groups,
    Invites,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Starting,
    Running,
    Restarting,
    Stopped,
    Failed,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Failure {
    pub at: u64,
    pub reason: String,
}

/// A typed way to reach an actor of the tree.
#[derive(Clone)]
pub enum Handle {
    Supervisor(ActorRef<SupervisorMsg>),
    Session(ActorRef<SessionMsg>),
    Groups(ActorRef<GroupsMsg>),
    Invites(ActorRef<InvitesMsg>),
}

impl Handle {
    pub fn cell(&self) -> ractor::ActorCell {
        match self {
            Self::Supervisor(r) => r.get_cell(),
            Self::Session(r) => r.get_cell(),
            Self::Groups(r) => r.get_cell(),
            Self::Invites(r) => r.get_cell(),
        }
    }
}

struct Node {
    kind: ActorKind,
    status: NodeStatus,
    started_at: u64,
    restarts: u32,
    last_failure: Option<Failure>,
    messages: Arc<AtomicU64>,
    handle: Option<Handle>,
}

/// One node of the tree as the admin API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeView {
    pub name: String,
    pub kind: ActorKind,
    pub status: NodeStatus,
    pub started_at: u64,
    pub restarts: u32,
    pub last_failure: Option<Failure>,
    pub messages_handled: u64,
    pub children: Vec<NodeView>,
}

#[derive(Default)]
pub struct Directory {
    nodes: Mutex<BTreeMap<String, Node>>,
}

impl Directory {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Node>> {
        // A panic while holding this lock cannot leave a node half-written (every update is a
        // single field store), so a poisoned lock is still consistent.
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
            handle: None,
        });
        node.kind = kind;
        node.status = NodeStatus::Starting;
        node.started_at = crate::unix_now();
        node.handle = None;
        node.messages.clone()
    }

    pub fn running(&self, name: &str, handle: Handle) {
        if let Some(node) = self.lock().get_mut(name) {
            node.status = NodeStatus::Running;
            node.handle = Some(handle);
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
            node.handle = None;
        }
    }

    /// Records a restart that an operator asked for (not a failure).
    pub fn restarting(&self, name: &str) {
        if let Some(node) = self.lock().get_mut(name) {
            node.status = NodeStatus::Restarting;
            node.restarts += 1;
            node.handle = None;
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

    /// Forgets an actor and everything below it (`name` and `name/...`).
    pub fn remove_subtree(&self, name: &str) {
        let prefix = format!("{name}/");
        self.lock()
            .retain(|k, _| k != name && !k.starts_with(&prefix));
    }

    pub fn handle(&self, name: &str) -> Option<Handle> {
        self.lock().get(name).and_then(|n| n.handle.clone())
    }

    pub fn session(&self, id: &str) -> Option<ActorRef<SessionMsg>> {
        match self.handle(&session_name(id)) {
            Some(Handle::Session(r)) => Some(r),
            _ => None,
        }
    }

    fn view(name: &str, node: &Node) -> NodeView {
        // The directory can lag a crash by a moment; the actor's own status is the truth.
        let live_stopped = node.handle.as_ref().is_some_and(|h| {
            matches!(
                h.cell().get_status(),
                ractor::ActorStatus::Stopped | ractor::ActorStatus::Stopping
            )
        });
        NodeView {
            name: name.to_owned(),
            kind: node.kind,
            status: if live_stopped && node.status == NodeStatus::Running {
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
        Some(root)
    }

    pub fn count(&self, kind: ActorKind) -> usize {
        self.lock().values().filter(|n| n.kind == kind).count()
    }

    pub fn restarts_total(&self) -> u64 {
        self.lock().values().map(|n| u64::from(n.restarts)).sum()
    }
}
