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
    /// More arguments (a member of a [`NatsCluster`]: its name and routes;
    /// JetStream's).
    extra: Vec<String>,
}

impl Nats {
    pub fn start() -> Nats {
        Nats::start_with(free_port(), free_port(), Vec::new())
    }

    /// NATS core alone: no JetStream (what a node in cluster mode refuses).
    pub fn start_core() -> Nats {
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, monitor) = (free_port(), free_port());
        let child = Nats::spawn_with(&[], port, monitor, &[]);
        Nats {
            child,
            port,
            monitor,
            _dir: dir,
            extra: Vec::new(),
        }
    }

    fn start_with(port: u16, monitor: u16, extra: Vec<String>) -> Nats {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Nats::spawn(dir.path(), port, monitor, &extra);
        Nats {
            child,
            port,
            monitor,
            _dir: dir,
            extra,
        }
    }

    /// Kills the server (SIGKILL) and starts it again on the same ports
    /// and store.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Nats::spawn(self._dir.path(), self.port, self.monitor, &self.extra);
    }

    /// Kills the server (SIGKILL) and leaves it down.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again after [`Nats::stop`], on the same ports and store.
    pub fn start_again(&mut self) {
        self.child = Nats::spawn(self._dir.path(), self.port, self.monitor, &self.extra);
    }

    /// A `nats-server -js` with its store in `dir`.
    fn spawn(dir: &std::path::Path, port: u16, monitor: u16, extra: &[String]) -> Child {
        let js = ["-js".to_string(), "-sd".into(), dir.display().to_string()];
        Nats::spawn_with(&js, port, monitor, extra)
    }

    fn spawn_with(js: &[String], port: u16, monitor: u16, extra: &[String]) -> Child {
        let child = Command::new(nats_server())
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &monitor.to_string()])
            .args(js)
            .args(extra)
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
        child
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

/// Three (or `n`) `nats-server -js` joined in one NATS cluster by routes
/// on loopback (cluster name `sy`, servers `s1`, `s2`, ...; JetStream
/// clustered, each with its own store): a node of it survives the loss of
/// one server.
pub struct NatsCluster {
    pub servers: Vec<Nats>,
}

impl NatsCluster {
    pub fn start(n: usize) -> NatsCluster {
        NatsCluster::start_with(n, &[])
    }

    /// Servers that do not tell their clients of the others
    /// (`--no_advertise`): a node that names one server stays on it, so
    /// stopping that server cuts off its nodes alone.
    pub fn start_isolated(n: usize) -> NatsCluster {
        NatsCluster::start_with(n, &["--no_advertise"])
    }

    fn start_with(n: usize, more: &[&str]) -> NatsCluster {
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let all = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let servers = routes
            .iter()
            .enumerate()
            .map(|(i, route)| {
                let extra: Vec<String> = vec![
                    "-n".to_string(),
                    format!("s{}", i + 1),
                    "--cluster_name".into(),
                    "sy".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{route}"),
                    "--routes".into(),
                    all.clone(),
                ]
                .into_iter()
                .chain(more.iter().map(|m| m.to_string()))
                .collect();
                Nats::start_with(free_port(), free_port(), extra)
            })
            .collect::<Vec<_>>();
        let cluster = NatsCluster { servers };
        // Every server routes to every other one, and JetStream answers once
        // the servers elected a meta leader.
        let deadline = Instant::now() + Duration::from_secs(20);
        for s in &cluster.servers {
            loop {
                let routez = http_get(s.monitor, "/routez");
                if routez["num_routes"].as_u64() >= Some(n as u64 - 1) {
                    break;
                }
                assert!(Instant::now() < deadline, "NATS routes not up: {routez}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while cluster.meta_leader().is_none() {
            assert!(Instant::now() < deadline, "no JetStream meta leader");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// The index of server `s<i + 1>`, from its name.
    fn index(name: &str) -> Option<usize> {
        name.strip_prefix('s')?
            .parse::<usize>()
            .ok()?
            .checked_sub(1)
    }

    /// The server leading JetStream's meta group, as the first server that
    /// answers says (None: none elected).
    pub fn meta_leader(&self) -> Option<usize> {
        self.servers.iter().find_map(|s| {
            let jsz = try_http_get(s.monitor, "/jsz").ok()?;
            NatsCluster::index(jsz["meta_cluster"]["leader"].as_str()?)
        })
    }

    /// The server leading JetStream stream `name`.
    pub fn stream_leader(&self, name: &str) -> usize {
        for s in &self.servers {
            let Ok(jsz) = try_http_get(s.monitor, "/jsz?accounts=true&streams=true") else {
                continue;
            };
            let streams = jsz["account_details"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default());
            for stream in streams {
                if stream["name"] == name {
                    if let Some(i) = stream["cluster"]["leader"]
                        .as_str()
                        .and_then(NatsCluster::index)
                    {
                        return i;
                    }
                }
            }
        }
        panic!("no leader for stream {name}");
    }

    /// The URLs of every server, `first` first.
    pub fn urls(&self, first: usize) -> Vec<String> {
        let mut urls: Vec<String> = self.servers.iter().map(Nats::url).collect();
        let n = urls.len();
        urls.rotate_left(first % n);
        urls
    }

    /// The URLs of every server, `first` first, as the items of a TOML list.
    pub fn toml_urls(&self, first: usize) -> String {
        self.urls(first)
            .iter()
            .map(|u| format!("\"{u}\""))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A switchyard node that knows every server of the cluster (it
    /// connects to one of them and moves to another when that one goes).
    pub fn node(&self, name: &str, first: usize) -> Router {
        let nats = self.toml_urls(first);
        Router::start(&format!(
            "[cluster]\nnode = \"{name}\"\nnats = [{nats}]\nsubject_prefix = \"sy\"\nheartbeat = \"400ms\"\n"
        ))
    }

    /// The server node `name` is connected to now (None: none).
    pub fn server_of(&self, name: &str) -> Option<usize> {
        let want = format!("switchyard node {name}");
        self.servers.iter().position(|s| {
            try_http_get(s.monitor, "/connz").is_ok_and(|connz| {
                connz["connections"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|c| c["name"] == want.as_str()))
            })
        })
    }

    /// Waits until node `name` is connected to a server other than
    /// `not` (10 s at most).
    pub fn wait_moved(&self, name: &str, not: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(i) = self.server_of(name).filter(|i| *i != not) {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "node {name} did not move to another NATS server"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The nats-server binary: $NATS_SERVER, else `nats-server` on the PATH,
/// else Debian's /usr/sbin/nats-server (not on a non-root user's PATH).
pub fn nats_server() -> String {
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
    try_http_get(port, path).unwrap_or_else(|e| panic!("GET {path} on port {port}: {e}"))
}

/// GET http://127.0.0.1:`port``path`, as JSON, or why not (a server that
/// is down).
pub fn try_http_get(port: u16, path: &str) -> Result<serde_json::Value, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).map_err(|e| format!("{e}: {text}"))
}

/// A publication subject (`<prefix>.<realm>.pub.<topic>`), not a reply
/// inbox or a directory or RPC subject.
fn publication_subject(subject: &str) -> bool {
    !subject.starts_with("_INBOX.") && subject.split('.').nth(2) == Some("pub")
}
