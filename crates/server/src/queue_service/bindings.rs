//! Topic bindings: a publication on a bound topic becomes one job in each
//! bound queue, all written in one transaction. The publish hook validates
//! and submits the jobs before the Broker delivers the event; the
//! publisher's PUBLISHED (or the bridge's 200) follows their commit, and a
//! publication whose jobs cannot be stored (payload over a queue's limit, a
//! full queue) is refused and delivered to nobody. The durable HTTP
//! subscribers' jobs (`subscribers.rs`) are written in the same
//! transaction.

use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use switchyard_router::logsafe::Clip;

use serde::Deserialize;
use switchyard_proto::Payload;
use switchyard_queue::NewJob;
use switchyard_router::broker::Prepared;
use switchyard_router::hooks::{HookOutcome, PublishHook};
use switchyard_router::uri_index::MatchPolicy;
use switchyard_router::Session;

use super::{check_topic, payload, QueueService};

/// A `[[realm.queue_binding]]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueBinding {
    /// The topic, or a pattern of topics.
    pub topic: String,
    /// How `topic` matches: exact (default), prefix or wildcard.
    #[serde(default, rename = "match")]
    pub policy: MatchPolicy,
    /// The queues that get a job per publication.
    pub queues: Vec<String>,
}

impl QueueBinding {
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = check_topic(&self.topic, self.policy) {
            out.push(format!("topic: {e}"));
        }
        if self.queues.is_empty() {
            out.push("queues: name at least one queue".into());
        }
        for (i, q) in self.queues.iter().enumerate() {
            if self.queues[..i].contains(q) {
                out.push(format!("queues: \"{q}\" is listed twice"));
            }
        }
        out
    }
}

pub(super) struct Bindings {
    service: Weak<QueueService>,
    /// Replaced by a reload of the config file ([`Bindings::replace`]); a
    /// publication uses one list from start to end.
    bindings: ArcSwap<Vec<QueueBinding>>,
}

impl Bindings {
    pub(super) fn new(service: &Arc<QueueService>, bindings: Vec<QueueBinding>) -> Bindings {
        Bindings {
            service: Arc::downgrade(service),
            bindings: ArcSwap::from_pointee(bindings),
        }
    }

    /// The bindings of a reloaded config file, for the publications from now on.
    pub(super) fn replace(&self, bindings: Vec<QueueBinding>) {
        self.bindings.store(Arc::new(bindings));
    }
}

/// Every queue bound to `topic`, once each, in binding order.
fn queues_for<'a>(bindings: &'a [QueueBinding], topic: &str) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for b in bindings {
        if b.policy.matches(&b.topic, topic) {
            for q in &b.queues {
                if !out.contains(&q.as_str()) {
                    out.push(q);
                }
            }
        }
    }
    out
}

impl PublishHook for Bindings {
    fn on_publish(
        &self,
        _publisher: &Arc<Session>,
        topic: &str,
        p: &Payload,
        publication: &Prepared,
    ) -> HookOutcome {
        let bindings = self.bindings.load();
        let queues = queues_for(&bindings, topic);
        let Some(service) = self.service.upgrade() else {
            return HookOutcome::Pass;
        };
        let cannot = |e: String| {
            HookOutcome::Refuse(
                "switchyard.queue.error.invalid_argument",
                format!("the event on \"{topic}\" cannot become a job: {e}"),
            )
        };
        let durable = match service.subscribers.jobs_for(topic, p, publication) {
            Ok(jobs) => jobs,
            Err(e) => return cannot(e),
        };
        if queues.is_empty() && durable.is_empty() {
            return HookOutcome::Pass;
        }
        let mut jobs: Vec<(&str, NewJob)> = Vec::new();
        if !queues.is_empty() {
            let data = match payload::of_publication(p) {
                Ok(b) => b,
                Err(e) => return cannot(e),
            };
            jobs.extend(queues.iter().map(|q| (*q, NewJob::new(data.clone()))));
        }
        jobs.extend(durable);
        let topic = topic.to_string();
        // Validated and handed to the store now, before the event is
        // delivered: a job that cannot be stored refuses the publication.
        let commit = match service.queues.submit_many(jobs) {
            Ok(c) => c,
            Err(e) => {
                return HookOutcome::Refuse(
                    e.uri(),
                    format!(
                    "the event on \"{topic}\" cannot become a job, so it was not published: {e}"
                ),
                )
            }
        };
        HookOutcome::After(Box::pin(async move {
            match commit.await {
                Ok(acks) => {
                    tracing::debug!(topic = %Clip(&topic), jobs = acks.len(), "publication queued");
                    Ok(())
                }
                Err(e) => Err((
                    e.uri(),
                    format!("the publication's jobs were not stored: {e}"),
                )),
            }
        }))
    }
}
