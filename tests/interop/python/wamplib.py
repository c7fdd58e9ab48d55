"""Client helpers for the interop tests.

* ``connect()``         an Autobahn|Python (asyncio) session over WebSocket,
                        RawSocket/TCP or RawSocket/Unix with a chosen serializer.
* ``RawWs``             a raw WAMP-over-WebSocket JSON client (``websockets`` lib).
* ``RawRs``             a raw WAMP-over-RawSocket JSON client (asyncio streams).
* ``run()``             run a coroutine in a fresh event loop with a hard timeout.
* ``Peer``              a raw JSON WebSocket session announcing chosen Advanced
                        Profile features, with a background reader (``next``,
                        ``quiet``, ``request``, register/call/subscribe/publish).
* ``MetaMonitor``       a raw session recording the ``wamp.subscription.on_*``
                        (or ``wamp.registration.on_*``) meta events.
* ``Inbox``/``subscribe``/``ack``/``marker``  Autobahn subscriptions that record
                        their events, acknowledged publications and markers.
* ``wait_until``, ``call``, ``meta_error``, ``sid``, ``authid``, ``unique_uri``,
  ``check_created``, ``meta_events_of``: small helpers of the advanced-profile tests.
* Authentication: ``connect(..., authmethods=, authid=, authextra=, on_challenge=)``
  joins through Autobahn's own CHALLENGE / AUTHENTICATE flow; ``_RawBase.hello_auth``
  does the same on a raw client; ``local_addr`` (``connect``, ``RawWs.open``,
  ``RawRs.open``/``connect``) picks the client's source address (e.g. 127.0.0.2).

Every wait has an explicit timeout so nothing can hang.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import struct
import time
import uuid
from typing import NamedTuple

import txaio

txaio.use_asyncio()

from autobahn.asyncio.rawsocket import WampRawSocketClientFactory  # noqa: E402
from autobahn.asyncio.wamp import ApplicationSession  # noqa: E402
from autobahn.asyncio.websocket import WampWebSocketClientFactory  # noqa: E402
from autobahn.wamp.exception import ApplicationError  # noqa: E402
from autobahn.wamp.serializer import CBORSerializer, JsonSerializer, MsgPackSerializer  # noqa: E402
from autobahn.wamp.types import CallResult, ComponentConfig, PublishOptions, SubscribeOptions  # noqa: E402
import websockets  # noqa: E402
from websockets.asyncio.client import connect as ws_connect  # noqa: E402

SERIALIZERS = {"json": JsonSerializer, "msgpack": MsgPackSerializer, "cbor": CBORSerializer}

# WAMP message codes
HELLO, WELCOME, ABORT, GOODBYE, ERROR = 1, 2, 3, 6, 8
CHALLENGE, AUTHENTICATE = 4, 5
PUBLISH, PUBLISHED, SUBSCRIBE, SUBSCRIBED, UNSUBSCRIBE, UNSUBSCRIBED, EVENT = 16, 17, 32, 33, 34, 35, 36
CALL, RESULT, REGISTER, REGISTERED, UNREGISTER, UNREGISTERED, INVOCATION, YIELD = 48, 50, 64, 65, 66, 67, 68, 70
CANCEL, INTERRUPT = 49, 69

HELLO_ROLES = {"roles": {"publisher": {}, "subscriber": {}, "caller": {}, "callee": {}}}

# Advanced Profile features a raw Peer announces (HELLO.Details.roles.<role>.features)
ALL_CALLER = {"caller_identification": True, "call_canceling": True, "progressive_call_results": True}
ALL_CALLEE = {"caller_identification": True, "call_canceling": True, "progressive_call_results": True,
              "pattern_based_registration": True, "shared_registration": True}
PCI_CALLER = dict(ALL_CALLER, progressive_call_invocations=True)
PCI_CALLEE = dict(ALL_CALLEE, progressive_call_invocations=True)
PUBLISHER_FEATURES = {"publisher_identification": True, "subscriber_blackwhite_listing": True,
                      "publisher_exclusion": True}
SUBSCRIBER_FEATURES = {"publisher_identification": True, "pattern_based_subscription": True}

# realm1 as the default config has it (for router_factory(realms=[dict(LOOSE_REALM, ...)]))
LOOSE_REALM = {"name": "realm1", "uri_check": "loose"}

UNKNOWN_ID = 4503599627370495  # a valid WAMP id nobody has (ids are random)

# default per-step timeout (seconds)
T = 5.0
# how long to watch for a message that must NOT arrive (seconds)
QUIET = 0.3


def run(coro, timeout: float = 30.0):
    """Run `coro` in a fresh event loop, failing with TimeoutError after `timeout` s."""

    async def main():
        txaio.config.loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(coro, timeout)
        finally:
            txaio.config.loop = None

    return asyncio.run(main())


# --------------------------------------------------------------------------
# Autobahn|Python sessions
# --------------------------------------------------------------------------

class JoinFailed(Exception):
    def __init__(self, details):
        super().__init__(f"join failed: {details.reason}: {details.message}")
        self.details = details


class TestSession(ApplicationSession):
    """ApplicationSession that exposes its life cycle as futures."""

    __test__ = False  # not a pytest class

    def __init__(self, config, auth=None, on_challenge=None):
        super().__init__(config)
        loop = asyncio.get_running_loop()
        self.joined = loop.create_future()  # -> SessionDetails
        self.left = loop.create_future()  # -> CloseDetails
        self.disconnected = loop.create_future()  # -> True
        # authentication: join() keyword arguments (authmethods, authid, authextra)
        # and the CHALLENGE handler on_challenge(session, challenge) -> signature
        # (a str, or an awaitable of one); every Challenge received is recorded
        self.auth = auth
        self.on_challenge = on_challenge
        self.challenges = []

    def onConnect(self):
        if self.auth is None:
            return super().onConnect()
        self.join(self.config.realm, **self.auth)

    def onChallenge(self, challenge):
        self.challenges.append(challenge)
        if self.on_challenge is None:
            raise RuntimeError(f"unexpected CHALLENGE {challenge.method} {challenge.extra!r}")
        return self.on_challenge(self, challenge)

    def onJoin(self, details):
        if not self.joined.done():
            self.joined.set_result(details)

    def onLeave(self, details):
        if not self.left.done():
            self.left.set_result(details)
        if not self.joined.done():
            self.joined.set_exception(JoinFailed(details))
        return super().onLeave(details)

    def onDisconnect(self):
        if not self.disconnected.done():
            self.disconnected.set_result(True)
        if not self.joined.done():
            self.joined.set_exception(ConnectionError("transport closed before the session joined"))
        return super().onDisconnect()

    # helpers -------------------------------------------------------------
    def abort_transport(self):
        """Close the underlying socket abruptly (no GOODBYE, no WS close)."""
        proto = self._transport
        if proto is not None and getattr(proto, "transport", None) is not None:
            proto.transport.abort()

    async def close(self, timeout: float = T):
        """Leave (GOODBYE) and wait for the transport to go away; best effort."""
        try:
            if self.is_attached():
                self.leave()
            elif self._transport is not None:
                self.disconnect()
            await asyncio.wait_for(asyncio.shield(self.disconnected), timeout)
        except Exception:
            self.abort_transport()


async def connect(router, transport: str = "ws", serializer: str = "json", realm: str = "realm1",
                  timeout: float = T, join: bool = True, *, authmethods=None, authid=None, authextra=None,
                  on_challenge=None, local_addr=None) -> TestSession:
    """Connect an Autobahn session. transport: 'ws' | 'rs' (TCP) | 'unix'.

    With any of authmethods / authid / authextra, HELLO carries them and a
    CHALLENGE goes to ``on_challenge(session, challenge)`` (Autobahn's
    ``onChallenge``), whose return value (or awaited result) is the signature.
    A refused join raises JoinFailed (``.details.reason`` / ``.details.message``
    are the ABORT's). `local_addr`: the client's (host, port) for TCP transports."""
    loop = asyncio.get_running_loop()
    ser = SERIALIZERS[serializer]()
    auth = None
    if authmethods is not None or authid is not None or authextra is not None:
        auth = {"authmethods": authmethods, "authid": authid, "authextra": authextra}
    session = TestSession(ComponentConfig(realm, {}), auth=auth, on_challenge=on_challenge)
    tcp_kw = {} if local_addr is None else {"local_addr": local_addr}

    def make():
        return session

    if transport == "ws":
        factory = WampWebSocketClientFactory(make, url=router.ws_url, serializers=[ser])
        factory.setProtocolOptions(openHandshakeTimeout=timeout, closeHandshakeTimeout=1.0,
                                   maxMessagePayloadSize=0, maxFramePayloadSize=0)
        factory.loop = loop
        coro = loop.create_connection(factory, router.host, router.ws_port, **tcp_kw)
    elif transport == "rs":
        factory = WampRawSocketClientFactory(make, serializer=ser)
        coro = loop.create_connection(factory, router.host, router.rs_port, **tcp_kw)
    elif transport == "unix":
        factory = WampRawSocketClientFactory(make, serializer=ser)
        coro = loop.create_unix_connection(factory, router.unix_path)
    else:
        raise ValueError(transport)
    await asyncio.wait_for(coro, timeout)
    if join:
        await asyncio.wait_for(asyncio.shield(session.joined), timeout)
    return session


async def close_all(*sessions, timeout: float = T):
    await asyncio.gather(*(s.close(timeout) for s in sessions if s is not None), return_exceptions=True)


# --------------------------------------------------------------------------
# raw clients (JSON)
# --------------------------------------------------------------------------

class Closed(Exception):
    """The peer closed the connection. `.code` is the WebSocket close code (if any)."""

    def __init__(self, what, code=None, reason=None):
        super().__init__(what)
        self.code = code
        self.reason = reason


class _RawBase:
    _next_req = 1

    def req(self) -> int:
        _RawBase._next_req += 1
        return _RawBase._next_req

    async def hello(self, realm="realm1", timeout=T, roles=None):
        """HELLO (all four roles without features, unless `roles` is given) -> WELCOME."""
        await self.send([HELLO, realm, HELLO_ROLES if roles is None else {"roles": roles}])
        msg = await self.recv(timeout)
        assert msg[0] == WELCOME, f"expected WELCOME, got {msg!r}"
        self.session_id = msg[1]
        self.welcome = msg
        return msg

    async def hello_auth(self, realm="realm1", *, authmethods=None, authid=None, authextra=None,
                         respond=None, roles=None, timeout=T):
        """HELLO with authentication details (a key left None is not sent).

        Returns ``(challenge, reply)``: the CHALLENGE message (None if there
        was none) and the WELCOME or ABORT that ended the opening handshake.
        On a CHALLENGE, ``respond(method, extra)`` gives the AUTHENTICATE
        signature; without `respond` the CHALLENGE is returned with reply None."""
        details = dict(HELLO_ROLES if roles is None else {"roles": roles})
        for k, v in (("authmethods", authmethods), ("authid", authid), ("authextra", authextra)):
            if v is not None:
                details[k] = v
        await self.send([HELLO, realm, details])
        msg = await self.recv(timeout)
        challenge = None
        if msg[0] == CHALLENGE:
            challenge = msg
            if respond is None:
                return challenge, None
            await self.send([AUTHENTICATE, respond(msg[1], msg[2]), {}])
            msg = await self.recv(timeout)
        assert msg[0] in (WELCOME, ABORT), f"expected WELCOME or ABORT, got {msg!r}"
        if msg[0] == WELCOME:
            self.session_id = msg[1]
            self.welcome = msg
        return challenge, msg

    async def request(self, msg, timeout=T):
        """Send a request (msg[1] must be its request id); return the reply to it,
        skipping unrelated messages (e.g. EVENTs)."""
        await self.send(msg)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise asyncio.TimeoutError(f"no reply to {msg!r} within {timeout}s")
            r = await self.recv(left)
            if r[0] in (ABORT, GOODBYE):
                return r
            if r[0] == ERROR and r[2] == msg[1]:
                return r
            if r[0] != ERROR and r[0] != EVENT and len(r) > 1 and r[1] == msg[1]:
                return r

    async def expect_abort(self, timeout=T):
        """Next message must be ABORT; returns it."""
        msg = await self.recv(timeout)
        assert msg[0] == ABORT, f"expected ABORT, got {msg!r}"
        assert isinstance(msg[1], dict) and isinstance(msg[2], str), f"malformed ABORT {msg!r}"
        return msg


class RawWs(_RawBase):
    """Raw WAMP-over-WebSocket client with JSON text frames."""

    def __init__(self, ws):
        self.ws = ws

    @classmethod
    async def open(cls, router, subprotocols=("wamp.2.json",), timeout=T, path=None, local_addr=None):
        url = router.ws_url if path is None else f"ws://{router.host}:{router.ws_port}{path}"
        kw = {} if local_addr is None else {"local_addr": local_addr}
        ws = await ws_connect(url, subprotocols=list(subprotocols), open_timeout=timeout,
                              ping_interval=None, close_timeout=1, max_size=None, compression=None, **kw)
        return cls(ws)

    async def send(self, msg):
        await self.ws.send(json.dumps(msg))

    async def send_raw(self, data):
        await self.ws.send(data)

    async def recv(self, timeout=T):
        try:
            data = await asyncio.wait_for(self.ws.recv(), timeout)
        except websockets.ConnectionClosed as e:
            rcvd = e.rcvd
            raise Closed(f"websocket closed: {rcvd}", rcvd.code if rcvd else None,
                         rcvd.reason if rcvd else None) from None
        return json.loads(data)

    async def expect_closed(self, timeout=T):
        """Wait until the router closes the connection. Returns (close_code, msgs received meanwhile)."""
        msgs = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"router did not close the websocket within {timeout}s (got {msgs!r})")
            try:
                msgs.append(await self.recv(left))
            except Closed as e:
                return e.code, msgs
            except asyncio.TimeoutError:
                continue

    async def close(self):
        try:
            await asyncio.wait_for(self.ws.close(), 2)
        except Exception:
            pass
        try:
            self.ws.transport.abort()
        except Exception:
            pass


RS_MAGIC = 0x7F


class RawRs(_RawBase):
    """Raw WAMP-over-RawSocket client (TCP or Unix), JSON serializer by default."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.auto_pong = True
        self.pings = 0
        self.handshake_reply = None

    @classmethod
    async def open(cls, router, unix=False, timeout=T, limit=2 ** 25, local_addr=None):
        if unix:
            r, w = await asyncio.wait_for(asyncio.open_unix_connection(router.unix_path, limit=limit), timeout)
        else:
            kw = {} if local_addr is None else {"local_addr": local_addr}
            r, w = await asyncio.wait_for(asyncio.open_connection(router.host, router.rs_port, limit=limit, **kw),
                                          timeout)
        return cls(r, w)

    @classmethod
    async def connect(cls, router, unix=False, serializer=1, length=15, timeout=T, local_addr=None):
        """open + successful handshake."""
        c = await cls.open(router, unix=unix, timeout=timeout, local_addr=local_addr)
        reply = await c.handshake(serializer, length, timeout)
        assert reply[0] == RS_MAGIC and reply[1] & 0x0F == serializer and reply[2:] == b"\0\0", \
            f"rawsocket handshake failed: {reply.hex()}"
        return c

    async def handshake(self, serializer=1, length=15, timeout=T, reserved=b"\0\0"):
        self.writer.write(bytes([RS_MAGIC, (length << 4) | serializer]) + reserved)
        await self.writer.drain()
        self.handshake_reply = await self.read_exactly(4, timeout)
        return self.handshake_reply

    async def read_exactly(self, n, timeout=T):
        try:
            return await asyncio.wait_for(self.reader.readexactly(n), timeout)
        except asyncio.IncompleteReadError as e:
            raise Closed(f"EOF after {len(e.partial)} of {n} bytes (partial={e.partial[:64]!r})") from None
        except (ConnectionResetError, BrokenPipeError) as e:
            raise Closed(f"connection reset: {e}") from None

    async def send_frame(self, payload: bytes, ftype=0):
        self.writer.write(struct.pack(">I", (ftype << 24) | len(payload)) + payload)
        await self.writer.drain()

    async def send(self, msg):
        await self.send_frame(json.dumps(msg).encode())

    async def send_raw(self, data):
        await self.send_frame(data if isinstance(data, bytes) else data.encode())

    async def recv_frame(self, timeout=T):
        # Only the wait for the header may time out: once a header was read, the
        # payload must follow (a timeout there would desynchronise the stream).
        hdr = await self.read_exactly(4, timeout)
        (word,) = struct.unpack(">I", hdr)
        ftype = (word >> 24) & 0x07
        length = word & 0xFFFFFF
        if word & 0x08000000:
            length = 1 << 24
        try:
            payload = await self.read_exactly(length, max(timeout, T))
        except asyncio.TimeoutError:
            raise AssertionError(f"rawsocket frame header for {length} bytes but payload incomplete") from None
        return ftype, payload

    async def recv(self, timeout=T):
        deadline = time.monotonic() + timeout
        while True:
            ftype, payload = await self.recv_frame(max(0.01, deadline - time.monotonic()))
            if ftype == 0:
                return json.loads(payload)
            if ftype == 1:  # PING
                self.pings += 1
                if self.auto_pong:
                    await self.send_frame(payload, ftype=2)
            # PONG or reserved: ignore

    async def expect_closed(self, timeout=T):
        """Wait for EOF/reset. Returns (None, msgs received meanwhile)."""
        msgs = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"router did not close the rawsocket within {timeout}s (got {msgs!r})")
            try:
                msgs.append(await self.recv(left))
            except Closed:
                return None, msgs
            except asyncio.TimeoutError:
                continue
            except (json.JSONDecodeError, UnicodeDecodeError):
                msgs.append("<undecodable frame>")

    async def read_until_eof(self, timeout=T, max_bytes=1 << 28):
        """Read and discard until EOF/reset. Returns (closed: bool, bytes_read)."""
        n = 0
        deadline = time.monotonic() + timeout
        while n < max_bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, n
            try:
                chunk = await asyncio.wait_for(self.reader.read(1 << 16), left)
            except asyncio.TimeoutError:
                return False, n
            except (ConnectionResetError, BrokenPipeError):
                return True, n
            if not chunk:
                return True, n
            n += len(chunk)
        return False, n

    async def close(self):
        try:
            self.writer.transport.abort()
        except Exception:
            pass


async def open_raw(kind, router, **kw):
    """kind: 'ws' | 'rs' | 'unix' -> connected raw JSON client (transport handshake done)."""
    if kind == "ws":
        return await RawWs.open(router, **kw)
    if kind == "rs":
        return await RawRs.connect(router, **kw)
    if kind == "unix":
        return await RawRs.connect(router, unix=True, **kw)
    raise ValueError(kind)


# --------------------------------------------------------------------------
# advanced-profile test helpers: waiting, meta API calls, ids
# --------------------------------------------------------------------------

async def wait_until(pred, timeout=T, what="condition"):
    """Poll `pred()` every 10 ms until it is true; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def unique_uri(prefix: str, tag: str = "") -> str:
    """``prefix.tag`` and 12 random hex digits: a URI no other test uses."""
    return f"{prefix}.{tag}{uuid.uuid4().hex[:12]}"


def sid(session) -> int:
    """Session id of a joined Autobahn session (see connect())."""
    return session.joined.result().session


def authid(session) -> str:
    """authid of a joined Autobahn session."""
    return session.joined.result().authid


async def call(session, procedure, *args, first_result=False, **kwargs):
    """Autobahn call with the default timeout. With first_result=True a
    CallResult (args + kwargs) is reduced to its first positional result;
    `first_result` is not passed on to the procedure."""
    r = await asyncio.wait_for(session.call(procedure, *args, **kwargs), T)
    if first_result and isinstance(r, CallResult):
        r = r.results[0] if r.results else None
    return r


async def meta_error(session, procedure, *args, **kwargs) -> ApplicationError:
    """A call (usually of a meta procedure) that must fail: returns its
    ApplicationError (``.error`` is the error URI)."""
    try:
        r = await asyncio.wait_for(session.call(procedure, *args, **kwargs), T)
    except ApplicationError as e:
        return e
    raise AssertionError(f"{procedure} must fail with an ApplicationError, returned {r!r}")


def check_created(d):
    """``d["created"]`` (wamp.registration.get / wamp.subscription.get) is ISO 8601
    with a time zone and about now."""
    created = datetime.datetime.fromisoformat(d["created"].replace("Z", "+00:00"))
    assert created.tzinfo is not None, f"created must be ISO 8601 with a time zone: {d['created']!r}"
    age = (datetime.datetime.now(datetime.timezone.utc) - created).total_seconds()
    assert -5 < age < 120, f"created {d['created']!r} is not about now"


def meta_events_of(events, obj_id):
    """The (kind, args) registration/subscription meta events about `obj_id`:
    on_create's args are (session, details dict), the others' (session, id)."""
    return [(k, args) for k, args in events if (args[1]["id"] if k == "on_create" else args[1]) == obj_id]


# --------------------------------------------------------------------------
# Autobahn subscriptions that record their events
# --------------------------------------------------------------------------

async def _wait_changed(changed: asyncio.Event, deadline: float) -> bool:
    """Clear `changed` and wait until it is set again or `deadline` (monotonic)
    passes. False if the deadline had already passed (nothing waited)."""
    left = deadline - time.monotonic()
    if left <= 0:
        return False
    changed.clear()
    try:
        await asyncio.wait_for(changed.wait(), left)
    except asyncio.TimeoutError:
        pass
    return True


class ReceivedEvent(NamedTuple):
    args: list
    kwargs: dict
    details: object  # autobahn EventDetails


class Inbox:
    """Handler for an Autobahn subscription made with details=True; records
    every event (a ReceivedEvent: args, kwargs, details) in arrival order."""

    def __init__(self):
        self.events: list[ReceivedEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, *args, details=None, **kwargs):
        self.events.append(ReceivedEvent(list(args), kwargs, details))
        self._changed.set()

    @property
    def args(self):
        return [e.args for e in self.events]

    async def _wait(self, found, what, timeout):
        """Wait until `found()` returns something other than None; return it."""
        deadline = time.monotonic() + timeout
        while True:
            r = found()
            if r is not None:
                return r
            if not await _wait_changed(self._changed, deadline):
                raise AssertionError(f"no {what} within {timeout}s; got {self.args!r}")

    async def wait_for(self, pred, what="event", timeout=T):
        """The first recorded event matching `pred` (waits for it)."""
        return await self._wait(lambda: next((e for e in self.events if pred(e)), None), what, timeout)

    async def until(self, pred, what, timeout=T):
        """Wait until `pred(self.args)` (the args of all events so far) is true."""
        await self._wait(lambda: True if pred(self.args) else None, what, timeout)

    async def marker(self, tag, timeout=T):
        return await self.wait_for(lambda e: e.args == ["marker", tag], f"marker {tag!r}", timeout)

    def before_marker(self, tag):
        """args of the events recorded before marker `tag`."""
        out = []
        for e in self.events:
            if e.args == ["marker", tag]:
                return out
            out.append(e.args)
        raise AssertionError(f"marker {tag!r} not received: {self.args!r}")


async def subscribe(session, uri, **options):
    """Autobahn subscribe with details=True; returns (Inbox, Subscription)."""
    inbox = Inbox()
    s = await asyncio.wait_for(session.subscribe(inbox, uri, options=SubscribeOptions(details=True, **options)), T)
    return inbox, s


async def ack(session, uri, *args, options=None, **kwargs):
    """Acknowledged Autobahn publish; returns the publication id."""
    opts = options or {}
    p = await asyncio.wait_for(session.publish(uri, *args, options=PublishOptions(acknowledge=True, **opts),
                                               **kwargs), T)
    return p.id


async def marker(pub, uri, tag, **opts):
    """Acknowledged publication of ("marker", tag). "Not delivered" is checked
    with it: a later publication of the same publisher that must arrive; what
    did not arrive before it was not delivered."""
    return await ack(pub, uri, "marker", tag, options=opts)


async def retained_everywhere(pub, nodes):
    """Wait until every node of `nodes` (cluster nodes; the same router repeated
    for one node) returns the retained events `pub` published so far. Cluster
    nodes share retained events through a NATS KV bucket, a moment after the
    publication (docs/CLUSTER.md): `pub` retains a marker on a fresh topic, and
    each node is asked for it until it has it (one node's retained events reach
    every other node in the order they were published)."""
    distinct = list({id(n): n for n in nodes}.values())
    if len(distinct) < 2:
        return
    t = unique_uri("com.example.sync", "retained")
    await ack(pub, t, "sync", options={"retain": True})
    for node in distinct:
        s = await connect(node)
        try:
            deadline = time.monotonic() + T
            while True:
                inbox, sub = await subscribe(s, t, get_retained=True)
                try:
                    await inbox.wait_for(lambda e: e.args == ["sync"], timeout=0.2)
                    break
                except AssertionError:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"retained marker {t} not on {node.name} within {T}s") from None
                await asyncio.wait_for(sub.unsubscribe(), T)
        finally:
            await close_all(s)


# --------------------------------------------------------------------------
# raw session with a background reader
# --------------------------------------------------------------------------

class Peer:
    """A raw WAMP-over-WebSocket JSON session (RawWs). HELLO announces all four
    roles, each with the given features. A background task reads every
    message into `unread` (consumed by `next`) and `log` (everything)."""

    def __init__(self, raw, welcome):
        self.raw = raw
        self.welcome = welcome
        self.session_id = welcome[1]
        self.details = welcome[2]
        self.authid = self.details.get("authid")
        self.unread = []
        self.log = []
        self.closed = None
        self._changed = asyncio.Event()
        self._rid = 0
        self._task = asyncio.ensure_future(self._pump())

    @classmethod
    async def join(cls, router, *, publisher=None, subscriber=None, caller=None, callee=None, realm="realm1"):
        """Open and join; each role gets {"features": <its dict>} if one is given."""
        raw = await RawWs.open(router)
        roles = {role: {} if features is None else {"features": dict(features)}
                 for role, features in [("publisher", publisher), ("subscriber", subscriber),
                                        ("caller", caller), ("callee", callee)]}
        w = await raw.hello(realm, T, roles=roles)
        return cls(raw, w)

    async def _pump(self):
        try:
            while True:
                m = await self.raw.recv(3600)
                self.unread.append(m)
                self.log.append(m)
                self._changed.set()
        except Closed as e:
            self.closed = e
        except Exception as e:  # noqa: BLE001 - reported by next()
            self.closed = e
        self._changed.set()

    def req(self):
        self._rid += 1
        return self._rid

    async def send(self, msg):
        await self.raw.send(msg)

    async def next(self, pred=lambda m: True, timeout=T, what="message"):
        """Consume and return the first unread message matching `pred`."""
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.unread):
                if pred(m):
                    return self.unread.pop(i)
            if self.closed is not None:
                raise AssertionError(f"session {self.session_id} closed ({self.closed!r}) while waiting for "
                                     f"{what}; unread: {self.unread!r}")
            if not await _wait_changed(self._changed, deadline):
                raise AssertionError(f"no {what} within {timeout}s; unread: {self.unread!r}")

    async def quiet(self, pred, what, duration=QUIET):
        """Assert that no unread message matching `pred` arrives within `duration`."""
        await asyncio.sleep(duration)
        got = [m for m in self.unread if pred(m)]
        assert not got, f"unexpected {what}: {got!r}"

    async def request(self, msg, what=None):
        """Send request `msg` (msg[1] is its request id); consume and return the
        reply to it (or an ABORT). EVENT, INVOCATION and INTERRUPT are never
        replies (their [1] is the router's id, not ours)."""
        rid = msg[1]
        await self.send(msg)
        return await self.next(lambda m: m[0] == ABORT or (m[0] == ERROR and m[2] == rid)
                               or (m[0] not in (ERROR, EVENT, INVOCATION, INTERRUPT) and len(m) > 1
                                   and m[1] == rid),
                               what=what or f"reply to {msg!r}")

    async def register(self, uri, options=None):
        r = await self.request([REGISTER, self.req(), options or {}, uri])
        assert r[0] == REGISTERED, f"REGISTER {uri} {options}: {r!r}"
        return r[2]

    async def call(self, uri, args=None, options=None, rid=None):
        """Send a CALL; returns its request id (the reply is read with next())."""
        rid = self.req() if rid is None else rid
        msg = [CALL, rid, options or {}, uri]
        if args is not None:
            msg.append(args)
        await self.send(msg)
        return rid

    async def subscribe(self, uri, options=None):
        r = await self.request([SUBSCRIBE, self.req(), options or {}, uri])
        assert r[0] == SUBSCRIBED, f"SUBSCRIBE {uri} {options}: {r!r}"
        return r[2]

    async def unsubscribe(self, sub_id):
        r = await self.request([UNSUBSCRIBE, self.req(), sub_id])
        assert r[0] == UNSUBSCRIBED, f"UNSUBSCRIBE {sub_id}: {r!r}"

    async def publish(self, uri, args=None, kwargs=None, options=None, acknowledge=True):
        """PUBLISH; with acknowledge returns the reply (PUBLISHED or ERROR)."""
        opts = dict(options or {})
        if acknowledge:
            opts["acknowledge"] = True
        rid = self.req()
        msg = [PUBLISH, rid, opts, uri]
        if args is not None or kwargs is not None:
            msg.append(args or [])
        if kwargs is not None:
            msg.append(kwargs)
        if not acknowledge:
            await self.send(msg)
            return None
        return await self.request(msg)

    async def close(self):
        self._task.cancel()
        try:
            await self._task
        except BaseException:  # noqa: BLE001
            pass
        await self.raw.close()


async def close_peers(*peers):
    for p in peers:
        if p is not None:
            await p.close()


SUB_META_EVENTS = ["on_create", "on_subscribe", "on_unsubscribe", "on_delete"]
REG_META_EVENTS = ["on_create", "on_register", "on_unregister", "on_delete"]


class MetaMonitor:
    """A raw Peer subscribed to the meta topics ``<prefix>.<kind>`` (by default
    the four wamp.subscription.on_*).

    Raw, not Autobahn: the router sends a session the meta EVENTs its own
    SUBSCRIBE to a meta topic causes *before* the SUBSCRIBED, which makes
    Autobahn drop the connection. A raw client records EVENTs by subscription
    id and learns the id -> topic mapping from SUBSCRIBED, whatever the order."""

    def __init__(self, peer):
        self.peer = peer
        self.kinds = {}  # subscription id -> "on_create" | ...

    @classmethod
    async def start(cls, router, prefix="wamp.subscription", kinds=SUB_META_EVENTS):
        m = cls(await Peer.join(router))
        for k in kinds:
            rid = m.peer.req()
            await m.peer.send([SUBSCRIBE, rid, {}, f"{prefix}.{k}"])
            r = await m.peer.next(lambda msg: msg[0] != EVENT, what=f"SUBSCRIBED to {prefix}.{k}")
            assert r[0] == SUBSCRIBED and r[1] == rid, f"meta monitor: unexpected {r!r}"
            m.kinds[r[2]] = k
        return m

    @property
    def events(self):
        """(kind, args) of every meta EVENT so far, in arrival order."""
        return [(self.kinds[m[1]], tuple(m[4])) for m in self.peer.log if m[0] == EVENT and m[1] in self.kinds]

    def of(self, obj_id):
        return meta_events_of(self.events, obj_id)

    async def close(self):
        await self.peer.close()


# --------------------------------------------------------------------------
# plain HTTP (for WebSocket upgrade tests)
# --------------------------------------------------------------------------

WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def upgrade_request(host, port, path="/ws", protocols=None, upgrade=True) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}"]
    if upgrade:
        lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {WS_KEY}",
                  "Sec-WebSocket-Version: 13"]
    else:
        lines += ["Connection: close"]
    if protocols:
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def http_exchange(host, port, request: bytes, timeout=T):
    """Send a raw HTTP request; return (status, headers(dict, lower-case), body bytes).
    Reads the body by Content-Length, chunked encoding, or until EOF."""
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status_line = lines[0].split(" ", 2)
        assert len(status_line) >= 2 and status_line[0].startswith("HTTP/"), f"not an HTTP response: {buf[:200]!r}"
        status = int(status_line[1])
        headers = {}
        for l in lines[1:]:
            if ":" in l:
                k, v = l.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if status == 101:
            return status, headers, body

        def more():
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                return s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                return b""

        if "content-length" in headers:
            n = int(headers["content-length"])
            while len(body) < n:
                c = more()
                if not c:
                    break
                body += c
            body = body[:n]
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            while not body.endswith(b"0\r\n\r\n"):
                c = more()
                if not c:
                    break
                body += c
            out, rest = b"", body
            while rest:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0] or b"0", 16)
                if size == 0:
                    break
                out += rest[:size]
                rest = rest[size + 2:]
            body = out
        else:
            while True:
                c = more()
                if not c:
                    break
                body += c
        return status, headers, body


# --------------------------------------------------------------------------
# blocking raw clients: the test controls exactly when (and whether) they read
# --------------------------------------------------------------------------

class _BlockingBase:
    sock: socket.socket

    def hello(self, realm="realm1"):
        self.send([HELLO, realm, HELLO_ROLES])
        msg = self.recv()
        assert msg[0] == WELCOME, f"expected WELCOME, got {msg!r}"
        self.session_id = msg[1]
        return msg

    def request(self, msg):
        self.send(msg)
        while True:
            r = self.recv()
            if r[0] in (ABORT, GOODBYE) or (r[0] == ERROR and r[2] == msg[1]) or \
                    (r[0] not in (ERROR, EVENT) and r[1] == msg[1]):
                return r

    def read_until_eof(self, timeout=T, max_bytes=1 << 28):
        """Read and discard until EOF/reset. Returns (closed: bool, bytes_read)."""
        n = len(self.buf)
        self.buf = b""
        deadline = time.monotonic() + timeout
        while n < max_bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, n
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                return False, n
            except (ConnectionResetError, BrokenPipeError):
                return True, n
            if not chunk:
                return True, n
            n += len(chunk)
        return False, n

    def _read(self, n):
        while len(self.buf) < n:
            self.sock.settimeout(self.timeout)
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise Closed("EOF")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def _blocking_socket(family, addr, timeout, rcvbuf):
    s = socket.socket(family, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(addr)
    return s


class BlockingWs(_BlockingBase):
    """Minimal blocking WebSocket client (masked JSON text frames). It never
    answers pings: pings are only consumed when recv() is called."""

    def __init__(self, router, protocol="wamp.2.json", timeout=T, rcvbuf=None):
        import os as _os
        self.timeout = timeout
        self.os = _os
        self.sock = _blocking_socket(socket.AF_INET, (router.host, router.ws_port), timeout, rcvbuf)
        self.sock.sendall(upgrade_request(router.host, router.ws_port, router.ws_path, [protocol]))
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise Closed("EOF during upgrade")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), f"upgrade failed: {head[:200]!r}"
        self.pings = 0

    def send(self, msg):
        payload = json.dumps(msg).encode()
        mask = self.os.urandom(4)
        n = len(payload)
        if n < 126:
            hdr = bytes([0x81, 0x80 | n])
        elif n < 65536:
            hdr = bytes([0x81, 0x80 | 126]) + struct.pack(">H", n)
        else:
            hdr = bytes([0x81, 0x80 | 127]) + struct.pack(">Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(hdr + mask + masked)

    def recv(self):
        while True:
            b0, b1 = self._read(2)
            op = b0 & 0x0F
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack(">H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack(">Q", self._read(8))
            payload = self._read(n)
            if op == 0x8:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                raise Closed(f"websocket close frame {code}", code)
            if op == 0x9:
                self.pings += 1
                continue  # deliberately no pong
            if op in (0x1, 0x2):
                return json.loads(payload)


class BlockingRs(_BlockingBase):
    """Minimal blocking RawSocket JSON client. Never answers PINGs."""

    def __init__(self, router, unix=False, timeout=T, rcvbuf=None, length=15):
        self.timeout = timeout
        if unix:
            self.sock = _blocking_socket(socket.AF_UNIX, router.unix_path, timeout, rcvbuf)
        else:
            self.sock = _blocking_socket(socket.AF_INET, (router.host, router.rs_port), timeout, rcvbuf)
        self.buf = b""
        self.sock.sendall(bytes([RS_MAGIC, (length << 4) | 1, 0, 0]))
        reply = self._read(4)
        assert reply[0] == RS_MAGIC and reply[1] & 0x0F == 1, f"rawsocket handshake failed: {reply.hex()}"
        self.pings = 0

    def send(self, msg):
        payload = json.dumps(msg).encode()
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)

    def recv(self):
        while True:
            (word,) = struct.unpack(">I", self._read(4))
            ftype = (word >> 24) & 0x07
            length = (1 << 24) if word & 0x08000000 else word & 0xFFFFFF
            payload = self._read(length)
            if ftype == 0:
                return json.loads(payload)
            if ftype == 1:
                self.pings += 1


async def registered(session, procedure: str, match: str = "exact", timeout: float = T):
    """Waits until `session`'s router knows a registration of `procedure` (at once
    on one node; in a cluster, once the callee's node announced it)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        reg = await asyncio.wait_for(
            session.call("wamp.registration.lookup", procedure, {"match": match}), timeout)
        if reg is not None:
            return reg
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{procedure!r} ({match}) not registered on the caller's node within {timeout}s")
        await asyncio.sleep(0.02)


async def callees_known(session, procedure: str, n: int, match: str = "exact", timeout: float = T):
    """Waits until `session`'s router counts `n` callees of the registration of
    `procedure` (in a cluster, callees of other nodes once their nodes announced them
    or their leave)."""
    deadline = asyncio.get_running_loop().time() + timeout
    got = None
    while True:
        reg = await asyncio.wait_for(
            session.call("wamp.registration.lookup", procedure, {"match": match}), timeout)
        got = 0
        if reg is not None:
            got = await asyncio.wait_for(session.call("wamp.registration.count_callees", reg), timeout)
        if got == n:
            return reg
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{procedure!r}: {got} callees on the caller's node, expected {n}")
        await asyncio.sleep(0.02)


async def registered_on(router, procedure: str, match: str = "exact", timeout: float = T):
    """`registered`, asked through a session of its own on `router` (for callers
    that are raw peers)."""
    s = await connect(router)
    try:
        return await registered(s, procedure, match, timeout)
    finally:
        await s.close()
