//! Direct messages: between two linked clients in both directions, and to a sim-only user
//! whose simulated phone decrypts what it receives.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn dm_between_two_clients_both_ways() {
    let sim = start_sim().await;
    let (alice, alice_phone) = pair_by_qr(&sim, Some("alice"), None).await;
    let (bob, bob_phone) = pair_by_qr(&sim, Some("bob"), None).await;

    alice
        .handle
        .client()
        .send_text(pn_jid(&bob_phone), "hello bob")
        .await
        .unwrap();
    let (sender, chat) = wait_text(&bob.events, "hello bob").await;
    assert!(sender.starts_with(&alice_phone), "{sender}");
    assert!(chat.starts_with(&alice_phone), "{chat}");
    // Bob's delivery receipt is relayed back to alice.
    wait_event(
        &alice.events,
        std::time::Duration::from_secs(10),
        "a receipt",
        |e| matches!(e, whatsapp_rust::types::events::Event::Receipt(_)),
    )
    .await;

    bob.handle
        .client()
        .send_text(pn_jid(&alice_phone), "hi alice")
        .await
        .unwrap();
    wait_text(&alice.events, "hi alice").await;

    // Both phones (device 0) got their copies too.
    wait_inbox(&sim, &bob_phone, "hello bob").await;
    let stats = stats(&sim).await;
    assert!(stats["messages_routed"].as_u64().unwrap() >= 2, "{stats}");
    alice.handle.shutdown().await;
    bob.handle.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dm_to_sim_only_user_is_decrypted_by_its_phone() {
    let sim = start_sim().await;
    let (status, user) = post(
        &sim,
        "/accounts",
        serde_json::json!({"phone_number": "6289900000001", "push_name": "Sim"}),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    let (alice, alice_phone) = pair_by_qr(&sim, Some("alice"), None).await;
    let client = alice.handle.client();
    client
        .send_text(pn_jid("6289900000001"), "first")
        .await
        .unwrap();
    client
        .send_text(pn_jid("6289900000001"), "second")
        .await
        .unwrap();
    let first = wait_inbox(&sim, "6289900000001", "first").await;
    assert_eq!(first["from"], format!("{alice_phone}@s.whatsapp.net"));
    assert_eq!(first["chat"], format!("{alice_phone}@s.whatsapp.net"));
    assert!(first["id"].as_str().unwrap().len() > 4);
    assert!(first["t"].as_u64().unwrap() > 0);
    wait_inbox(&sim, "6289900000001", "second").await;
    alice.handle.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn presence_and_typing_are_relayed() {
    use std::time::Duration;
    use whatsapp_rust::types::events::Event;

    let sim = start_sim().await;
    let (alice, alice_phone) = pair_by_qr(&sim, Some("alice"), None).await;
    let (bob, bob_phone) = pair_by_qr(&sim, Some("bob"), None).await;
    let a = alice.handle.client();
    let b = bob.handle.client();

    a.presence().subscribe(pn_jid(&bob_phone)).await.unwrap();
    wait_event(
        &alice.events,
        Duration::from_secs(10),
        "bob unavailable",
        |e| matches!(e, Event::Presence(p) if p.from.user == bob_phone && p.unavailable),
    )
    .await;
    b.presence().set_available().await.unwrap();
    wait_event(
        &alice.events,
        Duration::from_secs(10),
        "bob available",
        |e| matches!(e, Event::Presence(p) if p.from.user == bob_phone && !p.unavailable),
    )
    .await;

    b.chatstate()
        .send_composing(&pn_jid(&alice_phone))
        .await
        .unwrap();
    wait_event(&alice.events, Duration::from_secs(10), "typing", |e| {
        matches!(e, Event::ChatPresence(_))
    })
    .await;
    alice.handle.shutdown().await;
    bob.handle.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn contact_lookups() {
    let sim = start_sim().await;
    let (status, _) = post(
        &sim,
        "/accounts",
        serde_json::json!({"phone_number": "6289900000077"}),
    )
    .await;
    assert_eq!(status, 201);
    let (alice, _) = pair_by_qr(&sim, Some("alice"), None).await;
    let a = alice.handle.client();
    let results = a
        .contacts()
        .is_on_whatsapp(&[pn_jid("6289900000077"), pn_jid("6289900000078")])
        .await
        .unwrap();
    let registered = |user: &str| {
        results
            .iter()
            .find(|r| r.jid.user == user)
            .map(|r| r.is_registered)
    };
    assert_eq!(registered("6289900000077"), Some(true), "{results:?}");
    assert_ne!(registered("6289900000078"), Some(true), "{results:?}");
    let picture = a
        .contacts()
        .get_profile_picture(&pn_jid("6289900000077"), true)
        .await
        .unwrap();
    assert!(picture.is_none());
    alice.handle.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn relinked_account_receives_on_its_new_device() {
    use std::time::Duration;
    use whatsapp_rust::types::events::Event;

    let sim = start_sim().await;
    let (alice, _) = pair_by_qr(&sim, Some("alice"), None).await;
    let (bob, bob_phone) = pair_by_qr(&sim, Some("bob"), None).await;
    let a = alice.handle.client();
    a.send_text(pn_jid(&bob_phone), "one").await.unwrap();
    wait_text(&bob.events, "one").await;

    // Bob's phone unlinks the companion, then links a new one for the same number.
    let (status, _) = post(
        &sim,
        &format!("/accounts/{bob_phone}/unlink"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 200);
    wait_event(&bob.events, Duration::from_secs(10), "LoggedOut", |e| {
        matches!(e, Event::LoggedOut(_))
    })
    .await;
    bob.handle.abort();
    let (bob2, phone2) = pair_by_qr(&sim, Some("bob"), Some(&bob_phone)).await;
    assert_eq!(phone2, bob_phone);
    let (_, account) = get(&sim, &format!("/accounts/{bob_phone}")).await;
    assert_eq!(account["devices"][0]["device"], 2, "{account}");

    a.send_text(pn_jid(&bob_phone), "two").await.unwrap();
    wait_text(&bob2.events, "two").await;
    alice.handle.shutdown().await;
    bob2.handle.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sim_only_user_sends_to_a_client_and_a_group() {
    use whatsapp_rust::wacore::iq::groups::{GroupCreateOptions, GroupParticipantOptions};

    let sim = start_sim().await;
    let sim_user = "6289900000055";
    let (status, _) = post(
        &sim,
        "/accounts",
        serde_json::json!({"phone_number": sim_user, "push_name": "Sam"}),
    )
    .await;
    assert_eq!(status, 201);
    let (alice, alice_phone) = pair_by_qr(&sim, Some("alice"), None).await;
    let (bob, bob_phone) = pair_by_qr(&sim, Some("bob"), None).await;

    let (status, reply) = post(
        &sim,
        &format!("/accounts/{sim_user}/send"),
        serde_json::json!({"to": alice_phone, "text": "ping from sam"}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let (sender, _) = wait_text(&alice.events, "ping from sam").await;
    assert!(sender.starts_with(sim_user), "{sender}");
    // A second message reuses the session.
    let (status, _) = post(
        &sim,
        &format!("/accounts/{sim_user}/send"),
        serde_json::json!({"to": format!("{alice_phone}@s.whatsapp.net"), "text": "again"}),
    )
    .await;
    assert_eq!(status, 200);
    wait_text(&alice.events, "again").await;
    // Alice answers; Sam's phone decrypts it on the established session.
    alice
        .handle
        .client()
        .send_text(pn_jid(sim_user), "pong")
        .await
        .unwrap();
    wait_inbox(&sim, sim_user, "pong").await;

    let group = alice
        .handle
        .client()
        .groups()
        .create_group(
            GroupCreateOptions::builder()
                .subject("With Sam")
                .participants(vec![
                    GroupParticipantOptions::new(pn_jid(&bob_phone)),
                    GroupParticipantOptions::new(pn_jid(sim_user)),
                ])
                .build(),
        )
        .await
        .unwrap();
    let gid = group.metadata.id.to_string();
    let (status, reply) = post(
        &sim,
        &format!("/accounts/{sim_user}/send"),
        serde_json::json!({"to": gid, "text": "hello group"}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let (sender, chat) = wait_text(&bob.events, "hello group").await;
    assert!(sender.starts_with(sim_user), "{sender}");
    assert_eq!(chat, gid);
    wait_text(&alice.events, "hello group").await;
    let (status, _) = post(
        &sim,
        &format!("/accounts/{sim_user}/send"),
        serde_json::json!({"to": gid, "text": "second group"}),
    )
    .await;
    assert_eq!(status, 200);
    wait_text(&bob.events, "second group").await;

    let (status, _) = post(
        &sim,
        "/accounts/6289900000099/send",
        serde_json::json!({"to": alice_phone, "text": "x"}),
    )
    .await;
    assert_eq!(status, 404);
    alice.handle.shutdown().await;
    bob.handle.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_to_an_offline_device_arrive_at_next_login() {
    use std::time::Duration;

    let sim = start_sim().await;
    let (alice, _) = pair_by_qr(&sim, Some("alice"), None).await;
    let (bob, bob_phone) = pair_by_qr(&sim, Some("bob"), None).await;
    let backend = bob.backend.clone();
    bob.handle.shutdown().await;
    eventually(Duration::from_secs(10), "bob to go offline", || async {
        let (_, account) = get(&sim, &format!("/accounts/{bob_phone}")).await;
        account["devices"][0]["connected"] == false
    })
    .await;
    alice
        .handle
        .client()
        .send_text(pn_jid(&bob_phone), "while you were away")
        .await
        .unwrap();
    let bob = spawn_client(&sim, backend, Some("bob")).await;
    wait_text(&bob.events, "while you were away").await;
    alice.handle.shutdown().await;
    bob.handle.shutdown().await;
    sim.shutdown().await;
}
