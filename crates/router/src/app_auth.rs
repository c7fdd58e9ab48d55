//! The application's own authenticator and authorizer, reached some other
//! way than a WAMP procedure (the server asks over HTTP: `authenticator_url`
//! and `authorizer_url`, `[realm.http_auth]`). A file of its own, below the
//! authorizer: `authz.rs` and `auth/` hold an [`AppAuthHandle`], and this
//! file names nothing of the router but the failure type (`errors.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The answer of the application about a login or an action: shaped as
/// the authenticator's (a role, or a dict with `role` and `authid`) or the
/// authorizer's (a bool, or a dict with `allow`, `disclose`, `cache`)
/// procedure's first result, or a failure shaped as the procedure's error
/// (`unserved`: the application did not answer at all). `Sync` because
/// the login and action checks that await it are (an implementation that
/// is not spawns a task and awaits its handle).
pub type AppFuture = Pin<
    Box<
        dyn Future<Output = Result<switchyard_proto::Value, crate::errors::CallFailure>>
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
