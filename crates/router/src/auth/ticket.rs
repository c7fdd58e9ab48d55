//! Ticket authentication (spec "Ticket-based Authentication") against
//! Argon2id hashes.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Argon2, PasswordHash, PasswordVerifier};

/// Hashes `secret` as an Argon2id PHC string (`switchyard hash-secret`).
pub fn hash_secret(secret: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// A hash nobody's ticket matches, checked for unknown authids so that a
/// wrong authid costs the same time as a wrong ticket.
fn decoy() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let random = hex::encode(rand::random::<[u8; 16]>());
        hash_secret(&random).unwrap_or_default()
    })
}

/// Whether `ticket` matches `hash` (None: unknown authid). Slow on purpose
/// (Argon2): run it off the async workers.
pub fn verify(ticket: &str, hash: Option<&str>) -> bool {
    let known = hash.is_some();
    let Ok(parsed) = PasswordHash::new(hash.unwrap_or_else(|| decoy())) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(ticket.as_bytes(), &parsed)
        .is_ok();
    ok && known
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_unknown_authids_never_do() {
        let h = hash_secret("s3cret").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("s3cret", Some(&h)));
        assert!(!verify("s3cret!", Some(&h)));
        assert!(!verify("s3cret", None));
        assert!(!verify("s3cret", Some("not a hash")));
    }
}
