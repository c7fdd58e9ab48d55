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

const INVALID: &str = "switchyard.queue.error.invalid_argument";

const ADMIN_TICKET: &str = "admin-ticket-for-tests";

async fn join_ticket(router: &Router, authid: &str) -> Session {
    let mut opts = switchyard_client::SessionOptions::new(Serializer::MsgPack);
    opts.details = Dict::new()
        .with("authid", authid)
        .with("authmethods", Value::List(vec![Value::from("ticket")]));
    opts.on_challenge = Some(Arc::new(|_, _| Ok((ADMIN_TICKET.to_string(), Dict::new()))));
    Session::connect_with(&router.rs_url(), "realm1", opts)
        .await
        .expect("ticket login")
}

async fn call_err(s: &Session, procedure: &str, args: Vec<Value>, kwargs: Dict) -> WampError {
    s.call(procedure, args, kwargs)
        .await
        .expect_err(&format!("{procedure} is refused"))
}

fn job_id(kw: &Dict) -> u64 {
    match kw.get("id") {
        Some(Value::UInt(id)) => *id,
        other => panic!("no job id: {other:?}"),
    }
}

/// Two queues nobody works on (jobs stay waiting); the anonymous role may
/// use every queue procedure on `reports` only (one wildcard permission);
/// `admin` (ticket) has `switchyard.` as a prefix; `legacy` has only the
/// procedure permission, as configs written before per-queue scopes.
fn scoped_config(bridge_port: u16) -> String {
    let hash = switchyard_router::auth::ticket::hash_secret(ADMIN_TICKET).expect("hash");
    let mut procs = String::new();
    for p in [
        "push",
        "push_many",
        "peek",
        "dead",
        "job",
        "stats",
        "list",
        "purge",
    ] {
        procs.push_str(&format!(
            "[[realm.role.permission]]\nuri = \"switchyard.queue.{p}\"\nallow = [\"call\"]\n\n"
        ));
    }
    format!(
        "[realm.auth]\nmethods = [\"anonymous\", \"ticket\"]\nanonymous_role = \"producer\"\n\n\
         [[realm.auth.ticket]]\nauthid = \"admin\"\nsecret = \"{hash}\"\nrole = \"admin\"\n\n\
         [[realm.auth.ticket]]\nauthid = \"old\"\nsecret = \"{hash}\"\nrole = \"legacy\"\n\n\
         [[realm.role]]\nname = \"producer\"\n\n{procs}\
         [[realm.role.permission]]\nuri = \"switchyard.queue..reports\"\nmatch = \"wildcard\"\nallow = [\"call\"]\n\n\
         [[realm.role]]\nname = \"admin\"\n\n\
         [[realm.role.permission]]\nuri = \"switchyard.\"\nmatch = \"prefix\"\nallow = [\"call\"]\n\n\
         [[realm.role]]\nname = \"legacy\"\n\n\
         [[realm.role.permission]]\nuri = \"switchyard.queue.push\"\nallow = [\"call\"]\n\n\
         [[realm.queue]]\nname = \"reports\"\ntarget = \"test.reports\"\n\n\
         [[realm.queue]]\nname = \"payroll\"\ntarget = \"test.payroll\"\n\n\
         [[bridge]]\naddress = \"127.0.0.1:{bridge_port}\"\nrealm = \"realm1\"\n\
         allow_unsigned = true\nunsigned_role = \"producer\"\n"
    )
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

/// A producer allowed `switchyard.queue.push` could push into every queue of
/// the realm. With a per-queue permission it reaches `reports` only, for
/// every procedure (push, push_many, peek, job, stats, list, purge) and for
/// the HTTP bridge's `/queues/{name}/jobs`.
#[test]
fn queue_permissions_scope_every_procedure_per_queue() {
    let bridge_port = common::free_port();
    let router = Router::start(&scoped_config(bridge_port));
    runtime().block_on(async {
        let admin = join_ticket(&router, "admin").await;
        let (_, kw) = admin
            .call(
                "switchyard.queue.push",
                vec![Value::from("payroll")],
                Dict::new(),
            )
            .await
            .expect("admin pushes anywhere");
        let payroll_job = job_id(&kw);

        let p = join(&router).await;
        let (_, kw) = p
            .call(
                "switchyard.queue.push",
                vec![Value::from("reports")],
                Dict::new(),
            )
            .await
            .expect("push into the allowed queue");
        let reports_job = job_id(&kw);
        let e = call_err(
            &p,
            "switchyard.queue.push",
            vec![Value::from("payroll")],
            Dict::new(),
        )
        .await;
        assert_eq!(e.uri, "wamp.error.not_authorized", "{e}");
        assert!(
            e.to_string().contains("switchyard.queue.push.payroll"),
            "{e}"
        );
        // An unknown queue is refused the same way: no probing for names.
        let e = call_err(
            &p,
            "switchyard.queue.push",
            vec![Value::from("nope")],
            Dict::new(),
        )
        .await;
        assert_eq!(e.uri, "wamp.error.not_authorized", "{e}");

        // push_many: one forbidden queue refuses the whole batch.
        let item = |q: &str| Value::Dict(Dict::new().with("queue", q));
        p.call(
            "switchyard.queue.push_many",
            vec![Value::List(vec![item("reports")])],
            Dict::new(),
        )
        .await
        .expect("push_many into the allowed queue");
        let e = call_err(
            &p,
            "switchyard.queue.push_many",
            vec![Value::List(vec![item("reports"), item("payroll")])],
            Dict::new(),
        )
        .await;
        assert_eq!(e.uri, "wamp.error.not_authorized", "{e}");

        // Reads.
        let (args, _) = p
            .call(
                "switchyard.queue.peek",
                vec![Value::from("reports")],
                Dict::new(),
            )
            .await
            .expect("peek the allowed queue");
        assert!(
            matches!(args.first(), Some(Value::List(l)) if l.len() == 2),
            "{args:?}"
        );
        for procedure in [
            "switchyard.queue.peek",
            "switchyard.queue.dead",
            "switchyard.queue.stats",
        ] {
            let e = call_err(&p, procedure, vec![Value::from("payroll")], Dict::new()).await;
            assert_eq!(e.uri, "wamp.error.not_authorized", "{procedure}: {e}");
        }
        p.call(
            "switchyard.queue.job",
            vec![Value::UInt(reports_job)],
            Dict::new(),
        )
        .await
        .expect("a job of the allowed queue");
        let e = call_err(
            &p,
            "switchyard.queue.job",
            vec![Value::UInt(payroll_job)],
            Dict::new(),
        )
        .await;
        assert_eq!(e.uri, "wamp.error.not_authorized", "{e}");
        assert!(
            !e.to_string().contains("payroll"),
            "the queue's name leaks: {e}"
        );
        let (args, _) = p
            .call("switchyard.queue.list", vec![], Dict::new())
            .await
            .expect("list");
        let names: Vec<String> = match args.first() {
            Some(Value::List(l)) => l
                .iter()
                .filter_map(|s| match s {
                    Value::Dict(d) => d.get_str("name").map(str::to_string),
                    _ => None,
                })
                .collect(),
            other => panic!("list: {other:?}"),
        };
        assert_eq!(
            names,
            vec!["reports".to_string()],
            "list shows only allowed queues"
        );
        let e = call_err(
            &p,
            "switchyard.queue.purge",
            vec![Value::from("payroll")],
            Dict::new().with("which", "all"),
        )
        .await;
        assert_eq!(e.uri, "wamp.error.not_authorized", "{e}");

        // A role written before per-queue scopes keeps procedure-wide access.
        let old = join_ticket(&router, "old").await;
        for q in ["reports", "payroll"] {
            old.call("switchyard.queue.push", vec![Value::from(q)], Dict::new())
                .await
                .expect("legacy role pushes as before");
        }

        // The HTTP bridge's endpoint is a push under the key's role.
        let (status, body) = post(bridge_port, "/queues/reports/jobs", "{\"args\": [1]}");
        assert_eq!(status, 202, "{body}");
        let (status, body) = post(bridge_port, "/queues/payroll/jobs", "{\"args\": [1]}");
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("wamp.error.not_authorized"), "{body}");

        // Nothing reached payroll but the admin's and the legacy role's jobs.
        let (_, st) = admin
            .call(
                "switchyard.queue.stats",
                vec![Value::from("payroll")],
                Dict::new(),
            )
            .await
            .expect("stats");
        assert_eq!(st.get("ready"), Some(&Value::UInt(2)), "{st:?}");
    });
    assert!(router.log_text().contains("queue access refused"));
}

/// A role decided by the dynamic authorizer is asked about the per-queue URI.
#[test]
fn the_dynamic_authorizer_decides_per_queue_too() {
    let hash = switchyard_router::auth::ticket::hash_secret(ADMIN_TICKET).expect("hash");
    let router = Router::start(&format!(
        "authorizer = \"test.authorize\"\n\n\
         [realm.auth]\nmethods = [\"anonymous\", \"ticket\"]\nanonymous_role = \"guest\"\n\n\
         [[realm.auth.ticket]]\nauthid = \"authz\"\nsecret = \"{hash}\"\nrole = \"authz\"\n\n\
         [[realm.role]]\nname = \"authz\"\n\n\
         [[realm.role.permission]]\nuri = \"test.authorize\"\nallow = [\"register\"]\n\n\
         [[realm.queue]]\nname = \"reports\"\ntarget = \"test.reports\"\n\n\
         [[realm.queue]]\nname = \"payroll\"\ntarget = \"test.payroll\"\n"
    ));
    runtime().block_on(async {
        let asked = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
        let a = join_ticket(&router, "authz").await;
        let log = asked.clone();
        a.register("test.authorize", move |args, _| {
            let log = log.clone();
            async move {
                let uri = args
                    .get(1)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                log.lock().push(uri.clone());
                let ok = uri == "switchyard.queue.push"
                    || uri == "switchyard.queue.push.reports"
                    || uri == "test.results.ok";
                Ok((vec![Value::Bool(ok)], Dict::new()))
            }
        })
        .await
        .expect("register the authorizer");
        let p = join(&router).await;
        p.call(
            "switchyard.queue.push",
            vec![Value::from("reports")],
            Dict::new(),
        )
        .await
        .expect("allowed by the authorizer");
        let e = call_err(
            &p,
            "switchyard.queue.push",
            vec![Value::from("payroll")],
            Dict::new(),
        )
        .await;
        assert_eq!(e.uri, "wamp.error.not_authorized", "{e}");
        assert!(
            asked
                .lock()
                .iter()
                .any(|u| u == "switchyard.queue.push.payroll"),
            "{:?}",
            asked.lock()
        );
        // The result topic is asked about too, as a publish by the producer.
        p.call(
            "switchyard.queue.push",
            vec![Value::from("reports")],
            Dict::new().with("result_topic", "test.results.ok"),
        )
        .await
        .expect("an allowed result topic");
        let e = call_err(
            &p,
            "switchyard.queue.push",
            vec![Value::from("reports")],
            Dict::new().with("result_topic", "test.results.no"),
        )
        .await;
        assert_eq!(e.uri, "wamp.error.not_authorized", "{e}");
    });
}

/// In a realm with roles, a queue name must be one URI component: `a.b`
/// would be authorized as `switchyard.queue.push.a.b`, which other
/// permissions could match.
#[test]
fn dotted_queue_names_are_refused_where_queues_are_authorized() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("s.toml");
    std::fs::write(
        &cfg,
        "[[realm]]\nname = \"realm1\"\n\n[[realm.role]]\nname = \"anonymous\"\n\n\
         [[realm.queue]]\nname = \"pay.roll\"\ntarget = \"test.x\"\n",
    )
    .expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check-config")
        .arg(&cfg)
        .output()
        .expect("run");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("queue[0].name") && text.contains("one URI component"),
        "{text}"
    );
    // At run time too.
    let router = Router::start(
        "[[realm.role]]\nname = \"anonymous\"\n\n\
         [[realm.role.permission]]\nuri = \"switchyard.queue.\"\nmatch = \"prefix\"\nallow = [\"call\"]\n\n\
         [[realm.role.permission]]\nuri = \"test.\"\nmatch = \"prefix\"\nallow = [\"call\"]\n",
    );
    runtime().block_on(async {
        let s = join(&router).await;
        let e = call_err(
            &s,
            "switchyard.queue.declare",
            vec![],
            Dict::new()
                .with("name", "pay.roll")
                .with("target", "test.x"),
        )
        .await;
        assert_eq!(e.uri, "wamp.error.not_authorized", "{e}");
        assert!(e.to_string().contains("one URI component"), "{e}");
        s.call(
            "switchyard.queue.declare",
            vec![],
            Dict::new().with("name", "payroll").with("target", "test.x"),
        )
        .await
        .expect("a one-component name");
    });
}

/// `result_topic` is published by the router on the producer's behalf: it
/// is validated as a PUBLISH URI (reserved `wamp.` namespace and invalid URIs
/// refused, even in a realm without roles) and authorized as a PUBLISH by
/// the producer when the job is pushed. Targets (called for the producer)
/// likewise, per job and in a run-time declaration.
#[test]
fn result_topics_and_targets_are_checked_as_the_producers_own() {
    let bridge_port = common::free_port();
    let open = Router::start(&format!(
        "[[realm.queue]]\nname = \"reports\"\ntarget = \"test.reports\"\n\n\
         [[bridge]]\naddress = \"127.0.0.1:{bridge_port}\"\nrealm = \"realm1\"\nallow_unsigned = true\n"
    ));
    runtime().block_on(async {
        let p = join(&open).await;
        for topic in [
            "wamp.session.on_leave",
            "wamp.registration.on_create",
            "test..x",
            "test.a b",
            "",
        ] {
            let e = call_err(
                &p,
                "switchyard.queue.push",
                vec![Value::from("reports")],
                Dict::new().with("result_topic", topic),
            )
            .await;
            assert_eq!(e.uri, INVALID, "{topic:?}: {e}");
            assert!(e.to_string().contains("result_topic"), "{e}");
            let e = call_err(
                &p,
                "switchyard.queue.push_many",
                vec![Value::List(vec![Value::Dict(
                    Dict::new()
                        .with("queue", "reports")
                        .with("result_topic", topic),
                )])],
                Dict::new(),
            )
            .await;
            assert_eq!(e.uri, INVALID, "{topic:?}: {e}");
            assert!(e.to_string().contains("result_topic"), "{e}");
        }
        for target in ["wamp.session.kill_all", "wamp.registration.list"] {
            let e = call_err(
                &p,
                "switchyard.queue.push",
                vec![Value::from("reports")],
                Dict::new().with("target", target),
            )
            .await;
            assert_eq!(e.uri, INVALID, "{target}: {e}");
            let e = call_err(
                &p,
                "switchyard.queue.declare",
                vec![],
                Dict::new().with("name", "meta").with("target", target),
            )
            .await;
            assert_eq!(e.uri, INVALID, "{target}: {e}");
        }
        let (_, st) = p
            .call(
                "switchyard.queue.stats",
                vec![Value::from("reports")],
                Dict::new(),
            )
            .await
            .expect("stats");
        assert_eq!(
            st.get("ready"),
            Some(&Value::UInt(0)),
            "nothing stored: {st:?}"
        );
    });
    let (status, body) = post(
        bridge_port,
        "/queues/reports/jobs",
        "{\"result_topic\": \"wamp.session.on_leave\"}",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("reserved for the router"), "{body}");
    drop(open);

    // With roles: the producer publishes on its own results only.
    let router = Router::start(
        "[[realm.role]]\nname = \"anonymous\"\n\n\
         [[realm.role.permission]]\nuri = \"switchyard.queue.push\"\nallow = [\"call\"]\n\n\
         [[realm.role.permission]]\nuri = \"switchyard.queue.declare\"\nallow = [\"call\"]\n\n\
         [[realm.role.permission]]\nuri = \"test.results.mine.\"\nmatch = \"prefix\"\nallow = [\"publish\", \"subscribe\"]\n\n\
         [[realm.role.permission]]\nuri = \"test.reports\"\nallow = [\"register\"]\n\n\
         [[realm.queue]]\nname = \"reports\"\ntarget = \"test.reports\"\n",
    );
    runtime().block_on(async {
        let w = join(&router).await;
        w.register("test.reports", |_, _| async {
            Ok((vec![Value::from("done")], Dict::new()))
        })
        .await
        .expect("worker");
        let p = join(&router).await;
        let e = call_err(
            &p,
            "switchyard.queue.push",
            vec![Value::from("reports")],
            Dict::new().with("result_topic", "test.results.other"),
        )
        .await;
        assert_eq!(e.uri, "wamp.error.not_authorized", "{e}");
        assert!(e.to_string().contains("publish"), "{e}");
        let e = call_err(
            &p,
            "switchyard.queue.declare",
            vec![],
            Dict::new()
                .with("name", "elsewhere")
                .with("target", "test.admin.wipe"),
        )
        .await;
        assert_eq!(e.uri, "wamp.error.not_authorized", "{e}");
        let kw = push_and_wait(&p, "reports", "test.results.mine.1").await;
        assert_eq!(kw.get_str("status"), Some("completed"), "{kw:?}");
    });
}

/// Sends a CALL from a raw client and returns (error URI, message) of its
/// ERROR, or None for a RESULT.
fn raw_call(
    raw: &mut common::Raw,
    procedure: &str,
    args: Vec<Value>,
    kwargs: Dict,
) -> Option<(String, String)> {
    let request = raw.req();
    raw.send(&switchyard_proto::Message::Call {
        request,
        options: Dict::new(),
        procedure: procedure.into(),
        payload: switchyard_proto::Payload::values(args, Some(kwargs)),
    });
    loop {
        match raw.expect("RESULT or ERROR") {
            switchyard_proto::Message::Result { request: r, .. } if r == request => return None,
            switchyard_proto::Message::Error {
                request: r,
                error,
                payload,
                ..
            } if r == request => {
                let msg = common::args_of(&payload)
                    .first()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                return Some((error, msg));
            }
            _ => {}
        }
    }
}

/// `{key: a, key: b}` as the encoders write it: both entries, in order.
fn twice(key: &str, a: Value, b: Value) -> Value {
    Value::Dict(Dict(vec![(key.into(), a), (key.into(), b)]))
}

/// The issue's `job_kwarg` forgery: a producer whose kwargs carry `_job`
/// twice got its own `_job` to the worker (the router replaced the first,
/// decoders keep the last). Hand-made frames in JSON, MessagePack and CBOR
/// with a repeated key are refused; a bound publication that repeats the key
/// (stored as it came) reaches the worker with the router's `_job` only; the
/// HTTP endpoint refuses a body that repeats a key.
#[test]
fn repeated_map_keys_cannot_forge_what_the_router_adds() {
    let bridge_port = common::free_port();
    let router = Router::start(&format!(
        "[[realm.queue]]\nname = \"jk\"\ntarget = \"test.jk\"\njob_kwarg = \"_job\"\n\n\
         [[realm.queue_binding]]\ntopic = \"test.jk.in\"\nqueues = [\"jk\"]\n\n\
         [[bridge]]\naddress = \"127.0.0.1:{bridge_port}\"\nrealm = \"realm1\"\nallow_unsigned = true\n"
    ));
    let forged = || Value::Dict(Dict::new().with("id", 999_999u64).with("queue", "jk"));
    for ser in [Serializer::Json, Serializer::MsgPack, Serializer::Cbor] {
        let mut raw = common::Raw::connect(router.rs_port, ser);
        raw.join("realm1");
        // The job's kwargs repeat `_job`.
        let kwargs = Dict::new().with("kwargs", twice("_job", Value::UInt(1), forged()));
        let (uri, msg) = raw_call(
            &mut raw,
            "switchyard.queue.push",
            vec![Value::from("jk")],
            kwargs,
        )
        .expect("refused");
        assert_eq!(uri, INVALID, "{ser:?}: {msg}");
        assert!(
            msg.contains("_job") && msg.contains("repeats a key"),
            "{ser:?}: {msg}"
        );
        // The push options repeat a key the router reads.
        let options = Dict(vec![
            ("result_topic".into(), Value::from("test.a")),
            ("result_topic".into(), Value::from("wamp.session.on_leave")),
        ]);
        let (uri, msg) = raw_call(
            &mut raw,
            "switchyard.queue.push",
            vec![Value::from("jk")],
            options,
        )
        .expect("refused");
        assert_eq!(uri, INVALID, "{ser:?}: {msg}");
        // push_many, nested in a list.
        let item = Value::Dict(
            Dict::new()
                .with("queue", "jk")
                .with("kwargs", twice("_job", Value::UInt(1), forged())),
        );
        let (uri, _) = raw_call(
            &mut raw,
            "switchyard.queue.push_many",
            vec![Value::List(vec![item])],
            Dict::new(),
        )
        .expect("refused");
        assert_eq!(uri, INVALID, "{ser:?}");
        // A bound publication is stored as it came.
        let request = raw.req();
        raw.send(&switchyard_proto::Message::Publish {
            request,
            options: Dict::new().with("acknowledge", true),
            topic: "test.jk.in".into(),
            payload: switchyard_proto::Payload::values(
                vec![Value::from(format!("{ser:?}"))],
                Some(Dict(vec![
                    ("_job".into(), Value::UInt(1)),
                    ("_job".into(), forged()),
                ])),
            ),
        });
        match raw.expect("PUBLISHED") {
            switchyard_proto::Message::Published { .. } => {}
            other => panic!("{ser:?}: {other:?}"),
        }
    }
    let (status, body) = post(
        bridge_port,
        "/queues/jk/jobs",
        "{\"kwargs\": {\"_job\": 1, \"_job\": {\"id\": 999999}}}",
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("repeats a key") || body.contains("appears twice"),
        "{body}"
    );
    let (status, body) = post(
        bridge_port,
        "/queues/jk/jobs",
        "{\"idempotency_key\": \"a\", \"idempotency_key\": \"b\"}",
    );
    assert_eq!(status, 400, "{body}");

    // The worker: three jobs (one per serializer's publication), each with
    // exactly one `_job`, the router's.
    runtime().block_on(async {
        let seen = Arc::new(parking_lot::Mutex::new(Vec::<Dict>::new()));
        let w = join(&router).await;
        let log = seen.clone();
        w.register("test.jk", move |_, kw| {
            let log = log.clone();
            async move {
                log.lock().push(kw);
                Ok((vec![], Dict::new()))
            }
        })
        .await
        .expect("worker");
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.lock().len() < 3 {
            assert!(Instant::now() < deadline, "jobs not run: {:?}", seen.lock());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for kw in seen.lock().iter() {
            let jobs: Vec<&Value> =
                kw.0.iter()
                    .filter(|(k, _)| k == "_job")
                    .map(|(_, v)| v)
                    .collect();
            assert_eq!(jobs.len(), 1, "{kw:?}");
            let Value::Dict(info) = jobs[0] else {
                panic!("{kw:?}")
            };
            assert_ne!(
                info.get("id"),
                Some(&Value::UInt(999_999)),
                "forged: {kw:?}"
            );
            assert_eq!(info.get_str("queue"), Some("jk"));
        }
    });
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Job payloads and idempotency keys are private to the router's user: a
/// fresh data directory is created 0700 and the store 0600; an existing
/// directory or store that others can read is reported once at start, with
/// its path and mode.
#[test]
fn the_data_directory_and_store_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mut router = Router::start("");
    let data = router.dir.path().join("switchyard-data");
    let store = data.join("queues-realm1.redb");
    let first_store = store.clone();
    assert_eq!(mode(&data), 0o700, "data directory");
    assert_eq!(mode(&store), 0o600, "store");
    assert_eq!(
        mode(&data.join("queues-realm1.redb-wal")),
        0o600,
        "the store's write-ahead log"
    );
    assert!(!router.log_text().contains("open to other local users"));
    assert!(router.terminate().success());

    let outside = tempfile::tempdir().expect("tempdir");
    let data = outside.path().join("shared-data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let store = data.join("queues-realm1.redb");
    // A store of an earlier run (an empty file is refused: a truncated store).
    std::fs::copy(&first_store, &store).expect("store file");
    drop(router);
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let router = Router::start(&format!("[storage]\ndata_dir = \"{}\"\n", data.display()));
    runtime().block_on(async {
        // The store works.
        let s = join(&router).await;
        s.call("switchyard.queue.list", vec![], Dict::new())
            .await
            .expect("list");
    });
    let log = router.log_text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("open to other local users"))
        .collect();
    assert_eq!(
        warnings.len(),
        2,
        "one for the directory, one for the store:\n{log}"
    );
    assert!(
        warnings
            .iter()
            .any(|l| l.contains(&data.display().to_string())
                && l.contains("755")
                && l.contains("directory")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|l| l.contains(&store.display().to_string()) && l.contains("644")),
        "{warnings:?}"
    );
    // Left as they were: the operator may share them on purpose.
    assert_eq!(mode(&data), 0o755);
}

/// `check-config` names a bad `[realm.outbound_http]` entry.
#[test]
fn outbound_http_entries_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("s.toml");
    std::fs::write(
        &cfg,
        "[[realm]]\nname = \"realm1\"\n\n[realm.outbound_http]\n\
         allow = [\"ftp://hooks.example.com/\", \"http://user@hooks.example.com/\"]\n\
         allow_networks = [\"10.0.0.0/33\", \"not-a-network\"]\n",
    )
    .expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check-config")
        .arg(&cfg)
        .output()
        .expect("run");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    for want in [
        "outbound_http.allow[0]",
        "outbound_http.allow[1]",
        "outbound_http.allow_networks[0]",
        "outbound_http.allow_networks[1]",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
}
