//! Authentication: which method a HELLO gets, the CHALLENGE the router
//! sends, and the check of the AUTHENTICATE that answers it. The outcome is
//! an [`Identity`] (authid, authrole, authmethod, authprovider) for WELCOME,
//! or the reason for ABORT.
//!
//! No secret, ticket or signature is ever logged: log lines name the
//! method, the authid and the peer only.

pub mod config;
pub mod cryptosign;
pub mod jwt;
pub mod throttle;
pub mod ticket;
pub mod wampcra;

use crate::logsafe::Clip;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use ed25519_dalek::VerifyingKey;
use switchyard_proto::auth::wampcra as cra;
use switchyard_proto::{errors, Dict, Value};

pub use config::{AuthConfig, AuthMethod, CraPrincipal, CryptosignPrincipal, TicketPrincipal};

use std::sync::Arc;

use crate::internal::{CallFailure, Reply};
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
    /// What the challenges of unknown WAMP-CRA authids look like.
    cra_decoy: wampcra::Decoy,
    /// The hash a ticket of an unknown authid is checked against.
    ticket_decoy: Arc<ticket::Decoy>,
    /// The issuers of JWT tickets.
    jwt: jwt::JwtVerifier,
    /// The application that decides tickets over HTTP (`authenticator_url`,
    /// the realm's [`crate::app_auth::AppAuth`]), if it does. Kept here, not
    /// read from the realm's settings, so that a login asks the app of the
    /// same snapshot its rules come from (a reload swaps both at once).
    app: Option<crate::app_auth::AppAuthHandle>,
    /// The authids of every static principal, whatever its method: they are
    /// authenticated only statically, never by the authenticator procedure.
    static_authids: HashSet<String>,
    /// The same, folded by [`fold_authid`]: an authenticator answer that
    /// folds to one of them is refused.
    static_folded: HashSet<String>,
}

/// Whether `authid` is (or reads as) one the router assigns itself:
/// `anonymous-<hex>`, for anonymous sessions and role-only authenticator
/// answers. Nobody else may be given one: it would share that session's
/// `{authid}` URIs.
pub(crate) fn is_router_assigned(authid: &str) -> bool {
    fold_authid(authid).starts_with("anonymous-")
}

/// An authid as a person reads it: lower case, without whitespace, control
/// or invisible formatting characters (zero-width spaces and joiners, soft
/// hyphen, BOM). `Peter`, ` peter`, `peter\t` and `pe\u{200b}ter` fold to
/// `peter`. (Other Unicode lookalikes, such as a Cyrillic `е`, are not
/// folded: that needs the confusables tables.)
pub(crate) fn fold_authid(authid: &str) -> String {
    authid
        .chars()
        .filter(|c| {
            !(c.is_whitespace()
                || c.is_control()
                || matches!(
                    c,
                    '\u{00ad}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}'
                ))
        })
        .flat_map(char::to_lowercase)
        .collect()
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
        /// The signature expected (a decoy's for an unknown authid).
        expected: [u8; 32],
        /// False: unknown authid (checked like a known one, then refused).
        known: bool,
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

/// How an AUTHENTICATE is checked: here, or by the realm's authenticator
/// procedure (a call the realm makes, then [`authenticator_verdict`]).
pub(crate) enum Check {
    Local(VerdictFuture),
    Ask(AskAuthenticator),
}

/// The call to the realm's authenticator procedure that decides a login.
pub(crate) struct AskAuthenticator {
    /// None: the application's `authenticator_url` (the realm's AppAuth).
    pub procedure: Option<String>,
    /// The app that decides when `procedure` is None.
    pub app: Option<crate::app_auth::AppAuthHandle>,
    pub args: Vec<Value>,
    pub timeout: std::time::Duration,
    /// The authid the client claimed in HELLO (for the log only).
    pub claimed: String,
}

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
        let static_authids = config
            .ticket
            .iter()
            .map(|p| &p.authid)
            .chain(config.wampcra.iter().map(|p| &p.authid))
            .chain(config.cryptosign.iter().map(|p| &p.authid))
            .chain(config.tls.iter().map(|p| &p.authid))
            .cloned()
            .collect::<HashSet<String>>();
        let static_folded = static_authids.iter().map(|a| fold_authid(a)).collect();
        let hashes: Vec<&str> = config.ticket.iter().map(|p| p.secret.as_str()).collect();
        let ticket_decoy = Arc::new(ticket::Decoy::new(&hashes));
        if config.methods.contains(&AuthMethod::Ticket) {
            ticket_decoy.warm_up();
        }
        let (jwt, problems) = jwt::JwtVerifier::load(&config.jwt);
        for p in problems {
            tracing::warn!("ignoring a JWT issuer: {p}");
        }
        Authenticator {
            app: None,
            jwt,
            cra_decoy: wampcra::Decoy::new(&config.wampcra),
            ticket_decoy,
            static_folded,
            config,
            ticket,
            wampcra,
            cryptosign,
            static_authids,
        }
    }

    /// Hands the tickets the authenticator procedure would get to the
    /// realm's [`crate::app_auth::AppAuth`] instead.
    pub(crate) fn delegate_to_app(&mut self, app: crate::app_auth::AppAuthHandle) {
        self.app = Some(app);
    }

    /// Whether tickets of unknown authids go to the application (its
    /// procedure or its URL).
    fn delegates(&self) -> bool {
        self.app.is_some() || self.config.authenticator.is_some()
    }

    /// Whether `authid` belongs to a static principal of any method.
    pub fn is_static(&self, authid: &str) -> bool {
        self.static_authids.contains(authid)
    }

    /// Whether `authid` is a static principal's authid or reads the same
    /// (differs only by case, whitespace or invisible characters).
    pub fn is_static_lookalike(&self, authid: &str) -> bool {
        self.is_static(authid) || self.static_folded.contains(&fold_authid(authid))
    }

    /// The realm's authentication settings.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The method for a HELLO: the first one the client offers that both
    /// the realm and the listener allow (None: none is).
    pub(crate) fn choose(&self, details: &Dict, transport: &TransportInfo) -> Option<AuthMethod> {
        self.offered(details)
            .iter()
            .filter_map(|m| AuthMethod::parse(m))
            .find(|m| self.allowed(*m, transport))
    }

    fn offered<'a>(&self, details: &'a Dict) -> Vec<&'a str> {
        match details.get("authmethods") {
            Some(Value::List(l)) => l.iter().filter_map(Value::as_str).collect(),
            _ => vec!["anonymous"],
        }
    }

    fn allowed(&self, m: AuthMethod, transport: &TransportInfo) -> bool {
        self.config.methods.contains(&m)
            && transport
                .auth_methods
                .as_ref()
                .is_none_or(|l| l.iter().any(|x| x == m.as_str()))
    }

    /// Picks the method for a HELLO ([`Authenticator::choose`]) and starts
    /// it. `session` is the id the session will get (WAMP-CRA puts it in
    /// the challenge).
    pub(crate) fn start(&self, details: &Dict, transport: &TransportInfo, session: u64) -> Start {
        let Some(method) = self.choose(details, transport) else {
            let offered = self.offered(details);
            let here: Vec<&str> = [
                AuthMethod::Anonymous,
                AuthMethod::Ticket,
                AuthMethod::Wampcra,
                AuthMethod::Cryptosign,
                AuthMethod::Tls,
            ]
            .into_iter()
            .filter(|m| self.allowed(*m, transport))
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
                // A JWT names its own authid: HELLO need not.
                let authid = match authid {
                    Some(a) => a,
                    None if !self.jwt.is_empty() => String::new(),
                    None => return need_authid("ticket"),
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
                    common_name = %Clip(cert.common_name.as_deref().unwrap_or("")),
                    "tls: no principal for this client certificate"
                );
                Start::Abort(AUTHENTICATION_FAILED, "authentication failed".into())
            }
        }
    }

    /// The WAMP-CRA CHALLENGE. An unknown authid gets one that cannot be
    /// told from a known one's: the same fields (no role in the challenge,
    /// for anyone), a stable fake salt with the realm's usual iterations and
    /// keylen, and the same work (a decoy signature, checked the same way).
    fn start_wampcra(&self, authid: String, session: u64) -> Start {
        let principal = self.wampcra.get(&authid);
        let identity = Identity {
            authid: authid.clone(),
            authrole: principal.map(|p| p.role.clone()).unwrap_or_default(),
            authmethod: "wampcra".into(),
            authprovider: "static".into(),
        };
        let challenge = cra::challenge(
            &authid,
            "static",
            &hex::encode(rand::random::<[u8; 16]>()),
            &humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            session,
        );
        let salt = match principal {
            Some(p) => p.salt.clone().map(|s| (s, p.iterations, p.keylen)),
            None => self.cra_decoy.salt(&authid),
        };
        let extra = cra::challenge_extra(
            &challenge,
            salt.map(|(salt, iterations, keylen)| cra::Salt {
                salt,
                iterations,
                keylen,
            }),
        );
        let expected = match principal {
            Some(p) => wampcra::sign(&p.secret, &challenge),
            None => self.cra_decoy.expected(&challenge),
        };
        Start::Challenge {
            method: "wampcra",
            extra,
            pending: Box::new(Pending::Wampcra {
                known: principal.is_some(),
                expected,
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
                authid = %Clip(authid.as_deref().unwrap_or("")),
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
/// authid that no static principal of any method has goes to the realm's
/// authenticator procedure, if it has one. A static principal is never
/// delegated: `peter`, a WAMP-CRA user, cannot log in as `peter` with a
/// ticket the authenticator accepts.
pub(crate) fn verify(
    pending: Box<Pending>,
    signature: String,
    auth: &Authenticator,
    realm: &str,
    transport: &TransportInfo,
) -> Check {
    let verdict = match *pending {
        Pending::Ticket {
            authid,
            principal: None,
        } if !auth.jwt.is_empty()
            && !auth.is_static(&authid)
            && jwt::JwtVerifier::looks_like_jwt(&signature) =>
        {
            Box::pin(std::future::ready(jwt_verdict(auth, &authid, &signature)))
        }
        Pending::Ticket {
            authid,
            principal: None,
        } if authid.is_empty() => Box::pin(std::future::ready(Verdict::Abort(
            AUTHENTICATION_FAILED,
            "authentication failed: the ticket is not a JWT, and other tickets need HELLO.Details.authid".into(),
        ))),
        Pending::Ticket {
            authid,
            principal: None,
        } if auth.delegates() && !auth.is_static(&authid) => {
            return match dynamic_ticket(auth, realm, authid, signature, transport) {
                Some(ask) => Check::Ask(ask),
                None => Check::Local(Box::pin(std::future::ready(failed()))),
            };
        }
        Pending::Ticket { authid, principal } => {
            let decoy = auth.ticket_decoy.clone();
            ticket_verdict(authid, principal, signature, decoy)
        }
        Pending::Wampcra {
            identity,
            expected,
            known,
        } => {
            let ok = wampcra::check(&signature, &expected) & known;
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
    };
    Check::Local(verdict)
}

/// Checks a JWT ticket. The session's authid is the token's; a HELLO that
/// claimed another one is refused, and so is a token naming a static
/// principal (or one that reads the same) or an authid in the router's
/// `anonymous-` namespace. The refusal names the reason, never the token.
fn jwt_verdict(auth: &Authenticator, claimed: &str, token: &str) -> Verdict {
    let refuse = |why: &str| {
        tracing::info!(claimed = %Clip(claimed), "jwt ticket refused: {why}");
        Verdict::Abort(
            AUTHENTICATION_FAILED,
            format!("authentication failed: {why}"),
        )
    };
    match auth.jwt.verify(token) {
        Err(jwt::Refusal(why)) => refuse(&why),
        Ok(c) if !claimed.is_empty() && c.authid != claimed => {
            refuse("the token names another authid than HELLO.Details.authid")
        }
        Ok(c) if is_router_assigned(&c.authid) || auth.is_static_lookalike(&c.authid) => {
            refuse("the token's authid is reserved on this realm")
        }
        Ok(c) => Verdict::Welcome(Identity {
            authid: c.authid,
            authrole: c.role,
            authmethod: "ticket".into(),
            authprovider: "jwt".into(),
        }),
    }
}

/// Checks a ticket against a static principal's hash, or against the decoy
/// for an unknown authid (the same work, then refused).
fn ticket_verdict(
    authid: String,
    principal: Option<TicketPrincipal>,
    signature: String,
    decoy: Arc<ticket::Decoy>,
) -> VerdictFuture {
    Box::pin(async move {
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
            ticket::verify_with(&signature, hash.as_deref(), &decoy, permit.blocks())
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
    })
}

/// Asks the realm's authenticator procedure about a ticket.
///
/// The session's authid is the one the procedure returns; the authid the
/// client claimed in HELLO is only a claim, and the procedure may have
/// checked the token without looking at it. A role-only answer therefore
/// gets a fresh authid from the router (`anonymous-<random hex>`, as
/// anonymous sessions), never the claimed one. An answer naming a static
/// principal's authid is refused: static principals log in only with their
/// own credentials.
fn dynamic_ticket(
    auth: &Authenticator,
    realm: &str,
    authid: String,
    ticket: String,
    transport: &TransportInfo,
) -> Option<AskAuthenticator> {
    if !auth.delegates() {
        return None;
    }
    let (procedure, app) = match &auth.app {
        Some(app) => (None, Some(app.clone())),
        None => (auth.config.authenticator.clone(), None),
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
        Value::from(realm),
        Value::from(authid.as_str()),
        Value::Dict(details),
    ];
    Some(AskAuthenticator {
        procedure,
        app,
        args,
        timeout: auth.config.authenticator_timeout,
        claimed: authid,
    })
}

/// Reads the authenticator procedure's answer to an [`AskAuthenticator`]:
/// see [`dynamic_ticket`] for what it may answer.
pub(crate) fn authenticator_verdict(
    auth: &Authenticator,
    ask: &AskAuthenticator,
    answer: Result<Reply, CallFailure>,
) -> Verdict {
    let procedure = ask.procedure.as_deref().unwrap_or("authenticator_url");
    let authid = ask.claimed.as_str();
    match answer {
        Ok(reply) => {
            let (role, id) = match reply.args.first() {
                Some(Value::Str(role)) => (Some(role.clone()), None),
                Some(Value::Dict(d)) => (
                    d.get_str("role").map(str::to_string),
                    d.get_str("authid").map(str::to_string),
                ),
                _ => (None, None),
            };
            let id = id.filter(|id| !id.is_empty());
            match role {
                Some(_) if id.as_deref().is_some_and(is_router_assigned) => {
                    tracing::warn!(
                        procedure,
                        claimed = authid,
                        answered = id.as_deref().unwrap_or_default(),
                        "the authenticator answered an authid in the router's \"anonymous-\" namespace: refused"
                    );
                    failed()
                }
                Some(_) if id.as_deref().is_some_and(|id| auth.is_static_lookalike(id)) => {
                    tracing::warn!(
                        procedure,
                        claimed = authid,
                        answered = id.as_deref().unwrap_or_default(),
                        "the authenticator answered the authid of a static principal (or one that reads the same): refused"
                    );
                    failed()
                }
                Some(role) if !role.is_empty() => Verdict::Welcome(Identity {
                    authid: id.unwrap_or_else(|| Identity::anonymous().authid),
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
                error = %Clip(&f.error),
                "the authenticator refused: {}",
                Clip(&f.message)
            );
            if f.unserved || f.error == errors::NO_SUCH_PROCEDURE || f.error == errors::TIMEOUT {
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

#[cfg(test)]
mod tests {
    use super::fold_authid;

    #[test]
    fn lookalike_authids_fold_to_the_same() {
        for v in [
            "peter",
            "Peter",
            "PETER",
            " peter",
            "peter\t",
            "pe\u{200b}ter",
            "\u{feff}peter",
        ] {
            assert_eq!(fold_authid(v), "peter", "{v:?}");
        }
        assert_ne!(fold_authid("peter2"), "peter");
        assert!(super::is_router_assigned("Anonymous-12ab"));
        assert!(!super::is_router_assigned("anonymousfan"));
    }
}
