//! Extension points the server plugs components into without the router
//! knowing them: a [`PublishHook`] sees every publication a realm accepts
//! (the durable queues' topic bindings use it to turn events into jobs);
//! an [`AppAuth`] is the application's authenticator and authorizer reached
//! another way than WAMP (the server's `authenticator_url` and
//! `authorizer_url`, over HTTP).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use switchyard_proto::Payload;

use crate::broker::Prepared;
use crate::session::{OpError, Session};

/// Resolves when the hook's work for one publication is durable: `Err` is
/// an error URI and a readable message for the publisher.
pub type HookFuture = Pin<Box<dyn Future<Output = Result<(), OpError>> + Send>>;

/// What a hook made of a publication.
pub enum HookOutcome {
    /// Nothing to do for this topic.
    Pass,
    /// Refuse the publication: it is not delivered, and an acknowledged
    /// publisher gets ERROR with this URI and message.
    Refuse(&'static str, String),
    /// Deliver it; the publisher's PUBLISHED waits for this future (and
    /// becomes ERROR if it fails).
    After(HookFuture),
}

/// Sees each publication of a realm after authorization, before delivery:
/// `publication` is its id, the details its EVENTs will carry and who may
/// receive them.
pub trait PublishHook: Send + Sync {
    fn on_publish(
        &self,
        publisher: &Arc<Session>,
        topic: &str,
        payload: &Payload,
        publication: &Prepared,
    ) -> HookOutcome;
}

/// The answer of the application about a login or an action: shaped as
/// the authenticator's (a role, or a dict with `role` and `authid`) or the
/// authorizer's (a bool, or a dict with `allow`, `disclose`, `cache`)
/// procedure's first result, or a failure shaped as the procedure's error
/// (`unserved`: the application did not answer at all). `Sync` because
/// the login and action checks that await it are (an implementation that
/// is not spawns a task and awaits its handle).
pub type AppFuture = Pin<
    Box<
        dyn Future<Output = Result<switchyard_proto::Value, crate::internal::CallFailure>>
            + Send
            + Sync,
    >,
>;

/// The application's own authenticator and authorizer, reached some other
/// way than a WAMP procedure (the server asks over HTTP: `authenticator_url`
/// and `authorizer_url`). The router treats its answers exactly as the
/// procedures' answers (the same rules on authids and roles).
pub trait AppAuth: Send + Sync {
    /// Whether it decides logins (tickets of authids without a static
    /// principal).
    fn authenticates(&self) -> bool;
    /// Whether it decides actions of sessions whose role is not listed.
    fn authorizes(&self) -> bool;
    /// A login: the realm, the authid claimed in HELLO, and `details`
    /// (`authmethod`, `ticket`, `transport`), as the procedure gets them.
    fn authenticate(&self, realm: &str, authid: &str, details: switchyard_proto::Dict)
        -> AppFuture;
    /// An action: the session's details (`session`, `authid`, `authrole`,
    /// `authmethod`, `authprovider`), the URI, the action and `options`
    /// (`match`).
    fn authorize(
        &self,
        session: switchyard_proto::Dict,
        uri: &str,
        action: &str,
        options: switchyard_proto::Dict,
    ) -> AppFuture;
    /// What logs name it by (e.g. the app's URL).
    fn name(&self) -> String;
}

/// An [`AppAuth`] in a realm's configuration (set by the server, never
/// read from a config file).
#[derive(Clone)]
pub struct AppAuthHandle(pub Arc<dyn AppAuth>);

impl std::fmt::Debug for AppAuthHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AppAuth({})", self.0.name())
    }
}
