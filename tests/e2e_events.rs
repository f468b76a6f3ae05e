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
    let sim = Sim::start().await;
    let server = TestServer::builder().whatsapp_url(sim.url()).start().await;
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
    let found = wait_for(WAIT, || async {
        all_events(server, "a")
            .await
            .into_iter()
            .find(|e| e["type"] == kind && pred(&e["data"]))
    })
    .await;
    found.unwrap_or_else(|| {
        panic!(
            "no {kind} event matched; the log holds {:#?}\n{}",
            futures_util::FutureExt::now_or_never(all_events(server, "a")),
            server.output()
        )
    })
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
            api.send(api.request(reqwest::Method::PUT, &path).json(&body))
                .await
                .expect(200);
        }
    };
    let delete = |path: String, body: Value| {
        let api = server.api();
        async move {
            api.send(api.request(reqwest::Method::DELETE, &path).json(&body))
                .await
                .expect(200);
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

/// Reads SSE frames (`id`, `event`, `data`) until `count` events arrived.
async fn sse_events(
    response: reqwest::Response,
    count: usize,
) -> (Vec<(u64, String, Value)>, impl futures_util::Stream) {
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut out = Vec::new();
    while out.len() < count {
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
    let (sim, server) = setup().await;
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
}
