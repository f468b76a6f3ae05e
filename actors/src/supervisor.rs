//! `supervisor`: the root of the tree. Restores every stored session at start, creates new
//! ones, and restarts failed sessions (`one_for_one`, transient children: restarted after a
//! failure, forgotten after a normal exit) from their last snapshot, within the configured
//! restart intensity; past it the session is respawned parked as `failed`. It also runs the
//! `webhooks` actor, restarted after a failure.

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::directory::{self, ActorKind, ROOT, WEBHOOKS};
use crate::error::{GatewayError, Result};
use crate::model::{SessionId, SessionRecord, SessionStatus, SessionView};
use crate::services::Shared;
use crate::session::{DELETED_REASON, RESTART_REASON, SessionActor, SessionArgs};
use crate::settings::backoff;
use crate::webhooks::WebhooksActor;

pub enum SupervisorMsg {
    Create {
        id: Option<SessionId>,
        name: Option<String>,
        reply: RpcReplyPort<Result<SessionView>>,
    },
    /// (Re)start the webhooks actor.
    StartWebhooks { attempt: u32 },
    /// Answered as the first message: by then `post_start` has started the webhooks actor and
    /// every stored session, so a server that waits for it never shows a half-built tree.
    Ready(RpcReplyPort<()>),
    /// (Re)start a session actor; `attempt` counts failed spawns in a row.
    Start {
        id: SessionId,
        park_failed: bool,
        attempt: u32,
    },
}

pub struct Supervisor;

pub struct SupervisorState {
    services: Shared,
    /// Live session actors, by actor id (supervision events only carry the cell).
    sessions: HashMap<ActorId, SessionId>,
    webhooks: Option<ActorId>,
    messages: Arc<AtomicU64>,
}

impl SupervisorState {
    async fn spawn_webhooks(&mut self, myself: &ActorRef<SupervisorMsg>, attempt: u32) {
        match myself
            .get_cell()
            .spawn_linked(None, WebhooksActor, self.services.clone())
            .await
        {
            Ok((actor, _)) => self.webhooks = Some(actor.get_id()),
            Err(e) => {
                let sup = &self.services.settings.supervision;
                let delay = backoff(attempt, sup.restart_backoff_min, sup.restart_backoff_max);
                tracing::error!(error = %e, ?delay, "webhook delivery could not start; retrying");
                self.services
                    .directory
                    .failed_restarting(WEBHOOKS, &e.to_string());
                myself.send_after(delay, move || SupervisorMsg::StartWebhooks {
                    attempt: attempt + 1,
                });
            }
        }
    }

    async fn spawn_session(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: SessionId,
        park_failed: bool,
        attempt: u32,
    ) {
        let args = SessionArgs {
            services: self.services.clone(),
            id: id.clone(),
            park_failed,
        };
        match myself
            .get_cell()
            .spawn_linked(None, SessionActor, args)
            .await
        {
            Ok((actor, _)) => {
                self.sessions.insert(actor.get_id(), id);
            }
            Err(e) => {
                let name = directory::session_name(id.as_str());
                if attempt >= 5 {
                    tracing::error!(session = %id, error = %e, "session could not be started; giving up");
                    self.services.directory.gave_up(&name, &e.to_string());
                    return;
                }
                let sup = &self.services.settings.supervision;
                let delay = backoff(attempt, sup.restart_backoff_min, sup.restart_backoff_max);
                tracing::warn!(session = %id, error = %e, ?delay, "session start failed; retrying");
                myself.send_after(delay, move || SupervisorMsg::Start {
                    id,
                    park_failed,
                    attempt: attempt + 1,
                });
            }
        }
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Shared;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        services: Shared,
    ) -> std::result::Result<Self::State, ActorProcessingErr> {
        let messages = services.directory.starting(ROOT, ActorKind::Supervisor);
        // Running as soon as the spawn returns to `Gateway::start`, before the server answers:
        // restoring sessions (post_start) happens under a running root.
        services.directory.running(ROOT, myself.get_cell());
        Ok(SupervisorState {
            services,
            sessions: HashMap::new(),
            webhooks: None,
            messages,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        state.spawn_webhooks(&myself, 0).await;
        let records = state.services.store.sessions()?;
        tracing::info!(sessions = records.len(), "restoring sessions");
        for record in records {
            state.spawn_session(&myself, record.id, false, 0).await;
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        let grace = state.services.settings.supervision.shutdown_timeout;
        myself
            .stop_children_and_wait(Some("shutting down".into()), Some(grace))
            .await;
        state.services.store.flush().await?;
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
            SupervisorMsg::Create { id, name, reply } => {
                let id = id.unwrap_or_else(SessionId::generate);
                let now = crate::unix_now();
                let record = SessionRecord {
                    name: name.unwrap_or_else(|| id.to_string()),
                    id: id.clone(),
                    wanted_online: true,
                    status: SessionStatus::Connecting,
                    phone_number: None,
                    push_name: None,
                    lid: None,
                    device_id: None,
                    created_at: now,
                    updated_at: now,
                    last_connected_at: None,
                };
                let result = match state.services.store.create_session(&record).await {
                    Ok(true) => {
                        state.spawn_session(&myself, id, false, 0).await;
                        Ok(SessionView::from_record(&record, SessionStatus::Connecting))
                    }
                    Ok(false) => Err(GatewayError::SessionExists(id.to_string())),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::Ready(reply) => {
                let _ = reply.send(());
            }
            SupervisorMsg::StartWebhooks { attempt } => {
                if state.webhooks.is_none() {
                    state.spawn_webhooks(&myself, attempt).await;
                }
            }
            SupervisorMsg::Start {
                id,
                park_failed,
                attempt,
            } => {
                let still_stored = state.services.store.session(&id).ok().flatten().is_some();
                let already_running = state.sessions.values().any(|s| *s == id);
                if still_stored && !already_running {
                    state.spawn_session(&myself, id, park_failed, attempt).await;
                }
            }
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
            SupervisionEvent::ActorFailed(cell, err) if state.webhooks == Some(cell.get_id()) => {
                // Its workers resume from their persisted cursors after the restart.
                state.webhooks = None;
                let reason = err.to_string();
                tracing::warn!(actor = WEBHOOKS, %reason, "actor failed");
                state
                    .services
                    .directory
                    .failed_restarting(WEBHOOKS, &reason);
                let delay = state.services.settings.supervision.restart_backoff_min;
                myself.send_after(delay, || SupervisorMsg::StartWebhooks { attempt: 0 });
            }
            SupervisionEvent::ActorTerminated(cell, _, reason)
                if state.webhooks == Some(cell.get_id()) =>
            {
                state.webhooks = None;
                if reason.as_deref() == Some(RESTART_REASON) {
                    state.services.directory.restarting(WEBHOOKS);
                    state.spawn_webhooks(&myself, 0).await;
                } else {
                    state
                        .services
                        .directory
                        .set_status(WEBHOOKS, directory::NodeStatus::Stopped);
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(id) = state.sessions.remove(&cell.get_id()) else {
                    return Ok(());
                };
                let name = directory::session_name(id.as_str());
                let reason = err.to_string();
                tracing::warn!(actor = %name, %reason, "actor failed");
                state.services.directory.failed_restarting(&name, &reason);
                let services = &state.services;
                let restart = services.intensity.record(
                    id.as_str(),
                    Instant::now(),
                    &services.settings.supervision,
                );
                let within = restart.is_some();
                let delay = restart.unwrap_or(services.settings.supervision.restart_backoff_min);
                if !within {
                    tracing::error!(session = %id, "restart intensity exceeded; parking the session as failed");
                }
                myself.send_after(delay, move || SupervisorMsg::Start {
                    id,
                    park_failed: !within,
                    attempt: 0,
                });
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let Some(id) = state.sessions.remove(&cell.get_id()) else {
                    return Ok(());
                };
                let name = directory::session_name(id.as_str());
                match reason.as_deref() {
                    Some(RESTART_REASON) => {
                        state.services.directory.restarting(&name);
                        state.spawn_session(&myself, id, false, 0).await;
                    }
                    Some(DELETED_REASON) => state.services.intensity.clear(id.as_str()),
                    _ => state
                        .services
                        .directory
                        .set_status(&name, directory::NodeStatus::Stopped),
                }
            }
            _ => {}
        }
        Ok(())
    }
}
