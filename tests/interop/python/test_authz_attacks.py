"""Attacks on the authorization of per-user URIs (issue 12, follow-up to items 1, 2,
3, 17, 22), with Autobahn|Python: "a user reads or forges another user's data by
URI", through the way the router builds a user's URIs from its identity.

- An authid that spells a placeholder (``{authrole}``) must stay literal: it
  must not be substituted a second time into another user's URI.
- A prefix permission that ends with ``{authid}`` (no trailing dot) grants the
  user's own subtree, not the subtrees of every authid that starts with it
  (``al`` must not reach ``com.app.home.alice.*``).
- An authenticator answer naming a variant of a static principal's authid
  (``Peter``, ``peter ``) is refused like the principal's own authid.
- The router's own calls to the authenticator procedure go only to a callee
  that registered that exact procedure, never to a pattern registration that
  happens to match it (it would receive every ticket and choose every role).
"""

import asyncio
import uuid

import pytest
from autobahn.wamp import auth as ab_auth
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, RegisterOptions

from wamplib import JoinFailed, T, ack, close_all, connect, marker, run, subscribe

TAG = uuid.uuid4().hex[:12]
SECRETS = {n: f"{n}-secret-{TAG}" for n in ("al", "alice", "user", "peter", "plugin", "backend")}
SIGNUP = f"signup-token-{TAG}"
NOT_AUTHORIZED = "wamp.error.not_authorized"
AUTH_FAILED = "wamp.error.authentication_failed"


def perm(uri, allow, match=None):
    p = {"uri": uri, "allow": list(allow)}
    if match:
        p["match"] = match
    return p


USER = [
    perm("com.app.inbox.{authid}", ["subscribe"]),
    perm("com.app.home.{authid}", ["subscribe", "publish"], "prefix"),
]
TRUSTED = [perm("com.example.authenticate", ["register"]),
           perm("com.", ["publish", "subscribe"], "prefix")]
# may register a prefix of its own that (by the admin's mistake or not)
# also matches the authenticator procedure
PLUGIN = [perm("com.example.", ["register"], "prefix")]

REALM = {
    "name": "realm1", "uri_check": "loose",
    "auth": {"methods": ["ticket", "wampcra"], "authenticator": "com.example.authenticate",
             "authenticator_timeout": "2s", "max_failures": 1000, "max_failures_per_address": 100000,
             "wampcra": [{"authid": "al", "secret": SECRETS["al"], "role": "user"},
                         {"authid": "alice", "secret": SECRETS["alice"], "role": "user"},
                         {"authid": "user", "secret": SECRETS["user"], "role": "user"},
                         {"authid": "peter", "secret": SECRETS["peter"], "role": "user"},
                         {"authid": "plugin", "secret": SECRETS["plugin"], "role": "plugin"},
                         {"authid": "backend", "secret": SECRETS["backend"], "role": "trusted"}]},
    "role": [{"name": "user", "permission": USER}, {"name": "trusted", "permission": TRUSTED},
             {"name": "plugin", "permission": PLUGIN}],
}


# Roles not listed (anonymous) are decided by com.example.authorize.
DYN_REALM = {
    "name": "realm2", "uri_check": "loose", "authorizer": "com.example.authorize", "authorizer_timeout": "2s",
    "auth": {"methods": ["anonymous", "wampcra"],
             "wampcra": [{"authid": "plugin", "secret": SECRETS["plugin"], "role": "plugin"}]},
    "role": [{"name": "plugin", "permission": PLUGIN}],
}


@pytest.fixture(scope="module")
def xrouter(module_router_factory):
    return module_router_factory(realms=[REALM, DYN_REALM])


async def login(router, name, realm="realm1", transport="ws", serializer="json"):
    def on_challenge(session, challenge):
        return ab_auth.compute_wcs(SECRETS[name], challenge.extra["challenge"])
    return await connect(router, transport, serializer, realm=realm, authmethods=["wampcra"], authid=name,
                         on_challenge=on_challenge)


def ticket(token):
    return lambda session, challenge: token


class Signup:
    """A sign-up style authenticator: users pick their names; SIGNUP is a valid
    token for any name not taken by a static principal (the router refuses
    those). It answers with the checked authid, as docs/SECURITY.md says it
    should; "as-<name>" tokens answer <name> whatever the claim."""

    def __init__(self):
        self.calls = []

    def __call__(self, realm, authid, details):
        self.calls.append(authid)
        t = details.get("ticket")
        if t == SIGNUP:
            return {"role": "user", "authid": authid}
        if t.startswith("as-"):
            return {"role": "user", "authid": t[3:]}
        raise ApplicationError("com.example.invalid_token", "invalid token")


async def start_signup(router):
    z = Signup()
    backend = await login(router, "backend")
    await asyncio.wait_for(backend.register(z, "com.example.authenticate"), T)
    return z, backend


async def refused(coro):
    try:
        r = await asyncio.wait_for(coro, T)
    except ApplicationError as e:
        assert e.error == NOT_AUTHORIZED, (e.error, e.args)
        return e
    raise AssertionError(f"must be refused with {NOT_AUTHORIZED}, got {r!r}")


async def nothing_but_marker(inbox, backend, topic):
    tag = uuid.uuid4().hex
    await marker(backend, topic, tag)
    got = await inbox.wait_for(lambda e: e.args == ["marker", tag])
    return [e for e in inbox.events if e is not got]


def test_an_authid_spelling_a_placeholder_stays_literal(xrouter):
    """authid "{authrole}" with role "user": its `com.app.inbox.{authid}` is
    `com.app.inbox.{authrole}`, not user "user"'s `com.app.inbox.user`."""
    async def main():
        z, backend = await start_signup(xrouter)
        mallory = victim = None
        try:
            mallory = await connect(xrouter, authmethods=["ticket"], authid="{authrole}", on_challenge=ticket(SIGNUP))
            assert mallory.joined.result().authid == "{authrole}"
            await refused(mallory.subscribe(lambda *a, **k: None, "com.app.inbox.user"))
            await refused(mallory.subscribe(lambda *a, **k: None, "com.app.home.user.diary"))
            await refused(mallory.publish("com.app.home.user.diary", "forged",
                                          options=PublishOptions(acknowledge=True)))
            # user "user" still gets its own inbox
            victim = await login(xrouter, "user")
            inbox, _ = await subscribe(victim, "com.app.inbox.user")
            assert await nothing_but_marker(inbox, backend, "com.app.inbox.user") == []
        finally:
            await close_all(mallory, victim, backend)

    run(main())


@pytest.mark.parametrize("topic,match", [
    ("com.app.home.alice.diary", None),      # another user's subtree, by exact URI
    ("com.app.home.alice", None),            # another user's own URI
    ("com.app.home.alice.", "prefix"),       # by prefix
    ("com.app.home.al", "prefix"),           # a prefix that also matches alice's
    ("com.app.home.alice.", "wildcard"),     # by wildcard
])
def test_a_prefix_permission_ending_with_the_authid_is_the_users_subtree(xrouter, topic, match):
    """`com.app.home.{authid}` (prefix, no trailing dot) gives al
    `com.app.home.al` and `com.app.home.al.*`, not `com.app.home.alice.*`."""
    async def main():
        al = await login(xrouter, "al")
        try:
            opts = {"match": match} if match else {}
            await refused(subscribe(al, topic, **opts))
            if match is None:
                await refused(al.publish(topic, "forged", options=PublishOptions(acknowledge=True)))
            # al's own subtree is still allowed
            for own, m in (("com.app.home.al", None), ("com.app.home.al.diary", None),
                           ("com.app.home.al.", "prefix"), ("com.app.home.al..x", "wildcard")):
                await subscribe(al, own, **({"match": m} if m else {}))
            await ack(al, "com.app.home.al.diary", "mine")
        finally:
            await close_all(al)

    run(main())


@pytest.mark.parametrize("transport,serializer", [("rs", "msgpack"), ("rs", "cbor"), ("ws", "cbor")])
def test_the_users_subtree_over_every_serializer(xrouter, transport, serializer):
    """The same decisions over MessagePack and CBOR: al gets no event of
    alice's subtree, by exact topic or by pattern, and its own still arrive."""
    async def main():
        al = await login(xrouter, "al", transport=transport, serializer=serializer)
        backend = await login(xrouter, "backend")
        try:
            for topic, opts in (("com.app.home.alice.diary", {}), ("com.app.home.al", {"match": "prefix"}),
                                ("com.app.home..diary", {"match": "wildcard"})):
                await refused(subscribe(al, topic, **opts))
            inbox, _ = await subscribe(al, "com.app.home.al.", match="prefix")
            await ack(backend, "com.app.home.alice.diary", "alice's")
            assert await nothing_but_marker(inbox, backend, "com.app.home.al.diary") == []
        finally:
            await close_all(al, backend)

    run(main())


@pytest.mark.parametrize("variant", ["Peter", "PETER", "peter ", " peter", "peter\t", "peter\u200b"])
def test_an_authenticator_answer_cannot_name_a_variant_of_a_static_principal(xrouter, variant):
    """The authenticator answers an authid that differs from static "peter" only
    by case, surrounding whitespace or invisible characters: refused."""
    async def main():
        z, backend = await start_signup(xrouter)
        try:
            try:
                s = await connect(xrouter, authmethods=["ticket"], authid="nobody", on_challenge=ticket(f"as-{variant}"))
            except JoinFailed as e:
                assert e.details.reason == AUTH_FAILED, (e.details.reason, e.details.message)
                return
            j = s.joined.result()
            await s.close()
            raise AssertionError(f"the authenticator's {variant!r} joined as {j.authid!r}")
        finally:
            await close_all(backend)

    run(main())


@pytest.mark.parametrize("name", ["anonymous-1f2e3d4c5b6a7988", "Anonymous-1f2e3d4c5b6a7988", "anonymous-"])
def test_an_authenticator_answer_cannot_take_a_router_assigned_authid(xrouter, name):
    """`anonymous-<hex>` authids are the router's: anonymous sessions and the
    sessions of role-only authenticator answers get them. A sign-up
    authenticator that lets a user pick the name of such a session (seen as a
    publisher_authid in a chat) would share that session's `{authid}` URIs: refused."""
    async def main():
        z, backend = await start_signup(xrouter)
        try:
            try:
                s = await connect(xrouter, authmethods=["ticket"], authid=name, on_challenge=ticket(SIGNUP))
            except JoinFailed as e:
                assert e.details.reason == AUTH_FAILED, (e.details.reason, e.details.message)
                return
            j = s.joined.result()
            await s.close()
            raise AssertionError(f"the authenticator's {name!r} joined as {j.authid!r}")
        finally:
            await close_all(backend)

    run(main())


def test_router_calls_to_the_authenticator_skip_pattern_registrations(xrouter):
    """A session allowed to register the prefix `com.example.` (which matches
    `com.example.authenticate`) receives no ticket and decides no login while
    the authenticator is not registered: the login fails instead."""
    async def main():
        plugin = await login(xrouter, "plugin")
        seen = []

        def fake(realm, authid, details):
            seen.append(details.get("ticket"))
            return {"role": "trusted", "authid": authid}

        try:
            await asyncio.wait_for(plugin.register(fake, "com.example.", options=RegisterOptions(match="prefix")), T)
            try:
                s = await connect(xrouter, authmethods=["ticket"], authid="victim", on_challenge=ticket("victims-secret"))
            except JoinFailed as e:
                assert e.details.reason == AUTH_FAILED, (e.details.reason, e.details.message)
            else:
                j = s.joined.result()
                await s.close()
                raise AssertionError(f"a pattern registration decided a login: {j.authid} as {j.authrole}")
            assert seen == [], f"the pattern registration received tickets: {seen}"
            # with the real authenticator registered, logins work again
            z, backend = await start_signup(xrouter)
            try:
                s = await connect(xrouter, authmethods=["ticket"], authid=f"carol-{TAG}", on_challenge=ticket(SIGNUP))
                assert s.joined.result().authid == f"carol-{TAG}"
                await s.close()
            finally:
                await close_all(backend)
            assert seen == []
        finally:
            await close_all(plugin)

    run(main())


def test_router_calls_to_the_authorizer_skip_pattern_registrations(xrouter):
    """The same for the authorizer procedure: a prefix registration matching it
    answers no authorization question (the action is denied instead)."""
    async def main():
        plugin = await login(xrouter, "plugin", realm="realm2")
        seen = []

        def yes(details, uri, action, options=None):
            seen.append((uri, action))
            return True

        anon = None
        try:
            await asyncio.wait_for(plugin.register(yes, "com.example.", options=RegisterOptions(match="prefix")), T)
            anon = await connect(xrouter, realm="realm2")
            await refused(subscribe(anon, "com.secret.topic"))
            assert seen == [], f"the pattern registration was asked: {seen}"
        finally:
            await close_all(anon, plugin)

    run(main())
