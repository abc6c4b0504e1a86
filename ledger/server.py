"""`ledger serve`: granian (a Rust HTTP server) in front, our Flask app behind it in each worker.

Why not gunicorn (the stack's default): its gthread worker reads a request's headers and body on one
of the worker's threads, so 64 sockets that trickle a header line every few seconds take every
thread, and the service answers no one (the "slowloris" of the security issue). granian reads
requests on an async Rust runtime (hyper) with a header read timeout; a slow client holds a small
task, not a thread. It also respawns a worker that dies.

The app runs under granian's ASGI interface, not its WSGI one: granian's WSGI environ carries only
the percent-decoded path, so `a%2Fb` and `a/b` (names in paths, DESIGN.md 8) could not be told
apart, while ASGI's `raw_path` keeps the request target. Before the app's thread sees a request,
`BufferedBody` reads the whole body on the event loop, within a size cap and a time budget: a client
that trickles its body holds no thread either. `ClientLimit`, in front of that, bounds the requests
one client address has in a worker at once (granian itself has no per-client bound: its
`backpressure` is one bound for all clients). Behind both, `ledger.wsgi_adapter` runs the Flask app
on the worker's threads, one hop from the event loop per request (a2wsgi, which it replaced, made
several, at a fifth of the requests per second of granian's WSGI).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ledger.config import Settings
from ledger.lifeline import PARENT_ENV

log = logging.getLogger("ledger.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# What the workers need from `ledger serve` (the workers are forked, so they see it).
_THREADS_ENV = "LEDGER_SERVE_THREADS"
_APPLIER_ENV = "LEDGER_SERVE_APPLIER"  # set: an applier process runs beside the workers
# The applier starts this long after the server: until then reads that need the projections apply
# what they need themselves (`Projector.sync`), and the workers start without competing with it.
APPLIER_DELAY_SECONDS = 2.0


class _Children:
    """The master's own child processes (scheduler, applier). A child it `keep`s is started a little
    after the server (not to slow the workers' start, which a restarted service waits for) and again,
    within a second, whenever it exits while the server runs."""

    def __init__(self) -> None:
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def start(self, module: str) -> None:
        with self._lock:
            if not self._stopping.is_set():
                self._procs[module] = subprocess.Popen(child_command(module))  # noqa: S603 (our own module)

    def keep(self, module: str, *, after: float) -> None:
        def watch() -> None:
            if self._stopping.wait(after):
                return
            self.start(module)
            while not self._stopping.wait(1.0):
                proc = self._procs[module]
                if proc.poll() is not None and not self._stopping.is_set():
                    log.warning("%s exited with status %s; starting it again", module, proc.returncode)
                    self.start(module)

        threading.Thread(target=watch, name=f"ledger-keep-{module}", daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            procs = list(self._procs.values())
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def child_command(module: str, *args: str) -> list[str]:
    """The command line of a child process that runs `module` of the *installed* package.

    `python -m` puts the current directory first on the import path, so run from a source checkout
    it would import the checkout's `ledger/` instead of the installed one (which alone carries the
    packaged migrations and policies). `-P` (Python 3.11) leaves the current directory out.
    """
    return [sys.executable, "-P", "-m", module, *args]


class BufferedBody:
    """Reads a request's whole body on the event loop before the app is called.

    Bounded: at most `max_bytes` (413 past it, as the app would answer) and `seconds` from the first
    byte of the body to the last (408 past it). The app then reads from memory, on its thread.
    """

    def __init__(self, app: AsgiApp, *, max_bytes: int, seconds: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            async with asyncio.timeout(self.seconds):  # not wait_for: no task of its own per request
                chunks = await self._read(receive)
        except TimeoutError:
            detail = f"the request body took longer than {self.seconds:g} s to arrive"
            await send_problem(send, 408, "Request Timeout", detail)
            return
        except _TooLargeError:
            detail = f"request body is larger than LEDGER_MAX_BODY_BYTES ({self.max_bytes} bytes)"
            await send_problem(send, 413, "Payload Too Large", detail)
            return
        if chunks is None:  # the client went away
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only http.disconnect

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> list[bytes] | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise _TooLargeError
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks


class ClientLimit:
    """At most `limit` requests of one client address in this worker at once (0: no limit); past it,
    429 with Retry-After before the body is read, so one client cannot hold every thread or buffer
    of a worker. Behind a proxy every request has the proxy's address: raise the limit, or set it to
    0 and bound clients at the proxy (README, "Security")."""

    def __init__(self, app: AsgiApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit
        self._active: dict[str, int] = {}  # the event loop's own: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.limit <= 0:
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("", 0))[0]
        if self._active.get(client, 0) >= self.limit:
            detail = f"more than {self.limit} requests of this client at once (LEDGER_MAX_REQUESTS_PER_CLIENT)"
            await send_problem(send, 429, "Too Many Requests", detail, retry_after=1)
            return
        self._active[client] = self._active.get(client, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            left = self._active[client] - 1
            if left:
                self._active[client] = left
            else:
                del self._active[client]


class _TooLargeError(Exception):
    """The body passed the size cap."""


async def send_problem(send: Send, status: int, title: str, detail: str, *, retry_after: int | None = None) -> None:
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": [*headers, (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def front(wsgi_app: Any, settings: Settings, *, threads: int) -> AsgiApp:
    """`wsgi_app` on `threads` threads behind `BufferedBody` behind `ClientLimit` (the module docstring)."""
    from ledger.wsgi_adapter import ThreadedWsgi

    threaded = ThreadedWsgi(wsgi_app, threads=threads)
    buffered = BufferedBody(threaded, max_bytes=settings.max_body_bytes, seconds=settings.body_timeout_seconds)
    return ClientLimit(buffered, limit=settings.max_requests_per_client)


def asgi_app() -> AsgiApp:
    """granian's factory, called in each worker: the Flask app behind `front`."""
    from ledger.app import create_app
    from ledger.lifeline import die_with_serve_master
    from ledger.logs import configure_logging

    die_with_serve_master()  # a worker ends within 0.2 s of the master's death: no orphan keeps the port
    configure_logging()  # one line per record, JSON with LEDGER_LOG_FORMAT=json
    settings = Settings.from_env()
    app = create_app(settings, start_applier=not os.environ.get(_APPLIER_ENV))
    return front(app, settings, threads=int(os.environ.get(_THREADS_ENV, "8")))


def run_server(settings: Settings, *, host: str, port: int, workers: int, threads: int) -> None:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings

    children = _Children()

    def start_children() -> None:
        # One scheduler and one applier per host, each a process of its own: the master itself holds
        # no database connection, since every worker it forks would inherit it (fatal for SQLite's
        # locks). The job's lease row makes the scheduler's jobs one run per deployment, and the
        # projector lock the applier's batches (ledger/applier.py).
        if settings.run_scheduler:
            children.start("ledger.jobs")
        children.keep("ledger.applier", after=APPLIER_DELAY_SECONDS)

    os.environ[_APPLIER_ENV] = "1"  # the workers leave applying to the applier process
    os.environ[_THREADS_ENV] = str(threads)
    os.environ[PARENT_ENV] = str(os.getpid())  # the workers and the scheduler die with this process
    server = Granian(
        "ledger.server:asgi_app",
        address=host,
        port=port,
        interface=Interfaces.ASGINL,
        factory=True,
        workers=workers,
        http=HTTPModes.http1,
        websockets=False,
        http1_settings=HTTP1Settings(header_read_timeout=int(settings.header_timeout_seconds * 1000)),
        respawn_failed_workers=True,
        respawn_interval=0.5,
        workers_kill_timeout=10,
        log_access=False,
    )
    server.on_startup(start_children)
    server.on_shutdown(children.stop)
    server.serve()
