//! The `switchyard.queue.*` procedures of a realm in cluster mode with JetStream queues: every
//! node registers them (router-owned, not announced, as on one node), and each call goes to the
//! node that owns the realm's queues:
//!
//! - on the owner, straight to its queue service;
//! - elsewhere, as a NATS request on `<prefix>.<realm>.queues.api` (only the owner listens):
//!   the call travels as a WAMP `CALL` encoded with MessagePack (its details carry the caller's
//!   session id, authid and authrole, as the Dealer disclosed them), the answer as a `RESULT` or
//!   an `ERROR`. The owner authorizes the call per queue with that identity, as it does its
//!   own callers' (the same realm configuration on every node).
//!
//! With no owner (during a takeover) a call fails at once with
//! `switchyard.queue.error.unavailable`: the client tries again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::RwLock;
use switchyard_proto::{Dict, Message, Payload, Serializer, Value};
use switchyard_router::internal::{InternalCaller, InternalInvocation};
use switchyard_router::session::Identity;
use switchyard_router::{Realm, Session};
use tokio::sync::{mpsc, Semaphore};

use crate::queue_service::api::PROCEDURES;
use crate::queue_service::QueueService;

/// The error of a call no node can serve now.
pub const UNAVAILABLE: &str = "switchyard.queue.error.unavailable";
/// The forwarded request of a publication's bound jobs (not a WAMP procedure: only nodes send
/// it, over NATS): args `[[[queue, encoding, payload bytes], ...]]`.
const BOUND: &str = "switchyard.queue.bound";

/// The error URIs a forwarded bound push may answer (a publication's ERROR needs a static one).
const BOUND_ERRORS: [&str; 6] = [
    "switchyard.queue.error.unknown_queue",
    "switchyard.queue.error.invalid_argument",
    "switchyard.queue.error.payload_too_large",
    "switchyard.queue.error.queue_full",
    "switchyard.queue.error.store",
    UNAVAILABLE,
];
/// Forwarded calls the owner serves at once (beyond, they wait for a turn).
const SERVED_AT_ONCE: usize = 1024;

type Answer = Result<(Vec<Value>, Option<Dict>), (String, String)>;

/// The procedures of one realm on this node.
pub struct Front {
    realm: Arc<Realm>,
    client: async_nats::Client,
    subject: String,
    /// The realm's queue service while this node owns the queues.
    service: RwLock<Option<Arc<QueueService>>>,
    /// How long a forwarded call waits for the owner's answer (an owner that dies with the
    /// call is noticed by this timeout only).
    timeout: Duration,
    _caller: InternalCaller,
}

fn identity() -> Identity {
    Identity {
        authid: "switchyard-queue".into(),
        authrole: "switchyard".into(),
        authmethod: "internal".into(),
        authprovider: "switchyard".into(),
    }
}

impl Front {
    /// Registers the procedures in `realm` and serves them.
    pub fn register(
        realm: Arc<Realm>,
        client: async_nats::Client,
        subject: String,
        timeout: Duration,
    ) -> Result<Arc<Front>, String> {
        let (tx, rx) = mpsc::channel(1024);
        let caller = InternalCaller::with_invocations(identity(), tx);
        let session = caller.session().clone();
        let names = caller.register_procedures(
            realm.name(),
            &realm.dealer,
            PROCEDURES.map(|(procedure, concurrency)| {
                (
                    procedure,
                    crate::queue_service::api::register_options(concurrency),
                )
            }),
        )?;
        let front = Arc::new(Front {
            realm,
            client,
            subject,
            service: RwLock::new(None),
            timeout,
            _caller: caller,
        });
        tokio::spawn(serve(Arc::downgrade(&front), session, names, rx));
        Ok(front)
    }

    /// This node now owns the queues (`Some`) or no longer does (`None`).
    pub fn set_service(&self, service: Option<Arc<QueueService>>) {
        *self.service.write() = service;
    }

    /// The service, while this node owns the queues.
    pub fn service(&self) -> Option<Arc<QueueService>> {
        self.service.read().clone()
    }

    async fn answer(&self, procedure: &str, inv: InternalInvocation) -> Answer {
        match self.service() {
            Some(s) => s
                .handle(procedure, inv)
                .await
                .map_err(|(uri, m)| (uri.to_string(), m)),
            None => self.forward(procedure, inv).await,
        }
    }

    /// Sends the call to the owner and waits for its answer.
    async fn forward(&self, procedure: &str, inv: InternalInvocation) -> Answer {
        self.request(procedure, inv.details, inv.args, inv.kwargs)
            .await
    }

    /// A publication's bound jobs, pushed on the owner; resolves once they are durable there.
    pub async fn forward_bound(
        &self,
        jobs: Vec<(String, switchyard_queue::Payload)>,
    ) -> Result<(), switchyard_router::session::OpError> {
        let jobs = jobs
            .into_iter()
            .map(|(queue, data)| {
                let encoding = serde_json::to_value(data.encoding)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                Value::List(vec![
                    Value::Str(queue),
                    Value::Str(encoding),
                    Value::Bytes(data.bytes.to_vec()),
                ])
            })
            .collect();
        let args = vec![Value::List(jobs)];
        match self.request(BOUND, Dict::new(), args, Dict::new()).await {
            Ok(_) => Ok(()),
            Err((uri, message)) => {
                let uri = BOUND_ERRORS
                    .iter()
                    .copied()
                    .find(|u| *u == uri)
                    .unwrap_or(UNAVAILABLE);
                Err((uri, message))
            }
        }
    }

    async fn request(
        &self,
        procedure: &str,
        details: Dict,
        args: Vec<Value>,
        kwargs: Dict,
    ) -> Answer {
        let call = Message::Call {
            request: 1,
            options: details,
            procedure: procedure.to_string(),
            payload: Payload::values(args, Some(kwargs)),
        }
        .encode(Serializer::MsgPack)
        .map_err(|e| {
            (
                UNAVAILABLE.to_string(),
                format!("cannot forward the call: {e:?}"),
            )
        })?;
        let unavailable = |why: String| {
            (
                UNAVAILABLE.to_string(),
                format!(
                    "the queues of realm \"{}\" cannot be reached now ({why}); try again",
                    self.realm.name()
                ),
            )
        };
        let reply = match tokio::time::timeout(
            self.timeout,
            self.client.request(self.subject.clone(), call),
        )
        .await
        {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                let why = match e.kind() {
                    async_nats::client::RequestErrorKind::NoResponders => {
                        "no node dispatches them: a takeover is under way".to_string()
                    }
                    _ => e.to_string(),
                };
                return Err(unavailable(why));
            }
            Err(_) => return Err(unavailable(format!("no answer within {:?}", self.timeout))),
        };
        match Message::decode(Serializer::MsgPack, &reply.payload) {
            Ok(Message::Result { payload, .. }) => {
                let (args, kwargs) = values(&payload);
                Ok((args, Some(kwargs)))
            }
            Ok(Message::Error { error, payload, .. }) => {
                let message = match values(&payload).0.into_iter().next() {
                    Some(Value::Str(s)) => s,
                    _ => String::new(),
                };
                Err((error, message))
            }
            _ => Err(unavailable("an unreadable answer".into())),
        }
    }
}

/// Pushes a publication's bound jobs forwarded by another node (args of [`BOUND`]).
async fn push_bound(service: &QueueService, args: Vec<Value>) -> Answer {
    let bad = |m: &str| {
        (
            "switchyard.queue.error.invalid_argument".to_string(),
            format!("bound jobs: {m}"),
        )
    };
    let Some(Value::List(list)) = args.into_iter().next() else {
        return Err(bad("expected [[queue, encoding, payload], ...]"));
    };
    let mut jobs = Vec::with_capacity(list.len());
    for job in list {
        let Value::List(fields) = job else {
            return Err(bad("a job is [queue, encoding, payload]"));
        };
        let mut it = fields.into_iter();
        let (Some(Value::Str(queue)), Some(Value::Str(encoding)), Some(Value::Bytes(bytes))) =
            (it.next(), it.next(), it.next())
        else {
            return Err(bad("a job is [queue, encoding, payload]"));
        };
        let encoding: switchyard_queue::Encoding =
            serde_json::from_value(serde_json::Value::String(encoding))
                .map_err(|_| bad("unknown encoding"))?;
        jobs.push((
            queue,
            switchyard_queue::Payload {
                encoding,
                bytes: bytes.into(),
            },
        ));
    }
    let commit = service
        .push_bound(jobs)
        .map_err(|(uri, m)| (uri.to_string(), m))?;
    commit.await.map_err(|(uri, m)| (uri.to_string(), m))?;
    Ok((Vec::new(), None))
}

/// A payload's arguments.
fn values(p: &Payload) -> (Vec<Value>, Dict) {
    let args = match p.args.as_ref().and_then(|i| i.to_value().ok()) {
        Some(Value::List(l)) => l,
        _ => Vec::new(),
    };
    let kwargs = match p.kwargs.as_ref().and_then(|i| i.to_value().ok()) {
        Some(Value::Dict(d)) => d,
        _ => Dict::new(),
    };
    (args, kwargs)
}

async fn serve(
    front: std::sync::Weak<Front>,
    session: Arc<Session>,
    names: HashMap<u64, &'static str>,
    mut rx: mpsc::Receiver<InternalInvocation>,
) {
    while let Some(inv) = rx.recv().await {
        let Some(front) = front.upgrade() else { return };
        let procedure = names.get(&inv.registration).copied().unwrap_or("");
        let session = session.clone();
        tokio::spawn(async move {
            let request = inv.request;
            match front.answer(procedure, inv).await {
                Ok((args, kwargs)) => front.realm.dealer.yield_result(
                    &session,
                    request,
                    &Dict::new(),
                    Payload::values(args, kwargs),
                ),
                Err((uri, message)) => front.realm.dealer.yield_error(
                    &session,
                    request,
                    uri,
                    Payload::message(message),
                ),
            };
        });
    }
}

/// Subscribes to the calls other nodes forward (in place at NATS when this returns).
pub async fn subscribe_forwarded(
    client: &async_nats::Client,
    subject: String,
) -> Result<async_nats::Subscriber, String> {
    let sub = client
        .queue_subscribe(subject.clone(), "owner".into())
        .await
        .map_err(|e| format!("cannot subscribe to {subject}: {e}"))?;
    client
        .flush()
        .await
        .map_err(|e| format!("cannot subscribe to {subject}: {e}"))?;
    Ok(sub)
}

/// Serves the calls other nodes forward, while this node owns the queues (the task is aborted
/// when it no longer does).
pub async fn serve_forwarded(
    client: async_nats::Client,
    mut sub: async_nats::Subscriber,
    service: Arc<QueueService>,
) {
    let turns = Arc::new(Semaphore::new(SERVED_AT_ONCE));
    while let Some(m) = sub.next().await {
        let Some(reply) = m.reply.clone() else {
            continue;
        };
        let Ok(turn) = turns.clone().acquire_owned().await else {
            return;
        };
        let (client, service) = (client.clone(), service.clone());
        tokio::spawn(async move {
            let answer = match Message::decode(Serializer::MsgPack, &m.payload) {
                Ok(Message::Call {
                    procedure, payload, ..
                }) if procedure == BOUND => push_bound(&service, values(&payload).0).await,
                Ok(Message::Call {
                    options,
                    procedure,
                    payload,
                    ..
                }) => match PROCEDURES.iter().find(|(p, _)| *p == procedure) {
                    Some((known, _)) => {
                        let (args, kwargs) = values(&payload);
                        let inv = InternalInvocation {
                            request: 0,
                            registration: 0,
                            details: options,
                            args,
                            kwargs,
                        };
                        service
                            .handle(known, inv)
                            .await
                            .map_err(|(uri, m)| (uri.to_string(), m))
                    }
                    None => Err((
                        "wamp.error.no_such_procedure".to_string(),
                        format!("no queue procedure {procedure}"),
                    )),
                },
                _ => Err((
                    "wamp.error.invalid_argument".to_string(),
                    "not a forwarded queue call".to_string(),
                )),
            };
            let message = match answer {
                Ok((args, kwargs)) => Message::Result {
                    request: 1,
                    details: Dict::new(),
                    payload: Payload::values(args, kwargs),
                },
                Err((error, text)) => Message::Error {
                    request_type: 48,
                    request: 1,
                    details: Dict::new(),
                    error,
                    payload: Payload::message(text),
                },
            };
            let mut body: Bytes = match message.encode(Serializer::MsgPack) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("cluster: cannot encode a queue answer: {e:?}");
                    return;
                }
            };
            let max = client.server_info().max_payload;
            if body.len() > max {
                let too_large = Message::Error {
                    request_type: 48,
                    request: 1,
                    details: Dict::new(),
                    error: "wamp.error.payload_size_exceeded".to_string(),
                    payload: Payload::message(format!(
                        "the answer ({} bytes) is larger than a NATS message may be ({max}); \
                         ask for less (limit) or call the node that dispatches the queues",
                        body.len()
                    )),
                };
                match too_large.encode(Serializer::MsgPack) {
                    Ok(b) => body = b,
                    Err(_) => return,
                }
            }
            if let Err(e) = client.publish(reply, body).await {
                tracing::warn!("cluster: cannot send a queue answer: {e}");
            }
            drop(turn);
        });
    }
}
