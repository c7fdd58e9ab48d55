//! Authentication settings of a realm (`[realm.auth]` in the config file).

use serde::Deserialize;

/// An authentication method a realm or listener may allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    Anonymous,
    Ticket,
    Wampcra,
    Cryptosign,
    /// The TLS client certificate the listener verified.
    Tls,
}

impl AuthMethod {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "anonymous" => Self::Anonymous,
            "ticket" => Self::Ticket,
            "wampcra" => Self::Wampcra,
            "cryptosign" => Self::Cryptosign,
            "tls" => Self::Tls,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anonymous => "anonymous",
            Self::Ticket => "ticket",
            Self::Wampcra => "wampcra",
            Self::Cryptosign => "cryptosign",
            Self::Tls => "tls",
        }
    }
}

/// How sessions of a realm authenticate.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Methods the realm accepts (default: anonymous only). A listener's
    /// `auth_methods` narrows this further.
    #[serde(default = "default_methods")]
    pub methods: Vec<AuthMethod>,
    /// The role of anonymous sessions.
    #[serde(default = "default_anonymous_role")]
    pub anonymous_role: String,
    /// Ticket principals: the secret is an Argon2id hash (`switchyard
    /// hash-secret`), never the ticket itself.
    #[serde(default)]
    pub ticket: Vec<TicketPrincipal>,
    /// WAMP-CRA principals.
    #[serde(default)]
    pub wampcra: Vec<CraPrincipal>,
    /// WAMP-Cryptosign principals.
    #[serde(default)]
    pub cryptosign: Vec<CryptosignPrincipal>,
    /// TLS client-certificate principals.
    #[serde(default)]
    pub tls: Vec<TlsPrincipal>,
    /// Issuers of JWT tickets ([[realm.auth.jwt]], `auth::jwt`): a ticket
    /// shaped as a JWT is checked against them.
    #[serde(default)]
    pub jwt: Vec<super::jwt::JwtConfig>,
    /// A procedure that checks tickets of authids without a static
    /// principal: called with (realm, authid, details), it returns the role
    /// (a string, or a dict with `role` and optionally `authid`) or an error.
    #[serde(default)]
    pub authenticator: Option<String>,
    /// How long the authenticator may take.
    #[serde(default = "default_authenticator_timeout", with = "humantime_serde")]
    pub authenticator_timeout: std::time::Duration,
    /// Login attempts from one address for one authid before each further
    /// one must wait a delay that doubles from 1 s up to `failure_window`
    /// (0: no throttling at all). Attempts count when they start; a success
    /// takes its attempt back.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// Attempts from one address, for any authids, before the same delays.
    #[serde(default = "default_max_failures_per_address")]
    pub max_failures_per_address: u32,
    /// Attempts for one authid from every address before its verdicts are
    /// slowed down (never refused: nobody can lock a user out).
    #[serde(default = "default_max_failures_per_authid")]
    pub max_failures_per_authid: u32,
    /// The longest delay; an entry is forgotten this long after its delay.
    #[serde(default = "default_failure_window", with = "humantime_serde")]
    pub failure_window: std::time::Duration,
    /// Entries (addresses, authids) the throttle remembers at most.
    #[serde(default = "default_failure_table_size")]
    pub failure_table_size: usize,
}

fn default_max_failures_per_address() -> u32 {
    20
}

fn default_max_failures_per_authid() -> u32 {
    100
}

fn default_failure_table_size() -> usize {
    100_000
}

fn default_max_failures() -> u32 {
    5
}

fn default_failure_window() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

fn default_authenticator_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(5)
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            methods: default_methods(),
            anonymous_role: default_anonymous_role(),
            ticket: Vec::new(),
            wampcra: Vec::new(),
            cryptosign: Vec::new(),
            tls: Vec::new(),
            jwt: Vec::new(),
            authenticator: None,
            authenticator_timeout: default_authenticator_timeout(),
            max_failures: default_max_failures(),
            max_failures_per_address: default_max_failures_per_address(),
            max_failures_per_authid: default_max_failures_per_authid(),
            failure_window: default_failure_window(),
            failure_table_size: default_failure_table_size(),
        }
    }
}

fn default_methods() -> Vec<AuthMethod> {
    vec![AuthMethod::Anonymous]
}

fn default_anonymous_role() -> String {
    "anonymous".into()
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketPrincipal {
    pub authid: String,
    /// Argon2id PHC string, e.g. `$argon2id$v=19$m=19456,t=2,p=1$...`.
    pub secret: String,
    pub role: String,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CraPrincipal {
    pub authid: String,
    /// The shared secret. With `salt`, the PBKDF2-derived key as base64
    /// text (what `switchyard hash-secret --method wampcra` prints, and what
    /// Autobahn's `derive_key` computes); it is the HMAC key as that text.
    pub secret: String,
    pub role: String,
    #[serde(default)]
    pub salt: Option<String>,
    #[serde(default = "default_iterations")]
    pub iterations: u32,
    #[serde(default = "default_keylen")]
    pub keylen: u32,
}

fn default_iterations() -> u32 {
    1000
}

fn default_keylen() -> u32 {
    32
}

/// A client certificate, by SHA-256 fingerprint or subject common name (at
/// least one), and who it makes the session.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsPrincipal {
    pub authid: String,
    /// SHA-256 of the DER certificate, hex (colons allowed).
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// The certificate subject's CN.
    #[serde(default)]
    pub common_name: Option<String>,
    pub role: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CryptosignPrincipal {
    pub authid: String,
    /// Ed25519 public keys (64 hex characters each) this principal may use.
    pub pubkeys: Vec<String>,
    pub role: String,
}

// Secrets never reach a log line, not even through Debug.
impl std::fmt::Debug for TicketPrincipal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketPrincipal")
            .field("authid", &self.authid)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for CraPrincipal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CraPrincipal")
            .field("authid", &self.authid)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl AuthConfig {
    /// Problems a config file check reports (empty: fine).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.methods.is_empty() {
            out.push("auth.methods: at least one method is needed".into());
        }
        for (i, t) in self.ticket.iter().enumerate() {
            if argon2::PasswordHash::new(&t.secret).is_err() {
                out.push(format!(
                    "auth.ticket[{i}] ({}): secret is not an Argon2 hash; make one with `switchyard hash-secret`",
                    t.authid
                ));
            }
        }
        for (i, c) in self.cryptosign.iter().enumerate() {
            for k in &c.pubkeys {
                if super::cryptosign::parse_pubkey(k).is_none() {
                    out.push(format!(
                        "auth.cryptosign[{i}] ({}): \"{k}\" is not an Ed25519 public key (64 hex characters)",
                        c.authid
                    ));
                }
            }
        }
        for (i, c) in self.wampcra.iter().enumerate() {
            if c.keylen == 0 || c.iterations == 0 {
                out.push(format!(
                    "auth.wampcra[{i}] ({}): iterations and keylen must be positive",
                    c.authid
                ));
            }
        }
        for (i, t) in self.tls.iter().enumerate() {
            if t.fingerprint.is_none() && t.common_name.is_none() {
                out.push(format!(
                    "auth.tls[{i}] ({}): needs a fingerprint or a common_name",
                    t.authid
                ));
            }
        }
        out.extend(super::jwt::JwtVerifier::load(&self.jwt).1);
        for (m, n) in [
            (AuthMethod::Ticket, self.jwt.len()),
            (AuthMethod::Tls, self.tls.len()),
            (AuthMethod::Ticket, self.ticket.len()),
            (AuthMethod::Wampcra, self.wampcra.len()),
            (AuthMethod::Cryptosign, self.cryptosign.len()),
        ] {
            if n > 0 && !self.methods.contains(&m) {
                out.push(format!(
                    "auth: {} principals are configured but \"{}\" is not in auth.methods",
                    m.as_str(),
                    m.as_str()
                ));
            }
        }
        out
    }
}
