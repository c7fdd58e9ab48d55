//! Golden tests against every vector in the WAMP spec's
//! `testsuite/singlemessage/` (exact bytes in JSON, MessagePack and CBOR).
//!
//! For each canonical byte string: decode it, compare the decoded message
//! with the vector's expected attributes, and re-encode it for all three
//! serializers, which must give the canonical bytes of that serializer
//! (this also checks transcoding, including binary payloads). Samples given
//! only as a message (`wmsg`) check option validation: those with
//! `expected_error` must be refused with a message naming the key.

use std::path::PathBuf;

use bytes::Bytes;
use serde_json::{json, Map, Value as J};
use switchyard_proto::{Item, Message, Serializer, Value};

fn vectors_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("SWITCHYARD_WAMP_SPEC") {
        return PathBuf::from(dir).join("testsuite/singlemessage");
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/wamp-spec/testsuite/singlemessage")
}

fn vector_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let dir = vectors_dir();
    for sub in ["basic", "advanced"] {
        let entries = std::fs::read_dir(dir.join(sub))
            .unwrap_or_else(|e| panic!("test vectors not found under {}: {e}", dir.display()));
        for e in entries {
            let p = e.expect("dir entry").path();
            if p.extension().is_some_and(|x| x == "json") {
                out.push(p);
            }
        }
    }
    out.sort();
    assert!(
        out.len() >= 20,
        "expected the spec's vector files, found {}",
        out.len()
    );
    out
}

fn to_json(v: &Value) -> J {
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::UInt(u) => json!(u),
        Value::Float(f) => json!(f),
        Value::Str(s) => json!(s),
        Value::Bytes(b) => json!(hex::encode(b)),
        Value::List(l) => J::Array(l.iter().map(to_json).collect()),
        Value::Dict(d) => J::Object(d.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect()),
    }
}

fn item_json(item: &Option<Item>) -> J {
    item.as_ref().map_or(J::Null, |i| {
        to_json(&i.to_value().expect("payload decodes"))
    })
}

/// The message's attributes under the names the vectors use.
fn attributes(m: &Message) -> Map<String, J> {
    let mut a = Map::new();
    let mut put = |k: &str, v: J| {
        a.insert(k.to_string(), v);
    };
    put("message_type", json!(m.code()));
    let dict = |d: &switchyard_proto::Dict| to_json(&Value::Dict(d.clone()));
    match m {
        Message::Hello { realm, details } => {
            put("realm", json!(realm));
            put("details", dict(details));
            put("roles", details.get("roles").map_or(J::Null, to_json));
        }
        Message::Welcome { session, details } => {
            put("session_id", json!(session));
            put("details", dict(details));
            put("roles", details.get("roles").map_or(J::Null, to_json));
        }
        Message::Abort { details, reason } | Message::Goodbye { details, reason } => {
            put("details", dict(details));
            put("reason", json!(reason));
        }
        Message::Challenge { method, extra } => {
            put("method", json!(method));
            put("extra", dict(extra));
        }
        Message::Authenticate { signature, extra } => {
            put("signature", json!(signature));
            put("extra", dict(extra));
        }
        Message::Error {
            request_type,
            request,
            details,
            error,
            ..
        } => {
            put("request_type", json!(request_type));
            put("request_id", json!(request));
            put("details", dict(details));
            put("error", json!(error));
        }
        Message::Publish {
            request,
            options,
            topic,
            ..
        } => {
            put("request_id", json!(request));
            put("options", dict(options));
            put("topic", json!(topic));
        }
        Message::Published {
            request,
            publication,
        } => {
            put("request_id", json!(request));
            put("publication_id", json!(publication));
        }
        Message::Subscribe {
            request,
            options,
            topic,
        } => {
            put("request_id", json!(request));
            put("options", dict(options));
            put("topic", json!(topic));
        }
        Message::Subscribed {
            request,
            subscription,
        }
        | Message::Unsubscribe {
            request,
            subscription,
        } => {
            put("request_id", json!(request));
            put("subscription_id", json!(subscription));
        }
        Message::Unsubscribed { request } | Message::Unregistered { request, .. } => {
            put("request_id", json!(request));
        }
        Message::Event {
            subscription,
            publication,
            details,
            ..
        } => {
            put("subscription", json!(subscription));
            put("publication", json!(publication));
            put("details", dict(details));
        }
        Message::EventReceived { publication } => put("publication_id", json!(publication)),
        Message::Call {
            request,
            options,
            procedure,
            ..
        }
        | Message::Register {
            request,
            options,
            procedure,
        } => {
            put("request_id", json!(request));
            put("options", dict(options));
            put("procedure", json!(procedure));
        }
        Message::Cancel { request, options } | Message::Interrupt { request, options } => {
            put("request_id", json!(request));
            put("options", dict(options));
        }
        Message::Result {
            request, details, ..
        } => {
            put("request_id", json!(request));
            put("details", dict(details));
        }
        Message::Registered {
            request,
            registration,
        }
        | Message::Unregister {
            request,
            registration,
        } => {
            put("request_id", json!(request));
            put("registration_id", json!(registration));
        }
        Message::Invocation {
            request,
            registration,
            details,
            ..
        } => {
            put("request_id", json!(request));
            put("registration_id", json!(registration));
            put("details", dict(details));
        }
        Message::Yield {
            request, options, ..
        } => {
            put("request_id", json!(request));
            put("options", dict(options));
        }
    }
    if let Some(p) = m.payload() {
        match &p.args {
            Some(args) if !args.is_list() => {
                // Payload PassThru Mode: the payload is opaque bytes.
                let v = args.to_value().expect("payload decodes");
                let hex = match v {
                    Value::Bytes(b) => hex::encode(b),
                    other => panic!("opaque payload should be binary, got {other:?}"),
                };
                put("payload", json!(hex));
                put("args", J::Null);
            }
            _ => {
                put("args", item_json(&p.args));
                put("payload", J::Null);
            }
        }
        put("kwargs", item_json(&p.kwargs));
    }
    a
}

fn canonical(sample: &J, ser: &str) -> Vec<Vec<u8>> {
    sample["serializers"][ser]
        .as_array()
        .map(|variants| {
            variants
                .iter()
                .map(|v| hex::decode(v["bytes_hex"].as_str().expect("bytes_hex")).expect("hex"))
                .collect()
        })
        .unwrap_or_default()
}

fn ser_of(name: &str) -> Serializer {
    match name {
        "json" => Serializer::Json,
        "msgpack" => Serializer::MsgPack,
        "cbor" => Serializer::Cbor,
        _ => unreachable!(),
    }
}

/// Whole-frame semantic value, for comparing JSON that differs only in spacing.
fn json_frame_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}

#[test]
fn every_singlemessage_vector() {
    let mut decoded = 0;
    let mut reencoded = 0;
    let mut validated = 0;
    for path in vector_files() {
        let file: J = serde_json::from_slice(&std::fs::read(&path).expect("read vector"))
            .expect("vector JSON");
        let fname = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or("?")
            .to_string();
        for (i, sample) in file["samples"]
            .as_array()
            .expect("samples")
            .iter()
            .enumerate()
        {
            let ctx = format!("{fname} sample {i} ({})", sample["description"]);
            if let Some(wmsg) = sample.get("wmsg") {
                let frame = Bytes::from(serde_json::to_vec(wmsg).expect("wmsg"));
                let result = Message::decode(Serializer::Json, &frame);
                match sample.get("expected_error") {
                    Some(err) => {
                        let e = result.expect_err(&format!("{ctx}: must be refused"));
                        let needle = err["contains"].as_str().expect("contains");
                        assert!(
                            e.0.contains(needle),
                            "{ctx}: error {:?} should mention {needle}",
                            e.0
                        );
                    }
                    None => {
                        result.unwrap_or_else(|e| panic!("{ctx}: must be accepted, got {e}"));
                    }
                }
                validated += 1;
                continue;
            }
            let expected = sample["expected_attributes"]
                .as_object()
                .expect("expected_attributes");
            for src in ["json", "msgpack", "cbor"] {
                for bytes in canonical(sample, src) {
                    let frame = Bytes::from(bytes.clone());
                    let msg = Message::decode(ser_of(src), &frame)
                        .unwrap_or_else(|e| panic!("{ctx}: {src} decode failed: {e}"));
                    let got = attributes(&msg);
                    for (k, want) in expected {
                        let have = got
                            .get(k)
                            .unwrap_or_else(|| panic!("{ctx}: no attribute {k} in {got:?}"));
                        assert_eq!(have, want, "{ctx}: {src} attribute {k}");
                    }
                    decoded += 1;
                    for dst in ["json", "msgpack", "cbor"] {
                        let wants = canonical(sample, dst);
                        if wants.is_empty() {
                            continue;
                        }
                        let out = msg
                            .encode(ser_of(dst))
                            .unwrap_or_else(|e| panic!("{ctx}: {src}->{dst} encode failed: {e}"));
                        if wants.iter().any(|w| w[..] == out[..]) {
                            reencoded += 1;
                            continue;
                        }
                        // A JSON source with spaces keeps its raw payload
                        // spans: compare JSON output by meaning.
                        assert!(
                            dst == "json" && src == "json",
                            "{ctx}: {src}->{dst} gave {} but canonical is {}",
                            hex::encode(&out),
                            hex::encode(&wants[0])
                        );
                        assert_eq!(
                            json_frame_value(&out),
                            json_frame_value(&wants[0]),
                            "{ctx}: json re-encode differs in meaning"
                        );
                        reencoded += 1;
                    }
                }
            }
        }
    }
    eprintln!(
        "golden vectors: {decoded} decodes, {reencoded} re-encodes, {validated} validation samples"
    );
    assert!(
        decoded >= 90 && reencoded >= 250 && validated >= 60,
        "too few vectors exercised"
    );
}
