//! The binary node codec as WhatsApp's server applies it.
//!
//! `wacore-binary` (like Baileys) writes any short string that contains `@` as a JID pair,
//! split at the first `@`: the subject `Team @ Office` travels as the pair (`Team `,
//! ` Office`). WhatsApp's server reads such a pair back as the text it was made from, but
//! `wacore-binary`'s decoder only knows WhatsApp's own servers and rejects the whole stanza.
//! So every pair whose server part is not a WhatsApp server is rewritten as the plain string
//! `user@server` before decoding, and again after encoding, because the client on the other
//! end carries the same decoder and WhatsApp never sends text as a JID. Pairs naming a real
//! server stay typed JIDs; everything else is decoded by `wacore-binary` itself.
//!
//! [`envelope`] reads just the tag and attributes of a frame that does not decode, so the
//! stanza can still be answered (an IQ gets its error) instead of being dropped.

use std::borrow::Cow;

use wacore_binary::jid::Server;
use wacore_binary::node::Node;
use wacore_binary::token;

/// `wacore-binary`'s own nesting cap; deeper frames are hostile, not stanzas.
const MAX_DEPTH: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("stanza ends early")]
    Truncated,
    #[error("invalid token {0}")]
    Token(u8),
    #[error("string is not UTF-8")]
    Utf8,
    #[error("node without a tag")]
    EmptyNode,
    #[error("nodes nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error(transparent)]
    Binary(#[from] wacore_binary::BinaryError),
}

/// Decodes one decrypted frame (format byte first) into a node.
pub fn decode(frame: &[u8]) -> Result<Node, WireError> {
    let data = wacore_binary::util::unpack(frame)?;
    let data = plain_strings(&data)?;
    Ok(wacore_binary::marshal::unmarshal_ref(&data)?.to_owned())
}

/// Encodes a node into a frame payload (format byte first), as WhatsApp would send it.
pub fn encode(node: &Node) -> Result<Vec<u8>, WireError> {
    let plain = wacore_binary::marshal::marshal(node)?;
    let Some((format, body)) = plain.split_first() else {
        return Err(WireError::Truncated);
    };
    match plain_strings(body)? {
        Cow::Borrowed(_) => Ok(plain),
        Cow::Owned(rewritten) => {
            let mut out = Vec::with_capacity(rewritten.len() + 1);
            out.push(*format);
            out.extend_from_slice(&rewritten);
            Ok(out)
        }
    }
}

/// The tag and attributes of a frame's top-level node, all as text.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope {
    pub tag: String,
    pub attrs: Vec<(String, String)>,
}

impl Envelope {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the top-level tag and attributes of a frame whose body may not decode.
pub fn envelope(frame: &[u8]) -> Option<Envelope> {
    let data = wacore_binary::util::unpack(frame).ok()?;
    let mut r = Reader::new(&data);
    let header = r.u8().ok()?;
    let size = r.list_size_of(header).ok().filter(|&n| n > 0)?;
    let tag = r.value_text().ok()??;
    let mut attrs = Vec::new();
    for _ in 0..(size - 1) / 2 {
        let key = r.value_text().ok()??;
        let value = r.value_text().ok()?.unwrap_or_default();
        attrs.push((key, value));
    }
    Some(Envelope { tag, attrs })
}

/// `data` (one node, no format byte) with every JID pair that names no WhatsApp server
/// replaced by the string it was made from. Borrows `data` when there is nothing to replace.
pub fn plain_strings(data: &[u8]) -> Result<Cow<'_, [u8]>, WireError> {
    let mut r = Reader::new(data);
    r.node(0)?;
    if r.splices.is_empty() {
        return Ok(Cow::Borrowed(data));
    }
    let mut out = Vec::with_capacity(data.len() + 4 * r.splices.len());
    let mut copied = 0;
    for (start, end, text) in &r.splices {
        out.extend_from_slice(&data[copied..*start]);
        write_binary(&mut out, text.as_bytes());
        copied = *end;
    }
    out.extend_from_slice(&data[copied..]);
    Ok(Cow::Owned(out))
}

/// The `BINARY_*` form of a string, with the shortest length prefix that fits.
fn write_binary(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len();
    if let Ok(short) = u8::try_from(len) {
        out.extend_from_slice(&[token::BINARY_8, short]);
    } else if len < 1 << 20 {
        // Both fit: `len` is below 2^20 here.
        let [_, a, b, c] = (len as u32).to_be_bytes();
        out.extend_from_slice(&[token::BINARY_20, a, b, c]);
    } else {
        out.push(token::BINARY_32);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(bytes);
}

/// Walks one encoded node, noting which byte ranges hold a JID pair to replace.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    /// How deep the value being read sits inside pairs and device JIDs.
    nesting: usize,
    /// (start, end, text) of each pair to write as a plain string, in order.
    splices: Vec<(usize, usize, String)>,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            nesting: 0,
            splices: Vec::new(),
        }
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        let b = *self.data.get(self.pos).ok_or(WireError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(len).ok_or(WireError::Truncated)?;
        let bytes = self.data.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn be(&mut self, len: usize) -> Result<usize, WireError> {
        Ok(self
            .take(len)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)))
    }

    fn list_size_of(&mut self, tag: u8) -> Result<usize, WireError> {
        match tag {
            token::LIST_EMPTY => Ok(0),
            token::LIST_8 => self.be(1),
            token::LIST_16 => self.be(2),
            other => Err(WireError::Token(other)),
        }
    }

    fn node(&mut self, depth: usize) -> Result<(), WireError> {
        if depth >= MAX_DEPTH {
            return Err(WireError::TooDeep);
        }
        let header = self.u8()?;
        let size = self.list_size_of(header)?;
        if size == 0 {
            return Err(WireError::EmptyNode);
        }
        self.value()?;
        for _ in 0..(size - 1) / 2 {
            self.value()?;
            self.value()?;
        }
        if size % 2 == 0 {
            self.content(depth)?;
        }
        Ok(())
    }

    fn content(&mut self, depth: usize) -> Result<(), WireError> {
        let tag = self.u8()?;
        match tag {
            token::LIST_EMPTY => Ok(()),
            token::LIST_8 | token::LIST_16 => {
                for _ in 0..self.list_size_of(tag)? {
                    self.node(depth + 1)?;
                }
                Ok(())
            }
            token::BINARY_8 | token::BINARY_20 | token::BINARY_32 => {
                let len = self.binary_len(tag)?;
                self.take(len).map(|_| ())
            }
            _ => {
                self.pos -= 1;
                self.value()
            }
        }
    }

    /// A value in its own right (tag, attribute, string content): the place where a JID
    /// pair naming no WhatsApp server is replaced as a whole.
    fn value(&mut self) -> Result<(), WireError> {
        let start = self.pos;
        let tag = self.u8()?;
        if tag != token::JID_PAIR {
            return self.nested(|r| r.skip(tag));
        }
        let (user, server) = self.pair_parts()?;
        if Server::parse_known(&server).is_none() {
            self.splices
                .push((start, self.pos, format!("{user}@{server}")));
        }
        Ok(())
    }

    /// A value in its own right as text, as `wacore-binary` renders it: a pair with no
    /// user that names a WhatsApp server is that server (`g.us`).
    fn value_text(&mut self) -> Result<Option<String>, WireError> {
        let start = self.pos;
        if self.u8()? != token::JID_PAIR {
            self.pos = start;
            return self.text();
        }
        let (user, server) = self.pair_parts()?;
        if user.is_empty() && Server::parse_known(&server).is_some() {
            return Ok(Some(server));
        }
        Ok(Some(format!("{user}@{server}")))
    }

    fn pair_parts(&mut self) -> Result<(String, String), WireError> {
        let user = self.text()?.unwrap_or_default();
        let server = self.text()?.unwrap_or_default();
        Ok((user, server))
    }

    fn binary_len(&mut self, tag: u8) -> Result<usize, WireError> {
        match tag {
            token::BINARY_8 => self.be(1),
            token::BINARY_20 => Ok(self.be(3)? & 0x0F_FFFF),
            token::BINARY_32 => self.be(4),
            other => Err(WireError::Token(other)),
        }
    }

    /// Runs `read` one level deeper, refusing frames nested past [`MAX_DEPTH`]: values
    /// inside pairs recurse, and a frame can be nothing but pair tokens.
    fn nested<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, WireError>,
    ) -> Result<T, WireError> {
        if self.nesting >= MAX_DEPTH {
            return Err(WireError::TooDeep);
        }
        self.nesting += 1;
        let result = read(self);
        self.nesting -= 1;
        result
    }

    /// Steps over a value that cannot need rewriting, without building its text.
    fn skip(&mut self, tag: u8) -> Result<(), WireError> {
        let any = |r: &mut Self| {
            let tag = r.u8()?;
            r.nested(|r| r.skip(tag))
        };
        match tag {
            token::BINARY_8 | token::BINARY_20 | token::BINARY_32 => {
                let len = self.binary_len(tag)?;
                self.take(len).map(|_| ())
            }
            token::JID_PAIR => {
                any(self)?;
                any(self)
            }
            token::AD_JID => {
                self.take(2)?;
                any(self)
            }
            token::INTEROP_JID => {
                any(self)?;
                self.take(4)?;
                any(self)
            }
            token::FB_JID => {
                any(self)?;
                self.take(2)?;
                any(self)
            }
            token::NIBBLE_8 | token::HEX_8 => {
                let head = self.u8()?;
                self.take(usize::from(head & 0x7F)).map(|_| ())
            }
            token::DICTIONARY_0..=token::DICTIONARY_3 => self.take(1).map(|_| ()),
            // An empty value or a single-byte token; `wacore-binary` checks which.
            _ => Ok(()),
        }
    }

    /// Any value read as text. A pair nested in a pair's server part comes from a string
    /// with more than one `@`, so it is always `user@server`, whatever the server.
    fn text(&mut self) -> Result<Option<String>, WireError> {
        let tag = self.u8()?;
        self.nested(|r| r.text_of(tag))
    }

    fn text_of(&mut self, tag: u8) -> Result<Option<String>, WireError> {
        let text = match tag {
            token::LIST_EMPTY => return Ok(None),
            token::BINARY_8 | token::BINARY_20 | token::BINARY_32 => {
                let len = self.binary_len(tag)?;
                let bytes = self.take(len)?;
                std::str::from_utf8(bytes)
                    .map_err(|_| WireError::Utf8)?
                    .to_string()
            }
            token::JID_PAIR => {
                let (user, server) = self.pair_parts()?;
                format!("{user}@{server}")
            }
            token::AD_JID => {
                let domain = self.u8()?;
                let device = self.u8()?;
                let user = self.text()?.ok_or(WireError::EmptyNode)?;
                let server = match domain {
                    0 => Server::Pn,
                    1 => Server::Lid,
                    129 => Server::HostedLid,
                    n if n & 0x80 != 0 && n & 1 == 0 => Server::Hosted,
                    other => return Err(WireError::Token(other)),
                };
                device_jid(&user, device.into(), server.as_str())
            }
            token::INTEROP_JID => {
                let user = self.text()?.ok_or(WireError::EmptyNode)?;
                let device = self.be(2)?;
                let _integrator = self.be(2)?;
                let server = self.text()?.unwrap_or_default();
                device_jid(&user, device, &server)
            }
            token::FB_JID => {
                let user = self.text()?.ok_or(WireError::EmptyNode)?;
                let device = self.be(2)?;
                let server = self.text()?.unwrap_or_default();
                device_jid(&user, device, &server)
            }
            token::NIBBLE_8 | token::HEX_8 => self.packed(tag)?,
            token::DICTIONARY_0..=token::DICTIONARY_3 => {
                let index = self.u8()?;
                token::get_double_token(tag - token::DICTIONARY_0, index)
                    .ok_or(WireError::Token(tag))?
                    .to_string()
            }
            _ => token::get_single_token(tag)
                .ok_or(WireError::Token(tag))?
                .to_string(),
        };
        Ok(Some(text))
    }

    /// Nibble- or hex-packed digits; the high bit of the length marks an odd count.
    fn packed(&mut self, tag: u8) -> Result<String, WireError> {
        let head = self.u8()?;
        let bytes = self.take(usize::from(head & 0x7F))?;
        let mut out = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            for half in [b >> 4, b & 0x0F] {
                let c = match (tag, half) {
                    (token::HEX_8, 0..=9) => char::from(b'0' + half),
                    (token::HEX_8, _) => char::from(b'A' + half - 10),
                    (_, 0..=9) => char::from(b'0' + half),
                    (_, 10) => '-',
                    (_, 11) => '.',
                    (_, 15) => '\0',
                    _ => return Err(WireError::Token(half)),
                };
                out.push(c);
            }
        }
        if head & 0x80 != 0 {
            out.pop();
        }
        Ok(out)
    }
}

fn device_jid(user: &str, device: usize, server: &str) -> String {
    if device == 0 {
        format!("{user}@{server}")
    } else {
        format!("{user}:{device}@{server}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wacore_binary::builder::NodeBuilder;
    use wacore_binary::node::{NodeContent, NodeValue};

    /// What the client puts on the wire for `node`: `wacore-binary`'s own encoding.
    fn client_frame(node: &Node) -> Vec<u8> {
        wacore_binary::marshal::marshal(node).expect("marshal")
    }

    fn subject_iq(subject: &str) -> Node {
        NodeBuilder::new("iq")
            .attr("id", "12.34-5")
            .attr("type", "set")
            .attr("xmlns", "w:g2")
            .children([NodeBuilder::new("create")
                .attr("subject", subject)
                .children([NodeBuilder::new("body").string_content(subject).build()])
                .build()])
            .build()
    }

    fn text_of(node: &Node) -> (String, String) {
        let create = node.get_optional_child("create").expect("create");
        let attr = create.attrs.get("subject").expect("subject").to_string();
        let body = create
            .get_optional_child("body")
            .and_then(Node::content_as_string)
            .expect("body")
            .to_string();
        (attr, body)
    }

    #[test]
    fn text_with_an_at_sign_reads_back_as_the_text_it_was() {
        for text in [
            "Team @ Office",
            "write to a@b.com",
            "Sales @ HQ",
            "🚀 Launch @ HQ",
            "@ Office",
            "Office @",
            "@",
            "a@b@c",
            "x @ y @ g.us",
            "tab\t@\u{7}bell",
        ] {
            let frame = client_frame(&subject_iq(text));
            let node = decode(&frame).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(text_of(&node), (text.to_string(), text.to_string()));
        }
    }

    #[test]
    fn the_unpatched_decoder_rejects_what_this_one_reads() {
        // Guards the premise: if `wacore-binary` learns to read these, this module can go.
        let frame = client_frame(&subject_iq("Team @ Office"));
        assert!(wacore_binary::marshal::unmarshal_ref(&frame[1..]).is_err());
        assert!(decode(&frame).is_ok());
    }

    #[test]
    fn jids_of_whatsapp_servers_stay_typed() {
        let node = NodeBuilder::new("message")
            .attr("to", "6285500000001@s.whatsapp.net")
            .attr("participant", "6285500000001:3@s.whatsapp.net")
            .attr("from", "120363000000000001@g.us")
            .attr("lid", "100000000000001:2@lid")
            .attr("server", wacore_binary::Jid::new("", Server::Pn))
            .build();
        let frame = client_frame(&node);
        assert!(matches!(plain_strings(&frame[1..]), Ok(Cow::Borrowed(_))));
        let decoded = decode(&frame).expect("decodes");
        assert_eq!(decoded, node_roundtrip(&frame));
        for (key, want) in [
            ("to", "6285500000001@s.whatsapp.net"),
            ("participant", "6285500000001:3@s.whatsapp.net"),
            ("from", "120363000000000001@g.us"),
            ("lid", "100000000000001:2@lid"),
            ("server", "s.whatsapp.net"),
        ] {
            let value = decoded.attrs.get(key).expect(key);
            assert!(matches!(value, NodeValue::Jid(_)), "{key} is a typed JID");
            assert_eq!(value.to_string(), want);
        }
    }

    fn node_roundtrip(frame: &[u8]) -> Node {
        wacore_binary::marshal::unmarshal_ref(&frame[1..])
            .expect("plain wacore decode")
            .to_owned()
    }

    #[test]
    fn what_the_sim_sends_decodes_in_the_client() {
        let node = NodeBuilder::new("notification")
            .attr("from", "120363000000000001@g.us")
            .children([
                NodeBuilder::new("subject")
                    .attr("subject", "Team @ Office")
                    .build(),
                NodeBuilder::new("body")
                    .string_content("write to a@b.com")
                    .build(),
            ])
            .build();
        let frame = encode(&node).expect("encodes");
        let got = node_roundtrip(&frame);
        assert_eq!(
            got.attrs.get("from").map(|v| v.to_string()).as_deref(),
            Some("120363000000000001@g.us")
        );
        let subject = got.get_optional_child("subject").expect("subject");
        assert_eq!(
            subject
                .attrs
                .get("subject")
                .map(|v| v.to_string())
                .as_deref(),
            Some("Team @ Office")
        );
        let body = got.get_optional_child("body").expect("body");
        assert_eq!(
            body.content_as_string().as_deref(),
            Some("write to a@b.com")
        );
        // Nothing to rewrite: the frame is exactly `wacore-binary`'s.
        let plain = NodeBuilder::new("iq").attr("id", "1").build();
        assert_eq!(encode(&plain).expect("encodes"), client_frame(&plain));
    }

    #[test]
    fn long_strings_keep_their_binary_form() {
        for len in [48, 200, 300, 70_000] {
            let text = format!("{}@{}", "a".repeat(len / 2), "b".repeat(len / 2 - 1));
            let node = NodeBuilder::new("body")
                .string_content(text.as_str())
                .build();
            let got = decode(&client_frame(&node)).expect("decodes");
            assert_eq!(got.content_as_string().as_deref(), Some(text.as_str()));
        }
        // Lengths at each prefix boundary, written by the rewrite itself.
        for len in [0, 255, 256, (1 << 20) - 1, 1 << 20] {
            let text = "x".repeat(len);
            let mut out = Vec::new();
            write_binary(&mut out, text.as_bytes());
            let mut r = Reader::new(&out);
            assert_eq!(r.text().expect("reads").as_deref(), Some(text.as_str()));
            assert_eq!(r.pos, out.len());
        }
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let good = client_frame(&subject_iq("Team @ Office"));
        for cut in 1..good.len() {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(&[]).is_err());
        // A token no dictionary has, where the subject's text would start.
        let mut bad = good.clone();
        let at = bad.len() - 1;
        bad[at] = token::DICTIONARY_3;
        assert!(decode(&bad).is_err());
        // Deep nesting is refused before it can exhaust the stack.
        let mut deep = vec![0u8];
        for _ in 0..200 {
            deep.extend_from_slice(&[token::LIST_8, 2, token::BINARY_8, 1, b'a', token::LIST_8, 1]);
        }
        assert!(decode(&deep).is_err());
        // So is a frame of nothing but nested pairs.
        let mut pairs = vec![0u8, token::LIST_8, 1];
        pairs.extend(std::iter::repeat_n(token::JID_PAIR, 1 << 20));
        assert!(matches!(decode(&pairs), Err(WireError::TooDeep)));
        assert_eq!(envelope(&pairs), None);
    }

    /// Not the sim's doing, but worth knowing: before the `@`, `wacore-binary`'s encoder
    /// reads `_N` as an agent and `:N` as a device, and drops both for a server that is not
    /// WhatsApp's. Text shaped like that reaches WhatsApp shortened.
    #[test]
    fn the_client_drops_an_agent_or_device_suffix_before_the_at() {
        for (sent, arrives) in [
            ("a_1@b.com", "a@b.com"),
            ("meet 10:30@office", "meet 10@office"),
        ] {
            let got = decode(&client_frame(&subject_iq(sent))).expect("decodes");
            assert_eq!(text_of(&got).0, arrives);
        }
    }

    #[test]
    fn the_envelope_of_an_undecodable_iq_still_names_it() {
        let mut frame = client_frame(&subject_iq("Team"));
        // Break the content after the attributes: the child list claims more than there is.
        frame.truncate(frame.len() - 3);
        assert!(decode(&frame).is_err());
        let env = envelope(&frame).expect("envelope");
        assert_eq!(env.tag, "iq");
        assert_eq!(env.attr("id"), Some("12.34-5"));
        assert_eq!(env.attr("type"), Some("set"));
        assert_eq!(env.attr("xmlns"), Some("w:g2"));
        assert_eq!(envelope(&[0, 0xF8]), None);
    }

    #[test]
    fn content_rewritten_from_a_pair_is_bytes_of_the_same_text() {
        let node = NodeBuilder::new("subject")
            .string_content("Team @ Office")
            .build();
        let got = decode(&client_frame(&node)).expect("decodes");
        assert_eq!(
            got.content,
            Some(NodeContent::Bytes(b"Team @ Office".to_vec()))
        );
        assert_eq!(got.content_as_string().as_deref(), Some("Team @ Office"));
    }
}
