//! wagate's core: the supervision tree of WhatsApp sessions, their persistence, and the port
//! to WhatsApp (`whatsapp-rust`). It knows nothing about HTTP; the edge talks to it through
//! [`Gateway`].
//!
//! # The supervision tree
//!
//! ```text
//! supervisor                       restores every session at start, restarts failed sessions
//! ├── session:<id>                 owns the one whatsapp-rust client, status state machine
//! │   ├── session:<id>/events      the session's durable event log (the one writer)
//! │   ├── session:<id>/groups      group operations, group metadata cache (persisted)
//! │   └── session:<id>/invites     invite links, join by code, invite info
//! └── webhooks                     webhook registry; one delivery worker per (webhook, session)
//! ```
//!
//! Restarts follow OTP's `one_for_one` with restart intensity: a crashed actor is rebuilt from
//! its last sled snapshot after a backoff; when a session's actors fail more than
//! `max_restarts` times within `restart_period`, the session is parked as `failed` (its actor
//! stays up, holding no client and no children) until `connect` revives it. A session never
//! touches another session's actors.
//!
//! # Layout
//!
//! - [`gateway`]: the façade the edge calls; one typed method per operation, always with a
//!   timeout. Cached group reads are served from a published snapshot, without a message.
//! - [`supervisor`], [`session`], [`groups`], [`invites`], [`events`], [`webhooks`]: one file per
//!   actor, its message enum beside it. Actor files hold message handling; the logic they apply is in plain modules:
//! - [`status`] (the session status machine), [`intensity`] (restart intensity),
//!   [`group_cache`] (the group cache, notification effects, participant results).
//! - [`whatsapp`]: the WhatsApp port, the only code that imports whatsapp-rust: the connection
//!   loop, every operation with its timeout and per-operation error meanings, and the client's
//!   events as the project's own [`whatsapp::WaEvent`]s.
//! - [`events`] (actor), [`event_log`] (the sled log: numbering, idempotency keys, retention,
//!   head watches), [`event_data`] (what each WhatsApp happening becomes, per the contract) and
//!   [`event_stream`] (replay-then-live following for SSE).
//! - [`webhooks`] (actor and its delivery workers), [`webhook_store`] (registrations and
//!   cursors in sled), [`webhook_delivery`] (signing, retry meaning and backoff, URL checks).
//! - [`telemetry`]: the Prometheus metrics, from `prometheus-client`.
//! - [`store`]: the sled snapshots (session records, group and invite caches).
//! - [`directory`]: the live tree's bookkeeping (untyped cells and kinds, served to admins) and
//!   each session's [`directory::SessionLink`].
//! - [`model`]: domain types (`SessionId`, `SessionStatus`, views) parsed once at the edge.

pub mod directory;
pub mod error;
pub mod event_data;
pub mod event_log;
pub mod event_stream;
pub mod events;
pub mod gateway;
pub mod group_cache;
pub mod groups;
pub mod intensity;
pub mod invites;
pub mod model;
pub mod session;
pub mod settings;
pub mod status;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod webhook_delivery;
pub mod webhook_store;
pub mod webhooks;
pub mod whatsapp;

mod services;

pub use error::GatewayError;
pub use gateway::Gateway;
pub use settings::Settings;

/// Seconds since the Unix epoch; the contract's time unit.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
