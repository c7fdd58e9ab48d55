//! The queue [`Store`] of cluster mode: a realm's queues as one append-only log in a JetStream
//! stream (one subject), written by the one node that owns the realm's queues (`lease.rs`).
//!
//! - **Entries.** Each commit (one or more of the engine's batches, group-committed) is one log
//!   entry: the mutations encoded by `switchyard_queue::replicated`. An entry larger than a NATS
//!   message is cut into parts; every part starts with two bytes, its kind (batch, checkpoint,
//!   term) and whether it is the last part. A reader applies an entry only once its last part is
//!   read: a writer that dies in the middle leaves parts that the next owner's term marker makes
//!   everyone drop. So each batch is all or nothing, as in the embedded store.
//! - **Acknowledged = on a quorum.** A batch's completion (the producer's acknowledgement for a
//!   push) runs once JetStream acknowledged every part: stored by the stream's replicas (a quorum
//!   of them with `replicas = 3`).
//! - **Fencing.** Every part is published with `Nats-Expected-Last-Subject-Sequence` = the
//!   sequence of the part before it. A new owner starts its term by appending a *term marker*
//!   the same way; from then on every write of an older owner is refused
//!   (`WrongLastSequence`): its store fails and it stops. Each part also carries a
//!   `Nats-Msg-Id` (term and position), so a publish retried after a lost acknowledgement is not
//!   stored twice.
//! - **Recovery.** After its term marker, the new owner reads the log from its first message to
//!   the marker (message by message from the stream's leader, see [`replay`]) and applies it
//!   to a `Materialized` state: everything any earlier owner had acknowledged is before the
//!   marker.
//! - **Compaction.** Every `checkpoint_entries` entries (or [`CHECKPOINT_BYTES`]) the owner
//!   appends a checkpoint (the whole state as one entry) and purges the log before it. A reader
//!   that meets a checkpoint replaces its state with it.
//!
//! The owner holds the state in memory (payloads included: the embedded store keeps them on
//! disk), bounded by the queues' limits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind;
use futures_util::StreamExt;
use parking_lot::{Mutex, RwLock};
use switchyard_queue::replicated::{encode_mutations, Materialized, StoredResult};
use switchyard_queue::store::{Batch, Done, Snapshot};
use switchyard_queue::{JobId, Payload, Store, StoreError, StoreStats};
use tokio::sync::{mpsc, watch};

/// Entry kinds (first byte of every part).
const BATCH: u8 = 1;
const CHECKPOINT: u8 = 2;
const TERM: u8 = 3;

/// Bytes written between checkpoints.
pub const CHECKPOINT_BYTES: u64 = 256 * 1024 * 1024;
/// Batches one commit carries at most.
const GROUP_BATCHES: usize = 1024;
/// How long the recovery may read the log.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the owner keeps trying its log while it holds the lease: after a NATS server's
/// loss, JetStream elects new stream and meta leaders, seconds during which requests time out
/// or find no responder. Another owner would meet the same log, so the owner waits (its
/// pushes wait with it) instead of handing the queues over.
pub const LOG_OUTAGE: Duration = Duration::from_secs(30);
/// Pause between two tries of a log request.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Log messages the recovery asks for at once.
const REPLAY_IN_FLIGHT: usize = 32;

fn storage(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(e.to_string().into())
}

/// Where a realm's log is, and who writes it.
#[derive(Clone)]
pub struct LogPlace {
    pub js: jetstream::Context,
    pub stream: String,
    pub subject: String,
    pub replicas: usize,
    pub node: String,
    /// The owner's term (from the lease).
    pub term: u64,
    /// The lease as the lease task sees it: `Some(term)` while this node holds it.
    pub held: watch::Receiver<Option<u64>>,
    /// How long a write may be retried once the lease is lost (while it is held: up to
    /// [`LOG_OUTAGE`]). Fencing keeps a late write from overwriting a newer owner's log.
    pub retry_for: Duration,
    /// Entries between checkpoints.
    pub checkpoint_entries: u64,
    /// Bytes of completed jobs' records the log's state keeps (the realm's
    /// `[realm.queue_limits.results] max_total_bytes`).
    pub result_budget: u64,
}

impl LogPlace {
    /// Whether this node still holds the term it writes the log for.
    fn holds(&self) -> bool {
        *self.held.borrow() == Some(self.term)
    }

    /// Whether a request that failed `since` ago may be tried again.
    fn may_retry(&self, since: Instant) -> bool {
        let bound = if self.holds() {
            LOG_OUTAGE
        } else {
            self.retry_for
        };
        since.elapsed() < bound
    }
}

struct Shared {
    state: RwLock<Materialized>,
    failure: std::sync::OnceLock<StoreError>,
    stats: Mutex<StoreStats>,
    closed: AtomicBool,
    /// Turns true when the store fails.
    failed: watch::Sender<bool>,
    /// Turns true when the writer has ended (after a close, what was queued before it is
    /// written).
    drained: watch::Sender<bool>,
}

impl Shared {
    fn fail(&self, e: StoreError) {
        tracing::error!(error = %e, "cluster: queue log write failed; this node stops dispatching the realm's queues");
        let _ = self.failure.set(e.clone());
        self.stats.lock().failure = Some(e);
        self.failed.send_replace(true);
    }
}

enum Msg {
    Batch(Batch),
    Close,
}

/// The JetStream store of one realm (see the module documentation).
pub struct JetStreamStore {
    tx: mpsc::UnboundedSender<Msg>,
    shared: Arc<Shared>,
    /// What recovery found, for logs.
    pub recovered: Recovered,
}

/// What [`JetStreamStore::open`] read.
#[derive(Debug, Clone, Copy)]
pub struct Recovered {
    /// Messages read from the log.
    pub messages: u64,
    /// Jobs in the state.
    pub jobs: usize,
    /// How long the term marker and the replay took.
    pub took: Duration,
}

/// One part as published: kind, last flag, data.
fn part(kind: u8, last: bool, data: &[u8]) -> bytes::Bytes {
    let mut v = Vec::with_capacity(data.len() + 2);
    v.push(kind);
    v.push(u8::from(last));
    v.extend_from_slice(data);
    v.into()
}

/// The appending side: the sequence of the last part, for the next one's fence.
struct Appender {
    place: LogPlace,
    last: u64,
    max_part: usize,
}

impl Appender {
    /// Appends one entry (in parts); returns the sequence of its first part.
    async fn append(&mut self, kind: u8, data: &[u8]) -> Result<u64, StoreError> {
        let mut first = None;
        let mut chunks: Vec<&[u8]> = data.chunks(self.max_part).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let n = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let seq = self.publish(part(kind, i + 1 == n, chunk)).await?;
            first.get_or_insert(seq);
        }
        Ok(first.unwrap_or(self.last))
    }

    /// Publishes one part after `self.last`, retrying (same message id) while
    /// [`LogPlace::may_retry`].
    async fn publish(&mut self, body: bytes::Bytes) -> Result<u64, StoreError> {
        let started = Instant::now();
        let id = format!("{}-{}-{}", self.place.node, self.place.term, self.last);
        loop {
            let message = jetstream::message::PublishMessage::build()
                .payload(body.clone())
                .message_id(&id)
                .expected_last_subject_sequence(self.last);
            let r = match self
                .place
                .js
                .send_publish(self.place.subject.clone(), message)
                .await
            {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match r {
                Ok(ack) => {
                    self.last = ack.sequence;
                    return Ok(ack.sequence);
                }
                Err(e) if matches!(e.kind(), PublishErrorKind::WrongLastSequence) => {
                    return Err(storage(format!(
                        "fenced: another node wrote the queue log (term {} is over)",
                        self.place.term
                    )));
                }
                Err(e) if matches!(e.kind(), PublishErrorKind::MaxPayloadExceeded) => {
                    return Err(storage(e));
                }
                Err(e) => {
                    if !self.place.may_retry(started) {
                        return Err(storage(format!(
                            "queue log unreachable for {:?}: {e}",
                            started.elapsed()
                        )));
                    }
                    tracing::debug!("cluster: queue log write retried: {e}");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }
}

impl JetStreamStore {
    /// Starts term `place.term` on the log (creating the stream when missing), reads the log up
    /// to the term marker and starts the writer.
    pub async fn open(place: LogPlace) -> Result<JetStreamStore, String> {
        let started = Instant::now();
        let js = &place.js;
        let stream = log_stream(&place).await?;
        let max_part = js
            .client()
            .server_info()
            .max_payload
            .saturating_sub(4096)
            .max(4096);
        let mut appender = Appender {
            place: place.clone(),
            last: 0,
            max_part,
        };
        // The term marker, fenced on the last message (retried while an older owner, not yet
        // stopped, still appends).
        let marker =
            serde_json::to_vec(&serde_json::json!({"node": place.node, "term": place.term}))
                .unwrap_or_default();
        let marking = Instant::now();
        let marker_seq = loop {
            let last = match stream.get_last_raw_message_by_subject(&place.subject).await {
                Ok(m) => Ok(m.sequence),
                Err(e)
                    if matches!(
                        e.kind(),
                        jetstream::stream::LastRawMessageErrorKind::NoMessageFound
                    ) =>
                {
                    Ok(0)
                }
                Err(e) => Err(format!("cannot read the queue log {}: {e}", place.stream)),
            };
            let written = match last {
                Ok(last) => {
                    appender.last = last;
                    appender
                        .publish(part(TERM, true, &marker))
                        .await
                        .map_err(|e| {
                            format!("cannot start term {} on the queue log: {e}", place.term)
                        })
                }
                Err(e) => Err(e),
            };
            match written {
                Ok(seq) => break seq,
                Err(e) if place.may_retry(marking) => {
                    tracing::debug!("cluster: term marker retried: {e}");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        };
        let first = stream.cached_info().state.first_sequence.max(1);
        let (state, messages, since) =
            tokio::time::timeout(REPLAY_TIMEOUT, replay(&place, &stream, first, marker_seq))
                .await
                .map_err(|_| {
                    format!("reading the queue log took more than {REPLAY_TIMEOUT:?}")
                })??;
        let recovered = Recovered {
            messages,
            jobs: state.jobs(),
            took: started.elapsed(),
        };
        let (failed, _) = watch::channel(false);
        let (drained, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: RwLock::new(state),
            failure: std::sync::OnceLock::new(),
            stats: Mutex::new(StoreStats::default()),
            closed: AtomicBool::new(false),
            failed,
            drained,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write(appender, stream, shared.clone(), rx, since));
        Ok(JetStreamStore {
            tx,
            shared,
            recovered,
        })
    }

    /// The completed jobs' records the log holds (oldest first), for the queue service.
    pub fn completed(&self) -> Vec<StoredResult> {
        self.shared.state.read().results()
    }

    /// Turns true once the store has failed (fenced by a newer owner, or NATS unreachable).
    pub fn failed(&self) -> watch::Receiver<bool> {
        self.shared.failed.subscribe()
    }

    /// Turns true once the writer has ended (after [`Store::close`]: what was submitted
    /// before is written, or failed).
    pub fn drained(&self) -> watch::Receiver<bool> {
        self.shared.drained.subscribe()
    }
}

/// Gets (or creates) the log's stream. While JetStream elects leaders after a NATS server's
/// loss its requests time out or find no responder: retried while [`LogPlace::may_retry`].
async fn log_stream(place: &LogPlace) -> Result<jetstream::stream::Stream, String> {
    use jetstream::context::GetStreamErrorKind;
    let since = Instant::now();
    loop {
        let e = match place.js.get_stream(&place.stream).await {
            Ok(s) => return Ok(s),
            Err(e) => e,
        };
        let missing = matches!(
            e.kind(),
            GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
        );
        let e = if missing {
            let config = jetstream::stream::Config {
                name: place.stream.clone(),
                subjects: vec![place.subject.clone()],
                num_replicas: place.replicas,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            };
            match place.js.create_stream(config).await {
                Ok(s) => return Ok(s),
                // Another node may have created it meanwhile: read again.
                Err(e) => format!("cannot create the queue log stream {}: {e}", place.stream),
            }
        } else {
            format!("cannot read the queue log stream {}: {e}", place.stream)
        };
        if !place.may_retry(since) {
            return Err(e);
        }
        tracing::debug!("cluster: {e} (trying again)");
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// The log message at `seq`, `None` if there is none (purged before a checkpoint).
async fn read_at(
    place: &LogPlace,
    stream: &jetstream::stream::Stream,
    seq: u64,
) -> Result<Option<jetstream::message::StreamMessage>, String> {
    let since = Instant::now();
    loop {
        match stream.get_raw_message(seq).await {
            Ok(m) => return Ok(Some(m)),
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::stream::RawMessageErrorKind::NoMessageFound
                ) =>
            {
                return Ok(None)
            }
            Err(e) if place.may_retry(since) => {
                tracing::debug!("cluster: queue log read at {seq} retried: {e}");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(e) => return Err(format!("cannot read the queue log at {seq}: {e}")),
        }
    }
}

/// Reads the log from `first` to `until` (the term marker): the state, the messages read and
/// the entries since the last checkpoint.
///
/// Each message is asked of the stream's leader by its sequence ([`REPLAY_IN_FLIGHT`] at
/// once, applied in order). A consumer would be lighter on NATS, but creating one needs the
/// JetStream meta leader, which a NATS cluster may still be electing after a server's loss
/// when the stream itself already has its leader (the term marker was just stored): reading
/// by sequence makes a takeover wait for the stream alone.
async fn replay(
    place: &LogPlace,
    stream: &jetstream::stream::Stream,
    first: u64,
    until: u64,
) -> Result<(Materialized, u64, u64), String> {
    let mut log = Replay::new(place.result_budget);
    let mut messages = futures_util::stream::iter(first..=until)
        .map(|seq| read_at(place, stream, seq))
        .buffered(REPLAY_IN_FLIGHT);
    while let Some(m) = messages.next().await {
        if let Some(m) = m? {
            log.feed(m.sequence, &m.payload)?;
        }
    }
    Ok((log.state, log.read, log.since))
}

/// The log's entries applied in order (parts joined; an entry a term marker interrupts is
/// dropped; a checkpoint replaces the state).
struct Replay {
    state: Materialized,
    budget: u64,
    pending: Vec<u8>,
    pending_kind: u8,
    read: u64,
    since: u64,
}

impl Replay {
    fn new(budget: u64) -> Replay {
        Replay {
            state: Materialized::with_result_budget(budget),
            budget,
            pending: Vec::new(),
            pending_kind: 0,
            read: 0,
            since: 0,
        }
    }

    fn feed(&mut self, seq: u64, body: &[u8]) -> Result<(), String> {
        self.read += 1;
        if body.len() < 2 {
            return Err(format!("queue log message {seq} is too short"));
        }
        let (kind, last, data) = (body[0], body[1] == 1, &body[2..]);
        if kind == TERM {
            // An owner's unfinished entry before it is dropped.
            self.pending.clear();
            self.pending_kind = 0;
            return Ok(());
        }
        if self.pending_kind != kind {
            self.pending.clear();
        }
        self.pending_kind = kind;
        self.pending.extend_from_slice(data);
        if last {
            match kind {
                BATCH => {
                    self.state
                        .apply(&self.pending)
                        .map_err(|e| format!("queue log entry ending at {seq}: {e}"))?;
                    self.since += 1;
                }
                CHECKPOINT => {
                    let mut fresh = Materialized::with_result_budget(self.budget);
                    fresh
                        .apply(&self.pending)
                        .map_err(|e| format!("queue log checkpoint ending at {seq}: {e}"))?;
                    self.state = fresh;
                    self.since = 0;
                }
                k => return Err(format!("queue log message {seq} has unknown kind {k}")),
            }
            self.pending.clear();
            self.pending_kind = 0;
        }
        Ok(())
    }
}

/// The writer: commits groups of batches in order, then their completions; checkpoints.
async fn write(
    appender: Appender,
    stream: jetstream::stream::Stream,
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Msg>,
    since: u64,
) {
    write_all(appender, stream, shared.clone(), rx, since).await;
    shared.drained.send_replace(true);
}

async fn write_all(
    mut appender: Appender,
    stream: jetstream::stream::Stream,
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    mut since: u64,
) {
    let mut bytes_since = 0u64;
    let mut buf = Vec::new();
    loop {
        let Some(first) = rx.recv().await else { return };
        let mut group: Vec<Batch> = Vec::new();
        let mut closing = false;
        match first {
            Msg::Batch(b) => group.push(b),
            Msg::Close => closing = true,
        }
        while !closing && group.len() < GROUP_BATCHES {
            match rx.try_recv() {
                Ok(Msg::Batch(b)) => group.push(b),
                Ok(Msg::Close) => closing = true,
                Err(_) => break,
            }
        }
        if !group.is_empty() {
            let started = Instant::now();
            buf.clear();
            let mut encoded = Ok(());
            let mut mutations = 0u64;
            for b in &group {
                mutations += b.mutations.len() as u64;
                encoded = encoded.and_then(|()| encode_mutations(&b.mutations, &mut buf));
            }
            let r = match encoded {
                Ok(()) if shared.failure.get().is_none() => {
                    appender.append(BATCH, &buf).await.map(|_| ())
                }
                Ok(()) => Err(shared.failure.get().cloned().unwrap_or(StoreError::Closed)),
                Err(e) => Err(e),
            };
            let r = r.and_then(|()| shared.state.write().apply(&buf));
            let dones: Vec<Done> = group.iter_mut().filter_map(|b| b.done.take()).collect();
            match &r {
                Ok(()) => {
                    let mut s = shared.stats.lock();
                    s.commits += 1;
                    s.syncs += 1;
                    s.batches += group.len() as u64;
                    s.mutations += mutations;
                    s.largest_commit = s.largest_commit.max(group.len() as u64);
                    s.commit_time += started.elapsed();
                    since += 1;
                    bytes_since += buf.len() as u64;
                }
                Err(e) => {
                    if shared.failure.get().is_none() {
                        shared.fail(e.clone());
                    }
                }
            }
            for done in dones {
                done(r.clone());
            }
        }
        if closing {
            return;
        }
        if shared.failure.get().is_none()
            && (since >= appender.place.checkpoint_entries || bytes_since >= CHECKPOINT_BYTES)
        {
            let data = shared.state.read().checkpoint();
            match appender.append(CHECKPOINT, &data).await {
                Ok(first) => {
                    since = 0;
                    bytes_since = 0;
                    // Everything before the checkpoint is in it.
                    if let Err(e) = stream
                        .purge()
                        .filter(appender.place.subject.clone())
                        .sequence(first)
                        .await
                    {
                        tracing::warn!("cluster: queue log not compacted: {e}");
                    }
                }
                Err(e) => shared.fail(e),
            }
        }
    }
}

impl Store for JetStreamStore {
    fn load(&self, now_ms: u64) -> Result<Snapshot, StoreError> {
        self.shared.state.read().snapshot(now_ms)
    }

    fn submit(&self, batch: Batch) -> Result<(), StoreError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        if let Some(e) = self.shared.failure.get() {
            return Err(e.clone());
        }
        self.tx
            .send(Msg::Batch(batch))
            .map_err(|_| StoreError::Closed)
    }

    fn payloads(&self, ids: &[JobId]) -> Result<Vec<Option<Payload>>, StoreError> {
        self.shared.state.read().payloads(ids)
    }

    fn stats(&self) -> StoreStats {
        self.shared.stats.lock().clone()
    }

    fn failure(&self) -> Option<StoreError> {
        self.shared.failure.get().cloned()
    }

    fn close(&self) {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // The writer commits what is queued before it, then ends.
        let _ = self.tx.send(Msg::Close);
    }
}
