//! The port to WhatsApp: builds a session's whatsapp-rust client over its SQLite credential
//! store, drives its connection loop (our own exponential backoff with jitter, bounded
//! concurrent attempts), and turns client events into [`SessionMsg::Wa`] messages.
//!
//! At most one live client per session, ever: every connection lives in a [`ClientSlots`]
//! entry that outlives the session actor, and a new connection first stops and awaits the
//! previous one (also when the previous owner crashed).

use ractor::ActorRef;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, watch};

use whatsapp_rust::Client;
use whatsapp_rust::bot::Bot;
use whatsapp_rust::http::UreqHttpClient;
use whatsapp_rust::store::SqliteStore;
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::types::events::{Event, EventHandler};
use whatsapp_rust::{IqError, TokioRuntime};

use crate::error::GatewayError;
use crate::model::SessionId;
use crate::services::Shared;
use crate::session::SessionMsg;
use crate::settings::backoff;

/// How long stopping a client may take before its task is aborted.
const STOP_GRACE: Duration = Duration::from_secs(8);

static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// What the session actor learns from its client.
#[derive(Debug, Clone)]
pub enum WaEvent {
    Qr {
        code: String,
        timeout: Duration,
    },
    QrExhausted,
    PairCode {
        code: String,
        timeout: Duration,
    },
    PairSuccess {
        phone: String,
        lid: String,
        device: u16,
        business_name: String,
    },
    PairError(String),
    Connected,
    Disconnected(String),
    LoggedOut(String),
    Reconnecting(Duration),
    /// A group notification (w:gp2) for the groups actor.
    GroupUpdate(Arc<Event>),
}

/// Where a session's client keeps its credentials.
pub fn credentials_dir(services: &Shared, id: &SessionId) -> PathBuf {
    services.settings.sessions_dir().join(id.as_str())
}

fn credentials_db(services: &Shared, id: &SessionId) -> PathBuf {
    credentials_dir(services, id).join("whatsapp.db")
}

/// Whether a credential store exists for the session (pairing data may be inside).
pub fn has_credentials(services: &Shared, id: &SessionId) -> bool {
    credentials_db(services, id).exists()
}

/// Deletes the session's credential store. Call only once its client is stopped.
pub async fn erase_credentials(services: &Shared, id: &SessionId) -> Result<(), GatewayError> {
    let dir = credentials_dir(services, id);
    match tokio::fs::remove_dir_all(&dir).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(GatewayError::Storage(format!(
            "could not erase credentials of session {id}: {e}"
        ))),
    }
}

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
    pub async fn stop(&self, id: &SessionId) {
        let slot = self.lock().remove(id.as_str());
        if let Some(slot) = slot {
            slot.stop_and_wait().await;
        }
    }

    fn forget(&self, id: &SessionId, generation: u64) {
        let mut slots = self.lock();
        if slots
            .get(id.as_str())
            .is_some_and(|s| s.generation == generation)
        {
            slots.remove(id.as_str());
        }
    }

    pub fn live_count(&self) -> usize {
        self.lock().len()
    }
}

/// The session actor's handle on its current connection.
pub struct Connection {
    pub generation: u64,
    pub client: Option<Arc<Client>>,
    stop: Arc<Notify>,
}

impl Connection {
    /// Asks the connection to stop; `SessionMsg::DriverExited` follows once the client is gone.
    pub fn request_stop(&self) {
        self.stop.notify_one();
    }
}

/// Starts a new connection for the session. The previous connection, if any, is stopped and
/// awaited by the new driver before it builds its client.
pub fn connect(services: &Shared, id: &SessionId, actor: ActorRef<SessionMsg>) -> Connection {
    let generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
    let stop = Arc::new(Notify::new());
    let (done_tx, done_rx) = watch::channel(false);
    let previous = services.slots.lock().remove(id.as_str());
    let driver = Driver {
        services: services.clone(),
        id: id.clone(),
        generation,
        actor,
        stop: stop.clone(),
        flags: Arc::new(Flags::default()),
        permit: Arc::new(Mutex::new(None)),
    };
    let task = tokio::spawn(async move {
        if let Some(previous) = previous {
            previous.stop_and_wait().await;
        }
        driver.run().await;
        let _ = done_tx.send(true);
    });
    services.slots.lock().insert(
        id.as_str().to_owned(),
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
    connected: AtomicBool,
    logged_out: AtomicBool,
}

type PermitCell = Arc<Mutex<Option<OwnedSemaphorePermit>>>;

fn release(permit: &PermitCell) {
    permit.lock().unwrap_or_else(|p| p.into_inner()).take();
}

struct Forwarder {
    generation: u64,
    actor: ActorRef<SessionMsg>,
    flags: Arc<Flags>,
    permit: PermitCell,
}

impl Forwarder {
    fn send(&self, event: WaEvent) {
        // A dead actor means its connection is being replaced; the driver notices on its own.
        let _ = self.actor.cast(SessionMsg::Wa(self.generation, event));
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
                self.send(WaEvent::PairSuccess {
                    phone: ps.id.user.to_string(),
                    lid: ps.lid.to_string(),
                    device: ps.id.device,
                    business_name: ps.business_name.clone(),
                });
            }
            Event::PairError(pe) => self.send(WaEvent::PairError(pe.error.clone())),
            Event::Connected(_) => {
                release(&self.permit);
                self.flags.connected.store(true, Ordering::SeqCst);
                self.send(WaEvent::Connected);
            }
            Event::Disconnected(d) => self.send(WaEvent::Disconnected(format!("{:?}", d.reason))),
            Event::LoggedOut(lo) => {
                release(&self.permit);
                self.flags.logged_out.store(true, Ordering::SeqCst);
                self.send(WaEvent::LoggedOut(format!("{:?}", lo.reason)));
            }
            Event::GroupUpdate(_) => self.send(WaEvent::GroupUpdate(event.clone())),
            _ => {}
        }
    }
}

struct Driver {
    services: Shared,
    id: SessionId,
    generation: u64,
    actor: ActorRef<SessionMsg>,
    stop: Arc<Notify>,
    flags: Arc<Flags>,
    permit: PermitCell,
}

/// Why a driver ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverExit {
    Stopped,
    LoggedOut,
    /// The client shut itself down (e.g. nobody scanned any of its QR codes).
    ClientClosed,
    BuildFailed(String),
}

impl Driver {
    async fn build(&self) -> Result<(Bot, Arc<Client>), String> {
        let dir = credentials_dir(&self.services, &self.id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = tokio::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).await;
        }
        let db = credentials_db(&self.services, &self.id);
        let db = db.to_str().ok_or("credential path is not UTF-8")?;
        let backend = SqliteStore::new(db)
            .await
            .map_err(|e| format!("opening credential store: {e}"))?;
        let wa = &self.services.settings.whatsapp;
        let bot = Bot::builder()
            .with_backend(backend)
            .with_transport_factory(TokioWebSocketTransportFactory::new().with_url(wa.url.clone()))
            .with_http_client(UreqHttpClient::new())
            .with_runtime(TokioRuntime)
            .with_version(wa.version)
            .with_event_handler(Forwarder {
                generation: self.generation,
                actor: self.actor.clone(),
                flags: self.flags.clone(),
                permit: self.permit.clone(),
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

    async fn acquire_permit(&self) -> bool {
        let permits = self.services.connect_permits.clone();
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
                let _ = self
                    .actor
                    .cast(SessionMsg::ClientReady(self.generation, client.clone()));
                let exit = self.connection_loop(bot, &client).await;
                // Flushes the device state (keys, pairing) to the credential store.
                let _ = tokio::time::timeout(STOP_GRACE, client.disconnect()).await;
                exit
            }
            Err(e) => {
                tracing::error!(session = %self.id, error = %e, "could not start WhatsApp client");
                DriverExit::BuildFailed(e)
            }
        };
        release(&self.permit);
        self.services.slots.forget(&self.id, self.generation);
        let _ = self
            .actor
            .cast(SessionMsg::DriverExited(self.generation, exit));
    }

    async fn connection_loop(&self, bot: Bot, client: &Arc<Client>) -> DriverExit {
        let settings = &self.services.settings.whatsapp;
        let mut bot = Some(bot);
        let mut failures: u32 = 0;
        loop {
            if !self.acquire_permit().await {
                return DriverExit::Stopped;
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
            };
            release(&self.permit);
            if stopped {
                return DriverExit::Stopped;
            }
            if self.flags.logged_out.load(Ordering::SeqCst) {
                return DriverExit::LoggedOut;
            }
            if self.flags.pair_success.swap(false, Ordering::SeqCst) {
                // The server restarts the stream after pairing (515): log in right away.
                continue;
            }
            if client.shutdown_signal().is_fired() {
                return DriverExit::ClientClosed;
            }
            if self.flags.connected.swap(false, Ordering::SeqCst) {
                failures = 0;
            }
            let delay = backoff(
                failures,
                settings.reconnect_backoff_min,
                settings.reconnect_backoff_max,
            );
            failures = failures.saturating_add(1);
            let _ = self.actor.cast(SessionMsg::Wa(
                self.generation,
                WaEvent::Reconnecting(delay),
            ));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.notified() => return DriverExit::Stopped,
            }
        }
    }
}

/// Maps a failed WhatsApp request onto the domain error.
pub fn map_iq_error(e: &IqError, timeout: Duration) -> GatewayError {
    match e {
        IqError::Timeout => GatewayError::WhatsAppTimeout(timeout),
        IqError::NotConnected | IqError::Disconnected(_) | IqError::InternalChannelClosed => {
            GatewayError::NotConnected("the connection to WhatsApp dropped".into())
        }
        IqError::ServerError {
            code,
            text,
            backoff,
            ..
        } => map_server_error(
            *code,
            text,
            backoff.map(|s| Duration::from_secs(u64::from(s))),
        ),
        other => GatewayError::WhatsApp {
            code: None,
            message: other.to_string(),
        },
    }
}

/// Maps a WhatsApp error code onto the domain error.
pub fn map_server_error(code: u16, text: &str, retry_after: Option<Duration>) -> GatewayError {
    match code {
        401 | 403 => GatewayError::NotGroupAdmin(format!("{code} {text}")),
        404 => GatewayError::GroupNotFound,
        429 => GatewayError::RateLimited {
            retry_after: retry_after.or(Some(Duration::from_secs(60))),
        },
        _ => GatewayError::WhatsApp {
            code: Some(code),
            message: text.to_owned(),
        },
    }
}
