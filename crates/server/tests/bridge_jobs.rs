//! Jobs over HTTP against the real binary (docs/QUEUES.md, "Jobs over
//! HTTP"): `POST /queues/{name}/jobs` answers 202 with a `Location`, `GET`
//! there tells the job's state, attempts, last error and result, within the
//! key's rights and the bridge's realm only; and the `X-Authentication`
//! header signs any bridge request instead of the query.

mod common;

use std::time::{Duration, Instant};

use common::http::{bound_query, request, x_authentication, Reply};
use common::Router;
use switchyard_client::{Dict, Serializer, Session, Value};

const BACKEND: (&str, &str) = ("backend", "backend-secret-0123456789");
const READER: (&str, &str) = ("reader", "reader-secret-0123456789");

struct Setup {
    router: Router,
    /// realm1, 202 (the default).
    port: u16,
    /// realm1, queue_push_status = 201.
    port_201: u16,
    /// realm2.
    port_realm2: u16,
}

fn start() -> Setup {
    let (port, port_201, port_realm2) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let key = |(k, s): (&str, &str), role: &str| {
        format!("[[bridge.key]]\nkey = \"{k}\"\nsecret = \"{s}\"\nrole = \"{role}\"\n\n")
    };
    let router = Router::start(&format!(
        "[[realm.role]]\nname = \"anonymous\"\n\n\
         [[realm.role.permission]]\nuri = \"com.test.\"\nmatch = \"prefix\"\nallow = [\"register\", \"call\"]\n\n\
         [[realm.role]]\nname = \"backend\"\n\n\
         [[realm.role.permission]]\nuri = \"switchyard.queue.\"\nmatch = \"prefix\"\nallow = [\"call\"]\n\n\
         [[realm.role.permission]]\nuri = \"com.test.\"\nmatch = \"prefix\"\nallow = [\"call\", \"publish\"]\n\n\
         [[realm.role]]\nname = \"reader\"\n\n\
         [[realm.role.permission]]\nuri = \"switchyard.queue.job\"\nallow = [\"call\"]\n\n\
         [[realm.role.permission]]\nuri = \"switchyard.queue.job.other\"\nallow = [\"call\"]\n\n\
         [[realm.queue]]\nname = \"mail\"\ntarget = \"com.test.mail\"\n\n\
         [[realm.queue]]\nname = \"other\"\ntarget = \"com.test.other\"\n\n\
         [[realm.queue]]\nname = \"flaky\"\ntarget = \"com.test.flaky\"\nmax_attempts = 1\n\n\
         [[realm]]\nname = \"realm2\"\n\n\
         [[realm.queue]]\nname = \"mail\"\ntarget = \"com.test.mail\"\n\n\
         [[bridge]]\naddress = \"127.0.0.1:{port}\"\nrealm = \"realm1\"\njsonrpc_path = \"/rpc\"\n\n{}{}\
         [[bridge]]\naddress = \"127.0.0.1:{port_201}\"\nrealm = \"realm1\"\nqueue_push_status = 201\n\n{}\
         [[bridge]]\naddress = \"127.0.0.1:{port_realm2}\"\nrealm = \"realm2\"\n\n{}",
        key(BACKEND, "backend"),
        key(READER, "reader"),
        key(BACKEND, "backend"),
        key(BACKEND, "backend"),
    ));
    Setup {
        router,
        port,
        port_201,
        port_realm2,
    }
}

/// A job pushed with the bound query signature.
fn push(port: u16, queue: &str, nonce: &str, idempotency_key: Option<&str>, body: &str) -> Reply {
    let path = format!("/queues/{queue}/jobs");
    let q = bound_query(BACKEND, "POST", &path, nonce, idempotency_key, body);
    let headers = match idempotency_key {
        Some(k) => format!("Content-Type: application/json\r\nIdempotency-Key: {k}\r\n"),
        None => "Content-Type: application/json\r\n".into(),
    };
    request(port, "POST", &format!("{path}?{q}"), &headers, body)
}

/// `GET path` signed with the bound query by `key`.
fn get(port: u16, key: (&str, &str), path: &str, nonce: &str) -> Reply {
    let q = bound_query(key, "GET", path, nonce, None, "");
    request(port, "GET", &format!("{path}?{q}"), "", "")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Polls `path` until the job's state is `state` (10 s at most).
fn wait_for_state(port: u16, path: &str, state: &str, nonce: &mut u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        *nonce += 1;
        let r = get(port, BACKEND, path, &nonce.to_string());
        assert_eq!(r.status, 200, "{}", r.body);
        let j = r.json();
        if j["state"] == state {
            return j;
        }
        assert!(Instant::now() < deadline, "still {j} instead of {state}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_pushed_job_answers_202_with_its_location_and_its_state_until_done() {
    let s = start();
    let job = r#"{"args": ["a@b.c"], "kwargs": {"subject": "hi"}}"#;
    let r = push(s.port, "mail", "1", Some("order-1"), job);
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["id"].as_u64().expect("id");
    let location = format!("/queues/mail/jobs/{id}");
    assert_eq!(r.header("location").as_deref(), Some(location.as_str()));
    assert_eq!(r.json()["location"], location.as_str());

    // No worker yet: waiting.
    let waiting = get(s.port, BACKEND, &location, "2");
    assert_eq!(waiting.status, 200, "{}", waiting.body);
    let w = waiting.json();
    assert_eq!(w["id"], id);
    assert_eq!(w["queue"], "mail");
    assert_eq!(w["state"], "ready", "{w}");
    assert_eq!(w["attempts"], 0);
    assert_eq!(w["result"], serde_json::Value::Null);
    assert_eq!(w["last_error"], serde_json::Value::Null);

    // The same Idempotency-Key: 409 with the first job's id and location.
    let again = push(s.port, "mail", "3", Some("order-1"), job);
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.json()["id"], id);
    assert_eq!(again.header("location").as_deref(), Some(location.as_str()));

    // A worker completes it: the result is readable.
    let rt = runtime();
    let url = s.router.rs_url();
    let _worker = rt.block_on(async {
        let w = Session::connect(&url, "realm1", Serializer::Json)
            .await
            .expect("worker");
        w.register("com.test.mail", |args, _| async move {
            Ok((
                vec![
                    Value::from("sent"),
                    args.into_iter().next().unwrap_or(Value::Null),
                ],
                Dict::new().with("pages", 3u64),
            ))
        })
        .await
        .expect("register");
        w.register("com.test.flaky", |_, _| async move {
            Err((
                "com.test.error.no_printer".to_string(),
                vec![Value::from("out of paper")],
                Dict::new(),
            ))
        })
        .await
        .expect("register");
        w
    });
    let mut nonce = 100;
    let done = wait_for_state(s.port, &location, "completed", &mut nonce);
    assert_eq!(done["attempts"], 1, "{done}");
    assert_eq!(
        done["result"],
        serde_json::json!({"args": ["sent", "a@b.c"], "kwargs": {"pages": 3}})
    );
    assert!(done["completed_at_ms"].as_u64().is_some(), "{done}");
    assert_eq!(done["result_truncated"], false);

    // A job that fails for good: dead, with its last error.
    let r = push(s.port, "flaky", "4", None, "{}");
    assert_eq!(r.status, 202, "{}", r.body);
    let flaky = r.header("location").expect("location");
    let dead = wait_for_state(s.port, &flaky, "dead", &mut nonce);
    assert_eq!(dead["attempts"], 1, "{dead}");
    assert_eq!(
        dead["last_error"]["uri"], "com.test.error.no_printer",
        "{dead}"
    );
    assert_eq!(dead["dead_reason"], "attempts_exhausted", "{dead}");
    assert_eq!(dead["result"], serde_json::Value::Null);

    // `queue_push_status = 201` keeps the former answer, with the location.
    let r = push(s.port_201, "other", "5", None, "{}");
    assert_eq!(r.status, 201, "{}", r.body);
    let other_id = r.json()["id"].as_u64().expect("id");
    assert_eq!(
        r.header("location"),
        Some(format!("/queues/other/jobs/{other_id}"))
    );
}

/// A job is read only through its own queue, by a key that may read that
/// queue, on a bridge of its realm; every other case is the same 404.
#[test]
fn a_job_is_read_only_through_its_queue_by_a_key_that_may() {
    let s = start();
    let mail = push(s.port, "mail", "1", None, r#"{"args": [1]}"#);
    assert_eq!(mail.status, 202, "{}", mail.body);
    let mail_id = mail.json()["id"].as_u64().expect("id");
    let other = push(s.port, "other", "2", None, r#"{"args": [2]}"#);
    let other_id = other.json()["id"].as_u64().expect("id");

    // The reader may read `other`'s jobs...
    let r = get(
        s.port,
        READER,
        &format!("/queues/other/jobs/{other_id}"),
        "3",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "ready");

    let not_found = |r: Reply, what: &str| {
        assert_eq!(r.status, 404, "{what}: {}", r.body);
        assert_eq!(
            r.json()["error"],
            "switchyard.queue.error.unknown_job",
            "{what}: {}",
            r.body
        );
        r.json()["message"].as_str().unwrap_or("").to_string()
    };
    // ... not `mail`'s: the answer is the one for an unknown job.
    let denied = not_found(
        get(s.port, READER, &format!("/queues/mail/jobs/{mail_id}"), "4"),
        "a queue the key may not read",
    );
    let unknown = not_found(
        get(s.port, READER, "/queues/mail/jobs/987654", "5"),
        "an unknown job",
    );
    assert_eq!(
        denied.replace(&mail_id.to_string(), "N"),
        unknown.replace("987654", "N"),
        "the two answers differ"
    );
    // A job through another queue's path.
    not_found(
        get(
            s.port,
            BACKEND,
            &format!("/queues/other/jobs/{mail_id}"),
            "6",
        ),
        "another queue's path",
    );
    // Not a number, a queue that does not exist.
    not_found(
        get(s.port, BACKEND, "/queues/mail/jobs/x1", "7"),
        "not an id",
    );
    not_found(
        get(
            s.port,
            BACKEND,
            &format!("/queues/nope/jobs/{mail_id}"),
            "8",
        ),
        "no such queue",
    );
    // Another realm's bridge does not see realm1's job (realm2 has a
    // queue `mail` too, without that job).
    not_found(
        get(
            s.port_realm2,
            BACKEND,
            &format!("/queues/mail/jobs/{mail_id}"),
            "9",
        ),
        "another realm",
    );
    // Unsigned, signed for another path, another method.
    let path = format!("/queues/mail/jobs/{mail_id}");
    assert_eq!(request(s.port, "GET", &path, "", "").status, 401);
    let q = bound_query(BACKEND, "GET", "/queues/mail/jobs/999", "10", None, "");
    assert_eq!(
        request(s.port, "GET", &format!("{path}?{q}"), "", "").status,
        401
    );
    let r = request(s.port, "DELETE", &path, "", "");
    assert_eq!(r.status, 405, "{}", r.body);
    assert_eq!(r.header("allow").as_deref(), Some("GET"));
}

/// `X-Authentication` signs any request in place of the query: the method,
/// the path with its query, `Idempotency-Key` and the body; once.
#[test]
fn the_x_authentication_header_signs_method_target_and_body_once() {
    let s = start();
    let job = r#"{"args": [7]}"#;
    let path = "/queues/mail/jobs";
    let header = x_authentication(BACKEND, "POST", path, "1", Some("k-1"), job);
    let headers = format!("{header}Idempotency-Key: k-1\r\nContent-Type: application/json\r\n");
    let r = request(s.port, "POST", path, &headers, job);
    assert_eq!(r.status, 202, "{}", r.body);
    let location = r.header("location").expect("location");
    // The same request again: a replay.
    let r = request(s.port, "POST", path, &headers, job);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"], "switchyard.error.replayed_request");
    // Each part is covered: another body, Idempotency-Key, method, query.
    let refused = |r: Reply, what: &str| {
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_eq!(
            r.json()["error"],
            "switchyard.error.invalid_signature",
            "{what}"
        );
    };
    let h = x_authentication(BACKEND, "POST", path, "2", Some("k-2"), job);
    refused(
        request(
            s.port,
            "POST",
            path,
            &format!("{h}Idempotency-Key: k-2\r\n"),
            "{}",
        ),
        "another body",
    );
    let h = x_authentication(BACKEND, "POST", path, "3", Some("k-3"), job);
    refused(
        request(
            s.port,
            "POST",
            path,
            &format!("{h}Idempotency-Key: k-4\r\n"),
            job,
        ),
        "another Idempotency-Key",
    );
    let h = x_authentication(BACKEND, "POST", "/queues/other/jobs", "4", None, job);
    refused(request(s.port, "POST", path, &h, job), "another queue");
    let h = x_authentication(BACKEND, "GET", &format!("{location}?a=1"), "5", None, "");
    refused(
        request(s.port, "GET", &format!("{location}?a=2"), &h, ""),
        "another query",
    );
    let r = request(s.port, "GET", &format!("{location}?a=1"), &h, "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "ready");
    // A wrong secret, an unknown key, a missing field.
    let h = x_authentication(
        (BACKEND.0, "not-the-secret-000000"),
        "GET",
        &location,
        "6",
        None,
        "",
    );
    refused(request(s.port, "GET", &location, &h, ""), "wrong secret");
    let h = x_authentication(("nobody", BACKEND.1), "GET", &location, "7", None, "");
    let r = request(s.port, "GET", &location, &h, "");
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("switchyard.error.unknown_key"))
    );
    let r = request(
        s.port,
        "GET",
        &location,
        "X-Authentication: key=backend, nonce=1\r\n",
        "",
    );
    assert_eq!(r.status, 401, "{}", r.body);
    // Header and query signatures together: ambiguous.
    let h = x_authentication(BACKEND, "GET", &location, "8", None, "");
    let q = bound_query(BACKEND, "GET", &location, "9", None, "");
    let r = request(s.port, "GET", &format!("{location}?{q}"), &h, "");
    assert_eq!(r.status, 400, "{}", r.body);
    // Crossbar's endpoints take it too (and it covers the method and path).
    let call = r#"{"procedure": "switchyard.queue.stats", "args": ["mail"]}"#;
    let h = x_authentication(BACKEND, "POST", "/call", "10", None, call);
    let r = request(s.port, "POST", "/call", &h, call);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["kwargs"]["ready"].as_u64().is_some(), "{}", r.body);
    let h = x_authentication(BACKEND, "POST", "/call", "11", None, call);
    refused(
        request(s.port, "POST", "/publish", &h, call),
        "another endpoint",
    );
}

/// The shell example of docs/HTTP-BRIDGE.md (openssl and curl), run as
/// written: it signs with `X-Authentication`, pushes a job and reads it.
#[test]
fn the_documented_openssl_example_signs_a_request() {
    let s = start();
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/HTTP-BRIDGE.md"
    ))
    .expect("docs");
    let script = doc
        .split("<!-- x-authentication-example -->")
        .nth(1)
        .and_then(|s| s.split("```sh\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("the example in docs/HTTP-BRIDGE.md");
    let out = std::process::Command::new("sh")
        .arg("-ec")
        .arg(script)
        .env("BRIDGE", format!("http://127.0.0.1:{}", s.port))
        .env("KEY", BACKEND.0)
        .env("SECRET", BACKEND.1)
        .output()
        .expect("sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("HTTP/1.1 202"), "{stdout}");
    assert!(stdout.contains("\"state\":\"ready\""), "{stdout}");
}

/// The JSON-RPC endpoint takes the bound query signature of our own
/// endpoints (method, path, body) as well as the header (the JSON-RPC
/// behaviour itself is tested with a JSON-RPC library in
/// tests/interop/python/test_bridge_jsonrpc.py).
#[test]
fn the_jsonrpc_endpoint_is_signed_like_our_own_endpoints() {
    let s = start();
    let body =
        r#"{"jsonrpc": "2.0", "method": "switchyard.queue.stats", "params": ["mail"], "id": 7}"#;
    let q = bound_query(BACKEND, "POST", "/rpc", "1", None, body);
    let r = request(s.port, "POST", &format!("/rpc?{q}"), "", body);
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["id"], 7, "{j}");
    assert!(j["result"]["ready"].as_u64().is_some(), "{j}");
    // A Crossbar signature (not bound to the path) is refused here.
    let crossbar = {
        use base64::Engine;
        use hmac::Mac;
        let ts = common::http::now();
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(BACKEND.1.as_bytes()).expect("hmac");
        for part in [BACKEND.0, ts.as_str(), "1", "2", body] {
            mac.update(part.as_bytes());
        }
        let sig = base64::engine::general_purpose::URL_SAFE.encode(mac.finalize().into_bytes());
        format!(
            "key={}&timestamp={}&seq=1&nonce=2&signature={}",
            BACKEND.0,
            common::http::encode(&ts),
            common::http::encode(&sig)
        )
    };
    let r = request(s.port, "POST", &format!("/rpc?{crossbar}"), "", body);
    assert_eq!(r.status, 401, "{}", r.body);
    // Unsigned: refused before any request is read (not a JSON-RPC error).
    let r = request(s.port, "POST", "/rpc", "", body);
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("switchyard.error.signature_required"))
    );
    let r = request(s.port, "GET", "/rpc", "", "");
    assert_eq!(r.status, 405, "{}", r.body);
    // The header, and a notification: 204.
    let note = r#"{"jsonrpc": "2.0", "method": "switchyard.queue.stats", "params": ["mail"]}"#;
    let h = x_authentication(BACKEND, "POST", "/rpc", "3", None, note);
    let r = request(s.port, "POST", "/rpc", &h, note);
    assert_eq!((r.status, r.body.as_str()), (204, ""));
}
