//! Request bodies and the body filter: size limit (413, also for chunked bodies), content type
//! (415), syntax (400 `invalid_json`) and shape (400 `validation` naming the field).

use bytes::{Buf, BytesMut};
use futures_util::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use warp::{Filter, Rejection};

use super::errors::ApiError;

#[derive(Debug, Deserialize)]
pub struct CreateSession {
    pub id: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct PairRequest {
    pub phone_number: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct QrQuery {
    pub format: Option<String>,
}

/// A JSON body of type `T`, at most `limit` bytes. An empty body reads as `{}`.
pub fn json_body<T: DeserializeOwned + Send>(
    limit: u64,
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .and_then(
            move |content_type: Option<String>, length: Option<u64>, body| async move {
                if let Some(ct) = content_type {
                    let mime = ct
                        .split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase();
                    if mime != "application/json" && !mime.ends_with("+json") {
                        return Err(ApiError::UnsupportedMediaType.reject());
                    }
                }
                if length.is_some_and(|l| l > limit) {
                    return Err(ApiError::PayloadTooLarge(limit).reject());
                }
                let bytes = read_limited(body, limit).await?;
                parse_json::<T>(&bytes).map_err(ApiError::reject)
            },
        )
}

async fn read_limited<S, B>(mut body: S, limit: u64) -> Result<BytesMut, Rejection>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let mut out = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|e| ApiError::InvalidJson(format!("reading body: {e}")).reject())?;
        if out.len() as u64 + chunk.remaining() as u64 > limit {
            return Err(ApiError::PayloadTooLarge(limit).reject());
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

/// Parses a body, telling syntax errors (`invalid_json`) from shape errors (`validation`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let value: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    if !value.is_object() {
        return Err(ApiError::validation("body", "expected a JSON object"));
    }
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let field = if path == "." || path.is_empty() {
            // "missing field `x`" names the field itself.
            inner
                .split('`')
                .nth(1)
                .map(str::to_owned)
                .unwrap_or_else(|| "body".into())
        } else {
            path
        };
        ApiError::validation(field, inner)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(e: ApiError) -> String {
        match e {
            ApiError::InvalidJson(_) => "invalid_json".into(),
            ApiError::Validation { field, .. } => format!("validation:{field}"),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn bodies_are_classified() {
        assert_eq!(
            code(parse_json::<CreateSession>(b"{").unwrap_err()),
            "invalid_json"
        );
        assert_eq!(
            code(parse_json::<CreateSession>(br#"{"name": 5}"#).unwrap_err()),
            "validation:name"
        );
        assert_eq!(
            code(parse_json::<PairRequest>(b"{}").unwrap_err()),
            "validation:phone_number"
        );
        assert_eq!(
            code(parse_json::<CreateSession>(b"[]").unwrap_err()),
            "validation:body"
        );
        assert!(parse_json::<CreateSession>(b"").unwrap().id.is_none());
    }
}
