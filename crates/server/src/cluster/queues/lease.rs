//! Which node dispatches a realm's queues: a lease in a JetStream KV bucket, one key per realm,
//! whose value names the owner and its *term* (a number that grows with each change of owner).
//!
//! - **Acquire.** A node that finds no key creates it (`create`: only one node can). A node that
//!   finds a key whose revision has not changed for `lease` *by its own clock* (it saw the same
//!   revision `lease` ago) replaces it with itself and the next term, with `update` at that
//!   revision: of several nodes trying at once, one wins.
//! - **Renew.** The owner updates the key every `lease / 4`, each time at the revision it wrote
//!   last. A refused update (`WrongLastRevision`) means another node took over: it stops at once.
//!   An owner that could not renew for `3/4 lease` (since it *sent* its last successful renewal)
//!   stops as well: the others wait at least `lease` after *seeing* that renewal, so it has
//!   stopped before anyone takes over.
//! - **Bound.** The others see a renewal at most `lease / 4` after it was written and poll every
//!   `lease / 4`: a dead owner's queues are taken over at most `1.5 × lease` after its last
//!   renewal (then the new owner replays the log, see `store.rs`).
//!
//! KV on nats-server 2.9 (research note): async-nats 0.52 cannot create a bucket there, so the
//! bucket's stream is created by hand; 2.9 has no per-key TTL, which is why expiry is "not
//! renewed for `lease`", observed by the others, rather than a TTL.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The value of a realm's key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Owner {
    /// The owning node.
    pub node: String,
    /// Its term.
    pub term: u64,
    /// The owner stopped (SIGTERM) and handed the queues over: anyone may take them at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released: bool,
}

/// What the governor tells the lease task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Control {
    /// Stop renewing the term this high or lower (its queue log failed).
    pub give_up: u64,
    /// The node stops: release the lease (others take over at once) and compete no more.
    pub leaving: bool,
}

/// Opens (creating its stream when missing) the ownership bucket.
pub async fn bucket(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<kv::Store, String> {
    let stream = format!("KV_{name}");
    if js.get_stream(&stream).await.is_err() {
        let config = jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            discard: jetstream::stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            num_replicas: replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        if let Err(e) = js.create_stream(config).await {
            // Another node may have created it meanwhile.
            if js.get_stream(&stream).await.is_err() {
                return Err(format!(
                    "cluster: cannot create the queue ownership bucket {name}: {e} \
                     ([cluster.queues] store = \"jetstream\" needs JetStream on the NATS \
                     servers: nats-server -js)"
                ));
            }
        }
    }
    js.get_key_value(name)
        .await
        .map_err(|e| format!("cluster: cannot open the queue ownership bucket {name}: {e}"))
}

/// One realm's lease, as seen by this node.
pub struct Lease {
    pub kv: kv::Store,
    pub key: String,
    pub node: String,
    pub lease: Duration,
    /// Names the realm in logs.
    pub realm: String,
}

impl Lease {
    fn tick(&self) -> Duration {
        self.lease / 4
    }

    fn value(&self, term: u64) -> bytes::Bytes {
        self.value_of(term, false)
    }

    fn value_of(&self, term: u64, released: bool) -> bytes::Bytes {
        serde_json::to_vec(&Owner {
            node: self.node.clone(),
            term,
            released,
        })
        .unwrap_or_default()
        .into()
    }

    /// Whether `value` names this node with `term` (and is not released).
    fn is_mine(&self, value: &[u8], term: u64) -> bool {
        serde_json::from_slice::<Owner>(value)
            .is_ok_and(|o| o.node == self.node && o.term == term && !o.released)
    }

    /// Competes for the lease until the node leaves: `owner` holds `Some(term)` while this node
    /// owns it. See [`Control`].
    pub async fn run(
        self,
        owner: watch::Sender<Option<u64>>,
        mut control: watch::Receiver<Control>,
    ) {
        let mut seen: Option<(u64, Instant)> = None;
        let mut warned = false;
        loop {
            if control.borrow().leaving {
                return;
            }
            let sent = Instant::now();
            match tokio::time::timeout(self.tick(), self.kv.entry(self.key.clone())).await {
                Ok(Ok(entry)) => {
                    warned = false;
                    let live = entry.filter(|e| matches!(e.operation, kv::Operation::Put));
                    let won = match live {
                        None => {
                            let r = self.kv.create(&self.key, self.value(1)).await;
                            r.ok().map(|rev| (rev, 1))
                        }
                        Some(e) => {
                            let current: Option<Owner> = serde_json::from_slice(&e.value).ok();
                            let term = current.as_ref().map(|o| o.term).unwrap_or(0) + 1;
                            let released = current.as_ref().is_some_and(|o| o.released);
                            match seen {
                                _ if released => {
                                    let r = self
                                        .kv
                                        .update(&self.key, self.value(term), e.revision)
                                        .await;
                                    if r.is_ok() {
                                        tracing::info!(
                                            realm = %self.realm,
                                            previous = ?current.map(|o| o.node),
                                            term,
                                            "cluster: queue owner handed its queues over: taking them"
                                        );
                                    }
                                    r.ok().map(|rev| (rev, term))
                                }
                                Some((rev, at)) if rev == e.revision => {
                                    if at.elapsed() >= self.lease {
                                        let r = self
                                            .kv
                                            .update(&self.key, self.value(term), e.revision)
                                            .await;
                                        if r.is_ok() {
                                            tracing::warn!(
                                                realm = %self.realm,
                                                previous = ?current.map(|o| o.node),
                                                term,
                                                "cluster: queue owner silent for {:?}: taking over its queues",
                                                self.lease
                                            );
                                        }
                                        r.ok().map(|rev| (rev, term))
                                    } else {
                                        None
                                    }
                                }
                                _ => {
                                    seen = Some((e.revision, Instant::now()));
                                    None
                                }
                            }
                        }
                    };
                    if let Some((rev, term)) = won {
                        self.own(rev, term, sent, &owner, &mut control).await;
                        seen = None;
                    }
                }
                Ok(Err(e)) if !warned => {
                    warned = true;
                    tracing::warn!(realm = %self.realm, "cluster: cannot read the queue owner: {e}");
                }
                _ => {}
            }
            tokio::time::sleep(self.tick()).await;
        }
    }

    /// Owns the lease from `rev` (sent at `sent`) until it is lost or given up.
    async fn own(
        &self,
        mut rev: u64,
        term: u64,
        mut sent: Instant,
        owner: &watch::Sender<Option<u64>>,
        control: &mut watch::Receiver<Control>,
    ) {
        tracing::info!(realm = %self.realm, term, "cluster: this node dispatches the realm's queues");
        owner.send_replace(Some(term));
        let limit = self.lease * 3 / 4;
        let why = loop {
            let c = *control.borrow_and_update();
            if c.leaving {
                // Handed over at the revision this node wrote last: never over a newer owner.
                let released = self
                    .kv
                    .update(&self.key, self.value_of(term, true), rev)
                    .await;
                break match released {
                    Ok(_) => "handed over (the node stops)",
                    Err(_) => "the node stops (the lease could not be released)",
                };
            }
            if c.give_up >= term {
                break "given up (its queue log failed)";
            }
            tokio::select! {
                _ = tokio::time::sleep(self.tick()) => {}
                r = control.changed() => match r {
                    Ok(()) => continue,
                    Err(_) => break "stopped",
                },
            }
            let now = Instant::now();
            match tokio::time::timeout(
                self.tick(),
                self.kv.update(&self.key, self.value(term), rev),
            )
            .await
            {
                Ok(Ok(r)) => {
                    rev = r;
                    sent = now;
                }
                Ok(Err(e)) if matches!(e.kind(), kv::UpdateErrorKind::WrongLastRevision) => {
                    // A renewal that timed out here may have been stored: the key then still
                    // holds this node's term, at a revision this node did not see.
                    match tokio::time::timeout(self.tick(), self.kv.entry(self.key.clone())).await {
                        Ok(Ok(Some(e))) if self.is_mine(&e.value, term) => {
                            rev = e.revision;
                            continue;
                        }
                        _ => break "another node took over",
                    }
                }
                _ => {}
            }
            if sent.elapsed() >= limit {
                break "not renewed in time";
            }
        };
        tracing::warn!(realm = %self.realm, term, "cluster: this node no longer dispatches the realm's queues: {why}");
        owner.send_replace(None);
    }
}
