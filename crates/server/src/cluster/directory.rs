//! The cluster's registration directory: what each node tells the others
//! about its local registrations, and what a node knows of the others'.
//!
//! Each node announces the registrations of its client sessions (one
//! [`Entry`] per callee of a registration) as a sequence of changes, each
//! numbered (`gen`, +1 per change) within the node's `epoch` (random per
//! process start), plus a heartbeat that repeats the latest `gen`. Both go,
//! in order, on one subject per node (`<prefix>.dir.<node>`), so a receiver
//! that sees a heartbeat whose `gen` differs from what it applied has lost a
//! change for certain. A receiver that sees a new node, a new epoch or a gap
//! asks the node for a [`Snapshot`] (request/reply on `<prefix>.snap.<node>`)
//! and reconciles. A node that stops cleanly says `Bye`.
//!
//! This file is pure bookkeeping (no NATS, no Dealer): [`LocalDirectory`]
//! for what this node announces, [`RemoteView`] for what it heard. The
//! tasks that move the messages are in `heartbeat.rs`; what a remote entry
//! becomes on this node (a proxy registration) is in `proxy.rs`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A registration's callee, as its node announces it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub realm: String,
    /// The registration id on the callee's node.
    pub registration: u64,
    /// The callee's session id (unique cluster-wide).
    pub session: u64,
    pub uri: String,
    /// `exact`, `prefix` or `wildcard`.
    #[serde(rename = "match")]
    pub policy: String,
    /// The invocation policy (`single`, `roundrobin`, ...).
    pub invoke: String,
    /// When the registration was created on its node (ms since the Unix
    /// epoch): the older claim wins a race for a single registration.
    pub created_ms: u64,
    pub authid: String,
    pub authrole: String,
    pub authmethod: String,
    pub authprovider: String,
    /// The callee's features (`callee.features.*` of its HELLO).
    pub call_canceling: bool,
    pub progressive_call_invocations: bool,
    /// REGISTER.Options of this callee.
    pub concurrency: u32,
    pub forward_timeout: bool,
    pub disclose_caller: bool,
}

/// (realm, registration id on its node, callee session id).
pub type Key = (String, u64, u64);

impl Entry {
    pub fn key(&self) -> Key {
        (self.realm.clone(), self.registration, self.session)
    }
}

/// What a node publishes on `<prefix>.dir.<node>`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Announcement {
    /// Change `gen` of the node's directory.
    Change {
        node: String,
        epoch: u64,
        gen: u64,
        #[serde(default)]
        add: Vec<Entry>,
        #[serde(default)]
        remove: Vec<Key>,
        /// As in `Beat`.
        #[serde(default)]
        conn: u64,
    },
    /// "Alive, and my directory is at `gen`"; `conn`: how many times the
    /// node's NATS connection came back since it started (what was sent
    /// to or from it meanwhile may be lost).
    Beat {
        node: String,
        epoch: u64,
        gen: u64,
        #[serde(default)]
        conn: u64,
    },
    /// The node stops: forget it and everything it registered at once.
    Bye { node: String, epoch: u64 },
}

/// A node's whole directory (the answer on `<prefix>.snap.<node>`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub node: String,
    pub epoch: u64,
    pub gen: u64,
    pub entries: Vec<Entry>,
}

/// What this node announces.
#[derive(Debug)]
pub struct LocalDirectory {
    node: String,
    epoch: u64,
    gen: u64,
    entries: HashMap<Key, Entry>,
    /// After `Bye`: nothing more is announced.
    closing: bool,
}

impl LocalDirectory {
    pub fn new(node: &str) -> Self {
        LocalDirectory {
            node: node.to_string(),
            epoch: switchyard_proto::id::random_id(),
            gen: 0,
            entries: HashMap::new(),
            closing: false,
        }
    }

    fn change(&mut self, add: Vec<Entry>, remove: Vec<Key>) -> Announcement {
        self.gen += 1;
        Announcement::Change {
            node: self.node.clone(),
            epoch: self.epoch,
            gen: self.gen,
            add,
            remove,
            conn: 0,
        }
    }

    /// Adds (or updates) an entry; the change to announce, if any.
    pub fn add(&mut self, e: Entry) -> Option<Announcement> {
        if self.closing || self.entries.get(&e.key()) == Some(&e) {
            return None;
        }
        self.entries.insert(e.key(), e.clone());
        Some(self.change(vec![e], Vec::new()))
    }

    /// Removes an entry; the change to announce, if it was there.
    pub fn remove(&mut self, key: &Key) -> Option<Announcement> {
        if self.closing {
            return None;
        }
        self.entries.remove(key)?;
        Some(self.change(Vec::new(), vec![key.clone()]))
    }

    /// This process's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn beat(&self) -> Option<Announcement> {
        (!self.closing).then(|| Announcement::Beat {
            conn: 0,
            node: self.node.clone(),
            epoch: self.epoch,
            gen: self.gen,
        })
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            node: self.node.clone(),
            epoch: self.epoch,
            gen: self.gen,
            entries: if self.closing {
                Vec::new()
            } else {
                self.entries.values().cloned().collect()
            },
        }
    }

    /// The last announcement: nothing is announced after it.
    pub fn bye(&mut self) -> Announcement {
        self.closing = true;
        Announcement::Bye {
            node: self.node.clone(),
            epoch: self.epoch,
        }
    }
}

/// What this node knows of another.
#[derive(Debug)]
struct RemoteNode {
    /// 0 until its first snapshot arrived.
    epoch: u64,
    gen: u64,
    last_seen: Instant,
    entries: HashMap<Key, Entry>,
    /// A snapshot was asked for and has not arrived.
    syncing: bool,
    /// The reconnections of its NATS connection its last heartbeat told.
    conn: Option<u64>,
}

/// What a received announcement asks of the receiver.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Apply these changes (entries of the node that sent them).
    Apply {
        add: Vec<Entry>,
        remove: Vec<Entry>,
    },
    /// Ask the node for its snapshot.
    Snapshot,
    /// The node left: everything it registered goes.
    Left(Vec<Entry>),
    Nothing,
}

/// What a snapshot changes.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// The node restarted (a new epoch): its old entries are gone with the
    /// old process (`removed` holds them; calls in flight there are lost).
    pub restarted: bool,
    pub removed: Vec<Entry>,
    pub added: Vec<Entry>,
}

/// What this node heard from the others.
#[derive(Debug, Default)]
pub struct RemoteView {
    nodes: HashMap<String, RemoteNode>,
}

impl RemoteView {
    fn node(&mut self, name: &str, now: Instant) -> (&mut RemoteNode, bool) {
        let mut new = false;
        let n = self.nodes.entry(name.to_string()).or_insert_with(|| {
            new = true;
            RemoteNode {
                epoch: 0,
                gen: 0,
                last_seen: now,
                entries: HashMap::new(),
                syncing: false,
                conn: None,
            }
        });
        n.last_seen = now;
        (n, new)
    }

    /// Takes an announcement from another node.
    pub fn receive(&mut self, a: Announcement, now: Instant) -> Step {
        match a {
            Announcement::Bye { node, epoch } => match self.nodes.get(&node) {
                Some(n) if n.epoch == epoch || n.epoch == 0 => {
                    let gone = self.nodes.remove(&node).map(|n| n.entries);
                    Step::Left(gone.unwrap_or_default().into_values().collect())
                }
                _ => Step::Nothing,
            },
            Announcement::Beat {
                node, epoch, gen, ..
            } => {
                let (n, _) = self.node(&node, now);
                if n.syncing || (n.epoch == epoch && n.gen == gen) {
                    return Step::Nothing;
                }
                n.syncing = true;
                Step::Snapshot
            }
            Announcement::Change {
                node,
                epoch,
                gen,
                add,
                remove,
                ..
            } => {
                let (n, _) = self.node(&node, now);
                if n.syncing {
                    return Step::Nothing;
                }
                if n.epoch == epoch && gen <= n.gen {
                    return Step::Nothing;
                }
                if n.epoch != epoch || gen != n.gen + 1 {
                    n.syncing = true;
                    return Step::Snapshot;
                }
                n.gen = gen;
                let removed = remove.iter().filter_map(|k| n.entries.remove(k)).collect();
                for e in &add {
                    n.entries.insert(e.key(), e.clone());
                }
                Step::Apply {
                    add,
                    remove: removed,
                }
            }
        }
    }

    /// Notes the reconnections `conn` a change or heartbeat of `node`
    /// tells: true if its NATS connection came back since its previous
    /// message (the messages to and from it meanwhile may be lost).
    pub fn reconnected(&mut self, node: &str, conn: u64) -> bool {
        let Some(n) = self.nodes.get_mut(node) else {
            return false;
        };
        let before = n.conn.replace(conn);
        before.is_some_and(|b| b != conn)
    }

    /// A snapshot asked for could not be had: ask again at the next
    /// heartbeat.
    pub fn snapshot_failed(&mut self, node: &str) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.syncing = false;
        }
    }

    /// Replaces what is known of `s.node` by its snapshot.
    pub fn reconcile(&mut self, s: Snapshot, now: Instant) -> Reconciled {
        let (n, _) = self.node(&s.node, now);
        n.syncing = false;
        if n.epoch == s.epoch && s.gen < n.gen {
            // Older than what was applied meanwhile.
            return Reconciled::default();
        }
        let restarted = n.epoch != 0 && n.epoch != s.epoch;
        n.epoch = s.epoch;
        n.gen = s.gen;
        let fresh: HashMap<Key, Entry> = s.entries.into_iter().map(|e| (e.key(), e)).collect();
        let old = std::mem::replace(&mut n.entries, fresh);
        let mut out = Reconciled {
            restarted,
            ..Reconciled::default()
        };
        for (k, e) in &old {
            if restarted || n.entries.get(k) != Some(e) {
                out.removed.push(e.clone());
            }
        }
        for (k, e) in &n.entries {
            if restarted || old.get(k) != Some(e) {
                out.added.push(e.clone());
            }
        }
        out
    }

    /// The nodes known alive, each with its epoch (0 until its first
    /// snapshot arrived).
    pub fn live(&self) -> HashMap<String, u64> {
        self.nodes
            .iter()
            .map(|(name, n)| (name.clone(), n.epoch))
            .collect()
    }

    /// The nodes silent for longer than `limit`, removed, each with what it
    /// had registered.
    pub fn expire(&mut self, now: Instant, limit: Duration) -> Vec<(String, Vec<Entry>)> {
        let dead: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| now.saturating_duration_since(n.last_seen) > limit)
            .map(|(name, _)| name.clone())
            .collect();
        dead.into_iter()
            .filter_map(|name| {
                let n = self.nodes.remove(&name)?;
                Some((name, n.entries.into_values().collect()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(reg: u64) -> Entry {
        Entry {
            realm: "r".into(),
            registration: reg,
            session: 7,
            uri: format!("p.{reg}"),
            policy: "exact".into(),
            invoke: "single".into(),
            created_ms: 1,
            authid: "a".into(),
            authrole: "r".into(),
            authmethod: "anonymous".into(),
            authprovider: "static".into(),
            call_canceling: true,
            progressive_call_invocations: false,
            concurrency: 0,
            forward_timeout: false,
            disclose_caller: false,
        }
    }

    #[test]
    fn changes_in_order_apply_a_gap_or_a_new_node_asks_for_a_snapshot() {
        let mut local = LocalDirectory::new("a");
        let mut view = RemoteView::default();
        let now = Instant::now();
        let c1 = local.add(entry(1)).expect("change");
        // A node never heard of: snapshot first.
        assert_eq!(view.receive(c1, now), Step::Snapshot);
        let r = view.reconcile(local.snapshot(), now);
        assert_eq!(r.added.len(), 1);
        assert!(!r.restarted);
        let c2 = local.add(entry(2)).expect("change");
        assert!(matches!(view.receive(c2, now), Step::Apply { add, .. } if add.len() == 1));
        // A lost change: the heartbeat shows the gap.
        let _lost = local.remove(&entry(1).key());
        let beat = local.beat().expect("beat");
        assert_eq!(view.receive(beat, now), Step::Snapshot);
        let r = view.reconcile(local.snapshot(), now);
        assert_eq!(r.removed, vec![entry(1)]);
        assert!(r.added.is_empty());
        assert_eq!(
            view.receive(local.beat().expect("beat"), now),
            Step::Nothing
        );
    }

    #[test]
    fn a_heartbeat_tells_a_reconnection() {
        let mut view = RemoteView::default();
        let now = Instant::now();
        let mut local = LocalDirectory::new("a");
        // Unknown node: nothing to compare with.
        assert!(!view.reconnected("a", 0));
        view.receive(local.add(entry(1)).expect("change"), now);
        assert!(!view.reconnected("a", 0));
        assert!(!view.reconnected("a", 0));
        assert!(view.reconnected("a", 1));
        assert!(!view.reconnected("a", 1));
    }

    #[test]
    fn a_restart_replaces_everything_and_silence_or_bye_ends_a_node() {
        let mut view = RemoteView::default();
        let now = Instant::now();
        let mut first = LocalDirectory::new("a");
        first.add(entry(1));
        view.receive(first.beat().expect("beat"), now);
        view.reconcile(first.snapshot(), now);
        let mut second = LocalDirectory::new("a");
        second.add(entry(1));
        assert_eq!(
            view.receive(second.beat().expect("beat"), now),
            Step::Snapshot
        );
        let r = view.reconcile(second.snapshot(), now);
        assert!(r.restarted);
        assert_eq!((r.removed.len(), r.added.len()), (1, 1));
        let later = now + Duration::from_secs(4);
        let dead = view.expire(later, Duration::from_secs(3));
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].1, vec![entry(1)]);
        // Bye: gone at once, with its entries.
        view.receive(second.beat().expect("beat"), later);
        view.reconcile(second.snapshot(), later);
        assert_eq!(
            view.receive(second.bye(), later),
            Step::Left(vec![entry(1)])
        );
        assert!(second.add(entry(3)).is_none());
    }
}
