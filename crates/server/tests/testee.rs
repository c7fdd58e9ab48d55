//! The WebSocket conformance testee (`type = "websocket-testee"`): a real
//! tokio-websockets client gets back every text, binary and fragmented
//! message it sends, its PINGs answered and its CLOSE echoed, over the
//! router's WebSocket stack with the `[limits]` of the WAMP listeners (a
//! message over max_message_size closes with 1009). The full conformance
//! run is scripts/autobahn.sh (docs/RELIABILITY.md).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{free_port, Router};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_websockets::{ClientBuilder, CloseCode, Config, Message, WebSocketStream};

type Client = WebSocketStream<tokio_websockets::MaybeTlsStream<TcpStream>>;

const MAX: usize = 64 * 1024;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// A router with a testee listener on its own port, `max_message_size` 64 KiB.
fn start() -> (Router, u16) {
    let port = free_port();
    let r = Router::start(&format!(
        "[limits]\nmax_message_size = {MAX}\n\n\
         [[listener]]\ntype = \"websocket-testee\"\naddress = \"127.0.0.1:{port}\"\npath = \"/echo\"\n"
    ));
    (r, port)
}

async fn connect(port: u16, frame_size: usize) -> Client {
    let (ws, _) = ClientBuilder::new()
        .uri(&format!("ws://127.0.0.1:{port}/echo"))
        .expect("uri")
        .config(Config::default().frame_size(frame_size))
        .connect()
        .await
        .expect("the testee accepts an upgrade without a subprotocol");
    ws
}

#[track_caller]
fn next(ws: &mut Client) -> impl std::future::Future<Output = Message> + '_ {
    let at = std::panic::Location::caller();
    async move {
        tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap_or_else(|_| panic!("{at}: no message within 5 s"))
            .unwrap_or_else(|| panic!("{at}: the connection ended"))
            .unwrap_or_else(|e| panic!("{at}: {e}"))
    }
}

#[test]
fn testee_echoes_text_binary_and_fragmented_messages() {
    let (r, port) = start();
    block_on(async {
        let mut ws = connect(port, 4 << 20).await;
        ws.send(Message::text("héllo, testee")).await.expect("send");
        let m = next(&mut ws).await;
        assert!(m.is_text());
        assert_eq!(m.as_text(), Some("héllo, testee"));

        let bin: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        ws.send(Message::binary(Bytes::from(bin.clone())))
            .await
            .expect("send");
        let m = next(&mut ws).await;
        assert!(m.is_binary());
        assert_eq!(&m.as_payload()[..], &bin[..]);

        ws.send(Message::text("")).await.expect("send");
        let m = next(&mut ws).await;
        assert!(m.is_text() && m.as_payload().is_empty());

        // A WAMP HELLO is just a message here: echoed, no WELCOME.
        let hello = r#"[1,"realm1",{"roles":{"caller":{}}}]"#;
        ws.send(Message::text(hello)).await.expect("send");
        assert_eq!(next(&mut ws).await.as_text(), Some(hello));

        // Many messages in one write come back in order.
        for i in 0..100 {
            ws.feed(Message::text(format!("m{i}"))).await.expect("feed");
        }
        ws.flush().await.expect("flush");
        for i in 0..100 {
            assert_eq!(next(&mut ws).await.as_text(), Some(&*format!("m{i}")));
        }

        // A PING is answered with a PONG of the same payload.
        ws.send(Message::ping(Bytes::from_static(b"are you there")))
            .await
            .expect("ping");
        let m = next(&mut ws).await;
        assert!(m.is_pong(), "{m:?}");
        assert_eq!(&m.as_payload()[..], b"are you there");
    });
    block_on(async {
        // Fragmented: the client sends 1000-byte frames; the whole message
        // (below max_message_size) comes back.
        let mut ws = connect(port, 1000).await;
        let text: String = "ünïcödé-".repeat(4000); // 44000 bytes, 44 fragments
        assert!(text.len() < MAX);
        ws.send(Message::text(text.clone())).await.expect("send");
        assert_eq!(next(&mut ws).await.as_text(), Some(&*text));
        let bin = vec![7u8; 30_000];
        ws.send(Message::binary(Bytes::from(bin.clone())))
            .await
            .expect("send");
        assert_eq!(&next(&mut ws).await.as_payload()[..], &bin[..]);
    });
    drop(r);
}

#[test]
fn testee_answers_close_after_the_echoes_and_keeps_the_limits() {
    let (r, port) = start();
    block_on(async {
        // A message and a CLOSE in one write: the echo comes first, then
        // the CLOSE with the same code, then the end of the stream.
        let mut ws = connect(port, 4 << 20).await;
        let big = "x".repeat(MAX - 1);
        ws.feed(Message::text(big.clone())).await.expect("feed");
        ws.feed(Message::close(Some(CloseCode::NORMAL_CLOSURE), "bye"))
            .await
            .expect("feed");
        ws.flush().await.expect("flush");
        assert_eq!(next(&mut ws).await.as_text(), Some(&*big));
        let close = next(&mut ws).await;
        assert!(close.is_close(), "{close:?}");
        assert_eq!(
            close.as_close().map(|(c, _)| c),
            Some(CloseCode::NORMAL_CLOSURE)
        );
        let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("the testee closes the TCP connection");
        assert!(end.is_none(), "{end:?}");
    });
    block_on(async {
        // One byte over max_message_size, in fragments: closed with 1009
        // and never echoed.
        let mut ws = connect(port, 4096).await;
        ws.send(Message::binary(Bytes::from(vec![1u8; MAX + 1])))
            .await
            .expect("send");
        let close = next(&mut ws).await;
        assert!(close.is_close(), "expected a CLOSE, got {close:?}");
        assert_eq!(
            close.as_close().map(|(c, _)| c),
            Some(CloseCode::MESSAGE_TOO_BIG)
        );
    });
    block_on(async {
        // Invalid UTF-8 in a text message: closed with 1007.
        let mut ws = connect(port, 4 << 20).await;
        let raw = Message::text(Bytes::from_static(b"ok \xff\xfe not utf-8"));
        ws.send(raw).await.expect("send");
        let close = next(&mut ws).await;
        assert!(close.is_close(), "expected a CLOSE, got {close:?}");
        assert_eq!(
            close.as_close().map(|(c, _)| c),
            Some(CloseCode::INVALID_FRAME_PAYLOAD_DATA)
        );
    });
    // The WAMP listener of the same router still requires a subprotocol
    // and still speaks WAMP.
    let reply = common::http::request(
        r.ws_port,
        "GET",
        "/ws",
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        "",
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        reply.body.contains("no supported WAMP subprotocol"),
        "{}",
        reply.body
    );
    assert!(
        r.log_text().contains("WebSocket conformance testee"),
        "{}",
        r.log_text()
    );
}

#[test]
fn testee_rejects_wamp_only_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("s.toml");
    std::fs::write(
        &cfg,
        "[[listener]]\ntype = \"websocket-testee\"\naddress = \"127.0.0.1:9\"\nauth_methods = [\"ticket\"]\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check-config")
        .arg(&cfg)
        .output()
        .expect("run check-config");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("`auth_methods` does not apply to a websocket-testee listener"),
        "{text}"
    );
}

/// The listener block of docs/RELIABILITY.md, as written there (its
/// address swapped for a free port): a router with it echoes on its path.
#[test]
fn the_documented_testee_block_runs() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/RELIABILITY.md"
    ))
    .expect("docs/RELIABILITY.md");
    let block = doc
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("type = \"websocket-testee\""))
        .expect("a toml block with the testee listener");
    assert!(block.contains("address = \"127.0.0.1:9001\""), "{block}");
    assert!(block.contains("path = \"/\""), "{block}");
    let port = free_port();
    let r = Router::start(&block.replace("127.0.0.1:9001", &format!("127.0.0.1:{port}")));
    block_on(async {
        let (mut ws, _) = ClientBuilder::new()
            .uri(&format!("ws://127.0.0.1:{port}/"))
            .expect("uri")
            .connect()
            .await
            .expect("upgrade");
        ws.send(Message::text("documented")).await.expect("send");
        assert_eq!(next(&mut ws).await.as_text(), Some("documented"));
    });
    drop(r);
}

/// A client that sends and does not read: the testee reads the next message
/// only once the echo of the previous one is written, so the router holds
/// about one message for it, not everything sent (the rest waits in the
/// TCP buffers); when the client reads, every echo arrives, in order. And
/// the per-address connection limit of the WAMP listeners holds here too.
#[test]
fn testee_holds_one_message_for_a_client_that_does_not_read() {
    let port = free_port();
    let r = Router::start(&format!(
        "[limits]\nmax_message_size = {MAX}\nmax_connections_per_address = 3\n\n\
         [[listener]]\ntype = \"websocket-testee\"\naddress = \"127.0.0.1:{port}\"\npath = \"/echo\"\n"
    ));
    const N: usize = 400;
    let size = MAX - 16; // 400 x 64 KiB: 26 MB sent before reading
    block_on(async {
        let ws = connect(port, 4 << 20).await;
        let (mut sink, mut stream) = ws.split();
        let before = common::memory::rss_mb(&r);
        let peak = common::memory::PeakRss::start(&r);
        let sender = tokio::spawn(async move {
            for i in 0..N {
                let mut m = vec![(i % 251) as u8; size];
                m[..8].copy_from_slice(&(i as u64).to_be_bytes());
                if sink.send(Message::binary(Bytes::from(m))).await.is_err() {
                    return i;
                }
            }
            N
        });
        // Not reading for a while: the sender blocks once the buffers are full.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let held = peak.peak() - before;
        assert!(
            !sender.is_finished(),
            "26 MB went into the router while nobody read"
        );
        for i in 0..N {
            let m = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("an echo within 10 s")
                .expect("open")
                .expect("valid");
            let p = m.as_payload();
            assert_eq!(p.len(), size);
            assert_eq!(&p[..8], &(i as u64).to_be_bytes(), "echo {i} in order");
        }
        assert_eq!(sender.await.expect("sender"), N);
        drop(peak);
        eprintln!(
            "testee: router RSS grew by {held:.1} MiB while a client sent 26 MB without reading"
        );
        assert!(
            held < 16.0,
            "the router held {held:.1} MiB for a client that did not read"
        );
    });
    // Three connections from one address are served, the fourth is refused
    // (HTTP 429) as on a WAMP listener.
    block_on(async {
        let _a = connect(port, 4096).await;
        let _b = connect(port, 4096).await;
        let _c = connect(port, 4096).await;
        let refused = ClientBuilder::new()
            .uri(&format!("ws://127.0.0.1:{port}/echo"))
            .expect("uri")
            .connect()
            .await;
        let e = refused.expect_err("a fourth connection from the same address");
        assert!(e.to_string().contains("429"), "{e}");
    });
}
