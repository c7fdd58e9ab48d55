//! WAMP-CRA (spec "Challenge Response Authentication"): HMAC-SHA256 over a
//! JSON challenge, with optional PBKDF2-salted secrets.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The PBKDF2-HMAC-SHA256 key derived from `secret` and `salt`, as base64
/// text: what Autobahn's `auth.derive_key` returns and what the HMAC then
/// uses as its key (the text, not the bytes it encodes).
pub fn derive_key(secret: &str, salt: &str, iterations: u32, keylen: u32) -> String {
    let mut key = vec![0u8; keylen as usize];
    pbkdf2::pbkdf2_hmac::<Sha256>(secret.as_bytes(), salt.as_bytes(), iterations, &mut key);
    B64.encode(key)
}

/// The signature a client must return for `challenge` with `key`.
pub fn sign(key: &str, challenge: &str) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key.as_bytes()) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    mac.update(challenge.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Whether the client's base64 `signature` is `expected`, in constant time.
pub fn check(signature: &str, expected: &[u8; 32]) -> bool {
    match B64.decode(signature.trim()) {
        Ok(sig) if sig.len() == 32 => sig.ct_eq(expected).into(),
        _ => false,
    }
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

/// The shape of the realm's salts: their usual length, the characters that
/// are the same in all of them (a prefix, separators), and the alphabet of
/// the others.
struct SaltShape {
    template: Vec<Option<u8>>,
    alphabet: Vec<u8>,
}

const HEX: &[u8] = b"0123456789abcdef";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

impl SaltShape {
    fn of(salts: &[&str]) -> Option<Self> {
        let len = most_common(salts.iter().map(|s| s.len()))?.min(128);
        let same: Vec<&[u8]> = salts
            .iter()
            .map(|s| s.as_bytes())
            .filter(|s| s.len() == len)
            .collect();
        let template: Vec<Option<u8>> = (0..len)
            .map(|i| {
                let c = same.first().map(|s| s[i])?;
                (same.len() > 1 && same.iter().all(|s| s[i] == c)).then_some(c)
            })
            .collect();
        let varying: Vec<u8> = same
            .iter()
            .flat_map(|s| s.iter().zip(&template))
            .filter(|(_, t)| t.is_none())
            .map(|(c, _)| *c)
            .collect();
        let alphabet = if varying.iter().all(|c| HEX.contains(c)) {
            HEX.to_vec()
        } else {
            let mut a = ALNUM.to_vec();
            a.extend(varying.iter().filter(|c| !c.is_ascii_alphanumeric()));
            a.sort_unstable();
            a.dedup();
            a
        };
        Some(SaltShape { template, alphabet })
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
        let mut bytes = Vec::with_capacity(shape.template.len());
        let mut block = 0u32;
        while bytes.len() < shape.template.len() {
            let mut mac = HmacSha256::new_from_slice(&self.key).ok()?;
            mac.update(b"salt\0");
            mac.update(&block.to_be_bytes());
            mac.update(authid.as_bytes());
            bytes.extend(mac.finalize().into_bytes());
            block += 1;
        }
        let salt = shape
            .template
            .iter()
            .zip(bytes)
            .map(|(t, b)| {
                char::from(t.unwrap_or(shape.alphabet[usize::from(b) % shape.alphabet.len()]))
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
    }

    #[test]
    fn matches_autobahn() {
        // autobahn.wamp.auth: derive_key("secret", "salt123", 100, 16)
        // == b"NMvYyxmdkkZhs4MyNBUpXg==" ... checked through the
        // interop tests; here: shape and round trip.
        let key = derive_key("secret", "salt123", 100, 16);
        assert_eq!(B64.decode(&key).map(|k| k.len()).ok(), Some(16));
        let sig = sign(&key, "{\"nonce\":\"x\"}");
        assert!(check(&B64.encode(sig), &sig));
        assert!(!check(&B64.encode([0u8; 32]), &sig));
        assert!(!check("not base64!", &sig));
    }
}
