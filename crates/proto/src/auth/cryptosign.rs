//! WAMP-Cryptosign (spec "Cryptosign-based Authentication"), the
//! computations both ends share: a public key from its hex text, a client's
//! answer to a CHALLENGE (the hex of the 64-byte Ed25519 signature of the
//! 32-byte challenge, followed by the challenge, as Autobahn sends it), and
//! the router's check of that answer (the signature alone is accepted too).
//! No channel binding (rustls does not expose `tls-unique`): a CHALLENGE
//! asking for one is refused by [`respond`].
//!
//! Why here: the router's `auth` and the client's `auth` each had a copy of
//! the answer's format; both depend on this crate and neither on the other.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::value::Dict;

/// An Ed25519 public key from 64 hex characters (surrounding whitespace
/// ignored).
pub fn parse_pubkey(hex_key: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim()).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// Whether `signature` (hex: the 64-byte signature, optionally followed by
/// the 32-byte challenge it signs, as Autobahn sends it) signs `challenge`
/// under `key` (strict verification: no malleable signatures).
pub fn check(key: &VerifyingKey, challenge: &[u8; 32], signature: &str) -> bool {
    let Ok(bytes) = hex::decode(signature.trim()) else {
        return false;
    };
    let sig = match bytes.len() {
        64 => &bytes[..],
        96 if bytes[64..] == challenge[..] => &bytes[..64],
        _ => return false,
    };
    let Ok(sig) = Signature::from_slice(sig) else {
        return false;
    };
    key.verify_strict(challenge, &sig).is_ok()
}

/// A client's AUTHENTICATE signature for a cryptosign CHALLENGE whose
/// `Extra` is `extra`: hex of the signature of the 32-byte `challenge`,
/// followed by the challenge. An error names what is wrong with the
/// CHALLENGE.
pub fn respond(key: &SigningKey, extra: &Dict) -> Result<String, String> {
    let challenge = extra
        .get_str("challenge")
        .ok_or("the cryptosign challenge has no \"challenge\" string")?;
    let bytes = hex::decode(challenge).map_err(|_| "the cryptosign challenge is not hex")?;
    if bytes.len() != 32 {
        return Err(format!(
            "the cryptosign challenge has {} bytes, expected 32",
            bytes.len()
        ));
    }
    if let Some(cb) = extra.get_str("channel_binding") {
        return Err(format!(
            "the router asks for channel binding \"{cb}\", which this client does not support"
        ));
    }
    let mut out = key.sign(&bytes).to_bytes().to_vec();
    out.extend_from_slice(&bytes);
    Ok(hex::encode(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's test vectors without channel binding: (private key,
    /// challenge, signature).
    const VECTORS: &[(&str, &str, &str)] = &[
        (
            "4d57d97a68f555696620a6d849c0ce582568518d729eb753dc7c732de2804510",
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "b32675b221f08593213737bef8240e7c15228b07028e19595294678c90d11c0cae80a357331bfc5cc9fb71081464e6e75013517c2cf067ad566a6b7b728e5d03",
        ),
        (
            "d511fe78e23934b3dadb52fcd022974b80bd92bccc7c5cf404e46cc0a8a2f5cd",
            "b26c1f87c13fc1da14997f1b5a71995dff8fbe0a62fae8473c7bdbd05bfb607d",
            "d4209ad10d5aff6bfbc009d7e924795de138a63515efc7afc6b01b7fe5201372190374886a70207b042294af5bd64ce725cd8dceb344e6d11c09d1aaaf4d660f",
        ),
        (
            "6e1fde9cf9e2359a87420b65a87dc0c66136e66945196ba2475990d8a0c3a25b",
            "b05e6b8ad4d69abf74aa3be3c0ee40ae07d66e1895b9ab09285a2f1192d562d2",
            "7beb282184baadd08f166f16dd683b39cab53816ed81e6955def951cb2ddad1ec184e206746fd82bda075af03711d3d5658fc84a76196b0fa8d1ebc92ef9f30b",
        ),
    ];

    fn key(private: &str) -> SigningKey {
        let sk: [u8; 32] = hex::decode(private).unwrap().try_into().unwrap();
        SigningKey::from_bytes(&sk)
    }

    #[test]
    fn spec_vectors_answer_and_check() {
        for (private, challenge, signature) in VECTORS {
            let sk = key(private);
            let extra = Dict::new().with("challenge", *challenge);
            let answer = respond(&sk, &extra).unwrap();
            assert_eq!(answer, format!("{signature}{challenge}"));
            let ch: [u8; 32] = hex::decode(challenge).unwrap().try_into().unwrap();
            let vk = parse_pubkey(&hex::encode(sk.verifying_key().to_bytes())).unwrap();
            assert!(check(&vk, &ch, signature));
            assert!(check(&vk, &ch, &answer));
            let mut other = ch;
            other[0] ^= 1;
            assert!(!check(&vk, &other, signature));
            assert!(
                !check(&vk, &other, &answer),
                "the appended challenge must match"
            );
        }
        assert!(parse_pubkey("abcd").is_none());
    }

    #[test]
    fn bad_challenges_are_named() {
        let sk = key(VECTORS[0].0);
        let err = |extra: Dict| respond(&sk, &extra).unwrap_err();
        assert!(err(Dict::new()).contains("no \"challenge\""));
        assert!(err(Dict::new().with("challenge", "zz")).contains("not hex"));
        assert!(err(Dict::new().with("challenge", "abcd")).contains("2 bytes"));
        let cb = Dict::new()
            .with("challenge", VECTORS[0].1)
            .with("channel_binding", "tls-unique");
        assert!(err(cb).contains("channel binding"));
    }
}
