//! TLS listeners over real sockets with real certificates (made at test
//! time): WebSocket and RawSocket sessions, plaintext on a TLS port, client
//! certificates, and certificate reload on SIGHUP.

mod common;
mod pki;

use std::io::{Read, Write};
use std::path::Path;

use pki::*;

/// A WebSocket and a RawSocket TLS listener with the given `tls` table extras.
fn tls_config(dir: &Path, ws: u16, rs: u16, extra_tls: &str) -> String {
    let (c, k) = (dir.join("server.crt"), dir.join("server.key"));
    let tls = format!(
        "tls = {{ cert = \"{}\", key = \"{}\"{extra_tls} }}",
        c.display(),
        k.display()
    );
    format!(
        "[[listener]]\ntype = \"websocket\"\naddress = \"127.0.0.1:{ws}\"\n{tls}\n\n\
         [[listener]]\ntype = \"rawsocket\"\naddress = \"127.0.0.1:{rs}\"\n{tls}\n\n\
         [[realm]]\nname = \"realm1\"\n"
    )
}

fn no_error_lines(log: &str) {
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "unexpected ERROR lines: {errors:#?}");
}

#[tokio::test]
async fn websocket_and_rawsocket_over_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("Test CA");
    let server = ca.server();
    server.write(dir.path(), "server");
    let (ws, rs) = two_ports();
    let config = tls_config(dir.path(), ws, rs, "");
    let r = start_router(dir, &config, &[ws, rs]);
    let cfg = client_config(&ca, None);

    let s = tls_connect(ws, cfg.clone()).await.expect("wss handshake");
    assert_eq!(served_fingerprint(&s), server.fingerprint());
    let welcome = ws_join(s, None).await.expect("wss session");
    assert_eq!(welcome.get_str("realm"), Some("realm1"));

    let s = tls_connect(rs, cfg).await.expect("rawsocket TLS handshake");
    let mut c = RawSession::handshake(s).await.expect("rawsocket handshake");
    let welcome = c.join().await.expect("rawsocket session");
    assert_eq!(welcome.get_str("realm"), Some("realm1"));
    c.subscribe(1, "com.example.tls").await.expect("subscribe");

    let log = r.log_text();
    assert!(
        log.contains("listening for WAMP over WebSocket on wss://127.0.0.1:"),
        "{log}"
    );
    assert!(
        log.contains("listening for WAMP over RawSocket on tls://127.0.0.1:"),
        "{log}"
    );
    assert!(log.contains(&server.fingerprint()), "{log}");
    no_error_lines(&log);
}

#[tokio::test]
async fn plaintext_to_a_tls_port_fails_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("Test CA");
    ca.server().write(dir.path(), "server");
    let (ws, rs) = two_ports();
    let config = tls_config(dir.path(), ws, rs, "");
    let r = start_router(dir, &config, &[ws, rs]);

    // A plain RawSocket handshake: closed without a RawSocket reply.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", rs)).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(&[0x7F, 0xF1, 0, 0]).expect("write");
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .expect("a clean close (FIN), not a reset");
    assert!(got.is_empty(), "plaintext got a reply: {got:?}");

    // A plain HTTP upgrade on the wss port: a 400 that says to use wss://.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", ws)).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Protocol: wamp.2.json\r\n\r\n",
    )
    .expect("write");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("wss://"), "{reply}");

    // TLS still works, and nothing was logged as an error.
    let s = tls_connect(rs, client_config(&ca, None))
        .await
        .expect("TLS after plaintext");
    RawSession::handshake(s)
        .await
        .expect("handshake")
        .join()
        .await
        .expect("join");
    let log = wait_log(&r, "not a TLS handshake", 2);
    no_error_lines(&log);
}

#[tokio::test]
async fn required_client_certificate_is_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("Test CA");
    ca.server().write(dir.path(), "server");
    let clients = Ca::new("Client CA");
    let ca_file = clients.write(dir.path(), "clients");
    let alice = clients.client("alice");
    let mallory = Ca::new("Other CA").client("mallory");
    let (ws, rs) = two_ports();
    let extra = format!(
        ", client_ca = \"{}\", client_auth = \"required\"",
        ca_file.display()
    );
    let config = tls_config(dir.path(), ws, rs, &extra);
    let r = start_router(dir, &config, &[ws, rs]);

    // Without a certificate, and with one the client CA did not sign: no
    // session (TLS 1.3 reports the refusal on the first read).
    for cert in [None, Some(&mallory)] {
        let refused = match tls_connect(rs, client_config(&ca, cert)).await {
            Err(_) => true,
            Ok(s) => RawSession::handshake(s).await.is_err(),
        };
        assert!(refused, "a client without a valid certificate got in");
        let refused = match tls_connect(ws, client_config(&ca, cert)).await {
            Err(_) => true,
            Ok(s) => ws_join(s, None).await.is_err(),
        };
        assert!(
            refused,
            "a WebSocket client without a valid certificate got in"
        );
    }

    // With alice's certificate: sessions on both listeners, and the router
    // read the certificate's fingerprint and CN.
    let s = tls_connect(rs, client_config(&ca, Some(&alice)))
        .await
        .expect("TLS");
    RawSession::handshake(s)
        .await
        .expect("handshake")
        .join()
        .await
        .expect("join with a client certificate");
    let s = tls_connect(ws, client_config(&ca, Some(&alice)))
        .await
        .expect("TLS");
    ws_join(s, None)
        .await
        .expect("wss join with a client certificate");
    let log = wait_log(&r, "TLS client certificate verified", 2);
    let line = log
        .lines()
        .find(|l| l.contains("TLS client certificate verified"))
        .expect("line");
    assert!(line.contains(&alice.fingerprint()), "{line}");
    assert!(line.contains("alice"), "{line}");
    assert!(log.contains("TLS handshake failed"), "{log}");
    no_error_lines(&log);
}

#[tokio::test]
async fn optional_client_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("Test CA");
    ca.server().write(dir.path(), "server");
    let ca_file = ca.write(dir.path(), "ca");
    let bob = ca.client("bob");
    let (ws, rs) = two_ports();
    let extra = format!(
        ", client_ca = \"{}\", client_auth = \"optional\"",
        ca_file.display()
    );
    let config = tls_config(dir.path(), ws, rs, &extra);
    let r = start_router(dir, &config, &[ws, rs]);

    let s = tls_connect(rs, client_config(&ca, None))
        .await
        .expect("TLS");
    RawSession::handshake(s)
        .await
        .expect("handshake")
        .join()
        .await
        .expect("join without a certificate");
    let s = tls_connect(rs, client_config(&ca, Some(&bob)))
        .await
        .expect("TLS");
    RawSession::handshake(s)
        .await
        .expect("handshake")
        .join()
        .await
        .expect("join with a certificate");
    let log = wait_log(&r, "TLS client certificate verified", 1);
    assert_eq!(log.matches("TLS client certificate verified").count(), 1);
    assert!(log.contains(&bob.fingerprint()), "{log}");
}

#[tokio::test]
async fn sighup_reloads_the_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let ca = Ca::new("Test CA");
    let first = ca.server();
    let (cert_file, _) = first.write(&path, "server");
    let (ws, rs) = two_ports();
    let config = tls_config(&path, ws, rs, "");
    let r = start_router(dir, &config, &[ws, rs]);
    let cfg = client_config(&ca, None);

    let s = tls_connect(rs, cfg.clone()).await.expect("TLS");
    assert_eq!(served_fingerprint(&s), first.fingerprint());
    let mut old = RawSession::handshake(s).await.expect("handshake");
    old.join().await.expect("join");

    // New certificate on disk, SIGHUP: new connections get it.
    let second = ca.server();
    second.write(&path, "server");
    sighup(&r);
    wait_log(&r, "TLS certificate reloaded", 2);
    for port in [rs, ws] {
        let s = tls_connect(port, cfg.clone())
            .await
            .expect("TLS after reload");
        assert_eq!(served_fingerprint(&s), second.fingerprint(), "port {port}");
    }
    // The session opened before the reload goes on.
    old.subscribe(1, "com.example.after_reload")
        .await
        .expect("old session still works");

    // An invalid certificate on reload: an error naming the file, and the
    // previous certificate stays in use.
    std::fs::write(&cert_file, "not a certificate").expect("write");
    sighup(&r);
    let log = wait_log(&r, "TLS reload failed", 2);
    let line = log
        .lines()
        .find(|l| l.contains("TLS reload failed"))
        .expect("line");
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains(&cert_file.display().to_string()), "{line}");
    let s = tls_connect(rs, cfg.clone())
        .await
        .expect("TLS after a failed reload");
    assert_eq!(served_fingerprint(&s), second.fingerprint());
    RawSession::handshake(s)
        .await
        .expect("handshake")
        .join()
        .await
        .expect("join after a failed reload");
    old.subscribe(2, "com.example.after_failed_reload")
        .await
        .expect("old session still works");
}

#[test]
fn check_config_reports_bad_tls_files_with_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("Test CA");
    let (cert, key) = ca.server().write(dir.path(), "server");
    let other_key = ca.server().write(dir.path(), "other").1;
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[listener]]\ntype = \"websocket\"\naddress = \"127.0.0.1:8443\"\n\
             tls = {{ cert = \"{}\", key = \"{}\" }}\n\n\
             [[listener]]\ntype = \"rawsocket\"\naddress = \"127.0.0.1:8444\"\n\
             tls = {{ cert = \"{}\", key = \"{}\" }}\n",
            dir.path().join("nope.crt").display(),
            key.display(),
            cert.display(),
            other_key.display()
        ),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check-config")
        .arg(&cfg)
        .output()
        .expect("run check-config");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 4: listener[0].tls.cert:") && err.contains("nope.crt"),
        "{err}"
    );
    assert!(
        err.contains("line 9: listener[1].tls.key:")
            && err.contains("does not belong to the certificate"),
        "{err}"
    );
}

#[test]
fn tls_handshake_must_finish_within_the_handshake_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("Test CA");
    ca.server().write(dir.path(), "server");
    let (ws, rs) = two_ports();
    let config = tls_config(dir.path(), ws, rs, "") + "\n[limits]\nhandshake_timeout = \"300ms\"\n";
    let r = start_router(dir, &config, &[ws, rs]);

    // Silent after connecting, and stalled inside the ClientHello.
    for (port, bytes) in [(rs, &[][..]), (ws, &[0x16, 0x03, 0x01, 0x02, 0x00][..])] {
        let start = std::time::Instant::now();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(bytes).expect("write");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let took = start.elapsed();
        assert!(
            took >= std::time::Duration::from_millis(250)
                && took < std::time::Duration::from_secs(3),
            "closed after {took:?}"
        );
    }
    let log = wait_log(&r, "TLS handshake not completed within", 2);
    no_error_lines(&log);
}

/// The `tls` authentication method: the verified client certificate is the
/// credential; a certificate without a principal is refused.
#[tokio::test]
async fn client_certificate_authenticates_the_session() {
    use switchyard_proto::{Dict, Message, Value};
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("Test CA");
    ca.server().write(dir.path(), "server");
    let clients = Ca::new("Client CA");
    let ca_file = clients.write(dir.path(), "clients");
    let (alice, bob) = (clients.client("alice"), clients.client("bob"));
    let (ws, rs) = two_ports();
    let extra = format!(
        ", client_ca = \"{}\", client_auth = \"required\"",
        ca_file.display()
    );
    let mut config = tls_config(dir.path(), ws, rs, &extra);
    config.push_str(&format!(
        "\n[realm.auth]\nmethods = [\"tls\"]\n\n[[realm.auth.tls]]\nauthid = \"device-alice\"\n\
         fingerprint = \"{}\"\nrole = \"device\"\n",
        alice.fingerprint()
    ));
    let r = start_router(dir, &config, &[ws, rs]);
    let hello = Message::Hello {
        realm: "realm1".into(),
        details: Dict::new()
            .with("roles", Dict::new().with("subscriber", Dict::new()))
            .with("authmethods", Value::List(vec![Value::from("tls")])),
    };
    for (who, expect_ok) in [(&alice, true), (&bob, false)] {
        let s = tls_connect(rs, client_config(&ca, Some(who)))
            .await
            .expect("TLS");
        let mut session = RawSession::handshake(s).await.expect("handshake");
        session.send(&hello).await.expect("HELLO");
        match (session.recv().await.expect("reply"), expect_ok) {
            (Message::Welcome { details, .. }, true) => {
                assert_eq!(details.get_str("authid"), Some("device-alice"));
                assert_eq!(details.get_str("authrole"), Some("device"));
                assert_eq!(details.get_str("authmethod"), Some("tls"));
            }
            (Message::Abort { reason, .. }, false) => {
                assert_eq!(reason, "wamp.error.authentication_failed");
            }
            (other, _) => panic!("unexpected reply for expect_ok={expect_ok}: {other:?}"),
        }
    }
    no_error_lines(&r.log_text());
}
