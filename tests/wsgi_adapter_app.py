"""A small Flask app behind `ledger.server`'s front (ClientLimit, BufferedBody, ThreadedWsgi), for
tests/test_wsgi_adapter.py to serve with granian: routes that stream, fail and echo, and `/stats`,
which says how many streamed bodies were closed properly (the test runs one worker, so it is the same one)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator

from flask import Flask, Response, has_request_context, jsonify, request, stream_with_context

from ledger.server import BufferedBody, ClientLimit
from ledger.wsgi_adapter import ThreadedWsgi

flask_app = Flask(__name__)
stats = {"started": 0, "closed": 0, "lines": 0}  # "closed": in the request's context, on a pool thread
lock = threading.Lock()


def _count(key: str, n: int = 1) -> None:
    with lock:
        stats[key] += n


@flask_app.get("/stats")
def get_stats() -> Response:
    with lock:
        return jsonify(stats)


@flask_app.post("/echo")
def echo() -> Response:
    body = request.get_data()
    return jsonify({"length": len(body), "sha256": hashlib.sha256(body).hexdigest()})


@flask_app.get("/lines")
def lines() -> Response:
    """`n` numbered lines of `width` bytes, streamed; `fail_at` raises at that line."""
    n = int(request.args["n"])
    fail_at = int(request.args.get("fail_at", -1))

    def generate() -> Iterator[bytes]:
        _count("started")
        try:
            for i in range(n):
                if i == fail_at:
                    raise RuntimeError("the body failed midway")
                # The request context must be there on every hop, whichever thread runs it.
                width = int(request.args.get("width", "1000"))
                _count("lines")
                yield f"{i:09d} ".encode() + b"x" * (width - 11) + b"\n"
        finally:
            # Closed by the adapter, not by the garbage collector on whatever thread drops it last.
            if has_request_context() and threading.current_thread().name.startswith("wsgi"):
                _count("closed")

    return Response(stream_with_context(generate()), mimetype="text/plain")


@flask_app.get("/boom")
def boom() -> Response:
    raise RuntimeError("a view failed")


class _Escaping:
    """WSGI middleware letting an exception escape the app, as no Flask view can (Flask answers 500
    itself): the adapter's own 500 is what the client sees."""

    def __init__(self, app: object) -> None:
        self.app = app

    def __call__(self, environ: dict[str, object], start_response: object) -> object:
        if environ["PATH_INFO"] == "/escape":
            raise RuntimeError("an exception out of the WSGI app")
        return self.app(environ, start_response)  # type: ignore[operator]


flask_app.config["PROPAGATE_EXCEPTIONS"] = False
app = ClientLimit(
    BufferedBody(ThreadedWsgi(_Escaping(flask_app.wsgi_app), threads=4), max_bytes=1 << 20, seconds=5), limit=0
)
