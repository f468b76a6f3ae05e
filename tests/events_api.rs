//! The events and webhooks endpoints without WhatsApp, in-process: their input checks and
//! errors in the contract's shape, webhook CRUD persisted across a restart, and the session
//! status changes a session makes on its own.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn pull_checks_its_input() {
    let srv = TestServer::start_in_process().await;
    let api = srv.api();
    api.get("/sessions/nope/events")
        .await
        .expect_error(404, "session_not_found");
    api.get("/sessions/bad!id/events")
        .await
        .expect_error(400, "invalid_session_id");
    srv.create_session("a", "A").await;
    for query in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "after=-1",
        "types=message.nope",
        "types=",
    ] {
        api.get(&format!("/sessions/a/events?{query}"))
            .await
            .expect_error(400, "validation");
    }
    let page = api
        .get("/sessions/a/events?after=999&limit=5")
        .await
        .expect(200);
    assert_eq!(page, json!({"events": [], "next_after": 999}));
    api.get("/sessions/nope/events/stream")
        .await
        .expect_error(404, "session_not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_records_its_own_status_changes() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("a", "A").await;
    srv.api().post("/sessions/a/disconnect").await.expect(200);
    let found = wait_for(std::time::Duration::from_secs(10), || async {
        let page = srv.api().get("/sessions/a/events").await.expect(200);
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "session.status" && e["data"]["status"] == "disconnected")
            .cloned()
    })
    .await
    .expect("a session.status event for the disconnect");
    assert_eq!(found["session"], "a");
    assert_eq!(
        found["data"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["previous", "reason", "status"]
    );
    assert_ne!(found["data"]["previous"], "disconnected");
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_input_is_checked() {
    let srv = TestServer::start_in_process().await;
    let api = srv.api();
    for (body, field) in [
        (json!({}), "url"),
        (json!({"url": "ftp://127.0.0.1/x"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (
            json!({"url": "http://127.0.0.1:9/x", "events": []}),
            "events",
        ),
        (
            json!({"url": "http://127.0.0.1:9/x", "events": ["nope"]}),
            "events",
        ),
        (
            json!({"url": "http://127.0.0.1:9/x", "sessions": ["bad id!"]}),
            "sessions",
        ),
        (
            json!({"url": "http://127.0.0.1:9/x", "secret": "plain"}),
            "secret",
        ),
        (
            json!({"url": "http://127.0.0.1:9/x", "colour": "red"}),
            "colour",
        ),
    ] {
        let message = api
            .post_json("/webhooks", &body)
            .await
            .expect_error(400, "validation");
        assert!(message.contains(field), "{body}: {message}");
    }
    api.get("/webhooks/wh_missing")
        .await
        .expect_error(404, "not_found");
    api.call(reqwest::Method::PUT, "/webhooks/wh_missing")
        .await
        .expect_error(404, "not_found");
    api.delete("/webhooks/wh_missing")
        .await
        .expect_error(404, "not_found");
    api.post_json(
        "/webhooks/wh_missing/replay",
        &json!({"session": "a", "after": 0}),
    )
    .await
    .expect_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_persist_and_rotate_their_secret() {
    let mut srv = TestServer::start().await;
    srv.create_session("a", "A").await;
    let api = srv.api();
    let given = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let created = api
        .post_json(
            "/webhooks",
            &json!({"url": "http://127.0.0.1:9/hook", "events": ["group.updated", "message.received"], "sessions": ["a"], "secret": given}),
        )
        .await
        .expect(201);
    assert_eq!(created["secret"], given);
    assert_eq!(
        created["events"],
        json!(["group.updated", "message.received"])
    );
    let id = created["id"].as_str().unwrap().to_string();
    let other = api
        .post_json("/webhooks", &json!({"url": "https://127.0.0.1:9/other"}))
        .await
        .expect(201);
    assert_eq!(other["events"], json!(["*"]));
    assert_eq!(other["sessions"], json!(["*"]));

    let updated = api
        .send(
            api.request(reqwest::Method::PUT, &format!("/webhooks/{id}"))
                .json(&json!({"url": "http://127.0.0.1:9/moved", "secret": "whsec_dGVzdC1rZXktYnl0ZXMtMTIzNDU2Nzg="})),
        )
        .await
        .expect(200);
    assert_eq!(updated["url"], "http://127.0.0.1:9/moved");
    assert!(updated.get("secret").is_none());
    assert!(!updated.to_string().contains("whsec_"));

    srv.restart().await;
    let api = srv.api();
    let listed = api.get("/webhooks").await.expect(200);
    let hooks = listed["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 2);
    let kept = api.get(&format!("/webhooks/{id}")).await.expect(200);
    assert_eq!(kept["url"], "http://127.0.0.1:9/moved");
    assert_eq!(kept["sessions"], json!(["a"]));
    assert!(!listed.to_string().contains("whsec_"));

    api.delete(&format!("/webhooks/{id}")).await.expect(200);
    srv.restart().await;
    srv.api()
        .get(&format!("/webhooks/{id}"))
        .await
        .expect_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tree_shows_the_events_log_and_webhooks() {
    let srv = TestServer::start_in_process().await;
    srv.create_session("a", "A").await;
    let node = wait_for(std::time::Duration::from_secs(5), || async {
        srv.tree_node("session:a/events").await
    })
    .await
    .expect("session:a/events in the tree");
    assert_eq!(node["kind"], "events");
    let hooks = srv
        .tree_node("webhooks")
        .await
        .expect("webhooks in the tree");
    assert_eq!(hooks["kind"], "webhooks");
    let actor = srv.actor("session:a/events").await.expect(200);
    assert!(actor.to_string().contains("head"), "{actor}");
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_events_answer_410_and_seq_never_restarts() {
    let mut srv = TestServer::builder()
        .env("WAGATE_EVENTS_RETENTION", "1s")
        .start()
        .await;
    srv.create_session("a", "A").await;
    // A webhook whose receiver never accepts: its events expire undelivered.
    let receiver = common::receiver::Receiver::start().await;
    receiver.answer_by_default(common::receiver::Answer::Status(503));
    let hook = srv
        .api()
        .post_json(
            "/webhooks",
            &json!({"url": receiver.url("/"), "sessions": ["a"]}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    srv.api().post("/sessions/a/disconnect").await.expect(200);
    let head = wait_for(std::time::Duration::from_secs(10), || async {
        let page = srv.api().get("/sessions/a/events").await.expect(200);
        let n = page["next_after"].as_u64().unwrap();
        (n > 0).then_some(n)
    })
    .await
    .expect("status events");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    // Retention is applied when the log starts (and every minute after).
    srv.restart().await;
    let message = srv
        .api()
        .get("/sessions/a/events?after=0")
        .await
        .expect_error(410, "events_expired");
    assert!(message.contains(&format!("{}", head + 1)), "{message}");
    let expired = wait_for(std::time::Duration::from_secs(10), || async {
        let v = srv
            .api()
            .get(&format!("/webhooks/{hook}"))
            .await
            .expect(200);
        let d = v["deliveries"][0].clone();
        (d["expired"].as_u64().unwrap_or(0) > 0).then_some(d)
    })
    .await
    .expect("the webhook counts the events that expired undelivered");
    assert_eq!(expired["pending"], 0, "{expired}");
    srv.api()
        .get("/sessions/a/events/stream?after=0")
        .await
        .expect_error(410, "events_expired");
    // Without `after`, a reader starts from the oldest event still held: nothing is left,
    // and it reads on from where retention stopped.
    let everything = srv.api().get("/sessions/a/events").await.expect(200);
    assert_eq!(everything, json!({"events": [], "next_after": head}));
    let stream = srv
        .client()
        .get(srv.url("/api/v1/sessions/a/events/stream"))
        .bearer_auth(srv.api_token())
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200, "a stream without `after` opens");
    // Reading from where retention stopped works, and new events continue the count.
    srv.api().post("/sessions/a/connect").await.expect(200);
    let next = wait_for(std::time::Duration::from_secs(10), || async {
        let page = srv
            .api()
            .get(&format!("/sessions/a/events?after={head}"))
            .await
            .expect(200);
        page["events"].as_array().unwrap().first().cloned()
    })
    .await
    .expect("a new event after the expired ones");
    assert!(next["seq"].as_u64().unwrap() > head);
    let from_oldest = srv.api().get("/sessions/a/events").await.expect(200);
    assert_eq!(from_oldest["events"][0], next);
    let mut body = stream.bytes_stream();
    let first_frame = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut text = String::new();
        while !text.contains("data:") || !text.ends_with("\n\n") {
            let chunk = body.next().await.expect("open").expect("readable");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    })
    .await
    .expect("the stream delivers the new event");
    let first_id = first_frame
        .lines()
        .find_map(|line| line.strip_prefix("id:"))
        .map(str::trim);
    assert_eq!(
        first_id,
        Some(next["seq"].to_string().as_str()),
        "{first_frame}"
    );
    drop(body);

    // The expired count is kept across a restart (it may grow: with a retention of 1 s, the
    // events since the first restart can expire by the second).
    srv.restart().await;
    let after_restart = srv
        .api()
        .get(&format!("/webhooks/{hook}"))
        .await
        .expect(200);
    let before = expired["expired"].as_u64().unwrap();
    assert!(
        after_restart["deliveries"][0]["expired"].as_u64() >= Some(before),
        "{after_restart}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_delivery_resumes_after_a_restart_and_shows_in_metrics() {
    let receiver = common::receiver::Receiver::start().await;
    receiver.answer_by_default(common::receiver::Answer::Status(503));
    let mut srv = TestServer::builder()
        .env("WAGATE_WEBHOOKS_BACKOFF_MAX", "1s")
        .start()
        .await;
    srv.create_session("a", "A").await;
    let created = srv
        .api()
        .post_json(
            "/webhooks",
            &json!({"url": receiver.url("/in"), "events": ["session.status"], "sessions": ["a"]}),
        )
        .await
        .expect(201);
    let id = created["id"].as_str().unwrap().to_string();
    let secret = created["secret"].as_str().unwrap().to_string();
    for _ in 0..3 {
        srv.api().post("/sessions/a/disconnect").await.expect(200);
        srv.api().post("/sessions/a/connect").await.expect(200);
    }
    let failing = wait_for(std::time::Duration::from_secs(10), || async {
        let v = srv.api().get(&format!("/webhooks/{id}")).await.expect(200);
        let d = v["deliveries"][0].clone();
        (d["last_error"] == "HTTP 503" && d["pending"].as_u64().unwrap_or(0) >= 6).then_some(d)
    })
    .await
    .expect("the failing receiver shows on the webhook");
    assert!(failing["next_attempt_at"].as_u64().is_some());
    let metrics = srv.root(Some(srv.admin_token())).get("/metrics").await;
    assert_eq!(metrics.code(), 200);
    let text = metrics.text();
    assert!(
        text.contains(&format!(
            "wagate_webhook_pending_events{{webhook=\"{id}\"}}"
        )),
        "{text}"
    );
    assert!(text.contains("wagate_events_appended_total"));
    assert!(!text.contains(&secret));

    srv.restart().await;
    receiver.answer_by_default(common::receiver::Answer::Status(204));
    let page = srv
        .api()
        .get("/sessions/a/events?types=session.status&limit=1000")
        .await
        .expect(200);
    let logged: Vec<String> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["seq"].as_u64() > Some(0))
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let all = wait_until(std::time::Duration::from_secs(20), || async {
        let got: Vec<String> = receiver
            .accepted()
            .iter()
            .map(|d| d.header("webhook-id"))
            .collect();
        logged.iter().all(|id| got.contains(id))
    })
    .await;
    assert!(
        all,
        "every event arrived after the restart\n{}",
        srv.output()
    );
    let verifier = standardwebhooks::Webhook::new(&secret).unwrap();
    let mut last = 0;
    for d in receiver.accepted() {
        verifier.verify(&d.body, &d.headers).expect("signed");
        let seq = d.json()["seq"].as_u64().unwrap();
        assert!(seq > last, "in order without duplicates");
        last = seq;
    }
    let view = srv.api().get(&format!("/webhooks/{id}")).await.expect(200);
    assert!(view["deliveries"][0]["last_error"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_deleted_and_created_again_is_delivered_from_its_first_event() {
    let receiver = common::receiver::Receiver::start().await;
    receiver.answer_by_default(common::receiver::Answer::Status(204));
    let srv = TestServer::start_in_process().await;
    let api = srv.api();
    api.post_json(
        "/webhooks",
        &json!({"url": receiver.url("/in"), "events": ["session.status"], "sessions": ["*"]}),
    )
    .await
    .expect(201);
    let delivered_seqs = |receiver: &common::receiver::Receiver| -> Vec<(u64, String)> {
        receiver
            .accepted()
            .iter()
            .map(|d| d.json())
            .map(|e| {
                (
                    e["seq"].as_u64().unwrap(),
                    e["id"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    srv.create_session("a", "A").await;
    for _ in 0..2 {
        api.post("/sessions/a/disconnect").await.expect(200);
        api.post("/sessions/a/connect").await.expect(200);
    }
    let head = wait_for(std::time::Duration::from_secs(10), || async {
        let page = api.get("/sessions/a/events").await.expect(200);
        let head = page["next_after"].as_u64().unwrap();
        let delivered = delivered_seqs(&receiver);
        (head >= 4 && delivered.iter().any(|(seq, _)| *seq == head)).then_some(head)
    })
    .await
    .expect("the first life's events delivered");
    let first_life = delivered_seqs(&receiver);

    api.delete("/sessions/a").await.expect(200);
    srv.create_session("a", "A again").await;
    api.post("/sessions/a/disconnect").await.expect(200);
    let page = wait_for(std::time::Duration::from_secs(10), || async {
        let page = api.get("/sessions/a/events").await.expect(200);
        let events = page["events"].as_array().unwrap().clone();
        events
            .iter()
            .any(|e| e["data"]["status"] == "disconnected")
            .then_some(events)
    })
    .await
    .expect("the second life logs its disconnect");
    assert_eq!(page[0]["seq"], 1, "the new log starts at 1");
    assert!(
        (page.len() as u64) < head,
        "the second life's log is shorter than the first's: {page:?}"
    );
    let second_life: Vec<(u64, String)> = page
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let all_arrived = wait_until(std::time::Duration::from_secs(10), || async {
        let delivered = delivered_seqs(&receiver);
        second_life.iter().all(|event| delivered.contains(event))
    })
    .await;
    assert!(
        all_arrived,
        "every event of the second life, from seq 1, reached the webhook: delivered {:?}, logged {second_life:?}",
        delivered_seqs(&receiver)
    );
    assert!(first_life.iter().all(|event| !second_life.contains(event)));
}
