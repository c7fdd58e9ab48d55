//! Durable HTTP subscribers (`[[bridge.subscriber]]` with `durable`) against
//! the real binary: the event is POSTed with the non-durable subscriber's
//! body and signature, retried by the queue's policy with the same job id,
//! kept while the receiver is down, dead-lettered after `max_attempts`,
//! and a full queue refuses the publication.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE as B64URL;
use base64::Engine;
use common::{Raw, Router};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use switchyard_proto::{Dict, Message, Payload, Serializer, Value};

const SECRET: &str = "durable-secret-longer-than-16";

/// One request a receiver got.
#[derive(Debug)]
struct Got {
    line: String,
    headers: HashMap<String, String>,
    body: String,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The query parameters of the request line, %-decoded.
    fn query(&self) -> HashMap<String, String> {
        let target = self.line.split_whitespace().nth(1).unwrap_or("");
        let query = target.split_once('?').map_or("", |x| x.1);
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), decode(v)))
            .collect()
    }

    /// Whether the Crossbar-style query signature verifies with `secret`.
    fn signed_with(&self, key: &str, secret: &str) -> bool {
        let q = self.query();
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac");
        for part in ["key", "timestamp", "seq", "nonce"] {
            mac.update(q.get(part).map_or("", String::as_str).as_bytes());
        }
        mac.update(self.body.as_bytes());
        q.get("key").map(String::as_str) == Some(key)
            && q.get("signature").map(String::as_str)
                == Some(B64URL.encode(mac.finalize().into_bytes()).as_str())
    }
}

fn decode(raw: &str) -> String {
    let b = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&raw[i + 1..i + 3], 16).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Serves requests on `l` in a thread: the n-th request (from 0) is
/// answered `status(n)`, and reported on the channel. Ends when the
/// channel's receiver is gone.
fn receiver(l: TcpListener, status: impl Fn(usize) -> u16 + Send + 'static) -> mpsc::Receiver<Got> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut n = 0;
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let Ok(clone) = s.try_clone() else { continue };
            let mut reader = BufReader::new(clone);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() || line.is_empty() {
                continue;
            }
            let mut headers = HashMap::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() {
                    break;
                }
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let code = status(n);
            n += 1;
            let reply =
                format!("HTTP/1.1 {code} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            s.write_all(reply.as_bytes()).ok();
            let got = Got {
                line: line.trim_end().to_string(),
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            if tx.send(got).is_err() {
                return;
            }
        }
    });
    rx
}

fn next(rx: &mpsc::Receiver<Got>, what: &str) -> Got {
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("no request: {what}"))
}

/// Publishes with acknowledgement: Ok(publication id) or Err(error URI).
fn publish(c: &mut Raw, topic: &str, payload: Payload) -> Result<u64, String> {
    publish_with(c, topic, payload, Dict::new())
}

fn publish_with(c: &mut Raw, topic: &str, payload: Payload, options: Dict) -> Result<u64, String> {
    let request = c.req();
    c.send(&Message::Publish {
        request,
        options: options.with("acknowledge", true),
        topic: topic.into(),
        payload,
    });
    match c.expect("PUBLISHED") {
        Message::Published { publication, .. } => Ok(publication),
        Message::Error { error, .. } => Err(error),
        other => panic!("expected PUBLISHED, got {other:?}"),
    }
}

/// Calls a procedure: Ok(kwargs) or Err(error URI).
fn call(c: &mut Raw, procedure: &str, args: Vec<Value>, kwargs: Dict) -> Result<Dict, String> {
    let request = c.req();
    c.send(&Message::Call {
        request,
        options: Dict::new(),
        procedure: procedure.into(),
        payload: Payload::values(args, Some(kwargs)),
    });
    match c.expect("RESULT") {
        Message::Result { payload, .. } => match payload.kwargs.map(|k| k.to_value()) {
            Some(Ok(Value::Dict(d))) => Ok(d),
            _ => Ok(Dict::new()),
        },
        Message::Error { error, .. } => Err(error),
        other => panic!("expected RESULT, got {other:?}"),
    }
}

fn stat(c: &mut Raw, queue: &str, field: &str) -> u64 {
    let st = call(
        c,
        "switchyard.queue.stats",
        vec![Value::from(queue)],
        Dict::new(),
    )
    .unwrap_or_else(|e| panic!("stats of {queue}: {e}"));
    st.get(field).and_then(Value::as_u64).unwrap_or(0)
}

fn wait_stat(c: &mut Raw, queue: &str, field: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while stat(c, queue, field) != want {
        assert!(
            Instant::now() < deadline,
            "{queue}: {field} never reached {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn bridge(extra: &str) -> Router {
    let port = common::free_port();
    Router::start(&format!(
        "[[bridge]]\naddress = \"127.0.0.1:{port}\"\nrealm = \"realm1\"\nallow_unsigned = true\n\n{extra}"
    ))
}

/// The receiver answers 500 then 200: the event arrives twice, as the
/// same job (attempt 1, then 2), with exactly the body a non-durable
/// subscriber of the same topic gets, signed with the subscriber's secret.
#[test]
fn a_refused_event_is_posted_again_as_the_same_job() {
    let durable_l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let plain_l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let durable_port = durable_l.local_addr().expect("addr").port();
    let plain_port = plain_l.local_addr().expect("addr").port();
    let durable = receiver(durable_l, |n| if n == 0 { 500 } else { 200 });
    let plain = receiver(plain_l, |_| 200);
    let r = bridge(&format!(
        "[[bridge.subscriber]]\ntopic = \"com.test.orders.\"\nmatch = \"prefix\"\n\
         url = \"http://127.0.0.1:{plain_port}/events\"\nkey = \"hooks\"\nsecret = \"{SECRET}\"\n\n\
         [[bridge.subscriber]]\ntopic = \"com.test.orders.\"\nmatch = \"prefix\"\n\
         url = \"http://127.0.0.1:{durable_port}/events\"\nkey = \"hooks\"\nsecret = \"{SECRET}\"\n\
         durable = {{ retry = {{ kind = \"fixed\", times = 5, spacing = \"100ms\" }}, max_attempts = 5 }}\n"
    ));
    let mut c = Raw::connect(r.rs_port, Serializer::MsgPack);
    c.join("realm1");
    let payload = Payload::values(
        vec![Value::from(4711u64), Value::from("x")],
        Some(Dict::new().with("total", 12u64)),
    );
    // disclose_me: the details carry the publisher, as the EVENTs do.
    let publication = publish_with(
        &mut c,
        "com.test.orders.paid",
        payload,
        Dict::new().with("disclose_me", true),
    )
    .expect("published");

    let reference = next(&plain, "the non-durable subscriber's POST");
    let first = next(&durable, "the first attempt");
    let second = next(&durable, "the second attempt");
    assert!(first.line.starts_with("POST /events?"), "{}", first.line);
    assert_eq!(first.header("x-switchyard-attempt"), "1");
    assert_eq!(second.header("x-switchyard-attempt"), "2");
    assert!(!first.header("x-switchyard-job").is_empty(), "{first:?}");
    assert_eq!(
        first.header("x-switchyard-job"),
        second.header("x-switchyard-job")
    );
    assert_eq!(first.header("x-switchyard-queue"), "_subscriber-1");
    let details = reference.json()["details"].clone();
    assert!(details["publisher"].is_u64(), "{details}");
    assert_eq!(details["topic"], "com.test.orders.paid");
    let expected = serde_json::json!({
        "topic": "com.test.orders.paid",
        "publication": publication,
        "args": [4711, "x"],
        "kwargs": {"total": 12},
        "details": details,
    });
    assert_eq!(reference.json(), expected);
    assert_eq!(first.json(), expected);
    assert_eq!(second.json(), expected);
    for got in [&reference, &first, &second] {
        assert!(got.signed_with("hooks", SECRET), "signature: {got:?}");
    }
    wait_stat(&mut c, "_subscriber-1", "completed_total", 1);
    assert_eq!(stat(&mut c, "_subscriber-1", "retried_total"), 1);
    // Nothing else arrives.
    assert!(durable.recv_timeout(Duration::from_millis(300)).is_err());

    // The publisher's exclude_authid applies as to the non-durable one:
    // excluded, the durable subscriber gets no job.
    let excluded = format!("http-subscriber:http://127.0.0.1:{durable_port}/events");
    let options = Dict::new().with(
        "exclude_authid",
        Value::List(vec![Value::from(excluded.as_str())]),
    );
    let p = Payload::values(vec![Value::from(2u64)], None);
    publish_with(&mut c, "com.test.orders.new", p, options).expect("published");
    assert_eq!(
        next(&plain, "the non-excluded subscriber").json()["args"],
        serde_json::json!([2])
    );
    assert!(
        durable.recv_timeout(Duration::from_millis(500)).is_err(),
        "excluded"
    );
    assert_eq!(stat(&mut c, "_subscriber-1", "completed_total"), 1);
}

/// Events published while the receiver is down are all delivered once it
/// is up, each as its own job.
#[test]
fn events_published_while_the_receiver_is_down_all_arrive() {
    let port = common::free_port();
    let r = bridge(&format!(
        "[[bridge.subscriber]]\ntopic = \"com.test.feed\"\n\
         url = \"http://127.0.0.1:{port}/in\"\nkey = \"k\"\nsecret = \"{SECRET}\"\n\
         durable = {{ queue = \"feed-out\", retry = {{ kind = \"fixed\", times = 100, spacing = \"100ms\" }}, max_attempts = 100 }}\n"
    ));
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.join("realm1");
    let mut published = Vec::new();
    for i in 0..6u64 {
        let p = Payload::values(vec![Value::from(i)], None);
        published.push(publish(&mut c, "com.test.feed", p).expect("published"));
    }
    // The receiver is down: the attempts fail, nothing is lost.
    std::thread::sleep(Duration::from_millis(400));
    assert!(stat(&mut c, "feed-out", "retried_total") >= 1);
    let rx = receiver(
        TcpListener::bind(("127.0.0.1", port)).expect("bind"),
        |_| 200,
    );
    let mut got = Vec::new();
    let mut jobs = Vec::new();
    while got.len() < published.len() {
        let g = next(&rx, "the events kept while the receiver was down");
        assert!(g.signed_with("k", SECRET), "{g:?}");
        let v = g.json();
        let n = v["args"][0].as_u64().expect("args[0]");
        assert_eq!(
            v["publication"].as_u64(),
            Some(published[n as usize]),
            "{v}"
        );
        got.push(n);
        jobs.push(g.header("x-switchyard-job").to_string());
    }
    eprintln!("arrival order after the receiver came up: {got:?}");
    got.sort_unstable();
    assert_eq!(got, (0..6).collect::<Vec<u64>>(), "every event, once each");
    jobs.sort();
    jobs.dedup();
    assert_eq!(jobs.len(), 6, "one job per event");
    wait_stat(&mut c, "feed-out", "completed_total", 6);
}

/// A receiver that always refuses: the event is dead after `max_attempts`;
/// nobody can push into the subscriber's queue; a full queue refuses the
/// publication.
#[test]
fn after_max_attempts_the_event_is_dead_and_a_full_queue_refuses() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let rx = receiver(l, |_| 500);
    let down = common::free_port();
    let r = bridge(&format!(
        "[[bridge.subscriber]]\ntopic = \"com.test.fail\"\n\
         url = \"http://127.0.0.1:{port}/in\"\nkey = \"k\"\nsecret = \"{SECRET}\"\n\
         durable = {{ retry = {{ kind = \"fixed\", times = 2, spacing = \"50ms\" }}, max_attempts = 2 }}\n\n\
         [[bridge.subscriber]]\ntopic = \"com.test.full\"\n\
         url = \"http://127.0.0.1:{down}/in\"\nkey = \"k\"\nsecret = \"{SECRET}\"\n\
         durable = {{ max_jobs = 1, retry = {{ kind = \"fixed\", times = 5, spacing = \"30s\" }} }}\n"
    ));
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.join("realm1");
    publish(
        &mut c,
        "com.test.fail",
        Payload::values(vec![Value::from(1u64)], None),
    )
    .expect("published");
    assert_eq!(next(&rx, "attempt 1").header("x-switchyard-attempt"), "1");
    assert_eq!(next(&rx, "attempt 2").header("x-switchyard-attempt"), "2");
    wait_stat(&mut c, "_subscriber-0", "dead", 1);
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "no third attempt"
    );

    // Its queue takes its topic's publications only.
    let pushed = call(
        &mut c,
        "switchyard.queue.push",
        vec![Value::from("_subscriber-0")],
        Dict::new().with("args", Value::List(vec![Value::from(1u64)])),
    );
    assert_eq!(pushed.err().as_deref(), Some("wamp.error.not_authorized"));
    // Nor can a client declare a queue under the reserved names.
    let declared = call(
        &mut c,
        "switchyard.queue.declare",
        vec![Value::Dict(Dict::new().with("name", "_subscriber-9"))],
        Dict::new(),
    );
    assert_eq!(declared.err().as_deref(), Some("wamp.error.not_authorized"));

    // max_jobs = 1: the first event waits, the second is refused.
    let full = |c: &mut Raw| publish(c, "com.test.full", Payload::values(vec![], None));
    full(&mut c).expect("the first event fits");
    assert_eq!(
        full(&mut c).err().as_deref(),
        Some("switchyard.queue.error.queue_full")
    );
}

/// `check-config` names what is wrong in a `durable` table, refuses the
/// reserved queue names, and a role that may not subscribe stops the router.
#[test]
fn durable_settings_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |durable: &str, realm: &str| {
        let path = dir.path().join("switchyard.toml");
        std::fs::write(
            &path,
            format!(
                "[[realm]]\nname = \"realm1\"\n{realm}\n\n[[bridge]]\naddress = \"127.0.0.1:18998\"\n\
                 realm = \"realm1\"\nallow_unsigned = true\n\n[[bridge.subscriber]]\ntopic = \"com.test.t\"\n\
                 url = \"http://127.0.0.1:9/in\"\nkey = \"k\"\nsecret = \"{SECRET}\"\n{durable}\n"
            ),
        )
        .expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("check-config")
            .arg(&path)
            .output()
            .expect("run");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = check("durable = {}", "");
    assert!(ok, "{text}");
    let (ok, text) = check("durable = { max_attempts = 0 }", "");
    assert!(
        !ok && text.contains("subscriber[0].durable.max_attempts"),
        "{text}"
    );
    let (ok, text) = check("durable = { queue = \"_subscriber-7\" }", "");
    assert!(!ok && text.contains("reserved"), "{text}");
    let (ok, text) = check("durable = { queue = \"a.b\" }", "");
    assert!(!ok && text.contains("must not contain '.'"), "{text}");
    let (ok, text) = check("durable = { retries = 3 }", "");
    assert!(!ok && text.contains("unknown field `retries`"), "{text}");

    // A role without the right to subscribe: the router does not start.
    let (ok, text) = check(
        "role = \"nobody\"\ndurable = {}",
        "\n[[realm.role]]\nname = \"nobody\"",
    );
    assert!(ok, "{text}");
    let path = dir.path().join("switchyard.toml");
    let log = dir.path().join("router.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .current_dir(dir.path())
        .arg("--config")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.is_some_and(|s| !s.success()), "started: {text}");
    assert!(
        text.contains("may not subscribe to \"com.test.t\""),
        "{text}"
    );
}

/// Acknowledged events outlive a router killed while the receiver is down:
/// after the restart they are POSTed, with their publication ids.
#[test]
fn acknowledged_events_survive_a_crash() {
    let port = common::free_port();
    let mut r = bridge(&format!(
        "[[bridge.subscriber]]\ntopic = \"com.test.crash\"\n\
         url = \"http://127.0.0.1:{port}/in\"\nkey = \"k\"\nsecret = \"{SECRET}\"\n\
         durable = {{ retry = {{ kind = \"fixed\", times = 100, spacing = \"100ms\" }}, max_attempts = 100 }}\n"
    ));
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.join("realm1");
    let published: Vec<u64> = (0..3u64)
        .map(|i| {
            publish(
                &mut c,
                "com.test.crash",
                Payload::values(vec![Value::from(i)], None),
            )
            .expect("published")
        })
        .collect();
    drop(c);
    r.signal(libc::SIGKILL);

    // The same configuration and data directory, again.
    let log = r.dir.path().join("router-2.log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .current_dir(r.dir.path())
        .arg("--config")
        .arg(r.dir.path().join("switchyard.toml"))
        .arg("--log-level")
        .arg("debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    r.child = Some(child);
    r.log = log;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !r.log_text().contains(" ready") {
        assert!(Instant::now() < deadline, "no restart: {}", r.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let rx = receiver(
        TcpListener::bind(("127.0.0.1", port)).expect("bind"),
        |_| 200,
    );
    let mut got = Vec::new();
    while got.len() < published.len() {
        let v = next(&rx, "the events stored before the crash").json();
        got.push(v["publication"].as_u64().expect("publication"));
    }
    got.sort_unstable();
    let mut want = published.clone();
    want.sort_unstable();
    assert_eq!(got, want);
}

/// With the default concurrency (1) and a receiver that accepts every
/// event, events arrive in the order they were published.
#[test]
fn events_arrive_in_publication_order_while_the_receiver_accepts() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let rx = receiver(l, |_| 200);
    let r = bridge(&format!(
        "[[bridge.subscriber]]\ntopic = \"com.test.seq\"\n\
         url = \"http://127.0.0.1:{port}/in\"\nkey = \"k\"\nsecret = \"{SECRET}\"\ndurable = {{}}\n"
    ));
    let mut c = Raw::connect(r.rs_port, Serializer::MsgPack);
    c.join("realm1");
    let published: Vec<u64> = (0..20u64)
        .map(|i| {
            publish(
                &mut c,
                "com.test.seq",
                Payload::values(vec![Value::from(i)], None),
            )
            .expect("published")
        })
        .collect();
    let got: Vec<u64> = published
        .iter()
        .map(|_| {
            next(&rx, "the next event").json()["publication"]
                .as_u64()
                .expect("publication")
        })
        .collect();
    assert_eq!(got, published);
}
