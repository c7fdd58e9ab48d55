//! A cluster's claim of a joining session's id (the `Backplane` seam,
//! `claim_session`): WELCOME waits for it; an id another node holds makes
//! the session draw another; a claim not used is released. A backplane of
//! the test's own stands in for the cluster (the NATS one is tested in the
//! server crate, `cluster_meta.rs`).

mod support;

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;
use switchyard_proto::{errors, Message};
use switchyard_router::backplane::{Backplane, CallRequest, ClaimWait, Publication};
use switchyard_router::{Flow, HandshakeLimits, RealmConfig, Router, Session};

use support::{plain, Client};

/// Refuses the first `taken` claims ("held by another node"), records
/// every claim and release.
#[derive(Debug, Default)]
struct Claims {
    taken: Mutex<usize>,
    claimed: Mutex<Vec<u64>>,
    released: Mutex<Vec<u64>>,
}

impl Backplane for Claims {
    fn publish(&self, _: &Publication<'_>) {}

    fn call(&self, _: &CallRequest<'_>) -> bool {
        false
    }

    fn claim_session(&self, session: &Arc<Session>) -> Option<ClaimWait> {
        self.claimed.lock().push(session.id);
        let mut taken = self.taken.lock();
        let free = *taken == 0;
        *taken = taken.saturating_sub(1);
        Some(Box::pin(async move { free }))
    }

    fn session_left(&self, session: &Session) {
        self.released.lock().push(session.id);
    }
}

fn router(claims: &Arc<Claims>) -> Arc<Router> {
    let b: Arc<dyn Backplane> = claims.clone();
    Router::with_backplanes(
        vec![RealmConfig::new("realm1")],
        HandshakeLimits::default(),
        move |_| Some(b.clone()),
    )
}

async fn hello(c: &mut Client) -> Option<Message> {
    let flow = c.send(Message::Hello {
        realm: "realm1".into(),
        details: plain(),
    });
    assert_eq!(flow, Flow::Suspend, "WELCOME waits for the claim");
    assert!(c.recv().is_none(), "nothing before the claim is decided");
    c.conn.resume().await;
    c.recv()
}

#[tokio::test]
async fn welcome_waits_for_the_claim_and_an_id_held_elsewhere_is_drawn_again() {
    let claims = Arc::new(Claims::default());
    *claims.taken.lock() = 2;
    let r = router(&claims);
    let mut c = Client::connect(&r);
    let Some(Message::Welcome { session, .. }) = hello(&mut c).await else {
        panic!("expected WELCOME");
    };
    let claimed = claims.claimed.lock().clone();
    assert_eq!(
        claimed.len(),
        3,
        "two ids held elsewhere, the third claimed"
    );
    assert_eq!(claimed.iter().collect::<HashSet<_>>().len(), 3);
    assert_eq!(claimed[2], session);
    // It leaves: its id is released.
    c.send(Message::Goodbye {
        details: Default::default(),
        reason: errors::CLOSE_NORMAL.into(),
    });
    assert_eq!(*claims.released.lock(), vec![session]);
}

#[tokio::test]
async fn a_session_whose_ids_are_all_held_elsewhere_is_refused() {
    let claims = Arc::new(Claims::default());
    *claims.taken.lock() = 10;
    let r = router(&claims);
    let mut c = Client::connect(&r);
    match hello(&mut c).await {
        Some(Message::Abort { reason, .. }) => assert_eq!(reason, errors::CLOSE_SYSTEM_SHUTDOWN),
        other => panic!("expected ABORT, got {other:?}"),
    }
    assert_eq!(claims.claimed.lock().len(), 3, "three tries");
}
