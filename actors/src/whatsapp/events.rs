//! What a session learns from its WhatsApp connection, in the project's own types: the port
//! translates whatsapp-rust's events into these, so nothing past the port sees the client's.

use std::time::Duration;

use super::WaClient;
pub use crate::model::{GroupChange, GroupNotification, MessageAck};

/// One event of a session's connection.
#[derive(Debug, Clone)]
pub enum WaEvent {
    /// A QR code to show; WhatsApp rotates it after `timeout`.
    Qr {
        code: String,
        timeout: Duration,
    },
    /// Nobody scanned any of the QR codes in time.
    QrExhausted,
    /// A pair code to type on the phone.
    PairCode {
        code: String,
        timeout: Duration,
    },
    PairSuccess(PairedDevice),
    PairError(String),
    /// Logged in; the identity is read from the client at that moment.
    Connected(Identity),
    Disconnected(String),
    LoggedOut(String),
    /// The connection dropped and is retried after this delay.
    Reconnecting(Duration),
    /// Another client logged in with this session's credentials (stream error `replaced`, or
    /// `conflict` that kept coming back).
    Replaced,
    /// A group notification (w:gp2).
    Group(GroupNotification),
    /// Someone received, read or played messages this account sent.
    Ack(MessageAck),
}

/// The device a pairing created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairedDevice {
    pub phone: String,
    pub lid: String,
    pub device: u16,
    pub business_name: String,
}

/// Who this session is on WhatsApp, as the client knows after login.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub phone: Option<String>,
    pub device: Option<u16>,
    pub lid: Option<String>,
    pub push_name: Option<String>,
}

/// What a connection reports to the session that owns it; `generation` tells the current
/// connection's reports from those of one being replaced.
#[derive(Debug)]
pub struct ConnectionReport {
    pub generation: u64,
    pub kind: ReportKind,
}

#[derive(Debug)]
pub enum ReportKind {
    /// The client is built; requests can be made through it once it is logged in.
    ClientReady(WaClient),
    Event(WaEvent),
    /// The connection is gone, and so is its client.
    Exited(ConnectionExit),
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionExit {
    Stopped,
    LoggedOut,
    /// The client shut itself down (e.g. nobody scanned any of its QR codes).
    ClientClosed,
    /// Another client took over this session's credentials; reconnecting would take them back.
    Replaced,
    /// WhatsApp kept answering `conflict` (409) after a few retries.
    Conflict,
    BuildFailed(String),
}
