//! Reloading the configuration without a restart (SIGHUP, or
//! `switchyard reload`, which sends it).
//!
//! The file the router was started with is read and validated again, as a
//! whole, by the same code as at startup ([`Config::load`]). An invalid
//! file is refused: every problem is logged with its line and key, and the
//! running configuration stays as it was. A valid one is applied to every
//! realm that exists ([`switchyard_router::Realm::reload`]): roles and
//! permissions, the authorizer procedure, principals (`[realm.auth]`) and
//! the realm's limits; and to every HTTP bridge (found by its address): its
//! signing keys (`[[bridge.key]]`). Sessions keep their authid and role; every check
//! from then on uses the new rules, and cached authorizer answers are
//! dropped.
//!
//! The application's authenticator and authorizer over HTTP
//! (`[realm.http_auth]`) and the JWT issuers (`[[realm.auth.jwt]]`, their
//! key files read again) are part of a realm's authentication and are
//! swapped with it: a login or an action is checked against one snapshot,
//! the rules and the app handle of the same file (the app's answer cache
//! starts empty).
//!
//! A realm's queues (`[[realm.queue]]`) and topic bindings
//! (`[[realm.queue_binding]]`) are applied too (`queue_service/reload.rs`):
//! new queues start, changed ones take their new configuration, and a queue
//! the file no longer names keeps its jobs (nothing is deleted by a reload).
//!
//! What is read only at startup (listeners, `[cluster]`, `[storage]`,
//! `[runtime]`, `[log]`, `[admin]`, `[outbound_tls]`, `[[process]]`,
//! `[limits]` but `max_uri_length`, `[[bridge]]` but its keys,
//! realms added or removed, a realm's `queue_http`, `outbound_http` and
//! `queue_limits`) is compared with the running
//! configuration: each changed key is logged as a warning naming it, and
//! keeps its running value until the router restarts.

use std::path::PathBuf;
use std::sync::Arc;

use switchyard_router::Router;

use crate::bridge::Bridge;
use crate::config::Config;
use crate::queue_service::{QueueService, ReloadQueues};

/// Where the running configuration came from (set by `main`, not read from
/// the file).
#[derive(Debug, Default, Clone)]
pub struct Origin {
    /// The file given with `--config` (None: the defaults; nothing to
    /// reload).
    pub path: Option<PathBuf>,
    /// `--data-dir`, which overrides `[storage] data_dir`.
    pub data_dir: Option<PathBuf>,
}

/// Re-reads the configuration file and applies it to a running router.
pub struct Reloader {
    router: Arc<Router>,
    bridges: Vec<Arc<Bridge>>,
    /// Each realm's queues.
    queues: Vec<Arc<QueueService>>,
    /// Which parts of the running configuration need a restart to change,
    /// as they were last loaded.
    fixed: Fixed,
    origin: Origin,
}

/// The parts of a configuration a reload does not apply, rendered to be
/// compared (each with the key a changed value is reported under).
#[derive(PartialEq)]
struct Fixed(Vec<(String, String)>);

impl Fixed {
    fn of(c: &Config) -> Fixed {
        let mut out = vec![
            (
                "[[listener]]".to_string(),
                format!(
                    "{:?}",
                    c.listeners.iter().map(|l| l.get_ref()).collect::<Vec<_>>()
                ),
            ),
            (
                "[cluster]".to_string(),
                format!("{:?}", c.cluster.as_ref().map(|c| c.get_ref())),
            ),
            ("[storage]".to_string(), format!("{:?}", c.storage)),
            (
                "[admin]".to_string(),
                format!("{:?}", c.admin.as_ref().map(|a| a.get_ref())),
            ),
            (
                "[outbound_tls]".to_string(),
                format!("{:?}", c.outbound_tls),
            ),
            (
                "[[process]]".to_string(),
                format!(
                    "{:?}",
                    c.processes.iter().map(|p| p.get_ref()).collect::<Vec<_>>()
                ),
            ),
            ("[runtime]".to_string(), format!("{:?}", c.runtime)),
            ("[log]".to_string(), format!("{:?}", c.log)),
            (
                "[[bridge]] (but its keys)".to_string(),
                format!(
                    "{:?}",
                    c.bridges
                        .iter()
                        .map(|b| {
                            let mut b = b.get_ref().clone();
                            b.keys.clear();
                            b
                        })
                        .collect::<Vec<_>>()
                ),
            ),
        ];
        // [limits] but max_uri_length, which the realms read at each check.
        let mut limits = c.limits.clone();
        limits.max_uri_length = 0;
        out.push(("[limits]".to_string(), format!("{limits:?}")));
        out.push((
            "[[realm]] (realms added or removed)".to_string(),
            format!(
                "{:?}",
                c.realms
                    .iter()
                    .map(|r| r.name.get_ref())
                    .collect::<Vec<_>>()
            ),
        ));
        // Queues on JetStream (cluster mode) are the owner node's, started once: a
        // reload does not change them.
        let replicated = c
            .cluster
            .as_ref()
            .is_some_and(|c| c.get_ref().queues.jetstream());
        for r in &c.realms {
            if replicated {
                out.push((
                    format!(
                        "realm \"{}\": [[realm.queue]] and queue_binding (queues on JetStream, [cluster.queues])",
                        r.name.get_ref()
                    ),
                    format!(
                        "{:?} {:?}",
                        r.queue.iter().map(|q| q.get_ref()).collect::<Vec<_>>(),
                        r.queue_binding
                            .iter()
                            .map(|b| b.get_ref())
                            .collect::<Vec<_>>()
                    ),
                ));
            }
            out.push((
                format!(
                    "realm \"{}\": queue_http, outbound_http, queue_limits",
                    r.name.get_ref()
                ),
                format!(
                    "{:?} {:?} {:?}",
                    r.queue_http, r.outbound_http, r.queue_limits
                ),
            ));
        }
        Fixed(out)
    }

    /// The keys whose value differs in `new`.
    fn changed(&self, new: &Fixed) -> Vec<String> {
        let mut out: Vec<String> = self
            .0
            .iter()
            .filter(|(key, value)| {
                new.0
                    .iter()
                    .find(|(k, _)| k == key)
                    .is_none_or(|(_, v)| v != value)
            })
            .map(|(k, _)| k.clone())
            .collect();
        out.extend(
            new.0
                .iter()
                .filter(|(k, _)| !self.0.iter().any(|(key, _)| key == k))
                .map(|(k, _)| k.clone()),
        );
        out
    }
}

impl Reloader {
    /// `config` is the running configuration, as started.
    pub fn new(
        router: Arc<Router>,
        bridges: Vec<Arc<Bridge>>,
        queues: Vec<Arc<QueueService>>,
        config: &Config,
        origin: Origin,
    ) -> Reloader {
        Reloader {
            router,
            bridges,
            queues,
            fixed: Reloader::fixed_of_file(config, &origin),
            origin,
        }
    }

    /// What of `config` a reload does not apply, as the file says it: with
    /// `--data-dir`, the file is read again, so that the override is not
    /// reported as a change of `[storage]`.
    fn fixed_of_file(config: &Config, origin: &Origin) -> Fixed {
        match (&origin.data_dir, &origin.path) {
            (Some(_), Some(path)) => match Config::load(path) {
                Ok(c) => Fixed::of(&c),
                Err(_) => Fixed::of(config),
            },
            _ => Fixed::of(config),
        }
    }

    /// Reads the file again and applies what can be applied; logs the
    /// outcome. Returns whether the file was valid (and applied).
    pub async fn reload(&mut self) -> bool {
        let Some(path) = self.origin.path.clone() else {
            tracing::warn!(
                "reload: the router was started without --config: no configuration file to reload"
            );
            return false;
        };
        let config = match Config::load(&path) {
            Ok(c) => c,
            Err(errors) => {
                for e in errors.lines() {
                    tracing::error!("reload refused: {e}");
                }
                tracing::error!(
                    file = %path.display(),
                    "reload refused: the file is invalid; the running configuration stays"
                );
                return false;
            }
        };
        // The queues of every realm are checked before anything is applied.
        let mut queue_reloads = Vec::new();
        let mut problems = Vec::new();
        for service in &self.queues {
            let Some(entry) = config
                .realms
                .iter()
                .find(|r| r.name.get_ref() == service.realm_name())
            else {
                continue;
            };
            let new = ReloadQueues {
                configs: entry.queue.iter().map(|q| q.get_ref().clone()).collect(),
                bindings: entry
                    .queue_binding
                    .iter()
                    .map(|b| b.get_ref().clone())
                    .collect(),
            };
            problems.extend(service.reload_problems(&new));
            queue_reloads.push((service.clone(), new));
        }
        if !problems.is_empty() {
            for e in &problems {
                tracing::error!("reload refused: {e}");
            }
            tracing::error!(
                file = %path.display(),
                "reload refused: the file's queues cannot be applied; the running configuration stays"
            );
            return false;
        }
        let fixed = Fixed::of(&config);
        for key in self.fixed.changed(&fixed) {
            tracing::warn!(
                key = %key,
                "reload: {key} changed: read only at startup, it keeps its running value until a restart"
            );
        }
        let mut applied = Vec::new();
        for realm_config in config.realm_configs() {
            let name = realm_config.name.clone();
            let Some(realm) = self.router.realm(&name) else {
                continue;
            };
            for key in realm.reload(realm_config) {
                tracing::warn!(
                    realm = %name,
                    key = %key,
                    "reload: realm \"{name}\": {key} changed: read only when the realm is created, it keeps its running value until a restart"
                );
            }
            applied.push(name);
        }
        let mut bridges = 0;
        for entry in &config.bridges {
            let new = entry.get_ref();
            if let Some(b) = self
                .bridges
                .iter()
                .find(|b| b.config().address == new.address)
            {
                b.reload_keys(&new.keys);
                bridges += 1;
            }
        }
        let mut queues_ok = true;
        for (service, new) in queue_reloads {
            if let Err(e) = service.reload(new).await {
                tracing::error!("reload: {e}");
                queues_ok = false;
            }
        }
        tracing::info!(
            file = %path.display(),
            realms = %applied.join(", "),
            bridges,
            queues = if queues_ok { "applied" } else { "not applied (see the error above)" },
            "configuration reloaded: roles, permissions, authorizer, principals, JWT issuers, http_auth, realm limits, bridge keys, queues and queue bindings apply from now on"
        );
        self.fixed = fixed;
        true
    }
}
