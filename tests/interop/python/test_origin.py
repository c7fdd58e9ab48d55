"""Browser safety: `allowed_origins` on a WebSocket listener. A browser's
upgrade with an Origin that is not listed gets HTTP 403 naming the origin;
requests without Origin (non-browser clients) are allowed; a listener
without the option accepts every origin."""

from __future__ import annotations

import asyncio

import pytest

from wamplib import T, TestSession, close_all, http_exchange, run, upgrade_request
from autobahn.asyncio.websocket import WampWebSocketClientFactory
from autobahn.wamp.serializer import JsonSerializer
from autobahn.wamp.types import ComponentConfig

ALLOWED = ["https://app.example.com", "http://localhost:3000", "https://*.example.org"]


@pytest.fixture(scope="module")
def origin_router(module_router_factory):
    return module_router_factory(ws_opts={"allowed_origins": ALLOWED})


def upgrade_with_origin(router, origin):
    req = upgrade_request(router.host, router.ws_port, "/ws", ["wamp.2.json"])
    if origin is not None:
        req = req[:-2] + f"Origin: {origin}\r\n\r\n".encode()
    return http_exchange(router.host, router.ws_port, req)


@pytest.mark.parametrize("origin", ["https://app.example.com", "https://App.Example.COM:443",
                                    "http://localhost:3000", "https://eu.example.org", None])
def test_allowed_or_absent_origin_upgrades(origin_router, origin):
    status, _, body = upgrade_with_origin(origin_router, origin)
    assert status == 101, (status, body)


@pytest.mark.parametrize("origin", ["https://evil.example.net", "http://app.example.com",
                                    "http://localhost:3001", "https://example.org", "null"])
def test_other_origins_get_403(origin_router, origin):
    status, headers, body = upgrade_with_origin(origin_router, origin)
    assert status == 403, (status, body)
    assert f'origin not allowed: "{origin}"'.encode() in body, body
    assert headers.get("content-type", "").startswith("text/plain"), headers
    assert origin_router.wait_log(r"origin not in allowed_origins.*" + origin.replace(".", r"\.")), \
        origin_router.log_tail()


async def autobahn_join(router, origin):
    """An Autobahn|Python WebSocket session that sends `origin` like a browser."""
    loop = asyncio.get_running_loop()
    session = TestSession(ComponentConfig("realm1", {}))
    factory = WampWebSocketClientFactory(lambda: session, url=router.ws_url, serializers=[JsonSerializer()],
                                         origin=origin)
    factory.setProtocolOptions(openHandshakeTimeout=T, closeHandshakeTimeout=1.0)
    factory.loop = loop
    transport, proto = await asyncio.wait_for(loop.create_connection(factory, router.host, router.ws_port), T)
    # Either the session joins or the protocol closes (a refused upgrade).
    await asyncio.wait([session.joined, proto.is_closed], timeout=T, return_when=asyncio.FIRST_COMPLETED)
    if session.joined.done() and session.joined.exception() is None:
        return session
    transport.abort()
    raise ConnectionError(f"no session with Origin {origin}")


def test_autobahn_client_with_allowed_and_refused_origin(origin_router):
    async def main():
        s = await autobahn_join(origin_router, "https://app.example.com")
        await close_all(s)
        with pytest.raises(ConnectionError):
            await autobahn_join(origin_router, "https://evil.example.net")

    run(main())


def test_without_allowed_origins_every_origin_may_connect(router):
    status, _, body = upgrade_with_origin(router, "https://evil.example.net")
    assert status == 101, (status, body)
