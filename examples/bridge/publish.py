#!/usr/bin/env python3
"""Publish an event through Switchyard's HTTP bridge with a signed request.

Standard library only. Usage:

    SWITCHYARD_BRIDGE=http://127.0.0.1:8090 SWITCHYARD_KEY=mykey SWITCHYARD_SECRET=... \\
        python3 publish.py com.example.topic '["hello", 42]' '{"color": "orange"}'

Prints the router's answer ({"id": <publication id>}) and exits 0, or prints the refusal
({"error", "message"}) and exits 1.
"""

import base64
import datetime
import hashlib
import hmac
import json
import os
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request


def sign(secret: str, key: str, timestamp: str, seq: str, nonce: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), key.encode() + timestamp.encode() + seq.encode() + nonce.encode() + body,
                   hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode()


def publish(base: str, key: str, secret: str, topic: str, args=None, kwargs=None, options=None) -> dict:
    body = json.dumps({"topic": topic, "args": args or [], "kwargs": kwargs or {},
                       "options": options or {}}).encode()
    now = datetime.datetime.now(datetime.timezone.utc)
    timestamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    # seq and nonce are decimal integers (as Crossbar parses them); a signature
    # is accepted once, so each request gets a fresh random nonce.
    seq, nonce = "1", str(secrets.randbits(53))
    query = urllib.parse.urlencode({"key": key, "timestamp": timestamp, "seq": seq, "nonce": nonce,
                                    "signature": sign(secret, key, timestamp, seq, nonce, body)})
    req = urllib.request.Request(f"{base}/publish?{query}", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read() or b"{}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    reply = publish(os.environ.get("SWITCHYARD_BRIDGE", "http://127.0.0.1:8090"),
                    os.environ["SWITCHYARD_KEY"], os.environ["SWITCHYARD_SECRET"], sys.argv[1],
                    json.loads(sys.argv[2]) if len(sys.argv) > 2 else [],
                    json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})
    print(json.dumps(reply))
    sys.exit(0 if "id" in reply else 1)
