//! Test PKI and TLS clients for the transport-security tests: a throwaway
//! CA with server and client certificates (rcgen, made at test time), the
//! router started with a TOML config of the test's own, and small async
//! RawSocket and WebSocket exchanges over tokio-rustls.

#![allow(dead_code)]

use std::net::TcpStream as StdTcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use switchyard_proto::{Dict, Message, Serializer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::common::{free_port, hello, Router};

/// PEM armour around DER bytes (RFC 7468), written here rather than by
/// rcgen's `pem` feature, which would build a second `base64` version.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// A certificate as PEM.
pub fn cert_pem(cert: &rcgen::Certificate) -> String {
    pem("CERTIFICATE", cert.der())
}

/// A private key as PKCS#8 PEM.
pub fn key_pem(key: &KeyPair) -> String {
    pem("PRIVATE KEY", &key.serialize_der())
}

/// A CA that signs server and client certificates.
pub struct Ca {
    pub cert_pem: String,
    pub der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate with its key, as PEM and DER.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Leaf {
    /// SHA-256 of the DER certificate, lowercase hex.
    pub fn fingerprint(&self) -> String {
        hex(ring::digest::digest(&ring::digest::SHA256, &self.der).as_ref())
    }

    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone().into())
    }

    /// Writes `cert.pem`/`key.pem` style files: `<name>.crt`, `<name>.key`.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, &self.cert_pem).expect("write cert");
        std::fs::write(&k, &self.key_pem).expect("write key");
        (c, k)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        Ca {
            cert_pem: cert_pem(&cert),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(format!("{name}.crt"));
        std::fs::write(&p, &self.cert_pem).expect("write ca");
        p
    }

    /// A server certificate for localhost and 127.0.0.1.
    pub fn server(&self) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".into()])
            .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "switchyard test server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.leaf(params)
    }

    /// A client certificate with subject CN `cn`.
    pub fn client(&self, cn: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.leaf(params)
    }

    fn leaf(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Leaf {
            cert_pem: cert_pem(&cert),
            key_pem: key_pem(&key),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

/// Starts the router with `config` (listeners included) and waits until
/// every port in `ports` accepts.
pub fn start_router(dir: tempfile::TempDir, config: &str, ports: &[u16]) -> Router {
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(&cfg, config).expect("write config");
    let log = dir.path().join("router.log");
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .current_dir(dir.path())
        .arg("--config")
        .arg(&cfg)
        .arg("--log-level")
        .arg("debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn switchyard");
    let r = Router {
        child: Some(child),
        ws_port: ports.first().copied().unwrap_or(0),
        rs_port: ports.get(1).copied().unwrap_or(0),
        dir,
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ports
        .iter()
        .all(|p| StdTcpStream::connect(("127.0.0.1", *p)).is_ok())
    {
        assert!(
            Instant::now() < deadline,
            "router did not start: {}",
            r.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    r
}

/// Two free, distinct ports.
pub fn two_ports() -> (u16, u16) {
    let a = free_port();
    loop {
        let b = free_port();
        if b != a {
            return (a, b);
        }
    }
}

/// Sends SIGHUP (through kill(1): no unsafe in the tests).
pub fn sighup(r: &Router) {
    let pid = r.child.as_ref().expect("running").id();
    let ok = Command::new("kill")
        .arg("-HUP")
        .arg(pid.to_string())
        .status()
        .expect("kill -HUP");
    assert!(ok.success());
}

/// Waits until the router log has `n` lines containing `needle`.
pub fn wait_log(r: &Router, needle: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = r.log_text();
        if log.matches(needle).count() >= n {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no {n}× \"{needle}\" in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client TLS configuration trusting `ca`, optionally with a client certificate.
pub fn client_config(ca: &Ca, client: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).expect("root");
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    Arc::new(match client {
        Some(c) => b
            .with_client_auth_cert(vec![c.der.clone()], c.key())
            .expect("client cert"),
        None => b.with_no_client_auth(),
    })
}

/// Connects with TLS to 127.0.0.1:`port` as "localhost".
pub async fn tls_connect(
    port: u16,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("localhost").expect("name");
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(cfg).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
}

/// The fingerprint of the certificate the server presented.
pub fn served_fingerprint(s: &TlsStream<TcpStream>) -> String {
    let der = s
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("server certificate");
    hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

/// A RawSocket (JSON) session over any stream.
pub struct RawSession<S> {
    pub io: S,
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawSession<S> {
    /// The RawSocket handshake; Err if the router closes or answers garbage.
    pub async fn handshake(mut io: S) -> std::io::Result<RawSession<S>> {
        io.write_all(&[0x7F, 0xF0 | Serializer::Json.rawsocket_id(), 0, 0])
            .await?;
        let mut reply = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut reply))
            .await
            .map_err(|_| std::io::Error::other("no handshake reply"))??;
        if reply[0] != 0x7F || reply[1] & 0x0F != Serializer::Json.rawsocket_id() {
            return Err(std::io::Error::other(format!(
                "bad handshake reply {reply:?}"
            )));
        }
        Ok(RawSession { io })
    }

    pub async fn send(&mut self, m: &Message) -> std::io::Result<()> {
        let b = m.encode(Serializer::Json).expect("encode");
        let n = b.len();
        self.io
            .write_all(&[0, (n >> 16) as u8, (n >> 8) as u8, n as u8])
            .await?;
        self.io.write_all(&b).await?;
        self.io.flush().await
    }

    pub async fn recv(&mut self) -> std::io::Result<Message> {
        let mut h = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), self.io.read_exact(&mut h))
            .await
            .map_err(|_| std::io::Error::other("timeout"))??;
        let n = ((h[1] as usize) << 16) | ((h[2] as usize) << 8) | h[3] as usize;
        let mut body = vec![0u8; n];
        self.io.read_exact(&mut body).await?;
        Message::decode(Serializer::Json, &Bytes::from(body))
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// HELLO → WELCOME details.
    pub async fn join(&mut self) -> std::io::Result<Dict> {
        self.send(&hello("realm1")).await?;
        match self.recv().await? {
            Message::Welcome { details, .. } => Ok(details),
            other => Err(std::io::Error::other(format!(
                "expected WELCOME, got {other:?}"
            ))),
        }
    }

    /// SUBSCRIBE → SUBSCRIBED (proves an open session still works).
    pub async fn subscribe(&mut self, request: u64, topic: &str) -> std::io::Result<()> {
        self.send(&Message::Subscribe {
            request,
            options: Dict::new(),
            topic: topic.into(),
        })
        .await?;
        match self.recv().await? {
            Message::Subscribed { request: r, .. } if r == request => Ok(()),
            other => Err(std::io::Error::other(format!(
                "expected SUBSCRIBED, got {other:?}"
            ))),
        }
    }
}

/// WebSocket (wamp.2.json) over any stream: upgrade, HELLO → WELCOME details.
pub async fn ws_join<S>(io: S, origin: Option<&str>) -> Result<Dict, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut b = tokio_websockets::ClientBuilder::new()
        .uri("ws://localhost/ws")
        .map_err(|e| e.to_string())?
        .add_header(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            http::HeaderValue::from_static("wamp.2.json"),
        )
        .map_err(|e| e.to_string())?;
    if let Some(o) = origin {
        b = b
            .add_header(
                http::header::ORIGIN,
                http::HeaderValue::from_str(o).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
    }
    let (mut ws, _) = b.connect_on(io).await.map_err(|e| e.to_string())?;
    let hello = hello("realm1").encode(Serializer::Json).expect("encode");
    let text = String::from_utf8(hello.to_vec()).expect("json is utf-8");
    ws.send(tokio_websockets::Message::text(text))
        .await
        .map_err(|e| e.to_string())?;
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .map_err(|_| "no reply to HELLO".to_string())?
        .ok_or("closed")?
        .map_err(|e| e.to_string())?;
    let frame = Bytes::from(reply.into_payload());
    match Message::decode(Serializer::Json, &frame).map_err(|e| e.to_string())? {
        Message::Welcome { details, .. } => Ok(details),
        other => Err(format!("expected WELCOME, got {other:?}")),
    }
}
