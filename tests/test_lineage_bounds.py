"""Bounded lineage walks (issue 10, point 6): a hub dataset read and written by 300 jobs once made
one `GET /lineage?depth=100` take 36 s, and 16 of them starved every other request; a `nodeId` of a
thousand `:` cost half a second. Benchmark-style: the bounds are asserted, the figures printed."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from conftest import auth, start_server, stop_server
from events import dataset, run_event

import ledger.reads.lineage as reads
from ledger.lineage.nodeid import MAX_READINGS, NodeId

JOBS = 300


def _hub(n: int = JOBS) -> list[dict[str, Any]]:
    return [
        run_event(namespace="etl", job=f"job{i:03}", inputs=[dataset("etl", "hub")], outputs=[dataset("etl", "hub")])
        for i in range(n)
    ]


def test_a_hub_graph_answers_within_a_second(client, tokens, runtime) -> None:
    r = client.post("/api/v1/lineage/batch", json=_hub(), headers=auth(tokens.pipeline))
    assert r.get_json()["summary"]["successful"] == JOBS
    runtime.projector.sync_to_head()  # time the walk, not the projections catching up
    for node in ("dataset:etl:hub", "job:etl:job000"):
        took = []
        for _ in range(3):  # the best of three: the machine running the suite is shared
            t0 = time.perf_counter()
            r = client.get(f"/api/v1/lineage?nodeId={node}&depth=100", headers=auth(tokens.auditor))
            took.append(time.perf_counter() - t0)
            assert r.status_code == 200
            graph = r.get_json()
            assert len(graph["graph"]) == JOBS + 1 and "truncated" not in graph
        print(f"hub of {JOBS} jobs, {node}, depth 100: " + ", ".join(f"{t:.3f}" for t in took) + " s")
        assert min(took) <= 1.0


def test_a_graph_past_the_caps_is_truncated_and_says_so(client, tokens, monkeypatch) -> None:
    client.post("/api/v1/lineage/batch", json=_hub(120), headers=auth(tokens.pipeline))
    monkeypatch.setattr(reads, "MAX_GRAPH_NODES", 50)
    graph = client.get("/api/v1/lineage?nodeId=dataset:etl:hub&depth=100", headers=auth(tokens.auditor)).get_json()
    assert graph["truncated"] is True and len(graph["graph"]) <= 50
    monkeypatch.setattr(reads, "MAX_GRAPH_NODES", 10_000)
    monkeypatch.setattr(reads, "MAX_GRAPH_EDGES", 30)
    graph = client.get("/api/v1/lineage?nodeId=dataset:etl:hub&depth=100", headers=auth(tokens.auditor)).get_json()
    assert graph["truncated"] is True
    assert sum(len(n["inEdges"]) for n in graph["graph"]) <= 30
    # The depth is bounded too.
    r = client.get("/api/v1/lineage?nodeId=dataset:etl:hub&depth=101", headers=auth(tokens.auditor))
    assert r.status_code == 400 and r.get_json()["field"] == "depth"


@pytest.mark.parametrize("kind", ["dataset", "datasetField", "job"])
def test_a_node_id_is_parsed_once_in_linear_time(kind: str) -> None:
    for text in (":" * 2000, "a" + ":" * 2000 + "b", ":a" * 1000, "s3://x:" + "1:" * 1000):
        t0 = time.perf_counter()
        node = NodeId.parse(f"{kind}:{text}")
        readings = list(node.candidates())
        took = time.perf_counter() - t0
        assert len(readings) <= MAX_READINGS
        assert list(node.candidates()) == readings  # worked out once
        assert took < 0.05, (kind, text[:20], took)


def test_a_long_node_id_over_http_is_quick(client, tokens) -> None:
    for kind in ("dataset", "datasetField", "job"):
        t0 = time.perf_counter()
        r = client.get(f"/api/v1/lineage?nodeId={kind}:" + ":" * 2000, headers=auth(tokens.auditor))
        assert r.status_code in (400, 404)
        assert time.perf_counter() - t0 < 0.5


def test_sixteen_concurrent_hub_walks_leave_healthz_under_a_second(tmp_path, database_url) -> None:
    srv = start_server(tmp_path, database_url)
    try:
        token = srv.add_principal("etl", "pipeline")
        r = requests.post(f"{srv.url}/api/v1/lineage/batch", json=_hub(), headers=auth(token), timeout=120)
        assert r.json()["summary"]["successful"] == JOBS
        url = f"{srv.url}/api/v1/lineage?nodeId=dataset:etl:hub&depth=100"
        assert requests.get(url, headers=auth(token), timeout=60).status_code == 200  # caught up
        done = threading.Event()
        walks: list[float] = []

        def walk() -> None:
            while not done.is_set():
                t0 = time.perf_counter()
                assert requests.get(url, headers=auth(token), timeout=60).status_code == 200
                walks.append(time.perf_counter() - t0)

        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(walk) for _ in range(16)]
            health: list[float] = []
            try:
                end = time.monotonic() + 8
                while time.monotonic() < end:
                    t0 = time.perf_counter()
                    assert requests.get(f"{srv.url}/healthz", timeout=10).status_code == 200
                    health.append(time.perf_counter() - t0)
                    time.sleep(0.2)
            finally:
                done.set()
            for f in futures:
                f.result()
        print(f"16 concurrent hub walks: {len(walks)} walks, slowest {max(walks):.2f} s; "
              f"/healthz slowest {max(health):.3f} s of {len(health)}")
        assert max(health) < 1.0
    finally:
        stop_server(srv)
