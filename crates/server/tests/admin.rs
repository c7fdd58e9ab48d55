//! The admin web page (`[admin]`, docs/ADMIN.md) over real sockets: absent
//! unless configured, served with its security headers when it is, and the
//! meta API's session details it shows (transport, peer, message counts).
//! The page itself is driven in headless Chromium by tests/browser.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Router;
use switchyard_client::{Dict, Serializer, Session, Value};

/// `GET path` on the router's WebSocket listener: (status, headers in
/// lower case, body).
fn get(port: u16, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn admin_path_is_not_found_unless_configured() {
    let router = Router::start("");
    for path in ["/admin", "/admin/", "/admin/app.js", "/admin/config.json"] {
        let (status, _, _) = get(router.ws_port, path);
        assert_eq!(status, 404, "{path} without [admin]");
    }
}

#[test]
fn admin_page_is_served_with_its_security_headers() {
    let router = Router::start("[admin]\npath = \"/ops/admin\"\nrole = \"operator\"\n");
    let (status, head, body) = get(router.ws_port, "/ops/admin/");
    assert_eq!(status, 200, "{head}");
    assert!(body.contains("<title>Switchyard admin</title>"));
    assert!(head.contains("cache-control: no-store"), "{head}");
    assert!(head.contains("x-frame-options: deny"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    let csp = head
        .lines()
        .find(|l| l.starts_with("content-security-policy:"))
        .expect("a CSP header");
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert!(csp.contains("frame-ancestors 'none'"));
    // No inline script in the page itself: every <script> has a src.
    assert_eq!(
        body.matches("<script").count(),
        body.matches("<script src=").count()
    );

    let (status, _, body) = get(router.ws_port, "/ops/admin/config.json");
    assert_eq!(status, 200);
    let cfg: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(cfg["realm"], "realm1");
    assert_eq!(cfg["role"], "operator");
    assert_eq!(cfg["ws_path"], "/ws");

    for file in ["app.js", "wamp.js", "chart.js", "admin.css"] {
        let (status, _, body) = get(router.ws_port, &format!("/ops/admin/{file}"));
        assert_eq!(status, 200, "{file}");
        assert!(!body.is_empty(), "{file}");
    }
    let (status, head, _) = get(router.ws_port, "/ops/admin");
    assert_eq!(status, 301);
    assert!(head.contains("location: admin/"), "{head}");
    assert_eq!(get(router.ws_port, "/ops/admin/nope.js").0, 404);
    assert_eq!(get(router.ws_port, "/ops/admin/../admin/app.js").0, 404);
    // The WebSocket endpoint is unchanged.
    assert_eq!(get(router.ws_port, "/ws").0, 426);
}

#[test]
fn session_get_tells_transport_peer_and_message_counts() {
    let router = Router::start("");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let watcher = Session::connect(&router.ws_url(), "realm1", Serializer::Json)
            .await
            .expect("watcher");
        let other = Session::connect(&router.rs_url(), "realm1", Serializer::MsgPack)
            .await
            .expect("other");
        for _ in 0..3 {
            other
                .call("wamp.session.count", vec![], Dict::new())
                .await
                .expect("count");
        }
        let (args, _) = watcher
            .call(
                "wamp.session.get",
                vec![Value::UInt(other.id())],
                Dict::new(),
            )
            .await
            .expect("get");
        let Some(Value::Dict(d)) = args.first() else {
            panic!("wamp.session.get answered {args:?}")
        };
        let Some(Value::Dict(t)) = d.get("transport") else {
            panic!("no transport in {d:?}")
        };
        assert_eq!(t.get_str("type"), Some("rawsocket"));
        assert_eq!(t.get_str("peer_ip"), Some("127.0.0.1"));
        assert_eq!(t.get_bool("tls"), Some(false));
        assert!(
            d.get_str("joined").is_some_and(|j| j.ends_with('Z')),
            "{d:?}"
        );
        let Some(Value::Dict(stats)) = d.get("stats") else {
            panic!("no stats in {d:?}")
        };
        // HELLO and three CALLs in; WELCOME and three RESULTs out.
        assert_eq!(stats.get("messages_in"), Some(&Value::UInt(4)), "{stats:?}");
        assert_eq!(
            stats.get("messages_out"),
            Some(&Value::UInt(4)),
            "{stats:?}"
        );
    });
}
