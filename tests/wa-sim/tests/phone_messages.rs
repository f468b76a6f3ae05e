//! A sim phone sending every message kind (text, quote, media, location, contact,
//! reaction) to a client, 1:1 and in a group, and sending delivery/read receipts for what
//! the client sent it.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use whatsapp_rust::types::events::Event;
use whatsapp_rust::types::presence::ReceiptType;
use whatsapp_rust::wacore::iq::groups::{GroupCreateOptions, GroupParticipantOptions};
use whatsapp_rust::wacore::types::events::InboundMessage;

const SAM: &str = "6289900000301";

/// Waits for the message with `id` and returns it.
async fn wait_id(events: &Events, id: &str) -> InboundMessage {
    let event = wait_event(
        events,
        Duration::from_secs(20),
        &format!("message {id}"),
        |e| e.messages().any(|m| m.info.id == id),
    )
    .await;
    event
        .messages()
        .find(|m| m.info.id == id)
        .cloned()
        .expect("the matching message")
}

/// Sam's phone sends `body` (with `to`) and returns the message id.
async fn sam_sends(sim: &wa_sim::SimHandle, body: serde_json::Value) -> String {
    let (status, reply) = post(sim, &format!("/accounts/{SAM}/send"), body.clone()).await;
    assert_eq!(status, 200, "{body} -> {reply}");
    reply["id"].as_str().expect("an id").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn phone_sends_every_kind() {
    let sim = start_sim().await;
    let (status, _) = post(
        &sim,
        "/accounts",
        json!({"phone_number": SAM, "push_name": "Sam"}),
    )
    .await;
    assert_eq!(status, 201);
    let (alice, alice_phone) = pair_by_qr(&sim, Some("alice"), None).await;
    let a = alice.handle.client();

    // Plain text, then a quote of a message alice sent to Sam.
    let hello = sam_sends(&sim, json!({"to": alice_phone, "text": "hello"})).await;
    let got = wait_id(&alice.events, &hello).await;
    assert_eq!(got.message.conversation.as_deref(), Some("hello"));
    assert!(got.info.source.sender.user.starts_with(SAM));
    let question = a
        .send_text(pn_jid(SAM), "are you there?")
        .await
        .unwrap()
        .message_id;
    wait_inbox(&sim, SAM, "are you there?").await;
    let reply = sam_sends(
        &sim,
        json!({"to": alice_phone, "kind": "text", "text": "yes", "quoted_id": question}),
    )
    .await;
    let got = wait_id(&alice.events, &reply).await;
    let ext = got.message.extended_text_message.as_option().expect("ext");
    assert_eq!(ext.text.as_deref(), Some("yes"));
    let ctx = ext.context_info.as_option().expect("context info");
    assert_eq!(ctx.stanza_id.as_deref(), Some(question.as_str()));
    assert_eq!(
        ctx.participant.as_deref(),
        Some(format!("{alice_phone}@s.whatsapp.net").as_str())
    );
    assert_eq!(
        ctx.quoted_message
            .as_option()
            .and_then(|q| q.conversation.as_deref()),
        Some("are you there?")
    );

    // Media of every kind.
    let image = sam_sends(
        &sim,
        json!({"to": alice_phone, "kind": "image", "mimetype": "image/png", "size": 2048, "caption": "a cat"}),
    )
    .await;
    let got = wait_id(&alice.events, &image).await;
    let m = got.message.image_message.as_option().expect("image");
    assert_eq!(m.caption.as_deref(), Some("a cat"));
    assert_eq!(m.mimetype.as_deref(), Some("image/png"));
    assert_eq!(m.file_length, Some(2048));
    assert_eq!(m.media_key.as_ref().map(Vec::len), Some(32));
    assert_eq!(m.file_enc_sha256.as_ref().map(Vec::len), Some(32));
    assert!(m.direct_path.as_deref().is_some_and(|p| p.starts_with('/')));

    let video = sam_sends(
        &sim,
        json!({"to": alice_phone, "kind": "video", "mimetype": "video/mp4", "size": 99999, "caption": "clip"}),
    )
    .await;
    let got = wait_id(&alice.events, &video).await;
    let m = got.message.video_message.as_option().expect("video");
    assert_eq!(
        (m.caption.as_deref(), m.mimetype.as_deref(), m.file_length),
        (Some("clip"), Some("video/mp4"), Some(99999))
    );

    let audio = sam_sends(
        &sim,
        json!({"to": alice_phone, "kind": "audio", "mimetype": "audio/ogg; codecs=opus", "size": 512}),
    )
    .await;
    let got = wait_id(&alice.events, &audio).await;
    let m = got.message.audio_message.as_option().expect("audio");
    assert_eq!(
        (m.mimetype.as_deref(), m.file_length),
        (Some("audio/ogg; codecs=opus"), Some(512))
    );

    let document = sam_sends(
        &sim,
        json!({"to": alice_phone, "kind": "document", "mimetype": "application/pdf", "size": 4096,
               "file_name": "report.pdf", "caption": "the report"}),
    )
    .await;
    let got = wait_id(&alice.events, &document).await;
    let m = got.message.document_message.as_option().expect("document");
    assert_eq!(m.file_name.as_deref(), Some("report.pdf"));
    assert_eq!(m.caption.as_deref(), Some("the report"));
    assert_eq!(m.mimetype.as_deref(), Some("application/pdf"));
    assert_eq!(m.file_length, Some(4096));

    let sticker = sam_sends(&sim, json!({"to": alice_phone, "kind": "sticker"})).await;
    let got = wait_id(&alice.events, &sticker).await;
    let m = got.message.sticker_message.as_option().expect("sticker");
    assert_eq!(m.mimetype.as_deref(), Some("image/webp"));

    // Location and contact.
    let location = sam_sends(
        &sim,
        json!({"to": alice_phone, "kind": "location", "latitude": -6.2, "longitude": 106.8, "name": "Monas"}),
    )
    .await;
    let got = wait_id(&alice.events, &location).await;
    let m = got.message.location_message.as_option().expect("location");
    assert_eq!(m.degrees_latitude, Some(-6.2));
    assert_eq!(m.degrees_longitude, Some(106.8));
    assert_eq!(m.name.as_deref(), Some("Monas"));

    let vcard = "BEGIN:VCARD\nVERSION:3.0\nFN:Rina\nTEL;type=CELL:+6281200000000\nEND:VCARD";
    let contact = sam_sends(
        &sim,
        json!({"to": alice_phone, "kind": "contact", "display_name": "Rina", "vcard": vcard}),
    )
    .await;
    let got = wait_id(&alice.events, &contact).await;
    let m = got.message.contact_message.as_option().expect("contact");
    assert_eq!(m.display_name.as_deref(), Some("Rina"));
    assert_eq!(m.vcard.as_deref(), Some(vcard));

    // Reactions: to alice's message (not from Sam) and to Sam's own.
    let reaction = sam_sends(
        &sim,
        json!({"to": alice_phone, "kind": "reaction", "message_id": question, "emoji": "👍"}),
    )
    .await;
    let got = wait_id(&alice.events, &reaction).await;
    let r = got.message.reaction_message.as_option().expect("reaction");
    assert_eq!(r.text.as_deref(), Some("👍"));
    let key = r.key.as_option().expect("key");
    assert_eq!(key.id.as_deref(), Some(question.as_str()));
    assert_eq!(key.from_me, Some(false));
    assert_eq!(
        key.remote_jid.as_deref(),
        Some(format!("{alice_phone}@s.whatsapp.net").as_str())
    );
    let own = sam_sends(
        &sim,
        json!({"to": alice_phone, "kind": "reaction", "message_id": hello, "emoji": "❤"}),
    )
    .await;
    let got = wait_id(&alice.events, &own).await;
    let key = got
        .message
        .reaction_message
        .as_option()
        .and_then(|r| r.key.as_option().cloned())
        .expect("key");
    assert_eq!(
        (key.id.as_deref(), key.from_me),
        (Some(hello.as_str()), Some(true))
    );

    // The same kinds in a group, through sender keys.
    let group = a
        .groups()
        .create_group(
            GroupCreateOptions::builder()
                .subject("Media")
                .participants(vec![GroupParticipantOptions::new(pn_jid(SAM))])
                .build(),
        )
        .await
        .unwrap();
    let gid = group.metadata.id.to_string();
    let image = sam_sends(
        &sim,
        json!({"to": gid, "kind": "image", "caption": "group cat"}),
    )
    .await;
    let got = wait_id(&alice.events, &image).await;
    assert_eq!(got.info.source.chat.to_string(), gid);
    assert!(got.info.source.sender.user.starts_with(SAM));
    let m = got.message.image_message.as_option().expect("image");
    assert_eq!(m.caption.as_deref(), Some("group cat"));
    assert_eq!(m.mimetype.as_deref(), Some("image/jpeg"));
    let in_group = a
        .send_text(group.metadata.id.clone(), "hi group")
        .await
        .unwrap()
        .message_id;
    wait_inbox(&sim, SAM, "hi group").await;
    let reaction = sam_sends(
        &sim,
        json!({"to": gid, "kind": "reaction", "message_id": in_group, "emoji": "😂"}),
    )
    .await;
    let got = wait_id(&alice.events, &reaction).await;
    let key = got
        .message
        .reaction_message
        .as_option()
        .and_then(|r| r.key.as_option().cloned())
        .expect("key");
    assert_eq!(key.id.as_deref(), Some(in_group.as_str()));
    assert_eq!(key.remote_jid.as_deref(), Some(gid.as_str()));
    assert_eq!(
        key.participant.as_deref(),
        Some(format!("{alice_phone}@s.whatsapp.net").as_str())
    );
    let location = sam_sends(
        &sim,
        json!({"to": gid, "kind": "location", "latitude": 1.5, "longitude": 2.5}),
    )
    .await;
    let got = wait_id(&alice.events, &location).await;
    assert_eq!(
        got.message
            .location_message
            .as_option()
            .and_then(|l| l.degrees_latitude),
        Some(1.5)
    );

    // Bad requests.
    for body in [
        json!({"to": alice_phone, "kind": "hologram"}),
        json!({"to": alice_phone, "kind": "location", "latitude": 1.0}),
        json!({"to": alice_phone, "kind": "reaction", "emoji": "x"}),
        json!({"to": alice_phone}),
    ] {
        let (status, reply) = post(&sim, &format!("/accounts/{SAM}/send"), body.clone()).await;
        assert_eq!(status, 400, "{body} -> {reply}");
    }
    alice.handle.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn phone_receipts_arrive_as_receipt_events() {
    let sim = start_sim().await;
    let (status, _) = post(
        &sim,
        "/accounts",
        json!({"phone_number": SAM, "push_name": "Sam"}),
    )
    .await;
    assert_eq!(status, 201);
    let (alice, alice_phone) = pair_by_qr(&sim, Some("alice"), None).await;
    let a = alice.handle.client();
    let one = a.send_text(pn_jid(SAM), "one").await.unwrap().message_id;
    let two = a.send_text(pn_jid(SAM), "two").await.unwrap().message_id;
    wait_inbox(&sim, SAM, "two").await;

    let receipt_for = |kind: ReceiptType, first: String| move |e: &Event| matches!(e, Event::Receipt(r) if r.r#type == kind && r.message_ids.contains(&first));
    let (status, reply) = post(
        &sim,
        &format!("/accounts/{SAM}/receipts"),
        json!({"to": alice_phone, "ids": [one, two], "type": "delivered"}),
    )
    .await;
    assert_eq!((status, &reply), (200, &json!({"success": true})));
    let event = wait_event(
        &alice.events,
        Duration::from_secs(10),
        "delivered receipt",
        receipt_for(ReceiptType::Delivered, one.clone()),
    )
    .await;
    let Event::Receipt(r) = &*event else {
        unreachable!()
    };
    // The client lists the `<list>` items before the stanza id.
    let mut ids = r.message_ids.clone();
    ids.sort();
    let mut sent = vec![one.clone(), two.clone()];
    sent.sort();
    assert_eq!(ids, sent);
    assert_eq!(r.source.chat.user, SAM);
    assert_eq!(r.source.sender.user, SAM);

    let (status, _) = post(
        &sim,
        &format!("/accounts/{SAM}/receipts"),
        json!({"to": format!("{alice_phone}@s.whatsapp.net"), "ids": [two], "type": "read"}),
    )
    .await;
    assert_eq!(status, 200);
    let event = wait_event(
        &alice.events,
        Duration::from_secs(10),
        "read receipt",
        receipt_for(ReceiptType::Read, two.clone()),
    )
    .await;
    let Event::Receipt(r) = &*event else {
        unreachable!()
    };
    assert_eq!(r.message_ids, vec![two.clone()]);

    // A group receipt names the group and the reader.
    let group = a
        .groups()
        .create_group(
            GroupCreateOptions::builder()
                .subject("Receipts")
                .participants(vec![GroupParticipantOptions::new(pn_jid(SAM))])
                .build(),
        )
        .await
        .unwrap();
    let gid = group.metadata.id.to_string();
    let posted = a
        .send_text(group.metadata.id.clone(), "voice note later")
        .await
        .unwrap()
        .message_id;
    wait_inbox(&sim, SAM, "voice note later").await;
    let (status, _) = post(
        &sim,
        &format!("/accounts/{SAM}/receipts"),
        json!({"to": alice_phone, "ids": [posted], "type": "played", "chat": gid}),
    )
    .await;
    assert_eq!(status, 200);
    let event = wait_event(
        &alice.events,
        Duration::from_secs(10),
        "played group receipt",
        receipt_for(ReceiptType::Played, posted.clone()),
    )
    .await;
    let Event::Receipt(r) = &*event else {
        unreachable!()
    };
    assert_eq!(r.source.chat.to_string(), gid);
    assert_eq!(r.source.sender.user, SAM);

    // Errors.
    let (status, _) = post(
        &sim,
        "/accounts/6289900000399/receipts",
        json!({"to": alice_phone, "ids": ["X"]}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post(
        &sim,
        &format!("/accounts/{SAM}/receipts"),
        json!({"to": "6289900000398", "ids": ["X"]}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post(
        &sim,
        &format!("/accounts/{SAM}/receipts"),
        json!({"to": alice_phone, "ids": []}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(
        &sim,
        &format!("/accounts/{SAM}/receipts"),
        json!({"to": alice_phone, "ids": ["X"], "type": "seen"}),
    )
    .await;
    assert_eq!(status, 400);
    alice.handle.shutdown().await;
    sim.shutdown().await;
}
