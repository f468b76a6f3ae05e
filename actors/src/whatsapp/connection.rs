//! Building and driving a session's client: its credential store, its connection loop (our own
//! exponential backoff with jitter, bounded concurrent attempts), and the translation of its
//! events into [`ConnectionReport`]s for the session that owns it.
//!
//! At most one live client per session, ever: every connection lives in a [`ClientSlots`]
//! entry that outlives the session actor, and a new connection first stops and awaits the
//! previous one (also when the previous owner crashed).

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

use whatsapp_rust::IqError;
use whatsapp_rust::TokioRuntime;
use whatsapp_rust::bot::Bot;
use whatsapp_rust::http::UreqHttpClient;
use whatsapp_rust::store::SqliteStore;
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::types::events::{Event, EventHandler, GroupUpdate};
use whatsapp_rust::wacore::iq::keepalive::KeepaliveSpec;
use whatsapp_rust::wacore::stanza::groups::{GroupNotificationAction, GroupParticipantInfo};
use whatsapp_rust::{Client, NodeFilter};

use super::events::{
    ConnectionExit, ConnectionReport, GroupChange, GroupNotification, PairedDevice, ReportKind,
    WaEvent,
};
use super::inbound::{DurableInbound, MessageSink};
use super::reconnect::{Ending, MAX_CONFLICT_RETRIES, Policy, Reconnects, Takeover, takeover_of};
use super::session_store::{SentMessages, SessionStore};
use super::{WaClient, credentials_db, credentials_dir};
use crate::settings::WhatsAppSettings;

/// How long stopping a client may take before its task is aborted.
const STOP_GRACE: Duration = Duration::from_secs(8);

static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// Where a connection's reports go (the owning session's mailbox).
pub type Reporter = Arc<dyn Fn(ConnectionReport) + Send + Sync>;

/// One running (or stopping) connection of a session.
struct Slot {
    generation: u64,
    stop: Arc<Notify>,
    done: watch::Receiver<bool>,
    abort: tokio::task::AbortHandle,
}

impl Slot {
    async fn stop_and_wait(mut self) {
        self.stop.notify_one();
        let finished = tokio::time::timeout(STOP_GRACE, self.done.wait_for(|d| *d)).await;
        if !matches!(finished, Ok(Ok(_))) {
            tracing::warn!(
                generation = self.generation,
                "client did not stop in time; aborting it"
            );
            self.abort.abort();
        }
    }
}

/// Per-session connection slots, shared by every incarnation of a session actor.
#[derive(Default)]
pub struct ClientSlots {
    slots: Mutex<HashMap<String, Slot>>,
}

impl ClientSlots {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the session's connection, if any, and waits until its client is gone.
    pub async fn stop(&self, session: &str) {
        let slot = self.lock().remove(session);
        if let Some(slot) = slot {
            slot.stop_and_wait().await;
        }
    }

    fn forget(&self, session: &str, generation: u64) {
        let mut slots = self.lock();
        if slots
            .get(session)
            .is_some_and(|s| s.generation == generation)
        {
            slots.remove(session);
        }
    }

    pub fn live_count(&self) -> usize {
        self.lock().len()
    }
}

/// What a connection needs from the process: where credentials live, how to reach WhatsApp,
/// the slots and the limiter on concurrent connection attempts.
#[derive(Clone)]
pub struct ConnectionEnv {
    pub sessions_dir: PathBuf,
    pub whatsapp: WhatsAppSettings,
    pub slots: Arc<ClientSlots>,
    pub connect_permits: Arc<Semaphore>,
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    pub sent_messages: SentMessages,
}

/// The session actor's handle on its current connection.
pub struct Connection {
    pub generation: u64,
    pub client: Option<WaClient>,
    stop: Arc<Notify>,
}

impl Connection {
    /// Asks the connection to stop; an `Exited` report follows once the client is gone.
    pub fn request_stop(&self) {
        self.stop.notify_one();
    }
}

/// Starts a new connection for `session`. The previous connection, if any, is stopped and
/// awaited by the new driver before it builds its client.
pub fn connect(
    env: &ConnectionEnv,
    session: &str,
    report: Reporter,
    sink: MessageSink,
) -> Connection {
    let generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
    let stop = Arc::new(Notify::new());
    let (done_tx, done_rx) = watch::channel(false);
    let previous = env.slots.lock().remove(session);
    let driver = Driver {
        env: env.clone(),
        session: session.to_owned(),
        generation,
        report,
        sink,
        stop: stop.clone(),
        flags: Arc::new(Flags::default()),
        permit: Arc::new(Mutex::new(None)),
        client: Arc::new(OnceLock::new()),
    };
    let task = tokio::spawn(async move {
        if let Some(previous) = previous {
            previous.stop_and_wait().await;
        }
        driver.run().await;
        let _ = done_tx.send(true);
    });
    env.slots.lock().insert(
        session.to_owned(),
        Slot {
            generation,
            stop: stop.clone(),
            done: done_rx,
            abort: task.abort_handle(),
        },
    );
    Connection {
        generation,
        client: None,
        stop,
    }
}

/// What the event forwarder tells the driver about the current connection.
#[derive(Default)]
struct Flags {
    pair_success: AtomicBool,
    logged_out: AtomicBool,
    replaced: AtomicBool,
    /// When the current connection logged in.
    logged_in_at: Mutex<Option<std::time::Instant>>,
    /// How WhatsApp ended the stream, when it said (429, 503).
    stream_ending: Mutex<Option<Ending>>,
}

type PermitCell = Arc<Mutex<Option<OwnedSemaphorePermit>>>;

fn release(permit: &PermitCell) {
    permit.lock().unwrap_or_else(|p| p.into_inner()).take();
}

struct Forwarder {
    generation: u64,
    report: Reporter,
    flags: Arc<Flags>,
    permit: PermitCell,
    client: Arc<OnceLock<WaClient>>,
}

impl Forwarder {
    fn send(&self, event: WaEvent) {
        (self.report)(ConnectionReport {
            generation: self.generation,
            kind: ReportKind::Event(event),
        });
    }
}

fn user_of(p: &GroupParticipantInfo) -> String {
    p.phone_number.as_ref().unwrap_or(&p.jid).to_non_ad_string()
}

fn users(list: &[GroupParticipantInfo]) -> Vec<String> {
    list.iter().map(user_of).collect()
}

/// whatsapp-rust's group notification in the project's terms.
fn group_notification(update: &GroupUpdate) -> GroupNotification {
    let change = match &update.action {
        GroupNotificationAction::Add { participants, .. } => {
            GroupChange::Added(users(participants))
        }
        GroupNotificationAction::Remove { participants, .. } => {
            GroupChange::Removed(users(participants))
        }
        GroupNotificationAction::Promote { participants } => {
            GroupChange::Promoted(users(participants))
        }
        GroupNotificationAction::Demote { participants } => {
            GroupChange::Demoted(users(participants))
        }
        GroupNotificationAction::Subject { subject, .. } => GroupChange::Subject(subject.clone()),
        GroupNotificationAction::Description { id, description } => GroupChange::Description {
            id: id.clone(),
            text: description.clone(),
        },
        GroupNotificationAction::Locked { .. } => GroupChange::Locked(true),
        GroupNotificationAction::Unlocked => GroupChange::Locked(false),
        GroupNotificationAction::Announce => GroupChange::Announce(true),
        GroupNotificationAction::NotAnnounce => GroupChange::Announce(false),
        GroupNotificationAction::CreatedMembershipRequests { requests, .. } => {
            GroupChange::JoinRequests {
                requesters: users(requests),
                revoked: false,
            }
        }
        GroupNotificationAction::MembershipApprovalRequest { .. } => GroupChange::JoinRequests {
            requesters: update
                .participant_pn
                .as_ref()
                .or(update.participant.as_ref())
                .map(|j| vec![j.to_non_ad_string()])
                .unwrap_or_default(),
            revoked: false,
        },
        GroupNotificationAction::RevokedMembershipRequests { participants } => {
            GroupChange::JoinRequests {
                requesters: participants.iter().map(|j| j.to_non_ad_string()).collect(),
                revoked: true,
            }
        }
        GroupNotificationAction::Create { raw } => GroupChange::Created {
            name: raw
                .get_optional_child("group")
                .and_then(|g| g.attrs().optional_string("subject").map(|s| s.to_string())),
        },
        _ => GroupChange::Other,
    };
    GroupNotification {
        group: update.group_jid.to_non_ad_string(),
        source: update
            .notification_id
            .as_ref()
            .map(|id| format!("{id}/{}", update.action_index)),
        author: update
            .participant_pn
            .as_ref()
            .or(update.participant.as_ref())
            .map(|j| j.to_non_ad_string()),
        timestamp: u64::try_from(update.timestamp.timestamp()).unwrap_or(0),
        change,
    }
}

impl EventHandler for Forwarder {
    fn handle_event(&self, event: Arc<Event>) {
        match &*event {
            Event::PairingQrCode(qr) => {
                release(&self.permit);
                self.send(WaEvent::Qr {
                    code: qr.code.clone(),
                    timeout: qr.timeout,
                });
            }
            Event::PairingQrCodesExhausted(_) => self.send(WaEvent::QrExhausted),
            Event::PairingCode(pc) => {
                release(&self.permit);
                self.send(WaEvent::PairCode {
                    code: pc.code.clone(),
                    timeout: pc.timeout,
                });
            }
            Event::PairSuccess(ps) => {
                self.flags.pair_success.store(true, Ordering::SeqCst);
                self.send(WaEvent::PairSuccess(PairedDevice {
                    phone: ps.id.user.to_string(),
                    lid: ps.lid.to_string(),
                    device: ps.id.device,
                    business_name: ps.business_name.clone(),
                }));
            }
            Event::PairError(pe) => self.send(WaEvent::PairError(pe.error.clone())),
            Event::Connected(_) => {
                release(&self.permit);
                *self
                    .flags
                    .logged_in_at
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
                let identity = self
                    .client
                    .get()
                    .map(WaClient::identity)
                    .unwrap_or_default();
                self.send(WaEvent::Connected(identity));
            }
            Event::Disconnected(d) => self.send(WaEvent::Disconnected(format!("{:?}", d.reason))),
            Event::LoggedOut(lo) => {
                release(&self.permit);
                self.flags.logged_out.store(true, Ordering::SeqCst);
                self.send(WaEvent::LoggedOut(format!("{:?}", lo.reason)));
            }
            Event::StreamError(e) => {
                let ending = match e.code.as_str() {
                    "429" => Some(Ending::RateLimited),
                    "503" => Some(Ending::Unavailable),
                    _ => None,
                };
                if ending.is_some() {
                    *self
                        .flags
                        .stream_ending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = ending;
                }
            }
            Event::StreamReplaced(_) => {
                // `replaced` or `conflict`: the driver tells them apart once the stream ended.
                self.flags.replaced.store(true, Ordering::SeqCst);
            }
            Event::GroupUpdate(update) => self.send(WaEvent::Group(group_notification(update))),
            Event::Receipt(receipt) => {
                if let Some(ack) = super::inbound::message_ack(receipt) {
                    self.send(WaEvent::Ack(ack));
                }
            }
            _ => {}
        }
    }
}

struct Driver {
    env: ConnectionEnv,
    session: String,
    generation: u64,
    report: Reporter,
    sink: MessageSink,
    stop: Arc<Notify>,
    flags: Arc<Flags>,
    permit: PermitCell,
    client: Arc<OnceLock<WaClient>>,
}

impl Driver {
    fn report(&self, kind: ReportKind) {
        (self.report)(ConnectionReport {
            generation: self.generation,
            kind,
        });
    }

    async fn build(&self) -> Result<(Bot, Arc<Client>), String> {
        let dir = credentials_dir(&self.env.sessions_dir, &self.session);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = tokio::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).await;
        }
        let db = credentials_db(&self.env.sessions_dir, &self.session);
        let db = db.to_str().ok_or("credential path is not UTF-8")?;
        let sqlite = SqliteStore::new(db)
            .await
            .map_err(|e| format!("opening credential store: {e}"))?;
        let backend = SessionStore::new(sqlite, self.env.sent_messages.clone(), &self.session);
        let wa = &self.env.whatsapp;
        let bot = Bot::builder()
            .with_backend(backend)
            .with_transport_factory(TokioWebSocketTransportFactory::new().with_url(wa.url.clone()))
            .with_http_client(UreqHttpClient::new())
            .with_runtime(TokioRuntime)
            .with_version(wa.version)
            .with_event_handler(Forwarder {
                generation: self.generation,
                report: self.report.clone(),
                flags: self.flags.clone(),
                permit: self.permit.clone(),
                client: self.client.clone(),
            })
            .with_inbound_durability_hook(DurableInbound {
                sink: self.sink.clone(),
            })
            .skip_history_sync()
            .build()
            .await
            .map_err(|e| format!("building the WhatsApp client: {e}"))?;
        let client = bot.client();
        // Reconnects are ours: backoff bounds and jitter come from the configuration.
        client.enable_auto_reconnect.store(false, Ordering::SeqCst);
        Ok((bot, client))
    }

    /// Returns once a logged-in link stopped answering: `link_check_failures` pings in a row
    /// without an answer within `link_check_timeout`. A socket can stay open while nothing
    /// gets through; requests would time out one by one until the client's own keepalive,
    /// which waits much longer, gave up.
    async fn watch_link(&self, client: &Arc<Client>) {
        let wa = &self.env.whatsapp;
        let mut missed = 0u32;
        loop {
            // After a miss, ask again right away: the bound is interval + failures × timeout.
            if missed == 0 {
                tokio::time::sleep(wa.link_check_interval).await;
            }
            let logged_in = self
                .flags
                .logged_in_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some();
            if !logged_in || !client.is_connected() {
                missed = 0;
                continue;
            }
            let ping = client.execute(KeepaliveSpec::with_timeout(wa.link_check_timeout));
            match tokio::time::timeout(wa.link_check_timeout + Duration::from_secs(1), ping).await {
                Ok(Ok(_)) => missed = 0,
                Ok(Err(IqError::Timeout)) | Err(_) => {
                    missed += 1;
                    tracing::debug!(session = %self.session, missed, "a ping went unanswered");
                }
                // The connection is going down on its own; its end is reported as usual.
                Ok(Err(_)) => missed = 0,
            }
            if missed >= wa.link_check_failures.max(1) {
                return;
            }
        }
    }

    async fn acquire_permit(&self) -> bool {
        let permits = self.env.connect_permits.clone();
        tokio::select! {
            permit = permits.acquire_owned() => {
                *self.permit.lock().unwrap_or_else(|p| p.into_inner()) = permit.ok();
                true
            }
            _ = self.stop.notified() => false,
        }
    }

    async fn run(self) {
        let exit = match self.build().await {
            Ok((bot, client)) => {
                let port = WaClient::new(
                    client.clone(),
                    self.env.whatsapp.request_timeout,
                    self.env.telemetry.clone(),
                );
                let _ = self.client.set(port.clone());
                self.report(ReportKind::ClientReady(port));
                let exit = self.connection_loop(bot, &client).await;
                // Flushes the device state (keys, pairing) to the credential store.
                let _ = tokio::time::timeout(STOP_GRACE, client.disconnect()).await;
                exit
            }
            Err(e) => {
                tracing::error!(session = %self.session, error = %e, "could not start WhatsApp client");
                ConnectionExit::BuildFailed(e)
            }
        };
        release(&self.permit);
        self.env.slots.forget(&self.session, self.generation);
        self.report(ReportKind::Exited(exit));
    }

    async fn connection_loop(&self, bot: Bot, client: &Arc<Client>) -> ConnectionExit {
        let settings = &self.env.whatsapp;
        let policy = Policy {
            min: settings.reconnect_backoff_min,
            max: settings.reconnect_backoff_max,
            healthy_after: settings.healthy_after,
        };
        let mut bot = Some(bot);
        let mut reconnects = Reconnects::default();
        // How WhatsApp ended the last stream, to tell `replaced` from `conflict`.
        let mut stream_errors = client.wait_for_node(NodeFilter::tag("stream:error"));
        let mut conflicts = 0u32;
        loop {
            if !self.acquire_permit().await {
                return ConnectionExit::Stopped;
            }
            // The first attempt runs inside the bot's own task (it wires the event handlers and
            // background workers); later attempts re-enter the same client's run loop.
            let mut attempt: Pin<Box<dyn Future<Output = ()> + Send + '_>> = match bot.take() {
                Some(bot) => Box::pin(bot.spawn()),
                None => Box::pin(client.run()),
            };
            let stopped = tokio::select! {
                _ = &mut attempt => false,
                _ = self.stop.notified() => {
                    let _ = tokio::time::timeout(STOP_GRACE, client.disconnect()).await;
                    let _ = tokio::time::timeout(STOP_GRACE, &mut attempt).await;
                    true
                }
                () = self.watch_link(client) => {
                    tracing::warn!(session = %self.session, "the link went silent: pings unanswered; reconnecting");
                    self.report(ReportKind::Event(WaEvent::Disconnected(
                        "the link went silent (pings unanswered)".into(),
                    )));
                    // Drops the transport; the attempt then ends like any dropped connection.
                    let _ = tokio::time::timeout(STOP_GRACE, client.reconnect()).await;
                    let _ = tokio::time::timeout(STOP_GRACE, &mut attempt).await;
                    false
                }
            };
            release(&self.permit);
            if stopped {
                return ConnectionExit::Stopped;
            }
            if self.flags.logged_out.load(Ordering::SeqCst) {
                return ConnectionExit::LoggedOut;
            }
            // One waiter at a time: it is replaced only once a stream error resolved it.
            let last_stream_error = match stream_errors.try_recv() {
                Ok(Some(node)) => {
                    stream_errors = client.wait_for_node(NodeFilter::tag("stream:error"));
                    Some(node)
                }
                Ok(None) => None,
                Err(_) => {
                    stream_errors = client.wait_for_node(NodeFilter::tag("stream:error"));
                    None
                }
            };
            if self.flags.replaced.swap(false, Ordering::SeqCst) {
                let takeover = last_stream_error
                    .as_deref()
                    .map_or(Takeover::Replaced, |node| {
                        let conflict = node
                            .get_optional_child("conflict")
                            .and_then(|c| c.attrs().optional_string("type").map(|t| t.to_string()));
                        let code = node.attrs().optional_string("code").map(|c| c.to_string());
                        takeover_of(conflict.as_deref(), code.as_deref())
                    });
                conflicts = match takeover {
                    Takeover::Replaced => {
                        self.report(ReportKind::Event(WaEvent::Replaced));
                        return ConnectionExit::Replaced;
                    }
                    Takeover::Conflict if conflicts >= MAX_CONFLICT_RETRIES => {
                        tracing::warn!(session = %self.session, conflicts, "stream conflicts keep coming; giving up");
                        self.report(ReportKind::Event(WaEvent::Replaced));
                        return ConnectionExit::Conflict;
                    }
                    Takeover::Conflict => {
                        tracing::warn!(session = %self.session, "stream conflict (409); retrying with backoff");
                        conflicts + 1
                    }
                };
            }
            if self.flags.pair_success.swap(false, Ordering::SeqCst) {
                // The server restarts the stream after pairing (515): log in right away.
                continue;
            }
            if client.shutdown_signal().is_fired() {
                return ConnectionExit::ClientClosed;
            }
            let up_for = self
                .flags
                .logged_in_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .map(|at| at.elapsed());
            let ending = self
                .flags
                .stream_ending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or(Ending::Dropped);
            if up_for.is_some_and(|up| up >= policy.healthy_after) {
                conflicts = 0;
            }
            let delay = reconnects.next_delay(&policy, up_for, ending);
            tracing::info!(session = %self.session, ?delay, ?ending, failures = reconnects.failures(), "reconnecting after a delay");
            self.report(ReportKind::Event(WaEvent::Reconnecting(delay)));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.notified() => return ConnectionExit::Stopped,
            }
        }
    }
}
