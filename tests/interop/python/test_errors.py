"""Router-generated ERROR replies (raw JSON clients, so nothing is validated client-side)."""

import asyncio

import pytest
from autobahn.wamp.exception import ApplicationError

from wamplib import (CALL, ERROR, PUBLISH, PUBLISHED, REGISTER, REGISTERED, SUBSCRIBE, SUBSCRIBED,
                     UNREGISTER, UNSUBSCRIBE, T, connect, open_raw, run)

BAD_URIS = ["com..bad", "has space", "a.#", ".leading", "trailing.", ""]


def assert_error(reply, req_type, req_id, uri):
    assert reply[0] == ERROR, f"expected ERROR {uri}, got {reply!r}"
    assert reply[1] == req_type and reply[2] == req_id, f"ERROR does not answer request {req_type}/{req_id}: {reply!r}"
    assert reply[3] == {}, f"ERROR.Details should be {{}}: {reply!r}"
    assert reply[4] == uri, f"expected {uri}, got {reply[4]!r} in {reply!r}"
    assert len(reply) >= 6 and isinstance(reply[5], list) and reply[5] and isinstance(reply[5][0], str) \
        and reply[5][0], f"ERROR should carry a human-readable message as args[0]: {reply!r}"


@pytest.mark.parametrize("kind", ["ws", "rs"])
def test_unknown_subscription_and_registration_ids(router, kind):
    async def main():
        c = await open_raw(kind, router)
        try:
            await c.hello()
            rid = c.req()
            assert_error(await c.request([UNSUBSCRIBE, rid, 7777777]), UNSUBSCRIBE, rid,
                         "wamp.error.no_such_subscription")
            rid = c.req()
            assert_error(await c.request([UNREGISTER, rid, 8888888]), UNREGISTER, rid,
                         "wamp.error.no_such_registration")
            # a subscription / registration of ANOTHER session cannot be removed either
            other = await open_raw(kind, router)
            try:
                await other.hello()
                sub = await other.request([SUBSCRIBE, other.req(), {}, "com.example.errors.othertopic"])
                reg = await other.request([REGISTER, other.req(), {}, "com.example.errors.otherproc." + kind])
                assert sub[0] == SUBSCRIBED and reg[0] == REGISTERED, (sub, reg)
                rid = c.req()
                assert_error(await c.request([UNREGISTER, rid, reg[2]]), UNREGISTER, rid,
                             "wamp.error.no_such_registration")
                rid = c.req()
                assert_error(await c.request([UNSUBSCRIBE, rid, sub[2]]), UNSUBSCRIBE, rid,
                             "wamp.error.no_such_subscription")
            finally:
                await other.close()
            # the session is still usable after errors
            r = await c.request([SUBSCRIBE, c.req(), {}, "com.example.errors.ok"])
            assert r[0] == SUBSCRIBED, r
        finally:
            await c.close()

    run(main())


@pytest.mark.parametrize("kind", ["ws", "rs"])
def test_invalid_uris(router, kind):
    async def main():
        c = await open_raw(kind, router)
        try:
            await c.hello()
            for uri in BAD_URIS:
                for mtype, msg in [
                    (SUBSCRIBE, lambda rid: [SUBSCRIBE, rid, {}, uri]),
                    (PUBLISH, lambda rid: [PUBLISH, rid, {"acknowledge": True}, uri, [1]]),
                    (REGISTER, lambda rid: [REGISTER, rid, {}, uri]),
                    (CALL, lambda rid: [CALL, rid, {}, uri, [1]]),
                ]:
                    rid = c.req()
                    reply = await c.request(msg(rid))
                    assert_error(reply, mtype, rid, "wamp.error.invalid_uri")
            # still usable
            r = await c.request([PUBLISH, c.req(), {"acknowledge": True}, "com.example.valid", []])
            assert r[0] == PUBLISHED, r
        finally:
            await c.close()

    run(main())


MIXED_CASE = ["com.Example.Topic", "com.example.Proc"]


def test_loose_realm_accepts_mixed_case(router):
    async def main():
        c = await open_raw("ws", router)
        try:
            await c.hello()
            for uri in MIXED_CASE:
                r = await c.request([SUBSCRIBE, c.req(), {}, uri])
                assert r[0] == SUBSCRIBED, f"loose realm rejected {uri!r}: {r!r}"
                r = await c.request([REGISTER, c.req(), {}, uri])
                assert r[0] == REGISTERED, f"loose realm rejected {uri!r}: {r!r}"
                r = await c.request([PUBLISH, c.req(), {"acknowledge": True}, uri, []])
                assert r[0] == PUBLISHED, f"loose realm rejected {uri!r}: {r!r}"
        finally:
            await c.close()

    run(main())


def test_strict_realm_rejects_mixed_case(router_factory):
    r = router_factory(realms=[{"name": "realm1", "uri_check": "strict"}])

    async def main():
        c = await open_raw("rs", r)
        try:
            await c.hello()
            for uri in MIXED_CASE + ["com.example.has-dash"]:
                for mtype, msg in [
                    (SUBSCRIBE, lambda rid: [SUBSCRIBE, rid, {}, uri]),
                    (PUBLISH, lambda rid: [PUBLISH, rid, {"acknowledge": True}, uri, []]),
                    (REGISTER, lambda rid: [REGISTER, rid, {}, uri]),
                    (CALL, lambda rid: [CALL, rid, {}, uri, []]),
                ]:
                    rid = c.req()
                    assert_error(await c.request(msg(rid)), mtype, rid, "wamp.error.invalid_uri")
            # strict-valid URIs are accepted
            ok = "com.example.strict_ok.v2"
            assert (await c.request([SUBSCRIBE, c.req(), {}, ok]))[0] == SUBSCRIBED
            assert (await c.request([REGISTER, c.req(), {}, ok]))[0] == REGISTERED
            assert (await c.request([PUBLISH, c.req(), {"acknowledge": True}, ok, []]))[0] == PUBLISHED
        finally:
            await c.close()

        # and Autobahn|Python sees the same as an ApplicationError
        s = await connect(r, "ws", "msgpack")
        try:
            with pytest.raises(ApplicationError) as ei:
                await asyncio.wait_for(s.register(lambda: None, "com.Example.Topic"), T)
            assert ei.value.error == "wamp.error.invalid_uri"
        finally:
            await s.close()

    run(main())
