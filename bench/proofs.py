"""Inclusion-proof latency at a large tree size, and the server's memory.

What it measures
- HTTP: `GET /api/v1/log/proof/inclusion?seq=S&tree_size=N` for uniformly random S in [0, N), N the
  log's size (1,000,000 by default), against `ledger serve --workers 2` on PostgreSQL. Latency
  p50/p90/p99 from one keep-alive connection issuing requests back to back (pure latency), then
  throughput and latency from 8 connections. A sample of the proofs is checked against the signed
  checkpoint's root (RFC 9162 2.1.3.2), so a fast wrong answer would show.
- in-process: `Ledger.inclusion_proof(seq, N)` timed in this process on the same database (no HTTP,
  no Flask), same random seqs.
- memory: VmRSS (and peak VmHWM) from /proc/<pid>/status of the server (granian) master and each worker,
  and their sum, after the proof load (the scheduler process is listed apart). Target: sum <= 300 MB.

How the log is filled: `--fill direct` (default) appends the same ~1.3 KB RunEvents in-process
through `build_runtime(Settings.from_env(...)).ledger.append([...PendingEntry...])` in batches of
5,000 while the server runs (no HTTP, no validation, no lineage projection); `--fill http` posts
them through `POST /api/v1/lineage/batch` (1,000 per request, 4 clients), the honest path. The
fill's duration and rate are reported either way. Target (issue): p50 <= 1 ms.

    python bench/proofs.py [--quick] [--entries 1000000] [--fill direct|http] [--samples 5000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from typing import Any

from common import (
    CpuMeter,
    Server,
    add_server_env,
    auth_headers,
    fill_direct,
    fill_http,
    log,
    log_size,
    parse_env,
    percentiles,
    pg_table_sizes,
    remember_start,
    run_load,
    running_server,
    write_results,
)

P50_TARGET_MS = 1.0
RSS_TARGET_MB = 300.0


def ensure_size(srv: Server, entries: int, fill: str) -> dict[str, Any] | None:
    if log_size(srv) >= entries:
        return None
    if fill == "http":
        return fill_http(srv, entries)
    return fill_direct(srv, entries)


def _check_sample(srv: Server, size: int, bodies: list[bytes]) -> dict[str, int]:
    """Verifies proofs against the root of the signed checkpoint of `size` (fetched once)."""
    from common import HttpConnection

    from ledger.tlog.note import Checkpoint, NoteVerifier
    from ledger.tlog.proofs import root_from_inclusion_proof

    _, note = HttpConnection("127.0.0.1", srv.port).request("GET", "/api/v1/log/checkpoint")
    cp = Checkpoint.parse(NoteVerifier.parse(srv.vkey).verify(note.decode()))
    ok = bad = 0
    if cp.size != size:
        return {"checked": 0, "verified": 0, "failed": 0, "skipped_reason_size_changed": 1}
    for b in bodies:
        d = json.loads(b)
        root = root_from_inclusion_proof(
            d["seq"], d["tree_size"], bytes.fromhex(d["leaf_hash"]), [bytes.fromhex(h) for h in d["hashes"]]
        )
        if root == cp.root_hash:
            ok += 1
        else:
            bad += 1
    return {"checked": ok + bad, "verified": ok, "failed": bad}


def bench_http(srv: Server, size: int, samples: int, concurrency: int) -> dict[str, Any]:
    headers = auth_headers(srv.token)
    rng = random.Random(1)
    seqs = [rng.randrange(size) for _ in range(samples)]
    kept: list[bytes] = []

    def make(i: int) -> tuple[str, str, bytes, bytes, int]:
        s = seqs[i % len(seqs)] if i >= 0 else rng.randrange(size)
        return "GET", f"/api/v1/log/proof/inclusion?seq={s}&tree_size={size}", headers, b"", 1

    def check(status: int, body: bytes) -> int:
        if status != 200:
            return 0
        if len(kept) < 200:
            kept.append(body)
        return 1

    # The floor of the HTTP stack (granian, Flask, no auth, no database): GET /healthz; and one
    # database session without the proof: GET /readyz.
    floors = {}
    for path in ("/healthz", "/readyz"):
        res = run_load(
            srv.port, lambda _i, p=path: ("GET", p, b"", b"", 1), concurrency=1, count=min(samples, 1000), warmup=20
        )
        floors[path] = percentiles(res.latencies)
    log(
        f"  floor: /healthz p50 {floors['/healthz'].get('p50_ms')} ms, /readyz p50 {floors['/readyz'].get('p50_ms')} ms"
    )
    log(f"HTTP inclusion proofs at tree size {size:,}: {samples} sequential requests")
    with CpuMeter(srv, srv.dbname) as cpu1:
        seq_res = run_load(srv.port, make, concurrency=1, count=samples, check=check, warmup=50)
    log(
        f"  sequential: p50 {percentiles(seq_res.latencies).get('p50_ms')} ms, "
        f"p99 {percentiles(seq_res.latencies).get('p99_ms')} ms, errors {seq_res.errors}"
    )
    log(f"HTTP inclusion proofs: {concurrency} connections, {samples * 2} requests")
    with CpuMeter(srv, srv.dbname) as cpu2:
        conc_res = run_load(srv.port, make, concurrency=concurrency, count=samples * 2, check=check, warmup=20)
    log(
        f"  concurrent: {conc_res.ok / conc_res.wall_s:,.0f} proofs/s, p50 "
        f"{percentiles(conc_res.latencies).get('p50_ms')} ms, errors {conc_res.errors}"
    )
    return {
        "sequential": {**seq_res.summary(), "cpu": cpu1.report()},
        "concurrent": {"concurrency": concurrency, **conc_res.summary(), "cpu": cpu2.report()},
        "verified_sample": _check_sample(srv, size, kept),
        "floor_latency": floors,
    }


def bench_inprocess(srv: Server, size: int, samples: int) -> dict[str, Any]:
    from ledger.config import Settings
    from ledger.runtime import build_runtime

    rt = build_runtime(Settings.from_env(srv.env))
    try:
        rng = random.Random(2)
        for _ in range(50):  # connection pool, statement caches
            rt.ledger.inclusion_proof(rng.randrange(size), size)
        lat: list[float] = []
        perf = time.perf_counter
        for _ in range(samples):
            s = rng.randrange(size)
            t0 = perf()
            rt.ledger.inclusion_proof(s, size)
            lat.append(perf() - t0)
    finally:
        rt.close()
    out = {"samples": samples, "latency": percentiles(lat)}
    log(f"in-process Ledger.inclusion_proof: p50 {out['latency']['p50_ms']} ms, p99 {out['latency']['p99_ms']} ms")
    return out


def run(
    srv: Server, *, entries: int, samples: int = 5000, fill: str = "direct", fill_report: dict[str, Any] | None = None
) -> dict[str, Any]:
    fill_report = ensure_size(srv, entries, fill) or fill_report
    size = log_size(srv)
    http = bench_http(srv, size, samples, concurrency=8)
    inproc = bench_inprocess(srv, size, samples)
    mem = srv.memory()
    log(f"server memory after proof load: {mem['server_total_rss_mb']} MB (master+workers)")
    return {
        "tree_size": size,
        "fill": fill_report,
        "http": http,
        "inprocess": inproc,
        "memory": mem,
        "db_bytes": pg_table_sizes(srv.database_url),
        "http_p50_ms": http["sequential"]["latency"].get("p50_ms"),
        "http_p99_ms": http["sequential"]["latency"].get("p99_ms"),
        "inprocess_p50_ms": inproc["latency"]["p50_ms"],
        "inprocess_p99_ms": inproc["latency"]["p99_ms"],
        "rss_total_mb": mem["server_total_rss_mb"],
    }


def print_summary(r: dict[str, Any]) -> None:
    h = r["http"]
    print(f"\ninclusion proofs at tree size {r['tree_size']:,} (PostgreSQL, ledger serve --workers 2)")
    if r.get("fill"):
        f = r["fill"]
        print(
            f"  fill: {f['entries_added']:,} entries via {f['method']} in {f['seconds']} s ({f['events_per_s']:,.0f}/s)"
        )
    for name, key in (("HTTP, 1 connection", "sequential"), ("HTTP, 8 connections", "concurrent")):
        lat = h[key]["latency"]
        print(
            f"  {name:<24} p50 {lat.get('p50_ms', 0):7.3f} ms  p90 {lat.get('p90_ms', 0):7.3f} ms  "
            f"p99 {lat.get('p99_ms', 0):7.3f} ms  {h[key]['requests_per_s']:>8,.0f} proofs/s  "
            f"server {h[key]['cpu']['server_cores']:.2f} cores"
        )
    for path, lat in h.get("floor_latency", {}).items():
        label = f"GET {path} (floor)"
        print(
            f"  {label:<24} p50 {lat.get('p50_ms', 0):7.3f} ms  p90 {lat.get('p90_ms', 0):7.3f} ms  "
            f"p99 {lat.get('p99_ms', 0):7.3f} ms"
        )
    lat = r["inprocess"]["latency"]
    print(
        f"  {'Ledger.inclusion_proof':<24} p50 {lat['p50_ms']:7.3f} ms  p90 {lat['p90_ms']:7.3f} ms  "
        f"p99 {lat['p99_ms']:7.3f} ms"
    )
    v = h["verified_sample"]
    print(f"  proofs checked against the signed checkpoint: {v.get('verified', 0)}/{v.get('checked', 0)}")
    m = r["memory"]
    workers = ", ".join(f"{w['rss_mb']:.0f}" for w in m["workers"])
    sched = ", ".join(f"{s['rss_mb']:.0f}" for s in m["scheduler"])
    print(
        f"  RSS: master {m['master']['rss_mb']:.0f} MB + workers [{workers}] MB + applier "
        f"{sum(a['rss_mb'] for a in m.get('applier', [])):.0f} MB = "
        f"{m['server_total_rss_mb']:.0f} MB (PSS {m['server_total_pss_mb']:.0f} MB; "
        f"scheduler process apart: {sched} MB)"
    )
    print(f"  targets: p50 <= {P50_TARGET_MS} ms, RSS <= {RSS_TARGET_MB:.0f} MB")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="100,000 entries, 2,000 samples")
    p.add_argument("--entries", type=int, help="tree size to measure at (default 1,000,000)")
    p.add_argument("--samples", type=int, help="proof requests per measurement (default 5,000)")
    p.add_argument("--fill", choices=["direct", "http"], default="direct")
    add_server_env(p)
    a = p.parse_args(argv)
    remember_start()
    entries = a.entries or (100_000 if a.quick else 1_000_000)
    samples = a.samples or (2_000 if a.quick else 5_000)
    with running_server(env=parse_env(a.server_env)) as srv:
        r = run(srv, entries=entries, samples=samples, fill=a.fill)
    print_summary(r)
    write_results("proofs", {"command": " ".join(["python", *sys.argv]), "proofs": r})


if __name__ == "__main__":
    main()
