//! A service that stays up across router restarts: it registers a
//! procedure and subscribes to a topic through a `ReconnectingSession`,
//! prints every status change, and keeps serving after the router comes
//! back (restart the router while it runs). Ctrl-C leaves.
//!
//! ```text
//! cargo run -p switchyard-client --example reconnecting -- ws://127.0.0.1:8080/ws
//! switchyard call com.example.hello world          # "hello, world"
//! switchyard publish com.example.news 'router restarted?'
//! ```

use std::sync::Arc;
use std::time::Duration;

use switchyard_client::reconnect::Connector;
use switchyard_client::{
    payload, Dict, ReconnectOptions, ReconnectingSession, Serializer, Session, SessionOptions,
    Value, WampError,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let connector: Connector = Arc::new(move || {
        let url = url.clone();
        Box::pin(async move {
            let mut o = SessionOptions::new(Serializer::Json);
            // Notice a silent router within 15 s.
            o.ping_interval = Duration::from_secs(10);
            o.ping_timeout = Duration::from_secs(5);
            Session::connect_with(&url, "realm1", o).await
        })
    });
    let service = ReconnectingSession::start(connector, ReconnectOptions::default()).await?;

    service
        .register_raw("com.example.hello", Dict::new(), |inv| async move {
            let args = inv.args().map_err(|e| {
                WampError::with_message("wamp.error.invalid_argument", e.to_string())
            })?;
            let who = args.first().and_then(Value::as_str).unwrap_or("stranger");
            Ok(payload(
                vec![Value::from(format!("hello, {who}"))],
                Dict::new(),
            ))
        })
        .await?;
    let (tx, mut news) = tokio::sync::mpsc::channel(64);
    service
        .subscribe_into("com.example.news", Dict::new(), tx)
        .await?;

    let mut status = service.status();
    loop {
        tokio::select! {
            Some(ev) = news.recv() => println!("news: {:?}", ev.args()),
            Ok(()) = status.changed() => println!("status: {:?}", *status.borrow_and_update()),
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    service.leave().await?;
    Ok(())
}
