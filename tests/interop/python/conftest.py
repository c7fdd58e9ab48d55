"""pytest fixtures for the Switchyard interop suite.

Fixtures
--------
router          one router per test module, default config (realm1, loose URIs).
router_factory  callable ``router_factory(realms=..., limits=..., log=..., ws_opts=...,
                rs_opts=...)`` that
                starts a router with extra config for one test; torn down after
                the test. A realm dict may carry nested tables, e.g.
                ``dict(name="realm1", history=[{"topic": ...}, ...])`` for
                ``[[realm.history]]`` entries (see routerproc.render_config).
module_router_factory  the same, shared by a module (for module-scoped fixtures).
queue_router    helper of the queue suites' module fixtures (``qrouter``, ``prouter``),
                parametrized ``one-node`` / ``jetstream-cluster``: the queue tests run on
                one router and on a node of a three-node cluster with JetStream queues.
rpc_nodes       (n0, n1, n2), per module, parametrized: ``one-node`` (the module's
                ``router`` three times) and ``three-nodes`` (three cluster nodes over a
                nats-server: RPC across nodes, docs/CLUSTER.md). Tests spread their callees
                and callers over the three (the callee on n0 and the caller on n1 where
                there are two). Tests that use it wait for a registration to be known on
                the caller's node (``wamplib.registered``; ``wamplib.callees_known`` for a
                shared registration's callees) before calling.
pubsub_nodes    (n0, n1, n2), per module, parametrized: ``one-node`` (the module's
                ``router`` three times) and ``three-nodes`` (three cluster nodes over a
                nats-server with JetStream): PubSub with its sessions spread over the
                nodes. Sessions whose subscription ids are compared must share a node
                (ids are per node); a test that reads a retained event on another node
                than the publisher's first waits for it (``wamplib.retained_everywhere``).

Both yield ``routerproc.Router`` objects: ``ws_url``, ``rs_host``/``rs_port``,
``unix_path``, ``log_path`` (stdout+stderr of the router, one file per test or
module under tests/interop/.logs/python/), ``proc`` (the Popen).

Teardown sends SIGTERM, waits, and fails the test loudly if the router printed
a panic or did not exit.
"""

from __future__ import annotations

import time

import pytest

from routerproc import Router, start_cluster, start_router


def stop_and_check(r: Router):
    rc = r.terminate(timeout=5.0)
    panics = r.panic_lines()
    r.cleanup()
    problems = []
    if panics:
        problems.append("router PANICKED:\n  " + "\n  ".join(panics[:20]))
    if rc is None:
        problems.append("router did not exit within 5 s after SIGTERM (killed)")
    if problems:
        pytest.fail(f"[{r.name}] " + "\n".join(problems) + f"\n--- log {r.log_path} (tail) ---\n{r.log_tail(60)}",
                    pytrace=False)


@pytest.fixture(scope="module")
def router(request):
    r = start_router(request.module.__name__)
    yield r
    stop_and_check(r)


@pytest.fixture(scope="module", params=["one-node", "three-nodes"])
def rpc_nodes(request):
    """(n0, n1, n2): the module's router three times, or three cluster nodes."""
    if request.param == "one-node":
        r = request.getfixturevalue("router")
        yield r, r, r
        return
    nats, routers = start_cluster(f"{request.module.__name__}-cluster", 3)
    try:
        yield tuple(routers)
    finally:
        _stop_cluster(nats, routers)


@pytest.fixture(scope="module", params=["one-node", "three-nodes"])
def pubsub_nodes(request):
    """(n0, n1, n2): the module's router three times, or three cluster nodes."""
    if request.param == "one-node":
        r = request.getfixturevalue("router")
        yield r, r, r
        return
    nats, routers = start_cluster(f"{request.module.__name__}-pubsub", 3)
    try:
        yield tuple(routers)
    finally:
        _stop_cluster(nats, routers)


def _stop_cluster(nats, routers):
    errors = []
    for r in routers:
        try:
            stop_and_check(r)
        except BaseException as e:
            errors.append(str(e))
    nats.stop()
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


def queue_router(request, module_router_factory, **router_kw):
    """For a module fixture parametrized ``["one-node", "jetstream-cluster"]``: yields one
    router, or the third node of a three-node cluster whose queues live in JetStream
    (``[cluster.queues] store = "jetstream"``, docs/CLUSTER.md), marked
    ``jetstream_cluster``. The first node takes the queues, so every queue call on the third
    is forwarded to it and every job dispatched from it to a worker on the third."""
    if request.param == "one-node":
        yield module_router_factory(**router_kw)
        return
    nats, routers = start_cluster(f"{request.module.__name__}-js", 3,
                                  queues={"store": "jetstream", "lease": "1s"}, **router_kw)
    routers[-1].jetstream_cluster = True
    routers[-1].cluster_routers = routers  # every node (their /metrics: the owner's figures)
    try:
        # one node serves the queues (it logs so once its log is replayed)
        deadline = time.monotonic() + 15
        while not any("queues recovered from the log; dispatching" in r.log_path.read_text(errors="replace")
                      for r in routers):
            assert time.monotonic() < deadline, "no node serves the queues"
            time.sleep(0.05)
        yield routers[-1]
    finally:
        _stop_cluster(nats, routers)


class RouterFactory:
    def __init__(self, name):
        self.name = name
        self.routers: list[Router] = []

    def __call__(self, *, realms=None, limits=None, log=None, ws_opts=None, rs_opts=None,
                 bridges=None) -> Router:
        """Start a router; `realms` etc. as routerproc.render_config takes them."""
        n = f"{self.name}-{len(self.routers)}" if self.routers else self.name
        r = start_router(n, realms=realms, limits=limits, log=log, ws_opts=ws_opts, rs_opts=rs_opts,
                         bridges=bridges)
        self.routers.append(r)
        return r


def _finish_factory(f: RouterFactory):
    errors = []
    for r in f.routers:
        try:
            stop_and_check(r)
        except BaseException as e:  # collect, then fail once
            errors.append(str(e))
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.fixture
def router_factory(request):
    """Start routers with special config for one test."""
    f = RouterFactory(request.node.nodeid.split("::", 1)[-1])
    yield f
    _finish_factory(f)


@pytest.fixture(scope="module")
def module_router_factory(request):
    """Start routers with special config shared by the tests of one module."""
    f = RouterFactory(request.module.__name__)
    yield f
    _finish_factory(f)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the tail of the router log(s) to failing tests."""
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    routers = []
    for v in getattr(item, "funcargs", {}).values():
        if isinstance(v, Router):
            routers.append(v)
        elif isinstance(v, RouterFactory):
            routers.extend(v.routers)
    for r in routers:
        rep.sections.append((f"router log {r.log_path} (tail)", r.log_tail(40)))
