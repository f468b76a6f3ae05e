//! Group writes whose answer never came back: WhatsApp applied them, wagate did not hear it
//! (a stall past the timeout, or a kill -9 in flight). wagate's reads must come back to what
//! WhatsApp has without `?refresh=true`.

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
