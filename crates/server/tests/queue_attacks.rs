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
use switchyard_client::{Dict, Serializer, Session, Value, WampError};

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

/// Pushes a job (with `kwargs`) and returns its result event's kwargs.
async fn push_and_wait(s: &Session, queue: &str, topic: &str, kwargs: Dict) -> Dict {
    let mut results = s.subscribe(topic).await.expect("subscribe");
    s.call(
        "switchyard.queue.push",
        vec![Value::from(queue)],
        Dict::new()
            .with("result_topic", topic)
            .with("kwargs", kwargs),
    )
    .await
    .expect("push");
    let ev = tokio::time::timeout(Duration::from_secs(10), results.recv())
        .await
        .expect("result in time")
        .expect("event");
    ev.kwargs().expect("kwargs")
}

fn post(port: u16, path: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        out.split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default(),
    )
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

const KEY: &str = "router";
const SECRET: &str = "shared-secret-0123456789";

/// The router signs the requests of HTTP targets with `[realm.queue_http]`,
/// and the operator's other endpoints verify that secret (here: the router's
/// own bridge, with a key of the same secret). A client that declares a
/// queue to an allowed destination which echoes what it receives harvests a
/// signature over a body it chose; replayed to another endpoint, the
/// signature must not verify: a client-chosen destination's signature is
/// bound to its method and path.
#[test]
fn signatures_for_client_chosen_destinations_do_not_verify_elsewhere() {
    let echo = Echo::start();
    let p = echo.port;
    let bridge = common::free_port();
    let router = Router::start(&format!(
        "[realm.queue_http]\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n\n\
         [realm.outbound_http]\nallow = [\"http://127.0.0.1:{p}/echo/\"]\n\n\
         [[realm.queue]]\nname = \"billing\"\ntarget = \"test.billing\"\n\n\
         [[bridge]]\naddress = \"127.0.0.1:{bridge}\"\nrealm = \"realm1\"\n\n\
         [[bridge.key]]\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\nrole = \"backend\"\n"
    ));
    let answer = runtime().block_on(async {
        let s = join(&router).await;
        declare_http(&s, "harvest", &format!("http://127.0.0.1:{p}/echo/x"))
            .await
            .expect("an allowed destination");
        let kw = push_and_wait(
            &s,
            "harvest",
            "test.results.harvest",
            Dict::new().with("amount", 1_000_000u64),
        )
        .await;
        assert_eq!(kw.get_str("status"), Some("completed"), "{kw:?}");
        kw.get_str("body").expect("the echoed request").to_string()
    });
    // "POST /echo/x?key=...&signature=... HTTP/1.1\n{body}"
    let (line, body) = answer.split_once('\n').expect("request line");
    let target = line.split(' ').nth(1).expect("request target");
    let query = target.split_once('?').expect("signed query").1;
    assert!(query.contains("signature="), "{line}");
    // Replayed to another endpoint that verifies the same secret.
    let (status, text) = post(bridge, &format!("/queues/billing/jobs?{query}"), body);
    eprintln!("replay: {status} {text}");
    assert!(
        status == 400 || status == 401,
        "a signature harvested at a client-chosen destination verified elsewhere: {status} {text}"
    );
    // Without the parameter the bridge does not take, the signature itself
    // is what fails.
    let stripped: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.starts_with("scope="))
        .collect();
    let (status, text) = post(
        bridge,
        &format!("/queues/billing/jobs?{}", stripped.join("&")),
        body,
    );
    eprintln!("replay without scope: {status} {text}");
    assert_eq!(
        status, 401,
        "a signature harvested at a client-chosen destination verified elsewhere: {text}"
    );
    assert!(text.contains("signature"), "{text}");
    // The destination verifies it, as documented, with its own method and path.
    let path = target.split_once('?').expect("query").0;
    let checked = std::process::Command::new("python3")
        .args(["-c", VERIFY_PY, SECRET, "POST", path, query, body])
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&checked.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// The receiver's check of docs/SECURITY.md, in Python.
const VERIFY_PY: &str = r#"
import base64, hashlib, hmac, sys
from urllib.parse import parse_qsl
secret, method, path, query, body = sys.argv[1:6]
p = dict(parse_qsl(query))
assert p.get("scope") == "destination", p
dest = base64.urlsafe_b64encode(hmac.new(secret.encode(),
    b"switchyard-destination\n" + method.encode() + b" " + path.encode(), hashlib.sha256).digest())
msg = (p["key"] + p["timestamp"] + p["seq"] + p["nonce"] + body).encode()
sig = base64.urlsafe_b64encode(hmac.new(dest, msg, hashlib.sha256).digest()).decode()
print("ok" if hmac.compare_digest(sig, p["signature"]) else "bad signature")
"#;

/// Paths that an allow-list prefix check and the destination server decode
/// differently: `..;` (a dot segment for servlet containers), doubly
/// percent-encoded dot segments and slashes, `...` and `.. ` (Windows trims
/// them to `..`), IIS's `%u002e`, full-width dots and slashes (folded by
/// Unicode normalization), an encoded NUL, and a query that pre-empts the
/// router's signing parameters. All refused when
/// declared.
#[test]
fn path_tricks_under_an_allowed_prefix_are_refused() {
    let echo = Echo::start();
    let p = echo.port;
    let router = Router::start(&format!(
        "[realm.outbound_http]\nallow = [\"http://127.0.0.1:{p}/hooks/\"]\n"
    ));
    runtime().block_on(async {
        let s = join(&router).await;
        for path in [
            "/hooks/..;/admin",
            "/hooks/.;x/admin",
            "/hooks/..;jsessionid=1/admin",
            "/hooks/%252e%252e/admin",
            "/hooks/%25252e%25252e/admin",
            "/hooks/a%252fb",
            "/hooks/a%255cb",
            "/hooks/a%00b",
            "/hooks/x?signature=forged",
            "/hooks/x?a=1&key=other",
            "/hooks/x?timestamp=2000-01-01T00:00:00.000Z",
            "/hooks/.../admin",
            "/hooks/..%20/admin",
            "/hooks/%u002e%u002e/admin",
            "/hooks/%EF%BC%8E%EF%BC%8E/admin",
            "/hooks/a%EF%BC%8Fb",
        ] {
            let url = format!("http://127.0.0.1:{p}{path}");
            let e = declare_http(&s, "tricks", &url)
                .await
                .expect_err("a path trick under the prefix");
            assert_eq!(e.uri, "wamp.error.not_authorized", "{url}: {e}");
        }
        // Ordinary paths and queries under the prefix still work.
        for path in ["/hooks/a.b/c..d", "/hooks/x?tenant=7&keyed=1"] {
            let url = format!("http://127.0.0.1:{p}{path}");
            declare_http(&s, &format!("ok{}", path.len()), &url)
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
    });
    assert!(echo.seen().is_empty());
}

/// An `allow` entry that names a loopback address literally makes that
/// address reachable through that entry, not through a host name: an
/// allowed name whose DNS answer someone else controls (a partner's host;
/// here `localhost`) pointed at it would reach another service on the
/// router's loopback, on any port the name's entry allows.
#[test]
fn a_literal_allow_entry_does_not_open_its_address_to_names() {
    let listed = Echo::start();
    let internal = Echo::start();
    let router = Router::start(&format!(
        "[realm.outbound_http]\nallow = [\"http://127.0.0.1:{}/hooks/\", \"http://localhost:{}/\"]\n",
        listed.port, internal.port
    ));
    runtime().block_on(async {
        let s = join(&router).await;
        // The literal entry works.
        declare_http(
            &s,
            "listed",
            &format!("http://127.0.0.1:{}/hooks/a", listed.port),
        )
        .await
        .expect("listed");
        let kw = push_and_wait(&s, "listed", "test.results.listed", Dict::new()).await;
        assert_eq!(kw.get_str("status"), Some("completed"), "{kw:?}");
        // The name resolves to the same loopback address, another service.
        declare_http(
            &s,
            "named",
            &format!("http://localhost:{}/admin", internal.port),
        )
        .await
        .expect("under an allowed prefix");
        let kw = push_and_wait(&s, "named", "test.results.named", Dict::new()).await;
        assert_eq!(kw.get_str("status"), Some("dead"), "{kw:?}");
        assert_eq!(
            kw.get_str("error"),
            Some("switchyard.queue.http.forbidden"),
            "{kw:?}"
        );
    });
    assert_eq!(listed.seen().len(), 1);
    assert!(internal.seen().is_empty(), "{:?}", internal.seen());
}

/// Runs the router on `data` and returns its log if it refused to start
/// within a few seconds (`None` if it ran).
fn refused_start(data: &std::path::Path) -> Option<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[listener]]\ntype = \"rawsocket\"\naddress = \"127.0.0.1:{}\"\n\n\
             [[realm]]\nname = \"realm1\"\n\n[storage]\ndata_dir = \"{}\"\n",
            common::free_port(),
            data.display()
        ),
    )
    .expect("config");
    let log = dir.path().join("router.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .current_dir(dir.path())
        .arg("--config")
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(!status.success());
            return Some(std::fs::read_to_string(&log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The store would go to another local user: a data directory every user
/// may write without the sticky bit (any of them can swap the store), a
/// store planted by another user in a shared sticky directory (they read
/// every job written into it), a store that is a symbolic link (pointing
/// the router's writes at another file). Each is refused at start, naming
/// the path; the file a link points at is untouched.
#[test]
fn a_store_another_user_could_read_or_swap_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let outside = tempfile::tempdir().expect("tempdir");

    let open = outside.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let log = refused_start(&open).expect("an others-writable data directory is refused");
    assert!(log.contains("writable by every local user"), "{log}");
    assert!(log.contains(&open.display().to_string()), "{log}");

    let theirs = outside.path().join("theirs");
    std::fs::create_dir(&theirs).expect("mkdir");
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).expect("chown (root)");
    let log = refused_start(&theirs).expect("a data directory of another user is refused");
    assert!(log.contains("belongs to uid 65534"), "{log}");

    let sticky = outside.path().join("sticky");
    std::fs::create_dir(&sticky).expect("mkdir");
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let planted = sticky.join("queues-realm1.redb");
    std::fs::write(&planted, b"").expect("planted store");
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let nobody = 65534;
    std::os::unix::fs::chown(&planted, Some(nobody), Some(nobody)).expect("chown (root)");
    let log = refused_start(&sticky).expect("a store planted by another user is refused");
    assert!(log.contains("belongs to uid 65534"), "{log}");
    assert_eq!(std::fs::metadata(&planted).expect("planted").len(), 0);

    let private = outside.path().join("private");
    std::fs::create_dir(&private).expect("mkdir");
    let victim = outside.path().join("victim.db");
    std::fs::write(&victim, b"").expect("victim");
    std::os::unix::fs::symlink(&victim, private.join("queues-realm1.redb")).expect("symlink");
    let log = refused_start(&private).expect("a symlinked store is refused");
    assert!(log.contains("symbolic link"), "{log}");
    assert_eq!(std::fs::metadata(&victim).expect("victim").len(), 0);

    // The store's write-ahead log (payloads too) is checked the same way.
    let private_log = outside.path().join("private-log");
    std::fs::create_dir(&private_log).expect("mkdir");
    std::os::unix::fs::symlink(&victim, private_log.join("queues-realm1.redb-wal"))
        .expect("symlink");
    let log = refused_start(&private_log).expect("a symlinked log is refused");
    assert!(
        log.contains("symbolic link") && log.contains("queues-realm1.redb-wal"),
        "{log}"
    );
    assert_eq!(std::fs::metadata(&victim).expect("victim").len(), 0);
}

/// An HTTP callee's base URL is the operator's (`/public`); a caller only
/// adds a path under it, and headers that do not redirect the request (a
/// `Host` of another virtual host at the same address) or reframe it. A path with dot segments in any disguise (`..`,
/// `%2e%2e`, `..;`, doubly encoded) or with encoded slashes reaches the
/// backend's other paths once the backend normalizes it: refused, and the
/// backend hears nothing. Ordinary paths and queries still work.
#[test]
fn an_http_callee_request_stays_at_the_operators_url() {
    let echo = Echo::start();
    let bridge = common::free_port();
    let router = Router::start(&format!(
        "[[bridge]]\naddress = \"127.0.0.1:{bridge}\"\nrealm = \"realm1\"\nallow_unsigned = true\n\n\
         [[bridge.callee]]\nprocedure = \"test.api\"\nurl = \"http://127.0.0.1:{}/public\"\n",
        echo.port
    ));
    runtime().block_on(async {
        let s = join(&router).await;
        // The callee registers as the router starts.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for path in [
            "../admin",
            "/../admin",
            "x/../../admin",
            "%2e%2e/admin",
            "%2E./admin",
            "..;/admin",
            "x/..;jsessionid=1/..;/admin",
            "%252e%252e/admin",
            "%2f..%2f..%2fadmin",
            "a%5c..%5c..%5cadmin",
            "x%00/admin",
            ".../admin",
            "%u002e%u002e/admin",
            "%EF%BC%8E%EF%BC%8E/admin",
        ] {
            let e = s
                .call(
                    "test.api",
                    vec![],
                    Dict::new().with("method", "GET").with("path", path),
                )
                .await
                .expect_err(path);
            assert_eq!(e.uri, "wamp.error.invalid_argument", "{path}: {e}");
            assert!(e.to_string().contains("path"), "{path}: {} {e}", e.uri);
        }
        // Headers that would send the request to another virtual host at
        // the backend's address, reframe it, or claim another client.
        for header in [
            "Host",
            "host",
            "X-Forwarded-Host",
            "Forwarded",
            "x-forwarded-for",
            "X-Real-IP",
            "Content-Length",
            "Transfer-Encoding",
            "Connection",
            "Upgrade",
        ] {
            let e = s
                .call(
                    "test.api",
                    vec![],
                    Dict::new()
                        .with("path", "items/7")
                        .with("headers", Dict::new().with(header, "admin.internal")),
                )
                .await
                .expect_err(header);
            assert_eq!(e.uri, "wamp.error.invalid_argument", "{header}: {e}");
            assert!(
                e.to_string()
                    .to_ascii_lowercase()
                    .contains(&header.to_ascii_lowercase()),
                "the refusal names the header: {header}: {e}"
            );
        }
        // CONNECT sends `CONNECT host:port`: the base path is dropped.
        for method in ["CONNECT", "connect"] {
            let e = s
                .call(
                    "test.api",
                    vec![],
                    Dict::new().with("method", method).with("path", "items/7"),
                )
                .await
                .expect_err(method);
            assert_eq!(e.uri, "wamp.error.invalid_argument", "{method}: {e}");
        }
        for path in ["items/7", "/items/a..b?next=../x", "v.1/x"] {
            s.call(
                "test.api",
                vec![],
                Dict::new().with("method", "GET").with("path", path),
            )
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        }
    });
    let seen = echo.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen.iter().all(|l| l.starts_with("GET /public/")),
        "{seen:?}"
    );
}

/// A queue name of a megabyte was echoed into the refusal, twice, and into
/// the log line of every refused call (3 MB of log per 1 MB call); a result
/// topic of a megabyte once into each. A name no queue can have, or a URI
/// over the queue's limit, is refused first, short, in every procedure.
#[test]
fn a_huge_queue_name_is_not_echoed_into_logs_and_errors() {
    let router = Router::start(
        "[realm.auth]\nmethods = [\"anonymous\"]\nanonymous_role = \"producer\"\n\n\
         [[realm.role]]\nname = \"producer\"\n\n\
         [[realm.role.permission]]\nuri = \"switchyard.queue.\"\nmatch = \"prefix\"\nallow = []\n\n\
         [[realm.role.permission]]\nuri = \"switchyard.queue.push\"\nallow = [\"call\"]\n\n\
         [[realm.role.permission]]\nuri = \"switchyard.queue.push_many\"\nallow = [\"call\"]\n\n\
         [[realm.role.permission]]\nuri = \"switchyard.queue.declare\"\nallow = [\"call\"]\n\n\
         [[realm.role.permission]]\nuri = \"switchyard.queue.push.reports\"\nallow = [\"call\"]\n",
    );
    let name = "a".repeat(1_000_000);
    let before = router.log_text().len();
    runtime().block_on(async {
        let s = join(&router).await;
        let calls = [
            (
                "switchyard.queue.push",
                vec![Value::from(name.as_str())],
                Dict::new(),
            ),
            (
                "switchyard.queue.push_many",
                vec![Value::List(vec![Value::Dict(
                    Dict::new().with("queue", name.as_str()),
                )])],
                Dict::new(),
            ),
            (
                "switchyard.queue.declare",
                vec![],
                Dict::new().with("name", name.as_str()),
            ),
        ];
        let topic = format!("{}b", "a.".repeat(500_000));
        let calls = calls.into_iter().chain([
            (
                "switchyard.queue.push",
                vec![Value::from("reports")],
                Dict::new().with("result_topic", topic.as_str()),
            ),
            (
                "switchyard.queue.push",
                vec![Value::from("reports")],
                Dict::new().with("target", topic.as_str()),
            ),
        ]);
        for (procedure, args, kwargs) in calls {
            let e = s
                .call(procedure, args, kwargs)
                .await
                .expect_err("no such queue name");
            let text = e.to_string();
            eprintln!(
                "{procedure}: {} bytes: {}",
                text.len(),
                &text[..text.len().min(200)]
            );
            assert!(
                text.len() < 1_000,
                "{procedure}: a {} byte refusal",
                text.len()
            );
            assert_eq!(
                e.uri, "switchyard.queue.error.invalid_argument",
                "{procedure}"
            );
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let grown = router.log_text().len() - before;
    eprintln!("log growth for 5 calls: {grown} bytes");
    assert!(grown < 30_000, "the log grew by {grown} bytes");

    // A realm without roles: anyone may declare; a URL of a megabyte is
    // refused by its length, before the outbound policy echoes it.
    let open = Router::start("");
    let before = open.log_text().len();
    runtime().block_on(async {
        let s = join(&open).await;
        let url = format!("http://{}", "a".repeat(1_000_000));
        let e = s
            .call(
                "switchyard.queue.declare",
                vec![],
                Dict::new().with("name", "big").with(
                    "target",
                    Dict::new().with("http", Dict::new().with("url", url.as_str())),
                ),
            )
            .await
            .expect_err("too long");
        let text = e.to_string();
        eprintln!(
            "declare: {} bytes: {}",
            text.len(),
            &text[..text.len().min(200)]
        );
        assert!(text.len() < 1_000, "a {} byte refusal", text.len());
    });
    std::thread::sleep(Duration::from_millis(200));
    let grown = open.log_text().len() - before;
    eprintln!("log growth: {grown} bytes");
    assert!(grown < 10_000, "the log grew by {grown} bytes");
}

/// A worker's error message (or a client-chosen HTTP destination's answer,
/// which becomes one) is stored as the job's last error and printed by
/// `switchyard queue dead` for the operator: terminal escape sequences in it
/// (set the window title, clear the screen, write the clipboard with OSC 52)
/// must reach the terminal escaped.
#[test]
fn the_cli_prints_a_workers_error_message_escaped() {
    let router = Router::start(
        "[[realm.queue]]\nname = \"fail\"\ntarget = \"test.fail\"\nretry = \"none\"\n",
    );
    let evil = "boom\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}]52;c;ZWNobyBwd25lZA==\u{7}\r\nfake line";
    runtime().block_on(async {
        let worker = join(&router).await;
        worker
            .register("test.fail", move |_, _| async move {
                Err((
                    "com.example.error".to_string(),
                    vec![Value::from(evil)],
                    Dict::new(),
                ))
            })
            .await
            .expect("register");
        let s = join(&router).await;
        s.call(
            "switchyard.queue.push",
            vec![Value::from("fail")],
            Dict::new(),
        )
        .await
        .expect("push");
        for _ in 0..100 {
            let (_, kw) = s
                .call(
                    "switchyard.queue.stats",
                    vec![Value::from("fail")],
                    Dict::new(),
                )
                .await
                .expect("stats");
            if kw.get("dead").and_then(Value::as_u64) == Some(1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["queue", "dead", "fail", "--url", &router.ws_url()])
            .output()
            .expect("cli");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{stdout}");
        assert!(stdout.contains("boom"), "{stdout}");
        assert!(
            !stdout.contains(['\u{1b}', '\u{7}', '\r']),
            "control characters reached the terminal: {stdout:?}"
        );
        assert_eq!(stdout.trim_end().lines().count(), 2, "{stdout:?}");
    });
}
