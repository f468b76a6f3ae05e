//! The offline queue keeps a message until the device acknowledges it: a client whose
//! durability hook fails gets the message again on its next connection (and only then),
//! and what arrives while a client is away is delivered at login, marked offline.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use serde_json::json;
use whatsapp_rust::InboundDurabilityHook;
use whatsapp_rust::types::events::Event;
use whatsapp_rust::wacore::types::events::InboundMessage;

const SAM: &str = "6289900000401";

/// Counts how often it saw a message with `text`, and refuses to commit it the first time.
struct FailFirst {
    text: &'static str,
    attempts: Arc<AtomicUsize>,
}

#[whatsapp_rust::async_trait]
impl InboundDurabilityHook for FailFirst {
    async fn on_messages(
        &self,
        _client: Arc<whatsapp_rust::Client>,
        batch: &[InboundMessage],
    ) -> whatsapp_rust::anyhow::Result<()> {
        if !batch
            .iter()
            .any(|m| text_of(&m.message).as_deref() == Some(self.text))
        {
            return Ok(());
        }
        if self.attempts.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(whatsapp_rust::anyhow::anyhow!("simulated storage failure"));
        }
        Ok(())
    }
}

/// What the sim holds for one companion device: (unacked ids, acked ids).
async fn device_messages(
    sim: &wa_sim::SimHandle,
    phone: &str,
    device: u64,
) -> (Vec<String>, Vec<String>) {
    let (status, body) = get(sim, &format!("/accounts/{phone}/devices/{device}/messages")).await;
    assert_eq!(status, 200, "{body}");
    let ids = |key: &str| -> Vec<String> {
        body[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} in {body}"))
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect()
    };
    (ids("unacked"), ids("acked"))
}

async fn first_device(sim: &wa_sim::SimHandle, phone: &str) -> u64 {
    let (_, account) = get(sim, &format!("/accounts/{phone}")).await;
    account["devices"][0]["device"]
        .as_u64()
        .unwrap_or_else(|| panic!("a device in {account}"))
}

async fn create_sam(sim: &wa_sim::SimHandle) {
    let (status, _) = post(
        sim,
        "/accounts",
        json!({"phone_number": SAM, "push_name": "Sam"}),
    )
    .await;
    assert_eq!(status, 201);
}

async fn sam_sends(sim: &wa_sim::SimHandle, to: &str, text: &str) -> String {
    let (status, reply) = post(
        sim,
        &format!("/accounts/{SAM}/send"),
        json!({"to": to, "text": text}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    reply["id"].as_str().expect("an id").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn unacked_message_is_redelivered_until_the_hook_commits() {
    let sim = start_sim().await;
    create_sam(&sim).await;
    let attempts = Arc::new(AtomicUsize::new(0));
    let hook = FailFirst {
        text: "keep me",
        attempts: attempts.clone(),
    };
    let dana = spawn_client_with(&sim, new_backend(), Some("dana"), |b| {
        b.with_inbound_durability_hook(hook)
    })
    .await;
    let qr = next_qr(&dana.events).await;
    let (status, linked) = post(&sim, "/scan-qr", json!({ "qr": qr })).await;
    assert_eq!(status, 200, "{linked}");
    let dana_phone = linked["phone_number"].as_str().unwrap().to_string();
    wait_connected(&dana.events, Duration::from_secs(30)).await;
    let device = first_device(&sim, &dana_phone).await;

    let id = sam_sends(&sim, &dana_phone, "keep me").await;
    eventually(
        Duration::from_secs(20),
        "the hook's first attempt",
        || async { attempts.load(Ordering::SeqCst) >= 1 },
    )
    .await;
    // The failed commit sends no ack, and the live connection does not get it twice.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    let (unacked, acked) = device_messages(&sim, &dana_phone, device).await;
    assert!(unacked.contains(&id), "{unacked:?}");
    assert!(!acked.contains(&id), "{acked:?}");
    let acked_before = stats(&sim).await["messages_acked"].as_u64().unwrap();

    // A new connection gets it again, offline-marked; this time the hook commits it.
    let (status, _) = post(
        &sim,
        "/faults",
        json!({"kind": "drop_socket", "phone_number": dana_phone}),
    )
    .await;
    assert_eq!(status, 200);
    let event = wait_event(
        &dana.events,
        Duration::from_secs(30),
        "the redelivered message",
        |e| e.messages().any(|m| m.info.id == id),
    )
    .await;
    let m = event.messages().find(|m| m.info.id == id).unwrap();
    assert_eq!(text_of(&m.message).as_deref(), Some("keep me"));
    assert!(m.info.is_offline, "redelivery is an offline delivery");
    eventually(Duration::from_secs(20), "the ack", || async {
        let (unacked, acked) = device_messages(&sim, &dana_phone, device).await;
        !unacked.contains(&id) && acked.contains(&id)
    })
    .await;
    assert_eq!(attempts.load(Ordering::SeqCst), 2);

    // Later messages are acked live, and nothing is acked twice.
    let next = sam_sends(&sim, &dana_phone, "and me").await;
    wait_text(&dana.events, "and me").await;
    eventually(Duration::from_secs(20), "the live ack", || async {
        device_messages(&sim, &dana_phone, device)
            .await
            .1
            .contains(&next)
    })
    .await;
    let (unacked, acked) = device_messages(&sim, &dana_phone, device).await;
    assert_eq!(acked.iter().filter(|a| **a == id).count(), 1, "{acked:?}");
    assert_eq!(acked.iter().filter(|a| **a == next).count(), 1, "{acked:?}");
    assert!(!unacked.contains(&next), "{unacked:?}");
    assert!(stats(&sim).await["messages_acked"].as_u64().unwrap() >= acked_before + 2);
    dana.handle.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_sent_while_away_are_held_in_order_and_arrive_offline() {
    let sim = start_sim().await;
    create_sam(&sim).await;
    let (alice, _) = pair_by_qr(&sim, Some("alice"), None).await;
    let (bob, bob_phone) = pair_by_qr(&sim, Some("bob"), None).await;
    let device = first_device(&sim, &bob_phone).await;
    let backend = bob.backend.clone();
    bob.handle.shutdown().await;
    eventually(Duration::from_secs(10), "bob to go offline", || async {
        let (_, account) = get(&sim, &format!("/accounts/{bob_phone}")).await;
        account["devices"][0]["connected"] == false
    })
    .await;

    let first = sam_sends(&sim, &bob_phone, "away 1").await;
    let second = alice
        .handle
        .client()
        .send_text(pn_jid(&bob_phone), "away 2")
        .await
        .unwrap()
        .message_id;
    // The client's send returns on the server ack, which the sim writes before routing.
    eventually(
        Duration::from_secs(10),
        "alice's message to be held",
        || async { device_messages(&sim, &bob_phone, device).await.0.len() == 2 },
    )
    .await;
    let third = sam_sends(&sim, &bob_phone, "away 3").await;
    let (unacked, _) = device_messages(&sim, &bob_phone, device).await;
    assert_eq!(
        unacked,
        vec![first.clone(), second.clone(), third.clone()],
        "held in arrival order"
    );

    let bob = spawn_client(&sim, backend, Some("bob")).await;
    let mut seen: Vec<String> = Vec::new();
    let wanted = [first.clone(), second.clone(), third.clone()];
    tokio::time::timeout(Duration::from_secs(30), async {
        while seen.len() < wanted.len() {
            let event = bob.events.recv().await.expect("event stream");
            if let Event::Messages(batch) = &*event {
                for m in batch.messages.iter() {
                    if wanted.contains(&m.info.id) {
                        assert!(m.info.is_offline, "{} not marked offline", m.info.id);
                        seen.push(m.info.id.clone());
                    }
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only got {seen:?} of {wanted:?}"));
    // The sim writes them in arrival order (checked above on its side); the client
    // decrypts different senders concurrently, so only one sender's order is kept.
    let at = |id: &String| seen.iter().position(|s| s == id);
    assert!(
        at(&first) < at(&third),
        "Sam's messages out of order: {seen:?}"
    );
    eventually(Duration::from_secs(20), "bob's acks", || async {
        let (unacked, acked) = device_messages(&sim, &bob_phone, device).await;
        unacked.is_empty() && wanted.iter().all(|id| acked.contains(id))
    })
    .await;
    let (_, acked) = device_messages(&sim, &bob_phone, device).await;
    for id in &wanted {
        assert_eq!(acked.iter().filter(|a| *a == id).count(), 1, "{acked:?}");
    }

    let (status, _) = get(&sim, &format!("/accounts/{bob_phone}/devices/99/messages")).await;
    assert_eq!(status, 404);
    let (status, _) = get(&sim, "/accounts/6289900000499/devices/1/messages").await;
    assert_eq!(status, 404);
    alice.handle.shutdown().await;
    bob.handle.shutdown().await;
    sim.shutdown().await;
}
