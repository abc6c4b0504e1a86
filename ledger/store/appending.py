"""Appending: group commit under the append lock, with one request type.

Invariants (DESIGN.md 8, "Log first"):
- under the lock only the log is written: seq, entry, payload and tree-node rows, then commit;
- a receipt is built only after the transaction has committed (DESIGN.md 3.3), so no receipt names
  an entry that could still be lost;
- an `Unless` precondition reads the log alone; a request refused by it leaves the group's other
  requests in.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, true
from sqlmodel import Session, col

from ledger.errors import ConflictError, NotFoundError
from ledger.store.db import Database
from ledger.store.faults import WRITE_BLOCKING, fault_of, is_transient
from ledger.store.groupio import GroupHead, GroupIO
from ledger.store.models import EntryPayload, LogEntry
from ledger.store.sequencer import AppendedEntry, AppendResult, PendingEntry, PendingRows, Sequencer, TreeState
from ledger.store.signing import check_current_key
from ledger.store.tree import inclusion_proofs
from ledger.tlog.note import NoteSigner


@dataclass(frozen=True, kw_only=True)
class Receipt:
    """DESIGN.md 3.3: proof that an entry is in a signed tree."""

    seq: int
    leaf_hash: bytes
    integrated_time: str
    checkpoint: str
    inclusion_proof: list[bytes]
    duplicate: bool = False

    def to_json(self, entry_url: str) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "leaf_hash": self.leaf_hash.hex(),
            "integrated_time": self.integrated_time,
            "entry_url": entry_url,
            "checkpoint": self.checkpoint,
            "inclusion_proof": [h.hex() for h in self.inclusion_proof],
        }


@dataclass(frozen=True)
class Clause:
    """Entries of one of `kinds` (any kind when None) about one of `subjects` (any when None)."""

    kinds: frozenset[str] | None = None
    subjects: frozenset[str] | None = None

    def matches(self, kind: str, subject: str) -> bool:
        return (self.kinds is None or kind in self.kinds) and (self.subjects is None or subject in self.subjects)


@dataclass(frozen=True)
class Unless:
    """An append's precondition, checked under the lock on the log alone: no entry at seq >= `after`
    matches any clause. A decision built on the projections at watermark W appends `Unless(W, ...)`:
    if anything its inputs depend on arrived since, it is refused (StaleStateError) and re-decided."""

    after: int
    clauses: tuple[Clause, ...]


class StaleStateError(ConflictError):
    """An entry arrived after the state an append was decided on, and would change the decision."""


class OwnerConflictError(ConflictError):
    """Entries of one append name an owner for their subject other than the one the log recorded
    first (`PendingEntry.owner`); `indices` are their positions in the append, and nothing of it is
    written."""

    def __init__(self, detail: str, *, indices: list[int], **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.indices = indices


@dataclass(eq=False)
class _AppendRequest:
    pending: list[PendingEntry]
    unless: Unless | None = None
    erases: int | None = None  # the seq whose payload this request's (erasure) entry removes
    done: bool = False
    result: AppendResult | None = None
    receipts: list[Receipt] | None = None
    error: BaseException | None = None


class GroupCommit:
    """Appends of this process, committed in groups: one transaction and one fsync per group."""

    db: Database
    clock: Callable[[], datetime]
    _sequencer: Sequencer
    _io: GroupIO
    _cv: threading.Condition
    _queue: list[_AppendRequest]
    _leading: bool
    on_commit: Callable[[int], None] | None
    # (when, why) of the last group that failed on a fault no write gets past (a full disk, a
    # read-only database), or None once a group commits again; `/readyz` reports it.
    write_fault: tuple[float, str] | None = None

    # Provided by `signing.Checkpoints` in `Ledger`: signer, require_consistent_with, _sign.
    signer: NoteSigner
    require_consistent_with: Callable[..., None]
    _sign: Callable[[int, bytes], str]

    # --- writing -------------------------------------------------------------------------------

    def append(
        self, pending: Sequence[PendingEntry], *, unless: Unless | None = None
    ) -> tuple[list[AppendedEntry], list[Receipt]]:
        """Appends entries to the log; returns receipts once the transaction has committed.

        Only the log is written under the lock (DESIGN.md 8, "Log first"): seq, entry, payload and
        tree-node rows. Projections follow the log (ledger.store.projector). `unless` is checked under
        the lock against the log alone; when an entry matches it, StaleStateError is raised and
        nothing of this call is written.

        Group commit: concurrent callers in this process share one transaction and one fsync; one
        caller's refusal leaves the others' entries in.
        """
        return self._submit(_AppendRequest(list(pending), unless=unless))

    def erase(self, seq: int, *, reason: str, principal: str) -> Receipt:
        """Removes an entry's payload and salt, and its dedup key, recording a `payload.erasure`
        entry first.

        The header (the Merkle leaf) stays, so every proof and checkpoint still holds; the database
        lets the payload row go only once the erasure entry is in the log (see the 0001 migration).
        The projections fed by that payload are rebuilt afterwards, outside the lock
        (`Projector.rebuild`).
        """
        entry = PendingEntry(
            kind="payload.erasure", subject=f"entry:{seq}", principal=principal, payload={"seq": seq, "reason": reason}
        )
        _, receipts = self._submit(_AppendRequest([entry], erases=seq))
        return receipts[0]

    def _submit(self, req: _AppendRequest) -> tuple[list[AppendedEntry], list[Receipt]]:
        with self._cv:
            self._queue.append(req)
            while not req.done and self._leading:
                self._cv.wait()
            if not req.done:
                self._leading = True
        if not req.done:
            try:
                while not req.done:
                    with self._cv:
                        group = self._queue[: self.MAX_GROUP]
                        del self._queue[: self.MAX_GROUP]
                    self._commit_group(group)
                    with self._cv:
                        self._cv.notify_all()
            finally:
                with self._cv:
                    self._leading = False
                    self._cv.notify_all()
        if req.error is not None:
            raise req.error
        assert req.result is not None and req.receipts is not None
        return req.result.entries, req.receipts

    MAX_GROUP = 64

    def _commit_group(self, group: list[_AppendRequest]) -> None:
        """Commits a group in one transaction; a request refused on its own leaves the rest in.

        A connection lost mid-group is tried once more on a new connection, when that cannot write an
        entry twice: the loss came before the commit was sent (so nothing was written), or every entry
        carries a dedup key (a retry of one that did commit returns the original entry).
        """
        attempt = _Attempt()
        try:
            try:
                size, root, proofs = self._run_group(group, attempt)
            except Exception as e:
                if not (is_transient(e) and (not attempt.committing or _idempotent(group))):
                    raise
                self._sequencer.forget()
                size, root, proofs = self._run_group(group, _Attempt())
        except BaseException as e:
            fault = fault_of(e)
            if fault is not None and fault.kind in WRITE_BLOCKING:
                self.write_fault = (time.monotonic(), fault.detail)
            self._sequencer.forget()
            for req in group:
                if req.error is None:
                    req.error = e
                req.result = None
                req.done = True
            return
        # Committed: the tree of `size` exists for good and may be signed.
        self.write_fault = None
        note = self._sign(size, root)
        for req in group:
            if req.error is None and req.result is not None:
                req.receipts = [
                    Receipt(
                        seq=e.header.seq,
                        leaf_hash=e.leaf_hash,
                        integrated_time=e.header.integrated_time,
                        checkpoint=note,
                        inclusion_proof=proofs[e.header.seq],
                        duplicate=e.duplicate,
                    )
                    for e in req.result.entries
                ]
            req.done = True
        if self.on_commit is not None:
            self.on_commit(size)

    def _run_group(self, group: list[_AppendRequest], attempt: _Attempt) -> tuple[int, bytes, dict[int, list[bytes]]]:
        # Under the lock, in this order: (1) the log as it stands, in one read (`groupio`); (2) per
        # request, its precondition on the log, then seq, time and digests for its entries, undone
        # in memory alone if the request is refused; (3) inclusion proofs for the receipts; (4)
        # every row of the group in one write per table, the payloads it erases, and commit.
        io = self._io
        with self.db.write(lock=False) as session:
            head = io.read(
                session,
                self._sequencer,
                key_id=self.signer.verifier.key_id.hex(),
                subjects=sorted({p.subject for r in group for p in r.pending if p.owner is not None}),
                keys=sorted({p.dedup_key for r in group for p in r.pending if p.dedup_key}),
            )
            state = self._open(session, head)  # (1)
            now = self.clock()
            rows = PendingRows(seen=dict(head.existing), looked_up=set(head.existing))
            rows.looked_up.update(p.dedup_key for r in group for p in r.pending if p.dedup_key)
            erasing: list[int] = []
            owners = dict(head.owners)  # subject -> owner, as the log and this group's entries have it
            new_owners: list[dict[str, Any]] = []
            for req in group:  # (2)
                req.error, req.result = None, None
                mark = _Mark.of(state, rows)
                try:
                    self._check(session, req, rows, erasing)
                    claimed = _check_owners(req.pending, owners)
                    req.result = self._sequencer.append(session, state, req.pending, now=now, rows=rows)
                    if req.erases is not None:
                        erasing.append(req.erases)
                except Exception as e:
                    mark.restore(state, rows)
                    req.error, req.result = e, None
                    continue
                for subject, (owner, i) in claimed.items():
                    owners[subject] = owner
                    new_owners.append({"subject": subject, "owner": owner, "seq": req.result.entries[i].header.seq})
            seqs = sorted({e.header.seq for r in group if r.result is not None for e in r.result.entries})
            size = state.compact.size
            proofs = inclusion_proofs(session, seqs, size, state.known) if seqs else {}  # (3)
            attempt.committing = io.commits  # from here on, the commit may have reached the database
            io.write(session, rows, new_owners, erasing)  # (4)
            attempt.committing = True
        self._sequencer.committed(state)  # done: the transaction committed
        return size, state.compact.root(), proofs

    @staticmethod
    def _check(session: Session, req: _AppendRequest, rows: PendingRows, erasing: list[int]) -> None:
        """A request's precondition, on the log tables alone (and the group's own pending rows)."""
        if req.erases is not None:
            seq = req.erases
            row = session.get(LogEntry, seq)
            if row is None:
                raise NotFoundError(f"no entry with seq {seq}", field="seq")
            if row.kind == "payload.erasure":
                raise ConflictError(f"entry {seq} is itself an erasure record and cannot be erased", field="seq")
            if seq in erasing or session.get(EntryPayload, seq) is None:
                raise ConflictError(f"entry {seq} is erased already", field="seq")
        u = req.unless
        if u is None:
            return
        for e in rows.entries:  # entries of this group, ahead of this request
            if e["seq"] >= u.after and any(c.matches(e["kind"], e["subject"]) for c in u.clauses):
                raise StaleStateError(f"entry {e['seq']} arrived after the state this was decided on", seq=e["seq"])
        found = session.execute(
            select(col(LogEntry.seq))
            .where(col(LogEntry.seq) >= u.after, or_(*(_clause_sql(c) for c in u.clauses)))
            .order_by(col(LogEntry.seq))
            .limit(1)
        ).scalar()
        if found is not None:
            raise StaleStateError(f"entry {found} arrived after the state this was decided on", seq=found)

    def _open(self, session: Session, head: GroupHead) -> TreeState:
        """Under the lock: the tree as it stands, once this host's key is known to be current."""
        state = self._sequencer.start(head.size, head.frontier)
        # A host that missed a rotation stops here: nothing is written, and no receipt carries a
        # retired key's signature.
        check_current_key(head.keys, self.signer.verifier.key_id.hex())
        # No split view: the tree this group extends is consistent with the last stored checkpoint.
        self.require_consistent_with(
            session, head.last_checkpoint, state.compact.size, state.compact.root(), appending=True
        )
        return state


@dataclass
class _Attempt:
    committing: bool = False


def _idempotent(group: list[_AppendRequest]) -> bool:
    """Every entry of the group carries a dedup key (and erases nothing): appending it again is a no-op."""
    return all(r.erases is None and all(p.dedup_key for p in r.pending) for r in group)


@dataclass(frozen=True)
class _Mark:
    """Where a group stood before one request: enough to undo that request in memory."""

    state: TreeState
    entries: int
    payloads: int
    nodes: int
    seen: frozenset[str]
    looked_up: frozenset[str]

    @staticmethod
    def of(state: TreeState, rows: PendingRows) -> _Mark:
        return _Mark(
            state.copy(),
            len(rows.entries),
            len(rows.payloads),
            len(rows.nodes),
            frozenset(rows.seen),
            frozenset(rows.looked_up),
        )

    def restore(self, state: TreeState, rows: PendingRows) -> None:
        state.compact, state.known = self.state.compact, self.state.known
        del rows.entries[self.entries :], rows.payloads[self.payloads :], rows.nodes[self.nodes :]
        for k in set(rows.seen) - self.seen:
            del rows.seen[k]
        rows.looked_up.intersection_update(self.looked_up)


def _check_owners(pending: list[PendingEntry], owners: dict[str, str]) -> dict[str, tuple[str, int]]:
    """Under the lock: refuses (OwnerConflictError) a request whose entries name an owner for their
    subject other than the recorded one (`owners`: as the log and the group's earlier requests have
    them); returns the subjects it claims first (owner, index)."""
    claimed: dict[str, tuple[str, int]] = {}
    conflicts: list[int] = []
    for i, p in enumerate(pending):
        if p.owner is None:
            continue
        held = owners.get(p.subject) or (claimed[p.subject][0] if p.subject in claimed else None)
        if held is None:
            claimed[p.subject] = (p.owner, i)
        elif held != p.owner:
            conflicts.append(i)
    if conflicts:
        first = pending[conflicts[0]].subject
        raise OwnerConflictError(
            f"{first} belongs to another owner than the one this entry names", indices=conflicts, subject=first
        )
    return claimed


def _clause_sql(c: Clause) -> Any:
    parts = []
    if c.kinds is not None:
        parts.append(col(LogEntry.kind).in_(sorted(c.kinds)))
    if c.subjects is not None:
        parts.append(col(LogEntry.subject).in_(sorted(c.subjects)))
    return and_(*parts) if parts else true()
