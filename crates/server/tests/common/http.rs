//! HTTP requests to the bridge for the tests: one request over a plain
//! socket, the request timestamp, and the two ways of signing our own
//! endpoints (the bound query and the `X-Authentication` header), written
//! from the docs (docs/HTTP-BRIDGE.md), not from the server's code.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE as B64URL;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// A response: status, head (lowercase header names) and body.
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    /// The value of header `name` (lowercase), if any.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            (n.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// One HTTP/1.1 request with extra header lines (each ending in `\r\n`).
pub fn request(port: u16, method: &str, target: &str, headers: &str, body: &str) -> Reply {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// Now as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn now() -> String {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock");
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn hmac_b64(secret: &str, text: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac");
    mac.update(text.as_bytes());
    B64URL.encode(mac.finalize().into_bytes())
}

fn sha256_hex(body: &str) -> String {
    Sha256::digest(body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The query of a request to `path` signed with the bound scheme.
pub fn bound_query(
    (key, secret): (&str, &str),
    method: &str,
    path: &str,
    nonce: &str,
    idempotency_key: Option<&str>,
    body: &str,
) -> String {
    let ts = now();
    let canonical = [
        "switchyard-bridge-v1",
        method,
        path,
        key,
        &ts,
        "1",
        nonce,
        idempotency_key.unwrap_or(""),
        &sha256_hex(body),
    ]
    .join("\n");
    format!(
        "key={}&timestamp={}&seq=1&nonce={nonce}&signature={}",
        encode(key),
        encode(&ts),
        encode(&hmac_b64(secret, &canonical))
    )
}

/// An `X-Authentication` header line (with its `\r\n`) for a request to
/// `target` (path and query).
pub fn x_authentication(
    (key, secret): (&str, &str),
    method: &str,
    target: &str,
    nonce: &str,
    idempotency_key: Option<&str>,
    body: &str,
) -> String {
    let ts = now();
    let canonical = [
        "switchyard-x-authentication-v1",
        method,
        target,
        key,
        &ts,
        nonce,
        idempotency_key.unwrap_or(""),
        &sha256_hex(body),
    ]
    .join("\n");
    format!(
        "X-Authentication: key={}, timestamp={ts}, nonce={nonce}, signature={}\r\n",
        encode(key),
        hmac_b64(secret, &canonical)
    )
}
