//! Authentication: which method a HELLO gets, the CHALLENGE the router
//! sends, and the check of the AUTHENTICATE that answers it. The outcome is
//! an [`Identity`] (authid, authrole, authmethod, authprovider) for WELCOME,
//! or the reason for ABORT.
//!
//! No secret, ticket or signature is ever logged: log lines name the
//! method, the authid and the peer only.

pub mod config;
pub mod cryptosign;
pub mod throttle;
pub mod ticket;
pub mod wampcra;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use ed25519_dalek::VerifyingKey;
use switchyard_proto::{errors, Dict, Value};

pub use config::{AuthConfig, AuthMethod, CraPrincipal, CryptosignPrincipal, TicketPrincipal};

use std::sync::Arc;

use crate::realm::Realm;
use crate::session::Identity;
use crate::transport_info::TransportInfo;

/// ABORT reason for a failed authentication (spec URI list).
pub const AUTHENTICATION_FAILED: &str = "wamp.error.authentication_failed";
/// ABORT reason when no offered method is allowed.
pub const NO_MATCHING_AUTH_METHOD: &str = "wamp.error.no_matching_auth_method";

/// A realm's principals, indexed for lookup.
pub struct Authenticator {
    config: AuthConfig,
    ticket: HashMap<String, TicketPrincipal>,
    wampcra: HashMap<String, CraPrincipal>,
    /// Public key (lowercase hex) → principal.
    cryptosign: HashMap<String, (CryptosignPrincipal, VerifyingKey)>,
}

/// What the router does with a HELLO.
pub(crate) enum Start {
    /// Welcome at once (anonymous).
    Welcome(Identity),
    /// Send CHALLENGE(method, extra) and wait for AUTHENTICATE.
    Challenge {
        method: &'static str,
        extra: Dict,
        pending: Box<Pending>,
    },
    /// ABORT with (reason, message).
    Abort(&'static str, String),
}

/// An authentication waiting for its AUTHENTICATE.
pub(crate) enum Pending {
    Ticket {
        authid: String,
        /// None: unknown authid (checked against a decoy, then refused).
        principal: Option<TicketPrincipal>,
    },
    Wampcra {
        identity: Identity,
        /// None: unknown authid.
        expected: Option<[u8; 32]>,
    },
    Cryptosign {
        identity: Identity,
        key: VerifyingKey,
        challenge: [u8; 32],
    },
}

impl Pending {
    pub fn method(&self) -> &'static str {
        match self {
            Pending::Ticket { .. } => "ticket",
            Pending::Wampcra { .. } => "wampcra",
            Pending::Cryptosign { .. } => "cryptosign",
        }
    }

    pub fn authid(&self) -> &str {
        match self {
            Pending::Ticket { authid, .. } => authid,
            Pending::Wampcra { identity, .. } | Pending::Cryptosign { identity, .. } => {
                &identity.authid
            }
        }
    }
}

/// The outcome of an AUTHENTICATE.
pub(crate) enum Verdict {
    Welcome(Identity),
    Abort(&'static str, String),
    /// Not checked: the router had no capacity for the check (not a failed
    /// login).
    Busy(String),
}

pub(crate) type VerdictFuture = Pin<Box<dyn Future<Output = Verdict> + Send + Sync>>;

fn failed() -> Verdict {
    Verdict::Abort(AUTHENTICATION_FAILED, "authentication failed".into())
}

impl Authenticator {
    pub fn new(config: AuthConfig) -> Self {
        let ticket = config
            .ticket
            .iter()
            .map(|p| (p.authid.clone(), p.clone()))
            .collect();
        let wampcra = config
            .wampcra
            .iter()
            .map(|p| (p.authid.clone(), p.clone()))
            .collect();
        let mut cryptosign = HashMap::new();
        for p in &config.cryptosign {
            for k in &p.pubkeys {
                match cryptosign::parse_pubkey(k) {
                    Some(key) => {
                        cryptosign.insert(k.trim().to_ascii_lowercase(), (p.clone(), key));
                    }
                    None => tracing::warn!(
                        authid = p.authid,
                        "ignoring an invalid cryptosign public key"
                    ),
                }
            }
        }
        Authenticator {
            config,
            ticket,
            wampcra,
            cryptosign,
        }
    }

    /// The realm's authentication settings.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Picks the method for a HELLO (the first one the client offers that
    /// both the realm and the listener allow) and starts it. `session` is
    /// the id the session will get (WAMP-CRA puts it in the challenge).
    pub(crate) fn start(&self, details: &Dict, transport: &TransportInfo, session: u64) -> Start {
        let offered: Vec<&str> = match details.get("authmethods") {
            Some(Value::List(l)) => l.iter().filter_map(Value::as_str).collect(),
            _ => vec!["anonymous"],
        };
        let allowed = |m: AuthMethod| {
            self.config.methods.contains(&m)
                && transport
                    .auth_methods
                    .as_ref()
                    .is_none_or(|l| l.iter().any(|x| x == m.as_str()))
        };
        let Some(method) = offered
            .iter()
            .filter_map(|m| AuthMethod::parse(m))
            .find(|m| allowed(*m))
        else {
            let here: Vec<&str> = [
                AuthMethod::Anonymous,
                AuthMethod::Ticket,
                AuthMethod::Wampcra,
                AuthMethod::Cryptosign,
                AuthMethod::Tls,
            ]
            .into_iter()
            .filter(|m| allowed(*m))
            .map(AuthMethod::as_str)
            .collect();
            return Start::Abort(
                NO_MATCHING_AUTH_METHOD,
                format!(
                    "none of the offered authentication methods {offered:?} is allowed here; this realm and listener accept {here:?}"
                ),
            );
        };
        let authid = details.get_str("authid").map(str::to_string);
        let need_authid = |m: &str| {
            Start::Abort(
                AUTHENTICATION_FAILED,
                format!("{m} authentication needs HELLO.Details.authid"),
            )
        };
        match method {
            AuthMethod::Anonymous => Start::Welcome(Identity {
                authrole: self.config.anonymous_role.clone(),
                ..Identity::anonymous()
            }),
            AuthMethod::Ticket => {
                let Some(authid) = authid else {
                    return need_authid("ticket");
                };
                Start::Challenge {
                    method: "ticket",
                    extra: Dict::new(),
                    pending: Box::new(Pending::Ticket {
                        principal: self.ticket.get(&authid).cloned(),
                        authid,
                    }),
                }
            }
            AuthMethod::Wampcra => {
                let Some(authid) = authid else {
                    return need_authid("wampcra");
                };
                self.start_wampcra(authid, session)
            }
            AuthMethod::Cryptosign => self.start_cryptosign(details, authid),
            AuthMethod::Tls => self.start_tls(transport, authid),
        }
    }

    /// TLS client-certificate authentication: no challenge, the listener
    /// already verified the certificate against its CA.
    fn start_tls(&self, transport: &TransportInfo, authid: Option<String>) -> Start {
        let Some(cert) = &transport.client_cert else {
            return Start::Abort(
                AUTHENTICATION_FAILED,
                "tls authentication needs a client certificate (on a listener with client_auth)"
                    .into(),
            );
        };
        let norm = |f: &str| f.replace(':', "").to_ascii_lowercase();
        let found = self.config.tls.iter().find(|p| {
            p.fingerprint
                .as_deref()
                .is_none_or(|f| norm(f) == norm(&cert.fingerprint))
                && p.common_name
                    .as_deref()
                    .is_none_or(|cn| cert.common_name.as_deref() == Some(cn))
                && authid.as_deref().is_none_or(|a| a == p.authid)
        });
        match found {
            Some(p) => Start::Welcome(Identity {
                authid: p.authid.clone(),
                authrole: p.role.clone(),
                authmethod: "tls".into(),
                authprovider: "static".into(),
            }),
            None => {
                tracing::info!(
                    fingerprint = cert.fingerprint,
                    common_name = cert.common_name.as_deref().unwrap_or(""),
                    "tls: no principal for this client certificate"
                );
                Start::Abort(AUTHENTICATION_FAILED, "authentication failed".into())
            }
        }
    }

    fn start_wampcra(&self, authid: String, session: u64) -> Start {
        let principal = self.wampcra.get(&authid);
        let identity = Identity {
            authid: authid.clone(),
            authrole: principal.map(|p| p.role.clone()).unwrap_or_default(),
            authmethod: "wampcra".into(),
            authprovider: "static".into(),
        };
        let challenge = serde_json::json!({
            "authid": authid,
            "authrole": identity.authrole,
            "authmethod": "wampcra",
            "authprovider": "static",
            "nonce": hex::encode(rand::random::<[u8; 16]>()),
            "timestamp": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "session": session,
        })
        .to_string();
        let mut extra = Dict::new().with("challenge", challenge.as_str());
        if let Some(p) = principal {
            if let Some(salt) = &p.salt {
                extra.insert("salt", salt.as_str());
                extra.insert("keylen", u64::from(p.keylen));
                extra.insert("iterations", u64::from(p.iterations));
            }
        }
        Start::Challenge {
            method: "wampcra",
            extra,
            pending: Box::new(Pending::Wampcra {
                expected: principal.map(|p| wampcra::sign(&p.secret, &challenge)),
                identity,
            }),
        }
    }

    fn start_cryptosign(&self, details: &Dict, authid: Option<String>) -> Start {
        let pubkey = details
            .get("authextra")
            .and_then(Value::as_dict)
            .and_then(|e| e.get_str("pubkey"))
            .map(|k| k.trim().to_ascii_lowercase());
        let Some(pubkey) = pubkey else {
            return Start::Abort(
                AUTHENTICATION_FAILED,
                "cryptosign authentication needs HELLO.Details.authextra.pubkey".into(),
            );
        };
        let found = self
            .cryptosign
            .get(&pubkey)
            .filter(|(p, _)| authid.as_deref().is_none_or(|a| a == p.authid));
        let Some((principal, key)) = found else {
            tracing::info!(
                authid = authid.as_deref().unwrap_or(""),
                "cryptosign: unknown public key"
            );
            return Start::Abort(AUTHENTICATION_FAILED, "authentication failed".into());
        };
        let challenge: [u8; 32] = rand::random();
        Start::Challenge {
            method: "cryptosign",
            extra: Dict::new()
                .with("challenge", hex::encode(challenge))
                .with("channel_binding", Value::Null),
            pending: Box::new(Pending::Cryptosign {
                identity: Identity {
                    authid: principal.authid.clone(),
                    authrole: principal.role.clone(),
                    authmethod: "cryptosign".into(),
                    authprovider: "static".into(),
                },
                key: *key,
                challenge,
            }),
        }
    }
}

/// Checks an AUTHENTICATE against what was challenged. Ticket hashes are
/// checked on a blocking thread (Argon2 is slow on purpose); a ticket of an
/// authid without a static principal goes to the realm's authenticator
/// procedure, if it has one.
pub(crate) fn verify(
    pending: Box<Pending>,
    signature: String,
    realm: &Arc<Realm>,
    transport: &TransportInfo,
) -> VerdictFuture {
    match *pending {
        Pending::Ticket {
            authid,
            principal: None,
        } if realm.auth.config.authenticator.is_some() => Box::pin(dynamic_ticket(
            realm.clone(),
            authid,
            signature,
            transport.clone(),
        )),
        Pending::Ticket { authid, principal } => Box::pin(async move {
            let hash = principal.as_ref().map(|p| p.secret.clone());
            let checks = ticket::TicketChecks::get();
            let Some(mut permit) = checks.acquire().await else {
                return Verdict::Busy(format!(
                    "authentication failed: the router is busy checking other logins (at most {} at once, waited {:?}); try again",
                    checks.max(),
                    checks.wait()
                ));
            };
            let ok = tokio::task::spawn_blocking(move || {
                ticket::verify_with(&signature, hash.as_deref(), permit.blocks())
            })
            .await
            .unwrap_or(false);
            match (ok, principal) {
                (true, Some(p)) => Verdict::Welcome(Identity {
                    authid,
                    authrole: p.role,
                    authmethod: "ticket".into(),
                    authprovider: "static".into(),
                }),
                _ => failed(),
            }
        }),
        Pending::Wampcra { identity, expected } => {
            let ok = expected.is_some_and(|e| wampcra::check(&signature, &e));
            Box::pin(std::future::ready(if ok {
                Verdict::Welcome(identity)
            } else {
                failed()
            }))
        }
        Pending::Cryptosign {
            identity,
            key,
            challenge,
        } => {
            let ok = cryptosign::check(&key, &challenge, &signature);
            Box::pin(std::future::ready(if ok {
                Verdict::Welcome(identity)
            } else {
                failed()
            }))
        }
    }
}

/// Asks the realm's authenticator procedure about a ticket.
async fn dynamic_ticket(
    realm: Arc<Realm>,
    authid: String,
    ticket: String,
    transport: TransportInfo,
) -> Verdict {
    let Some(procedure) = realm.auth.config.authenticator.clone() else {
        return failed();
    };
    let mut t = Dict::new()
        .with("type", transport.kind)
        .with("tls", transport.tls);
    if let Some(ip) = transport.peer_ip {
        t.insert("peer", ip.to_string());
    }
    let details = Dict::new()
        .with("authmethod", "ticket")
        .with("ticket", ticket)
        .with("transport", t);
    let args = vec![
        Value::from(realm.name()),
        Value::from(authid.as_str()),
        Value::Dict(details),
    ];
    let timeout = realm.auth.config.authenticator_timeout;
    match realm
        .internal
        .call(&realm.dealer, &procedure, args, None, timeout)
        .await
    {
        Ok(reply) => {
            let (role, id) = match reply.args.first() {
                Some(Value::Str(role)) => (Some(role.clone()), None),
                Some(Value::Dict(d)) => (
                    d.get_str("role").map(str::to_string),
                    d.get_str("authid").map(str::to_string),
                ),
                _ => (None, None),
            };
            match role {
                Some(role) if !role.is_empty() => Verdict::Welcome(Identity {
                    authid: id.unwrap_or(authid),
                    authrole: role,
                    authmethod: "ticket".into(),
                    authprovider: "dynamic".into(),
                }),
                _ => {
                    tracing::warn!(
                        procedure,
                        "the authenticator returned no role (expected a string or a dict with \"role\")"
                    );
                    failed()
                }
            }
        }
        Err(f) => {
            tracing::info!(
                procedure,
                error = f.error,
                "the authenticator refused: {}",
                f.message
            );
            if f.error == errors::NO_SUCH_PROCEDURE || f.error == errors::TIMEOUT {
                Verdict::Abort(
                    AUTHENTICATION_FAILED,
                    "authentication failed: the authenticator is not available".into(),
                )
            } else {
                let message = if f.message.is_empty() {
                    "authentication failed".to_string()
                } else {
                    format!("authentication failed: {}", f.message)
                };
                Verdict::Abort(AUTHENTICATION_FAILED, message)
            }
        }
    }
}

/// The ABORT for a protocol error during authentication.
pub(crate) fn unexpected(what: &str) -> Verdict {
    Verdict::Abort(
        errors::PROTOCOL_VIOLATION,
        format!("received {what} while authenticating: the router expected AUTHENTICATE"),
    )
}
