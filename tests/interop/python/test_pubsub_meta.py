"""Subscription meta API and testament meta API (issue 4) with Autobahn|Python.

Procedures ``wamp.subscription.*`` (list, lookup, match, get,
list_subscribers, count_subscribers), the meta events
``wamp.subscription.on_create / on_subscribe / on_unsubscribe / on_delete``,
and ``wamp.session.add_testament`` / ``flush_testaments``. Event history
(``wamp.subscription.get_events``) is in test_pubsub_advanced.py.

"Not published" is checked with a marker: a later publication that must
arrive; what did not arrive before it was not published.
"""

import asyncio
import time

import pytest
from autobahn.wamp.types import SubscribeOptions

from wamplib import (EVENT, SUB_META_EVENTS, SUBSCRIBE, SUBSCRIBED, UNKNOWN_ID, MetaMonitor, RawWs, T, authid, call,
                     check_created, close_all, connect, marker, meta_error, run, sid, subscribe, unique_uri,
                     wait_until)


def topic(tag="t"):
    return unique_uri("com.example.psmeta", tag)


def check_subscription_details(d, sub_id, uri, match):
    assert isinstance(d, dict) and set(d) == {"id", "created", "uri", "match"}, d
    assert (d["id"], d["uri"], d["match"]) == (sub_id, uri, match), d
    check_created(d)


# ==========================================================================
# subscription meta API: procedures
# ==========================================================================

def test_subscription_meta_procedures(router):
    async def main():
        a, b, c = await connect(router, "ws", "json"), await connect(router, "rs", "msgpack"), \
            await connect(router, "unix", "cbor")
        try:
            root = topic("proc")
            exact = root + ".x.leaf"
            pfx = root + ".x"
            wc = root + "..leaf"
            _, sa = await subscribe(a, exact)
            _, sb = await subscribe(b, exact)
            assert sa.id == sb.id
            _, sp = await subscribe(a, pfx, match="prefix")
            _, sw = await subscribe(b, wc, match="wildcard")
            ids = {"exact": sa.id, "prefix": sp.id, "wildcard": sw.id}
            assert len(set(ids.values())) == 3, ids

            lists = await call(c, "wamp.subscription.list")
            assert isinstance(lists, dict) and set(lists) == {"exact", "prefix", "wildcard"}, lists
            for key, sub_id in ids.items():
                for k, in_list in lists.items():
                    assert (sub_id in in_list) == (k == key), f"subscription {sub_id} ({key}) in {k}: {lists}"

            assert await call(c, "wamp.subscription.lookup", exact) == sa.id
            assert await call(c, "wamp.subscription.lookup", exact, {"match": "exact"}) == sa.id
            assert await call(c, "wamp.subscription.lookup", exact, {"match": "prefix"}) is None
            assert await call(c, "wamp.subscription.lookup", pfx) is None
            assert await call(c, "wamp.subscription.lookup", pfx, {"match": "prefix"}) == sp.id
            assert await call(c, "wamp.subscription.lookup", wc, {"match": "wildcard"}) == sw.id
            assert await call(c, "wamp.subscription.lookup", wc) is None
            assert await call(c, "wamp.subscription.lookup", topic("none")) is None

            m = await call(c, "wamp.subscription.match", exact)
            assert isinstance(m, list) and sorted(m) == sorted(ids.values()), \
                f"match({exact!r}) must list every matching subscription {ids}: {m!r}"
            assert await call(c, "wamp.subscription.match", pfx + "-more") == [sp.id]
            assert sorted(await call(c, "wamp.subscription.match", pfx + "-z.leaf")) == sorted([sp.id, sw.id])
            assert await call(c, "wamp.subscription.match", root + ".y.leaf") == [sw.id]
            assert await call(c, "wamp.subscription.match", topic("none")) is None

            check_subscription_details(await call(c, "wamp.subscription.get", sa.id), sa.id, exact, "exact")
            check_subscription_details(await call(c, "wamp.subscription.get", sp.id), sp.id, pfx, "prefix")
            check_subscription_details(await call(c, "wamp.subscription.get", sw.id), sw.id, wc, "wildcard")

            assert sorted(await call(c, "wamp.subscription.list_subscribers", sa.id)) == sorted([sid(a), sid(b)])
            assert await call(c, "wamp.subscription.count_subscribers", sa.id) == 2
            assert await call(c, "wamp.subscription.list_subscribers", sp.id) == [sid(a)]
            assert await call(c, "wamp.subscription.count_subscribers", sw.id) == 1

            for p in ["wamp.subscription.get", "wamp.subscription.list_subscribers",
                      "wamp.subscription.count_subscribers"]:
                err = await meta_error(c, p, UNKNOWN_ID)
                assert err.error == "wamp.error.no_such_subscription", (p, err.error, err.args)

            # b leaves: one subscriber left; a unsubscribes: the subscription is gone
            await b.close()
            deadline = time.monotonic() + T
            while await call(c, "wamp.subscription.count_subscribers", sa.id) != 1:
                assert time.monotonic() < deadline, "count_subscribers still 2 after a subscriber left"
                await asyncio.sleep(0.02)
            assert await call(c, "wamp.subscription.list_subscribers", sa.id) == [sid(a)]
            # b's wildcard subscription went with it
            assert (await meta_error(c, "wamp.subscription.get", sw.id)).error == "wamp.error.no_such_subscription"
            await asyncio.wait_for(sa.unsubscribe(), T)
            assert (await meta_error(c, "wamp.subscription.get", sa.id)).error == "wamp.error.no_such_subscription"
            assert await call(c, "wamp.subscription.lookup", exact) is None
            assert await call(c, "wamp.subscription.match", exact) == [sp.id]
            lists = await call(c, "wamp.subscription.list")
            assert sa.id not in lists["exact"] and sw.id not in lists["wildcard"] and sp.id in lists["prefix"], lists
        finally:
            await close_all(a, b, c)

    run(main())


# ==========================================================================
# subscription meta API: events
# ==========================================================================

def test_subscribed_comes_before_events_of_the_new_subscription(router):
    """A SUBSCRIBE whose own meta events match the new subscription (a
    subscription to wamp.subscription.on_create or on_subscribe, or a prefix
    covering them): the subscriber learns the subscription id from SUBSCRIBED,
    so no EVENT on that subscription may come before it (Autobahn|Python and
    Autobahn|JS treat such an EVENT as a protocol violation)."""

    async def main():
        raw = await RawWs.open(router)
        ab = None
        try:
            await raw.hello()
            wrong = []
            for uri, opts in [("wamp.subscription.on_create", {}), ("wamp.subscription.on_subscribe", {}),
                              ("wamp.subscription.on_", {"match": "prefix"})]:
                rid = raw.req()
                await raw.send([SUBSCRIBE, rid, opts, uri])
                before = []
                while True:
                    msg = await raw.recv(T)
                    if msg[0] == SUBSCRIBED and msg[1] == rid:
                        break
                    before.append(msg)
                early = [m for m in before if m[0] == EVENT and m[1] == msg[2]]
                if early:
                    wrong.append(f"SUBSCRIBE {uri} {opts}: EVENT(s) on subscription {msg[2]} before its SUBSCRIBED: "
                                 f"{early!r}")
            # Autobahn|Python: subscribing to the subscription meta events must work
            ab = await connect(router, "rs", "msgpack")
            for k in SUB_META_EVENTS:
                try:
                    await asyncio.wait_for(ab.subscribe(lambda *a: None, f"wamp.subscription.{k}"), T)
                except Exception as e:  # noqa: BLE001
                    wrong.append(f"Autobahn|Python subscribe to wamp.subscription.{k} failed: {e!r}")
                    break
            assert not wrong, "\n  ".join(wrong)
            assert ab.is_attached()
        finally:
            await raw.close()
            await close_all(ab)

    run(main())


def test_subscription_meta_events(router):
    async def main():
        mon = await MetaMonitor.start(router)
        a, b, c, d = [await connect(router, tr) for tr in ["ws", "rs", "unix", "rs"]]
        try:
            of = mon.of
            t = topic("ev")
            _, sa = await subscribe(a, t)
            _, sb = await subscribe(b, t)
            await asyncio.wait_for(sb.unsubscribe(), T)
            await asyncio.wait_for(sa.unsubscribe(), T)
            await wait_until(lambda: len(of(sa.id)) >= 6, what="6 subscription meta events")
            await asyncio.sleep(0.1)
            got = of(sa.id)
            assert [k for k, _ in got] == ["on_create", "on_subscribe", "on_subscribe", "on_unsubscribe",
                                           "on_unsubscribe", "on_delete"], got
            assert got[0][1][0] == sid(a), got[0]
            check_subscription_details(got[0][1][1], sa.id, t, "exact")
            assert [args for _, args in got[1:]] == [(sid(a), sa.id), (sid(b), sa.id), (sid(b), sa.id),
                                                    (sid(a), sa.id), (sid(a), sa.id)], got

            # a subscriber that disconnects abruptly: unsubscribe + delete
            _, sc = await subscribe(c, t + ".", match="prefix")
            c.abort_transport()
            await wait_until(lambda: len(of(sc.id)) >= 4, what="4 meta events of a departed subscriber")
            got = of(sc.id)
            assert [k for k, _ in got] == SUB_META_EVENTS, got
            check_subscription_details(got[0][1][1], sc.id, t + ".", "prefix")
            assert [args for _, args in got[1:]] == [(sid(c), sc.id)] * 3, got

            # one that leaves cleanly (GOODBYE)
            _, sd = await subscribe(d, t + "..x", match="wildcard")
            await d.close()
            await wait_until(lambda: len(of(sd.id)) >= 4, what="4 meta events of a subscriber that left")
            got = of(sd.id)
            assert [k for k, _ in got] == SUB_META_EVENTS, got
            check_subscription_details(got[0][1][1], sd.id, t + "..x", "wildcard")
            assert [args for _, args in got[1:]] == [(sid(d), sd.id)] * 3, got
            await asyncio.sleep(0.1)
            assert len(of(sa.id)) == 6 and len(of(sc.id)) == 4 and len(of(sd.id)) == 4, "extra meta events"
        finally:
            await close_all(a, b, c, d)
            await mon.close()

    run(main())


def test_subscription_meta_events_consistent_under_concurrency(router):
    """Many sessions subscribe to and leave shared subscriptions at the same
    time: per subscription, on_create comes first (naming the session of the
    first on_subscribe), each session has one on_subscribe and after it one
    on_unsubscribe, and on_delete comes last (naming the session of the last
    on_unsubscribe)."""

    async def main():
        mon = await MetaMonitor.start(router)
        subs_sessions = [await connect(router, t) for t in ["ws", "rs", "unix"] * 3]
        try:
            of = mon.of
            names = [topic("race") for _ in range(8)]
            subs = {}
            for i, name in enumerate(names):
                opts = SubscribeOptions(match="prefix") if i % 2 else None
                subs[name] = await asyncio.wait_for(asyncio.gather(
                    *(s.subscribe(lambda *a: None, name, options=opts) for s in subs_sessions)), T)
                assert len({x.id for x in subs[name]}) == 1, f"{name}: subscribers got different ids"
            # the first half unsubscribe concurrently, the rest go with their sessions
            for name in names[:4]:
                await asyncio.wait_for(asyncio.gather(*(x.unsubscribe() for x in subs[name])), T)
            for s in subs_sessions:
                s.abort_transport()
            n = len(subs_sessions)
            ids = [subs[name][0].id for name in names]
            await wait_until(lambda: all(len(of(i)) >= 2 * n + 2 for i in ids), what="all meta events")
            await asyncio.sleep(0.1)
            all_sids = {sid(s) for s in subs_sessions}
            for sub_id in ids:
                got = of(sub_id)
                kinds = [k for k, _ in got]
                assert len(got) == 2 * n + 2 and kinds[0] == "on_create" and kinds[-1] == "on_delete", \
                    f"subscription {sub_id}: {kinds}"
                subscribed = [args[0] for k, args in got if k == "on_subscribe"]
                unsubscribed = [args[0] for k, args in got if k == "on_unsubscribe"]
                assert sorted(subscribed) == sorted(all_sids) and sorted(unsubscribed) == sorted(all_sids), got
                assert got[0][1][0] == subscribed[0], \
                    f"subscription {sub_id}: on_create names {got[0][1][0]}, first on_subscribe {subscribed[0]}"
                assert got[-1][1][0] == unsubscribed[-1], \
                    f"subscription {sub_id}: on_delete names {got[-1][1][0]}, last on_unsubscribe {unsubscribed[-1]}"
                seen = set()
                for k, args in got[1:-1]:
                    if k == "on_subscribe":
                        seen.add(args[0])
                    else:
                        assert k == "on_unsubscribe" and args[0] in seen, \
                            f"subscription {sub_id}: {k} for {args[0]} before its on_subscribe: {kinds}"
        finally:
            await close_all(*subs_sessions)
            await mon.close()

    run(main())


# ==========================================================================
# testament meta API
# ==========================================================================

async def add_testament(s, uri, args, kwargs, **kw):
    return await call(s, "wamp.session.add_testament", uri, args, kwargs, **kw)


@pytest.mark.parametrize("how,transport", [("leave", "ws"), ("abort", "rs"), ("abort", "ws"), ("kill", "unix")])
def test_testaments_published_when_session_ends(router, how, transport):
    async def main():
        w = await connect(router, "rs", "msgpack")
        other = await connect(router)
        t = await connect(router, transport, "cbor")
        try:
            uri = topic("will")
            box, _ = await subscribe(w, uri)
            assert await add_testament(t, uri, ["destroyed-1"], {"n": 1}) is None, "add_testament returns nothing"
            assert await add_testament(t, uri, ["detached-1"], {"n": 2}, scope="detached") is None
            await add_testament(t, uri, ["destroyed-2"], {}, scope="destroyed")
            await add_testament(t, uri, ["detached-2"], {"n": 4}, scope="detached")
            await marker(other, uri, 0)
            await box.marker(0)
            assert box.before_marker(0) == [], f"testament published while the session lives: {box.args}"
            if how == "leave":
                await t.close()
            elif how == "abort":
                t.abort_transport()
            else:
                assert await call(other, "wamp.session.kill", sid(t)) is None
                d = await asyncio.wait_for(asyncio.shield(t.left), T)
                assert d.reason == "wamp.close.killed", d.reason
            await box.until(lambda a: len(a) >= 5, f"4 testaments after {how}")
            await marker(other, uri, 1)
            await box.marker(1)
            assert box.before_marker(1)[1:] == [["detached-1"], ["detached-2"], ["destroyed-1"], ["destroyed-2"]], \
                f"testaments after {how}: detached first, then destroyed, each in order added: {box.args}"
            assert [kw for _, kw, _ in box.events[1:5]] == [{"n": 2}, {"n": 4}, {"n": 1}, {}], box.events
        finally:
            await close_all(w, other, t)

    run(main())


def test_testament_publish_options(router):
    async def main():
        w1 = await connect(router, "ws", "json")
        w2 = await connect(router, "rs", "cbor")
        other = await connect(router)
        t = await connect(router, "unix", "msgpack")
        try:
            root = topic("willopt")
            uri = root + ".status"
            b1, _ = await subscribe(w1, uri)
            bp, _ = await subscribe(w1, root, match="prefix")
            b2, _ = await subscribe(w2, uri)
            await add_testament(t, uri, ["disclosed"], {}, publish_options={"disclose_me": True})
            await add_testament(t, uri, ["not-for-w2"], {}, publish_options={"exclude_authid": [authid(w2)]})
            await add_testament(t, uri, ["only-w2"], {"x": 1}, publish_options={"eligible": [sid(w2)],
                                                                                 "acknowledge": True})
            await add_testament(t, uri, ["plain"], {})
            t.abort_transport()
            await b2.until(lambda a: ["plain"] in a, "testament 'plain' at w2")
            await marker(other, uri, 1)
            for b in (b1, bp, b2):
                await b.marker(1)
            assert b1.before_marker(1) == [["disclosed"], ["not-for-w2"], ["plain"]], b1.args
            assert bp.before_marker(1) == [["disclosed"], ["not-for-w2"], ["plain"]], bp.args
            assert b2.before_marker(1) == [["disclosed"], ["only-w2"], ["plain"]], b2.args
            me = (sid(t), authid(t), "anonymous")
            for b in (b1, bp, b2):
                d = b.events[0][2]
                assert (d.publisher, d.publisher_authid, d.publisher_authrole) == me, str(d)
                d = b.events[-2][2]
                assert d.publisher is None, f"publisher disclosed without disclose_me: {d}"
            assert bp.events[0][2].topic == uri
        finally:
            await close_all(w1, w2, other, t)

    run(main())


def test_flush_testaments(router):
    async def main():
        w = await connect(router)
        other = await connect(router)
        s1, s2, s3 = [await connect(router, tr) for tr in ["ws", "rs", "unix"]]
        try:
            uri = topic("flush")
            box, _ = await subscribe(w, uri)
            await add_testament(s1, uri, ["s1-destroyed-A"], {})
            await add_testament(s1, uri, ["s1-detached-B"], {}, scope="detached")
            await add_testament(s1, uri, ["s1-destroyed-C"], {}, scope="destroyed")
            assert await call(s1, "wamp.session.flush_testaments") is None  # default scope: destroyed
            await s1.close()
            await box.until(lambda a: ["s1-detached-B"] in a, "s1's detached testament")

            await add_testament(s2, uri, ["s2-destroyed-D"], {})
            await add_testament(s2, uri, ["s2-detached-E"], {}, scope="detached")
            assert await call(s2, "wamp.session.flush_testaments", scope="detached") is None
            s2.abort_transport()
            await box.until(lambda a: ["s2-destroyed-D"] in a, "s2's destroyed testament")

            await add_testament(s3, uri, ["s3-gone"], {})
            await add_testament(s3, uri, ["s3-gone-too"], {}, scope="detached")
            await call(s3, "wamp.session.flush_testaments", scope="destroyed")
            await call(s3, "wamp.session.flush_testaments", scope="detached")
            await add_testament(s3, uri, ["s3-after-flush"], {})
            await s3.close()
            await box.until(lambda a: ["s3-after-flush"] in a, "s3's testament added after the flush")
            await marker(other, uri, 1)
            await box.marker(1)
            assert box.before_marker(1) == [["s1-detached-B"], ["s2-destroyed-D"], ["s3-after-flush"]], \
                f"flushed testaments were published: {box.args}"
        finally:
            await close_all(w, other, s1, s2, s3)

    run(main())


def test_add_testament_errors_and_limit(router):
    async def main():
        w = await connect(router)
        other = await connect(router)
        t = await connect(router, "rs", "msgpack")
        try:
            uri = topic("willerr")
            box, _ = await subscribe(w, uri)
            for kw in [{"scope": "sometimes"}, {"scope": 1}]:
                err = await meta_error(t, "wamp.session.add_testament", uri, [], {}, **kw)
                assert err.error == "wamp.error.invalid_argument", (kw, err.error, err.args)
            err = await meta_error(t, "wamp.session.flush_testaments", scope="never")
            assert err.error == "wamp.error.invalid_argument", (err.error, err.args)
            for bad in ["wamp.session.on_leave", "wamp.example.topic"]:
                err = await meta_error(t, "wamp.session.add_testament", bad, [], {})
                assert err.error == "wamp.error.invalid_uri", (bad, err.error, err.args)
            # 64 per scope
            for scope in ["destroyed", "detached"]:
                for i in range(64):
                    await add_testament(t, uri, [scope, i], {}, scope=scope)
                err = await meta_error(t, "wamp.session.add_testament", uri, [scope, 64], {}, scope=scope)
                assert err.error == "switchyard.error.limit_exceeded", (scope, err.error, err.args)
            await t.close()
            await box.until(lambda a: len(a) >= 128, "128 testaments")
            await marker(other, uri, 1)
            await box.marker(1)
            want = [["detached", i] for i in range(64)] + [["destroyed", i] for i in range(64)]
            assert box.before_marker(1) == want, \
                f"expected 64 detached then 64 destroyed testaments in order, got {box.args[:5]}... " \
                f"({len(box.args)} events)"
        finally:
            await close_all(w, other, t)

    run(main())
