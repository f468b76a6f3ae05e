//! What each thing a session learns becomes in its event log: the contract's event types and
//! `data` shapes (events.md), built from the WhatsApp port's typed values. Pure: no actor, no
//! storage.

use serde_json::{Value, json};

use crate::event_log::NewEvent;
use crate::model::{
    AckStatus, GroupChange, GroupNotification, IncomingMessage, MessageAck, MessageContent,
    SessionStatus,
};

/// `message.received` (or `message.sent` for this account's other devices), keyed by
/// (chat, sender, id) so a redelivery never makes a second event.
pub fn message(m: &IncomingMessage) -> NewEvent {
    let (kind, text) = match &m.content {
        MessageContent::Text(t) => ("text", Some(t.as_str())),
        MessageContent::Media { kind, .. } => (kind.as_str(), None),
        MessageContent::Location { .. } => ("location", None),
        MessageContent::Contact { .. } => ("contact", None),
        MessageContent::Reaction { .. } => ("reaction", None),
        MessageContent::Other => ("other", None),
    };
    let mut data = json!({
        "message_id": m.id,
        "chat": m.chat,
        "sender": m.sender,
        "push_name": m.push_name,
        "is_group": m.is_group,
        "from_me": m.from_me,
        "kind": kind,
        "text": text,
        "quoted_id": m.quoted_id,
        "offline": m.offline,
    });
    let extra = match &m.content {
        MessageContent::Media {
            mimetype,
            size,
            caption,
            file_name,
            ..
        } => {
            let mut media = json!({"mimetype": mimetype, "size": size, "caption": caption});
            if let Some(name) = file_name {
                media["file_name"] = json!(name);
            }
            Some(("media", media))
        }
        MessageContent::Location {
            latitude,
            longitude,
            name,
        } => Some((
            "location",
            json!({"latitude": latitude, "longitude": longitude, "name": name}),
        )),
        MessageContent::Contact {
            display_name,
            vcard,
        } => Some((
            "contact",
            json!({"display_name": display_name, "vcard": vcard}),
        )),
        MessageContent::Reaction { message_id, emoji } => Some((
            "reaction",
            json!({"message_id": message_id, "emoji": emoji}),
        )),
        MessageContent::Text(_) | MessageContent::Other => None,
    };
    if let (Some((key, value)), Value::Object(map)) = (extra, &mut data) {
        map.insert(key.to_owned(), value);
    }
    NewEvent {
        kind: if m.from_me {
            "message.sent"
        } else {
            "message.received"
        },
        occurred_at: m.timestamp,
        data,
        idempotency_key: Some(message_key(&m.chat, &m.sender, &m.id)),
    }
}

/// The identity of one WhatsApp message: stanza ids are unique only per (chat, sender).
pub fn message_key(chat: &str, sender: &str, id: &str) -> String {
    format!("{}{sender}\u{1f}{id}", message_key_prefix(Some(chat)))
}

/// What the keys of `chat`'s messages (of every chat's, for `None`) start with.
pub fn message_key_prefix(chat: Option<&str>) -> String {
    match chat {
        Some(chat) => format!("msg\u{1f}{chat}\u{1f}"),
        None => "msg\u{1f}".to_owned(),
    }
}

/// One `message.ack` per acknowledged message; a receipt WhatsApp repeats is one event. The
/// server's accept of a send comes once, from the send itself, so it needs no key.
pub fn acks(ack: &MessageAck) -> Vec<NewEvent> {
    ack.message_ids
        .iter()
        .map(|id| NewEvent {
            kind: "message.ack",
            occurred_at: ack.timestamp,
            data: json!({
                "message_id": id,
                "chat": ack.chat,
                "status": ack.status.as_str(),
                "by": ack.by,
            }),
            idempotency_key: (ack.status != AckStatus::Server).then(|| {
                format!(
                    "ack\u{1f}{}\u{1f}{}\u{1f}{id}\u{1f}{}",
                    ack.chat,
                    ack.by,
                    ack.status.as_str()
                )
            }),
        })
        .collect()
}

/// `session.status` for a change the session published.
pub fn status(
    status: SessionStatus,
    previous: SessionStatus,
    reason: Option<&str>,
    at: u64,
) -> NewEvent {
    NewEvent {
        kind: "session.status",
        occurred_at: at,
        data: json!({"status": status, "previous": previous, "reason": reason}),
        idempotency_key: None,
    }
}

/// The events a group notification makes, each keyed by the notification's source so that a
/// redelivered notification makes no second event. `own` lists this account's JIDs (phone and
/// LID); `name_of` gives a group's name when it is known.
pub fn group(
    note: &GroupNotification,
    own: &[String],
    name_of: impl Fn(&str) -> Option<String>,
) -> Vec<NewEvent> {
    let mut out = group_unkeyed(note, own, name_of);
    if let Some(source) = &note.source {
        for (n, event) in out.iter_mut().enumerate() {
            event.idempotency_key = Some(format!("gp\u{1f}{}\u{1f}{source}\u{1f}{n}", note.group));
        }
    }
    out
}

fn group_unkeyed(
    note: &GroupNotification,
    own: &[String],
    name_of: impl Fn(&str) -> Option<String>,
) -> Vec<NewEvent> {
    let at = note.timestamp;
    let mine = |u: &String| own.iter().any(|o| o == u);
    let event = |kind: &'static str, data: Value| NewEvent {
        kind,
        occurred_at: at,
        data,
        idempotency_key: None,
    };
    let entered_or_left = |kind: &'static str| {
        event(
            kind,
            json!({"group": note.group, "name": name_of(&note.group).unwrap_or_default()}),
        )
    };
    let participants = |action: &str, users: Vec<&String>| {
        event(
            "group.participants",
            json!({"group": note.group, "action": action, "participants": users, "by": note.author}),
        )
    };
    // Someone acting on themselves joined (by link or request) or left.
    let by_themselves = |users: &[String]| {
        note.author.is_none() || (users.len() == 1 && note.author.as_ref() == users.first())
    };
    let mut out = Vec::new();
    match &note.change {
        GroupChange::Added(users) | GroupChange::Removed(users) => {
            let added = matches!(note.change, GroupChange::Added(_));
            let action = match (added, by_themselves(users)) {
                (true, true) => "joined",
                (true, false) => "added",
                (false, true) => "left",
                (false, false) => "removed",
            };
            let others: Vec<&String> = users.iter().filter(|u| !mine(u)).collect();
            if users.iter().any(mine) && !added {
                out.push(entered_or_left("group.left"));
            }
            if !others.is_empty() {
                out.push(participants(action, others));
            }
            if users.iter().any(mine) && added {
                out.push(entered_or_left("group.joined"));
            }
        }
        GroupChange::Promoted(users) => out.push(participants("promoted", users.iter().collect())),
        GroupChange::Demoted(users) => out.push(participants("demoted", users.iter().collect())),
        GroupChange::Subject(name) => out.push(updated(note, json!({"name": name}))),
        GroupChange::Description { text, .. } => out.push(updated(
            note,
            json!({"topic": text.clone().unwrap_or_default()}),
        )),
        GroupChange::Announce(on) => out.push(updated(note, json!({"announce": on}))),
        GroupChange::Locked(on) => out.push(updated(note, json!({"locked": on}))),
        GroupChange::JoinRequests {
            requesters,
            revoked,
        } => {
            for requester in requesters {
                out.push(event(
                    "group.join_request",
                    json!({
                        "group": note.group,
                        "requester": requester,
                        "action": if *revoked { "revoked" } else { "created" },
                    }),
                ));
            }
        }
        GroupChange::Created { name } => out.push(event(
            "group.joined",
            json!({"group": note.group, "name": name.clone().or_else(|| name_of(&note.group)).unwrap_or_default()}),
        )),
        GroupChange::Other => {
            tracing::debug!(group = %note.group, "a group notification with no event type");
        }
    }
    out
}

fn updated(note: &GroupNotification, changes: Value) -> NewEvent {
    NewEvent {
        kind: "group.updated",
        occurred_at: note.timestamp,
        data: json!({"group": note.group, "by": note.author, "changes": changes}),
        idempotency_key: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MediaKind;

    const ME: &str = "111@s.whatsapp.net";
    const B: &str = "222@s.whatsapp.net";
    const C: &str = "333@s.whatsapp.net";
    const G: &str = "120363000000000001@g.us";

    fn note(author: Option<&str>, change: GroupChange) -> GroupNotification {
        GroupNotification {
            group: G.into(),
            source: None,
            author: author.map(str::to_owned),
            timestamp: 50,
            change,
        }
    }

    #[test]
    fn a_redelivered_group_notification_makes_the_same_keys() {
        let sourced = |source: &str| GroupNotification {
            source: Some(source.into()),
            ..note(Some(B), GroupChange::Added(vec![C.into(), ME.into()]))
        };
        let keys = |n: &GroupNotification| -> Vec<Option<String>> {
            group(n, &[ME.into()], |_| None)
                .into_iter()
                .map(|e| e.idempotency_key)
                .collect()
        };
        let first = keys(&sourced("N1/0"));
        assert_eq!(
            first.len(),
            2,
            "participants added, and this account joined"
        );
        assert!(first.iter().all(Option::is_some));
        assert_ne!(
            first[0], first[1],
            "each event of a notification has its own key"
        );
        assert_eq!(keys(&sourced("N1/0")), first, "redelivered: the same keys");
        assert_ne!(keys(&sourced("N1/1")), first, "another action of it");
        assert!(
            keys(&note(Some(B), GroupChange::Promoted(vec![C.into()])))
                .iter()
                .all(Option::is_none)
        );
    }

    fn events(n: &GroupNotification) -> Vec<(String, Value)> {
        group(n, &[ME.to_owned()], |_| Some("Team".into()))
            .into_iter()
            .map(|e| (e.kind.to_owned(), e.data))
            .collect()
    }

    fn text_message() -> IncomingMessage {
        IncomingMessage {
            id: "3A1".into(),
            chat: B.into(),
            sender: B.into(),
            push_name: "Bee".into(),
            is_group: false,
            from_me: false,
            timestamp: 40,
            offline: false,
            quoted_id: None,
            content: MessageContent::Text("hi".into()),
        }
    }

    #[test]
    fn texts_have_the_contract_shape() {
        let e = message(&text_message());
        assert_eq!(e.kind, "message.received");
        assert_eq!(e.occurred_at, 40);
        assert_eq!(
            e.data,
            json!({"message_id": "3A1", "chat": B, "sender": B, "push_name": "Bee",
                   "is_group": false, "from_me": false, "kind": "text", "text": "hi",
                   "quoted_id": null, "offline": false})
        );
        let mine = IncomingMessage {
            from_me: true,
            ..text_message()
        };
        assert_eq!(message(&mine).kind, "message.sent");
        assert_ne!(
            message(&text_message()).idempotency_key,
            message(&IncomingMessage {
                chat: C.into(),
                ..text_message()
            })
            .idempotency_key
        );
    }

    #[test]
    fn other_kinds_carry_their_metadata() {
        let image = IncomingMessage {
            content: MessageContent::Media {
                kind: MediaKind::Image,
                mimetype: Some("image/jpeg".into()),
                size: Some(1234),
                caption: Some("look".into()),
                file_name: None,
            },
            ..text_message()
        };
        let data = message(&image).data;
        assert_eq!(data["kind"], "image");
        assert_eq!(data["text"], Value::Null);
        assert_eq!(
            data["media"],
            json!({"mimetype": "image/jpeg", "size": 1234, "caption": "look"})
        );
        let reaction = IncomingMessage {
            content: MessageContent::Reaction {
                message_id: "X".into(),
                emoji: "👍".into(),
            },
            ..text_message()
        };
        let data = message(&reaction).data;
        assert_eq!(data["kind"], "reaction");
        assert_eq!(data["reaction"], json!({"message_id": "X", "emoji": "👍"}));
    }

    #[test]
    fn acks_are_one_per_message() {
        let ack = MessageAck {
            chat: B.into(),
            by: B.into(),
            message_ids: vec!["a".into(), "b".into()],
            status: AckStatus::Read,
            timestamp: 9,
        };
        let out = acks(&ack);
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[1].data,
            json!({"message_id": "b", "chat": B, "status": "read", "by": B})
        );
        assert_ne!(out[0].idempotency_key, out[1].idempotency_key);
        assert!(out.iter().all(|e| e.idempotency_key.is_some()));
    }

    #[test]
    fn the_server_accept_of_a_send_needs_no_key() {
        let ack = MessageAck {
            chat: B.into(),
            by: "s.whatsapp.net".into(),
            message_ids: vec!["a".into()],
            status: AckStatus::Server,
            timestamp: 9,
        };
        let out = acks(&ack);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data["status"], "server");
        assert_eq!(out[0].idempotency_key, None);
    }

    #[test]
    fn participant_changes_tell_joins_from_adds() {
        assert_eq!(
            events(&note(Some(B), GroupChange::Added(vec![C.into()]))),
            vec![(
                "group.participants".into(),
                json!({"group": G, "action": "added", "participants": [C], "by": B})
            )]
        );
        assert_eq!(
            events(&note(Some(C), GroupChange::Added(vec![C.into()])))[0].1["action"],
            "joined"
        );
        assert_eq!(
            events(&note(Some(C), GroupChange::Removed(vec![C.into()])))[0].1["action"],
            "left"
        );
        assert_eq!(
            events(&note(Some(B), GroupChange::Removed(vec![C.into()])))[0].1["action"],
            "removed"
        );
        assert_eq!(
            events(&note(Some(B), GroupChange::Promoted(vec![C.into()])))[0].1["action"],
            "promoted"
        );
    }

    #[test]
    fn this_account_entering_or_leaving_is_its_own_event() {
        assert_eq!(
            events(&note(Some(B), GroupChange::Added(vec![ME.into()]))),
            vec![("group.joined".into(), json!({"group": G, "name": "Team"}))]
        );
        let kinds: Vec<String> = events(&note(
            Some(B),
            GroupChange::Removed(vec![ME.into(), C.into()]),
        ))
        .into_iter()
        .map(|(k, _)| k)
        .collect();
        assert_eq!(kinds, vec!["group.left", "group.participants"]);
        assert_eq!(
            events(&note(
                Some(B),
                GroupChange::Created {
                    name: Some("New".into())
                }
            )),
            vec![("group.joined".into(), json!({"group": G, "name": "New"}))]
        );
    }

    #[test]
    fn settings_and_requests() {
        assert_eq!(
            events(&note(Some(B), GroupChange::Subject("S".into()))),
            vec![(
                "group.updated".into(),
                json!({"group": G, "by": B, "changes": {"name": "S"}})
            )]
        );
        assert_eq!(
            events(&note(Some(B), GroupChange::Locked(true)))[0].1["changes"],
            json!({"locked": true})
        );
        assert_eq!(
            events(&note(
                None,
                GroupChange::JoinRequests {
                    requesters: vec![C.into()],
                    revoked: true
                }
            )),
            vec![(
                "group.join_request".into(),
                json!({"group": G, "requester": C, "action": "revoked"})
            )]
        );
        assert!(events(&note(None, GroupChange::Other)).is_empty());
    }

    #[test]
    fn status_changes() {
        let e = status(SessionStatus::Failed, SessionStatus::LoggedIn, Some("x"), 5);
        assert_eq!(
            e.data,
            json!({"status": "failed", "previous": "logged_in", "reason": "x"})
        );
    }
}
