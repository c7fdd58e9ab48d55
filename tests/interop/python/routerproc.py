"""Start / stop a Switchyard router process for the interop tests.

Used by conftest.py. Each router gets a generated TOML config on free loopback
ports (WebSocket, RawSocket TCP, RawSocket over a Unix socket) and writes its
stdout+stderr to a log file that the tests can inspect.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
LOG_DIR = Path(os.environ.get("SWITCHYARD_INTEROP_LOGDIR", HERE.parent / ".logs" / "python"))

DEFAULT_LIMITS = {
    "max_message_size": 1048576,
    "outbound_queue": 1024,
    "slow_consumer": "disconnect",
    "handshake_timeout": "10s",
    "ping_interval": "30s",
    "ping_timeout": "10s",
}

PANIC_RE = re.compile(r"panicked at|RUST_BACKTRACE|stack backtrace:", re.IGNORECASE)


def router_bin() -> str:
    return os.environ.get("SWITCHYARD_BIN", str(REPO / "target" / "debug" / "switchyard"))


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)) and not any(isinstance(x, dict) for x in v):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot encode {v!r} as TOML")


def _is_table_array(v) -> bool:
    return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(x, dict) for x in v)


def _toml_table(header: str, values: dict) -> str:
    """`header` and its `key = value` lines. Nested tables follow the plain keys:
    a dict value `k` becomes the sub-table ``[name.k]``, a non-empty list of dicts
    one ``[[name.k]]`` entry per dict (name: the header without brackets), so
    ``_toml_table("[[realm]]", {"name": "r", "history": [{"topic": "t"}]})``
    writes a realm with one ``[[realm.history]]`` entry."""
    name = header.strip("[]")
    lines = [header]
    nested = []
    for k, v in values.items():
        if isinstance(v, dict):
            nested.append(_toml_table(f"[{name}.{k}]", v))
        elif _is_table_array(v):
            nested.extend(_toml_table(f"[[{name}.{k}]]", x) for x in v)
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n" + "".join("\n" + t for t in nested)


def render_config(ws_port, rs_port, unix_path, *, realms=None, limits=None, log=None,
                  ws_path="/ws", ws_opts=None, rs_opts=None, bridges=None, cluster=None) -> str:
    """The router's TOML config. `realms`: a list of dicts, one ``[[realm]]`` each
    (default: realm1 with loose URI checks); a value that is a dict or a list of
    dicts is written as a nested table, e.g. ``{"name": "realm1", "history": [{"topic":
    "com.example.t", "limit": 5}]}`` gives ``[[realm.history]]`` entries.
    `limits` and `log` update the defaults. `ws_opts` / `rs_opts` add keys to the
    WebSocket / RawSocket-TCP listener, e.g. ``{"tls": {"cert": ..., "key": ...},
    "allowed_origins": [...]}`` (a dict value becomes the ``[listener.tls]`` table)."""
    log_cfg = {"format": "text", "level": "info"}
    log_cfg.update(log or {})
    lim = dict(DEFAULT_LIMITS)
    lim.update(limits or {})
    if realms is None:
        realms = [{"name": "realm1", "uri_check": "loose"}]
    parts = [
        _toml_table("[log]", log_cfg),
        _toml_table("[[listener]]", {"type": "websocket", "address": f"127.0.0.1:{ws_port}", "path": ws_path,
                                     **(ws_opts or {})}),
        _toml_table("[[listener]]", {"type": "rawsocket", "address": f"127.0.0.1:{rs_port}", **(rs_opts or {})}),
        _toml_table("[[listener]]", {"type": "rawsocket", "unix": str(unix_path)}),
    ]
    for r in realms:
        parts.append(_toml_table("[[realm]]", r))
    for b in bridges or []:
        parts.append(_toml_table("[[bridge]]", b))
    if cluster is not None:
        parts.append(_toml_table("[cluster]", cluster))
    parts.append(_toml_table("[limits]", lim))
    return "\n".join(parts)


@dataclass
class Router:
    name: str
    proc: subprocess.Popen
    config_path: Path
    log_path: Path
    ws_port: int
    rs_port: int
    unix_path: str
    workdir: str
    host: str = "127.0.0.1"
    ws_path: str = "/ws"
    stopped: bool = field(default=False)
    # "wss" when the WebSocket listener has a `tls` table (ws_opts)
    ws_scheme: str = "ws"

    @property
    def ws_url(self) -> str:
        return f"{self.ws_scheme}://{self.host}:{self.ws_port}{self.ws_path}"

    @property
    def rs_host(self) -> str:
        return self.host

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=80) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def wait_log(self, pattern: str, timeout: float = 5.0, flags=re.IGNORECASE) -> list[str]:
        """Wait until a router log line matches `pattern` (regex); returns matching lines."""
        rx = re.compile(pattern, flags)
        deadline = time.monotonic() + timeout
        while True:
            # skip the "# ..." header (config dump) that start_router writes first
            lines = [l for l in self.log_text().splitlines() if not l.startswith("# ") and rx.search(l)]
            if lines or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def panic_lines(self) -> list[str]:
        return [l for l in self.log_text().splitlines() if not l.startswith("# ") and PANIC_RE.search(l)]

    def terminate(self, timeout: float = 5.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit. Returns the exit code
        (None if it had to be killed)."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
                self.stopped = True
                return None
        self.stopped = True
        return self.proc.returncode

    def cleanup(self):
        shutil.rmtree(self.workdir, ignore_errors=True)


def _can_connect_tcp(port) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _can_connect_unix(path) -> bool:
    if not os.path.exists(path):
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.2)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def start_router(name: str, *, realms=None, limits=None, log=None, ready_timeout=10.0,
                 ws_opts=None, rs_opts=None, bridges=None, cluster=None) -> Router:
    """Start the router with a generated config (see render_config: realms may
    carry nested tables such as ``history``, ws_opts/rs_opts add listener keys
    such as ``tls``); wait until all listeners accept."""
    binary = router_bin()
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"router binary not found / not executable: {binary} (set SWITCHYARD_BIN)")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[-150:]
    log_path = LOG_DIR / f"{safe}.log"
    # short path: AF_UNIX paths are limited to ~107 bytes
    workdir = tempfile.mkdtemp(prefix="sy-")
    unix_path = os.path.join(workdir, "rs.sock")
    ws_port, rs_port = free_port(), free_port()
    while rs_port == ws_port:
        rs_port = free_port()
    cfg = render_config(ws_port, rs_port, unix_path, realms=realms, limits=limits, log=log,
                        ws_opts=ws_opts, rs_opts=rs_opts, bridges=bridges, cluster=cluster)
    config_path = Path(workdir) / "switchyard.toml"
    config_path.write_text(cfg)
    logf = open(log_path, "wb")
    logf.write(f"# switchyard interop: {name}\n# config {config_path}:\n".encode())
    logf.write(("".join("#   " + l + "\n" for l in cfg.splitlines())).encode())
    logf.flush()
    proc = subprocess.Popen([binary, "--config", str(config_path)], stdout=logf, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=workdir)
    logf.close()
    r = Router(name=name, proc=proc, config_path=config_path, log_path=log_path, ws_port=ws_port,
               rs_port=rs_port, unix_path=unix_path, workdir=workdir,
               ws_scheme="wss" if (ws_opts or {}).get("tls") else "ws")
    deadline = time.monotonic() + ready_timeout
    pending = {"websocket": lambda: _can_connect_tcp(ws_port),
               "rawsocket-tcp": lambda: _can_connect_tcp(rs_port),
               "rawsocket-unix": lambda: _can_connect_unix(unix_path)}
    while pending:
        if proc.poll() is not None:
            r.cleanup()
            raise RuntimeError(f"router exited early with code {proc.returncode}; log {log_path}:\n{r.log_tail()}")
        for k in list(pending):
            if pending[k]():
                del pending[k]
        if not pending:
            break
        if time.monotonic() > deadline:
            r.terminate()
            r.cleanup()
            raise RuntimeError(f"router listeners {sorted(pending)} not ready within {ready_timeout}s; "
                               f"log {log_path}:\n{r.log_tail()}")
        time.sleep(0.05)
    return r


def nats_server_bin() -> str:
    """$NATS_SERVER, else nats-server on the PATH, else Debian's /usr/sbin/nats-server
    (scripts/install-nats.sh installs it)."""
    return os.environ.get("NATS_SERVER") or shutil.which("nats-server") or "/usr/sbin/nats-server"


@dataclass
class NatsServer:
    """A nats-server of one test module, for the cluster variants."""
    proc: subprocess.Popen
    port: int
    store: str = ""

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)
        if self.store:
            shutil.rmtree(self.store, ignore_errors=True)


def start_nats(ready_timeout=10.0) -> NatsServer:
    """A nats-server with JetStream (cluster mode keeps its sessions and retained events in
    NATS KV buckets) and a temporary store."""
    port = free_port()
    store = tempfile.mkdtemp(prefix="switchyard-nats-")
    proc = subprocess.Popen([nats_server_bin(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + ready_timeout
    while not _can_connect_tcp(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            shutil.rmtree(store, ignore_errors=True)
            raise RuntimeError(f"nats-server ({nats_server_bin()}) did not start "
                               "(scripts/install-nats.sh installs it)")
        time.sleep(0.05)
    return NatsServer(proc=proc, port=port, store=store)


def start_cluster(name: str, nodes: int, queues=None, **router_kw) -> tuple[NatsServer, list[Router]]:
    """A nats-server and `nodes` routers joined by it (node names n1, n2, ...); `queues`: their
    ``[cluster.queues]`` table, if any (JetStream is on then)."""
    nats = start_nats()
    routers = []
    try:
        for i in range(nodes):
            cluster = {"node": f"n{i + 1}", "nats": [nats.url], "subject_prefix": "interop"}
            if queues is not None:
                cluster["queues"] = queues
            routers.append(start_router(f"{name}-n{i + 1}", cluster=cluster, **router_kw))
    except BaseException:
        for r in routers:
            r.terminate()
            r.cleanup()
        nats.stop()
        raise
    return nats, routers
