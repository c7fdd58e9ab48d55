//! Topic bindings (`[[realm.queue_binding]]`) and durable HTTP subscribers with JetStream
//! queues: every node's realm has this publish hook; a publication on a bound topic becomes one
//! job per bound queue, and one per durable subscriber that would receive it (its event, in the
//! subscriber's own queue), all written by the owner of the realm's queues:
//!
//! - on the owner, straight into its engine (as on one node: a job that cannot be stored
//!   refuses the publication, which is then delivered to nobody);
//! - elsewhere, forwarded to the owner (`front.rs`) while the event is delivered; the
//!   publisher's `PUBLISHED` waits for the jobs' commit on the owner, and becomes an `ERROR`
//!   when they cannot be stored (the event itself was delivered then).

use std::collections::HashMap;
use std::sync::Arc;

use switchyard_proto::Payload;
use switchyard_router::broker::Prepared;
use switchyard_router::hooks::{HookOutcome, PublishHook};
use switchyard_router::Session;

use super::front::Front;
use crate::queue_service::{of_publication, DurableSubscribers, QueueBinding};

pub struct ClusterBindings {
    pub front: Arc<Front>,
    pub bindings: Vec<QueueBinding>,
    pub subscribers: DurableSubscribers,
    /// Each bound or subscriber queue's `max_payload_bytes` (from the configuration every
    /// node has): a job over it refuses the publication before it is delivered, on any node.
    pub max_payload: HashMap<String, u32>,
}

impl ClusterBindings {
    /// Every queue bound to `topic`, once each, in binding order.
    fn queues_for(&self, topic: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for b in &self.bindings {
            if b.policy.matches(&b.topic, topic) {
                for q in &b.queues {
                    if !out.contains(q) {
                        out.push(q.clone());
                    }
                }
            }
        }
        out
    }
}

impl PublishHook for ClusterBindings {
    fn on_publish(
        &self,
        _publisher: &Arc<Session>,
        topic: &str,
        p: &Payload,
        publication: &Prepared,
    ) -> HookOutcome {
        let cannot = |e: String| {
            HookOutcome::Refuse(
                "switchyard.queue.error.invalid_argument",
                format!("the event on \"{topic}\" cannot become a job: {e}"),
            )
        };
        let queues = self.queues_for(topic);
        let mut jobs: Vec<(String, switchyard_queue::Payload)> = Vec::new();
        if !queues.is_empty() {
            let data = match of_publication(p) {
                Ok(d) => d,
                Err(e) => return cannot(e),
            };
            jobs.extend(queues.into_iter().map(|q| (q, data.clone())));
        }
        match self.subscribers.jobs_for(topic, p, publication) {
            Ok(durable) => jobs.extend(
                durable
                    .into_iter()
                    .map(|(q, job)| (q.to_string(), job.payload)),
            ),
            Err(e) => return cannot(e),
        }
        if jobs.is_empty() {
            return HookOutcome::Pass;
        }
        for (queue, data) in &jobs {
            let limit = self.max_payload.get(queue).copied().unwrap_or(u32::MAX);
            if data.len() > limit as usize {
                let e = switchyard_queue::QueueError::PayloadTooLarge {
                    queue: queue.clone(),
                    size: data.len(),
                    limit,
                };
                return HookOutcome::Refuse(
                    e.uri(),
                    format!("the event cannot become a job, so it was not published: {e}"),
                );
            }
        }
        match self.front.service() {
            Some(service) => match service.push_bound(jobs) {
                Ok(commit) => HookOutcome::After(commit),
                Err((uri, message)) => HookOutcome::Refuse(uri, message),
            },
            None => {
                let front = self.front.clone();
                HookOutcome::After(Box::pin(async move { front.forward_bound(jobs).await }))
            }
        }
    }
}
