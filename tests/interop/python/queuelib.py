"""Helpers of the durable-queue interop tests (test_queues.py, test_queue_policies.py).

* ``Worker``      an Autobahn callee of a queue's target procedure that records every
                  invocation (arrival time, args, kwargs, details, how it ended) and answers
                  as its ``behave(call)`` says: return a value, raise ApplicationError, await.
* ``push``        ``switchyard.queue.push`` -> (id, duplicate).
* ``stats`` / ``job`` / ``peek`` / ``dead``  the other procedures, answers as plain values.
* ``wait_stats``  poll ``switchyard.queue.stats`` until a predicate holds.
* ``queue_error`` a queue procedure call that must fail: its ApplicationError.
* ``gaps``        the spacing between a worker's attempts (failure raised -> next invocation).
"""

from __future__ import annotations

import asyncio
import inspect
import time
import urllib.request

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallResult, RegisterOptions

from wamplib import T

# stats fields that change only when a job is stored, settled or removed
DEPTH = ("ready", "scheduled", "in_flight", "dead", "idempotency_keys", "completed_total", "retried_total",
         "dead_lettered_total")


class Call:
    """One invocation a Worker received."""

    def __init__(self, n, args, kwargs, details):
        self.n = n  # 1 for the worker's first invocation
        self.at = time.monotonic()  # when it arrived
        self.wall = time.time()  # the same, as unix time (to compare with run_at)
        self.args = args
        self.kwargs = kwargs
        self.details = details
        self.failed_at = None  # when the handler raised ApplicationError
        self.cancelled = False  # the router interrupted it (CancelledError)
        self.ended = None

    def __repr__(self):
        return f"Call(n={self.n}, args={self.args!r}, kwargs={self.kwargs!r}, cancelled={self.cancelled})"


class Worker:
    """An Autobahn callee that records its invocations.

    ``behave(call)`` returns the answer (a value, a CallResult, or an awaitable of one)
    or raises ApplicationError to fail the attempt; None answers None."""

    def __init__(self, behave=None):
        self.behave = behave
        self.calls: list[Call] = []
        self.registration = None
        self._changed = asyncio.Event()

    async def _handle(self, *args, details=None, **kwargs):
        c = Call(len(self.calls) + 1, list(args), kwargs, details)
        self.calls.append(c)
        self._changed.set()
        try:
            r = self.behave(c) if self.behave else None
            if inspect.isawaitable(r):
                r = await r
            return r
        except ApplicationError:
            c.failed_at = time.monotonic()
            raise
        except asyncio.CancelledError:
            c.cancelled = True
            raise
        finally:
            c.ended = time.monotonic()
            self._changed.set()

    async def register(self, session, procedure, **options):
        self.registration = await asyncio.wait_for(
            session.register(self._handle, procedure, options=RegisterOptions(details=True, **options)), T)
        return self

    async def wait_calls(self, n, timeout=T):
        """Wait until at least `n` invocations arrived; returns the calls."""
        deadline = time.monotonic() + timeout
        while len(self.calls) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"worker got {len(self.calls)} invocations within {timeout}s, "
                                     f"expected {n}: {self.calls!r}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass
        return self.calls

    async def wait_ended(self, n, timeout=T):
        """Wait until invocation `n` (1-based) has ended (answered, failed or cancelled)."""
        await self.wait_calls(n, timeout)
        deadline = time.monotonic() + timeout
        while self.calls[n - 1].ended is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"invocation {n} did not end within {timeout}s: {self.calls!r}")
            await asyncio.sleep(0.01)
        return self.calls[n - 1]


def gaps(calls):
    """Seconds from each failed attempt (the worker raised) to the next invocation."""
    return [round(b.at - a.failed_at, 3) for a, b in zip(calls, calls[1:])]


def _kw(r):
    """The kwargs of an answer that only has kwargs."""
    if isinstance(r, CallResult):
        return dict(r.kwresults)
    raise AssertionError(f"expected an answer with keyword results, got {r!r}")


async def push(session, queue, *, args=None, kwargs=None, **options):
    """switchyard.queue.push; returns (id, duplicate) and checks both answer forms agree."""
    kw = dict(options)
    if args is not None:
        kw["args"] = args
    if kwargs is not None:
        kw["kwargs"] = kwargs
    r = await asyncio.wait_for(session.call("switchyard.queue.push", queue, **kw), T)
    assert isinstance(r, CallResult), f"push must answer [id], {{id, duplicate}}: {r!r}"
    assert list(r.results) == [r.kwresults["id"]], f"push: args and kwargs must name the same id: {r!r}"
    assert isinstance(r.kwresults["duplicate"], bool), r
    return r.kwresults["id"], r.kwresults["duplicate"]


async def stats(session, queue) -> dict:
    return _kw(await asyncio.wait_for(session.call("switchyard.queue.stats", queue), T))


async def job(session, job_id) -> dict:
    return _kw(await asyncio.wait_for(session.call("switchyard.queue.job", job_id), T))


async def peek(session, queue, **kw) -> list:
    return await asyncio.wait_for(session.call("switchyard.queue.peek", queue, **kw), T)


async def dead(session, queue, **kw) -> list:
    return await asyncio.wait_for(session.call("switchyard.queue.dead", queue, **kw), T)


async def wait_stats(session, queue, pred, what="stats", timeout=T) -> dict:
    """Poll the queue's stats every 20 ms until `pred(stats)`; returns them."""
    deadline = time.monotonic() + timeout
    while True:
        st = await stats(session, queue)
        if pred(st):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"queue {queue!r}: no {what} within {timeout}s; stats {st!r}")
        await asyncio.sleep(0.02)


async def wait_job(session, job_id, pred, what="job state", timeout=T) -> dict:
    """Poll switchyard.queue.job until `pred(job)`; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        j = await job(session, job_id)
        if pred(j):
            return j
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id}: no {what} within {timeout}s; job {j!r}")
        await asyncio.sleep(0.02)


async def queue_error(session, procedure, *args, **kwargs) -> ApplicationError:
    """A call that must fail: its ApplicationError (``.error`` the URI, ``message`` the text)."""
    try:
        r = await asyncio.wait_for(session.call(procedure, *args, **kwargs), T)
    except ApplicationError as e:
        return e
    raise AssertionError(f"{procedure} {args!r} {kwargs!r} must fail, answered {r!r}")


def message(e: ApplicationError) -> str:
    return e.args[0] if e.args and isinstance(e.args[0], str) else ""


def depth(st: dict) -> dict:
    """The stats fields that change when something is stored or settled."""
    return {k: st[k] for k in DEPTH}


def scrape(router, path="/metrics") -> str:
    """GET the router's metrics (a WebSocket listener with metrics_path)."""
    with urllib.request.urlopen(f"http://{router.host}:{router.ws_port}{path}", timeout=T) as r:
        assert r.status == 200, r.status
        return r.read().decode()


def metric(text: str, name: str, **labels) -> float | None:
    """The value of the sample `name{labels}` in a Prometheus text page (None if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{want}}} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return None
