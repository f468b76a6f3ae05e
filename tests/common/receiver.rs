//! A real webhook receiver on 127.0.0.1: records every POST (headers and body) and answers
//! what the test scripts (2xx by default; 500, 429 with `Retry-After`, a slow answer, …).

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One delivery as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub path: String,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    /// What the receiver answered.
    pub status: u16,
    /// When the request arrived.
    pub at: std::time::Instant,
}

impl Delivery {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }

    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Answer {
    Status(u16),
    /// 429 with `Retry-After: <secs>`.
    RetryAfter(u64),
    /// Waits this long, then answers 200.
    Slow(Duration),
    /// Like `Slow` for bodies containing the text, 200 at once for the others.
    SlowWhen(String, Duration),
}

#[derive(Default)]
struct Inner {
    received: Vec<Delivery>,
    script: VecDeque<Answer>,
    /// Answer used once the script is empty.
    default: Option<Answer>,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let state = inner.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                    _ = stopped.changed() => return,
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(state, req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, inner, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers these, in order, to the next requests.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.inner.lock().unwrap().script.extend(answers);
    }

    /// Answers this once the script is empty (200 when never set).
    pub fn answer_by_default(&self, answer: Answer) {
        self.inner.lock().unwrap().default = Some(answer);
    }

    pub fn received(&self) -> Vec<Delivery> {
        self.inner.lock().unwrap().received.clone()
    }

    /// Deliveries the receiver acknowledged with a 2xx.
    pub fn accepted(&self) -> Vec<Delivery> {
        self.received()
            .into_iter()
            .filter(|d| (200..300).contains(&d.status))
            .collect()
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

async fn handle(
    state: Arc<Mutex<Inner>>,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let at = std::time::Instant::now();
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let answer = {
        let mut inner = state.lock().unwrap();
        inner
            .script
            .pop_front()
            .or_else(|| inner.default.clone())
            .unwrap_or(Answer::Status(200))
    };
    let (status, retry_after) = match answer {
        Answer::Status(s) => (s, None),
        Answer::RetryAfter(secs) => (429, Some(secs)),
        Answer::Slow(delay) => {
            tokio::time::sleep(delay).await;
            (200, None)
        }
        Answer::SlowWhen(text, delay) => {
            if String::from_utf8_lossy(&body).contains(&text) {
                tokio::time::sleep(delay).await;
            }
            (200, None)
        }
    };
    state.lock().unwrap().received.push(Delivery {
        path,
        headers,
        body,
        status,
        at,
    });
    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", secs.to_string().parse().unwrap());
    }
    response
}
