//! Attacks on the durable queues and the requests the router makes for a
//! client, through the real binary over real sockets (docs/SECURITY.md,
//! "Queues, outbound requests and identities the router hands on"):
//! server-side request forgery through run-time HTTP targets, per-queue
//! authorization, result topics, duplicate map keys, file modes.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Router;
use switchyard_client::{Dict, Serializer, Session, Value, WampError};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// An internal HTTP service on loopback: answers every request with
/// `200 secret` and counts them.
struct Internal {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Internal {
    fn start() -> Internal {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                h.fetch_add(1, Ordering::SeqCst);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut reader = BufReader::new(match s.try_clone() {
                    Ok(c) => c,
                    Err(_) => continue,
                });
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
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\nconnection: close\r\n\r\nsecret-data-1",
                );
            }
        });
        Internal { port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
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

/// Pushes a job with a result topic and returns the result event's kwargs.
async fn push_and_wait(s: &Session, queue: &str, topic: &str) -> Dict {
    let mut results = s.subscribe(topic).await.expect("subscribe");
    s.call(
        "switchyard.queue.push",
        vec![Value::from(queue)],
        Dict::new().with("result_topic", topic),
    )
    .await
    .expect("push");
    let ev = tokio::time::timeout(Duration::from_secs(10), results.recv())
        .await
        .expect("result in time")
        .expect("event");
    ev.kwargs().expect("kwargs")
}

fn wamp_uri(e: &WampError) -> String {
    e.uri.clone()
}

/// The SSRF of the issue: an anonymous client of the default realm declares
/// a queue whose HTTP target is an internal service and pushes a job with a
/// result topic. By default the declaration is refused and the service
/// never hears from the router.
#[test]
fn run_time_http_targets_are_refused_by_default() {
    let internal = Internal::start();
    let router = Router::start("");
    runtime().block_on(async {
        let s = join(&router).await;
        for url in [
            format!("http://127.0.0.1:{}/admin", internal.port),
            format!("http://localhost:{}/admin", internal.port),
            "http://169.254.169.254/latest/meta-data/".to_string(),
        ] {
            let e = declare_http(&s, "steal", &url)
                .await
                .expect_err("an HTTP target declared at run time is refused");
            assert_eq!(wamp_uri(&e), "wamp.error.not_authorized", "{e}");
            assert!(e.to_string().contains("outbound_http"), "{e}");
        }
        // The queue was not created.
        let e = s
            .call(
                "switchyard.queue.stats",
                vec![Value::from("steal")],
                Dict::new(),
            )
            .await
            .expect_err("no such queue");
        assert_eq!(wamp_uri(&e), "switchyard.queue.error.unknown_queue");
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(internal.hits(), 0, "the internal service was reached");
    assert!(router
        .log_text()
        .contains("run-time declaration of an HTTP target refused"));
}

/// An allow-listed destination works; URLs outside its prefix (another path,
/// dot segments, userinfo tricks) are refused at declaration; a host name
/// that resolves to loopback is refused at connect time unless its network
/// is listed (the check is on the resolved address).
#[test]
fn allow_listed_http_targets_work_and_nothing_else() {
    let internal = Internal::start();
    let p = internal.port;
    let router = Router::start(&format!(
        "[realm.outbound_http]\nallow = [\"http://127.0.0.1:{p}/hooks/\"]\n"
    ));
    runtime().block_on(async {
        let s = join(&router).await;
        // Listed: declared, called, completed.
        declare_http(&s, "ok", &format!("http://127.0.0.1:{p}/hooks/order"))
            .await
            .expect("allowed destination");
        let kw = push_and_wait(&s, "ok", "test.results.ok").await;
        assert_eq!(kw.get_str("status"), Some("completed"), "{kw:?}");
        assert_eq!(internal.hits(), 1);
        // Not under a listed prefix.
        for url in [
            format!("http://127.0.0.1:{p}/admin"),
            format!("http://127.0.0.1:{p}/hooksx"),
            format!("http://127.0.0.1:{p}/hooks/../admin"),
            format!("http://127.0.0.1:{p}/hooks/%2e%2E/admin"),
            format!("http://127.0.0.1:{p}@127.0.0.1:{p}/hooks/x"),
            format!("http://127.0.0.2:{p}/hooks/x"),
            format!("http://[::ffff:127.0.0.1]:{p}/hooks/x"),
            format!("http://0.0.0.0:{p}/hooks/x"),
        ] {
            let e = declare_http(&s, "bad", &url)
                .await
                .expect_err("outside the allow list");
            assert_eq!(wamp_uri(&e), "wamp.error.not_authorized", "{url}: {e}");
        }
    });
    assert_eq!(
        internal.hits(),
        1,
        "only the listed destination was reached"
    );
}

/// A host name under a listed prefix that resolves to loopback is refused
/// when the router connects (the check is on the resolved address), unless
/// `allow_networks` lists the network; the job dead-letters with the reason.
#[test]
fn names_resolving_to_special_addresses_need_a_listed_network() {
    let internal = Internal::start();
    let p = internal.port;
    for (networks, expected) in [("", "dead"), ("\"127.0.0.0/8\", \"::1\"", "completed")] {
        let router = Router::start(&format!(
            "[realm.outbound_http]\nallow = [\"http://localhost:{p}/\"]\nallow_networks = [{networks}]\n"
        ));
        runtime().block_on(async {
            let s = join(&router).await;
            declare_http(&s, "named", &format!("http://localhost:{p}/x"))
                .await
                .expect("the URL is under a listed prefix");
            let kw = push_and_wait(&s, "named", "test.results.named").await;
            assert_eq!(kw.get_str("status"), Some(expected), "{kw:?}");
            if expected == "dead" {
                assert_eq!(
                    kw.get_str("error"),
                    Some("switchyard.queue.http.forbidden"),
                    "{kw:?}"
                );
                assert!(
                    kw.get_str("message")
                        .unwrap_or("")
                        .contains("allow_networks"),
                    "{kw:?}"
                );
                assert_eq!(internal.hits(), 0, "reached through a name");
            }
        });
    }
    assert_eq!(internal.hits(), 1);
}

/// A queue the operator wrote in the config file may target loopback: the
/// operator chose that destination.
#[test]
fn operator_http_targets_are_not_restricted() {
    let internal = Internal::start();
    let p = internal.port;
    let router = Router::start(&format!(
        "[[realm.queue]]\nname = \"hooks\"\ntarget = {{ http = {{ url = \"http://127.0.0.1:{p}/hook\" }} }}\n"
    ));
    let started = Instant::now();
    runtime().block_on(async {
        let s = join(&router).await;
        let kw = push_and_wait(&s, "hooks", "test.results.hooks").await;
        assert_eq!(kw.get_str("status"), Some("completed"), "{kw:?}");
    });
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(internal.hits(), 1);
}
