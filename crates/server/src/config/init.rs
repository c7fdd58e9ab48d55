//! `switchyard init [PATH]`: writes a commented starting configuration (a
//! file `check-config` accepts, tested in tests/config_sources.rs), and
//! refuses to overwrite an existing file without `--force`.

use std::io::Write;
use std::path::Path;

/// The file `switchyard init` writes when no path is given.
pub const DEFAULT_PATH: &str = "switchyard.toml";

/// The starting configuration.
pub const STARTER: &str = r#"# Switchyard configuration, written by `switchyard init`.
#
# Every key is optional; switchyard.example.toml (in the sources) lists them all.
# Check this file with:   switchyard check-config switchyard.toml
# Run the router with:    switchyard --config switchyard.toml
#
# In a container, any key can also be set from the environment, without editing
# this file: SWITCHYARD__<TABLE>__<KEY>, array entries by their index, e.g.
#   SWITCHYARD__LISTENER__0__ADDRESS=0.0.0.0:8080
#   SWITCHYARD__LOG__FORMAT=json
# and every secret can be read from a file: secret_file = "/run/secrets/name"
# instead of secret = "..." (README, "Configuration in containers").

[log]
format = "text"          # "json": one object per line, for log collectors
level = "info"           # a tracing filter: "debug", "switchyard=debug,info"

# WebSocket, for browsers and most WAMP clients: ws://HOST:8080/ws
[[listener]]
type = "websocket"
address = "127.0.0.1:8080"   # "0.0.0.0:8080" to accept other hosts (needed in a container)
path = "/ws"

# RawSocket over TCP, for backend services.
[[listener]]
type = "rawsocket"
address = "127.0.0.1:8081"

[[realm]]
name = "realm1"
# Who may join and what they may do (docs/SECURITY.md). Without [realm.auth]
# anonymous clients join; without [[realm.role]] every session may do everything.
# [realm.auth]
# methods = ["ticket"]
# [[realm.auth.ticket]]
# authid = "backend"
# secret = "..."                  # the output of: switchyard hash-secret
# role = "backend"
# [[realm.role]]
# name = "backend"
# [[realm.role.permission]]
# uri = "com.example."
# match = "prefix"
# allow = ["call", "register", "publish", "subscribe"]

# A durable job queue (docs/QUEUES.md): producers push, workers register the target.
# [[realm.queue]]
# name = "pdf"
# target = "com.example.render_pdf"

[storage]
data_dir = "switchyard-data"  # the queues' store: a volume in a container

# The HTTP bridge (docs/HTTP-BRIDGE.md): backends publish, call, push jobs and
# use JSON-RPC with one signed HTTP request.
# [[bridge]]
# address = "127.0.0.1:8090"
# realm = "realm1"
# jsonrpc_path = "/rpc"
# [[bridge.key]]
# key = "my-app"
# secret_file = "/run/secrets/bridge-key"   # or: secret = "at least 16 characters"
# role = "backend"
"#;

/// Writes [`STARTER`] to `path`; an existing file only with `force`.
pub fn write(path: &Path, force: bool) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        // Atomically: never replaces a file that appeared meanwhile.
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!(
                "{} exists: not overwritten (use --force to replace it)",
                path.display()
            )
        } else {
            format!("{}: cannot write: {e}", path.display())
        }
    })?;
    file.write_all(STARTER.as_bytes())
        .map_err(|e| format!("{}: cannot write: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The starting configuration is valid, and what it sets are the defaults.
    #[test]
    fn the_starter_is_a_valid_configuration() {
        let c = crate::config::Config::parse(STARTER).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.realms.len(), 1);
    }

    /// Its commented examples are valid too, once uncommented.
    #[test]
    fn the_commented_examples_are_valid() {
        let uncommented: String = STARTER
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with('[')
                        || rest.split_once(" = ").is_some_and(|(k, _)| {
                            !k.contains(' ')
                                && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        }) =>
                {
                    rest.to_string()
                }
                _ => l.to_string(),
            })
            .map(|l| {
                l.replace(
                    "secret_file = \"/run/secrets/bridge-key\"",
                    "secret = \"0123456789abcdef0\"",
                )
            })
            .map(|l| l.replace("secret = \"...\"", &format!("secret = {:?}", ticket_hash())))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(uncommented.contains("[[bridge.key]]"), "{uncommented}");
        crate::config::Config::parse(&uncommented)
            .unwrap_or_else(|e| panic!("{e:?}\n{uncommented}"));
    }

    fn ticket_hash() -> String {
        switchyard_router::auth::ticket::hash_secret("a ticket secret").unwrap_or_default()
    }
}
