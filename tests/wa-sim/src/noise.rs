//! Server side of WhatsApp's Noise handshake: the XX responder, and XXfallback for clients
//! that open with an IK hello (a paired device reconnecting with a cached server key).

use wacore_binary::consts::{
    NOISE_PATTERN_IK, NOISE_PATTERN_XX, NOISE_PATTERN_XXFALLBACK, WA_CONN_HEADER,
};
use wacore_libsignal::protocol::KeyPair;
use wacore_noise::{NoiseCipher, NoiseHandshake};
use waproto::buffa::{Message as _, MessageField};
use waproto::whatsapp as wa;

/// The server's long-lived Noise identity and the certificate chain that vouches for it.
pub struct ServerIdentity {
    pub static_key: KeyPair,
    pub cert_chain: Vec<u8>,
}

impl ServerIdentity {
    pub fn generate() -> Self {
        let static_key = KeyPair::generate(&mut rand::rng());
        let mut public = [0u8; 32];
        public.copy_from_slice(static_key.public_key.public_key_bytes());
        let cert_chain = wacore_noise::test_util::build_cert_chain_bytes(&public);
        Self {
            static_key,
            cert_chain,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("malformed handshake message: {0}")]
    Malformed(String),
    #[error("noise failure: {0}")]
    Noise(String),
}

fn noise_err(e: impl std::fmt::Display) -> HandshakeError {
    HandshakeError::Noise(e.to_string())
}

/// Which pattern the server answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Xx,
    XxFallback,
    Ik,
}

/// Handshake state between our ServerHello and the client's ClientFinish.
pub struct AwaitingFinish {
    noise: NoiseHandshake,
    ephemeral: KeyPair,
    pub pattern: Pattern,
}

/// A completed handshake: who the client is and the transport ciphers.
pub struct Established {
    pub client_static: [u8; 32],
    pub payload: wa::ClientPayload,
    /// Decrypts client -> server frames.
    pub read: NoiseCipher,
    /// Encrypts server -> client frames.
    pub write: NoiseCipher,
}

/// What to send back for a ClientHello.
pub enum HelloAnswer {
    /// Send this ServerHello, then read the ClientFinish.
    Continue(Vec<u8>, Box<AwaitingFinish>),
    /// IK accepted: send this ServerHello; the handshake is already complete.
    Done(Vec<u8>, Box<Established>),
}

/// Answers a ClientHello. An XX hello gets XX. An IK hello (encrypted static and 0-RTT
/// payload) gets XXfallback, unless `accept_ik` is set and the client used our current
/// static key, in which case it is accepted in one round trip.
pub fn answer_hello(
    server: &ServerIdentity,
    hello_frame: &[u8],
    accept_ik: bool,
) -> Result<HelloAnswer, HandshakeError> {
    if accept_ik && let Some(done) = try_accept_ik(server, hello_frame)? {
        return Ok(done);
    }
    answer_xx(server, hello_frame)
        .map(|(reply, state)| HelloAnswer::Continue(reply, Box::new(state)))
}

/// The IK responder: `<- s` pre-message, `-> e, es, s, ss` + payload, `<- e, ee, se` + cert.
/// Returns `None` when the hello is not IK or was made for another server key.
fn try_accept_ik(
    server: &ServerIdentity,
    hello_frame: &[u8],
) -> Result<Option<HelloAnswer>, HandshakeError> {
    let message = wa::HandshakeMessage::decode_from_slice(hello_frame)
        .map_err(|e| HandshakeError::Malformed(e.to_string()))?;
    let Some(hello) = message.client_hello.as_option() else {
        return Ok(None);
    };
    let (Some(ephemeral), Some(encrypted_static), Some(encrypted_payload)) = (
        hello.ephemeral.as_deref(),
        hello.r#static.as_deref(),
        hello.payload.as_deref(),
    ) else {
        return Ok(None);
    };
    let Ok(client_ephemeral) = <[u8; 32]>::try_from(ephemeral) else {
        return Ok(None);
    };
    let mut noise = NoiseHandshake::new(NOISE_PATTERN_IK, &WA_CONN_HEADER).map_err(noise_err)?;
    noise.authenticate(server.static_key.public_key.public_key_bytes());
    noise.authenticate(&client_ephemeral);
    noise
        .mix_shared_secret(server.static_key.private_key.serialize(), &client_ephemeral)
        .map_err(noise_err)?;
    // A stale server key shows up here as an authentication failure: fall back.
    let Ok(client_static) = noise.decrypt(encrypted_static) else {
        return Ok(None);
    };
    let Ok(client_static) = <[u8; 32]>::try_from(client_static.as_slice()) else {
        return Ok(None);
    };
    noise
        .mix_shared_secret(server.static_key.private_key.serialize(), &client_static)
        .map_err(noise_err)?;
    let Ok(payload_bytes) = noise.decrypt(encrypted_payload) else {
        return Ok(None);
    };
    let payload = wa::ClientPayload::decode_from_slice(&payload_bytes)
        .map_err(|e| HandshakeError::Malformed(format!("client payload: {e}")))?;
    let ephemeral = KeyPair::generate(&mut rand::rng());
    let ephemeral_public = ephemeral.public_key.public_key_bytes().to_vec();
    noise.authenticate(&ephemeral_public);
    noise
        .mix_shared_secret(ephemeral.private_key.serialize(), &client_ephemeral)
        .map_err(noise_err)?;
    noise
        .mix_shared_secret(ephemeral.private_key.serialize(), &client_static)
        .map_err(noise_err)?;
    let encrypted_cert = noise.encrypt(&server.cert_chain).map_err(noise_err)?;
    let reply = wa::HandshakeMessage {
        server_hello: MessageField::some(wa::handshake_message::ServerHello {
            ephemeral: Some(ephemeral_public),
            r#static: None,
            payload: Some(encrypted_cert),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (read, write) = noise.finish().map_err(noise_err)?;
    Ok(Some(HelloAnswer::Done(
        reply.encode_to_vec(),
        Box::new(Established {
            client_static,
            payload,
            read,
            write,
        }),
    )))
}

fn answer_xx(
    server: &ServerIdentity,
    hello_frame: &[u8],
) -> Result<(Vec<u8>, AwaitingFinish), HandshakeError> {
    let message = wa::HandshakeMessage::decode_from_slice(hello_frame)
        .map_err(|e| HandshakeError::Malformed(e.to_string()))?;
    let hello = message
        .client_hello
        .as_option()
        .ok_or_else(|| HandshakeError::Malformed("no client_hello".into()))?;
    let client_ephemeral: [u8; 32] = hello
        .ephemeral
        .as_deref()
        .and_then(|e| e.try_into().ok())
        .ok_or_else(|| HandshakeError::Malformed("bad client ephemeral".into()))?;
    let (pattern, name) = if hello.r#static.is_some() {
        (Pattern::XxFallback, NOISE_PATTERN_XXFALLBACK)
    } else {
        (Pattern::Xx, NOISE_PATTERN_XX)
    };
    let mut noise = NoiseHandshake::new(name, &WA_CONN_HEADER).map_err(noise_err)?;
    noise.authenticate(&client_ephemeral);

    let ephemeral = KeyPair::generate(&mut rand::rng());
    let ephemeral_public = ephemeral.public_key.public_key_bytes().to_vec();
    noise.authenticate(&ephemeral_public);
    noise
        .mix_shared_secret(ephemeral.private_key.serialize(), &client_ephemeral)
        .map_err(noise_err)?;
    let encrypted_static = noise
        .encrypt(server.static_key.public_key.public_key_bytes())
        .map_err(noise_err)?;
    noise
        .mix_shared_secret(server.static_key.private_key.serialize(), &client_ephemeral)
        .map_err(noise_err)?;
    let encrypted_cert = noise.encrypt(&server.cert_chain).map_err(noise_err)?;

    let reply = wa::HandshakeMessage {
        server_hello: MessageField::some(wa::handshake_message::ServerHello {
            ephemeral: Some(ephemeral_public),
            r#static: Some(encrypted_static),
            payload: Some(encrypted_cert),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok((
        reply.encode_to_vec(),
        AwaitingFinish {
            noise,
            ephemeral,
            pattern,
        },
    ))
}

/// Processes the ClientFinish and splits the transport keys.
pub fn finish(
    mut state: AwaitingFinish,
    finish_frame: &[u8],
) -> Result<Established, HandshakeError> {
    let message = wa::HandshakeMessage::decode_from_slice(finish_frame)
        .map_err(|e| HandshakeError::Malformed(e.to_string()))?;
    let finish = message
        .client_finish
        .as_option()
        .ok_or_else(|| HandshakeError::Malformed("no client_finish".into()))?;
    let encrypted_static = finish
        .r#static
        .as_deref()
        .ok_or_else(|| HandshakeError::Malformed("client_finish without static".into()))?;
    let encrypted_payload = finish
        .payload
        .as_deref()
        .ok_or_else(|| HandshakeError::Malformed("client_finish without payload".into()))?;
    let client_static: [u8; 32] = state
        .noise
        .decrypt(encrypted_static)
        .map_err(noise_err)?
        .try_into()
        .map_err(|_| HandshakeError::Malformed("client static is not 32 bytes".into()))?;
    state
        .noise
        .mix_shared_secret(state.ephemeral.private_key.serialize(), &client_static)
        .map_err(noise_err)?;
    let payload_bytes = state.noise.decrypt(encrypted_payload).map_err(noise_err)?;
    let payload = wa::ClientPayload::decode_from_slice(&payload_bytes)
        .map_err(|e| HandshakeError::Malformed(format!("client payload: {e}")))?;
    // The initiator writes with the first key; the responder reads with it.
    let (read, write) = state.noise.finish().map_err(noise_err)?;
    Ok(Established {
        client_static,
        payload,
        read,
        write,
    })
}
