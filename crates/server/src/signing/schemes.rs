//! The signature schemes: the HMAC-SHA256 values every signed request
//! carries, computed the same way by the side that signs and the side that
//! verifies.
//!
//! - **Crossbar-compatible** (`/publish`, `/call`, and the POSTs of HTTP
//!   subscribers and queue HTTP targets): query parameters `key`,
//!   `timestamp` (`YYYY-MM-DDTHH:MM:SS.mmmZ`), `seq`, `nonce` and
//!   `signature`, where the signature is the URL-safe base64 (padded) of
//!   HMAC-SHA256(secret, key ‖ timestamp ‖ seq ‖ nonce ‖ body).
//! - **Bound** (`/queues/{name}/jobs`, our own endpoint): the same query
//!   parameters, the HMAC taken over [`canonical`], which also names the
//!   method, the path and the `Idempotency-Key` header, one per line.
//! - **Destination-scoped** ([`destination_secret`]): the Crossbar scheme
//!   with a secret derived for one method and path, for requests to a
//!   destination a client chose.
//! - **`X-Authentication` header** ([`header_canonical`], every bridge
//!   endpoint): `key`, `timestamp`, `nonce` and `signature` in one header
//!   instead of the query; the HMAC covers the method, the request target
//!   (path and query), the `Idempotency-Key` header and the body.
//! - **Webhooks** ([`verify_hub`]): GitHub's `X-Hub-Signature-256`, the hex
//!   HMAC of the body.
//!
//! `seq` and `nonce` are decimal integers (as Crossbar parses them), at most
//! [`super::verify::MAX_COUNTER_DIGITS`] digits. The concatenation has no
//! separators, so digits can move between `seq` and `nonce` without
//! changing the signature: replay protection therefore remembers the
//! signature (`super::replay`), not the nonce.

use base64::engine::general_purpose::URL_SAFE as B64URL;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// An HMAC-SHA256 value: what the replay cache remembers.
pub type Mac32 = [u8; 32];

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

/// The first line of an [`header_canonical`] string.
pub const HEADER_V1: &str = "switchyard-x-authentication-v1";

/// What an `X-Authentication` signature covers (every bridge endpoint).
pub struct HeaderSigned<'a> {
    pub method: &'a str,
    /// The request target as sent: the path and, if any, `?` and the query
    /// (percent-encoding untouched).
    pub target: &'a str,
    pub key: &'a str,
    pub timestamp: &'a str,
    pub nonce: &'a str,
    /// The `Idempotency-Key` header, on the endpoints that read it.
    pub idempotency_key: Option<&'a str>,
    pub body: &'a [u8],
}

/// The string an `X-Authentication` header signs: these lines joined by
/// `\n` (no final newline):
///
/// ```text
/// switchyard-x-authentication-v1
/// POST
/// /queues/mail/jobs?a=1
/// <key>
/// <timestamp>
/// <nonce>
/// <Idempotency-Key, or an empty line without one>
/// <lowercase hex SHA-256 of the body>
/// ```
pub fn header_canonical(h: &HeaderSigned<'_>) -> String {
    let digest = Sha256::digest(h.body);
    let hex: String = digest.iter().map(|x| format!("{x:02x}")).collect();
    [
        HEADER_V1,
        h.method,
        h.target,
        h.key,
        h.timestamp,
        h.nonce,
        h.idempotency_key.unwrap_or(""),
        &hex,
    ]
    .join("\n")
}

/// The MAC of an `X-Authentication` header.
pub fn header_mac(secret: &str, h: &HeaderSigned<'_>) -> Mac32 {
    hmac(secret, &[header_canonical(h).as_bytes()])
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

/// The secret that signs a request to a client-chosen destination, in
/// place of `[realm.queue_http] secret`: URL-safe base64 (padded) of
/// HMAC-SHA256(secret, "switchyard-destination\n" + METHOD + " " + path),
/// `path` being the request's path without the query. A signature made with
/// it verifies only where the receiver derives the same secret for its own
/// method and path: one harvested at a destination a client chose (an
/// endpoint that echoes requests, logs them, or is the client's) does not
/// verify at the operator's other endpoints, which check the plain secret,
/// nor at another path.
pub fn destination_secret(secret: &str, method: &str, path: &str) -> String {
    B64URL.encode(hmac(
        secret,
        &[
            b"switchyard-destination\n",
            method.as_bytes(),
            b" ",
            path.as_bytes(),
        ],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::verify::{matches, parse_timestamp};

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

    #[test]
    fn the_header_string_names_every_part() {
        let h = HeaderSigned {
            method: "GET",
            target: "/queues/mail/jobs/7?x=1",
            key: "k",
            timestamp: "2026-01-01T00:00:00.000Z",
            nonce: "2",
            idempotency_key: None,
            body: b"",
        };
        assert_eq!(
            header_canonical(&h),
            "switchyard-x-authentication-v1\nGET\n/queues/mail/jobs/7?x=1\nk\n2026-01-01T00:00:00.000Z\n2\n\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let other = HeaderSigned {
            target: "/queues/mail/jobs/7?x=2",
            ..h
        };
        assert_ne!(header_mac("s", &h), header_mac("s", &other));
    }

    #[test]
    fn destination_secrets_differ_by_method_and_path() {
        let a = destination_secret("s3cret-s3cret-s3cret", "POST", "/echo/x");
        assert_eq!(a.len(), 44);
        assert_ne!(a, "s3cret-s3cret-s3cret");
        assert_ne!(
            a,
            destination_secret("s3cret-s3cret-s3cret", "POST", "/charge")
        );
        assert_ne!(
            a,
            destination_secret("s3cret-s3cret-s3cret", "PUT", "/echo/x")
        );
        assert_ne!(
            a,
            destination_secret("other-secret-other", "POST", "/echo/x")
        );
        assert_eq!(
            a,
            destination_secret("s3cret-s3cret-s3cret", "POST", "/echo/x")
        );
    }

    /// The destination secret depends on the method and the path, and is
    /// what the HMAC of the documented string gives.
    #[test]
    fn the_destination_secret_is_bound_to_method_and_path() {
        let a = destination_secret("s", "POST", "/hooks/a");
        assert_ne!(a, destination_secret("s", "POST", "/hooks/b"));
        assert_ne!(a, destination_secret("s", "PUT", "/hooks/a"));
        assert_ne!(a, destination_secret("t", "POST", "/hooks/a"));
        assert_eq!(
            a,
            B64URL.encode(hmac("s", &[b"switchyard-destination\nPOST /hooks/a"]))
        );
    }

    #[test]
    fn hub_signatures_are_hex_in_either_case() {
        let hex: String = hmac("s", &[b"{}"])
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(verify_hub("s", b"{}", &hex));
        assert!(verify_hub("s", b"{}", &hex.to_ascii_uppercase()));
        assert!(!verify_hub("t", b"{}", &hex));
        assert!(!verify_hub("s", b"{} ", &hex));
        assert!(!verify_hub("s", b"{}", ""));
    }
}
