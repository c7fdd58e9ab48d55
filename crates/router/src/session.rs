//! An established WAMP session: who it is and how to send it a message.

use crate::logsafe::Clip;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use switchyard_proto::{errors, Dict, Message, Payload};

use parking_lot::Mutex;

use std::collections::HashMap;

use crate::authz::{Action, Decision};
use crate::features::ClientFeatures;
use crate::peer::Peer;

/// Who a session is, as authentication decided.
#[derive(Clone, Debug)]
pub struct Identity {
    pub authid: String,
    pub authrole: String,
    pub authmethod: String,
    pub authprovider: String,
}

impl Identity {
    /// An anonymous identity with a random authid.
    pub fn anonymous() -> Self {
        Identity {
            authid: format!("anonymous-{:x}", switchyard_proto::id::random_id()),
            authrole: "anonymous".into(),
            authmethod: "anonymous".into(),
            authprovider: "static".into(),
        }
    }
}

/// An established session (after WELCOME).
pub struct Session {
    pub id: u64,
    pub authid: String,
    pub authrole: String,
    pub authmethod: String,
    pub authprovider: String,
    /// What the client announced in HELLO.
    pub features: ClientFeatures,
    pub joined: SystemTime,
    pub peer: Arc<Peer>,
    /// The transport of a client session (None: a session the router runs
    /// itself); the meta API shows it.
    pub transport: Option<crate::transport_info::TransportSummary>,
    alive: AtomicBool,
    testaments: Mutex<Testaments>,
    /// Calls this session takes part in (as caller or callee) that the
    /// Dealer has not ended yet; lets a leaving session skip the call scan.
    dealer_calls: AtomicUsize,
    /// Calls this session made (as caller) that the Dealer has not ended
    /// yet: bounded by `max_calls_in_flight_per_session`.
    caller_calls: AtomicUsize,
    /// Answers of the authorizer procedure it asked to keep (gone with the
    /// session).
    authz_cache: Mutex<AuthzCache>,
    /// A session the router runs itself ([`crate::internal::InternalCaller`]):
    /// trusted, so a callee of this kind learns who calls it (when it asks)
    /// even in a realm with `disclose_caller = "never"`.
    pub(crate) router_owned: bool,
    /// Its calls go only to a registration of exactly the procedure called,
    /// never to a prefix or wildcard registration that matches it (the
    /// router's calls to its authenticator and authorizer procedures).
    pub(crate) exact_calls_only: bool,
}

/// Cached authorizer answers a session may hold; the cache restarts empty
/// when full.
const AUTHZ_CACHE_LIMIT: usize = 10_000;

/// A session's cached authorizer answers, counted in its realm's total
/// (`max_authorizer_cache_entries`) while the session holds them.
#[derive(Default)]
struct AuthzCache {
    map: HashMap<(Action, String), Decision>,
    /// The realm's count, once this session cached something.
    realm_total: Option<Arc<AtomicUsize>>,
}

impl AuthzCache {
    fn clear(&mut self) {
        if let Some(total) = &self.realm_total {
            total.fetch_sub(self.map.len(), Ordering::Relaxed);
        }
        self.map.clear();
    }
}

impl Drop for AuthzCache {
    fn drop(&mut self) {
        self.clear();
    }
}

/// An event the Broker publishes for a session when it ends (spec
/// "Session Testament").
#[derive(Clone, Debug)]
pub struct Testament {
    pub topic: String,
    pub options: Dict,
    pub payload: Payload,
}

/// When a testament is published: both happen when a session ends here
/// (no session resumption), `detached` first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestamentScope {
    Detached,
    Destroyed,
}

#[derive(Default)]
struct Testaments {
    /// Each testament with its size in bytes.
    detached: Vec<(Testament, usize)>,
    destroyed: Vec<(Testament, usize)>,
    /// Bytes of all testaments held.
    bytes: usize,
    /// The realm's count of testament bytes, once this session added one.
    realm_total: Option<Arc<AtomicUsize>>,
}

impl Testaments {
    /// Records that `n` of the bytes held are gone.
    fn release(&mut self, n: usize) {
        self.bytes -= n;
        if let Some(total) = &self.realm_total {
            total.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

impl Drop for Testaments {
    fn drop(&mut self) {
        let n = self.bytes;
        self.release(n);
    }
}

/// What a session may hold in testaments.
#[derive(Clone, Copy, Debug)]
pub struct TestamentLimits {
    /// Testaments per scope.
    pub count: usize,
    /// Bytes of all testaments, all scopes.
    pub bytes: usize,
    /// Bytes of the testaments of all sessions of the realm (0: no limit).
    pub realm_bytes: usize,
}

/// How a router operation failed: an error URI and a readable message.
pub type OpError = (&'static str, String);

impl Session {
    pub fn new(id: u64, identity: Identity, features: ClientFeatures, peer: Arc<Peer>) -> Self {
        Session {
            id,
            authid: identity.authid,
            authrole: identity.authrole,
            authmethod: identity.authmethod,
            authprovider: identity.authprovider,
            features,
            joined: SystemTime::now(),
            peer,
            transport: None,
            alive: AtomicBool::new(true),
            testaments: Mutex::new(Testaments::default()),
            dealer_calls: AtomicUsize::new(0),
            caller_calls: AtomicUsize::new(0),
            authz_cache: Mutex::new(AuthzCache::default()),
            router_owned: false,
            exact_calls_only: false,
        }
    }

    /// False once the session has left (cleanup started).
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Adds a testament of `size` bytes; refused (with the reason) if the
    /// scope already holds `limits.count` or the session's testaments
    /// would exceed `limits.bytes`.
    pub fn add_testament(
        &self,
        scope: TestamentScope,
        t: Testament,
        size: usize,
        limits: TestamentLimits,
        realm_total: &Arc<AtomicUsize>,
    ) -> Result<(), String> {
        let mut all = self.testaments.lock();
        let all = &mut *all;
        let list = match scope {
            TestamentScope::Detached => &mut all.detached,
            TestamentScope::Destroyed => &mut all.destroyed,
        };
        if list.len() >= limits.count {
            return Err(format!(
                "a session may hold at most {} testaments per scope (max_testaments_per_session)",
                limits.count
            ));
        }
        if all.bytes + size > limits.bytes {
            return Err(format!(
                "a testament of {size} bytes would bring this session's testaments over {} bytes (max_testament_bytes_per_session)",
                limits.bytes
            ));
        }
        let held = realm_total.fetch_add(size, Ordering::Relaxed);
        if limits.realm_bytes > 0 && held.saturating_add(size) > limits.realm_bytes {
            realm_total.fetch_sub(size, Ordering::Relaxed);
            return Err(format!(
                "the testaments of this realm's sessions hold {held} bytes; this one ({size} bytes) would exceed the limit of {} bytes (max_testament_bytes)",
                limits.realm_bytes
            ));
        }
        if all.realm_total.is_none() {
            all.realm_total = Some(realm_total.clone());
        }
        list.push((t, size));
        all.bytes += size;
        Ok(())
    }

    /// Removes the testaments of `scope`; returns how many there were.
    pub fn flush_testaments(&self, scope: TestamentScope) -> usize {
        let mut all = self.testaments.lock();
        let list = match scope {
            TestamentScope::Detached => std::mem::take(&mut all.detached),
            TestamentScope::Destroyed => std::mem::take(&mut all.destroyed),
        };
        all.release(list.iter().map(|(_, size)| size).sum::<usize>());
        list.len()
    }

    /// A copy of all testaments, `detached` first (a cluster keeps them
    /// where a surviving node can publish them).
    pub fn testaments(&self) -> Vec<Testament> {
        let all = self.testaments.lock();
        all.detached
            .iter()
            .chain(all.destroyed.iter())
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// All testaments, `detached` first, leaving none.
    pub(crate) fn take_testaments(&self) -> Vec<Testament> {
        let mut all = self.testaments.lock();
        let mut out = std::mem::take(&mut all.detached);
        out.append(&mut all.destroyed);
        let n = all.bytes;
        all.release(n);
        out.into_iter().map(|(t, _)| t).collect()
    }

    /// Forgets the cached authorizer answers (the realm's rules were
    /// reloaded).
    pub(crate) fn clear_cached_decisions(&self) {
        self.authz_cache.lock().clear();
    }

    pub(crate) fn cached_decision(&self, action: Action, uri: &str) -> Option<Decision> {
        self.authz_cache
            .lock()
            .map
            .get(&(action, uri.to_string()))
            .copied()
    }

    /// Caches an authorizer's answer for this session, unless the realm's
    /// sessions together already hold `max_total` answers (0: no limit):
    /// then the authorizer is simply asked again next time. Returns whether
    /// it was cached.
    pub(crate) fn cache_decision(
        &self,
        action: Action,
        uri: &str,
        d: Decision,
        realm_total: &Arc<AtomicUsize>,
        max_total: usize,
    ) -> bool {
        let mut cache = self.authz_cache.lock();
        if cache.map.len() >= AUTHZ_CACHE_LIMIT {
            cache.clear();
        }
        let key = (action, uri.to_string());
        if let Some(slot) = cache.map.get_mut(&key) {
            *slot = d;
            return true;
        }
        if max_total > 0 && realm_total.load(Ordering::Relaxed) >= max_total {
            return false;
        }
        if cache.realm_total.is_none() {
            cache.realm_total = Some(realm_total.clone());
        }
        realm_total.fetch_add(1, Ordering::Relaxed);
        cache.map.insert(key, d);
        true
    }

    pub(crate) fn call_started(&self) {
        self.dealer_calls.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn call_ended(&self) {
        self.dealer_calls.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn caller_call_started(&self) {
        self.caller_calls.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn caller_call_ended(&self) {
        self.caller_calls.fetch_sub(1, Ordering::Relaxed);
    }

    /// Calls this session made that are still in flight.
    pub fn calls_as_caller(&self) -> usize {
        self.caller_calls.load(Ordering::Relaxed)
    }

    /// Calls this session takes part in (as caller or callee) that the
    /// Dealer has not ended yet.
    pub fn dealer_calls(&self) -> usize {
        self.dealer_calls.load(Ordering::Relaxed)
    }

    /// Marks the session gone; true the first time only.
    pub(crate) fn mark_gone(&self) -> bool {
        self.alive.swap(false, Ordering::SeqCst)
    }

    /// Encodes `msg` for this session's serializer and queues it. Returns
    /// false if it could not be encoded, is larger than the peer accepts, or
    /// could not be queued (each case is logged).
    pub fn send(&self, msg: &Message) -> bool {
        match self.encode(msg) {
            Ok(frame) => self.peer.send(frame),
            Err((_, reason)) => {
                tracing::warn!(
                    session = self.id,
                    "not sending {}: {}",
                    msg.name(),
                    Clip(&reason)
                );
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
