"""Reads from a PostgreSQL streaming replica (`LEDGER_READ_DATABASE_URL`): is it there, and has it
replayed what a read must see?

Whether a read may be served by the replica is judged on the replica itself: its log size and its
projections' watermarks, as replayed there. An unreachable replica is marked down and tried again
after RETRY_SECONDS; meanwhile reads go to the primary.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from ledger.store.db import Database
from ledger.store.projector import Projector
from ledger.store.tree import tree_size

RETRY_SECONDS = 1.0  # after a failure, how long reads skip the replica before it is tried again


class ReplicaReads:
    """The replica's state as this process last saw it."""

    def __init__(self, db: Database, projector: Projector) -> None:
        assert db.replica is not None
        self.db = db
        self.projector = projector
        self._lock = threading.Lock()
        self._down_since: float | None = None  # monotonic time of the last failure, None while up

    @property
    def up(self) -> bool:
        return self._down_since is None

    def worth_trying(self) -> bool:
        """False while the replica is down and was tried less than RETRY_SECONDS ago."""
        since = self._down_since
        return since is None or time.monotonic() - since >= RETRY_SECONDS

    def failed(self) -> None:
        with self._lock:
            self._down_since = time.monotonic()

    def positions(self) -> tuple[int, int]:
        """The log size and the size every projection and follower has applied, on the replica."""
        assert self.db.replica is not None
        with Session(self.db.replica) as session, session.begin():
            marks = self.projector.watermarks(session)
            return tree_size(session), min(marks.values(), default=0)

    def caught_up(self, size: int, *, projections: bool, timeout: float) -> bool:
        """Waits (at most `timeout`) until the replica holds `size` entries and, with `projections`,
        has applied them to every projection. False past the timeout; raises SQLAlchemyError (and
        marks the replica down) when it cannot be reached."""
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                have, applied = self.positions()
            except SQLAlchemyError:
                self.failed()
                raise
            self._down_since = None
            if have >= size and (applied >= size or not projections):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)  # replay takes milliseconds: a short wait on the replica's position
            delay = min(delay * 2, 0.02)

    def probe(self) -> bool:
        """One round trip to the replica (for `/metrics`); updates and returns whether it is up."""
        try:
            self.positions()
        except SQLAlchemyError:
            self.failed()
            return False
        self._down_since = None
        return True
