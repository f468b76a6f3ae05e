//! Answers to the IQs a logged-in (or pairing) client sends: passive/active, app-state
//! sync, prekey upload/fetch/digest, usync, abt, blocklist, privacy, pings, logout, the
//! pair-code stages, groups (`w:g2`) and MEX (`w:mex`). Anything unknown gets a well-formed
//! 501 and is counted.

use wacore_binary::builder::NodeBuilder;
use wacore_binary::node::Node;

use crate::conn::Ctx;
use crate::nodes::{
    attr, be_uint, bytes_node, child, child_bytes, child_key32, children, id3, iq_error, iq_result,
    show,
};
use crate::signal::{PublicBundle, now_secs};
use crate::world::ConnState;

/// Entry point for `<iq type="get|set">` from the client.
pub async fn handle(ctx: &Ctx, node: &Node) {
    let xmlns = attr(node, "xmlns").unwrap_or_default();
    let first = children(node)
        .first()
        .map(|c| c.tag.to_string())
        .unwrap_or_default();
    let fault = {
        let mut world = ctx.sim.world();
        world.count_iq(format!("{xmlns}/{first}"));
        world.take_iq_fault(&xmlns)
    };
    if let Some((code, text)) = fault {
        tracing::info!("injected error {code} for {xmlns} iq");
        ctx.send(iq_error(node, code, &text));
        return;
    }
    let handled = match xmlns.as_str() {
        "passive" => passive(ctx, node, &first),
        "w:p" => {
            ctx.send(
                NodeBuilder::new("iq")
                    .attr("type", "result")
                    .attr("id", attr(node, "id").unwrap_or_default())
                    .attr("from", "s.whatsapp.net")
                    .attr("t", now_secs().to_string())
                    .build(),
            );
            true
        }
        "w:sync:app:state" => app_state(ctx, node),
        "encrypt" => encrypt(ctx, node, &first).await,
        "usync" => usync(ctx, node),
        "abt" => {
            ctx.send(iq_result(
                node,
                vec![
                    NodeBuilder::new("props")
                        .attr("protocol", "1")
                        .attr("hash", "wa-sim")
                        .attr("refresh", "86400")
                        .build(),
                ],
            ));
            true
        }
        "blocklist" => {
            let content = if attr(node, "type").as_deref() == Some("get") {
                vec![NodeBuilder::new("list").build()]
            } else {
                vec![]
            };
            ctx.send(iq_result(node, content));
            true
        }
        "privacy" => privacy(ctx, node, &first),
        "md" => md(ctx, node, &first),
        // Nobody in the simulator has a profile picture.
        "w:profile:picture" if attr(node, "type").as_deref() == Some("get") => {
            ctx.send(iq_error(node, 404, "item-not-found"));
            true
        }
        "status" if first == "status" => {
            ctx.send(iq_result(node, vec![]));
            true
        }
        "w:g2" => crate::groups::handle_iq(ctx, node, &first).await,
        "w:mex" => crate::mex::handle_iq(ctx, node),
        _ => false,
    };
    if !handled {
        tracing::warn!("unknown iq answered with 501: {}", show(node));
        ctx.sim.world().stats.unknown_iqs += 1;
        ctx.send(iq_error(node, 501, "feature-not-implemented"));
    }
}

fn passive(ctx: &Ctx, node: &Node, first: &str) -> bool {
    match first {
        "active" => {
            ctx.send(iq_result(node, vec![]));
            let Some((phone, device)) = ctx.device() else {
                return true;
            };
            let share = {
                let mut world = ctx.sim.world();
                world.drain_offline(ctx.conn_id, &phone, device);
                match world
                    .accounts
                    .get_mut(&phone)
                    .and_then(|a| a.devices.get_mut(&device))
                {
                    Some(d) => {
                        let share = d.needs_key_share || d.reshare_keys_on_login;
                        d.needs_key_share = false;
                        share
                    }
                    None => false,
                }
            };
            if share {
                let sim = ctx.sim.clone();
                tokio::spawn(async move {
                    if let Err(e) = crate::pairing::send_key_share(&sim, &phone, device).await {
                        tracing::warn!(phone = %phone, device, "app-state key share failed: {e}");
                    }
                });
            }
            true
        }
        "passive" => {
            ctx.send(iq_result(node, vec![]));
            true
        }
        _ => false,
    }
}

fn app_state(ctx: &Ctx, node: &Node) -> bool {
    let Some(sync) = child(node, "sync") else {
        return false;
    };
    let collections = sync
        .get_children_by_tag("collection")
        .map(|c| {
            let version: u64 = attr(c, "version").and_then(|v| v.parse().ok()).unwrap_or(0);
            let patches = child(c, "patch")
                .map(|_| c.get_children_by_tag("patch").count() as u64)
                .unwrap_or(0);
            NodeBuilder::new("collection")
                .attr("name", attr(c, "name").unwrap_or_default())
                .attr("version", (version + patches).to_string())
                .build()
        })
        .collect::<Vec<_>>();
    ctx.send(iq_result(
        node,
        vec![NodeBuilder::new("sync").children(collections).build()],
    ));
    true
}

async fn encrypt(ctx: &Ctx, node: &Node, first: &str) -> bool {
    let is_set = attr(node, "type").as_deref() == Some("set");
    match first {
        "digest" => {
            ctx.send(iq_error(node, 503, "service-unavailable"));
            true
        }
        "count" => {
            let count = ctx
                .device()
                .and_then(|(phone, device)| {
                    ctx.sim
                        .world()
                        .accounts
                        .get(&phone)
                        .and_then(|a| a.devices.get(&device))
                        .map(|d| d.keys.one_time.len())
                })
                .unwrap_or(0);
            ctx.send(iq_result(
                node,
                vec![
                    NodeBuilder::new("count")
                        .attr("value", count.to_string())
                        .build(),
                ],
            ));
            true
        }
        "key" => {
            let answer = prekey_fetch(ctx, child(node, "key")).await;
            ctx.send(iq_result(
                node,
                vec![NodeBuilder::new("list").children(answer).build()],
            ));
            true
        }
        "rotate" if is_set => {
            if let Some(skey) = child(node, "rotate").and_then(|r| child(r, "skey")) {
                update_keys(ctx, |keys| {
                    if let (Some(id), Some(value), Some(sig)) = (
                        child_bytes(skey, "id").as_deref().and_then(be_uint),
                        child_key32(skey, "value"),
                        child_bytes(skey, "signature"),
                    ) {
                        keys.signed_prekey_id = id;
                        keys.signed_prekey = value;
                        keys.signed_prekey_signature = sig;
                    }
                });
            }
            ctx.send(iq_result(node, vec![]));
            true
        }
        _ if is_set && child(node, "list").is_some() => {
            update_keys(ctx, |keys| {
                if let Some(reg) = child_bytes(node, "registration")
                    .as_deref()
                    .and_then(be_uint)
                {
                    keys.registration_id = reg;
                }
                if let Some(identity) = child_key32(node, "identity") {
                    keys.identity = identity;
                }
                if let Some(skey) = child(node, "skey")
                    && let (Some(id), Some(value), Some(sig)) = (
                        child_bytes(skey, "id").as_deref().and_then(be_uint),
                        child_key32(skey, "value"),
                        child_bytes(skey, "signature"),
                    )
                {
                    keys.signed_prekey_id = id;
                    keys.signed_prekey = value;
                    keys.signed_prekey_signature = sig;
                }
                if let Some(list) = child(node, "list") {
                    for key in list.get_children_by_tag("key") {
                        if let (Some(id), Some(value)) = (
                            child_bytes(key, "id").as_deref().and_then(be_uint),
                            child_key32(key, "value"),
                        ) {
                            keys.one_time.push_back((id, value));
                        }
                    }
                }
            });
            ctx.send(iq_result(node, vec![]));
            true
        }
        _ => false,
    }
}

/// Applies a prekey update to the device of this connection.
fn update_keys(ctx: &Ctx, f: impl FnOnce(&mut crate::world::DeviceKeys)) {
    let Some((phone, device)) = ctx.device() else {
        return;
    };
    let mut world = ctx.sim.world();
    if let Some(d) = world
        .accounts
        .get_mut(&phone)
        .and_then(|a| a.devices.get_mut(&device))
    {
        f(&mut d.keys);
    }
}

fn bundle_node(jid: String, bundle: &PublicBundle, device_identity: Option<Vec<u8>>) -> Node {
    let mut kids = vec![
        bytes_node(
            "registration",
            bundle.registration_id.to_be_bytes().to_vec(),
        ),
        bytes_node("type", vec![5u8]),
        bytes_node("identity", bundle.identity.to_vec()),
        NodeBuilder::new("skey")
            .children([
                bytes_node("id", id3(bundle.signed_prekey_id)),
                bytes_node("value", bundle.signed_prekey.to_vec()),
                bytes_node("signature", bundle.signed_prekey_signature.clone()),
            ])
            .build(),
    ];
    if let Some((id, key)) = bundle.one_time {
        kids.push(
            NodeBuilder::new("key")
                .children([bytes_node("id", id3(id)), bytes_node("value", key.to_vec())])
                .build(),
        );
    }
    if let Some(identity) = device_identity {
        kids.push(bytes_node("device-identity", identity));
    }
    NodeBuilder::new("user")
        .attr("jid", jid)
        .children(kids)
        .build()
}

/// Splits a JID string into (user, device, is_lid).
pub fn split_jid(jid: &str) -> Option<(String, u16, bool)> {
    let (user_part, server) = jid.split_once('@')?;
    let is_lid = server == "lid";
    let (user, device) = match user_part.split_once(':') {
        Some((u, d)) => (u, d.parse().ok()?),
        None => (user_part, 0),
    };
    let user = user.split('.').next().unwrap_or(user);
    Some((user.to_string(), device, is_lid))
}

async fn prekey_fetch(ctx: &Ctx, key: Option<&Node>) -> Vec<Node> {
    let mut out = Vec::new();
    let Some(key) = key else { return out };
    for user in key.get_children_by_tag("user") {
        let Some(jid) = attr(user, "jid") else {
            continue;
        };
        let refused = NodeBuilder::new("user")
            .attr("jid", jid.clone())
            .children([NodeBuilder::new("error")
                .attr("code", "406")
                .attr("text", "not-acceptable")
                .build()])
            .build();
        let Some((user_part, device, is_lid)) = split_jid(&jid) else {
            out.push(refused);
            continue;
        };
        enum Source {
            Primary(std::sync::Arc<tokio::sync::Mutex<crate::signal::SignalEndpoint>>),
            Companion(PublicBundle, Option<Vec<u8>>),
        }
        let source = {
            let mut world = ctx.sim.world();
            let Some(phone) = world.resolve_user(&user_part, is_lid) else {
                out.push(refused);
                continue;
            };
            let Some(account) = world.accounts.get_mut(&phone) else {
                out.push(refused);
                continue;
            };
            if device == 0 {
                Source::Primary(account.primary.clone())
            } else if let Some(d) = account.devices.get_mut(&device) {
                let one_time = d.keys.one_time.pop_front();
                Source::Companion(
                    PublicBundle {
                        registration_id: d.keys.registration_id,
                        identity: d.keys.identity,
                        signed_prekey_id: d.keys.signed_prekey_id,
                        signed_prekey: d.keys.signed_prekey,
                        signed_prekey_signature: d.keys.signed_prekey_signature.clone(),
                        one_time,
                    },
                    d.device_identity.clone(),
                )
            } else {
                out.push(refused);
                continue;
            }
        };
        let node = match source {
            Source::Primary(endpoint) => {
                let bundle = endpoint.lock().await.take_bundle();
                bundle_node(jid, &bundle, None)
            }
            Source::Companion(bundle, identity) => bundle_node(jid, &bundle, identity),
        };
        out.push(node);
    }
    out
}

fn usync(ctx: &Ctx, node: &Node) -> bool {
    let Some(usync) = child(node, "usync") else {
        return false;
    };
    let query = child(usync, "query");
    let wants = |tag: &str| query.and_then(|q| child(q, tag)).is_some();
    let (want_devices, want_lid, want_contact) = (wants("devices"), wants("lid"), wants("contact"));
    let own_phone = ctx.device().map(|(p, _)| p);
    let world = ctx.sim.world();
    let mut users = Vec::new();
    for user in child(usync, "list")
        .map(|l| l.get_children_by_tag("user").collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let mut jid = attr(user, "jid");
        let contact = child(user, "contact").and_then(crate::nodes::text);
        if jid.is_none()
            && let Some(number) = &contact
        {
            let digits: String = number.chars().filter(|c| c.is_ascii_digit()).collect();
            jid = Some(format!("{digits}@s.whatsapp.net"));
        }
        let Some(jid) = jid else { continue };
        let Some((user_part, _, is_lid)) = split_jid(&jid) else {
            continue;
        };
        let phone = world.resolve_user(&user_part, is_lid);
        if is_lid && !want_contact {
            // PN-only addressing: LID users are answered through their PN twin.
            continue;
        }
        let mut kids = Vec::new();
        if want_contact {
            let kind = if phone.is_some() { "in" } else { "out" };
            let mut builder = NodeBuilder::new("contact").attr("type", kind);
            if let Some(number) = &contact {
                builder = builder.string_content(number.as_str());
            }
            kids.push(builder.build());
        }
        if want_devices && let Some(account) = phone.as_ref().and_then(|p| world.accounts.get(p)) {
            let mut devices = vec![NodeBuilder::new("device").attr("id", "0").build()];
            for d in account.devices.values() {
                devices.push(
                    NodeBuilder::new("device")
                        .attr("id", d.id.to_string())
                        .attr("key-index", d.key_index.to_string())
                        .build(),
                );
            }
            let mut devices_children =
                vec![NodeBuilder::new("device-list").children(devices).build()];
            if !account.devices.is_empty() {
                let signed = crate::pairing::signed_key_index_list(
                    &account.account_key,
                    account.raw_id,
                    account.key_index_ts,
                    account.next_key_index.saturating_sub(1),
                    account.valid_key_indexes(),
                );
                devices_children.push(
                    NodeBuilder::new("key-index-list")
                        .attr("ts", account.key_index_ts.to_string())
                        .bytes(signed)
                        .build(),
                );
            }
            kids.push(
                NodeBuilder::new("devices")
                    .children(devices_children)
                    .build(),
            );
        }
        if want_lid
            && let (Some(account), Some(own)) = (
                phone.as_ref().and_then(|p| world.accounts.get(p)),
                own_phone.as_ref(),
            )
            && &account.phone == own
        {
            kids.push(
                NodeBuilder::new("lid")
                    .attr("val", format!("{}@lid", account.lid))
                    .build(),
            );
        }
        if phone.is_none() && !want_contact {
            continue;
        }
        let user_jid = match &phone {
            Some(p) => format!("{p}@s.whatsapp.net"),
            None => jid.clone(),
        };
        users.push(
            NodeBuilder::new("user")
                .attr("jid", user_jid)
                .children(kids)
                .build(),
        );
    }
    drop(world);
    let mut usync_reply = NodeBuilder::new("usync");
    for key in ["sid", "mode", "context"] {
        if let Some(v) = attr(usync, key) {
            usync_reply = usync_reply.attr(key, v);
        }
    }
    let reply = usync_reply
        .attr("index", "0")
        .attr("last", "true")
        .children([NodeBuilder::new("list").children(users).build()])
        .build();
    ctx.send(iq_result(node, vec![reply]));
    true
}

fn privacy(ctx: &Ctx, node: &Node, first: &str) -> bool {
    let is_get = attr(node, "type").as_deref() == Some("get");
    match first {
        "privacy" if is_get => {
            let categories = [
                ("last", "all"),
                ("online", "all"),
                ("profile", "all"),
                ("status", "all"),
                ("groupadd", "all"),
                ("readreceipts", "all"),
                ("calladd", "all"),
            ]
            .into_iter()
            .map(|(name, value)| {
                NodeBuilder::new("category")
                    .attr("name", name)
                    .attr("value", value)
                    .build()
            });
            ctx.send(iq_result(
                node,
                vec![NodeBuilder::new("privacy").children(categories).build()],
            ));
            true
        }
        "privacy" | "tokens" => {
            ctx.send(iq_result(node, vec![]));
            true
        }
        _ => false,
    }
}

fn md(ctx: &Ctx, node: &Node, first: &str) -> bool {
    match first {
        "remove-companion-device" => {
            ctx.send(iq_result(node, vec![]));
            if let Some((phone, device)) = ctx.device() {
                crate::control::remove_device(&ctx.sim, &phone, device, false);
                tracing::info!(phone = %phone, device, "device logged itself out");
            }
            true
        }
        "link_code_companion_reg" => {
            let Some(reg) = child(node, "link_code_companion_reg") else {
                return false;
            };
            match attr(reg, "stage").as_deref() {
                Some("companion_hello") => {
                    match crate::pairing::on_companion_hello(&ctx.sim, ctx.conn_id, reg) {
                        Ok(pairing_ref) => ctx.send(iq_result(
                            node,
                            vec![
                                NodeBuilder::new("link_code_companion_reg")
                                    .children([bytes_node("link_code_pairing_ref", pairing_ref)])
                                    .build(),
                            ],
                        )),
                        Err(e) => {
                            tracing::warn!("companion_hello refused: {e}");
                            ctx.send(iq_error(node, 400, "bad-request"));
                        }
                    }
                    true
                }
                Some("companion_finish") => {
                    ctx.send(iq_result(node, vec![]));
                    crate::pairing::on_companion_finish(&ctx.sim, reg);
                    true
                }
                _ => false,
            }
        }
        _ => {
            // Registering clients only talk md; nothing else is known here.
            let registering = matches!(
                ctx.sim.world().conns.get(&ctx.conn_id).map(|c| &c.state),
                Some(ConnState::Registering(_))
            );
            if registering {
                tracing::debug!("md iq from an unpaired client: {}", show(node));
            }
            false
        }
    }
}
