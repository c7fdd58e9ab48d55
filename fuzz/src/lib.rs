//! The properties each fuzz target checks on its input, one function per
//! target (the binaries in src/bin/ only hand AFL++'s input to them). Every
//! function returns normally for any input; a broken property is a panic,
//! which AFL++ records as a crash:
//!
//! - no input makes the code under test panic (or abort, or overflow);
//! - what decodes re-encodes, and decode -> encode -> decode -> encode gives
//!   the same bytes (the encoding is stable);
//! - two checks of the same thing agree (the router's URI rules and the
//!   spec's regular expressions; the bridge's strict JSON and serde_json;
//!   the signing parameters' decoders and independent reference decoders).

use std::collections::HashSet;
use std::sync::OnceLock;

use bytes::Bytes;
use switchyard_proto::codec::peek_type;
use switchyard_proto::rawsocket::{self, FrameKind, MAX_FRAME};
use switchyard_proto::uri::{self, UriCheck};
use switchyard_proto::{Message, Serializer};

/// `websocket_frames`: the bytes a client sends after the upgrade. The first byte picks how
/// they arrive (in one read, or in reads of 1 to 255 bytes); the decoder must not panic, must
/// give text messages only as UTF-8 and no message over its limit, and must give the same
/// events, and the same verdict, however the bytes are cut into reads.
pub fn websocket_frames(data: &[u8]) {
    use switchyard::wsframe::{Decoder, Event};
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    const MAX: usize = 4096;
    let run = |chunk: usize| {
        let mut decoder = Decoder::new(MAX);
        let mut buf = bytes::BytesMut::new();
        let mut events = Vec::new();
        for piece in data.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(e)) => {
                        if let Event::Message(m) = &e {
                            assert!(m.payload.len() <= MAX, "a message over the limit");
                            if m.text {
                                assert!(std::str::from_utf8(&m.payload).is_ok(), "text not UTF-8");
                            }
                        }
                        events.push(format!("{e:?}"));
                    }
                    Ok(None) => break,
                    Err(v) => return (events, Some(v.code())),
                }
            }
        }
        (events, None)
    };
    let whole = run(data.len());
    let cut = run(usize::from(step));
    // A verdict reached in smaller reads may come earlier (UTF-8 fails fast on a prefix); the
    // events before it are the same, and a clean end is the same.
    match (&whole.1, &cut.1) {
        (None, None) => assert_eq!(whole.0, cut.0, "reads of {step} bytes changed the events"),
        _ => {
            let n = whole.0.len().min(cut.0.len());
            assert_eq!(
                whole.0[..n],
                cut.0[..n],
                "reads of {step} bytes changed the events"
            );
        }
    }
}

/// `decode_json`, `decode_msgpack`, `decode_cbor`: one WAMP message frame.
pub fn message(ser: Serializer, data: &[u8]) {
    let frame = Bytes::copy_from_slice(data);
    let peeked = peek_type(ser, data);
    let Ok(msg) = Message::decode(ser, &frame) else {
        return;
    };
    if let Some(code) = peeked {
        assert_eq!(code, msg.code(), "peek_type and decode disagree");
    }
    // The payload decodes fully or fails cleanly (a transcoding does that).
    if let Some(p) = msg.payload() {
        for item in [&p.args, &p.kwargs].into_iter().flatten() {
            let _ = item.to_value();
        }
    }
    let enc = msg
        .encode(ser)
        .unwrap_or_else(|e| panic!("a decoded {ser} message does not re-encode: {e}"));
    stable(ser, &enc, &msg);
    // Transcoding: what converts must decode in the other serializer, and
    // be stable there too.
    for to in Serializer::ALL {
        if to == ser {
            continue;
        }
        if let Ok(t) = msg.encode(to) {
            stable(to, &t, &msg);
        }
    }
}

/// `enc` (the encoding of `orig` for `ser`) decodes to the same message,
/// which encodes to the same bytes.
fn stable(ser: Serializer, enc: &Bytes, orig: &Message) {
    let again = Message::decode(ser, enc)
        .unwrap_or_else(|e| panic!("{} re-encoded for {ser} does not decode: {e}", orig.name()));
    assert_eq!(again.code(), orig.code(), "the type changed");
    assert_eq!(
        peek_type(ser, enc),
        Some(orig.code()),
        "peek_type misreads our own encoding"
    );
    let enc2 = again
        .encode(ser)
        .unwrap_or_else(|e| panic!("{} does not encode twice for {ser}: {e}", orig.name()));
    assert_eq!(
        enc,
        &enc2,
        "{} for {ser}: decode -> encode is not stable",
        orig.name()
    );
}

/// `rawsocket`: a client's 4-octet handshake (also read as a router's
/// reply), then frames as a router reads them off the stream.
pub fn rawsocket(data: &[u8]) {
    let Some((hs, mut rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let hs = *hs;
    let serializer = match rawsocket::parse_client_handshake(hs) {
        Ok(h) => {
            let exp = hs[1] >> 4;
            assert_eq!(h.max_len, rawsocket::max_len(exp));
            assert!((512..=MAX_FRAME).contains(&h.max_len));
            assert_eq!(rawsocket::client_handshake(h.serializer, exp), hs);
            // The router's acceptance reads back as what it says.
            let reply = rawsocket::parse_router_reply(rawsocket::accept(h.serializer, exp));
            assert_eq!(
                reply.map(|r| (r.serializer, r.exp)),
                Ok((h.serializer, exp))
            );
            Some(h.serializer)
        }
        Err(e) => {
            if let Some(code) = e.code() {
                assert_eq!(
                    rawsocket::parse_router_reply(rawsocket::refusal(code)),
                    Err(rawsocket::RouterReplyError::Refused { code })
                );
            }
            None
        }
    };
    if let Ok(r) = rawsocket::parse_router_reply(hs) {
        assert_eq!(rawsocket::accept(r.serializer, r.exp), hs);
        assert_eq!(r.max_len, rawsocket::max_len(r.exp));
    }
    while let Some((h, after)) = rest.split_first_chunk::<4>() {
        let Ok(header) = rawsocket::decode_header(*h) else {
            break; // the router closes the connection
        };
        assert!(header.len <= MAX_FRAME);
        assert_eq!(
            rawsocket::encode_header(header.kind, header.len),
            Some(*h),
            "frame header round trip"
        );
        let n = header.len.min(after.len());
        let (payload, next) = after.split_at(n);
        if let (FrameKind::Message, Some(ser)) = (header.kind, serializer) {
            message(ser, payload);
        }
        rest = next;
    }
}

/// The spec's URI rules as regular expressions (Basic Profile,
/// "Identifiers"): loose and strict, without and with empty components.
fn spec_uri_regex(rule: UriCheck, allow_empty: bool) -> &'static regex::Regex {
    static RES: OnceLock<[regex::Regex; 4]> = OnceLock::new();
    let res = RES.get_or_init(|| {
        let re = |s: &str| regex::Regex::new(s).expect("a valid regex");
        [
            re(r"^([^\s\.#]+\.)*([^\s\.#]+)$"),
            re(r"^(([^\s\.#]+\.)|\.)*([^\s\.#]+)?$"),
            re(r"^([0-9a-z_]+\.)*([0-9a-z_]+)$"),
            re(r"^(([0-9a-z_]+\.)|\.)*([0-9a-z_]+)?$"),
        ]
    });
    let i = match rule {
        UriCheck::Loose => 0,
        UriCheck::Strict => 2,
    };
    &res[i + usize::from(allow_empty)]
}

/// `uri`: the router's URI check agrees with the spec's regular
/// expressions (the router refuses the empty URI even for patterns).
pub fn uri(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for rule in [UriCheck::Loose, UriCheck::Strict] {
        for allow_empty in [false, true] {
            let ours = uri::check(s, rule, allow_empty);
            let spec = !s.is_empty() && spec_uri_regex(rule, allow_empty).is_match(s);
            assert_eq!(
                ours.is_ok(),
                spec,
                "{s:?} {rule:?} allow_empty={allow_empty}: router says {ours:?}"
            );
        }
    }
    assert_eq!(
        uri::is_reserved(s),
        s.split('.').next() == Some("wamp"),
        "{s:?}: reserved namespace"
    );
}

/// `bridge_request`: the body of a `/publish` or `/call`.
pub fn bridge_request(data: &[u8]) {
    let unique = switchyard::check_unique_keys(data);
    let parsed = serde_json::from_slice::<serde_json::Value>(data);
    // The strict check accepts exactly the JSON documents without a
    // duplicate key (found here by an independent count).
    match (&unique, &parsed) {
        (Ok(()), Ok(_)) => assert!(!has_duplicate_key(data), "a duplicate key was missed"),
        (Ok(()), Err(e)) => panic!("strict JSON accepted what serde_json refuses: {e}"),
        (Err(e), Ok(_)) => {
            assert!(
                has_duplicate_key(data),
                "refused valid JSON without duplicates: {e}"
            )
        }
        (Err(_), Err(_)) => {}
    }
    let request = switchyard::parse_request_body(data);
    if let Ok(uri) = request {
        let Ok(serde_json::Value::Object(obj)) = parsed else {
            panic!("the bridge accepted a body that is not a JSON object");
        };
        assert!(unique.is_ok(), "the bridge accepted a duplicate key");
        let named = obj
            .get("topic")
            .and_then(|v| v.as_str())
            .or_else(|| obj.get("procedure").and_then(|v| v.as_str()));
        assert_eq!(uri.as_deref(), named, "the URI the bridge read");
    }
}

/// Whether any JSON object in `data` (valid JSON) has a key twice: a second
/// reading, by serde_json into a map that keeps every entry.
fn has_duplicate_key(data: &[u8]) -> bool {
    // serde_json::Value keeps the last of two equal keys: compare the
    // number of keys its objects have with the number of keys written.
    fn keys_written(data: &[u8]) -> Option<usize> {
        let mut de = serde_json::Deserializer::from_slice(data);
        let mut count = 0;
        count_keys(&mut de, &mut count).ok()?;
        Some(count)
    }
    fn count_keys(
        de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'_>>,
        n: &mut usize,
    ) -> Result<(), serde_json::Error> {
        use serde::Deserializer as _;
        struct Counter<'a>(&'a mut usize);
        impl<'de> serde::de::Visitor<'de> for Counter<'_> {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, _: bool) -> Result<(), E> {
                Ok(())
            }
            fn visit_i64<E>(self, _: i64) -> Result<(), E> {
                Ok(())
            }
            fn visit_u64<E>(self, _: u64) -> Result<(), E> {
                Ok(())
            }
            fn visit_f64<E>(self, _: f64) -> Result<(), E> {
                Ok(())
            }
            fn visit_str<E>(self, _: &str) -> Result<(), E> {
                Ok(())
            }
            fn visit_unit<E>(self) -> Result<(), E> {
                Ok(())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
                while seq.next_element_seed(Seed(self.0))?.is_some() {}
                Ok(())
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
                while map.next_key::<String>()?.is_some() {
                    *self.0 += 1;
                    map.next_value_seed(Seed(self.0))?;
                }
                Ok(())
            }
        }
        struct Seed<'a>(&'a mut usize);
        impl<'de> serde::de::DeserializeSeed<'de> for Seed<'_> {
            type Value = ();
            fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_any(Counter(self.0))
            }
        }
        (&mut *de).deserialize_any(Counter(n))?;
        de.end()
    }
    fn keys_kept(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(a) => a.iter().map(keys_kept).sum(),
            serde_json::Value::Object(o) => o.len() + o.values().map(keys_kept).sum::<usize>(),
            _ => 0,
        }
    }
    match (
        keys_written(data),
        serde_json::from_slice::<serde_json::Value>(data),
    ) {
        (Some(written), Ok(v)) => written != keys_kept(&v),
        _ => false,
    }
}

/// `bridge_signature`: the signing parameters of a bridge request. The
/// input is lines: a query string, an `X-Authentication` value, then
/// values for `seq`/`nonce` and a timestamp.
pub fn bridge_signature(data: &[u8]) {
    use switchyard::signing::verify;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let query = lines.next().unwrap_or("");
    let header = lines.next().unwrap_or("");
    let counter = lines.next().unwrap_or("");
    let nonce = lines.next().unwrap_or("");
    let timestamp = lines.next().unwrap_or("");

    // The query: each parameter once, each decoded as a reference decoder does.
    let params = verify::query_params(query);
    let reference = reference_query(query);
    assert_eq!(
        params.as_ref().map(sorted),
        reference.as_ref().map(sorted),
        "query {query:?}"
    );

    // The header: what parses prints back (escaping what must be) and
    // parses to the same fields.
    if let Ok(h) = verify::parse_header(header) {
        let printed = format!(
            "key={}, timestamp={}, nonce={}, signature={}",
            escape_field(&h.key),
            escape_field(&h.timestamp),
            escape_field(&h.nonce),
            escape_field(&h.signature)
        );
        assert_eq!(
            verify::parse_header(&printed).as_ref(),
            Ok(&h),
            "{printed:?}"
        );
    }

    // seq and nonce: 1 to 20 decimal digits that fit a u64.
    for v in [counter, nonce] {
        let ours = verify::check_counter("seq", v).is_ok();
        let reference = (1..=20).contains(&v.len())
            && v.bytes().all(|b| b.is_ascii_digit())
            && v.parse::<u64>().is_ok();
        assert_eq!(ours, reference, "counter {v:?}");
    }

    // The timestamp parses or not; a parsed one gives a skew and a replay
    // cache time without panicking, whatever its distance from now.
    if let Some(ts) = verify::parse_timestamp(timestamp) {
        let _ = verify::skew(ts);
        let _ = verify::remember_for(ts, std::time::Duration::from_secs(300));
    }
    // A signature compares (in constant time) without panicking.
    let _ = verify::matches(&[0u8; 32], header);
}

fn sorted(m: &std::collections::HashMap<String, String>) -> Vec<(String, String)> {
    let mut v: Vec<_> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort();
    v
}

/// The query's parameters by the WHATWG URL rules for
/// `application/x-www-form-urlencoded` (a `%` escape is `%` and two hex
/// digits, `+` is a space), except that a malformed escape or bytes that
/// are not UTF-8 make the query invalid (the bridge refuses it instead of
/// guessing), as does a name given twice.
fn reference_query(query: &str) -> Option<std::collections::HashMap<String, String>> {
    fn decode(s: &str) -> Option<String> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'%' => {
                    let hi = (*b.get(i + 1)? as char).to_digit(16)?;
                    let lo = (*b.get(i + 2)? as char).to_digit(16)?;
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                }
                b'+' => {
                    out.push(b' ');
                    i += 1;
                }
                c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).ok()
    }
    let mut out = std::collections::HashMap::new();
    let mut seen = HashSet::new();
    for p in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        let k = decode(k)?;
        if !seen.insert(k.clone()) {
            return None;
        }
        out.insert(k, decode(v)?);
    }
    Some(out)
}

/// An `X-Authentication` field value as a sender writes it: `%` and `,`
/// escaped; spaces at either end escaped (the parser trims them).
fn escape_field(v: &str) -> String {
    let mut out = String::new();
    let n = v.chars().count();
    for (i, c) in v.chars().enumerate() {
        let edge = i == 0 || i + 1 == n;
        match c {
            '%' | ',' => out.push_str(&format!("%{:02X}", c as u32)),
            c if edge && c.is_whitespace() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// `config`: a configuration file. Every error names a line of the text
/// (or none).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = switchyard::config::Config::parse(text) {
        assert!(!errors.is_empty(), "a refusal without a reason");
        let lines = text.lines().count().max(1);
        for e in &errors {
            if let Some(l) = e.line {
                assert!(
                    (1..=lines + 1).contains(&l),
                    "error at line {l} of {lines}: {e}"
                );
            }
        }
    }
}

/// `queue_record`: the bytes of a job record (and of a payload row) read
/// from the store. What decodes re-encodes to a record that decodes and
/// encodes to the same bytes.
pub fn queue_record(data: &[u8]) {
    for now_ms in [0, u64::MAX] {
        if let Ok(once) = switchyard_queue::reencode_job_record(data, now_ms) {
            let twice = switchyard_queue::reencode_job_record(&once, now_ms)
                .unwrap_or_else(|e| panic!("a re-encoded record does not decode: {e}"));
            assert_eq!(once, twice, "job record: decode -> encode is not stable");
        }
    }
    if let Ok(once) = switchyard_queue::reencode_payload_row(data) {
        assert_eq!(once, data, "payload row round trip");
    }
}

/// Every committed seed through its target's checks, without AFL++ (a quick
/// replay: `cargo test --manifest-path fuzz/Cargo.toml --lib`; the binaries
/// link only under `cargo afl`). The seeds are also where an input that once
/// crashed a target stays, so that it keeps being checked.
#[cfg(test)]
mod tests {
    use std::path::Path;

    use switchyard_proto::Serializer;

    fn replay(target: &str, check: impl Fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            check(&data);
            n += 1;
        }
        assert!(n > 0, "no seeds in {}", dir.display());
    }

    #[test]
    fn decoders() {
        replay("decode_json", |d| super::message(Serializer::Json, d));
        replay("decode_msgpack", |d| super::message(Serializer::MsgPack, d));
        replay("decode_cbor", |d| super::message(Serializer::Cbor, d));
    }

    #[test]
    fn rawsocket() {
        replay("rawsocket", super::rawsocket);
    }

    #[test]
    fn uri() {
        replay("uri", super::uri);
    }

    #[test]
    fn websocket_frames() {
        replay("websocket_frames", super::websocket_frames);
    }

    #[test]
    fn bridge() {
        replay("bridge_request", super::bridge_request);
        replay("bridge_signature", super::bridge_signature);
    }

    #[test]
    fn config() {
        replay("config", super::config);
    }

    #[test]
    fn queue_record() {
        replay("queue_record", super::queue_record);
    }
}
