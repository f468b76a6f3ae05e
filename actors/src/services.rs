//! What every actor of the tree shares: settings, the store, the directory, the restart
//! intensity ledger and what connections need (client slots, the attempt limiter).

use std::sync::Arc;

use crate::directory::Directory;
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
}

pub type Shared = Arc<Services>;
