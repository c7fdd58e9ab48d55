//! A realm: a routing namespace with its own sessions, Broker and Dealer,
//! and the meta events that report what happens in it.

use crate::logsafe::Clip;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arc_swap::{ArcSwap, Guard};
use parking_lot::RwLock;
use serde::Deserialize;
use switchyard_proto::uri::UriCheck;
use switchyard_proto::{Dict, Message, Payload, Value};

use crate::auth::{self, AuthConfig, Authenticator};
use crate::authz::{Action, Authorizer, Decision, DynamicAuthorizer, RoleConfig};
use crate::backplane::Backplane;
use crate::broker::{Broker, BrokerConfig, HistoryConfig};
use crate::dealer::{Dealer, DealerConfig, RegistrationEvent, RegistrationInfo};
use crate::details::pattern_details;
pub use crate::details::{session_details, Disclosure};
use crate::hooks::{HookFuture, HookOutcome, PublishHook};
use crate::internal::InternalCaller;
use crate::metrics::Metrics;
use crate::session::{OpError, Session};
use crate::transport_info::TransportInfo;
use crate::uri_index::MatchPolicy;

/// The answer of the realm's authorizer procedure, to come.
pub type AskFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Decision> + Send + Sync>>;

/// Configuration of one realm.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealmConfig {
    /// The realm's URI, as clients name it in HELLO.
    pub name: String,
    /// URI rule for topics and procedures: "loose" (default) or "strict".
    #[serde(default)]
    pub uri_check: UriCheck,
    /// Caller disclosure to callees: "on_request" (default), "always", "never".
    #[serde(default)]
    pub disclose_caller: Disclosure,
    /// Calls that may wait per registration while every callee is at its
    /// concurrency cap (default 1000).
    #[serde(default = "default_call_queue_limit")]
    pub call_queue_limit: usize,
    /// Publisher disclosure to subscribers: "on_request" (default), "always", "never".
    #[serde(default)]
    pub disclose_publisher: Disclosure,
    /// Topics that may hold a retained event at once (default 10000).
    #[serde(default = "default_retained_limit")]
    pub retained_topics_limit: usize,
    /// Topics (or patterns) whose events are kept for `wamp.subscription.get_events`.
    #[serde(default)]
    pub history: Vec<HistoryConfig>,
    /// How sessions authenticate (default: anonymous only).
    #[serde(default)]
    pub auth: AuthConfig,
    /// Roles and their permissions; without any, every action is allowed.
    #[serde(default, rename = "role")]
    pub roles: Vec<RoleConfig>,
    /// A procedure deciding for sessions whose role is not in `roles`.
    #[serde(default)]
    pub authorizer: Option<String>,
    /// How long the authorizer may take (a timeout denies).
    #[serde(default = "default_authorizer_timeout", with = "humantime_serde")]
    pub authorizer_timeout: std::time::Duration,
    /// Subscriptions one session may hold (0: no limit).
    #[serde(default = "default_max_subscriptions")]
    pub max_subscriptions_per_session: usize,
    /// Registrations one session may hold (0: no limit).
    #[serde(default = "default_max_registrations")]
    pub max_registrations_per_session: usize,
    /// Subscriptions (distinct topic and match policy) the realm may hold,
    /// for all sessions together (0: no limit).
    #[serde(default = "default_max_realm_subscriptions")]
    pub max_subscriptions: usize,
    /// Registrations (distinct procedure and match policy) the realm may
    /// hold, for all sessions together (0: no limit).
    #[serde(default = "default_max_realm_registrations")]
    pub max_registrations: usize,
    /// Authorizer answers (with `cache: true`) the realm's sessions may keep
    /// together; beyond, answers are not cached (0: no limit).
    #[serde(default = "default_max_authorizer_cache_entries")]
    pub max_authorizer_cache_entries: usize,
    /// Bytes of arguments held by calls waiting for a callee (every callee
    /// at its concurrency), all callers together (0: no limit).
    #[serde(default = "default_max_queued_call_bytes")]
    pub max_queued_call_bytes: usize,
    /// Bytes of testaments all sessions of the realm may hold together
    /// (0: no limit).
    #[serde(default = "default_max_realm_testament_bytes")]
    pub max_testament_bytes: usize,
    /// Messages per second one session may send before it is slowed down
    /// (0, the default: no limit).
    #[serde(default)]
    pub max_messages_per_second: u32,
    /// Calls one session may have in flight (0: no limit).
    #[serde(default = "default_max_calls_in_flight")]
    pub max_calls_in_flight_per_session: usize,
    /// Longest URI (topic, procedure, error) a client may send, in bytes
    /// (`[limits] max_uri_length`).
    #[serde(default = "default_max_uri_length")]
    pub max_uri_length: usize,
    /// Bytes of retained events (payload and topic) the realm keeps at once.
    #[serde(default = "default_max_retained_bytes")]
    pub max_retained_bytes: usize,
    /// Testaments one session may hold per scope.
    #[serde(default = "default_max_testaments")]
    pub max_testaments_per_session: usize,
    /// Bytes of testaments (encoded) one session may hold, all scopes.
    #[serde(default = "default_max_testament_bytes")]
    pub max_testament_bytes_per_session: usize,
    /// The application's authenticator / authorizer reached another way
    /// than a WAMP procedure (set by the server: `authenticator_url`,
    /// `authorizer_url`).
    #[serde(skip)]
    pub app_auth: Option<crate::app_auth::AppAuthHandle>,
}

/// Default of `max_uri_length`.
pub const DEFAULT_MAX_URI_LENGTH: usize = 512;

fn default_max_uri_length() -> usize {
    DEFAULT_MAX_URI_LENGTH
}

fn default_max_retained_bytes() -> usize {
    BrokerConfig::default().max_retained_bytes
}

fn default_max_testaments() -> usize {
    64
}

fn default_max_testament_bytes() -> usize {
    256 * 1024
}

fn default_max_calls_in_flight() -> usize {
    DealerConfig::default().max_calls_in_flight_per_session
}

fn default_max_subscriptions() -> usize {
    10_000
}

fn default_max_registrations() -> usize {
    1_000
}

fn default_max_realm_subscriptions() -> usize {
    100_000
}

fn default_max_realm_registrations() -> usize {
    20_000
}

fn default_max_authorizer_cache_entries() -> usize {
    100_000
}

fn default_max_realm_testament_bytes() -> usize {
    64 << 20
}

fn default_max_queued_call_bytes() -> usize {
    DealerConfig::default().max_queued_call_bytes
}

fn default_authorizer_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(5)
}

fn default_retained_limit() -> usize {
    BrokerConfig::default().retained_limit
}

fn default_call_queue_limit() -> usize {
    DealerConfig::default().call_queue_limit
}

/// The authenticator a realm configuration describes: its principals and
/// JWT issuers (`[realm.auth]`), and the application's authenticator over
/// HTTP (`app_auth`) if it decides logins. The app's handle lives in the
/// authenticator itself, so a login checked against one snapshot asks that
/// snapshot's app, even across a reload.
fn authenticator_of(config: &RealmConfig) -> Authenticator {
    let mut auth = Authenticator::new(config.auth.clone());
    if let Some(app) = config.app_auth.as_ref().filter(|a| a.0.authenticates()) {
        auth.delegate_to_app(app.clone());
    }
    auth
}

/// The authorizer a realm configuration describes: the roles, and the
/// application's authorizer over HTTP (`app_auth`) if it decides actions,
/// else the authorizer procedure. As with [`authenticator_of`], the app's
/// handle travels with the snapshot.
fn authorizer_of(config: &RealmConfig) -> Authorizer {
    let dynamic = match config.app_auth.as_ref().filter(|a| a.0.authorizes()) {
        // The procedure's name is only what log lines call it.
        Some(a) => Some(DynamicAuthorizer {
            procedure: format!("the app ({})", a.0.name()),
            timeout: config.authorizer_timeout,
            app: Some(a.clone()),
        }),
        None => config
            .authorizer
            .clone()
            .map(|procedure| DynamicAuthorizer {
                procedure,
                timeout: config.authorizer_timeout,
                app: None,
            }),
    };
    Authorizer::new(config.roles.clone(), dynamic)
}

/// The keys of a realm that changed between `old` and `new` but are read
/// only when the realm is created.
fn restart_only_changes(old: &RealmConfig, new: &RealmConfig) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |key: &'static str, changed: bool| {
        if changed {
            out.push(key);
        }
    };
    check(
        "disclose_caller",
        old.disclose_caller != new.disclose_caller,
    );
    check(
        "disclose_publisher",
        old.disclose_publisher != new.disclose_publisher,
    );
    check(
        "call_queue_limit",
        old.call_queue_limit != new.call_queue_limit,
    );
    check(
        "retained_topics_limit",
        old.retained_topics_limit != new.retained_topics_limit,
    );
    check(
        "max_retained_bytes",
        old.max_retained_bytes != new.max_retained_bytes,
    );
    check(
        "max_calls_in_flight_per_session",
        old.max_calls_in_flight_per_session != new.max_calls_in_flight_per_session,
    );
    check(
        "max_queued_call_bytes",
        old.max_queued_call_bytes != new.max_queued_call_bytes,
    );
    check(
        "history",
        format!("{:?}", old.history) != format!("{:?}", new.history),
    );
    let throttle = |a: &AuthConfig| {
        (
            a.max_failures,
            a.max_failures_per_address,
            a.max_failures_per_authid,
            a.failure_window,
            a.failure_table_size,
        )
    };
    check(
        "auth.max_failures (and the other login throttle keys)",
        throttle(&old.auth) != throttle(&new.auth),
    );
    out
}

/// Whether a session's end is announced: its testaments published and
/// `wamp.session.on_leave` sent (every end but `wamp.session.kill_all`'s).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Farewell {
    Announced,
    Silent,
}

impl RealmConfig {
    /// A realm with every setting at its default.
    pub fn new(name: impl Into<String>) -> Self {
        RealmConfig {
            name: name.into(),
            uri_check: UriCheck::default(),
            disclose_caller: Disclosure::default(),
            call_queue_limit: default_call_queue_limit(),
            disclose_publisher: Disclosure::default(),
            retained_topics_limit: default_retained_limit(),
            history: Vec::new(),
            auth: AuthConfig::default(),
            roles: Vec::new(),
            authorizer: None,
            authorizer_timeout: default_authorizer_timeout(),
            max_subscriptions_per_session: default_max_subscriptions(),
            max_registrations_per_session: default_max_registrations(),
            max_subscriptions: default_max_realm_subscriptions(),
            max_registrations: default_max_realm_registrations(),
            max_authorizer_cache_entries: default_max_authorizer_cache_entries(),
            max_queued_call_bytes: default_max_queued_call_bytes(),
            max_testament_bytes: default_max_realm_testament_bytes(),
            max_messages_per_second: 0,
            max_calls_in_flight_per_session: default_max_calls_in_flight(),
            max_uri_length: default_max_uri_length(),
            max_retained_bytes: default_max_retained_bytes(),
            max_testaments_per_session: default_max_testaments(),
            max_testament_bytes_per_session: default_max_testament_bytes(),
            app_auth: None,
        }
    }
}

pub struct Realm {
    /// The realm's URI (never reloaded: a realm is not renamed).
    name: String,
    /// The settings, swapped whole by [`Realm::reload`]; read through
    /// [`Realm::config`].
    config: ArcSwap<RealmConfig>,
    /// The principals ([`Realm::auth`]), swapped by a reload.
    auth: ArcSwap<Authenticator>,
    /// The roles and the authorizer procedure ([`Realm::authz`]), swapped
    /// by a reload.
    authz: ArcSwap<Authorizer>,
    /// Bumped by every reload: an authorizer answer asked for before a
    /// reload is not cached after it.
    rules_generation: std::sync::atomic::AtomicU64,
    /// Calls the router makes itself (dynamic authentication/authorization).
    pub internal: InternalCaller,
    pub metrics: Arc<Metrics>,
    /// Recent login attempts per address, address and authid, authid.
    pub(crate) throttle: crate::auth::throttle::Throttle,
    pub broker: Arc<Broker>,
    pub dealer: Dealer,
    /// Authorizer answers cached by all sessions of the realm.
    pub(crate) authz_cached: Arc<std::sync::atomic::AtomicUsize>,
    /// Bytes of the testaments all sessions of the realm hold.
    pub(crate) testament_bytes: Arc<std::sync::atomic::AtomicUsize>,
    sessions: RwLock<HashMap<u64, Arc<Session>>>,
    /// The other nodes of a cluster (None: a single node).
    backplane: Option<Arc<dyn Backplane>>,
    /// Sees every accepted publication (the queues' topic bindings).
    publish_hook: OnceLock<Arc<dyn PublishHook>>,
}

impl Realm {
    /// A realm on a single node.
    pub fn new(config: RealmConfig, metrics: Arc<Metrics>) -> Self {
        Realm::with_backplane(config, metrics, None)
    }

    /// A realm whose Broker and Dealer hand what they cannot finish on
    /// this node to `backplane` (kept only if it is not local: see
    /// [`crate::backplane`]).
    pub fn with_backplane(
        config: RealmConfig,
        metrics: Arc<Metrics>,
        backplane: Option<Arc<dyn Backplane>>,
    ) -> Self {
        let backplane = backplane.filter(|b| !b.is_local());
        let broker = Arc::new(Broker::new(BrokerConfig {
            disclose_publisher: config.disclose_publisher,
            retained_limit: config.retained_topics_limit,
            max_retained_bytes: config.max_retained_bytes,
            metrics: Some(metrics.clone()),
            history: config.history.clone(),
            backplane: backplane.clone(),
        }));
        let meta_broker = broker.clone();
        let meta_backplane = backplane.clone();
        let dealer = Dealer::new(
            DealerConfig {
                disclose_caller: config.disclose_caller,
                call_queue_limit: config.call_queue_limit,
                max_calls_in_flight_per_session: config.max_calls_in_flight_per_session,
                max_queued_call_bytes: config.max_queued_call_bytes,
                metrics: Some(metrics.clone()),
                backplane: backplane.clone(),
            },
            Box::new(move |events| {
                if let Some(b) = &meta_backplane {
                    b.registrations_changed(&events);
                }
                registration_events(&meta_broker, events)
            }),
        );
        Realm {
            name: config.name.clone(),
            auth: ArcSwap::from_pointee(authenticator_of(&config)),
            authz: ArcSwap::from_pointee(authorizer_of(&config)),
            rules_generation: std::sync::atomic::AtomicU64::new(0),
            // Its calls (authenticator, authorizer) go only to exact
            // registrations of the configured procedures.
            internal: InternalCaller::default().exact_registrations_only(),
            metrics,
            throttle: crate::auth::throttle::Throttle::new(&config.auth),
            authz_cached: Arc::default(),
            testament_bytes: Arc::default(),
            config: ArcSwap::from_pointee(config),
            broker,
            dealer,
            sessions: RwLock::new(HashMap::new()),
            publish_hook: OnceLock::new(),
            backplane,
        }
    }

    /// The backplane the realm's Broker and Dealer use (None: a single node).
    pub fn backplane(&self) -> Option<&Arc<dyn Backplane>> {
        self.backplane.as_ref()
    }

    /// Installs the hook that sees every publication; false if one is
    /// installed already.
    pub fn set_publish_hook(&self, hook: Arc<dyn PublishHook>) -> bool {
        self.publish_hook.set(hook).is_ok()
    }

    /// Publishes an authorized publication: the publish hook first (it may
    /// refuse it, or hand back work the acknowledgement must wait for),
    /// then the Broker delivers it. Returns the publication id and that
    /// work, if any.
    pub fn publish(
        &self,
        publisher: &Arc<Session>,
        topic: &str,
        options: &Dict,
        payload: &Payload,
    ) -> Result<(u64, Option<HookFuture>), OpError> {
        let prepared = self.broker.prepare(publisher, options)?;
        let pending = match self.publish_hook.get() {
            None => None,
            Some(hook) => match hook.on_publish(publisher, topic, payload, &prepared) {
                HookOutcome::Pass => None,
                HookOutcome::Refuse(uri, message) => {
                    return Err((uri, message));
                }
                HookOutcome::After(f) => Some(f),
            },
        };
        let publication = self
            .broker
            .publish_prepared(publisher, topic, options, payload, prepared);
        Ok((publication, pending))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The realm's settings now (a reload may swap them).
    pub fn config(&self) -> Guard<Arc<RealmConfig>> {
        self.config.load()
    }

    /// The realm's principals and authentication settings now.
    pub fn auth(&self) -> Guard<Arc<Authenticator>> {
        self.auth.load()
    }

    /// The realm's roles and authorizer procedure now.
    pub fn authz(&self) -> Guard<Arc<Authorizer>> {
        self.authz.load()
    }

    /// Applies a reloaded configuration of this realm: roles and
    /// permissions, the authorizer procedure, principals and the realm's
    /// limits take effect for every check from now on, sessions included
    /// (they keep their authid and role; their cached authorizer answers
    /// are dropped). Returns the keys that changed but are read only when
    /// the realm is created (the Broker's and Dealer's settings, the login
    /// throttle): they keep their old values until a restart.
    pub fn reload(&self, new: RealmConfig) -> Vec<&'static str> {
        let old = self.config.load_full();
        let fixed = restart_only_changes(&old, &new);
        self.auth.store(Arc::new(authenticator_of(&new)));
        self.authz.store(Arc::new(authorizer_of(&new)));
        self.rules_generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.config.store(Arc::new(new));
        for s in self.sessions() {
            s.clear_cached_decisions();
        }
        fixed
    }

    /// Refuses a URI longer than `max_uri_length` (`what` names it in the
    /// error), before anything is looked up or kept for it.
    pub fn check_uri_length(&self, uri: &str, what: &str) -> Result<(), OpError> {
        let max = self.config().max_uri_length;
        if uri.len() <= max {
            return Ok(());
        }
        Metrics::inc(&self.metrics.limit_exceeded);
        Err((
            switchyard_proto::errors::INVALID_URI,
            format!(
                "{what} of {} bytes exceeds the maximum URI length of {max} bytes (max_uri_length)",
                uri.len()
            ),
        ))
    }

    /// May `s` do `action` on the concrete URI `uri`? Static roles, then
    /// the session's cache, then the authorizer procedure (for sessions the
    /// router runs itself, such as the HTTP bridge's).
    pub async fn authorize(
        self: &Arc<Self>,
        s: &Arc<Session>,
        action: Action,
        uri: &str,
    ) -> Decision {
        let decision = self.authz().decide(s, action, uri);
        match decision {
            Decision::Ask => match s.cached_decision(action, uri) {
                Some(d) => d,
                None => {
                    self.ask_authorizer(s.clone(), action, uri.to_string(), MatchPolicy::Exact)
                        .await
                }
            },
            d => d,
        }
    }

    /// Calls the realm's authorizer procedure about `action` on `uri` (with the
    /// match `policy` of a subscription or registration) by `s`.
    /// It answers a bool or `{allow, disclose, cache}`; anything else, an error
    /// or no answer in time denies.
    pub(crate) fn ask_authorizer(
        self: &Arc<Self>,
        s: Arc<Session>,
        action: Action,
        uri: String,
        policy: MatchPolicy,
    ) -> AskFuture {
        let realm = self.clone();
        let generation = self
            .rules_generation
            .load(std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            let Some(dynamic) = realm.authz().dynamic().cloned() else {
                return Decision::Deny;
            };
            let details = Dict::new()
                .with("session", s.id)
                .with("authid", s.authid.as_str())
                .with("authrole", s.authrole.as_str())
                .with("authmethod", s.authmethod.as_str())
                .with("authprovider", s.authprovider.as_str());
            let args = vec![
                switchyard_proto::Value::Dict(details),
                switchyard_proto::Value::from(uri.as_str()),
                switchyard_proto::Value::from(action.as_str()),
                switchyard_proto::Value::Dict(Dict::new().with("match", policy.as_str())),
            ];
            // The app of the same snapshot as the rules that asked.
            let reply = match &dynamic.app {
                Some(app) => {
                    let mut args = args.into_iter();
                    let (Some(Value::Dict(details)), Some(_), Some(_), Some(Value::Dict(options))) =
                        (args.next(), args.next(), args.next(), args.next())
                    else {
                        return Decision::Deny;
                    };
                    app.0
                        .authorize(details, &uri, action.as_str(), options)
                        .await
                        .map(crate::internal::Reply::single)
                }
                None => {
                    realm
                        .internal
                        .call(
                            &realm.dealer,
                            &dynamic.procedure,
                            args,
                            None,
                            dynamic.timeout,
                        )
                        .await
                }
            };
            let (decision, cache) = match reply {
                Ok(r) => match r.args.first() {
                    Some(switchyard_proto::Value::Bool(allow)) => (
                        if *allow {
                            Decision::Allow { disclose: false }
                        } else {
                            Decision::Deny
                        },
                        false,
                    ),
                    Some(switchyard_proto::Value::Dict(d)) => (
                        if d.get_bool("allow") == Some(true) {
                            Decision::Allow {
                                disclose: d.get_bool("disclose").unwrap_or(false),
                            }
                        } else {
                            Decision::Deny
                        },
                        d.get_bool("cache").unwrap_or(false),
                    ),
                    _ => {
                        tracing::warn!(
                            procedure = dynamic.procedure,
                            "the authorizer answered neither a bool nor a dict with \"allow\": denied"
                        );
                        (Decision::Deny, false)
                    }
                },
                Err(f) => {
                    tracing::warn!(
                        procedure = dynamic.procedure,
                        error = %Clip(&f.error),
                        "the authorizer failed, denied: {}",
                        Clip(&f.message)
                    );
                    (Decision::Deny, false)
                }
            };
            // Not kept if the rules were reloaded meanwhile.
            let current = realm
                .rules_generation
                .load(std::sync::atomic::Ordering::SeqCst);
            if cache && current == generation {
                let max = realm.config().max_authorizer_cache_entries;
                let key = crate::authz::cache_key(&uri, policy);
                if !s.cache_decision(action, &key, decision, &realm.authz_cached, max) {
                    Metrics::inc(&realm.metrics.limit_exceeded);
                    tracing::debug!(
                        session = s.id,
                        max,
                        "authorizer answer not cached: the realm's sessions hold {max} (max_authorizer_cache_entries)"
                    );
                }
            }
            decision
        })
    }

    /// A denial: counted, logged, and the `wamp.error.not_authorized` error
    /// naming the action and the URI.
    pub(crate) fn not_authorized(&self, s: &Session, action: Action, uri: &str) -> OpError {
        Metrics::inc(&self.metrics.not_authorized);
        tracing::info!(
            session = s.id,
            authid = %Clip(&s.authid),
            authrole = %Clip(&s.authrole),
            action = action.as_str(),
            uri = %Clip(uri),
            "not authorized"
        );
        (
            switchyard_proto::errors::NOT_AUTHORIZED,
            format!(
                "session {} (authid \"{}\", role \"{}\") is not authorized to {action} \"{uri}\"",
                s.id, s.authid, s.authrole
            ),
        )
    }

    /// Checks an AUTHENTICATE: by the authenticator itself, or (a ticket
    /// of an authid it does not know) by a call to the realm's
    /// authenticator procedure, which the realm makes.
    pub(crate) fn verify(
        self: &Arc<Self>,
        pending: Box<auth::Pending>,
        signature: String,
        transport: &TransportInfo,
    ) -> auth::VerdictFuture {
        match auth::verify(pending, signature, &self.auth(), self.name(), transport) {
            auth::Check::Local(verdict) => verdict,
            auth::Check::Ask(mut ask) => {
                let realm = self.clone();
                let args = std::mem::take(&mut ask.args);
                Box::pin(async move {
                    let answer = match (&ask.procedure, &ask.app) {
                        (Some(procedure), _) => {
                            realm
                                .internal
                                .call(&realm.dealer, procedure, args, None, ask.timeout)
                                .await
                        }
                        (None, Some(app)) => {
                            let mut args = args.into_iter().skip(1);
                            let (Some(Value::Str(authid)), Some(Value::Dict(details))) =
                                (args.next(), args.next())
                            else {
                                return auth::unexpected("a login without details");
                            };
                            app.0
                                .authenticate(realm.name(), &authid, details)
                                .await
                                .map(crate::internal::Reply::single)
                        }
                        (None, None) => return auth::unexpected("a login nobody can check"),
                    };
                    auth::authenticator_verdict(&realm.auth(), &ask, answer)
                })
            }
        }
    }

    /// A random session id no session of this realm has now.
    pub(crate) fn unused_session_id(&self) -> u64 {
        let sessions = self.sessions.read();
        crate::unused_random_id(|id| sessions.contains_key(&id))
    }

    /// Adds a session; false if the id is taken (the caller draws another).
    /// The caller announces it with [`Realm::announce_join`] after WELCOME.
    pub(crate) fn join(&self, session: Arc<Session>) -> bool {
        let mut s = self.sessions.write();
        if s.contains_key(&session.id) {
            return false;
        }
        s.insert(session.id, session);
        true
    }

    /// Publishes `wamp.session.on_join`.
    pub(crate) fn announce_join(&self, session: &Session) {
        self.broker.publish_meta("wamp.session.on_join", || {
            vec![Value::Dict(session_details(session))]
        });
    }

    /// Removes a session and everything it held, and publishes what changed.
    /// Idempotent.
    pub(crate) fn leave(&self, session: &Session) {
        self.remove(session, Farewell::Announced);
    }

    fn remove(&self, session: &Session, farewell: Farewell) {
        if !session.mark_gone() {
            return;
        }
        let testaments = session.take_testaments();
        if farewell == Farewell::Silent {
            if !testaments.is_empty() {
                tracing::debug!(
                    session = session.id,
                    count = testaments.len(),
                    "testaments dropped: the session was closed by wamp.session.kill_all"
                );
            }
            self.sessions.write().remove(&session.id);
            self.broker.remove_session(session.id);
            self.dealer.remove_session(session);
            if let Some(b) = &self.backplane {
                b.session_left(session);
            }
            return;
        }
        // Testaments go out while the session still exists (as publisher),
        // "detached" before "destroyed" (spec "Session Testament").
        for t in testaments {
            if let Err((uri, message)) = self
                .broker
                .publish(session, &t.topic, &t.options, &t.payload)
            {
                tracing::info!(
                    session = session.id,
                    topic = %Clip(&t.topic),
                    "testament not published: {uri}: {}",
                    Clip(&message)
                );
            }
        }
        self.sessions.write().remove(&session.id);
        self.broker.remove_session(session.id);
        self.dealer.remove_session(session);
        if let Some(b) = &self.backplane {
            b.session_left(session);
        }
        self.broker.publish_meta("wamp.session.on_leave", || {
            vec![
                Value::UInt(session.id),
                Value::Str(session.authid.clone()),
                Value::Str(session.authrole.clone()),
            ]
        });
    }

    /// Ends a session from the router's side: GOODBYE with `reason` (and
    /// `message`, if any), then the transport closes.
    pub fn kill(&self, session: &Session, reason: &str, message: Option<&str>) {
        self.close(session, reason, message, Farewell::Announced);
    }

    /// [`Realm::kill`] without the session's testaments and its
    /// `wamp.session.on_leave` meta event: what `wamp.session.kill_all` does
    /// to every session but its caller ("Closing all sessions in the realm
    /// will not generate session meta events or testament events", spec
    /// "Session Meta Procedures").
    pub fn kill_silently(&self, session: &Session, reason: &str, message: Option<&str>) {
        self.close(session, reason, message, Farewell::Silent);
    }

    fn close(&self, session: &Session, reason: &str, message: Option<&str>, farewell: Farewell) {
        let mut details = Dict::new();
        if let Some(m) = message {
            details.insert("message", m);
        }
        session.send(&Message::Goodbye {
            details,
            reason: reason.to_string(),
        });
        tracing::info!(session = session.id, reason = %Clip(reason), "session killed");
        self.remove(session, farewell);
        session.peer.close_after_flush();
    }

    pub fn session(&self, id: u64) -> Option<Arc<Session>> {
        self.sessions.read().get(&id).cloned()
    }

    pub fn sessions(&self) -> Vec<Arc<Session>> {
        self.sessions.read().values().cloned().collect()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.read().len()
    }
}

/// `RegistrationDetails` of the registration meta API.
pub fn registration_details(info: &RegistrationInfo) -> Dict {
    pattern_details(info.id, info.created, &info.uri, info.policy)
        .with("invoke", info.invoke.as_str())
}

/// Publishes the registration meta events (`wamp.registration.on_*`).
fn registration_events(broker: &Broker, events: Vec<RegistrationEvent>) {
    for e in events {
        let (topic, args) = match e {
            RegistrationEvent::Created { session, info } => (
                "wamp.registration.on_create",
                vec![
                    Value::UInt(session),
                    Value::Dict(registration_details(&info)),
                ],
            ),
            RegistrationEvent::Registered {
                session,
                registration,
            } => (
                "wamp.registration.on_register",
                vec![Value::UInt(session), Value::UInt(registration)],
            ),
            RegistrationEvent::Unregistered {
                session,
                registration,
            } => (
                "wamp.registration.on_unregister",
                vec![Value::UInt(session), Value::UInt(registration)],
            ),
            RegistrationEvent::Deleted {
                session,
                registration,
            } => (
                "wamp.registration.on_delete",
                vec![Value::UInt(session), Value::UInt(registration)],
            ),
        };
        broker.publish_from_router(topic, &Payload::values(args, None));
    }
}
