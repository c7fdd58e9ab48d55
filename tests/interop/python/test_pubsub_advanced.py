"""Advanced-profile Publish & Subscribe (issue 4) with Autobahn|Python and raw JSON clients.

Subscriber black/whitelisting, publisher exclusion and identification,
pattern-based subscriptions, event retention, event history
(``wamp.subscription.get_events``), acknowledged publications under load
(slow consumers), the WELCOME feature list, and combinations of these. The
subscription and testament meta API is in test_pubsub_meta.py.

Autobahn|Python 26 cannot send ``disclose_me`` (PublishOptions has no such
option), and it fills ``details.topic`` itself for exact subscriptions, so
tests that need either use ``pubsub_peer``: a raw JSON WebSocket session
(``wamplib.Peer``) that records every message it receives.

"Not delivered" is always checked with a marker: after the publication that
must not arrive, the same publisher publishes a marker that must arrive; a
subscriber that has the marker but not the first event did not get it (one
publisher's events reach a subscriber in publication order).
"""

import asyncio
import datetime
import re
import socket
import time
import uuid
from dataclasses import dataclass

import pytest
from autobahn.wamp.types import PublishOptions

import wamplib
from wamplib import (ERROR, EVENT, LOOSE_REALM, PUBLISH, PUBLISHED, PUBLISHER_FEATURES, SUBSCRIBE, SUBSCRIBED,
                     SUBSCRIBER_FEATURES, UNKNOWN_ID, BlockingRs, Peer, T, ack, authid, close_all, close_peers,
                     connect, marker, meta_error, retained_everywhere, run, sid, subscribe, unique_uri,
                     wait_until)

PUBLISHER_KEYS = {"publisher", "publisher_authid", "publisher_authrole"}

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def topic(tag="t"):
    return unique_uri("com.example.psa", tag)


async def call(session, procedure, *args, **kwargs):
    """wamplib.call; a result with args + kwargs gives its first positional result."""
    return await wamplib.call(session, procedure, *args, first_result=True, **kwargs)


def pubsub_peer(router):
    """A raw Peer announcing publisher and subscriber with the advanced features."""
    return Peer.join(router, publisher=PUBLISHER_FEATURES, subscriber=SUBSCRIBER_FEATURES)


def is_event(sub_id=None):
    return lambda m: m[0] == EVENT and (sub_id is None or m[1] == sub_id)


def published_id(reply):
    assert reply[0] == PUBLISHED, f"expected PUBLISHED, got {reply!r}"
    return reply[2]


# ==========================================================================
# 1. subscriber black- and whitelisting
# ==========================================================================

@dataclass
class Who:
    a: int
    b: int
    c: int
    pub: int
    auth_a: str
    auth_b: str
    auth_c: str


# (case, PUBLISH.Options, the subscribers among a, b, c that must receive the event)
FILTER_CASES = [
    ("exclude one session", lambda w: {"exclude": [w.a]}, "bc"),
    ("exclude (spec example 1)", lambda w: {"exclude": [w.a, w.b]}, "c"),
    ("eligible (spec example 2)", lambda w: {"eligible": [w.a, w.b]}, "ab"),
    ("eligible + exclude (spec example 3)", lambda w: {"eligible": [w.a, w.b, w.c], "exclude": [w.a]}, "bc"),
    ("eligible names the publisher and b", lambda w: {"eligible": [w.pub, w.b]}, "b"),
    ("eligible: unknown session", lambda w: {"eligible": [UNKNOWN_ID]}, ""),
    ("empty eligible list admits nobody", lambda w: {"eligible": []}, ""),
    ("empty exclude list excludes nobody", lambda w: {"exclude": []}, "abc"),
    ("exclude_authid", lambda w: {"exclude_authid": [w.auth_a]}, "bc"),
    ("exclude_authid two", lambda w: {"exclude_authid": [w.auth_a, w.auth_c]}, "b"),
    ("eligible_authid", lambda w: {"eligible_authid": [w.auth_b, w.auth_c]}, "bc"),
    ("eligible_authid: unknown authid", lambda w: {"eligible_authid": ["nobody"]}, ""),
    ("eligible_authrole anonymous admits all", lambda w: {"eligible_authrole": ["anonymous"]}, "abc"),
    ("eligible_authrole other role admits none", lambda w: {"eligible_authrole": ["admin"]}, ""),
    ("exclude_authrole anonymous admits none", lambda w: {"exclude_authrole": ["anonymous"]}, ""),
    ("exclude_authrole other role excludes none", lambda w: {"exclude_authrole": ["admin", "user"]}, "abc"),
    ("eligible and eligible_authid must both pass",
     lambda w: {"eligible": [w.a, w.b], "eligible_authid": [w.auth_b, w.auth_c]}, "b"),
    ("eligible_authrole + exclude + exclude_authid",
     lambda w: {"eligible_authrole": ["anonymous"], "exclude": [w.a], "exclude_authid": [w.auth_c]}, "b"),
    ("eligible a, but a's authid excluded", lambda w: {"eligible": [w.a], "exclude_authid": [w.auth_a]}, ""),
    ("eligible_authid a + exclude_authrole other", lambda w: {"eligible_authid": [w.auth_a],
                                                             "exclude_authrole": ["admin"]}, "a"),
    ("eligible_authid a + exclude_authrole anonymous", lambda w: {"eligible_authid": [w.auth_a],
                                                                 "exclude_authrole": ["anonymous"]}, ""),
    ("all six lists", lambda w: {"eligible": [w.a, w.b, w.c], "eligible_authid": [w.auth_a, w.auth_b, w.auth_c],
                                 "eligible_authrole": ["anonymous"], "exclude": [w.c],
                                 "exclude_authid": [w.auth_a], "exclude_authrole": ["admin"]}, "b"),
]


def test_subscriber_black_and_whitelisting(pubsub_nodes):
    """Each option alone and in combinations: a subscriber gets the event iff
    it passes every list present."""

    async def main():
        a = await connect(pubsub_nodes[0], "ws", "json")
        b = await connect(pubsub_nodes[1], "rs", "msgpack")
        c = await connect(pubsub_nodes[2], "unix", "cbor")
        pub = await connect(pubsub_nodes[1], "ws", "msgpack")
        try:
            t = topic("bw")
            boxes = {}
            for name, s in zip("abc", (a, b, c)):
                boxes[name], _ = await subscribe(s, t)
            # the publisher is subscribed too: it never gets its own event (exclude_me default)
            pub_box, _ = await subscribe(pub, t)
            assert len({authid(s) for s in (a, b, c)}) == 3, "authids must differ per session"
            w = Who(sid(a), sid(b), sid(c), sid(pub), authid(a), authid(b), authid(c))
            for i, (name, opts, _) in enumerate(FILTER_CASES):
                await ack(pub, t, "case", i, options=opts(w))
                await marker(pub, t, i)
            wrong = []
            for i, (name, opts, want) in enumerate(FILTER_CASES):
                got = ""
                for n in "abc":
                    await boxes[n].marker(i)
                    if ["case", i] in boxes[n].before_marker(i):
                        got += n
                if got != want:
                    wrong.append(f"{name} {opts(w)}: delivered to {got or 'nobody'!r}, expected {want or 'nobody'!r}")
            assert not wrong, "black/whitelisting mismatches:\n  " + "\n  ".join(wrong)
            # every event reached each subscriber exactly once
            for n in "abc":
                seen = [tuple(x) for x in boxes[n].args]
                assert len(seen) == len(set(seen)), f"{n} got duplicates: {seen}"
            assert pub_box.events == [], f"publisher got its own events: {pub_box.args}"
        finally:
            await close_all(a, b, c, pub)

    run(main())


def test_whitelisting_raw_publisher_and_pattern_subscribers(pubsub_nodes):
    """Black/whitelisting applies per subscriber on pattern subscriptions too
    (raw JSON publisher; one event, three subscriptions per session)."""

    async def main():
        x = await connect(pubsub_nodes[0], "rs", "json")
        y = await connect(pubsub_nodes[2], "ws", "cbor")
        pub = await pubsub_peer(pubsub_nodes[1])
        try:
            base = topic("bwp")
            t = base + ".room.status"
            xb = [await subscribe(x, t), await subscribe(x, base, match="prefix"),
                  await subscribe(x, base + "..status", match="wildcard")]
            yb = [await subscribe(y, t), await subscribe(y, base, match="prefix"),
                  await subscribe(y, base + "..status", match="wildcard")]
            r = await pub.publish(t, ["only-y"], options={"exclude_authid": [authid(x)]})
            pid = published_id(r)
            r = await pub.publish(t, ["only-x"], options={"eligible": [sid(x)]})
            published_id(r)
            r = await pub.publish(t, ["marker", 1])
            published_id(r)
            for name, boxes in (("x", xb), ("y", yb)):
                for (box, _), kind in zip(boxes, ["exact", "prefix", "wildcard"]):
                    await box.marker(1)
                    want = [["only-x"]] if name == "x" else [["only-y"]]
                    assert box.before_marker(1) == want, f"{name}'s {kind} subscription got {box.args}"
            assert [box.events[0].details.publication for box, _ in yb] == [pid] * 3, "one publication id"
        finally:
            await close_all(x, y)
            await close_peers(pub)

    run(main())


# ==========================================================================
# 2. publisher exclusion and publisher identification
# ==========================================================================

def test_publisher_exclusion(pubsub_nodes):
    async def main():
        me = await connect(pubsub_nodes[0], "ws", "json")
        other = await connect(pubsub_nodes[2], "rs", "msgpack")
        try:
            t = topic("pe")
            mine, _ = await subscribe(me, t)
            others, _ = await subscribe(other, t)
            await ack(me, t, "default")
            await ack(me, t, "exclude_me=true", options={"exclude_me": True})
            await ack(me, t, "exclude_me=false", options={"exclude_me": False})
            await ack(me, t, "false+exclude me", options={"exclude_me": False, "exclude": [sid(me)]})
            await ack(me, t, "false+eligible other", options={"exclude_me": False, "eligible": [sid(other)]})
            await ack(me, t, "false+eligible me", options={"exclude_me": False, "eligible": [sid(me)]})
            await ack(me, t, "false+exclude_authid me", options={"exclude_me": False,
                                                                 "exclude_authid": [authid(me)]})
            await ack(me, t, "true+eligible me", options={"exclude_me": True, "eligible": [sid(me)]})
            await marker(me, t, "end", exclude_me=False)
            await mine.marker("end")
            await others.marker("end")
            assert mine.before_marker("end") == [["exclude_me=false"], ["false+eligible me"]], \
                f"publisher's own deliveries: {mine.args}"
            assert others.before_marker("end") == [["default"], ["exclude_me=true"], ["exclude_me=false"],
                                                   ["false+exclude me"], ["false+eligible other"],
                                                   ["false+exclude_authid me"]], f"other: {others.args}"
        finally:
            await close_all(me, other)

    run(main())


def _publisher_fields(d):
    return {"publisher": d.publisher, "publisher_authid": d.publisher_authid,
            "publisher_authrole": d.publisher_authrole}


NOBODY = {"publisher": None, "publisher_authid": None, "publisher_authrole": None}


def test_disclose_me(pubsub_nodes):
    async def main():
        ab_sub = await connect(pubsub_nodes[0], "rs", "cbor")
        raw_sub = await pubsub_peer(pubsub_nodes[1])
        raw_pub = await pubsub_peer(pubsub_nodes[2])
        ab_pub = await connect(pubsub_nodes[1])
        try:
            t = topic("dm")
            box, _ = await subscribe(ab_sub, t)
            sub_id = await raw_sub.subscribe(t)
            pid = published_id(await raw_pub.publish(t, ["disclosed"], options={"disclose_me": True}))
            published_id(await raw_pub.publish(t, ["hidden"]))
            published_id(await raw_pub.publish(t, ["hidden2"], options={"disclose_me": False}))
            await ack(ab_pub, t, "autobahn")
            await marker(ab_pub, t, 1)
            await box.marker(1)
            assert box.args[:4] == [["disclosed"], ["hidden"], ["hidden2"], ["autobahn"]], box.args
            me = {"publisher": raw_pub.session_id, "publisher_authid": raw_pub.authid,
                  "publisher_authrole": "anonymous"}
            assert _publisher_fields(box.events[0].details) == me, str(box.events[0].details)
            assert box.events[0].details.publication == pid
            for e in box.events[1:4]:
                assert _publisher_fields(e.details) == NOBODY, f"disclosed without disclose_me: {e.details}"
            # on the wire
            ev = await raw_sub.next(is_event(sub_id), what="disclosed EVENT")
            assert ev[2] == pid and ev[4] == ["disclosed"], ev
            assert {k: ev[3].get(k) for k in PUBLISHER_KEYS} == me, ev
            for _ in range(2):
                ev = await raw_sub.next(is_event(sub_id), what="hidden EVENT")
                assert not PUBLISHER_KEYS & set(ev[3]), f"publisher disclosed without disclose_me: {ev!r}"
        finally:
            await close_all(ab_sub, ab_pub)
            await close_peers(raw_sub, raw_pub)

    run(main())


def test_realm_disclose_publisher_always(router_factory):
    r = router_factory(realms=[dict(LOOSE_REALM, disclose_publisher="always")])

    async def main():
        sub = await connect(r)
        pub = await connect(r, "rs", "msgpack")
        try:
            t = topic("always")
            box, _ = await subscribe(sub, t)
            box_p, _ = await subscribe(sub, t.rsplit(".", 1)[0], match="prefix")
            await ack(pub, t, "x")
            e = await box.wait_for(lambda e: e.args == ["x"])
            ep = await box_p.wait_for(lambda e: e.args == ["x"])
            want = {"publisher": sid(pub), "publisher_authid": authid(pub), "publisher_authrole": "anonymous"}
            assert _publisher_fields(e.details) == want, str(e.details)
            assert _publisher_fields(ep.details) == want, str(ep.details)
        finally:
            await close_all(sub, pub)

    run(main())


def test_realm_disclose_publisher_never(router_factory):
    r = router_factory(realms=[dict(LOOSE_REALM, disclose_publisher="never")])

    async def main():
        ab_sub = await connect(r)
        raw_sub = await pubsub_peer(r)
        pub = await pubsub_peer(r)
        try:
            t = topic("never")
            box, _ = await subscribe(ab_sub, t)
            sub_id = await raw_sub.subscribe(t)
            reply = await pub.publish(t, ["refused"], options={"disclose_me": True})
            assert reply[0] == ERROR and reply[1] == PUBLISH, f"disclose_me must be refused: {reply!r}"
            assert reply[4] == "wamp.error.option_disallowed.disclose_me", reply
            # not acknowledged: no ERROR, and not delivered either
            await pub.publish(t, ["refused-silently"], options={"disclose_me": True}, acknowledge=False)
            published_id(await pub.publish(t, ["plain"]))
            published_id(await pub.publish(t, ["marker", 1]))
            await box.marker(1)
            assert box.before_marker(1) == [["plain"]], f"a refused publication was delivered: {box.args}"
            assert _publisher_fields(box.events[0].details) == NOBODY, str(box.events[0].details)
            ev = await raw_sub.next(is_event(sub_id))
            assert ev[4] == ["plain"] and not PUBLISHER_KEYS & set(ev[3]), ev
            errors = [m for m in pub.log if m[0] == ERROR]
            assert len(errors) == 1, f"unacknowledged publish must not get an ERROR: {errors!r}"
        finally:
            await close_all(ab_sub)
            await close_peers(raw_sub, pub)

    run(main())


# ==========================================================================
# 3. pattern-based subscriptions
# ==========================================================================

def test_prefix_spec_example(pubsub_nodes):
    async def main():
        sub = await pubsub_peer(pubsub_nodes[1])
        ab = await connect(pubsub_nodes[1], "unix", "msgpack")
        pub = await connect(pubsub_nodes[0])
        try:
            root = topic("pfx")  # stands in for "com.myapp"
            pattern = root + ".topic.emergency"
            sub_id = await sub.subscribe(pattern, {"match": "prefix"})
            box, ab_sub = await subscribe(ab, pattern, match="prefix")
            assert ab_sub.id == sub_id, "subscribers of one (topic, match) must share the subscription id"
            matching = [pattern + ".11", pattern + "-low", pattern + ".category.severe", pattern]
            for i, t in enumerate(matching):
                await ack(pub, t, i)
            await ack(pub, root + ".topic.emerge", "no")
            await ack(pub, root + ".topic", "no")
            await ack(pub, root + ".other.emergency", "no")
            await marker(pub, pattern + ".x", 1)
            await box.marker(1)
            assert box.before_marker(1) == [[0], [1], [2], [3]], box.args
            assert [e.details.topic for e in box.events[:4]] == matching
            for i, t in enumerate(matching):
                ev = await sub.next(is_event(), what=f"EVENT {i}")
                assert ev[1] == sub_id and ev[4] == [i], ev
                assert ev[3].get("topic") == t, f"prefix EVENT must carry details.topic={t!r}: {ev!r}"
            ev = await sub.next(is_event())
            assert ev[4] == ["marker", 1], f"non-matching topic delivered: {ev!r}"
        finally:
            await close_all(ab, pub)
            await close_peers(sub)

    run(main())


def test_wildcard_spec_example(pubsub_nodes):
    async def main():
        sub = await pubsub_peer(pubsub_nodes[2])
        ab = await connect(pubsub_nodes[2], "rs", "cbor")
        pub = await connect(pubsub_nodes[0])
        try:
            app = "com.myapp" + uuid.uuid4().hex[:8]  # "com.myapp" with a unique second component
            pattern = app + "..userevent"
            two = app + "...userevent"  # two wildcard components
            sub_id = await sub.subscribe(pattern, {"match": "wildcard"})
            box, ab_sub = await subscribe(ab, pattern, match="wildcard")
            box2, _ = await subscribe(ab, two, match="wildcard")
            assert ab_sub.id == sub_id
            good = [app + ".foo.userevent", app + ".bar.userevent", app + ".a12.userevent"]
            bad = [app + ".foo.userevent.bar", app + ".foo.user", app.replace("myapp", "myapp2") + ".foo.userevent",
                   app + ".userevent", app + ".a.b.userevent"]
            for i, t in enumerate(good):
                await ack(pub, t, "good", i)
            for i, t in enumerate(bad):
                await ack(pub, t, "bad", i)
            await marker(pub, app + ".m.userevent", 1)
            await marker(pub, app + ".m.n.userevent", 2)
            await box.marker(1)
            assert box.before_marker(1) == [["good", i] for i in range(3)], box.args
            assert [e.details.topic for e in box.events[:3]] == good
            await box2.marker(2)
            assert box2.before_marker(2) == [["bad", 4]], \
                f"'{two}' must match exactly the 4-component topics: {box2.args}"
            assert box2.events[0].details.topic == bad[4]
            for i, t in enumerate(good):
                ev = await sub.next(is_event())
                assert ev[1] == sub_id and ev[4] == ["good", i] and ev[3].get("topic") == t, ev
            ev = await sub.next(is_event())
            assert ev[4] == ["marker", 1], f"non-matching topic delivered: {ev!r}"
        finally:
            await close_all(ab, pub)
            await close_peers(sub)

    run(main())


def test_event_delivered_once_per_matching_subscription(pubsub_nodes):
    async def main():
        sub = await pubsub_peer(pubsub_nodes[1])
        other = await pubsub_peer(pubsub_nodes[1])
        pub = await connect(pubsub_nodes[2], "rs", "msgpack")
        try:
            root = topic("multi")
            t = root + ".a.b"
            subs = {
                "exact": await sub.subscribe(t),
                "prefix": await sub.subscribe(root, {"match": "prefix"}),
                "prefix2": await sub.subscribe(root + ".a", {"match": "prefix"}),
                "wildcard": await sub.subscribe(root + "..b", {"match": "wildcard"}),
            }
            assert len(set(subs.values())) == 4, f"different (topic, match) must have different ids: {subs}"
            # another session: same ids for the same (topic, match); same topic other policy: other id
            assert await other.subscribe(t) == subs["exact"]
            assert await other.subscribe(root, {"match": "prefix"}) == subs["prefix"]
            assert await other.subscribe(root + "..b", {"match": "wildcard"}) == subs["wildcard"]
            assert await other.subscribe(t, {"match": "prefix"}) not in subs.values()
            assert await other.subscribe(root + ".a", {"match": "exact"}) != subs["prefix2"]
            # a second SUBSCRIBE of the same session returns the same id
            assert await sub.subscribe(root, {"match": "prefix"}) == subs["prefix"]

            pid = await ack(pub, t, "once", k=1)
            await marker(pub, root + ".z.b", 1)
            evs = []
            while True:
                ev = await sub.next(is_event(), what="EVENT")
                if ev[4] == ["marker", 1]:
                    break
                evs.append(ev)
            by_sub = {ev[1]: ev for ev in evs}
            assert len(evs) == 4 and set(by_sub) == set(subs.values()), \
                f"expected one EVENT per matching subscription {subs}, got {evs!r}"
            for kind, sub_id in subs.items():
                ev = by_sub[sub_id]
                assert ev[2] == pid and ev[4] == ["once"] and ev[5] == {"k": 1}, ev
                if kind == "exact":
                    assert "topic" not in ev[3], f"exact subscription EVENT must not carry details.topic: {ev!r}"
                else:
                    assert ev[3].get("topic") == t, f"{kind}: {ev!r}"
        finally:
            await close_all(pub)
            await close_peers(sub, other)

    run(main())


def test_autobahn_prefix_and_wildcard_details_topic(pubsub_nodes):
    async def main():
        s = await connect(pubsub_nodes[0], "ws", "cbor")
        pub = await connect(pubsub_nodes[2], "unix", "json")
        try:
            root = topic("abp")
            boxp, sp = await subscribe(s, root + ".", match="prefix")
            boxw, sw = await subscribe(s, root + "..temp", match="wildcard")
            boxe, se = await subscribe(s, root + ".kitchen.temp")
            p1 = await ack(pub, root + ".kitchen.temp", 21.5, unit="C")
            p2 = await ack(pub, root + ".hall.temp", 19)
            await marker(pub, root + ".z", 1)
            await boxp.marker(1)
            assert [(e.args, e.details.topic, e.details.publication) for e in boxp.events] == [
                ([21.5], root + ".kitchen.temp", p1), ([19], root + ".hall.temp", p2),
                (["marker", 1], root + ".z", boxp.events[2].details.publication)]
            assert boxp.events[0].kwargs == {"unit": "C"}
            await wait_until(lambda: len(boxw.events) == 2 and len(boxe.events) == 1, what="wildcard/exact events")
            assert [(e.args, e.details.topic) for e in boxw.events] == [([21.5], root + ".kitchen.temp"),
                                                                        ([19], root + ".hall.temp")]
            assert boxe.args == [[21.5]] and boxe.events[0].details.publication == p1
            assert len({sp.id, sw.id, se.id}) == 3
            for e in boxp.events + boxw.events + boxe.events:
                assert not e.details.retained, f"a live event marked retained: {e.details}"
        finally:
            await close_all(s, pub)

    run(main())


# ==========================================================================
# 4. event retention
# ==========================================================================

def test_retained_event_delivered_on_subscribe(pubsub_nodes):
    async def main():
        pub = await connect(pubsub_nodes[0])
        late = plain = raw = late2 = None
        try:
            t = topic("ret")
            p1 = await ack(pub, t, "retained-1", v=1, options={"retain": True})
            await ack(pub, t, "not-retained")  # does not replace the retained event
            await retained_everywhere(pub, pubsub_nodes)

            late, plain = await connect(pubsub_nodes[1], "rs", "msgpack"), await connect(pubsub_nodes[2], "ws", "cbor")
            box, s = await subscribe(late, t, get_retained=True)
            box_plain, _ = await subscribe(plain, t)  # no get_retained: nothing on subscribe
            await marker(pub, t, 1)
            await box.marker(1)
            await box_plain.marker(1)
            assert box.before_marker(1) == [["retained-1"]], f"get_retained subscriber got {box.args}"
            e = box.events[0]
            assert e.kwargs == {"v": 1} and e.details.retained is True, str(e.details)
            assert e.details.publication == p1, "the retained EVENT must carry the original publication id"
            assert not box.events[1].details.retained, "a live event marked retained"
            assert box_plain.before_marker(1) == [], f"retained event sent without get_retained: {box_plain.args}"

            # on the wire: the retained EVENT comes right after SUBSCRIBED, on that subscription
            raw = await pubsub_peer(pubsub_nodes[2])
            rid = raw.req()
            await raw.send([SUBSCRIBE, rid, {"get_retained": True}, t])
            first = await raw.next(what="SUBSCRIBED")
            assert first[0] == SUBSCRIBED and first[1] == rid, first
            ev = await raw.next(what="retained EVENT")
            assert ev[0] == EVENT and ev[1] == first[2] and ev[4] == ["retained-1"] and ev[5] == {"v": 1}, ev
            assert ev[3].get("retained") is True and "topic" not in ev[3], ev

            # a later retained publish replaces it
            await ack(pub, t, "retained-2", options={"retain": True})
            await retained_everywhere(pub, pubsub_nodes)
            late2 = await connect(pubsub_nodes[1])
            box2, _ = await subscribe(late2, t, get_retained=True)
            await marker(pub, t, 2)
            await box2.marker(2)
            assert box2.before_marker(2) == [["retained-2"]], f"replaced retained event: {box2.args}"
            assert box2.events[0].details.retained is True
            # subscribers that were there got retained-2 live, not marked retained
            e = await box.wait_for(lambda e: e.args == ["retained-2"])
            assert not e.details.retained
        finally:
            await close_all(pub, late, plain, late2)
            await close_peers(raw)

    run(main())


def test_retained_event_respects_eligibility(pubsub_nodes):
    async def main():
        pub = await connect(pubsub_nodes[0])
        x = await connect(pubsub_nodes[1], "rs", "msgpack")
        y = await connect(pubsub_nodes[2], "ws", "cbor")
        try:
            cases = [  # (options of the retained publish, who may get it on subscribe)
                ({"exclude_authrole": ["anonymous"]}, ""),
                ({"eligible": [sid(x)]}, "x"),
                ({"exclude": [sid(x)]}, "y"),
                ({"eligible_authid": [authid(y)]}, "y"),
                ({"exclude_authid": [authid(y)]}, "x"),
                ({"eligible_authrole": ["anonymous"]}, "xy"),
            ]
            wrong = []
            for i, (opts, want) in enumerate(cases):
                t = topic("rete")
                await ack(pub, t, "restricted", options=dict(opts, retain=True))
                await retained_everywhere(pub, pubsub_nodes)
                got = ""
                for name, s in (("x", x), ("y", y)):
                    box, _ = await subscribe(s, t, get_retained=True)
                    await marker(pub, t, i)
                    await box.marker(i)
                    before = box.before_marker(i)
                    if before == [["restricted"]]:
                        got += name
                    elif before != []:
                        wrong.append(f"{opts}: {name} got {before} on subscribe")
                if got != want:
                    wrong.append(f"retained with {opts}: delivered to {got or 'nobody'!r}, "
                                 f"expected {want or 'nobody'!r}")
            assert not wrong, "\n  ".join(wrong)
        finally:
            await close_all(pub, x, y)

    run(main())


def test_retained_events_for_pattern_subscriptions(pubsub_nodes):
    async def main():
        pub = await connect(pubsub_nodes[0])
        s = await connect(pubsub_nodes[1], "rs", "msgpack")
        raw = await pubsub_peer(pubsub_nodes[2])
        try:
            root = topic("retp")
            retained = {root + ".a.x": "ax", root + ".b.x": "bx", root + ".c.y": "cy"}
            for t, v in retained.items():
                await ack(pub, t, v, options={"retain": True})
            await ack(pub, root + ".d.x", "not-retained")
            await ack(pub, root + "-other.a.x", "other", options={"retain": True})
            await retained_everywhere(pub, pubsub_nodes)

            boxp, _ = await subscribe(s, root + ".", match="prefix", get_retained=True)
            boxw, _ = await subscribe(s, root + "..x", match="wildcard", get_retained=True)
            await marker(pub, root + ".m.x", 1)
            await boxp.marker(1)
            await boxw.marker(1)
            got_p = {(e.details.topic, e.args[0]) for e in boxp.events[:-1]}
            assert got_p == set(retained.items()) and len(boxp.events) == 4, \
                f"prefix get_retained: {[(e.details.topic, e.args) for e in boxp.events]}"
            got_w = {(e.details.topic, e.args[0]) for e in boxw.events[:-1]}
            assert got_w == {(root + ".a.x", "ax"), (root + ".b.x", "bx")} and len(boxw.events) == 3, \
                f"wildcard get_retained: {[(e.details.topic, e.args) for e in boxw.events]}"
            for e in boxp.events[:-1] + boxw.events[:-1]:
                assert e.details.retained is True, str(e.details)

            # raw: the retained EVENTs carry details.topic and retained on the wire
            sub_id = await raw.subscribe(root + "..y", {"match": "wildcard", "get_retained": True})
            ev = await raw.next(is_event(sub_id))
            assert ev[4] == ["cy"] and ev[3].get("topic") == root + ".c.y" and ev[3].get("retained") is True, ev
        finally:
            await close_all(pub, s)
            await close_peers(raw)

    run(main())


# ==========================================================================
# 10. combinations
# ==========================================================================

def test_wildcard_subscription_blacklist_and_retention(pubsub_nodes):
    """A retained event published with exclude_authid=[X] on a concrete topic:
    X subscribing with a matching wildcard and get_retained gets nothing; Y
    gets it with details.topic and retained=true; live events on the same
    subscription follow the blacklist of each publication."""

    async def main():
        pub = await connect(pubsub_nodes[0])
        x = await connect(pubsub_nodes[1], "rs", "cbor")
        y = await connect(pubsub_nodes[1], "unix", "msgpack")  # shares x's subscription
        try:
            app = topic("combo")
            concrete = app + ".room1.status"
            pattern = app + "..status"
            p = await ack(pub, concrete, "hidden-from-x", options={"retain": True, "exclude_authid": [authid(x)]})
            await retained_everywhere(pub, pubsub_nodes)
            bx, sx = await subscribe(x, pattern, match="wildcard", get_retained=True)
            by, sy = await subscribe(y, pattern, match="wildcard", get_retained=True)
            assert sx.id == sy.id
            await marker(pub, app + ".room2.status", 1)
            await bx.marker(1)
            await by.marker(1)
            assert bx.before_marker(1) == [], f"X got a retained event that excluded it: {bx.args}"
            assert by.before_marker(1) == [["hidden-from-x"]], f"Y: {by.args}"
            d = by.events[0].details
            assert (d.topic, d.retained, d.publication) == (concrete, True, p), str(d)
            assert by.events[1].details.topic == app + ".room2.status" and not by.events[1].details.retained

            await ack(pub, app + ".room3.status", "not-for-y", options={"exclude_authid": [authid(y)]})
            await ack(pub, app + ".room3.status", "x-only", options={"eligible": [sid(x)], "retain": True})
            await marker(pub, app + ".room3.status", 2)
            await bx.marker(2)
            await by.marker(2)
            assert bx.before_marker(2)[-2:] == [["not-for-y"], ["x-only"]], bx.args
            assert by.before_marker(2) == [["hidden-from-x"], ["marker", 1]], by.args
            # a newcomer gets every retained event it is eligible for: room1 (retained for all but x)
            await retained_everywhere(pub, pubsub_nodes)
            z = await connect(pubsub_nodes[2])
            try:
                bz, _ = await subscribe(z, pattern, match="wildcard", get_retained=True)
                await marker(pub, app + ".room4.status", 3)
                await bz.marker(3)
                assert bz.before_marker(3) == [["hidden-from-x"]], bz.args
            finally:
                await close_all(z)
        finally:
            await close_all(pub, x, y)

    run(main())


def test_prefix_and_exact_subscription_on_one_session_with_disclose_me(pubsub_nodes):
    async def main():
        ab = await connect(pubsub_nodes[0], "ws", "msgpack")
        raw = await pubsub_peer(pubsub_nodes[0])
        pub = await pubsub_peer(pubsub_nodes[1])
        try:
            root = topic("pxd")
            t = root + ".item"
            be, se = await subscribe(ab, t)
            bp, sp = await subscribe(ab, root, match="prefix")
            re_ = await raw.subscribe(t)
            rp = await raw.subscribe(root, {"match": "prefix"})
            assert (re_, rp) == (se.id, sp.id), "both sessions must share both subscriptions"
            pid = published_id(await pub.publish(t, ["both"], {"n": 1}, options={"disclose_me": True}))
            published_id(await pub.publish(root + ".other", ["prefix-only"], options={"disclose_me": True}))
            published_id(await pub.publish(t, ["marker", 1]))
            await be.marker(1)
            await wait_until(lambda: len(bp.events) == 3, what="3 prefix events")
            me = {"publisher": pub.session_id, "publisher_authid": pub.authid, "publisher_authrole": "anonymous"}
            assert be.before_marker(1) == [["both"]] and bp.before_marker(1) == [["both"], ["prefix-only"]]
            for e in (be.events[0], bp.events[0], bp.events[1]):
                assert _publisher_fields(e.details) == me, str(e.details)
            assert be.events[0].details.publication == bp.events[0].details.publication == pid
            assert bp.events[0].details.topic == t and bp.events[1].details.topic == root + ".other"
            assert _publisher_fields(bp.events[2].details) == NOBODY
            evs = [await raw.next(is_event(), what=f"raw EVENT {i}") for i in range(2)]
            assert {ev[1] for ev in evs} == {re_, rp} and {ev[2] for ev in evs} == {pid}, evs
            for ev in evs:
                assert {k: ev[3].get(k) for k in PUBLISHER_KEYS} == me and ev[4] == ["both"], ev
                assert ("topic" in ev[3]) == (ev[1] == rp), f"details.topic only for the prefix one: {ev!r}"
        finally:
            await close_all(ab)
            await close_peers(raw, pub)

    run(main())


# ==========================================================================
# 9. WELCOME features
# ==========================================================================

BROKER_FEATURES = ["publisher_exclusion", "publisher_identification", "subscriber_blackwhite_listing",
                   "pattern_based_subscription", "event_retention", "event_history", "subscription_meta_api",
                   "session_meta_api"]
DEALER_FEATURES = ["caller_identification", "call_timeout", "call_canceling", "progressive_call_results",
                   "progressive_call_invocations", "pattern_based_registration", "shared_registration",
                   "registration_meta_api", "session_meta_api", "testament_meta_api"]


def test_welcome_announces_the_broker_features(router):
    async def main():
        p = await pubsub_peer(router)
        try:
            roles = p.details["roles"]
            assert roles["broker"]["features"] == {f: True for f in BROKER_FEATURES}, roles["broker"]
            assert roles["dealer"]["features"] == {f: True for f in DEALER_FEATURES}, roles["dealer"]
        finally:
            await close_peers(p)

    run(main())


# ==========================================================================
# 5. event history (wamp.subscription.get_events)
# ==========================================================================

H = "com.example.hist"
HISTORY = [
    {"topic": f"{H}.page", "limit": 5},
    {"topic": f"{H}.time", "match": "exact"},
    {"topic": f"{H}.default"},
    {"topic": f"{H}.pfx.", "match": "prefix", "limit": 50},
    {"topic": f"{H}.wc..leaf", "match": "wildcard", "limit": 50},
    {"topic": f"{H}.aged", "max_age": "2s"},
    {"topic": f"{H}.acl"},
    {"topic": f"{H}.life"},
    # the example of pubsub_event_history.md
    {"topic": "com.mycompany.log.auth"},
    {"topic": "com.mycompany.log.basket", "match": "exact"},
    {"topic": "com.mycompany.log", "match": "prefix"},
]


@pytest.fixture(scope="module")
def hrouter(module_router_factory):
    """A router whose realm has the HISTORY topics ([[realm.history]] entries)."""
    return module_router_factory(realms=[dict(LOOSE_REALM, history=HISTORY)])


async def history_id(s, uri, match="exact"):
    sub_id = await call(s, "wamp.subscription.lookup", uri, {"match": match})
    assert isinstance(sub_id, int), f"history subscription for {uri!r} ({match}) must exist from the start: {sub_id!r}"
    return sub_id


async def get_events(s, sub_id, **kw):
    r = await call(s, "wamp.subscription.get_events", sub_id, **kw)
    assert isinstance(r, list), f"get_events must return a list, got {r!r}"
    return r


def check_event(e, sub_id, pub_id, uri, args, kwargs=None):
    assert isinstance(e, dict), e
    assert {"timestamp", "subscription", "publication", "details"} <= set(e), f"history event lacks keys: {e!r}"
    assert RFC3339.match(e["timestamp"]), f"timestamp is not RFC 3339: {e['timestamp']!r}"
    ts = datetime.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
    age = (datetime.datetime.now(datetime.timezone.utc) - ts).total_seconds()
    assert -5 < age < 120, f"timestamp {e['timestamp']!r} is not about now"
    assert (e["subscription"], e["publication"], e.get("topic")) == (sub_id, pub_id, uri), e
    assert isinstance(e["details"], dict), e
    assert e.get("args") == args, e
    if kwargs is not None:
        assert e.get("kwargs") == kwargs, e


def pubs(events):
    return [e["publication"] for e in events]


def test_history_subscriptions_exist_from_start(hrouter):
    async def main():
        s = await connect(hrouter)
        pub = await connect(hrouter, "rs", "msgpack")
        try:
            lists = await call(s, "wamp.subscription.list")
            for h in HISTORY:
                m = h.get("match", "exact")
                hid = await history_id(s, h["topic"], m)
                assert hid in lists[m], f"history subscription {h} not in wamp.subscription.list[{m}]: {lists}"
                info = await call(s, "wamp.subscription.get", hid)
                assert (info["id"], info["uri"], info["match"]) == (hid, h["topic"], m), info
                assert await call(s, "wamp.subscription.count_subscribers", hid) == 0
                assert await call(s, "wamp.subscription.list_subscribers", hid) == []
            hid = await history_id(s, f"{H}.life")
            assert hid in (await call(s, "wamp.subscription.match", f"{H}.life") or [])
            # subscribing joins the existing subscription; live events still flow
            box, sub = await subscribe(s, f"{H}.life")
            assert sub.id == hid, "a subscription to a history topic must be the history subscription"
            p1 = await ack(pub, f"{H}.life", "one")
            await box.wait_for(lambda e: e.args == ["one"])
            assert box.events[0].details.publication == p1
            # not deleted when its last subscriber leaves
            await asyncio.wait_for(sub.unsubscribe(), T)
            assert await call(s, "wamp.subscription.count_subscribers", hid) == 0
            assert await history_id(s, f"{H}.life") == hid
            assert (await call(s, "wamp.subscription.get", hid))["uri"] == f"{H}.life"
            p2 = await ack(pub, f"{H}.life", "two")
            assert pubs(await get_events(s, hid)) == [p1, p2]
            # and when a subscriber disconnects
            s2 = await connect(hrouter)
            _, sub2 = await subscribe(s2, f"{H}.life")
            assert sub2.id == hid
            s2.abort_transport()
            deadline = time.monotonic() + T
            while await call(s, "wamp.subscription.count_subscribers", hid) != 0:
                assert time.monotonic() < deadline, "subscriber that disconnected still counted"
                await asyncio.sleep(0.02)
            assert await history_id(s, f"{H}.life") == hid
        finally:
            await close_all(s, pub)

    run(main())


def test_get_events_limit_order_and_pagination(hrouter):
    async def main():
        s = await connect(hrouter)
        pub = await connect(hrouter, "rs", "msgpack")
        raw = await pubsub_peer(hrouter)
        try:
            uri = f"{H}.page"
            hid = await history_id(s, uri)
            assert await get_events(s, hid) == []
            e = [await ack(pub, uri, i, "x", k={"i": i}) for i in range(3)]
            got = await get_events(s, hid)
            assert pubs(got) == e, f"oldest first: {got!r}"
            for i, ev in enumerate(got):
                check_event(ev, hid, e[i], uri, [i, "x"], {"k": {"i": i}})
            e += [await ack(pub, uri, i, "x", k={"i": i}) for i in range(3, 6)]
            e.append(published_id(await raw.publish(uri, [6, "x"], {"k": {"i": 6}}, options={"disclose_me": True})))
            # limit = 5: the oldest are dropped
            got = await get_events(s, hid)
            assert pubs(got) == e[2:], f"history limit 5 must keep the last 5 of 7: {pubs(got)} vs {e}"
            check_event(got[-1], hid, e[6], uri, [6, "x"], {"k": {"i": 6}})
            assert got[-1]["details"].get("publisher") == raw.session_id, \
                f"details must be the original EVENT.Details (publisher disclosed): {got[-1]!r}"
            assert pubs(await get_events(s, hid, reverse=True)) == e[2:][::-1]
            assert pubs(await get_events(s, hid, reverse=False)) == e[2:]
            assert pubs(await get_events(s, hid, limit=2)) == e[2:4]
            assert pubs(await get_events(s, hid, limit=2, reverse=True)) == [e[6], e[5]]
            assert pubs(await get_events(s, hid, limit=50)) == e[2:]

            # pagination forward (after_publication) and backward (before_publication)
            pages, last = [], None
            for _ in range(5):
                kw = {"limit": 2} if last is None else {"limit": 2, "after_publication": last}
                page = await get_events(s, hid, **kw)
                if not page:
                    break
                pages.append(pubs(page))
                last = page[-1]["publication"]
            assert pages == [e[2:4], e[4:6], e[6:7]], pages
            pages, last = [], None
            for _ in range(5):
                kw = {"limit": 2, "reverse": True}
                if last is not None:
                    kw["before_publication"] = last
                page = await get_events(s, hid, **kw)
                if not page:
                    break
                pages.append(pubs(page))
                last = page[-1]["publication"]
            assert pages == [[e[6], e[5]], [e[4], e[3]], [e[2]]], pages

            # *_publication bounds
            assert pubs(await get_events(s, hid, from_publication=e[4])) == e[4:]
            assert pubs(await get_events(s, hid, after_publication=e[4])) == e[5:]
            assert pubs(await get_events(s, hid, before_publication=e[4])) == e[2:4]
            assert pubs(await get_events(s, hid, until_publication=e[4])) == e[2:5]
            assert pubs(await get_events(s, hid, from_publication=e[3], until_publication=e[5])) == e[3:6]
            assert pubs(await get_events(s, hid, after_publication=e[3], before_publication=e[6])) == e[4:6]
            assert pubs(await get_events(s, hid, from_publication=e[3], reverse=True)) == e[3:][::-1]
            assert pubs(await get_events(s, hid, from_publication=e[3], reverse=True, limit=2)) == [e[6], e[5]]
            assert await get_events(s, hid, after_publication=e[6]) == []

            for kw in [{"from_publication": UNKNOWN_ID}, {"after_publication": UNKNOWN_ID},
                       {"before_publication": UNKNOWN_ID}, {"until_publication": UNKNOWN_ID},
                       {"no_such_option": 1}]:
                err = await meta_error(s, "wamp.subscription.get_events", hid, **kw)
                assert err.error == "wamp.error.invalid_argument", (kw, err.error, err.args)
        finally:
            await close_all(s, pub)
            await close_peers(raw)

    run(main())


def test_get_events_time_filters(hrouter):
    async def main():
        s = await connect(hrouter)
        pub = await connect(hrouter)
        try:
            uri = f"{H}.time"
            hid = await history_id(s, uri)
            e = []
            for i in range(3):
                e.append(await ack(pub, uri, i))
                await asyncio.sleep(0.05)
            got = await get_events(s, hid)
            assert pubs(got) == e, got
            ts = [g["timestamp"] for g in got]
            parsed = [datetime.datetime.fromisoformat(t.replace("Z", "+00:00")) for t in ts]
            assert parsed[0] < parsed[1] < parsed[2], \
                f"events 50 ms apart need distinct timestamps (sub-second precision): {ts}"
            # bounds given as the timestamps get_events reported for the events themselves
            wrong = []
            for kw, want in [({"from_time": ts[1]}, [1, 2]), ({"after_time": ts[1]}, [2]),
                             ({"before_time": ts[1]}, [0]), ({"until_time": ts[1]}, [0, 1]),
                             ({"from_time": ts[0], "before_time": ts[2]}, [0, 1]),
                             ({"after_time": ts[0], "until_time": ts[2], "reverse": True}, [2, 1]),
                             ({"from_time": ts[0], "limit": 1, "reverse": True}, [2])]:
                got = [e.index(p) for p in pubs(await get_events(s, hid, **kw))]
                if got != want:
                    wrong.append(f"{kw}: events {got}, expected {want}")
            assert not wrong, f"time filters with the events' own timestamps {ts}:\n  " + "\n  ".join(wrong)
            past = "2000-01-01T00:00:00Z"
            future = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)).strftime(
                "%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            assert pubs(await get_events(s, hid, from_time=past)) == e
            assert await get_events(s, hid, from_time=future) == []
            assert pubs(await get_events(s, hid, until_time=future)) == e
            # a time with an offset instead of Z means the same instant
            t1 = parsed[1].astimezone(datetime.timezone(datetime.timedelta(hours=2))).isoformat()
            assert pubs(await get_events(s, hid, from_time=t1)) == e[1:], t1
            for kw in [{"from_time": "yesterday"}, {"until_time": 12345}]:
                err = await meta_error(s, "wamp.subscription.get_events", hid, **kw)
                assert err.error == "wamp.error.invalid_argument", (kw, err.error, err.args)
        finally:
            await close_all(s, pub)

    run(main())


def test_history_default_limit_is_100(hrouter):
    async def main():
        s = await connect(hrouter)
        pub = await connect(hrouter, "rs", "msgpack")
        try:
            uri = f"{H}.default"
            hid = await history_id(s, uri)
            for i in range(104):
                pub.publish(uri, i)  # fire and forget, in order
            await ack(pub, uri, 104)
            got = await get_events(s, hid)
            assert [g["args"] for g in got] == [[i] for i in range(5, 105)], \
                f"default limit 100: expected events 5..104, got {len(got)} events from {got[:1]}"
        finally:
            await close_all(s, pub)

    run(main())


def test_history_pattern_subscriptions_and_topic_filter(hrouter):
    async def main():
        s = await connect(hrouter)
        pub = await connect(hrouter, "unix", "cbor")
        try:
            pid = await history_id(s, f"{H}.pfx.", "prefix")
            wid = await history_id(s, f"{H}.wc..leaf", "wildcard")
            u = uuid.uuid4().hex[:8]
            ta, tb = f"{H}.pfx.a{u}", f"{H}.pfx.b{u}.c"
            wa, wb = f"{H}.wc.a{u}.leaf", f"{H}.wc.b{u}.leaf"
            e = [await ack(pub, ta, 0), await ack(pub, tb, 1), await ack(pub, ta, 2),
                 await ack(pub, wa, 3), await ack(pub, f"{H}.wc.a{u}.leaf.deeper", "no"),
                 await ack(pub, wb, 5), await ack(pub, f"{H}.pfx", "no")]
            got = [g for g in await get_events(s, pid) if g["publication"] in e]
            assert [(g["publication"], g["topic"], g["args"]) for g in got] == [
                (e[0], ta, [0]), (e[1], tb, [1]), (e[2], ta, [2])], got
            for g in got:
                check_event(g, pid, g["publication"], g["topic"], g["args"])
            assert pubs(await get_events(s, pid, topic=ta)) == [e[0], e[2]]
            assert pubs(await get_events(s, pid, topic=tb)) == [e[1]]
            assert pubs(await get_events(s, pid, topic=ta, reverse=True, limit=1)) == [e[2]]
            assert await get_events(s, pid, topic=f"{H}.pfx.none{u}") == []
            got = [g for g in await get_events(s, wid) if g["publication"] in e]
            assert [(g["publication"], g["topic"]) for g in got] == [(e[3], wa), (e[5], wb)], got
            assert pubs(await get_events(s, wid, topic=wb)) == [e[5]]
        finally:
            await close_all(s, pub)

    run(main())


def test_history_spec_example(hrouter):
    """pubsub_event_history.md: exact .auth, exact .basket, prefix
    com.mycompany.log; five publications."""

    async def main():
        s = await connect(hrouter)
        pub = await connect(hrouter)
        try:
            s1 = await history_id(s, "com.mycompany.log.auth")
            s2 = await history_id(s, "com.mycompany.log.basket")
            s3 = await history_id(s, "com.mycompany.log", "prefix")
            p = [await ack(pub, "com.mycompany.log." + t, i + 1)
                 for i, t in enumerate(["auth", "basket", "basket", "basket", "checkout"])]
            assert pubs(await get_events(s, s1)) == p[:1]
            assert pubs(await get_events(s, s2)) == p[1:4]
            got3 = await get_events(s, s3)
            assert pubs(got3) == p
            assert [g["topic"] for g in got3] == ["com.mycompany.log." + t for t in
                                                  ["auth", "basket", "basket", "basket", "checkout"]]
            assert {g["subscription"] for g in got3} == {s3}
        finally:
            await close_all(s, pub)

    run(main())


def test_history_max_age(hrouter):
    async def main():
        s = await connect(hrouter)
        pub = await connect(hrouter)
        try:
            uri = f"{H}.aged"
            hid = await history_id(s, uri)
            t0 = time.monotonic()
            p1 = await ack(pub, uri, 1)
            got = await get_events(s, hid)
            if time.monotonic() - t0 < 1.5:  # else this machine is too slow to tell
                assert pubs(got) == [p1], got
            await asyncio.sleep(max(0.0, 2.6 - (time.monotonic() - t0)))
            assert await get_events(s, hid) == [], "an event older than max_age = 2s is still in the history"
            p2 = await ack(pub, uri, 2)
            assert pubs(await get_events(s, hid)) == [p2]
        finally:
            await close_all(s, pub)

    run(main())


def test_history_and_black_white_listing(hrouter):
    """Events published with exclude/eligible (session ids) are not stored;
    authid/authrole lists are stored and applied to the reader."""

    async def main():
        r1 = await connect(hrouter, "ws", "json")
        r2 = await connect(hrouter, "rs", "msgpack")
        pub = await connect(hrouter)
        try:
            uri = f"{H}.acl"
            hid = await history_id(r1, uri)
            box, _ = await subscribe(r1, uri)  # r1 also subscribes: live delivery follows the lists
            e = {}
            for name, opts in [("exclude r2", {"exclude": [sid(r2)]}),
                               ("eligible r1", {"eligible": [sid(r1)]}),
                               ("eligible r1+r2", {"eligible": [sid(r1), sid(r2)]}),
                               ("role ok", {"eligible_authrole": ["anonymous"]}),
                               ("role excluded", {"exclude_authrole": ["anonymous"]}),
                               ("authid r1", {"eligible_authid": [authid(r1)]}),
                               ("not authid r1", {"exclude_authid": [authid(r1)]}),
                               ("other role", {"eligible_authrole": ["admin"]}),
                               ("plain", {})]:
                e[name] = await ack(pub, uri, name, options=opts)
            await box.wait_for(lambda ev: ev.args == ["plain"])
            assert box.args == [["exclude r2"], ["eligible r1"], ["eligible r1+r2"], ["role ok"], ["authid r1"],
                                ["plain"]], f"live delivery to r1: {box.args}"
            got1 = [g["args"][0] for g in await get_events(r1, hid)]
            got2 = [g["args"][0] for g in await get_events(r2, hid)]
            assert got1 == ["role ok", "authid r1", "plain"], \
                f"history as r1 sees it (exclude/eligible session lists must not be stored): {got1}"
            assert got2 == ["role ok", "not authid r1", "plain"], f"history as r2 sees it: {got2}"
            # limit counts the events the reader may see
            got = [g["args"][0] for g in await get_events(r2, hid, limit=2)]
            assert got == ["role ok", "not authid r1"], f"r2, limit=2: {got}"
            got = [g["args"][0] for g in await get_events(r1, hid, limit=2, reverse=True)]
            assert got == ["plain", "authid r1"], f"r1, limit=2, reverse: {got}"
        finally:
            await close_all(r1, r2, pub)

    run(main())


def test_get_events_errors(hrouter):
    async def main():
        s = await connect(hrouter)
        try:
            _, plain = await subscribe(s, topic("nohist"))
            err = await meta_error(s, "wamp.subscription.get_events", plain.id)
            assert err.error == "wamp.error.invalid_argument", (err.error, err.args)
            assert err.args and "history" in str(err.args[0]).lower(), \
                f"the message should say the subscription keeps no history: {err.args!r}"
            err = await meta_error(s, "wamp.subscription.get_events", UNKNOWN_ID)
            assert err.error == "wamp.error.no_such_subscription", (err.error, err.args)
            hid = await history_id(s, f"{H}.page")
            for kw in [{"limit": "ten"}, {"reverse": "yes"}, {"topic": 5}]:
                err = await meta_error(s, "wamp.subscription.get_events", hid, **kw)
                assert err.error == "wamp.error.invalid_argument", (kw, err.error, err.args)
        finally:
            await close_all(s)

    run(main())


# ==========================================================================
# 8. acknowledged publications under load: slow consumers
# ==========================================================================

def test_published_only_after_every_event_is_queued(router):
    """PUBLISHED is sent only after the EVENT was queued for every subscriber:
    a call a subscriber makes after the publisher got PUBLISHED is answered
    on the same connection after that EVENT, so the event is there first."""

    async def main():
        subs = [await connect(router, tr, ser) for tr, ser in [("ws", "json"), ("rs", "msgpack"), ("unix", "cbor")]]
        pub = await connect(router, "rs", "cbor")
        try:
            t = topic("acked")
            boxes = [(await subscribe(s, t))[0] for s in subs]
            boxes += [(await subscribe(s, t.rsplit(".", 1)[0], match="prefix"))[0] for s in subs]
            late = []
            for i in range(30):
                await ack(pub, t, i)
                for n, s in enumerate(subs):
                    await call(s, "wamp.session.count")
                    for box in (boxes[n], boxes[n + 3]):
                        if [i] not in box.args:
                            late.append((i, n))
            assert not late, f"(event, subscriber) pairs not delivered before a later call's RESULT: {late[:10]}"
        finally:
            await close_all(pub, *subs)

    run(main())


N_EVENTS = 800
EVENT_SIZE = 16 * 1024
LAG = 8  # max events the healthy subscriber may be behind the publisher
QUEUE = 64


@pytest.mark.parametrize("policy", ["disconnect", "drop_events"])
def test_slow_consumer_does_not_slow_publisher_or_others(router_factory, policy):
    r = router_factory(limits={"outbound_queue": QUEUE, "slow_consumer": policy})
    t = topic("slow")

    # the slow consumer: subscribes, then stops reading (tiny receive buffer)
    slow = BlockingRs(r, rcvbuf=4096)
    slow.hello()
    sub = slow.request([SUBSCRIBE, 1, {}, t])
    assert sub[0] == SUBSCRIBED, sub
    payload = bytes(range(256)) * (EVENT_SIZE // 256)
    stats = {}

    async def main():
        loop = asyncio.get_running_loop()
        healthy = await connect(r, "rs", "msgpack")
        pub = await connect(r, "ws", "msgpack")
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

            await asyncio.wait_for(healthy.subscribe(on_event, t), T)
            t0 = time.monotonic()
            acked = 0
            for i in range(N_EVENTS):
                # paced by the healthy subscriber so it stays inside its own outbound_queue
                while len(received) < i - LAG:
                    if healthy.disconnected.done():
                        raise AssertionError(f"healthy subscriber was disconnected after {len(received)} events")
                    progress.clear()
                    try:
                        await asyncio.wait_for(progress.wait(), T)
                    except asyncio.TimeoutError:
                        raise AssertionError(f"healthy subscriber stalled at {len(received)} events") from None
                try:
                    p = await asyncio.wait_for(pub.publish(t, i, payload, options=PublishOptions(acknowledge=True)),
                                               T)
                except asyncio.TimeoutError:
                    raise AssertionError(f"publish {i} not acknowledged within {T}s (policy {policy}): the slow "
                                         "consumer held the publisher up") from None
                assert p.id
                acked += 1
            stats["publish_s"] = time.monotonic() - t0
            assert acked == N_EVENTS
            try:
                await asyncio.wait_for(asyncio.shield(done), 20)
            except asyncio.TimeoutError:
                raise AssertionError(f"healthy subscriber got only {len(received)}/{N_EVENTS} events") from None
            assert received == list(range(N_EVENTS)), "healthy subscriber got events out of order / duplicated"
            assert healthy.is_attached() and pub.is_attached(), "publisher or healthy subscriber disconnected"
        finally:
            await close_all(healthy, pub)

    try:
        run(main(), timeout=60)
        if policy == "disconnect":
            closed, nbytes = slow.read_until_eof(timeout=10)
            assert closed, f"slow consumer still connected after {N_EVENTS} events (read {nbytes} bytes)"
            assert nbytes < N_EVENTS * EVENT_SIZE, "slow consumer received everything; it was never slow?"
            assert r.wait_log(r"slow consumer", timeout=3), "router log has no 'slow consumer' line"
        else:
            # drop_events: still connected; it gets an in-order subset, then works normally
            slow.timeout = 1.0
            seqs = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    m = slow.recv()
                except socket.timeout:
                    break
                assert m[0] == EVENT, f"slow consumer got {str(m)[:200]}"
                seqs.append(m[4][0])
            assert seqs, "the slow consumer got no events at all"
            assert len(seqs) < N_EVENTS, "no event was dropped: the consumer was never slow?"
            assert seqs == sorted(set(seqs)), f"events out of order / duplicated: {seqs[:50]}..."
            slow.timeout = T
            r2 = slow.request([SUBSCRIBE, 2, {}, t + ".after"])
            assert r2[0] == SUBSCRIBED, f"slow consumer not usable after dropped events: {r2!r}"
            lines = r.wait_log(r"slow consumer|dropp", timeout=3)
            assert lines, "router log does not mention the dropped events"
    finally:
        slow.close()
