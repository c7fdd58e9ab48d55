//! In-process clients for router-core tests: a real `Connection` and `Peer`
//! fed encoded frames, with the outbound queue read back and decoded. No
//! sockets: these tests check the router core's own invariants (the socket
//! paths are covered by the server crate's and the interop suites).
//!
//! Only the router crate's public surface is used (`Router`, `RealmConfig`
//! built from the config file's JSON shape, `Connection`, `Peer`), so the
//! tests survive refactorings of the crate's insides.

#![allow(dead_code)]

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use switchyard_proto::message::code;
use switchyard_proto::{Dict, Message, Payload, Serializer, Value};
use switchyard_router::{
    Connection, Flow, Outgoing, Peer, RealmConfig, Router, SlowConsumerPolicy, TransportInfo,
};

pub struct Client {
    pub conn: Connection,
    rx: switchyard_router::OutboundRx,
    pub session: u64,
    next: u64,
    /// The router asked the transport to close (after what was queued).
    pub closed: bool,
}

/// HELLO.Details announcing the given caller and callee features.
pub fn hello_details(caller: &[&str], callee: &[&str]) -> Dict {
    let feats = |names: &[&str]| {
        Dict::new().with(
            "features",
            names.iter().fold(Dict::new(), |d, n| d.with(*n, true)),
        )
    };
    Dict::new().with(
        "roles",
        Dict::new()
            .with("caller", feats(caller))
            .with("callee", feats(callee))
            .with("publisher", Dict::new())
            .with("subscriber", Dict::new()),
    )
}

/// HELLO.Details of a client of every role with no advanced feature.
pub fn plain() -> Dict {
    hello_details(&[], &[])
}

impl Client {
    /// A connection that has not sent HELLO yet.
    pub fn connect(router: &Arc<Router>) -> Client {
        Client::connect_accepting(router, 1 << 20)
    }

    /// A connection whose client accepts messages of at most `max_message`
    /// bytes (RawSocket's handshake lets a client say so).
    pub fn connect_accepting(router: &Arc<Router>, max_message: usize) -> Client {
        let (peer, rx) = Peer::new(
            Serializer::Json,
            1 << 16,
            SlowConsumerPolicy::Disconnect,
            max_message,
            "test".into(),
        );
        let conn = Connection::new(router.clone(), peer, TransportInfo::new("rawsocket", None));
        Client {
            conn,
            rx,
            session: 0,
            next: 0,
            closed: false,
        }
    }

    /// A session of `realm1` (panics unless WELCOME comes back).
    pub fn join(router: &Arc<Router>, details: Dict) -> Client {
        Client::join_realm(router, "realm1", details)
    }

    pub fn join_realm(router: &Arc<Router>, realm: &str, details: Dict) -> Client {
        let mut c = Client::connect(router);
        c.send(Message::Hello {
            realm: realm.into(),
            details,
        });
        c.expect_welcome();
        c
    }

    /// Reads WELCOME, records the session id and returns its details.
    pub fn expect_welcome(&mut self) -> Dict {
        match self.recv() {
            Some(Message::Welcome { session, details }) => {
                self.session = session;
                details
            }
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }

    /// Logs in to `realm1` with WAMP-CRA: HELLO, CHALLENGE, AUTHENTICATE
    /// signed with `secret`, then the router's check. WELCOME or ABORT.
    pub async fn wampcra(router: &Arc<Router>, authid: &str, secret: &str) -> (Client, Message) {
        let mut c = Client::connect(router);
        c.send(Message::Hello {
            realm: "realm1".into(),
            details: plain()
                .with("authid", authid)
                .with("authmethods", Value::List(vec!["wampcra".into()])),
        });
        let challenge = match c.recv() {
            Some(Message::Challenge { method, extra }) => {
                assert_eq!(method, "wampcra");
                extra
                    .get_str("challenge")
                    .expect("CHALLENGE.extra.challenge")
                    .to_string()
            }
            other => return (c, other.expect("an answer to HELLO")),
        };
        let flow = c.send(Message::Authenticate {
            signature: cra_sign(secret, &challenge),
            extra: Dict::new(),
        });
        assert_eq!(flow, Flow::Suspend, "AUTHENTICATE is checked in resume()");
        c.conn.resume().await;
        let answer = c.recv().expect("WELCOME or ABORT after AUTHENTICATE");
        if let Message::Welcome { session, .. } = &answer {
            c.session = *session;
        }
        (c, answer)
    }

    /// A WAMP-CRA session that must be welcomed.
    pub async fn join_wampcra(router: &Arc<Router>, authid: &str, secret: &str) -> Client {
        match Client::wampcra(router, authid, secret).await {
            (c, Message::Welcome { .. }) => c,
            (_, other) => panic!("expected WELCOME for {authid}, got {other:?}"),
        }
    }

    pub fn req(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    pub fn send(&mut self, msg: Message) -> Flow {
        let frame: Bytes = msg.encode(Serializer::Json).expect("encode");
        self.conn.handle_frame(&frame)
    }

    /// The next queued message, if any.
    pub fn recv(&mut self) -> Option<Message> {
        match self.rx.try_recv() {
            Ok(Outgoing::Frame(f)) => Some(Message::decode(Serializer::Json, &f).expect("decode")),
            Ok(Outgoing::Close) => {
                self.closed = true;
                None
            }
            Err(_) => None,
        }
    }

    pub fn drain(&mut self) -> Vec<Message> {
        std::iter::from_fn(|| self.recv()).collect()
    }

    /// The one message the router queued, which must be ABORT: its reason.
    pub fn expect_abort(&mut self) -> String {
        match self.drain().as_slice() {
            [Message::Abort { reason, .. }] => {
                self.recv();
                assert!(self.closed, "ABORT without closing the transport");
                reason.clone()
            }
            other => panic!("expected ABORT, got {other:?}"),
        }
    }

    pub fn register(&mut self, procedure: &str, options: Dict) -> u64 {
        let request = self.req();
        self.send(Message::Register {
            request,
            options,
            procedure: procedure.into(),
        });
        match self.recv() {
            Some(Message::Registered { registration, .. }) => registration,
            other => panic!("expected REGISTERED, got {other:?}"),
        }
    }

    pub fn call(&mut self, procedure: &str, options: Dict, args: Vec<Value>) -> u64 {
        let request = self.req();
        self.send(Message::Call {
            request,
            options,
            procedure: procedure.into(),
            payload: Payload::values(args, None),
        });
        request
    }

    /// Calls `procedure` (the meta API answers at once) and returns the
    /// RESULT's payload, or the ERROR's URI.
    pub fn call_now(&mut self, procedure: &str, args: Vec<Value>) -> Result<Payload, String> {
        let request = self.call(procedure, Dict::new(), args);
        match self.recv() {
            Some(Message::Result {
                request: r,
                payload,
                ..
            }) if r == request => Ok(payload),
            Some(Message::Error {
                request_type,
                request: r,
                error,
                ..
            }) if request_type == code::CALL && r == request => Err(error),
            other => panic!("expected RESULT or ERROR for CALL {request}, got {other:?}"),
        }
    }

    /// Sends SUBSCRIBE; SUBSCRIBED's subscription id or the ERROR's URI.
    pub fn try_subscribe(&mut self, topic: &str, options: Dict) -> Result<u64, String> {
        let request = self.req();
        self.send(Message::Subscribe {
            request,
            options,
            topic: topic.into(),
        });
        match self.recv() {
            Some(Message::Subscribed {
                request: r,
                subscription,
            }) if r == request => Ok(subscription),
            Some(Message::Error {
                request_type,
                request: r,
                error,
                ..
            }) if request_type == code::SUBSCRIBE && r == request => Err(error),
            other => panic!("expected SUBSCRIBED or ERROR for SUBSCRIBE {request}, got {other:?}"),
        }
    }

    pub fn subscribe(&mut self, topic: &str, options: Dict) -> u64 {
        self.try_subscribe(topic, options)
            .unwrap_or_else(|e| panic!("SUBSCRIBE {topic} refused: {e}"))
    }

    /// Sends PUBLISH; returns its request id.
    pub fn publish(&mut self, topic: &str, options: Dict, args: Vec<Value>) -> u64 {
        let request = self.req();
        self.send(Message::Publish {
            request,
            options,
            topic: topic.into(),
            payload: Payload::values(args, None),
        });
        request
    }

    /// Publishes with `acknowledge`: PUBLISHED's publication id or the
    /// ERROR's URI.
    pub fn publish_ack(
        &mut self,
        topic: &str,
        options: Dict,
        args: Vec<Value>,
    ) -> Result<u64, String> {
        let request = self.publish(topic, options.with("acknowledge", true), args);
        match self.recv() {
            Some(Message::Published {
                request: r,
                publication,
            }) if r == request => Ok(publication),
            Some(Message::Error {
                request_type,
                request: r,
                error,
                ..
            }) if request_type == code::PUBLISH && r == request => Err(error),
            other => panic!("expected PUBLISHED or ERROR for PUBLISH {request}, got {other:?}"),
        }
    }

    /// Sends REGISTER; REGISTERED's registration id or the ERROR's URI.
    pub fn try_register(&mut self, procedure: &str, options: Dict) -> Result<u64, String> {
        let request = self.req();
        self.send(Message::Register {
            request,
            options,
            procedure: procedure.into(),
        });
        match self.recv() {
            Some(Message::Registered {
                request: r,
                registration,
            }) if r == request => Ok(registration),
            Some(Message::Error {
                request_type,
                request: r,
                error,
                ..
            }) if request_type == code::REGISTER && r == request => Err(error),
            other => panic!("expected REGISTERED or ERROR for REGISTER {request}, got {other:?}"),
        }
    }

    /// Every queued EVENT (anything else queued is a failure).
    pub fn events(&mut self) -> Vec<Event> {
        self.drain()
            .into_iter()
            .map(|m| match m {
                Message::Event {
                    subscription,
                    publication,
                    details,
                    payload,
                } => Event {
                    subscription,
                    publication,
                    details,
                    payload,
                },
                other => panic!("expected only EVENTs, got {other:?}"),
            })
            .collect()
    }
}

/// An EVENT as a subscriber saw it.
#[derive(Debug, Clone)]
pub struct Event {
    pub subscription: u64,
    pub publication: u64,
    pub details: Dict,
    pub payload: Payload,
}

impl Event {
    pub fn arg(&self) -> Value {
        first_arg(&self.payload)
    }
}

pub fn router() -> Arc<Router> {
    Router::new(vec![RealmConfig::new("realm1")])
}

/// A router with one realm `realm1` configured as `[[realm]]` in the
/// config file would be (`name` is added), given as JSON.
pub fn router_with(realm: serde_json::Value) -> Arc<Router> {
    let mut realm = realm;
    realm["name"] = "realm1".into();
    let config: RealmConfig = serde_json::from_value(realm).expect("realm config");
    Router::new(vec![config])
}

pub fn first_arg(p: &Payload) -> Value {
    match p.args.as_ref().map(|a| a.to_value()) {
        Some(Ok(Value::List(mut l))) if !l.is_empty() => l.remove(0),
        other => panic!("no first argument: {other:?}"),
    }
}

/// All positional arguments of a payload.
pub fn args(p: &Payload) -> Vec<Value> {
    match p.args.as_ref().map(|a| a.to_value()) {
        None => Vec::new(),
        Some(Ok(Value::List(l))) => l,
        other => panic!("arguments are not a list: {other:?}"),
    }
}

/// A WAMP-CRA signature: base64(HMAC-SHA256(secret, challenge)), computed
/// here from the spec, not by the router's own code.
pub fn cra_sign(secret: &str, challenge: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(challenge.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `[realm.auth]` with anonymous and WAMP-CRA logins for `users`
/// (authid, role); each user's secret is [`secret_of`] its authid.
pub fn cra_users(users: &[(&str, &str)]) -> serde_json::Value {
    let principals: Vec<serde_json::Value> = users
        .iter()
        .map(|(authid, role)| {
            serde_json::json!({"authid": authid, "secret": secret_of(authid), "role": role})
        })
        .collect();
    serde_json::json!({"methods": ["anonymous", "wampcra"], "wampcra": principals})
}

/// The WAMP-CRA secret [`cra_users`] gives `authid`.
pub fn secret_of(authid: &str) -> String {
    format!("secret-of-{authid}")
}

impl Client {
    /// A session of a user of [`cra_users`].
    pub async fn user(router: &Arc<Router>, authid: &str) -> Client {
        Client::join_wampcra(router, authid, &secret_of(authid)).await
    }
}
