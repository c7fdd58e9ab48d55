//! The seam where a cluster plugs in: a [`Backplane`] carries what one node
//! cannot finish alone to the other nodes of its cluster — a publication
//! their subscribers must get, a call that only their callees can take.
//!
//! Two implementations exist: [`Local`], a single node with nothing beyond
//! it, and the NATS backplane of the server crate (`switchyard::cluster`,
//! docs/CLUSTER.md). This crate does not depend on NATS. A realm keeps a
//! backplane only if it is not local ([`Backplane::is_local`] is asked
//! once, when the realm is built), so the Broker, the Dealer and the
//! connections hold `None` on a single node and their hot paths pay one
//! predictable branch (per publication, per registration change, per
//! YIELD/ERROR) and nothing per call: no allocation, no dynamic call.
//!
//! # How the NATS backplane (issue 15) uses it
//!
//! - **Publications.** [`Backplane::publish`] is called by
//!   [`Broker::publish`](crate::broker::Broker::publish) after local delivery,
//!   with everything a remote node needs to deliver it as this one did:
//!   the publication id, topic, the publisher's identity (for
//!   exclude/eligible by authid/authrole and disclosure), its options
//!   (`exclude`, `eligible`, `exclude_me`, ...) and the EVENT details already
//!   built (publisher disclosure decided here, by the publisher's realm
//!   settings). The NATS implementation encodes it once and publishes it
//!   without blocking (a bounded queue to a task that owns the NATS
//!   client). A receiving node feeds the event into its Broker's local
//!   delivery, [`Broker::deliver_remote`](crate::broker::Broker::deliver_remote),
//!   never back into the backplane.
//! - **Retained events.** A publication with `retain` that this node
//!   retained is handed to [`Backplane::retain`] as well; the NATS
//!   implementation keeps the latest per topic in a NATS KV bucket that
//!   every node mirrors into its Broker
//!   ([`Broker::retain_remote`](crate::broker::Broker::retain_remote)), so
//!   `get_retained` stays a local read on every node.
//! - **Interest.** [`Backplane::before_subscribe`] lets a SUBSCRIBE wait
//!   (the connection suspends, as for a dynamic authorizer) until the
//!   node's subscription to the topic's subject is in place, so that a
//!   publication made anywhere after SUBSCRIBED reaches the new subscriber.
//! - **Calls.** A remote callee is a proxy session in the caller node's
//!   own Dealer (registered with the remote callee's options), so every
//!   RPC rule stays in one Dealer. The backplane sees the Dealer's
//!   registration changes ([`Backplane::registrations_changed`], to
//!   announce local registrations to the other nodes) and, on the callee's
//!   node, the answers to INVOCATIONs it relayed from other nodes
//!   ([`Backplane::answer`], asked only for an answer this node's Dealer
//!   does not know). [`Backplane::call`] (a call no registration matches)
//!   stays for a backplane that routes calls without proxies; the NATS one
//!   answers false.
//!
//! A router is built with backplanes by
//! [`Router::with_backplanes`](crate::Router::with_backplanes).

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use switchyard_proto::{Dict, Payload};

use crate::dealer::RegistrationEvent;
use crate::session::Session;
use crate::uri_index::MatchPolicy;

/// What the other nodes of a cluster are asked to do for this one.
pub trait Backplane: Send + Sync + Debug {
    /// True for a single node (nothing beyond it): the realm then keeps no
    /// backplane at all, and the Broker and Dealer never call it.
    fn is_local(&self) -> bool {
        false
    }

    /// A publication this node accepted and delivered to its own
    /// subscribers: deliver it to the subscribers of the other nodes.
    /// Must not block.
    fn publish(&self, publication: &Publication<'_>);

    /// A publication this node retained (`retain` asked, the realm's
    /// limits passed), after [`Backplane::publish`]: make it the topic's
    /// retained event on the other nodes too, so a `get_retained` there
    /// returns it. Must not block (the default does nothing).
    fn retain(&self, _publication: &Publication<'_>) {}

    /// A session is about to subscribe to (`topic`, `policy`) (checked and
    /// authorized): a wait to finish before the subscription is made and
    /// SUBSCRIBED sent, until the other nodes deliver its publications to
    /// this one; None when there is nothing to wait for (the default). The
    /// wait must end by itself (bounded), whatever happens to the cluster.
    fn before_subscribe(&self, _topic: &str, _policy: MatchPolicy) -> Option<InterestWait> {
        None
    }

    /// A new call no local registration matches: true if another node
    /// takes it (it then answers the caller), false to answer
    /// `wamp.error.no_such_procedure`. Called under the Dealer's lock: must
    /// only decide and enqueue.
    fn call(&self, call: &CallRequest<'_>) -> bool;

    /// The Dealer's registrations changed (the events the registration
    /// meta API publishes, in the order the Dealer's state changed): a
    /// cluster announces its local registrations to the other nodes.
    /// Called under the Dealer's lock: must only enqueue (the default does
    /// nothing).
    fn registrations_changed(&self, _events: &[RegistrationEvent]) {}

    /// A callee answered (YIELD or ERROR) an INVOCATION this node's Dealer
    /// does not know: true if the backplane relayed that INVOCATION from
    /// another node (the answer then goes back to the caller's node), false
    /// to treat it as an answer to a call that is no longer pending (the
    /// default).
    fn answer(&self, _callee: &Session, _invocation: u64, _answer: CalleeAnswer) -> bool {
        false
    }

    /// A session is about to join (authenticated, WELCOME not sent yet): a
    /// wait that claims its id cluster-wide, resolving to false when
    /// another node's session holds the id (the caller then draws another
    /// id and asks again), true otherwise (claimed, or the cluster could
    /// not be asked in time: the session then joins with its random id
    /// unclaimed). None: nothing to wait for (the default). The wait must
    /// end by itself (bounded).
    fn claim_session(&self, _session: &Arc<Session>) -> Option<ClaimWait> {
        None
    }

    /// A session of this node left (any way, after its testaments and
    /// before its `on_leave`), or a claim was not used: release its id.
    /// Must not block.
    fn session_left(&self, _session: &Session) {}

    /// A session's testaments changed (added or flushed): a cluster keeps
    /// them where a surviving node can publish them if this node dies.
    /// Must not block.
    fn testaments_changed(&self, _session: &Session) {}

    /// An event this node's router published itself (the meta events
    /// `wamp.session.*`, `wamp.subscription.*`, `wamp.registration.*`, and
    /// the queues' result events), after local delivery: a cluster
    /// delivers the meta events it does not reproduce otherwise to the
    /// other nodes' subscribers. Called under the Broker's lock: must only
    /// enqueue.
    fn meta_event(&self, _publication: u64, _topic: &str, _payload: &Payload) {}

    /// The sessions of the other nodes of the realm, as far as this node
    /// knows them (the session meta API counts and lists them).
    fn remote_sessions(&self) -> Vec<RemoteSession> {
        Vec::new()
    }

    /// Session `id` of another node, if this node knows it.
    fn remote_session(&self, _id: u64) -> Option<RemoteSession> {
        None
    }

    /// The subscriptions of the other nodes of the realm (each with its
    /// id on its node and that node's subscribers), for the subscription
    /// meta API.
    fn remote_subscriptions(&self) -> Vec<RemoteSubscription> {
        Vec::new()
    }

    /// `wamp.session.kill`, `kill_by_authid`, `kill_by_authrole` or
    /// `kill_all` on the other nodes (the call was authorized on this one): each node ends
    /// its own client sessions `order` names, as the procedure does on
    /// one node. None when there is no other node to ask; else the ids
    /// of the sessions the other nodes ended (bounded in time: a node
    /// that does not answer in time counts for none).
    fn kill_remote(&self, _order: KillOrder) -> Option<KillWait> {
        None
    }
}

/// Which sessions of the other nodes a kill procedure ends.
#[derive(Clone, Debug, PartialEq)]
pub enum KillTarget {
    /// `wamp.session.kill`: the session with this id.
    Session(u64),
    /// `wamp.session.kill_by_authid`.
    AuthId(String),
    /// `wamp.session.kill_by_authrole`.
    AuthRole(String),
    /// `wamp.session.kill_all`: every client session, silently (no
    /// testaments, no `wamp.session.on_leave`, as on one node).
    All,
}

/// A kill procedure's order to the other nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct KillOrder {
    pub target: KillTarget,
    /// The GOODBYE's reason (checked on the caller's node).
    pub reason: String,
    pub message: Option<String>,
}

/// What [`Backplane::kill_remote`] answers: the ids of the sessions the
/// other nodes ended.
pub type KillWait = Pin<Box<dyn Future<Output = Vec<u64>> + Send>>;

/// What [`Backplane::claim_session`] has a joining session wait for: true
/// to go on with its id, false if another node holds it.
pub type ClaimWait = Pin<Box<dyn Future<Output = bool> + Send + Sync>>;

/// A session of another node, for the session meta API.
#[derive(Clone, Debug)]
pub struct RemoteSession {
    pub id: u64,
    pub authid: String,
    pub authrole: String,
    /// Its `SessionDetails` (`wamp.session.get`), as its node built them.
    pub details: Dict,
}

/// A subscription of another node, for the subscription meta API.
#[derive(Clone, Debug)]
pub struct RemoteSubscription {
    /// Its id on its node.
    pub id: u64,
    pub uri: String,
    pub policy: MatchPolicy,
    /// When it was created on its node.
    pub created: std::time::SystemTime,
    /// Its subscribers (client sessions of that node).
    pub subscribers: Vec<u64>,
}

/// A callee's answer to an INVOCATION, as [`Backplane::answer`] sees it.
#[derive(Debug)]
pub enum CalleeAnswer {
    /// YIELD (progressive when `options.progress` is true).
    Yield { options: Dict, payload: Payload },
    /// ERROR for the INVOCATION.
    Error { error: String, payload: Payload },
}

/// What [`Backplane::before_subscribe`] has a SUBSCRIBE wait for.
pub type InterestWait = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// A publication, as [`Backplane::publish`] sees it.
pub struct Publication<'a> {
    /// The publication id the publisher got (PUBLISHED) and the local
    /// subscribers saw (EVENT).
    pub id: u64,
    pub topic: &'a str,
    /// The publisher (its id, authid and authrole, for the remote filters).
    pub publisher: &'a Session,
    /// PUBLISH.Options, as the publisher sent them (after authorization).
    pub options: &'a Dict,
    /// EVENT.Details as delivered here (publisher disclosure decided).
    pub details: &'a Dict,
    pub payload: &'a Payload,
}

/// A new call, as [`Backplane::call`] sees it.
pub struct CallRequest<'a> {
    pub caller: &'a Session,
    /// The caller's CALL request id (RESULT/ERROR answer it).
    pub request: u64,
    pub procedure: &'a str,
    /// CALL.Options (timeout, receive_progress, disclose_me, ...).
    pub options: &'a Dict,
    pub payload: &'a Payload,
}

/// A single node: nothing beyond it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Local;

impl Backplane for Local {
    fn is_local(&self) -> bool {
        true
    }

    fn publish(&self, _: &Publication<'_>) {}

    fn call(&self, _: &CallRequest<'_>) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    //! The seam's plumbing: the Broker hands every publication to a
    //! backplane after local delivery, the Dealer offers it a call no local
    //! registration matches, and a local backplane is not kept at all.

    use parking_lot::Mutex;
    use switchyard_proto::{errors, Message, Serializer, Value};

    use super::*;
    use crate::broker::{Broker, BrokerConfig};
    use crate::dealer::{CallOutcome, Dealer, DealerConfig};
    use crate::features::ClientFeatures;
    use crate::peer::{OutboundRx, Outgoing, Peer, SlowConsumerPolicy};
    use crate::session::Identity;

    /// Records what it is handed; takes calls to "remote." procedures.
    #[derive(Debug, Default)]
    struct Recorder {
        published: Mutex<Vec<(u64, String, u64)>>,
        retained: Mutex<Vec<(u64, String)>>,
        called: Mutex<Vec<(u64, String)>>,
    }

    impl Backplane for Recorder {
        fn publish(&self, p: &Publication<'_>) {
            self.published
                .lock()
                .push((p.id, p.topic.to_string(), p.publisher.id));
        }

        fn retain(&self, p: &Publication<'_>) {
            self.retained.lock().push((p.id, p.topic.to_string()));
        }

        fn call(&self, c: &CallRequest<'_>) -> bool {
            self.called
                .lock()
                .push((c.request, c.procedure.to_string()));
            c.procedure.starts_with("remote.")
        }
    }

    fn session(id: u64) -> (Arc<Session>, OutboundRx) {
        let (peer, rx) = Peer::new(
            Serializer::Json,
            16,
            SlowConsumerPolicy::Disconnect,
            1 << 16,
            "test".into(),
        );
        let s = Session::new(id, Identity::anonymous(), ClientFeatures::default(), peer);
        (Arc::new(s), rx)
    }

    fn sent(rx: &mut OutboundRx) -> Vec<Message> {
        let mut out = Vec::new();
        while let Ok(Outgoing::Frame(f)) = rx.try_recv() {
            if let Ok(m) = Message::decode(Serializer::Json, &f) {
                out.push(m);
            }
        }
        out
    }

    #[test]
    fn the_broker_hands_every_publication_on_after_local_delivery() {
        let recorder = Arc::new(Recorder::default());
        let broker = Broker::new(BrokerConfig {
            backplane: Some(recorder.clone()),
            ..BrokerConfig::default()
        });
        let (publisher, _rx) = session(7);
        let id = broker
            .publish(
                &publisher,
                "com.example.topic",
                &Dict::new(),
                &Payload::values(vec![Value::UInt(1)], None),
            )
            .expect("published");
        assert_eq!(
            *recorder.published.lock(),
            vec![(id, "com.example.topic".to_string(), 7)]
        );
    }

    #[test]
    fn only_what_this_node_retained_is_shared_as_retained() {
        let recorder = Arc::new(Recorder::default());
        let broker = Broker::new(BrokerConfig {
            backplane: Some(recorder.clone()),
            max_retained_bytes: 64,
            ..BrokerConfig::default()
        });
        let (publisher, _rx) = session(7);
        let retain = Dict::new().with("retain", true);
        let small = Payload::values(vec![Value::UInt(1)], None);
        // Over max_retained_bytes by its topic alone.
        let long = format!("t.{}", "x".repeat(100));
        let plain = broker
            .publish(&publisher, "t.plain", &Dict::new(), &small)
            .expect("published");
        let kept = broker
            .publish(&publisher, "t.kept", &retain, &small)
            .expect("published");
        let refused = broker
            .publish(&publisher, &long, &retain, &small)
            .expect("published");
        // Every publication goes out; only the retained one is shared as
        // retained (the one over max_retained_bytes is not).
        assert_eq!(
            recorder
                .published
                .lock()
                .iter()
                .map(|p| p.0)
                .collect::<Vec<_>>(),
            vec![plain, kept, refused]
        );
        assert_eq!(
            *recorder.retained.lock(),
            vec![(kept, "t.kept".to_string())]
        );
        // What another node retained is returned as a local one, through
        // the same limits.
        assert!(broker.retain_remote(5, "t.remote", 99, &Dict::new(), Dict::new(), &small));
        assert!(!broker.retain_remote(6, &long, 99, &Dict::new(), Dict::new(), &small));
        assert_eq!(broker.retained_topics(), 2);
    }

    #[test]
    fn the_dealer_offers_a_call_no_local_registration_matches() {
        let recorder = Arc::new(Recorder::default());
        let dealer = Dealer::new(
            DealerConfig {
                backplane: Some(recorder.clone()),
                ..DealerConfig::default()
            },
            Box::new(|_| {}),
        );
        let (caller, mut rx) = session(9);
        let payload = || Payload::values(Vec::new(), None);
        // Taken by another node: no answer from this one.
        let taken = dealer.call(&caller, 1, "remote.proc", &Dict::new(), payload(), true);
        assert!(matches!(taken, CallOutcome::Handled));
        assert!(sent(&mut rx).is_empty());
        // Served by no node: no_such_procedure, as on a single node.
        dealer.call(&caller, 2, "nowhere.proc", &Dict::new(), payload(), true);
        let answers = sent(&mut rx);
        assert!(
            matches!(&answers[..], [Message::Error { request: 2, error, .. }] if error == errors::NO_SUCH_PROCEDURE),
            "{answers:?}"
        );
        assert_eq!(
            *recorder.called.lock(),
            vec![
                (1, "remote.proc".to_string()),
                (2, "nowhere.proc".to_string())
            ]
        );
    }

    #[test]
    fn a_local_backplane_is_not_kept() {
        assert!(Local.is_local());
        assert!(!Recorder::default().is_local());
        let realm = crate::Realm::with_backplane(
            crate::RealmConfig::new("r"),
            Arc::default(),
            Some(Arc::new(Local)),
        );
        assert!(realm.backplane().is_none());
    }
}
