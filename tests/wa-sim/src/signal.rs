//! Signal endpoints the simulator plays itself: every account's primary phone (device 0) and
//! every sim-only user. Each endpoint owns a real identity, a signed prekey, one-time prekeys
//! and in-memory Signal stores, so clients can fetch its bundle and encrypt to it, the sim can
//! decrypt what it receives, and the primary phone can send Signal messages to its companions.

use std::collections::{HashMap, VecDeque};

use async_trait::async_trait;
use wacore::libsignal::protocol::{
    CiphertextMessage, CiphertextMessageType, DeviceId, Direction, GenericSignedPreKey,
    IdentityChange, IdentityKey, IdentityKeyPair, IdentityKeyStore, KeyPair, PreKeyBundle,
    PreKeyId, PreKeyRecord, PreKeySignalMessage, PreKeyStore, ProtocolAddress, PublicKey,
    SenderKeyDistributionMessage, SenderKeyName, SenderKeyRecord, SenderKeyStore, SessionRecord,
    SessionStore, SignalMessage, SignalProtocolError, SignedPreKeyId, SignedPreKeyRecord,
    SignedPreKeyStore, Timestamp, UsePQRatchet, create_sender_key_distribution_message,
    group_decrypt, group_encrypt, message_decrypt, message_encrypt, process_prekey_bundle,
    process_sender_key_distribution_message,
};

type SignalResult<T> = Result<T, SignalProtocolError>;

/// How many one-time prekeys a simulated phone publishes, and refills to.
const ONE_TIME_PREKEYS: u32 = 50;

/// A public prekey bundle as served in an `encrypt` key fetch.
#[derive(Clone, Debug)]
pub struct PublicBundle {
    pub registration_id: u32,
    pub identity: [u8; 32],
    pub signed_prekey_id: u32,
    pub signed_prekey: [u8; 32],
    pub signed_prekey_signature: Vec<u8>,
    pub one_time: Option<(u32, [u8; 32])>,
}

/// Identity store: our own key pair plus trust-on-first-use for everyone else.
struct IdentityStore {
    key_pair: IdentityKeyPair,
    registration_id: u32,
    known: HashMap<String, IdentityKey>,
}

#[async_trait]
impl IdentityKeyStore for IdentityStore {
    async fn get_identity_key_pair(&self) -> SignalResult<IdentityKeyPair> {
        Ok(self.key_pair.clone())
    }

    async fn get_local_registration_id(&self) -> SignalResult<u32> {
        Ok(self.registration_id)
    }

    async fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> SignalResult<IdentityChange> {
        let previous = self.known.insert(address.to_string(), *identity);
        Ok(IdentityChange::from_changed(
            previous.is_some_and(|p| p != *identity),
        ))
    }

    async fn is_trusted_identity(
        &self,
        _address: &ProtocolAddress,
        _identity: &IdentityKey,
        _direction: Direction,
    ) -> SignalResult<bool> {
        Ok(true)
    }

    async fn get_identity(&self, address: &ProtocolAddress) -> SignalResult<Option<IdentityKey>> {
        Ok(self.known.get(&address.to_string()).copied())
    }
}

#[derive(Default)]
struct Sessions(HashMap<String, SessionRecord>);

#[async_trait]
impl SessionStore for Sessions {
    async fn load_session(&self, address: &ProtocolAddress) -> SignalResult<Option<SessionRecord>> {
        Ok(self.0.get(&address.to_string()).cloned())
    }

    async fn has_session(&self, address: &ProtocolAddress) -> SignalResult<bool> {
        Ok(self.0.contains_key(&address.to_string()))
    }

    async fn store_session(
        &mut self,
        address: &ProtocolAddress,
        record: SessionRecord,
    ) -> SignalResult<()> {
        self.0.insert(address.to_string(), record);
        Ok(())
    }
}

#[derive(Default)]
struct PreKeys(HashMap<u32, PreKeyRecord>);

#[async_trait]
impl PreKeyStore for PreKeys {
    async fn get_pre_key(&self, prekey_id: PreKeyId) -> SignalResult<PreKeyRecord> {
        self.0
            .get(&u32::from(prekey_id))
            .cloned()
            .ok_or(SignalProtocolError::InvalidPreKeyId)
    }

    async fn save_pre_key(
        &mut self,
        prekey_id: PreKeyId,
        record: &PreKeyRecord,
    ) -> SignalResult<()> {
        self.0.insert(u32::from(prekey_id), record.clone());
        Ok(())
    }

    async fn remove_pre_key(&mut self, prekey_id: PreKeyId) -> SignalResult<()> {
        self.0.remove(&u32::from(prekey_id));
        Ok(())
    }
}

struct SignedPreKeys(HashMap<u32, SignedPreKeyRecord>);

#[async_trait]
impl SignedPreKeyStore for SignedPreKeys {
    async fn get_signed_pre_key(&self, id: SignedPreKeyId) -> SignalResult<SignedPreKeyRecord> {
        self.0
            .get(&u32::from(id))
            .cloned()
            .ok_or(SignalProtocolError::InvalidSignedPreKeyId)
    }

    async fn save_signed_pre_key(
        &mut self,
        id: SignedPreKeyId,
        record: &SignedPreKeyRecord,
    ) -> SignalResult<()> {
        self.0.insert(u32::from(id), record.clone());
        Ok(())
    }
}

#[derive(Default)]
struct SenderKeys(HashMap<SenderKeyName, SenderKeyRecord>);

#[async_trait]
impl SenderKeyStore for SenderKeys {
    async fn store_sender_key(
        &mut self,
        name: &SenderKeyName,
        record: SenderKeyRecord,
    ) -> SignalResult<()> {
        self.0.insert(name.clone(), record);
        Ok(())
    }

    async fn load_sender_key(&self, name: &SenderKeyName) -> SignalResult<Option<SenderKeyRecord>> {
        Ok(self.0.get(name).cloned())
    }
}

/// One simulated Signal device (a phone). Not `Clone`: it owns ratchet state.
pub struct SignalEndpoint {
    identity: IdentityStore,
    sessions: Sessions,
    prekeys: PreKeys,
    signed: SignedPreKeys,
    sender_keys: SenderKeys,
    signed_id: u32,
    signed_public: [u8; 32],
    signed_signature: Vec<u8>,
    /// One-time prekeys not yet handed out, oldest first.
    unpublished: VecDeque<(u32, [u8; 32])>,
    next_prekey_id: u32,
}

/// Encrypted payload for one recipient device: `pkmsg` or `msg` plus the bytes.
pub struct Encrypted {
    pub kind: &'static str,
    pub bytes: Vec<u8>,
}

fn pub32(key: &PublicKey) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(key.public_key_bytes());
    out
}

/// Signal address of `user`'s device `device`, as the sim names peers in its stores.
pub fn address(user: &str, device: u16) -> ProtocolAddress {
    ProtocolAddress::new(user, DeviceId::from(u32::from(device)))
}

impl SignalEndpoint {
    /// A new endpoint whose identity is `identity` (for a primary phone this is also the
    /// account's ADV signing key, as on a real phone).
    pub fn new(identity: KeyPair) -> Self {
        let mut rng = rand::rng();
        let registration_id = rand::random_range(1..16380u32);
        let signed_pair = KeyPair::generate(&mut rng);
        let signed_public = pub32(&signed_pair.public_key);
        let signature = identity
            .private_key
            .calculate_signature(&signed_pair.public_key.serialize(), &mut rng)
            .map(|s| s.to_vec())
            .unwrap_or_default();
        let signed_id = 1u32;
        let record = SignedPreKeyRecord::new(
            SignedPreKeyId::from(signed_id),
            Timestamp::from_epoch_millis(now_millis()),
            &signed_pair,
            &signature,
        );
        let mut signed = HashMap::new();
        signed.insert(signed_id, record);
        let mut endpoint = Self {
            identity: IdentityStore {
                key_pair: IdentityKeyPair::from(identity),
                registration_id,
                known: HashMap::new(),
            },
            sessions: Sessions::default(),
            prekeys: PreKeys::default(),
            signed: SignedPreKeys(signed),
            sender_keys: SenderKeys::default(),
            signed_id,
            signed_public,
            signed_signature: signature,
            unpublished: VecDeque::new(),
            next_prekey_id: 1,
        };
        endpoint.refill_prekeys();
        endpoint
    }

    fn refill_prekeys(&mut self) {
        let mut rng = rand::rng();
        while self.unpublished.len() < ONE_TIME_PREKEYS as usize {
            let id = self.next_prekey_id;
            self.next_prekey_id = (self.next_prekey_id % 0xFF_FFFE) + 1;
            let pair = KeyPair::generate(&mut rng);
            self.prekeys
                .0
                .insert(id, PreKeyRecord::new(PreKeyId::from(id), &pair));
            self.unpublished.push_back((id, pub32(&pair.public_key)));
        }
    }

    pub fn identity_public(&self) -> [u8; 32] {
        pub32(self.identity.key_pair.public_key())
    }

    /// The bundle a key fetch returns; hands out (and retires) one one-time prekey.
    pub fn take_bundle(&mut self) -> PublicBundle {
        let one_time = self.unpublished.pop_front();
        if self.unpublished.is_empty() {
            self.refill_prekeys();
        }
        PublicBundle {
            registration_id: self.identity.registration_id,
            identity: self.identity_public(),
            signed_prekey_id: self.signed_id,
            signed_prekey: self.signed_public,
            signed_prekey_signature: self.signed_signature.clone(),
            one_time,
        }
    }

    /// Starts (or reuses) a session with a peer device from its published bundle.
    pub async fn ensure_session(
        &mut self,
        peer: &ProtocolAddress,
        bundle: &PublicBundle,
        peer_device: u16,
    ) -> Result<(), String> {
        if self.sessions.0.contains_key(&peer.to_string()) {
            return Ok(());
        }
        let one_time = match bundle.one_time {
            Some((id, key)) => Some((
                PreKeyId::from(id),
                PublicKey::from_djb_public_key_bytes(&key).map_err(|e| e.to_string())?,
            )),
            None => None,
        };
        let bundle = PreKeyBundle::new(
            bundle.registration_id,
            DeviceId::from(u32::from(peer_device)),
            one_time,
            SignedPreKeyId::from(bundle.signed_prekey_id),
            PublicKey::from_djb_public_key_bytes(&bundle.signed_prekey)
                .map_err(|e| e.to_string())?,
            bundle.signed_prekey_signature.clone(),
            IdentityKey::new(
                PublicKey::from_djb_public_key_bytes(&bundle.identity)
                    .map_err(|e| e.to_string())?,
            ),
        )
        .map_err(|e| e.to_string())?;
        process_prekey_bundle(
            peer,
            &mut self.sessions,
            &mut self.identity,
            &bundle,
            &mut rand::make_rng::<rand::rngs::StdRng>(),
            UsePQRatchet::No,
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    /// Encrypts an already padded plaintext for a peer we hold a session with.
    pub async fn encrypt(
        &mut self,
        peer: &ProtocolAddress,
        padded: &[u8],
    ) -> Result<Encrypted, String> {
        let message = message_encrypt(padded, peer, &mut self.sessions, &mut self.identity)
            .await
            .map_err(|e| e.to_string())?;
        let kind = match message.message_type() {
            CiphertextMessageType::PreKey => "pkmsg",
            _ => "msg",
        };
        Ok(Encrypted {
            kind,
            bytes: message.serialize().to_vec(),
        })
    }

    /// Decrypts a `pkmsg` or `msg` from a peer device; returns the padded plaintext.
    pub async fn decrypt(
        &mut self,
        peer: &ProtocolAddress,
        kind: &str,
        bytes: &[u8],
    ) -> Result<Vec<u8>, String> {
        let message = match kind {
            "pkmsg" => CiphertextMessage::PreKeySignalMessage(
                PreKeySignalMessage::try_from(bytes).map_err(|e| e.to_string())?,
            ),
            "msg" => CiphertextMessage::SignalMessage(
                SignalMessage::try_from(bytes).map_err(|e| e.to_string())?,
            ),
            other => return Err(format!("unsupported enc type {other}")),
        };
        let result = message_decrypt(
            &message,
            peer,
            &mut self.sessions,
            &mut self.identity,
            &mut self.prekeys,
            &self.signed,
            &mut rand::make_rng::<rand::rngs::StdRng>(),
            UsePQRatchet::No,
        )
        .await
        .map_err(|e| e.to_string())?;
        if let Some(id) = result.consumed_prekey_id {
            self.prekeys.0.remove(&u32::from(id));
        }
        Ok(result.plaintext)
    }

    /// Records a sender key distributed by `sender` for `group`.
    pub async fn process_skdm(
        &mut self,
        group: &str,
        sender: &ProtocolAddress,
        skdm: &[u8],
    ) -> Result<(), String> {
        let message = SenderKeyDistributionMessage::try_from(skdm).map_err(|e| e.to_string())?;
        let name = SenderKeyName::new(group.to_string(), sender.to_string());
        process_sender_key_distribution_message(&name, &message, &mut self.sender_keys)
            .await
            .map_err(|e| e.to_string())
    }

    pub fn has_session(&self, peer: &ProtocolAddress) -> bool {
        self.sessions.0.contains_key(&peer.to_string())
    }

    /// This endpoint's sender-key distribution message for `group` (created on first use).
    pub async fn sender_key_distribution(
        &mut self,
        group: &str,
        own_name: &str,
    ) -> Result<Vec<u8>, String> {
        let name = SenderKeyName::new(group.to_string(), own_name.to_string());
        create_sender_key_distribution_message(
            &name,
            &mut self.sender_keys,
            &mut rand::make_rng::<rand::rngs::StdRng>(),
        )
        .await
        .map(|m| m.serialized().to_vec())
        .map_err(|e| e.to_string())
    }

    /// Encrypts a padded plaintext with this endpoint's sender key for `group`.
    pub async fn group_encrypt(
        &mut self,
        group: &str,
        own_name: &str,
        padded: &[u8],
    ) -> Result<Vec<u8>, String> {
        let name = SenderKeyName::new(group.to_string(), own_name.to_string());
        group_encrypt(
            &mut self.sender_keys,
            &name,
            padded,
            &mut rand::make_rng::<rand::rngs::StdRng>(),
        )
        .await
        .map(|m| m.serialized().to_vec())
        .map_err(|e| e.to_string())
    }

    /// Decrypts a group `skmsg` from `sender`; returns the padded plaintext.
    pub async fn group_decrypt(
        &mut self,
        group: &str,
        sender: &ProtocolAddress,
        bytes: &[u8],
    ) -> Result<Vec<u8>, String> {
        let name = SenderKeyName::new(group.to_string(), sender.to_string());
        group_decrypt(bytes, &mut self.sender_keys, &name)
            .await
            .map_err(|e| e.to_string())
    }
}

pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn now_secs() -> u64 {
    now_millis() / 1000
}
