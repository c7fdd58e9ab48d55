"""The app as authenticator and authorizer over HTTP (issue 18 item 1), with an
app written the way a PHP or WSGI developer would: Python's http.server, which
checks the router's signature with hmac/hashlib (the code it would use for the
router's subscriber POSTs), and an Autobahn|Python client logging in.

Covered from the outside: a login the app accepts (its authid and role in
WELCOME), one it refuses (its message in the ABORT), an action it allows and
one it denies (the second time from the router's cache: the app is asked once),
and a request whose signature does not verify never being answered with a role.
"""

import base64
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from autobahn.wamp.exception import ApplicationError

from wamplib import JoinFailed, connect, run

KEY = "router"
SECRET = "python-app-shared-secret-0123"
ASKED = []  # (path, body) the app answered


def verified(query: dict, body: bytes) -> bool:
    q = {k: v[0] for k, v in query.items()}
    if q.get("key") != KEY or not all(k in q for k in ("timestamp", "seq", "nonce", "signature")):
        return False
    msg = (q["key"] + q["timestamp"] + q["seq"] + q["nonce"]).encode() + body
    mac = base64.urlsafe_b64encode(hmac.new(SECRET.encode(), msg, hashlib.sha256).digest()).decode()
    return hmac.compare_digest(mac, q["signature"])


class App(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, value):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if not verified(parse_qs(url.query), body):
            return self.answer(401, {"message": "bad signature"})
        req = json.loads(body)
        ASKED.append((url.path, req))
        if url.path == "/login":
            if req["ticket"] == "php-session-42":
                return self.answer(200, {"authid": "user42", "role": "customer"})
            return self.answer(403, {"message": "session expired"})
        if url.path == "/authorize":
            return self.answer(200, {"allow": req["uri"].startswith("com.shop.user42.")})
        return self.answer(404, {})


@pytest.fixture(scope="module")
def app():
    server = ThreadingHTTPServer(("127.0.0.1", 0), App)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def router(module_router_factory, app):
    return module_router_factory(realms=[{
        "name": "realm1", "uri_check": "loose",
        "auth": {"methods": ["ticket"], "max_failures": 1000, "max_failures_per_address": 100000},
        "http_auth": {"authenticator_url": f"{app}/login", "authorizer_url": f"{app}/authorize",
                      "key": KEY, "secret": SECRET, "timeout": "2s"},
        # one listed role, so that authorization applies; "customer" is the app's
        "role": [{"name": "admin", "permission": [{"uri": "com.admin.", "match": "prefix",
                                                   "allow": ["subscribe"]}]}],
    }])


def test_the_app_logs_users_in_and_decides_their_actions(router):
    async def main():
        s = await connect(router, "ws", authmethods=["ticket"], authid="someone",
                          on_challenge=lambda session, challenge: "php-session-42")
        d = s.joined.result()
        assert (d.authid, d.authrole, d.authprovider) == ("user42", "customer", "dynamic")
        await s.subscribe(lambda *a: None, "com.shop.user42.orders")
        with pytest.raises(ApplicationError) as e:
            await s.subscribe(lambda *a: None, "com.shop.user7.orders")
        assert e.value.error == "wamp.error.not_authorized"
        await s.subscribe(lambda *a: None, "com.shop.user42.orders")  # answered from the cache
        await s.close()
    run(main())
    asked = [p for p, _ in ASKED]
    assert asked.count("/login") == 1
    assert asked.count("/authorize") == 2, asked
    login = next(b for p, b in ASKED if p == "/login")
    assert login["realm"] == "realm1" and login["authid"] == "someone" and login["transport"]["type"] == "websocket"


def test_the_app_refuses_a_login(router):
    with pytest.raises(JoinFailed) as e:
        run(connect(router, "ws", authmethods=["ticket"], authid="someone",
                    on_challenge=lambda session, challenge: "stale-session"))
    assert e.value.details.reason == "wamp.error.authentication_failed"
    assert "session expired" in e.value.details.message
