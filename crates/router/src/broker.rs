//! The Broker: subscriptions and the publish → EVENT fan-out.
//!
//! One subscription per topic, shared by all its subscribers. An EVENT is
//! encoded at most once per serializer per publication, and the same bytes
//! are queued for every subscriber that speaks that serializer.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use indexmap::IndexMap;
use parking_lot::RwLock;
use switchyard_proto::id::random_id;
use switchyard_proto::{errors, Dict, Message, Payload, Serializer};

use crate::session::{OpError, Session};
use crate::unused_random_id;

struct Subscription {
    topic: String,
    subscribers: IndexMap<u64, Arc<Session>>,
}

#[derive(Default)]
struct State {
    by_topic: HashMap<String, u64>,
    subs: HashMap<u64, Subscription>,
    by_session: HashMap<u64, Vec<u64>>,
}

#[derive(Default)]
pub struct Broker {
    state: RwLock<State>,
}

impl Broker {
    /// Subscribes `session` to `topic`; a second SUBSCRIBE of the same
    /// session to the same topic returns the existing id.
    pub fn subscribe(&self, session: &Arc<Session>, topic: &str) -> u64 {
        let mut st = self.state.write();
        let id = match st.by_topic.get(topic) {
            Some(id) => *id,
            None => {
                let id = unused_random_id(|id| st.subs.contains_key(&id));
                st.by_topic.insert(topic.to_string(), id);
                st.subs.insert(
                    id,
                    Subscription {
                        topic: topic.to_string(),
                        subscribers: IndexMap::new(),
                    },
                );
                id
            }
        };
        let fresh = st
            .subs
            .get_mut(&id)
            .map(|s| s.subscribers.insert(session.id, session.clone()).is_none())
            .unwrap_or(false);
        if fresh {
            st.by_session.entry(session.id).or_default().push(id);
        }
        id
    }

    pub fn unsubscribe(&self, session: &Session, subscription: u64) -> Result<(), OpError> {
        let mut st = self.state.write();
        let removed = st
            .subs
            .get_mut(&subscription)
            .and_then(|s| s.subscribers.swap_remove(&session.id))
            .is_some();
        if !removed {
            return Err((
                errors::NO_SUCH_SUBSCRIPTION,
                format!("session {} has no subscription {subscription}", session.id),
            ));
        }
        if let Some(list) = st.by_session.get_mut(&session.id) {
            list.retain(|s| *s != subscription);
        }
        drop_if_empty(&mut st, subscription);
        Ok(())
    }

    /// Removes every subscription of a session that left.
    pub fn remove_session(&self, session: u64) {
        let mut st = self.state.write();
        for sub in st.by_session.remove(&session).unwrap_or_default() {
            if let Some(s) = st.subs.get_mut(&sub) {
                s.subscribers.swap_remove(&session);
            }
            drop_if_empty(&mut st, sub);
        }
    }

    /// Routes a publication to the topic's subscribers and returns its id.
    /// Every EVENT is queued (or handled by the slow-consumer policy) before
    /// this returns.
    pub fn publish(
        &self,
        publisher: &Session,
        topic: &str,
        options: &Dict,
        payload: &Payload,
    ) -> u64 {
        let exclude_me = options.get_bool("exclude_me").unwrap_or(true);
        self.deliver(exclude_me.then_some(publisher.id), topic, payload)
    }

    /// Publishes an event from the router itself (meta events).
    pub fn publish_from_router(&self, topic: &str, payload: &Payload) -> u64 {
        self.deliver(None, topic, payload)
    }

    fn deliver(&self, excluded: Option<u64>, topic: &str, payload: &Payload) -> u64 {
        let publication = random_id();
        let st = self.state.read();
        let Some(sub_id) = st.by_topic.get(topic) else {
            return publication;
        };
        let Some(sub) = st.subs.get(sub_id) else {
            return publication;
        };
        let event = Message::Event {
            subscription: *sub_id,
            publication,
            details: Dict::new(),
            payload: payload.clone(),
        };
        let mut encoded: [Option<Option<Bytes>>; 3] = [None, None, None];
        for (sid, sub_session) in &sub.subscribers {
            if excluded == Some(*sid) {
                continue;
            }
            let ser: Serializer = sub_session.peer.serializer();
            let frame = encoded[ser.index()].get_or_insert_with(|| match event.encode(ser) {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::warn!(
                        topic,
                        publication,
                        "event not delivered to {ser} subscribers: {e}"
                    );
                    None
                }
            });
            let Some(frame) = frame else { continue };
            if frame.len() > sub_session.peer.max_message_len() {
                tracing::warn!(
                    session = sid,
                    topic,
                    publication,
                    "event of {} bytes not delivered: the session accepts at most {} bytes",
                    frame.len(),
                    sub_session.peer.max_message_len()
                );
                continue;
            }
            sub_session.peer.send_event(frame.clone());
        }
        publication
    }
}

fn drop_if_empty(st: &mut State, subscription: u64) {
    if st
        .subs
        .get(&subscription)
        .is_some_and(|s| s.subscribers.is_empty())
    {
        if let Some(s) = st.subs.remove(&subscription) {
            st.by_topic.remove(&s.topic);
        }
    }
}
