//! Test harness: runs wagate on an ephemeral loopback port, as the real binary (where a process
//! boundary is under test: signals, kill -9, restarts, printed output) or in-process through
//! `wagate::run`, and talks to it over HTTP only.
//!
//! Every server started here dials nothing but loopback: the WhatsApp URL points at
//! a closed local port, so sessions stay trying to connect.

#![allow(dead_code)]

pub mod contract;
pub mod receiver;
pub mod sim;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// The API token every server gets unless a test asks for a generated one.
pub const API_TOKEN: &str = "test-api-token-5f2c9a7e4b1d";
/// The admin token used by tests that configure one.
pub const ADMIN_TOKEN: &str = "test-admin-token-8d3e1f6a0c72";
/// Nothing listens there: sessions keep trying to connect, and never leave the machine.
pub const UNREACHABLE_WHATSAPP_URL: &str = "ws://127.0.0.1:9/ws/chat";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The default body limit of the server (1 MiB).
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

// ---------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------

/// Polls `condition` until it holds or `timeout` has passed. Returns whether it held.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `probe` until it yields `Some` or `timeout` has passed.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Current Unix time in seconds.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_secs() as i64
}

// ---------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------

/// One HTTP answer, fully read.
#[derive(Debug, Clone)]
pub struct Reply {
    pub method: Method,
    pub url: String,
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Reply {
    pub fn code(&self) -> u16 {
        self.status.as_u16()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    pub fn content_type(&self) -> String {
        self.headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase()
    }

    /// The body as JSON; panics (showing the body) if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| {
            panic!(
                "{} {} -> {}: body is not JSON ({e}): {:?}",
                self.method,
                self.url,
                self.status,
                self.text()
            )
        })
    }

    fn describe(&self) -> String {
        format!(
            "{} {} -> {} {:?}",
            self.method,
            self.url,
            self.status,
            truncate(&self.text(), 600)
        )
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.code(),
            status,
            "unexpected status: {}",
            self.describe()
        );
        self.json()
    }

    /// Asserts the status only.
    #[track_caller]
    pub fn expect_status(&self, status: u16) {
        assert_eq!(
            self.code(),
            status,
            "unexpected status: {}",
            self.describe()
        );
    }

    /// Asserts an error answer: this status, a JSON body `{"error": code, "message": "..."}`
    /// with a non-empty message. Returns the message.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> String {
        assert_eq!(
            self.code(),
            status,
            "unexpected status: {}",
            self.describe()
        );
        let body = self.error_body();
        assert_eq!(
            body["error"].as_str(),
            Some(code),
            "unexpected error code: {}",
            self.describe()
        );
        body["message"].as_str().unwrap().to_string()
    }

    /// Asserts the error shape (JSON, `error` and non-empty `message` strings) and returns it.
    #[track_caller]
    pub fn error_body(&self) -> Value {
        let ct = self.content_type();
        assert!(
            ct.starts_with("application/json"),
            "error answer is not application/json (content-type {ct:?}): {}",
            self.describe()
        );
        let body: Value = serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {}", self.describe()));
        assert!(
            body.is_object(),
            "error body is not an object: {}",
            self.describe()
        );
        assert!(
            body["error"].as_str().is_some_and(|s| !s.is_empty()),
            "error body lacks an \"error\" string: {}",
            self.describe()
        );
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|s| !s.trim().is_empty()),
            "error body lacks a non-empty \"message\" string: {}",
            self.describe()
        );
        body
    }

    /// Asserts the answer is not a server error.
    #[track_caller]
    pub fn expect_not_5xx(&self) {
        assert!(
            !self.status.is_server_error(),
            "server error for a client request: {}",
            self.describe()
        );
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        s.to_string()
    } else {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &s[..end], s.len())
    }
}

// ---------------------------------------------------------------------------
// HTTP client bound to one server and one credential
// ---------------------------------------------------------------------------

/// A request helper: base URL of a server plus an optional bearer token.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    prefix: &'static str,
    token: Option<String>,
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("{}{}{}", self.base, self.prefix, path)
    }

    /// The same, on a client that opens a new connection for every request
    /// (for requests after which the server may close the connection).
    pub fn unpooled(&self) -> Api {
        Api {
            client: reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .timeout(REQUEST_TIMEOUT)
                .build()
                .expect("http client"),
            ..self.clone()
        }
    }

    /// A request builder with the bearer token (if any) already set.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.client.request(method, self.url(path));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Sends a built request and reads the whole answer.
    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Reply {
        let req = rb.build().expect("request builds");
        let method = req.method().clone();
        let url = req.url().to_string();
        let resp = self
            .client
            .execute(req)
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: request failed: {e:?}"));
        let status = resp.status();
        // After redirects, the answer is the final URL's.
        let answered_url = resp.url().to_string();
        let headers = resp.headers().clone();
        let bytes = resp
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: reading body failed: {e:?}"))
            .to_vec();
        let content_type = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // Benchmarks share this client; they measure the server, not the check.
        if cfg!(test)
            && let Err(departure) = contract::check(
                &method,
                &answered_url,
                status.as_u16(),
                content_type,
                &bytes,
            )
        {
            panic!("{departure}");
        }
        Reply {
            method,
            url,
            status,
            headers,
            bytes,
        }
    }

    pub async fn call(&self, method: Method, path: &str) -> Reply {
        self.send(self.request(method, path)).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path).await
    }

    /// POST without a body.
    pub async fn post(&self, path: &str) -> Reply {
        self.call(Method::POST, path).await
    }

    /// POST with a JSON body (`Content-Type: application/json`).
    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    /// POST with raw bytes and the given content type.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        self.send(
            self.request(Method::POST, path)
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path).await
    }

    /// PUT with a JSON body.
    pub async fn put_json(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(Method::PUT, path).json(body)).await
    }

    /// DELETE with a JSON body.
    pub async fn delete_json(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(Method::DELETE, path).json(body))
            .await
    }
}

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

/// How to start a server. `TestServer::builder()` to make one.
#[derive(Clone)]
pub struct Builder {
    env: BTreeMap<String, String>,
    generate_token: bool,
    /// Run `wagate::run` inside the test's runtime instead of spawning the binary.
    in_process: bool,
    admin_token: Option<String>,
    data_dir: Option<PathBuf>,
    config: Option<String>,
    whatsapp_url: Option<String>,
}

impl Builder {
    /// Points the client at a WhatsApp simulator on loopback.
    pub fn whatsapp_url(mut self, url: impl Into<String>) -> Self {
        self.whatsapp_url = Some(url.into());
        self
    }

    /// Runs with `--config` pointing at a file with this text (see [`config_with`]).
    pub fn config(mut self, text: String) -> Self {
        self.config = Some(text);
        self
    }

    /// Sets an environment variable for the server (e.g. `WAGATE_SUPERVISION_MAX_RESTARTS`).
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.insert(key.to_string(), value.into());
        self
    }

    /// Configures a separate admin token (`WAGATE_ADMIN_TOKEN`).
    pub fn admin_token(mut self, token: &str) -> Self {
        self.admin_token = Some(token.to_string());
        self
    }

    /// Leaves `WAGATE_API_TOKEN` unset, so the server generates its own token.
    pub fn generated_token(mut self) -> Self {
        self.generate_token = true;
        self
    }

    /// Runs on this data directory instead of a fresh temporary one.
    /// Serves from `wagate::run` in this test's runtime: no process, no start-up cost. For
    /// tests of the edge, where no process boundary is under test (no signals, no kill -9,
    /// no printed output).
    pub fn in_process(mut self) -> Self {
        self.in_process = true;
        self
    }

    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    pub async fn start(self) -> TestServer {
        let (root, data_dir) = match &self.data_dir {
            Some(d) => (None, d.clone()),
            None => {
                let root = tempfile::Builder::new()
                    .prefix("wagate-test-")
                    .tempdir()
                    .expect("create temp dir");
                let data = root.path().join("data");
                std::fs::create_dir_all(&data).expect("create data dir");
                (Some(Arc::new(root)), data)
            }
        };
        let mut server = TestServer {
            builder: self,
            _root: root,
            data_dir,
            process: None,
            embedded: None,
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .expect("http client"),
            base: String::new(),
            api_token: String::new(),
            history: Vec::new(),
            last_stdout: Vec::new(),
            last_stderr: Vec::new(),
            config_dir: None,
        };
        server.spawn().await;
        server
    }
}

struct Embedded {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: JoinHandle<()>,
}

struct Process {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

/// A running `wagate` binary. Dropping it kills the process.
pub struct TestServer {
    builder: Builder,
    _root: Option<Arc<tempfile::TempDir>>,
    data_dir: PathBuf,
    process: Option<Process>,
    /// The server task and its shutdown trigger, for in-process servers.
    embedded: Option<Embedded>,
    client: reqwest::Client,
    base: String,
    api_token: String,
    /// Output of earlier runs of this server (for failure reports).
    history: Vec<String>,
    last_stdout: Vec<String>,
    last_stderr: Vec<String>,
    config_dir: Option<tempfile::TempDir>,
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_listen_line(line: &str) -> Option<String> {
    let line = strip_ansi(line);
    let idx = line.find("listening on http://")?;
    let rest = &line[idx + "listening on http://".len()..];
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    let port = addr.rsplit(':').next()?;
    if port.parse::<u16>().ok()? == 0 {
        return None;
    }
    Some(addr)
}

fn spawn_reader<R: Read + Send + 'static>(
    stream: R,
    lines: Arc<Mutex<Vec<String>>>,
    listen: Option<mpsc::Sender<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    if let Some(tx) = &listen
                        && let Some(addr) = parse_listen_line(&line)
                    {
                        let _ = tx.send(addr);
                    }
                    lines.lock().unwrap().push(line);
                }
            }
        }
    })
}

impl TestServer {
    pub fn builder() -> Builder {
        Builder {
            env: BTreeMap::new(),
            generate_token: false,
            in_process: false,
            admin_token: None,
            data_dir: None,
            config: None,
            whatsapp_url: None,
        }
    }

    /// A server with defaults: fixed API token, no admin token, fresh data dir.
    pub async fn start() -> TestServer {
        Self::builder().start().await
    }

    /// The same, served in-process (see [`Builder::in_process`]).
    pub async fn start_in_process() -> TestServer {
        Self::builder().in_process().start().await
    }

    /// The configuration file the builder asked for, written once.
    fn config_file(&mut self) -> Option<PathBuf> {
        let text = self.builder.config.clone()?;
        let dir = self
            .config_dir
            .get_or_insert_with(|| {
                tempfile::Builder::new()
                    .prefix("wagate-test-config-")
                    .tempdir()
                    .expect("create config dir")
            })
            .path()
            .to_path_buf();
        let path = dir.join("config.toml");
        std::fs::write(&path, text).expect("write config file");
        Some(path)
    }

    /// The loopback WhatsApp URL this server dials.
    fn whatsapp_url(&self) -> String {
        let url = self
            .builder
            .whatsapp_url
            .clone()
            .unwrap_or_else(|| UNREACHABLE_WHATSAPP_URL.to_string());
        assert!(
            url.starts_with("ws://127.0.0.1:"),
            "tests only ever point wagate at loopback, not {url}"
        );
        url
    }

    async fn spawn_embedded(&mut self) {
        assert!(self.embedded.is_none(), "server already running");
        let mut env: Vec<(String, String)> = Vec::new();
        if !self.builder.generate_token {
            env.push(("WAGATE_API_TOKEN".into(), API_TOKEN.into()));
        }
        if let Some(admin) = &self.builder.admin_token {
            env.push(("WAGATE_ADMIN_TOKEN".into(), admin.clone()));
        }
        env.extend(self.builder.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.push(("WAGATE_WHATSAPP_URL".into(), self.whatsapp_url()));
        let overrides = wagate::config::Overrides {
            config: self.config_file(),
            listen: Some("127.0.0.1:0".parse().expect("loopback address")),
            data_dir: Some(self.data_dir.clone()),
        };
        let config = wagate::config::Config::load(&overrides, env).expect("test configuration");
        let token_path = config.api_token_path();
        // A runtime of its own, as a process would have: the server shuts down gracefully when
        // the test drops it, whatever the test's runtime is doing by then.
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel::<std::net::SocketAddr>();
        let thread = std::thread::Builder::new()
            .name("wagate-in-process".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("server runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind loopback");
                    let _ = bound_tx.send(listener.local_addr().expect("local address"));
                    let stopped = async {
                        let _ = stop.await;
                    };
                    if let Err(e) = wagate::run(config, listener, stopped).await {
                        panic!("in-process wagate failed: {e}");
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawn server thread");
        let addr = bound_rx.await.expect("the server bound its listener");
        self.embedded = Some(Embedded {
            shutdown: Some(shutdown),
            thread,
        });
        self.base = format!("http://{addr}");
        self.api_token = if self.builder.generate_token {
            wait_for(Duration::from_secs(10), || async {
                std::fs::read_to_string(&token_path)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
            })
            .await
            .expect("a generated api-token file")
        } else {
            API_TOKEN.to_string()
        };
        // Served once the edge answers.
        let health = self.url("/health");
        let up = wait_until(STARTUP_TIMEOUT, || async {
            self.client.get(&health).send().await.is_ok()
        })
        .await;
        assert!(up, "in-process wagate did not answer /health");
    }

    /// Stops an in-process server gracefully and waits (bounded) for it.
    pub async fn shutdown_embedded(&mut self) {
        let mut embedded = self.embedded.take().expect("an in-process server");
        if let Some(tx) = embedded.shutdown.take() {
            let _ = tx.send(());
        }
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while !embedded.thread.is_finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn spawn(&mut self) {
        if self.builder.in_process {
            return self.spawn_embedded().await;
        }
        assert!(self.process.is_none(), "server already running");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wagate"));
        let cwd = self
            .data_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        cmd.current_dir(&cwd)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(path) = self.config_file() {
            cmd.arg("--config").arg(path);
        }
        // Nothing from the caller's environment may redirect the server.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy().to_string();
            if k.starts_with("WAGATE_") || k.to_ascii_lowercase().ends_with("_proxy") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env("WAGATE_WHATSAPP_URL", UNREACHABLE_WHATSAPP_URL);
        if !self.builder.generate_token {
            cmd.env("WAGATE_API_TOKEN", API_TOKEN);
        }
        if let Some(admin) = &self.builder.admin_token {
            cmd.env("WAGATE_ADMIN_TOKEN", admin);
        }
        for (k, v) in &self.builder.env {
            cmd.env(k, v);
        }
        // The test's own settings win, except the WhatsApp URL: always loopback (a simulator
        // the test started, or nothing at all).
        cmd.env("WAGATE_WHATSAPP_URL", self.whatsapp_url());

        let mut child = cmd.spawn().expect("spawn wagate binary");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let readers = vec![
            spawn_reader(
                child.stderr.take().unwrap(),
                stderr.clone(),
                Some(tx.clone()),
            ),
            spawn_reader(child.stdout.take().unwrap(), stdout.clone(), Some(tx)),
        ];
        self.process = Some(Process {
            child,
            stderr,
            stdout,
            readers,
        });

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let addr = loop {
            match rx.try_recv() {
                Ok(addr) => break addr,
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.fail_startup("the server closed its output before it was listening")
                }
            }
            if let Some(status) = self.process.as_mut().unwrap().child.try_wait().unwrap() {
                // Give the readers a moment to collect the last lines.
                std::thread::sleep(Duration::from_millis(100));
                self.fail_startup(&format!("the server exited during startup: {status}"));
            }
            if Instant::now() >= deadline {
                self.fail_startup("no `listening on http://...` line within the startup timeout");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        self.base = format!("http://{addr}");
        assert!(
            addr.starts_with("127.0.0.1:"),
            "server listens on {addr}, expected loopback"
        );

        self.api_token = if self.builder.generate_token {
            let path = self.token_file();
            let token = wait_for(Duration::from_secs(10), || async {
                std::fs::read_to_string(&path)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
            })
            .await;
            match token {
                Some(t) => t,
                None => self.fail_startup("no generated api-token file"),
            }
        } else {
            API_TOKEN.to_string()
        };
    }

    #[track_caller]
    fn fail_startup(&mut self, why: &str) -> ! {
        if let Some(p) = self.process.as_mut() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        panic!("wagate failed to start: {why}\n{}", self.output());
    }

    // --- addresses and credentials -------------------------------------------------

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Absolute URL of `path` (e.g. `/health`, `/api/v1/sessions`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn token_file(&self) -> PathBuf {
        self.data_dir.join("api-token")
    }

    pub fn api_token(&self) -> &str {
        &self.api_token
    }

    /// The token that opens admin routes: the admin token if one is set, else the API token.
    pub fn admin_token(&self) -> &str {
        self.builder
            .admin_token
            .as_deref()
            .unwrap_or(&self.api_token)
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    fn make(&self, prefix: &'static str, token: Option<&str>) -> Api {
        assert!(
            self.process.is_some() || self.embedded.is_some(),
            "server is not running"
        );
        Api {
            client: self.client.clone(),
            base: self.base.clone(),
            prefix,
            token: token.map(str::to_string),
        }
    }

    /// `/api/v1` with the API token.
    pub fn api(&self) -> Api {
        self.make("/api/v1", Some(&self.api_token))
    }

    /// `/api/v1` with the admin credential (admin token if set, else the API token).
    pub fn admin(&self) -> Api {
        self.make("/api/v1", Some(self.admin_token()))
    }

    /// `/api/v1` with an arbitrary bearer token.
    pub fn api_with_token(&self, token: &str) -> Api {
        self.make("/api/v1", Some(token))
    }

    /// `/api/v1` without any Authorization header.
    pub fn anon(&self) -> Api {
        self.make("/api/v1", None)
    }

    /// Paths from the server root (`/health`, `/metrics`), with this token (or none).
    pub fn root(&self, token: Option<&str>) -> Api {
        self.make("", token)
    }

    // --- process control -----------------------------------------------------------

    pub fn pid(&self) -> u32 {
        assert!(
            self.embedded.is_none(),
            "an in-process server has no pid of its own"
        );
        self.process
            .as_ref()
            .expect("server is not running")
            .child
            .id()
    }

    pub fn is_running(&mut self) -> bool {
        if let Some(embedded) = &self.embedded {
            return !embedded.thread.is_finished();
        }
        match self.process.as_mut() {
            Some(p) => p.child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    fn reap(&mut self, mut p: Process) -> ExitStatus {
        let status = p.child.wait().expect("wait for wagate");
        for r in p.readers.drain(..) {
            let _ = r.join();
        }
        self.history.push(format!(
            "--- earlier run ({status}) stdout ---\n{}\n--- earlier run stderr ---\n{}",
            p.stdout.lock().unwrap().join("\n"),
            p.stderr.lock().unwrap().join("\n")
        ));
        // Keep the last run's output readable through stdout_lines()/stderr_lines().
        self.last_stdout = p.stdout.lock().unwrap().clone();
        self.last_stderr = p.stderr.lock().unwrap().clone();
        status
    }

    /// SIGKILL (kill -9) and wait for the process to be gone.
    pub fn kill9(&mut self) {
        let mut p = self.process.take().expect("server is not running");
        let _ = p.child.kill();
        self.reap(p);
    }

    /// Sends a signal with the `kill` command.
    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} failed");
    }

    /// SIGTERM, wait for the exit (bounded), return the exit status.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.stop_with("-TERM").await
    }

    /// SIGINT, wait for the exit (bounded), return the exit status.
    pub async fn interrupt(&mut self) -> ExitStatus {
        self.stop_with("-INT").await
    }

    async fn stop_with(&mut self, sig: &str) -> ExitStatus {
        self.signal(sig);
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            let p = self.process.as_mut().expect("server is not running");
            if p.child.try_wait().unwrap().is_some() {
                let p = self.process.take().unwrap();
                return self.reap(p);
            }
            if Instant::now() >= deadline {
                let mut p = self.process.take().unwrap();
                let _ = p.child.kill();
                self.reap(p);
                panic!(
                    "wagate did not exit within {EXIT_TIMEOUT:?} of {sig}\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the binary again on the same data dir with the same settings.
    /// A still running process is stopped with SIGTERM first.
    pub async fn restart(&mut self) {
        if self.process.is_some() {
            let status = self.terminate().await;
            assert!(status.success(), "SIGTERM exit status {status}");
        }
        self.spawn().await;
    }

    /// Starts the binary again after `kill9()`/`terminate()`.
    pub async fn start_again(&mut self) {
        self.spawn().await;
    }

    // --- output ------------------------------------------------------------------------

    pub fn stdout_lines(&self) -> Vec<String> {
        match &self.process {
            Some(p) => p.stdout.lock().unwrap().clone(),
            None => self.last_stdout.clone(),
        }
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        match &self.process {
            Some(p) => p.stderr.lock().unwrap().clone(),
            None => self.last_stderr.clone(),
        }
    }

    /// Everything the server printed, all runs (for failure messages).
    pub fn output(&self) -> String {
        let mut out = self.history.join("\n");
        if let Some(p) = &self.process {
            out.push_str(&format!(
                "\n--- stdout ---\n{}\n--- stderr ---\n{}",
                p.stdout.lock().unwrap().join("\n"),
                p.stderr.lock().unwrap().join("\n")
            ));
        }
        out
    }

    // --- common API shortcuts -----------------------------------------------------------

    /// Creates a session with this id and name; asserts 201 and returns the session object.
    pub async fn create_session(&self, id: &str, name: &str) -> Value {
        let r = self
            .api()
            .post_json("/sessions", &serde_json::json!({"id": id, "name": name}))
            .await;
        let body = r.expect(201);
        body["session"].clone()
    }

    /// GET /sessions/{id}, asserting 200.
    pub async fn session(&self, id: &str) -> Value {
        self.api().get(&format!("/sessions/{id}")).await.expect(200)
    }

    /// The session's `status` string (GET /sessions/{id}).
    pub async fn session_status(&self, id: &str) -> String {
        self.session(id).await["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The whole actor tree (`GET /admin/actors`), asserting 200.
    pub async fn actor_tree(&self) -> Value {
        self.admin().get("/admin/actors").await.expect(200)
    }

    /// One node found in the tree by name, if present.
    pub async fn tree_node(&self, name: &str) -> Option<Value> {
        let tree = self.actor_tree().await;
        tree["actors"]
            .as_array()
            .and_then(|roots| roots.iter().find_map(|n| find_node(n, name)))
    }

    /// `GET /admin/actors/{name}` (name percent-encoded).
    pub async fn actor(&self, name: &str) -> Reply {
        self.admin()
            .get(&format!("/admin/actors/{}", encode(name)))
            .await
    }

    /// `POST /admin/actors/{name}/crash` (test-server builds only).
    pub async fn crash(&self, name: &str) -> Reply {
        self.admin()
            .post(&format!("/admin/actors/{}/crash", encode(name)))
            .await
    }

    /// `POST /admin/actors/{name}/restart`.
    pub async fn restart_actor(&self, name: &str) -> Reply {
        self.admin()
            .post(&format!("/admin/actors/{}/restart", encode(name)))
            .await
    }

    /// Whether `GET /ready` answers 200.
    pub async fn is_ready(&self) -> bool {
        match self.client.get(self.url("/ready")).send().await {
            Ok(r) => r.status() == StatusCode::OK,
            Err(_) => false,
        }
    }

    /// Waits (bounded) until `GET /ready` answers 200.
    pub async fn wait_ready(&self) {
        let ok = wait_until(Duration::from_secs(20), || self.is_ready()).await;
        assert!(ok, "server never became ready\n{}", self.output());
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut embedded) = self.embedded.take()
            && let Some(tx) = embedded.shutdown.take()
        {
            let _ = tx.send(());
        }
        if let Some(mut p) = self.process.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
            if std::thread::panicking() {
                eprintln!(
                    "==== wagate output (test failed) ====\n{}\n--- stdout ---\n{}\n--- stderr ---\n{}\n====",
                    self.history.join("\n"),
                    p.stdout.lock().unwrap().join("\n"),
                    p.stderr.lock().unwrap().join("\n")
                );
            }
        } else if std::thread::panicking() && !self.history.is_empty() {
            eprintln!(
                "==== wagate output (test failed) ====\n{}\n====",
                self.history.join("\n")
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Configuration files
// ---------------------------------------------------------------------------

/// The project's default `config.toml` with some keys changed, as a user would edit it.
/// `edits` are `(section, key, toml_value)`; section `""` is the top level. The
/// WhatsApp URL is always pointed at the closed loopback port as well.
pub fn config_with(edits: &[(&str, &str, &str)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let url = format!("{UNREACHABLE_WHATSAPP_URL:?}");
    let mut edits: Vec<(&str, &str, &str)> = edits.to_vec();
    edits.push(("whatsapp", "url", &url));
    let mut done = vec![false; edits.len()];
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            out.push(line.to_string());
            continue;
        }
        let key = t.split('=').next().unwrap_or("").trim();
        let is_assignment = !t.starts_with('#') && t.contains('=');
        match edits
            .iter()
            .position(|(s, k, _)| is_assignment && *s == section && *k == key)
        {
            Some(i) => {
                out.push(format!("{} = {}", edits[i].1, edits[i].2));
                done[i] = true;
            }
            None => out.push(line.to_string()),
        }
    }
    for (i, (s, k, _)) in edits.iter().enumerate() {
        assert!(done[i], "config.toml has no key {k:?} in section {s:?}");
    }
    out.join("\n") + "\n"
}

// ---------------------------------------------------------------------------
// Helpers on JSON and names
// ---------------------------------------------------------------------------

/// Percent-encodes everything but unreserved characters (so `:` and `/` are encoded).
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Depth-first search for a node by `name` in an actor tree.
pub fn find_node(node: &Value, name: &str) -> Option<Value> {
    if node["name"].as_str() == Some(name) {
        return Some(node.clone());
    }
    node["children"]
        .as_array()?
        .iter()
        .find_map(|c| find_node(c, name))
}

/// Names of a node's direct children, sorted.
pub fn child_names(node: &Value) -> Vec<String> {
    let mut names: Vec<String> = node["children"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Whether `s` is a valid session id: 1-64 chars of `[A-Za-z0-9_-]`.
pub fn is_valid_session_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The status a session shows while WhatsApp is unreachable and it wants to be online: it
/// keeps trying, so it is never `disconnected` (that is a session that gave up or was told to).
pub const OFFLINE_TRYING: &[&str] = &["connecting"];

/// Every status the contract defines for a session.
pub const SESSION_STATUSES: &[&str] = &[
    "disconnected",
    "connecting",
    "waiting_for_qr",
    "waiting_for_pair_code",
    "connected",
    "logged_in",
    "logged_out",
    "failed",
];

/// Every status the contract defines for an actor node.
pub const ACTOR_STATUSES: &[&str] = &["starting", "running", "restarting", "stopped", "failed"];

/// Asserts `v` is a JSON integer (Unix seconds or a count) and returns it.
#[track_caller]
pub fn int(v: &Value, what: &str) -> i64 {
    v.as_i64()
        .unwrap_or_else(|| panic!("{what} is not an integer: {v}"))
}

/// Asserts a full session object: every field present with the contract's type,
/// and the state of a session that was never paired.
#[track_caller]
pub fn assert_unpaired_session(s: &Value, id: &str, name: &str) {
    let obj = s
        .as_object()
        .unwrap_or_else(|| panic!("session is not an object: {s}"));
    for key in [
        "id",
        "name",
        "status",
        "is_logged_in",
        "phone_number",
        "push_name",
        "created_at",
        "updated_at",
        "last_connected_at",
    ] {
        assert!(obj.contains_key(key), "session lacks {key:?}: {s}");
    }
    assert_eq!(s["id"], id, "id: {s}");
    assert_eq!(s["name"], name, "name: {s}");
    let status = s["status"]
        .as_str()
        .unwrap_or_else(|| panic!("status is not a string: {s}"));
    assert!(
        SESSION_STATUSES.contains(&status),
        "status {status:?} is not a contract status: {s}"
    );
    assert_ne!(
        status, "logged_in",
        "never-paired session is logged_in: {s}"
    );
    assert_eq!(s["is_logged_in"], false, "is_logged_in: {s}");
    assert!(s["phone_number"].is_null(), "phone_number: {s}");
    assert!(s["push_name"].is_null(), "push_name: {s}");
    assert!(s["last_connected_at"].is_null(), "last_connected_at: {s}");
    let created = int(&s["created_at"], "created_at");
    let updated = int(&s["updated_at"], "updated_at");
    let now = now_secs();
    assert!(
        created > 1_600_000_000 && created <= now + 5,
        "created_at {created} is not a plausible Unix time in seconds (now {now})"
    );
    assert!(
        updated >= created && updated <= now + 5,
        "updated_at {updated} not in [created_at, now]: {s}"
    );
}

/// Asserts a node has every field with the contract's type.
#[track_caller]
pub fn assert_node_shape(n: &Value) {
    let obj = n
        .as_object()
        .unwrap_or_else(|| panic!("node is not an object: {n}"));
    for key in [
        "name",
        "kind",
        "status",
        "started_at",
        "restarts",
        "last_failure",
        "messages_handled",
        "children",
    ] {
        assert!(obj.contains_key(key), "node lacks {key:?}: {n}");
    }
    assert!(n["name"].is_string(), "name: {n}");
    assert!(n["kind"].is_string(), "kind: {n}");
    let status = n["status"].as_str().unwrap_or_default();
    assert!(
        ACTOR_STATUSES.contains(&status),
        "node status {status:?} is not a contract status: {n}"
    );
    let started = int(&n["started_at"], "started_at");
    assert!(
        started > 1_600_000_000 && started <= now_secs() + 5,
        "started_at {started} is not a plausible Unix time: {n}"
    );
    assert!(n["restarts"].as_u64().is_some(), "restarts: {n}");
    assert!(
        n["messages_handled"].as_u64().is_some(),
        "messages_handled: {n}"
    );
    let lf = &n["last_failure"];
    assert!(
        lf.is_null() || (lf["at"].is_i64() && lf["reason"].is_string()),
        "last_failure must be null or {{at, reason}}: {n}"
    );
    assert!(n["children"].is_array(), "children: {n}");
}
