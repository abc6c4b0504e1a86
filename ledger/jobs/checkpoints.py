"""Scheduled jobs. They run in one scheduler process per host (started by the `ledger serve` master,
never in each worker), and each run first claims a lease row, so across hosts sharing a database a
job runs once per interval."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import requests
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlmodel import Session

from ledger.jobs.witnesses import WitnessConfig, send_to_witnesses
from ledger.store.db import Database
from ledger.store.health import CHECKPOINT_JOB
from ledger.store.ledger import Ledger
from ledger.store.models import JobRun

log = logging.getLogger("ledger.jobs")
HOLDER = f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Claim:
    """This process runs job `name` now (`at`); `previous` is the run before (None: never ran)."""

    name: str
    at: datetime
    previous: datetime | None


def claim(db: Database, name: str, interval: float, now: datetime) -> Claim | None:
    """Claims job `name` for this process, unless it ran in the last 90% of an interval (None)."""
    with db.write() as session:  # serialised with every other writer, on every host
        row = session.get(JobRun, name)
        previous = None
        if row is not None:
            previous = row.last_run_at if row.last_run_at.tzinfo else row.last_run_at.replace(tzinfo=UTC)
            if now - previous < timedelta(seconds=interval * 0.9):
                return None
        _upsert(session, row, name, now)
    return Claim(name, now, previous)


def release(db: Database, c: Claim) -> None:
    """Undoes this process's claim of a run that failed: the job did not run, so it is due again
    (here or on another host), and the checkpoint age does not count the failed run."""
    with db.write() as session:
        row = session.get(JobRun, c.name)
        if row is None or row.holder != HOLDER:
            return
        at = row.last_run_at if row.last_run_at.tzinfo else row.last_run_at.replace(tzinfo=UTC)
        if at != c.at:  # claimed again since (by a later run)
            return
        if c.previous is None:
            session.delete(row)
        else:
            row.last_run_at = c.previous


def _upsert(session: Session, row: JobRun | None, name: str, now: datetime) -> None:
    if row is None:
        session.add(JobRun(name=name, last_run_at=now, holder=HOLDER))
    else:
        row.last_run_at = now
        row.holder = HOLDER


def retry_delay(interval: float) -> float:
    """How long a failed run waits before it tries again: several tries fit in one interval."""
    return min(5.0, interval / 6)


def checkpoint_job(
    ledger: Ledger,
    interval: float,
    witnesses: Sequence[WitnessConfig] = (),
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> Callable[[], None]:
    sessions: dict[str, requests.Session] = {}

    def attempt() -> bool:
        """One try; True when the run is over (stored, nothing to store, or not this host's turn)."""
        with ledger.db.read() as session:  # a host with a retired key leaves the lease to the others
            ledger.require_current_key(session, ledger.signer.verifier.key_id.hex())
        claimed = claim(ledger.db, CHECKPOINT_JOB, interval, datetime.now(UTC))
        if claimed is None:
            return True
        try:
            stored = ledger.store_checkpoint()
        except Exception:
            with contextlib.suppress(Exception):  # the database is failing: then the claim simply lapses
                release(ledger.db, claimed)
            raise
        if stored is not None:
            log.debug("stored checkpoint of size %d", stored.size)
        return True

    def run() -> None:
        # A failed try is retried within the interval, so one failure does not leave a gap of two
        # intervals between stored checkpoints; a run never overlaps the next (it gives up first).
        delay = retry_delay(interval)
        give_up = time.monotonic() + interval * 0.8
        while True:
            try:
                if attempt():
                    break
            except Exception as e:  # a failed run must not kill the scheduler
                if time.monotonic() + delay > give_up:
                    log.exception("checkpoint job failed; the next run tries again")
                    return
                log.warning("checkpoint job failed (%s); trying again in %.1f s", " ".join(str(e).split())[:300], delay)
            sleep(delay)
        try:  # outside every transaction and lock; each witness bounded (ledger.jobs.witnesses)
            send_to_witnesses(ledger, witnesses, sessions)
        except Exception:
            log.exception("sending the checkpoint to witnesses failed")

    return run


def schedule(
    scheduler: BaseScheduler, ledger: Ledger, *, interval: float, witnesses: Sequence[WitnessConfig] = ()
) -> None:
    scheduler.add_job(
        checkpoint_job(ledger, interval, witnesses),
        "interval",
        seconds=interval,
        id=CHECKPOINT_JOB,
        max_instances=1,
        coalesce=True,
        next_run_time=datetime.now(UTC),
    )


def run_forever(ledger: Ledger, *, interval: float, witnesses: Sequence[WitnessConfig] = ()) -> None:
    """The scheduler process's main loop (`python -m ledger.jobs`)."""
    scheduler = BlockingScheduler(timezone="UTC")
    schedule(scheduler, ledger, interval=interval, witnesses=witnesses)
    scheduler.start()
