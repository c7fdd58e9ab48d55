//! A realm: a routing namespace with its own sessions, Broker and Dealer.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::Deserialize;
use switchyard_proto::uri::UriCheck;

use crate::broker::Broker;
use crate::dealer::Dealer;
use crate::session::Session;

/// Configuration of one realm.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealmConfig {
    /// The realm's URI, as clients name it in HELLO.
    pub name: String,
    /// URI rule for topics and procedures: "loose" (default) or "strict".
    #[serde(default)]
    pub uri_check: UriCheck,
}

pub struct Realm {
    pub config: RealmConfig,
    pub broker: Broker,
    pub dealer: Dealer,
    sessions: RwLock<HashMap<u64, Arc<Session>>>,
}

impl Realm {
    pub fn new(config: RealmConfig) -> Self {
        Realm {
            config,
            broker: Broker::default(),
            dealer: Dealer::default(),
            sessions: RwLock::new(HashMap::new()),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Adds a session; false if the id is taken (the caller draws another).
    pub(crate) fn join(&self, session: Arc<Session>) -> bool {
        let mut s = self.sessions.write();
        if s.contains_key(&session.id) {
            return false;
        }
        s.insert(session.id, session);
        true
    }

    /// Removes a session and everything it held.
    pub(crate) fn leave(&self, session: &Session) {
        session.mark_gone();
        self.sessions.write().remove(&session.id);
        self.broker.remove_session(session.id);
        self.dealer.remove_session(session.id);
    }

    pub fn sessions(&self) -> Vec<Arc<Session>> {
        self.sessions.read().values().cloned().collect()
    }
}
