//! The outbound side of a connection, as the router core sees it: a bounded
//! queue of encoded frames, a close signal and the slow-consumer policy.
//! The transport owns the receiving end and writes the frames.

use crate::logsafe::Clip;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::Deserialize;
use switchyard_proto::id::IdSequence;
use switchyard_proto::Serializer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What happens when a session's outbound queue is full.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowConsumerPolicy {
    /// Drop the connection, with a logged reason (default).
    #[default]
    Disconnect,
    /// Drop EVENTs for that session (counted and logged); any other message
    /// that does not fit still disconnects it.
    DropEvents,
}

/// An item of the outbound queue.
#[derive(Debug)]
pub enum Outgoing {
    /// An encoded message, ready for the transport's framing.
    Frame(Bytes),
    /// Write everything queued before, then close the transport.
    Close,
}

/// The router's handle on one connection's outbound path.
pub struct Peer {
    serializer: Serializer,
    tx: mpsc::Sender<Outgoing>,
    capacity: usize,
    policy: SlowConsumerPolicy,
    max_message_len: usize,
    killed: CancellationToken,
    /// Mirrors `killed` for the per-message check (the token's own check
    /// takes a lock).
    stopped: AtomicBool,
    kill_reason: Mutex<Option<String>>,
    dropped_events: AtomicU64,
    request_ids: IdSequence,
    label: String,
    /// The id of the session on this connection (0 before WELCOME), for logs.
    session: AtomicU64,
}

impl Peer {
    /// Creates the peer and the receiving end of its outbound queue.
    /// `max_message_len` is the largest message the client accepts (RawSocket
    /// handshake); `label` names the connection in logs.
    pub fn new(
        serializer: Serializer,
        capacity: usize,
        policy: SlowConsumerPolicy,
        max_message_len: usize,
        label: String,
    ) -> (Arc<Peer>, mpsc::Receiver<Outgoing>) {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let peer = Peer {
            serializer,
            tx,
            capacity,
            policy,
            max_message_len,
            killed: CancellationToken::new(),
            stopped: AtomicBool::new(false),
            kill_reason: Mutex::new(None),
            dropped_events: AtomicU64::new(0),
            request_ids: IdSequence::new(),
            label,
            session: AtomicU64::new(0),
        };
        (Arc::new(peer), rx)
    }

    pub fn serializer(&self) -> Serializer {
        self.serializer
    }

    pub fn max_message_len(&self) -> usize {
        self.max_message_len
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Records the session now running on this connection (0: none).
    pub fn set_session(&self, id: u64) {
        self.session.store(id, Ordering::Relaxed);
    }

    fn session_id(&self) -> Option<u64> {
        Some(self.session.load(Ordering::Relaxed)).filter(|id| *id != 0)
    }

    /// The next router-to-client request id (INVOCATION).
    pub fn next_request_id(&self) -> u64 {
        self.request_ids.next()
    }

    /// The highest router-to-client request id issued so far.
    pub fn issued_request_ids(&self) -> u64 {
        self.request_ids.current()
    }

    /// Queues a frame. On a full queue the connection is dropped (slow
    /// consumer). Returns false if the frame was not queued.
    pub fn send(&self, frame: Bytes) -> bool {
        self.enqueue(frame, false)
    }

    /// Queues an EVENT; under the `drop_events` policy a full queue drops the
    /// event instead of the connection.
    pub fn send_event(&self, frame: Bytes) -> bool {
        self.enqueue(frame, true)
    }

    fn enqueue(&self, frame: Bytes, is_event: bool) -> bool {
        if self.stopped.load(Ordering::Relaxed) {
            return false;
        }
        match self.tx.try_send(Outgoing::Frame(frame)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if is_event && self.policy == SlowConsumerPolicy::DropEvents {
                    let n = self.dropped_events.fetch_add(1, Ordering::Relaxed) + 1;
                    if n == 1 || n.is_power_of_two() {
                        tracing::warn!(
                            peer = %self.label,
                            session = ?self.session_id(),
                            dropped_events = n,
                            "slow consumer: outbound queue of {} messages is full, dropping events (policy drop_events)",
                            self.capacity
                        );
                    }
                } else {
                    self.kill(format!(
                        "slow consumer: outbound queue of {} messages is full",
                        self.capacity
                    ));
                }
                false
            }
        }
    }

    /// Closes the connection once everything queued so far is written.
    pub fn close_after_flush(&self) {
        if self.tx.try_send(Outgoing::Close).is_err() {
            self.kill("outbound queue full while closing".to_string());
        }
    }

    /// Drops the connection at once, without writing what is queued.
    pub fn kill(&self, reason: String) {
        let mut slot = self.kill_reason.lock();
        if slot.is_none() {
            tracing::warn!(peer = %self.label, session = ?self.session_id(), "closing connection: {}", Clip(&reason));
            *slot = Some(reason);
        }
        drop(slot);
        self.stop();
    }

    /// Stops the connection without a reason to log (an orderly close whose
    /// last frame was written, or a transport that already ended).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.killed.cancel();
    }

    /// Whether the connection was stopped or killed.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Cancelled when the connection must be dropped at once.
    pub fn killed(&self) -> &CancellationToken {
        &self.killed
    }

    /// Why the connection was killed, if it was.
    pub fn kill_reason(&self) -> Option<String> {
        self.kill_reason.lock().clone()
    }
}
