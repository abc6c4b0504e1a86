"""The log as a service: appends through the sequencer, then receipts, checkpoints and proofs.

A receipt is built only after the append's transaction has committed (DESIGN.md 3.3: the entry is
durable before the receipt is sent), and a checkpoint is signed only for a committed tree, so the log
never signs a tree that could later turn out different.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Protocol

from sqlalchemy import and_, delete, or_, select, true
from sqlmodel import Session, col

from ledger.errors import ConflictError, InvalidRequestError, NotFoundError, StaleSigningKeyError
from ledger.store.db import Database
from ledger.store.models import EntryPayload, LogEntry, SigningKey, StoredCheckpoint, TreeNode
from ledger.store.sequencer import (
    AppendedEntry,
    AppendResult,
    PendingEntry,
    PendingRows,
    Sequencer,
    TreeState,
    header_from_row,
)
from ledger.store.tree import check_size, consistency_proof, inclusion_proofs, root_at, tree_size
from ledger.tlog.entry import EntryHeader
from ledger.tlog.note import Checkpoint, NoteSigner
from ledger.tlog.tree import NodeId, ProofPlan, inclusion_ranges


class SignerSource(Protocol):
    """Hands out the signer to use now (a key file that may be rotated under a running process)."""

    def current(self) -> NoteSigner: ...


def utcnow() -> datetime:
    return datetime.now(UTC)


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


@dataclass(eq=False)
class _AppendRequest:
    pending: list[PendingEntry]
    unless: Unless | None = None
    erases: int | None = None  # the seq whose payload this request's (erasure) entry removes
    done: bool = False
    result: AppendResult | None = None
    receipts: list[Receipt] | None = None
    error: BaseException | None = None


@dataclass(frozen=True, kw_only=True)
class SignedCheckpoint:
    size: int
    root: bytes
    note: str


@dataclass(frozen=True, kw_only=True)
class StoredEntry:
    header: EntryHeader
    leaf_hash: bytes
    payload: Any | None
    salt: bytes | None

    @property
    def erased(self) -> bool:
        return self.payload is None

    def to_json(self) -> dict[str, Any]:
        return {
            "header": self.header.to_json(),
            "payload": self.payload,
            "salt": self.salt.hex() if self.salt is not None else None,
            "leaf_hash": self.leaf_hash.hex(),
            "erased": self.erased,
        }


class Ledger:
    """Appends, reads, proves and signs. One per process; thread-safe (state lives in the database)."""

    def __init__(
        self, *, db: Database, signer: NoteSigner | SignerSource, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.db = db
        self._signer = signer
        self.clock = clock
        self._sequencer = Sequencer()
        self._sign_cached = lru_cache(maxsize=256)(self._sign_with)
        self._cv = threading.Condition()
        self._queue: list[_AppendRequest] = []
        self._leading = False
        # Told the new size after each commit (the projector wakes up); never part of the transaction.
        self.on_commit: Callable[[int], None] | None = None

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
        """Removes an entry's payload and salt, recording a `payload.erasure` entry first.

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
        """Commits a group in one transaction; a request refused on its own leaves the rest in."""
        try:
            size, root, proofs = self._run_group(group)
        except BaseException as e:
            self._sequencer.forget()
            for req in group:
                if req.error is None:
                    req.error = e
                req.result = None
                req.done = True
            return
        # Committed: the tree of `size` exists for good and may be signed.
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

    def _run_group(self, group: list[_AppendRequest]) -> tuple[int, bytes, dict[int, list[bytes]]]:
        # Under the lock, in this order: (1) the tree as it stands; (2) per request, its precondition
        # on the log, then seq, time and digests for its entries, undone in memory alone if the
        # request is refused; (3) every row of the group in one write per table; (4) the payloads
        # the group erases; (5) inclusion proofs for the receipts; (6) commit.
        with self.db.write() as session:
            state = self._open(session)  # (1)
            now = self.clock()
            rows = PendingRows()
            erasing: list[int] = []
            for req in group:  # (2)
                req.error, req.result = None, None
                mark = _Mark.of(state, rows)
                try:
                    self._check(session, req, rows, erasing)
                    req.result = self._sequencer.append(session, state, req.pending, now=now, rows=rows)
                    if req.erases is not None:
                        erasing.append(req.erases)
                except Exception as e:
                    mark.restore(state, rows)
                    req.error, req.result = e, None
            self._sequencer.flush(session, rows)  # (3)
            if erasing:  # (4) allowed by the database once the erasure entries are in the table
                session.execute(delete(EntryPayload).where(col(EntryPayload.seq).in_(erasing)))
            seqs = sorted({e.header.seq for r in group if r.result is not None for e in r.result.entries})
            size = state.compact.size
            proofs = inclusion_proofs(session, seqs, size, state.known) if seqs else {}  # (5)
        self._sequencer.committed(state)  # (6) done: the transaction committed
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

    # --- checkpoints ---------------------------------------------------------------------------

    @property
    def signer(self) -> NoteSigner:
        s = self._signer
        return s if isinstance(s, NoteSigner) else s.current()

    @staticmethod
    def _sign_with(signer: NoteSigner, size: int, root: bytes) -> str:
        return signer.sign_checkpoint(Checkpoint(signer.name, size, root))

    def _sign(self, size: int, root: bytes) -> str:
        return self._sign_cached(self.signer, size, root)

    def require_current_key(self, session: Session, key_id: str) -> None:
        """Refuses to sign with a key the log has retired, or with one it does not know while another
        is current (a host that missed a rotation). A log with no registered key yet signs freely."""
        rows = session.execute(
            select(SigningKey.key_id, SigningKey.valid_until).where(  # type: ignore[call-overload]
                (col(SigningKey.key_id) == key_id) | col(SigningKey.valid_until).is_(None)
            )
        ).all()
        if not rows or any(k == key_id and until is None for k, until in rows):
            return
        current = next((k for k, until in rows if until is None), None)
        raise StaleSigningKeyError(
            f"this host signs with key {key_id}, but the log's current key is {current}: "
            "install the current key file on this host",
            key_id=key_id,
            current=current,
        )

    def _open(self, session: Session) -> TreeState:
        """Under the lock: the tree as it stands, once this host's key is known to be current."""
        state = self._sequencer.open(session)
        # A host that missed a rotation stops here: nothing is written, and no receipt carries a
        # retired key's signature. One primary-key read per group.
        self.require_current_key(session, self.signer.verifier.key_id.hex())
        return state

    def checkpoint(self) -> SignedCheckpoint:
        """A signed checkpoint of the current tree."""
        signer = self.signer
        with self.db.read() as session:
            self.require_current_key(session, signer.verifier.key_id.hex())
            size = tree_size(session)
            root = root_at(session, size)
        return SignedCheckpoint(size=size, root=root, note=self._sign_cached(signer, size, root))

    def store_checkpoint(self) -> SignedCheckpoint | None:
        """Stores a signed checkpoint of the current tree unless one of that size is stored already."""
        signer = self.signer
        key_id = signer.verifier.key_id.hex()
        with self.db.write() as session:
            self.require_current_key(session, key_id)
            size = tree_size(session)
            if session.get(StoredCheckpoint, (size, key_id)) is not None:
                return None
            root = root_at(session, size)
            note = self.store_signed(session, signer, size, root)
        return SignedCheckpoint(size=size, root=root, note=note)

    def store_signed(self, session: Session, signer: NoteSigner, size: int, root: bytes) -> str:
        """Within the caller's write transaction: stores `signer`'s checkpoint of the tree (size, root)
        unless that key has stored one of this size already; returns the note."""
        key_id = signer.verifier.key_id.hex()
        stored = session.get(StoredCheckpoint, (size, key_id))
        if stored is not None:
            return stored.note
        note = self._sign_cached(signer, size, root)
        session.add(StoredCheckpoint(size=size, key_id=key_id, note=note, created_at=self.clock()))
        return note

    def stored_checkpoints(self) -> list[StoredCheckpoint]:
        with self.db.read() as session:
            rows = session.execute(select(StoredCheckpoint).order_by(col(StoredCheckpoint.size))).scalars().all()
            return list(rows)

    # --- reading -------------------------------------------------------------------------------

    def size(self) -> int:
        with self.db.read() as session:
            return tree_size(session)

    def entry(self, seq: int) -> StoredEntry:
        with self.db.read() as session:
            row = session.get(LogEntry, seq)
            if row is None:
                raise NotFoundError(f"no entry with seq {seq}", seq=seq)
            payload = session.get(EntryPayload, seq)
            return _stored(row, payload)

    def entries(
        self,
        *,
        kind: str | None = None,
        subject: str | None = None,
        after: int | None = None,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[StoredEntry]:
        """Entries in seq order (or newest first), filtered, starting after seq `after`."""
        with self.db.read() as session:
            q = select(LogEntry, EntryPayload).join(
                EntryPayload, col(EntryPayload.seq) == col(LogEntry.seq), isouter=True
            )
            if kind is not None:
                q = q.where(col(LogEntry.kind) == kind)
            if subject is not None:
                q = q.where(col(LogEntry.subject) == subject)
            if after is not None:
                q = q.where(col(LogEntry.seq) > after)
            order = col(LogEntry.seq).desc() if newest_first else col(LogEntry.seq)
            q = q.order_by(order).limit(limit)
            return [_stored(e, p) for e, p in session.execute(q).all()]

    def inclusion_proof(self, seq: int, size: int) -> tuple[bytes, list[bytes]]:
        """Leaf hash and RFC 9162 proof of `seq` in the tree of `size`, in one query.

        Nodes are immutable and committed with their leaves, and seq is gapless, so the leaf at
        size - 1 being present proves the tree of `size` exists; no transaction is needed.
        """
        if 0 <= seq < size:
            plan = ProofPlan.of(inclusion_ranges(seq, size))
            leaf, last = NodeId(0, seq), NodeId(0, size - 1)
            wanted = {n.as_int(): n for n in plan.needed() | {leaf, last}}
            with self.db.statement() as conn:
                rows = conn.execute(
                    select(col(TreeNode.node_id), col(TreeNode.hash)).where(col(TreeNode.node_id).in_(wanted))
                )
                nodes = {wanted[k]: bytes(h) for k, h in rows}
            if last in nodes:
                return nodes[leaf], plan.assemble(nodes)
        return self._checked_inclusion_proof(seq, size)

    def _checked_inclusion_proof(self, seq: int, size: int) -> tuple[bytes, list[bytes]]:
        with self.db.read() as session:
            current = tree_size(session)
            check_size(size, current)
            if not 0 <= seq < size:
                raise InvalidRequestError(f"seq={seq} is not in a tree of size {size}", field="seq")
            row = session.get(LogEntry, seq)
            assert row is not None
            return bytes(row.leaf_hash), inclusion_proofs(session, [seq], size)[seq]

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        with self.db.read() as session:
            check_size(second, tree_size(session), field="second")
            if first > second:
                raise InvalidRequestError(f"first={first} is larger than second={second}", field="first")
            return consistency_proof(session, first, second)


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


def _clause_sql(c: Clause) -> Any:
    parts = []
    if c.kinds is not None:
        parts.append(col(LogEntry.kind).in_(sorted(c.kinds)))
    if c.subjects is not None:
        parts.append(col(LogEntry.subject).in_(sorted(c.subjects)))
    return and_(*parts) if parts else true()


def _stored(row: LogEntry, payload: EntryPayload | None) -> StoredEntry:
    return StoredEntry(
        header=header_from_row(row),
        leaf_hash=bytes(row.leaf_hash),
        payload=json.loads(payload.payload) if payload is not None else None,
        salt=bytes(payload.salt) if payload is not None else None,
    )


@dataclass(frozen=True)
class ProvenEntries:
    """Entries with inclusion proofs, all against one signed checkpoint."""

    checkpoint: SignedCheckpoint
    entries: dict[int, StoredEntry]
    proofs: dict[int, list[bytes]]
    verifier_key: str  # of the key that signed `checkpoint`


def prove_entries(ledger: Ledger, seqs: Sequence[int]) -> ProvenEntries:
    """Reads `seqs` and proves each against the current tree, in one consistent read."""
    wanted = sorted(set(seqs))
    signer = ledger.signer  # one signer for the note and the verifier key the bundle names
    with ledger.db.read() as session:
        ledger.require_current_key(session, signer.verifier.key_id.hex())
        size = tree_size(session)
        root = root_at(session, size)
        missing = [s for s in wanted if s >= size]
        if missing:
            raise NotFoundError(f"entries {missing[:5]} are not in the log", seqs=missing[:20])
        rows = session.execute(
            select(LogEntry, EntryPayload)
            .join(EntryPayload, EntryPayload.seq == LogEntry.seq, isouter=True)  # type: ignore[arg-type]
            .where(LogEntry.seq.in_(wanted))  # type: ignore[attr-defined]
        ).all()
        entries = {e.seq: _stored(e, p) for e, p in rows}
        proofs = inclusion_proofs(session, wanted, size) if wanted else {}
    note = ledger._sign_cached(signer, size, root)
    return ProvenEntries(SignedCheckpoint(size=size, root=root, note=note), entries, proofs, signer.verifier.line())
