"""The HTTP front alone: a trivial Flask handler (parse a JSON body, sha256 it, 201) under granian,
with the app behind `ledger.wsgi_adapter` (what `ledger serve` runs), behind a2wsgi (what it ran
before; measured only when a2wsgi is installed), and under granian's WSGI interface (the floor, which
cannot tell `%2F` from `/`). Each front sits behind the same `BufferedBody` and `ClientLimit` as in
`ledger serve`, except WSGI, which has no ASGI middleware.

One granian worker, `--threads` threads; the fronts alternate, `--rounds` times, each for
`--duration` seconds after a warm-up, from `--concurrency` keep-alive connections. Reported per
front: requests/s (median over rounds) and the server's CPU per request (median), the steadier figure
on a shared machine.

    python bench/http_front.py [--rounds 3] [--duration 5] [--concurrency 16] [--threads 8]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from common import BENCH_DIR, children, free_port, log, proc_cpu_seconds, run_load

FRONT_ENV = "BENCH_HTTP_FRONT"
BODY = json.dumps({"eventType": "COMPLETE", "run": {"runId": "x" * 36}, "job": {"name": "j" * 40}}).encode()


def _flask() -> Any:
    from flask import Flask, jsonify, request

    app = Flask("http_front")

    @app.post("/e")
    def post() -> Any:
        doc = json.loads(request.get_data())
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
        return jsonify({"digest": digest}), 201

    return app


def make_app() -> Any:
    """granian's factory, in the worker: the front named by BENCH_HTTP_FRONT around `_flask()`."""
    from ledger.server import BufferedBody, ClientLimit

    front, threads = os.environ[FRONT_ENV], int(os.environ["BENCH_HTTP_THREADS"])
    app = _flask()
    if front == "wsgi":
        return app
    if front == "a2wsgi":
        from a2wsgi import WSGIMiddleware

        inner: Any = WSGIMiddleware(app, workers=threads)
    else:
        from ledger.wsgi_adapter import ThreadedWsgi

        inner = ThreadedWsgi(app, threads=threads)
    return ClientLimit(BufferedBody(inner, max_bytes=1 << 20, seconds=10), limit=0)


def _serve(front: str, threads: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    interface = "wsgi" if front == "wsgi" else "asginl"
    env = {**os.environ, FRONT_ENV: front, "BENCH_HTTP_THREADS": str(threads), "PYTHONPATH": str(BENCH_DIR)}
    cmd = [sys.executable, "-m", "granian", "--interface", interface, "--port", str(port), "--workers", "1"]
    cmd += ["--blocking-threads", str(threads)] if front == "wsgi" else []
    cmd += ["--no-ws", "--factory", "http_front:make_app"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from common import HttpConnection

    deadline = time.monotonic() + 30
    while True:
        try:
            if HttpConnection("127.0.0.1", port, timeout=2).request("POST", "/e", BODY, _HEADERS)[0] == 201:
                return proc, port
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"{front}: granian did not start")
        time.sleep(0.1)


_HEADERS = b"Content-Type: application/json\r\n"


def _server_cpu(proc: subprocess.Popen[bytes]) -> float:
    return sum(proc_cpu_seconds(p) for p in [proc.pid, *children(proc.pid)])


def measure(front: str, *, threads: int, duration: float, concurrency: int) -> dict[str, float]:
    proc, port = _serve(front, threads)
    try:
        run_load(port, lambda _i: ("POST", "/e", _HEADERS, BODY, 1), concurrency=concurrency, duration=1.0)
        cpu0 = _server_cpu(proc)
        res = run_load(port, lambda _i: ("POST", "/e", _HEADERS, BODY, 1), concurrency=concurrency, duration=duration)
        cpu = _server_cpu(proc) - cpu0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    if res.errors:
        raise RuntimeError(f"{front}: {res.errors} {res.first_error}")
    return {"rps": res.ok / res.wall_s, "cpu_us_per_request": cpu / max(1, res.ok) * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()
    fronts = ["adapter", "wsgi"]
    try:
        import a2wsgi  # noqa: F401

        fronts.insert(1, "a2wsgi")
    except ImportError:
        log("a2wsgi is not installed: measuring the adapter and granian's WSGI only")
    results: dict[str, list[dict[str, float]]] = {f: [] for f in fronts}
    for r in range(args.rounds):
        for front in fronts if r % 2 == 0 else reversed(fronts):
            m = measure(front, threads=args.threads, duration=args.duration, concurrency=args.concurrency)
            log(f"round {r + 1} {front}: {m['rps']:,.0f} req/s, {m['cpu_us_per_request']:,.0f} us CPU/request")
            results[front].append(m)
    for front, ms in results.items():
        rps = statistics.median(m["rps"] for m in ms)
        cpu = statistics.median(m["cpu_us_per_request"] for m in ms)
        print(f"{front:8s} {rps:8,.0f} req/s   {cpu:6,.0f} us server CPU/request   (median of {len(ms)})")


if __name__ == "__main__":
    main()
