//! Group read benchmark against `wa-sim`: cached reads vs forced WhatsApp queries, how many
//! queries a burst of reads costs, and group text latency. Prints figures and ratios; asserts
//! nothing about speed. Run: `cargo bench --features test-server --bench groups`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::sim::Sim;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

const READS: usize = 200;
const REFRESHES: usize = 50;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let sim = Sim::start().await;
    let server = TestServer::builder().whatsapp_url(sim.url()).start().await;
    let api = server.api();
    api.post_json("/sessions", &json!({"id": "bench"}))
        .await
        .expect(201);
    let qr = wait_for(Duration::from_secs(20), || async {
        let r = api.get("/sessions/bench/qr").await;
        (r.code() == 200).then(|| r.json())
    })
    .await
    .expect("a QR code");
    let pairing = Instant::now();
    sim.post_ok(
        "/scan-qr",
        json!({"qr": qr["qr_codes"][0], "phone_number": "6289900000001"}),
    )
    .await;
    wait_until(Duration::from_secs(60), || async {
        api.get("/sessions/bench").await.json()["status"] == "logged_in"
    })
    .await;
    let pairing = pairing.elapsed();
    let b = sim.user("6289900000002").await;
    let c = sim.user("6289900000003").await;
    let gid = api
        .post_json(
            "/sessions/bench/groups",
            &json!({"name": "Bench", "participants": [b, c]}),
        )
        .await
        .expect(200)["group_jid"]
        .as_str()
        .unwrap()
        .to_string();

    let queries = |s: &serde_json::Value| s["group_queries"][&gid].as_u64().unwrap_or(0);
    let before = queries(&sim.stats().await);
    let mut cached = Vec::with_capacity(READS);
    for _ in 0..READS {
        let t = Instant::now();
        api.get(&format!("/sessions/bench/groups/{gid}/info"))
            .await
            .expect(200);
        cached.push(t.elapsed());
    }
    let after_cached = queries(&sim.stats().await);
    let mut fresh = Vec::with_capacity(REFRESHES);
    for _ in 0..REFRESHES {
        let t = Instant::now();
        api.get(&format!("/sessions/bench/groups/{gid}/info?refresh=true"))
            .await
            .expect(200);
        fresh.push(t.elapsed());
    }
    let mut texts = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        api.post_json(
            "/sessions/bench/messages/text",
            &json!({"to": gid, "text": format!("bench {i}")}),
        )
        .await
        .expect(200);
        texts.push(t.elapsed());
    }
    cached.sort();
    fresh.sort();
    texts.sort();

    println!("wagate group benchmark (against wa-sim on loopback)");
    println!(
        "  QR pairing to logged_in            {:>8.1} ms",
        ms(pairing)
    );
    println!(
        "  cached GET info   p50 / p95        {:>8.2} / {:.2} ms  ({READS} reads cost {} WhatsApp queries)",
        ms(pct(&cached, 0.5)),
        ms(pct(&cached, 0.95)),
        after_cached - before
    );
    println!(
        "  refresh GET info  p50 / p95        {:>8.2} / {:.2} ms",
        ms(pct(&fresh, 0.5)),
        ms(pct(&fresh, 0.95))
    );
    println!(
        "  refresh / cached (p50)             {:>8.1}x",
        pct(&fresh, 0.5).as_secs_f64() / pct(&cached, 0.5).as_secs_f64().max(1e-9)
    );
    println!(
        "  group text        p50 / p95        {:>8.2} / {:.2} ms",
        ms(pct(&texts, 0.5)),
        ms(pct(&texts, 0.95))
    );
}
