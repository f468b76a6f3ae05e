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

    let (status, reply) = post(&sim, &format!("/accounts/{phone}/unlink"), serde_json::json!({})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["unlinked"], serde_json::json!([1]));
    wait_event(&client.events, Duration::from_secs(10), "LoggedOut", |e| {
        matches!(e, Event::LoggedOut(l) if !l.on_connect)
    })
    .await;
    assert_eq!(stats(&sim).await["unlinks"], 1);
    client.handle.abort();

    // The stored credentials are refused from now on.
    let again = spawn_client(&sim, backend, Some("dave")).await;
    wait_event(&again.events, Duration::from_secs(20), "LoggedOut on connect", |e| {
        matches!(e, Event::LoggedOut(l) if l.on_connect)
    })
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
    wait_event(&client.events, Duration::from_secs(10), "Disconnected", |e| {
        matches!(e, Event::Disconnected(_))
    })
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
    assert_eq!(stats["unknown_iqs"].as_u64().unwrap(), before + 1, "{stats}");
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
    let query = || {
        whatsapp_rust::request::InfoQuery::get("blocklist", Jid::new("", Server::Pn), None)
    };
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
