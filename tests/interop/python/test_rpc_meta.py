"""Registration and session meta API (issue 3) with Autobahn|Python.

Procedures ``wamp.registration.*`` / ``wamp.session.*`` and the meta events
``wamp.registration.on_*`` / ``wamp.session.on_join`` / ``on_leave``. Tests
that count or kill sessions get a router of their own.
"""

import asyncio
import functools
import time

from autobahn.wamp.types import RegisterOptions

from wamplib import (REG_META_EVENTS, UNKNOWN_ID, T, check_created, close_all, connect, meta_error, meta_events_of,
                     run, sid, unique_uri, wait_until)


def proc(tag="p"):
    return unique_uri("com.example.meta", tag)


def check_registration_details(d, reg_id, uri, match, invoke):
    assert isinstance(d, dict) and set(d) == {"id", "created", "uri", "match", "invoke"}, d
    assert (d["id"], d["uri"], d["match"], d["invoke"]) == (reg_id, uri, match, invoke), d
    check_created(d)


# ==========================================================================
# registration meta API
# ==========================================================================

def test_registration_meta_procedures(router):
    async def main():
        a, b, c = [await connect(router) for _ in range(3)]
        try:
            name, pfx = proc("ex"), proc("pfx")
            wc = proc("wc") + "..leaf"
            rr = RegisterOptions(invoke="roundrobin")
            ra = await asyncio.wait_for(a.register(lambda: "a", name, options=rr), T)
            rb = await asyncio.wait_for(b.register(lambda: "b", name, options=rr), T)
            assert ra.id == rb.id
            rp = await asyncio.wait_for(a.register(lambda: "p", pfx, options=RegisterOptions(match="prefix")), T)
            rw = await asyncio.wait_for(b.register(lambda: "w", wc, options=RegisterOptions(match="wildcard")), T)

            lists = await asyncio.wait_for(c.call("wamp.registration.list"), T)
            assert isinstance(lists, dict) and set(lists) == {"exact", "prefix", "wildcard"}, lists
            for reg, key in [(ra, "exact"), (rp, "prefix"), (rw, "wildcard")]:
                for k, ids in lists.items():
                    assert (reg.id in ids) == (k == key), f"registration {reg.id} ({key}) in {k}: {lists}"

            async def call(p, *args):
                return await asyncio.wait_for(c.call(p, *args), T)

            assert await call("wamp.registration.lookup", name) == ra.id
            assert await call("wamp.registration.lookup", name, {"match": "exact"}) == ra.id
            assert await call("wamp.registration.lookup", name, {"match": "prefix"}) is None
            assert await call("wamp.registration.lookup", pfx) is None
            assert await call("wamp.registration.lookup", pfx, {"match": "prefix"}) == rp.id
            assert await call("wamp.registration.lookup", wc, {"match": "wildcard"}) == rw.id
            assert await call("wamp.registration.lookup", proc("none")) is None

            assert await call("wamp.registration.match", name) == ra.id
            assert await call("wamp.registration.match", pfx + ".deeper.still") == rp.id
            assert await call("wamp.registration.match", wc.replace("..", ".anything.")) == rw.id
            assert await call("wamp.registration.match", proc("none")) is None

            check_registration_details(await call("wamp.registration.get", ra.id), ra.id, name, "exact",
                                       "roundrobin")
            check_registration_details(await call("wamp.registration.get", rp.id), rp.id, pfx, "prefix", "single")
            check_registration_details(await call("wamp.registration.get", rw.id), rw.id, wc, "wildcard", "single")

            assert sorted(await call("wamp.registration.list_callees", ra.id)) == sorted([sid(a), sid(b)])
            assert await call("wamp.registration.count_callees", ra.id) == 2
            assert await call("wamp.registration.list_callees", rp.id) == [sid(a)]
            assert await call("wamp.registration.count_callees", rw.id) == 1

            for p in ["wamp.registration.get", "wamp.registration.list_callees", "wamp.registration.count_callees"]:
                assert (await meta_error(c, p, UNKNOWN_ID)).error == "wamp.error.no_such_registration", p

            # b leaves: one callee left; a unregisters: the registration is gone
            await b.close()
            deadline = time.monotonic() + T
            while await call("wamp.registration.count_callees", ra.id) != 1:
                assert time.monotonic() < deadline, "count_callees still 2 after a callee left"
                await asyncio.sleep(0.02)
            assert await call("wamp.registration.list_callees", ra.id) == [sid(a)]
            await asyncio.wait_for(ra.unregister(), T)
            assert (await meta_error(c, "wamp.registration.get", ra.id)).error == "wamp.error.no_such_registration"
            assert await call("wamp.registration.lookup", name) is None
            assert ra.id not in (await call("wamp.registration.list"))["exact"]
        finally:
            await close_all(a, b, c)

    run(main())


def test_registration_meta_events(router):
    async def main():
        mon, a, b, c = [await connect(router) for _ in range(4)]
        try:
            events = []
            for t in REG_META_EVENTS:
                await asyncio.wait_for(
                    mon.subscribe(lambda *args, t=t: events.append((t, args)), f"wamp.registration.{t}"), T)

            of = functools.partial(meta_events_of, events)

            name = proc("ev")
            rr = RegisterOptions(invoke="roundrobin")
            ra = await asyncio.wait_for(a.register(lambda: "a", name, options=rr), T)
            rb = await asyncio.wait_for(b.register(lambda: "b", name, options=rr), T)
            await asyncio.wait_for(rb.unregister(), T)
            await asyncio.wait_for(ra.unregister(), T)
            await wait_until(lambda: len(of(ra.id)) >= 6, what="6 registration meta events")
            await asyncio.sleep(0.1)
            got = of(ra.id)
            assert [t for t, _ in got] == ["on_create", "on_register", "on_register", "on_unregister",
                                           "on_unregister", "on_delete"], got
            created = got[0][1]
            assert created[0] == sid(a), got[0]
            check_registration_details(created[1], ra.id, name, "exact", "roundrobin")
            assert [args for _, args in got[1:]] == [(sid(a), ra.id), (sid(b), ra.id), (sid(b), ra.id),
                                                    (sid(a), ra.id), (sid(a), ra.id)], got

            # a callee that disconnects: unregister + delete
            name2 = proc("ev2")
            rc = await asyncio.wait_for(c.register(lambda: "c", name2, options=RegisterOptions(match="prefix")), T)
            c.abort_transport()
            await wait_until(lambda: len(of(rc.id)) >= 4, what="4 meta events of a departed callee")
            got = of(rc.id)
            assert [t for t, _ in got] == REG_META_EVENTS, got
            check_registration_details(got[0][1][1], rc.id, name2, "prefix", "single")
            assert [args for _, args in got[1:]] == [(sid(c), rc.id)] * 3, got
        finally:
            await close_all(mon, a, b, c)

    run(main())


def test_registration_meta_events_follow_the_dealer_order(router):
    """Many callees join and leave shared registrations at the same time: for
    each registration the events must still tell its history in the order the
    Dealer applied it: on_create first, the on_register sessions in callee
    order (= list_callees order), every on_unregister after that session's
    on_register, on_delete last."""

    async def main():
        mon = await connect(router)
        callees = [await connect(router, t) for t in ["ws", "rs", "unix"] * 3]
        try:
            events = []
            for t in REG_META_EVENTS:
                await asyncio.wait_for(
                    mon.subscribe(lambda *args, t=t: events.append((t, args)), f"wamp.registration.{t}"), T)
            names = [proc("race") for _ in range(8)]
            opts = RegisterOptions(invoke="roundrobin")
            regs = {}
            for name in names:
                rs = await asyncio.wait_for(asyncio.gather(*(c.register(lambda: 1, name, options=opts)
                                                             for c in callees)), T)
                regs[name] = rs
            order = {}
            for name in names:
                rid = regs[name][0].id
                order[rid] = await asyncio.wait_for(mon.call("wamp.registration.list_callees", rid), T)
            for name in names:
                await asyncio.wait_for(asyncio.gather(*(r.unregister() for r in regs[name])), T)

            of = functools.partial(meta_events_of, events)

            n = len(callees)
            await wait_until(lambda: all(len(of(rid)) >= 2 * n + 2 for rid in order), what="all meta events")
            await asyncio.sleep(0.1)
            for rid, callee_order in order.items():
                got = of(rid)
                kinds = [t for t, _ in got]
                assert kinds[0] == "on_create" and kinds[-1] == "on_delete" and len(got) == 2 * n + 2, \
                    f"registration {rid}: {kinds}"
                registered = [args[0] for t, args in got if t == "on_register"]
                assert registered == callee_order, \
                    f"registration {rid}: on_register order {registered} != list_callees order {callee_order}; " \
                    f"events {kinds}"
                seen = set()
                for t, args in got[1:-1]:
                    if t == "on_register":
                        seen.add(args[0])
                    else:
                        assert t == "on_unregister" and args[0] in seen, \
                            f"registration {rid}: {t} for {args[0]} before its on_register: {got}"
        finally:
            await close_all(mon, *callees)

    run(main())


# ==========================================================================
# session meta API
# ==========================================================================

def test_session_count_list_get(router_factory):
    r = router_factory()

    async def main():
        s1, s2, s3 = [await connect(r, t, ser) for t, ser in [("ws", "json"), ("rs", "msgpack"), ("unix", "cbor")]]
        try:
            ids = sorted(sid(s) for s in (s1, s2, s3))

            async def call(p, *args):
                return await asyncio.wait_for(s1.call(p, *args), T)

            assert await call("wamp.session.count") == 3
            assert await call("wamp.session.count", ["anonymous"]) == 3
            assert await call("wamp.session.count", ["admin", "anonymous"]) == 3
            assert await call("wamp.session.count", ["admin"]) == 0
            assert sorted(await call("wamp.session.list")) == ids
            assert sorted(await call("wamp.session.list", ["anonymous"])) == ids
            assert await call("wamp.session.list", ["admin"]) == []

            j2 = s2.joined.result()
            d = await call("wamp.session.get", sid(s2))
            assert isinstance(d, dict), d
            assert d.get("session") == sid(s2) and d.get("authid") == j2.authid, d
            assert d.get("authrole") == "anonymous" and d.get("authmethod") == "anonymous", d
            assert d.get("authprovider") == j2.authprovider, d
            assert isinstance(d.get("transport"), dict), d
            assert (await meta_error(s1, "wamp.session.get", UNKNOWN_ID)).error == "wamp.error.no_such_session"

            await s3.close()
            deadline = time.monotonic() + T
            while await call("wamp.session.count") != 2:
                assert time.monotonic() < deadline, "session count did not drop after a session left"
                await asyncio.sleep(0.02)
            assert sorted(await call("wamp.session.list")) == sorted([sid(s1), sid(s2)])
            assert (await meta_error(s1, "wamp.session.get", sid(s3))).error == "wamp.error.no_such_session"
        finally:
            await close_all(s1, s2, s3)

    run(main())


async def left(s):
    return await asyncio.wait_for(asyncio.shield(s.left), T)


def test_session_kill(router_factory):
    r = router_factory()

    async def main():
        admin, t1, t2, t3 = [await connect(r) for _ in range(4)]
        try:
            assert await asyncio.wait_for(admin.call("wamp.session.kill", sid(t1)), T) is None
            d = await left(t1)
            assert d.reason == "wamp.close.killed" and not d.message, (d.reason, d.message)

            await asyncio.wait_for(admin.call("wamp.session.kill", sid(t2), reason="com.example.maintenance",
                                              message="back soon"), T)
            d = await left(t2)
            assert (d.reason, d.message) == ("com.example.maintenance", "back soon")

            assert (await meta_error(admin, "wamp.session.kill", sid(admin))).error == "wamp.error.no_such_session"
            assert (await meta_error(admin, "wamp.session.kill", UNKNOWN_ID)).error == "wamp.error.no_such_session"
            assert (await meta_error(admin, "wamp.session.kill", sid(t3), reason="not a uri")).error == \
                "wamp.error.invalid_uri"
            # nobody else was hurt
            assert admin.is_attached() and t3.is_attached()
            assert not t3.left.done()
            assert await asyncio.wait_for(t3.call("wamp.session.count"), T) == 2
        finally:
            await close_all(admin, t1, t2, t3)

    run(main())


def test_session_kill_by_authid_authrole_all(router_factory):
    r = router_factory()

    async def main():
        admin, x, y, z = [await connect(r) for _ in range(4)]
        p = q = None
        try:
            async def call(proc_, *args, **kw):
                return await asyncio.wait_for(admin.call(proc_, *args, **kw), T)

            assert await call("wamp.session.kill_by_authid", x.joined.result().authid) == [sid(x)]
            assert (await left(x)).reason == "wamp.close.killed"
            assert await call("wamp.session.kill_by_authid", admin.joined.result().authid) == [], \
                "kill_by_authid must never kill the caller"
            assert await call("wamp.session.kill_by_authid", "nobody-with-this-authid") == []
            assert await call("wamp.session.kill_by_authrole", "nobody") == 0
            assert (await meta_error(admin, "wamp.session.kill_by_authid", y.joined.result().authid,
                                     reason="bad reason")).error == "wamp.error.invalid_uri"
            assert not y.left.done()

            # everyone is "anonymous": all but the caller go
            assert await call("wamp.session.kill_by_authrole", "anonymous", reason="com.example.cleanup",
                              message="bye") == 2
            for s in (y, z):
                d = await left(s)
                assert (d.reason, d.message) == ("com.example.cleanup", "bye")
            assert admin.is_attached()

            p, q = await connect(r), await connect(r)
            assert (await meta_error(admin, "wamp.session.kill_all", reason="bad reason")).error == \
                "wamp.error.invalid_uri"
            assert await call("wamp.session.kill_all") == 2
            for s in (p, q):
                assert (await left(s)).reason == "wamp.close.killed"
            assert admin.is_attached()
            assert await call("wamp.session.count") == 1
            assert await call("wamp.session.kill_all") == 0
        finally:
            await close_all(admin, x, y, z, p, q)

    run(main())


def test_session_meta_events(router):
    async def main():
        mon = await connect(router)
        s = s2 = None
        try:
            joins, leaves = [], []
            await asyncio.wait_for(mon.subscribe(lambda *a: joins.append(a), "wamp.session.on_join"), T)
            await asyncio.wait_for(mon.subscribe(lambda *a: leaves.append(a), "wamp.session.on_leave"), T)
            s = await connect(router, "rs", "msgpack")
            j = s.joined.result()
            await wait_until(lambda: any(a and isinstance(a[0], dict) and a[0].get("session") == j.session
                                         for a in joins), what="on_join event")
            (details,) = [a for a in joins if isinstance(a[0], dict) and a[0].get("session") == j.session][0]
            assert details.get("authid") == j.authid and details.get("authrole") == "anonymous", details
            assert details.get("authmethod") == "anonymous" and details.get("authprovider") == j.authprovider, \
                details
            assert isinstance(details.get("transport"), dict), details

            await s.close()
            await wait_until(lambda: any(a[0] == j.session for a in leaves), what="on_leave event")
            assert [a for a in leaves if a[0] == j.session] == [(j.session, j.authid, "anonymous")], leaves

            # an abrupt disconnect is a leave too
            s2 = await connect(router)
            j2 = s2.joined.result()
            s2.abort_transport()
            await wait_until(lambda: any(a[0] == j2.session for a in leaves), what="on_leave after abort")
            assert [a for a in leaves if a[0] == j2.session] == [(j2.session, j2.authid, "anonymous")], leaves
        finally:
            await close_all(mon, s, s2)

    run(main())
