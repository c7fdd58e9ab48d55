//! `allowed_origins` of a WebSocket listener: which web pages may open a
//! WebSocket to it. Browsers send the page's origin (`scheme://host[:port]`)
//! in the upgrade request and a page cannot forge it; non-browser clients
//! usually send none, and those are let through.

/// One allowed origin, normalized: lowercase scheme and host, default ports
/// (80 for http/ws, 443 for https/wss) left out.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    scheme: String,
    /// The host, or for `*.example.com` the suffix `.example.com`.
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

/// The parsed `allowed_origins` list.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    patterns: Vec<Pattern>,
}

impl OriginPolicy {
    /// Parses the configured list; an error names the bad entry.
    pub fn parse(list: &[String]) -> Result<OriginPolicy, String> {
        if list.is_empty() {
            return Err(
                "an empty list would refuse every browser; list the origins of your web pages, or leave the key out to allow all".into(),
            );
        }
        let patterns = list
            .iter()
            .map(|s| parse_origin(s, true).map_err(|e| format!("\"{s}\": {e}")))
            .collect::<Result<_, _>>()?;
        Ok(OriginPolicy { patterns })
    }

    /// Whether a request with this `Origin` header value may connect.
    pub fn allows(&self, origin: &str) -> bool {
        let Ok(o) = parse_origin(origin, false) else {
            return false; // e.g. "null" (sandboxed frames, file: pages)
        };
        self.patterns.iter().any(|p| {
            p.scheme == o.scheme
                && p.port == o.port
                && if p.wildcard {
                    o.host.len() > p.host.len() && o.host.ends_with(&p.host)
                } else {
                    p.host == o.host
                }
        })
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

fn parse_origin(s: &str, allow_wildcard: bool) -> Result<Pattern, String> {
    let (scheme, rest) = s
        .split_once("://")
        .ok_or("expected scheme://host[:port], e.g. https://app.example.com")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return Err("invalid scheme".into());
    }
    if rest.contains(['/', '?', '#', '@']) {
        return Err(
            "an origin has no path, query, fragment or user (scheme://host[:port] only)".into(),
        );
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (inner, after) = v6.split_once(']').ok_or("unterminated IPv6 address")?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or("garbage after the IPv6 address")?,
            ),
        };
        (format!("[{}]", inner.to_ascii_lowercase()), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (rest.to_ascii_lowercase(), None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .map_err(|_| format!("invalid port \"{p}\""))?,
        ),
    };
    let port = port.filter(|p| Some(*p) != default_port(&scheme));
    let (host, wildcard) = match host.strip_prefix('*') {
        Some(suffix) if allow_wildcard => {
            if !suffix.starts_with('.') || suffix.len() < 2 || suffix.contains('*') {
                return Err("a wildcard is only allowed as a leading label: *.example.com".into());
            }
            (suffix.to_string(), true)
        }
        _ => (host, false),
    };
    if host.is_empty() || host.contains('*') || host.chars().any(|c| c.is_whitespace()) {
        return Err("invalid host".into());
    }
    Ok(Pattern {
        scheme,
        host,
        wildcard,
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(list: &[&str]) -> OriginPolicy {
        OriginPolicy::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("valid list")
    }

    #[test]
    fn exact_match_is_case_insensitive_and_port_aware() {
        let p = policy(&["https://App.Example.com", "http://localhost:3000"]);
        assert!(p.allows("https://app.example.com"));
        assert!(p.allows("HTTPS://APP.EXAMPLE.COM"));
        assert!(p.allows("https://app.example.com:443"));
        assert!(p.allows("http://localhost:3000"));
        assert!(!p.allows("http://localhost:3001"));
        assert!(!p.allows("http://localhost"));
        assert!(!p.allows("http://app.example.com"));
        assert!(!p.allows("https://app.example.com.evil.net"));
        assert!(!p.allows("https://evil.app.example.com"));
        assert!(!p.allows("null"));
        assert!(!p.allows(""));
    }

    #[test]
    fn wildcard_subdomains() {
        let p = policy(&["https://*.example.com"]);
        assert!(p.allows("https://a.example.com"));
        assert!(p.allows("https://a.b.example.com"));
        assert!(!p.allows("https://example.com"));
        assert!(!p.allows("https://evilexample.com"));
        assert!(!p.allows("http://a.example.com"));
        assert!(!p.allows("https://a.example.com:8443"));
        // A wildcard in the request is just a literal host that cannot match.
        assert!(!policy(&["https://x.com"]).allows("https://*.x.com"));
    }

    #[test]
    fn ipv6_hosts() {
        let p = policy(&["http://[::1]:8080"]);
        assert!(p.allows("http://[::1]:8080"));
        assert!(!p.allows("http://[::1]"));
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com:99999",
            "https://*example.com",
            "https://a.*.example.com",
            "https://",
            "*",
            "null",
        ] {
            let e = OriginPolicy::parse(&[bad.to_string()]).expect_err(bad);
            assert!(e.contains(bad), "{e}");
        }
        assert!(OriginPolicy::parse(&[]).is_err());
    }
}
