//! JWT tickets: a realm with `[[realm.auth.jwt]]` entries accepts a JSON
//! Web Token as the WAMP ticket (an application mints it, the browser
//! passes it as its ticket). The token's signature (HS256, RS256 or EdDSA)
//! is checked against the entry's keys (inline, from files, or a JWKS
//! file), then `exp`/`nbf` (with a leeway), `aud` and `iss`; the session's
//! authid and role come from its claims.
//!
//! Keys are read once, when the realm is built (a config check reads them
//! too and reports what it cannot use). The token itself is never logged
//! nor echoed in an ABORT: refusals name the reason only (expired, bad
//! signature, wrong audience, ...).

use std::collections::HashSet;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Longest token accepted, bytes (a token is a few hundred bytes; this
/// bounds the base64 and JSON work an unauthenticated peer can ask for).
pub const MAX_TOKEN_LENGTH: usize = 16 * 1024;

/// Longest authid a token may name, bytes.
const MAX_AUTHID: usize = 255;

/// One `[[realm.auth.jwt]]`: an issuer's keys and how its tokens map to
/// sessions.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Algorithms accepted: "HS256", "RS256", "EdDSA" (at least one; a
    /// token's `alg` must be one of them, so an RSA public key is never
    /// taken as an HMAC secret).
    pub algorithms: Vec<String>,
    /// HS256: the shared secret, inline.
    #[serde(default)]
    pub secret: Option<String>,
    /// HS256: a file holding the shared secret (surrounding whitespace trimmed).
    #[serde(default)]
    pub secret_file: Option<String>,
    /// RS256 / EdDSA: a public key in PEM (`-----BEGIN PUBLIC KEY-----`).
    #[serde(default)]
    pub public_key: Option<String>,
    /// RS256 / EdDSA: a file holding such a PEM public key.
    #[serde(default)]
    pub public_key_file: Option<String>,
    /// RS256 / EdDSA: a JWKS file (`{"keys": [...]}`); a token's `kid`
    /// picks the key (without `kid`, each key of a matching type is tried).
    #[serde(default)]
    pub jwks_file: Option<String>,
    /// Required `iss` (None: not checked).
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's audiences; None: not checked,
    /// and a token with an `aud` is then refused, as the JWT rules say).
    #[serde(default)]
    pub audience: Option<String>,
    /// The claim that becomes the session's authid (default `sub`).
    #[serde(default = "default_authid_claim")]
    pub authid_claim: String,
    /// The claim that names the session's role (a string).
    #[serde(default)]
    pub role_claim: Option<String>,
    /// The role when `role_claim` is not set or absent from the token.
    #[serde(default)]
    pub role: Option<String>,
    /// Clock skew allowed on `exp` and `nbf` (default 30 s).
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
}

fn default_authid_claim() -> String {
    "sub".into()
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

// Secrets never reach a log line, not even through Debug.
impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithms", &self.algorithms)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("authid_claim", &self.authid_claim)
            .field("role_claim", &self.role_claim)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// One entry, its keys loaded.
struct Issuer {
    config: JwtConfig,
    algorithms: Vec<Algorithm>,
    /// `(kid, algorithm family, key)`; kid None for keys without one.
    keys: Vec<(Option<String>, Family, DecodingKey)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Family {
    Hmac,
    Rsa,
    Ed,
}

fn family(a: Algorithm) -> Option<Family> {
    match a {
        Algorithm::HS256 => Some(Family::Hmac),
        Algorithm::RS256 => Some(Family::Rsa),
        Algorithm::EdDSA => Some(Family::Ed),
        _ => None,
    }
}

/// The realm's JWT issuers.
#[derive(Default)]
pub struct JwtVerifier {
    issuers: Vec<Issuer>,
}

/// Who a valid token makes the session.
#[derive(Debug, PartialEq, Eq)]
pub struct Claims {
    pub authid: String,
    pub role: String,
}

/// Why a token was refused: a short reason for the ABORT message (never
/// the token).
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal(pub String);

fn read(path: &str, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{what} \"{path}\": {e}"))
}

impl Issuer {
    fn load(c: &JwtConfig) -> Result<Issuer, String> {
        let mut algorithms = Vec::new();
        for a in &c.algorithms {
            let alg = match a.as_str() {
                "HS256" => Algorithm::HS256,
                "RS256" => Algorithm::RS256,
                "EdDSA" => Algorithm::EdDSA,
                other => {
                    return Err(format!(
                        "algorithm \"{other}\" is not supported (HS256, RS256, EdDSA)"
                    ))
                }
            };
            algorithms.push(alg);
        }
        if algorithms.is_empty() {
            return Err("algorithms: at least one is needed".into());
        }
        if c.role_claim.is_none() && c.role.is_none() {
            return Err("needs role_claim or role (or both)".into());
        }
        let families: HashSet<Family> = algorithms.iter().filter_map(|a| family(*a)).collect();
        let mut keys = Vec::new();
        let secret = match (&c.secret, &c.secret_file) {
            (Some(_), Some(_)) => return Err("secret and secret_file: give one".into()),
            (Some(s), None) => Some(s.clone()),
            (None, Some(f)) => Some(read(f, "secret_file")?.trim().to_string()),
            (None, None) => None,
        };
        if let Some(s) = secret {
            if !families.contains(&Family::Hmac) {
                return Err("a secret is given but HS256 is not in algorithms".into());
            }
            if s.len() < 16 {
                return Err("the HS256 secret must have at least 16 characters".into());
            }
            keys.push((None, Family::Hmac, DecodingKey::from_secret(s.as_bytes())));
        } else if families.contains(&Family::Hmac) {
            return Err("HS256 needs secret or secret_file".into());
        }
        let pem = match (&c.public_key, &c.public_key_file) {
            (Some(_), Some(_)) => return Err("public_key and public_key_file: give one".into()),
            (Some(p), None) => Some(p.clone()),
            (None, Some(f)) => Some(read(f, "public_key_file")?),
            (None, None) => None,
        };
        if let Some(pem) = pem {
            let mut loaded = false;
            if families.contains(&Family::Rsa) {
                if let Ok(k) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
                    keys.push((None, Family::Rsa, k));
                    loaded = true;
                }
            }
            if !loaded && families.contains(&Family::Ed) {
                if let Ok(k) = DecodingKey::from_ed_pem(pem.as_bytes()) {
                    keys.push((None, Family::Ed, k));
                    loaded = true;
                }
            }
            if !loaded {
                return Err(
                    "public_key: not a PEM public key of an algorithm in algorithms (RS256: RSA, EdDSA: Ed25519)"
                        .into(),
                );
            }
        }
        if let Some(f) = &c.jwks_file {
            let set: JwkSet = serde_json::from_str(&read(f, "jwks_file")?)
                .map_err(|e| format!("jwks_file \"{f}\": not a JWKS: {e}"))?;
            for (i, jwk) in set.keys.iter().enumerate() {
                let fam = match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Family::Rsa,
                    jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
                    _ => continue,
                };
                if !families.contains(&fam) {
                    continue;
                }
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| format!("jwks_file \"{f}\": key {i}: {e}"))?;
                keys.push((jwk.common.key_id.clone(), fam, key));
            }
        }
        for fam in &families {
            if !keys.iter().any(|(_, f, _)| f == fam) {
                return Err(format!(
                    "no key for {} (give {})",
                    match fam {
                        Family::Hmac => "HS256",
                        Family::Rsa => "RS256",
                        Family::Ed => "EdDSA",
                    },
                    match fam {
                        Family::Hmac => "secret or secret_file",
                        _ => "public_key, public_key_file or jwks_file",
                    }
                ));
            }
        }
        Ok(Issuer {
            config: c.clone(),
            algorithms,
            keys,
        })
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.config.leeway.as_secs();
        v.validate_nbf = true;
        v.validate_exp = true;
        v.set_required_spec_claims(&["exp"]);
        match &self.config.audience {
            Some(a) => v.set_audience(&[a]),
            None => v.validate_aud = false,
        }
        if let Some(i) = &self.config.issuer {
            v.set_issuer(&[i]);
        }
        v
    }
}

impl JwtVerifier {
    /// Loads every entry's keys; the problems of the entries that could not
    /// be loaded (the others still work).
    pub fn load(configs: &[JwtConfig]) -> (JwtVerifier, Vec<String>) {
        let mut issuers = Vec::new();
        let mut problems = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            match Issuer::load(c) {
                Ok(x) => issuers.push(x),
                Err(e) => problems.push(format!("auth.jwt[{i}]: {e}")),
            }
        }
        (JwtVerifier { issuers }, problems)
    }

    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// Whether a ticket is shaped as a JWT (three base64url parts, the
    /// first a JSON header): only those are checked here, other tickets go
    /// on to the realm's other ways of checking a ticket.
    pub fn looks_like_jwt(ticket: &str) -> bool {
        ticket.len() <= MAX_TOKEN_LENGTH
            && ticket.split('.').count() == 3
            && jsonwebtoken::decode_header(ticket).is_ok()
    }

    /// Checks a token: the first entry that accepts its algorithm (and
    /// `kid`) and whose key verifies it decides.
    pub fn verify(&self, token: &str) -> Result<Claims, Refusal> {
        let refuse = |m: &str| Err(Refusal(m.to_string()));
        if token.len() > MAX_TOKEN_LENGTH {
            return refuse("the token is too long");
        }
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return refuse("the token is malformed");
        };
        let mut last: Option<Refusal> = None;
        let mut tried = false;
        for issuer in &self.issuers {
            if !issuer.algorithms.contains(&header.alg) {
                continue;
            }
            let Some(fam) = family(header.alg) else {
                continue;
            };
            let validation = issuer.validation(header.alg);
            for (kid, f, key) in &issuer.keys {
                if *f != fam {
                    continue;
                }
                if let (Some(want), Some(have)) = (&header.kid, kid) {
                    if want != have {
                        continue;
                    }
                }
                tried = true;
                match jsonwebtoken::decode::<serde_json::Value>(token, key, &validation) {
                    Ok(data) => return issuer.claims(&data.claims),
                    Err(e) => {
                        let r = reason(e.kind());
                        // A bad signature may be another key's token; any
                        // other refusal is about a token this key signed.
                        if *e.kind() != ErrorKind::InvalidSignature {
                            return Err(r);
                        }
                        last = Some(r);
                    }
                }
            }
        }
        if !tried {
            return Err(Refusal(format!(
                "the token's algorithm ({:?}{}) is not accepted here",
                header.alg,
                if header.kid.is_some() {
                    ", or its kid is unknown"
                } else {
                    ""
                }
            )));
        }
        Err(last.unwrap_or_else(|| Refusal("bad signature".into())))
    }
}

impl Issuer {
    fn claims(&self, claims: &serde_json::Value) -> Result<Claims, Refusal> {
        let c = &self.config;
        let authid = claims
            .get(&c.authid_claim)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Refusal(format!(
                    "the token has no \"{}\" claim (a non-empty string) for the authid",
                    c.authid_claim
                ))
            })?;
        if authid.len() > MAX_AUTHID || authid.chars().any(char::is_control) {
            return Err(Refusal(format!(
                "the token's \"{}\" claim is not a usable authid",
                c.authid_claim
            )));
        }
        let from_claim = c
            .role_claim
            .as_ref()
            .and_then(|name| claims.get(name))
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty() && s.len() <= MAX_AUTHID);
        let role = match (from_claim, &c.role) {
            (Some(r), _) => r.to_string(),
            (None, Some(r)) => r.clone(),
            (None, None) => {
                return Err(Refusal(format!(
                    "the token has no \"{}\" claim (a non-empty string) for the role",
                    c.role_claim.as_deref().unwrap_or_default()
                )))
            }
        };
        Ok(Claims {
            authid: authid.to_string(),
            role,
        })
    }
}

fn reason(kind: &ErrorKind) -> Refusal {
    if let ErrorKind::MissingRequiredClaim(claim) = kind {
        return Refusal(match claim.as_str() {
            "exp" => "the token has no expiry (exp)".into(),
            "aud" => "wrong audience (aud): the token names none".into(),
            "iss" => "wrong issuer (iss): the token names none".into(),
            other => format!("the token has no \"{other}\" claim"),
        });
    }
    Refusal(
        match kind {
            ErrorKind::ExpiredSignature => "the token has expired",
            ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
            ErrorKind::InvalidSignature => "bad signature",
            ErrorKind::InvalidAudience => "wrong audience (aud)",
            ErrorKind::InvalidIssuer => "wrong issuer (iss)",
            ErrorKind::InvalidAlgorithm => "the token's algorithm is not accepted here",
            _ => "the token is malformed",
        }
        .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &str = "a-shared-secret-of-some-length";

    fn config() -> JwtConfig {
        JwtConfig {
            algorithms: vec!["HS256".into()],
            secret: Some(SECRET.into()),
            secret_file: None,
            public_key: None,
            public_key_file: None,
            jwks_file: None,
            issuer: Some("app".into()),
            audience: Some("switchyard".into()),
            authid_claim: default_authid_claim(),
            role_claim: Some("role".into()),
            role: Some("user".into()),
            leeway: default_leeway(),
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    fn token(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("encode")
    }

    #[test]
    fn hs256_tokens_are_checked() {
        let (v, problems) = JwtVerifier::load(&[config()]);
        assert!(problems.is_empty(), "{problems:?}");
        let ok = serde_json::json!({"sub": "alice", "exp": now() + 60, "aud": "switchyard", "iss": "app", "role": "admin"});
        assert_eq!(
            v.verify(&token(ok.clone(), SECRET)),
            Ok(Claims {
                authid: "alice".into(),
                role: "admin".into()
            })
        );
        let mut no_role = ok.clone();
        no_role.as_object_mut().map(|o| o.remove("role"));
        assert_eq!(
            v.verify(&token(no_role, SECRET)).map(|c| c.role),
            Ok("user".into())
        );
        let cases = [
            (
                serde_json::json!({"sub": "a", "exp": now() - 120, "aud": "switchyard", "iss": "app"}),
                SECRET,
                "expired",
            ),
            (
                serde_json::json!({"sub": "a", "exp": now() + 60, "aud": "other", "iss": "app"}),
                SECRET,
                "audience",
            ),
            (
                serde_json::json!({"sub": "a", "exp": now() + 60, "aud": "switchyard", "iss": "evil"}),
                SECRET,
                "issuer",
            ),
            (
                serde_json::json!({"sub": "a", "exp": now() + 60, "aud": "switchyard", "iss": "app", "nbf": now() + 600}),
                SECRET,
                "not valid yet",
            ),
            (
                serde_json::json!({"sub": "a", "aud": "switchyard", "iss": "app"}),
                SECRET,
                "expiry",
            ),
            (ok, "another-secret-entirely-here", "bad signature"),
        ];
        for (claims, secret, why) in cases {
            let r = v.verify(&token(claims, secret));
            assert!(r.as_ref().is_err_and(|e| e.0.contains(why)), "{why}: {r:?}");
        }
        // Within the leeway: still fine.
        let late =
            serde_json::json!({"sub": "a", "exp": now() - 5, "aud": "switchyard", "iss": "app"});
        assert!(v.verify(&token(late, SECRET)).is_ok());
        assert!(JwtVerifier::looks_like_jwt(&token(
            serde_json::json!({}),
            SECRET
        )));
        assert!(!JwtVerifier::looks_like_jwt("correct horse battery staple"));
    }

    #[test]
    fn bad_entries_are_reported() {
        let mut c = config();
        c.algorithms = vec!["none".into()];
        assert_eq!(JwtVerifier::load(&[c]).1.len(), 1);
        let mut c = config();
        c.secret = None;
        assert!(JwtVerifier::load(&[c]).1[0].contains("HS256 needs"));
        let mut c = config();
        c.algorithms = vec!["RS256".into()];
        c.secret = None;
        c.public_key = Some("not a key".into());
        assert!(JwtVerifier::load(&[c]).1[0].contains("public_key"));
    }
}
