//! The session layer: join a realm, then publish, subscribe, call and
//! register. A [`Session`] is cheap to clone and every method takes `&self`,
//! so many requests can be in flight at once from one or many tasks.
//!
//! Each connection has one reader task (decodes frames, completes pending
//! requests, delivers events, runs invocation handlers) and one writer task
//! (see [`crate::transport`]).
//!
//! Backpressure: every message the application causes (PUBLISH, CALL,
//! SUBSCRIBE, REGISTER, YIELD, GOODBYE...) waits for room in the
//! connection's bounded send queue ([`TransportOptions::send_queue`]), so a
//! long-lived session that produces faster than the network takes it is
//! slowed down rather than growing without bound. Events are delivered
//! through an unbounded channel unless [`SessionOptions::event_queue`] sets
//! a bound; with a bound a full [`Subscription`] pauses the reader task,
//! which pushes back on the router (whose slow-consumer policy then
//! applies).
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchyard_client::Error> {
//! use switchyard_client::{Session, Serializer, Value, Dict};
//!
//! let session = Session::connect("ws://127.0.0.1:8080/ws", "realm1", Serializer::Json).await?;
//! let mut sub = session.subscribe("com.example.topic").await?;
//! session.publish("com.example.topic", vec![Value::from("hi")], Dict::new(), true).await?;
//! session
//!     .register("com.example.add", |args: Vec<Value>, _kwargs: Dict| async move {
//!         let sum: u64 = args.iter().filter_map(Value::as_u64).sum();
//!         Ok((vec![Value::UInt(sum)], Dict::new()))
//!     })
//!     .await?;
//! let (res, _) = session
//!     .call("com.example.add", vec![Value::UInt(2), Value::UInt(3)], Dict::new())
//!     .await
//!     .map_err(switchyard_client::Error::Wamp)?;
//! assert_eq!(res, vec![Value::UInt(5)]);
//! let _event = sub.recv().await;
//! session.leave().await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use switchyard_proto::id::IdSequence;
use switchyard_proto::message::code;
use switchyard_proto::{DecodeError, Dict, Item, Message, Payload, Serializer, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::{CallError, CloseInfo, Error, TransportError, WampError, SEND_FAILED};
use crate::transport::{
    self, Connection, FrameReceiver, FrameSender, Incoming, Outgoing, TransportOptions,
};

/// The ERROR URI of an invocation the router interrupted (CANCEL).
const CANCELED: &str = "wamp.error.canceled";

/// The close reason used when the connection ended without GOODBYE/ABORT.
pub const TRANSPORT_LOST: &str = "wamp.close.transport_lost";

/// What a handler registered with [`Session::register`] returns: the result
/// `(args, kwargs)` or an error `(error_uri, args, kwargs)`.
pub type HandlerResult = Result<(Vec<Value>, Dict), (String, Vec<Value>, Dict)>;

/// Answers a CHALLENGE: given the auth method and the challenge's `Extra`,
/// returns `(signature, extra)` for AUTHENTICATE, or an error text.
pub type ChallengeHandler =
    Arc<dyn Fn(&str, &Dict) -> Result<(String, Dict), String> + Send + Sync>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Handler = Arc<dyn Fn(Invocation) -> BoxFuture<Result<Payload, WampError>> + Send + Sync>;
type Callback = Arc<dyn Fn(Event) + Send + Sync>;

/// Options of [`Session::connect_with`].
#[derive(Clone)]
pub struct SessionOptions {
    /// Transport options (serializer, RawSocket length, WebSocket subprotocols).
    pub transport: TransportOptions,
    /// Entries set in HELLO.Details over the defaults (`agent`, `roles`);
    /// e.g. `authid`, `authmethods`, or `roles` to replace the announced roles.
    pub details: Dict,
    /// Answers a CHALLENGE (without one, a CHALLENGE fails the join).
    pub on_challenge: Option<ChallengeHandler>,
    /// How long to wait for WELCOME, and for the GOODBYE reply in
    /// [`Session::leave`]. Default 10 s.
    pub timeout: Duration,
    /// Events each [`Subscription`] (from [`Session::subscribe`] and
    /// [`Session::subscribe_with`]) may hold unread. `None` (default): no
    /// bound. `Some(n)`: once `n` events wait, the connection's reader stops
    /// reading until the application takes one, so replies to other
    /// requests wait too: read subscriptions promptly (or drop them) when
    /// setting this. 0 counts as 1.
    pub event_queue: Option<usize>,
    /// Keepalive: a PING (WebSocket ping frame, RawSocket PING) goes to the
    /// router whenever it has been silent this long; `Duration::ZERO`
    /// disables it. Default 30 s (the router's own `ping_interval`).
    pub ping_interval: Duration,
    /// A router silent (no frame at all, PONGs included) for
    /// `ping_interval + ping_timeout` is taken for dead: the connection is
    /// dropped and the session ends with `wamp.close.transport_lost` (a
    /// [`crate::ReconnectingSession`] then reconnects). Default 10 s.
    pub ping_timeout: Duration,
}

impl SessionOptions {
    /// Defaults for `serializer`.
    pub fn new(serializer: Serializer) -> Self {
        SessionOptions {
            transport: TransportOptions::new(serializer),
            details: Dict::new(),
            on_challenge: None,
            timeout: Duration::from_secs(10),
            event_queue: None,
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(10),
        }
    }
}

/// An EVENT received on a subscription. The payload stays in its raw,
/// undecoded form until [`Event::args`] / [`Event::kwargs`] are called.
#[derive(Debug, Clone)]
pub struct Event {
    /// The subscription id.
    pub subscription: u64,
    /// The publication id.
    pub publication: u64,
    /// EVENT.Details (`publisher`, `topic` for pattern subscriptions...).
    pub details: Dict,
    /// The raw payload.
    pub payload: Payload,
}

impl Event {
    /// Decodes `Arguments` (empty if absent).
    pub fn args(&self) -> Result<Vec<Value>, DecodeError> {
        decode_args(&self.payload)
    }
    /// Decodes `ArgumentsKw` (empty if absent).
    pub fn kwargs(&self) -> Result<Dict, DecodeError> {
        decode_kwargs(&self.payload)
    }
    /// `Details.topic` (set by the router for pattern-based subscriptions).
    pub fn topic(&self) -> Option<&str> {
        self.details.get_str("topic")
    }
}

/// An INVOCATION, as given to handlers registered with
/// [`Session::register_raw`].
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The INVOCATION request id.
    pub request: u64,
    /// The registration id.
    pub registration: u64,
    /// INVOCATION.Details.
    pub details: Dict,
    /// The raw payload.
    pub payload: Payload,
}

impl Invocation {
    /// Decodes `Arguments` (empty if absent).
    pub fn args(&self) -> Result<Vec<Value>, DecodeError> {
        decode_args(&self.payload)
    }
    /// Decodes `ArgumentsKw` (empty if absent).
    pub fn kwargs(&self) -> Result<Dict, DecodeError> {
        decode_kwargs(&self.payload)
    }
}

/// A RESULT, as returned by [`Session::call_with`].
#[derive(Debug, Clone)]
pub struct CallResult {
    /// RESULT.Details.
    pub details: Dict,
    /// The raw payload.
    pub payload: Payload,
}

impl CallResult {
    /// Decodes `Arguments` (empty if absent).
    pub fn args(&self) -> Result<Vec<Value>, DecodeError> {
        decode_args(&self.payload)
    }
    /// Decodes `ArgumentsKw` (empty if absent).
    pub fn kwargs(&self) -> Result<Dict, DecodeError> {
        decode_kwargs(&self.payload)
    }
}

/// A subscription made with [`Session::subscribe`]: its id and the stream of
/// its events. The stream ends when the subscription is unsubscribed or the
/// session closes. Dropping it does not unsubscribe.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    events: EventReceiver,
}

#[derive(Debug)]
enum EventReceiver {
    Unbounded(mpsc::UnboundedReceiver<Event>),
    Bounded(mpsc::Receiver<Event>),
}

impl Subscription {
    /// The router's subscription id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next event, or `None` once the subscription or session has ended.
    pub async fn recv(&mut self) -> Option<Event> {
        match &mut self.events {
            EventReceiver::Unbounded(rx) => rx.recv().await,
            EventReceiver::Bounded(rx) => rx.recv().await,
        }
    }

    /// An event if one is queued.
    pub fn try_recv(&mut self) -> Option<Event> {
        match &mut self.events {
            EventReceiver::Unbounded(rx) => rx.try_recv().ok(),
            EventReceiver::Bounded(rx) => rx.try_recv().ok(),
        }
    }
}

impl futures_util::Stream for Subscription {
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        match &mut self.events {
            EventReceiver::Unbounded(rx) => rx.poll_recv(cx),
            EventReceiver::Bounded(rx) => rx.poll_recv(cx),
        }
    }
}

/// A registration made with [`Session::register`] and friends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    /// The router's registration id.
    pub id: u64,
}

#[derive(Clone)]
enum EventSink {
    Channel(mpsc::UnboundedSender<Event>),
    Bounded(mpsc::Sender<Event>),
    Callback(Callback),
}

enum Action {
    None,
    AddSink(EventSink),
    AddHandler(Handler),
    RemoveSubscription(u64),
    RemoveRegistration(u64),
}

struct Pending {
    reply: oneshot::Sender<Message>,
    action: Action,
}

/// A cheap hasher for WAMP ids (sequential request ids, router-chosen
/// subscription/registration ids): no need for SipHash's DoS resistance on
/// ids this client chose or that its router chose.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, id: u64) {
        let h = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
}

type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

#[derive(Default)]
struct State {
    pending: IdMap<Pending>,
    subs: IdMap<Arc<[EventSink]>>,
    regs: IdMap<Handler>,
    closed: Option<CloseInfo>,
    leaving: Option<oneshot::Sender<CloseInfo>>,
    /// Invocations whose handler runs in a task of its own: INTERRUPT (or
    /// the end of the session, which drops the sender) cancels it.
    running: IdMap<oneshot::Sender<()>>,
}

struct Shared {
    tx: FrameSender,
    ser: Serializer,
    max_len: Option<usize>,
    ids: IdSequence,
    state: Mutex<State>,
    closed_tx: watch::Sender<Option<CloseInfo>>,
    /// When the router was last heard from (ms since `born`).
    last_heard: std::sync::atomic::AtomicU64,
    born: tokio::time::Instant,
    /// Woken by the keepalive when the router is silent too long.
    silent: tokio::sync::Notify,
    /// The reader is handing a message to the application (e.g. waiting
    /// for room in a full subscription): not reading is then not the
    /// router's silence.
    busy: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn heard(&self) {
        self.last_heard.store(
            self.born.elapsed().as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn silent_for(&self) -> Duration {
        let now = self.born.elapsed().as_millis() as u64;
        let last = self.last_heard.load(std::sync::atomic::Ordering::Relaxed);
        Duration::from_millis(now.saturating_sub(last))
    }
}

struct Handle {
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
    id: u64,
    realm: String,
    details: Dict,
    timeout: Duration,
    event_queue: Option<usize>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.finish(CloseInfo {
            reason: "wamp.close.close_realm".into(),
            message: Some("session dropped".into()),
            details: Dict::new(),
            by_router: false,
        });
        self.reader.abort();
    }
}

/// A joined WAMP session. Clone it to share it between tasks; the connection
/// is closed when the last clone is dropped (without GOODBYE: call
/// [`Session::leave`] for a clean close).
#[derive(Clone)]
pub struct Session {
    inner: Arc<Handle>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.inner.id)
            .field("realm", &self.inner.realm)
            .field("serializer", &self.inner.shared.ser)
            .finish()
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn decode_args(p: &Payload) -> Result<Vec<Value>, DecodeError> {
    match &p.args {
        None => Ok(Vec::new()),
        Some(item) => match item.to_value()? {
            Value::List(l) => Ok(l),
            other => Err(DecodeError::new(format!(
                "Arguments is a {}, not a list",
                other.type_name()
            ))),
        },
    }
}

fn decode_kwargs(p: &Payload) -> Result<Dict, DecodeError> {
    match &p.kwargs {
        None => Ok(Dict::new()),
        Some(item) => match item.to_value()? {
            Value::Dict(d) => Ok(d),
            other => Err(DecodeError::new(format!(
                "ArgumentsKw is a {}, not a dict",
                other.type_name()
            ))),
        },
    }
}

/// Builds a payload from args/kwargs, leaving out empty trailing parts.
pub fn payload(args: Vec<Value>, kwargs: Dict) -> Payload {
    match (args.is_empty(), kwargs.is_empty()) {
        (true, true) => Payload::empty(),
        (_, true) => Payload {
            args: Some(Item::Value(Value::List(args))),
            kwargs: None,
        },
        _ => Payload::values(args, Some(kwargs)),
    }
}

/// A payload whose `Arguments` are already encoded in `ser` (for example a
/// benchmark's fixed payload): cloning it is cheap and encoding splices the
/// bytes without re-encoding.
pub fn raw_payload(ser: Serializer, args: &[Value]) -> Payload {
    let bytes = switchyard_proto::codec::encode_value(ser, &Value::List(args.to_vec()));
    Payload {
        args: Some(Item::Raw {
            ser,
            bytes: Bytes::from(bytes),
        }),
        kwargs: None,
    }
}

fn wamp_error(error: String, details: Dict, payload: &Payload) -> WampError {
    WampError {
        uri: error,
        args: decode_args(payload).unwrap_or_default(),
        kwargs: decode_kwargs(payload).unwrap_or_default(),
        details,
    }
}

fn default_roles() -> Dict {
    let features = |names: &[&str]| {
        let mut f = Dict::new();
        for n in names {
            f.insert(*n, true);
        }
        Dict::new().with("features", f)
    };
    Dict::new()
        .with(
            "publisher",
            features(&[
                "publisher_exclusion",
                "subscriber_blackwhite_listing",
                "publisher_identification",
            ]),
        )
        .with(
            "subscriber",
            features(&["pattern_based_subscription", "publisher_identification"]),
        )
        .with("caller", features(&["caller_identification"]))
        .with(
            "callee",
            features(&[
                "caller_identification",
                "pattern_based_registration",
                "shared_registration",
                "call_canceling",
            ]),
        )
}

impl Shared {
    fn close_info(&self) -> CloseInfo {
        lock(&self.state).closed.clone().unwrap_or(CloseInfo {
            reason: TRANSPORT_LOST.into(),
            message: None,
            details: Dict::new(),
            by_router: false,
        })
    }

    fn encode(&self, msg: &Message) -> Result<Bytes, Error> {
        let frame = msg.encode(self.ser)?;
        if let Some(max) = self.max_len {
            if frame.len() > max {
                return Err(Error::Send(format!(
                    "{} of {} octets exceeds the router's limit of {max}",
                    msg.name(),
                    frame.len()
                )));
            }
        }
        Ok(frame)
    }

    /// Queues a control message at once (not counted against the send
    /// queue's bound): replies the reader task owes the router.
    fn send(&self, msg: &Message) -> Result<(), Error> {
        let frame = self.encode(msg)?;
        self.tx
            .send(frame)
            .map_err(|_| Error::Closed(self.close_info()))
    }

    /// Queues a message, waiting for room in the bounded send queue.
    async fn send_async(&self, msg: &Message) -> Result<(), Error> {
        let frame = self.encode(msg)?;
        self.tx
            .send_async(frame)
            .await
            .map_err(|_| Error::Closed(self.close_info()))
    }

    /// Sends a request and waits for the router's reply to it.
    async fn request(&self, msg: Message, id: u64, action: Action) -> Result<Message, Error> {
        let frame = self.encode(&msg)?;
        let (reply, rx) = oneshot::channel();
        {
            let mut st = lock(&self.state);
            if let Some(info) = &st.closed {
                return Err(Error::Closed(info.clone()));
            }
            st.pending.insert(id, Pending { reply, action });
        }
        if self.tx.send_async(frame).await.is_err() {
            lock(&self.state).pending.remove(&id);
            return Err(Error::Closed(self.close_info()));
        }
        rx.await.map_err(|_| Error::Closed(self.close_info()))
    }

    /// Marks the session closed, fails pending requests, ends event streams
    /// and closes the transport. Idempotent.
    fn finish(&self, info: CloseInfo) {
        let (pending, subs, regs, leaving, running) = {
            let mut st = lock(&self.state);
            if st.closed.is_some() {
                return;
            }
            st.closed = Some(info.clone());
            (
                std::mem::take(&mut st.pending),
                std::mem::take(&mut st.subs),
                std::mem::take(&mut st.regs),
                st.leaving.take(),
                std::mem::take(&mut st.running),
            )
        };
        // Dropped outside the lock: dropping senders wakes waiters (and
        // cancels running handlers: their answers could not be sent).
        drop((pending, subs, regs, leaving, running));
        self.closed_tx.send_replace(Some(info));
        let _ = self.tx.close();
    }

    async fn send_invocation_result(&self, request: u64, result: Result<Payload, WampError>) {
        let msg = match result {
            Ok(payload) => Message::Yield {
                request,
                options: Dict::new(),
                payload,
            },
            Err(e) => invocation_error(request, e),
        };
        if let Err(e) = self.send_async(&msg).await {
            if matches!(e, Error::Send(_)) {
                let _ = self.send(&invocation_error(
                    request,
                    WampError::with_message(SEND_FAILED, e.to_string()),
                ));
            }
        }
    }

    /// Handles one message from the router; `Some` ends the session.
    async fn dispatch(self: &Arc<Self>, msg: Message) -> Option<CloseInfo> {
        match msg {
            Message::Event {
                subscription,
                publication,
                details,
                payload,
            } => {
                let sinks = lock(&self.state).subs.get(&subscription).cloned();
                if let Some(sinks) = sinks {
                    let ev = Event {
                        subscription,
                        publication,
                        details,
                        payload,
                    };
                    if let Some((last, rest)) = sinks.split_last() {
                        for s in rest {
                            deliver(s, ev.clone()).await;
                        }
                        deliver(last, ev).await;
                    }
                }
                None
            }
            Message::Invocation {
                request,
                registration,
                details,
                payload,
            } => {
                let handler = lock(&self.state).regs.get(&registration).cloned();
                match handler {
                    None => {
                        let _ = self.send(&invocation_error(
                            request,
                            WampError::new("wamp.error.no_such_registration"),
                        ));
                    }
                    Some(h) => {
                        let mut fut = h(Invocation {
                            request,
                            registration,
                            details,
                            payload,
                        });
                        // Run the handler inline as far as it goes; only a
                        // handler that actually waits gets its own task.
                        let first =
                            std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
                        match first {
                            // Waits for room in the send queue: a callee
                            // that cannot send its YIELDs stops taking
                            // INVOCATIONs.
                            Poll::Ready(result) => {
                                self.send_invocation_result(request, result).await
                            }
                            Poll::Pending => {
                                let shared = Arc::clone(self);
                                let (cancel_tx, cancel_rx) = oneshot::channel();
                                lock(&self.state).running.insert(request, cancel_tx);
                                tokio::spawn(async move {
                                    // INTERRUPT drops the handler's future
                                    // (a command it runs is killed with it).
                                    let result = tokio::select! {
                                        r = fut => r,
                                        _ = cancel_rx => Err(WampError::with_message(
                                            CANCELED,
                                            "the call was canceled",
                                        )),
                                    };
                                    lock(&shared.state).running.remove(&request);
                                    shared.send_invocation_result(request, result).await;
                                });
                            }
                        }
                    }
                }
                None
            }
            Message::Interrupt { request, .. } => {
                // Answered with wamp.error.canceled by the handler's task
                // (the router waits for it in mode "kill").
                let cancel = lock(&self.state).running.remove(&request);
                if let Some(tx) = cancel {
                    let _ = tx.send(());
                }
                None
            }
            Message::Result {
                request, details, ..
            } if details.get_bool("progress") == Some(true) => {
                let _ = request;
                None
            }
            Message::Published { request, .. }
            | Message::Subscribed { request, .. }
            | Message::Unsubscribed { request }
            | Message::Result { request, .. }
            | Message::Registered { request, .. }
            | Message::Unregistered { request, .. }
            | Message::Error { request, .. } => {
                let pending = {
                    let mut st = lock(&self.state);
                    let p = st.pending.remove(&request);
                    if let Some(p) = &p {
                        apply(&mut st, &p.action, &msg);
                    }
                    p
                };
                if let Some(p) = pending {
                    let _ = p.reply.send(msg);
                }
                None
            }
            Message::Goodbye { details, reason } => {
                let leaving = lock(&self.state).leaving.take();
                let message = details.get_str("message").map(str::to_owned);
                let mut info = CloseInfo {
                    reason,
                    message,
                    details,
                    by_router: true,
                };
                match leaving {
                    Some(tx) => {
                        info.by_router = false;
                        let _ = tx.send(info.clone());
                    }
                    None => {
                        let _ = self.send(&Message::Goodbye {
                            details: Dict::new(),
                            reason: "wamp.close.goodbye_and_out".into(),
                        });
                    }
                }
                Some(info)
            }
            Message::Abort { details, reason } => Some(CloseInfo {
                message: details.get_str("message").map(str::to_owned),
                reason,
                details,
                by_router: true,
            }),
            other => {
                let text = format!("unexpected {} in an established session", other.name());
                let _ = self.send(&Message::Abort {
                    details: Dict::new().with("message", text.clone()),
                    reason: "wamp.error.protocol_violation".into(),
                });
                Some(CloseInfo {
                    reason: "wamp.error.protocol_violation".into(),
                    message: Some(text),
                    details: Dict::new(),
                    by_router: false,
                })
            }
        }
    }
}

async fn deliver(sink: &EventSink, ev: Event) {
    match sink {
        EventSink::Channel(tx) => {
            let _ = tx.send(ev);
        }
        // Waits while the subscription is full (a dropped one fails at once).
        EventSink::Bounded(tx) => {
            let _ = tx.send(ev).await;
        }
        EventSink::Callback(f) => f(ev),
    }
}

/// Applies the bookkeeping of a reply (under the state lock, so that no
/// EVENT/INVOCATION following the reply can miss it).
fn apply(st: &mut State, action: &Action, reply: &Message) {
    match (action, reply) {
        (Action::AddSink(sink), Message::Subscribed { subscription, .. }) => {
            let mut sinks: Vec<EventSink> = st
                .subs
                .get(subscription)
                .map(|s| s.to_vec())
                .unwrap_or_default();
            sinks.push(sink.clone());
            st.subs.insert(*subscription, sinks.into());
        }
        (Action::AddHandler(h), Message::Registered { registration, .. }) => {
            st.regs.insert(*registration, h.clone());
        }
        (Action::RemoveSubscription(id), Message::Unsubscribed { .. }) => {
            st.subs.remove(id);
        }
        (Action::RemoveRegistration(id), Message::Unregistered { .. }) => {
            st.regs.remove(id);
        }
        _ => {}
    }
}

fn invocation_error(request: u64, e: WampError) -> Message {
    Message::Error {
        request_type: code::INVOCATION,
        request,
        details: e.details,
        error: e.uri,
        payload: payload(e.args, e.kwargs),
    }
}

fn unexpected(msg: &Message, wanted: &str) -> Error {
    Error::Protocol(format!("expected {wanted}, got {}", msg.name()))
}

/// The error for a reply that is not the `wanted` acknowledgement: the
/// router's ERROR, or a protocol error for anything else.
fn refusal(reply: Message, wanted: &str) -> Error {
    match reply {
        Message::Error {
            error,
            details,
            payload,
            ..
        } => Error::Wamp(wamp_error(error, details, &payload)),
        other => unexpected(&other, wanted),
    }
}

/// Sends a PING whenever the router has been silent for `interval`, and
/// wakes the reader when it has been silent for `interval + timeout`.
async fn keepalive(shared: std::sync::Weak<Shared>, interval: Duration, timeout: Duration) {
    let step = (interval / 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut pinged_at: Option<Duration> = None;
    loop {
        tokio::time::sleep(step).await;
        let Some(s) = shared.upgrade() else { return };
        if lock(&s.state).closed.is_some() {
            return;
        }
        if s.busy.load(std::sync::atomic::Ordering::Relaxed) {
            continue;
        }
        let silent = s.silent_for();
        if silent > interval + timeout {
            s.silent.notify_one();
            return;
        }
        if silent < interval {
            pinged_at = None;
        } else if pinged_at.is_none_or(|at| silent >= at + interval) {
            // Once per interval of silence.
            pinged_at = Some(silent);
            let _ =
                s.tx.send_outgoing(Outgoing::Ping(bytes::Bytes::from_static(b"switchyard")));
        }
    }
}

async fn reader(shared: Arc<Shared>, mut rx: FrameReceiver) {
    let info = loop {
        let incoming = tokio::select! {
            r = rx.recv_any() => r,
            // The keepalive found the router silent: the frame being read,
            // if any, goes with the connection.
            _ = shared.silent.notified() => {
                let _ = shared.tx.close();
                break CloseInfo {
                    reason: TRANSPORT_LOST.into(),
                    message: Some(format!(
                        "the router was silent for {} ms (ping_interval + ping_timeout)",
                        shared.silent_for().as_millis()
                    )),
                    details: Dict::new(),
                    by_router: false,
                };
            }
        };
        let frame = match incoming {
            Ok(Incoming::Message(f) | Incoming::Text(f) | Incoming::Binary(f)) => {
                shared.heard();
                f
            }
            Ok(Incoming::Ping(_) | Incoming::Pong(_)) => {
                shared.heard();
                continue;
            }
            Err(e) => {
                break CloseInfo {
                    reason: TRANSPORT_LOST.into(),
                    message: Some(e.to_string()),
                    details: Dict::new(),
                    by_router: true,
                }
            }
        };
        let msg = match Message::decode(shared.ser, &frame) {
            Ok(m) => m,
            Err(e) => {
                let text = format!("cannot decode a message from the router: {e}");
                let _ = shared.send(&Message::Abort {
                    details: Dict::new().with("message", text.clone()),
                    reason: "wamp.error.protocol_violation".into(),
                });
                break CloseInfo {
                    reason: "wamp.error.protocol_violation".into(),
                    message: Some(text),
                    details: Dict::new(),
                    by_router: false,
                };
            }
        };
        shared
            .busy
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let done = shared.dispatch(msg).await;
        shared.heard();
        shared
            .busy
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if let Some(info) = done {
            break info;
        }
    };
    shared.finish(info);
}

impl Session {
    /// Connects to `url` (`ws://host:port/path`, `rs://host:port`,
    /// `tcp://host:port`, `unix:/path`) and joins `realm` with HELLO
    /// announcing the publisher, subscriber, caller and callee roles.
    /// An ABORT reply becomes [`Error::Abort`] (its reason and
    /// `Details.message`).
    pub async fn connect(url: &str, realm: &str, serializer: Serializer) -> Result<Session, Error> {
        Session::connect_with(url, realm, SessionOptions::new(serializer)).await
    }

    /// [`Session::connect`] with options.
    pub async fn connect_with(
        url: &str,
        realm: &str,
        opts: SessionOptions,
    ) -> Result<Session, Error> {
        let timeout = opts.timeout;
        let conn = tokio::time::timeout(timeout, transport::connect(url, opts.transport.clone()))
            .await
            .map_err(|_| Error::Timeout(format!("connecting to {url}")))??;
        Session::join(conn, realm, opts).await
    }

    /// Joins `realm` over an already connected transport.
    pub async fn join(
        conn: Connection,
        realm: &str,
        opts: SessionOptions,
    ) -> Result<Session, Error> {
        let max_len = conn.max_frame_len();
        let Connection {
            sender,
            mut receiver,
            serializer,
            ..
        } = conn;
        let mut details = Dict::new()
            .with(
                "agent",
                concat!("switchyard-client/", env!("CARGO_PKG_VERSION")),
            )
            .with("roles", default_roles());
        for (k, v) in opts.details.0.iter() {
            details.insert(k.clone(), v.clone());
        }
        let hello = Message::Hello {
            realm: realm.to_owned(),
            details,
        };
        let send = |m: &Message| -> Result<(), Error> {
            sender.send(m.encode(serializer)?)?;
            Ok(())
        };
        send(&hello)?;
        let handshake = async {
            loop {
                let frame = receiver.recv().await?;
                match Message::decode(serializer, &frame)? {
                    Message::Welcome { session, details } => return Ok((session, details)),
                    Message::Abort { details, reason } => {
                        return Err(Error::Abort {
                            message: details.get_str("message").map(str::to_owned),
                            reason,
                            details,
                        })
                    }
                    Message::Challenge { method, extra } => {
                        let Some(answer) = &opts.on_challenge else {
                            return Err(Error::Protocol(format!(
                                "router sent CHALLENGE for {method} and no challenge handler is set"
                            )));
                        };
                        let (signature, extra) =
                            answer(&method, &extra).map_err(Error::Protocol)?;
                        send(&Message::Authenticate { signature, extra })?;
                    }
                    other => return Err(unexpected(&other, "WELCOME or ABORT")),
                }
            }
        };
        let result = tokio::time::timeout(opts.timeout, handshake).await;
        let (id, welcome) = match result {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                let _ = sender.close();
                return Err(e);
            }
            Err(_) => {
                let _ = sender.close();
                return Err(Error::Timeout(format!(
                    "waiting for WELCOME from realm {realm}"
                )));
            }
        };
        let (closed_tx, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            tx: sender,
            ser: serializer,
            max_len,
            ids: IdSequence::new(),
            state: Mutex::new(State::default()),
            closed_tx,
            last_heard: std::sync::atomic::AtomicU64::new(0),
            born: tokio::time::Instant::now(),
            silent: tokio::sync::Notify::new(),
            busy: std::sync::atomic::AtomicBool::new(false),
        });
        if !opts.ping_interval.is_zero() {
            tokio::spawn(keepalive(
                Arc::downgrade(&shared),
                opts.ping_interval,
                opts.ping_timeout,
            ));
        }
        let reader = tokio::spawn(reader(Arc::clone(&shared), receiver));
        Ok(Session {
            inner: Arc::new(Handle {
                shared,
                reader,
                id,
                realm: realm.to_owned(),
                details: welcome,
                timeout: opts.timeout,
                event_queue: opts.event_queue,
            }),
        })
    }

    /// The session id from WELCOME.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The realm joined.
    pub fn realm(&self) -> &str {
        &self.inner.realm
    }

    /// WELCOME.Details (router roles, authid, authrole...).
    pub fn welcome_details(&self) -> &Dict {
        &self.inner.details
    }

    /// The serializer in use.
    pub fn serializer(&self) -> Serializer {
        self.inner.shared.ser
    }

    /// The raw frame sender of the connection, to send hand-made (even
    /// malformed) frames inside an established session.
    pub fn sender(&self) -> FrameSender {
        self.inner.shared.tx.clone()
    }

    /// Sends a message as is (no request bookkeeping: replies to it are
    /// ignored unless they match a pending request).
    pub fn send_message(&self, msg: &Message) -> Result<(), Error> {
        self.inner.shared.send(msg)
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        lock(&self.inner.shared.state).closed.is_some()
    }

    /// Waits until the session ends (GOODBYE or ABORT from the router, lost
    /// connection, or [`Session::leave`]) and tells why.
    pub async fn closed(&self) -> CloseInfo {
        let mut rx = self.inner.shared.closed_tx.subscribe();
        let r = rx.wait_for(Option::is_some).await;
        match r {
            Ok(v) => v.clone().unwrap_or_else(|| self.inner.shared.close_info()),
            Err(_) => self.inner.shared.close_info(),
        }
    }

    /// Publishes `args`/`kwargs` to `topic`. With `acknowledge`, waits for
    /// PUBLISHED and returns the publication id; otherwise returns `None` as
    /// soon as the PUBLISH is queued.
    pub async fn publish(
        &self,
        topic: &str,
        args: Vec<Value>,
        kwargs: Dict,
        acknowledge: bool,
    ) -> Result<Option<u64>, Error> {
        let options = if acknowledge {
            Dict::new().with("acknowledge", true)
        } else {
            Dict::new()
        };
        self.publish_with(topic, options, payload(args, kwargs))
            .await
    }

    /// Publishes with explicit PUBLISH.Options and a ready payload (see
    /// [`payload`] and [`raw_payload`]). Waits for PUBLISHED when
    /// `options.acknowledge` is true.
    pub async fn publish_with(
        &self,
        topic: &str,
        options: Dict,
        payload: Payload,
    ) -> Result<Option<u64>, Error> {
        let shared = &self.inner.shared;
        let acknowledge = options.get_bool("acknowledge") == Some(true);
        let request = shared.ids.next();
        let msg = Message::Publish {
            request,
            options,
            topic: topic.to_owned(),
            payload,
        };
        if !acknowledge {
            if let Some(info) = &lock(&shared.state).closed {
                return Err(Error::Closed(info.clone()));
            }
            shared.send_async(&msg).await?;
            return Ok(None);
        }
        match shared.request(msg, request, Action::None).await? {
            Message::Published { publication, .. } => Ok(Some(publication)),
            other => Err(refusal(other, "PUBLISHED")),
        }
    }

    /// Subscribes to `topic` (exact match); events arrive on the returned
    /// [`Subscription`].
    pub async fn subscribe(&self, topic: &str) -> Result<Subscription, Error> {
        self.subscribe_with(topic, Dict::new()).await
    }

    /// Subscribes with SUBSCRIBE.Options (e.g. `match: "prefix"`).
    pub async fn subscribe_with(&self, topic: &str, options: Dict) -> Result<Subscription, Error> {
        let (sink, events) = match self.inner.event_queue {
            None => {
                let (tx, rx) = mpsc::unbounded_channel();
                (EventSink::Channel(tx), EventReceiver::Unbounded(rx))
            }
            Some(n) => {
                let (tx, rx) = mpsc::channel(n.max(1));
                (EventSink::Bounded(tx), EventReceiver::Bounded(rx))
            }
        };
        let id = self.subscribe_sink(topic, options, sink).await?;
        Ok(Subscription { id, events })
    }

    /// Subscribes and hands every event to `tx`, waiting while it is full
    /// (so a slow consumer holds the connection's reader back, as a bounded
    /// [`Subscription`] does). Several subscriptions, on this session or a
    /// later one, may share `tx`. Returns the subscription id.
    pub async fn subscribe_into(
        &self,
        topic: &str,
        options: Dict,
        tx: mpsc::Sender<Event>,
    ) -> Result<u64, Error> {
        self.subscribe_sink(topic, options, EventSink::Bounded(tx))
            .await
    }

    /// Subscribes and calls `f` for every event, inline in the connection's
    /// reader task (no channel, no task switch). `f` must be quick and must
    /// not block. Returns the subscription id.
    pub async fn subscribe_callback<F>(
        &self,
        topic: &str,
        options: Dict,
        f: F,
    ) -> Result<u64, Error>
    where
        F: Fn(Event) + Send + Sync + 'static,
    {
        self.subscribe_sink(topic, options, EventSink::Callback(Arc::new(f)))
            .await
    }

    async fn subscribe_sink(
        &self,
        topic: &str,
        options: Dict,
        sink: EventSink,
    ) -> Result<u64, Error> {
        let shared = &self.inner.shared;
        let request = shared.ids.next();
        let msg = Message::Subscribe {
            request,
            options,
            topic: topic.to_owned(),
        };
        match shared.request(msg, request, Action::AddSink(sink)).await? {
            Message::Subscribed { subscription, .. } => Ok(subscription),
            other => Err(refusal(other, "SUBSCRIBED")),
        }
    }

    /// Unsubscribes `subscription`. On UNSUBSCRIBED, the event streams of
    /// every local [`Subscription`] with this id end (subscribing twice to a
    /// topic gives the same id, and both streams receive every event).
    pub async fn unsubscribe(&self, subscription: u64) -> Result<(), Error> {
        let shared = &self.inner.shared;
        let request = shared.ids.next();
        let msg = Message::Unsubscribe {
            request,
            subscription,
        };
        let action = Action::RemoveSubscription(subscription);
        match shared.request(msg, request, action).await? {
            Message::Unsubscribed { .. } => Ok(()),
            other => Err(refusal(other, "UNSUBSCRIBED")),
        }
    }

    /// Registers `procedure` with a handler receiving decoded `(args,
    /// kwargs)` and returning `Ok((args, kwargs))` for YIELD or
    /// `Err((error_uri, args, kwargs))` for ERROR.
    ///
    /// Handlers run concurrently: each invocation's future is first polled
    /// inline in the connection's reader task and, if it has to wait, moved
    /// to a task of its own. Long CPU-bound work belongs in
    /// `tokio::task::spawn_blocking`. INTERRUPT is ignored (the handler runs
    /// to completion).
    pub async fn register<F, Fut>(&self, procedure: &str, handler: F) -> Result<Registration, Error>
    where
        F: Fn(Vec<Value>, Dict) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.register_with(procedure, Dict::new(), handler).await
    }

    /// [`Session::register`] with REGISTER.Options (e.g. `invoke: "roundrobin"`,
    /// `match: "prefix"`).
    pub async fn register_with<F, Fut>(
        &self,
        procedure: &str,
        options: Dict,
        handler: F,
    ) -> Result<Registration, Error>
    where
        F: Fn(Vec<Value>, Dict) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.register_raw(procedure, options, move |inv: Invocation| {
            let decoded = inv.args().and_then(|a| Ok((a, inv.kwargs()?)));
            let handler = Arc::clone(&handler);
            async move {
                let (args, kwargs) = decoded.map_err(|e| {
                    WampError::with_message("wamp.error.invalid_argument", e.to_string())
                })?;
                match handler(args, kwargs).await {
                    Ok((args, kwargs)) => Ok(payload(args, kwargs)),
                    Err((uri, args, kwargs)) => Err(WampError {
                        uri,
                        args,
                        kwargs,
                        details: Dict::new(),
                    }),
                }
            }
        })
        .await
    }

    /// Registers with a handler that sees the whole [`Invocation`] (details,
    /// raw payload) and returns the YIELD payload or the ERROR.
    pub async fn register_raw<F, Fut>(
        &self,
        procedure: &str,
        options: Dict,
        handler: F,
    ) -> Result<Registration, Error>
    where
        F: Fn(Invocation) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Payload, WampError>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |inv| Box::pin(handler(inv)));
        let shared = &self.inner.shared;
        let request = shared.ids.next();
        let msg = Message::Register {
            request,
            options,
            procedure: procedure.to_owned(),
        };
        match shared
            .request(msg, request, Action::AddHandler(handler))
            .await?
        {
            Message::Registered { registration, .. } => Ok(Registration { id: registration }),
            other => Err(refusal(other, "REGISTERED")),
        }
    }

    /// Unregisters `registration`.
    pub async fn unregister(&self, registration: u64) -> Result<(), Error> {
        let shared = &self.inner.shared;
        let request = shared.ids.next();
        let msg = Message::Unregister {
            request,
            registration,
        };
        let action = Action::RemoveRegistration(registration);
        match shared.request(msg, request, action).await? {
            Message::Unregistered { .. } => Ok(()),
            other => Err(refusal(other, "UNREGISTERED")),
        }
    }

    /// Calls `procedure` and returns the RESULT's decoded `(args, kwargs)`,
    /// or the ERROR as a [`CallError`] (local failures use the
    /// `switchyard.client.*` URIs of [`crate::error`]).
    pub async fn call(
        &self,
        procedure: &str,
        args: Vec<Value>,
        kwargs: Dict,
    ) -> Result<(Vec<Value>, Dict), CallError> {
        let r = self
            .call_with(procedure, Dict::new(), payload(args, kwargs))
            .await?;
        let args = r
            .args()
            .map_err(|e| WampError::with_message(crate::error::PROTOCOL_ERROR, e.to_string()))?;
        let kwargs = r
            .kwargs()
            .map_err(|e| WampError::with_message(crate::error::PROTOCOL_ERROR, e.to_string()))?;
        Ok((args, kwargs))
    }

    /// Calls with CALL.Options (e.g. `timeout`, `disclose_me`) and a ready
    /// payload; returns the raw RESULT. Progressive results (with
    /// `receive_progress: true`) are skipped: the final RESULT is returned.
    pub async fn call_with(
        &self,
        procedure: &str,
        options: Dict,
        payload: Payload,
    ) -> Result<CallResult, CallError> {
        let shared = &self.inner.shared;
        let request = shared.ids.next();
        let msg = Message::Call {
            request,
            options,
            procedure: procedure.to_owned(),
            payload,
        };
        match shared.request(msg, request, Action::None).await? {
            Message::Result {
                details, payload, ..
            } => Ok(CallResult { details, payload }),
            Message::Error {
                error,
                details,
                payload,
                ..
            } => Err(wamp_error(error, details, &payload)),
            other => Err(unexpected(&other, "RESULT").into()),
        }
    }

    /// Leaves the realm: sends GOODBYE (`wamp.close.close_realm`), waits for
    /// the router's GOODBYE and closes the connection. Returns the router's
    /// reply (normally `wamp.close.goodbye_and_out`).
    pub async fn leave(&self) -> Result<CloseInfo, Error> {
        self.leave_with("wamp.close.close_realm", Dict::new()).await
    }

    /// [`Session::leave`] with a chosen reason and details.
    pub async fn leave_with(&self, reason: &str, details: Dict) -> Result<CloseInfo, Error> {
        let shared = &self.inner.shared;
        let (tx, rx) = oneshot::channel();
        {
            let mut st = lock(&shared.state);
            if let Some(info) = &st.closed {
                return Err(Error::Closed(info.clone()));
            }
            st.leaving = Some(tx);
        }
        let goodbye = Message::Goodbye {
            details,
            reason: reason.to_owned(),
        };
        // The timeout covers waiting for room in the send queue too.
        let exchange = async {
            shared.send_async(&goodbye).await?;
            rx.await.map_err(|_| Error::Closed(shared.close_info()))
        };
        match tokio::time::timeout(self.inner.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => {
                shared.finish(CloseInfo {
                    reason: reason.to_owned(),
                    message: Some("no GOODBYE reply from the router".into()),
                    details: Dict::new(),
                    by_router: false,
                });
                Err(Error::Timeout("waiting for the router's GOODBYE".into()))
            }
        }
    }
}

impl From<TransportError> for WampError {
    fn from(e: TransportError) -> Self {
        WampError::with_message(crate::error::CONNECTION_LOST, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_leaves_out_empty_parts() {
        assert!(payload(vec![], Dict::new()).is_empty());
        let p = payload(vec![Value::UInt(1)], Dict::new());
        assert!(p.args.is_some() && p.kwargs.is_none());
        let p = payload(vec![], Dict::new().with("a", 1u64));
        assert!(p.args.is_some() && p.kwargs.is_some());
    }

    #[test]
    fn raw_payload_round_trips() {
        for ser in Serializer::ALL {
            let p = raw_payload(ser, &[Value::from("x"), Value::UInt(7)]);
            assert_eq!(
                decode_args(&p).ok(),
                Some(vec![Value::from("x"), Value::UInt(7)])
            );
            assert_eq!(decode_kwargs(&p).ok(), Some(Dict::new()));
        }
    }

    #[test]
    fn hello_announces_four_roles() {
        let roles = default_roles();
        for r in ["publisher", "subscriber", "caller", "callee"] {
            assert!(roles.get(r).is_some(), "{r}");
        }
    }
}
