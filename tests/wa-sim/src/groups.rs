//! Groups: the `w:g2` IQs (create, query, participating, subject, description, leave,
//! add/remove/promote/demote, invites, settings, join requests), the `member_link_mode`
//! property WhatsApp changes over MEX (see [`crate::mex`]), the `w:gp2` and `mex`
//! notifications they cause, and fan-out of group messages to member devices. Refuses what
//! WhatsApp refuses: non-admin changes (403), unknown groups (404), description edits with a
//! stale `prev` (409).
//!
//! Metadata answers name participants by phone number (`addressing_mode="pn"`, the default)
//! or, once the control API made the group LID-addressed, as WhatsApp writes LID groups:
//! `jid` is the account's LID and `phone_number` its PN twin (likewise `creator`/`creator_pn`,
//! `s_o`/`s_o_pn` and the description's `participant`/`participant_pn`).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Value, json};
use wacore_binary::builder::NodeBuilder;
use wacore_binary::node::Node;

use crate::conn::Ctx;
use crate::iq::split_jid;
use crate::messages::{Enc, enc_of, phone_receive, spawn_phone_work};
use crate::nodes::{attr, child, children, iq_error, iq_result, text};
use crate::signal::now_secs;
use crate::world::{Sim, World};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Member,
    Admin,
    SuperAdmin,
}

impl Role {
    fn is_admin(self) -> bool {
        !matches!(self, Role::Member)
    }

    fn wire(self) -> Option<&'static str> {
        match self {
            Role::Member => None,
            Role::Admin => Some("admin"),
            Role::SuperAdmin => Some("superadmin"),
        }
    }

    fn name(self) -> &'static str {
        self.wire().unwrap_or("member")
    }
}

/// How a group's metadata names its participants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Addressing {
    /// By phone number JID, as WhatsApp did for every group before LIDs.
    #[default]
    Pn,
    /// By LID, with the phone number beside it, as WhatsApp writes LID groups.
    Lid,
}

impl Addressing {
    pub fn wire(self) -> &'static str {
        match self {
            Addressing::Pn => "pn",
            Addressing::Lid => "lid",
        }
    }

    pub fn parse(mode: &str) -> Option<Self> {
        match mode {
            "pn" => Some(Addressing::Pn),
            "lid" => Some(Addressing::Lid),
            _ => None,
        }
    }
}

/// A simulated group.
pub struct Group {
    /// Bare id, e.g. `120363000000000001`.
    pub id: String,
    pub subject: String,
    pub subject_owner: String,
    pub subject_time: u64,
    pub creator: String,
    pub creation: u64,
    /// (id, text, author, time)
    pub description: Option<(String, String, String, u64)>,
    /// Ordered participants: phone -> role.
    pub participants: Vec<(String, Role)>,
    pub locked: bool,
    pub announce: bool,
    pub ephemeral: u32,
    pub approval: bool,
    pub member_add_mode: String,
    /// `admin_link` or `all_member_link`: who may see and share the invite link.
    pub member_link_mode: String,
    pub addressing: Addressing,
    pub invite_code: String,
    /// Pending join requests: (phone, request time), oldest first.
    pub pending_requests: Vec<(String, u64)>,
    /// Former members who left or were removed (for notifications only).
    pub notification_seq: u64,
}

impl Group {
    pub fn jid(&self) -> String {
        format!("{}@g.us", self.id)
    }

    /// Member phone numbers.
    pub fn members(&self) -> Vec<String> {
        self.participants.iter().map(|(p, _)| p.clone()).collect()
    }

    fn role(&self, phone: &str) -> Option<Role> {
        self.participants
            .iter()
            .find(|(p, _)| p == phone)
            .map(|(_, r)| *r)
    }

    fn set_role(&mut self, phone: &str, role: Role) {
        if let Some(entry) = self.participants.iter_mut().find(|(p, _)| p == phone) {
            entry.1 = role;
        }
    }

    fn remove(&mut self, phone: &str) {
        self.participants.retain(|(p, _)| p != phone);
    }

    /// How `phone` is named in this group's metadata: its JID in the group's addressing,
    /// plus the PN twin when that JID is a LID. A phone with no account (so no known LID)
    /// stays PN-addressed rather than being left out of the answer.
    fn person(&self, world: &World, phone: &str) -> (String, Option<String>) {
        let lid = match self.addressing {
            Addressing::Pn => None,
            Addressing::Lid => world.accounts.get(phone).map(|a| format!("{}@lid", a.lid)),
        };
        match lid {
            Some(lid) => (lid, Some(pn(phone))),
            None => (pn(phone), None),
        }
    }

    /// Sets `key` to `phone`'s JID and `pn_key` to its PN twin when the group is LID-addressed.
    fn person_attrs(
        &self,
        world: &World,
        b: NodeBuilder,
        key: &'static str,
        pn_key: &'static str,
        phone: &str,
    ) -> NodeBuilder {
        let (jid, pn_twin) = self.person(world, phone);
        let b = b.attr(key, jid);
        match pn_twin {
            Some(p) => b.attr(pn_key, p),
            None => b,
        }
    }

    /// The `<group>` metadata node (query, participating, create and invite-info answers).
    fn node(&self, world: &World) -> Node {
        let mut kids: Vec<Node> = self
            .participants
            .iter()
            .map(|(phone, role)| {
                let b = NodeBuilder::new("participant");
                let mut b = self.person_attrs(world, b, "jid", "phone_number", phone);
                if let Some(t) = role.wire() {
                    b = b.attr("type", t);
                }
                b.build()
            })
            .collect();
        if let Some((id, body, author, t)) = &self.description {
            let b = NodeBuilder::new("description").attr("id", id.clone());
            kids.push(
                self.person_attrs(world, b, "participant", "participant_pn", author)
                    .attr("t", t.to_string())
                    .children([NodeBuilder::new("body")
                        .string_content(body.as_str())
                        .build()])
                    .build(),
            );
        }
        if self.locked {
            kids.push(NodeBuilder::new("locked").build());
        }
        if self.announce {
            kids.push(NodeBuilder::new("announcement").build());
        }
        if self.ephemeral > 0 {
            kids.push(
                NodeBuilder::new("ephemeral")
                    .attr("expiration", self.ephemeral.to_string())
                    .build(),
            );
        }
        if self.approval {
            kids.push(
                NodeBuilder::new("membership_approval_mode")
                    .children([NodeBuilder::new("group_join").attr("state", "on").build()])
                    .build(),
            );
        }
        kids.push(
            NodeBuilder::new("member_add_mode")
                .string_content(self.member_add_mode.as_str())
                .build(),
        );
        kids.push(
            NodeBuilder::new("member_link_mode")
                .string_content(self.member_link_mode.as_str())
                .build(),
        );
        let b = NodeBuilder::new("group")
            .attr("id", self.id.clone())
            .attr("subject", self.subject.clone())
            .attr("s_t", self.subject_time.to_string());
        let b = self.person_attrs(world, b, "s_o", "s_o_pn", &self.subject_owner);
        let b = b.attr("creation", self.creation.to_string());
        self.person_attrs(world, b, "creator", "creator_pn", &self.creator)
            .attr("addressing_mode", self.addressing.wire())
            .attr("size", self.participants.len().to_string())
            .children(kids)
            .build()
    }

    fn json(&self, world: &World) -> Value {
        json!({
            "jid": self.jid(),
            "subject": self.subject,
            "creator": pn(&self.creator),
            "creation": self.creation,
            "description": self.description.as_ref().map(|d| d.1.clone()),
            "description_id": self.description.as_ref().map(|d| d.0.clone()),
            "addressing_mode": self.addressing.wire(),
            "participants": self.participants.iter().map(|(p, r)| json!({
                "jid": pn(p),
                "lid": world.accounts.get(p).map(|a| format!("{}@lid", a.lid)),
                "phone_number": p,
                "role": r.name(),
            })).collect::<Vec<_>>(),
            "locked": self.locked,
            "announce": self.announce,
            "ephemeral": self.ephemeral,
            "membership_approval": self.approval,
            "member_add_mode": self.member_add_mode,
            "member_link_mode": self.member_link_mode,
            "invite_code": self.invite_code,
            "join_requests": self.pending_requests.iter().map(|(p, t)| json!({
                "jid": pn(p),
                "phone_number": p,
                "request_time": t,
            })).collect::<Vec<_>>(),
        })
    }
}

fn pn(phone: &str) -> String {
    format!("{phone}@s.whatsapp.net")
}

fn new_invite_code() -> String {
    let raw: [u8; 16] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(raw)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(22)
        .collect()
}

/// The bare group id of a `to` attribute such as `1203…@g.us`.
fn group_id(to: &str) -> Option<String> {
    let (id, server) = to.split_once('@')?;
    (server == "g.us" && !id.is_empty()).then(|| id.to_string())
}

/// Phones named by `<participant jid/>` children (PN or LID JIDs).
fn participant_phones(world: &World, action: &Node) -> Vec<(String, Option<String>)> {
    children(action)
        .iter()
        .filter(|c| c.tag == "participant")
        .filter_map(|c| attr(c, "jid"))
        .map(|jid| {
            let phone =
                split_jid(&jid).and_then(|(user, _, is_lid)| world.resolve_user(&user, is_lid));
            (jid, phone)
        })
        .collect()
}

/// Sends a `w:gp2` notification about `group` to every member device except the actor's
/// own device, plus any `extra` accounts (e.g. people who were just removed).
fn notify(world: &mut World, gid: &str, actor: (&str, u16), action: Node, extra: &[String]) {
    let Some(group) = world.groups.get(gid) else {
        return;
    };
    let mut phones: Vec<String> = group.participants.iter().map(|(p, _)| p.clone()).collect();
    for p in extra {
        if !phones.contains(p) {
            phones.push(p.clone());
        }
    }
    notify_to(world, gid, actor, action, phones);
}

/// Sends a `w:gp2` notification about `group` to the devices of `phones` only (except the
/// actor's own device): admin-only news such as join requests.
fn notify_to(world: &mut World, gid: &str, actor: (&str, u16), action: Node, phones: Vec<String>) {
    let Some(id) = next_notification_id(world, gid) else {
        return;
    };
    let stanza = NodeBuilder::new("notification")
        .attr("from", format!("{gid}@g.us"))
        .attr("type", "w:gp2")
        .attr("id", id)
        .attr("participant", pn(actor.0))
        .attr("notify", push_name(world, actor.0))
        .attr("t", now_secs().to_string())
        .children([action])
        .build();
    fan_out(world, actor, stanza, phones);
}

/// A fresh notification id for `gid`; `None` for an unknown group.
/// A numeric id, unique within the group as WhatsApp's are (a client keys redeliveries by it):
/// the group's notification count, then four digits of the clock.
fn next_notification_id(world: &mut World, gid: &str) -> Option<String> {
    let group = world.groups.get_mut(gid)?;
    group.notification_seq += 1;
    Some(format!(
        "{}{:04}",
        group.notification_seq,
        now_secs() % 10_000
    ))
}

fn push_name(world: &World, phone: &str) -> String {
    world
        .accounts
        .get(phone)
        .map(|a| a.push_name.clone())
        .unwrap_or_default()
}

/// Delivers `stanza` to every device of `phones` except the actor's own device, which made
/// the change and needs no news of it.
fn fan_out(world: &mut World, actor: (&str, u16), stanza: Node, phones: Vec<String>) {
    for phone in phones {
        let devices: Vec<u16> = world
            .accounts
            .get(&phone)
            .map(|a| a.devices.keys().copied().collect())
            .unwrap_or_default();
        for device in devices {
            if phone == actor.0 && device == actor.1 {
                continue;
            }
            world.deliver(&phone, device, stanza.clone());
        }
    }
}

fn participants_action(tag: &'static str, phones: &[String], reason: Option<&str>) -> Node {
    let mut b = NodeBuilder::new(tag);
    if let Some(r) = reason {
        b = b.attr("reason", r);
    }
    b.children(
        phones
            .iter()
            .map(|p| NodeBuilder::new("participant").attr("jid", pn(p)).build()),
    )
    .build()
}

/// Handles a `w:g2` IQ; returns false when the request is not understood.
pub async fn handle_iq(ctx: &Ctx, node: &Node, first: &str) -> bool {
    let Some((phone, device)) = ctx.device() else {
        return false;
    };
    let to = attr(node, "to").unwrap_or_default();
    let is_set = attr(node, "type").as_deref() == Some("set");
    let Some(action) = children(node).first() else {
        return false;
    };
    let mut world = ctx.sim.world();
    let reply = match (to.as_str(), first) {
        ("g.us", "participating") => {
            let groups: Vec<Node> = world
                .groups
                .values()
                .filter(|g| g.role(&phone).is_some())
                .map(|g| g.node(&world))
                .collect();
            Ok(vec![NodeBuilder::new("groups").children(groups).build()])
        }
        ("g.us", "create") if is_set => Ok(vec![create(&mut world, &phone, device, action)]),
        ("g.us", "leave") if is_set => Ok(leave(&mut world, &phone, device, action)),
        ("g.us", "invite") => {
            let code = attr(action, "code").unwrap_or_default();
            if is_set {
                join(&mut world, &phone, device, &code)
            } else {
                invite_info(&world, &code)
            }
        }
        _ => match group_id(&to) {
            None => return false,
            Some(gid) => {
                if first == "query" {
                    *world
                        .stats
                        .group_queries
                        .entry(format!("{gid}@g.us"))
                        .or_default() += 1;
                }
                on_group(&mut world, &gid, &phone, device, first, is_set, action)
            }
        },
    };
    drop(world);
    match reply {
        Ok(content) => ctx.send(iq_result(node, content)),
        Err(None) => return false,
        Err(Some((code, text))) => ctx.send(iq_error(node, code, text)),
    }
    true
}

type IqReply = Result<Vec<Node>, Option<(u16, &'static str)>>;

const FORBIDDEN: Option<(u16, &str)> = Some((403, "forbidden"));
const NOT_FOUND: Option<(u16, &str)> = Some((404, "item-not-found"));

fn create(world: &mut World, phone: &str, device: u16, action: &Node) -> Node {
    let gid = loop {
        let candidate = format!("120363{:012}", rand::random_range(0..1_000_000_000_000u64));
        if !world.groups.contains_key(&candidate) {
            break candidate;
        }
    };
    let now = now_secs();
    let mut participants = vec![(phone.to_string(), Role::SuperAdmin)];
    for (_, member) in participant_phones(world, action) {
        if let Some(member) = member
            && !participants.iter().any(|(p, _)| *p == member)
        {
            participants.push((member, Role::Member));
        }
    }
    let description = child(action, "description").and_then(|d| {
        let body = child(d, "body").and_then(text)?;
        Some((
            attr(d, "id").unwrap_or_else(|| format!("{:08X}", rand::random::<u32>())),
            body,
            phone.to_string(),
            now,
        ))
    });
    let group = Group {
        id: gid.clone(),
        subject: attr(action, "subject").unwrap_or_default(),
        subject_owner: phone.to_string(),
        subject_time: now,
        creator: phone.to_string(),
        creation: now,
        description,
        participants,
        locked: false,
        announce: false,
        ephemeral: child(action, "ephemeral")
            .and_then(|e| attr(e, "expiration"))
            .and_then(|e| e.parse().ok())
            .unwrap_or(0),
        approval: child(action, "membership_approval_mode")
            .and_then(|m| child(m, "group_join"))
            .and_then(|j| attr(j, "state"))
            .as_deref()
            == Some("on"),
        member_add_mode: child(action, "member_add_mode")
            .and_then(text)
            .unwrap_or_else(|| "all_member_add".into()),
        member_link_mode: child(action, "member_link_mode")
            .and_then(text)
            .unwrap_or_else(|| "admin_link".into()),
        addressing: Addressing::Pn,
        invite_code: new_invite_code(),
        pending_requests: Vec::new(),
        notification_seq: 0,
    };
    let node = group.node(world);
    world.groups.insert(gid.clone(), group);
    let create_action = NodeBuilder::new("create").children([node.clone()]).build();
    notify(world, &gid, (phone, device), create_action, &[]);
    tracing::info!(group = %gid, creator = phone, "group created");
    node
}

fn leave(world: &mut World, phone: &str, device: u16, action: &Node) -> Vec<Node> {
    let mut left = Vec::new();
    for g in action.get_children_by_tag("group") {
        let Some(gid) = attr(g, "id").and_then(|id| group_id(&id).or(Some(id))) else {
            continue;
        };
        let member = world
            .groups
            .get(&gid)
            .and_then(|group| group.role(phone))
            .is_some();
        if !member {
            left.push(
                NodeBuilder::new("group")
                    .attr("id", format!("{gid}@g.us"))
                    .attr("error", "404")
                    .build(),
            );
            continue;
        }
        // Everyone still in the group, and the leaver's other devices, hear about it.
        notify(
            world,
            &gid,
            (phone, device),
            participants_action("remove", &[phone.to_string()], Some("leave")),
            &[],
        );
        if let Some(group) = world.groups.get_mut(&gid) {
            group.remove(phone);
            if !group.participants.iter().any(|(_, r)| r.is_admin())
                && let Some(first) = group.participants.first_mut()
            {
                first.1 = Role::Admin;
            }
        }
        left.push(
            NodeBuilder::new("group")
                .attr("id", format!("{gid}@g.us"))
                .build(),
        );
    }
    vec![NodeBuilder::new("leave").children(left).build()]
}

fn invite_info(world: &World, code: &str) -> IqReply {
    let group = world
        .groups
        .values()
        .find(|g| g.invite_code == code)
        .ok_or(NOT_FOUND)?;
    Ok(vec![group.node(world)])
}

fn join(world: &mut World, phone: &str, device: u16, code: &str) -> IqReply {
    let gid = world
        .groups
        .values()
        .find(|g| g.invite_code == code)
        .map(|g| g.id.clone())
        .ok_or(NOT_FOUND)?;
    let group = world.groups.get_mut(&gid).ok_or(NOT_FOUND)?;
    if group.role(phone).is_some() {
        return Err(Some((304, "already-exists")));
    }
    if group.approval {
        request_to_join(world, &gid, (phone, device));
        return Ok(vec![
            NodeBuilder::new("membership_approval_request")
                .attr("jid", format!("{gid}@g.us"))
                .build(),
        ]);
    }
    group.participants.push((phone.to_string(), Role::Member));
    notify(
        world,
        &gid,
        (phone, device),
        participants_action("add", &[phone.to_string()], Some("invite")),
        &[],
    );
    Ok(vec![
        NodeBuilder::new("group")
            .attr("jid", format!("{gid}@g.us"))
            .build(),
    ])
}

/// IQs addressed to one group.
fn on_group(
    world: &mut World,
    gid: &str,
    phone: &str,
    device: u16,
    first: &str,
    is_set: bool,
    action: &Node,
) -> IqReply {
    let group = world.groups.get(gid).ok_or(NOT_FOUND)?;
    let role = group.role(phone);
    let is_admin = role.is_some_and(Role::is_admin);
    if role.is_none() {
        // Non-members may not look inside or change anything.
        return Err(FORBIDDEN);
    }
    match first {
        "query" => Ok(vec![group.node(world)]),
        "subject" if is_set => {
            if group.locked && !is_admin {
                return Err(FORBIDDEN);
            }
            let subject = text(action).unwrap_or_default();
            if subject.chars().count() > 100 {
                return Err(Some((406, "not-acceptable")));
            }
            let now = now_secs();
            if let Some(group) = world.groups.get_mut(gid) {
                group.subject = subject.clone();
                group.subject_owner = phone.to_string();
                group.subject_time = now;
            }
            let n = NodeBuilder::new("subject")
                .attr("subject", subject)
                .attr("s_o", pn(phone))
                .attr("s_t", now.to_string())
                .build();
            notify(world, gid, (phone, device), n, &[]);
            Ok(vec![])
        }
        "description" if is_set => {
            if group.locked && !is_admin {
                return Err(FORBIDDEN);
            }
            let current = group.description.as_ref().map(|d| d.0.clone());
            let prev = attr(action, "prev");
            if prev != current {
                return Err(Some((409, "conflict")));
            }
            let id = attr(action, "id").unwrap_or_else(|| format!("{:08X}", rand::random::<u32>()));
            let delete = attr(action, "delete").as_deref() == Some("true");
            let body = child(action, "body").and_then(text);
            let now = now_secs();
            let n = if delete || body.is_none() {
                if let Some(group) = world.groups.get_mut(gid) {
                    group.description = None;
                }
                NodeBuilder::new("description")
                    .attr("id", id)
                    .children([NodeBuilder::new("delete").build()])
                    .build()
            } else {
                let body = body.unwrap_or_default();
                if let Some(group) = world.groups.get_mut(gid) {
                    group.description = Some((id.clone(), body.clone(), phone.to_string(), now));
                }
                NodeBuilder::new("description")
                    .attr("id", id)
                    .children([NodeBuilder::new("body")
                        .string_content(body.as_str())
                        .build()])
                    .build()
            };
            notify(world, gid, (phone, device), n, &[]);
            Ok(vec![])
        }
        "add" if is_set => {
            if !is_admin && group.member_add_mode != "all_member_add" {
                return Err(FORBIDDEN);
            }
            let mut results = Vec::new();
            let mut added = Vec::new();
            for (jid, target) in participant_phones(world, action) {
                let mut b = NodeBuilder::new("participant").attr("jid", jid);
                match target {
                    None => b = b.attr("error", "404"),
                    Some(t) if group.role(&t).is_some() || added.contains(&t) => {
                        b = b.attr("error", "409")
                    }
                    Some(t) => {
                        b = b.attr("type", "200");
                        added.push(t);
                    }
                }
                results.push(b.build());
            }
            if let Some(group) = world.groups.get_mut(gid) {
                for p in &added {
                    group.participants.push((p.clone(), Role::Member));
                    group.pending_requests.retain(|(r, _)| r != p);
                }
            }
            if !added.is_empty() {
                notify(
                    world,
                    gid,
                    (phone, device),
                    participants_action("add", &added, None),
                    &[],
                );
            }
            Ok(vec![NodeBuilder::new("add").children(results).build()])
        }
        "remove" if is_set => {
            if !is_admin {
                return Err(FORBIDDEN);
            }
            let mut results = Vec::new();
            let mut removed = Vec::new();
            for (jid, target) in participant_phones(world, action) {
                let mut b = NodeBuilder::new("participant").attr("jid", jid);
                match target.as_ref().and_then(|t| group.role(t).map(|r| (t, r))) {
                    None => b = b.attr("error", "404"),
                    Some((_, Role::SuperAdmin)) if role != Some(Role::SuperAdmin) => {
                        b = b.attr("error", "403")
                    }
                    Some((t, _)) => {
                        b = b.attr("type", "200");
                        removed.push(t.clone());
                    }
                }
                results.push(b.build());
            }
            if !removed.is_empty() {
                notify(
                    world,
                    gid,
                    (phone, device),
                    participants_action("remove", &removed, None),
                    &[],
                );
                if let Some(group) = world.groups.get_mut(gid) {
                    for p in &removed {
                        group.remove(p);
                    }
                }
            }
            Ok(vec![NodeBuilder::new("remove").children(results).build()])
        }
        "promote" | "demote" if is_set => {
            if !is_admin {
                return Err(FORBIDDEN);
            }
            let promote = first == "promote";
            let mut results = Vec::new();
            let mut changed = Vec::new();
            for (jid, target) in participant_phones(world, action) {
                let mut b = NodeBuilder::new("participant").attr("jid", jid);
                match target.as_ref().and_then(|t| group.role(t).map(|r| (t, r))) {
                    None => b = b.attr("error", "404"),
                    Some((_, Role::SuperAdmin)) if !promote => b = b.attr("error", "403"),
                    Some((t, _)) => {
                        b = b.attr("type", "200");
                        changed.push(t.clone());
                    }
                }
                results.push(b.build());
            }
            if let Some(group) = world.groups.get_mut(gid) {
                for p in &changed {
                    if group.role(p) != Some(Role::SuperAdmin) {
                        group.set_role(p, if promote { Role::Admin } else { Role::Member });
                    }
                }
            }
            let tag = if promote { "promote" } else { "demote" };
            if !changed.is_empty() {
                notify(
                    world,
                    gid,
                    (phone, device),
                    participants_action(tag, &changed, None),
                    &[],
                );
            }
            Ok(vec![NodeBuilder::new(tag).children(results).build()])
        }
        "membership_approval_requests" => {
            if !is_admin {
                return Err(FORBIDDEN);
            }
            let requests = group.pending_requests.iter().map(|(p, t)| {
                NodeBuilder::new("membership_approval_request")
                    .attr("jid", pn(p))
                    .attr("request_time", t.to_string())
                    .build()
            });
            Ok(vec![
                NodeBuilder::new("membership_approval_requests")
                    .children(requests)
                    .build(),
            ])
        }
        "membership_requests_action" if is_set => {
            if !is_admin {
                return Err(FORBIDDEN);
            }
            let Some(decision) = children(action)
                .iter()
                .find(|c| c.tag == "approve" || c.tag == "reject")
            else {
                return Err(Some((400, "bad-request")));
            };
            let approve = decision.tag == "approve";
            let mut results = Vec::new();
            let mut settled = Vec::new();
            for (jid, target) in participant_phones(world, decision) {
                let mut b = NodeBuilder::new("participant").attr("jid", jid);
                match target {
                    Some(t) if group.pending_requests.iter().any(|(p, _)| *p == t) => {
                        settled.push(t)
                    }
                    _ => b = b.attr("error", "404"),
                }
                results.push(b.build());
            }
            let admins = admins(group);
            if let Some(group) = world.groups.get_mut(gid) {
                group.pending_requests.retain(|(p, _)| !settled.contains(p));
                if approve {
                    for p in &settled {
                        group.participants.push((p.clone(), Role::Member));
                    }
                }
            }
            if !settled.is_empty() {
                if approve {
                    notify(
                        world,
                        gid,
                        (phone, device),
                        participants_action("add", &settled, None),
                        &[],
                    );
                } else {
                    let mut recipients = admins;
                    recipients.extend(settled.iter().cloned());
                    notify_to(
                        world,
                        gid,
                        (phone, device),
                        participants_action("revoked_membership_requests", &settled, None),
                        recipients,
                    );
                }
            }
            let tag = if approve { "approve" } else { "reject" };
            Ok(vec![
                NodeBuilder::new("membership_requests_action")
                    .children([NodeBuilder::new(tag).children(results).build()])
                    .build(),
            ])
        }
        "invite" => {
            if !is_admin && group.member_link_mode == "admin_link" {
                return Err(FORBIDDEN);
            }
            let code = if is_set {
                let code = new_invite_code();
                if let Some(group) = world.groups.get_mut(gid) {
                    group.invite_code = code.clone();
                }
                notify(
                    world,
                    gid,
                    (phone, device),
                    NodeBuilder::new("revoke").build(),
                    &[],
                );
                code
            } else {
                group.invite_code.clone()
            };
            Ok(vec![NodeBuilder::new("invite").attr("code", code).build()])
        }
        "locked"
        | "unlocked"
        | "announcement"
        | "not_announcement"
        | "ephemeral"
        | "not_ephemeral"
        | "membership_approval_mode"
        | "member_add_mode"
            if is_set =>
        {
            if !is_admin {
                return Err(FORBIDDEN);
            }
            let Some(group) = world.groups.get_mut(gid) else {
                return Err(NOT_FOUND);
            };
            match first {
                "locked" => group.locked = true,
                "unlocked" => group.locked = false,
                "announcement" => group.announce = true,
                "not_announcement" => group.announce = false,
                "ephemeral" => {
                    group.ephemeral = attr(action, "expiration")
                        .and_then(|e| e.parse().ok())
                        .unwrap_or(0)
                }
                "not_ephemeral" => group.ephemeral = 0,
                "membership_approval_mode" => {
                    group.approval = child(action, "group_join")
                        .and_then(|j| attr(j, "state"))
                        .as_deref()
                        == Some("on")
                }
                _ => {
                    if let Some(mode) = text(action) {
                        group.member_add_mode = mode;
                    }
                }
            }
            notify(world, gid, (phone, device), action.clone(), &[]);
            Ok(vec![])
        }
        _ => Err(None),
    }
}

/// Fans a group message out to every member device except the sending one.
pub async fn route_group_message(ctx: &Ctx, node: &Node, phone: &str, device: u16, to: &str) {
    let Some(gid) = group_id(to) else { return };
    let id = attr(node, "id").unwrap_or_default();
    let kind = attr(node, "type").unwrap_or_else(|| "text".into());
    let skmsg = children(node)
        .iter()
        .find(|c| c.tag == "enc" && attr(c, "type").as_deref() == Some("skmsg"))
        .and_then(enc_of);
    let device_identity = child(node, "device-identity").cloned();
    let mut per_device: BTreeMap<(String, u16), Enc> = BTreeMap::new();
    let mut retransmission_to: Option<(String, u16)> = None;
    let t = now_secs();
    let (members, push_name) = {
        let world = ctx.sim.world();
        let Some(group) = world.groups.get(&gid) else {
            tracing::info!(group = %gid, "message to an unknown group dropped");
            return;
        };
        if group.role(phone).is_none() {
            tracing::info!(group = %gid, sender = phone, "message from a non-member dropped");
            return;
        }
        if group.announce && !group.role(phone).is_some_and(Role::is_admin) {
            tracing::info!(group = %gid, sender = phone, "non-admin message to an announcement group dropped");
            return;
        }
        // A retransmission (the answer to a retry receipt) names the one participant it is
        // for and carries that device's own pairwise `<enc>`.
        if let Some((user, dev, is_lid)) = attr(node, "participant").as_deref().and_then(split_jid)
        {
            let enc = children(node)
                .iter()
                .find(|c| c.tag == "enc" && attr(c, "type").as_deref() != Some("skmsg"))
                .and_then(enc_of);
            if let (Some(p), Some(enc)) = (world.resolve_user(&user, is_lid), enc) {
                retransmission_to = Some((p.clone(), dev));
                per_device.insert((p, dev), enc);
            }
        }
        if let Some(participants) = child(node, "participants") {
            for to_node in participants.get_children_by_tag("to") {
                let Some((user, dev, is_lid)) = attr(to_node, "jid").as_deref().and_then(split_jid)
                else {
                    continue;
                };
                if let (Some(p), Some(enc)) = (
                    world.resolve_user(&user, is_lid),
                    child(to_node, "enc").and_then(enc_of),
                ) {
                    per_device.insert((p, dev), enc);
                }
            }
        }
        let members: Vec<(String, Vec<u16>)> = group
            .participants
            .iter()
            .filter_map(|(p, _)| {
                let account = world.accounts.get(p)?;
                let mut devices = vec![0u16];
                devices.extend(account.devices.keys().copied());
                Some((p.clone(), devices))
            })
            .collect();
        let push_name = world
            .accounts
            .get(phone)
            .map(|a| a.push_name.clone())
            .unwrap_or_default();
        (members, push_name)
    };
    ctx.sim.world().stats.messages_routed += 1;
    let sender_jid = if device == 0 {
        pn(phone)
    } else {
        format!("{phone}:{device}@s.whatsapp.net")
    };
    let chat = format!("{gid}@g.us");
    for (member, devices) in members {
        for dev in devices {
            if member == phone && dev == device {
                continue;
            }
            if retransmission_to
                .as_ref()
                .is_some_and(|(p, d)| *p != member || *d != dev)
            {
                continue;
            }
            let own = per_device.get(&(member.clone(), dev)).cloned();
            if dev == 0 {
                let sim = ctx.sim.clone();
                let (target, sender, chat, id) =
                    (member.clone(), phone.to_string(), chat.clone(), id.clone());
                let skmsg = skmsg.clone();
                let own = own.clone();
                spawn_phone_work(&ctx.sim, &member, async move {
                    deliver_to_phone(&sim, &target, &sender, device, &chat, &id, own, skmsg).await;
                });
                continue;
            }
            let mut kids = Vec::new();
            if let Some(enc) = &own {
                kids.push(enc.node.clone());
                if enc.kind == "pkmsg"
                    && let Some(identity) = &device_identity
                {
                    kids.push(identity.clone());
                }
            }
            if let Some(sk) = &skmsg {
                kids.push(sk.node.clone());
            }
            if kids.is_empty() {
                continue;
            }
            let stanza = NodeBuilder::new("message")
                .attr("from", chat.clone())
                .attr("participant", sender_jid.clone())
                .attr("id", id.clone())
                .attr("type", kind.clone())
                .attr("t", t.to_string())
                .attr("notify", push_name.clone())
                .attr("addressing_mode", "pn")
                .children(kids)
                .build();
            ctx.sim.world().deliver(&member, dev, stanza);
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn deliver_to_phone(
    sim: &Arc<Sim>,
    member: &str,
    sender: &str,
    sender_device: u16,
    chat: &str,
    id: &str,
    own: Option<Enc>,
    skmsg: Option<Enc>,
) {
    let empty = Enc {
        kind: String::new(),
        bytes: Vec::new(),
        node: NodeBuilder::new("enc").build(),
    };
    let own = own.unwrap_or(empty);
    let sk = skmsg.as_ref().map(|s| (chat, s.bytes.as_slice()));
    phone_receive(sim, member, sender, sender_device, chat, id, &own, sk).await;
}

fn admins(group: &Group) -> Vec<String> {
    group
        .participants
        .iter()
        .filter(|(_, r)| r.is_admin())
        .map(|(p, _)| p.clone())
        .collect()
}

/// Records `requester`'s pending request to join `gid` and tells the admins
/// (`<created_membership_requests>`). A request already pending changes nothing.
fn request_to_join(world: &mut World, gid: &str, requester: (&str, u16)) {
    let Some(group) = world.groups.get_mut(gid) else {
        return;
    };
    let phone = requester.0;
    if group.pending_requests.iter().any(|(p, _)| p == phone) {
        return;
    }
    group.pending_requests.push((phone.to_string(), now_secs()));
    let admins = admins(group);
    let action = NodeBuilder::new("created_membership_requests")
        .attr("request_method", "invite_link")
        .children([NodeBuilder::new("requested_user")
            .attr("jid", pn(phone))
            .build()])
        .build();
    notify_to(world, gid, requester, action, admins);
    tracing::info!(group = %gid, requester = phone, "join request recorded");
}

/// A refused MEX group change: the GraphQL `error_code` and message for the answer.
pub type MexRefusal = (u16, &'static str);

/// Op name of the `mex` notification WhatsApp sends members when `member_link_mode` changes.
const MEMBER_LINK_NOTIFICATION: &str = "NotificationGroupMemberLinkPropertyUpdate";

/// `xwa2_group_update_property` with a `member_link_mode` update; `mode` is `admin_link` or
/// `all_member_link`. Only admins may change it (403 otherwise, as for the `w:g2`
/// settings). WhatsApp tells the other members' devices with a `mex` notification, not a
/// `w:gp2` one, so the sim does the same. Returns the group JID for the answer.
pub fn set_member_link_mode(
    world: &mut World,
    group_jid: &str,
    actor: (&str, u16),
    mode: &str,
) -> Result<String, MexRefusal> {
    let gid = group_id(group_jid).ok_or((400, "bad-request"))?;
    let jid = format!("{gid}@g.us");
    let members = {
        let group = world.groups.get_mut(&gid).ok_or((404, "item-not-found"))?;
        if !group.role(actor.0).is_some_and(Role::is_admin) {
            return Err((403, "not-authorized"));
        }
        group.member_link_mode = mode.to_string();
        group.members()
    };
    tracing::info!(group = %gid, by = actor.0, mode, "member_link_mode changed");
    let Some(id) = next_notification_id(world, &gid) else {
        return Ok(jid);
    };
    let Some(group) = world.groups.get(&gid) else {
        return Ok(jid);
    };
    let (by, by_pn) = group.person(world, actor.0);
    // The shape WhatsApp Web's group-property handler reads: the group, its addressing,
    // the changed property in MEX (upper-case) vocabulary, a millisecond time and the author.
    let payload = json!({
        "data": {
            "xwa2_notify_group_on_prop_change": {
                "id": jid,
                "lid_migration_state": {
                    "addressing_mode": group.addressing.wire().to_ascii_uppercase(),
                },
                "properties": { "member_link_mode": mode.to_ascii_uppercase() },
                "update_time": now_millis().to_string(),
                "updated_by": {
                    "id": by,
                    "notify_name": push_name(world, actor.0),
                    "pn": by_pn,
                },
            }
        }
    });
    let stanza = NodeBuilder::new("notification")
        .attr("from", jid.clone())
        .attr("type", "mex")
        .attr("id", id)
        .attr("t", now_secs().to_string())
        .children([NodeBuilder::new("update")
            .attr("op_name", MEMBER_LINK_NOTIFICATION)
            .bytes(payload.to_string().into_bytes())
            .build()])
        .build();
    fan_out(world, actor, stanza, members);
    Ok(jid)
}

fn now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum JoinRequestError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

/// `POST /control/groups/{jid}/join-requests`: `phone` asks to join (from its phone).
pub fn add_join_request(world: &mut World, jid: &str, phone: &str) -> Result<(), JoinRequestError> {
    let gid = jid.split('@').next().unwrap_or(jid);
    let group = world
        .groups
        .get(gid)
        .ok_or_else(|| JoinRequestError::NotFound(format!("no group {jid}")))?;
    if !world.accounts.contains_key(phone) {
        return Err(JoinRequestError::NotFound(format!(
            "{phone} is not on WhatsApp"
        )));
    }
    if group.role(phone).is_some() {
        return Err(JoinRequestError::Conflict(format!(
            "{phone} is already in group {gid}"
        )));
    }
    let gid = gid.to_string();
    request_to_join(world, &gid, (phone, 0));
    Ok(())
}

/// `DELETE /control/groups/{jid}/join-requests/{phone}`: the requester withdraws; the
/// admins (and the requester's own devices) get `<revoked_membership_requests>`.
pub fn revoke_join_request(
    world: &mut World,
    jid: &str,
    phone: &str,
) -> Result<(), JoinRequestError> {
    let gid = jid.split('@').next().unwrap_or(jid).to_string();
    let group = world
        .groups
        .get_mut(&gid)
        .ok_or_else(|| JoinRequestError::NotFound(format!("no group {jid}")))?;
    let before = group.pending_requests.len();
    group.pending_requests.retain(|(p, _)| p != phone);
    if group.pending_requests.len() == before {
        return Err(JoinRequestError::NotFound(format!(
            "{phone} has no pending request to join {gid}"
        )));
    }
    let mut recipients = admins(group);
    recipients.push(phone.to_string());
    notify_to(
        world,
        &gid,
        (phone, 0),
        participants_action("revoked_membership_requests", &[phone.to_string()], None),
        recipients,
    );
    tracing::info!(group = %gid, requester = phone, "join request revoked");
    Ok(())
}

/// `GET /control/groups`.
pub fn list_json(sim: &Arc<Sim>) -> Value {
    let world = sim.world();
    Value::Array(world.groups.values().map(|g| g.json(&world)).collect())
}

/// `GET /control/groups/{jid}` (bare id or `…@g.us`).
pub fn get_json(sim: &Arc<Sim>, jid: &str) -> Option<Value> {
    let id = jid.split('@').next().unwrap_or(jid);
    let world = sim.world();
    world.groups.get(id).map(|g| g.json(&world))
}

/// `POST /control/groups/{jid}/addressing`: from now on metadata answers name the
/// participants in `addressing`. False for an unknown group.
pub fn set_addressing(world: &mut World, jid: &str, addressing: Addressing) -> bool {
    let id = jid.split('@').next().unwrap_or(jid);
    match world.groups.get_mut(id) {
        Some(group) => {
            group.addressing = addressing;
            tracing::info!(
                group = id,
                mode = addressing.wire(),
                "group addressing changed"
            );
            true
        }
        None => false,
    }
}
