//! Events end to end (contract: `events.md`): what happens at "WhatsApp" (the simulator)
//! becomes events in the session's log, with the contract's envelope and `data`, delivered
//! by pull, by server-sent events and by signed webhooks to a real receiver on 127.0.0.1.

mod common;

use common::receiver::{Answer, Receiver};
use common::sim::Sim;
use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;

const ME: &str = "6285500000001";
const WAIT: Duration = Duration::from_secs(30);

fn user(phone: &str) -> String {
    format!("{phone}@s.whatsapp.net")
}

async fn setup() -> (Sim, TestServer) {
    setup_with(&[]).await
}

/// [`setup`] with these environment settings for the server.
async fn setup_with(env: &[(&str, &str)]) -> (Sim, TestServer) {
    let sim = Sim::start().await;
    let mut builder = TestServer::builder().whatsapp_url(sim.url());
    for (key, value) in env {
        builder = builder.env(key, *value);
    }
    let server = builder.start().await;
    sim.pair_by_qr(&server, "a", ME, "a").await;
    (sim, server)
}

/// Every event of session `a`, pulled page by page.
async fn all_events(server: &TestServer, id: &str) -> Vec<Value> {
    let api = server.api();
    let mut after = 0u64;
    let mut out = Vec::new();
    loop {
        let page = api
            .get(&format!("/sessions/{id}/events?after={after}&limit=1000"))
            .await
            .expect(200);
        let events = page["events"].as_array().unwrap().clone();
        if events.is_empty() {
            assert_eq!(page["next_after"], after);
            return out;
        }
        after = page["next_after"].as_u64().unwrap();
        assert_eq!(events.last().unwrap()["seq"], after);
        out.extend(events);
    }
}

/// Waits until the log holds an event of `kind` matching `pred`; returns it.
async fn event_where(server: &TestServer, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
    event_of(server, "a", kind, pred).await
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

fn assert_gapless(events: &[Value]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1, "seq without gaps: {events:#?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_text_from_a_phone_is_one_event_with_the_contract_shape() {
    let (sim, server) = setup().await;
    let b = sim.user("6285500000002").await;
    let sent = sim
        .post_ok(
            "/accounts/6285500000002/send",
            json!({"to": user(ME), "text": "hello from b"}),
        )
        .await;
    let id = sent["id"].as_str().unwrap().to_string();
    let event = event_where(&server, "message.received", |d| d["message_id"] == id).await;
    assert_eq!(
        keys(&event),
        ["data", "id", "occurred_at", "seq", "session", "type"]
    );
    assert!(event["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(event["session"], "a");
    assert!(event["occurred_at"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(
        event["data"],
        json!({
            "message_id": id, "chat": b, "sender": b, "push_name": "6285500000002",
            "is_group": false, "from_me": false, "kind": "text", "text": "hello from b",
            "quoted_id": null, "offline": false,
        })
    );
    let events = all_events(&server, "a").await;
    assert_gapless(&events);
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "message.received")
            .count(),
        1,
        "one event per message"
    );
    // The session's own way to logged_in is in the log too.
    let statuses: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "session.status")
        .map(|e| &e["data"])
        .collect();
    assert!(
        statuses
            .iter()
            .any(|d| d["status"] == "logged_in" && d["reason"].is_null()),
        "{statuses:#?}"
    );
    // A type filter returns only that type; the page cursor moves past what it skipped.
    let only = server
        .api()
        .get("/sessions/a/events?types=message.received")
        .await
        .expect(200);
    assert_eq!(only["events"].as_array().unwrap().len(), 1);
    assert_eq!(only["next_after"], only["events"][0]["seq"]);
}

/// Waits until session `id`'s log holds an event of `kind` matching `pred`; returns it.
async fn event_of(
    server: &TestServer,
    id: &str,
    kind: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let found = wait_for(WAIT, || async {
        all_events(server, id)
            .await
            .into_iter()
            .find(|e| e["type"] == kind && pred(&e["data"]))
    })
    .await;
    match found {
        Some(e) => e,
        None => panic!(
            "no {kind} event matched in {id}'s log: {:#?}\n{}",
            all_events(server, id).await,
            server.output()
        ),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn what_other_members_do_to_a_group_is_an_event() {
    // Two sessions of one wagate are two WhatsApp accounts: what `b` does to a group, WhatsApp
    // tells `a`.
    let sim = Sim::start().await;
    let server = TestServer::builder()
        .whatsapp_url(sim.url())
        .env("RUST_LOG", "info,wagate_actors::session=debug")
        .start()
        .await;
    sim.pair_by_qr(&server, "a", ME, "a").await;
    sim.pair_by_qr(&server, "b", "6285500000002", "b").await;
    let api = server.api();
    let me = user(ME);
    let b = user("6285500000002");
    let c = sim.user("6285500000003").await;
    let put = |path: String, body: Value| {
        let api = server.api();
        async move {
            api.put_json(&path, &body).await.expect(200);
        }
    };
    let delete = |path: String, body: Value| {
        let api = server.api();
        async move {
            api.delete_json(&path, &body).await.expect(200);
        }
    };
    let gid = api
        .post_json(
            "/sessions/a/groups",
            &json!({"name": "Events", "participants": [b]}),
        )
        .await
        .expect(200)["group_jid"]
        .as_str()
        .unwrap()
        .to_string();
    api.post_json(
        &format!("/sessions/a/groups/{gid}/admins"),
        &json!({"participants": [b]}),
    )
    .await
    .expect(200);
    // b learns it was promoted, by a.
    let promoted = event_of(&server, "b", "group.participants", |d| {
        d["action"] == "promoted"
    })
    .await;
    assert_eq!(
        promoted["data"],
        json!({"group": gid, "action": "promoted", "participants": [b], "by": me})
    );

    let group = |rest: &str| format!("/sessions/b/groups/{gid}{rest}");
    put(group("/subject"), json!({"subject": "Renamed"})).await;
    let renamed = event_of(&server, "a", "group.updated", |d| {
        d["changes"].get("name").is_some()
    })
    .await;
    assert_eq!(
        renamed["data"],
        json!({"group": gid, "by": b, "changes": {"name": "Renamed"}})
    );
    put(group("/description"), json!({"description": "about us"})).await;
    event_of(&server, "a", "group.updated", |d| {
        d["changes"] == json!({"topic": "about us"})
    })
    .await;
    put(group("/settings"), json!({"announce": true})).await;
    event_of(&server, "a", "group.updated", |d| {
        d["changes"] == json!({"announce": true})
    })
    .await;
    put(group("/settings"), json!({"locked": true})).await;
    event_of(&server, "a", "group.updated", |d| {
        d["changes"] == json!({"locked": true})
    })
    .await;

    server
        .api()
        .post_json(&group("/participants"), &json!({"participants": [c]}))
        .await
        .expect(200);
    let added = event_of(&server, "a", "group.participants", |d| {
        d["action"] == "added"
    })
    .await;
    assert_eq!(
        added["data"],
        json!({"group": gid, "action": "added", "participants": [c], "by": b})
    );
    server
        .api()
        .post_json(&group("/admins"), &json!({"participants": [c]}))
        .await
        .expect(200);
    event_of(&server, "a", "group.participants", |d| {
        d["action"] == "promoted" && d["participants"] == json!([c])
    })
    .await;
    delete(group("/admins"), json!({"participants": [c]})).await;
    event_of(&server, "a", "group.participants", |d| {
        d["action"] == "demoted"
    })
    .await;
    delete(group("/participants"), json!({"participants": [c]})).await;
    event_of(&server, "a", "group.participants", |d| {
        d["action"] == "removed"
    })
    .await;

    // This account put in a group, removed and added back: its own events, naming the group.
    let second = server
        .api()
        .post_json(
            "/sessions/b/groups",
            &json!({"name": "Second", "participants": [me]}),
        )
        .await
        .expect(200)["group_jid"]
        .as_str()
        .unwrap()
        .to_string();
    let joined = event_of(&server, "a", "group.joined", |d| d["group"] == second).await;
    assert_eq!(joined["data"], json!({"group": second, "name": "Second"}));
    let other = |rest: &str| format!("/sessions/b/groups/{second}{rest}");
    delete(other("/participants"), json!({"participants": [me]})).await;
    let left = event_of(&server, "a", "group.left", |d| d["group"] == second).await;
    assert_eq!(left["data"], json!({"group": second, "name": "Second"}));
    server
        .api()
        .post_json(&other("/participants"), &json!({"participants": [me]}))
        .await
        .expect(200);
    let back = wait_until(WAIT, || async {
        all_events(&server, "a")
            .await
            .iter()
            .filter(|e| e["type"] == "group.joined" && e["data"]["group"] == second)
            .count()
            == 2
    })
    .await;
    assert!(back, "joined again: {:#?}", all_events(&server, "a").await);

    // b leaves, then comes back through an invite link: "left" and "joined", by b itself.
    server.api().post(&group("/leave")).await.expect(200);
    event_of(&server, "a", "group.participants", |d| {
        d["action"] == "left" && d["participants"] == json!([b]) && d["by"] == b
    })
    .await;
    let link = api
        .get(&format!("/sessions/a/groups/{gid}/invite-link"))
        .await
        .expect(200)["invite_link"]
        .as_str()
        .unwrap()
        .to_string();
    server
        .api()
        .post_json("/sessions/b/groups/join", &json!({"code": link}))
        .await
        .expect(200);
    event_of(&server, "a", "group.participants", |d| {
        d["action"] == "joined" && d["participants"] == json!([b])
    })
    .await;

    // The cache followed the same notifications: no query needed to see b's subject.
    let info = api
        .get(&format!("/sessions/a/groups/{gid}"))
        .await
        .expect(200);
    assert_eq!(info["name"], "Renamed");
    for id in ["a", "b"] {
        assert_gapless(&all_events(&server, id).await);
    }
}

/// Opens a server-sent event stream at `path` (under the server's base URL) with the API
/// token, and checks that it opened.
async fn open_stream(server: &TestServer, path: &str) -> reqwest::Response {
    let response = server
        .client()
        .get(server.url(path))
        .bearer_auth(server.api_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
}

/// Reads SSE frames (`id`, `event`, `data`) until `count` events arrived.
async fn sse_events(
    response: reqwest::Response,
    count: usize,
) -> (Vec<(u64, String, Value)>, impl futures_util::Stream) {
    sse_until(response, move |events| events.len() >= count).await
}

/// Reads server-sent events until `done` holds for those read so far.
async fn sse_until(
    response: reqwest::Response,
    done: impl Fn(&[(u64, String, Value)]) -> bool,
) -> (Vec<(u64, String, Value)>, impl futures_util::Stream) {
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut out = Vec::new();
    while !done(&out) {
        let chunk = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("an SSE chunk in time")
            .expect("the stream stays open")
            .expect("a readable chunk");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let mut id = None;
            let mut kind = String::new();
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse::<u64>().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if let Some(id) = id {
                out.push((
                    id,
                    kind,
                    serde_json::from_str(&data).expect("SSE data is JSON"),
                ));
            }
        }
    }
    (out, stream)
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_replays_the_log_then_goes_live_and_resumes_with_last_event_id() {
    let (sim, server) = setup().await;
    sim.user("6285500000002").await;
    let send = |text: &'static str| {
        let sim = &sim;
        async move {
            sim.post_ok(
                "/accounts/6285500000002/send",
                json!({"to": user(ME), "text": text}),
            )
            .await["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let first = send("one").await;
    event_where(&server, "message.received", |d| d["message_id"] == first).await;
    let logged = all_events(&server, "a").await;
    let head = logged.len();

    let stream_url = server.url("/api/v1/sessions/a/events/stream");
    let response = server
        .client()
        .get(&stream_url)
        .bearer_auth(server.api_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let (replayed, live_stream) = sse_events(response, head).await;
    let seqs: Vec<u64> = replayed.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(seqs, (1..=head as u64).collect::<Vec<_>>());
    for ((id, kind, envelope), pulled) in replayed.iter().zip(&logged) {
        assert_eq!(
            envelope, pulled,
            "the same envelope through both transports"
        );
        assert_eq!(envelope["seq"], *id);
        assert_eq!(envelope["type"], kind.as_str());
    }
    drop(live_stream);

    // Resume after the second-to-last: exactly the missing events, then live ones.
    let resume_from = head as u64 - 1;
    let response = server
        .client()
        .get(&stream_url)
        .bearer_auth(server.api_token())
        .header("Last-Event-ID", resume_from.to_string())
        .send()
        .await
        .unwrap();
    let second = tokio::spawn(async move { sse_events(response, 2).await.0 });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let live = send("two").await;
    let got = second.await.unwrap();
    assert_eq!(got[0].0, head as u64);
    assert_eq!(got[1].0, head as u64 + 1, "no gap, no duplicate: {got:?}");
    let live_event = all_events(&server, "a")
        .await
        .into_iter()
        .find(|e| e["data"]["message_id"] == live)
        .expect("the live message is in the log");
    assert_eq!(got[1].2, live_event);

    // A Last-Event-ID that is not a seq is a client error in the contract's shape.
    let bad = server
        .api()
        .send(
            server
                .api()
                .request(reqwest::Method::GET, "/sessions/a/events/stream")
                .header("Last-Event-ID", "x"),
        )
        .await;
    bad.expect_error(400, "validation");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stream_of_every_session_carries_only_new_events_each_naming_its_session() {
    let (sim, server) = setup().await;
    sim.user("6285500000002").await;
    let api = server.api();
    api.post_json("/sessions", &json!({"id": "b"}))
        .await
        .expect(201);
    let status_of_b = || async { api.get("/sessions/b").await.json()["status"].clone() };
    assert!(
        wait_until(WAIT, || async { status_of_b().await == "waiting_for_qr" }).await,
        "b waits for its QR"
    );
    let heads: Vec<u64> = {
        let mut heads = Vec::new();
        for id in ["a", "b"] {
            heads.push(all_events(&server, id).await.len() as u64);
        }
        heads
    };

    let response = open_stream(
        &server,
        "/api/v1/events/stream?types=message.received,session.status",
    )
    .await;
    let reader = tokio::spawn(async move { sse_events(response, 2).await.0 });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = sim
        .post_ok(
            "/accounts/6285500000002/send",
            json!({"to": user(ME), "text": "to a"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    event_where(&server, "message.received", |d| d["message_id"] == sent).await;
    api.post("/sessions/b/disconnect").await.expect(200);
    let got = tokio::time::timeout(WAIT, reader)
        .await
        .expect("both events in time")
        .unwrap();

    let of = |session: &str| {
        got.iter()
            .find(|(_, _, e)| e["session"] == session)
            .cloned()
    };
    let (seq_a, kind_a, event_a) = of("a").expect("a's event");
    assert_eq!(kind_a, "message.received");
    assert_eq!(event_a["data"]["message_id"], sent.as_str());
    assert!(seq_a > heads[0], "nothing from before the stream opened");
    let (seq_b, kind_b, event_b) = of("b").expect("b's event");
    assert_eq!(kind_b, "session.status");
    assert_eq!(event_b["data"]["status"], "disconnected");
    assert!(seq_b > heads[1], "nothing from before the stream opened");
    // The same envelopes as each session's own log.
    let logged_a = all_events(&server, "a").await;
    assert_eq!(logged_a[seq_a as usize - 1], event_a);

    // Input errors, in the contract's shape.
    api.get("/events/stream?sessions=nope")
        .await
        .expect_error(404, "session_not_found");
    api.get("/events/stream?sessions=bad%20id")
        .await
        .expect_error(400, "invalid_session_id");
    api.get("/events/stream?types=message.nope")
        .await
        .expect_error(400, "validation");
    server
        .anon()
        .get("/events/stream")
        .await
        .expect_error(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stream_of_every_session_follows_a_session_created_while_it_is_open_from_its_first_event()
 {
    let (_sim, server) = setup().await;
    let api = server.api();
    let response = open_stream(&server, "/api/v1/events/stream?types=session.status").await;
    let reader = tokio::spawn(async move {
        sse_until(response, |events| {
            events
                .iter()
                .any(|(_, _, e)| e["session"] == "c" && e["data"]["status"] == "waiting_for_qr")
        })
        .await
        .0
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.post_json("/sessions", &json!({"id": "c"}))
        .await
        .expect(201);
    let got = tokio::time::timeout(WAIT, reader)
        .await
        .expect("c's events in time")
        .unwrap();

    // Everything c logged up to then, in order, from its first event, and nothing twice.
    let of_c: Vec<Value> = got
        .iter()
        .filter(|(_, _, e)| e["session"] == "c")
        .map(|(_, _, e)| e.clone())
        .collect();
    assert_eq!(of_c[0]["seq"], 1, "from c's first event: {of_c:?}");
    let logged: Vec<Value> = all_events(&server, "c")
        .await
        .into_iter()
        .filter(|e| e["type"] == "session.status")
        .collect();
    assert_eq!(of_c, logged[..of_c.len()].to_vec());
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_are_signed_ordered_retried_and_replayable() {
    let (sim, server) = setup().await;
    sim.user("6285500000002").await;
    let receiver = Receiver::start().await;
    // The receiver fails first: a 500, then a 429 asking for a second, then accepts.
    receiver.script([Answer::Status(500), Answer::RetryAfter(1)]);
    let api = server.api();
    let created = api
        .post_json(
            "/webhooks",
            &json!({"url": receiver.url("/hook"), "events": ["message.received"], "sessions": ["a"]}),
        )
        .await
        .expect(201);
    assert_eq!(
        keys(&created),
        ["created_at", "events", "id", "secret", "sessions", "url"]
    );
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let hook = created["id"].as_str().unwrap().to_string();

    let mut ids = Vec::new();
    for i in 0..5 {
        let sent = sim
            .post_ok(
                "/accounts/6285500000002/send",
                json!({"to": user(ME), "text": format!("m{i}")}),
            )
            .await;
        ids.push(sent["id"].as_str().unwrap().to_string());
    }
    let all_arrived = wait_until(WAIT, || async {
        let got: Vec<String> = receiver
            .accepted()
            .iter()
            .map(|d| {
                d.json()["data"]["message_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        ids.iter().all(|id| got.contains(id))
    })
    .await;
    assert!(
        all_arrived,
        "{:#?}\n{}",
        receiver.received(),
        server.output()
    );

    let verifier = standardwebhooks::Webhook::new(&secret).expect("a valid secret");
    let received = receiver.received();
    assert!(received.len() >= 7, "two failed attempts were retried");
    let mut last_seq = 0;
    for delivery in &received {
        verifier
            .verify(&delivery.body, &delivery.headers)
            .expect("every delivery is signed");
        let envelope = delivery.json();
        assert_eq!(delivery.header("webhook-id"), envelope["id"]);
        assert_eq!(delivery.header("content-type"), "application/json");
        assert_eq!(envelope["type"], "message.received");
        let seq = envelope["seq"].as_u64().unwrap();
        assert!(seq >= last_seq, "in seq order: {seq} after {last_seq}");
        last_seq = seq;
    }
    // Retries resend the same event with the same id.
    assert_eq!(
        received[0].header("webhook-id"),
        received[1].header("webhook-id")
    );
    assert_eq!(
        received[1].header("webhook-id"),
        received[2].header("webhook-id")
    );
    let accepted_ids: Vec<String> = receiver
        .accepted()
        .iter()
        .map(|d| d.header("webhook-id"))
        .collect();
    let mut unique = accepted_ids.clone();
    unique.dedup();
    assert_eq!(unique, accepted_ids, "no duplicate without a crash");

    // The webhook shows its delivery state, never its secret.
    let view = wait_for(WAIT, || async {
        let v = api.get(&format!("/webhooks/{hook}")).await.expect(200);
        (v["deliveries"][0]["pending"] == 0).then_some(v)
    })
    .await
    .expect("nothing pending");
    assert!(view.get("secret").is_none());
    assert_eq!(view["deliveries"][0]["session"], "a");
    assert_eq!(view["deliveries"][0]["delivered_seq"], last_seq);
    assert!(view["deliveries"][0]["last_error"].is_null());
    // An update restarts delivery where it stood, and its answer says where that is.
    let updated = api
        .put_json(
            &format!("/webhooks/{hook}"),
            &json!({"events": ["message.received"]}),
        )
        .await
        .expect(200);
    assert_eq!(updated["deliveries"][0]["delivered_seq"], last_seq);
    assert_eq!(updated["deliveries"][0]["pending"], 0);
    let listed = api.get("/webhooks").await.expect(200);
    assert_eq!(listed["webhooks"][0]["id"], hook);
    assert!(!listed.to_string().contains(&secret));

    // Replay from the start redelivers the same events with the same ids.
    let before = receiver.accepted().len();
    api.post_json(
        &format!("/webhooks/{hook}/replay"),
        &json!({"session": "a", "after": 0}),
    )
    .await
    .expect(200);
    let replayed = wait_until(WAIT, || async { receiver.accepted().len() >= before + 5 }).await;
    assert!(replayed);
    let again: Vec<String> = receiver.accepted()[before..before + 5]
        .iter()
        .map(|d| d.header("webhook-id"))
        .collect();
    assert_eq!(again, accepted_ids[..5]);

    // Deleting stops delivery.
    api.delete(&format!("/webhooks/{hook}")).await.expect(200);
    api.get(&format!("/webhooks/{hook}"))
        .await
        .expect_error(404, "not_found");
    let count = receiver.received().len();
    sim.post_ok(
        "/accounts/6285500000002/send",
        json!({"to": user(ME), "text": "after delete"}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.received().len(), count);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_webhook_holds_up_no_other_webhook() {
    // One delivery in flight at a time: per webhook, so the slow one's takes none of the other's.
    let (sim, server) = setup_with(&[("WAGATE_WEBHOOKS_MAX_IN_FLIGHT", "1")]).await;
    sim.user("6285500000002").await;
    let slow = Receiver::start().await;
    slow.answer_by_default(Answer::Slow(Duration::from_secs(8)));
    let fast = Receiver::start().await;
    let api = server.api();
    for receiver in [&slow, &fast] {
        api.post_json(
            "/webhooks",
            &json!({"url": receiver.url("/"), "events": ["message.received"]}),
        )
        .await
        .expect(201);
    }
    for i in 0..3 {
        sim.post_ok(
            "/accounts/6285500000002/send",
            json!({"to": user(ME), "text": format!("x{i}")}),
        )
        .await;
    }
    let fast_done = wait_until(Duration::from_secs(6), || async {
        fast.accepted().len() >= 3
    })
    .await;
    assert!(
        fast_done,
        "the fast receiver got everything while the slow one stalled"
    );
    assert!(slow.accepted().len() <= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_session_slow_at_a_webhook_holds_up_no_other_session() {
    let (sim, server) = setup().await;
    sim.pair_by_qr(&server, "b", "6285500000002", "b").await;
    sim.user("6285500000003").await;
    let receiver = Receiver::start().await;
    // The receiver takes 8 s for anything of session a, and answers b's at once.
    receiver.answer_by_default(Answer::SlowWhen(
        "\"session\":\"a\"".into(),
        Duration::from_secs(8),
    ));
    server
        .api()
        .post_json(
            "/webhooks",
            &json!({"url": receiver.url("/"), "events": ["message.received"]}),
        )
        .await
        .expect(201);
    for i in 0..3 {
        for to in [ME, "6285500000002"] {
            sim.post_ok(
                "/accounts/6285500000003/send",
                json!({"to": user(to), "text": format!("y{i}")}),
            )
            .await;
        }
    }
    let b_done = wait_until(Duration::from_secs(6), || async {
        receiver
            .accepted()
            .iter()
            .filter(|d| d.json()["session"] == "b")
            .count()
            >= 3
    })
    .await;
    assert!(b_done, "session b's events arrived while a's were slow");
    assert!(
        receiver
            .accepted()
            .iter()
            .filter(|d| d.json()["session"] == "a")
            .count()
            <= 1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_event_log_loses_nothing_and_never_numbers_twice() {
    let (sim, server) = setup().await;
    sim.user("6285500000002").await;
    let mut ids = Vec::new();
    for k in 0..12 {
        if k == 4 || k == 8 {
            let restarts = k / 4 - 1;
            let running = wait_until(WAIT, || async {
                server
                    .tree_node("session:a/events")
                    .await
                    .is_some_and(|n| n["status"] == "running" && n["restarts"] == restarts)
            })
            .await;
            assert!(running, "the log is running before crash {}", restarts + 1);
            server.crash("session:a/events").await.expect(202);
        }
        ids.push(
            sim.post_ok(
                "/accounts/6285500000002/send",
                json!({"to": user(ME), "text": format!("c{k}")}),
            )
            .await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let all = wait_for(WAIT, || async {
        let events = all_events(&server, "a").await;
        let got: Vec<String> = events
            .iter()
            .filter(|e| e["type"] == "message.received")
            .map(|e| e["data"]["message_id"].as_str().unwrap().to_owned())
            .collect();
        ids.iter()
            .all(|id| got.contains(id))
            .then_some((events, got))
    })
    .await;
    let (events, got) =
        all.unwrap_or_else(|| panic!("not every message logged\n{}", server.output()));
    assert_gapless(&events);
    assert_eq!(got.len(), ids.len(), "each message once: {got:?}");
    let node = server.tree_node("session:a/events").await.unwrap();
    assert_eq!(node["restarts"], 2, "{node}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_text_sent_from_the_phone_itself_is_message_sent() {
    let (sim, server) = setup().await;
    let b = sim.user("6285500000002").await;
    // The account's own phone (device 0) writes to b; wagate, a linked device, gets a copy.
    let sent = sim
        .post_ok(
            &format!("/accounts/{ME}/send"),
            json!({"to": b, "text": "sent from my phone"}),
        )
        .await;
    let id = sent["id"].as_str().unwrap().to_string();
    let event = event_where(&server, "message.sent", |d| d["message_id"] == id).await;
    let data = &event["data"];
    assert_eq!(data["from_me"], true);
    assert_eq!(data["chat"], b.as_str());
    assert_eq!(data["sender"], user(ME));
    assert_eq!(data["kind"], "text");
    assert_eq!(data["text"], "sent from my phone");
    assert!(
        all_events(&server, "a")
            .await
            .iter()
            .all(|e| e["type"] != "message.received"),
        "not a received message"
    );

    // A text sent through wagate is acknowledged by the server: its first message.ack.
    let via_api = server
        .api()
        .post_json(
            "/sessions/a/messages/text",
            &json!({"to": b, "text": "through the API"}),
        )
        .await
        .expect(200);
    let message_id = via_api["message_id"].as_str().unwrap().to_string();
    let ack = event_where(&server, "message.ack", |d| d["message_id"] == message_id).await;
    assert_eq!(
        ack["data"],
        json!({"message_id": message_id, "chat": b, "status": "server", "by": "s.whatsapp.net"})
    );
    // The round-trip is measured by operation and outcome.
    let metrics = server
        .root(Some(server.admin_token()))
        .get("/metrics")
        .await
        .text();
    assert!(
        metrics.contains(r#"wagate_whatsapp_calls_total{operation="send_message",outcome="ok"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"wagate_whatsapp_call_duration_seconds_count{operation="send_message"} 1"#)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_message_kind_arrives_with_its_metadata() {
    let (sim, server) = setup().await;
    let b = sim.user("6285500000002").await;
    let send = |body: Value| {
        let sim = &sim;
        async move {
            let mut body = body;
            body["to"] = json!(user(ME));
            sim.post_ok("/accounts/6285500000002/send", body).await["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let first = send(json!({"text": "look at this"})).await;
    let quoted = send(json!({"text": "replying", "quoted_id": first})).await;
    let image = send(
        json!({"kind": "image", "mimetype": "image/jpeg", "size": 2048, "caption": "a photo"}),
    )
    .await;
    let document = send(json!({"kind": "document", "mimetype": "application/pdf", "size": 99, "file_name": "offer.pdf"})).await;
    let location =
        send(json!({"kind": "location", "latitude": -6.2, "longitude": 106.8, "name": "Jakarta"}))
            .await;
    let contact = send(json!({"kind": "contact", "display_name": "Cee", "vcard": "BEGIN:VCARD\nFN:Cee\nEND:VCARD"})).await;
    let reaction = send(json!({"kind": "reaction", "message_id": first, "emoji": "👍"})).await;
    let sticker = send(json!({"kind": "sticker"})).await;

    let data = |id: String| {
        let server = &server;
        async move {
            event_where(server, "message.received", |d| d["message_id"] == id).await["data"].clone()
        }
    };
    let d = data(quoted).await;
    assert_eq!(
        (d["kind"].as_str(), d["quoted_id"].as_str()),
        (Some("text"), Some(first.as_str()))
    );
    assert_eq!(d["text"], "replying");
    let d = data(image).await;
    assert_eq!(d["kind"], "image");
    assert_eq!(d["text"], Value::Null);
    assert_eq!(
        d["media"],
        json!({"mimetype": "image/jpeg", "size": 2048, "caption": "a photo"})
    );
    let d = data(document).await;
    assert_eq!(d["kind"], "document");
    assert_eq!(d["media"]["file_name"], "offer.pdf");
    assert_eq!(d["media"]["mimetype"], "application/pdf");
    let d = data(location).await;
    assert_eq!(d["kind"], "location");
    assert_eq!(
        d["location"],
        json!({"latitude": -6.2, "longitude": 106.8, "name": "Jakarta"})
    );
    let d = data(contact).await;
    assert_eq!(d["kind"], "contact");
    assert_eq!(d["contact"]["display_name"], "Cee");
    let d = data(reaction).await;
    assert_eq!(d["kind"], "reaction");
    assert_eq!(d["reaction"], json!({"message_id": first, "emoji": "👍"}));
    assert_eq!(d["sender"], b.as_str());
    let d = data(sticker).await;
    assert_eq!(d["kind"], "sticker");
    assert!(d["media"]["mimetype"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn receipts_and_join_requests_are_events() {
    let (sim, server) = setup().await;
    let api = server.api();
    let b = sim.user("6285500000002").await;
    let c = sim.user("6285500000003").await;
    let sent = api
        .post_json(
            "/sessions/a/messages/text",
            &json!({"to": b, "text": "did you get it?"}),
        )
        .await
        .expect(200)["message_id"]
        .as_str()
        .unwrap()
        .to_string();
    for status in ["delivered", "read"] {
        sim.post_ok(
            "/accounts/6285500000002/receipts",
            json!({"to": ME, "ids": [sent], "type": status}),
        )
        .await;
        let ack = event_where(&server, "message.ack", |d| {
            d["message_id"] == sent && d["status"] == status
        })
        .await;
        assert_eq!(
            ack["data"],
            json!({"message_id": sent, "chat": b, "status": status, "by": b})
        );
    }
    let statuses: Vec<String> = all_events(&server, "a")
        .await
        .iter()
        .filter(|e| e["type"] == "message.ack" && e["data"]["message_id"] == sent)
        .map(|e| e["data"]["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["server", "delivered", "read"]);

    let gid = api
        .post_json(
            "/sessions/a/groups",
            &json!({"name": "Ask first", "participants": [b]}),
        )
        .await
        .expect(200)["group_jid"]
        .as_str()
        .unwrap()
        .to_string();
    sim.post_ok(
        &format!("/groups/{gid}/join-requests"),
        json!({"phone_number": "6285500000003"}),
    )
    .await;
    let asked = event_where(&server, "group.join_request", |d| d["action"] == "created").await;
    assert_eq!(
        asked["data"],
        json!({"group": gid, "requester": c, "action": "created"})
    );
    let (status, _) = sim
        .call(
            reqwest::Method::DELETE,
            &format!("/groups/{gid}/join-requests/6285500000003"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let withdrawn = event_where(&server, "group.join_request", |d| d["action"] == "revoked").await;
    assert_eq!(
        withdrawn["data"],
        json!({"group": gid, "requester": c, "action": "revoked"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_sent_while_disconnected_arrive_after_reconnect() {
    let (sim, server) = setup().await;
    sim.user("6285500000002").await;
    let api = server.api();
    api.post("/sessions/a/disconnect").await.expect(200);
    let gone = wait_until(WAIT, || async {
        server.session_status("a").await == "disconnected"
    })
    .await;
    assert!(gone);
    let mut ids = Vec::new();
    for text in ["while", "you", "were", "away"] {
        ids.push(
            sim.post_ok(
                "/accounts/6285500000002/send",
                json!({"to": user(ME), "text": text}),
            )
            .await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        all_events(&server, "a")
            .await
            .iter()
            .all(|e| e["type"] != "message.received"),
        "nothing arrives while disconnected"
    );
    api.post("/sessions/a/connect").await.expect(200);
    let arrived = wait_for(WAIT, || async {
        let got: Vec<Value> = all_events(&server, "a")
            .await
            .into_iter()
            .filter(|e| e["type"] == "message.received")
            .collect();
        (got.len() == ids.len()).then_some(got)
    })
    .await
    .expect("the offline messages arrive");
    let order: Vec<&str> = arrived
        .iter()
        .map(|e| e["data"]["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(arrived.iter().all(|e| e["data"]["offline"] == true));
    assert_eq!(arrived[3]["data"]["text"], "away");
}

/// The linked device wagate runs for `phone`, as the simulator numbers it.
async fn companion_device(sim: &Sim, phone: &str) -> u64 {
    let account = sim.get_ok(&format!("/accounts/{phone}")).await;
    account["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"].as_u64().unwrap())
        .find(|d| *d != 0)
        .expect("a linked device")
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_while_phones_send_and_webhooks_deliver_loses_nothing_acknowledged() {
    let (sim, mut server) = setup().await;
    sim.user("6285500000002").await;
    let receiver = Receiver::start().await;
    let created = server
        .api()
        .post_json(
            "/webhooks",
            &json!({"url": receiver.url("/hook"), "events": ["message.received"]}),
        )
        .await
        .expect(201);
    let secret = created["secret"].as_str().unwrap().to_string();
    let device = companion_device(&sim, ME).await;
    let sim = std::sync::Arc::new(sim);
    let mut sent: Vec<String> = Vec::new();
    for trial in 0..3u64 {
        // A phone keeps sending while wagate is killed and started again.
        let sender = {
            let sim = sim.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for k in 0..40 {
                    let (status, reply) = sim
                        .post(
                            "/accounts/6285500000002/send",
                            json!({"to": user(ME), "text": format!("t{trial}-{k}")}),
                        )
                        .await;
                    if status == 200 {
                        ids.push(reply["id"].as_str().unwrap().to_string());
                    }
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
                ids
            })
        };
        tokio::time::sleep(Duration::from_millis(150 + 170 * trial)).await;
        server.kill9();
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.start_again().await;
        sent.extend(sender.await.unwrap());
        let back = wait_until(Duration::from_secs(60), || async {
            server.session_status("a").await == "logged_in"
        })
        .await;
        assert!(
            back,
            "logged in again after kill -9 #{trial}\n{}",
            server.output()
        );
    }

    // Once connected, WhatsApp delivers what was not acknowledged; then it has them all.
    let messages = format!("/accounts/{ME}/devices/{device}/messages");
    let settled = wait_for(Duration::from_secs(60), || async {
        let state = sim.get_ok(&messages).await;
        state["unacked"]
            .as_array()
            .unwrap()
            .is_empty()
            .then_some(state)
    })
    .await
    .expect("WhatsApp saw every message acknowledged in the end");
    // The phone's texts among everything the device acknowledged (key shares and other
    // protocol messages are acknowledged too, and are not events).
    let acked: Vec<String> = settled["acked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .filter(|id| sent.contains(id))
        .collect();
    for id in &sent {
        assert!(acked.contains(id), "{id} was sent but never acknowledged");
    }

    // The log has each acknowledged message exactly once, without gaps.
    let events = all_events(&server, "a").await;
    assert_gapless(&events);
    let mut logged: std::collections::HashMap<String, (u64, String)> = Default::default();
    for e in events.iter().filter(|e| e["type"] == "message.received") {
        let id = e["data"]["message_id"].as_str().unwrap().to_owned();
        let previous = logged.insert(
            id.clone(),
            (
                e["seq"].as_u64().unwrap(),
                e["id"].as_str().unwrap().to_owned(),
            ),
        );
        assert!(previous.is_none(), "{id} logged twice");
    }
    for id in &acked {
        assert!(
            logged.contains_key(id),
            "acknowledged {id} is not in the log"
        );
    }

    // The receiver got every one, each always under the same event id, first time in order.
    let all_in = wait_until(Duration::from_secs(60), || async {
        let got: std::collections::HashSet<String> = receiver
            .accepted()
            .iter()
            .map(|d| {
                d.json()["data"]["message_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        acked.iter().all(|id| got.contains(id))
    })
    .await;
    assert!(all_in, "every acknowledged message reached the webhook");
    let verifier = standardwebhooks::Webhook::new(&secret).unwrap();
    let mut first_seen = std::collections::HashSet::new();
    let mut last_new_seq = 0;
    for d in receiver.accepted() {
        verifier.verify(&d.body, &d.headers).expect("signed");
        let envelope = d.json();
        let message_id = envelope["data"]["message_id"].as_str().unwrap().to_owned();
        let (seq, event_id) = &logged[&message_id];
        assert_eq!(
            envelope["id"],
            event_id.as_str(),
            "a stable id for {message_id}"
        );
        assert_eq!(envelope["seq"], *seq);
        if first_seen.insert(message_id) {
            assert!(*seq > last_new_seq, "new events arrive in seq order");
            last_new_seq = *seq;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_type_arrives_alike_through_pull_sse_and_webhooks() {
    let sim = Sim::start().await;
    let server = TestServer::builder().whatsapp_url(sim.url()).start().await;
    let receiver = Receiver::start().await;
    let api = server.api();
    let secret = api
        .post_json(
            "/webhooks",
            &json!({"url": receiver.url("/all"), "sessions": ["a"]}),
        )
        .await
        .expect(201)["secret"]
        .as_str()
        .unwrap()
        .to_string();
    // session.status: pairing a, and b as the other member.
    sim.pair_by_qr(&server, "a", ME, "a").await;
    sim.pair_by_qr(&server, "b", "6285500000002", "b").await;
    let me = user(ME);
    let b = user("6285500000002");
    sim.user("6285500000003").await;
    // message.received and message.sent
    sim.post_ok(
        "/accounts/6285500000002/send",
        json!({"to": me, "text": "hi a"}),
    )
    .await;
    sim.post_ok(
        &format!("/accounts/{ME}/send"),
        json!({"to": b, "text": "from a's phone"}),
    )
    .await;
    // message.ack: server, then delivered
    let sent = api
        .post_json(
            "/sessions/a/messages/text",
            &json!({"to": b, "text": "ack me"}),
        )
        .await
        .expect(200)["message_id"]
        .as_str()
        .unwrap()
        .to_string();
    sim.post_ok(
        "/accounts/6285500000002/receipts",
        json!({"to": ME, "ids": [sent], "type": "delivered"}),
    )
    .await;
    // group.joined, group.updated, group.participants, group.join_request, group.left: b acts.
    let gid = server
        .api()
        .post_json(
            "/sessions/b/groups",
            &json!({"name": "All types", "participants": [me]}),
        )
        .await
        .expect(200)["group_jid"]
        .as_str()
        .unwrap()
        .to_string();
    event_of(&server, "a", "group.joined", |d| d["group"] == gid).await;
    server
        .api()
        .put_json(
            &format!("/sessions/b/groups/{gid}/subject"),
            &json!({"subject": "Renamed"}),
        )
        .await
        .expect(200);
    server
        .api()
        .post_json(
            &format!("/sessions/b/groups/{gid}/admins"),
            &json!({"participants": [me]}),
        )
        .await
        .expect(200);
    event_of(&server, "a", "group.participants", |d| {
        d["action"] == "promoted"
    })
    .await;
    sim.post_ok(
        &format!("/groups/{gid}/join-requests"),
        json!({"phone_number": "6285500000003"}),
    )
    .await;
    event_of(&server, "a", "group.join_request", |d| d["group"] == gid).await;
    server
        .api()
        .delete_json(
            &format!("/sessions/b/groups/{gid}/participants"),
            &json!({"participants": [me]}),
        )
        .await
        .expect(200);
    event_of(&server, "a", "group.left", |d| d["group"] == gid).await;

    let pulled = all_events(&server, "a").await;
    let mut types: Vec<&str> = pulled.iter().map(|e| e["type"].as_str().unwrap()).collect();
    types.sort();
    types.dedup();
    assert_eq!(
        types,
        [
            "group.join_request",
            "group.joined",
            "group.left",
            "group.participants",
            "group.updated",
            "message.ack",
            "message.received",
            "message.sent",
            "session.status",
        ]
    );
    // SSE: the same envelopes, byte for byte as JSON values, in the same order.
    let response = open_stream(&server, "/api/v1/sessions/a/events/stream").await;
    let (streamed, _) = sse_events(response, pulled.len()).await;
    for ((seq, kind, envelope), pulled) in streamed.iter().zip(&pulled) {
        assert_eq!(envelope, pulled);
        assert_eq!(envelope["seq"], *seq);
        assert_eq!(envelope["type"], kind.as_str());
    }
    // Webhook: every one of them, signed, in order, with the same bytes.
    let all = wait_until(WAIT, || async { receiver.accepted().len() >= pulled.len() }).await;
    assert!(
        all,
        "{} of {} delivered",
        receiver.accepted().len(),
        pulled.len()
    );
    let verifier = standardwebhooks::Webhook::new(&secret).unwrap();
    for (delivery, pulled) in receiver.accepted().iter().zip(&pulled) {
        verifier.verify(&delivery.body, &delivery.headers).unwrap();
        assert_eq!(&delivery.json(), pulled);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_quotes_the_received_message_with_its_sender_and_text() {
    let (sim, server) = setup().await;
    let b = sim.user("6285500000002").await;
    let api = server.api();
    let asked = sim
        .post_ok(
            "/accounts/6285500000002/send",
            json!({"to": user(ME), "text": "which plan?"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    event_where(&server, "message.received", |d| d["message_id"] == asked).await;

    let reply = api
        .post_json(
            "/sessions/a/messages/text",
            &json!({"to": b, "text": "the big one", "quoted_id": asked}),
        )
        .await
        .expect(200);
    let reply_id = reply["message_id"].as_str().unwrap().to_string();
    let at_phone = wait_for(WAIT, || async {
        sim.get_ok("/accounts/6285500000002/messages")
            .await
            .as_array()?
            .iter()
            .find(|m| m["id"] == reply_id.as_str())
            .cloned()
    })
    .await
    .expect("B's phone got the reply");
    assert_eq!(at_phone["text"], "the big one");
    assert_eq!(
        at_phone["quoted"],
        json!({"id": asked, "participant": b, "text": "which plan?"}),
        "the reply quotes B's message as WhatsApp shows it"
    );

    // A text of spaces is still a text; a message the log does not hold cannot be quoted.
    api.post_json("/sessions/a/messages/text", &json!({"to": b, "text": " "}))
        .await
        .expect(200);
    api.post_json(
        "/sessions/a/messages/text",
        &json!({"to": b, "text": "x", "quoted_id": "3EB0000000000000"}),
    )
    .await
    .expect_error(404, "not_found");
    api.post_json(
        "/sessions/a/messages/text",
        &json!({"to": b, "text": "x", "quoted_id": ""}),
    )
    .await
    .expect_error(400, "validation");
}
