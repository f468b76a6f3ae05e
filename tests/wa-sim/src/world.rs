//! The simulated world: accounts (phones), their linked companion devices, sim-only users,
//! live connections, pending pairings, injected faults and counters. One `std` mutex guards
//! it; it is never held across an `.await`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
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
    /// Stanzas that arrived while the device was offline, delivered at its next login.
    pub offline_queue: Vec<Node>,
    pub logins: u64,
}

/// A message a simulated phone received and decrypted.
#[derive(Clone, Debug, serde::Serialize)]
pub struct InboxMessage {
    pub from: String,
    pub chat: String,
    pub id: String,
    pub text: String,
    pub t: u64,
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
    next_conn_id: u64,
    next_serial: u64,
}

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

    /// Sends `node` to a companion device now, or queues it for its next login.
    pub fn deliver(&mut self, phone: &str, device: u16, node: Node) {
        let conns = self.device_conns(phone, device);
        if conns.is_empty() {
            if let Some(d) = self
                .accounts
                .get_mut(phone)
                .and_then(|a| a.devices.get_mut(&device))
            {
                d.offline_queue.push(node);
            }
            return;
        }
        for conn in conns {
            conn.send(node.clone());
        }
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
        fault.remaining -= 1;
        let out = (fault.code, fault.text.clone());
        if fault.remaining == 0 {
            self.faults.iq_errors.remove(idx);
        }
        Some(out)
    }
}
