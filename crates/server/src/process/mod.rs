//! Supervised processes (`[[process]]`, docs/PROCESSES.md): programs the
//! router starts once its listeners are up, keeps running per their restart
//! policy, and stops with itself, so that a queue worker or a backend does
//! not need Supervisor or systemd beside the router.
//!
//! - `config.rs`: the `[[process]]` entries and their checks;
//! - `supervisor.rs`: one task per process (process groups, restarts,
//!   backoff, crash loops, output into the log, stopping);
//! - `api.rs`: `switchyard.process.list|start|stop|restart` in every realm;
//! - `metrics.rs`: `switchyard_process_*` on /metrics.

mod api;
pub mod config;
mod metrics;
mod supervisor;

use std::sync::Arc;

use switchyard_router::internal::InternalCaller;
use switchyard_router::Router;

pub use config::ProcessConfig;
pub use supervisor::OUTPUT_TARGET;

/// The running supervisor and what keeps its procedures registered.
pub struct Processes {
    supervisor: Arc<supervisor::Supervisor>,
    _api: Vec<InternalCaller>,
}

impl Processes {
    /// Starts the processes and registers their procedures in every realm.
    pub fn start(configs: Vec<ProcessConfig>, router: &Router) -> Result<Processes, String> {
        let supervisor = supervisor::Supervisor::start(configs);
        let mut api = Vec::new();
        for realm in router.realms() {
            api.push(api::register(&supervisor, realm)?);
        }
        metrics::register(&supervisor, router.metrics());
        Ok(Processes {
            supervisor,
            _api: api,
        })
    }

    /// Stops every process and waits until their process groups are gone.
    pub async fn shutdown(&self) {
        self.supervisor.shutdown().await;
    }
}
