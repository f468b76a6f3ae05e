//! MEX (`xmlns="w:mex"`), WhatsApp's GraphQL over IQs. The request is
//! `<iq type="get" xmlns="w:mex"><query query_id="DOC_ID">{"variables":{…}}</query></iq>`
//! with the JSON as the query's content; the answer is
//! `<iq type="result"><result>{"data":{…}}</result></iq>`. Failures are answered the
//! GraphQL way, still as a result IQ: `"errors":[{"message","path","extensions":
//! {"error_code",…}}]` beside a `null` for the field, which whatsapp-rust turns into
//! "MEX fatal error (…, code=N)".
//!
//! The sim knows one persisted query, the group property update
//! (`xwa2_group_update_property`), and of its properties `member_link_mode` only. Other
//! queries and properties get a GraphQL error (counted as unknown IQs), never silence.

use serde_json::{Value, json};
use wacore::iq::mex_operations::update_group_property;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::node::Node;

use crate::conn::Ctx;
use crate::nodes::{attr, bytes, child, iq_error, iq_result, show};

/// The answer's data field for the group property update.
const UPDATE_PROPERTY_FIELD: &str = "xwa2_group_update_property";

/// Handles a `w:mex` IQ; returns false when the connection is not logged in (the caller
/// answers 501 then, as for every IQ it cannot take).
pub fn handle_iq(ctx: &Ctx, node: &Node) -> bool {
    let Some((phone, device)) = ctx.device() else {
        return false;
    };
    let Some(request) = decode(node) else {
        tracing::warn!("undecodable mex iq answered 400: {}", show(node));
        ctx.send(iq_error(node, 400, "bad-request"));
        return true;
    };
    let answer = if request.query_id == update_group_property::DOC_ID {
        update_property(ctx, (&phone, device), &request.variables)
    } else {
        tracing::warn!(query_id = %request.query_id, "unknown mex query");
        ctx.sim.world().stats.unknown_iqs += 1;
        // The wording WhatsApp uses for a stale persisted-query id, which the client
        // recognises and logs as such.
        graphql_error(
            None,
            400,
            &format!(
                "PersistedQueryNotFound: unknown doc_id {}",
                request.query_id
            ),
        )
    };
    ctx.send(iq_result(
        node,
        vec![
            NodeBuilder::new("result")
                .bytes(answer.to_string().into_bytes())
                .build(),
        ],
    ));
    true
}

struct Request {
    query_id: String,
    variables: Value,
}

/// The query id and the `variables` object; `None` when either is missing or the JSON
/// does not parse.
fn decode(node: &Node) -> Option<Request> {
    let query = child(node, "query")?;
    let query_id = attr(query, "query_id")?;
    let body: Value = serde_json::from_slice(&bytes(query)?).ok()?;
    let variables = body.get("variables")?.clone();
    variables.is_object().then_some(Request {
        query_id,
        variables,
    })
}

/// `xwa2_group_update_property`: `{"group_id": "…@g.us", "update": {"<property>": …}}`,
/// one property per call, values in MEX (upper-case) vocabulary.
fn update_property(ctx: &Ctx, actor: (&str, u16), variables: &Value) -> Value {
    let field = Some(UPDATE_PROPERTY_FIELD);
    let Some(group_jid) = variables.get("group_id").and_then(Value::as_str) else {
        return graphql_error(field, 400, "bad-request: group_id missing");
    };
    let Some(update) = variables.get("update").and_then(Value::as_object) else {
        return graphql_error(field, 400, "bad-request: update missing");
    };
    let Some(mode) = update.get("member_link_mode") else {
        let properties: Vec<&str> = update.keys().map(String::as_str).collect();
        tracing::warn!(
            ?properties,
            "group property update the sim does not implement"
        );
        ctx.sim.world().stats.unknown_iqs += 1;
        return graphql_error(
            field,
            501,
            &format!("feature-not-implemented: wa-sim cannot update {properties:?}"),
        );
    };
    let stored = match mode.as_str() {
        Some("ADMIN_LINK") => "admin_link",
        Some("ALL_MEMBER_LINK") => "all_member_link",
        _ => return graphql_error(field, 400, "bad-request: unknown member_link_mode"),
    };
    let outcome =
        crate::groups::set_member_link_mode(&mut ctx.sim.world(), group_jid, actor, stored);
    match outcome {
        Ok(jid) => json!({ "data": { UPDATE_PROPERTY_FIELD: { "id": jid, "state": "ACTIVE" } } }),
        Err((code, text)) => graphql_error(field, code, text),
    }
}

/// A GraphQL error answer; `field` (the data field that failed) is set to null and named
/// in the error's path, as GraphQL servers report a failed field.
fn graphql_error(field: Option<&str>, code: u16, message: &str) -> Value {
    let mut error = json!({
        "message": message,
        "extensions": {
            "error_code": code,
            "is_summary": false,
            "is_retryable": false,
            "severity": "CRITICAL",
        },
    });
    let data = match field {
        Some(f) => {
            error["path"] = json!([f]);
            json!({ f: null })
        }
        None => Value::Null,
    };
    json!({ "data": data, "errors": [error] })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(query_id: &str, body: &str) -> Node {
        NodeBuilder::new("iq")
            .attr("xmlns", "w:mex")
            .attr("type", "get")
            .attr("id", "1")
            .children([NodeBuilder::new("query")
                .attr("query_id", query_id.to_string())
                .bytes(body.as_bytes().to_vec())
                .build()])
            .build()
    }

    #[test]
    fn decodes_query_id_and_variables() {
        let node = query(
            update_group_property::DOC_ID,
            r#"{"variables":{"group_id":"1@g.us","update":{"member_link_mode":"ADMIN_LINK"}}}"#,
        );
        let request = decode(&node).expect("decoded");
        assert_eq!(request.query_id, update_group_property::DOC_ID);
        assert_eq!(
            request.variables["update"]["member_link_mode"],
            "ADMIN_LINK"
        );
    }

    #[test]
    fn undecodable_queries_are_refused() {
        assert!(decode(&query("1", "not json")).is_none());
        assert!(decode(&query("1", r#"{"vars":{}}"#)).is_none());
        assert!(decode(&query("1", r#"{"variables":[]}"#)).is_none());
        let bare = NodeBuilder::new("iq").attr("xmlns", "w:mex").build();
        assert!(decode(&bare).is_none());
    }

    #[test]
    fn errors_name_the_failed_field() {
        let e = graphql_error(Some(UPDATE_PROPERTY_FIELD), 403, "not-authorized");
        assert_eq!(e["data"][UPDATE_PROPERTY_FIELD], Value::Null);
        assert_eq!(e["errors"][0]["extensions"]["error_code"], 403);
        assert_eq!(e["errors"][0]["path"][0], UPDATE_PROPERTY_FIELD);
        let e = graphql_error(None, 400, "unknown");
        assert_eq!(e["data"], Value::Null);
        assert!(e["errors"][0].get("path").is_none());
    }
}
