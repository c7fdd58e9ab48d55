"""Resource limits: max_message_size and the slow-consumer policy."""

import asyncio
import re
import time
import uuid

import pytest
from autobahn.wamp.types import PublishOptions

from wamplib import (ABORT, PUBLISH, PUBLISHED, SUBSCRIBE, SUBSCRIBED, BlockingRs, RawRs, RawWs, T,
                     close_all, connect, run)

SMALL = 4096  # 2**12 -> RawSocket LENGTH 3


@pytest.fixture(scope="module")
def small_router(module_router_factory):
    return module_router_factory(limits={"max_message_size": SMALL})


async def healthy_pair(router):
    callee = await connect(router, "ws", "json")
    caller = await connect(router, "rs", "cbor")
    proc = "com.example.health." + uuid.uuid4().hex[:8]
    await asyncio.wait_for(callee.register(lambda x: x * 2, proc), T)
    assert await asyncio.wait_for(caller.call(proc, 21), T) == 42

    async def check():
        assert callee.is_attached() and caller.is_attached(), "a healthy session was disconnected"
        assert await asyncio.wait_for(caller.call(proc, 50), T) == 100

    return (callee, caller), check


def publish_msg(rid, size):
    return [PUBLISH, rid, {"acknowledge": True}, "com.example.big", ["x" * size]]


def test_oversized_websocket_message_closes_with_1009(small_router):
    async def main():
        sessions, check = await healthy_pair(small_router)
        c = await RawWs.open(small_router)
        try:
            await c.hello()
            # control: a message below the limit is fine
            r = await c.request(publish_msg(c.req(), SMALL - 1000))
            assert r[0] == PUBLISHED, f"publish below max_message_size rejected: {str(r)[:300]}"
            await c.send(publish_msg(c.req(), 2 * SMALL))
            code, msgs = await c.expect_closed(T)
            assert code == 1009, f"expected WebSocket close code 1009 (message too big), got {code} ({msgs!r})"
            await check()
        finally:
            await c.close()
            await close_all(*sessions)

    run(main())


@pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix"])
def test_oversized_rawsocket_message_aborts(small_router, unix):
    async def main():
        sessions, check = await healthy_pair(small_router)
        c = await RawRs.open(small_router, unix=unix)
        try:
            reply = await c.handshake(serializer=1, length=15)
            assert reply == bytes([0x7F, (3 << 4) | 1, 0, 0]), \
                f"handshake LENGTH should reflect max_message_size={SMALL} (LENGTH 3): {reply.hex()}"
            await c.hello()
            r = await c.request(publish_msg(c.req(), SMALL - 1000))
            assert r[0] == PUBLISHED, f"publish below max_message_size rejected: {str(r)[:300]}"
            await c.send(publish_msg(c.req(), 2 * SMALL))
            _, msgs = await c.expect_closed(T)
            aborts = [m for m in msgs if isinstance(m, list) and m and m[0] == ABORT]
            assert aborts, f"no ABORT before close, got {msgs!r}"
            assert aborts[0][2] == "wamp.error.protocol_violation", aborts[0]
            message = aborts[0][1].get("message", "")
            assert isinstance(message, str) and (str(SMALL) in message or "limit" in message.lower()), \
                f"ABORT message should mention the limit ({SMALL}): {message!r}"
            await check()
        finally:
            await c.close()
            await close_all(*sessions)

    run(main())


def test_oversized_autobahn_session_other_sessions_unaffected(small_router):
    """An Autobahn|Python WebSocket client that publishes a too-big message is
    disconnected; its peers are not."""

    async def main():
        sessions, check = await healthy_pair(small_router)
        big = await connect(small_router, "ws", "msgpack")
        try:
            try:
                await asyncio.wait_for(big.publish("com.example.big", b"\x01" * (4 * SMALL),
                                                   options=PublishOptions(acknowledge=True)), T)
            except Exception:
                pass
            else:
                raise AssertionError("oversized publish was acknowledged")
            await asyncio.wait_for(asyncio.shield(big.disconnected), T)
            await check()
        finally:
            await close_all(big, *sessions)

    run(main())


# ------------------------------------------------------------ slow consumer ---

N_EVENTS = 2000
EVENT_SIZE = 32 * 1024
LAG = 8  # max events the healthy subscriber may be behind the publisher


def test_slow_consumer_is_disconnected(router_factory):
    r = router_factory(limits={"outbound_queue": 16})
    topic = "com.example.slow." + uuid.uuid4().hex[:8]

    # the slow consumer: subscribes, then stops reading (tiny receive buffer)
    slow = BlockingRs(r, rcvbuf=4096)
    slow.hello()
    slow_session = slow.session_id
    slow_addr = "%s:%d" % slow.sock.getsockname()[:2]
    sub = slow.request([SUBSCRIBE, 1, {}, topic])
    assert sub[0] == SUBSCRIBED, sub

    payload = bytes(range(256)) * (EVENT_SIZE // 256)
    stats = {}

    async def main():
        loop = asyncio.get_running_loop()
        healthy = await connect(r, "rs", "msgpack")
        pub = await connect(r, "rs", "msgpack")
        try:
            received = []
            progress = asyncio.Event()
            done = loop.create_future()

            def on_event(seq, data):
                received.append(seq)
                progress.set()
                if data != payload and not done.done():
                    done.set_exception(AssertionError(f"event {seq} payload corrupted"))
                if len(received) == N_EVENTS and not done.done():
                    done.set_result(True)

            await asyncio.wait_for(healthy.subscribe(on_event, topic), T)
            t0 = time.monotonic()
            # Acknowledged publishes, paced by the healthy subscriber: it is never
            # more than LAG events behind, so it stays well inside outbound_queue
            # however slow this machine is, while the slow consumer falls behind
            # by up to N_EVENTS.
            for i in range(N_EVENTS):
                while len(received) < i - LAG:
                    if healthy.disconnected.done():
                        raise AssertionError(f"healthy subscriber was disconnected after {len(received)} events; "
                                             f"router log: {r.wait_log('slow consumer', 0)}")
                    progress.clear()
                    try:
                        await asyncio.wait_for(progress.wait(), T)
                    except asyncio.TimeoutError:
                        raise AssertionError(f"healthy subscriber stalled at {len(received)} events") from None
                p = await asyncio.wait_for(pub.publish(topic, i, payload, options=PublishOptions(acknowledge=True)), T)
                assert p.id, p
            stats["publish_s"] = time.monotonic() - t0
            try:
                await asyncio.wait_for(asyncio.shield(done), 30)
            except asyncio.TimeoutError:
                raise AssertionError(f"healthy subscriber got only {len(received)}/{N_EVENTS} events") from None
            assert received == list(range(N_EVENTS)), "healthy subscriber got events out of order / duplicated"
            assert healthy.is_attached(), "healthy subscriber was disconnected"
            # the publisher is not disconnected
            assert pub.is_attached(), "publisher was disconnected"
            p = await asyncio.wait_for(pub.publish(topic + ".after", options=PublishOptions(acknowledge=True)), T)
            assert p.id
        finally:
            await close_all(healthy, pub)

    try:
        run(main(), timeout=90)
        # the slow consumer was disconnected: reading again reaches EOF / reset
        closed, nbytes = slow.read_until_eof(timeout=10)
        assert closed, f"slow consumer still connected after {N_EVENTS} events (read {nbytes} bytes, no EOF)"
        assert nbytes < N_EVENTS * EVENT_SIZE, "slow consumer received everything; it was never slow?"
    finally:
        slow.close()
    lines = r.wait_log(r"slow consumer", timeout=3)
    assert lines, "router log has no 'slow consumer' line"
    # the line must identify the slow client: by session id or by its peer address
    ids = [rf"\b{slow_session}\b", re.escape(slow_addr)]
    assert any(re.search(p, l) for p in ids for l in lines), \
        f"no 'slow consumer' log line names the slow client (session {slow_session} / peer {slow_addr}): {lines[:5]}"
