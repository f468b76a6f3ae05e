//! Routes each decrypted client stanza to its handler.

use wacore_binary::node::Node;

use crate::conn::{Ctx, is_iq_reply};
use crate::nodes::show;

pub async fn handle_node(ctx: &Ctx, node: Node) {
    match node.tag.as_ref() {
        "iq" => {
            if is_iq_reply(&node) {
                if !crate::pairing::on_pair_answer(&ctx.sim, ctx.conn_id, &node) {
                    tracing::trace!("reply to a server iq: {}", show(&node));
                }
                return;
            }
            crate::iq::handle(ctx, &node).await;
        }
        "message" => crate::messages::on_message(ctx, &node).await,
        "receipt" => crate::messages::on_receipt(ctx, &node),
        "presence" => crate::presence::on_presence(ctx, &node),
        "chatstate" => crate::presence::on_chatstate(ctx, &node),
        "ack" | "ib" | "notification" => {}
        other => tracing::debug!("unhandled stanza <{other}>: {}", show(&node)),
    }
}
