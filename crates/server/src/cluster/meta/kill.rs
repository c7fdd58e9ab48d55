//! `wamp.session.kill`, `kill_by_authid`, `kill_by_authrole` and
//! `kill_all` across nodes. The caller's node authorizes the call and kills its own
//! sessions as on one node; it then asks the nodes that may hold the
//! others (the owning node of a session id, from the view; every live node
//! for an authid or authrole) with a NATS request on
//! `<prefix>.<realm>.kill.<node>`, and each kills its own client sessions
//! and answers their ids. The caller's answer is made of every node's ids
//! (a node that does not answer within [`KILL_WAIT`] counts for none).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use switchyard_router::backplane::{KillOrder, KillTarget, KillWait};
use switchyard_router::Realm;

use super::state::RealmMeta;
use crate::cluster::subject;

/// How long the caller's node waits for the other nodes' answers.
pub const KILL_WAIT: Duration = Duration::from_secs(2);

/// The request, JSON.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Request {
    /// `session`, `authid` or `authrole`.
    by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// The answer, JSON: the ids of the sessions the node ended.
#[derive(Debug, Serialize, Deserialize, Default)]
struct Answer {
    killed: Vec<u64>,
}

impl Request {
    fn of(order: &KillOrder) -> Request {
        let (by, session, value) = match &order.target {
            KillTarget::Session(id) => ("session", Some(*id), None),
            KillTarget::AuthId(a) => ("authid", None, Some(a.clone())),
            KillTarget::AuthRole(r) => ("authrole", None, Some(r.clone())),
            KillTarget::All => ("all", None, None),
        };
        Request {
            by: by.into(),
            session,
            value,
            reason: order.reason.clone(),
            message: order.message.clone(),
        }
    }

    fn target(&self) -> Option<KillTarget> {
        match (self.by.as_str(), self.session, &self.value) {
            ("session", Some(id), _) => Some(KillTarget::Session(id)),
            ("authid", _, Some(a)) => Some(KillTarget::AuthId(a.clone())),
            ("authrole", _, Some(r)) => Some(KillTarget::AuthRole(r.clone())),
            ("all", _, _) => Some(KillTarget::All),
            _ => None,
        }
    }
}

/// Asks the other nodes to kill what `order` names (see the module's
/// documentation); None when no other node is to be asked.
pub(super) fn ask(rm: &RealmMeta, order: KillOrder) -> Option<KillWait> {
    let meta = &rm.meta;
    let nodes: Vec<String> = match &order.target {
        KillTarget::Session(id) => vec![meta.view.read().session_node(*id)?],
        _ => meta.live.read().keys().cloned().collect(),
    };
    let nodes: Vec<String> = nodes.into_iter().filter(|n| *n != *meta.node).collect();
    if nodes.is_empty() {
        return None;
    }
    let body: Bytes = serde_json::to_vec(&Request::of(&order)).ok()?.into();
    let client = meta.client.clone();
    let subjects: Vec<String> = nodes
        .iter()
        .map(|n| subject::realm_rpc(&meta.prefix, &rm.realm, "kill", n))
        .collect();
    Some(Box::pin(async move {
        let answers = futures_util::future::join_all(subjects.into_iter().map(|s| {
            let (client, body) = (client.clone(), body.clone());
            async move {
                match tokio::time::timeout(KILL_WAIT, client.request(s.clone(), body)).await {
                    Ok(Ok(m)) => serde_json::from_slice::<Answer>(&m.payload)
                        .map(|a| a.killed)
                        .unwrap_or_default(),
                    Ok(Err(e)) => {
                        tracing::warn!(subject = %s, "cluster: a kill was not answered: {e}");
                        Vec::new()
                    }
                    Err(_) => {
                        tracing::warn!(subject = %s, "cluster: a kill was not answered within {KILL_WAIT:?}");
                        Vec::new()
                    }
                }
            }
        }))
        .await;
        answers.into_iter().flatten().collect()
    }))
}

/// Answers the other nodes' kill requests for `realm`: ends this node's
/// client sessions a request names (never a router-owned one).
pub(super) async fn serve(realm: Arc<Realm>, rm: Arc<RealmMeta>, mut sub: async_nats::Subscriber) {
    while let Some(m) = sub.next().await {
        let Some(reply) = m.reply.clone() else {
            continue;
        };
        let request: Request = match serde_json::from_slice(&m.payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(subject = %m.subject, "cluster: undecodable kill request dropped: {e}");
                continue;
            }
        };
        let Some(target) = request.target() else {
            tracing::warn!(subject = %m.subject, "cluster: a kill request without a target dropped");
            continue;
        };
        let mut killed = Vec::new();
        for s in realm.sessions() {
            let hit = match &target {
                KillTarget::Session(id) => s.id == *id,
                KillTarget::AuthId(a) => s.authid == *a,
                KillTarget::AuthRole(r) => s.authrole == *r,
                KillTarget::All => true,
            };
            if hit && rm.clients.lock().contains(&s.id) {
                // kill_all ends sessions silently, as on one node.
                if target == KillTarget::All {
                    realm.kill_silently(&s, &request.reason, request.message.as_deref());
                } else {
                    realm.kill(&s, &request.reason, request.message.as_deref());
                }
                killed.push(s.id);
            }
        }
        if !killed.is_empty() {
            tracing::info!(
                sessions = killed.len(),
                "cluster: sessions killed at another node's request"
            );
        }
        let body = serde_json::to_vec(&Answer { killed }).unwrap_or_default();
        if let Err(e) = rm.meta.client.publish(reply, body.into()).await {
            tracing::warn!("cluster: cannot answer a kill request: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_its_target() {
        for target in [
            KillTarget::Session(7),
            KillTarget::AuthId("alice".into()),
            KillTarget::AuthRole("user".into()),
            KillTarget::All,
        ] {
            let order = KillOrder {
                target: target.clone(),
                reason: "wamp.close.killed".into(),
                message: Some("bye".into()),
            };
            let json = serde_json::to_vec(&Request::of(&order)).expect("encode");
            let back: Request = serde_json::from_slice(&json).expect("decode");
            assert_eq!(back.target(), Some(target));
            assert_eq!(back.message.as_deref(), Some("bye"));
        }
        let bad: Request = serde_json::from_str(r#"{"by":"authid","reason":"x"}"#).expect("decode");
        assert_eq!(bad.target(), None);
    }
}
