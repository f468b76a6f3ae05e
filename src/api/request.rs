//! A request as handlers see it: its route's path parameters, query flags and JSON body, each
//! parsed into the domain's types or refused with the contract's error.

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use std::pin::Pin;
use std::time::Duration;
use warp::http::{HeaderMap, header};

use super::errors::ApiError;
use super::models::parse_json;
use wagate_actors::model::{GroupJid, SessionId};

pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, warp::Error>> + Send>>;

pub struct Request {
    params: Vec<String>,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: BodyStream,
    body_limit: u64,
    body_timeout: Duration,
}

/// Until told otherwise, a body may take this long.
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// How much of an oversized body is read and dropped before answering 413, so that a client
/// that uploads before it reads sees the answer rather than a reset connection. Past this the
/// connection is closed instead.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

/// The values a boolean query flag accepts.
const FLAG_VALUES: &str = "true, false, 1 or 0";

impl Request {
    pub fn new(
        params: Vec<String>,
        raw_query: &str,
        headers: HeaderMap,
        body: BodyStream,
        body_limit: u64,
    ) -> Result<Self, ApiError> {
        let query = serde_urlencoded::from_str::<Vec<(String, String)>>(raw_query)
            .map_err(|e| ApiError::validation("query", format!("malformed query string: {e}")))?;
        Ok(Self {
            params,
            query,
            headers,
            body,
            body_limit,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        })
    }

    pub fn with_body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// The `i`-th path parameter, percent-decoded.
    pub fn param(&self, i: usize) -> &str {
        self.params.get(i).map(String::as_str).unwrap_or("")
    }

    /// The session id, the first parameter of every session route.
    pub fn session(&self) -> Result<SessionId, ApiError> {
        session_id(self.param(0))
    }

    /// The group JID, the second parameter of every group route.
    pub fn group(&self) -> Result<GroupJid, ApiError> {
        let raw = self.param(1);
        GroupJid::parse(raw).ok_or_else(|| {
            ApiError::invalid_jid(
                "group_jid",
                format!("'{raw}' is not a group JID (e.g. 123456789-1234567890@g.us)"),
            )
        })
    }

    /// A request header as text (absent when it is not valid text).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean query flag; absent is `false`.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.query(name) {
            None => Ok(false),
            Some(value) => parse_flag(value).ok_or_else(|| {
                ApiError::validation(name, format!("'{value}' is not {FLAG_VALUES}"))
            }),
        }
    }

    /// The body as JSON of type `T`, at most the configured limit. An empty body reads as `{}`.
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        if let Some(ct) = self.headers.get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            let mime = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if mime != "application/json" && !mime.ends_with("+json") {
                return Err(ApiError::UnsupportedMediaType);
            }
        }
        let limit = self.body_limit;
        let declared = self
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|l| l > limit) {
            drain(self.body).await;
            return Err(ApiError::PayloadTooLarge(limit));
        }
        let bytes = tokio::time::timeout(self.body_timeout, read_limited(self.body, limit))
            .await
            .map_err(|_| ApiError::BodyTimeout(self.body_timeout))??;
        parse_json::<T>(&bytes)
    }
}

/// `true/false/1/0`, case-insensitive.
pub fn parse_flag(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

pub fn session_id(raw: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(raw).map_err(|_| {
        ApiError::InvalidSessionId(format!(
            "'{raw}' is not a session id (1-64 characters of A-Z, a-z, 0-9, '_' and '-')"
        ))
    })
}

async fn read_limited(mut body: BodyStream, limit: u64) -> Result<BytesMut, ApiError> {
    let mut out = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| ApiError::InvalidJson(format!("reading body: {e}")))?;
        if out.len() as u64 + chunk.remaining() as u64 > limit {
            drain(body).await;
            return Err(ApiError::PayloadTooLarge(limit));
        }
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            let n = piece.len();
            out.extend_from_slice(piece);
            chunk.advance(n);
        }
    }
    Ok(out)
}

/// Reads and drops what is left of a body, up to [`DRAIN_LIMIT`].
async fn drain(mut body: BodyStream) {
    let mut seen: u64 = 0;
    while seen < DRAIN_LIMIT {
        match body.next().await {
            Some(Ok(chunk)) => seen += chunk.len() as u64,
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &str) -> Request {
        Request::new(
            vec!["s1".into(), "nope".into()],
            query,
            HeaderMap::new(),
            Box::pin(futures_util::stream::empty()),
            1024,
        )
        .expect("query parses")
    }

    #[test]
    fn flags_accept_true_false_one_zero() {
        assert!(request("refresh=true").flag("refresh").unwrap());
        assert!(request("refresh=1").flag("refresh").unwrap());
        assert!(!request("refresh=0").flag("refresh").unwrap());
        assert!(!request("refresh=FALSE").flag("refresh").unwrap());
        assert!(!request("").flag("refresh").unwrap());
        match request("reset=yes").flag("reset") {
            Err(ApiError::Validation { field, message }) => {
                assert_eq!(field, "reset");
                assert!(message.contains("true, false, 1 or 0"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn path_parameters_become_domain_types() {
        let r = request("");
        assert_eq!(r.session().unwrap().as_str(), "s1");
        assert_eq!(r.group().unwrap_err().code(), "invalid_jid");
        let bad = Request::new(
            vec!["bad id".into()],
            "",
            HeaderMap::new(),
            Box::pin(futures_util::stream::empty()),
            1,
        )
        .unwrap();
        assert_eq!(bad.session().unwrap_err().code(), "invalid_session_id");
    }
}
