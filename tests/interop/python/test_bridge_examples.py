"""The HTTP bridge's examples (examples/bridge/publish.py, publish.sh and
publish.php) publish with signed requests that an Autobahn|Python subscriber
receives; a request signed with the wrong secret is refused with the reason.

The PHP example needs php with the curl extension (tests/interop/setup.sh
installs Debian's php-cli and php-curl); without it these tests fail, they do
not skip."""

import asyncio
import os
import shutil
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


def _php():
    """php with the curl extension, or a test failure (never a skip: CI must run it)."""
    php = shutil.which("php")
    if php is None:
        pytest.fail("php is not installed: run tests/interop/setup.sh (it installs Debian's php-cli "
                    "and php-curl)", pytrace=False)
    mods = subprocess.run([php, "-m"], capture_output=True, text=True, timeout=30).stdout
    if "curl" not in mods.lower().split():
        pytest.fail(f"{php} has no curl extension (php -m: {mods.split()}): run tests/interop/setup.sh "
                    "(it installs php-curl)", pytrace=False)
    return [php, str(EXAMPLES / "publish.php")]


COMMANDS = {
    "python": lambda: [sys.executable, str(EXAMPLES / "publish.py")],
    "shell": lambda: ["bash", str(EXAMPLES / "publish.sh")],
    "php": _php,
}


@pytest.mark.parametrize("lang", ["python", "shell", "php"])
def test_example_publishes_a_signed_event(bridged, lang):
    router, base = bridged
    cmd = COMMANDS[lang]()

    async def main():
        sub = await connect(router)
        try:
            got = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(sub.subscribe(lambda *a, **kw: got.done() or got.set_result((a, kw)),
                                                 "com.example.bridge"), T)
            p = await asyncio.to_thread(_run_example, cmd, base, "com.example.bridge", '["hello", 42]')
            assert p.returncode == 0, (p.stdout, p.stderr)
            assert '"id"' in p.stdout, p.stdout
            args, kwargs = await asyncio.wait_for(got, T)
            assert list(args) == ["hello", 42]
            assert kwargs == {}
            # A wrong secret is refused, and says why.
            bad = await asyncio.to_thread(_run_example, cmd, base, "com.example.bridge", "[1]",
                                          secret="not-the-right-secret-at-all")
            assert bad.returncode != 0
            assert "invalid_signature" in bad.stdout + bad.stderr, (bad.stdout, bad.stderr)
        finally:
            await close_all(sub)

    run(main())


@pytest.mark.parametrize("lang", ["python", "php"])
def test_example_publishes_keyword_arguments(bridged, lang):
    """The third argument (a JSON object) arrives as the event's keyword
    arguments, nested objects, floats and unicode intact; an empty object
    stays an object (PHP's json_encode would write an empty array as [])."""
    router, base = bridged
    cmd = COMMANDS[lang]()
    topic = f"com.example.bridge.kw.{lang}"

    async def main():
        sub = await connect(router)
        try:
            got = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(sub.subscribe(lambda *a, **kw: got.done() or got.set_result((a, kw)),
                                                 topic), T)
            p = await asyncio.to_thread(
                _run_example, cmd, base, topic, '[{"sku": "A-1", "tags": []}, 2.5, "z\u00fcrich/1"]',
                '{"color": "orange", "empty": {}, "n": 7}')
            assert p.returncode == 0, (p.stdout, p.stderr)
            args, kwargs = await asyncio.wait_for(got, T)
            assert list(args) == [{"sku": "A-1", "tags": []}, 2.5, "zürich/1"]
            assert kwargs == {"color": "orange", "empty": {}, "n": 7}
        finally:
            await close_all(sub)

    run(main())


def test_push_example_enqueues_once_per_idempotency_key(module_router_factory):
    """examples/bridge/push.py signs POST /queues/{name}/jobs over the
    canonical string (method, path, Idempotency-Key, body): 202, then 409 with
    the same id and location for the same key; a wrong secret is refused."""
    import json
    port = free_port()
    module_router_factory(
        realms=[{"name": "realm1", "uri_check": "loose",
                 "queue": [{"name": "mail", "target": "com.example.mail"}]}],
        bridges=[{"address": f"127.0.0.1:{port}", "realm": "realm1",
                  "key": [{"key": KEY, "secret": SECRET, "role": "backend"}]}])
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, str(EXAMPLES / "push.py")]
    job = '{"args": [42], "kwargs": {"to": "a@example.com"}}'
    p = _run_example(cmd, base, "mail", job, "order-42")
    assert p.returncode == 0, (p.stdout, p.stderr)
    first = json.loads(p.stdout)
    assert first["duplicate"] is False and isinstance(first["id"], int), p.stdout
    p = _run_example(cmd, base, "mail", job, "order-42")
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert json.loads(p.stdout) == {"id": first["id"], "duplicate": True,
                                    "location": f"/queues/mail/jobs/{first['id']}"}
    bad = _run_example(cmd, base, "mail", job, "order-43", secret="not-the-right-secret-at-all")
    assert bad.returncode == 1 and "invalid_signature" in bad.stdout, (bad.stdout, bad.stderr)
