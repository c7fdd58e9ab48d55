"""Protocol violations over a raw WebSocket and a raw RawSocket: the router sends
ABORT wamp.error.protocol_violation with a Details.message saying what was wrong,
then closes the connection. Other sessions keep working."""

import asyncio
import uuid

import pytest

from wamplib import ABORT, HELLO, HELLO_ROLES, SUBSCRIBE, T, close_all, connect, open_raw, run

# name -> (send HELLO first?, payload (object -> JSON, str/bytes -> raw), words: any of them must
#          appear (case-insensitively) in ABORT.Details.message)
CASES = {
    "unknown_type": (True, [999], ["999", "unknown"]),
    "wrong_shape": (True, [SUBSCRIBE, "x"], ["subscribe", "32"]),
    "not_an_array": (True, '{"hello": "world"}', ["array", "list", "sequence"]),
    "invalid_json": (True, '[1, "realm1", {', ["json", "deserializ", "decode", "pars", "syntax", "eof"]),
    "second_hello": (True, [HELLO, "realm1", HELLO_ROLES], ["hello"]),
    "subscribe_before_hello": (False, [SUBSCRIBE, 1, {}, "com.example.topic"], ["hello"]),
}


@pytest.mark.parametrize("kind", ["ws", "rs"])
@pytest.mark.parametrize("case", list(CASES))
def test_protocol_violation(router, kind, case):
    send_hello, payload, words = CASES[case]

    async def main():
        # a healthy callee/caller pair that must survive the violation
        callee = await connect(router, "ws", "json")
        caller = await connect(router, "rs", "msgpack")
        proc = "com.example.health." + uuid.uuid4().hex[:8]
        await asyncio.wait_for(callee.register(lambda x: x + 1, proc), T)
        bad = await open_raw(kind, router)
        try:
            if send_hello:
                await bad.hello()
            if isinstance(payload, (str, bytes)):
                await bad.send_raw(payload)
            else:
                await bad.send(payload)
            code, msgs = await bad.expect_closed(T)
            aborts = [m for m in msgs if isinstance(m, list) and m and m[0] == ABORT]
            assert aborts, f"no ABORT before close (close code {code}), got {msgs!r}"
            abort = aborts[0]
            assert abort[2] == "wamp.error.protocol_violation", f"ABORT reason {abort!r}"
            message = abort[1].get("message") if isinstance(abort[1], dict) else None
            assert isinstance(message, str) and message, f"ABORT.Details.message missing: {abort!r}"
            assert any(w in message.lower() for w in words), \
                f"ABORT message {message!r} does not say what was wrong (expected one of {words})"
            # other sessions are unaffected
            assert await asyncio.wait_for(caller.call(proc, 41), T) == 42
        finally:
            await bad.close()
            await close_all(callee, caller)

    run(main())

