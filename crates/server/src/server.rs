//! Starts the listeners, accepts connections and shuts down on a signal;
//! on SIGHUP re-reads the TLS certificates. The operations listener starts
//! first and reports, on `/readyz`, each other listener, bridge and queue
//! store as it comes up, and the shutdown as it begins.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use switchyard_router::metrics::Metrics;
use switchyard_router::{Router, TransportInfo};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ListenerConfig};
use crate::operations::{CheckId, Readiness};
use crate::transport::accept::{accept_loop, Remote};
use crate::transport::conn_limit::{AddressGuard, AddressLimiter, Guarded};
use crate::transport::origin::OriginPolicy;
use crate::transport::sockopt::ConnOptions;
use crate::transport::tls::{self, TlsFiles, TlsListener};
use crate::transport::{http_reply_and_close, rawsocket, websocket, ws_upgrade, Settings};

/// How long shutdown waits for sessions to close after GOODBYE.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Refused WebSocket connections answered with HTTP 429 at once; beyond
/// this (a flood) they are just closed.
const MAX_REFUSAL_REPLIES: usize = 32;

/// What every TCP listener shares, and what is its own.
#[derive(Clone)]
struct Tcp {
    limiter: Arc<AddressLimiter>,
    metrics: Arc<Metrics>,
    refusals: Arc<Semaphore>,
    tls: Option<Arc<TlsListener>>,
    auth_methods: Option<Vec<String>>,
    /// The listener's connection options (set on each connection only
    /// where not inherited from the listener).
    options: ConnOptions,
}

impl Tcp {
    /// The transport facts known after accept (and TLS).
    fn transport(&self, kind: &'static str, ip: Option<IpAddr>) -> TransportInfo {
        let mut t = TransportInfo::new(kind, ip);
        t.auth_methods = self.auth_methods.clone();
        t
    }

    /// A slot under `max_connections_per_address`; `Err` (logged) if the
    /// address is at its limit.
    fn admit(&self, ip: Option<IpAddr>) -> Result<Option<AddressGuard>, ()> {
        match ip {
            None => Ok(None),
            Some(ip) => self.limiter.acquire(ip).map(Some).ok_or_else(|| {
                Metrics::inc(&self.metrics.connections_refused);
            }),
        }
    }
}

/// The durable HTTP subscribers of the bridges on `realm`, each with the
/// name of its queue.
fn durable_subscribers(config: &Config, realm: &str) -> Vec<crate::queue_service::SubscriberQueue> {
    config
        .bridges
        .iter()
        .map(|b| b.get_ref())
        .filter(|b| b.realm == realm)
        .flat_map(|b| b.subscribers.iter().enumerate())
        .filter_map(|(i, s)| {
            s.durable
                .as_ref()
                .map(|d| crate::queue_service::SubscriberQueue {
                    queue: d.queue_name(i),
                    subscriber: s.clone(),
                })
        })
        .collect()
}

/// Runs the router until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), String> {
    // Listen for signals before anything can be reached: a SIGHUP or SIGTERM sent as soon as
    // the port opens must not be lost (nor kill the process by its default action).
    let signals = Signals::listen();
    switchyard_router::auth::ticket::TicketChecks::configure(
        config.limits.max_concurrent_ticket_checks,
        config.limits.ticket_check_wait,
    );
    crate::outbound::client::configure(&config.outbound_tls)?;
    // Cluster mode: reach NATS first; a node that cannot says so and stops.
    let cluster = match &config.cluster {
        Some(c) => Some(crate::cluster::Cluster::connect(c.get_ref()).await?),
        None => None,
    };
    let router =
        Router::with_backplanes(config.realm_configs(), config.handshake_limits(), |realm| {
            cluster.as_ref().map(|c| c.backplane(realm))
        });
    // Before any listener opens: the realms follow their interest from
    // their first subscription on.
    let _cluster_links = match &cluster {
        Some(c) => c.start(&router).await?,
        None => Vec::new(),
    };
    let mut settings = config.limits.transport_settings();
    settings.traffic = Some(router.metrics().traffic.clone());
    router
        .metrics()
        .add_source(Box::new(crate::operations::process::render));
    let weak = Arc::downgrade(&router);
    router.metrics().add_source(Box::new(move |out| {
        crate::operations::routing::render(&weak, out)
    }));
    let listeners = config.listener_configs()?;
    // Before the first listener (the operations one) is bound.
    crate::transport::accept::init_reserve();
    let readiness = Arc::new(Readiness::default());
    if let Some(c) = &cluster {
        // Asked at each /readyz and scrape: the NATS client reconnects by
        // itself, and the answer follows it.
        readiness.probe(
            "cluster",
            "nats".to_string(),
            "cluster: NATS disconnected".to_string(),
            c.connected_probe(),
        );
        let connected = c.connected_probe();
        router.metrics().add_source(Box::new(c.metrics_source()));
        router.metrics().add_source(Box::new(move |out| {
            out.push_str("# HELP switchyard_cluster_nats_connected Whether this node's NATS connection is up (1) or not (0).\n# TYPE switchyard_cluster_nats_connected gauge\n");
            out.push_str(if connected() {
                "switchyard_cluster_nats_connected 1\n"
            } else {
                "switchyard_cluster_nats_connected 0\n"
            });
        }));
    }
    // The operations listener outlives the others: /readyz answers 503
    // while the sessions close.
    let ops_stop = CancellationToken::new();
    let mut shutdown_delay = Duration::ZERO;
    for l in &listeners {
        if let ListenerConfig::Operations {
            address,
            shutdown_delay: delay,
        } = l
        {
            shutdown_delay = *delay;
            let listener = bind_tcp(*address, &ConnOptions::plain()).await?;
            let name = format!("http://{}", local(&listener, *address));
            if !address.ip().is_loopback() {
                tracing::warn!("operations endpoints on {name}: not loopback, and not authenticated: keep the address private");
            }
            tracing::info!("operations endpoints on {name}: /healthz, /readyz, /metrics");
            let ops = Arc::new(crate::operations::Operations {
                metrics: router.metrics().clone(),
                readiness: readiness.clone(),
            });
            tokio::spawn(crate::operations::serve(
                listener,
                name,
                ops,
                ops_stop.clone(),
            ));
        }
    }
    let listener_checks: Vec<Option<CheckId>> = listeners
        .iter()
        .map(|l| listener_check(l).map(|name| readiness.expect("listener", name)))
        .collect();
    let bridge_checks: Vec<CheckId> = config
        .bridges
        .iter()
        .map(|b| readiness.expect("bridge", format!("http://{}", b.get_ref().address)))
        .collect();
    let store_checks: Vec<CheckId> = config
        .realms
        .iter()
        .map(|r| readiness.expect("queue_store", r.name.get_ref().clone()))
        .collect();
    // Queues first: a client must not find the port open before the
    // switchyard.queue.* procedures are registered.
    let mut queue_services = Vec::new();
    let jetstream_queues = config
        .cluster
        .as_ref()
        .is_some_and(|c| c.get_ref().queues.jetstream());
    let mut replicated = Vec::new();
    let mut checks = Vec::new();
    if !config.realms.is_empty() && !jetstream_queues {
        crate::data_dir::prepare_dir(&config.storage.data_dir)?;
    }
    for (entry, check) in config.realms.iter().zip(store_checks) {
        let Some(realm) = router.realm(entry.name.get_ref()).cloned() else {
            continue;
        };
        let settings = crate::queue_service::RealmQueues {
            configs: entry.queue.iter().map(|q| q.get_ref().clone()).collect(),
            bindings: entry
                .queue_binding
                .iter()
                .map(|b| b.get_ref().clone())
                .collect(),
            http_signing: entry.queue_http.clone(),
            outbound_http: entry.outbound_http.clone().unwrap_or_default(),
            limits: entry.queue_limits.clone(),
            subscribers: durable_subscribers(&config, entry.name.get_ref()),
        };
        if jetstream_queues {
            // Cluster mode with JetStream queues: served below, once for all realms.
            replicated.push((realm, settings));
            checks.push(check);
            continue;
        }
        let service =
            crate::queue_service::QueueService::start(realm, &config.storage.data_dir, settings)
                .await?;
        // Asked at each /readyz: a store that refuses writes (a full disk)
        // makes the node not ready until it recovers.
        let weak = Arc::downgrade(&service);
        readiness.probe(
            "queue_store",
            format!("{} (writes)", service.realm_name()),
            format!(
                "queue store of realm \"{}\" refuses writes (see the log)",
                service.realm_name()
            ),
            move || weak.upgrade().is_none_or(|s| s.store_healthy()),
        );
        queue_services.push(service);
        readiness.ready(check);
    }
    let cluster_queues = match (&cluster, &config.cluster) {
        (Some(c), Some(section)) if jetstream_queues => {
            let q = crate::cluster::queues::start(
                c.client().clone(),
                c.prefix(),
                c.node(),
                &section.get_ref().queues,
                replicated,
            )
            .await?;
            for check in checks {
                readiness.ready(check);
            }
            Some(q)
        }
        _ => None,
    };
    let stop = CancellationToken::new();
    let mut unix_paths = Vec::new();
    let mut tls_listeners = Vec::new();
    let shared = Tcp {
        limiter: AddressLimiter::new(
            config.limits.max_connections_per_address,
            config.limits.ipv6_prefix_length,
        ),
        metrics: router.metrics().clone(),
        refusals: Arc::new(Semaphore::new(MAX_REFUSAL_REPLIES)),
        tls: None,
        auth_methods: None,
        options: ConnOptions::plain(),
    };

    for (l, check) in listeners.into_iter().zip(listener_checks) {
        match l {
            ListenerConfig::Operations { .. } => {}
            ListenerConfig::Websocket {
                address,
                path,
                tls,
                auth_methods,
                allowed_origins,
                metrics_path,
            } => {
                let options = ConnOptions::websocket(&settings);
                let bound =
                    WebsocketListener::bind(address, &path, tls, allowed_origins, &options).await?;
                let name = bound.name.clone();
                let ep = websocket::Endpoint {
                    router: router.clone(),
                    settings: settings.clone(),
                    path: path.clone(),
                    origins: bound.origins.clone(),
                    metrics_path,
                    pages: crate::admin::site_for(&config, address, &path, &name)
                        .map(|site| site as Arc<dyn websocket::Pages>),
                    mode: websocket::Mode::Wamp,
                };
                tracing::info!(
                    "listening for WAMP over WebSocket on {name}{}",
                    methods_note(&auth_methods)
                );
                let tcp = Tcp {
                    auth_methods,
                    options,
                    ..shared.clone()
                };
                tls_listeners.extend(bound.serve(ep, tcp, &stop));
            }
            ListenerConfig::WebsocketTestee {
                address,
                path,
                tls,
                allowed_origins,
            } => {
                let options = ConnOptions::websocket(&settings);
                let bound =
                    WebsocketListener::bind(address, &path, tls, allowed_origins, &options).await?;
                let ep = websocket::Endpoint {
                    router: router.clone(),
                    settings: settings.clone(),
                    path,
                    origins: bound.origins.clone(),
                    metrics_path: None,
                    pages: None,
                    mode: websocket::Mode::Echo,
                };
                tracing::warn!(
                    "listening on {} as a WebSocket conformance testee: it echoes every message (no WAMP); for tests only",
                    bound.name
                );
                let tcp = Tcp {
                    options,
                    ..shared.clone()
                };
                tls_listeners.extend(bound.serve(ep, tcp, &stop));
            }
            ListenerConfig::RawsocketTcp {
                address,
                tls,
                auth_methods,
            } => {
                let options = ConnOptions::rawsocket(&settings);
                let listener = bind_tcp(address, &options).await?;
                let scheme = if tls.is_some() { "tls" } else { "tcp" };
                let name = format!("{scheme}://{}", local(&listener, address));
                let tls = tls.map(|f| TlsListener::new(name.clone(), f)).transpose()?;
                tracing::info!(
                    "listening for WAMP over RawSocket on {name}{}",
                    methods_note(&auth_methods)
                );
                let tcp = Tcp {
                    tls: tls.clone(),
                    auth_methods,
                    options,
                    ..shared.clone()
                };
                tls_listeners.extend(tls);
                let (router, settings) = (router.clone(), settings.clone());
                tokio::spawn(accept_loop(
                    listener,
                    name,
                    shared.metrics.clone(),
                    stop.clone(),
                    move |s, remote| serve_rawsocket_tcp(s, remote, &router, &settings, &tcp),
                ));
            }
            ListenerConfig::RawsocketUnix { path, auth_methods } => {
                let listener = bind_unix(&path)?;
                tracing::info!(
                    "listening for WAMP over RawSocket on unix:{}{}",
                    path.display(),
                    methods_note(&auth_methods)
                );
                unix_paths.push(path.clone());
                let (router, settings) = (router.clone(), settings.clone());
                tokio::spawn(accept_loop(
                    listener,
                    format!("unix:{}", path.display()),
                    shared.metrics.clone(),
                    stop.clone(),
                    move |s, remote| {
                        serve_rawsocket_unix(s, remote, &router, &settings, &auth_methods)
                    },
                ));
            }
        }
        // Bound and accepting (a failure to bind ended `run` above).
        if let Some(c) = check {
            readiness.ready(c);
        }
    }
    let bridge_requests = crate::bridge::metrics::RequestMetrics::register(router.metrics());
    let mut bridges = Vec::new();
    for (b, check) in config.bridges.iter().zip(bridge_checks) {
        let bridge = crate::bridge::Bridge::new(
            b.get_ref().clone(),
            &router,
            config.limits.http_body_timeout,
        )?;
        let address = bridge.config().address;
        let listener = bind_tcp(address, &ConnOptions::plain()).await?;
        tracing::info!(
            "HTTP bridge for realm {} on http://{}: POST {} and {}{}",
            bridge.config().realm,
            local(&listener, address),
            bridge.config().publish_path,
            bridge.config().call_path,
            bridge
                .config()
                .jsonrpc_path
                .as_ref()
                .map(|p| format!(", JSON-RPC at {p}"))
                .unwrap_or_default()
        );
        let name = format!("http://{}", local(&listener, address));
        bridges.push(bridge.clone());
        let limits = crate::bridge::ConnLimits {
            limiter: shared.limiter.clone(),
            metrics: shared.metrics.clone(),
            header_timeout: config.limits.handshake_timeout,
            max_request_head: config.limits.max_request_head_size,
            requests: bridge_requests.clone(),
        };
        tokio::spawn(crate::bridge::serve(
            listener,
            name,
            bridge,
            limits,
            stop.clone(),
        ));
        readiness.ready(check);
    }
    let realms: Vec<&str> = router.realms().map(|r| r.name()).collect();
    tracing::info!(realms = ?realms, "switchyard {} ready", env!("CARGO_PKG_VERSION"));
    // After the listeners: a supervised worker finds the port open.
    let processes = crate::process::Processes::start(
        config
            .processes
            .iter()
            .map(|p| p.get_ref().clone())
            .collect(),
        &router,
    )?;

    let mut reloader = crate::reload::Reloader::new(
        router.clone(),
        bridges,
        queue_services.clone(),
        &config,
        config.origin.clone(),
    );
    let signal = wait_for_signal(signals, &tls_listeners, &mut reloader).await;
    readiness.stopping();
    if !shutdown_delay.is_zero() {
        tracing::info!(
            "{signal} received: /readyz answers 503; stopping in {}",
            humantime::format_duration(shutdown_delay)
        );
        tokio::time::sleep(shutdown_delay).await;
    }
    tracing::info!("{signal} received: stopping");
    // The processes first, while the router still serves them: a worker
    // that drains gives its jobs back before its session ends.
    processes.shutdown().await;
    if let Some(q) = &cluster_queues {
        // The queues this node dispatches go to another node at once.
        q.leave().await;
    }
    if let Some(c) = &cluster {
        // The other nodes drop this node's registrations at once.
        c.leave().await;
    }
    tracing::info!("sending GOODBYE to every session");
    stop.cancel();
    router.shutdown();
    if tokio::time::timeout(SHUTDOWN_GRACE, router.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            open = router.connection_count(),
            "connections still open after {SHUTDOWN_GRACE:?}: exiting anyway"
        );
    }
    if let Some(c) = &cluster {
        // The sessions' records leave the cluster's bucket (bounded).
        c.finish().await;
    }
    for q in &queue_services {
        q.close();
    }
    if let Some(q) = &cluster_queues {
        q.close();
    }
    for p in unix_paths {
        let _ = std::fs::remove_file(p);
    }
    ops_stop.cancel();
    tracing::info!("stopped");
    Ok(())
}

/// The name of a WAMP listener's readiness check (its configured address);
/// None for the operations listener, which is up before anything is checked.
fn listener_check(l: &ListenerConfig) -> Option<String> {
    match l {
        ListenerConfig::Websocket {
            address, path, tls, ..
        } => Some(format!(
            "{}://{address}{path}",
            if tls.is_some() { "wss" } else { "ws" }
        )),
        ListenerConfig::WebsocketTestee {
            address, path, tls, ..
        } => Some(format!(
            "testee {}://{address}{path}",
            if tls.is_some() { "wss" } else { "ws" }
        )),
        ListenerConfig::RawsocketTcp { address, tls, .. } => Some(format!(
            "{}://{address}",
            if tls.is_some() { "tls" } else { "tcp" }
        )),
        ListenerConfig::RawsocketUnix { path, .. } => Some(format!("unix:{}", path.display())),
        ListenerConfig::Operations { .. } => None,
    }
}

/// A bound WebSocket listener (WAMP or the conformance testee), before it
/// serves: its socket, its name (`ws://` or `wss://` address and path), its
/// TLS and its origin policy.
struct WebsocketListener {
    listener: TcpListener,
    name: String,
    tls: Option<Arc<TlsListener>>,
    origins: Option<Arc<OriginPolicy>>,
}

impl WebsocketListener {
    async fn bind(
        address: SocketAddr,
        path: &str,
        tls: Option<TlsFiles>,
        allowed_origins: Option<Vec<String>>,
        options: &ConnOptions,
    ) -> Result<WebsocketListener, String> {
        let listener = bind_tcp(address, options).await?;
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        let name = format!("{scheme}://{}{path}", local(&listener, address));
        let tls = tls.map(|f| TlsListener::new(name.clone(), f)).transpose()?;
        let origins = origin_policy(&name, allowed_origins)?;
        Ok(WebsocketListener {
            listener,
            name,
            tls,
            origins,
        })
    }

    /// Accepts connections into `ep` until `stop`; returns the listener's
    /// TLS (reloaded with the others).
    fn serve(
        self,
        ep: websocket::Endpoint,
        tcp: Tcp,
        stop: &CancellationToken,
    ) -> Option<Arc<TlsListener>> {
        let tcp = Tcp {
            tls: self.tls.clone(),
            ..tcp
        };
        tokio::spawn(accept_loop(
            self.listener,
            self.name,
            tcp.metrics.clone(),
            stop.clone(),
            move |s, remote| serve_websocket(s, remote, &ep, &tcp),
        ));
        self.tls
    }
}

/// A WebSocket listener's `allowed_origins`, parsed (None: every origin
/// may connect); an error names the listener.
fn origin_policy(
    name: &str,
    allowed_origins: Option<Vec<String>>,
) -> Result<Option<Arc<OriginPolicy>>, String> {
    allowed_origins
        .map(|list| {
            OriginPolicy::parse(&list)
                .map(Arc::new)
                .map_err(|e| format!("{name}: allowed_origins: {e}"))
        })
        .transpose()
}

/// " (auth methods: ticket, wampcra)" for a listener that restricts them.
fn methods_note(methods: &Option<Vec<String>>) -> String {
    match methods {
        Some(m) => format!(" (auth methods: {})", m.join(", ")),
        None => String::new(),
    }
}

/// The signals the router answers, registered at startup (a signal is kept
/// from then on until it is waited for).
struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn listen() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind, name: &str, without: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("cannot listen for {name} ({without}): {e}");
                None
            }
        };
        Signals {
            int: listen(
                SignalKind::interrupt(),
                "SIGINT",
                "Ctrl-C stops the process at once",
            ),
            term: listen(
                SignalKind::terminate(),
                "SIGTERM",
                "it stops the process at once",
            ),
            hup: listen(
                SignalKind::hangup(),
                "SIGHUP",
                "the configuration and TLS certificates cannot be reloaded",
            ),
        }
    }
}

/// Waits for SIGINT or SIGTERM (returned); on SIGHUP reloads the
/// configuration file (see `reload.rs`) and the TLS material of every TLS
/// listener, and waits on.
async fn wait_for_signal(
    mut signals: Signals,
    tls: &[Arc<TlsListener>],
    reloader: &mut crate::reload::Reloader,
) -> &'static str {
    loop {
        tokio::select! {
            _ = next_signal(&mut signals.int) => return "SIGINT",
            _ = next_signal(&mut signals.term) => return "SIGTERM",
            _ = next_signal(&mut signals.hup) => {
                tracing::info!("SIGHUP received: reloading the configuration and the TLS certificates");
                reloader.reload().await;
                reload_tls(tls);
            }
        }
    }
}

/// The next delivery of an optional signal stream; pending forever without one.
async fn next_signal(s: &mut Option<tokio::signal::unix::Signal>) {
    if let Some(s) = s {
        if s.recv().await.is_some() {
            return;
        }
    }
    std::future::pending::<()>().await
}

/// SIGHUP: every TLS listener re-reads its certificate, key and client CA.
/// Connections accepted afterwards use the new material; open ones keep
/// theirs. A listener whose files are now invalid keeps its old material.
fn reload_tls(listeners: &[Arc<TlsListener>]) {
    if listeners.is_empty() {
        tracing::info!("SIGHUP received: no TLS listener, nothing to reload");
        return;
    }
    for l in listeners {
        match l.reload() {
            Ok(m) => tracing::info!(
                listener = %l.name,
                "SIGHUP: TLS certificate reloaded from {}: SHA-256 {}{}",
                l.files().cert.display(),
                m.fingerprint,
                m.common_name.map(|cn| format!(", CN {cn}")).unwrap_or_default()
            ),
            Err(e) => tracing::error!(
                listener = %l.name,
                "SIGHUP: TLS reload failed, still serving the previous certificate: {e}"
            ),
        }
    }
}

fn local(l: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    l.local_addr().unwrap_or(fallback)
}

/// Connections the kernel holds for a listener until it accepts them (capped
/// by `net.core.somaxconn`, 4096 on current Linux). The default of `bind` is
/// 128: when thousands of clients connect at once (a soak of 10,000 churning
/// sessions, every client reconnecting after a restart), the queue overflows,
/// the kernel drops their SYNs and each such client waits out TCP's
/// retransmission timeouts (1 s, 3 s, 7 s...) before it is even accepted.
const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket whose connections get `options` (from the listener
/// where the system lets them inherit it, see `transport::sockopt`).
async fn bind_tcp(address: SocketAddr, options: &ConnOptions) -> Result<TcpListener, String> {
    let fail = |e: std::io::Error| format!("cannot listen on {address}: {e}");
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(fail)?;
    // As `TcpListener::bind` does: a restarted router binds again at once
    // while connections of its previous run wait out TIME_WAIT.
    socket.set_reuseaddr(true).map_err(fail)?;
    if let Err(e) = options.apply_to_listener(&socket) {
        tracing::warn!("{address}: TCP options of its connections not set: {e}");
    }
    socket.bind(address).map_err(fail)?;
    socket.listen(LISTEN_BACKLOG).map_err(fail)
}

fn bind_unix(path: &PathBuf) -> Result<UnixListener, String> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            // A stale socket from an earlier run; a live one would refuse
            // connections only after we remove it, so check first.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "cannot listen on unix:{}: another process is serving it",
                    path.display()
                ));
            }
            let _ = std::fs::remove_file(path);
        } else {
            return Err(format!(
                "cannot listen on unix:{}: the path exists and is not a socket",
                path.display()
            ));
        }
    }
    UnixListener::bind(path).map_err(|e| format!("cannot listen on unix:{}: {e}", path.display()))
}

fn serve_websocket(stream: TcpStream, remote: Remote, ep: &websocket::Endpoint, tcp: &Tcp) {
    let accepted = Instant::now();
    let Ok(guard) = tcp.admit(remote.ip) else {
        refuse_websocket(stream, &remote, tcp);
        return;
    };
    tcp.options.apply_to_stream(&stream);
    let ep = ep.clone();
    let mut transport = tcp.transport("websocket", remote.ip);
    let label = remote.label;
    match tcp.tls.clone() {
        None => {
            // The request head's deadline, as hyper's header timeout.
            let head_by = accepted + ep.settings.handshake_timeout;
            let stream = Guarded::new(stream, guard);
            tokio::spawn(ws_upgrade::serve(stream, label, ep, transport, head_by));
        }
        Some(tls) => {
            tokio::spawn(async move {
                let deadline = accepted + ep.settings.handshake_timeout;
                let Some((stream, cert)) = tls::accept(&tls, stream, deadline, &label, true).await
                else {
                    return;
                };
                transport.tls = true;
                transport.client_cert = cert;
                let head_by = Instant::now() + ep.settings.handshake_timeout;
                let stream = Guarded::new(stream, guard);
                ws_upgrade::serve(stream, label, ep, transport, head_by).await
            });
        }
    }
}

/// A WebSocket connection over the per-address limit: plain HTTP gets a
/// 429 with a readable body (a bounded number at a time), TLS is closed.
fn refuse_websocket(stream: TcpStream, remote: &Remote, tcp: &Tcp) {
    if tcp.tls.is_some() {
        return;
    }
    let Ok(permit) = tcp.refusals.clone().try_acquire_owned() else {
        return;
    };
    let ip = remote.ip.map(|ip| ip.to_string()).unwrap_or_default();
    let body = format!(
        "too many connections from {ip}: at most {} per address are allowed; close one and retry\n",
        tcp.limiter.max()
    );
    let reply = format!(
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Connection: close\r\nRetry-After: 5\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::spawn(async move {
        let _permit = permit;
        let deadline = Instant::now() + Duration::from_secs(2);
        http_reply_and_close(stream, reply.as_bytes(), deadline).await;
    });
}

fn serve_rawsocket_tcp(
    stream: TcpStream,
    remote: Remote,
    router: &Arc<Router>,
    settings: &Settings,
    tcp: &Tcp,
) {
    let accepted = Instant::now();
    let Ok(guard) = tcp.admit(remote.ip) else {
        return; // RawSocket has no way to say why: just close
    };
    tcp.options.apply_to_stream(&stream);
    let mut transport = tcp.transport("rawsocket", remote.ip);
    let (router, settings, label) = (router.clone(), settings.clone(), remote.label);
    match tcp.tls.clone() {
        None => {
            let (r, w) = stream.into_split();
            tokio::spawn(async move {
                let _guard = guard;
                rawsocket::serve(r, w, router, settings, label, transport, accepted).await
            });
        }
        Some(tls) => {
            tokio::spawn(async move {
                let _guard = guard;
                let deadline = accepted + settings.handshake_timeout;
                let Some((stream, cert)) = tls::accept(&tls, stream, deadline, &label, false).await
                else {
                    return;
                };
                transport.tls = true;
                transport.client_cert = cert;
                let (r, w) = tokio::io::split(stream);
                rawsocket::serve(r, w, router, settings, label, transport, accepted).await
            });
        }
    }
}

fn serve_rawsocket_unix(
    stream: UnixStream,
    remote: Remote,
    router: &Arc<Router>,
    settings: &Settings,
    auth_methods: &Option<Vec<String>>,
) {
    let mut transport = TransportInfo::new("rawsocket", None);
    transport.auth_methods = auth_methods.clone();
    let (r, w) = stream.into_split();
    tokio::spawn(rawsocket::serve(
        r,
        w,
        router.clone(),
        settings.clone(),
        remote.label,
        transport,
        Instant::now(),
    ));
}
