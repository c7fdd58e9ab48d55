"""Transport-level handshakes: RawSocket opening handshake and WebSocket upgrade."""

import asyncio

import pytest

from wamplib import RS_MAGIC, RawRs, T, http_exchange, run, upgrade_request

# default max_message_size = 1048576 = 2**20  ->  LENGTH = 20 - 9 = 11
DEFAULT_LENGTH = 11


async def rs_exchange(router, data: bytes, unix=False, timeout=T):
    """Send raw bytes to the RawSocket listener; return (bytes received until EOF, closed?)."""
    c = await RawRs.open(router, unix=unix)
    try:
        c.writer.write(data)
        await c.writer.drain()
        got = b""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return got, False
            try:
                chunk = await asyncio.wait_for(c.reader.read(4096), left)
            except asyncio.TimeoutError:
                return got, False
            except ConnectionResetError:
                return got, True
            if not chunk:
                return got, True
            got += chunk
    finally:
        await c.close()


@pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix"])
@pytest.mark.parametrize("ser", [1, 2, 3], ids=["json", "msgpack", "cbor"])
def test_rawsocket_handshake_ok(router, ser, unix):
    async def main():
        c = await RawRs.open(router, unix=unix)
        try:
            reply = await c.handshake(serializer=ser, length=15)
            assert reply == bytes([RS_MAGIC, (DEFAULT_LENGTH << 4) | ser, 0, 0]), \
                f"handshake reply {reply.hex()} != {bytes([RS_MAGIC, (DEFAULT_LENGTH << 4) | ser, 0, 0]).hex()}"
        finally:
            await c.close()

    run(main())


def test_rawsocket_handshake_small_client_length(router):
    """The client's LENGTH only limits what the router sends; the router still
    answers with its own limit."""

    async def main():
        c = await RawRs.open(router)
        try:
            reply = await c.handshake(serializer=1, length=0)
            assert reply == bytes([RS_MAGIC, (DEFAULT_LENGTH << 4) | 1, 0, 0]), reply.hex()
        finally:
            await c.close()

    run(main())


@pytest.mark.parametrize("ser", [0, 4, 5, 15])
def test_rawsocket_unsupported_serializer(router, ser):
    async def main():
        got, closed = await rs_exchange(router, bytes([RS_MAGIC, 0xF0 | ser, 0, 0]))
        assert got == bytes([RS_MAGIC, 0x10, 0, 0]), f"expected error reply 7f100000, got {got.hex()!r}"
        assert closed, "router did not close the connection after the handshake error"

    run(main())


@pytest.mark.parametrize("reserved", [b"\x00\x01", b"\x80\x00", b"\xff\xff"])
def test_rawsocket_reserved_bytes(router, reserved):
    async def main():
        got, closed = await rs_exchange(router, bytes([RS_MAGIC, 0xF1]) + reserved)
        assert got == bytes([RS_MAGIC, 0x30, 0, 0]), f"expected error reply 7f300000, got {got.hex()!r}"
        assert closed, "router did not close the connection after the handshake error"

    run(main())


@pytest.mark.parametrize("first", [b"\x00\xf1\x00\x00", b"GET / HTTP/1.1\r\n\r\n", b"\x7e\xf1\x00\x00"],
                         ids=["zero", "http", "7e"])
def test_rawsocket_bad_magic(router, first):
    async def main():
        got, closed = await rs_exchange(router, first, timeout=3)
        assert closed, f"router did not close a connection with a bad magic byte (got {got.hex()!r})"
        assert not (len(got) >= 2 and got[0] == RS_MAGIC and got[1] & 0x0F), \
            f"router accepted a handshake with a bad magic byte: {got.hex()}"

    run(main())


# ---------------------------------------------------------------- websocket ---

SUBPROTOCOLS = ["wamp.2.json", "wamp.2.msgpack", "wamp.2.cbor"]


@pytest.mark.parametrize("offered,chosen", [
    (["wamp.2.json"], "wamp.2.json"),
    (["wamp.2.msgpack"], "wamp.2.msgpack"),
    (["wamp.2.cbor"], "wamp.2.cbor"),
    (["foo.bar", "wamp.2.cbor"], "wamp.2.cbor"),
])
def test_ws_upgrade_ok(router, offered, chosen):
    status, headers, _ = http_exchange(router.host, router.ws_port,
                                       upgrade_request(router.host, router.ws_port, "/ws", offered))
    assert status == 101, f"upgrade with {offered} gave HTTP {status}"
    assert headers.get("sec-websocket-protocol") == chosen, headers
    assert headers.get("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", headers


@pytest.mark.parametrize("offered", [["foo.bar"], None, ["wamp.2.ubjson", "wamp.2.flatbuffers"]],
                         ids=["unsupported", "none", "other-wamp"])
def test_ws_upgrade_without_supported_subprotocol(router, offered):
    status, headers, body = http_exchange(router.host, router.ws_port,
                                          upgrade_request(router.host, router.ws_port, "/ws", offered))
    assert status == 400, f"expected HTTP 400 for subprotocols {offered}, got {status} {body[:200]!r}"
    assert headers.get("content-type", "").startswith("text/"), f"400 body should be text: {headers!r}"
    text = body.decode("utf-8", "replace")
    missing = [p for p in SUBPROTOCOLS if p not in text]
    assert not missing, f"400 body should name the supported subprotocols, missing {missing}: {text!r}"


def test_plain_get_without_upgrade(router):
    status, _, body = http_exchange(router.host, router.ws_port,
                                    upgrade_request(router.host, router.ws_port, "/ws", upgrade=False))
    assert 400 <= status < 500, f"plain GET /ws gave HTTP {status} {body[:200]!r}"


@pytest.mark.parametrize("upgrade", [True, False], ids=["upgrade", "plain"])
def test_unknown_path_404(router, upgrade):
    status, _, body = http_exchange(router.host, router.ws_port,
                                    upgrade_request(router.host, router.ws_port, "/nope", ["wamp.2.json"]
                                                    if upgrade else None, upgrade=upgrade))
    assert status == 404, f"GET /nope gave HTTP {status} {body[:200]!r}"
