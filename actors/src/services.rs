//! What every actor of the tree shares: settings, the store, the directory, the restart
//! intensity ledger, what connections need (client slots, the attempt limiter), the event log
//! and its counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::directory::Directory;
use crate::event_log::EventLog;
use crate::intensity::Intensity;
use crate::settings::Settings;
use crate::store::Store;
use crate::whatsapp::connection::ConnectionEnv;

pub struct Services {
    pub settings: Settings,
    pub store: Store,
    pub directory: Directory,
    pub intensity: Intensity,
    pub connections: ConnectionEnv,
    pub events: Arc<EventLog>,
    pub metrics: EventCounters,
}

/// Event counters for `/metrics`.
#[derive(Default)]
pub struct EventCounters {
    pub appended: AtomicU64,
    pub delivered: AtomicU64,
    pub failed_attempts: AtomicU64,
}

impl EventCounters {
    pub fn events_appended(&self, n: u64) {
        self.appended.fetch_add(n, Ordering::Relaxed);
    }
}

pub type Shared = Arc<Services>;
