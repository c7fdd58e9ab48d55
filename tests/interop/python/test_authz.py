"""Authorization (issue 5) with Autobahn|Python: static roles and the dynamic authorizer.

Static roles (``[[realm.role]]``): the most specific matching permission decides
(exact > longest prefix > wildcard), ``{authid}`` / ``{authrole}`` in patterns
(the classic failure: a browser that edits a user id must not reach another
user's topic), a role without an entry may do nothing, meta procedures are
authorized like any call, ``disclose = true`` forces caller / publisher
disclosure, and a denial is ``wamp.error.not_authorized`` naming the action and
the URI (a PUBLISH only says so when acknowledged; otherwise the event is just not
delivered).

Dynamic authorizer (``authorizer = "..."``): asked for roles that are not listed,
with ({session, authid, authrole, authmethod, authprovider}, uri, action); it
answers a bool or {allow, disclose, cache}; cached answers are reused for that
session + URI + action; errors, odd answers, timeouts and a missing authorizer
deny.

Sessions log in with WAMP-CRA (plain secrets: fast, unlike Argon2 tickets).
"""

import asyncio
import time
import uuid

import pytest
from autobahn.wamp import auth as ab_auth
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, RegisterOptions, SubscribeOptions

from wamplib import LOOSE_REALM, T, ack, call, close_all, connect, marker, run, sid, subscribe, unique_uri

TAG = uuid.uuid4().hex[:12]
SECRETS = {name: f"{name}-secret-{TAG}" for name in ("alice", "bob", "backend", "authz")}
NOT_AUTHORIZED = "wamp.error.not_authorized"


def cra(name):
    return {"authid": name, "secret": SECRETS[name]}


def perm(uri, allow, match=None, **kw):
    p = {"uri": uri, "allow": list(allow)}
    if match:
        p["match"] = match
    p.update(kw)
    return p


USER_PERMISSIONS = [
    perm("com.app.", ["call", "subscribe"], "prefix"),
    perm("com.app.user.", [], "prefix"),
    perm("com.app.user.{authid}.", ["publish", "subscribe"], "prefix", disclose=False),
    perm("com.app.role.{authrole}.", ["publish", "subscribe"], "prefix"),
    perm("com.app.admin.", [], "prefix"),
    perm("com.app.admin.ping", ["call"]),
    perm("com.app.admin..status", ["subscribe"], "wildcard"),  # loses against the prefix above
    perm("com.ext..status", ["publish"], "wildcard"),
    perm("com.app.audit.", ["call", "publish", "subscribe"], "prefix", disclose=True),
    perm("wamp.session.count", ["call"]),
]

STATIC_REALM = {
    "name": "realm1", "uri_check": "loose",
    "auth": {"methods": ["anonymous", "wampcra"], "max_failures": 1000, "max_failures_per_address": 100000,
             "wampcra": [dict(cra("alice"), role="user"), dict(cra("bob"), role="user"),
                         dict(cra("backend"), role="backend")]},
    "role": [
        {"name": "user", "permission": USER_PERMISSIONS},
        {"name": "backend", "permission": [perm("com.", ["call", "register", "publish", "subscribe"], "prefix"),
                                           perm("wamp.", ["call"], "prefix")]},
    ],
}


def cra_answer(secret):
    def on_challenge(session, challenge):
        return ab_auth.compute_wcs(secret, challenge.extra["challenge"])
    return on_challenge


async def login(router, name, transport="ws", serializer="json", realm="realm1"):
    return await connect(router, transport, serializer, realm=realm, authmethods=["wampcra"], authid=name,
                         on_challenge=cra_answer(SECRETS[name]))


async def denied(coro, action, uri):
    """`coro` must fail with wamp.error.not_authorized naming `action` and `uri`."""
    try:
        r = await asyncio.wait_for(coro, T)
    except ApplicationError as e:
        assert e.error == NOT_AUTHORIZED, f"{action} {uri}: expected {NOT_AUTHORIZED}, got {e.error} {e.args}"
        msg = e.args[0] if e.args else ""
        assert isinstance(msg, str) and action in msg and uri in msg, \
            f"the denial should name the action ({action}) and the URI ({uri}): {msg!r}"
        return e
    raise AssertionError(f"{action} {uri} must be denied, got {r!r}")


async def sub(session, uri, **options):
    return await asyncio.wait_for(session.subscribe(lambda *a, **k: None, uri,
                                                    options=SubscribeOptions(**options) if options else None), T)


def pub_ack(session, uri, *args):
    return session.publish(uri, *args, options=PublishOptions(acknowledge=True))


@pytest.fixture(scope="module")
def static_router(module_router_factory):
    return module_router_factory(realms=[STATIC_REALM])


# ==========================================================================
# static roles
# ==========================================================================

def test_without_roles_everything_is_allowed(router):
    """The default realm lists no role and no authorizer: every action is allowed."""
    async def main():
        a, b = await connect(router), await connect(router)
        try:
            uri = unique_uri("com.anything", "x")
            await asyncio.wait_for(a.register(lambda: "ok", uri), T)
            assert await call(b, uri) == "ok"
            inbox, _ = await subscribe(a, uri + ".t")
            await ack(b, uri + ".t", 1)
            await inbox.wait_for(lambda e: e.args == [1])
            assert isinstance(await call(b, "wamp.session.count"), int)
        finally:
            await close_all(a, b)

    run(main())


def test_per_user_topics(static_router):
    """{authid}: alice cannot subscribe to or publish on bob's topic (the classic
    failure: a browser editing the user id), by exact URI or by pattern."""
    async def main():
        alice, bob = await login(static_router, "alice"), await login(static_router, "bob", "rs", "msgpack")
        try:
            assert alice.joined.result().authrole == "user" and bob.joined.result().authid == "bob"
            mine = f"com.app.user.alice.inbox.{TAG}"
            bobs = f"com.app.user.bob.inbox.{TAG}"
            a_inbox, _ = await subscribe(alice, mine)
            b_inbox, _ = await subscribe(bob, bobs)

            # alice's own topic: publish and subscribe
            await ack(alice, mine, "to myself", options={"exclude_me": False})
            await a_inbox.wait_for(lambda e: e.args == ["to myself"])

            # bob's topic: no subscribe, no publish (acknowledged -> error)
            await denied(sub(alice, bobs), "subscribe", bobs)
            await denied(pub_ack(alice, bobs, "spoofed"), "publish", bobs)
            # ... also not by a pattern that covers it
            await denied(sub(alice, "com.app.user.", match="prefix"), "subscribe", "com.app.user.")
            await denied(sub(alice, "com.app.user..inbox", match="wildcard"), "subscribe", "com.app.user..inbox")
            await denied(sub(alice, "com.app.user.b", match="prefix"), "subscribe", "com.app.user.b")
            # ... nor through an authid prefix ("alice" + "x")
            await denied(sub(alice, "com.app.user.alicex.inbox"), "subscribe", "com.app.user.alicex.inbox")
            # unacknowledged: no error, and not delivered
            alice.publish(bobs, "sneaky")
            await denied(pub_ack(alice, bobs, "spoofed again"), "publish", bobs)
            await marker(bob, bobs, "end", exclude_me=False)
            await b_inbox.marker("end")
            assert b_inbox.before_marker("end") == [], f"bob got alice's publications: {b_inbox.args!r}"
            assert alice.is_attached(), "a denial must not end the session"

            # {authrole}: topics of one's own role only
            await ack(alice, "com.app.role.user.news", 1)
            await denied(pub_ack(alice, "com.app.role.backend.news", 1), "publish", "com.app.role.backend.news")
        finally:
            await close_all(alice, bob)

    run(main())


@pytest.mark.parametrize("pattern,match", [("com.app.", "prefix"), ("com.app.u", "prefix"),
                                           ("com.app...inbox", "wildcard"), ("com...bob.inbox", "wildcard")])
def test_pattern_subscription_cannot_reach_other_users_topics(static_router, pattern, match):
    """The classic failure by pattern: alice may subscribe under "com.app." (prefix
    permission), but a pattern subscription there must not deliver bob's per-user
    events to her. Either the SUBSCRIBE is denied, or those events are not
    delivered; what she may subscribe to still arrives."""
    async def main():
        alice, bob = await login(static_router, "alice"), await login(static_router, "bob")
        try:
            inbox = None
            try:
                inbox, _ = await subscribe(alice, pattern, match=match)
            except ApplicationError as e:
                assert e.error == NOT_AUTHORIZED, e
            bobs = "com.app.user.bob.inbox"
            b_inbox, _ = await subscribe(bob, bobs)
            await ack(bob, bobs, "private", options={"exclude_me": False})
            await b_inbox.wait_for(lambda e: e.args == ["private"])
            if inbox is not None:
                await marker(bob, bobs, "end", exclude_me=False)
                await b_inbox.marker("end")
                await asyncio.sleep(0.2)
                got = [(e.details.topic, e.args) for e in inbox.events]
                assert not got, f"alice's {match} subscription {pattern!r} received bob's per-user events: {got!r}"
        finally:
            await close_all(alice, bob)

    run(main())


def test_most_specific_permission_wins(static_router):
    async def main():
        backend, alice = await login(static_router, "backend"), await login(static_router, "alice")
        try:
            for proc in ("com.app.echo", "com.app.admin.ping", "com.app.admin.reset", "com.app.user.bob.get"):
                await asyncio.wait_for(backend.register(lambda proc=proc: proc, proc), T)
            # prefix "com.app." allows call
            assert await call(alice, "com.app.echo") == "com.app.echo"
            # exact beats the longer prefix "com.app.admin." that allows nothing
            assert await call(alice, "com.app.admin.ping") == "com.app.admin.ping"
            await denied(alice.call("com.app.admin.reset"), "call", "com.app.admin.reset")
            # the longest prefix wins: "com.app.user." (nothing) over "com.app." (call)
            await denied(alice.call("com.app.user.bob.get"), "call", "com.app.user.bob.get")
            # a prefix beats a wildcard: "com.app.admin." over "com.app.admin..status"
            await denied(sub(alice, "com.app.admin.db.status"), "subscribe", "com.app.admin.db.status")
            # where only a wildcard matches, it decides
            await ack(alice, "com.ext.db.status", 1)
            await denied(pub_ack(alice, "com.ext.db.other", 1), "publish", "com.ext.db.other")
            await denied(pub_ack(alice, "com.ext.db.status.more", 1), "publish", "com.ext.db.status.more")
            # what no permission mentions is denied; actions the winner does not list too
            await denied(pub_ack(alice, "org.other.topic", 1), "publish", "org.other.topic")
            await denied(pub_ack(alice, "com.app.news", 1), "publish", "com.app.news")
            await denied(alice.register(lambda: 0, "com.app.mine"), "register", "com.app.mine")
            await denied(alice.register(lambda: 0, "com.app.user.alice.rpc"), "register", "com.app.user.alice.rpc")
            # subscribe allowed by "com.app."
            await sub(alice, "com.app.news")
        finally:
            await close_all(backend, alice)

    run(main())


def test_role_without_permissions_is_denied(static_router):
    """Anonymous sessions get role "anonymous", which realm1 does not list (and
    there is no authorizer): every action is denied, the session stays."""
    async def main():
        backend = await login(static_router, "backend")
        anon = await connect(static_router, "rs", "cbor")
        try:
            assert anon.joined.result().authrole == "anonymous"
            await asyncio.wait_for(backend.register(lambda: "x", "com.app.echo2"), T)
            await denied(anon.call("com.app.echo2"), "call", "com.app.echo2")
            await denied(sub(anon, "com.app.news"), "subscribe", "com.app.news")
            await denied(pub_ack(anon, "com.app.news", 1), "publish", "com.app.news")
            await denied(anon.register(lambda: 0, "com.app.anon"), "register", "com.app.anon")
            await denied(anon.call("wamp.session.count"), "call", "wamp.session.count")
            assert anon.is_attached()
        finally:
            await close_all(backend, anon)

    run(main())


def test_meta_procedures_are_authorized(static_router):
    async def main():
        alice, backend = await login(static_router, "alice"), await login(static_router, "backend")
        try:
            assert isinstance(await call(alice, "wamp.session.count"), int)
            for proc, args in (("wamp.session.list", ()), ("wamp.session.get", (sid(backend),)),
                               ("wamp.session.kill", (sid(backend),)), ("wamp.registration.list", ())):
                await denied(alice.call(proc, *args), "call", proc)
            assert backend.is_attached(), "a denied wamp.session.kill must not kill"
            # the backend role may call the meta API
            assert sid(alice) in await call(backend, "wamp.session.list")
            # subscribing to meta topics is a subscribe like any other
            await denied(sub(alice, "wamp.session.on_join"), "subscribe", "wamp.session.on_join")
        finally:
            await close_all(alice, backend)

    run(main())


def test_disclose_permission(static_router):
    """disclose = true on com.app.audit.: the caller / publisher is disclosed
    although it did not ask; elsewhere it is not."""
    async def main():
        backend, alice, bob = [await login(static_router, n) for n in ("backend", "alice", "bob")]
        try:
            seen = {}

            def who(proc):
                def handler(details=None):
                    seen[proc] = (details.caller, details.caller_authid)
                    return proc
                return handler

            for proc in ("com.app.audit.log", "com.app.plain"):
                await asyncio.wait_for(backend.register(who(proc), proc, options=RegisterOptions(details=True)), T)
            assert await call(alice, "com.app.audit.log") == "com.app.audit.log"
            assert await call(alice, "com.app.plain") == "com.app.plain"
            assert seen["com.app.audit.log"] == (sid(alice), "alice"), seen
            assert seen["com.app.plain"] == (None, None), seen

            feed = f"com.app.audit.feed.{TAG}"
            inbox, _ = await subscribe(bob, feed)
            await ack(alice, feed, "entry")
            ev = await inbox.wait_for(lambda e: e.args == ["entry"])
            assert (ev.details.publisher, ev.details.publisher_authid) == (sid(alice), "alice"), ev.details
            # control: no disclosure on alice's own topic
            own = f"com.app.user.alice.t.{TAG}"
            inbox2, _ = await subscribe(alice, own)
            await ack(alice, own, "x", options={"exclude_me": False})
            ev = await inbox2.wait_for(lambda e: e.args == ["x"])
            assert ev.details.publisher is None, ev.details
        finally:
            await close_all(backend, alice, bob)

    run(main())


# ==========================================================================
# dynamic authorizer
# ==========================================================================

class Authorizer:
    """The authorizer procedure: its answer depends on the URI's third component
    (com.dyn.<kind>....); records every call as (details, uri, action) and the
    options (the match policy) separately."""

    def __init__(self):
        self.calls = []
        self.options = []

    async def __call__(self, details, uri, action, options):
        self.calls.append((details, uri, action))
        self.options.append(options)
        kind = uri.split(".")[2]
        if kind == "allow":
            return True
        if kind == "deny":
            return False
        if kind == "cached":
            return {"allow": True, "cache": True}
        if kind == "cacheddeny":
            return {"allow": False, "cache": True}
        if kind == "disclose":
            return {"allow": True, "disclose": True}
        if kind == "error":
            raise ApplicationError("com.example.authorizer_failed", "the authorizer broke")
        if kind == "slow":
            await asyncio.sleep(3)
            return True
        if kind == "garbage":
            return 42
        return False

    def count(self, session, uri, action):
        return sum(1 for d, u, a in self.calls if d.get("session") == sid(session) and u == uri and a == action)


@pytest.fixture(scope="module")
def dyn_router(module_router_factory):
    """realm1: roles not listed are decided by com.example.authorize (timeout 1s);
    realm2: its authorizer procedure is never registered."""
    return module_router_factory(realms=[
        {"name": "realm1", "uri_check": "loose", "authorizer": "com.example.authorize", "authorizer_timeout": "1s",
         "auth": {"methods": ["anonymous", "wampcra"], "wampcra": [dict(cra("authz"), role="authorizer")]},
         "role": [{"name": "authorizer", "permission": [perm("com.example.authorize", ["register"])]}]},
        dict(LOOSE_REALM, name="realm2", authorizer="com.example.nobody", authorizer_timeout="1s"),
    ])


async def start_authorizer(router):
    z = Authorizer()
    s = await login(router, "authz")
    await asyncio.wait_for(s.register(z, "com.example.authorize"), T)
    return z, s


def test_authorizer_answers(dyn_router):
    async def main():
        z, zs = await start_authorizer(dyn_router)
        s = await connect(dyn_router, "rs", "msgpack")
        try:
            uri = f"com.dyn.allow.{TAG}"
            await ack(s, uri, 1)
            assert z.calls, "the authorizer was not asked"
            details, u, action = z.calls[-1]
            j = s.joined.result()
            assert (u, action) == (uri, "publish"), z.calls[-1]
            assert details == {"session": j.session, "authid": j.authid, "authrole": "anonymous",
                               "authmethod": "anonymous", "authprovider": "static"}, details
            await sub(s, uri)
            await asyncio.wait_for(s.register(lambda: "dyn", uri + ".p"), T)
            assert await call(s, uri + ".p") == "dyn"
            assert all(o == {"match": "exact"} for o in z.options), z.options
            assert [(u, a) for _, u, a in z.calls[1:]] == [(uri, "subscribe"), (uri + ".p", "register"),
                                                          (uri + ".p", "call")], z.calls
            # a plain bool is not cached: asked every time
            for _ in range(3):
                await ack(s, uri, 2)
            assert z.count(s, uri, "publish") == 4, z.calls

            await denied(pub_ack(s, "com.dyn.deny.x", 1), "publish", "com.dyn.deny.x")
            await denied(sub(s, "com.dyn.deny.x"), "subscribe", "com.dyn.deny.x")
            await denied(s.call("com.dyn.error.x"), "call", "com.dyn.error.x")
            await denied(s.register(lambda: 0, "com.dyn.garbage.x"), "register", "com.dyn.garbage.x")
            t0 = time.monotonic()
            await denied(pub_ack(s, "com.dyn.slow.x", 1), "publish", "com.dyn.slow.x")
            assert time.monotonic() - t0 < 2.9, "the authorizer timeout (1s) was not applied"
            assert s.is_attached()

            # a listed role is decided statically: the authorizer's own session may only register
            before = len(z.calls)
            await denied(pub_ack(zs, uri, 1), "publish", uri)
            assert len(z.calls) == before, "a listed role must not go to the authorizer"
        finally:
            await close_all(s, zs)

    run(main())


def test_authorizer_cache(dyn_router):
    async def main():
        z, zs = await start_authorizer(dyn_router)
        s, s2 = await connect(dyn_router), await connect(dyn_router)
        try:
            uri = f"com.dyn.cached.{TAG}"
            for i in range(5):
                await ack(s, uri, i)
            assert z.count(s, uri, "publish") == 1, f"a cached answer must be reused: {z.calls!r}"
            # unacknowledged publishes use the cache too
            for i in range(3):
                s.publish(uri, i)
            await ack(s, uri, "last")
            assert z.count(s, uri, "publish") == 1, z.calls
            # cached per action, URI and session
            await sub(s, uri)
            assert z.count(s, uri, "subscribe") == 1, z.calls
            await ack(s, uri + ".other", 1)
            assert z.count(s, uri + ".other", "publish") == 1, z.calls
            await ack(s2, uri, 1)
            assert z.count(s2, uri, "publish") == 1, z.calls
            # a cached denial
            deny = f"com.dyn.cacheddeny.{TAG}"
            for _ in range(3):
                await denied(pub_ack(s, deny, 1), "publish", deny)
            assert z.count(s, deny, "publish") == 1, z.calls

            # a session that ends takes its cache along: the next one is asked again
            await s.close()
            s3 = await connect(dyn_router)
            s = s3
            await ack(s3, uri, 1)
            await ack(s3, uri, 2)
            assert z.count(s3, uri, "publish") == 1, z.calls
            assert len({d["session"] for d, u, a in z.calls if u == uri and a == "publish"}) == 3, z.calls
        finally:
            await close_all(s, s2, zs)

    run(main())


def test_authorizer_disclose(dyn_router):
    async def main():
        z, zs = await start_authorizer(dyn_router)
        callee, caller = await connect(dyn_router), await connect(dyn_router, "rs", "cbor")
        try:
            seen = {}

            def who(proc):
                def handler(details=None):
                    seen[proc] = details.caller
                    return proc
                return handler

            forced, plain = f"com.dyn.disclose.{TAG}", f"com.dyn.allow.{TAG}"
            for proc in (forced, plain):
                await asyncio.wait_for(callee.register(who(proc), proc, options=RegisterOptions(details=True)), T)
            await call(caller, forced)
            await call(caller, plain)
            assert seen == {forced: sid(caller), plain: None}, seen
        finally:
            await close_all(callee, caller, zs)

    run(main())


def test_authorizer_missing_denies(dyn_router):
    async def main():
        s = await connect(dyn_router, realm="realm2")
        try:
            await denied(pub_ack(s, "com.x.t", 1), "publish", "com.x.t")
            await denied(sub(s, "com.x.t"), "subscribe", "com.x.t")
            await denied(s.register(lambda: 0, "com.x.p"), "register", "com.x.p")
            assert s.is_attached()
        finally:
            await s.close()
        # realm1 before its authorizer registered
        s = await connect(dyn_router)
        try:
            await denied(pub_ack(s, "com.dyn.allow.early", 1), "publish", "com.dyn.allow.early")
        finally:
            await s.close()

    run(main())
