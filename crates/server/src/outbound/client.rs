//! The one HTTP client every outbound request of the router is made with:
//! HTTP callees, HTTP subscribers, queue HTTP targets and the app's
//! authenticator / authorizer URLs. `http://` and `https://` both work;
//! https goes through rustls (ring, the same stack as the listeners) and
//! trusts the system's root certificates plus the CAs of
//! `[outbound_tls] ca_file`, configured once for the process
//! ([`configure`], before anything sends a request).
//!
//! Redirects are never followed (hyper's client does not); each caller
//! bounds its own time and response size.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::Deserialize;

/// `[outbound_tls]`: how the router checks the servers it sends requests to.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundTlsConfig {
    /// A PEM file of CA certificates trusted for outbound https, besides
    /// the system's (e.g. a company CA, or the CA of a test setup).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Whether the system's root certificates are trusted (default true).
    #[serde(default = "yes")]
    pub system_roots: bool,
}

fn yes() -> bool {
    true
}

impl Default for OutboundTlsConfig {
    fn default() -> Self {
        OutboundTlsConfig {
            ca_file: None,
            system_roots: true,
        }
    }
}

impl OutboundTlsConfig {
    pub fn problems(&self) -> Vec<String> {
        match self.client_config() {
            Ok(_) => Vec::new(),
            Err(e) => vec![format!("outbound_tls: {e}")],
        }
    }

    /// The rustls client configuration: system roots (if asked) and the
    /// CA file.
    fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        let mut roots = rustls::RootCertStore::empty();
        if self.system_roots {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!("system root certificates: {e}");
            }
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, "system root certificates trusted for outbound https");
        }
        if let Some(f) = &self.ca_file {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(f)
                .map_err(|e| format!("ca_file \"{f}\": {e}"))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("ca_file \"{f}\": {e}"))?;
            if certs.is_empty() {
                return Err(format!("ca_file \"{f}\": no certificate in it"));
            }
            for c in certs {
                roots.add(c).map_err(|e| format!("ca_file \"{f}\": {e}"))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}

static TLS: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();

/// Sets the process's outbound TLS settings (once, at start; later calls
/// are ignored). Without it, the system roots only.
pub fn configure(c: &OutboundTlsConfig) -> Result<(), String> {
    let config = c
        .client_config()
        .map_err(|e| format!("outbound_tls: {e}"))?;
    let _ = TLS.set(Arc::new(config));
    Ok(())
}

fn tls() -> Arc<rustls::ClientConfig> {
    TLS.get_or_init(|| {
        // Without a CA file only the protocol versions could fail, and the
        // ring provider supports the defaults.
        Arc::new(
            OutboundTlsConfig::default()
                .client_config()
                .unwrap_or_else(|_| {
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                }),
        )
    })
    .clone()
}

/// Wraps a connector (plain TCP, or the checked connector of client-chosen
/// destinations) so that https:// URLs get TLS over it.
pub fn https<C>(inner: C) -> HttpsConnector<C> {
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls()).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(inner)
}

/// A client for URLs the operator wrote (http:// or https://).
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub fn client() -> HttpClient {
    let mut http = HttpConnector::new();
    // The https connector needs to see the https scheme.
    http.enforce_http(false);
    Client::builder(TokioExecutor::new()).build(https(http))
}

/// Whether `url` is an http:// or https:// URL with a host.
pub fn is_http_url(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://"))
        && url
            .parse::<hyper::Uri>()
            .ok()
            .is_some_and(|u| u.host().is_some_and(|h| !h.is_empty()))
}
