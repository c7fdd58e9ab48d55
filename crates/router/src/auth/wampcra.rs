//! WAMP-CRA (spec "Challenge Response Authentication"), the router's side:
//! the decoy challenges of unknown authids. The computations (the challenge
//! string and `Extra`, HMAC-SHA256 signatures, PBKDF2-salted keys, the
//! constant-time check) are [`switchyard_proto::auth::wampcra`], shared
//! with the client; `sign`, `check` and `derive_key` are re-exported here
//! under their old names for the router, the `keygen` command and tests.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use switchyard_proto::auth::wampcra as cra;

pub use cra::{sign, verify as check};

type HmacSha256 = Hmac<Sha256>;

/// The PBKDF2-HMAC-SHA256 key derived from `secret` and `salt`, as base64
/// text ([`cra::derive_key`] with the configuration's `u32` key length).
pub fn derive_key(secret: &str, salt: &str, iterations: u32, keylen: u32) -> String {
    cra::derive_key(secret, salt, iterations, keylen as usize)
}

/// What an unknown authid's CHALLENGE looks like, so that it cannot be told
/// from a known one's: the salt, iterations and keylen of the realm's usual
/// principal, with a fake salt that is a keyed hash of the authid (the same
/// on every attempt, different per authid, unpredictable without the key).
pub struct Decoy {
    /// HMAC key of the fake salts and of the decoy signature.
    key: [u8; 32],
    /// If most principals are salted: their usual iterations and keylen,
    /// and the shape of their salts.
    salted: Option<(u32, u32, SaltShape)>,
}

/// The shape of the realm's salts, position by position: their usual
/// length; at each position either a character that every salt has there
/// (a prefix, a separator) or the smallest usual alphabet that holds every
/// character the salts have there (lower-case hex for hex salts, `[a-z0-9]`
/// for lower-case words...). Every real salt of that length fits the shape,
/// so a fake salt cannot be told from a real one by its characters.
struct SaltShape {
    positions: Vec<Position>,
}

enum Position {
    Fixed(u8),
    OneOf(Vec<u8>),
}

const HEX_LOWER: &[u8] = b"0123456789abcdef";
const HEX_UPPER: &[u8] = b"0123456789ABCDEF";
const ALNUM_LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const ALNUM_UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The smallest usual alphabet holding all of `chars` (never digits only:
/// a digit in a hex salt is as likely a letter elsewhere), else the
/// alphanumerics and those characters.
fn alphabet_of(chars: &[u8]) -> Vec<u8> {
    for a in [
        HEX_LOWER,
        HEX_UPPER,
        ALNUM_LOWER,
        ALNUM_UPPER,
        ALNUM,
        BASE64,
        BASE64URL,
    ] {
        if chars.iter().all(|c| a.contains(c)) {
            return a.to_vec();
        }
    }
    let mut a = ALNUM.to_vec();
    a.extend(chars.iter().filter(|c| !c.is_ascii_alphanumeric()));
    a.sort_unstable();
    a.dedup();
    a
}

impl SaltShape {
    fn of(salts: &[&str]) -> Option<Self> {
        let len = most_common(salts.iter().map(|s| s.len()))?.min(128);
        let same: Vec<&[u8]> = salts
            .iter()
            .map(|s| s.as_bytes())
            .filter(|s| s.len() == len)
            .collect();
        let positions = (0..len)
            .map(|i| {
                let mut at: Vec<u8> = same.iter().map(|s| s[i]).collect();
                at.sort_unstable();
                at.dedup();
                match at.as_slice() {
                    // Every salt has it (with several salts), or a single
                    // salt has a separator there.
                    [c] if same.len() > 1 || !c.is_ascii_alphanumeric() => Position::Fixed(*c),
                    _ => Position::OneOf(alphabet_of(&at)),
                }
            })
            .collect();
        Some(SaltShape { positions })
    }
}

/// The most frequent value (the first seen among equals).
fn most_common<T: PartialEq + Copy>(values: impl Iterator<Item = T>) -> Option<T> {
    let mut counts: Vec<(T, usize)> = Vec::new();
    for v in values {
        match counts.iter_mut().find(|(x, _)| *x == v) {
            Some((_, n)) => *n += 1,
            None => counts.push((v, 1)),
        }
    }
    counts
        .iter()
        .fold(None, |best: Option<(T, usize)>, &(v, n)| match best {
            Some((_, m)) if m >= n => best,
            _ => Some((v, n)),
        })
        .map(|(v, _)| v)
}

impl Decoy {
    /// The decoy of a realm with these principals. The key is derived from
    /// the principals' secrets (so the fake salts stay the same across
    /// restarts while the configuration does, as real salts do); a realm
    /// without principals gets a random one.
    pub fn new(principals: &[super::CraPrincipal]) -> Self {
        let key: [u8; 32] = if principals.is_empty() {
            rand::random()
        } else {
            let mut h = Sha256::new();
            h.update(b"switchyard wampcra decoy v1\0");
            for p in principals {
                for part in [&p.authid, &p.secret, p.salt.as_deref().unwrap_or("")] {
                    h.update((part.len() as u64).to_be_bytes());
                    h.update(part.as_bytes());
                }
            }
            h.finalize().into()
        };
        let salted: Vec<_> = principals
            .iter()
            .filter_map(|p| p.salt.as_deref().map(|s| (p, s)))
            .collect();
        let salted = if !salted.is_empty() && salted.len() * 2 >= principals.len() {
            most_common(salted.iter().map(|(p, _)| (p.iterations, p.keylen))).and_then(
                |(iterations, keylen)| {
                    let salts: Vec<&str> = salted.iter().map(|(_, s)| *s).collect();
                    Some((iterations, keylen, SaltShape::of(&salts)?))
                },
            )
        } else {
            None
        };
        Decoy { key, salted }
    }

    /// `(salt, iterations, keylen)` for an unknown `authid`, if the realm's
    /// usual challenge has a salt.
    pub fn salt(&self, authid: &str) -> Option<(String, u32, u32)> {
        let (iterations, keylen, shape) = self.salted.as_ref()?;
        let mut bytes = Vec::with_capacity(shape.positions.len());
        let mut block = 0u32;
        while bytes.len() < shape.positions.len() {
            let mut mac = HmacSha256::new_from_slice(&self.key).ok()?;
            mac.update(b"salt\0");
            mac.update(&block.to_be_bytes());
            mac.update(authid.as_bytes());
            bytes.extend(mac.finalize().into_bytes());
            block += 1;
        }
        let salt = shape
            .positions
            .iter()
            .zip(bytes)
            .map(|(p, b)| {
                char::from(match p {
                    Position::Fixed(c) => *c,
                    Position::OneOf(a) => a[usize::from(b) % a.len()],
                })
            })
            .collect();
        Some((salt, *iterations, *keylen))
    }

    /// A signature nobody can produce, computed as a real one is (so that
    /// an unknown authid costs the router the same work).
    pub fn expected(&self, challenge: &str) -> [u8; 32] {
        sign(&hex::encode(self.key), challenge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(authid: &str, salt: Option<&str>, iterations: u32) -> crate::auth::CraPrincipal {
        crate::auth::CraPrincipal {
            authid: authid.into(),
            secret: format!("{authid}-secret"),
            role: "user".into(),
            salt: salt.map(str::to_string),
            iterations,
            keylen: 32,
        }
    }

    #[test]
    fn decoy_salts_look_like_the_realms_and_are_stable() {
        let salted = [
            principal("a", Some("0123456789abcdef"), 1000),
            principal("b", Some("fedcba9876543210"), 1000),
            principal("c", Some("00112233445566778899"), 500),
            principal("d", None, 1000),
        ];
        let d = Decoy::new(&salted);
        let (s1, it, kl) = d.salt("mallory").expect("salted realm");
        assert_eq!((it, kl, s1.len()), (1000, 32, 16));
        assert!(s1.bytes().all(|b| b.is_ascii_hexdigit()), "{s1}");
        assert_eq!(d.salt("mallory").map(|s| s.0), Some(s1.clone()));
        assert_eq!(
            Decoy::new(&salted).salt("mallory").map(|s| s.0),
            Some(s1.clone())
        );
        assert_ne!(d.salt("mallory2").map(|s| s.0), Some(s1));
        // mostly unsalted: no salt, like theirs
        let plain = [principal("a", None, 1000), principal("b", None, 1000)];
        assert!(Decoy::new(&plain).salt("x").is_none());
        // other salts: their length, their fixed characters, alphanumerics
        let words = [
            principal("a", Some("salt-12_"), 10),
            principal("b", Some("tlas-34_"), 10),
        ];
        let (s, it, _) = Decoy::new(&words).salt("x").expect("salted");
        assert_eq!((s.len(), it), (8, 10));
        assert_eq!((&s[4..5], &s[7..]), ("-", "_"), "{s}");
        assert!(s[..4].bytes().all(|b| b.is_ascii_alphanumeric()), "{s}");
        // position by position: lower-case words, then lower-case hex
        let words = [
            principal("a", Some("salt-7fffa0ca"), 10),
            principal("b", Some("tlas-a0cab5dc"), 10),
        ];
        let d = Decoy::new(&words);
        for who in ["x", "y", "z", "mallory", "nobody"] {
            let (s, _, _) = d.salt(who).expect("salted");
            assert_eq!(&s[4..5], "-", "{s}");
            assert!(s[..4].bytes().all(|b| ALNUM_LOWER.contains(&b)), "{s}");
            assert!(s[5..].bytes().all(|b| HEX_LOWER.contains(&b)), "{s}");
        }
        // a single salted principal (a UUID salt): its separators, hex elsewhere
        let one = [principal(
            "a",
            Some("3f2b8c1e-9d4a-4e6b-8f00-1a2b3c4d5e6f"),
            10,
        )];
        let (s, _, _) = Decoy::new(&one).salt("x").expect("salted");
        for (i, c) in s.char_indices() {
            if [8, 13, 18, 23].contains(&i) {
                assert_eq!(c, '-', "{s}");
            } else {
                assert!(c.is_ascii_hexdigit() && !c.is_ascii_uppercase(), "{s}");
            }
        }
    }

    // The computations are tested in switchyard-proto; here: the names the
    // router, `switchyard keygen` and the tests use still mean the same.
    #[test]
    fn reexports_match_autobahn() {
        let key = derive_key("secret", "salt123", 100, 16);
        assert_eq!(key, "EX1Y3Q9BMM2oGLxsGqDgFQ==");
        let sig = sign(&key, "{\"nonce\":\"x\"}");
        assert!(check("gzQF/exlRHCK26IL/TezaW/b2674cgg/9Hjc3RD2IYM=", &sig));
        assert!(!check("not base64!", &sig));
    }
}
