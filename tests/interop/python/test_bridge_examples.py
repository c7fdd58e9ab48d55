"""The HTTP bridge's examples (examples/bridge/publish.py and publish.sh) publish
with signed requests that an Autobahn|Python subscriber receives; a request
signed with the wrong secret is refused with the reason."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from routerproc import free_port
from wamplib import T, close_all, connect, run

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples" / "bridge"
KEY, SECRET = "examples", "a-secret-of-at-least-16-characters"


@pytest.fixture(scope="module")
def bridged(module_router_factory):
    port = free_port()
    r = module_router_factory(bridges=[{
        "address": f"127.0.0.1:{port}", "realm": "realm1",
        "key": [{"key": KEY, "secret": SECRET, "role": "backend"}],
    }])
    return r, f"http://127.0.0.1:{port}"


def _run_example(cmd, base, *args, secret=SECRET):
    env = dict(os.environ, SWITCHYARD_BRIDGE=base, SWITCHYARD_KEY=KEY, SWITCHYARD_SECRET=secret)
    return subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("cmd", [[sys.executable, str(EXAMPLES / "publish.py")],
                                 ["bash", str(EXAMPLES / "publish.sh")]], ids=["python", "shell"])
def test_example_publishes_a_signed_event(bridged, cmd):
    router, base = bridged

    async def main():
        sub = await connect(router)
        try:
            got = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(sub.subscribe(lambda *a, **kw: got.done() or got.set_result((a, kw)),
                                                 "com.example.bridge"), T)
            p = await asyncio.to_thread(_run_example, cmd, base, "com.example.bridge", '["hello", 42]')
            assert p.returncode == 0, (p.stdout, p.stderr)
            assert '"id"' in p.stdout, p.stdout
            args, _ = await asyncio.wait_for(got, T)
            assert list(args) == ["hello", 42]
            # A wrong secret is refused, and says why.
            bad = await asyncio.to_thread(_run_example, cmd, base, "com.example.bridge", "[1]",
                                          secret="not-the-right-secret-at-all")
            assert bad.returncode != 0
            assert "invalid_signature" in bad.stdout + bad.stderr, (bad.stdout, bad.stderr)
        finally:
            await close_all(sub)

    run(main())
