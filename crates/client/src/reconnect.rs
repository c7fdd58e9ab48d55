//! A session that comes back: [`ReconnectingSession`] keeps a WAMP session
//! up across router restarts and lost connections. When the session ends
//! (not by [`ReconnectingSession::leave`]) it connects again with an
//! exponential backoff and jitter, joins the realm again, and re-establishes
//! every subscription and registration made through it, so a long-running
//! subscriber, callee or queue worker needs no reconnect logic of its own.
//!
//! What it cannot restore: events published while it was away (PubSub is at
//! most once), and calls or invocations in flight when the connection broke
//! (a call fails with `switchyard.client.connection_lost`; the router fails
//! the invocation towards its caller, and a queue retries its job).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use switchyard_proto::{Dict, Payload, Value};
use tokio::sync::{mpsc, watch};

use crate::error::{CloseInfo, Error, WampError};
use crate::session::{Event, Invocation, Registration, Session};

/// How fast to try again.
#[derive(Debug, Clone)]
pub struct ReconnectOptions {
    /// The first wait after a session ends.
    pub initial: Duration,
    /// The longest wait between two attempts (the wait doubles up to it).
    pub max: Duration,
    /// Each wait is multiplied by a random factor in `1 ± jitter` (0..=1),
    /// so that many clients of one restarted router do not come back at once.
    pub jitter: f64,
    /// `false`: no reconnect; a lost session ends it ([`Status::Closed`]).
    pub enabled: bool,
}

impl Default for ReconnectOptions {
    fn default() -> Self {
        ReconnectOptions {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
            jitter: 0.3,
            enabled: true,
        }
    }
}

impl ReconnectOptions {
    /// The wait before attempt `attempt` (0-based) of a reconnect.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        let j = self.jitter.clamp(0.0, 1.0);
        base.mul_f64(1.0 - j + 2.0 * j * fastrand::f64())
    }
}

/// Where the session stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Joined; `reconnects` counts the sessions after the first.
    Connected {
        /// The WAMP session id.
        session: u64,
        /// Sessions joined after the first one.
        reconnects: u64,
    },
    /// The session ended; trying again.
    Reconnecting {
        /// Attempts made so far.
        attempt: u32,
        /// Why the session ended, or why the last attempt failed.
        error: String,
    },
    /// Left, or lost with reconnecting disabled: nothing more happens.
    Closed(CloseInfo),
}

type ConnectFuture = Pin<Box<dyn Future<Output = Result<Session, Error>> + Send>>;
/// Makes a new joined session (the same URL, realm and credentials each time).
pub type Connector = Arc<dyn Fn() -> ConnectFuture + Send + Sync>;
type HandlerFuture = Pin<Box<dyn Future<Output = Result<Payload, WampError>> + Send>>;
type Handler = Arc<dyn Fn(Invocation) -> HandlerFuture + Send + Sync>;

struct SubIntent {
    key: u64,
    topic: String,
    options: Dict,
    tx: mpsc::Sender<Event>,
}

struct RegIntent {
    key: u64,
    procedure: String,
    options: Dict,
    handler: Handler,
    /// The registration id on the current session.
    id: Option<u64>,
}

struct Inner {
    connector: Connector,
    options: ReconnectOptions,
    current: Mutex<Option<Session>>,
    status: watch::Sender<Status>,
    subs: Mutex<Vec<SubIntent>>,
    regs: Mutex<Vec<RegIntent>>,
    leaving: watch::Sender<bool>,
    next_key: AtomicU64,
}

fn lost() -> CloseInfo {
    CloseInfo {
        reason: crate::session::TRANSPORT_LOST.into(),
        message: None,
        details: Dict::new(),
        by_router: false,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A session that reconnects (see the module documentation). Cheap to clone.
#[derive(Clone)]
pub struct ReconnectingSession {
    inner: Arc<Inner>,
}

impl ReconnectingSession {
    /// Connects once with `connector` (its error is returned: a wrong URL or
    /// refused credentials fail at once), then keeps the session up.
    pub async fn start(
        connector: Connector,
        options: ReconnectOptions,
    ) -> Result<ReconnectingSession, Error> {
        let session = connector().await?;
        let (status, _) = watch::channel(Status::Connected {
            session: session.id(),
            reconnects: 0,
        });
        let (leaving, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            connector,
            options,
            current: Mutex::new(Some(session.clone())),
            status,
            subs: Mutex::new(Vec::new()),
            regs: Mutex::new(Vec::new()),
            leaving,
            next_key: AtomicU64::new(1),
        });
        tokio::spawn(keep_up(Arc::downgrade(&inner), session));
        Ok(ReconnectingSession { inner })
    }

    /// The current session, if joined now.
    pub fn current(&self) -> Option<Session> {
        lock(&self.inner.current).clone()
    }

    /// The current session, waiting for a reconnect if there is none;
    /// `Err(Error::Closed)` once it is closed for good.
    pub async fn session(&self) -> Result<Session, Error> {
        let mut rx = self.inner.status.subscribe();
        loop {
            if let Some(s) = self.current() {
                return Ok(s);
            }
            if let Status::Closed(info) = &*rx.borrow_and_update() {
                return Err(Error::Closed(info.clone()));
            }
            if rx.changed().await.is_err() {
                return Err(Error::Closed(lost()));
            }
        }
    }

    /// Watches the status (connected, reconnecting, closed).
    pub fn status(&self) -> watch::Receiver<Status> {
        self.inner.status.subscribe()
    }

    /// Waits until the session is closed for good.
    pub async fn closed(&self) -> CloseInfo {
        let mut rx = self.inner.status.subscribe();
        loop {
            if let Status::Closed(info) = &*rx.borrow_and_update() {
                return info.clone();
            }
            if rx.changed().await.is_err() {
                return lost();
            }
        }
    }

    /// Subscribes to `topic` now and after every reconnect; events go to
    /// `tx` (waiting while it is full). Returns a key for
    /// [`ReconnectingSession::unsubscribe`].
    pub async fn subscribe_into(
        &self,
        topic: &str,
        options: Dict,
        tx: mpsc::Sender<Event>,
    ) -> Result<u64, Error> {
        let session = self.session().await?;
        session
            .subscribe_into(topic, options.clone(), tx.clone())
            .await?;
        let key = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.subs).push(SubIntent {
            key,
            topic: topic.to_owned(),
            options,
            tx,
        });
        Ok(key)
    }

    /// Forgets a subscription (the events stop after the next reconnect at
    /// the latest; close the channel to stop them at once).
    pub fn unsubscribe(&self, key: u64) {
        lock(&self.inner.subs).retain(|s| s.key != key);
    }

    /// Registers `procedure` now and after every reconnect. Returns a key
    /// for [`ReconnectingSession::unregister`].
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
        let session = self.session().await?;
        let h = handler.clone();
        let reg = session
            .register_raw(procedure, options.clone(), move |inv| h(inv))
            .await?;
        let key = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.regs).push(RegIntent {
            key,
            procedure: procedure.to_owned(),
            options,
            handler,
            id: Some(reg.id),
        });
        Ok(Registration { id: key })
    }

    /// Unregisters (`registration` as [`ReconnectingSession::register_raw`]
    /// returned it): now, and it is not registered again.
    pub async fn unregister(&self, registration: Registration) -> Result<(), Error> {
        let id = {
            let mut regs = lock(&self.inner.regs);
            let id = regs
                .iter()
                .find(|r| r.key == registration.id)
                .and_then(|r| r.id);
            regs.retain(|r| r.key != registration.id);
            id
        };
        match (id, self.current()) {
            (Some(id), Some(s)) => s.unregister(id).await,
            _ => Ok(()),
        }
    }

    /// Calls `procedure` on the current session (waiting for a reconnect if
    /// there is none). A call cut by a lost connection is not repeated.
    pub async fn call(
        &self,
        procedure: &str,
        args: Vec<Value>,
        kwargs: Dict,
    ) -> Result<(Vec<Value>, Dict), Error> {
        let s = self.session().await?;
        Ok(s.call(procedure, args, kwargs).await?)
    }

    /// Stops reconnecting and leaves the realm.
    pub async fn leave(&self) -> Result<CloseInfo, Error> {
        let _ = self.inner.leaving.send(true);
        let current = lock(&self.inner.current).take();
        let result = match current {
            Some(s) => s.leave().await,
            None => Err(Error::Closed(lost())),
        };
        let info = match &result {
            Ok(info) => info.clone(),
            Err(_) => CloseInfo {
                reason: "wamp.close.goodbye_and_out".into(),
                message: None,
                details: Dict::new(),
                by_router: false,
            },
        };
        self.inner.status.send_replace(Status::Closed(info));
        result
    }
}

/// Subscribes and registers everything recorded on a new session.
async fn restore(inner: &Inner, session: &Session) -> Result<(), Error> {
    let subs: Vec<(String, Dict, mpsc::Sender<Event>)> = lock(&inner.subs)
        .iter()
        .map(|s| (s.topic.clone(), s.options.clone(), s.tx.clone()))
        .collect();
    for (topic, options, tx) in subs {
        session.subscribe_into(&topic, options, tx).await?;
    }
    let regs: Vec<(u64, String, Dict, Handler)> = lock(&inner.regs)
        .iter()
        .map(|r| {
            (
                r.key,
                r.procedure.clone(),
                r.options.clone(),
                r.handler.clone(),
            )
        })
        .collect();
    for (key, procedure, options, handler) in regs {
        let reg = session
            .register_raw(&procedure, options, move |inv| handler(inv))
            .await?;
        if let Some(r) = lock(&inner.regs).iter_mut().find(|r| r.key == key) {
            r.id = Some(reg.id);
        }
    }
    Ok(())
}

/// Watches the session; when it ends, connects again until it is back.
async fn keep_up(inner: Weak<Inner>, mut session: Session) {
    let mut reconnects = 0u64;
    loop {
        let Some(mut leaving) = inner.upgrade().map(|i| i.leaving.subscribe()) else {
            return;
        };
        let info = tokio::select! {
            info = session.closed() => info,
            _ = leaving.wait_for(|l| *l) => return,
        };
        let Some(i) = inner.upgrade() else { return };
        if *i.leaving.borrow() {
            return;
        }
        *lock(&i.current) = None;
        if !i.options.enabled {
            i.status.send_replace(Status::Closed(info));
            return;
        }
        let mut error = format!(
            "{}{}",
            info.reason,
            info.message.map(|m| format!(": {m}")).unwrap_or_default()
        );
        drop(i);
        let mut attempt = 0u32;
        session = loop {
            let Some(i) = inner.upgrade() else { return };
            i.status.send_replace(Status::Reconnecting {
                attempt,
                error: error.clone(),
            });
            let delay = i.options.delay(attempt);
            let connector = i.connector.clone();
            drop(i);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = leaving.wait_for(|l| *l) => return,
            }
            attempt = attempt.saturating_add(1);
            let s = match connector().await {
                Ok(s) => s,
                Err(e) => {
                    error = e.to_string();
                    continue;
                }
            };
            let Some(i) = inner.upgrade() else { return };
            match restore(&i, &s).await {
                Ok(()) => break s,
                Err(e) => {
                    // E.g. a registration the router still holds for the
                    // session it has not noticed is gone: try again later.
                    error = format!("re-establishing: {e}");
                    let _ = s.leave().await;
                }
            }
        };
        reconnects += 1;
        let Some(i) = inner.upgrade() else { return };
        if *i.leaving.borrow() {
            let _ = session.leave().await;
            return;
        }
        *lock(&i.current) = Some(session.clone());
        i.status.send_replace(Status::Connected {
            session: session.id(),
            reconnects,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_to_its_cap_with_jitter() {
        let o = ReconnectOptions {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            jitter: 0.5,
            enabled: true,
        };
        for _ in 0..100 {
            let d0 = o.delay(0);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(150));
            let d3 = o.delay(3);
            assert!(d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(1200));
            let d20 = o.delay(20);
            assert!(d20 >= Duration::from_millis(500) && d20 <= Duration::from_millis(1500));
        }
        let none = ReconnectOptions {
            jitter: 0.0,
            ..o.clone()
        };
        assert_eq!(none.delay(1), Duration::from_millis(200));
    }
}
