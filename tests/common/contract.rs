//! Every answer a test receives is checked against the server's own OpenAPI document: its
//! status must be one the operation documents, and a JSON body must validate against the
//! schema documented for that status. A response the document does not describe fails the
//! test that received it, so the document cannot drift from what is served.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use reqwest::Method;
use serde_json::Value;
use wagate::api::router::{ROUTES, resolve};

/// The document as the server serves it.
static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
    serde_json::to_value(&*wagate::api::openapi::DOCUMENT).expect("the document is JSON")
});

type Key = (String, &'static str, u16);
static EXPECTED: LazyLock<Mutex<HashMap<Key, Arc<Expected>>>> = LazyLock::new(Default::default);

/// Answers that the edge gives before any operation runs, on whichever route: they are the
/// contract's errors but belong to no single operation. (A 405 never gets here: no route
/// takes the request.)
fn edge_error(status: u16) -> bool {
    matches!(status, 408 | 413 | 414 | 415 | 431)
}

/// What the document says `(method, path)` answers with `status`: the media types it lists
/// and, for JSON, the schema, made standalone by carrying the document's components along for
/// its `$ref`s.
fn documented(method: &Method, pattern: &str, status: u16) -> Result<Documented, String> {
    let operation = &DOCUMENT["paths"][pattern][method.as_str().to_ascii_lowercase()];
    if operation.is_null() {
        return Err(format!("{method} {pattern} is not in the OpenAPI document"));
    }
    let responses = &operation["responses"];
    let Some(response) = responses.get(status.to_string()) else {
        if edge_error(status) {
            return Ok(Documented {
                media_types: vec!["application/json".into()],
                json_schema: Some(
                    serde_json::json!({"$ref": "#/components/schemas/ErrorBody"}).with_components(),
                ),
            });
        }
        let listed: Vec<&String> = responses
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        return Err(format!(
            "{method} {pattern} answered {status}, which its description does not list (it lists {listed:?})"
        ));
    };
    let content = response["content"].as_object();
    Ok(Documented {
        media_types: content
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default(),
        json_schema: content
            .and_then(|c| c.get("application/json"))
            .and_then(|json| json["schema"].as_object())
            .map(|schema| Value::Object(schema.clone()).with_components()),
    })
}

struct Documented {
    media_types: Vec<String>,
    json_schema: Option<Value>,
}

trait WithComponents {
    fn with_components(self) -> Value;
}

impl WithComponents for Value {
    fn with_components(self) -> Value {
        let mut schema = serde_json::json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "allOf": [self],
        });
        schema["components"] = DOCUMENT["components"].clone();
        schema
    }
}

struct Expected {
    media_types: Vec<String>,
    validator: Option<Arc<jsonschema::Validator>>,
}

fn expected(method: &Method, pattern: &'static str, status: u16) -> Result<Arc<Expected>, String> {
    let key = (method.to_string(), pattern, status);
    if let Some(found) = EXPECTED.lock().unwrap().get(&key) {
        return Ok(found.clone());
    }
    let documented = documented(method, pattern, status)?;
    let validator = documented
        .json_schema
        .map(|schema| {
            jsonschema::validator_for(&schema)
                .map(Arc::new)
                .map_err(|e| {
                    format!("the schema of {method} {pattern} {status} does not compile: {e}")
                })
        })
        .transpose()?;
    let built = Arc::new(Expected {
        media_types: documented.media_types,
        validator,
    });
    EXPECTED.lock().unwrap().insert(key, built.clone());
    Ok(built)
}

/// Checks one answer; `Err` says how it departs from the document.
pub fn check(
    method: &Method,
    url: &str,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Result<(), String> {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return Ok(());
    };
    let Ok(http_method) = warp::http::Method::from_bytes(method.as_str().as_bytes()) else {
        return Ok(());
    };
    // Requests no route takes (404, 405 naming the methods) are the router's answers.
    let Ok(matched) = resolve(&ROUTES, &http_method, parsed.path()) else {
        return Ok(());
    };
    let pattern = matched.route.pattern;
    let expected = expected(method, pattern, status)?;
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if expected.media_types.is_empty() {
        return Ok(());
    }
    if !expected
        .media_types
        .iter()
        .any(|m| m.split(';').next().unwrap_or("").trim() == media_type)
    {
        return Err(format!(
            "{method} {pattern} {status}: answered {content_type:?}, documented as {:?}",
            expected.media_types
        ));
    }
    let Some(validator) = expected
        .validator
        .as_ref()
        .filter(|_| media_type == "application/json")
    else {
        return Ok(());
    };
    let instance: Value = serde_json::from_slice(body)
        .map_err(|e| format!("{method} {pattern} {status}: the body is not JSON: {e}"))?;
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{method} {pattern} {status}: the body departs from the OpenAPI document: {}\nbody: {instance}",
            errors.join("; ")
        ))
    }
}
