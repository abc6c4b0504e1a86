"""Log first (DESIGN.md 8): appends write only the log; every projection follows it with a watermark.

Each test runs on SQLite and PostgreSQL, against the real projections and the real log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, auth, projection_snapshot
from events import dataset, run_event
from pipeline import registration, validation
from sqlalchemy import func, select

from ledger.lineage.models import Run
from ledger.projections import PROJECTIONS, rebuild_all
from ledger.runtime import Runtime
from ledger.security.principals import AuthenticatedPrincipal
from ledger.store.projector import Projection, Projector

PIPELINE = AuthenticatedPrincipal("etl-nightly", frozenset({"pipeline"}))


def _post_events(runtime: Runtime, n: int, *, batch: int = 50) -> None:
    events = [
        run_event(
            job=f"job_{i % 7}",
            inputs=[dataset("s3://raw", f"in_{i % 5}")],
            outputs=[dataset("s3://clean", f"out_{i % 11}")],
        )
        for i in range(n)
    ]
    for i in range(0, n, batch):
        runtime.intake.record_batch(events[i : i + batch], PIPELINE)


def _runs(runtime: Runtime) -> int:
    with runtime.db.read() as s:
        return int(s.execute(select(func.count()).select_from(Run)).scalar_one())


def test_an_append_writes_the_log_alone_and_the_projector_follows(runtime: Runtime) -> None:
    # The `runtime` fixture starts no background applier: nothing projects until asked.
    head = runtime.ledger.size()
    _post_events(runtime, 30)
    assert runtime.ledger.size() == head + 30
    assert _runs(runtime) == 0  # the append wrote no projection row
    assert runtime.projector.lag()["lineage"] == head + 30  # the policy bundle entry too: nothing applied yet
    assert runtime.projector.sync_to_head() == head + 30
    assert _runs(runtime) == 30
    assert set(runtime.projector.lag().values()) == {0}
    state = projection_snapshot(runtime)
    rebuild_all(runtime.projector)
    assert projection_snapshot(runtime) == state  # following the log == replaying it


def test_a_batch_that_fails_midway_leaves_nothing_half_applied(runtime: Runtime) -> None:
    _post_events(runtime, 20)
    real = PROJECTIONS[1]  # classification, after lineage has written this batch's rows

    def fail_after_writing(session, entries):  # type: ignore[no-untyped-def]
        real.apply(session, entries)
        raise RuntimeError("killed mid-batch")

    broken = Projector(
        runtime.db, [PROJECTIONS[0], Projection(real.name, real.kinds, real.tables, fail_after_writing), PROJECTIONS[2]]
    )
    with pytest.raises(RuntimeError, match="killed mid-batch"):
        broken.step()
    assert _runs(runtime) == 0  # lineage's rows of that batch went with the failure
    assert set(runtime.projector.watermarks().values()) == {0}
    runtime.projector.sync_to_head()
    state = projection_snapshot(runtime)
    rebuild_all(runtime.projector)
    assert projection_snapshot(runtime) == state


KILLABLE = """
import sys, time
from ledger.config import Settings
from ledger.runtime import build_runtime
rt = build_runtime(Settings.from_env())
rt.projector.batch = 7
print("ready", flush=True)
while rt.projector.step():
    time.sleep(0.05)
print("done", flush=True)
"""


def test_a_projector_killed_by_sigkill_resumes_from_its_watermark(runtime: Runtime, tmp_path: Path) -> None:
    _post_events(runtime, 200)
    head = runtime.ledger.size()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    s = runtime.settings
    env.update(
        LEDGER_DATA_DIR=str(s.data_dir),
        LEDGER_DATABASE_URL=s.database_url,
        LEDGER_ORIGIN=s.origin,
        LEDGER_POLICY_DIR=str(s.policy_dir),
    )
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while runtime.projector.watermarks()["lineage"] < 40:  # a few batches in, many to go
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    stopped_at = runtime.projector.watermarks()["lineage"]
    assert 0 < stopped_at < head
    # Every batch below the watermark is whole, none above it: the runs projected are exactly the
    # run events below the watermark.
    below = [e for e in runtime.ledger.entries(kind="openlineage.run_event", limit=1000) if e.header.seq < stopped_at]
    assert _runs(runtime) == len(below)
    runtime.projector.sync_to_head()
    resumed = projection_snapshot(runtime)
    rebuild_all(runtime.projector)
    assert projection_snapshot(runtime) == resumed


def test_reads_wait_for_their_writes_and_say_when_they_cannot(client, tokens, runtime: Runtime, monkeypatch) -> None:
    from ledger.api import consistency

    r = client.post("/api/v1/lineage", json=run_event(job="fresh"), headers=auth(tokens.pipeline))
    seq = r.get_json()["receipt"]["seq"]
    # With a receipt in hand, a read sees the write, by header or by query parameter.
    got = client.get(f"/api/v1/namespaces/etl/jobs/fresh?min_seq={seq}", headers=auth(tokens.auditor))
    assert got.status_code == 200
    got = client.get("/api/v1/namespaces/etl/jobs/fresh", headers={**auth(tokens.auditor), "Ledger-Min-Seq": str(seq)})
    assert got.status_code == 200
    # An entry the log does not hold yet, or a malformed one, is named.
    bad = client.get(f"/api/v1/namespaces?min_seq={seq + 100}", headers=auth(tokens.auditor))
    assert bad.status_code == 400 and bad.get_json()["field"] == "min_seq"
    bad = client.get("/api/v1/namespaces", headers={**auth(tokens.auditor), "Ledger-Min-Seq": "x"})
    assert bad.status_code == 400 and bad.get_json()["field"] == "Ledger-Min-Seq"

    # While another applier holds the projector lock and never finishes, a read gives up in time.
    monkeypatch.setattr(consistency, "READ_WAIT_SECONDS", 0.5)
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with runtime.db.projecting() as session:
            assert session is not None
            session.connection()
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        if not runtime.db.is_sqlite:  # on SQLite the projector lock is the one writer's lock
            r = client.post("/api/v1/lineage", json=run_event(job="later"), headers=auth(tokens.pipeline))
            assert r.status_code == 201  # appends do not wait for projections
            later = r.get_json()["receipt"]["seq"]
            t0 = time.monotonic()
            lag = client.get(f"/api/v1/namespaces/etl/jobs/later?min_seq={later}", headers=auth(tokens.auditor))
            assert lag.status_code == 503, lag.get_data(as_text=True)
            assert lag.headers["Retry-After"] == "1"
            assert lag.mimetype == "application/problem+json"
            assert time.monotonic() - t0 < 5
    finally:
        release.set()
        holder.join()
    assert client.get("/api/v1/namespaces/etl/jobs/later", headers=auth(tokens.auditor)).status_code in (200, 404)


def test_promotion_decisions_record_the_state_they_were_decided_on(
    client, tokens, runtime: Runtime, pipeline_runs
) -> None:
    base = "/api/v1/models/churn/versions"
    assert (
        client.post(base, json=registration(pipeline_runs["train"]), headers=auth(tokens.pipeline)).status_code == 201
    )
    # Registered twice: refused, whatever the projections showed when the second request came.
    again = client.post(base, json=registration(pipeline_runs["train"]), headers=auth(tokens.pipeline))
    assert again.status_code == 409
    client.post(f"{base}/3/validations", json=validation("performance"), headers=auth(tokens.pipeline))
    r = client.post(f"{base}/3/promotions", json={"stage": "production"}, headers=auth(tokens.pipeline))
    decision = r.get_json()["decision"]
    entry = runtime.ledger.entry(decision["seq"])
    assert entry.payload["state_size"] == decision["state_size"] == decision["seq"]  # nothing came between
    assert entry.payload["allowed"] is False


def test_the_violation_screen_follows_the_log_within_a_bound(client, tokens, runtime: Runtime, pipeline_runs) -> None:
    """With the app's background applier running, the denied access decision follows the event by
    well under a second (measured here from the event's receipt)."""
    r = client.post(
        "/api/v1/datasets/s3%3A%2F%2Fraw/customers/classification",
        json={"tags": ["pii"], "justification": "customer records"},
        headers=auth(tokens.security),
    )
    assert r.status_code == 201
    event = run_event(job="peek", namespace="ml", inputs=[dataset("s3://raw", "customers")])
    t0 = time.monotonic()
    seq = client.post("/api/v1/lineage", json=event, headers=auth(tokens.pipeline)).get_json()["receipt"]["seq"]
    while True:
        found = [e for e in runtime.ledger.entries(kind="access.decision", limit=100) if e.header.seq > seq]
        if found:
            break
        assert time.monotonic() - t0 < 5, "no violation recorded"
        time.sleep(0.005)
    delay = time.monotonic() - t0
    assert delay < 2.0, delay
    (violation,) = found
    assert violation.header.principal == "ledger"  # recorded by the service itself
    assert violation.payload["event_seq"] == seq and violation.payload["allowed"] is False
    assert violation.payload["principal"] == "etl-nightly"


def test_readiness_and_metrics_report_projection_lag(client, runtime: Runtime) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert set(ready.get_json()["projection_lag"]) == {"lineage", "classification", "governance", "violations"}
    text = client.get("/metrics").get_data(as_text=True)
    assert 'ledger_projection_lag_entries{projection="lineage"}' in text
    assert json.dumps(ready.get_json())  # plain JSON
