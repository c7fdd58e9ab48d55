//! The send queue is bounded: against a peer that stops reading, publishing
//! stops making progress (the caller waits) instead of queueing without
//! limit, and resumes once the peer reads again.

use std::time::Duration;

use switchyard_client::{raw_payload, Dict, Serializer, Session, SessionOptions, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A RawSocket "router" that answers the handshake and HELLO, then reads
/// nothing until `resume` fires, then reads everything.
async fn stalling_router(listener: TcpListener, resume: oneshot::Receiver<()>) -> u64 {
    let (mut s, _) = listener.accept().await.expect("accept");
    let mut hs = [0u8; 4];
    s.read_exact(&mut hs).await.expect("handshake");
    s.write_all(&[0x7F, 0xF1, 0, 0]).await.expect("reply");
    let mut header = [0u8; 4];
    s.read_exact(&mut header).await.expect("HELLO header");
    let len =
        (usize::from(header[1]) << 16) | (usize::from(header[2]) << 8) | usize::from(header[3]);
    let mut hello = vec![0u8; len];
    s.read_exact(&mut hello).await.expect("HELLO");
    let welcome = br#"[2,1,{"roles":{"broker":{},"dealer":{}}}]"#;
    let mut frame = vec![0, 0, 0, welcome.len() as u8];
    frame.extend_from_slice(welcome);
    s.write_all(&frame).await.expect("WELCOME");
    let _ = resume.await;
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n as u64,
        }
    }
}

#[tokio::test]
async fn publishing_waits_while_the_peer_does_not_read() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("rs://{}", listener.local_addr().expect("addr"));
    let (resume, resumed) = oneshot::channel();
    let router = tokio::spawn(stalling_router(listener, resumed));

    let mut opts = SessionOptions::new(Serializer::Json);
    opts.transport.send_queue = 4;
    let session = Session::connect_with(&url, "realm1", opts)
        .await
        .expect("joins");
    let payload = raw_payload(Serializer::Json, &[Value::Str("x".repeat(256 << 10))]);
    let mut sent = 0u32;
    let blocked = loop {
        let publish = session.publish_with("com.example.big", Dict::new(), payload.clone());
        match tokio::time::timeout(Duration::from_millis(300), publish).await {
            Ok(r) => {
                r.expect("queued");
                sent += 1;
                // 400 x 256 KiB = 100 MiB: far beyond any socket buffer.
                assert!(
                    sent < 400,
                    "publishing never waited: the queue is unbounded"
                );
            }
            Err(_) => break sent,
        }
    };
    assert!(blocked >= 4, "the first frames fit: {blocked}");
    assert!(
        session.sender().queued() <= 4,
        "at most send_queue frames queued"
    );

    // The peer reads again: publishing goes on.
    resume.send(()).expect("resume");
    for _ in 0..20 {
        tokio::time::timeout(
            Duration::from_secs(5),
            session.publish_with("com.example.big", Dict::new(), payload.clone()),
        )
        .await
        .expect("publishing resumes")
        .expect("queued");
    }
    drop(session);
    let total = tokio::time::timeout(Duration::from_secs(10), router)
        .await
        .expect("router ends")
        .expect("router task");
    assert!(
        total >= u64::from(blocked + 20) * (256 << 10),
        "every frame was written: {total}"
    );
}
