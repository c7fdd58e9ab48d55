//! The callee's side of a cross-node call: INVOCATIONs and INTERRUPTs that
//! a caller node's Dealer sent to its proxy of a local callee arrive on
//! `<prefix>.<realm>.inv.<this node>` and are relayed to the callee
//! session; its answers go back on `<prefix>.<realm>.ans.<caller node>`.
//!
//! A relayed INVOCATION gets a fresh request id from the callee's own
//! sequence (`Peer::next_request_id`, as this node's Dealer uses), so it
//! never collides with the invocations of this node's Dealer. The relay
//! remembers (callee, local id) -> (caller node, caller node's invocation
//! id) and the reverse (INTERRUPTs and the chunks of a progressive
//! invocation carry the caller node's id). The callee's YIELD or ERROR for
//! an id this node's Dealer does not know is offered to the relay
//! (`Backplane::answer`). Entries end with the final answer, an INTERRUPT
//! `killnowait` (the caller node has forgotten the call), the callee
//! leaving (the caller node gets `wamp.error.canceled`), or the caller node
//! dying; at most [`MAX_RELAYED`] are held per realm.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use switchyard_proto::message::code;
use switchyard_proto::{errors, Dict, Message, Payload, Serializer};
use switchyard_router::backplane::CalleeAnswer;
use switchyard_router::session::Session;
use switchyard_router::Realm;

use super::proxy::{FROM_HEADER, PROXY_HEADER, SESSION_HEADER};
use super::{Outbound, OutboundItem};

/// Relayed invocations one realm may have pending at once; one more is
/// answered `wamp.error.canceled`.
const MAX_RELAYED: usize = 65_536;
/// Finished (caller node, callee, invocation) remembered, so that a late
/// chunk of a progressive invocation is not taken for a new call.
const FINISHED: usize = 4096;

/// Where a relayed invocation came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct OriginKey {
    /// The caller's node.
    node: Arc<str>,
    callee: u64,
    /// Which proxy of the callee there (`PROXY_HEADER`).
    proxy: u64,
    /// The caller node's INVOCATION id.
    invocation: u64,
}

/// The relay of one realm.
pub struct Relay {
    node: Arc<str>,
    /// `<prefix>.<realm>.ans.`: + the caller's node.
    ans_base: String,
    outbound: Outbound,
    state: parking_lot::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// (callee, local invocation id) -> where it came from.
    by_local: HashMap<(u64, u64), OriginKey>,
    by_origin: HashMap<OriginKey, u64>,
    /// Callee -> its local invocation ids relayed.
    by_callee: HashMap<u64, HashSet<u64>>,
    finished: HashSet<OriginKey>,
    finished_order: VecDeque<OriginKey>,
}

impl State {
    fn insert(&mut self, origin: OriginKey, local: u64) {
        let callee = origin.callee;
        self.by_local.insert((callee, local), origin.clone());
        self.by_origin.insert(origin, local);
        self.by_callee.entry(callee).or_default().insert(local);
    }

    fn end(&mut self, callee: u64, local: u64) -> Option<OriginKey> {
        let origin = self.by_local.remove(&(callee, local))?;
        self.by_origin.remove(&origin);
        if let Some(set) = self.by_callee.get_mut(&callee) {
            set.remove(&local);
            if set.is_empty() {
                self.by_callee.remove(&callee);
            }
        }
        if self.finished.insert(origin.clone()) {
            self.finished_order.push_back(origin.clone());
            if self.finished_order.len() > FINISHED {
                if let Some(old) = self.finished_order.pop_front() {
                    self.finished.remove(&old);
                }
            }
        }
        Some(origin)
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").finish_non_exhaustive()
    }
}

impl Relay {
    pub fn new(node: Arc<str>, ans_base: String, outbound: Outbound) -> Self {
        Relay {
            node,
            ans_base,
            outbound,
            state: parking_lot::Mutex::default(),
        }
    }

    /// An INVOCATION or INTERRUPT from caller node `from`'s proxy `proxy`
    /// of callee `callee`. `registration` is the callee's registration (an
    /// INVOCATION carries the caller node's proxy registration).
    pub fn receive(
        &self,
        realm: &Realm,
        from: &str,
        callee: u64,
        proxy: u64,
        registration: u64,
        msg: Message,
    ) {
        let from: Arc<str> = Arc::from(from);
        let origin = |invocation| OriginKey {
            node: from.clone(),
            callee,
            proxy,
            invocation,
        };
        match msg {
            Message::Invocation {
                request,
                details,
                payload,
                ..
            } => {
                let origin = origin(request);
                self.invocation(realm, origin, registration, details, payload);
            }
            Message::Interrupt { request, options } => {
                let origin = origin(request);
                let mut st = self.state.lock();
                let Some(&local) = st.by_origin.get(&origin) else {
                    return;
                };
                if options.get_str("mode") == Some("killnowait") {
                    // The caller node ended the call already.
                    st.end(callee, local);
                }
                drop(st);
                if let Some(s) = realm.session(callee) {
                    s.send(&Message::Interrupt {
                        request: local,
                        options,
                    });
                }
            }
            other => tracing::debug!(
                "cluster: unexpected {} on an invocation subject",
                other.name()
            ),
        }
    }

    fn invocation(
        &self,
        realm: &Realm,
        origin: OriginKey,
        registration: u64,
        details: Dict,
        payload: Payload,
    ) {
        let callee = origin.callee;
        let mut st = self.state.lock();
        if let Some(&local) = st.by_origin.get(&origin) {
            // The next chunk of a progressive invocation.
            drop(st);
            let sent = realm.session(callee).is_some_and(|s| {
                s.send(&Message::Invocation {
                    request: local,
                    registration,
                    details,
                    payload,
                })
            });
            if !sent {
                self.fail(
                    realm,
                    callee,
                    local,
                    "left before the call could be delivered",
                );
            }
            return;
        }
        if st.finished.contains(&origin) {
            return;
        }
        let session = realm.session(callee).filter(|s| s.is_alive());
        let serves = session
            .as_ref()
            .is_some_and(|_| realm.dealer.callee_options(registration, callee).is_some());
        let Some(session) = session.filter(|_| serves) else {
            drop(st);
            self.reply_error(
                &origin,
                errors::CANCELED,
                format!(
                    "callee session {callee} on node {} no longer serves registration {registration} (it unregistered or left)",
                    self.node
                ),
            );
            return;
        };
        if st.by_local.len() >= MAX_RELAYED {
            drop(st);
            self.reply_error(
                &origin,
                errors::CANCELED,
                format!(
                    "node {} relays {MAX_RELAYED} invocations already",
                    self.node
                ),
            );
            return;
        }
        let local = session.peer.next_request_id();
        st.insert(origin, local);
        drop(st);
        let sent = session.send(&Message::Invocation {
            request: local,
            registration,
            details,
            payload,
        });
        if !sent {
            self.fail(
                realm,
                callee,
                local,
                "left before the call could be delivered",
            );
        }
    }

    /// Ends relayed invocation (`callee`, `local`) with
    /// `wamp.error.canceled`: the callee `what`.
    fn fail(&self, _realm: &Realm, callee: u64, local: u64, what: &str) {
        let origin = self.state.lock().end(callee, local);
        if let Some(origin) = origin {
            self.reply_error(
                &origin,
                errors::CANCELED,
                format!("callee session {callee} on node {} {what}", self.node),
            );
        }
    }

    /// A callee's answer to an invocation this node's Dealer does not
    /// know: true if it was relayed (and now goes back to the caller's node).
    pub fn answer(&self, callee: &Session, local: u64, answer: CalleeAnswer) -> bool {
        let final_answer = match &answer {
            CalleeAnswer::Yield { options, .. } => options.get_bool("progress") != Some(true),
            CalleeAnswer::Error { .. } => true,
        };
        let origin = {
            let mut st = self.state.lock();
            if final_answer {
                st.end(callee.id, local)
            } else {
                st.by_local.get(&(callee.id, local)).cloned()
            }
        };
        let Some(origin) = origin else {
            return false;
        };
        let msg = match answer {
            CalleeAnswer::Yield { options, payload } => Message::Yield {
                request: origin.invocation,
                options,
                payload,
            },
            CalleeAnswer::Error { error, payload } => Message::Error {
                request_type: code::INVOCATION,
                request: origin.invocation,
                details: Dict::new(),
                error,
                payload,
            },
        };
        self.send(&origin, &msg);
        true
    }

    /// Callees that left: their relayed invocations fail (the caller nodes
    /// get `wamp.error.canceled`).
    pub fn sweep(&self, realm: &Realm) {
        let gone: Vec<(u64, Vec<u64>)> = {
            let st = self.state.lock();
            if st.by_callee.is_empty() {
                return;
            }
            st.by_callee
                .iter()
                .filter(|(s, _)| realm.session(**s).is_none_or(|s| !s.is_alive()))
                .map(|(s, ids)| (*s, ids.iter().copied().collect()))
                .collect()
        };
        for (callee, ids) in gone {
            for local in ids {
                self.fail(realm, callee, local, "left before answering");
            }
        }
    }

    /// Caller node `node` is gone: its relayed invocations end (callees
    /// that understand it get INTERRUPT `killnowait`).
    pub fn lose_node(&self, realm: &Realm, node: &str) {
        let ended: Vec<(u64, u64)> = {
            let mut st = self.state.lock();
            let mine: Vec<(u64, u64)> = st
                .by_local
                .iter()
                .filter(|(_, o)| &*o.node == node)
                .map(|(k, _)| *k)
                .collect();
            for (callee, local) in &mine {
                st.end(*callee, *local);
            }
            mine
        };
        for (callee, local) in ended {
            if let Some(s) = realm.session(callee) {
                if s.features.callee_call_canceling {
                    s.send(&Message::Interrupt {
                        request: local,
                        options: Dict::new()
                            .with("mode", "killnowait")
                            .with("reason", errors::CANCELED),
                    });
                }
            }
        }
    }

    fn reply_error(&self, origin: &OriginKey, error: &str, message: String) {
        self.send(
            origin,
            &Message::Error {
                request_type: code::INVOCATION,
                request: origin.invocation,
                details: Dict::new(),
                error: error.to_string(),
                payload: Payload::message(message),
            },
        );
    }

    /// Queues `msg` (an answer) for the caller's node.
    fn send(&self, origin: &OriginKey, msg: &Message) {
        let body = match msg.encode(Serializer::MsgPack) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("cluster: cannot encode an answer: {e}");
                let fallback = Message::Error {
                    request_type: code::INVOCATION,
                    request: origin.invocation,
                    details: Dict::new(),
                    error: errors::CANCELED.to_string(),
                    payload: Payload::message(format!(
                        "the callee's answer cannot be relayed: {e}"
                    )),
                };
                match fallback.encode(Serializer::MsgPack) {
                    Ok(b) => b,
                    Err(_) => return,
                }
            }
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(FROM_HEADER, &*self.node);
        headers.insert(SESSION_HEADER, origin.callee.to_string().as_str());
        headers.insert(PROXY_HEADER, origin.proxy.to_string().as_str());
        let item = OutboundItem {
            subject: format!("{}{}", self.ans_base, origin.node),
            headers: Some(headers),
            body,
        };
        if self.outbound.try_send(item).is_err() {
            tracing::warn!(
                "cluster: the queue to NATS is full: an answer to node {} was dropped",
                origin.node
            );
        }
    }
}
