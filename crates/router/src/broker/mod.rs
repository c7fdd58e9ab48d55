//! The Broker: subscriptions (exact, prefix and wildcard) and the publish →
//! EVENT fan-out, with subscriber black/whitelisting, publisher
//! identification, event retention, event history and the subscription meta
//! events.
//!
//! All subscribers of one (topic, match policy) share one subscription. A
//! publication goes to every matching subscription (found through
//! [`UriIndex::for_each_match`], whose cost does not grow with subscriptions
//! that do not match); within a subscription its EVENT is encoded at most once
//! per serializer and the same bytes are queued for every subscriber that
//! speaks it.

mod filter;
mod history;

use crate::logsafe::Clip;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use indexmap::IndexMap;
use parking_lot::{Mutex, RwLock};
use switchyard_proto::id::random_id;
use switchyard_proto::{errors, Dict, Message, Payload, Serializer, Value};

pub(crate) use filter::Filter;
use history::{History, Query, StoredEvent};
pub use history::{HistoryConfig, MAX_HISTORY_LIMIT};

use crate::backplane::{Backplane, Publication};
use crate::details::Disclosure;
use crate::session::{OpError, Session};
use crate::unused_random_id;
use crate::uri_index::{MatchPolicy, UriIndex};

/// The advanced features the Broker announces in WELCOME
/// (`roles.broker.features`): what it implements, and nothing more.
pub const FEATURES: &[&str] = &[
    "publisher_exclusion",
    "publisher_identification",
    "subscriber_blackwhite_listing",
    "pattern_based_subscription",
    "event_retention",
    "event_history",
    "subscription_meta_api",
    "session_meta_api",
];

/// Realm settings the Broker applies.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Whether subscribers learn who published.
    pub disclose_publisher: Disclosure,
    /// Topics that may hold a retained event at once.
    pub retained_limit: usize,
    /// Bytes of retained events (payloads and topics) kept at once; a
    /// retained event that does not fit is not retained (it is delivered).
    pub max_retained_bytes: usize,
    /// Where refusals by a limit are counted.
    pub metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    /// Topics (or patterns) whose events are kept for `get_events`.
    pub history: Vec<HistoryConfig>,
    /// The other nodes of a cluster (None: a single node).
    pub backplane: Option<Arc<dyn Backplane>>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            disclose_publisher: Disclosure::OnRequest,
            retained_limit: 10_000,
            max_retained_bytes: 16 << 20,
            metrics: None,
            history: Vec::new(),
            backplane: None,
        }
    }
}

/// What the meta API tells about a subscription.
#[derive(Clone, Debug)]
pub struct SubscriptionInfo {
    pub id: u64,
    pub uri: String,
    pub policy: MatchPolicy,
    pub created: SystemTime,
    pub subscribers: Vec<u64>,
}

struct Subscription {
    id: u64,
    uri: String,
    policy: MatchPolicy,
    created: SystemTime,
    subscribers: IndexMap<u64, Arc<Session>>,
    /// Present if the realm keeps this subscription's history; such a
    /// subscription exists from the start and is never deleted.
    history: Option<Mutex<History>>,
}

impl Subscription {
    fn info(&self) -> SubscriptionInfo {
        SubscriptionInfo {
            id: self.id,
            uri: self.uri.clone(),
            policy: self.policy,
            created: self.created,
            subscribers: self.subscribers.keys().copied().collect(),
        }
    }
}

/// The last retained event of a topic.
#[derive(Clone)]
struct Retained {
    publication: u64,
    /// EVENT.Details as published (publisher disclosure).
    details: Dict,
    payload: Payload,
    filter: Filter,
}

/// The retained events of a realm and their size.
#[derive(Default)]
struct RetainedEvents {
    by_topic: HashMap<String, Retained>,
    bytes: usize,
}

fn retained_size(topic: &str, r: &Retained) -> usize {
    topic.len() + r.payload.byte_len() + r.filter.byte_len()
}

#[derive(Default)]
struct State {
    index: UriIndex<u64>,
    subs: HashMap<u64, Subscription>,
    by_session: HashMap<u64, Vec<u64>>,
    /// Where the meta events go after local delivery (a cluster's other
    /// nodes; None on a single node).
    meta_out: Option<Arc<dyn Backplane>>,
}

pub struct Broker {
    state: RwLock<State>,
    retained: Mutex<RetainedEvents>,
    config: BrokerConfig,
}

impl Default for Broker {
    fn default() -> Self {
        Broker::new(BrokerConfig::default())
    }
}

/// Whether `topic` matches the subscription pattern (`uri`, `policy`).
fn pattern_matches(uri: &str, policy: MatchPolicy, topic: &str) -> bool {
    policy.matches(uri, topic)
}

impl Broker {
    pub fn new(config: BrokerConfig) -> Self {
        let mut st = State {
            meta_out: config.backplane.clone(),
            ..State::default()
        };
        for h in &config.history {
            if st.index.get(&h.topic, h.policy).is_some() {
                continue;
            }
            let id = unused_random_id(|id| st.subs.contains_key(&id));
            st.index.insert(&h.topic, h.policy, id);
            st.subs.insert(
                id,
                Subscription {
                    id,
                    uri: h.topic.clone(),
                    policy: h.policy,
                    created: SystemTime::now(),
                    subscribers: IndexMap::new(),
                    history: Some(Mutex::new(History::new(h))),
                },
            );
        }
        Broker {
            state: RwLock::new(st),
            retained: Mutex::new(RetainedEvents::default()),
            config,
        }
    }

    /// Subscribes `session` to (`topic`, `policy`); a second SUBSCRIBE of the
    /// same session returns the existing id. `on_subscribed(id)` (which sends
    /// SUBSCRIBED) runs before any EVENT of the new subscription can be sent:
    /// the meta events this subscription causes, then the retained events.
    pub fn subscribe(
        &self,
        session: &Arc<Session>,
        topic: &str,
        policy: MatchPolicy,
        get_retained: bool,
        on_subscribed: impl FnOnce(u64),
    ) -> u64 {
        let id = {
            let mut guard = self.state.write();
            let st = &mut *guard;
            let (id, created) = match st.index.get(topic, policy).copied() {
                Some(id) => (id, false),
                None => {
                    let id = unused_random_id(|id| st.subs.contains_key(&id));
                    st.index.insert(topic, policy, id);
                    st.subs.insert(
                        id,
                        Subscription {
                            id,
                            uri: topic.to_string(),
                            policy,
                            created: SystemTime::now(),
                            subscribers: IndexMap::new(),
                            history: None,
                        },
                    );
                    (id, true)
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
            on_subscribed(id);
            if created {
                if let Some(sub) = st.subs.get(&id) {
                    st.meta_event("wamp.subscription.on_create", || {
                        let details = subscription_details(&sub.info());
                        vec![Value::UInt(session.id), Value::Dict(details)]
                    });
                }
            }
            if fresh {
                st.meta_event("wamp.subscription.on_subscribe", || {
                    vec![Value::UInt(session.id), Value::UInt(id)]
                });
            }
            id
        };
        if get_retained {
            self.send_retained(session, id, topic, policy);
        }
        id
    }

    /// Sends `session` the retained events its new subscription covers, if
    /// it would have been eligible for them when they were published.
    fn send_retained(&self, session: &Session, subscription: u64, uri: &str, policy: MatchPolicy) {
        let found: Vec<(String, Retained)> = {
            let retained = self.retained.lock();
            match policy {
                MatchPolicy::Exact => retained
                    .by_topic
                    .get(uri)
                    .map(|r| vec![(uri.to_string(), r.clone())])
                    .unwrap_or_default(),
                _ => retained
                    .by_topic
                    .iter()
                    .filter(|(t, _)| pattern_matches(uri, policy, t))
                    .map(|(t, r)| (t.clone(), r.clone()))
                    .collect(),
            }
        };
        for (topic, r) in found {
            if !r.filter.admits(session) {
                continue;
            }
            let mut details = r.details.clone();
            if policy != MatchPolicy::Exact {
                details.insert("topic", topic.as_str());
            }
            details.insert("retained", true);
            session.send(&Message::Event {
                subscription,
                publication: r.publication,
                details,
                payload: r.payload.clone(),
            });
        }
    }

    pub fn unsubscribe(&self, session: &Session, subscription: u64) -> Result<(), OpError> {
        let mut guard = self.state.write();
        let st = &mut *guard;
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
            if list.is_empty() {
                st.by_session.remove(&session.id);
            }
        }
        st.detached(session.id, subscription);
        Ok(())
    }

    /// Removes every subscription of a session that left.
    pub fn remove_session(&self, session: u64) {
        let mut guard = self.state.write();
        let st = &mut *guard;
        for sub in st.by_session.remove(&session).unwrap_or_default() {
            if let Some(s) = st.subs.get_mut(&sub) {
                s.subscribers.swap_remove(&session);
            }
            st.detached(session, sub);
        }
    }

    /// Routes a publication to every matching subscription and returns its
    /// id. Every EVENT is queued (or handled by the slow-consumer policy)
    /// before this returns.
    pub fn publish(
        &self,
        publisher: &Session,
        topic: &str,
        options: &Dict,
        payload: &Payload,
    ) -> Result<u64, OpError> {
        let prepared = self.prepare(publisher, options)?;
        Ok(self.publish_prepared(publisher, topic, options, payload, prepared))
    }

    /// What a publication's EVENTs will carry, decided before it is
    /// delivered: its id, the details every subscriber gets (publisher
    /// disclosure) and who may receive it (`exclude`, `eligible`, ...).
    /// Refuses `disclose_me` where the realm never discloses publishers.
    pub fn prepare(&self, publisher: &Session, options: &Dict) -> Result<Prepared, OpError> {
        let disclose_me = options.get_bool("disclose_me").unwrap_or(false);
        let disclose = match self.config.disclose_publisher {
            Disclosure::Always => true,
            Disclosure::OnRequest => disclose_me,
            Disclosure::Never if disclose_me => {
                return Err((
                    errors::OPTION_DISALLOWED_DISCLOSE_ME,
                    "this realm does not disclose publishers to subscribers (disclose_publisher = \"never\")".into(),
                ))
            }
            Disclosure::Never => false,
        };
        let mut details = Dict::new();
        if disclose {
            details.insert("publisher", publisher.id);
            details.insert("publisher_authid", publisher.authid.as_str());
            details.insert("publisher_authrole", publisher.authrole.as_str());
        }
        Ok(Prepared {
            id: random_id(),
            details,
            filter: Filter::from_options(options, Some(publisher.id)),
        })
    }

    /// Delivers a publication [`Broker::prepare`]d (and hands it to the
    /// backplane, and retains it if asked); returns its id.
    pub fn publish_prepared(
        &self,
        publisher: &Session,
        topic: &str,
        options: &Dict,
        payload: &Payload,
        prepared: Prepared,
    ) -> u64 {
        let Prepared {
            id: publication,
            details,
            filter,
        } = prepared;
        self.state
            .read()
            .deliver(publication, topic, &details, payload, &filter);
        if let Some(backplane) = &self.config.backplane {
            backplane.publish(&Publication {
                id: publication,
                topic,
                publisher,
                options,
                details: &details,
                payload,
            });
        }
        if options.get_bool("retain") == Some(true) {
            // Retained here first: only what passed this node's limits is
            // shared with the other nodes, as the topic's retained event.
            let shared = self.config.backplane.as_ref().map(|b| (b, details.clone()));
            if self.retain(topic, publication, details, payload, filter) {
                if let Some((backplane, details)) = shared {
                    backplane.retain(&Publication {
                        id: publication,
                        topic,
                        publisher,
                        options,
                        details: &details,
                        payload,
                    });
                }
            }
        }
        publication
    }

    /// Delivers a publication another node of the cluster accepted to this
    /// node's subscribers: the entry point of a [`Backplane`]'s receiving
    /// side. `publisher` is the publishing session's id (cluster-wide
    /// unique), `options` its PUBLISH.Options and `details` the EVENT.Details
    /// its node built (publisher disclosure decided there, by the realm's
    /// settings every node shares). The filters (`exclude`, `eligible`, by
    /// session id, authid and authrole; `exclude_me`) are evaluated here,
    /// against this node's sessions. Never handed back to the backplane: a
    /// node does not re-publish what it received.
    pub fn deliver_remote(
        &self,
        publication: u64,
        topic: &str,
        publisher: u64,
        options: &Dict,
        details: &Dict,
        payload: &Payload,
    ) {
        let filter = Filter::from_options(options, Some(publisher));
        self.state
            .read()
            .deliver(publication, topic, details, payload, &filter);
    }

    /// Retains `topic`'s last event another node of the cluster retained
    /// (the receiving side of [`Backplane::retain`]): what a later
    /// `get_retained` here returns, with the filters (`exclude`, `eligible`,
    /// `exclude_me`) of `options` evaluated then against this node's
    /// sessions. The realm's limits apply as to a local one; false when
    /// they refused it.
    pub fn retain_remote(
        &self,
        publication: u64,
        topic: &str,
        publisher: u64,
        options: &Dict,
        details: Dict,
        payload: &Payload,
    ) -> bool {
        let filter = Filter::from_options(options, Some(publisher));
        self.retain(topic, publication, details, payload, filter)
    }

    /// Keeps the event as `topic`'s retained one; false when a limit
    /// refused it.
    fn retain(
        &self,
        topic: &str,
        publication: u64,
        details: Dict,
        payload: &Payload,
        filter: Filter,
    ) -> bool {
        let mut retained = self.retained.lock();
        let retained = &mut *retained;
        if !retained.by_topic.contains_key(topic)
            && retained.by_topic.len() >= self.config.retained_limit
        {
            tracing::warn!(
                topic = %Clip(topic),
                limit = self.config.retained_limit,
                "event not retained: the realm already retains events on its limit of topics"
            );
            return false;
        }
        let event = Retained {
            publication,
            details,
            payload: payload.clone(),
            filter,
        };
        let size = retained_size(topic, &event);
        let replaced = retained
            .by_topic
            .get(topic)
            .map_or(0, |old| retained_size(topic, old));
        let total = retained.bytes - replaced + size;
        if total > self.config.max_retained_bytes {
            // Refused rather than evicting others' retained events: a
            // client must not be able to push out what others published.
            if let Some(m) = &self.config.metrics {
                crate::metrics::Metrics::inc(&m.limit_exceeded);
            }
            tracing::warn!(
                topic = %topic.chars().take(128).collect::<String>(),
                size,
                limit = self.config.max_retained_bytes,
                "event not retained: the realm's retained events would exceed max_retained_bytes"
            );
            return false;
        }
        retained.bytes = total;
        retained.by_topic.insert(topic.to_string(), event);
        true
    }

    /// Bytes held by retained events.
    pub fn retained_bytes(&self) -> usize {
        self.retained.lock().bytes
    }

    /// Publishes an event from the router itself (meta events).
    /// A meta event (`wamp.session.on_join` and the like): built by
    /// `args` and published as [`Broker::publish_from_router`] does, but
    /// only if it goes anywhere (a subscription here matches `topic`, or
    /// a cluster's other nodes take the meta events): most sessions come
    /// and go with nobody watching, and building the event's details for
    /// nobody is most of its cost.
    pub fn publish_meta(&self, topic: &str, args: impl FnOnce() -> Vec<Value>) {
        let st = self.state.read();
        st.meta_event(topic, args);
    }

    pub fn publish_from_router(&self, topic: &str, payload: &Payload) -> u64 {
        let publication = random_id();
        let st = self.state.read();
        st.deliver(
            publication,
            topic,
            &Dict::new(),
            payload,
            &Filter::default(),
        );
        if let Some(b) = &st.meta_out {
            b.meta_event(publication, topic, payload);
        }
        publication
    }

    /// The number of subscriptions in the realm, if subscribing to `topic`
    /// with `policy` would create one more while there are `max` or more
    /// already (joining an existing subscription costs no URI).
    pub fn new_subscription_over(
        &self,
        topic: &str,
        policy: MatchPolicy,
        max: usize,
    ) -> Option<usize> {
        let st = self.state.read();
        let n = st.subs.len();
        (n >= max && st.index.get(topic, policy).is_none()).then_some(n)
    }

    /// `Some(n)` when `session` already holds `n >= max` subscriptions and
    /// subscribing to `topic` would add one (subscribing again to a
    /// subscription it holds adds none, and is answered with its id).
    pub fn session_subscription_over(
        &self,
        session: u64,
        topic: &str,
        policy: MatchPolicy,
        max: usize,
    ) -> Option<usize> {
        let st = self.state.read();
        let held = st.by_session.get(&session)?;
        if held.len() < max {
            return None;
        }
        let existing = st.index.get(topic, policy).copied();
        (!existing.is_some_and(|id| held.contains(&id))).then_some(held.len())
    }

    /// Subscriptions in the realm (for /metrics).
    pub fn count(&self) -> usize {
        self.state.read().subs.len()
    }

    /// Subscriptions `session` holds.
    pub fn session_subscriptions(&self, session: u64) -> usize {
        self.state
            .read()
            .by_session
            .get(&session)
            .map_or(0, Vec::len)
    }

    /// Subscription ids by match policy (`wamp.subscription.list`).
    pub fn list(&self) -> [Vec<u64>; 3] {
        let st = self.state.read();
        let mut lists: [Vec<u64>; 3] = Default::default();
        for sub in st.subs.values() {
            let slot = match sub.policy {
                MatchPolicy::Exact => 0,
                MatchPolicy::Prefix => 1,
                MatchPolicy::Wildcard => 2,
            };
            lists[slot].push(sub.id);
        }
        lists
    }

    /// The pattern (URI and match policy) of every subscription that has
    /// subscribers now or keeps an event history: what a cluster node must
    /// hear of from the others (a history records the events published on
    /// every node).
    pub fn subscribed_patterns(&self) -> Vec<(String, MatchPolicy)> {
        self.state
            .read()
            .subs
            .values()
            .filter(|s| !s.subscribers.is_empty() || s.history.is_some())
            .map(|s| (s.uri.clone(), s.policy))
            .collect()
    }

    /// The subscription of exactly (`topic`, `policy`).
    pub fn lookup(&self, topic: &str, policy: MatchPolicy) -> Option<u64> {
        self.state.read().index.get(topic, policy).copied()
    }

    /// Every subscription a publication to `topic` reaches.
    pub fn matching(&self, topic: &str) -> Vec<u64> {
        let st = self.state.read();
        let mut ids = Vec::new();
        st.index.for_each_match(topic, |_, id| ids.push(*id));
        ids
    }

    pub fn subscription(&self, id: u64) -> Option<SubscriptionInfo> {
        self.state.read().subs.get(&id).map(Subscription::info)
    }

    /// `wamp.subscription.get_events` for `reader`. `may_subscribe(uri,
    /// policy)` says whether the reader may subscribe to a topic or pattern:
    /// a reader subscribed to the subscription, or allowed to subscribe to
    /// its pattern, reads every event of it; any other reader only the events
    /// whose topic it may subscribe to (a history is no way around the
    /// authorization of subscriptions).
    pub(crate) fn get_events(
        &self,
        id: u64,
        query: &Dict,
        reader: &Session,
        may_subscribe: impl Fn(&str, MatchPolicy) -> bool,
    ) -> Result<Vec<Value>, OpError> {
        let query = Query::parse(query)?;
        let st = self.state.read();
        let sub = st.subs.get(&id).ok_or_else(|| {
            (
                errors::NO_SUCH_SUBSCRIPTION,
                format!("no subscription {id} in this realm"),
            )
        })?;
        let Some(history) = &sub.history else {
            return Err((
                errors::INVALID_ARGUMENT,
                format!(
                    "subscription {id} (\"{}\") keeps no event history: configure [[realm.history]] for it",
                    sub.uri
                ),
            ));
        };
        let whole = sub.subscribers.contains_key(&reader.id) || may_subscribe(&sub.uri, sub.policy);
        let may_read = |topic: &str| whole || may_subscribe(topic, MatchPolicy::Exact);
        let result = history
            .lock()
            .query(id, &query, &reader.authid, &reader.authrole, &may_read);
        result
    }

    /// Events kept in history, per subscription (for tests and metrics).
    pub fn history_len(&self, id: u64) -> Option<usize> {
        let st = self.state.read();
        st.subs
            .get(&id)
            .and_then(|s| s.history.as_ref())
            .map(|h| h.lock().len())
    }

    /// Topics holding a retained event.
    pub fn retained_topics(&self) -> usize {
        self.retained.lock().by_topic.len()
    }
}

impl State {
    /// Queues the EVENTs of one publication for every matching
    /// subscription, and records it in the histories that keep it.
    fn deliver(
        &self,
        publication: u64,
        topic: &str,
        base: &Dict,
        payload: &Payload,
        filter: &Filter,
    ) {
        let mut stored_filter: Option<Arc<Filter>> = None;
        // The EVENTs queued for client connections, counted once at the end
        // (`switchyard_messages_out_total`; the writers do not count them).
        let mut counted: Option<(Arc<crate::traffic::Traffic>, u64, u64)> = None;
        self.index.for_each_match(topic, |policy, sub_id| {
            let Some(sub) = self.subs.get(sub_id) else {
                return;
            };
            let mut details = base.clone();
            if policy != MatchPolicy::Exact {
                details.insert("topic", topic);
            }
            if let Some(history) = &sub.history {
                if filter.storable() {
                    let f = stored_filter
                        .get_or_insert_with(|| Arc::new(filter.clone()))
                        .clone();
                    history.lock().push(StoredEvent {
                        time: now_millis(),
                        publication,
                        topic: topic.to_string(),
                        details: details.clone(),
                        payload: payload.clone(),
                        filter: f,
                    });
                }
            }
            if sub.subscribers.is_empty() {
                return;
            }
            let event = Message::Event {
                subscription: *sub_id,
                publication,
                details,
                payload: payload.clone(),
            };
            let mut encoded: [Option<Option<Bytes>>; 3] = [None, None, None];
            // Sessions whose maximum message size the event exceeds: one
            // log line per event, not one per subscriber.
            let mut too_large: Option<(usize, usize, u64)> = None;
            for (sid, s) in &sub.subscribers {
                if !filter.admits(s) {
                    continue;
                }
                let ser: Serializer = s.peer.serializer();
                let frame = encoded[ser.index()].get_or_insert_with(|| match event.encode(ser) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        tracing::warn!(
                            topic = %Clip(topic),
                            publication,
                            "event not delivered to {ser} subscribers: {e}"
                        );
                        None
                    }
                });
                let Some(frame) = frame else { continue };
                if frame.len() > s.peer.max_message_len() {
                    let (n, max, _) = too_large.get_or_insert((0, frame.len(), *sid));
                    *n += 1;
                    *max = (*max).max(frame.len());
                    continue;
                }
                let len = frame.len() as u64;
                if s.peer.send_event(frame.clone()) {
                    if let Some(t) = s.peer.traffic() {
                        let c = counted.get_or_insert_with(|| (t.clone(), 0, 0));
                        c.1 += 1;
                        c.2 += len;
                    }
                }
            }
            if let Some((sessions, bytes, first)) = too_large {
                tracing::warn!(
                    sessions,
                    first_session = first,
                    topic = %Clip(topic),
                    publication,
                    "event of up to {bytes} bytes not delivered to {sessions} subscriber(s) whose maximum message size is smaller"
                );
            }
        });
        if let Some((traffic, n, bytes)) = counted {
            traffic.events_queued(n, bytes);
        }
    }

    /// Publishes a meta event from inside the Broker (its lock held, so the
    /// events come out in the order the subscriptions changed).
    fn meta_event(&self, topic: &str, args: impl FnOnce() -> Vec<Value>) {
        if !self.meta_wanted(topic) {
            return;
        }
        let (publication, payload) = (random_id(), Payload::values(args(), None));
        self.deliver(
            publication,
            topic,
            &Dict::new(),
            &payload,
            &Filter::default(),
        );
        if let Some(b) = &self.meta_out {
            b.meta_event(publication, topic, &payload);
        }
    }

    /// Whether a meta event on `topic` goes anywhere: a subscription here
    /// matches it, or the other nodes of a cluster take the meta events.
    fn meta_wanted(&self, topic: &str) -> bool {
        if self.meta_out.is_some() {
            return true;
        }
        let mut any = false;
        self.index.for_each_match(topic, |_, _| any = true);
        any
    }

    /// After `session` left subscription `id`: the meta events, and the
    /// subscription's removal if nobody is left (history subscriptions stay).
    fn detached(&mut self, session: u64, id: u64) {
        self.meta_event("wamp.subscription.on_unsubscribe", || {
            vec![Value::UInt(session), Value::UInt(id)]
        });
        let delete = self
            .subs
            .get(&id)
            .is_some_and(|s| s.subscribers.is_empty() && s.history.is_none());
        if delete {
            if let Some(s) = self.subs.remove(&id) {
                self.index.remove(&s.uri, s.policy);
            }
            self.meta_event("wamp.subscription.on_delete", || {
                vec![Value::UInt(session), Value::UInt(id)]
            });
        }
    }
}

/// Now, to the millisecond: history timestamps are reported to the
/// millisecond, and the time filters must compare what the reader saw.
fn now_millis() -> SystemTime {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(since.as_millis() as u64)
}

/// `SubscriptionDetails` of the subscription meta API.
pub fn subscription_details(info: &SubscriptionInfo) -> Dict {
    crate::details::pattern_details(info.id, info.created, &info.uri, info.policy)
}

/// A publication accepted but not delivered yet ([`Broker::prepare`]):
/// what a publish hook may know of it.
pub struct Prepared {
    /// The publication id its EVENTs and PUBLISHED will carry.
    pub id: u64,
    /// EVENT.Details every subscriber gets (a pattern subscription's also
    /// get `topic`).
    pub details: Dict,
    filter: Filter,
}

impl Prepared {
    /// Whether `s`, were it subscribed, would receive the event (the
    /// publisher's `exclude_me`, `exclude*` and `eligible*` options).
    pub fn admits(&self, s: &Session) -> bool {
        self.filter.admits(s)
    }
}

#[cfg(test)]
mod tests {
    use super::{pattern_matches, Broker};
    use crate::features::ClientFeatures;
    use crate::peer::{Outgoing, Peer, SlowConsumerPolicy};
    use crate::session::{Identity, Session};
    use crate::uri_index::MatchPolicy::*;
    use std::sync::Arc;
    use switchyard_proto::{Message, Serializer, Value};

    /// A meta event nobody subscribes to is not even built (its details
    /// are most of the cost of a session's join and leave); one that a
    /// pattern subscription matches is built and delivered.
    #[test]
    fn meta_events_are_built_only_for_subscribers() {
        let broker = Broker::default();
        let mut built = 0;
        broker.publish_meta("wamp.session.on_join", || {
            built += 1;
            vec![Value::UInt(1)]
        });
        assert_eq!(built, 0, "built with nobody subscribed");

        let (peer, mut rx) = Peer::new(
            Serializer::Json,
            16,
            SlowConsumerPolicy::Disconnect,
            1 << 16,
            "test".into(),
        );
        let watcher = Arc::new(Session::new(
            7,
            Identity::anonymous(),
            ClientFeatures::default(),
            peer,
        ));
        broker.subscribe(&watcher, "wamp.session", Prefix, false, |_| {});
        broker.publish_meta("wamp.session.on_join", || {
            built += 1;
            vec![Value::UInt(1)]
        });
        assert_eq!(built, 1);
        let mut events = 0;
        while let Ok(Outgoing::Frame(f)) = rx.try_recv() {
            if let Ok(Message::Event { .. }) = Message::decode(Serializer::Json, &f) {
                events += 1;
            }
        }
        assert_eq!(events, 1, "the subscriber got the meta event");
    }

    #[test]
    fn patterns_match_like_the_index() {
        assert!(pattern_matches("a.b", Exact, "a.b"));
        assert!(!pattern_matches("a.b", Exact, "a.b.c"));
        assert!(pattern_matches("a.b", Prefix, "a.b-c"));
        assert!(pattern_matches("a..c", Wildcard, "a.x.c"));
        assert!(!pattern_matches("a..c", Wildcard, "a.x.c.d"));
        assert!(!pattern_matches("a..c", Wildcard, "a.c"));
    }
}
