"""The Flask app (WSGI) under granian's ASGI interface: on a pool of threads, one hop per request.

`BufferedBody` (ledger.server) has read the whole request body on the event loop before this runs,
so a request needs only one hop to a pool thread: there the environ is built from the scope and the
body, the app is called, and its body is iterated up to `BATCH` bytes. A body that ends within them
(every JSON answer) goes out in one `http.response.body` message. A longer one (the log export
streams) goes out batch by batch, each batch one more hop, asked for only once granian has taken
the previous one: granian's `send` waits while its small channel to the socket is full, so a slow
reader holds the export back instead of filling memory, and holds no thread while it reads.

Every hop of a request runs in one `contextvars.Context` (a copy of the task's), whichever thread
runs it: Flask keeps a streamed response's request context (`stream_with_context`), and the ledger
its request id and read routing, in context variables that must stay the same from hop to hop. The
WSGI iterable is closed in every case (PEP 3333), in that context: when its body ends, when it
fails, and when the client goes away. granian's `send` to a gone client just returns, so the
client is watched: `receive`, after the body, answers `http.disconnect` when it goes.

An exception out of the app before anything was sent is a 500 problem+json; after the headers went
out, the response ends without its last chunk, so the client sees it cut, not complete. Both are
logged, with the request's id.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ledger.server import Message, Receive, Scope, Send, send_problem

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
BATCH = 64 * 1024  # bytes of a streamed body per hop (the export's chunks are larger: one per hop)
log = logging.getLogger("ledger.server")


def build_environ(scope: Scope, body: bytes) -> dict[str, Any]:
    """The PEP 3333 environ of an ASGI HTTP `scope` whose whole body is `body`.

    PATH_INFO is the percent-decoded path as PEP 3333 wants it (its UTF-8 bytes, one latin-1
    character each), as a2wsgi built it; the raw target, `%2F` kept, stays in `asgi.scope`
    (ledger.api.names reads it). Headers repeated in the request are joined with commas."""
    script_name = scope.get("root_path", "").encode("utf-8").decode("latin-1")
    path_info = scope["path"].encode("utf-8").decode("latin-1")
    if script_name and path_info.startswith(script_name):
        path_info = path_info[len(script_name) :]
    server = scope.get("server") or ("localhost", 80)
    environ: dict[str, Any] = {
        "asgi.scope": scope,
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path_info,
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1] or 0),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        # The body is whole and in memory, chunked or not: Werkzeug may read it to its end.
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"] = client[0]
        environ["REMOTE_PORT"] = str(client[1])
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        key = name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + name
        value = raw_value.decode("latin-1")
        environ[key] = environ[key] + "," + value if key in environ else value
    return environ


class _Exchange:
    """One request's WSGI side; its methods run on a pool thread, one at a time, in its context."""

    __slots__ = ("app", "closed", "headers", "headers_sent", "iterable", "iterator", "pending", "status")

    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_sent = False  # set by the loop once it sent them
        self.pending: list[bytes] = []  # body bytes not yet sent (the iterable's and write()'s)
        self.iterable: Iterable[bytes] | None = None
        self.iterator: Iterator[bytes] | None = None
        self.closed = False

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
        if exc_info is not None and self.headers_sent:
            raise exc_info[1].with_traceback(exc_info[2])  # PEP 3333: too late to change them
        self.status = int(status[:3])
        self.headers = [(n.strip().lower().encode("latin-1"), v.strip().encode("latin-1")) for n, v in headers]
        return self.pending.append  # the legacy write() callable

    def begin(self, scope: Scope, body: bytes) -> bool:
        """Calls the app and reads its body up to BATCH bytes; True when the body ended (closed)."""
        self.iterable = self.app(build_environ(scope, body), self.start_response)
        ended = self.more()
        if not self.status:
            self.close()
            raise RuntimeError("the WSGI app sent a body without calling start_response")
        return ended

    def more(self) -> bool:
        """Reads the body up to BATCH more bytes into `pending`; True when it ended. Closes the
        iterable when it ends or fails."""
        try:
            if self.iterator is None:
                self.iterator = iter(self.iterable or ())
            size = 0
            for chunk in self.iterator:
                if chunk:
                    self.pending.append(chunk)
                    size += len(chunk)
                    if size >= BATCH:
                        return False
        except BaseException:
            self.close()
            raise
        self.close()
        return True

    def take(self) -> bytes:
        body = b"".join(self.pending) if len(self.pending) != 1 else self.pending[0]
        self.pending.clear()
        return body

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            close = getattr(self.iterable, "close", None)
            if close is not None:
                close()


class ThreadedWsgi:
    """ASGI app running the WSGI `app` on `threads` pool threads (see the module docstring); it
    expects the whole body in the first `receive()` message, as `BufferedBody` gives it."""

    def __init__(self, app: WsgiApp, *, threads: int) -> None:
        self.app = app
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="wsgi")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # no lifespan under "asginl", and websockets are off
            return
        message = await receive()
        body = message.get("body", b"") if message["type"] == "http.request" else b""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        exchange = _Exchange(self.app)
        try:
            ended = await loop.run_in_executor(self.pool, context.run, exchange.begin, scope, body)
        except Exception:
            context.run(log.exception, "the app failed on %s %s", scope["method"], scope["path"])
            if not exchange.closed:
                await loop.run_in_executor(self.pool, context.run, _quietly, exchange.close)
            await send_problem(send, 500, "Internal Server Error", "the server failed to handle this request")
            return
        await send({"type": "http.response.start", "status": exchange.status, "headers": exchange.headers})
        exchange.headers_sent = True
        await send({"type": "http.response.body", "body": exchange.take(), "more_body": not ended})
        if not ended:
            await self._stream(scope, receive, send, context, exchange)

    async def _stream(self, scope: Scope, receive: Receive, send: Send, context: Any, exchange: _Exchange) -> None:
        """The rest of a long body, one hop per batch, until it ends or the client goes away."""
        loop = asyncio.get_running_loop()
        gone = asyncio.ensure_future(_disconnected(receive))
        hop: Future[bool] | None = None
        try:
            ended = False
            while not ended and not gone.done():
                hop = self.pool.submit(context.run, exchange.more)
                ended = await asyncio.wrap_future(hop, loop=loop)
                if gone.done():
                    break
                await send({"type": "http.response.body", "body": exchange.take(), "more_body": not ended})
            if not ended:
                context.run(log.info, "the client went away during %s %s", scope["method"], scope["path"])
        except asyncio.CancelledError:
            self._close_after(hop, context, exchange)  # the hop may still run: close once it ends
            raise
        except Exception:
            context.run(log.exception, "the response failed midway on %s %s", scope["method"], scope["path"])
        finally:
            gone.cancel()
        if not exchange.closed:
            await loop.run_in_executor(self.pool, context.run, _quietly, exchange.close)

    def _close_after(self, hop: Future[bool] | None, context: Any, exchange: _Exchange) -> None:
        def close(_: object = None) -> None:
            self.pool.submit(context.run, _quietly, exchange.close)

        if hop is None or hop.done():
            close()
        else:
            hop.add_done_callback(close)


async def _disconnected(receive: Receive) -> Message:
    """Returns once the client has gone (or granian ended the response)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return message


def _quietly(close: Callable[[], None]) -> None:
    try:
        close()
    except Exception:
        log.exception("closing the response failed")
