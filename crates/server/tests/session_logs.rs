//! Log lines about a session carry its id, realm and authid (issue 17,
//! item 6): the real binary with `[log] format = "json"`, a RawSocket
//! session, and the lines read back as JSON objects (one per line, the
//! field names of docs/OPERATIONS.md).

mod common;

use common::{Raw, Router};
use switchyard_proto::{Dict, Message, Serializer};

#[test]
fn json_lines_about_a_session_carry_its_id_realm_and_authid() {
    let mut r = Router::start("[log]\nformat = \"json\"\n");
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    let (session, welcome) = c.join("realm1");
    let authid = welcome.get_str("authid").expect("authid").to_string();
    // Something the router logs about this session: a malformed URI is
    // refused (logged at debug), then GOODBYE.
    c.subscribe("com.example.logs");
    c.send(&Message::Goodbye {
        details: Dict::new(),
        reason: "wamp.close.close_realm".into(),
    });
    assert!(matches!(c.expect("GOODBYE"), Message::Goodbye { .. }));
    r.terminate();
    let log = r.log_text();
    if std::env::var_os("SHOW_LOG").is_some() {
        eprintln!("{log}");
    }
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let about: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["span"]["session"].as_u64() == Some(session))
        .collect();
    assert!(
        about.iter().any(|v| v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("GOODBYE from client"))),
        "the GOODBYE line is in the session's span:\n{log}"
    );
    for v in &about {
        assert_eq!(v["span"]["name"], "connection", "{v}");
        assert_eq!(v["span"]["realm"], "realm1", "{v}");
        assert_eq!(v["span"]["authid"], authid.as_str(), "{v}");
        assert!(v["span"]["peer"].is_string(), "{v}");
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{v}");
        assert!(v["target"].is_string(), "{v}");
    }
    // Every line logged inside a connection's span after its WELCOME names
    // the session: none carries a session without its realm and authid.
    for v in &lines {
        if v["span"]["session"].is_u64() {
            assert!(
                v["span"]["realm"].is_string() && v["span"]["authid"].is_string(),
                "{v}"
            );
        }
    }
}
