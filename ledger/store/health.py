"""What readiness and metrics ask of the storage: can writes succeed, and how old is the newest
checkpoint. Each check is a read (no lock, no write), cheap enough for a probe every second."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from ledger.store.db import Database
from ledger.store.models import JobRun, StoredCheckpoint

MIN_FREE_BYTES = 1 << 20  # below this much free space a SQLite write is refused sooner or later
CHECKPOINT_JOB = "checkpoint"


def sqlite_path(db: Database) -> Path | None:
    if not db.is_sqlite:
        return None
    name = make_url(db.url).database
    if not name or name == ":memory:":
        return None
    return Path(name.removeprefix("file:"))  # a URI filename (`?uri=true`) names the file after `file:`


def write_blockers(db: Database) -> list[str]:
    """Why no write can succeed now (empty when none is known): a read-only database, a full disk.

    Raises when the database cannot be reached at all (the caller reports that as a reason too).
    """
    reasons: list[str] = []
    with db.read() as session:
        if not db.is_sqlite:
            standby, read_only = session.execute(
                text("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')")
            ).one()
            if standby:
                reasons.append("the database is a standby (read-only): point LEDGER_DATABASE_URL at the primary")
            elif read_only == "on":
                reasons.append("the database is read-only (default_transaction_read_only is on)")
            return reasons
        session.execute(text("SELECT 1"))
    path = sqlite_path(db)
    if path is None:
        return reasons
    folder = path.parent
    st = os.statvfs(folder)
    if st.f_flag & os.ST_RDONLY:
        reasons.append(f"the file system of the database ({folder}) is mounted read-only")
    elif not (os.access(path, os.W_OK) and os.access(folder, os.W_OK)):
        reasons.append(f"the database file {path} or its directory is not writable")
    free = st.f_bavail * st.f_frsize
    if free < MIN_FREE_BYTES:
        reasons.append(f"the disk of the database ({folder}) is full: {free} bytes free")
    return reasons


def checkpoint_age(db: Database, now: datetime | None = None) -> float | None:
    """Seconds since a checkpoint of the whole log was last stored or confirmed stored: the later of
    the newest stored checkpoint and the checkpoint job's last successful run (an idle log stores no
    new checkpoint, yet its newest one still covers it). None when the log has no checkpoint yet."""
    now = now or datetime.now(UTC)
    with db.read() as session:
        newest = session.execute(select(func.max(StoredCheckpoint.created_at))).scalar()
        job = session.get(JobRun, CHECKPOINT_JOB)
    times = [_aware(t) for t in (newest, job.last_run_at if job is not None else None) if t is not None]
    if not times:
        return None
    return max(0.0, (now - max(times)).total_seconds())


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)
