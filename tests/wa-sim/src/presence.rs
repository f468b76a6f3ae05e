//! Presence and chat states: availability announced by a client is pushed to the devices
//! that subscribed to that account, and typing indicators are relayed to the peer (or to
//! the other group members).

use wacore_binary::builder::NodeBuilder;
use wacore_binary::node::Node;

use crate::conn::Ctx;
use crate::iq::split_jid;
use crate::nodes::{attr, children};
use crate::signal::now_secs;
use crate::world::World;

/// The presence stanza subscribers of `phone` should see now.
fn presence_of(world: &World, phone: &str) -> Node {
    let available = world
        .available
        .iter()
        .any(|(p, d)| p == phone && !world.device_conns(p, *d).is_empty());
    let mut builder = NodeBuilder::new("presence").attr("from", format!("{phone}@s.whatsapp.net"));
    if available {
        builder = builder.attr("type", "available");
    } else {
        builder = builder.attr("type", "unavailable").attr(
            "last",
            world
                .last_seen
                .get(phone)
                .map(|t| t.to_string())
                .unwrap_or_else(|| "deny".to_string()),
        );
    }
    builder.build()
}

/// Pushes `phone`'s current presence to everyone subscribed to it.
pub fn broadcast(world: &mut World, phone: &str) {
    let stanza = presence_of(world, phone);
    let subscribers: Vec<(String, u16)> = world
        .presence_subscribers
        .get(phone)
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default();
    for (p, d) in subscribers {
        for conn in world.device_conns(&p, d) {
            conn.send(stanza.clone());
        }
    }
}

/// Handles a client `<presence>`.
pub fn on_presence(ctx: &Ctx, node: &Node) {
    let Some((phone, device)) = ctx.device() else {
        return;
    };
    let kind = attr(node, "type").unwrap_or_else(|| "available".into());
    let mut world = ctx.sim.world();
    // The name a client announces is the account's push name from now on.
    if let Some(name) = attr(node, "name").filter(|n| !n.is_empty())
        && let Some(account) = world.accounts.get_mut(&phone)
    {
        account.push_name = name;
    }
    match (kind.as_str(), attr(node, "to")) {
        ("subscribe", Some(to)) => {
            let Some(target) =
                split_jid(&to).and_then(|(user, _, lid)| world.resolve_user(&user, lid))
            else {
                return;
            };
            world
                .presence_subscribers
                .entry(target.clone())
                .or_default()
                .insert((phone, device));
            let stanza = presence_of(&world, &target);
            ctx.send(stanza);
        }
        ("unsubscribe", Some(to)) => {
            if let Some(target) =
                split_jid(&to).and_then(|(user, _, lid)| world.resolve_user(&user, lid))
                && let Some(set) = world.presence_subscribers.get_mut(&target)
            {
                set.remove(&(phone, device));
            }
        }
        ("available", None) => {
            world.available.insert((phone.clone(), device));
            broadcast(&mut world, &phone);
        }
        ("unavailable", None) => {
            world.available.remove(&(phone.clone(), device));
            world.last_seen.insert(phone.clone(), now_secs());
            broadcast(&mut world, &phone);
        }
        _ => {}
    }
}

/// Relays a client `<chatstate to=..>` (typing, recording, paused).
pub fn on_chatstate(ctx: &Ctx, node: &Node) {
    let Some((phone, device)) = ctx.device() else {
        return;
    };
    let Some(to) = attr(node, "to") else { return };
    let world = &mut *ctx.sim.world();
    let (recipients, from, participant): (Vec<String>, String, Option<String>) = if to
        .ends_with("@g.us")
    {
        let gid = to.trim_end_matches("@g.us");
        let Some(group) = world.groups.get(gid) else {
            return;
        };
        (
            group.members(),
            to.clone(),
            Some(format!("{phone}@s.whatsapp.net")),
        )
    } else {
        let Some(target) = split_jid(&to).and_then(|(user, _, lid)| world.resolve_user(&user, lid))
        else {
            return;
        };
        (vec![target], format!("{phone}@s.whatsapp.net"), None)
    };
    let mut builder = NodeBuilder::new("chatstate").attr("from", from);
    if let Some(p) = participant {
        builder = builder.attr("participant", p);
    }
    let stanza = builder.children(children(node).to_vec()).build();
    for member in recipients {
        let devices: Vec<u16> = world
            .accounts
            .get(&member)
            .map(|a| a.devices.keys().copied().collect())
            .unwrap_or_default();
        for d in devices {
            if member == phone && d == device {
                continue;
            }
            for conn in world.device_conns(&member, d) {
                conn.send(stanza.clone());
            }
        }
    }
}
