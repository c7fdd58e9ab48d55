"""The Rust client's typed arguments (docs/CLIENT-RUST.md) with Autobahn|Python on
the other side: an Autobahn caller calls the typed procedures of
crates/client/examples/typed.rs (a tuple of positional arguments, a struct of
keyword arguments or one dict argument), gets wamp.error.invalid_argument for
arguments that do not fit, and publishes events the example's typed
subscription reads (or skips).

The example is built by `cargo test` / `cargo build --examples` next to the
router binary (SWITCHYARD_BIN's directory, examples/typed).
"""

import asyncio
import signal
from pathlib import Path

import pytest
from autobahn.wamp.exception import ApplicationError

from routerproc import router_bin
from wamplib import T, close_all, connect, run

EXAMPLE = Path(router_bin()).parent / "examples" / "typed"


class Example:
    def __init__(self, proc):
        self.proc = proc
        self.lines = []

    @classmethod
    async def start(cls, url):
        p = await asyncio.create_subprocess_exec(
            str(EXAMPLE), url, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        ex = cls(p)
        # Its own calls and event done: it serves.
        await ex.wait_for("reading: t1 at 21.5")
        return ex

    async def wait_for(self, text):
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), T)
            if not line:
                raise AssertionError(f"the example ended before {text!r}: {self.lines}")
            self.lines.append(line.decode())
            if text in line.decode():
                return

    async def stop(self):
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        return await asyncio.wait_for(self.proc.wait(), T)


@pytest.mark.skipif(not EXAMPLE.exists(), reason=f"{EXAMPLE} not built (cargo build -p switchyard-client --examples)")
@pytest.mark.parametrize("ser", ["json", "msgpack", "cbor"])
def test_autobahn_calls_a_typed_rust_service(router, ser):
    async def main():
        ex = await Example.start(router.ws_url)
        caller = await connect(router, "ws", ser)
        try:
            assert await asyncio.wait_for(caller.call("com.example.add", 2, 3), T) == 5
            # A struct from keyword arguments; the result is a struct: keyword results.
            res = await asyncio.wait_for(caller.call("com.example.quote", item="pen", qty=3), T)
            assert res.kwresults == {"item": "pen", "total_cents": 450}, res
            # A struct from one dict argument (optional field given).
            res = await asyncio.wait_for(
                caller.call("com.example.quote", {"item": "book", "qty": 2, "coupon": "HALF"}), T)
            assert res.kwresults == {"item": "book", "total_cents": 1200}, res
            # The handler's own error.
            with pytest.raises(ApplicationError) as ei:
                await asyncio.wait_for(caller.call("com.example.quote", item="cup", qty=1), T)
            assert ei.value.error == "com.example.error.unknown_item"
            # Arguments that do not fit: invalid_argument with serde's message.
            for args, kwargs, text in [
                (("two", 3), {}, 'invalid type: string "two", expected i64'),
                ((1, 2, 3), {}, "invalid length 3"),
                ((), {"item": "pen"}, "missing field `qty`"),
                ((), {"item": "pen", "qty": -1}, "invalid value: integer `-1`, expected u32"),
            ]:
                proc = "com.example.add" if args else "com.example.quote"
                with pytest.raises(ApplicationError) as ei:
                    await asyncio.wait_for(caller.call(proc, *args, **kwargs), T)
                assert ei.value.error == "wamp.error.invalid_argument", (args, kwargs)
                assert text in ei.value.args[0], ei.value.args
            # Events: one that does not fit is skipped, the next one arrives.
            caller.publish("com.example.reading", "garbage")
            caller.publish("com.example.reading", sensor="py", celsius=-2.5)
            await ex.wait_for("reading: py at -2.5")
            assert not any("garbage" in line for line in ex.lines), ex.lines
        finally:
            await close_all(caller)
            assert await ex.stop() == 0, ex.lines

    run(main())
