"""Checkpoints on time: a failed run is retried within the interval, the newest checkpoint's age is in
`/metrics`, and `/readyz` fails once it passes twice the interval.

The failures are real: on PostgreSQL the backend is terminated as it inserts the checkpoint; on
SQLite another connection holds the write lock (the job's busy timeout is short), and lets go when the
job waits to try again.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings, shared_policy
from sqlalchemy import select
from test_faults import kill_at

from ledger.app import create_app
from ledger.jobs.checkpoints import CHECKPOINT_JOB, checkpoint_job
from ledger.runtime import build_runtime, initialise
from ledger.store.health import checkpoint_age
from ledger.store.models import JobRun, StoredCheckpoint
from ledger.store.sequencer import PendingEntry


def _grow(rt: Any) -> int:
    rt.ledger.append([PendingEntry(kind="test.entry", subject="s", principal="t", payload={"n": time.time()})])
    return int(rt.ledger.size())


def _stored_sizes(rt: Any) -> set[int]:
    with rt.db.read() as s:
        return set(s.execute(select(StoredCheckpoint.size)).scalars())


def test_failed_checkpoint_run_is_retried_within_the_interval(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = database_url + ("?timeout=0.2" if database_url.startswith("sqlite") else "")
    s = make_settings(tmp_path, url)
    initialise(s, policy=shared_policy(s.policy_dir))
    rt = build_runtime(s, policy=shared_policy(s.policy_dir))
    try:
        size = _grow(rt)
        assert size not in _stored_sizes(rt)
        waits: list[float] = []
        if rt.db.is_sqlite:
            holder = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")  # the job's first try finds the database busy

            def sleep(seconds: float) -> None:
                waits.append(seconds)
                if holder.in_transaction:
                    holder.execute("ROLLBACK")

            with caplog.at_level(logging.WARNING, logger="ledger.jobs"):
                checkpoint_job(rt.ledger, 60, sleep=sleep)()
            holder.close()
        else:
            with (
                kill_at(rt, r"INSERT INTO checkpoints") as fired,
                caplog.at_level(logging.WARNING, logger="ledger.jobs"),
            ):
                checkpoint_job(rt.ledger, 60, sleep=waits.append)()
            assert fired
        assert len(waits) == 1 and waits[0] <= 10  # one failed try, retried seconds later, not next interval
        assert "trying again" in caplog.text
        assert size in _stored_sizes(rt)  # the retry stored it
        with rt.db.read() as session:
            assert session.get(JobRun, CHECKPOINT_JOB) is not None
        age = checkpoint_age(rt.db)
        assert age is not None and age < 30
    finally:
        rt.close()


def test_checkpoint_age_in_metrics_and_readyz_fails_past_twice_the_interval(tmp_path: Path, database_url: str) -> None:
    s = make_settings(tmp_path, database_url, LEDGER_CHECKPOINT_INTERVAL="1")
    initialise(s, policy=shared_policy(s.policy_dir))
    rt = build_runtime(s, policy=shared_policy(s.policy_dir))
    try:
        client = create_app(runtime=rt).test_client()
        _grow(rt)
        checkpoint_job(rt.ledger, 1)()
        assert client.get("/readyz").status_code == 200
        metrics = client.get("/metrics").get_data(as_text=True)
        m = re.search(r"^ledger_checkpoint_age_seconds ([0-9.e+-]+)$", metrics, re.M)
        assert m is not None and float(m.group(1)) < 2
        # No checkpoint job runs: past twice the interval the service is not ready, and says why.
        deadline = time.monotonic() + 10
        while (r := client.get("/readyz")).status_code == 200:
            assert time.monotonic() < deadline, "readyz never noticed the late checkpoint"
            time.sleep(0.1)
        assert r.status_code == 503
        assert "newest checkpoint" in r.get_json()["reason"]
        assert float(checkpoint_age(rt.db) or 0) > 2
        checkpoint_job(rt.ledger, 1)()  # the job runs again: ready again
        assert client.get("/readyz").status_code == 200
    finally:
        rt.close()
