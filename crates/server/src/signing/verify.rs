//! Checking a signed request that comes in (the bridge's `/publish`,
//! `/call`, `/queues/{name}/jobs` and webhooks): which MAC it must carry
//! ([`Scheme`], [`expected_mac`]), its `seq` and `nonce` ([`check_counter`]),
//! the comparison in constant time ([`matches`]), its timestamp
//! ([`parse_timestamp`], [`skew`]) and how long the replay cache must
//! remember it ([`remember_for`]), and where the parameters come from: the
//! query ([`query_params`]) or the `X-Authentication` header
//! ([`parse_header`]). The caller (`bridge::auth`) turns each refusal into
//! its HTTP answer.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE as B64URL;
use base64::Engine;
use subtle::ConstantTimeEq;

use super::schemes::{bound_mac, crossbar_mac, Bound, Mac32};

/// The most digits `seq` and `nonce` may have (a u64 has 20).
pub const MAX_COUNTER_DIGITS: usize = 20;

/// The query parameters of a signed request.
pub const SIGNING_PARAMS: [&str; 5] = ["key", "timestamp", "seq", "nonce", "signature"];

/// Which signature a request must carry.
pub enum Scheme<'a> {
    /// Crossbar's: key ‖ timestamp ‖ seq ‖ nonce ‖ body.
    Crossbar,
    /// Ours: [`super::schemes::canonical`], binding the method, the path,
    /// the `Idempotency-Key` header and the body. The query may hold only
    /// the signing parameters.
    Bound {
        method: &'a str,
        path: &'a str,
        idempotency_key: Option<&'a str>,
    },
}

/// The signing parameters of a request (the `signature` aside).
pub struct Params<'a> {
    pub key: &'a str,
    pub timestamp: &'a str,
    pub seq: &'a str,
    pub nonce: &'a str,
}

/// The MAC a request signed with `secret` under `scheme` must carry.
pub fn expected_mac(secret: &str, scheme: &Scheme<'_>, p: &Params<'_>, body: &[u8]) -> Mac32 {
    match *scheme {
        Scheme::Crossbar => crossbar_mac(secret, p.key, p.timestamp, p.seq, p.nonce, body),
        Scheme::Bound {
            method,
            path,
            idempotency_key,
        } => bound_mac(
            secret,
            &Bound {
                method,
                path,
                key: p.key,
                timestamp: p.timestamp,
                seq: p.seq,
                nonce: p.nonce,
                idempotency_key,
                body,
            },
        ),
    }
}

/// The fields of an `X-Authentication` header.
#[derive(Debug, PartialEq, Eq)]
pub struct HeaderParams {
    pub key: String,
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
}

/// The names an `X-Authentication` header holds, each once.
pub const HEADER_FIELDS: [&str; 4] = ["key", "timestamp", "nonce", "signature"];

/// Parses `key=<key>, timestamp=<ts>, nonce=<n>, signature=<sig>`: fields
/// separated by commas, spaces around them ignored, each value taken up to
/// the next comma with `%XX` escapes decoded (a key holding a comma sends
/// it as `%2C`). Each field exactly once, no other.
pub fn parse_header(value: &str) -> Result<HeaderParams, String> {
    let mut found: [Option<String>; 4] = Default::default();
    for part in value.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((name, v)) = part.split_once('=') else {
            return Err(format!("\"{part}\" is not name=value"));
        };
        let name = name.trim();
        let Some(i) = HEADER_FIELDS.iter().position(|f| *f == name) else {
            return Err(format!(
                "unknown field \"{name}\" (fields: {})",
                HEADER_FIELDS.join(", ")
            ));
        };
        if found[i].is_some() {
            return Err(format!("field {name} is given twice"));
        }
        let v =
            percent_decode(v.trim(), false).ok_or_else(|| format!("field {name}: bad %-escape"))?;
        found[i] = Some(v);
    }
    let [key, timestamp, nonce, signature] = found;
    let need = |v: Option<String>, name: &str| v.ok_or_else(|| format!("field {name} is missing"));
    Ok(HeaderParams {
        key: need(key, "key")?,
        timestamp: need(timestamp, "timestamp")?,
        nonce: need(nonce, "nonce")?,
        signature: need(signature, "signature")?,
    })
}

/// The decoded query parameters of a request; None when one is given twice
/// (which of them would count is ambiguous) or does not decode.
pub fn query_params(query: &str) -> Option<HashMap<String, String>> {
    let mut out = HashMap::new();
    for p in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        if out
            .insert(percent_decode(k, true)?, percent_decode(v, true)?)
            .is_some()
        {
            return None;
        }
    }
    Some(out)
}

/// Decodes `%XX` escapes, and `+` as a space when `plus_is_space` (a query
/// component; an `X-Authentication` field keeps its `+`).
fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                // Two hex digits, nothing else (`from_str_radix` would also
                // take a sign).
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
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

/// How long the replay cache must remember a signature whose timestamp is
/// `ts` (inside `window`): until the timestamp leaves the window, and a
/// second more, for rounding.
pub fn remember_for(ts: SystemTime, window: Duration) -> Duration {
    let left = match SystemTime::now().duration_since(ts) {
        Ok(age) => window.saturating_sub(age),
        Err(ahead) => window + ahead.duration(),
    };
    left + Duration::from_secs(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        let p = query_params(
            "key=baz%20app&timestamp=2026-01-01T00%3A00%3A00.000Z&signature=a%2Bb%3D&x",
        )
        .expect("valid");
        assert_eq!(p.get("key").map(String::as_str), Some("baz app"));
        assert_eq!(
            p.get("timestamp").map(String::as_str),
            Some("2026-01-01T00:00:00.000Z")
        );
        assert_eq!(p.get("signature").map(String::as_str), Some("a+b="));
        assert_eq!(p.get("x").map(String::as_str), Some(""));
        assert!(percent_decode("%zz", true).is_none());
        // An escape is `%` and two hex digits: `u8::from_str_radix` alone
        // also took a sign, so "%+A" was a newline (found by the fuzz target
        // bridge_signature, fuzz/: a proxy would read another query).
        for bad in ["%+A", "%-0", "%+", "%A", "% A"] {
            assert!(percent_decode(bad, true).is_none(), "{bad}");
            assert!(percent_decode(bad, false).is_none(), "{bad}");
        }
        assert!(query_params("timestamp=2026-01-01T00%+A00").is_none());
        assert_eq!(percent_decode("%2b%2B+", true).as_deref(), Some("++ "));
        assert!(query_params("nonce=1&nonce=2").is_none());
        assert!(query_params("nonce=1&non%63e=2").is_none());
    }

    #[test]
    fn headers_parse_strictly() {
        let h =
            parse_header("key=a%2Cb, timestamp=2026-01-01T00:00:00.000Z,nonce=7 , signature=x_y=")
                .expect("valid");
        assert_eq!(h.key, "a,b");
        assert_eq!(h.timestamp, "2026-01-01T00:00:00.000Z");
        assert_eq!(h.nonce, "7");
        assert_eq!(h.signature, "x_y=");
        for bad in [
            "key=a, timestamp=t, nonce=1",
            "key=a, key=b, timestamp=t, nonce=1, signature=s",
            "key=a, timestamp=t, nonce=1, signature=s, seq=1",
            "key, timestamp=t, nonce=1, signature=s",
            "key=%zz, timestamp=t, nonce=1, signature=s",
        ] {
            assert!(parse_header(bad).is_err(), "{bad}");
        }
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
    fn the_scheme_chooses_the_mac() {
        let p = Params {
            key: "k",
            timestamp: "2026-01-01T00:00:00.000Z",
            seq: "1",
            nonce: "2",
        };
        let crossbar = expected_mac("s", &Scheme::Crossbar, &p, b"{}");
        assert_eq!(
            crossbar,
            crossbar_mac("s", "k", "2026-01-01T00:00:00.000Z", "1", "2", b"{}")
        );
        let bound = |path| {
            expected_mac(
                "s",
                &Scheme::Bound {
                    method: "POST",
                    path,
                    idempotency_key: None,
                },
                &p,
                b"{}",
            )
        };
        assert_ne!(bound("/queues/a/jobs"), crossbar);
        assert_ne!(bound("/queues/a/jobs"), bound("/queues/b/jobs"));
    }

    #[test]
    fn a_signature_is_remembered_while_its_timestamp_is_in_the_window() {
        let w = Duration::from_secs(300);
        let now = SystemTime::now();
        let old = remember_for(now - Duration::from_secs(100), w);
        assert!(old <= Duration::from_secs(201) && old >= Duration::from_secs(199));
        let ahead = remember_for(now + Duration::from_secs(100), w);
        assert!(ahead >= Duration::from_secs(400) && ahead <= Duration::from_secs(402));
        assert_eq!(
            remember_for(now - Duration::from_secs(1000), w),
            Duration::from_secs(1)
        );
        assert!(skew(now - Duration::from_secs(5)) >= Duration::from_secs(5));
        assert!(skew(now + Duration::from_secs(5)) >= Duration::from_secs(4));
    }
}
