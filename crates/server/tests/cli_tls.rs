//! The client commands over `wss://` against the real router with a TLS
//! WebSocket listener whose certificate a throwaway CA signed (made at test
//! time): `--ca-file` (and `SWITCHYARD_CA_FILE`, `SSL_CERT_FILE`) trust it;
//! a self-signed certificate as `openssl req -x509` makes it is trusted as
//! itself; a wrong CA, a wrong name, an expired certificate, an unreadable CA
//! file and a plaintext port fail with a message that says what went wrong.

mod common;
mod pki;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::cli::{run, text, Background};
use common::Router;
use pki::{cert_pem, key_pem, start_router, two_ports, Ca};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::{json, Value as Json};

/// A router with a TLS WebSocket listener (`wss_port`) and a plain one
/// (`ws_port`) whose certificate `ca` signed; the CA's PEM file.
struct TlsRouter {
    router: Router,
    wss_port: u16,
    ws_port: u16,
    ca_file: PathBuf,
    dir: PathBuf,
}

fn tls_router() -> TlsRouter {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let ca = Ca::new("Switchyard CLI Test CA");
    let (cert, key) = ca.server().write(&path, "server");
    let ca_file = ca.write(&path, "ca");
    start_tls_router(dir, &cert, &key, ca_file)
}

/// A self-signed certificate for `localhost` only that is its own CA
/// (basicConstraints CA:TRUE), as `openssl req -x509` makes it
/// (docs/TRANSPORT-SECURITY.md); expired since 2021 if `expired`. Its
/// `.crt` and `.key` files.
fn self_signed(dir: &Path, name: &str, expired: bool) -> (PathBuf, PathBuf) {
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed certificate");
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert_pem(&cert)).expect("write cert");
    std::fs::write(&k, key_pem(&key)).expect("write key");
    (c, k)
}

fn start_tls_router(
    dir: tempfile::TempDir,
    cert: &Path,
    key: &Path,
    ca_file: PathBuf,
) -> TlsRouter {
    let path = dir.path().to_path_buf();
    let (wss_port, ws_port) = two_ports();
    let config = format!(
        "[[listener]]\ntype = \"websocket\"\naddress = \"127.0.0.1:{wss_port}\"\n\
         tls = {{ cert = \"{}\", key = \"{}\" }}\n\n\
         [[listener]]\ntype = \"websocket\"\naddress = \"127.0.0.1:{ws_port}\"\n\n\
         [[realm]]\nname = \"realm1\"\n",
        cert.display(),
        key.display()
    );
    let router = start_router(dir, &config, &[wss_port, ws_port]);
    TlsRouter {
        router,
        wss_port,
        ws_port,
        ca_file,
        dir: path,
    }
}

/// A `switchyard` client command with no SWITCHYARD_* or SSL_CERT_FILE
/// variables from the caller.
fn cli(args: &[&str]) -> Command {
    let mut c = common::cli::cli(args);
    if std::env::var_os("SSL_CERT_FILE").is_some() {
        c.env_remove("SSL_CERT_FILE");
    }
    c
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

#[test]
fn publish_call_subscribe_register_over_wss_with_a_ca_file() {
    let t = tls_router();
    let ca = path_str(&t.ca_file);
    // The certificate names localhost and 127.0.0.1: both are verified.
    let by_name = format!("wss://localhost:{}/ws", t.wss_port);
    let by_ip = format!("wss://127.0.0.1:{}/ws", t.wss_port);

    // subscribe (over wss) receives what publish (over wss) sends.
    let mut sub = Background::spawn(cli(&[
        "subscribe",
        "com.example.wss",
        "--count",
        "1",
        "--url",
        &by_name,
        "--ca-file",
        ca,
    ]));
    sub.wait_stderr("subscribed to com.example.wss");
    let out = run(cli(&[
        "publish",
        "com.example.wss",
        "hello",
        "42",
        "--acknowledge",
        "--url",
        &by_name,
        "--ca-file",
        ca,
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id: u64 = text(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("publication id: {e}: {:?}", text(&out.stdout)));
    let (code, events) = sub.output();
    assert_eq!(code, Some(0));
    let event: Json = serde_json::from_str(events.trim()).expect("one JSON event line");
    assert_eq!(event["topic"], "com.example.wss");
    assert_eq!(event["args"], json!(["hello", 42]));
    assert_eq!(event["publication"], json!(id));

    // register (over wss, the CA from SWITCHYARD_CA_FILE) serves call (over
    // wss, by IP address).
    let mut reg = cli(&[
        "register",
        "com.example.wss.echo",
        "--url",
        &by_ip,
        "--",
        "sh",
        "-c",
        "cat",
    ]);
    reg.env("SWITCHYARD_CA_FILE", ca);
    let mut callee = Background::spawn(reg);
    callee.wait_stderr("registered com.example.wss.echo");
    let out = run(cli(&[
        "call",
        "com.example.wss.echo",
        "2",
        "three",
        "--kw",
        "k=v",
        "--url",
        &by_name,
        "--ca-file",
        ca,
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let echoed: Json = serde_json::from_str(text(&out.stdout).trim()).expect("JSON result");
    assert_eq!(echoed["procedure"], "com.example.wss.echo");
    assert_eq!(echoed["args"], json!([2, "three"]));
    assert_eq!(echoed["kwargs"], json!({"k": "v"}));

    // The system CA bundle is trusted too: SSL_CERT_FILE pointing at the CA
    // works without --ca-file.
    let mut c = cli(&["publish", "com.example.wss", "x", "--url", &by_name]);
    c.env("SSL_CERT_FILE", ca);
    let out = run(c);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let log = t.router.log_text();
    assert!(
        log.contains(&format!(
            "listening for WAMP over WebSocket on wss://127.0.0.1:{}",
            t.wss_port
        )),
        "{log}"
    );
}

#[test]
fn wss_failures_say_what_went_wrong() {
    let t = tls_router();
    let url = format!("wss://localhost:{}/ws", t.wss_port);
    let other_ca = Ca::new("Some Other CA").write(&t.dir, "other-ca");

    // A CA that did not sign the router's certificate: exit 3, and why.
    let out = run(cli(&[
        "publish",
        "com.example.wss",
        "x",
        "--url",
        &url,
        "--ca-file",
        path_str(&other_ca),
    ]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "switchyard: cannot connect to {url}: the certificate of localhost is not trusted: \
             it is not signed by a trusted CA (unknown issuer)\n"
        )),
        "{err}"
    );
    assert!(
        err.contains(
            "switchyard: hint: for a router with a self-signed or private-CA certificate, \
             give that CA's certificate with --ca-file PEM\n"
        ),
        "{err}"
    );

    // The same with only the (wrong) system bundle, for call.
    let mut c = cli(&["call", "com.example.nope", "--url", &url]);
    c.env("SSL_CERT_FILE", &other_ca);
    let out = run(c);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("the certificate of localhost is not trusted"),
        "{err}"
    );

    // An unreadable CA file and a file without a certificate: exit 2.
    let missing = t.dir.join("missing.pem");
    let out = run(cli(&[
        "publish",
        "com.example.wss",
        "x",
        "--url",
        &url,
        "--ca-file",
        path_str(&missing),
    ]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "switchyard: --ca-file: CA file {}: cannot read: ",
            missing.display()
        )),
        "{err}"
    );
    let key = t.dir.join("server.key");
    let out = run(cli(&[
        "call",
        "com.example.nope",
        "--url",
        &url,
        "--ca-file",
        path_str(&key),
    ]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "switchyard: --ca-file: CA file {}: no certificate found",
            key.display()
        )),
        "{err}"
    );

    // ws:// to the TLS port: the router's 400, and a hint.
    let ws_on_tls = format!("ws://localhost:{}/ws", t.wss_port);
    let out = run(cli(&[
        "publish",
        "com.example.wss",
        "x",
        "--url",
        &ws_on_tls,
    ]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "switchyard: hint: if this listener uses TLS, connect with wss://localhost:{}/ws\n",
            t.wss_port
        )),
        "{err}"
    );

    // wss:// to a plain WebSocket port: the handshake fails and says so.
    let plain = format!("wss://127.0.0.1:{}/ws", t.ws_port);
    let out = run(cli(&[
        "publish",
        "com.example.wss",
        "x",
        "--url",
        &plain,
        "--ca-file",
        path_str(&t.ca_file),
    ]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "switchyard: cannot connect to {plain}: TLS handshake with 127.0.0.1 failed: "
        )) && err.contains("for a plain listener use ws://"),
        "{err}"
    );
}

#[test]
fn a_self_signed_certificate_in_the_ca_file_is_trusted_as_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(dir.path(), "self", false);
    let t = start_tls_router(dir, &cert, &key, cert.clone());
    let ca = path_str(&t.ca_file);
    let url = format!("wss://localhost:{}/ws", t.wss_port);

    let out = run(cli(&[
        "publish",
        "com.example.wss",
        "x",
        "--acknowledge",
        "--url",
        &url,
        "--ca-file",
        ca,
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).trim().parse::<u64>().is_ok());

    // Not in the CA file (only another CA there): refused, and why.
    let other_ca = Ca::new("Some Other CA").write(&t.dir, "other-ca");
    let out = run(cli(&[
        "publish",
        "com.example.wss",
        "x",
        "--url",
        &url,
        "--ca-file",
        path_str(&other_ca),
    ]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "switchyard: cannot connect to {url}: the certificate of localhost is not trusted: \
             it is a self-signed CA certificate that is not among the trusted certificates\n"
        )),
        "{err}"
    );
    assert!(
        err.contains("give that CA's certificate with --ca-file PEM"),
        "{err}"
    );

    // Trusted, but the certificate names localhost, not 127.0.0.1.
    let by_ip = format!("wss://127.0.0.1:{}/ws", t.wss_port);
    let out = run(cli(&[
        "call",
        "com.example.nope",
        "--url",
        &by_ip,
        "--ca-file",
        ca,
    ]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "switchyard: cannot connect to {by_ip}: the certificate of 127.0.0.1 is not valid \
             for that name: "
        )),
        "{err}"
    );
}

#[test]
fn an_expired_self_signed_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(dir.path(), "expired", true);
    let t = start_tls_router(dir, &cert, &key, cert.clone());
    let url = format!("wss://localhost:{}/ws", t.wss_port);
    let out = run(cli(&[
        "publish",
        "com.example.wss",
        "x",
        "--url",
        &url,
        "--ca-file",
        path_str(&t.ca_file),
    ]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "switchyard: cannot connect to {url}: the certificate of localhost has expired"
        )),
        "{err}"
    );
}
