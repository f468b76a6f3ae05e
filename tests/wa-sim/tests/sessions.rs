//! Session lifecycle driven from the phone and by faults: unlinking logs the client out for
//! good, a dropped socket is reconnected by the client itself, and unknown IQs are answered.

mod common;

use std::time::Duration;

use common::*;
use whatsapp_rust::types::events::Event;
use whatsapp_rust::{Jid, Server};

#[tokio::test(flavor = "multi_thread")]
async fn unlinked_device_is_logged_out_and_cannot_log_in_again() {
    let sim = start_sim().await;
    let (client, phone) = pair_by_qr(&sim, Some("dave"), None).await;
    let backend = client.backend.clone();

    let (status, reply) = post(
        &sim,
        &format!("/accounts/{phone}/unlink"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["unlinked"], serde_json::json!([1]));
    wait_event(
        &client.events,
        Duration::from_secs(10),
        "LoggedOut",
        |e| matches!(e, Event::LoggedOut(l) if !l.on_connect),
    )
    .await;
    assert_eq!(stats(&sim).await["unlinks"], 1);
    client.handle.abort();

    // The stored credentials are refused from now on.
    let again = spawn_client(&sim, backend, Some("dave")).await;
    wait_event(
        &again.events,
        Duration::from_secs(20),
        "LoggedOut on connect",
        |e| matches!(e, Event::LoggedOut(l) if l.on_connect),
    )
    .await;
    let (_, account) = get(&sim, &format!("/accounts/{phone}")).await;
    assert_eq!(account["devices"], serde_json::json!([]));
    again.handle.abort();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_socket_is_reconnected_by_the_client() {
    let sim = start_sim().await;
    let (client, phone) = pair_by_qr(&sim, Some("erin"), None).await;
    let (status, reply) = post(
        &sim,
        "/faults",
        serde_json::json!({"kind": "drop_socket", "phone_number": phone}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["success"], true);
    wait_event(
        &client.events,
        Duration::from_secs(10),
        "Disconnected",
        |e| matches!(e, Event::Disconnected(_)),
    )
    .await;
    wait_connected(&client.events, Duration::from_secs(20)).await;
    let stats = stats(&sim).await;
    assert_eq!(stats["logins"], 2, "{stats}");
    assert_eq!(stats["pairings"], 1, "{stats}");
    client.handle.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_iq_gets_501_and_is_counted() {
    let sim = start_sim().await;
    let (client, _) = pair_by_qr(&sim, Some("frank"), None).await;
    let before = stats(&sim).await["unknown_iqs"].as_u64().unwrap();
    let result = client
        .handle
        .client()
        .send_iq(whatsapp_rust::request::InfoQuery::get(
            "w:sim-test",
            Jid::new("", Server::Pn),
            None,
        ))
        .await;
    match result {
        Err(whatsapp_rust::request::IqError::ServerError { code, .. }) => assert_eq!(code, 501),
        other => panic!("expected a 501 error, got {other:?}"),
    }
    let stats = stats(&sim).await;
    assert_eq!(
        stats["unknown_iqs"].as_u64().unwrap(),
        before + 1,
        "{stats}"
    );
    assert_eq!(stats["iqs"]["w:sim-test/"], 1, "{stats}");
    client.handle.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn injected_iq_error_reaches_the_client() {
    let sim = start_sim().await;
    let (client, _) = pair_by_qr(&sim, Some("gina"), None).await;
    let (status, _) = post(
        &sim,
        "/faults",
        serde_json::json!({"kind": "iq_error", "xmlns": "blocklist", "code": 429, "text": "rate-overlimit"}),
    )
    .await;
    assert_eq!(status, 200);
    let query =
        || whatsapp_rust::request::InfoQuery::get("blocklist", Jid::new("", Server::Pn), None);
    match client.handle.client().send_iq(query()).await {
        Err(whatsapp_rust::request::IqError::ServerError { code, text, .. }) => {
            assert_eq!((code, text.as_str()), (429, "rate-overlimit"));
        }
        other => panic!("expected the injected error, got {other:?}"),
    }
    // Only `count` (default 1) IQs are affected.
    client.handle.client().send_iq(query()).await.unwrap();
    client.handle.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_logout_removes_the_device() {
    let sim = start_sim().await;
    let (client, phone) = pair_by_qr(&sim, Some("ivan"), None).await;
    client.handle.client().logout().await;
    eventually(
        Duration::from_secs(10),
        "the logout to reach the sim",
        || async { stats(&sim).await["unlinks"] == 1 },
    )
    .await;
    let (_, account) = get(&sim, &format!("/accounts/{phone}")).await;
    assert_eq!(account["devices"], serde_json::json!([]));
    client.handle.abort();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_error_fault_replaces_the_session() {
    let sim = start_sim().await;
    let (client, phone) = pair_by_qr(&sim, Some("judy"), None).await;
    let (status, reply) = post(
        &sim,
        "/faults",
        serde_json::json!({"kind": "stream_error", "phone_number": phone, "error": "replaced"}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    wait_event(
        &client.events,
        Duration::from_secs(10),
        "StreamReplaced",
        |e| matches!(e, Event::StreamReplaced(_)),
    )
    .await;
    client.handle.abort();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stall_fault_holds_replies() {
    let sim = start_sim().await;
    let (client, phone) = pair_by_qr(&sim, Some("kate"), None).await;
    let (status, _) = post(
        &sim,
        "/faults",
        serde_json::json!({"kind": "stall", "duration_ms": 1500, "phone_number": phone}),
    )
    .await;
    assert_eq!(status, 200);
    let started = std::time::Instant::now();
    client
        .handle
        .client()
        .send_iq(whatsapp_rust::request::InfoQuery::get(
            "blocklist",
            Jid::new("", Server::Pn),
            None,
        ))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1300),
        "{:?}",
        started.elapsed()
    );
    client.handle.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn push_name_and_app_state_patches_are_accepted() {
    let sim = start_sim().await;
    let (client, phone) = pair_by_qr(&sim, Some("lena"), None).await;
    let c = client.handle.client();
    c.profile().set_push_name("Lena B").await.unwrap();
    eventually(Duration::from_secs(10), "the new push name", || async {
        get(&sim, &format!("/accounts/{phone}")).await.1["push_name"] == "Lena B"
    })
    .await;
    c.chat_actions()
        .archive_chat(&pn_jid("6289900000001"), None)
        .await
        .unwrap();
    c.profile().set_status_text("busy").await.unwrap();
    assert_eq!(stats(&sim).await["unknown_iqs"], 0);
    client.handle.shutdown().await;
    sim.shutdown().await;
}

/// Slow; run by hand: stays connected across several keepalive rounds.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn stays_connected_for_a_minute() {
    let sim = start_sim().await;
    let (client, _) = pair_by_qr(&sim, Some("hank"), None).await;
    let lost = tokio::time::timeout(Duration::from_secs(65), async {
        loop {
            if let Ok(event) = client.events.recv().await
                && matches!(&*event, Event::Disconnected(_) | Event::LoggedOut(_))
            {
                return event;
            }
        }
    })
    .await;
    assert!(lost.is_err(), "connection lost: {:?}", lost.ok());
    let stats = stats(&sim).await;
    assert_eq!(stats["logins"], 1, "{stats}");
    eprintln!("{stats}");
    client.handle.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_stanza_ends_the_stream_and_the_client_reconnects() {
    let sim = start_sim().await;
    let (client, _) = pair_by_qr(&sim, Some("hank"), None).await;
    let connections = stats(&sim).await["connections"].as_u64().unwrap();
    client
        .handle
        .client()
        .send_node(
            whatsapp_rust::wacore_binary::builder::NodeBuilder::new("no-such-stanza")
                .attr("id", "x1")
                .build(),
        )
        .await
        .unwrap();
    wait_event(
        &client.events,
        Duration::from_secs(10),
        "the stream error",
        |e| matches!(e, Event::StreamError(_)),
    )
    .await;
    wait_connected(&client.events, Duration::from_secs(30)).await;
    let stats = stats(&sim).await;
    assert!(
        stats["connections"].as_u64().unwrap() > connections,
        "a new connection: {stats}"
    );
    client.handle.shutdown().await;
    sim.shutdown().await;
}
