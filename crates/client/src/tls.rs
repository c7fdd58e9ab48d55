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
        let Some((not_before, not_after)) = validity(end_entity) else {
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

/// notBefore and notAfter of a DER certificate, in seconds since the Unix
/// epoch; `None` if it cannot be read. A bounds-checked walk of the few DER
/// elements before the validity (no X.509 crate for two dates).
fn validity(der: &[u8]) -> Option<(u64, u64)> {
    let (cert, _) = element(der, 0x30)?;
    let (tbs, _) = element(cert, 0x30)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xA0) {
        rest = tlv(rest)?.2; // [0] version
    }
    rest = tlv(rest)?.2; // serialNumber
    rest = tlv(rest)?.2; // signature AlgorithmIdentifier
    rest = tlv(rest)?.2; // issuer
    let (validity, _) = element(rest, 0x30)?;
    let (t1, v1, rest) = tlv(validity)?;
    let (t2, v2, _) = tlv(rest)?;
    Some((der_time(t1, v1)?, der_time(t2, v2)?))
}

/// One DER element: (tag, content, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = input.get(2..2 + n)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((tag, input.get(header..end)?, input.get(end..)?))
}

fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, content, rest) = tlv(input)?;
    (t == tag).then_some((content, rest))
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950..2049) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`) as seconds since the Unix epoch.
fn der_time(tag: u8, content: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(content).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |s: &str| s.parse::<i64>().ok();
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy = num(&digits[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &digits[2..])
        }
        (0x18, 14) => (num(&digits[..4])?, &digits[4..]),
        _ => return None,
    };
    let (month, day) = (num(&rest[..2])?, num(&rest[2..4])?);
    let (h, m, s) = (num(&rest[4..6])?, num(&rest[6..8])?, num(&rest[8..10])?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    // Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + m * 60 + s).ok()
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
    fn der_times() {
        assert_eq!(der_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(der_time(0x17, b"260101000000Z"), Some(1_767_225_600));
        assert_eq!(der_time(0x18, b"20260101000000Z"), Some(1_767_225_600));
        assert_eq!(der_time(0x18, b"20240229123456Z"), Some(1_709_210_096));
        // RFC 5280's "no well-defined expiration date".
        assert_eq!(der_time(0x18, b"99991231235959Z"), Some(253_402_300_799));
        assert_eq!(der_time(0x18, b"260101000000Z"), None); // GeneralizedTime: 4-digit years
        assert_eq!(der_time(0x17, b"261301000000Z"), None);
        assert_eq!(der_time(0x17, b"2601010000Z"), None);
        assert_eq!(der_time(0x17, b"260101000000"), None);
    }

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
