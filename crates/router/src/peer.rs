//! The outbound side of a connection, as the router core sees it: a bounded
//! queue of encoded frames, a close signal and the slow-consumer policy.
//! The transport owns the receiving end and writes the frames.

use crate::logsafe::Clip;
use crate::outbound_queue::{self, TryRecvError, TrySendError};
use crate::traffic::Traffic;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::Deserialize;
use switchyard_proto::id::IdSequence;
use switchyard_proto::Serializer;
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

/// How much a session's outbound queue may hold before the slow-consumer
/// policy applies: messages and bytes (`[limits] outbound_queue` and
/// `outbound_queue_bytes`), and the process-wide budget it shares with every
/// other client connection (`total_outbound_bytes`).
#[derive(Clone, Debug)]
pub struct OutboundLimits {
    pub messages: usize,
    /// Encoded bytes queued and not yet taken by the writer. A frame is
    /// always accepted into an empty queue, so one message larger than this
    /// still goes out.
    pub bytes: usize,
    pub policy: SlowConsumerPolicy,
    /// The budget shared by all client connections; None: unbounded.
    pub budget: Option<Arc<OutboundBudget>>,
    /// Where the frames queued are counted (messages out by type, bytes
    /// out); None: not counted (the router's own sessions, tests).
    pub traffic: Option<Arc<Traffic>>,
}

/// The bytes queued for all client connections of the process, against one
/// limit (`[limits] total_outbound_bytes`).
///
/// The per-session bound alone lets many connections that do not read make
/// the router hold their product (256 connections per address × 16 MiB).
/// The hot path costs one atomic add when a frame is queued and one
/// subtraction when the writer takes it. Only when the total is over the
/// limit is a queue held to its fair share: the limit divided by the number
/// of client connections. A frame for a session whose queue would then hold
/// more than its share gets the slow-consumer policy if the session's writer
/// took nothing from its queue for [`STALLED_AFTER`] (it does not read), or
/// if the queue holds more than [`READER_SHARES`] shares (it reads, but too
/// slowly). A session that reads keeps receiving through a burst, so the
/// connections cut are the ones that hold the most and drain nothing.
#[derive(Debug)]
pub struct OutboundBudget {
    limit: usize,
    queued: AtomicUsize,
    peers: AtomicUsize,
    epoch: Instant,
}

/// A writer that took nothing from its queue for this long does not read.
pub const STALLED_AFTER: Duration = Duration::from_millis(500);
/// How many fair shares a queue that is being read may hold while the
/// budget is exceeded.
pub const READER_SHARES: usize = 4;

impl OutboundBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(OutboundBudget {
            limit: limit.max(1),
            queued: AtomicUsize::new(0),
            peers: AtomicUsize::new(0),
            epoch: Instant::now(),
        })
    }

    /// Milliseconds since the budget was made (the writers' clock).
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes queued for all client connections now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// A queue's share of the budget while the total is over the limit.
    fn fair_share(&self) -> usize {
        self.limit / self.peers.load(Ordering::Relaxed).max(1)
    }
}

/// A connection's registration with the budget: counted among the peers
/// while it lives.
#[derive(Debug)]
struct BudgetSlot(Arc<OutboundBudget>);

impl BudgetSlot {
    fn new(budget: Arc<OutboundBudget>) -> Self {
        budget.peers.fetch_add(1, Ordering::Relaxed);
        BudgetSlot(budget)
    }

    fn add(&self, len: usize) -> usize {
        self.0.queued.fetch_add(len, Ordering::Relaxed)
    }

    fn sub(&self, len: usize) {
        self.0.queued.fetch_sub(len, Ordering::Relaxed);
    }
}

impl Drop for BudgetSlot {
    fn drop(&mut self) {
        self.0.peers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The receiving end of a peer's outbound queue (the transport's writer).
/// The frames taken are released from the queue's counts (places, bytes,
/// the shared budget) once per batch: when the writer calls
/// [`OutboundRx::settle`] after taking one, when it finds the queue empty,
/// and before it sleeps. Per frame, that was three atomic subtractions on
/// counters the producers (the other core) write too.
pub struct OutboundRx {
    rx: outbound_queue::Receiver<Outgoing>,
    queued_bytes: Arc<AtomicUsize>,
    budget: Option<Arc<OutboundBudget>>,
    /// When the writer last took a frame (ms on the budget's clock).
    last_take: Arc<AtomicU64>,
    /// Bytes of the frames taken and not yet released.
    taken_bytes: usize,
}

impl OutboundRx {
    /// Counts a frame's bytes as taken (released by the next `settle`).
    fn taken(&mut self, item: Outgoing) -> Outgoing {
        if let Outgoing::Frame(f) = &item {
            self.taken_bytes += f.len();
        }
        item
    }

    /// Releases what was taken since the last call from the queue's and
    /// the budget's counts. The writer calls it once it has taken a batch.
    pub fn settle(&mut self) {
        self.rx.settle();
        let n = std::mem::take(&mut self.taken_bytes);
        if n > 0 {
            self.queued_bytes.fetch_sub(n, Ordering::Relaxed);
            if let Some(b) = &self.budget {
                b.queued.fetch_sub(n, Ordering::Relaxed);
            }
        }
    }

    /// The next item; None once the peer is gone. The writer calls it once
    /// per batch: that is when its progress is recorded. Settles first.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        self.settle();
        let item = self.rx.recv().await?;
        if let Some(b) = &self.budget {
            self.last_take.store(b.now_ms(), Ordering::Relaxed);
        }
        Some(self.taken(item))
    }

    /// The next item if one is queued; settles when there is none.
    pub fn try_recv(&mut self) -> Result<Outgoing, TryRecvError> {
        match self.rx.try_recv() {
            Ok(item) => Ok(self.taken(item)),
            Err(e) => {
                self.settle();
                Err(e)
            }
        }
    }
}

impl Drop for OutboundRx {
    /// Frames never written leave the shared budget with the connection:
    /// closing first makes every later send fail (and release its own bytes).
    fn drop(&mut self) {
        if self.budget.is_some() {
            self.rx.close();
            while let Ok(item) = self.rx.try_recv() {
                self.taken(item);
            }
        }
        self.settle();
    }
}

/// A connection's log span (level ERROR, so that it is on whatever the
/// log level: a line at any level carries its fields).
fn connection_span(label: &str) -> tracing::Span {
    tracing::error_span!(
        "connection",
        peer = %label,
        session = tracing::field::Empty,
        realm = tracing::field::Empty,
        authid = tracing::field::Empty,
    )
}

/// The router's handle on one connection's outbound path.
pub struct Peer {
    serializer: Serializer,
    /// Wakes the writer if it sleeps; for an EVENT, the batch of the
    /// reader routing it may do that later (`outbound_queue::Batch`).
    tx: outbound_queue::Sender<Outgoing>,
    capacity: usize,
    /// Bytes of the frames queued and not yet taken by the writer (shared
    /// with the [`OutboundRx`]).
    queued_bytes: Arc<AtomicUsize>,
    max_queued_bytes: usize,
    budget: Option<BudgetSlot>,
    last_take: Arc<AtomicU64>,
    policy: SlowConsumerPolicy,
    max_message_len: usize,
    killed: CancellationToken,
    /// Mirrors `killed` for the per-message check (the token's own check
    /// takes a lock).
    stopped: AtomicBool,
    kill_reason: Mutex<Option<String>>,
    dropped_events: AtomicU64,
    /// Frames the client sent and frames queued for it (the meta API's
    /// `wamp.session.get` tells them; an admin page derives rates).
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    request_ids: IdSequence,
    label: String,
    /// The id of the session on this connection (0 before WELCOME), for logs.
    session: AtomicU64,
    /// Where the slow-consumer policy's actions are counted.
    traffic: Option<Arc<Traffic>>,
    /// The connection's log span: `peer`, then `session`, `realm` and
    /// `authid` once a session runs ([`Peer::span`]).
    span: tracing::Span,
}

impl Peer {
    /// Creates the peer and the receiving end of its outbound queue, bounded
    /// in messages only (the router's own sessions, tests).
    /// `max_message_len` is the largest message the client accepts (RawSocket
    /// handshake); `label` names the connection in logs.
    pub fn new(
        serializer: Serializer,
        capacity: usize,
        policy: SlowConsumerPolicy,
        max_message_len: usize,
        label: String,
    ) -> (Arc<Peer>, OutboundRx) {
        let limits = OutboundLimits {
            messages: capacity,
            bytes: usize::MAX,
            policy,
            budget: None,
            traffic: None,
        };
        Peer::bounded(serializer, limits, max_message_len, label)
    }

    /// Creates the peer of a client connection: its outbound queue is
    /// bounded in messages and in bytes.
    pub fn bounded(
        serializer: Serializer,
        limits: OutboundLimits,
        max_message_len: usize,
        label: String,
    ) -> (Arc<Peer>, OutboundRx) {
        let capacity = limits.messages.max(1);
        let (tx, rx) = outbound_queue::channel(capacity);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let last_take = Arc::new(AtomicU64::new(
            limits.budget.as_ref().map_or(0, |b| b.now_ms()),
        ));
        let rx = OutboundRx {
            rx,
            queued_bytes: queued_bytes.clone(),
            budget: limits.budget.clone(),
            last_take: last_take.clone(),
            taken_bytes: 0,
        };
        let span = connection_span(&label);
        let peer = Peer {
            serializer,
            tx,
            capacity,
            queued_bytes,
            max_queued_bytes: limits.bytes.max(1),
            budget: limits.budget.map(BudgetSlot::new),
            last_take,
            policy: limits.policy,
            max_message_len,
            killed: CancellationToken::new(),
            stopped: AtomicBool::new(false),
            kill_reason: Mutex::new(None),
            dropped_events: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            request_ids: IdSequence::new(),
            label,
            session: AtomicU64::new(0),
            traffic: limits.traffic,
            span,
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

    /// Where this connection's traffic is counted (None: a router's own
    /// session, not counted).
    pub fn traffic(&self) -> Option<&Arc<Traffic>> {
        self.traffic.as_ref()
    }

    /// The connection's log span. The transport runs the connection's
    /// tasks in it and the session records its id, realm and authid in it
    /// ([`Peer::name_session`]), so that every line logged about the
    /// session carries them, in text and in JSON (`span.session`, ...).
    /// Lines this peer logs from another session's task (the slow-consumer
    /// policy, a kill) enter it too.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Names the session now running on this connection in its log span.
    pub fn name_session(&self, id: u64, realm: &str, authid: &str) {
        self.span.record("session", id);
        self.span.record("realm", realm);
        self.span
            .record("authid", tracing::field::display(Clip(authid)));
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
    /// event instead of the connection. The writer does not count it in
    /// `switchyard_messages_out_total`: the caller counts the EVENTs of a
    /// publication at once ([`Traffic::events_queued`], for the peers whose
    /// [`Peer::traffic`] is set), so a fan-out to 1000 touches the shared
    /// counters once, not once per subscriber.
    pub fn send_event(&self, frame: Bytes) -> bool {
        self.enqueue(frame, true)
    }

    fn enqueue(&self, frame: Bytes, is_event: bool) -> bool {
        if self.stopped.load(Ordering::Relaxed) {
            return false;
        }
        let len = frame.len();
        // Reserve the bytes first; an empty queue takes any frame.
        let before = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before > 0 && before.saturating_add(len) > self.max_queued_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.full(is_event, || {
                format!(
                    "outbound queue holds {before} bytes, over its limit of {} bytes",
                    self.max_queued_bytes
                )
            });
            return false;
        }
        if let Some(budget) = &self.budget {
            let total = budget.add(len).saturating_add(len);
            if before > 0 && total > budget.0.limit {
                let share = budget.0.fair_share();
                let queue = before.saturating_add(len);
                let idle_ms = budget
                    .0
                    .now_ms()
                    .saturating_sub(self.last_take.load(Ordering::Relaxed));
                let stalled = idle_ms >= STALLED_AFTER.as_millis() as u64;
                if queue > share && (stalled || queue > share.saturating_mul(READER_SHARES)) {
                    budget.sub(len);
                    self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                    // The limit first: log lines clip long reasons.
                    self.full(is_event, || {
                        format!(
                            "over total_outbound_bytes ({} bytes, all connections' queues hold \
                             {total}): this queue holds {before} bytes, over its share of {share} \
                             bytes (nothing written for {idle_ms} ms)",
                            budget.0.limit
                        )
                    });
                    return false;
                }
            }
        }
        // Counted where it is queued: an EVENT by the Broker, once per
        // publication (`send_event`); any other message here, its type
        // read from the frame's first bytes.
        let counted = match (&self.traffic, is_event) {
            (Some(t), false) => Some((
                t,
                switchyard_proto::codec::peek_type(self.serializer, &frame),
            )),
            _ => None,
        };
        // An EVENT's wake-up may wait for the end of the reader's batch
        // (`outbound_queue::Batch`): the EVENTs of the publisher's next
        // PUBLISHes in that batch then go out in the same write. Anything else (an RPC's INVOCATION or
        // RESULT) wakes the writer at once, so that the callee starts working
        // while the rest of the batch is routed.
        let item = Outgoing::Frame(frame);
        let sent = if is_event {
            self.tx.try_send_deferred(item)
        } else {
            self.tx.try_send(item)
        };
        match sent {
            Ok(()) => {
                if let Some((t, code)) = counted {
                    t.queued(code, len);
                }
                self.frames_out.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                if let Some(budget) = &self.budget {
                    budget.sub(len);
                }
                if let TrySendError::Full(_) = e {
                    self.full(is_event, || {
                        format!("outbound queue of {} messages is full", self.capacity)
                    });
                }
                false
            }
        }
    }

    /// Applies the slow-consumer policy to a frame that did not fit. `why` is
    /// only formatted for a log line: under `drop_events` a stalled
    /// subscriber refuses every EVENT of every publication, and formatting
    /// each reason cost the healthy sessions most of their throughput in the
    /// soak's slow-consumer storm (docs/RELIABILITY.md).
    fn full(&self, is_event: bool, why: impl FnOnce() -> String) {
        if is_event && self.policy == SlowConsumerPolicy::DropEvents {
            if let Some(t) = &self.traffic {
                t.slow_consumer_dropped_event();
            }
            let n = self.dropped_events.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n.is_power_of_two() {
                let _span = self.span.enter();
                tracing::warn!(
                    peer = %self.label,
                    session = ?self.session_id(),
                    dropped_events = n,
                    "slow consumer: {}, dropping events (policy drop_events)",
                    why()
                );
            }
        } else if self.kill_first(format!("slow consumer: {}", why())) {
            if let Some(t) = &self.traffic {
                t.slow_consumer_disconnected();
            }
        }
    }

    /// Counts a frame the client sent (the connection calls it per frame).
    pub fn count_frame_in(&self) {
        self.frames_in.fetch_add(1, Ordering::Relaxed);
    }

    /// Frames received from the client and frames queued for it, so far.
    pub fn frame_counts(&self) -> (u64, u64) {
        (
            self.frames_in.load(Ordering::Relaxed),
            self.frames_out.load(Ordering::Relaxed),
        )
    }

    /// Bytes queued and not yet taken by the writer.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// Closes the connection once everything queued so far is written.
    pub fn close_after_flush(&self) {
        if self.tx.try_send(Outgoing::Close).is_err() {
            self.kill("outbound queue full while closing".to_string());
        }
    }

    /// Drops the connection at once, without writing what is queued.
    pub fn kill(&self, reason: String) {
        self.kill_first(reason);
    }

    /// [`Peer::kill`]; true if this call gave the reason (the first kill).
    fn kill_first(&self, reason: String) -> bool {
        let mut slot = self.kill_reason.lock();
        let first = slot.is_none();
        if first {
            let _span = self.span.enter();
            tracing::warn!(peer = %self.label, session = ?self.session_id(), "closing connection: {}", Clip(&reason));
            *slot = Some(reason);
        }
        drop(slot);
        self.stop();
        first
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

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(
        messages: usize,
        bytes: usize,
        budget: &Arc<OutboundBudget>,
    ) -> (Arc<Peer>, OutboundRx) {
        let limits = OutboundLimits {
            messages,
            bytes,
            policy: SlowConsumerPolicy::DropEvents,
            budget: Some(budget.clone()),
            traffic: None,
        };
        Peer::bounded(Serializer::Json, limits, usize::MAX, "test".into())
    }

    /// The writer releases what it took once per batch: taken frames keep
    /// their place, bytes and share of the budget until it settles, and
    /// every count is back to zero after that (and when it is dropped).
    #[test]
    fn taken_frames_are_released_when_the_writer_settles() {
        let budget = OutboundBudget::new(1 << 20);
        let (peer, mut rx) = peer(2, 1 << 20, &budget);
        assert!(peer.send_event(Bytes::from_static(b"0123456789")));
        assert!(peer.send_event(Bytes::from_static(b"abcde")));
        assert!(
            !peer.send_event(Bytes::from_static(b"x")),
            "2 messages at most"
        );
        assert!(matches!(rx.try_recv(), Ok(Outgoing::Frame(_))));
        assert!(matches!(rx.try_recv(), Ok(Outgoing::Frame(_))));
        // Taken, not settled: still counted.
        assert_eq!((peer.queued_bytes(), budget.queued()), (15, 15));
        assert!(!peer.send_event(Bytes::from_static(b"x")));
        rx.settle();
        assert_eq!((peer.queued_bytes(), budget.queued()), (0, 0));
        assert!(peer.send_event(Bytes::from_static(b"xyz")));
        assert!(peer.send_event(Bytes::from_static(b"xyz")));
        // Finding the queue empty settles too.
        assert!(matches!(rx.try_recv(), Ok(Outgoing::Frame(_))));
        assert!(matches!(rx.try_recv(), Ok(Outgoing::Frame(_))));
        assert!(rx.try_recv().is_err());
        assert_eq!((peer.queued_bytes(), budget.queued()), (0, 0));
        // What is queued and taken leaves the budget with the writer.
        assert!(peer.send_event(Bytes::from_static(b"0123456789")));
        assert!(peer.send_event(Bytes::from_static(b"0123456789")));
        assert!(matches!(rx.try_recv(), Ok(Outgoing::Frame(_))));
        drop(rx);
        assert_eq!(budget.queued(), 0);
    }
}
