//! Signing the requests the router sends: the POSTs of HTTP subscribers
//! (`bridge::subscriber`) and the attempts of queue HTTP targets
//! (`queue_service::http_target`). They carry the query parameters of the
//! bridge's own Crossbar-compatible scheme, so a receiver verifies them as
//! the bridge verifies its requests; a destination a client chose gets a
//! signature bound to its method and path instead
//! ([`destination_signed_url`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::schemes::{destination_secret, sign};

/// `url` with the query parameters of a request signed like the bridge's
/// own (key, timestamp, seq, nonce, signature over the body), so the
/// receiver verifies it as the bridge verifies its requests.
pub fn signed_url(url: &str, key: &str, secret: &str, seq: u64, body: &[u8]) -> String {
    let timestamp =
        humantime_serde::re::humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let seq = seq.to_string();
    let nonce = rand_nonce().to_string();
    let signature = sign(secret, key, &timestamp, &seq, &nonce, body);
    let sep = if url.contains('?') { '&' } else { '?' };
    format!(
        "{url}{sep}key={}&timestamp={}&seq={seq}&nonce={nonce}&signature={}",
        query_escape(key),
        query_escape(&timestamp),
        query_escape(&signature)
    )
}

/// `url` signed for a destination a client chose: the secret is
/// [`destination_secret`] for `method` and the URL's path, and
/// `scope=destination` tells the receiver so. A signature harvested there
/// does not verify at the operator's other endpoints (docs/SECURITY.md).
pub fn destination_signed_url(
    url: &str,
    method: &str,
    key: &str,
    secret: &str,
    seq: u64,
    body: &[u8],
) -> String {
    let path = url
        .parse::<hyper::Uri>()
        .map(|u| u.path().to_string())
        .unwrap_or_else(|_| "/".into());
    let secret = destination_secret(secret, method, &path);
    format!(
        "{}&scope=destination",
        signed_url(url, key, &secret, seq, body)
    )
}

fn rand_nonce() -> u64 {
    // Unique per process and request; the receiver only checks reuse.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (COUNTER.fetch_add(1, Ordering::Relaxed) << 48)
}

fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::schemes::crossbar_mac;
    use crate::signing::verify::{check_counter, matches, parse_timestamp, skew};
    use std::collections::HashMap;
    use std::time::Duration;

    fn unescape(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap_or_default()
    }

    fn query(url: &str) -> HashMap<String, String> {
        let q = url.split_once('?').map(|(_, q)| q).unwrap_or("");
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), unescape(v)))
            .collect()
    }

    /// What the router signs, the bridge's own checks accept.
    #[test]
    fn a_signed_url_verifies_as_the_bridge_verifies() {
        let body = br#"{"args":[1]}"#;
        let url = signed_url("http://h/p?x=1", "k y", "secret", 7, body);
        assert!(url.starts_with("http://h/p?x=1&key=k%20y&"), "{url}");
        let q = query(&url);
        assert_eq!(q["key"], "k y");
        assert_eq!(q["seq"], "7");
        check_counter("seq", &q["seq"]).expect("seq");
        check_counter("nonce", &q["nonce"]).expect("nonce");
        let ts = parse_timestamp(&q["timestamp"]).expect("timestamp");
        assert!(skew(ts) < Duration::from_secs(5));
        let mac = crossbar_mac("secret", &q["key"], &q["timestamp"], "7", &q["nonce"], body);
        assert!(matches(&mac, &q["signature"]));
        let other = crossbar_mac("other", &q["key"], &q["timestamp"], "7", &q["nonce"], body);
        assert!(!matches(&other, &q["signature"]));
    }

    /// A destination-scoped signature verifies with the derived secret
    /// only, never with the plain one.
    #[test]
    fn a_destination_signature_needs_the_derived_secret() {
        let body = b"{}";
        let url = destination_signed_url("http://h/hook?a=b", "POST", "k", "secret", 1, body);
        assert!(url.ends_with("&scope=destination"), "{url}");
        let q = query(&url);
        let mac = |secret: &str| crossbar_mac(secret, "k", &q["timestamp"], "1", &q["nonce"], body);
        let derived = destination_secret("secret", "POST", "/hook");
        assert!(matches(&mac(&derived), &q["signature"]));
        assert!(!matches(&mac("secret"), &q["signature"]));
        let elsewhere = destination_secret("secret", "POST", "/other");
        assert!(!matches(&mac(&elsewhere), &q["signature"]));
    }
}
