//! Memory per idle WebSocket session (issue 21: at most 8 KiB). Sessions
//! that joined a realm and went quiet, opened by a real WebSocket client:
//! the router's resident memory grows by at most 8 KiB for each. It grew by
//! ~13 KiB while tokio-websockets framed the connections (its fixed 8 KiB
//! read buffer per connection); the router's own framing reads through a
//! buffer that falls back to 128 bytes when the connection is quiet.
//! `bench/run.sh idle-ws` measures the same on a release build.

mod common;

use std::time::Duration;

use common::memory::{pid, rss_kib};
use common::Router;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_websockets::{ClientBuilder, Message, WebSocketStream};

type Client = WebSocketStream<tokio_websockets::MaybeTlsStream<TcpStream>>;

/// A session of realm1 over WebSocket/JSON, WELCOMEd.
async fn session(port: u16) -> Client {
    let uri = format!("ws://127.0.0.1:{port}/ws");
    let (mut ws, _) = ClientBuilder::new()
        .uri(&uri)
        .expect("uri")
        .add_header(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            http::HeaderValue::from_static("wamp.2.json"),
        )
        .expect("header")
        .connect()
        .await
        .expect("upgrade");
    ws.send(Message::text(
        r#"[1,"realm1",{"roles":{"subscriber":{},"caller":{}}}]"#.to_string(),
    ))
    .await
    .expect("HELLO");
    let welcome = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("WELCOME in time")
        .expect("open")
        .expect("read");
    assert!(
        welcome.as_text().is_some_and(|t| t.starts_with("[2,")),
        "{welcome:?}"
    );
    ws
}

async fn sessions(port: u16, n: usize) -> Vec<Client> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n / 50 {
        let batch = (0..50).map(|_| session(port));
        held.extend(futures_util::future::join_all(batch).await);
    }
    held
}

#[test]
fn an_idle_websocket_session_costs_the_router_at_most_8_kib() {
    const SESSIONS: usize = 2000;
    let r = Router::start("[limits]\nmax_connections_per_address = 0\n");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // The first sessions grow the router's runtime and allocator
        // arenas once: not a per-session cost.
        let _warm = sessions(r.ws_port, 200).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = rss_kib(pid(&r));
        let held = sessions(r.ws_port, SESSIONS).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = rss_kib(pid(&r));
        let per_session = (after.saturating_sub(before) * 1024) as usize / held.len();
        eprintln!(
            "{} idle WebSocket sessions: router RSS {before} KiB -> {after} KiB, {per_session} bytes per session",
            held.len()
        );
        assert!(
            per_session <= 8192,
            "{per_session} bytes per idle WebSocket session"
        );
    });
}
