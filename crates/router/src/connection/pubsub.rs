//! PUBLISH, SUBSCRIBE and UNSUBSCRIBE of an established session: each
//! checked (URI, reserved namespace, authorization, limits), handed to the
//! realm's Broker, and answered (PUBLISHED, SUBSCRIBED, UNSUBSCRIBED or
//! ERROR).

use switchyard_proto::message::code;
use switchyard_proto::{Dict, Message, Payload};

use super::checks::{
    authorize, check_pattern, check_uri, match_policy, not_reserved, subscription_limits,
};
use super::state::{Connection, Flow, Routed};
use crate::authz::Action;
use crate::logsafe::Clip;

impl Connection {
    /// PUBLISH: delivered by the Broker (after the realm's publish hook);
    /// PUBLISHED if asked for, once the publication's queue jobs (if any)
    /// are committed.
    pub(super) fn publish(
        &mut self,
        cx: Routed<'_>,
        request: u64,
        mut options: Dict,
        topic: String,
        payload: Payload,
    ) -> Flow {
        let Routed { s, realm, decision } = cx;
        let rule = realm.config().uri_check;
        let ack = options.get_bool("acknowledge").unwrap_or(false);
        let published = check_uri(&topic, rule, "topic")
            .and_then(|_| not_reserved(&topic, "topic"))
            .and_then(|_| {
                authorize(
                    s,
                    realm,
                    decision,
                    Action::Publish,
                    &topic,
                    Some(&mut options),
                )
            })
            .and_then(|_| realm.publish(s, &topic, &options, &payload));
        if let Some(received) = self.publish_received.take() {
            if published.is_ok() {
                realm
                    .metrics
                    .traffic
                    .latency
                    .publish
                    .observe(received.elapsed());
            }
        }
        match published {
            Ok((publication, None)) if ack => {
                s.send(&Message::Published {
                    request,
                    publication,
                });
            }
            Ok((_, None)) => {}
            Ok((publication, Some(pending))) => {
                // The publication feeds durable queues: PUBLISHED
                // follows the commit of its jobs.
                let s = s.clone();
                tokio::spawn(async move {
                    match pending.await {
                        Ok(()) if ack => {
                            s.send(&Message::Published {
                                request,
                                publication,
                            });
                        }
                        Ok(()) => {}
                        Err(e) if ack => {
                            s.send_error(code::PUBLISH, request, e);
                        }
                        Err((uri, message)) => {
                            tracing::warn!(
                                session = s.id,
                                topic = %Clip(&topic),
                                "publication delivered, but its queue jobs failed: {uri}: {}",
                                Clip(&message)
                            );
                        }
                    }
                });
            }
            Err(e) if ack => {
                s.send_error(code::PUBLISH, request, e);
            }
            Err((uri, message)) => {
                tracing::debug!(
                    session = s.id,
                    topic,
                    "publication refused: {uri}: {message}"
                );
            }
        }
        Flow::Continue
    }

    /// SUBSCRIBE: a new subscription or one more subscriber of an existing
    /// one; SUBSCRIBED (then the retained event, if asked for).
    pub(super) fn subscribe(
        &mut self,
        cx: Routed<'_>,
        request: u64,
        options: Dict,
        topic: String,
    ) -> Flow {
        let Routed { s, realm, decision } = cx;
        let rule = realm.config().uri_check;
        let policy = match_policy(&options)
            .and_then(|policy| check_pattern(&topic, rule, policy).map(|_| policy))
            .and_then(|policy| {
                authorize(s, realm, decision, Action::Subscribe, &topic, None).map(|_| policy)
            })
            .and_then(|policy| subscription_limits(realm, s, &topic, policy).map(|_| policy));
        match policy {
            Ok(policy) => {
                // In a cluster: SUBSCRIBED only once the other nodes deliver
                // the topic here (a publication made after it must reach
                // the new subscriber).
                if !self.interest_ready {
                    let wait = realm
                        .backplane()
                        .and_then(|b| b.before_subscribe(&topic, policy));
                    if let Some(wait) = wait {
                        let msg = Message::Subscribe {
                            request,
                            options,
                            topic,
                        };
                        self.interest_wait = Some(Box::new((msg, decision, wait)));
                        return Flow::Suspend;
                    }
                }
                let get_retained = options.get_bool("get_retained").unwrap_or(false);
                realm
                    .broker
                    .subscribe(s, &topic, policy, get_retained, |subscription| {
                        s.send(&Message::Subscribed {
                            request,
                            subscription,
                        });
                    });
            }
            Err(e) => {
                s.send_error(code::SUBSCRIBE, request, e);
            }
        }
        Flow::Continue
    }

    /// UNSUBSCRIBE: UNSUBSCRIBED, or ERROR for a subscription the session
    /// does not hold.
    pub(super) fn unsubscribe(&mut self, cx: Routed<'_>, request: u64, subscription: u64) -> Flow {
        let Routed { s, realm, .. } = cx;
        match realm.broker.unsubscribe(s, subscription) {
            Ok(()) => {
                s.send(&Message::Unsubscribed { request });
            }
            Err(e) => {
                s.send_error(code::UNSUBSCRIBE, request, e);
            }
        }
        Flow::Continue
    }
}
