//! Outbound https: HTTP subscribers, HTTP callees and queue HTTP targets
//! reach an https:// receiver (rustls, a throwaway CA of the test PKI
//! trusted through `[outbound_tls] ca_file`), with the same signatures as
//! over http; without the CA, the receiver's certificate is refused.

mod common;
mod pki;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{args_of, Raw, Router};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use switchyard_proto::{Dict, Message, Payload, Serializer, Value};

/// Requests the receiver saw: (method, path and query, body).
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// An https receiver on 127.0.0.1 answering 200 `{"ok":true}` to
/// everything; its port and what it saw.
fn receiver(ca: &pki::Ca) -> (u16, Seen) {
    let leaf = ca.server();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der.clone()], leaf.key())
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let seen: Seen = Arc::default();
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let port = l.local_addr().expect("addr").port();
    let s = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).expect("listener");
            loop {
                let Ok((tcp, _)) = l.accept().await else {
                    continue;
                };
                let (s, acceptor) = (s.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc =
                        hyper::service::service_fn(move |r: Request<hyper::body::Incoming>| {
                            let s = s.clone();
                            async move {
                                let method = r.method().to_string();
                                let target = r.uri().to_string();
                                let body = r
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                s.lock().expect("seen").push((
                                    method,
                                    target,
                                    String::from_utf8_lossy(&body).into_owned(),
                                ));
                                Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                    Bytes::from_static(b"{\"ok\":true}"),
                                )))
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
    });
    (port, seen)
}

fn config(port: u16, bridge_port: u16) -> String {
    format!(
        "[[realm.queue]]\nname = \"hooks\"\n\
         target = {{ http = {{ url = \"https://localhost:{port}/jobs\" }} }}\n\n\
         [realm.queue_http]\nkey = \"router\"\nsecret = \"0123456789abcdef0123\"\n\n\
         [[bridge]]\naddress = \"127.0.0.1:{bridge_port}\"\nrealm = \"realm1\"\nallow_unsigned = true\n\n\
         [[bridge.subscriber]]\ntopic = \"com.test.events\"\n\
         url = \"https://localhost:{port}/events\"\nkey = \"hooks\"\nsecret = \"subscriber-secret-0123\"\n\n\
         [[bridge.callee]]\nprocedure = \"com.test.api\"\nurl = \"https://localhost:{port}/api\"\n\
         key = \"router\"\nsecret = \"callee-secret-0123456789\"\n"
    )
}

fn call(c: &mut Raw, procedure: &str, args: Vec<Value>, kwargs: Dict) -> Message {
    let request = c.req();
    c.send(&Message::Call {
        request,
        options: Dict::new(),
        procedure: procedure.into(),
        payload: Payload::values(args, Some(kwargs)),
    });
    c.expect("RESULT or ERROR")
}

fn wait_for(seen: &Seen, path: &str) -> (String, String, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(x) = seen
            .lock()
            .expect("seen")
            .iter()
            .find(|(_, t, _)| t.starts_with(path))
        {
            return x.clone();
        }
        assert!(Instant::now() < deadline, "nothing reached {path}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn subscribers_callees_and_queue_targets_reach_https_receivers() {
    let ca = pki::Ca::new("outbound test CA");
    let (port, seen) = receiver(&ca);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = ca.write(dir.path(), "ca");
    let r = Router::start(&format!(
        "[outbound_tls]\nca_file = \"{}\"\n\n{}",
        ca_file.display(),
        config(port, common::free_port())
    ));
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.join("realm1");

    // HTTP callee over https: the receiver's answer is the result.
    match call(&mut c, "com.test.api", vec![], Dict::new()) {
        Message::Result { payload, .. } => match args_of(&payload).first() {
            Some(Value::Dict(d)) => {
                assert_eq!(d.get("status"), Some(&Value::UInt(200)));
                assert_eq!(d.get_str("body"), Some("{\"ok\":true}"));
            }
            other => panic!("{other:?}"),
        },
        other => panic!("expected RESULT, got {other:?}"),
    }
    let (_, target, _) = wait_for(&seen, "/api");
    assert!(target.contains("&signature="), "{target}");

    // HTTP subscriber over https.
    let request = c.req();
    c.send(&Message::Publish {
        request,
        options: Dict::new().with("acknowledge", true),
        topic: "com.test.events".into(),
        payload: Payload::values(vec![Value::UInt(4711)], None),
    });
    c.expect("PUBLISHED");
    let (method, target, body) = wait_for(&seen, "/events");
    assert_eq!(method, "POST");
    assert!(
        target.contains("key=hooks&") && target.contains("&signature="),
        "{target}"
    );
    assert!(body.contains("4711"), "{body}");

    // Queue HTTP target over https.
    let m = call(
        &mut c,
        "switchyard.queue.push",
        vec![Value::from("hooks")],
        Dict::new().with("args", Value::List(vec![Value::UInt(7)])),
    );
    assert!(matches!(m, Message::Result { .. }), "{m:?}");
    let (_, target, body) = wait_for(&seen, "/jobs");
    assert!(
        target.contains("key=router&") && target.contains("&signature="),
        "{target}"
    );
    assert!(body.contains('7'), "{body}");
}

#[test]
fn an_untrusted_receiver_certificate_is_refused() {
    let ca = pki::Ca::new("a CA the router does not trust");
    let (port, seen) = receiver(&ca);
    let r = Router::start(&config(port, common::free_port()));
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    c.join("realm1");
    match call(&mut c, "com.test.api", vec![], Dict::new()) {
        Message::Error { payload, .. } => {
            let message = format!("{:?}", args_of(&payload));
            assert!(message.contains("certificate"), "{message}");
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
    assert!(seen.lock().expect("seen").is_empty());
}
