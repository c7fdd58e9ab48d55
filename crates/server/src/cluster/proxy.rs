//! Remote callees on the caller's node: a proxy session per remote callee
//! session, registered at this node's Dealer with the remote callee's
//! options, so the one Dealer keeps every RPC rule (match precedence,
//! shared registrations and invocation policies, timeouts, cancel modes,
//! progress, caller disclosure, the caller leaving) for local and remote
//! callees alike.
//!
//! A proxy is a [`Session`] with the remote session's id, identity and
//! callee features and a [`Peer`] of its own: what the Dealer queues for it
//! (INVOCATION, INTERRUPT, encoded in MessagePack) a forwarder task
//! publishes, as is, on `<prefix>.<realm>.inv.<callee node>` (headers: this
//! node, the callee session). The callee's answers come back on
//! `<prefix>.<realm>.ans.<this node>` and go into the Dealer as the proxy's
//! YIELD or ERROR ([`Proxies::answer`]).
//!
//! A single registration is unique cluster-wide: a proxy is in the local
//! Dealer, so a later REGISTER of the same procedure on this node fails as
//! on one node. When two nodes registered it before hearing of each other,
//! the older claim (creation time, then node name) wins on every node: a
//! node whose local registration loses revokes it (the callee gets
//! UNREGISTERED when it announced `registration_revocation`); a losing
//! remote claim waits, unplaced, until the winner goes.

use std::collections::HashMap;
use std::sync::Arc;

use switchyard_proto::{errors, Message, Serializer};
use switchyard_router::dealer::{InvokePolicy, RegisterOptions};
use switchyard_router::features::ClientFeatures;
use switchyard_router::peer::{OutboundRx, Outgoing, Peer, SlowConsumerPolicy};
use switchyard_router::session::{Identity, Session};
use switchyard_router::uri_index::MatchPolicy;
use switchyard_router::Realm;

use super::directory::Entry;

/// Header: the node a cross-node RPC message comes from.
pub const FROM_HEADER: &str = "Switchyard-From";
/// Header: the callee session a cross-node RPC message is about.
pub const SESSION_HEADER: &str = "Switchyard-Session";
/// Header: which proxy of the callee session (a random id per proxy made),
/// so that what is relayed for one proxy never meets a later proxy of the
/// same session (whose INVOCATION ids start over).
pub const PROXY_HEADER: &str = "Switchyard-Proxy";
/// Header of a forwarded INVOCATION: the registration id on the callee's
/// node (the message carries the caller node's proxy registration id).
pub const REGISTRATION_HEADER: &str = "Switchyard-Registration";

/// (callee session, proxy registration id here) -> registration id on the
/// callee's node.
type Routes = Arc<parking_lot::RwLock<HashMap<(u64, u64), u64>>>;

/// Messages a proxy's queue holds before the proxy is cut (its calls then
/// fail as for a callee that left).
const PROXY_QUEUE: usize = 65_536;

/// (callee node, registration id there, callee session).
type Placed = (Arc<str>, u64, u64);

/// A proxy session, and which one it is (see [`PROXY_HEADER`]).
#[derive(Clone)]
pub struct Proxy {
    session: Arc<Session>,
    incarnation: u64,
}

impl std::ops::Deref for Proxy {
    type Target = Arc<Session>;
    fn deref(&self) -> &Arc<Session> {
        &self.session
    }
}

/// The proxies of one realm on this node.
pub struct Proxies {
    realm: Arc<Realm>,
    client: async_nats::Client,
    node: Arc<str>,
    /// `<prefix>.<realm>.inv.`: + the callee's node.
    inv_base: String,
    max_payload: usize,
    routes: Routes,
    state: parking_lot::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// (callee node, callee session) -> its proxy.
    sessions: HashMap<(Arc<str>, u64), Proxy>,
    /// Remote callees placed in the Dealer: -> (local registration, entry).
    placed: HashMap<Placed, (u64, Entry)>,
    /// Remote callees that lost a race for a single registration (or clash
    /// with a local registration's policy): placed when the holder goes.
    unplaced: HashMap<Placed, Entry>,
    /// Proxies without registrations that still serve calls.
    draining: HashMap<(Arc<str>, u64), Proxy>,
}

impl Proxies {
    pub fn new(
        realm: Arc<Realm>,
        client: async_nats::Client,
        node: Arc<str>,
        inv_base: String,
    ) -> Self {
        let max_payload = client.server_info().max_payload.max(1024);
        Proxies {
            realm,
            client,
            node,
            inv_base,
            max_payload,
            routes: Routes::default(),
            state: parking_lot::Mutex::default(),
        }
    }

    /// The proxy of (`node`, `session`), if there is one.
    pub fn proxy(&self, node: &str, session: u64) -> Option<Proxy> {
        let st = self.state.lock();
        let key = (Arc::from(node), session);
        st.sessions
            .get(&key)
            .or_else(|| st.draining.get(&key))
            .cloned()
    }

    /// A callee's answer, from its node: into the Dealer as the answer of
    /// proxy `incarnation` (an answer for an earlier proxy of the same
    /// session is dropped).
    pub fn answer(&self, node: &str, session: u64, incarnation: u64, msg: Message) {
        let Some(proxy) = self
            .proxy(node, session)
            .filter(|p| p.incarnation == incarnation)
        else {
            return;
        };
        let dealer = &self.realm.dealer;
        match msg {
            Message::Yield {
                request,
                options,
                payload,
            } => {
                dealer.yield_result(&proxy, request, &options, payload);
            }
            Message::Error {
                request,
                error,
                payload,
                ..
            } => {
                dealer.yield_error(&proxy, request, error, payload);
            }
            other => tracing::debug!("cluster: unexpected {} on an answer subject", other.name()),
        }
    }

    /// A callee node announced `e`.
    pub fn add(&self, node: &Arc<str>, e: Entry) {
        let mut st = self.state.lock();
        let key: Placed = (node.clone(), e.registration, e.session);
        if let Some((_, old)) = st.placed.get(&key) {
            if *old == e {
                return;
            }
        }
        self.unplace(&mut st, &key);
        self.place(&mut st, key, e);
    }

    /// A callee node withdrew `e` (unregistered, or its session left).
    pub fn remove(&self, node: &Arc<str>, e: &Entry) {
        let mut st = self.state.lock();
        let key: Placed = (node.clone(), e.registration, e.session);
        st.unplaced.remove(&key);
        if self.unplace(&mut st, &key) {
            self.retry(&mut st);
        }
    }

    /// Node `node` is gone: its proxies leave the Dealer, the calls they
    /// serve fail with `wamp.error.canceled` and `reason`.
    /// Ends the calls in flight to the proxies of `node` (of every node
    /// when None) with `wamp.error.canceled` and `reason`; the proxies
    /// stay registered.
    pub fn fail_calls(&self, node: Option<&str>, reason: &str) {
        let proxies: Vec<Arc<Session>> = {
            let st = self.state.lock();
            st.sessions
                .iter()
                .chain(st.draining.iter())
                .filter(|((n, _), _)| node.is_none_or(|node| &**n == node))
                .map(|(_, p)| p.session.clone())
                .collect()
        };
        let failed: usize = proxies
            .iter()
            .map(|p| self.realm.dealer.fail_calls_to(p, reason))
            .sum();
        if failed > 0 {
            tracing::warn!(
                realm = self.realm.name(),
                calls = failed,
                "cluster: calls in flight canceled: {reason}"
            );
        }
    }

    pub fn lose_node(&self, node: &str, reason: &str) {
        let mut st = self.state.lock();
        let mut gone = Vec::new();
        st.sessions.retain(|(n, _), p| {
            let keep = &**n != node;
            if !keep {
                gone.push(p.clone());
            }
            keep
        });
        st.draining.retain(|(n, _), p| {
            let keep = &**n != node;
            if !keep {
                gone.push(p.clone());
            }
            keep
        });
        {
            let mut routes = self.routes.write();
            st.placed.retain(|(n, _, s), (local, _)| {
                let keep = &**n != node;
                if !keep {
                    routes.remove(&(*s, *local));
                }
                keep
            });
        }
        st.unplaced.retain(|(n, _, _), _| &**n != node);
        for p in &gone {
            self.realm.dealer.remove_lost_session(p, reason);
        }
        if !gone.is_empty() {
            tracing::warn!(
                realm = self.realm.name(),
                node,
                proxies = gone.len(),
                "cluster: {reason}"
            );
        }
        self.retry(&mut st);
    }

    /// Drops drained proxies and retries unplaced claims.
    pub fn tick(&self) {
        let mut st = self.state.lock();
        st.draining.retain(|_, p| p.dealer_calls() > 0);
        if !st.unplaced.is_empty() {
            self.retry(&mut st);
        }
    }

    /// Takes `key` out of the Dealer; true if it was placed.
    fn unplace(&self, st: &mut State, key: &Placed) -> bool {
        let Some((local, _)) = st.placed.remove(key) else {
            return false;
        };
        self.routes.write().remove(&(key.2, local));
        let pkey = (key.0.clone(), key.2);
        if let Some(proxy) = st.sessions.get(&pkey).cloned() {
            let _ = self.realm.dealer.unregister(&proxy, local);
            let still = st.placed.keys().any(|(n, _, s)| *n == key.0 && *s == key.2);
            if !still {
                st.sessions.remove(&pkey);
                if proxy.dealer_calls() > 0 {
                    st.draining.insert(pkey, proxy);
                }
            }
        }
        true
    }

    /// Places every unplaced claim that can be placed now (oldest first).
    fn retry(&self, st: &mut State) {
        let mut waiting: Vec<(Placed, Entry)> = st.unplaced.drain().collect();
        waiting.sort_by(|a, b| claim(&a.0 .0, &a.1).cmp(&claim(&b.0 .0, &b.1)));
        for (key, e) in waiting {
            self.place(st, key, e);
        }
    }

    /// The proxy of (`node`, `e.session`), made if needed.
    fn proxy_for(&self, st: &mut State, node: &Arc<str>, e: &Entry) -> Proxy {
        let pkey = (node.clone(), e.session);
        if let Some(p) = st.sessions.get(&pkey) {
            return p.clone();
        }
        // A proxy still serving calls is the same callee again: its
        // INVOCATION ids must not start over.
        if let Some(p) = st.draining.remove(&pkey) {
            st.sessions.insert(pkey, p.clone());
            return p;
        }
        let (peer, rx) = Peer::new(
            Serializer::MsgPack,
            PROXY_QUEUE,
            SlowConsumerPolicy::Disconnect,
            self.max_payload,
            format!("cluster proxy of session {} on node {node}", e.session),
        );
        peer.set_session(e.session);
        let features = ClientFeatures {
            callee_call_canceling: e.call_canceling,
            callee_progressive_call_invocations: e.progressive_call_invocations,
            ..ClientFeatures::default()
        };
        let identity = Identity {
            authid: e.authid.clone(),
            authrole: e.authrole.clone(),
            authmethod: e.authmethod.clone(),
            authprovider: e.authprovider.clone(),
        };
        let proxy = Proxy {
            session: Arc::new(Session::new(e.session, identity, features, peer)),
            incarnation: switchyard_proto::id::random_id(),
        };
        tokio::spawn(forward(
            rx,
            self.routes.clone(),
            self.client.clone(),
            format!("{}{node}", self.inv_base),
            self.node.clone(),
            (e.session, proxy.incarnation),
        ));
        st.sessions.insert(pkey, proxy.clone());
        proxy
    }

    /// Registers a remote callee at the Dealer, or settles the race it
    /// lost or won.
    fn place(&self, st: &mut State, key: Placed, e: Entry) {
        let (Some(policy), Some(invoke)) = (
            MatchPolicy::parse(&e.policy),
            InvokePolicy::parse(&e.invoke),
        ) else {
            tracing::warn!(uri = %e.uri, "cluster: registration with unknown options ignored");
            return;
        };
        if self.realm.session(e.session).is_some() {
            // Two nodes drew the same session id (about n²/2^54 for n
            // sessions): the Dealer keys its tables by session id, so the
            // remote one is not placed here.
            tracing::error!(
                session = e.session,
                node = %key.0,
                uri = %e.uri,
                "cluster: a remote callee has the id of a session of this node: not callable from here"
            );
            return;
        }
        let opts = RegisterOptions {
            policy,
            invoke,
            concurrency: e.concurrency,
            forward_timeout: e.forward_timeout,
            disclose_caller: e.disclose_caller,
        };
        for _ in 0..2 {
            let proxy = self.proxy_for(st, &key.0, &e);
            let mut local = 0;
            match self
                .realm
                .dealer
                .register(&proxy, &e.uri, &opts, |id| local = id)
            {
                Ok(()) => {
                    self.routes
                        .write()
                        .insert((e.session, local), e.registration);
                    st.placed.insert(key, (local, e));
                    return;
                }
                Err((uri, message)) if uri == errors::PROCEDURE_ALREADY_EXISTS => {
                    self.drop_if_unused(st, &key);
                    if !self.contest(st, &key, &e, policy) {
                        tracing::info!(
                            uri = %e.uri,
                            node = %key.0,
                            "cluster: remote registration waits: {message}"
                        );
                        st.unplaced.insert(key, e);
                        return;
                    }
                    // The holder lost and is gone: place again.
                }
                Err((uri, message)) => {
                    self.drop_if_unused(st, &key);
                    tracing::warn!(uri = %e.uri, "cluster: remote registration refused: {uri}: {message}");
                    return;
                }
            }
        }
        st.unplaced.insert(key, e);
    }

    /// Forgets a proxy made for a registration that could not be placed.
    fn drop_if_unused(&self, st: &mut State, key: &Placed) {
        let pkey = (key.0.clone(), key.2);
        let used = st.placed.keys().any(|(n, _, s)| *n == key.0 && *s == key.2);
        if !used {
            if let Some(p) = st.sessions.remove(&pkey) {
                if p.dealer_calls() > 0 {
                    st.draining.insert(pkey, p);
                }
            }
        }
    }

    /// A single registration of `e.uri` is held here already: if `e`'s
    /// claim is older, removes the holder (revoking a local registration)
    /// and returns true.
    fn contest(&self, st: &mut State, key: &Placed, e: &Entry, policy: MatchPolicy) -> bool {
        let dealer = &self.realm.dealer;
        let Some(id) = dealer.lookup(&e.uri, policy) else {
            // Gone meanwhile.
            return true;
        };
        let Some(info) = dealer.registration(id) else {
            return true;
        };
        if e.invoke != "single" || info.invoke != InvokePolicy::Single {
            return false;
        }
        let Some(&holder) = info.callees.first() else {
            return true;
        };
        // A remote holder (a proxy placed here)?
        let remote = st
            .placed
            .iter()
            .find(|((_, _, s), (local, _))| *s == holder && *local == id)
            .map(|(k, (_, held))| (k.clone(), held.clone()));
        let mine = claim(&key.0, e);
        match remote {
            Some((hkey, held)) => {
                if claim(&hkey.0, &held) <= mine {
                    return false;
                }
                tracing::info!(uri = %e.uri, winner = %key.0, loser = %hkey.0, "cluster: a registration race was won by the older claim");
                self.unplace(st, &hkey);
                st.unplaced.insert(hkey, held);
                true
            }
            None => {
                let Some(session) = self.realm.session(holder) else {
                    return false;
                };
                let created = ms_since_epoch(info.created);
                if (created, &*self.node) <= (mine.0, mine.1) {
                    return false;
                }
                tracing::warn!(
                    uri = %e.uri,
                    session = holder,
                    winner = %key.0,
                    "cluster: local registration revoked: node {} registered \"{}\" first",
                    key.0,
                    e.uri
                );
                let reason = format!(
                    "\"{}\" was registered on node {} at the same time, and the older registration wins",
                    e.uri, key.0
                );
                dealer
                    .revoke(&session, id, errors::PROCEDURE_ALREADY_EXISTS, &reason)
                    .is_ok()
            }
        }
    }
}

/// A claim's rank: older first, then by node name.
fn claim<'a>(node: &'a str, e: &Entry) -> (u64, &'a str) {
    (e.created_ms, node)
}

pub fn ms_since_epoch(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Publishes what the Dealer queued for a proxy (INVOCATION, INTERRUPT) to
/// the callee's node, in order; ends with the proxy.
async fn forward(
    mut rx: OutboundRx,
    routes: Routes,
    client: async_nats::Client,
    subject: String,
    from: Arc<str>,
    (session, incarnation): (u64, u64),
) {
    let session_id = session;
    let session = session.to_string();
    let incarnation = incarnation.to_string();
    while let Some(item) = rx.recv().await {
        let Outgoing::Frame(frame) = item else {
            continue;
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(FROM_HEADER, &*from);
        headers.insert(SESSION_HEADER, session.as_str());
        headers.insert(PROXY_HEADER, incarnation.as_str());
        if let Ok(Message::Invocation { registration, .. }) =
            Message::decode(Serializer::MsgPack, &frame)
        {
            // Gone meanwhile: 0, which no callee holds (the callee's node
            // answers wamp.error.canceled).
            let remote = routes
                .read()
                .get(&(session_id, registration))
                .copied()
                .unwrap_or(0);
            headers.insert(REGISTRATION_HEADER, remote.to_string().as_str());
        }
        if let Err(e) = client
            .publish_with_headers(subject.clone(), headers, frame)
            .await
        {
            tracing::warn!("cluster: invocation not sent to NATS: {e}");
        }
    }
}
