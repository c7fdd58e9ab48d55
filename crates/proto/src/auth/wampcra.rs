//! WAMP-CRA (spec: `advanced/authentication_cra.md`), the computations both
//! ends share: the challenge string and the CHALLENGE `Extra`, the
//! HMAC-SHA256 signature of a challenge, PBKDF2-HMAC-SHA256 salted keys (as
//! Autobahn's `auth.derive_key`: the key is the base64 text, and that text,
//! not the bytes it encodes, is the HMAC key), the constant-time check of
//! an AUTHENTICATE signature, and a client's answer to a CHALLENGE.
//!
//! Why here: the router (`switchyard-router`'s `auth`) and the client
//! (`switchyard-client`'s `auth`) each had a copy; both depend on this
//! crate and neither on the other. No I/O, no randomness, no clock: the
//! router passes its nonce and timestamp in.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::value::{Dict, Value};

type HmacSha256 = Hmac<Sha256>;

/// PBKDF2 iterations when a CHALLENGE has a salt but no `iterations`
/// (Autobahn's default).
pub const DEFAULT_ITERATIONS: u32 = 1000;
/// Derived key length in bytes when a CHALLENGE has a salt but no `keylen`
/// (Autobahn's default).
pub const DEFAULT_KEYLEN: u32 = 32;
/// The most PBKDF2 iterations [`respond`] accepts from a CHALLENGE (a
/// router cannot make a client spin for minutes).
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// The longest derived key [`respond`] accepts from a CHALLENGE, in bytes.
pub const MAX_KEYLEN: u32 = 1024;

/// The PBKDF2-HMAC-SHA256 key derived from `secret` and `salt` (both as
/// UTF-8), as base64 text: what Autobahn's `auth.derive_key` returns, and
/// what [`sign`] then uses as its key. The raw key bytes are wiped.
pub fn derive_key(secret: &str, salt: &str, iterations: u32, keylen: usize) -> String {
    let mut key = Zeroizing::new(vec![0u8; keylen]);
    pbkdf2::pbkdf2_hmac::<Sha256>(secret.as_bytes(), salt.as_bytes(), iterations, &mut key);
    B64.encode(&*key)
}

/// HMAC-SHA256(`key`, `challenge`): the signature of `challenge` with a
/// secret (or a [`derive_key`] key), as bytes.
pub fn sign(key: &str, challenge: &str) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key.as_bytes()) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    mac.update(challenge.as_bytes());
    mac.finalize().into_bytes().into()
}

/// [`sign`] as base64: what a client sends in AUTHENTICATE (Autobahn's
/// `auth.compute_wcs`).
pub fn signature(key: &str, challenge: &str) -> String {
    B64.encode(sign(key, challenge))
}

/// Whether the base64 `signature` of an AUTHENTICATE (surrounding
/// whitespace ignored) is `expected`, in constant time.
pub fn verify(signature: &str, expected: &[u8; 32]) -> bool {
    match B64.decode(signature.trim()) {
        Ok(sig) if sig.len() == 32 => sig.ct_eq(expected).into(),
        _ => false,
    }
}

/// The `challenge` string of a CHALLENGE: a JSON object with `authid`,
/// `authmethod` (`wampcra`), `authprovider`, `nonce`, `timestamp` (ISO 8601
/// UTC) and `session`. The spec also lists `authrole`; Switchyard leaves it
/// out for every authid, so that a challenge does not tell a known authid
/// from an unknown one.
pub fn challenge(
    authid: &str,
    authprovider: &str,
    nonce: &str,
    timestamp: &str,
    session: u64,
) -> String {
    serde_json::json!({
        "authid": authid,
        "authmethod": "wampcra",
        "authprovider": authprovider,
        "nonce": nonce,
        "timestamp": timestamp,
        "session": session,
    })
    .to_string()
}

/// The PBKDF2 parameters of a salted secret, as a CHALLENGE carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salt {
    /// The salt.
    pub salt: String,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// Derived key length in bytes.
    pub keylen: u32,
}

/// The `Extra` of a CHALLENGE: the `challenge` string, and for a salted
/// secret its `salt`, `keylen` and `iterations`.
pub fn challenge_extra(challenge: &str, salt: Option<Salt>) -> Dict {
    let mut extra = Dict::new().with("challenge", challenge);
    if let Some(s) = salt {
        extra.insert("salt", s.salt);
        extra.insert("keylen", u64::from(s.keylen));
        extra.insert("iterations", u64::from(s.iterations));
    }
    extra
}

/// A client's AUTHENTICATE signature for a CHALLENGE with `extra`, given its
/// `secret`: HMAC of the `challenge` with the secret, or, when `extra` has a
/// `salt`, with the key derived from the secret ([`derive_key`], with the
/// challenge's `iterations` and `keylen`, or Autobahn's defaults). The
/// error says what is wrong with `extra`, never the secret.
pub fn respond(secret: &str, extra: &Dict) -> Result<String, String> {
    let challenge = extra
        .get_str("challenge")
        .ok_or("the WAMP-CRA challenge has no \"challenge\" string")?;
    match extra.get("salt") {
        None | Some(Value::Null) => Ok(signature(secret, challenge)),
        Some(Value::Str(salt)) => {
            let number = |key: &str, default: u32, max: u32| match extra.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::UInt(n)) if (1..=u64::from(max)).contains(n) => {
                    Ok(u32::try_from(*n).unwrap_or(max))
                }
                Some(other) => Err(format!(
                    "the WAMP-CRA challenge has a bad \"{key}\": {other:?}"
                )),
            };
            let iterations = number("iterations", DEFAULT_ITERATIONS, MAX_ITERATIONS)?;
            let keylen = number("keylen", DEFAULT_KEYLEN, MAX_KEYLEN)?;
            let key = Zeroizing::new(derive_key(secret, salt, iterations, keylen as usize));
            Ok(signature(&key, challenge))
        }
        Some(other) => Err(format!(
            "the WAMP-CRA challenge has a salt that is a {}, not a string",
            other.type_name()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Autobahn|Python 26.x: auth.derive_key(secret, salt, iterations,
    // keylen) and auth.compute_wcs(key, challenge).
    const CHALLENGE: &str = r#"{"authid":"peter","authmethod":"wampcra","authprovider":"static","nonce":"00112233445566778899aabbccddeeff","session":3251278072152162,"timestamp":"2014-06-22T16:36:25.448Z"}"#;

    #[test]
    fn matches_autobahn() {
        let key = derive_key("secret", "salt123", 100, 16);
        assert_eq!(key, "EX1Y3Q9BMM2oGLxsGqDgFQ==");
        assert_eq!(
            signature(&key, "{\"nonce\":\"x\"}"),
            "gzQF/exlRHCK26IL/TezaW/b2674cgg/9Hjc3RD2IYM="
        );
        assert_eq!(
            signature("secret", "challenge"),
            "oeUF6Wxqoezggrue+wbIDxKRPSF6esKwizR2MHh9HaA="
        );
        // A non-ASCII password (UTF-8) and the defaults' keylen.
        let key = derive_key("p\u{e4}ssword", "NaCl", 1000, 32);
        assert_eq!(key, "tWtEdROva8NPWM/zfqtL2dnKF9zg/yXMydQRlDv7Jus=");
        assert_eq!(
            signature(&key, CHALLENGE),
            "dH1+83aaUivefxKhX9d8ujdfWN2Fk81XUNwNWjV0tpY="
        );
    }

    // The primitives against their RFCs (Python's hashlib/hmac agree).
    #[test]
    fn matches_the_rfcs() {
        // RFC 7914 section 11: PBKDF2-HMAC-SHA256("passwd", "salt", 1, 64).
        assert_eq!(
            derive_key("passwd", "salt", 1, 64),
            "VawEblbjCJ/sFpHCJUS2BflBhSFt3gRl5oudV8INrLxJypzM8Xm2RZkWZLOdd+8xfHG4RbHjC9UJESBB06GXgw=="
        );
        // RFC 4231 test case 2.
        let mac = sign("Jefe", "what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn challenge_string_is_the_routers() {
        // serde_json's default map orders the keys; no authrole (see above).
        assert_eq!(
            challenge(
                "peter",
                "static",
                "00112233445566778899aabbccddeeff",
                "2014-06-22T16:36:25.448Z",
                3251278072152162
            ),
            CHALLENGE
        );
        // Quotes in an authid stay inside their string.
        let c = challenge("a\"b", "static", "n", "t", 1);
        let parsed: serde_json::Value = serde_json::from_str(&c).expect("JSON");
        assert_eq!(parsed["authid"], "a\"b");
    }

    #[test]
    fn verify_checks_the_signature() {
        let expected = sign("key", CHALLENGE);
        assert!(verify(&signature("key", CHALLENGE), &expected));
        assert!(verify(
            &format!(" {}\n", signature("key", CHALLENGE)),
            &expected
        ));
        assert!(!verify(&signature("other", CHALLENGE), &expected));
        assert!(!verify(&B64.encode([0u8; 32]), &expected));
        assert!(!verify(&B64.encode(&expected[..31]), &expected));
        assert!(!verify("not base64!", &expected));
        assert!(!verify("", &expected));
    }

    #[test]
    fn respond_answers_what_the_router_checks() {
        // Unsalted: the secret is the key.
        let extra = challenge_extra(CHALLENGE, None);
        assert_eq!(extra.get_str("challenge"), Some(CHALLENGE));
        assert_eq!(extra.0.len(), 1);
        let sig = respond("secret", &extra).expect("signs");
        assert!(verify(&sig, &sign("secret", CHALLENGE)));
        // Salted: the router stores the derived key, the client the password.
        let salt = Salt {
            salt: "NaCl".into(),
            iterations: 1000,
            keylen: 32,
        };
        let extra = challenge_extra(CHALLENGE, Some(salt));
        let keys: Vec<&str> = extra.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["challenge", "salt", "keylen", "iterations"]);
        let stored = derive_key("p\u{e4}ssword", "NaCl", 1000, 32);
        let sig = respond("p\u{e4}ssword", &extra).expect("signs");
        assert_eq!(sig, "dH1+83aaUivefxKhX9d8ujdfWN2Fk81XUNwNWjV0tpY=");
        assert!(verify(&sig, &sign(&stored, CHALLENGE)));
        // Autobahn's defaults when the salt comes alone.
        let bare = Dict::new()
            .with("challenge", CHALLENGE)
            .with("salt", "NaCl");
        assert_eq!(respond("p\u{e4}ssword", &bare).as_deref(), Ok(sig.as_str()));
    }

    #[test]
    fn respond_refuses_bad_challenges() {
        assert!(respond("s", &Dict::new()).is_err());
        assert!(respond("s", &Dict::new().with("challenge", 5u64)).is_err());
        let c = || Dict::new().with("challenge", "c").with("salt", "s");
        for (key, bad) in [
            ("keylen", Value::UInt(0)),
            ("keylen", Value::UInt(u64::from(MAX_KEYLEN) + 1)),
            ("iterations", Value::UInt(0)),
            ("iterations", Value::UInt(u64::from(MAX_ITERATIONS) + 1)),
            ("iterations", Value::Str("1000".into())),
        ] {
            let e = respond("s", &c().with(key, bad.clone()));
            assert!(
                e.as_deref().is_err_and(|e| e.contains(key)),
                "{key}={bad:?}: {e:?}"
            );
        }
        let e = respond("s", &Dict::new().with("challenge", "c").with("salt", 1u64));
        assert!(e.is_err_and(|e| e.contains("salt")));
        // The secret never shows in an error.
        let e = respond("hunter2", &c().with("keylen", 0u64));
        assert!(e.is_err_and(|e| !e.contains("hunter2")));
    }
}
