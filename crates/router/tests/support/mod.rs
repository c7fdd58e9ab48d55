//! In-process clients for router-core tests: a real `Connection` and `Peer`
//! fed encoded frames, with the outbound queue read back and decoded. No
//! sockets: these tests check the router core's own invariants (the socket
//! paths are covered by the server crate's and the interop suites).

#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use switchyard_proto::{Dict, Message, Payload, Serializer, Value};
use switchyard_router::{
    Connection, Flow, Outgoing, Peer, Router, SlowConsumerPolicy, TransportInfo,
};

pub struct Client {
    pub conn: Connection,
    rx: switchyard_router::OutboundRx,
    pub session: u64,
    next: u64,
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

impl Client {
    pub fn join(router: &Arc<Router>, details: Dict) -> Client {
        let (peer, rx) = Peer::new(
            Serializer::Json,
            1 << 16,
            SlowConsumerPolicy::Disconnect,
            1 << 20,
            "test".into(),
        );
        let conn = Connection::new(router.clone(), peer, TransportInfo::new("rawsocket", None));
        let mut c = Client {
            conn,
            rx,
            session: 0,
            next: 0,
        };
        c.send(Message::Hello {
            realm: "realm1".into(),
            details,
        });
        match c.recv() {
            Some(Message::Welcome { session, .. }) => c.session = session,
            other => panic!("expected WELCOME, got {other:?}"),
        }
        c
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
            Ok(Outgoing::Close) | Err(_) => None,
        }
    }

    pub fn drain(&mut self) -> Vec<Message> {
        std::iter::from_fn(|| self.recv()).collect()
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
}

pub fn router() -> Arc<Router> {
    Router::new(vec![switchyard_router::RealmConfig::new("realm1")])
}

pub fn first_arg(p: &Payload) -> Value {
    match p.args.as_ref().map(|a| a.to_value()) {
        Some(Ok(Value::List(mut l))) if !l.is_empty() => l.remove(0),
        other => panic!("no first argument: {other:?}"),
    }
}
