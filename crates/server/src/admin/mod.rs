//! The admin web page (`[admin]`, docs/ADMIN.md): a page the router serves
//! on its WebSocket listeners, embedded in the binary, that logs in over
//! WAMP like any client and shows sessions, registrations, subscriptions
//! and queues through the meta API and `switchyard.queue.*`. It holds no
//! privilege of its own: every figure and every action is a WAMP call the
//! router authorizes for the logged-in session.
//!
//! - `config.rs`: the `[admin]` section and its checks;
//! - `assets.rs`: the embedded files (`assets/`);
//! - `site.rs`: the HTTP answers under the admin path, with their headers.

mod assets;
mod config;
mod site;

pub use config::AdminConfig;
pub use site::Site;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;

/// The admin page of the WebSocket listener on `address` (WebSocket path
/// `ws_path`, named `name` in logs), if `[admin]` is configured and the
/// listener serves it.
pub fn site_for(
    config: &Config,
    address: SocketAddr,
    ws_path: &str,
    name: &str,
) -> Option<Arc<Site>> {
    let admin = config.admin.as_ref()?.get_ref();
    if !admin.served_on(address) {
        return None;
    }
    let realm = admin.realm_name(config);
    let origin = name.strip_suffix(ws_path).unwrap_or(name);
    let origin = origin
        .strip_prefix("wss://")
        .map(|rest| format!("https://{rest}"))
        .or_else(|| {
            origin
                .strip_prefix("ws://")
                .map(|rest| format!("http://{rest}"))
        })
        .unwrap_or_else(|| origin.to_string());
    tracing::info!(
        "admin page at {origin}{}/ (realm {realm}, role {})",
        admin.path,
        admin.role
    );
    Some(Arc::new(Site::new(
        &admin.path,
        &realm,
        &admin.role,
        ws_path,
    )))
}
