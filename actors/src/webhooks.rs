//! `webhooks`: the webhook registry (persisted in sled) and its delivery workers, one per
//! (webhook, session). A worker delivers that session's events in seq order, one at a time,
//! retrying with backoff for as long as an event is retained: a failing endpoint pauses, it
//! never skips. Workers of different sessions and webhooks never wait for each other; a
//! process-wide limit bounds the deliveries in flight. Cursors are persisted, so a restart
//! resumes where delivery stopped.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

use crate::directory::{ActorKind, WEBHOOKS};
use crate::error::{GatewayError, Result};
use crate::event_log::{EventLog, StoredEvent};
use crate::services::Shared;
use crate::settings::WebhookSettings;
use crate::webhook_delivery::{self, Outcome};
use crate::webhook_store::{SigningSecret, WebhookRecord, WebhookStore};

/// How often the worker set is matched against the stored sessions.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// How long a previous secret keeps signing after a rotation.
const ROTATION_OVERLAP: u64 = 24 * 3600;
/// How long shutdown waits for a worker to finish its attempt.
const WORKER_STOP: Duration = Duration::from_secs(3);

/// A new registration, validated at the edge.
#[derive(Debug, Clone)]
pub struct WebhookSpec {
    pub url: String,
    pub events: Vec<String>,
    pub sessions: Vec<String>,
    pub secret: Option<String>,
}

/// A change to a registration; absent fields stay.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub sessions: Option<Vec<String>>,
    pub secret: Option<String>,
}

/// `POST /webhooks`: the only answer that shows the secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedWebhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub sessions: Vec<String>,
    pub secret: String,
    pub created_at: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub sessions: Vec<String>,
    pub created_at: u64,
    pub deliveries: Vec<DeliveryView>,
}

/// One (webhook, session) worker's state.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct DeliveryView {
    pub session: String,
    pub delivered_seq: u64,
    pub pending: u64,
    /// Events retention dropped before they were delivered.
    pub expired: u64,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<u64>,
}

/// Per webhook, for `/metrics`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WebhookStats {
    pub id: String,
    pub pending: u64,
    pub oldest_pending_age_seconds: u64,
}

pub enum WebhooksMsg {
    Create(WebhookSpec, RpcReplyPort<Result<CreatedWebhook>>),
    List(RpcReplyPort<Result<Vec<WebhookView>>>),
    Get(String, RpcReplyPort<Result<WebhookView>>),
    Update(String, WebhookPatch, RpcReplyPort<Result<WebhookView>>),
    Delete(String, RpcReplyPort<Result<()>>),
    Replay {
        id: String,
        session: String,
        after: u64,
        reply: RpcReplyPort<Result<WebhookView>>,
    },
    Stats(RpcReplyPort<Vec<WebhookStats>>),
    /// A session was deleted: its workers stop and its cursors go (durable on the answer).
    ForgetSession(String, RpcReplyPort<Result<()>>),
    /// Starts workers for new sessions, stops those of deleted ones.
    Reconcile,
    Inspect(RpcReplyPort<serde_json::Value>),
    #[cfg(feature = "test-server")]
    Crash,
}

#[derive(Debug, Default, Clone)]
struct LaneState {
    delivered_seq: u64,
    expired: u64,
    last_error: Option<String>,
    next_attempt_at: Option<u64>,
}

struct Lane {
    stop: watch::Sender<bool>,
    state: Arc<Mutex<LaneState>>,
    task: tokio::task::JoinHandle<()>,
}

pub struct WebhooksActor;

pub struct WebhooksState {
    services: Shared,
    store: WebhookStore,
    hooks: HashMap<String, Arc<WebhookRecord>>,
    lanes: HashMap<(String, String), Lane>,
    /// Workers `reconcile` stopped whose tasks may still be finishing a delivery, by session.
    stopping: Vec<(String, tokio::task::JoinHandle<()>)>,
    client: reqwest::Client,
    /// Each webhook's own bound on deliveries in flight, so that one slow endpoint holds up
    /// no other webhook.
    permits: HashMap<String, Arc<Semaphore>>,
    messages: Arc<AtomicU64>,
}

fn not_found(id: &str) -> GatewayError {
    GatewayError::NotFound(format!("no webhook with id '{id}'"))
}

fn lock(state: &Mutex<LaneState>) -> std::sync::MutexGuard<'_, LaneState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl WebhooksState {
    fn session_ids(&self) -> Vec<String> {
        match self.services.store.session_ids() {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(error = %e, "cannot list sessions for webhook delivery");
                Vec::new()
            }
        }
    }

    /// Sessions a webhook newly covers start at their current head: a registration gets what
    /// happens from now on (replay reaches back).
    async fn start_cursors_at_head(&self, hook: &WebhookRecord) -> Result<()> {
        let mut changed = false;
        for session in self.session_ids() {
            if hook.wants_session(&session) && self.store.cursor(&hook.id, &session)?.is_none() {
                let head = self.services.events.last_seq(&session)?;
                self.store.set_cursor(&hook.id, &session, head)?;
                changed = true;
            }
        }
        if changed {
            self.services.store.flush().await?;
        }
        Ok(())
    }

    fn start_lane(&mut self, hook: Arc<WebhookRecord>, session: String) {
        let (stop, stop_rx) = watch::channel(false);
        // The stored cursor, so that a view taken before the worker first runs (the answer to
        // an update or a replay) shows where delivery stands.
        let delivered_seq = self
            .store
            .cursor(&hook.id, &session)
            .ok()
            .flatten()
            .unwrap_or(0);
        let expired = self.store.expired(&hook.id, &session).unwrap_or(0);
        let state = Arc::new(Mutex::new(LaneState {
            delivered_seq,
            expired,
            ..LaneState::default()
        }));
        let worker = Worker {
            hook: hook.clone(),
            session: session.clone(),
            log: self.services.events.clone(),
            store: self.store.clone(),
            client: self.client.clone(),
            permits: self.permits_of(&hook.id),
            settings: self.services.settings.webhooks.clone(),
            services: self.services.clone(),
            state: state.clone(),
            stop: stop_rx,
        };
        let task = tokio::spawn(worker.run());
        self.lanes
            .insert((hook.id.clone(), session), Lane { stop, state, task });
    }

    fn stop_lane(&mut self, key: &(String, String)) -> Option<tokio::task::JoinHandle<()>> {
        let lane = self.lanes.remove(key)?;
        let _ = lane.stop.send(true);
        Some(lane.task)
    }

    fn permits_of(&mut self, hook: &str) -> Arc<Semaphore> {
        let max = self.services.settings.webhooks.max_in_flight.max(1);
        self.permits
            .entry(hook.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(max)))
            .clone()
    }

    /// Deliveries in flight now, over every webhook.
    fn in_flight(&self) -> usize {
        let max = self.services.settings.webhooks.max_in_flight.max(1);
        self.permits
            .values()
            .map(|permits| max.saturating_sub(permits.available_permits()))
            .sum()
    }

    fn stop_lanes_of(&mut self, hook: &str) -> Vec<tokio::task::JoinHandle<()>> {
        let keys: Vec<_> = self
            .lanes
            .keys()
            .filter(|(h, _)| h == hook)
            .cloned()
            .collect();
        keys.iter().filter_map(|k| self.stop_lane(k)).collect()
    }

    /// Stops the workers of a deleted session and forgets its cursors. The workers are
    /// aborted and awaited first, so none can save a cursor after it is gone.
    async fn forget_session(&mut self, session: &str) -> Result<()> {
        let keys: Vec<_> = self
            .lanes
            .keys()
            .filter(|(_, s)| s == session)
            .cloned()
            .collect();
        let mut tasks: Vec<_> = keys
            .iter()
            .filter_map(|key| self.lanes.remove(key))
            .map(|lane| lane.task)
            .collect();
        let (theirs, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.stopping)
            .into_iter()
            .partition(|(s, _)| s == session);
        self.stopping = others;
        tasks.extend(theirs.into_iter().map(|(_, task)| task));
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
        self.store.forget_sessions(|s| s == session).await?;
        Ok(())
    }

    fn reconcile(&mut self) {
        let sessions = self.session_ids();
        let mut wanted = Vec::new();
        for hook in self.hooks.values() {
            for session in &sessions {
                if hook.wants_session(session) {
                    wanted.push((hook.clone(), session.clone()));
                }
            }
        }
        let stale: Vec<_> = self
            .lanes
            .iter()
            .filter(|(key, lane)| {
                lane.task.is_finished() || !wanted.iter().any(|(h, s)| h.id == key.0 && *s == key.1)
            })
            .map(|(key, _)| key.clone())
            .collect();
        self.stopping.retain(|(_, task)| !task.is_finished());
        for key in stale {
            if let Some(task) = self.stop_lane(&key) {
                self.stopping.push((key.1, task));
            }
        }
        for (hook, session) in wanted {
            if !self.lanes.contains_key(&(hook.id.clone(), session.clone())) {
                self.start_lane(hook, session);
            }
        }
    }

    /// The webhook and its workers' states as of now, to render outside the actor: counting
    /// what is pending may scan the log.
    fn snapshot(&self, hook: &Arc<WebhookRecord>) -> HookSnapshot {
        let mut lanes: Vec<(String, LaneState)> = self
            .lanes
            .iter()
            .filter(|((h, _), _)| *h == hook.id)
            .map(|((_, session), lane)| (session.clone(), lock(&lane.state).clone()))
            .collect();
        lanes.sort_by(|a, b| a.0.cmp(&b.0));
        HookSnapshot {
            hook: hook.clone(),
            lanes,
        }
    }

    fn snapshots(&self) -> Vec<HookSnapshot> {
        let mut hooks: Vec<_> = self.hooks.values().collect();
        hooks.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        hooks.into_iter().map(|h| self.snapshot(h)).collect()
    }

    /// Answers with the snapshot's view, rendered off the actor.
    fn answer_view(
        &self,
        reply: RpcReplyPort<Result<WebhookView>>,
        snapshot: Result<HookSnapshot>,
    ) {
        let log = self.services.events.clone();
        answer_off_actor(reply, move || snapshot.map(|s| s.view(&log)));
    }

    fn get(&self, id: &str) -> Result<Arc<WebhookRecord>> {
        self.hooks.get(id).cloned().ok_or_else(|| not_found(id))
    }

    async fn create(&mut self, spec: WebhookSpec) -> Result<CreatedWebhook> {
        let secret = spec
            .secret
            .unwrap_or_else(webhook_delivery::generate_secret);
        let record = WebhookRecord {
            id: format!("wh_{}", ulid::Ulid::new()),
            url: spec.url,
            events: spec.events,
            sessions: spec.sessions,
            secrets: vec![SigningSecret {
                secret: secret.clone(),
                until: None,
            }],
            created_at: crate::unix_now(),
        };
        self.start_cursors_at_head(&record).await?;
        self.store.put(&record).await?;
        tracing::info!(webhook = %record.id, url = %record.url, "webhook registered");
        let created = CreatedWebhook {
            id: record.id.clone(),
            url: record.url.clone(),
            events: record.events.clone(),
            sessions: record.sessions.clone(),
            secret,
            created_at: record.created_at,
        };
        self.hooks.insert(record.id.clone(), Arc::new(record));
        self.reconcile();
        Ok(created)
    }

    async fn update(&mut self, id: &str, patch: WebhookPatch) -> Result<HookSnapshot> {
        let mut record = (*self.get(id)?).clone();
        if let Some(url) = patch.url {
            record.url = url;
        }
        if let Some(events) = patch.events {
            record.events = events;
        }
        if let Some(sessions) = patch.sessions {
            record.sessions = sessions;
        }
        if let Some(secret) = patch.secret {
            let now = crate::unix_now();
            let mut secrets = vec![SigningSecret {
                secret,
                until: None,
            }];
            // The secret in use until now keeps signing for a day, beside the new one.
            secrets.extend(record.secrets.iter().take(1).map(|s| SigningSecret {
                secret: s.secret.clone(),
                until: Some(now + ROTATION_OVERLAP),
            }));
            record.secrets = secrets;
        }
        self.start_cursors_at_head(&record).await?;
        self.store.put(&record).await?;
        // Workers pick up the new registration from a clean start at their cursors.
        for task in self.stop_lanes_of(id) {
            let _ = tokio::time::timeout(WORKER_STOP, task).await;
        }
        let record = Arc::new(record);
        self.hooks.insert(id.to_owned(), record.clone());
        self.reconcile();
        Ok(self.snapshot(&record))
    }

    async fn delete(&mut self, id: &str) -> Result<()> {
        self.get(id)?;
        for task in self.stop_lanes_of(id) {
            let _ = tokio::time::timeout(WORKER_STOP, task).await;
        }
        self.store.remove(id).await?;
        self.hooks.remove(id);
        self.permits.remove(id);
        tracing::info!(webhook = %id, "webhook deleted");
        Ok(())
    }

    async fn replay(&mut self, id: &str, session: &str, after: u64) -> Result<HookSnapshot> {
        let hook = self.get(id)?;
        if !hook.wants_session(session) {
            return Err(GatewayError::validation(
                "session",
                format!("webhook {id} does not deliver events of session '{session}'"),
            ));
        }
        if !self.session_ids().iter().any(|s| s == session) {
            return Err(GatewayError::SessionNotFound(session.to_owned()));
        }
        let head = self.services.events.last_seq(session)?;
        if after > head {
            return Err(GatewayError::validation(
                "after",
                format!("the session's newest event is {head}"),
            ));
        }
        let floor = self.services.events.floor(session)?;
        if after < floor {
            return Err(GatewayError::EventsExpired { oldest: floor + 1 });
        }
        let key = (id.to_owned(), session.to_owned());
        if let Some(task) = self.stop_lane(&key) {
            let _ = tokio::time::timeout(WORKER_STOP, task).await;
        }
        self.store.set_cursor_durably(id, session, after).await?;
        tracing::info!(webhook = %id, session, after, "webhook replay requested");
        self.start_lane(hook.clone(), session.to_owned());
        Ok(self.snapshot(&hook))
    }
}

/// Renders a reply on the blocking pool and sends it from there, so a long count never holds
/// up the actor's mailbox.
fn answer_off_actor<T: Send + 'static>(
    reply: RpcReplyPort<T>,
    render: impl FnOnce() -> T + Send + 'static,
) {
    tokio::spawn(async move {
        match tokio::task::spawn_blocking(render).await {
            Ok(answer) => {
                let _ = reply.send(answer);
            }
            Err(e) => tracing::error!(error = %e, "rendering a webhook reply failed"),
        }
    });
}

/// A webhook and its workers' states, taken in one actor turn.
struct HookSnapshot {
    hook: Arc<WebhookRecord>,
    /// (session, state), by session.
    lanes: Vec<(String, LaneState)>,
}

impl HookSnapshot {
    /// Events of the webhook's types after `delivered`, and when the oldest was appended.
    fn pending(&self, log: &EventLog, session: &str, delivered: u64) -> (u64, Option<u64>) {
        log.count_after(
            session,
            delivered,
            self.hook.type_filter().as_deref(),
            100_000,
        )
        .unwrap_or((0, None))
    }

    fn view(&self, log: &EventLog) -> WebhookView {
        let hook = &self.hook;
        WebhookView {
            id: hook.id.clone(),
            url: hook.url.clone(),
            events: hook.events.clone(),
            sessions: hook.sessions.clone(),
            created_at: hook.created_at,
            deliveries: self
                .lanes
                .iter()
                .map(|(session, state)| DeliveryView {
                    session: session.clone(),
                    delivered_seq: state.delivered_seq,
                    pending: self.pending(log, session, state.delivered_seq).0,
                    expired: state.expired,
                    last_error: state.last_error.clone(),
                    next_attempt_at: state.next_attempt_at,
                })
                .collect(),
        }
    }

    fn stats(&self, log: &EventLog, now: u64) -> WebhookStats {
        let mut stats = WebhookStats {
            id: self.hook.id.clone(),
            pending: 0,
            oldest_pending_age_seconds: 0,
        };
        for (session, state) in &self.lanes {
            let (pending, oldest) = self.pending(log, session, state.delivered_seq);
            stats.pending += pending;
            if let Some(at) = oldest {
                stats.oldest_pending_age_seconds =
                    stats.oldest_pending_age_seconds.max(now.saturating_sub(at));
            }
        }
        stats
    }
}

impl Actor for WebhooksActor {
    type Msg = WebhooksMsg;
    type State = WebhooksState;
    type Arguments = Shared;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        services: Shared,
    ) -> std::result::Result<Self::State, ActorProcessingErr> {
        let messages = services.directory.starting(WEBHOOKS, ActorKind::Webhooks);
        let store = WebhookStore::open(services.store.db())?;
        let hooks = store
            .all()?
            .into_iter()
            .map(|h| (h.id.clone(), Arc::new(h)))
            .collect();
        let settings = &services.settings.webhooks;
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("wagate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        // A crash between a session's deletion and its `ForgetSession` leaves its cursors.
        let sessions = services.store.session_ids()?;
        let forgotten = store
            .forget_sessions(|s| !sessions.iter().any(|kept| kept == s))
            .await?;
        if forgotten > 0 {
            tracing::info!(forgotten, "forgot the delivery cursors of deleted sessions");
        }
        services.directory.running(WEBHOOKS, myself.get_cell());
        Ok(WebhooksState {
            services,
            store,
            hooks,
            lanes: HashMap::new(),
            stopping: Vec::new(),
            client,
            permits: HashMap::new(),
            messages,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        state.reconcile();
        myself.send_interval(RECONCILE_EVERY, || WebhooksMsg::Reconcile);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        let keys: Vec<_> = state.lanes.keys().cloned().collect();
        let tasks: Vec<_> = keys.iter().filter_map(|k| state.stop_lane(k)).collect();
        for task in tasks {
            let _ = tokio::time::timeout(WORKER_STOP, task).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        state.messages.fetch_add(1, Ordering::Relaxed);
        match msg {
            WebhooksMsg::Create(spec, reply) => {
                let _ = reply.send(state.create(spec).await);
            }
            WebhooksMsg::List(reply) => {
                let snapshots = state.snapshots();
                let log = state.services.events.clone();
                answer_off_actor(reply, move || {
                    Ok(snapshots.into_iter().map(|s| s.view(&log)).collect())
                });
            }
            WebhooksMsg::Get(id, reply) => {
                let snapshot = state.get(&id).map(|h| state.snapshot(&h));
                state.answer_view(reply, snapshot);
            }
            WebhooksMsg::Update(id, patch, reply) => {
                let snapshot = state.update(&id, patch).await;
                state.answer_view(reply, snapshot);
            }
            WebhooksMsg::Delete(id, reply) => {
                let _ = reply.send(state.delete(&id).await);
            }
            WebhooksMsg::Replay {
                id,
                session,
                after,
                reply,
            } => {
                let snapshot = state.replay(&id, &session, after).await;
                state.answer_view(reply, snapshot);
            }
            WebhooksMsg::Stats(reply) => {
                let snapshots = state.snapshots();
                let log = state.services.events.clone();
                answer_off_actor(reply, move || {
                    let now = crate::unix_now();
                    let mut stats: Vec<_> = snapshots.iter().map(|s| s.stats(&log, now)).collect();
                    stats.sort_by(|a, b| a.id.cmp(&b.id));
                    stats
                });
            }
            WebhooksMsg::ForgetSession(session, reply) => {
                let _ = reply.send(state.forget_session(&session).await);
            }
            WebhooksMsg::Reconcile => state.reconcile(),
            WebhooksMsg::Inspect(reply) => {
                let _ = reply.send(serde_json::json!({
                    "webhooks": state.hooks.len(),
                    "workers": state.lanes.len(),
                    "in_flight": state.in_flight(),
                }));
            }
            #[cfg(feature = "test-server")]
            WebhooksMsg::Crash => panic!("crash requested through the test-only admin trigger"),
        }
        Ok(())
    }
}

/// One (webhook, session) delivery worker.
struct Worker {
    hook: Arc<WebhookRecord>,
    session: String,
    log: Arc<EventLog>,
    store: WebhookStore,
    client: reqwest::Client,
    permits: Arc<Semaphore>,
    settings: WebhookSettings,
    services: Shared,
    state: Arc<Mutex<LaneState>>,
    stop: watch::Receiver<bool>,
}

/// How one event's delivery ended.
enum Delivery {
    Delivered,
    /// Retention dropped it while it was being retried.
    Expired,
    Stopped,
}

impl Worker {
    fn advance(&self, cursor: u64) {
        if let Err(e) = self.store.set_cursor(&self.hook.id, &self.session, cursor) {
            tracing::error!(webhook = %self.hook.id, session = %self.session, error = %e, "cannot save the delivery cursor");
        }
        lock(&self.state).delivered_seq = cursor;
    }

    async fn run(mut self) {
        let Ok(mut heads) = self.log.subscribe(&self.session) else {
            return;
        };
        let mut cursor = match self.store.cursor(&self.hook.id, &self.session) {
            Ok(c) => c.unwrap_or(0),
            Err(e) => {
                tracing::error!(webhook = %self.hook.id, error = %e, "cannot read the delivery cursor");
                return;
            }
        };
        lock(&self.state).delivered_seq = cursor;
        let types = self.hook.type_filter();
        loop {
            if *self.stop.borrow() {
                return;
            }
            heads.borrow_and_update();
            let page = match self
                .log
                .read(&self.session, cursor, 1, types.as_deref(), 4096)
            {
                Ok(Ok(page)) => page,
                Ok(Err(expired)) => {
                    let skipped = expired.oldest.saturating_sub(1).saturating_sub(cursor);
                    tracing::warn!(webhook = %self.hook.id, session = %self.session, skipped, "undelivered events expired");
                    match self
                        .store
                        .add_expired(&self.hook.id, &self.session, skipped)
                    {
                        Ok(total) => lock(&self.state).expired = total,
                        Err(e) => {
                            tracing::error!(webhook = %self.hook.id, error = %e, "cannot count expired events");
                            lock(&self.state).expired += skipped;
                        }
                    }
                    cursor = expired.oldest.saturating_sub(1);
                    self.advance(cursor);
                    continue;
                }
                Err(e) => {
                    tracing::error!(webhook = %self.hook.id, error = %e, "cannot read the event log");
                    if self.pause(Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            };
            if let Some(event) = page.events.into_iter().next() {
                match self.deliver(&event).await {
                    Delivery::Delivered => {
                        self.services.telemetry.events_delivered.inc();
                        cursor = event.seq;
                        self.advance(cursor);
                    }
                    Delivery::Expired => {}
                    Delivery::Stopped => return,
                }
                continue;
            }
            if page.scanned_to > cursor {
                cursor = page.scanned_to;
                self.advance(cursor);
                continue;
            }
            tokio::select! {
                changed = heads.changed() => if changed.is_err() { return },
                _ = self.stop.changed() => return,
            }
        }
    }

    /// Sleeps unless stopped first; `true` when stopped.
    async fn pause(&mut self, delay: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(delay) => *self.stop.borrow(),
            _ = self.stop.changed() => true,
        }
    }

    async fn attempt(&self, event: &StoredEvent, id: &str) -> Outcome {
        let now = crate::unix_now();
        let keys: Vec<Vec<u8>> = self
            .hook
            .signing_secrets(now)
            .into_iter()
            .filter_map(webhook_delivery::secret_key)
            .collect();
        let signature = webhook_delivery::signature_header(&keys, id, now, &event.envelope);
        let request = self
            .client
            .post(&self.hook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", signature)
            .body(event.envelope.clone());
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                // The body is not needed; dropping the response frees the connection.
                drop(response);
                webhook_delivery::outcome(Some(status), retry_after.as_deref(), now)
            }
            Err(e) => Outcome::Retry {
                reason: if e.is_timeout() {
                    "timed out".into()
                } else if e.is_connect() {
                    "connection failed".into()
                } else {
                    "request failed".into()
                },
                after: None,
            },
        }
    }

    async fn deliver(&mut self, event: &StoredEvent) -> Delivery {
        let id = envelope_id(&event.envelope);
        let mut failures = 0u32;
        loop {
            let permit = tokio::select! {
                permit = self.permits.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => return Delivery::Stopped,
                },
                _ = self.stop.changed() => return Delivery::Stopped,
            };
            let outcome = self.attempt(event, &id).await;
            drop(permit);
            match outcome {
                Outcome::Delivered => {
                    let mut state = lock(&self.state);
                    state.last_error = None;
                    state.next_attempt_at = None;
                    return Delivery::Delivered;
                }
                Outcome::Retry { reason, after } => {
                    failures += 1;
                    self.services.telemetry.delivery_failures.inc();
                    let delay = webhook_delivery::retry_delay(
                        failures,
                        self.settings.backoff_min,
                        self.settings.backoff_max,
                        after,
                        rand::random::<f64>(),
                    );
                    tracing::warn!(
                        webhook = %self.hook.id,
                        session = %self.session,
                        seq = event.seq,
                        %reason,
                        ?delay,
                        "webhook delivery failed; retrying"
                    );
                    {
                        let mut state = lock(&self.state);
                        state.last_error = Some(reason);
                        state.next_attempt_at = Some(crate::unix_now() + delay.as_secs().max(1));
                    }
                    if self.pause(delay).await {
                        return Delivery::Stopped;
                    }
                    // Retried for as long as the event is retained.
                    if matches!(
                        self.log.read(&self.session, event.seq - 1, 1, None, 1),
                        Ok(Err(_))
                    ) {
                        return Delivery::Expired;
                    }
                }
            }
        }
    }
}

/// The envelope's `id`, which is also the `webhook-id`.
fn envelope_id(envelope: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: String,
    }
    serde_json::from_slice::<IdOnly>(envelope)
        .map(|e| e.id)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_log::NewEvent;

    fn event(kind: &'static str) -> NewEvent {
        NewEvent {
            kind,
            occurred_at: 7,
            data: serde_json::json!({}),
            idempotency_key: None,
        }
    }

    fn hook(events: &[&str]) -> Arc<WebhookRecord> {
        Arc::new(WebhookRecord {
            id: "wh_1".into(),
            url: "http://127.0.0.1:9/hook".into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            sessions: vec!["*".into()],
            secrets: Vec::new(),
            created_at: 1,
        })
    }

    fn lane(delivered_seq: u64) -> LaneState {
        LaneState {
            delivered_seq,
            ..LaneState::default()
        }
    }

    #[test]
    fn a_snapshot_counts_what_each_worker_has_left_of_the_webhooks_types() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(&sled::open(dir.path()).unwrap()).unwrap();
        let kinds = ["session.status", "message.received", "message.received"];
        log.append("a", 1, &kinds.map(event)).unwrap();
        log.publish_head("a", 3);
        log.append("b", 1, &[event("message.received")]).unwrap();
        log.publish_head("b", 1);
        let lanes = vec![("a".to_owned(), lane(1)), ("b".to_owned(), lane(1))];

        let every = HookSnapshot {
            hook: hook(&["*"]),
            lanes: lanes.clone(),
        };
        let pending: Vec<u64> = every
            .view(&log)
            .deliveries
            .iter()
            .map(|d| d.pending)
            .collect();
        assert_eq!(pending, vec![2, 0]);

        let statuses = HookSnapshot {
            hook: hook(&["session.status"]),
            lanes: vec![("a".to_owned(), lane(0)), ("b".to_owned(), lane(0))],
        };
        let view = statuses.view(&log);
        assert_eq!(view.deliveries[0].pending, 1);
        assert_eq!(view.deliveries[1].pending, 0);
        let now = crate::unix_now() + 5;
        let stats = statuses.stats(&log, now);
        assert_eq!(stats.pending, 1);
        assert!((5..=6).contains(&stats.oldest_pending_age_seconds));
    }
}
