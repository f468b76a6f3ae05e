//! Groups end to end: create, metadata, subject/description (with the 409 conflict),
//! participant changes and the errors WhatsApp gives, invites, leave, notifications to the
//! other members, and group text delivery to clients and to a sim-only member's phone.

mod common;

use std::time::Duration;

use common::*;
use whatsapp_rust::features::PreviousDescription;
use whatsapp_rust::types::events::Event;
use whatsapp_rust::wacore::iq::groups::{
    GroupCreateOptions, GroupDescription, GroupParticipantOptions, GroupSubject,
};
use whatsapp_rust::wacore::stanza::groups::GroupNotificationAction;

fn is_group_update(e: &Event, pred: impl Fn(&GroupNotificationAction) -> bool) -> bool {
    matches!(e, Event::GroupUpdate(u) if pred(&u.action))
}

#[tokio::test(flavor = "multi_thread")]
async fn group_lifecycle_and_messages() {
    let sim = start_sim().await;
    let (status, _) = post(
        &sim,
        "/accounts",
        serde_json::json!({"phone_number": "6289900000010", "push_name": "Simone"}),
    )
    .await;
    assert_eq!(status, 201);
    let (alice, alice_phone) = pair_by_qr(&sim, Some("alice"), None).await;
    let (bob, bob_phone) = pair_by_qr(&sim, Some("bob"), None).await;
    let (carol, carol_phone) = pair_by_qr(&sim, Some("carol"), None).await;
    let a = alice.handle.client();
    let b = bob.handle.client();
    let c = carol.handle.client();

    let created = a
        .groups()
        .create_group(
            GroupCreateOptions::builder()
                .subject("Team")
                .participants(vec![
                    GroupParticipantOptions::new(pn_jid(&bob_phone)),
                    GroupParticipantOptions::new(pn_jid("6289900000010")),
                ])
                .build(),
        )
        .await
        .unwrap();
    let gid = created.metadata.id.clone();
    assert_eq!(created.metadata.participants.len(), 3);
    wait_event(
        &bob.events,
        Duration::from_secs(10),
        "create notification",
        |e| is_group_update(e, |a| matches!(a, GroupNotificationAction::Create { .. })),
    )
    .await;

    // Text to the group reaches bob's client and the sim-only member's phone.
    a.send_text(gid.clone(), "hello team").await.unwrap();
    let (sender, chat) = wait_text(&bob.events, "hello team").await;
    assert!(sender.starts_with(&alice_phone), "{sender}");
    assert_eq!(chat, gid.to_string());
    let got = wait_inbox(&sim, "6289900000010", "hello team").await;
    assert_eq!(got["chat"], gid.to_string());
    b.send_text(gid.clone(), "hi from bob").await.unwrap();
    wait_text(&alice.events, "hi from bob").await;
    wait_inbox(&sim, "6289900000010", "hi from bob").await;

    // Metadata, subject and description.
    let meta = b.groups().get_metadata(&gid).await.unwrap();
    assert_eq!(meta.subject, "Team");
    a.groups()
        .set_subject(gid.clone(), GroupSubject::new("Team 2").unwrap())
        .await
        .unwrap();
    wait_event(&bob.events, Duration::from_secs(10), "subject notification", |e| {
        is_group_update(e, |a| matches!(a, GroupNotificationAction::Subject { subject, .. } if subject == "Team 2"))
    })
    .await;
    a.groups()
        .set_description(
            gid.clone(),
            Some(GroupDescription::new("first").unwrap()),
            PreviousDescription::Resolve,
        )
        .await
        .unwrap();
    let stale = a
        .groups()
        .set_description(
            gid.clone(),
            Some(GroupDescription::new("second").unwrap()),
            PreviousDescription::Absent,
        )
        .await;
    assert!(
        matches!(
            stale,
            Err(whatsapp_rust::features::GroupError::DescriptionConflict)
        ),
        "{stale:?}"
    );
    let meta = a.groups().get_metadata(&gid).await.unwrap();
    assert_eq!(meta.description.as_deref(), Some("first"));

    // Participant changes.
    let added = a
        .groups()
        .add_participants(&gid, &[pn_jid(&carol_phone), pn_jid(&bob_phone)])
        .await
        .unwrap();
    let by_user = |phone: &str| added.iter().find(|r| r.jid.user == phone).unwrap().clone();
    assert!(by_user(&carol_phone).error.is_none());
    assert_eq!(by_user(&bob_phone).error.as_deref(), Some("409"));
    wait_event(
        &bob.events,
        Duration::from_secs(10),
        "add notification",
        |e| is_group_update(e, |a| matches!(a, GroupNotificationAction::Add { .. })),
    )
    .await;
    // A non-admin may not change settings or remove people.
    let refused = c.groups().set_locked(gid.clone(), true).await;
    assert!(
        matches!(
            &refused,
            Err(whatsapp_rust::features::GroupError::Iq(
                whatsapp_rust::request::IqError::ServerError { code: 403, .. }
            ))
        ),
        "{refused:?}"
    );
    let refused = c
        .groups()
        .remove_participants(&gid, &[pn_jid(&bob_phone)])
        .await;
    assert!(refused.is_err(), "{refused:?}");
    a.groups()
        .promote_participants(&gid, &[pn_jid(&carol_phone)])
        .await
        .unwrap();
    c.groups().set_locked(gid.clone(), true).await.unwrap();
    a.groups()
        .demote_participants(&gid, &[pn_jid(&carol_phone)])
        .await
        .unwrap();
    a.groups()
        .remove_participants(&gid, &[pn_jid(&carol_phone)])
        .await
        .unwrap();
    wait_event(
        &carol.events,
        Duration::from_secs(10),
        "remove notification",
        |e| is_group_update(e, |a| matches!(a, GroupNotificationAction::Remove { .. })),
    )
    .await;

    // Invites: link, reset, info, join.
    let link = a
        .groups()
        .get_invite_link(gid.clone(), false)
        .await
        .unwrap();
    let link2 = a.groups().get_invite_link(gid.clone(), true).await.unwrap();
    assert_ne!(link, link2);
    let code = link2.rsplit('/').next().unwrap().to_string();
    let info = c.groups().get_invite_info(&code).await.unwrap();
    assert_eq!(info.subject, "Team 2");
    assert!(
        c.groups()
            .get_invite_info(link.rsplit('/').next().unwrap())
            .await
            .is_err()
    );
    c.groups().join_with_invite_code(&code).await.unwrap();
    wait_event(
        &alice.events,
        Duration::from_secs(10),
        "join notification",
        |e| is_group_update(e, |a| matches!(a, GroupNotificationAction::Add { .. })),
    )
    .await;
    let participating = c.groups().get_participating().await.unwrap();
    assert!(participating.contains_key(&gid));

    // Leave; the others hear about it.
    b.groups().leave(gid.clone()).await.unwrap();
    wait_event(
        &alice.events,
        Duration::from_secs(10),
        "leave notification",
        |e| is_group_update(e, |a| matches!(a, GroupNotificationAction::Remove { .. })),
    )
    .await;
    let (status, group) = get(&sim, &format!("/groups/{gid}")).await;
    assert_eq!(status, 200, "{group}");
    assert_eq!(group["subject"], "Team 2");
    assert_eq!(
        group["participants"].as_array().unwrap().len(),
        3,
        "{group}"
    );
    let (_, groups) = get(&sim, "/groups").await;
    assert_eq!(groups.as_array().unwrap().len(), 1);
    let stats = stats(&sim).await;
    assert!(
        stats["group_queries"][gid.to_string()].as_u64().unwrap() >= 1,
        "{stats}"
    );

    // Unknown groups are 404.
    let missing = a
        .groups()
        .get_metadata(&"120363999999999999@g.us".parse().unwrap())
        .await;
    assert!(
        matches!(
            &missing,
            Err(whatsapp_rust::features::GroupError::Iq(
                whatsapp_rust::request::IqError::ServerError { code: 404, .. }
            ))
        ),
        "{missing:?}"
    );

    for client in [alice, bob, carol] {
        client.handle.shutdown().await;
    }
    sim.shutdown().await;
}

/// The client writes short text containing `@` as a JID pair; WhatsApp reads it back as
/// text, and so must the sim, in both directions.
#[tokio::test(flavor = "multi_thread")]
async fn subjects_and_descriptions_with_an_at_sign_arrive_intact() {
    let sim = start_sim().await;
    let (alice, _) = pair_by_qr(&sim, Some("alice"), None).await;
    let (bob, bob_phone) = pair_by_qr(&sim, Some("bob"), None).await;
    let a = alice.handle.client();
    let b = bob.handle.client();

    let created = a
        .groups()
        .create_group(
            GroupCreateOptions::builder()
                .subject("Sales @ HQ")
                .participants(vec![GroupParticipantOptions::new(pn_jid(&bob_phone))])
                .description(GroupDescription::new("ask @ desk").unwrap())
                .build(),
        )
        .await
        .expect("create answered");
    let gid = created.metadata.id.clone();
    assert_eq!(created.metadata.subject, "Sales @ HQ");
    let (_, group) = get(&sim, &format!("/groups/{gid}")).await;
    assert_eq!(group["subject"], "Sales @ HQ", "{group}");
    assert_eq!(group["description"], "ask @ desk", "{group}");

    a.groups()
        .set_subject(gid.clone(), GroupSubject::new("Team @ Office").unwrap())
        .await
        .expect("subject answered");
    wait_event(&bob.events, Duration::from_secs(10), "subject notification", |e| {
        is_group_update(e, |a| matches!(a, GroupNotificationAction::Subject { subject, .. } if subject == "Team @ Office"))
    })
    .await;
    a.groups()
        .set_description(
            gid.clone(),
            Some(GroupDescription::new("write to a@b.com").unwrap()),
            PreviousDescription::Resolve,
        )
        .await
        .expect("description answered");
    wait_event(&bob.events, Duration::from_secs(10), "description notification", |e| {
        is_group_update(e, |a| matches!(a, GroupNotificationAction::Description { description, .. } if description.as_deref() == Some("write to a@b.com")))
    })
    .await;

    let (_, group) = get(&sim, &format!("/groups/{gid}")).await;
    assert_eq!(group["subject"], "Team @ Office", "{group}");
    assert_eq!(group["description"], "write to a@b.com", "{group}");
    let meta = b.groups().get_metadata(&gid).await.expect("metadata");
    assert_eq!(meta.subject, "Team @ Office");
    assert_eq!(meta.description.as_deref(), Some("write to a@b.com"));
    let stats = stats(&sim).await;
    assert_eq!(stats["unknown_iqs"], 0, "{stats}");

    for client in [alice, bob] {
        client.handle.shutdown().await;
    }
    sim.shutdown().await;
}
