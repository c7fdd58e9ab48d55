//! The configuration file (TOML). Every key is optional; with no file at
//! all the router serves realm `realm1` on ws://127.0.0.1:8080/ws and
//! RawSocket 127.0.0.1:8081. Errors name the line and the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bridge::BridgeConfig;
use crate::queue_service::{QueueBinding, QueueHttpSigning, QueueLimits};
use serde::Deserialize;
use switchyard_proto::uri::UriCheck;
use switchyard_queue::QueueConfig;
use switchyard_router::auth::AuthConfig;
use switchyard_router::authz::RoleConfig;
use switchyard_router::broker::{HistoryConfig, MAX_HISTORY_LIMIT};
use switchyard_router::{Disclosure, RealmConfig, SlowConsumerPolicy};
use toml::Spanned;

pub use crate::transport::tls::TlsFiles;

/// Environment variables and secret files (`sources.rs`), and the starting
/// configuration `switchyard init` writes (`init.rs`).
pub mod init;
pub mod sources;

/// Upper bound of a WAMP message: RawSocket frames carry at most 2^24 bytes.
pub const MAX_MESSAGE_SIZE_LIMIT: usize = 1 << 24;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<Spanned<ListenerEntry>>,
    #[serde(default, rename = "realm")]
    pub realms: Vec<RealmEntry>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// HTTP bridges ([[bridge]]).
    #[serde(default, rename = "bridge")]
    pub bridges: Vec<Spanned<BridgeConfig>>,
    /// Where durable state lives ([storage]).
    #[serde(default)]
    pub storage: StorageConfig,
    /// Cluster mode ([cluster]): absent, the node is alone and needs no NATS.
    #[serde(default)]
    pub cluster: Option<Spanned<crate::cluster::ClusterConfig>>,
    /// Where this configuration came from (set by `main`; SIGHUP reads it again).
    #[serde(skip)]
    pub origin: crate::reload::Origin,
    /// The admin web page ([admin], docs/ADMIN.md): absent, it is not served.
    #[serde(default)]
    pub admin: Option<Spanned<crate::admin::AdminConfig>>,
    /// How outbound https checks servers ([outbound_tls]).
    #[serde(default)]
    pub outbound_tls: crate::outbound::client::OutboundTlsConfig,
    /// Supervised processes ([[process]], docs/PROCESSES.md).
    #[serde(default, rename = "process")]
    pub processes: Vec<Spanned<crate::process::ProcessConfig>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory of the embedded store: one `queues-<realm>.redb` per realm
    /// (default "switchyard-data", relative to the working directory).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("switchyard-data")
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: default_data_dir(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Threads that run connections and routing; 0 (default) means one per CPU.
    #[serde(default)]
    pub worker_threads: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// "text" (default) or "json".
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter such as "info" or "switchyard=debug,info".
    pub level: Option<String>,
    /// At most this many INFO/WARN/ERROR lines per call site per
    /// `rate_interval`; the rest are summarised ("suppressed K similar
    /// messages"). 0: no limit.
    #[serde(default = "default_max_lines_per_callsite")]
    pub max_lines_per_callsite: u32,
    #[serde(default = "default_rate_interval", with = "humantime_serde")]
    pub rate_interval: Duration,
    /// Longer log lines are cut (0: no cap).
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            level: None,
            max_lines_per_callsite: default_max_lines_per_callsite(),
            rate_interval: default_rate_interval(),
            max_line_bytes: default_max_line_bytes(),
        }
    }
}

fn default_max_lines_per_callsite() -> u32 {
    50
}
fn default_rate_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_max_line_bytes() -> usize {
    8192
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A listener table as written in the file (flat, so that errors point at the key).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerEntry {
    #[serde(rename = "type")]
    pub kind: ListenerKind,
    pub address: Option<SocketAddr>,
    pub path: Option<String>,
    pub unix: Option<PathBuf>,
    /// TLS (TCP listeners): `{ cert, key, client_ca, client_auth }`.
    pub tls: Option<Spanned<TlsFiles>>,
    /// Authentication methods this listener allows (default: the realm's).
    pub auth_methods: Option<Spanned<Vec<String>>>,
    /// WebSocket: the page origins browsers may connect from (default: any).
    pub allowed_origins: Option<Spanned<Vec<String>>>,
    /// WebSocket: an HTTP path that serves the router's counters in the
    /// Prometheus text format (default: none).
    pub metrics_path: Option<String>,
    /// Operations: how long `/readyz` answers 503 after SIGTERM/SIGINT
    /// before the sessions are told GOODBYE (default 0), so that a load
    /// balancer stops sending new clients first.
    #[serde(default, with = "humantime_serde")]
    pub shutdown_delay: Option<Duration>,
}

/// The longest `shutdown_delay` accepted.
pub const MAX_SHUTDOWN_DELAY: Duration = Duration::from_secs(300);

/// Names `auth_methods` may contain.
pub const AUTH_METHOD_NAMES: [&str; 5] = ["anonymous", "ticket", "wampcra", "cryptosign", "tls"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    Websocket,
    /// Echoes every WebSocket message (the Autobahn testsuite's testee,
    /// docs/RELIABILITY.md); no WAMP.
    #[serde(rename = "websocket-testee")]
    WebsocketTestee,
    Rawsocket,
    /// HTTP for operators: /healthz, /readyz, /metrics (docs/OPERATIONS.md).
    Operations,
}

/// Where an operations listener listens when `address` is not given:
/// loopback only, since its endpoints are not authenticated.
pub const DEFAULT_OPERATIONS_ADDRESS: ([u8; 4], u16) = ([127, 0, 0, 1], 8090);

/// A validated listener.
#[derive(Debug, Clone)]
pub enum ListenerConfig {
    /// WAMP over WebSocket on `address`, upgrade path `path` (default "/ws").
    Websocket {
        address: SocketAddr,
        path: String,
        tls: Option<TlsFiles>,
        auth_methods: Option<Vec<String>>,
        /// None: every origin may connect.
        allowed_origins: Option<Vec<String>>,
        /// Serve the counters here (GET), if set.
        metrics_path: Option<String>,
    },
    /// The WebSocket conformance testee on `address`, upgrade path `path`
    /// (default "/ws"): echoes every message over the WebSocket stack of
    /// the WAMP listeners, with their limits.
    WebsocketTestee {
        address: SocketAddr,
        path: String,
        tls: Option<TlsFiles>,
        allowed_origins: Option<Vec<String>>,
    },
    /// WAMP over RawSocket on a TCP address.
    RawsocketTcp {
        address: SocketAddr,
        tls: Option<TlsFiles>,
        auth_methods: Option<Vec<String>>,
    },
    /// WAMP over RawSocket on a Unix socket path.
    RawsocketUnix {
        path: PathBuf,
        auth_methods: Option<Vec<String>>,
    },
    /// The operations endpoints (plain HTTP) on `address`.
    Operations {
        address: SocketAddr,
        /// Not ready for this long before a shutdown closes the sessions.
        shutdown_delay: Duration,
    },
}

impl ListenerEntry {
    /// Problems of the `tls`, `auth_methods` and `allowed_origins` keys,
    /// with the span of the key when known. Reads the TLS files, so that
    /// check-config reports a missing or invalid certificate.
    fn security_problems(&self) -> Vec<(std::ops::Range<usize>, String)> {
        let mut out = Vec::new();
        if let Some(t) = &self.tls {
            if let Err(e) = crate::transport::tls::load(t.get_ref()) {
                out.push((t.span(), e.to_string()));
            }
        }
        if let Some(m) = &self.auth_methods {
            let methods = m.get_ref();
            if methods.is_empty() {
                out.push((
                    m.span(),
                    "auth_methods: an empty list would refuse every client".to_string(),
                ));
            }
            for name in methods {
                if !AUTH_METHOD_NAMES.contains(&name.as_str()) {
                    out.push((
                        m.span(),
                        format!(
                            "auth_methods: unknown method \"{name}\" (valid: {})",
                            AUTH_METHOD_NAMES.join(", ")
                        ),
                    ));
                }
            }
            let client_certs = self.tls.as_ref().is_some_and(|t| {
                t.get_ref().client_auth != crate::transport::tls::ClientAuth::None
            });
            if methods.iter().any(|n| n == "tls") && !client_certs {
                out.push((
                    m.span(),
                    "auth_methods: \"tls\" needs TLS client certificates on this listener (tls.client_ca and tls.client_auth)".to_string(),
                ));
            }
        }
        if let Some(o) = &self.allowed_origins {
            if let Err(e) = crate::transport::origin::OriginPolicy::parse(o.get_ref()) {
                out.push((o.span(), format!("allowed_origins: {e}")));
            }
        }
        out
    }

    fn resolve(&self) -> Result<ListenerConfig, String> {
        if self.kind == ListenerKind::Operations {
            return self.resolve_operations();
        }
        if self.shutdown_delay.is_some() {
            return Err("`shutdown_delay` applies to the operations listener only".into());
        }
        let tls = self.tls.as_ref().map(|t| t.get_ref().clone());
        let auth_methods = self.auth_methods.as_ref().map(|m| m.get_ref().clone());
        if self.kind == ListenerKind::WebsocketTestee {
            return self.resolve_testee();
        }
        if self.kind != ListenerKind::Websocket && self.allowed_origins.is_some() {
            return Err("`allowed_origins` applies to websocket listeners only".into());
        }
        if let Some(m) = &self.metrics_path {
            if self.kind != ListenerKind::Websocket {
                return Err("`metrics_path` applies to websocket listeners only".into());
            }
            if !m.starts_with('/')
                || Some(m) == self.path.as_ref()
                || *m == default_ws_path() && self.path.is_none()
            {
                return Err(format!(
                    "`metrics_path` \"{m}\" must start with '/' and differ from the WebSocket path"
                ));
            }
        }
        match (self.kind, self.address, &self.unix) {
            (ListenerKind::Websocket, Some(address), None) => Ok(ListenerConfig::Websocket {
                address,
                path: self.path.clone().unwrap_or_else(default_ws_path),
                tls,
                auth_methods,
                allowed_origins: self.allowed_origins.as_ref().map(|o| o.get_ref().clone()),
                metrics_path: self.metrics_path.clone(),
            }),
            (ListenerKind::Websocket, _, _) => {
                Err("a websocket listener needs `address` (and no `unix`)".into())
            }
            (ListenerKind::Rawsocket, _, _) if self.path.is_some() => {
                Err("`path` applies to websocket listeners only".into())
            }
            (ListenerKind::Rawsocket, Some(address), None) => Ok(ListenerConfig::RawsocketTcp {
                address,
                tls,
                auth_methods,
            }),
            (ListenerKind::Rawsocket, None, Some(_)) if tls.is_some() => {
                Err("`tls` applies to TCP listeners only, not to Unix sockets".into())
            }
            (ListenerKind::Rawsocket, None, Some(path)) => Ok(ListenerConfig::RawsocketUnix {
                path: path.clone(),
                auth_methods,
            }),
            (ListenerKind::Rawsocket, _, _) => {
                Err("a rawsocket listener needs exactly one of `address` or `unix`".into())
            }
            (ListenerKind::Operations, _, _) => self.resolve_operations(),
            (ListenerKind::WebsocketTestee, _, _) => self.resolve_testee(),
        }
    }

    /// A websocket-testee listener takes the WebSocket keys but the WAMP
    /// ones (it has no sessions).
    fn resolve_testee(&self) -> Result<ListenerConfig, String> {
        let extra = [
            ("unix", self.unix.is_some()),
            ("auth_methods", self.auth_methods.is_some()),
            ("metrics_path", self.metrics_path.is_some()),
        ];
        if let Some((key, _)) = extra.iter().find(|(_, set)| *set) {
            return Err(format!(
                "`{key}` does not apply to a websocket-testee listener (it takes address, path, tls and allowed_origins)"
            ));
        }
        let Some(address) = self.address else {
            return Err("a websocket-testee listener needs `address`".into());
        };
        Ok(ListenerConfig::WebsocketTestee {
            address,
            path: self.path.clone().unwrap_or_else(default_ws_path),
            tls: self.tls.as_ref().map(|t| t.get_ref().clone()),
            allowed_origins: self.allowed_origins.as_ref().map(|o| o.get_ref().clone()),
        })
    }

    /// An operations listener takes `address` only (default
    /// 127.0.0.1:8090): its paths are fixed, and it has neither TLS nor
    /// authentication (keep it on loopback or a private network).
    fn resolve_operations(&self) -> Result<ListenerConfig, String> {
        let extra = [
            ("unix", self.unix.is_some()),
            ("path", self.path.is_some()),
            ("tls", self.tls.is_some()),
            ("auth_methods", self.auth_methods.is_some()),
            ("allowed_origins", self.allowed_origins.is_some()),
            ("metrics_path", self.metrics_path.is_some()),
        ];
        if let Some((key, _)) = extra.iter().find(|(_, set)| *set) {
            return Err(format!(
                "`{key}` does not apply to an operations listener (it takes `address` only; its paths are /healthz, /readyz and /metrics)"
            ));
        }
        let shutdown_delay = self.shutdown_delay.unwrap_or_default();
        if shutdown_delay > MAX_SHUTDOWN_DELAY {
            return Err(format!(
                "`shutdown_delay` is at most {}",
                humantime::format_duration(MAX_SHUTDOWN_DELAY)
            ));
        }
        Ok(ListenerConfig::Operations {
            address: self
                .address
                .unwrap_or_else(|| SocketAddr::from(DEFAULT_OPERATIONS_ADDRESS)),
            shutdown_delay,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealmEntry {
    pub name: Spanned<String>,
    #[serde(default)]
    pub uri_check: UriCheck,
    /// Whether callees learn who calls them: on_request, always, never.
    #[serde(default)]
    pub disclose_caller: Disclosure,
    /// Calls that may wait per registration while every callee is busy.
    #[serde(default)]
    pub call_queue_limit: Option<Spanned<usize>>,
    /// Whether subscribers learn who publishes: on_request, always, never.
    #[serde(default)]
    pub disclose_publisher: Disclosure,
    /// Topics that may hold a retained event at once.
    #[serde(default)]
    pub retained_topics_limit: Option<usize>,
    /// Topics (or patterns) whose events are kept for get_events.
    #[serde(default)]
    pub history: Vec<Spanned<HistoryConfig>>,
    /// How sessions authenticate ([realm.auth]).
    #[serde(default)]
    pub auth: Option<Spanned<AuthConfig>>,
    /// Roles and their permissions ([[realm.role]]).
    #[serde(default)]
    pub role: Vec<Spanned<RoleConfig>>,
    /// A procedure deciding for sessions whose role is not listed.
    #[serde(default)]
    pub authorizer: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub authorizer_timeout: Option<std::time::Duration>,
    #[serde(default)]
    pub max_subscriptions_per_session: Option<usize>,
    #[serde(default)]
    pub max_registrations_per_session: Option<usize>,
    #[serde(default)]
    pub max_subscriptions: Option<usize>,
    #[serde(default)]
    pub max_registrations: Option<usize>,
    #[serde(default)]
    pub max_authorizer_cache_entries: Option<usize>,
    #[serde(default)]
    pub max_queued_call_bytes: Option<usize>,
    #[serde(default)]
    pub max_testament_bytes: Option<usize>,
    #[serde(default)]
    pub max_messages_per_second: Option<u32>,
    /// Calls one session may have in flight (0: no limit).
    #[serde(default)]
    pub max_calls_in_flight_per_session: Option<usize>,
    /// Bytes of retained events the realm keeps.
    #[serde(default)]
    pub max_retained_bytes: Option<usize>,
    /// Testaments one session may hold per scope.
    #[serde(default)]
    pub max_testaments_per_session: Option<usize>,
    /// Bytes of testaments one session may hold.
    #[serde(default)]
    pub max_testament_bytes_per_session: Option<usize>,
    /// Durable job queues ([[realm.queue]]).
    #[serde(default)]
    pub queue: Vec<Spanned<QueueConfig>>,
    /// Topic bindings: publications become jobs ([[realm.queue_binding]]).
    #[serde(default)]
    pub queue_binding: Vec<Spanned<QueueBinding>>,
    /// How requests of jobs with an HTTP target are signed ([realm.queue_http]).
    #[serde(default)]
    pub queue_http: Option<QueueHttpSigning>,
    /// Where clients may make the router send HTTP requests
    /// ([realm.outbound_http]; nowhere by default).
    #[serde(default)]
    pub outbound_http: Option<crate::outbound::destinations::OutboundHttpConfig>,
    /// Bounds of what clients make the queues hold ([realm.queue_limits]).
    #[serde(default)]
    pub queue_limits: QueueLimits,
    /// The app's authenticator / authorizer over HTTP ([realm.http_auth]).
    #[serde(default)]
    pub http_auth: Option<crate::app_auth::HttpAuthConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest message a client may send, in bytes.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: Spanned<usize>,
    /// Messages queued per session before the slow-consumer policy applies.
    #[serde(default = "default_outbound_queue")]
    pub outbound_queue: Spanned<usize>,
    /// Bytes queued per session (encoded messages not yet written to the
    /// socket) before the slow-consumer policy applies.
    #[serde(default = "default_outbound_queue_bytes")]
    pub outbound_queue_bytes: usize,
    /// Bytes queued for all client connections together; over it, the
    /// sessions whose queues exceed their share are slow consumers.
    #[serde(default = "default_total_outbound_bytes")]
    pub total_outbound_bytes: usize,
    /// The kernel's send buffer of each TCP connection of a WAMP listener
    /// (SO_SNDBUF; Linux doubles it for its bookkeeping); 0 leaves it to the
    /// kernel's autotuning (up to `net.ipv4.tcp_wmem`, 4 MiB). Bounds what a
    /// client that stops reading takes out of the router before its writer
    /// blocks and the outbound queue limits apply.
    #[serde(default = "default_socket_send_buffer")]
    pub socket_send_buffer: usize,
    /// Argon2 ticket checks running at once, process-wide (0: one per CPU).
    #[serde(default)]
    pub max_concurrent_ticket_checks: usize,
    /// How long a ticket login waits for a check slot before it is refused.
    #[serde(default = "default_ticket_check_wait", with = "humantime_serde")]
    pub ticket_check_wait: Duration,
    /// Largest message before the session exists (HELLO, AUTHENTICATE;
    /// on RawSocket any frame, PINGs included), bytes.
    #[serde(default = "default_max_handshake_message_size")]
    pub max_handshake_message_size: usize,
    /// Largest HTTP request head (request line and headers) on the
    /// WebSocket listeners, the bridge and the operations listener, bytes;
    /// a larger one gets 431 and the connection is closed.
    #[serde(default = "default_max_request_head_size")]
    pub max_request_head_size: usize,
    /// Bytes of PONGs owed to a peer that does not read them before it is
    /// disconnected (a single PING is always answered).
    #[serde(default = "default_max_pending_pong_bytes")]
    pub max_pending_pong_bytes: usize,
    /// Longest HELLO.Details.authid, bytes.
    #[serde(default = "default_max_authid_length")]
    pub max_authid_length: usize,
    /// Longest URI a client may send (topic, procedure, error URI), bytes.
    #[serde(default = "default_max_uri_length")]
    pub max_uri_length: usize,
    #[serde(default)]
    pub slow_consumer: SlowConsumerPolicy,
    /// Transport handshake plus HELLO must complete within this.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Interval of WebSocket pings / RawSocket PINGs; "0s" disables them.
    #[serde(default = "default_ping_interval", with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A peer silent for ping_interval + ping_timeout is dropped.
    #[serde(default = "default_ping_timeout", with = "humantime_serde")]
    pub ping_timeout: Duration,
    /// Interval of RawSocket PINGs; "0s" (default) disables them, because
    /// Autobahn|Python's asyncio RawSocket client cannot answer a PING (it
    /// drops the connection). Dead RawSocket peers are found by TCP
    /// keepalive instead (after ping_interval, probing for ping_timeout).
    #[serde(default, with = "humantime_serde")]
    pub rawsocket_ping_interval: Duration,
    /// Open TCP connections per remote IP address, across all listeners;
    /// 0 means unlimited. Unix-socket connections are not counted.
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// IPv6 clients are counted for `max_connections_per_address` by this
    /// prefix of their address (1..=128; default 64: a host usually holds a
    /// whole /64 and could connect from 2^64 addresses). IPv4 clients are
    /// counted per address.
    #[serde(default = "default_ipv6_prefix_length")]
    pub ipv6_prefix_length: u8,
    /// An HTTP request body (the bridge) must arrive within this, counted
    /// from the end of its head; else 408 and the connection is closed.
    #[serde(default = "default_http_body_timeout", with = "humantime_serde")]
    pub http_body_timeout: Duration,
}

fn default_http_body_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_ws_path() -> String {
    "/ws".into()
}
fn default_max_message_size() -> Spanned<usize> {
    Spanned::new(0..0, 1 << 20)
}
fn default_outbound_queue() -> Spanned<usize> {
    Spanned::new(0..0, 4096)
}
fn default_max_handshake_message_size() -> usize {
    switchyard_router::HandshakeLimits::default().max_message
}
fn default_max_request_head_size() -> usize {
    64 * 1024
}
fn default_max_pending_pong_bytes() -> usize {
    64 * 1024
}
fn default_max_authid_length() -> usize {
    switchyard_router::HandshakeLimits::default().max_authid
}
fn default_ticket_check_wait() -> Duration {
    Duration::from_secs(5)
}
fn default_max_uri_length() -> usize {
    switchyard_router::realm::DEFAULT_MAX_URI_LENGTH
}
fn default_outbound_queue_bytes() -> usize {
    16 << 20
}
fn default_total_outbound_bytes() -> usize {
    512 << 20
}
/// The smallest `socket_send_buffer` accepted (other than 0).
const MIN_SOCKET_SEND_BUFFER: usize = 16 << 10;
fn default_socket_send_buffer() -> usize {
    256 << 10
}
fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_ping_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_ping_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_connections_per_address() -> usize {
    256
}
fn default_ipv6_prefix_length() -> u8 {
    64
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: default_max_message_size(),
            outbound_queue: default_outbound_queue(),
            outbound_queue_bytes: default_outbound_queue_bytes(),
            total_outbound_bytes: default_total_outbound_bytes(),
            socket_send_buffer: default_socket_send_buffer(),
            max_uri_length: default_max_uri_length(),
            max_concurrent_ticket_checks: 0,
            max_handshake_message_size: default_max_handshake_message_size(),
            max_request_head_size: default_max_request_head_size(),
            max_authid_length: default_max_authid_length(),
            max_pending_pong_bytes: default_max_pending_pong_bytes(),
            ticket_check_wait: default_ticket_check_wait(),
            slow_consumer: SlowConsumerPolicy::default(),
            handshake_timeout: default_handshake_timeout(),
            ping_interval: default_ping_interval(),
            ping_timeout: default_ping_timeout(),
            rawsocket_ping_interval: Duration::ZERO,
            max_connections_per_address: default_max_connections_per_address(),
            ipv6_prefix_length: default_ipv6_prefix_length(),
            http_body_timeout: default_http_body_timeout(),
        }
    }
}

impl Limits {
    /// What the transports need of these limits (they take plain settings
    /// and do not read the configuration).
    pub fn transport_settings(&self) -> crate::transport::Settings {
        crate::transport::Settings {
            max_message_size: *self.max_message_size.get_ref(),
            outbound_queue: *self.outbound_queue.get_ref(),
            outbound_queue_bytes: self.outbound_queue_bytes,
            outbound_budget: switchyard_router::OutboundBudget::new(self.total_outbound_bytes),
            slow_consumer: self.slow_consumer,
            handshake_timeout: self.handshake_timeout,
            ping_interval: self.ping_interval,
            ping_timeout: self.ping_timeout,
            rawsocket_ping_interval: self.rawsocket_ping_interval,
            max_pending_pong_bytes: self.max_pending_pong_bytes,
            max_request_head: self.max_request_head_size,
            socket_send_buffer: self.socket_send_buffer,
            // server.rs hands the router's traffic counters in.
            traffic: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            log: LogConfig::default(),
            listeners: Vec::new(),
            realms: Vec::new(),
            limits: Limits::default(),
            runtime: RuntimeConfig::default(),
            bridges: Vec::new(),
            storage: StorageConfig::default(),
            cluster: None,
            origin: Default::default(),
            admin: None,
            outbound_tls: Default::default(),
            processes: Vec::new(),
        }
        .with_defaults()
    }
}

/// A configuration error, with the line it was found on when known.
#[derive(Debug)]
pub struct ConfigError {
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl Config {
    /// Reads and validates a configuration file, with the `SWITCHYARD__*`
    /// environment variables and `*_file` secrets applied (`sources.rs`).
    pub fn load(path: &Path) -> Result<Config, String> {
        Config::load_from(Some(path), std::env::vars())
    }

    /// [`Config::load`] with the given variables; no file: the defaults
    /// with the variables applied.
    pub fn load_from(
        path: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, String> {
        let name = path.map_or_else(|| "(no file)".to_string(), |p| p.display().to_string());
        let text = match path {
            Some(p) => {
                Some(std::fs::read_to_string(p).map_err(|e| format!("{name}: cannot read: {e}"))?)
            }
            None => None,
        };
        let applied = sources::apply(text.as_deref(), vars).map_err(|e| format!("{name}: {e}"))?;
        if text.is_none() && applied.is_none() {
            return Ok(Config::default());
        }
        let (text, note) = match applied {
            Some(a) => {
                let vars = if a.vars.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", a.vars.join(", "))
                };
                let note = format!(
                    " [line of the configuration with the environment variables{vars} and *_file secrets applied]"
                );
                (a.text, note)
            }
            None => (text.unwrap_or_default(), String::new()),
        };
        Config::parse(&text).map_err(|errs| {
            errs.iter()
                .map(|e| match e.line {
                    Some(_) => format!("{name}: {e}{note}"),
                    None => format!("{name}: {e}"),
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    /// Parses and validates configuration text; returns every problem found.
    pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            // Quote the offending line so the key is named even when the
            // parser's message only describes the value.
            let message = match line.and_then(|l| text.lines().nth(l - 1)) {
                Some(src) if !src.trim().is_empty() => format!("`{}`: {}", src.trim(), e.message()),
                _ => e.message().to_string(),
            };
            vec![ConfigError { line, message }]
        })?;
        let cfg = cfg.with_defaults();
        let mut errs = cfg.validate(text);
        errs.sort_by_key(|e| e.line);
        if errs.is_empty() {
            Ok(cfg)
        } else {
            Err(errs)
        }
    }

    fn with_defaults(mut self) -> Self {
        // An operations listener alone serves no WAMP: the default WAMP
        // listeners still apply.
        if self
            .listeners
            .iter()
            .all(|l| l.get_ref().kind == ListenerKind::Operations)
        {
            let entry = |kind, port| {
                Spanned::new(
                    0..0,
                    ListenerEntry {
                        kind,
                        address: Some(SocketAddr::from(([127, 0, 0, 1], port))),
                        path: None,
                        unix: None,
                        tls: None,
                        auth_methods: None,
                        allowed_origins: None,
                        metrics_path: None,
                        shutdown_delay: None,
                    },
                )
            };
            self.listeners.extend([
                entry(ListenerKind::Websocket, 8080),
                entry(ListenerKind::Rawsocket, 8081),
            ]);
        }
        if self.realms.is_empty() {
            self.realms = vec![RealmEntry {
                name: Spanned::new(0..0, "realm1".into()),
                uri_check: UriCheck::default(),
                disclose_caller: Disclosure::default(),
                call_queue_limit: None,
                disclose_publisher: Disclosure::default(),
                retained_topics_limit: None,
                history: Vec::new(),
                auth: None,
                role: Vec::new(),
                authorizer: None,
                authorizer_timeout: None,
                max_subscriptions_per_session: None,
                max_registrations_per_session: None,
                max_subscriptions: None,
                max_registrations: None,
                max_authorizer_cache_entries: None,
                max_queued_call_bytes: None,
                max_testament_bytes: None,
                max_messages_per_second: None,
                max_calls_in_flight_per_session: None,
                max_retained_bytes: None,
                max_testaments_per_session: None,
                max_testament_bytes_per_session: None,
                queue: Vec::new(),
                queue_binding: Vec::new(),
                queue_http: None,
                outbound_http: None,
                queue_limits: QueueLimits::default(),
                http_auth: None,
            }];
        }
        self
    }

    fn validate(&self, text: &str) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        let mut err = |span: std::ops::Range<usize>, message: String| {
            let line = (span != (0..0)).then(|| line_of(text, span.start));
            errs.push(ConfigError { line, message });
        };
        let procs: Vec<_> = self.processes.iter().map(|p| p.get_ref()).collect();
        for (i, problem) in crate::process::config::problems(&procs) {
            err(self.processes[i].span(), problem);
        }
        if let Some(c) = &self.cluster {
            for problem in c.get_ref().problems() {
                err(c.span(), problem);
            }
        }
        for problem in self.admin.iter().flat_map(|a| a.get_ref().problems(self)) {
            err(self.admin.as_ref().map_or(0..0, |a| a.span()), problem);
        }
        for problem in self.outbound_tls.problems() {
            err(0..0, problem);
        }
        for (i, b) in self.bridges.iter().enumerate() {
            for problem in b.get_ref().problems() {
                err(b.span(), format!("bridge[{i}].{problem}"));
            }
            let realm = &b.get_ref().realm;
            if !self.realms.iter().any(|r| r.name.get_ref() == realm) {
                err(
                    b.span(),
                    format!("bridge[{i}].realm: realm \"{realm}\" is not configured"),
                );
            }
        }
        for (i, l) in self.listeners.iter().enumerate() {
            match l.get_ref().resolve() {
                Ok(
                    ListenerConfig::Websocket { path, .. }
                    | ListenerConfig::WebsocketTestee { path, .. },
                ) if !path.starts_with('/') => {
                    err(
                        l.span(),
                        format!("listener[{i}].path: \"{path}\" must start with '/'"),
                    );
                }
                Ok(_) => {}
                Err(e) => err(l.span(), format!("listener[{i}]: {e}")),
            }
            for (span, problem) in l.get_ref().security_problems() {
                err(span, format!("listener[{i}].{problem}"));
            }
            if l.get_ref().kind == ListenerKind::Operations
                && self.listeners[..i]
                    .iter()
                    .any(|o| o.get_ref().kind == ListenerKind::Operations)
            {
                err(
                    l.span(),
                    format!(
                        "listener[{i}]: a second operations listener (one serves every endpoint)"
                    ),
                );
            }
        }
        for (i, r) in self.realms.iter().enumerate() {
            let name = r.name.get_ref();
            if let Err(e) = switchyard_proto::uri::check(name, UriCheck::Loose, false) {
                err(r.name.span(), format!("realm[{i}].name: {e}"));
            }
            if let Some(a) = &r.auth {
                for problem in a.get_ref().problems() {
                    err(a.span(), format!("realm[{i}].{problem}"));
                }
            }
            let roles: Vec<RoleConfig> = r.role.iter().map(|x| x.get_ref().clone()).collect();
            for problem in switchyard_router::authz::problems(&roles) {
                let span = r.role.first().map(|x| x.span()).unwrap_or(0..0);
                err(span, format!("realm[{i}].{problem}"));
            }
            for (j, h) in r.history.iter().enumerate() {
                let h = h.get_ref();
                let allow_empty = h.policy != switchyard_router::uri_index::MatchPolicy::Exact;
                if let Err(e) = switchyard_proto::uri::check(&h.topic, UriCheck::Loose, allow_empty)
                {
                    err(
                        r.history[j].span(),
                        format!("realm[{i}].history[{j}].topic: {e}"),
                    );
                }
                if h.limit == 0 || h.limit > MAX_HISTORY_LIMIT {
                    err(
                        r.history[j].span(),
                        format!(
                            "realm[{i}].history[{j}].limit: must be between 1 and {MAX_HISTORY_LIMIT}, got {}",
                            h.limit
                        ),
                    );
                }
            }
            for (j, q) in r.queue.iter().enumerate() {
                let cfg = q.get_ref();
                if let Err(e) = cfg.validate() {
                    err(
                        q.span(),
                        format!("realm[{i}].queue[{j}] ({}): {e}", cfg.name),
                    );
                }
                if !r.role.is_empty() || r.authorizer.is_some() {
                    if let Some(why) =
                        crate::queue_service::authorized_queue_name_problem(&cfg.name)
                    {
                        err(q.span(), format!("realm[{i}].queue[{j}].name: {why}"));
                    }
                }
                if r.queue[..j].iter().any(|o| o.get_ref().name == cfg.name) {
                    err(
                        q.span(),
                        format!(
                            "realm[{i}].queue[{j}]: queue \"{}\" is defined twice",
                            cfg.name
                        ),
                    );
                }
            }
            for (j, b) in r.queue_binding.iter().enumerate() {
                for problem in b.get_ref().problems() {
                    err(b.span(), format!("realm[{i}].queue_binding[{j}].{problem}"));
                }
            }
            if let Some(o) = &r.outbound_http {
                for problem in o.problems() {
                    err(0..0, format!("realm[{i}].{problem}"));
                }
            }
            if let Err(problem) = r.queue_limits.check() {
                err(r.name.span(), format!("realm[{i}].queue_limits.{problem}"));
            }
            if let Some(h) = &r.queue_http {
                if h.secret.len() < 16 {
                    err(
                        0..0,
                        format!("realm[{i}].queue_http.secret: must have at least 16 characters"),
                    );
                }
            }
            if self.realms[..i].iter().any(|o| o.name.get_ref() == name) {
                err(
                    r.name.span(),
                    format!("realm[{i}].name: realm \"{name}\" is defined twice"),
                );
            }
        }
        let max = *self.limits.max_message_size.get_ref();
        if !(512..=MAX_MESSAGE_SIZE_LIMIT).contains(&max) {
            err(
                self.limits.max_message_size.span(),
                format!("limits.max_message_size: {max} is outside 512..={MAX_MESSAGE_SIZE_LIMIT} bytes"),
            );
        }
        if *self.limits.outbound_queue.get_ref() == 0 {
            err(
                self.limits.outbound_queue.span(),
                "limits.outbound_queue: must be at least 1".to_string(),
            );
        }
        if self.limits.max_handshake_message_size < 1024 {
            err(
                0..0,
                format!(
                    "limits.max_handshake_message_size: {} is below the minimum of 1024 bytes",
                    self.limits.max_handshake_message_size
                ),
            );
        }
        use crate::transport::MIN_REQUEST_HEAD_SIZE;
        if !(MIN_REQUEST_HEAD_SIZE..=1 << 20).contains(&self.limits.max_request_head_size) {
            err(
                0..0,
                format!(
                    "limits.max_request_head_size: {} is outside {MIN_REQUEST_HEAD_SIZE}..=1048576 bytes",
                    self.limits.max_request_head_size
                ),
            );
        }
        if self.limits.max_uri_length < 64 {
            err(
                0..0,
                format!(
                    "limits.max_uri_length: {} is below the minimum of 64 bytes",
                    self.limits.max_uri_length
                ),
            );
        }
        if self.limits.outbound_queue_bytes < 64 * 1024 {
            err(
                0..0,
                format!(
                    "limits.outbound_queue_bytes: {} is below the minimum of 65536 bytes",
                    self.limits.outbound_queue_bytes
                ),
            );
        }
        let prefix = self.limits.ipv6_prefix_length;
        if !(1..=128).contains(&prefix) {
            err(
                0..0,
                format!("limits.ipv6_prefix_length: {prefix} is outside 1..=128 bits"),
            );
        }
        let sndbuf = self.limits.socket_send_buffer;
        if sndbuf != 0 && sndbuf < MIN_SOCKET_SEND_BUFFER {
            err(
                0..0,
                format!(
                    "limits.socket_send_buffer: {sndbuf} is below the minimum of \
                     {MIN_SOCKET_SEND_BUFFER} bytes (0: the kernel's autotuning)"
                ),
            );
        }
        if self.limits.total_outbound_bytes < self.limits.outbound_queue_bytes {
            err(
                0..0,
                format!(
                    "limits.total_outbound_bytes: {} is below limits.outbound_queue_bytes ({})",
                    self.limits.total_outbound_bytes, self.limits.outbound_queue_bytes
                ),
            );
        }
        errs
    }

    /// What a client may send before its session exists.
    pub fn handshake_limits(&self) -> switchyard_router::HandshakeLimits {
        switchyard_router::HandshakeLimits {
            max_message: self.limits.max_handshake_message_size,
            max_authid: self.limits.max_authid_length,
            max_realm: self.limits.max_uri_length,
            ..switchyard_router::HandshakeLimits::default()
        }
    }

    /// The listeners (validated by `parse`).
    pub fn listener_configs(&self) -> Result<Vec<ListenerConfig>, String> {
        self.listeners
            .iter()
            .map(|l| l.get_ref().resolve())
            .collect()
    }

    pub fn realm_configs(&self) -> Vec<RealmConfig> {
        self.realms
            .iter()
            .map(|r| {
                let mut c = RealmConfig::new(r.name.get_ref().clone());
                c.uri_check = r.uri_check;
                c.disclose_caller = r.disclose_caller;
                if let Some(limit) = &r.call_queue_limit {
                    c.call_queue_limit = *limit.get_ref();
                }
                c.disclose_publisher = r.disclose_publisher;
                if let Some(limit) = r.retained_topics_limit {
                    c.retained_topics_limit = limit;
                }
                c.history = r.history.iter().map(|h| h.get_ref().clone()).collect();
                if let Some(a) = &r.auth {
                    c.auth = a.get_ref().clone();
                }
                c.roles = r.role.iter().map(|x| x.get_ref().clone()).collect();
                c.authorizer = r.authorizer.clone();
                if let Some(t) = r.authorizer_timeout {
                    c.authorizer_timeout = t;
                }
                if let Some(n) = r.max_subscriptions_per_session {
                    c.max_subscriptions_per_session = n;
                }
                if let Some(n) = r.max_registrations_per_session {
                    c.max_registrations_per_session = n;
                }
                if let Some(n) = r.max_subscriptions {
                    c.max_subscriptions = n;
                }
                if let Some(n) = r.max_registrations {
                    c.max_registrations = n;
                }
                if let Some(n) = r.max_authorizer_cache_entries {
                    c.max_authorizer_cache_entries = n;
                }
                if let Some(n) = r.max_queued_call_bytes {
                    c.max_queued_call_bytes = n;
                }
                if let Some(n) = r.max_testament_bytes {
                    c.max_testament_bytes = n;
                }
                if let Some(n) = r.max_messages_per_second {
                    c.max_messages_per_second = n;
                }
                if let Some(n) = r.max_calls_in_flight_per_session {
                    c.max_calls_in_flight_per_session = n;
                }
                if let Some(n) = r.max_retained_bytes {
                    c.max_retained_bytes = n;
                }
                if let Some(n) = r.max_testaments_per_session {
                    c.max_testaments_per_session = n;
                }
                if let Some(n) = r.max_testament_bytes_per_session {
                    c.max_testament_bytes_per_session = n;
                }
                c.max_uri_length = self.limits.max_uri_length;
                c.app_auth = r.http_auth.as_ref().map(crate::app_auth::handle);
                c
            })
            .collect()
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_gives_defaults() {
        let c = Config::parse("").expect("valid");
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.realms[0].name.get_ref(), "realm1");
        assert_eq!(*c.limits.max_message_size.get_ref(), 1 << 20);
    }

    #[test]
    fn socket_send_buffer_defaults_to_256_kib_and_refuses_tiny_values() {
        let c = Config::parse("").expect("valid");
        assert_eq!(c.limits.transport_settings().socket_send_buffer, 256 << 10);
        let c = Config::parse("[limits]\nsocket_send_buffer = 0\n").expect("valid");
        assert_eq!(c.limits.socket_send_buffer, 0, "0: the kernel's autotuning");
        let errs = Config::parse("[limits]\nsocket_send_buffer = 4096\n").expect_err("invalid");
        assert!(
            format!("{errs:?}").contains("limits.socket_send_buffer: 4096 is below the minimum"),
            "{errs:?}"
        );
    }

    #[test]
    fn max_request_head_size_outside_its_range_is_rejected() {
        let c = Config::parse("").expect("valid");
        assert_eq!(c.limits.transport_settings().max_request_head, 64 << 10);
        for (value, ok) in [(4096, false), (8192, true), (65536, true), (2 << 20, false)] {
            let parsed = Config::parse(&format!("[limits]\nmax_request_head_size = {value}\n"));
            match parsed {
                Ok(_) => assert!(ok, "{value} accepted"),
                Err(errs) => {
                    assert!(!ok, "{value} refused: {errs:?}");
                    assert!(
                        format!("{errs:?}").contains("limits.max_request_head_size"),
                        "{errs:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn operations_listener_defaults_to_loopback_beside_the_default_wamp_listeners() {
        let c = Config::parse("[[listener]]\ntype = \"operations\"\n").expect("valid");
        let l = c.listener_configs().expect("listeners");
        assert_eq!(l.len(), 3, "{l:?}");
        assert!(matches!(
            l[0],
            ListenerConfig::Operations { address, shutdown_delay }
                if address == SocketAddr::from(DEFAULT_OPERATIONS_ADDRESS)
                    && address.ip().is_loopback()
                    && shutdown_delay.is_zero()
        ));
        assert!(matches!(l[1], ListenerConfig::Websocket { .. }));
    }

    #[test]
    fn websocket_testee_listener_parses_and_refuses_the_wamp_keys() {
        let c = Config::parse(
            "[[listener]]\ntype = \"websocket-testee\"\naddress = \"127.0.0.1:9001\"\n\
             allowed_origins = [\"https://a.example\"]\n",
        )
        .expect("valid");
        let l = c.listener_configs().expect("listeners");
        // A testee alone opens no WAMP listener.
        assert_eq!(l.len(), 1, "{l:?}");
        assert!(matches!(
            &l[0],
            ListenerConfig::WebsocketTestee { address, path, tls: None, allowed_origins: Some(o) }
                if *address == SocketAddr::from(([127, 0, 0, 1], 9001))
                    && path == "/ws"
                    && o.len() == 1
        ));
        for (key, expected) in [
            (
                "auth_methods = [\"ticket\"]\n",
                "`auth_methods` does not apply",
            ),
            ("metrics_path = \"/m\"\n", "`metrics_path` does not apply"),
            ("path = \"x\"\n", "must start with '/'"),
        ] {
            let text = format!(
                "[[listener]]\ntype = \"websocket-testee\"\naddress = \"127.0.0.1:9\"\n{key}"
            );
            let errs = Config::parse(&text).expect_err("invalid");
            assert!(errs[0].message.contains(expected), "{errs:?}");
        }
        let errs =
            Config::parse("[[listener]]\ntype = \"websocket-testee\"\n").expect_err("invalid");
        assert!(errs[0].message.contains("needs `address`"), "{errs:?}");
    }

    #[test]
    fn operations_listener_errors_report_line_and_key() {
        let cases = [
            (
                "path = \"/x\"\n",
                "`path` does not apply to an operations listener",
            ),
            ("metrics_path = \"/m\"\n", "`metrics_path` does not apply"),
            (
                "shutdown_delay = \"10m\"\n",
                "`shutdown_delay` is at most 5m",
            ),
        ];
        for (key, expected) in cases {
            let text =
                format!("[[realm]]\nname = \"r\"\n[[listener]]\ntype = \"operations\"\n{key}");
            let errs = Config::parse(&text).expect_err("invalid");
            assert_eq!(errs[0].line, Some(3), "{errs:?}");
            assert!(errs[0].message.contains(expected), "{errs:?}");
        }
        let twice = "[[listener]]\ntype = \"operations\"\n[[listener]]\ntype = \"operations\"\naddress = \"127.0.0.1:9\"\n";
        let errs = Config::parse(twice).expect_err("invalid");
        assert!(
            errs[0].message.contains("a second operations listener"),
            "{errs:?}"
        );
        let ws = "[[listener]]\ntype = \"websocket\"\naddress = \"127.0.0.1:9\"\nshutdown_delay = \"1s\"\n";
        let errs = Config::parse(ws).expect_err("invalid");
        assert!(
            errs[0].message.contains("operations listener only"),
            "{errs:?}"
        );
    }

    #[test]
    fn unknown_key_reports_line_and_key() {
        let text = "[limits]\nmax_message_size = 4096\noutbound_qeue = 3\n";
        let errs = Config::parse(text).expect_err("invalid");
        assert_eq!(errs[0].line, Some(3), "{errs:?}");
        assert!(
            errs[0].message.contains("outbound_qeue"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn semantic_errors_report_line() {
        let text =
            "[[realm]]\nname = \"a\"\n\n[[realm]]\nname = \"a\"\n[limits]\nmax_message_size = 10\n";
        let errs = Config::parse(text).expect_err("invalid");
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            shown
                .iter()
                .any(|e| e.starts_with("line 5:") && e.contains("defined twice")),
            "{shown:?}"
        );
        assert!(
            shown
                .iter()
                .any(|e| e.starts_with("line 7:") && e.contains("max_message_size")),
            "{shown:?}"
        );
    }

    #[test]
    fn wrong_type_reports_line() {
        let errs = Config::parse("[[listener]]\ntype = \"websocket\"\naddress = 8080\n")
            .expect_err("invalid");
        assert_eq!(errs[0].line, Some(3), "{errs:?}");
    }

    /// PEM armour around DER bytes (rcgen is built without its `pem`
    /// feature, which would add a second `base64` version).
    fn pem(label: &str, der: &[u8]) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|l| std::str::from_utf8(l).expect("base64 is ASCII"))
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    /// A self-signed certificate and its key, written to `dir`.
    fn write_cert(dir: &Path) -> (PathBuf, PathBuf) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, pem("CERTIFICATE", c.cert.der())).expect("write cert");
        std::fs::write(&key, pem("PRIVATE KEY", &c.signing_key.serialize_der()))
            .expect("write key");
        (cert, key)
    }

    #[test]
    fn listener_security_keys_parse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = write_cert(dir.path());
        let text = format!(
            "[[listener]]\ntype = \"websocket\"\naddress = \"127.0.0.1:8443\"\n\
             tls = {{ cert = \"{}\", key = \"{}\", client_ca = \"{}\", client_auth = \"optional\" }}\n\
             auth_methods = [\"ticket\", \"tls\"]\n\
             allowed_origins = [\"https://app.example.com\", \"https://*.example.com\"]\n\n\
             [[listener]]\ntype = \"rawsocket\"\naddress = \"127.0.0.1:8444\"\n\n\
             [listener.tls]\ncert = \"{}\"\nkey = \"{}\"\n\n\
             [limits]\nmax_connections_per_address = 3\n",
            cert.display(),
            key.display(),
            cert.display(),
            cert.display(),
            key.display()
        );
        let c = Config::parse(&text).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(c.limits.max_connections_per_address, 3);
        let l = c.listener_configs().expect("listeners");
        match &l[0] {
            ListenerConfig::Websocket {
                tls: Some(t),
                auth_methods: Some(m),
                allowed_origins: Some(o),
                ..
            } => {
                assert_eq!(t.client_auth, crate::transport::tls::ClientAuth::Optional);
                assert_eq!(m, &["ticket", "tls"]);
                assert_eq!(o.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            &l[1],
            ListenerConfig::RawsocketTcp { tls: Some(_), .. }
        ));
        assert_eq!(
            Config::parse("")
                .expect("defaults")
                .limits
                .max_connections_per_address,
            256
        );
    }

    #[test]
    fn listener_security_errors_report_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = write_cert(dir.path());
        let missing = dir.path().join("missing.pem");
        let text = format!(
            "[[listener]]\ntype = \"websocket\"\naddress = \"127.0.0.1:8443\"\n\
             tls = {{ cert = \"{}\", key = \"{}\" }}\n\n\
             [[listener]]\ntype = \"rawsocket\"\naddress = \"127.0.0.1:8444\"\n\
             tls = {{ cert = \"{}\", key = \"{}\" }}\n\
             auth_methods = [\"ticket\", \"kerberos\"]\n\n\
             [[listener]]\ntype = \"rawsocket\"\naddress = \"127.0.0.1:8445\"\n\
             allowed_origins = [\"https://a.example.com\"]\n\n\
             [[listener]]\ntype = \"websocket\"\naddress = \"127.0.0.1:8446\"\n\
             allowed_origins = [\"app.example.com\"]\n\
             auth_methods = [\"tls\"]\n",
            missing.display(),
            key.display(),
            key.display(),
            cert.display(),
        );
        let errs = Config::parse(&text).expect_err("invalid");
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let has = |line: &str, what: &[&str]| {
            assert!(
                shown
                    .iter()
                    .any(|e| e.starts_with(line) && what.iter().all(|w| e.contains(w))),
                "{line} {what:?} not in {shown:#?}"
            );
        };
        has(
            "line 4:",
            &["listener[0].tls.cert", "missing.pem", "cannot read"],
        );
        has("line 9:", &["listener[1].tls.cert", "no certificate found"]);
        has("line 10:", &["listener[1].auth_methods", "\"kerberos\""]);
        has("line 12:", &["listener[2]", "allowed_origins", "websocket"]);
        has(
            "line 20:",
            &["listener[3].allowed_origins", "app.example.com"],
        );
        has(
            "line 21:",
            &["listener[3].auth_methods", "client certificates"],
        );
    }

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../../../switchyard.example.toml");
        Config::parse(text).unwrap_or_else(|e| panic!("example config invalid: {e:?}"));
    }

    /// The commented-out settings of switchyard.example.toml are meant to be
    /// uncommented: with every one of them uncommented, the file still
    /// deserializes (every key exists, in the table it is shown in, with a
    /// value of the right type). Validation is not run: the file names
    /// certificate files and hashes that do not exist here.
    #[test]
    fn example_config_commented_keys_exist() {
        let text = include_str!("../../../switchyard.example.toml");
        let setting = |rest: &str| {
            rest.starts_with('[')
                || rest.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                })
        };
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if setting(rest) => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(
            uncommented.contains("\n[[realm.queue]]\n"),
            "nothing uncommented"
        );
        if let Err(e) = toml::from_str::<Config>(&uncommented) {
            panic!("switchyard.example.toml, uncommented: {e}");
        }
    }

    /// switchyard.example.toml presents its uncommented values as the
    /// defaults: parsed, it must configure exactly what no file does.
    #[test]
    fn example_config_states_the_defaults() {
        let text = include_str!("../../../switchyard.example.toml");
        let example = Config::parse(text).unwrap_or_else(|e| panic!("example config: {e:?}"));
        let default = Config::default();
        let unspan = |l: &Limits| {
            let mut l = l.clone();
            l.max_message_size = Spanned::new(0..0, *l.max_message_size.get_ref());
            l.outbound_queue = Spanned::new(0..0, *l.outbound_queue.get_ref());
            format!("{l:?}")
        };
        assert_eq!(unspan(&example.limits), unspan(&default.limits));
        // `level` unset means "info" (main.rs); the example spells it out.
        assert_eq!(example.log.level.as_deref(), Some("info"));
        let log = |l: &LogConfig| {
            let mut l = format!("{l:?}");
            l = l.replace("level: Some(\"info\")", "level: None");
            l
        };
        assert_eq!(log(&example.log), log(&default.log));
        assert_eq!(
            format!("{:?}", example.runtime),
            format!("{:?}", default.runtime)
        );
        assert_eq!(
            format!("{:?}", example.storage),
            format!("{:?}", default.storage)
        );
        assert_eq!(
            format!("{:?}", example.realm_configs()),
            format!("{:?}", default.realm_configs())
        );
        let listeners = |c: &Config| {
            c.listeners
                .iter()
                .map(|l| l.get_ref().resolve().map(|r| format!("{r:?}")))
                .collect::<Vec<_>>()
        };
        assert_eq!(listeners(&example), listeners(&default));
    }
}
