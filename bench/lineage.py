"""Lineage graph query latency: `GET /api/v1/lineage?nodeId=...&depth=20` on a 100,000-node graph,
on PostgreSQL, against `ledger serve --workers 2` over loopback. Target: p95 <= 100 ms.

The graph is built through the real intake path (validation, log append, lineage projection), in
process and in batches of 1,000 events, which is the fast honest way to get 100k nodes into the
projection: 100 layers of 500 datasets, each dataset written by one job that reads one or two datasets of
the layer below: its own lane, and for one job in ten also the neighbouring lane (so a node's closure
grows with depth, as real lineage does, instead of exploding to the whole graph).
50,000 jobs + 50,000 datasets = 100,000 nodes.

Queries start from random datasets in the middle layers, both directions, depth 20.

    python bench/lineage.py [--layers 100] [--width 500] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import HttpConnection, log, percentiles, pg_database, running_server

PRODUCER = "https://github.com/OpenLineage/OpenLineage/tree/1.24.0/integration/airflow"
SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/definitions/RunEvent"


def ds(layer: int, i: int) -> dict[str, Any]:
    return {"namespace": "warehouse", "name": f"l{layer:03d}.t{i:04d}", "facets": {}}


def event(layer: int, i: int, width: int) -> dict[str, Any]:
    # Every job reads its own lane's dataset of the layer below; one in ten also joins in the next
    # lane, so lineage branches and merges as real pipelines do without every node reaching all.
    inputs = [ds(layer - 1, i)] if layer else []
    if layer and i % 10 == 0:
        inputs.append(ds(layer - 1, (i + 1) % width))
    return {
        "eventType": "COMPLETE",
        "eventTime": "2026-11-21T10:00:00.000Z",
        "producer": PRODUCER,
        "schemaURL": SCHEMA,
        "run": {"runId": str(uuid.uuid4()), "facets": {}},
        "job": {"namespace": "dag", "name": f"l{layer:03d}.job{i:04d}", "facets": {}},
        "inputs": inputs,
        "outputs": [ds(layer, i)],
    }


def fill(database_url: str, data_dir: Path, layers: int, width: int) -> float:
    from ledger.config import Settings
    from ledger.runtime import build_runtime, initialise
    from ledger.security.principals import AuthenticatedPrincipal

    settings = Settings.from_env(
        {
            "LEDGER_DATA_DIR": str(data_dir),
            "LEDGER_DATABASE_URL": database_url,
            "LEDGER_POLICY_DIR": str(Path(__file__).resolve().parent.parent / "policies"),
        }
    )
    initialise(settings)
    rt = build_runtime(settings)
    who = AuthenticatedPrincipal("bench", frozenset({"pipeline"}))
    t0 = time.perf_counter()
    batch: list[dict[str, Any]] = []
    for layer in range(layers):
        for i in range(width):
            batch.append(event(layer, i, width))
            if len(batch) == 1000:
                rt.intake.record_batch(batch, who)
                batch = []
        if layer % 10 == 9:
            log(f"  {layer + 1} layers ({(layer + 1) * width * 2:,} nodes) in {time.perf_counter() - t0:.0f} s")
    if batch:
        rt.intake.record_batch(batch, who)
    # Log first: the intake wrote the log alone; apply it to the projections here (the queries
    # below read them), so that the server starts with nothing to catch up.
    t1 = time.perf_counter()
    rt.projector.sync_to_head(timeout=3600)
    log(f"  projections applied in {time.perf_counter() - t1:.1f} s")
    rt.close()
    return time.perf_counter() - t0


def _admin_exec_db(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as c:
        c.execute(sql)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=100)
    ap.add_argument("--width", type=int, default=500)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--depth", type=int, default=20)
    a = ap.parse_args()
    nodes = a.layers * a.width * 2
    with pg_database("bench_lineage") as url:
        import tempfile

        data_dir = Path(tempfile.mkdtemp(prefix="ledger-lineage-"))
        log(f"building a {nodes:,}-node graph through the intake ({a.layers} layers x {a.width})")
        fill_s = fill(url, data_dir, a.layers, a.width)
        log(f"built in {fill_s:.1f} s ({a.layers * a.width / fill_s:,.0f} events/s incl. projection)")
        # Planner statistics, as autovacuum would gather them soon after a bulk load: without them
        # PostgreSQL may scan the edge table at each step of the recursive walk.
        _admin_exec_db(url, "ANALYZE")
        with running_server(url) as srv:
            auditor = srv.cli("principals", "add", "bench-auditor", "--role", "auditor").stdout.strip().splitlines()[-1]
            conn = HttpConnection("127.0.0.1", srv.port)
            headers = f"Authorization: Bearer {auditor}\r\n".encode()
            rng = random.Random(7)
            lat: list[float] = []
            sizes: list[int] = []
            for q in range(a.queries + 10):
                layer = rng.randrange(a.layers // 4, 3 * a.layers // 4)
                node = f"dataset:warehouse:l{layer:03d}.t{rng.randrange(a.width):04d}"
                path = f"/api/v1/lineage?nodeId={quote(node)}&depth={a.depth}"
                t = time.perf_counter()
                status, body = conn.request("GET", path, headers=headers)
                dt = time.perf_counter() - t
                if status != 200:
                    raise SystemExit(f"query failed: {status} {body[:300]!r}")
                if q >= 10:  # the first ten warm the caches
                    lat.append(dt)
                    sizes.append(len(json.loads(body)["graph"]))
            conn.close()
    p = percentiles(lat)
    s = sorted(lat)
    p95 = s[int(0.95 * len(s)) - 1] * 1000
    result = {
        "nodes": nodes,
        "depth": a.depth,
        "queries": len(lat),
        "graph_nodes_returned_median": sorted(sizes)[len(sizes) // 2],
        "p50_ms": p["p50_ms"],
        "p95_ms": round(p95, 3),
        "p99_ms": p["p99_ms"],
        "fill_s": round(fill_s, 1),
    }
    print(json.dumps(result))
    print(
        f"lineage depth {a.depth} on {nodes:,} nodes (PostgreSQL, ledger serve --workers 2): "
        f"p50 {p['p50_ms']:.1f} ms, p95 {p95:.1f} ms, p99 {p['p99_ms']:.1f} ms "
        f"(median answer {result['graph_nodes_returned_median']} nodes; target p95 <= 100 ms)"
    )


if __name__ == "__main__":
    main()
