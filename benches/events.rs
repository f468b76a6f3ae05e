//! Event delivery benchmark against `wa-sim` and a local webhook receiver, 10 sessions:
//!
//! 1. Throughput: every session's contact phone sends texts as fast as the simulator takes
//!    them; events per second from the first send until the receiver holds every one.
//! 2. Latency when not backlogged: texts at a modest rate; the time from the phone's send to
//!    the webhook POST arriving, p50/p99.
//! 3. Catch-up: the receiver answers 503 while 10,000 events pile up, then comes back; the time
//!    until the backlog is delivered.
//!
//! Prints figures; asserts nothing about speed. Run:
//! `cargo bench --features test-server --bench events`. Everything binds and dials 127.0.0.1.

#[path = "../tests/common/mod.rs"]
mod common;

use common::receiver::{Answer, Receiver};
use common::sim::Sim;
use common::*;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SESSIONS: usize = 10;
/// Texts per session in the throughput phase.
const BURST: usize = 300;
/// Texts in flight per phone.
const IN_FLIGHT: usize = 8;
/// Latency phase: texts in all, and the pause between two.
const PACED: usize = 200;
const PACE: Duration = Duration::from_millis(20);
/// Catch-up phase: the backlog, over all sessions.
const BACKLOG: usize = 10_000;
const OVERALL: Duration = Duration::from_secs(1200);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn owner(i: usize) -> String {
    format!("62855100{i:05}")
}

fn contact(i: usize) -> String {
    format!("62855200{i:05}")
}

/// Sends `count` texts from each contact phone to its session's account, `IN_FLIGHT` at a
/// time per phone; returns each message id with when it was sent.
async fn burst(sim: &Arc<Sim>, count: usize, tag: &str) -> HashMap<String, Instant> {
    let mut tasks = Vec::new();
    for i in 0..SESSIONS {
        let sim = sim.clone();
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut sent = HashMap::new();
            let mut n = 0;
            while n < count {
                let batch: Vec<_> = (n..(n + IN_FLIGHT).min(count))
                    .map(|k| {
                        let sim = sim.clone();
                        let text = format!("{tag}-{i}-{k}");
                        async move {
                            let at = Instant::now();
                            let (status, reply) = sim
                                .post(
                                    &format!("/accounts/{}/send", contact(i)),
                                    json!({"to": format!("{}@s.whatsapp.net", owner(i)), "text": text}),
                                )
                                .await;
                            (status == 200)
                                .then(|| (reply["id"].as_str().unwrap_or("").to_owned(), at))
                        }
                    })
                    .collect();
                n += batch.len();
                for (id, at) in futures_util::future::join_all(batch).await.into_iter().flatten() {
                    sent.insert(id, at);
                }
            }
            sent
        }));
    }
    let mut all = HashMap::new();
    for task in tasks {
        all.extend(task.await.unwrap_or_default());
    }
    all
}

/// Waits until the receiver accepted every message id in `sent`; returns when the last
/// arrived, or `None` on timeout.
async fn delivered(
    receiver: &Receiver,
    sent: &HashMap<String, Instant>,
    limit: Duration,
) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        let accepted = receiver.accepted();
        let mut last = None;
        let mut missing = 0;
        let seen: HashMap<String, Instant> = accepted
            .iter()
            .map(|d| {
                (
                    d.json()["data"]["message_id"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                    d.at,
                )
            })
            .collect();
        for id in sent.keys() {
            match seen.get(id) {
                Some(at) => last = last.max(Some(*at)),
                None => missing += 1,
            }
        }
        if missing == 0 {
            return last;
        }
        if Instant::now() > deadline {
            println!("  timed out with {missing} of {} undelivered", sent.len());
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    tokio::spawn(async {
        tokio::time::sleep(OVERALL).await;
        eprintln!("events bench: overall time limit reached");
        std::process::exit(2);
    });
    let sim = Arc::new(Sim::start().await);
    let server = TestServer::builder()
        .whatsapp_url(sim.url())
        .env("WAGATE_WEBHOOKS_BACKOFF_MAX", "1s")
        .start()
        .await;
    for i in 0..SESSIONS {
        sim.pair_by_qr(&server, &format!("s{i}"), &owner(i), &format!("owner {i}"))
            .await;
        sim.user(&contact(i)).await;
    }
    let receiver = Receiver::start().await;
    server
        .api()
        .post_json(
            "/webhooks",
            &json!({"url": receiver.url("/hook"), "events": ["message.received"]}),
        )
        .await
        .expect(201);
    println!("events bench: {SESSIONS} sessions, one webhook, receiver on 127.0.0.1");

    // 1. Throughput.
    let started = Instant::now();
    let sent = burst(&sim, BURST, "burst").await;
    let sent_in = started.elapsed();
    match delivered(&receiver, &sent, Duration::from_secs(300)).await {
        Some(last) => {
            let took = last.duration_since(started);
            println!(
                "throughput: {} events in {:.2} s = {:.0} events/s delivered (the phones took {:.2} s to send them: {:.0}/s)",
                sent.len(),
                took.as_secs_f64(),
                sent.len() as f64 / took.as_secs_f64(),
                sent_in.as_secs_f64(),
                sent.len() as f64 / sent_in.as_secs_f64(),
            );
        }
        None => println!("throughput: not every event arrived"),
    }

    // 2. Latency, not backlogged.
    let mut paced = HashMap::new();
    for k in 0..PACED {
        let i = k % SESSIONS;
        let at = Instant::now();
        let (status, reply) = sim
            .post(
                &format!("/accounts/{}/send", contact(i)),
                json!({"to": format!("{}@s.whatsapp.net", owner(i)), "text": format!("paced-{k}")}),
            )
            .await;
        if status == 200 {
            paced.insert(reply["id"].as_str().unwrap_or("").to_owned(), at);
        }
        tokio::time::sleep(PACE).await;
    }
    delivered(&receiver, &paced, Duration::from_secs(60)).await;
    let arrivals: HashMap<String, Instant> = receiver
        .accepted()
        .iter()
        .map(|d| {
            (
                d.json()["data"]["message_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                d.at,
            )
        })
        .collect();
    let mut latencies: Vec<Duration> = paced
        .iter()
        .filter_map(|(id, at)| arrivals.get(id).map(|got| got.duration_since(*at)))
        .collect();
    latencies.sort();
    println!(
        "latency (phone send -> webhook POST), {} texts at {:.0}/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        1.0 / PACE.as_secs_f64(),
        ms(pct(&latencies, 0.5)),
        ms(pct(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
    );

    // 3. Catch-up after the receiver was down.
    receiver.answer_by_default(Answer::Status(503));
    let backlog = burst(&sim, BACKLOG / SESSIONS, "backlog").await;
    // Every backlog event is in the logs, waiting for the receiver.
    let logged = wait_until(Duration::from_secs(300), || async {
        let hooks = server.api().get("/webhooks").await.json();
        let pending: u64 = hooks["webhooks"][0]["deliveries"]
            .as_array()
            .map(|d| d.iter().filter_map(|x| x["pending"].as_u64()).sum())
            .unwrap_or(0);
        pending >= backlog.len() as u64
    })
    .await;
    println!(
        "backlog: {} events logged while the receiver answered 503 ({})",
        backlog.len(),
        if logged {
            "all logged"
        } else {
            "not all logged in time"
        }
    );
    let back = Instant::now();
    receiver.answer_by_default(Answer::Status(200));
    match delivered(&receiver, &backlog, Duration::from_secs(600)).await {
        Some(last) => {
            let took = last.duration_since(back);
            println!(
                "catch-up: {} events delivered {:.2} s after the receiver came back ({:.0} events/s; retries back off up to 1 s here)",
                backlog.len(),
                took.as_secs_f64(),
                backlog.len() as f64 / took.as_secs_f64()
            );
        }
        None => println!("catch-up: not every event arrived"),
    }
    receiver.stop();
    drop(server);
}
