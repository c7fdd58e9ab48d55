//! The `[cluster]` section: which node this is, which NATS servers join the
//! nodes, how to authenticate to them, and the subject prefix. Without the
//! section a node is alone and needs no NATS. Names are fixed by issue 15
//! (tests outside the project rely on them).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster (default: the host name,
    /// with characters outside `[A-Za-z0-9_-]` replaced by `-`).
    #[serde(default = "default_node")]
    pub node: String,
    /// NATS servers (several for a NATS cluster).
    pub nats: Vec<String>,
    /// A NATS `.creds` file (JWT and NKey seed).
    #[serde(default)]
    pub nats_credentials: Option<PathBuf>,
    /// A NATS authentication token.
    #[serde(default)]
    pub nats_token: Option<String>,
    /// TLS to the NATS servers.
    #[serde(default)]
    pub nats_tls: Option<NatsTls>,
    /// How often a node says it is alive; a node silent for three
    /// heartbeats is dead (see docs/CLUSTER.md, "Failure").
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat: Duration,
    /// The first token(s) of every subject this cluster uses, to share one
    /// NATS with other applications or clusters.
    #[serde(default = "default_prefix")]
    pub subject_prefix: String,
    /// `[cluster.queues]`: where the durable queues live (default: each
    /// node's own store).
    #[serde(default)]
    pub queues: super::queues::config::ClusterQueuesConfig,
}

/// `nats_tls = { ca = "...", cert = "...", key = "..." }`: TLS is required;
/// `ca` adds trusted roots, `cert`/`key` (both or neither) a client
/// certificate.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsTls {
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

fn default_heartbeat() -> Duration {
    Duration::from_secs(1)
}

fn default_prefix() -> String {
    "switchyard".into()
}

fn default_node() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = host
        .trim()
        .chars()
        .map(|c| if node_char(c) { c } else { '-' })
        .collect();
    if name.is_empty() {
        "switchyard".into()
    } else {
        name
    }
}

fn node_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Whether `token` may be one token of a subject this cluster subscribes
/// to: not empty, no whitespace or control characters, not a wildcard.
fn plain_token(token: &str) -> bool {
    !token.is_empty()
        && token != "*"
        && token != ">"
        && !token.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl ClusterConfig {
    /// What is wrong with the section, each as "cluster.<field>: ...".
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.node.is_empty() || self.node.len() > 64 || !self.node.chars().all(node_char) {
            out.push(format!(
                "cluster.node: \"{}\" must be 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-' \
                 (it names this node in subjects and keys)",
                self.node
            ));
        }
        if self.nats.is_empty() {
            out.push("cluster.nats: name at least one NATS server (\"nats://host:4222\")".into());
        }
        for (i, url) in self.nats.iter().enumerate() {
            if let Err(e) = url.parse::<async_nats::ServerAddr>() {
                out.push(format!(
                    "cluster.nats[{i}]: \"{url}\" is not a NATS server address: {e}"
                ));
            }
        }
        if self.heartbeat.is_zero() {
            out.push("cluster.heartbeat: must be longer than 0s".into());
        }
        let prefix_ok = !self.subject_prefix.starts_with('$')
            && self.subject_prefix.split('.').all(plain_token);
        if !prefix_ok {
            out.push(format!(
                "cluster.subject_prefix: \"{}\" must be dot-separated non-empty tokens without \
                 whitespace, '*' or '>' tokens, and must not start with '$'",
                self.subject_prefix
            ));
        }
        if self.nats_token.is_some() && self.nats_credentials.is_some() {
            out.push(
                "cluster.nats_token and cluster.nats_credentials: give one of them, not both"
                    .into(),
            );
        }
        if let Some(tls) = &self.nats_tls {
            if tls.cert.is_some() != tls.key.is_some() {
                out.push("cluster.nats_tls: give both cert and key, or neither".into());
            }
        }
        out.extend(self.queues.problems());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ClusterConfig {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn defaults_and_a_valid_section() {
        let c = parse("nats = [\"nats://127.0.0.1:4222\"]");
        assert_eq!(c.heartbeat, Duration::from_secs(1));
        assert_eq!(c.subject_prefix, "switchyard");
        assert!(!c.node.is_empty());
        assert!(c.problems().is_empty(), "{:?}", c.problems());
    }

    #[test]
    fn each_problem_is_named() {
        let c = parse(
            "node = \"a b\"\nnats = [\"nats://h:notaport\"]\nheartbeat = \"0s\"\n\
             subject_prefix = \"x..y\"\nnats_token = \"t\"\nnats_credentials = \"c\"\n\
             nats_tls = { cert = \"c.pem\" }",
        );
        let p = c.problems().join("\n");
        for field in [
            "cluster.node",
            "cluster.nats[0]",
            "cluster.heartbeat",
            "cluster.subject_prefix",
            "nats_token and cluster.nats_credentials",
            "cluster.nats_tls",
        ] {
            assert!(p.contains(field), "{field} missing in:\n{p}");
        }
        assert!(!parse("nats = []").problems().is_empty());
        assert!(!parse("nats = [\"n:1\"]\nsubject_prefix = \"$SYS\"")
            .problems()
            .is_empty());
    }
}
