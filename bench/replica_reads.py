"""Auditors' reads from a PostgreSQL streaming replica while pipelines post to the primary.

What it measures
- A real streaming replica of the local PostgreSQL (tests/pg_replica.py: `pg_basebackup -R -X stream`
  through a slot of its own, on a free port, run as the postgres user) and `ledger serve --workers 2`
  on a fresh database with `LEDGER_READ_DATABASE_URL` naming the replica.
- The log is seeded with `--seed` events (batch API). Then, for `--duration` seconds each:
  1. reads alone: `--readers` auditor connections, each request one of: an entry
     (`GET /api/v1/log/entries/<seq>?min_seq=<seq>`), its inclusion proof in the seeded tree, or the
     runs of its job (`GET /api/v1/namespaces/<ns>/jobs/<job>/runs?min_seq=<seq>`), as an auditor
     holding a receipt for `seq` does;
  2. the same reads while `--writers` pipeline connections post single events to the primary.
  Reported: reads/s and p50/p99 of each, events/s of the pipelines, and where the reads went: the
  transactions the replica committed in the ledger's database (its own `pg_stat_database` count)
  during each measurement, next to the reads answered.

    python bench/replica_reads.py [--quick] [--duration S] [--seed N] [--readers 8] [--writers 8]

Needs what the tests need (`.ci/replication`: replication connections from 127.0.0.1 allowed).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from typing import Any

import psycopg
from common import (
    REPO,
    CpuMeter,
    EventFactory,
    HttpConnection,
    Server,
    add_server_env,
    auth_headers,
    batch_successes,
    log,
    log_size,
    parse_env,
    pg_database,
    remember_start,
    run_load,
    running_server,
    wait_projections,
    write_results,
)

sys.path.insert(0, str(REPO / "tests"))
from pg_replica import Replica, replication_problem, start_replica


def _commits(port: int, dbname: str) -> int:
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as c:
        c.execute("SELECT pg_stat_force_next_flush()")
        row = c.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (dbname,)).fetchone()
    return int(row[0]) if row else 0


def _settled_commits(port: int, dbname: str) -> int:
    """The replica's count once its backends' pending statistics are flushed (at most a second after
    their last transaction). Nothing but the ledger's reads runs there: it settles once they stop."""
    last, stable = -1, 0
    while stable < 2:
        time.sleep(1.0)
        now = _commits(port, dbname)
        stable = stable + 1 if now == last else 0
        last = now
    return last


def _seed(srv: Server, count: int) -> list[tuple[int, str, str]]:
    """Posts `count` events in batches; returns (seq, namespace, job) of each run event."""
    factory = EventFactory()
    headers = auth_headers(srv.token, json_body=True)
    conn = HttpConnection("127.0.0.1", srv.port)
    out: list[tuple[int, str, str]] = []
    while len(out) < count:
        body = factory.batch(min(500, count - len(out)))
        status, resp = conn.request("POST", "/api/v1/lineage/batch", body, headers)
        if status != 200 or not batch_successes(status, resp):
            raise RuntimeError(f"seeding: HTTP {status} {resp[:300]!r}")
        events = json.loads(body)
        for r in json.loads(resp)["receipts"]:
            job = events[r["index"]]["job"]
            out.append((r["receipt"]["seq"], job["namespace"], job["name"]))
    conn.close()
    return out


def _reads(srv: Server, token: str, seeded: list[tuple[int, str, str]], size: int) -> Any:
    headers = auth_headers(token)
    rng = random.Random(7)
    lock = threading.Lock()

    def make(_i: int) -> tuple[str, str, bytes, bytes, int]:
        with lock:
            seq, ns, job = rng.choice(seeded)
            kind = rng.randrange(3)
        if kind == 0:
            path = f"/api/v1/log/entries/{seq}?min_seq={seq}"
        elif kind == 1:
            path = f"/api/v1/log/proof/inclusion?seq={seq}&tree_size={size}"
        else:
            path = f"/api/v1/namespaces/{ns}/jobs/{job}/runs?min_seq={seq}&limit=10"
        return "GET", path, headers, b"", 1

    return make


def measure(
    srv: Server, replica: Replica, reader: Any, *, readers: int, writers: int, duration: float
) -> dict[str, Any]:
    factory = EventFactory()
    post_headers = auth_headers(srv.token, json_body=True)
    results: dict[str, Any] = {}
    before = _settled_commits(replica.port, srv.dbname)
    size_before = log_size(srv)

    def post(_i: int) -> tuple[str, str, bytes, bytes, int]:
        return "POST", "/api/v1/lineage", post_headers, factory.one(), 1

    def writing() -> None:
        results["writes"] = run_load(srv.port, post, concurrency=writers, duration=duration, warmup=1)

    with CpuMeter(srv, srv.dbname) as cpu:
        th = threading.Thread(target=writing) if writers else None
        if th is not None:
            th.start()
        results["reads"] = run_load(srv.port, reader, concurrency=readers, duration=duration, warmup=1)
        if th is not None:
            th.join()
    after = _settled_commits(replica.port, srv.dbname)
    reads = results["reads"].summary()
    out: dict[str, Any] = {
        "readers": readers,
        "writers": writers,
        "reads_per_s": reads["requests_per_s"],
        "read_latency": reads["latency"],
        "read_errors": reads["errors"],
        "read_first_error": reads["first_error"],
        "cpu": cpu.report(),
        "replica_transactions": after - before,
        "reads_ok": results["reads"].ok,
        "log_growth": log_size(srv) - size_before,
    }
    if "writes" in results:
        w = results["writes"].summary()
        out.update(events_per_s=w["items_per_s"], write_latency=w["latency"], write_errors=w["errors"])
        out["projections_after"] = wait_projections(srv, timeout=300)
    label = f"reads, {readers} auditors" + (f" + {writers} pipelines posting" if writers else " alone")
    log(
        f"  {label}: {out['reads_per_s']:,.0f} reads/s (p50 {reads['latency'].get('p50_ms')} ms, "
        f"p99 {reads['latency'].get('p99_ms')} ms, errors {reads['errors']})"
        + (f", {out['events_per_s']:,.0f} events/s posted" if writers else "")
        + f"; the replica committed {out['replica_transactions']:,} transactions for {out['reads_ok']:,} reads"
    )
    return out


def print_summary(r: dict[str, Any]) -> None:
    print(f"\nreads from a streaming replica (ledger serve --workers 2, {r['seeded']:,} entries seeded)")
    print(
        f"  {'measurement':<34}{'reads/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'events/s':>10}"
        f"{'reads':>9}{'replica tx':>11}{'busy':>6}"
    )
    for m in r["measurements"]:
        label = f"{m['readers']} auditors" + (f" + {m['writers']} pipelines" if m["writers"] else " alone")
        lat = m["read_latency"]
        ev = f"{m['events_per_s']:,.0f}" if "events_per_s" in m else "-"
        print(
            f"  {label:<34}{m['reads_per_s']:>9,.0f}{lat.get('p50_ms', 0):>8.1f}{lat.get('p99_ms', 0):>8.1f}"
            f"{ev:>10}{m['reads_ok']:>9,}{m['replica_transactions']:>11,}"
            f"{m['cpu']['machine_busy_cores']:>6.2f}"
        )
    print(
        "  (replica tx: transactions the replica committed in the ledger's database during the measurement,"
        " from its own pg_stat_database: a read served there is its position and the read's own, several for a list)"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="8 s per measurement and 2,000 seeded events")
    p.add_argument("--duration", type=float, help="seconds per measurement (default 20)")
    p.add_argument("--seed", type=int, help="events in the log before reading (default 10,000)")
    p.add_argument("--readers", type=int, default=8, help="auditor connections")
    p.add_argument("--writers", type=int, default=8, help="pipeline connections posting single events")
    add_server_env(p)
    a = p.parse_args(argv)
    problem = replication_problem()
    if problem is not None:
        raise SystemExit(f"cannot start a replica: {problem}")
    duration = a.duration or (8.0 if a.quick else 20.0)
    seed = a.seed or (2_000 if a.quick else 10_000)
    remember_start()
    log("starting a streaming replica (pg_basebackup of the local cluster)")
    with pg_database("bench_replica") as url:
        replica = start_replica()
        try:
            env = {"LEDGER_READ_DATABASE_URL": replica.url(url, "ledger-bench-replica"), **parse_env(a.server_env)}
            with running_server(url, env=env) as srv:
                auditor = srv.cli("principals", "add", "bench-auditor", "--role", "auditor").stdout.split()[-1]
                log(f"seeding {seed:,} events")
                seeded = _seed(srv, seed)
                wait_projections(srv, timeout=600)
                reader = _reads(srv, auditor, seeded, log_size(srv))
                measurements = [
                    measure(srv, replica, reader, readers=a.readers, writers=0, duration=duration),
                    measure(srv, replica, reader, readers=a.readers, writers=a.writers, duration=duration),
                ]
        finally:
            replica.destroy()
    r = {"seeded": seed, "duration_s": duration, "measurements": measurements}
    print_summary(r)
    write_results("replica_reads", {"command": " ".join(["python", *sys.argv]), "replica_reads": r})


if __name__ == "__main__":
    main()
