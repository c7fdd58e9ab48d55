#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/.

Sources:
  - the WAMP spec's test vectors (testsuite/singlemessage/**/*.json): the exact
    bytes of each message in JSON, MessagePack and CBOR seed the three decoders;
    the same messages framed after a RawSocket handshake seed `rawsocket`; their
    topics and procedures seed `uri`; their URIs, args and kwargs make the bodies
    that seed `bridge_request`;
  - the repository's own TOML (switchyard.example.toml, packaging/, examples/ and
    every ```toml block of docs/*.md) seeds `config`;
  - records written here in the store's format (crates/queue/src/codec.rs, versions
    1 and 2) seed `queue_record`; a few signed query strings and X-Authentication
    headers seed `bridge_signature`.

The vectors are found at $SWITCHYARD_WAMP_SPEC, else ../shared/wamp-spec next to
the checkout (as crates/proto/tests/golden.rs finds them). The corpus is small and
committed; run this again after the vectors or the formats change:

    python3 scripts/fuzz-seeds.py

Standard library only. Existing seed files of a target are replaced, except the
regression seeds named `crash-fixed-*` (inputs that once crashed a target, added by
hand after the fix), which are kept.
"""

import glob
import hashlib
import json
import os
import re
import shutil
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
# Regression seeds added by hand (an input that crashed a target once): never removed.
KEPT_PREFIX = "crash-fixed-"


def spec_dir():
    env = os.environ.get("SWITCHYARD_WAMP_SPEC")
    if env:
        return env
    return os.path.join(ROOT, "..", "shared", "wamp-spec")


class Corpus:
    def __init__(self, target):
        self.dir = os.path.join(CORPUS, target)
        self.seen = set()
        os.makedirs(self.dir, exist_ok=True)
        for name in os.listdir(self.dir):
            path = os.path.join(self.dir, name)
            if name.startswith(KEPT_PREFIX):
                continue
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)

    def add(self, data, name="seed"):
        if isinstance(data, str):
            data = data.encode()
        digest = hashlib.sha1(data).hexdigest()[:12]
        if digest in self.seen:
            return
        self.seen.add(digest)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40]
        with open(os.path.join(self.dir, f"{name}-{digest}"), "wb") as f:
            f.write(data)

    def __len__(self):
        return len(self.seen)


def vectors():
    """(file stem, serializer, bytes, expected attributes) of every sample."""
    base = os.path.join(spec_dir(), "testsuite", "singlemessage")
    files = sorted(glob.glob(os.path.join(base, "*", "*.json")))
    if len(files) < 20:
        sys.exit(f"fuzz-seeds.py: the WAMP test vectors are not under {base} "
                 "(set SWITCHYARD_WAMP_SPEC to the wamp-spec directory)")
    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        with open(path) as f:
            doc = json.load(f)
        for sample in doc.get("samples", []):
            attrs = sample.get("expected_attributes", {})
            for ser in ("json", "msgpack", "cbor"):
                for enc in sample.get("serializers", {}).get(ser, []):
                    if "bytes_hex" in enc:
                        data = bytes.fromhex(enc["bytes_hex"])
                    elif "bytes" in enc:
                        data = enc["bytes"].encode()
                    else:
                        continue
                    yield stem, ser, data, attrs


def frame(kind, payload):
    n = len(payload)
    return bytes([kind, (n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF]) + payload


def put_str(s):
    b = s.encode()
    return struct.pack("<I", len(b)) + b


def opt_str(s):
    return b"\x00" if s is None else b"\x01" + put_str(s)


def job_record(version=2, target=("proc", "com.example.work"), retry=None, key=None,
               topic=None, error=None, dead=None, payload=b'{"args":[1]}'):
    r = bytes([version]) + struct.pack("<Q", 42) + put_str("pdf")
    if version == 1:
        r += b"\x00" + struct.pack("<I", len(payload)) + payload
    else:
        r += struct.pack("<I", len(payload))
    if target[0] == "proc":
        r += b"\x00" + put_str(target[1])
    else:
        _, url, method, statuses = target
        r += b"\x01" + put_str(url) + put_str(method) + struct.pack("<H", len(statuses))
        r += b"".join(struct.pack("<H", s) for s in statuses)
    r += bytes([5]) + struct.pack("<QQIQ", 1000, 2000, 3, 7)
    r += b"\x01" + struct.pack("<I", 5)
    r += opt_str(retry) + opt_str(key) + opt_str(topic)
    if error is None:
        r += b"\x00"
    else:
        r += b"\x01" + put_str(error[0]) + put_str(error[1]) + struct.pack("<Q", 4999)
    if dead is None:
        r += b"\x00"
    else:
        r += b"\x01" + bytes([dead]) + struct.pack("<Q", 5000)
    return r


def toml_texts():
    for name in ("switchyard.example.toml", "packaging/switchyard.toml",
                 "examples/php/switchyard.toml"):
        path = os.path.join(ROOT, name)
        if os.path.exists(path):
            with open(path) as f:
                text = f.read()
            yield name, text
            # The example is mostly commented out: its settings uncommented too.
            yield name + "-uncommented", re.sub(r"(?m)^# ?(?=[\[a-z])", "", text)
    for path in sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))):
        with open(path) as f:
            text = f.read()
        for i, block in enumerate(re.findall(r"```toml\n(.*?)```", text, re.S)):
            yield f"{os.path.basename(path)}-{i}", block


def afl_token(tok):
    """A dictionary line: the token quoted, with \\, \\" and \\xNN escapes."""
    out = []
    for b in tok.encode():
        if b in (0x5C, 0x22):
            out.append("\\" + chr(b))
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return '"' + "".join(out) + '"'


def ws_frame(opcode, payload, fin=True, mask=b"\x37\xfa\x21\x3d", rsv=0):
    """A client's WebSocket frame (RFC 6455 5.2): masked unless `mask` is None."""
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    n = len(payload)
    m = 0x80 if mask is not None else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([m | 127]) + n.to_bytes(8, "big")
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def websocket_seeds(c, messages):
    """`websocket_frames`: a read-size byte, then frames: WAMP messages as text, fragments,
    control frames, and each rule the decoder enforces broken once."""
    hello = b'[1,"realm1",{"roles":{"subscriber":{}}}]'
    text = "h\u00e9llo \u20ac".encode()
    seeds = {
        "text": [0, ws_frame(1, hello)],
        "fragments": [3, ws_frame(1, text[:2], fin=False) + ws_frame(0, text[2:6], fin=False)
                      + ws_frame(9, b"mid") + ws_frame(0, text[6:])],
        "binary-16bit": [5, ws_frame(2, bytes(range(256)) * 2)],
        "ping-close": [1, ws_frame(9, b"x") + ws_frame(10, b"") + ws_frame(8, (1000).to_bytes(2, "big") + b"bye")],
        "bad-utf8": [2, ws_frame(1, b"ok\xc3\x28")],
        "unmasked": [0, ws_frame(1, hello, mask=None)],
        "rsv": [0, ws_frame(1, hello, rsv=4)],
        "long-control": [0, ws_frame(9, b"p" * 126)],
        "close-bad-code": [0, ws_frame(8, (1005).to_bytes(2, "big"))],
        "continue-alone": [4, ws_frame(0, b"lost")],
        "too-big": [9, ws_frame(2, b"z" * 5000)],
    }
    for name, (step, data) in seeds.items():
        c.add(bytes([step]) + data, name)
    for stem, data in messages[:20]:
        c.add(bytes([len(data) % 17]) + ws_frame(1, data), stem)


def main():
    decoders = {s: Corpus(f"decode_{s}") for s in ("json", "msgpack", "cbor")}
    raw = Corpus("rawsocket")
    ws = Corpus("websocket_frames")
    ws_messages = []
    uris = Corpus("uri")
    bridge = Corpus("bridge_request")
    ser_ids = {"json": 1, "msgpack": 2, "cbor": 3}
    for stem, ser, data, attrs in vectors():
        decoders[ser].add(data, stem)
        # A handshake (serializer, 2^(9+exp) max) then the message, a PING and its PONG.
        hs = bytes([0x7F, (len(data) % 16) << 4 | ser_ids[ser], 0, 0])
        raw.add(hs + frame(0, data) + frame(1, b"ping") + frame(2, b"ping"), f"{ser}-{stem}")
        if ser == "json":
            ws_messages.append((stem, data))
        for key in ("topic", "procedure", "reason", "error", "realm", "uri"):
            v = attrs.get(key)
            if isinstance(v, str) and v:
                uris.add(v, key)
        if ser == "json":
            for uri_key in ("topic", "procedure"):
                if isinstance(attrs.get(uri_key), str):
                    body = {uri_key: attrs[uri_key]}
                    for k in ("args", "kwargs", "options"):
                        if attrs.get(k) is not None:
                            body[k] = attrs[k]
                    bridge.add(json.dumps(body), stem)
    for u in ("com.myapp.topic1", "com..topic", ".", "wamp.session.on_join",
              "com.my_app.v2", "a b", "x#y", "Ünïcode.ok"):
        uris.add(u, "extra")
    raw.add(b"\x7f\xf1\x00\x00" + b"\x08\x00\x00\x00", "16MiB-header")
    raw.add(b"\x7f\x02\x00\x00" + frame(0, b"\x93\x06\x80\xb1wamp.close.normal"), "goodbye")
    raw.add(b"\x7f\x40\x00\x00", "refusal")
    bridge.add('{"topic": "com.example.t", "args": [1, "x", {"a": null}], "kwargs": {"k": 1.5}, '
               '"options": {"exclude_me": false}}', "full")
    bridge.add('{"procedure": "com.example.p", "args": [], "options": {"timeout": 1000}}', "call")

    sig = Corpus("bridge_signature")
    # The input is lines: query, X-Authentication value, seq, nonce, timestamp.
    sig.add("key=foo&timestamp=2026-01-01T00%3A00%3A00.000Z&seq=1&nonce=42&signature=abc%3D\n"
            "key=foo, timestamp=2026-01-01T00:00:00.000Z, nonce=42, signature=abc=\n"
            "1\n42\n2026-01-01T00:00:00.000Z\n", "crossbar")
    sig.add("key=a%2Cb&timestamp=2026-12-07T10%3A00%3A00Z&seq=18446744073709551615&nonce=0"
            "&signature=x_y%2B%3D\nkey=a%2Cb,timestamp=2026-12-07T10:00:00+01:00,nonce=7,"
            "signature=x_y=\n18446744073709551615\n0\n2026-12-07T10:00:00+01:00\n", "escapes")
    sig.add("a=1&a=2\nkey=k\n-1\n1a\nyesterday\n", "bad")

    cfg = Corpus("config")
    for name, text in toml_texts():
        cfg.add(text, name)

    rec = Corpus("queue_record")
    rec.add(job_record(), "v2-procedure")
    rec.add(job_record(version=1), "v1-inline")
    rec.add(job_record(target=("http", "https://example.com/hook", "POST", [200, 409]),
                       retry='{"kind":"fixed","times":2,"spacing":"5s"}', key="k1",
                       topic="com.example.done", error=("com.example.error", "boom"), dead=1),
            "v2-http-dead")
    rec.add(job_record(retry='{"kind":"exponential","initial":"1s","factor":2.0,'
                             '"cap":"5m","jitter":0.1,"max_attempts":4}'), "v2-exponential")
    rec.add(job_record(retry='"none"'), "v2-none")
    rec.add(b"\x00" + b"{}", "payload-row")

    # Dictionaries (AFL++ -x): tokens that mutations splice in.
    dict_dir = os.path.join(ROOT, "fuzz", "dict")
    os.makedirs(dict_dir, exist_ok=True)
    json_tokens = ["[", "]", "{", "}", ",", ":", '"', "null", "true", "false", "-0", "1e999",
                   "0.5", "18446744073709551616", "\\u0000", "\\ud800", '"\\u0000AAEC"']
    tables, keys = set(), set()
    for _, text in toml_texts():
        tables.update(re.findall(r"(?m)^#? ?(\[\[?[a-z_.]+\]\]?)", text))
        keys.update(re.findall(r"(?m)^#? ?([a-z_]+) ?=", text))
    toml_tokens = sorted(tables) + [k + " = " for k in sorted(keys)] + [
        '"', "'''", "[", "]", "{", "}", "=", ",", "true", "false", "1979-05-27T07:32:00Z",
        '"10s"', '"1 MiB"', "\n"]
    bridge_tokens = json_tokens + ['"topic"', '"procedure"', '"args"', '"kwargs"', '"options"']
    for name, tokens in [("decode_json", json_tokens), ("bridge_request", bridge_tokens),
                         ("config", toml_tokens)]:
        with open(os.path.join(dict_dir, name + ".dict"), "w") as f:
            for tok in tokens:
                f.write(afl_token(tok) + "\n")
        print(f"fuzz/dict/{name}.dict: {len(tokens)} tokens")

    websocket_seeds(ws, ws_messages)
    for c in [*decoders.values(), raw, ws, uris, bridge, sig, cfg, rec]:
        print(f"{os.path.relpath(c.dir, ROOT)}: {len(c)} seeds")


if __name__ == "__main__":
    main()
