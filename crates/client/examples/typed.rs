//! A service and its client with typed arguments (serde) instead of
//! `Vec<Value>`/`Dict`: registers `com.example.quote` taking a struct (keyword
//! arguments) and `com.example.add` taking a tuple (positional arguments),
//! subscribes to `com.example.reading` with a typed handler, then calls and
//! publishes them itself and prints what came back. The rules are in
//! docs/CLIENT-RUST.md and the `switchyard_client::typed` module.
//!
//! ```text
//! switchyard --config switchyard.example.toml &
//! cargo run -p switchyard-client --example typed -- ws://127.0.0.1:8080/ws
//! switchyard call com.example.add 2 3                       # 5
//! switchyard call com.example.quote --kw item=pen --kw qty=3
//!     # {"args":[],"kwargs":{"item":"pen","total_cents":450}}
//! switchyard call com.example.quote --kw item=pen
//!     # wamp.error.invalid_argument: com.example.quote: invalid arguments: missing field `qty`
//! switchyard publish com.example.reading --kw sensor=cli --kw celsius=4
//! ```

use serde::{Deserialize, Serialize};
use switchyard_client::{CallError, Serializer, Session, WampError};

/// The keyword arguments of `com.example.quote`.
#[derive(Debug, Serialize, Deserialize)]
struct QuoteRequest {
    item: String,
    qty: u32,
    /// Optional: absent, `null` or a string.
    #[serde(default)]
    coupon: Option<String>,
}

/// Its result: a struct, so it travels as keyword arguments.
#[derive(Debug, Serialize, Deserialize)]
struct Quote {
    item: String,
    total_cents: u64,
}

/// An event: a struct, published as keyword arguments.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reading {
    sensor: String,
    celsius: f64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let service = Session::connect(&url, "realm1", Serializer::MsgPack).await?;

    // Positional arguments: a tuple. Arguments that do not fit are answered
    // with wamp.error.invalid_argument before the handler runs.
    service
        .register_typed("com.example.add", |(a, b): (i64, i64)| async move {
            a.checked_add(b)
                .ok_or_else(|| WampError::with_message("com.example.error.overflow", "too big"))
        })
        .await?;

    // Keyword arguments: a struct.
    service
        .register_typed("com.example.quote", |q: QuoteRequest| async move {
            let unit = match q.item.as_str() {
                "pen" => 150,
                "book" => 1200,
                other => {
                    return Err(CallError::with_message(
                        "com.example.error.unknown_item",
                        format!("no such item: {other}"),
                    ))
                }
            };
            let mut total = unit * u64::from(q.qty);
            if q.coupon.as_deref() == Some("HALF") {
                total /= 2;
            }
            Ok(Quote {
                item: q.item,
                total_cents: total,
            })
        })
        .await?;

    // Events that do not deserialize into a Reading are skipped (logged).
    service
        .subscribe_typed("com.example.reading", |r: Reading| async move {
            println!("reading: {} at {} °C", r.sensor, r.celsius);
        })
        .await?;

    // A caller (another session: the router does not echo one's own events).
    let client = Session::connect(&url, "realm1", Serializer::Json).await?;
    let sum: i64 = client.call_typed("com.example.add", (2, 3)).await?;
    println!("add(2, 3) = {sum}");
    let quote: Quote = client
        .call_typed(
            "com.example.quote",
            QuoteRequest {
                item: "book".into(),
                qty: 2,
                coupon: Some("HALF".into()),
            },
        )
        .await?;
    println!("quote: {quote:?}");
    match client
        .call_typed::<Quote>("com.example.quote", ("not", "a struct"))
        .await
    {
        Err(e) => println!("refused as expected: {e}"),
        Ok(q) => println!("unexpected: {q:?}"),
    }
    client
        .publish_typed(
            "com.example.reading",
            Reading {
                sensor: "t1".into(),
                celsius: 21.5,
            },
            true,
        )
        .await?;

    // Keep serving until Ctrl-C.
    tokio::signal::ctrl_c().await?;
    client.leave().await?;
    service.leave().await?;
    Ok(())
}
