"""Storage faults: a lost or refused database connection, a full disk, a read-only database, a busy
SQLite. None of them is the request's fault or a bug, and none leaves anything half-written (every
write is one transaction), so the service answers them 503 with `Retry-After` rather than 500.

`fault_of` names the fault an exception is, or None for anything else (a bug stays a 500).
`is_transient` says whether trying once more at once may succeed: the connection was lost while in
use (SQLAlchemy has invalidated it, so the pool hands out a new one), as when PostgreSQL terminates a
backend or restarts.
"""

from __future__ import annotations

import errno
import sqlite3
from dataclasses import dataclass

from sqlalchemy import exc as sa_exc

from ledger.errors import UnavailableError

# What each kind of fault is called, and when to try again (seconds).
CONNECTION = "connection"
DISK_FULL = "disk_full"
READ_ONLY = "read_only"
BUSY = "busy"
IO = "io"
RETRY_AFTER = {CONNECTION: 2, BUSY: 1, DISK_FULL: 30, READ_ONLY: 30, IO: 10}
# Faults under which no write can succeed until an operator acts (readiness reports them).
WRITE_BLOCKING = frozenset({DISK_FULL, READ_ONLY, IO})

# SQLite reports its faults as OperationalError text (sqlite3 in Python 3.11 has no error codes on
# OperationalError for all of them); these are SQLite's own messages (sqlite3.c, sqlite3ErrStr).
_SQLITE = (
    ("database or disk is full", DISK_FULL),
    ("attempt to write a readonly database", READ_ONLY),
    ("database is locked", BUSY),
    ("database table is locked", BUSY),
    ("disk i/o error", IO),
    ("unable to open database file", CONNECTION),
)
_ERRNO = {errno.ENOSPC: DISK_FULL, errno.EDQUOT: DISK_FULL, errno.EFBIG: DISK_FULL, errno.EROFS: READ_ONLY}


@dataclass(frozen=True)
class StorageFault:
    kind: str
    detail: str

    def error(self) -> UnavailableError:
        return UnavailableError(self.detail, retry_after=RETRY_AFTER[self.kind], fault=self.kind)


def _pg_kind(orig: BaseException) -> str | None:
    """PostgreSQL SQLSTATE classes (PostgreSQL docs, Appendix A) that are faults, not bugs."""
    state = getattr(orig, "sqlstate", None)
    if state is None:  # no answer from the server at all: refused, reset, timed out
        return CONNECTION if type(orig).__name__ == "OperationalError" else None
    if state == "53100":
        return DISK_FULL
    if state == "25006":  # read_only_sql_transaction: a read-only database, or a standby
        return READ_ONLY
    if state.startswith("08") or state in ("57P01", "57P02", "57P03", "53300"):
        return CONNECTION  # connection exceptions; admin/crash shutdown; cannot connect now; too many
    if state.startswith("58") or state == "XX001":
        return IO
    return None


def fault_of(e: BaseException) -> StorageFault | None:
    """The storage fault `e` is (or was caused by), or None."""
    if isinstance(e, sa_exc.TimeoutError):  # no pooled connection came free in time
        return StorageFault(BUSY, "every database connection is in use; try again shortly")
    if isinstance(e, sa_exc.DBAPIError):
        orig = e.orig
        if e.connection_invalidated:
            return StorageFault(CONNECTION, "the database connection was lost; try again shortly")
        if isinstance(orig, sqlite3.Error):
            text = str(orig).lower()
            for needle, sqlite_kind in _SQLITE:
                if needle in text:
                    return StorageFault(sqlite_kind, _describe(sqlite_kind, str(orig)))
            return None
        if orig is not None:
            pg_kind = _pg_kind(orig)
            if pg_kind is not None:
                first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
                return StorageFault(pg_kind, _describe(pg_kind, first))
        return None
    if isinstance(e, OSError) and e.errno in _ERRNO:
        kind = _ERRNO[e.errno]
        return StorageFault(kind, _describe(kind, e.strerror or str(e)))
    cause = e.__cause__
    return fault_of(cause) if cause is not None and cause is not e else None


def _describe(kind: str, what: str) -> str:
    lead = {
        CONNECTION: "the database is unreachable",
        DISK_FULL: "the database's disk is full; nothing was written",
        READ_ONLY: "the database is read-only; nothing was written",
        BUSY: "the database is busy",
        IO: "the database's disk failed a read or write; nothing was written",
    }[kind]
    return f"{lead} ({what})"


def is_transient(e: BaseException) -> bool:
    """True when one immediate retry may succeed: a connection lost while in use (already discarded)."""
    return isinstance(e, sa_exc.DBAPIError) and bool(e.connection_invalidated)
