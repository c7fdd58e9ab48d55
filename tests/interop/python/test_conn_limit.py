"""`[limits] max_connections_per_address`: open TCP connections per remote
IP, counted across the WebSocket and RawSocket listeners. Over the limit a
RawSocket connection is closed at once and a WebSocket upgrade gets HTTP 429;
other addresses and Unix sockets are not affected; a slot is free again when
a connection closes."""

from __future__ import annotations

import asyncio

from wamplib import Closed, RawRs, T, close_all, connect, http_exchange, run, upgrade_request

LIMIT = 3


async def try_rawsocket(router, local_addr=None):
    """A RawSocket connection after a successful handshake, or None if the
    router closed it (refused)."""
    c = await RawRs.open(router, local_addr=local_addr)
    try:
        await c.handshake(timeout=T)
        return c
    except Closed:
        await c.close()
        return None


async def refused_rawsocket(router) -> bool:
    c = await try_rawsocket(router)
    if c is None:
        return True
    await c.close()
    return False


def test_limit_per_address(router_factory):
    r = router_factory(limits={"max_connections_per_address": LIMIT})

    async def main():
        await asyncio.sleep(0.2)  # the readiness probes have gone
        sessions = [await connect(r, "ws"), await connect(r, "rs"), await connect(r, "rs", "msgpack")]
        assert await refused_rawsocket(r), "connection over the limit accepted"
        status, _, body = http_exchange(r.host, r.ws_port, upgrade_request(r.host, r.ws_port, "/ws", ["wamp.2.json"]))
        assert status == 429, (status, body)
        assert f"at most {LIMIT} per address".encode() in body, body

        # Another address and the Unix socket are not affected.
        other = await RawRs.connect(r, local_addr=("127.0.0.2", 0))
        unix = await connect(r, "unix")

        # A session leaves: its slot is free again.
        await close_all(sessions.pop())
        for _ in range(50):
            again = await try_rawsocket(r)
            if again is not None:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("slot not freed after a session closed")
        await again.hello()
        assert await refused_rawsocket(r)
        for c in (other, again):
            await c.close()
        await close_all(unix, *sessions)

    run(main())
    lines = r.wait_log(r"connection refused: 127\.0\.0\.1")
    # Rate-limited: the refusals above fall within one log interval.
    assert len(lines) == 1 and "max_connections_per_address" in lines[0], lines
