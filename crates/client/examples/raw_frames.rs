//! The low-level layer: a hand-written HELLO, then a malformed frame, and
//! the router's raw replies printed as they arrive.
//!
//! ```text
//! cargo run -p switchyard-client --example raw_frames -- rs://127.0.0.1:8081
//! ```

use std::time::Duration;

use bytes::Bytes;
use switchyard_client::transport::{connect, TransportOptions};
use switchyard_client::Serializer;

#[tokio::main]
async fn main() {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "rs://127.0.0.1:8081".to_owned());
    let mut conn = match connect(&url, TransportOptions::new(Serializer::Json)).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("connect: {e}");
            std::process::exit(1);
        }
    };
    println!("connected: {:?}", conn.info);
    let frames: [&'static [u8]; 2] = [
        br#"[1,"realm1",{"roles":{"caller":{}}}]"#,
        br#"[48,"not an id",{},"x.y"]"#,
    ];
    for f in frames {
        println!("> {}", String::from_utf8_lossy(f));
        if let Err(e) = conn.sender.send(Bytes::from_static(f)) {
            eprintln!("send: {e}");
            return;
        }
        match tokio::time::timeout(Duration::from_secs(2), conn.receiver.recv()).await {
            Ok(Ok(reply)) => println!("< {}", String::from_utf8_lossy(&reply)),
            Ok(Err(e)) => println!("< {e}"),
            Err(_) => println!("< (nothing within 2 s)"),
        }
    }
    match tokio::time::timeout(Duration::from_secs(2), conn.receiver.recv()).await {
        Ok(Ok(reply)) => println!("< {}", String::from_utf8_lossy(&reply)),
        Ok(Err(e)) => println!("< {e}"),
        Err(_) => println!("< (nothing more within 2 s)"),
    }
}
