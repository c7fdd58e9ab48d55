//! Who a bridge request is: its signature checked (an `X-Authentication`
//! header on any endpoint; else query parameters: Crossbar's scheme on
//! `/publish` and `/call`, the bound scheme on our own endpoints), its
//! timestamp inside the window, and its signature not seen before. The
//! checks themselves are `crate::signing`'s; this file finds the key and
//! turns each refusal into the bridge's HTTP answer.

use std::sync::Arc;

use hyper::header::{self, HeaderMap};
use hyper::StatusCode;
use switchyard_router::internal::InternalCaller;
use switchyard_router::logsafe::Clip;

use super::body::{read_body, Body};
use super::{bad, unauthorized, Bridge, Refusal, SigningKey};
use crate::signing::schemes::{header_mac, HeaderSigned, Mac32};
use crate::signing::verify::{
    check_counter, expected_mac, matches, parse_header, parse_timestamp, query_params,
    remember_for, skew,
};
pub(super) use crate::signing::Scheme;
use crate::signing::{Params, Refused, SIGNING_PARAMS};

/// The header that shows a request was sent by a web browser, if any:
/// `Origin` (browsers send it with every POST, same-origin ones included,
/// so also under DNS rebinding) or a `Sec-Fetch-Site` other than `none` (a
/// navigation the user typed).
pub(super) fn browser_marker(headers: &HeaderMap) -> Option<&'static str> {
    if headers.contains_key(header::ORIGIN) {
        return Some("Origin");
    }
    let site = headers.get("sec-fetch-site")?;
    (site.as_bytes() != b"none").then_some("Sec-Fetch-Site")
}

/// The identity a request acts as: the bridge's unsigned caller, or its
/// signing key's (held, since a reload may replace the bridge's keys while
/// the request runs).
pub(super) enum Caller<'a> {
    Unsigned(&'a InternalCaller),
    Key(Arc<SigningKey>),
}

impl std::ops::Deref for Caller<'_> {
    type Target = InternalCaller;

    fn deref(&self) -> &InternalCaller {
        match self {
            Caller::Unsigned(c) => c,
            Caller::Key(k) => &k.caller,
        }
    }
}

/// What a request carries to prove who sent it, taken from its head before
/// its body is read.
pub(super) struct Credentials {
    /// The [`browser_marker`] of the request.
    browser: Option<&'static str>,
    method: String,
    /// The path and the query as sent (what `X-Authentication` signs).
    target: String,
    query: String,
    /// The `X-Authentication` header: None without one; Err when it is
    /// given twice or is not visible ASCII.
    header: Result<Option<String>, &'static str>,
}

/// The header that carries a signature instead of the query.
pub(super) const X_AUTHENTICATION: &str = "x-authentication";

impl Credentials {
    pub(super) fn of<B>(req: &hyper::Request<B>) -> Credentials {
        let mut values = req.headers().get_all(X_AUTHENTICATION).iter();
        let header = match (values.next(), values.next()) {
            (None, _) => Ok(None),
            (Some(_), Some(_)) => Err("the X-Authentication header is given twice"),
            (Some(v), None) => v
                .to_str()
                .map(|v| Some(v.to_string()))
                .map_err(|_| "the X-Authentication header must be visible ASCII"),
        };
        Credentials {
            browser: browser_marker(req.headers()),
            method: req.method().as_str().to_string(),
            target: req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| req.uri().path().to_string()),
            query: req.uri().query().unwrap_or("").to_string(),
            header,
        }
    }
}

/// Reads the body of a request to one of our own endpoints and checks its
/// bound signature (the method, the path, `idempotency_key` and the body):
/// the identity it acts as, and the body.
pub(super) async fn read_bound<'a>(
    bridge: &'a Bridge,
    req: hyper::Request<hyper::body::Incoming>,
    idempotency_key: Option<&str>,
) -> Result<(Caller<'a>, Body), Refusal> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let cred = Credentials::of(&req);
    let body = read_body(req, bridge).await?;
    let caller = authenticate(
        bridge,
        &cred,
        Scheme::Bound {
            method: &method,
            path: &path,
            idempotency_key,
        },
        &body,
    )?;
    Ok((caller, body))
}

/// Checks the request's signature (the `X-Authentication` header, or the
/// query parameters of `scheme`); the identity it acts as. An unsigned
/// request from a web browser is refused (any web page the user opens could
/// send it: cross-site request forgery against a bridge on loopback).
pub(super) fn authenticate<'a>(
    bridge: &'a Bridge,
    cred: &Credentials,
    scheme: Scheme<'_>,
    body: &[u8],
) -> Result<Caller<'a>, Refusal> {
    let params = query_params(&cred.query).ok_or_else(|| bad("the query string is not valid"))?;
    if let Some(header) = cred.header.clone().map_err(bad)? {
        if let Some(p) = SIGNING_PARAMS.iter().find(|p| params.contains_key(**p)) {
            return Err(bad(format!(
                "the request has an X-Authentication header and the query parameter {p}: sign with one or the other"
            )));
        }
        return authenticate_header(bridge, cred, &scheme, &header, body);
    }
    let Some(key) = params.get("key") else {
        let unsigned = bridge.unsigned.as_ref().ok_or_else(|| {
            unauthorized(
                "switchyard.error.signature_required",
                "this bridge only accepts signed requests (an X-Authentication header, or the query parameters key, timestamp, seq, nonce, signature)",
            )
        })?;
        if let Some(marker) = cred.browser {
            return Err(Refusal(
                StatusCode::FORBIDDEN,
                "switchyard.error.browser_request",
                format!(
                    "unsigned requests from web browsers are refused (the request has a {marker} \
                     header): any web page could send them; sign the request"
                ),
            ));
        }
        return Ok(Caller::Unsigned(unsigned));
    };
    let get = |name: &str| {
        params.get(name).ok_or_else(|| {
            unauthorized(
                "switchyard.error.invalid_signature",
                format!("a signed request needs the query parameter {name}"),
            )
        })
    };
    let (timestamp, seq, nonce, signature) = (
        get("timestamp")?,
        get("seq")?,
        get("nonce")?,
        get("signature")?,
    );
    for (name, value) in [("seq", seq), ("nonce", nonce)] {
        check_counter(name, value)
            .map_err(|m| unauthorized("switchyard.error.invalid_signature", m))?;
    }
    let signing_key = signing_key(bridge, key)?;
    if let Scheme::Bound { .. } = scheme {
        if let Some(extra) = params
            .keys()
            .find(|k| !SIGNING_PARAMS.contains(&k.as_str()))
        {
            return Err(bad(format!(
                "unexpected query parameter \"{}\": this endpoint takes only {}",
                Clip(extra),
                SIGNING_PARAMS.join(", ")
            )));
        }
    }
    let signed = Params {
        key,
        timestamp,
        seq,
        nonce,
    };
    let mac = expected_mac(&signing_key.secret, &scheme, &signed, body);
    accept(bridge, signing_key, mac, signature, timestamp)
}

/// A request signed with the `X-Authentication` header.
fn authenticate_header<'a>(
    bridge: &'a Bridge,
    cred: &Credentials,
    scheme: &Scheme<'_>,
    header: &str,
    body: &[u8],
) -> Result<Caller<'a>, Refusal> {
    let h = parse_header(header).map_err(|m| {
        unauthorized(
            "switchyard.error.invalid_signature",
            format!("X-Authentication: {m}"),
        )
    })?;
    check_counter("nonce", &h.nonce)
        .map_err(|m| unauthorized("switchyard.error.invalid_signature", m))?;
    let signing_key = signing_key(bridge, &h.key)?;
    let idempotency_key = match *scheme {
        Scheme::Bound {
            idempotency_key, ..
        } => idempotency_key,
        Scheme::Crossbar => None,
    };
    let mac = header_mac(
        &signing_key.secret,
        &HeaderSigned {
            method: &cred.method,
            target: &cred.target,
            key: &h.key,
            timestamp: &h.timestamp,
            nonce: &h.nonce,
            idempotency_key,
            body,
        },
    );
    accept(bridge, signing_key, mac, &h.signature, &h.timestamp)
}

/// The bridge's key named `key` now (held: a reload may replace the keys
/// while the request runs).
fn signing_key(bridge: &Bridge, key: &str) -> Result<Arc<SigningKey>, Refusal> {
    bridge.signing_key(key).ok_or_else(|| {
        unauthorized(
            "switchyard.error.unknown_key",
            format!("unknown signing key \"{}\"", Clip(key)),
        )
    })
}

/// The checks every signed request passes, whichever way it is signed: the
/// signature, the timestamp inside the window, and the signature not seen
/// before (the key's replay cache).
fn accept<'a>(
    bridge: &Bridge,
    signing_key: Arc<SigningKey>,
    mac: Mac32,
    signature: &str,
    timestamp: &str,
) -> Result<Caller<'a>, Refusal> {
    if !matches(&mac, signature) {
        return Err(unauthorized(
            "switchyard.error.invalid_signature",
            "the signature does not match the request",
        ));
    }
    let window = bridge.config.timestamp_window;
    let Some(ts) = parse_timestamp(timestamp) else {
        return Err(unauthorized(
            "switchyard.error.invalid_timestamp",
            format!(
                "timestamp \"{}\" is not of the form 2026-01-01T00:00:00.000Z",
                Clip(timestamp)
            ),
        ));
    };
    if skew(ts) > window {
        return Err(unauthorized(
            "switchyard.error.stale_timestamp",
            format!(
                "timestamp {} is more than {} s from the router's clock",
                Clip(timestamp),
                window.as_secs()
            ),
        ));
    }
    match signing_key.replays.first_use(mac, remember_for(ts, window)) {
        Ok(()) => Ok(Caller::Key(signing_key)),
        Err(Refused::Replayed) => Err(unauthorized(
            "switchyard.error.replayed_request",
            "this signed request was already accepted: a signature is accepted once \
             (use a fresh nonce for each request)",
        )),
        Err(Refused::Full(wait)) => Err(Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "switchyard.error.replay_cache_full",
            format!(
                "the bridge remembers replay_cache_size = {} signatures per key and \
                 all of this key's are inside their window; retry in {} s",
                bridge.config.replay_cache_size,
                wait.as_secs() + 1
            ),
        )),
    }
}
