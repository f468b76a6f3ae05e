//! What every actor of the tree shares: settings, the store, the directory, the restart
//! intensity ledger, the per-session client slots and the connection-attempt limiter.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::directory::Directory;
use crate::settings::{Settings, backoff};
use crate::store::Store;
use crate::whatsapp::ClientSlots;

pub struct Services {
    pub settings: Settings,
    pub store: Store,
    pub directory: Directory,
    pub intensity: Intensity,
    pub slots: ClientSlots,
    /// Bounds concurrent connection attempts so a restart with hundreds of sessions does not
    /// stampede WhatsApp.
    pub connect_permits: Arc<tokio::sync::Semaphore>,
}

pub type Shared = Arc<Services>;

/// OTP-style restart intensity per session: failures of a session's actors within the
/// configured period.
#[derive(Default)]
pub struct Intensity {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Intensity {
    /// Records one failure. While the session stays within its intensity, returns how long to
    /// wait before the restart (exponential in the failures of the window); `None` once the
    /// intensity is exceeded.
    pub fn record(&self, session: &str, settings: &Settings) -> Option<Duration> {
        let now = Instant::now();
        let sup = &settings.supervision;
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let log = map.entry(session.to_owned()).or_default();
        while log
            .front()
            .is_some_and(|t| now.duration_since(*t) > sup.restart_period)
        {
            log.pop_front();
        }
        log.push_back(now);
        let recent = log.len() as u32;
        (recent <= sup.max_restarts).then(|| {
            backoff(
                recent.saturating_sub(1),
                sup.restart_backoff_min,
                sup.restart_backoff_max,
            )
        })
    }

    pub fn clear(&self, session: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(session);
    }
}
