"""`ledger verify --url` fetches export ranges ahead on threads (ledger.verify.iter_export): the
lines still arrive whole and in order, a failed range fails the read at its turn, and a reader
that stops early leaves no fetcher behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from ledger.errors import VerificationError
from ledger.verify import iter_export


class _Export(BaseHTTPRequestHandler):
    fail_at: int | None = None  # the start of a range answered 500
    delay: dict[int, float] = {}  # noqa: RUF012 (per test, set before the server starts)

    def do_GET(self) -> None:
        q = parse_qs(urlparse(self.path).query)
        start, end = int(q["start"][0]), int(q["end"][0])
        time.sleep(self.delay.get(start, 0))
        if start == self.fail_at:
            self.send_response(500)
            self.send_header("Content-Type", "application/problem+json")
            body = b'{"title": "boom", "detail": "range failed"}'
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        # Long lines, split across the server's writes, so blocks end mid-line.
        body = b"".join(b"%d\t%s\n" % (i, b"x" * 3000) for i in range(start, end))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for k in range(0, len(body), 7001):
            self.wfile.write(body[k : k + 7001])

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def export_server() -> Iterator[tuple[str, type[_Export]]]:
    handler = type("Handler", (_Export,), {"fail_at": None, "delay": {}})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    finally:
        srv.shutdown()
        srv.server_close()


def _fetchers() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "ledger-export")


def test_ranges_fetched_ahead_arrive_whole_and_in_order(export_server: tuple[str, type[_Export]]) -> None:
    base, handler = export_server
    handler.delay = {0: 0.3, 7: 0.0}  # the first range is the slowest: the later ones must wait for it
    with requests.Session() as http:
        lines = list(iter_export(base, 50, http, chunk=7, ahead=3))
    assert [int(line.split(b"\t")[0]) for line in lines] == list(range(50))
    assert all(line.endswith(b"x" * 3000) for line in lines)


def test_a_failed_range_fails_at_its_turn(export_server: tuple[str, type[_Export]]) -> None:
    base, handler = export_server
    handler.fail_at = 14
    seen: list[int] = []

    def read(http: requests.Session) -> None:
        seen.extend(int(line.split(b"\t")[0]) for line in iter_export(base, 50, http, chunk=7, ahead=3))

    with requests.Session() as http, pytest.raises(VerificationError, match=r"export \[14, 21\) failed: HTTP 500"):
        read(http)
    assert seen == list(range(14))


def test_a_reader_that_stops_early_leaves_no_fetcher(export_server: tuple[str, type[_Export]]) -> None:
    base, _ = export_server
    with requests.Session() as http:
        lines = iter_export(base, 2000, http, chunk=100, ahead=2)
        assert int(next(lines).split(b"\t")[0]) == 0
        lines.close()
        deadline = time.monotonic() + 5
        while _fetchers():
            assert time.monotonic() < deadline, "a fetcher thread outlived its reader"
            time.sleep(0.05)
