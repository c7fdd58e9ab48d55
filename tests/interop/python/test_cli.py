"""The `switchyard` client commands (docs/CLI.md) with Autobahn|Python on the
other side: the CLI calls an Autobahn callee, an Autobahn caller calls a
procedure served by `switchyard register`, and events flow both ways
between `switchyard publish`/`subscribe` and Autobahn.

The CLI is the router binary itself (SWITCHYARD_BIN), run as a subprocess
from the asyncio loop the Autobahn sessions live in.
"""

import asyncio
import json
import os
import uuid

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallResult

from routerproc import router_bin
from wamplib import T, close_all, connect, run, subscribe

COMBOS = [("ws", "json"), ("rs", "msgpack"), ("unix", "cbor")]
IDS = [f"{t}-{s}" for t, s in COMBOS]


def uri(tag):
    return f"com.example.cli.{tag}.{uuid.uuid4().hex[:10]}"


def url_of(router, transport):
    return {
        "ws": router.ws_url,
        "rs": f"rs://{router.host}:{router.rs_port}",
        "unix": f"unix:{router.unix_path}",
    }[transport]


def clean_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}


async def cli(*args, timeout=T):
    """Runs `switchyard ARGS`; returns (exit code, stdout, stderr)."""
    p = await asyncio.create_subprocess_exec(
        router_bin(), *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=clean_env())
    out, err = await asyncio.wait_for(p.communicate(), timeout)
    return p.returncode, out.decode(), err.decode()


class Background:
    """A long-running CLI command (subscribe, register)."""

    def __init__(self, proc):
        self.proc = proc
        self.stderr_lines = []

    @classmethod
    async def start(cls, *args, ready):
        p = await asyncio.create_subprocess_exec(
            router_bin(), *args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=clean_env())
        b = cls(p)
        while True:
            line = await asyncio.wait_for(p.stderr.readline(), T)
            if not line:
                raise AssertionError(f"{args} ended before {ready!r}: {b.stderr_lines}")
            b.stderr_lines.append(line.decode())
            if ready in line.decode():
                return b

    async def stop(self):
        if self.proc.returncode is None:
            self.proc.terminate()
        return await asyncio.wait_for(self.proc.wait(), T)


@pytest.mark.parametrize("transport,ser", COMBOS, ids=IDS)
def test_cli_calls_an_autobahn_callee(router, transport, ser):
    base = uri("callee")

    async def main():
        callee = await connect(router, "ws", "msgpack")
        try:
            await callee.register(lambda a, b: a + b, base + ".add")
            await callee.register(lambda: CallResult(1, "two", blob=b"\x01\x02"), base + ".rich")

            def fail(*args, **kwargs):
                raise ApplicationError("com.example.error.nope", "no way", code=7)

            await callee.register(fail, base + ".fail")
            url = url_of(router, transport)
            common = ["--url", url, "--serializer", ser]

            rc, out, err = await cli("call", base + ".add", "2", "3", *common)
            assert (rc, out) == (0, "5\n"), err
            rc, out, err = await cli("call", base + ".add", '"ab"', "cd", *common)
            assert (rc, json.loads(out)) == (0, "abcd"), err
            # Several results and keyword results: the {"args", "kwargs"} envelope,
            # binary as WAMP's JSON "\u0000" + base64.
            rc, out, err = await cli("call", base + ".rich", *common)
            assert rc == 0, err
            assert json.loads(out) == {"args": [1, "two"], "kwargs": {"blob": "\x00AQI="}}
            # The callee's error: exit 1, URI and message, then the rest of its payload.
            rc, out, err = await cli("call", base + ".fail", *common)
            assert rc == 1 and out == "", err
            assert "com.example.error.nope: no way" in err, err
            assert '"code":7' in err, err
        finally:
            await close_all(callee)

    run(main())


def test_autobahn_calls_a_cli_callee(router):
    proc = uri("register")

    async def main():
        echo = await Background.start("register", proc, "--url", router.ws_url, "--", "sh", "-c", "cat",
                                      ready="registered")
        fail = await Background.start("register", proc + ".fail", "--url", f"unix:{router.unix_path}",
                                      "--serializer", "cbor", "--",
                                      "sh", "-c", "cat >/dev/null; echo 'it broke' >&2; exit 4",
                                      ready="registered")
        caller = await connect(router, "rs", "msgpack")
        try:
            res = await asyncio.wait_for(caller.call(proc, 1, "two", b"\xff\x00", k={"x": None}), T)
            # The command's standard input, echoed: the result is that object.
            assert res["procedure"] == proc
            assert res["args"] == [1, "two", b"\xff\x00"]
            assert res["kwargs"] == {"k": {"x": None}}
            assert isinstance(res["details"], dict)

            with pytest.raises(ApplicationError) as ei:
                await asyncio.wait_for(caller.call(proc + ".fail"), T)
            e = ei.value
            assert e.error == "switchyard.error.command_failed"
            assert e.args[0] == "command exited with status 4: it broke"
            assert e.kwargs["exit_code"] == 4 and e.kwargs["stderr"] == "it broke\n"
        finally:
            await close_all(caller)
            assert await echo.stop() == 0
            assert await fail.stop() == 0

    run(main())


def test_events_between_cli_and_autobahn(router):
    topic = uri("topic")

    async def main():
        session = await connect(router, "ws", "cbor")
        try:
            # CLI publish -> Autobahn subscriber.
            inbox, _ = await subscribe(session, topic)
            rc, out, err = await cli("publish", topic, "1", "hi", '{"a": [true]}', "--kw", "n=null",
                                     "--acknowledge", "--url", f"rs://{router.host}:{router.rs_port}",
                                     "--serializer", "msgpack")
            assert rc == 0, err
            e = await inbox.wait_for(lambda e: True)
            assert e.args == [1, "hi", {"a": [True]}] and e.kwargs == {"n": None}
            assert e.details.publication == int(out)

            # Autobahn publish -> CLI subscriber (prefix), one JSON line per event.
            sub = await Background.start("subscribe", topic + ".", "--match", "prefix", "--count", "2",
                                         "--url", router.ws_url, ready="subscribed")
            session.publish(topic + ".x", "a", b"\x00\x01", k=2)
            session.publish(topic + ".y")
            out = await asyncio.wait_for(sub.proc.stdout.read(), T)
            assert await asyncio.wait_for(sub.proc.wait(), T) == 0
            lines = [json.loads(l) for l in out.decode().splitlines()]
            assert [l["topic"] for l in lines] == [topic + ".x", topic + ".y"]
            assert lines[0]["args"] == ["a", "\x00AAE="] and lines[0]["kwargs"] == {"k": 2}
            assert lines[1]["args"] == [] and lines[1]["kwargs"] == {}
        finally:
            await close_all(session)

    run(main())
