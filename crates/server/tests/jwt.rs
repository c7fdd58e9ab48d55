//! JWT tickets (`[[realm.auth.jwt]]`) against the real binary over
//! RawSocket: tokens minted here for each algorithm (HS256 with an inline
//! secret, RS256 from a PEM file, EdDSA through a JWKS file) and each
//! refusal (expired, not yet valid, bad signature, wrong audience, wrong
//! issuer, another authid than HELLO's, an algorithm not accepted). The
//! ABORT names the reason and never echoes the token.

mod common;

use common::{abort_of, Raw, Router};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use switchyard_proto::{Dict, Message, Serializer, Value};

const SECRET: &str = "hs256-shared-secret-for-tests";

fn keys() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jwt_keys")
}

fn config() -> String {
    let k = keys();
    format!(
        r#"
[realm.auth]
methods = ["ticket"]
max_failures = 0

[[realm.auth.jwt]]
algorithms = ["HS256"]
secret = "{SECRET}"
issuer = "https://app.example.com"
audience = "switchyard"
role_claim = "role"
role = "user"

[[realm.auth.jwt]]
algorithms = ["RS256"]
public_key_file = "{rsa}"
issuer = "https://app.example.com"
audience = "switchyard"
role = "rsa-user"

[[realm.auth.jwt]]
algorithms = ["EdDSA"]
jwks_file = "{jwks}"
authid_claim = "email"
role_claim = "wamp_role"
"#,
        rsa = k.join("rsa_public.pem").display(),
        jwks = k.join("jwks.json").display(),
    )
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn hs256(claims: serde_json::Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

fn rs256(claims: serde_json::Value) -> String {
    let pem = std::fs::read(keys().join("rsa_private.pem")).expect("rsa key");
    encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&pem).expect("rsa pem"),
    )
    .expect("encode")
}

fn eddsa(claims: serde_json::Value, kid: Option<&str>) -> String {
    let pem = std::fs::read(keys().join("ed25519_private.pem")).expect("ed key");
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = kid.map(str::to_string);
    encode(
        &h,
        &claims,
        &EncodingKey::from_ed_pem(&pem).expect("ed pem"),
    )
    .expect("encode")
}

/// A ticket login; HELLO names `authid` if given. The router's answer.
fn login(r: &Router, authid: Option<&str>, ticket: &str) -> Message {
    let mut c = Raw::connect(r.rs_port, Serializer::Json);
    let mut details = Dict::new()
        .with("roles", Dict::new().with("caller", Dict::new()))
        .with("authmethods", Value::List(vec!["ticket".into()]));
    if let Some(a) = authid {
        details.insert("authid", a);
    }
    c.send(&Message::Hello {
        realm: "realm1".into(),
        details,
    });
    match c.expect("CHALLENGE") {
        Message::Challenge { method, .. } => assert_eq!(method, "ticket"),
        other => panic!("expected CHALLENGE, got {other:?}"),
    }
    c.send(&Message::Authenticate {
        signature: ticket.into(),
        extra: Dict::new(),
    });
    c.expect("WELCOME or ABORT")
}

fn welcomed(m: Message) -> (String, String, String) {
    match m {
        Message::Welcome { details, .. } => (
            details.get_str("authid").unwrap_or("").into(),
            details.get_str("authrole").unwrap_or("").into(),
            details.get_str("authprovider").unwrap_or("").into(),
        ),
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

fn app_claims(sub: &str) -> serde_json::Value {
    json!({"sub": sub, "iss": "https://app.example.com", "aud": "switchyard", "exp": now() + 300})
}

#[test]
fn jwt_tickets_of_each_algorithm_log_in() {
    let r = Router::start(&config());
    // HS256, role from the claim; HELLO without an authid.
    let mut c = app_claims("alice");
    c["role"] = json!("admin");
    assert_eq!(
        welcomed(login(&r, None, &hs256(c, SECRET))),
        ("alice".into(), "admin".into(), "jwt".into())
    );
    // HS256 without the role claim: the fixed role; HELLO names the same authid.
    assert_eq!(
        welcomed(login(&r, Some("bob"), &hs256(app_claims("bob"), SECRET))),
        ("bob".into(), "user".into(), "jwt".into())
    );
    // RS256 from a PEM public key file.
    assert_eq!(
        welcomed(login(&r, None, &rs256(app_claims("carol")))),
        ("carol".into(), "rsa-user".into(), "jwt".into())
    );
    // EdDSA through the JWKS file, by kid; authid from another claim.
    let ed = json!({"email": "dave@example.com", "wamp_role": "device", "exp": now() + 300});
    assert_eq!(
        welcomed(login(&r, None, &eddsa(ed.clone(), Some("ed-1")))),
        ("dave@example.com".into(), "device".into(), "jwt".into())
    );
    // And without a kid (each Ed25519 key of the set is tried).
    assert_eq!(
        welcomed(login(&r, None, &eddsa(ed, None))).0,
        "dave@example.com"
    );
}

#[test]
fn jwt_refusals_name_the_reason_and_not_the_token() {
    let r = Router::start(&config());
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = app_claims("alice");
        f(&mut c);
        c
    };
    let cases: Vec<(&str, Option<&str>, String, &str)> = vec![
        (
            "expired",
            None,
            hs256(with(&|c| c["exp"] = json!(now() - 600)), SECRET),
            "the token has expired",
        ),
        (
            "not yet valid",
            None,
            hs256(with(&|c| c["nbf"] = json!(now() + 600)), SECRET),
            "not valid yet",
        ),
        (
            "bad signature",
            None,
            hs256(app_claims("alice"), "another-secret-of-the-same-length"),
            "bad signature",
        ),
        (
            "wrong audience",
            None,
            rs256(with(&|c| c["aud"] = json!("another-service"))),
            "wrong audience",
        ),
        (
            "wrong issuer",
            None,
            hs256(with(&|c| c["iss"] = json!("https://evil.example")), SECRET),
            "wrong issuer",
        ),
        (
            "no exp",
            None,
            hs256(
                with(&|c| {
                    c.as_object_mut().map(|o| o.remove("exp"));
                }),
                SECRET,
            ),
            "no expiry",
        ),
        (
            "another authid than HELLO's",
            Some("mallory"),
            hs256(app_claims("alice"), SECRET),
            "another authid",
        ),
        (
            "unknown kid",
            None,
            eddsa(
                json!({"email": "x@y", "wamp_role": "r", "exp": now() + 60}),
                Some("nope"),
            ),
            "not accepted here",
        ),
    ];
    for (what, authid, token, reason) in cases {
        let (uri, message) = abort_of(login(&r, authid, &token));
        assert_eq!(uri, "wamp.error.authentication_failed", "{what}");
        assert!(message.contains(reason), "{what}: {message}");
        assert!(
            !message.contains(&token),
            "{what}: the ABORT echoes the token"
        );
    }
    // RS256 header over an HMAC of the public key (algorithm confusion):
    // HS256 entries have their own secret, the RSA key is never an HMAC key.
    let pem = std::fs::read(keys().join("rsa_public.pem")).expect("pem");
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &app_claims("alice"),
        &EncodingKey::from_secret(&pem),
    )
    .expect("encode");
    let (_, message) = abort_of(login(&r, None, &confused));
    assert!(message.contains("bad signature"), "{message}");
    // Not a JWT, no authid: refused without a lookup.
    let (_, message) = abort_of(login(&r, None, "plain ticket"));
    assert!(message.contains("not a JWT"), "{message}");
    assert!(!r
        .log_text()
        .contains(&hs256(app_claims("alice"), SECRET)[..40]));
}
