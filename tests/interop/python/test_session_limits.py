"""Per-session limits (issue 5) with Autobahn|Python and raw JSON clients.

``max_subscriptions_per_session`` / ``max_registrations_per_session``: the
(max+1)-th SUBSCRIBE / REGISTER gets ``switchyard.error.limit_exceeded`` with a
message naming the limit; the session keeps working and gets room again when it
drops one. ``max_messages_per_second``: a session over its rate is slowed down
(the router stops reading from it), not disconnected, and other sessions do not
notice.
"""

import asyncio
import time
import uuid

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, SubscribeOptions

from wamplib import LOOSE_REALM, Peer, T, ack, call, close_all, close_peers, connect, run, subscribe

TAG = uuid.uuid4().hex[:12]
LIMIT_EXCEEDED = "switchyard.error.limit_exceeded"
MAX_SUBS = 3
MAX_REGS = 2
RATE = 50


@pytest.fixture(scope="module")
def limits_router(module_router_factory):
    """realm1: at most 3 subscriptions and 2 registrations per session;
    rated: 50 messages per second per session."""
    return module_router_factory(realms=[
        dict(LOOSE_REALM, max_subscriptions_per_session=MAX_SUBS, max_registrations_per_session=MAX_REGS),
        dict(LOOSE_REALM, name="rated", max_messages_per_second=RATE),
    ])


def topic(tag):
    return f"com.example.limits.{tag}.{TAG}"


async def over_limit(coro, what, limit):
    try:
        r = await asyncio.wait_for(coro, T)
    except ApplicationError as e:
        assert e.error == LIMIT_EXCEEDED, f"expected {LIMIT_EXCEEDED}, got {e.error} {e.args}"
        msg = e.args[0] if e.args else ""
        assert isinstance(msg, str) and str(limit) in msg and what in msg, \
            f"the message should name the limit ({limit} {what}): {msg!r}"
        return e
    raise AssertionError(f"must be refused over the {what} limit, got {r!r}")


def test_subscription_limit(limits_router):
    async def main():
        s, other = await connect(limits_router), await connect(limits_router, "rs", "msgpack")
        try:
            inboxes, subs = [], []
            for i in range(MAX_SUBS):
                inbox, sub = await subscribe(s, topic(f"t{i}"))
                inboxes.append(inbox)
                subs.append(sub)
            await over_limit(s.subscribe(lambda *a: None, topic("t-extra")), "subscriptions", MAX_SUBS)
            # pattern subscriptions count alike
            await over_limit(s.subscribe(lambda *a: None, "com.example.limits.", options=SubscribeOptions(
                match="prefix")), "subscriptions", MAX_SUBS)
            # the session keeps working
            await ack(other, topic("t0"), "still here")
            await inboxes[0].wait_for(lambda e: e.args == ["still here"])
            await asyncio.wait_for(s.register(lambda: "pong", topic("ping")), T)
            assert await call(other, topic("ping")) == "pong"
            # the limit is per session
            for i in range(MAX_SUBS):
                await subscribe(other, topic(f"t{i}"))
            # dropping one makes room
            await asyncio.wait_for(subs[0].unsubscribe(), T)
            inbox, _ = await subscribe(s, topic("t-extra"))
            await ack(other, topic("t-extra"), 1)
            await inbox.wait_for(lambda e: e.args == [1])
            assert s.is_attached() and other.is_attached()
        finally:
            await close_all(s, other)

    run(main())
    assert limits_router.wait_log(r"subscription limit", timeout=2), "the refusal should be logged"


def test_registration_limit(limits_router):
    async def main():
        s, caller = await connect(limits_router, "unix", "cbor"), await connect(limits_router)
        try:
            regs = []
            for i in range(MAX_REGS):
                regs.append(await asyncio.wait_for(s.register(lambda i=i: i, topic(f"p{i}")), T))
            await over_limit(s.register(lambda: -1, topic("p-extra")), "registrations", MAX_REGS)
            assert [await call(caller, topic(f"p{i}")) for i in range(MAX_REGS)] == list(range(MAX_REGS))
            # the limit is per session
            await asyncio.wait_for(caller.register(lambda: "c", topic("p-caller")), T)
            await asyncio.wait_for(regs[0].unregister(), T)
            await asyncio.wait_for(s.register(lambda: "extra", topic("p-extra")), T)
            assert await call(caller, topic("p-extra")) == "extra"
            assert s.is_attached()
        finally:
            await close_all(s, caller)

    run(main())
    assert limits_router.wait_log(r"registration limit", timeout=2), "the refusal should be logged"


def test_limit_error_on_raw_session(limits_router):
    """The ERROR itself: SUBSCRIBE / REGISTER message codes, request ids, a message arg."""
    async def main():
        p = await Peer.join(limits_router)
        try:
            for i in range(MAX_SUBS):
                await p.subscribe(topic(f"raw{i}"))
            rid = p.req()
            r = await p.request([32, rid, {}, topic("raw-extra")])
            assert r[:5] == [8, 32, rid, {}, LIMIT_EXCEEDED] and isinstance(r[5][0], str), r
            for i in range(MAX_REGS):
                await p.register(topic(f"rawp{i}"))
            rid = p.req()
            r = await p.request([64, rid, {}, topic("rawp-extra")])
            assert r[:5] == [8, 64, rid, {}, LIMIT_EXCEEDED] and isinstance(r[5][0], str), r
        finally:
            await close_peers(p)

    run(main())


def test_message_rate_slows_down(limits_router):
    """200 acknowledged publishes at once from a session limited to 50 messages/s:
    all acknowledged (and delivered), but over >= ~2.5 s, and the session stays;
    another session of the same realm is not slowed meanwhile."""
    n = 200

    async def main():
        heavy = await connect(limits_router, realm="rated")
        light = await connect(limits_router, "rs", "msgpack", realm="rated")
        watcher = await connect(limits_router, realm="rated")
        try:
            t = topic("rate")
            inbox, _ = await subscribe(watcher, t)
            opts = PublishOptions(acknowledge=True)
            t0 = time.monotonic()
            flood = asyncio.ensure_future(asyncio.gather(*(heavy.publish(t, i, options=opts) for i in range(n))))

            # meanwhile: the light session's round trips stay fast
            await asyncio.sleep(0.5)
            lt = topic("light")
            latencies = []
            for i in range(20):
                t1 = time.monotonic()
                await asyncio.wait_for(light.publish(lt, i, options=opts), T)
                latencies.append(time.monotonic() - t1)
            assert not flood.done(), "the flood finished before the light session was measured"
            assert sum(latencies) < 1.0 and max(latencies) < 0.3, \
                f"another session was slowed down: {[round(x, 3) for x in latencies]}"

            pubs = await asyncio.wait_for(flood, 15)
            elapsed = time.monotonic() - t0
            assert len(pubs) == n and all(p.id for p in pubs)
            assert elapsed >= 2.5, f"{n} messages at {RATE}/s took only {elapsed:.2f}s: not slowed down"
            assert elapsed < 8, f"{n} messages at {RATE}/s took {elapsed:.2f}s"
            await inbox.until(lambda args: len(args) >= n, f"{n} events", timeout=T)
            assert inbox.args == [[i] for i in range(n)], "events lost or out of order"
            assert heavy.is_attached(), "a session over its rate must be slowed down, not disconnected"
            await ack(heavy, t, "after")
        finally:
            await close_all(heavy, light, watcher)

    run(main(), timeout=40)
    assert limits_router.wait_log(r"slowed down", timeout=2), "the slow-down should be logged"
