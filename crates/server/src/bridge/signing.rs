//! Request signing compatible with Crossbar.io's HTTP bridge: query
//! parameters `key`, `timestamp` (`YYYY-MM-DDTHH:MM:SS.mmmZ`), `seq`,
//! `nonce` and `signature`, where the signature is the URL-safe base64
//! (padded) of HMAC-SHA256(secret, key ‖ timestamp ‖ seq ‖ nonce ‖ body).
//! Unlike Crossbar: constant-time comparison, a timestamp window, and each
//! nonce accepted once inside that window (replay protection).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::URL_SAFE as B64URL;
use base64::Engine;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The signature of a request, as the client computes it.
pub fn sign(
    secret: &str,
    key: &str,
    timestamp: &str,
    seq: &str,
    nonce: &str,
    body: &[u8],
) -> String {
    let mut mac = match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(), // HMAC takes keys of any length
    };
    for part in [
        key.as_bytes(),
        timestamp.as_bytes(),
        seq.as_bytes(),
        nonce.as_bytes(),
        body,
    ] {
        mac.update(part);
    }
    B64URL.encode(mac.finalize().into_bytes())
}

/// Whether `given` is the right signature, in constant time.
pub fn verify(
    secret: &str,
    key: &str,
    timestamp: &str,
    seq: &str,
    nonce: &str,
    body: &[u8],
    given: &str,
) -> bool {
    let expected = sign(secret, key, timestamp, seq, nonce, body);
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
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

/// Nonces seen inside the timestamp window, per key.
#[derive(Default)]
pub struct Nonces {
    seen: Mutex<HashMap<(String, String), Instant>>,
}

impl Nonces {
    /// Records (`key`, `nonce`); false if it was already used inside `window`.
    pub fn first_use(&self, key: &str, nonce: &str, window: Duration) -> bool {
        let mut seen = self.seen.lock();
        let now = Instant::now();
        // Entries older than twice the window cannot be replayed anyway:
        // their timestamps would be refused.
        if seen.len() > 10_000 {
            seen.retain(|_, at| now.duration_since(*at) < window * 2);
        }
        let k = (key.to_string(), nonce.to_string());
        match seen.get(&k) {
            Some(at) if now.duration_since(*at) < window * 2 => false,
            _ => {
                seen.insert(k, now);
                true
            }
        }
    }
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
        assert!(verify(
            "foobar",
            "bazapp",
            "2026-01-01T00:00:00.000Z",
            "1",
            "12345",
            body,
            &sig
        ));
        assert!(!verify(
            "foobar",
            "bazapp",
            "2026-01-01T00:00:00.000Z",
            "2",
            "12345",
            body,
            &sig
        ));
        assert!(!verify(
            "foobaz",
            "bazapp",
            "2026-01-01T00:00:00.000Z",
            "1",
            "12345",
            body,
            &sig
        ));
        assert!(parse_timestamp("2026-01-01T00:00:00.000Z").is_some());
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn a_nonce_is_accepted_once() {
        let n = Nonces::default();
        let w = Duration::from_secs(300);
        assert!(n.first_use("k", "1", w));
        assert!(!n.first_use("k", "1", w));
        assert!(n.first_use("other", "1", w));
    }
}
