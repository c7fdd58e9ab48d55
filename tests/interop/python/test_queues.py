"""Durable job queues (docs/QUEUES.md) with Autobahn|Python producers and workers.

The ``switchyard.queue.*`` API (push, stats, list, peek, job, dead, requeue, purge,
declare, extend), workers (YIELD completes, ERROR fails, no answer expires the lease,
progressive results and ``extend`` keep a job alive, a job without a worker waits),
result topics, non-retryable errors, dead letters, idempotency, delays and run_at,
priorities, topic bindings, bad input (a clear ERROR, nothing stored), authorization
and the /metrics figures.

Retry policies (spacing measured by the worker) are in test_queue_policies.py. The
SIGKILL crash test, fencing of a late answer and HTTP targets are Rust tests
(crates/server/tests/queues.rs).

Most tests share one router per module (``qrouter``) whose realm declares a queue per
test; queues declared at run time get random names.
"""

import asyncio
import datetime
import time
import uuid

import pytest
from autobahn.wamp import auth as ab_auth
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallResult

from queuelib import (Worker, dead, depth, job, message, metric, peek, push, queue_error, scrape, stats, wait_job,
                      wait_stats)
from conftest import queue_router
from wamplib import QUIET, T, ack, close_all, connect, marker, run, subscribe, unique_uri

INVALID = "switchyard.queue.error.invalid_argument"
UNKNOWN_QUEUE = "switchyard.queue.error.unknown_queue"
UNKNOWN_JOB = "switchyard.queue.error.unknown_job"
TOO_LARGE = "switchyard.queue.error.payload_too_large"
CONFLICT = "switchyard.queue.error.config_conflict"
STALE = "switchyard.queue.error.stale_lease"
LEASE_EXPIRED = "switchyard.queue.lease_expired"
NOT_AUTHORIZED = "wamp.error.not_authorized"

# how often the router looks for expired leases (maintenance interval)
MAINTENANCE_S = 1.0


def fixed(times, spacing):
    return {"kind": "fixed", "times": times, "spacing": spacing}


QUEUES = [
    {"name": "basic", "target": "test.q.basic", "retry": fixed(3, "100ms")},
    {"name": "nonretry", "target": "test.q.nonretry", "retry": fixed(5, "100ms"),
     "non_retryable_errors": ["com.example.invalid", "com.example.fatal.*"]},
    {"name": "deadq", "target": "test.q.dead", "retry": {"kind": "none"}, "concurrency": 1},
    {"name": "idem", "target": "test.q.idem"},
    {"name": "idem2", "target": "test.q.idem"},
    {"name": "later", "target": "test.q.later"},
    {"name": "prio", "target": "test.q.prio", "concurrency": 1},
    {"name": "prio2", "target": "test.q.prio2", "concurrency": 1},
    {"name": "prio3", "target": "test.q.prio3", "concurrency": 1},
    {"name": "types_json", "target": "test.q.types.json"},
    {"name": "types_msgpack", "target": "test.q.types.msgpack"},
    {"name": "crashy", "target": "test.q.crashy", "retry": fixed(3, "100ms")},
    {"name": "jobinfo", "target": "test.q.jobinfo", "retry": fixed(3, "50ms"), "job_kwarg": "_job"},
    {"name": "lease", "target": "test.q.lease", "lease_timeout": "300ms", "retry": {"kind": "once", "delay": "100ms"}},
    {"name": "progress", "target": "test.q.progress", "lease_timeout": "400ms", "retry": "none"},
    {"name": "extend", "target": "test.q.extend", "lease_timeout": "400ms", "retry": "none"},
    {"name": "noworker", "target": "test.q.noworker", "retry": "none", "max_attempts": 1},
    {"name": "bind_pdf", "target": "test.q.bind.pdf"},
    {"name": "bind_mail", "target": "test.q.bind.mail"},
    {"name": "bind_small", "target": "test.q.bind.small", "max_payload_bytes": 64},
    {"name": "bind_roomy", "target": "test.q.bind.roomy"},
    {"name": "strict", "target": "test.q.strict", "max_payload_bytes": 256},
    {"name": "metrics_q", "target": "test.q.metrics", "concurrency": 1},
]

BINDINGS = [
    {"topic": "com.shop.order.placed", "queues": ["bind_pdf", "bind_mail"]},
    {"topic": "com.shop.invoice.", "match": "prefix", "queues": ["bind_pdf"]},
    {"topic": "com.shop..cancelled", "match": "wildcard", "queues": ["bind_mail"]},
    {"topic": "com.shop.big", "queues": ["bind_roomy", "bind_small"]},
]

QREALM = {"name": "realm1", "uri_check": "loose", "queue": QUEUES, "queue_binding": BINDINGS}


@pytest.fixture(scope="module", params=["one-node", "jetstream-cluster"])
def qrouter(request, module_router_factory):
    # one node: the data directory is the default "switchyard-data", relative to the
    # router's own temporary working directory (routerproc starts it there)
    yield from queue_router(request, module_router_factory, realms=[QREALM],
                            ws_opts={"metrics_path": "/metrics"})


def results_topic():
    return unique_uri("test.q.results")


async def sessions(router, n=2):
    """`n` sessions: the first over RawSocket/MsgPack (workers), the others WebSocket/JSON."""
    out = [await connect(router, "rs", "msgpack")]
    for _ in range(n - 1):
        out.append(await connect(router))
    return out


def fail_with(uri, text):
    raise ApplicationError(uri, text)


# ==========================================================================
# push -> worker -> YIELD
# ==========================================================================

def test_push_runs_on_worker_and_yield_completes(qrouter):
    """The worker gets the job's args and kwargs as pushed (JSON producer, MsgPack
    worker); its YIELD completes the job: the result topic gets {job, queue, status:
    completed, attempt: 1, args, kwargs} of the answer, completed_total counts it and
    the completed job is gone (unknown_job)."""
    async def main():
        ws, p = await sessions(qrouter)
        try:
            topic = results_topic()
            inbox, _ = await subscribe(p, topic)
            worker = await Worker(lambda c: CallResult("rendered", c.args[0], pages=3, meta={"k": [1, 2]})
                                  ).register(ws, "test.q.basic")
            before = await stats(p, "basic")
            args = [7, "two", {"x": [3, None, True]}, 1.5]
            kwargs = {"to": "a@b.c", "n": {"deep": ["é", -1]}}
            jid, dup = await push(p, "basic", args=args, kwargs=kwargs, result_topic=topic)
            assert isinstance(jid, int) and jid > 0 and dup is False
            ev = await inbox.wait_for(lambda e: e.kwargs.get("job") == jid, "result event")
            assert ev.args == [], ev
            assert ev.kwargs == {"job": jid, "queue": "basic", "status": "completed", "attempt": 1,
                                 "args": ["rendered", 7], "kwargs": {"pages": 3, "meta": {"k": [1, 2]}}}, ev.kwargs
            assert len(worker.calls) == 1, worker.calls
            assert worker.calls[0].args == args and worker.calls[0].kwargs == kwargs, worker.calls[0]
            st = await wait_stats(p, "basic", lambda s: s["completed_total"] == before["completed_total"] + 1)
            assert (st["ready"], st["scheduled"], st["in_flight"], st["dead"]) == (0, 0, 0, 0), st
            assert st["retried_total"] == before["retried_total"], st
            # the completed job is remembered with its result ([realm.queue_limits.results])
            done = (await p.call("switchyard.queue.job", jid)).kwresults
            assert done["status"]["state"] == "completed" and done["status"]["attempts"] == 1, done
            assert done["job"]["queue"] == "basic" and done["result_truncated"] is False, done
            assert done["result"] == {"args": ["rendered", 7], "kwargs": {"pages": 3, "meta": {"k": [1, 2]}}}, done
            e = await queue_error(p, "switchyard.queue.job", 987654321)
            assert e.error == UNKNOWN_JOB and "987654321" in message(e), e
            # a second job gets a larger id
            jid2, _ = await push(p, "basic", args=[8])
            assert jid2 > jid
            await worker.wait_calls(2)
        finally:
            await close_all(ws, p)

    run(main())


# ==========================================================================
# failures: non-retryable errors, dead letters
# ==========================================================================

def test_non_retryable_errors_dead_letter_at_once(qrouter):
    """An error URI listed in non_retryable_errors (exactly, or under a "prefix.*"
    entry) dead-letters the job after one attempt (reason non_retryable), although the
    queue's policy would retry 5 times; the result topic gets status dead with the
    error, message and reason. An unlisted URI (which only starts like the prefix
    entry) is retried."""
    async def main():
        ws, p = await sessions(qrouter)
        try:
            topic = results_topic()
            inbox, _ = await subscribe(p, topic)

            def behave(c):
                uri = c.args[0]
                seen = sum(1 for x in worker.calls if x.args[0] == uri)
                if uri == "com.example.fatalistic" and seen > 1:
                    return "recovered"
                fail_with(uri, f"failed: {uri}")

            worker = await Worker(behave).register(ws, "test.q.nonretry")
            before = await stats(p, "nonretry")
            ids = {}
            for uri in ("com.example.invalid", "com.example.fatal.disk", "com.example.fatalistic"):
                ids[uri], _ = await push(p, "nonretry", args=[uri], result_topic=topic)
            for uri in ("com.example.invalid", "com.example.fatal.disk"):
                ev = await inbox.wait_for(lambda e, j=ids[uri]: e.kwargs.get("job") == j, f"dead event of {uri}")
                assert ev.kwargs == {"job": ids[uri], "queue": "nonretry", "status": "dead", "attempt": 1,
                                     "error": uri, "message": f"failed: {uri}", "reason": "non_retryable"}, ev.kwargs
            ev = await inbox.wait_for(lambda e: e.kwargs.get("job") == ids["com.example.fatalistic"], "third result")
            assert ev.kwargs["status"] == "completed" and ev.kwargs["attempt"] == 2, ev.kwargs
            await asyncio.sleep(QUIET)  # the policy's spacing is 100 ms: a retry would be there by now
            per_uri = {u: sum(1 for c in worker.calls if c.args[0] == u) for u in ids}
            assert per_uri == {"com.example.invalid": 1, "com.example.fatal.disk": 1, "com.example.fatalistic": 2}, \
                per_uri
            for uri in ("com.example.invalid", "com.example.fatal.disk"):
                j = await job(p, ids[uri])
                s = j["status"]
                assert (s["state"], s["reason"], s["attempts"]) == ("dead", "non_retryable", 1), j
                assert (s["last_error"]["uri"], s["last_error"]["message"]) == (uri, f"failed: {uri}"), j
            st = await stats(p, "nonretry")
            assert st["dead"] - before["dead"] == 2, st
            assert st["dead_lettered_total"] - before["dead_lettered_total"] == 2, st
            assert st["retried_total"] - before["retried_total"] == 1, st
            assert st["completed_total"] - before["completed_total"] == 1, st
        finally:
            await close_all(ws, p)

    run(main())


def test_dead_letters_list_requeue_and_purge(qrouter):
    """Dead jobs are listed newest first with their last error (limit works);
    requeue of one id, then of all, puts them back and the worker completes them;
    requeuing a job that is not dead is refused; purge ready / dead / all remove
    what they name and answer the count."""
    async def main():
        ws, p = await sessions(qrouter)
        try:
            failing = [True]

            def behave(c):
                if failing[0]:
                    fail_with("com.example.boom", f"boom {c.args[0]}")
                return c.args[0]

            worker = await Worker(behave).register(ws, "test.q.dead")
            base = await stats(p, "deadq")
            ids = []
            for n in (1, 2, 3):
                jid, _ = await push(p, "deadq", args=[n], kwargs={"n": n})
                ids.append(jid)
                await wait_stats(p, "deadq", lambda s: s["dead"] == base["dead"] + n, f"{n} dead")
            dl = await dead(p, "deadq")
            assert [d["job"]["id"] for d in dl] == ids[::-1], f"dead letters newest first: {dl!r}"
            for d, n in zip(dl, (3, 2, 1)):
                s = d["status"]
                assert (s["state"], s["reason"], s["attempts"]) == ("dead", "policy_exhausted", 1), d
                assert s["last_error"]["uri"] == "com.example.boom" and s["last_error"]["message"] == f"boom {n}", d
                at_s = s["last_error"]["at_ms"] / 1000
                assert isinstance(s["last_error"]["at_ms"], int) and abs(at_s - time.time()) < 60, d
                assert d["job"]["args"] == [n] and d["job"]["kwargs"] == {"n": n} and d["job"]["queue"] == "deadq", d
            assert [d["job"]["id"] for d in await dead(p, "deadq", limit=2)] == ids[:0:-1]

            failing[0] = False
            r = await p.call("switchyard.queue.requeue", "deadq", jobs=[ids[0]])
            assert list(r.results) == [1] and r.kwresults == {"requeued": 1}, r
            st = await wait_stats(p, "deadq", lambda s: s["completed_total"] == base["completed_total"] + 1,
                                  "the requeued job completed")
            assert st["dead"] == base["dead"] + 2, st
            assert [d["job"]["id"] for d in await dead(p, "deadq")] == [ids[2], ids[1]]
            assert (await job(p, ids[1]))["status"]["state"] == "dead"
            # ids[0] is completed now, not dead: refused, nothing requeued
            e = await queue_error(p, "switchyard.queue.requeue", "deadq", jobs=[ids[1], ids[0]])
            assert e.error == INVALID and str(ids[0]) in message(e), e
            assert len(await dead(p, "deadq")) == 2
            r = await p.call("switchyard.queue.requeue", "deadq", all=True)
            assert r.kwresults == {"requeued": 2}, r
            st = await wait_stats(p, "deadq", lambda s: s["completed_total"] == base["completed_total"] + 3,
                                  "all requeued jobs completed")
            assert st["dead"] == base["dead"] and await dead(p, "deadq") == [], st
            assert sorted(c.args[0] for c in worker.calls) == [1, 1, 2, 2, 3, 3], worker.calls

            # purge: 2 dead, 3 waiting (delayed)
            failing[0] = True
            for n in (4, 5):
                await push(p, "deadq", args=[n])
            await wait_stats(p, "deadq", lambda s: s["dead"] == 2, "2 dead")
            waiting = [(await push(p, "deadq", args=[n], delay="1h"))[0] for n in (6, 7, 8)]
            st = await stats(p, "deadq")
            assert (st["scheduled"], st["dead"]) == (3, 2), st
            r = await p.call("switchyard.queue.purge", "deadq", which="ready")
            assert list(r.results) == [3] and r.kwresults == {"purged": 3}, r
            st = await stats(p, "deadq")
            assert (st["ready"], st["scheduled"], st["dead"]) == (0, 0, 2), st
            e = await queue_error(p, "switchyard.queue.job", waiting[0])
            assert e.error == UNKNOWN_JOB, e
            r = await p.call("switchyard.queue.purge", "deadq", which="dead")
            assert r.kwresults == {"purged": 2}, r
            assert (await stats(p, "deadq"))["dead"] == 0
            await push(p, "deadq", args=[9])
            await wait_stats(p, "deadq", lambda s: s["dead"] == 1, "1 dead")
            for n in (10, 11):
                await push(p, "deadq", args=[n], delay="1h")
            r = await p.call("switchyard.queue.purge", "deadq", which="all")
            assert r.kwresults == {"purged": 3}, r
            st = await stats(p, "deadq")
            assert (st["ready"], st["scheduled"], st["in_flight"], st["dead"]) == (0, 0, 0, 0), st
            assert await peek(p, "deadq") == [] and await dead(p, "deadq") == []
        finally:
            await close_all(ws, p)

    run(main())


# ==========================================================================
# idempotency, delays, priorities
# ==========================================================================

def test_idempotency_key_pushes_once_per_queue(qrouter):
    """The same idempotency_key twice gives the same id with duplicate = true and the
    worker runs the job once, also after it completed; the same key in another queue
    is a job of its own."""
    async def main():
        ws, p = await sessions(qrouter)
        try:
            worker = await Worker(lambda c: "ok").register(ws, "test.q.idem")
            key = f"order-{uuid.uuid4().hex}"
            j1, d1 = await push(p, "idem", args=["first"], idempotency_key=key)
            j2, d2 = await push(p, "idem", args=["second"], idempotency_key=key)
            assert (d1, d2) == (False, True) and j2 == j1, (j1, d1, j2, d2)
            await wait_stats(p, "idem", lambda s: s["completed_total"] == 1, "the job completed")
            j3, d3 = await push(p, "idem", args=["third"], idempotency_key=key)
            assert (j3, d3) == (j1, True), "a key is remembered after its job completed"
            other, d4 = await push(p, "idem2", args=["other queue"], idempotency_key=key)
            assert other != j1 and d4 is False
            await wait_stats(p, "idem2", lambda s: s["completed_total"] == 1, "the other queue's job completed")
            await asyncio.sleep(QUIET)
            assert [c.args for c in worker.calls] == [["first"], ["other queue"]], worker.calls
            st = await stats(p, "idem")
            assert (st["completed_total"], st["idempotency_keys"]) == (1, 1), st
        finally:
            await close_all(ws, p)

    run(main())


def test_delay_and_run_at_are_not_early(qrouter):
    """delay (a number of ms and "650ms") and run_at (unix ms, RFC 3339 "Z" and
    "+01:00") schedule the job: peek shows it scheduled at that time, and the worker
    does not get it before (measured), in run_at order. A run_at a minute ago (within
    the 5 minute tolerance) means now."""
    async def main():
        ws, p = await sessions(qrouter)
        try:
            worker = await Worker(lambda c: None).register(ws, "test.q.later")
            wall0 = time.time()
            unix_at = int(wall0 * 1000) + 800
            z_at = int(wall0 * 1000) + 950
            plus1_at = int(wall0 * 1000) + 1100

            def rfc3339(ms, tz):
                d = datetime.datetime.fromtimestamp(ms / 1000, tz=tz)
                return d.isoformat(timespec="milliseconds").replace("+00:00", "Z")

            sent = {}
            pushes = [("past", {"run_at": int(wall0 * 1000) - 60_000}),
                      ("ms", {"delay": 500}), ("str", {"delay": "650ms"}), ("unix", {"run_at": unix_at}),
                      ("z", {"run_at": rfc3339(z_at, datetime.timezone.utc)}),
                      ("plus1", {"run_at": rfc3339(plus1_at, datetime.timezone(datetime.timedelta(hours=1)))})]
            assert pushes[5][1]["run_at"].endswith("+01:00") and pushes[4][1]["run_at"].endswith("Z")
            ids = {}
            for tag, opts in pushes:
                sent[tag] = (time.monotonic(), time.time())
                ids[tag], _ = await push(p, "later", args=[tag], **opts)
            # (the job run_at a minute ago may be waiting or already running)
            listed = [w for w in await peek(p, "later") if w["job"]["args"][0] != "past"]
            # peek lists waiting jobs in dispatch order: by run_at here
            assert [w["job"]["args"][0] for w in listed] == ["ms", "str", "unix", "z", "plus1"], listed
            waiting = {w["job"]["args"][0]: w for w in listed}
            assert all(w["status"]["state"] == "scheduled" and w["status"]["attempts"] == 0
                       for w in waiting.values()), waiting
            assert waiting["unix"]["status"]["run_at_ms"] == unix_at
            assert waiting["z"]["status"]["run_at_ms"] == z_at
            assert waiting["plus1"]["status"]["run_at_ms"] == plus1_at
            for tag, ms in (("ms", 500), ("str", 650)):
                at = waiting[tag]["status"]["run_at_ms"]
                assert -1 <= at - sent[tag][1] * 1000 - ms < 1000, (tag, at, sent[tag])  # ms resolution

            calls = await worker.wait_calls(6, timeout=5)
            assert [c.args[0] for c in calls] == ["past", "ms", "str", "unix", "z", "plus1"], calls
            # a run_at up to 5 minutes in the past means now: that job ran at once
            assert calls[0].at - sent["past"][0] < 0.45, calls[0].at - sent["past"][0]
            for c in calls[1:]:
                tag = c.args[0]
                if tag in ("ms", "str"):
                    waited = c.at - sent[tag][0]
                    nominal = 0.5 if tag == "ms" else 0.65
                    assert nominal - 0.01 <= waited < nominal + 1.5, f"{tag}: ran after {waited:.3f}s, delay {nominal}"
                else:
                    due = waiting[tag]["status"]["run_at_ms"] / 1000
                    assert c.wall >= due - 0.01, f"{tag}: ran {due - c.wall:.3f}s before its run_at"
                    assert c.wall < due + 1.5, f"{tag}: ran {c.wall - due:.3f}s after its run_at"
        finally:
            await close_all(ws, p)

    run(main())


PRIORITY_JOBS = [("a", None), ("b", "low"), ("c", 9), ("d", "high"), ("e", 0), ("f", 5), ("g", "highest")]
# higher first, push order among equals
PRIORITY_ORDER = ["c", "g", "d", "a", "f", "b", "e"]


def test_priority_order_of_waiting_jobs(qrouter):
    """Concurrency 1: while the worker holds a first job, the others wait; peek lists
    them highest priority first (push order among equals), ready_by_priority counts
    them, and the worker gets them in that order."""
    async def main():
        ws, p = await sessions(qrouter)
        try:
            gate = asyncio.Event()

            async def behave(c):
                if c.args[0] == "gate":
                    await gate.wait()

            worker = await Worker(behave).register(ws, "test.q.prio")
            await push(p, "prio", args=["gate"], priority="lowest")
            await worker.wait_calls(1)
            for tag, prio in PRIORITY_JOBS:
                await push(p, "prio", args=[tag], **({} if prio is None else {"priority": prio}))
            waiting = await peek(p, "prio", limit=20)
            assert [w["job"]["args"][0] for w in waiting] == PRIORITY_ORDER, waiting
            assert [w["job"]["priority"] for w in waiting] == [9, 9, 7, 5, 5, 3, 0], waiting
            assert [w["job"]["args"][0] for w in await peek(p, "prio", limit=3)] == PRIORITY_ORDER[:3]
            st = await stats(p, "prio")
            assert (st["ready"], st["in_flight"]) == (7, 1), st
            assert st["ready_by_priority"] == [1, 0, 0, 1, 0, 2, 0, 1, 0, 2], st
            gate.set()
            calls = await worker.wait_calls(8)
            assert [c.args[0] for c in calls] == ["gate"] + PRIORITY_ORDER, calls
        finally:
            await close_all(ws, p)

    run(main())


def test_priority_order_of_jobs_pushed_before_the_worker(qrouter):
    """Jobs pushed before any worker registered, all due at one run_at: once due, the
    worker (registered after the pushes) gets them highest priority first."""
    async def main():
        ws, p = await sessions(qrouter)
        try:
            at = int(time.time() * 1000) + 700
            for tag, prio in PRIORITY_JOBS:
                await push(p, "prio2", args=[tag], run_at=at, **({} if prio is None else {"priority": prio}))
            worker = await Worker(lambda c: None).register(ws, "test.q.prio2")
            assert time.time() * 1000 < at - 100, "the worker must be registered before the jobs are due"
            calls = await worker.wait_calls(7)
            assert [c.args[0] for c in calls] == PRIORITY_ORDER, calls
        finally:
            await close_all(ws, p)

    run(main())


def test_priority_order_of_jobs_waiting_for_a_worker(qrouter):
    """Jobs pushed while no worker is registered (lowest priority first), concurrency 1:
    the worker registered after the pushes gets them highest priority first. (The
    dispatcher leaves jobs untouched while their procedure has no worker, so their
    order is not the order of failed tries.)"""
    async def main():
        ws, p = await sessions(qrouter)
        try:
            order = ["p0", "p3", "p5", "p7", "p9"]
            for tag in order:
                await push(p, "prio3", args=[tag], priority=int(tag[1]))
            worker = await Worker(lambda c: None).register(ws, "test.q.prio3")
            calls = await worker.wait_calls(5, timeout=4)
            assert [c.args[0] for c in calls] == order[::-1], calls
        finally:
            await close_all(ws, p)

    run(main())


# ==========================================================================
# payloads
# ==========================================================================

VALUES = [b"\x00\xffbinary", 2 ** 64 - 1, -2 ** 63, 2 ** 53 + 1, 1.5, 0.1, -7, "h\u00e9llo \u2603 \U0001d11e", "",
          None, True, False, [], {}, {"nested": [1, {"b": b"\x01\x02"}]}]
KW_VALUES = {"bin": b"\xfe", "big": 2 ** 63, "text": "x\ny", "none": None, "list": [1.25, "a"]}


def test_payload_values_survive_the_queue(qrouter):
    """Binary, 64-bit integers, floats, unicode, null and nesting pushed by a CBOR
    producer reach a JSON worker and a MsgPack worker unchanged (the queue stores JSON
    with the \\u0000 base64 convention for binary)."""
    async def main():
        wj = await connect(qrouter, "ws", "json")
        wm = await connect(qrouter, "rs", "msgpack")
        p = await connect(qrouter, "unix", "cbor")
        try:
            jw = await Worker(lambda c: None).register(wj, "test.q.types.json")
            mw = await Worker(lambda c: None).register(wm, "test.q.types.msgpack")
            for q in ("types_json", "types_msgpack"):
                await push(p, q, args=VALUES, kwargs=KW_VALUES)
            for w in (jw, mw):
                c = (await w.wait_calls(1))[0]
                assert c.args == VALUES, (c.args, VALUES)
                assert c.kwargs == KW_VALUES, (c.kwargs, KW_VALUES)
                assert [type(v) for v in c.args] == [type(v) for v in VALUES], c.args
        finally:
            await close_all(wj, wm, p)

    run(main())


def test_text_starting_with_nul_stays_text(qrouter):
    """A text string that starts with U+0000, pushed by a MsgPack producer, reaches a
    MsgPack worker as text (a plain CALL between the same two peers keeps it text):
    the queue stores payloads as MessagePack, not JSON, whose \\u0000 convention
    would turn it into bytes."""
    async def main():
        wm = await connect(qrouter, "rs", "msgpack")
        p = await connect(qrouter, "rs", "msgpack")
        try:
            mw = await Worker(lambda c: None).register(wm, "test.q.types.msgpack")
            await push(p, "types_msgpack", args=["\x00AP8Q"])
            c = (await mw.wait_calls(1))[0]
            assert c.args == ["\x00AP8Q"], f"a text string came back as {c.args!r}"
        finally:
            await close_all(wm, p)

    run(main())


# ==========================================================================
# leases
# ==========================================================================

def test_lease_expiry_fails_the_attempt_and_cancels_the_call(qrouter):
    """A worker that never answers: after lease_timeout (300 ms; found by the 1 s
    maintenance) the call is interrupted and the attempt fails with
    switchyard.queue.lease_expired; the policy (once, 100 ms) retries it; the second
    expiry dead-letters it."""
    async def main():
        ws, p = await sessions(qrouter)
        try:
            topic = results_topic()
            inbox, _ = await subscribe(p, topic)
            worker = await Worker(lambda c: asyncio.sleep(30)).register(ws, "test.q.lease")
            before = await stats(p, "lease")
            jid, _ = await push(p, "lease", args=["slow"], result_topic=topic)
            await worker.wait_calls(1)
            j = await wait_job(p, jid, lambda j: j["status"]["last_error"] is not None, "a failed attempt",
                               timeout=0.3 + MAINTENANCE_S + 2)
            assert j["status"]["last_error"]["uri"] == LEASE_EXPIRED, j
            assert j["status"]["attempts"] == 1, j
            ev = await inbox.wait_for(lambda e: e.kwargs.get("job") == jid, "dead event",
                                      timeout=2 * (0.3 + MAINTENANCE_S) + 3)
            k = ev.kwargs
            assert (k["status"], k["attempt"], k["error"], k["reason"]) == \
                ("dead", 2, LEASE_EXPIRED, "policy_exhausted"), k
            assert "lease" in k["message"], k
            calls = worker.calls
            assert len(calls) == 2, calls
            for n in (1, 2):
                c = await worker.wait_ended(n)
                assert c.cancelled, f"invocation {n} must be interrupted when its lease expires: {c!r}"
            gap = calls[1].at - calls[0].at
            assert 0.39 <= gap < 0.4 + MAINTENANCE_S + 1.5, f"second attempt {gap:.3f}s after the first"
            st = await stats(p, "lease")
            assert st["retried_total"] - before["retried_total"] == 1, st
            assert st["dead"] - before["dead"] == 1 and st["in_flight"] == 0, st
            d = (await dead(p, "lease", limit=1))[0]
            assert d["job"]["id"] == jid and d["status"]["last_error"]["uri"] == LEASE_EXPIRED, d
        finally:
            await close_all(ws, p)

    run(main())


def test_progressive_results_keep_the_job_alive(qrouter):
    """A worker that sends progressive results (the queue always asks for them) runs
    1.65 s with a 400 ms lease and retry none: the job completes on attempt 1."""
    async def main():
        ws, p = await sessions(qrouter)
        try:
            topic = results_topic()
            inbox, _ = await subscribe(p, topic)

            async def behave(c):
                assert c.details.progress is not None, "the queue must ask for progressive results"
                for i in range(11):
                    c.details.progress(i, step=i)
                    await asyncio.sleep(0.15)
                return "done"

            worker = await Worker(behave).register(ws, "test.q.progress")
            jid, _ = await push(p, "progress", args=[1], result_topic=topic)
            ev = await inbox.wait_for(lambda e: e.kwargs.get("job") == jid, "result event", timeout=6)
            assert (ev.kwargs["status"], ev.kwargs["attempt"], ev.kwargs["args"]) == ("completed", 1, ["done"]), \
                ev.kwargs
            c = worker.calls[0]
            assert len(worker.calls) == 1 and not c.cancelled, worker.calls
            assert c.ended - c.at >= 0.4 + MAINTENANCE_S, "the job must outlive lease + maintenance interval"
            st = await stats(p, "progress")
            assert (st["dead"], st["retried_total"], st["completed_total"]) == (0, 0, 1), st
        finally:
            await close_all(ws, p)

    run(main())


def test_extend_from_the_worker_keeps_the_job_alive(qrouter):
    """A worker calls switchyard.queue.extend from its own session while it runs the
    job: without arguments it extends its jobs by lease_timeout (the answer names the
    job), with job and by it extends that one; the job (400 ms lease, retry none)
    completes after 1.6 s. Another session cannot extend it."""
    async def main():
        ws, p = await sessions(qrouter)
        try:
            topic = results_topic()
            inbox, _ = await subscribe(p, topic)
            answers = []
            running = asyncio.Event()
            release = asyncio.Event()

            async def behave(c):
                r = await ws.call("switchyard.queue.extend")
                answers.append((time.time(), r.kwresults))
                me = r.kwresults["extended"][0]["job"]
                running.set()
                for _ in range(8):
                    await asyncio.sleep(0.2)
                    r = await ws.call("switchyard.queue.extend", job=me, by="500ms")
                    answers.append((time.time(), r.kwresults))
                await release.wait()
                return "extended"

            await Worker(behave).register(ws, "test.q.extend")
            jid, _ = await push(p, "extend", args=[1], result_topic=topic)
            await asyncio.wait_for(running.wait(), T)
            j = await job(p, jid)
            assert j["status"]["state"] == "leased" and j["status"]["attempts"] == 1, j
            assert abs(j["status"]["deadline_ms"] - answers[-1][1]["extended"][0]["deadline_ms"]) < 600, (j, answers)
            assert (await stats(p, "extend"))["in_flight"] == 1
            e = await queue_error(p, "switchyard.queue.extend")
            assert e.error == INVALID and "running no job" in message(e), e
            e = await queue_error(p, "switchyard.queue.extend", job=jid)
            assert e.error == INVALID and "is not running job" in message(e), e
            release.set()
            ev = await inbox.wait_for(lambda e: e.kwargs.get("job") == jid, "result event", timeout=6)
            assert (ev.kwargs["status"], ev.kwargs["attempt"], ev.kwargs["args"]) == ("completed", 1, ["extended"]), \
                ev.kwargs
            assert len(answers) == 9, answers
            t, first = answers[0]
            assert [x["job"] for x in first["extended"]] == [jid], first
            left = first["extended"][0]["deadline_ms"] - t * 1000
            assert 250 <= left <= 450, f"extend without `by` extends by lease_timeout (400 ms): {left:.0f} ms left"
            for t, a in answers[1:]:
                assert [x["job"] for x in a["extended"]] == [jid], a
                left = a["extended"][0]["deadline_ms"] - t * 1000
                assert 350 <= left <= 550, f"extend by 500ms: {left:.0f} ms left"
            st = await stats(p, "extend")
            assert (st["dead"], st["retried_total"], st["completed_total"]) == (0, 0, 1), st
        finally:
            await close_all(ws, p)

    run(main())


def test_job_without_worker_waits_uncounted(qrouter):
    """A job whose procedure has no callee waits, ready and untouched (retry none,
    max_attempts 1: a counted attempt would dead-letter it); /metrics says the
    queue has no worker; once a worker registers it runs as attempt 1."""
    async def main():
        ws, p = await sessions(qrouter)
        try:
            topic = results_topic()
            inbox, _ = await subscribe(p, topic)
            jid, _ = await push(p, "noworker", args=["patience"], result_topic=topic)
            await asyncio.sleep(1.3)  # past the dispatcher's one-second look
            j = await job(p, jid)
            assert (j["status"]["attempts"], j["status"]["state"]) == (0, "ready"), j
            st = await stats(p, "noworker")
            assert (st["dead"], st["ready"], st["scheduled"], st["in_flight"]) == (0, 1, 0, 0), st
            # In cluster mode the queue metrics are the owner node's (scrape_queues).
            without = metric(scrape_queues(qrouter), "switchyard_queue_without_worker", realm="realm1",
                             queue="noworker")
            assert without == 1, without
            worker = await Worker(lambda c: "finally").register(ws, "test.q.noworker")
            ev = await inbox.wait_for(lambda e: e.kwargs.get("job") == jid, "result event", timeout=4)
            assert (ev.kwargs["status"], ev.kwargs["attempt"]) == ("completed", 1), ev.kwargs
            assert [c.args for c in worker.calls] == [["patience"]]
            without = metric(scrape_queues(qrouter), "switchyard_queue_without_worker", realm="realm1",
                             queue="noworker")
            assert without == 0, without
        finally:
            await close_all(ws, p)

    run(main())


def test_worker_that_disconnects_fails_the_attempt(qrouter):
    """A worker whose connection drops while it runs a job: the attempt fails (its
    last_error is wamp.error.canceled, attempts 1) and the job is retried; another
    worker completes it as attempt 2."""
    async def main():
        w1, w2, p = await sessions(qrouter, 3)
        try:
            topic = results_topic()
            inbox, _ = await subscribe(p, topic)
            first = await Worker(lambda c: asyncio.sleep(30)).register(w1, "test.q.crashy")
            jid, _ = await push(p, "crashy", args=["fragile"], result_topic=topic)
            await first.wait_calls(1)
            w1.abort_transport()
            j = await wait_job(p, jid, lambda j: j["status"]["last_error"] is not None, "a failed attempt")
            assert j["status"]["attempts"] == 1 and j["status"]["last_error"]["uri"] == "wamp.error.canceled", j
            second = await Worker(lambda c: "done").register(w2, "test.q.crashy")
            ev = await inbox.wait_for(lambda e: e.kwargs.get("job") == jid, "result event", timeout=4)
            assert (ev.kwargs["status"], ev.kwargs["attempt"], ev.kwargs["args"]) == ("completed", 2, ["done"]), \
                ev.kwargs
            assert [c.args for c in second.calls] == [["fragile"]]
            st = await stats(p, "crashy")
            assert (st["retried_total"], st["completed_total"], st["dead"]) == (1, 1, 0), st
        finally:
            await close_all(w2, p)

    run(main())


# ==========================================================================
# topic bindings
# ==========================================================================

def test_topic_bindings_turn_events_into_jobs(qrouter):
    """An acknowledged publish on a bound topic makes one job per bound queue (two
    queues with different workers get the event's args and kwargs); a prefix and a
    wildcard binding feed their queue only; unbound topics make no job; subscribers
    still get the events."""
    async def main():
        ws, ws2, p = await sessions(qrouter, 3)
        try:
            pdf = await Worker(lambda c: "pdf").register(ws, "test.q.bind.pdf")
            mail = await Worker(lambda c: "mail").register(ws2, "test.q.bind.mail")
            events, _ = await subscribe(ws2, "com.shop.order.placed")
            await ack(p, "com.shop.order.placed", 42, "x", total=9.5, items=[{"sku": "a"}])
            for w in (pdf, mail):
                calls = await w.wait_calls(1)
                assert calls[0].args == [42, "x"] and calls[0].kwargs == {"total": 9.5, "items": [{"sku": "a"}]}, \
                    calls
            ev = await events.wait_for(lambda e: True, "the event")
            assert ev.args == [42, "x"], ev
            # not bound: exact binding, other topics
            for topic in ("com.shop.order.placed.extra", "com.shop.order", "com.shop.other",
                          "com.shop.order.x.cancelled", "com.shop.invoice"):
                await ack(p, topic, "unbound", topic)
            # prefix -> bind_pdf only; wildcard -> bind_mail only
            await ack(p, "com.shop.invoice.sent", "inv")
            await ack(p, "com.shop.order.cancelled", "cancel")
            await pdf.wait_calls(2)
            await mail.wait_calls(2)
            await asyncio.sleep(QUIET)
            assert [c.args for c in pdf.calls] == [[42, "x"], ["inv"]], pdf.calls
            assert [c.args for c in mail.calls] == [[42, "x"], ["cancel"]], mail.calls
            for q in ("bind_pdf", "bind_mail"):
                st = await wait_stats(p, q, lambda s: s["completed_total"] == 2, "2 completed")
                assert (st["ready"], st["scheduled"], st["in_flight"], st["dead"]) == (0, 0, 0, 0), st
        finally:
            await close_all(ws, ws2, p)

    run(main())


def test_binding_refuses_event_too_large_for_a_queue(qrouter):
    """An event over a bound queue's max_payload_bytes (64) is refused with
    payload_too_large, stored in none of the bound queues, and not delivered to a
    plain subscriber (acknowledged or not); a small one makes a job in both queues."""
    async def main():
        ws, ws2, p = await sessions(qrouter, 3)
        try:
            small = await Worker(lambda c: None).register(ws, "test.q.bind.small")
            roomy = await Worker(lambda c: None).register(ws2, "test.q.bind.roomy")
            events, _ = await subscribe(ws2, "com.shop.big")
            big = "x" * 200
            with pytest.raises(ApplicationError) as ei:
                await ack(p, "com.shop.big", big)
            assert ei.value.error == TOO_LARGE, ei.value
            assert "bind_small" in message(ei.value) and "64" in message(ei.value), ei.value
            p.publish("com.shop.big", big, "unacknowledged")
            await marker(p, "com.shop.big", "end")
            await events.marker("end")
            assert events.before_marker("end") == [], f"a refused event was delivered: {events.args!r}"
            for w in (small, roomy):
                calls = await w.wait_calls(1)
                assert calls[0].args == ["marker", "end"], calls
            await asyncio.sleep(QUIET)
            assert len(small.calls) == 1 and len(roomy.calls) == 1, (small.calls, roomy.calls)
            for q in ("bind_small", "bind_roomy"):
                st = await wait_stats(p, q, lambda s: s["completed_total"] == 1, "1 completed")
                assert st["ready"] + st["scheduled"] + st["in_flight"] + st["dead"] == 0, st
            assert p.is_attached()
        finally:
            await close_all(ws, ws2, p)

    run(main())


# ==========================================================================
# declare, list, stats, peek, job
# ==========================================================================

def test_declare_at_run_time(qrouter):
    """switchyard.queue.declare: created, then the same configuration again is a
    no-op (created false, also as a positional dict), a different one is
    config_conflict naming the fields that differ; an invalid one is refused and not
    declared. The declared queue is listed, works (its non_retryable_errors apply),
    and list / stats / peek / job describe its jobs."""
    async def main():
        ws, p = await sessions(qrouter)
        try:
            tag = uuid.uuid4().hex[:10]
            name = f"decl-{tag}"
            target = f"test.q.decl.{tag}"
            cfg = {"name": name, "target": target, "retry": fixed(2, "100ms"), "lease_timeout": "2s",
                   "max_attempts": 5, "concurrency": 2, "non_retryable_errors": ["com.example.bad"],
                   "max_payload_bytes": 4096}
            r = await p.call("switchyard.queue.declare", **cfg)
            assert r.kwresults == {"queue": name, "created": True}, r
            r = await p.call("switchyard.queue.declare", **cfg)
            assert r.kwresults == {"queue": name, "created": False}, r
            r = await p.call("switchyard.queue.declare", dict(cfg))
            assert r.kwresults == {"queue": name, "created": False}, r
            e = await queue_error(p, "switchyard.queue.declare", **dict(cfg, lease_timeout="3s", concurrency=3))
            assert e.error == CONFLICT, e
            msg = message(e)
            assert name in msg and "lease_timeout" in msg and "concurrency" in msg and "retry" not in msg, msg
            e = await queue_error(p, "switchyard.queue.declare", name="basic", target="test.q.basic")
            assert e.error == CONFLICT and "retry" in message(e), e
            bad = f"decl-bad-{tag}"
            e = await queue_error(p, "switchyard.queue.declare", name=bad, target=target,
                                  retry={"kind": "exponential", "factor": 0})
            assert e.error == INVALID and "factor" in message(e), e
            e = await queue_error(p, "switchyard.queue.declare", name=bad, lease_timeout="10ms")
            assert e.error == INVALID and "lease_timeout" in message(e), e

            listed = {s["name"]: s for s in await p.call("switchyard.queue.list")}
            assert name in listed and bad not in listed and "basic" in listed, sorted(listed)
            assert listed[name]["concurrency"] == 2 and listed[name]["ready"] == 0, listed[name]
            e = await queue_error(p, "switchyard.queue.stats", bad)
            assert e.error == UNKNOWN_QUEUE, e

            later, _ = await push(p, name, args=["later"], kwargs={"k": 1}, delay="1h", priority="high")
            waiting = await peek(p, name)
            assert len(waiting) == 1, waiting
            w = waiting[0]
            assert w["job"]["id"] == later and w["job"]["queue"] == name, w
            assert w["job"]["target"] == {"procedure": target} and w["job"]["priority"] == 7, w
            assert (w["job"]["args"], w["job"]["kwargs"]) == (["later"], {"k": 1}), w
            assert (w["status"]["state"], w["status"]["attempts"]) == ("scheduled", 0), w
            assert await job(p, later) == w
            st = await stats(p, name)
            assert (st["name"], st["scheduled"], st["ready"]) == (name, 1, 0), st

            worker = await Worker(lambda c: fail_with("com.example.bad", "no") if c.args == ["bad"] else "ok"
                                  ).register(ws, target)
            await push(p, name, args=["go"])
            bad_id, _ = await push(p, name, args=["bad"])
            st = await wait_stats(p, name, lambda s: s["completed_total"] == 1 and s["dead"] == 1, "1 done, 1 dead")
            assert st["retried_total"] == 0 and st["scheduled"] == 1, st
            j = await job(p, bad_id)
            assert (j["status"]["reason"], j["status"]["attempts"]) == ("non_retryable", 1), j
            assert sorted(c.args[0] for c in worker.calls) == ["bad", "go"], worker.calls
        finally:
            await close_all(ws, p)

    run(main())


# ==========================================================================
# bad input
# ==========================================================================

def _bad_pushes():
    now_ms = int(time.time() * 1000)
    fields = [
        # (kwargs of push, error URI, fragments the message must contain)
        ({"retry": {"kind": "fixed", "times": 0, "spacing": "100ms"}}, INVALID, ["times"]),
        ({"retry": {"kind": "fixed", "times": 0}}, INVALID, []),
        ({"retry": {"kind": "exponential", "initial": "100ms", "factor": 0}}, INVALID, ["factor"]),
        ({"retry": {"kind": "exponential", "jitter": 1.5}}, INVALID, ["jitter"]),
        ({"retry": {"kind": "exponential", "initial": "1s", "cap": "100ms"}}, INVALID, ["cap"]),
        ({"retry": {"kind": "sometimes"}}, INVALID, ["sometimes"]),
        ({"colour": "red"}, INVALID, ["colour"]),
        ({"args": ["x" * 300]}, TOO_LARGE, ["256", "strict"]),
        ({"kwargs": {"blob": "y" * 300}}, TOO_LARGE, ["256"]),
        ({"run_at": "next tuesday"}, INVALID, ["next tuesday"]),
        ({"run_at": 1000}, INVALID, ["run_at", "past"]),
        ({"run_at": "2001-01-01T00:00:00Z"}, INVALID, ["run_at", "past"]),
        ({"run_at": now_ms * 1000}, INVALID, ["run_at", "ahead"]),
        ({"delay": "1s", "run_at": now_ms + 1000}, INVALID, ["delay", "run_at"]),
        ({"delay": "soon"}, INVALID, ["soon"]),
        ({"delay": -5}, INVALID, ["negative"]),
        ({"args": "not a list"}, INVALID, ["args"]),
        ({"args": {"a": 1}}, INVALID, ["args"]),
        ({"kwargs": [1, 2]}, INVALID, ["kwargs"]),
        ({"target": {"http": {"url": "http://127.0.0.1:9/jobs"}}}, INVALID, ["HTTP target"]),
        ({"target": ""}, INVALID, ["target"]),
        ({"priority": 10}, INVALID, ["10", "0..=9"]),
        ({"priority": "urgent"}, INVALID, ["urgent"]),
        ({"max_attempts": 0}, INVALID, ["max_attempts"]),
        ({"idempotency_key": ""}, INVALID, ["idempotency_key"]),
        ({"idempotency_key": "k" * 300}, INVALID, ["idempotency_key"]),
        ({"result_topic": "bad topic"}, INVALID, ["result_topic"]),
    ]
    return fields


def test_bad_input_is_refused_and_stores_nothing(qrouter):
    """Every malformed request is a WAMP ERROR with a switchyard.queue.error.* URI and
    a message naming the problem; nothing is stored (stats, peek and dead unchanged,
    no queue created). push_many is all or nothing."""
    async def main():
        (p,) = await sessions(qrouter, 1)
        try:
            before = await stats(p, "strict")
            names_before = sorted(s["name"] for s in await p.call("switchyard.queue.list"))
            problems = []
            for kw, uri, fragments in _bad_pushes():
                try:
                    r = await asyncio.wait_for(p.call("switchyard.queue.push", "strict", **kw), T)
                    problems.append(f"push {kw!r}: accepted {r!r}")
                    continue
                except ApplicationError as e:
                    msg = message(e)
                    if e.error != uri or not msg or any(f not in msg for f in fragments):
                        problems.append(f"push {str(kw)[:80]}: {e.error} {msg!r}, expected {uri} naming {fragments}")
            assert not problems, "\n".join(problems)

            calls = [
                (("switchyard.queue.push", "no-such-queue"), {"args": [1]}, UNKNOWN_QUEUE, ["no-such-queue"]),
                (("switchyard.queue.push",), {"args": [1]}, INVALID, ["queue"]),
                (("switchyard.queue.push", 5), {}, INVALID, ["queue"]),
                (("switchyard.queue.stats", "no-such-queue"), {}, UNKNOWN_QUEUE, ["no-such-queue"]),
                (("switchyard.queue.job", 4503599627370495), {}, UNKNOWN_JOB, ["4503599627370495"]),
                (("switchyard.queue.job", "x"), {}, INVALID, ["id"]),
                (("switchyard.queue.requeue", "strict"), {}, INVALID, ["jobs", "all"]),
                (("switchyard.queue.requeue", "strict"), {"jobs": [4503599627370495]}, INVALID, ["not a dead job"]),
                (("switchyard.queue.purge", "strict"), {"which": "everything"}, INVALID, ["everything"]),
                (("switchyard.queue.purge", "strict"), {}, INVALID, ["which"]),
                (("switchyard.queue.peek", "strict"), {"limit": -1}, INVALID, ["limit"]),
                (("switchyard.queue.push_many", [{"queue": "strict", "args": [1]}, {"queue": "strict", "args": "x"}]),
                 {}, INVALID, ["jobs[1]", "args"]),
                (("switchyard.queue.push_many", [{"queue": "strict", "args": [1]}, {"queue": "no-such-queue"}]),
                 {}, UNKNOWN_QUEUE, ["no-such-queue"]),
            ]
            for args, kw, uri, fragments in calls:
                e = await queue_error(p, *args, **kw)
                msg = message(e)
                if e.error != uri or any(f not in msg for f in fragments):
                    problems.append(f"{args!r} {kw!r}: {e.error} {msg!r}, expected {uri} naming {fragments}")
            assert not problems, "\n".join(problems)

            after = await stats(p, "strict")
            assert depth(after) == depth(before), (before, after)
            assert await peek(p, "strict") == [] and await dead(p, "strict") == []
            assert sorted(s["name"] for s in await p.call("switchyard.queue.list")) == names_before
            # the same push without the mistake is accepted
            jid, _ = await push(p, "strict", args=["x" * 100], retry=fixed(1, "100ms"), delay="1h")
            assert [w["job"]["id"] for w in await peek(p, "strict")] == [jid]
            r = await p.call("switchyard.queue.purge", "strict", which="all")
            assert r.kwresults == {"purged": 1}
        finally:
            await close_all(p)

    run(main())


# ==========================================================================
# authorization
# ==========================================================================

AUTHZ_TAG = uuid.uuid4().hex[:12]
AUTHZ_SECRETS = {n: f"{n}-secret-{AUTHZ_TAG}" for n in ("producer", "operator")}


def _perm(uri, allow, match=None):
    p = {"uri": uri, "allow": list(allow)}
    if match:
        p["match"] = match
    return p


AUTHZ_REALM = {
    "name": "realm1", "uri_check": "loose",
    "auth": {"methods": ["wampcra"], "max_failures": 1000, "max_failures_per_address": 100000,
             "wampcra": [{"authid": n, "secret": s, "role": n} for n, s in AUTHZ_SECRETS.items()]},
    "role": [
        {"name": "producer", "permission": [_perm("switchyard.queue.push", ["call"]),
                                            _perm("com.jobs.results.mine.", ["publish"], "prefix"),
                                            _perm("com.jobs.allowed.", ["call"], "prefix")]},
        {"name": "operator", "permission": [_perm("switchyard.queue.", ["call"], "prefix"),
                                            _perm("com.", ["call", "register", "publish", "subscribe"], "prefix")]},
    ],
    "queue": [{"name": "authq", "target": "com.jobs.worker"}],
}


async def _login(router, name):
    secret = AUTHZ_SECRETS[name]
    return await connect(router, authmethods=["wampcra"], authid=name,
                         on_challenge=lambda s, ch: ab_auth.compute_wcs(secret, ch.extra["challenge"]))


def test_authorization_of_queue_procedures_and_job_fields(router_factory):
    """A producer allowed only switchyard.queue.push may push (the queue's own target
    needs no permission), may not call purge or push_many, and cannot name a
    result_topic it may not publish to or a target it may not call
    (wamp.error.not_authorized naming the action and the URI; nothing stored)."""
    r = router_factory(realms=[AUTHZ_REALM])

    async def main():
        prod, op = await _login(r, "producer"), await _login(r, "operator")
        try:
            assert prod.joined.result().authrole == "producer"
            ok = [(await push(prod, "authq", args=[1]))[0]]
            for procedure, args, kw in (("switchyard.queue.purge", ["authq"], {"which": "all"}),
                                        ("switchyard.queue.push_many", [[{"queue": "authq"}]], {}),
                                        ("switchyard.queue.stats", ["authq"], {})):
                e = await queue_error(prod, procedure, *args, **kw)
                assert e.error == NOT_AUTHORIZED and procedure in message(e), e
            for kw, action, uri in (({"result_topic": "com.jobs.results.other"}, "publish", "com.jobs.results.other"),
                                    ({"target": "com.jobs.secret.run"}, "call", "com.jobs.secret.run"),
                                    ({"target": "com.jobs.allowed.run", "result_topic": "com.jobs.results.x"},
                                     "publish", "com.jobs.results.x")):
                e = await queue_error(prod, "switchyard.queue.push", "authq", args=[2], **kw)
                assert e.error == NOT_AUTHORIZED, (kw, e)
                assert action in message(e) and uri in message(e), (kw, message(e))
            ok.append((await push(prod, "authq", args=[3], result_topic="com.jobs.results.mine.1"))[0])
            ok.append((await push(prod, "authq", args=[4], target="com.jobs.allowed.run"))[0])
            assert prod.is_attached()
            st = await stats(op, "authq")
            assert st["ready"] + st["scheduled"] + st["in_flight"] == 3 and st["dead"] == 0, st
            assert sorted(w["job"]["id"] for w in await peek(op, "authq")) == sorted(ok)
            r2 = await op.call("switchyard.queue.purge", "authq", which="all")
            assert r2.kwresults == {"purged": 3}, r2
        finally:
            await close_all(prod, op)

    run(main())


# ==========================================================================
# metrics
# ==========================================================================

def scrape_queues(qrouter) -> str:
    """The queue metrics of `qrouter`'s deployment, as a Prometheus scraping every node sees
    them. One node: its page. A JetStream cluster (docs/CLUSTER.md, "Queue metrics"): every
    node's page, checked: `switchyard_queue_owner{realm="realm1"}` is 1 on exactly one node and
    0 on the others, and only that node has `switchyard_queue_*` rows for the realm's queues;
    returns the owner's page (a sum over the nodes gives the same values)."""
    nodes = getattr(qrouter, "cluster_routers", None)
    if not nodes:
        return scrape(qrouter)
    pages = [scrape(r) for r in nodes]
    owners = [metric(p, "switchyard_queue_owner", realm="realm1") for p in pages]
    assert sorted(owners) == [0] * (len(nodes) - 1) + [1], owners
    owner = owners.index(1)
    for i, p in enumerate(pages):
        rows = metric(p, "switchyard_queue_ready", realm="realm1", queue="metrics_q")
        assert (rows is not None) == (i == owner), (i, owner, rows)
    return pages[owner]


def test_metrics_match_stats(qrouter):
    """GET /metrics shows switchyard_queue_{ready,in_flight,scheduled,dead,completed_total}
    {realm="realm1",queue="metrics_q"} with the values of switchyard.queue.stats (in cluster
    mode: on the node that owns the queues, and on no other; see scrape_queues)."""
    async def main():
        ws, p = await sessions(qrouter)
        try:
            gate = asyncio.Event()

            async def behave(c):
                if c.args[0] == "hold":
                    await gate.wait()

            worker = await Worker(behave).register(ws, "test.q.metrics")
            await push(p, "metrics_q", args=["quick"])
            await wait_stats(p, "metrics_q", lambda s: s["completed_total"] == 1, "1 completed")
            await push(p, "metrics_q", args=["hold"])
            await worker.wait_calls(2)
            for tag in "abc":
                await push(p, "metrics_q", args=[tag])
            await push(p, "metrics_q", args=["later"], delay="1h")
            st = await stats(p, "metrics_q")
            page = scrape_queues(qrouter)
            assert "# TYPE switchyard_queue_completed_total counter" in page
            assert "# TYPE switchyard_queue_ready gauge" in page
            want = {"ready": 3, "in_flight": 1, "scheduled": 1, "dead": 0, "completed_total": 1}
            for field, value in want.items():
                got = metric(page, f"switchyard_queue_{field}", realm="realm1", queue="metrics_q")
                assert st[field] == value and got == value, \
                    f"{field}: stats {st[field]}, metrics {got}, expected {value}"
            gate.set()
            st = await wait_stats(p, "metrics_q", lambda s: s["completed_total"] == 5, "5 completed")
            page = scrape_queues(qrouter)
            assert metric(page, "switchyard_queue_completed_total", realm="realm1", queue="metrics_q") == 5
            assert metric(page, "switchyard_queue_ready", realm="realm1", queue="metrics_q") == st["ready"] == 0
            # every configured queue has its rows
            assert metric(page, "switchyard_queue_ready", realm="realm1", queue="strict") is not None
        finally:
            await close_all(ws, p)

    run(main())


def test_job_kwarg_gives_workers_the_job_id_and_attempt(qrouter):
    """A queue with job_kwarg = "_job": the worker gets {id, queue, attempt} of the job
    beside the job's own kwargs, the same id on every attempt (for idempotent workers);
    queues without it pass the job's kwargs unchanged (the other tests)."""
    async def main():
        ws, p = await sessions(qrouter)
        try:
            topic = results_topic()
            inbox, _ = await subscribe(p, topic)

            def behave(c):
                if c.n == 1:
                    raise ApplicationError("com.example.flaky", "first attempt fails")
                return "ok"

            worker = await Worker(behave).register(ws, "test.q.jobinfo")
            jid, _ = await push(p, "jobinfo", args=[1], kwargs={"to": "x"}, result_topic=topic)
            await inbox.wait_for(lambda e: e.kwargs.get("job") == jid, "result event", timeout=4)
            seen = [(c.args, c.kwargs) for c in worker.calls]
            assert seen == [
                ([1], {"to": "x", "_job": {"id": jid, "queue": "jobinfo", "attempt": 1}}),
                ([1], {"to": "x", "_job": {"id": jid, "queue": "jobinfo", "attempt": 2}}),
            ], seen
        finally:
            await close_all(ws, p)

    run(main())
