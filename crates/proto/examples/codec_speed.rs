//! Decode/encode speed of typical frames, per serializer:
//! `cargo run --release -p switchyard-proto --example codec_speed`.

use std::time::Instant;

use bytes::Bytes;
use switchyard_proto::{Dict, Message, Payload, Serializer, Value};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let publish = Message::Publish {
        request: 12345,
        options: Dict::new().with("acknowledge", true),
        topic: "com.example.bench.topic".into(),
        payload: Payload::values(vec![Value::from("x".repeat(64))], None),
    };
    for ser in Serializer::ALL {
        let frame: Bytes = publish.encode(ser).expect("encode");
        let t = Instant::now();
        let mut sink = 0usize;
        for _ in 0..n {
            let m = Message::decode(ser, &frame).expect("decode");
            sink += m.code() as usize;
        }
        let decode_ns = t.elapsed().as_nanos() as f64 / n as f64;
        let m = Message::decode(ser, &frame).expect("decode");
        let Message::Publish { payload, .. } = m else {
            unreachable!()
        };
        let event = Message::Event {
            subscription: 1 << 40,
            publication: 1 << 50,
            details: Dict::new(),
            payload,
        };
        let t = Instant::now();
        for _ in 0..n {
            sink += event.encode(ser).expect("encode").len();
        }
        let encode_ns = t.elapsed().as_nanos() as f64 / n as f64;
        println!("{ser:8} PUBLISH decode {decode_ns:6.0} ns   EVENT encode {encode_ns:6.0} ns   ({} bytes) [{}]", frame.len(), sink % 7);
    }
}
