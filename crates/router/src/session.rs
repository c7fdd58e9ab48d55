//! An established WAMP session: who it is and how to send it a message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use switchyard_proto::{errors, Dict, Message, Payload};

use crate::peer::Peer;

/// An established session (after WELCOME).
pub struct Session {
    pub id: u64,
    pub authid: String,
    pub authrole: String,
    pub peer: Arc<Peer>,
    alive: AtomicBool,
}

/// How a router operation failed: an error URI and a readable message.
pub type OpError = (&'static str, String);

impl Session {
    pub fn new(id: u64, authid: String, authrole: String, peer: Arc<Peer>) -> Self {
        Session {
            id,
            authid,
            authrole,
            peer,
            alive: AtomicBool::new(true),
        }
    }

    /// False once the session has left (cleanup started).
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    pub(crate) fn mark_gone(&self) {
        self.alive.store(false, Ordering::SeqCst);
    }

    /// Encodes `msg` for this session's serializer and queues it. Returns
    /// false if it could not be encoded, is larger than the peer accepts, or
    /// could not be queued (each case is logged).
    pub fn send(&self, msg: &Message) -> bool {
        match self.encode(msg) {
            Ok(frame) => self.peer.send(frame),
            Err((_, reason)) => {
                tracing::warn!(session = self.id, "not sending {}: {reason}", msg.name());
                false
            }
        }
    }

    /// Encodes `msg` for this session, checking the peer's size limit.
    pub fn encode(&self, msg: &Message) -> Result<bytes::Bytes, OpError> {
        let frame = msg
            .encode(self.peer.serializer())
            .map_err(|e| (errors::INVALID_ARGUMENT, e.to_string()))?;
        if frame.len() > self.peer.max_message_len() {
            return Err((
                errors::PAYLOAD_SIZE_EXCEEDED,
                format!(
                    "message of {} bytes exceeds the {} bytes session {} accepts",
                    frame.len(),
                    self.peer.max_message_len(),
                    self.id
                ),
            ));
        }
        Ok(frame)
    }

    /// Sends an ERROR answering a request of type `request_type`.
    pub fn send_error(&self, request_type: u64, request: u64, (uri, message): OpError) -> bool {
        self.send(&Message::Error {
            request_type,
            request,
            details: Dict::new(),
            error: uri.to_string(),
            payload: Payload::message(message),
        })
    }
}
