//! Groups: the w:g2 IQs, w:gp2 notifications and group message fan-out.

use wacore_binary::node::Node;

use crate::conn::Ctx;

/// A simulated group.
pub struct Group {
    pub id: String,
}

/// Handles a `w:g2` IQ; returns false when the request is not understood.
pub async fn handle_iq(_ctx: &Ctx, _node: &Node, _first: &str) -> bool {
    false
}

/// Fans a group message out to the member devices.
pub async fn route_group_message(_ctx: &Ctx, _node: &Node, _phone: &str, _device: u16, _to: &str) {}

/// `GET /control/groups`.
pub fn list_json(_sim: &std::sync::Arc<crate::world::Sim>) -> serde_json::Value {
    serde_json::json!([])
}

/// `GET /control/groups/{jid}`.
pub fn get_json(_sim: &std::sync::Arc<crate::world::Sim>, _jid: &str) -> Option<serde_json::Value> {
    None
}
