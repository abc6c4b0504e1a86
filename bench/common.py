"""Shared machinery for the benchmarks: a throw-away PostgreSQL database, a real `ledger serve`
subprocess, realistic OpenLineage events, a cheap keep-alive HTTP load client, latency statistics,
CPU and RSS accounting, and the JSON results file.

Nothing here asserts: the benchmarks print figures. Everything that is started is stopped, and every
database that is created is dropped, also when a run is interrupted (use the context managers).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- PostgreSQL -----------------------------------------------------------------------------------


def _admin_exec(sql: str) -> None:
    import psycopg

    conninfo = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as c:
        c.execute(sql)


def pg_url(dbname: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{dbname}"


@contextmanager
def pg_database(prefix: str = "bench") -> Iterator[str]:
    """A fresh, empty PostgreSQL database (dropped afterwards); yields its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _admin_exec(f'CREATE DATABASE "{name}"')
    log(f"created database {name}")
    try:
        yield pg_url(name)
    finally:
        _admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        log(f"dropped database {name}")


@contextmanager
def in_process_runtime(prefix: str = "bench") -> Iterator[Any]:
    """The ledger's services wired in this process on a fresh PostgreSQL database (no HTTP)."""
    from ledger.config import Settings
    from ledger.runtime import build_runtime, initialise

    with pg_database(prefix) as url:
        settings = Settings.from_env(
            {
                "LEDGER_DATA_DIR": tempfile.mkdtemp(),
                "LEDGER_DATABASE_URL": url,
                "LEDGER_POLICY_DIR": str(REPO / "policies"),
            }
        )
        initialise(settings)
        rt = build_runtime(settings)
        try:
            yield rt
        finally:
            rt.close()


def pg_backend_pids(dbname: str) -> list[int]:
    import psycopg

    conninfo = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as c:
        rows = c.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,)
        ).fetchall()
    return [int(r[0]) for r in rows]


def pg_table_sizes(url: str) -> dict[str, int]:
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as c:
        rows = c.execute(
            "SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relname IN "
            "('log_entries','entry_payloads','tree_nodes')"
        ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


# --- processes: CPU and memory from /proc ---------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(parts[11]) + int(parts[12])) / CLK_TCK


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) from /proc/<pid>/status, and Pss (shared pages divided among the
    processes sharing them) from /proc/<pid>/smaps_rollup, in kB."""
    out: dict[str, int] = {}
    for path, keys in ((f"/proc/{pid}/status", ("VmRSS:", "VmHWM:")), (f"/proc/{pid}/smaps_rollup", ("Pss:",))):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(keys):
                        key, value = line.split(":", 1)
                        out[key] = int(value.split()[0])
        except OSError:
            pass
    return out


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return float(sum(vals) - idle), float(sum(vals))


class CpuMeter:
    """CPU used by this process (the load client), the server processes, our database's PostgreSQL
    backends, and the whole machine, over an interval; figures are in cores (1.0 = one core busy)."""

    def __init__(self, server: Server | None = None, dbname: str | None = None) -> None:
        self.server = server
        self.dbname = dbname

    def _sample(self) -> dict[str, Any]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        s: dict[str, Any] = {"t": time.perf_counter(), "client": ru.ru_utime + ru.ru_stime}
        if self.server is not None:
            pids = self.server.pids()
            server = [pids["master"], *pids["workers"], *pids["applier"]]
            s["server"] = {p: proc_cpu_seconds(p) for p in server}
            s["scheduler"] = {p: proc_cpu_seconds(p) for p in pids["scheduler"]}
        if self.dbname:
            s["pg"] = {p: proc_cpu_seconds(p) for p in pg_backend_pids(self.dbname)}
        s["machine"] = machine_busy()
        return s

    def __enter__(self) -> CpuMeter:
        self.start = self._sample()
        return self

    def __exit__(self, *exc: object) -> None:
        self.end = self._sample()

    def report(self) -> dict[str, float]:
        a, b = self.start, self.end
        wall = b["t"] - a["t"]

        def delta(key: str) -> float:
            if key not in a:
                return 0.0
            # Processes that appeared during the interval count from zero.
            return sum(v - a[key].get(p, 0.0) for p, v in b[key].items())

        busy = (b["machine"][0] - a["machine"][0]) / max(1.0, b["machine"][1] - a["machine"][1])
        out = {
            "wall_s": round(wall, 3),
            "client_cores": round((b["client"] - a["client"]) / wall, 3),
            "machine_busy_cores": round(busy * (os.cpu_count() or 1), 3),
        }
        if "server" in a:
            out["server_cores"] = round(delta("server") / wall, 3)
            out["scheduler_cores"] = round(delta("scheduler") / wall, 3)
        if "pg" in a:
            out["postgres_backend_cores"] = round(delta("pg") / wall, 3)
        return out


# --- the server -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A `ledger serve --workers N` subprocess on loopback with its own data dir and database."""

    database_url: str
    workers: int = 2
    threads: int | None = None
    port: int = field(default_factory=free_port)
    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ledger-bench-")))
    proc: subprocess.Popen[bytes] | None = None
    admin_token: str = ""
    token: str = ""  # a pipeline principal's token
    vkey: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. MALLOC_ARENA_MAX for an experiment

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def dbname(self) -> str:
        """The PostgreSQL database's name ("" on SQLite: no backends to account for)."""
        return "" if self.is_sqlite else self.database_url.rsplit("/", 1)[1]

    @property
    def env(self) -> dict[str, str]:
        e = dict(os.environ)
        e.update(
            {
                "LEDGER_DATA_DIR": str(self.data_dir),
                "LEDGER_DATABASE_URL": self.database_url,
                "PYTHONUNBUFFERED": "1",
            }
        )
        # In an editable install `ledger._policies` is not a directory under ledger/ (setuptools maps
        # it from the repository's policies/), so the default policy dir does not exist: name it.
        if (REPO / "policies").is_dir():
            e.setdefault("LEDGER_POLICY_DIR", str(REPO / "policies"))
        e.update(self.extra_env)
        return e

    def command(self) -> list[str]:
        cmd = [
            str(Path(sys.executable).parent / "ledger"),
            "serve",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        if self.threads is not None:
            cmd += ["--threads", str(self.threads)]
        return cmd

    def cli(self, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(Path(sys.executable).parent / "ledger"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=timeout,
        )

    def start(self) -> None:
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.command(), env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log_path.read_text()}")
            try:
                status, _ = HttpConnection("127.0.0.1", self.port).request("GET", "/healthz")
                if status == 200 and len(self.pids()["workers"]) >= self.workers:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{self.log_path.read_text()}")
            time.sleep(0.2)
        for line in self.log_path.read_text().splitlines():
            if line.startswith("admin token: "):
                self.admin_token = line.split(": ", 1)[1].strip()
        self.token = (
            self.cli("principals", "add", f"bench-{secrets.token_hex(3)}", "--role", "pipeline")
            .stdout.strip()
            .splitlines()[-1]
        )
        self.vkey = self.cli("keys", "verifier").stdout.strip()
        log(f"server up at {self.url} (pid {self.proc.pid}, workers {self.pids()['workers']})")

    def pids(self) -> dict[str, Any]:
        assert self.proc is not None
        master = self.proc.pid
        kids = children(master)
        sched = [p for p in kids if "ledger.jobs" in cmdline(p)]
        applier = [p for p in kids if "ledger.applier" in cmdline(p)]
        workers = [p for p in kids if p not in sched and p not in applier]
        return {"master": master, "workers": workers, "applier": applier, "scheduler": sched}

    def memory(self) -> dict[str, Any]:
        """VmRSS (and peak VmHWM) of the server (granian) master, each worker and the applier, and
        their sum, in MB."""
        pids = self.pids()

        def mb(pid: int) -> dict[str, float]:
            st = proc_status(pid)
            return {
                "rss_mb": round(st.get("VmRSS", 0) / 1024, 1),
                "peak_mb": round(st.get("VmHWM", 0) / 1024, 1),
                "pss_mb": round(st.get("Pss", 0) / 1024, 1),
            }

        master = mb(pids["master"])
        workers = [mb(p) for p in pids["workers"]]
        applier = [mb(p) for p in pids["applier"]]
        sched = [mb(p) for p in pids["scheduler"]]
        serving = [*workers, *applier]
        total = master["rss_mb"] + sum(w["rss_mb"] for w in serving)
        return {
            "master": master,
            "workers": workers,
            "applier": applier,
            "server_total_rss_mb": round(total, 1),
            "server_total_pss_mb": round(master["pss_mb"] + sum(w["pss_mb"] for w in serving), 1),
            "scheduler": sched,
            "total_with_scheduler_rss_mb": round(total + sum(s["rss_mb"] for s in sched), 1),
        }

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if getattr(self, "_log", None) is not None:
            self._log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if getattr(self, "log_path", None) is not None:
            self.log_path.unlink(missing_ok=True)


@contextmanager
def running_server(
    database_url: str | None = None,
    *,
    workers: int = 2,
    env: dict[str, str] | None = None,
    sqlite: bool = False,
    threads: int | None = None,
) -> Iterator[Server]:
    """A server on a fresh PostgreSQL database (or on `database_url`, or with `sqlite` on a fresh
    SQLite file in its data dir); stopped and dropped after. `env` adds environment variables for
    the server (and the `ledger` commands run against it)."""
    if sqlite:
        data_dir = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
        srv = Server(
            database_url=f"sqlite:///{data_dir / 'ledger.db'}",
            workers=workers,
            threads=threads,
            data_dir=data_dir,
            extra_env=dict(env or {}),
        )
        try:
            srv.start()
            yield srv
        finally:
            srv.stop()
        return
    if database_url is None:
        with pg_database() as url, running_server(url, workers=workers, env=env, threads=threads) as srv:
            yield srv
        return
    srv = Server(database_url=database_url, workers=workers, threads=threads, extra_env=dict(env or {}))
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


# --- events ---------------------------------------------------------------------------------------

PRODUCER = "https://github.com/OpenLineage/OpenLineage/tree/1.24.0/integration/airflow"
SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
FACET = "https://openlineage.io/spec/facets/1-0-0/Facet.json"


def run_event(i: int, run_id: str | None = None) -> dict[str, Any]:
    """A realistic Airflow-style COMPLETE RunEvent, ~1.2 KB as compact JSON: two inputs (one with a
    schema facet), one output with an output-statistics facet, and a job source-code facet; every
    facet carries its `_producer` and `_schemaURL`, as real integrations send them."""
    return {
        "eventType": "COMPLETE",
        "eventTime": f"2026-11-21T10:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
        "producer": PRODUCER,
        "schemaURL": f"{SCHEMA}#/$defs/RunEvent",
        "run": {
            "runId": run_id or str(uuid.uuid4()),
            "facets": {},
        },
        "job": {
            "namespace": "airflow",
            "name": f"daily_churn.transform_{i % 50}",
            "facets": {
                "sourceCodeLocation": {
                    "_producer": PRODUCER,
                    "_schemaURL": FACET,
                    "type": "git",
                    "url": "https://git.example.com/data/churn",
                    "version": "4f2a9c1d",
                }
            },
        },
        "inputs": [
            {
                "namespace": "postgres://warehouse:5432",
                "name": f"raw.customers_{i % 20}",
                "facets": {
                    "schema": {
                        "_producer": PRODUCER,
                        "_schemaURL": FACET,
                        "fields": [{"name": "customer_id", "type": "BIGINT"}, {"name": "email", "type": "TEXT"}],
                    }
                },
            },
            {"namespace": "s3://lake", "name": f"raw/events/day={i % 28 + 1}", "facets": {}},
        ],
        "outputs": [
            {
                "namespace": "s3://lake",
                "name": f"features/churn_{i % 20}",
                "outputFacets": {
                    "outputStatistics": {"_producer": PRODUCER, "_schemaURL": FACET, "rowCount": 1000, "size": 65536}
                },
            },
        ],
    }


class EventFactory:
    """Serialised RunEvents with unique runIds, made cheaply (a template and a string substitution)
    so that building bodies costs the load client little CPU."""

    PLACEHOLDER = "00000000-0000-4000-8000-000000000000"

    def __init__(self, variants: int = 64) -> None:
        self.templates = [
            json.dumps(run_event(i, self.PLACEHOLDER), separators=(",", ":")).encode() for i in range(variants)
        ]
        self._n = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return sum(len(t) for t in self.templates) // len(self.templates)

    def one(self) -> bytes:
        with self._lock:
            self._n += 1
            n = self._n
        return self.templates[n % len(self.templates)].replace(self.PLACEHOLDER.encode(), str(uuid.uuid4()).encode())

    def batch(self, count: int) -> bytes:
        return b"[" + b",".join(self.one() for _ in range(count)) + b"]"


# --- a minimal keep-alive HTTP/1.1 client ---------------------------------------------------------


class HttpConnection:
    """One keep-alive connection, raw socket: much cheaper per request than http.client or requests
    (no header objects, no email parser), so the load client stays far from being the bottleneck."""

    def __init__(self, host: str, port: int, timeout: float = 120.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.sock: socket.socket | None = None
        self.buf = b""

    def _connect(self) -> socket.socket:
        s = socket.create_connection((self.host, self.port), timeout=self.timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.buf = s, b""
        return s

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def request(self, method: str, path: str, body: bytes = b"", headers: bytes = b"") -> tuple[int, bytes]:
        """Sends one request; returns (status, body). Reconnects once if the server closed an idle
        keep-alive connection before this request reached it."""
        head = (
            (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(body)}\r\n").encode()
            + headers
            + b"\r\n"
        )
        for attempt in (0, 1):
            sock = self.sock or self._connect()
            try:
                sock.sendall(head + body if len(body) < 65536 else head)
                if len(body) >= 65536:
                    sock.sendall(body)
                return self._response(sock)
            except (ConnectionError, _ClosedError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _fill(self, sock: socket.socket) -> None:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise _ClosedError
        self.buf += chunk

    def _response(self, sock: socket.socket) -> tuple[int, bytes]:
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._fill(sock)
        head, self.buf = self.buf[:end], self.buf[end + 4 :]
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, chunked, close = None, False, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            body = self._chunked(sock)
        elif length is not None:
            while len(self.buf) < length:
                self._fill(sock)
            body, self.buf = self.buf[:length], self.buf[length:]
        else:  # until close
            try:
                while True:
                    self._fill(sock)
            except _ClosedError:
                pass
            body, self.buf, close = self.buf, b"", True
        if close:
            self.close()
        return status, body

    def _chunked(self, sock: socket.socket) -> bytes:
        parts: list[bytes] = []
        while True:
            while (end := self.buf.find(b"\r\n")) < 0:
                self._fill(sock)
            size = int(self.buf[:end].split(b";")[0], 16)
            self.buf = self.buf[end + 2 :]
            while len(self.buf) < size + 2:
                self._fill(sock)
            parts.append(self.buf[:size])
            self.buf = self.buf[size + 2 :]
            if size == 0:
                return b"".join(parts)


class _ClosedError(Exception):
    pass


def auth_headers(token: str, json_body: bool = False) -> bytes:
    h = f"Authorization: Bearer {token}\r\n"
    if json_body:
        h += "Content-Type: application/json\r\n"
    return h.encode()


# --- load generation and statistics ---------------------------------------------------------------


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean of latencies in seconds, reported in milliseconds (nearest rank)."""
    if not samples:
        return {}
    s = sorted(samples)

    def pct(p: float) -> float:
        return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))] * 1000

    return {
        "p50_ms": round(pct(50), 3),
        "p90_ms": round(pct(90), 3),
        "p99_ms": round(pct(99), 3),
        "max_ms": round(s[-1] * 1000, 3),
        "mean_ms": round(sum(s) / len(s) * 1000, 3),
    }


@dataclass
class LoadResult:
    requests: int
    ok: int
    errors: dict[int, int]
    wall_s: float
    latencies: list[float]
    items: int  # events (or proofs) represented by the successful requests
    first_error: str = ""
    # (start, latency, status) of every request, start in perf_counter seconds: lets a benchmark
    # cut the run into windows (e.g. before, during and after an erasure).
    timeline: list[tuple[float, float, int]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "errors": {str(k): v for k, v in self.errors.items()},
            "first_error": self.first_error[:300],
            "wall_s": round(self.wall_s, 3),
            "requests_per_s": round(self.ok / self.wall_s, 1) if self.wall_s else 0.0,
            "items_per_s": round(self.items / self.wall_s, 1) if self.wall_s else 0.0,
            "latency": percentiles(self.latencies),
        }


def run_load(
    port: int,
    make_request: Callable[[int], tuple[str, str, bytes, bytes, int]],
    *,
    concurrency: int,
    duration: float | None = None,
    count: int | None = None,
    check: Callable[[int, bytes], int] | None = None,
    warmup: int = 0,
    timeline: bool = False,
    stop: threading.Event | None = None,
) -> LoadResult:
    """Runs `concurrency` threads, each with one keep-alive connection, until `duration` seconds have
    passed or `count` requests were sent in all. `make_request(i)` returns (method, path, headers,
    body, items); `check(status, body)` returns how many items succeeded (default: 2xx -> items).
    Each thread first sends `warmup` requests that are not counted (connections, worker caches).
    `timeline` keeps (start, latency, status) per request; `stop`, when set, ends the run early."""
    assert duration is not None or count is not None
    lock = threading.Lock()
    counter = [0]
    lat: list[list[float]] = [[] for _ in range(concurrency)]
    tl: list[list[tuple[float, float, int]]] = [[] for _ in range(concurrency)]
    ok = [0] * concurrency
    items = [0] * concurrency
    errors: dict[int, int] = {}
    first_error = [""]
    start_at = [0.0]
    stop_at = [0.0]

    def go() -> None:  # runs once, before any thread passes the barrier
        start_at[0] = time.perf_counter()
        stop_at[0] = start_at[0] + (duration or 0.0)

    barrier = threading.Barrier(concurrency + 1, action=go)

    def next_index() -> int | None:
        with lock:
            i = counter[0]
            if count is not None and i >= count:
                return None
            counter[0] = i + 1
            return i

    def worker(t: int) -> None:
        conn = HttpConnection("127.0.0.1", port)
        try:
            for w in range(warmup):
                method, path, headers, body, _ = make_request(-1 - w)
                conn.request(method, path, body, headers)
            barrier.wait()
            my_lat = lat[t]
            perf = time.perf_counter
            while True:
                if duration is not None and perf() >= stop_at[0]:
                    break
                if stop is not None and stop.is_set():
                    break
                i = next_index()
                if i is None:
                    break
                method, path, headers, body, n = make_request(i)
                t0 = perf()
                try:
                    status, resp = conn.request(method, path, body, headers)
                except OSError as e:
                    status, resp = 599, str(e).encode()
                dt = perf() - t0
                my_lat.append(dt)
                if timeline:
                    tl[t].append((t0, dt, status))
                good = check(status, resp) if check else (n if 200 <= status < 300 else 0)
                if good:
                    ok[t] += 1
                    items[t] += good
                else:
                    with lock:
                        errors[status] = errors.get(status, 0) + 1
                        if not first_error[0]:
                            first_error[0] = f"HTTP {status}: {resp[:300]!r}"
        except threading.BrokenBarrierError:
            pass
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(concurrency)]
    for th in threads:
        th.start()
    barrier.wait()
    for th in threads:
        th.join()
    wall = time.perf_counter() - start_at[0]
    all_lat = [x for part in lat for x in part]
    return LoadResult(
        requests=len(all_lat),
        ok=sum(ok),
        errors=errors,
        wall_s=wall,
        latencies=all_lat,
        items=sum(items),
        first_error=first_error[0],
        timeline=sorted(x for part in tl for x in part),
    )


def run_paced(
    port: int,
    make_request: Callable[[int], tuple[str, str, bytes, bytes, int]],
    *,
    rate: float,
    duration: float,
    concurrency: int = 16,
    on_response: Callable[[int, int, bytes, float], None] | None = None,
    stop: threading.Event | None = None,
) -> LoadResult:
    """Open-loop load at a fixed rate: request i is due at start + i / rate, and the next free
    connection (of `concurrency` keep-alive ones) sends it at that moment, or at once when late.
    Latency is from the moment the request was due (so a stalled server shows as waiting, not as
    fewer requests: no coordinated omission). `on_response(i, status, body, t_done)` is called after
    each response. Bounded: at most rate * duration requests, none sent past duration * 1.5 (or
    duration + 5 s) when the server falls behind (`requests` then falls short of rate * duration);
    `stop`, when set, ends it early."""
    total = int(rate * duration)
    lock = threading.Lock()
    counter = [0]
    lat: list[list[float]] = [[] for _ in range(concurrency)]
    tl: list[list[tuple[float, float, int]]] = [[] for _ in range(concurrency)]
    ok = [0] * concurrency
    items = [0] * concurrency
    errors: dict[int, int] = {}
    first_error = [""]
    start_at = [0.0]

    hard_stop = [0.0]

    def go() -> None:
        start_at[0] = time.perf_counter() + 0.05
        hard_stop[0] = start_at[0] + duration + max(5.0, duration / 2)

    barrier = threading.Barrier(concurrency + 1, action=go)

    def worker(t: int) -> None:
        conn = HttpConnection("127.0.0.1", port)
        perf = time.perf_counter
        try:
            barrier.wait()
            while True:
                if stop is not None and stop.is_set():
                    return
                if perf() > hard_stop[0]:  # far behind schedule: the server cannot keep the rate
                    return
                with lock:
                    i = counter[0]
                    if i >= total:
                        return
                    counter[0] = i + 1
                due = start_at[0] + i / rate
                wait = due - perf()
                if wait > 0:
                    time.sleep(wait)
                method, path, headers, body, n = make_request(i)
                try:
                    status, resp = conn.request(method, path, body, headers)
                except OSError as e:
                    status, resp = 599, str(e).encode()
                done = perf()
                lat[t].append(done - due)
                tl[t].append((due, done - due, status))
                if on_response is not None:
                    on_response(i, status, resp, done)
                if 200 <= status < 300:
                    ok[t] += 1
                    items[t] += n
                else:
                    with lock:
                        errors[status] = errors.get(status, 0) + 1
                        if not first_error[0]:
                            first_error[0] = f"HTTP {status}: {resp[:300]!r}"
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(concurrency)]
    for th in threads:
        th.start()
    barrier.wait()
    for th in threads:
        th.join()
    wall = time.perf_counter() - start_at[0]
    return LoadResult(
        requests=sum(len(x) for x in lat),
        ok=sum(ok),
        errors=errors,
        wall_s=wall,
        latencies=[x for part in lat for x in part],
        items=sum(items),
        first_error=first_error[0],
        timeline=sorted(x for part in tl for x in part),
    )


# --- profiling the server -------------------------------------------------------------------------


@contextmanager
def profiled(srv: Server, name: str, *, rate: int = 100, gil: bool | None = None) -> Iterator[dict[str, Any]]:
    """Samples every server worker and the applier with py-spy (`.venv/bin/pip install py-spy`) while the body
    runs; afterwards the yielded dict holds the top frames (`summarise_profile`) and the paths of
    the collapsed stacks (bench/results/profile-<name>-<pid>.txt, loadable in speedscope).

    With `gil` (default: BENCH_PROFILE_GIL=1 in the environment) only the thread holding the GIL
    is sampled: where the workers' Python CPU goes. Without it every thread not idle is sampled,
    which counts threads waiting on PostgreSQL (psycopg `Connection.wait`): where wall time goes."""
    if gil is None:
        gil = os.environ.get("BENCH_PROFILE_GIL", "1") == "1"
    exe = Path(sys.executable).parent / "py-spy"
    out: dict[str, Any] = {}
    if not exe.exists():
        log("py-spy is not installed in the venv: no profile")
        yield out
        return
    RESULTS_DIR.mkdir(exist_ok=True)
    procs = []
    pids = srv.pids()
    for pid in [*pids["workers"], *pids["applier"]]:
        path = RESULTS_DIR / f"profile-{name}{'-gil' if gil else ''}-{pid}.txt"
        cmd = [str(exe), "record", "-r", str(rate), "-f", "raw", "-o", str(path), "--pid", str(pid)]
        if gil:
            cmd.append("--gil")
        procs.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path))
    time.sleep(0.5)
    try:
        yield out
    finally:
        for p, _ in procs:
            p.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for p, _ in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        paths = [path for _, path in procs if path.exists()]
        out.update(files=[str(x) for x in paths], **summarise_profile(paths))


_IDLE = ("Condition.wait", "EpollSelector.select", "_worker (concurrent/futures/thread.py", "Event.wait", "sleep")


def summarise_profile(paths: list[Path], top: int = 25) -> dict[str, Any]:
    """Top frames of py-spy collapsed stacks, idle samples (threads waiting on a queue, a
    condition, a selector, or time.sleep) left out: inclusive and self percentages of busy samples."""
    incl: dict[str, int] = {}
    selfc: dict[str, int] = {}
    busy = idle = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, n_text = line.rpartition(" ")
            n = int(n_text)
            frames = stack.split(";")
            if any(frames[-1].startswith(x) or x in frames[-1] for x in _IDLE):
                idle += n
                continue
            busy += n
            seen = set()
            for f in frames:
                key = f.split(":")[0] + ")" if "(" in f else f
                if key not in seen:
                    seen.add(key)
                    incl[key] = incl.get(key, 0) + n
            key = frames[-1].split(":")[0] + ")" if "(" in frames[-1] else frames[-1]
            selfc[key] = selfc.get(key, 0) + n

    def pct(d: dict[str, int]) -> list[tuple[float, str]]:
        return [(round(100 * v / max(1, busy), 1), k) for k, v in sorted(d.items(), key=lambda x: -x[1])[:top]]

    ours = {k: v for k, v in incl.items() if "(ledger/" in k or k.startswith("Connection.wait (psycopg")}
    return {
        "busy_samples": busy,
        "idle_samples": idle,
        "inclusive": pct(incl),
        "inclusive_ledger": pct(ours),  # frames of ledger/ (and psycopg's wait for the server)
        "self": pct(selfc),
    }


def print_profile(title: str, prof: dict[str, Any], top: int = 25) -> None:
    if not prof.get("busy_samples"):
        return
    print(f"\n  profile of the workers during {title} (py-spy, {prof['busy_samples']} busy samples; idle left out)")
    print("    inclusive, frames of ledger/ (and psycopg waiting on PostgreSQL):")
    for p, k in prof.get("inclusive_ledger", prof["inclusive"])[:top]:
        print(f"      {p:5.1f}%  {k}")
    print("    self:")
    for p, k in prof["self"][:15]:
        print(f"      {p:5.1f}%  {k}")


# --- projections ----------------------------------------------------------------------------------


def projection_lag(srv: Server, conn: HttpConnection | None = None) -> dict[str, int]:
    """Entries each projection (and follower) is behind the log head, from GET /readyz (whose body
    carries `projection_lag` also when it answers 503 for a lag past LEDGER_MAX_PROJECTION_LAG)."""
    status, body = (conn or HttpConnection("127.0.0.1", srv.port)).request("GET", "/readyz")
    lag = json.loads(body).get("projection_lag")
    if lag is None:
        raise RuntimeError(f"/readyz: HTTP {status} {body[:200]!r}")
    return {k: int(v) for k, v in lag.items()}


def wait_projections(srv: Server, *, timeout: float = 600.0, poll: float = 1.0) -> dict[str, Any]:
    """Waits (at most `timeout` seconds) until the server's background appliers have applied the
    whole log; reports how long that took and the rate at which entries were applied."""
    conn = HttpConnection("127.0.0.1", srv.port)
    t0 = last = time.perf_counter()
    first = projection_lag(srv, conn)
    lag = first
    with CpuMeter(srv, srv.dbname) as cpu:
        while max(lag.values(), default=0) > 0 and time.perf_counter() - t0 < timeout:
            time.sleep(poll)
            lag = projection_lag(srv, conn)
            if time.perf_counter() - last > 15:
                last = time.perf_counter()
                log(f"  projections catching up: lag {lag}")
    conn.close()
    dt = time.perf_counter() - t0
    behind = max(first.values(), default=0)
    applied = behind - max(lag.values(), default=0)
    out = {
        "lag_at_start": first,
        "lag_at_end": lag,
        "caught_up": max(lag.values(), default=0) == 0,
        "seconds": round(dt, 1),
        "entries_applied": applied,
        "entries_per_s": round(applied / dt, 1) if dt > 0 and applied else None,
        "cpu": cpu.report(),
    }
    if behind:
        log(
            f"projections: {applied:,} of {behind:,} entries applied in {out['seconds']} s "
            f"({out['entries_per_s'] or 0:,.0f}/s), caught up: {out['caught_up']}"
        )
    return out


# --- filling a log --------------------------------------------------------------------------------


def batch_successes(status: int, body: bytes) -> int:
    """Successful events of a /lineage/batch response, read from its head without parsing the
    receipts (which are most of the body)."""
    if status != 200:
        return 0
    head = body[:400]
    key = b'"successful":'
    at = head.find(key)
    if at < 0:
        return int(json.loads(body)["summary"]["successful"])
    end = at + len(key)
    stop = end
    while stop < len(head) and head[stop : stop + 1].isdigit():
        stop += 1
    return int(head[end:stop])


def fill_http(srv: Server, target: int, *, batch: int = 1000, concurrency: int = 4) -> dict[str, Any]:
    """Appends RunEvents through POST /api/v1/lineage/batch until the log holds `target` entries."""
    factory = EventFactory()
    start = log_size(srv)
    need = max(0, target - start)
    batches = (need + batch - 1) // batch
    headers = auth_headers(srv.token, json_body=True)
    sizes = [batch] * batches
    if batches:
        sizes[-1] = need - batch * (batches - 1)
    progress = {"done": 0, "t0": time.perf_counter(), "last": time.perf_counter()}
    plock = threading.Lock()

    def make(i: int) -> tuple[str, str, bytes, bytes, int]:
        return "POST", "/api/v1/lineage/batch", headers, factory.batch(sizes[i]), sizes[i]

    def check(status: int, body: bytes) -> int:
        n = batch_successes(status, body)
        with plock:
            progress["done"] += n
            now = time.perf_counter()
            if now - progress["last"] > 15:
                progress["last"] = now
                rate = progress["done"] / (now - progress["t0"])
                log(f"  fill: {start + progress['done']:,}/{target:,} entries ({rate:,.0f}/s)")
        return n

    log(
        f"filling the log to {target:,} entries through the batch API ({need:,} to add, {batch}/batch, "
        f"{concurrency} clients)"
    )
    with CpuMeter(srv, srv.dbname) as cpu:
        res = run_load(srv.port, make, concurrency=concurrency, count=batches, check=check)
    out = {
        "method": "http batch intake (POST /api/v1/lineage/batch)",
        "entries_added": res.items,
        "batch": batch,
        "concurrency": concurrency,
        "seconds": round(res.wall_s, 1),
        "events_per_s": round(res.items / res.wall_s, 1) if res.wall_s else 0.0,
        "errors": res.summary()["errors"],
        "cpu": cpu.report(),
        "size_after": log_size(srv),
    }
    log(f"filled: {out['size_after']:,} entries in {out['seconds']} s ({out['events_per_s']:,.0f} events/s)")
    out["projections"] = wait_projections(srv, timeout=600.0)
    return out


def fill_direct(srv: Server, target: int, *, batch: int = 5000, wait: float | None = 600.0) -> dict[str, Any]:
    """Appends the same RunEvents in-process through `Ledger.append` (no HTTP, no validation), in
    large batches, with the server running (the sequencer's advisory lock serialises us with it).

    Log first: `Ledger.append` writes the log alone; the server's background appliers (one per
    worker, one at a time under the projector lock) apply the entries to the projections as they
    come. With `wait`, this then waits up to that many seconds for them to reach the log head, so
    that what is measured next is not sharing the CPU with a backlog (reported as `projections`)."""
    import hashlib

    from ledger.config import Settings
    from ledger.runtime import build_runtime
    from ledger.store.sequencer import PendingEntry
    from ledger.tlog.entry import canonical_json

    rt = build_runtime(Settings.from_env(srv.env))
    try:
        start = rt.ledger.size()
        need = max(0, target - start)
        log(f"filling the log to {target:,} entries in-process (Ledger.append, {batch}/batch)")
        t0 = last = time.perf_counter()
        done = 0
        while done < need:
            n = min(batch, need - done)
            pending = []
            for i in range(n):
                ev = run_event(start + done + i)
                pending.append(
                    PendingEntry(
                        kind="openlineage.run_event",
                        subject=f"run:{ev['run']['runId']}",
                        principal="bench-direct",
                        payload=ev,
                        dedup_key="sha256:" + hashlib.sha256(canonical_json(ev)).hexdigest(),
                    )
                )
            rt.ledger.append(pending)
            done += n
            if time.perf_counter() - last > 15:
                last = time.perf_counter()
                log(f"  fill: {start + done:,}/{target:,} entries ({done / (last - t0):,.0f}/s)")
        dt = time.perf_counter() - t0
        size = rt.ledger.size()
    finally:
        rt.close()
    out = {
        "method": "in-process Ledger.append (build_runtime(Settings.from_env(...)))",
        "entries_added": need,
        "batch": batch,
        "seconds": round(dt, 1),
        "events_per_s": round(need / dt, 1) if dt else 0.0,
        "size_after": size,
    }
    log(f"filled: {size:,} entries in {out['seconds']} s ({out['events_per_s']:,.0f} events/s)")
    if wait:
        out["projections"] = wait_projections(srv, timeout=wait)
    return out


def add_server_env(parser: Any) -> None:
    """The `--server-env KEY=VALUE` option every server benchmark takes (read with `parse_env`)."""
    parser.add_argument(
        "--server-env",
        action="append",
        metavar="KEY=VALUE",
        help="environment variable for the server (repeatable), e.g. MALLOC_ARENA_MAX=2",
    )


def parse_env(items: list[str] | None) -> dict[str, str]:
    """`--server-env KEY=VALUE` options as a dict."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--server-env wants KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def log_size(srv: Server) -> int:
    """The current tree size, from the public checkpoint."""
    status, body = HttpConnection("127.0.0.1", srv.port).request("GET", "/api/v1/log/checkpoint")
    if status != 200:
        raise RuntimeError(f"checkpoint: HTTP {status} {body[:200]!r}")
    return int(body.decode().split("\n")[1])


# --- results --------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    git = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "ledger", "migrations"],
        capture_output=True,
        text=True,
        check=False,
    )
    # The working tree changes under us (others commit while benchmarks run): a digest of the code
    # that was measured says which version a figure belongs to.
    code = hashlib.sha256()
    for path in sorted([*REPO.glob("ledger/**/*.py"), *REPO.glob("migrations/**/*.py")]):
        code.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return {
        "code_sha256": code.hexdigest()[:16],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "commit": git.stdout.strip(),
        "ledger_tree_dirty": bool(dirty.stdout.strip()),
        "postgres": PG_ADMIN_URL.rsplit("@", 1)[-1].rsplit("/", 1)[0],
    }


_AT_START: dict[str, Any] = {}


def remember_start() -> None:
    """Records the environment (and the digest of the code about to be measured) at start."""
    if not _AT_START:
        _AT_START.update(environment())


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    env = environment()
    start = _AT_START or env
    if start.get("code_sha256") != env["code_sha256"]:
        log(
            "WARNING: ledger/ or migrations/ changed during the run; the figures belong to the code at start "
            f"({start.get('code_sha256')}), servers started later may have run newer code"
        )
    meta = {
        "environment": env,
        "environment_at_start": start,
        "code_changed_during_run": start.get("code_sha256") != env["code_sha256"],
    }
    path.write_text(json.dumps({**meta, **data}, indent=2, default=str) + "\n")
    log(f"results written to {path}")
    return path


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"
