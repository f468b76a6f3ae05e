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
    assert!(quiet.is_err(), "client lost its connection: {:?}", quiet.ok());
    assert!(client_arc.is_logged_in());
    assert_eq!(stats_after(&sim).await["logins"], 1);
    client.handle.shutdown().await;
    sim.shutdown().await;
}

async fn stats_after(sim: &wa_sim::SimHandle) -> serde_json::Value {
    stats(sim).await
}
