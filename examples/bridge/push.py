#!/usr/bin/env python3
"""Enqueue a job into a durable queue through Switchyard's HTTP bridge.

Standard library only. Usage:

    SWITCHYARD_BRIDGE=http://127.0.0.1:8090 SWITCHYARD_KEY=mykey SWITCHYARD_SECRET=... \\
        python3 push.py QUEUE '{"args": [42], "delay": "5s"}' [IDEMPOTENCY_KEY]

`POST /queues/{name}/jobs` is signed over a canonical string that binds the
method, the path (the queue), the Idempotency-Key header and the body, so the
request cannot be replayed into another queue or under another key (see
docs/HTTP-BRIDGE.md, "Signing"). Prints the answer ({"id", "duplicate"}) and
exits 0 (202 stored, or 201 with queue_push_status = 201; 409 duplicate key), or prints the refusal and exits 1.
"""

import base64
import datetime
import hashlib
import hmac
import os
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request


def sign(secret: str, method: str, path: str, key: str, timestamp: str, seq: str, nonce: str,
         idempotency_key: str | None, body: bytes) -> str:
    """URL-safe base64 (with padding) of HMAC-SHA256(secret, the canonical string)."""
    canonical = "\n".join(["switchyard-bridge-v1", method, path, key, timestamp, seq, nonce,
                           idempotency_key or "", hashlib.sha256(body).hexdigest()])
    mac = hmac.new(secret.encode(), canonical.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode()


def push(base: str, key: str, secret: str, queue: str, job: bytes,
         idempotency_key: str | None = None) -> tuple[int, str]:
    path = "/queues/" + urllib.parse.quote(queue, safe="") + "/jobs"
    now = datetime.datetime.now(datetime.timezone.utc)
    timestamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    # seq and nonce are decimal integers; a signature is accepted once.
    seq, nonce = "1", str(secrets.randbits(53))
    query = urllib.parse.urlencode({
        "key": key, "timestamp": timestamp, "seq": seq, "nonce": nonce,
        "signature": sign(secret, "POST", path, key, timestamp, seq, nonce, idempotency_key, job)})
    headers = {"Content-Type": "application/json"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    req = urllib.request.Request(f"{base}{path}?{query}", data=job, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    queue = sys.argv[1]
    job = (sys.argv[2] if len(sys.argv) > 2 else "{}").encode()
    idempotency_key = sys.argv[3] if len(sys.argv) > 3 else None
    status, reply = push(os.environ.get("SWITCHYARD_BRIDGE", "http://127.0.0.1:8090"),
                         os.environ["SWITCHYARD_KEY"], os.environ["SWITCHYARD_SECRET"],
                         queue, job, idempotency_key)
    print(reply.strip())
    return 0 if status in (201, 202, 409) else 1


if __name__ == "__main__":
    sys.exit(main())
