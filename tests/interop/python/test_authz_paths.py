"""Every path from a URI to data is authorized (issue 12, items 1-3), with Autobahn|Python.

1. Pattern subscriptions and registrations: a pattern is allowed only if the
   action is allowed on every URI it can match. With only an EXACT permission
   on ``com.app.inbox.{authid}``, ``al`` may not subscribe to the prefix
   ``com.app.inbox.al`` (which matches ``com.app.inbox.alice``), and an exact
   permission on ``com.app.news`` does not let the prefix ``com.app.news`` reach
   ``com.app.news.internal.salaries``: no live event and no retained event.
2. ``wamp.subscription.get_events`` (event history) returns only the events
   whose topic the reader may subscribe to (all of them to a reader allowed the
   whole subscription).
3. ``wamp.session.add_testament`` is checked as a PUBLISH of the session when
   added: a topic it may not publish to is refused with
   ``wamp.error.not_authorized`` (and never published), including by the
   realm's authorizer procedure; reserved and invalid topics are refused.

Sessions log in with WAMP-CRA (plain secrets: fast, unlike Argon2 tickets).
"""

import asyncio
import uuid

import pytest
from autobahn.wamp import auth as ab_auth
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import RegisterOptions

from wamplib import QUIET, T, ack, call, close_all, connect, marker, run, subscribe

TAG = uuid.uuid4().hex[:12]
USERS = ("al", "alice", "backend", "authz")
SECRETS = {name: f"{name}-secret-{TAG}" for name in USERS}
NOT_AUTHORIZED = "wamp.error.not_authorized"
INVALID_URI = "wamp.error.invalid_uri"


def perm(uri, allow, match=None):
    p = {"uri": uri, "allow": list(allow)}
    if match:
        p["match"] = match
    return p


USER = [
    perm("com.app.inbox.{authid}", ["subscribe"]),
    perm("com.app.news", ["subscribe"]),
    perm("com.app.rpc.{authid}", ["register"]),
    perm("com.app.chat.{authid}", ["publish"]),
    perm("wamp.subscription.lookup", ["call"]),
    perm("wamp.subscription.get_events", ["call"]),
    perm("wamp.session.add_testament", ["call"]),
]
BACKEND = [perm("com.", ["call", "register", "publish", "subscribe"], "prefix"),
           perm("wamp.", ["call"], "prefix")]

REALM = {
    "name": "realm1", "uri_check": "loose",
    "auth": {"methods": ["wampcra"], "max_failures": 1000, "max_failures_per_address": 100000,
             "wampcra": [{"authid": "al", "secret": SECRETS["al"], "role": "user"},
                         {"authid": "alice", "secret": SECRETS["alice"], "role": "user"},
                         {"authid": "backend", "secret": SECRETS["backend"], "role": "backend"}]},
    "role": [{"name": "user", "permission": USER}, {"name": "backend", "permission": BACKEND}],
    "history": [{"topic": "com.app.inbox.", "match": "prefix", "limit": 100},
                {"topic": "com.app.news", "match": "prefix", "limit": 100}],
}
# Roles not listed (anonymous) are decided by com.example.authorize.
DYN_REALM = {
    "name": "realm2", "uri_check": "loose", "authorizer": "com.example.authorize", "authorizer_timeout": "2s",
    "auth": {"methods": ["anonymous", "wampcra"],
             "wampcra": [{"authid": "authz", "secret": SECRETS["authz"], "role": "authorizer"},
                         {"authid": "backend", "secret": SECRETS["backend"], "role": "backend"}]},
    "role": [{"name": "authorizer", "permission": [perm("com.example.authorize", ["register"])]},
             {"name": "backend", "permission": BACKEND}],
    "history": [{"topic": "com.dyn.", "match": "prefix", "limit": 100}],
}


@pytest.fixture(scope="module")
def prouter(module_router_factory):
    return module_router_factory(realms=[REALM, DYN_REALM])


async def login(router, name, realm="realm1"):
    def on_challenge(session, challenge):
        return ab_auth.compute_wcs(SECRETS[name], challenge.extra["challenge"])
    return await connect(router, realm=realm, authmethods=["wampcra"], authid=name, on_challenge=on_challenge)


async def refused(coro, error=NOT_AUTHORIZED, *, names=()):
    try:
        r = await asyncio.wait_for(coro, T)
    except ApplicationError as e:
        assert e.error == error, f"expected {error}, got {e.error} {e.args}"
        msg = e.args[0] if e.args else ""
        for n in names:
            assert n in msg, f"the error should name {n!r}: {msg!r}"
        return e
    raise AssertionError(f"must be refused with {error}, got {r!r}")


# ==========================================================================
# 1. pattern subscriptions and registrations
# ==========================================================================

@pytest.mark.parametrize("pattern,match,victim_topic", [
    ("com.app.inbox.al", "prefix", "com.app.inbox.alice"),         # the first example
    ("com.app.inbox.", "prefix", "com.app.inbox.alice"),
    ("com.app.inbox.", "wildcard", "com.app.inbox.alice"),
    ("com.app.news", "prefix", "com.app.news.internal.salaries"),  # the second example
    ("com.app..internal.salaries", "wildcard", "com.app.news.internal.salaries"),
])
def test_pattern_subscription_reaches_no_forbidden_event(prouter, pattern, match, victim_topic):
    """The pattern is refused: no live event, no retained event of a topic the
    role may not subscribe to reaches the session."""
    async def main():
        al, backend = await login(prouter, "al"), await login(prouter, "backend")
        try:
            await ack(backend, victim_topic, "retained secret", options={"retain": True})
            inbox = None
            try:
                inbox, _ = await subscribe(al, pattern, match=match, get_retained=True)
            except ApplicationError as e:
                assert e.error == NOT_AUTHORIZED, e
                assert "subscribe" in e.args[0] and pattern in e.args[0], e.args
            await ack(backend, victim_topic, "live secret")
            if inbox is not None:
                await asyncio.sleep(QUIET)
                got = [(e.details.topic, e.args, e.details.retained) for e in inbox.events]
                raise AssertionError(f"al's {match} subscription {pattern!r} was allowed; it got {got!r}")
            # what al may subscribe to still works, exactly
            mine, _ = await subscribe(al, "com.app.inbox.al")
            await ack(backend, "com.app.inbox.al", "for al")
            await mine.wait_for(lambda e: e.args == ["for al"])
            news, _ = await subscribe(al, "com.app.news")
            await ack(backend, "com.app.news", "headline")
            await news.wait_for(lambda e: e.args == ["headline"])
        finally:
            await close_all(al, backend)

    run(main())


@pytest.mark.parametrize("pattern,match", [("com.app.rpc.al", "prefix"), ("com.app.rpc.", "wildcard")])
def test_pattern_registration_needs_every_uri(prouter, pattern, match):
    """The same rule for REGISTER: an exact permission on com.app.rpc.{authid}
    does not allow a pattern registration that would receive calls for
    com.app.rpc.alice."""
    async def main():
        al, backend = await login(prouter, "al"), await login(prouter, "backend")
        try:
            await refused(al.register(lambda *a: "stolen", pattern, options=RegisterOptions(match=match)),
                          names=("register", pattern))
            with pytest.raises(ApplicationError) as e:
                await asyncio.wait_for(backend.call("com.app.rpc.alice", 1), T)
            assert e.value.error == "wamp.error.no_such_procedure", e.value
            await asyncio.wait_for(al.register(lambda: "mine", "com.app.rpc.al"), T)
            assert await call(backend, "com.app.rpc.al") == "mine"
        finally:
            await close_all(al, backend)

    run(main())


class Authorizer:
    """Allows URIs containing ".allow." or ending with ".allow" (cached for
    subscribe), and calls to the meta API; records the calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, session, uri, action, options=None):
        self.calls.append((uri, action, options))
        allow = ".allow." in uri or uri.endswith(".allow") or (action == "call" and uri.startswith("wamp."))
        return {"allow": True, "cache": True} if allow and action == "subscribe" else allow


async def start_authorizer(router):
    z = Authorizer()
    s = await login(router, "authz", "realm2")
    await asyncio.wait_for(s.register(z, "com.example.authorize"), T)
    return z, s


def test_authorizer_decides_patterns_knowing_the_match(prouter):
    """A session decided by the authorizer procedure: it is told the match
    policy of a pattern subscription (and decides what the pattern reaches)."""
    async def main():
        z, zs = await start_authorizer(prouter)
        anon = await connect(prouter, realm="realm2")
        try:
            await refused(subscribe(anon, "com.dyn.", match="prefix"), names=("subscribe", "com.dyn."))
            await subscribe(anon, "com.dyn.allow.", match="prefix")
            assert ("com.dyn.", "subscribe", {"match": "prefix"}) in z.calls, z.calls
            assert ("com.dyn.allow.", "subscribe", {"match": "prefix"}) in z.calls, z.calls
        finally:
            await close_all(anon, zs)

    run(main())


# ==========================================================================
# 2. event history
# ==========================================================================

async def history_id(session, topic, match):
    sub_id = await call(session, "wamp.subscription.lookup", topic, {"match": match})
    assert isinstance(sub_id, int), f"no history subscription for {match} {topic}: {sub_id!r}"
    return sub_id


async def history(session, sub_id):
    events = await call(session, "wamp.subscription.get_events", sub_id)
    return sorted((e["topic"], e["args"][0]) for e in events)


def test_history_returns_only_readable_events(prouter):
    """get_events on the prefix histories: al reads only com.app.inbox.al (not
    alice's inbox) and com.app.news (not the salaries); the backend, which may
    subscribe to the whole prefix, reads everything."""
    async def main():
        al, alice, backend = await login(prouter, "al"), await login(prouter, "alice"), await login(prouter, "backend")
        try:
            tag = uuid.uuid4().hex[:8]
            await ack(backend, "com.app.inbox.alice", f"alice-{tag}")
            await ack(backend, "com.app.inbox.al", f"al-{tag}")
            await ack(backend, "com.app.news", f"news-{tag}")
            await ack(backend, "com.app.news.internal.salaries", f"salaries-{tag}")
            inbox_id = await history_id(al, "com.app.inbox.", "prefix")
            news_id = await history_id(al, "com.app.news", "prefix")

            def mine(rows):
                return [r for r in rows if r[1].endswith(tag)]

            assert mine(await history(al, inbox_id)) == [("com.app.inbox.al", f"al-{tag}")]
            assert mine(await history(alice, inbox_id)) == [("com.app.inbox.alice", f"alice-{tag}")]
            assert mine(await history(al, news_id)) == [("com.app.news", f"news-{tag}")]
            assert mine(await history(backend, inbox_id)) == [("com.app.inbox.al", f"al-{tag}"),
                                                                ("com.app.inbox.alice", f"alice-{tag}")]
            assert mine(await history(backend, news_id)) == [("com.app.news", f"news-{tag}"),
                                                               ("com.app.news.internal.salaries", f"salaries-{tag}")]
            # limit counts readable events only: al's newest one is still found
            events = await call(al, "wamp.subscription.get_events", inbox_id, limit=1, reverse=True)
            assert [e["topic"] for e in events] == ["com.app.inbox.al"], events
        finally:
            await close_all(al, alice, backend)

    run(main())


def test_history_for_sessions_of_the_authorizer(prouter):
    """A session decided by the authorizer procedure reads the events of topics
    whose subscribe answer it cached, not the others (the procedure is not asked
    once per event)."""
    async def main():
        z, zs = await start_authorizer(prouter)
        anon = await connect(prouter, realm="realm2")
        backend = await login(prouter, "backend", "realm2")
        try:
            tag = uuid.uuid4().hex[:8]
            await ack(backend, "com.dyn.allow.x", f"ok-{tag}")
            await ack(backend, "com.dyn.secret.y", f"secret-{tag}")
            hid = await history_id(anon, "com.dyn.", "prefix")
            assert [r for r in await history(anon, hid) if r[1].endswith(tag)] == []
            await subscribe(anon, "com.dyn.allow.x")  # the authorizer allows it, cached
            assert [r for r in await history(anon, hid) if r[1].endswith(tag)] == [("com.dyn.allow.x", f"ok-{tag}")]
            assert not any(u == "com.dyn.secret.y" for u, _, _ in z.calls), z.calls
        finally:
            await close_all(anon, backend, zs)

    run(main())


# ==========================================================================
# 3. testaments
# ==========================================================================

def add_testament(session, topic, *args, **kw):
    return call(session, "wamp.session.add_testament", topic, list(args), {}, **kw)


def test_testament_is_authorized_as_a_publish(prouter):
    """al may publish on com.app.chat.al only: a testament on alice's inbox is
    refused when added and never published when al leaves; reserved and
    invalid topics are refused as a PUBLISH would be."""
    async def main():
        al, backend = await login(prouter, "al"), await login(prouter, "backend")
        try:
            victims, _ = await subscribe(backend, "com.app.", match="prefix")
            await refused(add_testament(al, "com.app.inbox.alice", "forged"),
                          names=("publish", "com.app.inbox.alice"))
            await refused(add_testament(al, "wamp.session.on_leave", "forged"), INVALID_URI, names=("wamp.",))
            await refused(add_testament(al, "com.app..x", "bad"), INVALID_URI)
            await refused(add_testament(al, "com.app.bad uri", "bad"), INVALID_URI)
            await add_testament(al, "com.app.chat.al", "bye")
            await al.leave()
            await victims.wait_for(lambda e: e.args == ["bye"], "al's allowed testament")
            await marker(backend, "com.app.end", "end", exclude_me=False)
            await victims.marker("end")
            got = [(e.details.topic, e.args) for e in victims.events if e.args != ["bye"]]
            assert got == [("com.app.end", ["marker", "end"])], f"a refused testament was published: {got!r}"
        finally:
            await close_all(al, backend)

    run(main())


def test_testament_asks_the_authorizer(prouter):
    """In a realm with an authorizer procedure, add_testament asks it (publish)."""
    async def main():
        z, zs = await start_authorizer(prouter)
        anon = await connect(prouter, realm="realm2")
        backend = await login(prouter, "backend", "realm2")
        try:
            box, _ = await subscribe(backend, "com.dyn.", match="prefix")
            await refused(add_testament(anon, "com.dyn.deny.x", "forged"), names=("publish", "com.dyn.deny.x"))
            await add_testament(anon, "com.dyn.allow.x", "bye")
            assert ("com.dyn.deny.x", "publish", {"match": "exact"}) in z.calls, z.calls
            assert ("com.dyn.allow.x", "publish", {"match": "exact"}) in z.calls, z.calls
            await anon.leave()
            await box.wait_for(lambda e: e.args == ["bye"], "the allowed testament")
            await marker(backend, "com.dyn.end", "end", exclude_me=False)
            await box.marker("end")
            assert [e.args for e in box.events] == [["bye"], ["marker", "end"]], box.args
        finally:
            await close_all(anon, backend, zs)

    run(main())
