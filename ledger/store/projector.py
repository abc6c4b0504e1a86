"""Projections follow the log (DESIGN.md 8, "Log first").

Appends write only the log. Everything else is a projection: a named consumer of the log, applying
entries in seq order and keeping a persisted watermark (`applied_size`: entries [0, applied_size)
are applied). Invariants:

- a batch of entries and the watermark that covers it commit in one transaction, so a process killed
  at any moment leaves nothing half-applied, and the next applier resumes at the watermark;
- one applier at a time per deployment, whatever the number of hosts and processes: the projector
  lock (`Database.projecting`), which appends never take;
- a projection is a pure function of the entries in seq order: `rebuild` (drop and replay) yields
  exactly what following the log yielded.

A follower is a consumer whose effect is to append entries itself (the violation screen). It runs
after the projections of a batch have committed; its appends carry dedup keys, so a follower that
runs twice over the same entries (killed before its watermark moved) appends nothing twice.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlmodel import Session, SQLModel, col

from ledger.errors import UnavailableError
from ledger.store.db import Database
from ledger.store.models import EntryPayload, LogEntry, ProjectionWatermark
from ledger.store.sequencer import HEADER_COLUMNS, header_from_columns
from ledger.store.tree import tree_size
from ledger.tlog.entry import EntryHeader

log = logging.getLogger("ledger.projector")

Entries = list[tuple[EntryHeader, Any]]
ERASURE_KIND = "payload.erasure"


@dataclass(frozen=True)
class Projection:
    """Tables kept by applying the entries of `kinds` in seq order (payload None once erased)."""

    name: str
    kinds: frozenset[str]
    tables: tuple[type[SQLModel], ...]
    apply: Callable[[Session, Entries], None]


def _never(_h: EntryHeader, _p: Any) -> bool:
    return False


@dataclass(frozen=True)
class Follower:
    """A consumer that acts on entries by appending entries of its own (idempotently: dedup keys).

    `decide` reads the projections as they stand right after the batch holding the entries, and
    returns what to append; `act` appends it. The projector applies no further batch until every
    follower has consumed the last one, and it ends a batch before any entry that `changes` what a
    follower decides on for an earlier entry it `acts_on`. So a follower sees each entry it acts on
    as of that entry, whatever the batching. When a follower decides to append nothing (the common
    case), its watermark moves in the batch's own transaction.
    """

    name: str
    kinds: frozenset[str]
    decide: Callable[[Session, Entries], Sequence[Any]]
    act: Callable[[Sequence[Any]], None]
    acts_on: Callable[[EntryHeader, Any], bool] = _never
    changes: Callable[[EntryHeader, Any], bool] = _never


class ProjectionLagError(UnavailableError):
    """The projections did not reach the wanted entry within the bound."""

    def __init__(self, wanted: int, applied: int) -> None:
        super().__init__(
            f"the projections have applied entries up to seq {applied - 1}; entry {wanted} is not applied yet",
            retry_after=1,
            min_seq=wanted,
            applied_size=applied,
        )
        self.wanted = wanted
        self.applied = applied


class Projector:
    """Applies the log to every projection, then runs the followers; one per process."""

    def __init__(
        self,
        db: Database,
        projections: Sequence[Projection],
        followers: Sequence[Follower] = (),
        *,
        batch: int = 2000,
        coalesce: float = 0.01,
        replays: Callable[[Session, EntryHeader], frozenset[str]] | None = None,
        scrub: Callable[[Database, list[Projection]], None] | None = None,
    ) -> None:
        self.db = db
        self.projections = list(projections)  # in dependency order: each may read those before it
        self.followers = list(followers)
        self.batch = batch
        self.coalesce = coalesce  # seconds the background applier waits after a wake-up
        # The projections a `payload.erasure` entry makes replay (those the erased payload fed).
        self.replays = replays
        # Run once an erasure's replay has committed (outside the transaction): leaves no copy of the
        # erased payload in the database files (ledger.projections.scrub_after_erasure).
        self.scrub = scrub
        self._names = [p.name for p in self.projections] + [f.name for f in self.followers]
        self._tables = [t for p in self.projections for t in p.tables]
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._applied_hint = 0  # a lower bound of the applied size this process has seen

    # --- watermarks ------------------------------------------------------------------------------

    def watermarks(self, session: Session | None = None) -> dict[str, int]:
        """Every consumer's applied size (a consumer with no row yet has applied nothing)."""
        if session is None:
            with self.db.read() as s:
                return self.watermarks(s)
        rows = dict(session.execute(select(ProjectionWatermark.name, ProjectionWatermark.applied_size)).all())
        return {n: int(rows.get(n, 0)) for n in self._names}

    def applied(self, session: Session | None = None) -> int:
        """The size of the log every projection and follower has applied."""
        marks = self.watermarks(session)
        low = min(marks.values(), default=0)
        self._applied_hint = max(self._applied_hint, low)
        return low

    def lag(self) -> dict[str, int]:
        """Entries each consumer is behind the log head (one read, no lock)."""
        with self.db.read() as s:
            head = tree_size(s)
            return {n: max(0, head - m) for n, m in self.watermarks(s).items()}

    def positions(self) -> tuple[int, int]:
        """The log's size and the size every consumer has applied, read together."""
        with self.db.read() as s:
            return tree_size(s), self.applied(s)

    # --- applying --------------------------------------------------------------------------------

    def pending(self) -> bool:
        """True when some projection or follower is behind the log (a read: no lock)."""
        return any(self.lag().values())

    def step(self) -> bool:
        """Applies one batch if any is pending and the projector lock is free; True if it did work.

        Every read it makes, the followers' included, is of the primary (never of a read replica)."""
        with self.db.on_primary():
            return self._step()

    def _step(self) -> bool:
        with self.db.read() as s:
            head, known = tree_size(s), self.watermarks(s)
        if all(m >= head for m in known.values()):
            return False
        if self._follow(known=known):  # (1) the followers first: they decide on the state the last batch left
            return True
        with _then() as later, self.db.projecting() as session:  # (2) then the next batch
            if session is None:
                return False
            marks = self.watermarks(session)
            head = tree_size(session)
            applied = min((marks[p.name] for p in self.projections), default=head)
            if any(marks[f.name] < applied for f in self.followers):
                return False  # a follower has not consumed the last batch yet: it goes first
            behind = {p.name: marks[p.name] for p in self.projections if marks[p.name] < head}
            if behind:
                start = min(behind.values())
                entries = _read(session, start, min(head, start + self.batch))
                end = self._cut(entries, min(head, start + self.batch))
                erasure = self._erasure(session, entries, end, marks)
                if erasure is not None:
                    seq, chosen = erasure
                    if seq == start:  # first in line: replay what the erased payload fed, from the log
                        self._replay(session, chosen)
                        if self.scrub is not None:  # once the replay has committed
                            later.append(lambda: self.scrub(self.db, chosen))  # type: ignore[misc]
                        return True
                    end = seq  # apply what comes before it first
                entries = [(h, pl) for h, pl in entries if h.seq < end]
                if not self.db.is_sqlite:
                    _sync_ids(session, self._tables)
                moved = []
                for p in self.projections:
                    mark = marks[p.name]
                    if mark >= end:
                        continue
                    p.apply(session, [(h, pl) for h, pl in entries if h.seq >= mark and h.kind in p.kinds])
                    moved.append(p.name)
                # A follower caught up to this batch decides on it here, on the state it leaves; one
                # that appends nothing moves with the batch, the others act once it has committed.
                caught_up = all(marks[p.name] <= end for p in self.projections)
                for f in self.followers:
                    mine = [(h, pl) for h, pl in entries if h.kind in f.kinds]
                    if caught_up and marks[f.name] == start and not f.decide(session, mine):
                        moved.append(f.name)
                _set_marks(session, moved, end)
                marks.update(dict.fromkeys(moved, end))
                recent = _Recent(start, end, head, entries)
            else:
                recent = None
        self._follow(recent, known=marks if recent is not None else None)  # (3) at once, before another batch
        return True

    def _erasure(
        self, session: Session, entries: Entries, end: int, marks: dict[str, int]
    ) -> tuple[int, list[Projection]] | None:
        """The first erasure before `end` that some projection it affects has not yet passed, and
        those projections. An erasure is not applied like other entries: the projections the erased
        payload fed are replayed from the log (in the projector's transaction: the append that
        erased took milliseconds, and no request waits for the replay but the reads that need it)."""
        if self.replays is None:
            return None
        for h, _ in entries:
            if h.seq >= end:
                return None
            if h.kind != ERASURE_KIND:
                continue
            names = self.replays(session, h)
            chosen = [p for p in self.projections if p.name in names and marks[p.name] <= h.seq]
            if chosen:
                return h.seq, chosen
        return None

    def _cut(self, entries: Entries, end: int) -> int:
        """Where a batch must end: before the first entry that changes what a follower decides on for
        an earlier entry of the batch it acts on."""
        acted = False
        for h, p in entries:
            if acted and any(f.changes(h, p) for f in self.followers):
                return h.seq
            acted = acted or any(f.acts_on(h, p) for f in self.followers)
        return end

    def _follow(self, recent: _Recent | None = None, known: dict[str, int] | None = None) -> bool:
        """Runs the followers up to what the projections have applied, each under the projector lock.

        `recent` is the batch this process just applied: a follower whose entries lie within it
        takes them from there instead of reading them again, unless a payload may have been erased
        since that read (a `payload.erasure` entry at or past the size the read saw).
        """
        did = False
        for f in self.followers:
            if known is not None and known[f.name] >= min((known[p.name] for p in self.projections), default=0):
                continue  # caught up with the watermarks just read: no transaction needed
            # Under the projector lock: no batch is applied while the follower decides on the state
            # the last one left (its own appends take the append lock, as any append does).
            with self.db.projector_lock() as held:
                if not held:
                    return did  # another applier holds it; it runs the followers first
                with self.db.read() as s:
                    marks = self.watermarks(s)
                    target = min(marks[p.name] for p in self.projections) if self.projections else tree_size(s)
                    mark = marks[f.name]
                    if mark >= target:
                        continue
                    end = min(target, mark + self.batch)
                    if (
                        recent is not None
                        and recent.start <= mark
                        and end <= recent.end
                        and not _erased_since(s, recent.head)
                    ):
                        entries = [(h, pl) for h, pl in recent.entries if mark <= h.seq < end and h.kind in f.kinds]
                    else:
                        entries = _read(s, mark, end, kinds=f.kinds)
                    decided = f.decide(s, entries)
                if decided:
                    f.act(decided)
                # The projector lock is ours: no applier moves this watermark, and no append lock is needed.
                with self.db.write(lock=False) as session:
                    if self.watermarks(session)[f.name] == mark:
                        _set_mark(session, f.name, end)
            did = True
        return did

    def sync(self, target: int, *, timeout: float = 10.0) -> int:
        """Applies (or waits for another applier to apply) the log up to `target` entries; returns the
        applied size. Raises ProjectionLagError past `timeout`."""
        if self._applied_hint >= target:
            return self._applied_hint
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            applied = self.applied()
            if applied >= target:
                return applied
            if not self.step():
                if time.monotonic() >= deadline:
                    raise ProjectionLagError(target - 1, applied)
                time.sleep(delay)  # another applier holds the lock, or the entry is not appended yet
                delay = min(delay * 2, 0.05)

    def sync_to_head(self, *, timeout: float = 10.0) -> int:
        """Applies every entry the log held when called; returns the applied size. When nothing is
        behind (the common case of a read) this costs one read transaction."""
        head, applied = self.positions()
        return applied if applied >= head else self.sync(head, timeout=timeout)

    # --- rebuilding ------------------------------------------------------------------------------

    def rebuild(self, only: frozenset[str] | None = None) -> int:
        """Empties the projections (all, or those named) and replays the log into them, in one
        transaction under the projector lock: readers see the old state until it commits (on
        PostgreSQL rows are deleted, not truncated, so no read waits), and appends go on. Returns
        the number of entries replayed."""
        chosen = [p for p in self.projections if only is None or p.name in only]
        if not chosen:
            return 0
        deadline = time.monotonic() + 60
        while True:
            with self.db.projecting() as session:
                if session is not None:
                    return self._replay(session, chosen)
            if time.monotonic() > deadline:
                raise ProjectionLagError(-1, self.applied())
            time.sleep(0.01)

    def _replay(self, session: Session, chosen: list[Projection]) -> int:
        tables = [t for p in chosen for t in p.tables]
        for t in reversed(tables):  # dependants first (foreign keys)
            session.execute(delete(t))  # type: ignore[arg-type]
        if not self.db.is_sqlite:  # SQLite gives max(id) + 1 by itself: 1 on an empty table
            _sync_ids(session, tables)
        session.expire_all()
        head = tree_size(session)  # under the projector lock: no other applier moves a watermark
        kinds = frozenset().union(*(p.kinds for p in chosen))
        replayed = 0
        analyze_at = self.batch
        for start in range(0, head, self.batch):
            if not self.db.is_sqlite and replayed >= analyze_at:
                # The emptied tables refill inside this transaction; the planner, which believes them
                # empty, would scan them on every lookup. ANALYZE at doubling sizes: O(n) in all.
                session.execute(text(f"ANALYZE {', '.join(t.__tablename__ for t in tables)}"))  # type: ignore[attr-defined]
                analyze_at *= 2
            entries = _read(session, start, min(head, start + self.batch), kinds=kinds)
            for p in chosen:
                p.apply(session, [(h, pl) for h, pl in entries if h.kind in p.kinds])
            replayed += len(entries)
        _set_marks(session, [p.name for p in chosen], head)
        return head  # every entry up to the watermark was read (those of other kinds feed nothing)

    # --- the background applier ------------------------------------------------------------------

    def notify(self) -> None:
        """Entries were appended: apply them soon (called after each commit)."""
        self._wake.set()

    def start(self, *, poll: float = 0.25) -> None:
        """Starts this process's background applier: it applies after each notify, and polls for
        entries other processes appended."""
        if self._thread is not None:
            return
        self._stop.clear()

        def run() -> None:
            while not self._stop.is_set():
                try:
                    while self.step() and not self._stop.is_set():
                        pass
                except Exception:  # a failed batch rolls back whole; the next round retries it
                    log.exception("projection batch failed")
                    self._stop.wait(1.0)
                if self._wake.wait(poll) and self.coalesce:
                    # Woken by an append: let the appends of the next few milliseconds gather, so one
                    # batch (a fixed cost of a few statements) carries many entries under load.
                    self._stop.wait(self.coalesce)
                self._wake.clear()

        self._thread = threading.Thread(target=run, name="ledger-projector", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


@dataclass(frozen=True)
class _Recent:
    """A batch just applied: its entries [start, end), read when the log held `head` entries."""

    start: int
    end: int
    head: int
    entries: Entries


@contextmanager
def _then() -> Iterator[list[Callable[[], None]]]:
    """Callbacks run on leaving a `with` block without an error: listed first in a `with` statement,
    after the contexts listed after it have exited (a transaction, committed)."""
    later: list[Callable[[], None]] = []
    yield later
    for f in later:
        f()


def _erased_since(session: Session, size: int) -> bool:
    """Whether a payload may have been erased after a read that saw `size` entries."""
    seq, kind = HEADER_COLUMNS[0], HEADER_COLUMNS[1]
    return session.execute(select(seq).where(kind == ERASURE_KIND, seq >= size).limit(1)).first() is not None


def _read(session: Session, start: int, end: int, *, kinds: frozenset[str] | None = None) -> Entries:
    """Entries [start, end) in seq order with their payloads (None once erased)."""
    payloads = EntryPayload.__table__  # type: ignore[attr-defined]
    seq = HEADER_COLUMNS[0]
    q = (
        select(*HEADER_COLUMNS, payloads.c.payload)
        .select_from(LogEntry.__table__.outerjoin(payloads, payloads.c.seq == seq))  # type: ignore[attr-defined]
        .where(seq >= start, seq < end)
        .order_by(seq)
    )
    if kinds is not None:
        q = q.where(HEADER_COLUMNS[1].in_(sorted(kinds)))
    loads = json.loads
    return [(header_from_columns(r), loads(r[6]) if r[6] is not None else None) for r in session.execute(q)]


def _set_mark(session: Session, name: str, size: int) -> None:
    _set_marks(session, [name], size)


def _set_marks(session: Session, names: list[str], size: int) -> None:
    """Moves the watermarks of `names` to `size`: one statement (plus an insert for a new name)."""
    if not names:
        return
    now = datetime.now(UTC)
    done = session.execute(
        update(ProjectionWatermark)
        .where(col(ProjectionWatermark.name).in_(names))
        .values(applied_size=size, updated_at=now)
    )
    if done.rowcount < len(names):  # type: ignore[attr-defined]
        have = set(
            session.execute(select(ProjectionWatermark.name).where(col(ProjectionWatermark.name).in_(names))).scalars()
        )
        for name in names:
            if name not in have:
                session.add(ProjectionWatermark(name=name, applied_size=size, updated_at=now))
        session.flush()


def _sync_ids(session: Session, tables: list[type[SQLModel]]) -> None:
    """PostgreSQL: restarts each projection table's id sequence just past its largest id, in one
    statement. A sequence does not roll back with its transaction, so a batch that failed or was
    killed would otherwise leave gaps, and the ids would no longer be those a rebuild assigns."""
    parts = []
    for t in tables:
        keys = list(t.__table__.primary_key.columns)  # type: ignore[attr-defined]
        if len(keys) == 1 and keys[0].autoincrement is not False and keys[0].type.python_type is int:
            name, column = t.__tablename__, keys[0].name  # type: ignore[attr-defined]
            # Our own table and column names: nothing from outside reaches this text.
            restart = f"COALESCE((SELECT MAX({column}) FROM {name}), 0) + 1"  # noqa: S608
            parts.append(f"setval(pg_get_serial_sequence('{name}', '{column}'), {restart}, false)")
    if parts:
        session.execute(text("SELECT " + ", ".join(parts)))
