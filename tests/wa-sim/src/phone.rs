//! The simulated phone sending: an account's device 0 (e.g. a sim-only user) writes a
//! message (text, media, location, contact, reaction) to a contact or a group. It encrypts
//! with its own Signal state exactly like a real phone (pkmsg/msg per companion device,
//! sender keys for groups) and the sim delivers the result.

use std::sync::Arc;

use wacore_binary::builder::NodeBuilder;
use wacore_binary::node::Node;
use waproto::buffa::MessageField;
use waproto::whatsapp as wa;

use crate::signal::{PublicBundle, address, now_millis, now_secs};
use crate::world::{Sim, World};

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

/// The bare id of `to` when it names a group (`…@g.us`, or a bare `120363…` id).
fn group_of(to: &str) -> Option<&str> {
    to.strip_suffix("@g.us")
        .or_else(|| (to.starts_with("120363") && !to.contains('@')).then_some(to))
}

/// Resolves `to` (a phone number, a user JID, or a group JID) from `from`'s side.
fn fanout(world: &World, from: &str, to: &str) -> Result<Fanout, SendError> {
    let account = world
        .accounts
        .get(from)
        .ok_or_else(|| SendError::NotFound(format!("no account {from}")))?;
    if let Some(gid) = group_of(to) {
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
        return Ok(Fanout {
            chat: format!("{gid}@g.us"),
            group: true,
            targets,
        });
    }
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
        targets.extend(account.devices.keys().map(|d| (from.to_string(), *d)));
    }
    Ok(Fanout {
        chat: format!("{peer}@s.whatsapp.net"),
        group: false,
        targets,
    })
}

/// What a phone can be asked to send; [`compose`] turns it into the protobuf message.
pub enum Content {
    Text {
        text: String,
        quoted_id: Option<String>,
    },
    Media {
        kind: MediaKind,
        mimetype: Option<String>,
        size: Option<u64>,
        caption: Option<String>,
        file_name: Option<String>,
    },
    Location {
        latitude: f64,
        longitude: f64,
        name: Option<String>,
    },
    Contact {
        display_name: String,
        vcard: String,
    },
    Reaction {
        message_id: String,
        emoji: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    Document,
    Sticker,
}

impl MediaKind {
    pub fn parse(kind: &str) -> Option<Self> {
        Some(match kind {
            "image" => Self::Image,
            "video" => Self::Video,
            "audio" => Self::Audio,
            "document" => Self::Document,
            "sticker" => Self::Sticker,
            _ => return None,
        })
    }

    fn default_mimetype(self) -> &'static str {
        match self {
            Self::Image => "image/jpeg",
            Self::Video => "video/mp4",
            Self::Audio => "audio/ogg; codecs=opus",
            Self::Document => "application/pdf",
            Self::Sticker => "image/webp",
        }
    }
}

/// Upload coordinates of a media file nobody will download: random keys and hashes of the
/// right lengths and a CDN-shaped path, so the message looks like one a phone uploaded.
struct DummyUpload {
    url: String,
    direct_path: String,
    media_key: Vec<u8>,
    file_sha256: Vec<u8>,
    file_enc_sha256: Vec<u8>,
    media_key_timestamp: i64,
}

impl DummyUpload {
    fn new() -> Self {
        let name: String = rand::random::<[u8; 16]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let direct_path = format!("/v/t62.7118-24/{name}.enc?ccb=11-4&oh=01_sim&oe=00000000");
        Self {
            url: format!("https://mmg.whatsapp.net{direct_path}&mms3=true"),
            direct_path,
            media_key: rand::random::<[u8; 32]>().to_vec(),
            file_sha256: rand::random::<[u8; 32]>().to_vec(),
            file_enc_sha256: rand::random::<[u8; 32]>().to_vec(),
            media_key_timestamp: i64::try_from(now_secs()).unwrap_or(i64::MAX),
        }
    }
}

/// Builds the protobuf message for `content` as `from`'s phone writes it to `to`. Quotes
/// and reactions name the target message the way WhatsApp does: by id, with the sender
/// taken from what this phone received (its inbox) or sent itself.
pub fn compose(
    sim: &Sim,
    from: &str,
    to: &str,
    content: Content,
) -> Result<wa::Message, SendError> {
    let world = sim.world();
    let chat = fanout(&world, from, to)?.chat;
    let account = world
        .accounts
        .get(from)
        .ok_or_else(|| SendError::NotFound(format!("no account {from}")))?;
    let own_jid = account.jid();
    // (sender JID, text) of a message this phone knows by id.
    let known = |id: &str| -> Option<(String, Option<String>)> {
        if let Some(m) = account.inbox.iter().rev().find(|m| m.id == id) {
            return Some((m.from.clone(), Some(m.text.clone())));
        }
        account
            .sent
            .iter()
            .any(|s| s == id)
            .then(|| (own_jid.clone(), None))
    };
    let message = match content {
        Content::Text {
            text,
            quoted_id: None,
        } => wa::Message {
            conversation: Some(text),
            ..Default::default()
        },
        Content::Text {
            text,
            quoted_id: Some(quoted),
        } => {
            let target = known(&quoted);
            let quoted_message = target
                .as_ref()
                .and_then(|(_, text)| text.clone())
                .map(|text| wa::Message {
                    conversation: Some(text),
                    ..Default::default()
                });
            wa::Message {
                extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
                    text: Some(text),
                    context_info: MessageField::some(wa::ContextInfo {
                        stanza_id: Some(quoted),
                        participant: target.map(|(sender, _)| sender),
                        quoted_message: quoted_message.map(MessageField::some).unwrap_or_default(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }
        }
        Content::Media {
            kind,
            mimetype,
            size,
            caption,
            file_name,
        } => {
            let upload = DummyUpload::new();
            let mimetype = Some(mimetype.unwrap_or_else(|| kind.default_mimetype().to_string()));
            let file_length = Some(size.unwrap_or(1024));
            match kind {
                MediaKind::Image => wa::Message {
                    image_message: MessageField::some(wa::message::ImageMessage {
                        url: Some(upload.url),
                        mimetype,
                        caption,
                        file_sha256: Some(upload.file_sha256),
                        file_length,
                        height: Some(640),
                        width: Some(480),
                        media_key: Some(upload.media_key),
                        file_enc_sha256: Some(upload.file_enc_sha256),
                        direct_path: Some(upload.direct_path),
                        media_key_timestamp: Some(upload.media_key_timestamp),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                MediaKind::Video => wa::Message {
                    video_message: MessageField::some(wa::message::VideoMessage {
                        url: Some(upload.url),
                        mimetype,
                        caption,
                        file_sha256: Some(upload.file_sha256),
                        file_length,
                        seconds: Some(5),
                        media_key: Some(upload.media_key),
                        file_enc_sha256: Some(upload.file_enc_sha256),
                        direct_path: Some(upload.direct_path),
                        media_key_timestamp: Some(upload.media_key_timestamp),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                MediaKind::Audio => wa::Message {
                    audio_message: MessageField::some(wa::message::AudioMessage {
                        url: Some(upload.url),
                        mimetype,
                        file_sha256: Some(upload.file_sha256),
                        file_length,
                        seconds: Some(3),
                        media_key: Some(upload.media_key),
                        file_enc_sha256: Some(upload.file_enc_sha256),
                        direct_path: Some(upload.direct_path),
                        media_key_timestamp: Some(upload.media_key_timestamp),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                MediaKind::Document => wa::Message {
                    document_message: MessageField::some(wa::message::DocumentMessage {
                        url: Some(upload.url),
                        mimetype,
                        title: file_name.clone(),
                        file_sha256: Some(upload.file_sha256),
                        file_length,
                        media_key: Some(upload.media_key),
                        file_name,
                        file_enc_sha256: Some(upload.file_enc_sha256),
                        direct_path: Some(upload.direct_path),
                        media_key_timestamp: Some(upload.media_key_timestamp),
                        caption,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                MediaKind::Sticker => wa::Message {
                    sticker_message: MessageField::some(wa::message::StickerMessage {
                        url: Some(upload.url),
                        file_sha256: Some(upload.file_sha256),
                        file_enc_sha256: Some(upload.file_enc_sha256),
                        media_key: Some(upload.media_key),
                        mimetype,
                        height: Some(512),
                        width: Some(512),
                        direct_path: Some(upload.direct_path),
                        file_length,
                        media_key_timestamp: Some(upload.media_key_timestamp),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            }
        }
        Content::Location {
            latitude,
            longitude,
            name,
        } => wa::Message {
            location_message: MessageField::some(wa::message::LocationMessage {
                degrees_latitude: Some(latitude),
                degrees_longitude: Some(longitude),
                name,
                ..Default::default()
            }),
            ..Default::default()
        },
        Content::Contact {
            display_name,
            vcard,
        } => wa::Message {
            contact_message: MessageField::some(wa::message::ContactMessage {
                display_name: Some(display_name),
                vcard: Some(vcard),
                ..Default::default()
            }),
            ..Default::default()
        },
        Content::Reaction { message_id, emoji } => {
            let target = known(&message_id);
            let from_me = target
                .as_ref()
                .is_some_and(|(sender, _)| *sender == own_jid);
            // In groups the key names the target's author; in 1:1 chats `from_me` does.
            let participant = chat
                .ends_with("@g.us")
                .then(|| target.map(|(sender, _)| sender))
                .flatten();
            wa::Message {
                reaction_message: MessageField::some(wa::message::ReactionMessage {
                    key: MessageField::some(wa::MessageKey {
                        remote_jid: Some(chat),
                        from_me: Some(from_me),
                        id: Some(message_id),
                        participant,
                    }),
                    text: Some(emoji),
                    sender_timestamp_ms: Some(i64::try_from(now_millis()).unwrap_or(i64::MAX)),
                    ..Default::default()
                }),
                ..Default::default()
            }
        }
    };
    Ok(message)
}

/// The stanza `type` WhatsApp gives a message, and the `mediatype` its `<enc>` carries.
fn stanza_kind(message: &wa::Message) -> (&'static str, Option<&'static str>) {
    if message.reaction_message.is_set() {
        return ("reaction", None);
    }
    if message.conversation.is_some() || message.extended_text_message.is_set() {
        return ("text", None);
    }
    let mediatype = if message.image_message.is_set() {
        "image"
    } else if let Some(video) = message.video_message.as_option() {
        if video.gif_playback == Some(true) {
            "gif"
        } else {
            "video"
        }
    } else if let Some(audio) = message.audio_message.as_option() {
        if audio.ptt == Some(true) {
            "ptt"
        } else {
            "audio"
        }
    } else if message.document_message.is_set() {
        "document"
    } else if message.sticker_message.is_set() {
        "sticker"
    } else if message.location_message.is_set() {
        "location"
    } else if message.contact_message.is_set() {
        "vcard"
    } else {
        // Protocol and other non-content messages travel as text.
        return ("text", None);
    };
    ("media", Some(mediatype))
}

/// Sends `message` from `from`'s phone to `to` (a phone number, a user JID, or a group
/// JID). Returns the message id.
pub async fn send(
    sim: &Arc<Sim>,
    from: &str,
    to: &str,
    message: wa::Message,
) -> Result<String, SendError> {
    let (fanout, endpoint, push_name, id) = {
        let mut world = sim.world();
        let fanout = fanout(&world, from, to)?;
        let id = format!(
            "3A{:018X}",
            world.serial() * 7_919 + rand::random_range(0..7_919u64)
        );
        let account = world
            .accounts
            .get_mut(from)
            .ok_or_else(|| SendError::NotFound(format!("no account {from}")))?;
        account.sent.push(id.clone());
        (
            fanout,
            account.primary.clone(),
            account.push_name.clone(),
            id,
        )
    };
    let (stanza_type, mediatype) = stanza_kind(&message);
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
        let mut enc = NodeBuilder::new("enc")
            .attr("v", "2")
            .attr("type", encrypted.kind);
        // In groups this copy only carries the sender key; the content is the skmsg.
        if let (Some(mt), false) = (mediatype, fanout.group) {
            enc = enc.attr("mediatype", mt);
        }
        let mut kids = vec![enc.bytes(encrypted.bytes).build()];
        let mut builder = NodeBuilder::new("message")
            .attr("id", id.clone())
            .attr("type", stanza_type)
            .attr("t", t.clone())
            .attr("notify", push_name.clone());
        if let Some(sk) = &skmsg {
            let mut enc = NodeBuilder::new("enc").attr("v", "2").attr("type", "skmsg");
            if let Some(mt) = mediatype {
                enc = enc.attr("mediatype", mt);
            }
            kids.push(enc.bytes(sk.clone()).build());
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
    tracing::info!(from, to, id = %id, stanza_type, "phone sent a message");
    Ok(id)
}
