//! The part of the configuration the actors need, already parsed and validated by the edge.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Root of everything persisted: `sled/` (snapshots) and `sessions/<id>/` (credentials).
    pub data_dir: PathBuf,
    /// How often sled's background flusher makes unacknowledged writes durable.
    pub snapshot_interval: Duration,
    /// sled page-cache budget; small by default so hundreds of sessions stay light.
    pub cache_capacity_bytes: u64,
    pub whatsapp: WhatsAppSettings,
    pub supervision: SupervisionSettings,
    pub groups: GroupSettings,
    pub events: EventSettings,
    pub webhooks: WebhookSettings,
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Upper bound for one delivery attempt.
    pub timeout: Duration,
    /// Deliveries in flight at once per webhook, over its sessions.
    pub max_in_flight: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

#[derive(Debug, Clone)]
pub struct EventSettings {
    /// Events older than this are dropped, delivered or not.
    pub retention: Duration,
}

#[derive(Debug, Clone)]
pub struct WhatsAppSettings {
    /// Websocket URL the client dials.
    pub url: String,
    /// Pinned WhatsApp Web version; pinning it keeps the client from fetching one at start.
    pub version: (u32, u32, u32),
    /// Upper bound for one WhatsApp round-trip (IQ, send, pairing request).
    pub request_timeout: Duration,
    pub reconnect_backoff_min: Duration,
    pub reconnect_backoff_max: Duration,
    /// A connection logged in for this long counts as healthy: the backoff starts over.
    pub healthy_after: Duration,
    /// At most this many sessions perform a connection attempt at the same time.
    pub connect_concurrency: usize,
    /// How often a logged-in link is pinged, how long a ping may go unanswered, and how many
    /// unanswered pings in a row make the link count as silent (then it is reconnected).
    pub link_check_interval: Duration,
    pub link_check_timeout: Duration,
    pub link_check_failures: u32,
}

#[derive(Debug, Clone)]
pub struct SupervisionSettings {
    /// More than this many failures of one session's actors within `restart_period`
    /// parks the session as `failed`.
    pub max_restarts: u32,
    pub restart_period: Duration,
    pub restart_backoff_min: Duration,
    pub restart_backoff_max: Duration,
    /// Upper bound for one request to an actor (covers its WhatsApp round-trip too).
    pub call_timeout: Duration,
    /// How long a graceful shutdown waits for actors and clients to stop.
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// A cached group is served without asking WhatsApp for this long.
    pub refresh_interval: Duration,
}

impl Settings {
    pub fn sled_dir(&self) -> PathBuf {
        self.data_dir.join("sled")
    }

    pub fn sessions_dir(&self) -> PathBuf {
        self.data_dir.join("sessions")
    }
}

/// Exponential backoff with ±20% jitter: `min * 2^attempt`, capped at `max`.
pub fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    use rand::Rng;
    let base = min
        .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
        .min(max);
    let jitter = rand::rng().random_range(0.8..=1.2);
    base.mul_f64(jitter).min(max)
}
