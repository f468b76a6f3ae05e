//! The simulated phone sending: an account's device 0 (e.g. a sim-only user) writes a text
//! to a contact or a group. It encrypts with its own Signal state exactly like a real phone
//! (pkmsg/msg per companion device, sender keys for groups) and the sim delivers the result.

use std::sync::Arc;

use wacore_binary::builder::NodeBuilder;
use wacore_binary::node::Node;
use waproto::buffa::MessageField;
use waproto::whatsapp as wa;

use crate::signal::{PublicBundle, address, now_secs};
use crate::world::Sim;

/// Where a phone message goes: the chat it belongs to and every companion device that
/// gets a copy, with the destination a device-sent copy names (for the sender's own).
struct Fanout {
    chat: String,
    group: bool,
    targets: Vec<(String, u16)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
}

/// Sends `text` from `from`'s phone to `to` (a phone number, a user JID, or a group JID).
/// Returns the message id.
pub async fn send_text(
    sim: &Arc<Sim>,
    from: &str,
    to: &str,
    text: &str,
) -> Result<String, SendError> {
    let (fanout, endpoint, push_name, id) = {
        let mut world = sim.world();
        let account = world
            .accounts
            .get(from)
            .ok_or_else(|| SendError::NotFound(format!("no account {from}")))?;
        let endpoint = account.primary.clone();
        let push_name = account.push_name.clone();
        let own: Vec<(String, u16)> = account
            .devices
            .keys()
            .map(|d| (from.to_string(), *d))
            .collect();
        let fanout = if let Some(gid) = to
            .strip_suffix("@g.us")
            .or_else(|| (to.starts_with("120363") && !to.contains('@')).then_some(to))
        {
            let group = world
                .groups
                .get(gid)
                .ok_or_else(|| SendError::NotFound(format!("no group {gid}")))?;
            if !group.members().iter().any(|m| m == from) {
                return Err(SendError::NotFound(format!("{from} is not in group {gid}")));
            }
            let mut targets = Vec::new();
            for member in group.members() {
                if let Some(a) = world.accounts.get(&member) {
                    targets.extend(a.devices.keys().map(|d| (member.clone(), *d)));
                }
            }
            Fanout {
                chat: format!("{gid}@g.us"),
                group: true,
                targets,
            }
        } else {
            let user = to.split('@').next().unwrap_or(to);
            let user = user.split(':').next().unwrap_or(user);
            let peer = world
                .resolve_user(user, to.ends_with("@lid"))
                .ok_or_else(|| SendError::NotFound(format!("{to} is not on WhatsApp")))?;
            let mut targets: Vec<(String, u16)> = world
                .accounts
                .get(&peer)
                .map(|a| a.devices.keys().map(|d| (peer.clone(), *d)).collect())
                .unwrap_or_default();
            if peer != from {
                targets.extend(own);
            }
            Fanout {
                chat: format!("{peer}@s.whatsapp.net"),
                group: false,
                targets,
            }
        };
        let id = format!(
            "3A{:018X}",
            world.serial() * 7_919 + rand::random_range(0..7_919u64)
        );
        (fanout, endpoint, push_name, id)
    };

    let message = wa::Message {
        conversation: Some(text.to_string()),
        ..Default::default()
    };
    let sender_jid = format!("{from}@s.whatsapp.net");
    let t = now_secs().to_string();
    let mut endpoint = endpoint.lock().await;
    // The distribution message must capture the chain before it advances.
    let skdm = if fanout.group {
        Some(
            endpoint
                .sender_key_distribution(&fanout.chat, &sender_jid)
                .await
                .map_err(SendError::Failed)?,
        )
    } else {
        None
    };
    let skmsg = if fanout.group {
        let padded = wacore::messages::MessageUtils::encode_and_pad(&message);
        Some(
            endpoint
                .group_encrypt(&fanout.chat, &sender_jid, &padded)
                .await
                .map_err(SendError::Failed)?,
        )
    } else {
        None
    };
    let mut deliveries: Vec<(String, u16, Node)> = Vec::new();
    for (phone, device) in &fanout.targets {
        let peer = address(phone, *device);
        if !endpoint.has_session(&peer) {
            let bundle = {
                let mut world = sim.world();
                let Some(keys) = world
                    .accounts
                    .get_mut(phone)
                    .and_then(|a| a.devices.get_mut(device))
                    .map(|d| &mut d.keys)
                else {
                    continue;
                };
                PublicBundle {
                    registration_id: keys.registration_id,
                    identity: keys.identity,
                    signed_prekey_id: keys.signed_prekey_id,
                    signed_prekey: keys.signed_prekey,
                    signed_prekey_signature: keys.signed_prekey_signature.clone(),
                    one_time: keys.one_time.pop_front(),
                }
            };
            if let Err(e) = endpoint.ensure_session(&peer, &bundle, *device).await {
                tracing::warn!("phone {from}: no session with {phone}:{device}: {e}");
                continue;
            }
        }
        let own_copy = phone == from;
        let plaintext = match (&skdm, own_copy) {
            (Some(skdm), _) => wa::Message {
                sender_key_distribution_message: MessageField::some(
                    wa::message::SenderKeyDistributionMessage {
                        group_id: Some(fanout.chat.clone()),
                        axolotl_sender_key_distribution_message: Some(skdm.clone()),
                    },
                ),
                ..Default::default()
            },
            (None, true) => {
                wacore::messages::wrap_device_sent(message.clone(), fanout.chat.clone())
            }
            (None, false) => message.clone(),
        };
        let padded = wacore::messages::MessageUtils::encode_and_pad(&plaintext);
        let encrypted = match endpoint.encrypt(&peer, &padded).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("phone {from}: cannot encrypt for {phone}:{device}: {e}");
                continue;
            }
        };
        let mut kids = vec![
            NodeBuilder::new("enc")
                .attr("v", "2")
                .attr("type", encrypted.kind)
                .bytes(encrypted.bytes)
                .build(),
        ];
        let mut builder = NodeBuilder::new("message")
            .attr("id", id.clone())
            .attr("type", "text")
            .attr("t", t.clone())
            .attr("notify", push_name.clone());
        if let Some(sk) = &skmsg {
            kids.push(
                NodeBuilder::new("enc")
                    .attr("v", "2")
                    .attr("type", "skmsg")
                    .bytes(sk.clone())
                    .build(),
            );
            builder = builder
                .attr("from", fanout.chat.clone())
                .attr("participant", sender_jid.clone())
                .attr("addressing_mode", "pn");
        } else {
            builder = builder.attr("from", sender_jid.clone());
            if own_copy {
                builder = builder.attr("recipient", fanout.chat.clone());
            }
        }
        deliveries.push((phone.clone(), *device, builder.children(kids).build()));
    }
    drop(endpoint);
    let mut world = sim.world();
    world.stats.messages_routed += 1;
    for (phone, device, node) in deliveries {
        world.deliver(&phone, device, node);
    }
    tracing::info!(from, to, id = %id, "phone sent a message");
    Ok(id)
}
