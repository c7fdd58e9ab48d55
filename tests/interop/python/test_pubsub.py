"""Publish/subscribe with Autobahn|Python over every transport and serializer."""

import asyncio
import uuid

import pytest
from autobahn.wamp.types import PublishOptions

from wamplib import T, close_all, connect, run

# (transport, serializer); RawSocket over TCP and over the Unix socket included
COMBOS = [
    ("ws", "json"), ("ws", "msgpack"), ("ws", "cbor"),
    ("rs", "json"), ("rs", "msgpack"), ("rs", "cbor"),
    ("unix", "json"), ("unix", "cbor"),
]
IDS = [f"{t}-{s}" for t, s in COMBOS]

BLOB = bytes(range(256)) + b"\x00\xff" * 16
ARGS = [1, "two", [3, {"four": 4.5, "neg": -7, "big": 2 ** 53 - 1}], None, True, {"nested": {"deep": ["x", "y"]}},
        "unicode \u2713 \u00e9\u00e8", BLOB]
KWARGS = {"a": 1, "b": [1, 2, {"c": "d"}], "e": {"f": {"g": False}}, "bin": b"\x00\x01\x02binary\xfe\xff", "empty": {}}


def topic():
    return "com.example.interop.t" + uuid.uuid4().hex[:12]


def on_event_into(fut):
    def handler(*args, **kwargs):
        if not fut.done():
            fut.set_result((list(args), kwargs))
    return handler


def assert_payload(args, kwargs):
    assert args == ARGS, f"args mismatch:\n got  {args!r}\n want {ARGS!r}"
    assert kwargs == KWARGS, f"kwargs mismatch:\n got  {kwargs!r}\n want {KWARGS!r}"
    assert isinstance(args[-1], bytes) and isinstance(kwargs["bin"], bytes), "binary did not round-trip as bytes"


@pytest.mark.parametrize("transport,ser", COMBOS, ids=IDS)
def test_pubsub_args_kwargs(pubsub_nodes, transport, ser):
    async def main():
        loop = asyncio.get_running_loop()
        n0, n1, _ = pubsub_nodes
        sub = await connect(n0, transport, ser)
        pub = await connect(n1, transport, ser)
        try:
            t = topic()
            got = loop.create_future()
            await asyncio.wait_for(sub.subscribe(on_event_into(got), t), T)
            pubn = await asyncio.wait_for(
                pub.publish(t, *ARGS, options=PublishOptions(acknowledge=True), **KWARGS), T)
            assert isinstance(pubn.id, int) and 1 <= pubn.id <= 2 ** 53, f"bad publication id {pubn.id!r}"
            args, kwargs = await asyncio.wait_for(got, T)
            assert_payload(args, kwargs)
        finally:
            await close_all(sub, pub)

    run(main())


@pytest.mark.parametrize("pub_ser", ["json", "msgpack", "cbor"])
def test_pubsub_cross_serializer(pubsub_nodes, pub_ser):
    """Publisher with one serializer, subscribers with all three (bytes included:
    JSON carries them as "\\u0000"+base64)."""

    async def main():
        loop = asyncio.get_running_loop()
        subs, futs = {}, {}
        t = topic()
        pub = None
        try:
            for i, ser in enumerate(["json", "msgpack", "cbor"]):
                transport = ["ws", "rs", "unix"][i]
                subs[ser] = await connect(pubsub_nodes[i], transport, ser)
                futs[ser] = loop.create_future()
                await asyncio.wait_for(subs[ser].subscribe(on_event_into(futs[ser]), t), T)
            pub = await connect(pubsub_nodes[1], "ws", pub_ser)
            await asyncio.wait_for(pub.publish(t, *ARGS, options=PublishOptions(acknowledge=True), **KWARGS), T)
            for ser, fut in futs.items():
                try:
                    args, kwargs = await asyncio.wait_for(fut, T)
                except asyncio.TimeoutError:
                    raise AssertionError(f"{ser} subscriber got no event from {pub_ser} publisher") from None
                assert_payload(args, kwargs)
        finally:
            await close_all(pub, *subs.values())

    run(main())


def test_acknowledged_publish_without_subscribers(router):
    async def main():
        pub = await connect(router, "ws", "json")
        try:
            ids = set()
            for _ in range(3):
                p = await asyncio.wait_for(pub.publish(topic(), options=PublishOptions(acknowledge=True)), T)
                assert isinstance(p.id, int) and 1 <= p.id <= 2 ** 53, f"bad publication id {p.id!r}"
                ids.add(p.id)
            assert len(ids) == 3, f"publication ids not unique: {ids}"
        finally:
            await pub.close()

    run(main())


def test_publisher_exclusion(pubsub_nodes):
    """Default: a publisher subscribed to its own topic does not get its event;
    exclude_me=False delivers it."""

    async def main():
        loop = asyncio.get_running_loop()
        me = await connect(pubsub_nodes[0], "ws", "json")
        other = await connect(pubsub_nodes[1], "rs", "msgpack")
        try:
            t = topic()
            mine, others = [], []
            other_got = asyncio.Event()

            def on_mine(*args):
                mine.append(args)

            def on_other(*args):
                others.append(args)
                other_got.set()

            await asyncio.wait_for(me.subscribe(on_mine, t), T)
            await asyncio.wait_for(other.subscribe(on_other, t), T)

            # 1) default publish: `other` receives, the publisher does not
            await asyncio.wait_for(me.publish(t, "default", options=PublishOptions(acknowledge=True)), T)
            await asyncio.wait_for(other_got.wait(), T)
            await asyncio.sleep(0.5)  # give a (wrong) self-delivery time to arrive
            assert others == [("default",)]
            assert mine == [], f"publisher received its own event despite default publisher exclusion: {mine}"

            # 2) exclude_me=False: both receive
            other_got.clear()
            await asyncio.wait_for(
                me.publish(t, "include", options=PublishOptions(acknowledge=True, exclude_me=False)), T)
            await asyncio.wait_for(other_got.wait(), T)
            deadline = loop.time() + T
            while not mine and loop.time() < deadline:
                await asyncio.sleep(0.02)
            assert mine == [("include",)], f"publisher did not receive its event with exclude_me=False: {mine}"
            assert others == [("default",), ("include",)]
        finally:
            await close_all(me, other)

    run(main())


def test_same_topic_same_subscription_id(router):
    async def main():
        a = await connect(router, "ws", "json")
        b = await connect(router, "rs", "cbor")
        try:
            t = topic()
            sa = await asyncio.wait_for(a.subscribe(lambda *x: None, t), T)
            sb = await asyncio.wait_for(b.subscribe(lambda *x: None, t), T)
            assert isinstance(sa.id, int) and 1 <= sa.id <= 2 ** 53
            assert sa.id == sb.id, f"two sessions on the same topic got different subscription ids {sa.id} != {sb.id}"
            sc = await asyncio.wait_for(b.subscribe(lambda *x: None, topic()), T)
            assert sc.id != sa.id, "different topics must have different subscription ids"
        finally:
            await close_all(a, b)

    run(main())


def test_unsubscribe_stops_delivery(pubsub_nodes):
    async def main():
        sub = await connect(pubsub_nodes[2], "ws", "cbor")
        pub = await connect(pubsub_nodes[0], "ws", "json")
        try:
            t = topic()
            got = []
            s = await asyncio.wait_for(sub.subscribe(lambda *a: got.append(a), t), T)
            await asyncio.wait_for(pub.publish(t, 1, options=PublishOptions(acknowledge=True)), T)
            for _ in range(100):
                if got:
                    break
                await asyncio.sleep(0.02)
            assert got == [(1,)]
            await asyncio.wait_for(s.unsubscribe(), T)
            await asyncio.wait_for(pub.publish(t, 2, options=PublishOptions(acknowledge=True)), T)
            await asyncio.sleep(0.3)
            assert got == [(1,)], f"event delivered after unsubscribe: {got}"
        finally:
            await close_all(sub, pub)

    run(main())


def test_fanout_preserves_publisher_order(pubsub_nodes):
    """Events from one publisher reach every subscriber (any transport /
    serializer) exactly once and in publication order."""

    async def main():
        loop = asyncio.get_running_loop()
        t = topic()
        n = 200
        subs, got, done = [], {}, {}
        pub = None
        try:
            for i, (transport, ser) in enumerate(COMBOS[:6]):
                s = await connect(pubsub_nodes[i % 3], transport, ser)
                key = f"{transport}-{ser}"
                got[key], done[key] = [], loop.create_future()

                def handler(i, key=key):
                    got[key].append(i)
                    if len(got[key]) == n and not done[key].done():
                        done[key].set_result(True)

                await asyncio.wait_for(s.subscribe(handler, t), T)
                subs.append(s)
            pub = await connect(pubsub_nodes[1], "ws", "msgpack")
            for i in range(n - 1):
                pub.publish(t, i)  # fire and forget ...
            await asyncio.wait_for(pub.publish(t, n - 1, options=PublishOptions(acknowledge=True)), T)
            try:
                await asyncio.wait_for(asyncio.gather(*done.values()), 10)
            except asyncio.TimeoutError:
                raise AssertionError({k: len(v) for k, v in got.items()}) from None
            await asyncio.sleep(0.2)
            for key, seq in got.items():
                assert seq == list(range(n)), f"{key}: events lost, duplicated or reordered"
        finally:
            await close_all(pub, *subs)

    run(main())
