//! The simulated world: accounts (phones), their linked companion devices, sim-only users,
//! live connections, pending pairings, injected faults and counters. One `std` mutex guards
//! it; it is never held across an `.await`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use wacore_binary::builder::NodeBuilder;
use wacore_binary::node::Node;
use wacore_libsignal::protocol::KeyPair;

use crate::groups::Group;
use crate::noise::ServerIdentity;
use crate::signal::SignalEndpoint;

/// What a connection's writer task is asked to do.
#[derive(Debug)]
pub enum Outbound {
    /// Encrypt and send one node.
    Node(Box<Node>),
    /// Send a websocket close frame and stop writing.
    Close,
}

/// A companion's prekey material as it registered or uploaded it.
#[derive(Clone, Debug)]
pub struct DeviceKeys {
    pub registration_id: u32,
    pub identity: [u8; 32],
    pub signed_prekey_id: u32,
    pub signed_prekey: [u8; 32],
    pub signed_prekey_signature: Vec<u8>,
    pub one_time: VecDeque<(u32, [u8; 32])>,
}

/// A linked companion device (id >= 1).
#[derive(Debug)]
pub struct Device {
    pub id: u16,
    pub noise_pub: [u8; 32],
    pub keys: DeviceKeys,
    pub key_index: u32,
    /// `ADVSignedDeviceIdentity` the device returned in `pair-device-sign`.
    pub device_identity: Option<Vec<u8>>,
    /// The primary still owes this device its app-state key share.
    pub needs_key_share: bool,
    /// The client has no push name, so every login takes its slow initial-sync path;
    /// the primary re-shares its key each time to keep that path short.
    pub reshare_keys_on_login: bool,
    /// Stanzas other than messages that arrived while the device was offline, delivered at
    /// its next login (after the unacked messages).
    pub offline_queue: Vec<Node>,
    /// Messages the device has not acknowledged yet, in arrival order. WhatsApp keeps a
    /// message until the device acks it and replays it on every new connection.
    pub unacked: Vec<Unacked>,
    /// Ids of the messages this device acknowledged, in ack order.
    pub acked: Vec<String>,
    pub logins: u64,
}

/// A `<message>` held for a companion until it acks it. `from` and `participant` are
/// normalised ([`World::ack_party`]) so an ack naming the sender by device JID or LID still
/// matches.
#[derive(Debug)]
pub struct Unacked {
    pub id: String,
    pub from: String,
    pub participant: Option<String>,
    pub node: Node,
    /// The connection it was last written to: it is sent again only on a newer one.
    pub sent_on: Option<u64>,
}

/// A message a simulated phone received and decrypted.
#[derive(Clone, Debug, serde::Serialize)]
pub struct InboxMessage {
    pub from: String,
    pub chat: String,
    pub id: String,
    pub text: String,
    pub t: u64,
    /// The message this one quotes, when it is a reply.
    pub quoted: Option<QuotedMessage>,
}

/// What a reply says of the message it quotes: its id, its sender and its text.
#[derive(Clone, Debug, serde::Serialize)]
pub struct QuotedMessage {
    pub id: String,
    pub participant: Option<String>,
    pub text: Option<String>,
}

/// An account: a phone number with its primary phone (device 0) and companions.
pub struct Account {
    pub phone: String,
    pub lid: String,
    pub push_name: String,
    /// Created through the control API; has no companion devices of its own.
    pub sim_only: bool,
    /// The primary's identity key, which also signs ADV identities (the "account key").
    pub account_key: KeyPair,
    /// The primary phone's Signal state.
    pub primary: Arc<tokio::sync::Mutex<SignalEndpoint>>,
    pub raw_id: u32,
    pub next_key_index: u32,
    pub next_device: u16,
    pub devices: BTreeMap<u16, Device>,
    /// Unlinked devices: id -> noise key. They can never log in again.
    pub removed: BTreeMap<u16, [u8; 32]>,
    /// Messages the primary phone received (decrypted).
    pub inbox: Vec<InboxMessage>,
    /// Ids of the messages the primary phone sent (for quotes and reactions that name them).
    pub sent: Vec<String>,
    pub key_index_ts: u64,
    /// The app-state sync key the primary shares with its companions.
    pub app_state_key_id: Vec<u8>,
    pub app_state_key: [u8; 32],
}

impl Account {
    pub fn jid(&self) -> String {
        format!("{}@s.whatsapp.net", self.phone)
    }

    /// Key indexes of the currently linked companions.
    pub fn valid_key_indexes(&self) -> Vec<u32> {
        self.devices.values().map(|d| d.key_index).collect()
    }
}

/// Registration data a not-yet-paired client sent in its ClientPayload.
#[derive(Clone, Debug)]
pub struct Registration {
    pub keys: DeviceKeys,
    pub push_name: String,
}

/// Where a connection stands.
#[derive(Clone, Debug)]
pub enum ConnState {
    /// Unregistered client waiting to be paired.
    Registering(Box<Registration>),
    /// A device that logged in.
    LoggedIn { phone: String, device: u16 },
    /// Refused or finished; only waiting to close.
    Closing,
}

/// A live websocket connection after its Noise handshake.
pub struct ConnEntry {
    pub id: u64,
    pub out: mpsc::UnboundedSender<Outbound>,
    pub kill: watch::Sender<bool>,
    pub noise_pub: [u8; 32],
    pub state: ConnState,
    /// The device left passive mode (`<active/>`) and had its offline backlog drained:
    /// WhatsApp writes nothing queued-by-nature to a connection before that.
    pub active: bool,
}

impl ConnEntry {
    pub fn send(&self, node: Node) {
        let _ = self.out.send(Outbound::Node(Box::new(node)));
    }
}

/// What the phone's side of a pair-code exchange is waiting for.
pub struct CodeAttempt {
    pub code: String,
    pub primary_ephemeral: KeyPair,
    pub companion_ephemeral: [u8; 32],
    pub phone: String,
    pub push_name: Option<String>,
    pub done: oneshot::Sender<Result<crate::pairing::Linked, String>>,
}

/// A pair code the client announced with `companion_hello`.
pub struct PendingCode {
    pub conn_id: u64,
    pub phone: String,
    pub wrapped_companion_ephemeral: Vec<u8>,
    pub pairing_ref: Vec<u8>,
    pub created: Instant,
    pub attempt: Option<CodeAttempt>,
}

/// A `pair-success` we sent and whose `pair-device-sign` we await.
pub struct PendingPair {
    pub conn_id: u64,
    pub phone: String,
    pub device: u16,
}

/// Injected faults.
#[derive(Default)]
pub struct Faults {
    pub stall_all_until: Option<Instant>,
    pub stall_until: HashMap<String, Instant>,
    pub iq_errors: Vec<IqErrorFault>,
}

pub struct IqErrorFault {
    pub xmlns: String,
    pub code: u16,
    pub text: String,
    /// IQs of `xmlns` answered normally before the fault strikes.
    pub skip: u32,
    pub remaining: u32,
}

/// Counters reported by `GET /control/stats`.
#[derive(Default, Clone, serde::Serialize)]
pub struct Stats {
    pub connections: u64,
    pub active_connections: u64,
    pub handshakes: u64,
    pub logins: u64,
    pub pairings: u64,
    pub unlinks: u64,
    pub iqs: BTreeMap<String, u64>,
    pub unknown_iqs: u64,
    pub messages_routed: u64,
    /// Messages handed to simulated phones (device 0) that they have not yet decrypted into
    /// their inboxes (or failed to).
    pub phone_messages_pending: u64,
    /// Messages companion devices acknowledged (delivery receipt or `<ack class="message">`).
    pub messages_acked: u64,
    pub group_queries: BTreeMap<String, u64>,
}

pub struct World {
    pub accounts: BTreeMap<String, Account>,
    /// LID user -> phone.
    pub lids: HashMap<String, String>,
    pub conns: HashMap<u64, ConnEntry>,
    pub pending_codes: Vec<PendingCode>,
    pub pending_pairs: HashMap<String, PendingPair>,
    pub groups: BTreeMap<String, Group>,
    pub faults: Faults,
    pub stats: Stats,
    /// Devices that announced themselves available.
    pub available: HashSet<(String, u16)>,
    pub last_seen: HashMap<String, u64>,
    /// Account -> devices subscribed to its presence.
    pub presence_subscribers: HashMap<String, HashSet<(String, u16)>>,
    /// Each simulated phone's queue of messages to decrypt, worked through in routing order.
    pub phone_queues: HashMap<String, tokio::sync::mpsc::UnboundedSender<PhoneJob>>,
    next_conn_id: u64,
    next_serial: u64,
}

/// A simulated phone's handling of one routed message.
pub type PhoneJob = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Shared simulator state.
pub struct Sim {
    pub server: ServerIdentity,
    pub restart_delay: Duration,
    pub qr_refs: usize,
    pub key_share: bool,
    pub accept_ik: bool,
    world: Mutex<World>,
}

impl Sim {
    pub fn new(restart_delay: Duration, qr_refs: usize, key_share: bool, accept_ik: bool) -> Self {
        Self {
            server: ServerIdentity::generate(),
            restart_delay,
            qr_refs,
            key_share,
            accept_ik,
            world: Mutex::new(World {
                accounts: BTreeMap::new(),
                lids: HashMap::new(),
                conns: HashMap::new(),
                pending_codes: Vec::new(),
                pending_pairs: HashMap::new(),
                groups: BTreeMap::new(),
                faults: Faults::default(),
                stats: Stats::default(),
                available: HashSet::new(),
                last_seen: HashMap::new(),
                presence_subscribers: HashMap::new(),
                phone_queues: HashMap::new(),
                next_conn_id: 1,
                next_serial: 1,
            }),
        }
    }

    /// Locks the world. A poisoned lock is recovered: the state stays usable for tests.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl World {
    pub fn next_conn_id(&mut self) -> u64 {
        let id = self.next_conn_id;
        self.next_conn_id += 1;
        id
    }

    /// A process-unique serial for ids (stanza ids, refs, generated numbers).
    pub fn serial(&mut self) -> u64 {
        let s = self.next_serial;
        self.next_serial += 1;
        s
    }

    pub fn count_iq(&mut self, key: String) {
        *self.stats.iqs.entry(key).or_default() += 1;
    }

    /// Resolves a user part that may be a phone number or a LID to the account phone.
    pub fn resolve_user(&self, user: &str, is_lid: bool) -> Option<String> {
        if is_lid {
            return self.lids.get(user).cloned();
        }
        self.accounts.contains_key(user).then(|| user.to_string())
    }

    /// Creates an account, or returns the existing one for `phone`.
    pub fn ensure_account(
        &mut self,
        phone: Option<&str>,
        push_name: Option<&str>,
        sim_only: bool,
    ) -> String {
        if let Some(phone) = phone
            && let Some(account) = self.accounts.get_mut(phone)
        {
            if let Some(name) = push_name
                && !name.is_empty()
            {
                account.push_name = name.to_string();
            }
            return phone.to_string();
        }
        let phone = match phone {
            Some(p) => p.to_string(),
            None => loop {
                let candidate = format!("6281{:09}", self.serial() * 7919 % 1_000_000_000);
                if !self.accounts.contains_key(&candidate) {
                    break candidate;
                }
            },
        };
        let lid = loop {
            let candidate = format!(
                "{}",
                rand::random_range(100_000_000_000_000u64..200_000_000_000_000)
            );
            if !self.lids.contains_key(&candidate) {
                break candidate;
            }
        };
        let account_key = KeyPair::generate(&mut rand::rng());
        let primary = SignalEndpoint::new(account_key.clone());
        let push_name = push_name
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("User {}", &phone[phone.len().saturating_sub(4)..]));
        self.lids.insert(lid.clone(), phone.clone());
        self.accounts.insert(
            phone.clone(),
            Account {
                phone: phone.clone(),
                lid,
                push_name,
                sim_only,
                account_key,
                primary: Arc::new(tokio::sync::Mutex::new(primary)),
                raw_id: rand::random_range(1..u32::MAX),
                next_key_index: 1,
                next_device: 1,
                devices: BTreeMap::new(),
                removed: BTreeMap::new(),
                inbox: Vec::new(),
                sent: Vec::new(),
                key_index_ts: crate::signal::now_secs(),
                app_state_key_id: rand::random::<[u8; 6]>().to_vec(),
                app_state_key: rand::random(),
            },
        );
        phone
    }

    /// Live connections of a logged-in device.
    pub fn device_conns(&self, phone: &str, device: u16) -> Vec<&ConnEntry> {
        self.conns
            .values()
            .filter(|c| matches!(&c.state, ConnState::LoggedIn { phone: p, device: d } if p == phone && *d == device))
            .collect()
    }

    /// Connections of a device that are past their offline drain and take stanzas live.
    fn active_conns(&self, phone: &str, device: u16) -> Vec<&ConnEntry> {
        self.device_conns(phone, device)
            .into_iter()
            .filter(|c| c.active)
            .collect()
    }

    /// Sends `node` to a companion device now, or queues it for its next login. A
    /// `<message>` is also kept as unacked until the device acknowledges it.
    pub fn deliver(&mut self, phone: &str, device: u16, node: Node) {
        let ack_key = (node.tag == "message")
            .then(|| self.ack_key(&node))
            .flatten();
        let mut live = Vec::new();
        for conn in self.active_conns(phone, device) {
            conn.send(node.clone());
            live.push(conn.id);
        }
        let Some(d) = self
            .accounts
            .get_mut(phone)
            .and_then(|a| a.devices.get_mut(&device))
        else {
            return;
        };
        match ack_key {
            Some((id, from, participant)) => d.unacked.push(Unacked {
                id,
                from,
                participant,
                node,
                sent_on: live.first().copied(),
            }),
            None if live.is_empty() => d.offline_queue.push(node),
            None => {}
        }
    }

    /// Who a message stanza must be acked by: its id, its normalised `from` and
    /// `participant`. `None` when it has no id or sender (it cannot be acked then).
    fn ack_key(&self, node: &Node) -> Option<(String, String, Option<String>)> {
        let id = crate::nodes::attr(node, "id")?;
        let from = self.ack_party(&crate::nodes::attr(node, "from")?);
        let participant = crate::nodes::attr(node, "participant").map(|p| self.ack_party(&p));
        Some((id, from, participant))
    }

    /// A JID reduced to what identifies the chat or sender regardless of device and
    /// addressing: `gid@g.us` for groups, the account phone for users (LIDs resolved).
    pub fn ack_party(&self, jid: &str) -> String {
        if jid.ends_with("@g.us") {
            return jid.to_string();
        }
        match crate::iq::split_jid(jid) {
            Some((user, _, is_lid)) => self.resolve_user(&user, is_lid).unwrap_or(user),
            None => jid.to_string(),
        }
    }

    /// A device acknowledged the messages `ids` it got from `from` (and `participant` in
    /// groups): they leave its unacked list. Returns how many messages were acked; acking
    /// something already acked (or never sent) changes nothing.
    pub fn ack_messages(
        &mut self,
        phone: &str,
        device: u16,
        from: &str,
        participant: Option<&str>,
        ids: &[String],
    ) -> usize {
        let from = self.ack_party(from);
        let participant = participant.map(|p| self.ack_party(p));
        let Some(d) = self
            .accounts
            .get_mut(phone)
            .and_then(|a| a.devices.get_mut(&device))
        else {
            return 0;
        };
        let mut acked = 0;
        for id in ids {
            let matches = |u: &Unacked| {
                u.id == *id
                    && u.from == from
                    // A group ack names the sender; in 1:1 chats there is nothing to compare.
                    && (participant.is_none()
                        || u.participant.is_none()
                        || u.participant == participant)
            };
            if !d.unacked.iter().any(matches) {
                continue;
            }
            // A retried message can be held twice under one id: one ack settles both.
            d.unacked.retain(|u| !matches(u));
            d.acked.push(id.clone());
            acked += 1;
        }
        self.stats.messages_acked += acked as u64;
        acked
    }

    /// Marks a freshly active connection and writes what its device missed: first every
    /// unacked message not yet written to this connection, then the queued stanzas, all
    /// marked `offline="1"` in arrival order, then the end-of-offline marker. Done under
    /// the world lock so nothing delivered meanwhile can overtake the backlog.
    pub fn drain_offline(&mut self, conn_id: u64, phone: &str, device: u16) {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        conn.active = true;
        let out = conn.out.clone();
        let mut backlog = Vec::new();
        if let Some(d) = self
            .accounts
            .get_mut(phone)
            .and_then(|a| a.devices.get_mut(&device))
        {
            for held in d.unacked.iter_mut() {
                if held.sent_on == Some(conn_id) {
                    continue;
                }
                held.sent_on = Some(conn_id);
                backlog.push(held.node.clone());
            }
            backlog.append(&mut d.offline_queue);
        }
        let count = backlog.len();
        for mut stanza in backlog {
            stanza.attrs.insert("offline", "1");
            let _ = out.send(Outbound::Node(Box::new(stanza)));
        }
        let marker = NodeBuilder::new("ib")
            .attr("from", "s.whatsapp.net")
            .children([NodeBuilder::new("offline")
                .attr("count", count.to_string())
                .build()])
            .build();
        let _ = out.send(Outbound::Node(Box::new(marker)));
        tracing::debug!(phone, device, count, "offline backlog delivered");
    }

    /// Whether writes to a connection of `phone` are currently held back; returns the deadline.
    pub fn stall_deadline(&self, phone: Option<&str>) -> Option<Instant> {
        let now = Instant::now();
        let global = self.faults.stall_all_until.filter(|t| *t > now);
        let own = phone
            .and_then(|p| self.faults.stall_until.get(p).copied())
            .filter(|t| *t > now);
        match (global, own) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes one injected error for an IQ of `xmlns`, if armed.
    pub fn take_iq_fault(&mut self, xmlns: &str) -> Option<(u16, String)> {
        let idx = self
            .faults
            .iq_errors
            .iter()
            .position(|f| f.xmlns == xmlns && f.remaining > 0)?;
        let fault = &mut self.faults.iq_errors[idx];
        if fault.skip > 0 {
            fault.skip -= 1;
            return None;
        }
        fault.remaining -= 1;
        let out = (fault.code, fault.text.clone());
        if fault.remaining == 0 {
            self.faults.iq_errors.remove(idx);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECEIVER: &str = "6285500000001";
    const SENDER: &str = "6285500000002";

    fn sim_with_device() -> Sim {
        let sim = Sim::new(Duration::from_millis(1), 1, false, false);
        let mut world = sim.world();
        world.ensure_account(Some(RECEIVER), None, false);
        world.ensure_account(Some(SENDER), None, true);
        let keys = DeviceKeys {
            registration_id: 1,
            identity: [1; 32],
            signed_prekey_id: 1,
            signed_prekey: [2; 32],
            signed_prekey_signature: vec![3; 64],
            one_time: VecDeque::new(),
        };
        if let Some(account) = world.accounts.get_mut(RECEIVER) {
            account.devices.insert(
                1,
                Device {
                    id: 1,
                    noise_pub: [4; 32],
                    keys,
                    key_index: 1,
                    device_identity: None,
                    needs_key_share: false,
                    reshare_keys_on_login: false,
                    offline_queue: Vec::new(),
                    unacked: Vec::new(),
                    acked: Vec::new(),
                    logins: 0,
                },
            );
        }
        drop(world);
        sim
    }

    fn connect(sim: &Sim, id: u64) -> mpsc::UnboundedReceiver<Outbound> {
        let (out, rx) = mpsc::unbounded_channel();
        let (kill, _) = watch::channel(false);
        let mut world = sim.world();
        world.conns.retain(|_, c| {
            let _ = c.kill.send(true);
            false
        });
        world.conns.insert(
            id,
            ConnEntry {
                id,
                out,
                kill,
                noise_pub: [4; 32],
                state: ConnState::LoggedIn {
                    phone: RECEIVER.into(),
                    device: 1,
                },
                active: false,
            },
        );
        rx
    }

    fn message(id: &str, from: &str, participant: Option<&str>) -> Node {
        let mut b = NodeBuilder::new("message")
            .attr("id", id)
            .attr("from", from)
            .attr("type", "text");
        if let Some(p) = participant {
            b = b.attr("participant", p);
        }
        b.build()
    }

    /// (tag, id, offline) of everything written so far.
    fn written(rx: &mut mpsc::UnboundedReceiver<Outbound>) -> Vec<(String, String, bool)> {
        let mut out = Vec::new();
        while let Ok(Outbound::Node(node)) = rx.try_recv() {
            let id = match node.get_optional_child("offline") {
                Some(o) => crate::nodes::attr(o, "count").unwrap_or_default(),
                None => crate::nodes::attr(&node, "id").unwrap_or_default(),
            };
            out.push((
                node.tag.to_string(),
                id,
                node.attrs.get("offline").is_some(),
            ));
        }
        out
    }

    fn unacked(sim: &Sim) -> Vec<String> {
        sim.world().accounts[RECEIVER].devices[&1]
            .unacked
            .iter()
            .map(|u| u.id.clone())
            .collect()
    }

    fn entry(tag: &str, id: &str, offline: bool) -> (String, String, bool) {
        (tag.to_string(), id.to_string(), offline)
    }

    #[test]
    fn messages_stay_until_acked_and_replay_once_per_connection() {
        let sim = sim_with_device();
        let sender = format!("{SENDER}@s.whatsapp.net");
        let notification = NodeBuilder::new("notification").attr("id", "n1").build();
        {
            let mut world = sim.world();
            world.deliver(RECEIVER, 1, message("m1", &sender, None));
            world.deliver(RECEIVER, 1, notification);
        }
        // Logged in but still passive: nothing is written yet.
        let mut rx = connect(&sim, 1);
        sim.world()
            .deliver(RECEIVER, 1, message("m2", &sender, None));
        assert!(written(&mut rx).is_empty());
        assert_eq!(unacked(&sim), ["m1", "m2"]);

        sim.world().drain_offline(1, RECEIVER, 1);
        assert_eq!(
            written(&mut rx),
            [
                entry("message", "m1", true),
                entry("message", "m2", true),
                entry("notification", "n1", true),
                entry("ib", "3", false),
            ]
        );
        sim.world()
            .deliver(RECEIVER, 1, message("m3", &sender, None));
        assert_eq!(written(&mut rx), [entry("message", "m3", false)]);
        // A second drain on the same connection writes nothing again.
        sim.world().drain_offline(1, RECEIVER, 1);
        assert_eq!(written(&mut rx), [entry("ib", "0", false)]);

        // A delivery receipt names the sender by device JID; one ack settles each id once.
        let ids = ["m1".to_string(), "m3".to_string()];
        let device_jid = format!("{SENDER}:3@s.whatsapp.net");
        assert_eq!(
            sim.world()
                .ack_messages(RECEIVER, 1, &device_jid, None, &ids),
            2
        );
        assert_eq!(
            sim.world().ack_messages(RECEIVER, 1, &sender, None, &ids),
            0
        );
        assert_eq!(unacked(&sim), ["m2"]);

        // A new connection gets what is still unacked.
        let mut rx = connect(&sim, 2);
        sim.world().drain_offline(2, RECEIVER, 1);
        assert_eq!(
            written(&mut rx),
            [entry("message", "m2", true), entry("ib", "1", false)]
        );

        // Group messages are matched on the group and the sender.
        let group = "120363000000000001@g.us";
        sim.world().deliver(
            RECEIVER,
            1,
            message("g1", group, Some(&format!("{SENDER}:2@s.whatsapp.net"))),
        );
        let g1 = ["g1".to_string()];
        let stranger = "6285500000009@s.whatsapp.net";
        assert_eq!(
            sim.world()
                .ack_messages(RECEIVER, 1, group, Some(stranger), &g1),
            0
        );
        assert_eq!(
            sim.world()
                .ack_messages(RECEIVER, 1, group, Some(&sender), &g1),
            1
        );
        let world = sim.world();
        let device = &world.accounts[RECEIVER].devices[&1];
        assert_eq!(device.acked, ["m1", "m3", "g1"]);
        assert_eq!(world.stats.messages_acked, 3);
    }
}
