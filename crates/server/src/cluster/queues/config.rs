//! `[cluster.queues]`: where a cluster keeps its durable queues.
//!
//! ```toml
//! [cluster.queues]
//! store = "jetstream"   # default "local": each node's own embedded store (jobs wait while it is down)
//! replicas = 1          # JetStream replicas of the queue log (3 with a three-server NATS cluster)
//! lease = "3s"          # a silent dispatcher node loses its queues after this long
//! checkpoint_entries = 4096   # log entries between checkpoints (a takeover replays at most these)
//! ```

use std::time::Duration;

use serde::Deserialize;

/// Where the queues of a cluster live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueStoreKind {
    /// Each node runs the queues of its own embedded store (issue 15's behaviour).
    #[default]
    Local,
    /// One replicated JetStream log per realm; one node at a time dispatches it.
    Jetstream,
}

/// `[cluster.queues]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterQueuesConfig {
    /// `local` (default) or `jetstream`.
    #[serde(default)]
    pub store: QueueStoreKind,
    /// JetStream replicas of each realm's queue log and of the ownership bucket (1 to 5).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// How long the dispatching node's ownership lasts without a renewal.
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: Duration,
    /// Log entries between two checkpoints (the log before a checkpoint is purged; a takeover
    /// reads one checkpoint and at most this many entries).
    #[serde(default = "default_checkpoint_entries")]
    pub checkpoint_entries: u64,
}

impl Default for ClusterQueuesConfig {
    fn default() -> Self {
        ClusterQueuesConfig {
            store: QueueStoreKind::Local,
            replicas: default_replicas(),
            lease: default_lease(),
            checkpoint_entries: default_checkpoint_entries(),
        }
    }
}

fn default_replicas() -> usize {
    1
}

fn default_checkpoint_entries() -> u64 {
    4096
}

fn default_lease() -> Duration {
    Duration::from_secs(3)
}

impl ClusterQueuesConfig {
    /// Whether the queues live in JetStream.
    pub fn jetstream(&self) -> bool {
        self.store == QueueStoreKind::Jetstream
    }

    /// What is wrong with the section, each as "cluster.queues.<field>: ...".
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(1..=5).contains(&self.replicas) {
            out.push(format!(
                "cluster.queues.replicas: {} must be 1 to 5 (JetStream's replica counts)",
                self.replicas
            ));
        }
        if self.lease < Duration::from_millis(400) || self.lease > Duration::from_secs(300) {
            out.push(format!(
                "cluster.queues.lease: {} must be between 400ms and 5m",
                humantime::format_duration(self.lease)
            ));
        }
        if !(16..=1_000_000).contains(&self.checkpoint_entries) {
            out.push(format!(
                "cluster.queues.checkpoint_entries: {} must be 16 to 1000000",
                self.checkpoint_entries
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_problems() {
        let c: ClusterQueuesConfig = toml::from_str("").expect("parses");
        assert!(!c.jetstream());
        assert_eq!(c.lease, Duration::from_secs(3));
        assert!(c.problems().is_empty());
        let c: ClusterQueuesConfig =
            toml::from_str("store = \"jetstream\"\nreplicas = 7\nlease = \"10ms\"")
                .expect("parses");
        assert!(c.jetstream());
        let p = c.problems().join("\n");
        assert!(
            p.contains("cluster.queues.replicas") && p.contains("cluster.queues.lease"),
            "{p}"
        );
        assert!(toml::from_str::<ClusterQueuesConfig>("store = \"redis\"").is_err());
    }
}
