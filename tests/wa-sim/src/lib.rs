//! wa-sim: a protocol-level WhatsApp server simulator for tests.
//!
//! It speaks the real wire protocol (Noise XX/XXfallback, binary XML stanzas) so an
//! unmodified `whatsapp-rust` client can pair (QR or pair code), log in, use groups and send
//! messages against it. A JSON control API on the same port plays the phone and injects
//! faults. The simulator only binds the loopback address it is given and never dials out.
//!
//! # In-process use
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let sim = wa_sim::start(wa_sim::SimConfig::default()).await?;
//! let ws = sim.ws_url(); // ws://127.0.0.1:PORT/ws/chat, for TokioWebSocketTransportFactory
//! let control = sim.control_url(); // http://127.0.0.1:PORT/control
//! # let _ = (ws, control);
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//! Groups also take WhatsApp's MEX (`w:mex`) group property update for `member_link_mode`
//! (answered with GraphQL JSON; members hear of it in a `type="mex"` notification).
//!
//! No stanza is dropped silently. Text that `wacore-binary` writes as a JID pair
//! (`Team @ Office`) is read back as text, as WhatsApp reads it; an IQ the sim cannot decode
//! gets `400 bad-request` and one it does not know `501`; any other stanza it cannot decode
//! or does not know ends the stream with `<stream:error><xml-not-well-formed/>`.
//!
//! Clients must be built with `whatsapp-rust`'s `danger-skip-cert-chain-verify` feature and
//! `with_version((2, 3000, x))`.
//!
//! # Control API (JSON, same port)
//!
//! | Request | Answer |
//! |---|---|
//! | `POST /control/scan-qr` `{"qr", "phone_number"?, "push_name"?}` | `{"phone_number","jid","lid"}`; 404 when no unpaired client has that QR's noise key |
//! | `POST /control/enter-pair-code` `{"phone_number","code"}` | `{"phone_number","jid","lid"}` once the companion finished; 404 when no pending code matches |
//! | `POST /control/accounts` `{"phone_number"?, "push_name"?}` | 201 `{"phone_number","jid","push_name"}`: a sim-only user; 409 if it exists |
//! | `GET /control/accounts/{phone}` | `{"phone_number","lid","push_name","sim_only","devices":[{"device","jid","connected"}]}` |
//! | `POST /control/accounts/{phone}/unlink` `{"device"?}` | `{"unlinked":[..]}`; live sockets get `<stream:error code="401"><conflict type="device_removed"/>` |
//! | `POST /control/accounts/{phone}/send` `{"to","kind"?,…}` | `{"id"}`: that account's phone sends a message to a number/JID or a group it is in (see below); 400 for a missing field or unknown kind, 404 for an unknown sender/recipient/group |
//! | `POST /control/accounts/{phone}/receipts` `{"to","ids":[..],"type"?:"delivered"\|"read"\|"played"\|"retry","chat"?}` | `{"success":true}`: that account's phone acknowledges messages from `to` (a number or JID); every device of `to` gets the `<receipt>` (live or queued); `chat` (a group JID) makes it a group receipt; `retry` (one id) asks the sender to send that message again, as a phone that could not decrypt it does; 404 for an unknown account or group |
//! | `GET /control/accounts/{phone}/devices/{device}/messages` | `{"unacked":["id",..],"acked":["id",..]}`: messages the companion holds unacknowledged (arrival order) and those it acknowledged (ack order, each once) |
//! | `GET /control/accounts/{phone}/messages` | `[{"from","chat","id","text","t","quoted"}]` received and decrypted by that account's phone (device 0); `quoted` is `{"id","participant","text"}` for a reply, else null |
//! | `POST /control/faults` | `{"kind":"drop_socket","phone_number","device"?}`, `{"kind":"stall","duration_ms","phone_number"?}`, `{"kind":"iq_error","xmlns","code","text"?,"count"?,"skip"?}` (the first `skip` IQs of `xmlns` pass), `{"kind":"stream_error","phone_number","device"?,"error":"conflict"\|"replaced"\|"device_removed"\|"<code>"}` -> `{"success":true,"affected"?}` |
//! | `DELETE /control/faults` | clears every fault |
//! | `GET /control/stats` | `{"connections","active_connections","handshakes","logins","pairings","unlinks","iqs":{"xmlns/child":n},"unknown_iqs","messages_routed","phone_messages_pending","messages_acked","group_queries":{"gid@g.us":n}}` |
//! | `GET /control/groups`, `GET /control/groups/{jid}` | group snapshots (subject, `"participants":[{"jid","lid","phone_number","role"}]`, settings `"locked"`, `"announce"`, `"ephemeral"`, `"membership_approval"`, `"member_add_mode"`, `"member_link_mode"` (`admin_link`\|`all_member_link`), `"addressing_mode"` (`pn`\|`lid`), invite code, `"join_requests":[{"jid","phone_number","request_time"}]`) |
//! | `POST /control/groups/{jid}/addressing` `{"mode":"lid"\|"pn"}` | `{"success":true,"addressing_mode"}`: metadata answers now name participants by LID with `phone_number` (and `creator_pn`, `s_o_pn`, `participant_pn`), `addressing_mode="lid"`; default `pn`. Notifications and message routing stay PN-addressed. 400 for another mode, 404 for an unknown group |
//! | `POST /control/groups/{jid}/join-requests` `{"phone_number"}` | `{"success":true}`: that account asks to join; admins' devices get `<created_membership_requests>`; 404 for an unknown group/account, 409 for a member |
//! | `DELETE /control/groups/{jid}/join-requests/{phone}` | `{"success":true}`: the request is withdrawn; admins (and the requester) get `<revoked_membership_requests>`; 404 when none is pending |
//!
//! Errors are `{"error":"<code>","message":"…"}` with a 4xx status.
//!
//! `send` kinds (`kind` defaults to `text`):
//! - `text`: `"text"`, `"quoted_id"`? (then an `extendedTextMessage` quoting that id)
//! - `image`, `video`, `audio`, `document`, `sticker`: `"mimetype"`?, `"size"`? (bytes),
//!   `"caption"`? (image, video, document), `"file_name"`? (document); the upload fields
//!   are plausible dummies nobody can download
//! - `location`: `"latitude"`, `"longitude"`, `"name"`?
//! - `contact`: `"display_name"`, `"vcard"`
//! - `reaction`: `"message_id"` (a message in the same chat), `"emoji"`
//!
//! The stanza `type` is `text`, `media` (with `mediatype` on the `<enc>`) or `reaction`.
//!
//! # Delivery
//!
//! Every `<message>` handed to a companion stays unacked until that device sends a
//! delivery-type receipt (none, `inactive`, `sender`, `peer_msg`, `read`, `played`) or an
//! `<ack class="message">` naming it. A connection gets nothing queued before it sends
//! `<active/>`; then the sim writes every unacked message not yet written to that
//! connection, then the other queued stanzas, all with `offline="1"` in arrival order,
//! then `<ib><offline count/></ib>`.

mod conn;
mod control;
mod dispatch;
mod groups;
mod iq;
mod messages;
mod mex;
mod nodes;
mod noise;
mod pairing;
mod phone;
mod presence;
mod server;
mod signal;
mod wire;
mod world;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How to run the simulator.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Loopback address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// How many QR refs a `pair-device` offers (the client rotates through them).
    pub qr_refs: usize,
    /// Delay between the client's `pair-device-sign` and the `515` stream restart.
    pub restart_delay: Duration,
    /// Whether the simulated primary phone shares its app-state key with new companions
    /// (ends the client's 10 s key-share wait after pairing).
    pub key_share: bool,
    /// Accept IK hellos made with the current server key in one round trip, like the real
    /// server. Off by default: reconnecting clients are answered with XXfallback.
    pub accept_ik: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            qr_refs: 6,
            restart_delay: Duration::from_millis(300),
            key_share: true,
            accept_ik: false,
        }
    }
}

/// A running simulator.
pub struct SimHandle {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR/ws/chat`, for `TokioWebSocketTransportFactory::with_url`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws/chat", self.addr)
    }

    /// `http://ADDR/control`, the base of the control API.
    pub fn control_url(&self) -> String {
        format!("http://{}/control", self.addr)
    }

    /// Stops listening and drops every connection.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    /// Dropping the handle stops the simulator too (without waiting for it).
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Binds `config.listen` (which must be a loopback address) and starts serving.
pub async fn start(config: SimConfig) -> std::io::Result<SimHandle> {
    if !config.listen.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "wa-sim only listens on loopback addresses, not {}",
                config.listen
            ),
        ));
    }
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let sim = Arc::new(world::Sim::new(
        config.restart_delay,
        config.qr_refs.max(1),
        config.key_share,
        config.accept_ik,
    ));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(server::run(sim, listener, shutdown_rx));
    tracing::info!(%addr, "wa-sim listening");
    Ok(SimHandle {
        addr,
        shutdown,
        task: Some(task),
    })
}
