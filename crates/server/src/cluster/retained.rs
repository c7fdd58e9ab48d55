//! Retained events across nodes: the latest retained event of each topic
//! lives in one NATS KV bucket, and every node mirrors the bucket into its
//! realms' Brokers, so `get_retained` stays a local read on every node.
//!
//! # Shape
//! - **Bucket** `<escaped prefix>_retained` (a JetStream stream
//!   `KV_<bucket>` made by hand: async-nats 0.52 cannot create KV buckets
//!   on nats-server 2.9, see `shared/research`), one value per key
//!   (`max_messages_per_subject = 1`), no age limit, capped in bytes and
//!   values as a safety net above the realms' own limits ([`bucket_config`]).
//! - **Key** `<escaped realm>.<escaped topic>` ([`kv_key`]), the value the
//!   publication as it travels between nodes ([`wire`](super::wire)):
//!   publication id, publisher identity, PUBLISH options (for the
//!   exclude/eligible rules, evaluated when a subscriber asks) and EVENT
//!   details.
//! - **Out.** A node retains an event locally first (its realm's limits);
//!   only one that passed is queued ([`Outbox::put`]) for the one task that
//!   puts them, in order, into the bucket.
//! - **In.** One watcher per node follows the whole bucket (starting with
//!   the current value of every key) and
//!   hands each value to its realm's
//!   [`Broker::retain_remote`](switchyard_router::broker::Broker::retain_remote).
//!
//! # "Latest" cluster-wide
//! The latest retained event of a topic is the one the NATS server stored
//! last in the bucket (JetStream's stream order; one total order for the
//! whole cluster), not the one with the latest clock. Every node applies
//! the watched values in that order, so all converge on the bucket's
//! value. The publishing node holds its own event at once (read your own
//! write); so that an echo of its own older put, or another node's value
//! that its own later put will replace, does not bring an older value
//! back meanwhile, a node holds back watched values of a key while it has
//! puts of that key in flight and then keeps whichever of its own last
//! value and the newest held-back one has the later revision ([`Keys`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use switchyard_router::backplane::Publication;
use switchyard_router::{Realm, Router};
use tokio::sync::{mpsc, oneshot};

use super::{wire, RealmLink};

/// Retained events waiting to be put into the bucket; beyond, an event is
/// retained on its node only (counted in the log).
const PUT_QUEUE: usize = 4096;
/// How long one put may take.
const PUT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a put is tried again (NATS away, or a NATS cluster electing
/// the bucket's new leader after losing a server) before the event stays
/// on its node.
const PUT_RETRY: Duration = Duration::from_secs(10);
/// How often the watcher looks whether the NATS client reconnected (it
/// then watches again from where it was: the old consumer may have been on
/// a server that is gone).
const RECONNECT_CHECK: Duration = Duration::from_millis(200);
/// How often the watcher compares the bucket's last revision with what it
/// has seen: a watcher that stays behind for two checks in a row, without
/// moving, watches again (its consumer went with a NATS server of a NATS
/// cluster; the client itself would notice only after two missed 5 s
/// heartbeats).
const STALL_CHECK: Duration = Duration::from_secs(1);
/// How long making the watcher's consumer may take before it is tried
/// again (a NATS cluster electing leaders answers nothing meanwhile).
const WATCH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a node tries to make (or find) the bucket at start: a NATS
/// cluster elects its JetStream leader in the first seconds.
const BUCKET_WAIT: Duration = Duration::from_secs(15);
/// How long a node waits at start for the bucket's current values.
const CATCH_UP: Duration = Duration::from_secs(5);
/// Escaped keys longer than this are replaced by a digest of the topic
/// (NATS subjects travel in a control line of 4 KiB).
const MAX_KEY: usize = 1024;

/// One retained event to put into the bucket.
struct Put {
    key: String,
    value: Bytes,
}

/// The retained events this node shares, queued for the bucket; shared by
/// the realms' backplanes and the put and watch tasks, which apply what
/// [`Keys`] decides to the realms (under its lock, so in its order).
pub struct Outbox {
    node: Arc<str>,
    tx: mpsc::Sender<Put>,
    rx: parking_lot::Mutex<Option<mpsc::Receiver<Put>>>,
    keys: parking_lot::Mutex<Keys>,
    /// The realms by key token (set at start).
    realms: std::sync::OnceLock<HashMap<String, Arc<Realm>>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("retained::Outbox").finish_non_exhaustive()
    }
}

impl Outbox {
    pub fn new(node: Arc<str>) -> Outbox {
        let (tx, rx) = mpsc::channel(PUT_QUEUE);
        Outbox {
            node,
            tx,
            rx: parking_lot::Mutex::new(Some(rx)),
            keys: parking_lot::Mutex::default(),
            realms: std::sync::OnceLock::new(),
        }
    }

    /// Shares `p`, retained on this node in `realm`, as its topic's
    /// retained event cluster-wide. Never blocks.
    pub fn put(&self, realm: &str, p: &Publication<'_>) {
        if p.topic.starts_with("wamp.") {
            return;
        }
        let value = match wire::encode(&self.node, p) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("cluster: retained event not shared: {e}");
                return;
            }
        };
        let key = kv_key(realm, p.topic);
        let mut keys = self.keys.lock();
        keys.queued(&key, value.clone());
        if let Err(e) = self.tx.try_send(Put {
            key: key.clone(),
            value,
        }) {
            if let Some(v) = keys.ended(&key, None) {
                self.apply(&key, &v);
            }
            tracing::warn!(
                topic = %p.topic,
                "cluster: retained event kept on this node only: {}",
                match e {
                    mpsc::error::TrySendError::Full(_) => "the queue to NATS is full",
                    mpsc::error::TrySendError::Closed(_) => "not connected to the bucket",
                }
            );
        }
    }

    /// A put of `key` ended: stored at `revision`, or failed (None).
    fn ended(&self, key: &str, revision: Option<u64>) {
        let mut keys = self.keys.lock();
        if let Some(v) = keys.ended(key, revision) {
            self.apply(key, &v);
        }
    }

    /// The watcher saw `value` stored under `key` at `revision`.
    fn watched(&self, key: &str, revision: u64, value: Bytes) {
        let mut keys = self.keys.lock();
        if let Some(v) = keys.watched(key, revision, value) {
            self.apply(key, &v);
        }
    }

    /// Makes `value` `key`'s retained event in its realm's Broker.
    fn apply(&self, key: &str, value: &Bytes) {
        let token = key.split('.').next().unwrap_or_default();
        let Some(realm) = self.realms.get().and_then(|r| r.get(token)) else {
            tracing::debug!(key = %key, "cluster: retained event of a realm this node does not have");
            return;
        };
        let remote = match wire::decode(value) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(key = %key, "cluster: undecodable retained event: {e}");
                return;
            }
        };
        if kv_key(realm.name(), &remote.topic) != key {
            tracing::warn!(key = %key, topic = %remote.topic, "cluster: retained event under another topic's key dropped");
            return;
        }
        realm.broker.retain_remote(
            remote.publication,
            &remote.topic,
            remote.publisher,
            &remote.options,
            remote.details,
            &remote.payload,
        );
    }
}

/// What a node knows of the keys it put: which watched values to apply so
/// that it ends with the bucket's last value of each key, while holding
/// its own at once.
///
/// The watcher does not see every value (one value per key: a value
/// replaced before the watcher was sent it is gone), so this goes by
/// revisions: while puts of a key are in flight, watched values of it are
/// held back (the newest kept); when the last put ends, the newer of (its
/// own value, the newest held back) is applied; until the watcher reaches
/// the own put's revision, older watched values are ignored.
#[derive(Default)]
struct Keys {
    by_key: HashMap<String, KeyState>,
}

#[derive(Default)]
struct KeyState {
    /// This node's puts of the key queued or in flight.
    in_flight: u32,
    /// The revision of this node's last stored put (0: none).
    stored: u64,
    /// This node's last value of the key (while puts are in flight).
    own: Option<Bytes>,
    /// The newest watched value held back: (revision, value).
    held: Option<(u64, Bytes)>,
}

impl Keys {
    /// A put of `value` is queued.
    fn queued(&mut self, key: &str, value: Bytes) {
        let st = self.by_key.entry(key.to_string()).or_default();
        st.in_flight += 1;
        st.own = Some(value);
    }

    /// A put ended (`revision`: stored there; None: failed). The value to
    /// apply now, if any.
    fn ended(&mut self, key: &str, revision: Option<u64>) -> Option<Bytes> {
        let st = self.by_key.get_mut(key)?;
        st.in_flight = st.in_flight.saturating_sub(1);
        if let Some(r) = revision {
            st.stored = st.stored.max(r);
        }
        if st.in_flight > 0 {
            return None;
        }
        let own = st.own.take();
        let stored = st.stored;
        // `past`: the watcher is at or past this node's last put already.
        let (apply, past) = match st.held.take() {
            // Another node's value stored after ours: it is the latest.
            Some((r, v)) if r > stored => (Some(v), true),
            // Ours came back before its acknowledgement.
            Some((r, _)) if r == stored && revision.is_some() => (own, true),
            // Ours (applied again: the watcher may have applied an older
            // one between the local retain and the put being queued).
            _ if revision.is_some() => (own, false),
            _ => (None, false),
        };
        if past || stored == 0 {
            self.by_key.remove(key);
        }
        apply
    }

    /// The watcher saw `value` at `revision`. The value to apply, if any.
    fn watched(&mut self, key: &str, revision: u64, value: Bytes) -> Option<Bytes> {
        let Some(st) = self.by_key.get_mut(key) else {
            return Some(value);
        };
        if st.in_flight > 0 {
            if st.held.as_ref().is_none_or(|(r, _)| *r < revision) {
                st.held = Some((revision, value));
            }
            return None;
        }
        let stored = st.stored;
        if revision >= stored {
            // Caught up with this node's own put: later values are newer.
            self.by_key.remove(key);
        }
        (revision > stored).then_some(value)
    }
}

/// The bucket's name: `<escaped prefix>_retained`, where every byte of the
/// subject prefix other than `A-Z a-z 0-9 -` becomes `_` and two
/// upper-case hex digits (bucket names allow only `A-Z a-z 0-9 _ -`).
pub fn bucket_name(prefix: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + 9);
    for b in prefix.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            s.push(b as char);
        } else {
            s.push_str(&format!("_{b:02X}"));
        }
    }
    s.push_str("_retained");
    s
}

/// Appends `c` to `out` as one KV key token: bytes other than
/// `A-Z a-z 0-9 - _ /` become `=` and two upper-case hex digits (KV keys
/// allow only `A-Z a-z 0-9 - _ / = .`); an empty component is `=` alone.
fn push_key_token(out: &mut String, c: &str) {
    if c.is_empty() {
        out.push('=');
        return;
    }
    for b in c.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
}

/// The key of `topic`'s retained event in `realm`:
/// `<escaped realm>.<escaped topic>`, the realm one token (its dots
/// escaped), the topic one token per URI component. Injective: `=` is
/// always followed by two hex digits or ends its token. A key longer than
/// [`MAX_KEY`] is `<escaped realm>.=H.<SHA-256 of the topic, hex>` (no
/// escaped component is `=H`).
pub fn kv_key(realm: &str, topic: &str) -> String {
    let mut key = String::with_capacity(realm.len() + topic.len() + 1);
    push_key_token(&mut key, realm);
    let realm_len = key.len();
    for c in topic.split('.') {
        key.push('.');
        push_key_token(&mut key, c);
    }
    if key.len() > MAX_KEY {
        key.truncate(realm_len);
        key.push_str(".=H.");
        for b in Sha256::digest(topic.as_bytes()) {
            key.push_str(&format!("{b:02x}"));
        }
    }
    key
}

/// The bucket's stream: one value per key, no age limit, bounded at twice
/// what the realms may retain (bytes: their `max_retained_bytes` plus 4 KiB
/// of envelope per topic; values: their `retained_topics_limit`). The
/// realms' limits are what holds (each node checks them before it shares
/// an event); the bucket's caps only stop a runaway.
fn bucket_config(bucket: &str, router: &Router, replicas: usize) -> stream::Config {
    let (mut bytes, mut values) = (0i64, 0i64);
    for realm in router.realms() {
        let c = realm.config();
        let topics = c.retained_topics_limit as i64;
        bytes = bytes.saturating_add(
            (c.max_retained_bytes as i64).saturating_add(topics.saturating_mul(4096)),
        );
        values = values.saturating_add(topics);
    }
    stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_bytes: bytes.saturating_mul(2).max(1 << 20),
        max_messages: values.saturating_mul(2).max(1024),
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

/// Makes (or finds) the bucket, starts the put and watch tasks, and waits
/// (at most [`CATCH_UP`]) until the bucket's current values are in the
/// realms' Brokers.
pub async fn start(
    client: &async_nats::Client,
    prefix: &str,
    router: &Router,
    outbox: Arc<Outbox>,
    replicas: usize,
) -> Result<RealmLink, String> {
    let js = jetstream::new(client.clone());
    let bucket = bucket_name(prefix);
    let config = bucket_config(&bucket, router, replicas);
    let deadline = tokio::time::Instant::now() + BUCKET_WAIT;
    let stored = loop {
        match js.get_or_create_stream(config.clone()).await {
            Ok(mut s) => {
                // Made by a node with other realm limits (the configuration
                // changed): its caps follow this node's.
                let have = &s.cached_info().config;
                if (have.max_bytes, have.max_messages) != (config.max_bytes, config.max_messages) {
                    let mut update = have.clone();
                    update.max_bytes = config.max_bytes;
                    update.max_messages = config.max_messages;
                    if let Err(e) = js.update_stream(update).await {
                        tracing::warn!("cluster: cannot update the caps of the retained events bucket {bucket}: {e}");
                    }
                }
                break s.info().await.map(|i| i.state.messages).unwrap_or(1);
            }
            // Nobody answers JetStream requests: not enabled on this server
            // (a NATS cluster electing its leader answers "unavailable").
            Err(e)
                if tokio::time::Instant::now() < deadline
                    && e.kind() != jetstream::context::CreateStreamErrorKind::JetStreamUnavailable =>
            {
                tracing::debug!("cluster: retained events bucket {bucket}: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => {
                return Err(format!(
                    "cluster: cannot make the retained events bucket {bucket} (the NATS servers need JetStream: nats-server -js): {e}"
                ))
            }
        }
    };
    let store = js
        .get_key_value(bucket.clone())
        .await
        .map_err(|e| format!("cluster: cannot open the retained events bucket {bucket}: {e}"))?;
    let Some(rx) = outbox.rx.lock().take() else {
        return Err("cluster: retained events started twice".into());
    };
    let realms: HashMap<String, Arc<Realm>> = router
        .realms()
        .map(|r| {
            let mut token = String::new();
            push_key_token(&mut token, r.name());
            (token, r.clone())
        })
        .collect();
    let _ = outbox.realms.set(realms);
    let (caught_up, ready) = oneshot::channel();
    let caught_up = if stored == 0 {
        let _ = caught_up.send(());
        None
    } else {
        Some(caught_up)
    };
    let puts = tokio::spawn(put_all(store.clone(), rx, outbox.clone()));
    let watch = tokio::spawn(watch(client.clone(), store, outbox, caught_up));
    if tokio::time::timeout(CATCH_UP, ready).await.is_err() {
        tracing::warn!(
            "cluster: the retained events bucket {bucket} was not read within {CATCH_UP:?}; its values arrive later"
        );
    }
    Ok(RealmLink {
        _meta: None,
        tasks: vec![puts, watch],
    })
}

/// Puts the queued retained events into the bucket, in order.
async fn put_all(store: kv::Store, mut rx: mpsc::Receiver<Put>, outbox: Arc<Outbox>) {
    while let Some(Put { key, value }) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + PUT_RETRY;
        let result = loop {
            let attempt = tokio::time::timeout(PUT_TIMEOUT, store.put(&key, value.clone())).await;
            let e = match attempt {
                Ok(Ok(revision)) => break Ok(revision),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {PUT_TIMEOUT:?}"),
            };
            if tokio::time::Instant::now() >= deadline {
                break Err(e);
            }
            tracing::debug!(key = %key, "cluster: retained event put failed ({e}); trying again");
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        if let Err(e) = &result {
            tracing::warn!(key = %key, "cluster: retained event kept on this node only: {e}");
        }
        outbox.ended(&key, result.ok());
    }
}

/// Follows the bucket and applies each value to its realm's Broker;
/// `caught_up` is told once the values stored at start are applied.
async fn watch(
    client: async_nats::Client,
    store: kv::Store,
    outbox: Arc<Outbox>,
    mut caught_up: Option<oneshot::Sender<()>>,
) {
    let stats = client.statistics();
    let mut next: Option<u64> = None;
    // Failed attempts to watch in a row (logged once, at the first).
    let mut failures = 0u32;
    loop {
        let connects = stats.connects.load(std::sync::atomic::Ordering::Relaxed);
        let watched = match next {
            // The last value of every key first, then every new one.
            None => tokio::time::timeout(WATCH_TIMEOUT, store.watch_with_history(">")).await,
            Some(revision) => {
                tokio::time::timeout(WATCH_TIMEOUT, store.watch_all_from_revision(revision)).await
            }
        };
        let mut entries = match watched {
            Ok(Ok(w)) => {
                if failures > 0 {
                    tracing::info!(
                        failures,
                        "cluster: watching the retained events bucket again"
                    );
                }
                failures = 0;
                w
            }
            failed => {
                let e = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {WATCH_TIMEOUT:?}"),
                };
                failures += 1;
                if failures == 1 {
                    tracing::warn!(
                        "cluster: cannot watch the retained events bucket (trying again): {e}"
                    );
                } else {
                    tracing::debug!(
                        failures,
                        "cluster: cannot watch the retained events bucket: {e}"
                    );
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        let mut check = tokio::time::interval(RECONNECT_CHECK);
        let mut stall = tokio::time::interval(STALL_CHECK);
        stall.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut seen_before, mut stalled) = (next, 0u32);
        loop {
            let entry = tokio::select! {
                entry = entries.next() => match entry {
                    Some(entry) => entry,
                    None => break,
                },
                _ = check.tick() => {
                    if stats.connects.load(std::sync::atomic::Ordering::Relaxed) != connects {
                        tracing::debug!("cluster: reconnected; watching the retained events bucket again");
                        break;
                    }
                    continue;
                }
                _ = stall.tick() => {
                    let seen = next.map_or(0, |n| n - 1);
                    let last = tokio::time::timeout(STALL_CHECK, store.status())
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .map(|s| s.info.state.last_sequence);
                    // Behind the bucket without moving, or the bucket
                    // not answering while the watcher does not move.
                    stalled = match last {
                        Some(last) if last > seen && next == seen_before => stalled + 1,
                        None if next == seen_before => stalled + 1,
                        _ => 0,
                    };
                    tracing::trace!(?last, seen, stalled, "cluster: retained events watcher check");
                    seen_before = next;
                    if stalled >= 2 {
                        tracing::debug!(seen, "cluster: the retained events watcher stalled; watching again");
                        break;
                    }
                    continue;
                }
            };
            // A watcher error (a missed heartbeat while NATS is away) is
            // not fatal: the ordered consumer resumes where it was.
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    tracing::debug!("cluster: retained events watcher: {e}");
                    continue;
                }
            };
            next = Some(entry.revision + 1);
            if entry.operation == kv::Operation::Put {
                outbox.watched(&entry.key, entry.revision, entry.value);
            }
            if entry.delta == 0 {
                if let Some(tx) = caught_up.take() {
                    let _ = tx.send(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_escaped_injectively() {
        assert_eq!(
            kv_key("realm1", "com.example.topic"),
            "realm1.com.example.topic"
        );
        assert_eq!(kv_key("a.b", "x"), "a=2Eb.x");
        assert_eq!(kv_key("r", "a b.=.é..c"), "r.a=20b.=3D.=C3=A9.=.c");
        assert_ne!(kv_key("r", "a.b"), kv_key("r", "a=2Eb"));
        assert_ne!(kv_key("r.a", "b"), kv_key("r", "a.b"));
        let long = "x.".repeat(600) + "y";
        let key = kv_key("r", &long);
        assert!(key.starts_with("r.=H.") && key.len() == 5 + 64, "{key}");
        assert_ne!(key, kv_key("r", &("x.".repeat(600) + "z")));
        for k in [kv_key("r", "a b.=.é..c"), key] {
            assert!(k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_/=.".contains(&b)));
        }
    }

    #[test]
    fn bucket_names_keep_to_their_alphabet() {
        assert_eq!(bucket_name("switchyard"), "switchyard_retained");
        assert_eq!(bucket_name("a.b_c"), "a_2Eb_5Fc_retained");
    }

    #[test]
    fn a_node_ends_with_the_buckets_last_value_and_holds_its_own_meanwhile() {
        let v = |s: &'static str| Bytes::from_static(s.as_bytes());
        let mut k = Keys::default();
        // Nothing of ours: every watched value applies.
        assert_eq!(k.watched("t", 3, v("x3")), Some(v("x3")));
        // Two own puts queued: watched values are held back meanwhile,
        // even the echo of the first.
        k.queued("t", v("own1"));
        k.queued("t", v("own2"));
        assert_eq!(k.watched("t", 4, v("other4")), None);
        assert_eq!(k.ended("t", Some(5)), None);
        assert_eq!(k.watched("t", 5, v("own1")), None);
        // The last put is stored at 7, after the held-back 6: ours wins.
        assert_eq!(k.watched("t", 6, v("other6")), None);
        assert_eq!(k.ended("t", Some(7)), Some(v("own2")));
        // An older watched value (not delivered before) is ignored; the
        // echo of ours too; then the watcher is past it.
        assert_eq!(k.watched("t", 6, v("other6")), None);
        assert_eq!(k.watched("t", 7, v("own2")), None);
        assert!(k.by_key.is_empty());
        assert_eq!(k.watched("t", 8, v("other8")), Some(v("other8")));
        // Another node's value stored after our last put wins when it
        // ends, and the watcher may skip our echo (the value was replaced).
        k.queued("t", v("own3"));
        assert_eq!(k.watched("t", 10, v("other10")), None);
        assert_eq!(k.ended("t", Some(9)), Some(v("other10")));
        assert_eq!(k.watched("t", 11, v("other11")), Some(v("other11")));
        // A failed put keeps the local value, unless a newer one came.
        k.queued("u", v("own"));
        assert_eq!(k.ended("u", None), None);
        assert!(k.by_key.is_empty());
        k.queued("u", v("own"));
        assert_eq!(k.watched("u", 2, v("other")), None);
        assert_eq!(k.ended("u", None), Some(v("other")));
        // Our own value back before its acknowledgement: nothing left.
        k.queued("e", v("own"));
        assert_eq!(k.watched("e", 3, v("own")), None);
        assert_eq!(k.ended("e", Some(3)), Some(v("own")));
        assert!(
            k.by_key.is_empty(),
            "{:?}",
            k.by_key.keys().collect::<Vec<_>>()
        );
    }
}
