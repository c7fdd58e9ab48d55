//! A second round of attacks on the queues' outbound requests and
//! per-queue scopes, from outside, over real sockets (docs/SECURITY.md,
//! "Queues, outbound requests and identities the router hands on"):
//! borrowing an operator's HTTP target, harvesting the router's request
//! signatures at an allowed destination and replaying them elsewhere, and
//! path tricks that servers decode differently from the allow list.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Router;
use switchyard_client::{Dict, Serializer, Session, WampError};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// An HTTP service on loopback that answers `200` with the request line and
/// the body it received (like the many servers whose error pages echo the
/// request), and remembers the request lines.
struct Echo {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Echo {
    fn start() -> Echo {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut reader = BufReader::new(match s.try_clone() {
                    Ok(c) => c,
                    Err(_) => continue,
                });
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                let request_line = request_line.trim_end().to_string();
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let line = line.trim_end().to_ascii_lowercase();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len.min(1 << 20)];
                let _ = reader.read_exact(&mut body);
                if let Ok(mut v) = s2.lock() {
                    v.push(request_line.clone());
                }
                let answer = format!("{request_line}\n{}", String::from_utf8_lossy(&body));
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
        });
        Echo { port, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

async fn join(router: &Router) -> Session {
    Session::connect(&router.rs_url(), "realm1", Serializer::Json)
        .await
        .expect("join")
}

async fn declare_http(s: &Session, name: &str, url: &str) -> Result<Dict, WampError> {
    s.call(
        "switchyard.queue.declare",
        vec![],
        Dict::new()
            .with("name", name)
            .with(
                "target",
                Dict::new().with("http", Dict::new().with("url", url)),
            )
            .with("retry", "none"),
    )
    .await
    .map(|(_, kw)| kw)
}

/// The operator wrote `billing`'s HTTP target; only `billing` may use it
/// unchecked. A client that declares its own queue with the same URL must
/// not get it served without the outbound allow list (which is empty here),
/// or it would reach the operator's endpoint around `billing`'s per-queue
/// permissions and with the router's signature.
#[test]
fn a_declared_queue_cannot_borrow_an_operator_url() {
    let echo = Echo::start();
    let p = echo.port;
    let url = format!("http://127.0.0.1:{p}/charge");
    let router = Router::start(&format!(
        "[[realm.queue]]\nname = \"billing\"\ntarget = {{ http = {{ url = \"{url}\" }} }}\nretry = \"none\"\n"
    ));
    runtime().block_on(async {
        let s = join(&router).await;
        let e = declare_http(&s, "mine", &url)
            .await
            .expect_err("another queue may not use the operator's URL");
        assert_eq!(e.uri, "wamp.error.not_authorized", "{e}");
        assert!(e.to_string().contains("outbound_http"), "{e}");
        // Re-declaring the operator's queue as it is stays harmless.
        let kw = declare_http(&s, "billing", &url)
            .await
            .expect("the operator's own queue, unchanged");
        assert_eq!(kw.get_bool("created"), Some(false), "{kw:?}");
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(echo.seen().is_empty(), "{:?}", echo.seen());
}
