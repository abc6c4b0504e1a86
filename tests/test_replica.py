"""Reads from a PostgreSQL streaming replica (LEDGER_READ_DATABASE_URL).

A real replica of the local PostgreSQL 15 (tests/pg_replica.py: pg_basebackup, a port and a folder of
its own) serves the log, lineage and provenance reads; writes and the projector stay on the primary.
The tests show that the replica answers the reads (its own statistics), that a read with a receipt's
`min_seq` is never stale although the replica replays commits late on purpose, and that reads fall
back to the primary when the replica is stopped, `/metrics` saying so, and return when it is back.
A replica needs PostgreSQL for both ends: a SQLite primary is refused at start.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import REQUIRE_PG, auth, drop_pg_database, make_settings, new_pg_database, shared_policy
from events import dataset, run_event
from pg_replica import Replica, replication_problem, start_replica

from ledger.app import create_app
from ledger.errors import ConfigurationError
from ledger.runtime import build_runtime, initialise

APP = "ledger-replica-reads"  # the application_name of the ledger's connections to the replica


@pytest.fixture(scope="module")
def replica() -> Iterator[Replica]:
    problem = replication_problem()
    if problem is not None:
        if REQUIRE_PG:
            pytest.fail(f"a streaming replica cannot be started here: {problem}")
        pytest.skip(f"a streaming replica cannot be started here: {problem}")
    r = start_replica()
    yield r
    r.destroy()


def _replica_sql(replica: Replica, sql: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
    with psycopg.connect(host="127.0.0.1", port=replica.port, user="postgres", dbname=dbname, autocommit=True) as c:
        cur = c.execute(sql)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description is not None else []


def _set_apply_delay(replica: Replica, delay: str) -> None:
    """The replica applies each commit `delay` after the primary made it (0: at once)."""
    _replica_sql(replica, f"ALTER SYSTEM SET recovery_min_apply_delay = '{delay}'")
    _replica_sql(replica, "SELECT pg_reload_conf()")


def _wait_for(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _has_database(replica: Replica, name: str) -> bool:
    return bool(_replica_sql(replica, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"))


@pytest.fixture
def served(tmp_path: Path, replica: Replica) -> Iterator[dict[str, Any]]:
    """A ledger on a fresh database of the primary, reading from the replica; its test client and
    tokens."""
    url = new_pg_database()
    name = url.rsplit("/", 1)[-1]
    _wait_for(lambda: _has_database(replica, name), "the new database on the replica")
    settings = make_settings(tmp_path, url, LEDGER_READ_DATABASE_URL=replica.url(url, APP))
    initialise(settings, policy=shared_policy(settings.policy_dir))
    rt = build_runtime(settings, policy=shared_policy(settings.policy_dir))
    app = create_app(runtime=rt)
    app.config["TESTING"] = True
    pipeline = rt.principals.create("etl-nightly", roles=["pipeline"])[1]
    auditor = rt.principals.create("audit", roles=["auditor"])[1]
    try:
        yield {"rt": rt, "client": app.test_client(), "pipeline": pipeline, "auditor": auditor, "db": name}
    finally:
        rt.close()
        drop_pg_database(url)


def _metric(client: Any, name: str, labels: str = "") -> float:
    text = client.get("/metrics").get_data(as_text=True)
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _post(s: dict[str, Any], run_id: str | None = None, job: str = "clean") -> dict[str, Any]:
    event = run_event(
        job=job, run_id=run_id, inputs=[dataset("s3://raw", "in")], outputs=[dataset("s3://clean", "out")]
    )
    r = s["client"].post("/api/v1/lineage", json=event, headers=auth(s["pipeline"]))
    assert r.status_code == 201, r.get_json()
    return {"run_id": event["run"]["runId"], **r.get_json()["receipt"]}


def _get(s: dict[str, Any], path: str) -> Any:
    r = s["client"].get(path, headers=auth(s["auditor"]))
    assert r.status_code == 200, (path, r.get_json())
    return r.get_json()


def test_log_lineage_and_provenance_reads_are_served_by_the_replica(served: dict[str, Any], replica: Replica) -> None:
    s = served
    rt = s["rt"]
    first = _post(s)
    a = first["seq"]
    _wait_for(lambda: rt.replica.positions()[1] > a, "the replica to replay the first event")
    # The replica stops replaying: from now on it holds the log as it was, the primary moves on.
    _replica_sql(replica, "SELECT pg_wal_replay_pause()")
    try:
        second = _post(s)
        b = second["seq"]
        assert b > a
        reads = _metric(s["client"], "ledger_read_replica_reads_total")
        # Reads that need no more than the first event (min_seq = a) are served by the replica:
        # they show the log and the projections without the second, which only the primary has.
        entries = _get(s, f"/api/v1/log/entries?after={a - 1}&min_seq={a}")
        assert [e["header"]["seq"] for e in entries["entries"]] == [a]
        runs = _get(s, f"/api/v1/namespaces/etl/jobs/clean/runs?min_seq={a}")
        assert [r["id"] for r in runs["runs"]] == [first["run_id"]]
        assert _get(s, f"/api/v1/jobs/runs/{first['run_id']}?min_seq={a}")["id"] == first["run_id"]
        graph = _get(s, f"/api/v1/lineage?nodeId=dataset:s3://clean:out&depth=2&min_seq={a}")
        assert graph["graph"]
        assert _metric(s["client"], "ledger_read_replica_reads_total") == reads + 4
        # A read that names no entry waits for the head at its arrival, which the paused replica never
        # reaches: after the bound, the primary serves it, with the second event.
        behind = _metric(s["client"], "ledger_read_replica_fallbacks_total", '{reason="behind"}')
        runs = _get(s, "/api/v1/namespaces/etl/jobs/clean/runs")
        assert {r["id"] for r in runs["runs"]} == {first["run_id"], second["run_id"]}
        assert _metric(s["client"], "ledger_read_replica_fallbacks_total", '{reason="behind"}') == behind + 1
    finally:
        _replica_sql(replica, "SELECT pg_wal_replay_resume()")
    # Caught up again, the replica serves the second event too.
    assert second["run_id"] in {r["id"] for r in _get(s, "/api/v1/namespaces/etl/jobs/clean/runs")["runs"]}
    assert _metric(s["client"], "ledger_read_replica_reads_total") == reads + 5
    # The ledger's own connections to the replica, named by the URL's application_name.
    sessions = _replica_sql(replica, f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{APP}'")
    assert sessions[0][0] >= 1
    assert _metric(s["client"], "ledger_read_replica_up") == 1.0


def test_a_read_with_a_receipts_min_seq_is_never_stale(served: dict[str, Any], replica: Replica) -> None:
    s = served
    rt = s["rt"]
    assert rt.replica is not None
    _set_apply_delay(replica, "150ms")  # the replica is behind the primary at every read below
    try:
        behind = 0
        fallbacks = _metric(s["client"], "ledger_read_replica_fallbacks_total", '{reason="behind"}')
        reads = _metric(s["client"], "ledger_read_replica_reads_total")
        for i in range(20):
            receipt = _post(s, job=f"job_{i}")
            seq = receipt["seq"]
            have, _applied = rt.replica.positions()
            behind += have <= seq  # the replica has not replayed the entry yet
            r = s["client"].get(f"/api/v1/jobs/runs/{receipt['run_id']}?min_seq={seq}", headers=auth(s["auditor"]))
            assert r.status_code == 200, r.get_json()
            assert r.get_json()["id"] == receipt["run_id"]
            # The log's own reads: the entry and a proof in the tree the receipt names.
            r = s["client"].get(f"/api/v1/log/entries/{seq}", headers=auth(s["auditor"]))
            assert r.status_code == 200 and r.get_json()["header"]["seq"] == seq
            proof = s["client"].get(
                f"/api/v1/log/proof/inclusion?seq={seq}&tree_size={seq + 1}", headers=auth(s["auditor"])
            )
            assert proof.status_code == 200, proof.get_json()
            assert proof.get_json()["leaf_hash"] == receipt["leaf_hash"]
            # Without min_seq, a read waits for the head at its arrival: the job just written is there.
            r = s["client"].get(f"/api/v1/namespaces/etl/jobs/job_{i}", headers=auth(s["auditor"]))
            assert r.status_code == 200, r.get_json()
        assert behind >= 10, f"the replica was behind at only {behind} of 20 reads: the test shows nothing"
        # All were served by the replica, once it had replayed them.
        assert _metric(s["client"], "ledger_read_replica_reads_total") >= reads + 80
        assert _metric(s["client"], "ledger_read_replica_fallbacks_total", '{reason="behind"}') == fallbacks

        # Further behind than the bound a read waits for the replica: the primary serves it, fresh.
        _set_apply_delay(replica, "3s")
        receipt = _post(s, job="late")
        r = s["client"].get(
            f"/api/v1/jobs/runs/{receipt['run_id']}?min_seq={receipt['seq']}", headers=auth(s["auditor"])
        )
        assert r.status_code == 200 and r.get_json()["id"] == receipt["run_id"]
        assert _metric(s["client"], "ledger_read_replica_fallbacks_total", '{reason="behind"}') == fallbacks + 1
    finally:
        _set_apply_delay(replica, "0")


def test_reads_fall_back_to_the_primary_while_the_replica_is_away(served: dict[str, Any], replica: Replica) -> None:
    s = served
    client = s["client"]
    assert _metric(client, "ledger_read_replica_up") == 1.0
    replica.stop()
    try:
        down = _metric(client, "ledger_read_replica_fallbacks_total", '{reason="unreachable"}')
        for i in range(5):
            receipt = _post(s, job=f"while_down_{i}")
            r = client.get(
                f"/api/v1/jobs/runs/{receipt['run_id']}?min_seq={receipt['seq']}", headers=auth(s["auditor"])
            )
            assert r.status_code == 200, r.get_json()
            r = client.get(f"/api/v1/log/entries/{receipt['seq']}", headers=auth(s["auditor"]))
            assert r.status_code == 200, r.get_json()
        assert _metric(client, "ledger_read_replica_up") == 0.0
        assert _metric(client, "ledger_read_replica_fallbacks_total", '{reason="unreachable"}') >= down + 10
        assert client.get("/readyz").status_code == 200  # writes are unaffected
    finally:
        replica.start()
    # Back: within a retry interval reads go to the replica again.
    reads = _metric(client, "ledger_read_replica_reads_total")

    def served_by_replica() -> bool:
        receipt = _post(s)
        r = client.get(f"/api/v1/jobs/runs/{receipt['run_id']}?min_seq={receipt['seq']}", headers=auth(s["auditor"]))
        assert r.status_code == 200, r.get_json()
        return _metric(client, "ledger_read_replica_reads_total") > reads

    _wait_for(served_by_replica, "reads to return to the replica", timeout=30)
    assert _metric(client, "ledger_read_replica_up") == 1.0


def test_a_replica_needs_postgresql_at_both_ends(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="LEDGER_READ_DATABASE_URL"):
        make_settings(
            tmp_path,
            f"sqlite:///{tmp_path / 'ledger.db'}",
            LEDGER_READ_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:5433/ledger",
        )
