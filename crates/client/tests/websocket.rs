//! The WebSocket transport and a session over it, against a minimal fake
//! router built on tokio-websockets' server side (no Switchyard needed).

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use switchyard_client::{Dict, Message, Serializer, Session, Value};
use tokio::net::TcpListener;
use tokio_websockets::{Message as WsMessage, ServerBuilder};

type Ws = tokio_websockets::WebSocketStream<tokio::net::TcpStream>;

async fn next(ws: &mut Ws, ser: Serializer) -> Message {
    loop {
        let m = ws.next().await.expect("frame").expect("ws");
        if m.is_text() || m.is_binary() {
            assert_eq!(m.is_binary(), ser.is_binary(), "frame type");
            let b: Bytes = m.into_payload().into();
            return Message::decode(ser, &b).expect("decode");
        }
    }
}

async fn fake_router(listener: TcpListener, ser: Serializer) {
    let (tcp, _) = listener.accept().await.expect("accept");
    let (_req, mut ws) = ServerBuilder::new()
        .add_header(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            http::HeaderValue::from_static(ser.subprotocol()),
        )
        .expect("header")
        .accept(tcp)
        .await
        .expect("upgrade");
    assert!(matches!(next(&mut ws, ser).await, Message::Hello { .. }));
    send(
        &mut ws,
        ser,
        Message::Welcome {
            session: 7,
            details: Dict::new(),
        },
    )
    .await;
    let mut out = Vec::new();
    let Message::Register { request, .. } = next(&mut ws, ser).await else {
        panic!("register")
    };
    out.push(Message::Registered {
        request,
        registration: 3,
    });
    out.push(Message::Invocation {
        request: 11,
        registration: 3,
        details: Dict::new(),
        payload: switchyard_client::payload(vec![Value::UInt(20)], Dict::new()),
    });
    for m in out.drain(..) {
        send(&mut ws, ser, m).await;
    }
    // The YIELD and the client's GOODBYE may come in either order.
    let (mut got_yield, mut got_goodbye) = (false, false);
    while !(got_yield && got_goodbye) {
        match next(&mut ws, ser).await {
            Message::Yield {
                request, payload, ..
            } => {
                assert_eq!(request, 11);
                let args = payload.args.expect("args").to_value().expect("value");
                assert_eq!(args, Value::List(vec![Value::UInt(21)]));
                got_yield = true;
            }
            Message::Goodbye { .. } => got_goodbye = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    send(
        &mut ws,
        ser,
        Message::Goodbye {
            details: Dict::new(),
            reason: "wamp.close.goodbye_and_out".into(),
        },
    )
    .await;
}

async fn send(ws: &mut Ws, ser: Serializer, m: Message) {
    let b = m.encode(ser).expect("encode");
    let frame = if ser.is_binary() {
        WsMessage::binary(b)
    } else {
        WsMessage::text(tokio_websockets::Payload::from(b))
    };
    ws.send(frame).await.expect("send");
}

#[tokio::test]
async fn session_over_websocket_all_serializers() {
    for ser in Serializer::ALL {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let router = tokio::spawn(fake_router(listener, ser));
        let url = format!("ws://127.0.0.1:{port}/ws");
        let s = Session::connect(&url, "realm1", ser).await.expect("join");
        assert_eq!(s.id(), 7);
        s.register(
            "com.example.inc",
            |args: Vec<Value>, _kw: Dict| async move {
                let n = args.first().and_then(Value::as_u64).unwrap_or(0);
                Ok((vec![Value::UInt(n + 1)], Dict::new()))
            },
        )
        .await
        .expect("register");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let info = s.leave().await.expect("leave");
        assert_eq!(info.reason, "wamp.close.goodbye_and_out");
        router.await.expect("router");
    }
}

#[tokio::test]
async fn websocket_subprotocol_refusal() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        // Accepts the upgrade without selecting a subprotocol.
        let _ws = ServerBuilder::new().accept(tcp).await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    });
    let err = switchyard_client::connect(
        &format!("ws://127.0.0.1:{port}/ws"),
        switchyard_client::TransportOptions::new(Serializer::Cbor),
    )
    .await
    .err()
    .expect("refused");
    assert!(err.to_string().contains("subprotocol"), "{err}");
}
