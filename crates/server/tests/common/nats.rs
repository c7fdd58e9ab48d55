//! A real `nats-server -js` for the cluster tests (a random loopback port,
//! a temporary store, the monitoring port), and switchyard nodes joined by
//! it. What NATS did is read from its monitoring endpoint
//! (`/connz?subs=detail`: each node's subscriptions and the messages NATS
//! sent on each).
//!
//! Needs `nats-server` (scripts/install-nats.sh installs Debian's, in
//! /usr/sbin; `NATS_SERVER` names another binary).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, Router};

/// A `nats-server -js` of its own.
pub struct Nats {
    pub child: Child,
    pub port: u16,
    pub monitor: u16,
    _dir: tempfile::TempDir,
}

impl Nats {
    pub fn start() -> Nats {
        let dir = tempfile::tempdir().expect("tempdir");
        let (child, port, monitor) = Nats::spawn(dir.path(), free_port(), free_port());
        Nats {
            child,
            port,
            monitor,
            _dir: dir,
        }
    }

    /// Kills the server (SIGKILL) and starts it again on the same ports
    /// and store.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, _, _) = Nats::spawn(self._dir.path(), self.port, self.monitor);
        self.child = child;
    }

    /// Kills the server (SIGKILL) and leaves it down.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again after [`Nats::stop`], on the same ports and store.
    pub fn start_again(&mut self) {
        let (child, _, _) = Nats::spawn(self._dir.path(), self.port, self.monitor);
        self.child = child;
    }

    fn spawn(dir: &std::path::Path, port: u16, monitor: u16) -> (Child, u16, u16) {
        let child = Command::new(nats_server())
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &monitor.to_string(), "-js", "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on the PATH (scripts/install-nats.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err()
            || TcpStream::connect(("127.0.0.1", monitor)).is_err()
        {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        (child, port, monitor)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A switchyard node of this NATS, named `name`.
    pub fn node(&self, name: &str) -> Router {
        self.node_with(name, "")
    }

    /// A node whose realm1 has `realm_tables` (sub-tables of [[realm]]).
    pub fn node_with(&self, name: &str, realm_tables: &str) -> Router {
        self.node_full(name, realm_tables, "")
    }

    /// A node with `realm_tables` and more `[cluster]` keys (`cluster`).
    pub fn node_full(&self, name: &str, realm_tables: &str, cluster: &str) -> Router {
        Router::start(&format!(
            "{realm_tables}\n[cluster]\nnode = \"{name}\"\nnats = [\"{}\"]\nsubject_prefix = \"sy\"\n{cluster}\n",
            self.url()
        ))
    }

    /// The connection of node `name`, as `/connz?subs=detail` reports it.
    pub fn connection(&self, name: &str) -> serde_json::Value {
        let want = format!("switchyard node {name}");
        let connz = http_get(self.monitor, "/connz?subs=detail");
        connz["connections"]
            .as_array()
            .and_then(|l| l.iter().find(|c| c["name"] == want.as_str()).cloned())
            .unwrap_or_else(|| panic!("no NATS connection named {want}: {connz}"))
    }

    /// The publication subjects node `name` is subscribed to (not its
    /// reply inbox, directory and RPC subjects).
    pub fn subjects(&self, name: &str) -> Vec<String> {
        let mut s: Vec<String> = self
            .subscriptions(name)
            .into_iter()
            .map(|(subject, _)| subject)
            .collect();
        s.sort();
        s
    }

    /// (subject, messages NATS sent on it) of node `name`'s publication
    /// subscriptions.
    fn subscriptions(&self, name: &str) -> Vec<(String, u64)> {
        self.all_subscriptions(&self.connection(name))
            .into_iter()
            .filter(|(s, _)| publication_subject(s))
            .collect()
    }

    fn all_subscriptions(&self, connection: &serde_json::Value) -> Vec<(String, u64)> {
        connection["subscriptions_list_detail"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|d| {
                        let subject = d["subject"].as_str()?.to_string();
                        Some((subject, d["msgs"].as_u64().unwrap_or(0)))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Publications NATS has sent to node `name`: every message it sent
    /// the node but those on its other subscriptions (the reply inbox of
    /// its round trips, the directory, RPC), which it keeps for good.
    pub fn sent_to(&self, name: &str) -> u64 {
        let c = self.connection(name);
        let other: u64 = self
            .all_subscriptions(&c)
            .iter()
            .filter(|(s, _)| !publication_subject(s))
            .map(|(_, n)| n)
            .sum();
        c["out_msgs"].as_u64().unwrap_or(0).saturating_sub(other)
    }

    /// Waits until node `name` is subscribed to exactly `subjects`.
    pub fn wait_subjects(&self, name: &str, subjects: &[&str]) {
        let mut want: Vec<String> = subjects.iter().map(|s| s.to_string()).collect();
        want.sort();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.subjects(name);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {name}: subscribed to {got:?}, expected {want:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The nats-server binary: $NATS_SERVER, else `nats-server` on the PATH,
/// else Debian's /usr/sbin/nats-server (not on a non-root user's PATH).
fn nats_server() -> String {
    if let Ok(bin) = std::env::var("NATS_SERVER") {
        return bin;
    }
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("nats-server").is_file()));
    if on_path {
        "nats-server".into()
    } else {
        "/usr/sbin/nats-server".into()
    }
}

/// GET http://127.0.0.1:`port``path`, as JSON.
pub fn http_get(port: u16, path: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("monitor port");
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A publication subject (`<prefix>.<realm>.pub.<topic>`), not a reply
/// inbox or a directory or RPC subject.
fn publication_subject(subject: &str) -> bool {
    !subject.starts_with("_INBOX.") && subject.split('.').nth(2) == Some("pub")
}
