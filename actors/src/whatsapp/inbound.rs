//! Inbound traffic in the project's terms: decrypted messages (handed to the session's sink
//! through whatsapp-rust's [`InboundDurabilityHook`], so the server ack waits until the sink
//! made them durable) and receipts for messages this account sent.

use futures_util::future::BoxFuture;
use std::sync::Arc;

use whatsapp_rust::Client;
use whatsapp_rust::InboundDurabilityHook;
use whatsapp_rust::types::durability_hook::InboundMessage;
use whatsapp_rust::types::events::Receipt;
use whatsapp_rust::types::presence::ReceiptType;
use whatsapp_rust::wacore::proto_helpers::MessageExt;
use whatsapp_rust::waproto::whatsapp as wa;

use crate::model::{AckStatus, IncomingMessage, MediaKind, MessageAck, MessageContent};

/// Where a session's inbound messages go; `Ok` only once they are durable.
pub type MessageSink =
    Arc<dyn Fn(Vec<IncomingMessage>) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Gates whatsapp-rust's server ack on the sink: a batch the sink did not make durable stays
/// unacknowledged, and WhatsApp delivers it again on the next connection.
pub struct DurableInbound {
    pub sink: MessageSink,
}

#[whatsapp_rust::async_trait]
impl InboundDurabilityHook for DurableInbound {
    async fn on_messages(
        &self,
        _client: Arc<Client>,
        batch: &[InboundMessage],
    ) -> whatsapp_rust::anyhow::Result<()> {
        let messages = batch.iter().map(incoming).collect();
        (self.sink)(messages)
            .await
            .map_err(|e| whatsapp_rust::anyhow::anyhow!("event log append failed: {e}"))
    }
}

fn jid_string(jid: &whatsapp_rust::Jid) -> String {
    jid.to_non_ad_string()
}

fn incoming(m: &InboundMessage) -> IncomingMessage {
    let info = &m.info;
    let source = &info.source;
    // A LID-addressed sender is shown by phone number when WhatsApp told us which.
    let sender = match &source.sender_alt {
        Some(alt) if source.sender.is_lid() => jid_string(alt),
        _ => jid_string(&source.sender),
    };
    let chat = if source.is_group {
        jid_string(&source.chat)
    } else if source.is_from_me {
        source
            .recipient
            .as_ref()
            .map(jid_string)
            .unwrap_or_else(|| jid_string(&source.chat))
    } else {
        sender.clone()
    };
    let base = m.message.get_base_message();
    let (content, quoted_id) = content_of(base);
    IncomingMessage {
        id: info.id.to_string(),
        chat,
        sender,
        push_name: info.push_name.clone(),
        is_group: source.is_group,
        from_me: source.is_from_me,
        timestamp: u64::try_from(info.timestamp.timestamp()).unwrap_or(0),
        offline: info.is_offline,
        quoted_id,
        content,
    }
}

fn quoted(
    context: &whatsapp_rust::waproto::buffa::MessageField<wa::ContextInfo>,
) -> Option<String> {
    context.as_option().and_then(|c| c.stanza_id.clone())
}

/// What a message is, and which message it quotes.
fn content_of(m: &wa::Message) -> (MessageContent, Option<String>) {
    if let Some(text) = &m.conversation {
        return (MessageContent::Text(text.clone()), None);
    }
    if let Some(ext) = m.extended_text_message.as_option() {
        return (
            MessageContent::Text(ext.text.clone().unwrap_or_default()),
            quoted(&ext.context_info),
        );
    }
    let media = |kind, mimetype: &Option<String>, size, caption: &Option<String>, name| {
        MessageContent::Media {
            kind,
            mimetype: mimetype.clone(),
            size,
            caption: caption.clone(),
            file_name: name,
        }
    };
    if let Some(x) = m.image_message.as_option() {
        return (
            media(
                MediaKind::Image,
                &x.mimetype,
                x.file_length,
                &x.caption,
                None,
            ),
            quoted(&x.context_info),
        );
    }
    if let Some(x) = m.video_message.as_option() {
        return (
            media(
                MediaKind::Video,
                &x.mimetype,
                x.file_length,
                &x.caption,
                None,
            ),
            quoted(&x.context_info),
        );
    }
    if let Some(x) = m.audio_message.as_option() {
        return (
            media(MediaKind::Audio, &x.mimetype, x.file_length, &None, None),
            quoted(&x.context_info),
        );
    }
    if let Some(x) = m.document_message.as_option() {
        return (
            media(
                MediaKind::Document,
                &x.mimetype,
                x.file_length,
                &x.caption,
                x.file_name.clone(),
            ),
            quoted(&x.context_info),
        );
    }
    if let Some(x) = m.sticker_message.as_option() {
        return (
            media(MediaKind::Sticker, &x.mimetype, x.file_length, &None, None),
            quoted(&x.context_info),
        );
    }
    if let Some(x) = m.location_message.as_option() {
        return (
            MessageContent::Location {
                latitude: x.degrees_latitude.unwrap_or(0.0),
                longitude: x.degrees_longitude.unwrap_or(0.0),
                name: x.name.clone(),
            },
            quoted(&x.context_info),
        );
    }
    if let Some(x) = m.contact_message.as_option() {
        return (
            MessageContent::Contact {
                display_name: x.display_name.clone(),
                vcard: x.vcard.clone(),
            },
            quoted(&x.context_info),
        );
    }
    if let Some(x) = m.reaction_message.as_option() {
        return (
            MessageContent::Reaction {
                message_id: x
                    .key
                    .as_option()
                    .and_then(|k| k.id.clone())
                    .unwrap_or_default(),
                emoji: x.text.clone().unwrap_or_default(),
            },
            None,
        );
    }
    (MessageContent::Other, None)
}

/// A receipt for messages this account sent; `None` for the kinds that are not about
/// delivery (retries, this account's own reads on another device, …).
pub fn message_ack(receipt: &Receipt) -> Option<MessageAck> {
    let status = match receipt.r#type {
        ReceiptType::Delivered => AckStatus::Delivered,
        ReceiptType::Read => AckStatus::Read,
        ReceiptType::Played => AckStatus::Played,
        _ => return None,
    };
    let source = &receipt.source;
    if source.is_from_me {
        return None;
    }
    let by = match &source.sender_alt {
        Some(alt) if source.sender.is_lid() => jid_string(alt),
        _ => jid_string(&source.sender),
    };
    Some(MessageAck {
        chat: jid_string(&source.chat),
        by,
        message_ids: receipt
            .message_ids
            .iter()
            .map(|id| id.to_string())
            .collect(),
        status,
        timestamp: u64::try_from(receipt.timestamp.timestamp()).unwrap_or(0),
    })
}
