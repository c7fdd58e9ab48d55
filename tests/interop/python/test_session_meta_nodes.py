"""Session meta API across cluster nodes (issue 15) with Autobahn|Python.

Run over the ``rpc_nodes`` fixture: ``one-node`` (both sessions on one
router) and ``three-nodes`` (a session on each of two of three cluster nodes over a
nats-server): ``wamp.session.count`` / ``list`` / ``get`` on one node see
the other node's sessions, ``wamp.session.on_join`` / ``on_leave`` of a
session on one node reach a meta subscriber on the other, and the
subscription meta procedures find the other node's subscriptions
(docs/CLUSTER.md).
"""

import asyncio
import time

from wamplib import T, close_all, connect, meta_error, run, sid, subscribe, unique_uri


async def _until(pred, what, timeout=T):
    deadline = time.monotonic() + timeout
    while not await pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def test_session_meta_api_and_events_across_nodes(rpc_nodes):
    first, second, _ = rpc_nodes

    async def main():
        a = await connect(first, "ws", "json")
        b = await connect(second, "rs", "msgpack")
        c = None
        try:
            async def call(p, *args):
                return await asyncio.wait_for(b.call(p, *args), T)

            async def listed(session_id):
                return session_id in await call("wamp.session.list")

            # a (on the first node) is known on the second node.
            await _until(lambda: listed(sid(a)), "a in wamp.session.list on b's node")
            d = await call("wamp.session.get", sid(a))
            assert isinstance(d, dict), d
            assert d.get("session") == sid(a) and d.get("authid") == a.joined.result().authid, d
            assert d.get("authrole") == "anonymous" and d.get("authmethod") == "anonymous", d
            assert isinstance(d.get("transport"), dict), d
            everyone = await call("wamp.session.list")
            assert sid(b) in everyone
            assert await call("wamp.session.count") == len(everyone)
            assert await call("wamp.session.count", ["anonymous"]) == len(everyone)
            assert await call("wamp.session.count", ["admin"]) == 0
            assert await call("wamp.session.list", ["admin"]) == []

            # A session joining and leaving on the first node: its meta
            # events reach b on the second node.
            joins, _ = await subscribe(b, "wamp.session.on_join")
            leaves, _ = await subscribe(b, "wamp.session.on_leave")
            c = await connect(first, "ws", "cbor")
            c_id = sid(c)
            e = await joins.wait_for(lambda e: e.args and e.args[0].get("session") == c_id, "on_join of c")
            assert e.args[0].get("authrole") == "anonymous", e.args
            await _until(lambda: listed(c_id), "c in wamp.session.list on b's node")
            await close_all(c)
            c = None
            e = await leaves.wait_for(lambda e: e.args and e.args[0] == c_id, "on_leave of c")
            assert e.args[2] == "anonymous", e.args

            async def gone():
                return not await listed(c_id)

            await _until(gone, "c gone from wamp.session.list on b's node")
            assert (await meta_error(b, "wamp.session.get", c_id)).error == "wamp.error.no_such_session"
            # Each event once.
            await asyncio.sleep(0.3)
            assert len([e for e in joins.events if e.args[0].get("session") == c_id]) == 1
            assert len([e for e in leaves.events if e.args[0] == c_id]) == 1
        finally:
            await close_all(a, b, c)

    run(main())


def test_subscription_meta_api_across_nodes(rpc_nodes):
    first, second, _ = rpc_nodes

    async def main():
        a = await connect(first, "ws", "json")
        b = await connect(second, "rs", "msgpack")
        try:
            topic = unique_uri("com.example.metanodes", "t")
            _, sub = await subscribe(a, topic)

            async def call(p, *args):
                return await asyncio.wait_for(b.call(p, *args), T)

            async def found():
                return await call("wamp.subscription.lookup", topic) == sub.id

            # a's subscription (on the first node) is found from b's node.
            await _until(found, "a's subscription looked up on b's node")
            assert sub.id in await call("wamp.subscription.match", topic)
            assert sub.id in (await call("wamp.subscription.list"))["exact"]
            d = await call("wamp.subscription.get", sub.id)
            assert (d["id"], d["uri"], d["match"]) == (sub.id, topic, "exact"), d
            assert await call("wamp.subscription.list_subscribers", sub.id) == [sid(a)]
            assert await call("wamp.subscription.count_subscribers", sub.id) == 1

            await asyncio.wait_for(sub.unsubscribe(), T)

            async def gone():
                return await call("wamp.subscription.lookup", topic) is None

            await _until(gone, "a's subscription gone from b's node")
            assert (await meta_error(b, "wamp.subscription.get", sub.id)).error == "wamp.error.no_such_subscription"
        finally:
            await close_all(a, b)

    run(main())
