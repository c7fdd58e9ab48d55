//! Client-side authentication: ticket, WAMP-CRA (with PBKDF2-salted secrets,
//! computed as Autobahn does) and WAMP-Cryptosign (Ed25519, no channel
//! binding).
//!
//! [`Credentials`] collects what the user has (an authid and any of a ticket,
//! a WAMP-CRA secret, an Ed25519 key) and turns it into HELLO details
//! (`authid`, `authmethods`, `authextra.pubkey`) and a challenge handler:
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchyard_client::Error> {
//! use switchyard_client::{Credentials, Serializer, Session, SessionOptions};
//!
//! let creds = Credentials::new().authid("alice").ticket("s3cret");
//! let opts = creds.apply(SessionOptions::new(Serializer::Json));
//! let session = Session::connect_with("ws://127.0.0.1:8080/ws", "realm1", opts).await?;
//! # let _ = session; Ok(()) }
//! ```
//!
//! Secrets are kept out of `Debug` output and wiped from memory when the
//! credentials are dropped.
//!
//! The WAMP-CRA computations are [`switchyard_proto::auth::wampcra`], the
//! same code the router checks with; the `wampcra_*` functions here are
//! their old names.

use std::fmt;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use switchyard_proto::auth::{cryptosign, wampcra};
use switchyard_proto::{Dict, Value};
use zeroize::Zeroizing;

use crate::session::{ChallengeHandler, SessionOptions};

/// PBKDF2 iterations when a WAMP-CRA challenge has a salt but no
/// `iterations` (Autobahn's default).
pub const WAMPCRA_DEFAULT_ITERATIONS: u64 = wampcra::DEFAULT_ITERATIONS as u64;
/// Derived key length when a WAMP-CRA challenge has a salt but no `keylen`
/// (Autobahn's default).
pub const WAMPCRA_DEFAULT_KEYLEN: u64 = wampcra::DEFAULT_KEYLEN as u64;

/// What a client authenticates with. Any combination may be set; HELLO
/// offers every method there is a credential for (cryptosign, then
/// WAMP-CRA, then ticket) and the router picks one it allows.
#[derive(Clone, Default)]
pub struct Credentials {
    authid: Option<String>,
    ticket: Option<Arc<Zeroizing<String>>>,
    wampcra: Option<Arc<Zeroizing<String>>>,
    cryptosign: Option<Arc<SigningKey>>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("authid", &self.authid)
            .field("methods", &self.methods())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// No credentials (anonymous).
    pub fn new() -> Self {
        Credentials::default()
    }

    /// Sets `HELLO.Details.authid` (ticket and WAMP-CRA need it; cryptosign
    /// finds the user by public key, so it is optional there).
    pub fn authid(mut self, authid: impl Into<String>) -> Self {
        self.authid = Some(authid.into());
        self
    }

    /// Authenticates with a ticket (sent as is in AUTHENTICATE: use TLS
    /// outside loopback).
    pub fn ticket(mut self, ticket: impl Into<String>) -> Self {
        self.ticket = Some(Arc::new(Zeroizing::new(ticket.into())));
        self
    }

    /// Authenticates with a WAMP-CRA secret. When the challenge carries a
    /// `salt`, the signing key is derived from it with PBKDF2-HMAC-SHA256
    /// (the challenge's `iterations` and `keylen`), as Autobahn does.
    pub fn wampcra(mut self, secret: impl Into<String>) -> Self {
        self.wampcra = Some(Arc::new(Zeroizing::new(secret.into())));
        self
    }

    /// Authenticates with WAMP-Cryptosign, given the 32-byte Ed25519 seed
    /// (the private key).
    pub fn cryptosign(mut self, seed: [u8; 32]) -> Self {
        let seed = Zeroizing::new(seed);
        self.cryptosign = Some(Arc::new(SigningKey::from_bytes(&seed)));
        self
    }

    /// [`Credentials::cryptosign`] from 64 hex characters (surrounding
    /// whitespace ignored). The error never contains the key.
    pub fn cryptosign_hex(self, hex_seed: &str) -> Result<Self, String> {
        let bytes = Zeroizing::new(
            hex::decode(hex_seed.trim())
                .map_err(|_| "the Ed25519 key is not hex (expected 64 hex characters)")?,
        );
        let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            format!(
                "the Ed25519 key has {} bytes, expected a 32-byte seed (64 hex characters)",
                bytes.len()
            )
        })?;
        Ok(self.cryptosign(seed))
    }

    /// The cryptosign public key (hex), if a key is set.
    pub fn cryptosign_pubkey(&self) -> Option<String> {
        self.cryptosign
            .as_ref()
            .map(|k| hex::encode(k.verifying_key().to_bytes()))
    }

    /// The authid, if set.
    pub fn get_authid(&self) -> Option<&str> {
        self.authid.as_deref()
    }

    /// The methods offered in HELLO, in order of preference.
    pub fn methods(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.cryptosign.is_some() {
            m.push("cryptosign");
        }
        if self.wampcra.is_some() {
            m.push("wampcra");
        }
        if self.ticket.is_some() {
            m.push("ticket");
        }
        m
    }

    /// Whether there is nothing to authenticate with (and no authid).
    pub fn is_anonymous(&self) -> bool {
        self.authid.is_none() && self.methods().is_empty()
    }

    /// Sets HELLO's `authid`, `authmethods` and (for cryptosign)
    /// `authextra.pubkey` in `opts`, and its challenge handler. Anonymous
    /// credentials leave `opts` as they are.
    pub fn apply(&self, mut opts: SessionOptions) -> SessionOptions {
        if let Some(id) = &self.authid {
            opts.details.insert("authid", id.as_str());
        }
        let methods = self.methods();
        if methods.is_empty() {
            return opts;
        }
        opts.details.insert(
            "authmethods",
            Value::List(methods.iter().map(|m| Value::from(*m)).collect()),
        );
        if let Some(pubkey) = self.cryptosign_pubkey() {
            opts.details
                .insert("authextra", Dict::new().with("pubkey", pubkey));
        }
        opts.on_challenge = Some(self.challenge_handler());
        opts
    }

    /// Answers a CHALLENGE for any method there is a credential for.
    pub fn challenge_handler(&self) -> ChallengeHandler {
        let creds = self.clone();
        Arc::new(move |method: &str, extra: &Dict| creds.answer(method, extra))
    }

    fn answer(&self, method: &str, extra: &Dict) -> Result<(String, Dict), String> {
        let missing = || {
            format!(
                "the router asked for {method} authentication, and no {method} credential is set"
            )
        };
        let signature = match method {
            "ticket" => self
                .ticket
                .as_ref()
                .ok_or_else(missing)?
                .as_str()
                .to_owned(),
            "wampcra" => wampcra_signature(self.wampcra.as_ref().ok_or_else(missing)?, extra)?,
            "cryptosign" => {
                cryptosign_signature(self.cryptosign.as_ref().ok_or_else(missing)?, extra)?
            }
            other => return Err(format!("unsupported authentication method \"{other}\"")),
        };
        Ok((signature, Dict::new()))
    }
}

/// The PBKDF2-HMAC-SHA256 key derived from `secret` and `salt`, as base64
/// text (Autobahn's `auth.derive_key`; [`wampcra::derive_key`]).
pub fn wampcra_derive_key(secret: &str, salt: &str, iterations: u32, keylen: usize) -> String {
    wampcra::derive_key(secret, salt, iterations, keylen)
}

/// Base64 of HMAC-SHA256(`key`, `challenge`) (Autobahn's `auth.compute_wcs`;
/// [`wampcra::signature`]).
pub fn wampcra_sign(key: &str, challenge: &str) -> String {
    wampcra::signature(key, challenge)
}

/// The AUTHENTICATE signature for a WAMP-CRA CHALLENGE with `extra`
/// (`challenge`, and `salt`/`iterations`/`keylen` for a salted secret;
/// [`wampcra::respond`]).
pub fn wampcra_signature(secret: &str, extra: &Dict) -> Result<String, String> {
    wampcra::respond(secret, extra)
}

/// The AUTHENTICATE signature for a cryptosign CHALLENGE: hex of the
/// 64-byte Ed25519 signature of the 32-byte challenge followed by the
/// challenge (as Autobahn sends it; [`cryptosign::respond`]).
pub fn cryptosign_signature(key: &SigningKey, extra: &Dict) -> Result<String, String> {
    cryptosign::respond(key, extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Computed with Autobahn|Python 26.10: auth.derive_key("secret",
    // "salt123", 100, 16) and auth.compute_wcs(key, '{"nonce":"x"}').
    #[test]
    fn wampcra_matches_autobahn() {
        let key = wampcra_derive_key("secret", "salt123", 100, 16);
        assert_eq!(key, "EX1Y3Q9BMM2oGLxsGqDgFQ==");
        assert_eq!(
            wampcra_sign(&key, "{\"nonce\":\"x\"}"),
            "gzQF/exlRHCK26IL/TezaW/b2674cgg/9Hjc3RD2IYM="
        );
        assert_eq!(
            wampcra_sign("secret", "challenge"),
            "oeUF6Wxqoezggrue+wbIDxKRPSF6esKwizR2MHh9HaA="
        );
        let salted = Dict::new()
            .with("challenge", "{\"nonce\":\"x\"}")
            .with("salt", "salt123")
            .with("iterations", 100u64)
            .with("keylen", 16u64);
        assert_eq!(
            wampcra_signature("secret", &salted).as_deref(),
            Ok("gzQF/exlRHCK26IL/TezaW/b2674cgg/9Hjc3RD2IYM=")
        );
        let plain = Dict::new().with("challenge", "challenge");
        assert_eq!(
            wampcra_signature("secret", &plain).as_deref(),
            Ok("oeUF6Wxqoezggrue+wbIDxKRPSF6esKwizR2MHh9HaA=")
        );
        assert!(wampcra_signature("secret", &Dict::new()).is_err());
        let bad = plain.clone().with("salt", "s").with("keylen", 0u64);
        assert!(wampcra_signature("secret", &bad).is_err());
    }

    // The spec's first test vector without channel binding.
    #[test]
    fn cryptosign_spec_vector() {
        let c = Credentials::new()
            .cryptosign_hex("4d57d97a68f555696620a6d849c0ce582568518d729eb753dc7c732de2804510\n")
            .expect("key");
        let challenge = "ff".repeat(32);
        let (sig, _) = c
            .answer(
                "cryptosign",
                &Dict::new().with("challenge", challenge.as_str()),
            )
            .expect("signs");
        assert_eq!(
            sig,
            format!("b32675b221f08593213737bef8240e7c15228b07028e19595294678c90d11c0cae80a357331bfc5cc9fb71081464e6e75013517c2cf067ad566a6b7b728e5d03{challenge}")
        );
        assert!(Credentials::new().cryptosign_hex("abcd").is_err());
        assert!(Credentials::new().cryptosign_hex("zz").is_err());
    }

    #[test]
    fn hello_details_and_redaction() {
        let c = Credentials::new()
            .authid("alice")
            .ticket("top-secret")
            .wampcra("cra-secret");
        assert_eq!(c.methods(), vec!["wampcra", "ticket"]);
        let opts = c.apply(SessionOptions::new(switchyard_proto::Serializer::Json));
        assert_eq!(opts.details.get_str("authid"), Some("alice"));
        assert!(opts.on_challenge.is_some());
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("top-secret") && !shown.contains("cra-secret"),
            "{shown}"
        );
        let h = c.challenge_handler();
        assert_eq!(
            h("ticket", &Dict::new()).map(|r| r.0).as_deref(),
            Ok("top-secret")
        );
        assert!(h("cryptosign", &Dict::new()).is_err());
        assert!(Credentials::new().is_anonymous());
    }
}
