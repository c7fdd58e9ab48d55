"""Retry policies of the durable queues (docs/QUEUES.md, crates/queue/README.md), with
an Autobahn|Python worker that fails on purpose and measures the spacing of the
attempts it gets: from the moment it raised the ERROR to the next INVOCATION.

none, once, fixed, exponential (growth and cap), max_attempts capping a policy, an
exponential policy's own max_attempts, per-job overrides (retry, max_attempts) and a
job that succeeds on a retry. Every dead job's reason, attempts and last error are
checked through the result topic, switchyard.queue.job and switchyard.queue.stats.

Tolerances: a gap may not be shorter than its delay (minus clock rounding) and may be
late by scheduling noise on a loaded 2-core machine (LATE_S).
"""

import asyncio

import pytest
from autobahn.wamp.exception import ApplicationError

from conftest import queue_router
from queuelib import Worker, gaps, job, push, stats
from wamplib import close_all, connect, run, subscribe, unique_uri

# how late an attempt may come (scheduling noise of a debug build on a busy 2-core box)
LATE_S = 0.3
# how long to watch for an attempt that must not come (longer than every spacing here)
AFTER_S = 0.6

FLAKY = "com.example.flaky"

QUEUES = [
    {"name": "p-none", "target": "test.qp.none", "retry": {"kind": "none"}},
    {"name": "p-once", "target": "test.qp.once", "retry": {"kind": "once", "delay": "300ms"}},
    {"name": "p-fixed", "target": "test.qp.fixed", "retry": {"kind": "fixed", "times": 3, "spacing": "200ms"}},
    {"name": "p-exp", "target": "test.qp.exp", "max_attempts": 5,
     "retry": {"kind": "exponential", "initial": "100ms", "factor": 2.0, "cap": "400ms", "jitter": 0.0}},
    {"name": "p-exp-own", "target": "test.qp.expown",
     "retry": {"kind": "exponential", "initial": "100ms", "factor": 1.0, "cap": "100ms", "jitter": 0.0,
               "max_attempts": 3}},
    {"name": "p-capped", "target": "test.qp.capped", "max_attempts": 3,
     "retry": {"kind": "fixed", "times": 10, "spacing": "100ms"}},
    {"name": "p-override", "target": "test.qp.override", "retry": "none"},
    {"name": "p-recover", "target": "test.qp.recover", "retry": {"kind": "fixed", "times": 3, "spacing": "100ms"}},
]


@pytest.fixture(scope="module", params=["one-node", "jetstream-cluster"])
def prouter(request, module_router_factory):
    yield from queue_router(request, module_router_factory,
                            realms=[{"name": "realm1", "uri_check": "loose", "queue": QUEUES}])


def always_fail(c):
    raise ApplicationError(FLAKY, f"attempt {c.n} of {c.args[0]}")


def check_gaps(measured, nominal):
    """Each measured gap is at least its nominal delay (1 ms rounding) and at most LATE_S late."""
    assert len(measured) == len(nominal), f"gaps {measured}, expected {nominal}"
    for i, (g, d) in enumerate(zip(measured, nominal)):
        assert d - 0.002 <= g <= d + LATE_S, f"gap {i + 1}: {g:.3f}s, expected {d}s (+{LATE_S}); all: {measured}"


async def run_to_death(router, queue, procedure, *, tag="job", behave=always_fail, timeout=6.0, **push_kw):
    """Push one job to `queue` whose worker (on `procedure`) fails every attempt; wait for
    its dead result event and AFTER_S more. Returns (worker calls, event kwargs, job, stats delta)."""
    ws, p = await connect(router, "rs", "msgpack"), await connect(router)
    try:
        topic = unique_uri("test.qp.results")
        inbox, _ = await subscribe(p, topic)
        worker = await Worker(behave).register(ws, procedure)
        before = await stats(p, queue)
        jid, _ = await push(p, queue, args=[tag], result_topic=topic, **push_kw)
        ev = await inbox.wait_for(lambda e: e.kwargs.get("job") == jid, "the dead event", timeout=timeout)
        await asyncio.sleep(AFTER_S)
        info = await job(p, jid)
        after = await stats(p, queue)
        delta = {k: after[k] - before[k] for k in ("retried_total", "dead_lettered_total", "completed_total", "dead")}
        assert len(inbox.events) == 1, f"one result event per job: {inbox.events!r}"
        return worker.calls, ev.kwargs, info, delta
    finally:
        await close_all(ws, p)


def check_dead(calls, ev, info, delta, *, attempts, reason, tag="job"):
    assert [c.args for c in calls] == [[tag]] * attempts, f"expected {attempts} attempts: {calls!r}"
    want_msg = f"attempt {attempts} of {tag}"
    assert ev == {"job": info["job"]["id"], "queue": info["job"]["queue"], "status": "dead", "attempt": attempts,
                  "error": FLAKY, "message": want_msg, "reason": reason}, ev
    s = info["status"]
    assert (s["state"], s["reason"], s["attempts"]) == ("dead", reason, attempts), info
    assert (s["last_error"]["uri"], s["last_error"]["message"]) == (FLAKY, want_msg), info
    assert delta == {"retried_total": attempts - 1, "dead_lettered_total": 1, "completed_total": 0, "dead": 1}, delta


def test_none_dead_letters_on_the_first_failure(prouter):
    calls, ev, info, delta = run(run_to_death(prouter, "p-none", "test.qp.none"))
    check_dead(calls, ev, info, delta, attempts=1, reason="policy_exhausted")


def test_once_retries_once_after_its_delay(prouter):
    calls, ev, info, delta = run(run_to_death(prouter, "p-once", "test.qp.once"))
    check_dead(calls, ev, info, delta, attempts=2, reason="policy_exhausted")
    check_gaps(gaps(calls), [0.3])


def test_fixed_retries_times_with_spacing(prouter):
    calls, ev, info, delta = run(run_to_death(prouter, "p-fixed", "test.qp.fixed"))
    check_dead(calls, ev, info, delta, attempts=4, reason="policy_exhausted")
    check_gaps(gaps(calls), [0.2, 0.2, 0.2])


def test_exponential_grows_and_is_capped(prouter):
    """initial 100ms, factor 2, cap 400ms, jitter 0, queue max_attempts 5: gaps 0.1,
    0.2, 0.4, 0.4 (capped; 0.8 without the cap), then attempts_exhausted."""
    calls, ev, info, delta = run(run_to_death(prouter, "p-exp", "test.qp.exp"))
    check_dead(calls, ev, info, delta, attempts=5, reason="attempts_exhausted")
    measured = gaps(calls)
    check_gaps(measured, [0.1, 0.2, 0.4, 0.4])
    assert measured[3] < 0.8 - 0.05, f"the cap (400ms) must bound the 4th delay (0.8s without it): {measured}"


def test_exponential_own_max_attempts(prouter):
    """An exponential policy's own max_attempts (3) ends it: policy_exhausted."""
    calls, ev, info, delta = run(run_to_death(prouter, "p-exp-own", "test.qp.expown"))
    check_dead(calls, ev, info, delta, attempts=3, reason="policy_exhausted")
    check_gaps(gaps(calls), [0.1, 0.1])


def test_max_attempts_caps_the_policy(prouter):
    """fixed 10 times, but the queue's max_attempts is 3: attempts_exhausted after 3."""
    calls, ev, info, delta = run(run_to_death(prouter, "p-capped", "test.qp.capped"))
    check_dead(calls, ev, info, delta, attempts=3, reason="attempts_exhausted")
    check_gaps(gaps(calls), [0.1, 0.1])


def test_per_job_retry_overrides_the_queue_policy(prouter):
    """The queue's policy is none; a job pushed with retry = fixed 2 × 150ms is tried 3
    times with that spacing; the job's max_attempts caps its own policy; an
    exponential per-job policy applies its own max_attempts."""
    calls, ev, info, delta = run(run_to_death(prouter, "p-override", "test.qp.override", tag="fixed",
                                              retry={"kind": "fixed", "times": 2, "spacing": "150ms"}))
    check_dead(calls, ev, info, delta, attempts=3, reason="policy_exhausted", tag="fixed")
    check_gaps(gaps(calls), [0.15, 0.15])
    assert info["job"]["retry"] == {"kind": "fixed", "times": 2, "spacing": "150ms"}, info["job"]

    calls, ev, info, delta = run(run_to_death(prouter, "p-override", "test.qp.override", tag="capped",
                                              retry={"kind": "fixed", "times": 5, "spacing": "100ms"},
                                              max_attempts=2))
    check_dead(calls, ev, info, delta, attempts=2, reason="attempts_exhausted", tag="capped")
    assert info["job"]["max_attempts"] == 2, info["job"]

    calls, ev, info, delta = run(run_to_death(
        prouter, "p-override", "test.qp.override", tag="exp",
        retry={"kind": "exponential", "initial": "100ms", "factor": 3, "cap": "1s", "jitter": 0, "max_attempts": 3}))
    check_dead(calls, ev, info, delta, attempts=3, reason="policy_exhausted", tag="exp")
    check_gaps(gaps(calls), [0.1, 0.3])


def test_per_job_none_on_a_retrying_queue(prouter):
    """retry = "none" (the short form) on a job of a queue that retries 3 times."""
    calls, ev, info, delta = run(run_to_death(prouter, "p-recover", "test.qp.recover", tag="once-only",
                                              retry="none"))
    check_dead(calls, ev, info, delta, attempts=1, reason="policy_exhausted", tag="once-only")


def test_job_succeeds_on_a_retry(prouter):
    """Two failures, then a YIELD: the job completes as attempt 3 (result event and
    stats: 2 retries, 1 completion, nothing dead), spaced by the policy."""
    async def main():
        ws, p = await connect(prouter, "rs", "msgpack"), await connect(prouter)
        try:
            topic = unique_uri("test.qp.results")
            inbox, _ = await subscribe(p, topic)

            def behave(c):
                if c.n < 3:
                    always_fail(c)
                return f"ok on {c.n}"

            worker = await Worker(behave).register(ws, "test.qp.recover")
            before = await stats(p, "p-recover")
            jid, _ = await push(p, "p-recover", args=["recover"], result_topic=topic)
            ev = await inbox.wait_for(lambda e: e.kwargs.get("job") == jid, "the result event")
            assert ev.kwargs == {"job": jid, "queue": "p-recover", "status": "completed", "attempt": 3,
                                 "args": ["ok on 3"], "kwargs": {}}, ev.kwargs
            await asyncio.sleep(AFTER_S)
            assert len(worker.calls) == 3, worker.calls
            check_gaps(gaps(worker.calls), [0.1, 0.1])
            after = await stats(p, "p-recover")
            delta = {k: after[k] - before[k] for k in ("retried_total", "completed_total", "dead_lettered_total")}
            assert delta == {"retried_total": 2, "completed_total": 1, "dead_lettered_total": 0}, delta
        finally:
            await close_all(ws, p)

    run(main())
