"""The log as a service: appends (group commit), checkpoints and signing, reads and proofs.

Each concern lives in a module of its own (`appending`, `signing`, `reading`); `Ledger` puts them
together over one database and one signer. One per process; thread-safe (state lives in the database).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache

from ledger.store.appending import Clause, GroupCommit, Receipt, StaleStateError, Unless, _AppendRequest
from ledger.store.db import Database
from ledger.store.groupio import group_io
from ledger.store.reading import LogReader, ProvenEntries, StoredEntry, prove_entries
from ledger.store.sequencer import Sequencer
from ledger.store.signing import Checkpoints, SignedCheckpoint, SignerSource
from ledger.tlog.note import NoteSigner

__all__ = [
    "Clause",
    "Ledger",
    "ProvenEntries",
    "Receipt",
    "SignedCheckpoint",
    "SignerSource",
    "StaleStateError",
    "StoredEntry",
    "Unless",
    "prove_entries",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Ledger(GroupCommit, Checkpoints, LogReader):
    """Appends, reads, proves and signs."""

    def __init__(
        self, *, db: Database, signer: NoteSigner | SignerSource, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.db = db
        self._signer = signer
        self.clock = clock
        self._sequencer = Sequencer()
        self._io = group_io(db)
        self._sign_cached = lru_cache(maxsize=256)(self._sign_with)
        self._consistent = set()
        self._append_base = None
        self._cv = threading.Condition()
        self._queue: list[_AppendRequest] = []
        self._leading = False
        # Told the new size after each commit (the projector wakes up); never part of the transaction.
        self.on_commit: Callable[[int], None] | None = None
