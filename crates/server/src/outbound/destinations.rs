//! Outbound HTTP that a client chooses: where the router may send a request
//! whose destination a client named (today: the HTTP target of a queue
//! declared at run time with `switchyard.queue.declare`).
//!
//! Nothing is allowed by default. `[realm.outbound_http] allow` lists URL
//! prefixes; a destination must start with one of them (scheme, host, port,
//! and a path prefix on a segment boundary, with no userinfo and no dot
//! segments). At connect time the host is resolved, every address is checked
//! and the connection goes to a checked address only (no second lookup, so
//! DNS rebinding cannot swap in another address): loopback, private,
//! link-local, unique-local, multicast, unspecified and the other
//! special-purpose ranges (IPv4 and IPv6, IPv4-mapped and NAT64 included) are
//! refused unless `allow_networks` lists them, or the URL names the address
//! literally as an `allow` prefix does (a host name resolving to such an
//! address needs `allow_networks`). Redirects are never followed (the client does not
//! follow them).
//!
//! Destinations the operator wrote in the config file (a `[[realm.queue]]`
//! HTTP target, `[[bridge.subscriber]]`, `[[bridge.callee]]`) are not
//! checked: the operator chose them.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::Uri;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;

/// `[realm.outbound_http]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundHttpConfig {
    /// URL prefixes a client may name (e.g. `"http://hooks.example.com/"`);
    /// empty: none (the default).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Special-purpose networks (CIDR, e.g. `"10.20.0.0/16"`) that an allowed
    /// host may resolve to.
    #[serde(default)]
    pub allow_networks: Vec<String>,
}

impl OutboundHttpConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, a) in self.allow.iter().enumerate() {
            if let Err(e) = Destination::parse(a) {
                out.push(format!("outbound_http.allow[{i}]: {e}"));
            }
        }
        for (i, n) in self.allow_networks.iter().enumerate() {
            if let Err(e) = Network::parse(n) {
                out.push(format!("outbound_http.allow_networks[{i}]: {e}"));
            }
        }
        out
    }
}

/// A parsed `http://host[:port]/path` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Destination {
    /// https:// (false: http://).
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

/// The query parameters of the router's request signature: a URL a client
/// names may not carry them (a receiver that reads the first value would
/// read the client's).
const SIGNING_PARAMETERS: [&str; 6] = ["key", "timestamp", "seq", "nonce", "signature", "scope"];

/// `%XX` escapes decoded, and IIS's `%uXXXX` (invalid ones kept as they
/// are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        let wide = (b[i] == b'%' && matches!(b.get(i + 1), Some(b'u' | b'U')))
            .then(|| s.get(i + 2..i + 6))
            .flatten()
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .and_then(char::from_u32);
        if let Some(c) = wide {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            i += 6;
            continue;
        }
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why a path segment could mean another path to the server than to the
/// prefix check, if it could: a dot segment (also percent-encoded, encoded
/// more than once, or followed by `;parameters`, which servlet containers
/// drop), an encoded slash or backslash, or an encoded control character.
fn segment_problem(segment: &str) -> Option<&'static str> {
    let mut s = segment.to_string();
    // Each round decodes one layer of escapes, as a server (or a proxy in
    // front of it) may; a handful covers any real chain.
    for _ in 0..6 {
        // Full-width and other look-alike dots and slashes, which some
        // servers fold to ASCII (Unicode compatibility normalization).
        let folded: String = s
            .chars()
            .map(|c| match c {
                '\u{ff0e}' | '\u{fe52}' | '\u{2024}' => '.',
                '\u{ff0f}' | '\u{2215}' | '\u{2044}' => '/',
                '\u{ff3c}' | '\u{fe68}' => '\\',
                c => c,
            })
            .collect();
        let bare = folded.split(';').next().unwrap_or("");
        // `.`, `..`, and what Windows servers trim to them (`...`, `.. `).
        if bare.contains('.') && bare.chars().all(|c| c == '.' || c == ' ') {
            return Some("the path has a dot segment");
        }
        if (s != segment || folded != s) && folded.contains(['/', '\\']) {
            return Some("the path has an encoded slash or backslash");
        }
        if s.chars().any(char::is_control) {
            return Some("the path has an encoded control character");
        }
        let next = percent_decode(&s);
        if next == s {
            return None;
        }
        s = next;
    }
    Some("the path is percent-encoded too many times")
}

/// Why a path a client adds under an operator's base URL (an HTTP callee's
/// `path`) could reach outside it, if it could: a segment as
/// [`segment_problem`] refuses (dot segments in any disguise, encoded
/// slashes, control characters) or a backslash. The query and fragment are
/// not paths and are not checked.
pub fn relative_path_problem(path: &str) -> Option<&'static str> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path.contains('\\') {
        return Some("the path has a backslash");
    }
    path.split('/').find_map(segment_problem)
}

impl Destination {
    fn parse(url: &str) -> Result<Destination, String> {
        if url
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
        {
            return Err(format!(
                "\"{}\" contains whitespace, a control character or a backslash",
                url.escape_debug()
            ));
        }
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("{url:?} is not an http:// or https:// URL")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{url:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("{url:?} carries a user name or password"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let path = uri.path().to_string();
        for segment in path.split('/') {
            segment_problem(segment).map_or(Ok(()), |why| Err(format!("{url:?}: {why}")))?;
        }
        if let Some(query) = uri.query() {
            for pair in query.split('&') {
                let name = pair.split_once('=').map_or(pair, |(n, _)| n);
                let name = percent_decode(name).to_ascii_lowercase();
                if SIGNING_PARAMETERS.contains(&name.trim()) {
                    return Err(format!(
                        "{url:?}: the query names {name:?}, a parameter the router's request signature uses"
                    ));
                }
            }
        }
        Ok(Destination {
            tls,
            host,
            port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            path,
        })
    }

    /// Whether `self` (an allow-list entry) covers `d`.
    fn covers(&self, d: &Destination) -> bool {
        if self.tls != d.tls || self.host != d.host || self.port != d.port {
            return false;
        }
        let prefix = self.path.as_str();
        prefix.is_empty()
            || prefix == "/"
            || d.path == prefix
            || (d.path.starts_with(prefix)
                && (prefix.ends_with('/') || d.path[prefix.len()..].starts_with('/')))
    }
}

/// A CIDR network.
#[derive(Clone, Copy, Debug)]
struct Network {
    addr: IpAddr,
    bits: u8,
}

impl Network {
    const fn v4(a: u8, b: u8, c: u8, d: u8, bits: u8) -> Network {
        Network {
            addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            bits,
        }
    }

    const fn v6(segments: [u16; 8], bits: u8) -> Network {
        let [a, b, c, d, e, f, g, h] = segments;
        Network {
            addr: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            bits,
        }
    }

    fn parse(s: &str) -> Result<Network, String> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("\"{s}\" is not an IP address or CIDR network"))?;
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("\"{s}\": the prefix length must be 0..={max}"))?,
        };
        Ok(Network { addr, bits })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// Special-purpose address blocks (IANA registries): never reached unless
/// listed. IPv4-mapped IPv6 addresses are checked as IPv4.
const SPECIAL: [Network; 33] = [
    Network::v4(0, 0, 0, 0, 8),                     // "this network", 0.0.0.0
    Network::v4(10, 0, 0, 0, 8),                    // private
    Network::v4(100, 64, 0, 0, 10),                 // shared (carrier-grade NAT)
    Network::v4(127, 0, 0, 0, 8),                   // loopback
    Network::v4(169, 254, 0, 0, 16),                // link-local (cloud metadata)
    Network::v4(172, 16, 0, 0, 12),                 // private
    Network::v4(192, 0, 0, 0, 24),                  // IETF protocol assignments
    Network::v4(192, 0, 2, 0, 24),                  // documentation
    Network::v4(192, 88, 99, 0, 24),                // 6to4 relay anycast
    Network::v4(192, 168, 0, 0, 16),                // private
    Network::v4(198, 18, 0, 0, 15),                 // benchmarking
    Network::v4(198, 51, 100, 0, 24),               // documentation
    Network::v4(203, 0, 113, 0, 24),                // documentation
    Network::v4(224, 0, 0, 0, 4),                   // multicast
    Network::v4(240, 0, 0, 0, 4),                   // reserved, broadcast
    Network::v6([0, 0, 0, 0, 0, 0, 0, 0], 128),     // unspecified
    Network::v6([0, 0, 0, 0, 0, 0, 0, 1], 128),     // loopback
    Network::v6([0, 0, 0, 0, 0, 0, 0, 0], 96),      // IPv4-compatible (deprecated)
    Network::v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96), // IPv4-mapped (checked as IPv4 first)
    Network::v6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96), // IPv4-translated
    Network::v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96), // NAT64
    Network::v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), // local NAT64
    Network::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),  // discard-only
    Network::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), // IETF protocol assignments, Teredo
    Network::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
    Network::v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16), // 6to4 (embeds IPv4)
    Network::v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), // documentation
    Network::v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16), // segment routing
    Network::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),  // unique-local
    Network::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), // link-local
    Network::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), // site-local (deprecated)
    Network::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),  // multicast
    Network::v4(255, 255, 255, 255, 32),            // broadcast
];

/// Whether `ip` lies in a special-purpose block.
pub fn is_special(ip: IpAddr) -> bool {
    SPECIAL.iter().any(|n| n.contains(ip))
}

/// Where clients may make the router send requests.
#[derive(Debug, Default)]
pub struct OutboundPolicy {
    allow: Vec<Destination>,
    networks: Vec<Network>,
    /// Addresses an `allow` URL names literally: reachable through a URL
    /// that names them literally too, never through a host name (a name
    /// whose DNS answer someone else controls could otherwise point at
    /// them, on any port an allow entry for that name permits).
    literals: Vec<IpAddr>,
}

impl OutboundPolicy {
    /// The policy of a checked config (entries that do not parse are
    /// skipped; `check-config` reports them).
    pub fn new(config: &OutboundHttpConfig) -> OutboundPolicy {
        let allow: Vec<Destination> = config
            .allow
            .iter()
            .filter_map(|a| Destination::parse(a).ok())
            .collect();
        let networks: Vec<Network> = config
            .allow_networks
            .iter()
            .filter_map(|n| Network::parse(n).ok())
            .collect();
        // An address written in an allowed URL is reachable when a URL
        // names it (check_url has matched that URL to an allow entry).
        let literals = allow
            .iter()
            .filter_map(|d| d.host.parse::<IpAddr>().ok())
            .map(canonical)
            .collect();
        OutboundPolicy {
            allow,
            networks,
            literals,
        }
    }

    /// Whether any destination is allowed at all.
    pub fn enabled(&self) -> bool {
        !self.allow.is_empty()
    }

    /// Checks a URL a client named: allowed if an `allow` prefix covers it.
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        if !self.enabled() {
            return Err(
                "this realm allows no client-chosen HTTP destination (the operator lists them in [realm.outbound_http] allow)"
                    .into(),
            );
        }
        let d = Destination::parse(url)?;
        if self.allow.iter().any(|a| a.covers(&d)) {
            Ok(())
        } else {
            Err(format!(
                "{url:?} is not under a URL prefix of [realm.outbound_http] allow"
            ))
        }
    }

    /// Whether the router may connect to `ip`, which a host name resolved
    /// to.
    pub fn address_allowed(&self, ip: IpAddr) -> bool {
        !is_special(ip) || self.networks.iter().any(|n| n.contains(ip))
    }

    /// Whether the router may connect to `ip`, which the URL names
    /// literally: also if an `allow` entry names it literally.
    pub fn literal_allowed(&self, ip: IpAddr) -> bool {
        self.address_allowed(ip) || self.literals.contains(&canonical(ip))
    }
}

/// A connector for client-chosen destinations: resolves the host once,
/// keeps the addresses the policy allows, and connects to one of those.
#[derive(Clone)]
pub struct GuardedConnector {
    policy: Arc<OutboundPolicy>,
}

impl GuardedConnector {
    pub fn new(policy: Arc<OutboundPolicy>) -> GuardedConnector {
        GuardedConnector { policy }
    }
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TokioIo<TcpStream>>> + Send>>;

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        let policy = self.policy.clone();
        Box::pin(async move {
            let refused = |m: String| io::Error::new(io::ErrorKind::PermissionDenied, m);
            let default_port = match uri.scheme_str() {
                Some("http") => 80,
                Some("https") => 443,
                _ => {
                    return Err(refused(format!(
                        "{uri}: only http:// and https:// are served"
                    )))
                }
            };
            let host = uri
                .host()
                .ok_or_else(|| refused(format!("{uri} has no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(default_port);
            let literal = host.parse::<IpAddr>().ok();
            let addrs: Vec<SocketAddr> = match literal {
                Some(ip) => vec![SocketAddr::new(ip, port)],
                None => tokio::net::lookup_host((host.as_str(), port))
                    .await?
                    .collect(),
            };
            let (allowed, denied): (Vec<SocketAddr>, Vec<SocketAddr>) =
                addrs.into_iter().partition(|a| match literal {
                    Some(_) => policy.literal_allowed(a.ip()),
                    None => policy.address_allowed(a.ip()),
                });
            if allowed.is_empty() {
                let list: Vec<String> = denied.iter().map(|a| a.ip().to_string()).collect();
                return Err(refused(format!(
                    "{host} resolves to {} (special-purpose addresses: loopback, private, link-local, ...), which [realm.outbound_http] allow_networks does not list",
                    if list.is_empty() { "no address".to_string() } else { list.join(", ") }
                )));
            }
            let mut last = None;
            for addr in allowed {
                match TcpStream::connect(addr).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return Ok(TokioIo::new(s));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| io::Error::other("no address to connect to")))
        })
    }
}

/// An error and its causes, as one line (hyper's errors say little alone).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn special_ranges_are_special() {
        for a in [
            "127.0.0.1",
            "0.0.0.0",
            "10.1.2.3",
            "172.31.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "2002:7f00:1::",
        ] {
            assert!(is_special(ip(a)), "{a}");
        }
        for a in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_special(ip(a)), "{a}");
        }
    }

    /// An https:// prefix covers https:// destinations only (its default
    /// port is 443), and an http:// one http:// only.
    #[test]
    fn prefixes_match_the_scheme() {
        let p = OutboundPolicy::new(&OutboundHttpConfig {
            allow: vec!["https://hooks.example.com/in/".into()],
            allow_networks: Vec::new(),
        });
        assert!(p.check_url("https://hooks.example.com/in/x").is_ok());
        assert!(p.check_url("https://hooks.example.com:443/in/x").is_ok());
        assert!(p.check_url("http://hooks.example.com:443/in/x").is_err());
        assert!(p.check_url("http://hooks.example.com/in/x").is_err());
        assert!(p.check_url("ftp://hooks.example.com/in/x").is_err());
    }

    #[test]
    fn prefixes_match_on_segment_boundaries_and_refuse_tricks() {
        let p = OutboundPolicy::new(&OutboundHttpConfig {
            allow: vec!["http://hooks.example.com/jobs".into()],
            allow_networks: vec![],
        });
        assert!(p.check_url("http://hooks.example.com/jobs").is_ok());
        assert!(p.check_url("http://HOOKS.example.com:80/jobs/x").is_ok());
        assert!(p.check_url("http://hooks.example.com/jobsx").is_err());
        assert!(p.check_url("http://hooks.example.com:8080/jobs").is_err());
        assert!(p
            .check_url("http://hooks.example.com/jobs/../admin")
            .is_err());
        assert!(p
            .check_url("http://hooks.example.com/jobs/%2E%2e/admin")
            .is_err());
        assert!(p.check_url("http://hooks.example.com/jobs/a%2fb").is_err());
        for trick in [
            "/jobs/..;/admin",
            "/jobs/.;/admin",
            "/jobs/%2e%2e;x/admin",
            "/jobs/.%3b/admin",
            "/jobs/%252e%252e/admin",
            "/jobs/%25252E%25252E/admin",
            "/jobs/a%252fb",
            "/jobs/a%5cb",
            "/jobs/a%00b",
            "/jobs/%2525252525252e",
            "/jobs/x?signature=1",
            "/jobs/x?a=1&KEY=2",
            "/jobs/x?%6eonce=2",
            "/jobs/x?scope",
            "/jobs/.../admin",
            "/jobs/..%20/admin",
            "/jobs/%u002e%u002e/admin",
            "/jobs/%U002E./admin",
            "/jobs/%EF%BC%8E%EF%BC%8E/admin",
            "/jobs/a%EF%BC%8Fb",
            "/jobs/a%u2215b",
        ] {
            let url = format!("http://hooks.example.com{trick}");
            assert!(p.check_url(&url).is_err(), "{url}");
        }
        for fine in [
            "/jobs/a.b/c..d",
            "/jobs/x;v=1",
            "/jobs/%41",
            "/jobs/x?keyed=1&tenant=2",
        ] {
            let url = format!("http://hooks.example.com{fine}");
            assert!(p.check_url(&url).is_ok(), "{url}");
        }
        assert!(p
            .check_url("http://hooks.example.com@evil.com/jobs")
            .is_err());
        assert!(p.check_url("http://evil.com/jobs").is_err());
        assert!(p.check_url("https://hooks.example.com/jobs").is_err());
        assert!(!OutboundPolicy::default().enabled());
        assert!(OutboundPolicy::default().check_url("http://a.b/").is_err());
    }

    #[test]
    fn relative_paths_stay_under_the_base() {
        for bad in [
            "../x",
            "a/../../x",
            "%2e%2e/x",
            "..;/x",
            "%252e%252e/x",
            "a%2fb",
            "a\\b",
            "a%00",
        ] {
            assert!(relative_path_problem(bad).is_some(), "{bad}");
        }
        for fine in [
            "",
            "/",
            "items/7",
            "a..b/.c",
            "x?next=../y",
            "x#../y",
            "x;v=1",
        ] {
            assert!(relative_path_problem(fine).is_none(), "{fine}");
        }
    }

    #[test]
    fn listed_addresses_and_networks_are_allowed() {
        let p = OutboundPolicy::new(&OutboundHttpConfig {
            allow: vec!["http://127.0.0.1:9000/".into()],
            allow_networks: vec!["10.20.0.0/16".into(), "fd00::/8".into()],
        });
        assert!(p.literal_allowed(ip("127.0.0.1")));
        assert!(p.literal_allowed(ip("::ffff:127.0.0.1")));
        assert!(!p.literal_allowed(ip("127.0.0.2")));
        // Not through a host name that resolves to it.
        assert!(!p.address_allowed(ip("127.0.0.1")));
        assert!(p.address_allowed(ip("10.20.3.4")));
        assert!(!p.address_allowed(ip("10.21.0.1")));
        assert!(p.address_allowed(ip("fd00::1")));
        assert!(p.address_allowed(ip("8.8.8.8")));
        assert!(Network::parse("10.0.0.0/33").is_err());
    }
}
