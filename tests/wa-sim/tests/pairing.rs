//! Pairing and login: QR and pair-code linking, staying connected, and logging in again
//! from stored credentials after a client restart.

mod common;

use std::time::{Duration, Instant};

use common::*;
use whatsapp_rust::types::events::Event;

#[tokio::test(flavor = "multi_thread")]
async fn qr_pairing_reaches_connected_and_stays_connected() {
    let sim = start_sim().await;
    let started = Instant::now();
    let (client, phone) = pair_by_qr(&sim, Some("alice"), Some("6281200000001")).await;
    let took = started.elapsed();
    eprintln!("fresh QR pairing reached Connected in {took:?}");
    assert_eq!(phone, "6281200000001");
    let stats = stats(&sim).await;
    assert_eq!(stats["pairings"], 1, "{stats}");
    assert_eq!(stats["logins"], 1, "{stats}");
    assert_eq!(stats["unknown_iqs"], 0, "{stats}");

    let (status, account) = get(&sim, "/accounts/6281200000001").await;
    assert_eq!(status, 200);
    assert_eq!(account["devices"][0]["device"], 1);
    assert_eq!(account["devices"][0]["connected"], true);

    // No disconnect for a while: keepalive pings are answered and nothing times out.
    let client_arc = client.handle.client();
    let quiet = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Ok(event) = client.events.recv().await
                && matches!(&*event, Event::Disconnected(_) | Event::LoggedOut(_))
            {
                return event;
            }
        }
    })
    .await;
    assert!(
        quiet.is_err(),
        "client lost its connection: {:?}",
        quiet.ok()
    );
    assert!(client_arc.is_logged_in());
    assert_eq!(common::stats(&sim).await["logins"], 1);
    client.handle.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pair_code_pairing_reaches_connected() {
    let sim = start_sim().await;
    let phone = "6281200000002";
    let client = spawn_client_with(&sim, new_backend(), Some("bob"), |b| {
        b.with_pair_code(whatsapp_rust::pair_code::PairCodeOptions {
            phone_number: phone.to_string(),
            ..Default::default()
        })
    })
    .await;
    let code = match &*wait_event(
        &client.events,
        Duration::from_secs(30),
        "a pair code",
        |e| matches!(e, Event::PairingCode(_)),
    )
    .await
    {
        Event::PairingCode(p) => p.code.clone(),
        _ => unreachable!(),
    };
    // A wrong code is refused without linking anything.
    let (status, _) = post(
        &sim,
        "/enter-pair-code",
        serde_json::json!({"phone_number": phone, "code": "AAAA-BBBB"}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, reply) = post(
        &sim,
        "/enter-pair-code",
        serde_json::json!({"phone_number": phone, "code": code}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["phone_number"], phone);
    assert_eq!(reply["jid"], format!("{phone}:1@s.whatsapp.net"));
    assert!(
        reply["lid"].as_str().unwrap().ends_with(":1@lid"),
        "{reply}"
    );
    wait_connected(&client.events, Duration::from_secs(30)).await;
    let stats = stats(&sim).await;
    assert_eq!(stats["pairings"], 1, "{stats}");
    // Nobody is waiting for a code any more.
    let (status, _) = post(
        &sim,
        "/enter-pair-code",
        serde_json::json!({"phone_number": phone, "code": code}),
    )
    .await;
    assert_eq!(status, 404);
    client.handle.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restarted_client_logs_in_again_without_pairing() {
    let sim = start_sim().await;
    let (client, phone) = pair_by_qr(&sim, Some("carol"), None).await;
    let backend = client.backend.clone();
    client.handle.shutdown().await;
    eventually(
        Duration::from_secs(10),
        "the old socket to close",
        || async { stats(&sim).await["active_connections"] == 0 },
    )
    .await;

    let started = Instant::now();
    let again = spawn_client(&sim, backend.clone(), Some("carol")).await;
    wait_connected(&again.events, Duration::from_secs(30)).await;
    eprintln!(
        "login from stored credentials reached Connected in {:?}",
        started.elapsed()
    );
    let stats = stats(&sim).await;
    assert_eq!(stats["pairings"], 1, "{stats}");
    assert_eq!(stats["logins"], 2, "{stats}");
    let (_, account) = get(&sim, &format!("/accounts/{phone}")).await;
    assert_eq!(account["devices"].as_array().unwrap().len(), 1, "{account}");
    again.handle.shutdown().await;

    // A client without a push name restarts just as well.
    let (client, _) = pair_by_qr(&sim, None, None).await;
    let backend = client.backend.clone();
    client.handle.shutdown().await;
    let started = Instant::now();
    let again = spawn_client(&sim, backend, None).await;
    wait_connected(&again.events, Duration::from_secs(30)).await;
    eprintln!(
        "nameless login reached Connected in {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(8));
    again.handle.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ik_reconnect_is_accepted_when_enabled() {
    init_logging();
    let sim = wa_sim::start(wa_sim::SimConfig {
        accept_ik: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let (client, _) = pair_by_qr(&sim, Some("ike"), None).await;
    let backend = client.backend.clone();
    client.handle.shutdown().await;
    let before = stats(&sim).await["connections"].as_u64().unwrap();
    let again = spawn_client(&sim, backend, Some("ike")).await;
    wait_connected(&again.events, Duration::from_secs(30)).await;
    let stats = stats(&sim).await;
    // One connection, one handshake: the IK hello was accepted as is.
    assert_eq!(
        stats["connections"].as_u64().unwrap(),
        before + 1,
        "{stats}"
    );
    assert_eq!(stats["logins"], 2, "{stats}");
    again.handle.shutdown().await;
    sim.shutdown().await;
}
