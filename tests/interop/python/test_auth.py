"""Authentication (issue 5) with Autobahn|Python and raw JSON clients.

Every method the router offers (anonymous, ticket, WAMP-CRA with and without a
salt, WAMP-Cryptosign), the method negotiation (HELLO.Details.authmethods), each
failure (wrong secret, unknown authid, invalid or foreign signature, wrong
realm), the dynamic authenticator procedure, the failed-login throttling per
address and per authid, ``switchyard hash-secret``, and at the end a scan of
every router log this module produced for the secrets it used.

Autobahn does the client side wherever it can: its ApplicationSession
``onChallenge`` flow with ``auth.derive_key`` / ``auth.compute_wcs`` (WAMP-CRA)
and ``cryptosign.CryptosignKey.sign_challenge`` (needs PyNaCl). Raw clients are
used where a test must see the CHALLENGE itself, send a malformed answer, or
pick its source address (127.0.0.x) for the per-address throttling.

Argon2id ticket checks are slow in a debug build (~0.5 s each), so ticket
logins are few; the throttling tests use WAMP-CRA failures.
"""

import asyncio
import json
import os
import re
import subprocess
import time
import uuid

import pytest
from autobahn.wamp import auth as ab_auth
from autobahn.wamp.cryptosign import CryptosignKey
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import Challenge
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from routerproc import router_bin
from wamplib import (ABORT, CHALLENGE, WELCOME, JoinFailed, RawRs, RawWs, T, call, close_all, connect, open_raw,
                     run)

# --------------------------------------------------------------------------
# secrets (fresh each run, so that the log scan at the end means something)
# --------------------------------------------------------------------------

TAG = uuid.uuid4().hex[:12]
ALICE_TICKET = f"alice-ticket-{TAG}"  # static ticket principal "alice", role user
CAROL_TICKET = f"carol-ticket-{TAG}"  # static ticket principal "carol" in realm2
PETER_PASSWORD = f"peter-password-{TAG}"  # WAMP-CRA "peter", salted
PETER_SALT = f"salt-{TAG[:6]}"
PETER_ITERATIONS = 100
PETER_KEYLEN = 32
PAUL_SECRET = f"paul-secret-{TAG}"  # WAMP-CRA "paul", no salt: the config holds the secret
DAVE_TICKET = f"dave-token-{TAG}"  # checked by the dynamic authenticator
ERIN_TICKET = f"erin-token-{TAG}"
DEVICE_SEED = os.urandom(32)  # cryptosign "device-1"
DEVICE_KEY = CryptosignKey.from_bytes(DEVICE_SEED)
DEVICE_PUBKEY = DEVICE_KEY.public_key()
DEVICE2_SEED = os.urandom(32)  # a second key of "device-1" (principals may have several)
DEVICE2_KEY = CryptosignKey.from_bytes(DEVICE2_SEED)
STRANGER_SEED = os.urandom(32)  # a key no principal has
STRANGER_KEY = CryptosignKey.from_bytes(STRANGER_SEED)
PETER_KEY = ab_auth.derive_key(PETER_PASSWORD, PETER_SALT, PETER_ITERATIONS, PETER_KEYLEN).decode()

# what must never appear in a router log line
SECRETS = {
    "alice's ticket": ALICE_TICKET,
    "carol's ticket": CAROL_TICKET,
    "peter's password": PETER_PASSWORD,
    "peter's derived key": PETER_KEY,
    "paul's secret": PAUL_SECRET,
    "dave's ticket": DAVE_TICKET,
    "erin's ticket": ERIN_TICKET,
    "device-1 private key": DEVICE_SEED.hex(),
    "device-1 second private key": DEVICE2_SEED.hex(),
    "stranger private key": STRANGER_SEED.hex(),
}
# router logs of this module (scanned by the last test)
LOGS = []

ANON_RE = re.compile(r"^anonymous-[0-9a-f]+$")
AUTH_FAILED = "wamp.error.authentication_failed"
NO_METHOD = "wamp.error.no_matching_auth_method"
# failure counting must not get in the way outside the throttling tests
NO_THROTTLE = {"max_failures": 1000, "max_failures_per_address": 100000}


def hash_secret(secret, *args, timeout=60):
    """``switchyard hash-secret ARGS`` with `secret` (and a newline) on stdin."""
    return subprocess.run([router_bin(), "hash-secret", *args], input=secret + "\n", capture_output=True,
                          text=True, timeout=timeout)


def hash_ticket(secret):
    p = hash_secret(secret)
    assert p.returncode == 0, f"hash-secret failed: {p.stderr}"
    return p.stdout.strip()


@pytest.fixture(scope="module")
def hashes():
    """Argon2id hashes of the static tickets, made by the router binary (in parallel: ~0.5 s each)."""
    procs = {name: subprocess.Popen([router_bin(), "hash-secret"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name in ("alice", "carol")}
    out = {}
    for name, secret in (("alice", ALICE_TICKET), ("carol", CAROL_TICKET)):
        so, se = procs[name].communicate(secret + "\n", timeout=60)
        assert procs[name].returncode == 0, f"hash-secret failed: {se}"
        out[name] = so.strip()
    return out


def realm1_auth(hashes, **extra):
    """[realm.auth] of realm1: ticket, WAMP-CRA (salted and plain), cryptosign; no anonymous."""
    a = {
        "methods": ["ticket", "wampcra", "cryptosign"],
        "ticket": [{"authid": "alice", "secret": hashes["alice"], "role": "user"}],
        "wampcra": [
            {"authid": "peter", "secret": PETER_KEY, "salt": PETER_SALT, "iterations": PETER_ITERATIONS,
             "keylen": PETER_KEYLEN, "role": "user"},
            {"authid": "paul", "secret": PAUL_SECRET, "role": "staff"},
        ],
        "cryptosign": [{"authid": "device-1", "pubkeys": [DEVICE_PUBKEY, DEVICE2_KEY.public_key()],
                        "role": "device"}],
    }
    a.update(extra)
    return a


@pytest.fixture(scope="module")
def auth_router(module_router_factory, hashes):
    """realm1: ticket / wampcra / cryptosign only; realm2: anonymous (role "guest") and
    ticket (carol only); realm3: no [realm.auth] at all (anonymous only)."""
    r = module_router_factory(realms=[
        {"name": "realm1", "uri_check": "loose", "auth": realm1_auth(hashes, **NO_THROTTLE)},
        {"name": "realm2", "uri_check": "loose",
         "auth": {"methods": ["anonymous", "ticket"], "anonymous_role": "guest", **NO_THROTTLE,
                  "ticket": [{"authid": "carol", "secret": hashes["carol"], "role": "user"}]}},
        {"name": "realm3", "uri_check": "loose"},
    ])
    LOGS.append(r.log_path)
    return r


# --------------------------------------------------------------------------
# client side of each method
# --------------------------------------------------------------------------

def ticket_answer(ticket):
    def on_challenge(session, challenge):
        assert challenge.method == "ticket", challenge
        return ticket
    return on_challenge


def cra_answer(secret):
    """Autobahn's documented WAMP-CRA client: derive_key when the challenge has a
    salt, then compute_wcs over the challenge string."""
    def on_challenge(session, challenge):
        assert challenge.method == "wampcra", challenge
        key = secret
        if "salt" in challenge.extra:
            key = ab_auth.derive_key(secret, challenge.extra["salt"], challenge.extra.get("iterations", 1000),
                                     challenge.extra.get("keylen", 32))
        return ab_auth.compute_wcs(key, challenge.extra["challenge"])
    return on_challenge


def cryptosign_answer(key):
    def on_challenge(session, challenge):
        assert challenge.method == "cryptosign", challenge
        return key.sign_challenge(challenge)  # a future of the 96-byte (sig + challenge) hex string
    return on_challenge


def raw_cra(secret):
    """respond() for hello_auth: WAMP-CRA with `secret` (salted if the challenge says so)."""
    def respond(method, extra):
        assert method == "wampcra", (method, extra)
        return cra_answer(secret)(None, Challenge(method, extra)).decode()
    return respond


async def refused(router, transport="ws", **kw):
    """An Autobahn join that must be refused: returns the ABORT's CloseDetails."""
    try:
        s = await connect(router, transport, **kw)
    except JoinFailed as e:
        return e.details
    await s.close()
    raise AssertionError(f"the join must be refused: {kw!r} joined as {s.joined.result()!r}")


def assert_auth_failed(details, message="authentication failed"):
    assert details.reason == AUTH_FAILED, f"ABORT reason {details.reason!r} ({details.message!r})"
    assert details.message == message, f"ABORT message {details.message!r}"


async def close_raw(*conns):
    for c in conns:
        if c is not None:
            await c.close()


def welcome_of(session):
    d = session.joined.result()
    return {"authid": d.authid, "authrole": d.authrole, "authmethod": d.authmethod, "authprovider": d.authprovider}


# ==========================================================================
# switchyard hash-secret
# ==========================================================================

def test_hash_secret_command():
    secret = f"hash-me-{TAG}"
    a, b = hash_secret(secret), hash_secret(secret)
    for p in (a, b):
        assert p.returncode == 0, p.stderr
        phc = p.stdout.strip()
        assert re.fullmatch(r"\$argon2id\$v=19\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+", phc), \
            f"not an Argon2id PHC string: {phc!r}"
        assert secret not in p.stdout + p.stderr
    assert a.stdout != b.stdout, "two hashes of one secret must differ (random salt)"

    # WAMP-CRA: the same key as Autobahn's derive_key, defaults 1000 iterations / 32 bytes
    for args, want in [
        (["--salt", "NaCl", "--iterations", "100", "--keylen", "32"], ab_auth.derive_key(secret, "NaCl", 100, 32)),
        (["--salt", "NaCl", "--iterations", "10", "--keylen", "16"], ab_auth.derive_key(secret, "NaCl", 10, 16)),
        (["--salt", "NaCl"], ab_auth.derive_key(secret, "NaCl", 1000, 32)),
    ]:
        p = hash_secret(secret, "--method", "wampcra", *args)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == want.decode(), f"hash-secret --method wampcra {args}: {p.stdout!r} != {want!r}"

    p = hash_secret(secret, "--method", "wampcra")
    assert p.returncode != 0 and p.stdout.strip() == "", "--method wampcra without --salt must fail"
    assert "--salt" in p.stderr, f"the error should say that --salt is needed: {p.stderr!r}"

    for args in ([], ["--method", "wampcra", "--salt", "NaCl"]):
        p = subprocess.run([router_bin(), "hash-secret", *args], input="", capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and p.stdout.strip() == "", f"empty input must fail ({args}): {p.stdout!r}"
        assert "empty" in p.stderr.lower(), f"the error should say the secret is empty: {p.stderr!r}"


# ==========================================================================
# anonymous and the method negotiation
# ==========================================================================

@pytest.mark.parametrize("transport", ["ws", "rs", "unix"])
def test_anonymous_by_default(auth_router, transport):
    """A realm without [realm.auth] welcomes anonymous sessions (HELLO without authmethods)."""
    async def main():
        s = await connect(auth_router, transport, realm="realm3")
        try:
            w = welcome_of(s)
            assert ANON_RE.match(w["authid"]), w
            assert (w["authrole"], w["authmethod"], w["authprovider"]) == ("anonymous", "anonymous", "static"), w
        finally:
            await s.close()

    run(main())


def test_anonymous_role_and_method_choice(auth_router):
    """realm2 (anonymous + ticket, anonymous_role "guest"): the first offered method
    the realm allows is used."""
    async def main():
        raw = []
        try:
            # no authmethods -> ["anonymous"]
            c = await RawWs.open(auth_router)
            raw.append(c)
            ch, w = await c.hello_auth("realm2")
            assert ch is None and w[0] == WELCOME, w
            d = w[2]
            assert ANON_RE.match(d["authid"]) and d["authrole"] == "guest", d
            assert (d["authmethod"], d["authprovider"]) == ("anonymous", "static"), d

            # explicitly anonymous first
            c = await RawRs.connect(auth_router)
            raw.append(c)
            ch, w = await c.hello_auth("realm2", authmethods=["anonymous", "ticket"], authid="carol")
            assert ch is None and w[0] == WELCOME and w[2]["authmethod"] == "anonymous", w
            assert w[2]["authrole"] == "guest", w

            # cryptosign is not allowed in realm2, ticket is: CHALLENGE("ticket")
            c = await RawWs.open(auth_router)
            raw.append(c)
            ch, _ = await c.hello_auth("realm2", authmethods=["cryptosign", "ticket", "anonymous"], authid="carol",
                                       authextra={"pubkey": DEVICE_PUBKEY})
            assert ch is not None and ch[0] == CHALLENGE and ch[1] == "ticket", ch
            assert ch[2] == {}, f"a ticket CHALLENGE has empty extra: {ch!r}"

            # Autobahn, ticket first
            s = await connect(auth_router, "rs", "msgpack", realm="realm2", authmethods=["ticket", "anonymous"],
                              authid="carol", on_challenge=ticket_answer(CAROL_TICKET))
            assert welcome_of(s) == {"authid": "carol", "authrole": "user", "authmethod": "ticket",
                                     "authprovider": "static"}
            await s.close()
        finally:
            for c in raw:
                await c.close()

    run(main())


@pytest.mark.parametrize("authmethods", [None, ["anonymous"], ["scram", "tls"]],
                         ids=["default", "anonymous", "unsupported"])
def test_no_matching_auth_method(auth_router, authmethods):
    async def main():
        c = await RawWs.open(auth_router)
        try:
            ch, a = await c.hello_auth("realm1", authmethods=authmethods, authid="alice")
            assert ch is None and a[0] == ABORT, a
            assert a[2] == NO_METHOD, a
            message = a[1].get("message", "")
            for m in ("ticket", "wampcra", "cryptosign"):
                assert m in message, f"the ABORT message should list what realm1 accepts ({m}): {message!r}"
        finally:
            await c.close()
        # the same through Autobahn
        d = await refused(auth_router, authmethods=authmethods or ["anonymous"], authid="alice",
                          on_challenge=ticket_answer(ALICE_TICKET))
        assert d.reason == NO_METHOD, (d.reason, d.message)

    run(main())


def test_listener_auth_methods(router_factory):
    """A listener's auth_methods narrows the realm's methods on that listener only:
    WebSocket ticket only, RawSocket/TCP anonymous + wampcra, the Unix socket
    everything realm1 allows."""
    r = router_factory(realms=[{"name": "realm1", "uri_check": "loose",
                                "auth": {"methods": ["anonymous", "ticket", "wampcra"], **NO_THROTTLE,
                                         "wampcra": [{"authid": "paul", "secret": PAUL_SECRET, "role": "staff"}]}}],
                       ws_opts={"auth_methods": ["ticket"]}, rs_opts={"auth_methods": ["anonymous", "wampcra"]})
    LOGS.append(r.log_path)

    async def main():
        conns = []

        async def hello(kind, **kw):
            c = await open_raw(kind, r)
            conns.append(c)
            return await c.hello_auth("realm1", **kw)

        try:
            # WebSocket: anonymous and wampcra are off
            for offered in (None, ["anonymous"], ["wampcra"]):
                ch, a = await hello("ws", authmethods=offered, authid="paul")
                assert ch is None and a[0] == ABORT and a[2] == NO_METHOD, (offered, a)
                message = a[1].get("message", "")
                assert "ticket" in message and "wampcra" not in message.split("accept")[-1], \
                    f"the message should list what this listener accepts (ticket only): {message!r}"
            ch, _ = await hello("ws", authmethods=["wampcra", "anonymous", "ticket"], authid="paul")
            assert ch is not None and ch[1] == "ticket", ch
            # RawSocket/TCP: anonymous and wampcra
            _, w = await hello("rs")
            assert w[0] == WELCOME and w[2]["authmethod"] == "anonymous", w
            _, w = await hello("rs", authmethods=["ticket", "wampcra"], authid="paul", respond=raw_cra(PAUL_SECRET))
            assert w[0] == WELCOME and w[2]["authmethod"] == "wampcra", w
            ch, a = await hello("rs", authmethods=["ticket"], authid="paul")
            assert ch is None and a[0] == ABORT and a[2] == NO_METHOD, a
            # the Unix socket has no auth_methods: the realm's
            ch, _ = await hello("unix", authmethods=["ticket", "anonymous"], authid="nobody")
            assert ch is not None and ch[1] == "ticket", ch
            _, w = await hello("unix")
            assert w[0] == WELCOME and w[2]["authmethod"] == "anonymous", w
        finally:
            await close_raw(*conns)

        # Autobahn over WebSocket without authmethods: refused
        d = await refused(r)
        assert d.reason == NO_METHOD, (d.reason, d.message)

    run(main())


# ==========================================================================
# ticket
# ==========================================================================

@pytest.mark.parametrize("transport,serializer", [("ws", "json"), ("rs", "msgpack"), ("unix", "cbor")])
def test_ticket_login(auth_router, transport, serializer):
    async def main():
        s = await connect(auth_router, transport, serializer, authmethods=["ticket"], authid="alice",
                          on_challenge=ticket_answer(ALICE_TICKET))
        try:
            assert welcome_of(s) == {"authid": "alice", "authrole": "user", "authmethod": "ticket",
                                     "authprovider": "static"}
            assert [c.method for c in s.challenges] == ["ticket"]
            # the session works
            await asyncio.wait_for(s.register(lambda: "pong", f"com.example.auth.ping.{TAG}.{transport}"), T)
            assert await call(s, f"com.example.auth.ping.{TAG}.{transport}") == "pong"
        finally:
            await s.close()

    run(main())


def test_ticket_failures(auth_router):
    """Wrong ticket and unknown authid get the same ABORT; a ticket login without an
    authid is refused; a right ticket in another realm (without that principal) fails."""
    async def main():
        wrong, unknown, other_realm = await asyncio.gather(
            refused(auth_router, authmethods=["ticket"], authid="alice", on_challenge=ticket_answer("not-it")),
            refused(auth_router, authmethods=["ticket"], authid="mallory", on_challenge=ticket_answer(ALICE_TICKET)),
            refused(auth_router, realm="realm2", authmethods=["ticket"], authid="alice",
                    on_challenge=ticket_answer(ALICE_TICKET)),
        )
        assert_auth_failed(wrong)
        assert_auth_failed(unknown)
        assert_auth_failed(other_realm)

        # no authid: refused (raw, Autobahn would send none either)
        c = await RawRs.connect(auth_router)
        try:
            ch, a = await c.hello_auth("realm1", authmethods=["ticket"])
            assert ch is None and a[0] == ABORT and a[2] == AUTH_FAILED, a
        finally:
            await c.close()

        # a realm that does not exist
        d = await refused(auth_router, realm="no.such.realm", authmethods=["ticket"], authid="alice",
                          on_challenge=ticket_answer(ALICE_TICKET))
        assert d.reason == "wamp.error.no_such_realm", (d.reason, d.message)

    run(main())


# ==========================================================================
# WAMP-CRA
# ==========================================================================

@pytest.mark.parametrize("transport,serializer", [("ws", "json"), ("rs", "cbor")])
def test_wampcra_salted(auth_router, transport, serializer):
    async def main():
        s = await connect(auth_router, transport, serializer, authmethods=["wampcra"], authid="peter",
                          on_challenge=cra_answer(PETER_PASSWORD))
        try:
            assert welcome_of(s) == {"authid": "peter", "authrole": "user", "authmethod": "wampcra",
                                     "authprovider": "static"}
            (challenge,) = s.challenges
            assert challenge.method == "wampcra"
            extra = challenge.extra
            assert (extra.get("salt"), extra.get("iterations"), extra.get("keylen")) == \
                (PETER_SALT, PETER_ITERATIONS, PETER_KEYLEN), extra
            c = json.loads(extra["challenge"])
            # no authrole: it would tell known authids from unknown ones (test_auth_principals.py)
            assert {"authid", "authmethod", "authprovider", "nonce", "timestamp", "session"} <= set(c), c
            assert "authrole" not in c, c
            assert (c["authid"], c["authmethod"], c["authprovider"]) == ("peter", "wampcra", "static"), c
            assert c["session"] == s.joined.result().session, \
                f"the challenge's session {c['session']} must be the WELCOME's {s.joined.result().session}"
            assert isinstance(c["nonce"], str) and len(c["nonce"]) >= 16, c
            assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", c["timestamp"]), c
        finally:
            await s.close()

    run(main())


def test_wampcra_plain_secret_and_failures(auth_router):
    async def main():
        s = await connect(auth_router, authmethods=["wampcra"], authid="paul", on_challenge=cra_answer(PAUL_SECRET))
        try:
            assert welcome_of(s) == {"authid": "paul", "authrole": "staff", "authmethod": "wampcra",
                                     "authprovider": "static"}
            assert "salt" not in s.challenges[0].extra, s.challenges[0].extra
        finally:
            await s.close()
        # two sessions get different challenges (nonce)
        c1, c2 = await RawWs.open(auth_router), await RawWs.open(auth_router)
        try:
            (ch1, _), (ch2, _) = [await c.hello_auth("realm1", authmethods=["wampcra"], authid="paul")
                                  for c in (c1, c2)]
            assert json.loads(ch1[2]["challenge"])["nonce"] != json.loads(ch2[2]["challenge"])["nonce"]
        finally:
            await close_raw(c1, c2)

        failures = await asyncio.gather(
            # wrong password (salted principal), wrong secret (plain principal)
            refused(auth_router, authmethods=["wampcra"], authid="peter", on_challenge=cra_answer("wrong")),
            refused(auth_router, "rs", authmethods=["wampcra"], authid="paul", on_challenge=cra_answer("wrong")),
            # the derived key used as if it were the password
            refused(auth_router, authmethods=["wampcra"], authid="peter", on_challenge=cra_answer(PETER_KEY)),
            # unknown authid
            refused(auth_router, authmethods=["wampcra"], authid="nobody", on_challenge=cra_answer(PAUL_SECRET)),
            # right secret, wrong realm (realm2 has no wampcra)
            refused(auth_router, realm="realm2", authmethods=["wampcra"], authid="paul",
                    on_challenge=cra_answer(PAUL_SECRET)),
        )
        for d in failures[:4]:
            assert_auth_failed(d)
        assert failures[4].reason == NO_METHOD, (failures[4].reason, failures[4].message)

        # a signature for another session's challenge does not work
        a, b = await RawWs.open(auth_router), await RawWs.open(auth_router)
        try:
            cha, _ = await a.hello_auth("realm1", authmethods=["wampcra"], authid="paul")
            chb, _ = await b.hello_auth("realm1", authmethods=["wampcra"], authid="paul")
            await b.send([5, raw_cra(PAUL_SECRET)("wampcra", cha[2]), {}])
            r = await b.recv()
            assert r[0] == ABORT and r[2] == AUTH_FAILED, r
            await a.send([5, raw_cra(PAUL_SECRET)("wampcra", cha[2]), {}])
            r = await a.recv()
            assert r[0] == WELCOME and r[1] == json.loads(cha[2]["challenge"])["session"], r
        finally:
            await close_raw(a, b)

    run(main())


# ==========================================================================
# WAMP-Cryptosign
# ==========================================================================

@pytest.mark.parametrize("transport,serializer,key", [("ws", "json", DEVICE_KEY), ("rs", "msgpack", DEVICE2_KEY),
                                                      ("unix", "cbor", DEVICE_KEY)],
                         ids=["ws-key1", "rs-key2", "unix-key1"])
def test_cryptosign_autobahn(auth_router, transport, serializer, key):
    async def main():
        s = await connect(auth_router, transport, serializer, authmethods=["cryptosign"],
                          authextra={"pubkey": key.public_key()}, on_challenge=cryptosign_answer(key))
        try:
            assert welcome_of(s) == {"authid": "device-1", "authrole": "device", "authmethod": "cryptosign",
                                     "authprovider": "static"}
            (challenge,) = s.challenges
            assert re.fullmatch(r"[0-9a-f]{64}", challenge.extra.get("challenge", "")), challenge.extra
            assert "channel_binding" in challenge.extra and challenge.extra["channel_binding"] is None, \
                challenge.extra
        finally:
            await s.close()

    run(main())


def _sign64(seed, challenge_hex):
    """A plain 64-byte Ed25519 signature (hex), made with `cryptography`."""
    return Ed25519PrivateKey.from_private_bytes(seed).sign(bytes.fromhex(challenge_hex)).hex()


def flip(sig_hex):
    """The signature with one bit of its first byte flipped."""
    return f"{int(sig_hex[:2], 16) ^ 1:02x}" + sig_hex[2:]


def test_cryptosign_raw_and_failures(auth_router):
    async def main():
        conns = []

        async def hello(authextra, authid=None, kind="ws"):
            c = await open_raw(kind, auth_router)
            conns.append(c)
            ch, r = await c.hello_auth("realm1", authmethods=["cryptosign"], authid=authid, authextra=authextra)
            return c, ch, r

        try:
            # a 64-byte signature (no challenge appended), and an explicit matching authid
            c, ch, _ = await hello({"pubkey": DEVICE_PUBKEY}, authid="device-1")
            assert ch[1] == "cryptosign" and re.fullmatch(r"[0-9a-f]{64}", ch[2]["challenge"]), ch
            await c.send([5, _sign64(DEVICE_SEED, ch[2]["challenge"]), {}])
            w = await c.recv()
            assert w[0] == WELCOME and w[2]["authid"] == "device-1" and w[2]["authmethod"] == "cryptosign", w

            # upper-case hex key: same principal
            c, ch, _ = await hello({"pubkey": DEVICE_PUBKEY.upper()}, kind="rs")
            await c.send([5, _sign64(DEVICE_SEED, ch[2]["challenge"]), {}])
            assert (await c.recv())[0] == WELCOME

            # unknown key: ABORT at once, no CHALLENGE
            _, ch, r = await hello({"pubkey": STRANGER_KEY.public_key()})
            assert ch is None and r[0] == ABORT and r[2] == AUTH_FAILED, r
            assert r[1].get("message") == "authentication failed", r
            # no pubkey
            _, ch, r = await hello({})
            assert ch is None and r[0] == ABORT and r[2] == AUTH_FAILED, r
            # a known key claimed for another authid
            _, ch, r = await hello({"pubkey": DEVICE_PUBKEY}, authid="device-2")
            assert ch is None and r[0] == ABORT and r[2] == AUTH_FAILED, r

            bad_answers = {
                "forged": lambda chx: flip(_sign64(DEVICE_SEED, chx)),
                "signed by another key": lambda chx: _sign64(STRANGER_SEED, chx),
                "signature of another challenge": lambda chx: _sign64(DEVICE_SEED, "ab" * 32),
                "96 bytes, wrong challenge appended": lambda chx: _sign64(DEVICE_SEED, chx) + "ab" * 32,
                "not hex": lambda chx: "zz" * 64,
                "empty": lambda chx: "",
            }
            for what, answer in bad_answers.items():
                c, ch, _ = await hello({"pubkey": DEVICE_PUBKEY})
                await c.send([5, answer(ch[2]["challenge"]), {}])
                r = await c.recv()
                assert r[0] == ABORT and r[2] == AUTH_FAILED, f"{what}: {r!r}"
                assert r[1].get("message") == "authentication failed", f"{what}: {r!r}"
        finally:
            await close_raw(*conns)

        # Autobahn with a key the router does not know
        d = await refused(auth_router, authmethods=["cryptosign"], authextra={"pubkey": STRANGER_KEY.public_key()},
                          on_challenge=cryptosign_answer(STRANGER_KEY))
        assert_auth_failed(d)

    run(main())


def test_authenticate_out_of_place(auth_router):
    """A message other than AUTHENTICATE after a CHALLENGE is a protocol violation;
    a client ABORT ends the handshake quietly. Either way no session is left over."""
    async def main():
        c = await RawWs.open(auth_router)
        try:
            ch, _ = await c.hello_auth("realm1", authmethods=["wampcra"], authid="paul")
            assert ch[0] == CHALLENGE
            await c.send([16, 1, {"acknowledge": True}, "com.example.t"])  # PUBLISH before WELCOME
            code, msgs = await c.expect_closed(T)
            aborts = [m for m in msgs if m[0] == ABORT]
            assert aborts and aborts[0][2] == "wamp.error.protocol_violation", msgs
        finally:
            await c.close()
        c = await RawRs.connect(auth_router)
        try:
            ch, _ = await c.hello_auth("realm1", authmethods=["ticket"], authid="alice")
            await c.send([ABORT, {"message": "changed my mind"}, "wamp.close.normal"])
            _, msgs = await c.expect_closed(T)
            assert not [m for m in msgs if m[0] == WELCOME], msgs
        finally:
            await c.close()

    run(main())


def test_authentication_timeout(router_factory):
    """A client that never answers its CHALLENGE is closed after handshake_timeout;
    one that answers in time stays after WELCOME."""
    r = router_factory(realms=[{"name": "realm1", "uri_check": "loose",
                                "auth": {"methods": ["wampcra"], **NO_THROTTLE,
                                         "wampcra": [{"authid": "paul", "secret": PAUL_SECRET, "role": "staff"}]}}],
                       limits={"handshake_timeout": "1s"})
    LOGS.append(r.log_path)

    async def main():
        ok = await RawRs.connect(r)
        stalled = []
        try:
            t0 = time.monotonic()
            for kind in ("ws", "rs"):
                c = await open_raw(kind, r)
                stalled.append(c)
                ch, _ = await c.hello_auth("realm1", authmethods=["wampcra"], authid="paul")
                assert ch is not None and ch[0] == CHALLENGE, ch
            _, w = await ok.hello_auth("realm1", authmethods=["wampcra"], authid="paul", respond=raw_cra(PAUL_SECRET))
            assert w[0] == WELCOME, w
            for c in stalled:
                _, msgs = await c.expect_closed(5)
                assert not [m for m in msgs if m[0] == WELCOME], msgs
            elapsed = time.monotonic() - t0
            assert 0.5 <= elapsed <= 3.0, f"a stalled authentication was closed after {elapsed:.2f}s (timeout 1s)"
            await asyncio.sleep(max(0.0, t0 + 1.5 - time.monotonic()))
            rid = 7
            reply = await ok.request([48, rid, {}, "wamp.session.count"])
            assert reply[0] == 50 and reply[1] == rid, f"the authenticated session must stay: {reply!r}"
        finally:
            await close_raw(ok, *stalled)

    run(main())


# ==========================================================================
# dynamic authenticator
# ==========================================================================

@pytest.fixture
def dyn_router(router_factory, hashes):
    r = router_factory(realms=[{
        "name": "realm1", "uri_check": "loose",
        "auth": {"methods": ["ticket", "wampcra"], "authenticator": "com.example.authenticate",
                 "authenticator_timeout": "1s", **NO_THROTTLE,
                 "ticket": [{"authid": "alice", "secret": hashes["alice"], "role": "user"}],
                 "wampcra": [{"authid": "backend", "secret": PAUL_SECRET, "role": "trusted"}]},
        "role": [
            {"name": "trusted", "permission": [{"uri": "com.example.authenticate", "allow": ["register"]}]},
            {"name": "user", "permission": [{"uri": "com.app.", "match": "prefix",
                                             "allow": ["call", "register", "publish", "subscribe"]}]},
        ],
    }])
    LOGS.append(r.log_path)
    return r


def test_dynamic_authenticator(dyn_router):
    calls = []

    async def authenticate(realm, authid, details):
        calls.append((realm, authid, details))
        ticket = details.get("ticket")
        if authid == "slow":
            await asyncio.sleep(3)
            return "user"
        if authid == "dave" and ticket == DAVE_TICKET:
            return "user"
        if authid == "erin" and ticket == ERIN_TICKET:
            return {"role": "user", "authid": "erin@example.com"}
        raise ApplicationError("com.example.invalid_token", f"token rejected for {authid}")

    async def main():
        # nobody has registered the authenticator yet
        d = await refused(dyn_router, authmethods=["ticket"], authid="dave", on_challenge=ticket_answer(DAVE_TICKET))
        assert d.reason == AUTH_FAILED and "the authenticator is not available" in d.message, (d.reason, d.message)

        backend = await connect(dyn_router, authmethods=["wampcra"], authid="backend",
                                on_challenge=cra_answer(PAUL_SECRET))
        users = []
        try:
            await asyncio.wait_for(backend.register(authenticate, "com.example.authenticate"), T)

            for transport, kind in (("ws", "websocket"), ("rs", "rawsocket")):
                calls.clear()
                s = await connect(dyn_router, transport, authmethods=["ticket"], authid="dave",
                                  on_challenge=ticket_answer(DAVE_TICKET))
                users.append(s)
                # a role-only answer does not confirm the claimed authid: the router assigns one
                w = welcome_of(s)
                assert ANON_RE.match(w.pop("authid")), welcome_of(s)
                assert w == {"authrole": "user", "authmethod": "ticket", "authprovider": "dynamic"}, w
                assert len(calls) == 1, calls
                realm, aid, details = calls[0]
                assert (realm, aid) == ("realm1", "dave"), calls[0]
                assert details.get("authmethod") == "ticket" and details.get("ticket") == DAVE_TICKET, details
                t = details.get("transport") or {}
                assert t.get("type") == kind and t.get("tls") is False and t.get("peer") == "127.0.0.1", details
                # the session works under its role
                proc = f"com.app.dyn.{transport}.{TAG}"
                await asyncio.wait_for(s.register(lambda: "ok", proc), T)
                assert await call(s, proc) == "ok"

            # a dict answer renames the session
            s = await connect(dyn_router, authmethods=["ticket"], authid="erin", on_challenge=ticket_answer(ERIN_TICKET))
            users.append(s)
            assert welcome_of(s) == {"authid": "erin@example.com", "authrole": "user", "authmethod": "ticket",
                                     "authprovider": "dynamic"}

            # an ApplicationError refuses, with its message
            d = await refused(dyn_router, authmethods=["ticket"], authid="dave", on_challenge=ticket_answer("forged"))
            assert d.reason == AUTH_FAILED and "token rejected for dave" in d.message, (d.reason, d.message)

            # too slow (authenticator_timeout 1s): not available
            t0 = time.monotonic()
            d = await refused(dyn_router, authmethods=["ticket"], authid="slow", on_challenge=ticket_answer("x"))
            assert d.reason == AUTH_FAILED and "the authenticator is not available" in d.message, \
                (d.reason, d.message)
            assert time.monotonic() - t0 < 2.9, "the authenticator timeout (1s) was not applied"

            # static principals do not go to the authenticator
            calls.clear()
            s = await connect(dyn_router, authmethods=["ticket"], authid="alice", on_challenge=ticket_answer(ALICE_TICKET))
            users.append(s)
            assert welcome_of(s)["authprovider"] == "static"
            d = await refused(dyn_router, authmethods=["ticket"], authid="alice", on_challenge=ticket_answer("wrong"))
            assert_auth_failed(d)
            assert not calls, f"the authenticator must not be asked about static principals: {calls!r}"
        finally:
            await close_all(*users)
            await backend.close()

        # its session is gone: not available again
        d = await refused(dyn_router, authmethods=["ticket"], authid="dave", on_challenge=ticket_answer(DAVE_TICKET))
        assert d.reason == AUTH_FAILED and "the authenticator is not available" in d.message, (d.reason, d.message)

    run(main())


# ==========================================================================
# failed-login throttling
# ==========================================================================

WINDOW = 2.0
THROTTLE_RE = re.compile(r"^too many failed logins for this (address|address and authid); try again in (\d+) s$")


def throttle_realm(hashes, max_failures):
    return {"name": "realm1", "uri_check": "loose",
            "auth": realm1_auth(hashes, methods=["anonymous", "ticket", "wampcra", "cryptosign"],
                                max_failures=max_failures, max_failures_per_address=max_failures,
                                failure_window=f"{WINDOW:g}s")}


async def attempt(router, source, authmethods, authid=None, authextra=None, respond=None, kind="rs"):
    """One raw login from 127.0.0.<source> (or the Unix socket with source None);
    returns (challenge, final message)."""
    local = None if source is None else (f"127.0.0.{source}", 0)
    if kind == "ws":
        c = await RawWs.open(router, local_addr=local)
    else:
        c = await RawRs.connect(router, unix=source is None, local_addr=local)
    try:
        return await c.hello_auth("realm1", authmethods=authmethods, authid=authid, authextra=authextra,
                                  respond=respond)
    finally:
        await c.close()


def assert_throttled(result, what):
    ch, r = result
    assert ch is None, f"a throttled login must get no CHALLENGE: {ch!r}"
    assert r[0] == ABORT and r[2] == AUTH_FAILED, r
    m = THROTTLE_RE.match(r[1].get("message", ""))
    assert m and m.group(1) == what, f"expected 'too many failed logins for this {what}; ...': {r!r}"
    assert 1 <= int(m.group(2)) <= WINDOW, f"retry time must be within the window ({WINDOW}s): {r!r}"


def assert_welcome(result, authid=None):
    ch, r = result
    assert r[0] == WELCOME, f"expected WELCOME, got {r!r}"
    if authid is not None:
        assert r[2]["authid"] == authid, r


def test_failed_login_throttling(router_factory, hashes):
    r = router_factory(realms=[throttle_realm(hashes, 3)])
    LOGS.append(r.log_path)
    wrong = raw_cra("wrong secret")

    async def main():
        # three failures from 127.0.0.2, each for another (unknown) authid
        for i in range(3):
            ch, a = await attempt(r, 2, ["wampcra"], f"ghost-{i}", respond=wrong)
            assert ch is not None and a[0] == ABORT and a[1].get("message") == "authentication failed", a
        # three failures for "paul", each from another address (ws and rawsocket)
        for src, kind in ((3, "rs"), (4, "ws"), (5, "rs")):
            ch, a = await attempt(r, src, ["wampcra"], "paul", respond=wrong, kind=kind)
            assert ch is not None and a[0] == ABORT and a[1].get("message") == "authentication failed", a
        t_last = time.monotonic()

        # 127.0.0.2 is throttled for every method but anonymous, right secret or not
        assert_throttled(await attempt(r, 2, ["wampcra"], "peter", respond=raw_cra(PETER_PASSWORD)), "address")
        assert_throttled(await attempt(r, 2, ["wampcra"], "peter", respond=raw_cra(PETER_PASSWORD), kind="ws"),
                         "address")
        assert_throttled(await attempt(r, 2, ["ticket"], "alice", respond=lambda m, e: ALICE_TICKET), "address")
        assert_throttled(await attempt(r, 2, ["cryptosign"], authextra={"pubkey": DEVICE_PUBKEY},
                                       respond=lambda m, e: _sign64(DEVICE_SEED, e["challenge"])), "address")
        assert_welcome(await attempt(r, 2, ["anonymous"]))
        assert_welcome(await attempt(r, 2, None))
        # Autobahn sees the same ABORT
        d = await refused(r, "rs", authmethods=["wampcra"], authid="peter", on_challenge=cra_answer(PETER_PASSWORD),
                          local_addr=("127.0.0.2", 0))
        assert d.reason == AUTH_FAILED and THROTTLE_RE.match(d.message or ""), (d.reason, d.message)

        # "paul" failed from three addresses, but is not locked out: from
        # another address (and over the Unix socket) he logs in at once
        assert_welcome(await attempt(r, 6, ["wampcra"], "paul", respond=raw_cra(PAUL_SECRET)), "paul")
        assert_welcome(await attempt(r, 6, ["wampcra"], "paul", respond=raw_cra(PAUL_SECRET), kind="ws"), "paul")
        assert_welcome(await attempt(r, None, ["wampcra"], "paul", respond=raw_cra(PAUL_SECRET)), "paul")
        # ... and so do others
        assert_welcome(await attempt(r, 6, ["wampcra"], "peter", respond=raw_cra(PETER_PASSWORD)), "peter")
        assert_welcome(await attempt(r, 6, ["cryptosign"], authextra={"pubkey": DEVICE_PUBKEY},
                                     respond=lambda m, e: _sign64(DEVICE_SEED, e["challenge"])), "device-1")

        # after the window, both work again
        await asyncio.sleep(max(0.0, t_last + WINDOW + 0.3 - time.monotonic()))
        assert_welcome(await attempt(r, 2, ["wampcra"], "peter", respond=raw_cra(PETER_PASSWORD)), "peter")
        assert_welcome(await attempt(r, 6, ["wampcra"], "paul", respond=raw_cra(PAUL_SECRET)), "paul")
        s = await connect(r, "rs", authmethods=["wampcra"], authid="paul", on_challenge=cra_answer(PAUL_SECRET),
                          local_addr=("127.0.0.2", 0))
        await s.close()

    run(main())
    assert r.wait_log(r"too many failed logins", timeout=2), "throttled logins should be logged"


def test_throttled_address_any_cryptosign_key(router_factory, hashes):
    """Throttling comes before anything else: from a throttled address even an
    unknown cryptosign key gets the throttling ABORT, not a fresh failure."""
    r = router_factory(realms=[throttle_realm(hashes, 1)])
    LOGS.append(r.log_path)

    async def main():
        ch, a = await attempt(r, 2, ["wampcra"], "ghost", respond=raw_cra("wrong"))
        assert a[0] == ABORT and a[1].get("message") == "authentication failed", a
        assert_throttled(await attempt(r, 2, ["cryptosign"], authextra={"pubkey": DEVICE_PUBKEY}), "address")
        assert_throttled(await attempt(r, 2, ["cryptosign"], authextra={"pubkey": STRANGER_KEY.public_key()}),
                         "address")

    run(main())


# ==========================================================================
# logs: failures are logged with the authid; no secret ever is
# ==========================================================================

def test_failures_logged_without_secrets(auth_router):
    """Runs last in this module: a failed login of each method, then every router
    log of the module is scanned for the secrets (the routerproc header with
    the config, lines starting with "# ", is not router output)."""
    async def main():
        await asyncio.gather(
            refused(auth_router, authmethods=["ticket"], authid="mallory-log", on_challenge=ticket_answer(ALICE_TICKET)),
            refused(auth_router, authmethods=["wampcra"], authid="peter", on_challenge=cra_answer(PAUL_SECRET)),
            refused(auth_router, authmethods=["cryptosign"], authextra={"pubkey": DEVICE_PUBKEY},
                    on_challenge=cryptosign_answer(STRANGER_KEY)),
        )
        s = await connect(auth_router, authmethods=["wampcra"], authid="peter", on_challenge=cra_answer(PETER_PASSWORD))
        await s.close()

    run(main())
    for authid in ("mallory-log", "peter", "device-1"):
        lines = auth_router.wait_log(rf"authentication failed.*{re.escape(authid)}|"
                                     rf"{re.escape(authid)}.*authentication failed", timeout=3)
        assert lines, f"no log line with 'authentication failed' and the authid {authid!r}"

    found = []
    for path in dict.fromkeys(LOGS):
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if line.startswith("# "):
                continue
            for what, secret in SECRETS.items():
                if secret in line:
                    found.append(f"{path.name}:{n}: {what}: {line[:300]}")
    assert not found, "secrets in the router logs:\n" + "\n".join(found)
