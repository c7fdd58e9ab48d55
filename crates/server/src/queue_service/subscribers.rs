//! Durable HTTP subscribers (`[[bridge.subscriber]]` with `durable`): each
//! has a config queue whose only producer is the realm's publish hook. A
//! publication its subscriber would receive (topic match, `exclude` /
//! `eligible` filters) becomes a job holding the whole event (topic,
//! publication id, args, kwargs, details) under the same transaction as
//! the topic bindings' jobs, before the event is delivered; an attempt
//! POSTs the event exactly as the non-durable subscriber would
//! ([`crate::bridge::subscriber::event_body`]), signed with the
//! subscriber's own key, to the subscriber's URL as configured now.
//! Nobody may push into such a queue (its jobs are signed as events).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use switchyard_proto::{Dict, Payload, Value};
use switchyard_queue::{NewJob, Payload as JobPayload, QueueConfig};
use switchyard_router::broker::Prepared;
use switchyard_router::internal::InternalCaller;
use switchyard_router::uri_index::MatchPolicy;
use switchyard_router::Realm;

use super::payload;
use crate::bridge::subscriber::{event_body, HttpSubscriber};

/// A durable subscriber and the name of its queue.
#[derive(Clone, Debug)]
pub struct SubscriberQueue {
    pub queue: String,
    pub subscriber: HttpSubscriber,
}

impl SubscriberQueue {
    /// Its queue's configuration (None for a subscriber without `durable`).
    pub fn config(&self) -> Option<QueueConfig> {
        let s = &self.subscriber;
        s.durable
            .as_ref()
            .map(|d| d.queue_config(self.queue.clone(), &s.url, s.timeout))
    }
}

struct Entry {
    queue: String,
    subscriber: HttpSubscriber,
    /// The session its deliveries are filtered as (never subscribed).
    caller: InternalCaller,
}

/// The realm's durable subscribers.
#[derive(Default)]
pub struct DurableSubscribers {
    entries: Vec<Entry>,
    by_queue: HashMap<String, usize>,
}

impl DurableSubscribers {
    /// Checks that each may subscribe to its topic (as a non-durable one
    /// must).
    pub fn new(
        realm: &Arc<Realm>,
        list: Vec<SubscriberQueue>,
    ) -> Result<DurableSubscribers, String> {
        let mut out = DurableSubscribers::default();
        for SubscriberQueue { queue, subscriber } in list {
            let caller = InternalCaller::new(subscriber.identity());
            subscriber.check_authorized(realm, caller.session())?;
            out.by_queue.insert(queue.clone(), out.entries.len());
            out.entries.push(Entry {
                queue,
                subscriber,
                caller,
            });
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn queues(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.queue.as_str())
    }

    /// The subscriber a queue delivers to, if it is a durable subscriber's.
    pub(super) fn get(&self, queue: &str) -> Option<&HttpSubscriber> {
        self.by_queue
            .get(queue)
            .map(|i| &self.entries[*i].subscriber)
    }

    /// The jobs of a publication: one per durable subscriber that would
    /// receive it.
    pub fn jobs_for(
        &self,
        topic: &str,
        p: &Payload,
        publication: &Prepared,
    ) -> Result<Vec<(&str, NewJob)>, String> {
        let mut out = Vec::new();
        for e in &self.entries {
            let s = &e.subscriber;
            if !s.policy.matches(&s.topic, topic) || !publication.admits(e.caller.session()) {
                continue;
            }
            let mut details = publication.details.clone();
            if s.policy != MatchPolicy::Exact {
                details.insert("topic", topic);
            }
            let item = |i: &Option<switchyard_proto::Item>, empty: Value| match i {
                None => Ok(empty),
                Some(i) => i.to_value().map_err(|e| e.to_string()),
            };
            let event = Dict::new()
                .with("topic", topic)
                .with("publication", publication.id)
                .with("args", item(&p.args, Value::List(Vec::new()))?)
                .with("kwargs", item(&p.kwargs, Value::Dict(Dict::new()))?)
                .with("details", details);
            let data = payload::encode(None, Some(&Value::Dict(event)))?;
            out.push((e.queue.as_str(), NewJob::new(data)));
        }
        Ok(out)
    }
}

/// The POST body of a durable subscriber's job: the event it holds, shaped
/// as a non-durable subscriber's POST.
pub(super) fn body(p: &JobPayload) -> Result<Bytes, String> {
    let (_, kwargs) = payload::to_values(p)?;
    let not_event = || "the job does not hold an event".to_string();
    let Value::Dict(event) = kwargs else {
        return Err(not_event());
    };
    let topic = event.get_str("topic").ok_or_else(not_event)?.to_string();
    let publication = event
        .get("publication")
        .and_then(Value::as_u64)
        .ok_or_else(not_event)?;
    let take = |k: &str| event.get(k).cloned().ok_or_else(not_event);
    let (args, kwargs, details) = (take("args")?, take("kwargs")?, take("details")?);
    Ok(Bytes::from(event_body(
        &topic,
        publication,
        args,
        kwargs,
        details,
    )))
}
