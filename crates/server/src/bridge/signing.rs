//! Request signatures of the HTTP bridge.
//!
//! - **Crossbar-compatible** (`/publish`, `/call`, and the POSTs of HTTP
//!   subscribers): query parameters `key`, `timestamp`
//!   (`YYYY-MM-DDTHH:MM:SS.mmmZ`), `seq`, `nonce` and `signature`, where the
//!   signature is the URL-safe base64 (padded) of
//!   HMAC-SHA256(secret, key ‖ timestamp ‖ seq ‖ nonce ‖ body).
//! - **Bound** (`/queues/{name}/jobs`, our own endpoint): the same query
//!   parameters, the HMAC taken over [`canonical`], which also names the
//!   method, the path and the `Idempotency-Key` header, one per line.
//!
//! `seq` and `nonce` are decimal integers (as Crossbar parses them), at most
//! [`MAX_COUNTER_DIGITS`] digits. The concatenation has no separators, so
//! digits can move between `seq` and `nonce` without changing the
//! signature: replay protection therefore remembers the signature
//! (`super::replay`), not the nonce.

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE as B64URL;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// An HMAC-SHA256 value: what the replay cache remembers.
pub type Mac32 = [u8; 32];

/// The most digits `seq` and `nonce` may have (a u64 has 20).
pub const MAX_COUNTER_DIGITS: usize = 20;

/// The first line of a [`canonical`] string (names the scheme's version).
pub const CANONICAL_V1: &str = "switchyard-bridge-v1";

fn hmac(secret: &str, parts: &[&[u8]]) -> Mac32 {
    // HMAC takes keys of any length: new_from_slice cannot fail.
    let mut mac = match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The Crossbar MAC of a request.
pub fn crossbar_mac(
    secret: &str,
    key: &str,
    timestamp: &str,
    seq: &str,
    nonce: &str,
    body: &[u8],
) -> Mac32 {
    hmac(
        secret,
        &[
            key.as_bytes(),
            timestamp.as_bytes(),
            seq.as_bytes(),
            nonce.as_bytes(),
            body,
        ],
    )
}

/// The Crossbar signature of a request, as the client computes it.
pub fn sign(
    secret: &str,
    key: &str,
    timestamp: &str,
    seq: &str,
    nonce: &str,
    body: &[u8],
) -> String {
    B64URL.encode(crossbar_mac(secret, key, timestamp, seq, nonce, body))
}

/// What a bound signature covers (the endpoints that are ours).
pub struct Bound<'a> {
    pub method: &'a str,
    /// The request's path as sent (percent-encoding untouched).
    pub path: &'a str,
    pub key: &'a str,
    pub timestamp: &'a str,
    pub seq: &'a str,
    pub nonce: &'a str,
    /// The `Idempotency-Key` header (None: absent; an empty one is refused).
    pub idempotency_key: Option<&'a str>,
    pub body: &'a [u8],
}

/// The canonical string of a bound request: these lines joined by `\n`
/// (no final newline):
///
/// ```text
/// switchyard-bridge-v1
/// POST
/// /queues/mail/jobs
/// <key>
/// <timestamp>
/// <seq>
/// <nonce>
/// <Idempotency-Key, or an empty line without one>
/// <lowercase hex SHA-256 of the body>
/// ```
pub fn canonical(b: &Bound<'_>) -> String {
    let digest = Sha256::digest(b.body);
    let hex: String = digest.iter().map(|x| format!("{x:02x}")).collect();
    [
        CANONICAL_V1,
        b.method,
        b.path,
        b.key,
        b.timestamp,
        b.seq,
        b.nonce,
        b.idempotency_key.unwrap_or(""),
        &hex,
    ]
    .join("\n")
}

/// The MAC of a bound request.
pub fn bound_mac(secret: &str, b: &Bound<'_>) -> Mac32 {
    hmac(secret, &[canonical(b).as_bytes()])
}

/// The signature of a bound request, as the client computes it.
#[cfg(test)]
pub fn sign_bound(secret: &str, b: &Bound<'_>) -> String {
    B64URL.encode(bound_mac(secret, b))
}

/// Whether `given` is the signature (URL-safe base64, padded) of `mac`, in
/// constant time.
pub fn matches(mac: &Mac32, given: &str) -> bool {
    let expected = B64URL.encode(mac);
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// Checks that `value` (the `seq` or `nonce` parameter) is a non-empty
/// decimal integer of at most [`MAX_COUNTER_DIGITS`] digits that fits a u64.
pub fn check_counter(name: &str, value: &str) -> Result<(), String> {
    if value.is_empty()
        || value.len() > MAX_COUNTER_DIGITS
        || !value.bytes().all(|b| b.is_ascii_digit())
        || value.parse::<u64>().is_err()
    {
        return Err(format!(
            "{name} must be a decimal integer of 1 to {MAX_COUNTER_DIGITS} digits (at most 18446744073709551615), got {} bytes",
            value.len()
        ));
    }
    Ok(())
}

/// Whether `given_hex` is the lowercase or uppercase hex HMAC-SHA256 of
/// `body` with `secret` (GitHub's `X-Hub-Signature-256`), in constant time.
pub fn verify_hub(secret: &str, body: &[u8], given_hex: &str) -> bool {
    let Ok(mut mac) = HmacSha256::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let given = given_hex.to_ascii_lowercase();
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// Parses a request timestamp (RFC 3339, e.g. `2026-01-01T00:00:00.000Z`).
pub fn parse_timestamp(ts: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// How far `ts` is from now, either way.
pub fn skew(ts: SystemTime) -> Duration {
    let now = SystemTime::now();
    now.duration_since(ts)
        .or_else(|_| ts.duration_since(now))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The issue's vector.
    #[test]
    fn crossbar_compatible_vector() {
        let body = br#"{"topic": "com.test.messages", "args": [1]}"#;
        let sig = sign(
            "foobar",
            "bazapp",
            "2026-01-01T00:00:00.000Z",
            "1",
            "12345",
            body,
        );
        assert_eq!(sig, "8_Vuubsz7MxDaeZjM1fHfwwoT0dn1-LVHx9oPAnbXa8=");
        let ts = "2026-01-01T00:00:00.000Z";
        let mac = |secret, seq| crossbar_mac(secret, "bazapp", ts, seq, "12345", body);
        assert!(matches(&mac("foobar", "1"), &sig));
        assert!(!matches(&mac("foobar", "2"), &sig));
        assert!(!matches(&mac("foobaz", "1"), &sig));
        assert!(parse_timestamp("2026-01-01T00:00:00.000Z").is_some());
        assert!(parse_timestamp("yesterday").is_none());
    }

    /// Moving digits between seq and nonce keeps the Crossbar MAC: the
    /// reason replay protection remembers the MAC.
    #[test]
    fn digit_shifts_keep_the_crossbar_mac() {
        let m = |seq, nonce| crossbar_mac("s", "k", "t", seq, nonce, b"{}");
        assert_eq!(m("1", "2345"), m("12", "345"));
        assert_eq!(m("1", "2345"), m("1234", "5"));
    }

    #[test]
    fn counters_are_decimal_integers() {
        assert!(check_counter("nonce", "0").is_ok());
        assert!(check_counter("nonce", "18446744073709551615").is_ok());
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1a",
            "0x1",
            "18446744073709551616",
            "１",
        ] {
            assert!(check_counter("nonce", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_canonical_string_names_every_part() {
        let b = Bound {
            method: "POST",
            path: "/queues/mail/jobs",
            key: "k",
            timestamp: "2026-01-01T00:00:00.000Z",
            seq: "1",
            nonce: "2",
            idempotency_key: Some("order-7"),
            body: b"",
        };
        assert_eq!(
            canonical(&b),
            "switchyard-bridge-v1\nPOST\n/queues/mail/jobs\nk\n2026-01-01T00:00:00.000Z\n1\n2\norder-7\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let other = Bound {
            path: "/queues/other/jobs",
            ..b
        };
        assert_ne!(sign_bound("s", &b), sign_bound("s", &other));
    }
}
