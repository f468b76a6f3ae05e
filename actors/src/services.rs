//! What every actor of the tree shares: settings, the store, the directory, the restart
//! intensity ledger, what connections need (client slots, the attempt limiter), the event log
//! and the metrics.

use std::sync::Arc;

use crate::directory::Directory;
use crate::event_log::EventLog;
use crate::intensity::Intensity;
use crate::settings::Settings;
use crate::store::Store;
use crate::telemetry::Telemetry;
use crate::whatsapp::connection::ConnectionEnv;

pub struct Services {
    pub settings: Settings,
    pub store: Store,
    pub directory: Directory,
    pub intensity: Intensity,
    pub connections: ConnectionEnv,
    pub events: Arc<EventLog>,
    pub telemetry: Arc<Telemetry>,
}

pub type Shared = Arc<Services>;
