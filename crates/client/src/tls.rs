//! TLS for `wss://` URLs: rustls with the ring provider (the router's own TLS
//! stack), verifying the router's certificate against the system's CA bundle
//! plus, optionally, the CA certificates of a PEM file
//! ([`crate::TransportOptions::ca_file`]) for routers with a self-signed or
//! private-CA certificate. There is no way to turn verification off.
//!
//! The system bundle is the PEM file named by `SSL_CERT_FILE`, else the first
//! of [`SYSTEM_BUNDLES`] that can be read (Debian/Ubuntu's
//! `ca-certificates.crt`, Fedora/RHEL's `ca-bundle.crt`, ...).
//!
//! A certificate in the CA file is also accepted when the router presents
//! exactly that certificate: a self-signed certificate made with `openssl req
//! -x509` (docs/TRANSPORT-SECURITY.md) is marked as a CA, which webpki refuses
//! as a server's own certificate, while OpenSSL-based clients accept it as
//! its own trust anchor. Such a certificate must still be valid for the
//! router's name and within its validity period, and the router must prove it
//! holds the key (the TLS handshake signature is verified as usual).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::error::TransportError;

/// Where the system's CA bundle is looked for when `SSL_CERT_FILE` is not
/// set, in order.
pub const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Reads the CA certificates of a PEM file (`-----BEGIN CERTIFICATE-----`
/// blocks; other blocks are ignored). Fails, naming the file, if it cannot
/// be read, is not PEM, or holds no certificate.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let pem = std::fs::read(path).map_err(|e| {
        TransportError::Tls(format!("CA file {}: cannot read: {e}", path.display()))
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            TransportError::Tls(format!("CA file {}: invalid PEM: {e}", path.display()))
        })?;
    if certs.is_empty() {
        return Err(TransportError::Tls(format!(
            "CA file {}: no certificate found (expected PEM \"-----BEGIN CERTIFICATE-----\" blocks)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The system's CA certificates and the file they came from (`None` if no
/// bundle was found). `SSL_CERT_FILE`, when set, must be readable.
fn system_roots() -> Result<(Vec<CertificateDer<'static>>, Option<PathBuf>), TransportError> {
    if let Some(file) = std::env::var_os("SSL_CERT_FILE").filter(|f| !f.is_empty()) {
        let path = PathBuf::from(file);
        let certs = read_ca_file(&path)
            .map_err(|e| TransportError::Tls(format!("SSL_CERT_FILE: {}", tls_text(&e))))?;
        return Ok((certs, Some(path)));
    }
    for candidate in SYSTEM_BUNDLES {
        let path = Path::new(candidate);
        if let Ok(certs) = read_ca_file(path) {
            return Ok((certs, Some(path.to_path_buf())));
        }
    }
    Ok((Vec::new(), None))
}

fn tls_text(e: &TransportError) -> String {
    match e {
        TransportError::Tls(m) => m.clone(),
        other => other.to_string(),
    }
}

/// The rustls client configuration for `wss://`: the system's CA bundle
/// plus the certificates in `ca_file`. Fails if `ca_file` is unusable, or if
/// there is no trusted certificate at all.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TransportError> {
    let mut roots = RootCertStore::empty();
    let (system, _) = system_roots()?;
    // A bundle may hold certificates webpki cannot use; skip those.
    roots.add_parsable_certificates(system);
    let mut pinned = Vec::new();
    if let Some(path) = ca_file {
        for cert in read_ca_file(path)? {
            roots.add(cert.clone()).map_err(|e| {
                TransportError::Tls(format!(
                    "CA file {}: not a usable CA certificate: {e}",
                    path.display()
                ))
            })?;
            pinned.push(cert);
        }
    }
    if roots.is_empty() {
        return Err(TransportError::Tls(format!(
            "no trusted CA certificates: no system CA bundle found (SSL_CERT_FILE, {}) and no \
             CA file given",
            SYSTEM_BUNDLES.join(", ")
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let setup = |e: &dyn std::fmt::Display| TransportError::Tls(format!("TLS setup failed: {e}"));
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(&e))?;
    let mut config = if pinned.is_empty() {
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| setup(&e))?;
        builder
            .dangerous() // still verifying: WebPKI, or an exact trusted certificate
            .with_custom_certificate_verifier(Arc::new(Verifier { webpki, pinned }))
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// WebPKI verification, and the exact certificates of the CA file accepted
/// as their own trust anchors (see the module documentation).
#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let refused = match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if !self
            .pinned
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref())
        {
            return Err(refused);
        }
        // Exactly a certificate the CA file trusts: its name and dates.
        rustls::client::verify_server_name(&ParsedCertificate::try_from(end_entity)?, server_name)?;
        let Some((not_before, not_after)) = switchyard_x509::validity(end_entity) else {
            return Err(refused);
        };
        let at = |secs: u64| UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
        if now.as_secs() > not_after {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ExpiredContext {
                    time: now,
                    not_after: at(not_after),
                },
            ));
        }
        if now.as_secs() < not_before {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidYetContext {
                    time: now,
                    not_before: at(not_before),
                },
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The TLS handshake over `tcp` with the router named `host` (a DNS name or
/// an IP address, which the certificate must be valid for).
pub(crate) async fn handshake(
    tcp: TcpStream,
    host: &str,
    config: Arc<ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, TransportError> {
    let name = ServerName::try_from(host.to_owned()).map_err(|e| {
        TransportError::InvalidUrl(format!("\"{host}\" is not a valid TLS server name: {e}"))
    })?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| handshake_error(host, e))
}

/// A readable reason for a failed handshake.
fn handshake_error(host: &str, e: io::Error) -> TransportError {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => TransportError::Tls(
                format!("the connection to {host} closed during the TLS handshake ({e})"),
            ),
            _ => TransportError::Io(e),
        };
    };
    TransportError::Tls(match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => format!(
                "the certificate of {host} is not trusted: it is not signed by a trusted CA \
                 (unknown issuer)"
            ),
            CertificateError::BadSignature => {
                format!("the certificate of {host} is not trusted: its signature does not verify")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("the certificate of {host} is not valid for that name: {c}")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("the certificate of {host} has expired ({c})")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("the certificate of {host} is not valid yet ({c})")
            }
            other if format!("{other:?}").contains("CaUsedAsEndEntity") => format!(
                "the certificate of {host} is not trusted: it is a self-signed CA certificate \
                 that is not among the trusted certificates"
            ),
            other => format!("the certificate of {host} is not accepted: {other}"),
        },
        rustls::Error::InvalidMessage(_) => format!(
            "TLS handshake with {host} failed: {tls} (does it speak TLS on this port? for a plain \
             listener use ws://)"
        ),
        other => format!("TLS handshake with {host} failed: {other}"),
    })
}

/// The byte stream under a WebSocket: plain TCP (`ws://`) or TLS (`wss://`).
pub(crate) enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("sy-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let missing = dir.join("missing.pem");
        let e = read_ca_file(&missing).expect_err("missing file");
        assert!(
            e.to_string().contains("missing.pem") && e.to_string().contains("cannot read"),
            "{e}"
        );
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let e = read_ca_file(&empty).expect_err("no certificate");
        assert!(e.to_string().contains("no certificate found"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
