//! Small helpers for reading and building binary XML nodes.

use wacore_binary::builder::NodeBuilder;
use wacore_binary::node::{Node, NodeContent};

/// An attribute as a string (JID attributes rendered in their canonical form).
pub fn attr(node: &Node, key: &str) -> Option<String> {
    node.attrs.get(key).map(|v| v.to_string())
}

/// The first child with `tag`.
pub fn child<'a>(node: &'a Node, tag: &str) -> Option<&'a Node> {
    node.get_optional_child(tag)
}

/// All children, or an empty slice.
pub fn children(node: &Node) -> &[Node] {
    node.children().unwrap_or_default()
}

/// Binary content of a node (string content is returned as its UTF-8 bytes).
pub fn bytes(node: &Node) -> Option<Vec<u8>> {
    match &node.content {
        Some(NodeContent::Bytes(b)) => Some(b.clone()),
        Some(NodeContent::String(s)) => Some(s.as_bytes().to_vec()),
        _ => None,
    }
}

/// Binary content of the child `tag`.
pub fn child_bytes(node: &Node, tag: &str) -> Option<Vec<u8>> {
    child(node, tag).and_then(bytes)
}

/// Text content of a node.
pub fn text(node: &Node) -> Option<String> {
    node.content_as_string().map(|s| s.to_string())
}

/// Big-endian unsigned integer from 1..=4 content bytes.
pub fn be_uint(data: &[u8]) -> Option<u32> {
    if data.is_empty() || data.len() > 4 {
        return None;
    }
    Some(data.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

/// 32-byte key content of the child `tag`.
pub fn child_key32(node: &Node, tag: &str) -> Option<[u8; 32]> {
    child_bytes(node, tag).and_then(|b| b.try_into().ok())
}

/// `<iq type="result" id=.. from=..>` answering `request`.
pub fn iq_result(request: &Node, content: Vec<Node>) -> Node {
    let mut builder = NodeBuilder::new("iq")
        .attr("type", "result")
        .attr("id", attr(request, "id").unwrap_or_default())
        .attr(
            "from",
            attr(request, "to").unwrap_or_else(|| "s.whatsapp.net".to_string()),
        );
    if !content.is_empty() {
        builder = builder.children(content);
    }
    builder.build()
}

/// `<iq type="error" id=..><error code text/></iq>` answering `request`.
pub fn iq_error(request: &Node, code: u16, text: &str) -> Node {
    NodeBuilder::new("iq")
        .attr("type", "error")
        .attr("id", attr(request, "id").unwrap_or_default())
        .attr(
            "from",
            attr(request, "to").unwrap_or_else(|| "s.whatsapp.net".to_string()),
        )
        .children([NodeBuilder::new("error")
            .attr("code", code.to_string())
            .attr("text", text.to_string())
            .build()])
        .build()
}

/// A node with binary content.
pub fn bytes_node(tag: &'static str, value: impl Into<Vec<u8>>) -> Node {
    NodeBuilder::new(tag).bytes(value).build()
}

/// Three-byte big-endian id content, as used for prekey ids.
pub fn id3(id: u32) -> Vec<u8> {
    id.to_be_bytes()[1..].to_vec()
}

/// XML-like rendering for logs.
pub fn show(node: &Node) -> String {
    wacore::xml::DisplayableNode(node).to_string()
}
