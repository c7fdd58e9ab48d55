//! What a WAMP caller may put into the HTTP request of an HTTP callee: a
//! path confined to the configured base URL, a method from the configured
//! list, and headers that change neither the framing nor the routing of
//! the request, nor (unless configured) its credentials.

use hyper::header::HeaderName;
use hyper::Uri;

/// Methods an operator may list in `methods` (CONNECT and TRACE are never
/// forwarded).
pub const KNOWN_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Headers a caller can never set: framing, connection management and
/// routing belong to the router's HTTP client.
pub const NEVER: [&str; 13] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "proxy-authorization",
    "proxy-authenticate",
    "http2-settings",
];

/// Headers under this prefix are the router's (the caller's identity:
/// `bridge::callee::CALLER_HEADERS`): a caller can never set one.
pub const ROUTER_PREFIX: &str = "x-switchyard-";

/// Headers a caller may set only when the callee's `allow_headers` lists
/// them: credentials, the client-address and host headers backends trust,
/// and the override headers frameworks read as the method or the path
/// (which would undo `methods` and the path's confinement).
pub const SENSITIVE: [&str; 17] = [
    "authorization",
    "cookie",
    "forwarded",
    "x-real-ip",
    "x-host",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-originating-ip",
    "x-remote-ip",
    "x-remote-addr",
    "x-method-override",
    "x-rewrite-url",
    "x-proxyuser-ip",
];

/// Families of [`SENSITIVE`] headers, by prefix: `X-Forwarded-*` (for,
/// host, proto, port, server, scheme, ssl, prefix, ...), `X-Original-*`
/// (URL, URI, host, method, forwarded-for: path and host overrides) and
/// `X-HTTP-Method*` (method overrides).
pub const SENSITIVE_PREFIXES: [&str; 3] = ["x-forwarded-", "x-original-", "x-http-method"];

/// Whether `lower` (a lowercase header name) is sensitive.
pub fn is_sensitive(lower: &str) -> bool {
    SENSITIVE.contains(&lower) || SENSITIVE_PREFIXES.iter().any(|p| lower.starts_with(p))
}

/// The most headers one call may set.
pub const MAX_HEADERS: usize = 64;

/// The URL for a caller's `path` under `base` (an http:// URL): `path` is
/// a path below the base's path, with an optional query. Refused: URLs and
/// authorities (`scheme://`, `//host`), backslashes, dot segments (`.`,
/// `..`, also as `..;x`), empty segments, percent-encoded `.`, `/`, `\` or
/// `%` (so no encoding, single or double, can hide a dot segment or a
/// separator), escapes that decode to control characters or invalid UTF-8
/// (overlong forms of `.` and `/`), control characters, spaces, `#` and
/// non-ASCII characters. The result is checked again after parsing: same
/// scheme and authority, path under the base's path.
pub fn confine_path(base: &str, path: &str) -> Result<String, String> {
    let refuse = |why: &str| Err(format!("path \"{}\" refused: {why}", escape(path)));
    if path.is_empty() {
        return Ok(base.to_string());
    }
    let (p, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    for (part, what) in [(p, "path"), (query.unwrap_or(""), "query")] {
        if let Some(c) = part
            .chars()
            .find(|c| !c.is_ascii() || c.is_ascii_control() || matches!(c, ' ' | '#' | '\\'))
        {
            return refuse(&format!(
                "the {what} contains {c:?} (control characters, spaces, '#', '\\' and non-ASCII characters must not appear; percent-encode data)"
            ));
        }
    }
    if p.contains("://") || p.starts_with("//") {
        return refuse("it must be a path below the callee's URL, not a URL or an authority");
    }
    // Percent escapes in the path: well formed, and not hiding a
    // separator, a dot or another escape.
    let bytes = p.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let Some(v) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            else {
                return refuse("a '%' must be followed by two hex digits");
            };
            if matches!(v, b'.' | b'/' | b'\\' | b'%') || v.is_ascii_control() {
                return refuse(&format!(
                    "%{:02X} encodes '{}' (encoded dots, slashes, backslashes, percent signs and control characters are refused)",
                    v,
                    (v as char).escape_debug()
                ));
            }
            decoded.push(v);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    if std::str::from_utf8(&decoded).is_err() {
        return refuse("its percent escapes are not valid UTF-8");
    }
    let rel = p.strip_prefix('/').unwrap_or(p);
    let segments: Vec<&str> = rel.split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        let name = seg.split(';').next().unwrap_or("");
        if name == "." || name == ".." {
            return refuse("dot segments ('.', '..') are not allowed");
        }
        // Only the last segment may be empty (a trailing slash).
        if seg.is_empty() && i + 1 < segments.len() {
            return refuse("empty segments ('//') are not allowed");
        }
    }
    let base_trim = base.trim_end_matches('/');
    let url = match query {
        Some(q) => format!("{base_trim}/{rel}?{q}"),
        None => format!("{base_trim}/{rel}"),
    };
    // Defense in depth: the parsed URL keeps the base's scheme, authority
    // and path prefix.
    let (Ok(b), Ok(u)) = (base.parse::<Uri>(), url.parse::<Uri>()) else {
        return refuse("it does not form a valid URL");
    };
    let base_path = b.path().trim_end_matches('/');
    let under = u.path() == base_path
        || u.path()
            .strip_prefix(base_path)
            .is_some_and(|r| r.starts_with('/'));
    if u.scheme() != b.scheme() || u.authority() != b.authority() || !under {
        return refuse("it leaves the callee's URL");
    }
    Ok(url)
}

/// Checks a caller's header name against the rules; its canonical form.
pub fn check_header(name: &str, allow: &[String]) -> Result<HeaderName, String> {
    let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else {
        return Err(format!("invalid header name \"{}\"", escape(name)));
    };
    let lower = n.as_str();
    if NEVER.contains(&lower) || lower.starts_with(ROUTER_PREFIX) {
        return Err(format!(
            "the header \"{lower}\" is set by the router and cannot be set by a caller"
        ));
    }
    let listed = allow.iter().any(|a| a.eq_ignore_ascii_case(lower));
    if is_sensitive(lower) && !listed {
        return Err(format!(
            "the header \"{lower}\" may only be set when the callee's allow_headers lists it"
        ));
    }
    Ok(n)
}

fn escape(s: &str) -> String {
    switchyard_router::logsafe::Clip(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://127.0.0.1:9001/api";

    #[test]
    fn paths_stay_under_the_base() {
        for (path, url) in [
            ("", "http://127.0.0.1:9001/api"),
            ("/items/7", "http://127.0.0.1:9001/api/items/7"),
            (
                "items/7?x=1&y=%2F",
                "http://127.0.0.1:9001/api/items/7?x=1&y=%2F",
            ),
            (
                "/a%20b/caf%C3%A9",
                "http://127.0.0.1:9001/api/a%20b/caf%C3%A9",
            ),
            ("/dir/", "http://127.0.0.1:9001/api/dir/"),
            ("/", "http://127.0.0.1:9001/api/"),
            ("/a..b/.hidden", "http://127.0.0.1:9001/api/a..b/.hidden"),
        ] {
            assert_eq!(confine_path(BASE, path).as_deref(), Ok(url), "{path}");
        }
        for path in [
            "/../../admin/keys",
            "..",
            "/a/./b",
            "/a/..",
            "/%2e%2e/admin",
            "/%2E%2E/admin",
            "/.%2e/admin",
            "/..%2fadmin",
            "/a%2F..%2F..%2Fadmin",
            "/%252e%252e/admin",
            "/%c0%ae%c0%ae/admin",
            "/..\\admin",
            "\\..\\admin",
            "//evil.example/x",
            "http://evil.example/x",
            "/x?y=http://evil",
            "/..;/admin",
            "/a//b",
            "/a\nb",
            "/a b",
            "/a#b",
            "/%",
            "/%zz",
            "/%00",
            "/é",
        ] {
            let r = confine_path(BASE, path);
            // A query may hold "://" (it is data), the rest must fail.
            if path == "/x?y=http://evil" {
                assert!(r.is_ok(), "{path}: {r:?}");
            } else {
                assert!(r.is_err(), "{path} was accepted: {r:?}");
            }
        }
    }

    #[test]
    fn headers_are_checked() {
        assert!(check_header("X-Custom", &[]).is_ok());
        for h in [
            "Host",
            "content-length",
            "Transfer-Encoding",
            "connection",
            "TE",
        ] {
            assert!(check_header(h, &["host".into()]).is_err(), "{h}");
        }
        assert!(check_header("Authorization", &[]).is_err());
        assert!(check_header("Authorization", &["authorization".into()]).is_ok());
        assert!(check_header("Cookie", &[]).is_err());
        assert!(check_header(
            "X-Switchyard-Caller-Authid",
            &["x-switchyard-caller-authid".into()]
        )
        .is_err());
        assert!(check_header("bad header", &[]).is_err());
    }
}
