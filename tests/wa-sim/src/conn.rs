//! One client connection: Noise handshake, login or registration, then a sequential read
//! loop that decrypts and dispatches stanzas, and a single writer task that encrypts and
//! frames everything sent to the client.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_websockets::{Message, WebSocketStream};
use wacore_binary::builder::NodeBuilder;
use wacore_binary::node::Node;
use wacore_noise::NoiseCipher;
use wacore_noise::framing::{FrameDecoder, encode_frame};

use crate::nodes::{attr, show};
use crate::noise::{HelloAnswer, Pattern};
use crate::signal::now_secs;
use crate::world::{ConnEntry, ConnState, DeviceKeys, Outbound, Registration, Sim};

/// The client must send its hello (and finish) within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// Everything a stanza handler needs to know about the connection it runs on.
#[derive(Clone)]
pub struct Ctx {
    pub sim: Arc<Sim>,
    pub conn_id: u64,
    pub out: mpsc::UnboundedSender<Outbound>,
}

impl Ctx {
    pub fn send(&self, node: Node) {
        let _ = self.out.send(Outbound::Node(Box::new(node)));
    }

    /// The logged-in account and device of this connection, if any.
    pub fn device(&self) -> Option<(String, u16)> {
        match &self.sim.world().conns.get(&self.conn_id)?.state {
            ConnState::LoggedIn { phone, device } => Some((phone.clone(), *device)),
            _ => None,
        }
    }
}

/// Reads raw websocket messages and yields Noise frames, stripping the connection intro.
struct FrameReader<S> {
    stream: S,
    decoder: FrameDecoder,
    intro: Option<Vec<u8>>,
}

impl<S> FrameReader<S>
where
    S: futures_util::Stream<Item = Result<Message, tokio_websockets::Error>> + Unpin,
{
    /// The next complete frame; `None` when the peer closed or the stream broke.
    async fn next_frame(&mut self) -> Option<BytesMut> {
        loop {
            if self.intro.is_none()
                && let Some(frame) = self.decoder.decode_frame()
            {
                return Some(frame);
            }
            let message = match self.stream.next().await? {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!("websocket read error: {e}");
                    return None;
                }
            };
            if message.is_close() {
                return None;
            }
            if !message.is_binary() {
                continue;
            }
            let data: &[u8] = message.as_payload();
            match self.intro.as_mut() {
                None => self.decoder.feed(data),
                Some(intro) => {
                    intro.extend_from_slice(data);
                    match strip_intro(intro) {
                        Ok(Some(rest)) => {
                            self.decoder.feed(&rest);
                            self.intro = None;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::debug!("bad connection intro: {e}");
                            return None;
                        }
                    }
                }
            }
        }
    }
}

/// Strips `["ED" 0 1 len24 routing]? "WA" 6 3` from the start of the stream. Returns the
/// remaining bytes once the whole intro is buffered.
fn strip_intro(buf: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut at = 0;
    if buf.len() < 2 {
        return Ok(None);
    }
    if &buf[..2] == b"ED" {
        if buf.len() < 7 {
            return Ok(None);
        }
        let len = (usize::from(buf[4]) << 16) | (usize::from(buf[5]) << 8) | usize::from(buf[6]);
        at = 7 + len;
    }
    if buf.len() < at + 4 {
        return Ok(None);
    }
    if buf[at..at + 2] != *b"WA" {
        return Err("stream does not start with the WA header".into());
    }
    Ok(Some(buf[at + 4..].to_vec()))
}

/// Serves one upgraded websocket until either side closes it.
pub async fn serve<S>(sim: Arc<Sim>, ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    {
        let mut world = sim.world();
        world.stats.connections += 1;
        world.stats.active_connections += 1;
    }
    let (mut sink, stream) = ws.split();
    let mut reader = FrameReader {
        stream,
        decoder: FrameDecoder::new(),
        intro: Some(Vec::new()),
    };

    let handshake = async {
        let hello = reader.next_frame().await.ok_or("closed before hello")?;
        let answer = crate::noise::answer_hello(&sim.server, &hello, sim.accept_ik)
            .map_err(|e| e.to_string())?;
        let (server_hello, next) = match answer {
            HelloAnswer::Continue(reply, awaiting) => (reply, Ok(awaiting)),
            HelloAnswer::Done(reply, established) => (reply, Err(established)),
        };
        let frame = encode_frame(&server_hello, None).map_err(|e| e.to_string())?;
        sink.send(Message::binary(frame))
            .await
            .map_err(|e| e.to_string())?;
        let awaiting = match next {
            Ok(awaiting) => *awaiting,
            Err(established) => return Ok((*established, Pattern::Ik)),
        };
        let pattern = awaiting.pattern;
        let finish = reader.next_frame().await.ok_or("closed before finish")?;
        crate::noise::finish(awaiting, &finish)
            .map(|e| (e, pattern))
            .map_err(|e| e.to_string())
    };
    let established = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => {
            tracing::debug!("handshake failed: {e}");
            sim.world().stats.active_connections -= 1;
            return;
        }
        Err(_) => {
            tracing::debug!("handshake timed out");
            sim.world().stats.active_connections -= 1;
            return;
        }
    };
    let (est, pattern) = established;
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (kill_tx, kill_rx) = watch::channel(false);
    let conn_id = {
        let mut world = sim.world();
        world.stats.handshakes += 1;
        let id = world.next_conn_id();
        world.conns.insert(
            id,
            ConnEntry {
                id,
                out: out_tx.clone(),
                kill: kill_tx.clone(),
                noise_pub: est.client_static,
                state: ConnState::Closing,
                active: false,
            },
        );
        id
    };
    tracing::debug!(conn = conn_id, ?pattern, "noise handshake complete");
    let writer = tokio::spawn(write_loop(
        sim.clone(),
        conn_id,
        sink,
        est.write,
        out_rx,
        kill_rx.clone(),
    ));
    let ctx = Ctx {
        sim: sim.clone(),
        conn_id,
        out: out_tx,
    };

    let payload = est.payload;
    match payload.username {
        Some(username) => login(&ctx, username, payload.device.unwrap_or(0)),
        None => register(&ctx, &payload),
    }

    read_loop(&ctx, &mut reader, est.read, kill_rx).await;

    {
        let mut world = sim.world();
        if let Some(ConnState::LoggedIn { phone, device }) =
            world.conns.remove(&conn_id).map(|c| c.state)
            && world.available.remove(&(phone.clone(), device))
        {
            world.last_seen.insert(phone.clone(), now_secs());
            crate::presence::broadcast(&mut world, &phone);
        }
        world.pending_codes.retain(|p| p.conn_id != conn_id);
        // A pairing that never got its pair-device-sign leaves no device behind.
        let abandoned: Vec<(String, u16)> = world
            .pending_pairs
            .values()
            .filter(|p| p.conn_id == conn_id)
            .map(|p| (p.phone.clone(), p.device))
            .collect();
        world.pending_pairs.retain(|_, p| p.conn_id != conn_id);
        for (phone, device) in abandoned {
            if let Some(account) = world.accounts.get_mut(&phone) {
                account.devices.remove(&device);
            }
        }
        world.stats.active_connections = world.stats.active_connections.saturating_sub(1);
    }
    let _ = kill_tx.send(true);
    let _ = writer.await;
    tracing::debug!(conn = conn_id, "connection closed");
}

async fn read_loop<S>(
    ctx: &Ctx,
    reader: &mut FrameReader<S>,
    cipher: NoiseCipher,
    mut kill: watch::Receiver<bool>,
) where
    S: futures_util::Stream<Item = Result<Message, tokio_websockets::Error>> + Unpin,
{
    let mut counter: u32 = 0;
    loop {
        let frame = tokio::select! {
            frame = reader.next_frame() => frame,
            _ = kill.changed() => return,
        };
        let Some(mut frame) = frame else { return };
        if let Err(e) = cipher.decrypt_in_place_with_counter(counter, &mut frame) {
            tracing::warn!(conn = ctx.conn_id, "failed to decrypt frame {counter}: {e}");
            return;
        }
        counter = counter.wrapping_add(1);
        let node = match crate::wire::decode(&frame) {
            Ok(node) => node,
            Err(e) => {
                if refuse_undecodable(ctx, &frame, &e) == Verdict::EndStream {
                    wait_closed(&mut kill).await;
                    return;
                }
                continue;
            }
        };
        tracing::debug!(conn = ctx.conn_id, "C->S {}", show(&node));
        if crate::dispatch::handle_node(ctx, node).await == Verdict::EndStream {
            wait_closed(&mut kill).await;
            return;
        }
    }
}

/// Whether the connection carries on after a stanza.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    EndStream,
}

/// A frame that does not decode is still answered: an IQ whose envelope can be read gets
/// `400 bad-request` (frames are length-delimited, so the stream is still in step);
/// anything else ends the stream as WhatsApp does with bad XML.
fn refuse_undecodable(ctx: &Ctx, frame: &[u8], error: &crate::wire::WireError) -> Verdict {
    let envelope = crate::wire::envelope(frame);
    let iq = envelope.as_ref().filter(|e| {
        e.tag == "iq" && e.attr("id").is_some() && matches!(e.attr("type"), Some("get" | "set"))
    });
    if let Some(iq) = iq {
        tracing::warn!(
            conn = ctx.conn_id,
            id = iq.attr("id"),
            xmlns = iq.attr("xmlns"),
            "undecodable iq answered with 400: {error}"
        );
        let answer = NodeBuilder::new("iq")
            .attr("type", "error")
            .attr("id", iq.attr("id").unwrap_or_default())
            .attr("from", iq.attr("to").unwrap_or("s.whatsapp.net"))
            .children([NodeBuilder::new("error")
                .attr("code", "400")
                .attr("text", "bad-request")
                .build()])
            .build();
        ctx.send(answer);
        return Verdict::Continue;
    }
    tracing::warn!(
        conn = ctx.conn_id,
        tag = envelope.as_ref().map(|e| e.tag.as_str()),
        "undecodable stanza ends the stream: {error}"
    );
    end_stream(ctx);
    Verdict::EndStream
}

/// `<stream:error><xml-not-well-formed/></stream:error>`, then the close: what WhatsApp
/// sends for a stanza it cannot take. The client recycles its socket on it.
pub fn end_stream(ctx: &Ctx) {
    ctx.send(
        NodeBuilder::new("stream:error")
            .children([NodeBuilder::new("xml-not-well-formed").build()])
            .build(),
    );
    // Queued behind the error, so the writer flushes it before closing.
    let _ = ctx.out.send(Outbound::Close);
}

/// How long a closing stream may take to flush before the socket is dropped anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Reads nothing more while the writer flushes and closes (it then raises `kill`).
async fn wait_closed(kill: &mut watch::Receiver<bool>) {
    let _ = tokio::time::timeout(CLOSE_GRACE, kill.wait_for(|k| *k)).await;
}

async fn write_loop<S>(
    sim: Arc<Sim>,
    conn_id: u64,
    mut sink: S,
    cipher: NoiseCipher,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
    mut kill: watch::Receiver<bool>,
) where
    S: futures_util::Sink<Message> + Unpin,
{
    let mut counter: u32 = 0;
    loop {
        let next = tokio::select! {
            next = rx.recv() => next,
            _ = kill.changed() => None,
        };
        let Some(next) = next else { break };
        match next {
            Outbound::Close => {
                let _ = sink.send(Message::close(None, "")).await;
                break;
            }
            Outbound::Node(node) => {
                // Injected stall: hold everything addressed to this connection's account.
                loop {
                    let deadline = {
                        let world = sim.world();
                        let phone = match world.conns.get(&conn_id).map(|c| &c.state) {
                            Some(ConnState::LoggedIn { phone, .. }) => Some(phone.clone()),
                            _ => None,
                        };
                        world.stall_deadline(phone.as_deref())
                    };
                    let Some(deadline) = deadline else { break };
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline.into()) => {}
                        _ = kill.changed() => return,
                    }
                }
                tracing::debug!(conn = conn_id, "S->C {}", show(&node));
                let plain = match crate::wire::encode(&node) {
                    Ok(p) => p,
                    Err(e) => {
                        // The client would wait forever for it: fail loudly instead.
                        tracing::error!(conn = conn_id, "cannot encode stanza, closing: {e}");
                        break;
                    }
                };
                let encrypted = match cipher.encrypt_with_counter(counter, &plain) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!("cannot encrypt frame: {e}");
                        break;
                    }
                };
                counter = counter.wrapping_add(1);
                let frame = match encode_frame(&encrypted, None) {
                    Ok(f) => f,
                    Err(e) => {
                        // The counter has moved on; the stream cannot stay in step.
                        tracing::error!(conn = conn_id, "cannot frame stanza, closing: {e}");
                        break;
                    }
                };
                if sink.send(Message::binary(frame)).await.is_err() {
                    break;
                }
            }
        }
    }
    // Make the reader stop too; dropping both halves closes the socket.
    if let Some(conn) = sim.world().conns.get(&conn_id) {
        let _ = conn.kill.send(true);
    }
}

/// A paired device logs in with its stored credentials.
fn login(ctx: &Ctx, username: u64, device: u32) {
    let phone = username.to_string();
    let device = u16::try_from(device).unwrap_or(u16::MAX);
    let mut world = ctx.sim.world();
    let noise_pub = match world.conns.get(&ctx.conn_id) {
        Some(c) => c.noise_pub,
        None => return,
    };
    let verdict = match world.accounts.get(&phone) {
        None => Err("unknown account"),
        Some(account) if account.removed.contains_key(&device) => Err("device was unlinked"),
        Some(account) => match account.devices.get(&device) {
            None => Err("unknown device"),
            Some(d) if d.noise_pub != noise_pub => Err("noise key does not match the device"),
            Some(_) => Ok(account.lid.clone()),
        },
    };
    let lid = match verdict {
        Ok(lid) => lid,
        Err(why) => {
            tracing::info!(phone = %phone, device, "login refused: {why}");
            let failure = NodeBuilder::new("failure")
                .attr("reason", "401")
                .attr("location", "sim")
                .build();
            ctx.send(failure);
            let out = ctx.out.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let _ = out.send(Outbound::Close);
            });
            return;
        }
    };
    // Another live connection of the same device is stale: drop it.
    let stale: Vec<u64> = world
        .device_conns(&phone, device)
        .iter()
        .map(|c| c.id)
        .filter(|id| *id != ctx.conn_id)
        .collect();
    for id in stale {
        if let Some(c) = world.conns.get_mut(&id) {
            c.state = ConnState::Closing;
            let _ = c.kill.send(true);
        }
    }
    if let Some(conn) = world.conns.get_mut(&ctx.conn_id) {
        conn.state = ConnState::LoggedIn {
            phone: phone.clone(),
            device,
        };
    }
    if let Some(d) = world
        .accounts
        .get_mut(&phone)
        .and_then(|a| a.devices.get_mut(&device))
    {
        d.logins += 1;
    }
    world.stats.logins += 1;
    drop(world);
    tracing::info!(phone = %phone, device, "device logged in");
    let success = NodeBuilder::new("success")
        .attr("t", now_secs().to_string())
        .attr("lid", format!("{lid}:{device}@lid"))
        .attr("location", "sim")
        .attr("creation", now_secs().to_string())
        .build();
    ctx.send(success);
}

/// An unpaired client: remember its keys and offer QR refs.
fn register(ctx: &Ctx, payload: &waproto::whatsapp::ClientPayload) {
    let data = payload.device_pairing_data.as_option();
    let key32 = |v: Option<&Vec<u8>>| -> [u8; 32] {
        v.and_then(|b| b.as_slice().try_into().ok())
            .unwrap_or([0u8; 32])
    };
    let keys = DeviceKeys {
        registration_id: data
            .and_then(|d| d.e_regid.as_deref())
            .and_then(crate::nodes::be_uint)
            .unwrap_or(0),
        identity: key32(data.and_then(|d| d.e_ident.as_ref())),
        signed_prekey_id: data
            .and_then(|d| d.e_skey_id.as_deref())
            .and_then(crate::nodes::be_uint)
            .unwrap_or(1),
        signed_prekey: key32(data.and_then(|d| d.e_skey_val.as_ref())),
        signed_prekey_signature: data.and_then(|d| d.e_skey_sig.clone()).unwrap_or_default(),
        one_time: Default::default(),
    };
    let registration = Registration {
        keys,
        push_name: payload.push_name.clone().unwrap_or_default(),
    };
    let iq_id = {
        let mut world = ctx.sim.world();
        let serial = world.serial();
        if let Some(conn) = world.conns.get_mut(&ctx.conn_id) {
            conn.state = ConnState::Registering(Box::new(registration));
        }
        format!("pair-device-{serial}")
    };
    tracing::info!(
        conn = ctx.conn_id,
        "unpaired client connected; offering QR refs"
    );
    ctx.send(crate::pairing::pair_device_iq(&iq_id, ctx.sim.qr_refs));
}

/// Closes the connection after `stream:error` or similar, once the client had time to read it.
pub fn close_soon(out: mpsc::UnboundedSender<Outbound>, after: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let _ = out.send(Outbound::Close);
    });
}

/// Whether a stanza is a reply to one of our own IQs (`result`/`error`).
pub fn is_iq_reply(node: &Node) -> bool {
    matches!(
        attr(node, "type").as_deref(),
        Some("result") | Some("error")
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use wacore_binary::{Jid, Server};

    /// A connection context with no socket behind it; what it sends lands in the receiver.
    pub(crate) fn ctx() -> (Ctx, mpsc::UnboundedReceiver<Outbound>) {
        let (out, rx) = mpsc::unbounded_channel();
        let sim = Arc::new(Sim::new(Duration::from_millis(1), 1, false, false));
        (
            Ctx {
                sim,
                conn_id: 1,
                out,
            },
            rx,
        )
    }

    pub(crate) fn sent(rx: &mut mpsc::UnboundedReceiver<Outbound>) -> Option<Node> {
        match rx.try_recv() {
            Ok(Outbound::Node(node)) => Some(*node),
            _ => None,
        }
    }

    fn truncated(node: &Node) -> Vec<u8> {
        let mut frame = wacore_binary::marshal::marshal(node).expect("marshal");
        frame.truncate(frame.len() - 1);
        frame
    }

    #[test]
    fn an_undecodable_iq_is_answered_400_and_the_stream_goes_on() {
        let (ctx, mut rx) = ctx();
        let iq = NodeBuilder::new("iq")
            .attr("id", "q1")
            .attr("type", "get")
            .attr("xmlns", "w:g2")
            .attr("to", Jid::new("", Server::Group))
            .children([NodeBuilder::new("query").attr("request", "x").build()])
            .build();
        let frame = truncated(&iq);
        let error = crate::wire::decode(&frame).expect_err("truncated");
        assert_eq!(refuse_undecodable(&ctx, &frame, &error), Verdict::Continue);
        let answer = sent(&mut rx).expect("an answer");
        assert_eq!(answer.tag, "iq");
        assert_eq!(attr(&answer, "type").as_deref(), Some("error"));
        assert_eq!(attr(&answer, "id").as_deref(), Some("q1"));
        assert_eq!(attr(&answer, "from").as_deref(), Some("g.us"));
        let error = answer.get_optional_child("error").expect("error child");
        assert_eq!(attr(error, "code").as_deref(), Some("400"));
        assert_eq!(attr(error, "text").as_deref(), Some("bad-request"));
        assert!(rx.try_recv().is_err(), "nothing else: the stream stays");
    }

    #[test]
    fn any_other_undecodable_frame_ends_the_stream() {
        let message = NodeBuilder::new("message")
            .attr("id", "m1")
            .attr("to", "6285500000001@s.whatsapp.net")
            .children([NodeBuilder::new("enc").bytes(vec![1, 2, 3]).build()])
            .build();
        let reply = NodeBuilder::new("iq")
            .attr("id", "r1")
            .attr("type", "result")
            .children([NodeBuilder::new("x").build()])
            .build();
        for frame in [
            truncated(&message),
            truncated(&reply),
            vec![0, wacore_binary::token::LIST_8, 9],
            vec![0],
            vec![],
        ] {
            let (ctx, mut rx) = ctx();
            let error = crate::wire::decode(&frame).expect_err("undecodable");
            assert_eq!(
                refuse_undecodable(&ctx, &frame, &error),
                Verdict::EndStream,
                "{frame:?}"
            );
            let answer = sent(&mut rx).expect("a stream error");
            assert_eq!(answer.tag, "stream:error");
            assert!(answer.get_optional_child("xml-not-well-formed").is_some());
            assert!(
                matches!(rx.try_recv(), Ok(Outbound::Close)),
                "then the close"
            );
        }
    }
}
