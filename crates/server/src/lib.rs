//! The router side of the `switchyard` binary, as a library: everything
//! around the router core (`switchyard-router`) that turns it into a server
//! you run: sockets, configuration, the HTTP bridge, the durable queues'
//! WAMP service and the log pipeline. `main.rs` only parses the command
//! line, sets up logging and calls [`commands`] (or the client commands).
//!
//! The modules, in the order a connection or a job meets them:
//!
//! - [`config`]: the TOML configuration file, checked with line-numbered
//!   errors (`switchyard check-config`); everything else reads it.
//! - `logging`: the log pipeline (control characters escaped, lines capped,
//!   a rate limit per call site), because log lines carry client values.
//! - `server`: starts the listeners, accepts connections and shuts down on a
//!   signal; the one place that wires the modules below together.
//! - `transport`: WebSocket and RawSocket (TCP, Unix, TLS) framing, origin
//!   checks and per-address connection limits; it feeds frames to a router
//!   `Connection` so that the router core never sees a socket. Also the
//!   WebSocket conformance testee (an echo over the same stack).
//! - `bridge`: the HTTP bridge (Crossbar-compatible `/publish` and `/call`,
//!   webhooks, `POST /queues/{name}/jobs`, HTTP subscribers and callees), for
//!   backends that cannot hold a WebSocket.
//! - `signing`: every request signature the server makes or checks (bridge
//!   requests, webhooks, HTTP subscribers, queue HTTP targets) and the replay
//!   cache, in one place so the schemes cannot drift apart.
//! - `queue_service`: the WAMP and HTTP face of the queue engine (the
//!   `switchyard-queue` crate, which knows nothing of WAMP): the
//!   `switchyard.queue.*` procedures, dispatch of jobs to workers and HTTP
//!   targets, topic bindings, per-queue authorization and metrics.
//! - `app_auth`: the application's authenticator and authorizer over HTTP
//!   (`[realm.http_auth]`);
//! - `outbound`: what the router may send over HTTP on a client's behalf,
//!   because such requests are an SSRF risk: `destinations` (the allow-listed
//!   client for destinations a client chose, addresses checked at connect
//!   time) and `callee_request` (what a caller may put into an HTTP callee's
//!   request).
//! - [`cluster`]: cluster mode over NATS (`[cluster]`): the router's
//!   `Backplane` with NATS behind it, so that the router core never
//!   depends on a NATS client (docs/CLUSTER.md; PubSub only so far).
//! - [`process`]: supervised processes (`[[process]]`): programs the router
//!   starts, restarts and stops with itself, and `switchyard.process.*`.
//! - `data_dir`: the private data directory and store files.
//! - `operations`: the operations listener (`/healthz`, `/readyz`,
//!   `/metrics`) with the readiness checks and the process figures, for
//!   operators and orchestrators (docs/OPERATIONS.md).
//! - [`commands`]: what the router-side subcommands do (`run`,
//!   `check-config`, `hash-secret`).
//!
//! The client subcommands (`publish`, `call`, `subscribe`, `register`,
//! `queue`) are a WAMP client: they live in their own crate
//! (`switchyard-cli`, crates/cli), which this library never imports; only
//! `main.rs` dispatches to it.

mod admin;
mod app_auth;
mod bridge;
pub mod cluster;
pub mod commands;
pub mod config;
mod data_dir;
pub mod logging;
mod operations;
mod outbound;
pub mod process;
mod queue_service;
pub mod reload;
mod server;
pub mod signing;
mod transport;

/// The checks the HTTP bridge makes on a request body before it acts on it
/// (the bridge itself is started by `server`), for tools and the fuzz
/// targets (fuzz/).
pub use bridge::{check_unique_keys, parse_request_body};
/// The WebSocket frame decoder of the router's server side (what a client's bytes meet
/// first, before any login), for the fuzz targets (fuzz/).
pub use transport::wsframe;
