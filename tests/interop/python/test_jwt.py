"""JWT tickets (issue 18 item 2) with Autobahn|Python and tokens minted by PyJWT.

The app side is what a real application would run: PyJWT mints the token
(HS256 with a shared secret, RS256 and EdDSA with the private keys of
crates/server/tests/jwt_keys, the router reading the public key from a PEM file
and from a JWKS file), and an Autobahn session passes it as its WAMP ticket.
Refusals (expired, bad signature, wrong audience) come back as the ABORT's
reason, and the token never appears in the ABORT or the router's log.
"""

import time
from pathlib import Path

import jwt
import pytest

from wamplib import JoinFailed, connect, run

KEYS = Path(__file__).resolve().parents[3] / "crates" / "server" / "tests" / "jwt_keys"
SECRET = "pyjwt-interop-shared-secret"
ISS = "https://app.example.com"
AUD = "switchyard"
NO_THROTTLE = {"max_failures": 1000, "max_failures_per_address": 100000}


@pytest.fixture(scope="module")
def router(module_router_factory):
    return module_router_factory(realms=[{
        "name": "realm1", "uri_check": "loose",
        "auth": {"methods": ["ticket"], **NO_THROTTLE, "jwt": [
            {"algorithms": ["HS256"], "secret": SECRET, "issuer": ISS, "audience": AUD,
             "role_claim": "role", "role": "user"},
            {"algorithms": ["RS256"], "public_key_file": str(KEYS / "rsa_public.pem"),
             "issuer": ISS, "audience": AUD, "role": "rsa-user"},
            {"algorithms": ["EdDSA"], "jwks_file": str(KEYS / "jwks.json"), "role": "device"},
        ]},
    }])


def claims(sub, **extra):
    c = {"sub": sub, "iss": ISS, "aud": AUD, "exp": int(time.time()) + 300}
    c.update(extra)
    return c


def login(router, token, authid=None):
    async def main():
        s = await connect(router, "ws", authmethods=["ticket"], authid=authid,
                          on_challenge=lambda session, challenge: token)
        d = s.joined.result()
        out = (d.authid, d.authrole, d.authprovider)
        await s.close()
        return out
    return run(main())


def refused(router, token):
    with pytest.raises(JoinFailed) as e:
        login(router, token)
    assert e.value.details.reason == "wamp.error.authentication_failed"
    assert token not in (e.value.details.message or "")
    return e.value.details.message


def test_pyjwt_tokens_of_each_algorithm_log_in(router):
    hs = jwt.encode(claims("alice", role="admin"), SECRET, algorithm="HS256")
    assert login(router, hs) == ("alice", "admin", "jwt")
    rsa = jwt.encode(claims("bob"), (KEYS / "rsa_private.pem").read_bytes(), algorithm="RS256")
    assert login(router, rsa, authid="bob") == ("bob", "rsa-user", "jwt")
    ed = jwt.encode({"sub": "carol", "exp": int(time.time()) + 300},
                    (KEYS / "ed25519_private.pem").read_bytes(), algorithm="EdDSA",
                    headers={"kid": "ed-1"})
    assert login(router, ed) == ("carol", "device", "jwt")


def test_pyjwt_refusals_name_the_reason(router):
    expired = jwt.encode(claims("alice", exp=int(time.time()) - 600), SECRET, algorithm="HS256")
    assert "expired" in refused(router, expired)
    forged = jwt.encode(claims("alice"), "not-the-shared-secret-at-all", algorithm="HS256")
    assert "bad signature" in refused(router, forged)
    other = jwt.encode(claims("alice", aud="another-service"), SECRET, algorithm="HS256")
    assert "wrong audience" in refused(router, other)
    log = router.log_text()
    for token in (expired, forged, other):
        assert token not in log
