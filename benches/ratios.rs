//! Ratio benchmark against `wa-sim`, in one run:
//!
//! 1. Cached group reads (`GET …/groups` and `GET …/groups/{jid}/info`) under an HTTP load of
//!    32 keep-alive connections, against a bare warp server started here that checks the same
//!    bearer token and serializes the same JSON per request. wagate runs twice: with its default
//!    log level and with warnings only.
//! 2. Group text throughput (`POST …/messages/text`, 16 in flight) against a bare
//!    whatsapp-rust client paired to the same simulator, sending to a group of the same size
//!    on whatsapp-rust's SQLite store. The two take turns for a few rounds and the median
//!    ratio is the figure. Two more clients run once, for reference: one on the in-memory
//!    store the simulator's tests use, and one on wagate's own store (SQLite, with the copies
//!    of sent messages in sled), which tells wagate's own cost apart from its store's. A side's run ends when the simulator has routed its texts and the members'
//!    simulated phones have decrypted them, so each run carries the simulator's whole work for
//!    its own texts (routed-only figures are printed beside). Every side's texts are counted in
//!    a member's inbox at the simulator.
//!
//! Each text run also reports the CPU it took per send, split between wagate, the HTTP load
//! generator, the bare client and the simulator (threads told apart by runtime), and the IQs the
//! simulator answered meanwhile: on two cores every part competes for the same CPU.
//!
//! Prints figures and ratios; asserts nothing about speed.
//! Run: `cargo bench --features test-server --bench ratios` (`RATIOS_SENDS=n` sends n texts per
//! run instead of 4000, `RATIOS_ROUNDS=n` takes n turns instead of 3, `RATIOS_IN_FLIGHT=n` keeps
//! n texts in flight instead of 16).
//!
//! Everything binds and dials 127.0.0.1 only. The bare server and the bare clients run on their
//! own runtime (as wagate runs in its own process), the text load on another; the read load and
//! the simulator run on the bench's main runtime.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/wa-sim/tests/common/mod.rs"]
mod wa;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::sim::Sim;
use common::*;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use wagate_actors::whatsapp::session_store::{SentMessages, SessionStore};
use warp::Filter;
use whatsapp_rust::wacore::iq::groups::{GroupCreateOptions, GroupParticipantOptions};

/// Concurrent keep-alive connections of the read load.
const CONNECTIONS: usize = 32;
const WARM_UP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(5);
/// Texts sent per run (`RATIOS_SENDS` overrides), and how many are in flight at once
/// (`RATIOS_IN_FLIGHT`).
const SENDS_DEFAULT: usize = 4000;
const IN_FLIGHT_DEFAULT: usize = 16;
/// Turns each of wagate and the bare client on SQLite takes at sending.
const ROUNDS_DEFAULT: usize = 3;
/// Sequential texts per side before measuring (sender keys, sessions, device lists).
const WARM_SENDS: usize = 5;
/// Sim-only members besides the sending account.
const MEMBERS: usize = 4;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
const PAIRING: Duration = Duration::from_secs(60);
/// The whole run; past it a watchdog kills wagate and exits.
const OVERALL: Duration = Duration::from_secs(600);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// Texts each side sends per measured run (`RATIOS_SENDS` overrides).
fn sends() -> usize {
    count_from_env("RATIOS_SENDS", SENDS_DEFAULT)
}

/// How many turns each text sender takes (`RATIOS_ROUNDS` overrides).
fn rounds() -> usize {
    count_from_env("RATIOS_ROUNDS", ROUNDS_DEFAULT)
}

/// Texts each sender keeps in flight (`RATIOS_IN_FLIGHT` overrides).
fn in_flight() -> usize {
    count_from_env("RATIOS_IN_FLIGHT", IN_FLIGHT_DEFAULT)
}

/// A positive count from the environment variable `name`, else `default`.
fn count_from_env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// What the simulator was asked besides the texts between two `/stats` readings: IQs by kind.
fn sim_requests(before: &Value, after: &Value) -> String {
    let count = |s: &Value, k: &str| s["iqs"][k].as_u64().unwrap_or(0);
    let mut asked: Vec<String> = after["iqs"]
        .as_object()
        .map(|iqs| {
            iqs.keys()
                .filter_map(|k| {
                    let n = count(after, k).saturating_sub(count(before, k));
                    (n > 0).then(|| format!("{k} {n}"))
                })
                .collect()
        })
        .unwrap_or_default();
    if asked.is_empty() {
        asked.push("none".into());
    }
    format!(
        "      IQs to the simulator during the sends: {}",
        asked.join(", ")
    )
}

// ---------------------------------------------------------------------------
// CPU accounting (Linux /proc; elsewhere every figure reads 0)
// ---------------------------------------------------------------------------

/// CPU time used so far, per part of the run: this process's threads grouped by the runtime
/// they belong to (by thread name), and the wagate process as a whole.
#[derive(Clone, Default)]
struct CpuSample {
    /// Threads named `bare-*`: the bare whatsapp-rust clients.
    bare: Duration,
    /// Threads named `load-*`: the HTTP load generator that drives wagate.
    load: Duration,
    /// Every other thread: the simulator (and the harness around it).
    sim: Duration,
    wagate: Duration,
}

/// Clock ticks per second of `/proc/*/stat` (USER_HZ).
fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// (name, user + system CPU) of a `/proc/.../stat` file's contents.
fn parse_stat(stat: &str) -> Option<(String, Duration)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((
        name,
        Duration::from_secs_f64((utime + stime) as f64 / ticks_per_sec()),
    ))
}

fn cpu_sample(wagate_pid: u32) -> CpuSample {
    let wagate_pid = (wagate_pid != 0).then_some(wagate_pid);
    let mut sample = CpuSample::default();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let Some((name, used)) = parse_stat(&stat) else {
                continue;
            };
            if name.starts_with("bare") {
                sample.bare += used;
            } else if name.starts_with("load") {
                sample.load += used;
            } else {
                sample.sim += used;
            }
        }
    }
    if let Some((_, used)) = wagate_pid
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .as_deref()
        .and_then(parse_stat)
    {
        sample.wagate = used;
    }
    sample
}

/// CPU used between two samples, per text sent.
struct CpuPerSend {
    sends: usize,
    wall: Duration,
    used: CpuSample,
}

impl CpuPerSend {
    fn between(before: &CpuSample, after: &CpuSample, wall: Duration, sends: usize) -> Self {
        CpuPerSend {
            sends,
            wall,
            used: CpuSample {
                bare: after.bare.saturating_sub(before.bare),
                load: after.load.saturating_sub(before.load),
                sim: after.sim.saturating_sub(before.sim),
                wagate: after.wagate.saturating_sub(before.wagate),
            },
        }
    }

    fn line(&self) -> String {
        let per_send = |d: Duration| d.as_secs_f64() * 1e6 / self.sends.max(1) as f64;
        let busy = |d: Duration| 100.0 * ratio(d.as_secs_f64(), self.wall.as_secs_f64());
        let u = &self.used;
        let total = u.bare + u.load + u.sim + u.wagate;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut parts = Vec::new();
        for (what, used) in [
            ("wagate", u.wagate),
            ("load generator", u.load),
            ("bare client", u.bare),
            ("simulator", u.sim),
        ] {
            if !used.is_zero() {
                parts.push(format!(
                    "{what} {:.0} µs ({:.0}%)",
                    per_send(used),
                    busy(used)
                ));
            }
        }
        format!(
            "      CPU per send {:.0} µs, all {cores} cores {:.0}% busy: {}",
            per_send(total),
            busy(total) / cores as f64,
            parts.join(", ")
        )
    }
}

// ---------------------------------------------------------------------------
// HTTP load generator: hyper 1 client connections, one request in flight each
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Load {
    ok: u64,
    other_status: u64,
    errors: u64,
    body_len: usize,
    latencies: Vec<Duration>,
}

impl Load {
    fn rps(&self) -> f64 {
        self.ok as f64 / MEASURE.as_secs_f64()
    }

    fn line(&self, what: &str) -> String {
        format!(
            "  {what:<28} {:>9.0} req/s   p50 {:>6.3} ms   p99 {:>6.3} ms   ({} ok, {} non-200, {} errors, {} B bodies)",
            self.rps(),
            ms(pct(&self.latencies, 0.5)),
            ms(pct(&self.latencies, 0.99)),
            self.ok,
            self.other_status,
            self.errors,
            self.body_len
        )
    }
}

async fn connect<B>(addr: SocketAddr) -> Option<SendRequest<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::time::timeout(REQUEST_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, conn) = tokio::time::timeout(
        REQUEST_TIMEOUT,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .ok()?
    .ok()?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "load connection ended");
        }
    });
    Some(sender)
}

async fn load_worker(
    addr: SocketAddr,
    path: Arc<str>,
    auth: Arc<str>,
    measure_from: Instant,
    end: Instant,
) -> Load {
    let host = addr.to_string();
    let mut load = Load::default();
    let mut sender = None;
    while Instant::now() < end {
        let Some(s) = sender.as_mut() else {
            sender = connect(addr).await;
            if sender.is_none() {
                load.errors += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            continue;
        };
        let req = hyper::Request::get(&*path)
            .header(hyper::header::HOST, &host)
            .header(hyper::header::AUTHORIZATION, &*auth)
            .body(Empty::<Bytes>::new())
            .expect("request builds");
        let t0 = Instant::now();
        let res = tokio::time::timeout(REQUEST_TIMEOUT, async {
            s.ready().await?;
            let resp = s.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body.len()))
        })
        .await;
        let t1 = Instant::now();
        let counted = t0 >= measure_from && t1 <= end;
        match res {
            Ok(Ok((status, len))) => {
                if !counted {
                    continue;
                }
                if status == hyper::StatusCode::OK {
                    load.ok += 1;
                    load.body_len = len;
                    load.latencies.push(t1 - t0);
                } else {
                    load.other_status += 1;
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "load request failed");
                load.errors += 1;
                sender = None;
            }
            Err(_) => {
                tracing::warn!("load request timed out");
                load.errors += 1;
                sender = None;
            }
        }
    }
    load
}

/// `CONNECTIONS` keep-alive connections, each sending `GET path` back to back for
/// `WARM_UP + MEASURE`; counts the 200s completed inside the measured window.
async fn load(addr: SocketAddr, path: &str, token: &str) -> Load {
    let path: Arc<str> = path.into();
    let auth: Arc<str> = format!("Bearer {token}").into();
    let measure_from = Instant::now() + WARM_UP;
    let end = measure_from + MEASURE;
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            tokio::spawn(load_worker(
                addr,
                path.clone(),
                auth.clone(),
                measure_from,
                end,
            ))
        })
        .collect();
    let mut total = Load::default();
    for w in workers {
        let w = tokio::time::timeout(WARM_UP + MEASURE + REQUEST_TIMEOUT * 3, w)
            .await
            .expect("load worker finishes")
            .expect("load worker does not panic");
        total.ok += w.ok;
        total.other_status += w.other_status;
        total.errors += w.errors;
        total.body_len = total.body_len.max(w.body_len);
        total.latencies.extend(w.latencies);
    }
    total.latencies.sort();
    total
}

// ---------------------------------------------------------------------------
// The bare warp server
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Unauthorized;
impl warp::reject::Reject for Unauthorized {}

/// The same check as wagate: `Bearer <token>`, compared in constant time.
fn bearer(token: Arc<str>) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and_then(move |header: Option<String>| {
            let token = token.clone();
            async move {
                let ok: bool = header
                    .as_deref()
                    .and_then(|h| h.strip_prefix("Bearer "))
                    .map(str::trim)
                    .map(|t| t.as_bytes().ct_eq(token.as_bytes()).into())
                    .unwrap_or(false);
                if ok {
                    Ok(())
                } else {
                    Err(warp::reject::custom(Unauthorized))
                }
            }
        })
        .untuple_one()
}

/// Serializes `value` afresh, as a handler building its answer would.
fn json_reply(value: &Value) -> warp::http::Response<Vec<u8>> {
    let body = serde_json::to_vec(value).expect("JSON serializes");
    let mut res = warp::http::Response::new(body);
    res.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("application/json"),
    );
    res
}

fn bare_routes(
    token: Arc<str>,
    list: Arc<Value>,
    info: Arc<Value>,
) -> impl Filter<Extract = (impl warp::Reply,), Error = Infallible> + Clone {
    let list = warp::path!("api" / "v1" / "sessions" / String / "groups")
        .and(warp::get())
        .and(bearer(token.clone()))
        .map(move |_session: String| json_reply(&list));
    let info = warp::path!("api" / "v1" / "sessions" / String / "groups" / String / "info")
        .and(warp::get())
        .and(bearer(token))
        .map(move |_session: String, _jid: String| json_reply(&info));
    list.or(info).recover(|_| async {
        Ok::<_, Infallible>(warp::reply::with_status(
            "unauthorized",
            warp::http::StatusCode::UNAUTHORIZED,
        ))
    })
}

/// Starts the bare server on `rt`, on 127.0.0.1 only. Returns its address and its stop switch.
async fn start_bare_server(
    rt: &tokio::runtime::Runtime,
    token: &str,
    list: Value,
    info: Value,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let routes = bare_routes(token.into(), Arc::new(list), Arc::new(info));
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the bare server on loopback");
        let addr = listener.local_addr().expect("bare server address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(
            warp::serve(routes)
                .incoming(listener)
                .graceful(async move {
                    let _ = stopped.await;
                })
                .run(),
        );
        (addr, stop)
    })
    .await
    .expect("bare server starts")
}

// ---------------------------------------------------------------------------
// Group texts
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Sends {
    ok: usize,
    failed: usize,
    /// Until every call returned.
    returned: Duration,
    /// Until every call returned and the simulator had routed every message.
    routed_after: Duration,
    /// Until, besides, the members' simulated phones had decrypted every message.
    elapsed: Duration,
    routed: u64,
    latencies: Vec<Duration>,
    cpu: Option<CpuPerSend>,
    /// `sim_requests` of the measured part.
    asked: String,
}

impl Sends {
    /// Texts per second that reached the members' phones.
    fn per_sec(&self) -> f64 {
        ratio(self.ok as f64, self.elapsed.as_secs_f64())
    }

    /// Texts per second that the simulator routed, its phones' work left aside.
    fn routed_per_sec(&self) -> f64 {
        ratio(self.ok as f64, self.routed_after.as_secs_f64())
    }

    /// `delivered`: how many of this run's texts a member's phone got.
    fn line(&self, what: &str, delivered: usize) -> String {
        format!(
            "  {what:<29} {:>7.0} sends/s  p50 {:>5.2} ms  p99 {:>6.2} ms  ({} ok, {} failed; returned {:.3} s, routed {:.3} s, at the phones {:.3} s, {} routed; a member got {delivered}/{})",
            self.per_sec(),
            ms(pct(&self.latencies, 0.5)),
            ms(pct(&self.latencies, 0.99)),
            self.ok,
            self.failed,
            self.returned.as_secs_f64(),
            self.routed_after.as_secs_f64(),
            self.elapsed.as_secs_f64(),
            self.routed,
            sends()
        ) + &self
            .cpu
            .as_ref()
            .map(|c| format!("\n{}", c.line()))
            .unwrap_or_default()
            + &self.missing(delivered)
            + "\n"
            + &self.asked
    }

    /// A warning when texts never reached the member's phone: the simulator then did less
    /// work for this side, which makes its figure look better than it is.
    fn missing(&self, delivered: usize) -> String {
        let sent = sends();
        if delivered >= sent {
            return String::new();
        }
        format!(
            "\n      WARNING: {} of {sent} texts never reached the member (undecryptable at its phone); this figure is not comparable",
            sent - delivered
        )
    }
}

/// How far the simulator is with the texts: routed to the group's members, and handed to the
/// members' simulated phones but not yet decrypted there.
#[derive(Clone, Copy)]
struct SimProgress {
    routed: u64,
    at_phones: u64,
}

fn sim_progress(stats: &Value) -> SimProgress {
    SimProgress {
        routed: stats["messages_routed"].as_u64().unwrap_or(0),
        at_phones: stats["phone_messages_pending"].as_u64().unwrap_or(0),
    }
}

/// Polls the simulator (1 ms apart, 30 s at most) until it has routed `want` messages and, when
/// `settle`, its phones have decrypted every one; returns the routed count.
async fn wait_sim<R, RFut>(progress: &R, want: u64, settle: bool) -> u64
where
    R: Fn() -> RFut,
    RFut: std::future::Future<Output = SimProgress>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = progress().await;
        let done = now.routed >= want && (!settle || now.at_phones == 0);
        if done || Instant::now() >= deadline {
            return now.routed;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Runs `send(i)` for i in 0..sends() with in_flight() at once (each with SEND_TIMEOUT), on
/// `runtime`, then waits until the simulator has routed them all and its phones have decrypted
/// them: `progress` reads how far it is, `base` its routed count before. CPU use is sampled
/// around it (`wagate_pid` is 0 when wagate is not the sender), so each side's window carries
/// the simulator's whole work for that side's texts and none of an earlier run's.
async fn run_sends<F, Fut, R, RFut>(
    runtime: &tokio::runtime::Handle,
    wagate_pid: u32,
    send: F,
    progress: R,
    base: u64,
) -> Sends
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
    R: Fn() -> RFut,
    RFut: std::future::Future<Output = SimProgress>,
{
    wait_sim(&progress, base, true).await;
    let sends = sends();
    let send = Arc::new(send);
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu_sample(wagate_pid);
    let start = Instant::now();
    let workers: Vec<_> = (0..in_flight())
        .map(|_| {
            let send = send.clone();
            let next = next.clone();
            runtime.spawn(async move {
                let mut part = Sends::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= sends {
                        break part;
                    }
                    let t = Instant::now();
                    match tokio::time::timeout(SEND_TIMEOUT, send(i)).await {
                        Ok(Ok(())) => {
                            part.ok += 1;
                            part.latencies.push(t.elapsed());
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "send failed");
                            part.failed += 1;
                        }
                        Err(_) => {
                            tracing::warn!("send timed out");
                            part.failed += 1;
                        }
                    }
                }
            })
        })
        .collect();
    let mut total = Sends::default();
    for w in workers {
        let part = tokio::time::timeout(SEND_TIMEOUT * (sends as u32 + 1), w)
            .await
            .expect("send worker finishes")
            .expect("send worker does not panic");
        total.ok += part.ok;
        total.failed += part.failed;
        total.latencies.extend(part.latencies);
    }
    total.returned = start.elapsed();
    let n = wait_sim(&progress, base + total.ok as u64, false).await;
    total.routed_after = start.elapsed();
    wait_sim(&progress, base + total.ok as u64, true).await;
    total.elapsed = start.elapsed();
    total.cpu = Some(CpuPerSend::between(
        &cpu_before,
        &cpu_sample(wagate_pid),
        total.elapsed,
        total.ok,
    ));
    total.routed = n.saturating_sub(base);
    if total.routed < total.ok as u64 {
        tracing::warn!(
            routed = total.routed,
            ok = total.ok,
            "the simulator did not route every text that was reported sent"
        );
    }
    total.latencies.sort();
    total
}

/// Keep-alive HTTP/1.1 connections to wagate for the text load, one per send in flight: as lean
/// as the read load's, so the load generator takes as little of the shared CPU as it can.
struct TextLoad {
    addr: SocketAddr,
    host: String,
    auth: String,
    path: String,
    gid: String,
    idle: tokio::sync::Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl TextLoad {
    fn new(addr: SocketAddr, token: &str, path: &str, gid: &str) -> Arc<Self> {
        Arc::new(TextLoad {
            addr,
            host: addr.to_string(),
            auth: format!("Bearer {token}"),
            path: format!("/api/v1{path}"),
            gid: gid.to_owned(),
            idle: tokio::sync::Mutex::new(Vec::new()),
        })
    }

    /// Sends text `i` and reads the answer; Ok only for a 200.
    async fn send(self: Arc<Self>, i: usize) -> Result<(), String> {
        let idle = self.idle.lock().await.pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => connect(self.addr).await.ok_or("could not connect")?,
        };
        let body =
            serde_json::to_vec(&json!({"to": self.gid, "text": format!("wagate bench {i}")}))
                .map_err(|e| e.to_string())?;
        let req = hyper::Request::post(&self.path)
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::AUTHORIZATION, &self.auth)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        conn.ready().await.map_err(|e| e.to_string())?;
        let resp = conn.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        self.idle.lock().await.push(conn);
        if status == hyper::StatusCode::OK {
            Ok(())
        } else {
            Err(format!("{status} {}", String::from_utf8_lossy(&body)))
        }
    }
}

// ---------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------

/// A wagate server paired by QR through the simulator, with one group of `members`.
struct Wagate {
    server: TestServer,
    gid: String,
}

impl Wagate {
    async fn start(sim: &Sim, rust_log: &str, phone: &str, members: &[String]) -> Wagate {
        let server = TestServer::builder()
            .whatsapp_url(sim.url())
            .env("RUST_LOG", rust_log)
            .start()
            .await;
        let api = server.api();
        api.post_json("/sessions", &json!({"id": SESSION}))
            .await
            .expect(201);
        let qr = wait_for(Duration::from_secs(20), || async {
            let r = api.get(&format!("/sessions/{SESSION}/qr")).await;
            (r.code() == 200).then(|| r.json())
        })
        .await
        .expect("a QR code");
        sim.post_ok(
            "/scan-qr",
            json!({"qr": qr["qr_codes"][0], "phone_number": phone, "push_name": phone}),
        )
        .await;
        let ok = wait_until(PAIRING, || async {
            api.get(&format!("/sessions/{SESSION}")).await.json()["status"] == "logged_in"
        })
        .await;
        assert!(ok, "wagate session logged in\n{}", server.output());
        let participants: Vec<String> = members
            .iter()
            .map(|p| format!("{p}@s.whatsapp.net"))
            .collect();
        let gid = api
            .post_json(
                &format!("/sessions/{SESSION}/groups"),
                &json!({"name": "Bench", "participants": participants}),
            )
            .await
            .expect(200)["group_jid"]
            .as_str()
            .expect("group_jid")
            .to_string();
        Wagate { server, gid }
    }

    fn addr(&self) -> SocketAddr {
        let addr: SocketAddr = self
            .server
            .base_url()
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .expect("wagate listens on a socket address");
        assert!(addr.ip().is_loopback());
        addr
    }

    fn list_path(&self) -> String {
        format!("/api/v1/sessions/{SESSION}/groups")
    }

    fn info_path(&self) -> String {
        format!("/api/v1/sessions/{SESSION}/groups/{}/info", self.gid)
    }
}

/// A bare whatsapp-rust client over `backend`, built like the simulator's own tests build theirs
/// and paired by QR, with a group of `members` it has sent `WARM_SENDS` texts to one by one.
struct BareSender {
    client: wa::TestClient,
    gid: whatsapp_rust::Jid,
}

impl BareSender {
    async fn pair(
        sim: &wa_sim::SimHandle,
        backend: Arc<dyn whatsapp_rust::wacore::store::traits::Backend>,
        phone: &str,
        members: &[String],
    ) -> BareSender {
        let bare = wa::spawn_client(sim, backend, Some(phone)).await;
        let qr = wa::next_qr(&bare.events).await;
        let (status, reply) = wa::post(
            sim,
            "/scan-qr",
            json!({"qr": qr, "phone_number": phone, "push_name": phone}),
        )
        .await;
        assert_eq!(status, 200, "scan-qr: {reply}");
        wa::wait_connected(&bare.events, PAIRING).await;
        let client = bare.handle.client();
        let created = tokio::time::timeout(
            SEND_TIMEOUT,
            client.groups().create_group(
                GroupCreateOptions::builder()
                    .subject("Bare")
                    .participants(
                        members
                            .iter()
                            .map(|p| GroupParticipantOptions::new(wa::pn_jid(p)))
                            .collect(),
                    )
                    .build(),
            ),
        )
        .await
        .expect("bare group created in time")
        .expect("bare group created");
        assert_eq!(created.metadata.participants.len(), members.len() + 1);
        let gid = created.metadata.id.clone();
        let progress = || async { sim_progress(&wa::stats(sim).await) };
        let base = progress().await.routed;
        for i in 0..WARM_SENDS {
            tokio::time::timeout(
                SEND_TIMEOUT,
                client.send_text(gid.clone(), format!("bare warm-up {i}")),
            )
            .await
            .expect("bare warm-up text in time")
            .expect("bare warm-up text");
        }
        wait_sim(&progress, base + WARM_SENDS as u64, true).await;
        BareSender { client: bare, gid }
    }

    /// One measured run: `sends()` texts with `in_flight()` in flight.
    async fn run(&self, sim: &wa_sim::SimHandle) -> Sends {
        let progress = || async { sim_progress(&wa::stats(sim).await) };
        let stats_before = wa::stats(sim).await;
        let base = sim_progress(&stats_before).routed;
        let client = self.client.handle.client();
        let gid = self.gid.clone();
        let mut sends = run_sends(
            &tokio::runtime::Handle::current(),
            0,
            move |i| {
                let (client, gid) = (client.clone(), gid.clone());
                async move {
                    client
                        .send_text(gid, format!("bare bench {i}"))
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            },
            progress,
            base,
        )
        .await;
        sends.asked = sim_requests(&stats_before, &wa::stats(sim).await);
        sends
    }

    async fn stop(self) {
        if tokio::time::timeout(Duration::from_secs(5), self.client.handle.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("bare client did not stop within 5 s");
        }
    }
}

/// Texts of `chat` in a sim-only member's inbox, polled until `want` arrived or the count has
/// not moved for 2 s (30 s at most).
async fn delivered(sim: &Sim, phone: &str, chat: &str, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut last, mut since) = (usize::MAX, Instant::now());
    loop {
        let inbox = sim.get_ok(&format!("/accounts/{phone}/messages")).await;
        let n = inbox
            .as_array()
            .map(|a| a.iter().filter(|m| m["chat"] == chat).count())
            .unwrap_or(0);
        if n != last {
            (last, since) = (n, Instant::now());
        }
        if n >= want || since.elapsed() >= Duration::from_secs(2) || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Kills the wagate servers and ends the process if the run takes longer than `OVERALL`.
fn watchdog(pids: Vec<u32>) {
    std::thread::spawn(move || {
        std::thread::sleep(OVERALL);
        tracing::error!("benchmark took longer than {OVERALL:?}; stopping");
        for pid in pids {
            let _ = std::process::Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .status();
        }
        std::process::exit(2);
    });
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,ratios=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

const SESSION: &str = "bench";
/// wagate's default log level, as the shipped `config.toml` sets it (requests log at debug).
const LOG_DEFAULT: &str = "info";
/// Only warnings, besides wagate's own start-up lines (the harness waits for "listening on").
const LOG_NO_REQUESTS: &str = "warn,wagate=info";

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    init_logging();
    let bare_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("bare")
        .enable_all()
        .build()
        .expect("bare runtime");
    // wagate's text load runs apart from the simulator, so each one's CPU can be told apart.
    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("load")
        .enable_all()
        .build()
        .expect("load runtime");
    let sim = Sim::start().await;
    let members: Vec<String> = (0..MEMBERS).map(|i| format!("62899000001{i:02}")).collect();
    for phone in &members {
        sim.user(phone).await;
    }
    let inbox = members.last().expect("members").clone();

    let wagate = Wagate::start(&sim, LOG_DEFAULT, "6289900000001", &members).await;
    let quiet = Wagate::start(&sim, LOG_NO_REQUESTS, "6289900000003", &members).await;
    watchdog(vec![wagate.server.pid(), quiet.server.pid()]);
    tracing::info!("wagate sessions logged in, groups created");
    let api = wagate.server.api();
    // Warm the caches, and capture the bodies the bare server will serialize.
    let list_body = api
        .get(&format!("/sessions/{SESSION}/groups"))
        .await
        .expect(200);
    let info_body = api
        .get(&format!("/sessions/{SESSION}/groups/{}/info", wagate.gid))
        .await
        .expect(200);
    quiet
        .server
        .api()
        .get(&format!("/sessions/{SESSION}/groups/{}/info", quiet.gid))
        .await
        .expect(200);
    let queries = |s: &Value| {
        s["group_queries"][&wagate.gid].as_u64().unwrap_or(0)
            + s["group_queries"][&quiet.gid].as_u64().unwrap_or(0)
    };
    let queries_before = queries(&sim.stats().await);
    let (bare_addr, bare_stop) = start_bare_server(&bare_rt, API_TOKEN, list_body, info_body).await;
    assert!(bare_addr.ip().is_loopback());

    // --- 1. cached group reads --------------------------------------------------------------
    tracing::info!("read load: wagate");
    let w_list = load(wagate.addr(), &wagate.list_path(), API_TOKEN).await;
    let w_info = load(wagate.addr(), &wagate.info_path(), API_TOKEN).await;
    tracing::info!("read load: wagate without request log lines");
    let q_list = load(quiet.addr(), &quiet.list_path(), API_TOKEN).await;
    let q_info = load(quiet.addr(), &quiet.info_path(), API_TOKEN).await;
    tracing::info!("read load: bare warp");
    let b_list = load(bare_addr, &wagate.list_path(), API_TOKEN).await;
    let b_info = load(bare_addr, &wagate.info_path(), API_TOKEN).await;
    let queries_during = queries(&sim.stats().await).saturating_sub(queries_before);
    let _ = bare_stop.send(());
    drop(quiet);

    // --- 2. group texts ---------------------------------------------------------------------
    // wagate and the bare client on SQLite take turns, `rounds()` times each, so a slow or
    // fast spell of the machine falls on both; the in-memory client runs once, for reference.
    let text_path: Arc<str> = format!("/sessions/{SESSION}/messages/text").into();
    let gid: Arc<str> = wagate.gid.as_str().into();
    let progress = || async { sim_progress(&sim.stats().await) };
    let base = progress().await.routed;
    let text_load = TextLoad::new(wagate.addr(), API_TOKEN, &text_path, &gid);
    for i in 0..WARM_SENDS {
        // On the load runtime: the connections it opens are driven there from then on.
        load_rt
            .spawn(text_load.clone().send(sends() + i))
            .await
            .expect("warm-up send does not panic")
            .expect("warm-up text through wagate");
    }
    wait_sim(&progress, base + WARM_SENDS as u64, true).await;
    let handle = &sim.handle;
    let store_dir = tempfile::Builder::new()
        .prefix("wagate-bench-store-")
        .tempdir()
        .expect("store dir");
    let db = store_dir.path().join("whatsapp.db");
    tracing::info!("pairing the bare client on SQLite");
    let sqlite_bare = tokio::task::block_in_place(|| {
        bare_rt.block_on(async {
            let store = whatsapp_rust::store::SqliteStore::new(db.to_str().expect("UTF-8 path"))
                .await
                .expect("SQLite store");
            BareSender::pair(handle, Arc::new(store), "6289900000004", &members).await
        })
    });
    let s_gid = sqlite_bare.gid.to_string();
    let (mut w_got, mut s_got) = (WARM_SENDS, WARM_SENDS);
    let mut rounds_run = Vec::new();
    for round in 1..=rounds() {
        tracing::info!(round, "text load: wagate");
        let base = progress().await.routed;
        let stats_before = sim.stats().await;
        let mut w = {
            let text_load = text_load.clone();
            run_sends(
                load_rt.handle(),
                wagate.server.pid(),
                move |i| text_load.clone().send(i),
                progress,
                base,
            )
            .await
        };
        w.asked = sim_requests(&stats_before, &sim.stats().await);
        let now = delivered(&sim, &inbox, &wagate.gid, w_got + sends()).await;
        let w_delivered = now - w_got;
        w_got = now;

        tracing::info!(round, "text load: bare client, SQLite store");
        let s = tokio::task::block_in_place(|| bare_rt.block_on(sqlite_bare.run(handle)));
        let now = delivered(&sim, &inbox, &s_gid, s_got + sends()).await;
        let s_delivered = now - s_got;
        s_got = now;
        rounds_run.push((w, w_delivered, s, s_delivered));
    }
    tokio::task::block_in_place(|| bare_rt.block_on(sqlite_bare.stop()));

    tracing::info!("text load: bare client, in-memory store");
    let (b_sends, b_gid) = tokio::task::block_in_place(|| {
        bare_rt.block_on(async {
            let bare = BareSender::pair(handle, wa::new_backend(), "6289900000002", &members).await;
            let sends = bare.run(handle).await;
            let gid = bare.gid.to_string();
            bare.stop().await;
            (sends, gid)
        })
    });
    let b_delivered = delivered(&sim, &inbox, &b_gid, WARM_SENDS + sends()).await - WARM_SENDS;

    // The store wagate builds its clients on: SQLite, with the copies of sent messages in sled.
    tracing::info!("text load: bare client, wagate's store");
    let copies_dir = tempfile::Builder::new()
        .prefix("wagate-bench-copies-")
        .tempdir()
        .expect("copies dir");
    let (g_sends, g_gid) = tokio::task::block_in_place(|| {
        bare_rt.block_on(async {
            let db = store_dir.path().join("wagate-store.db");
            let sqlite = whatsapp_rust::store::SqliteStore::new(db.to_str().expect("UTF-8 path"))
                .await
                .expect("SQLite store");
            let copies = SentMessages::open(&sled::open(copies_dir.path()).expect("sled"))
                .expect("copies tree");
            let store = SessionStore::new(sqlite, copies, SESSION);
            let bare = BareSender::pair(handle, Arc::new(store), "6289900000005", &members).await;
            let sends = bare.run(handle).await;
            let gid = bare.gid.to_string();
            bare.stop().await;
            (sends, gid)
        })
    });
    let g_delivered = delivered(&sim, &inbox, &g_gid, WARM_SENDS + sends()).await - WARM_SENDS;

    println!("wagate ratio benchmark (wa-sim, everything on 127.0.0.1)");
    println!(
        "cached group reads: {CONNECTIONS} keep-alive connections, {}s warm-up, {}s measured",
        WARM_UP.as_secs(),
        MEASURE.as_secs()
    );
    println!("{}", w_list.line("wagate GET groups"));
    println!("{}", q_list.line("  same, log level warn"));
    println!("{}", b_list.line("bare warp GET groups"));
    println!("{}", w_info.line("wagate GET …/{jid}/info"));
    println!("{}", q_info.line("  same, log level warn"));
    println!("{}", b_info.line("bare warp GET …/info"));
    println!("  WhatsApp group queries during the reads: {queries_during}");
    println!(
        "  ratio wagate/bare  list {:.3}   info {:.3}   (target >= 0.6)",
        ratio(w_list.rps(), b_list.rps()),
        ratio(w_info.rps(), b_info.rps())
    );
    println!(
        "  (log level warn)   list {:.3}   info {:.3}",
        ratio(q_list.rps(), b_list.rps()),
        ratio(q_info.rps(), b_info.rps())
    );
    println!(
        "group texts: {} sends per run, {} in flight, groups of {} (after {WARM_SENDS} warm-up sends each); wagate and the bare client on SQLite take turns, {} rounds; sends/s count until the members' simulated phones have decrypted them all",
        sends(),
        in_flight(),
        MEMBERS + 1,
        rounds_run.len()
    );
    let mut ratios = Vec::new();
    let mut routed_ratios = Vec::new();
    let mut cpu_ratios = Vec::new();
    for (round, (w, w_delivered, s, s_delivered)) in rounds_run.iter().enumerate() {
        println!("round {}", round + 1);
        println!("{}", w.line("wagate POST messages/text", *w_delivered));
        println!("{}", s.line("bare send_text, SQLite store", *s_delivered));
        let r = ratio(w.per_sec(), s.per_sec());
        let routed = ratio(w.routed_per_sec(), s.routed_per_sec());
        let cpu = ratio(
            w.cpu
                .as_ref()
                .map_or(0.0, |c| c.used.wagate.as_secs_f64() / c.sends.max(1) as f64),
            s.cpu
                .as_ref()
                .map_or(0.0, |c| c.used.bare.as_secs_f64() / c.sends.max(1) as f64),
        );
        println!(
            "  ratio wagate/bare {r:.3}   (until routed, before the phones' work: {routed:.3}; wagate's own CPU per send over the bare client's: {cpu:.2}x)"
        );
        ratios.push(r);
        routed_ratios.push(routed);
        cpu_ratios.push(cpu);
    }
    println!(
        "{}",
        b_sends.line("bare send_text, memory store", b_delivered)
    );
    println!(
        "{}",
        g_sends.line("bare send_text, wagate's store", g_delivered)
    );
    let last_wagate = rounds_run.last().map(|(w, ..)| w.per_sec()).unwrap_or(0.0);
    println!(
        "  wagate's last round over the in-memory client (which keeps no keys across a restart): {:.3}",
        ratio(last_wagate, b_sends.per_sec())
    );
    println!(
        "  wagate's last round over the client on wagate's store (SQLite, sent-message copies in sled): {:.3}",
        ratio(last_wagate, g_sends.per_sec())
    );
    println!(
        "  ratio wagate/bare, median of {} rounds: {:.3} against the client on whatsapp-rust's SQLite store   (target >= 0.8)",
        ratios.len(),
        median(&mut ratios)
    );
    println!(
        "  medians: {:.3} counted until routed (a fast sender leaves the simulator's decryption behind it); wagate's own CPU per send {:.2}x the bare client's (the simulator shares the two cores)",
        median(&mut routed_ratios),
        median(&mut cpu_ratios)
    );

    drop(wagate);
    bare_rt.shutdown_background();
    load_rt.shutdown_background();
}
