"""handshake_timeout and WebSocket / RawSocket keepalive (ping_interval, ping_timeout)."""

import asyncio
import time
import uuid

import pytest
from autobahn.wamp.exception import ApplicationError

from wamplib import (REGISTER, REGISTERED, BlockingRs, BlockingWs, RawRs, RawWs, T, close_all, connect, run)

# ------------------------------------------------------- handshake timeout ---


@pytest.fixture(scope="module")
def hs_router(module_router_factory):
    return module_router_factory(limits={"handshake_timeout": "1s"})


def assert_timely(elapsed, what):
    assert elapsed <= 3.0, f"{what}: closed only after {elapsed:.2f}s (handshake_timeout = 1s)"
    assert elapsed >= 0.5, f"{what}: closed after {elapsed:.2f}s, before handshake_timeout = 1s could expire"


@pytest.mark.parametrize("stage", ["tcp-idle", "after-rawsocket-handshake"])
@pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix"])
def test_rawsocket_handshake_timeout(hs_router, stage, unix):
    async def main():
        t0 = time.monotonic()
        c = await RawRs.open(hs_router, unix=unix)
        try:
            if stage == "after-rawsocket-handshake":
                reply = await c.handshake(serializer=1, length=15)
                assert reply[0] == 0x7F and reply[1] & 0x0F == 1, reply.hex()
            closed, _ = await c.read_until_eof(timeout=5)
            assert closed, f"{stage}: router did not close an idle connection within 5 s"
            assert_timely(time.monotonic() - t0, stage)
        finally:
            await c.close()

    run(main())


@pytest.mark.parametrize("sent", [b"", b"GET /ws HTTP/1.1\r\nHost: x\r\n"], ids=["nothing", "partial-http"])
def test_websocket_upgrade_timeout(hs_router, sent):
    """A TCP connection to the WebSocket port that never completes the HTTP
    upgrade is closed after handshake_timeout."""

    async def main():
        t0 = time.monotonic()
        reader, writer = await asyncio.open_connection(hs_router.host, hs_router.ws_port)
        try:
            if sent:
                writer.write(sent)
                await writer.drain()
            deadline = t0 + 5
            while True:
                left = deadline - time.monotonic()
                assert left > 0, "router did not close a stalled WebSocket upgrade within 5 s"
                try:
                    chunk = await asyncio.wait_for(reader.read(4096), left)
                except ConnectionResetError:
                    break
                except asyncio.TimeoutError:
                    continue
                if not chunk:
                    break
            assert_timely(time.monotonic() - t0, "stalled websocket upgrade")
        finally:
            writer.transport.abort()

    run(main())


def test_websocket_without_hello_times_out(hs_router):
    async def main():
        t0 = time.monotonic()
        c = await RawWs.open(hs_router)
        try:
            code, msgs = await c.expect_closed(5)
            assert_timely(time.monotonic() - t0, "websocket without HELLO")
        finally:
            await c.close()

    run(main())


def test_joined_sessions_survive_handshake_timeout(hs_router):
    async def main():
        a = await connect(hs_router, "ws", "json")
        b = await connect(hs_router, "rs", "cbor")
        try:
            proc = "com.example.hs." + uuid.uuid4().hex[:8]
            await asyncio.wait_for(a.register(lambda: "alive", proc), T)
            await asyncio.sleep(2.5)
            assert a.is_attached() and b.is_attached(), "a joined session was dropped by the handshake timeout"
            assert await asyncio.wait_for(b.call(proc), T) == "alive"
        finally:
            await close_all(a, b)

    run(main())


# --------------------------------------------------------------- keepalive ---


@pytest.fixture(scope="module")
def ping_router(module_router_factory):
    return module_router_factory(
        limits={"ping_interval": "1s", "ping_timeout": "1s", "rawsocket_ping_interval": "1s"}
    )


async def wait_registration_freed(router, proc, deadline_s):
    """Register `proc` from a fresh Autobahn session; must fail at first (the
    unresponsive client still holds it), then succeed once the router dropped
    the client. Returns seconds until success."""
    s = await connect(router, "ws", "json")
    try:
        with pytest.raises(ApplicationError) as ei:
            await asyncio.wait_for(s.register(lambda: "new", proc), T)
        assert ei.value.error == "wamp.error.procedure_already_exists", ei.value
        t0 = time.monotonic()
        while True:
            try:
                await asyncio.wait_for(s.register(lambda: "new", proc), T)
                return time.monotonic() - t0
            except ApplicationError as e:
                if e.error != "wamp.error.procedure_already_exists":
                    raise
                if time.monotonic() - t0 > deadline_s:
                    raise AssertionError(
                        f"unresponsive client still registered {deadline_s}s later: not dropped by keepalive") from None
                await asyncio.sleep(0.2)
    finally:
        await s.close()


@pytest.mark.parametrize("kind", ["ws", "rs"])
def test_keepalive_drops_unresponsive_client(ping_router, kind):
    proc = f"com.example.keepalive.{kind}." + uuid.uuid4().hex[:8]
    c = BlockingWs(ping_router) if kind == "ws" else BlockingRs(ping_router)
    try:
        c.hello()
        r = c.request([REGISTER, 1, {}, proc])
        assert r[0] == REGISTERED, r
        # from now on the client never reads, so it never answers a ping
        took = run(wait_registration_freed(ping_router, proc, deadline_s=8), timeout=20)
        closed, _ = c.read_until_eof(timeout=3)
        assert closed, f"registration was freed after {took:.1f}s but the socket was not closed"
    finally:
        c.close()


def test_keepalive_keeps_responsive_clients(ping_router):
    """Clients that answer pings (Autobahn WebSocket, raw RawSocket with PONG)
    stay connected across several ping intervals; the router does send RawSocket PINGs."""

    async def main():
        a = await connect(ping_router, "ws", "json")
        b = await connect(ping_router, "ws", "msgpack")
        rs = await RawRs.connect(ping_router)
        try:
            await rs.hello()
            proc = "com.example.keepalive.ok." + uuid.uuid4().hex[:8]
            await asyncio.wait_for(a.register(lambda: "alive", proc), T)
            deadline = time.monotonic() + 4.0
            while time.monotonic() < deadline:  # keep the raw client reading (answers PINGs)
                try:
                    await rs.recv(0.2)
                except asyncio.TimeoutError:
                    pass
            assert a.is_attached() and b.is_attached(), "a responsive WebSocket client was dropped"
            assert await asyncio.wait_for(b.call(proc), T) == "alive"
            assert rs.pings >= 1, "router sent no RawSocket PING within 4 s (ping_interval = 1s)"
            r = await rs.request([REGISTER, rs.req(), {}, proc + ".rs"])
            assert r[0] == REGISTERED, f"responsive rawsocket client was dropped: {r!r}"
        finally:
            await rs.close()
            await close_all(a, b)

    run(main())


@pytest.fixture(scope="module")
def default_rs_ping_router(module_router_factory):
    # WebSocket keepalive at 1 s, RawSocket PINGs left at their default (off).
    return module_router_factory(limits={"ping_interval": "1s", "ping_timeout": "1s"})


def test_autobahn_rawsocket_survives_default_keepalive(default_rs_ping_router):
    """Autobahn|Python's asyncio RawSocket client cannot answer a RawSocket PING
    (it raises NotImplementedError and drops the connection), so by default the
    router must not send any: such a session stays up across many ping intervals."""

    async def main():
        caller = await connect(default_rs_ping_router, "rs", "msgpack")
        callee = await connect(default_rs_ping_router, "ws", "json")
        try:
            proc = "com.example.keepalive.abrs." + uuid.uuid4().hex[:8]
            await asyncio.wait_for(callee.register(lambda: "still here", proc), T)
            await asyncio.sleep(3.5)
            assert caller.is_attached(), "Autobahn RawSocket session was dropped by keepalive"
            assert await asyncio.wait_for(caller.call(proc), T) == "still here"
        finally:
            await close_all(caller, callee)

    run(main())
