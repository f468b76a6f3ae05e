//! `wagate pair <session-id> [--phone N]`: pairs a session of a running wagate from a
//! terminal. It reaches the server through the same configuration the server reads (listen
//! address; token from `WAGATE_API_TOKEN` or the data dir's `api-token`), creates and connects
//! the session when needed, draws the QR code (again whenever WhatsApp rotates it) or shows
//! the pair code, and returns once the session is logged in.

use serde_json::{Value, json};
use std::io::Write;
use std::time::{Duration, Instant};

use crate::config::Config;

/// How often the session is looked at.
const POLL: Duration = Duration::from_millis(500);
/// Every request's limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PairError {
    #[error("{0}")]
    Setup(String),
    #[error("cannot reach wagate at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("wagate answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("the session is {0}; pairing cannot go on")]
    Ended(String),
    #[error("not logged in after {0:?}")]
    TimedOut(Duration),
}

pub struct PairArgs {
    pub session: String,
    /// Pair by code with this phone number instead of by QR.
    pub phone: Option<String>,
    /// The server's base URL; by default from the configuration's listen address.
    pub url: Option<String>,
    /// Give up after this long.
    pub timeout: Duration,
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), PairError> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| PairError::Unreachable {
            url: self.base.clone(),
            message: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, PairError> {
        match self.call(method, path, body).await? {
            (200..=299, value) => Ok(value),
            (status, body) => Err(PairError::Refused {
                status,
                body: body.to_string(),
            }),
        }
    }

    async fn status(&self, session: &str) -> Result<String, PairError> {
        let view = self
            .ok(reqwest::Method::GET, &format!("/sessions/{session}"), None)
            .await?;
        Ok(view["status"].as_str().unwrap_or_default().to_owned())
    }
}

/// Where the server listens, as a URL this machine can dial.
fn base_url(config: &Config) -> String {
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}")
}

fn token(config: &Config) -> Result<String, PairError> {
    if let Some(token) = &config.api_token {
        return Ok(token.expose().to_owned());
    }
    let path = config.api_token_path();
    std::fs::read_to_string(&path)
        .map(|t| t.trim().to_owned())
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            PairError::Setup(format!(
                "no API token: set WAGATE_API_TOKEN or run wagate once to create {}",
                path.display()
            ))
        })
}

/// The QR code as text for a terminal: two modules per character row.
pub fn terminal_qr(data: &str) -> Result<String, String> {
    let code = qrcode::QrCode::new(data.as_bytes()).map_err(|e| e.to_string())?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// Runs the pairing; `Ok` once the session is logged in.
pub async fn run(config: &Config, args: PairArgs) -> Result<(), PairError> {
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| PairError::Setup(e.to_string()))?,
        base: args.url.clone().unwrap_or_else(|| base_url(config)),
        token: token(config)?,
    };
    let id = &args.session;
    match client
        .call(reqwest::Method::GET, &format!("/sessions/{id}"), None)
        .await?
    {
        (200, view) if view["status"] == "logged_in" => {
            say(&format!("Session {id} is already logged in."));
            return Ok(());
        }
        (200, view) => {
            let status = view["status"].as_str().unwrap_or_default();
            if matches!(status, "disconnected" | "failed" | "logged_out") {
                client
                    .ok(
                        reqwest::Method::POST,
                        &format!("/sessions/{id}/connect"),
                        None,
                    )
                    .await?;
            }
        }
        (404, _) => {
            client
                .ok(
                    reqwest::Method::POST,
                    "/sessions",
                    Some(json!({ "id": id })),
                )
                .await?;
            say(&format!("Created session {id}."));
        }
        (status, body) => {
            return Err(PairError::Refused {
                status,
                body: body.to_string(),
            });
        }
    }
    let deadline = Instant::now() + args.timeout;
    let mut shown: Option<String> = None;
    loop {
        if Instant::now() > deadline {
            return Err(PairError::TimedOut(args.timeout));
        }
        let status = client.status(id).await?;
        match status.as_str() {
            "logged_in" => {
                say(&format!("Session {id} is logged in."));
                return Ok(());
            }
            "logged_out" | "failed" | "disconnected" if shown.is_some() => {
                return Err(PairError::Ended(status));
            }
            _ => {}
        }
        match &args.phone {
            Some(phone) if shown.is_none() => {
                let (code_status, reply) = client
                    .call(
                        reqwest::Method::POST,
                        &format!("/sessions/{id}/pair"),
                        Some(json!({ "phone_number": phone })),
                    )
                    .await?;
                if code_status == 200 {
                    let code = reply["code"].as_str().unwrap_or_default().to_owned();
                    say(&format!(
                        "On the phone: WhatsApp > Linked devices > Link with phone number, then enter\n\n    {code}\n"
                    ));
                    shown = Some(code);
                }
                // 409 while the connection comes up: asked again on the next round.
            }
            Some(_) => {}
            None => {
                let (qr_status, reply) = client
                    .call(reqwest::Method::GET, &format!("/sessions/{id}/qr"), None)
                    .await?;
                let code = reply["qr_codes"][0].as_str();
                if qr_status == 200
                    && let Some(code) = code
                    && shown.as_deref() != Some(code)
                {
                    let drawn = terminal_qr(code).map_err(PairError::Setup)?;
                    // Clear the screen so a rotated code replaces the old one.
                    say(&format!(
                        "\x1b[2J\x1b[HScan with WhatsApp > Linked devices > Link a device (session {id}):\n\n{drawn}"
                    ));
                    shown = Some(code.to_owned());
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_terminal_qr_is_block_characters() {
        let drawn = terminal_qr("2@abc,def,ghi,jkl").unwrap();
        assert!(drawn.lines().count() > 10);
        assert!(drawn.chars().any(|c| matches!(c, '▀' | '▄' | '█')));
    }
}
