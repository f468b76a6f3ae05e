//! The rules of webhook delivery, without I/O: Standard Webhooks signing, secrets, what an
//! answer means (delivered, or retry and when), the retry backoff, and which URLs are allowed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use std::time::Duration;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

const SECRET_PREFIX: &str = "whsec_";

/// A new signing secret: `whsec_` and the base64 of 32 random bytes.
pub fn generate_secret() -> String {
    use rand::RngCore;
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The key bytes of a `whsec_…` secret; `None` when it is not one.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let key = STANDARD.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()?;
    (key.len() >= 16 && key.len() <= 64).then_some(key)
}

/// `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` for each key,
/// space-separated (more than one while a secret rotates).
pub fn signature_header(keys: &[Vec<u8>], id: &str, timestamp: u64, body: &[u8]) -> String {
    keys.iter()
        .filter_map(|key| {
            let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).ok()?;
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            Some(format!(
                "v1,{}",
                STANDARD.encode(mac.finalize().into_bytes())
            ))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Try again; `after` is what the receiver asked for (`Retry-After`), when it did.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
}

/// The meaning of an HTTP answer (`None`: no answer: network error or timeout). Every
/// failure is retried, as long as the event is retained; the caller logs client errors.
pub fn outcome(status: Option<u16>, retry_after: Option<&str>, now_unix: u64) -> Outcome {
    match status {
        Some(s) if (200..300).contains(&s) => Outcome::Delivered,
        Some(s) => Outcome::Retry {
            reason: format!("HTTP {s}"),
            after: if s == 429 || s == 503 {
                retry_after.and_then(|v| parse_retry_after(v, now_unix))
            } else {
                None
            },
        },
        None => Outcome::Retry {
            reason: "no answer".into(),
            after: None,
        },
    }
}

/// `Retry-After`: delay seconds or an HTTP date.
fn parse_retry_after(value: &str, now_unix: u64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now_unix)))
}

/// The longest `Retry-After` honoured: a receiver asking for more is retried after a day.
const RETRY_AFTER_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// The wait before retry number `failures` (1-based): exponential from `min`, capped at `max`,
/// with jitter over its upper half that never goes under `min`; a receiver's `Retry-After`
/// wins when it asks for longer, also beyond `max` (up to a day).
pub fn retry_delay(
    failures: u32,
    min: Duration,
    max: Duration,
    asked: Option<Duration>,
    jitter: f64,
) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let base = min.saturating_mul(1u32 << exp.min(20)).min(max);
    let jittered = base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0)).max(min);
    match asked {
        Some(asked) if asked > jittered => asked.min(RETRY_AFTER_LIMIT),
        _ => jittered,
    }
}

/// Only `http` and `https` URLs with a host are accepted.
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("webhook URLs must be http or https".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_whsec_and_32_bytes() {
        let s = generate_secret();
        assert!(s.starts_with("whsec_"));
        assert_eq!(secret_key(&s).unwrap().len(), 32);
        assert_ne!(s, generate_secret());
        assert_eq!(secret_key("nope"), None);
        assert_eq!(secret_key("whsec_!!"), None);
    }

    #[test]
    fn signatures_match_the_standard_webhooks_example() {
        // The example from the Standard Webhooks specification.
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let header = signature_header(
            &[key],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rotating_secrets_sign_twice() {
        let a = secret_key(&generate_secret()).unwrap();
        let b = secret_key(&generate_secret()).unwrap();
        let header = signature_header(&[a, b], "id", 1, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        assert!(header.split(' ').all(|s| s.starts_with("v1,")));
    }

    #[test]
    fn answers_mean_delivered_or_retry() {
        assert_eq!(outcome(Some(204), None, 0), Outcome::Delivered);
        assert_eq!(
            outcome(Some(429), Some("7"), 0),
            Outcome::Retry {
                reason: "HTTP 429".into(),
                after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            outcome(Some(500), Some("7"), 0),
            Outcome::Retry {
                reason: "HTTP 500".into(),
                after: None
            }
        );
        assert!(matches!(outcome(Some(404), None, 0), Outcome::Retry { .. }));
        assert!(matches!(outcome(None, None, 0), Outcome::Retry { .. }));
        let date = "Thu, 01 Jan 1970 00:01:40 GMT";
        assert_eq!(
            outcome(Some(503), Some(date), 40),
            Outcome::Retry {
                reason: "HTTP 503".into(),
                after: Some(Duration::from_secs(60))
            }
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(600));
        assert_eq!(retry_delay(1, min, max, None, 1.0), Duration::from_secs(1));
        assert_eq!(retry_delay(4, min, max, None, 1.0), Duration::from_secs(8));
        assert_eq!(
            retry_delay(4, min, max, None, 0.0),
            Duration::from_millis(4000)
        );
        assert_eq!(retry_delay(40, min, max, None, 1.0), max);
        for failures in [1, 2, 40] {
            let least = retry_delay(failures, min, max, None, 0.0);
            assert!(least >= min && least <= max, "{least:?}");
        }
        assert_eq!(retry_delay(1, min, max, None, 0.0), min);
        assert_eq!(
            retry_delay(1, min, max, Some(Duration::from_secs(30)), 1.0),
            Duration::from_secs(30)
        );
        assert_eq!(
            retry_delay(1, min, max, Some(Duration::from_secs(3600)), 1.0),
            Duration::from_secs(3600),
            "Retry-After is honoured beyond the backoff's cap"
        );
        assert_eq!(
            retry_delay(1, min, max, Some(Duration::from_secs(9_999_999)), 1.0),
            RETRY_AFTER_LIMIT
        );
    }

    #[test]
    fn only_http_urls() {
        assert!(check_url("http://127.0.0.1:9/hook").is_ok());
        assert!(check_url("https://example.com/x").is_ok());
        assert!(check_url("ftp://example.com/x").is_err());
        assert!(check_url("not a url").is_err());
        assert!(check_url("file:///etc/passwd").is_err());
    }
}
