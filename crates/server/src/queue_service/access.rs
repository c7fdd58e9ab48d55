//! Per-queue authorization of the `switchyard.queue.*` procedures.
//!
//! The Dealer authorizes the procedure (`call` on `switchyard.queue.push`);
//! this authorizes what it acts on: `call` on `switchyard.queue.<proc>.<queue>`
//! (e.g. `switchyard.queue.push.reports`), through the realm's Authorizer
//! like any other URI (static roles, then the dynamic authorizer), so the
//! ordinary exact / prefix / wildcard permissions scope queue access:
//! `switchyard.queue.push.reports` (exact) lets a role push into `reports`
//! only, `switchyard.queue..reports` (wildcard) gives it every procedure on
//! `reports`.
//!
//! Configs written before per-queue scopes keep working: a static role none
//! of whose permissions can match a URI under `switchyard.queue.<proc>.` keeps
//! the access the procedure permission gives it (on every queue). As soon as
//! one of its permissions names a queue URI of that procedure, the per-queue
//! decision is final. A role decided by the dynamic authorizer is always
//! asked about the per-queue URI.
//!
//! In a realm that authorizes, a queue name must be one URI component (no
//! `.`), or it could not be told apart from another queue's URI.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use switchyard_proto::errors;
use switchyard_router::authz::{Action, Decision};
use switchyard_router::session::OpError;
use switchyard_router::uri_index::MatchPolicy;
use switchyard_router::Session;

use super::QueueService;

/// Whether `queue` can stand as one component of a URI.
pub(super) fn is_component(queue: &str) -> bool {
    !queue.is_empty() && !queue.contains(|c: char| c == '.' || c == '#' || c.is_whitespace())
}

/// Refuses a name no queue can have (1..=128 characters of
/// `A-Z a-z 0-9 . _ -`) with `switchyard.queue.error.invalid_argument`,
/// before it is authorized, looked up or logged: the message and the log
/// carry at most its first 32 characters and its length, so a name of
/// megabytes is not echoed into every refusal, log line and authorizer call.
pub(super) fn check_name(procedure: &str, queue: &str) -> Result<(), OpError> {
    if switchyard_queue::config::validate_queue_name(queue).is_ok() {
        return Ok(());
    }
    let shown: String = queue.chars().take(32).collect();
    let more = if shown.len() < queue.len() {
        format!("... ({} bytes)", queue.len())
    } else {
        String::new()
    };
    Err((
        "switchyard.queue.error.invalid_argument",
        format!(
            "{}: {:?}{more} is not a queue name: 1..=128 characters of A-Z a-z 0-9 . _ -",
            procedure.trim_start_matches("switchyard.queue."),
            shown
        ),
    ))
}

/// Why `queue` cannot be declared in a realm that authorizes, if it cannot.
pub fn name_problem(queue: &str) -> Option<String> {
    (!is_component(queue)).then(|| {
        format!(
            "queue name {queue:?} contains '.': in a realm with roles or an authorizer a queue name must be one URI component, so that switchyard.queue.<procedure>.<queue> names it alone"
        )
    })
}

/// Whether a permission pattern could match some URI that starts with
/// `prefix` (which ends with '.'). `{authid}` and `{authrole}` count as
/// anything, so the answer errs on the side of yes.
fn may_reach(pattern: &str, policy: MatchPolicy, prefix: &str) -> bool {
    let compatible = |lead: &str| lead.starts_with(prefix) || prefix.starts_with(lead);
    match policy {
        MatchPolicy::Exact => match pattern.find('{') {
            None => pattern.starts_with(prefix),
            Some(i) => compatible(&pattern[..i]),
        },
        MatchPolicy::Prefix => compatible(&pattern[..pattern.find('{').unwrap_or(pattern.len())]),
        MatchPolicy::Wildcard => {
            let fixed: Vec<&str> = prefix.trim_end_matches('.').split('.').collect();
            let parts: Vec<&str> = pattern.split('.').collect();
            parts.len() > fixed.len()
                && fixed
                    .iter()
                    .zip(&parts)
                    .all(|(f, p)| p.is_empty() || p.contains('{') || p == f)
        }
    }
}

impl QueueService {
    /// Whether `caller`'s role scopes `procedure` per queue: it is decided
    /// dynamically, or one of its permissions can reach
    /// `<procedure>.<queue>`. Otherwise the procedure permission (checked by
    /// the Dealer) is all there is.
    fn scoped(&self, caller: &Session, procedure: &str) -> bool {
        let authz = self.realm.authz();
        let Some(role) = authz.role(&caller.authrole) else {
            return true;
        };
        let prefix = format!("{procedure}.");
        role.permissions
            .iter()
            .any(|p| may_reach(&p.uri, p.policy, &prefix))
    }

    /// Whether `caller` may call `procedure` on `queue` (no log line, no
    /// metric: `list` leaves out what the caller may not see).
    pub(super) async fn allowed(
        &self,
        caller: Option<&Arc<Session>>,
        procedure: &str,
        queue: &str,
    ) -> bool {
        self.decide_queue(caller, procedure, queue).await.is_ok()
    }

    /// Checks that `caller` may call `procedure` on `queue`: `call` on
    /// `<procedure>.<queue>`; `wamp.error.not_authorized` (logged and
    /// counted) otherwise. A name no queue can have is refused first, in
    /// every realm, without echoing it (see [`check_name`]).
    pub(super) async fn authorize_queue(
        &self,
        caller: Option<&Arc<Session>>,
        procedure: &str,
        queue: &str,
    ) -> Result<(), OpError> {
        check_name(procedure, queue)?;
        let Err(message) = self.decide_queue(caller, procedure, queue).await else {
            return Ok(());
        };
        self.realm
            .metrics
            .not_authorized
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            realm = self.realm.name(),
            procedure,
            queue = ?queue,
            "queue access refused: {message}"
        );
        Err((errors::NOT_AUTHORIZED, message))
    }

    async fn decide_queue(
        &self,
        caller: Option<&Arc<Session>>,
        procedure: &str,
        queue: &str,
    ) -> Result<(), String> {
        if !self.realm.authz().enabled() {
            return Ok(());
        }
        let Some(caller) = caller else {
            return Err(format!(
                "{procedure}: the caller is unknown, so its access to queue {queue:?} cannot be checked"
            ));
        };
        if let Some(why) = name_problem(queue) {
            return Err(format!("{procedure}: {why}"));
        }
        let uri = format!("{procedure}.{queue}");
        match self.realm.authorize(caller, Action::Call, &uri).await {
            Decision::Allow { .. } => Ok(()),
            Decision::Deny | Decision::Ask if !self.scoped(caller, procedure) => Ok(()),
            Decision::Deny | Decision::Ask => Err(format!(
                "authid \"{}\" (role \"{}\") may not call \"{uri}\": no access to queue \"{queue}\" with {procedure}",
                caller.authid, caller.authrole
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_permissions_reach_a_procedures_queues() {
        let p = "switchyard.queue.push.";
        assert!(may_reach(
            "switchyard.queue.push.reports",
            MatchPolicy::Exact,
            p
        ));
        assert!(!may_reach("switchyard.queue.push", MatchPolicy::Exact, p));
        assert!(!may_reach(
            "switchyard.queue.push_many.x",
            MatchPolicy::Exact,
            p
        ));
        assert!(may_reach("switchyard.queue.", MatchPolicy::Prefix, p));
        assert!(may_reach(
            "switchyard.queue.push.tenant-",
            MatchPolicy::Prefix,
            p
        ));
        assert!(may_reach("", MatchPolicy::Prefix, p));
        assert!(!may_reach("com.app.", MatchPolicy::Prefix, p));
        assert!(may_reach(
            "switchyard.queue..reports",
            MatchPolicy::Wildcard,
            p
        ));
        assert!(may_reach("switchyard..push.", MatchPolicy::Wildcard, p));
        assert!(!may_reach(
            "switchyard.queue.peek.",
            MatchPolicy::Wildcard,
            p
        ));
        assert!(!may_reach("switchyard.queue.", MatchPolicy::Wildcard, p));
        assert!(may_reach(
            "switchyard.queue.push.{authid}",
            MatchPolicy::Exact,
            p
        ));
        assert!(may_reach("switchyard.{authrole}", MatchPolicy::Exact, p));
        assert!(!is_component("a.b"));
        assert!(is_component("reports-2_x"));
    }
}
