//! The router: its realms, the connection count and shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use switchyard_proto::{errors, Dict, Message};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::realm::{Realm, RealmConfig};

/// Bounds on what a client may send before its session exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Largest message (HELLO, AUTHENTICATE, and on RawSocket any frame,
    /// PINGs included) before WELCOME.
    pub max_message: usize,
    /// Longest `HELLO.Details.authid`.
    pub max_authid: usize,
    /// Longest realm name (a URI).
    pub max_realm: usize,
    /// Most entries of `HELLO.Details.authmethods`.
    pub max_authmethods: usize,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        HandshakeLimits {
            max_message: 64 * 1024,
            max_authid: 256,
            max_realm: crate::realm::DEFAULT_MAX_URI_LENGTH,
            max_authmethods: 16,
        }
    }
}

pub struct Router {
    realms: HashMap<String, Arc<Realm>>,
    handshake: HandshakeLimits,
    metrics: Arc<Metrics>,
    connections: AtomicUsize,
    all_closed: Notify,
    shutting_down: AtomicBool,
    stopping: CancellationToken,
}

impl Router {
    pub fn new(realms: Vec<RealmConfig>) -> Arc<Router> {
        Router::with_limits(realms, HandshakeLimits::default())
    }

    /// A router whose clients are bounded by `handshake` before WELCOME.
    pub fn with_limits(realms: Vec<RealmConfig>, handshake: HandshakeLimits) -> Arc<Router> {
        Router::with_backplanes(realms, handshake, |_| None)
    }

    /// Like [`Router::with_limits`]; each realm hands what this node cannot
    /// finish alone to `backplane(realm name)` (None: a single node; see
    /// [`crate::backplane`]).
    pub fn with_backplanes(
        realms: Vec<RealmConfig>,
        handshake: HandshakeLimits,
        backplane: impl Fn(&str) -> Option<Arc<dyn crate::backplane::Backplane>>,
    ) -> Arc<Router> {
        let metrics = Arc::new(Metrics::default());
        let realms = realms
            .into_iter()
            .map(|c| {
                let b = backplane(&c.name);
                (
                    c.name.clone(),
                    Arc::new(Realm::with_backplane(c, metrics.clone(), b)),
                )
            })
            .collect();
        Arc::new(Router {
            realms,
            handshake,
            metrics,
            connections: AtomicUsize::new(0),
            all_closed: Notify::new(),
            shutting_down: AtomicBool::new(false),
            stopping: CancellationToken::new(),
        })
    }

    /// Counters of refusals and limits (Prometheus text via `render`).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// What a client may send before its session exists.
    pub fn handshake_limits(&self) -> &HandshakeLimits {
        &self.handshake
    }

    pub fn realm(&self, name: &str) -> Option<&Arc<Realm>> {
        self.realms.get(name)
    }

    pub fn realms(&self) -> impl Iterator<Item = &Arc<Realm>> {
        self.realms.values()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Cancelled when shutdown starts: transports close connections that
    /// have no session yet.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    pub(crate) fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn connection_closed(&self) {
        if self.connections.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.all_closed.notify_waiters();
        }
    }

    /// Open connections (sessions and connections still in their handshake).
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Sends every session GOODBYE `wamp.close.system_shutdown` and closes
    /// its transport once that is written. New sessions are refused.
    pub fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.stopping.cancel();
        let goodbye = Message::Goodbye {
            details: Dict::new().with("message", "the router is shutting down"),
            reason: errors::CLOSE_SYSTEM_SHUTDOWN.to_string(),
        };
        for realm in self.realms.values() {
            for s in realm.sessions() {
                s.send(&goodbye);
                s.peer.close_after_flush();
            }
        }
    }

    /// Waits until every connection has closed.
    pub async fn closed(&self) {
        loop {
            let notified = self.all_closed.notified();
            if self.connection_count() == 0 {
                return;
            }
            notified.await;
        }
    }
}
