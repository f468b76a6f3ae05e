//! Session density benchmark: start-up, session creation latency, request latency and
//! resident memory of the real binary with 0 and 100 sessions, plus the restart time with
//! 100 sessions. Prints figures and ratios; asserts nothing. Run: `cargo bench --bench sessions`.
//!
//! WhatsApp is unreachable here (nothing listens on the loopback URL the harness sets), so
//! sessions keep their client and retry with backoff: the cost of a session waiting to connect.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

const SESSIONS: usize = 100;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

async fn settle() {
    // Let background work (client start-up, first connection attempts) finish before reading RSS.
    tokio::time::sleep(Duration::from_secs(3)).await;
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let started = Instant::now();
    let mut server = TestServer::start().await;
    let startup = started.elapsed();
    settle().await;
    let rss_empty = rss_kib(server.pid());
    let api = server.api();

    let mut create = Vec::with_capacity(SESSIONS);
    for i in 0..SESSIONS {
        let t = Instant::now();
        api.post_json("/sessions", &json!({"id": format!("bench-{i:03}")}))
            .await
            .expect(201);
        create.push(t.elapsed());
    }
    create.sort();
    settle().await;
    let rss_100 = rss_kib(server.pid());

    let mut list = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let body = api.get("/sessions").await.expect(200);
        assert_eq!(body["total"], SESSIONS);
        list.push(t.elapsed());
    }
    list.sort();
    let mut get = Vec::new();
    for i in 0..SESSIONS {
        let t = Instant::now();
        api.get(&format!("/sessions/bench-{i:03}"))
            .await
            .expect(200);
        get.push(t.elapsed());
    }
    get.sort();

    for i in 0..SESSIONS {
        api.post(&format!("/sessions/bench-{i:03}/disconnect"))
            .await
            .expect(200);
    }
    settle().await;
    let rss_offline = rss_kib(server.pid());

    server.kill9();
    let t = Instant::now();
    server.restart().await;
    let all_back = wait_until(Duration::from_secs(60), || async {
        server.api().get("/sessions").await.json()["total"] == SESSIONS
    })
    .await;
    let restart = t.elapsed();

    let per_session_online = rss_100.saturating_sub(rss_empty) as f64 / SESSIONS as f64;
    let per_session_offline = rss_offline.saturating_sub(rss_empty) as f64 / SESSIONS as f64;
    println!("wagate session benchmark ({SESSIONS} sessions, WhatsApp unreachable)");
    println!(
        "  start-up to listening           {:>9.1} ms",
        startup.as_secs_f64() * 1e3
    );
    println!(
        "  create session   p50 / p95 / max {:>7.2} / {:.2} / {:.2} ms  (p95/p50 {:.1}x)",
        percentile(&create, 0.5).as_secs_f64() * 1e3,
        percentile(&create, 0.95).as_secs_f64() * 1e3,
        percentile(&create, 1.0).as_secs_f64() * 1e3,
        percentile(&create, 0.95).as_secs_f64() / percentile(&create, 0.5).as_secs_f64().max(1e-9),
    );
    println!(
        "  GET /sessions/{{id}} p50 / p95     {:>7.2} / {:.2} ms",
        percentile(&get, 0.5).as_secs_f64() * 1e3,
        percentile(&get, 0.95).as_secs_f64() * 1e3,
    );
    println!(
        "  GET /sessions (100)  p50 / p95   {:>7.2} / {:.2} ms",
        percentile(&list, 0.5).as_secs_f64() * 1e3,
        percentile(&list, 0.95).as_secs_f64() * 1e3,
    );
    println!("  RSS, no sessions                {:>9} KiB", rss_empty);
    println!(
        "  RSS, {SESSIONS} sessions connecting    {:>9} KiB  ({:.0} KiB per session)",
        rss_100, per_session_online
    );
    println!(
        "  RSS, {SESSIONS} sessions disconnected  {:>9} KiB  ({:.0} KiB per session)",
        rss_offline, per_session_offline
    );
    println!(
        "  kill -9 and restart, all {SESSIONS} listed {:>6.1} ms{}",
        restart.as_secs_f64() * 1e3,
        if all_back { "" } else { " (NOT all back)" }
    );
}
