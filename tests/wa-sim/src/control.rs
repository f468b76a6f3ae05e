//! The JSON control API (`/control/...`): acts as the phone (scan QR, enter pair code,
//! unlink), creates sim-only users, injects faults and reports counters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use wacore_binary::builder::NodeBuilder;

use crate::pairing::LinkError;
use crate::phone::{Content, MediaKind, SendError};
use crate::world::{ConnState, IqErrorFault, Sim};

/// An HTTP status and JSON body.
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

fn ok(body: Value) -> Reply {
    Reply { status: 200, body }
}

fn error(status: u16, code: &str, message: impl Into<String>) -> Reply {
    Reply {
        status,
        body: json!({ "error": code, "message": message.into() }),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Reply> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| error(400, "bad_request", format!("invalid JSON body: {e}")))
}

fn valid_phone(phone: &str) -> Result<(), Reply> {
    let ok = (7..=15).contains(&phone.len())
        && phone.bytes().all(|b| b.is_ascii_digit())
        && !phone.starts_with('0');
    if ok {
        Ok(())
    } else {
        Err(error(
            400,
            "bad_request",
            "phone_number must be 7 to 15 digits without a leading 0",
        ))
    }
}

fn link_reply(result: Result<crate::pairing::Linked, LinkError>) -> Reply {
    match result {
        Ok(linked) => ok(serde_json::to_value(linked).unwrap_or(Value::Null)),
        Err(LinkError::BadInput(m)) => error(400, "bad_request", m),
        Err(LinkError::NotFound(m)) => error(404, "not_found", m),
    }
}

/// Routes one control request. `path` starts after `/control`.
pub async fn handle(sim: &Arc<Sim>, method: &str, path: &str, body: &[u8]) -> Reply {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let result = match (method, segments.as_slice()) {
        ("POST", ["scan-qr"]) => scan_qr(sim, body),
        ("POST", ["enter-pair-code"]) => enter_pair_code(sim, body).await,
        ("POST", ["accounts"]) => create_account(sim, body),
        ("GET", ["accounts", phone]) => get_account(sim, phone),
        ("POST", ["accounts", phone, "unlink"]) => unlink(sim, phone, body),
        ("GET", ["accounts", phone, "messages"]) => inbox(sim, phone),
        ("POST", ["accounts", phone, "send"]) => send(sim, phone, body).await,
        ("POST", ["accounts", phone, "receipts"]) => receipts(sim, phone, body),
        ("GET", ["accounts", phone, "devices", device, "messages"]) => {
            device_messages(sim, phone, device)
        }
        ("POST", ["faults"]) => add_fault(sim, body),
        ("DELETE", ["faults"]) => {
            sim.world().faults = Default::default();
            Ok(ok(json!({ "success": true })))
        }
        ("GET", ["stats"]) => Ok(ok(
            serde_json::to_value(sim.world().stats.clone()).unwrap_or(Value::Null)
        )),
        ("GET", ["groups"]) => Ok(ok(crate::groups::list_json(sim))),
        ("GET", ["groups", jid]) => crate::groups::get_json(sim, jid)
            .map(ok)
            .ok_or_else(|| error(404, "not_found", format!("no group {jid}"))),
        ("POST", ["groups", jid, "join-requests"]) => add_join_request(sim, jid, body),
        ("POST", ["groups", jid, "addressing"]) => set_addressing(sim, jid, body),
        ("DELETE", ["groups", jid, "join-requests", phone]) => remove_join_request(sim, jid, phone),
        (
            _,
            [
                "scan-qr" | "enter-pair-code" | "accounts" | "faults" | "stats" | "groups",
                ..,
            ],
        ) => Err(error(
            405,
            "method_not_allowed",
            format!("{method} is not allowed here"),
        )),
        _ => Err(error(
            404,
            "not_found",
            format!("no control endpoint {path}"),
        )),
    };
    result.unwrap_or_else(|e| e)
}

#[derive(Deserialize)]
struct ScanQr {
    qr: String,
    phone_number: Option<String>,
    push_name: Option<String>,
}

fn scan_qr(sim: &Arc<Sim>, body: &[u8]) -> Result<Reply, Reply> {
    let req: ScanQr = parse(body)?;
    if let Some(phone) = &req.phone_number {
        valid_phone(phone)?;
    }
    let qr =
        crate::pairing::parse_qr(&req.qr).map_err(|e| error(400, "bad_request", e.to_string()))?;
    Ok(link_reply(crate::pairing::link_device(
        sim,
        &qr.noise_pub,
        req.phone_number.as_deref(),
        req.push_name.as_deref(),
        qr.identity_pub,
        qr.adv_secret,
    )))
}

#[derive(Deserialize)]
struct EnterCode {
    phone_number: String,
    code: String,
    push_name: Option<String>,
}

async fn enter_pair_code(sim: &Arc<Sim>, body: &[u8]) -> Result<Reply, Reply> {
    let req: EnterCode = parse(body)?;
    valid_phone(&req.phone_number)?;
    Ok(link_reply(
        crate::pairing::enter_pair_code(
            sim,
            &req.phone_number,
            &req.code,
            req.push_name.as_deref(),
        )
        .await,
    ))
}

#[derive(Deserialize)]
struct NewAccount {
    phone_number: Option<String>,
    push_name: Option<String>,
}

fn create_account(sim: &Arc<Sim>, body: &[u8]) -> Result<Reply, Reply> {
    let req: NewAccount = parse(body)?;
    if let Some(phone) = &req.phone_number {
        valid_phone(phone)?;
    }
    let mut world = sim.world();
    if let Some(phone) = &req.phone_number
        && world.accounts.contains_key(phone)
    {
        return Err(error(409, "conflict", format!("{phone} already exists")));
    }
    let phone = world.ensure_account(req.phone_number.as_deref(), req.push_name.as_deref(), true);
    let account = world
        .accounts
        .get(&phone)
        .ok_or_else(|| error(500, "internal", "account vanished"))?;
    Ok(Reply {
        status: 201,
        body: json!({
            "phone_number": account.phone,
            "jid": account.jid(),
            "push_name": account.push_name,
        }),
    })
}

fn get_account(sim: &Arc<Sim>, phone: &str) -> Result<Reply, Reply> {
    let world = sim.world();
    let account = world
        .accounts
        .get(phone)
        .ok_or_else(|| error(404, "not_found", format!("no account {phone}")))?;
    let devices: Vec<Value> = account
        .devices
        .values()
        .map(|d| {
            json!({
                "device": d.id,
                "jid": format!("{}:{}@s.whatsapp.net", account.phone, d.id),
                "connected": !world.device_conns(phone, d.id).is_empty(),
            })
        })
        .collect();
    Ok(ok(json!({
        "phone_number": account.phone,
        "lid": format!("{}@lid", account.lid),
        "push_name": account.push_name,
        "sim_only": account.sim_only,
        "devices": devices,
    })))
}

fn inbox(sim: &Arc<Sim>, phone: &str) -> Result<Reply, Reply> {
    let world = sim.world();
    let account = world
        .accounts
        .get(phone)
        .ok_or_else(|| error(404, "not_found", format!("no account {phone}")))?;
    Ok(ok(
        serde_json::to_value(&account.inbox).unwrap_or(Value::Null)
    ))
}

/// `POST /accounts/{phone}/send`: every kind's fields side by side; `kind` picks which
/// of them are read.
#[derive(Deserialize)]
struct Send {
    to: String,
    kind: Option<String>,
    text: Option<String>,
    quoted_id: Option<String>,
    mimetype: Option<String>,
    size: Option<u64>,
    caption: Option<String>,
    file_name: Option<String>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    name: Option<String>,
    display_name: Option<String>,
    vcard: Option<String>,
    message_id: Option<String>,
    emoji: Option<String>,
}

fn required<T>(value: Option<T>, kind: &str, field: &str) -> Result<T, Reply> {
    value.ok_or_else(|| {
        error(
            400,
            "bad_request",
            format!("a {kind} message needs \"{field}\""),
        )
    })
}

impl Send {
    fn content(self) -> Result<Content, Reply> {
        let kind = self.kind.unwrap_or_else(|| "text".into());
        let content = match kind.as_str() {
            "text" => Content::Text {
                text: required(self.text, &kind, "text")?,
                quoted_id: self.quoted_id,
            },
            "location" => Content::Location {
                latitude: required(self.latitude, &kind, "latitude")?,
                longitude: required(self.longitude, &kind, "longitude")?,
                name: self.name,
            },
            "contact" => Content::Contact {
                display_name: required(self.display_name, &kind, "display_name")?,
                vcard: required(self.vcard, &kind, "vcard")?,
            },
            "reaction" => Content::Reaction {
                message_id: required(self.message_id, &kind, "message_id")?,
                emoji: required(self.emoji, &kind, "emoji")?,
            },
            other => match MediaKind::parse(other) {
                Some(media) => Content::Media {
                    kind: media,
                    mimetype: self.mimetype,
                    size: self.size,
                    caption: self.caption,
                    file_name: self.file_name,
                },
                None => {
                    return Err(error(
                        400,
                        "bad_request",
                        format!(
                            "unknown kind {other:?}; use text, image, video, audio, document, sticker, location, contact or reaction"
                        ),
                    ));
                }
            },
        };
        Ok(content)
    }
}

fn send_error(e: SendError) -> Reply {
    match e {
        SendError::NotFound(m) => error(404, "not_found", m),
        SendError::Failed(m) => error(500, "internal", m),
    }
}

async fn send(sim: &Arc<Sim>, phone: &str, body: &[u8]) -> Result<Reply, Reply> {
    let req: Send = parse(body)?;
    let to = req.to.clone();
    let content = req.content()?;
    let message = crate::phone::compose(sim, phone, &to, content).map_err(send_error)?;
    let id = crate::phone::send(sim, phone, &to, message)
        .await
        .map_err(send_error)?;
    Ok(ok(json!({ "id": id })))
}

#[derive(Deserialize)]
struct Receipts {
    to: String,
    ids: Vec<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    chat: Option<String>,
}

/// `phone`'s phone acknowledges messages it got from `to`: the `<receipt>` WhatsApp hands
/// every companion of `to` (queued for offline ones).
fn receipts(sim: &Arc<Sim>, phone: &str, body: &[u8]) -> Result<Reply, Reply> {
    let req: Receipts = parse(body)?;
    let kind = match req.kind.as_deref().unwrap_or("delivered") {
        "delivered" | "delivery" => None,
        "read" => Some("read"),
        "played" => Some("played"),
        "retry" => Some("retry"),
        other => {
            return Err(error(
                400,
                "bad_request",
                format!("unknown receipt type {other:?}; use delivered, read, played or retry"),
            ));
        }
    };
    let Some((first, rest)) = req.ids.split_first() else {
        return Err(error(
            400,
            "bad_request",
            "ids must name at least one message",
        ));
    };
    let mut world = sim.world();
    if !world.accounts.contains_key(phone) {
        return Err(error(404, "not_found", format!("no account {phone}")));
    }
    let to_user = req.to.split('@').next().unwrap_or(&req.to);
    let to_user = to_user.split(':').next().unwrap_or(to_user);
    let to = world
        .resolve_user(to_user, req.to.ends_with("@lid"))
        .ok_or_else(|| error(404, "not_found", format!("no account {}", req.to)))?;
    let phone_jid = format!("{phone}@s.whatsapp.net");
    let mut receipt = NodeBuilder::new("receipt")
        .attr("id", first.clone())
        .attr("t", crate::signal::now_secs().to_string());
    match &req.chat {
        Some(chat) => {
            let gid = chat.split('@').next().unwrap_or(chat);
            if !world.groups.contains_key(gid) {
                return Err(error(404, "not_found", format!("no group {chat}")));
            }
            receipt = receipt
                .attr("from", format!("{gid}@g.us"))
                .attr("participant", phone_jid);
        }
        None => receipt = receipt.attr("from", phone_jid),
    }
    if let Some(kind) = kind {
        receipt = receipt.attr("type", kind);
    }
    if kind == Some("retry") {
        if !rest.is_empty() {
            return Err(error(
                400,
                "bad_request",
                "a retry receipt asks for one message",
            ));
        }
        // The first request for it, without keys: the phone still has its session.
        receipt = receipt.children([NodeBuilder::new("retry")
            .attr("count", "1")
            .attr("id", first.clone())
            .attr("t", crate::signal::now_secs().to_string())
            .attr("v", "1")
            .build()]);
    } else if !rest.is_empty() {
        let items = rest
            .iter()
            .map(|id| NodeBuilder::new("item").attr("id", id.clone()).build());
        receipt = receipt.children([NodeBuilder::new("list").children(items).build()]);
    }
    let receipt = receipt.build();
    let devices: Vec<u16> = world
        .accounts
        .get(&to)
        .map(|a| a.devices.keys().copied().collect())
        .unwrap_or_default();
    for device in devices {
        world.deliver(&to, device, receipt.clone());
    }
    tracing::info!(from = phone, to = %to, ids = req.ids.len(), ?kind, "phone sent receipts");
    Ok(ok(json!({ "success": true })))
}

/// What one companion device was given and acknowledged.
fn device_messages(sim: &Arc<Sim>, phone: &str, device: &str) -> Result<Reply, Reply> {
    let world = sim.world();
    let account = world
        .accounts
        .get(phone)
        .ok_or_else(|| error(404, "not_found", format!("no account {phone}")))?;
    let d = device
        .parse::<u16>()
        .ok()
        .and_then(|d| account.devices.get(&d))
        .ok_or_else(|| error(404, "not_found", format!("{phone} has no device {device}")))?;
    let unacked: Vec<&str> = d.unacked.iter().map(|u| u.id.as_str()).collect();
    Ok(ok(json!({ "unacked": unacked, "acked": d.acked })))
}

#[derive(Deserialize)]
struct JoinRequest {
    phone_number: String,
}

fn join_request_reply(result: Result<(), crate::groups::JoinRequestError>) -> Result<Reply, Reply> {
    use crate::groups::JoinRequestError as E;
    match result {
        Ok(()) => Ok(ok(json!({ "success": true }))),
        Err(E::NotFound(m)) => Err(error(404, "not_found", m)),
        Err(E::Conflict(m)) => Err(error(409, "conflict", m)),
    }
}

fn add_join_request(sim: &Arc<Sim>, jid: &str, body: &[u8]) -> Result<Reply, Reply> {
    let req: JoinRequest = parse(body)?;
    valid_phone(&req.phone_number)?;
    join_request_reply(crate::groups::add_join_request(
        &mut sim.world(),
        jid,
        &req.phone_number,
    ))
}

fn remove_join_request(sim: &Arc<Sim>, jid: &str, phone: &str) -> Result<Reply, Reply> {
    join_request_reply(crate::groups::revoke_join_request(
        &mut sim.world(),
        jid,
        phone,
    ))
}

#[derive(Deserialize)]
struct AddressingMode {
    mode: String,
}

fn set_addressing(sim: &Arc<Sim>, jid: &str, body: &[u8]) -> Result<Reply, Reply> {
    let req: AddressingMode = parse(body)?;
    let mode = crate::groups::Addressing::parse(&req.mode)
        .ok_or_else(|| error(400, "bad_request", "mode must be \"lid\" or \"pn\""))?;
    if !crate::groups::set_addressing(&mut sim.world(), jid, mode) {
        return Err(error(404, "not_found", format!("no group {jid}")));
    }
    Ok(ok(
        json!({ "success": true, "addressing_mode": mode.wire() }),
    ))
}

#[derive(Deserialize)]
struct Unlink {
    device: Option<u16>,
}

fn unlink(sim: &Arc<Sim>, phone: &str, body: &[u8]) -> Result<Reply, Reply> {
    let req: Unlink = parse(body)?;
    let devices: Vec<u16> = {
        let world = sim.world();
        let account = world
            .accounts
            .get(phone)
            .ok_or_else(|| error(404, "not_found", format!("no account {phone}")))?;
        match req.device {
            Some(d) if account.devices.contains_key(&d) => vec![d],
            Some(d) => {
                return Err(error(
                    404,
                    "not_found",
                    format!("{phone} has no linked device {d}"),
                ));
            }
            None => account.devices.keys().copied().collect(),
        }
    };
    for d in &devices {
        remove_device(sim, phone, *d, true);
    }
    Ok(ok(json!({ "unlinked": devices })))
}

/// Removes a companion for good. With `notify`, live sockets of that device are told they
/// were logged out (`<stream:error code="401"><conflict type="device_removed"/>`).
pub fn remove_device(sim: &Arc<Sim>, phone: &str, device: u16, notify: bool) {
    let mut world = sim.world();
    let Some(account) = world.accounts.get_mut(phone) else {
        return;
    };
    let Some(removed) = account.devices.remove(&device) else {
        return;
    };
    account.removed.insert(device, removed.noise_pub);
    account.key_index_ts = crate::signal::now_secs();
    world.stats.unlinks += 1;
    crate::pairing::announce_device_change(&mut world, phone, device, false);
    let conns: Vec<_> = world
        .device_conns(phone, device)
        .iter()
        .map(|c| c.id)
        .collect();
    for id in conns {
        let Some(conn) = world.conns.get_mut(&id) else {
            continue;
        };
        conn.state = ConnState::Closing;
        if notify {
            conn.send(
                NodeBuilder::new("stream:error")
                    .attr("code", "401")
                    .children([NodeBuilder::new("conflict")
                        .attr("type", "device_removed")
                        .build()])
                    .build(),
            );
            crate::conn::close_soon(conn.out.clone(), Duration::from_secs(2));
        }
    }
    tracing::info!(phone, device, "device unlinked");
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Fault {
    DropSocket {
        phone_number: String,
        device: Option<u16>,
    },
    Stall {
        duration_ms: u64,
        phone_number: Option<String>,
    },
    IqError {
        xmlns: String,
        code: u16,
        text: Option<String>,
        count: Option<u32>,
        skip: Option<u32>,
    },
    StreamError {
        phone_number: String,
        device: Option<u16>,
        error: String,
    },
}

fn add_fault(sim: &Arc<Sim>, body: &[u8]) -> Result<Reply, Reply> {
    let fault: Fault = parse(body)?;
    let mut world = sim.world();
    match fault {
        Fault::DropSocket {
            phone_number,
            device,
        } => {
            if !world.accounts.contains_key(&phone_number) {
                return Err(error(
                    404,
                    "not_found",
                    format!("no account {phone_number}"),
                ));
            }
            let mut affected = 0;
            for conn in world.conns.values() {
                if let ConnState::LoggedIn { phone, device: d } = &conn.state
                    && *phone == phone_number
                    && device.is_none_or(|want| want == *d)
                {
                    let _ = conn.kill.send(true);
                    affected += 1;
                }
            }
            tracing::info!(phone = %phone_number, affected, "fault: dropped sockets");
            Ok(ok(json!({ "success": true, "affected": affected })))
        }
        Fault::Stall {
            duration_ms,
            phone_number,
        } => {
            let until = Instant::now() + Duration::from_millis(duration_ms);
            match phone_number {
                Some(phone) => {
                    world.faults.stall_until.insert(phone, until);
                }
                None => world.faults.stall_all_until = Some(until),
            }
            Ok(ok(json!({ "success": true })))
        }
        Fault::IqError {
            xmlns,
            code,
            text,
            count,
            skip,
        } => {
            world.faults.iq_errors.push(IqErrorFault {
                xmlns,
                code,
                text: text.unwrap_or_else(|| default_error_text(code).to_string()),
                skip: skip.unwrap_or(0),
                remaining: count.unwrap_or(1),
            });
            Ok(ok(json!({ "success": true })))
        }
        Fault::StreamError {
            phone_number,
            device,
            error: kind,
        } => {
            let stanza = match kind.as_str() {
                "replaced" => NodeBuilder::new("stream:error")
                    .children([NodeBuilder::new("conflict")
                        .attr("type", "replaced")
                        .build()])
                    .build(),
                "conflict" => NodeBuilder::new("stream:error").attr("code", "409").build(),
                "device_removed" => NodeBuilder::new("stream:error")
                    .attr("code", "401")
                    .children([NodeBuilder::new("conflict")
                        .attr("type", "device_removed")
                        .build()])
                    .build(),
                code if !code.is_empty() && code.bytes().all(|b| b.is_ascii_digit()) => {
                    NodeBuilder::new("stream:error").attr("code", code).build()
                }
                other => {
                    return Err(error(
                        400,
                        "bad_request",
                        format!(
                            "unknown stream error {other:?}; use conflict, replaced, device_removed or a numeric code"
                        ),
                    ));
                }
            };
            if !world.accounts.contains_key(&phone_number) {
                return Err(error(
                    404,
                    "not_found",
                    format!("no account {phone_number}"),
                ));
            }
            let mut affected = 0;
            for conn in world.conns.values() {
                if let ConnState::LoggedIn { phone, device: d } = &conn.state
                    && *phone == phone_number
                    && device.is_none_or(|want| want == *d)
                {
                    conn.send(stanza.clone());
                    crate::conn::close_soon(conn.out.clone(), Duration::from_secs(2));
                    affected += 1;
                }
            }
            Ok(ok(json!({ "success": true, "affected": affected })))
        }
    }
}

fn default_error_text(code: u16) -> &'static str {
    match code {
        400 => "bad-request",
        401 => "not-authorized",
        403 => "forbidden",
        404 => "item-not-found",
        406 => "not-acceptable",
        409 => "conflict",
        429 => "rate-overlimit",
        500 => "internal-server-error",
        501 => "feature-not-implemented",
        503 => "service-unavailable",
        _ => "error",
    }
}
