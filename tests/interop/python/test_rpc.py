"""Remote procedure calls with Autobahn|Python over every transport and serializer."""

import asyncio
import uuid

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallResult

from wamplib import T, close_all, connect, registered, run

COMBOS = [
    ("ws", "json"), ("ws", "msgpack"), ("ws", "cbor"),
    ("rs", "json"), ("rs", "msgpack"), ("rs", "cbor"),
    ("unix", "json"), ("unix", "msgpack"),
]
IDS = [f"{t}-{s}" for t, s in COMBOS]

BLOB = b"\x00\x01\x02\xfe\xff" * 10
ARGS = [1, "two", {"three": [3, 3.25, None]}, BLOB]
KWARGS = {"x": {"y": [True, False]}, "z": "\u2603", "bin": b"\xde\xad\xbe\xef"}


def proc():
    return "com.example.interop.p" + uuid.uuid4().hex[:12]


async def echo_callee(session, name):
    seen = []

    def echo(*args, **kwargs):
        seen.append((list(args), kwargs))
        return CallResult(*args, "extra", **kwargs, echoed=True)

    def fail(*args, **kwargs):
        raise ApplicationError("com.example.error.foo", 1, 2, x=3)

    await asyncio.wait_for(session.register(echo, name), T)
    await asyncio.wait_for(session.register(fail, name + ".fail"), T)
    return seen


async def check_call_and_error(caller, name, seen):
    res = await asyncio.wait_for(caller.call(name, *ARGS, **KWARGS), T)
    assert seen and seen[-1] == (ARGS, KWARGS), f"callee saw {seen[-1] if seen else None!r}"
    assert isinstance(res, CallResult), f"expected a CallResult with args+kwargs, got {res!r}"
    assert list(res.results) == ARGS + ["extra"], f"result args {res.results!r}"
    assert res.kwresults == dict(KWARGS, echoed=True), f"result kwargs {res.kwresults!r}"
    assert isinstance(res.results[3], bytes) and isinstance(res.kwresults["bin"], bytes)

    with pytest.raises(ApplicationError) as ei:
        await asyncio.wait_for(caller.call(name + ".fail", "ignored"), T)
    e = ei.value
    assert e.error == "com.example.error.foo", f"error uri {e.error!r}"
    assert list(e.args) == [1, 2], f"error args {e.args!r}"
    assert e.kwargs == {"x": 3}, f"error kwargs {e.kwargs!r}"


@pytest.mark.parametrize("transport,ser", COMBOS, ids=IDS)
def test_call_result_and_error(rpc_nodes, transport, ser):
    callee_node, caller_node, other_node = rpc_nodes

    async def main():
        callee = await connect(callee_node, transport, ser)
        caller = await connect(caller_node, transport, ser)
        other = await connect(other_node, transport, ser)
        try:
            name = proc()
            seen = await echo_callee(callee, name)
            await registered(caller, name + ".fail")
            await check_call_and_error(caller, name, seen)
            # no args / single result, from two callers (on two other nodes)
            await asyncio.wait_for(callee.register(lambda: 42, name + ".answer"), T)
            for s in (caller, other):
                await registered(s, name + ".answer")
                assert await asyncio.wait_for(s.call(name + ".answer"), T) == 42
        finally:
            await close_all(callee, caller, other)

    run(main())


@pytest.mark.parametrize("callee_ser,caller_ser",
                         [("json", "msgpack"), ("msgpack", "cbor"), ("cbor", "json"), ("json", "cbor")])
def test_call_cross_serializer(rpc_nodes, callee_ser, caller_ser):
    callee_node, caller_node, other_node = rpc_nodes

    async def main():
        callee = await connect(callee_node, "rs", callee_ser)
        caller = await connect(caller_node, "ws", caller_ser)
        other = await connect(other_node, "rs", caller_ser)
        try:
            name = proc()
            seen = await echo_callee(callee, name)
            for s in (caller, other):
                await registered(s, name + ".fail")
                await check_call_and_error(s, name, seen)
        finally:
            await close_all(callee, caller, other)

    run(main())


def test_no_such_procedure(router):
    async def main():
        caller = await connect(router, "ws", "json")
        try:
            with pytest.raises(ApplicationError) as ei:
                await asyncio.wait_for(caller.call(proc()), T)
            assert ei.value.error == "wamp.error.no_such_procedure"
            assert ei.value.args and isinstance(ei.value.args[0], str) and ei.value.args[0], \
                f"router ERROR should carry a human-readable message as args[0], got {ei.value.args!r}"
        finally:
            await caller.close()

    run(main())


def test_procedure_already_exists(router):
    async def main():
        a = await connect(router, "ws", "json")
        b = await connect(router, "rs", "msgpack")
        try:
            name = proc()
            await asyncio.wait_for(a.register(lambda: "a", name), T)
            with pytest.raises(ApplicationError) as ei:
                await asyncio.wait_for(b.register(lambda: "b", name), T)
            assert ei.value.error == "wamp.error.procedure_already_exists"
            assert ei.value.args and isinstance(ei.value.args[0], str) and ei.value.args[0]
            # same session registering twice is also rejected
            with pytest.raises(ApplicationError) as ei:
                await asyncio.wait_for(a.register(lambda: "a2", name), T)
            assert ei.value.error == "wamp.error.procedure_already_exists"
            # the original registration is untouched
            assert await asyncio.wait_for(b.call(name), T) == "a"
        finally:
            await close_all(a, b)

    run(main())


def test_unregister_then_no_such_procedure(router):
    async def main():
        a = await connect(router, "ws", "cbor")
        b = await connect(router, "ws", "json")
        try:
            name = proc()
            reg = await asyncio.wait_for(a.register(lambda: "a", name), T)
            assert await asyncio.wait_for(b.call(name), T) == "a"
            await asyncio.wait_for(reg.unregister(), T)
            with pytest.raises(ApplicationError) as ei:
                await asyncio.wait_for(b.call(name), T)
            assert ei.value.error == "wamp.error.no_such_procedure"
        finally:
            await close_all(a, b)

    run(main())


@pytest.mark.parametrize("how", ["goodbye", "abrupt"])
def test_registration_removed_when_session_leaves(router, how):
    async def main():
        a = await connect(router, "rs", "json")
        b = await connect(router, "ws", "msgpack")
        try:
            name = proc()
            await asyncio.wait_for(a.register(lambda: "a", name), T)
            if how == "goodbye":
                a.leave()
                details = await asyncio.wait_for(asyncio.shield(a.left), T)
                assert details.reason == "wamp.close.goodbye_and_out", \
                    f"router replied GOODBYE with {details.reason!r}"
            else:
                a.abort_transport()
                await asyncio.wait_for(asyncio.shield(a.disconnected), T)
            # another client can register the same procedure at once (retry briefly
            # for the abrupt case: the router has to notice the socket close first)
            deadline = asyncio.get_running_loop().time() + (0.01 if how == "goodbye" else 2.0)
            while True:
                try:
                    await asyncio.wait_for(b.register(lambda: "b", name), T)
                    break
                except ApplicationError as e:
                    if asyncio.get_running_loop().time() > deadline:
                        raise AssertionError(f"registration of departed session ({how}) still present: {e}")
                    await asyncio.sleep(0.05)
            assert await asyncio.wait_for(b.call(name), T) == "b"
        finally:
            await close_all(a, b)

    run(main())


@pytest.mark.parametrize("callee_transport", ["ws", "rs"])
def test_callee_disconnects_mid_call(router, callee_transport):
    """The callee drops its transport inside the handler: the caller gets
    wamp.error.canceled (mentioning the callee) instead of hanging."""

    async def main():
        loop = asyncio.get_running_loop()
        callee = await connect(router, callee_transport, "json")
        caller = await connect(router, "ws", "cbor")
        try:
            name = proc()
            invoked = loop.create_future()

            async def handler():
                invoked.set_result(True)
                callee.abort_transport()
                await asyncio.sleep(30)  # never returns a result

            await asyncio.wait_for(callee.register(handler, name), T)
            call = asyncio.ensure_future(caller.call(name))
            await asyncio.wait_for(invoked, T)
            try:
                await asyncio.wait_for(call, T)
            except ApplicationError as e:
                assert e.error == "wamp.error.canceled", f"caller got {e.error!r} {e.args!r}"
                msg = e.args[0] if e.args else ""
                assert isinstance(msg, str) and "callee" in msg.lower(), \
                    f"error message should mention the callee, got {e.args!r}"
            except asyncio.TimeoutError:
                raise AssertionError("caller hung: no ERROR within 5 s after the callee disconnected") from None
            else:
                raise AssertionError("call succeeded although the callee disconnected")
            # the caller session is still fine
            assert caller.is_attached()
            with pytest.raises(ApplicationError) as ei:
                await asyncio.wait_for(caller.call(name), T)
            assert ei.value.error == "wamp.error.no_such_procedure"
        finally:
            await close_all(callee, caller)

    run(main())


def test_concurrent_calls_complete_out_of_order(router):
    """Many concurrent calls from two callers, answered out of order by an async
    callee: every caller gets exactly its own result."""

    async def main():
        callee = await connect(router, "rs", "msgpack")
        callers = [await connect(router, "ws", "json"), await connect(router, "unix", "cbor")]
        try:
            name = proc()

            async def slow_double(x, delay):
                await asyncio.sleep(delay)
                return x * 2

            await asyncio.wait_for(callee.register(slow_double, name), T)
            calls = []
            for i in range(150):
                c = callers[i % 2]
                calls.append(c.call(name, i, ((i * 37) % 50) / 1000.0))
            results = await asyncio.wait_for(asyncio.gather(*calls), 15)
            assert results == [i * 2 for i in range(150)]
        finally:
            await close_all(callee, *callers)

    run(main())
