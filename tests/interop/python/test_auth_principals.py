"""Who a session is: static principals and the dynamic authenticator (issue 12,
item 22), and WAMP-CRA challenges that do not tell which authids exist (item 17),
with Autobahn|Python and raw clients.

22. The authenticator procedure is never asked about an authid that a static
    principal has (for any method): a guest token accepted by the authenticator
    does not make the client ``peter``. A role-only answer does not confirm the
    authid the client claimed: the session gets a router-assigned
    ``anonymous-<hex>`` authid; an answer naming a static principal is refused.
17. The WAMP-CRA CHALLENGE of an unknown authid has the same fields and shapes
    as a known one's (a stable fake salt, the realm's usual iterations/keylen,
    no role), and a failure takes about as long.
"""

import asyncio
import json
import re
import time
import uuid

import pytest
from autobahn.wamp import auth as ab_auth
from autobahn.wamp.exception import ApplicationError

from wamplib import ABORT, JoinFailed, RawWs, T, call, connect, run

TAG = uuid.uuid4().hex[:12]
PETER_PASSWORD = f"peter-password-{TAG}"
BACKEND_SECRET = f"backend-secret-{TAG}"
GUEST_TOKEN = f"guest-token-{TAG}"
AUTH_FAILED = "wamp.error.authentication_failed"
ANON_RE = re.compile(r"^anonymous-[0-9a-f]+$")
SALT = f"salt-{TAG[:8]}"
PETER_KEY = ab_auth.derive_key(PETER_PASSWORD, SALT, 100, 32).decode()


def cra(authid, password, salt=None, iterations=100, keylen=32, role="user"):
    if salt is None:
        return {"authid": authid, "secret": password, "role": role}
    return {"authid": authid, "secret": ab_auth.derive_key(password, salt, iterations, keylen).decode(),
            "salt": salt, "iterations": iterations, "keylen": keylen, "role": role}


REALM = {
    "name": "realm1", "uri_check": "loose",
    "auth": {"methods": ["ticket", "wampcra"], "authenticator": "com.example.authenticate",
             "authenticator_timeout": "2s", "max_failures": 1000, "max_failures_per_address": 100000,
             "wampcra": [cra("peter", PETER_PASSWORD, SALT, role="admin"),
                         cra("quinn", f"quinn-{TAG}", f"tlas-{TAG[4:12]}", role="user"),
                         cra("backend", BACKEND_SECRET, role="trusted")]},
    "role": [{"name": "trusted", "permission": [{"uri": "com.example.authenticate", "allow": ["register"]}]},
             {"name": "guest", "permission": [{"uri": "wamp.session.get", "allow": ["call"]}]},
             {"name": "admin", "permission": [{"uri": "com.", "match": "prefix", "allow": ["call"]}]},
             {"name": "user", "permission": []}],
}


@pytest.fixture(scope="module")
def arouter(module_router_factory):
    return module_router_factory(realms=[REALM])


def ticket(token):
    def on_challenge(session, challenge):
        assert challenge.method == "ticket", challenge
        return token
    return on_challenge


def cra_answer(secret):
    def on_challenge(session, challenge):
        key = secret
        if "salt" in challenge.extra:
            key = ab_auth.derive_key(secret, challenge.extra["salt"], challenge.extra["iterations"],
                                     challenge.extra["keylen"])
        return ab_auth.compute_wcs(key, challenge.extra["challenge"])
    return on_challenge


async def refused(router, **kw):
    try:
        s = await connect(router, **kw)
    except JoinFailed as e:
        return e.details
    j = s.joined.result()
    await s.close()
    raise AssertionError(f"the join must be refused: {kw.get('authid')!r} joined as {j.authid!r} ({j.authrole})")


class Authenticator:
    """Accepts GUEST_TOKEN for any claimed authid with a role-only answer (it
    checks the token, not who the client says it is); "echo-<token>" answers
    the claimed authid back; "become-peter" answers a static principal's authid."""

    def __init__(self):
        self.calls = []

    def __call__(self, realm, authid, details):
        self.calls.append(authid)
        t = details.get("ticket")
        if t == GUEST_TOKEN:
            return "guest"
        if t == f"echo-{GUEST_TOKEN}":
            return {"role": "guest", "authid": authid}
        if t == f"become-peter-{GUEST_TOKEN}":
            return {"role": "guest", "authid": "peter"}
        raise ApplicationError("com.example.invalid_token", "invalid token")


async def start_authenticator(router):
    z = Authenticator()
    backend = await connect(router, authmethods=["wampcra"], authid="backend", on_challenge=cra_answer(BACKEND_SECRET))
    await asyncio.wait_for(backend.register(z, "com.example.authenticate"), T)
    return z, backend


# ==========================================================================
# 22. static principals are never delegated; a role-only answer names nobody
# ==========================================================================

def test_static_principal_is_never_delegated(arouter):
    """A guest token with authid "peter" (a WAMP-CRA principal) is refused
    without asking the authenticator; the same for the echoing answer."""
    async def main():
        z, backend = await start_authenticator(arouter)
        try:
            for token in (GUEST_TOKEN, f"echo-{GUEST_TOKEN}"):
                d = await refused(arouter, authmethods=["ticket"], authid="peter", on_challenge=ticket(token))
                assert d.reason == AUTH_FAILED, (d.reason, d.message)
            assert "peter" not in z.calls, f"the authenticator was asked about a static principal: {z.calls}"
            # an answer that names a static principal is refused too
            d = await refused(arouter, authmethods=["ticket"], authid="nobody",
                              on_challenge=ticket(f"become-peter-{GUEST_TOKEN}"))
            assert d.reason == AUTH_FAILED, (d.reason, d.message)
            # peter himself still logs in with his own credentials
            p = await connect(arouter, authmethods=["wampcra"], authid="peter", on_challenge=cra_answer(PETER_PASSWORD))
            j = p.joined.result()
            assert (j.authid, j.authrole, j.authprovider) == ("peter", "admin", "static")
            await p.close()
        finally:
            await backend.close()

    run(main())


def test_role_only_answer_does_not_confirm_the_claimed_authid(arouter):
    """A role-only answer: the session gets a router-assigned authid, never the
    claim; an answer with an authid gets that authid."""
    async def main():
        z, backend = await start_authenticator(arouter)
        sessions = []
        try:
            for claim in ("mallory", "admin-of-everything"):
                s = await connect(arouter, authmethods=["ticket"], authid=claim, on_challenge=ticket(GUEST_TOKEN))
                sessions.append(s)
                j = s.joined.result()
                assert j.authid != claim and ANON_RE.match(j.authid), f"claimed {claim!r}, got authid {j.authid!r}"
                assert (j.authrole, j.authmethod, j.authprovider) == ("guest", "ticket", "dynamic"), j
                # the router's own view agrees
                me = await call(s, "wamp.session.get", j.session)
                assert me["authid"] == j.authid, me
            a, b = (x.joined.result().authid for x in sessions)
            assert a != b, "two role-only sessions got the same authid"
            # the authenticator's explicit authid is used as is
            s = await connect(arouter, authmethods=["ticket"], authid="mallory",
                              on_challenge=ticket(f"echo-{GUEST_TOKEN}"))
            sessions.append(s)
            assert s.joined.result().authid == "mallory"
        finally:
            for s in sessions:
                await s.close()
            await backend.close()

    run(main())


# ==========================================================================
# 17. WAMP-CRA: unknown authids cannot be told from known ones
# ==========================================================================

async def cra_exchange(router, authid, respond=None):
    """(CHALLENGE, reply) of a raw WAMP-CRA login as `authid`."""
    c = await RawWs.open(router)
    try:
        return await c.hello_auth("realm1", authmethods=["wampcra"], authid=authid, respond=respond)
    finally:
        await c.close()


def shape(challenge):
    """What a client can compare between two CHALLENGEs: the method, the extra's
    keys with their value types (and the salt's length and alphabet), and the
    keys of the challenge string's JSON."""
    _, method, extra = challenge
    out = {k: type(v).__name__ for k, v in extra.items()}
    if "salt" in extra:
        out["salt"] = (len(extra["salt"]), extra["salt"].isalnum(), all(c in "0123456789abcdef" for c in extra["salt"]))
    return method, out, sorted(json.loads(extra["challenge"]))


def test_wampcra_challenge_does_not_reveal_unknown_authids(arouter):
    async def main():
        unknown = f"nobody-{TAG}"
        (peter, _), (quinn, _) = await cra_exchange(arouter, "peter"), await cra_exchange(arouter, "quinn")
        (u1, _), (u2, _) = await cra_exchange(arouter, unknown), await cra_exchange(arouter, unknown)
        (other, _), = [await cra_exchange(arouter, f"nobody-else-{TAG}")]
        assert shape(u1) == shape(peter) == shape(quinn), (shape(u1), shape(peter))
        # the realm's usual iterations and keylen
        assert (u1[2]["iterations"], u1[2]["keylen"]) == (peter[2]["iterations"], peter[2]["keylen"]) == (100, 32)
        # a stable fake salt per authid, like a real one
        assert u1[2]["salt"] == u2[2]["salt"], (u1[2]["salt"], u2[2]["salt"])
        assert other[2]["salt"] != u1[2]["salt"]
        assert peter[2]["salt"] == SALT
        # the challenge string tells no role, for anybody
        for ch in (peter, u1):
            c = json.loads(ch[2]["challenge"])
            assert "authrole" not in c, c
            assert (c["authmethod"], c["authprovider"]) == ("wampcra", "static"), c

        # a wrong signature fails the same way, in about the same time
        wrong = lambda method, extra: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="  # noqa: E731 (32 zero bytes)
        times = {"peter": [], unknown: []}
        for _ in range(8):
            for who in times:
                t0 = time.perf_counter()
                _, reply = await cra_exchange(arouter, who, respond=wrong)
                times[who].append(time.perf_counter() - t0)
                assert reply[0] == ABORT and reply[2] == AUTH_FAILED, reply
                assert reply[1].get("message") == "authentication failed", reply
        med = {who: sorted(t)[len(t) // 2] for who, t in times.items()}
        print(f"median failed WAMP-CRA login: known {med['peter'] * 1e3:.2f} ms, unknown {med[unknown] * 1e3:.2f} ms")
        assert abs(med["peter"] - med[unknown]) < 0.02, med
        # the real user still logs in (the fake salt did not disturb anything)
        p = await connect(arouter, authmethods=["wampcra"], authid="peter", on_challenge=cra_answer(PETER_PASSWORD))
        await p.close()

    run(main())


def test_wampcra_fake_salts_use_the_real_salts_characters_at_each_position(arouter):
    """Byte for byte: the realm's salts are `salt-<8 hex>` and `tlas-<8 hex>`
    (lower case). The fake salt of every unknown authid must fit them position
    by position: the same separator, lower-case hex where they have hex, no
    character class they never use (upper case)."""
    async def main():
        real = [SALT, f"tlas-{TAG[4:12]}"]
        for i in range(24):
            (ch, _) = await cra_exchange(arouter, f"probe-{i}-{TAG}")
            fake = ch[2]["salt"]
            assert len(fake) == len(real[0]), (fake, real)
            for pos, c in enumerate(fake):
                seen = {r[pos] for r in real}
                if all(x in "0123456789abcdef" for x in seen):
                    assert c in "0123456789abcdef", f"position {pos} of {fake!r}: real salts have hex there: {real}"
                if all(not x.isalnum() for x in seen):
                    assert c in seen, f"position {pos} of {fake!r}: real salts have {seen} there"
                if all(not x.isupper() for x in seen):
                    assert not c.isupper(), f"position {pos} of {fake!r}: no real salt has upper case there: {real}"

    run(main())


def test_ticket_failure_takes_as_long_for_unknown_authids_whatever_the_hash_parameters(router_factory):
    """The realm's ticket hashes were made with other Argon2 parameters than the
    router's defaults (here cheaper ones, m=8 MiB t=1, as a tool such as libsodium
    or argon2-cffi may make; dearer ones are the same case): a wrong ticket for an
    unknown authid must cost what it costs for a known one, or the time tells
    which authids exist."""
    import nacl.pwhash
    tina_hash = nacl.pwhash.argon2id.str(f"tina-{TAG}".encode(), opslimit=1, memlimit=8 * 1024 * 1024).decode()
    realm = {"name": "realm1", "auth": {"methods": ["ticket"], "max_failures": 1000, "max_failures_per_address": 100000,
                                        "ticket": [{"authid": "tina", "secret": tina_hash, "role": "user"}]},
             "role": [{"name": "user", "permission": []}]}
    r = router_factory(realms=[realm])

    async def attempt(authid):
        c = await RawWs.open(r)
        try:
            t0 = time.perf_counter()
            _, reply = await c.hello_auth("realm1", authmethods=["ticket"], authid=authid,
                                          respond=lambda m, e: "wrong", timeout=20)
            dt = time.perf_counter() - t0
            assert reply[0] == ABORT and reply[2] == AUTH_FAILED, reply
            return dt
        finally:
            await c.close()

    async def main():
        times = {"tina": [], "nobody": []}
        for _ in range(5):
            for who in times:
                times[who].append(await attempt(who))
        med = {who: sorted(t)[2] for who, t in times.items()}
        print(f"median failed ticket login: known {med['tina'] * 1e3:.0f} ms, unknown {med['nobody'] * 1e3:.0f} ms")
        slow, fast = max(med.values()), min(med.values())
        assert slow < 2 * fast + 0.05, f"unknown and known authids fail in different times: {med}"

    run(main(), timeout=60)
