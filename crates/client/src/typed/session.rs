//! The typed methods of [`Session`] and [`ReconnectingSession`]: call,
//! register, publish and subscribe with serde types instead of
//! `Vec<Value>`/`Dict`, by the rules of [`crate::typed`].
//!
//! Failures:
//! * a call's arguments that do not serialize: [`INVALID_ARGUMENT`], nothing
//!   is sent; a result that does not deserialize into `R`:
//!   [`INVALID_RESULT`], naming the procedure, the type and serde's message;
//! * a callee's handler is not run for arguments that do not deserialize
//!   into its `A`: the caller gets `wamp.error.invalid_argument` with the
//!   procedure and serde's message; a result of the handler that does not
//!   serialize answers [`INVALID_RESULT`];
//! * a typed subscription skips an event that does not deserialize, with a
//!   `tracing` warning (topic, publication id, serde's message): the
//!   handler only sees events of its type.

use std::any::type_name;
use std::future::Future;
use std::sync::Arc;

use switchyard_proto::{Dict, Payload};
use tokio::sync::{mpsc, oneshot};

use super::{FromPayload, ToPayload, ValueError};
use crate::error::{CallError, Error, WampError};
use crate::reconnect::ReconnectingSession;
use crate::session::{Event, Invocation, Registration, Session};

/// The URI of a typed call whose arguments do not serialize (nothing sent).
pub const INVALID_ARGUMENT: &str = "switchyard.client.invalid_argument";
/// The URI of a typed call whose result does not deserialize into the type
/// asked for (caller side), or whose handler's result does not serialize
/// (callee side, sent to the caller).
pub const INVALID_RESULT: &str = "switchyard.client.invalid_result";
/// What a typed callee answers to arguments that do not deserialize.
pub const WAMP_INVALID_ARGUMENT: &str = "wamp.error.invalid_argument";

/// How many events a typed subscription of a [`ReconnectingSession`] holds
/// while its handler is busy (then the connection's reader waits).
pub const TYPED_EVENT_QUEUE: usize = 256;

fn call_args(procedure: &str, args: &impl ToPayload) -> Result<Payload, CallError> {
    args.to_payload().map_err(|e| {
        WampError::with_message(
            INVALID_ARGUMENT,
            format!("{procedure}: the arguments do not serialize: {e}"),
        )
    })
}

fn call_result<R: FromPayload>(procedure: &str, payload: &Payload) -> Result<R, CallError> {
    R::from_payload(payload).map_err(|e| {
        WampError::with_message(
            INVALID_RESULT,
            format!(
                "{procedure}: the result does not deserialize into {}: {e}",
                type_name::<R>()
            ),
        )
    })
}

fn publish_args(topic: &str, args: &impl ToPayload) -> Result<Payload, Error> {
    args.to_payload()
        .map_err(|e| Error::Send(format!("{topic}: the event does not serialize: {e}")))
}

type TypedFuture = std::pin::Pin<Box<dyn Future<Output = Result<Payload, WampError>> + Send>>;

/// The raw handler of a typed registration: reads `A` (answering
/// `wamp.error.invalid_argument` without running `handler` when it does
/// not fit), runs `handler`, serializes its result.
fn typed_handler<A, R, F, Fut>(
    procedure: &str,
    handler: F,
) -> impl Fn(Invocation) -> TypedFuture + Send + Sync + 'static
where
    A: FromPayload + Send + 'static,
    R: ToPayload,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, CallError>> + Send + 'static,
{
    let procedure: Arc<str> = procedure.into();
    move |inv: Invocation| {
        let procedure = Arc::clone(&procedure);
        match A::from_payload(&inv.payload) {
            Err(e) => {
                let e = WampError::with_message(
                    WAMP_INVALID_ARGUMENT,
                    format!("{procedure}: invalid arguments: {e}"),
                );
                Box::pin(std::future::ready(Err(e)))
            }
            Ok(args) => {
                let fut = handler(args);
                Box::pin(async move {
                    fut.await?.to_payload().map_err(|e| {
                        WampError::with_message(
                            INVALID_RESULT,
                            format!("{procedure}: the result does not serialize: {e}"),
                        )
                    })
                })
            }
        }
    }
}

/// Runs `handler` on each event of `events` that fits `T`, one at a time,
/// in order; skips (and logs) the others. Ends with the stream.
async fn run_typed_subscription<T, F, Fut>(
    topic: String,
    mut events: impl futures_util::Stream<Item = Event> + Unpin,
    handler: F,
) where
    T: FromPayload,
    F: Fn(T) -> Fut,
    Fut: Future<Output = ()>,
{
    use futures_util::StreamExt;
    while let Some(ev) = events.next().await {
        match T::from_payload(&ev.payload) {
            Ok(v) => handler(v).await,
            Err(e) => skip(&topic, &ev, type_name::<T>(), &e),
        }
    }
}

fn skip(topic: &str, ev: &Event, ty: &str, e: &ValueError) {
    tracing::warn!(
        topic,
        publication = ev.publication,
        "typed subscription: event skipped, it does not deserialize into {ty}: {e}"
    );
}

impl Session {
    /// Calls `procedure` with typed arguments and reads the result as an
    /// `R` (rules: [`crate::typed`]). `R = ()` for a procedure that returns
    /// nothing. Errors: the router's or callee's ERROR, the local
    /// `switchyard.client.*` failures of [`Session::call`], and
    /// [`INVALID_ARGUMENT`] / [`INVALID_RESULT`].
    ///
    /// ```no_run
    /// # async fn demo(s: switchyard_client::Session) -> Result<(), switchyard_client::CallError> {
    /// let sum: u64 = s.call_typed("com.example.add", (2, 3)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn call_typed<R: FromPayload>(
        &self,
        procedure: &str,
        args: impl ToPayload,
    ) -> Result<R, CallError> {
        self.call_typed_with(procedure, Dict::new(), args).await
    }

    /// [`Session::call_typed`] with CALL.Options (e.g. `timeout`).
    pub async fn call_typed_with<R: FromPayload>(
        &self,
        procedure: &str,
        options: Dict,
        args: impl ToPayload,
    ) -> Result<R, CallError> {
        let payload = call_args(procedure, &args)?;
        let result = self.call_with(procedure, options, payload).await?;
        call_result(procedure, &result.payload)
    }

    /// Registers `procedure` with a handler taking typed arguments `A` and
    /// returning `Ok(R)` (YIELD) or a [`CallError`] (ERROR). Arguments that
    /// do not deserialize into `A` are answered with
    /// `wamp.error.invalid_argument` and serde's message; the handler does
    /// not run. Handlers run concurrently, as with [`Session::register`].
    pub async fn register_typed<A, R, F, Fut>(
        &self,
        procedure: &str,
        handler: F,
    ) -> Result<Registration, Error>
    where
        A: FromPayload + Send + 'static,
        R: ToPayload,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, CallError>> + Send + 'static,
    {
        self.register_typed_with(procedure, Dict::new(), handler)
            .await
    }

    /// [`Session::register_typed`] with REGISTER.Options.
    pub async fn register_typed_with<A, R, F, Fut>(
        &self,
        procedure: &str,
        options: Dict,
        handler: F,
    ) -> Result<Registration, Error>
    where
        A: FromPayload + Send + 'static,
        R: ToPayload,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, CallError>> + Send + 'static,
    {
        self.register_raw(procedure, options, typed_handler(procedure, handler))
            .await
    }

    /// Publishes a typed event (rules: [`crate::typed`]); as
    /// [`Session::publish`]. Arguments that do not serialize fail with
    /// [`Error::Send`] and nothing is sent.
    pub async fn publish_typed(
        &self,
        topic: &str,
        event: impl ToPayload,
        acknowledge: bool,
    ) -> Result<Option<u64>, Error> {
        let options = if acknowledge {
            Dict::new().with("acknowledge", true)
        } else {
            Dict::new()
        };
        self.publish_with(topic, options, publish_args(topic, &event)?)
            .await
    }

    /// Subscribes to `topic` and runs `handler` on every event that
    /// deserializes into `T`, one event at a time and in order, in a task of
    /// its own (spawn inside the handler for concurrency). An event that
    /// does not deserialize is skipped with a `tracing` warning. Returns the
    /// subscription id ([`Session::unsubscribe`] ends the task).
    pub async fn subscribe_typed<T, F, Fut>(&self, topic: &str, handler: F) -> Result<u64, Error>
    where
        T: FromPayload + Send + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.subscribe_typed_with(topic, Dict::new(), handler).await
    }

    /// [`Session::subscribe_typed`] with SUBSCRIBE.Options (e.g. `match`).
    pub async fn subscribe_typed_with<T, F, Fut>(
        &self,
        topic: &str,
        options: Dict,
        handler: F,
    ) -> Result<u64, Error>
    where
        T: FromPayload + Send + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let sub = self.subscribe_with(topic, options).await?;
        let id = sub.id();
        tokio::spawn(run_typed_subscription(topic.to_owned(), sub, handler));
        Ok(id)
    }
}

impl ReconnectingSession {
    /// [`Session::call_typed`] on the current session (waiting for a
    /// reconnect if there is none).
    pub async fn call_typed<R: FromPayload>(
        &self,
        procedure: &str,
        args: impl ToPayload,
    ) -> Result<R, Error> {
        let s = self.session().await?;
        Ok(s.call_typed(procedure, args).await?)
    }

    /// [`Session::register_typed`], now and after every reconnect (as
    /// [`ReconnectingSession::register_raw`]).
    pub async fn register_typed<A, R, F, Fut>(
        &self,
        procedure: &str,
        options: Dict,
        handler: F,
    ) -> Result<Registration, Error>
    where
        A: FromPayload + Send + 'static,
        R: ToPayload,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, CallError>> + Send + 'static,
    {
        self.register_raw(procedure, options, typed_handler(procedure, handler))
            .await
    }

    /// [`Session::publish_typed`] on the current session (waiting for a
    /// reconnect if there is none). An event published while the connection
    /// breaks may be lost (PubSub is at most once).
    pub async fn publish_typed(
        &self,
        topic: &str,
        event: impl ToPayload,
        acknowledge: bool,
    ) -> Result<Option<u64>, Error> {
        let s = self.session().await?;
        s.publish_typed(topic, event, acknowledge).await
    }

    /// [`Session::subscribe_typed`], now and after every reconnect (as
    /// [`ReconnectingSession::subscribe_into`], with a queue of
    /// [`TYPED_EVENT_QUEUE`] events). Returns the key for
    /// [`ReconnectingSession::unsubscribe`], after which the handler sees no
    /// further event.
    pub async fn subscribe_typed<T, F, Fut>(
        &self,
        topic: &str,
        options: Dict,
        handler: F,
    ) -> Result<u64, Error>
    where
        T: FromPayload + Send + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel(TYPED_EVENT_QUEUE);
        // Forgetting the subscription drops `stop`: the task ends and drops
        // `rx`, so no further event reaches the handler.
        let (stop, mut stopped) = oneshot::channel::<()>();
        let key = self
            .subscribe_intent(topic, options, tx, Some(stop))
            .await?;
        let events = futures_util::stream::poll_fn(move |cx| {
            if std::pin::Pin::new(&mut stopped).poll(cx).is_ready() {
                return std::task::Poll::Ready(None);
            }
            rx.poll_recv(cx)
        });
        tokio::spawn(run_typed_subscription(topic.to_owned(), events, handler));
        Ok(key)
    }
}
