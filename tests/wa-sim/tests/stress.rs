//! Load: several linked clients, each flooded with texts by its own sim-only contact
//! (many sends in flight per phone) while the control API is read all along, and half of
//! the clients lose their socket mid-flood (so unacked messages are replayed while new ones
//! keep arriving). Every text must reach its client and end up acked, and the control API
//! must keep answering; a hang fails the test on a deadline instead of blocking it.
//!
//! The simulator runs on a runtime of its own: if its worker threads block on a lock for
//! good, the test's runtime (its timers, the clients) keeps going and reports the hang.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinSet;
use wa_sim::{SimConfig, SimHandle};

/// Linked accounts, each with one connected client and one contact phone.
const ACCOUNTS: usize = 4;
/// Texts each contact phone sends to its account.
const TEXTS: usize = 200;
/// Sends a contact phone keeps in flight.
const IN_FLIGHT: usize = 8;
/// Longest any single control request may take before the sim counts as hung.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// How long delivery (and acking) of everything may take.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(40);
/// Backstop for the whole test, pairing included.
const TEST_DEADLINE: Duration = Duration::from_secs(120);

/// A simulator serving from its own thread and runtime (two workers, like a small host).
struct IsolatedSim {
    handle: Arc<SimHandle>,
    stop: oneshot::Sender<()>,
}

impl IsolatedSim {
    async fn start() -> Self {
        init_logging();
        let (handle_tx, handle_rx) = oneshot::channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("wa-sim".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("a runtime for the simulator");
                runtime.block_on(async move {
                    let handle = wa_sim::start(SimConfig::default()).await;
                    let _ = handle_tx.send(handle);
                    let _ = stop_rx.await;
                });
            })
            .expect("the simulator thread");
        let handle = handle_rx
            .await
            .expect("the simulator thread started")
            .expect("the simulator started");
        Self {
            handle: Arc::new(handle),
            stop,
        }
    }

    /// Lets the simulator's runtime wind down. Its thread is not joined: after a hang it
    /// never would be.
    fn stop(self) {
        drop(self.handle);
        let _ = self.stop.send(());
    }
}

/// A control request that must answer within [`REQUEST_DEADLINE`].
async fn bounded(
    sim: &SimHandle,
    method: &str,
    path: &str,
    body: Option<String>,
) -> (u16, serde_json::Value) {
    match tokio::time::timeout(REQUEST_DEADLINE, http(sim, method, path, body.as_deref())).await {
        Ok(reply) => reply,
        Err(_) => panic!("{method} /control{path} got no answer within {REQUEST_DEADLINE:?}"),
    }
}

fn contact_of(i: usize) -> String {
    format!("62899000050{i:02}")
}

fn account_of(i: usize) -> String {
    format!("62899000060{i:02}")
}

/// The contact phone of account `i` sends it [`TEXTS`] texts, [`IN_FLIGHT`] at a time.
/// Halfway through, the client of every even account loses its socket. Returns text ->
/// message id.
async fn flood(sim: Arc<SimHandle>, i: usize) -> HashMap<String, String> {
    let next = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(Mutex::new(HashMap::new()));
    let mut senders = JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (sim, next, sent) = (sim.clone(), next.clone(), sent.clone());
        senders.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= TEXTS {
                    return;
                }
                if n == TEXTS / 2 && i.is_multiple_of(2) {
                    let fault = json!({"kind": "drop_socket", "phone_number": account_of(i)});
                    let (status, reply) =
                        bounded(&sim, "POST", "/faults", Some(fault.to_string())).await;
                    assert_eq!(status, 200, "{reply}");
                }
                let text = format!("load {i} #{n}");
                let body = json!({"to": format!("{}@s.whatsapp.net", account_of(i)), "text": text});
                let path = format!("/accounts/{}/send", contact_of(i));
                let (status, reply) = bounded(&sim, "POST", &path, Some(body.to_string())).await;
                assert_eq!(status, 200, "{path}: {reply}");
                let id = reply["id"].as_str().expect("an id").to_string();
                sent.lock().await.insert(text, id);
            }
        });
    }
    while let Some(done) = senders.join_next().await {
        done.expect("a sender task");
    }
    sent.lock().await.clone()
}

/// Reads the control API (account, device messages, stats) until `stop` is raised.
async fn read_control(sim: Arc<SimHandle>, stop: Arc<AtomicBool>) -> usize {
    let mut reads = 0;
    while !stop.load(Ordering::SeqCst) {
        for i in 0..ACCOUNTS {
            let account = account_of(i);
            let (status, body) = bounded(&sim, "GET", &format!("/accounts/{account}"), None).await;
            assert_eq!(status, 200, "{body}");
            let (status, body) = bounded(
                &sim,
                "GET",
                &format!("/accounts/{account}/devices/1/messages"),
                None,
            )
            .await;
            assert_eq!(status, 200, "{body}");
            let (status, body) = bounded(&sim, "GET", "/stats", None).await;
            assert_eq!(status, 200, "{body}");
            reads += 3;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reads
}

/// Collects the ids of every text the client receives, until `stop` is raised.
async fn collect(events: Events, seen: Arc<Mutex<HashSet<String>>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        let Ok(Ok(event)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await
        else {
            continue;
        };
        let mut seen = seen.lock().await;
        for m in event.messages() {
            if text_of(&m.message).is_some_and(|t| t.starts_with("load ")) {
                seen.insert(m.info.id.clone());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn contacts_flood_clients_while_control_api_is_read() {
    let isolated = IsolatedSim::start().await;
    tokio::time::timeout(TEST_DEADLINE, flood_and_check(isolated.handle.clone()))
        .await
        .unwrap_or_else(|_| panic!("the load test did not finish within {TEST_DEADLINE:?}"));
    isolated.stop();
}

async fn flood_and_check(sim: Arc<SimHandle>) {
    let started = Instant::now();
    let mut clients = Vec::new();
    for i in 0..ACCOUNTS {
        let (status, reply) = post(
            &sim,
            "/accounts",
            json!({"phone_number": contact_of(i), "push_name": format!("Contact {i}")}),
        )
        .await;
        assert_eq!(status, 201, "{reply}");
        let (client, phone) =
            pair_by_qr(&sim, Some(&format!("load{i}")), Some(&account_of(i))).await;
        assert_eq!(phone, account_of(i));
        clients.push(client);
    }
    let (_, account) = bounded(&sim, "GET", &format!("/accounts/{}", account_of(0)), None).await;
    assert_eq!(account["devices"][0]["device"], 1, "{account}");

    let stop = Arc::new(AtomicBool::new(false));
    let seen: Vec<Arc<Mutex<HashSet<String>>>> = (0..ACCOUNTS).map(|_| Arc::default()).collect();
    let collectors: Vec<_> = clients
        .iter()
        .zip(&seen)
        .map(|(c, seen)| tokio::spawn(collect(c.events.clone(), seen.clone(), stop.clone())))
        .collect();
    let reader = tokio::spawn(read_control(sim.clone(), stop.clone()));

    let floods: Vec<_> = (0..ACCOUNTS)
        .map(|i| tokio::spawn(flood(sim.clone(), i)))
        .collect();
    let mut sent = Vec::new();
    for flood in floods {
        let ids = tokio::time::timeout(DELIVERY_DEADLINE, flood)
            .await
            .expect("the contact phones finished sending in time")
            .expect("a flood task");
        assert_eq!(ids.len(), TEXTS);
        sent.push(ids);
    }
    tracing::info!(elapsed = ?started.elapsed(), "all texts sent");

    // Every text reaches its client, and the sim lists it as acked by that device.
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    for i in 0..ACCOUNTS {
        let want: HashSet<String> = sent[i].values().cloned().collect();
        loop {
            let missing = want.difference(&*seen[i].lock().await).count();
            if missing == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "client {i} is still missing {missing} of {TEXTS} texts"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let path = format!("/accounts/{}/devices/1/messages", account_of(i));
        loop {
            let (status, body) = bounded(&sim, "GET", &path, None).await;
            assert_eq!(status, 200, "{body}");
            let acked: HashSet<String> = body["acked"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let missing = want.difference(&acked).count();
            if missing == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "device 1 of {} has {missing} of {TEXTS} texts unacked: {body}",
                account_of(i)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    stop.store(true, Ordering::SeqCst);
    let reads = tokio::time::timeout(REQUEST_DEADLINE * 2, reader)
        .await
        .expect("the control reader stopped")
        .expect("the control reader");
    assert!(reads > 0);
    for collector in collectors {
        let _ = tokio::time::timeout(Duration::from_secs(2), collector).await;
    }
    let stats = bounded(&sim, "GET", "/stats", None).await.1;
    assert!(
        stats["messages_acked"].as_u64().unwrap_or(0) >= (ACCOUNTS * TEXTS) as u64,
        "{stats}"
    );
    tracing::info!(elapsed = ?started.elapsed(), reads, %stats, "load delivered and acked");
    for client in clients {
        client.handle.abort();
    }
}
