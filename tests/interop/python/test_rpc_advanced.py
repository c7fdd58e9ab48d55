"""Advanced-profile RPC (issue 3) with Autobahn|Python and raw JSON clients.

Shared registrations (invocation policies, concurrency cap, call queue),
pattern-based registrations, caller identification, progressive call results
and invocations, call timeouts, call canceling, the WELCOME feature list and
the reserved ``wamp.`` namespace. The meta API is in test_rpc_meta.py.

Autobahn|Python 26 cannot send everything these features need (no
``disclose_me``, no ``least_loaded``, no ``forward_timeout`` /
``disclose_caller``, no cancel mode, no progressive call invocations), so
those tests use ``wamplib.Peer``: a raw JSON WebSocket session that announces exactly
the features a test wants and records every message it receives.
"""

import asyncio
import time
import uuid

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions, RegisterOptions

from wamplib import (ABORT, ALL_CALLEE, ALL_CALLER, CALL, CANCEL, ERROR, INTERRUPT, INVOCATION, LOOSE_REALM,
                     PCI_CALLEE, PCI_CALLER, PUBLISH, QUIET, REGISTER, RESULT, YIELD, Peer, T, close_all,
                     callees_known, close_peers, connect, registered, registered_on, run, unique_uri,
                     wait_until)

# a short call timeout (ms) and the generous upper bound for when its ERROR must be there (s)
SHORT_MS = 300
LATE_S = 3.0


def proc(tag="p"):
    return unique_uri("com.example.adv", tag)


# --------------------------------------------------------------------------
# predicates for Peer.next / Peer.quiet
# --------------------------------------------------------------------------

def is_inv(m):
    return m[0] == INVOCATION


def is_interrupt(m):
    return m[0] == INTERRUPT


def answers_call(rid):
    """RESULT or ERROR for CALL request `rid`."""
    return lambda m: (m[0] == RESULT and m[1] == rid) or (m[0] == ERROR and m[1] == CALL and m[2] == rid)


def error_uri(m):
    assert m[0] == ERROR, f"expected ERROR, got {m!r}"
    return m[4]


# ==========================================================================
# 1. shared registrations
# ==========================================================================

def test_shared_registration_same_id_and_policy_conflicts(router):
    async def main():
        a, b, c = [await connect(router) for _ in range(3)]
        try:
            name = proc()
            ra = await asyncio.wait_for(a.register(lambda: "a", name, options=RegisterOptions(invoke="roundrobin")), T)
            rb = await asyncio.wait_for(b.register(lambda: "b", name, options=RegisterOptions(invoke="roundrobin")), T)
            assert ra.id == rb.id, f"callees of one shared registration must share its id: {ra.id} != {rb.id}"

            # another policy -> refused, the message names both policies
            with pytest.raises(ApplicationError) as ei:
                await asyncio.wait_for(c.register(lambda: "c", name, options=RegisterOptions(invoke="random")), T)
            assert ei.value.error == "wamp.error.procedure_already_exists", ei.value
            msg = ei.value.args[0] if ei.value.args else ""
            assert "roundrobin" in msg and "random" in msg, f"message should name both policies: {msg!r}"
            # default policy (single) against a shared one -> refused
            with pytest.raises(ApplicationError) as ei:
                await asyncio.wait_for(c.register(lambda: "c", name), T)
            assert ei.value.error == "wamp.error.procedure_already_exists", ei.value
            msg = ei.value.args[0] if ei.value.args else ""
            assert "roundrobin" in msg and "single" in msg, f"message should name both policies: {msg!r}"
            # the same session twice, same policy -> refused
            with pytest.raises(ApplicationError) as ei:
                await asyncio.wait_for(a.register(lambda: "a2", name, options=RegisterOptions(invoke="roundrobin")), T)
            assert ei.value.error == "wamp.error.procedure_already_exists", ei.value

            # an existing 'single' registration refuses every second callee
            single = proc("single")
            await asyncio.wait_for(a.register(lambda: "only", single), T)
            for policy in ("single", "roundrobin", "first"):
                with pytest.raises(ApplicationError) as ei:
                    await asyncio.wait_for(b.register(lambda: "no", single, options=RegisterOptions(invoke=policy)), T)
                assert ei.value.error == "wamp.error.procedure_already_exists", (policy, ei.value)

            # the same URI with another match policy is a different registration
            rp = await asyncio.wait_for(
                c.register(lambda: "p", name, options=RegisterOptions(match="prefix", invoke="first")), T)
            assert rp.id != ra.id
            got = [await asyncio.wait_for(c.call(name), T) for _ in range(4)]
            assert sorted(got) == ["a", "a", "b", "b"], f"exact calls must go to the shared registration: {got}"
            assert await asyncio.wait_for(c.call(single), T) == "only"
        finally:
            await close_all(a, b, c)

    run(main())


def test_roundrobin_distribution(rpc_nodes):
    """Callees on n0, n1 and n2, the caller on n1: in a cluster the caller's node
    cycles over the callees of every node in the order it learned of them."""
    async def main():
        callees = [await connect(n) for n in rpc_nodes]
        caller = await connect(rpc_nodes[1])
        try:
            name = proc("rr")
            regs = []
            for i, (tag, s) in enumerate(zip("abc", callees)):
                regs.append(await asyncio.wait_for(
                    s.register(lambda tag=tag: tag, name, options=RegisterOptions(invoke="roundrobin")), T))
                await callees_known(caller, name, i + 1)
            if len(set(map(id, rpc_nodes))) == 1:
                # one registration (ids are per node in a cluster)
                assert len({r.id for r in regs}) == 1
            got = [await asyncio.wait_for(caller.call(name), T) for _ in range(12)]
            assert got == list("abc") * 4, f"roundrobin must cycle in registration order: {got}"
            # b leaves the registration: the cycle continues over a and c
            await asyncio.wait_for(regs[1].unregister(), T)
            got = [await asyncio.wait_for(caller.call(name), T) for _ in range(6)]
            assert set(got) == {"a", "c"} and len(set(got[0::2])) == 1 and len(set(got[1::2])) == 1, \
                f"roundrobin over a, c after b unregistered: {got}"
        finally:
            await close_all(caller, *callees)

    run(main())


@pytest.mark.parametrize("policy", ["first", "last"])
def test_first_last_hot_standby(router, policy):
    async def main():
        callees = [await connect(router) for _ in range(3)]
        extra = await connect(router)
        caller = await connect(router)
        try:
            name = proc(policy)
            opts = RegisterOptions(invoke=policy)
            regs = {}
            for tag, s in zip("abc", callees):
                regs[tag] = await asyncio.wait_for(s.register(lambda tag=tag: tag, name, options=opts), T)

            async def calls(n=5):
                return [await asyncio.wait_for(caller.call(name), T) for _ in range(n)]

            primary, second, third = ("a", "b", "c") if policy == "first" else ("c", "b", "a")
            assert await calls() == [primary] * 5
            # the primary unregisters: the next one in registration order takes over
            await asyncio.wait_for(regs[primary].unregister(), T)
            assert await calls() == [second] * 5
            # that one's session leaves
            await callees["abc".index(second)].close()
            assert await calls() == [third] * 5
            # a newly registered callee goes to the end of the order
            await asyncio.wait_for(extra.register(lambda: "d", name, options=opts), T)
            assert await calls() == [third if policy == "first" else "d"] * 5
        finally:
            await close_all(caller, extra, *callees)

    run(main())


@pytest.mark.parametrize("policy", ["first", "last"])
def test_first_last_skip_callee_at_capacity(router, policy):
    """first/last pick the first/last callee that has spare capacity."""

    async def main():
        primary = await connect(router)
        standby = await connect(router)
        caller = await connect(router)
        try:
            name = proc("cap")
            release = asyncio.Event()

            async def busy():
                await release.wait()
                return "primary"

            popts = RegisterOptions(invoke=policy, concurrency=1)
            sopts = RegisterOptions(invoke=policy)
            if policy == "first":
                await asyncio.wait_for(primary.register(busy, name, options=popts), T)
                await asyncio.wait_for(standby.register(lambda: "standby", name, options=sopts), T)
            else:
                await asyncio.wait_for(standby.register(lambda: "standby", name, options=sopts), T)
                await asyncio.wait_for(primary.register(busy, name, options=popts), T)
            held = asyncio.ensure_future(caller.call(name))
            await asyncio.sleep(0.1)
            assert not held.done()
            # the primary is at its cap of 1: the standby answers
            assert await asyncio.wait_for(caller.call(name), T) == "standby"
            assert await asyncio.wait_for(caller.call(name), T) == "standby"
            release.set()
            assert await asyncio.wait_for(held, T) == "primary"
            # capacity again: back to the primary
            assert await asyncio.wait_for(caller.call(name), T) == "primary"
        finally:
            await close_all(caller, primary, standby)

    run(main())


def test_random_distribution(router):
    async def main():
        callees = [await connect(router) for _ in range(3)]
        caller = await connect(router)
        try:
            name = proc("rnd")
            for tag, s in zip("abc", callees):
                await asyncio.wait_for(s.register(lambda tag=tag: tag, name,
                                                  options=RegisterOptions(invoke="random")), T)
            got = await asyncio.wait_for(asyncio.gather(*(caller.call(name) for _ in range(300))), 20)
            counts = {t: got.count(t) for t in "abc"}
            assert all(n >= 20 for n in counts.values()), f"random must spread calls over every callee: {counts}"
            assert max(counts.values()) < 300
            # not a disguised round robin: some callee is picked twice in a row
            assert any(x == y for x, y in zip(got, got[1:])), f"sequence looks cyclic, not random: {got[:30]}"
        finally:
            await close_all(caller, *callees)

    run(main())


def test_least_loaded(router):
    """Raw callees (Autobahn|Python refuses invoke='least_loaded'): calls go to
    the callee with the fewest calls in flight."""

    async def main():
        A = await Peer.join(router, callee=ALL_CALLEE)
        B = await Peer.join(router, callee=ALL_CALLEE)
        caller = await connect(router)
        try:
            name = proc("ll")
            ra = await A.register(name, {"invoke": "least_loaded"})
            rb = await B.register(name, {"invoke": "least_loaded"})
            assert ra == rb
            peers = {"A": A, "B": B}
            held = {"A": [], "B": []}
            futs = []

            async def fire(i):
                futs.append(asyncio.ensure_future(caller.call(name, i)))
                deadline = time.monotonic() + T
                while True:
                    for tag, p in peers.items():
                        for m in list(p.unread):
                            if is_inv(m):
                                p.unread.remove(m)
                                assert m[4] == [i], f"invocation for call {i} carries {m!r}"
                                held[tag].append(m[1])
                                return tag
                    assert time.monotonic() < deadline, f"call {i} reached no callee"
                    await asyncio.sleep(0.005)

            # nobody answers: the load alternates
            first = [await fire(i) for i in range(6)]
            assert first.count("A") == 3 and first.count("B") == 3, f"6 unanswered calls: {first}"
            # B finishes its calls, A still holds 3
            for inv in held["B"]:
                await B.send([YIELD, inv, {}, ["B"]])
            held["B"].clear()
            await wait_until(lambda: sum(f.done() for f in futs) == 3, what="B's 3 results")
            nxt = [await fire(i) for i in range(6, 9)]
            assert nxt == ["B", "B", "B"], f"with A holding 3 calls and B idle, calls must go to B: {nxt}"
            for tag, p in peers.items():
                for inv in held[tag]:
                    await p.send([YIELD, inv, {}, [tag]])
            results = await asyncio.wait_for(asyncio.gather(*futs), T)
            assert results.count("A") == 3 and results.count("B") == 6, results
        finally:
            await close_all(caller)
            await close_peers(A, B)

    run(main())


# ==========================================================================
# 2. concurrency cap and call queue
# ==========================================================================

def _blocking_handler(release, started, stats):
    async def handler(i):
        stats["running"] += 1
        stats["max"] = max(stats["max"], stats["running"])
        started.append(i)
        try:
            await release.wait()
        finally:
            stats["running"] -= 1
        return i

    return handler


def test_concurrency_cap_queues_calls_in_order(router):
    async def main():
        callee = await connect(router)
        caller = await connect(router)
        try:
            name = proc("conc")
            release, started, stats = asyncio.Event(), [], {"running": 0, "max": 0}
            await asyncio.wait_for(callee.register(_blocking_handler(release, started, stats), name,
                                                   options=RegisterOptions(concurrency=2)), T)
            calls = [asyncio.ensure_future(caller.call(name, i)) for i in range(5)]
            await wait_until(lambda: len(started) >= 2, what="2 invocations")
            await asyncio.sleep(QUIET)
            assert started == [0, 1], f"concurrency=2 but invocations started: {started}"
            assert not any(c.done() for c in calls)
            release.set()
            results = await asyncio.wait_for(asyncio.gather(*calls), T)
            assert results == [0, 1, 2, 3, 4]
            assert started == [0, 1, 2, 3, 4], f"queued calls must be invoked in FIFO order: {started}"
            assert stats["max"] == 2, f"at most 2 invocations may run at once, saw {stats['max']}"
        finally:
            await close_all(callee, caller)

    run(main())


def test_call_queue_limit(router_factory):
    r = router_factory(realms=[dict(LOOSE_REALM, call_queue_limit=2)])

    async def main():
        callee = await connect(r)
        caller = await connect(r)
        try:
            name = proc("qlim")
            release, started, stats = asyncio.Event(), [], {"running": 0, "max": 0}
            await asyncio.wait_for(callee.register(_blocking_handler(release, started, stats), name,
                                                   options=RegisterOptions(concurrency=1)), T)
            calls = [asyncio.ensure_future(caller.call(name, i)) for i in range(3)]  # 1 running + 2 queued
            await wait_until(lambda: len(started) == 1, what="first invocation")
            with pytest.raises(ApplicationError) as ei:
                await asyncio.wait_for(caller.call(name, 3), T)
            assert ei.value.error == "wamp.error.no_available_callee", ei.value
            assert ei.value.args and isinstance(ei.value.args[0], str) and ei.value.args[0]
            release.set()
            assert await asyncio.wait_for(asyncio.gather(*calls), T) == [0, 1, 2]
            assert started == [0, 1, 2], f"the refused call must never run: {started}"
            assert await asyncio.wait_for(caller.call(name, 4), T) == 4
        finally:
            await close_all(callee, caller)

    run(main())


def test_queued_call_times_out(router):
    async def main():
        callee = await connect(router)
        caller = await connect(router)
        try:
            name = proc("qto")
            release, started, stats = asyncio.Event(), [], {"running": 0, "max": 0}
            await asyncio.wait_for(callee.register(_blocking_handler(release, started, stats), name,
                                                   options=RegisterOptions(concurrency=1)), T)
            first = asyncio.ensure_future(caller.call(name, 0))
            await wait_until(lambda: started == [0], what="first invocation")
            t0 = time.monotonic()
            with pytest.raises(ApplicationError) as ei:
                await asyncio.wait_for(caller.call(name, 1, options=CallOptions(timeout=SHORT_MS)), T)
            took = time.monotonic() - t0
            assert ei.value.error == "wamp.error.timeout", ei.value
            assert SHORT_MS / 1000 * 0.8 <= took <= LATE_S, f"queued call timed out after {took:.3f}s"
            release.set()
            assert await asyncio.wait_for(first, T) == 0
            await asyncio.sleep(0.1)
            assert started == [0], f"the timed-out call must not be invoked later: {started}"
            assert await asyncio.wait_for(caller.call(name, 2), T) == 2
        finally:
            await close_all(callee, caller)

    run(main())


# ==========================================================================
# 3. pattern-based registrations
# ==========================================================================

def _pattern_handler(n):
    def h(*args, details):
        return [n, details.procedure]

    return h


def test_pattern_precedence_spec_example(router):
    """The worked example of rpc_pattern_based_registration.md, under a unique
    first URI component."""

    async def main():
        callee = await connect(router)
        caller = await connect(router)
        try:
            base = "x" + uuid.uuid4().hex[:10]
            regs = [
                (1, "a1.b2.c3.d4.e55", "exact"),
                (2, "a1.b2.c3", "prefix"),
                (3, "a1.b2.c3.d4", "prefix"),
                (4, "a1.b2..d4.e5", "wildcard"),
                (5, "a1.b2.c33..e5", "wildcard"),
                (6, "a1.b2..d4.e5..g7", "wildcard"),
                (7, "a1.b2..d4..f6.g7", "wildcard"),
            ]
            for n, uri, match in regs:
                await asyncio.wait_for(callee.register(_pattern_handler(n), f"{base}.{uri}",
                                                       options=RegisterOptions(match=match, details=True)), T)
            expect = [
                ("a1.b2.c3.d4.e55", 1),
                ("a1.b2.c3.d98.e74", 2),
                ("a1.b2.c3.d4.e325", 3),
                ("a1.b2.c55.d4.e5", 4),
                # The spec's table says 5 here ("no prefix match"), but its prefix section
                # defines prefix matching on the plain string (com.myapp.myobject1 matches
                # com.myapp.myobject1-mysubobject1), as Crossbar.io, Bondy and Nexus do. The two
                # cannot both hold; Switchyard follows the prefix section (docs/RPC.md), so the
                # prefix a1.b2.c3 matches a1.b2.c33... and wins over every wildcard.
                ("a1.b2.c33.d4.e5", 2),
                ("a1.b2.c88.d4.e5.f6.g7", 6),
                ("a1.b2.c3", 2),
            ]
            got = []
            for uri, _ in expect:
                n, procedure = await asyncio.wait_for(caller.call(f"{base}.{uri}"), T)
                got.append((uri, n))
                assert procedure == f"{base}.{uri}", \
                    f"INVOCATION.Details.procedure must be the called URI: {procedure!r} for {uri}"
            assert got == expect, f"(call, registration that answered) vs the spec's table:\n{got}\n{expect}"
            with pytest.raises(ApplicationError) as ei:
                await asyncio.wait_for(caller.call(f"{base}.a2.b2.c2.d2.e2"), T)
            assert ei.value.error == "wamp.error.no_such_procedure"
        finally:
            await close_all(callee, caller)

    run(main())


def test_prefix_and_wildcard_spec_examples(router):
    async def main():
        callee = await connect(router)
        caller = await connect(router)
        try:
            base = "x" + uuid.uuid4().hex[:10] + ".com.myapp"
            await asyncio.wait_for(callee.register(_pattern_handler("prefix"), f"{base}.myobject1",
                                                   options=RegisterOptions(match="prefix", details=True)), T)
            await asyncio.wait_for(callee.register(_pattern_handler("wildcard"), f"{base}..myprocedure1",
                                                   options=RegisterOptions(match="wildcard", details=True)), T)
            # Prefix matching is on the plain string (see test_pattern_precedence_spec_example).
            cases = [
                ("myobject1-mysubobject1", "prefix"),
                ("myobject1.myprocedure1", "prefix"),
                ("myobject1.mysubobject1.myprocedure1", "prefix"),
                ("myobject1", "prefix"),
                ("myobject2.myprocedure1", "wildcard"),
                ("myobjectX.myprocedure1", "wildcard"),
            ]
            for suffix, which in cases:
                uri = f"{base}.{suffix}"
                n, procedure = await asyncio.wait_for(caller.call(uri), T)
                assert (n, procedure) == (which, uri), f"{uri}: answered by {n} with procedure {procedure!r}"
            for suffix in ["myobject2", "myobject", "myobject2.myprocedure1.mysubprocedure1",
                           "myobject2.myprocedure2"]:
                with pytest.raises(ApplicationError) as ei:
                    await asyncio.wait_for(caller.call(f"{base}.{suffix}"), T)
                assert ei.value.error == "wamp.error.no_such_procedure", suffix
        finally:
            await close_all(callee, caller)

    run(main())


# ==========================================================================
# 4. caller identification
# ==========================================================================

def _who(*args, details):
    return {"caller": details.caller, "caller_authid": details.caller_authid,
            "caller_authrole": details.caller_authrole}


NOBODY = {"caller": None, "caller_authid": None, "caller_authrole": None}


def test_disclose_me(router):
    async def main():
        callee = await connect(router)
        ab_caller = await connect(router)
        raw_caller = await Peer.join(router, caller=ALL_CALLER)
        try:
            name = proc("who")
            await asyncio.wait_for(callee.register(_who, name, options=RegisterOptions(details=True)), T)
            rid = await raw_caller.call(name, options={"disclose_me": True})
            r = await raw_caller.next(answers_call(rid))
            assert r[0] == RESULT, r
            assert r[3][0] == {"caller": raw_caller.session_id, "caller_authid": raw_caller.details["authid"],
                               "caller_authrole": "anonymous"}, r
            # not asked: nothing disclosed
            rid = await raw_caller.call(name)
            r = await raw_caller.next(answers_call(rid))
            assert r[3][0] == NOBODY, f"caller disclosed without disclose_me: {r!r}"
            assert await asyncio.wait_for(ab_caller.call(name), T) == NOBODY
        finally:
            await close_all(callee, ab_caller)
            await close_peers(raw_caller)

    run(main())


def test_register_disclose_caller(router):
    async def main():
        callee = await Peer.join(router, callee=ALL_CALLEE)
        caller = await connect(router)
        try:
            me = caller.joined.result()
            name = proc("dc")
            await callee.register(name, {"disclose_caller": True})
            await callee.register(name + ".plain")
            for uri, disclosed in [(name, True), (name + ".plain", False)]:
                fut = asyncio.ensure_future(caller.call(uri))
                inv = await callee.next(is_inv)
                d = inv[3]
                if disclosed:
                    assert d.get("caller") == me.session and d.get("caller_authid") == me.authid and \
                        d.get("caller_authrole") == "anonymous", f"disclose_caller registration: {d!r}"
                else:
                    assert not {"caller", "caller_authid", "caller_authrole"} & set(d), f"disclosed: {d!r}"
                await callee.send([YIELD, inv[1], {}, ["ok"]])
                assert await asyncio.wait_for(fut, T) == "ok"
        finally:
            await close_all(caller)
            await close_peers(callee)

    run(main())


def test_realm_disclose_caller_always(router_factory):
    r = router_factory(realms=[dict(LOOSE_REALM, disclose_caller="always")])

    async def main():
        callee = await connect(r)
        caller = await connect(r)
        try:
            me = caller.joined.result()
            name = proc("always")
            await asyncio.wait_for(callee.register(_who, name, options=RegisterOptions(details=True)), T)
            assert await asyncio.wait_for(caller.call(name), T) == {
                "caller": me.session, "caller_authid": me.authid, "caller_authrole": "anonymous"}
        finally:
            await close_all(callee, caller)

    run(main())


def test_realm_disclose_caller_never(router_factory):
    r = router_factory(realms=[dict(LOOSE_REALM, disclose_caller="never")])

    async def main():
        ab_callee = await connect(r)
        raw_callee = await Peer.join(r, callee=ALL_CALLEE)
        caller = await Peer.join(r, caller=ALL_CALLER)
        try:
            name = proc("never")
            seen = []

            def h(*args, details):
                seen.append(details.caller)
                return _who(details=details)

            await asyncio.wait_for(ab_callee.register(h, name, options=RegisterOptions(details=True)), T)
            rid = await caller.call(name, options={"disclose_me": True})
            r_ = await caller.next(answers_call(rid))
            assert error_uri(r_) == "wamp.error.option_disallowed.disclose_me", r_
            assert seen == [], "a refused call must not reach the callee"
            rid = await caller.call(name)
            r_ = await caller.next(answers_call(rid))
            assert r_[0] == RESULT and r_[3][0] == NOBODY, r_
            # disclose_caller on REGISTER is overruled too
            await raw_callee.register(name + ".dc", {"disclose_caller": True})
            rid = await caller.call(name + ".dc")
            inv = await raw_callee.next(is_inv)
            assert not {"caller", "caller_authid", "caller_authrole"} & set(inv[3]), inv
            await raw_callee.send([YIELD, inv[1], {}, []])
            assert (await caller.next(answers_call(rid)))[0] == RESULT
        finally:
            await close_all(ab_callee)
            await close_peers(raw_callee, caller)

    run(main())


# ==========================================================================
# 5. progressive call results
# ==========================================================================

def test_progressive_call_results_autobahn(rpc_nodes):
    callee_node, caller_node, _ = rpc_nodes

    async def main():
        callee = await connect(callee_node, "rs", "msgpack")
        caller = await connect(caller_node, "ws", "cbor")
        try:
            name = proc("prog")
            had_progress = []

            async def h(n, details):
                had_progress.append(details.progress is not None)
                for i in range(n):
                    details.progress(i, part=i * 10)
                    await asyncio.sleep(0.005)
                return "final"

            await asyncio.wait_for(callee.register(h, name, options=RegisterOptions(details=True)), T)
            await registered(caller, name)
            events = []
            res = await asyncio.wait_for(
                caller.call(name, 5, options=CallOptions(on_progress=lambda *a, **kw: events.append((a, kw)))), T)
            events.append(res)
            assert had_progress == [True], "callee must get details.progress when the caller asked for progress"
            assert events == [((i,), {"part": i * 10}) for i in range(5)] + ["final"], events
            # without on_progress the callee gets no progress callable, the caller the final result
            had_progress.clear()
            assert await asyncio.wait_for(caller.call(name, 0), T) == "final"
            assert had_progress == [False]
        finally:
            await close_all(callee, caller)

    run(main())


@pytest.mark.parametrize("asked", [True, False], ids=["receive_progress", "not-asked"])
def test_progressive_yields_raw(router, asked):
    """Raw callee sends 3 progressive YIELDs and a final one: forwarded in order
    if the caller asked for progress, otherwise dropped."""

    async def main():
        callee = await Peer.join(router, callee=ALL_CALLEE)
        caller = await Peer.join(router, caller=ALL_CALLER)
        try:
            name = proc("py")
            await callee.register(name)
            rid = await caller.call(name, [], {"receive_progress": True} if asked else {})
            inv = await callee.next(is_inv)
            assert bool(inv[3].get("receive_progress")) is asked, f"INVOCATION.Details {inv[3]!r}"
            for i in range(3):
                await callee.send([YIELD, inv[1], {"progress": True}, [i]])
            await callee.send([YIELD, inv[1], {}, ["done"]])
            final = await caller.next(lambda m: m[0] == RESULT and m[1] == rid and not m[2].get("progress"),
                                      what="final RESULT")
            assert final[3] == ["done"], final
            await asyncio.sleep(QUIET)
            mine = [m for m in caller.log if answers_call(rid)(m)]
            if asked:
                assert mine == [[RESULT, rid, {"progress": True}, [0]], [RESULT, rid, {"progress": True}, [1]],
                                [RESULT, rid, {"progress": True}, [2]], final], mine
            else:
                assert mine == [final], f"caller did not ask for progress but got: {mine!r}"
                assert "progress" not in final[2] or final[2]["progress"] is False
        finally:
            await close_peers(callee, caller)

    run(main())


# ==========================================================================
# 6. progressive call invocations (raw clients)
# ==========================================================================

def test_progressive_call_invocation_killed(router):
    """A progressive invocation canceled in mode kill: later chunks from the
    caller go nowhere, progressive results are dropped, and the callee's
    ERROR answering the INTERRUPT reaches the caller as wamp.error.canceled."""

    async def main():
        callee = await Peer.join(router, callee=PCI_CALLEE)
        caller = await Peer.join(router, caller=PCI_CALLER)
        try:
            name = proc("pcikill")
            await callee.register(name)
            rid = caller.req()
            await caller.call(name, ["chunk", 0], {"progress": True, "receive_progress": True}, rid=rid)
            inv_id = (await callee.next(is_inv))[1]
            await caller.send([CANCEL, rid, {"mode": "kill"}])
            i = await callee.next(is_interrupt)
            assert i[1] == inv_id and i[2].get("mode") == "kill", i
            await caller.call(name, ["chunk", 1], {"progress": True}, rid=rid)
            await callee.quiet(is_inv, "a chunk after the kill")
            await callee.send([YIELD, inv_id, {"progress": True}, ["partial"]])
            await caller.quiet(answers_call(rid), "a progressive result of a call being killed")
            await callee.send([ERROR, INVOCATION, inv_id, {}, "com.example.stopped", ["bye"]])
            r = await caller.next(answers_call(rid))
            assert r[0] == ERROR and r[4] == "wamp.error.canceled" and r[5] == ["bye"], r
        finally:
            await close_peers(callee, caller)

    run(main())


def test_progressive_call_invocations(rpc_nodes):
    callee_node, caller_node, _ = rpc_nodes

    async def main():
        callee = await Peer.join(callee_node, callee=PCI_CALLEE)
        caller = await Peer.join(caller_node, caller=PCI_CALLER)
        try:
            name = proc("pci")
            reg = await callee.register(name)
            await registered_on(caller_node, name)
            rid = caller.req()
            await caller.call(name, ["chunk", 0], {"progress": True, "receive_progress": True}, rid=rid)
            inv0 = await callee.next(is_inv)
            assert inv0[2] == reg and inv0[4] == ["chunk", 0], inv0
            assert inv0[3].get("progress") is True, f"first chunk must carry details.progress: {inv0!r}"
            inv_id = inv0[1]
            # progressive results may flow back while the caller still sends
            await callee.send([YIELD, inv_id, {"progress": True}, ["got", 0]])
            r = await caller.next(answers_call(rid))
            assert r == [RESULT, rid, {"progress": True}, ["got", 0]], r
            await caller.call(name, ["chunk", 1], {"progress": True}, rid=rid)
            await caller.call(name, ["chunk", 2], {"progress": True}, rid=rid)
            await caller.call(name, ["chunk", 3], {}, rid=rid)
            invs = [await callee.next(is_inv) for _ in range(3)]
            assert [i[1] for i in invs] == [inv_id] * 3, f"all chunks must use the same INVOCATION id: {invs!r}"
            assert [i[4] for i in invs] == [["chunk", 1], ["chunk", 2], ["chunk", 3]], invs
            assert [bool(i[3].get("progress")) for i in invs] == [True, True, False], invs
            await callee.send([YIELD, inv_id, {}, ["total", 4]])
            r = await caller.next(answers_call(rid))
            assert r[0] == RESULT and r[3] == ["total", 4] and not r[2].get("progress"), r
            await callee.quiet(is_inv, "INVOCATION after the final chunk")
            await caller.quiet(answers_call(rid), "reply after the final RESULT")
        finally:
            await close_peers(callee, caller)

    run(main())


def test_progressive_invocations_stick_to_one_callee(router):
    async def main():
        A = await Peer.join(router, callee=PCI_CALLEE)
        B = await Peer.join(router, callee=PCI_CALLEE)
        caller = await Peer.join(router, caller=PCI_CALLER)
        try:
            name = proc("pcirr")
            await A.register(name, {"invoke": "roundrobin"})
            await B.register(name, {"invoke": "roundrobin"})
            rid = caller.req()
            for i in range(4):
                await caller.call(name, [i], {"progress": True} if i < 3 else {}, rid=rid)
            invs = [await A.next(is_inv) for _ in range(4)]
            assert [i[4] for i in invs] == [[0], [1], [2], [3]], invs
            await B.quiet(is_inv, "chunk of a progressive call on a second callee")
            await A.send([YIELD, invs[0][1], {}, ["A"]])
            assert (await caller.next(answers_call(rid)))[3] == ["A"]
            # round robin continues with B
            rid2 = await caller.call(name, [9])
            inv = await B.next(is_inv)
            await B.send([YIELD, inv[1], {}, ["B"]])
            assert (await caller.next(answers_call(rid2)))[3] == ["B"]
        finally:
            await close_peers(A, B, caller)

    run(main())


def test_progressive_call_without_caller_feature_aborts(router):
    async def main():
        callee = await Peer.join(router, callee=PCI_CALLEE)
        caller = await Peer.join(router, caller=ALL_CALLER)  # no progressive_call_invocations
        try:
            name = proc("pcix")
            await callee.register(name)
            await caller.call(name, [1], {"progress": True})
            m = await caller.next(lambda m: m[0] in (ABORT, ERROR, RESULT), what="ABORT")
            assert m[0] == ABORT and m[2] == "wamp.error.protocol_violation", \
                f"CALL progress=true without the caller feature must abort the session: {m!r}"
            await callee.quiet(is_inv, "INVOCATION for an aborted caller")
        finally:
            await close_peers(callee, caller)

    run(main())


@pytest.mark.parametrize("callee_kind", ["autobahn", "raw-without-call_canceling"])
def test_progressive_call_to_callee_without_feature(router, callee_kind):
    async def main():
        ab = raw = None
        caller = await Peer.join(router, caller=PCI_CALLER)
        try:
            name = proc("pcinf")
            invoked = []
            if callee_kind == "autobahn":
                ab = await connect(router)
                await asyncio.wait_for(ab.register(lambda *a: invoked.append(a) or "ok", name), T)
            else:
                raw = await Peer.join(router, callee=dict(ALL_CALLEE, call_canceling=False,
                                                          progressive_call_invocations=True))
                await raw.register(name)
            rid = await caller.call(name, [1], {"progress": True})
            r = await caller.next(answers_call(rid))
            assert r[0] == ERROR and r[4] == "wamp.error.feature_not_supported", r
            if raw:
                await raw.quiet(is_inv, "INVOCATION of a progressive call")
            else:
                await asyncio.sleep(QUIET)
                assert invoked == []
            # the caller is still fine: a normal call works
            rid = await caller.call(name, [2])
            if raw:
                inv = await raw.next(is_inv)
                assert "progress" not in inv[3], inv
                await raw.send([YIELD, inv[1], {}, ["ok"]])
            r = await caller.next(answers_call(rid))
            assert r[0] == RESULT and r[3] == ["ok"], r
        finally:
            await close_all(ab)
            await close_peers(raw, caller)

    run(main())


def test_progressive_continuation_after_call_finished_is_discarded(router):
    async def main():
        callee = await Peer.join(router, callee=PCI_CALLEE)
        caller = await Peer.join(router, caller=PCI_CALLER)
        try:
            name = proc("pcid")
            await callee.register(name)
            rid = caller.req()
            await caller.call(name, [0], {"progress": True}, rid=rid)
            inv = await callee.next(is_inv)
            await callee.send([ERROR, INVOCATION, inv[1], {}, "com.example.stop", ["enough"]])
            r = await caller.next(answers_call(rid))
            assert r[0] == ERROR and r[4] == "com.example.stop" and r[5] == ["enough"], r
            # late continuations of the finished call: silently discarded
            await caller.call(name, [1], {"progress": True}, rid=rid)
            await caller.call(name, [2], {}, rid=rid)
            await callee.quiet(is_inv, "INVOCATION for a continuation of a finished call")
            await caller.quiet(lambda m: m[0] == ABORT or answers_call(rid)(m), "reply to a discarded continuation")
            assert caller.closed is None
            # the session is still usable
            rid2 = await caller.call(name, [3])
            inv = await callee.next(is_inv)
            await callee.send([YIELD, inv[1], {}, ["fine"]])
            r = await caller.next(answers_call(rid2))
            assert r[0] == RESULT and r[3] == ["fine"], r
        finally:
            await close_peers(callee, caller)

    run(main())


def test_progressive_caller_request_id_gap_is_a_violation(router):
    """rpc_progressive_call_invocations.md, "Verification of CALL Request IDs": for
    a caller that announced progressive_call_invocations, a CALL whose request
    id is more than one above the highest so far MUST be a protocol violation.
    This caller sends nothing but CALLs, so ids 1, 2, 4 have a gap under any
    reading of the watermark rule."""

    async def main():
        callee = await Peer.join(router, callee=PCI_CALLEE)
        caller = await Peer.join(router, caller=PCI_CALLER)
        try:
            name = proc("gap")
            await callee.register(name)
            for rid in (1, 2):
                await caller.call(name, [rid], rid=rid)
                inv = await callee.next(is_inv)
                await callee.send([YIELD, inv[1], {}, [rid]])
                assert (await caller.next(answers_call(rid)))[3] == [rid]
            await caller.call(name, [4], rid=4)
            await asyncio.sleep(QUIET)
            routed = [m for m in callee.unread if is_inv(m)]
            for inv in routed:  # answer it, so a router that routed the call replies at once
                await callee.send([YIELD, inv[1], {}, ["routed"]])
            m = await caller.next(lambda m: m[0] == ABORT or answers_call(4)(m), what="ABORT")
            assert m[0] == ABORT and m[2] == "wamp.error.protocol_violation", \
                f"CALL id 4 after 2 (a gap) must abort the session, got {m!r} (callee invoked: {bool(routed)})"
        finally:
            await close_peers(callee, caller)

    run(main())


# ==========================================================================
# 7. call timeouts
# ==========================================================================

def test_call_timeout_interrupts_autobahn_callee(router):
    async def main():
        loop = asyncio.get_running_loop()
        callee = await connect(router)
        caller = await connect(router)
        try:
            name = proc("to")
            invoked, cancelled = loop.create_future(), loop.create_future()

            async def slow():
                invoked.set_result(True)
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    cancelled.set_result(True)
                    raise
                return "too late"

            await asyncio.wait_for(callee.register(slow, name), T)
            await asyncio.wait_for(callee.register(lambda: "quick", name + ".quick"), T)
            t0 = time.monotonic()
            with pytest.raises(ApplicationError) as ei:
                await asyncio.wait_for(caller.call(name, options=CallOptions(timeout=SHORT_MS)), T)
            took = time.monotonic() - t0
            assert ei.value.error == "wamp.error.timeout", ei.value
            assert SHORT_MS / 1000 * 0.8 <= took <= LATE_S, f"timeout ERROR after {took:.3f}s"
            assert invoked.done()
            await asyncio.wait_for(cancelled, T)  # the INTERRUPT cancelled the handler's task
            assert await asyncio.wait_for(caller.call(name + ".quick", options=CallOptions(timeout=SHORT_MS)), T) \
                == "quick"
        finally:
            await close_all(callee, caller)

    run(main())


@pytest.mark.parametrize("canceling", [True, False], ids=["callee-cancels", "callee-no-canceling"])
def test_call_timeout_raw(router, canceling):
    """Dealer-side timeout: INTERRUPT mode killnowait if the callee supports
    canceling, nothing otherwise; the late YIELD is discarded."""

    async def main():
        callee = await Peer.join(router, callee=dict(ALL_CALLEE, call_canceling=canceling))
        caller = await Peer.join(router, caller=ALL_CALLER)
        try:
            name = proc("tor")
            await callee.register(name)
            t0 = time.monotonic()
            rid = await caller.call(name, [], {"timeout": SHORT_MS})
            inv = await callee.next(is_inv)
            assert "timeout" not in inv[3], f"the Dealer times the call itself: {inv!r}"
            r = await caller.next(answers_call(rid))
            took = time.monotonic() - t0
            assert error_uri(r) == "wamp.error.timeout", r
            assert SHORT_MS / 1000 * 0.8 <= took <= LATE_S, f"timeout ERROR after {took:.3f}s"
            if canceling:
                i = await callee.next(is_interrupt)
                assert i[1] == inv[1] and i[2].get("mode") == "killnowait", i
            else:
                await callee.quiet(is_interrupt, "INTERRUPT to a callee without call_canceling")
            await callee.send([YIELD, inv[1], {}, ["late"]])
            await caller.quiet(answers_call(rid), "second reply to a timed-out call")
            # both sessions stay usable
            await callee.register(name + ".more")
            assert callee.closed is None and caller.closed is None
        finally:
            await close_peers(callee, caller)

    run(main())


def test_forward_timeout(router):
    async def main():
        callee = await Peer.join(router, callee=dict(ALL_CALLEE, call_timeout=True))
        caller = await Peer.join(router, caller=ALL_CALLER)
        try:
            name = proc("fwd")
            await callee.register(name, {"forward_timeout": True})
            rid = await caller.call(name, [], {"timeout": SHORT_MS})
            inv = await callee.next(is_inv)
            assert inv[3].get("timeout") == SHORT_MS, \
                f"INVOCATION.Details.timeout must carry CALL.Options.timeout={SHORT_MS}: {inv[3]!r}"
            # the Dealer does not time the call: nothing happens for 3x the timeout
            await asyncio.sleep(3 * SHORT_MS / 1000)
            assert not [m for m in caller.log if answers_call(rid)(m)], caller.log
            assert not [m for m in callee.log if is_interrupt(m)], callee.log
            await callee.send([YIELD, inv[1], {}, ["answered"]])
            r = await caller.next(answers_call(rid))
            assert r[0] == RESULT and r[3] == ["answered"], r
        finally:
            await close_peers(callee, caller)

    run(main())


def test_timeout_zero_means_none(router):
    async def main():
        callee = await Peer.join(router, callee=ALL_CALLEE)
        caller = await Peer.join(router, caller=ALL_CALLER)
        try:
            name = proc("to0")
            await callee.register(name)
            rid = await caller.call(name, [], {"timeout": 0})
            inv = await callee.next(is_inv)
            await asyncio.sleep(QUIET)
            await callee.send([YIELD, inv[1], {}, ["ok"]])
            r = await caller.next(answers_call(rid))
            assert r[0] == RESULT and r[3] == ["ok"], r
        finally:
            await close_peers(callee, caller)

    run(main())


# ==========================================================================
# 8. call canceling
# ==========================================================================

async def _pending_call(router, callee_canceling=True):
    callee = await Peer.join(router, callee=dict(ALL_CALLEE, call_canceling=callee_canceling))
    caller = await Peer.join(router, caller=ALL_CALLER)
    name = proc("cx")
    await callee.register(name)
    rid = await caller.call(name, ["work"])
    inv = await callee.next(is_inv)
    return callee, caller, name, rid, inv[1]


def test_cancel_skip(router):
    async def main():
        callee, caller, name, rid, inv = await _pending_call(router)
        try:
            await caller.send([CANCEL, rid, {"mode": "skip"}])
            r = await caller.next(answers_call(rid))
            assert error_uri(r) == "wamp.error.canceled", r
            await callee.quiet(is_interrupt, "INTERRUPT in mode skip")
            await callee.send([YIELD, inv, {}, ["late"]])
            await caller.quiet(answers_call(rid), "reply after skip-cancel")
            await callee.register(name + ".alive")
        finally:
            await close_peers(callee, caller)

    run(main())


def test_cancel_killnowait(router):
    async def main():
        callee, caller, name, rid, inv = await _pending_call(router)
        try:
            await caller.send([CANCEL, rid, {"mode": "killnowait"}])
            r = await caller.next(answers_call(rid))
            assert error_uri(r) == "wamp.error.canceled", r
            i = await callee.next(is_interrupt)
            assert i[1] == inv and i[2].get("mode") == "killnowait", i
            await callee.send([ERROR, INVOCATION, inv, {}, "wamp.error.canceled", []])
            await caller.quiet(answers_call(rid), "reply after killnowait")
            await callee.register(name + ".alive")
        finally:
            await close_peers(callee, caller)

    run(main())


@pytest.mark.parametrize("answer", ["error", "result"])
def test_cancel_kill(router, answer):
    async def main():
        callee, caller, name, rid, inv = await _pending_call(router)
        try:
            await caller.send([CANCEL, rid, {"mode": "kill"}])
            i = await callee.next(is_interrupt)
            assert i[1] == inv and i[2].get("mode") == "kill", i
            await caller.quiet(answers_call(rid), "reply before the callee answered the kill")
            if answer == "error":
                await callee.send([ERROR, INVOCATION, inv, {}, "com.example.interrupted", ["stopped"]])
            else:
                await callee.send([YIELD, inv, {}, ["finished anyway"]])
            r = await caller.next(answers_call(rid))
            if answer == "error":
                # The caller canceled: wamp.error.canceled, whatever URI the
                # callee answered with; its args ride along.
                assert r[0] == ERROR and r[4] == "wamp.error.canceled" and r[5] == ["stopped"], r
            else:
                assert r[0] == RESULT and r[3] == ["finished anyway"], r
            await caller.quiet(answers_call(rid), "second reply")
        finally:
            await close_peers(callee, caller)

    run(main())


def test_cancel_kill_then_timeout_is_canceled(router):
    """A call canceled in mode kill whose timeout runs out before the callee
    answers the INTERRUPT ends as the caller asked: wamp.error.canceled, and
    the callee gets no second INTERRUPT."""

    async def main():
        callee = await Peer.join(router, callee=ALL_CALLEE)
        caller = await Peer.join(router, caller=ALL_CALLER)
        try:
            name = proc("killto")
            await callee.register(name)
            rid = await caller.call(name, ["work"], {"timeout": 400})
            inv = (await callee.next(is_inv))[1]
            await caller.send([CANCEL, rid, {"mode": "kill"}])
            i = await callee.next(is_interrupt)
            assert i[1] == inv and i[2].get("mode") == "kill", i
            r = await caller.next(answers_call(rid))
            assert error_uri(r) == "wamp.error.canceled", r
            await callee.quiet(is_interrupt, "a second INTERRUPT after the timeout")
            await callee.send([ERROR, INVOCATION, inv, {}, "com.example.late"])
            await caller.quiet(answers_call(rid), "second reply")
        finally:
            await close_peers(callee, caller)

    run(main())


def test_progressive_yields_from_a_callee_that_did_not_announce_them(router):
    """A callee that does not announce progressive_call_results (wampy.js) is
    asked for progress when its caller asked, and its progressive YIELDs are
    forwarded to that caller."""

    async def main():
        callee = await Peer.join(router, callee={"call_canceling": True})
        caller = await Peer.join(router, caller=ALL_CALLER)
        try:
            name = proc("noannounce")
            await callee.register(name)
            rid = await caller.call(name, [], {"receive_progress": True})
            inv = await callee.next(is_inv)
            assert inv[3].get("receive_progress") is True, inv
            await callee.send([YIELD, inv[1], {"progress": True}, ["p1"]])
            await callee.send([YIELD, inv[1], {}, ["done"]])
            r1 = await caller.next(answers_call(rid))
            assert r1[0] == RESULT and r1[2].get("progress") is True and r1[3] == ["p1"], r1
            r2 = await caller.next(answers_call(rid))
            assert r2[0] == RESULT and not r2[2].get("progress") and r2[3] == ["done"], r2
        finally:
            await close_peers(callee, caller)

    run(main())


@pytest.mark.parametrize("handler", ["reraise", "own_error"])
def test_cancel_kill_autobahn_callee(rpc_nodes, handler):
    """mode kill with an Autobahn|Python callee: the INTERRUPT cancels the
    handler, and Autobahn|Python answers with an ERROR (wamp.error.runtime_error
    when the handler lets the CancelledError through, or the handler's own
    ApplicationError). The caller asked to cancel, so it gets
    wamp.error.canceled (as from Crossbar.io), with the callee's args."""
    callee_node, caller_node, _ = rpc_nodes

    async def main():
        loop = asyncio.get_running_loop()
        callee = await connect(callee_node)
        caller = await Peer.join(caller_node, caller=ALL_CALLER)
        try:
            name = proc("abkill")
            invoked, cancelled = loop.create_future(), loop.create_future()

            async def slow():
                invoked.set_result(True)
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    cancelled.set_result(True)
                    if handler == "reraise":
                        raise
                    raise ApplicationError("com.example.aborted", "interrupted by the router")
                return "not interrupted"

            await asyncio.wait_for(callee.register(slow, name), T)
            await registered_on(caller_node, name)
            rid = await caller.call(name)
            await asyncio.wait_for(invoked, T)
            await caller.send([CANCEL, rid, {"mode": "kill"}])
            r = await caller.next(answers_call(rid))
            await asyncio.wait_for(cancelled, T)
            assert r[0] == ERROR and r[4] == "wamp.error.canceled", r
            if handler == "own_error":
                assert r[5] == ["interrupted by the router"], r
            await caller.quiet(answers_call(rid), "second reply")
        finally:
            await close_all(callee)
            await close_peers(caller)

    run(main())


@pytest.mark.parametrize("mode", ["kill", "killnowait"])
def test_cancel_callee_without_canceling_is_skip(router, mode):
    async def main():
        callee, caller, name, rid, inv = await _pending_call(router, callee_canceling=False)
        try:
            await caller.send([CANCEL, rid, {"mode": mode}])
            r = await caller.next(answers_call(rid))
            assert error_uri(r) == "wamp.error.canceled", r
            await callee.quiet(is_interrupt, "INTERRUPT to a callee without call_canceling")
            await callee.send([YIELD, inv, {}, ["late"]])
            await caller.quiet(answers_call(rid), "reply after skip")
            await callee.register(name + ".alive")
        finally:
            await close_peers(callee, caller)

    run(main())


def test_cancel_autobahn_caller_and_callee(rpc_nodes):
    """Autobahn|Python's future.cancel() sends CANCEL without a mode: the
    callee's handler is cancelled and both sessions carry on."""
    callee_node, caller_node, _ = rpc_nodes

    async def main():
        loop = asyncio.get_running_loop()
        callee = await connect(callee_node)
        caller = await connect(caller_node)
        try:
            name = proc("abcx")
            invoked, cancelled = loop.create_future(), loop.create_future()

            async def slow():
                invoked.set_result(True)
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    cancelled.set_result(True)
                    raise

            await asyncio.wait_for(callee.register(slow, name), T)
            await asyncio.wait_for(callee.register(lambda x: x + 1, name + ".inc"), T)
            await registered(caller, name + ".inc")
            fut = caller.call(name)
            await asyncio.wait_for(invoked, T)
            fut.cancel()
            await asyncio.wait_for(cancelled, T)
            assert fut.cancelled()
            assert await asyncio.wait_for(caller.call(name + ".inc", 1), T) == 2
        finally:
            await close_all(callee, caller)

    run(main())


@pytest.mark.parametrize("how", ["goodbye", "abrupt"])
def test_caller_leaving_interrupts_callee(rpc_nodes, how):
    callee_node, caller_node, _ = rpc_nodes

    async def main():
        callee = await Peer.join(callee_node, callee=ALL_CALLEE)
        caller = await connect(caller_node)
        try:
            name = proc("cl")
            await callee.register(name)
            await registered(caller, name)
            asyncio.ensure_future(caller.call(name)).add_done_callback(lambda f: f.cancelled() or f.exception())
            inv = await callee.next(is_inv)
            if how == "goodbye":
                await caller.close()
            else:
                caller.abort_transport()
            i = await callee.next(is_interrupt)
            assert i[1] == inv[1] and i[2].get("mode") == "killnowait", i
            await callee.send([ERROR, INVOCATION, inv[1], {}, "wamp.error.canceled", []])
            await callee.register(name + ".alive")
        finally:
            await close_all(caller)
            await close_peers(callee)

    run(main())


def test_callee_leaving_mid_call_of_shared_registration(rpc_nodes):
    """Callees on n0 and n1, the caller on n2."""
    async def main():
        loop = asyncio.get_running_loop()
        a, b = await connect(rpc_nodes[0]), await connect(rpc_nodes[1])
        caller = await connect(rpc_nodes[2])
        try:
            name = proc("cgone")
            invoked = loop.create_future()

            async def vanish():
                invoked.set_result(True)
                a.abort_transport()
                await asyncio.sleep(30)

            await asyncio.wait_for(a.register(vanish, name, options=RegisterOptions(invoke="roundrobin")), T)
            await callees_known(caller, name, 1)
            await asyncio.wait_for(b.register(lambda: "b", name, options=RegisterOptions(invoke="roundrobin")), T)
            await callees_known(caller, name, 2)
            with pytest.raises(ApplicationError) as ei:
                await asyncio.wait_for(caller.call(name), T)
            assert ei.value.error == "wamp.error.canceled", ei.value
            assert invoked.done()
            # (in a cluster, a's leave reaches the caller's node one hop later)
            await callees_known(caller, name, 1)
            assert [await asyncio.wait_for(caller.call(name), T) for _ in range(3)] == ["b"] * 3
        finally:
            await close_all(a, b, caller)

    run(main())


# ==========================================================================
# 11. WELCOME features, 12. reserved namespace
# ==========================================================================

def test_welcome_announces_exactly_the_implemented_features(router):
    async def main():
        p = await Peer.join(router)
        try:
            roles = p.details["roles"]
            assert roles["dealer"]["features"] == {f: True for f in [
                "caller_identification", "call_timeout", "call_canceling", "progressive_call_results",
                "progressive_call_invocations", "pattern_based_registration", "shared_registration",
                "registration_meta_api", "session_meta_api", "testament_meta_api"]}, roles["dealer"]
            assert roles["broker"]["features"] == {f: True for f in [
                "publisher_exclusion", "publisher_identification", "subscriber_blackwhite_listing",
                "pattern_based_subscription", "event_retention", "event_history", "subscription_meta_api",
                "session_meta_api"]}, roles["broker"]
        finally:
            await p.close()

    run(main())


def test_reserved_wamp_namespace(router):
    async def main():
        p = await Peer.join(router, caller=ALL_CALLER, callee=ALL_CALLEE)
        try:
            for uri, opts in [("wamp.example.proc", {}), ("wamp.session.count", {}),
                              ("wamp.registration", {"match": "prefix"}), ("wamp..list", {"match": "wildcard"})]:
                rid = p.req()
                r = await p.request([REGISTER, rid, opts, uri])
                assert r[0] == ERROR and r[1] == REGISTER and r[4] == "wamp.error.invalid_uri", (uri, opts, r)
            for topic in ["wamp.session.on_join", "wamp.example.topic"]:
                rid = p.req()
                r = await p.request([PUBLISH, rid, {"acknowledge": True}, topic, []])
                assert r[0] == ERROR and r[1] == PUBLISH and r[4] == "wamp.error.invalid_uri", (topic, r)
            rid = await p.call("wamp.no_such.procedure")
            r = await p.next(answers_call(rid))
            assert error_uri(r) == "wamp.error.no_such_procedure", r
            rid = await p.call("wamp.session.count")
            r = await p.next(answers_call(rid))
            assert r[0] == RESULT and isinstance(r[3][0], int) and r[3][0] >= 1, r
        finally:
            await p.close()

    run(main())
