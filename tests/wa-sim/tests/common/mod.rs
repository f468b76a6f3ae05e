//! Shared test harness: starts a simulator, runs real whatsapp-rust clients against it,
//! waits on their events with deadlines, and calls the control API.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wa_sim::{SimConfig, SimHandle};
use whatsapp_rust::TokioRuntime;
use whatsapp_rust::bot::{Bot, BotHandle};
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::types::events::Event;
use whatsapp_rust::wacore::net::{HttpClient, HttpRequest, HttpResponse};
use whatsapp_rust::wacore::store::InMemoryBackend;
use whatsapp_rust::wacore::store::traits::Backend;

pub type Events = whatsapp_rust::async_channel::Receiver<Arc<Event>>;

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_test_writer()
        .try_init();
}

pub async fn start_sim() -> SimHandle {
    init_logging();
    wa_sim::start(SimConfig::default()).await.unwrap()
}

/// An HTTP client that refuses everything: tests must never reach the network.
struct NoHttp;

#[whatsapp_rust::async_trait]
impl HttpClient for NoHttp {
    async fn execute(&self, request: HttpRequest) -> whatsapp_rust::anyhow::Result<HttpResponse> {
        Err(whatsapp_rust::anyhow::anyhow!(
            "tests do not make HTTP requests ({})",
            request.url
        ))
    }
}

/// Forwards every event into a channel.
struct Forward(whatsapp_rust::async_channel::Sender<Arc<Event>>);

impl whatsapp_rust::types::events::EventHandler for Forward {
    fn handle_event(&self, event: Arc<Event>) {
        let _ = self.0.try_send(event);
    }
}

pub struct TestClient {
    pub handle: BotHandle,
    pub events: Events,
    pub backend: Arc<dyn Backend>,
}

pub fn new_backend() -> Arc<dyn Backend> {
    Arc::new(InMemoryBackend::new())
}

/// Starts a client over `backend` against the simulator.
pub async fn spawn_client(
    sim: &SimHandle,
    backend: Arc<dyn Backend>,
    push_name: Option<&str>,
) -> TestClient {
    spawn_client_with(sim, backend, push_name, |b| b).await
}

pub async fn spawn_client_with(
    sim: &SimHandle,
    backend: Arc<dyn Backend>,
    push_name: Option<&str>,
    customize: impl FnOnce(
        whatsapp_rust::bot::BotBuilder<
            whatsapp_rust::bot::Provided,
            whatsapp_rust::bot::Provided,
            whatsapp_rust::bot::Provided,
            whatsapp_rust::bot::Provided,
        >,
    ) -> whatsapp_rust::bot::BotBuilder<
        whatsapp_rust::bot::Provided,
        whatsapp_rust::bot::Provided,
        whatsapp_rust::bot::Provided,
        whatsapp_rust::bot::Provided,
    >,
) -> TestClient {
    let (tx, rx) = whatsapp_rust::async_channel::unbounded();
    let mut builder = Bot::builder()
        .with_backend_arc(backend.clone())
        .with_transport_factory(TokioWebSocketTransportFactory::new().with_url(sim.ws_url()))
        .with_http_client(NoHttp)
        .with_runtime(TokioRuntime)
        .with_version((2, 3000, 1))
        .with_wanted_pre_key_count(10)
        .skip_history_sync()
        .with_event_handler(Forward(tx));
    if let Some(name) = push_name {
        builder = builder.with_push_name(name);
    }
    let bot = customize(builder).build().await.unwrap();
    TestClient {
        handle: bot.spawn(),
        events: rx,
        backend,
    }
}

/// Waits for the first event matching `pred`, failing the test after `timeout`.
pub async fn wait_event<F>(events: &Events, timeout: Duration, what: &str, pred: F) -> Arc<Event>
where
    F: Fn(&Event) -> bool,
{
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Ok(event)) if pred(&event) => return event,
            Ok(Ok(_)) => continue,
            Ok(Err(_)) => panic!("event stream closed while waiting for {what}"),
            Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
        }
    }
}

/// Waits for the first QR code the client shows.
pub async fn next_qr(events: &Events) -> String {
    match &*wait_event(events, Duration::from_secs(20), "a QR code", |e| {
        matches!(e, Event::PairingQrCode(_))
    })
    .await
    {
        Event::PairingQrCode(qr) => qr.code.clone(),
        _ => unreachable!(),
    }
}

pub async fn wait_connected(events: &Events, timeout: Duration) {
    wait_event(events, timeout, "Connected", |e| {
        matches!(e, Event::Connected(_))
    })
    .await;
}

/// Polls `check` until it holds, failing after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// A minimal HTTP/1.1 client for the control API.
pub async fn http(
    sim: &SimHandle,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut stream = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} /control{path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        sim.addr(),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, payload) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let value = if payload.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(payload).unwrap_or(serde_json::Value::String(payload.to_string()))
    };
    (status, value)
}

pub async fn post(
    sim: &SimHandle,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    http(sim, "POST", path, Some(&body.to_string())).await
}

pub async fn get(sim: &SimHandle, path: &str) -> (u16, serde_json::Value) {
    http(sim, "GET", path, None).await
}

pub async fn stats(sim: &SimHandle) -> serde_json::Value {
    get(sim, "/stats").await.1
}

/// Pairs a fresh client by QR and waits until it is connected. Returns the client and the
/// phone number the sim assigned.
pub async fn pair_by_qr(
    sim: &SimHandle,
    push_name: Option<&str>,
    phone: Option<&str>,
) -> (TestClient, String) {
    let client = spawn_client(sim, new_backend(), push_name).await;
    let qr = next_qr(&client.events).await;
    let mut body = serde_json::json!({ "qr": qr });
    if let Some(p) = phone {
        body["phone_number"] = p.into();
    }
    let (status, reply) = post(sim, "/scan-qr", body).await;
    assert_eq!(status, 200, "scan-qr failed: {reply}");
    let phone = reply["phone_number"].as_str().unwrap().to_string();
    wait_connected(&client.events, Duration::from_secs(30)).await;
    (client, phone)
}

/// The text of a message, whether sent as conversation or extended text.
pub fn text_of(message: &whatsapp_rust::waproto::whatsapp::Message) -> Option<String> {
    message.conversation.clone().or_else(|| {
        message
            .extended_text_message
            .as_option()
            .and_then(|m| m.text.clone())
    })
}

/// Waits until the client receives a message with `text`; returns the sender and chat.
pub async fn wait_text(events: &Events, text: &str) -> (String, String) {
    let event = wait_event(
        events,
        Duration::from_secs(20),
        &format!("message {text:?}"),
        |e| {
            matches!(e, Event::Messages(_))
                && e.messages()
                    .any(|m| text_of(&m.message).as_deref() == Some(text))
        },
    )
    .await;
    let m = event
        .messages()
        .find(|m| text_of(&m.message).as_deref() == Some(text))
        .unwrap();
    (
        m.info.source.sender.to_string(),
        m.info.source.chat.to_string(),
    )
}

/// Polls a sim-only user's inbox until a message with `text` shows up.
pub async fn wait_inbox(sim: &SimHandle, phone: &str, text: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, inbox) = get(sim, &format!("/accounts/{phone}/messages")).await;
        if let Some(m) = inbox
            .as_array()
            .and_then(|a| a.iter().find(|m| m["text"] == text))
        {
            return m.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{phone} never received {text:?}: {inbox}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn pn_jid(phone: &str) -> whatsapp_rust::Jid {
    whatsapp_rust::Jid::pn(phone)
}
