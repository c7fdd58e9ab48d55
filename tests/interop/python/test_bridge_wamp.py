"""The HTTP bridge (docs/HTTP-BRIDGE.md) with a real HTTP client (http.client)
on one side and Autobahn|Python sessions on the other: `POST /call` reaches an
Autobahn callee and returns its results; WAMP errors come back Crossbar's way
(200 {"error", "args", "kwargs"}) or, on a bridge with `error_status = true`,
as HTTP statuses; timeouts; `POST /publish` and webhooks reach an Autobahn
subscriber; and refused requests (unsigned, badly signed, replayed, stale,
malformed) never reach the callee or the subscriber.

One router serves two bridges on the same realm: "crossbar" (default
`error_status = false`, webhooks) and "status" (`error_status = true`,
`call_timeout = "1s"`). The HTTP requests run in a thread
(asyncio.to_thread) so the Autobahn sessions keep serving in the loop.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
from http.client import HTTPConnection
import json
import secrets
import time
import urllib.parse
import uuid
from dataclasses import dataclass

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallResult, RegisterOptions

from routerproc import free_port
from wamplib import LOOSE_REALM, QUIET, T, close_all, connect, run, subscribe

KEY, SECRET = "billing", "billing-secret-at-least-16-chars"
AUTHID, ROLE = "billing-service", "backend"
HOOK_SECRET = "the-webhook-secret"
OPEN_HOOK, OPEN_TOPIC = "/hooks/open", "com.example.bridge.hook.open"
SIGNED_HOOK, SIGNED_TOPIC = "/hooks/signed", "com.example.bridge.hook.signed"
MAX_BODY = 65536


@dataclass
class Bridges:
    router: object
    crossbar: int  # port of the bridge with Crossbar's 200 {"error": ...}
    status: int  # port of the bridge with error_status = true


@pytest.fixture(scope="module")
def bridges(module_router_factory):
    crossbar = free_port()
    status = free_port()
    while status == crossbar:
        status = free_port()
    key = [{"key": KEY, "secret": SECRET, "authid": AUTHID, "role": ROLE}]
    r = module_router_factory(
        realms=[dict(LOOSE_REALM, disclose_caller="always", disclose_publisher="always")],
        bridges=[
            {"address": f"127.0.0.1:{crossbar}", "realm": "realm1", "max_body_size": MAX_BODY, "key": key,
             "webhook": [{"path": OPEN_HOOK, "topic": OPEN_TOPIC},
                         {"path": SIGNED_HOOK, "topic": SIGNED_TOPIC, "secret": HOOK_SECRET}]},
            {"address": f"127.0.0.1:{status}", "realm": "realm1", "error_status": True, "call_timeout": "1s",
             "key": key},
        ])
    return Bridges(r, crossbar, status)


def uri(tag):
    return f"com.example.bridge.{tag}.{uuid.uuid4().hex[:10]}"


# ------------------------------------------------------------------ HTTP ---

@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError(f"HTTP {self.status}: body is not JSON ({e}): {self.body[:300]!r}") from None


def http(port, method, target, body=b"", headers=None) -> Reply:
    """One request on a fresh connection (blocking)."""
    conn = HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def timestamp(offset_s: float = 0.0) -> str:
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset_s)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def sign(secret, key, ts, seq, nonce, body: bytes) -> str:
    mac = hmac.new(secret.encode(), key.encode() + ts.encode() + seq.encode() + nonce.encode() + body,
                   hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode()


def signed_query(body: bytes, *, key=KEY, secret=SECRET, ts=None, nonce=None, seq="1", drop=(), signed_body=None):
    """The query string of a signed request for `body` (`signed_body`: sign
    other bytes; `drop`: leave these parameters out)."""
    ts = timestamp() if ts is None else ts
    nonce = str(secrets.randbits(53)) if nonce is None else nonce
    params = {"key": key, "timestamp": ts, "seq": seq, "nonce": nonce,
              "signature": sign(secret, key, ts, seq, nonce, body if signed_body is None else signed_body)}
    return urllib.parse.urlencode({k: v for k, v in params.items() if k not in drop})


def encode(obj) -> bytes:
    return json.dumps(obj).encode()


async def bridge_call(port, procedure, *args, kwargs=None, options=None) -> Reply:
    body = {"procedure": procedure, "args": list(args)}
    if kwargs is not None:
        body["kwargs"] = kwargs
    if options is not None:
        body["options"] = options
    raw = encode(body)
    return await asyncio.to_thread(http, port, "POST", f"/call?{signed_query(raw)}", raw,
                                   {"Content-Type": "application/json"})


def hub_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# ------------------------------------------------------------------ /call ---

def test_call_reaches_an_autobahn_callee(bridges):
    """The callee (MessagePack) gets the JSON request's args/kwargs and sees the
    key's identity as the caller; its results come back as {"args", "kwargs"}."""
    r = bridges.router
    add, one, none = uri("add"), uri("one"), uri("none")

    async def main():
        callee = await connect(r, "ws", "msgpack")
        try:
            seen = []

            def add_fn(a, b, scale=1, details=None):
                seen.append((a, b, scale, details.caller_authid, details.caller_authrole))
                return CallResult(a + b, (a + b) * scale, op="add", detail={"pi": 3.25, "city": "zürich"})

            await asyncio.wait_for(callee.register(add_fn, add, options=RegisterOptions(details=True)), T)
            await asyncio.wait_for(callee.register(lambda: "just one", one), T)
            await asyncio.wait_for(callee.register(lambda: CallResult(), none), T)

            rep = await bridge_call(bridges.crossbar, add, 2, 3, kwargs={"scale": 10})
            assert rep.status == 200, rep
            assert rep.headers.get("content-type") == "application/json"
            assert rep.json() == {"args": [5, 50], "kwargs": {"op": "add", "detail": {"pi": 3.25, "city": "zürich"}}}
            assert seen == [(2, 3, 10, AUTHID, ROLE)]

            # The same through the error_status bridge: a success is a 200 there too.
            rep = await bridge_call(bridges.status, add, 40, 2)
            assert (rep.status, rep.json()) == (200, {"args": [42, 42], "kwargs": {"op": "add", "detail":
                                                                                    {"pi": 3.25, "city": "zürich"}}})
            assert len(seen) == 2

            rep = await bridge_call(bridges.crossbar, one)
            assert (rep.status, rep.json()) == (200, {"args": ["just one"], "kwargs": {}})
            rep = await bridge_call(bridges.crossbar, none)
            assert (rep.status, rep.json()) == (200, {"args": [], "kwargs": {}})
        finally:
            await close_all(callee)

    run(main())


def test_callee_errors_crossbar_style_and_as_statuses(bridges):
    """An ApplicationError of the callee: 200 {"error", "args", "kwargs"} on the
    default bridge; the same body with 422 (application error) or 400
    (wamp.error.invalid_argument) on the error_status bridge."""
    r = bridges.router
    proc = uri("fail")

    async def main():
        callee = await connect(r, "ws", "json")
        try:
            def fail(kind):
                if kind == "app":
                    raise ApplicationError("com.example.error.out_of_stock", "sold out", sku="A-1", left=0)
                raise ApplicationError(ApplicationError.INVALID_ARGUMENT, "kind must be app")

            await asyncio.wait_for(callee.register(fail, proc), T)
            app = {"error": "com.example.error.out_of_stock", "args": ["sold out"], "kwargs": {"sku": "A-1", "left": 0}}
            invalid = {"error": "wamp.error.invalid_argument", "args": ["kind must be app"], "kwargs": {}}
            for port, kind, want_status, want in [(bridges.crossbar, "app", 200, app),
                                                  (bridges.status, "app", 422, app),
                                                  (bridges.crossbar, "other", 200, invalid),
                                                  (bridges.status, "other", 400, invalid)]:
                rep = await bridge_call(port, proc, kind)
                assert (rep.status, rep.json()) == (want_status, want), (port, kind)
        finally:
            await close_all(callee)

    run(main())


def test_call_to_an_unregistered_procedure(bridges):
    proc = uri("nobody")

    async def main():
        for port, want_status in [(bridges.crossbar, 200), (bridges.status, 404)]:
            rep = await bridge_call(port, proc, 1)
            body = rep.json()
            assert rep.status == want_status, body
            assert body["error"] == "wamp.error.no_such_procedure", body
            assert proc in body["args"][0], body
            assert body["kwargs"] == {}, body

    run(main())


def test_call_timeout(bridges):
    """options.timeout (ms) cancels a slow Autobahn callee: wamp.error.timeout,
    200 on the default bridge, 504 on the error_status one; without
    options.timeout the bridge's call_timeout (1s there) applies."""
    r = bridges.router
    proc = uri("slow")

    async def main():
        callee = await connect(r, "ws", "cbor")
        try:
            started, interrupted = [], []

            async def slow():
                started.append(time.monotonic())
                try:
                    await asyncio.sleep(4)
                except asyncio.CancelledError:
                    # Autobahn cancels the handler on the router's INTERRUPT.
                    interrupted.append(1)
                    raise
                return "late"

            await asyncio.wait_for(callee.register(slow, proc), T)
            for port, options, want_status, low, high in [(bridges.crossbar, {"timeout": 300}, 200, 0.25, 2.0),
                                                          (bridges.status, {"timeout": 300}, 504, 0.25, 2.0),
                                                          (bridges.status, None, 504, 0.9, 3.0)]:
                t0 = time.monotonic()
                rep = await bridge_call(port, proc, options=options)
                took = time.monotonic() - t0
                body = rep.json()
                assert (rep.status, body["error"]) == (want_status, "wamp.error.timeout"), body
                assert low <= took < high, f"answered after {took:.2f}s (options {options})"
            assert len(started) == 3, "each call reached the callee before timing out"
            # The router interrupted the callee when the call timed out.
            deadline = time.monotonic() + T
            while len(interrupted) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert len(interrupted) == 3, f"{len(interrupted)} of 3 timed-out invocations were interrupted"
        finally:
            await close_all(callee)

    run(main())


# --------------------------------------------------------------- refusals ---

def test_unsigned_call_is_refused_and_never_invoked(bridges):
    """This bridge only accepts signed requests: an unsigned POST /call is 401
    switchyard.error.signature_required, and the callee sees no INVOCATION."""
    r = bridges.router
    proc = uri("guarded")

    async def main():
        callee = await connect(r, "ws", "json")
        try:
            invoked = []
            await asyncio.wait_for(callee.register(lambda *a, **kw: invoked.append((a, kw)) or "ran", proc), T)
            raw = encode({"procedure": proc, "args": [1]})
            for port in (bridges.crossbar, bridges.status):
                rep = await asyncio.to_thread(http, port, "POST", "/call", raw, {"Content-Type": "application/json"})
                body = rep.json()
                assert rep.status == 401, body
                assert body["error"] == "switchyard.error.signature_required", body
                assert "signed" in body["message"], body
            await asyncio.sleep(QUIET)
            assert invoked == []
            # The same call signed reaches it: the refusals were about the signature.
            rep = await bridge_call(bridges.crossbar, proc, 1)
            assert (rep.status, rep.json()) == (200, {"args": ["ran"], "kwargs": {}})
            assert invoked == [((1,), {})]
        finally:
            await close_all(callee)

    run(main())


def test_replayed_call_is_refused(bridges):
    """The same signed request twice: the second is 401
    switchyard.error.replayed_request and does not invoke the callee again."""
    r = bridges.router
    proc = uri("once")

    async def main():
        callee = await connect(r, "ws", "json")
        try:
            invoked = []
            await asyncio.wait_for(callee.register(lambda n: invoked.append(n) or n * 2, proc), T)
            raw = encode({"procedure": proc, "args": [21]})
            target = f"/call?{signed_query(raw)}"
            first = await asyncio.to_thread(http, bridges.crossbar, "POST", target, raw)
            assert (first.status, first.json()) == (200, {"args": [42], "kwargs": {}})
            again = await asyncio.to_thread(http, bridges.crossbar, "POST", target, raw)
            body = again.json()
            assert (again.status, body["error"]) == (401, "switchyard.error.replayed_request"), body
            await asyncio.sleep(QUIET)
            assert invoked == [21]
        finally:
            await close_all(callee)

    run(main())


def _bad_requests(proc):
    """(id, method, target, body, status, error) of requests the bridge must refuse."""
    good = encode({"procedure": proc, "args": [1]})
    big = encode({"procedure": proc, "args": ["x" * MAX_BODY]})

    def signed(body, **kw):
        return f"/call?{signed_query(body, **kw)}"

    return [
        ("unknown-key", "POST", signed(good, key="nobody"), good, 401, "switchyard.error.unknown_key"),
        ("wrong-secret", "POST", signed(good, secret="not-the-secret-at-all"), good, 401,
         "switchyard.error.invalid_signature"),
        ("other-body-signed", "POST", signed(good, signed_body=encode({"procedure": proc, "args": [2]})), good, 401,
         "switchyard.error.invalid_signature"),
        ("no-nonce", "POST", signed(good, drop=("nonce",)), good, 401, "switchyard.error.invalid_signature"),
        ("stale-timestamp", "POST", signed(good, ts=timestamp(-3600)), good, 401, "switchyard.error.stale_timestamp"),
        ("unreadable-timestamp", "POST", signed(good, ts="yesterday"), good, 401,
         "switchyard.error.invalid_timestamp"),
        ("not-post", "GET", signed(b""), b"", 405, "switchyard.error.method_not_allowed"),
        ("not-json", "POST", signed(b"procedure=x"), b"procedure=x", 400, "switchyard.error.invalid_request"),
        ("args-not-array", "POST", signed(encode({"procedure": proc, "args": {"a": 1}})),
         encode({"procedure": proc, "args": {"a": 1}}), 400, "switchyard.error.invalid_request"),
        ("kwargs-not-object", "POST", signed(encode({"procedure": proc, "kwargs": [1]})),
         encode({"procedure": proc, "kwargs": [1]}), 400, "switchyard.error.invalid_request"),
        ("bad-timeout", "POST", signed(encode({"procedure": proc, "options": {"timeout": "soon"}})),
         encode({"procedure": proc, "options": {"timeout": "soon"}}), 400, "switchyard.error.invalid_request"),
        ("no-procedure", "POST", signed(encode({"args": [1]})), encode({"args": [1]}), 400,
         "switchyard.error.invalid_request"),
        ("invalid-uri", "POST", signed(encode({"procedure": "com..bad uri"})), encode({"procedure": "com..bad uri"}),
         400, "switchyard.error.invalid_request"),
        ("too-large", "POST", signed(big), big, 413, "switchyard.error.payload_too_large"),
    ]


BAD_IDS = [b[0] for b in _bad_requests("com.example.x")]


@pytest.mark.parametrize("case", BAD_IDS)
def test_bad_call_requests_never_reach_the_callee(bridges, case):
    r = bridges.router
    proc = uri("bad")

    async def main():
        callee = await connect(r, "ws", "json")
        try:
            invoked = []
            await asyncio.wait_for(callee.register(lambda *a, **kw: invoked.append(a) or "ran", proc), T)
            _, method, target, body, want_status, want_error = next(b for b in _bad_requests(proc) if b[0] == case)
            rep = await asyncio.to_thread(http, bridges.crossbar, method, target, body,
                                          {"Content-Type": "application/json"})
            reply = rep.json()
            assert (rep.status, reply.get("error")) == (want_status, want_error), reply
            assert isinstance(reply.get("message"), str) and reply["message"], reply
            if want_status == 405:
                assert rep.headers.get("allow") == "POST"
            await asyncio.sleep(QUIET)
            assert invoked == []
        finally:
            await close_all(callee)

    run(main())


# ---------------------------------------------------------------- /publish ---

def test_signed_publish_reaches_an_autobahn_subscriber(bridges):
    """POST /publish: the subscriber gets args/kwargs, the publisher disclosed
    as the key's identity, and the publication id the bridge answered; an
    unsigned publish is refused and delivers nothing."""
    r = bridges.router
    topic = uri("publish")

    async def main():
        sub = await connect(r, "rs", "msgpack")
        try:
            inbox, _ = await subscribe(sub, topic)
            unsigned = encode({"topic": topic, "args": ["unsigned"]})
            rep = await asyncio.to_thread(http, bridges.crossbar, "POST", "/publish", unsigned)
            assert (rep.status, rep.json()["error"]) == (401, "switchyard.error.signature_required")

            raw = encode({"topic": topic, "args": ["hello", 42], "kwargs": {"color": "orange"}})
            rep = await asyncio.to_thread(http, bridges.crossbar, "POST", f"/publish?{signed_query(raw)}", raw,
                                          {"Content-Type": "application/json"})
            assert rep.status == 200, rep
            pub_id = rep.json()["id"]
            assert isinstance(pub_id, int) and pub_id > 0
            ev = await inbox.wait_for(lambda e: True, "the bridge's event")
            assert (ev.args, ev.kwargs) == (["hello", 42], {"color": "orange"})
            assert ev.details.publication == pub_id
            assert (ev.details.publisher_authid, ev.details.publisher_authrole) == (AUTHID, ROLE)
            await asyncio.sleep(QUIET)
            assert inbox.args == [["hello", 42]], "the unsigned publish delivered nothing"
        finally:
            await close_all(sub)

    run(main())


# ---------------------------------------------------------------- webhooks ---

def test_webhook_post_arrives_as_headers_and_body(bridges):
    """Any POST to a webhook path is published as one argument {headers, body}
    (header names in lower case) and answered 202 {"id"}; on a signed webhook
    with the right X-Hub-Signature-256."""
    r = bridges.router

    async def main():
        sub = await connect(r, "ws", "json")
        try:
            open_inbox, _ = await subscribe(sub, OPEN_TOPIC)
            signed_inbox, _ = await subscribe(sub, SIGNED_TOPIC)
            tag = uuid.uuid4().hex
            text = f"plain text ü {tag}"
            rep = await asyncio.to_thread(http, bridges.crossbar, "POST", OPEN_HOOK, text.encode(),
                                          {"Content-Type": "text/plain; charset=utf-8", "X-Custom": "Yes"})
            assert rep.status == 202, rep
            pub_id = rep.json()["id"]
            ev = await open_inbox.wait_for(lambda e: tag in e.args[0]["body"], "the open webhook's event")
            assert ev.kwargs == {}
            assert len(ev.args) == 1
            assert ev.args[0]["body"] == text
            headers = ev.args[0]["headers"]
            assert headers["x-custom"] == "Yes"
            assert headers["content-type"] == "text/plain; charset=utf-8"
            assert headers["content-length"] == str(len(text.encode()))
            assert ev.details.publication == pub_id

            payload = json.dumps({"action": "opened", "tag": tag}).encode()
            rep = await asyncio.to_thread(http, bridges.crossbar, "POST", SIGNED_HOOK, payload,
                                          {"X-Hub-Signature-256": hub_signature(HOOK_SECRET, payload),
                                           "X-GitHub-Event": "issues"})
            assert rep.status == 202, rep
            ev = await signed_inbox.wait_for(lambda e: tag in e.args[0]["body"], "the signed webhook's event")
            assert json.loads(ev.args[0]["body"]) == {"action": "opened", "tag": tag}
            assert ev.args[0]["headers"]["x-github-event"] == "issues"
            assert ev.args[0]["headers"]["x-hub-signature-256"] == hub_signature(HOOK_SECRET, payload)
            assert ev.details.publication == rep.json()["id"]
        finally:
            await close_all(sub)

    run(main())


def test_webhook_with_a_bad_signature_publishes_nothing(bridges):
    """A signed webhook refuses a missing, wrong or mismatched
    X-Hub-Signature-256 with 401 and publishes nothing: the subscriber's only
    event afterwards is the one correctly signed request sent last."""
    r = bridges.router

    async def main():
        sub = await connect(r, "ws", "msgpack")
        try:
            inbox, _ = await subscribe(sub, SIGNED_TOPIC)
            body = json.dumps({"action": "deleted", "n": uuid.uuid4().hex}).encode()
            bad_headers = [
                {},
                {"X-Hub-Signature-256": hub_signature("not-the-webhook-secret", body)},
                {"X-Hub-Signature-256": hub_signature(HOOK_SECRET, body + b" ")},
                {"X-Hub-Signature-256": hub_signature(HOOK_SECRET, body).replace("sha256=", "sha1=")},
                {"X-Hub-Signature-256": "sha256=zz"},
            ]
            for h in bad_headers:
                rep = await asyncio.to_thread(http, bridges.crossbar, "POST", SIGNED_HOOK, body, h)
                reply = rep.json()
                assert (rep.status, reply["error"]) == (401, "switchyard.error.invalid_signature"), (h, reply)
                assert "X-Hub-Signature-256" in reply["message"], reply
            await asyncio.sleep(QUIET)
            assert inbox.events == [], f"a refused webhook published: {inbox.args!r}"

            good = json.dumps({"action": "good"}).encode()
            rep = await asyncio.to_thread(http, bridges.crossbar, "POST", SIGNED_HOOK, good,
                                          {"X-Hub-Signature-256": hub_signature(HOOK_SECRET, good)})
            assert rep.status == 202, rep
            await inbox.wait_for(lambda e: e.args[0]["body"] == good.decode(), "the good webhook's event")
            await asyncio.sleep(QUIET)
            assert [e.args[0]["body"] for e in inbox.events] == [good.decode()]
        finally:
            await close_all(sub)

    run(main())


def test_openapi_names_the_configured_paths(bridges):
    """Each bridge describes its own endpoints: the webhooks only where configured."""
    rep = http(bridges.crossbar, "GET", "/openapi.json")
    assert rep.status == 200
    doc = rep.json()
    assert doc["openapi"].startswith("3.")
    assert {"/publish", "/call", OPEN_HOOK, SIGNED_HOOK} <= set(doc["paths"]), sorted(doc["paths"])
    assert SIGNED_TOPIC in doc["paths"][SIGNED_HOOK]["post"]["summary"]
    rep = http(bridges.status, "GET", "/openapi.json")
    paths = set(rep.json()["paths"])
    assert {"/publish", "/call"} <= paths and not {OPEN_HOOK, SIGNED_HOOK} & paths, sorted(paths)
