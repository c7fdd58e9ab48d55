//! What a node knows of the cluster's sessions and subscriptions: every
//! record of the sessions bucket (kept current by a KV watch, and for a
//! session's join and leave also by the meta events, which may come
//! first), its own node's included (to repair them). The meta API asks it
//! for the other nodes' records; the reaper for those of dead nodes.
//!
//! Pure bookkeeping: no NATS here.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use switchyard_proto::{Dict, Value};
use switchyard_router::backplane::{RemoteSession, RemoteSubscription};

use super::record::{Record, SessionRecord, SubscriptionRecord};

/// The nodes alive now, as the directory sees them (node -> its epoch; 0
/// while its first snapshot has not arrived).
pub type Live = HashMap<String, u64>;

/// Whether the process (`node`, `epoch`) is alive according to `live`
/// (an epoch of 0, not known yet on either side, counts as the live one).
pub fn alive(live: &Live, node: &str, epoch: u64) -> bool {
    live.get(node)
        .is_some_and(|e| *e == 0 || epoch == 0 || *e == epoch)
}

#[derive(Debug)]
struct Seen<T> {
    record: T,
    /// When this node first saw the record (a record of a node whose
    /// first heartbeat has not arrived yet is not taken for a dead one's).
    since: Instant,
}

/// Every record of the bucket, by key.
#[derive(Debug, Default)]
pub struct View {
    sessions: HashMap<u64, Seen<SessionRecord>>,
    subscriptions: HashMap<(String, u64), Seen<SubscriptionRecord>>,
    /// Keys whose delete marker the watch delivered, and when: the
    /// markers stay in the bucket's stream (one message per key ever
    /// used) until [`View::old_tombstones`] hands them to be purged.
    tombstones: HashMap<String, Instant>,
}

/// One of this node's own records (its session or subscription id).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Own {
    Session(u64),
    Subscription(u64),
}

/// A record the reaper may take: its key and what it is.
#[derive(Debug, Clone, PartialEq)]
pub enum Candidate {
    Session(u64),
    Subscription(String, u64),
}

impl View {
    /// A record was put.
    pub fn put(&mut self, record: Record, now: Instant) {
        match &record {
            Record::Session(s) => self.tombstones.remove(&super::record::session_key(s.id)),
            Record::Subscription(u) => self
                .tombstones
                .remove(&super::record::subscription_key(&u.node, u.id)),
        };
        match record {
            Record::Session(s) => {
                let since = self.sessions.get(&s.id).map_or(now, |old| old.since);
                self.sessions.insert(s.id, Seen { record: s, since });
            }
            Record::Subscription(u) => {
                let key = (u.node.clone(), u.id);
                let since = self.subscriptions.get(&key).map_or(now, |old| old.since);
                self.subscriptions.insert(key, Seen { record: u, since });
            }
        }
    }

    /// A record was deleted, by its key (`s.<id>` or `u.<node>.<id>`).
    pub fn delete(&mut self, key: &str) {
        if let Some(id) = key.strip_prefix("s.").and_then(|k| k.parse().ok()) {
            self.sessions.remove(&id);
        } else if let Some((node, id)) = key
            .strip_prefix("u.")
            .and_then(|k| k.rsplit_once('.'))
            .and_then(|(n, id)| Some((n.to_string(), id.parse::<u64>().ok()?)))
        {
            self.subscriptions.remove(&(node, id));
        }
    }

    /// Which of this process's (`me`, `epoch`) records `key` is, if it is
    /// one: (realm, session or subscription, id). Asked before a delete is
    /// applied (a delete this node did not make means another node took
    /// it for dead).
    pub fn own_record(&self, me: &str, epoch: u64, key: &str) -> Option<(String, Own)> {
        if let Some(id) = key.strip_prefix("s.").and_then(|k| k.parse::<u64>().ok()) {
            let s = &self.sessions.get(&id)?.record;
            return (s.node == me && s.epoch == epoch).then(|| (s.realm.clone(), Own::Session(id)));
        }
        let id = key
            .strip_prefix("u.")
            .and_then(|k| k.strip_prefix(me))
            .and_then(|k| k.strip_prefix('.'))
            .and_then(|k| k.parse::<u64>().ok())?;
        let u = &self.subscriptions.get(&(me.to_string(), id))?.record;
        (u.epoch == epoch).then(|| (u.realm.clone(), Own::Subscription(id)))
    }

    /// The watch delivered the delete marker of `key`.
    pub fn tombstone(&mut self, key: &str, now: Instant) {
        self.delete(key);
        self.tombstones.insert(key.to_string(), now);
    }

    /// The keys whose delete marker came `age` ago or more, forgotten.
    pub fn old_tombstones(&mut self, age: Duration, now: Instant) -> Vec<String> {
        let mut old = Vec::new();
        self.tombstones.retain(|k, since| {
            let keep = now.saturating_duration_since(*since) < age;
            if !keep {
                old.push(k.clone());
            }
            keep
        });
        old
    }

    /// `wamp.session.on_join` from node `origin` (its record may come
    /// later): known from its details until then.
    pub fn joined(&mut self, origin: &str, realm: &str, details: &Dict, now: Instant) {
        let Some(id) = details.get("session").and_then(Value::as_u64) else {
            return;
        };
        if self.sessions.contains_key(&id) {
            return;
        }
        let text = |k: &str| details.get_str(k).unwrap_or_default().to_string();
        let record = SessionRecord {
            id,
            node: origin.to_string(),
            epoch: 0,
            realm: realm.to_string(),
            authid: text("authid"),
            authrole: text("authrole"),
            details: details.clone(),
            testaments: Vec::new(),
        };
        self.sessions.insert(id, Seen { record, since: now });
    }

    /// `wamp.session.on_leave` from another node.
    pub fn left(&mut self, id: u64) {
        self.sessions.remove(&id);
    }

    /// The sessions of realm `realm` of nodes other than `me`.
    pub fn sessions(&self, me: &str, realm: &str) -> Vec<RemoteSession> {
        self.sessions
            .values()
            .map(|s| &s.record)
            .filter(|s| s.node != me && s.realm == realm)
            .map(remote_session)
            .collect()
    }

    pub fn session(&self, me: &str, realm: &str, id: u64) -> Option<RemoteSession> {
        self.sessions
            .get(&id)
            .map(|s| &s.record)
            .filter(|s| s.node != me && s.realm == realm)
            .map(remote_session)
    }

    /// The node of session `id`, if known.
    pub fn session_node(&self, id: u64) -> Option<String> {
        self.sessions.get(&id).map(|s| s.record.node.clone())
    }

    /// The subscriptions of realm `realm` of nodes other than `me`.
    pub fn subscriptions(&self, me: &str, realm: &str) -> Vec<RemoteSubscription> {
        self.subscriptions
            .values()
            .map(|s| &s.record)
            .filter(|s| s.node != me && s.realm == realm)
            .map(|s| RemoteSubscription {
                id: s.id,
                uri: s.uri.clone(),
                policy: s.policy,
                created: UNIX_EPOCH + Duration::from_millis(s.created_ms),
                subscribers: s.subscribers.clone(),
            })
            .collect()
    }

    /// The records of processes that are not alive (not this process,
    /// (`me`, `epoch`); an earlier process of this node is dead), seen at
    /// least `settle` ago; only `node`'s when given.
    pub fn dead(
        &self,
        me: &str,
        my_epoch: u64,
        live: &Live,
        only: Option<&str>,
        settle: Duration,
        now: Instant,
    ) -> Vec<Candidate> {
        let gone = |node: &str, epoch: u64, since: Instant| {
            !(node == me && (epoch == my_epoch || epoch == 0))
                && only.is_none_or(|o| o == node)
                && !alive(live, node, epoch)
                && now.saturating_duration_since(since) >= settle
        };
        let sessions = self
            .sessions
            .values()
            .filter(|s| gone(&s.record.node, s.record.epoch, s.since))
            .map(|s| Candidate::Session(s.record.id));
        let subscriptions = self
            .subscriptions
            .values()
            .filter(|s| gone(&s.record.node, s.record.epoch, s.since))
            .map(|s| Candidate::Subscription(s.record.node.clone(), s.record.id));
        sessions.chain(subscriptions).collect()
    }

    /// This node's own session records of process `epoch` in `realm`,
    /// seen at least `settle` ago.
    pub fn own_sessions(
        &self,
        me: &str,
        epoch: u64,
        realm: &str,
        settle: Duration,
        now: Instant,
    ) -> Vec<u64> {
        self.sessions
            .values()
            .filter(|s| s.record.node == me && s.record.epoch == epoch && s.record.realm == realm)
            .filter(|s| now.saturating_duration_since(s.since) >= settle)
            .map(|s| s.record.id)
            .collect()
    }

    /// This node's own subscription records of process `epoch` in `realm`.
    pub fn own_subscriptions(&self, me: &str, epoch: u64, realm: &str) -> Vec<u64> {
        self.subscriptions
            .values()
            .filter(|s| s.record.node == me && s.record.epoch == epoch && s.record.realm == realm)
            .map(|s| s.record.id)
            .collect()
    }
}

fn remote_session(s: &SessionRecord) -> RemoteSession {
    RemoteSession {
        id: s.id,
        authid: s.authid.clone(),
        authrole: s.authrole.clone(),
        details: s.details.clone(),
    }
}

/// Milliseconds since the Unix epoch of `t`.
pub fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_router::uri_index::MatchPolicy;

    fn session(id: u64, node: &str, epoch: u64) -> Record {
        Record::Session(SessionRecord {
            id,
            node: node.into(),
            epoch,
            realm: "r".into(),
            authid: "a".into(),
            authrole: "user".into(),
            details: Dict::new().with("session", id),
            testaments: Vec::new(),
        })
    }

    #[test]
    fn remote_records_are_answered_and_dead_processes_found() {
        let now = Instant::now();
        let mut v = View::default();
        v.put(session(1, "a", 10), now);
        v.put(session(2, "b", 20), now);
        v.put(session(3, "b", 21), now);
        v.put(
            Record::Subscription(SubscriptionRecord {
                id: 9,
                node: "b".into(),
                epoch: 20,
                realm: "r".into(),
                uri: "t".into(),
                policy: MatchPolicy::Exact,
                created_ms: 1,
                subscribers: vec![2],
            }),
            now,
        );
        // Node a asks: b's sessions and subscription.
        assert_eq!(v.sessions("a", "r").len(), 2);
        assert!(v.session("a", "r", 1).is_none());
        assert_eq!(v.session("b", "r", 1).map(|s| s.id), Some(1));
        assert!(v.sessions("a", "other").is_empty());
        assert_eq!(v.subscriptions("a", "r")[0].subscribers, vec![2]);
        // b restarted as epoch 21: what epoch 20 had is dead.
        let live: Live = [("b".to_string(), 21)].into();
        let later = now + Duration::from_secs(1);
        let mut dead = v.dead("a", 10, &live, None, Duration::ZERO, later);
        dead.sort_by_key(|c| format!("{c:?}"));
        assert_eq!(
            dead,
            vec![
                Candidate::Session(2),
                Candidate::Subscription("b".into(), 9)
            ]
        );
        // Not settled yet: nothing.
        assert!(v
            .dead("a", 10, &live, None, Duration::from_secs(5), later)
            .is_empty());
        v.delete("s.2");
        v.delete("u.b.9");
        assert!(v
            .dead("a", 10, &live, None, Duration::ZERO, later)
            .is_empty());
        // This node's own earlier process (epoch 10, not this one) is dead.
        assert_eq!(
            v.dead("a", 11, &live, Some("a"), Duration::ZERO, later),
            vec![Candidate::Session(1)]
        );
        assert!(v
            .dead("a", 10, &live, None, Duration::ZERO, later)
            .is_empty());
        // An epoch not known yet (0) counts as alive.
        let unknown: Live = [("b".to_string(), 0)].into();
        assert!(v
            .dead("a", 1, &unknown, Some("b"), Duration::ZERO, later)
            .is_empty());
        assert_eq!(v.own_sessions("b", 21, "r", Duration::ZERO, later), vec![3]);
        assert!(v
            .own_sessions("b", 21, "r", Duration::from_secs(5), later)
            .is_empty());
        assert!(v.own_subscriptions("b", 21, "r").is_empty());
        // Own records, as a delete marker names them.
        assert_eq!(
            v.own_record("b", 21, "s.3"),
            Some(("r".to_string(), Own::Session(3)))
        );
        v.put(
            Record::Subscription(SubscriptionRecord {
                id: 9,
                node: "b".into(),
                epoch: 20,
                realm: "r".into(),
                uri: "t".into(),
                policy: MatchPolicy::Exact,
                created_ms: 1,
                subscribers: vec![2],
            }),
            now,
        );
        assert_eq!(
            v.own_record("b", 20, "u.b.9"),
            Some(("r".to_string(), Own::Subscription(9)))
        );
        assert_eq!(v.own_record("a", 21, "s.3"), None);
        assert_eq!(v.own_record("b", 21, "u.b.9"), None);
        v.delete("u.b.9");
        // Delete markers: handed out once old enough; a put forgets one.
        v.tombstone("s.7", now);
        v.tombstone("s.8", now);
        v.put(session(8, "b", 21), now);
        assert!(v.old_tombstones(Duration::from_secs(5), later).is_empty());
        assert_eq!(
            v.old_tombstones(Duration::from_millis(500), later),
            vec!["s.7".to_string()]
        );
        assert!(v.old_tombstones(Duration::ZERO, later).is_empty());
        // A join known from its meta event first.
        v.joined("c", "r", &Dict::new().with("session", 5u64), now);
        assert_eq!(v.session("a", "r", 5).map(|s| s.id), Some(5));
        v.left(5);
        assert!(v.session("a", "r", 5).is_none());
    }
}
