//! Extension points the server plugs components into without the router
//! knowing them: a [`PublishHook`] sees every publication a realm accepts
//! (the durable queues' topic bindings use it to turn events into jobs).
//! The application's authenticator and authorizer reached another way than
//! WAMP is in [`crate::app_auth`].

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
