"""Session life cycle: WELCOME contents, GOODBYE, unknown realm, SIGTERM shutdown."""

import asyncio
import json
import time

import pytest

from wamplib import (GOODBYE, HELLO, HELLO_ROLES, JoinFailed, RawRs, RawWs, T, close_all, connect, open_raw,
                     run)


def check_welcome_details(d):
    roles = d.get("roles")
    assert isinstance(roles, dict), f"WELCOME.Details.roles missing: {d!r}"
    assert roles.get("broker", {}).get("features", {}).get("publisher_exclusion") is True, \
        f"broker.features.publisher_exclusion must be true: {roles!r}"
    assert isinstance(roles.get("dealer", {}).get("features"), dict), f"dealer.features missing: {roles!r}"
    assert isinstance(d.get("authid"), str) and d["authid"], f"authid: {d.get('authid')!r}"
    assert d.get("authrole") == "anonymous", d
    assert d.get("authmethod") == "anonymous", d
    assert d.get("authprovider") == "static", d
    assert d.get("realm") == "realm1", d
    assert isinstance(d.get("agent"), str) and d["agent"].startswith("switchyard"), f"agent: {d.get('agent')!r}"


@pytest.mark.parametrize("kind", ["ws", "rs", "unix"])
def test_welcome_details_raw(router, kind):
    async def main():
        a = await open_raw(kind, router)
        b = await open_raw(kind, router)
        try:
            wa = await a.hello()
            wb = await b.hello()
            assert len(wa) == 3, f"WELCOME must be [2, Session, Details]: {wa!r}"
            for w in (wa, wb):
                assert isinstance(w[1], int) and 1 <= w[1] <= 2 ** 53, f"session id {w[1]!r}"
                check_welcome_details(w[2])
            assert wa[1] != wb[1], "two sessions got the same session id"
            assert wa[2]["authid"] != wb[2]["authid"], "authid should be a random string per session"
        finally:
            await a.close()
            await b.close()

    run(main())


@pytest.mark.parametrize("ser", ["json", "msgpack", "cbor"])
def test_welcome_details_autobahn(router, ser):
    async def main():
        s = await connect(router, "ws", ser)
        try:
            d = s.joined.result()
            assert d.realm == "realm1"
            assert d.authrole == "anonymous" and d.authmethod == "anonymous" and d.authprovider == "static"
            assert isinstance(d.session, int) and d.session > 0
            assert s._router_roles, "no router roles in WELCOME"
            assert "broker" in s._router_roles and "dealer" in s._router_roles
            assert d.serializer == ser
        finally:
            await s.close()

    run(main())


@pytest.mark.parametrize("kind", ["ws", "rs"])
def test_goodbye_raw(router, kind):
    async def main():
        c = await open_raw(kind, router)
        try:
            await c.hello()
            await c.send([GOODBYE, {}, "wamp.close.normal"])
            msg = await c.recv(T)
            assert msg[0] == GOODBYE, f"expected GOODBYE reply, got {msg!r}"
            assert msg[2] == "wamp.close.goodbye_and_out", f"GOODBYE reply reason {msg[2]!r}"
            assert isinstance(msg[1], dict)
        finally:
            await c.close()

    run(main())


@pytest.mark.parametrize("transport,ser", [("ws", "json"), ("rs", "msgpack"), ("unix", "cbor")])
def test_unknown_realm_autobahn(router, transport, ser):
    async def main():
        s = await connect(router, transport, ser, realm="no.such.realm", join=False)
        try:
            with pytest.raises(JoinFailed) as ei:
                await asyncio.wait_for(asyncio.shield(s.joined), T)
            assert ei.value.details.reason == "wamp.error.no_such_realm", ei.value.details
            assert ei.value.details.message, "ABORT should carry Details.message"
        finally:
            await s.close(1)

    run(main())


@pytest.mark.parametrize("kind", ["ws", "rs"])
def test_unknown_realm_raw(router, kind):
    async def main():
        c = await open_raw(kind, router)
        try:
            await c.send([HELLO, "no.such.realm", HELLO_ROLES])
            msg = await c.expect_abort()
            assert msg[2] == "wamp.error.no_such_realm", msg
            assert isinstance(msg[1].get("message"), str) and msg[1]["message"], \
                f"ABORT.Details.message missing: {msg!r}"
        finally:
            await c.close()

    run(main())


def test_sigterm_sends_system_shutdown(router_factory):
    r = router_factory()

    async def main():
        sessions = [await connect(r, "ws", "json"), await connect(r, "rs", "msgpack"),
                    await connect(r, "unix", "cbor")]
        raw_ws = await RawWs.open(r)
        await raw_ws.hello()
        raw_rs = await RawRs.connect(r)
        await raw_rs.hello()
        try:
            r.proc.send_signal(15)
            for s in sessions:
                try:
                    d = await asyncio.wait_for(asyncio.shield(s.left), T)
                except asyncio.TimeoutError:
                    raise AssertionError("autobahn session got no GOODBYE after SIGTERM") from None
                assert d.reason == "wamp.close.system_shutdown", f"{s._transport}: {d.reason!r} {d.message!r}"
            for raw in (raw_ws, raw_rs):
                msg = await raw.recv(T)
                assert msg[0] == GOODBYE and msg[2] == "wamp.close.system_shutdown", \
                    f"expected GOODBYE wamp.close.system_shutdown, got {msg!r}"
                try:
                    await raw.send([GOODBYE, {}, "wamp.close.goodbye_and_out"])
                except Exception:
                    pass
        finally:
            await close_all(*sessions, timeout=1)
            await raw_ws.close()
            await raw_rs.close()

    run(main())
    t0 = time.monotonic()
    try:
        rc = r.proc.wait(timeout=5)
    except Exception:
        raise AssertionError("router did not exit within 5 s of SIGTERM")
    assert rc == 0, f"router exit code after SIGTERM was {rc}, expected 0 ({time.monotonic() - t0:.1f}s)"


def test_sigterm_idle_exit_code(router_factory):
    r = router_factory()
    r.proc.send_signal(15)
    try:
        rc = r.proc.wait(timeout=5)
    except Exception:
        raise AssertionError("idle router did not exit within 5 s of SIGTERM")
    assert rc == 0, f"router exit code after SIGTERM was {rc}, expected 0"


def test_json_log_format(router_factory):
    """[log] format = "json": every line the router prints is a JSON object."""
    r = router_factory(log={"format": "json"})

    async def main():
        s = await connect(r, "ws", "json")
        await s.close()
        c = await open_raw("rs", r)
        await c.send([999])  # before HELLO: protocol violation, gets logged
        await c.expect_closed(T)
        await c.close()

    run(main())
    r.terminate()
    lines = [l for l in r.log_text().splitlines() if l.strip() and not l.startswith("# ")]
    assert lines, "router printed nothing with format = json"
    bad = []
    for l in lines:
        try:
            if not isinstance(json.loads(l), dict):
                bad.append(l)
        except ValueError:
            bad.append(l)
    assert not bad, f"{len(bad)} of {len(lines)} log lines are not JSON objects, e.g. {bad[:3]}"
