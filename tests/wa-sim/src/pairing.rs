//! The phone's side of linking a companion: QR scans, pair codes, `pair-success` with valid
//! ADV signatures, the `pair-device-sign` answer, the 515 restart, and the primary's
//! app-state key share that lets a fresh companion finish its initial sync quickly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::Mac as _;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::node::Node;
use wacore_libsignal::protocol::{KeyPair, PublicKey};
use waproto::buffa::{Message as _, MessageField};
use waproto::whatsapp as wa;

use crate::nodes::{attr, bytes_node, child, child_bytes, child_key32};
use crate::signal::{PublicBundle, address, now_millis, now_secs};
use crate::world::{
    CodeAttempt, ConnState, Device, Outbound, PendingCode, PendingPair, Sim, World,
};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

const ADV_PREFIX_ACCOUNT_SIGNATURE: &[u8] = &[6, 0];
const ADV_PREFIX_KEY_INDEX_LIST: &[u8] = &[6, 2];
/// How long a pair code stays usable (the client's own limit).
const PAIR_CODE_VALIDITY: Duration = Duration::from_secs(180);
/// How long `enter-pair-code` waits for the companion's stage-2 answer.
const COMPANION_FINISH_WAIT: Duration = Duration::from_secs(20);

/// The result of linking a device, as the control API reports it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Linked {
    pub phone_number: String,
    pub jid: String,
    pub lid: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    NotFound(String),
}

/// Fields of a companion's QR string.
pub struct QrData {
    pub noise_pub: [u8; 32],
    pub identity_pub: [u8; 32],
    pub adv_secret: [u8; 32],
}

/// Parses `ref,noise,identity,adv_secret[,client_type]`, with or without the deep-link prefix.
pub fn parse_qr(qr: &str) -> Result<QrData, LinkError> {
    let body = qr.trim();
    let body = body.rsplit_once('#').map(|(_, b)| b).unwrap_or(body);
    let parts: Vec<&str> = body.split(',').collect();
    if parts.len() < 4 {
        return Err(LinkError::BadInput(format!(
            "QR string has {} comma-separated fields, expected at least 4",
            parts.len()
        )));
    }
    let key = |i: usize, what: &str| -> Result<[u8; 32], LinkError> {
        B64.decode(parts[i].trim())
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| LinkError::BadInput(format!("QR {what} is not a base64 32-byte key")))
    };
    Ok(QrData {
        noise_pub: key(1, "noise key")?,
        identity_pub: key(2, "identity key")?,
        adv_secret: key(3, "adv secret")?,
    })
}

fn pub32(key: &PublicKey) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(key.public_key_bytes());
    out
}

/// The HMAC'd, account-signed device identity a companion verifies in `pair-success`.
fn signed_device_identity(
    account_key: &KeyPair,
    raw_id: u32,
    key_index: u32,
    companion_identity: &[u8; 32],
    adv_secret: &[u8; 32],
) -> Result<Vec<u8>, LinkError> {
    let details = wa::ADVDeviceIdentity {
        raw_id: Some(raw_id),
        timestamp: Some(now_secs()),
        key_index: Some(key_index),
        account_type: Some(wa::ADVEncryptionType::E2EE),
        device_type: Some(wa::ADVEncryptionType::E2EE),
    }
    .encode_to_vec();
    let mut message = Vec::with_capacity(2 + details.len() + 32);
    message.extend_from_slice(ADV_PREFIX_ACCOUNT_SIGNATURE);
    message.extend_from_slice(&details);
    message.extend_from_slice(companion_identity);
    let signature = account_key
        .private_key
        .calculate_signature(&message, &mut rand::rng())
        .map_err(|e| LinkError::BadInput(format!("signing failed: {e}")))?;
    let signed = wa::ADVSignedDeviceIdentity {
        details: Some(details),
        account_signature_key: Some(account_key.public_key.public_key_bytes().to_vec()),
        account_signature: Some(signature.to_vec()),
        device_signature: None,
    }
    .encode_to_vec();
    let mut mac = <HmacSha256 as hmac::KeyInit>::new_from_slice(adv_secret)
        .map_err(|e| LinkError::BadInput(format!("hmac: {e}")))?;
    mac.update(&signed);
    let hmac = mac.finalize().into_bytes().to_vec();
    Ok(wa::ADVSignedDeviceIdentityHMAC {
        details: Some(signed),
        hmac: Some(hmac),
        account_type: Some(wa::ADVEncryptionType::E2EE),
    }
    .encode_to_vec())
}

/// `ADVSignedKeyIndexList` for an account's current companions (usync `<key-index-list>`).
pub fn signed_key_index_list(
    account_key: &KeyPair,
    raw_id: u32,
    timestamp: u64,
    current_index: u32,
    valid: Vec<u32>,
) -> Vec<u8> {
    let details = wa::ADVKeyIndexList {
        raw_id: Some(raw_id),
        timestamp: Some(timestamp),
        current_index: Some(current_index),
        valid_indexes: valid,
        account_type: Some(wa::ADVEncryptionType::E2EE),
    }
    .encode_to_vec();
    let mut message = ADV_PREFIX_KEY_INDEX_LIST.to_vec();
    message.extend_from_slice(&details);
    let signature = account_key
        .private_key
        .calculate_signature(&message, &mut rand::rng())
        .map(|s| s.to_vec())
        .unwrap_or_default();
    wa::ADVSignedKeyIndexList {
        details: Some(details),
        account_signature: Some(signature),
        account_signature_key: Some(account_key.public_key.public_key_bytes().to_vec()),
    }
    .encode_to_vec()
}

/// The `<iq xmlns="md"><pair-device><ref/>…</pair-device></iq>` offering QR refs.
pub fn pair_device_iq(id: &str, refs: usize) -> Node {
    let refs = (0..refs).map(|_| {
        let raw: [u8; 18] = rand::random();
        bytes_node("ref", format!("2@{}", B64.encode(raw)).into_bytes())
    });
    NodeBuilder::new("iq")
        .attr("from", "s.whatsapp.net")
        .attr("type", "set")
        .attr("id", id.to_string())
        .attr("xmlns", "md")
        .children([NodeBuilder::new("pair-device").children(refs).build()])
        .build()
}

/// Links the registering connection whose noise key is `noise_pub` to an account and sends
/// it `pair-success`. The device is recorded immediately; `pair-device-sign` completes it.
pub fn link_device(
    sim: &Arc<Sim>,
    noise_pub: &[u8; 32],
    phone: Option<&str>,
    push_name: Option<&str>,
    companion_identity: [u8; 32],
    adv_secret: [u8; 32],
) -> Result<Linked, LinkError> {
    let mut world = sim.world();
    let (conn_id, registration) = world
        .conns
        .values()
        .find_map(|c| match &c.state {
            ConnState::Registering(reg) if &c.noise_pub == noise_pub => {
                Some((c.id, reg.as_ref().clone()))
            }
            _ => None,
        })
        .ok_or_else(|| {
            LinkError::NotFound("no unpaired client with that noise key is connected".into())
        })?;
    if registration.keys.identity != companion_identity {
        tracing::warn!("QR identity key differs from the registration payload; using the QR one");
    }
    let name = push_name
        .filter(|n| !n.is_empty())
        .or(Some(registration.push_name.as_str()).filter(|n| !n.is_empty()));
    let phone = world.ensure_account(phone, name, false);
    let serial = world.serial();
    let account = world
        .accounts
        .get_mut(&phone)
        .ok_or_else(|| LinkError::NotFound("account vanished".into()))?;
    account.sim_only = false;
    // The account's display name reaches the companion the way a business name does: the
    // client adopts a non-empty `<biz name>` as its push name (real phones sync it through
    // app state, which the simulator keeps empty).
    let display_name = account.push_name.clone();
    let device_id = account.next_device;
    account.next_device += 1;
    let key_index = account.next_key_index;
    account.next_key_index += 1;
    account.key_index_ts = now_secs();
    let blob = signed_device_identity(
        &account.account_key,
        account.raw_id,
        key_index,
        &companion_identity,
        &adv_secret,
    )?;
    let mut keys = registration.keys.clone();
    keys.identity = companion_identity;
    account.devices.insert(
        device_id,
        Device {
            id: device_id,
            noise_pub: *noise_pub,
            keys,
            key_index,
            device_identity: None,
            needs_key_share: sim.key_share,
            reshare_keys_on_login: sim.key_share && registration.push_name.is_empty(),
            offline_queue: Vec::new(),
            unacked: Vec::new(),
            acked: Vec::new(),
            logins: 0,
        },
    );
    let linked = Linked {
        phone_number: phone.clone(),
        jid: format!("{phone}:{device_id}@s.whatsapp.net"),
        lid: format!("{}:{device_id}@lid", account.lid),
    };
    let iq_id = format!("pair-success-{serial}");
    let node = NodeBuilder::new("iq")
        .attr("from", "s.whatsapp.net")
        .attr("type", "set")
        .attr("id", iq_id.clone())
        .attr("xmlns", "md")
        .attr("t", now_secs().to_string())
        .children([NodeBuilder::new("pair-success")
            .children(
                [
                    Some(bytes_node("device-identity", blob)),
                    Some(
                        NodeBuilder::new("device")
                            .attr("jid", linked.jid.clone())
                            .attr("lid", linked.lid.clone())
                            .build(),
                    ),
                    Some(NodeBuilder::new("platform").attr("name", "android").build()),
                    (!display_name.is_empty()).then(|| {
                        NodeBuilder::new("biz")
                            .attr("name", display_name.clone())
                            .build()
                    }),
                ]
                .into_iter()
                .flatten(),
            )
            .build()])
        .build();
    world.pending_pairs.insert(
        iq_id,
        PendingPair {
            conn_id,
            phone: phone.clone(),
            device: device_id,
        },
    );
    if let Some(conn) = world.conns.get_mut(&conn_id) {
        conn.send(node);
        // One pairing per connection: a second scan of the same QR finds nothing.
        conn.state = ConnState::Closing;
    }
    tracing::info!(phone = %phone, device = device_id, "pair-success sent");
    Ok(linked)
}

/// Handles the client's answer to `pair-success`. Returns true when `id` was ours.
pub fn on_pair_answer(sim: &Arc<Sim>, conn_id: u64, response: &Node) -> bool {
    let Some(id) = attr(response, "id") else {
        return false;
    };
    let mut world = sim.world();
    if world
        .pending_pairs
        .get(&id)
        .is_none_or(|p| p.conn_id != conn_id)
    {
        return false;
    }
    let Some(pending) = world.pending_pairs.remove(&id) else {
        return false;
    };
    if attr(response, "type").as_deref() != Some("result") {
        tracing::warn!(phone = %pending.phone, "client rejected pair-success: {}", crate::nodes::show(response));
        if let Some(account) = world.accounts.get_mut(&pending.phone) {
            account.devices.remove(&pending.device);
        }
        return true;
    }
    let identity =
        child(response, "pair-device-sign").and_then(|sign| child_bytes(sign, "device-identity"));
    if let Some(device) = world
        .accounts
        .get_mut(&pending.phone)
        .and_then(|a| a.devices.get_mut(&pending.device))
    {
        device.device_identity = identity;
    }
    world.stats.pairings += 1;
    announce_device_change(&mut world, &pending.phone, pending.device, true);
    if let Some(conn) = world.conns.get_mut(&conn_id) {
        conn.state = ConnState::Closing;
    }
    drop(world);
    tracing::info!(phone = %pending.phone, device = pending.device, "device paired; restarting stream");
    // The client handles pair-success in a spawned task; give it time to arm its
    // expected-disconnect flag before the restart arrives.
    let sim = sim.clone();
    tokio::spawn(async move {
        tokio::time::sleep(sim.restart_delay).await;
        let out = sim.world().conns.get(&conn_id).map(|c| c.out.clone());
        if let Some(out) = out {
            let node = NodeBuilder::new("stream:error").attr("code", "515").build();
            let _ = out.send(Outbound::Node(Box::new(node)));
            // The client closes the socket itself; close it ourselves only if it lingers.
            tokio::time::sleep(Duration::from_secs(10)).await;
            let _ = out.send(Outbound::Close);
        }
    });
    true
}

/// `link_code_companion_reg stage="companion_hello"`: remember the code exchange.
pub fn on_companion_hello(sim: &Arc<Sim>, conn_id: u64, reg: &Node) -> Result<Vec<u8>, String> {
    let phone = attr(reg, "jid")
        .and_then(|j| j.split('@').next().map(str::to_string))
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .ok_or("companion_hello without a phone number")?;
    let wrapped = child_bytes(reg, "link_code_pairing_wrapped_companion_ephemeral_pub")
        .filter(|w| w.len() == 80)
        .ok_or("companion_hello without an 80-byte wrapped ephemeral key")?;
    let pairing_ref: Vec<u8> = {
        let raw: [u8; 12] = rand::random();
        format!("ref-{}", B64.encode(raw)).into_bytes()
    };
    let mut world = sim.world();
    // A new code supersedes older ones of the same connection.
    world.pending_codes.retain(|p| p.conn_id != conn_id);
    world.pending_codes.push(PendingCode {
        conn_id,
        phone,
        wrapped_companion_ephemeral: wrapped,
        pairing_ref: pairing_ref.clone(),
        created: Instant::now(),
        attempt: None,
    });
    Ok(pairing_ref)
}

/// The phone user types `code` for `phone`: sends `primary_hello` and waits for the
/// companion's stage-2 answer, then links the device.
pub async fn enter_pair_code(
    sim: &Arc<Sim>,
    phone: &str,
    code: &str,
    push_name: Option<&str>,
) -> Result<Linked, LinkError> {
    let code: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if code.len() != 8 {
        return Err(LinkError::BadInput("a pair code has 8 characters".into()));
    }
    let candidates: Vec<(Vec<u8>, Vec<u8>)> = {
        let mut world = sim.world();
        world
            .pending_codes
            .retain(|p| p.created.elapsed() < PAIR_CODE_VALIDITY);
        world
            .pending_codes
            .iter()
            .rev()
            .filter(|p| p.phone == phone)
            .map(|p| (p.pairing_ref.clone(), p.wrapped_companion_ephemeral.clone()))
            .collect()
    };
    if candidates.is_empty() {
        return Err(LinkError::NotFound(format!(
            "no client is waiting for a pair code for {phone}"
        )));
    }
    let phone_owned = phone.to_string();
    let account_public = {
        let mut world = sim.world();
        let phone = world.ensure_account(Some(&phone_owned), push_name, false);
        world
            .accounts
            .get(&phone)
            .map(|a| pub32(&a.account_key.public_key))
            .ok_or_else(|| LinkError::NotFound("account vanished".into()))?
    };
    // Try the newest pending code first; a wrong code shows as a failed stage 2.
    let mut last_error = String::from("code does not match");
    for (pairing_ref, wrapped) in candidates {
        let code_for_task = code.clone();
        let crypto = tokio::task::spawn_blocking(move || {
            let companion = wacore::pair_code::PairCodeUtils::decrypt_primary_ephemeral_pub(
                &wrapped,
                &code_for_task,
            )
            .map_err(|e| e.to_string())?;
            let primary = KeyPair::generate(&mut rand::rng());
            let wrapped_primary = wacore::pair_code::PairCodeUtils::encrypt_ephemeral_pub(
                &pub32(&primary.public_key),
                &code_for_task,
            );
            Ok::<_, String>((companion, primary, wrapped_primary))
        })
        .await
        .map_err(|e| LinkError::BadInput(e.to_string()))?;
        let (companion_ephemeral, primary_ephemeral, wrapped_primary) =
            crypto.map_err(LinkError::BadInput)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let serial;
        {
            let mut world = sim.world();
            serial = world.serial();
            let Some(pending) = world
                .pending_codes
                .iter_mut()
                .find(|p| p.pairing_ref == pairing_ref)
            else {
                continue;
            };
            let conn_id = pending.conn_id;
            pending.attempt = Some(CodeAttempt {
                code: code.clone(),
                primary_ephemeral,
                companion_ephemeral,
                phone: phone_owned.clone(),
                push_name: push_name.map(str::to_string),
                done: tx,
            });
            let node = NodeBuilder::new("notification")
                .attr("from", "s.whatsapp.net")
                .attr("type", "link_code_companion_reg")
                .attr("id", format!("link-{serial}"))
                .attr("t", now_secs().to_string())
                .children([NodeBuilder::new("link_code_companion_reg")
                    .attr("stage", "primary_hello")
                    .children([
                        bytes_node(
                            "link_code_pairing_wrapped_primary_ephemeral_pub",
                            wrapped_primary.to_vec(),
                        ),
                        bytes_node("primary_identity_pub", account_public.to_vec()),
                        bytes_node("link_code_pairing_ref", pairing_ref.clone()),
                    ])
                    .build()])
                .build();
            match world.conns.get(&conn_id) {
                Some(conn) => conn.send(node),
                None => {
                    last_error = "the client that requested the code is gone".into();
                    continue;
                }
            }
        }
        match tokio::time::timeout(COMPANION_FINISH_WAIT, rx).await {
            Ok(Ok(Ok(linked))) => return Ok(linked),
            Ok(Ok(Err(e))) => last_error = e,
            Ok(Err(_)) => last_error = "pair code exchange abandoned".into(),
            Err(_) => last_error = "client did not finish the pair code exchange".into(),
        }
    }
    Err(LinkError::NotFound(last_error))
}

/// `link_code_companion_reg stage="companion_finish"`: derive the ADV secret and link.
pub fn on_companion_finish(sim: &Arc<Sim>, reg: &Node) {
    let Some(pairing_ref) = child_bytes(reg, "link_code_pairing_ref") else {
        tracing::warn!("companion_finish without a pairing ref");
        return;
    };
    let (conn_id, attempt) = {
        let mut world = sim.world();
        let Some(pending) = world
            .pending_codes
            .iter_mut()
            .find(|p| p.pairing_ref == pairing_ref)
        else {
            tracing::warn!("companion_finish for an unknown pairing ref");
            return;
        };
        (pending.conn_id, pending.attempt.take())
    };
    let Some(attempt) = attempt else {
        tracing::warn!("companion_finish before any code was entered");
        return;
    };
    let result = finish_code_exchange(sim, conn_id, reg, &attempt);
    if result.is_ok() {
        sim.world()
            .pending_codes
            .retain(|p| p.pairing_ref != pairing_ref);
    }
    let _ = attempt.done.send(result);
}

fn finish_code_exchange(
    sim: &Arc<Sim>,
    conn_id: u64,
    reg: &Node,
    attempt: &CodeAttempt,
) -> Result<Linked, String> {
    let wrapped = child_bytes(reg, "link_code_pairing_wrapped_key_bundle")
        .filter(|w| w.len() > 44)
        .ok_or("companion_finish without a key bundle")?;
    let companion_identity = child_key32(reg, "companion_identity_public")
        .ok_or("companion_finish without a 32-byte identity")?;
    let (account_key, noise_pub) = {
        let world = sim.world();
        let account = world
            .accounts
            .get(&attempt.phone)
            .ok_or("account vanished")?;
        let conn = world.conns.get(&conn_id).ok_or("client disconnected")?;
        (account.account_key.clone(), conn.noise_pub)
    };
    let companion_eph = PublicKey::from_djb_public_key_bytes(&attempt.companion_ephemeral)
        .map_err(|e| e.to_string())?;
    let companion_id =
        PublicKey::from_djb_public_key_bytes(&companion_identity).map_err(|e| e.to_string())?;
    let eph_shared = attempt
        .primary_ephemeral
        .private_key
        .calculate_agreement(&companion_eph)
        .map_err(|e| e.to_string())?;
    let identity_shared = account_key
        .private_key
        .calculate_agreement(&companion_id)
        .map_err(|e| e.to_string())?;
    let (salt, rest) = wrapped.split_at(32);
    let (iv, ciphertext) = rest.split_at(12);
    let mut bundle_key = [0u8; 32];
    wacore::crypto::hkdf_sha256_into(
        &eph_shared,
        Some(salt),
        b"link_code_pairing_key_bundle_encryption_key",
        &mut bundle_key,
    )
    .map_err(|e| format!("{e:?}"))?;
    let iv: [u8; 12] = iv.try_into().map_err(|_| "bad iv")?;
    let mut bundle = Vec::new();
    wacore_libsignal::crypto::aes_256_gcm_decrypt(&bundle_key, &iv, b"", ciphertext, &mut bundle)
        .map_err(|_| "pair code does not match".to_string())?;
    if bundle.len() != 96 {
        return Err("key bundle has the wrong size".into());
    }
    let mut ikm = Vec::with_capacity(96);
    ikm.extend_from_slice(&eph_shared);
    ikm.extend_from_slice(&identity_shared);
    ikm.extend_from_slice(&bundle[64..96]);
    let mut adv_secret = [0u8; 32];
    wacore::crypto::hkdf_sha256_into(&ikm, None, b"adv_secret", &mut adv_secret)
        .map_err(|e| format!("{e:?}"))?;
    tracing::debug!(code = %attempt.code, "pair code accepted");
    link_device(
        sim,
        &noise_pub,
        Some(&attempt.phone),
        attempt.push_name.as_deref(),
        companion_identity,
        adv_secret,
    )
    .map_err(|e| e.to_string())
}

/// The primary phone sends a companion its app-state sync key, as a Signal-encrypted
/// protocol message from device 0. This ends the client's key-share grace wait.
pub async fn send_key_share(sim: &Arc<Sim>, phone: &str, device: u16) -> Result<(), String> {
    let (primary, keys, raw_id, indexes, key_id, key_data, serial) = {
        let mut world = sim.world();
        let serial = world.serial();
        let account = world.accounts.get(phone).ok_or("no such account")?;
        let dev = account.devices.get(&device).ok_or("no such device")?;
        let mut indexes = vec![0];
        indexes.extend(account.valid_key_indexes());
        (
            account.primary.clone(),
            dev.keys.clone(),
            account.raw_id,
            indexes,
            account.app_state_key_id.clone(),
            account.app_state_key.to_vec(),
            serial,
        )
    };
    let bundle = PublicBundle {
        registration_id: keys.registration_id,
        identity: keys.identity,
        signed_prekey_id: keys.signed_prekey_id,
        signed_prekey: keys.signed_prekey,
        signed_prekey_signature: keys.signed_prekey_signature.clone(),
        one_time: None,
    };
    let share = wa::message::AppStateSyncKeyShare {
        keys: vec![wa::message::AppStateSyncKey {
            key_id: MessageField::some(wa::message::AppStateSyncKeyId {
                key_id: Some(key_id),
            }),
            key_data: MessageField::some(wa::message::AppStateSyncKeyData {
                key_data: Some(key_data),
                fingerprint: MessageField::some(wa::message::AppStateSyncKeyFingerprint {
                    raw_id: Some(raw_id),
                    current_index: indexes.last().copied(),
                    device_indexes: indexes,
                }),
                timestamp: Some(now_millis() as i64),
            }),
        }],
    };
    let message = wa::Message {
        protocol_message: MessageField::some(wa::message::ProtocolMessage {
            r#type: Some(wa::message::protocol_message::Type::APP_STATE_SYNC_KEY_SHARE),
            app_state_sync_key_share: MessageField::some(share),
            ..Default::default()
        }),
        ..Default::default()
    };
    let padded = wacore::messages::MessageUtils::encode_and_pad(&message);
    let peer = address(phone, device);
    let encrypted = {
        let mut endpoint = primary.lock().await;
        endpoint.ensure_session(&peer, &bundle, device).await?;
        endpoint.encrypt(&peer, &padded).await?
    };
    let node = NodeBuilder::new("message")
        .attr("from", format!("{phone}@s.whatsapp.net"))
        .attr("id", format!("3EB0{:018X}", serial))
        .attr("type", "text")
        .attr("category", "peer")
        .attr("t", now_secs().to_string())
        .children([NodeBuilder::new("enc")
            .attr("v", "2")
            .attr("type", encrypted.kind)
            .bytes(encrypted.bytes)
            .build()])
        .build();
    sim.world().deliver(phone, device, node);
    tracing::debug!(phone, device, "app-state key share sent");
    Ok(())
}

/// Tells every other companion device that `phone` gained or lost device `device`
/// (`<notification type="devices">`), so cached device lists stay current.
pub fn announce_device_change(world: &mut World, phone: &str, device: u16, added: bool) {
    let serial = world.serial();
    let Some(account) = world.accounts.get(phone) else {
        return;
    };
    let key_index = if added {
        account.devices.get(&device).map(|d| d.key_index)
    } else {
        None
    };
    let signed = signed_key_index_list(
        &account.account_key,
        account.raw_id,
        account.key_index_ts,
        account.next_key_index.saturating_sub(1),
        account.valid_key_indexes(),
    );
    let mut device_node =
        NodeBuilder::new("device").attr("jid", format!("{phone}:{device}@s.whatsapp.net"));
    if let Some(k) = key_index {
        device_node = device_node.attr("key-index", k.to_string());
    }
    let op = NodeBuilder::new(if added { "add" } else { "remove" })
        .attr("device_hash", format!("2:{:08x}", serial))
        .children([
            device_node.build(),
            NodeBuilder::new("key-index-list")
                .attr("ts", account.key_index_ts.max(1).to_string())
                .bytes(signed)
                .build(),
        ])
        .build();
    let stanza = NodeBuilder::new("notification")
        .attr("from", format!("{phone}@s.whatsapp.net"))
        .attr("type", "devices")
        .attr("id", format!("dev-{serial}"))
        .attr("t", now_secs().to_string())
        .children([op])
        .build();
    let targets: Vec<(String, u16)> = world
        .accounts
        .values()
        .flat_map(|a| a.devices.keys().map(move |d| (a.phone.clone(), *d)))
        .filter(|(p, d)| !(p == phone && *d == device))
        .collect();
    for (p, d) in targets {
        world.deliver(&p, d, stanza.clone());
    }
}
