"""JSON-RPC 2.0 over HTTP into WAMP (docs/HTTP-BRIDGE.md, "JSON-RPC"), with a
third-party JSON-RPC client library (jsonrpcclient: it builds the requests and
parses the responses) over http.client, against a real router whose
procedures are registered by Autobahn|Python callees.

Requests are signed with the X-Authentication header (method, path with
query, body), as the docs describe it. The HTTP requests run in a thread
(asyncio.to_thread) so the Autobahn callee keeps serving in the loop.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import json
import secrets
import uuid
from http.client import HTTPConnection

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallResult
from jsonrpcclient import Error, Ok, notification, parse, request

from routerproc import free_port
from wamplib import LOOSE_REALM, T, close_all, connect, run

KEY, SECRET = "rpc-app", "rpc-app-secret-at-least-16-chars"
PATH = "/rpc"
MAX_BATCH = 5


@pytest.fixture(scope="module")
def bridge(module_router_factory):
    port = free_port()
    r = module_router_factory(
        realms=[LOOSE_REALM],
        bridges=[{"address": f"127.0.0.1:{port}", "realm": "realm1", "jsonrpc_path": PATH,
                  "jsonrpc_max_batch": MAX_BATCH, "call_timeout": "5s",
                  "key": [{"key": KEY, "secret": SECRET, "role": "backend"}]}])
    return r, port


def x_authentication(method: str, target: str, body: bytes, key=KEY, secret=SECRET) -> str:
    t = datetime.datetime.now(datetime.timezone.utc)
    ts = t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    nonce = str(secrets.randbits(53))
    canonical = "\n".join(["switchyard-x-authentication-v1", method, target, key, ts, nonce, "",
                           hashlib.sha256(body).hexdigest()])
    sig = base64.urlsafe_b64encode(hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).digest())
    return f"key={key}, timestamp={ts}, nonce={nonce}, signature={sig.decode()}"


def post(port, payload, *, raw: bytes | None = None, signed=True):
    """POST a JSON-RPC payload (or raw bytes); (status, parsed JSON or None)."""
    body = raw if raw is not None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if signed:
        headers["X-Authentication"] = x_authentication("POST", PATH, body)
    conn = HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request("POST", PATH, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if data else None)
    finally:
        conn.close()


async def rpc(port, payload, **kw):
    return await asyncio.to_thread(post, port, payload, **kw)


def uri(tag):
    return f"com.example.rpc.{tag}.{uuid.uuid4().hex[:8]}"


def test_calls_map_params_and_results(bridge):
    """params list -> args, object -> kwargs; one result -> the value, several
    -> an array, keyword results -> an object, both -> {args, kwargs}."""
    r, port = bridge
    add, shapes = uri("add"), uri("shapes")

    async def main():
        callee = await connect(r, "ws", "msgpack")
        try:
            seen = []

            def add_fn(a, b, scale=1):
                seen.append((a, b, scale))
                return (a + b) * scale

            def shapes_fn(kind):
                return {"none": CallResult(), "two": CallResult(1, "x"), "kw": CallResult(pages=3),
                        "both": CallResult(1, pages=3), "dict": {"a": [1, 2]}}[kind]

            await asyncio.wait_for(callee.register(add_fn, add), T)
            await asyncio.wait_for(callee.register(shapes_fn, shapes), T)

            status, body = await rpc(port, request(add, params=(2, 3)))
            assert status == 200, body
            assert isinstance(parse(body), Ok) and parse(body).result == 5, body
            status, body = await rpc(port, request(add, params={"a": 2, "b": 3, "scale": 10}))
            assert parse(body) == Ok(50, body["id"]), body
            assert seen == [(2, 3, 1), (2, 3, 10)]
            for kind, want in [("none", None), ("two", [1, "x"]), ("kw", {"pages": 3}),
                               ("both", {"args": [1], "kwargs": {"pages": 3}}), ("dict", {"a": [1, 2]})]:
                status, body = await rpc(port, request(shapes, params=(kind,), id=kind))
                assert (status, parse(body)) == (200, Ok(want, kind)), body
        finally:
            await close_all(callee)

    run(main())


def test_errors_carry_the_spec_codes(bridge):
    """-32601 for no_such_procedure, -32602 for invalid_argument, a server
    error with data {error, args, kwargs} for an application error, -32700
    for a body that is not JSON, -32600 for what is not a request."""
    r, port = bridge
    proc = uri("fail")

    async def main():
        callee = await connect(r, "ws", "json")
        try:
            def fail(kind):
                if kind == "app":
                    raise ApplicationError("com.example.error.out_of_stock", "sold out", sku="A-1")
                raise ApplicationError(ApplicationError.INVALID_ARGUMENT, "kind must be app")

            await asyncio.wait_for(callee.register(fail, proc), T)
            _, body = await rpc(port, request(uri("nobody"), params=(1,)))
            e = parse(body)
            assert isinstance(e, Error) and e.code == -32601, body
            assert e.data["error"] == "wamp.error.no_such_procedure", body
            _, body = await rpc(port, request(proc, params=("other",)))
            e = parse(body)
            assert isinstance(e, Error) and e.code == -32602 and e.message == "kind must be app", body
            _, body = await rpc(port, request(proc, params=("app",)))
            e = parse(body)
            assert isinstance(e, Error) and -32099 <= e.code <= -32000, body
            assert e.message == "sold out"
            assert e.data == {"error": "com.example.error.out_of_stock", "args": ["sold out"],
                              "kwargs": {"sku": "A-1"}}, body

            status, body = await rpc(port, None, raw=b'{"jsonrpc": "2.0", "method": ')
            assert status == 200 and body["error"]["code"] == -32700 and body["id"] is None, body
            for bad in [{"jsonrpc": "1.0", "method": proc, "id": 1}, {"jsonrpc": "2.0", "id": 1},
                        {"jsonrpc": "2.0", "method": proc, "params": 5, "id": 1}, [], 42]:
                status, body = await rpc(port, bad)
                assert status == 200 and body["error"]["code"] == -32600, (bad, body)
        finally:
            await close_all(callee)

    run(main())


def test_batches_and_notifications(bridge):
    """A batch answers each request (by id, notifications left out); a batch
    of notifications only, or one notification, gets 204 and still calls;
    a batch over jsonrpc_max_batch is refused as a whole."""
    r, port = bridge
    echo, note = uri("echo"), uri("note")

    async def main():
        callee = await connect(r, "ws", "json")
        try:
            notes = []
            await asyncio.wait_for(callee.register(lambda x: x, echo), T)
            await asyncio.wait_for(callee.register(lambda x: notes.append(x), note), T)

            batch = [request(echo, params=("a",), id="first"), notification(note, params=("n1",)),
                     request(uri("nobody"), id="second"), request(echo, params=({"k": 1},), id=3)]
            status, body = await rpc(port, batch)
            assert status == 200 and isinstance(body, list) and len(body) == 3, body
            by_id = {x.id: x for x in parse(body)}
            assert by_id["first"] == Ok("a", "first")
            assert isinstance(by_id["second"], Error) and by_id["second"].code == -32601
            assert by_id[3] == Ok({"k": 1}, 3)
            assert notes == ["n1"]

            status, body = await rpc(port, [notification(note, params=("n2",)), notification(note, params=("n3",))])
            assert (status, body) == (204, None)
            status, body = await rpc(port, notification(note, params=("n4",)))
            assert (status, body) == (204, None)
            assert sorted(notes) == ["n1", "n2", "n3", "n4"]

            status, body = await rpc(port, [request(echo, params=(i,)) for i in range(MAX_BATCH + 1)])
            assert status == 200 and body["error"]["code"] == -32600, body
        finally:
            await close_all(callee)

    run(main())


def test_unsigned_or_badly_signed_requests_are_refused(bridge):
    _, port = bridge

    async def main():
        status, body = await rpc(port, request("com.example.x"), signed=False)
        assert status == 401 and body["error"] == "switchyard.error.signature_required", body

    run(main())
