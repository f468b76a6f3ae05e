//! What every actor of the tree shares: settings, the store, the directory, the restart
//! intensity ledger, the per-session client slots and the connection-attempt limiter.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::directory::Directory;
use crate::settings::Settings;
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
    /// Records one failure; returns true while the session stays within its intensity.
    pub fn record(&self, session: &str, settings: &Settings) -> bool {
        let now = Instant::now();
        let period = settings.supervision.restart_period;
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let log = map.entry(session.to_owned()).or_default();
        while log.front().is_some_and(|t| now.duration_since(*t) > period) {
            log.pop_front();
        }
        log.push_back(now);
        log.len() <= settings.supervision.max_restarts as usize
    }

    /// How many failures are in the current window (drives restart backoff).
    pub fn recent(&self, session: &str) -> u32 {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.get(session).map(|l| l.len() as u32).unwrap_or(0)
    }

    pub fn clear(&self, session: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(session);
    }
}
