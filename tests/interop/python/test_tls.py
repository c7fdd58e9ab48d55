"""TLS: Autobahn|Python (asyncio Component) over wss:// and RawSocket over TLS,
with certificates made by the test (`cryptography`) and an ssl.SSLContext
that trusts the test CA; client certificates; plaintext on a TLS port."""

from __future__ import annotations

import asyncio
import socket
import ssl
import tempfile
from pathlib import Path

import pytest
from autobahn.asyncio.component import Component
from autobahn.wamp.types import PublishOptions

from pki import Ca, client_context, tls_table
from wamplib import RS_MAGIC, T, http_exchange, run, upgrade_request


@pytest.fixture(scope="module")
def pki_dir():
    with tempfile.TemporaryDirectory(prefix="sy-pki-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def ca(pki_dir):
    return Ca(pki_dir)


@pytest.fixture(scope="module")
def tls_router(module_router_factory, ca):
    table = tls_table(ca.server())
    return module_router_factory(ws_opts={"tls": table}, rs_opts={"tls": table})


def transport(router, kind, serializer, ctx):
    if kind == "wss":
        url, t = router.ws_url, "websocket"
        assert url.startswith("wss://"), url
        port = router.ws_port
    else:
        url, t, port = f"rs://{router.host}:{router.rs_port}", "rawsocket", router.rs_port
    cfg = {"type": t, "url": url, "endpoint": {"type": "tcp", "host": router.host, "port": port, "tls": ctx},
           "max_retries": 0}
    if t == "websocket":
        cfg["serializers"] = [serializer]
    else:
        cfg["serializer"] = serializer
    return cfg


async def roundtrip(router, kind, serializer, ctx, timeout=T):
    """A Component joins over TLS, registers, calls, subscribes and publishes.
    Returns (session details, call result, event payload)."""
    loop = asyncio.get_running_loop()
    outcome = loop.create_future()
    comp = Component(transports=[transport(router, kind, serializer, ctx)], realm="realm1")

    @comp.on_join
    async def joined(session, details):
        try:
            await session.register(lambda a, b: a + b, "com.tls.add")
            got = loop.create_future()
            await session.subscribe(lambda x: got.done() or got.set_result(x), "com.tls.tick")
            total = await session.call("com.tls.add", 2, 3)
            await session.publish("com.tls.tick", "hello over TLS",
                                  options=PublishOptions(acknowledge=True, exclude_me=False))
            event = await asyncio.wait_for(got, timeout)
            if not outcome.done():
                outcome.set_result((details, total, event))
        except Exception as e:  # report to the test
            if not outcome.done():
                outcome.set_exception(e)
        finally:
            await session.leave()

    @comp.on_connectfailure
    def failed(component, e):
        if not outcome.done():
            outcome.set_exception(e)

    done = comp.start(loop=loop)
    try:
        return await asyncio.wait_for(outcome, timeout)
    finally:
        # With max_retries 0 the component ends by itself after leaving or
        # failing; its own error (if any) was reported through `outcome`.
        try:
            await asyncio.wait_for(asyncio.ensure_future(done), timeout)
        except Exception:
            pass


@pytest.mark.parametrize("serializer", ["json", "msgpack", "cbor"])
@pytest.mark.parametrize("kind", ["wss", "rawsocket-tls"])
def test_component_over_tls(tls_router, ca, kind, serializer):
    async def main():
        details, total, event = await roundtrip(tls_router, kind, serializer, client_context(ca))
        assert details.realm == "realm1"
        assert total == 5
        assert event == "hello over TLS"

    run(main())


def test_untrusted_server_certificate_is_refused(tls_router, pki_dir):
    other = Ca(pki_dir, "Some Other CA")

    async def main():
        with pytest.raises(Exception) as e:
            await roundtrip(tls_router, "wss", "json", client_context(other), timeout=3)
        assert "CERTIFICATE_VERIFY_FAILED" in repr(e.value) or isinstance(e.value, ssl.SSLError), repr(e.value)

    run(main())


def test_plaintext_on_a_tls_port_fails_cleanly(tls_router, ca):
    """A plain RawSocket handshake is closed unanswered, a plain HTTP upgrade
    gets 400 with a hint to use wss://; the router logs it (not as an error)
    and goes on serving TLS clients."""
    with socket.create_connection((tls_router.host, tls_router.rs_port), timeout=T) as s:
        s.sendall(bytes([RS_MAGIC, 0xF1, 0, 0]))
        assert s.recv(16) == b"", "a plaintext RawSocket handshake got an answer"
    status, _, body = http_exchange(tls_router.host, tls_router.ws_port,
                                    upgrade_request(tls_router.host, tls_router.ws_port, "/ws", ["wamp.2.json"]))
    assert status == 400 and b"wss://" in body, (status, body)

    async def main():
        _, total, _ = await roundtrip(tls_router, "rawsocket-tls", "json", client_context(ca))
        assert total == 5

    run(main())
    assert len(tls_router.wait_log(r"not a TLS handshake")) >= 2, tls_router.log_tail()
    assert not [l for l in tls_router.log_text().splitlines() if " ERROR " in l and not l.startswith("# ")]


def test_required_client_certificate(router_factory, ca, pki_dir):
    clients = Ca(pki_dir, "Client CA")
    table = tls_table(ca.server("server-mtls"), client_ca=clients.pem.cert, client_auth="required")
    r = router_factory(ws_opts={"tls": table}, rs_opts={"tls": table}, log={"level": "debug"})
    alice = clients.client("alice")

    async def main():
        for kind in ["wss", "rawsocket-tls"]:
            with pytest.raises(Exception):
                await roundtrip(r, kind, "json", client_context(ca), timeout=3)
            _, total, _ = await roundtrip(r, kind, "json", client_context(ca, alice))
            assert total == 5

    run(main())
    # The router read the certificate's fingerprint and subject CN.
    lines = r.wait_log(r"TLS client certificate verified")
    assert lines and alice.fingerprint in lines[0] and "alice" in lines[0], lines
    assert r.wait_log(r"TLS handshake failed"), r.log_tail()
