//! Message routing: DMs and group messages from a client to every recipient device (live,
//! queued for offline devices, or decrypted by the simulated phone for device 0 / sim-only
//! users), plus server acks and receipt forwarding.

use std::sync::Arc;

use wacore_binary::builder::NodeBuilder;
use wacore_binary::node::Node;
use waproto::whatsapp as wa;

use crate::conn::Ctx;
use crate::iq::split_jid;
use crate::nodes::{attr, child, children};
use crate::signal::{address, now_secs};
use crate::world::{InboxMessage, PhoneJob, QuotedMessage, Sim};

/// One encrypted payload addressed to a specific device.
#[derive(Clone)]
pub struct Enc {
    pub kind: String,
    pub bytes: Vec<u8>,
    pub node: Node,
}

pub fn enc_of(node: &Node) -> Option<Enc> {
    Some(Enc {
        kind: attr(node, "type")?,
        bytes: crate::nodes::bytes(node)?,
        node: node.clone(),
    })
}

/// Handles a `<message>` stanza sent by a logged-in client.
pub async fn on_message(ctx: &Ctx, node: &Node) {
    let Some((phone, device)) = ctx.device() else {
        return;
    };
    let id = attr(node, "id").unwrap_or_default();
    let Some(to) = attr(node, "to") else {
        tracing::warn!(id, "message without a recipient refused");
        ctx.send(
            NodeBuilder::new("ack")
                .attr("class", "message")
                .attr("id", id)
                .attr("error", "400")
                .build(),
        );
        return;
    };
    let t = now_secs();
    ctx.send(
        NodeBuilder::new("ack")
            .attr("class", "message")
            .attr("id", id.clone())
            .attr("from", to.clone())
            .attr("t", t.to_string())
            .build(),
    );
    if to.ends_with("@g.us") {
        crate::groups::route_group_message(ctx, node, &phone, device, &to).await;
        return;
    }
    if to.ends_with("@broadcast") || to.ends_with("@newsletter") {
        tracing::debug!("ignoring broadcast/newsletter message");
        return;
    }
    route_dm(&ctx.sim, node, &phone, device, &to).await;
}

async fn route_dm(sim: &Arc<Sim>, node: &Node, phone: &str, device: u16, to: &str) {
    let Some((peer_user, _, peer_is_lid)) = split_jid(to) else {
        return;
    };
    let id = attr(node, "id").unwrap_or_default();
    let kind = attr(node, "type").unwrap_or_else(|| "text".into());
    let t = now_secs();
    let device_identity = child(node, "device-identity").cloned();
    let (push_name, peer_phone) = {
        let world = sim.world();
        (
            world
                .accounts
                .get(phone)
                .map(|a| a.push_name.clone())
                .unwrap_or_default(),
            world.resolve_user(&peer_user, peer_is_lid),
        )
    };
    let Some(peer_phone) = peer_phone else {
        tracing::info!(
            to,
            "message to a number that is not on the simulated WhatsApp"
        );
        return;
    };
    let sender_jid = if device == 0 {
        format!("{phone}@s.whatsapp.net")
    } else {
        format!("{phone}:{device}@s.whatsapp.net")
    };
    let mut targets: Vec<(String, u16, Enc)> = Vec::new();
    if let Some(participants) = child(node, "participants") {
        for to_node in participants.get_children_by_tag("to") {
            let Some((user, dev, is_lid)) = attr(to_node, "jid").as_deref().and_then(split_jid)
            else {
                continue;
            };
            let Some(enc) = child(to_node, "enc").and_then(enc_of) else {
                continue;
            };
            let Some(target_phone) = sim.world().resolve_user(&user, is_lid) else {
                continue;
            };
            targets.push((target_phone, dev, enc));
        }
    } else if let Some(enc) = child(node, "enc").and_then(enc_of) {
        // A single-recipient stanza addressed to one device.
        if let Some((_, dev, _)) = split_jid(to) {
            targets.push((peer_phone.clone(), dev, enc));
        }
    }
    sim.world().stats.messages_routed += 1;
    for (target_phone, target_device, enc) in targets {
        if target_phone == phone && target_device == device {
            continue;
        }
        if target_device == 0 {
            let phone_sim = sim.clone();
            // The chat is named from the receiving phone's side.
            let chat = if target_phone == phone {
                format!("{peer_phone}@s.whatsapp.net")
            } else {
                format!("{phone}@s.whatsapp.net")
            };
            let (sender, id) = (phone.to_string(), id.clone());
            let target = target_phone.clone();
            spawn_phone_work(sim, &target_phone, async move {
                phone_receive(&phone_sim, &target, &sender, device, &chat, &id, &enc, None).await;
            });
            continue;
        }
        let mut builder = NodeBuilder::new("message")
            .attr("from", sender_jid.clone())
            .attr("id", id.clone())
            .attr("type", kind.clone())
            .attr("t", t.to_string())
            .attr("notify", push_name.clone());
        if target_phone == phone {
            builder = builder.attr("recipient", format!("{peer_phone}@s.whatsapp.net"));
        }
        let mut kids = vec![enc.node.clone()];
        if enc.kind == "pkmsg"
            && let Some(identity) = &device_identity
        {
            kids.push(identity.clone());
        }
        let stanza = builder.children(kids).build();
        sim.world().deliver(&target_phone, target_device, stanza);
    }
}

/// Queues a simulated phone's handling of a message, counted in `phone_messages_pending` until
/// it is done. Each phone works through its messages one at a time in the order they were
/// routed, as a real phone reads its socket: the message that carries a new sender key is
/// decrypted before the ones encrypted with it. Different phones work in parallel.
pub fn spawn_phone_work(
    sim: &Arc<Sim>,
    phone: &str,
    work: impl Future<Output = ()> + Send + 'static,
) {
    let mut world = sim.world();
    world.stats.phone_messages_pending += 1;
    let mut job: PhoneJob = Box::pin(work);
    if let Some(queue) = world.phone_queues.get(phone) {
        match queue.send(job) {
            Ok(()) => return,
            Err(closed) => job = closed.0,
        }
    }
    let (queue, mut jobs) = tokio::sync::mpsc::unbounded_channel::<PhoneJob>();
    // A fresh channel's receiver is alive: this send cannot fail.
    let _ = queue.send(job);
    world.phone_queues.insert(phone.to_string(), queue);
    drop(world);
    // The worker holds the sim weakly: it ends when the sim (and with it the queue) is dropped.
    let sim = Arc::downgrade(sim);
    tokio::spawn(async move {
        while let Some(job) = jobs.recv().await {
            job.await;
            match sim.upgrade() {
                Some(sim) => sim.world().stats.phone_messages_pending -= 1,
                None => break,
            }
        }
    });
}

/// The simulated phone of `target` (device 0) receives an encrypted payload and keeps the
/// decrypted text in its inbox.
#[allow(clippy::too_many_arguments)]
pub async fn phone_receive(
    sim: &Arc<Sim>,
    target: &str,
    sender: &str,
    sender_device: u16,
    chat: &str,
    id: &str,
    enc: &Enc,
    group_skmsg: Option<(&str, &[u8])>,
) {
    let Some(endpoint) = sim.world().accounts.get(target).map(|a| a.primary.clone()) else {
        return;
    };
    let peer = address(sender, sender_device);
    let mut endpoint = endpoint.lock().await;
    let mut texts = Vec::new();
    if enc.kind == "pkmsg" || enc.kind == "msg" {
        match endpoint.decrypt(&peer, &enc.kind, &enc.bytes).await {
            Ok(padded) => match wacore::messages::decode_plaintext(&padded, 2) {
                Ok(message) => {
                    if let Some(skdm) = message.sender_key_distribution_message.as_option()
                        && let Some(bytes) = skdm.axolotl_sender_key_distribution_message.as_deref()
                        && let Err(e) = endpoint.process_skdm(chat, &peer, bytes).await
                    {
                        tracing::warn!("phone {target}: bad sender key distribution: {e}");
                    }
                    texts.push(message);
                }
                Err(e) => tracing::warn!("phone {target}: undecodable plaintext: {e}"),
            },
            Err(e) => tracing::warn!(
                "phone {target}: cannot decrypt {} from {sender}:{sender_device}: {e}",
                enc.kind
            ),
        }
    }
    if let Some((group, bytes)) = group_skmsg {
        match endpoint.group_decrypt(group, &peer, bytes).await {
            Ok(padded) => match wacore::messages::decode_plaintext(&padded, 2) {
                Ok(message) => texts.push(message),
                Err(e) => tracing::warn!("phone {target}: undecodable group plaintext: {e}"),
            },
            Err(e) => tracing::warn!("phone {target}: cannot decrypt group message: {e}"),
        }
    }
    drop(endpoint);
    let t = now_secs();
    let mut world = sim.world();
    let Some(account) = world.accounts.get_mut(target) else {
        return;
    };
    for message in texts {
        let (chat, message) = match message.device_sent_message.as_option() {
            Some(dsm) => (
                dsm.destination_jid
                    .clone()
                    .unwrap_or_else(|| chat.to_string()),
                dsm.message.as_option().cloned().unwrap_or_default(),
            ),
            None => (chat.to_string(), message),
        };
        if let Some(text) = text_of(&message) {
            account.inbox.push(InboxMessage {
                from: format!("{sender}@s.whatsapp.net"),
                chat,
                id: id.to_string(),
                text,
                t,
                quoted: quoted_of(&message),
            });
        }
    }
}

fn quoted_of(message: &wa::Message) -> Option<QuotedMessage> {
    let context = message
        .extended_text_message
        .as_option()?
        .context_info
        .as_option()?;
    Some(QuotedMessage {
        id: context.stanza_id.clone()?,
        participant: context.participant.clone(),
        text: context.quoted_message.as_option().and_then(text_of),
    })
}

fn text_of(message: &wa::Message) -> Option<String> {
    if let Some(text) = &message.conversation {
        return Some(text.clone());
    }
    message
        .extended_text_message
        .as_option()
        .and_then(|m| m.text.clone())
}

/// A client's `<ack class="message">` (sent for a message that gets no delivery receipt,
/// or a rejection with `error`): WhatsApp drops the message from the device's queue.
pub fn on_ack(ctx: &Ctx, node: &Node) {
    if attr(node, "class").as_deref() != Some("message") {
        return;
    }
    let (Some((phone, device)), Some(id), Some(to)) =
        (ctx.device(), attr(node, "id"), attr(node, "to"))
    else {
        return;
    };
    let participant = attr(node, "participant");
    let acked = ctx.sim.world().ack_messages(
        &phone,
        device,
        &to,
        participant.as_deref(),
        std::slice::from_ref(&id),
    );
    tracing::debug!(phone = %phone, device, id, acked, "message ack");
}

/// Receipt types by which a device confirms it has a message: a delivery receipt in any
/// of its forms, or a read/played receipt (which implies delivery). Retry receipts and
/// error reports are not: the message is still owed.
fn confirms_delivery(kind: Option<&str>) -> bool {
    matches!(
        kind,
        None | Some(
            "inactive" | "sender" | "peer_msg" | "read" | "read-self" | "played" | "played-self"
        )
    )
}

/// The message ids a receipt covers: its `id` plus `<list><item id/></list>`.
fn receipt_ids(node: &Node) -> Vec<String> {
    let mut ids: Vec<String> = attr(node, "id").into_iter().collect();
    if let Some(list) = child(node, "list") {
        ids.extend(
            list.get_children_by_tag("item")
                .filter_map(|i| attr(i, "id")),
        );
    }
    ids
}

/// Forwards a client's `<receipt>` to the original sender and acks it. A delivery-type
/// receipt also acknowledges the messages it names, as WhatsApp's offline queue treats it.
pub fn on_receipt(ctx: &Ctx, node: &Node) {
    let Some((phone, device)) = ctx.device() else {
        return;
    };
    let id = attr(node, "id").unwrap_or_default();
    let to = attr(node, "to").unwrap_or_default();
    if confirms_delivery(attr(node, "type").as_deref()) && !to.is_empty() {
        let participant = attr(node, "participant");
        ctx.sim.world().ack_messages(
            &phone,
            device,
            &to,
            participant.as_deref(),
            &receipt_ids(node),
        );
    }
    let mut ack = NodeBuilder::new("ack")
        .attr("class", "receipt")
        .attr("id", id.clone())
        .attr("from", to.clone());
    if let Some(kind) = attr(node, "type") {
        ack = ack.attr("type", kind);
    }
    ctx.send(ack.build());
    // The receipt goes to the sender: `participant` in groups, `to` otherwise.
    let sender = attr(node, "participant").unwrap_or_else(|| to.clone());
    let Some((user, dev, is_lid)) = split_jid(&sender) else {
        return;
    };
    let mut world = ctx.sim.world();
    let Some(sender_phone) = world.resolve_user(&user, is_lid) else {
        return;
    };
    let from = if device == 0 {
        format!("{phone}@s.whatsapp.net")
    } else {
        format!("{phone}:{device}@s.whatsapp.net")
    };
    let mut receipt = NodeBuilder::new("receipt")
        .attr("id", id)
        .attr("t", now_secs().to_string());
    if to.ends_with("@g.us") {
        receipt = receipt.attr("from", to.clone()).attr("participant", from);
    } else {
        receipt = receipt.attr("from", from);
    }
    if let Some(kind) = attr(node, "type") {
        receipt = receipt.attr("type", kind);
    }
    // Batched ids (`<list>`) and retry requests (`<retry>`, `<keys>`) travel along.
    if !children(node).is_empty() {
        receipt = receipt.children(children(node).to_vec());
    }
    let receipt = receipt.build();
    // Device 0 is the simulated phone, which needs no receipts; a companion gets its own.
    if dev == 0 || (sender_phone == phone && dev == device) {
        return;
    }
    if !world.device_conns(&sender_phone, dev).is_empty() {
        world.deliver(&sender_phone, dev, receipt);
    }
}
