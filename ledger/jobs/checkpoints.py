"""Scheduled jobs. They run in one scheduler process per host (started by the gunicorn master,
never in each worker), and each run first claims a lease row, so across hosts sharing a database a
job runs once per interval."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlmodel import Session

from ledger.store.db import Database
from ledger.store.ledger import Ledger
from ledger.store.models import JobRun

log = logging.getLogger("ledger.jobs")
HOLDER = f"{socket.gethostname()}:{os.getpid()}"


def claim(db: Database, name: str, interval: float, now: datetime) -> bool:
    """True if this process may run job `name` now (no run in the last 90% of an interval)."""
    with db.write() as session:  # serialised with every other writer, on every host
        row = session.get(JobRun, name)
        if row is not None:
            last = row.last_run_at if row.last_run_at.tzinfo else row.last_run_at.replace(tzinfo=UTC)
            if now - last < timedelta(seconds=interval * 0.9):
                return False
        _upsert(session, row, name, now)
    return True


def _upsert(session: Session, row: JobRun | None, name: str, now: datetime) -> None:
    if row is None:
        session.add(JobRun(name=name, last_run_at=now, holder=HOLDER))
    else:
        row.last_run_at = now
        row.holder = HOLDER


def checkpoint_job(ledger: Ledger, interval: float) -> Callable[[], None]:
    def run() -> None:
        try:
            with ledger.db.read() as session:  # a host with a retired key leaves the lease to the others
                ledger.require_current_key(session, ledger.signer.verifier.key_id.hex())
            if not claim(ledger.db, "checkpoint", interval, datetime.now(UTC)):
                return
            stored = ledger.store_checkpoint()
            if stored is not None:
                log.debug("stored checkpoint of size %d", stored.size)
        except Exception:  # a failed run must not kill the scheduler; the next one retries
            log.exception("checkpoint job failed")

    return run


def schedule(scheduler: BaseScheduler, ledger: Ledger, *, interval: float) -> None:
    scheduler.add_job(
        checkpoint_job(ledger, interval),
        "interval",
        seconds=interval,
        id="checkpoint",
        max_instances=1,
        coalesce=True,
        next_run_time=datetime.now(UTC),
    )


def run_forever(ledger: Ledger, *, interval: float) -> None:
    """The scheduler process's main loop (`python -m ledger.jobs`)."""
    scheduler = BlockingScheduler(timezone="UTC")
    schedule(scheduler, ledger, interval=interval)
    scheduler.start()
