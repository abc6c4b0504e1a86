"""Single-event intake while an erasure runs (log first: erasure no longer holds appends).

An erasure appends a `payload.erasure` entry and deletes the payload under the append lock, then
rebuilds the projections that payload fed (lineage + classification for a RunEvent) under the
projector lock alone (ledger/projections.py `erase`). Before log first the replay ran under the
append lock and appends waited for all of it (about 30 s at 100,000 entries).

What it measures, against `ledger serve --workers 2` on PostgreSQL holding `--entries` entries
(default 100,000, filled in-process through `Ledger.append`, then the projections are left to
catch up):
- load: `POST /api/v1/lineage`, 16 keep-alive connections, closed loop (as the intake target), or
  open loop at `--rate` events/s; every request's start and latency are kept;
- after `--before` seconds of load, `POST /api/v1/log/entries/<seq>/erasure` (a `security`
  principal) of a RunEvent in the middle of the log; the request returns once the rebuild is
  committed, so its duration is the erasure's;
- the intake's p50/p99/max for requests that started before the erasure, while it ran, and after;
  the log's growth while it ran (appends not held); and the projection lag after it.
Target (issue): p99 of single-event intake while an erasure runs at 100,000 entries <= 1 s.

    python bench/erasure.py [--entries 100000] [--concurrency 16] [--rate R] [--before 5] [--after 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from typing import Any

from common import (
    CpuMeter,
    EventFactory,
    HttpConnection,
    Server,
    add_server_env,
    auth_headers,
    fill_direct,
    log,
    log_size,
    parse_env,
    percentiles,
    projection_lag,
    remember_start,
    run_load,
    run_paced,
    running_server,
    wait_projections,
    write_results,
)

TARGET_P99_MS = 1000.0


def run(
    srv: Server,
    *,
    concurrency: int = 16,
    rate: float | None = None,
    before: float = 5.0,
    after: float = 5.0,
    max_erasure: float = 300.0,
) -> dict[str, Any]:
    size = log_size(srv)
    sec_token = srv.cli("principals", "add", "bench-security", "--role", "security").stdout.strip().splitlines()[-1]
    factory = EventFactory()
    headers = auth_headers(srv.token, json_body=True)

    def make(_i: int) -> tuple[str, str, bytes, bytes, int]:
        return "POST", "/api/v1/lineage", headers, factory.one(), 1

    # The entry to erase: a RunEvent in the middle of the log.
    conn = HttpConnection("127.0.0.1", srv.port)
    target = size // 2
    for seq in range(target, min(size, target + 100)):
        status, body = conn.request("GET", f"/api/v1/log/entries/{seq}", b"", auth_headers(srv.token))
        if status == 200 and json.loads(body)["header"]["kind"].startswith("openlineage."):
            target = seq
            break

    erasure: dict[str, Any] = {}
    stop = threading.Event()

    def erase() -> None:
        time.sleep(before)
        c = HttpConnection("127.0.0.1", srv.port, timeout=max_erasure)
        size_before = log_size(srv)
        t0 = time.perf_counter()
        status, resp = c.request(
            "POST",
            f"/api/v1/log/entries/{target}/erasure",
            b'{"reason": "bench: erasure under load"}',
            auth_headers(sec_token, json_body=True),
        )
        t1 = time.perf_counter()
        erasure.update(
            seq=target,
            status=status,
            response=resp[:300].decode(errors="replace") if status != 201 else "",
            start=t0,
            end=t1,
            seconds=round(t1 - t0, 3),
            log_growth_during=log_size(srv) - size_before,
        )
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            erasure["lag_right_after"] = projection_lag(srv, c)
        c.close()
        log(f"  erasure of entry {target}: HTTP {status} in {t1 - t0:.2f} s")
        time.sleep(after)
        stop.set()

    log(
        f"erasure under load at {size:,} entries: intake "
        + (f"{rate:,.0f}/s open loop" if rate else f"closed loop, {concurrency} connections")
        + f", erasure after {before:.0f} s"
    )
    eraser = threading.Thread(target=erase, daemon=True)
    bound = before + max_erasure + after
    with CpuMeter(srv, srv.dbname) as cpu:
        eraser.start()
        if rate:
            # Open loop: bounded in count; stops on its own at `bound` seconds.
            res = run_paced(srv.port, make, rate=rate, duration=bound, concurrency=concurrency, stop=stop)
        else:
            res = run_load(srv.port, make, concurrency=concurrency, duration=bound, timeline=True, stop=stop)
        eraser.join(timeout=max_erasure)
    if rate and not stop.is_set():
        log("  (open loop ran its full bound)")

    def window(lo: float, hi: float) -> dict[str, Any]:
        lat = [d for t, d, _ in res.timeline if lo <= t < hi or (t < lo and t + d > lo)]
        bad = sum(1 for t, _, s in res.timeline if (lo <= t < hi) and not 200 <= s < 300)
        span = max(1e-9, hi - lo)
        return {**percentiles(lat), "requests": len(lat), "errors": bad, "requests_per_s": round(len(lat) / span, 1)}

    out: dict[str, Any] = {
        "entries": size,
        "concurrency": concurrency,
        "mode": f"open loop {rate}/s" if rate else "closed loop",
        "erasure": {k: v for k, v in erasure.items() if k not in ("start", "end")},
        "cpu": cpu.report(),
        "errors": res.summary()["errors"],
    }
    if "start" in erasure:
        t0, t1 = erasure["start"], erasure["end"]
        first = res.timeline[0][0] if res.timeline else t0
        last = res.timeline[-1][0] if res.timeline else t1
        out["before"] = window(first, t0)
        # Requests that started during the erasure, and those already in flight when it began.
        out["during"] = window(t0, t1)
        out["after"] = window(t1, last + 1)
        out["during_p99_ms"] = out["during"].get("p99_ms")
    out["projections_after"] = wait_projections(srv, timeout=300)
    return out


def print_summary(r: dict[str, Any]) -> None:
    e = r["erasure"]
    print(
        f"\nerasure under single-event intake at {r['entries']:,} entries (PostgreSQL, ledger serve --workers 2, "
        f"{r['mode']}, {r['concurrency']} connections)"
    )
    print(
        f"  erasure of entry {e.get('seq')}: HTTP {e.get('status')} in {e.get('seconds')} s; the log grew by "
        f"{e.get('log_growth_during', 0):,} entries meanwhile; projection lag right after {e.get('lag_right_after')}"
    )
    for k in ("before", "during", "after"):
        w = r.get(k)
        if w:
            print(
                f"  intake {k:<7} {w['requests']:>7,} requests {w['requests_per_s']:>8,.0f}/s  p50 "
                f"{w.get('p50_ms', 0):8.2f} ms  p99 {w.get('p99_ms', 0):8.2f} ms  max {w.get('max_ms', 0):8.2f} ms"
                f"  errors {w['errors']}"
            )
    pa = r["projections_after"]
    print(f"  projections caught up {pa['seconds']} s after the load (lag then {pa['lag_at_start']}); cpu {r['cpu']}")
    print(f"  target: intake p99 during the erasure <= {TARGET_P99_MS:.0f} ms")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", type=int, default=100_000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rate", type=float, help="open loop at this many events/s (default: closed loop)")
    p.add_argument("--before", type=float, default=5.0, help="seconds of load before the erasure")
    p.add_argument("--after", type=float, default=5.0, help="seconds of load after it")
    add_server_env(p)
    a = p.parse_args(argv)
    remember_start()
    with running_server(env=parse_env(a.server_env)) as srv:
        fill = fill_direct(srv, a.entries)
        r = run(srv, concurrency=a.concurrency, rate=a.rate, before=a.before, after=a.after)
    r["fill"] = fill
    print_summary(r)
    write_results("erasure", {"command": " ".join(["python", *sys.argv]), "erasure": r})


if __name__ == "__main__":
    main()
