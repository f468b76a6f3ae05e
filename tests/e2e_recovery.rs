//! Group writes whose answer never came back: WhatsApp applied them, wagate did not hear it
//! (a stall past the timeout, or a kill -9 in flight). wagate's reads must come back to what
//! WhatsApp has without `?refresh=true`. And a sent text a member asks for again after a
//! crash is sent again, from the copy wagate stored.

mod common;

use common::sim::Sim;
use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const PAIRING: Duration = Duration::from_secs(60);
const SETTLE: Duration = Duration::from_secs(20);

async fn logged_in(server: &TestServer, id: &str) {
    let ok = wait_until(PAIRING, || async {
        server.api().get(&format!("/sessions/{id}")).await.json()["status"] == "logged_in"
    })
    .await;
    assert!(ok, "session {id} logged in\n{}", server.output());
}

/// A session `a` in a group with one sim-only member; returns the group's JID.
async fn group_of_two(server: &TestServer, sim: &Sim) -> String {
    sim.pair_by_qr(server, "a", "6287700000001", "a").await;
    let b = sim.user("6287700000002").await;
    let created = server
        .api()
        .post_json(
            "/sessions/a/groups",
            &json!({"name": "Before", "participants": [b]}),
        )
        .await
        .expect(200);
    created["group_jid"].as_str().unwrap().to_string()
}

async fn stall(sim: &Sim, duration_ms: u64) {
    sim.post_ok(
        "/faults",
        json!({"kind": "stall", "duration_ms": duration_ms, "phone_number": "6287700000001"}),
    )
    .await;
}

async fn set_subject(server: &TestServer, gid: &str, subject: &str) -> Reply {
    let api = server.api();
    api.send(
        api.request(
            reqwest::Method::PUT,
            &format!("/sessions/a/groups/{gid}/subject"),
        )
        .json(&json!({ "subject": subject })),
    )
    .await
}

/// Waits until wagate's cached read (no refresh) shows `subject`.
async fn read_shows(server: &TestServer, gid: &str, subject: &str) -> Value {
    let path = format!("/sessions/a/groups/{gid}/info");
    let seen = wait_for(SETTLE, || async {
        let r = server.api().get(&path).await;
        (r.code() == 200 && r.json()["name"] == subject).then(|| r.json())
    })
    .await;
    match seen {
        Some(info) => info,
        None => panic!(
            "wagate still reads {} instead of {subject:?}",
            server.api().get(&path).await.text()
        ),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_that_timed_out_but_was_applied_is_read_back() {
    let sim = Sim::start().await;
    let server = TestServer::builder()
        .whatsapp_url(sim.url())
        .env("WAGATE_WHATSAPP_REQUEST_TIMEOUT", "2s")
        .start()
        .await;
    let gid = group_of_two(&server, &sim).await;
    read_shows(&server, &gid, "Before").await;

    // WhatsApp applies the change but its answer is held back past wagate's timeout.
    stall(&sim, 3_000).await;
    set_subject(&server, &gid, "Applied late")
        .await
        .expect_error(504, "whatsapp_timeout");
    assert_eq!(sim.group(&gid).await["subject"], "Applied late");
    read_shows(&server, &gid, "Applied late").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_cut_off_by_kill9_is_read_back_after_restart() {
    let sim = Sim::start().await;
    let mut server = TestServer::builder().whatsapp_url(sim.url()).start().await;
    let gid = group_of_two(&server, &sim).await;
    read_shows(&server, &gid, "Before").await;

    // The answer never comes: the write is in flight when wagate dies.
    stall(&sim, 60_000).await;
    let url = server.url(&format!("/api/v1/sessions/a/groups/{gid}/subject"));
    let client = server.client().clone();
    let in_flight = tokio::spawn(async move {
        let _ = client
            .put(url)
            .bearer_auth(API_TOKEN)
            .json(&json!({"subject": "Cut off"}))
            .send()
            .await;
    });
    let applied = wait_until(SETTLE, || async {
        sim.group(&gid).await["subject"] == "Cut off"
    })
    .await;
    assert!(applied, "the simulator applied the write");
    server.kill9();
    in_flight.abort();
    stall(&sim, 0).await;

    server.start_again().await;
    logged_in(&server, "a").await;
    read_shows(&server, &gid, "Cut off").await;
    // A burst of writes acknowledged before the kill stays as acknowledged.
    set_subject(&server, &gid, "After").await.expect(200);
    read_shows(&server, &gid, "After").await;
}

/// How many times the member's phone has decrypted the message `id`.
async fn times_received(sim: &Sim, phone: &str, id: &str, text: &str) -> usize {
    sim.get_ok(&format!("/accounts/{phone}/messages"))
        .await
        .as_array()
        .map_or(0, |m| {
            m.iter()
                .filter(|m| m["id"] == id && m["text"] == text)
                .count()
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_text_a_member_asks_for_again_after_a_crash_is_sent_again() {
    let sim = Sim::start().await;
    let mut server = TestServer::builder().whatsapp_url(sim.url()).start().await;
    let gid = group_of_two(&server, &sim).await;
    let member = "6287700000002";
    let sent = server
        .api()
        .post_json(
            "/sessions/a/messages/text",
            &json!({"to": gid, "text": "Say it again"}),
        )
        .await
        .expect(200);
    let id = sent["message_id"].as_str().unwrap().to_string();
    let once = wait_until(SETTLE, || async {
        times_received(&sim, member, &id, "Say it again").await == 1
    })
    .await;
    assert!(once, "the member received the text");
    // Once the send's ack event is readable it is on disk, and so is everything written before
    // it, the copy of the text included.
    let acked = wait_until(SETTLE, || async {
        let page = server
            .api()
            .get("/sessions/a/events?types=message.ack")
            .await;
        page.json()["events"].as_array().is_some_and(|events| {
            events
                .iter()
                .any(|e| e["data"]["message_id"] == id.as_str())
        })
    })
    .await;
    assert!(acked, "the send's ack is in the event log");

    // A crash: the client's own memory of sent messages is gone with the process, so only the
    // copy wagate stored can answer.
    server.kill9();
    server.start_again().await;
    logged_in(&server, "a").await;
    sim.post_ok(
        &format!("/accounts/{member}/receipts"),
        json!({"to": "6287700000001", "ids": [id], "type": "retry", "chat": gid}),
    )
    .await;
    let again = wait_until(SETTLE, || async {
        times_received(&sim, member, &id, "Say it again").await == 2
    })
    .await;
    assert!(
        again,
        "the member got the text again after asking for it\n{}",
        server.output()
    );
}
