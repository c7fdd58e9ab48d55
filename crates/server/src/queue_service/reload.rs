//! Reloading a realm's queues from the config file (SIGHUP, `switchyard
//! reload`; see `crate::reload`): `[[realm.queue]]` and
//! `[[realm.queue_binding]]`.
//!
//! The engine applies the queues ([`switchyard_queue::Queues::reconfigure`]):
//! new queues are created and get a dispatcher, changed ones take their new
//! configuration, queues declared at run time that the file now names are
//! adopted by it, and queues the file no longer names keep their jobs and
//! count as declared at run time (as after a restart). Nothing is deleted.
//! The topic bindings are swapped for the publications from then on, and
//! the HTTP targets the operator wrote are trusted for their queues.
//!
//! `[realm.queue_http]`, `[realm.outbound_http]` and `[realm.queue_limits]`
//! are read at startup only (the reload names them when they change).

use std::collections::HashSet;
use std::sync::Arc;

use switchyard_queue::QueueConfig;

use super::bindings::{Bindings, QueueBinding};
use super::{http_target, QueueService};

/// The first problem of `bindings`: a bound queue that does not exist or has
/// no default target. `target_of(q)`: `Some(has a target)` for a queue that
/// exists, `None` otherwise; `names`: the queues that exist (for the message).
pub(super) fn binding_problem(
    realm: &str,
    bindings: &[QueueBinding],
    target_of: impl Fn(&str) -> Option<bool>,
    names: &[String],
) -> Option<String> {
    for b in bindings {
        for q in &b.queues {
            match target_of(q) {
                Some(true) => {}
                Some(false) => {
                    return Some(format!(
                        "realm \"{realm}\": queue_binding on \"{}\" feeds queue \"{q}\", which has no default target: set its `target`",
                        b.topic
                    ))
                }
                None => {
                    return Some(format!(
                        "realm \"{realm}\": queue_binding on \"{}\" names queue \"{q}\", which is not declared (declared: {})",
                        b.topic,
                        if names.is_empty() { "none".to_string() } else { names.join(", ") }
                    ))
                }
            }
        }
    }
    None
}

/// A realm's queues as a reloaded config file declares them.
pub struct ReloadQueues {
    pub configs: Vec<QueueConfig>,
    pub bindings: Vec<QueueBinding>,
}

impl QueueService {
    /// What in `new` cannot be applied (the whole reload is then refused).
    pub fn reload_problems(&self, new: &ReloadQueues) -> Vec<String> {
        let realm = self.realm.name();
        let mut out = Vec::new();
        let reserved = crate::bridge::durable::RESERVED_PREFIX;
        for c in &new.configs {
            if c.name.starts_with(reserved) {
                out.push(format!(
                    "realm \"{realm}\": queue \"{}\": names starting with \"{reserved}\" are reserved for durable HTTP subscribers",
                    c.name
                ));
            }
            if let Err(e) = c.validate() {
                out.push(format!("realm \"{realm}\": queue \"{}\": {e}", c.name));
            }
        }
        // After the reload, a queue exists if the file declares it, or if
        // it exists now (a queue the file no longer names is kept).
        let mut names: Vec<String> = self.queues.names();
        names.extend(new.configs.iter().map(|c| c.name.clone()));
        names.sort();
        names.dedup();
        let target_of = |q: &str| match new.configs.iter().find(|c| c.name == q) {
            Some(c) => Some(c.target.is_some()),
            None => self.queues.config(q).ok().map(|c| c.target.is_some()),
        };
        if let Some(e) = binding_problem(realm, &new.bindings, target_of, &names) {
            out.push(e);
        }
        out
    }

    /// Applies `new` (checked with [`QueueService::reload_problems`]) and
    /// logs what changed.
    pub async fn reload(self: &Arc<Self>, new: ReloadQueues) -> Result<(), String> {
        let realm = self.realm.name().to_string();
        let mut configs = new.configs;
        configs.extend(self.subscriber_configs.iter().cloned());
        let urls = http_target::operator_urls(&configs);
        let done = self
            .queues
            .reconfigure(configs)
            .await
            .map_err(|e| format!("realm \"{realm}\": the queues were not reloaded: {e}"))?;
        self.http.set_operator_urls(urls);
        for q in &done.created {
            self.ensure_dispatcher(q);
            tracing::info!(realm = %realm, queue = %q, "reload: queue created");
        }
        for (q, fields) in &done.changed {
            tracing::info!(
                realm = %realm,
                queue = %q,
                changed = %fields.join(", "),
                "reload: queue configuration changed: new pushes, leases and failures follow it; queued jobs keep their target"
            );
        }
        for q in &done.adopted {
            tracing::info!(realm = %realm, queue = %q, "reload: queue declared at run time is now declared by the config file");
        }
        for q in &done.released {
            tracing::warn!(
                realm = %realm,
                queue = %q,
                "reload: queue no longer in the config file: it keeps its jobs and now counts as declared at run time (delete it with `switchyard queue delete {q}`, adding --force while it holds jobs)"
            );
        }
        let bound: HashSet<String> = new
            .bindings
            .iter()
            .flat_map(|b| b.queues.iter().cloned())
            .chain(self.subscribers.queues().map(str::to_string))
            .collect();
        *self.bound.write() = bound;
        self.set_bindings(new.bindings);
        Ok(())
    }

    /// Gives the publish hook `bindings`, setting the hook if there is none
    /// yet (and there is something for it to do).
    pub(super) fn set_bindings(self: &Arc<Self>, bindings: Vec<QueueBinding>) {
        let mut hook = self.bindings.lock();
        match &*hook {
            Some(h) => h.replace(bindings),
            None if bindings.is_empty() && self.subscribers.is_empty() => {}
            None => {
                let h = Arc::new(Bindings::new(self, bindings));
                if self.realm.set_publish_hook(h.clone()) {
                    *hook = Some(h);
                } else {
                    tracing::error!(
                        realm = self.realm.name(),
                        "the realm has a publish hook already: its queue bindings cannot be applied"
                    );
                }
            }
        }
    }
}
