//! Routes each decrypted client stanza to its handler. Nothing is dropped unanswered: a
//! stanza the sim does not know, or one that needs a login the connection lacks, ends the
//! stream as WhatsApp ends it for a stanza it cannot take (IQs always get an answer from
//! [`crate::iq::handle`]).

use wacore_binary::node::Node;

use crate::conn::{Ctx, Verdict, end_stream, is_iq_reply};
use crate::nodes::show;

pub async fn handle_node(ctx: &Ctx, node: Node) -> Verdict {
    let tag = node.tag.as_ref();
    let needs_login = matches!(tag, "message" | "receipt" | "presence" | "chatstate");
    if needs_login && ctx.device().is_none() {
        return refuse(ctx, &node, "stanza from a connection that is not logged in");
    }
    match tag {
        "iq" => {
            if is_iq_reply(&node) {
                if !crate::pairing::on_pair_answer(&ctx.sim, ctx.conn_id, &node) {
                    tracing::trace!("reply to a server iq: {}", show(&node));
                }
                return Verdict::Continue;
            }
            crate::iq::handle(ctx, &node).await;
        }
        "message" => crate::messages::on_message(ctx, &node).await,
        "receipt" => crate::messages::on_receipt(ctx, &node),
        "presence" => crate::presence::on_presence(ctx, &node),
        "chatstate" => crate::presence::on_chatstate(ctx, &node),
        // Acks settle what the device was given; they and offline-batch requests want
        // no answer from WhatsApp.
        "ack" => crate::messages::on_ack(ctx, &node),
        "ib" | "notification" => {}
        _ => return refuse(ctx, &node, "unknown stanza"),
    }
    Verdict::Continue
}

fn refuse(ctx: &Ctx, node: &Node, why: &str) -> Verdict {
    tracing::warn!(
        conn = ctx.conn_id,
        "{why}, ending the stream: {}",
        show(node)
    );
    end_stream(ctx);
    Verdict::EndStream
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::tests::{ctx, sent};
    use crate::world::Outbound;
    use wacore_binary::builder::NodeBuilder;

    async fn ends_the_stream(node: Node) {
        let (ctx, mut rx) = ctx();
        let shown = show(&node);
        assert_eq!(handle_node(&ctx, node).await, Verdict::EndStream, "{shown}");
        let error = sent(&mut rx).expect("a stream error");
        assert_eq!(error.tag, "stream:error");
        assert!(
            matches!(rx.try_recv(), Ok(Outbound::Close)),
            "then the close"
        );
    }

    #[tokio::test]
    async fn unknown_stanzas_and_stanzas_before_login_end_the_stream() {
        ends_the_stream(NodeBuilder::new("no-such-stanza").attr("id", "1").build()).await;
        for tag in ["message", "receipt", "presence", "chatstate"] {
            ends_the_stream(
                NodeBuilder::new(tag)
                    .attr("id", "1")
                    .attr("to", "6285500000001@s.whatsapp.net")
                    .build(),
            )
            .await;
        }
    }

    #[tokio::test]
    async fn acks_want_no_answer() {
        let (ctx, mut rx) = ctx();
        let ack = NodeBuilder::new("ack")
            .attr("id", "1")
            .attr("class", "notification")
            .build();
        assert_eq!(handle_node(&ctx, ack).await, Verdict::Continue);
        assert!(rx.try_recv().is_err());
    }
}
