//! A `wa-sim` started in the test process, and its JSON control API.

use serde_json::{Value, json};

pub struct Sim {
    pub handle: wa_sim::SimHandle,
    http: reqwest::Client,
}

impl Sim {
    pub async fn start() -> Sim {
        let handle = wa_sim::start(wa_sim::SimConfig::default())
            .await
            .expect("start wa-sim");
        Sim {
            handle,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    /// The websocket URL to point wagate at.
    pub fn url(&self) -> String {
        self.handle.ws_url()
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.handle.control_url()));
        if let Some(body) = body {
            rb = rb.json(&body);
        }
        let resp = rb.send().await.expect("sim control request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// POST that must succeed; returns the answer.
    pub async fn post_ok(&self, path: &str, body: Value) -> Value {
        let (status, reply) = self.post(path, body).await;
        assert!((200..300).contains(&status), "{path}: {status} {reply}");
        reply
    }

    /// GET that must succeed; returns the answer.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (status, reply) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {reply}");
        reply
    }

    pub async fn stats(&self) -> Value {
        self.get_ok("/stats").await
    }

    /// The simulator's own view of a group.
    pub async fn group(&self, jid: &str) -> Value {
        self.get_ok(&format!("/groups/{jid}")).await
    }

    /// Creates session `id` on `server` and pairs it by scanning its QR code with the phone
    /// `phone` (shown as `push_name`); returns once the session is logged in.
    pub async fn pair_by_qr(
        &self,
        server: &super::TestServer,
        id: &str,
        phone: &str,
        push_name: &str,
    ) {
        let api = server.api();
        api.post_json("/sessions", &json!({ "id": id }))
            .await
            .expect(201);
        let qr = super::wait_for(std::time::Duration::from_secs(20), || async {
            let r = api.get(&format!("/sessions/{id}/qr")).await;
            (r.code() == 200).then(|| r.json())
        })
        .await
        .expect("a QR code");
        let (status, linked) = self
            .post(
                "/scan-qr",
                json!({"qr": qr["qr_codes"][0], "phone_number": phone, "push_name": push_name}),
            )
            .await;
        assert_eq!(status, 200, "{linked}");
        let logged_in = super::wait_until(std::time::Duration::from_secs(60), || async {
            api.get(&format!("/sessions/{id}")).await.json()["status"] == "logged_in"
        })
        .await;
        assert!(logged_in, "session {id} logged in\n{}", server.output());
    }

    /// A user that exists only inside the simulator, with real Signal keys; returns its JID.
    pub async fn user(&self, phone: &str) -> String {
        let reply = self
            .post_ok(
                "/accounts",
                json!({"phone_number": phone, "push_name": phone}),
            )
            .await;
        reply["jid"].as_str().unwrap().to_string()
    }
}
