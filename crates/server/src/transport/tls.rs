//! TLS for TCP listeners: rustls with the ring provider, the certificate
//! chain and private key (and optionally a client CA) from PEM files, and
//! reloading them on SIGHUP.
//!
//! A listener holds its current `ServerConfig` behind a lock; each accepted
//! connection takes a clone of the `Arc` for its handshake, so a reload
//! affects only connections accepted after it, and a reload that fails
//! leaves the old material in place.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::Deserialize;
use switchyard_router::ClientCert;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use super::x509;

/// Whether a listener asks for client certificates.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificates are asked for (default).
    #[default]
    None,
    /// A certificate is asked for; a client without one still connects,
    /// one with a certificate the CA did not sign is refused.
    Optional,
    /// Only clients with a certificate the CA signed can connect.
    Required,
}

/// The `tls = { ... }` table of a listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain: the server certificate first, then intermediates.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
    /// PEM CA certificate(s) that client certificates must chain to.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// A problem with one of the files: which key of the `tls` table names it.
#[derive(Debug)]
pub struct TlsError {
    pub key: &'static str,
    pub message: String,
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tls.{}: {}", self.key, self.message)
    }
}

/// Loaded TLS material: the rustls configuration and the server
/// certificate's fingerprint (for logs).
pub struct Material {
    pub config: Arc<ServerConfig>,
    pub fingerprint: String,
    pub common_name: Option<String>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError {
        key,
        message: format!("{}: cannot read: {e}", path.display()),
    })
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError {
            key,
            message: format!("{}: invalid PEM: {e}", path.display()),
        })?;
    if certs.is_empty() {
        return Err(TlsError {
            key,
            message: format!(
                "{}: no certificate found (expected PEM \"-----BEGIN CERTIFICATE-----\" blocks)",
                path.display()
            ),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError {
        key: "key",
        message: match e {
            rustls::pki_types::pem::Error::NoItemsFound => format!(
                "{}: no private key found (expected a PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block)",
                path.display()
            ),
            e => format!("{}: invalid PEM: {e}", path.display()),
        },
    })
}

/// Reads and checks the files of a `tls` table and builds the rustls
/// configuration. Every failure names the key and the file.
pub fn load(files: &TlsFiles) -> Result<Material, TlsError> {
    let chain = read_certs("cert", &files.cert)?;
    let key = read_key(&files.key)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError {
            key: "cert",
            message: format!("TLS setup failed: {e}"),
        })?;
    let builder = match (&files.client_ca, files.client_auth) {
        (_, ClientAuth::None) => builder.with_no_client_auth(),
        (None, _) => {
            return Err(TlsError {
                key: "client_ca",
                message: "client_auth needs client_ca, the CA certificate(s) client certificates must chain to".into(),
            })
        }
        (Some(ca), mode) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs("client_ca", ca)? {
                roots.add(c).map_err(|e| TlsError {
                    key: "client_ca",
                    message: format!("{}: not a usable CA certificate: {e}", ca.display()),
                })?;
            }
            let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if mode == ClientAuth::Optional {
                v = v.allow_unauthenticated();
            }
            let verifier = v.build().map_err(|e| TlsError {
                key: "client_ca",
                message: format!("{}: {e}", ca.display()),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let leaf = chain[0].clone();
    let config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError {
            key: "key",
            message: format!(
                "{}: the private key does not belong to the certificate in {}",
                files.key.display(),
                files.cert.display()
            ),
        },
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => TlsError {
            key: "cert",
            message: format!("{}: not a valid certificate: {e}", files.cert.display()),
        },
        e => TlsError {
            key: "key",
            message: format!("{}: unusable private key: {e}", files.key.display()),
        },
    })?;
    Ok(Material {
        config: Arc::new(config),
        fingerprint: x509::fingerprint(&leaf),
        common_name: x509::common_name(&leaf),
    })
}

/// The TLS side of one listener: its files and the configuration new
/// connections use.
pub struct TlsListener {
    /// The listener, for logs (e.g. `wss://0.0.0.0:8443/ws`).
    pub name: String,
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsListener {
    pub fn new(name: String, files: TlsFiles) -> Result<Arc<Self>, String> {
        let m = load(&files).map_err(|e| format!("{name}: {e}"))?;
        tracing::info!(
            listener = %name,
            "TLS certificate {}: SHA-256 {}{}",
            files.cert.display(),
            m.fingerprint,
            client_auth_note(&files)
        );
        Ok(Arc::new(TlsListener {
            name,
            files,
            current: RwLock::new(m.config),
        }))
    }

    /// Re-reads the files. On success new connections use the new material;
    /// on failure the old one stays and the error (naming the file) is returned.
    pub fn reload(&self) -> Result<Material, TlsError> {
        let m = load(&self.files)?;
        *self.current.write() = m.config.clone();
        Ok(m)
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().clone())
    }
}

fn client_auth_note(files: &TlsFiles) -> String {
    match (files.client_auth, &files.client_ca) {
        (ClientAuth::None, _) | (_, None) => String::new(),
        (mode, Some(ca)) => format!(
            "; client certificates {} (CA {})",
            if mode == ClientAuth::Required {
                "required"
            } else {
                "optional"
            },
            ca.display()
        ),
    }
}

/// The first octet of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// What a plain-HTTP client that reached a TLS WebSocket listener is told.
const PLAIN_HTTP_REPLY: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Connection: close\r\n\
Content-Length: 80\r\n\r\n\
this WAMP WebSocket endpoint requires TLS: connect with wss:// instead of ws://\n";

/// Runs the TLS handshake of an accepted connection, bounded by `deadline`.
/// Returns the TLS stream and the verified client certificate (if any), or
/// `None` after logging why (at debug or info level: a failing client must
/// not be able to fill the log with errors). A connection that does not
/// start with a TLS record is closed; with `http_hint` a plain HTTP client
/// is first told to use wss://.
pub async fn accept(
    listener: &TlsListener,
    stream: TcpStream,
    deadline: Instant,
    label: &str,
    http_hint: bool,
) -> Option<(TlsStream<TcpStream>, Option<ClientCert>)> {
    let timeout = || {
        tracing::info!(peer = %label, listener = %listener.name, "TLS handshake not completed within limits.handshake_timeout: closing");
    };
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Err(_) => {
            timeout();
            return None;
        }
        Ok(Ok(0)) | Ok(Err(_)) => {
            tracing::debug!(peer = %label, "connection closed before the TLS handshake");
            return None;
        }
        Ok(Ok(_)) => {}
    }
    if first[0] != TLS_HANDSHAKE {
        tracing::info!(
            peer = %label,
            listener = %listener.name,
            "not a TLS handshake (first octet 0x{:02x}) on a TLS listener: closing",
            first[0]
        );
        if http_hint && first[0].is_ascii_uppercase() {
            super::http_reply_and_close(stream, PLAIN_HTTP_REPLY, deadline).await;
        } else {
            linger_close(stream, deadline).await;
        }
        return None;
    }
    let tls = match tokio::time::timeout_at(deadline, listener.acceptor().accept(stream)).await {
        Err(_) => {
            timeout();
            return None;
        }
        Ok(Err(e)) => {
            tracing::info!(peer = %label, listener = %listener.name, "TLS handshake failed: {e}");
            return None;
        }
        Ok(Ok(s)) => s,
    };
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|der| ClientCert {
            fingerprint: x509::fingerprint(der),
            common_name: x509::common_name(der),
        });
    if let Some(c) = &cert {
        tracing::debug!(
            peer = %label,
            fingerprint = %c.fingerprint,
            cn = c.common_name.as_deref().unwrap_or(""),
            "TLS client certificate verified"
        );
    }
    Some((tls, cert))
}

/// Closes with a FIN rather than a reset: shuts the write side, then reads
/// and drops what the peer sent (bounded in time and bytes) until it closes.
async fn linger_close(mut stream: TcpStream, deadline: Instant) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = deadline.min(Instant::now() + std::time::Duration::from_secs(1));
    let work = async {
        let _ = stream.shutdown().await;
        let mut buf = [0u8; 1024];
        let mut total = 0;
        while total < 64 * 1024 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline, work).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_reply_has_the_right_length() {
        let text = std::str::from_utf8(PLAIN_HTTP_REPLY).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.parse().ok())
            .expect("content-length");
        assert_eq!(body.len(), len);
    }

    #[test]
    fn missing_files_name_the_key_and_path() {
        let files = TlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            client_ca: None,
            client_auth: ClientAuth::None,
        };
        let e = load(&files).err().expect("must fail");
        assert_eq!(e.key, "cert");
        assert!(e.to_string().contains("/nonexistent/cert.pem"), "{e}");
        assert!(e.to_string().contains("cannot read"), "{e}");
    }

    #[test]
    fn garbage_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "hello").expect("write");
        let files = TlsFiles {
            cert: cert.clone(),
            key: cert,
            client_ca: None,
            client_auth: ClientAuth::None,
        };
        let e = load(&files).err().expect("must fail");
        assert!(e.to_string().contains("no certificate found"), "{e}");
    }
}
