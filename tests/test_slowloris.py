"""Slow clients (issue 10, point 5): 64 sockets that each trickled one header line every 4 s, with no
token, once made `ledger serve` answer no one, `/healthz` included. Benchmark-style, against a real
`ledger serve` (granian): the bounds are asserted, the figures printed."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import requests
from conftest import start_server, stop_server

SOCKETS = 64
TRICKLE_SECONDS = 4.0


def _open(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /api/v1/log/entries HTTP/1.1\r\nHost: x\r\n")
    return s


def test_64_trickling_sockets_leave_healthz_answering_within_a_second(tmp_path: Path) -> None:
    srv = start_server(tmp_path, f"sqlite:///{tmp_path / 'ledger.db'}")  # 2 workers x 8 threads
    port = int(srv.url.rsplit(":", 1)[1])
    stop = threading.Event()
    cut: list[float] = []  # how long the server let a trickling socket live
    held = [0]

    def trickler() -> None:
        while not stop.is_set():
            opened = time.monotonic()
            try:
                s = _open(port)
            except OSError:
                continue
            held[0] += 1
            try:
                while not stop.is_set():
                    if stop.wait(TRICKLE_SECONDS):
                        break
                    s.sendall(b"X-Slow: " + b"a" * 20 + b"\r\n")  # one more header line, never the end
                    s.settimeout(0.01)
                    try:
                        if s.recv(1024) == b"":
                            raise ConnectionResetError
                    except TimeoutError:
                        pass
                    s.settimeout(5)
            except OSError:  # the server closed it: it did not wait for the headers forever
                cut.append(time.monotonic() - opened)
            finally:
                held[0] -= 1
                s.close()

    threads = [threading.Thread(target=trickler, daemon=True) for _ in range(SOCKETS)]
    try:
        for t in threads:
            t.start()
        health: list[float] = []
        end = time.monotonic() + 24  # past the header timeout (10 s): sockets cut and reopened
        while time.monotonic() < end:
            t0 = time.perf_counter()
            r = requests.get(f"{srv.url}/healthz", timeout=5)
            health.append(time.perf_counter() - t0)
            assert r.status_code == 200
            time.sleep(0.25)
        print(
            f"{SOCKETS} trickling sockets: /healthz slowest {max(health):.3f} s of {len(health)}; "
            f"{len(cut)} sockets cut after {min(cut, default=0):.1f}-{max(cut, default=0):.1f} s"
        )
        assert max(health) < 1.0
        assert cut and max(cut) < 10 + 2 * TRICKLE_SECONDS  # LEDGER_HEADER_TIMEOUT_SECONDS (10 s) holds
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        stop_server(srv)


def test_a_trickled_body_is_cut_and_one_client_holds_a_bounded_share(tmp_path: Path) -> None:
    srv = start_server(
        tmp_path,
        f"sqlite:///{tmp_path / 'ledger.db'}",
        workers=1,
        LEDGER_BODY_TIMEOUT_SECONDS="2",
        LEDGER_MAX_REQUESTS_PER_CLIENT="4",
    )
    port = int(srv.url.rsplit(":", 1)[1])
    head = (
        b"POST /api/v1/lineage HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    socks: list[socket.socket] = []
    try:
        for _ in range(4):  # four requests whose bodies trickle: the client's share of this worker
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(head)
            socks.append(s)
        time.sleep(0.3)  # let the server take them (the fifth must find them in flight)
        t0 = time.perf_counter()
        r = requests.get(f"{srv.url}/api/v1/log/checkpoint", timeout=5)  # a fifth request, same address
        assert r.status_code == 429 and r.headers["Content-Type"] == "application/problem+json"
        assert r.headers["Retry-After"] == "1"
        assert time.perf_counter() - t0 < 1.0
        # The trickled bodies are cut at LEDGER_BODY_TIMEOUT_SECONDS with 408, not waited for.
        for s in socks:
            s.settimeout(10)
            t0 = time.perf_counter()
            answer = s.recv(4096)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
            assert time.perf_counter() - t0 < 4
        # Then the client is served again.
        assert requests.get(f"{srv.url}/api/v1/log/checkpoint", timeout=5).status_code == 200
    finally:
        for s in socks:
            s.close()
        stop_server(srv)
